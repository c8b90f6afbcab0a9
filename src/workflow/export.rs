//! Exporting scored frames to files, one [`Exporter`] per export: per frame a 16-bit heatmap
//! PNG, an overlay PNG with its legend, the raw float maps and a DICOM Secondary Capture of
//! the overlay, then, with the DICOM export, one Basic Text SR of the score table per source
//! study (`results-sr-<n>.dcm`), and last one `scores.csv`. The CLI's `score` and the app's
//! export job both run it, so a file written from either means the same thing.
//!
//! The module is backend-free: it takes results as plain data ([`FrameToExport`],
//! [`DetectorFacts`]) and resizes maps to the frame's size on the CPU, so the app can call it
//! from a background job without knowing the burn backend, and the exported numbers do not
//! depend on the device the model ran on.
//!
//! Every file is written atomically; a frame whose export fails has the files it already
//! wrote removed again, and `scores.csv` is written last by [`Exporter::finish`], so an export
//! stopped between two frames (cancelled, or an error) leaves only whole frames, each with its
//! CSV row once `finish` runs.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::prelude::Backend;
use safetensors::{Dtype, tensor::TensorView};

use super::export_dicom::{DicomState, DicomWritten, PendingFrame};
use super::{LayerMap, MapLayer, MapScale, WorkflowError, layer_map, map_at_original};
use crate::backend::CpuBackend;
use crate::io::dicom::looks_like_dicom;
use crate::io::export::dicom_sc::SECONDARY_CAPTURE_SOP_CLASS;
use crate::io::export::{
    Anonymise, Colormap, Dates, ExportError, FloatMap, ObjectWritten, OverlayOptions, ScWritten,
    ScoreRow, SourceAttributes, SrImage, SrWritten, render_overlay, write_atomically,
    write_heatmap_png, write_png, write_scores_csv,
};
use crate::io::output::{InputSet, OutputKind, check_output};
use crate::io::resample::Image8;
use crate::model::clip::vision::VisionTransformer;
use crate::model::mvfa::calibration::Calibration;
use crate::model::mvfa::detector::{Detector, ImageResult};

/// Score columns of `scores.csv`, after `path`.
pub const SCORE_COLUMNS: [&str; 4] = ["score", "zero_shot_score", "few_shot_score", "abnormal"];

/// Name of the score table in the output folder.
pub const SCORES_CSV: &str = "scores.csv";

/// File name of the `n`th (from 1) Basic Text SR of an export: one per source study, in the
/// order the studies were first exported.
pub fn results_sr_name(n: usize) -> String {
    format!("results-sr-{n}.dcm")
}

/// File suffixes one frame may write, after its name (`<name>.<suffix>`); all are checked
/// against the inputs before a frame is written.
const FRAME_SUFFIXES: [&str; 5] = [
    "heatmap.png",
    "overlay.png",
    "raw.safetensors",
    "raw",
    "sc.dcm",
];

/// File format of the raw float maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RawFormat {
    /// One `<name>.raw.safetensors` per frame, with metadata.
    #[default]
    Safetensors,
    /// A `<name>.raw/` folder per frame with one `<tensor>.npy` per map and score.
    Npy,
}

/// The DICOM Secondary Capture export and its de-identification, as a user chooses them (the
/// CLI's flags, the app's dialog); see [`crate::io::export::dicom_sc`] for what each option
/// does to the attributes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DicomExport {
    /// Keep the patient's identity and the source study (no de-identification).
    pub identified: bool,
    /// Dates when de-identifying: removed (default), shifted or kept.
    pub dates: Dates,
    /// Keep patient sex and age.
    pub retain_patient_characteristics: bool,
    /// Keep the source's station name and device serial number.
    pub retain_device_identity: bool,
    /// Secret de-identification key: the same key gives the same pseudonyms, UIDs and date
    /// shifts across exports. `None`: a fresh random key for this export.
    pub key: Option<String>,
    /// Also burn each overlay into a Secondary Capture (`<name>.sc.dcm`), for viewers that
    /// show neither Parametric Maps nor Segmentations.
    pub secondary_capture: bool,
    /// Parametric Maps of these layers too (each branch or level), besides the drawn one.
    pub extra_maps: Vec<MapLayer>,
}

impl std::fmt::Debug for DicomExport {
    // The key is a secret: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomExport")
            .field("identified", &self.identified)
            .field("dates", &self.dates)
            .field(
                "retain_patient_characteristics",
                &self.retain_patient_characteristics,
            )
            .field("retain_device_identity", &self.retain_device_identity)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("secondary_capture", &self.secondary_capture)
            .field("extra_maps", &self.extra_maps)
            .finish()
    }
}

impl DicomExport {
    /// The library's de-identification settings; `None` for an identified export.
    pub fn anonymise(&self) -> Option<Anonymise> {
        if self.identified {
            return None;
        }
        let mut a = Anonymise {
            dates: self.dates,
            retain_patient_characteristics: self.retain_patient_characteristics,
            retain_device_identity: self.retain_device_identity,
            ..Anonymise::default()
        };
        if let Some(key) = &self.key {
            a.key = key.clone();
        }
        Some(a)
    }
}

