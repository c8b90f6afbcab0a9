//! Parity of the MVFA adapters, scoring, losses and one Adam step with the PyTorch reference
//! written by `tools/parity/make_mvfa_fixtures.py` (tests/fixtures/mvfa/phase_a.*).
//!
//! Phase A uses a small stand-in backbone (8 residual blocks `x <- x + tanh(x @ A_{b mod 2})`,
//! taps after blocks 2, 4, 6, 8, width 64, bottleneck 32, 290 tokens, maps at 240) so that the
//! hook chaining and the gradient flow through the stream are the real ones. Tolerances:
//! 1e-4 max-abs for tensors, 1e-5 relative for loss terms. Run with `--nocapture` to see the
//! measured errors.

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use mvfa_studio::model::mvfa::adapter::{
    AdapterBank, MvfaAdapters, MvfaAdaptersConfig, TappedBackbone, forward_adapted,
    forward_adapted_traced,
};
use mvfa_studio::model::mvfa::losses::{LossTarget, mvfa_loss};
use mvfa_studio::model::mvfa::scoring::{MemoryBank, Scorer, ScoringConfig};
use mvfa_studio::weights::adapters::import_mvfa_pth;
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

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mvfa")
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
        let path = fixture_dir().join(name);
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

fn scorer<B: Backend>(fx: &Fixture, device: &B::Device) -> Scorer<B> {
    Scorer::new(
        ScoringConfig::new().with_bank_chunk_rows(100),
        fx.tensor("text", device),
    )
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

/// Checks `max_abs <= TOL`, prints the error and returns it.
fn check(name: &str, err: f32, worst: &mut f32) {
    eprintln!("{name:<28} max-abs {err:.3e}");
    *worst = worst.max(err);
    assert!(err <= TOL, "{name}: max-abs error {err:e} > {TOL:e}");
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

fn images<B: Backend>(fx: &Fixture, name: &str, device: &B::Device) -> Tensor<B, 4> {
    let t: Tensor<B, 3> = fx.tensor(name, device);
    t.unsqueeze_dim(1)
}

#[test]
fn phase_a_forward_scores_and_maps_match_pytorch() {
    let device = Default::default();
    let fx = Fixture::load("phase_a.safetensors");
    let adapters: MvfaAdapters<NB> =
        import_mvfa_pth(&fixture_dir().join("phase_a_adapters.pth"), &cfg(), &device)
            .expect("import the reference .pth");
    let vision = ToyBackbone::<NB>::from_fixture(&fx, &device);
    let trace = forward_adapted_traced(
        &vision,
        &adapters.seg,
        &adapters.det,
        images(&fx, "x0", &device),
        &cfg(),
    )
    .unwrap();
    let tr = token_rows();
    let mut worst = 0f32;
    for l in 0..4 {
        let sel = |t: &Tensor<NB, 3>| rows(t.clone(), &tr, 1);
        check(
            &format!("tap {l}"),
            max_abs(
                sel(&trace.taps[l]),
                fx.tensor(&format!("taps.{l}"), &device),
            ),
            &mut worst,
        );
        check(
            &format!("mixed {l}"),
            max_abs(
                sel(&trace.mixed[l]),
                fx.tensor(&format!("mixed.{l}"), &device),
            ),
            &mut worst,
        );
        check(
            &format!("seg tokens {l}"),
            max_abs(
                sel(&trace.features.seg_tokens[l]),
                fx.tensor(&format!("seg.{l}"), &device),
            ),
            &mut worst,
        );
        check(
            &format!("det tokens {l}"),
            max_abs(
                sel(&trace.features.det_tokens[l]),
                fx.tensor(&format!("det.{l}"), &device),
            ),
            &mut worst,
        );
    }
    let scorer = scorer::<NB>(&fx, &device);
    for l in 0..4 {
        let logits = scorer.text_logits(trace.features.seg_tokens[l].clone());
        // Logits are x100 cosines: compare at the scale of the cosine.
        let err = max_abs(logits, fx.tensor(&format!("logits_seg.{l}"), &device)) / 100.0;
        check(&format!("seg logits/100 {l}"), err, &mut worst);
    }

    // Memory banks from the support "images" (all 290 tokens of each).
    let support = forward_adapted(
        &vision,
        &adapters.seg,
        &adapters.det,
        images(&fx, "support", &device),
        &cfg(),
    )
    .unwrap();
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
        assert_eq!(bank.rows(), 2 * TOKENS);
        let s = scorer.score_head(tokens, Some(bank));
        for l in 0..4 {
            let t = |n: &str| fx.tensor::<NB, 1>(&format!("{n}_{head}.{l}"), &device);
            check(
                &format!("zero score {head} {l}"),
                max_abs(s.zero_image.per_level[l].clone(), t("zero_score")),
                &mut worst,
            );
            check(
                &format!("zero map {head} {l}"),
                max_abs(
                    sub_map(s.zero_map.per_level[l].clone(), &mi),
                    fx.tensor(&format!("zero_map_{head}.{l}"), &device),
                ),
                &mut worst,
            );
            let few = s.few_map.as_ref().unwrap();
            check(
                &format!("few map {head} {l}"),
                max_abs(
                    sub_map(few.per_level[l].clone(), &mi),
                    fx.tensor(&format!("few_map_{head}.{l}"), &device),
                ),
                &mut worst,
            );
            check(
                &format!("few score {head} {l}"),
                max_abs(
                    s.few_image.as_ref().unwrap().per_level[l].clone(),
                    t("few_score"),
                ),
                &mut worst,
            );
        }
        let t1 = |n: &str| fx.tensor::<NB, 1>(n, &device);
        check(
            &format!("zero score {head} fused"),
            max_abs(
                s.zero_image.fused.clone(),
                t1(&format!("zero_score_{head}")),
            ),
            &mut worst,
        );
        check(
            &format!("few score {head} fused"),
            max_abs(
                s.few_image.as_ref().unwrap().fused.clone(),
                t1(&format!("few_score_{head}")),
            ),
            &mut worst,
        );
        check(
            &format!("zero map {head} fused"),
            max_abs(
                sub_map(s.zero_map.fused.clone(), &fi),
                fx.tensor(&format!("zero_map_{head}"), &device),
            ),
            &mut worst,
        );
        check(
            &format!("few map {head} fused"),
            max_abs(
                sub_map(s.few_map.as_ref().unwrap().fused.clone(), &fi),
                fx.tensor(&format!("few_map_{head}"), &device),
            ),
            &mut worst,
        );
    }
    eprintln!("phase A forward/scoring: worst max-abs {worst:.3e}");
}

#[test]
fn phase_a_losses_and_one_adam_step_match_pytorch() {
    let device = Default::default();
    let fx = Fixture::load("phase_a.safetensors");
    let adapters: MvfaAdapters<AB> =
        import_mvfa_pth(&fixture_dir().join("phase_a_adapters.pth"), &cfg(), &device).unwrap();
    let vision = ToyBackbone::<AB>::from_fixture(&fx, &device).no_grad();
    let feats = forward_adapted(
        &vision,
        &adapters.seg,
        &adapters.det,
        images(&fx, "x0", &device),
        &cfg(),
    )
    .unwrap();
    let scorer = scorer::<AB>(&fx, &device);
    let mask: Tensor<AB, 3> = fx.tensor::<AB, 3>("mask_u8", &device).div_scalar(255.0);
    let labels: Tensor<AB, 1> = fx.tensor("label", &device);
    let loss = mvfa_loss(
        &scorer,
        &feats,
        &LossTarget {
            labels: labels.clone(),
            mask: Some(mask),
        },
    );
    let cls = mvfa_loss(&scorer, &feats, &LossTarget { labels, mask: None });
    assert!(cls.focal.is_empty() && cls.dice.is_empty());

    let mut worst = 0f64;
    let v = |t: &Tensor<AB, 1>| t.clone().into_scalar() as f64;
    for l in 0..4 {
        check_rel(
            &format!("focal {l}"),
            v(&loss.focal[l]),
            fx.scalar(&format!("loss.focal.{l}")),
            &mut worst,
        );
        check_rel(
            &format!("dice {l}"),
            v(&loss.dice[l]),
            fx.scalar(&format!("loss.dice.{l}")),
            &mut worst,
        );
        check_rel(
            &format!("bce {l}"),
            v(&loss.bce[l]),
            fx.scalar(&format!("loss.bce.{l}")),
            &mut worst,
        );
    }
    check_rel("total", v(&loss.total), fx.scalar("loss.total"), &mut worst);
    check_rel(
        "total (classification)",
        v(&cls.total),
        fx.scalar("loss_cls.total"),
        &mut worst,
    );
    eprintln!("phase A losses: worst relative error {worst:.3e}");

    // One step of each of the two Adam optimisers (spec 5.2).
    let adam = AdamConfig::new()
        .with_beta_1(0.5)
        .with_beta_2(0.999)
        .with_epsilon(1e-8);
    let mut opt_seg = adam.init::<AB, AdapterBank<AB>>();
    let mut opt_det = adam.init::<AB, AdapterBank<AB>>();
    let mut grads = loss.total.backward();
    assert!(
        GradientsParams::from_module(&mut grads, &vision).is_empty(),
        "frozen backbone must not get gradients"
    );
    let g_seg = GradientsParams::from_module(&mut grads, &adapters.seg);
    let g_det = GradientsParams::from_module(&mut grads, &adapters.det);
    // Level-4 fc2 only feeds the discarded tail: no gradient in PyTorch either.
    assert_eq!(g_seg.len(), 7);
    assert_eq!(g_det.len(), 7);
    let seg = opt_seg.step(1e-3, adapters.seg, g_seg);
    let det = opt_det.step(1e-3, adapters.det, g_det);
    let mut worst = 0f32;
    for (head, bank) in [("seg", &seg), ("det", &det)] {
        for (i, a) in bank.adapters.iter().enumerate() {
            for (fc, lin) in [("fc1", &a.fc1), ("fc2", &a.fc2)] {
                // Burn keeps [in, out]; the reference [out, in].
                let got = lin.weight.val().inner().transpose();
                let want: Tensor<NB, 2> = fx.tensor(&format!("step.{head}.{i}.{fc}"), &device);
                let err = max_abs(got, want);
                eprintln!("adam {head}.{i}.{fc:<14} max-abs {err:.3e}");
                worst = worst.max(err);
                assert!(err <= TOL, "{head}.{i}.{fc} after Adam: {err:e}");
            }
        }
    }
    eprintln!("phase A Adam step: worst max-abs {worst:.3e}");
}

#[test]
fn frozen_backbone_gets_no_gradients_but_passes_them_through() {
    let device = Default::default();
    let fx = Fixture::load("phase_a.safetensors");
    let adapters: MvfaAdapters<AB> =
        import_mvfa_pth(&fixture_dir().join("phase_a_adapters.pth"), &cfg(), &device).unwrap();
    let scorer = scorer::<AB>(&fx, &device);
    let labels: Tensor<AB, 1> = fx.tensor("label", &device);
    for frozen in [false, true] {
        let vision = ToyBackbone::<AB>::from_fixture(&fx, &device);
        let vision = if frozen { vision.no_grad() } else { vision };
        let feats = forward_adapted(
            &vision,
            &adapters.seg,
            &adapters.det,
            images(&fx, "x0", &device),
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
    let x0 = images::<NB>(&fx, "x0", &device);
    let sup = images::<NB>(&fx, "support", &device);
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
        .forward_adapted(&vision, images(&fx, "x0", &device), &cfg())
        .unwrap_err();
    assert!(err.to_string().contains("3 seg / 3 det levels"), "{err}");
    let wide = cfg().with_width(65).init::<NB>(&device);
    let err = wide
        .forward_adapted(&vision, images(&fx, "x0", &device), &cfg())
        .unwrap_err();
    assert!(err.to_string().contains("width 65"), "{err}");
}
