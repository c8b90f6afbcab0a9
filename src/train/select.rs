//! Choosing what a fit installs, on the user's own labels.
//!
//! Fine-tuning on a handful of shots can leave the detector worse on images it never saw: the
//! memory bank is built from the fine-tuned segmentation features, which lose their
//! nearest-neighbour quality, and a long schedule over-fits. So a fit does not install the
//! adapters it ends with; it validates candidates first:
//!
//! - **Cross-fitting.** The labelled shots are split into `folds` (normal and abnormal shots
//!   dealt out separately, in a seeded order). For each fold, fine-tuning runs on the other
//!   folds' shots, keeping the adapters at a few points along the schedule
//!   ([`checkpoint_epochs`]). The fold's own shots, with the user's held-out normals, are the
//!   validation images; each is scored in its first `validation_augmentations` augmentations
//!   (spec 7.2), so that a few shots still give a usable ranking.
//! - **Candidates.** The detector before fine-tuning (its adapters, memory-bank adapters and
//!   mix), and every fine-tuned checkpoint with the memory bank built either from its own
//!   features or from the features the detector had before; each with the text branch weighted
//!   0, 0.25, 0.5, 0.75 or 1 against the memory bank. A fold detector is calibrated as a real
//!   fit is (memory bank from the fold's normal training shots, calibration leave-one-out), so
//!   the validation scores are the calibrated fused scores the user would see.
//! - **Judgement.** Image AUC of the calibrated fused score, pooled over the folds, plus the
//!   pixel AUC of the fused map where the abnormal shots have masks (on a subsampled grid).
//!   The best candidate wins; ties go to the current detector, then to fewer epochs. It
//!   replaces the current detector only when it validates strictly better, so the installed
//!   detector always validates at least as well as the one it replaces.
//! - **Installing.** The chosen checkpoint is reproduced on all shots (same seed: the adapters
//!   after epoch `e` of a run are those of an `e`-epoch run), with the chosen memory bank and
//!   mix. When the current detector wins, it stays and fine-tuning's adapters are dropped.
//!
//! Validation needs at least two normal and two abnormal shots (one of each to train a fold
//! on, one of each to validate it with). With fewer, the fit fine-tunes as asked and says that
//! its choice could not be checked ([`Verdict::Unchecked`]).
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::eval::auc::roc_auc;
use crate::io::model_input::batch_tensor;
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::MvfaAdapters;
use crate::model::mvfa::calibration::Calibration;
use crate::model::mvfa::detector::{
    CalibrationImages, CalibrationOptions, Detector, FeatureCache, RawResult, TaskKind,
    apply_calibration, calibration_from_raws,
};
use crate::model::mvfa::scoring::Scorer;
use crate::train::fit::{
    FitError, FitEvent, FitModel, FitSettings, Shot, augment_shots, support_groups,
};
use crate::train::trainer::{LabelMode, TrainConfig, TrainEvent};

/// How a fit validates its candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionSettings {
    /// Cross-validation folds (fewer when there are fewer shots of a class); 0 or 1 switches
    /// the selection off (the fine-tuned adapters are installed unchecked).
    pub folds: usize,
    /// Augmentations of each validation image that are scored (the first ones of spec 7.2:
    /// identity, then rotations).
    pub validation_augmentations: usize,
    /// Fine-tuned checkpoints validated along the schedule (see [`checkpoint_epochs`]).
    pub checkpoints: usize,
    /// Weights of the text branch tried in the fusion (the memory bank gets the rest; the
    /// current detector's weight is always tried too).
    pub text_weights: Vec<f32>,
    /// How much better (in image AUC plus pixel AUC) a fine-tuned candidate must validate
    /// than the best candidate with the current adapters to replace them.
    pub margin: f64,
    /// In what share of bootstrap resamples of the validation images it must validate better.
    pub confidence: f64,
}

impl Default for SelectionSettings {
    fn default() -> Self {
        Self {
            folds: 2,
            validation_augmentations: 3,
            checkpoints: 3,
            text_weights: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            margin: 0.02,
            confidence: 0.9,
        }
    }
}

/// The epochs after which fine-tuned adapters are validated: `checkpoints` points spread
/// evenly up to `epochs` (e.g. 2, 4 and 5 of 5; 17, 34 and 50 of 50).
pub fn checkpoint_epochs(epochs: usize, checkpoints: usize) -> Vec<usize> {
    let c = checkpoints.max(1);
    let mut out: Vec<usize> = (1..=c).map(|i| (epochs * i).div_ceil(c)).collect();
    out.retain(|&e| e > 0);
    out.dedup();
    out
}

/// Where a candidate's memory bank takes its features from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BankSource {
    /// The adapters of the detector before fine-tuning (its own bank adapters, if it had any).
    Current,
    /// The fine-tuned adapters themselves.
    FineTuned,
}

/// One candidate and how it validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateReport {
    /// Fine-tuning epochs of its adapters (0: the adapters before fine-tuning).
    pub epochs: usize,
    /// Where its memory bank's features come from.
    pub bank: BankSource,
    /// Weight of the text branch in its fusion.
    pub text_weight: f32,
    /// Cross-validated image AUC of its calibrated fused score.
    pub image_auc: f64,
    /// Cross-validated pixel AUC of its calibrated fused map (abnormal shots with masks only).
    pub pixel_auc: Option<f64>,
    /// Whether this is the detector the fit would replace.
    pub current: bool,
}

