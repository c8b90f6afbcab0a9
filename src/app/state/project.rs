//! Project files: what was opened, the labels and masks, display settings and the view, as
//! human-readable JSON (masks as base64 PNG inside it, so that one file is written
//! atomically). Files are recorded by path and SHA-256 of their content: when a project is
//! reopened, a file that is missing or whose content changed keeps its labels aside, reported,
//! instead of lending them to whatever now sits at that path.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::labels::{ImageKey, Label};
use super::viewer::{Display, Measurement, Tool, Viewer};
use crate::io::mask::Mask;

/// The `format` field of every project file.
pub const FORMAT: &str = "mvfa-studio-project";
/// Version of the layout below; readers refuse newer ones.
pub const VERSION: u32 = 1;
/// How often unsaved work is written to the autosave file.
pub const AUTOSAVE_EVERY: Duration = Duration::from_secs(60);

/// A file the project refers to, identified by path and content hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Where the file was when the project was saved.
    pub path: PathBuf,
    /// SHA-256 of the file's content, lowercase hex.
    pub sha256: String,
}

/// The label of one image (a file and frame) in a project file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelEntry {
    /// The labelled file.
    pub path: PathBuf,
    /// The frame of the file (0-based; 0 for single-frame files).
    pub frame: usize,
    /// The label given to that frame.
    pub label: Label,
}

/// The lesion mask of one image (a file and frame) in a project file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskEntry {
    /// The file the mask belongs to.
    pub path: PathBuf,
    /// The frame of the file (0-based; 0 for single-frame files).
    pub frame: usize,
    /// Mask width in image pixels.
    pub width: u32,
    /// Mask height in image pixels.
    pub height: u32,
    /// The mask as an 8-bit grey PNG (0 / 255), base64-encoded.
    pub png_base64: String,
}

/// The view when the project was saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewEntry {
    /// The image shown, if any.
    pub current: Option<ImageKey>,
    /// Whether the image was fitted to the viewport.
    pub fit: bool,
    /// Screen points per image pixel when not fitting.
    pub zoom: f32,
    /// Offset of the image centre from the viewport centre, in points.
    pub pan: [f32; 2],
    /// The selected tool.
    pub tool: Tool,
    /// Brush radius, in image pixels.
    pub brush_radius: f32,
}

impl ViewEntry {
    /// What a project file keeps of `viewer`.
    pub fn of(viewer: &Viewer) -> Self {
        Self {
            current: viewer.current.clone(),
            fit: viewer.fit,
            zoom: viewer.zoom,
            pan: viewer.pan,
            tool: viewer.tool,
            brush_radius: viewer.brush_radius,
        }
    }
}

impl Default for ViewEntry {
    fn default() -> Self {
        Self::of(&Viewer::default())
    }
}

/// Labels and masks of a file that moved or changed, kept verbatim so that saving again loses
/// nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAside {
    /// The file as recorded when the project was saved.
    pub file: FileEntry,
    /// Why it was set aside (missing, changed content, unreadable), for the user.
    pub reason: String,
    /// Its labels, as they were saved.
    pub labels: Vec<LabelEntry>,
    /// Its masks, as they were saved.
    pub masks: Vec<MaskEntry>,
}

/// A project file as written to disk (JSON); missing fields take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectFile {
    /// Always [`FORMAT`]; identifies the file as a project.
    pub format: String,
    /// Layout version the file was written with (at most [`VERSION`] to be read).
    pub version: u32,
    /// Where the project was saved (an autosave carries it so that recovery saves back there).
    pub project_path: Option<PathBuf>,
    /// The files and folders opened, reopened with the project.
    pub sources: Vec<PathBuf>,
    /// Every labelled file with its content hash.
    pub files: Vec<FileEntry>,
    /// The label of every labelled image.
    pub labels: Vec<LabelEntry>,
    /// The lesion mask of every image that has one.
    pub masks: Vec<MaskEntry>,
    /// Window and inversion per series or file.
    pub display: BTreeMap<String, Display>,
    /// The view when the project was saved.
    pub view: ViewEntry,
    /// Length measurements, in image pixel coordinates.
    pub measurements: Vec<Measurement>,
    /// Labels and masks of files that moved or changed, kept verbatim.
    pub set_aside: Vec<SetAside>,
    /// The model: weights, detector checkpoint, results and how they were shown.
    pub model: Option<ModelEntry>,
}

