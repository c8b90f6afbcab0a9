//! Parity of the MVFA adapters, scoring, losses, gradients and one Adam step with the
//! PyTorch reference written by `tools/parity/make_mvfa_fixtures.py` (tests/fixtures/mvfa/).
//!
//! Phase A uses a small stand-in backbone (8 residual blocks `x <- x + tanh(x @ A_{b mod 2})`,
//! taps after blocks 2, 4, 6, 8, width 64, bottleneck 32, 290 tokens, maps at 240) so that the
//! hook chaining and the gradient flow through the stream are the real ones, against a float32
//! PyTorch reference. Tolerances: 1e-4 max-abs for tensors and for the weights after the Adam
//! step, 1e-5 relative for loss terms, 1e-5 of the largest gradient for gradients (see
//! `GRAD_TOL`). Run with `--nocapture` to see the measured errors.
//!
//! Phase B runs the same checks through the CLIP fixture tower of `tests/fixtures/clip`
//! (8 blocks, width 32, embed 16, 240 px, erf GELU, loaded with `load_clip_vision`) on its
//! fixture image, against a float64 PyTorch reference built with open_clip from the same
//! weights.

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use mvfa_studio::model::clip::vision::VisionTransformer;
use mvfa_studio::model::mvfa::adapter::{
    AdapterBank, MvfaAdapters, MvfaAdaptersConfig, TappedBackbone, forward_adapted,
    forward_adapted_traced,
};
use mvfa_studio::model::mvfa::losses::{LossTarget, mvfa_loss};
use mvfa_studio::model::mvfa::scoring::{MemoryBank, Scorer, ScoringConfig};
use mvfa_studio::weights::adapters::import_mvfa_pth;
use mvfa_studio::weights::clip::{LoadOptions, load_clip_vision};
use safetensors::SafeTensors;

type NB = NdArray<f32>;
type AB = Autodiff<NB>;

const W: usize = 64;
const E: usize = 32;
const GRID: usize = 17;
const SIZE: usize = 240;
const TOKENS: usize = 1 + GRID * GRID;
const TOL: f32 = 1e-4;
const LOSS_RTOL: f64 = 1e-5;
/// Gradients: max-abs error relative to the largest gradient of the tensor, at most
/// [`GRAD_TOL`] on the CPU. Measured: under 2e-6 in both phases, also where gradients of
/// earlier levels cross the CLIP blocks. (Before the patched burn-ndarray computed the exact
/// GELU derivative it was 2.5e-4 in phase B: burn-backend's default `gelu_backward`
/// differentiates the tanh approximation. On CUDA the model composes the GELU from `erf`
/// under autodiff, so its gradient is exact too, but the GPU run is held to 1e-3 like its
/// other tensors: it has never run here.)
const GRAD_TOL: f32 = 1e-5;

/// The first Adam step is lr * g / (|g| + eps): +-lr for a gradient well above eps, and
/// ill-conditioned where |g| is at the level of the f32 noise above (its sign, and near eps
/// its size, are noise; a release build's different instruction order moved one such weight
/// by 1.7e-4). The weight check therefore compares the step only where the reference gradient
/// is clearly above that noise, `|g| > GRAD_RTOL * max|g|` (the number of weights left out is
/// printed); every compared weight must match within `TOL`.
const GRAD_RTOL: f32 = 1e-3;

fn fixture_dir() -> PathBuf {
    crate::support::fixture_dir("mvfa")
}

fn token_rows() -> Vec<i64> {
    (0..TOKENS as i64).step_by(7).collect()
}
fn map_idx() -> Vec<i64> {
    (0..SIZE as i64)
        .step_by(7)
        .chain([SIZE as i64 - 1])
        .collect()
}
fn fused_idx() -> Vec<i64> {
    (0..SIZE as i64)
        .step_by(3)
        .chain([SIZE as i64 - 1])
        .collect()
}

