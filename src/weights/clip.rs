//! CLIP weights from safetensors, in the Hugging Face `CLIPModel` layout or the open_clip /
//! OpenAI layout, into [`ClipModel`] / [`VisionTransformer`].
//!
//! How a load goes:
//! 1. The file is memory-mapped and its header validated (not safetensors, truncated: errors).
//! 2. The layout is detected from the key names; the architecture comes from an explicit
//!    config, a `config.json` (Hugging Face) or `open_clip_config.json` beside the file, or
//!    the ViT-L/14-336 defaults ([`arch`]).
//! 3. A plan is made from THE remap table ([`remap::CLIP_REMAP`]): for every parameter, the
//!    stored key(s), their expected shapes and the conversion. Missing keys, unexpected keys,
//!    shape mismatches and unsupported dtypes are collected into a [`LoadReport`]; any of them
//!    is an error ([`WeightsError::Mismatch`]) before a single tensor is converted. There is no
//!    partial load.
//! 4. The module is built lazily (no random init is ever materialised) and each parameter is
//!    filled tensor by tensor: read (f16/bf16/f64 -> f32), converted, uploaded to the device,
//!    and its mapped pages released. Peak memory stays near the size of the f32 weights.
//!
//! The activation follows [`LoadOptions::activation`], erf GELU by default whatever the file
//! says (MVFA's quirk, spec 1.2); the report records what the file said.
pub mod arch;
pub(crate) mod file;
pub mod remap;
pub mod resample;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::model::clip::config::{Activation, ClipConfig, ClipModel};
use crate::model::clip::text::TextTransformer;
use crate::model::clip::vision::VisionTransformer;

pub use arch::ConfigSource;
use file::WeightFile;
pub use remap::{CLIP_REMAP, Dim, Rule, Source, Tower, Transform};

/// Why a weights file could not be loaded. Every message names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file (or a config) could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a safetensors file (wrong format, garbage header, trailing bytes).
    #[error("{} is not a safetensors file: {detail}", path.display())]
    NotSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A safetensors file cut short.
    #[error("{} is truncated: {detail}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Declared vs actual size.
        detail: String,
    },
    /// Neither Hugging Face nor open_clip key names.
    #[error(
        "{} holds no CLIP weights in a known layout (expected `vision_model.*` keys of a Hugging \
         Face CLIPModel or `visual.*` keys of open_clip/OpenAI); first keys: {sample}",
        path.display()
    )]
    UnknownLayout {
        /// The file.
        path: PathBuf,
        /// A few key names.
        sample: String,
    },
    /// A config file that cannot be used.
    #[error("config {}: {detail}", path.display())]
    Config {
        /// The config file (or the weights file when the problem is the combination).
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Keys missing or unexpected, or shapes that do not match the architecture.
    #[error("{} does not match the CLIP architecture from {}: {}", report.path.display(), report.config_source, report.problems())]
    Mismatch {
        /// The full report (what would have been applied and every problem).
        report: Box<LoadReport>,
    },
    /// A tensor stored in a type the loader does not convert.
    #[error("{}: tensor {key} is {dtype}; only F32, F16, BF16 and F64 are supported", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// A bug: the plan and the module disagree.
    #[error("internal loader error: {detail}")]
    Internal {
        /// What disagreed.
        detail: String,
    },
}

/// Key naming of a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face `CLIPModel` (`vision_model.encoder.layers.N...`, separate q/k/v).
    HuggingFace,
    /// open_clip / OpenAI (`visual.transformer.resblocks.N...`, fused `in_proj_weight`).
    OpenClip,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::HuggingFace => "Hugging Face CLIPModel",
            Layout::OpenClip => "open_clip / OpenAI",
        })
    }
}

