//! The model side of the app: the fit settings, the current detector, the training run's
//! history and the scored results with how they are shown. The model session and its jobs
//! are the app's machinery ([`crate::app::jobs`]): the UI reads the summaries and results the
//! jobs hand over, never the model.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::labels::ImageKey;
use crate::io::export::overlay::Colormap;
use crate::model::mvfa::detector::ImageResult;
use crate::workflow::label_next::LabelStrategy;
use crate::workflow::{
    DetectorSummary, ExportOptions, FitRequest, MapLayer, MapScale, Schedule, SliceContext,
};

/// Organ words offered as presets: the reference's prompt subjects for its datasets (see
/// [`crate::io::dataset::MvfaKey::organ_word`]), by the name a radiologist looks for.
pub const ORGAN_PRESETS: [(&str, &str); 5] = [
    ("Brain MRI", "Brain"),
    ("Liver CT", "Liver"),
    ("Retinal OCT", "retinal OCT"),
    ("Chest X-ray", "Chest X-ray film"),
    ("Histopathology", "histopathological image"),
];

/// What a model job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelJobKind {
    /// Rebuilds the memory bank and calibration from the labels, without fine-tuning.
    Prepare,
    /// The quick first step after a label edit: the memory bank from the unaugmented view
    /// of each normal shot, the calibration kept; [`ModelJobKind::Prepare`] follows.
    PrepareQuick,
    /// Fine-tunes the adapters.
    Train,
    /// Scores images.
    Score,
    /// Imports adapters from a checkpoint or reference `.pth`.
    Import,
    /// Writes the detector to a checkpoint.
    Save,
    /// Writes result files.
    Export,
}

impl ModelJobKind {
    /// What the status bar says while it runs.
    pub fn title(self) -> &'static str {
        match self {
            ModelJobKind::Prepare => "Updating the memory bank",
            ModelJobKind::PrepareQuick => "Updating the memory bank (unaugmented views)",
            ModelJobKind::Train => "Fine-tuning",
            ModelJobKind::Score => "Scoring",
            ModelJobKind::Import => "Importing adapters",
            ModelJobKind::Save => "Saving the detector",
            ModelJobKind::Export => "Exporting",
        }
    }
}

/// One point of the loss plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossPoint {
    /// Optimiser step, counted over the run from 1.
    pub step: usize,
    /// Focal loss (summed over levels).
    pub focal: f32,
    /// Dice loss (summed over levels).
    pub dice: f32,
    /// Detection BCE (summed over levels).
    pub bce: f32,
    /// Total loss.
    pub total: f32,
}

/// The latest fine-tuning run.
#[derive(Debug, Clone, Default)]
pub struct TrainingRun {
    /// Loss terms per step.
    pub losses: Vec<LossPoint>,
    /// Steps the run will take (all runs so far and the current one).
    pub total_steps: usize,
    /// Steps of the runs before the current one (validation folds).
    pub run_offset: usize,
    /// Estimated seconds left.
    pub eta_seconds: Option<f32>,
    /// What the run is doing now (or how it ended).
    pub status: String,
    /// When it started.
    pub started: Option<Instant>,
}

/// How a table column sorts the scored images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SortColumn {
    /// By file and frame.
    Image,
    /// By calibrated score (most anomalous first by default).
    #[default]
    Score,
    /// By the raw zero-shot image score.
    ZeroShot,
    /// By the raw few-shot image score.
    FewShot,
}

/// How results are shown: map, colours, thresholds, views. Saved with the project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResultsView {
    /// The map shown.
    pub layer: MapLayer,
    /// Heatmap colours.
    pub colormap: Colormap,
    /// Heatmap opacity over the image, 0..=1.
    pub opacity: f32,
    /// Values at the two ends of the colormap, for calibrated maps (the same for every
    /// image); values below the low end are not coloured.
    pub calibrated_range: (f32, f32),
    /// The contour is drawn where the calibrated map reaches this.
    pub contour_level: f32,
    /// Contour level for uncalibrated maps (0..=1).
    pub raw_contour_level: f32,
    /// Image-score threshold for "abnormal" in the table and histogram; `None`: the
    /// calibration's.
    pub score_threshold: Option<f32>,
    /// Draw the heatmap over the image.
    pub show_heatmap: bool,
    /// Image and heatmap side by side, zoom and pan linked.
    pub side_by_side: bool,
    /// Table sort column.
    pub sort: SortColumn,
    /// Sort ascending.
    pub ascending: bool,
    /// Context across slices for scores (strip, table, series); off by default.
    pub slice_context: SliceContext,
    /// How "Label next" picks the image.
    pub label_strategy: LabelStrategy,
}

