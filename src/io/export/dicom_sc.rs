//! DICOM Secondary Capture (SOP Class 1.2.840.10008.5.1.4.1.1.7) of an overlay image: RGB,
//! 8 bits, explicit VR little endian, filed under the patient and study of its source image
//! with a new series and instance, so a PACS shows it next to the original.
//!
//! Copied from the source (when present): SpecificCharacterSet, PatientName, PatientID,
//! PatientBirthDate, PatientSex, PatientAge, StudyInstanceUID, StudyDate, StudyTime,
//! AccessionNumber, ReferringPhysicianName, StudyID, StudyDescription, FrameOfReferenceUID,
//! BodyPartExamined, and the source SOP Class/Instance UIDs as SourceImageSequence. Nothing
//! else (addresses, other IDs, institution, operators, ...) is ever copied.
//!
//! New: SOPInstanceUID and SeriesInstanceUID (random `2.25.<UUID v4 as decimal>` UIDs, unless a
//! series UID is given to group several exports), Modality "OT", ConversionType "WSD",
//! ImageType DERIVED\SECONDARY, SeriesDescription, DerivationDescription, creation/content
//! date and time (UTC, with TimezoneOffsetFromUTC "+0000").
//!
//! Anonymisation ([`Anonymise`]), applied to the copied attributes (a subset of the DICOM
//! PS3.15 Basic Application Level Confidentiality Profile, with the "Retain Longitudinal
//! Temporal Information with Full Dates" option when `keep_dates`):
//! - PatientName -> "ANONYMOUS"
//! - PatientID -> "ANON-" + 16 hex digits of SHA-256(key, PatientID): the same patient gets
//!   the same pseudonym across exports made with the same key
//! - StudyInstanceUID, FrameOfReferenceUID and referenced source SOP Instance UIDs -> UIDs
//!   derived from SHA-256(key, old UID) ([`derived_uid`]), so exports of one study stay in one
//!   study and none reveals the original UID
//! - PatientBirthDate, PatientSex, AccessionNumber, ReferringPhysicianName, StudyID -> empty
//!   (type 2: present, zero length)
//! - PatientAge, StudyDescription -> removed
//! - StudyDate, StudyTime -> kept when `keep_dates`, else empty
//! - never copied in any mode: OtherPatientIDs(Sequence), OtherPatientNames, PatientAddress,
//!   PatientTelephoneNumbers, PatientMotherBirthName, MedicalRecordLocator, InstitutionName,
//!   InstitutionAddress, InstitutionalDepartmentName, PhysiciansOfRecord, PerformingPhysicianName,
//!   OperatorsName, StationName, DeviceSerialNumber, and all private tags
//! - added: PatientIdentityRemoved "YES", DeidentificationMethod (describing the above),
//!   LongitudinalTemporalInformationModified "UNMODIFIED" or "REMOVED".
//!
//! The key should be a secret kept by the site: without one, a pseudonymous PatientID can be
//! reversed by hashing candidate IDs.
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use dicom_core::header::Header;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use sha2::{Digest, Sha256};

use super::ExportError;
use super::atomic::write_atomically;
use crate::io::image::Channels;
use crate::io::resample::Image8;

/// SOP Class UID of Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE_SOP_CLASS: &str = uids::SECONDARY_CAPTURE_IMAGE_STORAGE;

/// Source attributes copied into the export (see the module docs).
const COPIED: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::PATIENT_AGE,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::STUDY_DESCRIPTION,
    tags::FRAME_OF_REFERENCE_UID,
    tags::BODY_PART_EXAMINED,
];

/// The patient/study attributes of a source image, extracted once and reusable for several
/// exports.
#[derive(Debug, Clone, Default)]
pub struct SourceAttributes {
    elements: Vec<DataElement<InMemDicomObject>>,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
}

