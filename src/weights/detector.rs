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
use std::path::Path;

use anyhow::Context;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::{MvfaAdapters, MvfaAdaptersConfig};
use crate::model::mvfa::calibration::Calibration;
use crate::model::mvfa::detector::{Detector, TaskKind};
use crate::model::mvfa::scoring::{Scorer, ScoringConfig};
use crate::train::select::SelectionReport;
use crate::weights::adapters::{
    AdapterCheckpointMeta, AdapterFileFormat, adapter_tensors, adapters_from_tensors,
    load_adapter_file, read_checkpoint_meta, read_extra_tensors, save_adapters_with_extra,
};

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
) -> anyhow::Result<()> {
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
        anyhow::ensure!(
            shot.len() == 3 * size * size,
            "support shot has {} values, expected 3x{size}x{size}",
            shot.len()
        );
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
    save_adapters_with_extra(path, detector.adapters(), &meta, &extra)
        .with_context(|| format!("{}: could not save the detector", path.display()))
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
pub fn read_detector_state(path: &Path) -> anyhow::Result<Option<DetectorState>> {
    let Some(meta) = read_checkpoint_meta(path)? else {
        return Ok(None);
    };
    meta.calibration
        .map(|value| {
            serde_json::from_value(value).with_context(|| {
                format!(
                    "{}: the detector state in the metadata is not readable",
                    path.display()
                )
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
) -> anyhow::Result<Option<MvfaAdapters<B>>> {
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
    let adapters = adapters_from_tensors(path, tensors, cfg, device)
        .with_context(|| format!("{}: the memory bank's adapters", path.display()))?;
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
) -> anyhow::Result<LoadedDetector<B>> {
    let loaded = load_adapter_file::<B>(path, adapters_cfg, device)
        .with_context(|| format!("{}: could not read the adapters", path.display()))?;
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
            let state: DetectorState =
                serde_json::from_value(value.clone()).with_context(|| {
                    format!(
                        "{}: the detector state in the metadata is not readable",
                        path.display()
                    )
                })?;
            anyhow::ensure!(
                state.image_size == scoring_cfg.image_size,
                "{}: the detector was fitted at {} px, the model runs at {} px",
                path.display(),
                state.image_size,
                scoring_cfg.image_size
            );
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
            anyhow::ensure!(
                shape.len() == 4 && shape[1..] == [3, size, size],
                "{}: support shots have shape {shape:?}, expected [k, 3, {size}, {size}]",
                path.display()
            );
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
