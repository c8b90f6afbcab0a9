//! Scoring images and frames to results: every level and branch, the calibrated fused map and
//! the image score, per frame.
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Instant;

use burn::prelude::*;

use super::WorkflowError;
use crate::io::input::{InputError, ModelImage, for_each_model_frame, load_model_images};
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

/// Picks the forward batch size for throughput while scoring. The first batch warms up (lazy
/// initialisation, caches) and is not timed; the next batches try each candidate in turn,
/// their results kept like any other, then the candidate with the least time per image is
/// used for the rest. Batches shorter than their size (the end of a run) are not timed.
///
/// `score` uses [`BatchTuner::fixed`] and the app the detector's batch, so that a run's work
/// is the same from one run to the next; a frame's results do not depend on the batch it runs
/// in (the sums of the scoring head are taken as matrix rows, see
/// [`crate::model::mvfa::scoring::sum_last_dim`]). `mvfa-dev bench --series` tunes, to say
/// which size is fastest on a machine.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchTuner {
    candidates: Vec<usize>,
    /// Seconds per image measured for each candidate.
    per_image: Vec<Option<f64>>,
    warmed_up: bool,
}

impl BatchTuner {
    /// Tries 1, 2, 4, ... up to `max` (at least 1).
    pub fn new(max: usize) -> Self {
        let candidates: Vec<usize> = std::iter::successors(Some(1usize), |b| b.checked_mul(2))
            .take_while(|&b| b <= max.max(1))
            .collect();
        Self {
            per_image: vec![None; candidates.len()],
            candidates,
            warmed_up: false,
        }
    }

    /// A tuner that always uses `batch` (nothing to try).
    pub fn fixed(batch: usize) -> Self {
        Self {
            candidates: vec![batch.max(1)],
            per_image: vec![Some(0.0)],
            warmed_up: true,
        }
    }

    /// The size of the next batch: the warm-up's (the smallest), the next candidate to try,
    /// or the chosen one.
    pub fn next_batch(&self) -> usize {
        if !self.warmed_up {
            return self.candidates[0];
        }
        match self.per_image.iter().position(Option::is_none) {
            Some(i) => self.candidates[i],
            None => self.chosen().unwrap_or(self.candidates[0]),
        }
    }

    /// Records that a batch of `images` images (asked for as `batch`) took `seconds`.
    pub fn record(&mut self, batch: usize, images: usize, seconds: f64) {
        if !self.warmed_up {
            self.warmed_up = true;
            return;
        }
        if images != batch || images == 0 {
            return;
        }
        if let Some(i) = self.candidates.iter().position(|&c| c == batch)
            && self.per_image[i].is_none()
        {
            self.per_image[i] = Some(seconds / images as f64);
        }
    }

    /// The batch size chosen, once every candidate was timed.
    pub fn chosen(&self) -> Option<usize> {
        let timed: Option<Vec<f64>> = self.per_image.iter().copied().collect();
        let timed = timed?;
        let best = timed
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)?;
        Some(self.candidates[best])
    }

    /// (batch, seconds per image) of every candidate timed so far.
    pub fn timings(&self) -> Vec<(usize, f64)> {
        self.candidates
            .iter()
            .zip(&self.per_image)
            .filter_map(|(&b, t)| t.map(|t| (b, t)))
            .collect()
    }
}

/// Frames decoded ahead of the forward pass, at most this many waiting (with one file being
/// decoded): enough to fill the next batch while the current one runs, few enough to keep
/// memory bounded (a 240 px model input is 0.7 MB).
pub const PREFETCH_FRAMES: usize = 16;

/// What the decoding thread hands over: a frame of the `n`-th file, or why that file (or a
/// frame of it) could not be read.
pub enum Prefetched {
    /// A frame ready for the model.
    Frame(usize, ModelImage),
    /// The `n`-th file, or one of its frames, could not be read.
    Failed(usize, InputError),
}

