//! `workflow::Exporter` end to end: a calibrated detector on the tiny random CLIP fixture
//! scores two PNG images and a DICOM file with patient data, and one export writes every
//! output kind; the files are read back (raw maps, heatmaps, overlays, the Secondary Captures
//! and their de-identification, the CSV).
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use mvfa_studio::io::export::{Dates, derived_uid, read_heatmap_png};
use mvfa_studio::io::output::InputSet;
use mvfa_studio::model::mvfa::detector::TaskKind;
use mvfa_studio::workflow::{
    Backbone, DetectorFacts, DicomExport, ExportOptions, Exporter, FrameToExport, MapLayer,
    MapScale, RawFormat, ScoredFrame, describe_options, map_at_original, open_detector, score_file,
};
use safetensors::SafeTensors;

use crate::cli_commands::{clip_fixture, csv_lines, make_checkpoint, no_temp_files, write_inputs};

type B = NdArray<f32>;

/// The DICOM fixture with patient and study attributes added, at `path`.
fn patient_dicom(path: &Path) {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom/ct_rescale_windows.dcm");
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
    // Heatmap, overlay, Secondary Capture and raw maps per frame, then the CSV.
    assert_eq!(summary.files.len(), 3 * 4 + 1);
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
    assert_eq!(names, ["patient.sc.dcm", "scores.csv"]);
}
