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
//! De-identification ([`Anonymise`], on by default) follows the DICOM PS3.15 Basic Application
//! Level Confidentiality Profile (Table E.1-1) for every attribute the export carries:
//! - Z (emptied, type 2 kept present): PatientBirthDate, AccessionNumber,
//!   ReferringPhysicianName, StudyID; PatientName becomes "ANONYMOUS" and PatientID
//!   "ANON-" + 16 hex digits of SHA-256(key, PatientID) (Z allows a dummy value), so one patient
//!   keeps one pseudonym under one key
//! - X (removed): PatientAge, StudyDescription
//! - U (replaced): StudyInstanceUID, FrameOfReferenceUID and the referenced source SOP
//!   Instance UID by UIDs derived from SHA-256(key, old UID) ([`derived_uid`]), so UIDs stay
//!   consistent within everything exported under one key; SOP Instance and Series Instance
//!   UIDs are new anyway
//! - dates (StudyDate/Time Z, ContentDate/Time Z/D, TimezoneOffsetFromUTC X, and our own
//!   InstanceCreationDate/Time): removed by default ([`Dates::Remove`]), shifted back by a
//!   whole number of days derived from the key and the patient ([`Dates::Shift`], the
//!   Modified Dates option; times kept) or kept ([`Dates::Keep`], the Full Dates option)
//! - PatientSex (Z) and PatientAge (X) are kept only with the Retain Patient Characteristics
//!   option; StationName and DeviceSerialNumber of the source (X/Z/D) are copied only with the
//!   Retain Device Identity option (or when not de-identifying)
//! - our own SeriesDescription and DerivationDescription (X) are kept: they are generated
//!   text without source data, which the Clean Descriptors option allows
//! - never copied in any mode: OtherPatientIDs(Sequence), OtherPatientNames, PatientAddress,
//!   PatientTelephoneNumbers, PatientMotherBirthName, MedicalRecordLocator, InstitutionName,
//!   InstitutionAddress, InstitutionalDepartmentName, PhysiciansOfRecord, PerformingPhysicianName,
//!   OperatorsName, and all private tags
//! - added: PatientIdentityRemoved "YES", DeidentificationMethod (text) and
//!   DeidentificationMethodCodeSequence (CID 7050 codes of the profile and its options),
//!   LongitudinalTemporalInformationModified "REMOVED", "MODIFIED" or "UNMODIFIED".
//!
//! The key defaults to a fresh random value, so UIDs and pseudonyms are consistent within one
//! export and unlinkable across exports. A site that wants the same pseudonyms across exports
//! sets its own key, and keeps it secret: with a known key, a pseudonymous PatientID can be
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
use crate::io::dicom::{FrameGeometry, element_with_dictionary_vr, frame_geometries};
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
    tags::STATION_NAME,
    tags::DEVICE_SERIAL_NUMBER,
];

/// The patient/study attributes of a source image, extracted once and reusable for several
/// exports.
#[derive(Debug, Clone, Default)]
pub struct SourceAttributes {
    elements: Vec<DataElement<InMemDicomObject>>,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
    series_instance_uid: Option<String>,
    /// Where each of the source's frames lies (one entry for a single-frame image).
    geometry: Vec<FrameGeometry>,
    /// Rows and Columns of the source's pixel data.
    size: Option<(u32, u32)>,
    modality: Option<String>,
    series_description: Option<String>,
    laterality: Option<String>,
    patient_orientation: Option<String>,
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
        // UN values (implicit-VR elements in an explicit-VR file) are decoded as their
        // dictionary VR; ACR-NEMA dates and times (1997.04.24, 14:04:38) become DICOM ones.
        let element = |t: Tag| {
            obj.element_opt(t)
                .ok()
                .flatten()
                .map(element_with_dictionary_vr)
                .map(legacy_date_time)
        };
        let elements = COPIED.iter().filter_map(|&t| element(t)).collect();
        let get = |t: Tag| {
            element(t)
                .and_then(|e| e.to_str().ok().map(|s| s.into_owned()))
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                .filter(|s| !s.is_empty())
        };
        let int = |t: Tag| get(t).and_then(|s| s.trim().parse::<u32>().ok());
        let frames = int(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
        SourceAttributes {
            elements,
            sop_class_uid: get(tags::SOP_CLASS_UID),
            sop_instance_uid: get(tags::SOP_INSTANCE_UID),
            series_instance_uid: get(tags::SERIES_INSTANCE_UID),
            geometry: frame_geometries(obj, frames),
            size: int(tags::ROWS).zip(int(tags::COLUMNS)),
            modality: get(tags::MODALITY),
            series_description: get(tags::SERIES_DESCRIPTION),
            laterality: get(tags::LATERALITY).or_else(|| get(tags::IMAGE_LATERALITY)),
            patient_orientation: get(tags::PATIENT_ORIENTATION),
        }
    }

