//! Application state: what is persisted between sessions (settings, recent files) and what
//! lives while the app runs (opened studies, loaded images, labels, view, jobs). Only the UI
//! thread touches it; only [`dispatch`](super::dispatch) changes it.
pub mod browser;
pub mod labels;
pub mod model;
pub mod pacs;
pub mod project;
pub mod viewer;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::app::jobs::{Job, JobStatus, LoadedWeights};
use crate::backend::BackendInfo;
use crate::io::image::ImageStack;
use crate::io::resample::Image8;
use crate::io::study::ScanItem;
use browser::Browser;
use labels::{ImageKey, Labels};
use model::ModelState;
use project::Project;
use viewer::{Display, Viewer};

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

/// A file read by the loader job: its pixels and content hash, or why it could not be read.
pub type LoadedFile = (PathBuf, Result<(Arc<ImageStack>, String), String>);

/// A browser preview made by the thumbnail job, or why the file could not be read.
pub type Thumbnail = (PathBuf, Result<Arc<Image8>, String>);

/// Side of the browser's previews, in pixels.
pub const THUMBNAIL_SIDE: u32 = 40;

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
    /// Downloads the public CLIP weights; `None` when no download runs.
    pub download_job: Option<Job<PathBuf>>,
    /// Where the download comes from (the hub's ViT-L/14-336; tests point it elsewhere).
    pub download_source: crate::weights::download::DownloadSource,
    /// The Hugging Face cache the download goes to (`None`: the standard one).
    pub download_cache: Option<PathBuf>,
    /// Loads the CLIP weights in the background; `None` when no load runs.
    pub weights_job: Option<Job<LoadedWeights>>,
    /// Reads opened files and folders; hands over each file as it is examined.
    pub scan_job: Option<Job<(), ScanItem>>,
    /// Decodes the pixels of the files the viewer needs, current one first.
    pub load_job: Option<Job<(), LoadedFile>>,
    /// The files the running loader was asked for.
    pub load_queue: Vec<PathBuf>,
    /// Makes the browser's previews once a scan has ended.
    pub thumbnail_job: Option<Job<(), Thumbnail>>,
    /// Browser previews that were made, by file.
    pub thumbnails: HashMap<PathBuf, Arc<Image8>>,
    /// Files a thumbnail was attempted for (failures are not retried).
    pub thumbnails_tried: HashSet<PathBuf>,
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
            weights_job: None,
            download_job: None,
            download_source: crate::weights::download::DownloadSource::vit_l14_336(),
            download_cache: None,
            scan_job: None,
            load_job: None,
            load_queue: Vec::new(),
            thumbnail_job: None,
            thumbnails: HashMap::new(),
            thumbnails_tried: HashSet::new(),
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
                eframe::storage_dir(crate::app::ui::APP_ID)
                    .unwrap_or_else(std::env::temp_dir)
                    .join("pacs"),
            ),
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
        self.model.detach();
        let backend = self.backend.clone();
        let job_path = path.clone();
        self.weights_job = Some(Job::spawn("Loading CLIP weights", repaint, move |ctx| {
            crate::app::jobs::load_weights(&job_path, &backend, ctx)
        }));
        self.weights = WeightsStatus::Loading {
            path,
            fraction: None,
            message: "starting".into(),
        };
    }

    /// Downloads the public ViT-L/14-336 weights into the Hugging Face cache (checked
    /// against the hub's SHA-256), then loads them. Offline, the failure says to choose a
    /// file instead.
    pub fn start_downloading_weights(&mut self, repaint: impl Fn() + Send + Sync + 'static) {
        if self.download_job.is_some() {
            return;
        }
        let source = self.download_source.clone();
        let cache = self.download_cache.clone();
        self.download_job = Some(Job::spawn(
            "Downloading CLIP weights",
            repaint,
            move |ctx| {
                let mut report = |p: crate::weights::download::DownloadProgress| {
                    let fraction = (p.total > 0).then(|| p.done as f32 / p.total as f32);
                    ctx.progress(
                        fraction,
                        format!(
                            "{} ({} of {}): {:.0} of {:.0} MB",
                            p.file,
                            p.index + 1,
                            p.count,
                            p.done as f64 / 1e6,
                            p.total as f64 / 1e6
                        ),
                    );
                };
                crate::weights::download::download_weights(
                    &source,
                    cache.as_deref(),
                    &mut report,
                    ctx.cancel_flag(),
                )
                .map_err(|e| e.to_string())
            },
        ));
    }

    /// Applies the weights job's events to the state; call once per frame.
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
            JobStatus::Succeeded(LoadedWeights { summary, session }) => {
                self.model.attach(session);
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

    /// The decoded stack of the current image, when loaded.
    pub fn current_stack(&self) -> Option<&Arc<ImageStack>> {
        let key = self.viewer.current.as_ref()?;
        self.images.get(&key.path)
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
        self.browser.groups[g]
            .items
            .iter()
            .flat_map(|item| {
                (0..item.frames).map(|frame| ImageKey {
                    path: item.path.clone(),
                    frame,
                })
            })
            .collect()
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

    /// Whether a background job other than the weights load is running.
    pub fn busy(&self) -> bool {
        self.scan_job.is_some() || self.load_job.is_some() || self.thumbnail_job.is_some()
    }

    /// Whether labels or masks changed since the last save.
    pub fn unsaved(&self) -> bool {
        self.labels.revision != self.project.saved_revision
    }
}
