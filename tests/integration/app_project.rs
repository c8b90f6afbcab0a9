//! Projects at the size a CT series makes them, and the autosave on its own clock: opening
//! and saving a project of 500 labelled slices with frame times recorded (the hashing, mask
//! encoding and writing run as jobs, so no frame waits for them), and an autosave written by
//! an idle window that survives `kill -9`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use mvfa_studio::app::action::Action;
use mvfa_studio::app::state::AppState;
use mvfa_studio::app::state::labels::{ImageKey, Label};
use mvfa_studio::app::state::project::{self, FileEntry, LabelEntry, ProjectFile, ViewEntry};
use mvfa_studio::app::state::viewer::Viewer;
use mvfa_studio::app::ui::AUTOSAVE_SECONDS_VAR;
use mvfa_studio::io::mask::{Mask, PixelRect};

use crate::support::app::{AppHarness as H, cpu_state};

fn harness(autosave: Option<PathBuf>) -> H {
    crate::support::app::harness(cpu_state(autosave), [1280.0, 800.0])
}

/// Frame times of the frames stepped until `done` holds (failing after `limit`).
fn frames_until(
    h: &mut H,
    what: &str,
    limit: Duration,
    done: impl Fn(&AppState) -> bool,
) -> Vec<Duration> {
    let start = Instant::now();
    let mut times = Vec::new();
    loop {
        let frame = Instant::now();
        h.step();
        times.push(frame.elapsed());
        if done(&h.state().state) {
            return times;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn report(what: &str, times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let max = *sorted.last().unwrap();
    eprintln!(
        "{what}: {} frames, median {:.1} ms, max {:.1} ms",
        times.len(),
        sorted[sorted.len() / 2].as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    max
}

/// `n` 16-bit 512 x 512 slices of noise (512 KB each, like a CT slice: hashing them is real
/// work).
fn slices(dir: &Path, n: usize) -> Vec<PathBuf> {
    let folder = dir.join("series");
    std::fs::create_dir_all(&folder).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            let img = image::ImageBuffer::from_fn(512, 512, |_, _| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                image::Luma([(state >> 48) as u16])
            });
            let path = folder.join(format!("slice{i:03}.png"));
            img.save(&path).unwrap();
            path
        })
        .collect()
}

/// A project labelling every slice (odd ones abnormal, every fifth of those with a mask).
fn project_of(paths: &[PathBuf], at: &Path) -> (PathBuf, usize) {
    let mut file = ProjectFile {
        sources: vec![paths[0].parent().unwrap().to_path_buf()],
        view: ViewEntry::of(&Viewer::default()),
        ..Default::default()
    };
    let mut masks = 0;
    for (i, path) in paths.iter().enumerate() {
        file.files.push(FileEntry {
            path: path.clone(),
            sha256: mvfa_studio::weights::adapters::file_sha256_hex(path).unwrap(),
        });
        let abnormal = i % 2 == 1;
        file.labels.push(LabelEntry {
            path: path.clone(),
            frame: 0,
            label: if abnormal {
                Label::Abnormal
            } else {
                Label::Normal
            },
        });
        if abnormal && i % 5 == 0 {
            let mut mask = Mask::new(512, 512);
            let rect = PixelRect {
                x0: 100,
                y0: 120,
                x1: 180,
                y1: 200,
            };
            mask.set_region(rect, &vec![1; 80 * 80]);
            let key = ImageKey {
                path: path.clone(),
                frame: 0,
            };
            file.masks.push(project::encode_mask(&key, &mask).unwrap());
            masks += 1;
        }
    }
    let path = at.join("ct.mvfa.json");
    project::write(&path, &file).unwrap();
    (path, masks)
}

#[test]
fn app_project_of_500_labelled_slices_opens_and_saves_off_the_ui_thread() {
    let dir = tempfile::tempdir().unwrap();
    let paths = slices(dir.path(), 500);
    let (project, masks) = project_of(&paths, dir.path());
    let mut h = harness(None);

    // Open: the frame that takes the request returns before any file is hashed.
    h.state_mut().pending.push(Action::OpenProject(project));
    let first = Instant::now();
    h.step();
    let first = first.elapsed();
    assert!(
        h.state().state.activity.project.is_some(),
        "opened in a job"
    );
    assert_eq!(h.state().state.labels.counts().normal, 0);
    let mut times = vec![first];
    times.extend(frames_until(
        &mut h,
        "the project and its series",
        Duration::from_secs(300),
        |s| {
            s.activity.project.is_none() && s.activity.scan.is_none() && s.current_stack().is_some()
        },
    ));
    let open_max = report("open a 500-slice project", &times);
    let s = &h.state().state;
    let counts = s.labels.counts();
    assert_eq!(
        (counts.normal, counts.abnormal, counts.masks),
        (250, 250, masks)
    );
    assert!(s.project.set_aside.is_empty());
    assert!(!s.unsaved());

    // Frames with nothing to do, for comparison: what drawing 500 slices costs.
    let idle: Vec<Duration> = (0..10)
        .map(|_| {
            let frame = Instant::now();
            h.step();
            frame.elapsed()
        })
        .collect();
    report("idle frames with the project open", &idle);

    // Save elsewhere after an edit: hashing and mask encoding run in the save job.
    h.state_mut().pending.push(Action::Step(1));
    h.step();
    h.state_mut()
        .pending
        .push(Action::Run(mvfa_studio::app::commands::Command::ClearLabel));
    h.step();
    assert!(h.state().state.unsaved());
    let copy = dir.path().join("copy.mvfa.json");
    h.state_mut()
        .pending
        .push(Action::SaveProjectTo(copy.clone()));
    let times = frames_until(&mut h, "the save", Duration::from_secs(120), |s| {
        !s.unsaved() && s.activity.project.is_none()
    });
    let save_max = report("save a 500-slice project", &times);
    let saved = project::read(&copy).unwrap();
    assert_eq!(saved.labels.len(), 499);
    assert_eq!(saved.masks.len(), masks);
    assert_eq!(saved.files.len(), 499);
    eprintln!(
        "maximum frame time: open {:.1} ms, save {:.1} ms (CPU: {})",
        open_max.as_secs_f64() * 1e3,
        save_max.as_secs_f64() * 1e3,
        cpu_model()
    );
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// An X server of our own on a free display number, stopped on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Self {
        for number in 140..180 {
            if Path::new(&format!("/tmp/.X11-unix/X{number}")).exists() {
                continue;
            }
            let display = format!(":{number}");
            let child = Command::new("Xvfb")
                .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb runs (the test needs Xvfb)");
            let socket = format!("/tmp/.X11-unix/X{number}");
            let start = Instant::now();
            while !Path::new(&socket).exists() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "Xvfb did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            return Self { child, display };
        }
        panic!("no free X display number");
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn xdotool(display: &str, args: &[&str]) -> String {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .expect("xdotool runs (the test needs xdotool)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

#[test]
#[ignore = "needs Xvfb and xdotool (a real window, killed with SIGKILL)"]
fn app_project_autosave_of_an_idle_window_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("series");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..4 {
        image::GrayImage::from_fn(64, 48, |x, y| image::Luma([(x * 3 + y * (i + 1)) as u8]))
            .save(folder.join(format!("s{i}.png")))
            .unwrap();
    }
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let x = Xvfb::start();
    let interval = 4;
    let mut app = Command::new(env!("CARGO_BIN_EXE_mvfa-studio"))
        .arg("view")
        .arg(&folder)
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env(AUTOSAVE_SECONDS_VAR, interval.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let window = loop {
        let found = xdotool(&x.display, &["search", "--name", "MVFA Studio"]);
        if let Some(id) = found.lines().last().filter(|id| !id.is_empty()) {
            break id.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no window");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let the series open, then label three slices as a user would: N, Down, N, Down, A.
    std::thread::sleep(Duration::from_secs(3));
    xdotool(&x.display, &["windowfocus", "--sync", &window]);
    for key in ["n", "Down", "n", "Down", "a"] {
        xdotool(&x.display, &["key", "--window", &window, key]);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Leave the window alone past the interval (no input, nothing to redraw), then kill it
    // without warning.
    std::thread::sleep(Duration::from_secs(2 * interval + 2));
    app.kill().unwrap();
    let _ = app.wait();

    let autosave = find(&home, "autosave.mvfa.json").expect("an autosave was written");
    let file = project::read(&autosave).unwrap();
    let mut labels: Vec<(String, Label)> = file
        .labels
        .iter()
        .map(|l| {
            (
                l.path.file_name().unwrap().to_string_lossy().into_owned(),
                l.label,
            )
        })
        .collect();
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        labels,
        vec![
            ("s0.png".to_string(), Label::Normal),
            ("s1.png".to_string(), Label::Normal),
            ("s2.png".to_string(), Label::Abnormal),
        ]
    );

    // The next start offers the recovery, with every label.
    let mut h = harness(Some(autosave.clone()));
    h.step();
    assert!(h.state().state.project.recovery.is_some());
    h.get_by_label("Recover").click();
    frames_until(
        &mut h,
        "the recovered series",
        Duration::from_secs(30),
        |s| {
            s.activity.project.is_none() && s.activity.scan.is_none() && s.current_stack().is_some()
        },
    );
    let s = &h.state().state;
    for (name, label) in [
        ("s0.png", Label::Normal),
        ("s1.png", Label::Normal),
        ("s2.png", Label::Abnormal),
    ] {
        let key = ImageKey {
            path: folder.join(name),
            frame: 0,
        };
        assert_eq!(s.labels.label(&key), Some(label), "{name}");
    }
    assert!(s.unsaved());
}
