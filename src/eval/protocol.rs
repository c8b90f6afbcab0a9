//! Evaluation protocols of the MVFA benchmark (spec 4.3, 4.4 and 6): how the scored test
//! images of one dataset become an image-level AUC ("AC") and a pooled pixel-level AUC ("AS").
//!
//! - [`Protocol::FewShot`] with [`Fusion::Calibrated`]: each image's calibrated fused map and
//!   image score from the detector's stored single-image calibration
//!   ([`crate::model::mvfa::calibration`]). Nothing depends on the other test images.
//! - [`Protocol::FewShot`] with [`Fusion::Paper`]: the reference's test scripts. Each branch is
//!   min-max normalised over the **whole test set** (one global min and max over all images and
//!   pixels for maps, over all images for image scores), then fused 0.5 / 0.5. Image score of a
//!   segmentation dataset = max of the fused map (the det head is not used, spec Q8); of a
//!   classification dataset = 0.5 N(s_zero) + 0.5 N(s_few) of the det head.
//! - [`Protocol::ZeroShot`]: no memory bank; image score = s_zero (det head), pixel map = the
//!   zero-shot map (seg head). The reference min-max normalises both over the test set, a
//!   global increasing map that leaves every AUC unchanged, so the raw values are ranked.
//!
//! Pixel ground truth is the mask at model resolution (nearest resize, > 0.5, spec 6); normal
//! images count with all-zero masks. Pixel AUCs are pooled with [`PixelAucAccumulator`]
//! (exact, bounded memory).
//!
//! The paper fusion needs the global ranges before any fused value exists, so the raw maps
//! are spilled to an unlinked temporary file on the first pass (two f32 maps and one mask
//! byte per pixel: 0.5 MB per 240 px image) and fused on the way back in [`Evaluation::finish`].
//! Memory stays bounded by one image; the disk use is temporary.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use serde::Serialize;

use safetensors::Dtype;

use crate::eval::auc::{AucError, PixelAucAccumulator, roc_auc};
use crate::io::dataset::MvfaKey;
use crate::model::mvfa::detector::{ImageResult, TaskKind};
use crate::weights::format::f32_from_le_bytes;

/// How the two few-shot branches are normalised and fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// The stored single-image calibration.
    Calibrated,
    /// Test-set min-max per branch, 0.5 / 0.5 (the reference).
    Paper,
}

/// Which benchmark protocol produced the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Adapters fitted on k shots of the target dataset, with the few-shot memory bank.
    FewShot(Fusion),
    /// Adapters trained elsewhere, no memory bank.
    ZeroShot,
}

impl Protocol {
    /// Short name for reports: `few-shot/calibrated`, `few-shot/paper`, `zero-shot`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::FewShot(Fusion::Calibrated) => "few-shot/calibrated",
            Protocol::FewShot(Fusion::Paper) => "few-shot/paper",
            Protocol::ZeroShot => "zero-shot",
        }
    }
}

