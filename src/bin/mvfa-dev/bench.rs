//! `mvfa-dev bench`: timings of the MVFA building blocks with random weights on the active
//! backend, printed as a table. Full ViT-L/14-336 at 240 px by default; run it in release mode:
//!
//! ```text
//! cargo run --release --bin mvfa-dev -- bench        # ViT-L/14-336, 240 px, 3 timed repeats
//! cargo run --release --bin mvfa-dev -- bench --repeat 5 --cpu
//! cargo run --release --bin mvfa-dev -- bench --layers 4 --width 64 --embed-dim 32 \
//!     --text-layers 2 --text-width 32                # a quick run on a small tower
//! ```
//!
//! Each row runs once untimed (warm-up: lazy parameter initialisation, kernel compilation),
//! then `--repeat` timed runs; the table shows the median and the fastest. Work is forced to
//! completion (a value read back and the device synchronised) inside each timed run. Peak
//! memory is the process's `VmHWM` after each row (cumulative, so the largest row sets it).
//! These are measurements to print, not tests: nothing is asserted about time.
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::Distribution;

use super::bench_compare::Ours;
use mvfa_studio::cli::common::{mb, parse_positive, peak_rss_bytes};
use mvfa_studio::io::model_input::MODEL_INPUT_SIZE;
use mvfa_studio::model::clip::config::{TextConfig, VisionConfig};
use mvfa_studio::model::clip::prompts::{
    abnormal_sentences, build_text_features, normal_sentences,
};
use mvfa_studio::model::clip::tokenizer::ClipTokenizer;
use mvfa_studio::model::clip::vision::VisionTransformer;
use mvfa_studio::model::mvfa::adapter::{AdaptedFeatures, Head, MvfaAdapters, MvfaAdaptersConfig};
use mvfa_studio::model::mvfa::detector::{Detector, SupportBank, TaskKind};
use mvfa_studio::model::mvfa::scoring::{MemoryBank, Scorer, ScoringConfig};
use mvfa_studio::train::augment::AUGMENT_FACTOR;
use mvfa_studio::train::trainer::{LabelMode, TrainConfig, TrainEvent, TrainSample, train};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Vision transformer blocks.
    #[arg(long, default_value_t = 24, value_parser = parse_positive)]
    pub layers: usize,
    /// Vision residual width.
    #[arg(long, default_value_t = 1024, value_parser = parse_positive)]
    pub width: usize,
    /// Vision attention heads (default: width / 64, at least 1).
    #[arg(long, value_parser = parse_positive)]
    pub heads: Option<usize>,
    /// Joint embedding width = adapter bottleneck = text embedding.
    #[arg(long, default_value_t = 768, value_parser = parse_positive)]
    pub embed_dim: usize,
    /// Text transformer blocks.
    #[arg(long, default_value_t = 12, value_parser = parse_positive)]
    pub text_layers: usize,
    /// Text residual width (heads: width / 64, at least 1).
    #[arg(long, default_value_t = 768, value_parser = parse_positive)]
    pub text_width: usize,
    /// Batch sizes of the adapted forward pass.
    #[arg(long, value_delimiter = ',', default_value = "1,8", value_parser = parse_positive)]
    pub batches: Vec<usize>,
    /// Normal shots k of the few-shot search (bank of 11k images).
    #[arg(long, default_value_t = 4, value_parser = parse_positive)]
    pub shots: usize,
    /// Organ word of the text-feature row.
    #[arg(long, default_value = "Brain")]
    pub organ: String,
    /// Timed runs per row (after one untimed warm-up run).
    #[arg(long, default_value_t = 3, value_parser = parse_positive)]
    pub repeat: usize,
    /// Run on the CPU even when a GPU backend is compiled in and available.
    #[arg(long)]
    pub cpu: bool,
    /// Also run tools/bench/torch_bench.py (PyTorch, CPU, same sizes) with `$MVFA_PYTHON`
    /// (default python3) and print both columns and the ratio; skipped, with the reason, when
    /// that Python cannot import torch and open_clip.
    #[arg(long)]
    pub compare: bool,
    /// Instead of the table: time each op of one vision block (LayerNorm, matmuls, attention and
    /// its parts, GELU, layout copies), forward and backward, with the `--width` / `--heads`
    /// shapes at 290 tokens and the first of `--batches`; share of the time and cores busy.
    #[arg(long)]
    pub profile_block: bool,
    /// Instead of the table: GFLOP/s of every f32 matmul kernel this process can run (pure
    /// Rust and each BLAS it can open) on the ViT's product shapes, and which one it chose.
    #[arg(long)]
    pub kernels: bool,
    /// After the table: a full fit on synthetic images (k normal and k abnormal shots with
    /// masks, on the random tower): fine-tuning with `--schedule`, memory bank, calibration;
    /// prints its wall time. `--fit 4` is the paper's k=4 fine-tune.
    #[arg(long, value_name = "K", value_parser = parse_positive)]
    pub fit: Option<usize>,
    /// Fine-tuning schedule of `--fit`.
    #[arg(long, value_enum, default_value = "paper")]
    pub schedule: mvfa_studio::cli::common::ScheduleArg,
    /// Epochs of `--fit`, overriding the schedule's (a quick check of the path).
    #[arg(long, value_parser = parse_positive)]
    pub fit_epochs: Option<usize>,
    /// The PyTorch script of `--compare` (default: tools/bench/torch_bench.py).
    #[arg(long)]
    pub torch_script: Option<std::path::PathBuf>,
    /// Instead of the table: write a synthetic DICOM series of this many slices and score it
    /// end to end from the files (decoding overlapped, batch picked for throughput); prints
    /// slices per second.
    #[arg(long, value_name = "SLICES", value_parser = parse_positive)]
    pub series: Option<usize>,
    /// Side of the `--series` slices in pixels.
    #[arg(long, default_value_t = 512, value_parser = parse_positive)]
    pub slice_size: usize,
    /// Instead of the table: the correction loop on real weights (`--clip`): a detector from
    /// K-1 normal and K abnormal synthetic shots, then one more normal shot; prints the time
    /// of the quick step (unaugmented views), of the shown image's new score, and of the
    /// background step (augmented views and calibration).
    #[arg(long, value_name = "K", value_parser = parse_positive, requires = "clip")]
    pub correction: Option<usize>,
    /// CLIP weights of `--correction` (e.g. from tools/random_vit_l.py).
    #[arg(long)]
    pub clip: Option<std::path::PathBuf>,
}

