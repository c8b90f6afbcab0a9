//! Project jobs: open a project file (checking every labelled file against its recorded
//! hash), write the project or the autosave (hashing files and encoding masks), import a mask
//! image. All of these read or write whole files, so none runs on the UI thread.
use std::collections::HashMap;
use std::path::PathBuf;

use super::runner::{Job, JobResult};
use crate::app::state::labels::ImageKey;
use crate::app::state::project::{
    self, FileEntry, ProjectError, ProjectFile, Verified, cached_hash, encode_mask,
};
use crate::io::mask::Mask;

/// A project file read and checked against the files on disk.
pub struct OpenedProject {
    /// The file opened.
    pub path: PathBuf,
    /// Whether it is the autosave of an earlier session.
    pub recovered: bool,
    /// Its content.
    pub file: ProjectFile,
    /// Labels and masks still matching their files, and those set aside.
    pub verified: Verified,
    /// The hashes computed on the way (the session keeps them).
    pub hashes: HashMap<PathBuf, String>,
}

/// Reads the project at `path` and checks its files; `hashes` are those this session knows.
pub fn open(
    path: PathBuf,
    recovered: bool,
    mut hashes: HashMap<PathBuf, String>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<OpenedProject> {
    Job::spawn("Opening the project", repaint, move |ctx| {
        ctx.progress(None, format!("reading {}", path.display()));
        let file = project::read(&path)?;
        ctx.progress(
            None,
            format!("checking {} labelled files", file.files.len()),
        );
        let verified = project::verify(&file, &mut hashes);
        Ok(OpenedProject {
            path,
            recovered,
            file,
            verified,
            hashes,
        })
    })
}

/// What the UI thread hands to a project write: the project file without its file hashes
/// and masks, and the masks themselves (encoding them is the job's work).
pub struct ProjectDraft {
    /// Everything but `files` and `masks`.
    pub file: ProjectFile,
    /// The labelled files to record with their hashes.
    pub paths: Vec<PathBuf>,
    /// The lesion masks to encode.
    pub masks: Vec<(ImageKey, Mask)>,
    /// The labels' revision the draft was taken at.
    pub revision: u64,
}

/// A project (or autosave) written.
pub struct SavedProject {
    /// Where it was written.
    pub path: PathBuf,
    /// The labels' revision it holds.
    pub revision: u64,
    /// The hashes computed on the way.
    pub hashes: HashMap<PathBuf, String>,
}

/// Writes `draft` to `path` atomically, hashing its files (`hashes` are those known) and
/// encoding its masks.
pub fn write(
    title: &str,
    path: PathBuf,
    draft: ProjectDraft,
    hashes: HashMap<PathBuf, String>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<SavedProject> {
    Job::spawn(title, repaint, move |ctx| {
        ctx.progress(None, format!("writing {}", path.display()));
        write_now(&path, draft, hashes)
    })
}

/// What [`write`] runs, on the calling thread (also the last autosave at exit).
pub fn write_now(
    path: &std::path::Path,
    draft: ProjectDraft,
    mut hashes: HashMap<PathBuf, String>,
) -> JobResult<SavedProject> {
    let ProjectDraft {
        mut file,
        paths,
        masks,
        revision,
    } = draft;
    file.files = paths
        .into_iter()
        .map(|path| {
            let sha256 = cached_hash(&mut hashes, &path)?;
            Ok(FileEntry { path, sha256 })
        })
        .collect::<Result<Vec<_>, ProjectError>>()?;
    file.masks = masks
        .iter()
        .map(|(key, mask)| encode_mask(key, mask))
        .collect::<Result<Vec<_>, ProjectError>>()?;
    project::write(path, &file)?;
    Ok(SavedProject {
        path: path.to_path_buf(),
        revision,
        hashes,
    })
}

/// A mask image read for an image.
pub struct ImportedMask {
    /// The image the mask is for.
    pub key: ImageKey,
    /// The mask image file.
    pub path: PathBuf,
    /// The mask, at the image's size.
    pub mask: Mask,
    /// What was adapted to fit the image, if anything.
    pub note: Option<String>,
}

/// Reads the mask image at `path` for the image `key` of `width` x `height`.
pub fn import_mask(
    path: PathBuf,
    key: ImageKey,
    (width, height): (u32, u32),
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<ImportedMask> {
    Job::spawn("Importing the mask", repaint, move |_| {
        let (mask, note) = crate::io::mask::import_mask(&path, width, height)?;
        Ok(ImportedMask {
            key,
            path,
            mask,
            note,
        })
    })
}