    /// The geometry of frame `frame` (0-based); the default (nothing known) past the last.
    pub fn frame_geometry(&self, frame: usize) -> FrameGeometry {
        self.geometry.get(frame).copied().unwrap_or_default()
    }

    /// Frames in the source (1 for a single-frame image or no source).
    pub fn frames(&self) -> usize {
        self.geometry.len().max(1)
    }

    /// Rows and Columns of the source's pixel data.
    pub fn size(&self) -> Option<(u32, u32)> {
        self.size
    }

    /// The source's Modality.
    pub fn modality(&self) -> Option<&str> {
        self.modality.as_deref()
    }

    /// The source's Series Description (never copied into a de-identified export).
    pub fn series_description(&self) -> Option<&str> {
        self.series_description.as_deref()
    }

    /// The source's Laterality (or Image Laterality): R, L, B or U.
    pub fn laterality(&self) -> Option<&str> {
        self.laterality.as_deref()
    }

    /// The source's Patient Orientation (e.g. `A\\F`), when it states one.
    pub fn patient_orientation(&self) -> Option<String> {
        self.patient_orientation.clone()
    }

    /// The source's own Frame of Reference UID (before any de-identification).
    pub fn frame_of_reference_uid(&self) -> Option<String> {
        self.get_str(tags::FRAME_OF_REFERENCE_UID)
            .filter(|s| !s.is_empty())
    }

    /// The source's own Study Instance UID (before any de-identification); `None` for no
    /// source or a source without one.
    pub fn study_instance_uid(&self) -> Option<String> {
        self.get_str(tags::STUDY_INSTANCE_UID)
            .filter(|s| !s.is_empty())
    }

    /// The source's SOP Class UID, when it has one.
    pub fn sop_class_uid(&self) -> Option<&str> {
        self.sop_class_uid.as_deref()
    }

    /// The source's own SOP Instance UID (before any de-identification), when it has one.
    pub fn sop_instance_uid(&self) -> Option<&str> {
        self.sop_instance_uid.as_deref()
    }

    /// The source's own Series Instance UID (before any de-identification), when it has one.
    pub fn series_instance_uid(&self) -> Option<&str> {
        self.series_instance_uid.as_deref()
    }

    fn get(&self, tag: Tag) -> Option<&DataElement<InMemDicomObject>> {
        self.elements.iter().find(|e| e.tag() == tag)
    }

    pub(super) fn get_str(&self, tag: Tag) -> Option<String> {
        self.get(tag)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    }
}

