//! Detector checkpoints in use: open one onto a backbone (identity check, organ word, memory
//! bank rebuilt from the stored shots) and write one.
use std::path::Path;

use burn::prelude::*;

use super::{Backbone, WorkflowError};
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::detector::{Detector, TaskKind};
use crate::train::fit::support_groups;
use crate::train::select::SelectionReport;
use crate::weights::adapters::{AdapterCheckpointMeta, read_checkpoint_meta};
use crate::weights::detector::load_detector;

/// A detector read from a checkpoint, ready to score.
pub struct OpenedDetector<B: Backend> {
    /// The detector with its memory bank and calibration.
    pub detector: Detector<B, VisionTransformer<B>>,
    /// `None` for an imported reference `.pth`.
    pub meta: Option<AdapterCheckpointMeta>,
    /// The normal support shots `[3, S, S]` the memory bank was rebuilt from.
    pub normal_shots: Vec<Vec<f32>>,
    /// The organ word the prompts use.
    pub organ: String,
    /// Set when the organ word differs from the checkpoint's.
    pub note: Option<String>,
    /// How the fit that wrote the checkpoint chose the detector, when the file says.
    pub selection: Option<SelectionReport>,
}

/// The organ word to score a checkpoint with: the user's, else the checkpoint's. The second
/// value is a note when the two differ (allowed, but worth saying).
pub fn resolve_organ(
    requested: Option<&str>,
    meta: Option<&AdapterCheckpointMeta>,
    checkpoint: &Path,
) -> Result<(String, Option<String>), WorkflowError> {
    let stored = meta.and_then(|m| m.organ_word.as_deref());
    match (requested, stored) {
        (Some(word), Some(stored))
            if word.trim().to_lowercase() != stored.trim().to_lowercase() =>
        {
            Ok((
                word.to_string(),
                Some(format!(
                    "scoring with the organ word {word:?}; the checkpoint was fitted with {stored:?}"
                )),
            ))
        }
        (Some(word), _) | (None, Some(word)) => Ok((word.to_string(), None)),
        (None, None) => Err(WorkflowError::NoOrganWord {
            what: format!("the checkpoint {}", checkpoint.display()),
        }),
    }
}

/// Opens the checkpoint at `path` (ours, or a reference `.pth` as a zero-shot detector) on
/// `backbone`: reads its metadata, checks that it belongs to this backbone, builds the text
/// features of the organ word, loads adapters and calibration, and rebuilds the memory bank
/// from the stored normal shots. `default_task` applies where the file does not say.
pub fn open_detector<B: Backend>(
    backbone: &mut Backbone<B>,
    path: &Path,
    organ: Option<&str>,
    default_task: TaskKind,
    batch_size: usize,
) -> Result<OpenedDetector<B>, WorkflowError> {
    let meta = read_checkpoint_meta(path)?;
    let (organ, note) = resolve_organ(organ, meta.as_ref(), path)?;
    backbone.check_identity(path, meta.as_ref())?;
    let text = backbone.text_features(&organ)?;
    let mixing = meta.as_ref().map(|m| m.mixing).unwrap_or_default();
    let scoring = backbone.scoring_config();
    let device = backbone.device().clone();
    let loaded = load_detector::<B>(
        path,
        backbone.vision().clone(),
        text,
        &backbone.adapters_config(mixing, 0),
        &scoring,
        default_task,
        batch_size,
        &device,
    )
    .map_err(|e| WorkflowError::DetectorFile {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let mut detector = loaded.detector;
    if !loaded.normal_shots.is_empty() {
        let shots: Vec<&[f32]> = loaded.normal_shots.iter().map(Vec::as_slice).collect();
        let groups = support_groups::<B>(&shots, scoring.image_size, &device)?;
        detector
            .set_support(groups)
            .map_err(|source| WorkflowError::Model {
                context: format!("{}: rebuilding the memory bank", path.display()),
                source,
            })?;
    }
    Ok(OpenedDetector {
        detector,
        meta: loaded.meta,
        normal_shots: loaded.normal_shots,
        organ,
        note,
        selection: loaded.selection,
    })
}

/// Metadata for a checkpoint fitted on `backbone`: organ word, shots, epochs, backbone
/// identity (with a weights hash prefix when the weights file can be hashed), provenance.
pub fn checkpoint_meta<B: Backend>(
    backbone: &Backbone<B>,
    organ: &str,
    normal_shots: usize,
    epochs: usize,
    source: String,
) -> AdapterCheckpointMeta {
    let mut identity = backbone.identity();
    identity.weights_sha256_prefix = backbone
        .weights_sha256()
        .ok()
        .map(|h| h.chars().take(16).collect());
    AdapterCheckpointMeta {
        organ_word: Some(organ.to_string()),
        shots: Some(normal_shots),
        epochs: Some(epochs),
        backbone: Some(identity),
        source: Some(source),
        ..Default::default()
    }
}

/// Writes `detector` with its normal support shots and the report of how it was chosen to
/// `path` (atomically).
pub fn save_detector<B: Backend>(
    path: &Path,
    detector: &Detector<B, VisionTransformer<B>>,
    normal_shots: &[Vec<f32>],
    selection: Option<&SelectionReport>,
    meta: AdapterCheckpointMeta,
) -> Result<(), WorkflowError> {
    crate::weights::detector::save_detector(path, detector, normal_shots, selection, meta).map_err(
        |e| WorkflowError::DetectorFile {
            path: path.to_path_buf(),
            source: e.into(),
        },
    )
}
