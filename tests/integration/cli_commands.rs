//! End-to-end runs of the built binaries: `score` and `eval` (`mvfa-studio`) and `bench` (the
//! developer binary `mvfa-dev`) on the tiny random CLIP fixture (open_clip layout, 8 blocks of width 32, embed 16, loaded at 240 px) and synthetic
//! images written as PNG files.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use burn::backend::{Autodiff, NdArray};
use mvfa_studio::model::clip::prompts::build_text_features;
use mvfa_studio::model::clip::tokenizer::ClipTokenizer;
use mvfa_studio::model::mvfa::adapter::MvfaAdaptersConfig;
use mvfa_studio::model::mvfa::detector::TaskKind;
use mvfa_studio::model::mvfa::scoring::ScoringConfig;
use mvfa_studio::train::fit::{FitModel, FitOutcome, FitSettings, Shot, Shots, fit};
use mvfa_studio::train::synthetic::{SyntheticImage, generate};
use mvfa_studio::train::trainer::TrainConfig;
use mvfa_studio::weights::adapters::{AdapterCheckpointMeta, BackboneIdentity};
use mvfa_studio::weights::clip::{LoadOptions, load_clip};
use mvfa_studio::weights::detector::save_detector;
use safetensors::SafeTensors;

use crate::support::cli::{bin, csv_lines, dev_bin, no_temp_files, run};
use crate::support::images::write_grey;
use crate::support::tiny_clip as clip_fixture;

type B = NdArray<f32>;

const SIZE: usize = 240;

fn shot(img: &SyntheticImage) -> Shot {
    let grey: Vec<f32> = img.pixels.iter().map(|&p| p as f32 / 255.0).collect();
    Shot {
        image: [grey.clone(), grey.clone(), grey].concat(),
        mask: None,
    }
}

/// A calibrated normal-shot detector for the fixture CLIP, saved with organ word "Brain".
/// `backbone` overrides the identity written into the metadata.
pub(crate) fn make_checkpoint(path: &Path, backbone: Option<BackboneIdentity>) {
    let device = Default::default();
    let (clip, _) = load_clip::<B>(&clip_fixture(), &LoadOptions::default(), &device).unwrap();
    let text = build_text_features::<B>(&ClipTokenizer::new(), "Brain", &device, |ids| {
        clip.text.encode(ids)
    })
    .unwrap();
    let adapters_cfg = MvfaAdaptersConfig::new().with_width(32).with_bottleneck(16);
    let model = FitModel {
        adapters: adapters_cfg.clone(),
        scoring: ScoringConfig::new(),
    };
    let settings = FitSettings {
        train: TrainConfig::new(),
        normal_only_task: TaskKind::Segmentation,
        batch_size: 8,
        training_augmentations: 11,
        fpr: mvfa_studio::model::mvfa::calibration::DEFAULT_FPR,
        selection: mvfa_studio::train::select::SelectionSettings::default(),
    };
    let normal: Vec<Shot> = generate(3, 2, SIZE, false).iter().map(shot).collect();
    let outcome = fit::<Autodiff<B>>(
        clip.vision,
        adapters_cfg.init(&device),
        text,
        &Shots {
            normal: normal.clone(),
            ..Shots::default()
        },
        &model,
        &settings,
        |_| {},
        &AtomicBool::new(false),
        None,
    )
    .unwrap();
    let FitOutcome::Fitted { detector, .. } = outcome else {
        panic!("not cancelled")
    };
    let meta = AdapterCheckpointMeta {
        organ_word: Some("Brain".into()),
        backbone,
        ..Default::default()
    };
    let normal: Vec<Vec<f32>> = normal.into_iter().map(|s| s.image).collect();
    save_detector(path, &detector, &normal, None, meta).unwrap();
}

/// Two readable images (one 240 px, one 200 x 160 so the heatmap must be resized back) in
/// `dir/images/`.
pub(crate) fn write_inputs(dir: &Path) -> Vec<PathBuf> {
    let images = dir.join("images");
    let a = generate(5, 1, SIZE, true).remove(0);
    write_grey(&images.join("case_a.png"), SIZE, SIZE, &a.pixels);
    let b = generate(6, 1, 200, false).remove(0);
    // 200 x 160: the top 160 rows.
    write_grey(&images.join("case_b.png"), 200, 160, &b.pixels[..200 * 160]);
    vec![images.join("case_a.png"), images.join("case_b.png")]
}