/// A DA or TM element in the ACR-NEMA form (`1997.04.24`, `14:04:38`) rewritten in the DICOM
/// one (`19970424`, `140438`); a value that is neither is emptied (both are type 2 where we
/// copy them) rather than copied invalid.
fn legacy_date_time(e: DataElement<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    let (tag, vr) = (e.tag(), e.vr());
    if !matches!(vr, VR::DA | VR::TM) {
        return e;
    }
    let Ok(text) = e.to_str() else {
        return e;
    };
    let text = text.trim_end_matches(['\0', ' ']).trim();
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let dicom = match vr {
        VR::DA => text.replace('.', ""),
        _ => text.replace(':', ""),
    };
    let ok = match vr {
        VR::DA => dicom.len() == 8 && dicom.bytes().all(|b| b.is_ascii_digit()),
        _ => valid(&dicom) && dicom.len() >= 2,
    };
    if dicom == text && ok {
        return e;
    }
    let value = if ok {
        PrimitiveValue::from(dicom)
    } else {
        PrimitiveValue::Empty
    };
    DataElement::new(tag, vr, value)
}

/// What de-identification does with dates and times (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dates {
    /// Basic profile: empty the type 2 dates and times, remove the others.
    #[default]
    Remove,
    /// Retain Longitudinal Temporal Information with Modified Dates: dates moved back by the
    /// same number of days (1 to 3650, from the key and the patient) in every export of one
    /// patient under one key, so intervals between studies survive.
    Shift,
    /// Retain Longitudinal Temporal Information with Full Dates.
    Keep,
}

/// De-identification settings (see the module docs for the list of changes).
#[derive(Clone, PartialEq, Eq)]
pub struct Anonymise {
    /// Secret mixed into pseudonyms, derived UIDs and date shifts; the same key maps the same
    /// patient and study to the same values. Default: random, i.e. consistent within the
    /// export that uses this value only.
    pub key: String,
    /// What happens to dates and date-times (see the module docs). Default:
    /// [`Dates::Remove`].
    pub dates: Dates,
    /// Retain Patient Characteristics option: keep PatientSex and PatientAge.
    pub retain_patient_characteristics: bool,
    /// Retain Device Identity option: copy the source's StationName and DeviceSerialNumber.
    pub retain_device_identity: bool,
}

impl std::fmt::Debug for Anonymise {
    // The key is a secret: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anonymise")
            .field("key", &"***")
            .field("dates", &self.dates)
            .field(
                "retain_patient_characteristics",
                &self.retain_patient_characteristics,
            )
            .field("retain_device_identity", &self.retain_device_identity)
            .finish()
    }
}

