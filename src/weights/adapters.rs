//! MVFA adapter checkpoints: our own safetensors files (with a JSON metadata header) and
//! direct import of the released reference `.pth` files (spec 5.5).
//!
//! Tensor names are the reference's in both formats: `seg_adapters.{i}.fc1.0.weight`
//! (`[bottleneck, width]`), `seg_adapters.{i}.fc2.0.weight` (`[width, bottleneck]`), the same
//! for `det_adapters`, `i` = level 0..levels-1, PyTorch layout `[out, in]`, f32. A safetensors
//! file written here therefore loads in Python with
//! `{k.split('.', 1)[1]: v for k, v in load_file(p).items() if k.startswith('seg_adapters.')}`.
//!
//! Our safetensors files carry `__metadata__["mvfa"]` = the JSON of
//! [`AdapterCheckpointMeta`] (organ word, shots, epochs, backbone identity, calibration...).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn_store::pytorch::PytorchReader;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::model::mvfa::adapter::{Adapter, AdapterBank, MvfaAdapters, MvfaAdaptersConfig};
use crate::weights::format::{NotFloatError, f32_from_le_bytes, file_is_pytorch_checkpoint};

/// `__metadata__` key holding the JSON of [`AdapterCheckpointMeta`].
pub const META_KEY: &str = "mvfa";
/// Value of [`AdapterCheckpointMeta::format`].
pub const FORMAT_NAME: &str = "mvfa-studio-adapters";
/// Current [`AdapterCheckpointMeta::format_version`].
pub const FORMAT_VERSION: u32 = 1;

/// Errors of adapter checkpoint reading and writing; each names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum AdapterCheckpointError {
    /// The file could not be read (or does not exist).
    #[error("cannot read adapter checkpoint {path}: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    #[error("cannot write adapter checkpoint {path}: {reason}")]
    /// The checkpoint could not be serialised or written.
    Write {
        /// The file being written.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    #[error("{path} is not a readable PyTorch checkpoint (.pth): {reason}")]
    /// A file taken for a PyTorch checkpoint could not be read as one (or a tensor in it could not be read).
    NotPytorch {
        /// The checkpoint file.
        path: PathBuf,
        /// The reader's error.
        reason: String,
    },
    #[error("{path} is not a safetensors file: {reason}")]
    /// A file taken for our format is not valid safetensors.
    NotSafetensors {
        /// The checkpoint file.
        path: PathBuf,
        /// The parser's error.
        reason: String,
    },
    #[error("{path} is not an MVFA adapter checkpoint: {reason}")]
    /// The file holds no MVFA adapter weights (or, for our format, no MVFA metadata).
    NotMvfa {
        /// The checkpoint file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A weight the backbone's adapters need is absent.
    #[error(
        "{path}: missing tensor '{key}' (an MVFA checkpoint for this backbone has seg_adapters and det_adapters levels 0 to {last_level}, each with fc1.0.weight and fc2.0.weight)"
    )]
    MissingKey {
        /// The checkpoint file.
        path: PathBuf,
        /// The missing tensor name, e.g. `seg_adapters.3.fc1.0.weight`.
        key: String,
        /// Highest adapter level the backbone taps (levels run from 0).
        last_level: usize,
    },
    /// A weight has a shape other than the backbone's adapter layout.
    #[error("{path}: tensor '{key}' has shape {found:?}, expected {expected:?} ({what})")]
    WrongShape {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// Shape found in the file.
        found: Vec<usize>,
        /// Shape the backbone needs (PyTorch layout `[out, in]`).
        expected: Vec<usize>,
        /// The expected layout spelled out, e.g. `[bottleneck, width] with width 1024 and bottleneck 768`.
        what: String,
    },
    /// A tensor that is not an adapter weight, or one of a level the backbone does not tap.
    #[error("{path}: unexpected tensor '{key}' ({reason})")]
    UnexpectedKey {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// Why it is not expected.
        reason: String,
    },
    /// A weight is stored in a non-floating-point dtype.
    #[error("{path}: tensor '{key}' has dtype {dtype}, expected a floating-point type")]
    Dtype {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    #[error("{path}: invalid MVFA metadata: {reason}")]
    /// The `__metadata__["mvfa"]` JSON is missing, invalid, of another format or of a newer version, or an extra tensor is unreadable.
    Metadata {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

type Result<T> = std::result::Result<T, AdapterCheckpointError>;

/// Identity of the backbone the adapters were trained on, so that a checkpoint is not used
/// with a different tower by mistake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneIdentity {
    /// Model name, e.g. `ViT-L-14-336`.
    pub model: String,
    /// Model input size in pixels (240).
    pub image_size: usize,
    /// Vision residual width (1024).
    pub vision_width: usize,
    /// Vision blocks (24).
    pub vision_layers: usize,
    /// Joint embedding dim = adapter bottleneck (768).
    pub embed_dim: usize,
    /// 1-based tapped blocks ([6, 12, 18, 24]).
    pub tap_blocks: Vec<usize>,
    /// Leading hex digits of the SHA-256 of the backbone weight file, when known.
    #[serde(default)]
    pub weights_sha256_prefix: Option<String>,
}

/// Mixing ratios the adapters were trained with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixingRatios {
    /// Weight of the residual stream itself (`stream_ratio`, 0.8 by default).
    pub stream: f64,
    /// Weight of the segmentation adapter's output (`seg_ratio`, 0.1 by default).
    pub seg: f64,
    /// Weight of the detection adapter's output (`det_ratio`, 0.1 by default).
    pub det: f64,
}

