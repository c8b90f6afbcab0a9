//! Fitting a detector on a backbone: fresh seeded adapters (or a checkpoint to start from),
//! fine-tuning on the autodiff backend, memory bank and calibration, with progress events and
//! cancellation.
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use burn::backend::Autodiff;
use burn::prelude::*;

use super::{Backbone, WorkflowError};
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::MvfaAdaptersConfig;
use crate::model::mvfa::calibration::DEFAULT_TEXT_WEIGHT;
use crate::model::mvfa::detector::{Detector, FeatureCache, TaskKind};
use crate::train::fit::{FitEvent, FitMode, FitOutcome, FitSettings, Shots, fit};
use crate::train::select::{FitStart, SelectionReport, SelectionSettings};
use crate::train::trainer::TrainConfig;
use crate::weights::adapters::{MixingRatios, load_adapter_file};
use crate::weights::detector::{DetectorFileError, load_bank_adapters, read_detector_state};

/// How long fine-tuning runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Schedule {
    /// The reference's few-shot schedule: all 11 augmentations of every shot, 50 epochs
    /// ((4 + 4) x 11 x 50 = 4400 steps for k = 4: hours on a CPU, minutes on a GPU).
    #[default]
    Paper,
    /// For CPUs: the first 3 augmentations (identity and two rotations) and 5 epochs,
    /// (4 + 4) x 3 x 5 = 120 steps for k = 4. Its cost in quality on the synthetic learning
    /// task is measured in the learning test and stated in the README.
    Quick,
}

impl Schedule {
    /// Fine-tuning epochs.
    pub fn epochs(self) -> usize {
        match self {
            Schedule::Paper => 50,
            Schedule::Quick => 5,
        }
    }

    /// Augmentations of each shot that fine-tuning trains on.
    pub fn training_augmentations(self) -> usize {
        match self {
            Schedule::Paper => 11,
            Schedule::Quick => 3,
        }
    }
}

/// Everything about a fit besides the shots.
#[derive(Debug, Clone)]
pub struct FitRequest {
    /// The organ word of the prompts.
    pub organ: String,
    /// Epochs and augmentations of the fine-tuning.
    pub schedule: Schedule,
    /// Fine-tuning epochs, overriding the schedule's (0: the adapters stay as initialised).
    pub epochs: Option<usize>,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Images per optimiser step.
    pub train_batch: usize,
    /// The one seed every random choice of the fit comes from ([`crate::rng`]).
    pub seed: u64,
    /// Adapters to start from (our checkpoint or a reference `.pth`); else fresh, seeded.
    pub init: Option<PathBuf>,
    /// Images per forward pass when building the bank and calibrating.
    pub batch_size: usize,
    /// The task of a fit without abnormal shots (with them, masks decide).
    pub normal_only_task: TaskKind,
    /// Share of normal images the decision threshold may flag (split-conformal, e.g. 0.05).
    pub fpr: f32,
    /// How fine-tuning's candidates are validated on the shots before one is installed.
    pub selection: SelectionSettings,
}

impl FitRequest {
    /// The settings every fit starts from (the app's fits, the CLI's defaults): the quick
    /// schedule for `organ`, Adam at 1e-3 with one image per step, seed 111, fresh adapters,
    /// batches of 8 for the bank and calibration, segmentation for normal-only fits, the
    /// default false-positive rate and model selection.
    pub fn new(organ: &str) -> Self {
        Self {
            organ: organ.to_string(),
            schedule: Schedule::Quick,
            epochs: None,
            learning_rate: 1e-3,
            train_batch: 1,
            seed: 111,
            init: None,
            batch_size: 8,
            normal_only_task: TaskKind::Segmentation,
            fpr: crate::model::mvfa::calibration::DEFAULT_FPR,
            selection: SelectionSettings::default(),
        }
    }
}

/// A finished fit.
pub struct FittedDetector<B: Backend> {
    /// The detector with its memory bank and calibration.
    pub detector: Detector<B, VisionTransformer<B>>,
    /// What the labels allowed.
    pub mode: FitMode,
    /// Mean total loss per epoch (empty without fine-tuning).
    pub epoch_losses: Vec<f32>,
    /// A remark for the user (e.g. masks ignored because some were missing).
    pub note: Option<String>,
    /// How the installed detector was chosen (`None` when nothing was fine-tuned).
    pub selection: Option<SelectionReport>,
}

