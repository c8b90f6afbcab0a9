//! Model commands and model job events: fine-tuning, import and save, results display,
//! ranking and corrections, and the scheduler that keeps the detector and the scores in step
//! with the labels (memory bank rebuilt after a label edit, the study rescored nearest image
//! first after every new detector).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use eframe::egui;

use super::{Action, repaint, show};
use crate::app::commands::Command;
use crate::app::jobs::JobStatus;
use crate::app::model_jobs;
use crate::app::state::AppState;
use crate::app::state::labels::{ImageKey, Label};
use crate::app::state::model::{LossPoint, ModelItem, ModelJobKind, ModelOutcome, Scored};
use crate::io::mask::Mask;
use crate::workflow::{FitSummary, LabelledImage, MapLayer, MaskSource, ShotLabel, layer_map};

/// Label edits settle this long before the memory bank is rebuilt.
const SETTLE: Duration = Duration::from_millis(400);
/// Frames one scoring job takes (then the order is worked out again from the current image).
const SCORE_BATCH: usize = 48;

/// Runs a model command; false when `command` is not one.
pub fn run(state: &mut AppState, command: Command, ctx: &egui::Context) -> bool {
    match command {
        Command::ImportAdapters => {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Import MVFA adapters (MVFA Studio checkpoint or reference .pth)")
                .add_filter("Adapters", &["safetensors", "pth", "pt"])
                .pick_file()
            {
                import(state, path, ctx);
            }
        }
        Command::SaveDetector => {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Save the detector")
                .add_filter("Safetensors", &["safetensors"])
                .set_file_name("detector.safetensors")
                .save_file()
            {
                save(state, path, ctx);
            }
        }
        Command::StartTraining => start_training(state, ctx),
        Command::ToggleHeatmap => state.model.view.show_heatmap = !state.model.view.show_heatmap,
        Command::ToggleSideBySide => state.model.view.side_by_side = !state.model.view.side_by_side,
        Command::NextLayer => step_layer(state, 1),
        Command::PreviousLayer => step_layer(state, -1),
        Command::NextAnomalous => step_ranked(state, 1, ctx),
        Command::PreviousAnomalous => step_ranked(state, -1, ctx),
        Command::AcceptNormal => accept(state, Label::Normal),
        Command::AcceptAbnormal => accept(state, Label::Abnormal),
        Command::ExportImage | Command::ExportStudy => {
            state.log.push("Export is not wired up yet".into())
        }
        _ => return false,
    }
    true
}

/// Imports the adapters at `path`.
pub fn import(state: &mut AppState, path: PathBuf, ctx: &egui::Context) {
    let Some(session) = state.model.session.clone() else {
        state
            .log
            .push("Load the CLIP weights before importing adapters".into());
        return;
    };
    cancel_model_job(state);
    state.model.checkpoint = Some(path.clone());
    state.model.job = Some(model_jobs::import(session, path, None, repaint(ctx)));
}

/// Writes the detector to `path`.
pub fn save(state: &mut AppState, path: PathBuf, ctx: &egui::Context) {
    let Some(session) = state.model.session.clone() else {
        state.log.push("No detector to save yet".into());
        return;
    };
    if state.model.detector.is_none() {
        state
            .log
            .push("No detector to save yet: label a normal image or import adapters first".into());
        return;
    }
    if state.model.running(ModelJobKind::Train) {
        state
            .log
            .push("Fine-tuning is running: save when it has ended".into());
        return;
    }
    cancel_model_job(state);
    state.model.job = Some(model_jobs::save(session, path, repaint(ctx)));
}

fn cancel_model_job(state: &mut AppState) {
    if let Some(job) = state.model.job.take() {
        job.job.cancel();
    }
}

/// The labelled images as the workflow takes them (masks with at least one lesion pixel).
pub fn labelled_images(state: &AppState) -> Vec<LabelledImage> {
    state
        .labels
        .labels()
        .map(|(key, label)| LabelledImage {
            path: key.path.clone(),
            frame: key.frame,
            label: match label {
                Label::Normal => ShotLabel::Normal,
                Label::Abnormal => ShotLabel::Abnormal,
            },
            mask: state
                .labels
                .mask(key)
                .filter(|m| *label == Label::Abnormal && m.count() > 0)
                .map(|m| MaskSource::Pixels {
                    width: m.width as usize,
                    height: m.height as usize,
                    values: m.as_bytes().to_vec(),
                }),
        })
        .collect()
}

