//! JPEG-LS frames (lossless and near-lossless, PS3.5 A.4.3) through the pure-Rust
//! `pure_jpegls` decoder, so that no C++ toolchain or CMake is needed to build.
//!
//! The decoder handles single-component images of 2 to 16 bits, which is what DICOM JPEG-LS
//! images carry in practice (CT, MR, CR, DX). Colour JPEG-LS (SamplesPerPixel 3) is rare and
//! reported as unsupported rather than guessed.
#![deny(clippy::arithmetic_side_effects)]

/// Why a JPEG-LS frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub(super) enum JpegLsError {
    #[error("JPEG-LS with {0} samples per pixel is not supported (only greyscale)")]
    Colour(usize),
    #[error("image size overflows")]
    SizeOverflows,
    /// The decoder's own account.
    #[error("{0}")]
    Codec(String),
    #[error("decoded {w} x {h} pixels ({samples} samples), expected {cols} x {rows}")]
    Size {
        w: u32,
        h: u32,
        samples: usize,
        cols: usize,
        rows: usize,
    },
    #[error("sample {0} exceeds 8 bits allocated")]
    SampleRange(u32),
    #[error("JPEG-LS with BitsAllocated {0} is not supported")]
    BitsAllocated(u16),
}

/// Decodes one JPEG-LS frame into little-endian samples of `bits_allocated` bits, the layout
/// the other decoders produce: `cols * rows` samples. Stored values are returned as coded
/// (two's complement bit patterns for signed data); the caller extracts `bits_stored` bits.
pub(super) fn decode_frame(
    data: &[u8],
    cols: usize,
    rows: usize,
    samples_per_pixel: usize,
    bits_allocated: u16,
) -> Result<Vec<u8>, JpegLsError> {
    if samples_per_pixel != 1 {
        return Err(JpegLsError::Colour(samples_per_pixel));
    }
    let (Ok(width), Ok(height)) = (u32::try_from(cols), u32::try_from(rows)) else {
        return Err(JpegLsError::SizeOverflows);
    };
    let (samples, w, h) =
        jpegls::decode(data, width, height).map_err(|e| JpegLsError::Codec(e.to_string()))?;
    if (w, h) != (width, height) || cols.checked_mul(rows) != Some(samples.len()) {
        return Err(JpegLsError::Size {
            w,
            h,
            samples: samples.len(),
            cols,
            rows,
        });
    }
    match bits_allocated {
        8 => samples
            .iter()
            .map(|&v| u8::try_from(v).map_err(|_| JpegLsError::SampleRange(u32::from(v))))
            .collect(),
        16 => Ok(samples.iter().flat_map(|v| v.to_le_bytes()).collect()),
        other => Err(JpegLsError::BitsAllocated(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::decode_frame;

    #[test]
    fn round_trips_sixteen_and_eight_bit_frames() {
        let pixels: Vec<u16> = (0..64u16).map(|i| i * 997 % 4096).collect();
        let mut coded = Vec::new();
        jpegls::encode(&pixels, 8, 8, &mut coded).unwrap();
        let bytes = decode_frame(&coded, 8, 8, 1, 16).unwrap();
        let back: Vec<u16> = bytes
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(back, pixels);

        let small: Vec<u16> = (0..64u16).map(|i| i * 3).collect();
        let mut coded = Vec::new();
        jpegls::encode(&small, 8, 8, &mut coded).unwrap();
        let bytes = decode_frame(&coded, 8, 8, 1, 8).unwrap();
        assert_eq!(bytes, small.iter().map(|&v| v as u8).collect::<Vec<_>>());
    }

    #[test]
    fn colour_and_truncated_frames_are_clear_errors() {
        let err = decode_frame(&[0xFF, 0xD8], 8, 8, 3, 8).unwrap_err();
        assert!(err.to_string().contains("3 samples per pixel"), "{err}");
        let pixels: Vec<u16> = (0..256u16).collect();
        let mut coded = Vec::new();
        jpegls::encode(&pixels, 16, 16, &mut coded).unwrap();
        coded.truncate(coded.len() / 2);
        assert!(decode_frame(&coded, 16, 16, 1, 16).is_err());
    }
}
