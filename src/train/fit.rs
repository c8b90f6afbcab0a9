//! From labelled shots to a fitted, calibrated detector: augmentation, fine-tuning (when there
//! are abnormal shots) with the choice of what to install validated on the shots themselves
//! ([`crate::train::select`]), the few-shot memory bank and the single-image calibration.
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::eval::auc::AucError;
use crate::io::model_input::{ModelInputError, batch_tensor};
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::MvfaError;
use crate::model::mvfa::adapter::{MvfaAdapters, MvfaAdaptersConfig};
use crate::model::mvfa::detector::{
    CalibrationImages, CalibrationOptions, Detector, FeatureCache, TaskKind,
};
use crate::model::mvfa::scoring::{Scorer, ScoringConfig};
use crate::train::augment::{
    AUGMENT_FACTOR, AugmentError, Planar, augment_group, augment_group_with_masks,
};
use crate::train::select::{
    BankSource, FitStart, SelectionOutcome, SelectionReport, SelectionSettings, fine_tune, select,
    training_samples,
};
use crate::train::trainer::{LabelMode, TrainConfig, TrainError, TrainEvent, TrainSample};

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

impl FitMode {
    /// The task a detector fitted in this mode does (`normal_only` for normal-only fits).
    pub fn task(self, normal_only: TaskKind) -> TaskKind {
        match self {
            FitMode::Masks => TaskKind::Segmentation,
            FitMode::ImageLabels => TaskKind::Classification,
            FitMode::NormalOnly => normal_only,
        }
    }
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
    Augment(#[from] AugmentError),
    /// Fine-tuning could not start.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The shots could not be stacked into a model batch.
    #[error(transparent)]
    Input(#[from] ModelInputError),
    /// Building the memory bank or the calibration, or scoring a validation image, failed.
    #[error("model error: {0}")]
    Model(#[from] MvfaError),
    /// A validation AUC could not be computed (e.g. a fold without both classes).
    #[error("model error: {0}")]
    Validation(#[from] AucError),
}

fn planar(values: &[f32], channels: usize, size: usize) -> Result<Planar, FitError> {
    Ok(Planar::new(channels, size, size, values.to_vec())?)
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
    let (images, masks) = augment_group_with_masks(&images, &masks)?;
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
    )?;
    (0..k)
        .map(|shot| {
            let group: Vec<&[f32]> = (0..AUGMENT_FACTOR)
                .map(|block| images[block * k + shot].data.as_slice())
                .collect();
            Ok(batch_tensor(&group, [3, size, size], device)?)
        })
        .collect()
}

/// The first view of each [`support_groups`] group alone (augmentation 0, the identity):
/// one `[1, 3, S, S]` tensor per shot. A memory bank from these holds exactly the rows of the
/// full bank's unaugmented views, at one backbone pass per shot.
pub fn unaugmented_groups<B: Backend>(
    normal: &[&[f32]],
    size: usize,
    device: &B::Device,
) -> Result<Vec<Tensor<B, 4>>, FitError> {
    normal
        .iter()
        .map(|image| {
            let view = planar(image, 3, size)?;
            Ok(batch_tensor(
                &[view.data.as_slice()],
                [3, size, size],
                device,
            )?)
        })
        .collect()
}

/// How long fine-tuning runs: a preset of [`FitSettings`]' epochs and training augmentations.
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

/// The shapes a fit takes from the backbone it runs on: adapter sizes and mixing, and the
/// scoring geometry. They are not the user's choice, so they are not part of [`FitSettings`].
#[derive(Debug, Clone)]
pub struct FitModel {
    /// Adapter shape (levels, width, bottleneck) and residual mixing ratios.
    pub adapters: MvfaAdaptersConfig,
    /// Scoring settings (input size, patch grid, logit scale, memory-bank chunking).
    pub scoring: ScoringConfig,
}

/// How a fit runs: the one settings type that goes from the app's Model tab and the CLI's
/// flags to the trainer, which takes [`FitSettings::train`] as it is.
#[derive(Debug, Clone)]
pub struct FitSettings {
    /// Fine-tuning hyper-parameters: epochs, learning rate, images per step, and the seed
    /// every random choice of the fit comes from ([`crate::rng`]).
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

impl Default for FitSettings {
    /// The settings every fit starts from (the app's fits, the CLI's defaults): the quick
    /// schedule, Adam at 1e-3 with one image per step, seed 111, batches of 8 for the bank and
    /// calibration, segmentation for normal-only fits, the default false-positive rate and
    /// model selection.
    fn default() -> Self {
        let schedule = Schedule::Quick;
        Self {
            train: TrainConfig::new().with_epochs(schedule.epochs()),
            normal_only_task: TaskKind::Segmentation,
            batch_size: 8,
            training_augmentations: schedule.training_augmentations(),
            fpr: crate::model::mvfa::calibration::DEFAULT_FPR,
            selection: SelectionSettings::default(),
        }
    }
}

impl FitSettings {
    /// These settings with `schedule`'s epochs and training augmentations.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.train.epochs = schedule.epochs();
        self.training_augmentations = schedule.training_augmentations();
        self
    }

    /// These settings with the seed every random choice of the fit comes from.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.train.seed = seed;
        self
    }

    /// The seed every random choice of the fit comes from.
    pub fn seed(&self) -> u64 {
        self.train.seed
    }
}

/// What a fit installs: the text adapters, the bank adapters (`None`: the text adapters) and
/// the fusion weight, with what fine-tuning reported.
struct Tuned<B: Backend> {
    adapters: MvfaAdapters<B>,
    bank_adapters: Option<MvfaAdapters<B>>,
    text_weight: f32,
    /// Whether these are the starting adapters (whose feature cache stays valid).
    kept_start: bool,
    epoch_losses: Vec<f32>,
    selection: Option<SelectionReport>,
}

impl<B: Backend> Tuned<B> {
    /// The starting adapters, kept, with `text_weight`.
    fn kept(start: &FitStart<B>, text_weight: f32, selection: Option<SelectionReport>) -> Self {
        Tuned {
            adapters: start.adapters.clone(),
            bank_adapters: start.bank_adapters.clone(),
            text_weight,
            kept_start: true,
            epoch_losses: Vec::new(),
            selection,
        }
    }
}

/// What every step of one fit reads besides the backbone and the text features.
struct FitInputs<'a, B: Backend> {
    start: &'a FitStart<B>,
    shots: &'a Shots,
    model: &'a FitModel,
    settings: &'a FitSettings,
    /// Model input side.
    size: usize,
    mode: FitMode,
    task: TaskKind,
    /// A remark for the user about the labels ([`fit_mode`]).
    note: Option<String>,
    /// The abnormal shots' 11 augmentations (fine-tuning and calibration).
    augmented_abnormal: Vec<AugmentedPair>,
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
    model: &FitModel,
    settings: &FitSettings,
    mut on_event: impl FnMut(FitEvent),
    cancel: &AtomicBool,
    feature_cache: Option<FeatureCache<AB::InnerBackend>>,
) -> Result<FitOutcome<AB::InnerBackend>, FitError> {
    let size = model.scoring.image_size;
    check_shots(shots, size)?;
    // A freshly initialised (random) module is lazy: each clone would draw its own values,
    // and the training copy of the backbone would differ from the scoring copy. Fix the
    // values once; for loaded weights this only re-wraps the same tensors.
    let vision = materialize(vision);
    let start: FitStart<AB::InnerBackend> = start.into();
    let start = FitStart {
        adapters: materialize(start.adapters),
        bank_adapters: start.bank_adapters.map(materialize),
        text_weight: start.text_weight,
    };
    let (mode, note) = fit_mode(&shots.abnormal);
    let inputs = FitInputs {
        start: &start,
        shots,
        model,
        settings,
        size,
        mode,
        task: mode.task(settings.normal_only_task),
        note,
        augmented_abnormal: augment_shots(&shots.abnormal, size)?,
    };
    let tuned = tune::<AB>(&vision, &text_features, &inputs, &mut on_event, cancel)?;
    let tuned = match tuned {
        Ok(tuned) => tuned,
        Err(steps_done) => return Ok(FitOutcome::Cancelled { steps_done }),
    };
    finish(
        vision,
        text_features,
        tuned,
        inputs,
        feature_cache,
        &mut on_event,
    )
}

/// A fit needs normal shots, and every shot (normal, abnormal, held out) must be
/// `[3, size, size]`.
fn check_shots(shots: &Shots, size: usize) -> Result<(), FitError> {
    if shots.normal.is_empty() {
        return Err(FitError::NoNormalShots);
    }
    let all = shots
        .normal
        .iter()
        .chain(&shots.abnormal)
        .chain(&shots.held_out);
    for (index, shot) in all.enumerate() {
        if shot.image.len() != 3 * size * size {
            return Err(FitError::ShotSize {
                index,
                got: shot.image.len(),
                size,
            });
        }
    }
    Ok(())
}

/// What the labels allow, and a remark for the user when some masks are missing.
fn fit_mode(abnormal: &[Shot]) -> (FitMode, Option<String>) {
    let masked = abnormal.iter().filter(|s| s.mask.is_some()).count();
    if abnormal.is_empty() {
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
    }
}

/// Fine-tunes from the starting adapters on the shots and picks what to install: the
/// candidate that validates best ([`select`]), retrained on all shots unless the start wins.
/// Without abnormal shots or epochs the start is kept. `Err` holds the optimiser steps done
/// when cancelled.
fn tune<AB: AutodiffBackend>(
    vision: &VisionTransformer<AB::InnerBackend>,
    text_features: &Tensor<AB::InnerBackend, 2>,
    inputs: &FitInputs<AB::InnerBackend>,
    on_event: &mut dyn FnMut(FitEvent),
    cancel: &AtomicBool,
) -> Result<Result<Tuned<AB::InnerBackend>, usize>, FitError> {
    let (start, shots, model) = (inputs.start, inputs.shots, inputs.model);
    let (settings, mode) = (inputs.settings, inputs.mode);
    let epochs = settings.train.epochs;
    if mode == FitMode::NormalOnly || epochs == 0 {
        on_event(FitEvent::Started {
            mode,
            training_images: 0,
        });
        return Ok(Ok(Tuned::kept(start, start.text_weight, None)));
    }
    let (label_mode, samples) = training_set(inputs)?;
    on_event(FitEvent::Started {
        mode,
        training_images: samples.len(),
    });
    let shot_sets = [&shots.normal[..], &shots.abnormal[..], &shots.held_out[..]];
    let outcome = select::<AB>(
        vision,
        start,
        text_features,
        shot_sets,
        label_mode,
        inputs.task,
        model,
        settings,
        on_event,
        cancel,
    )?;
    let (train_epochs, bank, text_weight, runs, selection) = match outcome {
        SelectionOutcome::Cancelled { steps_done } => return Ok(Err(steps_done)),
        SelectionOutcome::Unchecked(mut report) => {
            report.installed_epochs = epochs;
            (epochs, BankSource::FineTuned, start.text_weight, 1, report)
        }
        SelectionOutcome::Chosen(report, choice) => {
            let runs = report.folds + 1;
            (choice.epochs, choice.bank, choice.text_weight, runs, report)
        }
    };
    if train_epochs == 0 {
        return Ok(Ok(Tuned::kept(start, text_weight, Some(selection))));
    }
    on_event(FitEvent::Run {
        run: runs,
        runs,
        purpose: "all shots".into(),
        steps: samples.len().div_ceil(settings.train.batch_size.max(1)) * train_epochs,
    });
    let train = settings.train.clone().with_epochs(train_epochs);
    let adapters = start.adapters.clone();
    let run = fine_tune::<AB>(
        vision,
        adapters,
        text_features,
        &samples,
        label_mode,
        model,
        train,
        on_event,
        cancel,
    )?;
    Ok(run.map(|run| Tuned {
        adapters: run.adapters,
        bank_adapters: start.bank_adapters_of(bank),
        text_weight,
        kept_start: false,
        epoch_losses: run.epoch_losses,
        selection: Some(selection),
    }))
}

/// What fine-tuning trains on: the loss's labels (masks when every abnormal shot has one)
/// and the augmented samples.
fn training_set<B: Backend>(
    inputs: &FitInputs<B>,
) -> Result<(LabelMode, Vec<TrainSample>), FitError> {
    let (normal, abnormal) = (&inputs.shots.normal, &inputs.shots.abnormal);
    let with_masks = inputs.mode == FitMode::Masks;
    let label_mode = if with_masks {
        LabelMode::Masks
    } else {
        LabelMode::ImageLabels
    };
    let blocks = inputs
        .settings
        .training_augmentations
        .clamp(1, AUGMENT_FACTOR);
    let samples = training_samples(
        &inputs.augmented_abnormal,
        abnormal.len(),
        &augment_shots(normal, inputs.size)?,
        normal.len(),
        blocks,
        with_masks,
    );
    Ok((label_mode, samples))
}

/// The fitted detector: the installed adapters with their feature caches, the memory bank
/// from the normal shots (all 11 augmentations), and the calibration of the fused score on
/// them, the held-out normals and the abnormal shots.
fn finish<B: Backend>(
    vision: VisionTransformer<B>,
    text_features: Tensor<B, 2>,
    tuned: Tuned<B>,
    inputs: FitInputs<B>,
    feature_cache: Option<FeatureCache<B>>,
    on_event: &mut dyn FnMut(FitEvent),
) -> Result<FitOutcome<B>, FitError> {
    let (shots, size) = (inputs.shots, inputs.size);
    let device = text_features.device();
    let scorer = Scorer::new(inputs.model.scoring.clone(), text_features);
    let adapters_cfg = inputs.model.adapters.clone();
    let batch_size = inputs.settings.batch_size;
    let mut detector = Detector::new(
        vision,
        tuned.adapters,
        adapters_cfg,
        scorer,
        inputs.task,
        batch_size,
    );
    // The caller's cache belongs to the starting adapters: reuse it wherever they are kept.
    let start_cache = feature_cache.unwrap_or_default();
    let (text_cache, bank_cache) = if tuned.kept_start {
        (start_cache, FeatureCache::default())
    } else if inputs.start.bank_adapters.is_none() {
        (FeatureCache::default(), start_cache)
    } else {
        (FeatureCache::default(), FeatureCache::default())
    };
    detector.set_feature_cache(Some(text_cache));
    detector.set_bank_adapters(tuned.bank_adapters, Some(bank_cache));
    let normal_images: Vec<&[f32]> = shots.normal.iter().map(|s| s.image.as_slice()).collect();
    let groups = support_groups::<B>(&normal_images, size, &device)?;
    on_event(FitEvent::BuildingMemoryBank {
        images: shots.normal.len() * AUGMENT_FACTOR,
    });
    detector.set_support(groups.clone())?;
    on_event(FitEvent::Calibrating);
    let stack_augmented = |pairs: &[AugmentedPair]| -> Result<_, FitError> {
        if pairs.is_empty() {
            return Ok(None);
        }
        let views: Vec<&[f32]> = pairs.iter().map(|(image, _)| image.as_slice()).collect();
        Ok(Some(batch_tensor::<B>(&views, [3, size, size], &device)?))
    };
    let images = CalibrationImages {
        support: groups,
        held_out: stack_augmented(&augment_shots(&shots.held_out, size)?)?,
        held_out_images: shots.held_out.len(),
        abnormal: stack_augmented(&inputs.augmented_abnormal)?,
    };
    let fpr = inputs.settings.fpr;
    let text_weight = tuned.text_weight;
    detector.fit_calibration(&images, CalibrationOptions { text_weight, fpr })?;
    Ok(FitOutcome::Fitted {
        detector: Box::new(detector),
        mode: inputs.mode,
        epoch_losses: tuned.epoch_losses,
        note: inputs.note,
        selection: tuned.selection,
    })
}
