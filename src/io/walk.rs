//! The one folder walker: recursive, sorted by name, hidden entries (`.name`) skipped,
//! symbolic links followed, and a link that leads back into its own ancestry (a loop) reported
//! instead of walked, so that a walk always terminates. Unreadable entries are reported and
//! the walk goes on with their siblings.
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

/// An entry the walk could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkProblem {
    /// The entry (or the folder being listed).
    pub path: PathBuf,
    /// What went wrong, from the operating system or the loop check.
    pub message: String,
}

/// The files found under a root, in walk order, and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    /// Files `keep` accepted.
    pub files: Vec<PathBuf>,
    /// Folders and entries that could not be read, and link loops.
    pub problems: Vec<WalkProblem>,
}

/// Walks `root` (a file yields itself when `keep` accepts it). Errors only when `root` itself
/// cannot be read.
pub fn walk_files(root: &Path, keep: impl Fn(&Path) -> bool) -> std::io::Result<Walk> {
    std::fs::metadata(root)?;
    let mut walk = Walk::default();
    let entries = WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in entries {
        match entry {
            Ok(e) if e.file_type().is_file() && keep(e.path()) => walk.files.push(e.into_path()),
            Ok(_) => {}
            Err(err) => {
                let path = err.path().unwrap_or(root).to_path_buf();
                let message = match (err.loop_ancestor(), err.io_error()) {
                    (Some(ancestor), _) => {
                        format!("link loop back to {} (not followed)", ancestor.display())
                    }
                    (None, Some(io)) => io.to_string(),
                    (None, None) => err.to_string(),
                };
                walk.problems.push(WalkProblem { path, message });
            }
        }
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_hidden_skipped_and_loops_terminate() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/inner")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        for f in [
            "b/inner/2.png",
            "a.png",
            "b/1.png",
            ".hidden/x.png",
            "c.txt",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(root, root.join("b/inner/loop")).unwrap();
        let walk = walk_files(root, |p| p.extension().is_some_and(|e| e == "png")).unwrap();
        let names: Vec<_> = walk
            .files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.png", "b/1.png", "b/inner/2.png"]);
        #[cfg(unix)]
        assert!(
            walk.problems[0].message.contains("link loop"),
            "{:?}",
            walk.problems
        );
        assert!(walk_files(&root.join("missing"), |_| true).is_err());
        let single = walk_files(&root.join("a.png"), |_| true).unwrap();
        assert_eq!(single.files, [root.join("a.png")]);
    }
}
