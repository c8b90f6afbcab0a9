//! The radiologist's workspace driven through the real app (egui_kittest, no window): open
//! the fixture studies (DICOM series and folder with an unreadable file, DICOMDIR,
//! multi-frame, PNG folder, NIfTI), change the window, scroll frames, label shots, paint a
//! mask, undo and redo, save, reopen, recover after a crash, help and palette.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui::{self, Event, Key, Modifiers, PointerButton, Pos2, pos2, vec2};
use egui_kittest::kittest::Queryable;
use mvfa_studio::app::action::Action;
use mvfa_studio::app::state::AppState;
use mvfa_studio::app::state::labels::{ImageKey, Label};
use mvfa_studio::app::state::viewer::Tool;

use crate::support::app::{AppHarness as H, cpu_state, press};
use crate::support::images::png_folder;
use crate::support::{self, fixture_dir};

/// A point inside the viewer (between the browser and the right panel).
const VIEWER: Pos2 = pos2(640.0, 430.0);

fn app(autosave: Option<PathBuf>) -> AppState {
    cpu_state(autosave)
}

fn harness(state: AppState) -> H {
    support::app::harness(state, [1280.0, 800.0])
}

/// Steps frames until `done` holds (jobs run on threads), failing after 20 s.
fn wait_until(h: &mut H, what: &str, done: impl Fn(&AppState) -> bool) {
    support::app::wait_until(h, what, 20, done)
}

/// Opens `paths` and waits until the scan is over and the current image is decoded.
fn open(h: &mut H, paths: Vec<PathBuf>) {
    h.state_mut().pending.push(Action::Open(paths));
    wait_until(h, "the scan and the first image", |s| {
        s.activity.scan.is_none() && s.current_stack().is_some()
    });
}

fn current(h: &H) -> ImageKey {
    h.state()
        .state
        .viewer
        .current
        .clone()
        .expect("an image is shown")
}

/// Presses `button` at the first point, moves through the others and releases at the last.
fn pointer_path(h: &mut H, button: PointerButton, points: &[Pos2]) {
    let (Some(&first), Some(&last)) = (points.first(), points.last()) else {
        return;
    };
    let button_event = |pos, pressed| Event::PointerButton {
        pos,
        button,
        pressed,
        modifiers: Modifiers::NONE,
    };
    h.event(Event::PointerMoved(first));
    h.step();
    h.event(button_event(first, true));
    h.step();
    for &p in &points[1..] {
        h.event(Event::PointerMoved(p));
        h.step();
    }
    h.event(button_event(last, false));
    h.step();
}

/// A drag with `button` from `from` to `to` in a few moves.
fn drag(h: &mut H, button: PointerButton, from: Pos2, to: Pos2) {
    let points: Vec<Pos2> = (0..=4)
        .map(|i| from + (to - from) * (i as f32 / 4.0))
        .collect();
    pointer_path(h, button, &points);
}

fn wheel(h: &mut H, modifiers: Modifiers, notches: f32) {
    h.event(Event::PointerMoved(VIEWER));
    h.event(Event::MouseWheel {
        unit: egui::MouseWheelUnit::Line,
        delta: vec2(0.0, notches),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Unknown,
        modifiers,
    });
    h.step();
}

