//! The Python package (`pip install .`) against the CLI, and the Ray archive example on a
//! local Ray cluster. The checks live in `tests/python/*.py`; these tests prepare data and a
//! detector, run them with `python3`, and fail with their output. They need the package
//! installed (and Ray for `ray_`), so they are ignored by default; `.ci/run` builds the wheel,
//! installs it and Ray, and runs them.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cli::{bin, run};
use crate::support::tiny_clip;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs `tests/python/<name>` with `args`; fails with its output unless it succeeds.
fn python(name: &str, args: &[&Path]) {
    let out = Command::new("python3")
        .arg(script(name))
        .args(args)
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{name}:\n{stdout}\n{stderr}");
    println!("{name}:\n{stdout}");
}

fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mvfa-studio"))
}

/// Synthetic images and DICOM volumes from `synth-data` (seeded).
fn synthetic(dir: &Path, seed: u64) -> PathBuf {
    let data = dir.join(format!("data-{seed}"));
    let (o, _, stderr) = run(bin()
        .args(["synth-data", "--normal", "4", "--abnormal", "4"])
        .args([
            "--volumes",
            "2",
            "--slices",
            "4",
            "--seed",
            &seed.to_string(),
            data.to_str().unwrap(),
        ]));
    assert!(o.status.success(), "{stderr}");
    data
}

/// A detector without fine-tuning (memory bank and calibration only): quick to fit.
fn quick_detector(data: &Path, out: &Path) {
    let (o, _, stderr) = run(bin()
        .args(["train", "--clip", tiny_clip().to_str().unwrap(), "--cpu"])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--organ",
            "Brain",
            "--epochs",
            "0",
        ])
        .args(["--out", out.to_str().unwrap()]));
    assert!(o.status.success(), "{stderr}");
}

#[test]
#[ignore = "needs the mvfa_studio Python package (pip install .)"]
fn python_package_fits_and_scores_as_the_cli_bit_for_bit_on_synthetic_data() {
    let dir = tempfile::tempdir().unwrap();
    let clip = tiny_clip();
    let first = synthetic(dir.path(), 11);
    // A fine-tuned fit by `train` and by `mvfa_studio.fit`, then scoring by both.
    python(
        "parity.py",
        &[&cli(), &clip, &dir.path().join("fit"), &first],
    );
    // Another draw of the data, and NIfTI volumes, scored with the first draw's detector.
    let second = synthetic(dir.path(), 12);
    let ckpt = dir.path().join("fit/cli.safetensors");
    python(
        "parity.py",
        &[
            Path::new("--checkpoint"),
            &ckpt,
            &cli(),
            &clip,
            &dir.path().join("second"),
            &second,
            &crate::support::fixture_dir("io/nifti"),
        ],
    );
}

#[test]
#[ignore = "needs the mvfa_studio Python package (pip install .) and the shared DICOM corpus"]
fn python_package_scores_the_corpus_as_the_cli_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 21);
    let ckpt = dir.path().join("quick.safetensors");
    quick_detector(&data, &ckpt);
    let corpus = crate::support::corpus::dir();
    python(
        "parity.py",
        &[
            Path::new("--checkpoint"),
            &ckpt,
            &cli(),
            &tiny_clip(),
            &dir.path().join("corpus"),
            &corpus,
        ],
    );
}

#[test]
#[ignore = "needs the mvfa_studio Python package (pip install .) and Pillow"]
fn python_package_errors_carry_the_cli_messages_and_scoring_releases_the_gil() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 31);
    let ckpt = dir.path().join("quick.safetensors");
    quick_detector(&data, &ckpt);
    python(
        "errors.py",
        &[&cli(), &tiny_clip(), &ckpt, &dir.path().join("work")],
    );
}

#[test]
#[ignore = "needs the mvfa_studio Python package (pip install .) and Ray (pip install 'ray[data]')"]
fn ray_archive_job_matches_the_cli_resumes_and_survives_a_killed_worker() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic(dir.path(), 41);
    let ckpt = dir.path().join("quick.safetensors");
    quick_detector(&data, &ckpt);
    python(
        "ray_job.py",
        &[&cli(), &tiny_clip(), &ckpt, &dir.path().join("work"), &data],
    );
}
