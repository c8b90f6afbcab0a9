//! Overlay planes (PS3.3 C.9.2, repeating groups 6000-601E) with their own Overlay Data:
//! bitmaps the viewer draws over the image. They never enter the frames, so the model input
//! (built from the frames) never sees them. Overlays embedded in unused high bits of the pixel
//! data (retired) are not read; those bits are masked off with the rest of the unused bits.
#![deny(clippy::arithmetic_side_effects)]
use dicom_core::Tag;

use super::MAX_SAMPLES;
use super::attrs::{self, Obj};
use crate::io::image::OverlayPlane;

/// The overlay planes of a data set; malformed ones (missing or short Overlay Data, sizes
/// out of bounds) are skipped.
pub(super) fn overlay_planes(ds: &Obj) -> Vec<OverlayPlane> {
    (0x6000u16..=0x601E)
        .step_by(2)
        .filter_map(|group| plane(ds, group))
        .collect()
}

fn plane(ds: &Obj, group: u16) -> Option<OverlayPlane> {
    let t = |element| Tag(group, element);
    let rows = u32::try_from(attrs::int_opt(ds, t(0x0010))?).ok()?;
    let columns = u32::try_from(attrs::int_opt(ds, t(0x0011))?).ok()?;
    if attrs::int_opt(ds, t(0x0100)).is_some_and(|bits| bits != 1) {
        return None;
    }
    let frames = attrs::int_opt(ds, t(0x0015)).unwrap_or(1);
    let frames = usize::try_from(frames).ok().filter(|&f| f >= 1)?;
    let per_frame = (rows as usize).checked_mul(columns as usize)?;
    let bits = per_frame.checked_mul(frames)?;
    if per_frame == 0 || bits as u64 > MAX_SAMPLES {
        return None;
    }
    let data = attrs::primitive(ds, t(0x3000))?.to_bytes().into_owned();
    if data.len().saturating_mul(8) < bits {
        return None;
    }
    // Bits are packed row-major, least significant bit first, frames back to back: bit i of
    // the whole run is bit `i % 8` of byte `i / 8`, for i below `bits`.
    let run: Vec<u8> = data
        .iter()
        .flat_map(|&byte| (0..8).map(move |b| (byte >> b) & 1))
        .take(bits)
        .collect();
    let bitmaps = run.chunks_exact(per_frame).map(<[u8]>::to_vec).collect();
    let origin = attrs::f64s(ds, t(0x0050)).unwrap_or_default();
    // OverlayOrigin is 1-based; `as` saturates out-of-range values.
    let one_based = |i: usize| origin.get(i).map_or(0, |&v| (v as i32).saturating_sub(1));
    let first_frame = attrs::int_opt(ds, t(0x0051))
        .unwrap_or(1)
        .max(1)
        .saturating_sub(1);
    Some(OverlayPlane {
        group,
        rows,
        columns,
        origin: (one_based(0), one_based(1)),
        kind: attrs::string(ds, t(0x0040)).unwrap_or_else(|| "G".to_string()),
        label: attrs::string(ds, t(0x1500)),
        description: attrs::string(ds, t(0x0022)),
        first_frame: usize::try_from(first_frame).unwrap_or(0),
        frames: bitmaps,
    })
}