#[test]
fn app_workspace_opens_series_multiframe_png_folder_and_nifti() {
    let dir = tempfile::tempdir().unwrap();
    let pngs = png_folder(dir.path(), 2);
    let mut h = harness(app(None));
    open(
        &mut h,
        vec![
            fixture_dir("dicom/study_folder"),
            fixture_dir("dicom/enhanced_multiframe.dcm"),
            pngs.clone(),
            fixture_dir("io/nifti/ras_identity_scaled.nii"),
        ],
    );
    let s = &h.state().state;
    // Series A (3 slices and the enhanced file, which shares its series UID), series B (2),
    // the MR study, and two folders.
    let sizes: Vec<usize> = s.browser.groups.iter().map(|g| g.items.len()).collect();
    assert!(sizes.contains(&4) && sizes.contains(&2), "{sizes:?}");
    assert_eq!(s.browser.len(), 3 + 2 + 1 + 1 + 2 + 1, "{sizes:?}");
    assert!(
        s.browser
            .unreadable
            .iter()
            .any(|(p, _)| p.ends_with("broken.dcm")),
        "{:?}",
        s.browser.unreadable
    );
    h.step();
    h.get_by_label_contains("Unreadable (1)");
    h.get_by_label("img1.png");
    // The first image of the first group was shown as soon as it was found.
    let first = h.state().state.browser.groups[0].items[0].path.clone();
    assert_eq!(current(&h).path, first);

    // Selecting the multi-frame file and scrolling its frames.
    h.get_by_label_contains("enhanced_multiframe.dcm").click();
    wait_until(&mut h, "the multi-frame file", |s| {
        s.current_stack().is_some()
    });
    assert_eq!(h.state().state.current_stack().unwrap().frames.len(), 3);
    press(&mut h, Modifiers::NONE, Key::ArrowDown);
    assert_eq!(current(&h).frame, 1);
    press(&mut h, Modifiers::NONE, Key::ArrowDown);
    assert_eq!(current(&h).frame, 2);

    // The NIfTI volume: its slice count is known once loaded, then Page Down scrolls.
    h.get_by_label("ras_identity_scaled.nii").click();
    wait_until(&mut h, "the NIfTI volume", |s| s.current_stack().is_some());
    let slices = h.state().state.current_stack().unwrap().frames.len();
    assert!(slices > 1);
    h.step();
    press(&mut h, Modifiers::NONE, Key::PageDown);
    assert_eq!(current(&h).frame, (slices - 1).min(10));
}

#[test]
fn app_workspace_opens_a_dicomdir() {
    let mut h = harness(app(None));
    open(&mut h, vec![fixture_dir("dicom/dicomdir_set/DICOMDIR")]);
    let s = &h.state().state;
    assert_eq!(s.browser.len(), 6);
    assert!(
        s.browser.unreadable.is_empty(),
        "{:?}",
        s.browser.unreadable
    );
    // Previews follow in the background, one per file.
    wait_until(&mut h, "the previews", |s| s.thumbnails.len() == 6);
}

#[test]
fn app_workspace_window_zoom_and_frame_scrolling_on_a_ct_series() {
    let mut h = harness(app(None));
    open(&mut h, vec![fixture_dir("dicom/study_folder/sub")]);
    wait_until(&mut h, "the whole series", |s| s.activity.load.is_none());
    let first = current(&h);
    assert!(first.path.ends_with("a.dcm"));

    // Frames: arrows, Shift+wheel, End / Home.
    press(&mut h, Modifiers::NONE, Key::ArrowDown);
    assert!(current(&h).path.ends_with("b.dcm"));
    wheel(&mut h, Modifiers::SHIFT, -1.0);
    assert!(current(&h).path.ends_with("c.dcm"));
    press(&mut h, Modifiers::NONE, Key::Home);
    assert_eq!(current(&h), first);
    let builds = h.state().textures.builds;
    press(&mut h, Modifiers::NONE, Key::ArrowDown);
    press(&mut h, Modifiers::NONE, Key::ArrowUp);
    assert_eq!(
        h.state().textures.builds,
        builds,
        "coming back to frames reuses their textures"
    );

    // Window: CT presets on the number keys, right drag, inversion.
    press(&mut h, Modifiers::NONE, Key::Num3);
    let display = |h: &H| h.state().state.display_for(&current(h).path).unwrap();
    assert_eq!(display(&h).window.label, "Lung");
    assert_eq!(
        (display(&h).window.center, display(&h).window.width),
        (-600.0, 1500.0)
    );
    h.get_by_label_contains("Brain").click();
    h.step();
    assert_eq!(
        (display(&h).window.center, display(&h).window.width),
        (40.0, 80.0)
    );
    drag(
        &mut h,
        PointerButton::Secondary,
        VIEWER,
        VIEWER + vec2(60.0, 30.0),
    );
    let w = display(&h).window;
    assert!(w.width > 80.0 && w.center > 40.0, "{w:?}");
    // The window is shared by the slices of the series.
    press(&mut h, Modifiers::NONE, Key::ArrowDown);
    assert_eq!(display(&h).window, w);
    press(&mut h, Modifiers::NONE, Key::I);
    assert!(display(&h).invert);

    // Zoom: keys, wheel about the cursor, fit, 1:1.
    let fit_zoom = {
        let s = &h.state().state;
        s.viewer.effective_zoom([4, 4])
    };
    press(&mut h, Modifiers::NONE, Key::Plus);
    let v = &h.state().state.viewer;
    assert!(!v.fit && (v.zoom / fit_zoom - 1.25).abs() < 1e-3);
    wheel(&mut h, Modifiers::NONE, 1.0);
    assert!(h.state().state.viewer.zoom > fit_zoom * 1.25);
    press(&mut h, Modifiers::NONE, Key::F);
    assert!(h.state().state.viewer.fit);
    press(&mut h, Modifiers::NONE, Key::Num0);
    assert_eq!(h.state().state.viewer.zoom, 1.0);
    // Pan with the middle button.
    drag(
        &mut h,
        PointerButton::Middle,
        VIEWER,
        VIEWER + vec2(40.0, 0.0),
    );
    assert!(h.state().state.viewer.pan[0] > 30.0);
}

