//! Does context across slices help? Measured on fresh draws of synthetic volumes whose lesions
//! span several slices ([`generate_volume`]).
//!
//! One seed draws a small random CLIP-like tower ([`fit_check::tiny_model`]), fits a detector
//! without fine-tuning (memory bank of normal slices, calibration) from slices of volumes of
//! their own, and scores held-out volumes, half of them with a lesion. For each
//! [`SliceContext`] it reports:
//! - slice image AUC: the calibrated image score of each slice against whether the slice shows
//!   lesion;
//! - pixel AUC: the calibrated fused map against the lesion mask, over every slice;
//! - series AUC: the series score of each volume (max, and top-3 mean) against whether the
//!   volume holds a lesion.
//!
//! `mvfa-dev slice-context` prints the table over seeds; the README quotes it.
use std::sync::atomic::AtomicBool;

use burn::backend::{Autodiff, NdArray};

use super::auc::{PixelAucAccumulator, roc_auc};
use super::fit_check::{SIZE, fit_model, settings, tiny_model, to_shot};
use crate::io::model_input::batch_tensor;
use crate::model::mvfa::detector::ImageResult;
use crate::train::fit::{FitOutcome, Shots, fit, materialize};
use crate::train::synthetic::{SyntheticVolume, generate_volume};
use crate::workflow::{SeriesRule, SliceContext, series_score};

type B = NdArray<f32>;

/// The contexts compared: off, and each mix at weight 0.5.
pub const CONTEXTS: [SliceContext; 3] = [
    SliceContext::Off,
    SliceContext::WeightedMax { weight: 0.5 },
    SliceContext::WeightedMean { weight: 0.5 },
];

/// The size of one draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VolumeTask {
    /// Held-out volumes (half with a lesion).
    pub volumes: usize,
    /// Slices per volume.
    pub slices: usize,
    /// Normal and abnormal shot slices (each from a volume of its own).
    pub shots: usize,
}

impl Default for VolumeTask {
    fn default() -> Self {
        Self {
            volumes: 8,
            slices: 12,
            shots: 4,
        }
    }
}

/// The AUCs of one context on one draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextAucs {
    /// The context.
    pub context: SliceContext,
    /// Slice image AUC.
    pub image: f64,
    /// Pixel AUC.
    pub pixel: f64,
    /// Series AUC with the series score as the maximum of its slices.
    pub series_max: f64,
    /// Series AUC with the series score as the mean of its top 3 slices.
    pub series_top_mean: f64,
    /// Share of the slices of lesion-free volumes at or above the calibrated threshold (which
    /// was set for single slices to flag at most [`crate::model::mvfa::calibration::DEFAULT_FPR`]).
    pub normal_flagged: f64,
}

/// One seed's measurement, one entry per [`CONTEXTS`].
#[derive(Debug, Clone, PartialEq)]
pub struct SeedContexts {
    /// The seed of the draw.
    pub seed: u64,
    /// AUCs per context.
    pub contexts: Vec<ContextAucs>,
}

/// Draws the task of `seed`, fits, scores and measures every context.
pub fn measure_seed(seed: u64, task: VolumeTask) -> SeedContexts {
    let device = Default::default();
    let (vision, text) = tiny_model(seed, &device);
    let base = seed.wrapping_mul(10_000);
    let volume = |offset: u64, abnormal: bool| -> SyntheticVolume {
        generate_volume(base + offset, task.slices, SIZE, abnormal).expect("SIZE is small")
    };
    // Shots: a middle slice of a normal volume, the lesion's middle slice of an abnormal one.
    let normal = (0..task.shots)
        .map(|i| to_shot(&volume(100 + i as u64, false).slices[task.slices / 2]))
        .collect();
    let abnormal = (0..task.shots)
        .map(|i| {
            let v = volume(200 + i as u64, true);
            let shows: Vec<_> = v.slices.iter().filter(|s| s.abnormal).collect();
            to_shot(shows[shows.len() / 2])
        })
        .collect();
    let shots = Shots {
        normal,
        abnormal,
        held_out: Vec::new(),
    };
    let adapters = materialize(fit_model(seed).adapters.init::<B>(&device));
    let outcome = fit::<Autodiff<B>>(
        vision,
        adapters,
        text,
        &shots,
        &fit_model(seed),
        &settings(None, seed),
        |_| {},
        &AtomicBool::new(false),
        None,
    )
    .expect("fit");
    let FitOutcome::Fitted { detector, .. } = outcome else {
        unreachable!("never cancelled")
    };
    let test: Vec<SyntheticVolume> = (0..task.volumes)
        .map(|i| volume(300 + i as u64, i % 2 == 1))
        .collect();
    let results: Vec<Vec<ImageResult>> = test
        .iter()
        .map(|v| {
            let inputs: Vec<_> = v.slices.iter().map(to_shot).collect();
            let views: Vec<&[f32]> = inputs.iter().map(|s| s.image.as_slice()).collect();
            detector
                .score(batch_tensor::<B>(&views, [3, SIZE, SIZE], &device).expect("batch"))
                .expect("scoring")
        })
        .collect();
    let threshold = detector
        .calibration()
        .map_or(f32::INFINITY, |c| c.threshold);
    SeedContexts {
        seed,
        contexts: CONTEXTS
            .iter()
            .map(|&context| measure_context(context, &test, &results, threshold))
            .collect(),
    }
}