impl Default for MixingRatios {
    fn default() -> Self {
        Self {
            stream: 0.8,
            seg: 0.1,
            det: 0.1,
        }
    }
}

/// Metadata stored in our adapter safetensors files (`__metadata__["mvfa"]`, JSON).
/// Unknown fields are ignored when reading, missing optional ones default to `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterCheckpointMeta {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`] at writing time.
    pub format_version: u32,
    /// Organ / object word inserted into the prompts (spec 3.1), e.g. `Brain`.
    #[serde(default)]
    pub organ_word: Option<String>,
    /// Shots per class used for few-shot training (k).
    #[serde(default)]
    pub shots: Option<usize>,
    /// Epochs trained.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Backbone the adapters belong to.
    #[serde(default)]
    pub backbone: Option<BackboneIdentity>,
    /// Residual mixing used in training.
    #[serde(default)]
    pub mixing: MixingRatios,
    /// Free text on where the weights came from (e.g. "imported from Brain.pth").
    #[serde(default)]
    pub source: Option<String>,
    /// Calibration data (min/max of each branch on a reference set, spec 4.4), filled by
    /// the calibration code in whatever JSON shape it defines.
    #[serde(default)]
    pub calibration: Option<serde_json::Value>,
    /// Program that wrote the file.
    #[serde(default)]
    pub written_by: Option<String>,
}

impl Default for AdapterCheckpointMeta {
    fn default() -> Self {
        Self {
            format: FORMAT_NAME.to_string(),
            format_version: FORMAT_VERSION,
            organ_word: None,
            shots: None,
            epochs: None,
            backbone: None,
            mixing: MixingRatios::default(),
            source: None,
            calibration: None,
            written_by: Some(format!("mvfa-studio {}", env!("CARGO_PKG_VERSION"))),
        }
    }
}

/// Which file format an adapter checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterFileFormat {
    /// Our safetensors format.
    Safetensors,
    /// The reference's PyTorch pickle (`torch.save`).
    Pytorch,
}

/// Adapters read from a file of either format.
#[derive(Debug)]
pub struct LoadedAdapters<B: Backend> {
    /// The segmentation and detection adapter banks.
    pub adapters: MvfaAdapters<B>,
    /// Present for our safetensors files; `None` for imported `.pth` files.
    pub meta: Option<AdapterCheckpointMeta>,
    /// The format the file was in.
    pub format: AdapterFileFormat,
}

/// Lowercase hex SHA-256 of a file's contents (for [`BackboneIdentity`]).
pub fn file_sha256_hex(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The checkpoint key of one weight.
pub fn adapter_key(head: &str, level: usize, fc: usize) -> String {
    format!("{head}_adapters.{level}.fc{fc}.0.weight")
}

const HEADS: [&str; 2] = ["seg", "det"];

/// Why a tensor's values could not be read as f32.
#[derive(Debug, thiserror::Error)]
enum TensorReadError {
    /// Stored in a type that is not floating point; what follows `dtype ` in the message.
    #[error("dtype {0}")]
    Dtype(String),
    /// The reader failed.
    #[error("{0}")]
    Unreadable(String),
}

impl From<NotFloatError> for TensorReadError {
    fn from(e: NotFloatError) -> Self {
        TensorReadError::Dtype(format!("{:?} is not a floating-point type", e.0))
    }
}

/// A tensor found in a file: its shape and a way to get its f32 values.
struct FoundTensor<'a> {
    shape: Vec<usize>,
    read: Box<dyn Fn() -> std::result::Result<Vec<f32>, TensorReadError> + 'a>,
}