/// The model side of a project. The detector and the results live in files beside the
/// project (`<name>.detector.safetensors`, `<name>.results.safetensors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ModelEntry {
    /// The organ word of the prompts.
    pub organ: String,
    /// The fine-tuning schedule.
    pub schedule: crate::workflow::Schedule,
    /// The seed of fresh adapters and fine-tuning.
    pub seed: u64,
    /// The CLIP weights the detector belongs to.
    pub weights: Option<PathBuf>,
    /// The detector checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// Whether the checkpoint's memory bank and calibration come from the project's labels as
    /// saved (then reopening does not rebuild them).
    pub detector_matches_labels: bool,
    /// The stored results of the detector.
    pub results: Option<PathBuf>,
    /// How results were shown.
    pub view: super::model::ResultsView,
}

/// The sidecar files of the project at `project`: detector checkpoint and results.
pub fn sidecars(project: &Path) -> (PathBuf, PathBuf) {
    let stem = project
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_end_matches(".mvfa")
        .to_string();
    let dir = project.parent().unwrap_or(Path::new("."));
    (
        dir.join(format!("{stem}.detector.safetensors")),
        dir.join(format!("{stem}.results.safetensors")),
    )
}

impl Default for ProjectFile {
    fn default() -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            project_path: None,
            sources: Vec::new(),
            files: Vec::new(),
            labels: Vec::new(),
            masks: Vec::new(),
            display: BTreeMap::new(),
            view: ViewEntry::default(),
            measurements: Vec::new(),
            set_aside: Vec::new(),
            model: None,
        }
    }
}

/// The project as a session knows it: where it is saved, what is unsaved, the autosave.
#[derive(Debug)]
pub struct Project {
    /// The project file this session saves to; `None` until the project is saved or opened.
    pub path: Option<PathBuf>,
    /// The labels' revision at the last save: anything newer is unsaved.
    pub saved_revision: u64,
    /// Where unsaved work is written every [`AUTOSAVE_EVERY`] (`None`: no autosave).
    pub autosave_path: Option<PathBuf>,
    /// How often unsaved work is autosaved.
    pub autosave_every: Duration,
    /// The labels' revision at the last autosave: newer changes are not yet autosaved.
    pub autosaved_revision: u64,
    /// When an autosave was last attempted (or the session began).
    pub last_autosave: Instant,
    /// Content hashes of files, computed once per session.
    pub hashes: HashMap<PathBuf, String>,
    /// Labels of files that moved or changed since the project was saved.
    pub set_aside: Vec<SetAside>,
    /// An autosave found at start: offered for recovery until the user decides.
    pub recovery: Option<PathBuf>,
}

impl Project {
    /// A project not yet saved anywhere; an existing file at `autosave_path` is offered for recovery.
    pub fn new(autosave_path: Option<PathBuf>) -> Self {
        let recovery = autosave_path.clone().filter(|p| p.is_file());
        Self {
            path: None,
            saved_revision: 0,
            autosave_path,
            autosave_every: AUTOSAVE_EVERY,
            autosaved_revision: 0,
            last_autosave: Instant::now(),
            hashes: HashMap::new(),
            set_aside: Vec::new(),
            recovery,
        }
    }
}