/// The AUCs of `context` over scored volumes.
pub fn measure_context(
    context: SliceContext,
    volumes: &[SyntheticVolume],
    results: &[Vec<ImageResult>],
    threshold: f32,
) -> ContextAucs {
    let mut normal_slices = 0usize;
    let mut normal_flagged = 0usize;
    let mut slice_scores = Vec::new();
    let mut slice_labels = Vec::new();
    let mut pixels = PixelAucAccumulator::new();
    let mut series_max = Vec::new();
    let mut series_top = Vec::new();
    for (volume, scored) in volumes.iter().zip(results) {
        let own: Vec<Option<f32>> = scored.iter().map(|r| r.score).collect();
        let scores = context.scores(&own);
        let maps: Vec<Option<&[f32]>> = scored.iter().map(|r| r.fused_map.as_deref()).collect();
        for ((slice, score), map) in volume.slices.iter().zip(&scores).zip(context.maps(&maps)) {
            slice_scores.push(score.expect("calibrated"));
            slice_labels.push(slice.abnormal);
            let mask: Vec<bool> = slice.mask.iter().map(|&m| m > 127).collect();
            pixels
                .add(&map.expect("calibrated"), &mask)
                .expect("same size");
        }
        if !volume.abnormal {
            normal_slices += scores.len();
            normal_flagged += scores.iter().flatten().filter(|&&s| s >= threshold).count();
        }
        let series = series_score(&scores, None).expect("scored");
        series_max.push(series.by(SeriesRule::Max));
        series_top.push(series.by(SeriesRule::TopMean));
    }
    let volume_labels: Vec<bool> = volumes.iter().map(|v| v.abnormal).collect();
    ContextAucs {
        context,
        image: roc_auc(&slice_scores, &slice_labels).expect("both classes"),
        pixel: pixels.auc().expect("both classes"),
        series_max: roc_auc(&series_max, &volume_labels).expect("both classes"),
        series_top_mean: roc_auc(&series_top, &volume_labels).expect("both classes"),
        normal_flagged: normal_flagged as f64 / normal_slices.max(1) as f64,
    }
}

/// The measurement as a Markdown table: one row per seed and context, then the means.
pub fn table(seeds: &[SeedContexts]) -> String {
    let mut s = String::from(
        "| seed | slice context | slice image AUC | pixel AUC | series AUC (max) | series AUC (top-3 mean) | normal slices flagged |\n|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for m in seeds {
        for c in &m.contexts {
            s.push_str(&format!(
                "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} |\n",
                m.seed,
                c.context.describe(),
                c.image,
                c.pixel,
                c.series_max,
                c.series_top_mean,
                c.normal_flagged
            ));
        }
    }
    for (i, context) in CONTEXTS.iter().enumerate() {
        let mean = |f: &dyn Fn(&ContextAucs) -> f64| {
            seeds.iter().map(|m| f(&m.contexts[i])).sum::<f64>() / seeds.len().max(1) as f64
        };
        let wins = |f: &dyn Fn(&ContextAucs) -> f64| {
            seeds
                .iter()
                .filter(|m| f(&m.contexts[i]) > f(&m.contexts[0]))
                .count()
        };
        s.push_str(&format!(
            "| mean | {} | {:.4} ({} of {} seeds above off) | {:.4} ({} above) | {:.4} | {:.4} | {:.3} |\n",
            context.describe(),
            mean(&|c| c.image),
            wins(&|c| c.image),
            seeds.len(),
            mean(&|c| c.pixel),
            wins(&|c| c.pixel),
            mean(&|c| c.series_max),
            mean(&|c| c.series_top_mean),
            mean(&|c| c.normal_flagged),
        ));
    }
    s
}