fn start_training(state: &mut AppState, ctx: &egui::Context) {
    let Some(session) = state.model.session.clone() else {
        state
            .log
            .push("Load the CLIP weights before fine-tuning (Model tab)".into());
        return;
    };
    if state.model.running(ModelJobKind::Train) {
        return;
    }
    let counts = state.labels.counts();
    if counts.normal == 0 || counts.abnormal == 0 {
        let message = "Fine-tuning needs at least one normal and one abnormal image \
                       (N and A); with normal images only, the memory bank is used as is"
            .to_string();
        state.model.error = Some(message.clone());
        state.log.push(message);
        return;
    }
    state.labels.end_stroke();
    cancel_model_job(state);
    let request =
        model_jobs::fit_request(&state.model.organ, state.model.schedule, state.model.seed);
    state.model.error = None;
    state.model.training = crate::app::state::model::TrainingRun {
        status: "starting".into(),
        started: Some(Instant::now()),
        ..Default::default()
    };
    state.model.job = Some(model_jobs::train(
        session,
        labelled_images(state),
        request,
        state.labels.revision,
        repaint(ctx),
    ));
    state.log.push(format!(
        "Fine-tuning on {} normal and {} abnormal images ({:?} schedule)",
        counts.normal, counts.abnormal, state.model.schedule
    ));
}

fn step_layer(state: &mut AppState, delta: isize) {
    let levels = state.model.detector.as_ref().map_or(4, |d| d.levels);
    let layers = MapLayer::all(levels);
    let at = layers
        .iter()
        .position(|l| *l == state.model.view.layer)
        .unwrap_or(0) as isize;
    let next = (at + delta).rem_euclid(layers.len() as isize) as usize;
    state.model.view.layer = layers[next];
}

/// Moves to the next (or previous) image in the order of decreasing score.
fn step_ranked(state: &mut AppState, delta: isize, ctx: &egui::Context) {
    let ranked: Vec<ImageKey> = state
        .model
        .ranked()
        .into_iter()
        .map(|(k, _)| k.clone())
        .collect();
    if ranked.is_empty() {
        state.log.push("No scored images yet".into());
        return;
    }
    let at = state
        .viewer
        .current
        .as_ref()
        .and_then(|c| ranked.iter().position(|k| k == c));
    let next = match at {
        None => 0,
        Some(i) => (i as isize + delta).clamp(0, ranked.len() as isize - 1) as usize,
    };
    let key = ranked[next].clone();
    show(state, key, ctx);
}

/// Accepts the current result as a label; an abnormal label gets the region above the
/// contour level as its starting mask.
fn accept(state: &mut AppState, label: Label) {
    let Some(key) = state.viewer.current.clone() else {
        state.log.push("Open an image first".into());
        return;
    };
    state.labels.end_stroke();
    state.labels.set(std::slice::from_ref(&key), Some(label));
    if label == Label::Normal {
        state
            .log
            .push("Accepted as normal: the memory bank is being updated".into());
        return;
    }
    let size = state
        .images
        .get(&key.path)
        .and_then(|s| s.frames.get(key.frame))
        .map(|f| (f.width, f.height));
    let detector = state.model.detector.as_ref();
    let map = state.model.results.get(&key).and_then(|scored| {
        layer_map(
            &scored.result,
            detector.and_then(|d| d.calibration.as_ref()),
            state.model.view.layer,
        )
    });
    match (size, map, detector) {
        (Some((width, height)), Some(map), Some(detector)) => {
            let level = state.model.view.contour(map.scale);
            let values = crate::workflow::maps::threshold_mask(
                &map.values,
                detector.model_size,
                width as usize,
                height as usize,
                level,
            );
            let mut mask = Mask::new(width, height);
            mask.set_region(
                crate::io::mask::PixelRect {
                    x0: 0,
                    y0: 0,
                    x1: width,
                    y1: height,
                },
                &values,
            );
            let pixels = mask.count();
            match state.labels.replace_mask(&key, mask) {
                Ok(()) => state.log.push(format!(
                    "Accepted as abnormal with a starting mask of {pixels} pixels (edit it with the brush, B)"
                )),
                Err(e) => state.log.push(e),
            }
        }
        _ => state
            .log
            .push("Accepted as abnormal (no result to take a mask from)".into()),
    }
}

