//! From a parsed object to an [`ImageStack`]: sample extraction, modality LUT, colour, window
//! presets and acquisition info.
//!
//! Sizes come from the file: [`read_layout`] bounds Rows x Columns x NumberOfFrames x
//! SamplesPerPixel by [`MAX_SAMPLES`] with checked arithmetic, so products of those (and
//! indices below them) cannot overflow afterwards; the lint keeps every other sum checked.
#![deny(clippy::arithmetic_side_effects)]
use std::path::Path;

use dicom_core::{DicomValue, PrimitiveValue};
use dicom_dictionary_std::tags;
use dicom_encoding::adapters::DynPixelDataReader;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_encoding::{Codec, TransferSyntax};
use dicom_object::DefaultDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::attrs::{self, Obj};
use super::codestream;
use super::frames::{self, Framed};
use super::jpeg_ls;
use super::jpeg12;
use super::lut::{self, Lut};
use super::overlay;
use super::rle;
use super::source::error_chain;
use super::summary::sop_class_name;
use super::{DicomError, DicomErrorKind as K, MAX_SAMPLES, metadata, ts};
use crate::io::image::{Channels, Frame, ImageInfo, ImageStack, VoiFunction, VoiLut, Window};

/// The Image Pixel module attributes that say how to read the samples.
#[derive(Debug, Clone)]
struct Layout {
    rows: usize,
    cols: usize,
    frames: usize,
    spp: usize,
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    planar: bool,
    photometric: String,
}

impl Layout {
    /// Pixels of one frame.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "read_layout bounds rows x cols x frames x spp by MAX_SAMPLES"
    )]
    fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Samples of one frame.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "read_layout bounds rows x cols x frames x spp by MAX_SAMPLES"
    )]
    fn samples_per_frame(&self) -> usize {
        self.rows * self.cols * self.spp
    }

    /// Samples of all frames.
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "read_layout bounds rows x cols x frames x spp by MAX_SAMPLES"
    )]
    fn samples(&self) -> usize {
        self.rows * self.cols * self.frames * self.spp
    }
}

fn malformed(path: &Path, msg: impl Into<String>) -> DicomError {
    DicomError::new(path, K::Malformed, msg)
}

fn required_uint(
    ds: &Obj,
    tag: dicom_core::Tag,
    name: &str,
    path: &Path,
) -> Result<u64, DicomError> {
    match attrs::int(ds, tag) {
        None => Err(malformed(path, format!("image without {name}"))),
        Some(Err(attrs::NotAnInteger { raw })) => {
            Err(malformed(path, format!("invalid {name} value {raw:?}")))
        }
        Some(Ok(v)) if v < 0 => Err(malformed(path, format!("invalid {name} value {v}"))),
        Some(Ok(v)) => Ok(v as u64),
    }
}

