//! Application state: plain data that panels read. What is persisted between sessions
//! (settings, recent files) and what lives while the app runs (opened studies, loaded images,
//! labels, view, results, and a summary of the running jobs). Only the UI thread touches it;
//! only the handlers that [`dispatch`](super::dispatch) calls change it. The jobs themselves
//! and the model session are the app object's machinery ([`super::jobs::Jobs`]).
pub mod browser;
pub mod imported;
pub mod labels;
pub mod model;
pub mod pacs;
pub mod project;
pub mod series;
pub mod viewer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::BackendInfo;
use crate::io::image::ImageStack;
use crate::io::resample::Image8;
use browser::Browser;
pub use imported::ImportedResults;
use labels::{ImageKey, Labels};
use model::ModelState;
use project::Project;
use viewer::{Display, Viewer};

/// The application id: window title and the name of the data folder (settings, autosave).
pub const APP_ID: &str = "MVFA Studio";

/// How many recent files and folders the File menu lists.
pub const RECENT_MAX: usize = 10;

/// Settings and the user's last choices, saved by eframe on exit and restored at start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PersistedState {
    /// The CLIP weights file loaded last; reloaded at start when it still exists.
    pub weights_path: Option<PathBuf>,
    /// Skip the GPU even when one is available (applies at the next start).
    pub force_cpu: bool,
    /// Files, folders and projects opened lately, newest first.
    pub recent: Vec<PathBuf>,
}

impl PersistedState {
    /// Puts `path` first in the recent list.
    pub fn remember(&mut self, path: &Path) {
        self.recent.retain(|p| p != path);
        self.recent.insert(0, path.to_path_buf());
        self.recent.truncate(RECENT_MAX);
    }
}

/// Summary of a successfully loaded weights file, for display.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsSummary {
    /// The weights file.
    pub path: PathBuf,
    /// One line per fact: layout, architecture, tensor counts, time taken.
    pub lines: Vec<String>,
}

/// Where the CLIP weights stand.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum WeightsStatus {
    /// No weights loaded.
    #[default]
    NotLoaded,
    /// The weights load job is running.
    Loading {
        /// The file being loaded.
        path: PathBuf,
        /// Share done, in 0..=1, or `None` when unknown.
        fraction: Option<f32>,
        /// The job's latest progress message.
        message: String,
    },
    /// The weights loaded successfully.
    Loaded(WeightsSummary),
    /// Loading the weights failed.
    Failed {
        /// The file that failed to load.
        path: PathBuf,
        /// Why it failed.
        message: String,
    },
}

/// Side of the browser's previews, in pixels.
pub const THUMBNAIL_SIDE: u32 = 40;

/// How far a running job is, as the panels show it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// What the job does.
    pub title: String,
    /// Share done, in 0..=1, or `None` when unknown.
    pub fraction: Option<f32>,
    /// The job's latest progress message.
    pub message: String,
}

/// The running background jobs, copied from the app's jobs each frame for the panels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Activity {
    /// Loading the CLIP weights.
    pub weights: Option<Progress>,
    /// Downloading the CLIP weights.
    pub download: Option<Progress>,
    /// Reading opened files and folders.
    pub scan: Option<Progress>,
    /// Decoding images.
    pub load: Option<Progress>,
    /// The model job and what it does.
    pub model: Option<(model::ModelJobKind, Progress)>,
    /// Writing the project's results file.
    pub results_save: Option<Progress>,
    /// The PACS job and what it does.
    pub pacs: Option<(pacs::PacsJobKind, Progress)>,
    /// Opening or saving the project.
    pub project: Option<Progress>,
    /// A file dialog is open.
    pub dialog: bool,
    /// Weights are loaded and a model session is ready.
    pub session: bool,
}

impl Activity {
    /// Whether a model job of `kind` runs.
    pub fn model_running(&self, kind: model::ModelJobKind) -> bool {
        self.model.as_ref().is_some_and(|(k, _)| *k == kind)
    }
}

/// Decoded pixels kept in memory by default (4 bytes a sample in modality units): 2 GiB, a
/// 1000-slice 512 x 512 CT series, or 32 radiographs of 4k x 4k.
pub const IMAGE_BUDGET: usize = 2 << 30;

