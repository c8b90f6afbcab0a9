//! Weights jobs: open a CLIP weights file as a model session, download the public weights.
use std::path::{Path, PathBuf};

use super::runner::{Job, JobContext, JobError, JobResult};
use crate::app::state::WeightsSummary;
use crate::backend::BackendInfo;
use crate::weights::download::{DownloadProgress, DownloadSource, download_weights};
use crate::workflow::{ModelSession, open_session};

/// Weights opened by the load job: the summary to show and the session the model jobs use.
pub struct LoadedWeights {
    /// What the load found, for display.
    pub summary: WeightsSummary,
    /// The backbone, ready for the model jobs.
    pub session: Box<dyn ModelSession>,
}

/// Opens the CLIP weights at `path` as a model session on `backend` (both towers, as scoring
/// needs them).
pub fn load(
    path: PathBuf,
    backend: BackendInfo,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<LoadedWeights> {
    Job::spawn("Loading CLIP weights", repaint, move |ctx| {
        load_on_worker(&path, &backend, ctx)
    })
}

fn load_on_worker(
    path: &Path,
    backend: &BackendInfo,
    ctx: &JobContext<LoadedWeights>,
) -> JobResult<LoadedWeights> {
    ctx.progress(None, "reading the file");
    let started = std::time::Instant::now();
    let session = open_session(path, None, backend)?;
    if ctx.is_cancelled() {
        return Err(JobError::cancelled());
    }
    let report = session.report();
    let vision = &report.config.vision;
    let summary = WeightsSummary {
        path: path.to_path_buf(),
        lines: vec![
            format!("Layout: {}", report.layout),
            format!(
                "Vision tower: {} blocks, width {}, patch {}, {} px input ({}x{} grid), {}",
                vision.layers,
                vision.width,
                vision.patch_size,
                vision.image_size,
                vision.grid_size(),
                vision.grid_size(),
                vision.activation.name()
            ),
            format!(
                "{} tensors applied ({}), {} ignored",
                report.applied.len(),
                report.tower_names(),
                report.ignored.len()
            ),
            format!(
                "{:.1} MB read in {:.1} s on {}",
                report.file_bytes as f64 / 1e6,
                started.elapsed().as_secs_f64(),
                backend.device
            ),
        ],
    };
    Ok(LoadedWeights { summary, session })
}

/// Downloads the public weights of `source` into the Hugging Face cache (`cache`, else the
/// standard one), checked against the hub's SHA-256; the result is the weights file.
pub fn download(
    source: DownloadSource,
    cache: Option<PathBuf>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<PathBuf> {
    Job::spawn("Downloading CLIP weights", repaint, move |ctx| {
        let mut report = |p: DownloadProgress| {
            let fraction = (p.total > 0).then(|| p.done as f32 / p.total as f32);
            ctx.progress(
                fraction,
                format!(
                    "{} ({} of {}): {:.0} of {:.0} MB",
                    p.file,
                    p.index + 1,
                    p.count,
                    p.done as f64 / 1e6,
                    p.total as f64 / 1e6
                ),
            );
        };
        Ok(download_weights(
            &source,
            cache.as_deref(),
            &mut report,
            ctx.cancel_flag(),
        )?)
    })
}