impl CandidateReport {
    /// What the choice maximises: image AUC plus pixel AUC where there are masks.
    pub fn criterion(&self) -> f64 {
        self.image_auc + self.pixel_auc.unwrap_or(0.0)
    }

    /// A short name: "before fine-tuning, text 0.50" or "epoch 4, bank before fine-tuning,
    /// text 0.25".
    pub fn name(&self) -> String {
        let adapters = if self.epochs == 0 {
            "before fine-tuning".to_string()
        } else {
            format!("epoch {}", self.epochs)
        };
        let bank = match (self.epochs, self.bank) {
            (0, _) => String::new(),
            (_, BankSource::FineTuned) => ", bank fine-tuned".into(),
            (_, BankSource::Current) => ", bank before fine-tuning".into(),
        };
        format!("{adapters}{bank}, text {:.2}", self.text_weight)
    }

    /// The validation numbers: "image AUC 0.912, pixel AUC 0.973".
    pub fn numbers(&self) -> String {
        match self.pixel_auc {
            Some(p) => format!("image AUC {:.3}, pixel AUC {p:.3}", self.image_auc),
            None => format!("image AUC {:.3}", self.image_auc),
        }
    }
}

/// What the selection concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A candidate validated better than the current detector and was installed.
    Improved,
    /// Nothing validated better: the current detector was kept.
    KeptCurrent,
    /// Too few labelled images to validate: the fine-tuned detector was installed unchecked.
    Unchecked,
}

/// The fit report: every candidate's validation numbers and the choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionReport {
    /// What happened.
    pub verdict: Verdict,
    /// The same in plain words, for the user.
    pub message: String,
    /// Every candidate (empty when unchecked), in the order they were evaluated.
    pub candidates: Vec<CandidateReport>,
    /// Index of the installed candidate in `candidates`.
    pub chosen: Option<usize>,
    /// Index of the current detector in `candidates`.
    pub current: Option<usize>,
    /// Cross-validation folds.
    pub folds: usize,
    /// Normal shots, abnormal shots and held-out normals behind the validation.
    pub validation_images: [usize; 3],
    /// Augmentations of each validation image that were scored.
    pub validation_augmentations: usize,
    /// The share of bootstrap resamples of the validation images in which the best fine-tuned
    /// candidate validated better than the best one with the current adapters (computed when
    /// it beat it by the margin).
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Epochs the installed adapters were fine-tuned for on all shots: as many optimiser
    /// steps as the chosen candidate took on its fold's share (0 when none was fine-tuned).
    #[serde(default)]
    pub installed_epochs: usize,
}

impl SelectionReport {
    /// The installed candidate.
    pub fn chosen(&self) -> Option<&CandidateReport> {
        self.chosen.and_then(|i| self.candidates.get(i))
    }

    /// The report as a table, one candidate a line, the chosen one marked `*` and the current
    /// one `=`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.candidates.iter().enumerate() {
            let mark = match (Some(i) == self.chosen, Some(i) == self.current) {
                (true, _) => '*',
                (false, true) => '=',
                _ => ' ',
            };
            out.push_str(&format!("{mark} {:<44} {}\n", c.name(), c.numbers()));
        }
        out
    }
}

/// What an installed detector is made of, as chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Fine-tuning epochs on all shots (0: keep the adapters before fine-tuning).
    pub epochs: usize,
    /// The memory bank's features.
    pub bank: BankSource,
    /// The text branch's weight in the fusion.
    pub text_weight: f32,
}

/// The detector a fit starts from: its adapters, the adapters of its memory bank when they
/// differ, and its fusion weight.
#[derive(Clone)]
pub struct FitStart<B: Backend> {
    /// Adapters compared with the text features (and fine-tuned).
    pub adapters: MvfaAdapters<B>,
    /// Adapters of the memory bank, when not `adapters`.
    pub bank_adapters: Option<MvfaAdapters<B>>,
    /// Weight of the text branch in the fusion.
    pub text_weight: f32,
}

impl<B: Backend> FitStart<B> {
    /// The bank adapters of a detector fine-tuned from this start whose bank comes from
    /// `bank` (`None`: the fine-tuned adapters).
    pub(crate) fn bank_adapters_of(&self, bank: BankSource) -> Option<MvfaAdapters<B>> {
        match bank {
            BankSource::FineTuned => None,
            BankSource::Current => Some(
                self.bank_adapters
                    .clone()
                    .unwrap_or_else(|| self.adapters.clone()),
            ),
        }
    }
}

impl<B: Backend> From<MvfaAdapters<B>> for FitStart<B> {
    fn from(adapters: MvfaAdapters<B>) -> Self {
        Self {
            adapters,
            bank_adapters: None,
            text_weight: crate::model::mvfa::calibration::DEFAULT_TEXT_WEIGHT,
        }
    }
}

/// How the selection ended.
pub enum SelectionOutcome {
    /// Validated: install `choice`.
    Chosen(SelectionReport, Choice),
    /// Too few shots to validate (the report says why).
    Unchecked(SelectionReport),
    /// Cancelled during a fold's fine-tuning.
    Cancelled {
        /// Optimiser steps completed before the cancel.
        steps_done: usize,
    },
}

/// The message of an unchecked fit.
fn unchecked_message(normal: usize, abnormal: usize, folds: usize) -> String {
    if folds < 2 {
        "Fine-tuning ran without validation (switched off), so the choice of the fine-tuned \
         detector was not checked."
            .to_string()
    } else {
        format!(
            "Fine-tuning ran, but its result could not be checked: validating it needs at least \
             2 normal and 2 abnormal labelled images (you gave {normal} normal and {abnormal} \
             abnormal). The fine-tuned detector was installed unchecked."
        )
    }
}