/// Everything the UI shows. Only the UI thread touches it.
pub struct AppState {
    /// Settings and recent files, saved between sessions.
    pub persisted: PersistedState,
    /// The compute backend and device in use, probed at start.
    pub backend: BackendInfo,
    /// Where the CLIP weights stand.
    pub weights: WeightsStatus,
    /// Where the download comes from (the hub's ViT-L/14-336; tests point it elsewhere).
    pub download_source: crate::weights::download::DownloadSource,
    /// The Hugging Face cache the download goes to (`None`: the standard one).
    pub download_cache: Option<PathBuf>,
    /// The running background jobs, for display.
    pub activity: Activity,
    /// Browser previews that were made, by file.
    pub thumbnails: HashMap<PathBuf, Arc<Image8>>,
    /// The opened files, grouped into series and folders.
    pub browser: Browser,
    /// Decoded files, in modality units.
    pub images: HashMap<PathBuf, Arc<ImageStack>>,
    /// Bytes of decoded pixels kept at most: beyond, the files farthest from the current one
    /// are dropped and the loader stops (they are decoded again when shown).
    pub image_budget: usize,
    /// Files selected in the browser (labels apply to all of them when more than one).
    pub selection: Vec<PathBuf>,
    /// Current image, zoom, pan, tool and display settings.
    pub viewer: Viewer,
    /// Shot labels and lesion masks, with the undo history.
    pub labels: Labels,
    /// The project file, unsaved state and autosave.
    pub project: Project,
    /// The model session, detector, training run and results.
    pub model: ModelState,
    /// PACS nodes, search, retrieval and sending results.
    pub pacs: pacs::PacsState,
    /// Result objects (Parametric Maps, Segmentations) read back, laid over their sources.
    pub imported: imported::ImportedResults,
    /// Messages for the status bar (newest last).
    pub log: Vec<String>,
}

impl AppState {
    /// A fresh state; `autosave_path` is where unsaved work goes every minute (an existing
    /// file there is offered for recovery).
    pub fn new(persisted: PersistedState, autosave_path: Option<PathBuf>) -> Self {
        let backend = crate::backend::probe(persisted.force_cpu);
        let mut log = Vec::new();
        if let Some(reason) = &backend.fallback_reason {
            log.push(reason.clone());
        }
        Self {
            persisted,
            backend,
            weights: WeightsStatus::NotLoaded,
            download_source: crate::weights::download::DownloadSource::vit_l14_336(),
            download_cache: None,
            activity: Activity::default(),
            thumbnails: HashMap::new(),
            browser: Browser::default(),
            images: HashMap::new(),
            image_budget: IMAGE_BUDGET,
            selection: Vec::new(),
            viewer: Viewer::default(),
            labels: Labels::default(),
            project: Project::new(autosave_path),
            model: ModelState::default(),
            pacs: pacs::PacsState::load(
                crate::pacs::PacsSettings::default_path(),
                eframe::storage_dir(APP_ID)
                    .unwrap_or_else(std::env::temp_dir)
                    .join("pacs"),
            ),
            imported: imported::ImportedResults::default(),
            log,
        }
    }

    /// The decoded stack of the current image, when loaded.
    pub fn current_stack(&self) -> Option<&Arc<ImageStack>> {
        let key = self.viewer.current.as_ref()?;
        self.images.get(&key.path)
    }

    /// Width and height of the current frame, when loaded.
    pub fn current_size(&self) -> Option<(u32, u32)> {
        let key = self.viewer.current.as_ref()?;
        let frame = self.images.get(&key.path)?.frames.get(key.frame)?;
        Some((frame.width, frame.height))
    }

    /// The display key of the file at `path` (series or file).
    pub fn display_key(&self, path: &Path) -> String {
        match self.browser.item(path) {
            Some((group, item)) => group.display_key(item),
            None => format!("file:{}", path.display()),
        }
    }

    /// Window and inversion for the file at `path`: what the user set for its series or file,
    /// else the file's default.
    pub fn display_for(&self, path: &Path) -> Option<Display> {
        if let Some(d) = self.viewer.display.get(&self.display_key(path)) {
            return Some(d.clone());
        }
        let stack = self.images.get(path)?;
        Some(Display {
            window: stack.default_window()?.clone(),
            invert: false,
        })
    }

    /// The frames of the current group in scroll order: (file, frame) for every frame of
    /// every file of the series or folder the current image belongs to.
    pub fn sequence(&self) -> Vec<ImageKey> {
        let Some(key) = &self.viewer.current else {
            return Vec::new();
        };
        let Some((g, _)) = self.browser.locate(&key.path) else {
            return vec![key.clone()];
        };
        self.group_frames(g)
    }

    /// Where the current image stands in `sequence` (from [`Self::sequence`]); 0 when it is
    /// not in it.
    pub fn position_in(&self, sequence: &[ImageKey]) -> usize {
        self.viewer
            .current
            .as_ref()
            .and_then(|c| sequence.iter().position(|k| k == c))
            .unwrap_or(0)
    }

    /// The images a label command applies to: the browser selection when it holds more than
    /// one file (every frame of each), else the current image.
    pub fn label_targets(&self) -> Vec<ImageKey> {
        if self.selection.len() > 1 {
            return self
                .selection
                .iter()
                .flat_map(|path| {
                    let frames = self.browser.item(path).map_or(1, |(_, item)| item.frames);
                    (0..frames).map(|frame| ImageKey {
                        path: path.clone(),
                        frame,
                    })
                })
                .collect();
        }
        self.viewer.current.iter().cloned().collect()
    }

    /// Whether labels or masks changed since the last save.
    pub fn unsaved(&self) -> bool {
        self.labels.revision != self.project.saved_revision
    }
}
