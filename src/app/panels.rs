//! The panels of the main window. Each reads `&AppState` and pushes [`Action`]s; none changes
//! the state or starts a job. The texture cache is the only thing they write to.
mod browser;
mod export;
mod help;
mod labels;
mod menu;
mod model;
mod pacs;
mod results;
mod status;
mod strip;
mod viewer;
mod widgets;

use eframe::egui;

use crate::app::action::Action;
use crate::app::state::AppState;
use crate::app::state::viewer::SideTab;
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
        .default_size(320.0)
        .max_size(440.0)
        .show(ui, |ui| side_panel(ui, state, actions));
    egui::CentralPanel::default()
        .frame(egui::Frame::NONE.fill(egui::Color32::BLACK))
        .show(ui, |ui| viewer::show(ui, state, textures, actions));
    help::show_windows(ui.ctx(), state, actions);
    export::show_window(ui.ctx(), state, actions);
    pacs::show_window(ui.ctx(), state, actions);
}

/// The right panel: tabs for the image (labels, window, tools), the model and the results.
fn side_panel(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        for tab in SideTab::ALL {
            if ui
                .selectable_label(state.viewer.tab == tab, tab.title())
                .clicked()
            {
                actions.push(Action::SetTab(tab));
            }
        }
    });
    ui.separator();
    egui::ScrollArea::vertical()
        .id_salt(state.viewer.tab.title())
        .show(ui, |ui| match state.viewer.tab {
            SideTab::Image => labels::show(ui, state, actions),
            SideTab::Model => model::show(ui, state, actions),
            SideTab::Results => results::show(ui, state, actions),
        });
}
