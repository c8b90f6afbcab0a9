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
//! for `pacs send`, and the rows of `scores.csv` are also written as one DICOM Basic Text SR
//! per source study (`results-sr-<n>.dcm`, see [`crate::io::export::dicom_sr`]), filed in that
//! study next to the Secondary Captures. These are de-identified by the PS3.15 basic profile
//! unless `--identified`; the retain options are explicit flags, and one run uses one key, so
//! its UIDs and pseudonyms are consistent and the SRs land in the same de-identified studies
//! as their Secondary Captures.
//!
//! `series.csv` goes next to `scores.csv`: one row per series (a DICOM series in slice order
//! by geometry, a NIfTI volume, or the other images of one folder) with its series score, max
//! and top-3 mean, peak slice and the slices at or above the threshold, most anomalous first
//! (see [`crate::workflow::series`]).
//!
//! The heatmap is the calibrated fused map when the checkpoint is calibrated, else the
//! zero-shot map (the mean of its levels), resized from the model's 240 px square back to the
//! frame's original size. The overlay colours are on that map's fixed scale (0..8 normal
//! spreads calibrated, 0..1 uncalibrated), the same for every image, unless `--range` says
//! otherwise. The files are written by [`crate::workflow::Exporter`], as the app's export does.
//! Unreadable inputs are reported (naming the file) and skipped; the command then exits
//! non-zero after scoring the rest. Every file is written atomically and `scores.csv` last,
//! so an interrupted run leaves no partial file and no CSV row without its images.
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::common::{self, ArgValueError, ModelArgs};
use crate::io::export::Dates;
use crate::io::export::atomic::write_atomically;
use crate::io::input::collect_inputs;
use crate::io::output::{InputSet, OutputKind, check_output};
use crate::workflow::{Branch, MapLayer};
use crate::workflow::{
    DicomExport, ExportOptions, Exported, Exporter, FileScorer, FrameWritten, SERIES_CSV,
    ScorerSpec, SliceContext, WorkflowError, export_files, group_files, open_scorer, series_csv,
};

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
    /// Map values at the two ends of the overlay colormap. Default: the map's fixed scale, the
    /// same for every image (0,8 normal spreads when calibrated, 0,1 uncalibrated); before
    /// this release the default was each map's own min and max.
    #[arg(long, value_name = "MIN,MAX", value_parser = parse_range)]
    pub range: Option<(f32, f32)>,
    /// Leave overlay pixels whose map value is below this uncoloured.
    #[arg(long, value_name = "VALUE")]
    pub hide_below: Option<f32>,
    /// Share of normal images the decision threshold may flag (default: the rate the
    /// checkpoint was fitted for, 0.05 unless `train --fpr` said otherwise). Recomputed from
    /// the normal exemplar scores the checkpoint stores.
    #[arg(long, value_parser = super::train::parse_rate)]
    pub fpr: Option<f32>,
    /// Also write DICOM results that PACS viewers lay over the source series: per DICOM source
    /// series a Parametric Map of the map (`series-<n>.pm.dcm`) and a Segmentation of the
    /// region at or above the threshold (`series-<n>.seg.dcm`), and per source study a
    /// measurement report (TID 1500 SR, `results-sr-<n>.dcm`) with every score.
    #[arg(long)]
    pub dicom: bool,
    /// With --dicom: also burn each overlay into a Secondary Capture, `<name>.sc.dcm`, for
    /// viewers that show neither Parametric Maps nor Segmentations.
    #[arg(long, requires = "dicom")]
    pub dicom_sc: bool,
    /// With --dicom: also write Parametric Maps of the zero-shot and few-shot branch maps.
    #[arg(long, requires = "dicom")]
    pub dicom_branch_maps: bool,
    /// With --dicom: also write a Parametric Map of every level of both branches.
    #[arg(long, requires = "dicom")]
    pub dicom_level_maps: bool,
    /// Context across slices for `series.csv`: `off`, `max:W` (weighted maximum with the
    /// neighbouring slices) or `mean:W` (weighted mean), W in 0..1. Off by default: it ranks
    /// better on synthetic volumes, but the threshold is calibrated on single slices, so with it
    /// more normal slices reach the threshold than it states (README, "Series").
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = parse_context)]
    pub slice_context: SliceContext,
    #[command(flatten)]
    pub deid: DeidArgs,
}

