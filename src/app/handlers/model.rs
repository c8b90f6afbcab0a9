//! Model commands and model job events: fine-tuning, import and save, results display,
//! ranking and corrections, and the scheduler that keeps the detector and the scores in step
//! with the labels (memory bank rebuilt after a label edit, the study rescored nearest image
//! first after every new detector).
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;

use super::{files, weights};
use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::jobs::Jobs;
use crate::app::jobs::dialogs::{Dialog, Pick};
use crate::app::jobs::export::{self, ExportItem, ResultSource, ResultsSnapshot};
use crate::app::jobs::model::{self as model_jobs, ModelItem, ModelOutcome};
use crate::app::jobs::runner::{JobStatus, repaint};
use crate::app::jobs::spill;
use crate::app::state::AppState;
use crate::app::state::labels::{ImageKey, Label};
use crate::app::state::model::PendingRestore;
use crate::app::state::model::{
    ExportDialog, ExportScope, LossPoint, ModelJobKind, Scored, TrainingRun,
};
use crate::app::state::project::ModelEntry as ProjectModel;
use crate::io::mask::Mask;
use crate::train::fit::FitEvent;
use crate::train::trainer::TrainEvent;
use crate::workflow::results_file::read_results;
use crate::workflow::{
    DetectorFacts, ExportOptions, FitSummary, LabelledImage, MapLayer, MaskSource, RawFormat,
    ShotLabel, layer_map,
};

/// Label edits settle this long before the memory bank is rebuilt.
const SETTLE: Duration = Duration::from_millis(400);
/// Frames one scoring job takes (then the order is worked out again from the current image).
const SCORE_BATCH: usize = 48;

/// Runs a model command; false when `command` is not one.
pub fn run(state: &mut AppState, jobs: &mut Jobs, command: Command, ctx: &egui::Context) -> bool {
    match command {
        Command::ImportAdapters => jobs.ask(
            Dialog::new(
                "Import MVFA adapters (MVFA Studio checkpoint or reference .pth)",
                Pick::File,
                |paths| Action::ImportAdaptersFrom(paths[0].clone()),
            )
            .filter("Adapters", &["safetensors", "pth", "pt"]),
            ctx,
        ),
        Command::SaveDetector => jobs.ask(
            Dialog::new("Save the detector", Pick::SaveFile, |paths| {
                Action::SaveDetectorTo(paths[0].clone())
            })
            .filter("Safetensors", &["safetensors"])
            .file_name("detector.safetensors"),
            ctx,
        ),
        Command::StartTraining => start_training(state, jobs, ctx),
        Command::CancelJob => cancel_jobs(state, jobs),
        Command::ToggleHeatmap => state.model.view.show_heatmap = !state.model.view.show_heatmap,
        Command::ToggleSideBySide => state.model.view.side_by_side = !state.model.view.side_by_side,
        Command::NextLayer => step_layer(state, 1),
        Command::PreviousLayer => step_layer(state, -1),
        Command::NextAnomalous => step_ranked(state, jobs, Step::Slice(1), ctx),
        Command::PreviousAnomalous => step_ranked(state, jobs, Step::Slice(-1), ctx),
        Command::NextSeries => step_ranked(state, jobs, Step::Series(1), ctx),
        Command::PreviousSeries => step_ranked(state, jobs, Step::Series(-1), ctx),
        Command::AcceptNormal => accept(state, Label::Normal),
        Command::AcceptAbnormal => accept(state, Label::Abnormal),
        Command::ExportImage => open_export(state, ExportScope::Current),
        Command::ExportStudy => open_export(state, ExportScope::All),
        _ => return false,
    }
    true
}

/// Imports the adapters at `path`.
pub fn import(state: &mut AppState, jobs: &mut Jobs, path: PathBuf, ctx: &egui::Context) {
    let Some(session) = jobs.session.clone() else {
        state
            .log
            .push("Load the CLIP weights before importing adapters".into());
        return;
    };
    cancel_model_job(state, jobs);
    state.model.checkpoint = Some(path.clone());
    jobs.model = Some(model_jobs::import(session, path, None, repaint(ctx)));
}