fn read_layout(ds: &Obj, path: &Path) -> Result<Layout, DicomError> {
    let rows = required_uint(ds, tags::ROWS, "Rows", path)?;
    let cols = required_uint(ds, tags::COLUMNS, "Columns", path)?;
    if rows == 0 || cols == 0 {
        return Err(malformed(
            path,
            format!("empty image: {rows} rows x {cols} columns"),
        ));
    }
    let (bits_allocated, bits_stored, high_bit) = read_bit_depths(ds, path)?;
    let spp = attrs::int_opt(ds, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if !(1..=4).contains(&spp) {
        return Err(malformed(path, format!("invalid SamplesPerPixel {spp}")));
    }
    let frames = read_frame_count(ds, path)?;
    check_sample_limit(path, rows, cols, frames, spp)?;
    let photometric = attrs::string(ds, tags::PHOTOMETRIC_INTERPRETATION)
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_else(|| {
            if spp == 1 {
                "MONOCHROME2".into()
            } else {
                "RGB".into()
            }
        });

    Ok(Layout {
        rows: rows as usize,
        cols: cols as usize,
        frames: frames as usize,
        spp: spp as usize,
        bits_allocated,
        bits_stored,
        high_bit,
        signed: attrs::int_opt(ds, tags::PIXEL_REPRESENTATION) == Some(1),
        planar: spp > 1 && attrs::int_opt(ds, tags::PLANAR_CONFIGURATION) == Some(1),
        photometric,
    })
}

/// BitsAllocated, BitsStored and HighBit, checked so that
/// `1 <= bits_stored <= high_bit + 1 <= bits_allocated <= 32` (which [`extract`] relies on).
fn read_bit_depths(ds: &Obj, path: &Path) -> Result<(u16, u16, u16), DicomError> {
    let bits_allocated = required_uint(ds, tags::BITS_ALLOCATED, "BitsAllocated", path)?;
    if !matches!(bits_allocated, 1 | 8 | 16 | 32) {
        return Err(DicomError::new(
            path,
            K::Unsupported,
            format!("BitsAllocated {bits_allocated} is not supported (1, 8, 16 or 32)"),
        ));
    }
    let bits_allocated = bits_allocated as u16;
    let bits_stored = match attrs::int_opt(ds, tags::BITS_STORED) {
        Some(v) if v >= 1 && v <= i64::from(bits_allocated) => v as u16,
        Some(v) => {
            return Err(malformed(
                path,
                format!("BitsStored {v} does not fit BitsAllocated {bits_allocated}"),
            ));
        }
        None => bits_allocated,
    };
    let high_bit = match attrs::int_opt(ds, tags::HIGH_BIT) {
        Some(v)
            if v.saturating_add(1) >= i64::from(bits_stored) && v < i64::from(bits_allocated) =>
        {
            v as u16
        }
        // An inconsistent HighBit is common in old files; the usual layout is the safe reading
        // (BitsStored is at least 1 here).
        _ => bits_stored.saturating_sub(1),
    };
    Ok((bits_allocated, bits_stored, high_bit))
}

/// NumberOfFrames, 1 when absent (or 0).
fn read_frame_count(ds: &Obj, path: &Path) -> Result<u64, DicomError> {
    match attrs::int(ds, tags::NUMBER_OF_FRAMES) {
        None => Ok(1),
        Some(Err(attrs::NotAnInteger { raw })) => Err(malformed(
            path,
            format!("invalid NumberOfFrames value {raw:?} (not an integer)"),
        )),
        Some(Ok(n)) if n < 0 => Err(malformed(path, format!("invalid NumberOfFrames value {n}"))),
        Some(Ok(n)) => Ok((n as u64).max(1)),
    }
}

/// Refuses images of more than [`MAX_SAMPLES`] samples, so that later products of the sizes
/// cannot overflow.
fn check_sample_limit(
    path: &Path,
    rows: u64,
    cols: u64,
    frames: u64,
    spp: i64,
) -> Result<(), DicomError> {
    let samples = rows
        .checked_mul(cols)
        .and_then(|v| v.checked_mul(frames))
        .and_then(|v| v.checked_mul(spp as u64));
    match samples {
        Some(n) if n <= MAX_SAMPLES => Ok(()),
        _ => Err(DicomError::new(
            path,
            K::TooLarge,
            format!(
                "image of {rows} x {cols} x {frames} frames x {spp} samples exceeds the \
                 {MAX_SAMPLES}-sample limit"
            ),
        )),
    }
}

/// How the per-frame byte runs are to be read.
struct RawFrames {
    frames: Vec<Vec<u8>>,
    big_endian: bool,
    /// True when a decoder produced the samples (colour is then interleaved RGB, except for
    /// RLE, which keeps the stored photometric interpretation).
    decoded: bool,
    /// Precision and signedness from the first JPEG 2000 codestream, when there is one.
    j2k_precision: Option<(u16, bool)>,
    /// The MCT flag of the first JPEG 2000 codestream: `Some(false)` means the decoder
    /// returned the stored components (YBR stays YBR).
    j2k_mct: Option<bool>,
}

/// Bytes of one stored frame in native encoding. YBR_FULL_422 / YBR_PARTIAL_422 keep two
/// luminance and one pair of chrominance samples per two pixels.
fn native_frame_bytes(l: &Layout) -> Option<usize> {
    let samples = if l.spp == 3 && is_422(&l.photometric) {
        l.pixels().checked_mul(2)?
    } else {
        l.pixels().checked_mul(l.spp)?
    };
    if l.bits_allocated == 1 {
        Some(samples.div_ceil(8))
    } else {
        samples.checked_mul(usize::from(l.bits_allocated / 8))
    }
}

fn is_422(pi: &str) -> bool {
    pi == "YBR_FULL_422" || pi == "YBR_PARTIAL_422"
}

/// The stored byte stream of native pixel data, in file byte order. `dicom-object` keeps OW
/// values as 16-bit words in host order; for big endian files they are turned back into the
/// file's byte order so that 8- and 32-bit samples read correctly.
fn native_stream(p: &PrimitiveValue, big_endian: bool) -> Vec<u8> {
    match p {
        PrimitiveValue::U16(v) if big_endian => v.iter().flat_map(|w| w.to_be_bytes()).collect(),
        PrimitiveValue::I16(v) if big_endian => v.iter().flat_map(|w| w.to_be_bytes()).collect(),
        PrimitiveValue::U32(v) if big_endian => v.iter().flat_map(|w| w.to_be_bytes()).collect(),
        PrimitiveValue::I32(v) if big_endian => v.iter().flat_map(|w| w.to_be_bytes()).collect(),
        PrimitiveValue::U16(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        PrimitiveValue::I16(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        PrimitiveValue::U32(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        PrimitiveValue::I32(v) => v.iter().flat_map(|w| w.to_le_bytes()).collect(),
        other => other.to_bytes().into_owned(),
    }
}

fn raw_frames(obj: &DefaultDicomObject, l: &Layout, path: &Path) -> Result<RawFrames, DicomError> {
    let ts_uid = obj.meta().transfer_syntax().to_string();
    let ts_entry = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| {
        DicomError::new(
            path,
            K::UnsupportedTransferSyntax,
            format!(
                "unsupported transfer syntax {ts_uid} ({})",
                ts::transfer_syntax_name(&ts_uid)
            ),
        )
    })?;
    let big_endian = ts_uid == ts::EXPLICIT_VR_BIG_ENDIAN;
    let element = obj
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| DicomError::new(path, K::NoPixelData, "no pixel data"))?;
    match element.value() {
        DicomValue::Primitive(p) => {
            native_frames(native_stream(p, big_endian), l, big_endian, path)
        }
        DicomValue::Sequence(_) => Err(malformed(
            path,
            "pixel data is a sequence, not pixel values",
        )),
        DicomValue::PixelSequence(_) => {
            let grouped = frames::group_fragments(obj, l.frames)
                .map_err(|m| malformed(path, m.to_string()))?;
            if ts_uid == ts::ENCAPSULATED_UNCOMPRESSED {
                return encapsulated_native_frames(grouped, l, path);
            }
            decoded_frames(grouped, l, &ts_uid, ts_entry, path)
        }
    }
}

fn image_size_overflows(path: &Path) -> DicomError {
    DicomError::new(path, K::TooLarge, "image size overflows")
}

/// Native (uncompressed) pixel data cut into frames, after checking that the stream holds
/// all of them.
fn native_frames(
    stream: Vec<u8>,
    l: &Layout,
    big_endian: bool,
    path: &Path,
) -> Result<RawFrames, DicomError> {
    let frame_bytes = native_frame_bytes(l).ok_or_else(|| image_size_overflows(path))?;
    let expected = if l.bits_allocated == 1 {
        l.samples().div_ceil(8)
    } else {
        frame_bytes
            .checked_mul(l.frames)
            .ok_or_else(|| image_size_overflows(path))?
    };
    if stream.len() < expected {
        return Err(DicomError::new(
            path,
            K::Truncated,
            format!(
                "truncated pixel data: expected {expected} bytes, found {}",
                stream.len()
            ),
        ));
    }
    let frames = if l.bits_allocated == 1 {
        // Frames of 1-bit data need not start on a byte boundary: keep the whole
        // stream and let the extractor index bits from the frame's bit offset.
        vec![stream]
    } else {
        stream
            .chunks(frame_bytes)
            .take(l.frames)
            .map(|c| c.to_vec())
            .collect()
    };
    Ok(RawFrames {
        frames,
        big_endian,
        decoded: false,
        j2k_precision: None,
        j2k_mct: None,
    })
}

/// Encapsulated Uncompressed Explicit VR Little Endian: native frames, one per fragment
/// group, each checked to be complete.
fn encapsulated_native_frames(
    grouped: Vec<Vec<u8>>,
    l: &Layout,
    path: &Path,
) -> Result<RawFrames, DicomError> {
    let frame_bytes = native_frame_bytes(l).ok_or_else(|| image_size_overflows(path))?;
    for (k, f) in grouped.iter().enumerate() {
        if f.len() < frame_bytes {
            return Err(DicomError::new(
                path,
                K::Truncated,
                format!(
                    "truncated pixel data: frame {} has {} bytes, expected {frame_bytes}",
                    k.saturating_add(1),
                    f.len()
                ),
            ));
        }
    }
    Ok(RawFrames {
        frames: grouped,
        big_endian: false,
        decoded: false,
        j2k_precision: None,
        j2k_mct: None,
    })
}

/// Compressed frames, each decoded to every sample of every pixel.
fn decoded_frames(
    grouped: Vec<Vec<u8>>,
    l: &Layout,
    ts_uid: &str,
    ts_entry: &TransferSyntax,
    path: &Path,
) -> Result<RawFrames, DicomError> {
    let reader = frame_reader(l, ts_uid, ts_entry, path)?;
    let (j2k_precision, j2k_mct) = if ts::is_jpeg2000(ts_uid) {
        let first = grouped.first();
        (
            first.and_then(|f| frames::jpeg2000_precision(f)),
            first.and_then(|f| codestream::j2k_mct(f)),
        )
    } else {
        (None, None)
    };
    let (Ok(rows), Ok(cols)) = (u16::try_from(l.rows), u16::try_from(l.cols)) else {
        return Err(malformed(path, "Rows/Columns beyond 65535"));
    };
    // Decoders deliver every sample of every pixel (422 comes back as full RGB).
    let expected = l
        .pixels()
        .checked_mul(l.spp)
        .and_then(|v| v.checked_mul(usize::from(l.bits_allocated / 8)))
        .ok_or_else(|| image_size_overflows(path))?;
    let decoder = FrameDecoder {
        l,
        path,
        ts_uid,
        ts_name: ts_entry.name(),
        reader,
        framed: Framed {
            ts_uid: ts_uid.to_string(),
            rows,
            cols,
            samples_per_pixel: l.spp as u16,
            bits_allocated: l.bits_allocated,
            bits_stored: l.bits_stored,
            photometric: l.photometric.clone(),
            frames: grouped,
        },
        expected,
        rgb_as_stored: l.spp == 3
            && l.photometric == "RGB"
            && l.bits_allocated == 8
            && matches!(
                ts_uid,
                "1.2.840.10008.1.2.4.50"
                    | "1.2.840.10008.1.2.4.51"
                    | "1.2.840.10008.1.2.4.57"
                    | "1.2.840.10008.1.2.4.70"
            ),
    };
    let frames = (0..l.frames)
        .map(|k| decoder.decode(k))
        .collect::<Result<_, _>>()?;
    Ok(RawFrames {
        frames,
        big_endian: false,
        decoded: true,
        j2k_precision,
        j2k_mct,
    })
}

/// The registry's decoder for `ts_entry`, `None` for JPEG-LS (which goes to the pure-Rust
/// [`jpeg_ls`] decoder), or why the frames cannot be decoded.
fn frame_reader<'a>(
    l: &Layout,
    ts_uid: &str,
    ts_entry: &'a TransferSyntax,
    path: &Path,
) -> Result<Option<&'a DynPixelDataReader>, DicomError> {
    let reader = match ts_entry.codec() {
        _ if ts::is_jpeg_ls(ts_uid) => None,
        Codec::EncapsulatedPixelData(Some(reader), _) if ts_entry.can_decode_all() => Some(reader),
        _ => {
            return Err(DicomError::new(
                path,
                K::UnsupportedTransferSyntax,
                format!(
                    "unsupported transfer syntax {ts_uid} ({}): no decoder for this encoding",
                    ts_entry.name()
                ),
            ));
        }
    };
    if l.bits_allocated == 1 || l.bits_allocated == 32 {
        return Err(DicomError::new(
            path,
            K::Unsupported,
            format!(
                "BitsAllocated {} in {} is not supported by the decoder",
                l.bits_allocated,
                ts_entry.name()
            ),
        ));
    }
    Ok(reader)
}