/// The reference tensors of phase A.
struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load(name: &str) -> Self {
        Self::at(fixture_dir().join(name))
    }

    fn at(path: PathBuf) -> Self {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { bytes }
    }

    fn tensor<B: Backend, const D: usize>(&self, name: &str, device: &B::Device) -> Tensor<B, D> {
        let st = SafeTensors::deserialize(&self.bytes).expect("fixture is safetensors");
        let view = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture lacks '{name}'"));
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::U8 => view.data().iter().map(|&v| v as f32).collect(),
            other => panic!("unexpected dtype {other:?} for {name}"),
        };
        Tensor::from_data(TensorData::new(values, view.shape().to_vec()), device)
    }

    fn scalar(&self, name: &str) -> f64 {
        let t: Tensor<NB, 1> = self.tensor(name, &Default::default());
        t.into_scalar() as f64
    }
}

/// The stand-in backbone of the fixture script.
#[derive(Module, Debug)]
struct ToyBackbone<B: Backend> {
    mats: Vec<Param<Tensor<B, 2>>>,
    blocks: usize,
}

impl<B: Backend> ToyBackbone<B> {
    fn from_fixture(fx: &Fixture, device: &B::Device) -> Self {
        Self {
            mats: (0..2)
                .map(|b| Param::from_tensor(fx.tensor(&format!("blocks.{b}"), device)))
                .collect(),
            blocks: 8,
        }
    }
}

impl<B: Backend> TappedBackbone<B> for ToyBackbone<B> {
    fn width(&self) -> usize {
        self.mats[0].dims()[0]
    }

    fn default_taps(&self) -> Vec<usize> {
        vec![2, 4, 6, 8]
    }

    /// "Images" are token tensors `[batch, 1, tokens, width]`.
    fn run_tapped(
        &self,
        images: Tensor<B, 4>,
        tap_blocks: &[usize],
        hook: &mut dyn FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    ) {
        let mut x: Tensor<B, 3> = images.squeeze_dim(1);
        for b in 0..self.blocks {
            let a = self.mats[b % self.mats.len()].val();
            let [n, l, w] = x.dims();
            let y = x
                .clone()
                .reshape([n * l, w])
                .matmul(a)
                .reshape([n, l, w])
                .tanh();
            x = x + y;
            if let Some(i) = tap_blocks.iter().position(|&t| t == b + 1) {
                x = hook(i, x);
            }
        }
    }
}

fn cfg() -> MvfaAdaptersConfig {
    MvfaAdaptersConfig::new().with_width(W).with_bottleneck(E)
}

fn max_abs<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar().elem::<f32>()
}

fn rows<B: Backend>(t: Tensor<B, 3>, idx: &[i64], dim: usize) -> Tensor<B, 3> {
    let device = t.device();
    t.select(
        dim,
        Tensor::<B, 1, Int>::from_data(TensorData::new(idx.to_vec(), [idx.len()]), &device),
    )
}

fn sub_map<B: Backend>(t: Tensor<B, 3>, idx: &[i64]) -> Tensor<B, 3> {
    rows(rows(t, idx, 1), idx, 2)
}

/// Checks `err <= TOL`, prints the error and tracks the worst one.
fn check(name: &str, err: f32, worst: &mut f32) {
    let tol = TOL_NOW.with(|t| t.get());
    eprintln!("{name:<28} max-abs {err:.3e}");
    *worst = worst.max(err);
    assert!(err <= tol, "{name}: max-abs error {err:e} > {tol:e}");
}

thread_local! {
    /// The tolerance of [`check`] on this test's thread: [`TOL`], or 1e-3 on the GPU.
    static TOL_NOW: std::cell::Cell<f32> = const { std::cell::Cell::new(TOL) };
    /// The gradient tolerance on this test's thread: [`GRAD_TOL`], or 1e-3 on the GPU.
    static GRAD_TOL_NOW: std::cell::Cell<f32> = const { std::cell::Cell::new(GRAD_TOL) };
}