/// Applies what the model job reported, then starts the next piece of work the labels and
/// results call for.
pub fn poll(state: &mut AppState, ctx: &egui::Context) {
    if state.labels.revision != state.model.seen_revision.0 {
        state.model.seen_revision = (state.labels.revision, Instant::now());
    }
    if let Some(model_job) = state.model.job.as_mut() {
        let kind = model_job.kind;
        let status = model_job.job.poll();
        let items = model_job.job.take_items();
        for item in items {
            apply_item(state, item);
        }
        match status {
            JobStatus::Running { message, .. } => {
                if kind == ModelJobKind::Train {
                    state.model.training.status = message;
                }
                if kind == ModelJobKind::Score && labels_moved_on(state) {
                    // New labels make these scores stale: stop, rebuild, rescore.
                    if let Some(job) = &state.model.job {
                        job.job.cancel();
                    }
                }
                return;
            }
            JobStatus::Succeeded(outcome) => {
                state.model.job = None;
                apply_outcome(state, outcome);
            }
            JobStatus::Failed(message) => {
                state.model.job = None;
                if kind == ModelJobKind::Prepare {
                    state.model.prepare_failed = Some(state.labels.revision);
                }
                if kind == ModelJobKind::Train {
                    state.model.training.status = format!("failed: {message}");
                }
                state.log.push(format!("{}: {message}", kind.title()));
                state.model.error = Some(message);
            }
            JobStatus::Cancelled => {
                state.model.job = None;
                if kind == ModelJobKind::Train {
                    state.model.training.status = "cancelled; the previous detector is kept".into();
                    state.log.push("Fine-tuning was cancelled".into());
                }
            }
        }
    }
    schedule(state, ctx);
}

/// Whether labels changed since the detector was built in a way the next detector follows.
fn labels_moved_on(state: &AppState) -> bool {
    state.labels.counts().normal > 0
        && state.model.detector_revision != Some(state.labels.revision)
        && state.model.prepare_failed != Some(state.labels.revision)
}

fn apply_item(state: &mut AppState, item: ModelItem) {
    let model = &mut state.model;
    match item {
        ModelItem::Step(report) => {
            let step = (report.epoch - 1) * report.steps_per_epoch + report.step;
            model.training.total_steps = report.epochs * report.steps_per_epoch;
            model.training.eta_seconds = Some(report.eta_seconds);
            model.training.losses.push(LossPoint {
                step,
                focal: report.focal,
                dice: report.dice,
                bce: report.bce,
                total: report.total,
            });
        }
        ModelItem::Stage(stage) => model.training.status = stage,
        ModelItem::Scored(key, result) => {
            model.unscorable.remove(&key);
            model.results.insert(
                key,
                Scored {
                    result,
                    generation: model.generation,
                },
            );
        }
        ModelItem::Unscorable(key, reason) => {
            state.log.push(format!("{}: {reason}", key.path.display()));
            model.unscorable.insert(key, (model.generation, reason));
        }
    }
}

fn apply_outcome(state: &mut AppState, outcome: ModelOutcome) {
    let model = &mut state.model;
    match outcome {
        ModelOutcome::Detector(summary, revision) => {
            if revision.is_none() {
                model.organ.clone_from(&summary.organ);
                state
                    .log
                    .push(format!("Adapters ready: {}", summary.adapters));
            }
            if let Some(note) = &summary.note {
                state.log.push(note.clone());
            }
            model.detector_unsaved = revision.is_some();
            model.detector_revision = revision;
            model.detector = Some(summary);
            model.generation += 1;
            model.error = None;
        }
        ModelOutcome::Trained(FitSummary::Fitted(summary), revision) => {
            let elapsed = model
                .training
                .started
                .map_or(0.0, |t| t.elapsed().as_secs_f32());
            model.training.status = format!("finished in {elapsed:.0} s; rescoring");
            model.training.eta_seconds = None;
            if let Some(note) = &summary.note {
                state.log.push(note.clone());
            }
            model.detector = Some(summary);
            model.detector_revision = Some(revision);
            model.detector_unsaved = true;
            model.generation += 1;
            state.log.push("Fine-tuning finished".into());
        }
        ModelOutcome::Trained(FitSummary::Cancelled { steps_done }, _) => {
            model.training.status =
                format!("cancelled after {steps_done} steps; the previous detector is kept");
            model.training.eta_seconds = None;
            state.log.push("Fine-tuning was cancelled".into());
        }
        ModelOutcome::Scored => {}
        ModelOutcome::Saved(path) => {
            state
                .log
                .push(format!("Saved the detector to {}", path.display()));
            model.checkpoint = Some(path);
            model.detector_unsaved = false;
        }
        ModelOutcome::Exported(message) => state.log.push(message),
    }
}

