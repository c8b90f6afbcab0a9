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

/// The desktop entry's id (`mvfa-studio.desktop`), set as the window's app id.
const DESKTOP_ID: &str = "mvfa-studio";

/// The window icon: the 256 px rendering of `packaging/icons/mvfa-studio.svg`.
const WINDOW_ICON_PNG: &[u8] = include_bytes!("../packaging/icons/mvfa-studio-256.png");

/// Opens the main window, with `paths` (files, folders, DICOMDIRs, a project file) opened and
/// the CLIP weights `clip` (else the ones loaded last) loading, and blocks until it is closed.
pub fn run(paths: Vec<PathBuf>, clip: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut viewport = eframe::egui::ViewportBuilder::default()
        .with_title(ui::APP_ID)
        // The X11 WM_CLASS and Wayland app id: matches `mvfa-studio.desktop`, so docks and task
        // bars show the entry's name and icon.
        .with_app_id(DESKTOP_ID)
        .with_inner_size([1280.0, 800.0])
        .with_drag_and_drop(true);
    if let Ok(icon) = eframe::icon_data::from_png_bytes(WINDOW_ICON_PNG) {
        viewport = viewport.with_icon(icon);
    }
    let options = eframe::NativeOptions {
        viewport,
        // The app id would otherwise also name the settings folder: keep it where it was.
        persistence_path: eframe::storage_dir(ui::APP_ID).map(|dir| dir.join("app.ron")),
        ..Default::default()
    };
    eframe::run_native(
        ui::APP_ID,
        options,
        Box::new(|cc| Ok(Box::new(ui::StudioApp::new(cc, paths, clip)))),
    )
    .map_err(|err| anyhow::anyhow!("could not open the application window: {err}"))?;
    Ok(ExitCode::SUCCESS)
}
