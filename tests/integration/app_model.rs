//! The loop the product exists for, driven through the real app (egui_kittest, no window) on
//! the tiny random CLIP: load weights, label shots (normal, abnormal with mask), see the
//! zero-shot detector with its memory bank score the study at once, start fine-tuning and
//! cancel it, fine-tune to the end, see the heatmap and its legend, change map level and
//! branch, correct a result, export, save and reopen the project with its results.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui::{Key, Modifiers};
use egui_kittest::kittest::Queryable;
use mvfa_studio::app::action::Action;
use mvfa_studio::app::commands::Command;
use mvfa_studio::app::handlers::model::score_queue;
use mvfa_studio::app::state::labels::{ImageKey, Label};
use mvfa_studio::app::state::model::ModelJobKind;
use mvfa_studio::app::state::viewer::SideTab;
use mvfa_studio::app::state::{AppState, WeightsStatus};
use mvfa_studio::train::select::Verdict;
use mvfa_studio::train::synthetic::generate;
use mvfa_studio::workflow::maps::threshold_mask;
use mvfa_studio::workflow::{Branch, MapLayer, layer_map};

use crate::support::app::{AppHarness, cpu_state, press, wait_until};
use crate::support::images::write_grey;
use crate::support::{self, tiny_clip_hf};

type H = AppHarness;

fn harness() -> H {
    support::app::harness(cpu_state(None), [1400.0, 900.0])
}

/// Synthetic 96 px images: `n0..n2` normal, `a0..a2` abnormal (masks in `masks/`), and
/// `t0..t3` unlabelled test images (two of them abnormal).
fn study(dir: &Path) -> PathBuf {
    let folder = dir.join("study");
    let masks = dir.join("masks");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    let save = |path: PathBuf, size: usize, pixels: &[u8]| write_grey(&path, size, size, pixels);
    for (i, img) in generate(1, 2, 96, false).iter().enumerate() {
        save(folder.join(format!("n{i}.png")), img.size, &img.pixels);
    }
    for (i, img) in generate(2, 2, 96, true).iter().enumerate() {
        save(folder.join(format!("a{i}.png")), img.size, &img.pixels);
        save(masks.join(format!("a{i}.png")), img.size, &img.mask);
    }
    for (i, img) in generate(3, 2, 96, false)
        .iter()
        .chain(&generate(4, 2, 96, true))
        .enumerate()
    {
        save(folder.join(format!("t{i}.png")), img.size, &img.pixels);
    }
    folder
}

fn key(folder: &Path, name: &str) -> ImageKey {
    ImageKey {
        path: folder.join(name),
        frame: 0,
    }
}

fn show(h: &mut H, key: &ImageKey) {
    h.state_mut().pending.push(Action::Show(key.clone()));
    let wanted = key.clone();
    wait_until(h, "the image", 20, move |s| {
        s.viewer.current.as_ref() == Some(&wanted) && s.current_stack().is_some()
    });
}

fn idle_and_scored(s: &AppState, images: usize) -> bool {
    let m = &s.model;
    s.activity.model.is_none()
        && m.detector.is_some()
        && m.results.len() == images
        && m.results.values().all(|r| r.generation == m.generation)
}

