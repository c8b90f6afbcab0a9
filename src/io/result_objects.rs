//! Reading result objects back: a DICOM Parametric Map (float or integer frames) or a
//! Segmentation (BINARY or FRACTIONAL), ours or another tool's, as per-frame maps that the
//! viewer lays over their source images.
//!
//! Each frame is matched to a source frame the way viewers do: first by the SOP Instance UID
//! (and frame number) its Derivation Image names, then, for objects without such references,
//! by the Frame of Reference and the frame's Image Position. The values are the stored ones
//! through the object's Real World Value Mapping (slope and intercept) for a map, 0 or 1 for a
//! binary segment (the fraction for a fractional one).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};

use super::dicom::{FrameGeometry, frame_geometries};
use super::export::{PARAMETRIC_MAP_SOP_CLASS, SEGMENTATION_SOP_CLASS};

/// Whether a SOP Class is one this module reads.
pub fn is_result_object_class(sop_class_uid: &str) -> bool {
    let uid = sop_class_uid.trim_end_matches('\0');
    uid == PARAMETRIC_MAP_SOP_CLASS || uid == SEGMENTATION_SOP_CLASS
}

/// What kind of result an object holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultKind {
    /// A Parametric Map: values in `unit`, meaning `label` (its LUT Label or Content Label).
    ParametricMap {
        /// LUT Label or Content Label.
        label: String,
        /// The unit's code meaning, when stated.
        unit: Option<String>,
        /// The display window (Frame VOI LUT), when stated.
        window: Option<(f32, f32)>,
    },
    /// A Segmentation: one map per segment and frame; `label` is the segment's.
    Segmentation {
        /// Segment Label of the frame's segment (of the first segment for the object).
        label: String,
    },
}

/// One frame of a result object.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultFrame {
    /// The source SOP Instance UID its Derivation Image names.
    pub source_sop_instance_uid: Option<String>,
    /// The source frame number (1-based) it names, for multi-frame sources.
    pub source_frame_number: Option<u32>,
    /// Where the frame lies.
    pub geometry: FrameGeometry,
    /// The segment of a Segmentation frame.
    pub segment: Option<u16>,
    /// Row-major values, `rows * columns` (shared: the viewer draws them every frame).
    pub values: Arc<Vec<f32>>,
}

/// A result object read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultObject {
    /// The file.
    pub path: PathBuf,
    /// What it holds.
    pub kind: ResultKind,
    /// Series Description, for lists.
    pub description: String,
    /// Its Frame of Reference.
    pub frame_of_reference_uid: Option<String>,
    /// Rows of every frame.
    pub rows: u32,
    /// Columns of every frame.
    pub columns: u32,
    /// The frames.
    pub frames: Vec<ResultFrame>,
}

/// Why a result object could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ResultObjectError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, in plain words.
    pub message: String,
}

/// A source frame the viewer shows, to match result frames against.
#[derive(Debug, Clone, Copy)]
pub struct SourceFrame<'a> {
    /// Its SOP Instance UID.
    pub sop_instance_uid: Option<&'a str>,
    /// 0-based frame within its file.
    pub frame: usize,
    /// Frames in its file.
    pub frames: usize,
    /// Its Frame of Reference.
    pub frame_of_reference_uid: Option<&'a str>,
    /// Its Image Position.
    pub position: Option<[f64; 3]>,
    /// Rows and columns of its pixels.
    pub size: (u32, u32),
}

