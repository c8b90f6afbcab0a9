//! DICOM Parametric Map (SOP Class 1.2.840.10008.5.1.4.1.1.30) of an anomaly map over one
//! source series: 32-bit float frames (Float Pixel Data), one per source frame, at the
//! source's size and geometry, so that OHIF (3.9 and later), 3D Slicer (QuantitativeReporting)
//! and Weasis lay it over the series as an overlay that can be toggled and queried.
//!
//! Besides what [`super::dicom_derived`] writes for every derived object:
//! - Parametric Map Series (Modality "OT") and Image: ImageType DERIVED\PRIMARY\VOLUME\NONE,
//!   Content Qualification RESEARCH, MONOCHROME2, 32 bits (no Bits Stored, High Bit or Pixel
//!   Representation, which float data must not have), no lossy compression, no burned-in
//!   text, Presentation LUT Shape IDENTITY, an empty Acquisition Context.
//! - Shared functional groups: the identity Pixel Value Transformation (slope 1, intercept 0,
//!   type "US": the modality LUT of a float map must be the identity), a Frame VOI LUT of the
//!   map's display range, the Parametric Map Frame Type, and one Real World Value Mapping that
//!   states the map's unit (UCUM), meaning (label and explanation) and value range.
//! - A recommended display colormap, when asked for: Pixel Presentation COLOR_RANGE, the
//!   Palette Color Lookup Table module with a 256-entry 16-bit LUT of the colormap, a Stored
//!   Value Color Range (shared group) that lays the display range on the LUT's first and last
//!   entries, and the ICC Profile module (sRGB, encoded by `moxcms`) the colours are defined
//!   in. Viewers without colour support show the grey map instead.
//! - Frame Anatomy (shared): Frame Laterality from the source (U when it states none) and the
//!   whole body as the region, so that General Series' Laterality is not needed.
//! - Each frame names its source frame ([`DERIVATION`]).
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::ExportError;
use super::dicom_derived::{
    DerivedFrame, DerivedOptions, Dimension, Placement, check_frames, check_planes,
    per_frame_groups, put_acquisition_context, put_common, put_dimensions, put_functional_groups,
    put_references, shared_geometry, slice_order,
};
use super::dicom_items::{Code, code_sequence, cs_values, ds_values, sequence, text_element, us};
use super::dicom_sc::{put_str, truncate};
use super::overlay::Colormap;

/// SOP Class UID of Parametric Map Storage.
pub const PARAMETRIC_MAP_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.30";

/// Derivation of each frame from its source (highdicom's choice for parametric maps).
pub const DERIVATION: Code = ("112187", "DCM", "Unspecified method of calculation");

/// Anatomic region of the Frame Anatomy group: the map covers whatever the source shows.
pub const WHOLE_BODY: Code = ("38266002", "SCT", "Entire body");

/// Image Type and Frame Type of the map.
const IMAGE_TYPE: [&str; 4] = ["DERIVED", "PRIMARY", "VOLUME", "NONE"];

/// What the map's values mean: the Real World Value Mapping of the object.
#[derive(Debug, Clone, PartialEq)]
pub struct MapQuantity {
    /// LUT Label (SH, at most 16 characters), e.g. "MVFA_FUSED".
    pub label: String,
    /// LUT Explanation (LO, at most 64): the meaning in a line.
    pub explanation: String,
    /// The unit as a UCUM code: (code value, meaning), e.g. ("{z}", "normal spreads").
    pub unit: (String, String),
    /// The map values at the two ends of the display window.
    pub display_range: (f64, f64),
    /// The smallest and largest value the map can hold (the Real World Value Mapping's first
    /// and last value mapped).
    pub value_range: (f64, f64),
}

/// The map of one series to write as a Parametric Map.
#[derive(Debug, Clone)]
pub struct ParametricMapInput<'a> {
    /// One per frame, in the order of `maps`.
    pub frames: Vec<DerivedFrame<'a>>,
    /// One map per frame, row-major, `rows * columns` values each.
    pub maps: Vec<&'a [f32]>,
    /// Rows of every map (the source's).
    pub rows: u32,
    /// Columns of every map.
    pub columns: u32,
    /// Meaning of the values.
    pub quantity: MapQuantity,
    /// The recommended display colormap over the display range; `None`: grey.
    pub palette: Option<Colormap>,
}

