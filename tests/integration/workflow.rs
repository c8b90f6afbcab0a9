//! The workflow layer end to end on the tiny random CLIP fixture: shots from plain folders,
//! a seeded fit that is reproducible bit for bit, a checkpoint round trip, and scoring.
use std::path::Path;
use std::sync::atomic::AtomicBool;

use burn::backend::NdArray;
use mvfa_studio::model::mvfa::detector::TaskKind;
use mvfa_studio::train::synthetic::generate;
use mvfa_studio::workflow::{
    Backbone, CollectedShots, FitRequest, FitResult, Schedule, ShotSource, WorkflowError,
    checkpoint_meta, collect_shots, fit_detector, open_detector, save_detector, score_file,
};

use crate::support::images::write_synthetic;
use crate::support::tiny_clip as clip_fixture;

type B = NdArray<f32>;

fn plain_folders(root: &Path) {
    for (i, img) in generate(1, 2, 96, false).iter().enumerate() {
        write_synthetic(&root.join(format!("normal/n{i}.png")), img, false);
    }
    for (i, img) in generate(2, 2, 96, true).iter().enumerate() {
        write_synthetic(&root.join(format!("abnormal/a{i}.png")), img, false);
        write_synthetic(&root.join(format!("masks/a{i}.png")), img, true);
    }
    for (i, img) in generate(3, 2, 96, false).iter().enumerate() {
        write_synthetic(&root.join(format!("held_out/h{i}.png")), img, false);
    }
}

fn request(seed: u64) -> FitRequest {
    let mut request = FitRequest::new("Brain");
    request.settings = request
        .settings
        .with_schedule(Schedule::Quick)
        .with_seed(seed);
    request.settings.train.epochs = 1;
    request.settings.train.batch_size = 11;
    request.settings.batch_size = 11;
    request
}

/// Plain folders in a temporary folder, the fixture backbone, and the shots read back.
fn setup() -> (tempfile::TempDir, Backbone<B>, CollectedShots) {
    let dir = tempfile::tempdir().unwrap();
    plain_folders(dir.path());
    let backbone = Backbone::<B>::open(&clip_fixture(), None, &Default::default()).unwrap();
    let collected = shots_of(dir.path());
    (dir, backbone, collected)
}

fn shots_of(root: &Path) -> CollectedShots {
    collect_shots(&ShotSource::PlainFolders {
        root: root.to_path_buf(),
        allow_unmasked: false,
    })
    .unwrap()
}

/// Fits on `root` and writes the checkpoint to `out`; returns the file's bytes.
fn fit_and_save(backbone: &mut Backbone<B>, root: &Path, seed: u64, out: &Path) -> Vec<u8> {
    let collected = shots_of(root);
    let cancel = AtomicBool::new(false);
    let FitResult::Fitted(fitted) =
        fit_detector(backbone, &collected.shots, &request(seed), |_| {}, &cancel).unwrap()
    else {
        panic!("not cancelled")
    };
    let meta = checkpoint_meta(backbone, "Brain", 2, 1, "test".into());
    let normal: Vec<Vec<f32>> = collected
        .shots
        .normal
        .iter()
        .map(|s| s.image.clone())
        .collect();
    save_detector(
        out,
        &fitted.detector,
        &normal,
        fitted.selection.as_ref(),
        meta,
    )
    .unwrap();
    std::fs::read(out).unwrap()
}

/// Which tensors and metadata differ between two checkpoint files.
fn differences(a: &[u8], b: &[u8]) -> String {
    let (a, b) = (
        safetensors::SafeTensors::deserialize(a).unwrap(),
        safetensors::SafeTensors::deserialize(b).unwrap(),
    );
    let mut out = Vec::new();
    for (name, view) in a.tensors() {
        if b.tensor(&name).unwrap().data() != view.data() {
            out.push(name);
        }
    }
    out.sort();
    format!("tensors {out:?}")
}