/// What every frame of one compressed image is decoded with.
struct FrameDecoder<'a> {
    l: &'a Layout,
    path: &'a Path,
    ts_uid: &'a str,
    /// The transfer syntax's name, for messages.
    ts_name: &'a str,
    /// The registry's decoder; `None` for JPEG-LS.
    reader: Option<&'a DynPixelDataReader>,
    framed: Framed,
    /// Bytes of one decoded frame.
    expected: usize,
    /// 8-bit RGB JPEG, decoded without colour conversion (PS3.5 8.2.1).
    rgb_as_stored: bool,
}

impl FrameDecoder<'_> {
    /// Frame `k` (0-based) failed to decode because of `detail`.
    fn frame_error(&self, k: usize, detail: impl std::fmt::Display) -> DicomError {
        DicomError::new(
            self.path,
            K::Decode,
            format!(
                "{} frame {} failed to decode: {detail}",
                self.ts_name,
                k.saturating_add(1)
            ),
        )
    }

    /// The samples of frame `k`, exactly [`FrameDecoder::expected`] bytes.
    fn decode(&self, k: usize) -> Result<Vec<u8>, DicomError> {
        let l = self.l;
        let data = &self.framed.frames[k];
        self.check_codestream_size(k, data)?;
        let mut buf = match self
            .rgb_as_stored
            .then(|| codestream::decode_jpeg_rgb_as_stored(data, self.expected))
            .flatten()
        {
            Some(r) => r.map_err(|e| self.frame_error(k, e))?,
            None if self.ts_uid == ts::RLE_LOSSLESS => {
                rle::decode_frame(data, l.pixels(), l.spp, usize::from(l.bits_allocated / 8))
                    .map_err(|e| self.frame_error(k, e))?
            }
            // jpeg-decoder stops at 8 bits: 12-bit frames go to our own decoder.
            None if self.is_twelve_bit(data) => self.decode_twelve_bit(k, data)?,
            None => match self.reader {
                Some(reader) => {
                    let mut buf = Vec::new();
                    reader
                        .decode_frame(&self.framed, k as u32, &mut buf)
                        .map_err(|e| self.frame_error(k, error_chain(&e)))?;
                    buf
                }
                None => jpeg_ls::decode_frame(data, l.cols, l.rows, l.spp, l.bits_allocated)
                    .map_err(|e| self.frame_error(k, e))?,
            },
        };
        if buf.len() < self.expected {
            return Err(self.frame_error(
                k,
                format!("{} bytes decoded, expected {}", buf.len(), self.expected),
            ));
        }
        buf.truncate(self.expected);
        Ok(buf)
    }

    /// Refuses a codestream whose own header disagrees with the DICOM attributes.
    fn check_codestream_size(&self, k: usize, data: &[u8]) -> Result<(), DicomError> {
        let l = self.l;
        if let Some((w, h, c)) = codestream::dimensions(self.ts_uid, data)
            && (w as usize != l.cols || h as usize != l.rows || c as usize != l.spp)
        {
            return Err(DicomError::new(
                self.path,
                K::Decode,
                format!(
                    "{} frame {}: the codestream holds {w}x{h} pixels with {c} component(s), \
                     the DICOM attributes say {}x{} with {}",
                    self.ts_name,
                    k.saturating_add(1),
                    l.cols,
                    l.rows,
                    l.spp
                ),
            ));
        }
        Ok(())
    }

    /// A 12-bit JPEG Baseline/Extended frame, which `jpeg-decoder` cannot read.
    fn is_twelve_bit(&self, data: &[u8]) -> bool {
        matches!(
            self.ts_uid,
            "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51"
        ) && jpeg12::precision(data) == Some(12)
    }

    /// Frame `k` through the 12-bit greyscale decoder, as 16-bit little-endian samples.
    fn decode_twelve_bit(&self, k: usize, data: &[u8]) -> Result<Vec<u8>, DicomError> {
        let l = self.l;
        if l.bits_allocated != 16 {
            return Err(self.frame_error(
                k,
                format!(
                    "12-bit JPEG needs BitsAllocated 16, the file says {}",
                    l.bits_allocated
                ),
            ));
        }
        let g = jpeg12::decode_grey(data).map_err(|e| self.frame_error(k, e))?;
        if (g.width, g.height) != (l.cols, l.rows) || g.precision > 16 {
            return Err(self.frame_error(
                k,
                format!(
                    "decoded {} x {} pixels, expected {} x {}",
                    g.width, g.height, l.cols, l.rows
                ),
            ));
        }
        Ok(g.samples.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Reads `count` samples of `bits_allocated` bits from `bytes` (starting at bit `bit_offset`
/// for 1-bit data) as stored values: the `bits_stored` bits ending at `high_bit`,
/// sign-extended when `signed`.
#[allow(clippy::too_many_arguments)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "count and bit_offset + count are sample counts, at most MAX_SAMPLES x 3 by read_layout"
)]
fn extract(
    bytes: &[u8],
    count: usize,
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    big_endian: bool,
    bit_offset: usize,
) -> Vec<f64> {
    // read_layout keeps 1 <= bits_stored <= high_bit + 1 <= bits_allocated <= 32.
    let shift = u32::from(high_bit.saturating_add(1).saturating_sub(bits_stored));
    let mask: u64 = 1u64
        .checked_shl(u32::from(bits_stored))
        .map_or(u64::MAX, |v| v.wrapping_sub(1));
    let sign_bit: u64 = 1u64 << bits_stored.saturating_sub(1);
    let convert = |raw: u64| -> f64 {
        let v = (raw >> shift) & mask;
        if signed && bits_stored > 1 && v & sign_bit != 0 {
            v as i64 as f64 - (1u64 << bits_stored) as f64
        } else {
            v as f64
        }
    };
    match bits_allocated {
        1 => (0..count)
            .map(|i| {
                let bit = bit_offset + i;
                f64::from((bytes[bit / 8] >> (bit % 8)) & 1)
            })
            .collect(),
        8 => bytes[..count]
            .iter()
            .map(|&b| convert(u64::from(b)))
            .collect(),
        16 => bytes[..count * 2]
            .chunks_exact(2)
            .map(|c| {
                let a = [c[0], c[1]];
                convert(u64::from(if big_endian {
                    u16::from_be_bytes(a)
                } else {
                    u16::from_le_bytes(a)
                }))
            })
            .collect(),
        _ => bytes[..count * 4]
            .chunks_exact(4)
            .map(|c| {
                let a = [c[0], c[1], c[2], c[3]];
                convert(u64::from(if big_endian {
                    u32::from_be_bytes(a)
                } else {
                    u32::from_le_bytes(a)
                }))
            })
            .collect(),
    }
}

/// The modality LUT of frame `k`: a Modality LUT Sequence, else rescale slope/intercept from
/// the frame's Pixel Value Transformation functional group, the shared one, or the top level.
enum ModalityLut {
    Table(Lut),
    Rescale(f64, f64),
}

fn modality_lut(ds: &Obj, frame: usize, table: &Option<Lut>) -> ModalityLut {
    if let Some(t) = table {
        return ModalityLut::Table(t.clone());
    }
    let group = attrs::functional_group(ds, frame, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE);
    let (slope, intercept) = match group {
        Some(g) if attrs::f64_1(g, tags::RESCALE_SLOPE).is_some() => (
            attrs::f64_1(g, tags::RESCALE_SLOPE),
            attrs::f64_1(g, tags::RESCALE_INTERCEPT),
        ),
        // RT Dose stores dose / DoseGridScaling (PS3.3 C.8.8.3.4): the scaling is its slope.
        _ => (
            attrs::f64_1(ds, tags::RESCALE_SLOPE)
                .or_else(|| attrs::f64_1(ds, tags::DOSE_GRID_SCALING)),
            attrs::f64_1(ds, tags::RESCALE_INTERCEPT),
        ),
    };
    let slope = slope.filter(|s| *s != 0.0).unwrap_or(1.0);
    ModalityLut::Rescale(slope, intercept.unwrap_or(0.0))
}

/// YCbCr (full range, PS3.3 C.7.6.3.1.2) to RGB, all on `0..=max`.
fn ybr_full_to_rgb(y: f64, cb: f64, cr: f64, max: f64) -> [f64; 3] {
    let mid = (max + 1.0) / 2.0;
    let r = y + 1.402 * (cr - mid);
    let g = y - 0.344136 * (cb - mid) - 0.714136 * (cr - mid);
    let b = y + 1.772 * (cb - mid);
    [r, g, b].map(|v| v.round().clamp(0.0, max))
}

/// YCbCr partial range (ITU-R BT.601, Y 16..235, Cb/Cr 16..240 for 8 bits) to RGB.
fn ybr_partial_to_rgb(y: f64, cb: f64, cr: f64, max: f64) -> [f64; 3] {
    let s = (max + 1.0) / 256.0;
    let (y, cb, cr) = (y / s - 16.0, cb / s - 128.0, cr / s - 128.0);
    let r = 1.1644 * y + 1.5960 * cr;
    let g = 1.1644 * y - 0.3917 * cb - 0.8130 * cr;
    let b = 1.1644 * y + 2.0173 * cb;
    [r, g, b].map(|v| (v * s).round().clamp(0.0, max))
}

pub(super) fn decode_stack(
    obj: &DefaultDicomObject,
    path: &Path,
) -> Result<ImageStack, DicomError> {
    let ds: &Obj = obj;
    if ds.get(tags::PIXEL_DATA).is_none() {
        return Err(missing_pixel_data(obj, path));
    }
    let l = read_layout(ds, path)?;
    let raw = raw_frames(obj, &l, path)?;
    let ts_uid = obj.meta().transfer_syntax().to_string();
    let stored = Stored::of(&l, &raw);
    let frames_out = match l.spp {
        1 => grey_frames(ds, &l, &raw, &stored, path)?,
        3 => {
            // Decoders hand back RGB, except RLE (stored samples) and JPEG 2000 without its
            // MCT (stored components: YBR_FULL there still needs converting).
            let colour_decoded_rgb =
                raw.decoded && ts_uid != ts::RLE_LOSSLESS && raw.j2k_mct != Some(false);
            colour_frames(&l, &raw, &stored, colour_decoded_rgb, path)?
        }
        _ => {
            return Err(DicomError::new(
                path,
                K::Unsupported,
                format!(
                    "{} samples per pixel ({}) is not supported",
                    l.spp, l.photometric
                ),
            ));
        }
    };
    Ok(assemble_stack(
        obj,
        path,
        &l,
        stored.bits_stored,
        frames_out,
    ))
}

/// Why an object without (7FE0,0010) has no image: float pixel data, or no pixel data at all
/// (naming the SOP class, when known).
fn missing_pixel_data(obj: &DefaultDicomObject, path: &Path) -> DicomError {
    if frames::has_float_pixel_data(obj) {
        return DicomError::new(path, K::Unsupported, "float pixel data is not supported");
    }
    let class = sop_class_name(obj.meta().media_storage_sop_class_uid());
    let what = if class.is_empty() {
        String::new()
    } else {
        format!(" ({class})")
    };
    DicomError::new(path, K::NoPixelData, format!("no pixel data{what}"))
}

/// How stored values are read out of the sample bytes.
struct Stored {
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    /// Largest stored value, `2^bits_stored - 1`.
    max_stored: f64,
}

impl Stored {
    /// The layout's precision, or the JPEG 2000 codestream's: decoders follow the
    /// codestream's precision and sign (pydicom and GDCM do the same when BitsStored or
    /// PixelRepresentation disagree with it). The precision comes from the codestream; the
    /// sign from either (a signed codestream decodes to negative values; an unsigned one with
    /// PixelRepresentation 1 holds two's complement values, which is how pydicom reads such
    /// files too).
    fn of(l: &Layout, raw: &RawFrames) -> Self {
        let (bits_stored, high_bit, signed) = match raw.j2k_precision {
            // The codestream's precision is at least 1.
            Some((p, s)) if p <= l.bits_allocated => (p, p.saturating_sub(1), s || l.signed),
            _ => (l.bits_stored, l.high_bit, l.signed),
        };
        Stored {
            bits_stored,
            high_bit,
            signed,
            max_stored: ((1u64 << bits_stored).wrapping_sub(1)) as f64,
        }
    }

    /// [`extract`] of `count` samples with this precision.
    fn extract(
        &self,
        l: &Layout,
        raw: &RawFrames,
        bytes: &[u8],
        count: usize,
        signed: bool,
        bit_offset: usize,
    ) -> Vec<f64> {
        extract(
            bytes,
            count,
            l.bits_allocated,
            self.bits_stored,
            self.high_bit,
            signed,
            raw.big_endian,
            bit_offset,
        )
    }
}

/// Single-sample frames: palette colour through its lookup tables, otherwise grey values
/// through the modality LUT.
fn grey_frames(
    ds: &Obj,
    l: &Layout,
    raw: &RawFrames,
    s: &Stored,
    path: &Path,
) -> Result<Vec<Frame>, DicomError> {
    let palette = if l.photometric == "PALETTE COLOR" {
        Some(lut::palette(ds, s.signed).map_err(|m| malformed(path, m.to_string()))?)
    } else {
        None
    };
    let table = lut::modality_lut(ds, s.signed);
    let n = l.pixels();
    let mut frames_out = Vec::with_capacity(l.frames);
    for k in 0..l.frames {
        let (bytes, bit_offset) = if l.bits_allocated == 1 {
            // Within the stream's samples (read_layout bounds them): no overflow.
            (&raw.frames[0][..], k.saturating_mul(n))
        } else {
            (&raw.frames[k][..], 0)
        };
        let stored = s.extract(l, raw, bytes, n, s.signed, bit_offset);
        frames_out.push(match &palette {
            Some(palette) => palette_frame(l, &stored, palette),
            None => modality_frame(ds, l, k, &stored, &table),
        });
    }
    Ok(frames_out)
}

/// A palette colour frame on the 0..=255 scale.
fn palette_frame(l: &Layout, stored: &[f64], [r, g, b]: &[Lut; 3]) -> Frame {
    let mut data = Vec::with_capacity(l.pixels().saturating_mul(3));
    for &v in stored {
        for t in [r, g, b] {
            data.push((f64::from(t.lookup(v)) * 255.0 / t.max_value()) as f32);
        }
    }
    Frame {
        width: l.cols as u32,
        height: l.rows as u32,
        channels: Channels::Rgb,
        data,
    }
}

/// Grey frame `k` in modality units.
fn modality_frame(ds: &Obj, l: &Layout, k: usize, stored: &[f64], table: &Option<Lut>) -> Frame {
    let data = match modality_lut(ds, k, table) {
        ModalityLut::Table(t) => stored.iter().map(|&v| f32::from(t.lookup(v))).collect(),
        ModalityLut::Rescale(s, i) => stored.iter().map(|&v| (v * s + i) as f32).collect(),
    };
    Frame {
        width: l.cols as u32,
        height: l.rows as u32,
        channels: Channels::Gray,
        data,
    }
}

/// Three-sample frames as RGB on the 0..=255 scale.
fn colour_frames(
    l: &Layout,
    raw: &RawFrames,
    s: &Stored,
    colour_decoded_rgb: bool,
    path: &Path,
) -> Result<Vec<Frame>, DicomError> {
    let pi = l.photometric.as_str();
    if !raw.decoded && is_422(pi) && !l.cols.is_multiple_of(2) {
        // Stored samples come in pairs of pixels along a row (PS3.3 C.7.6.3.1.2).
        return Err(malformed(
            path,
            format!(
                "{pi} pixel data needs an even number of columns, the file has {}",
                l.cols
            ),
        ));
    }
    let scale = 255.0 / s.max_stored;
    let mut frames_out = Vec::with_capacity(l.frames);
    for k in 0..l.frames {
        let bytes = &raw.frames[k][..];
        let rgb = if !raw.decoded && is_422(pi) {
            rgb_from_422(l, raw, s, bytes)
        } else {
            rgb_from_samples(l, raw, s, bytes, colour_decoded_rgb)
        };
        let data = rgb.iter().map(|&v| (v * scale) as f32).collect();
        frames_out.push(Frame {
            width: l.cols as u32,
            height: l.rows as u32,
            channels: Channels::Rgb,
            data,
        });
    }
    Ok(frames_out)
}

/// Stored YBR_FULL_422 / YBR_PARTIAL_422 samples (Y0 Y1 Cb Cr per pair of pixels along a
/// row) as interleaved RGB on `0..=max_stored`.
fn rgb_from_422(l: &Layout, raw: &RawFrames, s: &Stored, bytes: &[u8]) -> Vec<f64> {
    // Two samples per pixel (an even column count, checked by the caller, so pairs do not
    // cross rows).
    let stored = s.extract(l, raw, bytes, l.pixels().saturating_mul(2), false, 0);
    let max_stored = s.max_stored;
    let to_rgb = |y, cb, cr| {
        if l.photometric == "YBR_FULL_422" {
            ybr_full_to_rgb(y, cb, cr, max_stored)
        } else {
            ybr_partial_to_rgb(y, cb, cr, max_stored)
        }
    };
    stored
        .chunks_exact(4)
        .flat_map(|q| [to_rgb(q[0], q[2], q[3]), to_rgb(q[1], q[2], q[3])])
        .flatten()
        .collect()
}

/// Three samples per pixel as interleaved RGB on `0..=max_stored`: planar samples
/// interleaved, YBR converted unless the decoder already did.
fn rgb_from_samples(
    l: &Layout,
    raw: &RawFrames,
    s: &Stored,
    bytes: &[u8],
    colour_decoded_rgb: bool,
) -> Vec<f64> {
    let pi = l.photometric.as_str();
    let n = l.pixels();
    let stored = s.extract(l, raw, bytes, l.samples_per_frame(), false, 0);
    // Planar configuration 1 (native only: decoders deliver interleaved samples).
    let stored = if l.planar && !raw.decoded {
        // R plane, G plane, B plane, each of n samples, interleaved.
        let (r, gb) = stored.split_at(n);
        let (g, b) = gb.split_at(n);
        r.iter()
            .zip(g)
            .zip(b)
            .flat_map(|((&r, &g), &b)| [r, g, b])
            .collect()
    } else {
        stored
    };
    let needs_ybr =
        !colour_decoded_rgb && (pi == "YBR_FULL" || is_422(pi) || pi == "YBR_PARTIAL_420");
    if !needs_ybr {
        return stored;
    }
    stored
        .chunks_exact(3)
        .flat_map(|c| {
            if pi == "YBR_FULL" || pi == "YBR_FULL_422" {
                ybr_full_to_rgb(c[0], c[1], c[2], s.max_stored)
            } else {
                ybr_partial_to_rgb(c[0], c[1], c[2], s.max_stored)
            }
        })
        .collect()
}

/// The stack of decoded frames with its windows, presentation and acquisition info.
fn assemble_stack(
    obj: &DefaultDicomObject,
    path: &Path,
    l: &Layout,
    bits_stored: u16,
    frames_out: Vec<Frame>,
) -> ImageStack {
    let ds: &Obj = obj;
    let is_colour = frames_out
        .first()
        .is_some_and(|f| f.channels == Channels::Rgb);
    let windows = if is_colour {
        vec![Window {
            center: 127.5,
            width: 256.0,
            function: VoiFunction::Linear,
            label: "Full range".to_string(),
            lut: None,
        }]
    } else {
        window_presets(ds, &frames_out)
    };
    let invert = !is_colour && l.photometric == "MONOCHROME1";
    let mut info = image_info(obj, l, bits_stored);
    if !is_colour {
        info.frame_windows = per_frame_windows(ds, &frames_out, &windows);
    }
    ImageStack {
        source: path.to_path_buf(),
        frames: frames_out,
        windows,
        invert,
        metadata: metadata::metadata_tree(obj),
        info,
        overlays: overlay::overlay_planes(ds),
        warnings: Vec::new(),
    }
}

fn voi_function(ds: &Obj) -> Option<VoiFunction> {
    attrs::string(ds, tags::VOILUT_FUNCTION).map(|f| match f.to_ascii_uppercase().as_str() {
        "LINEAR_EXACT" => VoiFunction::LinearExact,
        "SIGMOID" => VoiFunction::Sigmoid,
        _ => VoiFunction::Linear,
    })
}

/// Windows of one attribute set (top level or a Frame VOI LUT functional group).
fn windows_in(ds: &Obj, default_function: VoiFunction) -> Vec<Window> {
    let (Some(centers), Some(widths)) = (
        attrs::f64s(ds, tags::WINDOW_CENTER),
        attrs::f64s(ds, tags::WINDOW_WIDTH),
    ) else {
        return Vec::new();
    };
    let explanations = attrs::strings(ds, tags::WINDOW_CENTER_WIDTH_EXPLANATION);
    let function = voi_function(ds).unwrap_or(default_function);
    centers
        .iter()
        .zip(&widths)
        .enumerate()
        .filter(|(_, (_, w))| **w > 0.0)
        .map(|(i, (&center, &width))| Window {
            center,
            width,
            function,
            label: explanations
                .get(i)
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("C {center} / W {width}")),
            lut: None,
        })
        .collect()
}

