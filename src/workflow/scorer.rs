//! A detector opened for scoring files, behind no burn type: what `score`, the Python package
//! and any other headless caller hold. Opening does what `score` always did (weights, organ
//! word, checkpoint, memory bank, an optional new false-positive rate); scoring is
//! [`score_stream`] in the detector's batches. One code path, so every front end writes the
//! same numbers for the same files.
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use burn::prelude::*;

use super::{
    Backbone, BatchTuner, DetectorFacts, Exporter, FrameToExport, FrameWritten, ScoredFrame,
    Streamed, WorkflowError, open_detector, score_frames, score_stream,
};
use crate::backend::BackendInfo;
use crate::io::input::{InputError, ModelImage};
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::calibration::Calibration;
use crate::model::mvfa::detector::{Detector, ImageResult, TaskKind};
use crate::weights::clip::LoadReport;

/// What to open: the CLIP weights, the checkpoint and the scoring settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerSpec {
    /// CLIP weights (`.safetensors`).
    pub clip: PathBuf,
    /// Model config beside the weights, when not found by itself.
    pub clip_config: Option<PathBuf>,
    /// Our checkpoint or a reference `.pth`.
    pub checkpoint: PathBuf,
    /// Organ word of the prompts; default: the checkpoint's.
    pub organ: Option<String>,
    /// Frames per forward pass.
    pub batch: usize,
    /// Share of normal images the threshold may flag, when not the checkpoint's.
    pub fpr: Option<f32>,
}

/// What a front end shows of an opened scorer.
#[derive(Debug, Clone)]
pub struct ScorerInfo {
    /// What loading the weights found.
    pub report: LoadReport,
    /// Time taken to load the weights.
    pub load_time: Duration,
    /// The organ word the prompts use.
    pub organ: String,
    /// Set when the organ word differs from the checkpoint's.
    pub note: Option<String>,
    /// Segmentation or classification.
    pub task: TaskKind,
    /// Normal shots of the memory bank (`None`: zero-shot only).
    pub bank_shots: Option<usize>,
    /// Side of the model input and of the maps.
    pub model_size: usize,
    /// Frames per forward pass.
    pub batch: usize,
    /// The calibration, its threshold included.
    pub calibration: Option<Calibration>,
    /// What the export writes of the detector.
    pub facts: DetectorFacts,
    /// One line for the user: bank, calibration and what the heatmaps show.
    pub description: String,
}

/// A detector ready to score, without its backend type.
pub trait FileScorer: Send {
    /// What was opened.
    fn info(&self) -> &ScorerInfo;

    /// Scores the frames of `files` (all frames for `None`) in order and in the detector's
    /// batches, decoding ahead; each scored frame or unreadable file goes to `each`, which
    /// may stop the run. Returns the first model error.
    fn score_files(
        &self,
        files: &[(PathBuf, Option<Vec<usize>>)],
        cancel: &AtomicBool,
        each: &mut dyn FnMut(Streamed) -> ControlFlow<()>,
    ) -> Result<(), WorkflowError>;

    /// Scores frames already converted to model input.
    fn score_images(&self, images: &[ModelImage]) -> Result<Vec<ImageResult>, WorkflowError>;
}

/// What [`export_files`] reports of each input as it goes.
pub enum Exported<'a> {
    /// A file, or a frame of it, could not be read; the run goes on.
    Failed(&'a InputError),
    /// A frame was scored and written.
    Written(&'a ScoredFrame, &'a FrameWritten),
}