impl Default for Anonymise {
    /// The basic profile with a fresh random key.
    fn default() -> Self {
        Anonymise {
            key: format!("{:032x}", rand::random::<u128>()),
            dates: Dates::Remove,
            retain_patient_characteristics: false,
            retain_device_identity: false,
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
    /// The study of an export whose source has no study (not DICOM), e.g. one new study for
    /// all such images of one export; `None`: a new study per instance.
    pub study_instance_uid: Option<String>,
    /// De-identification (default: the basic profile with a fresh key); `None`: an identified
    /// export that keeps the source's patient and study.
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
            study_instance_uid: None,
            anonymise: Some(Anonymise::default()),
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

/// Days between the key's patient and the shifted dates: 1 to 3650, the same for one patient
/// under one key.
fn date_shift_days(key: &str, patient_id: &str) -> i64 {
    let d = hash(key, "date-shift", patient_id);
    1 + i64::from(u16::from_be_bytes([d[0], d[1]]) % 3650)
}

/// Civil date (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Day count since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A DA value (YYYYMMDD) moved back by `days`; `None` when it is not a valid date (such a
/// value is removed rather than passed on unshifted).
fn shift_date(value: &str, days: i64) -> Option<String> {
    let v = value.trim();
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| v[r].parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (y, m, d) = civil_from_days(days_from_civil(y, m, d) - days);
    Some(format!("{y:04}{m:02}{d:02}"))
}

/// Current UTC date (DA) and time (TM).
pub(super) fn now_da_tm() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
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

pub(super) fn str_of(obj: &InMemDicomObject, tag: Tag) -> String {
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
    put_patient_and_study(&mut obj, source, anon, opts.study_instance_uid.as_deref());
    // The Secondary Capture IOD has no Frame of Reference: a capture is not placed.
    obj.remove_element(tags::FRAME_OF_REFERENCE_UID);
    // General Series' Laterality (type 2C): the source's, else present and empty.
    put_str(
        &mut obj,
        tags::LATERALITY,
        VR::CS,
        source
            .laterality()
            .filter(|l| matches!(*l, "R" | "L"))
            .unwrap_or_default(),
    );

    // Series, equipment, image.
    put_sc_series(&mut obj, opts);
    put_sc_content_dates(&mut obj, source, anon);
    put_sc_equipment_and_image(&mut obj);
    put_source_image_reference(&mut obj, source, anon);
    put_rgb_pixels(&mut obj, rgb);
    Ok(obj)
}

/// SOP Common, General Series and SC Image identification: UIDs, type, descriptions and
/// numbers.
fn put_sc_series(obj: &mut InMemDicomObject, opts: &ScOptions) {
    let series_uid = opts.series_instance_uid.clone().unwrap_or_else(new_uid);
    let sop_uid = new_uid();
    put_str(
        obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        SECONDARY_CAPTURE_SOP_CLASS,
    );
    put_str(obj, tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    put_str(obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_str(obj, tags::MODALITY, VR::CS, "OT");
    put_str(obj, tags::CONVERSION_TYPE, VR::CS, "WSD");
    obj.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(["DERIVED".to_string(), "SECONDARY".to_string()].into()),
    ));
    put_str(
        obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &truncate(&opts.series_description, 64),
    );
    put_str(
        obj,
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        &truncate(&opts.derivation_description, 1024),
    );
    put_str(
        obj,
        tags::SERIES_NUMBER,
        VR::IS,
        &opts.series_number.to_string(),
    );
    put_str(
        obj,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &opts.instance_number.to_string(),
    );
}

/// The capture's own creation and content dates ([`own_date`]), present and empty when
/// de-identification removes dates.
fn put_sc_content_dates(
    obj: &mut InMemDicomObject,
    source: &SourceAttributes,
    anon: Option<&Anonymise>,
) {
    let (date, time) = now_da_tm();
    match own_date(source, anon, &date) {
        // Content date and time are type 2C here (Z/D): present and empty.
        None => {
            obj.put(DataElement::new(
                tags::CONTENT_DATE,
                VR::DA,
                PrimitiveValue::Empty,
            ));
            obj.put(DataElement::new(
                tags::CONTENT_TIME,
                VR::TM,
                PrimitiveValue::Empty,
            ));
        }
        Some(date) => put_own_dates(obj, &date, &time),
    }
}

/// General and SC Equipment, and the General Image attributes that do not depend on the
/// source.
fn put_sc_equipment_and_image(obj: &mut InMemDicomObject) {
    put_str(obj, tags::MANUFACTURER, VR::LO, "MVFA Studio");
    put_str(
        obj,
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
        VR::LO,
        "MVFA Studio",
    );
    put_str(
        obj,
        tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    obj.put(DataElement::new(
        tags::PATIENT_ORIENTATION,
        VR::CS,
        PrimitiveValue::Empty,
    ));
    put_str(obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put_str(obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
}

/// The Source Image Sequence naming the source instance (its UID derived when
/// de-identifying), when the source is a DICOM instance.
fn put_source_image_reference(
    obj: &mut InMemDicomObject,
    source: &SourceAttributes,
    anon: Option<&Anonymise>,
) {
    if let (Some(class), Some(inst)) = (&source.sop_class_uid, &source.sop_instance_uid) {
        let inst = referenced_uid(anon, inst);
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
}

/// Image Pixel module: 8-bit interleaved RGB (`rgb`'s size was checked to fit US).
fn put_rgb_pixels(obj: &mut InMemDicomObject, rgb: Image8) {
    let us = |v: u16| PrimitiveValue::from(v);
    obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(3)));
    put_str(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
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
}

/// Puts the Patient and General Study modules of a new instance into `obj`: the source's
/// attributes ([`COPIED`]), de-identified by `anon` when given, type 2 attributes present even
/// when empty. The study is the source's (a derived UID when de-identifying), else
/// `study_without_source`, else a new one. Returns the Study Instance UID written. Shared by
/// the Secondary Capture and the SR export so both de-identify alike.
pub(super) fn put_patient_and_study(
    obj: &mut InMemDicomObject,
    source: &SourceAttributes,
    anon: Option<&Anonymise>,
    study_without_source: Option<&str>,
) -> String {
    for e in &source.elements {
        obj.put(e.clone());
    }
    let study_uid = match (source.study_instance_uid(), anon) {
        (Some(old), Some(a)) => derived_uid(&a.key, &old),
        (Some(old), None) => old,
        (None, _) => study_without_source.map_or_else(new_uid, str::to_string),
    };
    put_str(obj, tags::STUDY_INSTANCE_UID, VR::UI, &study_uid);
    if let Some(a) = anon {
        deidentify(obj, source, a);
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
    study_uid
}

/// The date (DA) to write as the new instance's own creation/content date, from today's
/// `today`: shifted like the study date under [`Dates::Shift`], as is under [`Dates::Keep`] or
/// without de-identification; `None` when de-identification removes dates.
pub(super) fn own_date(
    source: &SourceAttributes,
    anon: Option<&Anonymise>,
    today: &str,
) -> Option<String> {
    let shift = match anon.map(|a| (a, a.dates)) {
        None | Some((_, Dates::Keep)) => 0,
        Some((_, Dates::Remove)) => return None,
        Some((a, Dates::Shift)) => date_shift_days(
            &a.key,
            &source.get_str(tags::PATIENT_ID).unwrap_or_default(),
        ),
    };
    Some(shift_date(today, shift).unwrap_or_else(|| today.to_string()))
}

/// Writes InstanceCreationDate/Time, ContentDate/Time and TimezoneOffsetFromUTC ("+0000").
pub(super) fn put_own_dates(obj: &mut InMemDicomObject, date: &str, time: &str) {
    put_str(obj, tags::INSTANCE_CREATION_DATE, VR::DA, date);
    put_str(obj, tags::INSTANCE_CREATION_TIME, VR::TM, time);
    put_str(obj, tags::CONTENT_DATE, VR::DA, date);
    put_str(obj, tags::CONTENT_TIME, VR::TM, time);
    put_str(obj, tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000");
}

/// A source UID as referenced from the export: derived from the key when de-identifying
/// (the same replacement the study UID gets), else as is.
pub(super) fn referenced_uid(anon: Option<&Anonymise>, uid: &str) -> String {
    match anon {
        Some(a) => derived_uid(&a.key, uid),
        None => uid.to_string(),
    }
}

/// Applies the profile (see the module docs) to the source attributes copied into `obj`.
fn deidentify(obj: &mut InMemDicomObject, source: &SourceAttributes, a: &Anonymise) {
    clean_identifying_attributes(obj, source, a);
    put_deidentification_method(obj, a);
}

/// Replaces, empties or removes the identifying attributes the profile names (dates by
/// [`Anonymise::dates`]).
fn clean_identifying_attributes(
    obj: &mut InMemDicomObject,
    source: &SourceAttributes,
    a: &Anonymise,
) {
    put_str(obj, tags::PATIENT_NAME, VR::PN, "ANONYMOUS");
    let id = source.get_str(tags::PATIENT_ID).unwrap_or_default();
    put_str(obj, tags::PATIENT_ID, VR::LO, &pseudonymous_id(&a.key, &id));
    let mut emptied = vec![
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::ACCESSION_NUMBER, VR::SH),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::STUDY_ID, VR::SH),
    ];
    let mut removed = vec![tags::STUDY_DESCRIPTION];
    if !a.retain_patient_characteristics {
        emptied.push((tags::PATIENT_SEX, VR::CS));
        removed.push(tags::PATIENT_AGE);
    }
    if !a.retain_device_identity {
        removed.extend([tags::STATION_NAME, tags::DEVICE_SERIAL_NUMBER]);
    }
    match a.dates {
        Dates::Remove => emptied.extend([(tags::STUDY_DATE, VR::DA), (tags::STUDY_TIME, VR::TM)]),
        Dates::Shift => {
            let days = date_shift_days(&a.key, &id);
            match source
                .get_str(tags::STUDY_DATE)
                .and_then(|d| shift_date(&d, days))
            {
                Some(shifted) => put_str(obj, tags::STUDY_DATE, VR::DA, &shifted),
                None => emptied.push((tags::STUDY_DATE, VR::DA)),
            }
        }
        Dates::Keep => {}
    }
    for (tag, vr) in emptied {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
    }
    for tag in removed {
        obj.remove_element(tag);
    }
    if let Some(old) = source.get_str(tags::FRAME_OF_REFERENCE_UID)
        && !old.is_empty()
    {
        put_str(
            obj,
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &derived_uid(&a.key, &old),
        );
    }
}

/// Records what was done: Patient Identity Removed, the method and its CID 7050 codes,
/// and whether longitudinal temporal information was modified.
fn put_deidentification_method(obj: &mut InMemDicomObject, a: &Anonymise) {
    put_str(obj, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
    // CID 7050 codes: the profile, then each option in effect.
    let mut codes = vec![
        ("113100", "Basic Application Confidentiality Profile"),
        ("113105", "Clean Descriptors Option"),
    ];
    let (dates_word, longitudinal) = match a.dates {
        Dates::Remove => ("dates removed", "REMOVED"),
        Dates::Shift => {
            codes.push((
                "113107",
                "Retain Longitudinal Temporal Information Modified Dates Option",
            ));
            ("dates shifted", "MODIFIED")
        }
        Dates::Keep => {
            codes.push((
                "113106",
                "Retain Longitudinal Temporal Information Full Dates Option",
            ));
            ("dates kept", "UNMODIFIED")
        }
    };
    if a.retain_patient_characteristics {
        codes.push(("113108", "Retain Patient Characteristics Option"));
    }
    if a.retain_device_identity {
        codes.push(("113109", "Retain Device Identity Option"));
    }
    // LO: at most 64 characters; the full list is in this module's documentation.
    put_str(
        obj,
        tags::DEIDENTIFICATION_METHOD,
        VR::LO,
        &format!("MVFA Studio PS3.15 basic profile, {dates_word}"),
    );
    let items: Vec<InMemDicomObject> = codes
        .into_iter()
        .map(|(value, meaning)| {
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
                DataElement::new(
                    tags::CODING_SCHEME_DESIGNATOR,
                    VR::SH,
                    PrimitiveValue::from("DCM"),
                ),
                DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
            ])
        })
        .collect();
    obj.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(items),
    ));
    put_str(
        obj,
        tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
        VR::CS,
        longitudinal,
    );
}

pub(super) fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

/// Cuts `s` to at most `max` bytes at a character boundary (DICOM VR length limits).
pub(super) fn truncate(s: &str, max: usize) -> String {
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
    fn dates_shift_across_month_and_leap_year_boundaries() {
        assert_eq!(shift_date("20240301", 1).as_deref(), Some("20240229"));
        assert_eq!(shift_date("20230101", 1).as_deref(), Some("20221231"));
        assert_eq!(shift_date("20240115", 0).as_deref(), Some("20240115"));
        assert_eq!(shift_date("2024-01-15", 3), None);
        assert_eq!(shift_date("20241340", 3), None);
        for days in [0, 59, 60, 365, 11_000, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let shift = date_shift_days("k", "PID");
        assert!((1..=3650).contains(&shift));
        assert_eq!(shift, date_shift_days("k", "PID"));
    }

    #[test]
    fn date_is_plausible() {
        let (d, t) = now_da_tm();
        assert_eq!(d.len(), 8);
        assert_eq!(t.len(), 6);
        assert!(d.as_str() >= "20240101", "{d}");
    }
}