/// One table row.
struct Row {
    /// Key of the same measurement in the PyTorch script's output (`--compare`).
    key: Option<String>,
    what: String,
    batch: String,
    /// Median and fastest, in ms per image (or per unit named in `what`).
    median_ms: f64,
    min_ms: f64,
    peak: Option<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Runs `f` once untimed, then `repeat` times timed; returns (median, min) in ms divided by
/// `per`.
fn time<B: Backend>(
    repeat: usize,
    per: usize,
    device: &B::Device,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"));
    f()?;
    sync()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let t = Instant::now();
        f()?;
        sync()?;
        times.push(t.elapsed().as_secs_f64() * 1e3 / per as f64);
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((median(times), min))
}

fn push(
    rows: &mut Vec<Row>,
    key: Option<&str>,
    what: String,
    batch: String,
    (median_ms, min_ms): (f64, f64),
) {
    rows.push(Row {
        key: key.map(str::to_string),
        what,
        batch,
        median_ms,
        min_ms,
        peak: peak_rss_bytes(),
    });
}

fn finish<B: Backend, const D: usize>(t: Tensor<B, D>) -> f32 {
    t.sum().into_scalar().elem::<f32>()
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.profile_block {
        return super::bench_profile::run(&args);
    }
    if args.kernels {
        #[cfg(patched_ndarray)]
        return super::bench_kernels::run(args.repeat);
        #[cfg(not(patched_ndarray))]
        anyhow::bail!("--kernels needs the patched burn-ndarray of vendor/ (PATCHES.md)");
    }
    let info = mvfa_studio::backend::probe(args.cpu);
    if let Some(reason) = &info.fallback_reason {
        eprintln!("note: {reason}");
    }
    println!("backend: {} on {}", info.backend, info.device);
    if let (Some(k), Some(clip)) = (args.correction, &args.clip) {
        return mvfa_studio::with_backend!(info, |B, device| correction::<B>(clip, k, &device));
    }
    mvfa_studio::with_backend!(info, |B, device| bench::<B>(&args, &device))
}

/// `--correction`: the two steps of a normal-label correction, timed through the session the
/// app uses.
fn correction<B: Backend>(
    clip: &std::path::Path,
    k: usize,
    device: &B::Device,
) -> anyhow::Result<ExitCode>
where
    B::Device: Send,
{
    use mvfa_studio::workflow::{FitRequest, ModelSession, Session};
    anyhow::ensure!(k >= 2, "--correction needs K of at least 2");
    let started = Instant::now();
    let mut session = Session::<B>::open(clip, None, device)?;
    println!("weights opened in {:.1} s", started.elapsed().as_secs_f64());
    let shots = synthetic_shots(k);
    let mut fewer = shots.clone();
    fewer.normal.pop();
    let mut request = FitRequest::new("Brain");
    request.settings.train.epochs = 0;
    let started = Instant::now();
    session.prepare(&fewer, &request)?;
    let first = started.elapsed().as_secs_f64();
    let frame = |input: &[f32]| mvfa_studio::io::input::ModelImage {
        source: "shown".into(),
        frame: 0,
        frames: 1,
        display: mvfa_studio::io::resample::Image8 {
            width: 1,
            height: 1,
            channels: mvfa_studio::io::image::Channels::Gray,
            data: vec![0],
        },
        input: input.to_vec(),
        note: None,
    };
    // The image the user just labelled (its tokens are in the cache), and one never seen.
    let labelled = frame(&shots.normal[k - 1].image);
    let unseen = frame(&synthetic_shots(k + 1).normal[k].image);
    let never = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    session.prepare_quick(&shots)?;
    let quick = started.elapsed().as_secs_f64();
    let started = Instant::now();
    session.score(std::slice::from_ref(&labelled), &never)?;
    let score_labelled = started.elapsed().as_secs_f64();
    let started = Instant::now();
    session.score(std::slice::from_ref(&unseen), &never)?;
    let score_unseen = started.elapsed().as_secs_f64();
    let started = Instant::now();
    session.prepare(&shots, &request)?;
    let full = started.elapsed().as_secs_f64();
    let cpu = mvfa_studio::backend::cpu_model();
    println!(
        "\ncorrection loop, {} normal + {k} abnormal shots, one normal shot added ({cpu}):",
        k - 1
    );
    println!("| step | seconds |\n|---|---:|");
    println!(
        "| first detector (memory bank of {} views, calibration) | {first:.1} |",
        (k - 1) * 11
    );
    println!("| quick step: bank from the unaugmented views (one new pass) | {quick:.2} |");
    println!("| new score of the image just labelled (tokens cached) | {score_labelled:.2} |");
    println!("| new score of an image not seen before | {score_unseen:.2} |");
    println!("| background step: augmented views and calibration | {full:.1} |");
    println!(
        "| label edit to the labelled image's new score | {:.2} |",
        quick + score_labelled
    );
    Ok(ExitCode::SUCCESS)
}

/// The random tower, adapters and configurations that the rows share.
pub(super) struct Tower<B: Backend> {
    pub(super) text_cfg: TextConfig,
    pub(super) vision: VisionTransformer<B>,
    pub(super) adapters: MvfaAdapters<B>,
    pub(super) adapters_cfg: MvfaAdaptersConfig,
    pub(super) scoring: ScoringConfig,
    /// Tokens per image.
    pub(super) tokens: usize,
    /// Tapped levels.
    pub(super) levels: usize,
}

impl<B: Backend> Tower<B> {
    /// Random adapted tokens of `n` images, `[n, tokens, embed_dim]` per tapped level: the
    /// cost of the few-shot search does not depend on the values.
    pub(super) fn random_tokens(
        &self,
        n: usize,
        embed_dim: usize,
        device: &B::Device,
    ) -> Vec<Tensor<B, 3>> {
        (0..self.levels)
            .map(|_| {
                Tensor::<B, 3>::random(
                    [n, self.tokens, embed_dim],
                    Distribution::Normal(0.0, 1.0),
                    device,
                )
            })
            .collect()
    }
}

/// Builds the random tower of `args` (seed 2024) and prints its sizes.
fn build_tower<B: Backend>(args: &BenchArgs, device: &B::Device) -> anyhow::Result<Tower<B>> {
    let heads = args.heads.unwrap_or((args.width / 64).max(1));
    let vision_cfg = VisionConfig::new()
        .with_layers(args.layers)
        .with_width(args.width)
        .with_heads(heads)
        .with_mlp_width(4 * args.width)
        .with_embed_dim(args.embed_dim);
    vision_cfg.validate().map_err(anyhow::Error::msg)?;
    let text_cfg = TextConfig::new()
        .with_layers(args.text_layers)
        .with_width(args.text_width)
        .with_heads((args.text_width / 64).max(1))
        .with_mlp_width(4 * args.text_width)
        .with_embed_dim(args.embed_dim);
    text_cfg.validate().map_err(anyhow::Error::msg)?;
    B::seed(device, 2024);
    let vision: VisionTransformer<B> = vision_cfg.init(device);
    let taps = vision.default_taps();
    let adapters_cfg = MvfaAdaptersConfig::new()
        .with_levels(taps.len())
        .with_width(args.width)
        .with_bottleneck(args.embed_dim);
    let adapters: MvfaAdapters<B> = adapters_cfg.init(device);
    let scoring = ScoringConfig::new()
        .with_image_size(MODEL_INPUT_SIZE)
        .with_grid_size(vision_cfg.grid_size());
    let tokens = vision_cfg.num_tokens();
    println!(
        "vision: {} blocks, width {}, {} heads, embed {}, {} px ({} tokens), taps {:?}; {} parameters + {} adapter parameters",
        args.layers,
        args.width,
        heads,
        args.embed_dim,
        MODEL_INPUT_SIZE,
        tokens,
        taps,
        vision.num_params(),
        adapters.num_params()
    );
    println!(
        "text: {} blocks, width {}; {} timed run(s) per row after one warm-up",
        args.text_layers, args.text_width, args.repeat
    );
    Ok(Tower {
        text_cfg,
        vision,
        adapters,
        adapters_cfg,
        scoring,
        tokens,
        levels: taps.len(),
    })
}

fn bench<B: Backend>(args: &BenchArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    let tower = build_tower::<B>(args, device)?;
    if let Some(slices) = args.series {
        super::bench_series::run(args, slices, &tower, device)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows: Vec<Row> = Vec::new();
    time_forward(args, device, &tower, &mut rows)?;
    let sentences = time_text(args, device, &tower, &mut rows)?;
    let FewShot {
        detector,
        bank,
        text_features,
    } = time_few_shot(args, device, &tower, &mut rows)?;
    time_score(args, device, detector, bank, &mut rows)?;
    time_train_step(args, &tower, &text_features, &mut rows)?;

    print_table(&rows);
    let peak = peak_rss_bytes();
    if let Some(peak) = peak {
        println!("peak memory (VmHWM): {}", mb(peak));
    }
    if let Some(k) = args.fit {
        let Tower {
            vision,
            adapters,
            adapters_cfg,
            scoring,
            ..
        } = tower;
        fit_synthetic::<B>(
            args,
            k,
            vision,
            adapters,
            adapters_cfg,
            scoring,
            text_features,
        )?;
    }
    if args.compare {
        println!();
        super::bench_compare::compare(args, &compared_rows(args, &rows, sentences), peak);
    }
    Ok(ExitCode::SUCCESS)
}

/// 1. Adapted forward pass (backbone + both adapter heads at every tapped level).
fn time_forward<B: Backend>(
    args: &BenchArgs,
    device: &B::Device,
    tower: &Tower<B>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let s = MODEL_INPUT_SIZE;
    let levels = tower.levels;
    for &batch in &args.batches {
        let images =
            Tensor::<B, 4>::random([batch, 3, s, s], Distribution::Uniform(0.0, 1.0), device);
        let t = time::<B>(args.repeat, batch, device, || {
            let f = tower
                .adapters
                .forward_adapted(&tower.vision, images.clone(), &tower.adapters_cfg)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let last = f.seg_tokens[levels - 1].clone() + f.det_tokens[levels - 1].clone();
            finish(last);
            Ok(())
        })?;
        push(
            rows,
            Some(&format!("forward_b{batch}")),
            "adapted forward pass, ms/image".into(),
            batch.to_string(),
            t,
        );
    }
    Ok(())
}

/// 2. Text features of one organ word (the full prompt ensemble). Returns the number of
///    sentences.
fn time_text<B: Backend>(
    args: &BenchArgs,
    device: &B::Device,
    tower: &Tower<B>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<usize> {
    let sentences = normal_sentences(&args.organ).len() + abnormal_sentences(&args.organ).len();
    let text = tower.text_cfg.init::<B>(device);
    let tokenizer = ClipTokenizer::new();
    let t = time::<B>(args.repeat, 1, device, || {
        let f = build_text_features(&tokenizer, &args.organ, device, |ids| text.encode(ids))?;
        finish(f);
        Ok(())
    })?;
    push(
        rows,
        Some("text"),
        format!(
            "text features for {:?} ({sentences} sentences), ms",
            args.organ
        ),
        "-".into(),
        t,
    );
    Ok(sentences)
}

/// What the few-shot row leaves for the next rows.
struct FewShot<B: Backend> {
    /// The detector on the random tower (no bank installed yet).
    detector: Detector<B, VisionTransformer<B>>,
    /// A random k-shot bank.
    bank: SupportBank<B>,
    /// Random text features `[embed, 2]`.
    text_features: Tensor<B, 2>,
}

/// 3. Few-shot search: one query image against a bank of 11k support images, all levels,
///    one head (scoring runs it for both heads). Random tokens: the cost does not depend
///    on the values. Returns the detector, its bank and the random text features.
fn time_few_shot<B: Backend>(
    args: &BenchArgs,
    device: &B::Device,
    tower: &Tower<B>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<FewShot<B>> {
    let (tokens, levels) = (tower.tokens, tower.levels);
    let bank_images = AUGMENT_FACTOR * args.shots;
    let random_tokens = |n: usize| tower.random_tokens(n, args.embed_dim, device);
    let text_features =
        Tensor::<B, 2>::random([args.embed_dim, 2], Distribution::Normal(0.0, 1.0), device);
    let detector = Detector::new(
        tower.vision.clone(),
        tower.adapters.clone(),
        tower.adapters_cfg.clone(),
        Scorer::new(tower.scoring.clone(), text_features.clone()),
        TaskKind::Segmentation,
        1,
    );
    let bank = SupportBank::new(
        MemoryBank::new(random_tokens(bank_images)),
        MemoryBank::new(random_tokens(bank_images)),
        vec![AUGMENT_FACTOR; args.shots],
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The detector's own few-shot path, on adapted tokens of one image.
    let query = AdaptedFeatures {
        seg_tokens: random_tokens(1),
        det_tokens: random_tokens(1),
    };
    let t = time::<B>(args.repeat, 1, device, || {
        finish(detector.few_shot_maps(&query, Head::Seg, &bank).fused);
        Ok(())
    })?;
    push(
        rows,
        Some("few_shot"),
        format!(
            "few-shot search k={} ({bank_images} x {tokens} bank rows, {levels} levels, one head), ms/image",
            args.shots
        ),
        "1".into(),
        t,
    );
    Ok(FewShot {
        detector,
        bank,
        text_features,
    })
}

/// 4. Scoring one image end to end: forward, zero-shot maps and scores, few-shot maps of
///    both heads against the k-shot bank (k groups of 11 augmentations), upsampling.
fn time_score<B: Backend>(
    args: &BenchArgs,
    device: &B::Device,
    mut detector: Detector<B, VisionTransformer<B>>,
    bank: SupportBank<B>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let s = MODEL_INPUT_SIZE;
    detector.set_support_bank(Some(bank));
    let image = Tensor::<B, 4>::random([1, 3, s, s], Distribution::Uniform(0.0, 1.0), device);
    let t = time::<B>(args.repeat, 1, device, || {
        detector
            .score(image.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    })?;
    push(
        rows,
        None,
        format!(
            "score one image (forward + both branches, k={}), ms/image",
            args.shots
        ),
        "1".into(),
        t,
    );
    Ok(())
}

/// 5. One training step on the autodiff backend: forward, focal + dice + BCE, backward,
///    Adam steps of both heads (batch 1), through the trainer itself.
fn time_train_step<B: Backend>(
    args: &BenchArgs,
    tower: &Tower<B>,
    text_features: &Tensor<B, 2>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    type AB<B> = Autodiff<B>;
    let s = MODEL_INPUT_SIZE;
    let vision_ad = VisionTransformer::<AB<B>>::from_inner(tower.vision.clone()).no_grad();
    let adapters_ad = MvfaAdapters::<AB<B>>::from_inner(tower.adapters.clone());
    let text_ad = Tensor::<AB<B>, 2>::from_inner(text_features.clone());
    let mut mask = vec![0f32; s * s];
    for y in s / 3..s / 2 {
        for x in s / 3..s / 2 {
            mask[y * s + x] = 1.0;
        }
    }
    let sample = TrainSample {
        image: (0..3 * s * s)
            .map(|i| ((i * 37) % 251) as f32 / 250.0)
            .collect(),
        mask: Some(mask),
        abnormal: true,
    };
    let cfg = TrainConfig::new().with_epochs(args.repeat + 1);
    let mut stamps = vec![Instant::now()];
    let cancel = AtomicBool::new(false);
    train(
        &vision_ad,
        adapters_ad,
        &tower.adapters_cfg,
        &tower.scoring,
        text_ad,
        std::slice::from_ref(&sample),
        LabelMode::Masks,
        &cfg,
        |event| {
            if let TrainEvent::Step(_) = event {
                stamps.push(Instant::now());
            }
        },
        &cancel,
    )?;
    let times: Vec<f64> = stamps
        .windows(2)
        .skip(1)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    push(
        rows,
        Some("train_step"),
        "training step (forward + loss + backward + 2 Adam), ms".into(),
        "1".into(),
        (median(times), min),
    );
    Ok(())
}

/// The rows that `--compare` matches with the PyTorch script's keys, with their labels.
fn compared_rows(args: &BenchArgs, rows: &[Row], sentences: usize) -> Vec<Ours> {
    rows.iter()
        .filter_map(|r| {
            let key = r.key.clone()?;
            let label = match key.as_str() {
                "text" => format!("text features, one organ word ({sentences} sentences)"),
                "few_shot" => format!("few-shot search k={}, one head, per image", args.shots),
                "train_step" => "training step, batch 1".to_string(),
                _ => format!("adapted forward, batch {}, per image", r.batch),
            };
            Some(Ours {
                key,
                label,
                ms: r.median_ms,
            })
        })
        .collect()
}

/// Synthetic k normal and k abnormal shots with masks, at the model's input size.
fn synthetic_shots(k: usize) -> mvfa_studio::train::fit::Shots {
    use mvfa_studio::train::fit::{Shot, Shots};
    let s = MODEL_INPUT_SIZE;
    let shot = |img: &mvfa_studio::train::synthetic::SyntheticImage| {
        let grey: Vec<f32> = img.pixels.iter().map(|&p| p as f32 / 255.0).collect();
        Shot {
            image: [grey.clone(), grey.clone(), grey].concat(),
            mask: img
                .abnormal
                .then(|| img.mask.iter().map(|&m| f32::from(m > 127)).collect()),
        }
    };
    Shots {
        normal: mvfa_studio::train::synthetic::generate(1, k, s, false)
            .iter()
            .map(shot)
            .collect(),
        abnormal: mvfa_studio::train::synthetic::generate(2, k, s, true)
            .iter()
            .map(shot)
            .collect(),
        held_out: Vec::new(),
    }
}

/// Notes when each phase of the fit began: the validation folds, the run on all shots, the
/// memory bank.
fn record_phase(
    phases: &mut Vec<(String, f64)>,
    event: &mvfa_studio::train::fit::FitEvent,
    now: f64,
) {
    use mvfa_studio::train::fit::FitEvent;
    match event {
        FitEvent::Run { purpose, .. } if purpose.starts_with("validation") && phases.is_empty() => {
            phases.push((
                "validation folds (fine-tuning, scoring the candidates)".into(),
                now,
            ));
        }
        FitEvent::Run { purpose, .. } if purpose.starts_with("validation") => {}
        FitEvent::Run { .. } => phases.push(("fine-tuning on all shots".into(), now)),
        FitEvent::BuildingMemoryBank { .. } => {
            phases.push(("memory bank and calibration".into(), now))
        }
        _ => {}
    }
}

/// `--fit K`: the whole fit (fine-tuning, memory bank, calibration) on synthetic shots.
fn fit_synthetic<B: Backend>(
    args: &BenchArgs,
    k: usize,
    vision: VisionTransformer<B>,
    adapters: MvfaAdapters<B>,
    adapters_cfg: MvfaAdaptersConfig,
    scoring: ScoringConfig,
    text_features: Tensor<B, 2>,
) -> anyhow::Result<()> {
    use mvfa_studio::train::fit::{FitModel, FitOutcome, FitSettings, Schedule, fit};
    let shots = synthetic_shots(k);
    let schedule = Schedule::from(args.schedule);
    let epochs = args.fit_epochs.unwrap_or(schedule.epochs());
    let model = FitModel {
        adapters: adapters_cfg,
        scoring,
    };
    let mut settings = FitSettings::default().with_schedule(schedule);
    settings.train.epochs = epochs;
    println!(
        "fit: k={k} normal + {k} abnormal synthetic shots with masks, {:?} schedule ({epochs} epochs x {} augmented images)",
        args.schedule,
        2 * k * schedule.training_augmentations()
    );
    let cancel = AtomicBool::new(false);
    let start = Instant::now();
    // When each phase began: the validation folds, the run on all shots, the memory bank.
    let mut phases: Vec<(String, f64)> = Vec::new();
    let outcome = fit::<Autodiff<B>>(
        vision,
        adapters,
        text_features,
        &shots,
        &model,
        &settings,
        |event| record_phase(&mut phases, &event, start.elapsed().as_secs_f64()),
        &cancel,
        None,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let total = start.elapsed().as_secs_f64();
    let FitOutcome::Fitted { selection, .. } = outcome else {
        anyhow::bail!("the fit did not finish");
    };
    let ends = phases.iter().skip(1).map(|p| p.1).chain([total]);
    let parts: Vec<String> = phases
        .iter()
        .zip(ends)
        .map(|((what, begin), end)| format!("{what} {:.1} s", end - begin))
        .collect();
    println!("fit k={k}: {total:.1} s in all ({})", parts.join(", "));
    if let Some(report) = selection {
        println!("{}", report.message);
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    let head = ["measurement", "batch", "median", "fastest", "peak RSS"].map(String::from);
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.what.clone(),
                r.batch.clone(),
                format!("{:.1}", r.median_ms),
                format!("{:.1}", r.min_ms),
                r.peak.map(mb).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_cells(&head, &cells);
}

/// Prints a table: the first column left-aligned, the others right-aligned.
pub(crate) fn print_cells<const N: usize>(head: &[String; N], cells: &[[String; N]]) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for c in cells {
        for (w, v) in widths.iter_mut().zip(c) {
            *w = (*w).max(v.len());
        }
    }
    let line = |c: &[String]| {
        c.iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (v, &w))| {
                if i == 0 {
                    format!("{v:<w$}")
                } else {
                    format!("{v:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!("{}", line(head));
    println!(
        "{}",
        widths
            .iter()
            .map(|&w| "-".repeat(w))
            .collect::<Vec<_>>()
            .join("-|-")
    );
    for c in cells {
        println!("{}", line(c));
    }
}
