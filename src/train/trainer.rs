//! The MVFA fine-tuning loop (spec 5.1–5.3), runnable on any thread.
//!
//! Two Adam optimisers (one per adapter head), betas (0.5, 0.999), eps 1e-8, constant learning
//! rate, a fixed number of epochs (no model selection on any test data), seeded shuffling.
//! Three label situations:
//! - abnormal shots with masks: focal + dice (seg head) + BCE (det head), both heads stepped;
//! - abnormal shots with image labels only: BCE only, only the det head is stepped (spec 5.2);
//! - normal shots only: nothing to fine-tune; see [`crate::train::fit`].
//!
//! Progress goes out through a callback (the app wraps a channel in it) after every step;
//! cancellation is checked before every step, so a cancel stops within one step and the
//! adapters of the last completed step are returned.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom;

use crate::io::model_input::batch_tensor;
use crate::model::mvfa::adapter::{
    AdaptedInput, AdapterBank, MvfaAdapters, MvfaAdaptersConfig, TappedBackbone,
};
use crate::model::mvfa::losses::{LossTarget, mvfa_loss};
use crate::model::mvfa::scoring::{Scorer, ScoringConfig};

/// Hyper-parameters of a fine-tuning run. Defaults are the reference's few-shot settings
/// (spec 12).
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// Passes over the (augmented) training set.
    #[config(default = 50)]
    pub epochs: usize,
    /// Adam learning rate (1e-3 few-shot; the reference's zero-shot script uses 1e-4).
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Adam's first-moment decay (0.5, as in the reference).
    #[config(default = 0.5)]
    pub beta_1: f32,
    /// Adam's second-moment decay.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Adam's epsilon (numerical stability term).
    #[config(default = 1e-8)]
    pub epsilon: f32,
    /// Images per optimiser step (the reference effectively uses 1).
    #[config(default = 1)]
    pub batch_size: usize,
    /// Seed of the per-epoch shuffling ([`crate::rng::Stream::Shuffle`]).
    #[config(default = 111)]
    pub seed: u64,
    /// Epochs after which the adapters are kept as candidates for model selection
    /// ([`TrainOutcome::snapshots`]); the learning rate is constant, so the adapters after
    /// epoch `e` of a longer run equal those of an `e`-epoch run with the same seed.
    #[config(default = "Vec::new()")]
    pub snapshot_epochs: Vec<usize>,
}

/// One training image at model resolution.
#[derive(Debug, Clone)]
pub struct TrainSample {
    /// `[3, S, S]` CHW values in [0, 1].
    pub image: Vec<f32>,
    /// `[S, S]` mask (soft edges allowed; binarised at 0.5 in the loss); `None` when the
    /// dataset has image labels only.
    pub mask: Option<Vec<f32>>,
    /// `true` = abnormal exemplar.
    pub abnormal: bool,
}

/// What the labels allow the loss to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelMode {
    /// Focal + dice + BCE; both heads are updated.
    Masks,
    /// BCE only; only the det head is updated.
    ImageLabels,
}

/// One optimiser step's report.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Total epochs of the run.
    pub epochs: usize,
    /// 1-based step within the epoch.
    pub step: usize,
    /// Optimiser steps per epoch (training images / batch size, rounded up).
    pub steps_per_epoch: usize,
    /// Loss terms summed over levels (focal and dice are 0 in `ImageLabels` mode).
    pub focal: f32,
    /// Dice loss, summed over levels (0 in `ImageLabels` mode).
    pub dice: f32,
    /// Detection-head BCE loss, summed over levels.
    pub bce: f32,
    /// The loss the step minimised (all terms together).
    pub total: f32,
    /// Training images processed per second since the run started.
    pub images_per_second: f32,
    /// Estimated seconds until the last epoch ends.
    pub eta_seconds: f32,
}

/// Progress events of a training run.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// One optimiser step completed.
    Step(StepReport),
    /// An epoch completed.
    EpochFinished {
        /// 1-based epoch.
        epoch: usize,
        /// Mean total loss over the epoch's steps.
        mean_total: f32,
    },
}

