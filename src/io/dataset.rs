//! Dataset layouts: which files are images, which are masks, what label each has. Only paths
//! here; decoding happens in the image loaders.
//!
//! Two layouts:
//! - The MVFA layout of the reference code (spec 8): `<root>/<Key>_AD/{valid,test}/
//!   {good,Ungood}/img/*`, with `Ungood/anomaly_mask/<same name>` for the segmentation
//!   datasets. [`MvfaDataset`] opens it, lists a split in the reference's order (sorted good,
//!   then sorted Ungood) and draws few-shot groups from `valid/`, either from the reference's
//!   `<k>-shot.txt` lists ([`ShotFile`]) or at random with a seed.
//! - Plain folders for a user's own data: `<root>/normal/`, `<root>/abnormal/` and optionally
//!   `<root>/masks/` (masks matched to images by file stem), opened by [`open_plain_folders`].
//!
//! Both produce a [`Dataset`]: samples with labels and optional mask paths, the organ word used
//! in the text prompts, and whether the data carries pixel masks.
//!
//! Every error names the path (or shot name) at fault; a dataset is either complete and
//! consistent or not returned at all.
use rand_chacha::rand_core::RngCore;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Path of the image file.
    pub image: PathBuf,
    /// `true` = abnormal (anomalous).
    pub label: bool,
    /// Pixel mask (nonzero = anomalous after the loader's threshold); `None` means "no mask":
    /// all-normal for a normal image, image-level label only for an abnormal one.
    pub mask: Option<PathBuf>,
}

/// A list of labelled images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Normal images first, then abnormal, each sorted by file name (the reference's test
    /// order), unless the dataset was made by a selection that keeps its own order.
    pub items: Vec<Sample>,
    /// The word inserted into the text prompts (spec 3.1), e.g. `Brain`, `retinal OCT`.
    pub organ_word: String,
    /// Whether pixel masks exist for this data (segmentation metrics are meaningful).
    pub has_masks: bool,
}

/// A few-shot training group: k normal and k (or other) abnormal exemplars, in use order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FewShot {
    /// Normal exemplars, in use order.
    pub normal: Vec<Sample>,
    /// Abnormal exemplars, in use order.
    pub abnormal: Vec<Sample>,
    /// The word inserted into the text prompts (spec 3.1), as in [`Dataset::organ_word`].
    pub organ_word: String,
    /// Whether pixel masks exist for this data, as in [`Dataset::has_masks`].
    pub has_masks: bool,
}

/// What went wrong while listing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("missing folder {path} ({what})")]
    /// A required folder does not exist.
    MissingFolder {
        /// The missing folder.
        path: PathBuf,
        /// What the folder should hold, e.g. `normal images`.
        what: String,
    },
    #[error("folder {path} holds no image files ({what})")]
    /// A folder that must hold images holds none.
    EmptyFolder {
        /// The empty folder.
        path: PathBuf,
        /// What the folder should hold, e.g. `abnormal images`.
        what: String,
    },
    /// A folder could not be listed or a file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The folder or file at fault.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    #[error("abnormal image {image} has no mask (expected {expected})")]
    /// An abnormal image has no mask although the data carries masks.
    MissingMask {
        /// The abnormal image.
        image: PathBuf,
        /// Where its mask was expected.
        expected: PathBuf,
    },
    #[error("mask {mask} matches no image (masks are paired with images by {rule})")]
    /// A mask file belongs to no image.
    UnmatchedMask {
        /// The orphan mask.
        mask: PathBuf,
        /// How masks are paired with images in this layout.
        rule: &'static str,
    },
    #[error("{first} and {second} have the same file stem, so masks cannot be matched to them")]
    /// Two images (or two masks) share a file stem, so stem pairing would be ambiguous.
    DuplicateStem {
        /// The first file with the stem.
        first: PathBuf,
        /// The second file with the same stem.
        second: PathBuf,
    },
    #[error(
        "no {dir_name} folder at {root} (give the data folder holding {dir_name}, or {dir_name} itself)"
    )]
    /// Neither the given folder nor a child of it is the `<Key>_AD` folder.
    NoDatasetFolder {
        /// The folder given.
        root: PathBuf,
        /// The expected `<Key>_AD` folder name.
        dir_name: String,
    },
    #[error("unknown MVFA dataset {name:?}; known: {known}")]
    /// A name that is none of the six MVFA datasets.
    UnknownKey {
        /// The name given.
        name: String,
        /// The accepted names, comma-separated.
        known: String,
    },
    /// A line of a `<k>-shot.txt` file could not be parsed.
    #[error("{path}: line {line}: {message}")]
    ShotFileSyntax {
        /// The shot file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    #[error("{path}: no {tag} line")]
    /// A shot file lacks the `a-<i>:` or `n-<i>:` line of the requested iterate.
    ShotListMissing {
        /// The shot file.
        path: PathBuf,
        /// The missing tag, e.g. `a-2:`.
        tag: String,
    },
    #[error("shot {name} is not in {folder}")]
    /// A name in a shot list is not an image of the few-shot pool.
    ShotNotFound {
        /// The listed file name.
        name: String,
        /// The `valid/` image folder it was looked for in.
        folder: PathBuf,
    },
    /// A class has fewer images (or listed names) than the shots asked for.
    #[error("{needed} {what} shots needed but {source_desc} has only {available}")]
    NotEnoughShots {
        /// Shots asked for.
        needed: usize,
        /// Images (or names) available.
        available: usize,
        /// Which class: `normal` or `abnormal`.
        what: &'static str,
        /// Where the shots were to come from, e.g. `the dataset` or `the normal shot list`.
        source_desc: String,
    },
}

