//! Exports: heatmap PNG round trip, overlay legend, CSV quoting, DICOM Secondary Capture round
//! trip (plain and anonymised), and atomic writes that leave nothing behind on failure.
use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{InMemDicomObject, open_file};
use dicom_pixeldata::PixelDecoder;
use mvfa_studio::io::export::font;
use mvfa_studio::io::export::{
    Anonymise, Colormap, Dates, ExportError, FloatMap, OverlayOptions, ScOptions, ScoreRow,
    SourceAttributes, read_heatmap_png, render_overlay, scores_csv_string, write_atomically,
    write_heatmap_png, write_overlay_png, write_png, write_scores_csv, write_secondary_capture,
};
use mvfa_studio::io::image::Channels;
use mvfa_studio::io::resample::Image8;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn lcg_map(w: u32, h: u32, lo: f32, hi: f32, seed: u64) -> FloatMap {
    let mut s = seed;
    let data = (0..w * h)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (s >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo)
        })
        .collect();
    FloatMap::new(w, h, data).unwrap()
}

// ---------------------------------------------------------------------------------------------
// (a) heatmap PNG

#[test]
fn heatmap_png_round_trips_within_quantisation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("map.png");
    let mut map = lcg_map(37, 23, -1.5, 3.25, 1);
    map.data[0] = -1.5;
    map.data[1] = 3.25;
    let scale = write_heatmap_png(&path, &map).unwrap();
    assert_eq!((scale.min, scale.max), (-1.5, 3.25));
    let (back, scale2) = read_heatmap_png(&path).unwrap();
    assert_eq!(scale2, scale);
    assert_eq!((back.width, back.height), (37, 23));
    let bound = (scale.max - scale.min) as f64 / 131070.0 + 1e-6;
    let err = map
        .data
        .iter()
        .zip(&back.data)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    println!("heatmap round-trip max error {err:.3e} (bound {bound:.3e})");
    assert!(err <= bound, "{err}");
    assert_eq!(back.data[0], -1.5);
    assert_eq!(back.data[1], 3.25);
    // Any PNG reader sees a 16-bit grey image spanning 0..65535.
    let img = image::open(&path).unwrap().into_luma16();
    assert_eq!(img.get_pixel(0, 0).0[0], 0);
    assert_eq!(img.get_pixel(1, 0).0[0], 65535);
    assert_eq!(entries(dir.path()), vec!["map.png"]);
}

#[test]
fn heatmap_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    // Constant map: scale min == max, values restored exactly.
    let p = dir.path().join("const.png");
    write_heatmap_png(&p, &FloatMap::new(3, 2, vec![0.25; 6]).unwrap()).unwrap();
    let (back, s) = read_heatmap_png(&p).unwrap();
    assert_eq!((s.min, s.max), (0.25, 0.25));
    assert!(back.data.iter().all(|&v| v == 0.25));
    // NaN: rejected before anything is written.
    let p = dir.path().join("nan.png");
    let e = write_heatmap_png(&p, &FloatMap::new(2, 1, vec![0.0, f32::NAN]).unwrap()).unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");
    assert!(!p.exists());
    // An ordinary PNG has no scale chunk: clear error naming the file.
    let p = dir.path().join("plain.png");
    let grey16 = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::new(2, 2);
    grey16.save(&p).unwrap();
    let e = read_heatmap_png(&p).unwrap_err().to_string();
    assert!(e.contains("plain.png") && e.contains("mvfa:scale"), "{e}");
    assert!(FloatMap::new(2, 2, vec![0.0; 3]).is_err());
}

// ---------------------------------------------------------------------------------------------
// (b) overlay PNG with legend

fn grey_base(w: u32, h: u32) -> Image8 {
    let data = (0..h)
        .flat_map(|y| (0..w).map(move |x| ((x + y) % 256) as u8))
        .collect();
    Image8::new(w, h, Channels::Gray, data).unwrap()
}