/// How to choose the MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationChoice {
    /// Exact erf GELU whatever the file says: what MVFA's reference runs (spec 1.2). Default.
    #[default]
    Gelu,
    /// QuickGELU whatever the file says (OpenAI CLIP as trained).
    QuickGelu,
    /// What the config file says (`hidden_act`, open_clip `quick_gelu`); erf GELU without one.
    FromConfig,
}

/// Options of a load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Input image side; the position table is resized to `image_size / patch` (240 -> 17).
    pub image_size: usize,
    /// Architecture file to use instead of looking beside the weights.
    pub config: Option<PathBuf>,
    /// MLP activation (erf GELU by default, see [`ActivationChoice`]).
    pub activation: ActivationChoice,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            image_size: 240,
            config: None,
            activation: ActivationChoice::Gelu,
        }
    }
}

/// A stored tensor whose shape differs from what the architecture needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Stored key.
    pub key: String,
    /// Shape the architecture needs.
    pub expected: Vec<usize>,
    /// Shape in the file.
    pub found: Vec<usize>,
}

/// One parameter that is (or would be) filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Tower.
    pub tower: Tower,
    /// Our parameter path inside the tower.
    pub ours: String,
    /// Stored key(s).
    pub keys: Vec<String>,
    /// Stored dtype (of the first key).
    pub dtype: String,
    /// Conversion.
    pub transform: Transform,
}

/// What a load did or would do.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The weights file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// Detected key layout.
    pub layout: Layout,
    /// Where the architecture came from.
    pub config_source: ConfigSource,
    /// The architecture used (input size and activation applied).
    pub config: ClipConfig,
    /// The activation the config file asked for, verbatim (None: no config file).
    pub file_activation: Option<String>,
    /// Towers requested.
    pub towers: Vec<Tower>,
    /// Parameters filled (on success) or planned.
    pub applied: Vec<Applied>,
    /// Stored keys the architecture needs but the file lacks.
    pub missing: Vec<String>,
    /// Stored keys the architecture does not know.
    pub unexpected: Vec<String>,
    /// Stored keys with the wrong shape.
    pub mismatched: Vec<ShapeMismatch>,
    /// Known non-parameters left out on purpose (logit_scale, position_ids, ...).
    pub ignored: Vec<String>,
    /// Keys of a tower that was not requested (the text tower of a vision-only load).
    pub skipped: Vec<String>,
    /// Tensors stored in a dtype that cannot be converted.
    pub bad_dtypes: Vec<(String, String)>,
}

fn list(items: &[String], max: usize) -> String {
    let mut s = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        s.push_str(&format!(", ... and {} more", items.len() - max));
    }
    s
}

