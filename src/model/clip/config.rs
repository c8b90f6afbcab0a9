//! Architecture of the two CLIP towers.
//!
//! Every default is CLIP ViT-L/14-336 as MVFA runs it (spec section 1): a 336 px checkpoint
//! (24x24 position grid) fed 240 px images (17x17 grid, 290 tokens), erf GELU in both towers.
//! Weight files describe their own architecture (a Hugging Face `config.json` or an open_clip
//! model config, parsed by [`crate::weights::clip`]); these structs are what the model code
//! builds from.
use burn::config::Config;
use burn::prelude::Backend;

use super::text::TextTransformer;
use super::transformer::BlockConfig;
use super::vision::VisionTransformer;

/// The MLP non-linearity of the transformer blocks.
///
/// MVFA's reference builds its CLIP from a JSON config without a `quick_gelu` key, so both
/// towers run the exact erf GELU although OpenAI trained with QuickGELU (spec 1.2). The
/// released MVFA adapters and all reported numbers depend on that, hence [`Activation::Gelu`]
/// is the default everywhere, whatever a weight file's config says.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x * (1 + erf(x / sqrt(2))) / 2` (PyTorch `nn.GELU()`). MVFA's default.
    Gelu,
    /// QuickGELU, `x * sigmoid(1.702 x)`, what OpenAI's CLIP was trained with.
    QuickGelu,
}

impl Activation {
    /// Short name as used in configs and reports (`gelu`, `quick_gelu`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::QuickGelu => "quick_gelu",
        }
    }
}

/// Vision tower configuration. Defaults: ViT-L/14-336 fed 240 px images.
#[derive(Config, Debug, PartialEq)]
pub struct VisionConfig {
    /// Side of the (square) input image in pixels. MVFA uses 240 (`--img_size 240`); pixels
    /// beyond `grid_size() * patch_size` (rows/cols 238 and 239 at 240) never reach the model.
    #[config(default = 240)]
    pub image_size: usize,
    /// Patch side in pixels (stride of the patch convolution).
    #[config(default = 14)]
    pub patch_size: usize,
    /// Residual stream width.
    #[config(default = 1024)]
    pub width: usize,
    /// Number of transformer blocks.
    #[config(default = 24)]
    pub layers: usize,
    /// Attention heads (head width = `width / heads`).
    #[config(default = 16)]
    pub heads: usize,
    /// Hidden width of the block MLPs.
    #[config(default = 4096)]
    pub mlp_width: usize,
    /// Output embedding (joint space) width of `proj`.
    #[config(default = 768)]
    pub embed_dim: usize,
    /// Side of the position grid the checkpoint was trained with (336 / 14 = 24). The loader
    /// resizes that table to [`VisionConfig::grid_size`] (spec 1.1).
    #[config(default = 24)]
    pub pretrained_grid: usize,
    /// MLP activation (erf GELU for MVFA, see [`Activation`]).
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// Epsilon of every LayerNorm (ln_pre, ln_1, ln_2, ln_post).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per side at [`VisionConfig::image_size`] (floor division, 240 / 14 = 17).
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: CLS + grid² (290 at 240 px).
    pub fn num_tokens(&self) -> usize {
        1 + self.grid_size() * self.grid_size()
    }

    /// Rows of the checkpoint's position table: CLS + pretrained_grid² (577 for ViT-L/14-336).
    pub fn pretrained_positions(&self) -> usize {
        1 + self.pretrained_grid * self.pretrained_grid
    }

    /// Checks the numbers fit together (heads divide the width, the image holds a patch...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_common(
            "vision",
            self.width,
            self.heads,
            self.layers,
            self.mlp_width,
        )?;
        if self.patch_size == 0 || self.grid_size() == 0 {
            return Err(ConfigError::NoPatch {
                image_size: self.image_size,
                patch_size: self.patch_size,
            });
        }
        if self.pretrained_grid == 0 || self.embed_dim == 0 {
            return Err(ConfigError::VisionSizes);
        }
        Ok(())
    }

    /// The shared block configuration of this tower.
    pub fn block(&self) -> BlockConfig {
        BlockConfig::new(self.width, self.heads, self.mlp_width)
            .with_activation(self.activation)
            .with_layer_norm_eps(self.layer_norm_eps)
    }

    /// Builds the tower with random weights (lazy: nothing is allocated until a parameter is
    /// used or replaced by the loader). The position table has the input grid's size.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisionTransformer<B> {
        VisionTransformer::new(self, device)
    }
}

