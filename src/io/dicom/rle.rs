//! DICOM RLE Lossless (PS3.5 Annex G) frames.
//!
//! The registry's RLE adapter indexes its output with lengths taken from the segments and
//! panics on short or overlapping segments (found by the mutation test). The format is
//! small, so frames are decoded here with every offset and length checked, giving errors
//! that say which segment is wrong.
#![deny(clippy::arithmetic_side_effects)]

/// What is wrong with an RLE frame.
#[derive(Debug, thiserror::Error)]
pub(super) enum RleError {
    #[error("RLE frame shorter than its 64-byte header")]
    ShortHeader,
    #[error(
        "RLE cannot hold {samples_per_pixel} sample(s) of {bytes_per_sample} byte(s) \
         per pixel (1 to 15 segments)"
    )]
    Layout {
        samples_per_pixel: usize,
        bytes_per_sample: usize,
    },
    #[error("RLE header lists {segments} segment(s), expected {expected}")]
    SegmentCount { segments: usize, expected: usize },
    #[error("RLE frame of {pixels} pixels x {expected} bytes overflows")]
    FrameOverflows { pixels: usize, expected: usize },
    #[error("RLE segment {number} has invalid offsets {start}..{end} (frame of {len} bytes)")]
    Offsets {
        number: usize,
        start: usize,
        end: usize,
        len: usize,
    },
    #[error("RLE segment {number} decodes to fewer than {pixels} bytes")]
    ShortSegment { number: usize, pixels: usize },
    #[error("RLE segment offset overflows")]
    OffsetOverflows,
}

/// Decodes one RLE frame into interleaved little-endian samples (the layout the other
/// decoders produce): `pixels * samples_per_pixel * bytes_per_sample` bytes.
pub(super) fn decode_frame(
    data: &[u8],
    pixels: usize,
    samples_per_pixel: usize,
    bytes_per_sample: usize,
) -> Result<Vec<u8>, RleError> {
    let header = data.get(..64).ok_or(RleError::ShortHeader)?;
    // 16 little-endian words: the segment count, then up to 15 segment offsets.
    let words: Vec<usize> = header
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
        .collect();
    let segments = words[0];
    let expected = samples_per_pixel
        .checked_mul(bytes_per_sample)
        .filter(|&n| n > 0 && n < words.len())
        .ok_or(RleError::Layout {
            samples_per_pixel,
            bytes_per_sample,
        })?;
    if segments != expected {
        return Err(RleError::SegmentCount { segments, expected });
    }
    let size = pixels
        .checked_mul(expected)
        .ok_or(RleError::FrameOverflows { pixels, expected })?;
    let mut out = vec![0u8; size];
    // Segment `number` (1-based) starts at word `number` and ends where the next one starts
    // (the last one at the end of the frame); `number <= segments < words.len()`.
    for (k, number) in (1..=segments).enumerate() {
        let start = words[number];
        let end = if number < segments {
            words[number.saturating_add(1)]
        } else {
            data.len()
        };
        if start < 64 || start > end || end > data.len() {
            return Err(RleError::Offsets {
                number,
                start,
                end,
                len: data.len(),
            });
        }
        let seg = unpack_bits(&data[start..end], pixels)
            .ok_or(RleError::ShortSegment { number, pixels })?;
        // Segments run from the most significant byte down; output is little endian:
        // segment k is byte `bytes_per_sample - 1 - k % bytes_per_sample` of sample
        // `k / bytes_per_sample`, which is below `expected`.
        let offset = (|| {
            let (sample, byte) = (
                k.checked_div(bytes_per_sample)?,
                k.checked_rem(bytes_per_sample)?,
            );
            sample
                .checked_mul(bytes_per_sample)?
                .checked_add(bytes_per_sample.checked_sub(byte)?.checked_sub(1)?)
        })()
        .ok_or(RleError::OffsetOverflows)?;
        for (dst, &v) in out.iter_mut().skip(offset).step_by(expected).zip(&seg) {
            *dst = v;
        }
    }
    Ok(out)
}

/// PackBits: a header byte n in 0..=127 copies n + 1 literal bytes, -127..=-1 repeats the next
/// byte 1 - n times, -128 is a no-op. Stops once `len` bytes are out; `None` if the data ends
/// before that.
fn unpack_bits(src: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0usize;
    while out.len() < len {
        let n = *src.get(i)? as i8;
        i = i.checked_add(1)?;
        if n >= 0 {
            let count = usize::from(n.unsigned_abs()).checked_add(1)?;
            let end = i.checked_add(count)?;
            out.extend_from_slice(src.get(i..end)?);
            i = end;
        } else if n != -128 {
            let v = *src.get(i)?;
            i = i.checked_add(1)?;
            // 1 - n for n in -127..=-1: 2 to 128 copies.
            let count = usize::from(n.unsigned_abs()).checked_add(1)?;
            out.extend(std::iter::repeat_n(v, count));
        }
    }
    out.truncate(len);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literal_and_run() {
        assert_eq!(
            unpack_bits(&[2, 1, 2, 3, 0xFE, 9], 6).unwrap(),
            vec![1, 2, 3, 9, 9, 9]
        );
        assert_eq!(unpack_bits(&[0x80, 0, 7], 1).unwrap(), vec![7]);
        assert!(unpack_bits(&[5, 1], 6).is_none());
    }

    #[test]
    fn two_byte_samples_are_reassembled_little_endian() {
        // One 16-bit sample per pixel, 2 pixels: segment 1 = high bytes, segment 2 = low bytes.
        let mut data = vec![0u8; 64];
        data[0] = 2;
        data[4] = 64;
        data[8] = 67;
        data.extend_from_slice(&[1, 0x01, 0x02, 1, 0x34, 0x56]);
        assert_eq!(
            decode_frame(&data, 2, 1, 2).unwrap(),
            vec![0x34, 0x01, 0x56, 0x02]
        );
        // Offsets pointing outside the frame are errors, not panics.
        data[8] = 200;
        assert!(
            decode_frame(&data, 2, 1, 2)
                .unwrap_err()
                .to_string()
                .contains("segment 1")
        );
    }
}