impl LoadReport {
    /// True when nothing is missing, unexpected, mismatched or unconvertible.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mismatched.is_empty()
            && self.bad_dtypes.is_empty()
    }

    /// One line listing every problem (empty when complete).
    pub fn problems(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing key(s): {}",
                self.missing.len(),
                list(&self.missing, 8)
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected key(s): {}",
                self.unexpected.len(),
                list(&self.unexpected, 8)
            ));
        }
        if !self.mismatched.is_empty() {
            let m: Vec<String> = self
                .mismatched
                .iter()
                .map(|m| format!("{} is {:?}, expected {:?}", m.key, m.found, m.expected))
                .collect();
            parts.push(format!("{} shape mismatch(es): {}", m.len(), list(&m, 8)));
        }
        if !self.bad_dtypes.is_empty() {
            let d: Vec<String> = self
                .bad_dtypes
                .iter()
                .map(|(k, t)| format!("{k} ({t})"))
                .collect();
            parts.push(format!(
                "{} tensor(s) of unsupported dtype: {}",
                d.len(),
                list(&d, 8)
            ));
        }
        let mut s = parts.join("; ");
        if !s.is_empty() && self.config_source == ConfigSource::Defaults {
            s.push_str(
                "; no config.json / open_clip_config.json was found beside the file, so the \
                 ViT-L/14-336 defaults were assumed: pass the model's config explicitly",
            );
        }
        s
    }

    /// The requested towers, e.g. `vision + text`.
    pub fn tower_names(&self) -> String {
        self.towers
            .iter()
            .map(|t| match t {
                Tower::Vision => "vision",
                Tower::Text => "text",
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_architecture(f)?;
        self.write_parameters(f)?;
        self.write_problems(f)
    }
}

impl LoadReport {
    /// The report's first lines: the file, its layout and the architecture used.
    fn write_architecture(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.config.vision;
        let t = &self.config.text;
        writeln!(
            f,
            "file:        {} ({:.1} MB)",
            self.path.display(),
            self.file_bytes as f64 / 1e6
        )?;
        writeln!(f, "layout:      {}", self.layout)?;
        writeln!(f, "config:      {}", self.config_source)?;
        writeln!(
            f,
            "vision:      width {} layers {} heads {} mlp {} patch {} embed {}; position grid {}x{} -> {}x{} ({} px input, {} tokens)",
            v.width,
            v.layers,
            v.heads,
            v.mlp_width,
            v.patch_size,
            v.embed_dim,
            v.pretrained_grid,
            v.pretrained_grid,
            v.grid_size(),
            v.grid_size(),
            v.image_size,
            v.num_tokens()
        )?;
        if self.towers.contains(&Tower::Text) {
            writeln!(
                f,
                "text:        width {} layers {} heads {} mlp {} context {} vocab {} embed {}",
                t.width,
                t.layers,
                t.heads,
                t.mlp_width,
                t.context_length,
                t.vocab_size,
                t.embed_dim
            )?;
        }
        writeln!(
            f,
            "activation:  {} (file says: {})",
            v.activation.name(),
            self.file_activation.as_deref().unwrap_or("nothing")
        )?;
        writeln!(f, "towers:      {}", self.tower_names())
    }

    /// What was (or would be) filled: parameters per conversion, dtypes, keys left aside.
    fn write_parameters(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut by_transform: Vec<(Transform, usize)> = Vec::new();
        for a in &self.applied {
            match by_transform.iter_mut().find(|(t, _)| *t == a.transform) {
                Some((_, n)) => *n += 1,
                None => by_transform.push((a.transform, 1)),
            }
        }
        let summary: Vec<String> = by_transform
            .iter()
            .map(|(t, n)| format!("{n} {}", t.describe()))
            .collect();
        writeln!(
            f,
            "applied:     {} parameters ({})",
            self.applied.len(),
            summary.join(", ")
        )?;
        let mut dtypes: Vec<&str> = self.applied.iter().map(|a| a.dtype.as_str()).collect();
        dtypes.sort();
        dtypes.dedup();
        writeln!(f, "dtypes:      {} (converted to f32)", dtypes.join(", "))?;
        writeln!(
            f,
            "ignored:     {}",
            if self.ignored.is_empty() {
                "none".into()
            } else {
                list(&self.ignored, 8)
            }
        )?;
        writeln!(
            f,
            "skipped:     {}",
            if self.skipped.is_empty() {
                "none".into()
            } else {
                format!("{} keys of the unrequested tower", self.skipped.len())
            }
        )
    }

    /// The problems: missing, unexpected, mismatched and unconvertible keys (the last line
    /// has no newline).
    fn write_problems(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "missing:     {}",
            if self.missing.is_empty() {
                "none".into()
            } else {
                list(&self.missing, 20)
            }
        )?;
        writeln!(
            f,
            "unexpected:  {}",
            if self.unexpected.is_empty() {
                "none".into()
            } else {
                list(&self.unexpected, 20)
            }
        )?;
        if self.mismatched.is_empty() {
            write!(f, "mismatched:  none")?;
        } else {
            write!(f, "mismatched:")?;
            for m in &self.mismatched {
                write!(
                    f,
                    "\n  {} is {:?}, expected {:?}",
                    m.key, m.found, m.expected
                )?;
            }
        }
        if !self.bad_dtypes.is_empty() {
            write!(f, "\nbad dtypes:  {:?}", self.bad_dtypes)?;
        }
        Ok(())
    }
}