/// Text tower configuration. Defaults: the ViT-L/14 text transformer.
#[derive(Config, Debug, PartialEq)]
pub struct TextConfig {
    /// Token positions (the tokenizer pads to this).
    #[config(default = 77)]
    pub context_length: usize,
    /// Rows of the token table (CLIP BPE: 49408; start 49406, end 49407).
    #[config(default = 49408)]
    pub vocab_size: usize,
    /// Residual stream width.
    #[config(default = 768)]
    pub width: usize,
    /// Attention heads.
    #[config(default = 12)]
    pub heads: usize,
    /// Number of transformer blocks.
    #[config(default = 12)]
    pub layers: usize,
    /// Hidden width of the block MLPs.
    #[config(default = 3072)]
    pub mlp_width: usize,
    /// Output embedding (joint space) width of `text_projection`.
    #[config(default = 768)]
    pub embed_dim: usize,
    /// MLP activation (erf GELU for MVFA, see [`Activation`]).
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// Epsilon of every LayerNorm (ln_1, ln_2, ln_final).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl TextConfig {
    /// Checks the numbers fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_common("text", self.width, self.heads, self.layers, self.mlp_width)?;
        if self.context_length == 0 || self.vocab_size == 0 || self.embed_dim == 0 {
            return Err(ConfigError::TextSizes);
        }
        Ok(())
    }

    /// The shared block configuration of this tower.
    pub fn block(&self) -> BlockConfig {
        BlockConfig::new(self.width, self.heads, self.mlp_width)
            .with_activation(self.activation)
            .with_layer_norm_eps(self.layer_norm_eps)
    }

    /// Builds the tower with random weights (lazy, see [`VisionConfig::init`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> TextTransformer<B> {
        TextTransformer::new(self, device)
    }
}

/// Why a tower configuration does not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A size of the shared block layout is zero.
    #[error(
        "{tower}: width {width}, heads {heads}, layers {layers} and mlp width {mlp} must all be positive"
    )]
    NonPositive {
        /// `vision` or `text`.
        tower: &'static str,
        /// Residual width.
        width: usize,
        /// Attention heads.
        heads: usize,
        /// Blocks.
        layers: usize,
        /// MLP width.
        mlp: usize,
    },
    /// The heads do not divide the width.
    #[error("{tower}: width {width} is not a multiple of {heads} heads")]
    HeadsSplit {
        /// `vision` or `text`.
        tower: &'static str,
        /// Residual width.
        width: usize,
        /// Attention heads.
        heads: usize,
    },
    /// The input image holds no patch.
    #[error("vision: image_size {image_size} holds no {patch_size}-pixel patch")]
    NoPatch {
        /// Input side in pixels.
        image_size: usize,
        /// Patch side in pixels.
        patch_size: usize,
    },
    /// The vision tower's position grid or embedding is empty.
    #[error("vision: pretrained_grid and embed_dim must be positive")]
    VisionSizes,
    /// The text tower's context, vocabulary or embedding is empty.
    #[error("text: context_length, vocab_size and embed_dim must be positive")]
    TextSizes,
    /// The towers project into joint spaces of different widths.
    #[error("vision embed_dim {vision} differs from text embed_dim {text}")]
    EmbedMismatch {
        /// Vision embedding width.
        vision: usize,
        /// Text embedding width.
        text: usize,
    },
}

fn check_common(
    tower: &'static str,
    width: usize,
    heads: usize,
    layers: usize,
    mlp: usize,
) -> Result<(), ConfigError> {
    if width == 0 || heads == 0 || layers == 0 || mlp == 0 {
        return Err(ConfigError::NonPositive {
            tower,
            width,
            heads,
            layers,
            mlp,
        });
    }
    if !width.is_multiple_of(heads) {
        return Err(ConfigError::HeadsSplit {
            tower,
            width,
            heads,
        });
    }
    Ok(())
}

/// Both towers. Defaults: CLIP ViT-L/14-336 as MVFA uses it.
#[derive(Config, Debug, PartialEq)]
pub struct ClipConfig {
    /// Vision tower.
    #[config(default = "VisionConfig::new()")]
    pub vision: VisionConfig,
    /// Text tower.
    #[config(default = "TextConfig::new()")]
    pub text: TextConfig,
}

impl ClipConfig {
    /// Checks both towers (see [`VisionConfig::validate`]) and that they share the joint width.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.vision.validate()?;
        self.text.validate()?;
        if self.vision.embed_dim != self.text.embed_dim {
            return Err(ConfigError::EmbedMismatch {
                vision: self.vision.embed_dim,
                text: self.text.embed_dim,
            });
        }
        Ok(())
    }

    /// Builds both towers with random (lazy) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipModel<B> {
        ClipModel {
            vision: self.vision.init(device),
            text: self.text.init(device),
        }
    }
}

/// Both CLIP towers. The joint-space logit scale is not kept: MVFA never uses it.
#[derive(burn::module::Module, Debug)]
pub struct ClipModel<B: Backend> {
    /// Image encoder.
    pub vision: VisionTransformer<B>,
    /// Text encoder.
    pub text: TextTransformer<B>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_vit_l_14_336_at_240() {
        let c = ClipConfig::new();
        assert_eq!(c.vision.grid_size(), 17);
        assert_eq!(c.vision.num_tokens(), 290);
        assert_eq!(c.vision.pretrained_positions(), 577);
        assert_eq!(c.vision.width / c.vision.heads, 64);
        assert_eq!(c.vision.activation, Activation::Gelu);
        assert_eq!(c.text.activation, Activation::Gelu);
        assert_eq!(c.text.width / c.text.heads, 64);
        c.validate().unwrap();
    }

    #[test]
    fn validate_names_the_problem() {
        let c = VisionConfig::new().with_heads(7);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not a multiple of 7 heads")
        );
        let c = VisionConfig::new().with_image_size(10);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("holds no 14-pixel patch")
        );
    }
}