/// Presets from the VOI LUT Sequence of one attribute set: each LUT, with center and width
/// spanning the values it maps, labelled by its LUT Explanation.
fn voi_lut_windows(ds: &Obj, signed_input: bool) -> Vec<Window> {
    lut::voi_luts(ds, signed_input)
        .into_iter()
        .enumerate()
        .map(|(i, (table, explanation))| {
            let n = table.data.len() as f64;
            Window {
                center: table.first_mapped as f64 + n / 2.0,
                width: n,
                function: VoiFunction::Linear,
                label: explanation
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| format!("VOI LUT {}", i.saturating_add(1))),
                lut: Some(VoiLut {
                    first_mapped: table.first_mapped,
                    data: table.data,
                    bits: table.bits,
                }),
            }
        })
        .collect()
}

/// The file's window presets (top level, then the first frame's Frame VOI LUT group), then
/// "Full range" over all frames.
/// Whether two presets do the same thing (labels aside).
fn same_preset(a: &Window, b: &Window) -> bool {
    a.center == b.center && a.width == b.width && a.function == b.function && a.lut == b.lut
}

/// The windows and VOI LUTs of one Frame VOI LUT functional group.
fn group_presets(group: &Obj, default_function: VoiFunction, signed_input: bool) -> Vec<Window> {
    let mut out = windows_in(group, default_function);
    out.extend(voi_lut_windows(group, signed_input));
    out
}

