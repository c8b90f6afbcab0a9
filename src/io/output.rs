//! Output paths checked before any work: an output never replaces an input (the CLIP weights,
//! a checkpoint, an image), and one that cannot be written (a folder where a file goes, a
//! missing or read-only parent) is refused before hours of fitting, not after. Every command
//! that writes runs its outputs through [`check_output`] first; the app does the same.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What is written at an output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// One file (a checkpoint, a JSON report); its folder must exist.
    File,
    /// A folder of files (created when absent, with its missing parents).
    Folder,
}

/// An output that would harm an input or cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct OutputError {
    /// The output path as the user gave it.
    pub path: PathBuf,
    /// Why it is refused.
    pub reason: String,
}

impl OutputError {
    fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// `path` with symbolic links and `..` resolved; for a path that does not exist yet, its
/// nearest existing ancestor resolved and the rest appended.
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let mut rest = Vec::new();
    let mut cur = path;
    loop {
        match cur.file_name() {
            Some(name) => rest.push(name.to_os_string()),
            None => return path.to_path_buf(),
        }
        cur = match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(base) = cur.canonicalize() {
            return rest.iter().rev().fold(base, |acc, n| acc.join(n));
        }
    }
}

/// The inputs of a command, resolved once, to test outputs against.
#[derive(Debug, Clone, Default)]
pub struct InputSet {
    files: HashSet<PathBuf>,
    folders: Vec<PathBuf>,
}

impl InputSet {
    /// The inputs among `paths` that exist (files and folders; missing ones are the readers'
    /// business).
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Self {
        let mut set = Self::default();
        for p in paths {
            set.add(p);
        }
        set
    }

    /// Adds one input path.
    pub fn add(&mut self, path: &Path) {
        if let Ok(p) = path.canonicalize() {
            if p.is_dir() {
                self.folders.push(p);
            } else {
                self.files.insert(p);
            }
        }
    }

    /// The input that `target` (an existing or future file) is, if any: a named input file,
    /// or an existing file inside an input folder.
    pub fn input_at(&self, target: &Path) -> Option<PathBuf> {
        let resolved = resolve(target);
        if self.files.contains(&resolved) {
            return Some(resolved);
        }
        if resolved.is_file() && self.folders.iter().any(|f| resolved.starts_with(f)) {
            return Some(resolved);
        }
        None
    }

    /// Refuses to write `target` when it is an input.
    pub fn ensure_not_input(&self, target: &Path) -> Result<(), OutputError> {
        match self.input_at(target) {
            Some(input) => Err(OutputError::new(
                target,
                format!(
                    "this output would overwrite an input ({}); choose another output path",
                    input.display()
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Checks, before any work, that `out` can be written as `kind` without harming `inputs`:
/// it is no input (after resolving links), a file output is not an existing folder and its
/// folder exists, a folder output is not a file, and the folder that receives the files is
/// writable (probed with a temporary file, which is removed).
pub fn check_output(out: &Path, kind: OutputKind, inputs: &InputSet) -> Result<(), OutputError> {
    if out.as_os_str().is_empty() {
        return Err(OutputError::new(out, "empty output path"));
    }
    inputs.ensure_not_input(out)?;
    let resolved = resolve(out);
    if inputs.folders.contains(&resolved) && kind == OutputKind::File {
        return Err(OutputError::new(
            out,
            "this output is an input folder; choose another output path",
        ));
    }
    let writable_dir = match kind {
        OutputKind::File => {
            if out.is_dir() {
                return Err(OutputError::new(
                    out,
                    "is a folder; give a file name for this output",
                ));
            }
            let parent = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(OutputError::new(
                    out,
                    format!(
                        "the output folder {} does not exist (or is not a folder)",
                        parent.display()
                    ),
                ));
            }
            parent
        }
        OutputKind::Folder => {
            if out.exists() && !out.is_dir() {
                return Err(OutputError::new(
                    out,
                    "is a file; give a folder for this output",
                ));
            }
            // The folder, or the nearest ancestor that exists (the rest is created).
            let mut dir = out.to_path_buf();
            while !dir.exists() {
                dir = match dir.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
            }
            if !dir.is_dir() {
                return Err(OutputError::new(
                    out,
                    format!("cannot create this folder: {} is a file", dir.display()),
                ));
            }
            dir
        }
    };
    probe_writable(&writable_dir).map_err(|reason| {
        OutputError::new(
            out,
            format!("cannot write in {}: {reason}", writable_dir.display()),
        )
    })
}

/// Why files cannot be created in a folder.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("the folder is read-only")]
    ReadOnly,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Whether files can be created in `dir`: refused when the folder is marked read-only (even
/// for a user whom the system would let write), else tried with a temporary file.
fn probe_writable(dir: &Path) -> Result<(), ProbeError> {
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().readonly() {
        return Err(ProbeError::ReadOnly);
    }
    tempfile::Builder::new()
        .prefix(".mvfa-write-check")
        .tempfile_in(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_appends_the_missing_tail_to_the_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(resolve(&dir.path().join("a/b.txt")), base.join("a/b.txt"));
        assert_eq!(resolve(dir.path()), base);
    }

    #[test]
    fn an_output_that_is_an_input_or_cannot_be_written_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("weights.safetensors");
        std::fs::write(&input, b"x").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("a.png"), b"x").unwrap();
        let inputs = InputSet::new([input.as_path(), data.as_path()]);
        let file = OutputKind::File;
        assert!(check_output(&input, file, &inputs).is_err());
        assert!(check_output(&data.join("a.png"), file, &inputs).is_err());
        assert!(check_output(&data, file, &inputs).is_err());
        assert!(check_output(&dir.path().join("nope/x.st"), file, &inputs).is_err());
        assert!(check_output(&input, OutputKind::Folder, &inputs).is_err());
        check_output(&dir.path().join("new.st"), file, &inputs).unwrap();
        check_output(&data.join("new.st"), file, &inputs).unwrap();
        check_output(&dir.path().join("x/y"), OutputKind::Folder, &inputs).unwrap();
        // Nothing left behind by the probes.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