impl SourceAttributes {
    /// No source (raster or NIfTI input): the export gets a new study and empty patient
    /// attributes.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads the attributes from a DICOM file (the pixel data is not loaded).
    pub fn from_file(path: &Path) -> Result<Self, ExportError> {
        let obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| ExportError::read(path, super::atomic::error_chain(&e)))?;
        Ok(Self::from_object(&obj))
    }

    /// Takes the attributes from an in-memory data set.
    pub fn from_object(obj: &InMemDicomObject) -> Self {
        let elements = COPIED
            .iter()
            .filter_map(|&t| obj.element_opt(t).ok().flatten().cloned())
            .collect();
        let get = |t: Tag| {
            obj.element_opt(t)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                .filter(|s| !s.is_empty())
        };
        SourceAttributes {
            elements,
            sop_class_uid: get(tags::SOP_CLASS_UID),
            sop_instance_uid: get(tags::SOP_INSTANCE_UID),
        }
    }

    fn get(&self, tag: Tag) -> Option<&DataElement<InMemDicomObject>> {
        self.elements.iter().find(|e| e.tag() == tag)
    }

    fn get_str(&self, tag: Tag) -> Option<String> {
        self.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    }
}

/// De-identification settings (see the module docs for the list of changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anonymise {
    /// Secret mixed into pseudonyms and derived UIDs; the same key maps the same patient and
    /// study to the same values.
    pub key: String,
    /// Keep StudyDate/StudyTime (default true).
    pub keep_dates: bool,
}

impl Default for Anonymise {
    fn default() -> Self {
        Anonymise {
            key: String::new(),
            keep_dates: true,
        }
    }
}

/// Export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScOptions {
    /// Default "MVFA anomaly overlay".
    pub series_description: String,
    /// Default: describes the MVFA overlay.
    pub derivation_description: String,
    /// Default 9001 (clear of scanner series numbers).
    pub series_number: i32,
    /// Default 1.
    pub instance_number: i32,
    /// Put the export into this series (e.g. one series per export session); `None`: new.
    pub series_instance_uid: Option<String>,
    /// Remove identifying attributes; `None`: keep them.
    pub anonymise: Option<Anonymise>,
}

impl Default for ScOptions {
    fn default() -> Self {
        ScOptions {
            series_description: "MVFA anomaly overlay".to_string(),
            derivation_description: "Anomaly map of MVFA (CLIP ViT-L/14-336 with multi-level \
                                     adapters) blended over the windowed source image; \
                                     not for primary diagnosis"
                .to_string(),
            series_number: 9001,
            instance_number: 1,
            series_instance_uid: None,
            anonymise: None,
        }
    }
}

/// UIDs of a written export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScWritten {
    /// SOP Instance UID of the new instance.
    pub sop_instance_uid: String,
    /// Series Instance UID it was written under.
    pub series_instance_uid: String,
    /// Study Instance UID it was written under (the source's, a derived one when anonymising, or a new one).
    pub study_instance_uid: String,
}

/// Formats 128 bits as a `2.25.` UID (PS3.5 B.2): at most 44 characters.
fn uid_from_u128(v: u128) -> String {
    format!("2.25.{v}")
}

/// A new random UID under `2.25.` from a version-4 UUID.
pub fn new_uid() -> String {
    let mut v: u128 = rand::random();
    v = (v & !(0xF << 76)) | (0x4 << 76); // version 4
    v = (v & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    uid_from_u128(v)
}

/// A UID derived deterministically from `old` and `key`: the first 128 bits of
/// SHA-256(key, 0, old), marked as a version-8 (custom) UUID, under `2.25.`.
pub fn derived_uid(key: &str, old: &str) -> String {
    let d = hash(key, "uid", old);
    let mut v = u128::from_be_bytes(d[..16].try_into().expect("16 bytes"));
    v = (v & !(0xF << 76)) | (0x8 << 76);
    v = (v & !(0x3 << 62)) | (0x2 << 62);
    uid_from_u128(v)
}

fn hash(key: &str, domain: &str, value: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    h.finalize().into()
}

fn pseudonymous_id(key: &str, id: &str) -> String {
    let d = hash(key, "PatientID", id);
    let hex: String = d[..8].iter().map(|b| format!("{b:02X}")).collect();
    format!("ANON-{hex}")
}

/// Current UTC date (DA) and time (TM).
fn now_da_tm() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", tod / 3600, tod / 60 % 60, tod % 60),
    )
}

