//! DICOM Segmentation (SOP Class 1.2.840.10008.5.1.4.1.1.66.4), BINARY, of the anomalous
//! region of one source series: one segment, "Anomalous region", the pixels whose map is at or
//! above a level (the export's decision threshold carried to the pixel map), one frame per
//! source frame that has any such pixel. OHIF reads BINARY segmentations (not FRACTIONAL ones).
//!
//! Besides what [`super::dicom_derived`] writes for every derived object:
//! - Segmentation Series (Modality "SEG") and Image: ImageType DERIVED\PRIMARY, SegmentationType
//!   BINARY, 1 bit stored in 1 bit, MONOCHROME2, no lossy compression, Segments Overlap NO.
//! - The segment: number 1, its label, AUTOMATIC with the algorithm's name and family
//!   (Artificial Intelligence) and version, category (49755003, SCT, "Morphologically Abnormal
//!   Structure") and type (52988006, SCT, "Lesion"), a recommended display colour, and a
//!   tracking identifier and UID the measurement report repeats.
//! - Frames that hold no pixel of the region are left out, as the standard allows; a series
//!   whose every frame is empty gets no Segmentation at all ([`build_segmentation`] returns
//!   `None`), since an object needs at least one frame.
//! - Frames are indexed by segment number and by their position along the slice normal among
//!   the frames kept; pixel bits are packed least significant first and run on across frames.
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::ExportError;
use super::dicom_derived::{
    DerivedFrame, DerivedOptions, Dimension, Placement, check_frames, check_planes, has_thickness,
    per_frame_groups, put_common, put_dimensions, put_functional_groups, put_references,
    shared_geometry, slice_order,
};
use super::dicom_items::{Code, code_sequence, cs_values, sequence, text_element, us};
use super::dicom_sc::{put_str, truncate};

/// SOP Class UID of Segmentation Storage.
pub const SEGMENTATION_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// The segment's category.
pub const CATEGORY: Code = ("49755003", "SCT", "Morphologically Abnormal Structure");

/// The segment's type.
pub const PROPERTY_TYPE: Code = ("52988006", "SCT", "Lesion");

/// Derivation of each frame from its source.
pub const DERIVATION: Code = ("113076", "DCM", "Segmentation");

/// Algorithm family of the segment.
pub const ARTIFICIAL_INTELLIGENCE: Code = ("123110", "DCM", "Artificial Intelligence");

/// The one segment's number.
pub const SEGMENT_NUMBER: u16 = 1;

/// The segment of a Segmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Segment Label, e.g. "Anomalous region".
    pub label: String,
    /// Segment Description: how the region was cut from the map.
    pub description: String,
    /// Algorithm Name.
    pub algorithm_name: String,
    /// Algorithm Version.
    pub algorithm_version: String,
    /// Tracking Identifier, repeated by the measurement report.
    pub tracking_id: String,
    /// Tracking UID, repeated by the measurement report.
    pub tracking_uid: String,
}

/// The region of one series to write as a Segmentation.
#[derive(Debug, Clone)]
pub struct SegmentationInput<'a> {
    /// One per frame, in the order of `masks`.
    pub frames: Vec<DerivedFrame<'a>>,
    /// One mask per frame, row-major, `rows * columns` values each, `true` inside the region.
    pub masks: Vec<&'a [bool]>,
    /// Rows of every mask (the source's).
    pub rows: u32,
    /// Columns of every mask.
    pub columns: u32,
    /// The segment.
    pub segment: Segment,
}

/// Builds the Segmentation data set (without file meta), or `None` when no frame holds a pixel
/// of the region; see the module docs.
pub fn build_segmentation(
    input: &SegmentationInput,
    opts: &DerivedOptions,
) -> Result<Option<InMemDicomObject>, ExportError> {
    let (rows, columns) = (input.rows, input.columns);
    check_planes(
        "mask",
        rows,
        columns,
        input.frames.len(),
        input.masks.iter().map(|m| m.len()),
    )?;
    let mut placement = check_frames(&input.frames)?;
    if placement == Placement::Placed && !has_thickness(&input.frames) {
        // A placed Segmentation must state Slice Thickness; a single slice that does not
        // (seen in real MR files) is matched by its reference alone.
        placement = Placement::Unplaced;
    }
    let kept: Vec<usize> = slice_order(&input.frames, placement)
        .into_iter()
        .filter(|&i| input.masks[i].iter().any(|&b| b))
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    let anon = opts.anonymise.as_ref();
    let mut obj = InMemDicomObject::new_empty();
    put_common(
        &mut obj,
        input.frames[0].source,
        placement,
        SEGMENTATION_SOP_CLASS,
        "SEG",
        opts,
    );
    put_references(&mut obj, &input.frames, anon);
    put_image(&mut obj, rows, columns);
    put_segment(&mut obj, &input.segment);
    put_dimensions(&mut obj, &dimensions(placement));
    let per_frame = kept
        .iter()
        .enumerate()
        .map(|(rank, &i)| {
            let mut groups = per_frame_groups(
                &input.frames[i],
                placement,
                &[u32::from(SEGMENT_NUMBER), rank as u32 + 1],
                DERIVATION,
                anon,
            );
            groups.push(sequence(
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([us(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    SEGMENT_NUMBER,
                )])],
            ));
            groups
        })
        .collect();
    put_functional_groups(
        &mut obj,
        shared_geometry(&input.frames, placement),
        per_frame,
    );
    let masks: Vec<&[bool]> = kept.iter().map(|&i| input.masks[i]).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pack_bits(&masks)),
    ));
    Ok(Some(obj))
}