fn png_size(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `score --clip <tiny CLIP> --checkpoint <ckpt> <input> --out <out>`.
fn score_command(ckpt: &Path, input: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.arg("score")
        .arg("--clip")
        .arg(clip_fixture())
        .arg("--checkpoint")
        .arg(ckpt)
        .arg(input)
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn score_writes_deidentified_secondary_captures_for_the_pacs() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    let source = crate::support::dicom_fixture("ct_rescale_windows.dcm");
    let out = tmp.path().join("out");
    let score = |out: &Path, extra: &[&str]| {
        let mut c = score_command(&ckpt, &source, out);
        c.arg("--dicom").args(extra);
        let (o, stdout, stderr) = run(&mut c);
        assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    };
    let text = |obj: &dicom_object::DefaultDicomObject, tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    };
    use dicom_dictionary_std::tags;
    let original = dicom_object::open_file(&source).unwrap();

    // By default no burned-in Secondary Capture: the measurement report (and the series
    // objects the source's geometry allows).
    let plain = tmp.path().join("plain");
    score(&plain, &[]);
    assert!(!plain.join("ct_rescale_windows.sc.dcm").exists());
    assert!(plain.join("results-sr-1.dcm").exists());

    score(&out, &["--dicom-sc"]);
    let sc = dicom_object::open_file(out.join("ct_rescale_windows.sc.dcm")).unwrap();
    assert!(text(&sc, tags::PATIENT_ID).starts_with("ANON-"));
    assert_eq!(text(&sc, tags::PATIENT_IDENTITY_REMOVED), "YES");
    assert_eq!(text(&sc, tags::STUDY_DATE), "");
    assert_ne!(
        text(&sc, tags::STUDY_INSTANCE_UID),
        text(&original, tags::STUDY_INSTANCE_UID)
    );
    // The measurement report (TID 1500) in the Secondary Capture's (de-identified) study.
    let sr = dicom_object::open_file(out.join("results-sr-1.dcm")).unwrap();
    assert_eq!(
        text(&sr, tags::SOP_CLASS_UID),
        "1.2.840.10008.5.1.4.1.1.88.33"
    );
    assert_eq!(
        text(&sr, tags::STUDY_INSTANCE_UID),
        text(&sc, tags::STUDY_INSTANCE_UID)
    );
    assert_eq!(text(&sr, tags::PATIENT_ID), text(&sc, tags::PATIENT_ID));
    assert!(!out.join("results-sr-2.dcm").exists());
    no_temp_files(&out);

    // Identified on request: filed under the source's study.
    let identified = tmp.path().join("identified");
    score(&identified, &["--identified", "--dicom-sc"]);
    let sc = dicom_object::open_file(identified.join("ct_rescale_windows.sc.dcm")).unwrap();
    assert_eq!(
        text(&sc, tags::STUDY_INSTANCE_UID),
        text(&original, tags::STUDY_INSTANCE_UID)
    );
    assert_eq!(
        text(&sc, tags::PATIENT_ID),
        text(&original, tags::PATIENT_ID)
    );
}

