//! Floating windows: the help panel (F1) and command palette (Ctrl+K), which both list
//! [`Command::ALL`]; the searchable metadata of the current image; and the offer to recover
//! the unsaved work of a session that ended without saving.
use eframe::egui::{self, RichText};

use crate::app::action::Action;
use crate::app::commands::{Command, Menu};
use crate::app::state::AppState;
use crate::io::image::MetadataNode;

pub fn show_windows(ctx: &egui::Context, state: &AppState, actions: &mut Vec<Action>) {
    if state.viewer.show_help {
        help(ctx, actions);
    }
    if state.viewer.show_palette {
        palette(ctx, actions);
    }
    if state.viewer.show_metadata {
        metadata(ctx, state, actions);
    }
    if let Some(path) = &state.project.recovery {
        egui::Window::new("Recover unsaved work?")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| {
                ui.label("The last session ended with unsaved labels or masks.");
                ui.label(RichText::new(path.display().to_string()).small());
                ui.horizontal(|ui| {
                    if ui.button("Recover").clicked() {
                        actions.push(Action::Recover);
                    }
                    if ui.button("Discard").clicked() {
                        actions.push(Action::DiscardRecovery);
                    }
                });
            });
    }
}

fn help(ctx: &egui::Context, actions: &mut Vec<Action>) {
    let mut open = true;
    egui::Window::new("Commands and shortcuts")
        .open(&mut open)
        .default_size([560.0, 520.0])
        .show(ctx, |ui| {
            ui.label("Mouse: wheel zooms, Shift+wheel scrolls frames, Ctrl+wheel sizes the brush, right drag sets the window, middle drag pans.");
            egui::ScrollArea::vertical().show(ui, |ui| {
                for menu in Menu::ALL {
                    ui.heading(menu.title());
                    egui::Grid::new(("help", menu.title()))
                        .num_columns(3)
                        .striped(true)
                        .show(ui, |ui| {
                            for command in Command::ALL.into_iter().filter(|c| c.menu() == menu) {
                                ui.label(command.label());
                                ui.label(RichText::new(command.shortcut_text(ctx)).monospace());
                                ui.label(RichText::new(command.tooltip()).small());
                                ui.end_row();
                            }
                        });
                }
            });
        });
    if !open {
        actions.push(Action::Run(Command::ToggleHelp));
    }
}

/// Commands whose label or tooltip contains every word of `query` (case-insensitive).
pub fn palette_matches(query: &str) -> Vec<Command> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    Command::ALL
        .into_iter()
        .filter(|c| {
            let text = format!("{} {}", c.label(), c.tooltip()).to_lowercase();
            words.iter().all(|w| text.contains(w))
        })
        .collect()
}

fn palette(ctx: &egui::Context, actions: &mut Vec<Action>) {
    let id = egui::Id::unique("palette_query");
    let mut query: String = ctx.data_mut(|d| d.get_temp(id).unwrap_or_default());
    let mut open = true;
    egui::Window::new("Command palette")
        .open(&mut open)
        .collapsible(false)
        .anchor(egui::Align2::CENTER_TOP, [0.0, 60.0])
        .show(ctx, |ui| {
            // Read before the text field, which consumes Escape to give up its focus.
            let (enter, escape) = ui.input(|i| {
                (
                    i.key_pressed(egui::Key::Enter),
                    i.key_pressed(egui::Key::Escape),
                )
            });
            let edit = ui.add(
                egui::TextEdit::singleline(&mut query)
                    .hint_text("Type a command…")
                    .desired_width(360.0),
            );
            edit.request_focus();
            let matches = palette_matches(&query);
            let mut chosen = None;
            if enter {
                chosen = matches.first().copied();
            }
            egui::ScrollArea::vertical()
                .max_height(320.0)
                .show(ui, |ui| {
                    for command in &matches {
                        let text = format!("{}   {}", command.label(), command.shortcut_text(ctx));
                        if ui
                            .selectable_label(false, text)
                            .on_hover_text(command.tooltip())
                            .clicked()
                        {
                            chosen = Some(*command);
                        }
                    }
                });
            if let Some(command) = chosen {
                actions.push(Action::Run(Command::CommandPalette));
                actions.push(Action::Run(command));
                query.clear();
            } else if escape {
                actions.push(Action::Run(Command::CommandPalette));
                query.clear();
            }
        });
    if !open {
        actions.push(Action::Run(Command::CommandPalette));
    }
    ctx.data_mut(|d| d.insert_temp(id, query));
}

fn metadata(ctx: &egui::Context, state: &AppState, actions: &mut Vec<Action>) {
    let id = egui::Id::unique("metadata_query");
    let mut query: String = ctx.data_mut(|d| d.get_temp(id).unwrap_or_default());
    let mut open = true;
    egui::Window::new("Metadata")
        .open(&mut open)
        .default_size([480.0, 520.0])
        .show(ctx, |ui| {
            let Some(key) = &state.viewer.current else {
                ui.label("No image open");
                return;
            };
            let nodes: &[MetadataNode] = match state.images.get(&key.path) {
                Some(stack) => &stack.metadata,
                None => state.browser.scanned_metadata(&key.path).unwrap_or(&[]),
            };
            ui.horizontal(|ui| {
                ui.label("Search:");
                ui.text_edit_singleline(&mut query);
            });
            ui.label(RichText::new(key.path.display().to_string()).small());
            if nodes.is_empty() {
                ui.label("This file carries no metadata.");
            }
            let needle = query.to_lowercase();
            egui::ScrollArea::vertical().show(ui, |ui| {
                egui::Grid::new("metadata")
                    .num_columns(2)
                    .striped(true)
                    .show(ui, |ui| {
                        for node in nodes {
                            metadata_rows(ui, node, &needle, 0);
                        }
                    });
            });
        });
    if !open {
        actions.push(Action::Run(Command::ToggleMetadata));
    }
    ctx.data_mut(|d| d.insert_temp(id, query));
}

/// Whether `node` or anything below it matches `needle` (lower case) in name or value.
fn matches(node: &MetadataNode, needle: &str) -> bool {
    needle.is_empty()
        || node.name.to_lowercase().contains(needle)
        || node.value.to_lowercase().contains(needle)
        || node.children.iter().any(|c| matches(c, needle))
}

fn metadata_rows(ui: &mut egui::Ui, node: &MetadataNode, needle: &str, depth: usize) {
    if !matches(node, needle) {
        return;
    }
    ui.label(format!("{}{}", "  ".repeat(depth), node.name));
    ui.label(&node.value);
    ui.end_row();
    for child in &node.children {
        metadata_rows(ui, child, needle, depth + 1);
    }
}
