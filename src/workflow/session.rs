//! A model session: the loaded backbone with the current adapters and detector, behind one
//! backend-free interface ([`ModelSession`]) so that a front end holding it needs no burn type.
//!
//! The app keeps one session on its worker threads: it opens the weights, imports adapters,
//! rebuilds the memory bank and calibration when labels change (no fine-tuning), fine-tunes,
//! scores and saves. The adapters survive every step: the memory bank of the next labels is
//! built around the adapters of the last fit or import.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;

use super::{
    Backbone, FitRequest, FitResult, WorkflowError, checkpoint_meta, fit_adapters, open_detector,
    save_detector, score_frames,
};
use crate::io::input::ModelImage;
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::MvfaAdaptersConfig;
use crate::model::mvfa::calibration::Calibration;
use crate::model::mvfa::detector::{Detector, FeatureCache, ImageResult, TaskKind};
use crate::train::fit::{FitEvent, FitMode, Shots, unaugmented_groups};
use crate::train::select::{FitStart, SelectionReport, Verdict};
use crate::weights::adapters::MixingRatios;
use crate::weights::clip::LoadReport;

/// What the front end shows of the current detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSummary {
    /// Where the adapters come from ("fresh adapters (seed 0)", "imported x.pth",
    /// "fine-tuned: 120 steps").
    pub adapters: String,
    /// The organ word of the prompts.
    pub organ: String,
    /// The task: segmentation (pixel maps decide) or classification.
    pub task: TaskKind,
    /// What the labels allowed at the last fit, if the detector was fitted here.
    pub mode: Option<FitMode>,
    /// The calibration, once normal shots exist.
    pub calibration: Option<Calibration>,
    /// Normal shots in the memory bank.
    pub normal_shots: usize,
    /// Abnormal shots the threshold (and any fine-tuning) used.
    pub abnormal_shots: usize,
    /// Tapped levels (4 for ViT-L/14).
    pub levels: usize,
    /// Side of the square model input and of the maps, in pixels.
    pub model_size: usize,
    /// A remark for the user (organ word differs from the checkpoint's, masks ignored).
    pub note: Option<String>,
    /// How the last fit chose this detector: every candidate's validation numbers.
    pub selection: Option<SelectionReport>,
}

/// How a fine-tuning run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FitSummary {
    /// The new detector is installed.
    Fitted(Box<DetectorSummary>),
    /// Cancelled: the previous detector is kept.
    Cancelled {
        /// Optimiser steps completed before the cancel.
        steps_done: usize,
    },
}

/// The model operations a front end needs, without naming the backend.
pub trait ModelSession: Send {
    /// What loading the weights found.
    fn report(&self) -> &LoadReport;

    /// The current detector, if one was built.
    fn detector(&self) -> Option<DetectorSummary>;

    /// Makes the adapters of `path` (our checkpoint, or a reference `.pth`) current, as a
    /// detector with the checkpoint's own memory bank and calibration when it stores them.
    fn import_adapters(
        &mut self,
        path: &Path,
        organ: Option<&str>,
    ) -> Result<DetectorSummary, WorkflowError>;

    /// Rebuilds the memory bank and the calibration from `shots` around the current adapters
    /// (fresh seeded ones when none), without fine-tuning.
    fn prepare(
        &mut self,
        shots: &Shots,
        request: &FitRequest,
    ) -> Result<DetectorSummary, WorkflowError>;

    /// The quick first step of a label correction: rebuilds only the memory bank, from the
    /// unaugmented view of each normal shot (one backbone pass per shot the cache lacks),
    /// keeping the adapters and the last calibration. [`ModelSession::prepare`] with the
    /// same shots then adds the augmented views and refits the calibration; its detector is
    /// the one `prepare` alone builds, bit for bit. `None` when there is no detector yet or
    /// the normal shots did not change (only `prepare` helps then).
    fn prepare_quick(&mut self, shots: &Shots) -> Result<Option<DetectorSummary>, WorkflowError>;

    /// Fine-tunes the current adapters on `shots`; a cancelled run keeps the previous
    /// detector.
    fn fit(
        &mut self,
        shots: &Shots,
        request: &FitRequest,
        on_event: &mut dyn FnMut(FitEvent),
        cancel: &AtomicBool,
    ) -> Result<FitSummary, WorkflowError>;

    /// Scores frames in the detector's batches, checking `cancel` between batches; returns
    /// the results of the frames scored so far when cancelled.
    fn score(
        &self,
        frames: &[ModelImage],
        cancel: &AtomicBool,
    ) -> Result<Vec<ImageResult>, WorkflowError>;

    /// Writes the current detector with its normal shots to `path`.
    fn save(&self, path: &Path, provenance: &str) -> Result<(), WorkflowError>;
}

/// Frames the app hands the session at a time (one detector batch by default).
pub const SCORE_BATCH_MAX: usize = 8;

