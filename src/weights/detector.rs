//! Detector checkpoints: the adapters plus what the few-shot branch and the calibration need,
//! in one safetensors file.
//!
//! Besides the adapter weights and the metadata of [`crate::weights::adapters`], the file holds
//! the normal support shots at model resolution (`extra.normal_shots`, `[k, 3, S, S]`), from
//! which the memory bank is rebuilt at load time (the bank itself is 11k x 290 x 768 floats
//! per level and head, far larger than the shots), and a [`DetectorState`] JSON (task kind and
//! calibration, and the report of how the fit chose the detector) in the metadata's
//! `calibration` entry. When the memory bank comes from other adapters than the text branch
//! (a fit that kept the features from before fine-tuning), those adapters are stored too, as
//! `extra.bank.<reference key>`. A released reference `.pth` loads as a
//! zero-shot detector (no bank, no calibration).
//!
//! This module only reads and writes: rebuilding the memory bank from the stored shots (which
//! runs the augmentation and the backbone) is the workflow layer's job.
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::{MvfaAdapters, MvfaAdaptersConfig};
use crate::model::mvfa::calibration::Calibration;
use crate::model::mvfa::detector::{Detector, TaskKind};
use crate::model::mvfa::scoring::{Scorer, ScoringConfig};
use crate::train::select::SelectionReport;
use crate::weights::adapters::{
    AdapterCheckpointError, AdapterCheckpointMeta, AdapterFileFormat, adapter_tensors,
    adapters_from_tensors, load_adapter_file, read_checkpoint_meta, read_extra_tensors,
    save_adapters_with_extra,
};

/// Why a detector checkpoint could not be written or read. The messages that wrap a cause
/// name the file; the cause is the error's source.
#[derive(Debug, thiserror::Error)]
pub enum DetectorFileError {
    /// The checkpoint's adapter file layer failed (the message names the file).
    #[error(transparent)]
    Checkpoint(Box<AdapterCheckpointError>),
    /// The detector state could not be turned into JSON.
    #[error(transparent)]
    StateJson(#[from] serde_json::Error),
    /// A support shot of the wrong size.
    #[error("support shot has {values} values, expected 3x{size}x{size}")]
    ShotSize {
        /// Values in the shot.
        values: usize,
        /// Model input side.
        size: usize,
    },
    /// Writing the checkpoint failed.
    #[error("{}: could not save the detector", path.display())]
    Save {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        #[source]
        cause: Box<AdapterCheckpointError>,
    },
    /// The detector state in the metadata is not the JSON of a [`DetectorState`].
    #[error("{}: the detector state in the metadata is not readable", path.display())]
    State {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        #[source]
        cause: serde_json::Error,
    },
    /// The memory bank's adapters stored in the checkpoint do not fit the backbone.
    #[error("{}: the memory bank's adapters", path.display())]
    BankAdapters {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        #[source]
        cause: Box<AdapterCheckpointError>,
    },
    /// The adapters could not be read.
    #[error("{}: could not read the adapters", path.display())]
    Adapters {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        #[source]
        cause: Box<AdapterCheckpointError>,
    },
    /// The detector was fitted at another input size than the model runs at.
    #[error(
        "{}: the detector was fitted at {fitted} px, the model runs at {model} px",
        path.display()
    )]
    ImageSize {
        /// The checkpoint.
        path: PathBuf,
        /// Input side of the fit.
        fitted: usize,
        /// Input side of the model.
        model: usize,
    },
    /// The stored support shots do not have the model's input size.
    #[error(
        "{}: support shots have shape {shape:?}, expected [k, 3, {size}, {size}]",
        path.display()
    )]
    ShotShape {
        /// The checkpoint.
        path: PathBuf,
        /// Stored shape.
        shape: Vec<usize>,
        /// Model input side.
        size: usize,
    },
}

impl From<AdapterCheckpointError> for DetectorFileError {
    fn from(e: AdapterCheckpointError) -> Self {
        DetectorFileError::Checkpoint(Box::new(e))
    }
}

type Result<T> = std::result::Result<T, DetectorFileError>;

/// Name of the extra tensor holding the normal support shots.
pub const NORMAL_SHOTS: &str = "normal_shots";

/// Prefix of the extra tensors holding the memory bank's adapters.
pub const BANK_ADAPTERS: &str = "bank.";

/// What a detector needs besides its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    /// What the labels describe, which decides the image-score branch.
    pub task: TaskKind,
    /// Model input side the shots and calibration belong to.
    pub image_size: usize,
    /// The detector's single-image calibration; `None` when it was saved uncalibrated.
    pub calibration: Option<Calibration>,
    /// How the fit chose this detector (every candidate's validation numbers).
    #[serde(default)]
    pub selection: Option<SelectionReport>,
}

