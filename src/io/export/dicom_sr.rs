//! DICOM Basic Text SR (SOP Class 1.2.840.10008.5.1.4.1.1.88.11) of the score table: the rows
//! of `scores.csv` that belong to one study, filed in that study (a new series), so a PACS
//! keeps the numbers next to the images and their Secondary Captures
//! ([`super::dicom_sc`]).
//!
//! Patient and study come from the study's first source image and are de-identified exactly
//! like the Secondary Captures ([`super::dicom_sc::put_patient_and_study`], the same
//! [`Anonymise`] key), so the SR and the Secondary Captures of one export end up in the same
//! (de-identified) study. Images that are not DICOM have no study: their SR goes into the
//! study given by [`SrOptions::study_instance_uid`] (the export's new study, shared with their
//! Secondary Captures).
//!
//! Modules: Patient, General Study, SR Document Series (Modality "SR", a new series),
//! General Equipment, SR Document General (InstanceNumber, CompletionFlag COMPLETE,
//! VerificationFlag UNVERIFIED, ContentDate/Time, an empty PerformedProcedureCodeSequence,
//! CurrentRequestedProcedureEvidenceSequence listing the DICOM source images and
//! PertinentOtherEvidenceSequence listing the Secondary Captures), SR Document Content and
//! SOP Common (SpecificCharacterSet ISO_IR 192: all text is UTF-8).
//!
//! Document title: (18748-4, LN, "Diagnostic imaging report"), the LOINC title of CID 7000
//! that TID 2000 (Basic Diagnostic Imaging Report, the template Basic Text SR is made for)
//! uses, and the one title PACS viewers generally recognise. The document does not claim
//! TID 2000 conformance (no ContentTemplateSequence): its result items use local codes. The
//! tree (every item with a ConceptNameCodeSequence; only CONTAINER, TEXT, CODE and IMAGE
//! items, as Basic Text SR allows; numbers are TEXT because NUM is not allowed in Basic Text
//! SR, written exactly as in `scores.csv`):
//!
//! ```text
//! CONTAINER (18748-4, LN, "Diagnostic imaging report"), SEPARATE
//! ├ HAS OBS CONTEXT CODE (121005, DCM, "Observer Type") = (121007, DCM, "Device")
//! ├ HAS OBS CONTEXT TEXT (121013, DCM, "Device Observer Name") = "MVFA Studio"
//! ├ HAS OBS CONTEXT TEXT (121014, DCM, "Device Observer Manufacturer") = "MVFA Studio"
//! ├ CONTAINS TEXT (121106, DCM, "Comment") = research tool statement
//! ├ CONTAINS CONTAINER (DETECTOR, 99MVFA, "Detector")
//! │ ├ CONTAINS TEXT (111001, DCM, "Algorithm Name"), (111003, DCM, "Algorithm Version")
//! │ └ CONTAINS TEXT checkpoint file name, organ word, calibration method, decision threshold,
//! │   normal and abnormal exemplars (99MVFA codes; the calibration items when calibrated)
//! └ CONTAINS CONTAINER (121070, DCM, "Findings")
//!   └ per image: CONTAINS CONTAINER (IMAGE, 99MVFA, "Image result")
//!     ├ CONTAINS TEXT (CSVROW, 99MVFA, "Row in scores.csv") = 1-based data row
//!     ├ CONTAINS TEXT (SOURCEFILE, 99MVFA, "Source file") = the CSV path (identified only)
//!     ├ CONTAINS IMAGE (SOURCEIMAGE, 99MVFA, "Source image") (DICOM sources; frame number
//!     │ for multi-frame sources)
//!     ├ CONTAINS IMAGE (OVERLAY, 99MVFA, "Anomaly overlay") = its Secondary Capture
//!     └ CONTAINS TEXT score, zero-shot score, few-shot score, decision, threshold (99MVFA;
//!       an item is left out when the CSV field is empty)
//! ```
//!
//! The local codes use the private coding scheme designator "99MVFA" (PS3.16 8.2: local
//! schemes start with "99"), described in CodingSchemeIdentificationSequence.
//!
//! De-identified, the SR never carries a file path: images are identified by their CSV row,
//! their (de-identified) source image reference and their Secondary Capture. The basic profile
//! removes an SR's ContentSequence unless it is cleaned (Clean Structured Content Option,
//! 113104, added to DeidentificationMethodCodeSequence): the tree holds only generated text,
//! the checkpoint's file name, the organ word, and UIDs replaced like the Secondary Captures'
//! (the source instance, series and study UIDs derived from the key), also in the evidence
//! sequences. ContentDate and ContentTime are type 1 in an SR, so when dates are removed they
//! get the dummy values 19000101 and 000000 (action D of PS3.15 Table E.1-1).
use std::path::Path;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