/// The result of [`train`]: the adapters after the last completed step.
pub struct TrainOutcome<B: AutodiffBackend> {
    /// The adapters after the last completed step.
    pub adapters: MvfaAdapters<B>,
    /// Whether the run stopped early on a cancel request.
    pub cancelled: bool,
    /// Optimiser steps completed.
    pub steps_done: usize,
    /// Mean total loss of each completed epoch.
    pub epoch_losses: Vec<f32>,
    /// The adapters after each epoch of [`TrainConfig::snapshot_epochs`] that completed.
    pub snapshots: Vec<(usize, MvfaAdapters<B>)>,
}

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The training set is empty.
    #[error("no training images")]
    Empty,
    /// A training image's value count is not `3 * size * size`.
    #[error("training image {index} has {got} values; expected 3x{size}x{size} = {expected}")]
    ImageSize {
        /// Index of the image in the training set.
        index: usize,
        /// Values it has.
        got: usize,
        /// Model input size in pixels.
        size: usize,
        /// Values expected (`3 * size * size`).
        expected: usize,
    },
    #[error("training image {index} has no mask, but the run uses masks")]
    /// The run uses masks but a training image lacks one (or its mask is not `size * size`).
    MissingMask {
        /// Index of the image in the training set.
        index: usize,
    },
    #[error(
        "fine-tuning needs abnormal examples: all {normal} training images are normal (use the normal-only mode, which needs no fine-tuning)"
    )]
    /// Every training image is normal, so there is nothing to fine-tune against.
    NoAbnormal {
        /// Number of (normal) training images.
        normal: usize,
    },
    /// The model failed during a forward pass (e.g. a tensor shape it rejects).
    #[error("{0}")]
    Model(String),
    #[error(
        "training diverged at epoch {epoch}, step {step} (step {global_step} of the run): the \
         loss became {loss}; nothing was kept. Try a lower learning rate"
    )]
    /// A loss became NaN or infinite: the run stops and keeps nothing.
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// 1-based step of the whole run.
        global_step: usize,
        /// The non-finite loss.
        loss: f32,
    },
    /// A learning rate that is zero, negative or not finite.
    #[error("the learning rate must be a positive finite number, got {0}")]
    LearningRate(f64),
}

