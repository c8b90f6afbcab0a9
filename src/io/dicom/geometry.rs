//! Where each frame of an instance lies in the patient: what a derived object (Parametric Map,
//! Segmentation) copies so that a viewer lays it over its source. Read from the enhanced
//! functional groups per frame, else from the classic top-level attributes.
use dicom_dictionary_std::tags;

use super::attrs;

/// The geometry of one frame; each part is `None` when the source does not state it (a
/// projection radiograph has no Image Position).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FrameGeometry {
    /// Image Position (Patient): the centre of the first pixel, in mm.
    pub position: Option<[f64; 3]>,
    /// Image Orientation (Patient): row then column direction cosines.
    pub orientation: Option<[f64; 6]>,
    /// Pixel Spacing: between rows, then between columns, in mm.
    pub pixel_spacing: Option<[f64; 2]>,
    /// Slice Thickness in mm.
    pub slice_thickness: Option<f64>,
}

impl FrameGeometry {
    /// Whether the frame can be placed in a frame of reference (position, orientation and
    /// spacing all known).
    pub fn is_placed(&self) -> bool {
        self.position.is_some() && self.orientation.is_some() && self.pixel_spacing.is_some()
    }
}

/// The geometry of every frame of `obj` (`frames` of them, at least one). A multi-frame RT
/// Dose places its frames by Grid Frame Offset Vector along the normal from its one Image
/// Position.
pub fn frame_geometries(obj: &dicom_object::InMemDicomObject, frames: usize) -> Vec<FrameGeometry> {
    let mut geometries = read_geometries(obj, frames);
    let offsets = attrs::f64s(obj, tags::GRID_FRAME_OFFSET_VECTOR).unwrap_or_default();
    let per_frame = !attrs::items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).is_empty();
    if !per_frame && offsets.len() == geometries.len() && geometries.len() > 1 {
        for (g, offset) in geometries.iter_mut().zip(offsets) {
            if let (Some(p), Some(o)) = (g.position, g.orientation) {
                let n = [
                    o[1] * o[5] - o[2] * o[4],
                    o[2] * o[3] - o[0] * o[5],
                    o[0] * o[4] - o[1] * o[3],
                ];
                g.position = Some([
                    p[0] + offset * n[0],
                    p[1] + offset * n[1],
                    p[2] + offset * n[2],
                ]);
            }
        }
    }
    geometries
}

fn read_geometries(obj: &dicom_object::InMemDicomObject, frames: usize) -> Vec<FrameGeometry> {
    (0..frames.max(1))
        .map(|k| FrameGeometry {
            position: attrs::fixed::<3>(attrs::frame_f64s(
                obj,
                k,
                tags::PLANE_POSITION_SEQUENCE,
                tags::IMAGE_POSITION_PATIENT,
            )),
            orientation: attrs::fixed::<6>(attrs::frame_f64s(
                obj,
                k,
                tags::PLANE_ORIENTATION_SEQUENCE,
                tags::IMAGE_ORIENTATION_PATIENT,
            )),
            // A spacing of 0 (seen in real CR files) states nothing.
            pixel_spacing: attrs::fixed::<2>(attrs::frame_f64s(
                obj,
                k,
                tags::PIXEL_MEASURES_SEQUENCE,
                tags::PIXEL_SPACING,
            ))
            .filter(|s| s.iter().all(|v| v.is_finite() && *v > 0.0)),
            slice_thickness: attrs::frame_f64s(
                obj,
                k,
                tags::PIXEL_MEASURES_SEQUENCE,
                tags::SLICE_THICKNESS,
            )
            .and_then(|v| v.first().copied()),
        })
        .collect()
}