/// Why a project file could not be read or written, or one of its masks decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The project file could not be read.
    #[error("{}: cannot read: {cause}", path.display())]
    Read {
        /// The project file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    /// The file is not JSON of the project's shape.
    #[error("{}: not a project file: {cause}", path.display())]
    Parse {
        /// The project file.
        path: PathBuf,
        /// What the JSON reader said.
        cause: serde_json::Error,
    },
    /// JSON of another program.
    #[error("{}: not an MVFA Studio project", path.display())]
    NotAProject {
        /// The file.
        path: PathBuf,
    },
    /// A project written by a newer version of this program.
    #[error("{}: project version {version} is newer than this program reads ({VERSION})", path.display())]
    TooNew {
        /// The project file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// A labelled file could not be read to hash it.
    #[error("{}: cannot read the file to hash it: {cause}", path.display())]
    Hash {
        /// The labelled file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    /// A mask entry's base64 is damaged.
    #[error("mask of {}: bad base64: {cause}", path.display())]
    MaskBase64 {
        /// The masked image file.
        path: PathBuf,
        /// What the decoder said.
        cause: base64::DecodeError,
    },
    /// A mask entry's PNG could not be decoded, or a mask encoded.
    #[error("mask of {}: {cause}", path.display())]
    MaskImage {
        /// The masked image file.
        path: PathBuf,
        /// What the PNG codec said.
        cause: crate::io::mask::MaskPngError,
    },
    /// A mask entry's PNG has another size than the entry says.
    #[error("mask of {} is {}x{}, the file says {}x{}", path.display(), png.0, png.1, entry.0, entry.1)]
    MaskSize {
        /// The masked image file.
        path: PathBuf,
        /// Width and height of the PNG.
        png: (u32, u32),
        /// Width and height the entry records.
        entry: (u32, u32),
    },
    /// The project could not be written (the cause names the file).
    #[error("{cause}")]
    Write {
        /// The project file.
        path: PathBuf,
        /// What failed.
        cause: crate::io::export::ExportError,
    },
}

/// The SHA-256 of `path` from `hashes`, computed (and kept there) on first use. Reads the
/// whole file: called by the project jobs, never on the UI thread.
pub fn cached_hash(
    hashes: &mut HashMap<PathBuf, String>,
    path: &Path,
) -> Result<String, ProjectError> {
    if let Some(h) = hashes.get(path) {
        return Ok(h.clone());
    }
    let h =
        crate::weights::adapters::file_sha256_hex(path).map_err(|cause| ProjectError::Hash {
            path: path.to_path_buf(),
            cause,
        })?;
    hashes.insert(path.to_path_buf(), h.clone());
    Ok(h)
}

/// Encodes the mask of `key` as a project entry (8-bit grey PNG, base64).
pub fn encode_mask(key: &ImageKey, mask: &Mask) -> Result<MaskEntry, ProjectError> {
    let png = mask.to_png().map_err(|cause| ProjectError::MaskImage {
        path: key.path.clone(),
        cause,
    })?;
    Ok(MaskEntry {
        path: key.path.clone(),
        frame: key.frame,
        width: mask.width,
        height: mask.height,
        png_base64: base64::engine::general_purpose::STANDARD.encode(png),
    })
}

/// Decodes a project mask entry; fails on bad base64 or PNG, or when the PNG's size differs
/// from the entry's.
pub fn decode_mask(entry: &MaskEntry) -> Result<Mask, ProjectError> {
    let path = || entry.path.clone();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&entry.png_base64)
        .map_err(|cause| ProjectError::MaskBase64 {
            path: path(),
            cause,
        })?;
    let mask = Mask::from_png(&bytes).map_err(|cause| ProjectError::MaskImage {
        path: path(),
        cause,
    })?;
    if (mask.width, mask.height) != (entry.width, entry.height) {
        return Err(ProjectError::MaskSize {
            path: path(),
            png: (mask.width, mask.height),
            entry: (entry.width, entry.height),
        });
    }
    Ok(mask)
}

/// Writes `project` to `path` atomically (a crash mid-write leaves the previous file).
/// A missing parent folder is made first (the data folder of a fresh installation, where
/// the autosave goes).
pub fn write(path: &Path, project: &ProjectFile) -> Result<(), ProjectError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ProjectError::Write {
            path: path.to_path_buf(),
            cause: crate::io::export::ExportError::write(parent, e.to_string()),
        })?;
    }
    crate::io::export::write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, project)?;
        Ok(())
    })
    .map_err(|cause| ProjectError::Write {
        path: path.to_path_buf(),
        cause,
    })
}

