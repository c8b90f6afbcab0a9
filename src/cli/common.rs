//! Pieces shared by the model-driven subcommands (`train`, `score`, `eval`): the CLIP
//! arguments, loading the backbone, text features per organ word, checkpoint metadata and
//! progress bars.
//!
//! Typical use inside a subcommand:
//!
//! ```ignore
//! let info = args.model.backend();
//! crate::with_backend!(info, |B, device| {
//!     let mut backbone = common::load_backbone::<B>(&args.model, &device)?;
//!     let text = backbone.text_features("Brain")?;          // [embed, 2]
//!     let adapters_cfg = backbone.adapters_config(MixingRatios::default());
//!     ...
//! })
//! ```
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::BackendInfo;
use crate::io::model_input::MODEL_INPUT_SIZE;
use crate::model::clip::config::VisionConfig;
use crate::model::clip::prompts::TextFeatureCache;
use crate::model::clip::text::TextTransformer;
use crate::model::clip::tokenizer::ClipTokenizer;
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::MvfaAdaptersConfig;
use crate::model::mvfa::scoring::ScoringConfig;
use crate::weights::adapters::{
    AdapterCheckpointMeta, BackboneIdentity, FORMAT_NAME, META_KEY, MixingRatios,
};
use crate::weights::clip::{LoadOptions, LoadReport, load_clip};

/// The backbone arguments every model-driven subcommand takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// CLIP weights: a safetensors file in the Hugging Face CLIPModel or the open_clip /
    /// OpenAI layout (both towers; the text tower builds the prompt features).
    #[arg(long, value_name = "WEIGHTS")]
    pub clip: PathBuf,
    /// Architecture file for --clip (Hugging Face config.json or open_clip model config);
    /// default: config.json / open_clip_config.json beside the weights, else ViT-L/14-336.
    #[arg(long, value_name = "JSON")]
    pub clip_config: Option<PathBuf>,
    /// Run on the CPU even when a GPU backend is compiled in and available.
    #[arg(long)]
    pub cpu: bool,
    /// Organ / object word inserted into the text prompts (spec 3.1), e.g. "Brain",
    /// "Chest X-ray film". Default: from the checkpoint or the dataset.
    #[arg(long, value_name = "WORD")]
    pub organ: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = parse_positive)]
    pub batch: usize,
}

impl ModelArgs {
    /// Picks the backend (GPU when compiled in and present, unless `--cpu`) and prints the
    /// choice, with the reason for a fallback, to stderr.
    pub fn backend(&self) -> BackendInfo {
        let info = crate::backend::probe(self.cpu);
        if let Some(reason) = &info.fallback_reason {
            eprintln!("note: {reason}");
        }
        eprintln!("backend: {} on {}", info.backend, info.device);
        info
    }

    /// Load options for the CLIP file: 240 px model input, erf GELU (spec 1.2).
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            image_size: MODEL_INPUT_SIZE,
            config: self.clip_config.clone(),
            ..Default::default()
        }
    }
}

/// The loaded CLIP: the vision tower MVFA hooks into, and the text tower with a cache of
/// prompt features per organ word.
pub struct Backbone<B: Backend> {
    /// The frozen vision tower (clone it into detectors; clones share the weights).
    pub vision: VisionTransformer<B>,
    text: TextTransformer<B>,
    tokenizer: ClipTokenizer,
    cache: TextFeatureCache,
    /// What the loader applied.
    pub report: LoadReport,
    device: B::Device,
}

/// Loads both CLIP towers from `--clip` (and `--clip-config`) onto `device` and prints a
/// short load summary to stderr. Errors name the file and the problem.
pub fn load_backbone<B: Backend>(
    args: &ModelArgs,
    device: &B::Device,
) -> anyhow::Result<Backbone<B>> {
    let started = std::time::Instant::now();
    let (clip, report) = load_clip::<B>(&args.clip, &args.load_options(), device)
        .with_context(|| format!("{}: could not load the CLIP weights", args.clip.display()))?;
    eprintln!("{}", load_summary(&report, started.elapsed()));
    Ok(Backbone {
        vision: clip.vision,
        text: clip.text,
        tokenizer: ClipTokenizer::new(),
        cache: TextFeatureCache::new(args.clip.display().to_string()),
        report,
        device: device.clone(),
    })
}

