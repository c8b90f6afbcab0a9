//! From labelled shots to a fitted, calibrated detector: augmentation, fine-tuning (when there
//! are abnormal shots) with the choice of what to install validated on the shots themselves
//! ([`crate::train::select`]), the few-shot memory bank and the single-image calibration.
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::io::model_input::{ModelInputError, batch_tensor};
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::MvfaAdaptersConfig;
use crate::model::mvfa::detector::{
    CalibrationImages, CalibrationOptions, Detector, FeatureCache, TaskKind,
};
use crate::model::mvfa::scoring::{Scorer, ScoringConfig};
use crate::train::augment::{AUGMENT_FACTOR, Planar, augment_group, augment_group_with_masks};
use crate::train::select::{
    BankSource, FitStart, SelectionOutcome, SelectionReport, SelectionSettings, fine_tune, select,
    training_samples,
};
use crate::train::trainer::{LabelMode, TrainConfig, TrainError, TrainEvent};

/// One labelled shot at model resolution.
#[derive(Debug, Clone)]
pub struct Shot {
    /// `[3, S, S]` CHW in [0, 1].
    pub image: Vec<f32>,
    /// `[S, S]` lesion mask (1 inside), when painted or imported.
    pub mask: Option<Vec<f32>>,
}

/// The labelled images of a fit.
#[derive(Debug, Clone, Default)]
pub struct Shots {
    /// Normal shots: fine-tuning, memory bank and (without held-out images) calibration.
    pub normal: Vec<Shot>,
    /// Abnormal shots (with masks where painted): fine-tuning and the threshold.
    pub abnormal: Vec<Shot>,
    /// Normal images kept out of fine-tuning and the memory bank. When present, the
    /// calibration is estimated on them (augmented like the shots), since the adapters are
    /// over-confident on the images they were trained on.
    pub held_out: Vec<Shot>,
}

/// What the fit does with the labels it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitMode {
    /// Abnormal shots, all with masks: focal + dice + BCE.
    Masks,
    /// Abnormal shots without (complete) masks: BCE only.
    ImageLabels,
    /// Normal shots only: no fine-tuning; the given adapters and the memory bank.
    NormalOnly,
}

/// Stages of a fit, for progress displays.
#[derive(Debug, Clone, PartialEq)]
pub enum FitEvent {
    /// The fit began; the mode is decided.
    Started {
        /// What the labels allow (see [`FitMode`]).
        mode: FitMode,
        /// Augmented images fine-tuning runs on (0 for normal-only fits).
        training_images: usize,
    },
    /// A fine-tuning run begins: one per validation fold, then (unless the current detector
    /// is kept) the run on all shots.
    Run {
        /// 1-based run number.
        run: usize,
        /// Runs planned (the last one may be skipped when the current detector wins).
        runs: usize,
        /// What the run is for ("validation fold 1 of 2", "all shots").
        purpose: String,
        /// Optimiser steps of this run.
        steps: usize,
    },
    /// A fine-tuning progress event.
    Training(TrainEvent),
    /// A validation fold's candidates are being scored.
    Validating {
        /// 1-based fold.
        fold: usize,
        /// Folds in all.
        folds: usize,
    },
    /// The few-shot memory bank is being built from the augmented normal shots.
    BuildingMemoryBank {
        /// Augmented normal images going into the bank.
        images: usize,
    },
    /// The calibration is being estimated.
    Calibrating,
}

/// A finished (or cancelled) fit.
#[allow(
    clippy::large_enum_variant,
    reason = "one value per fit, moved once; boxing the report would only add a step"
)]
pub enum FitOutcome<B: Backend> {
    /// The detector is fitted, with its memory bank and calibration.
    Fitted {
        /// The fitted detector.
        detector: Box<Detector<B, VisionTransformer<B>>>,
        /// The mode the fit ran in.
        mode: FitMode,
        /// Mean total loss per epoch (empty without fine-tuning).
        epoch_losses: Vec<f32>,
        /// Set when mixed masked/unmasked abnormal shots forced image-label training.
        note: Option<String>,
        /// How the installed detector was chosen (`None` when nothing was fine-tuned).
        selection: Option<SelectionReport>,
    },
    /// Cancelled during fine-tuning: nothing was fitted.
    Cancelled {
        /// Optimiser steps completed (in the run that was cancelled) before the cancel.
        steps_done: usize,
    },
}

