//! `mvfa-studio score`: scores images, DICOM files or folders with a detector checkpoint and
//! writes, per frame, a 16-bit heatmap PNG and an overlay PNG (and optionally the raw float
//! maps), plus one `scores.csv`.
//!
//! ```text
//! mvfa-studio score --clip ViT-L-14-336.safetensors --checkpoint brain.safetensors \
//!     scans/ extra.dcm --out results/ [--raw [--raw-format npy]] [--opacity 0.5] [--dicom]
//! ```
//!
//! With `--dicom`, each overlay is also written as a DICOM Secondary Capture
//! (`<name>.sc.dcm`, all of one run in one new series) filed under its source's study, ready
//! for `pacs send`. These are de-identified by the PS3.15 basic profile unless `--identified`;
//! the retain options are explicit flags, and one run uses one key, so its UIDs and
//! pseudonyms are consistent.
//!
//! The heatmap is the calibrated fused map when the checkpoint is calibrated, else the
//! zero-shot map, resized from the model's 240 px square back to the frame's original size.
//! Unreadable inputs are reported (naming the file) and skipped; the command then exits
//! non-zero after scoring the rest. Every file is written atomically and `scores.csv` last,
//! so an interrupted run leaves no partial file and no CSV row without its images.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use burn::prelude::*;
use safetensors::{Dtype, tensor::TensorView};

use super::common::{self, ModelArgs, open_backbone};
use crate::io::dicom::looks_like_dicom;
use crate::io::export::{
    Anonymise, Dates, FloatMap, OverlayOptions, ScOptions, ScoreRow, SourceAttributes, new_uid,
    write_atomically, write_heatmap_png, write_overlay_png, write_scores_csv,
    write_secondary_capture,
};
use crate::io::input::collect_files;
use crate::io::model_input::MODEL_INPUT_SIZE;
use crate::io::output::{InputSet, OutputKind, check_output};
use crate::io::resample::Image8;
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::detector::{Detector, ImageResult, TaskKind};
use crate::workflow::{ScoredFrame, map_at_original, open_detector, score_file};

/// File format of `--raw` outputs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// One `<name>.raw.safetensors` per frame.
    Safetensors,
    /// A `<name>.raw/` folder per frame with one `<tensor>.npy` per map and score.
    Npy,
}

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Detector checkpoint written by `train` (adapters, normal shots, calibration), or a
    /// reference MVFA `.pth` (scored zero-shot, uncalibrated).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Images, DICOM files, NIfTI volumes or folders (searched recursively).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output folder (created if needed; files of the same name are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Also write the float32 maps of every level and branch, the fused map and the image
    /// scores (at model resolution, 240 x 240).
    #[arg(long)]
    pub raw: bool,
    /// Format of the --raw outputs.
    #[arg(long, value_enum, default_value = "safetensors")]
    pub raw_format: RawFormat,
    /// Weight of the heatmap colour in the overlays, 0..1.
    #[arg(long, default_value_t = 0.5)]
    pub opacity: f32,
    /// Map values at the two ends of the overlay colormap (default: each map's min and max).
    #[arg(long, value_name = "MIN,MAX", value_parser = parse_range)]
    pub range: Option<(f32, f32)>,
    /// Leave overlay pixels whose map value is below this uncoloured.
    #[arg(long, value_name = "VALUE")]
    pub hide_below: Option<f32>,
    /// Also write each overlay as a DICOM Secondary Capture, `<name>.sc.dcm`.
    #[arg(long)]
    pub dicom: bool,
    #[command(flatten)]
    pub deid: DeidArgs,
}