/// Parses `seg_adapters.3.fc1.0.weight` into (head, level, fc).
fn parse_key(key: &str) -> Option<(usize, usize, usize)> {
    let (head, rest) = key.split_once("_adapters.")?;
    let head = HEADS.iter().position(|h| *h == head)?;
    let (level, rest) = rest.split_once('.')?;
    let level: usize = level.parse().ok()?;
    let fc = match rest {
        "fc1.0.weight" => 1,
        "fc2.0.weight" => 2,
        _ => return None,
    };
    Some((head, level, fc))
}

/// Checks the tensor set against the expected layout and builds the adapters.
fn build_adapters<B: Backend>(
    path: &Path,
    tensors: &BTreeMap<String, FoundTensor<'_>>,
    cfg: &MvfaAdaptersConfig,
    device: &B::Device,
) -> Result<MvfaAdapters<B>> {
    check_adapter_keys(path, tensors, cfg)?;
    let mut banks: Vec<AdapterBank<B>> = Vec::with_capacity(2);
    for head in HEADS {
        let mut adapters = Vec::with_capacity(cfg.levels);
        for level in 0..cfg.levels {
            let fc1 = read_linear::<B>(path, tensors, cfg, head, level, 1, device)?;
            let fc2 = read_linear::<B>(path, tensors, cfg, head, level, 2, device)?;
            adapters.push(Adapter { fc1, fc2 });
        }
        banks.push(AdapterBank { adapters });
    }
    let det = banks.pop().expect("two banks");
    let seg = banks.pop().expect("two banks");
    Ok(MvfaAdapters { seg, det })
}