impl Default for ResultsView {
    fn default() -> Self {
        Self {
            layer: MapLayer::Fused,
            colormap: Colormap::Turbo,
            opacity: 0.5,
            calibrated_range: MapScale::Calibrated.default_range(),
            contour_level: 3.0,
            raw_contour_level: 0.5,
            score_threshold: None,
            show_heatmap: true,
            side_by_side: false,
            sort: SortColumn::Score,
            ascending: false,
            slice_context: SliceContext::Off,
            label_strategy: LabelStrategy::default(),
        }
    }
}

impl ResultsView {
    /// The colour range of maps in `scale`.
    pub fn range(&self, scale: MapScale) -> (f32, f32) {
        match scale {
            MapScale::Calibrated => self.calibrated_range,
            MapScale::Raw => MapScale::Raw.default_range(),
        }
    }

    /// The contour level of maps in `scale`.
    pub fn contour(&self, scale: MapScale) -> f32 {
        match scale {
            MapScale::Calibrated => self.contour_level,
            MapScale::Raw => self.raw_contour_level,
        }
    }
}

/// One scored frame.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Every map and score.
    pub result: Arc<ImageResult>,
    /// The detector generation it was scored with (older ones are rescored).
    pub generation: u64,
}

impl Scored {
    /// The image score the table sorts by: calibrated when there is a calibration, else the
    /// raw zero-shot score.
    pub fn score(&self) -> f32 {
        self.result.score.unwrap_or(self.result.raw.zero_image)
    }
}

/// Which images an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportScope {
    /// The image shown.
    Current,
    /// Every scored image.
    All,
}

/// The export window: what will be written, and where, shown before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportDialog {
    /// Which images.
    pub scope: ExportScope,
    /// What to write and how (with the de-identification of DICOM exports).
    pub options: ExportOptions,
    /// The output folder, once chosen.
    pub folder: Option<PathBuf>,
}

/// Everything about the model the UI shows.
pub struct ModelState {
    /// The organ word of the prompts.
    pub organ: String,
    /// The fine-tuning schedule.
    pub schedule: Schedule,
    /// The seed of fresh adapters and of fine-tuning.
    pub seed: u64,
    /// The current detector.
    pub detector: Option<DetectorSummary>,
    /// Increases with every new detector; results of older ones are rescored.
    pub generation: u64,
    /// Labels revision the detector's shots came from (`None`: imported as is).
    pub detector_revision: Option<u64>,
    /// The checkpoint the detector was imported from or last saved to.
    pub checkpoint: Option<PathBuf>,
    /// Whether the detector differs from its checkpoint (fitted or rebuilt since).
    pub detector_unsaved: bool,
    /// The latest fine-tuning run.
    pub training: TrainingRun,
    /// Scored frames.
    pub results: HashMap<ImageKey, Scored>,
    /// Frames that could not be scored, with the reason (not retried for this generation).
    pub unscorable: HashMap<ImageKey, (u64, String)>,
    /// Results whose maps were spilled to disk (their entry in `results` keeps the scores
    /// only), and the file that holds the maps.
    pub spilled: HashMap<ImageKey, std::path::PathBuf>,
    /// Bytes of result maps kept in memory at most ([`MAP_BUDGET`]); past it, the results
    /// farthest from the image shown are spilled.
    pub map_budget: usize,
    /// Results display settings.
    pub view: ResultsView,
    /// Labels revision seen last, and when it changed (the memory bank follows label edits
    /// after a short pause, not at every brush segment).
    pub seen_revision: (u64, Instant),
    /// The last problem of a model job, shown in the model panel.
    pub error: Option<String>,
    /// Labels revision whose memory-bank rebuild failed (not retried until labels change).
    pub prepare_failed: Option<u64>,
    /// Labels revision whose quick memory bank (unaugmented views only) is in use, or whose
    /// quick step found nothing to do; the full rebuild for it follows.
    pub quick_revision: Option<u64>,
    /// The export window, while open.
    pub export: Option<ExportDialog>,
    /// Background scoring was cancelled by the user (Escape): it resumes with the next
    /// detector.
    pub scoring_paused: bool,
    /// Frames scored by background jobs in this session (for tests and the status).
    pub frames_scored: usize,
    /// Position in the ranking of the last J/K jump.
    pub rank_cursor: Option<usize>,
    /// A reopened project's detector, opened once its weights are loaded.
    pub restore: Option<PendingRestore>,
    /// While the restore import runs: whether its memory bank matches the labels.
    pub restoring: Option<bool>,
}

