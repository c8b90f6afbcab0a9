//! PACS jobs: search studies, list a study's series, retrieve into the PACS folder, send
//! result files. The node's credentials never reach a message.
use std::path::PathBuf;

use super::runner::{Job, JobError};
use crate::pacs::{GetTarget, Level, Match, Node, Query, connect, retrieve};

/// How a PACS job ended.
pub enum PacsOutcome {
    /// The studies found.
    Found(Vec<Match>),
    /// The series of one study (its StudyInstanceUID, the series found).
    Series(String, Vec<Match>),
    /// A study retrieved into this folder.
    Retrieved(PathBuf),
    /// Results sent: how many files.
    Sent(usize),
}

/// Searches studies matching `query` on `node`.
pub fn find(
    node: Node,
    query: Query,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<PacsOutcome> {
    Job::spawn("Searching the PACS", repaint, move |_| {
        let client = connect(&node)?;
        Ok(PacsOutcome::Found(client.find(&query)?))
    })
}

/// Lists the series of the study `study_uid` on `node`.
pub fn list_series(
    node: Node,
    study_uid: String,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<PacsOutcome> {
    let query = Query {
        level: Level::Series,
        study_uid: Some(study_uid.clone()),
        ..Query::default()
    };
    Job::spawn("Listing series on the PACS", repaint, move |_| {
        let client = connect(&node)?;
        Ok(PacsOutcome::Series(study_uid, client.find(&query)?))
    })
}

/// Retrieves the study of `found` (or only its series `series_uid`) into `folder` (one
/// folder per study, one per series inside).
pub fn retrieve(
    node: Node,
    found: Match,
    series_uid: Option<String>,
    folder: PathBuf,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<PacsOutcome> {
    Job::spawn("Retrieving from the PACS", repaint, move |job| {
        let client = connect(&node)?;
        let target = GetTarget {
            study_uid: found.study_uid.clone(),
            series_uid: series_uid.clone(),
        };
        retrieve::get(
            client.as_ref(),
            &target,
            &folder,
            &mut |p| {
                job.progress(
                    Some((p.skipped + p.written) as f32 / p.total.max(1) as f32),
                    format!("{} of {} instances", p.skipped + p.written, p.total),
                )
            },
            job.cancel_flag(),
        )?;
        let study_folder = folder.join(&found.study_uid);
        Ok(PacsOutcome::Retrieved(match &series_uid {
            Some(series) => study_folder.join(series),
            None => study_folder,
        }))
    })
}

/// Sends `files` to `node`, one by one.
pub fn send(
    node: Node,
    files: Vec<PathBuf>,
    repaint: impl Fn() + Send + Sync + 'static,
) -> Job<PacsOutcome> {
    Job::spawn("Sending results to the PACS", repaint, move |job| {
        let client = connect(&node)?;
        for (i, file) in files.iter().enumerate() {
            if job.is_cancelled() {
                return Err(JobError::cancelled());
            }
            job.progress(
                Some(i as f32 / files.len() as f32),
                format!("{} of {}", i + 1, files.len()),
            );
            client
                .store(file)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        Ok(PacsOutcome::Sent(files.len()))
    })
}