/// De-identification of the `--dicom` Secondary Captures (PS3.15 basic profile by default).
#[derive(clap::Args, Debug)]
pub struct DeidArgs {
    /// Keep the patient's identity and the source study (no de-identification).
    #[arg(long, requires = "dicom")]
    pub identified: bool,
    /// Study and content dates: removed, shifted back by whole days (the same shift for one
    /// patient under one key), or kept.
    #[arg(long, value_enum, default_value = "remove", requires = "dicom")]
    pub dates: DatesArg,
    /// Keep patient sex and age.
    #[arg(long, requires = "dicom")]
    pub retain_patient_characteristics: bool,
    /// Keep the source's station name and device serial number.
    #[arg(long, requires = "dicom")]
    pub retain_device_identity: bool,
    /// Environment variable holding the de-identification key: the same key gives the same
    /// pseudonyms and UIDs across runs. Default: a fresh key per run.
    #[arg(long, value_name = "VAR", requires = "dicom")]
    pub deid_key_env: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatesArg {
    Remove,
    Shift,
    Keep,
}

impl DeidArgs {
    fn anonymise(&self) -> anyhow::Result<Option<Anonymise>> {
        if self.identified {
            return Ok(None);
        }
        let mut a = Anonymise {
            dates: match self.dates {
                DatesArg::Remove => Dates::Remove,
                DatesArg::Shift => Dates::Shift,
                DatesArg::Keep => Dates::Keep,
            },
            retain_patient_characteristics: self.retain_patient_characteristics,
            retain_device_identity: self.retain_device_identity,
            ..Anonymise::default()
        };
        if let Some(var) = &self.deid_key_env {
            a.key = std::env::var(var)
                .with_context(|| format!("environment variable {var} is not set"))?;
        }
        Ok(Some(a))
    }
}

/// The Secondary Captures of one run: one series, one de-identification key.
struct ScExport {
    options: ScOptions,
    sources: HashMap<PathBuf, SourceAttributes>,
}

impl ScExport {
    fn new(args: &DeidArgs) -> anyhow::Result<Self> {
        Ok(ScExport {
            options: ScOptions {
                series_instance_uid: Some(new_uid()),
                instance_number: 0,
                anonymise: args.anonymise()?,
                ..ScOptions::default()
            },
            sources: HashMap::new(),
        })
    }

    /// Writes `<out>/<name>.sc.dcm` under the study of `source` (a DICOM file) or a new one.
    fn write(
        &mut self,
        out: &Path,
        name: &str,
        source: &Path,
        overlay: &Image8,
    ) -> anyhow::Result<()> {
        let attributes = match self.sources.get(source) {
            Some(a) => a.clone(),
            None => {
                let a = if looks_like_dicom(source) {
                    SourceAttributes::from_file(source)?
                } else {
                    SourceAttributes::none()
                };
                self.sources.insert(source.to_path_buf(), a.clone());
                a
            }
        };
        self.options.instance_number += 1;
        write_secondary_capture(
            &out.join(format!("{name}.sc.dcm")),
            overlay,
            &attributes,
            &self.options,
        )?;
        Ok(())
    }
}

fn parse_range(s: &str) -> Result<(f32, f32), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| "expected MIN,MAX".to_string())?;
    let parse = |v: &str| v.trim().parse::<f32>().map_err(|e| format!("{v:?}: {e}"));
    let (lo, hi) = (parse(a)?, parse(b)?);
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return Err(format!("need finite MIN < MAX, got {lo},{hi}"));
    }
    Ok((lo, hi))
}

/// CSV score columns (after `path`).
pub const CSV_COLUMNS: [&str; 4] = ["score", "zero_shot_score", "few_shot_score", "abnormal"];

pub fn run(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.opacity),
        "--opacity must be between 0 and 1, got {}",
        args.opacity
    );
    let mut inputs = InputSet::new(args.model.input_paths());
    inputs.add(&args.checkpoint);
    for input in &args.inputs {
        inputs.add(input);
    }
    check_output(&args.out, OutputKind::Folder, &inputs)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output folder", args.out.display()))?;
    let info = args.model.backend();
    crate::with_backend!(info, |B, device| score::<B>(&args, &device))
}

/// One frame's outputs, by file name.
struct Written {
    name: String,
    row: ScoreRow,
    /// The overlay image, until the Secondary Capture (if any) is written.
    overlay: Option<Image8>,
}

