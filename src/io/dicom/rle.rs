//! DICOM RLE Lossless (PS3.5 Annex G) frames.
//!
//! The registry's RLE adapter indexes its output with lengths taken from the segments and
//! panics on short or overlapping segments (found by the mutation test). The format is
//! small, so frames are decoded here with every offset and length checked, giving errors
//! that say which segment is wrong.

/// Decodes one RLE frame into interleaved little-endian samples (the layout the other
/// decoders produce): `pixels * samples_per_pixel * bytes_per_sample` bytes.
pub(super) fn decode_frame(
    data: &[u8],
    pixels: usize,
    samples_per_pixel: usize,
    bytes_per_sample: usize,
) -> Result<Vec<u8>, String> {
    let header = data
        .get(..64)
        .ok_or("RLE frame shorter than its 64-byte header")?;
    let word = |i: usize| {
        u32::from_le_bytes([
            header[i * 4],
            header[i * 4 + 1],
            header[i * 4 + 2],
            header[i * 4 + 3],
        ]) as usize
    };
    let segments = word(0);
    let expected = samples_per_pixel * bytes_per_sample;
    if segments != expected {
        return Err(format!(
            "RLE header lists {segments} segment(s), expected {expected}"
        ));
    }
    let mut out = vec![0u8; pixels * expected];
    for k in 0..segments {
        let start = word(k + 1);
        let end = if k + 1 < segments {
            word(k + 2)
        } else {
            data.len()
        };
        if start < 64 || start > end || end > data.len() {
            return Err(format!(
                "RLE segment {} has invalid offsets {start}..{end} (frame of {} bytes)",
                k + 1,
                data.len()
            ));
        }
        let seg = unpack_bits(&data[start..end], pixels)
            .ok_or_else(|| format!("RLE segment {} decodes to fewer than {pixels} bytes", k + 1))?;
        let (sample, byte) = (k / bytes_per_sample, k % bytes_per_sample);
        // Segments run from the most significant byte down; output is little endian.
        let offset = sample * bytes_per_sample + (bytes_per_sample - 1 - byte);
        for (p, &v) in seg.iter().enumerate() {
            out[p * expected + offset] = v;
        }
    }
    Ok(out)
}

/// PackBits: a header byte n in 0..=127 copies n + 1 literal bytes, -127..=-1 repeats the next
/// byte 1 - n times, -128 is a no-op. Stops once `len` bytes are out; `None` if the data ends
/// before that.
fn unpack_bits(src: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len {
        let n = *src.get(i)? as i8;
        i += 1;
        if n >= 0 {
            let count = n as usize + 1;
            out.extend_from_slice(src.get(i..i + count)?);
            i += count;
        } else if n != -128 {
            let v = *src.get(i)?;
            i += 1;
            out.extend(std::iter::repeat_n(v, 1 + (-(n as i32)) as usize));
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
                .contains("segment 1")
        );
    }
}
