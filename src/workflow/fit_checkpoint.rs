//! A fit from labelled files to a checkpoint file, behind no burn type: `train` and the
//! Python package run this one path (shots, organ word, weights, [`fit_detector`] with its
//! model selection and calibration, checkpoint), so both write the same file bit for bit.
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use burn::prelude::*;

use super::{
    Backbone, CollectedShots, FitRequest, FitResult, FitSettings, Schedule, ShotSource,
    WorkflowError, checkpoint_meta, collect_shots, fit_detector, save_detector,
};
use crate::backend::BackendInfo;
use crate::model::mvfa::calibration::Calibration;
use crate::model::mvfa::detector::TaskKind;
use crate::train::fit::{FitEvent, FitMode};
use crate::train::select::SelectionReport;
use crate::weights::clip::LoadReport;

/// The settings of a fit that `train` exposes as flags.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Epoch count and augmentations.
    pub schedule: Schedule,
    /// Epochs, when not the schedule's.
    pub epochs: Option<usize>,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Images per optimiser step.
    pub train_batch: usize,
    /// Images per forward pass outside training.
    pub batch: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Share of normal images the threshold may flag.
    pub fpr: f32,
    /// Cross-validation folds of the model selection.
    pub folds: usize,
    /// Adapters to start from (our checkpoint or a reference `.pth`).
    pub init: Option<PathBuf>,
}

impl FitOptions {
    /// The request for `organ`; masks decide the task of a normal-only fit.
    pub fn request(&self, organ: &str, has_masks: bool) -> FitRequest {
        let mut settings = FitSettings::default()
            .with_schedule(self.schedule)
            .with_seed(self.seed);
        if let Some(epochs) = self.epochs {
            settings.train.epochs = epochs;
        }
        settings.train.learning_rate = self.learning_rate;
        settings.train.batch_size = self.train_batch;
        settings.batch_size = self.batch;
        settings.normal_only_task = if has_masks {
            TaskKind::Segmentation
        } else {
            TaskKind::Classification
        };
        settings.fpr = self.fpr;
        settings.selection.folds = self.folds;
        FitRequest {
            organ: organ.to_string(),
            init: self.init.clone(),
            settings,
        }
    }
}

/// What to fit and where to write it.
#[derive(Debug, Clone)]
pub struct FitSpec {
    /// CLIP weights.
    pub clip: PathBuf,
    /// Model config beside the weights, when not found by itself.
    pub clip_config: Option<PathBuf>,
    /// The labelled images.
    pub source: ShotSource,
    /// Organ word; default: the source's (an MVFA dataset names one).
    pub organ: Option<String>,
    /// The fit's settings.
    pub options: FitOptions,
    /// The checkpoint to write.
    pub out: PathBuf,
}

/// A step of [`fit_to_checkpoint`], for progress output.
pub enum FitProgress<'a> {
    /// The shots were read; the organ word is settled.
    Shots {
        /// The shots.
        collected: &'a CollectedShots,
        /// The organ word.
        organ: &'a str,
    },
    /// The weights were loaded.
    Opened {
        /// What loading found.
        report: &'a LoadReport,
        /// How long it took.
        time: Duration,
    },
    /// A step of the fit.
    Fit(FitEvent),
}

/// What a saved fit did.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// What the labels allowed.
    pub mode: FitMode,
    /// Mean loss per epoch of the last fine-tuning run.
    pub epoch_losses: Vec<f32>,
    /// A remark for the user.
    pub note: Option<String>,
    /// The calibration written.
    pub calibration: Option<Calibration>,
    /// How the model selection chose.
    pub selection: Option<SelectionReport>,
    /// Epochs of the installed adapters (0: untrained ones were kept or installed).
    pub epochs: usize,
    /// The organ word written.
    pub organ: String,
    /// Normal, abnormal and held-out shots.
    pub shots: [usize; 3],
}

/// How [`fit_to_checkpoint`] ended.
#[derive(Debug, Clone)]
pub enum FitOutcome {
    /// The checkpoint was written.
    Saved(Box<FitReport>),
    /// Cancelled during fine-tuning; nothing was written.
    Cancelled {
        /// Optimiser steps done.
        steps_done: usize,
    },
}

/// Fits `spec` on the backend `backend` selects and writes its checkpoint.
pub fn fit_to_checkpoint(
    spec: &FitSpec,
    backend: &BackendInfo,
    on_progress: &mut dyn FnMut(FitProgress),
    cancel: &AtomicBool,
) -> Result<FitOutcome, WorkflowError> {
    let collected = collect_shots(&spec.source)?;
    let organ = spec
        .organ
        .clone()
        .or_else(|| collected.organ.clone())
        .ok_or_else(|| WorkflowError::NoOrganWord {
            what: collected.description.clone(),
        })?;
    on_progress(FitProgress::Shots {
        collected: &collected,
        organ: &organ,
    });
    crate::with_backend!(backend, |B, device| fit_on::<B>(
        spec,
        &collected,
        &organ,
        &device,
        on_progress,
        cancel
    ))
}

fn fit_on<B: Backend>(
    spec: &FitSpec,
    collected: &CollectedShots,
    organ: &str,
    device: &B::Device,
    on_progress: &mut dyn FnMut(FitProgress),
    cancel: &AtomicBool,
) -> Result<FitOutcome, WorkflowError> {
    let started = Instant::now();
    let mut backbone = Backbone::<B>::open(&spec.clip, spec.clip_config.as_deref(), device)?;
    on_progress(FitProgress::Opened {
        report: backbone.report(),
        time: started.elapsed(),
    });
    let shots = &collected.shots;
    let request = spec.options.request(organ, collected.has_masks);
    let epochs = request.settings.train.epochs;
    let outcome = fit_detector(
        &mut backbone,
        shots,
        &request,
        |event| on_progress(FitProgress::Fit(event)),
        cancel,
    )?;
    let fitted = match outcome {
        FitResult::Fitted(fitted) => fitted,
        FitResult::Cancelled { steps_done } => return Ok(FitOutcome::Cancelled { steps_done }),
    };
    // The epochs of the installed adapters: the chosen candidate's (0 when the adapters
    // before fine-tuning were kept).
    let epochs = match (
        shots.abnormal.is_empty(),
        fitted.selection.as_ref().and_then(|r| r.chosen()),
    ) {
        (true, _) => 0,
        (false, Some(_)) => fitted
            .selection
            .as_ref()
            .map_or(epochs, |r| r.installed_epochs),
        (false, None) => epochs,
    };
    let meta = checkpoint_meta(
        &backbone,
        organ,
        shots.normal.len(),
        epochs,
        format!("mvfa-studio train on {}", collected.description),
    );
    let normal: Vec<Vec<f32>> = shots.normal.iter().map(|s| s.image.clone()).collect();
    save_detector(
        &spec.out,
        &fitted.detector,
        &normal,
        fitted.selection.as_ref(),
        meta,
    )?;
    Ok(FitOutcome::Saved(Box::new(FitReport {
        mode: fitted.mode,
        epoch_losses: fitted.epoch_losses.clone(),
        note: fitted.note.clone(),
        calibration: fitted.detector.calibration().cloned(),
        selection: fitted.selection.clone(),
        epochs,
        organ: organ.to_string(),
        shots: [
            shots.normal.len(),
            shots.abnormal.len(),
            shots.held_out.len(),
        ],
    })))
}