/// One planned parameter.
#[derive(Debug, Clone)]
struct Planned {
    keys: Vec<String>,
    transform: Transform,
}

/// A validated plan: the report and, per tower, our path -> sources.
struct Plan {
    file: WeightFile,
    report: LoadReport,
    params: HashMap<(Tower, String), Planned>,
}

fn detect_layout(file: &WeightFile) -> Result<Layout, WeightsError> {
    let names = file.tensors();
    let hf = names
        .iter()
        .filter(|(k, _)| k.starts_with("vision_model.") || k.starts_with("text_model."))
        .count();
    let oc = names
        .iter()
        .filter(|(k, _)| k.starts_with("visual.") || k.starts_with("transformer.resblocks."))
        .count();
    match (hf, oc) {
        (0, 0) => Err(WeightsError::UnknownLayout {
            path: file.path.clone(),
            sample: names
                .iter()
                .take(5)
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        (h, o) if h >= o => Ok(Layout::HuggingFace),
        _ => Ok(Layout::OpenClip),
    }
}

fn resolve(dim: Dim, tower: Tower, cfg: &ClipConfig) -> usize {
    let v = &cfg.vision;
    let t = &cfg.text;
    let (width, mlp, embed) = match tower {
        Tower::Vision => (v.width, v.mlp_width, v.embed_dim),
        Tower::Text => (t.width, t.mlp_width, t.embed_dim),
    };
    match dim {
        Dim::Width => width,
        Dim::Width3 => 3 * width,
        Dim::Mlp => mlp,
        Dim::Embed => embed,
        Dim::Vocab => t.vocab_size,
        Dim::Context => t.context_length,
        Dim::Positions => v.pretrained_positions(),
        Dim::Channels => 3,
        Dim::Patch => v.patch_size,
    }
}

fn layers(tower: Tower, cfg: &ClipConfig) -> usize {
    match tower {
        Tower::Vision => cfg.vision.layers,
        Tower::Text => cfg.text.layers,
    }
}

fn plan(path: &Path, opts: &LoadOptions, towers: &[Tower]) -> Result<Plan, WeightsError> {
    let file = WeightFile::open(path)?;
    let layout = detect_layout(&file)?;
    let found = arch::discover(path, opts.config.as_deref(), layout == Layout::OpenClip).map_err(
        |(path, detail)| WeightsError::Config {
            path,
            detail: detail.to_string(),
        },
    )?;
    let config = load_config(path, opts, towers, &found)?;
    let mut report = LoadReport {
        path: path.to_path_buf(),
        file_bytes: file.len(),
        layout,
        config_source: found.source,
        config: config.clone(),
        file_activation: found.activation,
        towers: towers.to_vec(),
        applied: Vec::new(),
        missing: Vec::new(),
        unexpected: Vec::new(),
        mismatched: Vec::new(),
        ignored: Vec::new(),
        skipped: Vec::new(),
        bad_dtypes: Vec::new(),
    };
    let (params, used) = plan_rules(&file, layout, &config, towers, &mut report);
    sort_unused_keys(&file, &used, towers, &mut report);
    report.missing.sort();
    report.unexpected.sort();
    if !report.is_complete() {
        return Err(WeightsError::Mismatch {
            report: Box::new(report),
        });
    }
    Ok(Plan {
        file,
        report,
        params,
    })
}

/// The architecture a load uses: the file's, at the requested input size and activation,
/// checked for the requested towers only (a vision-only load does not care about the text
/// tower's numbers). A bad config is blamed on the config file, or on the weights file when
/// the defaults were assumed.
fn load_config(
    path: &Path,
    opts: &LoadOptions,
    towers: &[Tower],
    found: &arch::FileArch,
) -> Result<ClipConfig, WeightsError> {
    let mut config = found.config.clone();
    config.vision.image_size = opts.image_size;
    let activation = match opts.activation {
        ActivationChoice::Gelu => Activation::Gelu,
        ActivationChoice::QuickGelu => Activation::QuickGelu,
        ActivationChoice::FromConfig => match found.activation.as_deref() {
            None => Activation::Gelu,
            Some(name) => arch::activation_from_name(name).ok_or_else(|| WeightsError::Config {
                path: path.to_path_buf(),
                detail: format!(
                    "activation {name:?} from the config is not supported (gelu or quick_gelu)"
                ),
            })?,
        },
    };
    config.vision.activation = activation;
    config.text.activation = activation;
    let valid = match towers {
        [Tower::Vision] => config.vision.validate(),
        [Tower::Text] => config.text.validate(),
        _ => config.validate(),
    };
    valid.map_err(|detail| WeightsError::Config {
        path: match &found.source {
            ConfigSource::HuggingFace(p) | ConfigSource::OpenClip(p) => p.clone(),
            ConfigSource::Defaults => path.to_path_buf(),
        },
        detail: detail.to_string(),
    })?;
    Ok(config)
}

/// Looks up every stored key the remap rules of the requested towers name, recording in
/// `report` what is missing, misshapen or of an unconvertible dtype, and plans each
/// parameter whose keys are all usable. Returns the plan and the keys the rules used.
fn plan_rules(
    file: &WeightFile,
    layout: Layout,
    config: &ClipConfig,
    towers: &[Tower],
    report: &mut LoadReport,
) -> (HashMap<(Tower, String), Planned>, HashSet<String>) {
    let mut params = HashMap::new();
    let mut used: HashSet<String> = HashSet::new();
    for rule in CLIP_REMAP.iter().filter(|r| towers.contains(&r.tower)) {
        let source = match layout {
            Layout::HuggingFace => &rule.hf,
            Layout::OpenClip => &rule.open_clip,
        };
        let blocks: Vec<Option<usize>> = if rule.ours.contains("{n}") {
            (0..layers(rule.tower, config)).map(Some).collect()
        } else {
            vec![None]
        };
        let expected: Vec<usize> = source
            .shape
            .iter()
            .map(|&d| resolve(d, rule.tower, config))
            .collect();
        for n in blocks {
            let ex = |s: &str| n.map_or_else(|| s.to_string(), |n| remap::expand(s, n));
            let keys: Vec<String> = source.keys.iter().map(|k| ex(k)).collect();
            used.extend(keys.iter().cloned());
            let Some(dtype) = check_keys(file, &keys, &expected, report) else {
                continue;
            };
            let ours = ex(rule.ours);
            report.applied.push(Applied {
                tower: rule.tower,
                ours: ours.clone(),
                keys: keys.clone(),
                dtype,
                transform: source.transform,
            });
            params.insert(
                (rule.tower, ours),
                Planned {
                    keys,
                    transform: source.transform,
                },
            );
        }
    }
    (params, used)
}

/// Checks the stored keys of one parameter, recording every problem in `report`. The dtype
/// of the first key when all of them are usable.
fn check_keys(
    file: &WeightFile,
    keys: &[String],
    expected: &[usize],
    report: &mut LoadReport,
) -> Option<String> {
    let mut complete = true;
    let mut dtype = String::new();
    for key in keys {
        match file.info(key) {
            None => {
                report.missing.push(key.clone());
                complete = false;
            }
            Some(info) => {
                if info.shape != expected {
                    report.mismatched.push(ShapeMismatch {
                        key: key.clone(),
                        expected: expected.to_vec(),
                        found: info.shape.clone(),
                    });
                    complete = false;
                }
                if !file::supported_dtype(info.dtype) {
                    report
                        .bad_dtypes
                        .push((key.clone(), format!("{:?}", info.dtype)));
                    complete = false;
                }
                if dtype.is_empty() {
                    dtype = format!("{:?}", info.dtype);
                }
            }
        }
    }
    complete.then_some(dtype)
}

/// Files the stored keys no rule used: known non-parameters are ignored, keys of an
/// unrequested tower skipped, anything else is unexpected (an error).
fn sort_unused_keys(
    file: &WeightFile,
    used: &HashSet<String>,
    towers: &[Tower],
    report: &mut LoadReport,
) {
    for (key, _) in file.tensors() {
        if used.contains(&key) {
            continue;
        }
        if remap::is_ignored_key(&key) {
            report.ignored.push(key);
        } else if remap::tower_of_key(&key).is_some_and(|t| !towers.contains(&t)) {
            report.skipped.push(key);
        } else {
            report.unexpected.push(key);
        }
    }
}

/// Reads and converts one planned parameter to our layout: `(values, shape)`.
fn materialise(
    file: &WeightFile,
    p: &Planned,
    cfg: &ClipConfig,
    tower: Tower,
) -> Result<(Vec<f32>, Vec<usize>), WeightsError> {
    let shape_of = |k: &str| file.info(k).map(|i| i.shape.clone()).unwrap_or_default();
    let first = shape_of(&p.keys[0]);
    Ok(match p.transform {
        Transform::Copy => (file.read_f32(&p.keys[0])?, first),
        Transform::Transpose => {
            let (r, c) = (first[0], first[1]);
            (transpose(&file.read_f32(&p.keys[0])?, r, c), vec![c, r])
        }
        Transform::Stack => {
            let mut out = Vec::new();
            for k in &p.keys {
                out.extend(file.read_f32(k)?);
            }
            let n = out.len();
            (out, vec![n])
        }
        Transform::StackTranspose => {
            let (r, c) = (first[0], first[1]);
            let parts = p.keys.len();
            let mut out = vec![0f32; parts * r * c];
            // Part j [r, c] (out, in) lands in columns j*r..(j+1)*r of ours [c, parts*r].
            for (j, k) in p.keys.iter().enumerate() {
                let part = file.read_f32(k)?;
                for o in 0..r {
                    for i in 0..c {
                        out[i * parts * r + j * r + o] = part[o * c + i];
                    }
                }
            }
            (out, vec![c, parts * r])
        }
        Transform::PatchConv => {
            let w = first[0];
            let k: usize = first[1..].iter().product();
            (transpose(&file.read_f32(&p.keys[0])?, w, k), vec![k, w])
        }
        Transform::ResizePositions => {
            let width = first[1];
            let grid = cfg.vision.grid_size();
            let table = file.read_f32(&p.keys[0])?;
            let out = resample::resize_position_table(&table, width, grid).ok_or_else(|| {
                WeightsError::Internal {
                    detail: format!(
                        "{:?} position table {:?} is not 1 + a square grid",
                        tower, first
                    ),
                }
            })?;
            (out, vec![1 + grid * grid, width])
        }
    })
}

/// Cache-blocked transpose of a row-major `[rows, cols]` matrix.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    let mut out = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    out[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    out
}

/// Fills a lazily built tower, parameter by parameter, by module path.
struct Filler<'a, B: Backend> {
    plan: &'a Plan,
    tower: Tower,
    device: B::Device,
    path: Vec<String>,
    filled: usize,
    error: Option<WeightsError>,
}