/// Why an evaluation could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The AUC could not be computed (e.g. only one class present).
    #[error(transparent)]
    Auc(#[from] AucError),
    #[error("image {index} has no calibrated score (the detector is not calibrated)")]
    /// The calibrated protocol was asked for, but an image has no calibrated score.
    NotCalibrated {
        /// Index of the image in the order it was added.
        index: usize,
    },
    #[error("image {index} has no few-shot branch (the detector has no memory bank)")]
    /// A few-shot protocol was asked for, but an image has no few-shot branch.
    NoMemoryBank {
        /// Index of the image in the order it was added.
        index: usize,
    },
    #[error("abnormal image {index} has no pixel mask, so the pixel AUC is undefined")]
    /// Pixel metrics were asked for, but an abnormal image has no mask.
    MissingMask {
        /// Index of the image in the order it was added.
        index: usize,
    },
    /// An image's map and its mask have different sizes.
    #[error("image {index}: map has {map} values but the mask has {mask}")]
    MaskSize {
        /// Index of the image in the order it was added.
        index: usize,
        /// Values in the map.
        map: usize,
        /// Values in the mask.
        mask: usize,
    },
    /// An image's map differs in size from the maps before it.
    #[error("image {index}: map has {got} values, earlier maps had {expected}")]
    MapSize {
        /// Index of the image in the order it was added.
        index: usize,
        /// Values in this map.
        got: usize,
        /// Values in the earlier maps.
        expected: usize,
    },
    /// The temporary file of raw maps (paper fusion) could not be created, written or read.
    #[error("temporary map file {path}: {source}")]
    Spill {
        /// The temporary directory the unlinked file lives in.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The metrics of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Image-level ROC AUC in [0, 1].
    pub image_auc: f64,
    /// Pooled pixel-level ROC AUC in [0, 1], when pixel metrics were asked for.
    pub pixel_auc: Option<f64>,
    /// Test images scored.
    pub images: usize,
    /// Normal test images.
    pub normal: usize,
    /// Abnormal test images.
    pub abnormal: usize,
}

/// Raw maps of the first pass of the paper protocol, in an anonymous temporary file
/// (`tempfile`: removed by the OS whatever happens, even on a crash).
struct Spill {
    path: PathBuf,
    writer: BufWriter<File>,
    records: usize,
}

impl Spill {
    fn create() -> Result<Self, EvalError> {
        let path = std::env::temp_dir();
        let file = tempfile::tempfile().map_err(|source| EvalError::Spill {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            writer: BufWriter::with_capacity(1 << 20, file),
            records: 0,
        })
    }

    fn io(&self, source: std::io::Error) -> EvalError {
        EvalError::Spill {
            path: self.path.clone(),
            source,
        }
    }

    fn push(&mut self, zero: &[f32], few: &[f32], mask: Option<&[bool]>) -> Result<(), EvalError> {
        let mut bytes = Vec::with_capacity(zero.len() * 9);
        for v in zero.iter().chain(few) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        match mask {
            Some(m) => bytes.extend(m.iter().map(|&b| b as u8)),
            None => bytes.resize(bytes.len() + zero.len(), 0),
        }
        self.writer.write_all(&bytes).map_err(|e| self.io(e))?;
        self.records += 1;
        Ok(())
    }

    /// Calls `each(zero, few, mask)` for every record, in order.
    fn replay(
        mut self,
        len: usize,
        mut each: impl FnMut(&[f32], &[f32], &[bool]) -> Result<(), EvalError>,
    ) -> Result<(), EvalError> {
        let path = self.path.clone();
        let io = |source| EvalError::Spill {
            path: path.clone(),
            source,
        };
        self.writer.flush().map_err(io)?;
        let file = self.writer.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut bytes = vec![0u8; len * 9];
        let mut zero = vec![0f32; len];
        let mut few = vec![0f32; len];
        let mut mask = vec![false; len];
        for _ in 0..self.records {
            reader.read_exact(&mut bytes).map_err(io)?;
            let (floats, mask_bytes) = bytes.split_at(len * 8);
            let values = f32_from_le_bytes(Dtype::F32, floats).expect("f32 is a float type");
            zero.copy_from_slice(&values[..len]);
            few.copy_from_slice(&values[len..]);
            for (m, &b) in mask.iter_mut().zip(mask_bytes) {
                *m = b != 0;
            }
            each(&zero, &few, &mask)?;
        }
        Ok(())
    }
}

/// `(v - lo) / (hi - lo)` in f32 as numpy computes it; values unchanged for a constant
/// branch, like [`crate::model::mvfa::calibration::min_max`].
fn normalise(v: f32, lo: f32, hi: f32) -> f32 {
    if hi > lo { (v - lo) / (hi - lo) } else { v }
}

fn range_of(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn widen(range: &mut (f32, f32), values: &[f32]) {
    let (lo, hi) = range_of(values);
    range.0 = range.0.min(lo);
    range.1 = range.1.max(hi);
}

/// The paper's fused pixel: `0.5 N(zero) + 0.5 N(few)`.
fn paper_fuse(zero: &[f32], few: &[f32], zr: (f32, f32), fr: (f32, f32), out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        zero.iter()
            .zip(few)
            .map(|(&z, &f)| 0.5 * normalise(z, zr.0, zr.1) + 0.5 * normalise(f, fr.0, fr.1)),
    );
}

/// Streams the scored test images of one dataset into its metrics (see the module docs).
///
/// Call [`add`](Self::add) once per test image, in any order, then [`finish`](Self::finish).
pub struct Evaluation {
    protocol: Protocol,
    task: TaskKind,
    pixel_metrics: bool,
    map_len: Option<usize>,
    labels: Vec<bool>,
    /// Final image scores (calibrated and zero-shot protocols, and the paper's
    /// segmentation scores once fused).
    scores: Vec<f32>,
    /// Paper protocol, classification: the raw det-head branch scores.
    zero_scores: Vec<f32>,
    few_scores: Vec<f32>,
    pixels: PixelAucAccumulator,
    spill: Option<Spill>,
    zero_range: (f32, f32),
    few_range: (f32, f32),
}

impl Evaluation {
    /// An evaluation of `protocol` for a dataset of `task` kind; `pixel_metrics` asks for the
    /// pooled pixel AUC (segmentation datasets).
    pub fn new(protocol: Protocol, task: TaskKind, pixel_metrics: bool) -> Self {
        Self {
            protocol,
            task,
            pixel_metrics,
            map_len: None,
            labels: Vec::new(),
            scores: Vec::new(),
            zero_scores: Vec::new(),
            few_scores: Vec::new(),
            pixels: PixelAucAccumulator::new(),
            spill: None,
            zero_range: (f32::INFINITY, f32::NEG_INFINITY),
            few_range: (f32::INFINITY, f32::NEG_INFINITY),
        }
    }

    /// Images added so far.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True before the first image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pools one map: with its mask, or as all-normal pixels.
    fn add_pixels(&mut self, map: &[f32], mask: Option<&[bool]>) -> Result<(), EvalError> {
        match mask {
            Some(mask) => self.pixels.add(map, mask)?,
            None => self.pixels.add_uniform(map, false)?,
        }
        Ok(())
    }

    /// Adds one scored test image: its image `label` (`true` = abnormal) and, for pixel
    /// metrics, its mask at model resolution (`None` = no lesion: only for normal images).
    pub fn add(
        &mut self,
        result: &ImageResult,
        label: bool,
        mask: Option<&[bool]>,
    ) -> Result<(), EvalError> {
        let index = self.labels.len();
        let raw = &result.raw;
        let len = raw.zero_map.len();
        match self.map_len {
            Some(expected) if expected != len => {
                return Err(EvalError::MapSize {
                    index,
                    got: len,
                    expected,
                });
            }
            _ => self.map_len = Some(len),
        }
        if self.pixel_metrics {
            match mask {
                Some(m) if m.len() != len => {
                    return Err(EvalError::MaskSize {
                        index,
                        map: len,
                        mask: m.len(),
                    });
                }
                None if label => return Err(EvalError::MissingMask { index }),
                _ => {}
            }
        }
        match self.protocol {
            Protocol::ZeroShot => {
                if self.pixel_metrics {
                    self.add_pixels(&raw.zero_map, mask)?;
                }
                self.scores.push(raw.zero_image);
            }
            Protocol::FewShot(Fusion::Calibrated) => {
                let (Some(score), Some(fused)) = (result.score, result.fused_map.as_ref()) else {
                    return Err(EvalError::NotCalibrated { index });
                };
                if self.pixel_metrics {
                    self.add_pixels(fused, mask)?;
                }
                self.scores.push(score);
            }
            Protocol::FewShot(Fusion::Paper) => {
                let Some(few) = raw.few_map.as_ref() else {
                    return Err(EvalError::NoMemoryBank { index });
                };
                if self.task == TaskKind::Segmentation || self.pixel_metrics {
                    if self.spill.is_none() {
                        self.spill = Some(Spill::create()?);
                    }
                    widen(&mut self.zero_range, &raw.zero_map);
                    widen(&mut self.few_range, few);
                    let mask = if self.pixel_metrics { mask } else { None };
                    self.spill
                        .as_mut()
                        .expect("created above")
                        .push(&raw.zero_map, few, mask)?;
                }
                if self.task == TaskKind::Classification {
                    let Some(few_image) = raw.few_image else {
                        return Err(EvalError::NoMemoryBank { index });
                    };
                    self.zero_scores.push(raw.zero_image);
                    self.few_scores.push(few_image);
                }
            }
        }
        self.labels.push(label);
        Ok(())
    }

    /// The image AUC and (if asked for) the pooled pixel AUC.
    pub fn finish(mut self) -> Result<Metrics, EvalError> {
        if self.protocol == Protocol::FewShot(Fusion::Paper) {
            let (zr, fr) = (self.zero_range, self.few_range);
            let segmentation = self.task == TaskKind::Segmentation;
            if let Some(spill) = self.spill.take() {
                let len = self.map_len.unwrap_or(0);
                let mut fused = Vec::with_capacity(len);
                let mut maxima = Vec::new();
                let pixel_metrics = self.pixel_metrics;
                let labels = &self.labels;
                let pixels = &mut self.pixels;
                let mut index = 0;
                spill.replay(len, |zero, few, mask| {
                    paper_fuse(zero, few, zr, fr, &mut fused);
                    if segmentation {
                        maxima.push(fused.iter().copied().fold(f32::NEG_INFINITY, f32::max));
                    }
                    if pixel_metrics {
                        if labels[index] {
                            pixels.add(&fused, mask)?;
                        } else {
                            pixels.add_uniform(&fused, false)?;
                        }
                    }
                    index += 1;
                    Ok(())
                })?;
                if segmentation {
                    self.scores = maxima;
                }
            }
            if !segmentation {
                let (zr, fr) = (range_of(&self.zero_scores), range_of(&self.few_scores));
                self.scores = self
                    .zero_scores
                    .iter()
                    .zip(&self.few_scores)
                    .map(|(&z, &f)| 0.5 * normalise(z, zr.0, zr.1) + 0.5 * normalise(f, fr.0, fr.1))
                    .collect();
            }
        }
        let abnormal = self.labels.iter().filter(|&&l| l).count();
        let image_auc = roc_auc(&self.scores, &self.labels)?;
        let pixel_auc = if self.pixel_metrics {
            Some(self.pixels.auc()?)
        } else {
            None
        };
        Ok(Metrics {
            image_auc,
            pixel_auc,
            images: self.labels.len(),
            normal: self.labels.len() - abnormal,
            abnormal,
        })
    }
}

/// Which metric a table column shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Image AUC ("AC").
    Image,
    /// Pixel AUC ("AS").
    Pixel,
}