type Result<T> = std::result::Result<T, DatasetError>;

// ------------------------------------------------------------------------------------------
// The six MVFA datasets.

/// The six datasets of the MVFA benchmark, by the reference code's key (`CLASS_NAMES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MvfaKey {
    /// `Brain_AD`: brain MRI, with pixel masks.
    Brain,
    /// `Liver_AD`: liver CT, with pixel masks.
    Liver,
    /// `Retina_RESC_AD`: retinal OCT (RESC), with pixel masks.
    RetinaResc,
    /// `Retina_OCT2017_AD`: retinal OCT (OCT2017), image-level labels only.
    RetinaOct2017,
    /// `Chest_AD`: chest X-ray, image-level labels only.
    Chest,
    /// `Histopathology_AD`: histopathology, image-level labels only.
    Histopathology,
}

impl MvfaKey {
    /// In the reference code's order (`CLASS_NAMES`).
    pub const ALL: [MvfaKey; 6] = [
        MvfaKey::Brain,
        MvfaKey::Liver,
        MvfaKey::RetinaResc,
        MvfaKey::RetinaOct2017,
        MvfaKey::Chest,
        MvfaKey::Histopathology,
    ];

    /// In the paper's table column order (Table 1: HIS, Chest, OCT17, Brain, Liver, RESC).
    pub const PAPER_ORDER: [MvfaKey; 6] = [
        MvfaKey::Histopathology,
        MvfaKey::Chest,
        MvfaKey::RetinaOct2017,
        MvfaKey::Brain,
        MvfaKey::Liver,
        MvfaKey::RetinaResc,
    ];