/// How a fit ended.
pub enum FitResult<B: Backend> {
    /// Fitted and calibrated.
    Fitted(Box<FittedDetector<B>>),
    /// Cancelled during fine-tuning; nothing was fitted.
    Cancelled {
        /// Optimiser steps completed before the cancel.
        steps_done: usize,
    },
}

/// Fits a detector for `request.organ` on `backbone` from `shots`. Progress goes to
/// `on_event`; setting `cancel` stops the fine-tuning within one step.
pub fn fit_detector<B: Backend>(
    backbone: &mut Backbone<B>,
    shots: &Shots,
    request: &FitRequest,
    on_event: impl FnMut(FitEvent),
    cancel: &AtomicBool,
) -> Result<FitResult<B>, WorkflowError> {
    let device = backbone.device().clone();
    let adapters_cfg = backbone.adapters_config(MixingRatios::default(), request.seed);
    let start = match &request.init {
        Some(path) => {
            let adapters = load_adapter_file::<B>(path, &adapters_cfg, &device)?.adapters;
            let file_error = |e: DetectorFileError| WorkflowError::DetectorFile {
                path: path.clone(),
                source: e.into(),
            };
            let bank_adapters =
                load_bank_adapters::<B>(path, &adapters_cfg, &device).map_err(file_error)?;
            let text_weight = read_detector_state(path)
                .map_err(file_error)?
                .and_then(|state| state.calibration)
                .map_or(DEFAULT_TEXT_WEIGHT, |c| c.text_weight);
            FitStart {
                adapters,
                bank_adapters,
                text_weight,
            }
        }
        None => adapters_cfg.init::<B>(&device).into(),
    };
    fit_adapters(
        backbone,
        start,
        adapters_cfg,
        shots,
        request,
        on_event,
        cancel,
        None,
    )
}

/// Like [`fit_detector`], starting from a detector already in memory (the app keeps the
/// adapters of its last fit or import; `request.init` is ignored). With `request.epochs` of
/// `Some(0)` nothing is fine-tuned: the memory bank and the calibration are rebuilt from the
/// shots around the given adapters. `feature_cache` belongs to `start.adapters`; the fitted
/// detector keeps it where it keeps them ([`Detector::feature_cache`]).
#[allow(clippy::too_many_arguments)]
pub fn fit_adapters<B: Backend>(
    backbone: &mut Backbone<B>,
    start: FitStart<B>,
    adapters_cfg: MvfaAdaptersConfig,
    shots: &Shots,
    request: &FitRequest,
    on_event: impl FnMut(FitEvent),
    cancel: &AtomicBool,
    feature_cache: Option<FeatureCache<B>>,
) -> Result<FitResult<B>, WorkflowError> {
    let text = backbone.text_features(&request.organ)?;
    let settings = FitSettings {
        adapters: adapters_cfg,
        scoring: backbone.scoring_config(),
        train: TrainConfig::new()
            .with_epochs(request.epochs.unwrap_or(request.schedule.epochs()))
            .with_learning_rate(request.learning_rate)
            .with_batch_size(request.train_batch)
            .with_seed(request.seed),
        normal_only_task: request.normal_only_task,
        batch_size: request.batch_size,
        training_augmentations: request.schedule.training_augmentations(),
        fpr: request.fpr,
        selection: request.selection.clone(),
    };
    let outcome = fit::<Autodiff<B>>(
        backbone.vision().clone(),
        start,
        text,
        shots,
        &settings,
        on_event,
        cancel,
        feature_cache,
    )?;
    Ok(match outcome {
        FitOutcome::Fitted {
            detector,
            mode,
            epoch_losses,
            note,
            selection,
        } => FitResult::Fitted(Box::new(FittedDetector {
            detector: *detector,
            mode,
            epoch_losses,
            note,
            selection,
        })),
        FitOutcome::Cancelled { steps_done, .. } => FitResult::Cancelled { steps_done },
    })
}