impl<B: Backend> Filler<'_, B> {
    fn load<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D>>,
    ) -> Result<Param<Tensor<B, D>>, WeightsError> {
        let key = self.path.join(".");
        let planned = self
            .plan
            .params
            .get(&(self.tower, key.clone()))
            .ok_or_else(|| WeightsError::Internal {
                detail: format!("no remap rule fills the {:?} parameter {key}", self.tower),
            })?;
        let (values, shape) = materialise(
            &self.plan.file,
            planned,
            &self.plan.report.config,
            self.tower,
        )?;
        let want = param.lazy_shape().dims::<D>().to_vec();
        if shape != want {
            return Err(WeightsError::Internal {
                detail: format!("{key}: converted shape {shape:?} but the module has {want:?}"),
            });
        }
        let tensor = Tensor::<B, D>::from_data(TensorData::new(values, shape), &self.device);
        self.filled += 1;
        Ok(Param::initialized(param.id, tensor))
    }
}

impl<B: Backend> ModuleMapper<B> for Filler<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let id = param.id;
        let shape = param.lazy_shape();
        match self.load(param) {
            Ok(p) => p,
            Err(e) => {
                self.error = Some(e);
                // Keep the module well-formed; the load fails as a whole.
                Param::initialized(id, Tensor::zeros(shape, &self.device))
            }
        }
    }
}