/// The backend-typed session behind [`ModelSession`].
pub struct Session<B: Backend> {
    backbone: Backbone<B>,
    /// The current detector's adapters, bank adapters and mix: what the next fit starts from.
    adapters: Option<(FitStart<B>, MvfaAdaptersConfig)>,
    /// How the current detector was chosen.
    selection: Option<SelectionReport>,
    adapters_source: String,
    detector: Option<Detector<B, VisionTransformer<B>>>,
    summary: Option<DetectorSummary>,
    normal_shots: Vec<Vec<f32>>,
    epochs_trained: usize,
    /// Adapted tokens of the shots under the current adapters (replaced when they change).
    cache: FeatureCache<B>,
}

impl<B: Backend> Session<B> {
    /// Opens the CLIP weights at `weights` (config beside them or `config`) on `device`.
    pub fn open(
        weights: &Path,
        config: Option<&Path>,
        device: &B::Device,
    ) -> Result<Self, WorkflowError> {
        Ok(Self {
            backbone: Backbone::open(weights, config, device)?,
            adapters: None,
            selection: None,
            adapters_source: String::new(),
            detector: None,
            summary: None,
            normal_shots: Vec::new(),
            epochs_trained: 0,
            cache: FeatureCache::default(),
        })
    }

    /// The current adapters, or fresh ones from `seed` (kept, so that every later step
    /// builds on the same adapters).
    fn current_adapters(&mut self, seed: u64) -> (FitStart<B>, MvfaAdaptersConfig) {
        if self.adapters.is_none() {
            let cfg = self.backbone.adapters_config(MixingRatios::default(), seed);
            let adapters = crate::train::fit::materialize(cfg.init::<B>(self.backbone.device()));
            self.adapters = Some((adapters.into(), cfg));
            self.selection = None;
            self.cache = FeatureCache::default();
            self.adapters_source = format!("fresh adapters (seed {seed}), not fine-tuned");
        }
        self.adapters.clone().expect("set above")
    }

    fn summarise(
        &self,
        detector: &Detector<B, VisionTransformer<B>>,
        organ: &str,
        mode: Option<FitMode>,
        shots: Option<&Shots>,
        note: Option<String>,
    ) -> DetectorSummary {
        DetectorSummary {
            adapters: self.adapters_source.clone(),
            organ: organ.to_string(),
            task: detector.task(),
            mode,
            calibration: detector.calibration().cloned(),
            normal_shots: shots.map_or(self.normal_shots.len(), |s| s.normal.len()),
            abnormal_shots: shots.map_or(0, |s| s.abnormal.len()),
            levels: detector.adapters_config().levels,
            model_size: detector.scorer().config().image_size,
            note,
            selection: self.selection.clone(),
        }
    }

    /// What the next fit starts from: the detector's adapters, bank adapters and mix.
    fn start_of(detector: &Detector<B, VisionTransformer<B>>) -> FitStart<B> {
        FitStart {
            adapters: detector.adapters().clone(),
            bank_adapters: detector.bank_adapters().cloned(),
            text_weight: detector
                .calibration()
                .map_or(crate::model::mvfa::calibration::DEFAULT_TEXT_WEIGHT, |c| {
                    c.text_weight
                }),
        }
    }

    fn install(
        &mut self,
        detector: Detector<B, VisionTransformer<B>>,
        summary: DetectorSummary,
        shots: &Shots,
    ) -> DetectorSummary {
        self.normal_shots = shots.normal.iter().map(|s| s.image.clone()).collect();
        self.detector = Some(detector);
        self.summary = Some(summary.clone());
        summary
    }
}

