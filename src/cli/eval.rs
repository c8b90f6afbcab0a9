//! `mvfa-studio eval`: the benchmark protocols on the MVFA dataset layout (spec 8), printing
//! an AUC table in the paper's column order and writing JSON.
//!
//! ```text
//! # few-shot, k = 4: fit on the reference's shot lists, fixed 50 epochs, score test/
//! mvfa-studio eval --clip W --data data/ --dataset all --shots 4 \
//!     --shot-dir MVFA-AD/dataset/fewshot_seed --json few4.json [--protocol paper]
//! # zero-shot: one checkpoint per target dataset (<dir>/<Key>.pth or .safetensors)
//! mvfa-studio eval --clip W --data data/ --dataset Brain,Liver --zero-shot \
//!     --checkpoint ckpt/zero-shot/ --json zero.json
//! ```
//!
//! Few-shot: k normal and k abnormal shots from `valid/` (the `<k>-shot.txt` list of
//! `--shot-dir`, line `--iterate`, or a seeded draw), fine-tuned for a fixed number of epochs
//! and scored once on `test/`: epochs are never selected on test data (the reference keeps
//! the best epoch on the test set, spec 5.3 / Q9, so its numbers are optimistic). With
//! `--checkpoint` and no `--zero-shot`, an already fitted checkpoint is scored as it is.
//! Zero-shot: the checkpoint's adapters without memory bank or calibration.
//!
//! Few-shot results depend on which shots were drawn. `--draws N` (default 3) repeats the
//! protocol with N shot draws (seeds `--seed`, `--seed + 1`, ...; with `--shot-dir`, the
//! lines `--iterate`, `--iterate + 1`, ...) and reports per dataset the mean, the standard
//! deviation and the minimum over the draws; `--seeds 1,5,9` names the seeds instead.
//!
//! `--protocol calibrated` uses the stored single-image calibration; `--protocol paper` the
//! reference's test-set min-max and 0.5 / 0.5 fusion (see [`crate::eval::protocol`]).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, anyhow};
use burn::prelude::*;
use serde::Serialize;

use super::common::{self, ModelArgs, open_backbone, parse_positive};
use crate::eval::protocol::{
    Evaluation, Fusion, Level, Metrics, PAPER_COLUMNS, Protocol, column_name,
    format_paper_comparison, format_table,
};
use crate::io::dataset::{Dataset, MvfaDataset, MvfaKey, shot_file_path};
use crate::io::export::write_atomically;
use crate::io::input::{load_mask, load_model_image};
use crate::io::output::{InputSet, OutputKind, check_output};
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::detector::{Detector, TaskKind};
use crate::train::fit::{FitEvent, Shots};
use crate::train::trainer::TrainEvent;
use crate::workflow::{
    Backbone, DatasetShots, FitRequest, FitResult, FitSettings, Schedule, ShotSource,
    collect_shots, fit_detector, open_detector, score_frames,
};

/// `--protocol` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusionArg {
    /// Stored single-image calibration (scores do not depend on the other test images).
    Calibrated,
    /// The reference: test-set min-max per branch, 0.5 / 0.5 fusion, image score = max of the
    /// fused map on segmentation datasets.
    Paper,
}