/// Builds the Parametric Map data set (without file meta); see the module docs. Frames are
/// written in slice order (along the normal) for a placed series.
pub fn build_parametric_map(
    input: &ParametricMapInput,
    opts: &DerivedOptions,
) -> Result<InMemDicomObject, ExportError> {
    let (rows, columns) = (input.rows, input.columns);
    let n = check_planes(
        "map",
        rows,
        columns,
        input.frames.len(),
        input.maps.iter().map(|m| m.len()),
    )?;
    let placement = check_frames(&input.frames)?;
    if placement == Placement::Unplaced {
        return Err(ExportError::Invalid(
            "a Parametric Map needs sources placed in the patient (Frame of Reference, Image \
             Position and Orientation, Pixel Spacing); this series has none"
                .into(),
        ));
    }
    let anon = opts.anonymise.as_ref();
    let mut obj = InMemDicomObject::new_empty();
    put_common(
        &mut obj,
        input.frames[0].source,
        placement,
        PARAMETRIC_MAP_SOP_CLASS,
        "OT",
        opts,
    );
    put_references(&mut obj, &input.frames, anon);
    put_acquisition_context(&mut obj);
    put_image(&mut obj, rows, columns);
    let order = slice_order(&input.frames, placement);
    put_dimensions(&mut obj, &dimensions(placement));
    let per_frame = order
        .iter()
        .enumerate()
        .map(|(rank, &i)| {
            per_frame_groups(
                &input.frames[i],
                placement,
                &[rank as u32 + 1],
                DERIVATION,
                anon,
            )
        })
        .collect();
    let mut shared = shared_geometry(&input.frames, placement);
    shared.extend(value_groups(&input.quantity));
    if let Some(colormap) = input.palette {
        put_palette(&mut obj, colormap)?;
        let (lo, hi) = input.quantity.display_range;
        shared.push(sequence(
            tags::STORED_VALUE_COLOR_RANGE_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                fd(tags::MINIMUM_STORED_VALUE_MAPPED, lo),
                fd(tags::MAXIMUM_STORED_VALUE_MAPPED, hi),
            ])],
        ));
    }
    shared.push(frame_anatomy(input.frames[0].source.laterality()));
    put_functional_groups(&mut obj, shared, per_frame);
    let mut pixels = Vec::with_capacity(n * input.maps.len() * 4);
    for &i in &order {
        for v in input.maps[i] {
            pixels.extend_from_slice(&v.to_le_bytes());
        }
    }
    obj.put(DataElement::new(
        tags::FLOAT_PIXEL_DATA,
        VR::OF,
        PrimitiveValue::from(pixels),
    ));
    Ok(obj)
}

/// Placed frames are indexed by their position along the normal; unplaced ones by their order.
fn dimensions(placement: Placement) -> Vec<Dimension> {
    match placement {
        Placement::Placed => vec![Dimension {
            pointer: tags::IMAGE_POSITION_PATIENT,
            group: tags::PLANE_POSITION_SEQUENCE,
            label: "Image Position (Patient)",
        }],
        Placement::Unplaced => vec![Dimension {
            pointer: tags::IN_STACK_POSITION_NUMBER,
            group: tags::FRAME_CONTENT_SEQUENCE,
            label: "Source frame",
        }],
    }
}

