//! THE key-remap table: every parameter of [`VisionTransformer`] and [`TextTransformer`], with
//! where it lives in a Hugging Face `CLIPModel` file and in an open_clip / OpenAI file, its
//! stored shape, and how the stored tensor becomes ours.
//!
//! Conventions of the two layouts:
//! - Hugging Face: `vision_model.*` / `text_model.*`, separate `q_proj`/`k_proj`/`v_proj`,
//!   `nn.Linear` weights stored `[out, in]`, `visual_projection` and `text_projection` as
//!   bias-free Linear layers (`[embed, width]`).
//! - open_clip (and OpenAI's state dict): `visual.*` plus top-level text keys, fused
//!   `in_proj_weight` (`[3w, w]`, q;k;v stacked) and `in_proj_bias`, `c_fc`/`c_proj`, and
//!   plain matrices `visual.proj` / `text_projection` stored `[width, embed]`.
//!
//! Ours (burn): Linear weights `[in, out]`, a fused `qkv` Linear, the patch conv as a
//! `[3 p², width]` matrix, and the vision position table already resized to the input grid.
//!
//! [`VisionTransformer`]: crate::model::clip::vision::VisionTransformer
//! [`TextTransformer`]: crate::model::clip::text::TextTransformer

/// Which tower a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tower {
    /// The image encoder.
    Vision,
    /// The text encoder.
    Text,
}

/// A stored dimension, resolved against the tower's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// Residual width of the tower.
    Width,
    /// Three times the width (fused q;k;v).
    Width3,
    /// MLP hidden width.
    Mlp,
    /// Joint embedding width.
    Embed,
    /// Token table rows (49408).
    Vocab,
    /// Text positions (77).
    Context,
    /// Checkpoint position rows: 1 + pretrained_grid² (577).
    Positions,
    /// Image channels (3).
    Channels,
    /// Patch side (14).
    Patch,
}

/// How the stored tensor(s) become our parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Used as stored.
    Copy,
    /// A `[out, in]` Linear weight becomes `[in, out]`.
    Transpose,
    /// Hugging Face q, k, v weights `[w, w]` (listed in that order) are stacked to `[3w, w]`
    /// and transposed to our fused `[w, 3w]`.
    StackTranspose,
    /// Hugging Face q, k, v biases `[w]` stacked to `[3w]`.
    Stack,
    /// The patch conv kernel `[w, 3, p, p]` flattened to `[w, 3 p²]` and transposed to
    /// `[3 p², w]`.
    PatchConv,
    /// The pretrained position table `[1 + g0², w]` resized to the input grid `[1 + g², w]`
    /// with PyTorch's antialiased bicubic (spec 1.1).
    ResizePositions,
}

impl Transform {
    /// Short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Transform::Copy => "copy",
            Transform::Transpose => "transpose",
            Transform::StackTranspose => "stack q;k;v + transpose",
            Transform::Stack => "stack q;k;v",
            Transform::PatchConv => "conv kernel -> patch matrix",
            Transform::ResizePositions => "resize position grid (antialiased bicubic)",
        }
    }
}

/// Where one of our parameters comes from in one file layout.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Stored key(s); `{n}` is the 0-based block index. Several keys are combined by the
    /// transform (q, k, v).
    pub keys: &'static [&'static str],
    /// Shape of each stored key.
    pub shape: &'static [Dim],
    /// Conversion to our layout.
    pub transform: Transform,
}

/// One row of the remap table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Tower of the parameter.
    pub tower: Tower,
    /// Our parameter path inside the tower module (burn field names; `{n}` = block index).
    pub ours: &'static str,
    /// Hugging Face `CLIPModel` source.
    pub hf: Source,
    /// open_clip / OpenAI source.
    pub open_clip: Source,
}

use Dim::*;
use Tower::{Text, Vision};
use Transform::*;

const fn src(keys: &'static [&'static str], shape: &'static [Dim], transform: Transform) -> Source {
    Source {
        keys,
        shape,
        transform,
    }
}

