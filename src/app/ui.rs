//! Panels and the eframe integration.
use std::path::Path;

use eframe::egui;

use crate::app::commands::Command;
use crate::app::jobs::JobContext;
use crate::app::state::{AppState, PersistedState, WeightsStatus, WeightsSummary};
use crate::backend::BackendInfo;

const STORAGE_KEY: &str = "mvfa-studio-state";

pub struct StudioApp {
    pub state: AppState,
}

impl StudioApp {
    pub fn new(cc: &eframe::CreationContext<'_>) -> Self {
        let persisted: PersistedState = cc
            .storage
            .and_then(|storage| eframe::get_value(storage, STORAGE_KEY))
            .unwrap_or_default();
        let mut state = AppState::new(persisted);
        if let Some(path) = state.persisted.weights_path.clone()
            && path.exists()
        {
            let ctx = cc.egui_ctx.clone();
            state.start_loading_weights(path, move || ctx.request_repaint());
        }
        Self { state }
    }
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.state.poll_jobs();
        let mut commands = shortcut_commands(ui.ctx());
        draw(ui, &self.state, &mut commands);
        for command in commands {
            execute(&mut self.state, command, ui.ctx());
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.state.persisted);
    }
}

fn shortcut_commands(ctx: &egui::Context) -> Vec<Command> {
    Command::ALL
        .into_iter()
        .filter(|command| {
            command
                .shortcut()
                .is_some_and(|shortcut| ctx.input_mut(|input| input.consume_shortcut(&shortcut)))
        })
        .collect()
}

/// Runs a command on the UI thread.
pub fn execute(state: &mut AppState, command: Command, ctx: &egui::Context) {
    match command {
        Command::OpenWeights => {
            let picked = rfd::FileDialog::new()
                .set_title("Choose CLIP ViT-L/14-336 weights (safetensors)")
                .add_filter("safetensors", &["safetensors"])
                .pick_file();
            if let Some(path) = picked {
                let ctx = ctx.clone();
                state.start_loading_weights(path, move || ctx.request_repaint());
            }
        }
        Command::CancelJob => {
            if let Some(job) = &state.weights_job {
                job.cancel();
            }
        }
        Command::ToggleForceCpu => {
            state.persisted.force_cpu = !state.persisted.force_cpu;
            state.log.push(format!(
                "Always use the CPU: {} (applies at the next start)",
                if state.persisted.force_cpu {
                    "on"
                } else {
                    "off"
                }
            ));
        }
        Command::Quit => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
    }
}

fn command_button(ui: &mut egui::Ui, command: Command, commands: &mut Vec<Command>) {
    let mut button = egui::Button::new(command.label());
    if let Some(shortcut) = command.shortcut() {
        button = button.shortcut_text(ui.ctx().format_shortcut(&shortcut));
    }
    if ui.add(button).clicked() {
        commands.push(command);
        ui.close();
    }
}

/// Draws the whole window from `state`; user actions are appended to `commands`.
pub fn draw(ui: &mut egui::Ui, state: &AppState, commands: &mut Vec<Command>) {
    egui::Panel::top("menu").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                command_button(ui, Command::OpenWeights, commands);
                ui.separator();
                command_button(ui, Command::Quit, commands);
            });
            ui.menu_button("Settings", |ui| {
                let mut force_cpu = state.persisted.force_cpu;
                if ui
                    .checkbox(&mut force_cpu, Command::ToggleForceCpu.label())
                    .clicked()
                {
                    commands.push(Command::ToggleForceCpu);
                }
            });
        });
    });
    egui::Panel::bottom("status").show(ui, |ui| {
        ui.label(state.log.last().map(String::as_str).unwrap_or("Ready"));
    });
    egui::CentralPanel::default().show(ui, |ui| {
        ui.heading("MVFA Studio");
        ui.add_space(8.0);
        egui::Grid::new("backend").num_columns(2).show(ui, |ui| {
            ui.label("Backend");
            ui.label(&state.backend.backend);
            ui.end_row();
            ui.label("Device");
            ui.label(&state.backend.device);
            ui.end_row();
            if let Some(reason) = &state.backend.fallback_reason {
                ui.label("Note");
                ui.label(reason);
                ui.end_row();
            }
            ui.label("CLIP weights");
            weights_status(ui, &state.weights, commands);
            ui.end_row();
        });
    });
}

fn weights_status(ui: &mut egui::Ui, status: &WeightsStatus, commands: &mut Vec<Command>) {
    ui.vertical(|ui| match status {
        WeightsStatus::NotLoaded => {
            ui.label("No weights loaded");
            if ui.button(Command::OpenWeights.label()).clicked() {
                commands.push(Command::OpenWeights);
            }
        }
        WeightsStatus::Loading {
            path,
            fraction,
            message,
        } => {
            ui.label(format!("Loading {}", path.display()));
            let bar = match fraction {
                Some(f) => egui::ProgressBar::new(*f).show_percentage(),
                None => egui::ProgressBar::new(0.0).animate(true),
            };
            ui.add(bar.text(message.as_str()));
            if ui.button(Command::CancelJob.label()).clicked() {
                commands.push(Command::CancelJob);
            }
        }
        WeightsStatus::Loaded(summary) => {
            ui.label(format!("Loaded {}", summary.path.display()));
            for line in &summary.lines {
                ui.label(line);
            }
        }
        WeightsStatus::Failed { path, message } => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("Could not load {}", path.display()),
            );
            ui.label(message);
            if ui.button(Command::OpenWeights.label()).clicked() {
                commands.push(Command::OpenWeights);
            }
        }
    });
}

/// Loads and checks a weights file on a worker thread (see [`AppState::start_loading_weights`]).
pub fn load_weights_summary(
    path: &Path,
    backend: &BackendInfo,
    ctx: &JobContext<WeightsSummary>,
) -> Result<WeightsSummary, String> {
    let _ = (path, backend, ctx);
    Err("loading CLIP weights is not wired up yet".into())
}
