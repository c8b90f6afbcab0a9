//! `workflow::Exporter` end to end: a calibrated detector on the tiny random CLIP fixture
//! scores two PNG images and a DICOM file with patient data, and one export writes every
//! output kind; the files are read back (raw maps, heatmaps, overlays, the Secondary Captures
//! and their de-identification, the CSV).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use mvfa_studio::io::export::{
    COMPREHENSIVE_SR_SOP_CLASS, Dates, PARAMETRIC_MAP_SOP_CLASS, SEGMENTATION_SOP_CLASS,
    derived_uid, read_heatmap_png,
};
use mvfa_studio::io::image::Channels;
use mvfa_studio::io::output::InputSet;
use mvfa_studio::io::resample::Image8;
use mvfa_studio::model::mvfa::calibration::{BranchStats, Calibration, LeaveOut};
use mvfa_studio::model::mvfa::detector::{ImageResult, RawResult, TaskKind};
use mvfa_studio::workflow::{
    Backbone, DetectorFacts, DicomExport, ExportOptions, ExportSummary, Exporter, FrameToExport,
    FrameWritten, MapLayer, MapScale, RawFormat, ScoredFrame, describe_options, map_at_original,
    open_detector, results_sr_name, score_file,
};
use safetensors::SafeTensors;

use crate::cli_commands::{make_checkpoint, write_inputs};
use crate::io_export::{NOT_IN_TABLE, PROFILE_TABLE};
use crate::support::cli::{csv_lines, no_temp_files};
use crate::support::fixture_dir;
use crate::support::tiny_clip as clip_fixture;

type B = NdArray<f32>;

