//! The measurement report of an export (DICOM SR TID 1500, "Imaging Measurement Report", in a
//! Comprehensive SR, SOP Class 1.2.840.10008.5.1.4.1.1.88.33): one per source study, filed in
//! that study as a new series, so a PACS keeps the numbers next to the images and the result
//! objects (Parametric Map, Segmentation) they refer to, and any viewer or script can query the
//! scores as coded numbers.
//!
//! Patient and study come from the study's first source image and are de-identified exactly
//! like every object of the export ([`super::dicom_sc::put_patient_and_study`], the same
//! [`Anonymise`] key). Images that are not DICOM have no study: their report goes into the study
//! given by [`SrOptions::study_instance_uid`] (the export's new study).
//!
//! Modules: Patient, General Study, SR Document Series (Modality "SR", a new series), General
//! Equipment, SR Document General (CompletionFlag COMPLETE, VerificationFlag UNVERIFIED,
//! PreliminaryFlag FINAL, ContentDate/Time, an empty PerformedProcedureCodeSequence, the source
//! images in CurrentRequestedProcedureEvidenceSequence and the result objects in
//! PertinentOtherEvidenceSequence), SR Document Content with ContentTemplateSequence
//! (DCMR 1500), and SOP Common (SpecificCharacterSet ISO_IR 192).
//!
//! The tree (local codes use the scheme "99MVFA", described in
//! CodingSchemeIdentificationSequence; scores are NUM items in the unit [`SCORE_UNIT`]):
//!
//! ```text
//! CONTAINER (126000, DCM, "Imaging Measurement Report") [DCMR 1500]
//! ├ HAS CONCEPT MOD CODE (121049, DCM, "Language of Content Item and Descendants") = en-US
//! ├ HAS OBS CONTEXT CODE (121005, DCM, "Observer Type") = (121007, DCM, "Device")
//! ├ HAS OBS CONTEXT UIDREF (121012, DCM, "Device Observer UID"), TEXT name and manufacturer
//! ├ HAS CONCEPT MOD CODE (121058, DCM, "Procedure reported") = (363679005, SCT, "Imaging")
//! ├ CONTAINS TEXT (121106, DCM, "Comment") = research tool statement
//! └ CONTAINS CONTAINER (126010, DCM, "Imaging Measurements")
//!   ├ per DICOM source series: CONTAINER (125007, DCM, "Measurement Group")
//!   │   [DCMR 1411 when it has a Segmentation, else DCMR 1501]
//!   │ ├ HAS OBS CONTEXT TEXT (112039, "Tracking Identifier"), UIDREF (112040, "Tracking
//!   │ │ Unique Identifier"): the Segmentation's segment carries the same pair
//!   │ ├ CONTAINS CODE (121071, DCM, "Finding") = (ANOMALY, 99MVFA, "Image anomaly")
//!   │ ├ HAS CONCEPT MOD TEXT (111001, "Algorithm Name"), (111003, "Algorithm Version"),
//!   │ │ (111002, "Algorithm Parameters"): checkpoint SHA-256, organ word, calibration
//!   │ ├ CONTAINS IMAGE (121191, DCM, "Referenced Segment") = the Segmentation, segment 1, and
//!   │ │ UIDREF (121232, DCM, "Source series for segmentation") [1411 only]
//!   │ ├ CONTAINS NUM series score (the maximum), mean of the top 3 slice scores, slices,
//!   │ │ slices at or above the threshold, decision threshold
//!   │ │ └ the series score: INFERRED FROM IMAGE (121112, DCM, "Source of Measurement") = the
//!   │ │   peak slice, and the Parametric Map frame of it
//!   │ ├ CONTAINS TEXT (THRMEANING, 99MVFA, "Threshold meaning")
//!   │ └ CONTAINS CODE (DECISION, 99MVFA, "Decision") = (263654008, SCT, "Abnormal") or
//!   │   (17621005, SCT, "Normal")
//!   └ per image: CONTAINER (125007, DCM, "Measurement Group") [DCMR 1501]
//!     ├ Tracking Identifier "image <row in scores.csv>" and a Tracking UID
//!     ├ Finding, algorithm identification
//!     ├ CONTAINS TEXT (SOURCEFILE, 99MVFA, "Source file") (identified exports only)
//!     ├ CONTAINS NUM calibrated score, INFERRED FROM the source image (and frame) and the
//!     │ Parametric Map frame; NUM zero-shot and few-shot image scores (uncalibrated, unit 1)
//!     ├ CONTAINS NUM decision threshold, TEXT its meaning
//!     └ CONTAINS CODE decision
//! ```
//!
//! De-identified, the report never carries a file path or a series description; the basic
//! profile removes an SR's content unless it is cleaned (Clean Structured Content Option,
//! 113104, added to DeidentificationMethodCodeSequence): the tree holds only generated text,
//! the checkpoint's hash, the organ word and UIDs replaced like every object's. ContentDate
//! and ContentTime are type 1 in an SR, so when dates are removed they get the dummy values
//! 19000101 and 000000 (action D of PS3.15 Table E.1-1).
use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::ExportError;
use super::dicom_derived::{ObjectWritten, write_object};
use super::dicom_items::{Code, code, ds, empty_sequence, sequence, text_element};
use super::dicom_pm::PARAMETRIC_MAP_SOP_CLASS;
use super::dicom_sc::{
    Anonymise, SourceAttributes, derived_uid, new_uid, now_da_tm, own_date, put_own_dates,
    put_patient_and_study, put_str, referenced_uid, truncate,
};
use super::dicom_seg::{SEGMENT_NUMBER, SEGMENTATION_SOP_CLASS};