#[test]
fn overlay_blends_and_burns_in_a_legend() {
    let (w, h) = (300u32, 200u32);
    let base = grey_base(w, h);
    // Map: 0 on the left half, ramp 0..1 on the right half.
    let data = (0..h)
        .flat_map(|_| {
            (0..w).map(move |x| {
                if x < w / 2 {
                    0.0
                } else {
                    (x - w / 2) as f32 / (w / 2 - 1) as f32
                }
            })
        })
        .collect();
    let map = FloatMap::new(w, h, data).unwrap();
    let opts = OverlayOptions {
        colormap: Colormap::Inferno,
        opacity: 0.4,
        range: Some((0.0, 1.0)),
        threshold: Some(0.1),
        legend: true,
    };
    let ov = render_overlay(&base, &map, &opts).unwrap();
    let img = &ov.image;
    let l = ov.legend.unwrap();
    assert_eq!(img.channels, Channels::Rgb);
    assert!(img.width > w && img.height >= h);
    let px = |x: usize, y: usize| -> [u8; 3] {
        let i = (y * img.width as usize + x) * 3;
        [img.data[i], img.data[i + 1], img.data[i + 2]]
    };
    // Below the threshold: the base image untouched (grey replicated).
    let g = base.data[(10 * w + 5) as usize];
    assert_eq!(px(5, 10), [g, g, g]);
    // At the right edge (value 1): 0.6 * base + 0.4 * colormap(1), rounded.
    let (x, y) = (w as usize - 1, 10usize);
    let g = base.data[y * w as usize + x] as f32;
    let c = Colormap::Inferno.rgb(1.0);
    for (k, ck) in c.iter().enumerate() {
        let want = (g * 0.6 + *ck as f32 * 0.4 + 0.5) as u8;
        assert!(px(x, y)[k].abs_diff(want) <= 1, "{k}");
    }
    // Legend bar: each row holds the colormap colour of its value, max on top.
    assert!(l.bar_x0 >= w as usize && l.bar_bottom > l.bar_top + 20);
    for y in l.bar_top..=l.bar_bottom {
        let t = (l.bar_bottom - y) as f32 / (l.bar_bottom - l.bar_top) as f32;
        let want = Colormap::Inferno.rgb(t);
        for x in [l.bar_x0, (l.bar_x0 + l.bar_x1) / 2, l.bar_x1 - 1] {
            assert_eq!(px(x, y), want, "bar row {y}");
        }
    }
    assert_eq!(px(l.bar_x0, l.bar_top), Colormap::Inferno.rgb(1.0));
    assert_eq!(px(l.bar_x0, l.bar_bottom), Colormap::Inferno.rgb(0.0));
    // Labels "1" (max) and "0" (min) drawn with the bitmap font, centred on the bar ends.
    let s = l.scale;
    for (text, yc) in [("1", l.bar_top), ("0", l.bar_bottom)] {
        assert_eq!(font::format_tick(if text == "1" { 1.0 } else { 0.0 }), text);
        let top = yc - font::GLYPH_H * s / 2;
        let ch = text.chars().next().unwrap();
        for row in 0..font::GLYPH_H {
            for col in 0..font::GLYPH_W {
                let p = px(l.label_x + col * s, top + row * s);
                let on = font::pixel(ch, col, row);
                assert_eq!(p == [255, 255, 255], on, "{text} glyph ({col},{row})");
            }
        }
    }
    // Written PNG holds exactly the rendered pixels.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("overlay.png");
    let written = write_overlay_png(&p, &base, &map, &opts).unwrap();
    let back = image::open(&p).unwrap().into_rgb8();
    assert_eq!(back.into_raw(), written.image.data);
}

