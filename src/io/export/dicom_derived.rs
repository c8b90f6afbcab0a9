//! What the enhanced multi-frame objects derived from a source series share: the Parametric
//! Map ([`super::dicom_pm`]) and the Segmentation ([`super::dicom_seg`]). One object covers one
//! source series, one frame per source frame, laid at the source's geometry so that a viewer
//! (OHIF, 3D Slicer, Weasis) toggles it as an overlay on that series.
//!
//! Written here:
//! - Patient and General Study of the source, de-identified like every export
//!   ([`super::dicom_sc::put_patient_and_study`]): an identified object goes into the source's
//!   own study as a new series, beside the scan.
//! - General Series (a new series), Frame of Reference (the source's, its UID derived under
//!   de-identification), Enhanced General Equipment (ours), Content Identification, Multi-frame
//!   Functional Groups and Multi-frame Dimension, Common Instance Reference (the source series
//!   and instances), SOP Common.
//! - Shared functional groups: Pixel Measures and Plane Orientation (from the first source
//!   frame; every frame must share them). Per frame: Frame Content (its dimension index),
//!   Plane Position (the source frame's Image Position) and Derivation Image (the source
//!   instance, and its frame number for a multi-frame source).
//!
//! A source without a placed geometry (a projection radiograph without Image Position) gives
//! an object without Frame of Reference and Plane Position; frames are then indexed by their
//! source frame alone.
use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

use super::ExportError;
use super::atomic::write_atomically;
use super::dicom_items::{
    Code, at, code, code_sequence, ds_values, empty_sequence, sequence, text_element, ul,
};
use super::dicom_sc::{
    Anonymise, SourceAttributes, new_uid, now_da_tm, own_date, put_own_dates,
    put_patient_and_study, put_str, referenced_uid, str_of, truncate,
};
use crate::io::dicom::FrameGeometry;

/// Purpose of reference of a source image (CID 7202).
pub const SOURCE_FOR_PROCESSING: Code = (
    "121322",
    "DCM",
    "Source image for image processing operation",
);

/// One frame of a derived object: the source instance and its 0-based frame.
#[derive(Debug, Clone, Copy)]
pub struct DerivedFrame<'a> {
    /// The source instance (its attributes, read from its file).
    pub source: &'a SourceAttributes,
    /// 0-based frame within the source.
    pub frame: usize,
}

impl DerivedFrame<'_> {
    fn geometry(&self) -> FrameGeometry {
        self.source.frame_geometry(self.frame)
    }

    /// The Referenced Frame Number of the frame: for multi-frame sources only.
    fn frame_number(&self) -> Option<u32> {
        (self.source.frames() > 1).then(|| self.frame as u32 + 1)
    }
}

/// Series settings of a derived object.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedOptions {
    /// Series Description.
    pub series_description: String,
    /// Series Number.
    pub series_number: i32,
    /// Instance Number.
    pub instance_number: i32,
    /// The object's series; `None`: a new one.
    pub series_instance_uid: Option<String>,
    /// Content Label (CS: capitals, digits, underscore, at most 16).
    pub content_label: String,
    /// Content Description.
    pub content_description: String,
    /// De-identification (the export's key); `None`: identified, in the source's study.
    pub anonymise: Option<Anonymise>,
}

/// How the frames are placed: in a frame of reference, or by their source frame only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Placement {
    /// Every frame has a position, one orientation and one spacing, and the sources a Frame
    /// of Reference.
    Placed,
    /// Not placed: no Frame of Reference, no Plane Position.
    Unplaced,
}

/// Checks that `planes` (one per frame) each hold `rows x columns` values that DICOM can store
/// (1..=65535 rows and columns) and returns the values per plane; `what` names them ("map").
pub(super) fn check_planes(
    what: &str,
    rows: u32,
    columns: u32,
    frames: usize,
    planes: impl ExactSizeIterator<Item = usize>,
) -> Result<usize, ExportError> {
    if rows == 0 || columns == 0 || rows > 65535 || columns > 65535 {
        return Err(ExportError::Invalid(format!(
            "a {what} of {columns}x{rows} cannot be stored (1..=65535 rows and columns)"
        )));
    }
    let n = rows as usize * columns as usize;
    if planes.len() != frames {
        return Err(ExportError::Invalid(format!(
            "{} {what}s for {frames} frames",
            planes.len()
        )));
    }
    for len in planes {
        if len != n {
            return Err(ExportError::Invalid(format!(
                "a {what} has {len} values, not {columns} x {rows}"
            )));
        }
    }
    Ok(n)
}

/// Whether `frames` lie in a frame of reference, each with a position, and share one
/// orientation and spacing: what a Parametric Map needs (a Segmentation does without).
pub fn is_placed(frames: &[DerivedFrame]) -> bool {
    check_frames(frames).is_ok_and(|p| p == Placement::Placed)
}