#[test]
fn fits_are_reproducible_bit_for_bit_and_score_after_reopening() {
    let (dir, mut backbone, collected) = setup();
    let device = Default::default();
    assert!(collected.has_masks);
    assert_eq!(collected.shots.held_out.len(), 2);

    let brain = backbone.text_features("Brain").unwrap();
    // The features were written beside the weights, keyed by the weights' hash, and a fresh
    // backbone reads them back instead of running the text tower.
    let cache_file = mvfa_studio::workflow::text_cache::cache_path(&clip_fixture());
    assert!(cache_file.is_file());
    let mut reopened = Backbone::<B>::open(&clip_fixture(), None, &device).unwrap();
    let cached = reopened.text_features("Brain").unwrap();
    assert_eq!(
        cached.into_data().to_vec::<f32>().unwrap(),
        brain.into_data().to_vec::<f32>().unwrap()
    );

    let first = fit_and_save(
        &mut backbone,
        dir.path(),
        7,
        &dir.path().join("a.safetensors"),
    );
    let again = fit_and_save(
        &mut backbone,
        dir.path(),
        7,
        &dir.path().join("b.safetensors"),
    );
    assert!(
        first == again,
        "the same inputs and seed wrote different checkpoints: {}",
        differences(&first, &again)
    );
    let other = fit_and_save(
        &mut backbone,
        dir.path(),
        8,
        &dir.path().join("c.safetensors"),
    );
    assert!(first != other, "the seed changes nothing");

    // Reopen and score: the calibration came from the held-out normals.
    let opened = open_detector(
        &mut backbone,
        &dir.path().join("a.safetensors"),
        None,
        TaskKind::Classification,
        4,
    )
    .unwrap();
    assert_eq!(opened.organ, "Brain");
    assert_eq!(opened.detector.task(), TaskKind::Segmentation);
    assert_eq!(opened.detector.support_bank().unwrap().groups(), 2);
    let cal = opened.detector.calibration().unwrap();
    assert_eq!(
        cal.leave_out,
        mvfa_studio::model::mvfa::calibration::LeaveOut::HeldOut
    );
    let scored = score_file(
        &opened.detector,
        &dir.path().join("abnormal/a0.png"),
        &device,
    )
    .unwrap();
    assert_eq!(scored.len(), 1);
    let result = &scored[0].result;
    assert!(result.score.unwrap().is_finite());
    assert_eq!(result.raw.zero_map_levels.len(), 4);
    assert_eq!(result.raw.few_map_levels.len(), 4);
    assert_eq!(result.fused_map.as_ref().unwrap().len(), 240 * 240);
}