#[test]
fn app_model_label_train_review_correct_export_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let folder = study(dir.path());
    let images = 8;
    let mut h = harness();

    // Weights load in the background into a session.
    h.state_mut()
        .pending
        .push(Action::LoadWeightsFrom(tiny_clip_hf()));
    h.step();
    wait_until(&mut h, "the weights", 60, |s| {
        matches!(s.weights, WeightsStatus::Loaded(_)) && s.activity.session
    });
    h.state_mut()
        .pending
        .push(Action::Open(vec![folder.clone()]));
    wait_until(&mut h, "the scan", 20, |s| {
        s.activity.scan.is_none() && s.browser.len() == images
    });

    // Label shots: two normal, two abnormal with imported masks.
    for name in ["n0.png", "n1.png"] {
        show(&mut h, &key(&folder, name));
        press(&mut h, Modifiers::NONE, Key::N);
    }
    for name in ["a0.png", "a1.png"] {
        show(&mut h, &key(&folder, name));
        press(&mut h, Modifiers::NONE, Key::A);
        h.state_mut()
            .pending
            .push(Action::ImportMaskFrom(dir.path().join("masks").join(name)));
        h.step();
    }
    wait_until(&mut h, "the imported masks", 20, |s| {
        s.labels.counts().masks == 2
    });

    // Before any training: the zero-shot adapters and the memory bank score the study.
    wait_until(&mut h, "the untrained detector and scores", 120, |s| {
        idle_and_scored(s, images)
    });
    let untrained = h.state().state.model.detector.clone().unwrap();
    assert_eq!(untrained.normal_shots, 2);
    assert!(untrained.calibration.is_some());
    assert!(
        untrained.adapters.contains("not fine-tuned"),
        "{}",
        untrained.adapters
    );

    // Fine-tuning from the Model tab, cancelled at once: the previous detector is kept.
    h.state_mut().pending.push(Action::SetTab(SideTab::Model));
    h.step();
    h.step();
    // The button may be below the tab's fold: scroll it into view, as a user would.
    h.get_by_label_contains(Command::StartTraining.label())
        .scroll_to_me();
    h.step();
    h.get_by_label_contains(Command::StartTraining.label())
        .click();
    h.step();
    assert!(h.state().state.activity.model_running(ModelJobKind::Train));
    press(&mut h, Modifiers::NONE, Key::Escape);
    wait_until(&mut h, "the cancel", 60, |s| {
        !s.activity.model_running(ModelJobKind::Train)
    });
    assert!(
        h.state().state.model.training.status.contains("cancelled"),
        "{}",
        h.state().state.model.training.status
    );
    assert_eq!(h.state().state.model.detector.as_ref(), Some(&untrained));

    // Fine-tuning to the end (quick schedule), with the loss curve filled step by step; the
    // study is rescored afterwards.
    let generation = h.state().state.model.generation;
    press(&mut h, Modifiers::COMMAND, Key::T);
    wait_until(&mut h, "fine-tuning", 600, |s| {
        !s.activity.model_running(ModelJobKind::Train)
    });
    let model = &h.state().state.model;
    assert!(
        model.training.status.contains("finished"),
        "{}",
        model.training.status
    );
    assert_eq!(model.training.losses.len(), model.training.total_steps);
    assert!(model.training.losses.iter().all(|p| p.total.is_finite()));
    assert!(model.generation > generation);
    // The fit validated its candidates on the labels and says what it installed.
    let detector = model.detector.clone().unwrap();
    let report = detector
        .selection
        .clone()
        .expect("the fit reports its choice");
    let chosen = report.chosen().expect("two of each class validate").clone();
    assert_eq!(report.candidates.len(), 35, "{}", report.table());
    let current = &report.candidates[report.current.unwrap()];
    assert!(chosen.criterion() >= current.criterion());
    match (report.verdict, chosen.epochs) {
        (Verdict::Improved, 1..) => assert!(
            detector.adapters.contains("fine-tuned here"),
            "{}",
            detector.adapters
        ),
        (Verdict::Improved | Verdict::KeptCurrent, 0) => {
            assert!(
                detector.adapters.contains("not fine-tuned"),
                "{}",
                detector.adapters
            )
        }
        other => panic!("unexpected verdict {other:?}: {}", report.message),
    }
    assert!(
        h.state().state.log.iter().any(|l| l == &report.message),
        "the log tells the verdict"
    );
    // The Model tab shows the verdict in plain words and, on request, every candidate (once
    // the study is rescored: a running job's progress bar keeps the UI repainting).
    wait_until(&mut h, "the rescoring", 120, |s| idle_and_scored(s, images));
    h.run();
    h.get_by_label(&report.message);
    h.get_by_label("Validated candidates (35)").click();
    h.run();
    h.get_by_label("installed");
    let threshold = detector.calibration.as_ref().unwrap().fpr.unwrap();
    h.get_by_label_contains(&threshold.describe());
    wait_until(&mut h, "rescoring", 120, |s| idle_and_scored(s, images));

    // Results: the heatmap of the test image is drawn with its legend; maps change with the
    // keys.
    let test_image = key(&folder, "t3.png");
    show(&mut h, &test_image);
    h.state_mut().pending.push(Action::SetTab(SideTab::Results));
    h.step();
    h.run();
    assert!(h.state().textures.heatmap_builds > 0);
    let builds = h.state().textures.heatmap_builds;
    h.get_by_label("calibrated (normal spreads) · contour 3.0");
    // The threshold's meaning beside the score histogram.
    h.get_by_label_contains("of normal images");
    assert_eq!(h.state().state.model.view.layer, MapLayer::Fused);
    press(&mut h, Modifiers::NONE, Key::Period);
    assert_eq!(
        h.state().state.model.view.layer,
        MapLayer::Branch(Branch::ZeroShot)
    );
    for _ in 0..3 {
        press(&mut h, Modifiers::NONE, Key::Period);
    }
    assert_eq!(
        h.state().state.model.view.layer,
        MapLayer::Level(Branch::ZeroShot, 1)
    );
    assert!(h.state().textures.heatmap_builds >= builds + 4);

    // J walks the ranking from the most anomalous image down, K back up.
    let (ranked, _) = h.state().state.reading_order();
    for expected in [&ranked[0], &ranked[1], &ranked[2]] {
        press(&mut h, Modifiers::NONE, Key::J);
        assert_eq!(h.state().state.viewer.current.as_ref(), Some(expected));
    }
    press(&mut h, Modifiers::NONE, Key::K);
    assert_eq!(h.state().state.viewer.current.as_ref(), Some(&ranked[1]));

    // Correct a result: accept the test image as abnormal, the thresholded region becoming
    // its mask; the memory bank and scores update without fine-tuning.
    show(&mut h, &test_image);
    let s = &h.state().state;
    let detector = s.model.detector.clone().unwrap();
    let map = layer_map(
        &s.model.results[&test_image].result,
        detector.calibration.as_ref(),
        s.model.view.layer,
    )
    .unwrap();
    let level = s.model.view.contour(map.scale);
    let expected = threshold_mask(&map.values, detector.model_size, 96, 96, level);
    let generation = s.model.generation;
    press(&mut h, Modifiers::SHIFT, Key::A);
    let s = &h.state().state;
    assert_eq!(s.labels.label(&test_image), Some(Label::Abnormal));
    assert_eq!(
        s.labels.mask(&test_image).map(|m| m.as_bytes().to_vec()),
        Some(expected),
        "the starting mask is the region above the contour level"
    );
    wait_until(&mut h, "the corrected detector", 120, |s| {
        s.model.generation > generation && idle_and_scored(s, images)
    });
    assert_eq!(
        h.state()
            .state
            .model
            .detector
            .as_ref()
            .unwrap()
            .abnormal_shots,
        3
    );

    // Correct a result as normal: first the quick memory bank (one pass of the new shot, its
    // unaugmented view; the calibration kept) and the shown image's new score, then the
    // augmented views and the calibration in the background, with the status bar saying so.
    let normal_image = key(&folder, "t0.png");
    show(&mut h, &normal_image);
    let generation = h.state().state.model.generation;
    press(&mut h, Modifiers::NONE, Key::N);
    let revision = h.state().state.labels.revision;
    wait_until(&mut h, "the quick memory bank", 60, |s| {
        s.model.quick_revision == Some(revision)
            && s.model.generation > generation
            && s.model
                .detector
                .as_ref()
                .is_some_and(|d| d.normal_shots == 3)
    });
    assert!(
        h.state()
            .state
            .log
            .iter()
            .any(|l| l.contains("Memory bank updated from the unaugmented view")),
        "{:?}",
        h.state().state.log
    );
    let quick_generation = h.state().state.model.generation;
    let seen_background = std::cell::Cell::new(false);
    wait_until(&mut h, "the full memory bank and new scores", 120, |s| {
        if let Some((ModelJobKind::Prepare, p)) = &s.activity.model {
            seen_background
                .set(seen_background.get() || p.message.contains("adding the augmented views"));
        }
        s.model.detector_revision == Some(revision) && idle_and_scored(s, images)
    });
    let s = &h.state().state;
    assert!(s.model.generation > quick_generation);
    let note = s
        .model
        .detector
        .as_ref()
        .unwrap()
        .note
        .clone()
        .unwrap_or_default();
    assert!(!note.contains("unaugmented view"), "{note}");
    assert!(
        seen_background.get(),
        "the status bar showed the background step"
    );

    // Export the whole study: overlays with legend, heatmaps, raw maps and the CSV.
    let out = dir.path().join("export");
    press(&mut h, Modifiers::COMMAND | Modifiers::SHIFT, Key::E);
    let mut dialog = h
        .state()
        .state
        .model
        .export
        .clone()
        .expect("the export window");
    h.run();
    h.get_by_label("Export results");
    dialog.folder = Some(out.clone());
    h.state_mut()
        .pending
        .push(Action::SetExportDialog(Some(dialog)));
    h.step();
    h.state_mut().pending.push(Action::StartExport);
    h.step();
    wait_until(&mut h, "the export", 120, |s| s.activity.model.is_none());
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + images, "{csv}");
    for name in ["t3.overlay.png", "t3.heatmap.png", "t3.raw.safetensors"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }

    // Save the project: the detector and the results go beside it; a fresh app reopening it
    // shows the same results without rescoring.
    wait_until(&mut h, "idle", 120, |s| idle_and_scored(s, images));
    let project = dir.path().join("study.mvfa.json");
    h.state_mut()
        .pending
        .push(Action::SaveProjectTo(project.clone()));
    // The project file, then the results file and the detector, are written by background
    // jobs.
    wait_until(&mut h, "the project saved", 60, |s| !s.unsaved());
    wait_until(&mut h, "the detector and results saved", 60, |s| {
        s.activity.model.is_none() && !s.model.detector_unsaved && s.activity.results_save.is_none()
    });
    assert!(dir.path().join("study.detector.safetensors").is_file());
    assert!(dir.path().join("study.results.safetensors").is_file());
    let before = h.state().state.model.results.clone();
    let detector_before = h.state().state.model.detector.clone().unwrap();
    // Saved twice and closed at once: exit waits for the write under way and writes the
    // snapshot still waiting, so the second copy has its results too.
    let copy = dir.path().join("copy.mvfa.json");
    for path in [&copy, &copy] {
        h.state_mut()
            .pending
            .push(Action::SaveProjectTo(path.clone()));
        h.step();
    }
    h.state_mut().exit();
    assert_eq!(
        std::fs::read(dir.path().join("copy.results.safetensors")).unwrap(),
        std::fs::read(dir.path().join("study.results.safetensors")).unwrap()
    );
    drop(h);

    let mut h = harness();
    h.state_mut().pending.push(Action::OpenProject(project));
    wait_until(&mut h, "the reopened project", 120, |s| {
        s.model.detector.is_some() && s.activity.model.is_none() && s.model.restore.is_none()
    });
    let s = &h.state().state;
    assert_eq!(s.labels.counts().abnormal, 3);
    let detector = s.model.detector.as_ref().unwrap();
    assert_eq!(detector.calibration, detector_before.calibration);
    assert_eq!(detector.normal_shots, detector_before.normal_shots);
    assert_eq!(s.model.results.len(), images);
    for (key, scored) in &before {
        let reopened = &s.model.results[key];
        assert_eq!(reopened.result, scored.result, "{key:?}");
        assert_eq!(
            reopened.generation, s.model.generation,
            "{key:?} is current"
        );
    }
    assert!(score_queue(s, 100).is_empty(), "nothing to rescore");
    assert_eq!(
        s.model.frames_scored, 0,
        "the stored results were shown, not recomputed"
    );
}