/// Checks that `frames` can make one derived object: at least one, all DICOM, of one study
/// and one series; and finds whether they are placed.
pub(super) fn check_frames(frames: &[DerivedFrame]) -> Result<Placement, ExportError> {
    let invalid = |m: String| Err(ExportError::Invalid(m));
    let Some(first) = frames.first() else {
        return invalid("a derived object needs at least one frame".into());
    };
    for f in frames {
        if f.source.sop_instance_uid().is_none() || f.source.sop_class_uid().is_none() {
            return invalid(
                "a Parametric Map or Segmentation needs DICOM sources (SOP Class and Instance UIDs)"
                    .into(),
            );
        }
        if f.source.series_instance_uid() != first.source.series_instance_uid()
            || f.source.study_instance_uid() != first.source.study_instance_uid()
        {
            return invalid(
                "the frames of one Parametric Map or Segmentation must come from one series".into(),
            );
        }
        if f.frame >= f.source.frames() {
            return invalid(format!(
                "frame {} is past the source's {} frames",
                f.frame + 1,
                f.source.frames()
            ));
        }
    }
    let g0 = first.geometry();
    let placed = first.source.frame_of_reference_uid().is_some()
        && frames.iter().all(|f| {
            let g = f.geometry();
            g.is_placed()
                && f.source.frame_of_reference_uid() == first.source.frame_of_reference_uid()
                && close(
                    &g.orientation.unwrap_or_default(),
                    &g0.orientation.unwrap_or_default(),
                )
                && close(
                    &g.pixel_spacing.unwrap_or_default(),
                    &g0.pixel_spacing.unwrap_or_default(),
                )
        });
    Ok(if placed {
        Placement::Placed
    } else {
        Placement::Unplaced
    })
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4)
}

