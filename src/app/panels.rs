//! The panels of the main window. Each reads `&AppState` and pushes [`Action`]s; none changes
//! the state or starts a job. The texture cache is the only thing they write to.
mod browser;
mod help;
mod labels;
mod menu;
mod status;
mod viewer;

use eframe::egui;

use crate::app::commands::Command;
use crate::app::dispatch::Action;
use crate::app::state::AppState;
use crate::app::textures::Textures;

/// Draws the whole window from `state`; user actions are appended to `actions`.
pub fn draw(
    ui: &mut egui::Ui,
    state: &AppState,
    textures: &mut Textures,
    actions: &mut Vec<Action>,
) {
    egui::Panel::top("menu").show(ui, |ui| menu::show(ui, state, actions));
    egui::Panel::bottom("status").show(ui, |ui| status::show(ui, state, actions));
    egui::Panel::left("browser")
        .resizable(true)
        .default_size(260.0)
        .max_size(420.0)
        .show(ui, |ui| browser::show(ui, state, textures, actions));
    egui::Panel::right("labels")
        .resizable(true)
        .default_size(280.0)
        .max_size(360.0)
        .show(ui, |ui| labels::show(ui, state, actions));
    egui::CentralPanel::default()
        .frame(egui::Frame::NONE.fill(egui::Color32::BLACK))
        .show(ui, |ui| viewer::show(ui, state, textures, actions));
    help::show_windows(ui.ctx(), state, actions);
}

/// A button that runs `command`, with its shortcut and tooltip.
fn command_button(
    ui: &mut egui::Ui,
    command: Command,
    actions: &mut Vec<Action>,
) -> egui::Response {
    let mut button = egui::Button::new(command.label());
    if command.shortcut().is_some() {
        button = button.shortcut_text(command.shortcut_text(ui.ctx()));
    }
    let response = ui.add(button).on_hover_text(command.tooltip());
    if response.clicked() {
        actions.push(Action::Run(command));
    }
    response
}
