//! One entry point from a file to what the model and the viewer need: any supported file
//! (DICOM, PNG/JPEG/TIFF/BMP, NIfTI) becomes frames, each windowed with the file's default
//! preset to an 8-bit display image and resized to the 240 px model input (spec 7.1).
//! The CLI and the app both load images through here.
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::io::dicom::{load_dicom, looks_like_dicom};
use crate::io::image::{ImageStack, Window};
use crate::io::model_input::{mask_input, model_input};
use crate::io::nifti::{is_nifti_path, load_nifti};
use crate::io::raster::{is_raster_path, load_raster};
use crate::io::resample::Image8;
use crate::io::walk::walk_files;

/// An input that could not be used, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InputError {
    /// The file (or folder) at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

impl InputError {
    /// `path` and what is wrong with it.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// One frame of one file, ready for the model and for overlays.
#[derive(Debug, Clone)]
pub struct ModelImage {
    /// The file the frame was read from.
    pub source: PathBuf,
    /// Frame index within the file (0 for single-frame files).
    pub frame: usize,
    /// Frames in the file.
    pub frames: usize,
    /// The windowed frame at its original resolution (overlays are drawn on it).
    pub display: Image8,
    /// `[3, 240, 240]` CHW model input in [0, 1].
    pub input: Vec<f32>,
    /// Set for a frame whose every pixel has one value: its map says nothing about it.
    pub note: Option<String>,
}

impl ModelImage {
    /// A short name for reports: the file name, plus the frame for multi-frame files.
    pub fn label(&self) -> String {
        let name = self.source.display().to_string();
        if self.frames > 1 {
            format!("{name}#{}", self.frame)
        } else {
            name
        }
    }
}

/// Whether a path looks like something [`load_stack`] reads: a raster, NIfTI or `.dcm` /
/// `.dicom` name, or DICOM content (files named `IM0001` or by UID). The one definition of a
/// supported image file: folder scans, `score` and plain-folder datasets all use it.
pub fn is_supported_file(path: &Path) -> bool {
    let dicom_name = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm") || e.eq_ignore_ascii_case("dicom"));
    is_raster_path(path) || is_nifti_path(path) || dicom_name || looks_like_dicom(path)
}

/// Loads any supported file as an image stack in modality units. A path that cannot be
/// opened is a read error with the system's reason (not "not a DICOM file"); every error
/// names the path once.
pub fn load_stack(path: &Path) -> Result<ImageStack, InputError> {
    match std::fs::metadata(path) {
        Err(e) => return Err(InputError::new(path, format!("cannot read: {e}"))),
        Ok(m) if m.is_dir() => {
            return Err(InputError::new(path, "is a folder, not an image file"));
        }
        Ok(_) => {}
    }
    if is_nifti_path(path) {
        load_nifti(path)
            .map_err(|e| InputError::new(path, format!("cannot read NIfTI volume: {}", e.reason)))
    } else if is_raster_path(path) {
        load_raster(path)
            .map_err(|e| InputError::new(path, format!("cannot read raster image: {}", e.reason)))
    } else if looks_like_dicom(path) {
        load_dicom(path).map_err(|e| InputError::new(path, e.message))
    } else if let Err(e) = std::fs::File::open(path) {
        Err(InputError::new(path, format!("cannot read: {e}")))
    } else {
        Err(InputError::new(
            path,
            "not a supported image (DICOM, PNG, JPEG, TIFF, BMP, NIfTI)",
        ))
    }
}

/// Windows frame `index` of `stack` to an 8-bit display image.
pub fn display_frame(stack: &ImageStack, index: usize, window: &Window) -> Option<Image8> {
    let frame = stack.frames.get(index)?;
    let data = frame.window_to_u8(window, stack.invert);
    Image8::new(frame.width, frame.height, frame.channels, data).ok()
}

/// A small preview of `path` for the study browser: its middle frame (the first of a
/// single-frame file) through the default window, resized to fit `side` x `side` pixels.
pub fn thumbnail(path: &Path, side: u32) -> Result<Image8, InputError> {
    let stack = load_stack(path)?;
    let window = stack
        .default_window()
        .cloned()
        .ok_or_else(|| InputError::new(path, "no window preset for this image"))?;
    let image = display_frame(&stack, stack.frames.len() / 2, &window)
        .ok_or_else(|| InputError::new(path, "the file holds no image frames"))?;
    let scale = side as f64 / image.width.max(image.height).max(1) as f64;
    let (w, h) = (
        ((image.width as f64 * scale).round() as u32).max(1),
        ((image.height as f64 * scale).round() as u32).max(1),
    );
    crate::io::resample::resize_bicubic(&image, w, h)
        .map_err(|e| InputError::new(path, e.to_string()))
}

/// Every frame of `path` as model input, windowed with the file's default preset.
pub fn load_model_images(path: &Path) -> Result<Vec<ModelImage>, InputError> {
    load_model_frames(path, None)
}

/// The frames of `path` listed in `wanted` (all frames for `None`) as model input, in frame
/// order; frame numbers the file does not have are left out. Only the frames asked for are
/// windowed and resized, so scoring a long series a chunk at a time does not convert every
/// slice for every chunk.
pub fn load_model_frames(
    path: &Path,
    wanted: Option<&[usize]>,
) -> Result<Vec<ModelImage>, InputError> {
    let mut out = Vec::new();
    let mut failed = None;
    for_each_model_frame(path, wanted, |frame| match frame {
        Ok(f) => {
            out.push(f);
            ControlFlow::Continue(())
        }
        Err(e) => {
            failed = Some(e);
            ControlFlow::Break(())
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// [`load_model_frames`] one frame at a time: the file is decoded once, then each frame asked
/// for is windowed, resized and handed to `each` (which may stop the walk), so that only one
/// frame's model input is made ahead of its use. A file that cannot be read is the error.
pub fn for_each_model_frame(
    path: &Path,
    wanted: Option<&[usize]>,
    each: impl FnMut(Result<ModelImage, InputError>) -> ControlFlow<()>,
) -> Result<(), InputError> {
    let stack = load_stack(path)?;
    for_each_stack_frame(&stack, path, wanted, each)
}

/// [`for_each_model_frame`] over an image already in memory (`path` names it in messages):
/// the arrays of the Python package go through the same windowing and resizing as files.
pub fn for_each_stack_frame(
    stack: &ImageStack,
    path: &Path,
    wanted: Option<&[usize]>,
    mut each: impl FnMut(Result<ModelImage, InputError>) -> ControlFlow<()>,
) -> Result<(), InputError> {
    let window = stack
        .default_window()
        .cloned()
        .ok_or_else(|| InputError::new(path, "no window preset for this image"))?;
    let frames = stack.frames.len();
    if frames == 0 {
        return Err(InputError::new(path, "the file holds no image frames"));
    }
    for frame in (0..frames).filter(|frame| wanted.is_none_or(|w| w.contains(frame))) {
        let converted = display_frame(stack, frame, &window)
            .ok_or_else(|| InputError::new(path, format!("frame {frame} has a bad size")))
            .and_then(|display| {
                let input = model_input(&display)
                    .map_err(|e| InputError::new(path, format!("frame {frame}: {e}")))?;
                Ok(ModelImage {
                    source: path.to_path_buf(),
                    frame,
                    frames,
                    display,
                    input,
                    note: constant_frame_note(&stack.frames[frame].data),
                })
            });
        if each(converted).is_break() {
            break;
        }
    }
    Ok(())
}

/// "constant image" when every sample of a frame has the same value (a blank slice, an
/// empty export): reported rather than scored as if it were an image.
fn constant_frame_note(data: &[f32]) -> Option<String> {
    let first = *data.first()?;
    data.iter()
        .all(|&v| v == first || (v.is_nan() && first.is_nan()))
        .then(|| format!("constant image (every pixel is {first}); its map carries no information"))
}

/// The first frame of `path` as model input (for training shots).
pub fn load_model_image(path: &Path) -> Result<ModelImage, InputError> {
    load_model_images(path)?
        .into_iter()
        .next()
        .ok_or_else(|| InputError::new(path, "the file holds no image frames"))
}

/// A lesion mask file as a `[240, 240]` {0, 1} mask (nearest resize, > 0.5 after /255, as
/// the reference does).
pub fn load_mask(path: &Path) -> Result<Vec<f32>, InputError> {
    let image = load_model_image(path)?;
    let grey = image.display.to_luma();
    mask_input(&grey).map_err(|e| InputError::new(path, e.to_string()))
}

/// The supported image files in `paths` (files as given, folders walked recursively by
/// [`crate::io::walk`]), and one error per path or entry that could not be read: the others
/// are still collected.
pub fn collect_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<InputError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        match walk_files(path, is_supported_file) {
            Ok(walk) => {
                files.extend(walk.files);
                errors.extend(
                    walk.problems
                        .into_iter()
                        .map(|p| InputError::new(&p.path, p.message)),
                );
            }
            Err(e) => errors.push(InputError::new(path, format!("cannot read: {e}"))),
        }
    }
    (files, errors)
}

/// The files `score` scores for `inputs`, each input on its own (so a missing one is
/// reported and the rest still run), without duplicates, and one error per input or entry that
/// could not be read (a folder without images is one). Files found by walking a folder inside
/// `skip_folder` (the output folder, holding earlier outputs) are left out; a file named
/// directly is kept wherever it lies. The CLI and the Python package share this list.
pub fn collect_inputs(
    inputs: &[PathBuf],
    skip_folder: Option<&Path>,
) -> (Vec<PathBuf>, Vec<InputError>) {
    let mut failures = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let skip = skip_folder.and_then(|f| f.canonicalize().ok());
    for input in inputs {
        let (found, errors) = collect_files(std::slice::from_ref(input));
        if found.is_empty() && errors.is_empty() {
            failures.push(InputError::new(
                input,
                "no supported image files in this folder",
            ));
        }
        failures.extend(errors);
        let walked = input.is_dir();
        let inside = |f: &Path| match (&skip, f.canonicalize()) {
            (Some(folder), Ok(file)) => file.starts_with(folder),
            _ => false,
        };
        files.extend(
            found
                .into_iter()
                .filter(|f| !walked || !inside(f))
                .filter(|f| seen.insert(f.clone())),
        );
    }
    (files, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_fit_the_side_and_keep_the_aspect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        ::image::GrayImage::from_fn(200, 100, |x, _| ::image::Luma([x as u8]))
            .save(&path)
            .unwrap();
        let t = thumbnail(&path, 48).unwrap();
        assert_eq!((t.width, t.height), (48, 24));
        assert!(thumbnail(&dir.path().join("missing.png"), 48).is_err());
    }
}