/// Frames are indexed by segment, then by their rank along the normal (or their order).
fn dimensions(placement: Placement) -> Vec<Dimension> {
    let segment = Dimension {
        pointer: tags::REFERENCED_SEGMENT_NUMBER,
        group: tags::SEGMENT_IDENTIFICATION_SEQUENCE,
        label: "Referenced Segment Number",
    };
    let position = match placement {
        Placement::Placed => Dimension {
            pointer: tags::IMAGE_POSITION_PATIENT,
            group: tags::PLANE_POSITION_SEQUENCE,
            label: "Image Position Patient",
        },
        Placement::Unplaced => Dimension {
            pointer: tags::IN_STACK_POSITION_NUMBER,
            group: tags::FRAME_CONTENT_SEQUENCE,
            label: "Source frame",
        },
    };
    vec![segment, position]
}

/// Segmentation Image module and the Image Pixel attributes of 1-bit data.
fn put_image(obj: &mut InMemDicomObject, rows: u32, columns: u32) {
    obj.put(cs_values(tags::IMAGE_TYPE, &["DERIVED", "PRIMARY"]));
    put_str(obj, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    obj.put(us(tags::SAMPLES_PER_PIXEL, 1));
    put_str(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    obj.put(us(tags::ROWS, rows as u16));
    obj.put(us(tags::COLUMNS, columns as u16));
    obj.put(us(tags::BITS_ALLOCATED, 1));
    obj.put(us(tags::BITS_STORED, 1));
    obj.put(us(tags::HIGH_BIT, 0));
    obj.put(us(tags::PIXEL_REPRESENTATION, 0));
    put_str(obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(obj, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
    put_str(obj, tags::SEGMENTS_OVERLAP, VR::CS, "NO");
}

/// The Segment Sequence of the one segment.
fn put_segment(obj: &mut InMemDicomObject, s: &Segment) {
    let algorithm = InMemDicomObject::from_element_iter([
        code_sequence(
            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
            ARTIFICIAL_INTELLIGENCE,
        ),
        text_element(
            tags::ALGORITHM_NAME,
            VR::LO,
            &truncate(&s.algorithm_name, 64),
        ),
        text_element(
            tags::ALGORITHM_VERSION,
            VR::LO,
            &truncate(&s.algorithm_version, 64),
        ),
    ]);
    // Recommended display colour: a saturated red in CIELab, scaled to 0..65535.
    let lab = PrimitiveValue::U16([34_866u16, 53_484, 50_171].into_iter().collect());
    let item = InMemDicomObject::from_element_iter([
        us(tags::SEGMENT_NUMBER, SEGMENT_NUMBER),
        text_element(tags::SEGMENT_LABEL, VR::LO, &truncate(&s.label, 64)),
        text_element(
            tags::SEGMENT_DESCRIPTION,
            VR::ST,
            &truncate(&s.description, 1024),
        ),
        text_element(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
        text_element(
            tags::SEGMENT_ALGORITHM_NAME,
            VR::LO,
            &truncate(&s.algorithm_name, 64),
        ),
        sequence(
            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
            vec![algorithm],
        ),
        code_sequence(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, CATEGORY),
        code_sequence(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, PROPERTY_TYPE),
        DataElement::new(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, VR::US, lab),
        text_element(tags::TRACKING_ID, VR::UT, &s.tracking_id),
        text_element(tags::TRACKING_UID, VR::UI, &s.tracking_uid),
    ]);
    obj.put(sequence(tags::SEGMENT_SEQUENCE, vec![item]));
}

/// Packs the masks' pixels one bit each, least significant bit first, running on across
/// frames, padded to an even number of bytes.
pub fn pack_bits(masks: &[&[bool]]) -> Vec<u8> {
    let total: usize = masks.iter().map(|m| m.len()).sum();
    let mut out = vec![0u8; total.div_ceil(8)];
    for (i, &bit) in masks.iter().flat_map(|m| m.iter()).enumerate() {
        if bit {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_run_on_across_frames_least_significant_first() {
        let a = [
            true, false, false, false, false, false, false, false, false, true,
        ];
        let b = [true, true, false];
        let packed = pack_bits(&[&a, &b]);
        // Pixels 0, 9, 10 and 11 are set: byte 0 = 0b0000_0001, byte 1 = 0b0000_1110.
        assert_eq!(packed, vec![0b0000_0001, 0b0000_1110]);
        assert_eq!(pack_bits(&[&[true; 9]]), vec![0xFF, 0x01]);
        assert_eq!(pack_bits(&[&[false; 3]]), vec![0, 0]);
    }
}
