//! Exports: raw heatmaps as 16-bit PNG with their scale, overlay PNGs with a burned-in colour
//! legend, CSV score tables, DICOM Secondary Capture objects of overlays, and DICOM Basic Text
//! SR documents of the score tables.
//!
//! Every file is written atomically ([`atomic::write_atomically`]): into a temporary file in
//! the target directory, flushed and fsynced, then renamed over the target. A failed export
//! leaves neither a partial target nor the temporary file.
use std::path::{Path, PathBuf};

pub mod atomic;
pub mod csv;
pub mod dicom_derived;
pub mod dicom_items;
pub mod dicom_pm;
pub mod dicom_sc;
pub mod dicom_seg;
pub mod dicom_sr;
pub mod dicom_volume;
pub mod font;
pub mod heatmap;
pub mod overlay;

pub use atomic::write_atomically;
pub use csv::{ScoreRow, scores_csv_string, write_scores_csv};
pub use dicom_derived::{DerivedFrame, DerivedOptions, ObjectWritten, is_placed, write_object};
pub use dicom_pm::{
    MapQuantity, PARAMETRIC_MAP_SOP_CLASS, ParametricMapInput, build_parametric_map,
};
pub use dicom_sc::{
    Anonymise, Dates, ScOptions, ScWritten, SourceAttributes, derived_uid, new_uid,
    write_secondary_capture,
};
pub use dicom_seg::{SEGMENTATION_SOP_CLASS, Segment, SegmentationInput, build_segmentation};
pub use dicom_sr::{
    COMPREHENSIVE_SR_SOP_CLASS, MapFrame, SrDetector, SrImage, SrOptions, SrSeries, SrWritten,
    build_results_sr, write_results_sr,
};
pub use heatmap::{FloatMap, HeatmapScale, read_heatmap_png, write_heatmap_png};
pub use overlay::{
    Colormap, LegendLayout, Overlay, OverlayOptions, render_overlay, write_overlay_png, write_png,
};

/// An export that failed: which file, and why.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write {path}: {reason}")]
    /// The output file could not be written.
    Write {
        /// The file being written.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    #[error("cannot read {path}: {reason}")]
    /// A file could not be read back (e.g. a heatmap PNG).
    Read {
        /// The file being read.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The input to an export is inconsistent (sizes, ranges, options); the message says how.
    #[error("invalid export input: {0}")]
    Invalid(String),
}

impl ExportError {
    pub(crate) fn write(path: &Path, reason: impl ToString) -> Self {
        ExportError::Write {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn read(path: &Path, reason: impl ToString) -> Self {
        ExportError::Read {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}