#[test]
fn overlay_options_are_checked() {
    let base = grey_base(4, 4);
    let map = FloatMap::new(4, 3, vec![0.0; 12]).unwrap();
    let e = render_overlay(&base, &map, &OverlayOptions::default()).unwrap_err();
    assert!(e.to_string().contains("4x3"), "{e}");
    let map = FloatMap::new(4, 4, vec![0.5; 16]).unwrap();
    let bad = OverlayOptions {
        opacity: 1.5,
        ..Default::default()
    };
    assert!(render_overlay(&base, &map, &bad).is_err());
    // Tiny image: the canvas grows to fit the legend; no legend: same size as the input.
    let ov = render_overlay(&base, &map, &OverlayOptions::default()).unwrap();
    assert!(ov.image.height as usize > ov.legend.unwrap().bar_bottom);
    let plain = OverlayOptions {
        legend: false,
        ..Default::default()
    };
    let ov = render_overlay(&base, &map, &plain).unwrap();
    assert_eq!((ov.image.width, ov.image.height), (4, 4));
    for cm in Colormap::ALL {
        assert_ne!(cm.rgb(0.0), cm.rgb(1.0), "{cm:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// (c) CSV

/// Minimal RFC 4180 reader for the round trip.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = vec![];
    let mut row = vec![];
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[test]
fn csv_quotes_and_round_trips() {
    let rows = vec![
        ScoreRow {
            path: "/data/plain.png".into(),
            scores: vec![Some(0.125), Some(1e-9)],
        },
        ScoreRow {
            path: "/data/with, comma \"and quotes\".dcm".into(),
            scores: vec![None, Some(-3.5)],
        },
        ScoreRow {
            path: "line\nbreak and ünïcode".into(),
            scores: vec![Some(0.1 + 0.2), Some(f64::NAN)],
        },
        ScoreRow {
            path: " leading space".into(),
            scores: vec![Some(2.0), None],
        },
    ];
    let text = scores_csv_string(&["image score", "max, pixel"], &rows).unwrap();
    assert!(
        text.starts_with("path,image score,\"max, pixel\"\r\n"),
        "{text}"
    );
    assert!(text.contains("\"/data/with, comma \"\"and quotes\"\".dcm\",,-3.5\r\n"));
    let parsed = parse_csv(&text);
    assert_eq!(parsed.len(), 5);
    for (row, p) in rows.iter().zip(&parsed[1..]) {
        assert_eq!(p[0], row.path);
        for (v, s) in row.scores.iter().zip(&p[1..]) {
            match v {
                None => assert_eq!(s, ""),
                Some(v) if v.is_nan() => assert_eq!(s, "NaN"),
                Some(v) => assert_eq!(s.parse::<f64>().unwrap(), *v),
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("scores.csv");
    write_scores_csv(&p, &["image score", "max, pixel"], &rows).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    let bad = [ScoreRow {
        path: "x".into(),
        scores: vec![Some(1.0)],
    }];
    let e = write_scores_csv(&dir.path().join("bad.csv"), &["a", "b"], &bad).unwrap_err();
    assert!(e.to_string().contains("1 scores for 2 columns"), "{e}");
    assert_eq!(entries(dir.path()), vec!["scores.csv"]);
}

// ---------------------------------------------------------------------------------------------
// (d) DICOM Secondary Capture

/// (0010,1000) OtherPatientIDs (retired in the dictionary, still found in files).
const OTHER_PATIENT_IDS: dicom_core::Tag = dicom_core::Tag(0x0010, 0x1000);
const SRC_STUDY: &str = "1.2.826.0.1.3680043.8.498.1";
const SRC_SOP: &str = "1.2.826.0.1.3680043.8.498.1.2.3";
const SRC_FOR: &str = "1.2.826.0.1.3680043.8.498.1.9";

fn source_object() -> InMemDicomObject {
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    InMemDicomObject::from_element_iter([
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        s(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        s(tags::SOP_INSTANCE_UID, VR::UI, SRC_SOP),
        s(tags::PATIENT_NAME, VR::PN, "Müller^Hans"),
        s(tags::PATIENT_ID, VR::LO, "PID-0042"),
        s(tags::PATIENT_BIRTH_DATE, VR::DA, "19600101"),
        s(tags::PATIENT_SEX, VR::CS, "M"),
        s(tags::PATIENT_AGE, VR::AS, "064Y"),
        s(OTHER_PATIENT_IDS, VR::LO, "OTHER-1"),
        s(tags::PATIENT_ADDRESS, VR::LO, "1 Main Street"),
        s(tags::STUDY_INSTANCE_UID, VR::UI, SRC_STUDY),
        s(tags::STUDY_DATE, VR::DA, "20240115"),
        s(tags::STUDY_TIME, VR::TM, "101500"),
        s(tags::ACCESSION_NUMBER, VR::SH, "ACC123"),
        s(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Who^Doctor"),
        s(tags::STUDY_ID, VR::SH, "S1"),
        s(tags::STUDY_DESCRIPTION, VR::LO, "CT head"),
        s(tags::INSTITUTION_NAME, VR::LO, "General Hospital"),
        s(tags::STATION_NAME, VR::SH, "CT-ROOM-7"),
        s(tags::DEVICE_SERIAL_NUMBER, VR::LO, "SN-998877"),
        s(tags::FRAME_OF_REFERENCE_UID, VR::UI, SRC_FOR),
        s(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            "1.2.826.0.1.3680043.8.498.1.5",
        ),
        s(tags::MODALITY, VR::CS, "CT"),
    ])
}

fn overlay_image() -> Image8 {
    let (w, h) = (7u32, 5u32); // odd byte count: exercises OB padding
    let data = (0..w * h * 3).map(|i| (i * 11 % 256) as u8).collect();
    Image8::new(w, h, Channels::Rgb, data).unwrap()
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag).unwrap().map(|e| {
        e.to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    })
}

fn valid_uid(uid: &str) -> bool {
    uid.len() <= 64
        && uid.starts_with("2.25.")
        && uid[5..].chars().all(|c| c.is_ascii_digit())
        && !uid[5..].starts_with('0')
}

/// An export that keeps the patient and study (de-identification is the default).
fn identified() -> ScOptions {
    ScOptions {
        anonymise: None,
        ..ScOptions::default()
    }
}

#[test]
fn secondary_capture_keeps_patient_and_study() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sc.dcm");
    let src = SourceAttributes::from_object(&source_object());
    let overlay = overlay_image();
    let written = write_secondary_capture(&path, &overlay, &src, &identified()).unwrap();

    let obj = open_file(&path).unwrap();
    assert_eq!(
        obj.meta().transfer_syntax().trim_end_matches('\0'),
        uids::EXPLICIT_VR_LITTLE_ENDIAN
    );
    assert_eq!(
        obj.meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0'),
        "1.2.840.10008.5.1.4.1.1.7"
    );
    let t = |tag| text(&obj, tag);
    assert_eq!(t(tags::SOP_CLASS_UID).unwrap(), "1.2.840.10008.5.1.4.1.1.7");
    assert_eq!(t(tags::PATIENT_NAME).unwrap(), "Müller^Hans");
    assert_eq!(t(tags::PATIENT_ID).unwrap(), "PID-0042");
    assert_eq!(t(tags::PATIENT_BIRTH_DATE).unwrap(), "19600101");
    assert_eq!(t(tags::PATIENT_SEX).unwrap(), "M");
    assert_eq!(t(tags::STUDY_INSTANCE_UID).unwrap(), SRC_STUDY);
    assert_eq!(t(tags::STUDY_DATE).unwrap(), "20240115");
    assert_eq!(t(tags::STUDY_TIME).unwrap(), "101500");
    assert_eq!(t(tags::ACCESSION_NUMBER).unwrap(), "ACC123");
    assert_eq!(t(tags::REFERRING_PHYSICIAN_NAME).unwrap(), "Who^Doctor");
    assert_eq!(t(tags::STUDY_ID).unwrap(), "S1");
    // The Secondary Capture IOD has no Frame of Reference (dciodvfy warns of one).
    assert_eq!(t(tags::FRAME_OF_REFERENCE_UID), None);
    assert_eq!(t(tags::MODALITY).unwrap(), "OT");
    assert_eq!(t(tags::SERIES_DESCRIPTION).unwrap(), "MVFA anomaly overlay");
    assert!(t(tags::DERIVATION_DESCRIPTION).unwrap().contains("MVFA"));
    // New series and instance, valid 2.25 UIDs, reported back.
    let series = t(tags::SERIES_INSTANCE_UID).unwrap();
    let sop = t(tags::SOP_INSTANCE_UID).unwrap();
    assert!(valid_uid(&series) && valid_uid(&sop), "{series} {sop}");
    assert_ne!(series, "1.2.826.0.1.3680043.8.498.1.5");
    assert_eq!(written.sop_instance_uid, sop);
    assert_eq!(written.series_instance_uid, series);
    assert_eq!(written.study_instance_uid, SRC_STUDY);
    assert_eq!(
        obj.meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0'),
        sop
    );
    // Identifying extras of the source are not copied.
    for tag in [
        tags::INSTITUTION_NAME,
        OTHER_PATIENT_IDS,
        tags::PATIENT_ADDRESS,
    ] {
        assert!(obj.element_opt(tag).unwrap().is_none(), "{tag}");
    }
    // The source image is referenced.
    let seq = obj.element(tags::SOURCE_IMAGE_SEQUENCE).unwrap();
    let item = &seq.items().unwrap()[0];
    assert_eq!(
        text(item, tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
        SRC_SOP
    );
    // Pixels: RGB 8-bit, exactly the overlay, decodable by dicom-pixeldata.
    assert_eq!(obj.element(tags::ROWS).unwrap().to_int::<u16>().unwrap(), 5);
    assert_eq!(
        obj.element(tags::COLUMNS).unwrap().to_int::<u16>().unwrap(),
        7
    );
    assert_eq!(
        obj.element(tags::SAMPLES_PER_PIXEL)
            .unwrap()
            .to_int::<u16>()
            .unwrap(),
        3
    );
    assert_eq!(t(tags::PHOTOMETRIC_INTERPRETATION).unwrap(), "RGB");
    let raw = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(&raw[..overlay.data.len()], &overlay.data[..]);
    let decoded = obj.decode_pixel_data().unwrap();
    assert_eq!((decoded.rows(), decoded.columns()), (5, 7));
    assert_eq!(decoded.samples_per_pixel(), 3);
    assert_eq!(&decoded.data()[..overlay.data.len()], &overlay.data[..]);

    // A second export of the same source: same study, new instance; grouped by series on request.
    let path2 = dir.path().join("sc2.dcm");
    let opts = ScOptions {
        series_instance_uid: Some(series.clone()),
        instance_number: 2,
        ..identified()
    };
    let w2 = write_secondary_capture(&path2, &overlay, &src, &opts).unwrap();
    assert_eq!(w2.series_instance_uid, series);
    assert_eq!(w2.study_instance_uid, SRC_STUDY);
    assert_ne!(w2.sop_instance_uid, sop);
    assert_eq!(entries(dir.path()), vec!["sc.dcm", "sc2.dcm"]);
}

#[test]
fn secondary_capture_anonymised() {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceAttributes::from_object(&source_object());
    let opts = ScOptions {
        anonymise: Some(Anonymise {
            key: "site secret".into(),
            dates: Dates::Keep,
            ..Anonymise::default()
        }),
        ..Default::default()
    };
    let a = dir.path().join("a.dcm");
    let b = dir.path().join("b.dcm");
    let wa = write_secondary_capture(&a, &overlay_image(), &src, &opts).unwrap();
    let wb = write_secondary_capture(&b, &overlay_image(), &src, &opts).unwrap();
    let oa = open_file(&a).unwrap();
    let ob = open_file(&b).unwrap();
    let t = |tag| text(&oa, tag);
    assert_eq!(t(tags::PATIENT_NAME).unwrap(), "ANONYMOUS");
    let pid = t(tags::PATIENT_ID).unwrap();
    assert!(pid.starts_with("ANON-") && !pid.contains("0042"), "{pid}");
    assert_eq!(
        Some(pid),
        text(&ob, tags::PATIENT_ID),
        "same patient, same pseudonym"
    );
    // Study UID: new, deterministic, shared by both exports.
    assert_ne!(wa.study_instance_uid, SRC_STUDY);
    assert!(valid_uid(&wa.study_instance_uid));
    assert_eq!(wa.study_instance_uid, wb.study_instance_uid);
    assert_eq!(t(tags::STUDY_INSTANCE_UID).unwrap(), wa.study_instance_uid);
    assert_eq!(t(tags::FRAME_OF_REFERENCE_UID), None);
    // Emptied (type 2) and removed attributes.
    for tag in [
        tags::PATIENT_BIRTH_DATE,
        tags::PATIENT_SEX,
        tags::ACCESSION_NUMBER,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::STUDY_ID,
    ] {
        assert_eq!(t(tag).unwrap(), "", "{tag} should be empty");
    }
    for tag in [
        tags::PATIENT_AGE,
        tags::STUDY_DESCRIPTION,
        tags::INSTITUTION_NAME,
        OTHER_PATIENT_IDS,
        tags::PATIENT_ADDRESS,
    ] {
        assert!(
            oa.element_opt(tag).unwrap().is_none(),
            "{tag} should be absent"
        );
    }
    assert_eq!(t(tags::STUDY_DATE).unwrap(), "20240115");
    assert_eq!(t(tags::PATIENT_IDENTITY_REMOVED).unwrap(), "YES");
    assert!(t(tags::DEIDENTIFICATION_METHOD).unwrap().contains("PS3.15"));
    let seq = oa.element(tags::SOURCE_IMAGE_SEQUENCE).unwrap();
    let r = text(&seq.items().unwrap()[0], tags::REFERENCED_SOP_INSTANCE_UID).unwrap();
    assert_ne!(r, SRC_SOP);
    // Another key gives other pseudonyms; dates can be removed too.
    let c = dir.path().join("c.dcm");
    let other = ScOptions {
        anonymise: Some(Anonymise {
            key: "other".into(),
            ..Anonymise::default()
        }),
        ..Default::default()
    };
    let wc = write_secondary_capture(&c, &overlay_image(), &src, &other).unwrap();
    assert_ne!(wc.study_instance_uid, wa.study_instance_uid);
    let oc = open_file(&c).unwrap();
    assert_eq!(text(&oc, tags::STUDY_DATE).unwrap(), "");
    // No original identifier anywhere in the file bytes.
    for f in [&a, &c] {
        let bytes = std::fs::read(f).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        for secret in [
            "Hans",
            "PID-0042",
            "ACC123",
            "Doctor",
            SRC_STUDY,
            "19600101",
            "Hospital",
            "CT-ROOM-7",
            "SN-998877",
        ] {
            assert!(!hay.contains(secret), "{} leaks {secret}", f.display());
        }
    }
}

/// PS3.15 Table E.1-1, basic profile column, for every attribute a de-identified Secondary
/// Capture carries that the table lists (our descriptions: "C", kept under the Clean
/// Descriptors option because they are generated text).
pub(crate) const PROFILE_TABLE: &[(dicom_core::Tag, &str)] = &[
    (tags::PATIENT_NAME, "Z"),
    (tags::PATIENT_ID, "Z"),
    (tags::PATIENT_BIRTH_DATE, "Z"),
    (tags::PATIENT_SEX, "Z"),
    (tags::PATIENT_AGE, "X"),
    (tags::STUDY_INSTANCE_UID, "U"),
    (tags::STUDY_DATE, "Z"),
    (tags::STUDY_TIME, "Z"),
    (tags::ACCESSION_NUMBER, "Z"),
    (tags::REFERRING_PHYSICIAN_NAME, "Z"),
    (tags::STUDY_ID, "Z"),
    (tags::STUDY_DESCRIPTION, "X"),
    (tags::FRAME_OF_REFERENCE_UID, "U"),
    (tags::SOP_INSTANCE_UID, "U"),
    (tags::SERIES_INSTANCE_UID, "U"),
    (tags::CONTENT_DATE, "Z/D"),
    (tags::CONTENT_TIME, "Z/D"),
    (tags::TIMEZONE_OFFSET_FROM_UTC, "X"),
    (tags::STATION_NAME, "X/Z/D"),
    (tags::DEVICE_SERIAL_NUMBER, "X/Z/D"),
    (tags::SERIES_DESCRIPTION, "C"),
    (tags::DERIVATION_DESCRIPTION, "C"),
    (tags::SOURCE_IMAGE_SEQUENCE, "X/Z/U*"),
];

/// Attributes of our export that Table E.1-1 does not list (nothing to protect).
pub(crate) const NOT_IN_TABLE: &[dicom_core::Tag] = &[
    tags::LATERALITY,
    tags::SPECIFIC_CHARACTER_SET,
    tags::IMAGE_TYPE,
    tags::SOP_CLASS_UID,
    tags::MODALITY,
    tags::CONVERSION_TYPE,
    tags::MANUFACTURER,
    tags::SERIES_NUMBER,
    tags::INSTANCE_NUMBER,
    tags::PATIENT_ORIENTATION,
    tags::BURNED_IN_ANNOTATION,
    tags::LOSSY_IMAGE_COMPRESSION,
    tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
    tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
    tags::PATIENT_IDENTITY_REMOVED,
    tags::DEIDENTIFICATION_METHOD,
    tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
    tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
    tags::SAMPLES_PER_PIXEL,
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::PLANAR_CONFIGURATION,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::BITS_STORED,
    tags::HIGH_BIT,
    tags::PIXEL_REPRESENTATION,
    tags::PIXEL_DATA,
];

fn deid_codes(obj: &InMemDicomObject) -> Vec<String> {
    obj.element(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|i| text(i, tags::CODE_VALUE).unwrap())
        .collect()
}

#[test]
fn deidentified_export_follows_the_basic_profile_table() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_object();
    let src = SourceAttributes::from_object(&source);
    // The default export is de-identified.
    let path = dir.path().join("default.dcm");
    write_secondary_capture(&path, &overlay_image(), &src, &ScOptions::default()).unwrap();
    let obj = open_file(&path).unwrap();
    let original = |tag| text(&source, tag).filter(|v| !v.is_empty());
    for element in obj.iter() {
        let tag = element.header().tag;
        assert!(
            PROFILE_TABLE.iter().any(|(t, _)| *t == tag) || NOT_IN_TABLE.contains(&tag),
            "{tag} is in the export but not accounted for against Table E.1-1"
        );
    }
    for &(tag, action) in PROFILE_TABLE {
        let value = if action == "X/Z/U*" {
            None
        } else {
            text(&obj, tag)
        };
        match action {
            "X" => assert!(
                value.is_none(),
                "{tag} ({action}) must be removed: {value:?}"
            ),
            "Z" | "Z/D" | "X/Z/D" => {
                let v = value.unwrap_or_default();
                let dummy = [tags::PATIENT_NAME, tags::PATIENT_ID].contains(&tag);
                assert!(
                    v.is_empty() || (dummy && Some(&v) != original(tag).as_ref()),
                    "{tag} ({action}) must be empty or a dummy, got {v:?}"
                );
            }
            "U" => {
                // A Secondary Capture has no Frame of Reference at all.
                let Some(v) = value else {
                    assert_eq!(
                        tag,
                        tags::FRAME_OF_REFERENCE_UID,
                        "{tag} ({action}) missing"
                    );
                    continue;
                };
                assert!(valid_uid(&v), "{tag}: {v}");
                assert_ne!(Some(&v), original(tag).as_ref(), "{tag} must be replaced");
            }
            "X/Z/U*" => {
                let seq = obj.element(tag).unwrap();
                for item in seq.items().unwrap() {
                    let r = text(item, tags::REFERENCED_SOP_INSTANCE_UID).unwrap();
                    assert!(valid_uid(&r) && r != SRC_SOP, "{r}");
                }
            }
            "C" => assert!(value.is_some_and(|v| v.contains("MVFA")), "{tag}"),
            other => panic!("unknown action {other}"),
        }
    }
    assert_eq!(text(&obj, tags::PATIENT_IDENTITY_REMOVED).unwrap(), "YES");
    assert_eq!(
        text(&obj, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).unwrap(),
        "REMOVED"
    );
    assert_eq!(deid_codes(&obj), vec!["113100", "113105"]);

    // One export (one Anonymise value): UIDs replaced consistently. Another export: others.
    let export = Anonymise::default();
    let opts = ScOptions {
        anonymise: Some(export.clone()),
        ..ScOptions::default()
    };
    let uids_of = |name: &str, opts: &ScOptions| {
        let p = dir.path().join(name);
        write_secondary_capture(&p, &overlay_image(), &src, opts).unwrap();
        let o = open_file(&p).unwrap();
        let seq = o.element(tags::SOURCE_IMAGE_SEQUENCE).unwrap();
        (
            text(&o, tags::STUDY_INSTANCE_UID).unwrap(),
            text(&seq.items().unwrap()[0], tags::REFERENCED_SOP_INSTANCE_UID).unwrap(),
            text(&o, tags::PATIENT_ID).unwrap(),
        )
    };
    let first = uids_of("e1.dcm", &opts);
    assert_eq!(uids_of("e2.dcm", &opts), first);
    let other = uids_of("other.dcm", &ScOptions::default());
    assert_ne!(other.0, first.0);
    assert_ne!(other.1, first.1);
    assert_ne!(other.2, first.2);
    assert!(format!("{export:?}").contains("***") && !format!("{export:?}").contains(&export.key));
}

#[test]
fn deidentification_options_are_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let src = SourceAttributes::from_object(&source_object());
    let export = |name: &str, a: Anonymise| {
        let p = dir.path().join(name);
        let opts = ScOptions {
            anonymise: Some(a),
            ..ScOptions::default()
        };
        write_secondary_capture(&p, &overlay_image(), &src, &opts).unwrap();
        open_file(&p).unwrap()
    };
    let key = "site key".to_string();
    let kept = export(
        "kept.dcm",
        Anonymise {
            key: key.clone(),
            dates: Dates::Keep,
            retain_patient_characteristics: true,
            retain_device_identity: true,
        },
    );
    let t = |tag| text(&kept, tag).unwrap();
    assert_eq!(t(tags::STUDY_DATE), "20240115");
    assert_eq!(t(tags::STUDY_TIME), "101500");
    assert_eq!(t(tags::CONTENT_DATE).len(), 8);
    assert_eq!(t(tags::PATIENT_SEX), "M");
    assert_eq!(t(tags::PATIENT_AGE), "064Y");
    assert_eq!(t(tags::STATION_NAME), "CT-ROOM-7");
    assert_eq!(t(tags::DEVICE_SERIAL_NUMBER), "SN-998877");
    assert_eq!(
        t(tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED),
        "UNMODIFIED"
    );
    assert_eq!(
        deid_codes(&kept),
        vec!["113100", "113105", "113106", "113108", "113109"]
    );
    // Still de-identified where no option applies.
    assert_eq!(t(tags::PATIENT_NAME), "ANONYMOUS");
    assert_eq!(t(tags::PATIENT_BIRTH_DATE), "");

    // Shifted dates: the same whole-day shift for one patient under one key, times kept.
    let shifted = |name| {
        export(
            name,
            Anonymise {
                key: key.clone(),
                dates: Dates::Shift,
                ..Anonymise::default()
            },
        )
    };
    let (a, b) = (shifted("s1.dcm"), shifted("s2.dcm"));
    let date = text(&a, tags::STUDY_DATE).unwrap();
    assert_eq!(date.len(), 8);
    assert!(date.as_str() < "20240115", "{date}");
    assert_eq!(text(&b, tags::STUDY_DATE).unwrap(), date);
    assert_eq!(text(&a, tags::STUDY_TIME).unwrap(), "101500");
    assert_eq!(
        text(&a, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).unwrap(),
        "MODIFIED"
    );
    assert_eq!(deid_codes(&a), vec!["113100", "113105", "113107"]);
    assert!(text(&a, tags::PATIENT_SEX).unwrap().is_empty());
    assert!(a.element_opt(tags::STATION_NAME).unwrap().is_none());
}

#[test]
fn secondary_capture_from_a_file_and_without_source() {
    let dir = tempfile::tempdir().unwrap();
    // Source written to disk (with pixel data the reader skips).
    let mut src_obj = source_object();
    src_obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(2u16),
    ));
    src_obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(2u16),
    ));
    src_obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(vec![0u8; 8]),
    ));
    let src_path = dir.path().join("source.dcm");
    src_obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_to_file(&src_path)
        .unwrap();
    let src = SourceAttributes::from_file(&src_path).unwrap();
    let out = dir.path().join("sc.dcm");
    let w = write_secondary_capture(&out, &overlay_image(), &src, &identified()).unwrap();
    assert_eq!(w.study_instance_uid, SRC_STUDY);
    let obj = open_file(&out).unwrap();
    assert_eq!(text(&obj, tags::PATIENT_ID).unwrap(), "PID-0042");

    // No source: new study, empty (type 2) patient attributes, grey overlay replicated.
    let grey = Image8::new(2, 2, Channels::Gray, vec![1, 2, 3, 4]).unwrap();
    let out = dir.path().join("nosrc.dcm");
    let w = write_secondary_capture(&out, &grey, &SourceAttributes::none(), &identified()).unwrap();
    assert!(valid_uid(&w.study_instance_uid));
    let obj = open_file(&out).unwrap();
    assert_eq!(text(&obj, tags::PATIENT_NAME).unwrap(), "");
    let raw = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    assert_eq!(&raw[..12], &[1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);

    let missing = dir.path().join("nope.dcm");
    let e = SourceAttributes::from_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.dcm"), "{e}");
}