/// SOP Class UID of Comprehensive SR Storage.
pub const COMPREHENSIVE_SR_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.88.33";

/// Coding scheme designator of the local codes (see the module docs).
pub const LOCAL_SCHEME: &str = "99MVFA";

/// Unit of calibrated scores: robust z-scores, "normal spreads" above a typical normal
/// exemplar (a UCUM annotation, dimensionless).
pub const SCORE_UNIT: Code = ("{robust_z}", "UCUM", "robust z-score (normal spreads)");

/// Unit of the uncalibrated branch scores (0 to 1).
pub const NO_UNITS: Code = ("1", "UCUM", "no units");

/// Unit of slice counts.
pub const SLICES_UNIT: Code = ("{slices}", "UCUM", "slices");

/// Text of the research-tool statement (the root's Comment item).
pub const RESEARCH_STATEMENT: &str = "Research tool output of MVFA Studio (few-shot anomaly \
    detection). Not a medical device; not for primary diagnosis. Scores are not verified by a \
    physician. The calibrated score is in normal spreads (robust z units) over the normal \
    exemplars; abnormal means score >= decision threshold.";

/// CID 7050 code of the de-identification option under which a de-identified SR keeps its
/// content tree.
pub const CLEAN_STRUCTURED_CONTENT: Code = ("113104", "DCM", "Clean Structured Content Option");

/// Document title.
pub const DOCUMENT_TITLE: Code = ("126000", "DCM", "Imaging Measurement Report");

/// Concept names and values of the items (see the module docs for the tree); each constant is
/// the code its meaning names.
#[allow(missing_docs)]
pub mod concepts {
    use super::{Code, LOCAL_SCHEME as L};