/// Two lines: the file, its layout and config source; the vision tower's shape.
pub fn load_summary(report: &LoadReport, elapsed: Duration) -> String {
    let v = &report.config.vision;
    format!(
        "CLIP: {} ({:.1} MB, {}, config: {}), {} tower(s), {} tensors applied in {:.1} s\n\
         vision: width {}, {} blocks, patch {}, embed {}, {} px input ({}x{} patches)",
        report.path.display(),
        report.file_bytes as f64 / 1e6,
        report.layout,
        report.config_source,
        report.tower_names(),
        report.applied.len(),
        elapsed.as_secs_f64(),
        v.width,
        v.layers,
        v.patch_size,
        v.embed_dim,
        v.image_size,
        v.grid_size(),
        v.grid_size(),
    )
}

impl<B: Backend> Backbone<B> {
    /// The `[embed, 2]` prompt features of `organ` (column 0 normal, column 1 abnormal,
    /// spec 3.4), built with the text tower on first use and cached.
    pub fn text_features(&mut self, organ: &str) -> anyhow::Result<Tensor<B, 2>> {
        let text = &self.text;
        self.cache
            .get_or_build(&self.tokenizer, organ, &self.device, |ids| text.encode(ids))
            .with_context(|| format!("text features for the organ word {organ:?}"))
    }

    /// The device the towers live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Adapter sizes for this tower (4 levels, width = residual width, bottleneck = joint
    /// embedding), with the given mixing ratios.
    pub fn adapters_config(&self, mixing: MixingRatios) -> MvfaAdaptersConfig {
        MvfaAdaptersConfig::new()
            .with_levels(self.vision.default_taps().len())
            .with_width(self.vision.width())
            .with_bottleneck(self.vision.embed_dim())
            .with_stream_ratio(mixing.stream)
            .with_seg_ratio(mixing.seg)
            .with_det_ratio(mixing.det)
    }

    /// Scoring at the model input size with this tower's patch grid (17 at 240 px).
    pub fn scoring_config(&self) -> ScoringConfig {
        ScoringConfig::new()
            .with_image_size(MODEL_INPUT_SIZE)
            .with_grid_size(self.vision.grid_size())
    }

    /// The identity written into checkpoints (no weights hash: hashing a 1.7 GB file takes
    /// seconds; set `weights_sha256_prefix` yourself if you want it).
    pub fn identity(&self) -> BackboneIdentity {
        let v = &self.report.config.vision;
        let canonical = VisionConfig::new();
        let model = if v.width == canonical.width
            && v.layers == canonical.layers
            && v.patch_size == canonical.patch_size
            && v.embed_dim == canonical.embed_dim
        {
            "ViT-L-14-336".to_string()
        } else {
            format!(
                "ViT (width {}, {} blocks, patch {}, embed {})",
                v.width, v.layers, v.patch_size, v.embed_dim
            )
        };
        BackboneIdentity {
            model,
            image_size: MODEL_INPUT_SIZE,
            vision_width: self.vision.width(),
            vision_layers: self.vision.num_blocks(),
            embed_dim: self.vision.embed_dim(),
            tap_blocks: self.vision.default_taps(),
            weights_sha256_prefix: None,
        }
    }

