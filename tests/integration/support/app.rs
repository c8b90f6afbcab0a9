//! The app-test harness: the real [`StudioApp`] in egui_kittest (no window), driven through
//! its public state and frame calls only, so that it does not depend on how `crate::app` is
//! laid out inside.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use eframe::egui::{Key, Modifiers, vec2};
use egui_kittest::Harness;
use mvfa_studio::app::state::{AppState, PersistedState};
use mvfa_studio::app::ui::StudioApp;

/// The app in a test harness.
pub type AppHarness = Harness<'static, StudioApp>;

/// Fresh app state on the CPU backend (no GPU probe), autosaving to `autosave` if given.
pub fn cpu_state(autosave: Option<PathBuf>) -> AppState {
    let persisted = PersistedState {
        force_cpu: true,
        ..Default::default()
    };
    AppState::new(persisted, autosave)
}

/// The app over `state` in a `width x height` (logical points) harness.
pub fn harness(state: AppState, [width, height]: [f32; 2]) -> AppHarness {
    Harness::builder()
        .with_size(vec2(width, height))
        .build_ui_state(
            |ui, app: &mut StudioApp| app.frame(ui),
            StudioApp::with_state(state),
        )
}

/// Steps frames until `done` holds (jobs run on threads), failing after `secs` with the log
/// and the PACS status.
pub fn wait_until(h: &mut AppHarness, what: &str, secs: u64, done: impl Fn(&AppState) -> bool) {
    let start = Instant::now();
    loop {
        h.step();
        if done(&h.state().state) {
            return;
        }
        let state = &h.state().state;
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}; PACS status: {:?}; log: {:?}",
            state.pacs.status,
            state.log
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Presses `key` with `modifiers` and runs one frame.
pub fn press(h: &mut AppHarness, modifiers: Modifiers, key: Key) {
    h.key_press_modifiers(modifiers, key);
    h.step();
}
