//! MVFA training losses (spec 5.1), reproduced literally, quirks included:
//! - focal loss (gamma 2, alpha 1) on the 2-channel softmax map with the one-hot target
//!   clamped to [1e-5, 1 - 1e-5] and `pt = sum_c onehot_c P_c + 1e-5`, mean over pixels;
//! - dice loss (smooth 1) on the abnormal channel, sums over the whole map per image, mean
//!   over the batch;
//! - BCE-with-logits applied to the *probability* `s_l` (mean patch p_abn of the det head):
//!   the reference treats it as a logit, so the loss never reaches 0;
//! - every term is computed per level and the levels are summed.
//!
//! Batches: focal averages over all pixels of all images, dice and BCE average per-image
//! values over the batch, which is what the reference modules do for any batch size (the
//! reference only ever uses batch 1).
//!
//! Everything is tensor ops on the device, so it runs under `Autodiff<_>` on any backend. Map
//! sums go row by row ([`sum_map`]) to stay as accurate as PyTorch's pairwise sums in f32.

use burn::prelude::*;

use super::adapter::AdaptedFeatures;
use super::scoring::{Scorer, sum_map};

/// Smoothing of the focal loss's one-hot target and of `pt` (the reference's `smooth`).
pub const FOCAL_SMOOTH: f64 = 1e-5;
/// Focal exponent.
pub const FOCAL_GAMMA: i32 = 2;
/// Dice smoothing.
pub const DICE_SMOOTH: f64 = 1.0;

/// Focal loss of `probs [batch, 2, H, W]` (softmax over dim 1) against a binary
/// `mask [batch, H, W]` (1 = abnormal). Returns the mean over all pixels, `[1]`.
pub fn focal_loss<B: Backend>(probs: Tensor<B, 4>, mask: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, _, h, w] = probs.dims();
    let p_norm = probs
        .clone()
        .slice([0..b, 0..1, 0..h, 0..w])
        .squeeze_dim::<3>(1);
    let p_abn = probs.slice([0..b, 1..2, 0..h, 0..w]).squeeze_dim::<3>(1);
    let lo = FOCAL_SMOOTH;
    let hi = 1.0 - FOCAL_SMOOTH;
    let onehot_abn = mask.clone().clamp(lo, hi);
    let onehot_norm = mask.neg().add_scalar(1.0).clamp(lo, hi);
    let pt = (onehot_norm * p_norm + onehot_abn * p_abn).add_scalar(FOCAL_SMOOTH);
    let loss = pt
        .clone()
        .neg()
        .add_scalar(1.0)
        .powi_scalar(FOCAL_GAMMA)
        .mul(pt.log())
        .neg();
    let n = (b * h * w) as f64;
    sum_map(loss).sum().div_scalar(n)
}

/// Dice loss of `p_abn [batch, H, W]` against a binary `mask [batch, H, W]`:
/// `1 - mean_batch (2 sum(p m) + 1) / (sum p + sum m + 1)`, `[1]`.
pub fn dice_loss<B: Backend>(p_abn: Tensor<B, 3>, mask: Tensor<B, 3>) -> Tensor<B, 1> {
    let inter = sum_map(p_abn.clone() * mask.clone());
    let dice = inter.mul_scalar(2.0).add_scalar(DICE_SMOOTH)
        / (sum_map(p_abn) + sum_map(mask)).add_scalar(DICE_SMOOTH);
    dice.mean().neg().add_scalar(1.0)
}

/// PyTorch `BCEWithLogitsLoss` (mean over the batch) of `logits [batch]` against
/// `labels [batch]` in {0, 1}: `max(x, 0) - x y + ln(1 + exp(-|x|))`, `[1]`.
pub fn bce_with_logits<B: Backend>(logits: Tensor<B, 1>, labels: Tensor<B, 1>) -> Tensor<B, 1> {
    let softplus_neg_abs = logits.clone().abs().neg().exp().log1p();
    (logits.clone().clamp_min(0.0) - logits * labels + softplus_neg_abs).mean()
}