/// Refuses a tensor set that is not MVFA adapters at all (saying what it looks like
/// instead), or that holds a tensor which is not an adapter weight of a tapped level: such a
/// file belongs to another model or backbone, and loading part of it would hide that.
fn check_adapter_keys(
    path: &Path,
    tensors: &BTreeMap<String, FoundTensor<'_>>,
    cfg: &MvfaAdaptersConfig,
) -> Result<()> {
    if !tensors.keys().any(|k| parse_key(k).is_some()) {
        let sample: Vec<&str> = tensors.keys().take(5).map(String::as_str).collect();
        let reason = if tensors.is_empty() {
            "it holds no tensors".to_string()
        } else if tensors.keys().any(|k| k.ends_with(".fc1.0.weight")) {
            format!(
                "its tensors are not under 'seg_adapters' / 'det_adapters' (found e.g. {sample:?})"
            )
        } else {
            format!(
                "expected tensors 'seg_adapters.{{i}}.fc1.0.weight' ... 'det_adapters.{{i}}.fc2.0.weight', found e.g. {sample:?}"
            )
        };
        return Err(AdapterCheckpointError::NotMvfa {
            path: path.to_path_buf(),
            reason,
        });
    }
    for key in tensors.keys() {
        match parse_key(key) {
            None => {
                return Err(AdapterCheckpointError::UnexpectedKey {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    reason: "not an MVFA adapter weight".into(),
                });
            }
            Some((_, level, _)) if level >= cfg.levels => {
                return Err(AdapterCheckpointError::UnexpectedKey {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    reason: format!(
                        "level {level}, but the backbone taps {} levels (0 to {})",
                        cfg.levels,
                        cfg.levels.saturating_sub(1)
                    ),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// One adapter weight (`fc` 1 or 2 of `head` at `level`), checked for presence, shape and
/// dtype before its values are read, as a burn `Linear`.
fn read_linear<B: Backend>(
    path: &Path,
    tensors: &BTreeMap<String, FoundTensor<'_>>,
    cfg: &MvfaAdaptersConfig,
    head: &str,
    level: usize,
    fc: usize,
    device: &B::Device,
) -> Result<Linear<B>> {
    let path_buf = || path.to_path_buf();
    let (w, e) = (cfg.width, cfg.bottleneck);
    let (expected, what) = if fc == 1 {
        ([e, w], "[bottleneck, width]")
    } else {
        ([w, e], "[width, bottleneck]")
    };
    let key = adapter_key(head, level, fc);
    let found = tensors
        .get(&key)
        .ok_or_else(|| AdapterCheckpointError::MissingKey {
            path: path_buf(),
            key: key.clone(),
            last_level: cfg.levels.saturating_sub(1),
        })?;
    if found.shape != expected {
        return Err(AdapterCheckpointError::WrongShape {
            path: path_buf(),
            key,
            found: found.shape.clone(),
            expected: expected.to_vec(),
            what: format!("{what} with width {w} and bottleneck {e}"),
        });
    }
    let values = (found.read)().map_err(|e| match e {
        TensorReadError::Dtype(dtype) => AdapterCheckpointError::Dtype {
            path: path_buf(),
            key: key.clone(),
            dtype,
        },
        TensorReadError::Unreadable(reason) => AdapterCheckpointError::NotPytorch {
            path: path_buf(),
            reason: format!("reading '{key}': {reason}"),
        },
    })?;
    Ok(linear_from_torch::<B>(&values, expected, device))
}

/// A bias-free burn `Linear` (`weight [in, out]`) from a PyTorch weight `[out, in]`.
fn linear_from_torch<B: Backend>(
    torch_weight: &[f32],
    [out, inp]: [usize; 2],
    device: &B::Device,
) -> Linear<B> {
    let mut t = vec![0f32; out * inp];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = torch_weight[o * inp + i];
        }
    }
    Linear {
        weight: Param::from_data(TensorData::new(t, [inp, out]), device),
        bias: None,
    }
}

/// A burn `Linear` weight `[in, out]` as PyTorch `[out, in]` row-major values.
fn linear_to_torch<B: Backend>(linear: &Linear<B>) -> (Vec<f32>, [usize; 2]) {
    let [inp, out] = linear.weight.dims();
    let data = linear.weight.val().into_data().convert::<f32>();
    let w: Vec<f32> = data.to_vec().expect("f32 after convert");
    let mut t = vec![0f32; out * inp];
    for i in 0..inp {
        for o in 0..out {
            t[o * inp + i] = w[i * out + o];
        }
    }
    (t, [out, inp])
}

fn float_data_to_f32(data: TensorData) -> std::result::Result<Vec<f32>, TensorReadError> {
    use burn::tensor::DType;
    match data.dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => data
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| TensorReadError::Unreadable(format!("{e:?}"))),
        other => Err(TensorReadError::Dtype(format!("{other:?}"))),
    }
}

/// Imports a released MVFA `.pth` (`{'seg_adapters': state_dict, 'det_adapters': state_dict}`,
/// keys `{i}.fc1.0.weight [bottleneck, width]` and `{i}.fc2.0.weight [width, bottleneck]`),
/// checking every tensor against `cfg` (levels, width, bottleneck of the backbone).
pub fn import_mvfa_pth<B: Backend>(
    path: &Path,
    cfg: &MvfaAdaptersConfig,
    device: &B::Device,
) -> Result<MvfaAdapters<B>> {
    if !path.exists() {
        return Err(AdapterCheckpointError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let reader = PytorchReader::new(path).map_err(|e| AdapterCheckpointError::NotPytorch {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tensors: BTreeMap<String, FoundTensor<'_>> = reader
        .tensors()
        .iter()
        .map(|(k, snap)| {
            let found = FoundTensor {
                shape: snap.shape.to_vec(),
                read: Box::new(move || {
                    let data = snap
                        .to_data()
                        .map_err(|e| TensorReadError::Unreadable(format!("{e:?}")))?;
                    float_data_to_f32(data)
                }),
            };
            (k.clone(), found)
        })
        .collect();
    build_adapters(path, &tensors, cfg, device)
}

/// Reads our adapter safetensors file: the adapters (checked against `cfg`) and the metadata.
pub fn load_adapters<B: Backend>(
    path: &Path,
    cfg: &MvfaAdaptersConfig,
    device: &B::Device,
) -> Result<(MvfaAdapters<B>, AdapterCheckpointMeta)> {
    let bytes = std::fs::read(path).map_err(|source| AdapterCheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let not_st = |e: safetensors::SafeTensorError| AdapterCheckpointError::NotSafetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(not_st)?;
    let st = SafeTensors::deserialize(&bytes).map_err(not_st)?;
    let meta_json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| AdapterCheckpointError::Metadata {
            path: path.to_path_buf(),
            reason: format!("no '{META_KEY}' entry in the safetensors __metadata__ header"),
        })?;
    let meta: AdapterCheckpointMeta =
        serde_json::from_str(meta_json).map_err(|e| AdapterCheckpointError::Metadata {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if meta.format != FORMAT_NAME || meta.format_version > FORMAT_VERSION {
        return Err(AdapterCheckpointError::Metadata {
            path: path.to_path_buf(),
            reason: format!(
                "format '{}' version {} (this program reads '{FORMAT_NAME}' up to version {FORMAT_VERSION})",
                meta.format, meta.format_version
            ),
        });
    }
    let views = st.tensors();
    let tensors: BTreeMap<String, FoundTensor<'_>> = views
        .iter()
        .filter(|(k, _)| !k.starts_with(EXTRA_PREFIX))
        .map(|(k, view)| {
            let found = FoundTensor {
                shape: view.shape().to_vec(),
                read: Box::new(move || Ok(f32_from_le_bytes(view.dtype(), view.data())?)),
            };
            (k.clone(), found)
        })
        .collect();
    let adapters = build_adapters(path, &tensors, cfg, device)?;
    Ok((adapters, meta))
}

/// Writes adapters and metadata as safetensors (f32, PyTorch layout, reference key names).
/// Replaces an existing file atomically (written to a sibling temporary file, then renamed).
pub fn save_adapters<B: Backend>(
    path: &Path,
    adapters: &MvfaAdapters<B>,
    meta: &AdapterCheckpointMeta,
) -> Result<()> {
    save_adapters_with_extra(path, adapters, meta, &[])
}

/// The adapters' weights as tensors under the reference key names, PyTorch layout.
pub fn adapter_tensors<B: Backend>(adapters: &MvfaAdapters<B>) -> Vec<ExtraTensor> {
    let mut out = Vec::new();
    for (head, bank) in HEADS.iter().zip([&adapters.seg, &adapters.det]) {
        for (level, adapter) in bank.adapters.iter().enumerate() {
            for (fc, linear) in [(1, &adapter.fc1), (2, &adapter.fc2)] {
                let (values, shape) = linear_to_torch(linear);
                out.push((adapter_key(head, level, fc), values, shape.to_vec()));
            }
        }
    }
    out
}

/// Adapters from tensors under the reference key names (what [`adapter_tensors`] gives),
/// checked against `cfg` like a file's; `path` names the file they came from in errors.
pub fn adapters_from_tensors<B: Backend>(
    path: &Path,
    tensors: Vec<ExtraTensor>,
    cfg: &MvfaAdaptersConfig,
    device: &B::Device,
) -> Result<MvfaAdapters<B>> {
    let found: BTreeMap<String, FoundTensor<'_>> = tensors
        .into_iter()
        .map(|(key, values, shape)| {
            let found = FoundTensor {
                shape,
                read: Box::new(move || Ok(values.clone())),
            };
            (key, found)
        })
        .collect();
    build_adapters(path, &found, cfg, device)
}

/// Prefix of the extra tensors a checkpoint may carry besides the adapters (e.g. the normal
/// support shots the memory bank is rebuilt from). [`load_adapters`] skips them;
/// [`read_extra_tensors`] reads them.
pub const EXTRA_PREFIX: &str = "extra.";

/// An extra f32 tensor stored under [`EXTRA_PREFIX`]: name (without the prefix), values, shape.
pub type ExtraTensor = (String, Vec<f32>, Vec<usize>);

/// Reads the extra tensors of one of our safetensors checkpoints.
pub fn read_extra_tensors(path: &Path) -> Result<Vec<ExtraTensor>> {
    let bytes = std::fs::read(path).map_err(|source| AdapterCheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| AdapterCheckpointError::NotSafetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut out = Vec::new();
    for (key, view) in st.tensors() {
        if let Some(name) = key.strip_prefix(EXTRA_PREFIX) {
            let values = f32_from_le_bytes(view.dtype(), view.data()).map_err(|reason| {
                AdapterCheckpointError::Metadata {
                    path: path.to_path_buf(),
                    reason: format!("extra tensor '{key}': {reason}"),
                }
            })?;
            out.push((name.to_string(), values, view.shape().to_vec()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The metadata of one of our checkpoint files, read from the safetensors header only (the
/// tensors are not read). `Ok(None)` for a reference `.pth`, which has none.
pub fn read_checkpoint_meta(path: &Path) -> Result<Option<AdapterCheckpointMeta>> {
    let io = |source| AdapterCheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    if file_is_pytorch_checkpoint(path).map_err(io)? {
        return Ok(None);
    }
    let file = crate::weights::clip::file::WeightFile::open(path).map_err(|e| match e {
        crate::weights::clip::WeightsError::Io { source, .. } => io(source),
        // The reason alone: the path is named once, by this error.
        crate::weights::clip::WeightsError::NotSafetensors { detail, .. } => {
            AdapterCheckpointError::NotSafetensors {
                path: path.to_path_buf(),
                reason: detail,
            }
        }
        crate::weights::clip::WeightsError::Truncated { detail, .. } => {
            AdapterCheckpointError::NotSafetensors {
                path: path.to_path_buf(),
                reason: format!("truncated: {detail}"),
            }
        }
        other => AdapterCheckpointError::NotSafetensors {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let text = file
        .user_metadata(META_KEY)
        .ok_or_else(|| AdapterCheckpointError::NotMvfa {
            path: path.to_path_buf(),
            reason: format!("no '{META_KEY}' metadata ({FORMAT_NAME})"),
        })?;
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| AdapterCheckpointError::Metadata {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// [`save_adapters`] plus extra f32 tensors (stored as `extra.<name>`).
pub fn save_adapters_with_extra<B: Backend>(
    path: &Path,
    adapters: &MvfaAdapters<B>,
    meta: &AdapterCheckpointMeta,
    extra: &[ExtraTensor],
) -> Result<()> {
    let write_err = |reason: String| AdapterCheckpointError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let mut owned: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    let extra = extra.iter().map(|(name, values, shape)| {
        (
            format!("{EXTRA_PREFIX}{name}"),
            values.clone(),
            shape.clone(),
        )
    });
    for (name, values, shape) in adapter_tensors(adapters).into_iter().chain(extra) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        owned.push((name, bytes, shape));
    }
    let views = owned
        .iter()
        .map(|(k, bytes, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| write_err(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_string(meta).map_err(|e| write_err(e.to_string()))?;
    let header = HashMap::from([(META_KEY.to_string(), json)]);
    let bytes =
        safetensors::serialize(views, Some(header)).map_err(|e| write_err(e.to_string()))?;
    // Temporary file + rename: a failed save never leaves a half-written checkpoint.
    crate::io::export::write_atomically(path, |out| Ok(out.write_all(&bytes)?))
        .map_err(|e| write_err(e.to_string()))
}

/// Reads an adapter file of either format, telling them apart by content: a ZIP
/// (`PK\x03\x04`, `torch.save` since PyTorch 1.6) or a raw pickle (`\x80`) is imported as a
/// reference `.pth`, anything else is read as our safetensors.
pub fn load_adapter_file<B: Backend>(
    path: &Path,
    cfg: &MvfaAdaptersConfig,
    device: &B::Device,
) -> Result<LoadedAdapters<B>> {
    let is_pth = file_is_pytorch_checkpoint(path).map_err(|source| AdapterCheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if is_pth {
        Ok(LoadedAdapters {
            adapters: import_mvfa_pth(path, cfg, device)?,
            meta: None,
            format: AdapterFileFormat::Pytorch,
        })
    } else {
        let (adapters, meta) = load_adapters(path, cfg, device)?;
        Ok(LoadedAdapters {
            adapters,
            meta: Some(meta),
            format: AdapterFileFormat::Safetensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_keys_only() {
        assert_eq!(parse_key("seg_adapters.0.fc1.0.weight"), Some((0, 0, 1)));
        assert_eq!(parse_key("det_adapters.3.fc2.0.weight"), Some((1, 3, 2)));
        assert_eq!(parse_key("det_adapters.3.fc2.0.bias"), None);
        assert_eq!(parse_key("0.fc1.0.weight"), None);
        assert_eq!(parse_key("cls_adapters.0.fc1.0.weight"), None);
        assert_eq!(parse_key("seg_adapters.x.fc1.0.weight"), None);
    }
}
