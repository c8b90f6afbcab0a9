//! `mvfa-dev smoke`: build the CLIP vision tower (ViT-L/14-336 by default, random weights)
//! or load it from a file, run one 240 px image end to end and print the tap shapes, the wall
//! time and the peak memory. Run it in release mode:
//!
//! ```text
//! cargo run --release --bin mvfa-dev -- smoke     # random ViT-L/14-336, 240 px
//! cargo run --release --bin mvfa-dev -- smoke --weights clip.safetensors
//! cargo run --release --bin mvfa-dev -- smoke --layers 8 --width 64 --heads 4   # a small tower
//! ```
// Sizes here come from the command line: checked arithmetic only.
#![deny(clippy::arithmetic_side_effects)]
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

use mvfa_studio::cli::common::{mb, peak_rss_bytes};
use mvfa_studio::cli::common::{parse_image_side, parse_positive};
use mvfa_studio::model::clip::config::VisionConfig;
use mvfa_studio::model::clip::vision::VisionTransformer;
use mvfa_studio::weights::clip::{LoadOptions, load_clip_vision};

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

/// What the memory estimate needs to know of a vision tower.
struct Tower {
    /// Parameters (`None`: too many to count).
    params: Option<u64>,
    width: usize,
    heads: usize,
    mlp_width: usize,
    /// Patches per side.
    grid: usize,
}

/// Parameters of a vision tower built from `cfg`: per block the attention (4 width x width
/// matrices), the MLP and their biases and norms; the patch embedding, the position table,
/// the projection. `None` when the count overflows.
fn vision_params(cfg: &VisionConfig) -> Option<u64> {
    let w = u64::try_from(cfg.width).ok()?;
    let m = u64::try_from(cfg.mlp_width).ok()?;
    let p = u64::try_from(cfg.patch_size).ok()?;
    let g = u64::try_from(cfg.grid_size()).ok()?;
    let block = w
        .checked_mul(w)?
        .checked_mul(4)?
        .checked_add(w.checked_mul(m)?.checked_mul(2)?)?
        .checked_add(w.checked_mul(10)?)?
        .checked_add(m)?;
    let tokens = g.checked_mul(g)?.checked_add(1)?;
    u64::try_from(cfg.layers)
        .ok()?
        .checked_mul(block)?
        .checked_add(p.checked_mul(p)?.checked_mul(3)?.checked_mul(w)?)?
        .checked_add(tokens.checked_add(4)?.checked_mul(w)?)?
        .checked_add(w.checked_mul(u64::try_from(cfg.embed_dim).ok()?)?)
}

/// Bytes one forward pass needs, roughly: the parameters, the input, and the largest
/// activations of a block (the attention scores of every head, twice for the softmax, and
/// the MLP's hidden layer), all f32. `None` when the count overflows.
fn forward_bytes(args: &SmokeArgs, t: &Tower) -> Option<u64> {
    let batch = u64::try_from(args.batch).ok()?;
    let side = u64::try_from(args.image_size).ok()?;
    let g = u64::try_from(t.grid).ok()?;
    let tokens = g.checked_mul(g)?.checked_add(1)?;
    let input = batch.checked_mul(3)?.checked_mul(side)?.checked_mul(side)?;
    let scores = batch
        .checked_mul(u64::try_from(t.heads).ok()?)?
        .checked_mul(tokens)?
        .checked_mul(tokens)?
        .checked_mul(2)?;
    let wide = u64::try_from(t.width.max(t.mlp_width)).ok()?;
    let hidden = batch
        .checked_mul(tokens)?
        .checked_mul(wide)?
        .checked_mul(4)?;
    t.params?
        .checked_add(input)?
        .checked_add(scores)?
        .checked_add(hidden)?
        .checked_mul(4)
}

/// This machine's physical memory in bytes, where the system says.
fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no memory preconditions.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        u64::try_from(pages)
            .ok()?
            .checked_mul(u64::try_from(page).ok()?)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Refuses sizes whose forward pass cannot fit in this machine's memory, before anything
/// that large is allocated (an allocation that fails aborts the process).
fn check_memory(args: &SmokeArgs, tower: &Tower) -> anyhow::Result<()> {
    let what = format!(
        "{} image(s) of {} px through a tower of width {} ({}x{} patches)",
        args.batch, args.image_size, tower.width, tower.grid, tower.grid
    );
    let Some(need) = forward_bytes(args, tower) else {
        anyhow::bail!("{what}: the memory needed overflows; use smaller sizes");
    };
    if let Some(have) = physical_memory()
        && need > have
    {
        anyhow::bail!(
            "{what} need about {:.1} GB of memory, more than this machine's {:.1} GB; use a \
             smaller --batch, --image-size or tower",
            need as f64 / 1e9,
            have as f64 / 1e9
        );
    }
    Ok(())
}

pub fn run(args: SmokeArgs) -> anyhow::Result<ExitCode> {
    let info = mvfa_studio::backend::probe(args.cpu);
    if let Some(reason) = &info.fallback_reason {
        eprintln!("note: {reason}");
    }
    println!("backend: {} on {}", info.backend, info.device);
    mvfa_studio::with_backend!(info, |B, device| smoke::<B>(&args, &device))
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
        None => random_tower::<B>(args, device)?,
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
    if args.weights.is_some() {
        // CLIP towers have 64-wide heads and a 4x MLP.
        let tower = Tower {
            params: u64::try_from(vit.num_params()).ok(),
            width: vit.width(),
            heads: (vit.width() / 64).max(1),
            mlp_width: vit.width().saturating_mul(4),
            grid: vit.grid_size(),
        };
        check_memory(args, &tower)?;
    }
    forward(args, device, &vit)?;
    if let (Some(w), Some(p)) = (peak_after_weights, peak_rss_bytes()) {
        println!(
            "peak memory (VmHWM): {} after weights, {} after forward",
            mb(w),
            mb(p)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The tower of the size flags with random weights (seed 2024), every parameter
/// materialised; sizes beyond this machine's memory are refused first.
fn random_tower<B: Backend>(
    args: &SmokeArgs,
    device: &B::Device,
) -> anyhow::Result<VisionTransformer<B>> {
    let mlp_width = match args.mlp_width {
        Some(m) => m,
        None => args
            .width
            .checked_mul(4)
            .ok_or_else(|| anyhow::anyhow!("--width {} is too large", args.width))?,
    };
    let cfg = VisionConfig::new()
        .with_image_size(args.image_size)
        .with_layers(args.layers)
        .with_width(args.width)
        .with_heads(args.heads)
        .with_mlp_width(mlp_width)
        .with_patch_size(args.patch_size)
        .with_embed_dim(args.embed_dim);
    cfg.validate().map_err(anyhow::Error::msg)?;
    let tower = Tower {
        params: vision_params(&cfg),
        width: cfg.width,
        heads: cfg.heads,
        mlp_width: cfg.mlp_width,
        grid: cfg.grid_size(),
    };
    check_memory(args, &tower)?;
    B::seed(device, 2024);
    let vit = cfg.init::<B>(device);
    vit.visit(&mut Touch);
    Ok(vit)
}

/// Runs the first and the `--repeat` timed forward passes on random images and prints the
/// tap shapes, the embedding shape and the times.
fn forward<B: Backend>(
    args: &SmokeArgs,
    device: &B::Device,
    vit: &VisionTransformer<B>,
) -> anyhow::Result<()> {
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
    Ok(())
}