/// Writes the detector to `path`.
pub fn save(state: &mut AppState, jobs: &mut Jobs, path: PathBuf, ctx: &egui::Context) {
    let Some(session) = jobs.session.clone() else {
        state.log.push("No detector to save yet".into());
        return;
    };
    if state.model.detector.is_none() {
        state
            .log
            .push("No detector to save yet: label a normal image or import adapters first".into());
        return;
    }
    if jobs.model_running(ModelJobKind::Train) {
        state
            .log
            .push("Fine-tuning is running: save when it has ended".into());
        return;
    }
    cancel_model_job(state, jobs);
    jobs.model = Some(model_jobs::save(session, path, repaint(ctx)));
}

/// Escape: stops every background job (file jobs, weights, model, download, PACS); stopped
/// scoring waits for the next detector.
fn cancel_jobs(state: &mut AppState, jobs: &mut Jobs) {
    if let Some(job) = &jobs.weights {
        job.cancel();
    }
    if let Some(job) = &jobs.model {
        job.job.cancel();
        if job.kind == ModelJobKind::Score {
            state.model.scoring_paused = true;
            state
                .log
                .push("Scoring paused until the detector changes".into());
        }
    }
    if let Some(job) = &jobs.download {
        job.cancel();
    }
    if let Some((_, job)) = &jobs.pacs {
        job.cancel();
    }
    jobs.cancel_file_jobs();
}

