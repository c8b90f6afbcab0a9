//! The DICOM objects of one export ([`super::export::Exporter`] with a [`DicomExport`]): per
//! source series a Parametric Map of the drawn map (and of each extra layer asked for) and a
//! BINARY Segmentation of the anomalous region, per source study one measurement report
//! (TID 1500) that references them, and, on request, a Secondary Capture per frame. Every
//! object of one export is de-identified with one key; identified ones go into the source's
//! own study as new series.
//!
//! The maps are kept at the source's size until [`DicomState::finish`], which writes the
//! objects of each series at once (a series' maps must be in one object): a 600-slice series
//! of 512 x 512 holds 600 MB per layer while the export runs.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::export::{DetectorFacts, DicomExport, results_sr_name};
use super::series::series_score;
use super::{MapLayer, MapScale, WorkflowError};
use crate::io::dicom::looks_like_dicom;
use crate::io::export::dicom_derived::frame_order;
use crate::io::export::dicom_sr::{NO_UNITS, SCORE_UNIT};
use crate::io::export::{
    Colormap, DerivedFrame, DerivedOptions, ExportError, MapFrame, MapQuantity, ObjectWritten,
    ParametricMapInput, ScOptions, ScWritten, Segment, SegmentationInput, SourceAttributes,
    SrDetector, SrImage, SrOptions, SrSeries, SrWritten, build_parametric_map, build_segmentation,
    is_placed, new_uid, write_object, write_results_sr, write_secondary_capture,
};
use crate::io::output::InputSet;
use crate::io::resample::Image8;

/// Series Number of the first Parametric Map series (extra layers follow it).
const PM_SERIES_NUMBER: i32 = 9010;
/// Series Number of the Segmentations.
const SEG_SERIES_NUMBER: i32 = 9003;

/// What one frame leaves for the series objects: its maps at the source's size.
pub(super) struct PendingFrame {
    /// Index of its image in the report.
    pub image: usize,
    /// Its source file.
    pub source: PathBuf,
    /// 0-based frame within the source.
    pub frame: usize,
    /// Rows and columns of the maps (the frame's as decoded).
    pub size: (u32, u32),
    /// One map per layer of [`DicomState::layers`].
    pub maps: Vec<Vec<f32>>,
    /// The calibrated fused map, for the region (calibrated detectors only).
    pub fused: Option<Vec<f32>>,
}

/// The DICOM part of one export.
pub(super) struct DicomState {
    export: DicomExport,
    /// Secondary Capture settings: their one series, the new study of sources that are not
    /// DICOM, and the de-identification of every object.
    pub sc_options: ScOptions,
    sources: HashMap<PathBuf, SourceAttributes>,
    /// One per written frame, in CSV order.
    images: Vec<SrImage>,
    pending: Vec<PendingFrame>,
    /// Layers written as Parametric Maps (the drawn one, then the extra ones), with the scale
    /// and display range of their values.
    layers: Vec<(MapLayer, MapScale, (f32, f32))>,
    /// The recommended display colormap of the Parametric Maps (the export's).
    palette: Colormap,
}

/// What the DICOM part of an export wrote, and what it could not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DicomWritten {
    /// The measurement reports, one per source study.
    pub reports: Vec<SrWritten>,
    /// The Parametric Maps and Segmentations, with their files.
    pub objects: Vec<(PathBuf, ObjectWritten)>,
    /// Why an object was not written (a series without geometry, an empty region).
    pub notes: Vec<String>,
}

impl DicomState {
    pub fn new(dicom: &DicomExport, palette: Colormap) -> Self {
        DicomState {
            export: dicom.clone(),
            sc_options: ScOptions {
                series_instance_uid: Some(new_uid()),
                study_instance_uid: Some(new_uid()),
                instance_number: 0,
                anonymise: dicom.anonymise(),
                ..ScOptions::default()
            },
            sources: HashMap::new(),
            images: Vec::new(),
            pending: Vec::new(),
            layers: Vec::new(),
            palette,
        }
    }

    /// Whether overlays are burned into Secondary Captures.
    pub fn secondary_capture(&self) -> bool {
        self.export.secondary_capture
    }

    /// The layers to keep per frame: the drawn one first, then the extra ones.
    pub fn layers(&self, drawn: MapLayer) -> Vec<MapLayer> {
        let mut layers = vec![drawn];
        for &l in &self.export.extra_maps {
            if !layers.contains(&l) {
                layers.push(l);
            }
        }
        layers
    }

