//! A memory-mapped safetensors file: header validation with clear errors, and tensor reads
//! converted to f32 one at a time.
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::WeightsError;

/// An open, validated safetensors file.
pub(crate) struct WeightFile {
    pub path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    metadata: Metadata,
}

/// Data types the loader converts to f32.
pub(crate) fn supported_dtype(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

impl WeightFile {
    /// Opens and validates `path` (header, offsets, file length). Reads only the header.
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let io = |source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(io(crate::io::is_a_directory_error()));
        }
        let len = meta.len();
        let not = |detail: String| WeightsError::NotSafetensors {
            path: path.to_path_buf(),
            detail,
        };
        let truncated = |detail: String| WeightsError::Truncated {
            path: path.to_path_buf(),
            detail,
        };
        if len < 8 {
            return Err(not(format!(
                "the file has {len} bytes, fewer than a safetensors header"
            )));
        }
        // SAFETY: the map is read-only and private to this loader. As with any mmap, a file
        // truncated by another process while we read it would fault; weight files are not
        // rewritten in place.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let n = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes"));
        if n > 100_000_000 || mmap.get(8) != Some(&b'{') {
            return Err(not(format!(
                "it does not start with a safetensors header (first bytes {:02x?})",
                &mmap[..mmap.len().min(12)]
            )));
        }
        if 8 + n > len {
            return Err(truncated(format!(
                "the header declares {n} bytes but the file ends after {} (cut inside the header)",
                len - 8
            )));
        }
        let (header_len, metadata) = match SafeTensors::read_metadata(&mmap) {
            Ok(x) => x,
            Err(SafeTensorError::MetadataIncompleteBuffer) => {
                // Compute what the header declares to say by how much.
                let header: serde_json::Value = serde_json::from_slice(&mmap[8..8 + n as usize])
                    .map_err(|e| not(format!("header is not JSON: {e}")))?;
                let end = header
                    .as_object()
                    .map(|o| {
                        o.values()
                            .filter_map(|v| v.get("data_offsets")?.get(1)?.as_u64())
                            .max()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0);
                let want = 8 + n + end;
                return Err(if len < want {
                    truncated(format!(
                        "the header declares {want} bytes of file but it has only {len}"
                    ))
                } else {
                    not(format!(
                        "{} bytes follow the last tensor (the header declares {want})",
                        len - want
                    ))
                });
            }
            Err(e) => return Err(not(format!("invalid header: {e}"))),
        };
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    /// All tensor names with their info.
    pub fn tensors(&self) -> Vec<(String, &TensorInfo)> {
        let mut v: Vec<_> = self.metadata.tensors().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Info of one tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.metadata.info(name)
    }

    /// A `__metadata__` entry of the header.
    pub fn user_metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .metadata()
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// File size in bytes.
    pub fn len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// Reads a tensor as f32 (row-major), converting f16 / bf16 / f64. The mapped pages are
    /// released afterwards so that the file does not stay resident beside the converted
    /// weights (peak memory ~ weights + one tensor, not weights + file).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, WeightsError> {
        let info = self.info(name).ok_or_else(|| WeightsError::Internal {
            detail: format!("tensor {name} vanished from {}", self.path.display()),
        })?;
        let (start, end) = info.data_offsets;
        let bytes = &self.mmap[self.data_start + start..self.data_start + end];
        let out = super::super::format::f32_from_le_bytes(info.dtype, bytes).map_err(|_| {
            WeightsError::UnsupportedDtype {
                path: self.path.clone(),
                key: name.to_string(),
                dtype: format!("{:?}", info.dtype),
            }
        })?;
        self.release(self.data_start + start, end - start);
        Ok(out)
    }

    #[cfg(unix)]
    fn release(&self, offset: usize, len: usize) {
        // Only whole pages inside the range, so neighbouring tensors are not affected.
        const PAGE: usize = 4096;
        let first = offset.div_ceil(PAGE) * PAGE;
        let last = (offset + len) / PAGE * PAGE;
        if last > first {
            // SAFETY: the mapping is a read-only shared file mapping; MADV_DONTNEED only drops
            // our page-table entries, and any later read of the range faults the same bytes
            // back in from the file. No reference into the range is held past this call.
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    first,
                    last - first,
                )
            };
        }
    }

    #[cfg(not(unix))]
    fn release(&self, _offset: usize, _len: usize) {}
}
