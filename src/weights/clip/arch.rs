//! Architecture discovery: a Hugging Face `config.json` (CLIPConfig), an open_clip model
//! config JSON, or the ViT-L/14-336 defaults. Whatever is used is checked against the tensor
//! shapes by the loader.
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::clip::config::{Activation, ClipConfig, TextConfig, VisionConfig};

/// Which file format described the architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A Hugging Face `CLIPConfig` JSON (`vision_config` / `text_config`).
    HuggingFace(PathBuf),
    /// An open_clip model config (`embed_dim`, `vision_cfg`, `text_cfg`), possibly wrapped in
    /// `model_cfg` as in `open_clip_config.json`.
    OpenClip(PathBuf),
    /// No config file: the ViT-L/14-336 defaults.
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::HuggingFace(p) => write!(f, "Hugging Face config {}", p.display()),
            ConfigSource::OpenClip(p) => write!(f, "open_clip config {}", p.display()),
            ConfigSource::Defaults => write!(f, "ViT-L/14-336 defaults (no config file found)"),
        }
    }
}

/// The architecture a config file describes, before load options are applied.
#[derive(Debug, Clone)]
pub struct FileArch {
    /// Towers as described; `vision.image_size` is the pretrained size here and
    /// `pretrained_grid` follows from it.
    pub config: ClipConfig,
    /// The activation the file asks for (`hidden_act` / `quick_gelu`), verbatim.
    pub activation: Option<String>,
    /// Where it came from.
    pub source: ConfigSource,
}

/// Why a config file cannot describe the towers.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// A key that should hold a size holds something else.
    #[error("{ctx}.{key} = {value} is not a positive integer (or square pair)")]
    NotInteger {
        /// The section (`config`, `vision_config`, `text_cfg`...).
        ctx: &'static str,
        /// The key.
        key: &'static str,
        /// What it holds.
        value: Value,
    },
    /// A key that should hold a number holds something else.
    #[error("{ctx}.{key} = {value} is not a number")]
    NotNumber {
        /// The section.
        ctx: &'static str,
        /// The key.
        key: &'static str,
        /// What it holds.
        value: Value,
    },
    /// A vision tower that does not take RGB images.
    #[error("vision_config.num_channels = {0}; only RGB (3) is supported")]
    Channels(usize),
    /// A Hugging Face config with zero-pixel patches.
    #[error("vision_config.patch_size is 0")]
    ZeroPatch,
    /// An open_clip config without its joint embedding width.
    #[error("open_clip config has no integer embed_dim")]
    NoEmbedDim,
    /// An open_clip option this port does not implement.
    #[error("open_clip {section}.{key} = {value} is not supported by this CLIP port")]
    Unsupported {
        /// `vision_cfg` or `text_cfg`.
        section: &'static str,
        /// The option.
        key: &'static str,
        /// Its value.
        value: Value,
    },
    /// A vision pooling other than the class token.
    #[error("open_clip vision_cfg.pool_type = {0:?} is not supported (only \"tok\")")]
    VisionPool(String),
    /// A text pooling other than the end token.
    #[error("open_clip text_cfg.pool_type = {0:?} is not supported (only \"argmax\")")]
    TextPool(String),
    /// A ResNet vision tower.
    #[error("open_clip vision_cfg.layers is not an integer (ResNet towers are not supported)")]
    ResNet,
    /// Zero head width or patch size in an open_clip config.
    #[error("open_clip vision_cfg.head_width and patch_size must be positive")]
    HeadWidthPatch,
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// The file is not JSON.
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    /// JSON in neither format.
    #[error(
        "neither a Hugging Face CLIPConfig (vision_config) nor an open_clip model config \
         (embed_dim, vision_cfg)"
    )]
    UnknownFormat,
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn usize_or(
    v: &Value,
    key: &'static str,
    default: usize,
    ctx: &'static str,
) -> Result<usize, ArchError> {
    match get(v, key) {
        None => Ok(default),
        Some(x) => {
            if let Some(n) = x.as_u64() {
                return Ok(n as usize);
            }
            // image_size may be [h, w]: only square inputs are supported.
            if let Some([a, b]) = x.as_array().map(|a| a.as_slice())
                && let (Some(a), Some(b)) = (a.as_u64(), b.as_u64())
                && a == b
            {
                return Ok(a as usize);
            }
            Err(ArchError::NotInteger {
                ctx,
                key,
                value: x.clone(),
            })
        }
    }
}