/// Reads and checks a project file.
pub fn read(path: &Path) -> Result<ProjectFile, ProjectError> {
    let path_buf = || path.to_path_buf();
    let bytes = std::fs::read(path).map_err(|cause| ProjectError::Read {
        path: path_buf(),
        cause,
    })?;
    let project: ProjectFile =
        serde_json::from_slice(&bytes).map_err(|cause| ProjectError::Parse {
            path: path_buf(),
            cause,
        })?;
    if project.format != FORMAT {
        return Err(ProjectError::NotAProject { path: path_buf() });
    }
    if project.version > VERSION {
        return Err(ProjectError::TooNew {
            path: path_buf(),
            version: project.version,
        });
    }
    Ok(project)
}

/// Labels and masks of a project that still match their files, and the rest set aside.
pub struct Verified {
    /// Labels of files whose content still matches.
    pub labels: BTreeMap<ImageKey, Label>,
    /// Masks of files whose content still matches.
    pub masks: BTreeMap<ImageKey, Mask>,
    /// Labels and masks set aside: those already set aside in the project and those of files
    /// that are missing or changed.
    pub set_aside: Vec<SetAside>,
    /// Problems met (unreadable masks), for the log.
    pub problems: Vec<String>,
}

/// Checks each labelled file of `project` against its recorded hash (`hashes` caches the
/// hashes of this session).
pub fn verify(project: &ProjectFile, hashes: &mut HashMap<PathBuf, String>) -> Verified {
    let mut out = Verified {
        labels: BTreeMap::new(),
        masks: BTreeMap::new(),
        set_aside: project.set_aside.clone(),
        problems: Vec::new(),
    };
    let mut bad: HashMap<&Path, SetAside> = HashMap::new();
    for file in &project.files {
        let reason = if !file.path.is_file() {
            Some("missing: moved or deleted since the project was saved".to_string())
        } else {
            match cached_hash(hashes, &file.path) {
                Ok(h) if h == file.sha256 => None,
                Ok(_) => Some("changed since the project was saved (different content)".into()),
                Err(e) => Some(e.to_string()),
            }
        };
        if let Some(reason) = reason {
            bad.insert(
                &file.path,
                SetAside {
                    file: file.clone(),
                    reason,
                    labels: Vec::new(),
                    masks: Vec::new(),
                },
            );
        }
    }
    for entry in &project.labels {
        match bad.get_mut(entry.path.as_path()) {
            Some(aside) => aside.labels.push(entry.clone()),
            None => {
                out.labels.insert(
                    ImageKey {
                        path: entry.path.clone(),
                        frame: entry.frame,
                    },
                    entry.label,
                );
            }
        }
    }
    for entry in &project.masks {
        if let Some(aside) = bad.get_mut(entry.path.as_path()) {
            aside.masks.push(entry.clone());
            continue;
        }
        match decode_mask(entry) {
            Ok(mask) => {
                out.masks.insert(
                    ImageKey {
                        path: entry.path.clone(),
                        frame: entry.frame,
                    },
                    mask,
                );
            }
            Err(e) => out.problems.push(e.to_string()),
        }
    }
    let mut bad: Vec<SetAside> = bad.into_values().collect();
    bad.sort_by(|a, b| a.file.path.cmp(&b.file.path));
    out.set_aside.extend(bad);
    out
}
