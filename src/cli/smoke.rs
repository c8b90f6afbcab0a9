//! `mvfa-studio smoke`: build the CLIP vision tower (ViT-L/14-336 by default, random weights)
//! or load it from a file, run one 240 px image end to end and print the tap shapes, the wall
//! time and the peak memory. Run it in release mode:
//!
//! ```text
//! cargo run --release -- smoke                 # random ViT-L/14-336, 240 px
//! cargo run --release -- smoke --weights clip.safetensors
//! cargo run --release -- smoke --layers 8 --width 64 --heads 4   # a small tower
//! ```
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

use super::common::{parse_image_side, parse_positive};
use super::weights_cmd::{mb, peak_rss_bytes};
use crate::model::clip::config::VisionConfig;
use crate::weights::clip::{LoadOptions, load_clip_vision};

#[derive(clap::Args, Debug)]
pub struct SmokeArgs {
    /// Load the vision tower from this safetensors file instead of random weights.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Architecture file for --weights (default: beside the file).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Input image side.
    #[arg(long, default_value_t = 240, value_parser = parse_image_side)]
    pub image_size: usize,
    /// Transformer blocks (random weights only).
    #[arg(long, default_value_t = 24, value_parser = parse_positive)]
    pub layers: usize,
    /// Residual width (random weights only).
    #[arg(long, default_value_t = 1024, value_parser = parse_positive)]
    pub width: usize,
    /// Attention heads (random weights only).
    #[arg(long, default_value_t = 16, value_parser = parse_positive)]
    pub heads: usize,
    /// MLP width (random weights only; default 4 x width).
    #[arg(long, value_parser = parse_positive)]
    pub mlp_width: Option<usize>,
    /// Patch side (random weights only).
    #[arg(long, default_value_t = 14, value_parser = parse_positive)]
    pub patch_size: usize,
    /// Output embedding width (random weights only).
    #[arg(long, default_value_t = 768, value_parser = parse_positive)]
    pub embed_dim: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub batch: usize,
    /// Timed forward passes after the first one.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Run on the CPU even when a GPU backend is compiled in and available.
    #[arg(long)]
    pub cpu: bool,
}

/// Materialises every lazily initialised parameter (so init time is not counted as forward).
struct Touch;
impl<B: Backend> ModuleVisitor<B> for Touch {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

pub fn run(args: SmokeArgs) -> anyhow::Result<ExitCode> {
    let info = crate::backend::probe(args.cpu);
    if let Some(reason) = &info.fallback_reason {
        eprintln!("note: {reason}");
    }
    println!("backend: {} on {}", info.backend, info.device);
    crate::with_backend!(info, |B, device| smoke::<B>(&args, &device))
}

fn smoke<B: Backend>(args: &SmokeArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let vit = match &args.weights {
        Some(path) => {
            let opts = LoadOptions {
                image_size: args.image_size,
                config: args.config.clone(),
                ..Default::default()
            };
            let (vit, report) = load_clip_vision::<B>(path, &opts, device)?;
            println!("{report}");
            vit
        }
        None => {
            let cfg = VisionConfig::new()
                .with_image_size(args.image_size)
                .with_layers(args.layers)
                .with_width(args.width)
                .with_heads(args.heads)
                .with_mlp_width(args.mlp_width.unwrap_or(4 * args.width))
                .with_patch_size(args.patch_size)
                .with_embed_dim(args.embed_dim);
            cfg.validate().map_err(anyhow::Error::msg)?;
            B::seed(device, 2024);
            let vit = cfg.init::<B>(device);
            vit.visit(&mut Touch);
            vit
        }
    };
    B::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let weights_s = start.elapsed().as_secs_f64();
    let source = if args.weights.is_some() {
        "loaded"
    } else {
        "random init"
    };
    println!(
        "vision tower: {} blocks, width {}, grid {}x{}, {} parameters ({source} in {weights_s:.2} s)",
        vit.num_blocks(),
        vit.width(),
        vit.grid_size(),
        vit.grid_size(),
        vit.num_params()
    );
    let peak_after_weights = peak_rss_bytes();

    let s = args.image_size;
    let images = Tensor::<B, 4>::random(
        [args.batch, 3, s, s],
        Distribution::Uniform(0.0, 1.0),
        device,
    );
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..=args.repeat {
        let t = Instant::now();
        let o = vit.forward(images.clone());
        let _ = o.embedding.clone().into_data();
        B::sync(device).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        times.push(t.elapsed().as_secs_f64());
        out = Some(o);
    }
    let out = out.expect("at least one pass");
    for (b, t) in vit.default_taps().iter().zip(&out.taps) {
        println!("tap after block {b:>2}: {:?}", t.dims());
    }
    println!("embedding: {:?}", out.embedding.dims());
    let rest: Vec<String> = times[1..].iter().map(|t| format!("{t:.2} s")).collect();
    println!(
        "forward ({} image(s) of {s} px): first {:.2} s{}",
        args.batch,
        times[0],
        if rest.is_empty() {
            String::new()
        } else {
            format!(", then {}", rest.join(", "))
        }
    );
    if let (Some(w), Some(p)) = (peak_after_weights, peak_rss_bytes()) {
        println!(
            "peak memory (VmHWM): {} after weights, {} after forward",
            mb(w),
            mb(p)
        );
    }
    Ok(ExitCode::SUCCESS)
}
