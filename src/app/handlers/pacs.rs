//! PACS actions: search studies on the selected node, list a study's series, retrieve a study
//! or one series into the browser, send the
//! last export's DICOM files (Secondary Captures and the SRs of the score table) back. Each
//! runs as a background job through the `pacs` library; the node's credentials never reach
//! the log.
use std::path::PathBuf;

use eframe::egui;

use super::files;
use crate::app::action::Action;
use crate::app::jobs::Jobs;
use crate::app::jobs::pacs::{self as pacs_jobs, PacsOutcome};
use crate::app::jobs::runner::{JobStatus, repaint};
use crate::app::state::AppState;
use crate::app::state::pacs::PacsJobKind;
use crate::pacs::{Level, Match, Node, Query};

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
pub fn apply(state: &mut AppState, jobs: &mut Jobs, action: &Action, ctx: &egui::Context) -> bool {
    match action {
        Action::SetPacsNode(name) => state.pacs.node = Some(name.clone()),
        Action::SetPacsForm(form) => state.pacs.form = form.clone(),
        Action::PacsSearch => search(state, jobs, ctx),
        Action::PacsRetrieve(index) => {
            if let Some(study) = state.pacs.matches.get(*index).cloned() {
                retrieve(state, jobs, study, None, ctx);
            }
        }
        Action::PacsListSeries(index) => list_series(state, jobs, *index, ctx),
        Action::PacsRetrieveSeries(index) => {
            let chosen = state
                .pacs
                .series
                .as_ref()
                .and_then(|(_, series)| series.get(*index))
                .cloned();
            if let Some(series) = chosen {
                let uid = series.series_uid.clone();
                retrieve(state, jobs, series, Some(uid), ctx);
            }
        }
        Action::PacsSendResults => send_results(state, jobs, ctx),
        _ => return false,
    }
    true
}

fn busy(state: &mut AppState, jobs: &Jobs) -> bool {
    if jobs.pacs.is_some() {
        state.pacs.status = "A PACS job is running: wait for it or cancel it (Escape)".into();
        return true;
    }
    false
}

fn search(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if busy(state, jobs) {
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
    jobs.pacs = Some((
        PacsJobKind::Find,
        pacs_jobs::find(node, query, repaint(ctx)),
    ));
}

/// Lists the series of the study at `index` of the search results.
fn list_series(state: &mut AppState, jobs: &mut Jobs, index: usize, ctx: &egui::Context) {
    if busy(state, jobs) {
        return;
    }
    let Some(study) = state.pacs.matches.get(index).cloned() else {
        return;
    };
    let Some(node) = node(state) else {
        return;
    };
    state.pacs.status = format!("Listing the series of study {}…", study.study_uid);
    let job = pacs_jobs::list_series(node, study.study_uid, repaint(ctx));
    jobs.pacs = Some((PacsJobKind::FindSeries, job));
}

/// Retrieves the study of `found` (or only its series `series_uid`) into the PACS folder and
/// opens what arrived in the browser.
fn retrieve(
    state: &mut AppState,
    jobs: &mut Jobs,
    found: Match,
    series_uid: Option<String>,
    ctx: &egui::Context,
) {
    if busy(state, jobs) {
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
    let job = pacs_jobs::retrieve(node, found, series_uid, folder, repaint(ctx));
    jobs.pacs = Some((PacsJobKind::Retrieve, job));
}

fn send_results(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if busy(state, jobs) {
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
    let job = pacs_jobs::send(node, files, repaint(ctx));
    jobs.pacs = Some((PacsJobKind::Send, job));
}

/// Applies the PACS job's outcome; a retrieved study opens in the browser.
pub fn poll(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some((kind, job)) = jobs.pacs.as_mut() else {
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
            jobs.pacs = None;
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
                    files::open(state, jobs, vec![folder], ctx);
                }
                PacsOutcome::Sent(n) => {
                    state.pacs.status = format!("Sent {n} result(s)");
                    state.log.push(state.pacs.status.clone());
                }
            }
        }
        JobStatus::Failed(error) => {
            jobs.pacs = None;
            state.pacs.status = error.message();
            state.log.push(error.message());
        }
        JobStatus::Cancelled => {
            jobs.pacs = None;
            state.pacs.status = "Cancelled".into();
        }
    }
}