impl ResultObject {
    /// The frames of this object that lay over `source` (one per segment for a
    /// Segmentation): by referenced SOP Instance UID and frame number, else by Frame of
    /// Reference and Image Position (within 0.01 mm). Frames of another size never match.
    pub fn frames_over(&self, source: &SourceFrame) -> Vec<usize> {
        if source.size != (self.rows, self.columns) {
            return Vec::new();
        }
        let by_reference: Vec<usize> = self
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.source_sop_instance_uid.is_some()
                    && f.source_sop_instance_uid.as_deref() == source.sop_instance_uid
                    && match f.source_frame_number {
                        Some(n) => n as usize == source.frame + 1,
                        None => source.frames <= 1 || source.frame == 0,
                    }
            })
            .map(|(i, _)| i)
            .collect();
        if !by_reference.is_empty() {
            return by_reference;
        }
        let (Some(for_uid), Some(position)) = (source.frame_of_reference_uid, source.position)
        else {
            return Vec::new();
        };
        if self.frame_of_reference_uid.as_deref() != Some(for_uid) {
            return Vec::new();
        }
        self.frames
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.source_sop_instance_uid.is_none()
                    && f.geometry
                        .position
                        .is_some_and(|p| p.iter().zip(position).all(|(a, b)| (a - b).abs() <= 0.01))
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// Reads a Parametric Map or Segmentation; `Ok(None)` for a DICOM file of another class.
pub fn read_result_object(path: &Path) -> Result<Option<ResultObject>, ResultObjectError> {
    let fail = |message: String| ResultObjectError {
        path: path.to_path_buf(),
        message,
    };
    let file = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| fail(format!("cannot read the DICOM file: {e}")))?;
    let class = file
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        .to_string();
    if !is_result_object_class(&class) {
        return Ok(None);
    }
    let ts = file
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    if !matches!(ts.as_str(), "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1") {
        return Err(fail(format!(
            "pixel data in transfer syntax {ts} is not read here (only native little endian)"
        )));
    }
    let obj: &InMemDicomObject = &file;
    let rows = int(obj, tags::ROWS).ok_or_else(|| fail("no Rows".into()))? as u32;
    let columns = int(obj, tags::COLUMNS).ok_or_else(|| fail("no Columns".into()))? as u32;
    let frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
    let n = rows as usize * columns as usize;
    let values = if class == PARAMETRIC_MAP_SOP_CLASS {
        map_values(obj, n * frames).map_err(fail)?
    } else {
        segment_values(obj, n * frames).map_err(fail)?
    };
    let geometry = frame_geometries(obj, frames);
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let frames = (0..frames)
        .map(|k| {
            let group = per_frame.get(k);
            let source = group
                .and_then(|g| items(g, tags::DERIVATION_IMAGE_SEQUENCE).first())
                .and_then(|d| items(d, tags::SOURCE_IMAGE_SEQUENCE).first());
            ResultFrame {
                source_sop_instance_uid: source
                    .and_then(|s| string(s, tags::REFERENCED_SOP_INSTANCE_UID)),
                source_frame_number: source
                    .and_then(|s| int(s, tags::REFERENCED_FRAME_NUMBER))
                    .map(|v| v as u32),
                geometry: geometry[k],
                segment: group
                    .and_then(|g| items(g, tags::SEGMENT_IDENTIFICATION_SEQUENCE).first())
                    .and_then(|s| int(s, tags::REFERENCED_SEGMENT_NUMBER))
                    .map(|v| v as u16),
                values: Arc::new(values[k * n..(k + 1) * n].to_vec()),
            }
        })
        .collect();
    let kind = if class == PARAMETRIC_MAP_SOP_CLASS {
        map_kind(obj)
    } else {
        let label = items(obj, tags::SEGMENT_SEQUENCE)
            .first()
            .and_then(|s| string(s, tags::SEGMENT_LABEL))
            .unwrap_or_else(|| "segment".into());
        ResultKind::Segmentation { label }
    };
    Ok(Some(ResultObject {
        path: path.to_path_buf(),
        kind,
        description: string(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        frame_of_reference_uid: string(obj, tags::FRAME_OF_REFERENCE_UID),
        rows,
        columns,
        frames,
    }))
}

