//! Atomic file replacement: temp file in the same directory, fsync, rename.
//!
//! The temporary files of writes in progress are listed in a process-wide registry, so that
//! the command line can remove them when it is interrupted (Ctrl+C, SIGTERM; see
//! [`remove_temporary_files`]): an interrupted run leaves the old file or the new one, and no
//! temporary file.
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

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
    // Registered before it exists, so that an interrupt at any point finds it.
    let _in_flight = TEMPORARY_FILES
        .register(&tmp)
        .ok_or_else(|| ExportError::write(path, "interrupted"))?;
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

/// The temporary files of atomic writes in progress, and whether the process is being
/// interrupted (then no new one may be created).
#[derive(Debug, Default)]
pub struct TempRegistry {
    state: Mutex<RegistryState>,
}

#[derive(Debug, Default)]
struct RegistryState {
    paths: Vec<PathBuf>,
    closed: bool,
}

/// The registry of this process's atomic writes.
static TEMPORARY_FILES: TempRegistry = TempRegistry::new();

impl TempRegistry {
    /// An empty registry.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(RegistryState {
                paths: Vec::new(),
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RegistryState> {
        // A panic elsewhere while the lock was held leaves the list itself consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists `path` until the returned guard is dropped; `None` once [`Self::remove_all`]
    /// has run (the process is ending: no new temporary file).
    pub fn register(&self, path: &Path) -> Option<InFlight<'_>> {
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        state.paths.push(path.to_path_buf());
        Some(InFlight {
            registry: self,
            path: path.to_path_buf(),
        })
    }

    /// Removes every listed file that exists, refuses new registrations, and returns how many
    /// files were removed.
    pub fn remove_all(&self) -> usize {
        let mut state = self.lock();
        state.closed = true;
        let paths = std::mem::take(&mut state.paths);
        paths.iter().filter(|p| fs::remove_file(p).is_ok()).count()
    }

    /// The files listed now.
    pub fn listed(&self) -> Vec<PathBuf> {
        self.lock().paths.clone()
    }
}

/// A temporary file listed in a [`TempRegistry`]; dropping it (after the rename or the
/// removal) takes it off the list.
#[derive(Debug)]
pub struct InFlight<'a> {
    registry: &'a TempRegistry,
    path: PathBuf,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.registry.lock();
        if let Some(i) = state.paths.iter().position(|p| *p == self.path) {
            state.paths.swap_remove(i);
        }
    }
}

/// Removes the temporary files of every atomic write in progress in this process and makes
/// later writes fail with "interrupted" instead of creating new ones; returns how many files
/// were removed. For an interrupt handler, which then ends the process: the targets keep
/// their previous content.
pub fn remove_temporary_files() -> usize {
    TEMPORARY_FILES.remove_all()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_files_in_flight_and_removes_them_on_interrupt() {
        let dir = tempfile::tempdir().unwrap();
        let registry = TempRegistry::new();
        let (a, b) = (dir.path().join(".a.tmp"), dir.path().join(".b.tmp"));
        let guard_a = registry.register(&a).unwrap();
        {
            let _guard_b = registry.register(&b).unwrap();
            assert_eq!(registry.listed(), vec![a.clone(), b.clone()]);
        }
        // Done (renamed or removed): off the list.
        assert_eq!(registry.listed(), vec![a.clone()]);
        fs::write(&a, b"partial").unwrap();
        let target = dir.path().join("a");
        fs::write(&target, b"previous").unwrap();
        assert_eq!(registry.remove_all(), 1);
        assert!(!a.exists());
        assert_eq!(fs::read(&target).unwrap(), b"previous");
        // No new temporary file once interrupted; dropping an old guard is harmless.
        assert!(registry.register(&b).is_none());
        drop(guard_a);
        assert!(registry.listed().is_empty());
    }

    #[test]
    fn a_write_takes_its_temporary_file_off_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomically(&path, |w| {
            let listed = TEMPORARY_FILES.listed();
            assert!(
                listed
                    .iter()
                    .any(|p| p.parent() == Some(dir.path()) && p.exists()),
                "{listed:?}"
            );
            Ok(w.write_all(b"new")?)
        })
        .unwrap();
        assert!(
            !TEMPORARY_FILES
                .listed()
                .iter()
                .any(|p| p.parent() == Some(dir.path()))
        );
        let failed = write_atomically(&path, |_| Err("no".into()));
        assert!(failed.is_err());
        assert!(
            !TEMPORARY_FILES
                .listed()
                .iter()
                .any(|p| p.parent() == Some(dir.path()))
        );
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }
}
