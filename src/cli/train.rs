//! `mvfa-studio train`: fits a detector (adapters, memory bank, calibration) from a dataset
//! folder and writes one checkpoint file. The same `fit` the app runs in its training job.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::prelude::*;

use crate::cli::common::{ModelArgs, load_backbone, load_shots, parse_positive, progress_bar};
use crate::io::dataset::{
    FewShot, MvfaDataset, MvfaKey, PlainFolderOptions, ShotFile, open_plain_folders,
};
use crate::model::mvfa::detector::TaskKind;
use crate::train::fit::{FitEvent, FitOutcome, FitSettings, fit};
use crate::train::trainer::{TrainConfig, TrainEvent};
use crate::weights::adapters::{AdapterCheckpointMeta, MixingRatios, load_adapter_file};
use crate::weights::detector::save_detector;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Dataset: a folder with `normal/`, `abnormal/` and optional `masks/`, or an MVFA
    /// dataset (`<Key>_AD` folder, or its parent with `--dataset`).
    #[arg(long)]
    pub data: PathBuf,
    /// MVFA dataset key (Brain, Liver, Retina_RESC, Retina_OCT2017, Chest, Histopathology).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Shots per class drawn from an MVFA dataset's `valid/` pools.
    #[arg(long, default_value_t = 4)]
    pub shots: usize,
    /// The reference's `<k>-shot.txt` list to take the shots from (else a seeded draw).
    #[arg(long)]
    pub shot_file: Option<PathBuf>,
    /// Line group of the shot file (`a-<i>:` / `n-<i>:`).
    #[arg(long, default_value_t = 0)]
    pub iterate: u32,
    /// Accept abnormal images without masks in a plain folder that has `masks/`.
    #[arg(long)]
    pub allow_unmasked: bool,
    /// Adapters to start from (our checkpoint or a reference `.pth`); default: fresh.
    #[arg(long)]
    pub init: Option<PathBuf>,
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Images per optimiser step (the reference uses 1).
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub train_batch: usize,
    #[arg(long, default_value_t = 111)]
    pub seed: u64,
    /// Checkpoint to write (safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// The labelled shots of a dataset folder, with the organ word to prompt with.
struct ShotSet {
    organ: String,
    shots: FewShot,
}

fn resolve_shots(args: &TrainArgs) -> anyhow::Result<ShotSet> {
    if args.data.join("normal").is_dir() {
        let organ = args.model.organ.clone().context(
            "plain folders carry no organ word: pass --organ (e.g. --organ Brain or --organ \"Chest X-ray film\")",
        )?;
        let opts = PlainFolderOptions {
            organ_word: organ.clone(),
            allow_unmasked_abnormal: args.allow_unmasked,
            allow_normal_only: true,
        };
        let dataset = open_plain_folders(&args.data, &opts)?;
        return Ok(ShotSet {
            organ,
            shots: dataset.to_few_shot(),
        });
    }
    let dataset = match &args.dataset {
        Some(key) => MvfaDataset::open(&args.data, MvfaKey::parse(key)?)?,
        None => MvfaDataset::open_dir(&args.data).with_context(|| {
            format!(
                "{}: neither a plain folder (normal/, abnormal/) nor an MVFA dataset folder; pass --dataset <Key> for a data root",
                args.data.display()
            )
        })?,
    };
    let shots = match &args.shot_file {
        Some(path) => {
            let list = ShotFile::read(path)?.list(args.iterate)?;
            dataset.shots_from_list(&list, args.shots)?
        }
        None => dataset.shots_random(args.shots, args.seed)?,
    };
    Ok(ShotSet {
        organ: args
            .model
            .organ
            .clone()
            .unwrap_or_else(|| dataset.key.organ_word().to_string()),
        shots,
    })
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let info = args.model.backend();
    crate::with_backend!(info, |B, device| run_on::<B>(&args, &device))
}

