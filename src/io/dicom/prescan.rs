//! A header walk over the data set before `dicom-object` parses it, to refuse what would
//! make the parser allocate absurd amounts or recurse without bound.
//!
//! `dicom-parser` reserves and zero-fills a value's declared length before reading it, so a
//! 700-byte file declaring a 3.7 GB element costs 3.7 GB of memory and tens of seconds before
//! the read fails; deeply nested sequences recurse on the stack, and a stack overflow aborts
//! the process. This walk reads only element headers (seeking over values), follows the same
//! encoding rules (explicit/implicit VR, little/big endian, defined and undefined lengths,
//! items and delimiters) the way `dicom-parser` applies them, and reports a declared length that exceeds the bytes left in the
//! file or a nesting deeper than [`MAX_DEPTH`]. When the structure stops making sense it
//! stops checking and leaves the diagnosis to the parser, so it never rejects what the
//! parser would accept.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Deepest sequence nesting accepted (real files rarely exceed 10).
pub(super) const MAX_DEPTH: usize = 64;

pub(super) trait Source {
    fn len(&self) -> u64;
    /// Fills `buf` from `pos`; false when the source ends first.
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> bool;
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(pos) else {
            return false;
        };
        match self.get(start..start.saturating_add(buf.len())) {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => false,
        }
    }
}

pub(super) struct FileSource {
    pub file: File,
    pub len: u64,
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> bool {
        self.file.seek(SeekFrom::Start(pos)).is_ok() && self.file.read_exact(buf).is_ok()
    }
}

/// A definite problem found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// An element (or item) declares more bytes than the file has left after its header.
    Length { tag: Tag, declared: u32, left: u64 },
    /// Sequences nested deeper than [`MAX_DEPTH`].
    Depth,
}

impl Problem {
    /// True when the pixel data element is cut short: a truncated file.
    pub fn is_truncated_pixel_data(&self) -> bool {
        matches!(self, Problem::Length { tag, .. } if *tag == PIXEL_DATA)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Length {
                tag,
                declared,
                left,
            } if *tag == PIXEL_DATA => {
                write!(
                    f,
                    "truncated pixel data: expected {declared} bytes, found {left}"
                )
            }
            Problem::Length {
                tag,
                declared,
                left,
            } => write!(
                f,
                "element ({:04X},{:04X}) declares {declared} bytes but only {left} remain in the file \
                 (truncated or corrupted file)",
                tag.group(),
                tag.element()
            ),
            Problem::Depth => write!(f, "sequences nested more than {MAX_DEPTH} levels deep"),
        }
    }
}

/// Why the walk stopped.
enum Stop {
    /// The structure ended or stopped making sense: nothing more to check.
    Done,
    /// A definite problem.
    Bad(Problem),
}

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQ_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// An element's tag, VR (explicit encoding only) and value length.
#[derive(Clone, Copy)]
struct Element {
    tag: Tag,
    vr: Option<VR>,
    len: u32,
}

struct Walker<'a, S: Source> {
    src: &'a mut S,
    big: bool,
    /// Stop at the top-level pixel data (header-only reads).
    stop_at_pixel_data: bool,
    /// Where the top-level pixel data element ends, once walked completely.
    pixel_data_end: Option<u64>,
    /// Length fields of defined-length sequences and items that claim more bytes than their
    /// container (or the file) holds: (position of the 4-byte length, the length that fits).
    overlong: Vec<(u64, u32)>,
}