#[test]
fn score_writes_heatmaps_overlays_raw_maps_and_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    write_inputs(tmp.path());
    let out = tmp.path().join("out");
    let (o, stdout, stderr) = run(bin().args([
        "score".as_ref(),
        "--clip".as_ref(),
        clip_fixture().as_os_str(),
        "--checkpoint".as_ref(),
        ckpt.as_os_str(),
        tmp.path().join("images").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--raw".as_ref(),
        "--cpu".as_ref(),
    ]));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("calibrated"), "{stderr}");

    // Heatmaps and overlays at the original size (overlays carry a legend panel on the right).
    assert_eq!(png_size(&out.join("case_a.heatmap.png")), (240, 240));
    assert_eq!(png_size(&out.join("case_b.heatmap.png")), (200, 160));
    let (w, h) = png_size(&out.join("case_b.overlay.png"));
    assert!(w > 200 && h == 160, "overlay is {w}x{h}");
    assert!(out.join("case_a.overlay.png").is_file());

    let lines = csv_lines(&out.join("scores.csv"));
    assert_eq!(
        lines[0],
        "path,score,zero_shot_score,few_shot_score,abnormal"
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, name) in lines[1..].iter().zip(["case_a.png", "case_b.png"]) {
        let fields: Vec<&str> = line.split(',').collect();
        assert!(fields[0].ends_with(name), "{line}");
        for f in &fields[1..4] {
            assert!(f.parse::<f64>().unwrap().is_finite(), "{line}");
        }
        assert!(fields[4] == "0" || fields[4] == "1", "{line}");
    }

    // Raw maps: every level and branch, fused map and scores.
    let bytes = std::fs::read(out.join("case_a.raw.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for key in [
        "zero_map",
        "zero_map_level0",
        "zero_map_level3",
        "few_map",
        "few_map_level0",
        "few_map_level3",
        "fused_map",
    ] {
        assert_eq!(st.tensor(key).unwrap().shape(), [240, 240], "{key}");
    }
    assert_eq!(st.tensor("zero_image_levels").unwrap().shape(), [4]);
    for key in ["zero_image", "few_image", "score"] {
        assert_eq!(st.tensor(key).unwrap().shape(), [1], "{key}");
    }
    // The CSV's calibrated score is the stored one.
    let score = f32::from_le_bytes(st.tensor("score").unwrap().data()[..4].try_into().unwrap());
    let csv_score: f32 = lines[1].split(',').nth(1).unwrap().parse().unwrap();
    assert_eq!(score, csv_score);
    no_temp_files(&out);

    // Outputs inside a scanned folder are not scored again on a re-run.
    let nested = tmp.path().join("images/results");
    let args = |out: &Path| score_command(&ckpt, &tmp.path().join("images"), out);
    for _ in 0..2 {
        let (o, _, stderr) = run(&mut args(&nested));
        assert!(o.status.success(), "{stderr}");
        assert_eq!(csv_lines(&nested.join("scores.csv")).len(), 3);
    }

    // The same as .npy files.
    let out_npy = tmp.path().join("out_npy");
    let (o, _, stderr) = run(bin().args([
        "score".as_ref(),
        "--clip".as_ref(),
        clip_fixture().as_os_str(),
        "--checkpoint".as_ref(),
        ckpt.as_os_str(),
        tmp.path().join("images/case_a.png").as_os_str(),
        "--out".as_ref(),
        out_npy.as_os_str(),
        "--raw".as_ref(),
        "--raw-format".as_ref(),
        "npy".as_ref(),
    ]));
    assert!(o.status.success(), "{stderr}");
    let npy = std::fs::read(out_npy.join("case_a.raw/fused_map.npy")).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY\x01\x00"));
    let header = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert_eq!(npy.len(), 10 + header + 240 * 240 * 4);
}

#[test]
fn score_lists_unreadable_inputs_and_fails_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    let inputs = write_inputs(tmp.path());
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really a png").unwrap();
    let missing = tmp.path().join("missing.dcm");
    let out = tmp.path().join("out");
    let (o, _, stderr) = run(bin().args([
        "score".as_ref(),
        "--clip".as_ref(),
        clip_fixture().as_os_str(),
        "--checkpoint".as_ref(),
        ckpt.as_os_str(),
        inputs[0].as_os_str(),
        broken.as_os_str(),
        missing.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]));
    assert!(!o.status.success());
    assert!(stderr.contains("broken.png"), "{stderr}");
    assert!(stderr.contains("missing.dcm"), "{stderr}");
    assert!(
        stderr.contains("2 input(s) could not be scored"),
        "{stderr}"
    );
    // The readable image was still scored, and only it is in the CSV.
    assert!(out.join("case_a.heatmap.png").is_file());
    assert!(!out.join("broken.heatmap.png").exists());
    assert_eq!(csv_lines(&out.join("scores.csv")).len(), 2);
    no_temp_files(&out);
}

