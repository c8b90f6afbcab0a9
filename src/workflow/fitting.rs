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
use crate::model::mvfa::detector::{Detector, FeatureCache};
use crate::train::fit::{FitEvent, FitMode, FitModel, FitOutcome, FitSettings, Shots, fit};
use crate::train::select::{FitStart, SelectionReport};
use crate::weights::adapters::{MixingRatios, load_adapter_file};
use crate::weights::detector::{DetectorFileError, load_bank_adapters, read_detector_state};

/// A fit as the app and the CLI ask for it: the organ word and the adapters to start from,
/// which this layer resolves (to text features, to loaded adapters), and the settings, which
/// go to the trainer unchanged.
#[derive(Debug, Clone)]
pub struct FitRequest {
    /// The organ word of the prompts.
    pub organ: String,
    /// Adapters to start from (our checkpoint or a reference `.pth`); else fresh, seeded.
    pub init: Option<PathBuf>,
    /// How the fit runs: schedule, optimiser, seed, calibration, model selection.
    pub settings: FitSettings,
}

impl FitRequest {
    /// A fit for `organ` with fresh adapters and the settings every fit starts from
    /// ([`FitSettings::default`]).
    pub fn new(organ: &str) -> Self {
        Self {
            organ: organ.to_string(),
            init: None,
            settings: FitSettings::default(),
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
    let adapters_cfg = backbone.adapters_config(MixingRatios::default(), request.settings.seed());
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
/// adapters of its last fit or import; `request.init` is ignored). With 0 epochs in
/// `request.settings.train` nothing is fine-tuned: the memory bank and the calibration are rebuilt from the
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
    let model = FitModel {
        adapters: adapters_cfg,
        scoring: backbone.scoring_config(),
    };
    let outcome = fit::<Autodiff<B>>(
        backbone.vision().clone(),
        start,
        text,
        shots,
        &model,
        &request.settings,
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