/// The report of a fit that could not be validated.
pub fn unchecked_report(
    shots: (usize, usize, usize),
    settings: &SelectionSettings,
) -> SelectionReport {
    SelectionReport {
        verdict: Verdict::Unchecked,
        message: unchecked_message(shots.0, shots.1, settings.folds),
        candidates: Vec::new(),
        chosen: None,
        current: None,
        folds: 0,
        validation_images: [shots.0, shots.1, shots.2],
        validation_augmentations: settings.validation_augmentations,
        installed_epochs: 0,
        confidence: None,
    }
}

/// One validation image: its augmented views, label and (abnormal, with masks) mask views.
struct ValidationImage {
    views: Vec<Vec<f32>>,
    masks: Vec<Option<Vec<bool>>>,
    abnormal: bool,
}

/// The pooled validation data of one candidate.
#[derive(Default)]
struct Pool {
    scores: Vec<f32>,
    labels: Vec<bool>,
    /// The validation image (unit of resampling) of each score.
    units: Vec<usize>,
    pixels: Vec<f32>,
    pixel_labels: Vec<bool>,
    pixel_units: Vec<usize>,
}

impl Pool {
    /// Image AUC plus pixel AUC (when there are pixels), with validation image `u` counted
    /// `counts[u]` times (all once: `None`).
    fn criterion(&self, counts: Option<&[usize]>) -> Result<f64, FitError> {
        let expand = |values: &[f32], labels: &[bool], units: &[usize]| {
            let mut v = Vec::with_capacity(values.len());
            let mut l = Vec::with_capacity(values.len());
            for ((&x, &y), &u) in values.iter().zip(labels).zip(units) {
                let times = counts.map_or(1, |c| c[u]);
                for _ in 0..times {
                    v.push(x);
                    l.push(y);
                }
            }
            (v, l)
        };
        let auc = |values: &[f32], labels: &[bool], units: &[usize]| {
            let (v, l) = expand(values, labels, units);
            roc_auc(&v, &l).map_err(FitError::from)
        };
        let image = auc(&self.scores, &self.labels, &self.units)?;
        if self.pixels.is_empty() {
            return Ok(image);
        }
        Ok(image + auc(&self.pixels, &self.pixel_labels, &self.pixel_units)?)
    }
}

/// Bootstrap resamples of the validation images behind [`bootstrap_confidence`].
const RESAMPLES: usize = 100;

/// The share of bootstrap resamples of the validation images (normal and abnormal ones drawn
/// separately, with replacement) in which `a` validates strictly better than `b`.
fn bootstrap_confidence(
    a: &Pool,
    b: &Pool,
    unit_abnormal: &[bool],
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<f64, FitError> {
    use rand::Rng;
    let normal: Vec<usize> = (0..unit_abnormal.len())
        .filter(|&u| !unit_abnormal[u])
        .collect();
    let abnormal: Vec<usize> = (0..unit_abnormal.len())
        .filter(|&u| unit_abnormal[u])
        .collect();
    let mut wins = 0;
    for _ in 0..RESAMPLES {
        let mut counts = vec![0; unit_abnormal.len()];
        for class in [&normal, &abnormal] {
            for _ in 0..class.len() {
                counts[class[rng.random_range(0..class.len())]] += 1;
            }
        }
        if a.criterion(Some(&counts))? > b.criterion(Some(&counts))? {
            wins += 1;
        }
    }
    Ok(wins as f64 / RESAMPLES as f64)
}

/// A raw result without its per-level maps (the selection keeps many).
fn slim(mut raw: RawResult) -> RawResult {
    raw.zero_map_levels = Vec::new();
    raw.few_map_levels = Vec::new();
    raw.zero_image_levels = Vec::new();
    raw
}

/// Pixel stride of the validation pixel AUC: about 64 x 64 pixels per image are enough to
/// rank candidates and keep the pools small.
fn pixel_stride(size: usize) -> usize {
    size.div_ceil(64).max(1)
}

/// Training images of a run: the first `blocks` augmentations of each shot.
pub(crate) fn training_samples(
    abnormal: &[(Vec<f32>, Vec<f32>)],
    abnormal_shots: usize,
    normal: &[(Vec<f32>, Vec<f32>)],
    normal_shots: usize,
    blocks: usize,
    with_masks: bool,
) -> Vec<crate::train::trainer::TrainSample> {
    abnormal[..blocks * abnormal_shots]
        .iter()
        .map(|(image, mask)| (image, mask, true))
        .chain(
            normal[..blocks * normal_shots]
                .iter()
                .map(|(image, mask)| (image, mask, false)),
        )
        .map(
            |(image, mask, abnormal)| crate::train::trainer::TrainSample {
                image: image.clone(),
                mask: with_masks.then(|| mask.clone()),
                abnormal,
            },
        )
        .collect()
}

/// A fine-tuning run on the inference backend's autodiff wrapper: the adapters at the end and
/// after each epoch of `train.snapshot_epochs`, or, when cancelled, `Err` with the optimiser
/// steps done.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fine_tune<AB: AutodiffBackend>(
    vision: &VisionTransformer<AB::InnerBackend>,
    adapters: MvfaAdapters<AB::InnerBackend>,
    text_features: &Tensor<AB::InnerBackend, 2>,
    samples: &[crate::train::trainer::TrainSample],
    label_mode: LabelMode,
    model: &FitModel,
    train: TrainConfig,
    on_event: &mut dyn FnMut(FitEvent),
    cancel: &AtomicBool,
) -> Result<Result<TunedRun<AB::InnerBackend>, usize>, FitError> {
    let vision_ad = VisionTransformer::<AB>::from_inner(vision.clone()).no_grad();
    let adapters_ad = MvfaAdapters::<AB>::from_inner(adapters);
    let text_ad = Tensor::<AB, 2>::from_inner(text_features.clone());
    let outcome = crate::train::trainer::train(
        &vision_ad,
        adapters_ad,
        &model.adapters,
        &model.scoring,
        text_ad,
        samples,
        label_mode,
        &train,
        |event: TrainEvent| on_event(FitEvent::Training(event)),
        cancel,
    )?;
    if outcome.cancelled {
        return Ok(Err(outcome.steps_done));
    }
    Ok(Ok(TunedRun {
        adapters: outcome.adapters.valid(),
        snapshots: outcome
            .snapshots
            .into_iter()
            .map(|(epoch, a)| (epoch, a.valid()))
            .collect(),
        epoch_losses: outcome.epoch_losses,
    }))
}