#[test]
fn score_refuses_a_checkpoint_of_another_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("other.safetensors");
    make_checkpoint(
        &ckpt,
        Some(BackboneIdentity {
            model: "ViT-L-14-336".into(),
            image_size: 240,
            vision_width: 1024,
            vision_layers: 24,
            embed_dim: 768,
            tap_blocks: vec![6, 12, 18, 24],
            weights_sha256_prefix: None,
        }),
    );
    let inputs = write_inputs(tmp.path());
    let (o, _, stderr) = run(bin().args([
        "score".as_ref(),
        "--clip".as_ref(),
        clip_fixture().as_os_str(),
        "--checkpoint".as_ref(),
        ckpt.as_os_str(),
        inputs[0].as_os_str(),
        "--out".as_ref(),
        tmp.path().join("out").as_os_str(),
    ]));
    assert!(!o.status.success());
    assert!(
        stderr.contains("other.safetensors") && stderr.contains("another backbone"),
        "{stderr}"
    );
}

/// A tiny MVFA layout: `<root>/Brain_AD` (masks) and `<root>/Chest_AD` (classification).
fn write_mvfa_layout(root: &Path) {
    for (key, masks, seed) in [("Brain", true, 100u64), ("Chest", false, 200)] {
        let dir = root.join(format!("{key}_AD"));
        for (split, n_good, n_bad, s) in [("valid", 2, 2, seed), ("test", 4, 4, seed + 50)] {
            for (i, img) in generate(s, n_good, SIZE, false).iter().enumerate() {
                write_grey(
                    &dir.join(format!("{split}/good/img/n{i}.png")),
                    SIZE,
                    SIZE,
                    &img.pixels,
                );
            }
            for (i, img) in generate(s + 1, n_bad, SIZE, true).iter().enumerate() {
                let name = format!("a{i}.png");
                write_grey(
                    &dir.join(format!("{split}/Ungood/img/{name}")),
                    SIZE,
                    SIZE,
                    &img.pixels,
                );
                if masks {
                    write_grey(
                        &dir.join(format!("{split}/Ungood/anomaly_mask/{name}")),
                        SIZE,
                        SIZE,
                        &img.mask,
                    );
                }
            }
        }
    }
    // A reference-style shot list for k = 1 (iterate 0 names the second files).
    let seed_dir = root.join("fewshot_seed/Brain");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::write(
        seed_dir.join("1-shot.txt"),
        "a-0: a1.png\nn-0: n1.png\na-1: a0.png\nn-1: n0.png\n",
    )
    .unwrap();
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_auc(v: &serde_json::Value) {
    let v = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((0.0..=1.0).contains(&v), "AUC {v}");
}

#[test]
fn eval_few_shot_prints_the_table_and_writes_json() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_mvfa_layout(&data);
    let json = tmp.path().join("few.json");
    let (o, stdout, stderr) = run(bin().args([
        "eval".as_ref(),
        "--clip".as_ref(),
        clip_fixture().as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "--dataset".as_ref(),
        "Brain,Chest".as_ref(),
        "--shots".as_ref(),
        "1".as_ref(),
        "--epochs".as_ref(),
        "1".as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
    ]));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let header = stdout
        .lines()
        .find(|l| l.contains("HIS AC"))
        .unwrap_or_else(|| panic!("no table in:\n{stdout}"));
    let columns: Vec<&str> = header.split('|').map(str::trim).collect();
    assert_eq!(
        columns,
        [
            "HIS AC", "Chest AC", "OCT17 AC", "Brain AC", "Brain AS", "Liver AC", "Liver AS",
            "RESC AC", "RESC AS"
        ]
    );
    let values_line = stdout
        .lines()
        .skip_while(|l| !l.contains("HIS AC"))
        .nth(1)
        .unwrap();
    let values: Vec<&str> = values_line.split('|').map(str::trim).collect();
    for (i, v) in values.iter().enumerate() {
        if [1, 3, 4].contains(&i) {
            let pct: f64 = v.parse().unwrap_or_else(|_| panic!("{values_line}"));
            assert!((0.0..=100.0).contains(&pct), "{values_line}");
        } else {
            assert_eq!(*v, "-", "{values_line}");
        }
    }

    // Three shot draws by default: mean ± sd and minimum per dataset.
    assert!(
        stdout.contains("over 3 shot draws (mean ± sd, min):"),
        "{stdout}"
    );
    assert!(
        stdout.contains("beside the paper's few-shot k = 4 numbers"),
        "{stdout}"
    );
    let report = read_json(&json);
    assert_eq!(report["protocol"], "few-shot/calibrated");
    let brain = &report["datasets"]["Brain"];
    let draws = brain["draws"].as_array().unwrap();
    assert_eq!(draws.len(), 3);
    let mean = draws
        .iter()
        .map(|d| d["image_auc"].as_f64().unwrap())
        .sum::<f64>()
        / 3.0;
    assert!((brain["image_auc"].as_f64().unwrap() - mean).abs() < 1e-9);
    let min = draws
        .iter()
        .map(|d| d["image_auc"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(brain["image_auc_min"].as_f64().unwrap(), min);
    assert!(brain["image_auc_sd"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        draws
            .iter()
            .map(|d| d["seed"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [111, 112, 113]
    );
    assert_eq!(brain["k"], 1);
    assert_eq!(brain["epochs"], 1);
    assert_eq!(brain["images"], 8);
    assert_eq!(brain["normal"], 4);
    assert_auc(&brain["image_auc"]);
    assert_auc(&brain["pixel_auc"]);
    let chest = &report["datasets"]["Chest"];
    assert_auc(&chest["image_auc"]);
    assert!(chest["pixel_auc"].is_null());
    let table = report["table"].as_array().unwrap();
    assert_eq!(table.len(), 9);
    assert_eq!(table[3]["column"], "Brain AC");
    assert_eq!(table[3]["auc"], brain["image_auc"]);
    assert!(table[0]["auc"].is_null());
}

#[test]
fn eval_paper_protocol_with_shot_list_and_zero_shot_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_mvfa_layout(&data);

    // Paper protocol, shots from the reference-style list.
    let json = tmp.path().join("paper.json");
    let (o, stdout, stderr) = run(bin().args([
        "eval".as_ref(),
        "--clip".as_ref(),
        clip_fixture().as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "--dataset".as_ref(),
        "Brain".as_ref(),
        "--shots".as_ref(),
        "1".as_ref(),
        "--shot-dir".as_ref(),
        data.join("fewshot_seed").as_os_str(),
        "--epochs".as_ref(),
        "1".as_ref(),
        "--draws".as_ref(),
        "1".as_ref(),
        "--protocol".as_ref(),
        "paper".as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
    ]));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report = read_json(&json);
    let brain = &report["datasets"]["Brain"];
    assert_eq!(brain["protocol"], "few-shot/paper");
    assert!(
        brain["source"].as_str().unwrap().contains("1-shot.txt"),
        "{brain}"
    );
    assert_auc(&brain["image_auc"]);
    assert_auc(&brain["pixel_auc"]);

    // Zero-shot: a checkpoint folder with <Key>.safetensors.
    let ckpt_dir = tmp.path().join("ckpt");
    std::fs::create_dir_all(&ckpt_dir).unwrap();
    make_checkpoint(&ckpt_dir.join("Brain.safetensors"), None);
    let json = tmp.path().join("zero.json");
    let (o, stdout, stderr) = run(bin().args([
        "eval".as_ref(),
        "--clip".as_ref(),
        clip_fixture().as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "--dataset".as_ref(),
        "Brain,Liver".as_ref(),
        "--zero-shot".as_ref(),
        "--checkpoint".as_ref(),
        ckpt_dir.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
    ]));
    // Liver_AD does not exist: reported, the run goes on, non-zero exit.
    assert!(!o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("Liver_AD"), "{stderr}");
    let report = read_json(&json);
    let brain = &report["datasets"]["Brain"];
    assert_eq!(brain["protocol"], "zero-shot");
    assert_auc(&brain["image_auc"]);
    assert_auc(&brain["pixel_auc"]);
    assert!(report["datasets"]["Liver"].is_null());

    // The same checkpoint evaluated as fitted (memory bank + calibration, no fine-tuning).
    let (o, stdout, stderr) = run(bin().args([
        "eval".as_ref(),
        "--clip".as_ref(),
        clip_fixture().as_os_str(),
        "--data".as_ref(),
        data.join("Brain_AD").as_os_str(),
        "--dataset".as_ref(),
        "Brain".as_ref(),
        "--checkpoint".as_ref(),
        ckpt_dir.join("Brain.safetensors").as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
    ]));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let brain = &read_json(&json)["datasets"]["Brain"];
    assert_eq!(brain["protocol"], "few-shot/calibrated");
    assert_eq!(brain["k"], 2);
    assert!(
        brain["source"].as_str().unwrap().starts_with("checkpoint "),
        "{brain}"
    );
    assert_auc(&brain["pixel_auc"]);
}

/// A tower small enough for `bench` to run in a test.
const BENCH_SMALL_TOWER: [&str; 10] = [
    "--layers",
    "2",
    "--width",
    "64",
    "--embed-dim",
    "16",
    "--text-layers",
    "1",
    "--text-width",
    "32",
];

#[test]
fn developer_commands_are_only_in_the_developer_binary() {
    let (o, stdout, stderr) = run(bin().arg("--help"));
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("train") && stdout.contains("score"),
        "{stdout}"
    );
    for dev in ["bench", "smoke"] {
        assert!(
            !stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{dev} "))),
            "{dev} listed in:\n{stdout}"
        );
        let (o, _, stderr) = run(bin().arg(dev));
        assert_eq!(o.status.code(), Some(2), "{dev}: {stderr}");
        assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
    }
    let (o, stdout, stderr) = run(dev_bin().arg("--help"));
    assert!(o.status.success(), "{stderr}");
    for dev in ["bench", "smoke"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{dev} "))),
            "{dev} missing in:\n{stdout}"
        );
    }
}

#[test]
fn bench_prints_the_table_on_a_small_tower() {
    let (o, stdout, stderr) = run(dev_bin().arg("bench").args(BENCH_SMALL_TOWER).args([
        "--batches",
        "1,2",
        "--shots",
        "1",
        "--repeat",
        "1",
        "--cpu",
    ]));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for needle in [
        "adapted forward pass",
        "text features for \"Brain\" (420 sentences)",
        "few-shot search k=1 (11 x 290 bank rows, 4 levels, one head)",
        "score one image",
        "training step",
        "peak memory (VmHWM)",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing in:\n{stdout}");
    }
    let forward_rows = stdout
        .lines()
        .filter(|l| l.starts_with("adapted forward pass"))
        .count();
    assert_eq!(forward_rows, 2, "{stdout}");
}

#[test]
fn bench_compare_without_torch_says_why_and_prints_our_column() {
    let (o, stdout, stderr) = run(dev_bin()
        .env("MVFA_PYTHON", "/nonexistent/python3")
        .arg("bench")
        .args(BENCH_SMALL_TOWER)
        .args([
            "--batches",
            "1",
            "--shots",
            "1",
            "--repeat",
            "1",
            "--cpu",
            "--compare",
        ]));
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("compare: PyTorch side skipped: cannot run the Python interpreter \"/nonexistent/python3\" (MVFA_PYTHON)"),
        "{stdout}"
    );
    let header = stdout
        .lines()
        .find(|l| l.starts_with("operation (median)"))
        .unwrap_or_else(|| panic!("no comparison table in:\n{stdout}"));
    assert!(header.contains("PyTorch (skipped)") && header.contains("mvfa-studio"));
    for op in [
        "adapted forward, batch 1, per image",
        "text features, one organ word (420 sentences)",
        "few-shot search k=1, one head, per image",
        "training step, batch 1",
        "peak RSS",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(op))
            .unwrap_or_else(|| panic!("{op:?} missing in:\n{stdout}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "{line}");
        assert_eq!(cells[1], "-", "no PyTorch value without torch: {line}");
        assert_ne!(cells[2], "-", "our column is filled: {line}");
        assert_eq!(cells[3], "-", "{line}");
    }
}

#[test]
fn train_on_plain_folders_then_score_with_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("synthetic");
    let (out, _, stderr) = run(bin().args([
        "synth-data",
        data.to_str().unwrap(),
        "--normal",
        "2",
        "--abnormal",
        "2",
    ]));
    assert!(out.status.success(), "{stderr}");

    // Plain folders carry no organ word: a clear error, nothing written.
    let ckpt = tmp.path().join("detector.safetensors");
    let (out, _, stderr) = run(bin()
        .args(["train", "--clip", clip_fixture().to_str().unwrap(), "--cpu"])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--out",
            ckpt.to_str().unwrap(),
        ]));
    assert!(!out.status.success());
    assert!(stderr.contains("--organ"), "{stderr}");
    assert!(!ckpt.exists());

    let (out, stdout, stderr) = run(bin()
        .args(["train", "--clip", clip_fixture().to_str().unwrap(), "--cpu"])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--organ",
            "Brain",
            "--epochs",
            "1",
        ])
        .args(["--out", ckpt.to_str().unwrap()]));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("mode Masks"), "{stdout}");
    assert!(!stdout.contains("--epochs 0"), "{stdout}");
    assert!(ckpt.exists());
    // The fit report: every candidate, the choice and the verdict in plain words; the
    // threshold's meaning (2 normal images cannot support 5%: it says what they can).
    assert!(
        stdout.contains("model selection (2 folds; 2 normal, 2 abnormal"),
        "{stdout}"
    );
    // One epoch: one checkpoint, so 3 adapter choices x 5 mixes.
    let table_lines = stdout
        .lines()
        .filter(|l| ["* ", "= ", "  "].iter().any(|m| l.starts_with(m)) && l.contains("image AUC"))
        .count();
    assert_eq!(table_lines, 15, "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("* ")), "{stdout}");
    assert!(
        stdout.contains("Fine-tuning did not beat the current")
            || stdout.contains("Fine-tuning improved the detector"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("2 normal images cannot support 5%; the smallest rate they support is 33.3%"),
        "{stdout}"
    );
    // The checkpoint keeps the report.
    let meta = mvfa_studio::weights::adapters::read_checkpoint_meta(&ckpt)
        .unwrap()
        .unwrap();
    let state = &meta.calibration.unwrap();
    assert_eq!(
        state["selection"]["candidates"].as_array().unwrap().len(),
        15
    );
    assert!(state["selection"]["chosen"].is_u64(), "{state}");
    // A rate outside (0, 1) is refused before any work.
    let (out, _, stderr) = run(bin()
        .args(["train", "--clip", clip_fixture().to_str().unwrap(), "--cpu"])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--organ",
            "Brain",
            "--fpr",
            "5",
        ])
        .args(["--out", tmp.path().join("x.safetensors").to_str().unwrap()]));
    assert!(!out.status.success());
    assert!(stderr.contains("is not a rate"), "{stderr}");

    let scored = tmp.path().join("scored");
    let (out, _, stderr) = run(bin()
        .args(["score", "--clip", clip_fixture().to_str().unwrap(), "--cpu"])
        .args([
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--out",
            scored.to_str().unwrap(),
        ])
        .arg(data.join("abnormal"))
        .args(["--fpr", "0.4"]));
    assert!(out.status.success(), "{stderr}");
    // `score --fpr` recomputes the threshold from the scores the checkpoint stores.
    assert!(
        stderr.contains("flags \u{2264} 40% of normal images (estimated from 2 normal images"),
        "{stderr}"
    );
    let rows = csv_lines(&scored.join("scores.csv"));
    assert_eq!(rows.len(), 3, "header + 2 images: {rows:?}");
}

