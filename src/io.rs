//! Medical image I/O: DICOM, raster and NIfTI studies, windowing, model input, exports, and
//! dataset layouts. Nothing here does model math.
pub mod array;
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
pub mod result_objects;
pub mod study;
pub mod walk;

/// The system's "Is a directory" error, for a folder given where a file is read: opening a
/// folder succeeds on Unix, and reading or mapping it then fails with a less telling reason
/// (mapping one says "No such device").
pub fn is_a_directory_error() -> std::io::Error {
    #[cfg(unix)]
    {
        std::io::Error::from_raw_os_error(libc::EISDIR)
    }
    #[cfg(not(unix))]
    {
        std::io::Error::from(std::io::ErrorKind::IsADirectory)
    }
}