/// The remap table (blocks use `{n}`; LayerNorm weight/bias are burn's gamma/beta).
pub const CLIP_REMAP: &[Rule] = &[
    // ---- vision embeddings -----------------------------------------------------------------
    Rule {
        tower: Vision,
        ours: "patch_embed",
        hf: src(
            &["vision_model.embeddings.patch_embedding.weight"],
            &[Width, Channels, Patch, Patch],
            PatchConv,
        ),
        open_clip: src(
            &["visual.conv1.weight"],
            &[Width, Channels, Patch, Patch],
            PatchConv,
        ),
    },
    Rule {
        tower: Vision,
        ours: "class_embedding",
        hf: src(&["vision_model.embeddings.class_embedding"], &[Width], Copy),
        open_clip: src(&["visual.class_embedding"], &[Width], Copy),
    },
    Rule {
        tower: Vision,
        ours: "position_embedding",
        hf: src(
            &["vision_model.embeddings.position_embedding.weight"],
            &[Positions, Width],
            ResizePositions,
        ),
        open_clip: src(
            &["visual.positional_embedding"],
            &[Positions, Width],
            ResizePositions,
        ),
    },
    Rule {
        tower: Vision,
        ours: "ln_pre.gamma",
        hf: src(&["vision_model.pre_layrnorm.weight"], &[Width], Copy),
        open_clip: src(&["visual.ln_pre.weight"], &[Width], Copy),
    },
    Rule {
        tower: Vision,
        ours: "ln_pre.beta",
        hf: src(&["vision_model.pre_layrnorm.bias"], &[Width], Copy),
        open_clip: src(&["visual.ln_pre.bias"], &[Width], Copy),
    },
    // ---- vision blocks ---------------------------------------------------------------------
    Rule {
        tower: Vision,
        ours: "blocks.{n}.ln_1.gamma",
        hf: src(
            &["vision_model.encoder.layers.{n}.layer_norm1.weight"],
            &[Width],
            Copy,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.ln_1.weight"],
            &[Width],
            Copy,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.ln_1.beta",
        hf: src(
            &["vision_model.encoder.layers.{n}.layer_norm1.bias"],
            &[Width],
            Copy,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.ln_1.bias"],
            &[Width],
            Copy,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.attn.qkv.weight",
        hf: src(
            &[
                "vision_model.encoder.layers.{n}.self_attn.q_proj.weight",
                "vision_model.encoder.layers.{n}.self_attn.k_proj.weight",
                "vision_model.encoder.layers.{n}.self_attn.v_proj.weight",
            ],
            &[Width, Width],
            StackTranspose,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.attn.in_proj_weight"],
            &[Width3, Width],
            Transpose,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.attn.qkv.bias",
        hf: src(
            &[
                "vision_model.encoder.layers.{n}.self_attn.q_proj.bias",
                "vision_model.encoder.layers.{n}.self_attn.k_proj.bias",
                "vision_model.encoder.layers.{n}.self_attn.v_proj.bias",
            ],
            &[Width],
            Stack,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.attn.in_proj_bias"],
            &[Width3],
            Copy,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.attn.out_proj.weight",
        hf: src(
            &["vision_model.encoder.layers.{n}.self_attn.out_proj.weight"],
            &[Width, Width],
            Transpose,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.attn.out_proj.weight"],
            &[Width, Width],
            Transpose,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.attn.out_proj.bias",
        hf: src(
            &["vision_model.encoder.layers.{n}.self_attn.out_proj.bias"],
            &[Width],
            Copy,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.attn.out_proj.bias"],
            &[Width],
            Copy,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.ln_2.gamma",
        hf: src(
            &["vision_model.encoder.layers.{n}.layer_norm2.weight"],
            &[Width],
            Copy,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.ln_2.weight"],
            &[Width],
            Copy,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.ln_2.beta",
        hf: src(
            &["vision_model.encoder.layers.{n}.layer_norm2.bias"],
            &[Width],
            Copy,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.ln_2.bias"],
            &[Width],
            Copy,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.mlp.c_fc.weight",
        hf: src(
            &["vision_model.encoder.layers.{n}.mlp.fc1.weight"],
            &[Mlp, Width],
            Transpose,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.mlp.c_fc.weight"],
            &[Mlp, Width],
            Transpose,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.mlp.c_fc.bias",
        hf: src(
            &["vision_model.encoder.layers.{n}.mlp.fc1.bias"],
            &[Mlp],
            Copy,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.mlp.c_fc.bias"],
            &[Mlp],
            Copy,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.mlp.c_proj.weight",
        hf: src(
            &["vision_model.encoder.layers.{n}.mlp.fc2.weight"],
            &[Width, Mlp],
            Transpose,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.mlp.c_proj.weight"],
            &[Width, Mlp],
            Transpose,
        ),
    },
    Rule {
        tower: Vision,
        ours: "blocks.{n}.mlp.c_proj.bias",
        hf: src(
            &["vision_model.encoder.layers.{n}.mlp.fc2.bias"],
            &[Width],
            Copy,
        ),
        open_clip: src(
            &["visual.transformer.resblocks.{n}.mlp.c_proj.bias"],
            &[Width],
            Copy,
        ),
    },
    // ---- vision head -----------------------------------------------------------------------
    Rule {
        tower: Vision,
        ours: "ln_post.gamma",
        hf: src(&["vision_model.post_layernorm.weight"], &[Width], Copy),
        open_clip: src(&["visual.ln_post.weight"], &[Width], Copy),
    },
    Rule {
        tower: Vision,
        ours: "ln_post.beta",
        hf: src(&["vision_model.post_layernorm.bias"], &[Width], Copy),
        open_clip: src(&["visual.ln_post.bias"], &[Width], Copy),
    },
    Rule {
        tower: Vision,
        ours: "proj",
        hf: src(&["visual_projection.weight"], &[Embed, Width], Transpose),
        open_clip: src(&["visual.proj"], &[Width, Embed], Copy),
    },
    // ---- text embeddings -------------------------------------------------------------------
    Rule {
        tower: Text,
        ours: "token_embedding.weight",
        hf: src(
            &["text_model.embeddings.token_embedding.weight"],
            &[Vocab, Width],
            Copy,
        ),
        open_clip: src(&["token_embedding.weight"], &[Vocab, Width], Copy),
    },
    Rule {
        tower: Text,
        ours: "positional_embedding",
        hf: src(
            &["text_model.embeddings.position_embedding.weight"],
            &[Context, Width],
            Copy,
        ),
        open_clip: src(&["positional_embedding"], &[Context, Width], Copy),
    },
    // ---- text blocks -----------------------------------------------------------------------
    Rule {
        tower: Text,
        ours: "blocks.{n}.ln_1.gamma",
        hf: src(
            &["text_model.encoder.layers.{n}.layer_norm1.weight"],
            &[Width],
            Copy,
        ),
        open_clip: src(&["transformer.resblocks.{n}.ln_1.weight"], &[Width], Copy),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.ln_1.beta",
        hf: src(
            &["text_model.encoder.layers.{n}.layer_norm1.bias"],
            &[Width],
            Copy,
        ),
        open_clip: src(&["transformer.resblocks.{n}.ln_1.bias"], &[Width], Copy),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.attn.qkv.weight",
        hf: src(
            &[
                "text_model.encoder.layers.{n}.self_attn.q_proj.weight",
                "text_model.encoder.layers.{n}.self_attn.k_proj.weight",
                "text_model.encoder.layers.{n}.self_attn.v_proj.weight",
            ],
            &[Width, Width],
            StackTranspose,
        ),
        open_clip: src(
            &["transformer.resblocks.{n}.attn.in_proj_weight"],
            &[Width3, Width],
            Transpose,
        ),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.attn.qkv.bias",
        hf: src(
            &[
                "text_model.encoder.layers.{n}.self_attn.q_proj.bias",
                "text_model.encoder.layers.{n}.self_attn.k_proj.bias",
                "text_model.encoder.layers.{n}.self_attn.v_proj.bias",
            ],
            &[Width],
            Stack,
        ),
        open_clip: src(
            &["transformer.resblocks.{n}.attn.in_proj_bias"],
            &[Width3],
            Copy,
        ),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.attn.out_proj.weight",
        hf: src(
            &["text_model.encoder.layers.{n}.self_attn.out_proj.weight"],
            &[Width, Width],
            Transpose,
        ),
        open_clip: src(
            &["transformer.resblocks.{n}.attn.out_proj.weight"],
            &[Width, Width],
            Transpose,
        ),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.attn.out_proj.bias",
        hf: src(
            &["text_model.encoder.layers.{n}.self_attn.out_proj.bias"],
            &[Width],
            Copy,
        ),
        open_clip: src(
            &["transformer.resblocks.{n}.attn.out_proj.bias"],
            &[Width],
            Copy,
        ),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.ln_2.gamma",
        hf: src(
            &["text_model.encoder.layers.{n}.layer_norm2.weight"],
            &[Width],
            Copy,
        ),
        open_clip: src(&["transformer.resblocks.{n}.ln_2.weight"], &[Width], Copy),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.ln_2.beta",
        hf: src(
            &["text_model.encoder.layers.{n}.layer_norm2.bias"],
            &[Width],
            Copy,
        ),
        open_clip: src(&["transformer.resblocks.{n}.ln_2.bias"], &[Width], Copy),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.mlp.c_fc.weight",
        hf: src(
            &["text_model.encoder.layers.{n}.mlp.fc1.weight"],
            &[Mlp, Width],
            Transpose,
        ),
        open_clip: src(
            &["transformer.resblocks.{n}.mlp.c_fc.weight"],
            &[Mlp, Width],
            Transpose,
        ),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.mlp.c_fc.bias",
        hf: src(
            &["text_model.encoder.layers.{n}.mlp.fc1.bias"],
            &[Mlp],
            Copy,
        ),
        open_clip: src(&["transformer.resblocks.{n}.mlp.c_fc.bias"], &[Mlp], Copy),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.mlp.c_proj.weight",
        hf: src(
            &["text_model.encoder.layers.{n}.mlp.fc2.weight"],
            &[Width, Mlp],
            Transpose,
        ),
        open_clip: src(
            &["transformer.resblocks.{n}.mlp.c_proj.weight"],
            &[Width, Mlp],
            Transpose,
        ),
    },
    Rule {
        tower: Text,
        ours: "blocks.{n}.mlp.c_proj.bias",
        hf: src(
            &["text_model.encoder.layers.{n}.mlp.fc2.bias"],
            &[Width],
            Copy,
        ),
        open_clip: src(
            &["transformer.resblocks.{n}.mlp.c_proj.bias"],
            &[Width],
            Copy,
        ),
    },
    // ---- text head -------------------------------------------------------------------------
    Rule {
        tower: Text,
        ours: "ln_final.gamma",
        hf: src(&["text_model.final_layer_norm.weight"], &[Width], Copy),
        open_clip: src(&["ln_final.weight"], &[Width], Copy),
    },
    Rule {
        tower: Text,
        ours: "ln_final.beta",
        hf: src(&["text_model.final_layer_norm.bias"], &[Width], Copy),
        open_clip: src(&["ln_final.bias"], &[Width], Copy),
    },
    Rule {
        tower: Text,
        ours: "text_projection",
        hf: src(&["text_projection.weight"], &[Embed, Width], Transpose),
        open_clip: src(&["text_projection"], &[Width, Embed], Copy),
    },
];

/// Stored keys that are not parameters of either tower and are deliberately not loaded:
/// the contrastive logit scale/bias (MVFA never uses them), Hugging Face's `position_ids`
/// buffers, and the integer metadata entries of OpenAI's TorchScript state dict.
pub fn is_ignored_key(key: &str) -> bool {
    matches!(
        key,
        "logit_scale" | "logit_bias" | "input_resolution" | "context_length" | "vocab_size"
    ) || key.ends_with(".position_ids")
}

/// The tower a stored key belongs to by its prefix, for either layout (`None`: neither).
pub fn tower_of_key(key: &str) -> Option<Tower> {
    const VISION: [&str; 3] = ["vision_model.", "visual_projection.", "visual."];
    const TEXT: [&str; 7] = [
        "text_model.",
        "text_projection",
        "token_embedding.",
        "positional_embedding",
        "transformer.",
        "ln_final.",
        "attn_mask",
    ];
    if VISION.iter().any(|p| key.starts_with(p)) {
        Some(Tower::Vision)
    } else if TEXT.iter().any(|p| key.starts_with(p)) {
        Some(Tower::Text)
    } else {
        None
    }
}

/// Replaces `{n}` by the block index.
pub fn expand(template: &str, block: usize) -> String {
    template.replace("{n}", &block.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_is_consistent() {
        let mut ours = HashSet::new();
        let mut hf = HashSet::new();
        let mut oc = HashSet::new();
        for r in CLIP_REMAP {
            assert!(ours.insert((r.tower, r.ours)), "duplicate {}", r.ours);
            for k in r.hf.keys {
                assert!(hf.insert(*k), "duplicate HF key {k}");
                assert_eq!(tower_of_key(k), Some(r.tower), "{k}");
            }
            for k in r.open_clip.keys {
                assert!(oc.insert(*k), "duplicate open_clip key {k}");
                assert_eq!(tower_of_key(k), Some(r.tower), "{k}");
            }
            let blocky = r.ours.contains("{n}");
            assert!(
                r.hf.keys
                    .iter()
                    .chain(r.open_clip.keys)
                    .all(|k| k.contains("{n}") == blocky)
            );
            let multi = matches!(r.hf.transform, Transform::Stack | Transform::StackTranspose);
            assert_eq!(r.hf.keys.len(), if multi { 3 } else { 1 }, "{}", r.ours);
            assert_eq!(r.open_clip.keys.len(), 1);
        }
        assert!(is_ignored_key("logit_scale"));
        assert!(is_ignored_key("text_model.embeddings.position_ids"));
        assert!(!is_ignored_key("visual.proj"));
        assert_eq!(tower_of_key("logit_scale"), None);
    }
}
