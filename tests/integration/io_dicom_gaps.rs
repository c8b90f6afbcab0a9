//! DICOM gaps closed after the I/O work, each with its own small committed fixture
//! (tools/make_dicom_fixtures.py).
use mvfa_studio::io::dicom::{DicomErrorKind, load_dicom};

use crate::support::fixture_dir;

#[test]
fn unparsable_bytes_after_complete_pixel_data_open_with_a_warning() {
    let dir = fixture_dir("dicom");
    let clean = load_dicom(&dir.join("ct_rescale_windows.dcm")).unwrap();
    assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
    for name in ["trailing_truncated_element.dcm", "trailing_junk.dcm"] {
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
