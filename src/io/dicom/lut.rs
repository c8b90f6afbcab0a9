//! Lookup tables stored in the file: the Modality LUT Sequence and the Palette Color LUTs
//! (plain and segmented, PS3.3 C.7.6.3.1.5-6 and C.7.9.2).
use dicom_core::{PrimitiveValue, Tag};
use dicom_dictionary_std::tags;

use super::attrs::{self, Obj};

/// A LUT: output = `data[clamp(x - first_mapped, 0, len - 1)]`.
#[derive(Debug, Clone)]
pub(super) struct Lut {
    pub first_mapped: i64,
    pub data: Vec<u16>,
    /// Bits per entry (8 or 16): the output range is `0..2^bits`.
    pub bits: u16,
}

/// Largest LUT accepted (the descriptor allows at most 65536 entries; segmented LUTs are
/// expanded and could otherwise grow without bound).
const MAX_ENTRIES: usize = 65536;

impl Lut {
    pub fn lookup(&self, x: f64) -> u16 {
        if self.data.is_empty() {
            return 0;
        }
        let idx = (x.round() as i64).saturating_sub(self.first_mapped);
        let idx = idx.clamp(0, self.data.len() as i64 - 1) as usize;
        self.data[idx]
    }

    /// Largest value an entry can take: 255 or 65535.
    pub fn max_value(&self) -> f64 {
        if self.bits <= 8 { 255.0 } else { 65535.0 }
    }
}

/// Reads a LUT descriptor: (number of entries, first mapped value, bits per entry).
/// `signed_input` reinterprets a first-mapped value stored as US but meant as SS.
fn descriptor(obj: &Obj, tag: Tag, signed_input: bool) -> Option<(usize, i64, u16)> {
    let v = attrs::f64s(obj, tag)?;
    if v.len() < 3 {
        return None;
    }
    let entries = match v[0] as i64 {
        0 => 65536,
        n if n > 0 && n <= 65536 => n as usize,
        _ => return None,
    };
    let mut first = v[1] as i64;
    if signed_input && first > 32767 {
        first -= 65536;
    }
    let bits = v[2] as i64;
    if !(1..=16).contains(&bits) {
        return None;
    }
    Some((entries, first, bits as u16))
}

/// LUT data as 16-bit words in file order (little-endian byte pairs for byte values).
fn words(obj: &Obj, tag: Tag) -> Option<Vec<u16>> {
    match attrs::primitive(obj, tag)?.as_ref() {
        PrimitiveValue::U16(v) => Some(v.to_vec()),
        PrimitiveValue::I16(v) => Some(v.iter().map(|&x| x as u16).collect()),
        PrimitiveValue::U8(v) => Some(
            v.chunks(2)
                .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect(),
        ),
        other => {
            let b = other.to_bytes();
            Some(
                b.chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                    .collect(),
            )
        }
    }
}

/// Entries of a plain LUT. 8-bit entries are packed two per word (PS3.3 C.7.6.3.1.5), but
/// many writers store one 8-bit entry per word; the word count tells which.
fn entries(words: &[u16], n: usize, bits: u16) -> Option<Vec<u16>> {
    if bits > 8 {
        return (words.len() >= n).then(|| words[..n].to_vec());
    }
    if words.len() >= n {
        // One entry per word; values beyond 8 bits mean the entry sits in the high byte.
        let w = &words[..n];
        let high = w.iter().any(|&x| x > 255);
        return Some(w.iter().map(|&x| if high { x >> 8 } else { x }).collect());
    }
    let bytes: Vec<u16> = words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(u16::from)
        .collect();
    (bytes.len() >= n).then(|| bytes[..n].to_vec())
}

/// Expands a segmented LUT (C.7.9.2): discrete (0), linear (1) and indirect (2) segments.
fn expand_segmented(words: &[u16], limit: usize) -> Option<Vec<u16>> {
    let mut out: Vec<u16> = Vec::new();
    expand_into(words, limit, &mut out, 0)?;
    Some(out)
}

fn expand_into(words: &[u16], limit: usize, out: &mut Vec<u16>, depth: u32) -> Option<()> {
    if depth > 2 {
        return None; // indirect segments must not refer to indirect segments
    }
    let mut i = 0usize;
    while i < words.len() {
        let opcode = words[i];
        let len = *words.get(i + 1)? as usize;
        match opcode {
            0 => {
                let seg = words.get(i + 2..i + 2 + len)?;
                out.extend_from_slice(seg);
                i += 2 + len;
            }
            1 => {
                let y1 = *words.get(i + 2)? as f64;
                let y0 = *out.last()? as f64;
                for k in 1..=len {
                    let y = y0 + (y1 - y0) * k as f64 / len as f64;
                    out.push(y.round() as u16);
                }
                i += 3;
            }
            2 => {
                let lo = *words.get(i + 2)? as usize;
                let hi = *words.get(i + 3)? as usize;
                let offset = lo | (hi << 16);
                // Copy `len` segments starting at word `offset`.
                let mut j = offset;
                for _ in 0..len {
                    let op = *words.get(j)?;
                    let l = *words.get(j + 1)? as usize;
                    let seg_words = match op {
                        0 => 2 + l,
                        1 => 3,
                        _ => return None,
                    };
                    expand_into(words.get(j..j + seg_words)?, limit, out, depth + 1)?;
                    j += seg_words;
                }
                i += 4;
            }
            _ => return None,
        }
        if out.len() > limit {
            return None;
        }
    }
    Some(())
}