fn check_rel(name: &str, got: f64, want: f64, worst: &mut f64) {
    let rel = (got - want).abs() / want.abs().max(1e-30);
    eprintln!("{name:<28} {got:.8} vs {want:.8}  rel {rel:.3e}");
    *worst = worst.max(rel);
    assert!(
        rel <= LOSS_RTOL,
        "{name}: {got} vs {want}, relative error {rel:e}"
    );
}

/// Phase A "images": token tensors `[n, 1, tokens, width]` for the stand-in backbone.
fn token_images<B: Backend>(fx: &Fixture, name: &str, device: &B::Device) -> Tensor<B, 4> {
    let t: Tensor<B, 3> = fx.tensor(name, device);
    t.unsqueeze_dim(1)
}

/// The inputs of one parity case.
struct Inputs<B: Backend> {
    /// One query image `[1, ...]`.
    query: Tensor<B, 4>,
    /// Support images for the memory banks `[n, ...]`.
    support: Tensor<B, 4>,
    /// Text features `[E, 2]`.
    text: Tensor<B, 2>,
    /// Soft mask `[1, 240, 240]` in [0, 1].
    mask: Tensor<B, 3>,
    /// Image label `[1]`.
    label: Tensor<B, 1>,
}

fn phase_a_inputs<B: Backend>(device: &B::Device) -> Inputs<B> {
    let fx = Fixture::load("phase_a.safetensors");
    Inputs {
        query: token_images(&fx, "x0", device),
        support: token_images(&fx, "support", device),
        text: fx.tensor("text", device),
        mask: fx.tensor::<B, 3>("mask_u8", device).div_scalar(255.0),
        label: fx.tensor("label", device),
    }
}

fn scorer<B: Backend>(inputs: &Inputs<B>) -> Scorer<B> {
    Scorer::new(
        ScoringConfig::new().with_bank_chunk_rows(100),
        inputs.text.clone(),
    )
}