fn batch_tensors<B: Backend>(
    samples: &[&TrainSample],
    size: usize,
    mode: LabelMode,
    device: &B::Device,
) -> (Tensor<B, 4>, LossTarget<B>) {
    let n = samples.len();
    let views: Vec<&[f32]> = samples.iter().map(|s| s.image.as_slice()).collect();
    let images =
        batch_tensor(&views, [3, size, size], device).expect("sizes checked before training");
    let labels: Vec<f32> = samples
        .iter()
        .map(|s| if s.abnormal { 1.0 } else { 0.0 })
        .collect();
    let labels = Tensor::from_data(TensorData::new(labels, [n]), device);
    let mask = (mode == LabelMode::Masks).then(|| {
        let mut masks = Vec::with_capacity(n * size * size);
        for s in samples {
            masks.extend_from_slice(s.mask.as_deref().expect("checked before training"));
        }
        Tensor::from_data(TensorData::new(masks, [n, size, size]), device)
    });
    (images, LossTarget { labels, mask })
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f32 {
    t.into_scalar().elem::<f32>()
}

fn sum_terms<B: Backend>(terms: &[Tensor<B, 1>]) -> f32 {
    terms.iter().map(|t| scalar(t.clone())).sum()
}

/// Fine-tunes `adapters` on `samples` (already augmented) with the frozen `vision` tower.
///
/// `vision` must be frozen by the caller (`no_grad()`), so that only the adapters receive
/// gradients. `text_features [bottleneck, 2]` are constants. `on_event` is called on this
/// thread after every step; `cancel` is polled before every step.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend, V: TappedBackbone<B>>(
    vision: &V,
    adapters: MvfaAdapters<B>,
    adapters_cfg: &MvfaAdaptersConfig,
    scoring_cfg: &ScoringConfig,
    text_features: Tensor<B, 2>,
    samples: &[TrainSample],
    mode: LabelMode,
    cfg: &TrainConfig,
    mut on_event: impl FnMut(TrainEvent),
    cancel: &AtomicBool,
) -> Result<TrainOutcome<B>, TrainError> {
    let size = scoring_cfg.image_size;
    check_inputs(samples, mode, cfg, size)?;
    let device = text_features.device();
    let mut outcome = TrainOutcome {
        adapters: adapters.map(&mut RequireGrad),
        cancelled: false,
        steps_done: 0,
        epoch_losses: Vec::new(),
        snapshots: Vec::new(),
    };
    let scorer = Scorer::new(scoring_cfg.clone(), text_features.detach());
    let mut opt_seg = adam::<B, AdapterBank<B>>(cfg);
    let mut opt_det = adam::<B, AdapterBank<B>>(cfg);

    let batch = cfg.batch_size.max(1);
    let steps_per_epoch = samples.len().div_ceil(batch);
    let mut rng = crate::rng::seeded(cfg.seed, crate::rng::Stream::Shuffle);
    let mut order: Vec<usize> = (0..samples.len()).collect();
    let mut progress = Progress::start(steps_per_epoch, cfg.epochs);
    let steps = Steps {
        vision,
        adapters_cfg,
        scorer,
        samples,
        size,
        mode,
        frozen_prefix: frozen_prefix(vision, samples, batch, size, mode, &device),
        device,
    };

    for epoch in 1..=cfg.epochs {
        order.shuffle(&mut rng);
        let mut epoch_total = 0.0f32;
        for (step_index, chunk) in order.chunks(batch).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                outcome.cancelled = true;
                outcome.steps_done = progress.steps_done;
                return Ok(outcome);
            }
            let (loss, terms) = steps.loss(&outcome.adapters, chunk)?;
            // A NaN or infinite loss poisons every later step: stop before the update.
            terms.check_finite(epoch, step_index + 1, progress.steps_done + 1)?;
            let mut grads = loss.backward();
            let lr = cfg.learning_rate;
            let det_grads = GradientsParams::from_module(&mut grads, &outcome.adapters.det);
            if mode == LabelMode::Masks {
                let seg_grads = GradientsParams::from_module(&mut grads, &outcome.adapters.seg);
                outcome.adapters.seg = opt_seg.step(lr, outcome.adapters.seg, seg_grads);
            }
            outcome.adapters.det = opt_det.step(lr, outcome.adapters.det, det_grads);

            epoch_total += terms.total;
            let report = progress.step(epoch, step_index + 1, chunk.len(), &terms);
            on_event(TrainEvent::Step(report));
        }
        let mean_total = epoch_total / steps_per_epoch as f32;
        outcome.epoch_losses.push(mean_total);
        if cfg.snapshot_epochs.contains(&epoch) {
            outcome.snapshots.push((epoch, outcome.adapters.clone()));
        }
        on_event(TrainEvent::EpochFinished { epoch, mean_total });
    }
    outcome.steps_done = progress.steps_done;
    Ok(outcome)
}

/// Adam with the run's betas and epsilon (one per adapter head).
fn adam<B: AutodiffBackend, M: AutodiffModule<B>>(cfg: &TrainConfig) -> impl Optimizer<M, B> {
    AdamConfig::new()
        .with_beta_1(cfg.beta_1)
        .with_beta_2(cfg.beta_2)
        .with_epsilon(cfg.epsilon)
        .init::<B, M>()
}

/// Refuses a run that cannot train: no images, no abnormal image, a bad learning rate, an
/// image of the wrong size, or a missing mask in `Masks` mode (checked up front, so that a
/// run never fails half-way on its inputs).
fn check_inputs(
    samples: &[TrainSample],
    mode: LabelMode,
    cfg: &TrainConfig,
    size: usize,
) -> Result<(), TrainError> {
    if samples.is_empty() {
        return Err(TrainError::Empty);
    }
    if !samples.iter().any(|s| s.abnormal) {
        return Err(TrainError::NoAbnormal {
            normal: samples.len(),
        });
    }
    if !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0) {
        return Err(TrainError::LearningRate(cfg.learning_rate));
    }
    for (index, s) in samples.iter().enumerate() {
        if s.image.len() != 3 * size * size {
            return Err(TrainError::ImageSize {
                index,
                got: s.image.len(),
                size,
                expected: 3 * size * size,
            });
        }
        if mode == LabelMode::Masks && s.mask.as_ref().is_none_or(|m| m.len() != size * size) {
            return Err(TrainError::MissingMask { index });
        }
    }
    Ok(())
}

