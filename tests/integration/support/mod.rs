//! Helpers shared by the integration tests: the committed fixtures (here), the shared DICOM
//! corpus beside the project ([`corpus`]), the built binary ([`cli`]), small images written
//! for a test ([`images`]) and the app-test harness ([`app`]).
use std::path::PathBuf;

pub mod app;
pub mod cli;
pub mod corpus;
pub mod images;

/// `tests/fixtures/<sub>` of this repository. `CARGO_MANIFEST_DIR` set at run time wins over
/// the one compiled in, so that a test binary built here runs from a copy of the repository
/// elsewhere (tools/cuda_check.sh on a GPU machine).
pub fn fixture_dir(sub: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures")
        .join(sub)
}

/// A committed DICOM fixture, `tests/fixtures/dicom/<name>`.
pub fn dicom_fixture(name: &str) -> PathBuf {
    fixture_dir("dicom").join(name)
}

/// The tiny random CLIP in the open_clip layout (8 blocks of width 32, embed 16, 240 px).
pub fn tiny_clip() -> PathBuf {
    fixture_dir("clip/open_clip/open_clip_model.safetensors")
}

/// The same tiny CLIP in the Hugging Face layout (with its `config.json` beside it).
pub fn tiny_clip_hf() -> PathBuf {
    fixture_dir("clip/hf/model.safetensors")
}