/// A finished fine-tuning run on the inference backend.
pub(crate) struct TunedRun<B: Backend> {
    pub adapters: MvfaAdapters<B>,
    pub snapshots: Vec<(usize, MvfaAdapters<B>)>,
    pub epoch_losses: Vec<f32>,
}

/// Deals `n` indices into `folds` folds in a seeded order.
fn deal(n: usize, folds: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut fold_of = vec![0; n];
    for (position, &i) in order.iter().enumerate() {
        fold_of[i] = position % folds;
    }
    fold_of
}

/// Validates the candidates of a fit of `settings.train.epochs` on the `[normal, abnormal,
/// held_out]` shots (see the module docs) and chooses one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn select<AB: AutodiffBackend>(
    vision: &VisionTransformer<AB::InnerBackend>,
    start: &FitStart<AB::InnerBackend>,
    text_features: &Tensor<AB::InnerBackend, 2>,
    [normal, abnormal, held_out]: [&[Shot]; 3],
    label_mode: LabelMode,
    task: TaskKind,
    model: &FitModel,
    settings: &FitSettings,
    on_event: &mut dyn FnMut(FitEvent),
    cancel: &AtomicBool,
) -> Result<SelectionOutcome, FitError> {
    let sel = &settings.selection;
    let counts = (normal.len(), abnormal.len(), held_out.len());
    let folds = sel.folds.min(normal.len()).min(abnormal.len());
    if folds < 2 || sel.folds < 2 {
        return Ok(SelectionOutcome::Unchecked(unchecked_report(counts, sel)));
    }
    let s = Selection::new(
        vision,
        start,
        text_features,
        [normal, abnormal, held_out],
        label_mode,
        task,
        model,
        settings,
        settings.train.epochs,
    );
    let mut rng = crate::rng::seeded(settings.train.seed, crate::rng::Stream::Folds);
    let normal_fold = deal(normal.len(), folds, &mut rng);
    let abnormal_fold = deal(abnormal.len(), folds, &mut rng);
    let validated =
        match s.validate_folds::<AB>(folds, &normal_fold, &abnormal_fold, on_event, cancel)? {
            Ok(validated) => validated,
            Err(steps_done) => return Ok(SelectionOutcome::Cancelled { steps_done }),
        };

    let (candidates, candidate_pools, current) = s.candidates(validated.pools)?;
    let judgement = choose(
        &candidates,
        &candidate_pools,
        current,
        start.text_weight,
        &validated.unit_abnormal,
        settings,
    )?;
    let c = &candidates[judgement.chosen];
    // The validated adapters took `c.epochs` epochs over a fold's share of the shots; on all
    // shots the same number of optimiser steps takes proportionally fewer epochs.
    let full_samples = s.blocks * (normal.len() + abnormal.len());
    let installed_epochs = if c.epochs == 0 {
        0
    } else {
        ((c.epochs * validated.fold_samples) as f64 / (folds * full_samples) as f64)
            .round()
            .max(1.0) as usize
    };
    let (verdict, message) = verdict(&candidates, &judgement, installed_epochs);
    let choice = Choice {
        epochs: installed_epochs,
        bank: c.bank,
        text_weight: c.text_weight,
    };
    let report = SelectionReport {
        verdict,
        message,
        chosen: Some(judgement.chosen),
        current: Some(current),
        folds,
        validation_images: [counts.0, counts.1, counts.2],
        validation_augmentations: s.views,
        installed_epochs,
        confidence: judgement.confidence,
        candidates,
    };
    Ok(SelectionOutcome::Chosen(report, choice))
}

/// What the folds' validation gathered: every candidate's pool, whether each bootstrap unit
/// (fold, validation image) is abnormal, and the training images of the fold runs (summed).
struct Validated {
    pools: HashMap<(usize, BankSource, usize), Pool>,
    unit_abnormal: Vec<bool>,
    fold_samples: usize,
}

/// Candidate configurations, (epochs, bank) in evaluation order (each is tried with every
/// weight): the adapters before fine-tuning, then each checkpoint with its own bank and with
/// the bank before fine-tuning.
fn candidate_configs(snapshot_epochs: &[usize]) -> Vec<(usize, BankSource)> {
    let mut configs: Vec<(usize, BankSource)> = vec![(0, BankSource::Current)];
    for &e in snapshot_epochs {
        configs.push((e, BankSource::FineTuned));
        configs.push((e, BankSource::Current));
    }
    configs
}

