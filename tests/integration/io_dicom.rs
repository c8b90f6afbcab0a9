//! DICOM loader, windowing and study scan on the committed synthetic fixtures
//! (tests/fixtures/dicom, written by tools/make_dicom_fixtures.py). Every expected pixel value
//! is the formula the fixture was written with, independent of any decoder.
use crate::support::{corpus, dicom_fixture};
use std::ops::ControlFlow;
use std::path::Path;

use mvfa_studio::io::dicom::{
    DicomErrorKind, inspect_dicom, load_dicom, load_dicom_bytes, looks_like_dicom,
};
use mvfa_studio::io::image::{Channels, Frame, VoiFunction, Window};
use mvfa_studio::io::study::{ScanProgress, scan_dicomdir, scan_folder, scan_paths};

fn window(center: f64, width: f64, function: VoiFunction) -> Window {
    Window {
        center,
        width,
        function,
        label: String::new(),
        lut: None,
    }
}

#[test]
fn ct_modality_lut_masking_windows_and_geometry() {
    // stored v = 10 r + c - 20 (signed 12-bit, garbage in the 4 high bits), slope 2, intercept -1024
    for name in [
        "ct_rescale_windows.dcm",
        "ct_rescale_windows_implicit.dcm",
        "ct_rescale_windows_bigendian.dcm",
    ] {
        let s = load_dicom(&dicom_fixture(name)).unwrap();
        assert_eq!(s.frames.len(), 1, "{name}");
        let f = &s.frames[0];
        assert_eq!(
            (f.width, f.height, f.channels),
            (8, 6, Channels::Gray),
            "{name}"
        );
        for r in 0..6 {
            for c in 0..8 {
                let v = (10 * r + c - 20) as f32;
                assert_eq!(
                    f.data[(r * 8 + c) as usize],
                    2.0 * v - 1024.0,
                    "{name} at ({r},{c})"
                );
            }
        }
        assert!(!s.invert);
        let labels: Vec<&str> = s.windows.iter().map(|w| w.label.as_str()).collect();
        assert_eq!(labels, ["SOFT TISSUE", "LUNG", "Full range"], "{name}");
        assert_eq!((s.windows[0].center, s.windows[0].width), (40.0, 400.0));
        assert_eq!((s.windows[1].center, s.windows[1].width), (-600.0, 1500.0));
        assert!(s.windows.iter().all(|w| w.function == VoiFunction::Linear));
        // Full range: -1064 ..= -950.
        assert_eq!((s.windows[2].center, s.windows[2].width), (-1006.5, 115.0));
        assert_eq!(s.info.modality.as_deref(), Some("CT"));
        assert_eq!(s.info.pixel_spacing, Some([0.5, 0.75]));
        assert_eq!(s.info.slice_thickness, Some(2.5));
        assert_eq!(s.info.frame_positions, vec![Some([-10.0, -20.0, 30.0])]);
        assert_eq!(
            s.info.image_orientation,
            Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        );
        assert_eq!(s.info.bits_stored, Some(12));
        assert!(s.info.study_instance_uid.is_some() && s.info.series_instance_uid.is_some());
    }
}

#[test]
fn monochrome1_is_flagged_and_sigmoid_voi_is_read() {
    let s = load_dicom(&dicom_fixture("cr_mono1_sigmoid.dcm")).unwrap();
    assert!(s.invert);
    let f = &s.frames[0];
    assert_eq!((f.width, f.height), (16, 4));
    assert_eq!(f.data[16 * 2 + 3], 35.0);
    let w = &s.windows[0];
    assert_eq!(
        (w.center, w.width, w.function),
        (32.0, 64.0, VoiFunction::Sigmoid)
    );
    // Display: sigmoid gives 127.5 at the center -> level 127, inverted 128.
    let shown = f.window_to_u8(w, s.invert);
    assert_eq!(shown[2 * 16], 128);
    // Lower values are brighter in MONOCHROME1.
    assert!(shown[0] > shown[63]);
}

