//! `score` writes `series.csv` (issue 22): one row per series, with the series in slice order
//! by geometry (not file names), checked against `scores.csv` and the files' own headers.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cli_commands::{make_checkpoint, write_inputs};
use crate::support::cli::{bin, csv_lines, no_temp_files, run};
use crate::support::{fixture_dir, tiny_clip};

/// Splits a CSV line without quoted commas (the test's paths have none).
fn fields(line: &str) -> Vec<String> {
    line.split(',')
        .map(|f| f.trim_matches('"').to_string())
        .collect()
}

/// `score --clip <tiny CLIP> --checkpoint <ckpt> <inputs> --out <out> --cpu`.
fn score_command(ckpt: &Path, inputs: &[&Path], out: &Path) -> std::process::Command {
    let mut c = bin();
    c.arg("score")
        .arg("--clip")
        .arg(tiny_clip())
        .arg("--checkpoint")
        .arg(ckpt)
        .args(inputs)
        .arg("--out")
        .arg(out)
        .arg("--cpu");
    c
}

/// Image Position Patient's z of a DICOM file (the fixtures are axial).
fn z_of(path: &Path) -> f64 {
    let obj = dicom_object::open_file(path).unwrap();
    let ipp = obj
        .element(dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT)
        .unwrap()
        .to_multi_float64()
        .unwrap();
    ipp[2]
}

#[test]
fn score_writes_series_csv_in_geometric_slice_order() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    write_inputs(tmp.path());
    // A three-slice CT series whose file names run against its geometry.
    let series_dir = tmp.path().join("ct");
    std::fs::create_dir_all(&series_dir).unwrap();
    for (from, to) in [
        ("c.dcm", "s1.dcm"),
        ("a.dcm", "s2.dcm"),
        ("b.dcm", "s3.dcm"),
    ] {
        std::fs::copy(
            fixture_dir("dicom/study_folder/sub").join(from),
            series_dir.join(to),
        )
        .unwrap();
    }
    let out = tmp.path().join("out");
    let images = tmp.path().join("images");
    let (o, stdout, stderr) = run(&mut score_command(&ckpt, &[&images, &series_dir], &out));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("wrote 2 series to"), "{stdout}");
    no_temp_files(&out);

    let scores: HashMap<PathBuf, f64> = csv_lines(&out.join("scores.csv"))[1..]
        .iter()
        .map(|l| {
            let f = fields(l);
            (PathBuf::from(&f[0]), f[1].parse().unwrap())
        })
        .collect();
    let lines = csv_lines(&out.join("series.csv"));
    let header = fields(&lines[0]);
    assert_eq!(
        header,
        [
            "study_instance_uid",
            "series_instance_uid",
            "location",
            "description",
            "slices",
            "scored_slices",
            "series_score",
            "max_score",
            "top3_mean_score",
            "peak_slice",
            "peak_file",
            "peak_frame",
            "slices_at_or_above_threshold",
            "threshold",
        ]
    );
    let rows: Vec<HashMap<&str, String>> = lines[1..]
        .iter()
        .map(|l| header.iter().map(String::as_str).zip(fields(l)).collect())
        .collect();
    assert_eq!(rows.len(), 2);
    // Most anomalous first.
    let score = |r: &HashMap<&str, String>| r["series_score"].parse::<f64>().unwrap();
    assert!(score(&rows[0]) >= score(&rows[1]));
    let threshold: f64 = rows[0]["threshold"].parse().unwrap();
    for row in &rows {
        let files: Vec<PathBuf> = if row["series_instance_uid"].is_empty() {
            assert_eq!(
                row["location"],
                tmp.path().join("images").display().to_string()
            );
            let mut f = vec![
                tmp.path().join("images/case_a.png"),
                tmp.path().join("images/case_b.png"),
            ];
            f.sort();
            f
        } else {
            assert!(!row["study_instance_uid"].is_empty());
            // Slice order by Image Position along the normal, not by name.
            let mut f: Vec<PathBuf> = ["s1.dcm", "s2.dcm", "s3.dcm"]
                .iter()
                .map(|n| series_dir.join(n))
                .collect();
            f.sort_by(|a, b| z_of(a).total_cmp(&z_of(b)));
            assert_ne!(f[0], series_dir.join("s1.dcm"));
            f
        };
        assert_eq!(row["slices"], files.len().to_string());
        assert_eq!(row["scored_slices"], files.len().to_string());
        let slice_scores: Vec<f64> = files.iter().map(|f| scores[f]).collect();
        let max = slice_scores
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let max_col: f64 = row["max_score"].parse().unwrap();
        assert!((max_col - max).abs() < 1e-5, "{max_col} vs {max}");
        assert_eq!(row["series_score"], row["max_score"]);
        let peak: usize = row["peak_slice"].parse().unwrap();
        assert!((slice_scores[peak - 1] - max).abs() < 1e-5);
        assert_eq!(row["peak_file"], files[peak - 1].display().to_string());
        assert_eq!(row["peak_frame"], "0");
        let mut sorted = slice_scores.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let top: f64 = sorted.iter().take(3).sum::<f64>() / sorted.len().min(3) as f64;
        let top_col: f64 = row["top3_mean_score"].parse().unwrap();
        assert!((top_col - top).abs() < 1e-4, "{top_col} vs {top}");
        let flagged = slice_scores.iter().filter(|&&s| s >= threshold).count();
        assert_eq!(row["slices_at_or_above_threshold"], flagged.to_string());
    }

    // A wrong --slice-context is refused with the forms it takes.
    let mut c = bin();
    c.args(["score", "--slice-context", "median:2"])
        .arg("--clip")
        .arg(tiny_clip())
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg(&series_dir)
        .arg("--out")
        .arg(tmp.path().join("out2"));
    let (o, _, stderr) = run(&mut c);
    assert!(!o.status.success());
    assert!(stderr.contains("give off, max:W or mean:W"), "{stderr}");
}