fn fill<B: Backend, M: Module<B>>(
    module: M,
    plan: &Plan,
    tower: Tower,
    device: &B::Device,
) -> Result<M, WeightsError> {
    let mut filler = Filler::<B> {
        plan,
        tower,
        device: device.clone(),
        path: Vec::new(),
        filled: 0,
        error: None,
    };
    let module = module.map(&mut filler);
    if let Some(e) = filler.error {
        return Err(e);
    }
    let planned = plan.params.keys().filter(|(t, _)| *t == tower).count();
    if filler.filled != planned {
        return Err(WeightsError::Internal {
            detail: format!(
                "{tower:?}: filled {} parameters of {planned} planned",
                filler.filled
            ),
        });
    }
    Ok(module)
}

/// Validates a file without converting any tensor: the report of what a load would apply.
/// `with_text` asks for the text tower too. Errors exactly as a load would.
pub fn inspect_clip(
    path: &Path,
    opts: &LoadOptions,
    with_text: bool,
) -> Result<LoadReport, WeightsError> {
    let towers: &[Tower] = if with_text {
        &[Tower::Vision, Tower::Text]
    } else {
        &[Tower::Vision]
    };
    Ok(plan(path, opts, towers)?.report)
}

/// Loads both towers.
pub fn load_clip<B: Backend>(
    path: &Path,
    opts: &LoadOptions,
    device: &B::Device,
) -> Result<(ClipModel<B>, LoadReport), WeightsError> {
    let plan = plan(path, opts, &[Tower::Vision, Tower::Text])?;
    let cfg = &plan.report.config;
    let vision = fill(cfg.vision.init::<B>(device), &plan, Tower::Vision, device)?;
    let text = fill(cfg.text.init::<B>(device), &plan, Tower::Text, device)?;
    Ok((ClipModel { vision, text }, plan.report))
}

