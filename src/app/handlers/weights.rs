//! The CLIP weights: open a file or download the public weights, load them into a model
//! session in the background, and hand the session to the model side.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use eframe::egui;

use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::jobs::Jobs;
use crate::app::jobs::dialogs::{Dialog, Pick};
use crate::app::jobs::runner::{JobStatus, repaint};
use crate::app::jobs::weights::{self, LoadedWeights};
use crate::app::state::{AppState, WeightsStatus};

/// Runs a weights command; false when `command` is not one.
pub fn run(state: &mut AppState, jobs: &mut Jobs, command: Command, ctx: &egui::Context) -> bool {
    match command {
        Command::OpenWeights => jobs.ask(
            Dialog::new(
                "Choose CLIP ViT-L/14-336 weights (safetensors)",
                Pick::File,
                |paths| Action::LoadWeightsFrom(paths[0].clone()),
            )
            .filter("safetensors", &["safetensors"]),
            ctx,
        ),
        Command::DownloadWeights => start_download(state, jobs, ctx),
        _ => return false,
    }
    true
}

/// Applies a weights action; false when `action` is not one.
pub fn apply(state: &mut AppState, jobs: &mut Jobs, action: &Action, ctx: &egui::Context) -> bool {
    match action {
        Action::LoadWeightsFrom(path) => start_loading(state, jobs, path.clone(), ctx),
        _ => return false,
    }
    true
}

/// Starts loading `path` in the background, cancelling a load already running; the model
/// session of the previous weights (and its job) is dropped.
pub fn start_loading(state: &mut AppState, jobs: &mut Jobs, path: PathBuf, ctx: &egui::Context) {
    if let Some(job) = jobs.weights.take() {
        job.cancel();
    }
    detach(state, jobs);
    jobs.weights = Some(weights::load(
        path.clone(),
        state.backend.clone(),
        repaint(ctx),
    ));
    state.weights = WeightsStatus::Loading {
        path,
        fraction: None,
        message: "starting".into(),
    };
}

/// Drops the model session, cancelling its job; the detector built on it goes too.
fn detach(state: &mut AppState, jobs: &mut Jobs) {
    if let Some(job) = jobs.model.take() {
        job.job.cancel();
    }
    jobs.session = None;
    state.model.forget_detector();
}

/// Downloads the public ViT-L/14-336 weights into the Hugging Face cache (checked against
/// the hub's SHA-256), then loads them. Offline, the failure says to choose a file instead.
fn start_download(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if jobs.download.is_some() {
        return;
    }
    jobs.download = Some(weights::download(
        state.download_source.clone(),
        state.download_cache.clone(),
        repaint(ctx),
    ));
}

/// Applies the weights and download jobs' events.
pub fn poll(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    poll_download(state, jobs, ctx);
    let Some(job) = jobs.weights.as_mut() else {
        return;
    };
    let path = match &state.weights {
        WeightsStatus::Loading { path, .. } => path.clone(),
        _ => PathBuf::new(),
    };
    match job.poll() {
        JobStatus::Running { fraction, message } => {
            state.weights = WeightsStatus::Loading {
                path,
                fraction,
                message,
            };
        }
        JobStatus::Succeeded(LoadedWeights { summary, session }) => {
            jobs.weights = None;
            detach(state, jobs);
            jobs.session = Some(Arc::new(Mutex::new(session)));
            state.persisted.weights_path = Some(summary.path.clone());
            state.log.push(format!("Loaded {}", summary.path.display()));
            state.weights = WeightsStatus::Loaded(summary);
        }
        JobStatus::Failed(error) => {
            jobs.weights = None;
            let message = error.message();
            state.log.push(message.clone());
            state.weights = WeightsStatus::Failed { path, message };
        }
        JobStatus::Cancelled => {
            jobs.weights = None;
            state.log.push("Loading the weights was cancelled".into());
            state.weights = WeightsStatus::NotLoaded;
        }
    }
}

/// A finished download loads its weights; a failed one (offline) says to choose a file.
fn poll_download(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some(job) = jobs.download.as_mut() else {
        return;
    };
    match job.poll() {
        JobStatus::Running { .. } => {}
        JobStatus::Succeeded(path) => {
            jobs.download = None;
            state.log.push(format!("Downloaded {}", path.display()));
            start_loading(state, jobs, path, ctx);
        }
        JobStatus::Failed(error) => {
            jobs.download = None;
            let message = error.message();
            state.log.push(message.clone());
            state.weights = WeightsStatus::Failed {
                path: PathBuf::from("the Hugging Face hub"),
                message,
            };
        }
        JobStatus::Cancelled => {
            jobs.download = None;
            state.log.push("The download was cancelled".into());
        }
    }
}