    /// The reference's key, e.g. `Retina_RESC`; the folder is `<key>_AD`.
    pub fn code_key(self) -> &'static str {
        match self {
            MvfaKey::Brain => "Brain",
            MvfaKey::Liver => "Liver",
            MvfaKey::RetinaResc => "Retina_RESC",
            MvfaKey::RetinaOct2017 => "Retina_OCT2017",
            MvfaKey::Chest => "Chest",
            MvfaKey::Histopathology => "Histopathology",
        }
    }

    /// The paper's name, e.g. `BrainMRI`, `OCT17`.
    pub fn paper_name(self) -> &'static str {
        match self {
            MvfaKey::Brain => "BrainMRI",
            MvfaKey::Liver => "LiverCT",
            MvfaKey::RetinaResc => "RESC",
            MvfaKey::RetinaOct2017 => "OCT17",
            MvfaKey::Chest => "ChestXray",
            MvfaKey::Histopathology => "HIS",
        }
    }

    /// The word inserted into the prompts (`REAL_NAME`, spec 3.1).
    pub fn organ_word(self) -> &'static str {
        match self {
            MvfaKey::Brain => "Brain",
            MvfaKey::Liver => "Liver",
            MvfaKey::RetinaResc | MvfaKey::RetinaOct2017 => "retinal OCT",
            MvfaKey::Chest => "Chest X-ray film",
            MvfaKey::Histopathology => "histopathological image",
        }
    }

    /// The reference's `CLASS_INDEX`; positive means pixel masks exist.
    pub fn class_index(self) -> i32 {
        match self {
            MvfaKey::Brain => 3,
            MvfaKey::Liver => 2,
            MvfaKey::RetinaResc => 1,
            MvfaKey::RetinaOct2017 => -1,
            MvfaKey::Chest => -2,
            MvfaKey::Histopathology => -3,
        }
    }

    /// Whether the dataset has `anomaly_mask/` folders (segmentation metrics apply).
    pub fn has_masks(self) -> bool {
        self.class_index() > 0
    }

    /// `<key>_AD`.
    pub fn dir_name(self) -> String {
        format!("{}_AD", self.code_key())
    }

    /// Accepts the code key (`Retina_RESC`), the folder name (`Retina_RESC_AD`) or the paper
    /// name (`RESC`), ignoring ASCII case.
    pub fn parse(name: &str) -> Result<Self> {
        let n = name.trim();
        let base = n
            .strip_suffix("_AD")
            .or_else(|| n.strip_suffix("_ad"))
            .unwrap_or(n);
        MvfaKey::ALL
            .into_iter()
            .find(|k| {
                k.code_key().eq_ignore_ascii_case(base) || k.paper_name().eq_ignore_ascii_case(n)
            })
            .ok_or_else(|| DatasetError::UnknownKey {
                name: name.to_string(),
                known: MvfaKey::ALL
                    .iter()
                    .map(|k| k.code_key())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl fmt::Display for MvfaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code_key())
    }
}

impl std::str::FromStr for MvfaKey {
    type Err = DatasetError;
    fn from_str(s: &str) -> Result<Self> {
        MvfaKey::parse(s)
    }
}

/// A split of the MVFA layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `valid/`: the few-shot pools.
    Valid,
    /// `test/`: evaluation.
    Test,
}

impl Split {
    /// The folder name of the split: `valid` or `test`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

// ------------------------------------------------------------------------------------------
// Folder listing.

fn is_dir(path: &Path) -> bool {
    path.is_dir()
}

fn require_dir(path: &Path, what: &str) -> Result<()> {
    if is_dir(path) {
        Ok(())
    } else {
        Err(DatasetError::MissingFolder {
            path: path.to_path_buf(),
            what: what.to_string(),
        })
    }
}

/// File names in `dir`, sorted by name (byte order, as Python sorts these names), skipping
/// sub-folders and hidden files (`.DS_Store` and the like), keeping those `keep` accepts.
fn list_files(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<String>> {
    let io = |source| DatasetError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        // Follow symlinks: a linked file counts as a file.
        if path.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(DatasetError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "file name is not valid UTF-8",
                ),
            });
        };
        if name.starts_with('.') || !keep(&path) {
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// The name without its image extension (`.png`, `.nii.gz`, `.dcm`, ...), to pair an image
/// with its mask by stem. Names without a known image extension are kept whole: DICOM files
/// are often called `IM0001` or `1.2.840.113619...`. Which files are images at all is
/// [`crate::io::input::is_supported_file`]'s decision.
pub fn image_stem(name: &str) -> &str {
    const EXTENSIONS: &[&str] = &[
        ".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom",
    ];
    let lower = name.to_ascii_lowercase();
    EXTENSIONS
        .iter()
        .find(|ext| lower.len() > ext.len() && lower.ends_with(*ext))
        .map_or(name, |ext| &name[..name.len() - ext.len()])
}

// ------------------------------------------------------------------------------------------
// The MVFA layout.

/// One dataset folder `<Key>_AD` of the MVFA layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MvfaDataset {
    /// Which of the six datasets this is.
    pub key: MvfaKey,
    /// The `<Key>_AD` folder.
    pub dir: PathBuf,
}