/// Validation views: the first `views` augmentations of each image (block-major order), with
/// the masks of abnormal shots that have one.
fn validation_images(
    shots: &[&Shot],
    abnormal: bool,
    size: usize,
    views: usize,
) -> Result<Vec<ValidationImage>, FitError> {
    let owned: Vec<Shot> = shots.iter().map(|s| (*s).clone()).collect();
    let augmented = augment_shots(&owned, size)?;
    let k = owned.len();
    Ok((0..k)
        .map(|i| {
            let pairs: Vec<&(Vec<f32>, Vec<f32>)> =
                (0..views).map(|b| &augmented[b * k + i]).collect();
            ValidationImage {
                views: pairs.iter().map(|(image, _)| image.clone()).collect(),
                masks: pairs
                    .iter()
                    .map(|(_, mask)| {
                        (abnormal && owned[i].mask.is_some())
                            .then(|| mask.iter().map(|&m| m > 0.5).collect())
                    })
                    .collect(),
                abnormal,
            }
        })
        .collect())
}

/// The shots of one fold: the other folds' shots to fine-tune on, its own to validate with.
struct FoldSplit<'a> {
    train_normal: Vec<Shot>,
    train_abnormal: Vec<Shot>,
    val_normal: Vec<&'a Shot>,
    val_abnormal: Vec<&'a Shot>,
}

impl<'a> FoldSplit<'a> {
    fn new(
        fold: usize,
        normal: &'a [Shot],
        normal_fold: &[usize],
        abnormal: &'a [Shot],
        abnormal_fold: &[usize],
    ) -> Self {
        let train = |shots: &[Shot], fold_of: &[usize]| -> Vec<Shot> {
            shots
                .iter()
                .zip(fold_of)
                .filter(|(_, f)| **f != fold)
                .map(|(s, _)| s.clone())
                .collect()
        };
        let val = |shots: &'a [Shot], fold_of: &[usize]| -> Vec<&'a Shot> {
            shots
                .iter()
                .zip(fold_of)
                .filter(|(_, f)| **f == fold)
                .map(|(s, _)| s)
                .collect()
        };
        Self {
            train_normal: train(normal, normal_fold),
            train_abnormal: train(abnormal, abnormal_fold),
            val_normal: val(normal, normal_fold),
            val_abnormal: val(abnormal, abnormal_fold),
        }
    }

    /// The fold's validation images: its normal shots, its abnormal shots, then the user's
    /// held-out normals (the same in every fold).
    fn validation_images(
        &self,
        held_out_views: &[ValidationImage],
        size: usize,
        views: usize,
    ) -> Result<Vec<ValidationImage>, FitError> {
        let mut images: Vec<ValidationImage> =
            validation_images(&self.val_normal, false, size, views)?;
        images.extend(validation_images(&self.val_abnormal, true, size, views)?);
        let fold_held_out = held_out_views.iter().map(|v| ValidationImage {
            views: v.views.clone(),
            masks: v.masks.clone(),
            abnormal: false,
        });
        images.extend(fold_held_out);
        Ok(images)
    }
}

/// What every fold of one selection shares: its inputs, the sizes derived from the settings,
/// the candidate configurations, and the feature caches of the starting adapters (their
/// features are the same in every fold).
struct Selection<'a, B: Backend> {
    vision: &'a VisionTransformer<B>,
    start: &'a FitStart<B>,
    text_features: &'a Tensor<B, 2>,
    normal: &'a [Shot],
    abnormal: &'a [Shot],
    held_out: &'a [Shot],
    label_mode: LabelMode,
    task: TaskKind,
    model: &'a FitModel,
    settings: &'a FitSettings,
    epochs: usize,
    /// Model input side.
    size: usize,
    device: B::Device,
    /// Augmentations of each training shot.
    blocks: usize,
    /// Augmentations of each validation image.
    views: usize,
    with_masks: bool,
    /// Whether the candidates are judged on pixels too (every abnormal shot has a mask).
    with_pixels: bool,
    /// Pixel stride of the pixel AUC.
    stride: usize,
    /// Text weights tried in the fusion.
    weights: Vec<f32>,
    /// (epochs, bank) of the candidates, in evaluation order.
    configs: Vec<(usize, BankSource)>,
    /// Epochs after which a fold run keeps its adapters.
    snapshot_epochs: Vec<usize>,
    start_cache: FeatureCache<B>,
    start_bank_cache: FeatureCache<B>,
}