fn f64_or(v: &Value, key: &'static str, default: f64, ctx: &'static str) -> Result<f64, ArchError> {
    match get(v, key) {
        None => Ok(default),
        Some(x) => x.as_f64().ok_or_else(|| ArchError::NotNumber {
            ctx,
            key,
            value: x.clone(),
        }),
    }
}

/// Activation named in a config file (`None` when it names something else).
pub fn activation_from_name(name: &str) -> Option<Activation> {
    match name {
        "gelu" => Some(Activation::Gelu),
        "quick_gelu" => Some(Activation::QuickGelu),
        _ => None,
    }
}

/// Merges `a` with the keys of `b` (b wins), as `CLIPConfig` does with `*_config_dict`.
fn merged(a: Option<&Value>, b: Option<&Value>) -> Value {
    let mut out = a.cloned().unwrap_or(Value::Object(Default::default()));
    if let (Some(Value::Object(dst)), Some(Value::Object(src))) = (Some(&mut out), b) {
        for (k, v) in src {
            dst.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Parses a Hugging Face `CLIPConfig` JSON. Missing keys take transformers' own defaults
/// (`CLIPVisionConfig` / `CLIPTextConfig`), exactly as transformers would read the file.
pub fn parse_hf(root: &Value) -> Result<(ClipConfig, Option<String>), ArchError> {
    let vis = merged(get(root, "vision_config"), get(root, "vision_config_dict"));
    let txt = merged(get(root, "text_config"), get(root, "text_config_dict"));
    let top_proj = usize_or(root, "projection_dim", 512, "config")?;
    let width = usize_or(&vis, "hidden_size", 768, "vision_config")?;
    let patch = usize_or(&vis, "patch_size", 32, "vision_config")?;
    let image = usize_or(&vis, "image_size", 224, "vision_config")?;
    let channels = usize_or(&vis, "num_channels", 3, "vision_config")?;
    if channels != 3 {
        return Err(ArchError::Channels(channels));
    }
    if patch == 0 {
        return Err(ArchError::ZeroPatch);
    }
    let vision = VisionConfig::new()
        .with_width(width)
        .with_patch_size(patch)
        .with_pretrained_grid(image / patch)
        .with_layers(usize_or(&vis, "num_hidden_layers", 12, "vision_config")?)
        .with_heads(usize_or(&vis, "num_attention_heads", 12, "vision_config")?)
        .with_mlp_width(usize_or(&vis, "intermediate_size", 3072, "vision_config")?)
        .with_embed_dim(top_proj)
        .with_layer_norm_eps(f64_or(&vis, "layer_norm_eps", 1e-5, "vision_config")?);
    let text = TextConfig::new()
        .with_vocab_size(usize_or(&txt, "vocab_size", 49408, "text_config")?)
        .with_width(usize_or(&txt, "hidden_size", 512, "text_config")?)
        .with_mlp_width(usize_or(&txt, "intermediate_size", 2048, "text_config")?)
        .with_layers(usize_or(&txt, "num_hidden_layers", 12, "text_config")?)
        .with_heads(usize_or(&txt, "num_attention_heads", 8, "text_config")?)
        .with_context_length(usize_or(
            &txt,
            "max_position_embeddings",
            77,
            "text_config",
        )?)
        .with_embed_dim(top_proj)
        .with_layer_norm_eps(f64_or(&txt, "layer_norm_eps", 1e-5, "text_config")?);
    let act = |v: &Value| {
        get(v, "hidden_act")
            .and_then(|a| a.as_str())
            .unwrap_or("quick_gelu")
            .to_string()
    };
    let (va, ta) = (act(&vis), act(&txt));
    let activation = if va == ta {
        va
    } else {
        format!("{va} (vision), {ta} (text)")
    };
    Ok((
        ClipConfig::new().with_vision(vision).with_text(text),
        Some(activation),
    ))
}

/// Parses an open_clip model config (bare, or wrapped in `model_cfg`). Missing keys take
/// open_clip's `CLIPVisionCfg` / `CLIPTextCfg` defaults; configurations this port does not
/// implement (timm or Hugging Face towers, attentional pooling, no ln_pre, ...) are errors.
pub fn parse_open_clip(root: &Value) -> Result<(ClipConfig, Option<String>), ArchError> {
    let cfg = get(root, "model_cfg").unwrap_or(root);
    let embed = get(cfg, "embed_dim")
        .and_then(Value::as_u64)
        .ok_or(ArchError::NoEmbedDim)? as usize;
    let empty = Value::Object(Default::default());
    let vis = get(cfg, "vision_cfg").unwrap_or(&empty);
    let txt = get(cfg, "text_cfg").unwrap_or(&empty);
    check_open_clip_support(vis, txt)?;
    let vision = open_clip_vision(vis, embed)?;
    let text = open_clip_text(txt, embed)?;
    let quick = get(cfg, "quick_gelu")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let activation = if quick { "quick_gelu" } else { "gelu" };
    Ok((
        ClipConfig::new().with_vision(vision).with_text(text),
        Some(activation.to_string()),
    ))
}

/// Refuses the open_clip options this port does not implement (timm or Hugging Face
/// towers, attentional pooling, other pooling, ResNet towers...), so that such a file fails
/// with its option named instead of loading into the wrong architecture.
fn check_open_clip_support(vis: &Value, txt: &Value) -> Result<(), ArchError> {
    for (section, v, keys) in [
        (
            "vision_cfg",
            vis,
            &[
                "timm_model_name",
                "attentional_pool",
                "no_ln_pre",
                "ls_init_value",
                "final_ln_after_pool",
            ][..],
        ),
        (
            "text_cfg",
            txt,
            &[
                "hf_model_name",
                "ls_init_value",
                "no_causal_mask",
                "embed_cls",
            ][..],
        ),
    ] {
        for &key in keys {
            if let Some(x) = get(v, key)
                && x != &Value::Bool(false)
            {
                return Err(ArchError::Unsupported {
                    section,
                    key,
                    value: x.clone(),
                });
            }
        }
    }
    if let Some(p) = get(vis, "pool_type").and_then(Value::as_str)
        && p != "tok"
    {
        return Err(ArchError::VisionPool(p.to_string()));
    }
    if let Some(p) = get(txt, "pool_type").and_then(Value::as_str)
        && p != "argmax"
    {
        return Err(ArchError::TextPool(p.to_string()));
    }
    if get(vis, "layers").is_some_and(|l| !l.is_u64()) {
        return Err(ArchError::ResNet);
    }
    Ok(())
}

/// The vision tower of an open_clip `vision_cfg` (open_clip's `CLIPVisionCfg` defaults).
fn open_clip_vision(vis: &Value, embed: usize) -> Result<VisionConfig, ArchError> {
    let width = usize_or(vis, "width", 768, "vision_cfg")?;
    let head_width = usize_or(vis, "head_width", 64, "vision_cfg")?;
    let patch = usize_or(vis, "patch_size", 16, "vision_cfg")?;
    let image = usize_or(vis, "image_size", 224, "vision_cfg")?;
    if head_width == 0 || patch == 0 {
        return Err(ArchError::HeadWidthPatch);
    }
    let v_ratio = f64_or(vis, "mlp_ratio", 4.0, "vision_cfg")?;
    Ok(VisionConfig::new()
        .with_width(width)
        .with_heads(width / head_width)
        .with_mlp_width((width as f64 * v_ratio) as usize)
        .with_patch_size(patch)
        .with_pretrained_grid(image / patch)
        .with_layers(usize_or(vis, "layers", 12, "vision_cfg")?)
        .with_embed_dim(embed))
}

/// The text tower of an open_clip `text_cfg` (open_clip's `CLIPTextCfg` defaults).
fn open_clip_text(txt: &Value, embed: usize) -> Result<TextConfig, ArchError> {
    let t_width = usize_or(txt, "width", 512, "text_cfg")?;
    let t_ratio = f64_or(txt, "mlp_ratio", 4.0, "text_cfg")?;
    Ok(TextConfig::new()
        .with_context_length(usize_or(txt, "context_length", 77, "text_cfg")?)
        .with_vocab_size(usize_or(txt, "vocab_size", 49408, "text_cfg")?)
        .with_width(t_width)
        .with_heads(usize_or(txt, "heads", 8, "text_cfg")?)
        .with_layers(usize_or(txt, "layers", 12, "text_cfg")?)
        .with_mlp_width((t_width as f64 * t_ratio) as usize)
        .with_embed_dim(embed))
}

/// Reads a config file and parses it as whichever format its keys show.
pub fn read_config_file(path: &Path) -> Result<FileArch, ArchError> {
    let text = std::fs::read_to_string(path).map_err(ArchError::Read)?;
    let root: Value = serde_json::from_str(&text).map_err(ArchError::Json)?;
    let inner = get(&root, "model_cfg").unwrap_or(&root);
    if get(&root, "vision_config").is_some() || get(&root, "vision_config_dict").is_some() {
        let (config, activation) = parse_hf(&root)?;
        Ok(FileArch {
            config,
            activation,
            source: ConfigSource::HuggingFace(path.to_path_buf()),
        })
    } else if get(inner, "vision_cfg").is_some() || get(inner, "embed_dim").is_some() {
        let (config, activation) = parse_open_clip(&root)?;
        Ok(FileArch {
            config,
            activation,
            source: ConfigSource::OpenClip(path.to_path_buf()),
        })
    } else {
        Err(ArchError::UnknownFormat)
    }
}

/// Config files looked for beside a weights file, in order of preference.
pub const BESIDE: [&str; 2] = ["config.json", "open_clip_config.json"];

/// Finds the architecture for `weights`: the explicit file, else a config beside the weights
/// (`config.json`, `open_clip_config.json`; the one matching the layout first), else defaults.
/// Errors are `(config path, message)`.
pub fn discover(
    weights: &Path,
    explicit: Option<&Path>,
    prefer_open_clip: bool,
) -> Result<FileArch, (PathBuf, ArchError)> {
    if let Some(p) = explicit {
        return read_config_file(p).map_err(|e| (p.to_path_buf(), e));
    }
    let dir = weights.parent().unwrap_or(Path::new("."));
    let mut names = BESIDE.to_vec();
    if prefer_open_clip {
        names.reverse();
    }
    for name in names {
        let p = dir.join(name);
        if p.is_file() {
            return read_config_file(&p).map_err(|e| (p, e));
        }
    }
    Ok(FileArch {
        config: ClipConfig::new(),
        activation: None,
        source: ConfigSource::Defaults,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real openai/clip-vit-large-patch14-336 config, reduced to what matters.
    const HF_L14_336: &str = r#"{
      "architectures": ["CLIPModel"], "projection_dim": 768,
      "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                      "num_hidden_layers": 12, "projection_dim": 768, "hidden_act": "quick_gelu"},
      "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                        "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14,
                        "projection_dim": 768, "hidden_act": "quick_gelu"}
    }"#;

    /// open_clip's ViT-L-14-336.json.
    const OC_L14_336: &str = r#"{"embed_dim": 768,
      "vision_cfg": {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
      "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12, "layers": 12}}"#;

    #[test]
    fn both_formats_give_vit_l_14_336() {
        let want = ClipConfig::new();
        let (hf, act) = parse_hf(&serde_json::from_str(HF_L14_336).unwrap()).unwrap();
        assert_eq!(hf, want);
        assert_eq!(act.as_deref(), Some("quick_gelu"));
        let (oc, act) = parse_open_clip(&serde_json::from_str(OC_L14_336).unwrap()).unwrap();
        assert_eq!(oc, want);
        assert_eq!(act.as_deref(), Some("gelu"));
        let wrapped = format!(r#"{{"model_cfg": {OC_L14_336}, "preprocess_cfg": {{}}}}"#);
        let (oc2, _) = parse_open_clip(&serde_json::from_str(&wrapped).unwrap()).unwrap();
        assert_eq!(oc2, want);
    }

    #[test]
    fn unsupported_open_clip_features_are_errors() {
        let v = serde_json::json!({"embed_dim": 512, "vision_cfg": {"timm_model_name": "vit_x"}});
        let err = parse_open_clip(&v).unwrap_err().to_string();
        assert!(err.contains("timm_model_name"));
        let v = serde_json::json!({"embed_dim": 512, "vision_cfg": {"layers": [3, 4, 6, 3]}});
        let err = parse_open_clip(&v).unwrap_err().to_string();
        assert!(err.contains("ResNet"));
    }
}
