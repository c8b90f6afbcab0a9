//! The project: opening and saving project files, recovering the autosave of a session that
//! ended without saving, and the autosave itself. Reading, hashing, encoding and writing run
//! as jobs; the autosave keeps its own clock, so an idle window still writes it.
use std::path::{Path, PathBuf};
use std::time::Instant;

use eframe::egui;

use super::{files, model};
use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::jobs::Jobs;
use crate::app::jobs::dialogs::{Dialog, Pick};
use crate::app::jobs::project::{self as project_jobs, OpenedProject, ProjectDraft, SavedProject};
use crate::app::jobs::runner::{JobStatus, repaint};
use crate::app::state::AppState;
use crate::app::state::project::{self, ProjectFile};

/// Runs a project command; false when `command` is not one.
pub fn run(state: &mut AppState, jobs: &mut Jobs, command: Command, ctx: &egui::Context) -> bool {
    match command {
        Command::OpenProject => jobs.ask(
            Dialog::new("Open an MVFA Studio project", Pick::File, |paths| {
                Action::OpenProject(paths[0].clone())
            })
            .filter("MVFA Studio project", &["json"]),
            ctx,
        ),
        Command::SaveProject => match state.project.path.clone() {
            Some(path) => save(state, jobs, &path, ctx),
            None => ask_save_path(jobs, ctx),
        },
        Command::SaveProjectAs => ask_save_path(jobs, ctx),
        _ => return false,
    }
    true
}

fn ask_save_path(jobs: &mut Jobs, ctx: &egui::Context) {
    jobs.ask(
        Dialog::new("Save the project", Pick::SaveFile, |paths| {
            Action::SaveProjectTo(paths[0].clone())
        })
        .filter("MVFA Studio project", &["json"])
        .file_name("project.mvfa.json"),
        ctx,
    );
}

/// Applies a project action; false when `action` is not one.
pub fn apply(state: &mut AppState, jobs: &mut Jobs, action: &Action, ctx: &egui::Context) -> bool {
    match action {
        Action::Open(paths) => open_paths(state, jobs, paths.clone(), ctx),
        Action::OpenRecent(path) => {
            if is_project_file(path) {
                open(state, jobs, path.clone(), false, ctx);
            } else {
                files::open(state, jobs, vec![path.clone()], ctx);
            }
        }
        Action::SaveProjectTo(path) => save(state, jobs, path, ctx),
        Action::OpenProject(path) => open(state, jobs, path.clone(), false, ctx),
        Action::Recover => {
            if let Some(path) = state.project.recovery.take() {
                open(state, jobs, path, true, ctx);
            }
        }
        Action::DiscardRecovery => {
            if let Some(path) = state.project.recovery.take() {
                let _ = std::fs::remove_file(path);
                state
                    .log
                    .push("Discarded the unsaved work of the last session".into());
            }
        }
        _ => return false,
    }
    true
}

fn is_project_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json") && path.is_file()
}

/// Opens `paths`: a project file among them (command line, drop) opens as the project, the
/// rest go to the browser.
fn open_paths(state: &mut AppState, jobs: &mut Jobs, paths: Vec<PathBuf>, ctx: &egui::Context) {
    let (projects, paths): (Vec<PathBuf>, Vec<PathBuf>) =
        paths.into_iter().partition(|p| is_project_file(p));
    if let Some(project) = projects.first() {
        open(state, jobs, project.clone(), false, ctx);
    }
    files::open(state, jobs, paths, ctx);
}

/// The project as a draft for a write: everything the UI thread holds, taken now; hashing
/// and encoding are left to the job. `sidecars` (detector, results) are where a save writes
/// the model's files (`None` for the autosave, which refers only to saved ones).
fn draft(
    state: &AppState,
    project_path: Option<PathBuf>,
    sidecars: Option<&(PathBuf, PathBuf)>,
) -> ProjectDraft {
    let mut paths: Vec<PathBuf> = state
        .labels
        .labels()
        .map(|(k, _)| k.path.clone())
        .chain(state.labels.masks().map(|(k, _)| k.path.clone()))
        .collect();
    paths.sort();
    paths.dedup();
    let labels = state
        .labels
        .labels()
        .map(|(k, &label)| project::LabelEntry {
            path: k.path.clone(),
            frame: k.frame,
            label,
        })
        .collect();
    let v = &state.viewer;
    let file = ProjectFile {
        project_path,
        sources: state.browser.roots.clone(),
        labels,
        display: v
            .display
            .iter()
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect(),
        view: project::ViewEntry::of(v),
        measurements: v.measurements.clone(),
        set_aside: state.project.set_aside.clone(),
        model: model::project_entry(state, sidecars),
        ..Default::default()
    };
    ProjectDraft {
        file,
        paths,
        masks: state
            .labels
            .masks()
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect(),
        revision: state.labels.revision,
    }
}

