//! The one place that routes user actions and job events to the handlers, once per frame, on
//! the UI thread. Each handler says whether a command or action is its own; the first that
//! takes it applies it.
use eframe::egui;

use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::handlers::{files, labels, model, pacs, project, view, weights};
use crate::app::jobs::Jobs;
use crate::app::jobs::runner::JobStatus;
use crate::app::state::AppState;

/// Applies one action.
pub fn apply(state: &mut AppState, jobs: &mut Jobs, action: Action, ctx: &egui::Context) {
    if let Action::Run(command) = action {
        run(state, jobs, command, ctx);
        return;
    }
    let applied = project::apply(state, jobs, &action, ctx)
        || files::apply(state, jobs, &action, ctx)
        || view::apply(state, &action)
        || labels::apply(state, jobs, &action, ctx)
        || weights::apply(state, jobs, &action, ctx)
        || model::apply(state, jobs, &action, ctx)
        || pacs::apply(state, jobs, &action, ctx);
    debug_assert!(applied, "no handler for {action:?}");
}

/// Runs one command.
pub fn run(state: &mut AppState, jobs: &mut Jobs, command: Command, ctx: &egui::Context) {
    let ran = files::run(state, jobs, command, ctx)
        || view::run(state, command, ctx)
        || labels::run(state, jobs, command, ctx)
        || weights::run(state, jobs, command, ctx)
        || model::run(state, jobs, command, ctx)
        || project::run(state, jobs, command, ctx);
    if !ran {
        state
            .log
            .push(format!("\"{}\" has no handler", command.label()));
    }
}

/// Applies what the background jobs reported since the last frame (a dialog's answer is
/// applied as its action), starts what is due, and publishes the jobs' progress; call once
/// per frame before drawing.
pub fn poll(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if let Some(job) = jobs.dialog.as_mut() {
        match job.poll() {
            JobStatus::Running { .. } => {}
            JobStatus::Succeeded(answer) => {
                jobs.dialog = None;
                if let Some(action) = answer {
                    apply(state, jobs, action, ctx);
                }
            }
            JobStatus::Failed(error) => {
                jobs.dialog = None;
                state.log.push(error.message());
            }
            JobStatus::Cancelled => jobs.dialog = None,
        }
    }
    weights::poll(state, jobs, ctx);
    model::poll(state, jobs, ctx);
    pacs::poll(state, jobs, ctx);
    labels::poll(state, jobs);
    files::poll(state, jobs, ctx);
    project::poll(state, jobs, ctx);
    jobs.publish(state);
}

/// What to do when the window closes: the results file and the autosave are finished on
/// the spot, so that nothing the user made is lost.
pub fn on_exit(state: &mut AppState, jobs: &mut Jobs) {
    project::finish_saves(state, jobs);
    model::finish_results_save(jobs);
    project::final_autosave(state, jobs);
}