fn cancel_model_job(state: &mut AppState, jobs: &mut Jobs) {
    state.model.restoring = None;
    if let Some(job) = jobs.model.take() {
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

fn start_training(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some(session) = jobs.session.clone() else {
        state
            .log
            .push("Load the CLIP weights before fine-tuning (Model tab)".into());
        return;
    };
    if jobs.model_running(ModelJobKind::Train) {
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
    cancel_model_job(state, jobs);
    let request = state.model.fit_request();
    state.model.error = None;
    state.model.training = crate::app::state::model::TrainingRun {
        status: "starting".into(),
        started: Some(Instant::now()),
        ..Default::default()
    };
    jobs.model = Some(model_jobs::train(
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

/// A step of J/K (one slice in the reading order) or Shift+J/K (one series).
#[derive(Debug, Clone, Copy)]
enum Step {
    Slice(isize),
    Series(isize),
}

/// Walks the reading order ([`AppState::reading_order`]): series by decreasing score, slices
/// of a series by decreasing score. The first J goes to the peak of the most anomalous series;
/// navigating elsewhere restarts at the top.
fn step_ranked(state: &mut AppState, jobs: &mut Jobs, step: Step, ctx: &egui::Context) {
    let (order, starts) = state.reading_order();
    if order.is_empty() {
        state.log.push("No scored images yet".into());
        return;
    }
    let at = state
        .viewer
        .current
        .as_ref()
        .and_then(|c| order.iter().position(|k| k == c))
        .filter(|&i| state.model.rank_cursor == Some(i));
    let last = order.len() as isize - 1;
    let next = match (at, step) {
        (None, _) => 0,
        (Some(i), Step::Slice(d)) => (i as isize + d).clamp(0, last) as usize,
        (Some(i), Step::Series(d)) => {
            let series = starts.iter().rposition(|&s| s <= i).unwrap_or(0) as isize;
            let to = (series + d).clamp(0, starts.len() as isize - 1) as usize;
            starts[to]
        }
    };
    state.model.rank_cursor = Some(next);
    let key = order[next].clone();
    let series = starts.iter().rposition(|&s| s <= next).unwrap_or(0);
    let in_series = next - starts[series];
    let in_series_len = starts.get(series + 1).unwrap_or(&order.len()) - starts[series];
    state.log.push(format!(
        "Series {} of {} by series score, its slice {} of {} by score: {:.2}",
        series + 1,
        starts.len(),
        in_series + 1,
        in_series_len,
        state.model.results[&key].score()
    ));
    files::show(state, jobs, key, ctx);
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
    let map = state
        .model
        .results
        .get(&key)
        .and_then(|scored| {
            layer_map(
                &scored.result,
                detector.and_then(|d| d.calibration.as_ref()),
                state.model.view.layer,
            )
        })
        // Spilled maps are not here until read back.
        .filter(|m| !m.values.is_empty());
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
                Err(e) => state.log.push(e.to_string()),
            }
        }
        _ => state
            .log
            .push("Accepted as abnormal (no result to take a mask from)".into()),
    }
}

/// Opens the export window with the display's map, colours and range.
fn open_export(state: &mut AppState, scope: ExportScope) {
    if state.model.results.is_empty() {
        state
            .log
            .push("Nothing to export yet: no image has been scored".into());
        return;
    }
    if scope == ExportScope::Current
        && state
            .viewer
            .current
            .as_ref()
            .is_none_or(|k| !state.model.results.contains_key(k))
    {
        state.log.push("The current image has no result yet".into());
        return;
    }
    let view = &state.model.view;
    let scale = match state.model.detector.as_ref() {
        Some(d) if d.calibration.is_none() => crate::workflow::MapScale::Raw,
        _ => crate::workflow::MapScale::Calibrated,
    };
    let options = ExportOptions {
        layer: view.layer,
        colormap: view.colormap,
        opacity: view.opacity,
        range: Some(view.range(scale)),
        raw: Some(RawFormat::Safetensors),
        ..ExportOptions::default()
    };
    let folder = state.model.export.as_ref().and_then(|d| d.folder.clone());
    state.model.export = Some(ExportDialog {
        scope,
        options,
        folder,
    });
}

fn start_export(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some(dialog) = state.model.export.clone() else {
        return;
    };
    let Some(folder) = dialog.folder.clone() else {
        state.log.push("Choose the export folder first".into());
        return;
    };
    let Some(detector) = state.model.detector.clone() else {
        state.log.push("No detector: nothing to export".into());
        return;
    };
    if jobs.model.is_some() {
        // Scoring resumes after the export; fine-tuning is never interrupted by one.
        if jobs.model_running(ModelJobKind::Train) {
            state
                .log
                .push("Fine-tuning is running: export when it has ended".into());
            return;
        }
        cancel_model_job(state, jobs);
    }
    let keys: Vec<ImageKey> = match dialog.scope {
        ExportScope::Current => state.viewer.current.iter().cloned().collect(),
        ExportScope::All => {
            let mut keys: Vec<ImageKey> = state.model.results.keys().cloned().collect();
            keys.sort();
            keys
        }
    };
    let items: Vec<ExportItem> = keys
        .into_iter()
        .filter_map(|key| {
            let result = ResultSource::of(&state.model, &key)?;
            let frames = state
                .browser
                .item(&key.path)
                .map_or(1, |(_, item)| item.frames);
            Some((key, result, frames))
        })
        .collect();
    let facts = DetectorFacts {
        calibration: detector.calibration.clone(),
        checkpoint: state
            .model
            .checkpoint
            .as_ref()
            .filter(|_| !state.model.detector_unsaved)
            .map_or_else(|| detector.adapters.clone(), |p| p.display().to_string()),
        organ: detector.organ.clone(),
    };
    jobs.model = Some(export::export(
        items,
        folder,
        dialog.options,
        facts,
        detector.model_size,
        repaint(ctx),
    ));
    state.model.export = None;
}

/// The model entry of the project file. With `sidecars` (a save), the detector and results
/// are to be written there by [`save_sidecars`]; without (the autosave), only files that
/// already hold them are named.
pub fn project_entry(
    state: &AppState,
    sidecars: Option<&(PathBuf, PathBuf)>,
) -> Option<ProjectModel> {
    let model = &state.model;
    let weights = match &state.weights {
        crate::app::state::WeightsStatus::Loaded(summary) => Some(summary.path.clone()),
        _ => None,
    };
    if weights.is_none() && model.detector.is_none() {
        return None;
    }
    let saved_checkpoint = model.checkpoint.clone().filter(|_| !model.detector_unsaved);
    let checkpoint = match (sidecars, &model.detector) {
        (Some((detector, _)), Some(_)) if saved_checkpoint.is_none() => Some(detector.clone()),
        (_, Some(_)) => saved_checkpoint,
        (_, None) => None,
    };
    let results = match sidecars {
        Some((_, results)) if !model.results.is_empty() => Some(results.clone()),
        _ => None,
    };
    Some(ProjectModel {
        organ: model.organ.clone(),
        schedule: model.schedule,
        seed: model.seed,
        weights,
        checkpoint,
        detector_matches_labels: model.detector_revision == Some(state.labels.revision),
        results,
        view: model.view.clone(),
    })
}

/// Writes the sidecar files a project save names: the results through a background job (a
/// long series holds hundreds of MB of maps), the detector through a save job when it is not
/// saved yet.
pub fn save_sidecars(
    state: &mut AppState,
    jobs: &mut Jobs,
    sidecars: &(PathBuf, PathBuf),
    ctx: &egui::Context,
) {
    let (detector_path, results_path) = sidecars;
    if let Some(detector) = &state.model.detector
        && !state.model.results.is_empty()
    {
        let mut rows: Vec<(ImageKey, ResultSource)> = state
            .model
            .results
            .keys()
            .filter_map(|k| Some((k.clone(), ResultSource::of(&state.model, k)?)))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let snapshot = ResultsSnapshot {
            path: results_path.clone(),
            rows,
            model_size: detector.model_size,
        };
        if jobs.results_save.is_some() {
            jobs.results_save_next = Some(snapshot);
        } else {
            jobs.results_save = Some(export::save_results(snapshot, repaint(ctx)));
        }
    }
    let unsaved = state.model.detector.is_some()
        && (state.model.detector_unsaved || state.model.checkpoint.is_none());
    if unsaved {
        if jobs.model_running(ModelJobKind::Train) {
            state.log.push(
                "Fine-tuning is running: the project keeps the last saved detector; save again when it ends".into(),
            );
        } else {
            save(state, jobs, detector_path.clone(), ctx);
        }
    }
}

/// Reports a finished results write and starts the next snapshot, if one waits.
fn poll_results_save(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some(job) = jobs.results_save.as_mut() else {
        return;
    };
    match job.poll() {
        JobStatus::Running { .. } => return,
        JobStatus::Succeeded(()) | JobStatus::Cancelled => {}
        JobStatus::Failed(error) => state.log.push(error.message()),
    }
    jobs.results_save = jobs
        .results_save_next
        .take()
        .map(|snapshot| export::save_results(snapshot, repaint(ctx)));
}

/// At exit: waits for the results write under way and writes the snapshot still waiting, so
/// that a project saved just before closing keeps its results.
pub fn finish_results_save(jobs: &mut Jobs) {
    if let Some(job) = jobs.results_save.take()
        && let JobStatus::Failed(message) = job.wait()
    {
        eprintln!("{message}");
    }
    if let Some(snapshot) = jobs.results_save_next.take()
        && let Err(message) = export::write_results_snapshot(&snapshot)
    {
        eprintln!("{message}");
    }
}

/// Takes up a reopened project's model: settings at once; stored results; its detector
/// once its weights are loaded (loading them when they are not).
pub fn restore(
    state: &mut AppState,
    jobs: &mut Jobs,
    entry: Option<&ProjectModel>,
    ctx: &egui::Context,
) {
    cancel_model_job(state, jobs);
    state.model.results.clear();
    state.model.spilled.clear();
    state.model.unscorable.clear();
    state.model.restore = None;
    let Some(entry) = entry else {
        return;
    };
    if !entry.organ.is_empty() {
        state.model.organ.clone_from(&entry.organ);
    }
    state.model.schedule = entry.schedule;
    state.model.seed = entry.seed;
    state.model.view = entry.view.clone();
    if let Some(weights) = &entry.weights {
        let loaded = match &state.weights {
            crate::app::state::WeightsStatus::Loaded(s) => Some(&s.path),
            crate::app::state::WeightsStatus::Loading { path, .. } => Some(path),
            _ => None,
        };
        if loaded != Some(weights) {
            if weights.is_file() {
                weights::start_loading(state, jobs, weights.clone(), ctx);
            } else {
                state.log.push(format!(
                    "The project's CLIP weights {} are missing: open them to use its detector",
                    weights.display()
                ));
            }
        }
    }
    if let Some(checkpoint) = &entry.checkpoint {
        if checkpoint.is_file() {
            state.model.restore = Some(PendingRestore {
                checkpoint: checkpoint.clone(),
                matches_labels: entry.detector_matches_labels,
            });
        } else {
            state.log.push(format!(
                "The project's detector {} is missing; a new one is built from the labels",
                checkpoint.display()
            ));
        }
    }
    if let Some(results) = &entry.results {
        match read_results(results) {
            Ok(stored) => {
                let generation = state.model.generation;
                for r in stored {
                    let key = ImageKey {
                        path: r.path,
                        frame: r.frame,
                    };
                    // The stored result replaces whatever was spilled for that frame.
                    state.model.spilled.remove(&key);
                    state.model.results.insert(
                        key,
                        Scored {
                            result: std::sync::Arc::new(r.result),
                            generation,
                        },
                    );
                }
            }
            Err(e) => state.log.push(e.to_string()),
        }
    }
}

/// Applies what the model job reported, then starts the next piece of work the labels and
/// results call for.
pub fn poll(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    poll_results_save(state, jobs, ctx);
    keep_maps_under_budget(state, jobs, ctx);
    if state.labels.revision != state.model.seen_revision.0 {
        state.model.seen_revision = (state.labels.revision, Instant::now());
    }
    if let Some(model_job) = jobs.model.as_mut() {
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
                if kind == ModelJobKind::Score && labels_ahead_of_bank(state) {
                    // New labels make these scores stale: stop, rebuild, rescore.
                    if let Some(job) = &jobs.model {
                        job.job.cancel();
                    }
                }
                return;
            }
            JobStatus::Succeeded(outcome) => {
                jobs.model = None;
                apply_outcome(state, outcome);
            }
            JobStatus::Failed(error) => {
                let message = error.message();
                jobs.model = None;
                state.model.restoring = None;
                if kind == ModelJobKind::Prepare {
                    state.model.prepare_failed = Some(state.labels.revision);
                }
                if kind == ModelJobKind::PrepareQuick {
                    // The full rebuild follows, and reports what is wrong.
                    state.model.quick_revision = Some(state.labels.revision);
                }
                if kind == ModelJobKind::Train {
                    state.model.training.status = format!("failed: {message}");
                }
                state.log.push(format!("{}: {message}", kind.title()));
                state.model.error = Some(message);
            }
            JobStatus::Cancelled => {
                jobs.model = None;
                if kind == ModelJobKind::Train {
                    state.model.training.status = "cancelled; the previous detector is kept".into();
                    state.log.push("Fine-tuning was cancelled".into());
                }
            }
        }
    }
    schedule(state, jobs, ctx);
}

/// Keeps the result maps in memory under [`crate::app::state::model::MAP_BUDGET`]: the
/// results farthest from the image shown (in its series' order; other series farther still)
/// go to the spill folder, scores kept; the image shown gets its spilled maps back.
fn keep_maps_under_budget(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    poll_spill_reload(state, jobs);
    let model = &state.model;
    let in_memory = |k: &ImageKey| !model.spilled.contains_key(k);
    let mut total: usize = model
        .results
        .iter()
        .filter(|(k, _)| in_memory(k))
        .map(|(_, s)| spill::map_bytes(&s.result))
        .sum();
    // The maps' side: the detector's, else that of the results' own maps (stored results of a
    // reopened project, before its weights load).
    let side = model.detector.as_ref().map(|d| d.model_size).or_else(|| {
        model
            .results
            .values()
            .map(|s| s.result.raw.zero_map.len())
            .find(|&n| n > 0)
            .map(|n| n.isqrt())
    });
    if total > model.map_budget
        && let Some(size) = side
    {
        if jobs.spill.as_ref().is_none_or(|s| s.model_size() != size) {
            match spill::Spill::new(size) {
                Ok(s) => jobs.spill = Some(s),
                Err(e) => {
                    state.model.map_budget = usize::MAX;
                    state.log.push(format!(
                        "Cannot spill result maps to the temporary folder ({e}): all stay in memory"
                    ));
                    return;
                }
            }
        }
        let spill = jobs.spill.as_mut().expect("created above");
        for key in farthest_first(state) {
            if total <= state.model.map_budget {
                break;
            }
            let Some(scored) = state.model.results.get_mut(&key) else {
                continue;
            };
            let bytes = spill::map_bytes(&scored.result);
            if bytes == 0 {
                continue;
            }
            let path = spill.put(scored.result.clone());
            scored.result = Arc::new(spill::scores_only(&scored.result));
            state.model.spilled.insert(key, path);
            total -= bytes;
        }
    }
    reload_shown(state, jobs, ctx);
}

/// The scored keys in memory, farthest from the image shown first (never the image shown).
fn farthest_first(state: &AppState) -> Vec<ImageKey> {
    let sequence = state.sequence();
    let here = state.position_in(&sequence);
    let position: HashMap<&ImageKey, usize> =
        sequence.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut keys: Vec<(usize, &ImageKey)> = state
        .model
        .results
        .keys()
        .filter(|k| !state.model.spilled.contains_key(*k))
        .filter(|k| state.viewer.current.as_ref() != Some(*k))
        .map(|k| {
            let distance = position.get(k).map_or(usize::MAX, |&i| i.abs_diff(here));
            (distance, k)
        })
        .collect();
    keys.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    keys.into_iter().map(|(_, k)| k.clone()).collect()
}

/// Starts reading the spilled maps of the image shown back, unless a read runs.
fn reload_shown(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if jobs.spill_reload.is_some() {
        return;
    }
    let Some(key) = state.viewer.current.clone() else {
        return;
    };
    let Some(path) = state.model.spilled.get(&key).cloned() else {
        return;
    };
    let Some(generation) = state.model.results.get(&key).map(|s| s.generation) else {
        return;
    };
    let job =
        crate::app::jobs::runner::Job::spawn("Reading spilled maps", repaint(ctx), move |_| {
            spill::read_spilled(&path).map_err(Into::into)
        });
    jobs.spill_reload = Some((key, generation, job));
}

/// Puts reloaded maps back, when their result is still the one spilled.
fn poll_spill_reload(state: &mut AppState, jobs: &mut Jobs) {
    let Some((key, generation, job)) = jobs.spill_reload.as_mut() else {
        return;
    };
    let status = job.poll();
    match status {
        JobStatus::Running { .. } => {}
        JobStatus::Succeeded(result) => {
            let (key, generation) = (key.clone(), *generation);
            jobs.spill_reload = None;
            let still = state
                .model
                .results
                .get(&key)
                .is_some_and(|s| s.generation == generation)
                && state.model.spilled.contains_key(&key);
            if still {
                state.model.spilled.remove(&key);
                state.model.results.insert(
                    key,
                    Scored {
                        result: Arc::new(result),
                        generation,
                    },
                );
            }
        }
        JobStatus::Failed(e) => {
            let key = key.clone();
            jobs.spill_reload = None;
            // Not retried: the scores stay; the maps come back with the next scoring.
            state.model.spilled.remove(&key);
            state
                .log
                .push(format!("{}: {}", key.path.display(), e.message()));
        }
        JobStatus::Cancelled => jobs.spill_reload = None,
    }
}

/// Whether labels changed since the detector was built in a way the next detector follows.
fn labels_moved_on(state: &AppState) -> bool {
    state.labels.counts().normal > 0
        && state.model.detector_revision != Some(state.labels.revision)
        && state.model.prepare_failed != Some(state.labels.revision)
}

/// Whether the labels are ahead of the memory bank in use, quick or full: scores of the
/// detector in use are stale then.
fn labels_ahead_of_bank(state: &AppState) -> bool {
    labels_moved_on(state) && state.model.quick_revision != Some(state.labels.revision)
}

fn apply_item(state: &mut AppState, item: ModelItem) {
    let model = &mut state.model;
    match item {
        ModelItem::Fit(event) => follow_fit(&mut model.training, event),
        ModelItem::Scored(key, result) => {
            model.frames_scored += 1;
            model.unscorable.remove(&key);
            model.spilled.remove(&key);
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

/// Follows a fit on the loss plot and in the status line.
fn follow_fit(training: &mut TrainingRun, event: FitEvent) {
    match event {
        FitEvent::Training(TrainEvent::Step(report)) => {
            let offset = training.run_offset;
            let step = offset + (report.epoch - 1) * report.steps_per_epoch + report.step;
            training.total_steps = offset + report.epochs * report.steps_per_epoch;
            training.eta_seconds = Some(report.eta_seconds);
            training.losses.push(LossPoint {
                step,
                focal: report.focal,
                dice: report.dice,
                bce: report.bce,
                total: report.total,
            });
        }
        FitEvent::Training(TrainEvent::EpochFinished { .. }) => {}
        FitEvent::Started {
            training_images, ..
        } => training.status = format!("fine-tuning on {training_images} augmented images"),
        FitEvent::Run {
            run, runs, purpose, ..
        } => {
            // The run's steps continue the loss plot's step axis.
            training.run_offset = training.losses.last().map_or(0, |p| p.step);
            training.status = format!("fine-tuning run {run} of {runs}: {purpose}");
        }
        FitEvent::Validating { fold, folds } => {
            training.status = format!("validating the candidates on fold {fold} of {folds}")
        }
        FitEvent::BuildingMemoryBank { images } => {
            training.status = format!("building the memory bank from {images} images")
        }
        FitEvent::Calibrating => training.status = "calibrating".into(),
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
            model.detector = Some(*summary);
            model.generation += 1;
            model.scoring_paused = false;
            model.error = None;
            if let Some(matches_labels) = model.restoring.take() {
                // The project's own detector: its stored results are current, and its bank
                // needs no rebuild when it came from these labels.
                if matches_labels {
                    model.detector_revision = Some(state.labels.revision);
                }
                let generation = model.generation;
                for scored in model.results.values_mut() {
                    scored.generation = generation;
                }
            }
        }
        ModelOutcome::QuickBank(summary, revision) => {
            model.quick_revision = Some(revision);
            if let Some(summary) = summary {
                state.log.push(
                    "Memory bank updated from the unaugmented view of each normal shot; the \
                     augmented views and the calibration follow in the background"
                        .into(),
                );
                model.detector = Some(*summary);
                model.detector_unsaved = true;
                model.generation += 1;
                model.scoring_paused = false;
                model.error = None;
            }
        }
        ModelOutcome::Trained(FitSummary::Fitted(summary), revision) => {
            let elapsed = model
                .training
                .started
                .map_or(0.0, |t| t.elapsed().as_secs_f32());
            model.training.status = format!("finished in {elapsed:.0} s");
            model.training.eta_seconds = None;
            if let Some(note) = &summary.note {
                state.log.push(note.clone());
            }
            if let Some(report) = &summary.selection {
                state.log.push(report.message.clone());
            }
            model.detector = Some(*summary);
            model.detector_revision = Some(revision);
            model.detector_unsaved = true;
            model.generation += 1;
            model.scoring_paused = false;
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
        ModelOutcome::Exported(message, dicom) => {
            state.log.push(message);
            if !dicom.is_empty() {
                state.pacs.last_export_dicom = dicom;
            }
        }
    }
}

/// Starts what is due: a memory-bank rebuild after label edits have settled, else scoring
/// of the frames without a current result, nearest to the shown image first.
fn schedule(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if jobs.model.is_some() {
        return;
    }
    let Some(session) = jobs.session.clone() else {
        return;
    };
    if let Some(restore) = state.model.restore.take() {
        state.model.restoring = Some(restore.matches_labels);
        state.model.checkpoint = Some(restore.checkpoint.clone());
        jobs.model = Some(model_jobs::import(
            session,
            restore.checkpoint,
            None,
            repaint(ctx),
        ));
        return;
    }
    if labels_moved_on(state) && !state.labels.stroke_active() {
        let waited = state.model.seen_revision.1.elapsed();
        if waited < SETTLE {
            ctx.request_repaint_after(SETTLE - waited);
            return;
        }
        let revision = state.labels.revision;
        // First the quick bank (one pass per new normal shot), then the shown frame's new
        // result, then the augmented views and the calibration.
        if state.model.detector.is_some() && state.model.quick_revision != Some(revision) {
            jobs.model = Some(model_jobs::prepare_quick(
                session,
                labelled_images(state),
                revision,
                repaint(ctx),
            ));
            return;
        }
        let after_quick = state.model.quick_revision == Some(revision);
        if after_quick
            && !state.model.scoring_paused
            && let Some(shown) = score_queue(state, 1)
                .into_iter()
                .next()
                .filter(|k| state.viewer.current.as_ref() == Some(k))
        {
            jobs.model = Some(model_jobs::score(session, vec![shown], repaint(ctx)));
            return;
        }
        let request = state.model.fit_request();
        jobs.model = Some(model_jobs::prepare(
            session,
            labelled_images(state),
            request,
            revision,
            after_quick,
            repaint(ctx),
        ));
        return;
    }
    if state.model.detector.is_none() || state.model.scoring_paused {
        return;
    }
    let queue = score_queue(state, SCORE_BATCH);
    if !queue.is_empty() {
        jobs.model = Some(model_jobs::score(session, queue, repaint(ctx)));
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
    let at = state.position_in(&sequence);
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
pub fn apply(state: &mut AppState, jobs: &mut Jobs, action: &Action, ctx: &egui::Context) -> bool {
    match action {
        Action::SetOrgan(word) => {
            let word = word.trim();
            if !word.is_empty() && word != state.model.organ {
                state.model.organ = word.to_string();
                // The prompts changed: rebuild the detector (text features) at once; an
                // imported detector without normal labels is imported again with the word.
                state.model.detector_revision = None;
                state.model.prepare_failed = None;
                state.model.seen_revision.1 = Instant::now() - SETTLE;
                if state.labels.counts().normal == 0
                    && let (Some(session), Some(checkpoint)) =
                        (jobs.session.clone(), state.model.checkpoint.clone())
                    && !jobs.model_running(ModelJobKind::Train)
                {
                    cancel_model_job(state, jobs);
                    jobs.model = Some(model_jobs::import(
                        session,
                        checkpoint,
                        Some(word.to_string()),
                        repaint(ctx),
                    ));
                }
            }
        }
        Action::SetSchedule(schedule) => state.model.schedule = *schedule,
        Action::SetResultsView(view) => state.model.view = view.clone(),
        Action::ImportAdaptersFrom(path) => import(state, jobs, path.clone(), ctx),
        Action::SaveDetectorTo(path) => save(state, jobs, path.clone(), ctx),
        Action::SetExportDialog(dialog) => state.model.export = dialog.clone(),
        Action::ChooseExportFolder => jobs.ask(
            Dialog::new("Export results to this folder", Pick::Folder, |paths| {
                Action::SetExportFolder(paths[0].clone())
            }),
            ctx,
        ),
        Action::SetExportFolder(folder) => {
            if let Some(dialog) = &mut state.model.export {
                dialog.folder = Some(folder.clone());
            }
        }
        Action::StartExport => start_export(state, jobs, ctx),
        _ => return false,
    }
    true
}
