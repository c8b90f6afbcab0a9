//! Atomic file replacement: temp file in the same directory, fsync, rename.
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::ExportError;

/// Error type the content writer may return; its message ends up in [`ExportError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Writes `path` atomically: `write` fills a temporary file created next to `path` (same
/// directory, hence same file system, so the rename is atomic), which is then flushed,
/// fsynced and renamed over `path`; the directory is fsynced too (best effort) so the rename
/// survives a crash. On any error the temporary file is removed and `path` is untouched (a
/// previous version stays intact).
pub fn write_atomically<F>(path: &Path, write: F) -> Result<(), ExportError>
where
    F: FnOnce(&mut dyn Write) -> Result<(), BoxError>,
{
    let name = path
        .file_name()
        .ok_or_else(|| ExportError::write(path, "not a file path"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = temp_path(&dir, &name.to_string_lossy());
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| ExportError::write(path, format!("cannot create temporary file: {e}")))?;
    let result = fill_and_sync(file, write).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| format!("cannot rename temporary file: {e}").into())
    });
    match result {
        Ok(()) => {
            // Persist the directory entry; failure here does not undo a completed rename.
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(ExportError::write(path, error_chain(e.as_ref())))
        }
    }
}

fn fill_and_sync<F>(file: File, write: F) -> Result<(), BoxError>
where
    F: FnOnce(&mut dyn Write) -> Result<(), BoxError>,
{
    let mut w = BufWriter::new(file);
    write(&mut w)?;
    w.flush()?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// A hidden, unique name next to the target: `.<name>.<pid>-<random>.tmp`.
fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let r: u64 = rand::random();
    dir.join(format!(".{name}.{}-{r:016x}.tmp", std::process::id()))
}

/// The error and its sources, joined with ": ".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
