//! File jobs: read opened files and folders into the browser, decode the pixels the viewer
//! needs (with each file's content hash), make the browser's previews.
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use super::runner::{Job, JobError};
use crate::app::state::THUMBNAIL_SIDE;
use crate::io::image::ImageStack;
use crate::io::input::InputError;
use crate::io::resample::Image8;
use crate::io::result_objects::ResultObject;
use crate::io::study::{ScanItem, scan_for_viewer};

/// A file read by the loader job: its pixels and content hash, or why it could not be read.
pub type LoadedFile = (PathBuf, Result<(Arc<ImageStack>, String), FileReadError>);

/// A browser preview made by the thumbnail job, or why the file could not be read.
pub type Thumbnail = (PathBuf, Result<Arc<Image8>, FileReadError>);

/// Why a file job could not use a file. The text (without the path, which the browser row
/// shows) is what the browser and the log show.
#[derive(Debug, thiserror::Error)]
pub enum FileReadError {
    /// Not an image this app decodes, or a damaged one.
    #[error("{}", .0.message)]
    Input(#[from] InputError),
    /// Decoded, but without a single frame.
    #[error("the file holds no image frames")]
    NoFrames,
    /// The bytes could not be read again for the content hash.
    #[error("cannot read the file: {0}")]
    Hash(#[source] std::io::Error),
}

/// Reads `roots` (files, folders, DICOMDIRs), handing over each file as it is examined.
pub fn scan(roots: Vec<PathBuf>, repaint: impl Fn() + Send + Sync + 'static) -> Job<(), ScanItem> {
    Job::spawn("Reading files", repaint, move |job| {
        scan_for_viewer(&roots, &mut |item, progress| {
            if let Some(item) = item {
                job.emit(item);
            }
            let fraction =
                (progress.total > 0).then(|| progress.done as f32 / progress.total as f32);
            job.progress(
                fraction,
                format!("{} of {} files", progress.done, progress.total),
            );
            if job.is_cancelled() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if job.is_cancelled() {
            Err(JobError::cancelled())
        } else {
            Ok(())
        }
    })
}

/// Decodes the files of `queue` in order, with each one's SHA-256 (what a project records).
pub fn load(
    queue: Vec<PathBuf>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<(), LoadedFile> {
    super::runner::each_file("Loading images", repaint, queue, |path| {
        let stack = crate::io::input::load_stack(path)?;
        if stack.frames.is_empty() {
            return Err(FileReadError::NoFrames);
        }
        let hash = crate::weights::adapters::file_sha256_hex(path).map_err(FileReadError::Hash)?;
        Ok((Arc::new(stack), hash))
    })
}

/// A result object read by [`read_result_objects`], or why it could not be read.
pub type ReadResultObject = (
    PathBuf,
    Result<Option<ResultObject>, crate::io::result_objects::ResultObjectError>,
);

/// Reads the result objects (Parametric Maps, Segmentations) of `paths`.
pub fn read_result_objects(
    paths: Vec<PathBuf>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<(), ReadResultObject> {
    super::runner::each_file("Reading result objects", repaint, paths, |path| {
        crate::io::result_objects::read_result_object(path)
    })
}

/// Makes the previews of `paths`.
pub fn thumbnails(
    paths: Vec<PathBuf>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<(), Thumbnail> {
    super::runner::each_file("Making previews", repaint, paths, |path| {
        crate::io::input::thumbnail(path, THUMBNAIL_SIDE)
            .map(Arc::new)
            .map_err(FileReadError::from)
    })
}