/// Starts what is due: a memory-bank rebuild after label edits have settled, else scoring
/// of the frames without a current result, nearest to the shown image first.
fn schedule(state: &mut AppState, ctx: &egui::Context) {
    if state.model.job.is_some() {
        return;
    }
    let Some(session) = state.model.session.clone() else {
        return;
    };
    if labels_moved_on(state) && !state.labels.stroke_active() {
        let waited = state.model.seen_revision.1.elapsed();
        if waited < SETTLE {
            ctx.request_repaint_after(SETTLE - waited);
            return;
        }
        let request =
            model_jobs::fit_request(&state.model.organ, state.model.schedule, state.model.seed);
        state.model.job = Some(model_jobs::prepare(
            session,
            labelled_images(state),
            request,
            state.labels.revision,
            repaint(ctx),
        ));
        return;
    }
    if state.model.detector.is_none() {
        return;
    }
    let queue = score_queue(state, SCORE_BATCH);
    if !queue.is_empty() {
        state.model.job = Some(model_jobs::score(session, queue, repaint(ctx)));
    }
}

/// Frames without a result of the current detector: the current series by distance from the
/// shown frame, then every other group in browser order.
pub fn score_queue(state: &AppState, limit: usize) -> Vec<ImageKey> {
    let model = &state.model;
    let generation = model.generation;
    let due = |key: &ImageKey| {
        model
            .results
            .get(key)
            .is_none_or(|s| s.generation != generation)
            && model
                .unscorable
                .get(key)
                .is_none_or(|(g, _)| *g != generation)
    };
    let sequence = state.sequence();
    let at = state
        .viewer
        .current
        .as_ref()
        .and_then(|c| sequence.iter().position(|k| k == c))
        .unwrap_or(0);
    let mut near: Vec<(usize, &ImageKey)> = sequence
        .iter()
        .enumerate()
        .map(|(i, k)| (i.abs_diff(at), k))
        .collect();
    near.sort_by_key(|(d, _)| *d);
    let mut queue: Vec<ImageKey> = Vec::new();
    for (_, key) in near {
        if queue.len() >= limit {
            return queue;
        }
        if due(key) {
            queue.push(key.clone());
        }
    }
    for group in &state.browser.groups {
        for item in &group.items {
            for frame in 0..item.frames {
                if queue.len() >= limit {
                    return queue;
                }
                let key = ImageKey {
                    path: item.path.clone(),
                    frame,
                };
                if due(&key) && !queue.contains(&key) && !sequence.contains(&key) {
                    queue.push(key);
                }
            }
        }
    }
    queue
}

/// Applies a model action from the panels; false when `action` is not one.
pub fn apply(state: &mut AppState, action: &Action, ctx: &egui::Context) -> bool {
    match action {
        Action::SetOrgan(word) => {
            let word = word.trim();
            if !word.is_empty() && word != state.model.organ {
                state.model.organ = word.to_string();
                // The prompts changed: rebuild the detector (text features) at once.
                state.model.detector_revision = None;
                state.model.prepare_failed = None;
                state.model.seen_revision.1 = Instant::now() - SETTLE;
            }
        }
        Action::SetSchedule(schedule) => state.model.schedule = *schedule,
        Action::SetResultsView(view) => state.model.view = view.clone(),
        Action::ImportAdaptersFrom(path) => import(state, path.clone(), ctx),
        Action::SaveDetectorTo(path) => save(state, path.clone(), ctx),
        _ => return false,
    }
    true
}