/// Adapted tokens, taps, mixed streams, text logits, zero- and few-shot scores and maps of
/// both heads against the reference `fx`. Returns the worst max-abs error.
fn check_forward_and_scoring<B: Backend, V: TappedBackbone<B>>(
    phase: &str,
    fx: &Fixture,
    vision: &V,
    adapters: &MvfaAdapters<B>,
    inputs: &Inputs<B>,
) -> f32 {
    let device = Default::default();
    let cfg = MvfaAdaptersConfig::new()
        .with_width(adapters.width().unwrap())
        .with_bottleneck(adapters.bottleneck().unwrap());
    let trace = forward_adapted_traced(
        vision,
        &adapters.seg,
        &adapters.det,
        inputs.query.clone(),
        &cfg,
    )
    .unwrap();
    let tr = token_rows();
    let mut worst = 0f32;
    for l in 0..4 {
        let sel = |t: &Tensor<B, 3>| rows(t.clone(), &tr, 1);
        let want = |n: &str| fx.tensor::<B, 3>(&format!("{n}.{l}"), &device);
        check(
            &format!("{phase} tap {l}"),
            max_abs(sel(&trace.taps[l]), want("taps")),
            &mut worst,
        );
        check(
            &format!("{phase} mixed {l}"),
            max_abs(sel(&trace.mixed[l]), want("mixed")),
            &mut worst,
        );
        check(
            &format!("{phase} seg tokens {l}"),
            max_abs(sel(&trace.features.seg_tokens[l]), want("seg")),
            &mut worst,
        );
        check(
            &format!("{phase} det tokens {l}"),
            max_abs(sel(&trace.features.det_tokens[l]), want("det")),
            &mut worst,
        );
    }
    let scorer = scorer(inputs);
    for l in 0..4 {
        let logits = scorer.text_logits(trace.features.seg_tokens[l].clone());
        // Logits are x100 cosines: compare at the scale of the cosine.
        let err = max_abs(logits, fx.tensor(&format!("logits_seg.{l}"), &device)) / 100.0;
        check(&format!("{phase} seg logits/100 {l}"), err, &mut worst);
    }

    // Memory banks from the support images (all 290 tokens of each).
    let support = forward_adapted(
        vision,
        &adapters.seg,
        &adapters.det,
        inputs.support.clone(),
        &cfg,
    )
    .unwrap();
    let n_support = inputs.support.dims()[0];
    let banks = [
        (
            "seg",
            MemoryBank::new(support.seg_tokens.clone()),
            &trace.features.seg_tokens,
        ),
        (
            "det",
            MemoryBank::new(support.det_tokens.clone()),
            &trace.features.det_tokens,
        ),
    ];
    let (mi, fi) = (map_idx(), fused_idx());
    for (head, bank, tokens) in &banks {
        assert_eq!(bank.rows(), n_support * TOKENS);
        let s = scorer.score_head(tokens, Some(bank));
        let few_map = s.few_map.as_ref().unwrap();
        let few_image = s.few_image.as_ref().unwrap();
        for l in 0..4 {
            let t1 = |n: &str| fx.tensor::<B, 1>(&format!("{n}_{head}.{l}"), &device);
            let t3 = |n: &str| fx.tensor::<B, 3>(&format!("{n}_{head}.{l}"), &device);
            check(
                &format!("{phase} zero score {head} {l}"),
                max_abs(s.zero_image.per_level[l].clone(), t1("zero_score")),
                &mut worst,
            );
            check(
                &format!("{phase} zero map {head} {l}"),
                max_abs(
                    sub_map(s.zero_map.per_level[l].clone(), &mi),
                    t3("zero_map"),
                ),
                &mut worst,
            );
            check(
                &format!("{phase} few map {head} {l}"),
                max_abs(sub_map(few_map.per_level[l].clone(), &mi), t3("few_map")),
                &mut worst,
            );
            check(
                &format!("{phase} few score {head} {l}"),
                max_abs(few_image.per_level[l].clone(), t1("few_score")),
                &mut worst,
            );
        }
        let t1 = |n: &str| fx.tensor::<B, 1>(&format!("{n}_{head}"), &device);
        let t3 = |n: &str| fx.tensor::<B, 3>(&format!("{n}_{head}"), &device);
        check(
            &format!("{phase} zero score {head} fused"),
            max_abs(s.zero_image.fused.clone(), t1("zero_score")),
            &mut worst,
        );
        check(
            &format!("{phase} few score {head} fused"),
            max_abs(few_image.fused.clone(), t1("few_score")),
            &mut worst,
        );
        check(
            &format!("{phase} zero map {head} fused"),
            max_abs(sub_map(s.zero_map.fused.clone(), &fi), t3("zero_map")),
            &mut worst,
        );
        check(
            &format!("{phase} few map {head} fused"),
            max_abs(sub_map(few_map.fused.clone(), &fi), t3("few_map")),
            &mut worst,
        );
    }
    eprintln!("{phase} forward/scoring: worst max-abs {worst:.3e}");
    worst
}