/// What one export writes, and how its maps are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// `<name>.heatmap.png`: the layer's map as 16-bit grey with its float range.
    pub heatmap_png: bool,
    /// `<name>.overlay.png`: the image with the map blended in and a legend.
    pub overlay: bool,
    /// The raw float maps of every level and branch, in this format; `None`: not written.
    pub raw: Option<RawFormat>,
    /// `<name>.sc.dcm` Secondary Captures of the overlays; `None`: not written.
    pub dicom: Option<DicomExport>,
    /// The map shown in the heatmap and overlay. [`MapLayer::Fused`] falls back to the
    /// zero-shot branch for an uncalibrated detector, which has no fused map.
    pub layer: MapLayer,
    /// Colormap of the overlay.
    pub colormap: Colormap,
    /// Weight of the map colour in the overlay, 0..=1.
    pub opacity: f32,
    /// Map values at the two ends of the colormap; `None`: the layer's fixed default range
    /// ([`MapScale::default_range`]), the same for every image.
    pub range: Option<(f32, f32)>,
    /// Overlay pixels whose map value is below this stay uncoloured.
    pub hide_below: Option<f32>,
}

impl Default for ExportOptions {
    /// The CLI's defaults: heatmap and overlay of the fused map, Turbo at half opacity.
    fn default() -> Self {
        ExportOptions {
            heatmap_png: true,
            overlay: true,
            raw: None,
            dicom: None,
            layer: MapLayer::Fused,
            colormap: Colormap::Turbo,
            opacity: 0.5,
            range: None,
            hide_below: None,
        }
    }
}

/// What the export needs to know of the detector, as plain data (no backend).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorFacts {
    /// The calibration: maps on the calibrated scale and the `abnormal` decision.
    pub calibration: Option<Calibration>,
    /// The checkpoint, as recorded in the raw maps' metadata.
    pub checkpoint: String,
    /// The organ word the detector scored with.
    pub organ: String,
}

impl DetectorFacts {
    /// The facts of an opened detector.
    pub fn from_detector<B: Backend>(
        detector: &Detector<B, VisionTransformer<B>>,
        checkpoint: &Path,
        organ: &str,
    ) -> Self {
        DetectorFacts {
            calibration: detector.calibration().cloned(),
            checkpoint: checkpoint.display().to_string(),
            organ: organ.to_string(),
        }
    }
}

/// One scored frame to export.
#[derive(Debug, Clone)]
pub struct FrameToExport<'a> {
    /// The file the frame was read from (never overwritten; a DICOM one gives the Secondary
    /// Capture its patient and study).
    pub source: &'a Path,
    /// Frame index within the file.
    pub frame: usize,
    /// Frames in the file (names get `_f0003` when more than one).
    pub frames: usize,
    /// The frame's name in `scores.csv` and the raw metadata.
    pub label: String,
    /// The windowed frame at its original size: the overlay's background and size.
    pub display: &'a Image8,
    /// Its result.
    pub result: &'a ImageResult,
    /// Side of the square maps in `result` (the model's input size).
    pub model_size: usize,
}

impl<'a> FrameToExport<'a> {
    /// The frame of a [`super::ScoredFrame`], scored at `model_size`.
    pub fn from_scored(scored: &'a super::ScoredFrame, model_size: usize) -> Self {
        let image = &scored.image;
        FrameToExport {
            source: &image.source,
            frame: image.frame,
            frames: image.frames,
            label: image.label(),
            display: &image.display,
            result: &scored.result,
            model_size,
        }
    }
}

/// What one frame's export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameWritten {
    /// The frame's file name stem, unique within the export.
    pub name: String,
    /// Its `scores.csv` row ([`SCORE_COLUMNS`] after the path).
    pub row: ScoreRow,
    /// The files (and raw folder) written, in order.
    pub files: Vec<PathBuf>,
    /// The layer drawn (the fallback when the requested one was missing).
    pub layer: MapLayer,
    /// Units of the drawn map.
    pub scale: MapScale,
    /// Map values at the two ends of the overlay's colormap.
    pub range: (f32, f32),
    /// UIDs of the Secondary Capture, when one was written.
    pub dicom: Option<ScWritten>,
}

/// What a whole export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    /// The output folder.
    pub out_dir: PathBuf,
    /// Frames written.
    pub frames: usize,
    /// Every file (and raw folder) written, `scores.csv` last.
    pub files: Vec<PathBuf>,
    /// The score table; `None` when no frame was written.
    pub csv: Option<PathBuf>,
    /// The one series of the Secondary Captures, when they were exported.
    pub series_instance_uid: Option<String>,
    /// The measurement reports (TID 1500; one per source study, in the order of
    /// [`results_sr_name`]), when DICOM was exported.
    pub reports: Vec<SrWritten>,
    /// The Parametric Maps and Segmentations (one each per source series), with their files.
    pub objects: Vec<(PathBuf, ObjectWritten)>,
    /// Why a DICOM object was not written (a series without geometry, an empty region, an
    /// uncalibrated detector).
    pub notes: Vec<String>,
}

/// How a frame's map was drawn, and its Secondary Capture.
struct Drawn {
    layer: MapLayer,
    scale: MapScale,
    range: (f32, f32),
    dicom: Option<ScWritten>,
    pending: Option<PendingFrame>,
}

/// One export into one folder: [`Exporter::new`], [`Exporter::write_frame`] per frame (a
/// caller that can be cancelled checks between frames), then [`Exporter::finish`].
pub struct Exporter {
    out: PathBuf,
    options: ExportOptions,
    facts: DetectorFacts,
    inputs: InputSet,
    names: NameAllocator,
    rows: Vec<ScoreRow>,
    files: Vec<PathBuf>,
    dicom: Option<DicomState>,
}

