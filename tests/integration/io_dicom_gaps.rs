//! DICOM gaps closed after the I/O work, each with its own small committed fixture
//! (tools/make_dicom_fixtures.py).
use mvfa_studio::io::dicom::{DicomErrorKind, load_dicom};
use mvfa_studio::io::image::Channels;
use mvfa_studio::io::input::load_model_images;
use mvfa_studio::io::study::scan_dicomdir;
use std::ops::ControlFlow;

use crate::support::fixture_dir;

#[test]
fn unparsable_bytes_after_complete_pixel_data_open_with_a_warning() {
    let dir = fixture_dir("dicom");
    let clean = load_dicom(&dir.join("ct_rescale_windows.dcm")).unwrap();
    assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
    let implicit = load_dicom(&dir.join("ct_rescale_windows_implicit.dcm")).unwrap();
    assert_eq!(implicit.frames, clean.frames);
    for name in [
        "trailing_truncated_element.dcm",
        "trailing_junk.dcm",
        "trailing_zero_elements.dcm",
        "trailing_zero_elements_implicit.dcm",
    ] {
        let stack = load_dicom(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            stack.frames, clean.frames,
            "{name}: pixels as in the clean file"
        );
        assert_eq!(stack.windows, clean.windows, "{name}");
        assert_eq!(stack.warnings.len(), 1, "{name}: {:?}", stack.warnings);
        assert!(
            stack.warnings[0].contains("after the pixel data"),
            "{name}: {}",
            stack.warnings[0]
        );
    }
}

#[test]
fn truncated_pixel_data_stays_an_error() {
    let e = load_dicom(&fixture_dir("dicom").join("truncated.dcm")).unwrap_err();
    assert_eq!(e.kind, DicomErrorKind::Truncated, "{e}");
}

#[test]
fn voi_lut_sequence_items_are_display_presets() {
    let stack = load_dicom(&fixture_dir("dicom").join("voi_lut.dcm")).unwrap();
    let labels: Vec<&str> = stack.windows.iter().map(|w| w.label.as_str()).collect();
    assert_eq!(labels, ["RAMP", "INVERSE", "Full range"]);
    assert!(stack.windows[0].lut.is_some() && stack.windows[2].lut.is_none());
    let frame = &stack.frames[0];
    // pydicom's apply_voi_lut(index=0) on the 4x4 image, 8-bit output as is.
    let ramp = [
        0, 0, 0, 0, 0, 36, 73, 109, 146, 182, 219, 255, 255, 255, 255, 255,
    ];
    let default = stack.default_window().unwrap();
    assert_eq!(frame.window_to_u8(default, false), ramp);
    // apply_voi_lut(index=1): 16-bit entries 65535 - 4369 i, shown as floor(v / 65535 * 255).
    let inverse: Vec<u8> = (0..16u32)
        .map(|i| ((65535 - 4369 * i) * 255 / 65535) as u8)
        .collect();
    assert_eq!(frame.window_to_u8(&stack.windows[1], false), inverse);
    // Outside the mapped range the first and last entries hold.
    assert_eq!(stack.windows[0].map_u8(-5.0), 0);
    assert_eq!(stack.windows[0].map_u8(4000.0), 255);
    assert_eq!(stack.windows[0].map_u8(f64::NAN), 0);
}

#[test]
fn enhanced_multiframe_windows_and_rescale_come_per_frame_from_the_functional_groups() {
    let dir = fixture_dir("dicom");
    let stack = load_dicom(&dir.join("enhanced_per_frame.dcm")).unwrap();
    assert_eq!(stack.frames.len(), 3);
    for (k, frame) in stack.frames.iter().enumerate() {
        let k32 = k as f32;
        let expected: Vec<f32> = (0..6)
            .map(|i| (k32 + 1.0) * (10.0 * k32 + i as f32) - 100.0 * k32)
            .collect();
        assert_eq!(frame.data, expected, "frame {k}: its own rescale");
        let own = &stack.windows_for_frame(k)[0];
        assert_eq!(own.label, format!("F{k}"));
        assert_eq!(
            (own.center, own.width),
            (50.0 * k as f64, 20.0 + 10.0 * k as f64)
        );
        // The other frames' presets are not offered as this frame's.
        let labels: Vec<&str> = stack
            .windows_for_frame(k)
            .iter()
            .map(|w| w.label.as_str())
            .collect();
        let frame_labels = labels.iter().filter(|l| l.len() == 2 && l.starts_with('F'));
        assert_eq!(frame_labels.count(), 1, "{labels:?}");
        assert_eq!(labels.last(), Some(&"Full range"));
    }
    assert_eq!(stack.windows[0].label, "F0");

    // Shared groups: one list serves every frame.
    let shared = load_dicom(&dir.join("enhanced_multiframe.dcm")).unwrap();
    assert!(shared.info.frame_windows.is_empty());
    assert_eq!(shared.windows_for_frame(2), shared.windows.as_slice());
}

