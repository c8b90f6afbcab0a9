//! PACS actions: search studies on the selected node, list a study's series, retrieve a study
//! or one series into the browser, send the
//! last export's DICOM files (Secondary Captures and the SRs of the score table) back. Each
//! runs as a background job through the `pacs` library; the node's credentials never reach
//! the log.
use std::path::PathBuf;

use eframe::egui;

use super::{Action, open, repaint};
use crate::app::jobs::{Job, JobStatus};
use crate::app::state::AppState;
use crate::app::state::pacs::{PacsJobKind, PacsOutcome};
use crate::pacs::{GetTarget, Level, Node, Query, connect, retrieve};

fn node(state: &mut AppState) -> Option<Node> {
    let pacs = &state.pacs;
    let found = pacs
        .node
        .as_deref()
        .and_then(|name| pacs.settings.node(name))
        .cloned();
    if found.is_none() {
        state.pacs.status = "No PACS node: add one with `mvfa-studio pacs nodes add NAME \
                             --host H --port P --aet AE` (DIMSE) or `--url URL` (DICOMweb)"
            .into();
    }
    found
}

fn optional(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// Applies a PACS action; false when `action` is not one.
pub fn apply(state: &mut AppState, action: &Action, ctx: &egui::Context) -> bool {
    match action {
        Action::SetPacsNode(name) => state.pacs.node = Some(name.clone()),
        Action::SetPacsForm(form) => state.pacs.form = form.clone(),
        Action::PacsSearch => search(state, ctx),
        Action::PacsRetrieve(index) => {
            if let Some(study) = state.pacs.matches.get(*index).cloned() {
                retrieve(state, study, None, ctx);
            }
        }
        Action::PacsListSeries(index) => list_series(state, *index, ctx),
        Action::PacsRetrieveSeries(index) => {
            let chosen = state
                .pacs
                .series
                .as_ref()
                .and_then(|(_, series)| series.get(*index))
                .cloned();
            if let Some(series) = chosen {
                let uid = series.series_uid.clone();
                retrieve(state, series, Some(uid), ctx);
            }
        }
        Action::PacsSendResults => send_results(state, ctx),
        _ => return false,
    }
    true
}

fn busy(state: &mut AppState) -> bool {
    if state.pacs.job.is_some() {
        state.pacs.status = "A PACS job is running: wait for it or cancel it (Escape)".into();
        return true;
    }
    false
}

fn search(state: &mut AppState, ctx: &egui::Context) {
    if busy(state) {
        return;
    }
    let Some(node) = node(state) else {
        return;
    };
    let f = &state.pacs.form;
    let query = Query {
        level: Level::Study,
        patient_id: optional(&f.patient_id),
        patient_name: optional(&f.patient_name),
        date_from: optional(&f.date_from),
        date_to: optional(&f.date_to),
        modality: optional(&f.modality),
        accession: optional(&f.accession),
        ..Query::default()
    };
    if let Err(e) = query.validate() {
        state.pacs.status = e.to_string();
        return;
    }
    state.pacs.status = format!("Searching {}…", node.name);
    let job = Job::spawn("Searching the PACS", repaint(ctx), move |_| {
        let client = connect(&node).map_err(|e| e.to_string())?;
        client
            .find(&query)
            .map(PacsOutcome::Found)
            .map_err(|e| e.to_string())
    });
    state.pacs.job = Some((PacsJobKind::Find, job));
}

/// Lists the series of the study at `index` of the search results.
fn list_series(state: &mut AppState, index: usize, ctx: &egui::Context) {
    if busy(state) {
        return;
    }
    let Some(study) = state.pacs.matches.get(index).cloned() else {
        return;
    };
    let Some(node) = node(state) else {
        return;
    };
    let query = Query {
        level: Level::Series,
        study_uid: Some(study.study_uid.clone()),
        ..Query::default()
    };
    state.pacs.status = format!("Listing the series of study {}…", study.study_uid);
    let job = Job::spawn("Listing series on the PACS", repaint(ctx), move |_| {
        let client = connect(&node).map_err(|e| e.to_string())?;
        client
            .find(&query)
            .map(|series| PacsOutcome::Series(study.study_uid, series))
            .map_err(|e| e.to_string())
    });
    state.pacs.job = Some((PacsJobKind::FindSeries, job));
}

/// Retrieves the study of `found` (or only its series `series_uid`) into the PACS folder and
/// opens what arrived in the browser.
fn retrieve(
    state: &mut AppState,
    found: crate::pacs::Match,
    series_uid: Option<String>,
    ctx: &egui::Context,
) {
    if busy(state) {
        return;
    }
    let Some(node) = node(state) else {
        return;
    };
    let folder = state.pacs.folder.clone();
    state.pacs.status = match &series_uid {
        Some(series) => format!("Retrieving series {series}…"),
        None => format!("Retrieving study {}…", found.study_uid),
    };
    let job = Job::spawn("Retrieving from the PACS", repaint(ctx), move |job| {
        let client = connect(&node).map_err(|e| e.to_string())?;
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
        )
        .map_err(|e| e.to_string())?;
        let study_folder = folder.join(&found.study_uid);
        Ok(PacsOutcome::Retrieved(match &series_uid {
            Some(series) => study_folder.join(series),
            None => study_folder,
        }))
    });
    state.pacs.job = Some((PacsJobKind::Retrieve, job));
}

