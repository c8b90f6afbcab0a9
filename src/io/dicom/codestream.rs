//! Checks on compressed frames before they reach a decoder, and the one JPEG case the
//! registry's adapter gets wrong.
//!
//! A decoder allocates what its codestream header says. A corrupted or hostile header
//! (65535 x 65535 x 3) would make it allocate gigabytes before failing, and an allocation
//! failure aborts the process (it cannot be caught like a panic). So the header dimensions
//! of every JPEG, JPEG-LS and JPEG 2000 frame are read here and must match the DICOM Rows,
//! Columns and SamplesPerPixel.
//!
//! Offsets into a frame come from the frame itself: they are computed with checked
//! arithmetic, as are all sizes in this module.
#![deny(clippy::arithmetic_side_effects)]
use super::ts;

/// Width, height and component count from a codestream header, when one is found.
pub(super) fn dimensions(ts_uid: &str, frame: &[u8]) -> Option<(u32, u32, u32)> {
    if ts::starts_with_soi(ts_uid) {
        jpeg_sof(frame)
    } else if ts::is_jpeg2000(ts_uid) {
        j2k_siz(frame)
    } else {
        None
    }
}

/// The SOF (or JPEG-LS SOF55) segment of a JPEG stream: (X, Y, Nf).
fn jpeg_sof(data: &[u8]) -> Option<(u32, u32, u32)> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2usize;
    loop {
        let head = data.get(i..i.checked_add(4)?)?;
        if head[0] != 0xFF {
            return None;
        }
        let marker = head[1];
        if marker == 0xFF {
            i = i.checked_add(1)?; // fill byte
            continue;
        }
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        // The segment length counts its own two bytes, not the marker.
        let next = i.checked_add(2)?.checked_add(len)?;
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof || marker == 0xF7 {
            let seg = data.get(i.checked_add(4)?..next)?;
            let y = u32::from(u16::from_be_bytes([*seg.get(1)?, *seg.get(2)?]));
            let x = u32::from(u16::from_be_bytes([*seg.get(3)?, *seg.get(4)?]));
            let nf = u32::from(*seg.get(5)?);
            return Some((x, y, nf));
        }
        if marker == 0xDA || marker == 0xD9 {
            return None; // scan data before any frame header
        }
        i = next;
    }
}

/// The `N` bytes of `head` at `at + offset`, if they are there.
fn be_bytes<const N: usize>(head: &[u8], at: usize, offset: usize) -> Option<[u8; N]> {
    let start = at.checked_add(offset)?;
    head.get(start..start.checked_add(N)?)?.try_into().ok()
}

/// The SIZ segment of a JPEG 2000 codestream (raw or inside a JP2 file): (Xsiz - XOsiz,
/// Ysiz - YOsiz, Csiz).
fn j2k_siz(data: &[u8]) -> Option<(u32, u32, u32)> {
    let head = &data[..data.len().min(4096)];
    let p = head
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?
        .checked_add(2)?;
    let u32_at = |o: usize| be_bytes(head, p, o).map(u32::from_be_bytes);
    let xsiz = u32_at(6)?;
    let ysiz = u32_at(10)?;
    let xo = u32_at(14)?;
    let yo = u32_at(18)?;
    let csiz = u32::from(u16::from_be_bytes(be_bytes(head, p, 38)?));
    Some((xsiz.checked_sub(xo)?, ysiz.checked_sub(yo)?, csiz))
}

/// Whether a JPEG 2000 codestream (raw or inside a JP2 file) applies its multiple component
/// transform: the MCT flag of the main header's COD segment. Without it, a decoder returns
/// the components as stored, e.g. YBR_FULL samples the reader must convert to RGB.
pub(super) fn j2k_mct(data: &[u8]) -> Option<bool> {
    let head = &data[..data.len().min(65536)];
    let mut i = head
        .windows(2)
        .position(|w| w == [0xFF, 0x4F])?
        .checked_add(2)?;
    loop {
        let marker = head.get(i..i.checked_add(2)?)?;
        match marker {
            // COD: Lcod, Scod, progression order, layers (2 bytes), then the MCT flag.
            [0xFF, 0x52] => return head.get(i.checked_add(8)?).map(|&m| m != 0),
            // Start of tile (or of data): the main header ended without a COD.
            [0xFF, 0x90] | [0xFF, 0x93] => return None,
            [0xFF, _] => {
                let len = usize::from(u16::from_be_bytes(be_bytes(head, i, 2)?));
                i = i.checked_add(2)?.checked_add(len)?;
            }
            _ => return None,
        }
    }
}

/// True when a JPEG stream has an Adobe APP14 segment (which carries its own colour
/// transform flag that decoders follow).
fn has_adobe_app14(data: &[u8]) -> bool {
    let head = &data[..data.len().min(65536)];
    head.windows(9)
        .any(|w| w[0] == 0xFF && w[1] == 0xEE && &w[4..9] == b"Adobe")
}

/// Why a JPEG frame could not be decoded as stored RGB.
#[derive(Debug, thiserror::Error)]
pub(super) enum JpegRgbError {
    #[error("decoded {found} bytes, expected {expected}")]
    Short { found: usize, expected: usize },
    #[error(transparent)]
    Decoder(#[from] jpeg_decoder::Error),
}

/// Decodes a JPEG frame whose DICOM PhotometricInterpretation is RGB without colour
/// conversion. `jpeg-decoder` assumes YCbCr for 3-component streams without JFIF or Adobe
/// markers; DICOM's RGB says the components are R, G, B as stored (PS3.5 8.2.1), which is how
/// GDCM and pydicom read them. Returns `None` when the generic adapter is right (an Adobe
/// marker states the transform) so that the caller uses it.
pub(super) fn decode_jpeg_rgb_as_stored(
    data: &[u8],
    expected_len: usize,
) -> Option<Result<Vec<u8>, JpegRgbError>> {
    if has_adobe_app14(data) {
        return None;
    }
    let mut decoder = jpeg_decoder::Decoder::new(data);
    decoder.set_color_transform(jpeg_decoder::ColorTransform::None);
    decoder.set_max_decoding_buffer_size(expected_len.saturating_mul(2).max(1 << 16));
    Some(match decoder.decode() {
        Ok(px) if px.len() >= expected_len => Ok(px),
        Ok(px) => Err(JpegRgbError::Short {
            found: px.len(),
            expected: expected_len,
        }),
        Err(e) => Err(JpegRgbError::Decoder(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jpeg_sof_after_other_segments() {
        // SOI, APP0 (len 4), SOF0: P=8, Y=2, X=3, Nf=1.
        let data = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00,
            0x02, 0x00, 0x03, 0x01, 0x01, 0x11, 0x00,
        ];
        assert_eq!(jpeg_sof(&data), Some((3, 2, 1)));
        assert_eq!(dimensions("1.2.840.10008.1.2.4.50", &data), Some((3, 2, 1)));
        assert_eq!(jpeg_sof(&data[..10]), None);
    }

    #[test]
    fn reads_j2k_siz() {
        let mut d = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for v in [640u32, 480, 0, 0, 640, 480, 0, 0] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(&3u16.to_be_bytes());
        assert_eq!(j2k_siz(&d), Some((640, 480, 3)));
    }
}