    pub const LANGUAGE: Code = ("121049", "DCM", "Language of Content Item and Descendants");
    pub const ENGLISH_US: Code = ("en-US", "RFC5646", "English (United States)");
    pub const OBSERVER_TYPE: Code = ("121005", "DCM", "Observer Type");
    pub const DEVICE: Code = ("121007", "DCM", "Device");
    pub const DEVICE_OBSERVER_UID: Code = ("121012", "DCM", "Device Observer UID");
    pub const DEVICE_OBSERVER_NAME: Code = ("121013", "DCM", "Device Observer Name");
    pub const DEVICE_OBSERVER_MANUFACTURER: Code =
        ("121014", "DCM", "Device Observer Manufacturer");
    pub const PROCEDURE_REPORTED: Code = ("121058", "DCM", "Procedure reported");
    pub const IMAGING_PROCEDURE: Code = ("363679005", "SCT", "Imaging");
    pub const COMMENT: Code = ("121106", "DCM", "Comment");
    pub const IMAGING_MEASUREMENTS: Code = ("126010", "DCM", "Imaging Measurements");
    pub const MEASUREMENT_GROUP: Code = ("125007", "DCM", "Measurement Group");
    pub const TRACKING_IDENTIFIER: Code = ("112039", "DCM", "Tracking Identifier");
    pub const TRACKING_UID: Code = ("112040", "DCM", "Tracking Unique Identifier");
    pub const FINDING: Code = ("121071", "DCM", "Finding");
    pub const IMAGE_ANOMALY: Code = ("ANOMALY", L, "Image anomaly");
    pub const ALGORITHM_NAME: Code = ("111001", "DCM", "Algorithm Name");
    pub const ALGORITHM_VERSION: Code = ("111003", "DCM", "Algorithm Version");
    pub const ALGORITHM_PARAMETERS: Code = ("111002", "DCM", "Algorithm Parameters");
    pub const REFERENCED_SEGMENT: Code = ("121191", "DCM", "Referenced Segment");
    pub const SOURCE_SERIES_FOR_SEGMENTATION: Code =
        ("121232", "DCM", "Source series for segmentation");
    pub const SOURCE_OF_MEASUREMENT: Code = ("121112", "DCM", "Source of Measurement");
    pub const SERIES_SCORE: Code = ("SERIESSCORE", L, "Series anomaly score");
    pub const TOP3_MEAN: Code = ("TOP3MEAN", L, "Mean of the 3 highest slice scores");
    pub const SLICES: Code = ("SLICES", L, "Scored slices");
    pub const FLAGGED_SLICES: Code = ("FLAGGED", L, "Slices at or above the threshold");
    pub const SCORE: Code = ("SCORE", L, "Calibrated anomaly score");
    pub const ZERO_SHOT_SCORE: Code = ("ZEROSHOT", L, "Zero-shot image score");
    pub const FEW_SHOT_SCORE: Code = ("FEWSHOT", L, "Few-shot image score");
    pub const THRESHOLD: Code = ("THRESHOLD", L, "Decision threshold");
    pub const THRESHOLD_MEANING: Code = ("THRMEANING", L, "Threshold meaning");
    pub const DECISION: Code = ("DECISION", L, "Decision");
    pub const ABNORMAL: Code = ("263654008", "SCT", "Abnormal");
    pub const NORMAL: Code = ("17621005", "SCT", "Normal");
    pub const SOURCE_FILE: Code = ("SOURCEFILE", L, "Source file");
}

/// A frame of a written Parametric Map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFrame {
    /// The Parametric Map.
    pub map: ObjectWritten,
    /// Its 1-based frame number.
    pub frame_number: u32,
}

/// One image's row of the score table, and what it references.
#[derive(Debug, Clone)]
pub struct SrImage {
    /// Its 1-based data row in `scores.csv`.
    pub csv_row: usize,
    /// Its `path` column (written only into identified reports).
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
    /// Its frame in the series' Parametric Map, when one was written.
    pub map_frame: Option<MapFrame>,
    /// Its Secondary Capture, when one was written.
    pub secondary_capture: Option<ObjectWritten>,
}

/// One source series' scores and result objects.
#[derive(Debug, Clone)]
pub struct SrSeries {
    /// Indices into the report's images of the series' frames, in slice order.
    pub images: Vec<usize>,
    /// Series score (the maximum slice score); `None` when no slice has a calibrated score
    /// (an uncalibrated detector): no score item, no decision.
    pub score: Option<f64>,
    /// Mean of the 3 highest slice scores.
    pub top3_mean: Option<f64>,
    /// Index (into the report's images) of the peak slice.
    pub peak: usize,
    /// Slices at or above the threshold (calibrated detectors only).
    pub flagged: Option<usize>,
    /// Its Parametric Map.
    pub parametric_map: Option<ObjectWritten>,
    /// Its Segmentation and the segment's tracking identifier and UID.
    pub segmentation: Option<(ObjectWritten, String, String)>,
}

