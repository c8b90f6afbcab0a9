//! `mvfa-studio weights <file.safetensors>`: load (or only check) a CLIP weights file and print
//! the detected layout, the architecture and the load report. Exits with an error naming the
//! problem when the file cannot be loaded completely.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::weights::clip::{
    ActivationChoice, LoadOptions, inspect_clip, load_clip, load_clip_vision,
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

#[derive(clap::Args, Debug)]
pub struct WeightsArgs {
    /// A safetensors file in the Hugging Face CLIPModel or the open_clip / OpenAI layout.
    pub file: PathBuf,
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

/// Peak resident memory of this process (`VmHWM`), in bytes, where /proc is available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `12.3 MB` style size.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub fn run(args: WeightsArgs) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions {
        image_size: args.image_size,
        config: args.config.clone(),
        activation: args.activation.into(),
    };
    let start = Instant::now();
    let (report, params) = if args.check {
        (inspect_clip(&args.file, &opts, !args.vision_only)?, None)
    } else {
        type B = crate::backend::CpuBackend;
        let device = Default::default();
        if args.vision_only {
            let (m, r) = load_clip_vision::<B>(&args.file, &opts, &device)?;
            (r, Some(burn::module::Module::num_params(&m)))
        } else {
            let (m, r) = load_clip::<B>(&args.file, &opts, &device)?;
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
