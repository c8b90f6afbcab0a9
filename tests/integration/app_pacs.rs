//! The PACS window of the real app against a real Orthanc (`#[ignore = "needs Orthanc"]`;
//! run with `--ignored`, they fail where Orthanc is not installed): search studies, list a study's series, retrieve a study or
//! one series into the study browser,
//! send results back and find them on the server.

use egui_kittest::kittest::Queryable;
use mvfa_studio::app::action::Action;
use mvfa_studio::app::commands::Command;
use mvfa_studio::app::state::pacs::PacsState;
use mvfa_studio::app::state::{AppState, PersistedState};
use mvfa_studio::pacs::{Level, Node, Query, connect};

use dicom_dictionary_std::tags;

use crate::pacs::{corpus, open, orthanc, text};
use crate::support::{
    self,
    app::{AppHarness, cpu_state, harness},
};

fn wait_until(h: &mut AppHarness, what: &str, done: impl Fn(&AppState) -> bool) {
    support::app::wait_until(h, what, 60, done)
}

/// The app with `node` as its only PACS node, retrieving under `dir/pacs`.
fn app_with_node(node: &Node, dir: &std::path::Path) -> AppHarness {
    let mut state = cpu_state(None);
    state.pacs = PacsState::load(None, dir.join("pacs"));
    state.pacs.node = Some(node.name.clone());
    state.pacs.settings.upsert(node.clone());
    harness(state, [1400.0, 900.0])
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn app_pacs_search_retrieve_and_send_results() {
    let orthanc = orthanc("app_pacs_search_retrieve_and_send_results");
    let node = orthanc.dimse();
    let files: Vec<_> = corpus().into_values().collect();
    let server = connect(&node).unwrap();
    server.store(&files[0]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut h = app_with_node(&node, dir.path());

    h.key_press(Command::TogglePacs.shortcut().unwrap().logical_key);
    h.step();
    h.run();
    h.get_by_label("Search").click();
    h.step();
    wait_until(&mut h, "the search", |s| {
        s.activity.pacs.is_none() && !s.pacs.matches.is_empty()
    });
    assert_eq!(h.state().state.pacs.matches.len(), 1);
    let study = h.state().state.pacs.matches[0].study_uid.clone();

    h.run();
    h.get_by_label("Retrieve").click();
    h.step();
    wait_until(&mut h, "the retrieval", |s| {
        s.activity.pacs.is_none() && s.activity.scan.is_none() && s.browser.len() == 1
    });
    let retrieved = &h.state().state.browser.groups[0].items[0].path;
    assert!(retrieved.starts_with(dir.path().join("pacs").join(&study)));
    // The dataset arrives whole (the file meta group is the receiver's own).
    let (got, sent) = (open(retrieved), open(&files[0]));
    for tag in [
        tags::SOP_INSTANCE_UID,
        tags::STUDY_INSTANCE_UID,
        tags::PATIENT_ID,
    ] {
        assert_eq!(text(&got, tag), text(&sent, tag));
    }
    assert_eq!(
        got.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap(),
        sent.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap(),
        "pixel data byte-identical"
    );

    // "Send results" stores the last export's DICOM files on the node.
    h.state_mut().state.pacs.last_export_dicom = vec![files[1].clone()];
    h.state_mut().pending.push(Action::PacsSendResults);
    h.step();
    wait_until(&mut h, "the send", |s| s.activity.pacs.is_none());
    assert!(
        h.state().state.pacs.status.starts_with("Sent 1"),
        "{}",
        h.state().state.pacs.status
    );
    let result = open(&files[1]);
    let found = server
        .find(&Query {
            level: Level::Instance,
            study_uid: Some(text(&result, tags::STUDY_INSTANCE_UID)),
            series_uid: Some(text(&result, tags::SERIES_INSTANCE_UID)),
            ..Query::default()
        })
        .unwrap();
    assert!(
        found
            .iter()
            .any(|m| m.sop_instance_uid == text(&result, tags::SOP_INSTANCE_UID)),
        "the sent result is on the server"
    );
}

#[test]
fn app_pacs_without_a_node_says_how_to_add_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = AppState::new(PersistedState::default(), None);
    state.pacs = PacsState::load(None, dir.path().join("pacs"));
    let mut h = harness(state, [1400.0, 900.0]);
    h.state_mut().pending.push(Action::PacsSearch);
    h.step();
    let status = h.state().state.pacs.status.clone();
    assert!(status.contains("mvfa-studio pacs nodes add"), "{status}");
    h.state_mut().pending.push(Action::PacsSendResults);
    h.step();
    let status = h.state().state.pacs.status.clone();
    assert!(status.contains("export"), "{status}");
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn app_pacs_lists_a_studys_series_and_retrieves_one_series() {
    let orthanc = orthanc("app_pacs_lists_a_studys_series_and_retrieves_one_series");
    let node = orthanc.dimse();
    let corpus = corpus();
    let server = connect(&node).unwrap();
    for path in corpus.values() {
        server.store(path).unwrap();
    }
    // The corpus is one study of several series; the test retrieves the one with most images.
    let mut per_series = std::collections::BTreeMap::<String, usize>::new();
    for path in corpus.values() {
        *per_series
            .entry(text(&open(path), tags::SERIES_INSTANCE_UID))
            .or_default() += 1;
    }
    assert!(per_series.len() > 1, "{per_series:?}");

    let dir = tempfile::tempdir().unwrap();
    let mut h = app_with_node(&node, dir.path());
    h.state_mut().state.pacs.open = true;
    h.run();
    h.get_by_label("Search").click();
    h.step();
    wait_until(&mut h, "the search", |s| {
        s.activity.pacs.is_none() && !s.pacs.matches.is_empty()
    });
    let study = h.state().state.pacs.matches[0].study_uid.clone();

    h.run();
    h.get_by_label("Series").click();
    h.step();
    wait_until(&mut h, "the series list", |s| {
        s.activity.pacs.is_none() && s.pacs.series.is_some()
    });
    let (listed_study, series) = h.state().state.pacs.series.clone().unwrap();
    assert_eq!(listed_study, study);
    let listed: std::collections::BTreeSet<_> =
        series.iter().map(|s| s.series_uid.clone()).collect();
    assert_eq!(listed, per_series.keys().cloned().collect());

    let (row, biggest) = series
        .iter()
        .enumerate()
        .max_by_key(|(_, s)| per_series[&s.series_uid])
        .map(|(i, s)| (i, s.series_uid.clone()))
        .unwrap();
    h.run();
    h.get_all_by_label("Retrieve series")
        .nth(row)
        .unwrap()
        .click();
    h.step();
    let expected = per_series[&biggest];
    wait_until(&mut h, "the series retrieval", |s| {
        s.activity.pacs.is_none() && s.activity.scan.is_none() && s.browser.len() == expected
    });
    let series_folder = dir.path().join("pacs").join(&study).join(&biggest);
    for group in &h.state().state.browser.groups {
        for item in &group.items {
            assert!(
                item.path.starts_with(&series_folder),
                "{}",
                item.path.display()
            );
            assert_eq!(text(&open(&item.path), tags::SERIES_INSTANCE_UID), biggest);
        }
    }
    // Only that series came: the study folder holds no other.
    assert_eq!(
        std::fs::read_dir(dir.path().join("pacs").join(&study))
            .unwrap()
            .count(),
        1
    );
}

/// A study whose Parametric Map and Segmentation sit in the PACS beside the scan (as an export
/// sent them, or another tool's): retrieved into the app, the objects are read and laid over
/// the slices they reference, and the scan's slices stay the browser's images.
#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn app_pacs_retrieves_result_objects_and_lays_them_over_their_series() {
    let orthanc = orthanc("app_pacs_retrieves_result_objects");
    let node = orthanc.dimse();
    let server = connect(&node).unwrap();
    let source_dir = tempfile::tempdir().unwrap();
    // An identified export: the objects are in the MR series' own study.
    let (out, summary) = crate::dicom_objects::export_everything(source_dir.path(), true);
    let mr: Vec<std::path::PathBuf> = std::fs::read_dir(source_dir.path().join("mr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for file in &mr {
        server.store(file).unwrap();
    }
    let study = text(&open(&mr[0]), tags::STUDY_INSTANCE_UID);
    let objects: Vec<&std::path::PathBuf> = summary
        .objects
        .iter()
        .filter(|(_, o)| o.study_instance_uid == study)
        .map(|(p, _)| p)
        .collect();
    assert!(
        !objects.is_empty(),
        "{:?} in {}",
        summary.objects,
        out.display()
    );
    for path in &objects {
        server.store(path).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let mut h = app_with_node(&node, dir.path());
    h.state_mut().pending.push(Action::PacsSearch);
    h.step();
    wait_until(&mut h, "the search", |s| {
        s.activity.pacs.is_none() && !s.pacs.matches.is_empty()
    });
    let index = h
        .state()
        .state
        .pacs
        .matches
        .iter()
        .position(|m| m.study_uid == study)
        .unwrap();
    h.state_mut().pending.push(Action::PacsRetrieve(index));
    h.step();
    let expected = objects.len();
    wait_until(&mut h, "the retrieval and the objects", move |s| {
        s.activity.pacs.is_none()
            && s.activity.scan.is_none()
            && s.imported.objects.len() == expected
            && s.current_stack().is_some()
    });
    let s = &h.state().state;
    assert_eq!(
        s.browser.len(),
        mr.len(),
        "only the scan's slices are images"
    );
    let stack = s.current_stack().unwrap();
    let key = s.viewer.current.clone().unwrap();
    let m = s
        .imported
        .map_over(stack, key.frame)
        .expect("a map over the slice shown");
    assert!(m.caption.starts_with("imported "), "{}", m.caption);
}
