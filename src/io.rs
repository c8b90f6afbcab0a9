//! Medical image I/O: DICOM, raster and NIfTI studies, windowing, model input, exports, and
//! dataset layouts. Nothing here does model math.
pub mod dataset;
pub mod dicom;
pub mod study;
pub mod image;
