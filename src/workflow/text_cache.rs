//! The prompt features of each organ word, computed once per weights file and kept on disk
//! beside the weights (`<weights>.text-features.json`), keyed by the weights' SHA-256: the
//! 420-sentence text pass takes seconds on a CPU, and the features never change for a file.
use std::path::{Path, PathBuf};

use crate::model::clip::prompts::TextFeatureCache;

/// Where the features of `weights` are kept.
pub fn cache_path(weights: &Path) -> PathBuf {
    let mut name = weights.file_name().unwrap_or_default().to_os_string();
    name.push(".text-features.json");
    weights.with_file_name(name)
}

/// The cache on disk for weights whose hash is `sha256`, or an empty one when there is none,
/// it is unreadable, or it belongs to other weights (a replaced file).
pub fn load(weights: &Path, sha256: &str) -> TextFeatureCache {
    std::fs::read(cache_path(weights))
        .ok()
        .and_then(|bytes| TextFeatureCache::from_json(&bytes).ok())
        .filter(|cache| cache.backbone == sha256)
        .unwrap_or_else(|| TextFeatureCache::new(sha256))
}

/// Writes `cache` beside `weights` atomically. A read-only folder only costs the next start
/// the text pass again, so the error is returned for the caller to ignore or report.
pub fn store(weights: &Path, cache: &TextFeatureCache) -> std::io::Result<()> {
    let json = cache.to_json()?;
    crate::io::export::write_atomically(&cache_path(weights), |out| Ok(out.write_all(&json)?))
        .map_err(std::io::Error::other)
}