impl MvfaDataset {
    /// `root` is either the data folder holding `<Key>_AD` or that folder itself.
    pub fn open(root: &Path, key: MvfaKey) -> Result<Self> {
        let dir_name = key.dir_name();
        let dir = if root.file_name().and_then(|n| n.to_str()) == Some(dir_name.as_str()) {
            root.to_path_buf()
        } else {
            root.join(&dir_name)
        };
        if !is_dir(&dir) {
            return Err(DatasetError::NoDatasetFolder {
                root: root.to_path_buf(),
                dir_name,
            });
        }
        Ok(MvfaDataset { key, dir })
    }

    /// Opens a `<Key>_AD` folder, taking the key from its name.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let key = match name.strip_suffix("_AD") {
            Some(base) => MvfaKey::parse(base)?,
            None => {
                return Err(DatasetError::UnknownKey {
                    name: dir.display().to_string(),
                    known: MvfaKey::ALL
                        .iter()
                        .map(|k| k.dir_name())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        };
        MvfaDataset::open(dir, key)
    }

    fn class_dir(&self, split: Split, abnormal: bool) -> PathBuf {
        self.dir
            .join(split.dir_name())
            .join(if abnormal { "Ungood" } else { "good" })
    }

    /// `<dir>/<split>/good/img` or `<dir>/<split>/Ungood/img`.
    pub fn image_dir(&self, split: Split, abnormal: bool) -> PathBuf {
        self.class_dir(split, abnormal).join("img")
    }

    /// `<dir>/<split>/Ungood/anomaly_mask`.
    pub fn mask_dir(&self, split: Split) -> PathBuf {
        self.class_dir(split, true).join("anomaly_mask")
    }

    /// Lists a split: sorted `good/img`, then sorted `Ungood/img` (spec 6). Every file counts
    /// (the reference applies no extension filter), except sub-folders and hidden files. For
    /// segmentation datasets each abnormal image must have `anomaly_mask/<same name>` and every
    /// mask must have its image.
    pub fn split(&self, split: Split) -> Result<Dataset> {
        let mut items = Vec::new();
        for abnormal in [false, true] {
            let dir = self.image_dir(split, abnormal);
            let what = format!(
                "{} {} images of {}",
                split.dir_name(),
                if abnormal { "abnormal" } else { "normal" },
                self.key
            );
            require_dir(&dir, &what)?;
            let names = list_files(&dir, |_| true)?;
            if names.is_empty() {
                return Err(DatasetError::EmptyFolder { path: dir, what });
            }
            let masks = if abnormal && self.key.has_masks() {
                let mdir = self.mask_dir(split);
                require_dir(
                    &mdir,
                    &format!("{} masks of {}", split.dir_name(), self.key),
                )?;
                let mask_names = list_files(&mdir, |_| true)?;
                let image_set: std::collections::HashSet<&str> =
                    names.iter().map(String::as_str).collect();
                if let Some(orphan) = mask_names.iter().find(|m| !image_set.contains(m.as_str())) {
                    return Err(DatasetError::UnmatchedMask {
                        mask: mdir.join(orphan),
                        rule: "identical file name in img/",
                    });
                }
                let mask_set: std::collections::HashSet<&str> =
                    mask_names.iter().map(String::as_str).collect();
                if let Some(missing) = names.iter().find(|n| !mask_set.contains(n.as_str())) {
                    return Err(DatasetError::MissingMask {
                        image: dir.join(missing),
                        expected: mdir.join(missing),
                    });
                }
                Some(mdir)
            } else {
                None
            };
            items.extend(names.into_iter().map(|n| Sample {
                image: dir.join(&n),
                label: abnormal,
                mask: masks.as_ref().map(|m| m.join(&n)),
            }));
        }
        Ok(Dataset {
            items,
            organ_word: self.key.organ_word().to_string(),
            has_masks: self.key.has_masks(),
        })
    }

    /// The test split in the reference's order.
    pub fn test_set(&self) -> Result<Dataset> {
        self.split(Split::Test)
    }

    /// The few-shot pools (`valid/`).
    pub fn shot_pool(&self) -> Result<Dataset> {
        self.split(Split::Valid)
    }

    /// The first `k` names of each line of a shot list, looked up in `valid/` (in list
    /// order, as the reference uses them). A name missing from the pool is an error naming it.
    pub fn shots_from_list(&self, list: &ShotList, k: usize) -> Result<FewShot> {
        let pool = self.shot_pool()?;
        let pick = |names: &[String], abnormal: bool| -> Result<Vec<Sample>> {
            let what = if abnormal { "abnormal" } else { "normal" };
            if names.len() < k {
                return Err(DatasetError::NotEnoughShots {
                    needed: k,
                    available: names.len(),
                    what,
                    source_desc: format!("the {what} shot list"),
                });
            }
            let folder = self.image_dir(Split::Valid, abnormal);
            names[..k]
                .iter()
                .map(|name| {
                    pool.items
                        .iter()
                        .find(|s| {
                            s.label == abnormal
                                && s.image.file_name().and_then(|f| f.to_str())
                                    == Some(name.as_str())
                        })
                        .cloned()
                        .ok_or_else(|| DatasetError::ShotNotFound {
                            name: name.clone(),
                            folder: folder.clone(),
                        })
                })
                .collect()
        };
        Ok(FewShot {
            normal: pick(&list.normal, false)?,
            abnormal: pick(&list.abnormal, true)?,
            organ_word: pool.organ_word.clone(),
            has_masks: pool.has_masks,
        })
    }

    /// `k` normal and `k` abnormal shots drawn from `valid/` with [`draw`] (seeded,
    /// reproducible). The reference's `--iterate < 0` draws with Python's unseeded `random`,
    /// which cannot be reproduced; this is the deterministic counterpart.
    pub fn shots_random(&self, k: usize, seed: u64) -> Result<FewShot> {
        self.shot_pool()?
            .draw_shots(k, k, seed)
            .map(|(shots, _)| shots)
    }
}

// ------------------------------------------------------------------------------------------
// Shot lists.

/// One iterate of a `<k>-shot.txt` file: the `a-<i>:` (abnormal) and `n-<i>:` (normal) names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShotList {
    /// Names of the abnormal shots (`a-<i>:` line), in list order.
    pub abnormal: Vec<String>,
    /// Names of the normal shots (`n-<i>:` line), in list order.
    pub normal: Vec<String>,
}

