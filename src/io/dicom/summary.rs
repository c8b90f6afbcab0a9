//! The header-only summary of an instance: what `inspect` prints and what a study scan groups
//! and orders by.
use std::path::{Path, PathBuf};

use dicom_core::dictionary::{UidDictionary, UidDictionaryEntry};
use dicom_dictionary_std::{StandardSopClassDictionary, tags};
use dicom_object::DefaultDicomObject;

use super::attrs::{self, Obj};
use super::{DicomError, DicomErrorKind, ts};

/// Header facts of one DICOM instance, read without decoding pixels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DicomSummary {
    /// The file the header was read from.
    pub path: PathBuf,
    /// SOP Class UID (from the file meta group, else (0008,0016)).
    pub sop_class_uid: String,
    /// Its standard name, e.g. "CT Image Storage"; empty when unknown.
    pub sop_class_name: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: Option<String>,
    /// Modality (0008,0060), e.g. `CT`, `MR`.
    pub modality: Option<String>,
    /// Transfer Syntax UID of the file meta group.
    pub transfer_syntax_uid: String,
    /// Its name, e.g. "JPEG Lossless", or `unknown transfer syntax`.
    pub transfer_syntax_name: String,
    /// Rows / Columns; `None` for instances without an image (SR, waveform, DICOMDIR).
    pub rows: Option<u32>,
    /// Columns (0028,0011); `None` as for [`rows`](Self::rows).
    pub columns: Option<u32>,
    /// NumberOfFrames (1 when absent for an image).
    pub frames: Option<u32>,
    /// SamplesPerPixel (0028,0002): 1 for grey, 3 for colour.
    pub samples_per_pixel: Option<u16>,
    /// BitsAllocated (0028,0100).
    pub bits_allocated: Option<u16>,
    /// PhotometricInterpretation (0028,0004), e.g. `MONOCHROME2`, `RGB`.
    pub photometric: Option<String>,
    /// PatientName (0010,0010).
    pub patient_name: Option<String>,
    /// PatientID (0010,0020).
    pub patient_id: Option<String>,
    /// StudyInstanceUID (0020,000D).
    pub study_instance_uid: Option<String>,
    /// StudyDate (0008,0020), as stored (`YYYYMMDD`).
    pub study_date: Option<String>,
    /// StudyDescription (0008,1030).
    pub study_description: Option<String>,
    /// SeriesInstanceUID (0020,000E).
    pub series_instance_uid: Option<String>,
    /// SeriesNumber (0020,0011).
    pub series_number: Option<i64>,
    /// SeriesDescription (0008,103E).
    pub series_description: Option<String>,
    /// InstanceNumber (0020,0013).
    pub instance_number: Option<i64>,
    /// ImagePositionPatient of the first frame (enhanced files: from the functional groups).
    pub image_position: Option<[f64; 3]>,
    /// ImageOrientationPatient (row then column direction cosines).
    pub image_orientation: Option<[f64; 6]>,
    /// True for a Media Storage Directory (DICOMDIR).
    pub is_dicomdir: bool,
}

impl DicomSummary {
    /// True when the header describes an image (Rows and Columns present).
    pub fn has_image(&self) -> bool {
        self.rows.is_some() && self.columns.is_some()
    }
}

pub(super) const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

pub(super) fn sop_class_name(uid: &str) -> String {
    if uid == MEDIA_STORAGE_DIRECTORY {
        return "Media Storage Directory (DICOMDIR)".to_string();
    }
    StandardSopClassDictionary
        .by_uid(uid)
        .map(|e| e.name().to_string())
        .unwrap_or_default()
}

pub(super) fn summarize(obj: &DefaultDicomObject, path: &Path) -> Result<DicomSummary, DicomError> {
    let meta = obj.meta();
    let ds: &Obj = obj;
    let ts_uid = meta.transfer_syntax().to_string();
    let sop_class_uid = if meta.media_storage_sop_class_uid().is_empty() {
        attrs::string(ds, tags::SOP_CLASS_UID).unwrap_or_default()
    } else {
        meta.media_storage_sop_class_uid().to_string()
    };
    let rows = attrs::int_opt(ds, tags::ROWS).and_then(|v| u32::try_from(v).ok());
    let columns = attrs::int_opt(ds, tags::COLUMNS).and_then(|v| u32::try_from(v).ok());
    let frames = match attrs::int(ds, tags::NUMBER_OF_FRAMES) {
        Some(Ok(n)) => Some(u32::try_from(n.max(1)).unwrap_or(u32::MAX)),
        Some(Err(attrs::NotAnInteger { raw })) => {
            return Err(DicomError::new(
                path,
                DicomErrorKind::Malformed,
                format!("invalid NumberOfFrames value {raw:?} (not an integer)"),
            ));
        }
        None => (rows.is_some() && columns.is_some()).then_some(1),
    };
    let image_position = attrs::fixed::<3>(attrs::frame_f64s(
        ds,
        0,
        tags::PLANE_POSITION_SEQUENCE,
        tags::IMAGE_POSITION_PATIENT,
    ));
    let image_orientation = attrs::fixed::<6>(attrs::frame_f64s(
        ds,
        0,
        tags::PLANE_ORIENTATION_SEQUENCE,
        tags::IMAGE_ORIENTATION_PATIENT,
    ));
    Ok(DicomSummary {
        path: path.to_path_buf(),
        sop_class_name: sop_class_name(&sop_class_uid),
        is_dicomdir: sop_class_uid == MEDIA_STORAGE_DIRECTORY,
        sop_class_uid,
        sop_instance_uid: attrs::string(ds, tags::SOP_INSTANCE_UID),
        modality: attrs::string(ds, tags::MODALITY),
        transfer_syntax_name: ts::transfer_syntax_name(&ts_uid),
        transfer_syntax_uid: ts_uid,
        rows,
        columns,
        frames,
        samples_per_pixel: attrs::int_opt(ds, tags::SAMPLES_PER_PIXEL)
            .and_then(|v| u16::try_from(v).ok()),
        bits_allocated: attrs::int_opt(ds, tags::BITS_ALLOCATED)
            .and_then(|v| u16::try_from(v).ok()),
        photometric: attrs::string(ds, tags::PHOTOMETRIC_INTERPRETATION),
        patient_name: attrs::string(ds, tags::PATIENT_NAME),
        patient_id: attrs::string(ds, tags::PATIENT_ID),
        study_instance_uid: attrs::string(ds, tags::STUDY_INSTANCE_UID),
        study_date: attrs::string(ds, tags::STUDY_DATE),
        study_description: attrs::string(ds, tags::STUDY_DESCRIPTION),
        series_instance_uid: attrs::string(ds, tags::SERIES_INSTANCE_UID),
        series_number: attrs::int_opt(ds, tags::SERIES_NUMBER),
        series_description: attrs::string(ds, tags::SERIES_DESCRIPTION),
        instance_number: attrs::int_opt(ds, tags::INSTANCE_NUMBER),
        image_position,
        image_orientation,
    })
}
