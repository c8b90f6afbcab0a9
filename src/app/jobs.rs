//! The app's background work, owned by the app object (not by [`AppState`], which is plain
//! data): one spawn / poll / cancel mechanism ([`runner`]) and one file of thin job functions
//! per domain. The handlers start jobs and apply what they report; panels see only the
//! [`Activity`] summary copied into the state each frame.
pub mod dialogs;
pub mod export;
pub mod files;
pub mod model;
pub mod pacs;
pub mod project;
pub mod runner;
pub mod spill;
pub mod weights;

use std::collections::HashSet;
use std::path::PathBuf;

use crate::app::state::labels::ImageKey;
use crate::app::state::pacs::PacsJobKind;
use crate::app::state::{Activity, AppState, Progress};
use crate::io::study::ScanItem;
use crate::model::mvfa::detector::ImageResult;
use export::ResultsSnapshot;
use files::{LoadedFile, Thumbnail};
use model::{ModelJob, SharedSession};
use pacs::PacsOutcome;
use project::{OpenedProject, SavedProject};
use runner::Job;
use weights::LoadedWeights;

/// Every running job and the machinery around them.
#[derive(Default)]
pub struct Jobs {
    /// The loaded weights' session, shared with the model jobs; `None` until weights load.
    pub session: Option<SharedSession>,
    /// Loads the CLIP weights.
    pub weights: Option<Job<LoadedWeights>>,
    /// Downloads the public CLIP weights.
    pub download: Option<Job<PathBuf>>,
    /// Reads opened files and folders; hands over each file as it is examined.
    pub scan: Option<Job<(), ScanItem>>,
    /// Decodes the pixels of the files the viewer needs, current one first.
    pub load: Option<Job<(), LoadedFile>>,
    /// The files the running loader was asked for.
    pub load_queue: Vec<PathBuf>,
    /// Makes the browser's previews once a scan has ended.
    pub thumbnails: Option<Job<(), Thumbnail>>,
    /// Files a preview was attempted for (failures are not retried).
    pub thumbnails_tried: HashSet<PathBuf>,
    /// Where result maps past the memory budget wait (created when first needed).
    pub spill: Option<spill::Spill>,
    /// Reads the spilled maps of the image shown back: its key and the generation it was
    /// scored by.
    pub spill_reload: Option<(ImageKey, u64, Job<ImageResult>)>,
    /// Reads result objects (Parametric Maps, Segmentations) found by a scan.
    pub result_objects: Option<Job<(), files::ReadResultObject>>,
    /// The running model job (prepare, fine-tune, score, import, save, export).
    pub model: Option<ModelJob>,
    /// The project's results file being written.
    pub results_save: Option<Job<()>>,
    /// A newer results snapshot to write once `results_save` is done (only the latest is
    /// kept, so the file always ends up with the last one saved).
    pub results_save_next: Option<ResultsSnapshot>,
    /// The running PACS job.
    pub pacs: Option<(PacsJobKind, Job<PacsOutcome>)>,
    /// Opens a project file.
    pub project_open: Option<Job<OpenedProject>>,
    /// Writes the project file the user saves to.
    pub project_save: Option<Job<SavedProject>>,
    /// A project save asked for while `project_save` runs; it follows.
    pub project_save_next: Option<PathBuf>,
    /// Writes the autosave.
    pub autosave: Option<Job<SavedProject>>,
    /// Read imported mask images, oldest first.
    pub mask_imports: Vec<Job<project::ImportedMask>>,
    /// A file dialog waiting for the user.
    pub dialog: Option<Job<Option<crate::app::action::Action>>>,
}

fn progress<T: Send + 'static, I: Send + 'static>(job: &Job<T, I>) -> Progress {
    let (fraction, message) = job.progress();
    Progress {
        title: job.title.clone(),
        fraction,
        message: message.to_string(),
    }
}

impl Jobs {
    /// What the panels show of the running jobs.
    pub fn activity(&self) -> Activity {
        Activity {
            weights: self.weights.as_ref().map(progress),
            download: self.download.as_ref().map(progress),
            scan: self.scan.as_ref().map(progress),
            load: self.load.as_ref().map(progress),
            model: self.model.as_ref().map(|m| (m.kind, progress(&m.job))),
            results_save: self.results_save.as_ref().map(progress),
            pacs: self.pacs.as_ref().map(|(kind, job)| (*kind, progress(job))),
            project: match (&self.project_open, &self.project_save) {
                (Some(job), _) => Some(progress(job)),
                (None, Some(job)) => Some(progress(job)),
                (None, None) => None,
            },
            dialog: self.dialog.is_some(),
            session: self.session.is_some(),
        }
    }

    /// Whether a model job of `kind` runs.
    pub fn model_running(&self, kind: crate::app::state::model::ModelJobKind) -> bool {
        self.model.as_ref().is_some_and(|j| j.kind == kind)
    }

    /// Asks the scan, loader and preview jobs to stop (they report when they have).
    pub fn cancel_file_jobs(&self) {
        if let Some(job) = &self.scan {
            job.cancel();
        }
        if let Some(job) = &self.load {
            job.cancel();
        }
        if let Some(job) = &self.thumbnails {
            job.cancel();
        }
        if let Some(job) = &self.result_objects {
            job.cancel();
        }
    }

    /// Shows `dialog` on a worker thread unless another dialog is open; its answer is applied
    /// as an action when it comes.
    pub fn ask(&mut self, dialog: dialogs::Dialog, ctx: &eframe::egui::Context) {
        if self.dialog.is_none() {
            self.dialog = Some(dialogs::show(dialog, runner::repaint(ctx)));
        }
    }

    /// Copies the activity into `state` for the panels.
    pub fn publish(&self, state: &mut AppState) {
        state.activity = self.activity();
    }
}
