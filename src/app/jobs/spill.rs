//! Spilling result maps to disk: past [`crate::app::state::model::MAP_BUDGET`] bytes of maps
//! in memory, the results farthest from the image shown keep their scores in memory and their
//! maps in a temporary folder (removed when the app exits), written by a thread of their own so
//! that the UI never waits on the disk. A spilled result comes back (read by a job) when its
//! image is shown, and the export and the project save read the spilled ones themselves.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};

use crate::model::mvfa::detector::ImageResult;
use crate::workflow::results_file::{read_results, write_results};

/// The spill folder and its writer thread.
pub struct Spill {
    dir: tempfile::TempDir,
    writer: Sender<(PathBuf, Arc<ImageResult>)>,
    model_size: usize,
    next: u64,
}

impl Spill {
    /// A new spill folder under the system's temporary folder, for maps of `model_size`.
    pub fn new(model_size: usize) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("mvfa-spill-").tempdir()?;
        let (writer, jobs) = channel::<(PathBuf, Arc<ImageResult>)>();
        std::thread::Builder::new()
            .name("result spill".into())
            .spawn(move || {
                for (path, result) in jobs {
                    // A failed write leaves no file: reading it back reports the failure.
                    let _ = write_results(&path, &[(path.as_path(), 0, &result)], model_size);
                }
            })?;
        Ok(Spill {
            dir,
            writer,
            model_size,
            next: 0,
        })
    }

    /// Side of the maps this spill holds.
    pub fn model_size(&self) -> usize {
        self.model_size
    }

    /// Queues `result`'s maps for writing and returns the file they will be in; the caller
    /// keeps only the scores ([`scores_only`]).
    pub fn put(&mut self, result: Arc<ImageResult>) -> PathBuf {
        self.next += 1;
        let path = self
            .dir
            .path()
            .join(format!("{}.results.safetensors", self.next));
        // The writer lives as long as the spill: a send cannot fail.
        let _ = self.writer.send((path.clone(), result));
        path
    }
}

/// Reads a spilled result back (on a job's thread). The writer may still be at it: the file
/// is awaited for up to ten seconds, then its absence is an error.
pub fn read_spilled(path: &Path) -> Result<ImageResult, String> {
    let start = std::time::Instant::now();
    while !path.exists() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return Err(format!(
                "the spilled maps {} were never written",
                path.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut rows = read_results(path).map_err(|e| e.to_string())?;
    rows.pop()
        .map(|r| r.result)
        .ok_or_else(|| format!("{}: no result in the spill file", path.display()))
}

/// `result` without its maps: what stays in memory of a spilled result (scores, for the
/// tables, the strip and the series).
pub fn scores_only(result: &ImageResult) -> ImageResult {
    let mut raw = result.raw.clone();
    raw.zero_map = Vec::new();
    raw.zero_map_levels = Vec::new();
    raw.few_map = None;
    raw.few_map_levels = Vec::new();
    ImageResult {
        raw,
        fused_map: None,
        score: result.score,
    }
}

/// Bytes of maps a result holds.
pub fn map_bytes(result: &ImageResult) -> usize {
    let raw = &result.raw;
    let values = raw.zero_map.len()
        + raw.zero_map_levels.iter().map(Vec::len).sum::<usize>()
        + raw.few_map.as_ref().map_or(0, Vec::len)
        + raw.few_map_levels.iter().map(Vec::len).sum::<usize>()
        + result.fused_map.as_ref().map_or(0, Vec::len);
    values * 4
}