/// A secondary capture of a real CT file keeps its study and patient.
#[test]
#[ignore = "needs the shared DICOM corpus (../shared/data/dicom)"]
fn corpus_secondary_capture_keeps_study_and_patient_of_a_ct_file() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = crate::support::corpus::file("pydicom/CT_small.dcm");
    let src = SourceAttributes::from_file(&corpus).unwrap();
    let out = dir.path().join("ct_sc.dcm");
    let w = write_secondary_capture(&out, &overlay_image(), &src, &identified()).unwrap();
    let orig = open_file(&corpus).unwrap();
    assert_eq!(
        w.study_instance_uid,
        text(&orig, tags::STUDY_INSTANCE_UID).unwrap()
    );
    let obj = open_file(&out).unwrap();
    assert_eq!(text(&obj, tags::PATIENT_ID), text(&orig, tags::PATIENT_ID));
    assert_eq!(
        text(&obj, tags::PATIENT_NAME),
        text(&orig, tags::PATIENT_NAME)
    );
}

// ---------------------------------------------------------------------------------------------
// (e) atomic writes

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.bin");
    // The writer fails half-way: no target, no temporary file.
    let e = write_atomically(&target, |w| {
        w.write_all(&[7u8; 100_000])?;
        Err("disk full (simulated)".into())
    })
    .unwrap_err();
    assert!(matches!(e, ExportError::Write { .. }));
    assert!(
        e.to_string().contains("out.bin") && e.to_string().contains("simulated"),
        "{e}"
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    // An existing file survives a failed rewrite unchanged.
    std::fs::write(&target, b"previous").unwrap();
    let _ = write_atomically(&target, |w| {
        w.write_all(b"partial")?;
        Err("boom".into())
    });
    assert_eq!(std::fs::read(&target).unwrap(), b"previous");
    assert_eq!(entries(dir.path()), vec!["out.bin"]);

    // A successful write replaces it.
    write_atomically(&target, |w| Ok(w.write_all(b"new")?)).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    assert_eq!(entries(dir.path()), vec!["out.bin"]);

    // Rename fails (target is a directory): temporary file removed.
    let blocker = dir.path().join("taken.png");
    std::fs::create_dir(&blocker).unwrap();
    let map = FloatMap::new(2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    let e = write_heatmap_png(&blocker, &map).unwrap_err();
    assert!(e.to_string().contains("taken.png"), "{e}");
    assert_eq!(entries(dir.path()), vec!["out.bin", "taken.png"]);
    assert!(entries(&blocker).is_empty());

    // Missing directory: clear error, nothing created.
    let e = write_png(
        &dir.path().join("no/such/dir/x.png"),
        &Image8::new(1, 1, Channels::Gray, vec![0]).unwrap(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("x.png"), "{e}");
}

/// Root ignores directory permissions, so this runs only as another user (`.ci/run` runs it
/// where it is not root).
#[cfg(unix)]
#[test]
#[ignore = "needs a non-root user (root ignores directory permissions)"]
fn export_into_read_only_directory_fails_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro: PathBuf = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let enforced = std::fs::write(ro.join("probe"), b"x").is_err();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        enforced,
        "needs a user whose directory permissions are enforced (not root)"
    );
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let rows = [ScoreRow {
        path: "a".into(),
        scores: vec![Some(1.0)],
    }];
    let e = write_scores_csv(&ro.join("s.csv"), &["score"], &rows).unwrap_err();
    assert!(e.to_string().contains("s.csv"), "{e}");
    assert!(entries(&ro).is_empty());
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}