/// Per-frame presets of an enhanced multi-frame file whose Per-Frame Functional Groups give
/// frames different Frame VOI LUT groups: entry k is frame k's own presets followed by the
/// stack's others. Empty when all frames share their presets (the stack's list serves all).
fn per_frame_windows(ds: &Obj, frames: &[Frame], stack: &[Window]) -> Vec<Vec<Window>> {
    let per_frame = attrs::items(ds, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let top_function = voi_function(ds).unwrap_or_default();
    let signed_input = frames.iter().flat_map(|f| &f.data).any(|v| *v < 0.0);
    let own: Vec<Vec<Window>> = (0..frames.len())
        .map(|k| {
            per_frame
                .get(k)
                .and_then(|item| attrs::items(item, tags::FRAME_VOILUT_SEQUENCE).first())
                .map(|g| group_presets(g, top_function, signed_input))
                .unwrap_or_default()
        })
        .collect();
    if own.iter().all(|w| w == &own[0]) {
        return Vec::new();
    }
    // The stack's list leads with frame 0's own presets: those are not the other frames'.
    let others: Vec<&Window> = stack
        .iter()
        .filter(|w| !own[0].iter().any(|p| same_preset(p, w)))
        .collect();
    own.into_iter()
        .map(|mut presets| {
            for &w in &others {
                if !presets.iter().any(|p| same_preset(p, w)) {
                    presets.push(w.clone());
                }
            }
            presets
        })
        .collect()
}

fn window_presets(ds: &Obj, frames: &[Frame]) -> Vec<Window> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut integral = true;
    for v in frames.iter().flat_map(|f| f.data.iter()) {
        if v.is_finite() {
            let v = f64::from(*v);
            lo = lo.min(v);
            hi = hi.max(v);
            integral &= v.fract() == 0.0;
        }
    }
    let top_function = voi_function(ds).unwrap_or_default();
    // VOI LUT Sequence presets come after the windows (PS3.3 C.11.2: either may be applied).
    let mut out = group_presets(ds, top_function, lo < 0.0);
    if let Some(g) = attrs::functional_group(ds, 0, tags::FRAME_VOILUT_SEQUENCE) {
        out.extend(group_presets(g, top_function, lo < 0.0));
    }
    let mut unique: Vec<Window> = Vec::with_capacity(out.len().saturating_add(1));
    for w in out {
        if !unique.iter().any(|u| same_preset(u, &w)) {
            unique.push(w);
        }
    }
    // `lo`, `hi` are never NaN (non-finite samples are skipped): `hi <= lo` covers "no data".
    let full = if integral || hi <= lo {
        Window::full_range(lo, hi)
    } else {
        // Non-integer data: map min to 0 and max to 255 exactly.
        Window {
            center: (lo + hi) / 2.0,
            width: hi - lo,
            function: VoiFunction::LinearExact,
            label: "Full range".to_string(),
            lut: None,
        }
    };
    unique.push(full);
    unique
}