fn score<B: Backend>(args: &ScoreArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    let mut backbone = open_backbone::<B>(&args.model, device)?;
    let opened = open_detector(
        &mut backbone,
        &args.checkpoint,
        args.model.organ.as_deref(),
        TaskKind::Segmentation,
        args.model.batch,
    )?;
    if let Some(note) = &opened.note {
        eprintln!("note: {note}");
    }
    let detector = &opened.detector;
    let organ = opened.organ.as_str();
    eprintln!("{}", describe_detector(&args.checkpoint, detector, organ));

    // Inputs: each path on its own, so a missing one is listed and the rest still run.
    let mut failures: Vec<String> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut seen = HashSet::new();
    let out_dir = args.out.canonicalize().ok();
    for input in &args.inputs {
        let (found, errors) = collect_files(std::slice::from_ref(input));
        failures.extend(errors.iter().map(ToString::to_string));
        if found.is_empty() && errors.is_empty() {
            failures.push(format!(
                "{}: no supported image files in this folder",
                input.display()
            ));
        }
        // Earlier outputs found by walking a folder are not inputs; a file named on the
        // command line is scored wherever it lies.
        let walked = input.is_dir();
        files.extend(
            found
                .into_iter()
                .filter(|f| !walked || !in_folder(f, out_dir.as_deref()))
                .filter(|f| seen.insert(f.clone())),
        );
    }
    for f in &failures {
        eprintln!("error: {f}");
    }
    // No output file may replace one of the files being scored.
    let scored_inputs = InputSet::new(files.iter().map(PathBuf::as_path));

    let bar = common::progress_bar(files.len() as u64, "files");
    bar.set_message("scoring");
    let mut names = NameAllocator::default();
    let mut written: Vec<Written> = Vec::new();
    let mut sc_export = if args.dicom {
        Some(ScExport::new(&args.deid)?)
    } else {
        None
    };
    for file in &files {
        bar.inc(1);
        let scored = match score_file(detector, file, device) {
            Ok(scored) => scored,
            Err(e) => {
                bar.suspend(|| eprintln!("error: {e}"));
                failures.push(e.to_string());
                continue;
            }
        };
        for frame in &scored {
            let image = &frame.image;
            if let Some(note) = &image.note {
                bar.suspend(|| eprintln!("note: {}: {note}", image.label()));
            }
            let name = names.allocate(&image.source, image.frame, image.frames);
            let mut w =
                write_frame::<B>(args, detector, frame, name, organ, &scored_inputs, device)?;
            if let (Some(sc), Some(overlay)) = (sc_export.as_mut(), w.overlay.take()) {
                sc.write(&args.out, &w.name, &image.source, &overlay)?;
            }
            bar.suspend(|| println!("{}", summary_line(&w, &image.label())));
            written.push(w);
        }
    }
    bar.finish_and_clear();

    if !written.is_empty() {
        let csv = args.out.join("scores.csv");
        let rows: Vec<ScoreRow> = written.into_iter().map(|w| w.row).collect();
        write_scores_csv(&csv, &CSV_COLUMNS, &rows)?;
        println!("wrote {} scored frame(s) to {}", rows.len(), csv.display());
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} input(s) could not be scored:", failures.len());
        for f in &failures {
            eprintln!("  {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Whether `file` lies inside `folder` (both resolved; false when either cannot be).
fn in_folder(file: &Path, folder: Option<&Path>) -> bool {
    match (folder, file.canonicalize()) {
        (Some(folder), Ok(file)) => file.starts_with(folder),
        _ => false,
    }
}

fn describe_detector<B: Backend>(
    path: &Path,
    detector: &Detector<B, VisionTransformer<B>>,
    organ: &str,
) -> String {
    let bank = match detector.support_bank() {
        None => "no memory bank (zero-shot)".to_string(),
        Some(bank) => format!("memory bank from {} normal shot(s)", bank.groups()),
    };
    let cal = match detector.calibration() {
        Some(c) => format!(
            "calibrated ({}, threshold {:.3}); heatmaps show the calibrated fused map",
            c.method, c.threshold
        ),
        None => "not calibrated; heatmaps show the raw zero-shot map".to_string(),
    };
    format!(
        "detector: {} ({:?} task, organ word {organ:?}), {bank}, {cal}",
        path.display(),
        detector.task()
    )
}

fn summary_line(w: &Written, label: &str) -> String {
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    let flag = match w.row.scores[3] {
        Some(v) if v > 0.5 => "  ABNORMAL",
        _ => "",
    };
    format!(
        "{}: score {} (zero-shot {}, few-shot {}){flag}  <- {label}",
        w.name,
        fmt(w.row.scores[0]),
        fmt(w.row.scores[1]),
        fmt(w.row.scores[2]),
    )
}

/// Unique output names from input file names: the stem without image extensions, unsafe
/// characters replaced, `_f0003` for frames of multi-frame files, `-2`, `-3`... on clashes.
#[derive(Default)]
struct NameAllocator {
    used: HashSet<String>,
    next: HashMap<String, usize>,
}

impl NameAllocator {
    fn allocate(&mut self, path: &Path, frame: usize, frames: usize) -> String {
        let base = output_stem(path, frame, frames);
        if self.used.insert(base.clone()) {
            return base;
        }
        let n = self.next.entry(base.clone()).or_insert(2);
        loop {
            let candidate = format!("{base}-{n}");
            *n += 1;
            if self.used.insert(candidate.clone()) {
                return candidate;
            }
        }
    }
}

fn output_stem(path: &Path, frame: usize, frames: usize) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut out: String = crate::io::dataset::image_stem(&name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.insert(0, '_');
    }
    if frames > 1 {
        out.push_str(&format!("_f{frame:04}"));
    }
    out
}

/// Writes one frame's heatmap, overlay and (with `--raw`) raw maps; returns its CSV row.
fn write_frame<B: Backend>(
    args: &ScoreArgs,
    detector: &Detector<B, VisionTransformer<B>>,
    scored: &ScoredFrame,
    name: String,
    organ: &str,
    inputs: &InputSet,
    device: &B::Device,
) -> anyhow::Result<Written> {
    for suffix in [
        "heatmap.png",
        "overlay.png",
        "raw.safetensors",
        "raw",
        "sc.dcm",
    ] {
        inputs.ensure_not_input(&args.out.join(format!("{name}.{suffix}")))?;
    }
    let (frame, result) = (&scored.image, &scored.result);
    let s = detector.scorer().config().image_size;
    let map = result.fused_map.as_ref().unwrap_or(&result.raw.zero_map);
    let (w, h) = (frame.display.width, frame.display.height);
    let resized = map_at_original::<B>(map, s, w as usize, h as usize, device)?;
    let heat = FloatMap::new(w, h, resized)?;
    write_heatmap_png(&args.out.join(format!("{name}.heatmap.png")), &heat)?;
    let opts = OverlayOptions {
        opacity: args.opacity,
        range: args.range,
        threshold: args.hide_below,
        ..OverlayOptions::default()
    };
    let overlay = write_overlay_png(
        &args.out.join(format!("{name}.overlay.png")),
        &frame.display,
        &heat,
        &opts,
    )?;
    if args.raw {
        let tensors = raw_tensors(result);
        let meta = HashMap::from([
            ("source".to_string(), frame.label()),
            (
                "checkpoint".to_string(),
                args.checkpoint.display().to_string(),
            ),
            ("organ_word".to_string(), organ.to_string()),
            (
                "maps".to_string(),
                format!(
                    "{s}x{s} at model resolution (the whole frame resized to a square); levels \
                     summed give the branch map; fused_map and score are calibrated"
                ),
            ),
        ]);
        match args.raw_format {
            RawFormat::Safetensors => write_raw_safetensors(
                &args.out.join(format!("{name}.raw.safetensors")),
                &tensors,
                meta,
            )?,
            RawFormat::Npy => write_raw_npy(&args.out.join(format!("{name}.raw")), &tensors)?,
        }
    }
    let score = result.score.map(short);
    let decision = match (detector.calibration(), result.score) {
        (Some(cal), Some(v)) => Some(if v >= cal.threshold { 1.0 } else { 0.0 }),
        _ => None,
    };
    Ok(Written {
        name,
        row: ScoreRow {
            path: frame.label(),
            scores: vec![
                score,
                Some(short(result.raw.zero_image)),
                result.raw.few_image.map(short),
                decision,
            ],
        },
        overlay: args.dicom.then_some(overlay.image),
    })
}

/// The f64 whose shortest decimal is the f32's (`0.1f32` -> `0.1`, not `0.10000000149011612`),
/// so the CSV shows what was computed and reads back to the same f32.
fn short(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// A named float32 tensor of the raw outputs.
type RawTensor = (String, Vec<usize>, Vec<f32>);

/// Every map and score of one frame: per-level and summed zero-/few-shot maps (seg head),
/// the calibrated fused map, and the image scores (det head, per level and summed).
fn raw_tensors(result: &ImageResult) -> Vec<RawTensor> {
    let s = MODEL_INPUT_SIZE;
    let raw = &result.raw;
    let mut out: Vec<RawTensor> = vec![("zero_map".into(), vec![s, s], raw.zero_map.clone())];
    for (l, m) in raw.zero_map_levels.iter().enumerate() {
        out.push((format!("zero_map_level{l}"), vec![s, s], m.clone()));
    }
    if let Some(few) = &raw.few_map {
        out.push(("few_map".into(), vec![s, s], few.clone()));
    }
    for (l, m) in raw.few_map_levels.iter().enumerate() {
        out.push((format!("few_map_level{l}"), vec![s, s], m.clone()));
    }
    if let Some(fused) = &result.fused_map {
        out.push(("fused_map".into(), vec![s, s], fused.clone()));
    }
    out.push(("zero_image".into(), vec![1], vec![raw.zero_image]));
    out.push((
        "zero_image_levels".into(),
        vec![raw.zero_image_levels.len()],
        raw.zero_image_levels.clone(),
    ));
    if let Some(few) = raw.few_image {
        out.push(("few_image".into(), vec![1], vec![few]));
    }
    if let Some(score) = result.score {
        out.push(("score".into(), vec![1], vec![score]));
    }
    out
}

fn write_raw_safetensors(
    path: &Path,
    tensors: &[RawTensor],
    meta: HashMap<String, String>,
) -> anyhow::Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, shape, v)| {
            (
                k.clone(),
                shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, shape, b)| TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (k.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: building the raw tensors", path.display()))?;
    let data = safetensors::serialize(views, Some(meta))
        .with_context(|| format!("{}: serialising the raw tensors", path.display()))?;
    write_atomically(path, |w| Ok(w.write_all(&data)?))?;
    Ok(())
}

/// The bytes of a version 1.0 `.npy` file holding a little-endian float32 C-order array.
pub fn npy_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64
    // and ended by a newline (the layout numpy itself writes).
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * values.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn write_raw_npy(dir: &Path, tensors: &[RawTensor]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    for (name, shape, values) in tensors {
        let bytes = npy_bytes(shape, values);
        write_atomically(&dir.join(format!("{name}.npy")), |w| {
            Ok(w.write_all(&bytes)?)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_are_safe_and_unique() {
        let mut names = NameAllocator::default();
        assert_eq!(names.allocate(Path::new("/a/case 1.dcm"), 0, 1), "case_1");
        assert_eq!(names.allocate(Path::new("/b/case 1.DCM"), 0, 1), "case_1-2");
        assert_eq!(
            names.allocate(Path::new("/b/vol.nii.gz"), 3, 20),
            "vol_f0003"
        );
        assert_eq!(names.allocate(Path::new("/b/1.2.840.5"), 0, 1), "1.2.840.5");
        assert_eq!(names.allocate(Path::new("/b/.png"), 0, 1), "_.png");
    }

    #[test]
    fn npy_header_is_aligned_and_describes_the_array() {
        let bytes = npy_bytes(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + header_len + 24);
        assert_eq!(
            &bytes[10 + header_len..10 + header_len + 4],
            &1.0f32.to_le_bytes()
        );
        let one = npy_bytes(&[1], &[0.5]);
        assert!(one.windows(4).any(|w| w == b"(1,)"));
    }

    #[test]
    fn range_parses_two_ordered_numbers() {
        assert_eq!(parse_range("0,3.5"), Ok((0.0, 3.5)));
        assert!(parse_range("3,1").is_err());
        assert!(parse_range("1").is_err());
    }
}
