//! Learning test: fine-tuning a small random-weight CLIP with MVFA adapters on a synthetic
//! dataset (textures with blob and streak anomalies) must raise held-out image and pixel AUC
//! clearly above the untrained adapters. Also checks that a calibrated score does not depend
//! on the other images scored with it.
use std::sync::atomic::AtomicBool;

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use mvfa_studio::eval::auc::{PixelAucAccumulator, roc_auc};
use mvfa_studio::eval::fit_check::{SIZE, to_shot, with_backend_rng};
use mvfa_studio::io::model_input::batch_tensor;
use mvfa_studio::model::clip::config::VisionConfig;
use mvfa_studio::model::clip::vision::VisionTransformer;
use mvfa_studio::model::mvfa::adapter::MvfaAdaptersConfig;
use mvfa_studio::model::mvfa::detector::{Detector, ImageResult, TaskKind};
use mvfa_studio::model::mvfa::scoring::ScoringConfig;
use mvfa_studio::train::fit::{FitModel, FitOutcome, FitSettings, Shot, Shots, fit};
use mvfa_studio::train::select::SelectionSettings;
use mvfa_studio::train::synthetic::{SyntheticImage, generate};
use mvfa_studio::train::trainer::TrainConfig;

type B = NdArray<f32>;
type AB = Autodiff<B>;

fn tiny_vision(device: &burn::backend::ndarray::NdArrayDevice) -> VisionTransformer<B> {
    B::seed(device, 5);
    let vision = VisionConfig::new()
        .with_image_size(SIZE)
        .with_width(64)
        .with_layers(8)
        .with_heads(4)
        .with_mlp_width(128)
        .with_embed_dim(32)
        .init::<B>(device);
    mvfa_studio::train::fit::materialize(vision)
}

fn fit_model() -> FitModel {
    FitModel {
        adapters: MvfaAdaptersConfig::new().with_width(64).with_bottleneck(32),
        scoring: ScoringConfig::new()
            .with_image_size(SIZE)
            .with_grid_size(SIZE / 14)
            .with_logit_scale(100.0), // the reference value, spelled out
    }
}

fn settings(epochs: usize) -> FitSettings {
    FitSettings {
        train: TrainConfig::new()
            .with_epochs(epochs)
            .with_learning_rate(1e-3)
            .with_batch_size(4),
        normal_only_task: TaskKind::Segmentation,
        batch_size: 8,
        training_augmentations: 11,
        fpr: mvfa_studio::model::mvfa::calibration::DEFAULT_FPR,
        // This test checks what the trainer learns: the fine-tuned adapters are installed
        // as they end (the guarantee test below validates candidates).
        selection: SelectionSettings {
            folds: 0,
            ..SelectionSettings::default()
        },
    }
}

/// Held-out AUCs of each branch alone and of the calibrated fused output.
#[derive(Debug)]
struct Metrics {
    /// Zero-shot (text) branch, which fine-tuning trains: det-head image score, seg map.
    image_auc: f64,
    pixel_auc: f64,
    /// Few-shot (memory bank) branch: det-head image score, seg map.
    few_image_auc: f64,
    few_pixel_auc: f64,
    /// Image score = max of each branch's map (what the segmentation task fuses).
    zero_map_max_auc: f64,
    few_map_max_auc: f64,
    /// The calibrated fused output (text branch + memory bank).
    fused_image_auc: f64,
    fused_pixel_auc: f64,
}