/// Saves the project to `path` in the background; the sidecars follow once it is written.
fn save(state: &mut AppState, jobs: &mut Jobs, path: &Path, ctx: &egui::Context) {
    if jobs.project_save.is_some() {
        // Saved again while a write runs: this one follows it, with the state of then.
        jobs.project_save_next = Some(path.to_path_buf());
        return;
    }
    state.labels.end_stroke();
    let sidecars = project::sidecars(path);
    let draft = draft(state, Some(path.to_path_buf()), Some(&sidecars));
    jobs.project_save = Some(project_jobs::write(
        "Saving the project",
        path.to_path_buf(),
        draft,
        state.project.hashes.clone(),
        repaint(ctx),
    ));
}

/// Starts opening a project file (or, with `recovered`, an autosave: its work counts as
/// unsaved and saves go to the project it came from).
fn open(
    state: &mut AppState,
    jobs: &mut Jobs,
    path: PathBuf,
    recovered: bool,
    ctx: &egui::Context,
) {
    if let Some(job) = jobs.project_open.take() {
        job.cancel();
    }
    state.log.push(format!("Opening {}…", path.display()));
    jobs.project_open = Some(project_jobs::open(
        path,
        recovered,
        state.project.hashes.clone(),
        repaint(ctx),
    ));
}

/// Takes up an opened project: its labels, view and model, then its sources.
fn take_up(state: &mut AppState, jobs: &mut Jobs, opened: OpenedProject, ctx: &egui::Context) {
    let OpenedProject {
        path,
        recovered,
        file,
        verified,
        hashes,
    } = opened;
    state.project.hashes.extend(hashes);
    // What the old jobs still hand over belongs to the previous session: drop them.
    files::close_all(state, jobs);
    state.labels.restore(verified.labels, verified.masks);
    state.project.set_aside = verified.set_aside;
    state.project.path = if recovered {
        file.project_path.clone()
    } else {
        Some(path.clone())
    };
    state.project.saved_revision = if recovered { 0 } else { state.labels.revision };
    let v = &mut state.viewer;
    v.display = file.display.into_iter().collect();
    v.measurements = file.measurements;
    v.fit = file.view.fit;
    v.zoom = file.view.zoom;
    v.pan = file.view.pan;
    v.tool = file.view.tool;
    v.brush_radius = file.view.brush_radius;
    v.current = file.view.current.clone();
    if !recovered {
        state.persisted.remember(&path);
    }
    model::restore(state, jobs, file.model.as_ref(), ctx);
    state.log.extend(verified.problems);
    let aside = state.project.set_aside.len();
    state.log.push(if aside > 0 {
        format!(
            "Opened {}; {aside} file(s) moved or changed: their labels are set aside (Labels panel)",
            path.display()
        )
    } else {
        format!("Opened {}", path.display())
    });
    files::open(state, jobs, file.sources, ctx);
    let fit = state.viewer.fit;
    files::ensure_loading(state, jobs, ctx);
    state.viewer.fit = fit;
}

/// Applies finished project jobs, and autosaves when it is due.
pub fn poll(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if let Some(job) = jobs.project_open.as_mut() {
        match job.poll() {
            JobStatus::Running { .. } => {}
            JobStatus::Succeeded(opened) => {
                jobs.project_open = None;
                take_up(state, jobs, opened, ctx);
            }
            JobStatus::Failed(error) => {
                jobs.project_open = None;
                state.log.push(error.message());
            }
            JobStatus::Cancelled => jobs.project_open = None,
        }
    }
    if let Some(job) = jobs.project_save.as_mut() {
        match job.poll() {
            JobStatus::Running { .. } => {}
            JobStatus::Succeeded(saved) => {
                jobs.project_save = None;
                saved_to(state, jobs, saved, ctx);
            }
            JobStatus::Failed(error) => {
                jobs.project_save = None;
                state
                    .log
                    .push(format!("Could not save: {}", error.message()));
            }
            JobStatus::Cancelled => jobs.project_save = None,
        }
        if jobs.project_save.is_none()
            && let Some(next) = jobs.project_save_next.take()
        {
            save(state, jobs, &next, ctx);
        }
    }
    poll_autosave(state, jobs);
    autosave(state, jobs, ctx);
}

