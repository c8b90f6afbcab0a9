//! Export jobs: the result files of scored frames, and a project's results file.
use std::path::PathBuf;
use std::sync::Arc;

use super::model::{ModelJob, ModelOutcome, spawn};
use super::runner::{Job, JobResult};
use crate::app::state::labels::ImageKey;
use crate::app::state::model::ModelJobKind;
use crate::io::input::load_model_images;
use crate::io::output::InputSet;
use crate::model::mvfa::detector::ImageResult;
use crate::workflow::results_file::write_results;
use crate::workflow::{DetectorFacts, ExportOptions, Exporter, FrameToExport};

/// Where a job finds a result's maps: in memory (shared), or in the spill folder.
#[derive(Debug, Clone)]
pub enum ResultSource {
    /// The result, maps included.
    Memory(Arc<ImageResult>),
    /// The file its maps were spilled to ([`super::spill`]).
    Spilled(PathBuf),
}

impl ResultSource {
    /// The source of `key`'s result in `model`: the spill file when its maps were spilled.
    pub fn of(model: &crate::app::state::model::ModelState, key: &ImageKey) -> Option<Self> {
        if let Some(path) = model.spilled.get(key) {
            return Some(ResultSource::Spilled(path.clone()));
        }
        model
            .results
            .get(key)
            .map(|s| ResultSource::Memory(s.result.clone()))
    }

    /// The whole result (read from the spill file on the job's thread when spilled).
    pub fn load(&self) -> Result<Arc<ImageResult>, String> {
        match self {
            ResultSource::Memory(r) => Ok(r.clone()),
            ResultSource::Spilled(path) => super::spill::read_spilled(path).map(Arc::new),
        }
    }
}

/// The results of a project save, taken on the UI thread (cheap: the maps are shared or on
/// disk) and written by a job.
pub struct ResultsSnapshot {
    /// The results file beside the project.
    pub path: PathBuf,
    /// Every scored frame, in key order.
    pub rows: Vec<(ImageKey, ResultSource)>,
    /// Side of the stored maps.
    pub model_size: usize,
}

/// Writes a project's results file from `snapshot`.
pub fn save_results(
    snapshot: ResultsSnapshot,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<()> {
    Job::spawn("Saving results", repaint, move |ctx| {
        ctx.progress(None, format!("{} scored frames", snapshot.rows.len()));
        write_results_snapshot(&snapshot)
    })
}

/// Writes `snapshot` on the calling thread (what [`save_results`] runs; also the last write
/// at exit).
pub fn write_results_snapshot(snapshot: &ResultsSnapshot) -> JobResult<()> {
    // Spilled maps come back for the write (the file holds every map).
    let loaded = snapshot
        .rows
        .iter()
        .map(|(_, source)| source.load())
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| format!("Could not save the results: {e}"))?;
    let rows: Vec<(&std::path::Path, usize, &ImageResult)> = snapshot
        .rows
        .iter()
        .zip(&loaded)
        .map(|((k, _), r)| (k.path.as_path(), k.frame, r.as_ref()))
        .collect();
    write_results(&snapshot.path, &rows, snapshot.model_size).map_err(|e| {
        format!(
            "Could not save the results to {}: {e}",
            snapshot.path.display()
        )
        .into()
    })
}

/// One frame to export: its key, its result, and its file's frame count (for names).
pub type ExportItem = (ImageKey, ResultSource, usize);

/// Writes the export files of `items` into `folder` (overlay, heatmap, raw maps, CSV, DICOM
/// as `options` say), frame by frame; a cancel stops between frames and still writes the CSV
/// of the frames done.
pub fn export(
    items: Vec<ExportItem>,
    folder: PathBuf,
    options: ExportOptions,
    facts: DetectorFacts,
    model_size: usize,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::Export, repaint, move |ctx| {
        let inputs = InputSet::new(items.iter().map(|(k, _, _)| k.path.as_path()));
        let mut exporter = Exporter::new(&folder, options, facts, inputs)?;
        let total = items.len();
        let mut problems = Vec::new();
        let mut start = 0;
        'files: while start < items.len() {
            let path = items[start].0.path.clone();
            let end = items[start..]
                .iter()
                .position(|(k, _, _)| k.path != path)
                .map_or(items.len(), |n| start + n);
            let group = &items[start..end];
            let frames = match load_model_images(&path) {
                Ok(frames) => frames,
                Err(e) => {
                    problems.push(e.to_string());
                    start = end;
                    continue;
                }
            };
            for (key, source, frame_count) in group {
                if ctx.is_cancelled() {
                    problems.push("cancelled".into());
                    break 'files;
                }
                ctx.progress(
                    Some(exporter.frames_written() as f32 / total.max(1) as f32),
                    format!("{} of {total} images", exporter.frames_written() + 1),
                );
                let Some(image) = frames.iter().find(|f| f.frame == key.frame) else {
                    problems.push(format!("{}: no frame {}", path.display(), key.frame));
                    continue;
                };
                let result = match source.load() {
                    Ok(r) => r,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                let frame = FrameToExport {
                    source: &key.path,
                    frame: key.frame,
                    frames: *frame_count,
                    label: image.label(),
                    display: &image.display,
                    result: &result,
                    model_size,
                };
                if let Err(e) = exporter.write_frame(frame) {
                    problems.push(e.to_string());
                }
            }
            start = end;
        }
        let summary = exporter.finish()?;
        let mut message = format!(
            "Exported {} image(s) to {}",
            summary.frames,
            summary.out_dir.display()
        );
        if !problems.is_empty() {
            message.push_str(&format!(" ({})", problems.join("; ")));
        }
        let dicom = summary
            .files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "dcm"))
            .cloned()
            .collect();
        Ok(ModelOutcome::Exported(message, dicom))
    })
}