/// Writes `detector` with its normal support shots (`[3, S, S]` images at model resolution)
/// atomically.
pub fn save_detector<B: Backend>(
    path: &Path,
    detector: &Detector<B, VisionTransformer<B>>,
    normal_shots: &[Vec<f32>],
    selection: Option<&SelectionReport>,
    mut meta: AdapterCheckpointMeta,
) -> Result<()> {
    let size = detector.scorer().config().image_size;
    let state = DetectorState {
        task: detector.task(),
        image_size: size,
        calibration: detector.calibration().cloned(),
        selection: selection.cloned(),
    };
    meta.calibration = Some(serde_json::to_value(&state)?);
    meta.shots = meta.shots.or(Some(normal_shots.len()));
    let mut values = Vec::with_capacity(normal_shots.len() * 3 * size * size);
    for shot in normal_shots {
        if shot.len() != 3 * size * size {
            return Err(DetectorFileError::ShotSize {
                values: shot.len(),
                size,
            });
        }
        values.extend_from_slice(shot);
    }
    let mut extra = vec![(
        NORMAL_SHOTS.to_string(),
        values,
        vec![normal_shots.len(), 3, size, size],
    )];
    if let Some(bank) = detector.bank_adapters() {
        extra.extend(
            adapter_tensors(bank)
                .into_iter()
                .map(|(key, values, shape)| (format!("{BANK_ADAPTERS}{key}"), values, shape)),
        );
    }
    save_adapters_with_extra(path, detector.adapters(), &meta, &extra).map_err(|cause| {
        DetectorFileError::Save {
            path: path.to_path_buf(),
            cause: Box::new(cause),
        }
    })
}

/// A detector read back from a file.
pub struct LoadedDetector<B: Backend> {
    /// The detector, with adapters, task and calibration restored.
    pub detector: Detector<B, VisionTransformer<B>>,
    /// `None` for an imported reference `.pth`.
    pub meta: Option<AdapterCheckpointMeta>,
    /// The normal support shots, `[3, S, S]` each, from which the memory bank is rebuilt.
    pub normal_shots: Vec<Vec<f32>>,
    /// How the fit chose the detector, when the file says.
    pub selection: Option<SelectionReport>,
}

/// The detector state stored in one of our checkpoints (`None` for a reference `.pth` or a
/// bare adapter file).
pub fn read_detector_state(path: &Path) -> Result<Option<DetectorState>> {
    let Some(meta) = read_checkpoint_meta(path)? else {
        return Ok(None);
    };
    meta.calibration
        .map(|value| {
            serde_json::from_value(value).map_err(|cause| DetectorFileError::State {
                path: path.to_path_buf(),
                cause,
            })
        })
        .transpose()
}

/// The memory bank's adapters stored in a detector checkpoint, when they differ from its text
/// adapters (`None` otherwise, and for a reference `.pth`).
pub fn load_bank_adapters<B: Backend>(
    path: &Path,
    cfg: &MvfaAdaptersConfig,
    device: &B::Device,
) -> Result<Option<MvfaAdapters<B>>> {
    if read_checkpoint_meta(path)?.is_none() {
        return Ok(None);
    }
    let tensors: Vec<_> = read_extra_tensors(path)?
        .into_iter()
        .filter_map(|(name, values, shape)| {
            name.strip_prefix(BANK_ADAPTERS)
                .map(|key| (key.to_string(), values, shape))
        })
        .collect();
    if tensors.is_empty() {
        return Ok(None);
    }
    let adapters = adapters_from_tensors(path, tensors, cfg, device).map_err(|cause| {
        DetectorFileError::BankAdapters {
            path: path.to_path_buf(),
            cause: Box::new(cause),
        }
    })?;
    Ok(Some(adapters))
}

/// Reads a detector checkpoint (ours, or a reference `.pth` as a zero-shot detector) onto
/// `vision` and `text_features`. The detector comes without memory bank; the stored normal
/// shots are returned to rebuild it.
#[allow(clippy::too_many_arguments)]
pub fn load_detector<B: Backend>(
    path: &Path,
    vision: VisionTransformer<B>,
    text_features: Tensor<B, 2>,
    adapters_cfg: &MvfaAdaptersConfig,
    scoring_cfg: &ScoringConfig,
    default_task: TaskKind,
    batch_size: usize,
    device: &B::Device,
) -> Result<LoadedDetector<B>> {
    let loaded = load_adapter_file::<B>(path, adapters_cfg, device).map_err(|cause| {
        DetectorFileError::Adapters {
            path: path.to_path_buf(),
            cause: Box::new(cause),
        }
    })?;
    let mut detector = Detector::new(
        vision,
        loaded.adapters,
        adapters_cfg.clone(),
        Scorer::new(scoring_cfg.clone(), text_features),
        default_task,
        batch_size,
    );
    let mut normal_shots = Vec::new();
    let mut selection = None;
    if loaded.format == AdapterFileFormat::Safetensors {
        let meta = loaded
            .meta
            .as_ref()
            .expect("safetensors files carry metadata");
        if let Some(value) = &meta.calibration {
            let state: DetectorState = serde_json::from_value(value.clone()).map_err(|cause| {
                DetectorFileError::State {
                    path: path.to_path_buf(),
                    cause,
                }
            })?;
            if state.image_size != scoring_cfg.image_size {
                return Err(DetectorFileError::ImageSize {
                    path: path.to_path_buf(),
                    fitted: state.image_size,
                    model: scoring_cfg.image_size,
                });
            }
            detector.set_task(state.task);
            detector.set_calibration(state.calibration);
            selection = state.selection;
        }
        if let Some(bank) = load_bank_adapters::<B>(path, adapters_cfg, device)? {
            detector.set_bank_adapters(Some(bank), None);
        }
        let size = scoring_cfg.image_size;
        for (name, values, shape) in read_extra_tensors(path)? {
            if name != NORMAL_SHOTS {
                continue;
            }
            if shape.len() != 4 || shape[1..] != [3, size, size] {
                return Err(DetectorFileError::ShotShape {
                    path: path.to_path_buf(),
                    shape,
                    size,
                });
            }
            normal_shots = values
                .chunks(3 * size * size)
                .map(<[f32]>::to_vec)
                .collect();
        }
    }
    Ok(LoadedDetector {
        detector,
        meta: loaded.meta,
        normal_shots,
        selection,
    })
}