use super::ExportError;
use super::atomic::write_atomically;
use super::dicom_sc::{
    Anonymise, SECONDARY_CAPTURE_SOP_CLASS, ScWritten, SourceAttributes, new_uid, now_da_tm,
    own_date, put_own_dates, put_patient_and_study, put_str, referenced_uid, str_of, truncate,
};

/// SOP Class UID of Basic Text SR Storage.
pub const BASIC_TEXT_SR_SOP_CLASS: &str = uids::BASIC_TEXT_SR_STORAGE;

/// Coding scheme designator of the local codes (see the module docs).
pub const LOCAL_SCHEME: &str = "99MVFA";

/// Text of the research-tool statement (the root's Comment item).
pub const RESEARCH_STATEMENT: &str = "Research tool output of MVFA Studio (few-shot anomaly \
    detection). Not a medical device; not for primary diagnosis. Scores are not verified by a \
    physician. The calibrated score is in normal spreads (robust z units) over the normal \
    exemplars; abnormal means score >= decision threshold.";

/// A code: (value, scheme designator, meaning).
pub type Code = (&'static str, &'static str, &'static str);

/// CID 7050 code of the de-identification option under which a de-identified SR keeps its
/// content tree.
pub const CLEAN_STRUCTURED_CONTENT: Code = ("113104", "DCM", "Clean Structured Content Option");

/// Document title (see the module docs for the choice).
pub const DOCUMENT_TITLE: Code = ("18748-4", "LN", "Diagnostic imaging report");

/// Concept names of the items (see the module docs for the tree).
pub mod concepts {
    use super::{Code, LOCAL_SCHEME as L};

    /// (121005, DCM, "Observer Type").
    pub const OBSERVER_TYPE: Code = ("121005", "DCM", "Observer Type");
    /// (121007, DCM, "Device"): the observer type's value.
    pub const DEVICE: Code = ("121007", "DCM", "Device");
    /// (121013, DCM, "Device Observer Name").
    pub const DEVICE_OBSERVER_NAME: Code = ("121013", "DCM", "Device Observer Name");
    /// (121014, DCM, "Device Observer Manufacturer").
    pub const DEVICE_OBSERVER_MANUFACTURER: Code =
        ("121014", "DCM", "Device Observer Manufacturer");
    /// (121106, DCM, "Comment"): the research statement.
    pub const COMMENT: Code = ("121106", "DCM", "Comment");
    /// The detector section.
    pub const DETECTOR: Code = ("DETECTOR", L, "Detector");
    /// (111001, DCM, "Algorithm Name").
    pub const ALGORITHM_NAME: Code = ("111001", "DCM", "Algorithm Name");
    /// (111003, DCM, "Algorithm Version").
    pub const ALGORITHM_VERSION: Code = ("111003", "DCM", "Algorithm Version");
    /// The detector checkpoint's file name.
    pub const CHECKPOINT: Code = ("CHECKPOINT", L, "Detector checkpoint");
    /// The organ word the detector scored with.
    pub const ORGAN: Code = ("ORGAN", L, "Organ word");
    /// The calibration method, or "uncalibrated".
    pub const CALIBRATION: Code = ("CALIBRATION", L, "Calibration method");
    /// The calibrated score at and above which an image is abnormal.
    pub const THRESHOLD: Code = ("THRESHOLD", L, "Decision threshold");
    /// Normal exemplars of the calibration.
    pub const NORMAL_EXEMPLARS: Code = ("NORMALEX", L, "Normal exemplars");
    /// Abnormal exemplars of the calibration.
    pub const ABNORMAL_EXEMPLARS: Code = ("ABNORMALEX", L, "Abnormal exemplars");
    /// (121070, DCM, "Findings"): the section of the image results.
    pub const FINDINGS: Code = ("121070", "DCM", "Findings");
    /// One image's results.
    pub const IMAGE_RESULT: Code = ("IMAGE", L, "Image result");
    /// The image's 1-based data row in `scores.csv`.
    pub const CSV_ROW: Code = ("CSVROW", L, "Row in scores.csv");
    /// The `path` column of `scores.csv` (identified exports only).
    pub const SOURCE_FILE: Code = ("SOURCEFILE", L, "Source file");
    /// The DICOM source image.
    pub const SOURCE_IMAGE: Code = ("SOURCEIMAGE", L, "Source image");
    /// The image's Secondary Capture.
    pub const OVERLAY: Code = ("OVERLAY", L, "Anomaly overlay");
    /// The `score` column.
    pub const SCORE: Code = ("SCORE", L, "Calibrated anomaly score");
    /// The `zero_shot_score` column.
    pub const ZERO_SHOT_SCORE: Code = ("ZEROSHOT", L, "Zero-shot image score");
    /// The `few_shot_score` column.
    pub const FEW_SHOT_SCORE: Code = ("FEWSHOT", L, "Few-shot image score");
    /// The `abnormal` column, as "abnormal" or "normal".
    pub const DECISION: Code = ("DECISION", L, "Decision");
}

/// One image's row of the score table, and what it references.
#[derive(Debug, Clone)]
pub struct SrImage {
    /// Its 1-based data row in `scores.csv`.
    pub csv_row: usize,
    /// Its `path` column (written only into identified SRs).
    pub label: String,
    /// Calibrated score (`score` column).
    pub score: Option<f64>,
    /// Zero-shot image score.
    pub zero_shot_score: Option<f64>,
    /// Few-shot image score.
    pub few_shot_score: Option<f64>,
    /// The decision (`abnormal` column 1 or 0).
    pub abnormal: Option<bool>,
    /// Its source file's attributes ([`SourceAttributes::none`] when not DICOM).
    pub source: SourceAttributes,
    /// 1-based frame number within a multi-frame source; `None` for a single frame.
    pub frame_number: Option<u32>,
    /// Its Secondary Capture, when one was written.
    pub secondary_capture: Option<ScWritten>,
}

/// The detector facts written into the SR.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SrDetector {
    /// The checkpoint's file name (not its folder, which may name a user).
    pub checkpoint: String,
    /// The organ word.
    pub organ: String,
    /// Calibration method; `None`: uncalibrated.
    pub calibration_method: Option<String>,
    /// Calibrated score at and above which an image is abnormal.
    pub threshold: Option<f64>,
    /// Normal exemplars of the calibration.
    pub normal_exemplars: Option<usize>,
    /// Abnormal exemplars of the calibration.
    pub abnormal_exemplars: Option<usize>,
}