#[test]
fn app_workspace_labels_masks_undo_redo_save_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let pngs = png_folder(dir.path(), 3);
    let mut h = harness(app(None));
    open(&mut h, vec![pngs.clone()]);
    wait_until(&mut h, "the folder", |s| s.activity.load.is_none());
    let img = |i: usize| ImageKey {
        path: pngs.join(format!("img{i}.png")),
        frame: 0,
    };
    assert_eq!(current(&h), img(0));

    // N on the first image, A on the second.
    press(&mut h, Modifiers::NONE, Key::N);
    press(&mut h, Modifiers::NONE, Key::ArrowDown);
    press(&mut h, Modifiers::NONE, Key::A);
    let labels = |h: &H, i: usize| h.state().state.labels.label(&img(i));
    assert_eq!(
        (labels(&h, 0), labels(&h, 1)),
        (Some(Label::Normal), Some(Label::Abnormal))
    );
    h.get_by_label_contains("Normal 1 · Abnormal 1 · Masks 0");

    // Paint with the brush, undo, redo.
    press(&mut h, Modifiers::NONE, Key::B);
    assert_eq!(h.state().state.viewer.tool, Tool::Brush);
    press(&mut h, Modifiers::NONE, Key::CloseBracket);
    drag(
        &mut h,
        PointerButton::Primary,
        VIEWER - vec2(40.0, 0.0),
        VIEWER + vec2(40.0, 0.0),
    );
    let painted = h
        .state()
        .state
        .labels
        .mask(&img(1))
        .map(|m| m.count())
        .unwrap_or(0);
    assert!(painted > 20, "painted {painted} pixels");
    h.step();
    h.get_by_label_contains("Masks 1");
    press(&mut h, Modifiers::COMMAND, Key::Z);
    assert!(h.state().state.labels.mask(&img(1)).is_none());
    press(&mut h, Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    assert_eq!(
        h.state().state.labels.mask(&img(1)).unwrap().count(),
        painted
    );

    // Erase part of it, then fill a closed outline.
    press(&mut h, Modifiers::NONE, Key::E);
    drag(
        &mut h,
        PointerButton::Primary,
        VIEWER - vec2(40.0, 0.0),
        VIEWER,
    );
    let erased = h.state().state.labels.mask(&img(1)).unwrap().count();
    assert!(erased < painted);
    press(&mut h, Modifiers::NONE, Key::L);
    let square: Vec<Pos2> = [
        (-60.0, -60.0),
        (60.0, -60.0),
        (60.0, 60.0),
        (-60.0, 60.0),
        (-60.0, -60.0),
    ]
    .into_iter()
    .map(|(x, y)| VIEWER + vec2(x, y))
    .collect();
    pointer_path(&mut h, PointerButton::Primary, &square);
    let filled = h.state().state.labels.mask(&img(1)).unwrap().clone();
    assert!(filled.count() > erased, "{} vs {erased}", filled.count());

    // Importing a mask image replaces the mask (one undo step).
    let drawn = dir.path().join("drawn_mask.png");
    image::GrayImage::from_fn(64, 48, |x, _| image::Luma([if x < 16 { 255 } else { 0 }]))
        .save(&drawn)
        .unwrap();
    h.state_mut().pending.push(Action::ImportMaskFrom(drawn));
    wait_until(&mut h, "the imported mask", |s| {
        s.labels.mask(&img(1)).is_some_and(|m| m.count() == 16 * 48)
    });
    assert_eq!(
        h.state().state.labels.mask(&img(1)).unwrap().count(),
        16 * 48
    );
    press(&mut h, Modifiers::COMMAND, Key::Z);
    assert_eq!(h.state().state.labels.mask(&img(1)), Some(&filled));

    // Multi-select in the browser and label both at once.
    h.get_by_label("img0.png").click();
    h.step();
    h.get_by_label("img2.png")
        .click_modifiers(Modifiers::COMMAND);
    h.step();
    assert_eq!(h.state().state.selection.len(), 2);
    press(&mut h, Modifiers::NONE, Key::A);
    assert_eq!(
        (labels(&h, 0), labels(&h, 2)),
        (Some(Label::Abnormal), Some(Label::Abnormal))
    );
    press(&mut h, Modifiers::COMMAND, Key::Z);
    assert_eq!((labels(&h, 0), labels(&h, 2)), (Some(Label::Normal), None));

    // Save, close, reopen: the same labels and masks.
    let project = dir.path().join("study.mvfa.json");
    h.state_mut()
        .pending
        .push(Action::SaveProjectTo(project.clone()));
    wait_until(&mut h, "the save", |s| !s.unsaved());
    let text = std::fs::read_to_string(&project).unwrap();
    assert!(
        text.contains("\"label\": \"Abnormal\"") && text.contains("sha256"),
        "{text}"
    );
    drop(h);

    let mut h = harness(app(None));
    h.state_mut()
        .pending
        .push(Action::OpenProject(project.clone()));
    wait_until(&mut h, "the project's studies", |s| {
        s.activity.scan.is_none() && s.current_stack().is_some()
    });
    let s = &h.state().state;
    assert_eq!(s.labels.label(&img(0)), Some(Label::Normal));
    assert_eq!(s.labels.label(&img(1)), Some(Label::Abnormal));
    assert_eq!(s.labels.label(&img(2)), None);
    assert_eq!(s.labels.mask(&img(1)), Some(&filled));
    assert_eq!(s.viewer.current.as_ref(), Some(&img(0)));
    assert_eq!(s.browser.len(), 3);
    assert!(s.project.set_aside.is_empty());
    drop(h);

    // A file changed since: its labels are set aside and reported, never applied.
    let changed = image::GrayImage::from_pixel(64, 48, image::Luma([7u8]));
    changed.save(img(1).path).unwrap();
    let mut h = harness(app(None));
    h.state_mut()
        .pending
        .push(Action::OpenProject(project.clone()));
    wait_until(&mut h, "the project's studies", |s| {
        s.activity.project.is_none() && s.activity.scan.is_none()
    });
    let s = &h.state().state;
    assert_eq!(s.labels.label(&img(1)), None);
    assert!(s.labels.mask(&img(1)).is_none());
    assert_eq!(s.project.set_aside.len(), 1);
    assert!(s.project.set_aside[0].reason.contains("changed"));
    h.step();
    h.get_by_label("Moved or changed files");
    drop(h);

    // A file moved away: reported as missing, its label kept aside too.
    std::fs::rename(img(0).path, dir.path().join("moved.png")).unwrap();
    let mut h = harness(app(None));
    h.state_mut()
        .pending
        .push(Action::OpenProject(project.clone()));
    wait_until(&mut h, "the project's studies", |s| {
        s.activity.project.is_none() && s.activity.scan.is_none()
    });
    let s = &h.state().state;
    assert_eq!(s.project.set_aside.len(), 2);
    assert!(
        s.project
            .set_aside
            .iter()
            .any(|a| a.file.path == img(0).path && a.reason.contains("missing")),
        "{:?}",
        s.project.set_aside
    );
    // Saving again keeps what was set aside.
    h.state_mut()
        .pending
        .push(Action::SaveProjectTo(project.clone()));
    h.step();
    wait_until(&mut h, "the save", |s| s.activity.project.is_none());
    let text = std::fs::read_to_string(&project).unwrap();
    assert!(text.contains("set_aside") && text.contains("img0.png"));
}