#[test]
fn colour_planar_ybr_and_palette_become_rgb() {
    let rgb = load_dicom(&dicom_fixture("rgb_planar.dcm")).unwrap();
    let f = &rgb.frames[0];
    assert_eq!((f.width, f.height, f.channels), (4, 3, Channels::Rgb));
    for r in 0..3 {
        for c in 0..4 {
            let i = (r * 4 + c) * 3;
            assert_eq!(
                &f.data[i..i + 3],
                &[60.0 * c as f32, 100.0 * r as f32, 200.0 - 50.0 * c as f32]
            );
        }
    }
    assert_eq!(rgb.windows.len(), 1);
    // The colour default window leaves 8-bit samples unchanged.
    let shown = f.window_to_u8(&rgb.windows[0], false);
    assert_eq!(shown, f.data.iter().map(|&v| v as u8).collect::<Vec<_>>());

    for name in ["ybr_full.dcm", "ybr_full_422.dcm"] {
        let s = load_dicom(&dicom_fixture(name)).unwrap();
        let f = &s.frames[0];
        assert_eq!(f.channels, Channels::Rgb, "{name}");
        for r in 0..3 {
            for c in 0..4 {
                let y = (20 * r + 5 * c) as f32;
                let i = (r * 4 + c) * 3;
                assert_eq!(&f.data[i..i + 3], &[y, y, y], "{name} at ({r},{c})");
            }
        }
    }

    let p = load_dicom(&dicom_fixture("palette.dcm")).unwrap();
    let f = &p.frames[0];
    let lut = [
        [0.0, 0.0, 255.0],
        [255.0, 0.0, 0.0],
        [0.0, 255.0, 0.0],
        [128.0, 128.0, 128.0],
    ];
    for r in 0..3 {
        for c in 0..4 {
            let i = (r * 4 + c) * 3;
            assert_eq!(&f.data[i..i + 3], &lut[(r + c) % 4], "palette at ({r},{c})");
        }
    }
}

#[test]
fn enhanced_multiframe_per_frame_rescale_positions_and_frame_voi() {
    let s = load_dicom(&dicom_fixture("enhanced_multiframe.dcm")).unwrap();
    assert_eq!(s.frames.len(), 3);
    for (k, f) in s.frames.iter().enumerate() {
        assert_eq!((f.width, f.height), (5, 4));
        for r in 0..4 {
            for c in 0..5 {
                let expected = (100 * k + 5 * r + c) as f32 - 1000.0 + 10.0 * k as f32;
                assert_eq!(f.data[r * 5 + c], expected, "frame {k} at ({r},{c})");
            }
        }
    }
    let labels: Vec<&str> = s.windows.iter().map(|w| w.label.as_str()).collect();
    assert_eq!(labels, ["NARROW", "WIDE", "Full range"]);
    assert_eq!(s.windows[0].function, VoiFunction::LinearExact);
    assert_eq!((s.windows[1].center, s.windows[1].width), (150.0, 300.0));
    assert_eq!(
        s.info.frame_positions,
        vec![
            Some([0.0, 0.0, 0.0]),
            Some([0.0, 0.0, 5.0]),
            Some([0.0, 0.0, 10.0])
        ]
    );
    assert_eq!(s.info.pixel_spacing, Some([0.8, 0.9]));
    assert_eq!(s.info.slice_thickness, Some(3.0));
    // The functional groups appear in the metadata tree as sequences with items.
    let per_frame = s
        .metadata
        .iter()
        .find(|n| n.name == "(5200,9230) PerFrameFunctionalGroupsSequence")
        .expect("per-frame functional groups node");
    assert_eq!(per_frame.children.len(), 3);
    assert_eq!(per_frame.children[0].name, "Item 1");
}