impl<'a, B: Backend> Selection<'a, B> {
    /// The shared state of a selection on `[normal, abnormal, held_out]` shots.
    #[allow(clippy::too_many_arguments)]
    fn new(
        vision: &'a VisionTransformer<B>,
        start: &'a FitStart<B>,
        text_features: &'a Tensor<B, 2>,
        [normal, abnormal, held_out]: [&'a [Shot]; 3],
        label_mode: LabelMode,
        task: TaskKind,
        model: &'a FitModel,
        settings: &'a FitSettings,
        epochs: usize,
    ) -> Self {
        let sel = &settings.selection;
        let mut weights = sel.text_weights.clone();
        if !weights.iter().any(|w| (w - start.text_weight).abs() < 1e-6) {
            weights.push(start.text_weight);
        }
        let size = model.scoring.image_size;
        let with_masks = label_mode == LabelMode::Masks;
        let snapshot_epochs = checkpoint_epochs(epochs, sel.checkpoints);
        Selection {
            vision,
            start,
            text_features,
            normal,
            abnormal,
            held_out,
            label_mode,
            task,
            model,
            settings,
            epochs,
            size,
            device: text_features.device(),
            blocks: settings
                .training_augmentations
                .clamp(1, crate::train::augment::AUGMENT_FACTOR),
            views: sel
                .validation_augmentations
                .clamp(1, crate::train::augment::AUGMENT_FACTOR),
            with_masks,
            with_pixels: with_masks && abnormal.iter().all(|s| s.mask.is_some()),
            stride: pixel_stride(size),
            weights,
            configs: candidate_configs(&snapshot_epochs),
            snapshot_epochs,
            start_cache: FeatureCache::default(),
            start_bank_cache: FeatureCache::default(),
        }
    }

    /// Cross-fitting: for each fold, fine-tunes on the other folds' shots and scores every
    /// candidate on the fold's own shots and the held-out normals. `Err` with the steps done
    /// when a fold's fine-tuning was cancelled.
    fn validate_folds<AB: AutodiffBackend<InnerBackend = B>>(
        &self,
        folds: usize,
        normal_fold: &[usize],
        abnormal_fold: &[usize],
        on_event: &mut dyn FnMut(FitEvent),
        cancel: &AtomicBool,
    ) -> Result<Result<Validated, usize>, FitError> {
        let held_out_refs: Vec<&Shot> = self.held_out.iter().collect();
        let held_out_views = validation_images(&held_out_refs, false, self.size, self.views)?;
        let mut validated = Validated {
            pools: HashMap::new(),
            unit_abnormal: Vec::new(),
            fold_samples: 0,
        };
        for fold in 0..folds {
            let split =
                FoldSplit::new(fold, self.normal, normal_fold, self.abnormal, abnormal_fold);
            validated.fold_samples +=
                self.blocks * (split.train_abnormal.len() + split.train_normal.len());
            let run = match self.fine_tune_fold::<AB>(&split, fold, folds, on_event, cancel)? {
                Ok(run) => run,
                Err(steps_done) => return Ok(Err(steps_done)),
            };
            on_event(FitEvent::Validating {
                fold: fold + 1,
                folds,
            });
            let images = split.validation_images(&held_out_views, self.size, self.views)?;
            // Every (fold, validation image) is one unit of the bootstrap.
            let first_unit = validated.unit_abnormal.len();
            validated
                .unit_abnormal
                .extend(images.iter().map(|v| v.abnormal));
            let pools = &mut validated.pools;
            self.score_fold(&run, &split.train_normal, &images, first_unit, pools)?;
        }
        Ok(Ok(validated))
    }

    /// Fine-tunes on a fold's training shots (announcing the run), keeping the adapters at
    /// the validated epochs; `Err` with the steps done when cancelled.
    fn fine_tune_fold<AB: AutodiffBackend<InnerBackend = B>>(
        &self,
        split: &FoldSplit<'_>,
        fold: usize,
        folds: usize,
        on_event: &mut dyn FnMut(FitEvent),
        cancel: &AtomicBool,
    ) -> Result<Result<TunedRun<B>, usize>, FitError> {
        let (size, settings) = (self.size, self.settings);
        let samples = training_samples(
            &augment_shots(&split.train_abnormal, size)?,
            split.train_abnormal.len(),
            &augment_shots(&split.train_normal, size)?,
            split.train_normal.len(),
            self.blocks,
            self.with_masks,
        );
        on_event(FitEvent::Run {
            run: fold + 1,
            runs: folds + 1,
            purpose: format!("validation fold {} of {folds}", fold + 1),
            steps: samples.len().div_ceil(settings.train.batch_size.max(1)) * self.epochs,
        });
        let train = settings
            .train
            .clone()
            .with_epochs(self.epochs)
            .with_snapshot_epochs(self.snapshot_epochs.clone());
        fine_tune::<AB>(
            self.vision,
            self.start.adapters.clone(),
            self.text_features,
            &samples,
            self.label_mode,
            self.model,
            train,
            on_event,
            cancel,
        )
    }

    /// Scores a fold's validation images with every candidate of the fold's run, adding the
    /// calibrated scores (and the subsampled fused maps) to each candidate's pool.
    fn score_fold(
        &self,
        run: &TunedRun<B>,
        train_normal: &[Shot],
        images: &[ValidationImage],
        first_unit: usize,
        pools: &mut HashMap<(usize, BankSource, usize), Pool>,
    ) -> Result<(), FitError> {
        let (size, settings, task) = (self.size, self.settings, self.task);
        let flat: Vec<&[f32]> = images
            .iter()
            .flat_map(|v| v.views.iter().map(Vec::as_slice))
            .collect();
        let validation = batch_tensor::<B>(&flat, [3, size, size], &self.device)?;
        let train_normal_images: Vec<&[f32]> =
            train_normal.iter().map(|s| s.image.as_slice()).collect();
        let groups = support_groups::<B>(&train_normal_images, size, &self.device)?;

        let mut snapshot_caches: HashMap<usize, FeatureCache<B>> = HashMap::new();
        for &(e, bank) in &self.configs {
            let mut detector = self.candidate_detector(run, e, bank, &mut snapshot_caches);
            detector.set_support(groups.clone())?;
            let mut raws = detector.calibration_raws(&CalibrationImages {
                support: groups.clone(),
                held_out: None,
                held_out_images: 0,
                abnormal: None,
            })?;
            raws.normal = raws.normal.into_iter().map(slim).collect();
            let scored: Vec<RawResult> = detector
                .score_raw_cached(validation.clone())?
                .into_iter()
                .map(slim)
                .collect();
            for (wi, &w) in self.weights.iter().enumerate() {
                let cal = calibration_from_raws(
                    &raws,
                    task,
                    CalibrationOptions {
                        text_weight: w,
                        fpr: settings.fpr,
                    },
                );
                let pool = pools.entry((e, bank, wi)).or_default();
                self.pool_results(pool, &cal, &scored, images, first_unit);
            }
        }
        Ok(())
    }

    /// The detector of candidate (`e` epochs, `bank`) of a fold's run, without its support:
    /// text adapters from the start (`e` = 0) or the run's snapshot, memory-bank adapters as
    /// `bank` says, each with the feature cache its adapters share across candidates.
    fn candidate_detector(
        &self,
        run: &TunedRun<B>,
        e: usize,
        bank: BankSource,
        snapshot_caches: &mut HashMap<usize, FeatureCache<B>>,
    ) -> Detector<B, VisionTransformer<B>> {
        let start = self.start;
        let (text_adapters, text_cache) = if e == 0 {
            (start.adapters.clone(), self.start_cache.clone())
        } else {
            let adapters = run
                .snapshots
                .iter()
                .find(|(epoch, _)| *epoch == e)
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| run.adapters.clone());
            (adapters, snapshot_caches.entry(e).or_default().clone())
        };
        let bank_adapters = match bank {
            BankSource::Current if e == 0 => start
                .bank_adapters
                .clone()
                .map(|a| (a, self.start_bank_cache.clone())),
            BankSource::Current => Some(match &start.bank_adapters {
                Some(a) => (a.clone(), self.start_bank_cache.clone()),
                None => (start.adapters.clone(), self.start_cache.clone()),
            }),
            BankSource::FineTuned => None,
        };
        let mut detector = Detector::new(
            self.vision.clone(),
            text_adapters,
            self.model.adapters.clone(),
            Scorer::new(self.model.scoring.clone(), self.text_features.clone()),
            self.task,
            self.settings.batch_size,
        );
        detector.set_feature_cache(Some(text_cache));
        if let Some((adapters, cache)) = bank_adapters {
            detector.set_bank_adapters(Some(adapters), Some(cache));
        }
        detector
    }