/// The detector facts written into the report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SrDetector {
    /// SHA-256 of the checkpoint file (hex), when it was read.
    pub checkpoint_sha256: Option<String>,
    /// The organ word.
    pub organ: String,
    /// Calibration method; `None`: uncalibrated.
    pub calibration_method: Option<String>,
    /// Calibrated score at and above which an image is abnormal.
    pub threshold: Option<f64>,
    /// What the threshold means, e.g. "flags <= 5% of normal images (estimated from 33 normal
    /// exemplars)".
    pub threshold_meaning: Option<String>,
}

/// Report settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SrOptions {
    /// Default "MVFA measurement report".
    pub series_description: String,
    /// Default 9002.
    pub series_number: i32,
    /// Default 1.
    pub instance_number: i32,
    /// The report's series; `None` (default): a new one.
    pub series_instance_uid: Option<String>,
    /// The study when the images are not DICOM; `None`: new.
    pub study_instance_uid: Option<String>,
    /// De-identification: the export's settings (and key); `None`: identified.
    pub anonymise: Option<Anonymise>,
}

impl Default for SrOptions {
    fn default() -> Self {
        SrOptions {
            series_description: "MVFA measurement report".into(),
            series_number: 9002,
            instance_number: 1,
            series_instance_uid: None,
            study_instance_uid: None,
            anonymise: Some(Anonymise::default()),
        }
    }
}

/// What a written report is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrWritten {
    /// Its UIDs.
    pub object: ObjectWritten,
    /// Image results it carries.
    pub images: usize,
    /// Series results it carries.
    pub series: usize,
}

/// Writes the report of `images` (all of one study) and their `series` atomically to `path`.
pub fn write_results_sr(
    path: &Path,
    images: &[SrImage],
    series: &[SrSeries],
    detector: &SrDetector,
    opts: &SrOptions,
) -> Result<SrWritten, ExportError> {
    let obj = build_results_sr(images, series, detector, opts)?;
    Ok(SrWritten {
        object: write_object(path, obj)?,
        images: images.len(),
        series: series.len(),
    })
}

/// Builds the report's data set (without file meta); see the module docs.
pub fn build_results_sr(
    images: &[SrImage],
    series: &[SrSeries],
    detector: &SrDetector,
    opts: &SrOptions,
) -> Result<InMemDicomObject, ExportError> {
    let first = one_study(images)?;
    if let Some(bad) = series
        .iter()
        .find(|s| s.peak >= images.len() || s.images.iter().any(|&i| i >= images.len()))
    {
        return Err(ExportError::Invalid(format!(
            "a series refers to image {} of {}",
            bad.peak.max(bad.images.iter().copied().max().unwrap_or(0)) + 1,
            images.len()
        )));
    }
    let anon = opts.anonymise.as_ref();
    let mut obj = InMemDicomObject::new_empty();
    let study_uid = put_patient_and_study_of_sr(&mut obj, first, anon, opts);
    put_series_and_equipment(&mut obj, opts);
    put_document_general(&mut obj, first, anon, opts);
    put_evidence(&mut obj, images, series, anon, &study_uid);
    let report = Report {
        images,
        detector,
        anon,
    };
    put_content(&mut obj, &report, series);
    Ok(obj)
}

