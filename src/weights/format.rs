//! Bytes on disk shared by every weights reader: float decoding and telling a PyTorch
//! checkpoint from a safetensors file by its first bytes.
use std::io::Read;
use std::path::Path;

use safetensors::Dtype;

/// A tensor stored in a type that is not floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("dtype {0:?} is not a floating-point type")]
pub struct NotFloatError(pub Dtype);

/// Little-endian floats of `dtype` as f32 (f64 rounded, f16 / bf16 widened).
pub fn f32_from_le_bytes(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, NotFloatError> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(NotFloatError(other)),
    })
}

/// Whether a file starting with `head` (its first 9 bytes, or fewer for a shorter file) is a
/// PyTorch checkpoint: a ZIP (`PK\x03\x04`, `torch.save` since PyTorch 1.6) or a raw pickle
/// (protocol opcode `\x80` and a protocol of 2 to 5). A safetensors file starts with its
/// header's length (8 bytes, little-endian) and then the header's `{`: its first byte is
/// `\x80` whenever that length is 128 modulo 256, so the `{` decides.
pub fn is_pytorch_checkpoint(head: &[u8]) -> bool {
    if head.get(8) == Some(&b'{') {
        return false;
    }
    head.starts_with(b"PK\x03\x04")
        || (head.first() == Some(&0x80) && head.get(1).is_some_and(|p| (2..=5).contains(p)))
}

/// [`is_pytorch_checkpoint`] on the first bytes of the file at `path`.
pub fn file_is_pytorch_checkpoint(path: &Path) -> std::io::Result<bool> {
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)?.take(9).read_to_end(&mut head)?;
    Ok(is_pytorch_checkpoint(&head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_float_type() {
        let one_and_half = |dtype, bytes: &[u8]| f32_from_le_bytes(dtype, bytes).unwrap();
        assert_eq!(one_and_half(Dtype::F32, &1.5f32.to_le_bytes()), [1.5]);
        assert_eq!(one_and_half(Dtype::F64, &1.5f64.to_le_bytes()), [1.5]);
        assert_eq!(
            one_and_half(Dtype::F16, &half::f16::from_f32(1.5).to_le_bytes()),
            [1.5]
        );
        assert_eq!(
            one_and_half(Dtype::BF16, &half::bf16::from_f32(1.5).to_le_bytes()),
            [1.5]
        );
        assert!(f32_from_le_bytes(Dtype::I64, &[0; 8]).is_err());
    }

    #[test]
    fn sniffs_pytorch_files() {
        assert!(is_pytorch_checkpoint(b"PK\x03\x04rest"));
        assert!(is_pytorch_checkpoint(&[0x80, 2]));
        assert!(!is_pytorch_checkpoint(&[8, 0, 0, 0, 0, 0, 0, 0]));
        // A safetensors header of 0x0280 bytes starts like a protocol-2 pickle.
        assert!(!is_pytorch_checkpoint(&[0x80, 2, 0, 0, 0, 0, 0, 0, b'{']));
        assert!(!is_pytorch_checkpoint(&[0x80, 0x41, 0, 0, 0, 0, 0, 0]));
        assert!(!is_pytorch_checkpoint(&[]));
    }
}