/// A project's detector checkpoint waiting for the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRestore {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// Whether its memory bank and calibration come from the project's labels as saved.
    pub matches_labels: bool,
}

impl Default for ModelState {
    fn default() -> Self {
        Self {
            organ: "Brain".into(),
            schedule: Schedule::Quick,
            seed: 111,
            detector: None,
            generation: 0,
            detector_revision: None,
            checkpoint: None,
            detector_unsaved: false,
            training: TrainingRun::default(),
            results: HashMap::new(),
            unscorable: HashMap::new(),
            spilled: HashMap::new(),
            map_budget: MAP_BUDGET,
            view: ResultsView::default(),
            seen_revision: (0, Instant::now()),
            error: None,
            prepare_failed: None,
            quick_revision: None,
            export: None,
            scoring_paused: false,
            frames_scored: 0,
            rank_cursor: None,
            restore: None,
            restoring: None,
        }
    }
}

/// Bytes of result maps kept in memory: 512 MiB, about 200 slices of the full ViT-L at 240 px
/// (2.5 MB of maps each: four levels of both branches, the branch sums and the fused map).
/// A 600-slice series keeps about 1.5 GB of maps; past this budget the rest waits on disk.
pub const MAP_BUDGET: usize = 512 << 20;

impl ModelState {
    /// Forgets the detector of the previous weights (new weights are loading). Results stay,
    /// as stale ones (rescored by the next detector), so that a reopened project's stored
    /// results survive the loading of its weights.
    pub fn forget_detector(&mut self) {
        self.detector = None;
        self.detector_revision = None;
        self.generation += 1;
        self.unscorable.clear();
    }

    /// The settings of the app's fits: the organ word, schedule and seed chosen here, the
    /// rest as every fit has them ([`crate::workflow::FitSettings::default`]).
    pub fn fit_request(&self) -> FitRequest {
        let mut request = FitRequest::new(&self.organ);
        request.settings = request
            .settings
            .with_schedule(self.schedule)
            .with_seed(self.seed);
        request
    }

    /// The result of `key` when it is current (scored by the current detector) or stale.
    pub fn result(&self, key: &ImageKey) -> Option<&Scored> {
        self.results.get(key)
    }

    /// What the threshold in use means, in plain words, when the calibration states it:
    /// "The threshold flags <= 5% of normal images (estimated from 33 normal exemplars)."
    pub fn threshold_meaning(&self) -> Option<String> {
        let calibration = self.detector.as_ref()?.calibration.as_ref()?;
        let stated = calibration.fpr.as_ref()?;
        Some(match self.view.score_threshold {
            Some(t) if t != calibration.threshold => format!(
                "Threshold set by hand. The calibrated one ({:.2}) {}.",
                calibration.threshold,
                stated.describe()
            ),
            _ => format!("The threshold {}.", stated.describe()),
        })
    }

    /// The image-score threshold in use: the one set by hand, else the calibration's.
    pub fn score_threshold(&self) -> Option<f32> {
        self.view.score_threshold.or_else(|| {
            self.detector
                .as_ref()
                .and_then(|d| d.calibration.as_ref())
                .map(|c| c.threshold)
        })
    }
}
