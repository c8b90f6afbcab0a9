//! A study's results on disk, beside its project file: every map and score of every scored
//! frame, so that a reopened project shows its heatmaps at once instead of rescoring.
//!
//! One safetensors file: per frame `r{i}.zero.l{level}`, `r{i}.few.l{level}` (seg-head level
//! maps), `r{i}.zero`, `r{i}.few` (their sums) and `r{i}.fused` (calibrated), all `[S, S]`
//! float32; the metadata entry `mvfa_results` holds, per frame, its file, frame index and the
//! image scores (JSON). Written atomically.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::WorkflowError;
use crate::io::export::ExportError;
use crate::io::export::atomic::write_atomically;
use crate::model::mvfa::detector::{ImageResult, RawResult};

/// Metadata key of the frame list.
const META_KEY: &str = "mvfa_results";
/// Layout version of the file.
const VERSION: u32 = 1;

/// The scores and identity of one stored frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    frame: usize,
    zero_image: f32,
    zero_image_levels: Vec<f32>,
    few_image: Option<f32>,
    score: Option<f32>,
    levels: usize,
    size: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    version: u32,
    entries: Vec<Entry>,
}

/// One stored frame: its file, frame index and result.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    /// The scored file.
    pub path: PathBuf,
    /// The frame of the file.
    pub frame: usize,
    /// Every map and score.
    pub result: ImageResult,
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> WorkflowError {
    WorkflowError::Export(ExportError::Invalid(format!(
        "{}: not a results file of this version ({message})",
        path.display()
    )))
}

/// Writes `results` (file, frame, result) to `path`; maps are `size x size`.
pub fn write_results(
    path: &Path,
    results: &[(&Path, usize, &ImageResult)],
    size: usize,
) -> Result<(), WorkflowError> {
    let mut tensors: Vec<(String, Vec<u8>)> = Vec::new();
    let mut entries = Vec::with_capacity(results.len());
    for (i, (file, frame, result)) in results.iter().enumerate() {
        let raw = &result.raw;
        for (l, map) in raw.zero_map_levels.iter().enumerate() {
            tensors.push((format!("r{i}.zero.l{l}"), bytes(map)));
        }
        for (l, map) in raw.few_map_levels.iter().enumerate() {
            tensors.push((format!("r{i}.few.l{l}"), bytes(map)));
        }
        tensors.push((format!("r{i}.zero"), bytes(&raw.zero_map)));
        if let Some(map) = &raw.few_map {
            tensors.push((format!("r{i}.few"), bytes(map)));
        }
        if let Some(map) = &result.fused_map {
            tensors.push((format!("r{i}.fused"), bytes(map)));
        }
        entries.push(Entry {
            path: file.to_path_buf(),
            frame: *frame,
            zero_image: raw.zero_image,
            zero_image_levels: raw.zero_image_levels.clone(),
            few_image: raw.few_image,
            score: result.score,
            levels: raw.zero_map_levels.len(),
            size,
        });
    }
    let views = tensors
        .iter()
        .map(|(name, data)| {
            TensorView::new(Dtype::F32, vec![size, size], data).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, e))?;
    let meta = serde_json::to_string(&Meta {
        version: VERSION,
        entries,
    })
    .map_err(|e| invalid(path, e))?;
    let data = safetensors::serialize(views, Some(HashMap::from([(META_KEY.into(), meta)])))
        .map_err(|e| invalid(path, e))?;
    write_atomically(path, |w| Ok(w.write_all(&data)?))?;
    Ok(())
}

/// Reads a results file written by [`write_results`].
pub fn read_results(path: &Path) -> Result<Vec<StoredResult>, WorkflowError> {
    let data = std::fs::read(path).map_err(|e| {
        WorkflowError::Export(ExportError::Invalid(format!(
            "{}: cannot read the results file: {e}",
            path.display()
        )))
    })?;
    let (_, header) = SafeTensors::read_metadata(&data).map_err(|e| invalid(path, e))?;
    let meta: Meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| invalid(path, "no frame list"))
        .and_then(|text| serde_json::from_str(text).map_err(|e| invalid(path, e)))?;
    if meta.version > VERSION {
        return Err(invalid(path, format!("version {}", meta.version)));
    }
    let tensors = SafeTensors::deserialize(&data).map_err(|e| invalid(path, e))?;
    let map = |name: &str, size: usize| -> Result<Option<Vec<f32>>, WorkflowError> {
        match tensors.tensor(name) {
            Ok(view) => {
                if view.dtype() != Dtype::F32 || view.shape() != [size, size] {
                    return Err(invalid(path, format!("{name} has the wrong shape")));
                }
                Ok(Some(
                    view.data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ))
            }
            Err(_) => Ok(None),
        }
    };
    let mut out = Vec::with_capacity(meta.entries.len());
    for (i, e) in meta.entries.into_iter().enumerate() {
        let required = |name: String| {
            map(&name, e.size)?.ok_or_else(|| invalid(path, format!("{name} is missing")))
        };
        let zero_map_levels = (0..e.levels)
            .map(|l| required(format!("r{i}.zero.l{l}")))
            .collect::<Result<Vec<_>, _>>()?;
        let few_map_levels = (0..e.levels)
            .map(|l| map(&format!("r{i}.few.l{l}"), e.size))
            .collect::<Result<Option<Vec<_>>, _>>()?
            .unwrap_or_default();
        out.push(StoredResult {
            result: ImageResult {
                raw: RawResult {
                    zero_image: e.zero_image,
                    zero_image_levels: e.zero_image_levels,
                    few_image: e.few_image,
                    zero_map: required(format!("r{i}.zero"))?,
                    zero_map_levels,
                    few_map: map(&format!("r{i}.few"), e.size)?,
                    few_map_levels,
                },
                fused_map: map(&format!("r{i}.fused"), e.size)?,
                score: e.score,
            },
            path: e.path,
            frame: e.frame,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(seed: f32, few: bool) -> ImageResult {
        let map = |k: f32| {
            (0..9)
                .map(|i| seed + k + i as f32 * 0.125)
                .collect::<Vec<f32>>()
        };
        ImageResult {
            raw: RawResult {
                zero_image: seed,
                zero_image_levels: vec![seed, seed + 1.0],
                few_image: few.then_some(seed * 2.0),
                zero_map: map(0.0),
                zero_map_levels: vec![map(1.0), map(2.0)],
                few_map: few.then(|| map(3.0)),
                few_map_levels: if few {
                    vec![map(4.0), map(5.0)]
                } else {
                    vec![]
                },
            },
            fused_map: few.then(|| map(6.0)),
            score: few.then_some(seed + 0.5),
        }
    }

    #[test]
    fn results_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.safetensors");
        let (a, b) = (result(0.1, true), result(7.0, false));
        let file = Path::new("/data/x.dcm");
        write_results(&path, &[(file, 0, &a), (file, 3, &b)], 3).unwrap();
        let back = read_results(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].path.as_path(), back[0].frame), (file, 0));
        assert_eq!(back[0].result, a);
        assert_eq!(back[1].frame, 3);
        assert_eq!(back[1].result, b);
    }

    #[test]
    fn a_foreign_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.safetensors");
        std::fs::write(&path, b"not safetensors").unwrap();
        let message = read_results(&path).unwrap_err().to_string();
        assert!(message.contains("not a results file"), "{message}");
    }
}
