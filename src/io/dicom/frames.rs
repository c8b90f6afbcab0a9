//! Which encapsulated fragments make up which frame, and a view of the object that hands the
//! decoders exactly one fragment per frame.
//!
//! `dicom-encoding` maps fragments to frames 1:1 when the counts match and through the basic
//! offset table otherwise; with an empty offset table (allowed by PS3.5 A.4) frames after the
//! first are then lost. Here frames are also found by their codestream start markers (JPEG
//! SOI, JPEG 2000 SOC or JP2 signature), as PS3.5 A.4 suggests.
#![deny(clippy::arithmetic_side_effects)]
use std::borrow::Cow;

use dicom_core::{DicomValue, Tag};
use dicom_dictionary_std::tags;
use dicom_encoding::adapters::{PixelDataObject, RawPixelData};
use dicom_object::DefaultDicomObject;

use super::ts;

/// The image attributes as this loader read them (tolerant of UN values and bad strings)
/// with the pixel data regrouped as one byte run per frame: what the decoders see.
pub(super) struct Framed {
    pub ts_uid: String,
    pub rows: u16,
    pub cols: u16,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub photometric: String,
    pub frames: Vec<Vec<u8>>,
}

impl PixelDataObject for Framed {
    fn transfer_syntax_uid(&self) -> &str {
        &self.ts_uid
    }
    fn rows(&self) -> Option<u16> {
        Some(self.rows)
    }
    fn cols(&self) -> Option<u16> {
        Some(self.cols)
    }
    fn samples_per_pixel(&self) -> Option<u16> {
        Some(self.samples_per_pixel)
    }
    fn bits_allocated(&self) -> Option<u16> {
        Some(self.bits_allocated)
    }
    fn bits_stored(&self) -> Option<u16> {
        Some(self.bits_stored)
    }
    fn photometric_interpretation(&self) -> Option<&str> {
        Some(&self.photometric)
    }
    fn number_of_frames(&self) -> Option<u32> {
        Some(self.frames.len() as u32)
    }
    fn number_of_fragments(&self) -> Option<u32> {
        Some(self.frames.len() as u32)
    }
    fn fragment(&self, fragment: usize) -> Option<Cow<'_, [u8]>> {
        self.frames
            .get(fragment)
            .map(|f| Cow::Borrowed(f.as_slice()))
    }
    fn offset_table(&self) -> Option<Cow<'_, [u32]>> {
        Some(Cow::Borrowed(&[]))
    }
    fn raw_pixel_data(&self) -> Option<RawPixelData> {
        Some(RawPixelData {
            fragments: self.frames.iter().cloned().collect(),
            offset_table: Default::default(),
        })
    }
}

fn starts_codestream(ts_uid: &str, fragment: &[u8]) -> bool {
    if ts::starts_with_soi(ts_uid) {
        fragment.starts_with(&[0xFF, 0xD8])
    } else if ts::is_jpeg2000(ts_uid) {
        fragment.starts_with(&[0xFF, 0x4F, 0xFF, 0x51])
            || fragment.starts_with(&[0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20])
    } else {
        // RLE and others: one fragment per frame (PS3.5 A.4.2); no marker to split by.
        false
    }
}

/// Why encapsulated fragments could not be grouped into frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum FragmentError {
    #[error("pixel data is not encapsulated")]
    NotEncapsulated,
    #[error("encapsulated pixel data has no fragments")]
    NoFragments,
    #[error("encapsulated pixel data has {fragments} fragment(s) for {frames} frames")]
    TooFew { fragments: usize, frames: usize },
    #[error(
        "cannot tell which of the {fragments} fragments belong to which of the {frames} frames \
         (no usable basic offset table, {starts} codestream starts found)"
    )]
    Ambiguous {
        fragments: usize,
        frames: usize,
        starts: usize,
    },
}

/// Groups the encapsulated fragments of `obj` into `frames` frames, or explains why not.
pub(super) fn group_fragments(
    obj: &DefaultDicomObject,
    frames: usize,
) -> Result<Vec<Vec<u8>>, FragmentError> {
    let seq = match obj.get(tags::PIXEL_DATA).map(|e| e.value()) {
        Some(DicomValue::PixelSequence(seq)) => seq,
        _ => return Err(FragmentError::NotEncapsulated),
    };
    let fragments: Vec<&[u8]> = seq.fragments().iter().map(|f| f.as_slice()).collect();
    if fragments.is_empty() {
        return Err(FragmentError::NoFragments);
    }
    if fragments.len() == frames {
        return Ok(fragments.iter().map(|f| f.to_vec()).collect());
    }
    if frames == 1 {
        return Ok(vec![fragments.concat()]);
    }
    if fragments.len() < frames {
        return Err(FragmentError::TooFew {
            fragments: fragments.len(),
            frames,
        });
    }
    // Basic offset table: byte offsets of each frame's first fragment item, counted from the
    // first item after the table (each item has an 8-byte header).
    let bot = seq.offset_table();
    if bot.len() == frames && bot.windows(2).all(|w| w[0] < w[1]) {
        let mut starts = Vec::with_capacity(fragments.len());
        let mut pos = 0u64;
        for f in &fragments {
            starts.push(pos);
            // Fragments are in memory: their lengths sum far below u64::MAX.
            pos = pos.saturating_add(f.len() as u64).saturating_add(8);
        }
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); frames];
        let mut ok = true;
        for (f, &start) in fragments.iter().zip(&starts) {
            // The frame whose offset is the largest one <= start.
            let k = bot.partition_point(|&o| u64::from(o) <= start);
            let Some(frame) = k.checked_sub(1).and_then(|k| out.get_mut(k)) else {
                ok = false;
                break;
            };
            frame.extend_from_slice(f);
        }
        if ok && out.iter().all(|f| !f.is_empty()) {
            return Ok(out);
        }
    }
    // Empty or unusable table: split at codestream starts.
    let ts_uid = obj.meta().transfer_syntax();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for f in &fragments {
        if out.is_empty() || starts_codestream(ts_uid, f) {
            out.push(f.to_vec());
        } else if let Some(last) = out.last_mut() {
            last.extend_from_slice(f);
        }
    }
    if out.len() == frames {
        Ok(out)
    } else {
        Err(FragmentError::Ambiguous {
            fragments: fragments.len(),
            frames,
            starts: out.len(),
        })
    }
}

/// Precision and signedness of the first component of a JPEG 2000 codestream (SIZ marker),
/// which decoders follow even when BitsStored/PixelRepresentation disagree with it.
pub(super) fn jpeg2000_precision(frame: &[u8]) -> Option<(u16, bool)> {
    let head = &frame[..frame.len().min(4096)];
    let pos = head
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    let ssiz = *head.get(pos.checked_add(2 + 40)?)?;
    Some((u16::from(ssiz & 0x7F) + 1, ssiz & 0x80 != 0))
}

/// Float or double-float pixel data present instead of (7FE0,0010)?
pub(super) fn has_float_pixel_data(obj: &DefaultDicomObject) -> bool {
    obj.get(Tag(0x7FE0, 0x0008)).is_some() || obj.get(Tag(0x7FE0, 0x0009)).is_some()
}