/// Frame times of the real UI (layout, the loss plot, the heatmap) while fine-tuning runs on
/// the CPU in the background. A measurement, not an assertion: run it with
/// `cargo test --release --test integration app_model_frame_times -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; prints frame times"]
fn app_model_frame_times_while_training() {
    let dir = tempfile::tempdir().unwrap();
    let folder = study(dir.path());
    let mut h = harness();
    h.state_mut()
        .pending
        .push(Action::LoadWeightsFrom(tiny_clip_hf()));
    h.step();
    wait_until(&mut h, "the weights", 60, |s| s.activity.session);
    h.state_mut()
        .pending
        .push(Action::Open(vec![folder.clone()]));
    wait_until(&mut h, "the scan", 20, |s| s.browser.len() == 8);
    for (name, k) in [("n0.png", Key::N), ("n1.png", Key::N), ("a0.png", Key::A)] {
        show(&mut h, &key(&folder, name));
        press(&mut h, Modifiers::NONE, k);
    }
    wait_until(&mut h, "scores", 300, |s| idle_and_scored(s, 8));
    show(&mut h, &key(&folder, "t3.png"));
    h.state_mut().pending.push(Action::SetTab(SideTab::Model));
    h.state_mut()
        .pending
        .push(Action::SetSchedule(mvfa_studio::workflow::Schedule::Paper));
    h.step();
    press(&mut h, Modifiers::COMMAND, Key::T);
    let mut idle = Vec::new();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 300 && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(16));
        let t = Instant::now();
        h.step();
        let dt = t.elapsed();
        if h.state().state.activity.model_running(ModelJobKind::Train)
            && !h.state().state.model.training.losses.is_empty()
        {
            times.push(dt);
        } else {
            idle.push(dt);
        }
    }
    press(&mut h, Modifiers::NONE, Key::Escape);
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len().max(1) as f64;
    println!(
        "frame time while fine-tuning ({} frames, {} steps done): mean {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        times.len(),
        h.state().state.model.training.losses.len(),
        mean,
        ms(times[times.len() * 95 / 100]),
        ms(*times.last().unwrap())
    );
}