/// The blocks before the first adapter see no adapted input: their output per training
/// image is computed once here and every epoch resumes from it (no gradient flows there).
/// `None` when the backbone cannot resume from a tap.
fn frozen_prefix<B: AutodiffBackend, V: TappedBackbone<B>>(
    vision: &V,
    samples: &[TrainSample],
    batch: usize,
    size: usize,
    mode: LabelMode,
    device: &B::Device,
) -> Option<Vec<Tensor<B, 3>>> {
    let first_tap = vision.default_taps().first().copied().unwrap_or(0);
    let mut frozen_prefix: Option<Vec<Tensor<B, 3>>> = Some(Vec::with_capacity(samples.len()));
    for chunk in samples.chunks(batch) {
        let refs: Vec<&TrainSample> = chunk.iter().collect();
        let (images, _) = batch_tensors::<B>(&refs, size, mode, device);
        match (
            frozen_prefix.as_mut(),
            vision.stream_after(images, first_tap),
        ) {
            (Some(streams), Some(stream)) => {
                streams.extend((0..chunk.len()).map(|i| stream.clone().narrow(0, i, 1)));
            }
            _ => frozen_prefix = None,
        }
    }
    frozen_prefix
}

/// The loss terms of one step, summed over levels.
struct LossTerms {
    focal: f32,
    dice: f32,
    bce: f32,
    total: f32,
}

impl LossTerms {
    /// [`TrainError::Diverged`] when a term is NaN or infinite (at 1-based `step` of `epoch`,
    /// `global_step` of the run).
    fn check_finite(
        &self,
        epoch: usize,
        step: usize,
        global_step: usize,
    ) -> Result<(), TrainError> {
        let finite = self.total.is_finite()
            && self.focal.is_finite()
            && self.dice.is_finite()
            && self.bce.is_finite();
        if !finite {
            return Err(TrainError::Diverged {
                epoch,
                step,
                global_step,
                loss: self.total,
            });
        }
        Ok(())
    }
}

/// What every step of a run reads: the frozen tower (and its precomputed prefix), the
/// scorer holding the text features, and the training images.
struct Steps<'a, B: AutodiffBackend, V> {
    vision: &'a V,
    adapters_cfg: &'a MvfaAdaptersConfig,
    scorer: Scorer<B>,
    samples: &'a [TrainSample],
    size: usize,
    mode: LabelMode,
    device: B::Device,
    frozen_prefix: Option<Vec<Tensor<B, 3>>>,
}

impl<B: AutodiffBackend, V: TappedBackbone<B>> Steps<'_, B, V> {
    /// The loss of `adapters` on the training images `chunk` (indices), as a tensor to
    /// differentiate and as numbers.
    fn loss(
        &self,
        adapters: &MvfaAdapters<B>,
        chunk: &[usize],
    ) -> Result<(Tensor<B, 1>, LossTerms), TrainError> {
        let batch_samples: Vec<&TrainSample> = chunk.iter().map(|&i| &self.samples[i]).collect();
        let (images, target) =
            batch_tensors::<B>(&batch_samples, self.size, self.mode, &self.device);
        let input = match &self.frozen_prefix {
            Some(streams) => AdaptedInput::FirstTap(Tensor::cat(
                chunk.iter().map(|&i| streams[i].clone()).collect(),
                0,
            )),
            None => AdaptedInput::Images(images),
        };
        let features = adapters
            .forward_adapted_from(self.vision, input, self.adapters_cfg)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        let loss = mvfa_loss(&self.scorer, &features, &target);
        let (focal, dice, bce) = (
            sum_terms(&loss.focal),
            sum_terms(&loss.dice),
            sum_terms(&loss.bce),
        );
        let total = scalar(loss.total.clone());
        let terms = LossTerms {
            focal,
            dice,
            bce,
            total,
        };
        Ok((loss.total, terms))
    }
}

/// Step and throughput counters of a run.
struct Progress {
    started: Instant,
    steps_done: usize,
    images_done: usize,
    steps_per_epoch: usize,
    epochs: usize,
    total_steps: usize,
}

