//! Last-resort protection against panics in the third-party parser and decoders.
//!
//! The DICOM crates index slices with lengths taken from the file in a few places, so a
//! hostile file can make them panic. Every public entry point runs its work through
//! [`guarded`], which turns a panic into a [`DicomError`] naming the file. While a guarded
//! call runs on a thread, the default panic message for that thread is suppressed (a process
//! panic hook, installed once, checks a thread-local flag and otherwise defers to the hook
//! that was there before), so other threads' panics still print as usual.
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use super::{DicomError, DicomErrorKind};

thread_local! {
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

static INSTALL: Once = Once::new();

fn install_hook() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| q.get()) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `work`, converting a panic inside it into an error about `path`.
pub(super) fn guarded<T>(
    path: &Path,
    work: impl FnOnce() -> Result<T, DicomError>,
) -> Result<T, DicomError> {
    install_hook();
    QUIET.with(|q| q.set(q.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(work));
    QUIET.with(|q| q.set(q.get().saturating_sub(1)));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".to_string());
            Err(DicomError::new(
                path,
                DicomErrorKind::Decode,
                format!("malformed data: the DICOM decoder failed internally ({what})"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_the_file() {
        let r: Result<(), DicomError> =
            guarded(Path::new("x.dcm"), || panic!("index out of bounds"));
        let e = r.unwrap_err();
        assert_eq!(e.kind, DicomErrorKind::Decode);
        assert!(e.to_string().starts_with("x.dcm: "), "{e}");
        assert!(e.message.contains("index out of bounds"), "{e}");
        // Work that succeeds or fails normally passes through.
        assert_eq!(guarded(Path::new("y"), || Ok(3)).unwrap(), 3);
    }
}
