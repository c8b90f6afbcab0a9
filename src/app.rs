//! The desktop application (egui/eframe).
//!
//! Layout follows eframe_template and the rerun viewer (see `docs/app-architecture.md` of the
//! shared docs): one [`state::AppState`], a [`commands::Command`] enum that menus, help,
//! palette and shortcuts iterate, [`panels`] that read the state and push
//! [`dispatch::Action`]s, one [`dispatch`] that applies them, background [`jobs`] that report
//! through channels and can be cancelled, and a [`textures`] cache. UI state is only touched
//! on the UI thread; file reading and model code run in the jobs, through the library.
pub mod commands;
pub mod dispatch;
pub mod jobs;
pub mod model_jobs;
pub mod panels;
pub mod state;
pub mod textures;
pub mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

/// Opens the main window, with `paths` (files, folders, DICOMDIRs) opened in the browser, and
/// blocks until it is closed.
pub fn run(paths: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title(ui::APP_ID)
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        ui::APP_ID,
        options,
        Box::new(|cc| Ok(Box::new(ui::StudioApp::new(cc, paths)))),
    )
    .map_err(|err| anyhow::anyhow!("could not open the application window: {err}"))?;
    Ok(ExitCode::SUCCESS)
}
