//! The model jobs: thin wrappers that run a workflow step on the shared session in a worker
//! thread and report through [`Job`]. They never touch egui or the app state; what they need
//! is copied in when they start.
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::runner::{Job, JobContext, JobError, JobResult};
use crate::app::state::labels::ImageKey;
use crate::app::state::model::ModelJobKind;
use crate::io::input::load_model_frames;
use crate::model::mvfa::detector::ImageResult;
use crate::train::fit::FitEvent;
use crate::train::trainer::TrainEvent;
use crate::workflow::{
    DetectorSummary, FitRequest, FitSummary, LabelledImage, ModelSession, ShotSource, collect_shots,
};

/// The session shared with the model jobs: only they lock it; the UI thread reads the
/// summaries and results they hand over, never the model.
pub type SharedSession = Arc<Mutex<Box<dyn ModelSession>>>;

/// A partial result of a model job.
pub enum ModelItem {
    /// A stage or step of a fit, as the trainer reports it.
    Fit(FitEvent),
    /// One frame scored.
    Scored(ImageKey, Arc<ImageResult>),
    /// A frame that could not be scored, and why.
    Unscorable(ImageKey, String),
}

/// How a model job ended.
pub enum ModelOutcome {
    /// A detector was built (prepare or import); `revision` is the labels revision its
    /// shots came from.
    Detector(Box<DetectorSummary>, Option<u64>),
    /// Fine-tuning ended (or was cancelled).
    Trained(FitSummary, u64),
    /// Scoring ended (its frames came as items).
    Scored,
    /// The detector was written here.
    Saved(PathBuf),
    /// Result files were written; the message says what and where; the DICOM files written.
    Exported(String, Vec<PathBuf>),
}

/// The running model job.
pub struct ModelJob {
    /// What it does.
    pub kind: ModelJobKind,
    /// The worker.
    pub job: Job<ModelOutcome, ModelItem>,
}

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

pub(super) fn spawn(
    kind: ModelJobKind,
    repaint: impl Fn() + Send + Sync + 'static,
    work: impl FnOnce(&Ctx) -> JobResult<ModelOutcome> + Send + 'static,
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
        let collected = collect_shots(&ShotSource::Labelled(shots))?;
        ctx.progress(None, "building the memory bank and calibration");
        let summary = lock(&session).prepare(&collected.shots, &request)?;
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
        let collected = collect_shots(&ShotSource::Labelled(shots))?;
        let mut on_event = |event: FitEvent| {
            if let FitEvent::Training(TrainEvent::Step(report)) = &event {
                let total = report.epochs * report.steps_per_epoch;
                let done = (report.epoch - 1) * report.steps_per_epoch + report.step;
                ctx.progress(
                    Some(done as f32 / total.max(1) as f32),
                    format!("step {done} of {total}"),
                );
            }
            ctx.emit(ModelItem::Fit(event));
        };
        let summary =
            lock(&session).fit(&collected.shots, &request, &mut on_event, ctx.cancel_flag())?;
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
                return Err(JobError::cancelled());
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
                let results = lock(&session).score(chunk, ctx.cancel_flag())?;
                if results.len() < chunk.len() {
                    return Err(JobError::cancelled());
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
        let summary = lock(&session).import_adapters(&path, organ.as_deref())?;
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
        lock(&session).save(&path, "MVFA Studio")?;
        Ok(ModelOutcome::Saved(path))
    })
}