impl<S: Source> Walker<'_, S> {
    fn u16_at(&mut self, pos: u64) -> Option<u16> {
        let mut b = [0u8; 2];
        self.src.read_at(pos, &mut b).then(|| {
            if self.big {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        })
    }

    fn u32_at(&mut self, pos: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.src.read_at(pos, &mut b).then(|| {
            if self.big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        })
    }

    fn tag_at(&mut self, pos: u64) -> Option<Tag> {
        Some(Tag(self.u16_at(pos)?, self.u16_at(pos + 2)?))
    }

    fn check_len(&self, tag: Tag, len: u32, pos: u64) -> Result<(), Stop> {
        let left = self.src.len().saturating_sub(pos);
        if u64::from(len) > left {
            Err(Stop::Bad(Problem::Length {
                tag,
                declared: len,
                left,
            }))
        } else {
            Ok(())
        }
    }

    /// Walks elements from `pos` up to `end` (or an item delimiter); returns the position
    /// after the last element (after the delimiter when one ends the data set).
    fn dataset(
        &mut self,
        mut pos: u64,
        end: u64,
        explicit: bool,
        depth: usize,
    ) -> Result<u64, Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::Bad(Problem::Depth));
        }
        while pos < end {
            let Some(tag) = self.tag_at(pos) else {
                return Err(Stop::Done);
            };
            if tag == ITEM_END || tag == SEQ_END {
                return Ok(pos + 8);
            }
            if tag.group() == 0xFFFE {
                return Err(Stop::Done);
            }
            let (vr, len, header) = self.element_header(pos, explicit)?;
            if depth == 0 && tag == PIXEL_DATA && self.stop_at_pixel_data {
                return Err(Stop::Done);
            }
            pos += header;
            let element = Element { tag, vr, len };
            pos = self.element_value(&element, pos, end, explicit, depth)?;
        }
        Ok(pos)
    }

    /// The VR (explicit encoding only), value length and header size of the element at `pos`.
    fn element_header(&mut self, pos: u64, explicit: bool) -> Result<(Option<VR>, u32, u64), Stop> {
        if !explicit {
            let Some(len) = self.u32_at(pos + 4) else {
                return Err(Stop::Done);
            };
            return Ok((None, len, 8u64));
        }
        let mut vrb = [0u8; 2];
        if !self.src.read_at(pos + 4, &mut vrb) {
            return Err(Stop::Done);
        }
        // dicom-encoding reads an unknown VR as UN (long form), and so must we.
        let vr = VR::from_binary(vrb).unwrap_or(VR::UN);
        let long = matches!(
            vr,
            VR::OB
                | VR::OD
                | VR::OF
                | VR::OL
                | VR::OV
                | VR::OW
                | VR::SQ
                | VR::SV
                | VR::UC
                | VR::UN
                | VR::UR
                | VR::UT
                | VR::UV
        );
        if long {
            let Some(len) = self.u32_at(pos + 8) else {
                return Err(Stop::Done);
            };
            Ok((Some(vr), len, 12u64))
        } else {
            let Some(len) = self.u16_at(pos + 6) else {
                return Err(Stop::Done);
            };
            Ok((Some(vr), u32::from(len), 8u64))
        }
    }

    /// Walks the value of `element` starting at `pos` (within a data set ending at `end`);
    /// returns the position after it.
    fn element_value(
        &mut self,
        element: &Element,
        mut pos: u64,
        end: u64,
        explicit: bool,
        depth: usize,
    ) -> Result<u64, Stop> {
        let Element { tag, vr, len } = *element;
        let is_sq = match vr {
            Some(VR::SQ) => true,
            Some(_) => false,
            None => {
                StandardDataDictionary
                    .by_tag(tag)
                    .is_some_and(|e| e.vr().relaxed() == VR::SQ)
                    || len == UNDEFINED
            }
        };
        if len == UNDEFINED {
            if tag == PIXEL_DATA {
                pos = self.fragments(pos)?;
                if depth == 0 {
                    self.pixel_data_end = Some(pos);
                }
            } else {
                // dicom-parser reads every other undefined-length element as a sequence in
                // the same encoding (even UN, whose items PS3.5 6.2.2 says are implicit VR).
                pos = self.items(pos, None, explicit, depth + 1)?;
            }
        } else if is_sq {
            // A sequence's length only bounds its items; the parser allocates nothing for
            // it, so an over-long one is left to the parser (it reads to the end of file).
            let seq_end = self.fit(pos, len, end, pos - 4);
            self.items(pos, Some(seq_end), explicit, depth + 1)?;
            pos = seq_end;
        } else {
            self.check_len(tag, len, pos)?;
            pos += u64::from(len);
            if depth == 0 && tag == PIXEL_DATA {
                self.pixel_data_end = Some(pos);
            }
        }
        Ok(pos)
    }

    /// The end of a defined-length value of `len` bytes starting at `pos`, cut to its
    /// container's `end` and the file; a cut is recorded against the length field at
    /// `length_at`.
    fn fit(&mut self, pos: u64, len: u32, end: u64, length_at: u64) -> u64 {
        let limit = end.min(self.src.len());
        let claimed = pos + u64::from(len);
        if claimed <= limit {
            return claimed;
        }
        if let Ok(fits) = u32::try_from(limit.saturating_sub(pos)) {
            self.overlong.push((length_at, fits));
        }
        limit.max(pos)
    }

    /// Walks the items of a sequence starting at `pos`, up to `end` (defined length) or the
    /// sequence delimiter.
    fn items(
        &mut self,
        mut pos: u64,
        end: Option<u64>,
        explicit: bool,
        depth: usize,
    ) -> Result<u64, Stop> {
        loop {
            if end.is_some_and(|e| pos >= e) {
                return Ok(pos);
            }
            let (Some(tag), Some(len)) = (self.tag_at(pos), self.u32_at(pos + 4)) else {
                return Err(Stop::Done);
            };
            pos += 8;
            match tag {
                SEQ_END => return Ok(pos),
                ITEM if len == UNDEFINED => {
                    pos = self.dataset(pos, u64::MAX, explicit, depth)?;
                }
                ITEM => {
                    // Like sequences, items are not allocated: walk what is there.
                    let item_end = self.fit(pos, len, end.unwrap_or(u64::MAX), pos - 4);
                    self.dataset(pos, item_end, explicit, depth)?;
                    pos = item_end;
                }
                _ => return Err(Stop::Done),
            }
        }
    }

    /// Encapsulated pixel data: items of defined length up to the sequence delimiter.
    fn fragments(&mut self, mut pos: u64) -> Result<u64, Stop> {
        loop {
            let (Some(tag), Some(len)) = (self.tag_at(pos), self.u32_at(pos + 4)) else {
                return Err(Stop::Done);
            };
            pos += 8;
            match tag {
                SEQ_END => return Ok(pos),
                ITEM if len != UNDEFINED => {
                    self.check_len(tag, len, pos)?;
                    pos += u64::from(len);
                }
                _ => return Err(Stop::Done),
            }
        }
    }
}