/// The `a-<i>:` (abnormal) and `n-<i>:` (normal) lines of one iterate, as far as present.
type ShotLines = (Option<Vec<String>>, Option<Vec<String>>);

/// A parsed `<k>-shot.txt` (the reference's `dataset/fewshot_seed/<Key>/<k>-shot.txt`): lines
/// `a-<i>: name name ...` and `n-<i>: name name ...` for iterates i = 0, 1, ....
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShotFile {
    /// The file the list was read from (used in error messages).
    pub path: PathBuf,
    /// iterate → its two lines.
    lines: BTreeMap<u32, ShotLines>,
}

impl ShotFile {
    /// Reads and parses a shot file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses shot-file text; `path` is only used in error messages. Blank lines are skipped;
    /// any other line must start with `a-<i>:` or `n-<i>:`, and each tag may appear once.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut lines: BTreeMap<u32, ShotLines> = BTreeMap::new();
        for (no, line) in text.lines().enumerate() {
            let mut tokens = line.split_whitespace();
            let Some(tag) = tokens.next() else { continue };
            let err = |message: String| DatasetError::ShotFileSyntax {
                path: path.to_path_buf(),
                line: no + 1,
                message,
            };
            let parsed = tag
                .strip_suffix(':')
                .and_then(|t| t.split_once('-'))
                .and_then(|(kind, i)| Some((kind, i.parse::<u32>().ok()?)))
                .filter(|(kind, _)| *kind == "a" || *kind == "n");
            let Some((kind, iterate)) = parsed else {
                return Err(err(format!(
                    "expected a line starting with `a-<i>:` or `n-<i>:`, found {tag:?}"
                )));
            };
            let names: Vec<String> = tokens.map(str::to_string).collect();
            let entry = lines.entry(iterate).or_default();
            let slot = if kind == "a" {
                &mut entry.0
            } else {
                &mut entry.1
            };
            if slot.is_some() {
                return Err(err(format!("second {tag} line")));
            }
            *slot = Some(names);
        }
        Ok(ShotFile {
            path: path.to_path_buf(),
            lines,
        })
    }

    /// The iterates present, ascending.
    pub fn iterates(&self) -> Vec<u32> {
        self.lines.keys().copied().collect()
    }

    /// Both lines of one iterate; a missing `a-<i>:` or `n-<i>:` line is an error.
    pub fn list(&self, iterate: u32) -> Result<ShotList> {
        let missing = |kind: &str| DatasetError::ShotListMissing {
            path: self.path.clone(),
            tag: format!("{kind}-{iterate}:"),
        };
        let (a, n) = self.lines.get(&iterate).cloned().unwrap_or((None, None));
        Ok(ShotList {
            abnormal: a.ok_or_else(|| missing("a"))?,
            normal: n.ok_or_else(|| missing("n"))?,
        })
    }
}