/// The first image, after checking that all images belong to its study.
fn one_study(images: &[SrImage]) -> Result<&SrImage, ExportError> {
    let first = images
        .first()
        .ok_or_else(|| ExportError::Invalid("a report needs at least one image".into()))?;
    let study = first.source.study_instance_uid();
    if let Some(other) = images
        .iter()
        .find(|i| i.source.study_instance_uid() != study)
    {
        return Err(ExportError::Invalid(format!(
            "the images of one report must share their study ({} differs from {})",
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
    // Copied for image objects; not part of an SR.
    for tag in [
        tags::FRAME_OF_REFERENCE_UID,
        tags::BODY_PART_EXAMINED,
        tags::STATION_NAME,
        tags::DEVICE_SERIAL_NUMBER,
    ] {
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
    put_str(obj, tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_SR_SOP_CLASS);
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
    put_str(obj, tags::PRELIMINARY_FLAG, VR::CS, "FINAL");
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
/// result objects of the export (pertinent other evidence): every instance the content
/// references.
fn put_evidence(
    obj: &mut InMemDicomObject,
    images: &[SrImage],
    series: &[SrSeries],
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
    let as_ref = |o: &ObjectWritten| {
        (
            o.series_instance_uid.clone(),
            o.sop_class_uid.clone(),
            o.sop_instance_uid.clone(),
        )
    };
    let results: Vec<(String, String, String)> = series
        .iter()
        .flat_map(|s| {
            s.parametric_map
                .iter()
                .chain(s.segmentation.iter().map(|(o, _, _)| o))
        })
        .chain(images.iter().filter_map(|i| i.secondary_capture.as_ref()))
        .map(as_ref)
        .collect();
    if !results.is_empty() {
        obj.put(evidence(
            tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE,
            study_uid,
            &results,
        ));
    }
}

/// What every measurement group of one report shares.
struct Report<'a> {
    images: &'a [SrImage],
    detector: &'a SrDetector,
    anon: Option<&'a Anonymise>,
}

/// SR Document Content: the root container with its context and the measurement groups.
fn put_content(obj: &mut InMemDicomObject, report: &Report, series: &[SrSeries]) {
    put_str(obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    obj.put(concept_name(DOCUMENT_TITLE));
    put_str(obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    obj.put(template("1500"));
    let mut groups: Vec<InMemDicomObject> = series
        .iter()
        .enumerate()
        .map(|(n, s)| series_group(report, n + 1, s))
        .collect();
    groups.extend(report.images.iter().map(|i| image_group(report, i)));
    let root = vec![
        code_item("HAS CONCEPT MOD", concepts::LANGUAGE, concepts::ENGLISH_US),
        code_item("HAS OBS CONTEXT", concepts::OBSERVER_TYPE, concepts::DEVICE),
        uidref_item(
            "HAS OBS CONTEXT",
            concepts::DEVICE_OBSERVER_UID,
            &device_observer_uid(),
        ),
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
        code_item(
            "HAS CONCEPT MOD",
            concepts::PROCEDURE_REPORTED,
            concepts::IMAGING_PROCEDURE,
        ),
        text_item("CONTAINS", concepts::COMMENT, RESEARCH_STATEMENT),
        container(concepts::IMAGING_MEASUREMENTS, None, groups),
    ];
    obj.put(sequence(tags::CONTENT_SEQUENCE, root));
}

/// The one UID of this program as an observer device (the same in every report).
fn device_observer_uid() -> String {
    derived_uid("mvfa-studio", "device observer")
}

/// Tracking items, finding and algorithm identification: how every group starts.
fn group_header(report: &Report, tracking_id: &str, tracking_uid: &str) -> Vec<InMemDicomObject> {
    let d = report.detector;
    let mut items = vec![
        text_item(
            "HAS OBS CONTEXT",
            concepts::TRACKING_IDENTIFIER,
            tracking_id,
        ),
        uidref_item("HAS OBS CONTEXT", concepts::TRACKING_UID, tracking_uid),
        code_item("CONTAINS", concepts::FINDING, concepts::IMAGE_ANOMALY),
        text_item(
            "HAS CONCEPT MOD",
            concepts::ALGORITHM_NAME,
            "MVFA few-shot anomaly detection (CLIP ViT-L/14-336, multi-level adapters)",
        ),
        text_item(
            "HAS CONCEPT MOD",
            concepts::ALGORITHM_VERSION,
            &format!("MVFA Studio {}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    let mut parameters = Vec::new();
    if let Some(sha) = &d.checkpoint_sha256 {
        parameters.push(format!("checkpoint sha256={sha}"));
    }
    parameters.push(format!("organ word={}", d.organ));
    parameters.push(format!(
        "calibration={}",
        d.calibration_method.as_deref().unwrap_or("uncalibrated")
    ));
    items.extend(
        parameters
            .iter()
            .map(|p| text_item("HAS CONCEPT MOD", concepts::ALGORITHM_PARAMETERS, p)),
    );
    items
}

/// The threshold, its meaning and the decision, when the detector is calibrated.
fn decision_items(d: &SrDetector, abnormal: Option<bool>) -> Vec<InMemDicomObject> {
    let mut items = Vec::new();
    if let Some(t) = d.threshold {
        items.push(num_item(concepts::THRESHOLD, t, SCORE_UNIT, Vec::new()));
        if let Some(meaning) = &d.threshold_meaning {
            items.push(text_item("CONTAINS", concepts::THRESHOLD_MEANING, meaning));
        }
    }
    if let Some(abnormal) = abnormal {
        let value = if abnormal {
            concepts::ABNORMAL
        } else {
            concepts::NORMAL
        };
        items.push(code_item("CONTAINS", concepts::DECISION, value));
    }
    items
}

/// Where an image's score comes from: its source image (and frame) and its Parametric Map
/// frame.
fn sources_of(report: &Report, image: &SrImage) -> Vec<InMemDicomObject> {
    let mut out = Vec::new();
    if let (Some(class), Some(inst)) = (
        image.source.sop_class_uid(),
        image.source.sop_instance_uid(),
    ) {
        out.push(image_item(
            "INFERRED FROM",
            concepts::SOURCE_OF_MEASUREMENT,
            class,
            &referenced_uid(report.anon, inst),
            image.frame_number,
            None,
        ));
    }
    if let Some(m) = &image.map_frame {
        out.push(image_item(
            "INFERRED FROM",
            concepts::SOURCE_OF_MEASUREMENT,
            PARAMETRIC_MAP_SOP_CLASS,
            &m.map.sop_instance_uid,
            Some(m.frame_number),
            None,
        ));
    }
    out
}

/// The measurement group of series `n` (TID 1411 with a Segmentation, else TID 1501).
fn series_group(report: &Report, n: usize, s: &SrSeries) -> InMemDicomObject {
    let d = report.detector;
    let peak = &report.images[s.peak];
    let (tracking_id, tracking_uid) = match &s.segmentation {
        Some((_, id, uid)) => (id.clone(), uid.clone()),
        None => (format!("series {n}"), new_uid()),
    };
    let mut items = group_header(report, &tracking_id, &tracking_uid);
    if let Some((seg, _, _)) = &s.segmentation {
        items.push(image_item(
            "CONTAINS",
            concepts::REFERENCED_SEGMENT,
            SEGMENTATION_SOP_CLASS,
            &seg.sop_instance_uid,
            None,
            Some(SEGMENT_NUMBER),
        ));
        let source_series = peak.source.series_instance_uid().unwrap_or_default();
        items.push(uidref_item(
            "CONTAINS",
            concepts::SOURCE_SERIES_FOR_SEGMENTATION,
            &referenced_uid(report.anon, source_series),
        ));
    }
    if let Some(score) = s.score {
        items.push(num_item(
            concepts::SERIES_SCORE,
            score,
            SCORE_UNIT,
            sources_of(report, peak),
        ));
    }
    if let Some(mean) = s.top3_mean {
        items.push(num_item(concepts::TOP3_MEAN, mean, SCORE_UNIT, Vec::new()));
    }
    items.push(num_item(
        concepts::SLICES,
        s.images.len() as f64,
        SLICES_UNIT,
        Vec::new(),
    ));
    if let Some(flagged) = s.flagged {
        items.push(num_item(
            concepts::FLAGGED_SLICES,
            flagged as f64,
            SLICES_UNIT,
            Vec::new(),
        ));
    }
    let abnormal = d.threshold.zip(s.score).map(|(t, score)| score >= t);
    items.extend(decision_items(d, abnormal));
    let template_id = if s.segmentation.is_some() {
        "1411"
    } else {
        "1501"
    };
    container(concepts::MEASUREMENT_GROUP, Some(template_id), items)
}

/// The measurement group of one image (TID 1501).
fn image_group(report: &Report, image: &SrImage) -> InMemDicomObject {
    let mut items = group_header(report, &format!("image {}", image.csv_row), &new_uid());
    if report.anon.is_none() {
        items.push(text_item("CONTAINS", concepts::SOURCE_FILE, &image.label));
    }
    if let Some(score) = image.score {
        items.push(num_item(
            concepts::SCORE,
            score,
            SCORE_UNIT,
            sources_of(report, image),
        ));
    }
    for (concept, value) in [
        (concepts::ZERO_SHOT_SCORE, image.zero_shot_score),
        (concepts::FEW_SHOT_SCORE, image.few_shot_score),
    ] {
        if let Some(v) = value {
            items.push(num_item(concept, v, NO_UNITS, Vec::new()));
        }
    }
    items.extend(decision_items(report.detector, image.abnormal));
    container(concepts::MEASUREMENT_GROUP, Some("1501"), items)
}

fn concept_name(concept: Code) -> DataElement<InMemDicomObject> {
    sequence(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code(concept)])
}

/// A Content Template Sequence naming DCMR template `id`.
fn template(id: &str) -> DataElement<InMemDicomObject> {
    sequence(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text_element(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
            text_element(tags::TEMPLATE_IDENTIFIER, VR::CS, id),
        ])],
    )
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

fn uidref_item(relationship: &str, concept: Code, uid: &str) -> InMemDicomObject {
    let mut i = item(relationship, "UIDREF", concept);
    i.put(text_element(tags::UID, VR::UI, uid));
    i
}

fn code_item(relationship: &str, concept: Code, value: Code) -> InMemDicomObject {
    let mut i = item(relationship, "CODE", concept);
    i.put(sequence(tags::CONCEPT_CODE_SEQUENCE, vec![code(value)]));
    i
}

/// A NUM item (CONTAINS) with its value, unit and child items.
fn num_item(
    concept: Code,
    value: f64,
    unit: Code,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut i = item("CONTAINS", "NUM", concept);
    i.put(sequence(
        tags::MEASURED_VALUE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text_element(tags::NUMERIC_VALUE, VR::DS, &ds(value)),
            DataElement::new(
                tags::FLOATING_POINT_VALUE,
                VR::FD,
                PrimitiveValue::from(value),
            ),
            sequence(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![code(unit)]),
        ])],
    ));
    if !children.is_empty() {
        i.put(sequence(tags::CONTENT_SEQUENCE, children));
    }
    i
}

/// A CONTAINS container, with a template when given.
fn container(
    concept: Code,
    template_id: Option<&str>,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut i = item("CONTAINS", "CONTAINER", concept);
    i.put(text_element(
        tags::CONTINUITY_OF_CONTENT,
        VR::CS,
        "SEPARATE",
    ));
    if let Some(id) = template_id {
        i.put(template(id));
    }
    if !children.is_empty() {
        i.put(sequence(tags::CONTENT_SEQUENCE, children));
    }
    i
}

/// An IMAGE item referencing `instance` (a frame of it, or a segment of a Segmentation).
fn image_item(
    relationship: &str,
    concept: Code,
    class: &str,
    instance: &str,
    frame: Option<u32>,
    segment: Option<u16>,
) -> InMemDicomObject {
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
    if let Some(s) = segment {
        reference.put(DataElement::new(
            tags::REFERENCED_SEGMENT_NUMBER,
            VR::US,
            PrimitiveValue::from(s),
        ));
    }
    let mut i = item(relationship, "IMAGE", concept);
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