#[test]
fn app_workspace_next_unlabelled_skips_labelled_images() {
    let dir = tempfile::tempdir().unwrap();
    let pngs = png_folder(dir.path(), 4);
    let img = |i: usize| ImageKey {
        path: pngs.join(format!("img{i}.png")),
        frame: 0,
    };
    let mut h = harness(app(None));
    open(&mut h, vec![pngs.clone()]);
    press(&mut h, Modifiers::NONE, Key::N);
    press(&mut h, Modifiers::NONE, Key::ArrowDown);
    press(&mut h, Modifiers::NONE, Key::A);
    press(&mut h, Modifiers::NONE, Key::Home);
    // U skips the two labelled images.
    press(&mut h, Modifiers::NONE, Key::U);
    assert_eq!(current(&h), img(2));
    press(&mut h, Modifiers::NONE, Key::N);
    press(&mut h, Modifiers::NONE, Key::U);
    assert_eq!(current(&h), img(3));
    press(&mut h, Modifiers::NONE, Key::N);
    // Every image labelled: it stays and says so.
    press(&mut h, Modifiers::NONE, Key::U);
    assert_eq!(current(&h), img(3));
    assert_eq!(
        h.state().state.log.last().map(String::as_str),
        Some("Every image of this series is labelled")
    );
}