/// Scoring goes nearest-first: the shown frame, then its neighbours in the series by distance.
/// Side by side halves the viewer, so both panes share the zoom that fits one.
#[test]
fn app_model_scores_nearest_first_and_side_by_side_halves_the_panes() {
    let dir = tempfile::tempdir().unwrap();
    let folder = study(dir.path());
    let mut h = harness();
    h.state_mut()
        .pending
        .push(Action::Open(vec![folder.clone()]));
    wait_until(&mut h, "the scan", 20, |s| {
        s.activity.scan.is_none() && s.browser.len() == 8
    });
    // Browser order: a0 a1 n0 n1 t0 t1 t2 t3.
    show(&mut h, &key(&folder, "n1.png"));
    let queue = score_queue(&h.state().state, 5);
    let names: Vec<String> = queue
        .iter()
        .map(|k| k.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "n1.png");
    let mut near = names[1..3].to_vec();
    near.sort();
    assert_eq!(near, ["n0.png", "t0.png"]);
    let mut next = names[3..5].to_vec();
    next.sort();
    assert_eq!(next, ["a1.png", "t1.png"]);

    let whole = h.state().state.viewer.viewport[0];
    press(&mut h, Modifiers::NONE, Key::D);
    h.step();
    let half = h.state().state.viewer.viewport[0];
    assert!(h.state().state.model.view.side_by_side);
    assert!((half - whole / 2.0).abs() < 4.0, "{half} vs {whole}");
}
