//! The common in-memory image model shared by every loader (DICOM, raster, NIfTI) and by the
//! viewer, the model-input pipeline and the exports.
//!
//! Pixel values stay in modality units (after the modality LUT: rescale slope/intercept, e.g.
//! Hounsfield units for CT); windowing to display grey levels is a separate, explicit step.
use std::path::PathBuf;

/// Colour layout of a frame's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Channels {
    /// One sample per pixel, in modality units.
    Gray,
    /// Three interleaved samples per pixel (R, G, B), 0..=255 scale after colour conversion.
    Rgb,
}

impl Channels {
    pub fn count(self) -> usize {
        match self {
            Channels::Gray => 1,
            Channels::Rgb => 3,
        }
    }
}

/// One 2-D image: `height` rows of `width` pixels, row-major, channels interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub channels: Channels,
    /// `width * height * channels.count()` samples in modality units.
    pub data: Vec<f32>,
}

/// DICOM VOI LUT function (C.11.2.1.3); `Linear` is the default when the tag is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum VoiFunction {
    #[default]
    Linear,
    LinearExact,
    Sigmoid,
}

/// A window (VOI) in modality units, e.g. from a WindowCenter/WindowWidth pair of the file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
    /// WindowCenterWidthExplanation, or a generated label such as "Full range".
    pub label: String,
}

/// A node of the per-instance metadata tree shown in the viewer's metadata panel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataNode {
    /// e.g. "(0010,0010) PatientName".
    pub name: String,
    /// Display value; empty for sequences.
    pub value: String,
    /// Items of a sequence, each with its elements.
    pub children: Vec<MetadataNode>,
}

/// A loaded image object: a DICOM instance, a raster file or a NIfTI volume.
#[derive(Debug, Clone)]
pub struct ImageStack {
    pub source: PathBuf,
    /// One frame per slice / DICOM frame, in display order.
    pub frames: Vec<Frame>,
    /// Window presets, most specific first (file-provided first, then generated ones).
    pub windows: Vec<Window>,
    /// MONOCHROME1: low values are displayed bright; applied after windowing.
    pub invert: bool,
    /// Metadata tree (empty for plain rasters).
    pub metadata: Vec<MetadataNode>,
}