#[test]
fn app_workspace_recovers_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let pngs = png_folder(dir.path(), 2);
    let autosave = dir.path().join("autosave.json");
    let mut h = harness(app(Some(autosave.clone())));
    h.state_mut().state.project.autosave_every = Duration::ZERO;
    open(&mut h, vec![pngs.clone()]);
    press(&mut h, Modifiers::NONE, Key::A);
    press(&mut h, Modifiers::NONE, Key::B);
    drag(
        &mut h,
        PointerButton::Primary,
        VIEWER,
        VIEWER + vec2(30.0, 30.0),
    );
    wait_until(&mut h, "the autosave", |s| {
        s.project.autosaved_revision == s.labels.revision
    });
    assert!(autosave.is_file(), "autosaved");
    let mask = h.state().state.labels.mask(&current(&h)).unwrap().clone();
    // A crash: the app goes away without its exit handler.
    drop(h);

    let mut h = harness(app(Some(autosave.clone())));
    h.step();
    assert!(h.state().state.project.recovery.is_some());
    h.get_by_label("Recover").click();
    wait_until(&mut h, "the recovered studies", |s| {
        s.activity.scan.is_none() && s.current_stack().is_some()
    });
    let s = &h.state().state;
    let key = ImageKey {
        path: pngs.join("img0.png"),
        frame: 0,
    };
    assert_eq!(s.labels.label(&key), Some(Label::Abnormal));
    assert_eq!(s.labels.mask(&key), Some(&mask));
    assert!(s.unsaved(), "recovered work is unsaved until saved");

    // Discarding instead removes the autosave.
    drop(h);
    let mut h = harness(app(Some(autosave.clone())));
    h.step();
    h.get_by_label("Discard").click();
    h.step();
    assert!(!autosave.exists());
}