/// A short name of the result objects' SOP classes, for the summary lines.
fn sop_class_name(uid: &str) -> &'static str {
    match uid {
        crate::io::export::PARAMETRIC_MAP_SOP_CLASS => "a Parametric Map",
        crate::io::export::SEGMENTATION_SOP_CLASS => "a Segmentation",
        _ => "a DICOM object",
    }
}

fn parse_context(s: &str) -> Result<SliceContext, ArgValueError> {
    if s == "off" {
        return Ok(SliceContext::Off);
    }
    let bad = || ArgValueError::SliceContext(s.to_string());
    let (mode, weight) = s.split_once(':').ok_or_else(bad)?;
    let weight: f32 = weight.trim().parse().map_err(|_| bad())?;
    if !(0.0..=1.0).contains(&weight) {
        return Err(bad());
    }
    match mode {
        "max" => Ok(SliceContext::WeightedMax { weight }),
        "mean" => Ok(SliceContext::WeightedMean { weight }),
        _ => Err(bad()),
    }
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
    /// The export's DICOM settings; the key is read from its environment variable here.
    fn dicom_export(&self) -> anyhow::Result<DicomExport> {
        let key = match (&self.deid_key_env, self.identified) {
            (Some(var), false) => Some(
                std::env::var(var)
                    .with_context(|| format!("environment variable {var} is not set"))?,
            ),
            _ => None,
        };
        Ok(DicomExport {
            identified: self.identified,
            dates: match self.dates {
                DatesArg::Remove => Dates::Remove,
                DatesArg::Shift => Dates::Shift,
                DatesArg::Keep => Dates::Keep,
            },
            retain_patient_characteristics: self.retain_patient_characteristics,
            retain_device_identity: self.retain_device_identity,
            key,
            ..DicomExport::default()
        })
    }
}

impl ScoreArgs {
    /// The export options the flags ask for (heatmap and overlay always).
    fn export_options(&self) -> anyhow::Result<ExportOptions> {
        Ok(ExportOptions {
            raw: self.raw.then_some(match self.raw_format {
                RawFormat::Safetensors => crate::workflow::RawFormat::Safetensors,
                RawFormat::Npy => crate::workflow::RawFormat::Npy,
            }),
            dicom: if self.dicom {
                let mut export = self.deid.dicom_export()?;
                export.secondary_capture = self.dicom_sc;
                if self.dicom_branch_maps {
                    export.extra_maps.extend([
                        MapLayer::Branch(Branch::ZeroShot),
                        MapLayer::Branch(Branch::FewShot),
                    ]);
                }
                if self.dicom_level_maps {
                    // Every tap of MVFA; levels a detector lacks are left out.
                    export.extra_maps.extend(
                        MapLayer::all(crate::workflow::MAX_LEVELS)
                            .into_iter()
                            .filter(|l| matches!(l, MapLayer::Level(..))),
                    );
                }
                Some(export)
            } else {
                None
            },
            opacity: self.opacity,
            range: self.range,
            hide_below: self.hide_below,
            ..ExportOptions::default()
        })
    }
}

fn parse_range(s: &str) -> Result<(f32, f32), ArgValueError> {
    let (a, b) = s.split_once(',').ok_or(ArgValueError::NotARange)?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f32>()
            .map_err(|source| ArgValueError::RangeEnd {
                text: v.to_string(),
                source,
            })
    };
    let (lo, hi) = (parse(a)?, parse(b)?);
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return Err(ArgValueError::EmptyRange { lo, hi });
    }
    Ok((lo, hi))
}

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
    let options = args.export_options()?;
    let backend = args.model.backend();
    let spec = ScorerSpec {
        clip: args.model.clip.clone(),
        clip_config: args.model.clip_config.clone(),
        checkpoint: args.checkpoint.clone(),
        organ: args.model.organ.clone(),
        batch: args.model.batch,
        fpr: args.fpr,
    };
    let scorer = open_scorer(&spec, &backend)?;
    score(&args, options, scorer.as_ref())
}