fn run_on<B: Backend>(args: &TrainArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        anyhow::ensure!(
            parent.is_dir(),
            "{}: output folder does not exist",
            parent.display()
        );
    }
    let set = resolve_shots(args)?;
    let with_masks = set.shots.has_masks;
    eprintln!(
        "shots: {} normal, {} abnormal ({}), organ word \"{}\"",
        set.shots.normal.len(),
        set.shots.abnormal.len(),
        if with_masks {
            "with masks"
        } else {
            "image labels"
        },
        set.organ
    );
    let normal = load_shots(&set.shots.normal, false)?;
    let abnormal = load_shots(&set.shots.abnormal, with_masks)?;

    let mut backbone = load_backbone::<B>(&args.model, device)?;
    let text = backbone.text_features(&set.organ)?;
    let adapters_cfg = backbone.adapters_config(MixingRatios::default());
    let adapters = match &args.init {
        Some(path) => load_adapter_file::<B>(path, &adapters_cfg, device)?.adapters,
        None => adapters_cfg.init::<B>(device),
    };
    let settings = FitSettings {
        adapters: adapters_cfg,
        scoring: backbone.scoring_config(),
        train: TrainConfig::new()
            .with_epochs(args.epochs)
            .with_learning_rate(args.lr)
            .with_batch_size(args.train_batch)
            .with_seed(args.seed),
        normal_only_task: if with_masks {
            TaskKind::Segmentation
        } else {
            TaskKind::Classification
        },
        batch_size: args.model.batch,
    };
    let mut identity = backbone.identity();
    identity.weights_sha256_prefix = crate::weights::adapters::file_sha256_hex(&args.model.clip)
        .ok()
        .map(|h| h[..16].to_string());
    let vision = backbone.vision.clone();
    let bar = progress_bar(0, "steps");
    let cancel = AtomicBool::new(false);
    let outcome = fit::<Autodiff<B>>(
        vision,
        adapters,
        text,
        &normal,
        &abnormal,
        &settings,
        |event| match event {
            FitEvent::Started {
                mode,
                training_images,
            } => {
                eprintln!("mode: {mode:?}, {training_images} training images after augmentation");
                if training_images > 0 {
                    bar.set_length(
                        (training_images.div_ceil(args.train_batch) * args.epochs) as u64,
                    );
                }
            }
            FitEvent::Training(TrainEvent::Step(step)) => {
                bar.inc(1);
                bar.set_message(format!(
                    "epoch {}/{} loss {:.4} (focal {:.4} dice {:.4} bce {:.4}) {:.2} img/s",
                    step.epoch,
                    step.epochs,
                    step.total,
                    step.focal,
                    step.dice,
                    step.bce,
                    step.images_per_second
                ));
            }
            FitEvent::Training(TrainEvent::EpochFinished { .. }) => {}
            FitEvent::BuildingMemoryBank { images } => {
                bar.finish_and_clear();
                eprintln!("building the memory bank from {images} augmented normal images");
            }
            FitEvent::Calibrating => eprintln!("calibrating on the exemplars"),
        },
        &cancel,
    )?;
    let FitOutcome::Fitted {
        detector,
        mode,
        epoch_losses,
        note,
    } = outcome
    else {
        anyhow::bail!("training was cancelled; nothing was written");
    };
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let meta = AdapterCheckpointMeta {
        organ_word: Some(set.organ.clone()),
        shots: Some(normal.len()),
        epochs: Some(if abnormal.is_empty() { 0 } else { args.epochs }),
        backbone: Some(identity),
        source: Some(format!("mvfa-studio train on {}", args.data.display())),
        ..Default::default()
    };
    save_detector(&args.out, &detector, &normal, meta)?;
    let cal = detector.calibration.as_ref().expect("fit calibrates");
    println!("wrote {}", args.out.display());
    println!(
        "mode {mode:?}; loss {} -> {}; calibration: {} normal / {} abnormal exemplars, threshold {:.2} (normal p95 {:.2}{})",
        epoch_losses
            .first()
            .map_or("-".into(), |l| format!("{l:.4}")),
        epoch_losses
            .last()
            .map_or("-".into(), |l| format!("{l:.4}")),
        cal.normal_exemplars,
        cal.abnormal_exemplars,
        cal.threshold,
        cal.normal_p95,
        cal.abnormal_median
            .map_or(String::new(), |m| format!(", abnormal median {m:.2}"))
    );
    Ok(ExitCode::SUCCESS)
}