/// SR export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SrOptions {
    /// Default "MVFA anomaly scores".
    pub series_description: String,
    /// Default 9002 (next to the Secondary Captures' 9001).
    pub series_number: i32,
    /// Default 1.
    pub instance_number: i32,
    /// The SR's series; `None` (default): a new one. A series belongs to one study, so SRs of
    /// different studies need different series.
    pub series_instance_uid: Option<String>,
    /// The study when the images are not DICOM (see [`super::ScOptions`]); `None`: new.
    pub study_instance_uid: Option<String>,
    /// De-identification: the same settings (and key) as the export's Secondary Captures;
    /// `None`: identified.
    pub anonymise: Option<Anonymise>,
}

impl Default for SrOptions {
    fn default() -> Self {
        SrOptions {
            series_description: "MVFA anomaly scores".into(),
            series_number: 9002,
            instance_number: 1,
            series_instance_uid: None,
            study_instance_uid: None,
            anonymise: Some(Anonymise::default()),
        }
    }
}

/// UIDs of a written SR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrWritten {
    /// SOP Instance UID of the SR.
    pub sop_instance_uid: String,
    /// Its series.
    pub series_instance_uid: String,
    /// Its study (the images' study as exported).
    pub study_instance_uid: String,
    /// Image results it carries.
    pub images: usize,
}

/// Writes the SR of `images` (all of one study) atomically to `path`.
pub fn write_results_sr(
    path: &Path,
    images: &[SrImage],
    detector: &SrDetector,
    opts: &SrOptions,
) -> Result<SrWritten, ExportError> {
    let obj = build_results_sr(images, detector, opts)?;
    let written = SrWritten {
        sop_instance_uid: str_of(&obj, tags::SOP_INSTANCE_UID),
        series_instance_uid: str_of(&obj, tags::SERIES_INSTANCE_UID),
        study_instance_uid: str_of(&obj, tags::STUDY_INSTANCE_UID),
        images: images.len(),
    };
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| ExportError::write(path, super::atomic::error_chain(&e)))?;
    write_atomically(path, |w| Ok(file.write_all(w)?))?;
    Ok(written)
}