fn image_info(obj: &DefaultDicomObject, l: &Layout, bits_stored: u16) -> ImageInfo {
    let ds: &Obj = obj;
    // Per frame, from the functional groups, or from an RT Dose's Grid Frame Offset Vector.
    let frame_positions = super::geometry::frame_geometries(ds, l.frames)
        .into_iter()
        .take(l.frames)
        .map(|g| g.position)
        .collect();
    ImageInfo {
        modality: attrs::string(ds, tags::MODALITY),
        study_instance_uid: attrs::string(ds, tags::STUDY_INSTANCE_UID),
        series_instance_uid: attrs::string(ds, tags::SERIES_INSTANCE_UID),
        sop_instance_uid: attrs::string(ds, tags::SOP_INSTANCE_UID),
        frame_of_reference_uid: attrs::string(ds, tags::FRAME_OF_REFERENCE_UID),
        instance_number: attrs::int_opt(ds, tags::INSTANCE_NUMBER)
            .and_then(|v| i32::try_from(v).ok()),
        pixel_spacing: attrs::fixed::<2>(attrs::frame_f64s(
            ds,
            0,
            tags::PIXEL_MEASURES_SEQUENCE,
            tags::PIXEL_SPACING,
        )),
        slice_thickness: attrs::frame_f64s(
            ds,
            0,
            tags::PIXEL_MEASURES_SEQUENCE,
            tags::SLICE_THICKNESS,
        )
        .and_then(|v| v.first().copied()),
        image_orientation: attrs::fixed::<6>(attrs::frame_f64s(
            ds,
            0,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )),
        frame_positions,
        photometric: Some(l.photometric.clone()),
        bits_stored: Some(bits_stored),
        transfer_syntax_uid: Some(obj.meta().transfer_syntax().to_string()),
        frame_windows: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_signed_12_bit_in_16_with_garbage_high_bits() {
        // 0xF800 | 0x0800 -> stored 12-bit value 0x800 = -2048; 0x07FF = 2047; 0x0FFF = -1.
        let bytes = [0x00, 0xF8, 0xFF, 0x07, 0xFF, 0x0F];
        let v = extract(&bytes, 3, 16, 12, 11, true, false, 0);
        assert_eq!(v, vec![-2048.0, 2047.0, -1.0]);
        let u = extract(&bytes, 3, 16, 12, 11, false, false, 0);
        assert_eq!(u, vec![2048.0, 2047.0, 4095.0]);
    }

    #[test]
    fn extract_big_endian_and_32_bit_and_1_bit() {
        assert_eq!(
            extract(&[0x01, 0x02], 1, 16, 16, 15, false, true, 0),
            vec![258.0]
        );
        assert_eq!(
            extract(&[0xFF, 0xFF, 0xFF, 0xFF], 1, 32, 32, 31, true, false, 0),
            vec![-1.0]
        );
        // bits are little-endian within a byte; offset 3 starts at the 4th bit.
        assert_eq!(
            extract(&[0b0001_1000], 2, 1, 1, 0, false, false, 3),
            vec![1.0, 1.0]
        );
    }

    #[test]
    fn ybr_full_grey_and_primaries() {
        assert_eq!(
            ybr_full_to_rgb(100.0, 128.0, 128.0, 255.0),
            [100.0, 100.0, 100.0]
        );
        // Pure red in full-range YCbCr (BT.601): Y 76.245, Cb 84.972, Cr 255.5 (clamped 255).
        let [r, g, b] = ybr_full_to_rgb(76.245, 84.972, 255.0, 255.0);
        assert!(
            (r - 254.0).abs() <= 1.0 && g <= 1.0 && b <= 1.0,
            "{r} {g} {b}"
        );
    }
}
