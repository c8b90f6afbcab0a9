//! Labels and lesion masks: marking shots, painting and filling masks, importing a mask
//! image, undo and redo.
use eframe::egui;

use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::jobs::Jobs;
use crate::app::jobs::dialogs::{Dialog, Pick};
use crate::app::jobs::project::import_mask;
use crate::app::jobs::runner::{JobStatus, repaint};
use crate::app::state::AppState;
use crate::app::state::labels::{ImageKey, Label, Labels, MaskEditError};
use crate::app::state::viewer::Tool;
use crate::workflow::label_next::{Candidate, propose};

/// Runs a label command; false when `command` is not one.
pub fn run(state: &mut AppState, jobs: &mut Jobs, command: Command, ctx: &egui::Context) -> bool {
    match command {
        Command::MarkNormal => set_label(state, Some(Label::Normal)),
        Command::MarkAbnormal => set_label(state, Some(Label::Abnormal)),
        Command::ClearLabel => set_label(state, None),
        Command::NextUnlabelled => next_unlabelled(state, jobs, ctx),
        Command::LabelNext => label_next(state, jobs, ctx),
        Command::Undo => {
            let message = state.labels.undo();
            state
                .log
                .push(message.unwrap_or_else(|| "Nothing to undo".into()));
        }
        Command::Redo => {
            let message = state.labels.redo();
            state
                .log
                .push(message.unwrap_or_else(|| "Nothing to redo".into()));
        }
        Command::ImportMask => jobs.ask(
            Dialog::new("Import a lesion mask image", Pick::File, |paths| {
                Action::ImportMaskFrom(paths[0].clone())
            }),
            ctx,
        ),
        _ => return false,
    }
    true
}

/// Applies a label or mask action; false when `action` is not one.
pub fn apply(state: &mut AppState, jobs: &mut Jobs, action: &Action, ctx: &egui::Context) -> bool {
    match action {
        Action::Paint { from, to } => {
            let (from, to) = (*from, *to);
            let erase = state.viewer.tool == Tool::Eraser;
            let radius = state.viewer.brush_radius;
            edit_mask(state, |labels, key, size| {
                labels.paint(key, size, from, to, radius, !erase)
            });
        }
        Action::EndStroke => state.labels.end_stroke(),
        Action::FillOutline(points) => {
            edit_mask(state, |labels, key, size| labels.fill(key, size, points))
        }
        Action::ImportMaskFrom(path) => start_mask_import(state, jobs, path.clone(), ctx),
        _ => return false,
    }
    true
}

/// Shows the unlabelled frame the chosen strategy proposes, and says why in the status bar.
fn label_next(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let strategy = state.model.view.label_strategy;
    let calibration = state
        .model
        .detector
        .as_ref()
        .and_then(|d| d.calibration.as_ref());
    let mut keys = Vec::new();
    let mut candidates = Vec::new();
    for g in 0..state.browser.groups.len() {
        for key in state.group_frames(g) {
            if state.labels.label(&key).is_some() {
                continue;
            }
            let result = state
                .model
                .results
                .get(&key)
                .filter(|s| s.generation == state.model.generation);
            let branches = result.and_then(|s| {
                let c = calibration?;
                let few = s.result.raw.few_image?;
                Some((
                    c.zero_image.normalise(s.result.raw.zero_image),
                    c.few_image.as_ref()?.normalise(few),
                ))
            });
            candidates.push(Candidate {
                score: result.and_then(|s| s.result.score),
                branches,
            });
            keys.push(key);
        }
    }
    let draw = (state.model.seed, state.labels.labels().count() as u64);
    match propose(&candidates, strategy, state.model.score_threshold(), draw) {
        Ok(proposal) => {
            let key = keys[proposal.index].clone();
            let name = key.path.file_name().unwrap_or_default().to_string_lossy();
            state.log.push(format!(
                "Label next ({}): {name}{}, because {}",
                strategy.label(),
                if key.frame > 0 {
                    format!(" frame {}", key.frame + 1)
                } else {
                    String::new()
                },
                proposal.reason
            ));
            super::files::show(state, jobs, key, ctx);
        }
        Err(why) => state.log.push(format!("Label next: {why}")),
    }
}

/// Shows the first unlabelled frame after the current one in its series (wrapping around).
fn next_unlabelled(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let sequence = state.sequence();
    let at = state.position_in(&sequence);
    let next = (1..=sequence.len())
        .map(|d| &sequence[(at + d) % sequence.len()])
        .find(|k| state.labels.label(k).is_none())
        .cloned();
    match next {
        Some(key) => super::files::show(state, jobs, key, ctx),
        None => state
            .log
            .push("Every image of this series is labelled".into()),
    }
}

fn set_label(state: &mut AppState, label: Option<Label>) {
    let targets = state.label_targets();
    if targets.is_empty() {
        state.log.push("Open an image first".into());
        return;
    }
    if state.labels.set(&targets, label) {
        state.log.push(format!(
            "{} image(s) {}",
            targets.len(),
            label.map_or("unlabelled", Label::name)
        ));
    }
}

/// Runs a mask edit on the current image; a refusal (image not abnormal) goes to the status
/// bar once.
fn edit_mask(
    state: &mut AppState,
    edit: impl FnOnce(&mut Labels, &ImageKey, (u32, u32)) -> Result<(), MaskEditError>,
) {
    let (Some(key), Some(size)) = (state.viewer.current.clone(), state.current_size()) else {
        return;
    };
    if let Err(error) = edit(&mut state.labels, &key, size) {
        let message = error.to_string();
        if state.log.last() != Some(&message) {
            state.log.push(message);
        }
    }
}

/// Reads the mask image at `path` for the current image in the background.
fn start_mask_import(
    state: &mut AppState,
    jobs: &mut Jobs,
    path: std::path::PathBuf,
    ctx: &egui::Context,
) {
    let (Some(key), Some(size)) = (state.viewer.current.clone(), state.current_size()) else {
        state
            .log
            .push("Open an image before importing its mask".into());
        return;
    };
    jobs.mask_imports
        .push(import_mask(path, key, size, repaint(ctx)));
}

/// Applies the imported masks that have been read, in the order they were asked for.
pub fn poll(state: &mut AppState, jobs: &mut Jobs) {
    while let Some(job) = jobs.mask_imports.first_mut() {
        let status = job.poll();
        if matches!(status, JobStatus::Running { .. }) {
            return;
        }
        jobs.mask_imports.remove(0);
        let imported = match status {
            JobStatus::Succeeded(imported) => imported,
            JobStatus::Failed(e) => {
                state.log.push(e.message());
                continue;
            }
            JobStatus::Cancelled | JobStatus::Running { .. } => continue,
        };
        let path = imported.path.display();
        match state.labels.replace_mask(&imported.key, imported.mask) {
            Ok(()) => state.log.push(match imported.note {
                Some(note) => format!("Imported {path}: {note}"),
                None => format!("Imported {path}"),
            }),
            Err(e) => state.log.push(e.to_string()),
        }
    }
}
