//! The desktop application (egui/eframe).
//!
//! Layout follows eframe_template and the rerun viewer: one persisted [`state::AppState`], a
//! [`commands::Command`] enum bound to keyboard shortcuts, and background [`jobs`] that report
//! through channels and can be cancelled. UI state is only touched on the UI thread; model code
//! runs in the jobs.
pub mod commands;
pub mod jobs;
pub mod state;
pub mod ui;

use std::process::ExitCode;

/// Opens the main window and blocks until it is closed.
pub fn run() -> anyhow::Result<ExitCode> {
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("MVFA Studio")
            .with_inner_size([1280.0, 800.0]),
        ..Default::default()
    };
    eframe::run_native(
        "MVFA Studio",
        options,
        Box::new(|cc| Ok(Box::new(ui::StudioApp::new(cc)))),
    )
    .map_err(|err| anyhow::anyhow!("could not open the application window: {err}"))?;
    Ok(ExitCode::SUCCESS)
}