#[test]
fn app_workspace_help_palette_and_metadata() {
    let mut h = harness(app(None));
    open(&mut h, vec![fixture_dir("dicom/ct_rescale_windows.dcm")]);
    press(&mut h, Modifiers::NONE, Key::F1);
    h.get_by_label("Commands and shortcuts");
    // Every command is listed with its tooltip.
    for command in mvfa_studio::app::commands::Command::ALL {
        assert!(
            !h.get_all_by_label(command.tooltip())
                .collect::<Vec<_>>()
                .is_empty(),
            "{command:?} missing from the help"
        );
    }
    press(&mut h, Modifiers::NONE, Key::F1);
    assert!(!h.state().state.viewer.show_help);

    // The palette runs a command found by name.
    press(&mut h, Modifiers::COMMAND, Key::K);
    assert!(h.state().state.viewer.show_palette);
    h.step();
    h.event(Event::Text("invert".into()));
    h.step();
    press(&mut h, Modifiers::NONE, Key::Enter);
    let s = &h.state().state;
    assert!(!s.viewer.show_palette);
    assert!(s.display_for(&current(&h).path).unwrap().invert);
    press(&mut h, Modifiers::COMMAND, Key::K);
    h.step();
    press(&mut h, Modifiers::NONE, Key::Escape);
    assert!(
        !h.state().state.viewer.show_palette,
        "Escape closes the palette"
    );

    // A length measurement, in mm from the file's pixel spacing.
    press(&mut h, Modifiers::NONE, Key::M);
    drag(
        &mut h,
        PointerButton::Primary,
        VIEWER - vec2(50.0, 0.0),
        VIEWER + vec2(50.0, 0.0),
    );
    let m = h.state().state.viewer.measurements.clone();
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].to[0] > m[0].from[0]);

    // Metadata, searchable.
    press(&mut h, Modifiers::COMMAND, Key::I);
    h.step();
    h.get_by_label("Metadata");
    h.get_all_by_label_contains("Modality")
        .next()
        .expect("Modality row");
}

#[test]
fn app_workspace_unreadable_file_is_reported_not_fatal() {
    let mut h = harness(app(None));
    h.state_mut().pending.push(Action::Open(vec![
        fixture_dir("dicom/truncated.dcm"),
        fixture_dir("dicom/ct_rescale_windows.dcm"),
    ]));
    wait_until(&mut h, "the scan and loads", |s| {
        s.activity.scan.is_none() && s.activity.load.is_none() && !s.browser.unreadable.is_empty()
    });
    let unreadable = &h.state().state.browser.unreadable;
    assert!(unreadable[0].0.ends_with("truncated.dcm"), "{unreadable:?}");
    assert!(!unreadable[0].1.is_empty());
}

/// Mean, 95th percentile and worst of `times`, in ms.
fn summary(times: &[Duration]) -> String {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let p95 = ms[(ms.len() * 95 / 100).min(ms.len() - 1)];
    format!(
        "mean {mean:.1} ms, p95 {p95:.1} ms, worst {:.1} ms over {} frames",
        ms[ms.len() - 1],
        ms.len()
    )
}

/// Times `frames` UI frames, each after `input` queued its events.
fn time_frames(h: &mut H, frames: usize, mut input: impl FnMut(&mut H, usize)) -> Vec<Duration> {
    (0..frames)
        .map(|i| {
            input(h, i);
            let start = Instant::now();
            h.step();
            start.elapsed()
        })
        .collect()
}

