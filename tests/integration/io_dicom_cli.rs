//! `mvfa-studio inspect` end to end: the built binary on fixture files (and on corpus files,
//! where the shared corpus is present: `corpus_files`, ignored by default).
use std::path::Path;

use crate::support::cli::{bin, run};
use crate::support::{corpus, dicom_fixture};

fn inspect(args: &[&Path], extra: &[&str]) -> (i32, String) {
    let (out, stdout, _) = run(bin().arg("inspect").args(extra).args(args));
    (out.status.code().unwrap_or(-1), stdout)
}

#[test]
fn one_line_per_file_and_a_summary() {
    let ct = dicom_fixture("ct_rescale_windows.dcm");
    let mf = dicom_fixture("multiframe_j2k.dcm");
    let mpeg = dicom_fixture("mpeg2.dcm");
    let txt = dicom_fixture("not_dicom.txt");
    let (code, out) = inspect(&[&ct, &mf, &mpeg, &txt], &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{}: CT, Explicit VR Little Endian, 6 x 8, 1 frame",
            ct.display()
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "{}: OT, JPEG 2000 Image Compression (Lossless Only), 32 x 32, 2 frames",
            mf.display()
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "{}: error: unsupported transfer syntax 1.2.840.10008.1.2.4.100 (MPEG2 Main Profile / Main Level): no decoder for this encoding",
            mpeg.display()
        )
    );
    assert_eq!(
        lines[3],
        format!("{}: skipped: not a DICOM file", txt.display())
    );
    assert_eq!(lines[4], "");
    assert_eq!(
        lines[5],
        "4 file(s): 3 image(s) (2 decoded), 0 without image, 1 error(s), 1 skipped (not DICOM); 1 study(ies), 3 series"
    );
    assert_eq!(code, 1, "an error makes the exit status 1");

    let (code, out) = inspect(&[&ct], &["--no-decode"]);
    assert_eq!(code, 0);
    assert!(out.contains("(headers only)"), "{out}");
}

#[test]
fn folders_are_scanned_and_non_dicom_files_counted_silently() {
    let (code, out) = inspect(&[&dicom_fixture("study_folder")], &[]);
    assert_eq!(code, 1, "broken.dcm is an error");
    assert!(
        !out.contains("README.txt"),
        "non-DICOM files in folders are not listed:\n{out}"
    );
    assert!(out.contains("broken.dcm: error: "), "{out}");
    assert!(
        out.trim_end().ends_with(
            "9 file(s): 6 image(s) (6 decoded), 0 without image, 1 error(s), 2 skipped (not DICOM); 2 study(ies), 3 series"
        ),
        "{out}"
    );
}

#[test]
#[ignore = "needs the shared DICOM corpus (../shared/data/dicom)"]
fn corpus_files() {
    let dir = corpus::dir();
    let mr = dir.join("pydicom/MR_small_RLE.dcm");
    let sr = dir.join("pydicom/test-SR.dcm");
    let trunc = dir.join("malformed/pydicom__MR_truncated.dcm");
    let (code, out) = inspect(&[&mr, &sr, &trunc], &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("{}: MR, RLE Lossless, 64 x 64, 1 frame", mr.display())
    );
    assert_eq!(
        lines[1],
        format!(
            "{}: SR, Explicit VR Little Endian, no image (Comprehensive SR Storage)",
            sr.display()
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "{}: error: truncated pixel data: expected 8192 bytes, found 8130",
            trunc.display()
        )
    );
    assert_eq!(code, 1);
}

#[test]
fn tolerated_problems_are_shown_as_warnings() {
    let (code, out) = inspect(&[&dicom_fixture("trailing_truncated_element.dcm")], &[]);
    assert_eq!(code, 0, "{out}");
    let line = out.lines().next().unwrap_or_default();
    assert!(
        line.contains("6 x 8, 1 frame; warning: ignored") && line.contains("after the pixel data"),
        "{line}"
    );
}
