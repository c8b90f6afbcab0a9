//! The shared DICOM corpus beside the project (`../shared/data/dicom`, with its
//! `MANIFEST.csv`). Tests that read it are `#[ignore = "needs the shared DICOM corpus
//! (../shared/data/dicom)"]` and have `corpus` in their name; `.ci/run` runs them with
//! `--ignored corpus` where the corpus is present. Run by hand, they fail (never pass
//! quietly) when it is absent.
use std::path::{Path, PathBuf};

/// The corpus folder; panics, saying what is missing, when the corpus is not there.
pub fn dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/dicom");
    assert!(
        dir.join("MANIFEST.csv").is_file(),
        "needs the shared DICOM corpus beside the project: {} (with its MANIFEST.csv)",
        dir.display()
    );
    dir
}

/// A file of the corpus (`rel` below [`dir`]); panics when it is missing.
pub fn file(rel: &str) -> PathBuf {
    let path = dir().join(rel);
    assert!(
        path.exists(),
        "the shared DICOM corpus lacks {}",
        path.display()
    );
    path
}