/// Every loss term, the totals, and the adapter weights after one step of each of the two
/// Adam optimisers, against the reference `fx`. `vision` must already be frozen.
fn check_losses_and_adam<AB: AutodiffBackend, V: TappedBackbone<AB> + AutodiffModule<AB>>(
    phase: &str,
    fx: &Fixture,
    vision: &V,
    adapters: MvfaAdapters<AB>,
    inputs: &Inputs<AB>,
) {
    let device = Default::default();
    let cfg = MvfaAdaptersConfig::new()
        .with_width(adapters.width().unwrap())
        .with_bottleneck(adapters.bottleneck().unwrap());
    let feats = forward_adapted(
        vision,
        &adapters.seg,
        &adapters.det,
        inputs.query.clone(),
        &cfg,
    )
    .unwrap();
    let scorer = scorer(inputs);
    let target = LossTarget {
        labels: inputs.label.clone(),
        mask: Some(inputs.mask.clone()),
    };
    let loss = mvfa_loss(&scorer, &feats, &target);
    let cls_target = LossTarget {
        labels: inputs.label.clone(),
        mask: None,
    };
    let cls = mvfa_loss(&scorer, &feats, &cls_target);
    assert!(cls.focal.is_empty() && cls.dice.is_empty());

    let mut worst = 0f64;
    let v = |t: &Tensor<AB, 1>| t.clone().into_scalar().elem::<f64>();
    for l in 0..4 {
        for (term, got) in [
            ("focal", &loss.focal[l]),
            ("dice", &loss.dice[l]),
            ("bce", &loss.bce[l]),
        ] {
            let want = fx.scalar(&format!("loss.{term}.{l}"));
            check_rel(&format!("{phase} {term} {l}"), v(got), want, &mut worst);
        }
    }
    check_rel(
        &format!("{phase} total"),
        v(&loss.total),
        fx.scalar("loss.total"),
        &mut worst,
    );
    check_rel(
        &format!("{phase} total (classification)"),
        v(&cls.total),
        fx.scalar("loss_cls.total"),
        &mut worst,
    );
    eprintln!("{phase} losses: worst relative error {worst:.3e}");

    // One step of each of the two Adam optimisers (spec 5.2).
    let adam = AdamConfig::new()
        .with_beta_1(0.5)
        .with_beta_2(0.999)
        .with_epsilon(1e-8);
    let mut opt_seg = adam.init::<AB, AdapterBank<AB>>();
    let mut opt_det = adam.init::<AB, AdapterBank<AB>>();
    let mut grads = loss.total.backward();
    assert!(
        GradientsParams::from_module(&mut grads, vision).is_empty(),
        "frozen backbone must not get gradients"
    );
    let g_seg = GradientsParams::from_module(&mut grads, &adapters.seg);
    let g_det = GradientsParams::from_module(&mut grads, &adapters.det);
    // Level-4 fc2 only feeds the discarded tail: no gradient in PyTorch either.
    assert_eq!(g_seg.len(), 7);
    assert_eq!(g_det.len(), 7);
    // Gradients of the total loss, relative to the largest one of each tensor.
    let mut grad_mask = std::collections::HashMap::new();
    let mut worst_grad = 0f32;
    for (head, bank, g) in [
        ("seg", &adapters.seg, &g_seg),
        ("det", &adapters.det, &g_det),
    ] {
        for (i, a) in bank.adapters.iter().enumerate() {
            for (fc, lin) in [("fc1", &a.fc1), ("fc2", &a.fc2)] {
                let Some(got) = g.get::<AB::InnerBackend, 2>(lin.weight.id) else {
                    continue;
                };
                let name = format!("{head}.{i}.{fc}");
                let want: Tensor<AB::InnerBackend, 2> = fx.tensor(&format!("grad.{name}"), &device);
                let scale: f32 = want.clone().abs().max().into_scalar().elem();
                let got = got.transpose(); // [out, in] like the reference
                let rel = max_abs(got, want.clone()) / scale;
                eprintln!("{phase} grad {name:<18} max-abs / max|g| {rel:.3e}");
                worst_grad = worst_grad.max(rel);
                let grad_tol = GRAD_TOL_NOW.with(|t| t.get());
                assert!(
                    rel <= grad_tol,
                    "{phase} gradient {name}: {rel:e} > {grad_tol:e}"
                );
                // The step is compared where the gradient is clearly above the noise.
                grad_mask.insert(name, want.abs().greater_elem(GRAD_RTOL * scale));
            }
        }
    }
    eprintln!("{phase} gradients: worst max-abs / max|g| {worst_grad:.3e}");

    let seg = opt_seg.step(1e-3, adapters.seg, g_seg);
    let det = opt_det.step(1e-3, adapters.det, g_det);
    let mut worst = 0f32;
    let mut worst_all = 0f32;
    let mut excluded = 0usize;
    let mut total = 0usize;
    for (head, bank) in [("seg", &seg), ("det", &det)] {
        for (i, a) in bank.adapters.iter().enumerate() {
            for (fc, lin) in [("fc1", &a.fc1), ("fc2", &a.fc2)] {
                let name = format!("{head}.{i}.{fc}");
                // Burn keeps [in, out]; the reference [out, in].
                let got = lin.weight.val().inner().transpose();
                let want: Tensor<AB::InnerBackend, 2> = fx.tensor(&format!("step.{name}"), &device);
                let diff = (got - want).abs();
                total += diff.dims().iter().product::<usize>();
                let all: f32 = diff.clone().max().into_scalar().elem();
                worst_all = worst_all.max(all);
                let err = match grad_mask.get(&name) {
                    Some(keep) => {
                        let n_keep: i64 = keep.clone().int().sum().into_scalar().elem();
                        excluded += diff.dims().iter().product::<usize>() - n_keep as usize;
                        diff.mask_fill(keep.clone().bool_not(), 0.0)
                            .max()
                            .into_scalar()
                            .elem()
                    }
                    None => all, // no gradient: must be unchanged
                };
                check(&format!("{phase} adam {name}"), err, &mut worst);
            }
        }
    }
    eprintln!(
        "{phase} Adam step: max-abs {worst_all:.3e} over all {total} weights; {excluded} weights not compared (gradient inside the f32 noise)"
    );
    eprintln!("{phase} Adam step: worst max-abs {worst:.3e}");
}