/// What is wrong with the palette of a PALETTE COLOR image (`name` is Red, Green or Blue).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PaletteError {
    #[error("PALETTE COLOR image without a valid {name} Palette Color Lookup Table Descriptor")]
    Descriptor { name: &'static str },
    #[error(
        "{name} Palette Color Lookup Table Data is shorter than its descriptor's {entries} entries"
    )]
    ShortData { name: &'static str, entries: usize },
    #[error("Segmented {name} Palette Color Lookup Table Data is invalid")]
    Segmented { name: &'static str },
    #[error("PALETTE COLOR image without {name} Palette Color Lookup Table Data")]
    NoData { name: &'static str },
    /// Not three tables (cannot happen: one is made per colour).
    #[error("palette")]
    Count,
}

/// The three palette LUTs of a PALETTE COLOR image, or a description of what is wrong.
pub(super) fn palette(obj: &Obj, signed_input: bool) -> Result<[Lut; 3], PaletteError> {
    let chans = [
        (
            "Red",
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            "Green",
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            "Blue",
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
    ];
    let mut luts = Vec::with_capacity(3);
    for (name, desc_tag, data_tag, seg_tag) in chans {
        let (n, first, bits) =
            descriptor(obj, desc_tag, signed_input).ok_or(PaletteError::Descriptor { name })?;
        let data = if let Some(w) = words(obj, data_tag) {
            entries(&w, n, bits).ok_or(PaletteError::ShortData { name, entries: n })?
        } else if let Some(w) = words(obj, seg_tag) {
            let mut e =
                expand_segmented(&w, MAX_ENTRIES).ok_or(PaletteError::Segmented { name })?;
            e.resize(n, *e.last().unwrap_or(&0));
            e
        } else {
            return Err(PaletteError::NoData { name });
        };
        // Some writers declare 16 bits but store 8-bit values, or the other way round.
        let max = data.iter().copied().max().unwrap_or(0);
        let bits = if bits <= 8 && max > 255 { 16 } else { bits };
        luts.push(Lut {
            first_mapped: first,
            data,
            bits,
        });
    }
    let [r, g, b]: [Lut; 3] = luts.try_into().map_err(|_| PaletteError::Count)?;
    Ok([r, g, b])
}

/// The LUT of one Modality or VOI LUT Sequence item (LUT Descriptor and LUT Data).
fn lut_item(item: &Obj, signed_input: bool) -> Option<Lut> {
    let (n, first, bits) = descriptor(item, tags::LUT_DESCRIPTOR, signed_input)?;
    let w = words(item, tags::LUT_DATA)?;
    let data = entries(&w, n, bits)?;
    Some(Lut {
        first_mapped: first,
        data,
        bits,
    })
}

/// The first item of a Modality LUT Sequence (0028,3000), when present and valid.
pub(super) fn modality_lut(obj: &Obj, signed_input: bool) -> Option<Lut> {
    lut_item(
        attrs::items(obj, tags::MODALITY_LUT_SEQUENCE).first()?,
        signed_input,
    )
}

/// The valid items of a VOI LUT Sequence (0028,3010), each with its LUT Explanation.
/// `signed_input`: the modality values they map can be negative.
pub(super) fn voi_luts(obj: &Obj, signed_input: bool) -> Vec<(Lut, Option<String>)> {
    attrs::items(obj, tags::VOILUT_SEQUENCE)
        .iter()
        .filter_map(|item| {
            let lut = lut_item(item, signed_input).filter(|l| !l.data.is_empty())?;
            Some((lut, attrs::string(item, tags::LUT_EXPLANATION)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmented_lut_discrete_linear_indirect() {
        // discrete [0, 10], linear to 20 over 2 steps, then an indirect copy of the first
        // segment (offset 0, 1 segment).
        let words = [0u16, 2, 0, 10, 1, 2, 20, 2, 1, 0, 0];
        let out = expand_segmented(&words, 100).unwrap();
        assert_eq!(out, vec![0, 10, 15, 20, 0, 10]);
    }

    #[test]
    fn segmented_lut_garbage_is_rejected() {
        assert!(expand_segmented(&[7, 1, 2], 100).is_none());
        assert!(expand_segmented(&[1, 3, 5], 100).is_none()); // linear without a start value
        assert!(expand_segmented(&[0, 60000], 100).is_none());
    }

    #[test]
    fn lut_lookup_clamps() {
        let lut = Lut {
            first_mapped: -2,
            data: vec![5, 6, 7],
            bits: 8,
        };
        assert_eq!(lut.lookup(-10.0), 5);
        assert_eq!(lut.lookup(-1.0), 6);
        assert_eq!(lut.lookup(100.0), 7);
    }

    #[test]
    fn packed_and_unpacked_8bit_entries() {
        // 4 entries packed two per word (little endian) and one per word.
        assert_eq!(entries(&[0x0201, 0x0403], 4, 8).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(entries(&[1, 2, 3, 4], 4, 8).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(entries(&[0x0100, 0x0200], 2, 8).unwrap(), vec![1, 2]);
    }
}