    /// Fixes the layers' scales and display ranges (from the first frame that has them all).
    pub fn set_layers(&mut self, layers: Vec<(MapLayer, MapScale, (f32, f32))>) {
        if self.layers.is_empty() {
            self.layers = layers;
        }
    }

    /// The attributes of `source` (read once per file; none when it is not DICOM).
    pub fn attributes(&mut self, source: &Path) -> Result<SourceAttributes, ExportError> {
        if let Some(a) = self.sources.get(source) {
            return Ok(a.clone());
        }
        let a = if looks_like_dicom(source) {
            SourceAttributes::from_file(source)?
        } else {
            SourceAttributes::none()
        };
        self.sources.insert(source.to_path_buf(), a.clone());
        Ok(a)
    }

    /// Writes `path` as the Secondary Capture of `overlay`, under the study of `source`.
    pub fn write_sc(
        &mut self,
        path: &Path,
        source: &Path,
        overlay: &Image8,
    ) -> Result<ScWritten, ExportError> {
        let attributes = self.attributes(source)?;
        self.sc_options.instance_number += 1;
        write_secondary_capture(path, overlay, &attributes, &self.sc_options)
    }

    /// Records a written frame: its report entry, and its maps when its source is DICOM.
    pub fn push(&mut self, image: SrImage, pending: Option<PendingFrame>) {
        let index = self.images.len();
        let dicom = image.source.sop_instance_uid().is_some();
        self.images.push(image);
        if let Some(mut p) = pending.filter(|_| dicom) {
            p.image = index;
            self.pending.push(p);
        }
    }

    /// Writes the series objects, then the reports; on an error, removes what it wrote.
    pub fn finish(
        mut self,
        out: &Path,
        inputs: &InputSet,
        facts: &DetectorFacts,
    ) -> Result<DicomWritten, WorkflowError> {
        let mut written = DicomWritten::default();
        let result = self.write_all(out, inputs, facts, &mut written);
        if let Err(e) = result {
            for (path, _) in &written.objects {
                let _ = std::fs::remove_file(path);
            }
            for n in 1..=written.reports.len() {
                let _ = std::fs::remove_file(out.join(results_sr_name(n)));
            }
            return Err(e);
        }
        Ok(written)
    }

    fn write_all(
        &mut self,
        out: &Path,
        inputs: &InputSet,
        facts: &DetectorFacts,
        written: &mut DicomWritten,
    ) -> Result<(), WorkflowError> {
        let groups = self.series_groups();
        let mut series_results: Vec<(usize, SrSeries)> = Vec::new();
        for (n, group) in groups.iter().enumerate() {
            let name = format!("series-{}", n + 1);
            let s = self.write_series(out, inputs, facts, &name, group, written)?;
            series_results.push((self.pending[group[0]].image, s));
        }
        self.write_reports(out, inputs, facts, &series_results, written)
    }