/// Parametric Map Image module and the Image Pixel attributes of 32-bit float data.
fn put_image(obj: &mut InMemDicomObject, rows: u32, columns: u32) {
    obj.put(cs_values(tags::IMAGE_TYPE, &IMAGE_TYPE));
    put_str(obj, tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME");
    put_str(obj, tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH");
    obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
    put_str(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    obj.put(us(tags::ROWS, rows as u16));
    obj.put(us(tags::COLUMNS, columns as u16));
    obj.put(us(tags::BITS_ALLOCATED, 32));
    put_str(obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(obj, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    put_str(obj, tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO");
    put_str(obj, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
}

/// Shared groups that say what a value means: frame type, identity modality LUT, display
/// window and real world value mapping.
fn value_groups(q: &MapQuantity) -> Vec<DataElement<InMemDicomObject>> {
    let (lo, hi) = q.display_range;
    let frame_type =
        InMemDicomObject::from_element_iter([cs_values(tags::FRAME_TYPE, &IMAGE_TYPE)]);
    let identity = InMemDicomObject::from_element_iter([
        text_element(tags::RESCALE_INTERCEPT, VR::DS, "0"),
        text_element(tags::RESCALE_SLOPE, VR::DS, "1"),
        text_element(tags::RESCALE_TYPE, VR::LO, "US"),
    ]);
    let window = InMemDicomObject::from_element_iter([
        ds_values(tags::WINDOW_CENTER, &[(lo + hi) / 2.0]),
        ds_values(tags::WINDOW_WIDTH, &[(hi - lo).max(1e-6)]),
    ]);
    let (unit_code, unit_meaning) = &q.unit;
    let mapping = InMemDicomObject::from_element_iter([
        text_element(tags::LUT_EXPLANATION, VR::LO, &truncate(&q.explanation, 64)),
        text_element(tags::LUT_LABEL, VR::SH, &truncate(&q.label, 16)),
        fd(
            tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_FIRST_VALUE_MAPPED,
            q.value_range.0,
        ),
        fd(
            tags::DOUBLE_FLOAT_REAL_WORLD_VALUE_LAST_VALUE_MAPPED,
            q.value_range.1,
        ),
        fd(tags::REAL_WORLD_VALUE_INTERCEPT, 0.0),
        fd(tags::REAL_WORLD_VALUE_SLOPE, 1.0),
        sequence(
            tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                text_element(tags::CODE_VALUE, VR::SH, unit_code),
                text_element(tags::CODING_SCHEME_DESIGNATOR, VR::SH, "UCUM"),
                text_element(tags::CODE_MEANING, VR::LO, unit_meaning),
            ])],
        ),
    ]);
    vec![
        sequence(tags::PARAMETRIC_MAP_FRAME_TYPE_SEQUENCE, vec![frame_type]),
        sequence(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, vec![identity]),
        sequence(tags::FRAME_VOILUT_SEQUENCE, vec![window]),
        sequence(tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE, vec![mapping]),
    ]
}

/// Pixel Presentation COLOR_RANGE, the palette of `colormap` (256 entries of 16 bits) and the
/// sRGB ICC profile its colours are in.
fn put_palette(obj: &mut InMemDicomObject, colormap: Colormap) -> Result<(), ExportError> {
    put_str(obj, tags::PIXEL_PRESENTATION, VR::CS, "COLOR_RANGE");
    let entries: Vec<[u8; 3]> = (0..256).map(|i| colormap.rgb(i as f32 / 255.0)).collect();
    let channels = [
        (
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
    ];
    for (c, (descriptor, data)) in channels.into_iter().enumerate() {
        // 256 entries (0 means 65536, so 256 is written as is), first stored value 0, 16 bits.
        obj.put(DataElement::new(
            descriptor,
            VR::US,
            PrimitiveValue::U16([256u16, 0, 16].into_iter().collect()),
        ));
        let values: Vec<u16> = entries.iter().map(|e| u16::from(e[c]) * 257).collect();
        obj.put(DataElement::new(
            data,
            VR::OW,
            PrimitiveValue::U16(values.into_iter().collect()),
        ));
    }
    let icc = moxcms::ColorProfile::new_srgb()
        .encode()
        .map_err(|e| ExportError::Invalid(format!("cannot encode the sRGB ICC profile: {e}")))?;
    let mut icc = icc;
    if icc.len() % 2 == 1 {
        icc.push(0);
    }
    obj.put(DataElement::new(
        tags::ICC_PROFILE,
        VR::OB,
        PrimitiveValue::from(icc),
    ));
    put_str(obj, tags::COLOR_SPACE, VR::CS, "SRGB");
    Ok(())
}

/// Frame Anatomy: the source's laterality (R, L or B; U when unknown) and the whole body.
fn frame_anatomy(laterality: Option<&str>) -> DataElement<InMemDicomObject> {
    let laterality = laterality
        .filter(|l| matches!(*l, "R" | "L" | "B"))
        .unwrap_or("U");
    sequence(
        tags::FRAME_ANATOMY_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text_element(tags::FRAME_LATERALITY, VR::CS, laterality),
            code_sequence(tags::ANATOMIC_REGION_SEQUENCE, WHOLE_BODY),
        ])],
    )
}

fn fd(tag: dicom_core::Tag, v: f64) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::FD, PrimitiveValue::from(v))
}