/// Patient, study, series, frame of reference, equipment, content identification and dates of
/// a derived object of class `sop_class` and modality `modality`; returns the SOP Instance
/// UID written.
pub(super) fn put_common(
    obj: &mut InMemDicomObject,
    first: &SourceAttributes,
    placement: Placement,
    sop_class: &str,
    modality: &str,
    opts: &DerivedOptions,
) -> String {
    let anon = opts.anonymise.as_ref();
    put_patient_and_study(obj, first, anon, None);
    // The source's device is not ours: Enhanced General Equipment below names this program.
    for tag in [tags::STATION_NAME, tags::DEVICE_SERIAL_NUMBER] {
        obj.remove_element(tag);
    }
    if placement == Placement::Unplaced {
        obj.remove_element(tags::FRAME_OF_REFERENCE_UID);
        // Type 2C without a Plane Orientation: the source's, else empty.
        let orientation = first.patient_orientation().unwrap_or_default();
        put_str(obj, tags::PATIENT_ORIENTATION, VR::CS, &orientation);
    } else {
        obj.put(DataElement::new(
            tags::POSITION_REFERENCE_INDICATOR,
            VR::LO,
            PrimitiveValue::Empty,
        ));
    }
    put_str(obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    let sop_uid = new_uid();
    put_str(obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_str(obj, tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    let series_uid = opts.series_instance_uid.clone().unwrap_or_else(new_uid);
    put_str(obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put_str(obj, tags::MODALITY, VR::CS, modality);
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
    put_str(
        obj,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &opts.instance_number.to_string(),
    );
    for (tag, value) in [
        (tags::MANUFACTURER, "MVFA Studio"),
        (tags::MANUFACTURER_MODEL_NAME, "MVFA Studio"),
        (tags::DEVICE_SERIAL_NUMBER, "1"),
        (tags::SOFTWARE_VERSIONS, env!("CARGO_PKG_VERSION")),
    ] {
        put_str(obj, tag, VR::LO, value);
    }
    put_str(
        obj,
        tags::CONTENT_LABEL,
        VR::CS,
        &truncate(&opts.content_label, 16),
    );
    put_str(
        obj,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        &truncate(&opts.content_description, 64),
    );
    put_str(obj, tags::CONTENT_CREATOR_NAME, VR::PN, "MVFA^Studio");
    let (today, time) = now_da_tm();
    match own_date(first, anon, &today) {
        Some(date) => put_own_dates(obj, &date, &time),
        None => {
            // Type 1 in the Multi-frame Functional Groups module: a dummy value (PS3.15 D).
            put_str(obj, tags::CONTENT_DATE, VR::DA, "19000101");
            put_str(obj, tags::CONTENT_TIME, VR::TM, "000000");
        }
    }
    sop_uid
}

/// Common Instance Reference: the source series and its instances (UIDs derived under
/// de-identification), in first-seen order.
pub(super) fn put_references(
    obj: &mut InMemDicomObject,
    frames: &[DerivedFrame],
    anon: Option<&Anonymise>,
) {
    let first = frames[0].source;
    let mut seen: Vec<&str> = Vec::new();
    let mut instances = Vec::new();
    for f in frames {
        let (Some(class), Some(inst)) = (f.source.sop_class_uid(), f.source.sop_instance_uid())
        else {
            continue;
        };
        if seen.contains(&inst) {
            continue;
        }
        seen.push(inst);
        instances.push(InMemDicomObject::from_element_iter([
            text_element(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
            text_element(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                &referenced_uid(anon, inst),
            ),
        ]));
    }
    let series = referenced_uid(anon, first.series_instance_uid().unwrap_or_default());
    obj.put(sequence(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text_element(tags::SERIES_INSTANCE_UID, VR::UI, &series),
            sequence(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
        ])],
    ));
}

/// One dimension of the Multi-frame Dimension module: the attribute indexed and the functional
/// group that holds it.
pub(super) struct Dimension {
    pub pointer: Tag,
    pub group: Tag,
    pub label: &'static str,
}

/// Multi-frame Dimension module with `dimensions` under one new organization.
pub(super) fn put_dimensions(obj: &mut InMemDicomObject, dimensions: &[Dimension]) {
    let organization = new_uid();
    obj.put(sequence(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([text_element(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            &organization,
        )])],
    ));
    let items = dimensions
        .iter()
        .map(|d| {
            InMemDicomObject::from_element_iter([
                text_element(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization),
                at(tags::DIMENSION_INDEX_POINTER, d.pointer),
                at(tags::FUNCTIONAL_GROUP_POINTER, d.group),
                text_element(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, d.label),
            ])
        })
        .collect();
    obj.put(sequence(tags::DIMENSION_INDEX_SEQUENCE, items));
}

/// The shared geometry groups (Pixel Measures, Plane Orientation) of placed frames, from the
/// first frame; an unplaced object gets Pixel Measures only where the source states a
/// spacing. A placed source without Slice Thickness (an RT Dose grid) gets the distance
/// between its planes instead, which the Pixel Measures of a placed object require.
pub(super) fn shared_geometry(
    frames: &[DerivedFrame],
    placement: Placement,
) -> Vec<DataElement<InMemDicomObject>> {
    let g = frames[0].geometry();
    let mut out = Vec::new();
    if let Some(spacing) = g.pixel_spacing {
        let mut measures =
            InMemDicomObject::from_element_iter([ds_values(tags::PIXEL_SPACING, &spacing)]);
        let thickness = g.slice_thickness.or_else(|| {
            (placement == Placement::Placed)
                .then(|| plane_spacing(frames))
                .flatten()
        });
        if let Some(t) = thickness {
            measures.put(ds_values(tags::SLICE_THICKNESS, &[t]));
        }
        out.push(sequence(tags::PIXEL_MEASURES_SEQUENCE, vec![measures]));
    }
    if placement == Placement::Placed
        && let Some(orientation) = g.orientation
    {
        out.push(sequence(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([ds_values(
                tags::IMAGE_ORIENTATION_PATIENT,
                &orientation,
            )])],
        ));
    }
    out
}

/// Whether a placed object of `frames` can state its Slice Thickness (the source's, or the
/// distance between its planes), which a placed Segmentation must.
pub(super) fn has_thickness(frames: &[DerivedFrame]) -> bool {
    frames[0].geometry().slice_thickness.is_some() || plane_spacing(frames).is_some()
}

/// The smallest distance between two planes of placed `frames` along their normal; `None` for a
/// single plane.
fn plane_spacing(frames: &[DerivedFrame]) -> Option<f64> {
    let mut along: Vec<f64> = frames.iter().map(|f| along_normal(&f.geometry())).collect();
    along.sort_by(f64::total_cmp);
    along
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 1e-6)
        .min_by(f64::total_cmp)
}

/// The position of a placed frame along its orientation's normal.
fn along_normal(g: &FrameGeometry) -> f64 {
    let o = g.orientation.unwrap_or_default();
    let p = g.position.unwrap_or_default();
    let n = [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ];
    p[0] * n[0] + p[1] * n[1] + p[2] * n[2]
}

