//! Detector checkpoints: a fitted detector saved and loaded back scores identically (adapters,
//! memory bank rebuilt from the stored shots, calibration); a reference `.pth` loads as a
//! zero-shot detector; training refuses a normal-only set and cancels within one step.
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use mvfa_studio::io::model_input::batch_tensor;
use mvfa_studio::model::clip::config::VisionConfig;
use mvfa_studio::model::clip::vision::VisionTransformer;
use mvfa_studio::model::mvfa::adapter::MvfaAdaptersConfig;
use mvfa_studio::model::mvfa::detector::TaskKind;
use mvfa_studio::model::mvfa::scoring::ScoringConfig;
use mvfa_studio::train::fit::{
    FitEvent, FitModel, FitOutcome, FitSettings, Shot, Shots, fit, support_groups,
};
use mvfa_studio::train::synthetic::generate;
use mvfa_studio::train::trainer::{TrainConfig, TrainEvent};
use mvfa_studio::weights::adapters::AdapterCheckpointMeta;
use mvfa_studio::weights::detector::{load_detector, save_detector};

type B = NdArray<f32>;
type AB = Autodiff<B>;
const SIZE: usize = 112;

fn shots(seed: u64, n: usize, abnormal: bool) -> Vec<Shot> {
    generate(seed, n, SIZE, abnormal)
        .iter()
        .map(|img| {
            let grey: Vec<f32> = img.pixels.iter().map(|&p| p as f32 / 255.0).collect();
            Shot {
                image: [grey.clone(), grey.clone(), grey].concat(),
                mask: abnormal.then(|| img.mask.iter().map(|&m| (m > 127) as u8 as f32).collect()),
            }
        })
        .collect()
}