/// The recipe for the real numbers (`tools/bmad_recipe.sh`) runs its whole flow on the tiny
/// fixtures: both protocols, several shot draws, the paper's table beside ours, a JSON each.
#[test]
fn bmad_recipe_runs_both_protocols_over_draws() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_mvfa_layout(&data);
    let out = tmp.path().join("results");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bmad_recipe.sh");
    let mut command = std::process::Command::new("bash");
    command
        .arg(&script)
        .arg(clip_fixture())
        .arg(&data)
        .arg(data.join("fewshot_seed"))
        .env("MVFA", env!("CARGO_BIN_EXE_mvfa-studio"))
        .env("DRAWS", "2")
        .env("SHOTS", "1")
        .env("EPOCHS", "1")
        .env("DATASETS", "Brain")
        .env("OUT", &out);
    let (o, stdout, stderr) = run(&mut command);
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for protocol in ["paper", "calibrated"] {
        assert!(
            stdout.contains(&format!("== protocol: {protocol}")),
            "{stdout}"
        );
        let report = read_json(&out.join(format!("{protocol}.json")));
        let brain = &report["datasets"]["Brain"];
        assert_eq!(brain["draws"].as_array().unwrap().len(), 2, "{brain}");
        // The shots of each draw come from the reference's list, line a-0 then a-1.
        assert_eq!(brain["draws"][1]["iterate"], 1, "{brain}");
        assert_auc(&brain["image_auc"]);
    }
    assert!(stdout.contains("paper, all datasets"), "{stdout}");
    assert!(stdout.contains("over 2 shot draws"), "{stdout}");
}