/// Frame times of the viewer on the UI thread (windowing, texture creation, layout; not the
/// GPU upload, which the test harness does not do): scrolling a 512 x 512 CT series and
/// working on a 4096 x 4096 16-bit radiograph. A measurement, printed, not asserted: run with
/// `cargo test --test integration app_workspace_corpus_frame_times -- --ignored --nocapture`.
#[test]
#[ignore = "needs the shared DICOM corpus (../shared/data/dicom); a measurement: run with --ignored --nocapture"]
fn app_workspace_corpus_frame_times() {
    // A 512 x 512 CT slice.
    let ct = support::corpus::file("pydicom/J2K_pixelrep_mismatch.dcm");
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("ct");
    std::fs::create_dir_all(&series).unwrap();
    let slices = 60;
    for i in 0..slices {
        std::fs::copy(&ct, series.join(format!("slice{i:03}.dcm"))).unwrap();
    }
    let mut h = harness(app(None));
    open(&mut h, vec![series]);
    wait_until(&mut h, "the series", |s| s.activity.load.is_none());
    assert_eq!(h.state().state.sequence().len(), slices);
    let down = |h: &mut H, _| h.key_press(Key::ArrowDown);
    let first = time_frames(&mut h, slices - 1, down);
    press(&mut h, Modifiers::NONE, Key::Home);
    let again = time_frames(&mut h, slices - 1, down);
    println!("512x512 CT series, {slices} slices, one slice per frame:");
    println!(
        "  first pass (texture built per slice): {}",
        summary(&first)
    );
    println!(
        "  second pass (textures cached):        {}",
        summary(&again)
    );

    let big = dir.path().join("radiograph.png");
    let img = image::ImageBuffer::from_fn(4096, 4096, |x, y| {
        image::Luma([((x * 7 + y * 13) % 4096) as u16 * 16])
    });
    img.save(&big).unwrap();
    let mut h = harness(app(None));
    let start = Instant::now();
    open(&mut h, vec![big]);
    println!(
        "4096x4096 16-bit radiograph: decoded and first shown in {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let drag_frames = |h: &mut H| {
        h.event(Event::PointerMoved(VIEWER));
        h.event(Event::PointerButton {
            pos: VIEWER,
            button: PointerButton::Secondary,
            pressed: true,
            modifiers: Modifiers::NONE,
        });
        h.step();
        let times = time_frames(h, 30, |h, i| {
            h.event(Event::PointerMoved(
                VIEWER + vec2(10.0 * (i + 1) as f32, 5.0),
            ));
        });
        h.event(Event::PointerButton {
            pos: VIEWER,
            button: PointerButton::Secondary,
            pressed: false,
            modifiers: Modifiers::NONE,
        });
        h.step();
        times
    };
    println!("  window drag, fitted:  {}", summary(&drag_frames(&mut h)));
    let zoom = time_frames(&mut h, 1, |h, _| h.key_press(Key::Num0));
    println!("  switch to 1:1:        {}", summary(&zoom));
    println!("  window drag at 1:1:   {}", summary(&drag_frames(&mut h)));
    let pan = time_frames(&mut h, 30, |h, i| {
        let p = VIEWER + vec2(i as f32, 0.0);
        h.event(Event::PointerMoved(p));
    });
    println!("  hover at 1:1:         {}", summary(&pan));
}

/// A file dropped on the window, as the windowing integration hands it over.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn app_workspace_opens_dropped_files_and_remembers_them() {
    let mut h = harness(app(None));
    let dropped = fixture_dir("dicom/enhanced_multiframe.dcm");
    h.input_mut()
        .dropped_files
        .push(std::sync::Arc::new(Dropped(dropped.clone())));
    wait_until(&mut h, "the dropped file", |s| {
        s.activity.scan.is_none() && s.current_stack().is_some()
    });
    assert_eq!(current(&h).path, dropped);
    assert_eq!(h.state().state.persisted.recent, vec![dropped.clone()]);

    // The recent list reopens it in a new session.
    let persisted = h.state().state.persisted.clone();
    let mut h = harness(AppState::new(persisted, None));
    h.state_mut()
        .pending
        .push(Action::OpenRecent(dropped.clone()));
    wait_until(&mut h, "the recent file", |s| s.current_stack().is_some());
    assert_eq!(current(&h).path, dropped);
}