    /// The pending frames grouped by source series and size, in first-seen order.
    fn series_groups(&self) -> Vec<Vec<usize>> {
        type SeriesKey = (Option<String>, (u32, u32));
        let mut groups: Vec<(SeriesKey, Vec<usize>)> = Vec::new();
        for (i, p) in self.pending.iter().enumerate() {
            let series = self.images[p.image]
                .source
                .series_instance_uid()
                .map(str::to_string);
            let key = (series, p.size);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// The Parametric Maps and the Segmentation of one series, and its report entry.
    fn write_series(
        &mut self,
        out: &Path,
        inputs: &InputSet,
        facts: &DetectorFacts,
        name: &str,
        group: &[usize],
        written: &mut DicomWritten,
    ) -> Result<SrSeries, WorkflowError> {
        let pending: Vec<&PendingFrame> = group.iter().map(|&i| &self.pending[i]).collect();
        let frames: Vec<DerivedFrame> = pending
            .iter()
            .map(|p| DerivedFrame {
                source: &self.sources[&p.source],
                frame: p.frame,
            })
            .collect();
        let order = frame_order(&frames);
        let (rows, columns) = pending[0].size;
        let anonymise = self.sc_options.anonymise.clone();
        let describe = self.images[pending[0].image].label.clone();
        let mut maps_written = Vec::new();
        if frames[0]
            .source
            .size()
            .is_some_and(|s| s != (rows, columns))
        {
            written.notes.push(format!(
                "{name} ({describe}): no Parametric Map or Segmentation; the maps are \
                 {columns} x {rows}, not the source's size"
            ));
            let entry = self.series_entry(group, &order, None, None, facts);
            return Ok(entry);
        }
        if is_placed(&frames) {
            for (k, &(layer, scale, range)) in self.layers.iter().enumerate() {
                let maps: Vec<&[f32]> = pending.iter().map(|p| p.maps[k].as_slice()).collect();
                let quantity = quantity(layer, scale, range, &maps);
                let file = if k == 0 {
                    format!("{name}.pm.dcm")
                } else {
                    format!("{name}.{}.pm.dcm", layer.label().replace(' ', "-"))
                };
                let path = out.join(file);
                inputs.ensure_not_input(&path)?;
                let obj = build_parametric_map(
                    &ParametricMapInput {
                        frames: frames.clone(),
                        maps,
                        rows,
                        columns,
                        quantity,
                        palette: Some(self.palette),
                    },
                    &DerivedOptions {
                        series_description: format!("MVFA {} anomaly map", layer.label()),
                        series_number: PM_SERIES_NUMBER + k as i32,
                        instance_number: 1,
                        series_instance_uid: None,
                        content_label: content_label(layer),
                        content_description: format!("MVFA {} anomaly map", layer.label()),
                        anonymise: anonymise.clone(),
                    },
                )?;
                let object = write_object(&path, obj)?;
                written.objects.push((path, object.clone()));
                maps_written.push(object);
            }
        } else {
            written.notes.push(format!(
                "{name} ({describe}): no Parametric Map; its source states no place in the \
                 patient (Frame of Reference, Image Position)"
            ));
        }
        // The drawn map's frames, for the report: frame k of the map is order[k].
        if let Some(map) = maps_written.first() {
            for (rank, &i) in order.iter().enumerate() {
                self.images[pending[i].image].map_frame = Some(MapFrame {
                    map: map.clone(),
                    frame_number: rank as u32 + 1,
                });
            }
        }
        let segmentation =
            self.write_segmentation(out, inputs, facts, name, &frames, &pending, written)?;
        Ok(self.series_entry(
            group,
            &order,
            maps_written.first().cloned(),
            segmentation,
            facts,
        ))
    }

    /// The Segmentation of the region at or above the threshold's level, when the detector is
    /// calibrated and the region is not empty.
    #[allow(clippy::too_many_arguments)]
    fn write_segmentation(
        &self,
        out: &Path,
        inputs: &InputSet,
        facts: &DetectorFacts,
        name: &str,
        frames: &[DerivedFrame],
        pending: &[&PendingFrame],
        written: &mut DicomWritten,
    ) -> Result<Option<(ObjectWritten, String, String)>, WorkflowError> {
        let Some(cal) = &facts.calibration else {
            written.notes.push(format!(
                "{name}: no Segmentation; the detector is not calibrated, so there is no threshold"
            ));
            return Ok(None);
        };
        let level = cal.region_level();
        let masks: Vec<Vec<bool>> = pending
            .iter()
            .map(|p| {
                p.fused
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|&v| v >= level)
                    .collect()
            })
            .collect();
        let (rows, columns) = pending[0].size;
        let tracking_id = format!("{name} anomalous region");
        let tracking_uid = new_uid();
        let obj = build_segmentation(
            &SegmentationInput {
                frames: frames.to_vec(),
                masks: masks.iter().map(Vec::as_slice).collect(),
                rows,
                columns,
                segment: Segment {
                    label: "Anomalous region".into(),
                    description: format!(
                        "Pixels whose calibrated fused map is >= {level}: where the image score \
                         reaches the decision threshold {}",
                        cal.threshold
                    ),
                    algorithm_name: "MVFA".into(),
                    algorithm_version: format!("MVFA Studio {}", env!("CARGO_PKG_VERSION")),
                    tracking_id: tracking_id.clone(),
                    tracking_uid: tracking_uid.clone(),
                },
            },
            &DerivedOptions {
                series_description: "MVFA anomalous region".into(),
                series_number: SEG_SERIES_NUMBER,
                instance_number: 1,
                series_instance_uid: None,
                content_label: "ANOMALY".into(),
                content_description: "MVFA anomalous region".into(),
                anonymise: self.sc_options.anonymise.clone(),
            },
        )?;
        let Some(obj) = obj else {
            written.notes.push(format!(
                "{name}: no Segmentation; no pixel reaches the threshold's level"
            ));
            return Ok(None);
        };
        let path = out.join(format!("{name}.seg.dcm"));
        inputs.ensure_not_input(&path)?;
        let object = write_object(&path, obj)?;
        written.objects.push((path, object.clone()));
        Ok(Some((object, tracking_id, tracking_uid)))
    }

    /// The series' scores for the report, from its frames' scores in slice order.
    fn series_entry(
        &self,
        group: &[usize],
        order: &[usize],
        parametric_map: Option<ObjectWritten>,
        segmentation: Option<(ObjectWritten, String, String)>,
        facts: &DetectorFacts,
    ) -> SrSeries {
        let images: Vec<usize> = order
            .iter()
            .map(|&i| self.pending[group[i]].image)
            .collect();
        let scores: Vec<Option<f32>> = images
            .iter()
            .map(|&i| self.images[i].score.map(|v| v as f32))
            .collect();
        let threshold = facts.calibration.as_ref().map(|c| c.threshold);
        let s = series_score(&scores, threshold);
        SrSeries {
            score: s.as_ref().map(|s| short(s.max)),
            top3_mean: s.as_ref().map(|s| short(s.top_mean)),
            peak: images[s.as_ref().map_or(0, |s| s.peak)],
            flagged: s.and_then(|s| s.flagged),
            images,
            parametric_map,
            segmentation,
        }
    }

    /// One report per source study (the sources without a study together), in the order each
    /// study first appears.
    fn write_reports(
        &self,
        out: &Path,
        inputs: &InputSet,
        facts: &DetectorFacts,
        series: &[(usize, SrSeries)],
        written: &mut DicomWritten,
    ) -> Result<(), WorkflowError> {
        let detector = sr_detector(facts);
        let options = SrOptions {
            study_instance_uid: self.sc_options.study_instance_uid.clone(),
            anonymise: self.sc_options.anonymise.clone(),
            ..SrOptions::default()
        };
        let mut studies: Vec<(Option<String>, Vec<usize>)> = Vec::new();
        for (i, image) in self.images.iter().enumerate() {
            let study = image.source.study_instance_uid();
            match studies.iter_mut().find(|(s, _)| *s == study) {
                Some((_, list)) => list.push(i),
                None => studies.push((study, vec![i])),
            }
        }
        for (n, (_, members)) in studies.iter().enumerate() {
            let images: Vec<SrImage> = members.iter().map(|&i| self.images[i].clone()).collect();
            let local = |i: usize| members.iter().position(|&m| m == i);
            let study_series: Vec<SrSeries> = series
                .iter()
                .filter(|(first, _)| local(*first).is_some())
                .map(|(_, s)| SrSeries {
                    images: s.images.iter().filter_map(|&i| local(i)).collect(),
                    peak: local(s.peak).unwrap_or(0),
                    ..s.clone()
                })
                .collect();
            let path = out.join(results_sr_name(n + 1));
            inputs.ensure_not_input(&path)?;
            written.reports.push(write_results_sr(
                &path,
                &images,
                &study_series,
                &detector,
                &options,
            )?);
        }
        Ok(())
    }
}

/// The report's detector facts; the checkpoint's SHA-256 is read here, in the export's job.
fn sr_detector(facts: &DetectorFacts) -> SrDetector {
    let cal = facts.calibration.as_ref();
    SrDetector {
        checkpoint_sha256: crate::weights::adapters::file_sha256_hex(Path::new(&facts.checkpoint))
            .ok(),
        organ: facts.organ.clone(),
        calibration_method: cal.map(|c| c.method.clone()),
        threshold: cal.map(|c| short(c.threshold)),
        threshold_meaning: cal.and_then(|c| c.fpr.as_ref()).map(|f| f.describe()),
    }
}

/// The Real World Value Mapping of a layer's maps: unit, meaning, display window and the range
/// the series' values span.
fn quantity(layer: MapLayer, scale: MapScale, range: (f32, f32), maps: &[&[f32]]) -> MapQuantity {
    let (lo, hi) = maps
        .iter()
        .flat_map(|m| m.iter())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let (unit, meaning) = match scale {
        MapScale::Calibrated => (
            SCORE_UNIT,
            "normal spreads above a typical normal exemplar pixel",
        ),
        MapScale::Raw => (NO_UNITS, "uncalibrated anomaly (0 to 1)"),
    };
    MapQuantity {
        label: content_label(layer),
        explanation: format!("MVFA {} map: {meaning}", layer.label()),
        unit: (unit.0.to_string(), unit.2.to_string()),
        display_range: (f64::from(range.0), f64::from(range.1)),
        value_range: if lo <= hi {
            (f64::from(lo), f64::from(hi))
        } else {
            (0.0, 0.0)
        },
    }
}

/// Content Label and LUT Label of a layer: capitals, digits and underscores, at most 16.
fn content_label(layer: MapLayer) -> String {
    let l: String = layer
        .label()
        .to_uppercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut label = format!("MVFA_{l}");
    label.truncate(16);
    label
}

/// The f64 whose shortest decimal is the f32's.
fn short(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}