fn saved_to(state: &mut AppState, jobs: &mut Jobs, saved: SavedProject, ctx: &egui::Context) {
    state.project.hashes.extend(saved.hashes);
    state.project.path = Some(saved.path.clone());
    state.project.saved_revision = saved.revision;
    state.persisted.remember(&saved.path);
    state.log.push(format!("Saved {}", saved.path.display()));
    model::save_sidecars(state, jobs, &project::sidecars(&saved.path), ctx);
}

fn poll_autosave(state: &mut AppState, jobs: &mut Jobs) {
    let Some(job) = jobs.autosave.as_mut() else {
        return;
    };
    match job.poll() {
        JobStatus::Running { .. } => {}
        JobStatus::Succeeded(saved) => {
            jobs.autosave = None;
            state.project.hashes.extend(saved.hashes);
            state.project.autosaved_revision = saved.revision;
        }
        JobStatus::Failed(error) => {
            jobs.autosave = None;
            state
                .log
                .push(format!("Autosave failed: {}", error.message()));
        }
        JobStatus::Cancelled => jobs.autosave = None,
    }
}

/// Writes unsaved work to the autosave file when it is due, in the background, and removes
/// the autosave once everything is saved. While work waits for its autosave, the window is
/// asked to wake up when it falls due, so that an idle window still writes it.
fn autosave(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some(path) = state.project.autosave_path.clone() else {
        return;
    };
    if state.project.recovery.is_some() || jobs.project_open.is_some() {
        // Never overwrite work the user has not decided to recover or discard yet.
        return;
    }
    if !state.unsaved() {
        if state.project.autosaved_revision != state.labels.revision && path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        state.project.autosaved_revision = state.labels.revision;
        return;
    }
    if state.project.autosaved_revision == state.labels.revision || jobs.autosave.is_some() {
        return;
    }
    let waited = state.project.last_autosave.elapsed();
    if waited < state.project.autosave_every {
        ctx.request_repaint_after(state.project.autosave_every - waited);
        return;
    }
    state.project.last_autosave = Instant::now();
    let draft = draft(state, state.project.path.clone(), None);
    jobs.autosave = Some(project_jobs::write(
        "Autosaving",
        path,
        draft,
        state.project.hashes.clone(),
        repaint(ctx),
    ));
}

/// At exit, first: the project saves under way and queued are finished, with their
/// sidecars started (the caller then waits for the results file).
pub fn finish_saves(state: &mut AppState, jobs: &mut Jobs) {
    // No frame follows: the jobs' repaint requests go to a context nobody draws.
    let ctx = egui::Context::default();
    if let Some(job) = jobs.project_save.take() {
        match job.wait() {
            JobStatus::Succeeded(saved) => saved_to(state, jobs, saved, &ctx),
            JobStatus::Failed(error) => eprintln!("Could not save: {}", error.message()),
            JobStatus::Cancelled | JobStatus::Running { .. } => {}
        }
    }
    if let Some(path) = jobs.project_save_next.take() {
        state.labels.end_stroke();
        let sidecars = project::sidecars(&path);
        let draft = draft(state, Some(path.clone()), Some(&sidecars));
        match project_jobs::write_now(&path, draft, state.project.hashes.clone()) {
            Ok(saved) => saved_to(state, jobs, saved, &ctx),
            Err(error) => eprintln!("Could not save: {}", error.message()),
        }
    }
}

/// At exit, last: keeps unsaved work in the autosave for recovery, written before the window
/// closes (the only project write on the UI thread, when nothing is drawn any more).
pub fn final_autosave(state: &mut AppState, jobs: &mut Jobs) {
    if let Some(job) = jobs.autosave.take() {
        let _ = job.wait();
    }
    let Some(path) = state.project.autosave_path.clone() else {
        return;
    };
    if state.project.recovery.is_some() {
        return;
    }
    if !state.unsaved() {
        if path.exists() && state.project.autosaved_revision != state.labels.revision {
            let _ = std::fs::remove_file(&path);
        }
        return;
    }
    if state.project.autosaved_revision == state.labels.revision {
        return;
    }
    let draft = draft(state, state.project.path.clone(), None);
    match project_jobs::write_now(&path, draft, state.project.hashes.clone()) {
        Ok(saved) => state.project.autosaved_revision = saved.revision,
        Err(e) => eprintln!("Autosave failed: {}", e.message()),
    }
}