/// Loads the vision tower only (text keys, if any, are reported as skipped).
pub fn load_clip_vision<B: Backend>(
    path: &Path,
    opts: &LoadOptions,
    device: &B::Device,
) -> Result<(VisionTransformer<B>, LoadReport), WeightsError> {
    let plan = plan(path, opts, &[Tower::Vision])?;
    let vision = fill(
        plan.report.config.vision.init::<B>(device),
        &plan,
        Tower::Vision,
        device,
    )?;
    Ok((vision, plan.report))
}

/// Loads the text tower only (vision keys are reported as skipped).
pub fn load_clip_text<B: Backend>(
    path: &Path,
    opts: &LoadOptions,
    device: &B::Device,
) -> Result<(TextTransformer<B>, LoadReport), WeightsError> {
    let plan = plan(path, opts, &[Tower::Text])?;
    let text = fill(
        plan.report.config.text.init::<B>(device),
        &plan,
        Tower::Text,
        device,
    )?;
    Ok((text, plan.report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_transpose() {
        let src: Vec<f32> = (0..(37 * 70)).map(|v| v as f32).collect();
        let t = transpose(&src, 37, 70);
        for r in 0..37 {
            for c in 0..70 {
                assert_eq!(t[c * 37 + r], src[r * 70 + c]);
            }
        }
    }
}