/// Writes `overlay` (RGB or grey, which is replicated to RGB) as a Secondary Capture DICOM
/// file (atomically) under the patient and study of `source`.
pub fn write_secondary_capture(
    path: &Path,
    overlay: &Image8,
    source: &SourceAttributes,
    opts: &ScOptions,
) -> Result<ScWritten, ExportError> {
    let obj = build_secondary_capture(overlay, source, opts)?;
    let written = ScWritten {
        sop_instance_uid: str_of(&obj, tags::SOP_INSTANCE_UID),
        series_instance_uid: str_of(&obj, tags::SERIES_INSTANCE_UID),
        study_instance_uid: str_of(&obj, tags::STUDY_INSTANCE_UID),
    };
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| ExportError::write(path, super::atomic::error_chain(&e)))?;
    write_atomically(path, |w| Ok(file.write_all(w)?))?;
    Ok(written)
}

fn str_of(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Builds the Secondary Capture data set (without file meta); see the module docs.
pub fn build_secondary_capture(
    overlay: &Image8,
    source: &SourceAttributes,
    opts: &ScOptions,
) -> Result<InMemDicomObject, ExportError> {
    overlay
        .check()
        .map_err(|e| ExportError::Invalid(e.to_string()))?;
    if overlay.width == 0 || overlay.height == 0 || overlay.width > 65535 || overlay.height > 65535
    {
        return Err(ExportError::Invalid(format!(
            "overlay of {}x{} cannot be stored (1..=65535 rows and columns)",
            overlay.width, overlay.height
        )));
    }
    let rgb = overlay.to_rgb();
    let mut obj = InMemDicomObject::new_empty();

    // Patient and study.
    let anon = opts.anonymise.as_ref();
    for e in &source.elements {
        obj.put(e.clone());
    }
    let study_uid = match (source.get_str(tags::STUDY_INSTANCE_UID), anon) {
        (Some(old), Some(a)) if !old.is_empty() => derived_uid(&a.key, &old),
        (Some(old), None) if !old.is_empty() => old,
        _ => new_uid(),
    };
    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &study_uid);
    if let Some(a) = anon {
        put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "ANONYMOUS");
        let id = source.get_str(tags::PATIENT_ID).unwrap_or_default();
        let pseudo = pseudonymous_id(&a.key, &id);
        put_str(&mut obj, tags::PATIENT_ID, VR::LO, &pseudo);
        for (tag, vr) in [
            (tags::PATIENT_BIRTH_DATE, VR::DA),
            (tags::PATIENT_SEX, VR::CS),
            (tags::ACCESSION_NUMBER, VR::SH),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
            (tags::STUDY_ID, VR::SH),
        ] {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        }
        obj.remove_element(tags::PATIENT_AGE);
        obj.remove_element(tags::STUDY_DESCRIPTION);
        if !a.keep_dates {
            obj.put(DataElement::new(
                tags::STUDY_DATE,
                VR::DA,
                PrimitiveValue::Empty,
            ));
            obj.put(DataElement::new(
                tags::STUDY_TIME,
                VR::TM,
                PrimitiveValue::Empty,
            ));
        }
        if let Some(old) = source.get_str(tags::FRAME_OF_REFERENCE_UID)
            && !old.is_empty()
        {
            put_str(
                &mut obj,
                tags::FRAME_OF_REFERENCE_UID,
                VR::UI,
                &derived_uid(&a.key, &old),
            );
        }
        put_str(&mut obj, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
        // LO: at most 64 characters; the full list is in this module's documentation.
        let method = if a.keep_dates {
            "MVFA Studio PS3.15 basic profile subset, dates retained"
        } else {
            "MVFA Studio PS3.15 basic profile subset, dates removed"
        };
        put_str(&mut obj, tags::DEIDENTIFICATION_METHOD, VR::LO, method);
        put_str(
            &mut obj,
            tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
            VR::CS,
            if a.keep_dates {
                "UNMODIFIED"
            } else {
                "REMOVED"
            },
        );
    }
    // Type 2 attributes of the Patient and General Study modules: present even when empty.
    for (tag, vr) in [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::STUDY_ID, VR::SH),
        (tags::ACCESSION_NUMBER, VR::SH),
    ] {
        if obj.element_opt(tag).ok().flatten().is_none() {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        }
    }

    // Series, equipment, image.
    let series_uid = opts.series_instance_uid.clone().unwrap_or_else(new_uid);
    let sop_uid = new_uid();
    let (date, time) = now_da_tm();
    put_str(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        SECONDARY_CAPTURE_SOP_CLASS,
    );
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_str(&mut obj, tags::MODALITY, VR::CS, "OT");
    put_str(&mut obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    obj.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(["DERIVED".to_string(), "SECONDARY".to_string()].into()),
    ));
    put_str(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &truncate(&opts.series_description, 64),
    );
    put_str(
        &mut obj,
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        &truncate(&opts.derivation_description, 1024),
    );
    put_str(
        &mut obj,
        tags::SERIES_NUMBER,
        VR::IS,
        &opts.series_number.to_string(),
    );
    put_str(
        &mut obj,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &opts.instance_number.to_string(),
    );
    put_str(&mut obj, tags::INSTANCE_CREATION_DATE, VR::DA, &date);
    put_str(&mut obj, tags::INSTANCE_CREATION_TIME, VR::TM, &time);
    put_str(&mut obj, tags::CONTENT_DATE, VR::DA, &date);
    put_str(&mut obj, tags::CONTENT_TIME, VR::TM, &time);
    put_str(&mut obj, tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000");
    put_str(&mut obj, tags::MANUFACTURER, VR::LO, "MVFA Studio");
    put_str(
        &mut obj,
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
        VR::LO,
        "MVFA Studio",
    );
    put_str(
        &mut obj,
        tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    obj.put(DataElement::new(
        tags::PATIENT_ORIENTATION,
        VR::CS,
        PrimitiveValue::Empty,
    ));
    put_str(&mut obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    if let (Some(class), Some(inst)) = (&source.sop_class_uid, &source.sop_instance_uid) {
        let inst = match anon {
            Some(a) => derived_uid(&a.key, inst),
            None => inst.clone(),
        };
        let item = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(class.as_str()),
            ),
            DataElement::new(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(inst),
            ),
        ]);
        obj.put(DataElement::new(
            tags::SOURCE_IMAGE_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    }

    let us = |v: u16| PrimitiveValue::from(v);
    obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(3)));
    put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
    obj.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, us(0)));
    obj.put(DataElement::new(tags::ROWS, VR::US, us(rgb.height as u16)));
    obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        us(rgb.width as u16),
    ));
    obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, us(8)));
    obj.put(DataElement::new(tags::BITS_STORED, VR::US, us(8)));
    obj.put(DataElement::new(tags::HIGH_BIT, VR::US, us(7)));
    obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, us(0)));
    let mut pixels = rgb.data;
    if pixels.len() % 2 == 1 {
        pixels.push(0); // OB values have even length
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels),
    ));
    debug_assert_eq!(rgb.channels, Channels::Rgb);
    Ok(obj)
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Cuts `s` to at most `max` bytes at a character boundary (DICOM VR length limits).
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid() {
        for uid in [
            new_uid(),
            derived_uid("k", "1.2.3"),
            uid_from_u128(u128::MAX),
        ] {
            assert!(uid.len() <= 64, "{uid}");
            assert!(uid.starts_with("2.25."));
            let tail = &uid[5..];
            assert!(tail.chars().all(|c| c.is_ascii_digit()));
            assert!(tail == "0" || !tail.starts_with('0'));
        }
        assert_eq!(derived_uid("k", "1.2.3"), derived_uid("k", "1.2.3"));
        assert_ne!(derived_uid("k", "1.2.3"), derived_uid("k2", "1.2.3"));
        assert_ne!(new_uid(), new_uid());
    }

    #[test]
    fn date_is_plausible() {
        let (d, t) = now_da_tm();
        assert_eq!(d.len(), 8);
        assert_eq!(t.len(), 6);
        assert!(d.as_str() >= "20240101", "{d}");
    }
}
