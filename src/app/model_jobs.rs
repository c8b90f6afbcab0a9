//! The model jobs: thin wrappers that run a workflow step on the shared session in a worker
//! thread and report through [`Job`]. They never touch egui or the app state; what they need
//! is copied in when they start.
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};

use crate::app::jobs::{Job, JobContext};
use crate::app::state::labels::ImageKey;
use crate::app::state::model::{
    ModelItem, ModelJob, ModelJobKind, ModelOutcome, ResultsSnapshot, SharedSession,
};
use crate::io::input::{load_model_frames, load_model_images};
use crate::io::output::InputSet;
use crate::model::mvfa::detector::ImageResult;
use crate::model::mvfa::detector::TaskKind;
use crate::train::fit::FitEvent;
use crate::workflow::results_file::write_results;
use crate::workflow::{
    DetectorFacts, ExportOptions, Exporter, FitRequest, FrameToExport, LabelledImage, ModelSession,
    Schedule, ShotSource, collect_shots,
};

/// Frames scored per forward batch: small, so that results appear one by one and a cancel
/// is honoured quickly.
const SCORE_CHUNK: usize = 4;

type Ctx = JobContext<ModelOutcome, ModelItem>;

fn lock(session: &SharedSession) -> MutexGuard<'_, Box<dyn ModelSession>> {
    // A panic in an earlier job poisons the lock; the session itself is still whole (every
    // step installs its result only at the end).
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fit settings of the app's fits.
pub fn fit_request(organ: &str, schedule: Schedule, seed: u64) -> FitRequest {
    FitRequest {
        organ: organ.to_string(),
        schedule,
        epochs: None,
        learning_rate: 1e-3,
        train_batch: 1,
        seed,
        init: None,
        batch_size: 8,
        normal_only_task: TaskKind::Segmentation,
        fpr: crate::model::mvfa::calibration::DEFAULT_FPR,
        selection: crate::train::select::SelectionSettings::default(),
    }
}

fn spawn(
    kind: ModelJobKind,
    repaint: impl Fn() + Send + Sync + 'static,
    work: impl FnOnce(&Ctx) -> Result<ModelOutcome, String> + Send + 'static,
) -> ModelJob {
    ModelJob {
        kind,
        job: Job::spawn(kind.title(), repaint, work),
    }
}

/// Rebuilds the memory bank and calibration from `shots` (labels `revision`) around the
/// current adapters, without fine-tuning.
pub fn prepare(
    session: SharedSession,
    shots: Vec<LabelledImage>,
    request: FitRequest,
    revision: u64,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::Prepare, repaint, move |ctx| {
        ctx.progress(None, "reading the labelled images");
        let collected = collect_shots(&ShotSource::Labelled(shots)).map_err(|e| e.to_string())?;
        ctx.progress(None, "building the memory bank and calibration");
        let summary = lock(&session)
            .prepare(&collected.shots, &request)
            .map_err(|e| e.to_string())?;
        Ok(ModelOutcome::Detector(Box::new(summary), Some(revision)))
    })
}

/// Fine-tunes on `shots` (labels `revision`), reporting each step.
pub fn train(
    session: SharedSession,
    shots: Vec<LabelledImage>,
    request: FitRequest,
    revision: u64,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::Train, repaint, move |ctx| {
        ctx.progress(Some(0.0), "reading the labelled images");
        let collected = collect_shots(&ShotSource::Labelled(shots)).map_err(|e| e.to_string())?;
        let mut on_event = |event: FitEvent| match event {
            FitEvent::Training(crate::train::trainer::TrainEvent::Step(report)) => {
                let total = report.epochs * report.steps_per_epoch;
                let done = (report.epoch - 1) * report.steps_per_epoch + report.step;
                ctx.progress(
                    Some(done as f32 / total.max(1) as f32),
                    format!("step {done} of {total}"),
                );
                ctx.emit(ModelItem::Step(report));
            }
            FitEvent::Training(_) => {}
            FitEvent::Started {
                training_images, ..
            } => ctx.emit(ModelItem::Stage(format!(
                "fine-tuning on {training_images} augmented images"
            ))),
            FitEvent::Run {
                run, runs, purpose, ..
            } => ctx.emit(ModelItem::Run(format!(
                "fine-tuning run {run} of {runs}: {purpose}"
            ))),
            FitEvent::Validating { fold, folds } => ctx.emit(ModelItem::Stage(format!(
                "validating the candidates on fold {fold} of {folds}"
            ))),
            FitEvent::BuildingMemoryBank { images } => ctx.emit(ModelItem::Stage(format!(
                "building the memory bank from {images} images"
            ))),
            FitEvent::Calibrating => ctx.emit(ModelItem::Stage("calibrating".into())),
        };
        let summary = lock(&session)
            .fit(&collected.shots, &request, &mut on_event, ctx.cancel_flag())
            .map_err(|e| e.to_string())?;
        Ok(ModelOutcome::Trained(summary, revision))
    })
}

