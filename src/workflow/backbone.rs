//! The loaded CLIP: the vision tower MVFA hooks into, and the text tower with its prompt
//! features cached per organ word.
use std::path::Path;
use std::sync::OnceLock;

use burn::prelude::*;

use super::{WorkflowError, text_cache};
use crate::io::model_input::MODEL_INPUT_SIZE;
use crate::model::clip::config::VisionConfig;
use crate::model::clip::prompts::TextFeatureCache;
use crate::model::clip::text::TextTransformer;
use crate::model::clip::tokenizer::ClipTokenizer;
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::adapter::MvfaAdaptersConfig;
use crate::model::mvfa::scoring::ScoringConfig;
use crate::weights::adapters::{AdapterCheckpointMeta, BackboneIdentity, MixingRatios};
use crate::weights::clip::{LoadOptions, LoadReport, load_clip};

/// Both CLIP towers on one device.
pub struct Backbone<B: Backend> {
    vision: VisionTransformer<B>,
    text: TextTransformer<B>,
    tokenizer: ClipTokenizer,
    /// Prompt features per organ word, read from and written to the disk cache.
    cache: Option<TextFeatureCache>,
    /// SHA-256 of the weights file (hex), computed once when first needed.
    sha256: OnceLock<String>,
    report: LoadReport,
    device: B::Device,
}

impl<B: Backend> Backbone<B> {
    /// Loads both towers from `weights` (with `config`, else the config beside the weights,
    /// else ViT-L/14-336) at the 240 px model input, erf GELU (spec 1.2).
    pub fn open(
        weights: &Path,
        config: Option<&Path>,
        device: &B::Device,
    ) -> Result<Self, WorkflowError> {
        let options = LoadOptions {
            image_size: MODEL_INPUT_SIZE,
            config: config.map(Path::to_path_buf),
            ..Default::default()
        };
        let (clip, report) = load_clip::<B>(weights, &options, device)?;
        Ok(Self {
            vision: clip.vision,
            text: clip.text,
            tokenizer: ClipTokenizer::new(),
            cache: None,
            sha256: OnceLock::new(),
            report,
            device: device.clone(),
        })
    }

    /// The frozen vision tower (clones share the weights).
    pub fn vision(&self) -> &VisionTransformer<B> {
        &self.vision
    }

    /// What the loader applied.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// The device the towers live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// SHA-256 (hex) of the weights file; computed on first use (about a second per GB).
    pub fn weights_sha256(&self) -> Result<&str, WorkflowError> {
        if let Some(hash) = self.sha256.get() {
            return Ok(hash);
        }
        let path = &self.report.path;
        let hash = crate::weights::adapters::file_sha256_hex(path).map_err(|source| {
            WorkflowError::Weights(crate::weights::clip::WeightsError::Io {
                path: path.clone(),
                source,
            })
        })?;
        Ok(self.sha256.get_or_init(|| hash))
    }

    /// The `[embed, 2]` prompt features of `organ` (column 0 normal, column 1 abnormal,
    /// spec 3.4): from memory, else from the disk cache beside the weights, else built with
    /// the text tower and added to the disk cache ([`super::text_cache`]; a folder that
    /// cannot be written only costs the next run the text pass again).
    pub fn text_features(&mut self, organ: &str) -> Result<Tensor<B, 2>, WorkflowError> {
        if self.cache.is_none() {
            let hash = self.weights_sha256()?.to_string();
            self.cache = Some(text_cache::load(&self.report.path, &hash));
        }
        let cache = self.cache.as_mut().expect("loaded above");
        let known = cache.get(organ).is_some();
        let text = &self.text;
        let features = cache
            .get_or_build(&self.tokenizer, organ, &self.device, |ids| text.encode(ids))
            .map_err(|e| WorkflowError::TextFeatures {
                organ: organ.to_string(),
                source: e.into(),
            })?;
        if !known {
            let _ = text_cache::store(&self.report.path, cache);
        }
        Ok(features)
    }

    /// Adapter sizes for this tower (one level per tap, width = residual width, bottleneck =
    /// joint embedding) with the given mixing ratios and initialisation seed.
    pub fn adapters_config(&self, mixing: MixingRatios, seed: u64) -> MvfaAdaptersConfig {
        MvfaAdaptersConfig::new()
            .with_levels(self.vision.default_taps().len())
            .with_width(self.vision.width())
            .with_bottleneck(self.vision.embed_dim())
            .with_stream_ratio(mixing.stream)
            .with_seg_ratio(mixing.seg)
            .with_det_ratio(mixing.det)
            .with_seed(seed)
    }

    /// Scoring at the model input size with this tower's patch grid (17 at 240 px).
    pub fn scoring_config(&self) -> ScoringConfig {
        ScoringConfig::new()
            .with_image_size(MODEL_INPUT_SIZE)
            .with_grid_size(self.vision.grid_size())
    }

    /// The identity written into checkpoints. `weights_sha256_prefix` stays unset: hashing a
    /// 1.7 GB file takes seconds, so callers that want it fill it in.
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

    /// Errors when `meta` says the checkpoint at `checkpoint` was fitted on a differently
    /// shaped backbone. Checkpoints without an identity (imports) pass.
    pub fn check_identity(
        &self,
        checkpoint: &Path,
        meta: Option<&AdapterCheckpointMeta>,
    ) -> Result<(), WorkflowError> {
        let Some(theirs) = meta.and_then(|m| m.backbone.as_ref()) else {
            return Ok(());
        };
        let ours = self.identity();
        let same = theirs.image_size == ours.image_size
            && theirs.vision_width == ours.vision_width
            && theirs.vision_layers == ours.vision_layers
            && theirs.embed_dim == ours.embed_dim
            && theirs.tap_blocks == ours.tap_blocks;
        let describe = |id: &BackboneIdentity| {
            format!(
                "{}, {} px, width {}, {} blocks, embed {}, taps {:?}",
                id.model,
                id.image_size,
                id.vision_width,
                id.vision_layers,
                id.embed_dim,
                id.tap_blocks
            )
        };
        if same {
            Ok(())
        } else {
            Err(WorkflowError::BackboneMismatch {
                checkpoint: checkpoint.to_path_buf(),
                weights: self.report.path.clone(),
                theirs: describe(theirs),
                ours: describe(&ours),
            })
        }
    }
}