    /// Adds one candidate's calibrated results on a fold's images to its pool: a score per
    /// view, and the fused map on a subsampled grid where pixels are judged.
    fn pool_results(
        &self,
        pool: &mut Pool,
        cal: &Calibration,
        scored: &[RawResult],
        images: &[ValidationImage],
        first_unit: usize,
    ) {
        let (size, stride) = (self.size, self.stride);
        let mut r = scored.iter();
        for (index, image) in images.iter().enumerate() {
            let unit = first_unit + index;
            for mask in &image.masks {
                let raw = r.next().expect("one result per view");
                let (fused, score) = apply_calibration(cal, self.task, raw);
                pool.scores.push(score);
                pool.labels.push(image.abnormal);
                pool.units.push(unit);
                if self.with_pixels {
                    for y in (0..size).step_by(stride) {
                        for x in (0..size).step_by(stride) {
                            let i = y * size + x;
                            pool.pixels.push(fused[i]);
                            pool.pixel_labels.push(mask.as_ref().is_some_and(|m| m[i]));
                            pool.pixel_units.push(unit);
                        }
                    }
                }
            }
        }
    }

    /// Every candidate's report and pool, in evaluation order, and the index of the current
    /// detector (the starting adapters with the starting weight).
    fn candidates(
        &self,
        mut pools: HashMap<(usize, BankSource, usize), Pool>,
    ) -> Result<(Vec<CandidateReport>, Vec<Pool>, usize), FitError> {
        let current_weight = self.start.text_weight;
        let mut candidates = Vec::new();
        let mut candidate_pools = Vec::new();
        let mut current = None;
        for &(e, bank) in &self.configs {
            for (wi, &w) in self.weights.iter().enumerate() {
                let Some(pool) = pools.remove(&(e, bank, wi)) else {
                    continue;
                };
                let image_auc = roc_auc(&pool.scores, &pool.labels)?;
                let pixel_auc = if self.with_pixels {
                    Some(roc_auc(&pool.pixels, &pool.pixel_labels)?)
                } else {
                    None
                };
                let is_current = e == 0 && (w - current_weight).abs() < 1e-6;
                if is_current {
                    current = Some(candidates.len());
                }
                candidates.push(CandidateReport {
                    epochs: e,
                    bank,
                    text_weight: w,
                    image_auc,
                    pixel_auc,
                    current: is_current,
                });
                candidate_pools.push(pool);
            }
        }
        let current = current.expect("the current weight is always tried");
        Ok((candidates, candidate_pools, current))
    }
}

/// The best candidate that `keep` admits: highest criterion; ties to the current detector,
/// then fewer epochs, then the bank it had, then the mix closest to the current one.
fn best_of(
    candidates: &[CandidateReport],
    current_weight: f32,
    keep: &dyn Fn(&CandidateReport) -> bool,
) -> Option<usize> {
    let rank = |c: &CandidateReport| {
        (
            c.current,
            std::cmp::Reverse(c.epochs),
            c.bank == BankSource::Current,
            std::cmp::Reverse(((c.text_weight - current_weight).abs() * 1000.0) as i64),
        )
    };
    (0..candidates.len())
        .filter(|&i| keep(&candidates[i]))
        .max_by(|&a, &b| {
            let (ca, cb) = (&candidates[a], &candidates[b]);
            ca.criterion()
                .total_cmp(&cb.criterion())
                .then_with(|| rank(ca).cmp(&rank(cb)))
        })
}