#[test]
fn compressed_multiframe_rle_jpegls_j2k_are_lossless() {
    for name in [
        "multiframe_rle.dcm",
        "multiframe_jpegls.dcm",
        "multiframe_j2k.dcm",
    ] {
        let s = load_dicom(&dicom_fixture(name)).unwrap();
        assert_eq!(s.frames.len(), 2, "{name}");
        for (k, f) in s.frames.iter().enumerate() {
            assert_eq!((f.width, f.height), (32, 32), "{name}");
            for r in 0..32 {
                for c in 0..32 {
                    assert_eq!(
                        f.data[r * 32 + c],
                        (1000 * k + 32 * r + c) as f32,
                        "{name} frame {k} ({r},{c})"
                    );
                }
            }
        }
    }
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let p = dicom_fixture("mpeg2.dcm");
    let e = load_dicom(&p).unwrap_err();
    assert_eq!(e.kind, DicomErrorKind::UnsupportedTransferSyntax);
    assert_eq!(
        e.to_string(),
        format!(
            "{}: unsupported transfer syntax 1.2.840.10008.1.2.4.100 (MPEG2 Main Profile / Main Level): no decoder for this encoding",
            p.display()
        )
    );
    // The header of an unsupported encoding is still readable.
    let sum = inspect_dicom(&p).unwrap();
    assert_eq!(sum.transfer_syntax_uid, "1.2.840.10008.1.2.4.100");

    let p = dicom_fixture("truncated.dcm");
    let e = load_dicom(&p).unwrap_err();
    assert_eq!(e.kind, DicomErrorKind::Truncated);
    assert_eq!(
        e.to_string(),
        format!(
            "{}: truncated pixel data: expected 96 bytes, found 46",
            p.display()
        )
    );

    let p = dicom_fixture("not_dicom.txt");
    let e = load_dicom(&p).unwrap_err();
    assert_eq!(e.kind, DicomErrorKind::NotDicom);
    assert!(e.to_string().starts_with(&format!(
        "{}: not a DICOM file (no DICM preamble",
        p.display()
    )));
    assert!(!looks_like_dicom(&p));

    let p = dicom_fixture("dicomdir_set/DICOMDIR");
    let e = load_dicom(&p).unwrap_err();
    assert_eq!(e.kind, DicomErrorKind::NoPixelData);
    assert!(e.message.contains("Media Storage Directory"), "{e}");

    let e = load_dicom(&dicom_fixture("no_such_file.dcm")).unwrap_err();
    assert_eq!(e.kind, DicomErrorKind::Io);
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    // Rows = Columns = 65535 and NumberOfFrames = 2^31-ish: far beyond the sample limit.
    let mut bytes = std::fs::read(dicom_fixture("ct_rescale_windows.dcm")).unwrap();
    let patch = |bytes: &mut Vec<u8>, tag: [u8; 4], vr: &[u8; 2], value: &[u8]| {
        let pos = bytes
            .windows(6)
            .position(|w| w[..4] == tag && &w[4..6] == vr)
            .unwrap();
        bytes[pos + 8..pos + 8 + value.len()].copy_from_slice(value);
    };
    patch(&mut bytes, [0x28, 0x00, 0x10, 0x00], b"US", &[0xFF, 0xFF]);
    patch(&mut bytes, [0x28, 0x00, 0x11, 0x00], b"US", &[0xFF, 0xFF]);
    let e = load_dicom_bytes(&bytes, Path::new("big.dcm")).unwrap_err();
    assert_eq!(e.kind, DicomErrorKind::TooLarge, "{e}");
    assert!(e.message.contains("65535 x 65535"), "{e}");
}

#[test]
fn summary_reads_header_facts() {
    let s = inspect_dicom(&dicom_fixture("enhanced_multiframe.dcm")).unwrap();
    assert_eq!(s.modality.as_deref(), Some("CT"));
    assert_eq!(s.transfer_syntax_name, "Explicit VR Little Endian");
    assert_eq!((s.rows, s.columns, s.frames), (Some(4), Some(5), Some(3)));
    assert_eq!(s.sop_class_name, "Enhanced CT Image Storage");
    assert_eq!(s.image_position, Some([0.0, 0.0, 0.0]));
    assert!(s.has_image() && !s.is_dicomdir);
    let d = inspect_dicom(&dicom_fixture("dicomdir_set/DICOMDIR")).unwrap();
    assert!(d.is_dicomdir && !d.has_image());
}