#[test]
fn app_workspace_keeps_decoded_images_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let pngs = png_folder(dir.path(), 5);
    let mut h = harness(app(None));
    // Room for two 64 x 48 images in modality units (4 bytes a sample).
    h.state_mut().state.image_budget = 2 * 64 * 48 * 4;
    open(&mut h, vec![pngs.clone()]);
    wait_until(&mut h, "the loader to stop", |s| s.activity.load.is_none());
    let s = &h.state().state;
    assert!(s.images.len() <= 2, "{} images kept", s.images.len());
    assert!(s.current_stack().is_some(), "the current image stays");
    // Scrolling on decodes what was dropped.
    for _ in 0..4 {
        press(&mut h, Modifiers::NONE, Key::ArrowDown);
        wait_until(&mut h, "the next image", |s| s.current_stack().is_some());
    }
    assert_eq!(current(&h).path, pngs.join("img4.png"));
    assert!(h.state().state.images.len() <= 2);
}

/// A series whose first slice does not decode opens on the next slice that does; the broken
/// one is listed as unreadable, and the user can still go back to it (and read why).
#[test]
fn app_workspace_series_with_a_broken_first_slice_opens_on_an_image() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.dcm", "b.dcm", "c.dcm"] {
        std::fs::copy(
            fixture_dir("dicom/study_folder/sub").join(name),
            dir.path().join(name),
        )
        .unwrap();
    }
    let opened = |h: &mut H| {
        h.state_mut()
            .pending
            .push(Action::Open(vec![dir.path().to_path_buf()]));
        wait_until(h, "the scan and the first load", |s| {
            s.activity.scan.is_none() && s.activity.load.is_none() && s.viewer.current.is_some()
        });
    };
    // The series' order, then its first slice made undecodable with a header that still
    // reads: Rows doubled, so the pixel data falls short (found when it is loaded, not when
    // the folder is scanned).
    let mut h = harness(app(None));
    opened(&mut h);
    let first = h.state().state.browser.groups[0].items[0].path.clone();
    drop(h);
    let mut bytes = std::fs::read(&first).unwrap();
    let rows = bytes
        .windows(6)
        .position(|w| w == b"\x28\x00\x10\x00US")
        .expect("Rows in explicit VR")
        + 8;
    bytes[rows] *= 2;
    std::fs::write(&first, &bytes).unwrap();

    let mut h = harness(app(None));
    opened(&mut h);
    wait_until(&mut h, "an image on show", |s| s.current_stack().is_some());
    let s = &h.state().state;
    let current = s.viewer.current.clone().unwrap();
    assert_ne!(current.path, first, "opened on the broken slice");
    assert_eq!(current.path, s.browser.groups[0].items[1].path);
    assert!(
        s.browser.unreadable.iter().any(|(p, _)| *p == first),
        "the broken slice is listed: {:?}",
        s.browser.unreadable
    );
    // Going back to it shows why it cannot be shown (in a viewer narrower than the message).
    h.state_mut().pending.push(Action::Show(ImageKey {
        path: first.clone(),
        frame: 0,
    }));
    h.step();
    h.step();
    assert_eq!(h.state().state.viewer.current.as_ref().unwrap().path, first);
}

/// The right-hand panel keeps its width whichever tab it shows.
#[test]
fn app_workspace_side_panel_keeps_its_width_across_tabs() {
    use mvfa_studio::app::state::viewer::SideTab;
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(app(None));
    open(&mut h, vec![png_folder(dir.path(), 3)]);
    // The tab row's "Results" button: its left edge moves with the panel's.
    let tab_left = |h: &H| {
        h.get_all_by_label("Results")
            .map(|n| n.rect())
            .filter(|r| r.left() > 640.0 && r.top() > 20.0 && r.top() < 60.0)
            .map(|r| r.left())
            .next()
            .expect("the Results tab")
    };
    let mut lefts = Vec::new();
    for tab in [
        SideTab::Image,
        SideTab::Model,
        SideTab::Results,
        SideTab::Image,
    ] {
        h.state_mut().pending.push(Action::SetTab(tab));
        for _ in 0..3 {
            h.step();
        }
        lefts.push((tab, tab_left(&h)));
    }
    eprintln!("{lefts:?}");
    assert!(
        lefts.iter().all(|(_, x)| *x == lefts[0].1),
        "the panel's width changed: {lefts:?}"
    );
}