/// Checks the data set that starts at `start` in `src`. `Err` carries the problem.
pub(super) fn check(
    src: &mut impl Source,
    start: u64,
    explicit: bool,
    big_endian: bool,
    stop_at_pixel_data: bool,
) -> Result<(), Problem> {
    let end = src.len();
    let mut w = Walker {
        src,
        big: big_endian,
        stop_at_pixel_data,
        pixel_data_end: None,
        overlong: Vec::new(),
    };
    match w.dataset(start, end, explicit, 0) {
        Ok(_) | Err(Stop::Done) => Ok(()),
        Err(Stop::Bad(why)) => Err(why),
    }
}

/// What a full walk of the data set at `start` learns for lenient reading.
pub(super) struct Layout {
    /// Where the top-level pixel data element ends, when it is complete.
    pub pixel_data_end: Option<u64>,
    /// Over-long sequence and item lengths: (position of the length field, length that fits).
    pub overlong: Vec<(u64, u32)>,
}

/// Walks the whole data set at `start` (problems aside) for [`Layout`].
pub(super) fn layout(
    src: &mut impl Source,
    start: u64,
    explicit: bool,
    big_endian: bool,
) -> Layout {
    let end = src.len();
    let mut w = Walker {
        src,
        big: big_endian,
        stop_at_pixel_data: false,
        pixel_data_end: None,
        overlong: Vec::new(),
    };
    let _ = w.dataset(start, end, explicit, 0);
    Layout {
        pixel_data_end: w.pixel_data_end,
        overlong: w.overlong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit_le(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn accepts_a_well_formed_data_set() {
        let mut d = explicit_le((0x0008, 0x0060), b"CS", b"CT");
        d.extend(explicit_le((0x0028, 0x0010), b"US", &[4, 0]));
        assert!(check(&mut d.as_slice(), 0, true, false, false).is_ok());
    }

    #[test]
    fn rejects_a_length_beyond_the_end() {
        let mut d = explicit_le((0x0008, 0x0060), b"CS", b"CT");
        // (0008,1115) UN with a defined length of 3.7 GB.
        d.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'U', b'N', 0, 0]);
        d.extend_from_slice(&0xE000_0000u32.to_le_bytes());
        let err = check(&mut d.as_slice(), 0, true, false, false).unwrap_err();
        assert_eq!(
            err,
            Problem::Length {
                tag: Tag(0x0008, 0x1115),
                declared: 0xE000_0000,
                left: 0
            }
        );
        assert!(
            err.to_string()
                .contains("(0008,1115) declares 3758096384 bytes"),
            "{err}"
        );
    }

    #[test]
    fn over_long_sequences_and_items_are_left_to_the_parser() {
        // Not allocations: the parser reads items element by element.
        let mut d = explicit_le((0x0008, 0x0060), b"CS", b"CT");
        d.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
        d.extend_from_slice(&1000u32.to_le_bytes());
        d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        d.extend_from_slice(&900u32.to_le_bytes());
        d.extend(explicit_le((0x0008, 0x0060), b"CS", b"MR"));
        assert!(check(&mut d.as_slice(), 0, true, false, false).is_ok());
        // ... but a value inside them is checked.
        d.extend_from_slice(&[0x08, 0x00, 0x16, 0x11, b'O', b'B', 0, 0]);
        d.extend_from_slice(&5000u32.to_le_bytes());
        assert!(check(&mut d.as_slice(), 0, true, false, false).is_err());
    }

    #[test]
    fn rejects_absurd_nesting() {
        // Undefined-length sequences, each holding one undefined-length item, 100 deep.
        let mut d = Vec::new();
        for _ in 0..100 {
            d.extend_from_slice(&[
                0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let err = check(&mut d.as_slice(), 0, true, false, false).unwrap_err();
        assert_eq!(err, Problem::Depth);
    }
}
