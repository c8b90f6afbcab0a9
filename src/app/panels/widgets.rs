//! Small widgets the panels share.
use eframe::egui;

use crate::app::action::Action;
use crate::app::commands::Command;

/// A button that runs `command`, with its shortcut and tooltip.
pub fn command_button(
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