impl<B: Backend> ModelSession for Session<B>
where
    B::Device: Send,
{
    fn report(&self) -> &LoadReport {
        self.backbone.report()
    }

    fn detector(&self) -> Option<DetectorSummary> {
        self.summary.clone()
    }

    fn import_adapters(
        &mut self,
        path: &Path,
        organ: Option<&str>,
    ) -> Result<DetectorSummary, WorkflowError> {
        let opened = open_detector(&mut self.backbone, path, organ, TaskKind::Segmentation, 8)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        self.adapters = Some((
            Self::start_of(&opened.detector),
            opened.detector.adapters_config().clone(),
        ));
        self.selection = opened.selection;
        self.adapters_source = format!("imported {name}");
        self.cache = FeatureCache::default();
        self.normal_shots = opened.normal_shots;
        self.epochs_trained = opened.meta.as_ref().and_then(|m| m.epochs).unwrap_or(0);
        let summary = self.summarise(&opened.detector, &opened.organ, None, None, opened.note);
        self.detector = Some(opened.detector);
        self.summary = Some(summary.clone());
        Ok(summary)
    }

    fn prepare(
        &mut self,
        shots: &Shots,
        request: &FitRequest,
    ) -> Result<DetectorSummary, WorkflowError> {
        let (start, cfg) = self.current_adapters(request.settings.seed());
        let mut request = request.clone();
        request.settings.train.epochs = 0;
        let never = AtomicBool::new(false);
        let fitted = fit_adapters(
            &mut self.backbone,
            start,
            cfg,
            shots,
            &request,
            |_| {},
            &never,
            Some(self.cache.clone()),
        )?;
        let FitResult::Fitted(fitted) = fitted else {
            unreachable!("a fit without fine-tuning is never cancelled")
        };
        let summary = self.summarise(
            &fitted.detector,
            &request.organ,
            None,
            Some(shots),
            fitted.note.clone(),
        );
        Ok(self.install(fitted.detector, summary, shots))
    }

    fn prepare_quick(&mut self, shots: &Shots) -> Result<Option<DetectorSummary>, WorkflowError> {
        let unchanged = shots.normal.len() == self.normal_shots.len()
            && shots
                .normal
                .iter()
                .zip(&self.normal_shots)
                .all(|(s, old)| s.image == *old);
        if shots.normal.is_empty() || unchanged {
            return Ok(None);
        }
        let (Some(mut detector), Some(previous)) = (self.detector.take(), self.summary.clone())
        else {
            return Ok(None);
        };
        let size = detector.scorer().config().image_size;
        let images: Vec<&[f32]> = shots.normal.iter().map(|s| s.image.as_slice()).collect();
        let built = unaugmented_groups::<B>(&images, size, self.backbone.device())
            .and_then(|groups| Ok(detector.set_support(groups)?))
            .map_err(WorkflowError::from);
        if let Err(e) = built {
            self.detector = Some(detector);
            return Err(e);
        }
        let note = format!(
            "memory bank from the unaugmented view of each of {} normal shot(s); the augmented \
             views and a new calibration follow",
            shots.normal.len()
        );
        let summary = self.summarise(&detector, &previous.organ, None, Some(shots), Some(note));
        Ok(Some(self.install(detector, summary, shots)))
    }

    fn fit(
        &mut self,
        shots: &Shots,
        request: &FitRequest,
        on_event: &mut dyn FnMut(FitEvent),
        cancel: &AtomicBool,
    ) -> Result<FitSummary, WorkflowError> {
        let (start, cfg) = self.current_adapters(request.settings.seed());
        let result = fit_adapters(
            &mut self.backbone,
            start,
            cfg.clone(),
            shots,
            request,
            on_event,
            cancel,
            Some(self.cache.clone()),
        )?;
        match result {
            FitResult::Cancelled { steps_done } => Ok(FitSummary::Cancelled { steps_done }),
            FitResult::Fitted(fitted) => {
                let detector = &fitted.detector;
                if let Some(report) = &fitted.selection {
                    let epochs = match report.verdict {
                        Verdict::KeptCurrent => 0,
                        Verdict::Improved => report.installed_epochs,
                        Verdict::Unchecked => request.settings.train.epochs,
                    };
                    if epochs > 0 {
                        self.epochs_trained += epochs;
                        self.adapters_source = format!(
                            "fine-tuned here ({} epochs in all, {} augmentations of each shot)",
                            self.epochs_trained, request.settings.training_augmentations
                        );
                    }
                    self.selection = Some(report.clone());
                }
                self.adapters = Some((Self::start_of(detector), cfg));
                // The detector's cache belongs to its adapters (the old one where it kept them).
                self.cache = detector.feature_cache().cloned().unwrap_or_default();
                let summary = self.summarise(
                    &fitted.detector,
                    &request.organ,
                    Some(fitted.mode),
                    Some(shots),
                    fitted.note.clone(),
                );
                Ok(FitSummary::Fitted(Box::new(self.install(
                    fitted.detector,
                    summary,
                    shots,
                ))))
            }
        }
    }

    fn score(
        &self,
        frames: &[ModelImage],
        cancel: &AtomicBool,
    ) -> Result<Vec<ImageResult>, WorkflowError> {
        let Some(detector) = &self.detector else {
            return Err(WorkflowError::NoDetector);
        };
        // The detector's batch; a frame's results do not depend on the frames beside it.
        let mut results = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(detector.batch_size()) {
            if cancel.load(Ordering::Relaxed) {
                break;
            }
            results.extend(score_frames(detector, chunk, self.backbone.device())?);
        }
        Ok(results)
    }

    fn save(&self, path: &Path, provenance: &str) -> Result<(), WorkflowError> {
        let (Some(detector), Some(summary)) = (&self.detector, &self.summary) else {
            return Err(WorkflowError::NoDetector);
        };
        let meta = checkpoint_meta(
            &self.backbone,
            &summary.organ,
            self.normal_shots.len(),
            self.epochs_trained,
            provenance.to_string(),
        );
        save_detector(
            path,
            detector,
            &self.normal_shots,
            self.selection.as_ref(),
            meta,
        )
    }
}

/// Opens a session on the backend `info` selects, type-erased.
pub fn open_session(
    weights: &Path,
    config: Option<&Path>,
    info: &crate::backend::BackendInfo,
) -> Result<Box<dyn ModelSession>, WorkflowError> {
    crate::with_backend!(info, |B, device| {
        Session::<B>::open(weights, config, &device)
            .map(|session| Box::new(session) as Box<dyn ModelSession>)
    })
}