/// Label, unit and window of a Parametric Map (shared groups, else the first frame's).
fn map_kind(obj: &InMemDicomObject) -> ResultKind {
    let group = |seq: Tag| {
        items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .first()
            .and_then(|g| items(g, seq).first())
            .or_else(|| {
                items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
                    .first()
                    .and_then(|g| items(g, seq).first())
            })
    };
    let mapping = group(tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE);
    let label = mapping
        .and_then(|m| string(m, tags::LUT_LABEL))
        .or_else(|| string(obj, tags::CONTENT_LABEL))
        .unwrap_or_else(|| "map".into());
    let unit = mapping
        .and_then(|m| items(m, tags::MEASUREMENT_UNITS_CODE_SEQUENCE).first())
        .and_then(|c| string(c, tags::CODE_MEANING));
    let window = group(tags::FRAME_VOILUT_SEQUENCE).and_then(|w| {
        let c = float(w, tags::WINDOW_CENTER)?;
        let width = float(w, tags::WINDOW_WIDTH)?;
        Some(((c - width / 2.0) as f32, (c + width / 2.0) as f32))
    });
    ResultKind::ParametricMap {
        label,
        unit,
        window,
    }
}

/// The map's real-world values: float, double or integer pixels through the mapping's slope
/// and intercept.
fn map_values(obj: &InMemDicomObject, count: usize) -> Result<Vec<f32>, String> {
    let bytes = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_bytes().ok().map(|b| b.into_owned()))
    };
    let raw: Vec<f32> = if let Some(b) = bytes(tags::FLOAT_PIXEL_DATA) {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if let Some(b) = bytes(tags::DOUBLE_FLOAT_PIXEL_DATA) {
        b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect()
    } else if let Some(b) = bytes(tags::PIXEL_DATA) {
        let signed = int(obj, tags::PIXEL_REPRESENTATION) == Some(1);
        match int(obj, tags::BITS_ALLOCATED) {
            Some(16) => b
                .chunks_exact(2)
                .map(|c| {
                    let v = u16::from_le_bytes([c[0], c[1]]);
                    if signed { v as i16 as f32 } else { v as f32 }
                })
                .collect(),
            Some(8) => b
                .iter()
                .map(|&v| if signed { v as i8 as f32 } else { v as f32 })
                .collect(),
            other => return Err(format!("Bits Allocated {other:?} is not read here")),
        }
    } else {
        return Err("no pixel data".into());
    };
    if raw.len() < count {
        return Err(format!(
            "the pixel data holds {} values, the frames need {count}",
            raw.len()
        ));
    }
    let mapping = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .first()
        .and_then(|g| items(g, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE).first());
    let slope = mapping
        .and_then(|m| float(m, tags::REAL_WORLD_VALUE_SLOPE))
        .unwrap_or(1.0) as f32;
    let intercept = mapping
        .and_then(|m| float(m, tags::REAL_WORLD_VALUE_INTERCEPT))
        .unwrap_or(0.0) as f32;
    Ok(raw[..count]
        .iter()
        .map(|&v| v * slope + intercept)
        .collect())
}

/// A Segmentation's pixels: bits of a BINARY one (least significant first, running on across
/// frames), the fraction of a FRACTIONAL one.
fn segment_values(obj: &InMemDicomObject, count: usize) -> Result<Vec<f32>, String> {
    let data = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.to_bytes().ok().map(|b| b.into_owned()))
        .ok_or_else(|| "no pixel data".to_string())?;
    match string(obj, tags::SEGMENTATION_TYPE).as_deref() {
        Some("BINARY") => {
            if data.len() * 8 < count {
                return Err(format!(
                    "the pixel data holds {} bits, the frames need {count}",
                    data.len() * 8
                ));
            }
            Ok((0..count)
                .map(|i| f32::from(data[i / 8] >> (i % 8) & 1))
                .collect())
        }
        Some("FRACTIONAL") => {
            if data.len() < count {
                return Err(format!(
                    "the pixel data holds {} values, the frames need {count}",
                    data.len()
                ));
            }
            let max = float(obj, tags::MAXIMUM_FRACTIONAL_VALUE).unwrap_or(255.0) as f32;
            Ok(data[..count].iter().map(|&v| f32::from(v) / max).collect())
        }
        other => Err(format!("Segmentation Type {other:?} is not read here")),
    }
}

fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or_default()
}

fn string(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty())
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
}

fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_float64().ok())
}
