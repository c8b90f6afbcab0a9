//! Scoring images and frames to results: every level and branch, the calibrated fused map and
//! the image score, per frame.
use std::path::Path;

use burn::prelude::*;

use super::WorkflowError;
use crate::io::input::{ModelImage, load_model_images};
use crate::io::model_input::batch_tensor;
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::detector::{Detector, ImageResult};
use crate::model::mvfa::scoring::resize_map_to_original;

/// One scored frame.
pub struct ScoredFrame {
    /// The frame as the model saw it (and its display image).
    pub image: ModelImage,
    /// Raw branches per level, calibrated fused map and score.
    pub result: ImageResult,
}

/// Scores frames in batches of the detector's batch size. Each result depends only on its
/// own frame.
pub fn score_frames<B: Backend>(
    detector: &Detector<B, VisionTransformer<B>>,
    frames: &[ModelImage],
    device: &B::Device,
) -> Result<Vec<ImageResult>, WorkflowError> {
    let size = detector.scorer().config().image_size;
    let mut results = Vec::with_capacity(frames.len());
    for chunk in frames.chunks(detector.batch_size()) {
        let views: Vec<&[f32]> = chunk.iter().map(|f| f.input.as_slice()).collect();
        let images = batch_tensor::<B>(&views, [3, size, size], device)?;
        let scored = detector
            .score(images)
            .map_err(|source| WorkflowError::Model {
                context: chunk
                    .first()
                    .map_or_else(String::new, |f| f.source.display().to_string()),
                source,
            })?;
        results.extend(scored);
    }
    Ok(results)
}

/// Scores every frame of the image file at `path`.
pub fn score_file<B: Backend>(
    detector: &Detector<B, VisionTransformer<B>>,
    path: &Path,
    device: &B::Device,
) -> Result<Vec<ScoredFrame>, WorkflowError> {
    let frames = load_model_images(path)?;
    let results = score_frames(detector, &frames, device)?;
    Ok(frames
        .into_iter()
        .zip(results)
        .map(|(image, result)| ScoredFrame { image, result })
        .collect())
}

/// A map at model resolution (`size x size`, row-major) resized to a frame's own
/// `width x height` for display and export (the reference's display resize).
pub fn map_at_original<B: Backend>(
    map: &[f32],
    size: usize,
    width: usize,
    height: usize,
    device: &B::Device,
) -> Result<Vec<f32>, WorkflowError> {
    let views = [map];
    let square = batch_tensor::<B>(&views, [1, size, size], device)?.squeeze_dim::<3>(0);
    Ok(resize_map_to_original(square, height, width)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 after convert"))
}
