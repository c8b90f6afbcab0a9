//! Helpers shared by the integration tests.
use std::path::PathBuf;

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