impl Exporter {
    /// Checks the options and the output folder (never an input, writable) and creates it.
    /// No output file may replace one of `inputs` (nor a frame's source); give the input
    /// files rather than their folders when `out_dir` may lie inside an input folder, or the
    /// files of an earlier export there would count as inputs.
    pub fn new(
        out_dir: &Path,
        options: ExportOptions,
        facts: DetectorFacts,
        inputs: InputSet,
    ) -> Result<Self, WorkflowError> {
        check_options(&options)?;
        check_output(out_dir, OutputKind::Folder, &inputs)?;
        inputs.ensure_not_input(&out_dir.join(SCORES_CSV))?;
        std::fs::create_dir_all(out_dir).map_err(|e| {
            ExportError::write(out_dir, format!("cannot create the output folder: {e}"))
        })?;
        let dicom = options
            .dicom
            .as_ref()
            .map(|d| DicomState::new(d, options.colormap));
        Ok(Exporter {
            out: out_dir.to_path_buf(),
            options,
            facts,
            inputs,
            names: NameAllocator::default(),
            rows: Vec::new(),
            files: Vec::new(),
            dicom,
        })
    }

    /// The options this export runs with.
    pub fn options(&self) -> &ExportOptions {
        &self.options
    }

    /// Frames written so far.
    pub fn frames_written(&self) -> usize {
        self.rows.len()
    }

    /// Writes one frame's files. On an error, the files of this frame already written are
    /// removed again and the frame gets no CSV row; earlier frames stay.
    pub fn write_frame(&mut self, frame: FrameToExport) -> Result<FrameWritten, WorkflowError> {
        let name = self.names.allocate(frame.source, frame.frame, frame.frames);
        let mut inputs = self.inputs.clone();
        inputs.add(frame.source);
        for suffix in FRAME_SUFFIXES {
            inputs.ensure_not_input(&self.out.join(format!("{name}.{suffix}")))?;
        }
        let mut files = Vec::new();
        match self.write_files(&frame, &name, &mut files) {
            Ok(Drawn {
                layer,
                scale,
                range,
                dicom,
                pending,
            }) => {
                let row = score_row(&frame, self.facts.calibration.as_ref());
                self.rows.push(row.clone());
                self.files.extend(files.iter().cloned());
                if let Some(state) = &mut self.dicom {
                    // Read when the frame's maps were kept.
                    let source = state.attributes(frame.source).unwrap_or_default();
                    let image = sr_image(self.rows.len(), &row, source, &frame, dicom.clone());
                    state.push(image, pending);
                }
                Ok(FrameWritten {
                    name,
                    row,
                    files,
                    layer,
                    scale,
                    range,
                    dicom,
                })
            }
            Err(e) => {
                for f in files.iter().rev() {
                    let _ = if f.is_dir() {
                        std::fs::remove_dir_all(f)
                    } else {
                        std::fs::remove_file(f)
                    };
                }
                Err(e)
            }
        }
    }

    /// The files of one frame; each written path is pushed to `files` as soon as it exists.
    fn write_files(
        &mut self,
        frame: &FrameToExport,
        name: &str,
        files: &mut Vec<PathBuf>,
    ) -> Result<Drawn, WorkflowError> {
        let s = frame.model_size;
        let (layer, map) = self.map_of(frame)?;
        if map.values.len() != s * s {
            return Err(ExportError::Invalid(format!(
                "{}: the {} map has {} values, not {s} x {s}",
                frame.label,
                layer.label(),
                map.values.len()
            ))
            .into());
        }
        let (w, h) = (frame.display.width, frame.display.height);
        let device = Default::default();
        let resized =
            map_at_original::<CpuBackend>(&map.values, s, w as usize, h as usize, &device)?;
        let range = self
            .options
            .range
            .unwrap_or_else(|| map.scale.default_range());
        let pending = match &self.dicom {
            Some(_) => self.pending_frame(frame, layer, (map.scale, range), &resized)?,
            None => None,
        };
        let heat = FloatMap::new(w, h, resized)?;
        if self.options.heatmap_png {
            let path = self.out.join(format!("{name}.heatmap.png"));
            write_heatmap_png(&path, &heat)?;
            files.push(path);
        }
        let mut dicom = None;
        let secondary_capture = self
            .dicom
            .as_ref()
            .is_some_and(DicomState::secondary_capture);
        if self.options.overlay || secondary_capture {
            let opts = OverlayOptions {
                colormap: self.options.colormap,
                opacity: self.options.opacity,
                range: Some(range),
                threshold: self.options.hide_below,
                legend: true,
            };
            let overlay = render_overlay(frame.display, &heat, &opts)?;
            if self.options.overlay {
                let path = self.out.join(format!("{name}.overlay.png"));
                write_png(&path, &overlay.image)?;
                files.push(path);
            }
            if let Some(state) = self.dicom.as_mut().filter(|d| d.secondary_capture()) {
                let path = self.out.join(format!("{name}.sc.dcm"));
                dicom = Some(state.write_sc(&path, frame.source, &overlay.image)?);
                files.push(path);
            }
        }
        if let Some(format) = self.options.raw {
            let tensors = raw_tensors(frame.result, s);
            match format {
                RawFormat::Safetensors => {
                    let path = self.out.join(format!("{name}.raw.safetensors"));
                    let meta = self.raw_metadata(frame);
                    write_raw_safetensors(&path, &tensors, meta)?;
                    files.push(path);
                }
                RawFormat::Npy => {
                    let dir = self.out.join(format!("{name}.raw"));
                    write_raw_npy(&dir, &tensors, files)?;
                }
            }
        }
        Ok(Drawn {
            layer,
            scale: map.scale,
            range,
            dicom,
            pending,
        })
    }