fn send_results(state: &mut AppState, ctx: &egui::Context) {
    if busy(state) {
        return;
    }
    let files: Vec<PathBuf> = state
        .pacs
        .last_export_dicom
        .iter()
        .filter(|p| p.is_file())
        .cloned()
        .collect();
    if files.is_empty() {
        state.pacs.status = "No results to send: export with \"DICOM Secondary Capture\" \
                             ticked first (Results > Export…)"
            .into();
        return;
    }
    let Some(node) = node(state) else {
        return;
    };
    state.pacs.status = format!("Sending {} result(s) to {}…", files.len(), node.name);
    let job = Job::spawn("Sending results to the PACS", repaint(ctx), move |job| {
        let client = connect(&node).map_err(|e| e.to_string())?;
        for (i, file) in files.iter().enumerate() {
            if job.is_cancelled() {
                return Err("cancelled".into());
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
    });
    state.pacs.job = Some((PacsJobKind::Send, job));
}

/// Applies the PACS job's outcome; a retrieved study opens in the browser.
pub fn poll(state: &mut AppState, ctx: &egui::Context) {
    let Some((kind, job)) = state.pacs.job.as_mut() else {
        return;
    };
    let kind = *kind;
    let status = job.poll();
    match status {
        JobStatus::Running { message, .. } => {
            if kind == PacsJobKind::Retrieve {
                state.pacs.status = format!("Retrieving: {message}");
            }
        }
        JobStatus::Succeeded(outcome) => {
            state.pacs.job = None;
            match outcome {
                PacsOutcome::Found(matches) => {
                    state.pacs.status = format!("{} study(ies) found", matches.len());
                    state.pacs.matches = matches;
                    state.pacs.series = None;
                }
                PacsOutcome::Series(study_uid, series) => {
                    state.pacs.status = format!("{} series in study {study_uid}", series.len());
                    state.pacs.series = Some((study_uid, series));
                }
                PacsOutcome::Retrieved(folder) => {
                    state.pacs.status = format!("Retrieved into {}", folder.display());
                    state.log.push(state.pacs.status.clone());
                    open(state, vec![folder], ctx);
                }
                PacsOutcome::Sent(n) => {
                    state.pacs.status = format!("Sent {n} result(s)");
                    state.log.push(state.pacs.status.clone());
                }
            }
        }
        JobStatus::Failed(message) => {
            state.pacs.job = None;
            state.pacs.status = message.clone();
            state.log.push(message);
        }
        JobStatus::Cancelled => {
            state.pacs.job = None;
            state.pacs.status = "Cancelled".into();
        }
    }
}
