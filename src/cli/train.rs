//! `mvfa-studio train`: fits a detector (adapters, memory bank, calibration) from a dataset
//! folder and writes one checkpoint file. The same `fit` the app runs in its training job.
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::ProgressBar;

use crate::cli::common::{
    ArgValueError, ModelArgs, ScheduleArg, load_summary, parse_positive, progress_bar,
};
use crate::io::dataset::MvfaKey;
use crate::io::output::{InputSet, OutputKind, check_output};
use crate::train::fit::FitEvent;
use crate::train::trainer::TrainEvent;
use crate::workflow::{
    DatasetShots, FitOptions, FitOutcome, FitProgress, FitReport, FitSpec, ShotSource,
    WorkflowError, fit_to_checkpoint,
};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Dataset: a folder with `normal/`, `abnormal/`, optional `masks/` and optional
    /// `held_out/` (normal images kept out of training to calibrate the scores), or an MVFA
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
    /// Fine-tuning schedule: `paper` (11 augmentations, 50 epochs) or `quick` (3
    /// augmentations, 5 epochs: minutes on a CPU).
    #[arg(long, value_enum, default_value = "paper")]
    pub schedule: ScheduleArg,
    /// Epochs, overriding the schedule's.
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Images per optimiser step (the reference uses 1).
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub train_batch: usize,
    #[arg(long, default_value_t = 111)]
    pub seed: u64,
    /// Share of normal images the decision threshold may flag (split-conformal calibration on
    /// normal exemplars outside the memory bank).
    #[arg(long, default_value_t = crate::model::mvfa::calibration::DEFAULT_FPR, value_parser = parse_rate)]
    pub fpr: f32,
    /// Cross-validation folds of the model selection (0: install the fine-tuned adapters
    /// without validating them).
    #[arg(long, default_value_t = 2)]
    pub folds: usize,
    /// Checkpoint to write (safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// A rate strictly between 0 and 1 (`--fpr`).
pub fn parse_rate(text: &str) -> Result<f32, ArgValueError> {
    let rate: f32 = text.parse().map_err(|_| ArgValueError::NotANumber {
        text: text.to_string(),
    })?;
    if rate > 0.0 && rate < 1.0 {
        Ok(rate)
    } else {
        Err(ArgValueError::NotARate {
            text: text.to_string(),
        })
    }
}

/// Where `--data` says the shots are.
fn shot_source(args: &TrainArgs) -> anyhow::Result<ShotSource> {
    if args.data.join("normal").is_dir() {
        return Ok(ShotSource::PlainFolders {
            root: args.data.clone(),
            allow_unmasked: args.allow_unmasked,
        });
    }
    Ok(ShotSource::Dataset(DatasetShots {
        root: args.data.clone(),
        key: args.dataset.as_deref().map(MvfaKey::parse).transpose()?,
        shots: args.shots,
        shot_file: args.shot_file.clone().map(|path| (path, args.iterate)),
        seed: args.seed,
    }))
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    // Before any work: the checkpoint must be writable and must not replace an input.
    let mut inputs = InputSet::new(args.model.input_paths());
    inputs.add(&args.data);
    for path in [&args.init, &args.shot_file].into_iter().flatten() {
        inputs.add(path);
    }
    check_output(&args.out, OutputKind::File, &inputs)?;
    let backend = args.model.backend();
    let spec = FitSpec {
        clip: args.model.clip.clone(),
        clip_config: args.model.clip_config.clone(),
        source: shot_source(&args)?,
        organ: args.model.organ.clone(),
        options: fit_options(&args),
        out: args.out.clone(),
    };
    let bar = progress_bar(0, "steps");
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let outcome = fit_to_checkpoint(
        &spec,
        &backend,
        &mut |progress| match progress {
            FitProgress::Shots { collected, organ } => {
                let shots = &collected.shots;
                eprintln!(
                    "shots: {} normal, {} abnormal ({}), {} held out for calibration, organ word \"{organ}\"",
                    shots.normal.len(),
                    shots.abnormal.len(),
                    if collected.has_masks {
                        "with masks"
                    } else {
                        "image labels"
                    },
                    shots.held_out.len(),
                );
            }
            FitProgress::Opened { report, time } => eprintln!("{}", load_summary(report, time)),
            FitProgress::Fit(event) => show_progress(&bar, event),
        },
        &cancel,
    );
    let report = match outcome {
        Ok(FitOutcome::Saved(report)) => report,
        Ok(FitOutcome::Cancelled { .. }) => {
            anyhow::bail!("training was cancelled; nothing was written")
        }
        Err(WorkflowError::NoOrganWord { .. }) if args.model.organ.is_none() => anyhow::bail!(
            "{}: plain folders carry no organ word: pass --organ (e.g. --organ Brain or \
             --organ \"Chest X-ray film\")",
            args.data.display()
        ),
        Err(e) => return Err(e.into()),
    };
    if let Some(note) = &report.note {
        eprintln!("note: {note}");
    }
    println!("wrote {}", args.out.display());
    print_fit(&report);
    if report.shots[1] == 0 {
        println!(
            "note: no abnormal shots, so the adapters are untrained (zero-shot + memory bank)"
        );
    } else if args.epochs == Some(0) {
        println!("note: --epochs 0, so the adapters are untrained (zero-shot + memory bank)");
    }
    Ok(ExitCode::SUCCESS)
}