/// Scores `keys` in order, handing over each frame as it is done.
pub fn score(
    session: SharedSession,
    keys: Vec<ImageKey>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::Score, repaint, move |ctx| {
        let total = keys.len();
        let mut done = 0;
        // Consecutive keys of one file share one read of the file.
        let mut start = 0;
        while start < keys.len() {
            let path = keys[start].path.clone();
            let end = keys[start..]
                .iter()
                .position(|k| k.path != path)
                .map_or(keys.len(), |n| start + n);
            let wanted = &keys[start..end];
            start = end;
            if ctx.is_cancelled() {
                return Err("cancelled".into());
            }
            ctx.progress(
                Some(done as f32 / total.max(1) as f32),
                format!("{} of {total} images", done + 1),
            );
            let frame_numbers: Vec<usize> = wanted.iter().map(|k| k.frame).collect();
            let selected = match load_model_frames(&path, Some(&frame_numbers)) {
                Ok(frames) => frames,
                Err(e) => {
                    for key in wanted {
                        ctx.emit(ModelItem::Unscorable(key.clone(), e.to_string()));
                    }
                    done += wanted.len();
                    continue;
                }
            };
            for key in wanted
                .iter()
                .filter(|k| !selected.iter().any(|f| f.frame == k.frame))
            {
                ctx.emit(ModelItem::Unscorable(
                    key.clone(),
                    "the file has no such frame".into(),
                ));
            }
            for chunk in selected.chunks(SCORE_CHUNK) {
                let results = lock(&session)
                    .score(chunk, ctx.cancel_flag())
                    .map_err(|e| e.to_string())?;
                if results.len() < chunk.len() {
                    return Err("cancelled".into());
                }
                for (frame, result) in chunk.iter().zip(results) {
                    ctx.emit(ModelItem::Scored(
                        ImageKey {
                            path: path.clone(),
                            frame: frame.frame,
                        },
                        Arc::new(result),
                    ));
                }
            }
            done += wanted.len();
        }
        Ok(ModelOutcome::Scored)
    })
}

/// Makes the adapters of `path` current.
pub fn import(
    session: SharedSession,
    path: PathBuf,
    organ: Option<String>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::Import, repaint, move |ctx| {
        ctx.progress(None, format!("reading {}", path.display()));
        let summary = lock(&session)
            .import_adapters(&path, organ.as_deref())
            .map_err(|e| e.to_string())?;
        Ok(ModelOutcome::Detector(Box::new(summary), None))
    })
}

/// Writes the current detector to `path`.
pub fn save(
    session: SharedSession,
    path: PathBuf,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::Save, repaint, move |ctx| {
        ctx.progress(None, format!("writing {}", path.display()));
        lock(&session)
            .save(&path, "MVFA Studio")
            .map_err(|e| e.to_string())?;
        Ok(ModelOutcome::Saved(path))
    })
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
pub fn write_results_snapshot(snapshot: &ResultsSnapshot) -> Result<(), String> {
    let rows: Vec<(&std::path::Path, usize, &ImageResult)> = snapshot
        .rows
        .iter()
        .map(|(k, r)| (k.path.as_path(), k.frame, r.as_ref()))
        .collect();
    write_results(&snapshot.path, &rows, snapshot.model_size).map_err(|e| {
        format!(
            "Could not save the results to {}: {e}",
            snapshot.path.display()
        )
    })
}

/// One frame to export: its key, its result, and its file's frame count (for names).
pub type ExportItem = (ImageKey, Arc<ImageResult>, usize);

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
        let mut exporter =
            Exporter::new(&folder, options, facts, inputs).map_err(|e| e.to_string())?;
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
            for (key, result, frame_count) in group {
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
                let frame = FrameToExport {
                    source: &key.path,
                    frame: key.frame,
                    frames: *frame_count,
                    label: image.label(),
                    display: &image.display,
                    result,
                    model_size,
                };
                if let Err(e) = exporter.write_frame(frame) {
                    problems.push(e.to_string());
                }
            }
            start = end;
        }
        let summary = exporter.finish().map_err(|e| e.to_string())?;
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