/// Scores the frames of `files` with `scorer` and writes each into `exporter` as soon as its
/// batch is done: what `score` and the AI node do. An unreadable file is reported and
/// skipped; an export or model error stops the run and is returned (the export error first).
/// The caller finishes the export.
pub fn export_files(
    scorer: &dyn FileScorer,
    files: &[PathBuf],
    exporter: &mut Exporter,
    each: &mut dyn FnMut(Exported),
) -> Result<(), WorkflowError> {
    let model_size = scorer.info().model_size;
    let listed: Vec<(PathBuf, Option<Vec<usize>>)> =
        files.iter().map(|f| (f.clone(), None)).collect();
    let cancel = AtomicBool::new(false);
    let mut export_error = None;
    let outcome = scorer.score_files(&listed, &cancel, &mut |item| match item {
        Streamed::Failed(_, e) => {
            each(Exported::Failed(&e));
            ControlFlow::Continue(())
        }
        Streamed::Scored(frame) => {
            match exporter.write_frame(FrameToExport::from_scored(&frame, model_size)) {
                Ok(written) => {
                    each(Exported::Written(&frame, &written));
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    export_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
    });
    export_error.map_or(outcome, Err)
}

struct OpenedScorer<B: Backend> {
    detector: Detector<B, VisionTransformer<B>>,
    device: B::Device,
    info: ScorerInfo,
}

impl<B: Backend> FileScorer for OpenedScorer<B>
where
    B::Device: Send,
{
    fn info(&self) -> &ScorerInfo {
        &self.info
    }

    fn score_files(
        &self,
        files: &[(PathBuf, Option<Vec<usize>>)],
        cancel: &AtomicBool,
        each: &mut dyn FnMut(Streamed) -> ControlFlow<()>,
    ) -> Result<(), WorkflowError> {
        let mut tuner = BatchTuner::fixed(self.detector.batch_size());
        score_stream(
            &self.detector,
            files,
            &mut tuner,
            cancel,
            &self.device,
            each,
        )
    }

    fn score_images(&self, images: &[ModelImage]) -> Result<Vec<ImageResult>, WorkflowError> {
        score_frames(&self.detector, images, &self.device)
    }
}

/// Opens `spec` on the backend `backend` selects.
pub fn open_scorer(
    spec: &ScorerSpec,
    backend: &BackendInfo,
) -> Result<Box<dyn FileScorer>, WorkflowError> {
    crate::with_backend!(backend, |B, device| open_on::<B>(spec, device)
        .map(|s| Box::new(s) as Box<dyn FileScorer>))
}

fn open_on<B: Backend>(
    spec: &ScorerSpec,
    device: B::Device,
) -> Result<OpenedScorer<B>, WorkflowError> {
    let started = std::time::Instant::now();
    let mut backbone = Backbone::<B>::open(&spec.clip, spec.clip_config.as_deref(), &device)?;
    let load_time = started.elapsed();
    let mut opened = open_detector(
        &mut backbone,
        &spec.checkpoint,
        spec.organ.as_deref(),
        TaskKind::Segmentation,
        spec.batch,
    )?;
    if let Some(fpr) = spec.fpr {
        set_fpr(&spec.checkpoint, &mut opened.detector, fpr)?;
    }
    let detector = opened.detector;
    let info = ScorerInfo {
        report: backbone.report().clone(),
        load_time,
        note: opened.note,
        task: detector.task(),
        bank_shots: detector.support_bank().map(|b| b.groups()),
        model_size: detector.scorer().config().image_size,
        batch: detector.batch_size(),
        calibration: detector.calibration().cloned(),
        facts: DetectorFacts::from_detector(&detector, &spec.checkpoint, &opened.organ),
        description: describe(&spec.checkpoint, &detector, &opened.organ),
        organ: opened.organ,
    };
    Ok(OpenedScorer {
        detector,
        device,
        info,
    })
}

/// Moves the detector's threshold to flag at most `fpr` of normal images.
fn set_fpr<B: Backend>(
    checkpoint: &Path,
    detector: &mut Detector<B, VisionTransformer<B>>,
    fpr: f32,
) -> Result<(), WorkflowError> {
    let Some(mut cal) = detector.calibration().cloned() else {
        return Err(WorkflowError::Threshold {
            checkpoint: checkpoint.to_path_buf(),
            reason: "the detector is not calibrated, so it has no threshold for a new \
                     false-positive rate to set"
                .into(),
        });
    };
    if !cal.set_fpr(fpr) {
        return Err(WorkflowError::Threshold {
            checkpoint: checkpoint.to_path_buf(),
            reason: "the checkpoint stores no normal exemplar scores (written by an older \
                     version), so a new false-positive rate cannot set its threshold; refit it \
                     with `train --fpr`"
                .into(),
        });
    }
    detector.set_calibration(Some(cal));
    Ok(())
}

fn describe<B: Backend>(
    path: &Path,
    detector: &Detector<B, VisionTransformer<B>>,
    organ: &str,
) -> String {
    let bank = match detector.support_bank() {
        None => "no memory bank (zero-shot)".to_string(),
        Some(bank) => format!("memory bank from {} normal shot(s)", bank.groups()),
    };
    let cal = match detector.calibration() {
        Some(c) => format!(
            "calibrated ({}, threshold {:.3}{}); heatmaps show the calibrated fused map",
            c.method,
            c.threshold,
            c.fpr
                .as_ref()
                .map_or(String::new(), |t| format!(": {}", t.describe()))
        ),
        None => {
            "not calibrated; heatmaps show the zero-shot map (mean of its levels, 0..1)".to_string()
        }
    };
    format!(
        "detector: {} ({:?} task, organ word {organ:?}), {bank}, {cal}",
        path.display(),
        detector.task()
    )
}