/// A frame's Plane Position (placed frames only), Frame Content with `index` as its dimension
/// index values, and Derivation Image naming its source frame with `derivation` as the
/// derivation code.
pub(super) fn per_frame_groups(
    frame: &DerivedFrame,
    placement: Placement,
    index: &[u32],
    derivation: Code,
    anon: Option<&Anonymise>,
) -> Vec<DataElement<InMemDicomObject>> {
    let mut content =
        InMemDicomObject::from_element_iter([ul(tags::DIMENSION_INDEX_VALUES, index)]);
    if placement == Placement::Unplaced {
        // The stack position is the dimension of unplaced frames: the last index value.
        content.put(text_element(tags::STACK_ID, VR::SH, "1"));
        content.put(ul(
            tags::IN_STACK_POSITION_NUMBER,
            &index[index.len() - 1..],
        ));
    }
    let mut out = vec![sequence(tags::FRAME_CONTENT_SEQUENCE, vec![content])];
    if placement == Placement::Placed
        && let Some(position) = frame.geometry().position
    {
        out.push(sequence(
            tags::PLANE_POSITION_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([ds_values(
                tags::IMAGE_POSITION_PATIENT,
                &position,
            )])],
        ));
    }
    let source = frame.source;
    let mut reference = InMemDicomObject::from_element_iter([
        text_element(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            source.sop_class_uid().unwrap_or_default(),
        ),
        text_element(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            &referenced_uid(anon, source.sop_instance_uid().unwrap_or_default()),
        ),
        code_sequence(
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            SOURCE_FOR_PROCESSING,
        ),
        text_element(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"),
    ]);
    if let Some(n) = frame.frame_number() {
        reference.put(text_element(
            tags::REFERENCED_FRAME_NUMBER,
            VR::IS,
            &n.to_string(),
        ));
    }
    out.push(sequence(
        tags::DERIVATION_IMAGE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            sequence(tags::DERIVATION_CODE_SEQUENCE, vec![code(derivation)]),
            sequence(tags::SOURCE_IMAGE_SEQUENCE, vec![reference]),
        ])],
    ));
    out
}

/// Puts `NumberOfFrames`, the shared and the per-frame functional groups.
pub(super) fn put_functional_groups(
    obj: &mut InMemDicomObject,
    shared: Vec<DataElement<InMemDicomObject>>,
    per_frame: Vec<Vec<DataElement<InMemDicomObject>>>,
) {
    put_str(
        obj,
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        &per_frame.len().to_string(),
    );
    obj.put(sequence(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![InMemDicomObject::from_element_iter(shared)],
    ));
    obj.put(sequence(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        per_frame
            .into_iter()
            .map(InMemDicomObject::from_element_iter)
            .collect(),
    ));
}

/// The order in which a derived object of `frames` writes them: along the slice normal when
/// they are placed, else as given.
pub fn frame_order(frames: &[DerivedFrame]) -> Vec<usize> {
    match check_frames(frames) {
        Ok(placement) => slice_order(frames, placement),
        Err(_) => (0..frames.len()).collect(),
    }
}

/// The sorted order of `frames` along the slice normal (by Image Position projected on the
/// normal of the orientation), or by source frame for unplaced frames; ties keep their order.
pub(super) fn slice_order(frames: &[DerivedFrame], placement: Placement) -> Vec<usize> {
    let mut order: Vec<usize> = (0..frames.len()).collect();
    if placement == Placement::Placed {
        let key = |i: usize| along_normal(&frames[i].geometry());
        order.sort_by(|&a, &b| key(a).total_cmp(&key(b)));
    }
    order
}

/// Acquisition Context (type 2, empty): the derived object has no acquisition of its own.
pub(super) fn put_acquisition_context(obj: &mut InMemDicomObject) {
    obj.put(empty_sequence(tags::ACQUISITION_CONTEXT_SEQUENCE));
}

/// What a written DICOM object is: its UIDs and frame count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectWritten {
    /// Its SOP Class UID.
    pub sop_class_uid: String,
    /// Its SOP Instance UID.
    pub sop_instance_uid: String,
    /// Its series.
    pub series_instance_uid: String,
    /// Its study.
    pub study_instance_uid: String,
    /// Number of Frames (1 for a single-frame object or a document).
    pub frames: usize,
}

impl ObjectWritten {
    /// The UIDs of a built data set.
    pub fn of(obj: &InMemDicomObject) -> Self {
        ObjectWritten {
            sop_class_uid: str_of(obj, tags::SOP_CLASS_UID),
            sop_instance_uid: str_of(obj, tags::SOP_INSTANCE_UID),
            series_instance_uid: str_of(obj, tags::SERIES_INSTANCE_UID),
            study_instance_uid: str_of(obj, tags::STUDY_INSTANCE_UID),
            frames: str_of(obj, tags::NUMBER_OF_FRAMES)
                .trim()
                .parse()
                .unwrap_or(1),
        }
    }
}

/// Writes a built data set atomically as a DICOM file in explicit VR little endian.
pub fn write_object(path: &Path, obj: InMemDicomObject) -> Result<ObjectWritten, ExportError> {
    let written = ObjectWritten::of(&obj);
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| ExportError::write(path, super::atomic::error_chain(&e)))?;
    write_atomically(path, |w| Ok(file.write_all(w)?))?;
    Ok(written)
}