/// The choice among the candidates (indices into them).
struct Judgement {
    /// The candidate to install.
    chosen: usize,
    /// The current detector.
    current: usize,
    /// The current adapters with their best mix: what stays when fine-tuning does not win.
    kept: usize,
    /// The best fine-tuned candidate.
    best_tuned: Option<usize>,
    /// The bootstrap confidence of the best fine-tuned candidate (when it beat `kept` by the
    /// margin).
    confidence: Option<f64>,
}

/// Chooses the candidate to install: a new mix must validate strictly better than the
/// current detector, fine-tuned adapters better by the margin and in enough resamples.
fn choose(
    candidates: &[CandidateReport],
    pools: &[Pool],
    current: usize,
    current_weight: f32,
    unit_abnormal: &[bool],
    settings: &FitSettings,
) -> Result<Judgement, FitError> {
    let sel = &settings.selection;
    // The current adapters with the best mix; a new mix must validate strictly better.
    let best_kept =
        best_of(candidates, current_weight, &|c| c.epochs == 0).expect("the current candidate");
    let kept = if candidates[best_kept].criterion() > candidates[current].criterion() {
        best_kept
    } else {
        current
    };
    // Fine-tuned adapters must beat that by the margin, and in most bootstrap resamples of
    // the validation images: a handful of images rank dozens of candidates, and the best of
    // many noisy estimates is optimistic.
    let mut confidence = None;
    let chosen = match best_of(candidates, current_weight, &|c| c.epochs > 0) {
        Some(tuned)
            if candidates[tuned].criterion() > candidates[kept].criterion() + sel.margin =>
        {
            let mut rng = crate::rng::seeded(settings.train.seed, crate::rng::Stream::Bootstrap);
            let share = bootstrap_confidence(&pools[tuned], &pools[kept], unit_abnormal, &mut rng)?;
            confidence = Some(share);
            if share >= sel.confidence { tuned } else { kept }
        }
        _ => kept,
    };
    Ok(Judgement {
        chosen,
        current,
        kept,
        best_tuned: best_of(candidates, current_weight, &|c| c.epochs > 0),
        confidence,
    })
}

/// The verdict and its message for the user: what was installed and why, and why the best
/// fine-tuned candidate was not, when it was not.
fn verdict(
    candidates: &[CandidateReport],
    judgement: &Judgement,
    installed_epochs: usize,
) -> (Verdict, String) {
    let &Judgement {
        chosen,
        current,
        kept,
        best_tuned,
        confidence,
    } = judgement;
    let c = &candidates[chosen];
    let cur = &candidates[current];
    // Why the best fine-tuned candidate was not taken, when it was not.
    let tuned_note = match (best_tuned.map(|i| &candidates[i]), confidence) {
        (Some(b), Some(share)) if chosen != best_tuned.unwrap_or(usize::MAX) => {
            format!(
                " The best fine-tuned candidate ({}, {}) validated higher, but only in {:.0}% of \
                 resamples of your images, too few to trust it.",
                b.name(),
                b.numbers(),
                100.0 * share
            )
        }
        (Some(b), _) => format!(" Best fine-tuned candidate: {}, {}.", b.name(), b.numbers()),
        (None, _) => String::new(),
    };
    if chosen == current {
        (
            Verdict::KeptCurrent,
            format!(
                "Fine-tuning did not beat the current detector on your labelled images, so the \
                 current one was kept (cross-validated {}).{tuned_note}",
                cur.numbers(),
            ),
        )
    } else if c.epochs == 0 {
        (
            Verdict::Improved,
            format!(
                "Fine-tuning did not beat the current adapters on your labelled images, so they \
                 were kept; weighting the text branch {:.2} instead of {:.2} validated better \
                 ({} instead of {}), so the branches are now mixed that way.{tuned_note}",
                c.text_weight,
                cur.text_weight,
                c.numbers(),
                cur.numbers()
            ),
        )
    } else {
        let k = &candidates[kept];
        (
            Verdict::Improved,
            format!(
                "Fine-tuning improved the detector on your labelled images: cross-validated {} \
                 instead of {} for the current detector ({} with its best mix), better in {:.0}% \
                 of resamples of your images. Installed {}, trained on all shots for the same \
                 number of steps ({installed_epochs} epochs).",
                c.numbers(),
                cur.numbers(),
                k.numbers(),
                100.0 * confidence.unwrap_or(1.0),
                c.name()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_spread_over_the_schedule() {
        assert_eq!(checkpoint_epochs(5, 3), vec![2, 4, 5]);
        assert_eq!(checkpoint_epochs(50, 3), vec![17, 34, 50]);
        assert_eq!(checkpoint_epochs(1, 3), vec![1]);
        assert_eq!(checkpoint_epochs(2, 3), vec![1, 2]);
        assert!(checkpoint_epochs(0, 3).is_empty());
    }

    #[test]
    fn folds_are_dealt_evenly_and_reproducibly() {
        let mut a = crate::rng::seeded(3, crate::rng::Stream::Folds);
        let mut b = crate::rng::seeded(3, crate::rng::Stream::Folds);
        let fa = deal(5, 2, &mut a);
        assert_eq!(fa, deal(5, 2, &mut b));
        assert_eq!(fa.iter().filter(|&&f| f == 0).count(), 3);
    }
}
