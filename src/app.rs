//! The desktop application (egui/eframe).
//!
//! Layout follows eframe_template and the rerun viewer (see `docs/app-architecture.md` of the
//! shared docs). The layers, each importing only those below it:
//! - [`state`]: plain data that panels read ([`state::AppState`]);
//! - [`commands`] (declared once, with label, tooltip, shortcut and menu) and [`action`]: what
//!   a user can do;
//! - [`jobs`]: the machinery the app object owns, one spawn / poll / cancel mechanism and one
//!   file of job functions per domain;
//! - [`handlers`]: what each command and action does, and how job results are applied;
//! - [`dispatch`]: routes actions and job events to the handlers;
//! - [`panels`] and [`textures`]: draw the state and push actions;
//! - [`ui`]: the eframe app that owns the state, the jobs and the textures.
//!
//! UI state is only touched on the UI thread; file reading, hashing, encoding, dialogs and
//! model code run in jobs, through the library.
pub mod action;
pub mod commands;
pub mod dispatch;
pub mod handlers;
pub mod jobs;
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
        .with_title(state::APP_ID)
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
        persistence_path: eframe::storage_dir(state::APP_ID).map(|dir| dir.join("app.ron")),
        ..Default::default()
    };
    eframe::run_native(
        state::APP_ID,
        options,
        Box::new(|cc| Ok(Box::new(ui::StudioApp::new(cc, paths, clip)))),
    )
    .map_err(|err| anyhow::anyhow!("could not open the application window: {err}"))?;
    Ok(ExitCode::SUCCESS)
}
