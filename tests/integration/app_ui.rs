//! UI tests of the app shell (egui_kittest, no window): backend and weights status, a real
//! weights load through the background job, and a clear message for a bad file.

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use mvfa_studio::app::action::Action;
use mvfa_studio::app::commands::Command;
use mvfa_studio::app::panels::draw;
use mvfa_studio::app::state::viewer::SideTab;
use mvfa_studio::app::state::{AppState, WeightsStatus};
use mvfa_studio::app::textures::Textures;
use mvfa_studio::app::ui::StudioApp;

use crate::support::app::cpu_state;
use crate::support::tiny_clip_hf;

/// An app on the CPU with no window, loading `weights`.
fn app_loading(weights: std::path::PathBuf) -> (StudioApp, eframe::egui::Context) {
    let mut app = StudioApp::with_state(cpu_state(None));
    let ctx = eframe::egui::Context::default();
    app.apply(Action::LoadWeightsFrom(weights), &ctx);
    (app, ctx)
}

fn wait_for_load(app: &mut StudioApp, ctx: &eframe::egui::Context) {
    for _ in 0..2000 {
        app.poll(ctx);
        if !matches!(app.state.weights, WeightsStatus::Loading { .. }) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("weights did not finish loading");
}

#[test]
fn shows_backend_device_and_weights_status() {
    let mut state = cpu_state(None);
    state.viewer.tab = SideTab::Model;
    // The status bar names the device in a few words; the Model tab says how the matmul
    // kernel was chosen.
    let (short_device, device) = (
        state.backend.short_device.clone(),
        state.backend.device.clone(),
    );
    assert!(
        short_device.len() < device.len(),
        "{short_device:?} / {device:?}"
    );
    let mut actions = Vec::new();
    let mut textures = Textures::default();
    let mut harness = Harness::new_ui_state(
        |ui, state: &mut AppState| draw(ui, state, &mut textures, &mut actions),
        state,
    );
    harness.run();
    harness.get_by_label("Backend");
    harness.get_by_label("ndarray (CPU)");
    harness.get_by_label(&short_device);
    harness.get_by_label(&device);
    harness.get_by_label("No weights loaded");
    harness.get_by_label(Command::OpenWeights.label()).click();
    harness.run();
    drop(harness);
    actions.retain(|a| matches!(a, Action::Run(_)));
    assert_eq!(actions, vec![Action::Run(Command::OpenWeights)]);
}

#[test]
fn loads_weights_in_the_background_and_reports_them() {
    let (mut app, ctx) = app_loading(tiny_clip_hf());
    wait_for_load(&mut app, &ctx);
    let mut state = app.state;
    let WeightsStatus::Loaded(summary) = &state.weights else {
        panic!("expected a loaded status, got {:?}", state.weights);
    };
    assert!(
        summary.lines[0].contains("Hugging Face"),
        "{:?}",
        summary.lines
    );
    assert_eq!(
        state.persisted.weights_path.as_deref(),
        Some(tiny_clip_hf().as_path())
    );
    state.viewer.tab = SideTab::Model;
    let mut textures = Textures::default();
    let mut harness = Harness::new_ui_state(
        |ui, state: &mut AppState| draw(ui, state, &mut textures, &mut Vec::new()),
        state,
    );
    harness.run();
    harness.get_by_label("Layout: Hugging Face CLIPModel");
}

#[test]
fn a_bad_weights_file_gives_a_clear_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.safetensors");
    std::fs::write(&bad, b"this is not a safetensors file").unwrap();
    let (mut app, ctx) = app_loading(bad.clone());
    wait_for_load(&mut app, &ctx);
    let state = app.state;
    let WeightsStatus::Failed { path, message } = &state.weights else {
        panic!("expected a failure, got {:?}", state.weights);
    };
    assert_eq!(path, &bad);
    assert!(message.contains("broken.safetensors"), "{message}");
    assert_eq!(
        state.persisted.weights_path, None,
        "a failed load must not be remembered"
    );
}

#[test]
fn offline_download_says_to_choose_a_file() {
    let mut state = cpu_state(None);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    state.download_source.endpoint = Some(endpoint);
    let cache = tempfile::tempdir().unwrap();
    state.download_cache = Some(cache.path().to_path_buf());
    let mut harness = Harness::new_ui_state(
        |ui, app: &mut StudioApp| app.frame(ui),
        StudioApp::with_state(state),
    );
    harness
        .state_mut()
        .pending
        .push(Action::Run(Command::DownloadWeights));
    harness.step();
    for _ in 0..2000 {
        harness.step();
        if harness.state().jobs.download.is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let state = &harness.state().state;
    let WeightsStatus::Failed { message, .. } = &state.weights else {
        panic!("expected a failure, got {:?}", state.weights);
    };
    assert!(message.contains("cannot be reached"), "{message}");
    assert!(message.contains("Open CLIP weights"), "{message}");
    assert!(!state.activity.session);
}
