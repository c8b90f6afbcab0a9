//! `mvfa-studio weights <file.safetensors>`: load (or only check) a CLIP weights file and print
//! the detected layout, the architecture and the load report. Exits with an error naming the
//! problem when the file cannot be loaded completely.
//!
//! `mvfa-studio weights download`: fetch the public ViT-L/14-336 weights from the Hugging Face
//! hub ([`crate::weights::download`]) with a progress bar and a SHA-256 check, and print the
//! path of the weights file.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::common::{mb, peak_rss_bytes};

use crate::weights::clip::{
    ActivationChoice, LoadOptions, inspect_clip, load_clip, load_clip_vision,
};
use crate::weights::download::{
    DownloadProgress, DownloadSource, DownloadStage, default_cache_dir, download_weights,
};

/// Activation choice on the command line.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ActivationArg {
    /// Exact erf GELU (MVFA's reference, the default).
    Gelu,
    /// QuickGELU (OpenAI CLIP as trained).
    QuickGelu,
    /// Whatever the config file says.
    FromConfig,
}

impl From<ActivationArg> for ActivationChoice {
    fn from(a: ActivationArg) -> Self {
        match a {
            ActivationArg::Gelu => ActivationChoice::Gelu,
            ActivationArg::QuickGelu => ActivationChoice::QuickGelu,
            ActivationArg::FromConfig => ActivationChoice::FromConfig,
        }
    }
}

/// `weights FILE [options]` loads a file; `weights download` fetches the public weights.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct WeightsArgs {
    /// What to do instead of loading a file.
    #[command(subcommand)]
    pub action: Option<WeightsAction>,
    /// A safetensors file in the Hugging Face CLIPModel or the open_clip / OpenAI layout.
    #[arg(required = true)]
    pub file: Option<PathBuf>,
    /// Architecture file (Hugging Face config.json or open_clip model config); by default
    /// config.json / open_clip_config.json beside the file, else ViT-L/14-336.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Load the vision tower only (the text keys are reported as skipped).
    #[arg(long)]
    pub vision_only: bool,
    /// Only validate keys, shapes and dtypes; convert nothing.
    #[arg(long)]
    pub check: bool,
    /// Input image side the position table is resized for.
    #[arg(long, default_value_t = 240, value_parser = super::common::parse_image_side)]
    pub image_size: usize,
    /// MLP activation.
    #[arg(long, value_enum, default_value = "gelu")]
    pub activation: ActivationArg,
}

/// The subcommands of `weights`.
#[derive(clap::Subcommand, Debug)]
pub enum WeightsAction {
    /// Download the public CLIP ViT-L/14-336 weights (Hugging Face layout: model.safetensors
    /// with its config.json) from the Hugging Face hub, check their SHA-256 and print the path
    /// of the weights file. Files already downloaded are reused; an interrupted download
    /// resumes.
    Download(DownloadArgs),
}

/// Options of `weights download`.
#[derive(clap::Args, Debug)]
pub struct DownloadArgs {
    /// Hugging Face cache folder to download into (models--ORG--NAME/snapshots/... inside);
    /// default: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub, shared with the
    /// other Hugging Face tools.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Hub address (a mirror); default: $HF_ENDPOINT or https://huggingface.co.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Repository to download from instead of openai/clip-vit-large-patch14-336 (it must hold
    /// model.safetensors and config.json in the Hugging Face CLIPModel layout).
    #[arg(long, value_name = "ORG/NAME")]
    pub repo: Option<String>,
    /// Branch, tag, commit or refs/pr/N; default: main, then the safetensors conversion ref.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
}

/// The `weights` subcommand: `download`, or load / check a file.
pub fn run(args: WeightsArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(WeightsAction::Download(d)) => download(d),
        None => load(args),
    }
}

/// `weights download`: progress bars on stderr, the weights path on stdout.
fn download(args: DownloadArgs) -> anyhow::Result<ExitCode> {
    let mut source = DownloadSource {
        endpoint: args.endpoint,
        ..DownloadSource::vit_l14_336()
    };
    if let Some(repo) = args.repo {
        source.repo = repo;
        source.fallback_revisions.clear();
    }
    if let Some(rev) = args.revision {
        source.revision = rev;
        source.fallback_revisions.clear();
    }
    let cache = args.out.clone().or_else(default_cache_dir);
    if let Some(dir) = &cache {
        eprintln!(
            "downloading {} from {} into {}",
            source.repo,
            source.resolved_endpoint(),
            dir.display()
        );
    }
    let cancel = AtomicBool::new(false);
    let mut bar: Option<(usize, ProgressBar)> = None;
    let mut on_progress = |p: DownloadProgress| {
        if bar.as_ref().is_none_or(|(i, _)| *i != p.index) {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            bar = Some((p.index, bytes_bar(&p.file)));
        }
        let Some((_, b)) = &bar else { return };
        if p.total > 0 {
            b.set_length(p.total);
        }
        b.set_position(p.done);
        match p.stage {
            DownloadStage::Resolving => b.set_prefix("resolving"),
            DownloadStage::Verifying => b.set_prefix("verifying"),
            DownloadStage::Downloading => b.set_prefix("downloading"),
            DownloadStage::Finished => {
                b.set_prefix("done");
                b.finish();
                match &p.sha256 {
                    Some(sha) => eprintln!("{}: {} bytes, SHA-256 {sha} verified", p.file, p.total),
                    None => eprintln!("{}: {} bytes", p.file, p.total),
                }
            }
        }
    };
    let weights = download_weights(&source, args.out.as_deref(), &mut on_progress, &cancel)?;
    println!("{}", weights.display());
    eprintln!(
        "use it with --clip {} (config.json beside it), or File > Open CLIP weights… in the app",
        weights.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A bar in bytes on stderr (hidden when stderr is not a terminal).
fn bytes_bar(file: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>11} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(file.to_string());
    bar
}

/// `weights FILE`: load (or check) the file and print the load report.
fn load(args: WeightsArgs) -> anyhow::Result<ExitCode> {
    let Some(file) = args.file else {
        anyhow::bail!("no weights file given");
    };
    let opts = LoadOptions {
        image_size: args.image_size,
        config: args.config.clone(),
        activation: args.activation.into(),
    };
    let start = Instant::now();
    let (report, params) = if args.check {
        (inspect_clip(&file, &opts, !args.vision_only)?, None)
    } else {
        type B = crate::backend::CpuBackend;
        let device = Default::default();
        if args.vision_only {
            let (m, r) = load_clip_vision::<B>(&file, &opts, &device)?;
            (r, Some(burn::module::Module::num_params(&m)))
        } else {
            let (m, r) = load_clip::<B>(&file, &opts, &device)?;
            (r, Some(burn::module::Module::num_params(&m)))
        }
    };
    println!("{report}");
    let what = if args.check { "checked" } else { "loaded" };
    print!("{what} in {:.2} s", start.elapsed().as_secs_f64());
    if let Some(n) = params {
        print!(", {n} parameters ({} as f32)", mb(4 * n as u64));
    }
    if let Some(peak) = peak_rss_bytes() {
        print!(
            ", peak memory {} ({:.2}x the file)",
            mb(peak),
            peak as f64 / report.file_bytes.max(1) as f64
        );
    }
    println!();
    Ok(ExitCode::SUCCESS)
}