#[test]
fn overlay_planes_reach_the_viewer_model_and_stay_out_of_the_model_input() {
    let dir = fixture_dir("dicom");
    let stack = load_dicom(&dir.join("overlays.dcm")).unwrap();
    let plain = load_dicom(&dir.join("ct_rescale_windows.dcm")).unwrap();
    assert!(plain.overlays.is_empty());
    assert_eq!(
        stack.frames, plain.frames,
        "overlays never enter the pixels"
    );
    let [roi, graphic] = stack.overlays.as_slice() else {
        panic!("{:?}", stack.overlays);
    };
    // pydicom's overlay_array(0x6000): the 3 x 4 diagonal, placed at row 1, column 2.
    assert_eq!((roi.group, roi.rows, roi.columns), (0x6000, 3, 4));
    assert_eq!((roi.origin, roi.kind.as_str()), ((1, 2), "R"));
    assert_eq!(roi.label.as_deref(), Some("ROI-A"));
    assert_eq!(roi.frames, vec![vec![1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]]);
    let set: Vec<(i64, i64)> = (0..6)
        .flat_map(|r| (0..8).map(move |c| (r, c)))
        .filter(|&(r, c)| roi.is_set(0, r, c))
        .collect();
    assert_eq!(set, [(1, 2), (2, 3), (3, 4)]);
    assert!(!roi.is_set(1, 1, 2), "single-frame image: no frame 1");
    assert!(graphic.is_set(0, 0, 0) && graphic.is_set(0, 5, 7) && !graphic.is_set(0, 0, 1));

    let with = load_model_images(&dir.join("overlays.dcm")).unwrap();
    let without = load_model_images(&dir.join("ct_rescale_windows.dcm")).unwrap();
    assert_eq!(with[0].input, without[0].input);
    assert_eq!(with[0].display, without[0].display);
}

#[test]
fn ybr_full_in_jpeg2000_without_mct_is_converted_to_rgb() {
    let stack = load_dicom(&fixture_dir("dicom").join("j2k_ybr_full_no_mct.dcm")).unwrap();
    assert_eq!(stack.info.photometric.as_deref(), Some("YBR_FULL"));
    let frame = &stack.frames[0];
    assert_eq!(frame.channels, Channels::Rgb);
    // The fixture's colours (tools/make_dicom_fixtures.py), back within YBR rounding
    // (pydicom's conversion of the same samples is also within 1).
    let mut worst = 0.0f32;
    for r in 0..32 {
        for c in 0..32 {
            let expected = [8 * c, 7 * r + 10, 250 - 5 * c - 2 * r].map(|v| v as f32);
            let i = (r * 32 + c) * 3;
            for (got, want) in frame.data[i..i + 3].iter().zip(expected) {
                worst = worst.max((got - want).abs());
            }
        }
    }
    assert!(worst <= 1.0, "largest difference {worst}");
}

#[test]
fn rt_dose_grid_scaling_gives_dose_in_gray() {
    let stack = load_dicom(&fixture_dir("dicom").join("rt_dose.dcm")).unwrap();
    assert_eq!(stack.frames.len(), 2);
    for (f, frame) in stack.frames.iter().enumerate() {
        for r in 0..3 {
            for c in 0..4 {
                let stored = (1000 * f + 10 * r + c) as f64;
                let got = f64::from(frame.data[r * 4 + c]);
                assert!(
                    (got - stored * 0.001).abs() < 1e-6,
                    "frame {f} ({r},{c}): {got}"
                );
            }
        }
    }
}

#[test]
fn dicomdir_nooffset_is_read_as_pydicom_reads_it() {
    let dir = fixture_dir("dicom");
    // Its last record's item claims 24 bytes more than the file holds (offsets removed).
    let scan = scan_dicomdir(&dir.join("dicomdir_nooffset/DICOMDIR"), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    // The images are not copied next to it: every reference is reported missing, by path.
    let mut referenced: Vec<String> = scan
        .errors
        .iter()
        .map(|e| {
            e.path
                .strip_prefix(dir.join("dicomdir_nooffset"))
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect();
    referenced.sort();
    // pydicom: FileSet(dcmread("DICOMDIR-nooffset")) lists these six.
    assert_eq!(
        referenced,
        [
            "PT000000/ST000000/SE000000/IM000000",
            "PT000000/ST000000/SE000000/IM000001",
            "PT000000/ST000000/SE000000/IM000002",
            "PT000000/ST000000/SE000001/IM000000",
            "PT000000/ST000000/SE000001/IM000001",
            "PT000000/ST000001/SE000000/IM000000",
        ]
    );
}
