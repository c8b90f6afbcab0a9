//! Result objects read back from disk or the PACS (Parametric Maps, Segmentations, ours or
//! another tool's): plain data the viewer lays over the frames they were derived from.
use std::path::PathBuf;
use std::sync::Arc;

use crate::io::image::ImageStack;
use crate::io::result_objects::{ResultKind, ResultObject, SourceFrame};

/// The result objects read so far, and the ones that could not be read.
#[derive(Debug, Default, Clone)]
pub struct ImportedResults {
    /// In the order they were read.
    pub objects: Vec<Arc<ResultObject>>,
    /// Files that are result objects but could not be read, and why.
    pub failed: Vec<(PathBuf, String)>,
}

/// A map of an imported object over one frame.
#[derive(Debug, Clone)]
pub struct ImportedMap {
    /// Index of the object in [`ImportedResults::objects`].
    pub object: usize,
    /// The object's frame.
    pub frame: usize,
    /// The map, row-major, `width * height`.
    pub values: Arc<Vec<f32>>,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// The values at the two ends of the colormap.
    pub range: (f32, f32),
    /// Legend caption: what the map is, and its unit.
    pub caption: String,
}

impl ImportedResults {
    /// Adds an object read from `path` (again: replaces the earlier one).
    pub fn add(&mut self, object: ResultObject) {
        self.failed.retain(|(p, _)| *p != object.path);
        match self.objects.iter_mut().find(|o| o.path == object.path) {
            Some(o) => *o = Arc::new(object),
            None => self.objects.push(Arc::new(object)),
        }
    }

    /// Whether `path` was read (or failed).
    pub fn knows(&self, path: &std::path::Path) -> bool {
        self.objects.iter().any(|o| o.path == path) || self.failed.iter().any(|(p, _)| p == path)
    }

    /// The first imported map over frame `frame` of `stack` (the latest object first): matched
    /// by the source SOP Instance UID the object references, else by Frame of Reference and
    /// position. A Segmentation's segments are merged (any segment marks a pixel).
    pub fn map_over(&self, stack: &ImageStack, frame: usize) -> Option<ImportedMap> {
        let info = &stack.info;
        let image = stack.frames.get(frame)?;
        let source = SourceFrame {
            sop_instance_uid: info.sop_instance_uid.as_deref(),
            frame,
            frames: stack.frames.len(),
            frame_of_reference_uid: info.frame_of_reference_uid.as_deref(),
            position: info.frame_positions.get(frame).copied().flatten(),
            size: (image.height, image.width),
        };
        self.objects
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, object)| {
                let frames = object.frames_over(&source);
                let first = *frames.first()?;
                let values = if frames.len() == 1 {
                    object.frames[first].values.clone()
                } else {
                    let mut merged = object.frames[first].values.as_ref().clone();
                    for &k in &frames[1..] {
                        for (v, w) in merged.iter_mut().zip(object.frames[k].values.iter()) {
                            *v = v.max(*w);
                        }
                    }
                    Arc::new(merged)
                };
                let (range, caption) = describe(object, &values);
                Some(ImportedMap {
                    object: i,
                    frame: first,
                    values,
                    width: object.columns as usize,
                    height: object.rows as usize,
                    range,
                    caption,
                })
            })
    }
}

/// The colour range and legend caption of an object's map.
fn describe(object: &ResultObject, values: &[f32]) -> ((f32, f32), String) {
    let name = object
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match &object.kind {
        ResultKind::ParametricMap {
            label,
            unit,
            window,
        } => {
            let range = window.unwrap_or_else(|| {
                values
                    .iter()
                    .filter(|v| v.is_finite())
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    })
            });
            let range = if range.0 < range.1 {
                range
            } else {
                (range.0, range.0 + 1.0)
            };
            let unit = unit.as_deref().unwrap_or("no unit stated");
            (range, format!("imported {label} ({name}) · {unit}"))
        }
        ResultKind::Segmentation { label } => {
            ((0.5, 1.0), format!("imported segment {label} ({name})"))
        }
    }
}

/// One line per imported object for the Results tab: file, kind, label and frames.
pub fn summary_lines(imported: &ImportedResults) -> Vec<String> {
    let mut lines: Vec<String> = imported
        .objects
        .iter()
        .map(|o| {
            let name = o
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let kind = match &o.kind {
                ResultKind::ParametricMap { label, .. } => format!("Parametric Map {label}"),
                ResultKind::Segmentation { label } => format!("Segmentation \"{label}\""),
            };
            format!("{name}: {kind}, {} frame(s)", o.frames.len())
        })
        .collect();
    lines.extend(
        imported
            .failed
            .iter()
            .map(|(p, why)| format!("{}: not read: {why}", p.display())),
    );
    lines
}
