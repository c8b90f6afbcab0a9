//! Application state: what is persisted between sessions and what lives only while the app runs.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::app::jobs::{Job, JobStatus};
use crate::backend::BackendInfo;

/// Settings and the user's last choices, saved by eframe on exit and restored at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PersistedState {
    /// The CLIP weights file loaded last; reloaded at start when it still exists.
    pub weights_path: Option<PathBuf>,
    /// Skip the GPU even when one is available (applies at the next start).
    pub force_cpu: bool,
}

/// Summary of a successfully loaded weights file, for display.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsSummary {
    pub path: PathBuf,
    /// One line per fact: layout, architecture, tensor counts, time taken.
    pub lines: Vec<String>,
}

/// Where the CLIP weights stand.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum WeightsStatus {
    #[default]
    NotLoaded,
    Loading {
        path: PathBuf,
        fraction: Option<f32>,
        message: String,
    },
    Loaded(WeightsSummary),
    Failed {
        path: PathBuf,
        message: String,
    },
}

/// Everything the UI shows. Only the UI thread touches it.
pub struct AppState {
    pub persisted: PersistedState,
    pub backend: BackendInfo,
    pub weights: WeightsStatus,
    pub weights_job: Option<Job<WeightsSummary>>,
    /// Messages for the status bar (newest last).
    pub log: Vec<String>,
}

impl AppState {
    pub fn new(persisted: PersistedState) -> Self {
        let backend = crate::backend::probe(persisted.force_cpu);
        let mut log = Vec::new();
        if let Some(reason) = &backend.fallback_reason {
            log.push(reason.clone());
        }
        Self {
            persisted,
            backend,
            weights: WeightsStatus::NotLoaded,
            weights_job: None,
            log,
        }
    }

    /// Starts loading `path` in the background, cancelling a load already running.
    pub fn start_loading_weights(
        &mut self,
        path: PathBuf,
        repaint: impl Fn() + Send + Sync + 'static,
    ) {
        if let Some(job) = self.weights_job.take() {
            job.cancel();
        }
        let backend = self.backend.clone();
        let job_path = path.clone();
        self.weights_job = Some(Job::spawn("Loading CLIP weights", repaint, move |ctx| {
            crate::app::ui::load_weights_summary(&job_path, &backend, ctx)
        }));
        self.weights = WeightsStatus::Loading {
            path,
            fraction: None,
            message: "starting".into(),
        };
    }

    /// Applies job events to the state; call once per frame.
    pub fn poll_jobs(&mut self) {
        let Some(job) = self.weights_job.as_mut() else {
            return;
        };
        let path = match &self.weights {
            WeightsStatus::Loading { path, .. } => path.clone(),
            _ => PathBuf::new(),
        };
        match job.poll() {
            JobStatus::Running { fraction, message } => {
                self.weights = WeightsStatus::Loading {
                    path,
                    fraction,
                    message,
                };
            }
            JobStatus::Succeeded(summary) => {
                self.persisted.weights_path = Some(summary.path.clone());
                self.log.push(format!("Loaded {}", summary.path.display()));
                self.weights = WeightsStatus::Loaded(summary);
                self.weights_job = None;
            }
            JobStatus::Failed(message) => {
                self.log.push(message.clone());
                self.weights = WeightsStatus::Failed { path, message };
                self.weights_job = None;
            }
            JobStatus::Cancelled => {
                self.log.push("Loading the weights was cancelled".into());
                self.weights = WeightsStatus::NotLoaded;
                self.weights_job = None;
            }
        }
    }
}