#[test]
fn phase_a_forward_scores_and_maps_match_pytorch() {
    let device = Default::default();
    let fx = Fixture::load("phase_a.safetensors");
    let adapters: MvfaAdapters<NB> =
        import_mvfa_pth(&fixture_dir().join("phase_a_adapters.pth"), &cfg(), &device)
            .expect("import the reference .pth");
    let vision = ToyBackbone::<NB>::from_fixture(&fx, &device);
    check_forward_and_scoring("A", &fx, &vision, &adapters, &phase_a_inputs(&device));
}

#[test]
fn phase_a_losses_and_one_adam_step_match_pytorch() {
    let device = Default::default();
    let fx = Fixture::load("phase_a.safetensors");
    let adapters: MvfaAdapters<AB> =
        import_mvfa_pth(&fixture_dir().join("phase_a_adapters.pth"), &cfg(), &device).unwrap();
    let vision = ToyBackbone::<AB>::from_fixture(&fx, &device).no_grad();
    check_losses_and_adam("A", &fx, &vision, adapters, &phase_a_inputs(&device));
}

#[test]
fn frozen_backbone_gets_no_gradients_but_passes_them_through() {
    let device = Default::default();
    let fx = Fixture::load("phase_a.safetensors");
    let adapters: MvfaAdapters<AB> =
        import_mvfa_pth(&fixture_dir().join("phase_a_adapters.pth"), &cfg(), &device).unwrap();
    let scorer = scorer(&phase_a_inputs::<AB>(&device));
    let labels: Tensor<AB, 1> = fx.tensor("label", &device);
    for frozen in [false, true] {
        let vision = ToyBackbone::<AB>::from_fixture(&fx, &device);
        let vision = if frozen { vision.no_grad() } else { vision };
        let feats = forward_adapted(
            &vision,
            &adapters.seg,
            &adapters.det,
            token_images(&fx, "x0", &device),
            &cfg(),
        )
        .unwrap();
        // Only the last level's BCE: its gradient reaches level-1 adapters only through the
        // backbone blocks between the taps.
        let target = LossTarget {
            labels: labels.clone(),
            mask: None,
        };
        let loss = mvfa_loss(&scorer, &feats, &target).bce[3].clone();
        let mut grads = loss.backward();
        let backbone = GradientsParams::from_module(&mut grads, &vision);
        assert_eq!(backbone.is_empty(), frozen, "frozen = {frozen}");
        let g = GradientsParams::from_module(&mut grads, &adapters.seg);
        let fc2_0 = g
            .get::<NB, 2>(adapters.seg.adapters[0].fc2.weight.id)
            .expect("grad through stream");
        let norm: f32 = fc2_0.abs().sum().into_scalar();
        assert!(norm > 0.0);
    }
}