/// Why a fit could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// No normal shots: the memory bank and the calibration need at least one.
    #[error(
        "at least one normal shot is needed (the memory bank and the calibration come from normal shots)"
    )]
    NoNormalShots,
    /// A shot's value count is not `3 * size * size`.
    #[error("shot {index} has {got} values; expected 3x{size}x{size}")]
    ShotSize {
        /// Index of the shot, counting normal, then abnormal, then held-out shots.
        index: usize,
        /// Values it has.
        got: usize,
        /// Model input size in pixels.
        size: usize,
    },
    /// The augmentation rejected a shot or mask (the message says why).
    #[error("augmentation failed: {0}")]
    Augment(String),
    /// Fine-tuning could not start.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The shots could not be stacked into a model batch.
    #[error(transparent)]
    Input(#[from] ModelInputError),
    /// Building the memory bank or the calibration failed.
    #[error("model error: {0}")]
    Model(String),
}

fn planar(values: &[f32], channels: usize, size: usize) -> Result<Planar, FitError> {
    Planar::new(channels, size, size, values.to_vec()).map_err(|e| FitError::Augment(e.to_string()))
}

/// An augmented image `[3, S, S]` and its mask `[S, S]`.
type AugmentedPair = (Vec<f32>, Vec<f32>);

/// Augments a group of shots 11x; masks default to zero. Output order is the augmentation
/// block by block (index = block * k + shot).
pub(crate) fn augment_shots(shots: &[Shot], size: usize) -> Result<Vec<AugmentedPair>, FitError> {
    if shots.is_empty() {
        return Ok(Vec::new());
    }
    let images = shots
        .iter()
        .map(|s| planar(&s.image, 3, size))
        .collect::<Result<Vec<_>, _>>()?;
    let masks = shots
        .iter()
        .map(|s| match &s.mask {
            Some(m) => planar(m, 1, size),
            None => planar(&vec![0.0; size * size], 1, size),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (images, masks) =
        augment_group_with_masks(&images, &masks).map_err(|e| FitError::Augment(e.to_string()))?;
    Ok(images
        .into_iter()
        .zip(masks)
        .map(|(i, m)| (i.data, m.data))
        .collect())
}

/// Gives every lazily initialised parameter of `module` its value, so that clones share it.
pub fn materialize<B: Backend, M: Module<B>>(module: M) -> M {
    let record = module.clone().into_record();
    module.load_record(record)
}

/// The augmented normal shots grouped by source shot (one `[11, 3, S, S]` tensor per shot),
/// which is how the memory bank and the leave-one-out calibration see them. A single shot
/// gives a single group.
pub fn support_groups<B: Backend>(
    normal: &[&[f32]],
    size: usize,
    device: &B::Device,
) -> Result<Vec<Tensor<B, 4>>, FitError> {
    let k = normal.len();
    let images = augment_group(
        &normal
            .iter()
            .map(|image| planar(image, 3, size))
            .collect::<Result<Vec<_>, _>>()?,
    )
    .map_err(|e| FitError::Augment(e.to_string()))?;
    (0..k)
        .map(|shot| {
            let group: Vec<&[f32]> = (0..AUGMENT_FACTOR)
                .map(|block| images[block * k + shot].data.as_slice())
                .collect();
            Ok(batch_tensor(&group, [3, size, size], device)?)
        })
        .collect()
}

/// Settings of a fit besides the training hyper-parameters.
#[derive(Debug, Clone)]
pub struct FitSettings {
    /// Adapter shape (levels, width, bottleneck) and residual mixing ratios.
    pub adapters: MvfaAdaptersConfig,
    /// Scoring settings (input size, patch grid, logit scale, memory-bank chunking).
    pub scoring: ScoringConfig,
    /// Fine-tuning hyper-parameters.
    pub train: TrainConfig,
    /// Task used for normal-only fits (which have no labels to decide it).
    pub normal_only_task: TaskKind,
    /// Images per forward pass when building the bank and calibrating.
    pub batch_size: usize,
    /// How many of the 11 augmentations of each shot fine-tuning trains on (the first ones
    /// in [`crate::train::augment::few_shot_augmentations`] order; the paper uses all 11).
    /// The memory bank and the calibration always use all 11.
    pub training_augmentations: usize,
    /// Share of normal images the decision threshold may flag (split-conformal).
    pub fpr: f32,
    /// How fine-tuning's candidates are validated on the shots.
    pub selection: SelectionSettings,
}

/// Fits a detector from shots. `vision` and the starting detector live on the inference
/// backend; the fine-tuning runs on its autodiff wrapper `AB`. `text_features [bottleneck, 2]`
/// come from the prompt ensemble of the organ word. With abnormal shots and epochs to run, the
/// detector installed is the one that validates best on the shots among the starting detector
/// and fine-tuned candidates ([`crate::train::select`]). `feature_cache` belongs to
/// `start.adapters` and spares backbone passes over shots it has seen; the returned detector
/// keeps it when it keeps those adapters ([`Detector::feature_cache`]).
#[allow(clippy::too_many_arguments)] // each input is distinct; a settings struct would only rename them
pub fn fit<AB: AutodiffBackend>(
    vision: VisionTransformer<AB::InnerBackend>,
    start: impl Into<FitStart<AB::InnerBackend>>,
    text_features: Tensor<AB::InnerBackend, 2>,
    shots: &Shots,
    settings: &FitSettings,
    mut on_event: impl FnMut(FitEvent),
    cancel: &AtomicBool,
    feature_cache: Option<FeatureCache<AB::InnerBackend>>,
) -> Result<FitOutcome<AB::InnerBackend>, FitError> {
    let start: FitStart<AB::InnerBackend> = start.into();
    let size = settings.scoring.image_size;
    let (normal, abnormal) = (shots.normal.as_slice(), shots.abnormal.as_slice());
    if normal.is_empty() {
        return Err(FitError::NoNormalShots);
    }
    // A freshly initialised (random) module is lazy: each clone would draw its own values,
    // and the training copy of the backbone would differ from the scoring copy. Fix the
    // values once; for loaded weights this only re-wraps the same tensors.
    let vision = materialize(vision);
    let start = FitStart {
        adapters: materialize(start.adapters),
        bank_adapters: start.bank_adapters.map(materialize),
        text_weight: start.text_weight,
    };
    for (index, shot) in normal
        .iter()
        .chain(abnormal)
        .chain(&shots.held_out)
        .enumerate()
    {
        if shot.image.len() != 3 * size * size {
            return Err(FitError::ShotSize {
                index,
                got: shot.image.len(),
                size,
            });
        }
    }
    let masked = abnormal.iter().filter(|s| s.mask.is_some()).count();
    let (mode, note) = if abnormal.is_empty() {
        (FitMode::NormalOnly, None)
    } else if masked == abnormal.len() {
        (FitMode::Masks, None)
    } else if masked == 0 {
        (FitMode::ImageLabels, None)
    } else {
        (
            FitMode::ImageLabels,
            Some(format!(
                "{masked} of {} abnormal shots have masks; masks are only used when every abnormal shot has one, so this run trained on image labels",
                abnormal.len()
            )),
        )
    };
    let task = match mode {
        FitMode::Masks => TaskKind::Segmentation,
        FitMode::ImageLabels => TaskKind::Classification,
        FitMode::NormalOnly => settings.normal_only_task,
    };
    let device = text_features.device();
    let augmented_abnormal = augment_shots(abnormal, size)?;
    let epochs = settings.train.epochs;
    let mut epoch_losses = Vec::new();
    let mut selection = None;
    // What the fit installs: text adapters, bank adapters and fusion weight.
    let (adapters, bank_adapters, text_weight, kept_start) =
        if mode == FitMode::NormalOnly || epochs == 0 {
            on_event(FitEvent::Started {
                mode,
                training_images: 0,
            });
            (
                start.adapters.clone(),
                start.bank_adapters.clone(),
                start.text_weight,
                true,
            )
        } else {
            let augmented_normal = augment_shots(normal, size)?;
            let with_masks = mode == FitMode::Masks;
            let label_mode = if with_masks {
                LabelMode::Masks
            } else {
                LabelMode::ImageLabels
            };
            let blocks = settings.training_augmentations.clamp(1, AUGMENT_FACTOR);
            let samples = training_samples(
                &augmented_abnormal,
                abnormal.len(),
                &augmented_normal,
                normal.len(),
                blocks,
                with_masks,
            );
            on_event(FitEvent::Started {
                mode,
                training_images: samples.len(),
            });
            let outcome = select::<AB>(
                &vision,
                &start,
                &text_features,
                normal,
                abnormal,
                &shots.held_out,
                label_mode,
                task,
                settings,
                epochs,
                &mut on_event,
                cancel,
            )?;
            let (train_epochs, bank, text_weight, runs) = match outcome {
                SelectionOutcome::Cancelled { steps_done } => {
                    return Ok(FitOutcome::Cancelled { steps_done });
                }
                SelectionOutcome::Unchecked(mut report) => {
                    report.installed_epochs = epochs;
                    selection = Some(report);
                    (epochs, BankSource::FineTuned, start.text_weight, 1)
                }
                SelectionOutcome::Chosen(report, choice) => {
                    let runs = report.folds + 1;
                    selection = Some(report);
                    (choice.epochs, choice.bank, choice.text_weight, runs)
                }
            };
            if train_epochs == 0 {
                (
                    start.adapters.clone(),
                    start.bank_adapters.clone(),
                    text_weight,
                    true,
                )
            } else {
                on_event(FitEvent::Run {
                    run: runs,
                    runs,
                    purpose: "all shots".into(),
                    steps: samples.len().div_ceil(settings.train.batch_size.max(1)) * train_epochs,
                });
                let train = settings.train.clone().with_epochs(train_epochs);
                let run = match fine_tune::<AB>(
                    &vision,
                    start.adapters.clone(),
                    &text_features,
                    &samples,
                    label_mode,
                    settings,
                    train,
                    &mut on_event,
                    cancel,
                )? {
                    Ok(run) => run,
                    Err(steps_done) => return Ok(FitOutcome::Cancelled { steps_done }),
                };
                epoch_losses = run.epoch_losses;
                let bank_adapters = match bank {
                    BankSource::FineTuned => None,
                    BankSource::Current => Some(
                        start
                            .bank_adapters
                            .clone()
                            .unwrap_or_else(|| start.adapters.clone()),
                    ),
                };
                (run.adapters, bank_adapters, text_weight, false)
            }
        };

    let mut detector = Detector::new(
        vision,
        adapters,
        settings.adapters.clone(),
        Scorer::new(settings.scoring.clone(), text_features),
        task,
        settings.batch_size,
    );
    // The caller's cache belongs to the starting adapters: reuse it wherever they are kept.
    let start_cache = feature_cache.unwrap_or_default();
    if kept_start {
        detector.set_feature_cache(Some(start_cache.clone()));
        let bank_cache = FeatureCache::default();
        detector.set_bank_adapters(bank_adapters, Some(bank_cache));
    } else {
        detector.set_feature_cache(Some(FeatureCache::default()));
        let bank_cache = if start.bank_adapters.is_none() {
            start_cache
        } else {
            FeatureCache::default()
        };
        detector.set_bank_adapters(bank_adapters, Some(bank_cache));
    }
    let normal_images: Vec<&[f32]> = normal.iter().map(|s| s.image.as_slice()).collect();
    let groups = support_groups::<AB::InnerBackend>(&normal_images, size, &device)?;
    on_event(FitEvent::BuildingMemoryBank {
        images: normal.len() * AUGMENT_FACTOR,
    });
    detector
        .set_support(groups.clone())
        .map_err(|e| FitError::Model(e.to_string()))?;
    on_event(FitEvent::Calibrating);
    let stack_augmented = |pairs: &[AugmentedPair]| -> Result<_, FitError> {
        if pairs.is_empty() {
            return Ok(None);
        }
        let views: Vec<&[f32]> = pairs.iter().map(|(image, _)| image.as_slice()).collect();
        Ok(Some(batch_tensor::<AB::InnerBackend>(
            &views,
            [3, size, size],
            &device,
        )?))
    };
    let images = CalibrationImages {
        support: groups,
        held_out: stack_augmented(&augment_shots(&shots.held_out, size)?)?,
        held_out_images: shots.held_out.len(),
        abnormal: stack_augmented(&augmented_abnormal)?,
    };
    detector
        .fit_calibration(
            &images,
            CalibrationOptions {
                text_weight,
                fpr: settings.fpr,
            },
        )
        .map_err(|e| FitError::Model(e.to_string()))?;
    Ok(FitOutcome::Fitted {
        detector: Box::new(detector),
        mode,
        epoch_losses,
        note,
        selection,
    })
}