fn setup() -> (VisionTransformer<B>, FitModel, FitSettings, Tensor<B, 2>) {
    let device = Default::default();
    let vision = VisionConfig::new()
        .with_image_size(SIZE)
        .with_width(32)
        .with_layers(4)
        .with_heads(2)
        .with_mlp_width(64)
        .with_embed_dim(16)
        .init::<B>(&device);
    let vision = mvfa_studio::train::fit::materialize(vision);
    let model = FitModel {
        adapters: MvfaAdaptersConfig::new().with_width(32).with_bottleneck(16),
        scoring: ScoringConfig::new()
            .with_image_size(SIZE)
            .with_grid_size(SIZE / 14),
    };
    let settings = FitSettings {
        train: TrainConfig::new().with_epochs(1).with_batch_size(4),
        normal_only_task: TaskKind::Segmentation,
        batch_size: 8,
        training_augmentations: 11,
        fpr: mvfa_studio::model::mvfa::calibration::DEFAULT_FPR,
        selection: mvfa_studio::train::select::SelectionSettings::default(),
    };
    let text = Tensor::<B, 2>::random(
        [16, 2],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let text = text.clone() / text.powi_scalar(2).sum_dim(0).sqrt();
    (vision, model, settings, text)
}

#[test]
fn saved_detector_scores_like_the_original() {
    let device = Default::default();
    let (vision, model, settings, text) = setup();
    let normal = shots(1, 2, false);
    let abnormal = shots(2, 2, true);
    let cancel = AtomicBool::new(false);
    let adapters = model.adapters.init::<B>(&device);
    let FitOutcome::Fitted { detector, .. } = fit::<AB>(
        vision.clone(),
        adapters,
        text.clone(),
        &Shots {
            normal: normal.clone(),
            abnormal: abnormal.clone(),
            held_out: Vec::new(),
        },
        &model,
        &settings,
        |_| {},
        &cancel,
        None,
    )
    .unwrap() else {
        panic!("not cancelled")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("detector.safetensors");
    let meta = AdapterCheckpointMeta {
        organ_word: Some("Brain".into()),
        ..Default::default()
    };
    let normal_images: Vec<Vec<f32>> = normal.iter().map(|s| s.image.clone()).collect();
    save_detector(&path, &detector, &normal_images, None, meta).unwrap();

    let mut loaded = load_detector::<B>(
        &path,
        vision,
        text,
        &model.adapters,
        &model.scoring,
        TaskKind::Classification,
        8,
        &device,
    )
    .unwrap();
    assert_eq!(loaded.meta.unwrap().organ_word.as_deref(), Some("Brain"));
    assert_eq!(loaded.normal_shots, normal_images);
    assert_eq!(loaded.detector.task(), TaskKind::Segmentation);
    assert_eq!(loaded.detector.calibration(), detector.calibration());
    // The file keeps the shots; the memory bank is rebuilt from them (the workflow's job).
    let stored: Vec<&[f32]> = loaded.normal_shots.iter().map(Vec::as_slice).collect();
    loaded
        .detector
        .set_support(support_groups::<B>(&stored, SIZE, &device).unwrap())
        .unwrap();

    let test = shots(3, 2, true);
    let views: Vec<&[f32]> = test.iter().map(|s| s.image.as_slice()).collect();
    let before = detector
        .score(batch_tensor::<B>(&views, [3, SIZE, SIZE], &device).unwrap())
        .unwrap();
    let after = loaded
        .detector
        .score(batch_tensor::<B>(&views, [3, SIZE, SIZE], &device).unwrap())
        .unwrap();
    for (a, b) in before.iter().zip(&after) {
        let (sa, sb) = (a.score.unwrap(), b.score.unwrap());
        assert!((sa - sb).abs() <= 1e-4 * (1.0 + sa.abs()), "{sa} vs {sb}");
        let worst = a
            .fused_map
            .as_ref()
            .unwrap()
            .iter()
            .zip(b.fused_map.as_ref().unwrap())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "fused maps differ by {worst}");
    }
}

#[test]
fn a_broken_checkpoint_is_a_clear_error() {
    let device = Default::default();
    let (vision, model, _, text) = setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    std::fs::write(&path, b"not a checkpoint").unwrap();
    let err = load_detector::<B>(
        &path,
        vision,
        text,
        &model.adapters,
        &model.scoring,
        TaskKind::Segmentation,
        8,
        &device,
    )
    .err()
    .expect("must fail");
    assert!(format!("{err:#}").contains("broken.safetensors"), "{err:#}");
}

#[test]
fn cancelling_stops_within_one_step_and_keeps_the_adapters() {
    let device = Default::default();
    let (vision, model, mut settings, text) = setup();
    settings.train = TrainConfig::new().with_epochs(50).with_batch_size(1);
    let cancel = AtomicBool::new(false);
    let mut steps_seen = 0;
    let outcome = fit::<AB>(
        vision,
        model.adapters.init::<B>(&device),
        text,
        &Shots {
            normal: shots(1, 1, false),
            abnormal: shots(2, 1, true),
            held_out: Vec::new(),
        },
        &model,
        &settings,
        |event| {
            if let FitEvent::Training(TrainEvent::Step(_)) = event {
                steps_seen += 1;
                if steps_seen == 3 {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        },
        &cancel,
        None,
    )
    .unwrap();
    match outcome {
        FitOutcome::Cancelled { steps_done } => {
            assert_eq!(steps_done, 3);
        }
        FitOutcome::Fitted { .. } => panic!("the run was cancelled"),
    }
}

/// A detector whose memory bank comes from other adapters than its text branch (what a fit
/// installs when it keeps the features from before fine-tuning) saves both sets, its fusion
/// weight and the report of how it was chosen, and scores the same after loading.
#[test]
fn bank_adapters_mix_and_report_survive_a_checkpoint() {
    use mvfa_studio::model::mvfa::detector::{CalibrationImages, CalibrationOptions, Detector};
    use mvfa_studio::model::mvfa::scoring::Scorer;
    use mvfa_studio::train::select::{SelectionSettings, unchecked_report};
    let device = Default::default();
    let (vision, model, _, text) = setup();
    let text_adapters = model.adapters.clone().with_seed(1).init::<B>(&device);
    let bank_adapters = model.adapters.clone().with_seed(2).init::<B>(&device);
    let normal = shots(1, 2, false);
    let stored: Vec<&[f32]> = normal.iter().map(|s| s.image.as_slice()).collect();
    let groups = support_groups::<B>(&stored, SIZE, &device).unwrap();
    let build = |bank: bool| {
        let mut d = Detector::new(
            vision.clone(),
            text_adapters.clone(),
            model.adapters.clone(),
            Scorer::new(model.scoring.clone(), text.clone()),
            TaskKind::Segmentation,
            8,
        );
        if bank {
            d.set_bank_adapters(Some(bank_adapters.clone()), None);
        }
        d.set_support(groups.clone()).unwrap();
        d.fit_calibration(
            &CalibrationImages {
                support: groups.clone(),
                held_out: None,
                held_out_images: 0,
                abnormal: None,
            },
            CalibrationOptions {
                text_weight: 0.25,
                fpr: 0.2,
            },
        )
        .unwrap();
        d
    };
    let detector = build(true);
    let plain = build(false);
    let test = shots(3, 2, true);
    let views: Vec<&[f32]> = test.iter().map(|s| s.image.as_slice()).collect();
    let score = |d: &Detector<B, VisionTransformer<B>>| {
        d.score(batch_tensor::<B>(&views, [3, SIZE, SIZE], &device).unwrap())
            .unwrap()
    };
    let with_bank = score(&detector);
    // The bank adapters change the few-shot branch only.
    let without = score(&plain);
    assert_eq!(with_bank[0].raw.zero_map, without[0].raw.zero_map);
    assert_ne!(with_bank[0].raw.few_map, without[0].raw.few_map);

    let report = unchecked_report((2, 1, 0), &SelectionSettings::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("detector.safetensors");
    let normal_images: Vec<Vec<f32>> = normal.iter().map(|s| s.image.clone()).collect();
    save_detector(
        &path,
        &detector,
        &normal_images,
        Some(&report),
        AdapterCheckpointMeta::default(),
    )
    .unwrap();
    let mut loaded = load_detector::<B>(
        &path,
        vision.clone(),
        text.clone(),
        &model.adapters,
        &model.scoring,
        TaskKind::Segmentation,
        8,
        &device,
    )
    .unwrap();
    assert_eq!(loaded.selection.as_ref(), Some(&report));
    assert!(loaded.detector.bank_adapters().is_some());
    let cal = loaded.detector.calibration().unwrap().clone();
    assert_eq!(cal.text_weight, 0.25);
    assert_eq!(Some(&cal), detector.calibration());
    // 2 normal images: the conformal threshold cannot support 20% (it needs 4); it says so.
    let stated = cal.fpr.unwrap();
    assert_eq!(stated.exemplars, 2);
    assert!(!stated.achievable);
    loaded.detector.set_support(groups.clone()).unwrap();
    for (a, b) in with_bank.iter().zip(&score(&loaded.detector)) {
        assert_eq!(a.raw.few_map, b.raw.few_map);
        assert_eq!(a.score, b.score);
    }
}

/// One normal and one abnormal shot cannot validate a fit: it fine-tunes as asked and says
/// plainly that the choice was not checked.
#[test]
fn too_few_shots_to_validate_is_said_never_claimed() {
    use mvfa_studio::train::select::Verdict;
    let device = Default::default();
    let (vision, model, settings, text) = setup();
    let FitOutcome::Fitted { selection, .. } = fit::<AB>(
        vision,
        model.adapters.init::<B>(&device),
        text,
        &Shots {
            normal: shots(1, 1, false),
            abnormal: shots(2, 1, true),
            held_out: Vec::new(),
        },
        &model,
        &settings,
        |_| {},
        &AtomicBool::new(false),
        None,
    )
    .unwrap() else {
        panic!("not cancelled")
    };
    let report = selection.expect("a fine-tuning fit reports its choice");
    assert_eq!(report.verdict, Verdict::Unchecked);
    assert!(report.candidates.is_empty() && report.chosen.is_none());
    assert!(
        report.message.contains("could not be checked")
            && report.message.contains("1 normal and 1 abnormal"),
        "{}",
        report.message
    );
}
