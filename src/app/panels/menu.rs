//! The menu bar: one menu per [`Menu`], listing its commands; File also lists recent files.
use eframe::egui;

use super::widgets::command_button;
use crate::app::action::Action;
use crate::app::commands::{Command, Menu};
use crate::app::state::AppState;

pub fn show(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    egui::MenuBar::new().ui(ui, |ui| {
        for menu in Menu::ALL {
            ui.menu_button(menu.title(), |ui| {
                for command in Command::ALL.into_iter().filter(|c| c.menu() == menu) {
                    if command == Command::ToggleForceCpu {
                        let mut on = state.persisted.force_cpu;
                        if ui
                            .checkbox(&mut on, command.label())
                            .on_hover_text(command.tooltip())
                            .clicked()
                        {
                            actions.push(Action::Run(command));
                        }
                    } else if command_button(ui, command, actions).clicked() {
                        ui.close();
                    }
                    if command == Command::OpenProject {
                        recent(ui, state, actions);
                    }
                }
            });
        }
    });
}

fn recent(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.add_enabled_ui(!state.persisted.recent.is_empty(), |ui| {
        ui.menu_button("Open recent", |ui| {
            for path in &state.persisted.recent {
                if ui.button(path.display().to_string()).clicked() {
                    actions.push(Action::OpenRecent(path.clone()));
                    ui.close();
                }
            }
        });
    });
}