/// The matmul kernel is measured at the first start on a CPU, cached per CPU, read back on the
/// next start, and can be forced; a kernel that cannot run is refused with a note.
#[test]
fn the_matmul_kernel_is_measured_once_cached_and_can_be_forced() {
    let cache = tempfile::tempdir().unwrap();
    let kernels = |env: &[(&str, &str)]| {
        let mut command = dev_bin();
        command
            .env("XDG_CACHE_HOME", cache.path())
            .env("MVFA_BLAS", "")
            .env_remove("MVFA_MATMUL_KERNEL")
            .env_remove("BURN_NDARRAY_MATMUL")
            .args(["bench", "--kernels", "--repeat", "1", "--cpu"]);
        for (key, value) in env {
            command.env(key, value);
        }
        let (o, stdout, stderr) = run(&mut command);
        assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
        (stdout, stderr)
    };
    let chosen = |stdout: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("kernel of this process: "))
            .unwrap_or_else(|| panic!("no kernel line in:\n{stdout}"))
            .to_string()
    };
    let file = cache.path().join("mvfa-studio").join("matmul-kernel.json");
    let (first, _) = kernels(&[]);
    let columns = first
        .lines()
        .find(|l| l.starts_with("| product"))
        .map_or(0, |l| l.matches('|').count() - 2);
    if columns > 1 {
        assert!(
            chosen(&first).ends_with("the fastest measured on this CPU"),
            "{first}"
        );
        let cached: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let entry = &cached["machines"][0];
        assert!(
            entry["key"].as_str().unwrap().contains("threads"),
            "{cached}"
        );
        assert_eq!(entry["measurements"].as_array().unwrap().len(), columns);
        let (second, _) = kernels(&[]);
        assert_eq!(
            chosen(&second),
            format!("{} (cached)", chosen(&first).trim_end_matches(" (cached)")),
            "the second start reads the first one's choice"
        );
    } else {
        // One kernel (no AVX-512, no BLAS): nothing to measure or cache.
        assert!(chosen(&first).ends_with("the only kernel here"), "{first}");
        assert!(!file.exists());
    }
    let (forced, _) = kernels(&[("MVFA_MATMUL_KERNEL", "matrixmultiply")]);
    assert_eq!(
        chosen(&forced),
        "matrixmultiply: named by MVFA_MATMUL_KERNEL or BURN_NDARRAY_MATMUL"
    );
    let (_, stderr) = kernels(&[("MVFA_MATMUL_KERNEL", "/nonexistent/libnoblas.so")]);
    assert!(
        stderr.contains(
            "note: MVFA_MATMUL_KERNEL=/nonexistent/libnoblas.so ignored: /nonexistent/libnoblas.so"
        ),
        "{stderr}"
    );
}