/// The columns of the paper's tables (Table 1, spec 11.1), in order.
pub const PAPER_COLUMNS: [(MvfaKey, Level); 9] = [
    (MvfaKey::Histopathology, Level::Image),
    (MvfaKey::Chest, Level::Image),
    (MvfaKey::RetinaOct2017, Level::Image),
    (MvfaKey::Brain, Level::Image),
    (MvfaKey::Brain, Level::Pixel),
    (MvfaKey::Liver, Level::Image),
    (MvfaKey::Liver, Level::Pixel),
    (MvfaKey::RetinaResc, Level::Image),
    (MvfaKey::RetinaResc, Level::Pixel),
];

/// Column heading in the paper's style: `HIS AC`, `Brain AS`, ...
pub fn column_name(key: MvfaKey, level: Level) -> String {
    let name = match key {
        MvfaKey::Histopathology => "HIS",
        MvfaKey::Chest => "Chest",
        MvfaKey::RetinaOct2017 => "OCT17",
        MvfaKey::Brain => "Brain",
        MvfaKey::Liver => "Liver",
        MvfaKey::RetinaResc => "RESC",
    };
    let level = match level {
        Level::Image => "AC",
        Level::Pixel => "AS",
    };
    format!("{name} {level}")
}

/// The AUC table in the paper's column order, as percentages with two decimals, `-` where a
/// dataset was not run (or has no pixel metric). Two lines: headings and values, columns
/// right-aligned to the widest entry.
/// The paper's few-shot k = 4 numbers for MVFA (Table 1, AUC %), in [`PAPER_COLUMNS`] order.
pub const PAPER_K4: [f64; 9] = [
    82.71, 81.95, 99.38, 92.44, 97.30, 81.18, 99.73, 96.18, 98.97,
];