/// What one training batch is scored against.
#[derive(Debug, Clone)]
pub struct LossTarget<B: Backend> {
    /// Image labels `[batch]`: 1 abnormal, 0 normal.
    pub labels: Tensor<B, 1>,
    /// Ground-truth masks `[batch, S, S]` at model resolution for datasets with masks (all
    /// zero for normal images), `None` for classification-only datasets. Values are
    /// binarised with `> 0.5` here, like the reference training loop does with its
    /// (augmented, soft-edged) masks.
    pub mask: Option<Tensor<B, 3>>,
}

/// The loss terms of one batch, per level, and their total.
#[derive(Debug, Clone)]
pub struct MvfaLoss<B: Backend> {
    /// Focal loss per level (seg head); empty for classification-only targets.
    pub focal: Vec<Tensor<B, 1>>,
    /// Dice loss per level (seg head); empty for classification-only targets.
    pub dice: Vec<Tensor<B, 1>>,
    /// BCE-with-logits of `s_l` per level (det head).
    pub bce: Vec<Tensor<B, 1>>,
    /// `sum_l (focal_l + dice_l) + sum_l bce_l`, or `sum_l bce_l` without masks; `[1]`.
    pub total: Tensor<B, 1>,
}

/// The MVFA training loss for one batch of adapted features (spec 5.1): focal + dice on the
/// seg head's pixel probabilities when masks are given, BCE on the det head's image scores
/// always, summed over levels.
pub fn mvfa_loss<B: Backend>(
    scorer: &Scorer<B>,
    features: &AdaptedFeatures<B>,
    target: &LossTarget<B>,
) -> MvfaLoss<B> {
    let bce: Vec<_> = features
        .det_tokens
        .iter()
        .map(|t| {
            bce_with_logits(
                scorer.zero_shot_level_score(t.clone()),
                target.labels.clone(),
            )
        })
        .collect();
    let mut focal = Vec::new();
    let mut dice = Vec::new();
    if let Some(mask) = &target.mask {
        let mask = mask.clone().greater_elem(0.5).float();
        for t in &features.seg_tokens {
            let probs = scorer.pixel_probabilities(t.clone());
            let [b, _, h, w] = probs.dims();
            let p_abn = probs
                .clone()
                .slice([0..b, 1..2, 0..h, 0..w])
                .squeeze_dim::<3>(1);
            focal.push(focal_loss(probs, mask.clone()));
            dice.push(dice_loss(p_abn, mask.clone()));
        }
    }
    let total = focal
        .iter()
        .zip(&dice)
        .map(|(f, d)| f.clone() + d.clone())
        .chain(bce.iter().cloned())
        .reduce(|a, b| a + b)
        .expect("at least one level");
    MvfaLoss {
        focal,
        dice,
        bce,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn scalar(t: Tensor<B, 1>) -> f64 {
        t.into_scalar() as f64
    }

    #[test]
    fn focal_matches_hand_computation() {
        let device = Default::default();
        // Two pixels: p_abn = 0.9 (mask 1), p_abn = 0.3 (mask 0).
        let probs = Tensor::<B, 4>::from_floats([[[[0.1, 0.7]], [[0.9, 0.3]]]], &device);
        let mask = Tensor::<B, 3>::from_floats([[[1.0, 0.0]]], &device);
        let e = 1e-5;
        let pt1 = (1.0 - e) * 0.9 + e * 0.1 + e;
        let pt2 = (1.0 - e) * 0.7 + e * 0.3 + e;
        let f = |pt: f64| -(1.0 - pt).powi(2) * pt.ln();
        let want = (f(pt1) + f(pt2)) / 2.0;
        let got = scalar(focal_loss(probs, mask));
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
    }

    #[test]
    fn dice_matches_hand_computation_and_averages_batch() {
        let device = Default::default();
        let p = Tensor::<B, 3>::from_floats([[[0.5, 0.25]], [[1.0, 0.0]]], &device);
        let m = Tensor::<B, 3>::from_floats([[[1.0, 0.0]], [[0.0, 0.0]]], &device);
        let d1 = (2.0 * 0.5 + 1.0) / (0.75 + 1.0 + 1.0);
        let d2 = 1.0 / (1.0 + 0.0 + 1.0);
        let want = 1.0 - (d1 + d2) / 2.0;
        let got = scalar(dice_loss(p, m));
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
    }

    #[test]
    fn bce_treats_probability_as_logit() {
        let device = Default::default();
        let x = Tensor::<B, 1>::from_floats([0.3, 0.8], &device);
        let y = Tensor::<B, 1>::from_floats([1.0, 0.0], &device);
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let want = (-(sig(0.3)).ln() - (1.0 - sig(0.8)).ln()) / 2.0;
        let got = scalar(bce_with_logits(x, y));
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
        // The quirk: even a perfect "probability" of 1 for a positive keeps a loss > 0.3.
        let one = bce_with_logits(
            Tensor::<B, 1>::from_floats([1.0], &device),
            Tensor::<B, 1>::from_floats([1.0], &device),
        );
        assert!(scalar(one) > 0.31);
    }

    /// Training with batches: a batch's loss, and so its gradients, is the mean of the
    /// single-image ones (what batch 1 computes), so batch size only changes how many images
    /// one Adam step averages over.
    #[test]
    fn batch_loss_and_gradients_are_the_mean_of_single_images() {
        use crate::model::mvfa::adapter::AdaptedFeatures;
        use crate::model::mvfa::scoring::{Scorer, ScoringConfig};
        use burn::tensor::Distribution;
        type AD = burn::backend::Autodiff<B>;
        let device = Default::default();
        let text = Tensor::<AD, 2>::random([6, 2], Distribution::Normal(0.0, 1.0), &device);
        let scorer = Scorer::new(
            ScoringConfig::new().with_grid_size(3).with_image_size(7),
            text,
        );
        let tokens = |seed: f64| {
            Tensor::<B, 3>::random([2, 10, 6], Distribution::Normal(seed, 1.0), &device)
        };
        let (seg, det) = ([tokens(0.1), tokens(0.2)], [tokens(-0.1), tokens(0.3)]);
        let mut mask = vec![0.0f32; 2 * 7 * 7];
        mask[49 + 10..49 + 20].fill(1.0);
        let mask = Tensor::<B, 3>::from_data(TensorData::new(mask, [2, 7, 7]), &device);
        let labels = Tensor::<B, 1>::from_floats([0.0, 1.0], &device);
        // Loss and the gradient of the first seg level's tokens, for images `range`.
        let run = |range: std::ops::Range<usize>| {
            let pick = |t: &Tensor<B, 3>| {
                Tensor::<AD, 3>::from_inner(t.clone().slice(range.clone())).require_grad()
            };
            let features = AdaptedFeatures {
                seg_tokens: seg.iter().map(pick).collect(),
                det_tokens: det.iter().map(pick).collect(),
            };
            let target = LossTarget {
                labels: Tensor::from_inner(labels.clone().slice(range.clone())),
                mask: Some(Tensor::from_inner(mask.clone().slice(range.clone()))),
            };
            let loss = mvfa_loss(&scorer, &features, &target).total;
            let value = loss.clone().into_scalar().to_f64();
            let grads = loss.backward();
            (value, features.seg_tokens[0].grad(&grads).unwrap())
        };
        let (both, grad_both) = run(0..2);
        let (first, grad_first) = run(0..1);
        let (second, grad_second) = run(1..2);
        let mean = (first + second) / 2.0;
        assert!((both - mean).abs() <= 1e-6 * mean.abs(), "{both} vs {mean}");
        let singles = Tensor::cat(vec![grad_first, grad_second], 0).div_scalar(2.0);
        grad_both.into_data().assert_approx_eq::<f32>(
            &singles.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }
}