    /// The maps a DICOM source's frame leaves for its series' Parametric Maps and
    /// Segmentation, at the frame's size: the drawn layer (`drawn`, already resized), the extra
    /// layers, and the calibrated fused map for the region. `None` for a source that is not
    /// DICOM.
    fn pending_frame(
        &mut self,
        frame: &FrameToExport,
        layer: MapLayer,
        drawn: (MapScale, (f32, f32)),
        resized: &[f32],
    ) -> Result<Option<PendingFrame>, WorkflowError> {
        let state = self.dicom.as_mut().expect("called with a DICOM export");
        if !looks_like_dicom(frame.source) {
            return Ok(None);
        }
        let (w, h) = (frame.display.width, frame.display.height);
        let s = frame.model_size;
        let cal = self.facts.calibration.as_ref();
        let device = Default::default();
        let at_size = |values: &[f32]| {
            map_at_original::<CpuBackend>(values, s, w as usize, h as usize, &device)
        };
        let layers = state.layers(layer);
        let mut maps = vec![resized.to_vec()];
        let mut described = vec![(layer, drawn.0, drawn.1)];
        // An extra layer the detector lacks (few-shot without a memory bank, a level past its
        // last) is left out; which layers exist is the same for every frame of one detector.
        for &extra in &layers[1..] {
            let Some(m) = layer_map(frame.result, cal, extra) else {
                continue;
            };
            maps.push(at_size(&m.values)?);
            let range = self
                .options
                .range
                .unwrap_or_else(|| m.scale.default_range());
            described.push((extra, m.scale, range));
        }
        state.set_layers(described);
        let fused = match layer_map(frame.result, cal, MapLayer::Fused) {
            Some(m) if layer == MapLayer::Fused => {
                Some(resized.to_vec()).filter(|_| m.scale == MapScale::Calibrated)
            }
            Some(m) => Some(at_size(&m.values)?),
            None => None,
        };
        Ok(Some(PendingFrame {
            image: 0,
            source: frame.source.to_path_buf(),
            frame: frame.frame,
            size: (h, w),
            maps,
            fused,
        }))
    }

    /// The requested layer's map, or the zero-shot branch for a fused map that is missing.
    fn map_of(&self, frame: &FrameToExport) -> Result<(MapLayer, LayerMap), WorkflowError> {
        let cal = self.facts.calibration.as_ref();
        let (layer, map) = super::maps::layer_or_zero_shot(frame.result, cal, self.options.layer);
        let map = map.ok_or_else(|| {
            ExportError::Invalid(format!(
                "{}: the result has no {} map",
                frame.label,
                layer.label()
            ))
        })?;
        Ok((layer, map))
    }

    fn raw_metadata(&self, frame: &FrameToExport) -> HashMap<String, String> {
        let s = frame.model_size;
        HashMap::from([
            ("source".to_string(), frame.label.clone()),
            ("checkpoint".to_string(), self.facts.checkpoint.clone()),
            ("organ_word".to_string(), self.facts.organ.clone()),
            (
                "maps".to_string(),
                format!(
                    "{s}x{s} at model resolution (the whole frame resized to a square); levels \
                     summed give the branch map; fused_map and score are calibrated"
                ),
            ),
        ])
    }

    /// Writes the SRs of the score table (with the DICOM export; one per source study), then
    /// `scores.csv` for the frames written (none when no frame was) and returns what the
    /// export wrote. A cancelled export calls this too, for the frames done. When an SR cannot
    /// be written, the SRs already written are removed again and no CSV is written.
    pub fn finish(self) -> Result<ExportSummary, WorkflowError> {
        let mut files = self.files;
        let series_instance_uid = self
            .dicom
            .as_ref()
            .filter(|d| d.secondary_capture())
            .and_then(|d| d.sc_options.series_instance_uid.clone());
        let dicom = match self.dicom {
            Some(state) => {
                let written = state.finish(&self.out, &self.inputs, &self.facts)?;
                files.extend(written.objects.iter().map(|(p, _)| p.clone()));
                files
                    .extend((1..=written.reports.len()).map(|n| self.out.join(results_sr_name(n))));
                written
            }
            None => DicomWritten::default(),
        };
        let csv = if self.rows.is_empty() {
            None
        } else {
            let path = self.out.join(SCORES_CSV);
            write_scores_csv(&path, &SCORE_COLUMNS, &self.rows)?;
            files.push(path.clone());
            Some(path)
        };
        Ok(ExportSummary {
            out_dir: self.out,
            frames: self.rows.len(),
            files,
            csv,
            series_instance_uid,
            reports: dicom.reports,
            objects: dicom.objects,
            notes: dicom.notes,
        })
    }
}

/// One frame's entry in the SR: its CSV row (1-based `csv_row`), source and Secondary Capture.
fn sr_image(
    csv_row: usize,
    row: &ScoreRow,
    source: SourceAttributes,
    frame: &FrameToExport,
    secondary_capture: Option<ScWritten>,
) -> SrImage {
    let column = |i: usize| row.scores.get(i).copied().flatten();
    SrImage {
        csv_row,
        label: row.path.clone(),
        score: column(0),
        zero_shot_score: column(1),
        few_shot_score: column(2),
        abnormal: column(3).map(|d| d >= 0.5),
        source,
        frame_number: (frame.frames > 1).then(|| frame.frame as u32 + 1),
        map_frame: None,
        secondary_capture: secondary_capture.map(|sc| ObjectWritten {
            sop_class_uid: SECONDARY_CAPTURE_SOP_CLASS.to_string(),
            sop_instance_uid: sc.sop_instance_uid,
            series_instance_uid: sc.series_instance_uid,
            study_instance_uid: sc.study_instance_uid,
            frames: 1,
        }),
    }
}