impl Progress {
    /// Counters of a run starting now.
    fn start(steps_per_epoch: usize, epochs: usize) -> Self {
        Progress {
            started: Instant::now(),
            steps_done: 0,
            images_done: 0,
            steps_per_epoch,
            epochs,
            total_steps: steps_per_epoch.saturating_mul(epochs),
        }
    }

    /// Counts a finished step of `images` images and reports it (rate and time left from
    /// the run so far).
    fn step(&mut self, epoch: usize, step: usize, images: usize, terms: &LossTerms) -> StepReport {
        self.steps_done += 1;
        self.images_done += images;
        let elapsed = self.started.elapsed().as_secs_f32().max(1e-6);
        let per_step = elapsed / self.steps_done as f32;
        StepReport {
            epoch,
            epochs: self.epochs,
            step,
            steps_per_epoch: self.steps_per_epoch,
            focal: terms.focal,
            dice: terms.dice,
            bce: terms.bce,
            total: terms.total,
            images_per_second: self.images_done as f32 / elapsed,
            eta_seconds: per_step * self.total_steps.saturating_sub(self.steps_done) as f32,
        }
    }
}

/// Marks every float parameter as trainable (a module loaded from a record, or wrapped with
/// `from_inner`, may come without the flag).
struct RequireGrad;

impl<B: AutodiffBackend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;

    use super::*;
    use crate::model::clip::config::VisionConfig;
    use crate::model::clip::vision::VisionTransformer;

    type AB = Autodiff<NdArray<f32>>;

    /// The tower without [`TappedBackbone::stream_after`]: every step runs whole images.
    struct WholeImages(VisionTransformer<AB>);

    impl TappedBackbone<AB> for WholeImages {
        fn width(&self) -> usize {
            self.0.width()
        }
        fn default_taps(&self) -> Vec<usize> {
            self.0.default_taps()
        }
        fn run_tapped(
            &self,
            images: Tensor<AB, 4>,
            tap_blocks: &[usize],
            hook: &mut dyn FnMut(usize, Tensor<AB, 3>) -> Tensor<AB, 3>,
        ) {
            self.0.run_tapped(images, tap_blocks, hook);
        }
    }

    #[test]
    fn resuming_from_the_frozen_prefix_trains_the_same_adapters() {
        let device = Default::default();
        let vision = crate::train::fit::materialize(
            VisionConfig::new()
                .with_image_size(56)
                .with_width(32)
                .with_layers(4)
                .with_heads(2)
                .with_mlp_width(64)
                .with_embed_dim(16)
                .init::<AB>(&device),
        )
        .no_grad();
        let cfg = MvfaAdaptersConfig::new().with_width(32).with_bottleneck(16);
        let scoring = ScoringConfig::new().with_image_size(56).with_grid_size(4);
        let text = Tensor::<AB, 2>::from_data(
            TensorData::new((0..32).map(|i| (i as f32 * 0.37).sin()).collect(), [16, 2]),
            &device,
        );
        let samples: Vec<TrainSample> = (0..3)
            .map(|k| TrainSample {
                image: (0..3 * 56 * 56)
                    .map(|i| ((i * (k + 3)) % 97) as f32 / 97.0)
                    .collect(),
                mask: Some((0..56 * 56).map(|i| f32::from(i % 7 == k)).collect()),
                abnormal: k != 0,
            })
            .collect();
        fn run<V: TappedBackbone<AB>>(
            backbone: &V,
            adapters: MvfaAdapters<AB>,
            cfg: &MvfaAdaptersConfig,
            scoring: &ScoringConfig,
            text: Tensor<AB, 2>,
            samples: &[TrainSample],
        ) -> Vec<f32> {
            let outcome = train(
                backbone,
                adapters,
                cfg,
                scoring,
                text,
                samples,
                LabelMode::Masks,
                &TrainConfig::new().with_epochs(2).with_batch_size(2),
                |_| {},
                &AtomicBool::new(false),
            )
            .unwrap();
            outcome.adapters.valid().seg.adapters[1]
                .fc1
                .weight
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        }
        let init = || cfg.init::<AB>(&device);
        let cached = run(&vision, init(), &cfg, &scoring, text.clone(), &samples);
        let whole = run(
            &WholeImages(vision.clone()),
            init(),
            &cfg,
            &scoring,
            text.clone(),
            &samples,
        );
        assert_eq!(cached, whole);
    }
}