#[test]
fn cancelled_fit_and_bad_inputs_are_clear() {
    let (dir, mut backbone, collected) = setup();
    let device = Default::default();
    let cancel = AtomicBool::new(true);
    let outcome = fit_detector(
        &mut backbone,
        &collected.shots,
        &request(1),
        |_| {},
        &cancel,
    )
    .unwrap();
    assert!(matches!(outcome, FitResult::Cancelled { steps_done: 0 }));

    let err = Backbone::<B>::open(&dir.path().join("normal/n0.png"), None, &device)
        .err()
        .unwrap();
    assert!(matches!(err, WorkflowError::Weights(_)), "{err}");
    assert!(err.to_string().contains("n0.png"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = collect_shots(&ShotSource::PlainFolders {
        root: empty.path().to_path_buf(),
        allow_unmasked: false,
    })
    .unwrap_err();
    assert!(err.to_string().contains("normal"), "{err}");
}

/// A session rebuilding its memory bank and calibration after a label edit takes the shots'
/// adapted tokens from its feature cache; the detector is the one a fit without the cache
/// builds from the same shots (up to float rounding of batched against single-image passes).
#[test]
fn session_prepare_with_cached_shot_features_matches_an_uncached_fit() {
    use mvfa_studio::workflow::{ModelSession, Session};
    let (_dir, mut backbone, collected) = setup();
    let mut request = request(7);
    request.settings.train.epochs = 0;
    let never = AtomicBool::new(false);
    let FitResult::Fitted(reference) =
        fit_detector(&mut backbone, &collected.shots, &request, |_| {}, &never).unwrap()
    else {
        panic!("not cancelled")
    };
    let mut session = Session::<B>::open(&clip_fixture(), None, &Default::default()).unwrap();
    let mut fewer = collected.shots.clone();
    fewer.normal.pop();
    session.prepare(&fewer, &request).unwrap();
    let summary = session.prepare(&collected.shots, &request).unwrap();
    let (ours, theirs) = (
        summary.calibration.unwrap(),
        reference.detector.calibration().unwrap().clone(),
    );
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
    for (a, b) in [
        (ours.zero_map, theirs.zero_map),
        (ours.few_map.unwrap(), theirs.few_map.unwrap()),
        (ours.fused_map_max, theirs.fused_map_max),
    ] {
        assert!(
            close(a.median, b.median) && close(a.scale, b.scale),
            "{a:?} vs {b:?}"
        );
    }
    assert!(close(ours.threshold, theirs.threshold));
    let frames = frames_of(&collected.shots.abnormal);
    let scored = session.score(&frames, &never).unwrap();
    let size = summary.model_size;
    let images: Vec<&[f32]> = collected
        .shots
        .abnormal
        .iter()
        .map(|s| s.image.as_slice())
        .collect();
    let batch = mvfa_studio::io::model_input::batch_tensor::<B>(
        &images,
        [3, size, size],
        &Default::default(),
    )
    .unwrap();
    let expected = reference.detector.score(batch).unwrap();
    for (a, b) in scored.iter().zip(&expected) {
        assert!(close(a.score.unwrap(), b.score.unwrap()), "{a:?} vs {b:?}");
    }
}

/// An image's maps and scores are the same bit for bit whatever images share its batch, so
/// a folder scored in batches of 8 (the CLI), one by one (the app's corrections) or in the
/// batches a Ray worker gets agree exactly. Random images over three seeds, batches of 7, 3
/// and 1.
#[test]
fn scores_do_not_depend_on_the_batch_they_run_in() {
    use burn::prelude::*;
    use burn::tensor::Distribution;
    let (_dir, mut backbone, collected) = setup();
    let mut request = request(5);
    request.settings.train.epochs = 0;
    let never = AtomicBool::new(false);
    let FitResult::Fitted(fitted) =
        fit_detector(&mut backbone, &collected.shots, &request, |_| {}, &never).unwrap()
    else {
        panic!("not cancelled")
    };
    let detector = &fitted.detector;
    assert!(detector.support_bank().is_some() && detector.calibration().is_some());
    let device = Default::default();
    for seed in [1u64, 2, 3] {
        <B as burn::tensor::backend::Backend>::seed(&device, seed);
        let images =
            Tensor::<B, 4>::random([7, 3, 240, 240], Distribution::Uniform(0.0, 1.0), &device);
        let whole = detector.score_one_batch(images.clone()).unwrap();
        for size in [3usize, 1] {
            let mut parts = Vec::new();
            for start in (0..7).step_by(size) {
                let end = (start + size).min(7);
                parts.extend(
                    detector
                        .score_one_batch(images.clone().slice(s![start..end]))
                        .unwrap(),
                );
            }
            for (i, (a, b)) in whole.iter().zip(&parts).enumerate() {
                let same = a.score.map(f32::to_bits) == b.score.map(f32::to_bits)
                    && a.fused_map == b.fused_map
                    && a.raw.zero_map == b.raw.zero_map
                    && a.raw.few_map == b.raw.few_map
                    && a.raw.zero_map_levels == b.raw.zero_map_levels
                    && a.raw.few_map_levels == b.raw.few_map_levels
                    && a.raw.zero_image.to_bits() == b.raw.zero_image.to_bits()
                    && a.raw.few_image.map(f32::to_bits) == b.raw.few_image.map(f32::to_bits);
                assert!(
                    same,
                    "seed {seed}, image {i}: batch of 7 and batches of {size} differ"
                );
            }
        }
    }
}

/// The frames of `shots` as the app hands them to a session.
fn frames_of(shots: &[mvfa_studio::train::fit::Shot]) -> Vec<mvfa_studio::io::input::ModelImage> {
    shots
        .iter()
        .enumerate()
        .map(|(frame, s)| mvfa_studio::io::input::ModelImage {
            source: "shot".into(),
            frame,
            frames: shots.len(),
            display: mvfa_studio::io::resample::Image8 {
                width: 1,
                height: 1,
                channels: mvfa_studio::io::image::Channels::Gray,
                data: vec![0],
            },
            input: s.image.clone(),
            note: None,
        })
        .collect()
}

/// A label correction's quick step (the new bank from the unaugmented view of each normal
/// shot, the calibration kept) followed by the full rebuild leaves the detector that the full
/// rebuild alone builds, bit for bit: the same calibration, and the same maps and scores on
/// every image. Over two seeds.
#[test]
fn a_quick_bank_update_then_the_full_rebuild_equals_the_full_rebuild_bit_for_bit() {
    use mvfa_studio::workflow::{ModelSession, Session};
    let (_dir, _backbone, collected) = setup();
    let never = AtomicBool::new(false);
    let open = || Session::<B>::open(&clip_fixture(), None, &Default::default()).unwrap();
    let mut fewer = collected.shots.clone();
    fewer.normal.pop();
    let mut probes = collected.shots.abnormal.clone();
    probes.extend(collected.shots.normal.iter().cloned());
    let frames = frames_of(&probes);
    for seed in [7, 9] {
        let mut request = request(seed);
        request.settings.train.epochs = 0;
        let mut direct = open();
        direct.prepare(&fewer, &request).unwrap();
        let direct_summary = direct.prepare(&collected.shots, &request).unwrap();

        let mut corrected = open();
        let before = corrected.prepare(&fewer, &request).unwrap();
        let scores_before = corrected.score(&frames, &never).unwrap();
        let quick = corrected
            .prepare_quick(&collected.shots)
            .unwrap()
            .expect("a normal shot was added");
        assert_eq!(quick.normal_shots, collected.shots.normal.len());
        assert_eq!(
            quick.calibration, before.calibration,
            "the calibration is kept"
        );
        assert!(quick.note.unwrap().contains("unaugmented view"));
        // Nothing new: nothing quick to do.
        assert!(corrected.prepare_quick(&collected.shots).unwrap().is_none());
        // The new bank is in use: the few-shot maps moved.
        let scores_quick = corrected.score(&frames, &never).unwrap();
        assert_ne!(scores_quick, scores_before);

        let full = corrected.prepare(&collected.shots, &request).unwrap();
        assert_eq!(full.calibration, direct_summary.calibration);
        let (ours, theirs) = (
            corrected.score(&frames, &never).unwrap(),
            direct.score(&frames, &never).unwrap(),
        );
        assert_eq!(ours.len(), frames.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}");
        }
        // The session scores its own shots from the feature cache (no pass); a detector
        // reopened from the saved checkpoint, which has no cache, runs every pass: the same
        // maps and scores.
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("corrected.safetensors");
        corrected.save(&saved, "test").unwrap();
        let reopened = mvfa_studio::workflow::open_scorer(
            &mvfa_studio::workflow::ScorerSpec {
                clip: clip_fixture(),
                clip_config: None,
                checkpoint: saved,
                organ: None,
                batch: 8,
                fpr: None,
            },
            &mvfa_studio::backend::probe(true),
        )
        .unwrap();
        let fresh = reopened.score_images(&frames).unwrap();
        for (a, b) in ours.iter().zip(&fresh) {
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}, reopened");
        }
    }
}