fn check_options(o: &ExportOptions) -> Result<(), ExportError> {
    let invalid = |m: String| Err(ExportError::Invalid(m));
    if !(0.0..=1.0).contains(&o.opacity) {
        return invalid(format!(
            "opacity must be between 0 and 1, got {}",
            o.opacity
        ));
    }
    if let Some((lo, hi)) = o.range
        && !(lo.is_finite() && hi.is_finite() && hi > lo)
    {
        return invalid(format!(
            "the colour range needs finite MIN < MAX, got {lo},{hi}"
        ));
    }
    if let Some(t) = o.hide_below
        && !t.is_finite()
    {
        return invalid(format!("the hide-below value must be finite, got {t}"));
    }
    Ok(())
}

/// The frame's CSV row: calibrated score, zero- and few-shot image scores, and the decision
/// against the calibration's threshold (1 abnormal, 0 normal).
fn score_row(frame: &FrameToExport, calibration: Option<&Calibration>) -> ScoreRow {
    let result = frame.result;
    let decision = match (calibration, result.score) {
        (Some(cal), Some(v)) => Some(if v >= cal.threshold { 1.0 } else { 0.0 }),
        _ => None,
    };
    ScoreRow {
        path: frame.label.clone(),
        scores: vec![
            result.score.map(short),
            Some(short(result.raw.zero_image)),
            result.raw.few_image.map(short),
            decision,
        ],
    }
}

/// The f64 whose shortest decimal is the f32's (`0.1f32` -> `0.1`, not `0.10000000149011612`),
/// so the CSV shows what was computed and reads back to the same f32.
fn short(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// In plain words, what an export with `options` writes and what leaves the machine with it,
/// one statement per line, for the app to show before anything is written (and the CLI in its
/// help). The DICOM lines follow what [`crate::io::export::dicom_sc`] does.
pub fn describe_options(options: &ExportOptions) -> Vec<String> {
    let o = options;
    let layer = match o.layer {
        MapLayer::Fused => "fused map (the zero-shot map when the detector is uncalibrated)".into(),
        other => format!("{} map", other.label()),
    };
    let mut out = Vec::new();
    if o.heatmap_png {
        out.push(format!(
            "<name>.heatmap.png: the {layer} at the image's size, as a 16-bit grey PNG that \
             stores its float range."
        ));
    }
    if o.overlay || o.dicom.is_some() {
        let range = match o.range {
            Some((lo, hi)) => format!("colours from {lo} to {hi}"),
            None => format!(
                "colours on the layer's fixed scale, the same for every image ({} to {} when \
                 calibrated, {} to {} uncalibrated)",
                MapScale::Calibrated.default_range().0,
                MapScale::Calibrated.default_range().1,
                MapScale::Raw.default_range().0,
                MapScale::Raw.default_range().1,
            ),
        };
        let hidden = o
            .hide_below
            .map(|t| format!(", values below {t} left uncoloured"))
            .unwrap_or_default();
        let file = if o.overlay {
            "<name>.overlay.png"
        } else {
            "The DICOM overlay"
        };
        out.push(format!(
            "{file}: the image with the {layer} in {:?} at {}% opacity, {range}{hidden}, and a \
             legend.",
            o.colormap,
            (o.opacity * 100.0).round()
        ));
    }
    match o.raw {
        Some(RawFormat::Safetensors) => out.push(
            "<name>.raw.safetensors: every level's zero- and few-shot map, the fused map and \
             the image scores as float32 at model resolution; its metadata records the source \
             file's path, the checkpoint's path and the organ word."
                .into(),
        ),
        Some(RawFormat::Npy) => out.push(
            "<name>.raw/: one .npy file per map and score (every level's zero- and few-shot \
             map, the fused map, the image scores), float32 at model resolution."
                .into(),
        ),
        None => {}
    }
    out.push(format!(
        "{SCORES_CSV}: one row per frame: the source file's path (and frame), score, \
         zero-shot score, few-shot score and the abnormal decision."
    ));
    let raw_meta = match (
        o.raw == Some(RawFormat::Safetensors),
        o.dicom.as_ref().is_some_and(|d| d.identified),
    ) {
        (true, true) => ", the raw maps' metadata and the identified SR",
        (true, false) => " and the raw maps' metadata",
        (false, true) => " and the identified SR",
        (false, false) => "",
    };
    out.push(format!(
        "File paths, which may name the patient, are written into {SCORES_CSV}{raw_meta}; the \
         PNG files carry no patient data beyond the image itself."
    ));
    if let Some(d) = &o.dicom {
        out.extend(describe_dicom(d));
    }
    out
}

fn describe_dicom(d: &DicomExport) -> Vec<String> {
    let extra = if d.extra_maps.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = d.extra_maps.iter().map(|l| l.label()).collect();
        format!(
            " (and series-<n>.<layer>.pm.dcm of the {} maps)",
            names.join(", ")
        )
    };
    let mut out = vec![
        format!(
            "series-<n>.pm.dcm{extra}: per DICOM source series, a DICOM Parametric Map of the \
             map as 32-bit floats, one frame per source frame at the source's geometry, so a \
             PACS viewer lays it over the series; written only for sources placed in the \
             patient (Frame of Reference, Image Position)."
        ),
        "series-<n>.seg.dcm: per DICOM source series, a BINARY DICOM Segmentation of the \
         anomalous region (the pixels where the image score reaches the decision threshold), \
         frames without region left out; none for an uncalibrated detector or an empty region."
            .to_string(),
        format!(
            "{}, {}, ...: a DICOM measurement report (TID 1500 in a Comprehensive SR, \
             unverified research tool output), one per source study: each series' and \
             image's score as coded numbers, the threshold and its meaning, the decision, \
             references to the source images, the Parametric Map and the Segmentation, and \
             the checkpoint's SHA-256 and organ word{}.",
            results_sr_name(1),
            results_sr_name(2),
            if d.identified {
                " and each image's source file path"
            } else {
                ", but no file paths"
            }
        ),
        "All of them go into the source's study as new series; the sources that are not DICOM \
         share one new study with empty patient attributes."
            .to_string(),
    ];
    if d.secondary_capture {
        out.push(
            "<name>.sc.dcm: the overlay burned into a DICOM Secondary Capture, all of this \
             export in one new series, for viewers that show neither of the above."
                .to_string(),
        );
    }
    if d.identified {
        out.push(
            "IDENTIFIED: the source's patient name, patient ID, birth date, sex and age, study \
             UID, date, time, ID, description and accession number, referring physician, \
             frame of reference, station name and device serial number are copied as they are."
                .into(),
        );
        out.push("Nothing is de-identified; use this only inside the hospital network.".into());
        return out;
    }
    out.extend(describe_deidentification(d));
    out
}

