//! Helpers shared by the integration tests.
use std::path::PathBuf;

/// `tests/fixtures/<sub>` of this repository.
pub fn fixture_dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}