/// Our results beside the paper's k = 4 row, with the image (AC) and pixel (AS) averages over
/// the datasets this run has.
pub fn format_paper_comparison(results: &BTreeMap<MvfaKey, Metrics>) -> String {
    let ours: Vec<Option<f64>> = PAPER_COLUMNS
        .iter()
        .map(|&(key, level)| {
            results.get(&key).and_then(|m| match level {
                Level::Image => Some(100.0 * m.image_auc),
                Level::Pixel => m.pixel_auc.map(|p| 100.0 * p),
            })
        })
        .collect();
    let average = |values: &[Option<f64>], level: Level| {
        let picked: Vec<f64> = PAPER_COLUMNS
            .iter()
            .zip(values)
            .filter(|((_, l), v)| *l == level && v.is_some())
            .filter_map(|(_, v)| *v)
            .collect();
        (!picked.is_empty()).then(|| picked.iter().sum::<f64>() / picked.len() as f64)
    };
    // The paper's averages over the same datasets as ours, for a fair comparison.
    let paper: Vec<Option<f64>> = PAPER_K4
        .iter()
        .zip(&ours)
        .map(|(&p, o)| o.map(|_| p))
        .collect();
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    let mut headers: Vec<String> = vec!["".into()];
    headers.extend(PAPER_COLUMNS.iter().map(|&(k, l)| column_name(k, l)));
    headers.extend(["avg AC".into(), "avg AS".into()]);
    let row = |name: &str, values: &[Option<f64>]| {
        let mut r = vec![name.to_string()];
        r.extend(values.iter().map(|&v| cell(v)));
        r.push(cell(average(values, Level::Image)));
        r.push(cell(average(values, Level::Pixel)));
        r
    };
    let paper_all: Vec<Option<f64>> = PAPER_K4.iter().map(|&v| Some(v)).collect();
    let rows = [
        headers,
        row("paper, all datasets", &paper_all),
        row("paper, these datasets", &paper),
        row("this run", &ours),
    ];
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, &w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
                + "\n"
        })
        .collect()
}