/// The DICOM fixture with patient and study attributes added, at `path`.
fn patient_dicom(path: &Path) {
    let fixture = crate::support::dicom_fixture("ct_rescale_windows.dcm");
    let mut obj = dicom_object::open_file(&fixture).unwrap();
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    for e in [
        s(tags::PATIENT_NAME, VR::PN, "Mueller^Hans"),
        s(tags::PATIENT_ID, VR::LO, "PID-0042"),
        s(tags::PATIENT_BIRTH_DATE, VR::DA, "19600101"),
        s(tags::PATIENT_SEX, VR::CS, "M"),
        s(tags::STUDY_DATE, VR::DA, "20240115"),
        s(tags::ACCESSION_NUMBER, VR::SH, "ACC123"),
        s(tags::STATION_NAME, VR::SH, "CT-ROOM-7"),
    ] {
        obj.put(e);
    }
    obj.write_to_file(path).unwrap();
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag).unwrap().map(|e| {
        e.to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    })
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn one_export_writes_every_kind_and_deidentifies_the_secondary_captures() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Default::default();
    let ckpt = tmp.path().join("brain.safetensors");
    make_checkpoint(&ckpt, None);
    let mut files = write_inputs(tmp.path());
    let dcm = tmp.path().join("images/patient.dcm");
    patient_dicom(&dcm);
    files.push(dcm.clone());

    let mut backbone = Backbone::<B>::open(&clip_fixture(), None, &device).unwrap();
    let opened = open_detector(&mut backbone, &ckpt, None, TaskKind::Segmentation, 4).unwrap();
    let detector = &opened.detector;
    let size = detector.scorer().config().image_size;
    let scored: Vec<ScoredFrame> = files
        .iter()
        .flat_map(|f| score_file(detector, f, &device).unwrap())
        .collect();
    assert_eq!(scored.len(), 3);

    let key = "the site's secret key";
    let options = ExportOptions {
        raw: Some(RawFormat::Safetensors),
        dicom: Some(DicomExport {
            dates: Dates::Shift,
            retain_patient_characteristics: true,
            key: Some(key.into()),
            secondary_capture: true,
            ..DicomExport::default()
        }),
        ..ExportOptions::default()
    };
    let described = describe_options(&options).join("\n");
    assert!(described.contains("ANONYMOUS"), "{described}");
    assert!(described.contains("sex and age: kept"), "{described}");
    let out = tmp.path().join("out");
    let facts = DetectorFacts::from_detector(detector, &ckpt, &opened.organ);
    let inputs = InputSet::new(files.iter().map(PathBuf::as_path));
    let mut exporter = Exporter::new(&out, options, facts, inputs).unwrap();
    let written: Vec<_> = scored
        .iter()
        .map(|s| {
            exporter
                .write_frame(FrameToExport::from_scored(s, size))
                .unwrap()
        })
        .collect();
    let summary = exporter.finish().unwrap();
    assert_eq!(summary.frames, 3);
    assert_eq!(
        written.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["case_a", "case_b", "patient"]
    );
    // Heatmap, overlay, Secondary Capture and raw maps per frame, the SRs of the PNGs' new
    // study and of the DICOM source's study, then the CSV.
    assert_eq!(summary.files.len(), 3 * 4 + summary.objects.len() + 2 + 1);
    assert_eq!(summary.reports.len(), 2);
    for f in &summary.files {
        assert!(f.is_file(), "{}", f.display());
    }
    no_temp_files(&out);

    let lines = csv_lines(summary.csv.as_ref().unwrap());
    assert_eq!(
        lines[0],
        "path,score,zero_shot_score,few_shot_score,abnormal"
    );
    assert_eq!(lines.len(), 4);

    for (frame, w) in scored.iter().zip(&written) {
        let result = &frame.result;
        let fused = result.fused_map.as_ref().unwrap();
        assert_eq!(w.layer, MapLayer::Fused);
        assert_eq!(w.scale, MapScale::Calibrated);
        assert_eq!(w.range, MapScale::Calibrated.default_range());

        // The raw maps are the in-memory ones, bit for bit.
        let bytes = std::fs::read(out.join(format!("{}.raw.safetensors", w.name))).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let tensor = |k: &str| f32s(st.tensor(k).unwrap().data());
        assert_eq!(&tensor("fused_map"), fused);
        assert_eq!(tensor("zero_map"), result.raw.zero_map);
        assert_eq!(&tensor("few_map"), result.raw.few_map.as_ref().unwrap());
        for (l, m) in result.raw.zero_map_levels.iter().enumerate() {
            assert_eq!(&tensor(&format!("zero_map_level{l}")), m);
        }
        for (l, m) in result.raw.few_map_levels.iter().enumerate() {
            assert_eq!(&tensor(&format!("few_map_level{l}")), m);
        }
        assert_eq!(tensor("score"), [result.score.unwrap()]);
        assert_eq!(tensor("zero_image_levels"), result.raw.zero_image_levels);

        // The heatmap is the fused map at the frame's own size, within 16-bit quantisation.
        let display = &frame.image.display;
        let (w_px, h_px) = (display.width as usize, display.height as usize);
        let expected = map_at_original::<B>(fused, size, w_px, h_px, &device).unwrap();
        let (heat, scale) = read_heatmap_png(&out.join(format!("{}.heatmap.png", w.name))).unwrap();
        assert_eq!((heat.width as usize, heat.height as usize), (w_px, h_px));
        let tolerance = (scale.max - scale.min) / 65535.0;
        for (a, b) in heat.data.iter().zip(&expected) {
            assert!((a - b).abs() <= tolerance, "{a} vs {b}");
        }

        // The Secondary Capture's pixels are the overlay PNG's, in one series.
        let sc = dicom_object::open_file(out.join(format!("{}.sc.dcm", w.name))).unwrap();
        let png = image::open(out.join(format!("{}.overlay.png", w.name)))
            .unwrap()
            .to_rgb8();
        let pixels = sc.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(&pixels[..png.as_raw().len()], png.as_raw().as_slice());
        assert_eq!(
            text(&sc, tags::SERIES_INSTANCE_UID),
            summary.series_instance_uid
        );
        assert_eq!(text(&sc, tags::PATIENT_NAME).unwrap(), "ANONYMOUS");
        assert_eq!(text(&sc, tags::PATIENT_IDENTITY_REMOVED).unwrap(), "YES");
    }

    // The DICOM source's identity is gone, its study filed under a UID derived from the key,
    // the date shifted, the retained characteristics kept, the device identity dropped.
    let original = dicom_object::open_file(&dcm).unwrap();
    let sc = dicom_object::open_file(out.join("patient.sc.dcm")).unwrap();
    let id = text(&sc, tags::PATIENT_ID).unwrap();
    assert!(id.starts_with("ANON-") && !id.contains("0042"), "{id}");
    assert_eq!(text(&sc, tags::PATIENT_BIRTH_DATE).unwrap(), "");
    assert_eq!(text(&sc, tags::ACCESSION_NUMBER).unwrap(), "");
    assert_eq!(text(&sc, tags::PATIENT_SEX).unwrap(), "M");
    assert_eq!(text(&sc, tags::STATION_NAME), None);
    let date = text(&sc, tags::STUDY_DATE).unwrap();
    assert!(date.len() == 8 && date.as_str() < "20240115", "{date}");
    let study = text(&original, tags::STUDY_INSTANCE_UID).unwrap();
    assert_eq!(
        text(&sc, tags::STUDY_INSTANCE_UID).unwrap(),
        derived_uid(key, &study)
    );
    // The PNG sources have no patient: new studies, empty names.
    let sc_a = dicom_object::open_file(out.join("case_a.sc.dcm")).unwrap();
    assert_ne!(text(&sc_a, tags::STUDY_INSTANCE_UID), Some(study));

    // An identified export of the same frame keeps the name; an export stopped after its
    // first frame (a cancelled job) still gets its CSV row, and nothing half-written.
    let identified = tmp.path().join("identified");
    let options = ExportOptions {
        heatmap_png: false,
        overlay: false,
        dicom: Some(DicomExport {
            identified: true,
            secondary_capture: true,
            ..DicomExport::default()
        }),
        ..ExportOptions::default()
    };
    let facts = DetectorFacts::from_detector(detector, &ckpt, &opened.organ);
    let mut exporter = Exporter::new(&identified, options, facts, InputSet::default()).unwrap();
    exporter
        .write_frame(FrameToExport::from_scored(&scored[2], size))
        .unwrap();
    let summary = exporter.finish().unwrap();
    assert_eq!(summary.frames, 1);
    assert_eq!(csv_lines(&identified.join("scores.csv")).len(), 2);
    let sc = dicom_object::open_file(identified.join("patient.sc.dcm")).unwrap();
    assert_eq!(text(&sc, tags::PATIENT_NAME).unwrap(), "Mueller^Hans");
    assert_eq!(text(&sc, tags::PATIENT_ID).unwrap(), "PID-0042");
    let mut names: Vec<String> = std::fs::read_dir(&identified)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The CT fixture has no Frame of Reference: a Segmentation, but no Parametric Map.
    assert_eq!(
        names,
        [
            "patient.sc.dcm",
            "results-sr-1.dcm",
            "scores.csv",
            "series-1.seg.dcm"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The score table as DICOM Basic Text SR: one per source study, in that study.

/// A source study of the SR tests.
pub(crate) const STUDY_1: &str = "1.2.826.0.1.3680043.8.498.77.1";
const STUDY_2: &str = "1.2.826.0.1.3680043.8.498.77.2";
const SERIES_1: &str = "1.2.826.0.1.3680043.8.498.77.1.1";
const SERIES_2: &str = "1.2.826.0.1.3680043.8.498.77.2.1";

/// The CT fixture as an instance of another patient, study, series and SOP instance.
fn study_dicom(path: &Path, study: &str, series: &str, sop: &str, name: &str, id: &str) {
    let fixture = crate::support::dicom_fixture("ct_rescale_windows.dcm");
    let mut obj = dicom_object::open_file(&fixture).unwrap();
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    for e in [
        s(tags::PATIENT_NAME, VR::PN, name),
        s(tags::PATIENT_ID, VR::LO, id),
        s(tags::PATIENT_BIRTH_DATE, VR::DA, "19600101"),
        s(tags::PATIENT_SEX, VR::CS, "M"),
        s(tags::PATIENT_AGE, VR::AS, "064Y"),
        s(tags::STUDY_DATE, VR::DA, "20240115"),
        s(tags::STUDY_TIME, VR::TM, "101500"),
        s(tags::ACCESSION_NUMBER, VR::SH, "ACC123"),
        s(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Who^Doctor"),
        s(tags::STUDY_ID, VR::SH, "S-77"),
        s(tags::STUDY_DESCRIPTION, VR::LO, "CT head of the patient"),
        s(tags::STATION_NAME, VR::SH, "CT-ROOM-7"),
        s(tags::DEVICE_SERIAL_NUMBER, VR::LO, "SN-998877"),
        s(tags::STUDY_INSTANCE_UID, VR::UI, study),
        s(tags::SERIES_INSTANCE_UID, VR::UI, series),
        s(tags::SOP_INSTANCE_UID, VR::UI, sop),
    ] {
        obj.put(e);
    }
    obj.update_meta(|m| m.media_storage_sop_instance_uid = sop.to_string());
    obj.write_to_file(path).unwrap();
}

/// A result on the 4 x 4 model grid with these image scores.
fn synthetic_result(score: f32, zero: f32, few: Option<f32>) -> ImageResult {
    let flat = vec![0.1; 16];
    ImageResult {
        raw: RawResult {
            zero_image: zero,
            zero_image_levels: vec![zero, zero],
            few_image: few,
            zero_map: vec![0.2; 16],
            zero_map_levels: vec![flat.clone(), flat.clone()],
            few_map: Some(vec![0.2; 16]),
            few_map_levels: vec![flat.clone(), flat],
        },
        fused_map: Some((0..16).map(|i| i as f32 / 4.0).collect()),
        score: Some(score),
    }
}

pub(crate) fn synthetic_facts() -> DetectorFacts {
    let stats = |median, scale| BranchStats { median, scale };
    DetectorFacts {
        calibration: Some(Calibration {
            method: "exemplar-robust-z/v1".into(),
            zero_map: stats(0.2, 0.1),
            few_map: Some(stats(0.2, 0.1)),
            zero_image: stats(0.0, 1.0),
            few_image: Some(stats(0.0, 1.0)),
            fused_map_max: stats(0.0, 1.0),
            leave_out: LeaveOut::SourceShot,
            normal_exemplars: 4,
            abnormal_exemplars: 1,
            threshold: 3.25,
            normal_p95: 1.5,
            abnormal_median: Some(5.0),
            text_weight: 0.5,
            normal_scores: Vec::new(),
            fpr: None,
        }),
        checkpoint: "/home/someone/models/brain.safetensors".into(),
        organ: "Brain".into(),
    }
}

/// The sources of an export over several studies, in export order: (file, frame, frames,
/// result). Two DICOM studies (the first with two images), a PNG, and frame 2 of the
/// multi-frame fixture (its own study).
pub(crate) fn sr_sources(dir: &Path) -> Vec<(PathBuf, usize, usize, ImageResult)> {
    std::fs::create_dir_all(dir).unwrap();
    let a1 = dir.join("a1.dcm");
    let a2 = dir.join("a2.dcm");
    let b1 = dir.join("b1.dcm");
    study_dicom(
        &a1,
        STUDY_1,
        SERIES_1,
        "1.2.826.0.1.3680043.8.498.77.1.1.1",
        "Mueller^Hans",
        "PID-0042",
    );
    study_dicom(
        &a2,
        STUDY_1,
        SERIES_1,
        "1.2.826.0.1.3680043.8.498.77.1.1.2",
        "Mueller^Hans",
        "PID-0042",
    );
    study_dicom(
        &b1,
        STUDY_2,
        SERIES_2,
        "1.2.826.0.1.3680043.8.498.77.2.1.1",
        "Doe^Jane",
        "PID-0077",
    );
    let png = dir.join("case.png");
    image::GrayImage::from_pixel(6, 5, image::Luma([90]))
        .save(&png)
        .unwrap();
    let mf = dir.join("multi.dcm");
    std::fs::copy(fixture_dir("dicom").join("enhanced_multiframe.dcm"), &mf).unwrap();
    vec![
        (a1, 0, 1, synthetic_result(5.5, 0.25, Some(0.125))),
        (png, 0, 1, synthetic_result(0.75, 0.5, Some(0.0625))),
        (b1, 0, 1, synthetic_result(3.25, 0.3, Some(0.2))),
        (a2, 0, 1, synthetic_result(-0.5, 0.1, Some(0.05))),
        (mf, 1, 3, synthetic_result(1.0, 0.4, None)),
    ]
}

/// Exports `sources` (SCs, SRs and the CSV only) into `out`.
pub(crate) fn export_sources(
    sources: &[(PathBuf, usize, usize, ImageResult)],
    out: &Path,
    dicom: DicomExport,
) -> (ExportSummary, Vec<FrameWritten>) {
    let options = ExportOptions {
        heatmap_png: false,
        overlay: false,
        dicom: Some(dicom),
        ..ExportOptions::default()
    };
    let inputs = InputSet::new(sources.iter().map(|s| s.0.as_path()));
    let mut exporter = Exporter::new(out, options, synthetic_facts(), inputs).unwrap();
    let display = Image8::new(6, 5, Channels::Gray, vec![90; 30]).unwrap();
    let written = sources
        .iter()
        .map(|(path, frame, frames, result)| {
            exporter
                .write_frame(FrameToExport {
                    source: path,
                    frame: *frame,
                    frames: *frames,
                    label: path.display().to_string(),
                    display: &display,
                    result,
                    model_size: 4,
                })
                .unwrap()
        })
        .collect();
    (exporter.finish().unwrap(), written)
}

/// A content item's concept name code value.
fn concept(item: &InMemDicomObject) -> String {
    let seq = item
        .element(tags::CONCEPT_NAME_CODE_SEQUENCE)
        .expect("every content item has a concept name");
    let items = seq.items().unwrap();
    assert_eq!(items.len(), 1);
    obj_text(&items[0], tags::CODE_VALUE).unwrap()
}

fn obj_text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag).unwrap().map(|e| {
        e.to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    })
}

fn children(item: &InMemDicomObject) -> &[InMemDicomObject] {
    item.element(tags::CONTENT_SEQUENCE)
        .ok()
        .and_then(|e| e.items())
        .unwrap_or_default()
}

/// Checks the structure of every content item below `item`: relationship, value type,
/// concept name, and what each value type carries.
fn check_tree(item: &InMemDicomObject, depth: usize) {
    let Ok(content) = item.element(tags::CONTENT_SEQUENCE) else {
        return;
    };
    for child in content.items().unwrap() {
        let rel = obj_text(child, tags::RELATIONSHIP_TYPE).unwrap();
        let vt = obj_text(child, tags::VALUE_TYPE).unwrap();
        assert!(
            [
                "CONTAINS",
                "HAS OBS CONTEXT",
                "HAS CONCEPT MOD",
                "INFERRED FROM"
            ]
            .contains(&rel.as_str()),
            "{rel}"
        );
        concept(child);
        match vt.as_str() {
            "CONTAINER" => {
                assert_eq!(rel, "CONTAINS");
                assert_eq!(
                    obj_text(child, tags::CONTINUITY_OF_CONTENT).as_deref(),
                    Some("SEPARATE")
                );
                check_tree(child, depth + 1);
            }
            "TEXT" => assert!(obj_text(child, tags::TEXT_VALUE).is_some()),
            "CODE" => assert!(child.element(tags::CONCEPT_CODE_SEQUENCE).is_ok()),
            "UIDREF" => assert!(obj_text(child, tags::UID).is_some()),
            "NUM" => {
                let value = &child
                    .element(tags::MEASURED_VALUE_SEQUENCE)
                    .unwrap()
                    .items()
                    .unwrap()[0];
                assert!(obj_text(value, tags::NUMERIC_VALUE).is_some());
                assert!(value.element(tags::MEASUREMENT_UNITS_CODE_SEQUENCE).is_ok());
                check_tree(child, depth + 1);
            }
            "IMAGE" => assert_eq!(
                child
                    .element(tags::REFERENCED_SOP_SEQUENCE)
                    .unwrap()
                    .items()
                    .unwrap()
                    .len(),
                1
            ),
            other => panic!("value type {other} is not expected"),
        }
    }
    assert!(depth <= 4);
}

/// One image's measurement group of a report: its TEXT values, NUM values (as written), CODE
/// values by concept, and the images its score is inferred from ("SOURCEIMAGE", "MAP").
struct ParsedImage {
    texts: BTreeMap<String, String>,
    images: BTreeMap<String, (String, String, Option<String>)>,
}

/// The image groups of a report, its algorithm parameters, and its comment.
fn parse_sr(sr: &InMemDicomObject) -> (Vec<ParsedImage>, Vec<String>, String) {
    let root = children(sr);
    let comment = root
        .iter()
        .find(|i| concept(i) == "121106")
        .and_then(|i| obj_text(i, tags::TEXT_VALUE))
        .unwrap();
    let measurements = root.iter().find(|i| concept(i) == "126010").unwrap();
    let groups = children(measurements);
    let parameters = children(&groups[0])
        .iter()
        .filter(|i| concept(i) == "111002")
        .map(|i| obj_text(i, tags::TEXT_VALUE).unwrap())
        .collect();
    let tracking = |g: &InMemDicomObject| {
        children(g)
            .iter()
            .find(|i| concept(i) == "112039")
            .and_then(|i| obj_text(i, tags::TEXT_VALUE))
            .unwrap()
    };
    let images = groups
        .iter()
        .filter(|g| tracking(g).starts_with("image "))
        .map(|group| {
            let mut parsed = ParsedImage {
                texts: BTreeMap::new(),
                images: BTreeMap::new(),
            };
            let row = tracking(group).trim_start_matches("image ").to_string();
            parsed.texts.insert("CSVROW".into(), row);
            for item in children(group) {
                let value = match obj_text(item, tags::VALUE_TYPE).unwrap().as_str() {
                    "TEXT" => obj_text(item, tags::TEXT_VALUE).unwrap(),
                    "NUM" => {
                        let v = &item
                            .element(tags::MEASURED_VALUE_SEQUENCE)
                            .unwrap()
                            .items()
                            .unwrap()[0];
                        if concept(item) == "SCORE" {
                            for source in children(item) {
                                let r = &source
                                    .element(tags::REFERENCED_SOP_SEQUENCE)
                                    .unwrap()
                                    .items()
                                    .unwrap()[0];
                                let class = obj_text(r, tags::REFERENCED_SOP_CLASS_UID).unwrap();
                                let key = if class == PARAMETRIC_MAP_SOP_CLASS {
                                    "MAP"
                                } else {
                                    "SOURCEIMAGE"
                                };
                                parsed.images.insert(
                                    key.into(),
                                    (
                                        class,
                                        obj_text(r, tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
                                        obj_text(r, tags::REFERENCED_FRAME_NUMBER),
                                    ),
                                );
                            }
                        }
                        obj_text(v, tags::NUMERIC_VALUE).unwrap()
                    }
                    "CODE" => {
                        let c = &item
                            .element(tags::CONCEPT_CODE_SEQUENCE)
                            .unwrap()
                            .items()
                            .unwrap()[0];
                        obj_text(c, tags::CODE_VALUE).unwrap()
                    }
                    _ => continue,
                };
                parsed.texts.insert(concept(item), value);
            }
            parsed
        })
        .collect();
    (images, parameters, comment)
}

/// The evidence sequence `tag` as (study, series, class, instance) tuples.
fn evidence(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Vec<(String, String, String, String)> {
    let Some(seq) = obj.element_opt(tag).unwrap() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for study in seq.items().unwrap() {
        let s = obj_text(study, tags::STUDY_INSTANCE_UID).unwrap();
        for series in study
            .element(tags::REFERENCED_SERIES_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
        {
            let se = obj_text(series, tags::SERIES_INSTANCE_UID).unwrap();
            for sop in series
                .element(tags::REFERENCED_SOP_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()
            {
                out.push((
                    s.clone(),
                    se.clone(),
                    obj_text(sop, tags::REFERENCED_SOP_CLASS_UID).unwrap(),
                    obj_text(sop, tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
                ));
            }
        }
    }
    out
}

/// Attributes of the SR that the SC's Table E.1-1 list does not hold: module structure, and
/// sequences whose only identifying content are the UIDs checked as replaced below.
const SR_NOT_IN_SC_TABLE: &[dicom_core::Tag] = &[
    tags::VALUE_TYPE,
    tags::CONCEPT_NAME_CODE_SEQUENCE,
    tags::CONTINUITY_OF_CONTENT,
    tags::CONTENT_SEQUENCE,
    tags::COMPLETION_FLAG,
    tags::VERIFICATION_FLAG,
    tags::PERFORMED_PROCEDURE_CODE_SEQUENCE,
    tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
    tags::SOFTWARE_VERSIONS,
    tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
    tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
    tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE,
    tags::PRELIMINARY_FLAG,
    tags::CONTENT_TEMPLATE_SEQUENCE,
];

#[test]
fn dicom_export_writes_one_structured_report_per_study_matching_the_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let sources = sr_sources(&tmp.path().join("in"));
    let out = tmp.path().join("out");
    let key = "sr test key";
    let (summary, written) = export_sources(
        &sources,
        &out,
        DicomExport {
            key: Some(key.into()),
            secondary_capture: true,
            ..DicomExport::default()
        },
    );
    no_temp_files(&out);
    // Per frame its Secondary Capture; then the series objects; then one report per study, in
    // the order the studies first appear (study 1, the PNG's new study, study 2, the fixture's
    // study); the CSV last.
    assert_eq!(summary.reports.len(), 4);
    let srs: Vec<PathBuf> = (1..=4).map(|n| out.join(results_sr_name(n))).collect();
    let objects = summary.objects.len();
    assert_eq!(summary.files.len(), 5 + objects + 4 + 1);
    assert_eq!(&summary.files[5 + objects..9 + objects], srs.as_slice());
    assert_eq!(summary.files.last(), Some(&out.join("scores.csv")));
    // The CT sources state no Frame of Reference: Segmentations, no Parametric Maps, and a
    // note that says why.
    assert!(
        summary
            .objects
            .iter()
            .all(|(_, o)| o.sop_class_uid == SEGMENTATION_SOP_CLASS)
    );
    assert!(
        summary
            .notes
            .iter()
            .any(|n| n.contains("no Parametric Map")),
        "{:?}",
        summary.notes
    );
    let described = describe_options(&ExportOptions {
        dicom: Some(DicomExport::default()),
        ..ExportOptions::default()
    })
    .join("\n");
    assert!(described.contains("results-sr-1.dcm") && described.contains("TID 1500"));

    // The CSV, parsed: path, score, zero-shot, few-shot, abnormal.
    let lines = csv_lines(summary.csv.as_ref().unwrap());
    let rows: Vec<Vec<String>> = lines[1..]
        .iter()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 5);

    let sc_of = |row: usize| {
        dicom_object::open_file(out.join(format!("{}.sc.dcm", written[row - 1].name))).unwrap()
    };
    let mut seen_rows = Vec::new();
    let mut studies = Vec::new();
    for (n, (path, report)) in srs.iter().zip(&summary.reports).enumerate() {
        let sr = dicom_object::open_file(path).unwrap();
        assert_eq!(
            sr.meta()
                .media_storage_sop_class_uid()
                .trim_end_matches('\0'),
            COMPREHENSIVE_SR_SOP_CLASS
        );
        assert_eq!(
            text(&sr, tags::SOP_CLASS_UID).unwrap(),
            COMPREHENSIVE_SR_SOP_CLASS
        );
        assert_eq!(
            text(&sr, tags::SOP_INSTANCE_UID).unwrap(),
            report.object.sop_instance_uid
        );
        assert_eq!(text(&sr, tags::MODALITY).unwrap(), "SR");
        assert_eq!(text(&sr, tags::COMPLETION_FLAG).unwrap(), "COMPLETE");
        assert_eq!(text(&sr, tags::VERIFICATION_FLAG).unwrap(), "UNVERIFIED");
        assert_eq!(text(&sr, tags::INSTANCE_NUMBER).unwrap(), "1");
        assert_eq!(text(&sr, tags::MANUFACTURER).unwrap(), "MVFA Studio");
        // Dates removed by default: the type 1 content date and time get dummies.
        assert_eq!(text(&sr, tags::CONTENT_DATE).unwrap(), "19000101");
        assert_eq!(text(&sr, tags::CONTENT_TIME).unwrap(), "000000");
        assert_eq!(text(&sr, tags::VALUE_TYPE).unwrap(), "CONTAINER");
        assert_eq!(concept(&sr), "126000");
        assert_eq!(text(&sr, tags::CONTINUITY_OF_CONTENT).unwrap(), "SEPARATE");
        check_tree(&sr, 0);
        let study = text(&sr, tags::STUDY_INSTANCE_UID).unwrap();
        assert_eq!(study, report.object.study_instance_uid);
        // Its own series, not the Secondary Captures'.
        let series = text(&sr, tags::SERIES_INSTANCE_UID).unwrap();
        assert_ne!(Some(series.clone()), summary.series_instance_uid);
        assert_eq!(series, report.object.series_instance_uid);
        studies.push(study.clone());

        let (images, parameters, comment) = parse_sr(&sr);
        assert!(
            comment.contains("Research tool output")
                && comment.contains("not for primary diagnosis")
        );
        assert!(
            parameters.contains(&"organ word=Brain".to_string()),
            "{parameters:?}"
        );
        assert!(parameters.contains(&"calibration=exemplar-robust-z/v1".to_string()));
        assert_eq!(report.images, images.len());
        let mut captures = Vec::new();
        for image in &images {
            let row: usize = image.texts["CSVROW"].parse().unwrap();
            seen_rows.push(row);
            let csv = &rows[row - 1];
            // The numbers are the CSV's; an empty CSV field has no item.
            for (concept, column) in [("SCORE", 1), ("ZEROSHOT", 2), ("FEWSHOT", 3)] {
                match csv[column].as_str() {
                    "" => assert!(!image.texts.contains_key(concept), "row {row} {concept}"),
                    v => assert_eq!(
                        image.texts[concept].parse::<f64>().unwrap(),
                        v.parse::<f64>().unwrap(),
                        "row {row} {concept}"
                    ),
                }
            }
            // The decision as a SNOMED code: Abnormal or Normal.
            let decision = if csv[4] == "1" {
                "263654008"
            } else {
                "17621005"
            };
            assert_eq!(image.texts["DECISION"], decision, "row {row}");
            assert_eq!(image.texts["THRESHOLD"], "3.25");
            // De-identified: no file path.
            assert!(!image.texts.contains_key("SOURCEFILE"));
            // This row's Secondary Capture is in the same study, listed as evidence.
            let sc = sc_of(row);
            assert_eq!(text(&sc, tags::STUDY_INSTANCE_UID).unwrap(), study);
            captures.push(text(&sc, tags::SOP_INSTANCE_UID).unwrap());
            // The source image, referenced by its de-identified UID (as in the SC).
            let source = &sources[row - 1].0;
            if source.extension().is_some_and(|e| e == "dcm") {
                let original = dicom_object::open_file(source).unwrap();
                let (class, inst, frame) = &image.images["SOURCEIMAGE"];
                assert_eq!(Some(class.clone()), text(&original, tags::SOP_CLASS_UID));
                let sop = text(&original, tags::SOP_INSTANCE_UID).unwrap();
                assert_eq!(*inst, derived_uid(key, &sop));
                let sc_ref = &sc
                    .element(tags::SOURCE_IMAGE_SEQUENCE)
                    .unwrap()
                    .items()
                    .unwrap()[0];
                assert_eq!(
                    Some(inst.clone()),
                    obj_text(sc_ref, tags::REFERENCED_SOP_INSTANCE_UID)
                );
                let expected_frame = (sources[row - 1].2 > 1).then(|| "2".to_string());
                assert_eq!(*frame, expected_frame);
                assert_eq!(
                    study,
                    derived_uid(key, &text(&original, tags::STUDY_INSTANCE_UID).unwrap())
                );
            } else {
                assert!(!image.images.contains_key("SOURCEIMAGE"));
            }
        }
        // Evidence: the source images (current procedure) and the Secondary Captures.
        let current = evidence(&sr, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE);
        let sources_here = images
            .iter()
            .filter_map(|i| i.images.get("SOURCEIMAGE"))
            .count();
        assert_eq!(current.len(), sources_here);
        assert!(current.iter().all(|(s, ..)| *s == study));
        let other = evidence(&sr, tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE);
        let other_captures: Vec<_> = other
            .iter()
            .filter(|e| e.2 == "1.2.840.10008.5.1.4.1.1.7")
            .collect();
        assert_eq!(
            other_captures
                .iter()
                .map(|e| e.3.clone())
                .collect::<Vec<_>>(),
            captures
        );
        assert!(
            other_captures
                .iter()
                .all(|(s, se, ..)| *s == study && Some(se.clone()) == summary.series_instance_uid)
        );
        assert!(other.iter().all(|(s, ..)| *s == study));
        if n == 0 {
            // Study 1: both of its images, from one source series (derived UID).
            assert_eq!(images.len(), 2);
            assert_eq!(study, derived_uid(key, STUDY_1));
            assert!(current.iter().all(|e| e.1 == derived_uid(key, SERIES_1)));
        }
    }
    // Every CSV row is in exactly one SR; the studies are all different.
    seen_rows.sort();
    assert_eq!(seen_rows, [1, 2, 3, 4, 5]);
    assert_eq!(summary.reports[0].images, 2);
    assert_eq!(studies[2], derived_uid(key, STUDY_2));
    let mut distinct = studies.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4);

    // De-identification, against the same Table E.1-1 list as the Secondary Captures.
    let source = dicom_object::open_file(&sources[0].0).unwrap();
    let sr = dicom_object::open_file(&srs[0]).unwrap();
    for element in sr.iter() {
        let tag = element.header().tag;
        assert!(
            PROFILE_TABLE.iter().any(|(t, _)| *t == tag)
                || NOT_IN_TABLE.contains(&tag)
                || SR_NOT_IN_SC_TABLE.contains(&tag),
            "{tag} is in the SR but not accounted for"
        );
    }
    for &(tag, action) in PROFILE_TABLE {
        let Some(original) = text(&source, tag).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = text(&sr, tag);
        match action {
            "X" => assert_eq!(value, None, "{tag} ({action}) must be removed"),
            "C" => {}
            _ => assert_ne!(
                value,
                Some(original),
                "{tag} ({action}) kept its source value"
            ),
        }
    }
    assert_eq!(text(&sr, tags::PATIENT_NAME).unwrap(), "ANONYMOUS");
    assert_eq!(
        text(&sr, tags::PATIENT_ID),
        text(&sc_of(1), tags::PATIENT_ID)
    );
    assert_eq!(text(&sr, tags::PATIENT_IDENTITY_REMOVED).unwrap(), "YES");
    let codes: Vec<String> = sr
        .element(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|i| obj_text(i, tags::CODE_VALUE).unwrap())
        .collect();
    assert_eq!(codes, ["113100", "113105", "113104"]);
    // Nothing of the sources' identity, nor a file path, anywhere in any SR.
    let tmp_path = tmp.path().display().to_string();
    for path in &srs {
        let bytes = std::fs::read(path).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        for secret in [
            "Mueller",
            "Doe^Jane",
            "PID-0042",
            "PID-0077",
            "19600101",
            "20240115",
            "ACC123",
            "Who^Doctor",
            "S-77",
            "CT head",
            "CT-ROOM-7",
            "SN-998877",
            STUDY_1,
            STUDY_2,
            SERIES_1,
            "77.1.1.1",
            "Fixture^Synthetic",
            "FIX-001",
            "/home/someone",
            &tmp_path,
        ] {
            assert!(!hay.contains(secret), "{} leaks {secret}", path.display());
        }
    }

    // Identified: the same studies and patients, and each row's source file path.
    let identified = tmp.path().join("identified");
    let (summary, _) = export_sources(
        &sources,
        &identified,
        DicomExport {
            identified: true,
            secondary_capture: true,
            ..DicomExport::default()
        },
    );
    assert_eq!(summary.reports[0].object.study_instance_uid, STUDY_1);
    let sr = dicom_object::open_file(identified.join(results_sr_name(1))).unwrap();
    assert_eq!(text(&sr, tags::PATIENT_NAME).unwrap(), "Mueller^Hans");
    let (images, ..) = parse_sr(&sr);
    assert_eq!(
        images[0].texts["SOURCEFILE"],
        sources[0].0.display().to_string()
    );
    assert_eq!(
        images[1].images["SOURCEIMAGE"].1,
        "1.2.826.0.1.3680043.8.498.77.1.1.2"
    );
    assert_ne!(text(&sr, tags::CONTENT_DATE).unwrap(), "19000101");

    // Without the DICOM export nothing changes: no SR.
    let plain = tmp.path().join("plain");
    let options = ExportOptions {
        heatmap_png: false,
        ..ExportOptions::default()
    };
    let mut exporter =
        Exporter::new(&plain, options, synthetic_facts(), InputSet::default()).unwrap();
    let display = Image8::new(6, 5, Channels::Gray, vec![90; 30]).unwrap();
    exporter
        .write_frame(FrameToExport {
            source: &sources[0].0,
            frame: 0,
            frames: 1,
            label: "a1".into(),
            display: &display,
            result: &sources[0].3,
            model_size: 4,
        })
        .unwrap();
    let summary = exporter.finish().unwrap();
    assert!(summary.reports.is_empty());
    assert!(!plain.join(results_sr_name(1)).exists());
    assert_eq!(summary.files.len(), 2);
}