/// Runs `consume` on the frames of `files` (each with the frames wanted, `None`: all), decoded
/// and resized on a thread of their own while `consume` scores the ones before: the reading
/// of the next frames overlaps the forward pass of the current ones. Decoding stops when
/// `cancel` is set or `consume` returns (dropping the receiver).
pub fn with_prefetched_frames<R>(
    files: &[(PathBuf, Option<Vec<usize>>)],
    cancel: &AtomicBool,
    consume: impl FnOnce(Receiver<Prefetched>) -> R,
) -> R {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Prefetched>(PREFETCH_FRAMES);
        scope.spawn(move || {
            for (n, (path, wanted)) in files.iter().enumerate() {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let mut stopped = false;
                let walked = for_each_model_frame(path, wanted.as_deref(), |frame| {
                    let message = match frame {
                        Ok(f) => Prefetched::Frame(n, f),
                        Err(e) => Prefetched::Failed(n, e),
                    };
                    stopped = tx.send(message).is_err() || cancel.load(Ordering::Relaxed);
                    if stopped {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
                if let Err(e) = walked {
                    stopped = tx.send(Prefetched::Failed(n, e)).is_err();
                }
                if stopped {
                    return;
                }
            }
        });
        consume(rx)
    })
}

/// One outcome of [`score_stream`].
pub enum Streamed {
    /// A scored frame (boxed: it carries the display image and every map).
    Scored(Box<ScoredFrame>),
    /// The `n`-th file, or a frame of it, could not be read.
    Failed(usize, InputError),
}

/// Scores the frames of `files` in order, decoding ahead ([`with_prefetched_frames`]) and in
/// batches `tuner` picks across files, handing each outcome to `each` as soon as its batch is
/// done; `each` may stop the run. Returns the first model error.
pub fn score_stream<B: Backend>(
    detector: &Detector<B, VisionTransformer<B>>,
    files: &[(PathBuf, Option<Vec<usize>>)],
    tuner: &mut BatchTuner,
    cancel: &AtomicBool,
    device: &B::Device,
    mut each: impl FnMut(Streamed) -> ControlFlow<()>,
) -> Result<(), WorkflowError> {
    let size = detector.scorer().config().image_size;
    with_prefetched_frames(files, cancel, |rx| {
        let mut pending: Vec<ModelImage> = Vec::new();
        let run = |pending: &mut Vec<ModelImage>,
                   tuner: &mut BatchTuner,
                   each: &mut dyn FnMut(Streamed) -> ControlFlow<()>|
         -> Result<ControlFlow<()>, WorkflowError> {
            if pending.is_empty() {
                return Ok(ControlFlow::Continue(()));
            }
            let batch = tuner.next_batch();
            let start = Instant::now();
            let views: Vec<&[f32]> = pending.iter().map(|f| f.input.as_slice()).collect();
            let images = batch_tensor::<B>(&views, [3, size, size], device)?;
            let results =
                detector
                    .score_one_batch(images)
                    .map_err(|source| WorkflowError::Model {
                        context: pending[0].source.display().to_string(),
                        source,
                    })?;
            tuner.record(batch, pending.len(), start.elapsed().as_secs_f64());
            for (image, result) in pending.drain(..).zip(results) {
                if each(Streamed::Scored(Box::new(ScoredFrame { image, result }))).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        };
        for message in rx {
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            match message {
                Prefetched::Frame(_, frame) => {
                    pending.push(frame);
                    if pending.len() >= tuner.next_batch()
                        && run(&mut pending, tuner, &mut each)?.is_break()
                    {
                        return Ok(());
                    }
                }
                Prefetched::Failed(n, e) => {
                    // Frames before the failure keep their order.
                    if run(&mut pending, tuner, &mut each)?.is_break()
                        || each(Streamed::Failed(n, e)).is_break()
                    {
                        return Ok(());
                    }
                }
            }
        }
        // The last batch; nothing follows it, so a stop changes nothing.
        let _ = run(&mut pending, tuner, &mut each)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_tuner_warms_up_tries_each_size_then_keeps_the_fastest() {
        let mut t = BatchTuner::new(6);
        assert_eq!(t.next_batch(), 1);
        t.record(1, 1, 10.0); // warm-up, not timed
        let mut sizes = Vec::new();
        for per_image in [1.0, 0.5, 0.8] {
            let b = t.next_batch();
            sizes.push(b);
            t.record(b, b, per_image * b as f64);
        }
        assert_eq!(sizes, [1, 2, 4]);
        assert_eq!(t.chosen(), Some(2));
        assert_eq!(t.next_batch(), 2);
        assert_eq!(t.timings(), [(1, 1.0), (2, 0.5), (4, 0.8)]);
        // A short batch is not a measurement.
        let mut t = BatchTuner::new(2);
        t.record(1, 1, 1.0);
        t.record(1, 1, 1.0);
        t.record(2, 1, 0.1);
        assert_eq!(t.chosen(), None);
        assert_eq!(BatchTuner::fixed(3).next_batch(), 3);
    }
}