#[test]
fn voi_functions_follow_the_standard() {
    // Linear, center 127.5 width 256 (and linear exact, width 255) leave 8-bit data unchanged.
    let id = window(127.5, 256.0, VoiFunction::Linear);
    let exact = window(127.5, 255.0, VoiFunction::LinearExact);
    for x in 0..=255 {
        assert_eq!(id.map_u8(f64::from(x)), x as u8);
        assert_eq!(exact.map_u8(f64::from(x)), x as u8);
    }
    // C.11.2.1.2.1 with c = 40, w = 400: x <= -160 -> 0, x > 239 -> 255.
    let soft = window(40.0, 400.0, VoiFunction::Linear);
    assert_eq!(soft.map(-160.0), 0.0);
    assert!(soft.map(-159.0) > 0.0);
    assert_eq!(soft.map(239.0), ((239.0 - 39.5) / 399.0 + 0.5) * 255.0);
    assert_eq!(soft.map(239.5), 255.0);
    assert_eq!(soft.map_u8(40.0), 127);
    // Linear exact: c +- w/2.
    let le = window(0.0, 100.0, VoiFunction::LinearExact);
    assert_eq!(le.map(-50.0), 0.0);
    assert_eq!(le.map(0.0), 127.5);
    assert_eq!(le.map(50.0), 255.0);
    // Sigmoid: 255 / (1 + exp(-4 (x - c) / w)).
    let sig = window(10.0, 20.0, VoiFunction::Sigmoid);
    assert_eq!(sig.map(10.0), 127.5);
    assert!((sig.map(20.0) - 255.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-12);
    // Degenerate widths threshold instead of dividing by zero; NaN shows black.
    assert_eq!(window(5.0, 0.0, VoiFunction::Linear).map(5.0), 255.0);
    assert_eq!(window(5.0, 0.0, VoiFunction::Linear).map(4.0), 0.0);
    assert_eq!(window(5.0, 0.0, VoiFunction::LinearExact).map(5.0), 0.0);
    assert_eq!(soft.map(f64::NAN), 0.0);
    // Full range: min -> 0, max -> 255.
    let full = Window::full_range(-1064.0, -950.0);
    assert_eq!(full.map(-1064.0), 0.0);
    assert_eq!(full.map(-950.0), 255.0);
    assert!(full.map(-1063.0) > 0.0);
    let byte = Window::full_range(0.0, 255.0);
    assert!((0..=255).all(|x| byte.map_u8(f64::from(x)) == x as u8));
}

#[test]
fn frames_render_to_display_images() {
    let grey = Frame {
        width: 3,
        height: 1,
        channels: Channels::Gray,
        data: vec![0.0, 127.0, 255.0],
    };
    let w = window(127.5, 256.0, VoiFunction::Linear);
    assert_eq!(grey.window_to_u8(&w, false), vec![0, 127, 255]);
    assert_eq!(grey.window_to_u8(&w, true), vec![255, 128, 0]);
    let img = grey.to_display_image(&w, true);
    assert_eq!((img.width(), img.height()), (3, 1));
    assert_eq!(img.as_luma8().unwrap().as_raw(), &vec![255, 128, 0]);
    let rgb = Frame {
        width: 1,
        height: 1,
        channels: Channels::Rgb,
        data: vec![10.0, 20.0, 30.0],
    };
    assert_eq!(
        rgb.to_display_image(&w, false).as_rgb8().unwrap().as_raw(),
        &vec![10, 20, 30]
    );
    let s = load_dicom(&dicom_fixture("ct_rescale_windows.dcm")).unwrap();
    let shown = s.display_frame(0, s.default_window().unwrap()).unwrap();
    assert_eq!((shown.width(), shown.height()), (8, 6));
    assert!(s.display_frame(1, &s.windows[0]).is_none());
}

fn no_progress(_: &ScanProgress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[test]
fn folder_scan_groups_orders_and_reports() {
    let mut reports = Vec::new();
    let scan = scan_folder(&dicom_fixture("study_folder"), &mut |p| {
        reports.push(p.clone());
        ControlFlow::Continue(())
    });
    assert!(!scan.cancelled);
    assert_eq!(scan.files_examined, 9);
    assert_eq!(reports.len(), 9);
    assert!(
        reports
            .iter()
            .enumerate()
            .all(|(i, p)| p.done == i + 1 && p.total == 9)
    );
    assert_eq!(scan.skipped_non_dicom, 2, "README.txt and notes.bin");
    assert_eq!(scan.errors.len(), 1);
    assert!(scan.errors[0].path.ends_with("broken.dcm"));
    assert!(
        scan.errors[0].to_string().contains("broken.dcm: "),
        "{}",
        scan.errors[0]
    );
    assert_eq!(scan.studies.len(), 2);
    assert_eq!(scan.series_count(), 3);
    assert_eq!(scan.instance_count(), 6);

    let study_a = scan.studies.iter().find(|s| s.series.len() == 2).unwrap();
    let names = |i: usize| -> Vec<String> {
        study_a.series[i]
            .instances
            .iter()
            .map(|x| x.path().file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    // Series 1: by position along the normal (z = 0, 5, 10) although the instance numbers
    // say otherwise; series 2: no positions, by instance number.
    assert_eq!(study_a.series[0].series_number, Some(1));
    assert_eq!(names(0), ["a.dcm", "b.dcm", "c.dcm"]);
    assert_eq!(names(1), ["x.dcm", "y.dcm"]);
    assert_eq!(study_a.patient_name.as_deref(), Some("Fixture^Synthetic"));
    let inst = &study_a.series[0].instances[0];
    assert!(
        inst.metadata
            .iter()
            .any(|n| n.name == "(0010,0010) PatientName" && n.value == "Fixture^Synthetic")
    );
    assert!(inst.metadata.iter().any(
        |n| n.name.starts_with("(0002,0010)") && n.value.contains("Explicit VR Little Endian")
    ));
}

#[test]
fn scan_can_be_cancelled() {
    let scan = scan_folder(&dicom_fixture("study_folder"), &mut |p| {
        if p.done == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(scan.cancelled);
    assert_eq!(scan.files_examined, 2);
}

#[test]
fn dicomdir_scan_matches_the_folder_scan() {
    let scan = scan_dicomdir(&dicom_fixture("dicomdir_set/DICOMDIR"), &mut no_progress).unwrap();
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!(
        (
            scan.studies.len(),
            scan.series_count(),
            scan.instance_count()
        ),
        (2, 3, 6)
    );
    // Given on a path list, a DICOMDIR is followed too; a folder holding it counts it apart.
    let listed = scan_paths(&[dicom_fixture("dicomdir_set/DICOMDIR")], &mut no_progress);
    assert_eq!(listed.instance_count(), 6);
    let walked = scan_folder(&dicom_fixture("dicomdir_set"), &mut no_progress);
    assert_eq!((walked.instance_count(), walked.dicomdir_files), (6, 1));
}

#[test]
#[ignore = "needs the shared DICOM corpus (../shared/data/dicom)"]
fn corpus_dicomdir_resolves_its_files() {
    let dd = corpus::file("pydicom/dicomdirtests/DICOMDIR");
    let scan = scan_dicomdir(&dd, &mut no_progress).unwrap();
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    // 3 patients: CR (3 images), CT (4 + 2 + 5), MR (3 + 7 + 7): 31 instances.
    assert_eq!(scan.instance_count(), 31);
    let mr = load_dicom(&corpus::file("pydicom/MR_small.dcm")).unwrap();
    assert_eq!(mr.frames[0].width, 64);
}
