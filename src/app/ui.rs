//! The eframe integration: [`StudioApp`] owns the state, the jobs and the textures, and runs
//! one frame as poll jobs -> shortcuts and dropped files -> draw (pure, pushes actions) ->
//! dispatch.
use std::path::PathBuf;
use std::time::Duration;

use eframe::egui;

use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::dispatch;
use crate::app::jobs::Jobs;
use crate::app::panels;
use crate::app::state::{APP_ID, AppState, PersistedState};
use crate::app::textures::Textures;

const STORAGE_KEY: &str = "mvfa-studio-state";

/// Overrides the autosave interval, in seconds (for tests and for sites that want it
/// shorter than a minute).
pub const AUTOSAVE_SECONDS_VAR: &str = "MVFA_STUDIO_AUTOSAVE_SECONDS";

/// The eframe application: the state panels read, the jobs and machinery, the textures and
/// the actions waiting for the next frame.
pub struct StudioApp {
    /// Everything the UI shows (plain data).
    pub state: AppState,
    /// The background jobs and the model session.
    pub jobs: Jobs,
    /// Textures the viewer draws, cached.
    pub textures: Textures,
    /// Actions to apply at the next frame (files from the command line, tests).
    pub pending: Vec<Action>,
}

impl StudioApp {
    /// The app as eframe starts it: settings from eframe's storage, the autosave in the data
    /// folder, `paths` (from `mvfa-studio view PATH...`) opened at once.
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        paths: Vec<PathBuf>,
        clip: Option<PathBuf>,
    ) -> Self {
        let persisted: PersistedState = cc
            .storage
            .and_then(|storage| eframe::get_value(storage, STORAGE_KEY))
            .unwrap_or_default();
        let autosave = eframe::storage_dir(APP_ID).map(|dir| dir.join("autosave.mvfa.json"));
        let mut app = Self::with_state(AppState::new(persisted, autosave));
        if let Some(seconds) = std::env::var(AUTOSAVE_SECONDS_VAR)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
        {
            app.state.project.autosave_every = Duration::from_secs_f64(seconds);
        }
        if let Some(path) = clip.or_else(|| app.state.persisted.weights_path.clone())
            && path.exists()
        {
            app.pending.push(Action::LoadWeightsFrom(path));
        }
        if !paths.is_empty() {
            app.pending.push(Action::Open(paths));
        }
        app
    }

    /// The app around an existing state, with no texture yet and no pending action (what
    /// [`StudioApp::new`] builds on, and what tests start from).
    pub fn with_state(state: AppState) -> Self {
        Self {
            state,
            jobs: Jobs::default(),
            textures: Textures::default(),
            pending: Vec::new(),
        }
    }

    /// Applies `action` at once (what a frame does with the actions of its panels).
    pub fn apply(&mut self, action: Action, ctx: &egui::Context) {
        dispatch::apply(&mut self.state, &mut self.jobs, action, ctx);
        self.jobs.publish(&mut self.state);
    }

    /// Applies what the jobs reported (what each frame does first).
    pub fn poll(&mut self, ctx: &egui::Context) {
        dispatch::poll(&mut self.state, &mut self.jobs, ctx);
    }

    /// Finishes what must not be lost when the window closes (results file, autosave).
    pub fn exit(&mut self) {
        dispatch::on_exit(&mut self.state, &mut self.jobs);
    }

    /// One frame: what eframe calls, and what UI tests drive.
    pub fn frame(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.poll(&ctx);
        let mut actions = std::mem::take(&mut self.pending);
        actions.extend(shortcut_actions(&ctx, self.state.viewer.show_palette));
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if !dropped.is_empty() {
            actions.push(Action::Open(dropped));
        }
        panels::draw(ui, &self.state, &mut self.textures, &mut actions);
        for action in actions {
            self.apply(action, &ctx);
        }
    }
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.frame(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.state.persisted);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.exit();
    }
}

/// The commands whose shortcuts were pressed this frame. Shortcuts with more modifiers are
/// tried first (Ctrl+Shift+Z before Ctrl+Z); plain keys are left to a focused text field and
/// to the open command palette (whose field loses its focus on Escape before this runs).
fn shortcut_actions(ctx: &egui::Context, palette_open: bool) -> Vec<Action> {
    let typing = palette_open || ctx.egui_wants_keyboard_input();
    let mut commands: Vec<(Command, egui::KeyboardShortcut)> = Command::ALL
        .into_iter()
        .filter_map(|c| c.shortcut().map(|s| (c, s)))
        .filter(|(_, s)| !typing || s.modifiers.command || s.logical_key == egui::Key::F1)
        .collect();
    commands.sort_by_key(|(_, s)| {
        std::cmp::Reverse(
            s.modifiers.shift as u8 + s.modifiers.command as u8 + s.modifiers.alt as u8,
        )
    });
    commands
        .into_iter()
        .filter(|(_, s)| ctx.input_mut(|input| input.consume_shortcut(s)))
        .map(|(c, _)| Action::Run(c))
        .collect()
}
