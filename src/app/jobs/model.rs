//! The model jobs: thin wrappers that run a workflow step on the shared session in a worker
//! thread and report through [`Job`]. They never touch egui or the app state; what they need
//! is copied in when they start.
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::runner::{Job, JobContext, JobError, JobResult};
use crate::app::state::labels::ImageKey;
use crate::app::state::model::ModelJobKind;
use crate::io::input::ModelImage;
use crate::model::mvfa::detector::ImageResult;
use crate::train::fit::FitEvent;
use crate::train::trainer::TrainEvent;
use crate::workflow::{
    DetectorSummary, FitRequest, FitSummary, LabelledImage, ModelSession, Prefetched, ShotSource,
    collect_shots, with_prefetched_frames,
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
    /// The quick memory bank of labels `revision` is in use; `None`: nothing was quick to do
    /// (no detector yet, or the normal shots did not change).
    QuickBank(Option<Box<DetectorSummary>>, u64),
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

/// Frames handed to the session at a time: enough for its largest forward batch, few enough
/// that results appear a few at a time (the session checks for a cancel between batches).
const SCORE_CHUNK: usize = crate::workflow::SCORE_BATCH_MAX;

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

/// The quick first step of a label edit: the memory bank from the unaugmented view of each
/// normal shot of `shots` (labels `revision`), one backbone pass per new shot, the
/// calibration kept ([`crate::workflow::ModelSession::prepare_quick`]).
pub fn prepare_quick(
    session: SharedSession,
    shots: Vec<LabelledImage>,
    revision: u64,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::PrepareQuick, repaint, move |ctx| {
        ctx.progress(None, "reading the labelled images");
        let collected = collect_shots(&ShotSource::Labelled(shots))?;
        ctx.progress(None, "one pass of each new normal shot");
        let summary = lock(&session).prepare_quick(&collected.shots)?;
        Ok(ModelOutcome::QuickBank(summary.map(Box::new), revision))
    })
}

/// Rebuilds the memory bank and calibration from `shots` (labels `revision`) around the
/// current adapters, without fine-tuning. `after_quick`: the quick bank is in use, and this
/// adds the augmented views to it.
pub fn prepare(
    session: SharedSession,
    shots: Vec<LabelledImage>,
    request: FitRequest,
    revision: u64,
    after_quick: bool,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::Prepare, repaint, move |ctx| {
        ctx.progress(None, "reading the labelled images");
        let collected = collect_shots(&ShotSource::Labelled(shots))?;
        ctx.progress(
            None,
            if after_quick {
                "adding the augmented views of each shot and calibrating"
            } else {
                "building the memory bank and calibration"
            },
        );
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

/// Scores `keys` in order, handing over each frame as it is done. The frames are decoded on a
/// thread of their own ahead of the forward pass ([`with_prefetched_frames`]), and the session
/// picks the forward batch for throughput.
pub fn score(
    session: SharedSession,
    keys: Vec<ImageKey>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> ModelJob {
    spawn(ModelJobKind::Score, repaint, move |ctx| {
        let total = keys.len();
        // Consecutive keys of one file share one read of the file.
        let mut files: Vec<(PathBuf, Option<Vec<usize>>)> = Vec::new();
        for key in &keys {
            match files.last_mut() {
                Some((path, Some(frames))) if *path == key.path => frames.push(key.frame),
                _ => files.push((key.path.clone(), Some(vec![key.frame]))),
            }
        }
        let outcome = with_prefetched_frames(&files, ctx.cancel_flag(), |rx| {
            score_prefetched(ctx, &session, &files, rx, total)
        });
        if ctx.is_cancelled() {
            return Err(JobError::cancelled());
        }
        outcome?;
        Ok(ModelOutcome::Scored)
    })
}

/// The scoring side of [`score`]: hands the session the frames the decoding thread has
/// ready, a chunk at a time, and reports each result, each unreadable file's frames and each
/// frame a file turned out not to have.
fn score_prefetched(
    ctx: &Ctx,
    session: &SharedSession,
    files: &[(PathBuf, Option<Vec<usize>>)],
    rx: std::sync::mpsc::Receiver<Prefetched>,
    total: usize,
) -> JobResult<()> {
    let mut done = 0;
    let mut pending: Vec<ModelImage> = Vec::new();
    let mut delivered: Vec<Vec<usize>> = vec![Vec::new(); files.len()];
    let mut failed: Vec<bool> = vec![false; files.len()];
    let flush = |pending: &mut Vec<ModelImage>, done: &mut usize| -> JobResult<()> {
        if pending.is_empty() {
            return Ok(());
        }
        ctx.progress(
            Some(*done as f32 / total.max(1) as f32),
            format!("{} of {total} images", *done + 1),
        );
        let results = lock(session).score(pending, ctx.cancel_flag())?;
        if results.len() < pending.len() {
            return Err(JobError::cancelled());
        }
        for (frame, result) in pending.drain(..).zip(results) {
            *done += 1;
            ctx.emit(ModelItem::Scored(
                ImageKey {
                    path: frame.source,
                    frame: frame.frame,
                },
                Arc::new(result),
            ));
        }
        Ok(())
    };
    for message in rx {
        if ctx.is_cancelled() {
            return Err(JobError::cancelled());
        }
        match message {
            Prefetched::Frame(n, frame) => {
                delivered[n].push(frame.frame);
                pending.push(frame);
                if pending.len() >= SCORE_CHUNK {
                    flush(&mut pending, &mut done)?;
                }
            }
            Prefetched::Failed(n, e) => {
                flush(&mut pending, &mut done)?;
                // The frames of the file not handed over yet.
                let (path, wanted) = &files[n];
                failed[n] = true;
                for &frame in wanted
                    .iter()
                    .flatten()
                    .filter(|f| !delivered[n].contains(f))
                {
                    done += 1;
                    ctx.emit(ModelItem::Unscorable(
                        ImageKey {
                            path: path.clone(),
                            frame,
                        },
                        e.to_string(),
                    ));
                }
            }
        }
    }
    flush(&mut pending, &mut done)?;
    // Frames a file turned out not to have.
    for (n, (path, wanted)) in files.iter().enumerate().filter(|(n, _)| !failed[*n]) {
        for &frame in wanted
            .iter()
            .flatten()
            .filter(|f| !delivered[n].contains(f))
        {
            ctx.emit(ModelItem::Unscorable(
                ImageKey {
                    path: path.clone(),
                    frame,
                },
                "the file has no such frame".into(),
            ));
        }
    }
    Ok(())
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