/// Our results as one row under the paper's column headings.
pub fn format_table(results: &BTreeMap<MvfaKey, Metrics>) -> String {
    let cells: Vec<(String, String)> = PAPER_COLUMNS
        .iter()
        .map(|&(key, level)| {
            let value = results.get(&key).and_then(|m| match level {
                Level::Image => Some(m.image_auc),
                Level::Pixel => m.pixel_auc,
            });
            (
                column_name(key, level),
                value.map_or_else(|| "-".to_string(), |v| format!("{:.2}", 100.0 * v)),
            )
        })
        .collect();
    let widths: Vec<usize> = cells.iter().map(|(h, v)| h.len().max(v.len())).collect();
    let line = |pick: &dyn Fn(&(String, String)) -> &String| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{:>w$}", pick(c)))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    format!("{}\n{}\n", line(&|c| &c.0), line(&|c| &c.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mvfa::calibration::min_max;
    use crate::model::mvfa::detector::RawResult;

    /// A deterministic pseudo-random stream in [0, 1).
    fn stream(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32) / (1u64 << 24) as f32
        }
    }

    const LEN: usize = 36;

    /// Images whose maps are noise, with abnormal images brighter inside a square "lesion".
    fn images(n: usize, seed: u64) -> Vec<(ImageResult, bool, Vec<bool>)> {
        let mut r = stream(seed);
        (0..n)
            .map(|i| {
                let label = i % 3 == 0;
                let mask: Vec<bool> = (0..LEN)
                    .map(|p| label && (p % 6) < 3 && (p / 6) < 3)
                    .collect();
                let map = |scale: f32, r: &mut dyn FnMut() -> f32| -> Vec<f32> {
                    mask.iter()
                        .map(|&m| scale * (r() + if m { 0.6 } else { 0.0 }))
                        .collect()
                };
                let zero_map = map(4.0, &mut r);
                let few_map = map(0.3, &mut r);
                let raw = RawResult {
                    zero_image: r() + if label { 0.3 } else { 0.0 },
                    zero_image_levels: vec![],
                    few_image: Some(0.1 * r() + if label { 0.02 } else { 0.0 }),
                    zero_map: zero_map.clone(),
                    zero_map_levels: vec![],
                    few_map: Some(few_map.clone()),
                    few_map_levels: vec![],
                };
                let fused: Vec<f32> = zero_map.iter().zip(&few_map).map(|(z, f)| z + f).collect();
                let result = ImageResult {
                    raw,
                    score: Some(fused.iter().copied().fold(f32::MIN, f32::max)),
                    fused_map: Some(fused),
                };
                (result, label, mask)
            })
            .collect()
    }

    fn run(protocol: Protocol, task: TaskKind, data: &[(ImageResult, bool, Vec<bool>)]) -> Metrics {
        let mut eval = Evaluation::new(protocol, task, task == TaskKind::Segmentation);
        for (result, label, mask) in data {
            let mask = label.then_some(mask.as_slice());
            eval.add(result, *label, mask).unwrap();
        }
        eval.finish().unwrap()
    }

    #[test]
    fn paper_segmentation_matches_in_memory_min_max() {
        let data = images(17, 3);
        let got = run(
            Protocol::FewShot(Fusion::Paper),
            TaskKind::Segmentation,
            &data,
        );
        // Direct computation: global min-max of each branch over all pixels of all images.
        let all_zero: Vec<f32> = data.iter().flat_map(|d| d.0.raw.zero_map.clone()).collect();
        let all_few: Vec<f32> = data
            .iter()
            .flat_map(|d| d.0.raw.few_map.clone().unwrap())
            .collect();
        let fused: Vec<f32> = min_max(&all_zero)
            .iter()
            .zip(min_max(&all_few))
            .map(|(z, f)| 0.5 * z + 0.5 * f)
            .collect();
        let maxima: Vec<f32> = fused
            .chunks(LEN)
            .map(|c| c.iter().copied().fold(f32::MIN, f32::max))
            .collect();
        let labels: Vec<bool> = data.iter().map(|d| d.1).collect();
        let pixel_labels: Vec<bool> = data.iter().flat_map(|d| d.2.clone()).collect();
        assert_eq!(got.image_auc, roc_auc(&maxima, &labels).unwrap());
        assert_eq!(got.pixel_auc, Some(roc_auc(&fused, &pixel_labels).unwrap()));
        assert_eq!((got.images, got.normal, got.abnormal), (17, 11, 6));
    }

    #[test]
    fn paper_classification_fuses_normalised_det_scores() {
        let data = images(12, 9);
        let got = run(
            Protocol::FewShot(Fusion::Paper),
            TaskKind::Classification,
            &data,
        );
        let zero: Vec<f32> = data.iter().map(|d| d.0.raw.zero_image).collect();
        let few: Vec<f32> = data.iter().map(|d| d.0.raw.few_image.unwrap()).collect();
        let fused: Vec<f32> = min_max(&zero)
            .iter()
            .zip(min_max(&few))
            .map(|(z, f)| 0.5 * z + 0.5 * f)
            .collect();
        let labels: Vec<bool> = data.iter().map(|d| d.1).collect();
        assert_eq!(got.image_auc, roc_auc(&fused, &labels).unwrap());
        assert_eq!(got.pixel_auc, None);
    }

    #[test]
    fn calibrated_and_zero_shot_rank_their_own_outputs() {
        let data = images(10, 4);
        let labels: Vec<bool> = data.iter().map(|d| d.1).collect();
        let pixel_labels: Vec<bool> = data.iter().flat_map(|d| d.2.clone()).collect();

        let got = run(
            Protocol::FewShot(Fusion::Calibrated),
            TaskKind::Segmentation,
            &data,
        );
        let scores: Vec<f32> = data.iter().map(|d| d.0.score.unwrap()).collect();
        let maps: Vec<f32> = data
            .iter()
            .flat_map(|d| d.0.fused_map.clone().unwrap())
            .collect();
        assert_eq!(got.image_auc, roc_auc(&scores, &labels).unwrap());
        assert_eq!(got.pixel_auc, Some(roc_auc(&maps, &pixel_labels).unwrap()));

        let got = run(Protocol::ZeroShot, TaskKind::Segmentation, &data);
        let scores: Vec<f32> = data.iter().map(|d| d.0.raw.zero_image).collect();
        let maps: Vec<f32> = data.iter().flat_map(|d| d.0.raw.zero_map.clone()).collect();
        assert_eq!(got.image_auc, roc_auc(&scores, &labels).unwrap());
        assert_eq!(got.pixel_auc, Some(roc_auc(&maps, &pixel_labels).unwrap()));
    }

    #[test]
    fn errors_name_the_problem() {
        let data = images(3, 1);
        let mut eval = Evaluation::new(Protocol::ZeroShot, TaskKind::Segmentation, true);
        let err = eval.add(&data[0].0, true, None).unwrap_err();
        assert!(matches!(err, EvalError::MissingMask { index: 0 }), "{err}");

        let mut uncalibrated = data[1].0.clone();
        uncalibrated.score = None;
        let mut eval = Evaluation::new(
            Protocol::FewShot(Fusion::Calibrated),
            TaskKind::Segmentation,
            false,
        );
        assert!(matches!(
            eval.add(&uncalibrated, false, None),
            Err(EvalError::NotCalibrated { index: 0 })
        ));

        // One class only: the AUC error says so.
        let mut eval = Evaluation::new(Protocol::ZeroShot, TaskKind::Classification, false);
        eval.add(&data[1].0, false, None).unwrap();
        let err = eval.finish().unwrap_err().to_string();
        assert!(err.contains("both classes"), "{err}");
    }

    #[test]
    fn table_follows_paper_order_with_dashes() {
        let mut results = BTreeMap::new();
        results.insert(
            MvfaKey::Brain,
            Metrics {
                image_auc: 0.9244,
                pixel_auc: Some(0.973),
                images: 10,
                normal: 5,
                abnormal: 5,
            },
        );
        results.insert(
            MvfaKey::Chest,
            Metrics {
                image_auc: 0.8195,
                pixel_auc: None,
                images: 10,
                normal: 5,
                abnormal: 5,
            },
        );
        let table = format_table(&results);
        let mut lines = table.lines();
        let head: Vec<&str> = lines.next().unwrap().split('|').map(str::trim).collect();
        let values: Vec<&str> = lines.next().unwrap().split('|').map(str::trim).collect();
        assert_eq!(
            head,
            [
                "HIS AC", "Chest AC", "OCT17 AC", "Brain AC", "Brain AS", "Liver AC", "Liver AS",
                "RESC AC", "RESC AS"
            ]
        );
        assert_eq!(
            values,
            ["-", "81.95", "-", "92.44", "97.30", "-", "-", "-", "-"]
        );
    }
}