fn score(
    args: &ScoreArgs,
    options: ExportOptions,
    scorer: &dyn FileScorer,
) -> anyhow::Result<ExitCode> {
    let info = scorer.info();
    eprintln!("{}", common::load_summary(&info.report, info.load_time));
    if let Some(note) = &info.note {
        eprintln!("note: {note}");
    }
    eprintln!("{}", info.description);

    let (files, mut failures) = input_files(args);
    // No output file may replace one of the files being scored (the files, not their
    // folders: earlier outputs inside a scanned folder may be replaced).
    let mut scored_inputs = InputSet::new(files.iter().map(PathBuf::as_path));
    scored_inputs.add(&args.checkpoint);
    for path in args.model.input_paths() {
        scored_inputs.add(path);
    }
    let mut exporter = Exporter::new(&args.out, options, info.facts.clone(), scored_inputs)?;
    let mut scores = FrameScores::default();
    let export_error = score_files(scorer, &files, &mut exporter, &mut scores, &mut failures);

    // The frames written so far get their CSV rows even when an export failed.
    let summary = exporter.finish()?;
    for (path, object) in &summary.objects {
        println!(
            "wrote {} ({} frame(s)) to {}",
            sop_class_name(&object.sop_class_uid),
            object.frames,
            path.display()
        );
    }
    for report in &summary.reports {
        println!(
            "wrote a measurement report of {} series and {} image(s), SOP Instance UID {}",
            report.series, report.images, report.object.sop_instance_uid
        );
    }
    for note in &summary.notes {
        println!("note: {note}");
    }
    if let Some(csv) = &summary.csv {
        println!(
            "wrote {} scored frame(s) to {}",
            summary.frames,
            csv.display()
        );
        let series = group_files(&files);
        let threshold = info.calibration.as_ref().map(|c| c.threshold);
        let text = series_csv(
            &series,
            |file, frame| scores.score.get(&(file.to_path_buf(), frame)).copied(),
            |file| scores.frames.get(file).copied().unwrap_or(0),
            threshold,
            args.slice_context,
        );
        let path = args.out.join(SERIES_CSV);
        write_atomically(&path, |w| Ok(w.write_all(text.as_bytes())?))?;
        println!(
            "wrote {} series to {}",
            text.lines().count().saturating_sub(1),
            path.display()
        );
    }
    if let Some(e) = export_error {
        return Err(e.into());
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

/// The files to score ([`collect_inputs`], earlier outputs in `--out` left out), and the
/// inputs that failed, printed as they are found.
fn input_files(args: &ScoreArgs) -> (Vec<PathBuf>, Vec<String>) {
    let (files, errors) = collect_inputs(&args.inputs, Some(&args.out));
    let failures: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for f in &failures {
        eprintln!("error: {f}");
    }
    (files, failures)
}

/// Each scored frame's image score (calibrated, else the zero-shot score) and each scored
/// file's frame count, for `series.csv`.
#[derive(Default)]
struct FrameScores {
    score: HashMap<(PathBuf, usize), f32>,
    frames: HashMap<PathBuf, usize>,
}

/// Scores the frames of every file and exports them ([`export_files`]), with a progress bar:
/// the next frames are decoded while the current batch runs, and batches of `--batch` frames
/// span files. A file that cannot be read joins `failures`; an export or model error stops
/// the run and is returned.
fn score_files(
    scorer: &dyn FileScorer,
    files: &[PathBuf],
    exporter: &mut Exporter,
    scores: &mut FrameScores,
    failures: &mut Vec<String>,
) -> Option<WorkflowError> {
    let bar = common::progress_bar(files.len() as u64, "files");
    bar.set_message("scoring");
    let outcome = export_files(scorer, files, exporter, &mut |event| match event {
        Exported::Failed(e) => {
            bar.inc(1);
            bar.suspend(|| eprintln!("error: {e}"));
            failures.push(e.to_string());
        }
        Exported::Written(frame, written) => {
            let image = &frame.image;
            if image.frame + 1 == image.frames {
                bar.inc(1);
            }
            let result = &frame.result;
            scores.score.insert(
                (image.source.clone(), image.frame),
                result.score.unwrap_or(result.raw.zero_image),
            );
            scores.frames.insert(image.source.clone(), image.frames);
            if let Some(note) = &image.note {
                bar.suspend(|| eprintln!("note: {}: {note}", image.label()));
            }
            bar.suspend(|| println!("{}", summary_line(written, &image.label())));
        }
    });
    bar.finish_and_clear();
    outcome.err()
}

fn summary_line(w: &FrameWritten, label: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parses_two_ordered_numbers() {
        assert_eq!(parse_range("0,3.5").unwrap(), (0.0, 3.5));
        let empty = parse_range("3,1").unwrap_err().to_string();
        assert_eq!(empty, "need finite MIN < MAX, got 3,1");
        assert_eq!(
            parse_range("1").unwrap_err().to_string(),
            "expected MIN,MAX"
        );
    }
}