impl Metrics {
    fn best_image_branch(&self) -> f64 {
        [
            self.image_auc,
            self.few_image_auc,
            self.zero_map_max_auc,
            self.few_map_max_auc,
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }

    fn best_pixel_branch(&self) -> f64 {
        self.pixel_auc.max(self.few_pixel_auc)
    }
}

fn max_of(v: &[f32]) -> f32 {
    v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

fn evaluate(
    detector: &Detector<B, VisionTransformer<B>>,
    test: &[SyntheticImage],
) -> (Metrics, Vec<ImageResult>) {
    let device = Default::default();
    let shots: Vec<Shot> = test.iter().map(to_shot).collect();
    let views: Vec<&[f32]> = shots.iter().map(|s| s.image.as_slice()).collect();
    let results = detector
        .score(batch_tensor::<B>(&views, [3, SIZE, SIZE], &device).unwrap())
        .unwrap();
    let labels: Vec<bool> = test.iter().map(|t| t.abnormal).collect();
    let auc = |f: &dyn Fn(&ImageResult) -> f32| {
        let v: Vec<f32> = results.iter().map(f).collect();
        roc_auc(&v, &labels).unwrap()
    };
    let mut zero_pixels = PixelAucAccumulator::new();
    let mut few_pixels = PixelAucAccumulator::new();
    let mut fused_pixels = PixelAucAccumulator::new();
    for (r, t) in results.iter().zip(test) {
        // Ground truth at model resolution, nearest like the reference (spec 6).
        let mask: Vec<bool> = (0..SIZE * SIZE)
            .map(|i| {
                let (y, x) = (i / SIZE, i % SIZE);
                t.mask[(y * t.size / SIZE) * t.size + x * t.size / SIZE] > 127
            })
            .collect();
        zero_pixels.add(&r.raw.zero_map, &mask).unwrap();
        few_pixels
            .add(r.raw.few_map.as_ref().unwrap(), &mask)
            .unwrap();
        fused_pixels
            .add(r.fused_map.as_ref().unwrap(), &mask)
            .unwrap();
    }
    (
        Metrics {
            image_auc: auc(&|r| r.raw.zero_image),
            pixel_auc: zero_pixels.auc().unwrap(),
            few_image_auc: auc(&|r| r.raw.few_image.unwrap()),
            few_pixel_auc: few_pixels.auc().unwrap(),
            zero_map_max_auc: auc(&|r| max_of(&r.raw.zero_map)),
            few_map_max_auc: auc(&|r| max_of(r.raw.few_map.as_ref().unwrap())),
            fused_image_auc: auc(&|r| r.score.unwrap()),
            fused_pixel_auc: fused_pixels.auc().unwrap(),
        },
        results,
    )
}

#[test]
fn fine_tuning_beats_untrained_adapters_and_scores_are_batch_independent() {
    let device = Default::default();
    let cfg = settings(30);
    let model = fit_model();
    // The seed and every draw after it in one sequence (tests run in parallel).
    let (vision, text) = with_backend_rng(|| {
        let vision = tiny_vision(&device);
        // A fixed random text embedding (the tiny backbone has no meaningful text tower), like
        // real prompt-ensemble features (spec 3.4): unit columns, the normal and abnormal
        // directions close to each other (CLIP's are, cosine about 0.9).
        let base = Tensor::<B, 2>::random(
            [32, 1],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let noise = Tensor::<B, 2>::random(
            [32, 2],
            burn::tensor::Distribution::Normal(0.0, 0.3),
            &device,
        );
        let text = base.repeat_dim(1, 2) + noise;
        let text = text.clone() / text.powi_scalar(2).sum_dim(0).sqrt();
        (vision, text)
    });
    let adapters = mvfa_studio::train::fit::materialize(model.adapters.init::<B>(&device));

    let normal: Vec<Shot> = generate(11, 4, SIZE, false).iter().map(to_shot).collect();
    let abnormal: Vec<Shot> = generate(12, 4, SIZE, true).iter().map(to_shot).collect();
    let mut test = generate(21, 24, SIZE, false);
    test.extend(generate(22, 24, SIZE, true));

    let held_out: Vec<Shot> = generate(31, 4, SIZE, false).iter().map(to_shot).collect();
    let cancel = AtomicBool::new(false);
    let quick_inputs = (vision.clone(), adapters.clone(), text.clone());
    let normal_only = Shots {
        normal: normal.clone(),
        ..Shots::default()
    };
    let untrained = match fit::<AB>(
        vision.clone(),
        adapters.clone(),
        text.clone(),
        &normal_only,
        &model,
        &cfg,
        |_| {},
        &cancel,
        None,
    )
    .unwrap()
    {
        FitOutcome::Fitted { detector, .. } => detector,
        FitOutcome::Cancelled { .. } => unreachable!(),
    };
    let shots = Shots {
        normal: normal.clone(),
        abnormal: abnormal.clone(),
        held_out,
    };
    let trained = match fit::<AB>(
        vision,
        adapters,
        text,
        &shots,
        &model,
        &cfg,
        |_| {},
        &cancel,
        None,
    )
    .unwrap()
    {
        FitOutcome::Fitted {
            detector,
            epoch_losses,
            ..
        } => {
            eprintln!("epoch losses: {epoch_losses:?}");
            assert!(epoch_losses.last().unwrap() < epoch_losses.first().unwrap());
            detector
        }
        FitOutcome::Cancelled { .. } => unreachable!(),
    };
    let (before, _) = evaluate(&untrained, &test);
    let (after, results) = evaluate(&trained, &test);
    eprintln!("before fine-tuning: {before:#?}");
    eprintln!("after fine-tuning (calibrated on held-out normals): {after:#?}");
    // Measured on these seeds (48 held-out images): text branch image 0.47 -> 0.72, pixel
    // 0.59 -> 0.81.
    assert!(
        after.image_auc >= before.image_auc + 0.15 && after.image_auc > 0.65,
        "image AUC did not rise clearly"
    );
    assert!(
        after.pixel_auc >= before.pixel_auc + 0.15 && after.pixel_auc > 0.7,
        "pixel AUC did not rise clearly"
    );
    // The fused map (text branch + memory bank) localises at least as well as the better
    // branch. The fused image score does not keep up under this long schedule (0.93 -> 0.76):
    // 30 epochs on 88 images degrade the memory bank's features (few-shot map maximum
    // 0.98 -> 0.78); see the calibration module docs and the quick schedule below.
    assert!(
        after.fused_pixel_auc >= after.best_pixel_branch() - 0.02,
        "fused pixel AUC {} below the better branch {}",
        after.fused_pixel_auc,
        after.best_pixel_branch()
    );
    eprintln!(
        "fused image AUC {:.3} (before {:.3}), better image branch {:.3}",
        after.fused_image_auc,
        before.fused_image_auc,
        after.best_image_branch()
    );
    // That known regression, held where it is so that it cannot grow unnoticed. Measured on
    // these seeds: fused image AUC 0.764 (untrained 0.932), better image branch 0.839 (the
    // memory bank's det head), a gap of 0.075. One of the 24 x 24 normal-abnormal pairs
    // moves the AUC by 0.0017, so the bounds leave room for about a dozen pairs of rounding
    // (another matmul kernel) and fail on a real change.
    assert!(
        after.fused_image_auc >= 0.74,
        "long schedule: fused image AUC {:.3} fell below the measured 0.764 - 0.024",
        after.fused_image_auc
    );
    assert!(
        after.fused_image_auc >= after.best_image_branch() - 0.10,
        "long schedule: fused image AUC {:.3} more than 0.10 below the better branch {:.3} \
         (measured gap 0.075)",
        after.fused_image_auc,
        after.best_image_branch()
    );

    // The quick CPU schedule (3 augmentations, 5 epochs): its cost in quality.
    let mut quick_cfg = settings(5);
    quick_cfg.training_augmentations = 3;
    let quick = match fit::<AB>(
        quick_inputs.0,
        quick_inputs.1,
        quick_inputs.2,
        &shots,
        &model,
        &quick_cfg,
        |_| {},
        &cancel,
        None,
    )
    .unwrap()
    {
        FitOutcome::Fitted { detector, .. } => detector,
        FitOutcome::Cancelled { .. } => unreachable!(),
    };
    let (quick, _) = evaluate(&quick, &test);
    eprintln!("after the quick schedule: {quick:#?}");
    // Measured: text branch image 0.47 -> 0.73; the memory bank keeps its features (few-shot
    // map maximum 0.96), so the fused outputs keep up with the better branch and do not fall
    // below the untrained detector: image 0.932 -> 0.946, pixel 0.972 -> 0.973.
    assert!(quick.image_auc >= before.image_auc + 0.15);
    for (what, fused, best, untrained) in [
        (
            "image",
            quick.fused_image_auc,
            quick.best_image_branch(),
            before.fused_image_auc,
        ),
        (
            "pixel",
            quick.fused_pixel_auc,
            quick.best_pixel_branch(),
            before.fused_pixel_auc,
        ),
    ] {
        assert!(
            fused >= best - 0.02 && fused >= untrained,
            "quick schedule: fused {what} AUC {fused:.3}, better branch {best:.3}, untrained {untrained:.3}"
        );
    }

    // A calibrated score depends only on its image: score image 3 alone.
    let shot = to_shot(&test[3]);
    let alone = trained
        .score(batch_tensor::<B>(&[shot.image.as_slice()], [3, SIZE, SIZE], &device).unwrap())
        .unwrap();
    let (a, b) = (alone[0].score.unwrap(), results[3].score.unwrap());
    assert!(
        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
        "score alone {a} vs in a batch {b}"
    );
}

/// The fine-tuning guarantee (issue 20) on fresh draws of the synthetic task: a new tiny
/// random CLIP, new shots and new held-out images per seed. The detector a fit installs must
/// keep the fused image and pixel AUC on held-out images at least at the detector before
/// fine-tuning minus 0.01 and at its better single branch minus 0.02. The 10-seed table over
/// both schedules (`cargo run --release --example fit_guarantee`) is in the README; this is
/// its CI-sized version, on seeds the table does not use.
#[test]
fn fine_tuning_never_leaves_the_detector_worse_over_seeds() {
    use mvfa_studio::eval::fit_check::{CheckSchedule, TaskSize, run_seed, table};
    let size = TaskSize::default();
    for (name, schedule, seeds) in [
        ("quick", CheckSchedule::QUICK, 101..=104),
        ("paper, 15 epochs", CheckSchedule::PAPER_15, 105..=106),
    ] {
        let outcomes: Vec<_> = seeds.map(|seed| run_seed(seed, schedule, size)).collect();
        let table = table(&outcomes);
        eprintln!("{name} schedule:\n{table}");
        for o in &outcomes {
            let report = o
                .report
                .as_ref()
                .expect("a fit with abnormal shots reports its choice");
            assert!(
                report.chosen().is_some(),
                "seed {}: {}",
                o.seed,
                report.message
            );
            // The current detector is always among the candidates, and what was installed
            // validated at least as well.
            let current = &report.candidates[report.current.expect("current candidate")];
            assert!(report.chosen().unwrap().criterion() >= current.criterion());
        }
        assert!(
            outcomes.iter().all(|o| o.holds()),
            "{name} schedule: the installed detector fell below the guarantee:\n{table}"
        );
    }
}

/// The threshold's stated meaning (issue 20): set by split-conformal calibration for a 10%
/// false-positive rate on 20 held-out normals, it flags about that share of fresh normal
/// images, never clearly more. Over 8 draws of 24 fresh normals each, the observed rate must
/// stay within the target plus three standard errors of the pooled estimate (binomial test
/// noise plus the spread of the calibrated threshold itself, a Beta(n + 1 - k, k) rate).
#[test]
fn conformal_threshold_holds_its_false_positive_rate_on_fresh_normals() {
    use mvfa_studio::eval::fit_check::normal_false_positives;
    let target = 0.10f64;
    let (mut flagged, mut scored) = (0, 0);
    let draws = 8;
    for seed in 201..201 + draws {
        let (f, n, stated) = normal_false_positives(seed, 4, 20, 24, target as f32);
        let stated = stated.expect("a stated rate");
        assert!(stated.achievable && stated.exemplars == 20, "{stated:?}");
        assert!(stated.guaranteed <= target as f32 + 1e-6);
        flagged += f;
        scored += n;
    }
    let observed = flagged as f64 / scored as f64;
    // n = 20 images, k = ceil(21 * 0.9) = 19: the rate is Beta(2, 19), sd 0.063 per draw.
    let threshold_sd = 0.063 / (draws as f64).sqrt();
    let test_sd = (target * (1.0 - target) / scored as f64).sqrt();
    let tolerance = 3.0 * (threshold_sd.powi(2) + test_sd.powi(2)).sqrt();
    eprintln!(
        "observed false-positive rate {observed:.3} ({flagged} of {scored}); target {target}, \
         tolerance {tolerance:.3}"
    );
    assert!(
        observed <= target + tolerance,
        "observed false-positive rate {observed:.3} above {target} + {tolerance:.3}"
    );
}