/// The lines of [`describe_dicom`] that say what the de-identification did with each group
/// of attributes (a de-identified export only).
fn describe_deidentification(d: &DicomExport) -> Vec<String> {
    let mut out = Vec::new();
    out.push(
        "De-identified by the DICOM PS3.15 Basic Application Level Confidentiality Profile \
         (Clean Descriptors option); PatientIdentityRemoved is YES and the method is recorded."
            .into(),
    );
    out.push(
        "Patient name: replaced by ANONYMOUS. Patient ID: replaced by a pseudonym (ANON- and 16 \
         hex digits), the same for one patient under one key."
            .into(),
    );
    out.push(
        "Emptied: birth date, accession number, referring physician, study ID. Removed: study \
         description."
            .into(),
    );
    out.push(if d.retain_patient_characteristics {
        "Patient sex and age: kept (Retain Patient Characteristics option).".into()
    } else {
        "Patient sex: emptied. Patient age: removed.".into()
    });
    out.push(if d.retain_device_identity {
        "Station name and device serial number: copied (Retain Device Identity option).".into()
    } else {
        "Station name and device serial number: not copied.".into()
    });
    out.push(match d.dates {
        Dates::Remove => "Dates: study date and time emptied; no content or creation date \
                          or time is written."
            .into(),
        Dates::Shift => "Dates: the study date and the export's own dates are moved back by \
                         1 to 3650 days, the same shift for one patient under one key, so \
                         intervals survive; times are kept (Modified Dates option)."
            .into(),
        Dates::Keep => "Dates: study date and time kept; the export's own dates are today's \
                        (Full Dates option)."
            .into(),
    });
    out.push(
        "UIDs: the study, frame of reference and referenced source image UIDs are replaced by \
         UIDs derived from the key; series and instance UIDs are new."
            .into(),
    );
    out.push(match &d.key {
        None => "Key: a fresh random key for this export, so its pseudonyms and UIDs cannot \
                 be linked to any other export."
            .into(),
        Some(_) => "Key: the site's key; the same key gives the same pseudonyms, UIDs and date \
                    shifts in every export. Keep it secret: with it, a pseudonymous patient ID \
                    can be reversed by trying candidate IDs."
            .into(),
    });
    out.push(
        "Never copied: other patient IDs and names, addresses, telephone numbers, institution, \
         physicians of record, performing physicians, operators, and private tags."
            .into(),
    );
    out.push(
        "Pixels: the overlay shows the source image as displayed; text burned into the source \
         pixels, if any, is not removed."
            .into(),
    );
    out
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

/// A named float32 tensor of the raw outputs.
/// A named tensor of the raw output: name, shape, values.
pub type RawTensor = (String, Vec<usize>, Vec<f32>);

/// Every map and score of one frame: per-level and summed zero-/few-shot maps (seg head),
/// the calibrated fused map, and the image scores (det head, per level and summed).
/// Every map and score of `result` (maps `s x s`) under the names `--raw` writes them:
/// `zero_map`, `zero_map_level<l>`, `few_map`, `few_map_level<l>`, `fused_map`, `zero_image`,
/// `zero_image_levels`, `few_image`, `score` (those the result has).
pub fn raw_tensors(result: &ImageResult, s: usize) -> Vec<RawTensor> {
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
) -> Result<(), ExportError> {
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
        .map_err(|e| ExportError::write(path, format!("building the raw tensors: {e}")))?;
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| ExportError::write(path, format!("serialising the raw tensors: {e}")))?;
    write_atomically(path, |w| Ok(w.write_all(&data)?))
}

/// The bytes of a version 1.0 `.npy` file holding a little-endian float32 C-order array.
fn npy_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
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