/// Where the reference keeps a shot file: `<seed_root>/<Key>/<k>-shot.txt` (seed_root is the
/// reference's `dataset/fewshot_seed`).
pub fn shot_file_path(seed_root: &Path, key: MvfaKey, k: usize) -> PathBuf {
    seed_root.join(key.code_key()).join(format!("{k}-shot.txt"))
}

// ------------------------------------------------------------------------------------------
// Seeded draws.

/// Uniform in `0..n` (n > 0) by rejection on raw 64-bit words, without modulo bias. Written
/// out rather than `random_range`, whose algorithm `rand` may change between releases.
fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v % n;
        }
    }
}

/// A reproducible draw of `k` distinct indices from `0..n`, in draw order: the first `k` steps
/// of a Fisher–Yates shuffle driven by the seed's shot-draw stream ([`crate::rng`]).
pub fn draw(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let k = k.min(n);
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = crate::rng::seeded(seed, crate::rng::Stream::ShotDraw);
    for i in 0..k {
        let j = i + below(&mut rng, (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

// ------------------------------------------------------------------------------------------
// Dataset helpers.

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the dataset has no samples.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The normal samples (label `false`), in item order.
    pub fn normals(&self) -> impl Iterator<Item = &Sample> {
        self.items.iter().filter(|s| !s.label)
    }

    /// The abnormal samples (label `true`), in item order.
    pub fn abnormals(&self) -> impl Iterator<Item = &Sample> {
        self.items.iter().filter(|s| s.label)
    }

    /// (normal count, abnormal count).
    pub fn counts(&self) -> (usize, usize) {
        let abnormal = self.items.iter().filter(|s| s.label).count();
        (self.items.len() - abnormal, abnormal)
    }

    /// Image labels in item order (for the image-level AUC).
    pub fn labels(&self) -> Vec<bool> {
        self.items.iter().map(|s| s.label).collect()
    }

    /// Every sample as a shot (e.g. plain folders that are all training exemplars).
    pub fn to_few_shot(&self) -> FewShot {
        FewShot {
            normal: self.normals().cloned().collect(),
            abnormal: self.abnormals().cloned().collect(),
            organ_word: self.organ_word.clone(),
            has_masks: self.has_masks,
        }
    }

    /// Draws `k_normal` normal and `k_abnormal` abnormal shots with [`draw`] (the two classes
    /// from independent streams of `seed`, so changing one k leaves the other class's draw
    /// alone) and returns them with the rest of the data (held out for evaluation, in the
    /// original order). Too few images of a class is an error.
    pub fn draw_shots(
        &self,
        k_normal: usize,
        k_abnormal: usize,
        seed: u64,
    ) -> Result<(FewShot, Dataset)> {
        let normal_idx: Vec<usize> = (0..self.items.len())
            .filter(|&i| !self.items[i].label)
            .collect();
        let abnormal_idx: Vec<usize> = (0..self.items.len())
            .filter(|&i| self.items[i].label)
            .collect();
        let pick = |pool: &[usize], k: usize, stream: u64, what: &'static str| {
            if pool.len() < k {
                return Err(DatasetError::NotEnoughShots {
                    needed: k,
                    available: pool.len(),
                    what,
                    source_desc: "the dataset".to_string(),
                });
            }
            Ok(draw(pool.len(), k, seed ^ stream)
                .into_iter()
                .map(|j| pool[j])
                .collect::<Vec<_>>())
        };
        // Stream constants: ASCII "normal" / "abnorm".
        let n_sel = pick(&normal_idx, k_normal, 0x6e6f_726d_616c, "normal")?;
        let a_sel = pick(&abnormal_idx, k_abnormal, 0x6162_6e6f_726d, "abnormal")?;
        let mut taken = vec![false; self.items.len()];
        for &i in n_sel.iter().chain(&a_sel) {
            taken[i] = true;
        }
        let shots = FewShot {
            normal: n_sel.iter().map(|&i| self.items[i].clone()).collect(),
            abnormal: a_sel.iter().map(|&i| self.items[i].clone()).collect(),
            organ_word: self.organ_word.clone(),
            has_masks: self.has_masks,
        };
        let rest = Dataset {
            items: self
                .items
                .iter()
                .zip(&taken)
                .filter(|(_, t)| !**t)
                .map(|(s, _)| s.clone())
                .collect(),
            organ_word: self.organ_word.clone(),
            has_masks: self.has_masks,
        };
        Ok((shots, rest))
    }
}

// ------------------------------------------------------------------------------------------
// Plain folders.

/// Options for [`open_plain_folders`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainFolderOptions {
    /// Prompt word for this data (spec 3.1), e.g. `Brain`, `Chest X-ray film`.
    pub organ_word: String,
    /// With `masks/` present, accept abnormal images without a mask (image-level labels only).
    /// Off: such an image is an error naming it.
    pub allow_unmasked_abnormal: bool,
    /// Accept a missing or empty `abnormal/` folder (training from normal shots only).
    pub allow_normal_only: bool,
}

impl PlainFolderOptions {
    /// Strict defaults: masks required for every abnormal image when `masks/` exists, and an
    /// `abnormal/` folder with images required.
    pub fn new(organ_word: impl Into<String>) -> Self {
        PlainFolderOptions {
            organ_word: organ_word.into(),
            allow_unmasked_abnormal: false,
            allow_normal_only: false,
        }
    }
}

/// Opens `<root>/normal/`, `<root>/abnormal/` and optional `<root>/masks/`.
///
/// Images are the files [`crate::io::input::is_supported_file`] accepts (DICOM, raster,
/// NIfTI); other files and hidden files are skipped. Masks are matched to images by
/// file stem (`abnormal/case7.dcm` ↔ `masks/case7.png`), so with `masks/` present image stems
/// must be unique across both folders and so must mask stems. A mask may belong to a normal
/// image (it should then be empty). Order: sorted normal, then sorted abnormal.
pub fn open_plain_folders(root: &Path, opts: &PlainFolderOptions) -> Result<Dataset> {
    require_dir(root, "dataset root")?;
    let normal_dir = root.join("normal");
    let abnormal_dir = root.join("abnormal");
    let mask_dir = root.join("masks");

    let (normal, abnormal) = list_plain_images(&normal_dir, &abnormal_dir, opts)?;
    let has_masks = is_dir(&mask_dir);
    let mut items: Vec<Sample> = normal
        .iter()
        .map(|n| Sample {
            image: normal_dir.join(n),
            label: false,
            mask: None,
        })
        .chain(abnormal.iter().map(|n| Sample {
            image: abnormal_dir.join(n),
            label: true,
            mask: None,
        }))
        .collect();

    if has_masks {
        attach_masks_by_stem(&mut items, &mask_dir, opts)?;
    }

    Ok(Dataset {
        items,
        organ_word: opts.organ_word.clone(),
        has_masks,
    })
}

/// The sorted image names of `normal/` (required, not empty) and `abnormal/` (required and
/// not empty unless [`PlainFolderOptions::allow_normal_only`]).
fn list_plain_images(
    normal_dir: &Path,
    abnormal_dir: &Path,
    opts: &PlainFolderOptions,
) -> Result<(Vec<String>, Vec<String>)> {
    let keep = crate::io::input::is_supported_file;
    require_dir(normal_dir, "normal images")?;
    let normal = list_files(normal_dir, keep)?;
    if normal.is_empty() {
        return Err(DatasetError::EmptyFolder {
            path: normal_dir.to_path_buf(),
            what: "normal images".into(),
        });
    }
    let abnormal = if is_dir(abnormal_dir) {
        let names = list_files(abnormal_dir, keep)?;
        if names.is_empty() && !opts.allow_normal_only {
            return Err(DatasetError::EmptyFolder {
                path: abnormal_dir.to_path_buf(),
                what: "abnormal images".into(),
            });
        }
        names
    } else if opts.allow_normal_only {
        Vec::new()
    } else {
        return Err(DatasetError::MissingFolder {
            path: abnormal_dir.to_path_buf(),
            what: "abnormal images".into(),
        });
    };
    Ok((normal, abnormal))
}

/// Gives each of `items` the mask in `mask_dir` with its file stem. Stems must be unique
/// among the images and among the masks, every mask must match an image, and every abnormal
/// image needs a mask unless [`PlainFolderOptions::allow_unmasked_abnormal`].
fn attach_masks_by_stem(
    items: &mut [Sample],
    mask_dir: &Path,
    opts: &PlainFolderOptions,
) -> Result<()> {
    let stem_of = |p: &Path| -> String {
        let name = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        image_stem(name).to_string()
    };
    let mut by_stem: HashMap<String, usize> = HashMap::new();
    for (i, s) in items.iter().enumerate() {
        if let Some(&j) = by_stem.get(&stem_of(&s.image)) {
            return Err(DatasetError::DuplicateStem {
                first: items[j].image.clone(),
                second: s.image.clone(),
            });
        }
        by_stem.insert(stem_of(&s.image), i);
    }
    let mut mask_by_stem: HashMap<String, PathBuf> = HashMap::new();
    for m in list_files(mask_dir, crate::io::input::is_supported_file)? {
        let path = mask_dir.join(&m);
        let stem = stem_of(&path);
        if let Some(prev) = mask_by_stem.get(&stem) {
            return Err(DatasetError::DuplicateStem {
                first: prev.clone(),
                second: path,
            });
        }
        let Some(&i) = by_stem.get(&stem) else {
            return Err(DatasetError::UnmatchedMask {
                mask: path,
                rule: "file stem in normal/ or abnormal/",
            });
        };
        items[i].mask = Some(path.clone());
        mask_by_stem.insert(stem, path);
    }
    if !opts.allow_unmasked_abnormal
        && let Some(s) = items.iter().find(|s| s.label && s.mask.is_none())
    {
        return Err(DatasetError::MissingMask {
            image: s.image.clone(),
            expected: mask_dir.join(format!("{}.<ext>", stem_of(&s.image))),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(image_stem("a.png"), "a");
        assert_eq!(image_stem("A.JPEG"), "A");
        assert_eq!(image_stem("case.7.dcm"), "case.7");
        assert_eq!(image_stem("slice_3.nii.gz"), "slice_3");
        assert_eq!(image_stem("1.2.840.113619"), "1.2.840.113619");
        assert_eq!(image_stem("IM0001"), "IM0001");
    }

    #[test]
    fn draw_is_a_reproducible_partial_permutation() {
        let a = draw(50, 10, 42);
        assert_eq!(a, draw(50, 10, 42));
        assert_ne!(a, draw(50, 10, 43));
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 10);
        assert!(a.iter().all(|&i| i < 50));
        // A longer draw starts with the shorter one (shots grow consistently with k).
        assert_eq!(&draw(50, 20, 42)[..10], &a[..]);
        assert_eq!(draw(3, 10, 1).len(), 3);
    }
}