    /// Errors (naming `checkpoint`) when the checkpoint says it was trained on a differently
    /// shaped backbone. Checkpoints without an identity (imports) pass.
    pub fn check_identity(
        &self,
        checkpoint: &Path,
        meta: Option<&AdapterCheckpointMeta>,
    ) -> anyhow::Result<()> {
        let Some(theirs) = meta.and_then(|m| m.backbone.as_ref()) else {
            return Ok(());
        };
        let ours = self.identity();
        let same = theirs.image_size == ours.image_size
            && theirs.vision_width == ours.vision_width
            && theirs.vision_layers == ours.vision_layers
            && theirs.embed_dim == ours.embed_dim
            && theirs.tap_blocks == ours.tap_blocks;
        anyhow::ensure!(
            same,
            "{}: the checkpoint belongs to another backbone ({}, {} px, width {}, {} blocks, \
             embed {}, taps {:?}) than {} ({}, width {}, {} blocks, embed {}, taps {:?})",
            checkpoint.display(),
            theirs.model,
            theirs.image_size,
            theirs.vision_width,
            theirs.vision_layers,
            theirs.embed_dim,
            theirs.tap_blocks,
            self.report.path.display(),
            ours.model,
            ours.vision_width,
            ours.vision_layers,
            ours.embed_dim,
            ours.tap_blocks,
        );
        Ok(())
    }
}

/// The metadata of one of our checkpoint files, read from the safetensors header only
/// (nothing else is loaded). `Ok(None)` for a reference `.pth` (ZIP or pickle), which has
/// none. Errors name the file.
pub fn read_checkpoint_meta(path: &Path) -> anyhow::Result<Option<AdapterCheckpointMeta>> {
    let ctx = || format!("{}: cannot read the checkpoint", path.display());
    let mut file = std::fs::File::open(path).with_context(ctx)?;
    let mut head = [0u8; 8];
    let n = read_up_to(&mut file, &mut head).with_context(ctx)?;
    if (n >= 4 && head[..4] == *b"PK\x03\x04") || (n >= 1 && head[0] == 0x80) {
        return Ok(None);
    }
    anyhow::ensure!(
        n == 8,
        "{}: not a checkpoint (too short for a safetensors header)",
        path.display()
    );
    let len = u64::from_le_bytes(head);
    let file_len = file.metadata().with_context(ctx)?.len();
    anyhow::ensure!(
        len <= 100_000_000 && len + 8 <= file_len,
        "{}: not a safetensors checkpoint (header length {len} in a file of {file_len} bytes)",
        path.display()
    );
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).with_context(ctx)?;
    let json: serde_json::Value = serde_json::from_slice(&header).with_context(|| {
        format!(
            "{}: the safetensors header is not valid JSON",
            path.display()
        )
    })?;
    let Some(text) = json
        .get("__metadata__")
        .and_then(|m| m.get(META_KEY))
        .and_then(|v| v.as_str())
    else {
        anyhow::bail!(
            "{}: no '{META_KEY}' metadata: not an MVFA Studio checkpoint ({FORMAT_NAME})",
            path.display()
        );
    };
    let meta: AdapterCheckpointMeta = serde_json::from_str(text).with_context(|| {
        format!(
            "{}: the checkpoint metadata is not readable",
            path.display()
        )
    })?;
    Ok(Some(meta))
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A progress bar on stderr for `len` units of `what` (e.g. "images"), with rate and ETA.
/// Hidden automatically when stderr is not a terminal (pipes, tests).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template =
        format!("{{msg:>12}} [{{bar:30}}] {{pos}}/{{len}} {what} ({{per_sec}}, ETA {{eta}})");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Parses a count of at least 1 (for `--batch`, `--shots`, `--repeat`...).
pub fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Loads shot images (first frame) and, where `with_masks`, their masks at model resolution.
pub fn load_shots(
    samples: &[crate::io::dataset::Sample],
    with_masks: bool,
) -> anyhow::Result<Vec<crate::train::fit::Shot>> {
    samples
        .iter()
        .map(|sample| {
            let image = crate::io::input::load_model_image(&sample.image)?.input;
            let mask = match (&sample.mask, with_masks) {
                (Some(path), true) => Some(crate::io::input::load_mask(path)?),
                _ => None,
            };
            Ok(crate::train::fit::Shot { image, mask })
        })
        .collect()
}