/// Builds the SR data set (without file meta); see the module docs.
pub fn build_results_sr(
    images: &[SrImage],
    detector: &SrDetector,
    opts: &SrOptions,
) -> Result<InMemDicomObject, ExportError> {
    let first = one_study(images)?;
    let anon = opts.anonymise.as_ref();
    let mut obj = InMemDicomObject::new_empty();
    let study_uid = put_patient_and_study_of_sr(&mut obj, first, anon, opts);
    put_series_and_equipment(&mut obj, opts);
    put_document_general(&mut obj, first, anon, opts);
    put_evidence(&mut obj, images, anon, &study_uid);
    put_content(&mut obj, images, detector, anon);
    Ok(obj)
}

/// The first image, after checking that all images belong to its study (an SR belongs to
/// one study).
fn one_study(images: &[SrImage]) -> Result<&SrImage, ExportError> {
    let first = images
        .first()
        .ok_or_else(|| ExportError::Invalid("an SR needs at least one image".into()))?;
    let study = first.source.study_instance_uid();
    if let Some(other) = images
        .iter()
        .find(|i| i.source.study_instance_uid() != study)
    {
        return Err(ExportError::Invalid(format!(
            "the images of one SR must share their study ({} differs from {})",
            other.label, first.label
        )));
    }
    Ok(first)
}

