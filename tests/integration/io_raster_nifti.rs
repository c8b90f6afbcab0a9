//! NIfTI loading against synthetic volumes written by nibabel
//! (`tools/io/make_nifti_fixtures.py`) with known orientations: the displayed slices must equal
//! nibabel's closest-canonical data laid out radiologically (patient left on screen right,
//! anterior up, inferior slice first).
use crate::support;
use std::path::{Path, PathBuf};

use mvfa_studio::io::image::Channels;
use mvfa_studio::io::nifti::{AffineSource, is_nifti_path, load_nifti, load_nifti_with_geometry};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    support::fixture_dir("io/nifti")
}

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    note: String,
    axcodes: String,
    shape: Vec<usize>,
    sform_code: i16,
    qform_code: i16,
    display: Vec<Vec<Vec<f64>>>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str::<Expected>(&text).unwrap().cases
}

fn apply(a: &[[f64; 4]; 3], p: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|i| a[i][0] * p[0] + a[i][1] * p[1] + a[i][2] * p[2] + a[i][3])
}

#[test]
fn slices_match_nibabel_in_radiological_orientation() {
    let cases = cases();
    assert_eq!(cases.len(), 5);
    for case in &cases {
        let path = fixtures().join(&case.file);
        let (stack, geo) = load_nifti_with_geometry(&path).unwrap_or_else(|e| panic!("{e}"));
        let label = format!("{} ({})", case.file, case.note);
        assert_eq!(geo.voxel_orientation, case.axcodes, "{label}");
        assert_eq!(geo.voxel_dims.to_vec(), case.shape, "{label}");
        let expected_source = if case.sform_code > 0 {
            AffineSource::Sform
        } else if case.qform_code > 0 {
            AffineSource::Qform
        } else {
            AffineSource::Pixdim
        };
        assert_eq!(geo.affine_source, expected_source, "{label}");
        assert_eq!(stack.frames.len(), case.display.len(), "{label}");
        for (s, (frame, want)) in stack.frames.iter().zip(&case.display).enumerate() {
            assert_eq!(frame.channels, Channels::Gray);
            assert_eq!(frame.height as usize, want.len(), "{label} slice {s}");
            assert_eq!(frame.width as usize, want[0].len(), "{label} slice {s}");
            for (r, row) in want.iter().enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    let got = frame.data[r * frame.width as usize + c] as f64;
                    assert!(
                        (got - v).abs() < 1e-4,
                        "{label}: slice {s} row {r} col {c}: {got} vs nibabel {v}"
                    );
                }
            }
        }
    }
}

/// Independently of nibabel: map display corners to patient space with the reported affine
/// and check the directions (column -> patient left, row -> posterior, slice -> superior).
#[test]
fn display_axes_point_left_posterior_superior() {
    for case in cases() {
        let (stack, geo) = load_nifti_with_geometry(&fixtures().join(&case.file)).unwrap();
        let f = &stack.frames[0];
        let last = [
            f.width as f64 - 1.0,
            f.height as f64 - 1.0,
            stack.frames.len() as f64 - 1.0,
        ];
        let origin = apply(&geo.display_to_ras, [0.0, 0.0, 0.0]);
        let steps = [
            apply(&geo.display_to_ras, [last[0], 0.0, 0.0]),
            apply(&geo.display_to_ras, [0.0, last[1], 0.0]),
            apply(&geo.display_to_ras, [0.0, 0.0, last[2]]),
        ];
        // RAS: x decreasing = toward patient left; y decreasing = posterior; z increasing =
        // superior. Each display axis moves mostly along its own patient axis.
        let d: Vec<[f64; 3]> = steps
            .iter()
            .map(|p| std::array::from_fn(|i| p[i] - origin[i]))
            .collect();
        assert!(
            d[0][0] < 0.0 && d[0][0].abs() >= d[0][1].abs(),
            "{}: {d:?}",
            case.file
        );
        assert!(
            d[1][1] < 0.0 && d[1][1].abs() >= d[1][0].abs(),
            "{}: {d:?}",
            case.file
        );
        assert!(d[2][2] > 0.0, "{}: {d:?}", case.file);
        assert!(geo.spacing.iter().all(|s| *s > 0.0));
    }
}

#[test]
fn scaling_windows_and_metadata() {
    let path = fixtures().join("ras_identity_scaled.nii");
    let stack = load_nifti(&path).unwrap();
    // raw 1..=235 (1 + i + 10 j + 100 k) scaled by 2, -10 -> -8..=460.
    let all: Vec<f32> = stack.frames.iter().flat_map(|f| f.data.clone()).collect();
    let lo = all.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = all.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!((lo, hi), (-8.0, 2.0 * 235.0 - 10.0));
    let full = stack
        .windows
        .iter()
        .find(|w| w.label == "Full range")
        .unwrap();
    assert_eq!(full.center, (lo as f64 + hi as f64) / 2.0);
    assert_eq!(full.width, (hi - lo) as f64 + 1.0);
    assert!(
        stack
            .metadata
            .iter()
            .any(|n| n.name == "voxel orientation" && n.value == "RAS")
    );
    // 4-D file: the first volume is shown.
    let (s4, _) = load_nifti_with_geometry(&fixtures().join("oblique_4d_float.nii")).unwrap();
    assert_eq!(s4.frames.len(), 3);
    assert!(
        s4.metadata
            .iter()
            .any(|n| n.name == "volumes" && n.value.contains("first"))
    );
}

#[test]
fn errors_name_the_file_and_never_panic() {
    let e = load_nifti(&fixtures().join("missing.nii")).unwrap_err();
    assert!(e.to_string().contains("missing.nii"), "{e}");
    let bytes = std::fs::read(fixtures().join("permuted_asr.nii")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for cut in [0, 10, 100, 347, 352, 400, bytes.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.nii"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_nifti(&p).unwrap_err().to_string();
        assert!(e.contains(&format!("cut{cut}.nii")), "{e}");
    }
    let p = dir.path().join("garbage.nii.gz");
    std::fs::write(&p, b"not gzip at all").unwrap();
    assert!(
        load_nifti(&p)
            .unwrap_err()
            .to_string()
            .contains("garbage.nii.gz")
    );
}

#[test]
fn nifti_names() {
    for ok in ["a.nii", "b.NII.GZ", "c.hdr"] {
        assert!(is_nifti_path(Path::new(ok)), "{ok}");
    }
    for no in ["a.gz", "b.png", "nii"] {
        assert!(!is_nifti_path(Path::new(no)), "{no}");
    }
}

/// Deterministic header mutations: every byte of the 348-byte header set to 0x00, 0x7F and
/// 0xFF in turn; loading must return (Ok or a clear Err), never panic.
#[test]
fn corrupted_headers_never_panic() {
    let bytes = std::fs::read(fixtures().join("qform_only_ali.nii")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mutant.nii");
    let mut errors = 0;
    for offset in 0..348 {
        for v in [0x00u8, 0x7F, 0xFF] {
            let mut m = bytes.clone();
            m[offset] = v;
            std::fs::write(&p, &m).unwrap();
            if let Err(e) = load_nifti(&p) {
                assert!(e.to_string().contains("mutant.nii"), "{e}");
                errors += 1;
            }
        }
    }
    assert!(errors > 0);
}