fn fit_options(args: &TrainArgs) -> FitOptions {
    FitOptions {
        schedule: args.schedule.into(),
        epochs: args.epochs,
        learning_rate: args.lr,
        train_batch: args.train_batch,
        batch: args.model.batch,
        seed: args.seed,
        fpr: args.fpr,
        folds: args.folds,
        init: args.init.clone(),
    }
}

fn show_progress(bar: &ProgressBar, event: FitEvent) {
    match event {
        FitEvent::Started {
            mode,
            training_images,
        } => {
            eprintln!("mode: {mode:?}, {training_images} training images after augmentation");
        }
        FitEvent::Run {
            run,
            runs,
            purpose,
            steps,
        } => {
            bar.println(format!("fine-tuning run {run} of {runs}: {purpose}"));
            bar.set_length(steps as u64);
            bar.set_position(0);
        }
        FitEvent::Validating { fold, folds } => {
            bar.set_message(format!(
                "validating the candidates on fold {fold} of {folds}"
            ));
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
    }
}

/// The fit's losses, calibration and model selection.
fn print_fit(fitted: &FitReport) {
    let losses = &fitted.epoch_losses;
    match (losses.first(), losses.last()) {
        (Some(first), Some(last)) => print!(
            "mode {:?}; loss {first:.4} -> {last:.4} on all shots",
            fitted.mode
        ),
        _ => print!("mode {:?}; no fine-tuned adapters installed", fitted.mode),
    }
    match &fitted.calibration {
        Some(cal) => {
            println!(
                "; calibration ({:?}): {} normal / {} abnormal exemplars, text weight {:.2}, threshold {:.2} (normal p95 {:.2}{})",
                cal.leave_out,
                cal.normal_exemplars,
                cal.abnormal_exemplars,
                cal.text_weight,
                cal.threshold,
                cal.normal_p95,
                cal.abnormal_median
                    .map_or(String::new(), |m| format!(", abnormal median {m:.2}"))
            );
            if let Some(t) = &cal.fpr {
                println!("threshold {:.3}: {}", t.threshold, t.describe());
            }
        }
        None => println!(),
    }
    if let Some(report) = &fitted.selection {
        println!(
            "model selection ({} folds; {} normal, {} abnormal, {} held-out images, {} views each):",
            report.folds,
            report.validation_images[0],
            report.validation_images[1],
            report.validation_images[2],
            report.validation_augmentations
        );
        print!("{}", report.table());
        println!("{}", report.message);
    }
}