impl From<FusionArg> for Fusion {
    fn from(f: FusionArg) -> Self {
        match f {
            FusionArg::Calibrated => Fusion::Calibrated,
            FusionArg::Paper => Fusion::Paper,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Data folder holding the `<Key>_AD` dataset folders (spec 8).
    #[arg(long, value_name = "ROOT")]
    pub data: PathBuf,
    /// Datasets: comma-separated keys (Brain, Liver, Retina_RESC, Retina_OCT2017, Chest,
    /// Histopathology; paper names such as RESC or HIS work too), or `all`.
    #[arg(long, value_name = "KEY[,KEY..]|all", default_value = "all")]
    pub dataset: String,
    /// Shots per class (k) for the few-shot protocol.
    #[arg(long, default_value_t = 4, value_parser = parse_positive)]
    pub shots: usize,
    /// The reference's `dataset/fewshot_seed` folder: shots come from
    /// `<DIR>/<Key>/<k>-shot.txt`. Default: a seeded draw from `valid/` (--seed).
    #[arg(long, value_name = "DIR")]
    pub shot_dir: Option<PathBuf>,
    /// Which `a-<i>:` / `n-<i>:` lines of the shot file to use.
    #[arg(long, default_value_t = 0)]
    pub iterate: u32,
    /// Seed of the shot draw (without --shot-dir), the adapter initialisation and the
    /// training order.
    #[arg(long, default_value_t = 111)]
    pub seed: u64,
    /// Fine-tuning epochs (fixed: no epoch is selected on test data).
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Shot draws per dataset for the few-shot protocol (each one a fit and a scoring of the
    /// test split): the report gives mean, standard deviation and minimum over them.
    #[arg(long, default_value_t = 3, value_parser = parse_positive)]
    pub draws: usize,
    /// The seeds of the draws (comma-separated), instead of `--seed` and `--draws`.
    #[arg(long, value_name = "SEED[,SEED..]", value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Install the fine-tuned adapters as they end, without validating candidates on the
    /// shots (the selection of `train`; it never looks at test data either way).
    #[arg(long)]
    pub no_select: bool,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Normalisation and fusion of the few-shot branches.
    #[arg(long, value_enum, default_value = "calibrated")]
    pub protocol: FusionArg,
    /// Zero-shot protocol: score --checkpoint's adapters without memory bank.
    #[arg(long, requires = "checkpoint")]
    pub zero_shot: bool,
    /// A checkpoint, or a folder with one per dataset (`<Key>.safetensors` or `<Key>.pth`,
    /// e.g. the reference's `ckpt/zero-shot/`). Without --zero-shot the fitted checkpoint is
    /// evaluated as it is (no fine-tuning).
    #[arg(long, value_name = "CKPT_OR_DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Write the results as JSON here (rewritten atomically after every dataset).
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
}

/// The datasets named by `--dataset`, without repeats; `all` = the paper's column order.
pub fn parse_datasets(spec: &str) -> anyhow::Result<Vec<MvfaKey>> {
    if spec.trim().eq_ignore_ascii_case("all") {
        return Ok(MvfaKey::PAPER_ORDER.to_vec());
    }
    let mut keys = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let key = MvfaKey::parse(part)?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    anyhow::ensure!(!keys.is_empty(), "--dataset names no dataset");
    Ok(keys)
}

/// One dataset's results, as written to the JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    pub dataset: String,
    pub paper_name: String,
    /// `few-shot/calibrated`, `few-shot/paper` or `zero-shot`.
    pub protocol: String,
    /// Shots per class the detector was fitted with (when known).
    pub k: Option<usize>,
    /// Fine-tuning epochs (when known).
    pub epochs: Option<usize>,
    /// Where the shots or the checkpoint came from.
    pub source: String,
    pub organ_word: String,
    pub image_auc: f64,
    pub pixel_auc: Option<f64>,
    pub images: usize,
    pub normal: usize,
    pub abnormal: usize,
    pub fit_seconds: Option<f64>,
    pub score_seconds: f64,
    /// Standard deviation of the image AUC over the draws (0 for one draw).
    pub image_auc_sd: f64,
    /// Smallest image AUC over the draws.
    pub image_auc_min: f64,
    /// Standard deviation of the pixel AUC over the draws.
    pub pixel_auc_sd: Option<f64>,
    /// Smallest pixel AUC over the draws.
    pub pixel_auc_min: Option<f64>,
    /// Each draw's numbers (`image_auc` and `pixel_auc` above are their means).
    pub draws: Vec<DrawReport>,
}

/// One shot draw of a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DrawReport {
    /// Seed of the draw (shot draw, adapter initialisation and training order).
    pub seed: u64,
    /// Line group of the shot file, when the shots came from one.
    pub iterate: Option<u32>,
    /// Where the shots came from.
    pub source: String,
    pub image_auc: f64,
    pub pixel_auc: Option<f64>,
    pub fit_seconds: Option<f64>,
    pub score_seconds: f64,
}

/// Mean, sample standard deviation and minimum of `values` (sd 0 for one value).
pub fn mean_sd_min(values: &[f64]) -> (f64, f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    (mean, sd, min)
}

/// The draws of the few-shot protocol: (seed, shot-file line) pairs.
pub fn draw_plan(args: &EvalArgs) -> Vec<(u64, u32)> {
    if args.checkpoint.is_some() {
        // A fitted checkpoint has its shots already: one evaluation.
        return vec![(args.seed, args.iterate)];
    }
    if !args.seeds.is_empty() {
        return args
            .seeds
            .iter()
            .enumerate()
            .map(|(i, &seed)| (seed, args.iterate + i as u32))
            .collect();
    }
    (0..args.draws)
        .map(|i| (args.seed + i as u64, args.iterate + i as u32))
        .collect()
}

/// The whole JSON file.
#[derive(Debug, Clone, Serialize)]
struct Report {
    written_by: String,
    backend: String,
    clip: String,
    protocol: String,
    seed: u64,
    datasets: BTreeMap<String, DatasetReport>,
    /// The paper's table columns in order, AUC in [0, 1] or null where not run.
    table: Vec<Column>,
}

/// One column of the paper's table.
#[derive(Debug, Clone, Serialize)]
struct Column {
    column: String,
    auc: Option<f64>,
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    if let Some(json) = &args.json {
        // Before hours of fitting: the report must be writable and must not replace an input.
        let mut inputs = InputSet::new(args.model.input_paths());
        inputs.add(&args.data);
        for path in [&args.checkpoint, &args.shot_dir].into_iter().flatten() {
            inputs.add(path);
        }
        check_output(json, OutputKind::File, &inputs)?;
    }
    let mut keys = parse_datasets(&args.dataset)?;
    anyhow::ensure!(
        args.data.is_dir(),
        "{}: no such data folder",
        args.data.display()
    );
    if args.dataset.trim().eq_ignore_ascii_case("all") {
        // `all` means every dataset present; a dataset named explicitly must exist.
        let (present, absent): (Vec<MvfaKey>, Vec<MvfaKey>) = keys
            .iter()
            .partition(|&&k| MvfaDataset::open(&args.data, k).is_ok());
        if !absent.is_empty() {
            let names: Vec<String> = absent.iter().map(|k| k.dir_name()).collect();
            eprintln!(
                "note: not in {}: {} (skipped)",
                args.data.display(),
                names.join(", ")
            );
        }
        anyhow::ensure!(
            !present.is_empty(),
            "{}: holds none of the MVFA dataset folders ({})",
            args.data.display(),
            MvfaKey::PAPER_ORDER
                .iter()
                .map(|k| k.dir_name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        keys = present;
    }
    if let Some(dir) = &args.shot_dir {
        anyhow::ensure!(dir.is_dir(), "{}: no such shot-list folder", dir.display());
    }
    let info = args.model.backend();
    let backend = format!("{} on {}", info.backend, info.device);
    crate::with_backend!(info, |B, device| evaluate::<B>(
        &args, &keys, backend, &device
    ))
}

fn protocol_of(args: &EvalArgs) -> Protocol {
    if args.zero_shot {
        Protocol::ZeroShot
    } else {
        Protocol::FewShot(args.protocol.into())
    }
}

fn evaluate<B: Backend>(
    args: &EvalArgs,
    keys: &[MvfaKey],
    backend: String,
    device: &B::Device,
) -> anyhow::Result<ExitCode> {
    let mut backbone = open_backbone::<B>(&args.model, device)?;
    let protocol = protocol_of(args);
    let mut report = Report {
        written_by: format!("mvfa-studio {}", env!("CARGO_PKG_VERSION")),
        backend,
        clip: args.model.clip.display().to_string(),
        protocol: protocol.name().to_string(),
        seed: args.seed,
        datasets: BTreeMap::new(),
        table: Vec::new(),
    };
    let mut metrics: BTreeMap<MvfaKey, Metrics> = BTreeMap::new();
    let mut failures = Vec::new();
    let plan = draw_plan(args);
    for &key in keys {
        eprintln!("== {} ({}) ==", key, key.paper_name());
        match evaluate_draws::<B>(args, &plan, &mut backbone, key, device) {
            Ok((m, entry)) => {
                print_dataset(key, &m, &entry);
                metrics.insert(key, m);
                report.datasets.insert(key.code_key().to_string(), entry);
                report.table = table_values(&metrics);
                if let Some(path) = &args.json {
                    write_json(path, &report)?;
                }
            }
            Err(e) => {
                eprintln!("error: {key}: {e:#}");
                failures.push(format!("{key}: {e:#}"));
            }
        }
    }
    print_summary(args, protocol, plan.len(), &metrics, &report);
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} dataset(s) failed:", failures.len());
        for f in &failures {
            eprintln!("  {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// The result line of one dataset (and the spread over the draws).
fn print_dataset(key: MvfaKey, m: &Metrics, entry: &DatasetReport) {
    println!(
        "{key}: image AUC {}, pixel AUC {} ({} test images: {} normal, {} abnormal; {})",
        pct(Some(m.image_auc)),
        pct(m.pixel_auc),
        m.images,
        m.normal,
        m.abnormal,
        entry.protocol
    );
    if entry.draws.len() > 1 {
        println!("{key}: {}", draw_summary(entry));
    }
}

/// The AUC table, the paper's numbers beside it, the spread over `draws` shot draws and the
/// JSON file written.
fn print_summary(
    args: &EvalArgs,
    protocol: Protocol,
    draws: usize,
    metrics: &BTreeMap<MvfaKey, Metrics>,
    report: &Report,
) {
    println!();
    if draws > 1 {
        println!(
            "{} (AUC %, mean over {} shot draws; spread per dataset above)",
            protocol.name(),
            draws
        );
    } else {
        println!("{} (AUC %)", protocol.name());
    }
    print!("{}", format_table(metrics));
    if protocol != Protocol::ZeroShot && !metrics.is_empty() {
        println!();
        println!(
            "beside the paper's few-shot k = 4 numbers (MVFA, Table 1; AUC %; this run k = {}):",
            args.shots
        );
        print!("{}", format_paper_comparison(metrics));
    }
    if draws > 1 {
        println!();
        println!("over {} shot draws (mean ± sd, min):", draws);
        for entry in report.datasets.values() {
            println!("  {:<14} {}", entry.paper_name, draw_summary(entry));
        }
    }
    if let Some(path) = &args.json
        && !report.datasets.is_empty()
    {
        println!("wrote {}", path.display());
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.2}%", 100.0 * v))
}

fn table_values(metrics: &BTreeMap<MvfaKey, Metrics>) -> Vec<Column> {
    PAPER_COLUMNS
        .iter()
        .map(|&(key, level)| {
            let v = metrics.get(&key).and_then(|m| match level {
                Level::Image => Some(m.image_auc),
                Level::Pixel => m.pixel_auc,
            });
            Column {
                column: column_name(key, level),
                auc: v,
            }
        })
        .collect()
}

fn write_json(path: &Path, report: &Report) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    write_atomically(path, |w| Ok(w.write_all(text.as_bytes())?))?;
    Ok(())
}

/// The checkpoint for `key`: `path` itself, or `<path>/<Key>.safetensors` / `<Key>.pth` /
/// `<Key>_AD.*` when `path` is a folder.
pub fn resolve_checkpoint(path: &Path, key: MvfaKey) -> anyhow::Result<PathBuf> {
    if !path.is_dir() {
        anyhow::ensure!(path.is_file(), "{}: no such checkpoint", path.display());
        return Ok(path.to_path_buf());
    }
    let names: Vec<String> = [key.code_key().to_string(), key.dir_name()]
        .iter()
        .flat_map(|stem| [format!("{stem}.safetensors"), format!("{stem}.pth")])
        .collect();
    names
        .iter()
        .map(|n| path.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{}: no checkpoint for {key} (looked for {})",
                path.display(),
                names.join(", ")
            )
        })
}

/// "image 91.20 ± 1.30 (min 89.50), pixel 97.10 ± 0.20 (min 96.90) over 3 draws".
pub fn draw_summary(entry: &DatasetReport) -> String {
    let image = format!(
        "image {:.2} ± {:.2} (min {:.2})",
        100.0 * entry.image_auc,
        100.0 * entry.image_auc_sd,
        100.0 * entry.image_auc_min
    );
    let pixel = match (entry.pixel_auc, entry.pixel_auc_sd, entry.pixel_auc_min) {
        (Some(mean), Some(sd), Some(min)) => format!(
            ", pixel {:.2} ± {:.2} (min {:.2})",
            100.0 * mean,
            100.0 * sd,
            100.0 * min
        ),
        _ => String::new(),
    };
    format!("{image}{pixel} over {} draws", entry.draws.len())
}

/// Evaluates `key` once per draw of `plan` and summarises: the mean metrics, and the report
/// with every draw, the spread and the minimum.
fn evaluate_draws<B: Backend>(
    args: &EvalArgs,
    plan: &[(u64, u32)],
    backbone: &mut Backbone<B>,
    key: MvfaKey,
    device: &B::Device,
) -> anyhow::Result<(Metrics, DatasetReport)> {
    let mut runs = Vec::with_capacity(plan.len());
    for (i, &(seed, iterate)) in plan.iter().enumerate() {
        if plan.len() > 1 {
            eprintln!("draw {} of {} (seed {seed})", i + 1, plan.len());
        }
        runs.push(evaluate_dataset::<B>(
            args, backbone, key, device, seed, iterate,
        )?);
    }
    let images: Vec<f64> = runs.iter().map(|(m, _)| m.image_auc).collect();
    let pixels: Option<Vec<f64>> = runs.iter().map(|(m, _)| m.pixel_auc).collect();
    let (image_mean, image_sd, image_min) = mean_sd_min(&images);
    let pixel = pixels.as_deref().map(mean_sd_min);
    let draws: Vec<DrawReport> = runs
        .iter()
        .zip(plan)
        .map(|((m, e), &(seed, iterate))| DrawReport {
            seed,
            iterate: args.shot_dir.as_ref().map(|_| iterate),
            source: e.source.clone(),
            image_auc: m.image_auc,
            pixel_auc: m.pixel_auc,
            fit_seconds: e.fit_seconds,
            score_seconds: e.score_seconds,
        })
        .collect();
    let (mut metrics, mut entry) = runs.swap_remove(0);
    metrics.image_auc = image_mean;
    metrics.pixel_auc = pixel.map(|p| p.0);
    entry.image_auc = image_mean;
    entry.image_auc_sd = image_sd;
    entry.image_auc_min = image_min;
    entry.pixel_auc = pixel.map(|p| p.0);
    entry.pixel_auc_sd = pixel.map(|p| p.1);
    entry.pixel_auc_min = pixel.map(|p| p.2);
    entry.draws = draws;
    Ok((metrics, entry))
}

fn evaluate_dataset<B: Backend>(
    args: &EvalArgs,
    backbone: &mut Backbone<B>,
    key: MvfaKey,
    device: &B::Device,
    seed: u64,
    iterate: u32,
) -> anyhow::Result<(Metrics, DatasetReport)> {
    let dataset = MvfaDataset::open(&args.data, key)?;
    let test = dataset.test_set()?;
    let task = if key.has_masks() {
        TaskKind::Segmentation
    } else {
        TaskKind::Classification
    };
    let protocol = protocol_of(args);
    let organ = args
        .model
        .organ
        .clone()
        .unwrap_or_else(|| key.organ_word().to_string());

    let prepared = match &args.checkpoint {
        Some(ckpt) => checkpoint_detector(args, backbone, key, ckpt, &organ, task)?,
        None => fitted_detector(args, backbone, key, &organ, task, seed, iterate)?,
    };
    let mut detector = prepared.detector;
    detector.set_task(task);

    // Score the test split once, streaming into the metrics.
    let started = Instant::now();
    let metrics = score_test(args, &detector, &test, key, task, device)?;
    let entry = DatasetReport {
        dataset: key.code_key().to_string(),
        paper_name: key.paper_name().to_string(),
        protocol: protocol.name().to_string(),
        k: prepared.k,
        epochs: prepared.epochs,
        source: prepared.source,
        organ_word: organ,
        image_auc: metrics.image_auc,
        pixel_auc: metrics.pixel_auc,
        images: metrics.images,
        normal: metrics.normal,
        abnormal: metrics.abnormal,
        fit_seconds: prepared.fit_seconds,
        score_seconds: started.elapsed().as_secs_f64(),
        image_auc_sd: 0.0,
        image_auc_min: metrics.image_auc,
        pixel_auc_sd: metrics.pixel_auc.map(|_| 0.0),
        pixel_auc_min: metrics.pixel_auc,
        draws: Vec::new(),
    };
    Ok((metrics, entry))
}

/// The detector a dataset is scored with, and where it came from.
struct Prepared<B: Backend> {
    detector: Detector<B, VisionTransformer<B>>,
    /// Shots per class (`None`: unknown, e.g. a reference checkpoint).
    k: Option<usize>,
    epochs: Option<usize>,
    /// "checkpoint <path>" or the description of the shots.
    source: String,
    /// Wall time of the fit (`None` for a checkpoint).
    fit_seconds: Option<f64>,
}

/// `--checkpoint`: the checkpoint for `key`, checked against the protocol (zero-shot drops
/// the memory bank; few-shot needs one, and the calibrated protocol a calibration).
fn checkpoint_detector<B: Backend>(
    args: &EvalArgs,
    backbone: &mut Backbone<B>,
    key: MvfaKey,
    ckpt: &Path,
    organ: &str,
    task: TaskKind,
) -> anyhow::Result<Prepared<B>> {
    let protocol = protocol_of(args);
    let path = resolve_checkpoint(ckpt, key)?;
    let opened = open_detector(backbone, &path, Some(organ), task, args.model.batch)?;
    let mut detector = opened.detector;
    if protocol == Protocol::ZeroShot {
        detector = detector.into_zero_shot();
    } else {
        anyhow::ensure!(
            detector.support_bank().is_some(),
            "{}: the checkpoint holds no normal shots, so it has no few-shot branch; \
             use --zero-shot",
            path.display()
        );
        if protocol == Protocol::FewShot(Fusion::Calibrated) {
            anyhow::ensure!(
                detector.calibration().is_some(),
                "{}: the checkpoint is not calibrated; use --protocol paper",
                path.display()
            );
        }
    }
    let meta = opened.meta;
    Ok(Prepared {
        detector,
        k: meta.as_ref().and_then(|m| m.shots),
        epochs: meta.as_ref().and_then(|m| m.epochs),
        source: format!("checkpoint {}", path.display()),
        fit_seconds: None,
    })
}

/// No checkpoint: draws the shots of `key` (seed, or line `iterate` of the shot list) and
/// fits a detector on them.
fn fitted_detector<B: Backend>(
    args: &EvalArgs,
    backbone: &mut Backbone<B>,
    key: MvfaKey,
    organ: &str,
    task: TaskKind,
    seed: u64,
    iterate: u32,
) -> anyhow::Result<Prepared<B>> {
    let spec = DatasetShots {
        root: args.data.clone(),
        key: Some(key),
        shots: args.shots,
        shot_file: args
            .shot_dir
            .as_ref()
            .map(|dir| (shot_file_path(dir, key, args.shots), iterate)),
        seed,
    };
    let collected = collect_shots(&ShotSource::Dataset(spec))?;
    let started = Instant::now();
    let detector = fit::<B>(args, backbone, &collected.shots, organ, task, seed)?;
    Ok(Prepared {
        detector,
        k: Some(args.shots),
        epochs: Some(args.epochs),
        source: collected.description,
        fit_seconds: Some(started.elapsed().as_secs_f64()),
    })
}

/// Scores the test split in batches with a progress bar, streaming into the metrics (pixel
/// metrics from the masks of abnormal images on segmentation datasets).
fn score_test<B: Backend>(
    args: &EvalArgs,
    detector: &Detector<B, VisionTransformer<B>>,
    test: &Dataset,
    key: MvfaKey,
    task: TaskKind,
    device: &B::Device,
) -> anyhow::Result<Metrics> {
    let pixel_metrics = key.has_masks();
    let mut evaluation = Evaluation::new(protocol_of(args), task, pixel_metrics);
    let bar = common::progress_bar(test.len() as u64, "images");
    bar.set_message(format!("{key} test"));
    for chunk in test.items.chunks(args.model.batch) {
        let mut frames = Vec::with_capacity(chunk.len());
        let mut masks: Vec<Option<Vec<bool>>> = Vec::with_capacity(chunk.len());
        for sample in chunk {
            frames.push(load_model_image(&sample.image)?);
            let mask = match (&sample.mask, pixel_metrics && sample.label) {
                (Some(path), true) => Some(load_mask(path)?.iter().map(|&v| v > 0.5).collect()),
                _ => None,
            };
            masks.push(mask);
        }
        let results = score_frames(detector, &frames, device)?;
        for ((sample, result), mask) in chunk.iter().zip(&results).zip(&masks) {
            evaluation
                .add(result, sample.label, mask.as_deref())
                .with_context(|| format!("{}", sample.image.display()))?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(evaluation.finish()?)
}

/// Fits fresh adapters (seeded) on the shots for a fixed number of epochs, builds the memory
/// bank and the calibration, with a progress bar.
fn fit<B: Backend>(
    args: &EvalArgs,
    backbone: &mut Backbone<B>,
    shots: &Shots,
    organ: &str,
    task: TaskKind,
    seed: u64,
) -> anyhow::Result<Detector<B, VisionTransformer<B>>> {
    let mut settings = FitSettings::default()
        .with_schedule(Schedule::Paper)
        .with_seed(seed);
    settings.train.epochs = args.epochs;
    settings.train.learning_rate = args.lr;
    settings.batch_size = args.model.batch;
    settings.normal_only_task = task;
    if args.no_select {
        settings.selection.folds = 0;
    }
    let request = FitRequest {
        organ: organ.to_string(),
        init: None,
        settings,
    };
    let bar = common::progress_bar(0, "steps");
    bar.set_message("fine-tuning");
    let on_event = |event: FitEvent| match event {
        FitEvent::Started { .. } => {}
        FitEvent::Run { steps, purpose, .. } => {
            bar.set_length(steps as u64);
            bar.set_position(0);
            bar.set_message(purpose);
        }
        FitEvent::Training(TrainEvent::Step(step)) => {
            bar.set_position(((step.epoch - 1) * step.steps_per_epoch + step.step) as u64);
            bar.set_message(format!("loss {:.4}", step.total));
        }
        FitEvent::Validating { fold, folds } => {
            bar.set_message(format!("validating fold {fold} of {folds}"))
        }
        FitEvent::Training(TrainEvent::EpochFinished { .. }) => {}
        FitEvent::BuildingMemoryBank { .. } => bar.set_message("memory bank"),
        FitEvent::Calibrating => bar.set_message("calibrating"),
    };
    let cancel = AtomicBool::new(false);
    let outcome = fit_detector(backbone, shots, &request, on_event, &cancel)?;
    bar.finish_and_clear();
    match outcome {
        FitResult::Fitted(fitted) => {
            if let Some(note) = &fitted.note {
                eprintln!("note: {note}");
            }
            eprintln!(
                "fitted ({:?}): {} epoch(s){}",
                fitted.mode,
                fitted.epoch_losses.len(),
                fitted
                    .epoch_losses
                    .last()
                    .map(|l| format!(", last mean loss {l:.4}"))
                    .unwrap_or_default()
            );
            if let Some(report) = &fitted.selection {
                eprintln!("{}", report.message);
            }
            Ok(fitted.detector)
        }
        FitResult::Cancelled { .. } => Err(anyhow!("fine-tuning stopped unexpectedly")),
    }
}