/// Patient and General Study modules (de-identified when `anon`), and the character set;
/// returns the Study Instance UID written.
fn put_patient_and_study_of_sr(
    obj: &mut InMemDicomObject,
    first: &SrImage,
    anon: Option<&Anonymise>,
    opts: &SrOptions,
) -> String {
    let study_uid =
        put_patient_and_study(obj, &first.source, anon, opts.study_instance_uid.as_deref());
    // Copied for the Secondary Capture's image modules; not part of an SR.
    for tag in [tags::FRAME_OF_REFERENCE_UID, tags::BODY_PART_EXAMINED] {
        obj.remove_element(tag);
    }
    if anon.is_some() {
        // The content tree is kept, cleaned (see the module docs): record the option.
        let mut codes: Vec<InMemDicomObject> = obj
            .element_opt(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
            .ok()
            .flatten()
            .and_then(|e| e.items())
            .map(<[InMemDicomObject]>::to_vec)
            .unwrap_or_default();
        codes.push(code(CLEAN_STRUCTURED_CONTENT));
        obj.put(sequence(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE, codes));
    }
    put_str(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    study_uid
}

/// SOP Common, SR Document Series and General Equipment modules.
fn put_series_and_equipment(obj: &mut InMemDicomObject, opts: &SrOptions) {
    put_str(obj, tags::SOP_CLASS_UID, VR::UI, BASIC_TEXT_SR_SOP_CLASS);
    put_str(obj, tags::SOP_INSTANCE_UID, VR::UI, &new_uid());
    let series_uid = opts.series_instance_uid.clone().unwrap_or_else(new_uid);
    put_str(obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_str(obj, tags::MODALITY, VR::CS, "SR");
    put_str(
        obj,
        tags::SERIES_NUMBER,
        VR::IS,
        &opts.series_number.to_string(),
    );
    put_str(
        obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &truncate(&opts.series_description, 64),
    );
    obj.put(empty_sequence(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
    ));
    put_str(obj, tags::MANUFACTURER, VR::LO, "MVFA Studio");
    put_str(
        obj,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    obj.put(sequence(
        tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text_element(tags::CODING_SCHEME_DESIGNATOR, VR::SH, LOCAL_SCHEME),
            text_element(tags::CODING_SCHEME_NAME, VR::ST, "MVFA Studio local codes"),
            text_element(
                tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
                VR::ST,
                "MVFA Studio",
            ),
        ])],
    ));
}

/// SR Document General module, except the evidence sequences ([`put_evidence`]).
fn put_document_general(
    obj: &mut InMemDicomObject,
    first: &SrImage,
    anon: Option<&Anonymise>,
    opts: &SrOptions,
) {
    put_str(
        obj,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &opts.instance_number.to_string(),
    );
    put_str(obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put_str(obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    let (today, time) = now_da_tm();
    match own_date(&first.source, anon, &today) {
        Some(date) => put_own_dates(obj, &date, &time),
        None => {
            // Type 1 in an SR: a dummy value (D) rather than an empty one (Z).
            put_str(obj, tags::CONTENT_DATE, VR::DA, "19000101");
            put_str(obj, tags::CONTENT_TIME, VR::TM, "000000");
        }
    }
    obj.put(empty_sequence(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE));
}

/// The evidence sequences: the source images (current requested procedure evidence) and the
/// Secondary Captures written with them (pertinent other evidence).
fn put_evidence(
    obj: &mut InMemDicomObject,
    images: &[SrImage],
    anon: Option<&Anonymise>,
    study_uid: &str,
) {
    let sources: Vec<(String, String, String)> = images
        .iter()
        .filter_map(|i| {
            let s = &i.source;
            Some((
                referenced_uid(anon, s.series_instance_uid()?),
                s.sop_class_uid()?.to_string(),
                referenced_uid(anon, s.sop_instance_uid()?),
            ))
        })
        .collect();
    if !sources.is_empty() {
        obj.put(evidence(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            study_uid,
            &sources,
        ));
    }
    let captures: Vec<(String, String, String)> = images
        .iter()
        .filter_map(|i| i.secondary_capture.as_ref())
        .map(|sc| {
            (
                sc.series_instance_uid.clone(),
                SECONDARY_CAPTURE_SOP_CLASS.to_string(),
                sc.sop_instance_uid.clone(),
            )
        })
        .collect();
    if !captures.is_empty() {
        obj.put(evidence(
            tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE,
            study_uid,
            &captures,
        ));
    }
}

/// SR Document Content: the root container with the observer context, the detector and one
/// result container per image.
fn put_content(
    obj: &mut InMemDicomObject,
    images: &[SrImage],
    detector: &SrDetector,
    anon: Option<&Anonymise>,
) {
    put_str(obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    obj.put(concept_name(DOCUMENT_TITLE));
    put_str(obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    let mut root = vec![
        code_item("HAS OBS CONTEXT", concepts::OBSERVER_TYPE, concepts::DEVICE),
        text_item(
            "HAS OBS CONTEXT",
            concepts::DEVICE_OBSERVER_NAME,
            "MVFA Studio",
        ),
        text_item(
            "HAS OBS CONTEXT",
            concepts::DEVICE_OBSERVER_MANUFACTURER,
            "MVFA Studio",
        ),
        text_item("CONTAINS", concepts::COMMENT, RESEARCH_STATEMENT),
        container(concepts::DETECTOR, detector_items(detector)),
    ];
    let results = images
        .iter()
        .map(|i| container(concepts::IMAGE_RESULT, image_items(i, detector, anon)))
        .collect();
    root.push(container(concepts::FINDINGS, results));
    obj.put(sequence(tags::CONTENT_SEQUENCE, root));
}

fn detector_items(d: &SrDetector) -> Vec<InMemDicomObject> {
    let mut items = vec![
        text_item(
            "CONTAINS",
            concepts::ALGORITHM_NAME,
            "MVFA (CLIP ViT-L/14-336 with multi-level adapters), few-shot anomaly detection",
        ),
        text_item(
            "CONTAINS",
            concepts::ALGORITHM_VERSION,
            &format!("MVFA Studio {}", env!("CARGO_PKG_VERSION")),
        ),
        text_item("CONTAINS", concepts::CHECKPOINT, &d.checkpoint),
        text_item("CONTAINS", concepts::ORGAN, &d.organ),
        text_item(
            "CONTAINS",
            concepts::CALIBRATION,
            d.calibration_method.as_deref().unwrap_or("uncalibrated"),
        ),
    ];
    if let Some(t) = d.threshold {
        items.push(text_item("CONTAINS", concepts::THRESHOLD, &t.to_string()));
    }
    for (concept, n) in [
        (concepts::NORMAL_EXEMPLARS, d.normal_exemplars),
        (concepts::ABNORMAL_EXEMPLARS, d.abnormal_exemplars),
    ] {
        if let Some(n) = n {
            items.push(text_item("CONTAINS", concept, &n.to_string()));
        }
    }
    items
}

fn image_items(i: &SrImage, d: &SrDetector, anon: Option<&Anonymise>) -> Vec<InMemDicomObject> {
    let mut items = vec![text_item(
        "CONTAINS",
        concepts::CSV_ROW,
        &i.csv_row.to_string(),
    )];
    if anon.is_none() {
        items.push(text_item("CONTAINS", concepts::SOURCE_FILE, &i.label));
    }
    if let (Some(class), Some(inst)) = (i.source.sop_class_uid(), i.source.sop_instance_uid()) {
        items.push(image_item(
            concepts::SOURCE_IMAGE,
            class,
            &referenced_uid(anon, inst),
            i.frame_number,
        ));
    }
    if let Some(sc) = &i.secondary_capture {
        items.push(image_item(
            concepts::OVERLAY,
            SECONDARY_CAPTURE_SOP_CLASS,
            &sc.sop_instance_uid,
            None,
        ));
    }
    for (concept, value) in [
        (concepts::SCORE, i.score),
        (concepts::ZERO_SHOT_SCORE, i.zero_shot_score),
        (concepts::FEW_SHOT_SCORE, i.few_shot_score),
    ] {
        if let Some(v) = value {
            items.push(text_item("CONTAINS", concept, &v.to_string()));
        }
    }
    if let Some(abnormal) = i.abnormal {
        let word = if abnormal { "abnormal" } else { "normal" };
        items.push(text_item("CONTAINS", concepts::DECISION, word));
        if let Some(t) = d.threshold {
            items.push(text_item("CONTAINS", concepts::THRESHOLD, &t.to_string()));
        }
    }
    items
}

fn text_element(tag: dicom_core::Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

fn sequence(tag: dicom_core::Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn empty_sequence(tag: dicom_core::Tag) -> DataElement<InMemDicomObject> {
    sequence(tag, Vec::new())
}

fn code((value, scheme, meaning): Code) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text_element(tags::CODE_VALUE, VR::SH, value),
        text_element(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text_element(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

fn concept_name(concept: Code) -> DataElement<InMemDicomObject> {
    sequence(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code(concept)])
}

/// A content item: relationship, value type and concept name.
fn item(relationship: &str, value_type: &str, concept: Code) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text_element(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        text_element(tags::VALUE_TYPE, VR::CS, value_type),
        concept_name(concept),
    ])
}

fn text_item(relationship: &str, concept: Code, text: &str) -> InMemDicomObject {
    let mut i = item(relationship, "TEXT", concept);
    i.put(text_element(tags::TEXT_VALUE, VR::UT, text));
    i
}

fn code_item(relationship: &str, concept: Code, value: Code) -> InMemDicomObject {
    let mut i = item(relationship, "CODE", concept);
    i.put(sequence(tags::CONCEPT_CODE_SEQUENCE, vec![code(value)]));
    i
}

fn container(concept: Code, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut i = item("CONTAINS", "CONTAINER", concept);
    i.put(text_element(
        tags::CONTINUITY_OF_CONTENT,
        VR::CS,
        "SEPARATE",
    ));
    i.put(sequence(tags::CONTENT_SEQUENCE, children));
    i
}

fn image_item(concept: Code, class: &str, instance: &str, frame: Option<u32>) -> InMemDicomObject {
    let mut reference = InMemDicomObject::from_element_iter([
        text_element(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
        text_element(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
    ]);
    if let Some(f) = frame {
        reference.put(text_element(
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            &f.to_string(),
        ));
    }
    let mut i = item("CONTAINS", "IMAGE", concept);
    i.put(sequence(tags::REFERENCED_SOP_SEQUENCE, vec![reference]));
    i
}

/// A Hierarchical SOP Instance Reference item of `study`: its series, each with its
/// instances (`(series, class, instance)`, duplicates dropped), in first-seen order.
fn evidence(
    tag: dicom_core::Tag,
    study: &str,
    refs: &[(String, String, String)],
) -> DataElement<InMemDicomObject> {
    let mut series: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for (s, class, inst) in refs {
        let pos = match series.iter().position(|(uid, _)| uid == s) {
            Some(p) => p,
            None => {
                series.push((s, Vec::new()));
                series.len() - 1
            }
        };
        let list = &mut series[pos].1;
        if !list.iter().any(|(_, i)| i == inst) {
            list.push((class, inst));
        }
    }
    let series_items = series
        .into_iter()
        .map(|(uid, instances)| {
            let sops = instances
                .into_iter()
                .map(|(class, inst)| {
                    InMemDicomObject::from_element_iter([
                        text_element(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
                        text_element(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, inst),
                    ])
                })
                .collect();
            InMemDicomObject::from_element_iter([
                text_element(tags::SERIES_INSTANCE_UID, VR::UI, uid),
                sequence(tags::REFERENCED_SOP_SEQUENCE, sops),
            ])
        })
        .collect();
    sequence(
        tag,
        vec![InMemDicomObject::from_element_iter([
            text_element(tags::STUDY_INSTANCE_UID, VR::UI, study),
            sequence(tags::REFERENCED_SERIES_SEQUENCE, series_items),
        ])],
    )
}