#[test]
fn synth_data_writes_volumes_as_dicom_series_in_shuffled_file_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("synth");
    let (o, stdout, stderr) = run(bin().args([
        "synth-data".as_ref(),
        out.as_os_str(),
        "--normal".as_ref(),
        "0".as_ref(),
        "--abnormal".as_ref(),
        "0".as_ref(),
        "--size".as_ref(),
        "48".as_ref(),
        "--volumes".as_ref(),
        "4".as_ref(),
        "--slices".as_ref(),
        "8".as_ref(),
    ]));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("wrote 4 volume(s) of 8 slices"), "{stdout}");
    let scan = mvfa_studio::io::study::scan_paths(&[out.join("volumes")], &mut |_| {
        std::ops::ControlFlow::Continue(())
    });
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!((scan.series_count(), scan.instance_count()), (4, 32));
    let mut shuffled = 0;
    for study in &scan.studies {
        for series in &study.series {
            let files: Vec<PathBuf> = series
                .instances
                .iter()
                .map(|i| i.path().to_path_buf())
                .collect();
            let z: Vec<f64> = files.iter().map(|f| z_of(f)).collect();
            assert!(
                z.windows(2).all(|w| w[0] < w[1]),
                "slice order by position: {z:?}"
            );
            let mut by_name = files.clone();
            by_name.sort();
            shuffled += usize::from(by_name != files);
            // Lesion volumes: masks for the slices that show the lesion, adjacent slices.
            let lesion = files[0]
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("lesion");
            let masked: Vec<usize> = files
                .iter()
                .enumerate()
                .filter(|(_, f)| {
                    let volume = f.parent().unwrap().file_name().unwrap();
                    let stem = f.file_stem().unwrap().to_string_lossy();
                    out.join("masks/volumes")
                        .join(volume)
                        .join(format!("{stem}.png"))
                        .exists()
                })
                .map(|(i, _)| i)
                .collect();
            if lesion {
                assert!(masked.len() >= 2, "{masked:?}");
                assert_eq!(
                    masked.last().unwrap() - masked[0] + 1,
                    masked.len(),
                    "{masked:?}"
                );
            } else {
                assert!(masked.is_empty());
            }
        }
    }
    assert!(
        shuffled >= 3,
        "file names follow the geometry in {} of 4",
        4 - shuffled
    );
}

/// Batches span files: a run is reproducible digit for digit, and the batch size moves a
/// score only at the level of float rounding.
#[test]
fn score_batches_across_files_reproducibly() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    let folder = tmp.path().join("series");
    for (i, img) in mvfa_studio::train::synthetic::generate(11, 10, 64, true)
        .iter()
        .enumerate()
    {
        crate::support::images::write_grey(
            &folder.join(format!("s{i:02}.png")),
            64,
            64,
            &img.pixels,
        );
    }
    let scores = |batch: &str, run_name: &str| -> Vec<(String, Vec<f64>)> {
        let out = tmp.path().join(run_name);
        let mut c = score_command(&ckpt, &[&folder], &out);
        c.args(["--batch", batch]);
        let (o, stdout, stderr) = run(&mut c);
        assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
        csv_lines(&out.join("scores.csv"))[1..]
            .iter()
            .map(|l| {
                let f = fields(l);
                (
                    f[0].clone(),
                    f[1..4].iter().map(|v| v.parse().unwrap()).collect(),
                )
            })
            .collect()
    };
    let eight = scores("8", "a");
    assert_eq!(eight.len(), 10);
    assert_eq!(eight, scores("8", "b"), "the same run twice");
    for ((path, a), (_, b)) in eight.iter().zip(&scores("1", "c")) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{path}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn bench_series_prints_the_throughput_of_a_whole_series() {
    let (o, stdout, stderr) = run(crate::support::cli::dev_bin().args([
        "bench",
        "--series",
        "6",
        "--slice-size",
        "64",
        "--layers",
        "2",
        "--width",
        "64",
        "--embed-dim",
        "32",
        "--text-layers",
        "1",
        "--text-width",
        "32",
        "--cpu",
    ]));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("| slices | 6 (64 x 64, DICOM, 8-bit) |"),
        "{stdout}"
    );
    assert!(stdout.contains("slices/s"), "{stdout}");
    assert!(stdout.contains("| batch picked |"), "{stdout}");
}