/// Writes one `.npy` per tensor into `dir`; the folder (when this created it) or else each
/// file is pushed to `files` as soon as it exists.
fn write_raw_npy(
    dir: &Path,
    tensors: &[RawTensor],
    files: &mut Vec<PathBuf>,
) -> Result<(), ExportError> {
    let created = !dir.exists();
    std::fs::create_dir_all(dir)
        .map_err(|e| ExportError::write(dir, format!("cannot create the folder: {e}")))?;
    if created {
        files.push(dir.to_path_buf());
    }
    for (name, shape, values) in tensors {
        let bytes = npy_bytes(shape, values);
        let path = dir.join(format!("{name}.npy"));
        write_atomically(&path, |w| Ok(w.write_all(&bytes)?))?;
        if !created {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::image::Channels;
    use crate::model::mvfa::calibration::{BranchStats, LeaveOut};
    use crate::model::mvfa::detector::RawResult;
    use crate::workflow::Branch;

    const S: usize = 4;

    fn result(fused: Vec<f32>, score: f32) -> ImageResult {
        let flat = vec![0.1; S * S];
        ImageResult {
            raw: RawResult {
                zero_image: 0.25,
                zero_image_levels: vec![0.25, 0.25],
                few_image: Some(0.1),
                zero_map: vec![0.2; S * S],
                zero_map_levels: vec![flat.clone(), flat.clone()],
                few_map: Some(vec![0.2; S * S]),
                few_map_levels: vec![flat.clone(), flat],
            },
            fused_map: Some(fused),
            score: Some(score),
        }
    }

    fn calibration() -> Calibration {
        let stats = |median, scale| BranchStats { median, scale };
        Calibration {
            method: "test".into(),
            zero_map: stats(0.2, 0.1),
            few_map: Some(stats(0.2, 0.1)),
            zero_image: stats(0.0, 1.0),
            few_image: Some(stats(0.0, 1.0)),
            fused_map_max: stats(0.0, 1.0),
            leave_out: LeaveOut::SourceShot,
            normal_exemplars: 1,
            abnormal_exemplars: 0,
            threshold: 3.0,
            normal_p95: 0.0,
            abnormal_median: None,
            text_weight: 0.5,
            normal_scores: Vec::new(),
            fpr: None,
        }
    }

    fn facts() -> DetectorFacts {
        DetectorFacts {
            calibration: Some(calibration()),
            checkpoint: "ckpt.safetensors".into(),
            organ: "Brain".into(),
        }
    }

    fn grey(w: u32, h: u32) -> Image8 {
        Image8::new(w, h, Channels::Gray, vec![100; (w * h) as usize]).unwrap()
    }

    fn frame<'a>(
        source: &'a Path,
        display: &'a Image8,
        result: &'a ImageResult,
    ) -> FrameToExport<'a> {
        FrameToExport {
            source,
            frame: 0,
            frames: 1,
            label: source.display().to_string(),
            display,
            result,
            model_size: S,
        }
    }

    fn pixel(path: &Path, x: usize, y: usize) -> [u8; 3] {
        let img = image::open(path).unwrap().to_rgb8();
        img.get_pixel(x as u32, y as u32).0
    }

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
        assert_eq!(names.allocate(Path::new("/c/case_1.png"), 0, 1), "case_1-3");
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
    fn frames_get_unique_names_and_one_csv_row_each() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut ex =
            Exporter::new(&out, ExportOptions::default(), facts(), InputSet::default()).unwrap();
        let display = grey(S as u32, S as u32);
        let (a, b) = (result(vec![1.0; S * S], 5.0), result(vec![0.0; S * S], 0.5));
        let first = ex
            .write_frame(frame(Path::new("/x/case.png"), &display, &a))
            .unwrap();
        let second = ex
            .write_frame(frame(Path::new("/y/case.png"), &display, &b))
            .unwrap();
        assert_eq!(
            (first.name.as_str(), second.name.as_str()),
            ("case", "case-2")
        );
        assert_eq!(first.layer, MapLayer::Fused);
        assert_eq!(first.range, MapScale::Calibrated.default_range());
        for f in first.files.iter().chain(&second.files) {
            assert!(f.is_file(), "{}", f.display());
        }
        assert_eq!(ex.frames_written(), 2);
        let summary = ex.finish().unwrap();
        assert_eq!(summary.frames, 2);
        let csv = std::fs::read_to_string(summary.csv.unwrap()).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines,
            [
                "path,score,zero_shot_score,few_shot_score,abnormal",
                "/x/case.png,5,0.25,0.1,1",
                "/y/case.png,0.5,0.25,0.1,0",
            ]
        );
        assert_eq!(summary.files.last(), Some(&out.join(SCORES_CSV)));
        assert_eq!(summary.files.len(), 5);
    }

    #[test]
    fn overlays_share_one_fixed_colour_scale() {
        let dir = tempfile::tempdir().unwrap();
        let mut ex = Exporter::new(
            dir.path(),
            ExportOptions::default(),
            facts(),
            InputSet::default(),
        )
        .unwrap();
        let display = grey(S as u32, S as u32);
        // The same value 2 at pixel 0 of both maps; their maxima differ (3 and 7).
        let mut low = vec![2.0; S * S];
        low[S * S - 1] = 3.0;
        let mut high = vec![2.0; S * S];
        high[S * S - 1] = 7.0;
        let (a, b) = (result(low, 1.0), result(high, 1.0));
        ex.write_frame(frame(Path::new("/a.png"), &display, &a))
            .unwrap();
        ex.write_frame(frame(Path::new("/b.png"), &display, &b))
            .unwrap();
        let (pa, pb) = (
            pixel(&dir.path().join("a.overlay.png"), 0, 0),
            pixel(&dir.path().join("b.overlay.png"), 0, 0),
        );
        assert_eq!(pa, pb);
        // With per-image min-max they would differ; with the fixed range it is value 2 of 0..8.
        let c = Colormap::Turbo.rgb(2.0 / 8.0);
        let blend = |k: usize| ((100.0 * 0.5 + c[k] as f32 * 0.5) + 0.5) as u8;
        assert_eq!(pa, [blend(0), blend(1), blend(2)]);
    }

    #[test]
    fn uncalibrated_fused_falls_back_to_the_zero_shot_branch() {
        let dir = tempfile::tempdir().unwrap();
        let facts = DetectorFacts {
            calibration: None,
            ..facts()
        };
        let options = ExportOptions {
            raw: Some(RawFormat::Npy),
            ..ExportOptions::default()
        };
        let mut ex = Exporter::new(dir.path(), options, facts, InputSet::default()).unwrap();
        let display = grey(S as u32, S as u32);
        let mut r = result(vec![], 0.0);
        r.fused_map = None;
        r.score = None;
        let w = ex
            .write_frame(frame(Path::new("/a.png"), &display, &r))
            .unwrap();
        assert_eq!(w.layer, MapLayer::Branch(Branch::ZeroShot));
        assert_eq!(w.scale, MapScale::Raw);
        assert_eq!(w.range, (0.0, 1.0));
        assert_eq!(w.row.scores, vec![None, Some(0.25), Some(0.1), None]);
        assert!(dir.path().join("a.raw/zero_map.npy").is_file());
        assert!(!dir.path().join("a.raw/fused_map.npy").exists());
    }

    #[test]
    fn a_failed_frame_leaves_no_files_and_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let options = ExportOptions {
            layer: MapLayer::Level(Branch::FewShot, 5),
            ..ExportOptions::default()
        };
        let mut ex = Exporter::new(dir.path(), options, facts(), InputSet::default()).unwrap();
        let display = grey(S as u32, S as u32);
        let r = result(vec![0.0; S * S], 0.0);
        let e = ex
            .write_frame(frame(Path::new("/a.png"), &display, &r))
            .unwrap_err();
        assert!(e.to_string().contains("no few-shot level 6 map"), "{e}");
        // A frame failing after its first files: a raw folder that cannot be created (a file
        // is in its place) fails after both PNGs were written; they are removed again.
        let mut ex = Exporter::new(
            dir.path(),
            ExportOptions {
                raw: Some(RawFormat::Npy),
                ..ExportOptions::default()
            },
            facts(),
            InputSet::default(),
        )
        .unwrap();
        std::fs::write(dir.path().join("b.raw"), b"a file where the folder goes").unwrap();
        assert!(
            ex.write_frame(frame(Path::new("/b.png"), &display, &r))
                .is_err()
        );
        assert!(!dir.path().join("b.heatmap.png").exists());
        assert!(!dir.path().join("b.overlay.png").exists());
        let summary = ex.finish().unwrap();
        assert_eq!((summary.frames, summary.csv), (0, None));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["b.raw"]);
    }

    #[test]
    fn outputs_never_replace_inputs_and_bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.heatmap.png");
        std::fs::write(&input, b"input").unwrap();
        let mut inputs = InputSet::default();
        inputs.add(&input);
        let mut ex = Exporter::new(dir.path(), ExportOptions::default(), facts(), inputs).unwrap();
        let display = grey(S as u32, S as u32);
        let r = result(vec![0.0; S * S], 0.0);
        // Another folder's a.png would be written as a.heatmap.png: refused, nothing written.
        let e = ex
            .write_frame(frame(Path::new("/elsewhere/a.png"), &display, &r))
            .unwrap_err();
        assert!(e.to_string().contains("overwrite an input"), "{e}");
        assert_eq!(std::fs::read(&input).unwrap(), b"input");
        assert!(!dir.path().join("a.overlay.png").exists());

        for bad in [
            ExportOptions {
                opacity: 1.5,
                ..ExportOptions::default()
            },
            ExportOptions {
                range: Some((2.0, 1.0)),
                ..ExportOptions::default()
            },
            ExportOptions {
                hide_below: Some(f32::NAN),
                ..ExportOptions::default()
            },
        ] {
            assert!(Exporter::new(dir.path(), bad, facts(), InputSet::default()).is_err());
        }
    }

    #[test]
    fn descriptions_follow_the_deidentification_options() {
        let mut options = ExportOptions {
            dicom: Some(DicomExport::default()),
            ..ExportOptions::default()
        };
        let text = describe_options(&options).join("\n");
        assert!(text.contains("ANONYMOUS"), "{text}");
        assert!(text.contains("Patient sex: emptied"), "{text}");
        assert!(text.contains("fresh random key"), "{text}");
        assert!(text.contains("0 to 8 when calibrated"), "{text}");
        options.dicom = Some(DicomExport {
            dates: Dates::Shift,
            retain_patient_characteristics: true,
            key: Some("k3y-of-the-site".into()),
            ..DicomExport::default()
        });
        let text = describe_options(&options).join("\n");
        assert!(text.contains("moved back"), "{text}");
        assert!(
            text.contains("kept (Retain Patient Characteristics"),
            "{text}"
        );
        assert!(text.contains("the site's key"), "{text}");
        assert!(!text.contains("k3y-of-the-site"), "{text}");
        assert!(!format!("{options:?}").contains("k3y-of-the-site"));
        options.dicom = Some(DicomExport {
            identified: true,
            ..DicomExport::default()
        });
        assert!(describe_options(&options).join("\n").contains("IDENTIFIED"));
        assert_eq!(
            DicomExport {
                identified: true,
                ..DicomExport::default()
            }
            .anonymise(),
            None
        );
    }
}