#[test]
fn batched_forward_equals_single_image_forward() {
    let device = Default::default();
    let fx = Fixture::load("phase_a.safetensors");
    let adapters: MvfaAdapters<NB> =
        import_mvfa_pth(&fixture_dir().join("phase_a_adapters.pth"), &cfg(), &device).unwrap();
    let vision = ToyBackbone::<NB>::from_fixture(&fx, &device);
    let x0 = token_images::<NB>(&fx, "x0", &device);
    let sup = token_images::<NB>(&fx, "support", &device);
    let batch = Tensor::cat(
        vec![sup.clone().narrow(0, 1, 1), x0.clone(), sup.narrow(0, 0, 1)],
        0,
    );
    let all = adapters.forward_adapted(&vision, batch, &cfg()).unwrap();
    let one = adapters.forward_adapted(&vision, x0, &cfg()).unwrap();
    for l in 0..4 {
        let e1 = max_abs(
            all.seg_tokens[l].clone().narrow(0, 1, 1),
            one.seg_tokens[l].clone(),
        );
        let e2 = max_abs(
            all.det_tokens[l].clone().narrow(0, 1, 1),
            one.det_tokens[l].clone(),
        );
        assert!(e1 < 1e-5 && e2 < 1e-5, "level {l}: {e1} {e2}");
    }
}

#[test]
fn level_mismatch_is_an_error_not_a_panic() {
    let device = Default::default();
    let fx = Fixture::load("phase_a.safetensors");
    let vision = ToyBackbone::<NB>::from_fixture(&fx, &device);
    let three = cfg().with_levels(3).init::<NB>(&device);
    let err = three
        .forward_adapted(&vision, token_images(&fx, "x0", &device), &cfg())
        .unwrap_err();
    assert!(err.to_string().contains("3 seg / 3 det levels"), "{err}");
    let wide = cfg().with_width(65).init::<NB>(&device);
    let err = wide
        .forward_adapted(&vision, token_images(&fx, "x0", &device), &cfg())
        .unwrap_err();
    assert!(err.to_string().contains("width 65"), "{err}");
}

// ---- Phase B: the CLIP fixture tower of tests/fixtures/clip --------------------------------

fn clip_fixtures() -> PathBuf {
    crate::support::fixture_dir("clip")
}

/// The fixture CLIP vision tower (open_clip layout, 8 blocks, width 32, 240 px, erf GELU).
fn clip_vision<B: Backend>(device: &B::Device) -> VisionTransformer<B> {
    let path = clip_fixtures().join("open_clip/open_clip_model.safetensors");
    let (vision, report) = load_clip_vision::<B>(&path, &LoadOptions::default(), device)
        .expect("load the CLIP fixture tower");
    assert!(report.is_complete(), "{}", report.problems());
    vision
}

fn phase_b_cfg() -> MvfaAdaptersConfig {
    MvfaAdaptersConfig::new().with_width(32).with_bottleneck(16)
}

/// The CLIP fixture image, its left-right and top-bottom mirrors as support shots, the
/// fixture model's MVFA text features for "Brain", and phase A's mask.
fn phase_b_inputs<B: Backend>(device: &B::Device) -> Inputs<B> {
    let clip = Fixture::at(clip_fixtures().join("reference.safetensors"));
    let image: Tensor<B, 4> = clip.tensor::<B, 4>("image_u8", device).div_scalar(255.0);
    let support = Tensor::cat(vec![image.clone().flip([3]), image.clone().flip([2])], 0);
    let a = Fixture::load("phase_a.safetensors");
    Inputs {
        query: image,
        support,
        text: clip.tensor("text_features_0", device),
        mask: a.tensor::<B, 3>("mask_u8", device).div_scalar(255.0),
        label: a.tensor("label", device),
    }
}

