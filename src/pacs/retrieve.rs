//! Retrieval into a local folder, the same for both protocols: list the instances, skip those
//! already on disk, fetch the rest, and write each one atomically as
//! `<folder>/<study UID>/<series UID>/<SOP instance UID>.dcm`.
//!
//! Because a file only appears once complete, an interrupted retrieval resumes by running it
//! again, and nothing half-written is ever left behind. UIDs become path components only after
//! [`valid_uid`] (digits and dots), so a server cannot steer files outside the folder.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::query::valid_uid;
use super::{InstanceRef, PacsClient, PacsError, Received};
use crate::io::export::write_atomically;

/// What to retrieve: a study, or one series of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetTarget {
    /// StudyInstanceUID (0020,000D) of the study.
    pub study_uid: String,
    /// SeriesInstanceUID (0020,000E) of the one series to fetch; `None` fetches the whole
    /// study.
    pub series_uid: Option<String>,
}

impl GetTarget {
    pub(crate) fn validate(&self) -> Result<(), PacsError> {
        for uid in std::iter::once(&self.study_uid).chain(self.series_uid.as_ref()) {
            if !valid_uid(uid) {
                return Err(PacsError::Invalid(format!("not a DICOM UID: {uid:?}")));
            }
        }
        Ok(())
    }
}

/// Where a retrieval stands, reported after the listing and after each written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Instances in the study or series.
    pub total: usize,
    /// Already present from an earlier run, not fetched again.
    pub skipped: usize,
    /// Written by this run so far.
    pub written: usize,
}

/// The outcome of a complete retrieval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetReport {
    /// Instances the server listed for the study or series.
    pub total: usize,
    /// Already present from an earlier run, not fetched again.
    pub skipped: usize,
    /// Written by this run.
    pub written: usize,
}

/// The local file of an instance.
pub fn instance_path(folder: &Path, inst: &InstanceRef) -> PathBuf {
    folder
        .join(&inst.study_uid)
        .join(&inst.series_uid)
        .join(format!("{}.dcm", inst.sop_instance_uid))
}

/// Retrieves `target` into `folder` (see the module docs). Fails when the server lists
/// nothing, sends an instance it was not asked for, or fewer than it listed; the files written
/// before the failure stay (they are complete) and a rerun fetches only the rest.
///
/// Setting `cancel` stops the retrieval with [`PacsError::Cancelled`] after the instance in
/// transfer (DIMSE aborts the association, DICOMweb requests no more).
pub fn get(
    client: &dyn PacsClient,
    target: &GetTarget,
    folder: &Path,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<GetReport, PacsError> {
    let check = || {
        if cancel.load(Ordering::Relaxed) {
            Err(PacsError::Cancelled)
        } else {
            Ok(())
        }
    };
    target.validate()?;
    check()?;
    let listed = client.instances(target)?;
    check()?;
    if listed.is_empty() {
        return Err(PacsError::Invalid(format!(
            "the server lists no instances for study {}{}",
            target.study_uid,
            target
                .series_uid
                .as_ref()
                .map(|s| format!(", series {s}"))
                .unwrap_or_default()
        )));
    }
    if let Some(bad) = listed.iter().find(|i| {
        !(valid_uid(&i.study_uid) && valid_uid(&i.series_uid) && valid_uid(&i.sop_instance_uid))
    }) {
        return Err(PacsError::Invalid(format!(
            "the server listed an instance with malformed UIDs: {bad:?}"
        )));
    }
    let (present, wanted): (Vec<_>, Vec<_>) = listed
        .into_iter()
        .partition(|i| instance_path(folder, i).is_file());
    let mut state = Progress {
        total: present.len() + wanted.len(),
        skipped: present.len(),
        written: 0,
    };
    progress(state);
    let mut done = vec![false; wanted.len()];
    client.fetch(&wanted, &mut |received: Received| {
        let index = wanted
            .iter()
            .position(|w| w.sop_instance_uid == received.sop_instance_uid)
            .ok_or_else(|| {
                PacsError::Invalid(format!(
                    "the server sent instance {:?}, which was not requested",
                    received.sop_instance_uid
                ))
            })?;
        let path = instance_path(folder, &wanted[index]);
        write_instance(&path, &received.bytes)?;
        if !std::mem::replace(&mut done[index], true) {
            state.written += 1;
        }
        progress(state);
        check()
    })?;
    if state.written < wanted.len() {
        return Err(PacsError::Invalid(format!(
            "the server sent {} of the {} requested instances; run again to fetch the rest",
            state.written,
            wanted.len()
        )));
    }
    Ok(GetReport {
        total: state.total,
        skipped: state.skipped,
        written: state.written,
    })
}

fn write_instance(path: &Path, bytes: &[u8]) -> Result<(), PacsError> {
    let write_error = |reason: String| PacsError::WriteFile {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_error(e.to_string()))?;
    }
    write_atomically(path, |w| Ok(w.write_all(bytes)?)).map_err(|e| write_error(e.to_string()))
}
