//! Medical image I/O: DICOM, raster and NIfTI studies, windowing, model input, exports, and
//! dataset layouts. Nothing here does model math.
pub mod dataset;
pub mod dicom;
pub mod export;
pub mod image;
pub mod input;
pub mod mask;
pub mod model_input;
pub mod nifti;
pub mod output;
pub mod raster;
pub mod resample;
pub mod study;
pub mod walk;