#[test]
fn phase_b_clip_tower_forward_scores_and_maps_match_pytorch() {
    let device = Default::default();
    let fx = Fixture::load("phase_b.safetensors");
    let vision = clip_vision::<NB>(&device);
    assert_eq!(vision.default_taps(), [2, 4, 6, 8]);
    let adapters: MvfaAdapters<NB> = import_mvfa_pth(
        &fixture_dir().join("phase_b_adapters.pth"),
        &phase_b_cfg(),
        &device,
    )
    .unwrap();
    check_forward_and_scoring("B", &fx, &vision, &adapters, &phase_b_inputs(&device));
}

#[test]
fn phase_b_clip_tower_losses_and_one_adam_step_match_pytorch() {
    let device = Default::default();
    let fx = Fixture::load("phase_b.safetensors");
    let vision = clip_vision::<AB>(&device).no_grad();
    let adapters: MvfaAdapters<AB> = import_mvfa_pth(
        &fixture_dir().join("phase_b_adapters.pth"),
        &phase_b_cfg(),
        &device,
    )
    .unwrap();
    check_losses_and_adam("B", &fx, &vision, adapters, &phase_b_inputs(&device));
}

/// Phases A and B on the CUDA backend (feature `cuda`) against the same PyTorch fixtures, within
/// 1e-3 (the CPU path is held to 1e-4 above); ignored by default, fails without an NVIDIA
/// driver. Run by tools/cuda_check.sh.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU and its driver (libcuda.so.1); run by tools/cuda_check.sh"]
fn cuda_mvfa_parity() {
    type Cuda = mvfa_studio::backend::CudaBackend;
    type CudaAd = Autodiff<Cuda>;
    let info = mvfa_studio::backend::probe(false);
    assert!(
        info.choice != mvfa_studio::backend::DeviceChoice::Cpu,
        "needs an NVIDIA GPU: {}",
        info.fallback_reason.unwrap_or_default()
    );
    TOL_NOW.with(|t| t.set(1e-3));
    GRAD_TOL_NOW.with(|t| t.set(1e-3));
    let device = burn::backend::cuda::CudaDevice::new(0);
    let fa = Fixture::load("phase_a.safetensors");
    let pth_a = fixture_dir().join("phase_a_adapters.pth");
    let adapters: MvfaAdapters<Cuda> = import_mvfa_pth(&pth_a, &cfg(), &device).unwrap();
    let vision = ToyBackbone::<Cuda>::from_fixture(&fa, &device);
    check_forward_and_scoring("A", &fa, &vision, &adapters, &phase_a_inputs(&device));
    let adapters: MvfaAdapters<CudaAd> = import_mvfa_pth(&pth_a, &cfg(), &device).unwrap();
    let vision = ToyBackbone::<CudaAd>::from_fixture(&fa, &device).no_grad();
    check_losses_and_adam("A", &fa, &vision, adapters, &phase_a_inputs(&device));

    let fb = Fixture::load("phase_b.safetensors");
    let pth_b = fixture_dir().join("phase_b_adapters.pth");
    let adapters: MvfaAdapters<Cuda> = import_mvfa_pth(&pth_b, &phase_b_cfg(), &device).unwrap();
    let vision = clip_vision::<Cuda>(&device);
    check_forward_and_scoring("B", &fb, &vision, &adapters, &phase_b_inputs(&device));
    let adapters: MvfaAdapters<CudaAd> = import_mvfa_pth(&pth_b, &phase_b_cfg(), &device).unwrap();
    let vision = clip_vision::<CudaAd>(&device).no_grad();
    check_losses_and_adam("B", &fb, &vision, adapters, &phase_b_inputs(&device));
}
