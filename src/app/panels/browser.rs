//! The study browser: patient / study / series / image for DICOM, folders for rasters and
//! NIfTI, a label badge per file, multi-selection (Ctrl+click, Shift+click), and the files
//! that could not be read with the reason.
use eframe::egui::{self, RichText};

use crate::app::action::{Action, SelectMode};
use crate::app::state::AppState;
use crate::app::state::browser::{Group, GroupKind};
use crate::app::state::labels::Label;
use crate::app::textures::Textures;

pub fn show(
    ui: &mut egui::Ui,
    state: &AppState,
    textures: &mut Textures,
    actions: &mut Vec<Action>,
) {
    ui.heading("Studies");
    if state.browser.is_empty() {
        ui.label("Open files or a folder (File menu), or drop them here.");
    }
    let current_group = state
        .viewer
        .current
        .as_ref()
        .and_then(|k| state.browser.locate(&k.path))
        .map(|(g, _)| g);
    egui::ScrollArea::vertical().show(ui, |ui| {
        let groups = &state.browser.groups;
        let mut g = 0;
        while g < groups.len() {
            match &groups[g].kind {
                GroupKind::Series { patient, study, .. } => {
                    // Consecutive series of one patient and study share their headers.
                    let end = groups[g..]
                        .iter()
                        .position(|other| match &other.kind {
                            GroupKind::Series {
                                patient: p,
                                study: s,
                                ..
                            } => p != patient || s != study,
                            GroupKind::Folder(_) => true,
                        })
                        .map_or(groups.len(), |n| g + n);
                    egui::CollapsingHeader::new(format!("Patient: {patient}"))
                        .id_salt(("patient", g))
                        .default_open(true)
                        .show(ui, |ui| {
                            egui::CollapsingHeader::new(format!("Study: {study}"))
                                .id_salt(("study", g))
                                .default_open(true)
                                .show(ui, |ui| {
                                    for (i, group) in groups[g..end].iter().enumerate() {
                                        let GroupKind::Series { series, .. } = &group.kind else {
                                            continue;
                                        };
                                        let title =
                                            format!("Series {series} ({})", group.items.len());
                                        group_items(
                                            ui,
                                            state,
                                            textures,
                                            group,
                                            &title,
                                            g + i,
                                            current_group,
                                            actions,
                                        );
                                    }
                                });
                        });
                    g = end;
                }
                GroupKind::Folder(folder) => {
                    let title = format!("Folder {} ({})", folder.display(), groups[g].items.len());
                    group_items(
                        ui,
                        state,
                        textures,
                        &groups[g],
                        &title,
                        g,
                        current_group,
                        actions,
                    );
                    g += 1;
                }
            }
        }
        if !state.browser.unreadable.is_empty() {
            egui::CollapsingHeader::new(
                RichText::new(format!("Unreadable ({})", state.browser.unreadable.len()))
                    .color(ui.visuals().warn_fg_color),
            )
            .id_salt("unreadable")
            .show(ui, |ui| {
                for (path, reason) in &state.browser.unreadable {
                    ui.label(RichText::new(path.display().to_string()).strong())
                        .on_hover_text(reason);
                    ui.label(RichText::new(reason).small());
                }
            });
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn group_items(
    ui: &mut egui::Ui,
    state: &AppState,
    textures: &mut Textures,
    group: &Group,
    title: &str,
    index: usize,
    current_group: Option<usize>,
    actions: &mut Vec<Action>,
) {
    let current_path = state.viewer.current.as_ref().map(|k| &k.path);
    egui::CollapsingHeader::new(title)
        .id_salt(("group", index))
        .default_open(current_group == Some(index) || group.items.len() <= 50)
        .show(ui, |ui| {
            let side = crate::app::state::THUMBNAIL_SIDE as f32;
            for item in &group.items {
                // Rows scrolled out of sight only take their room: a series of hundreds of
                // slices costs what the rows on screen cost.
                let row = egui::Rect::from_min_size(
                    ui.cursor().min,
                    egui::vec2(ui.available_width(), side),
                );
                if !ui.is_rect_visible(row) {
                    ui.allocate_space(row.size());
                    continue;
                }
                let selected =
                    state.selection.contains(&item.path) || current_path == Some(&item.path);
                ui.horizontal(|ui| {
                    match state.thumbnails.get(&item.path) {
                        Some(image) => {
                            let texture = textures.thumbnail(ui.ctx(), &item.path, image);
                            let size = egui::vec2(image.width as f32, image.height as f32);
                            ui.add_sized([side, side], egui::Image::new((texture.id(), size)));
                        }
                        // The same room while the preview is being made: rows do not jump.
                        None => {
                            ui.allocate_space(egui::vec2(side, side));
                        }
                    }
                    badge(ui, state, &item.path);
                    let mut text = item.name.clone();
                    if item.frames > 1 {
                        text.push_str(&format!(" [{} frames]", item.frames));
                    }
                    let response = ui
                        .selectable_label(selected, text)
                        .on_hover_text(item.path.display().to_string());
                    if response.clicked() {
                        let modifiers = ui.input(|i| i.modifiers);
                        let mode = if modifiers.shift {
                            SelectMode::Extend
                        } else if modifiers.command {
                            SelectMode::Toggle
                        } else {
                            SelectMode::Replace
                        };
                        actions.push(Action::Select {
                            path: item.path.clone(),
                            mode,
                        });
                    }
                });
            }
        });
}

/// N (normal) or A (abnormal), counts for multi-frame files, and M when a mask exists.
fn badge(ui: &mut egui::Ui, state: &AppState, path: &std::path::Path) {
    let labels = state.labels.labels_of_file(path);
    let normal = labels.iter().filter(|&&l| l == Label::Normal).count();
    let abnormal = labels.len() - normal;
    let masked = state
        .labels
        .masks()
        .any(|(k, m)| k.path == path && crate::app::state::labels::has_lesion(m));
    let text = match (normal, abnormal) {
        (0, 0) => String::new(),
        (1, 0) => "N".into(),
        (0, 1) => "A".into(),
        (n, a) => format!("{n}N{a}A"),
    };
    let color = if abnormal > 0 {
        egui::Color32::from_rgb(230, 90, 80)
    } else {
        egui::Color32::from_rgb(90, 190, 110)
    };
    // Fixed width, so that file names line up whatever the badge says.
    let text = format!("{text:<5}{}", if masked { "M" } else { " " });
    ui.label(RichText::new(text).monospace().strong().color(color))
        .on_hover_text(
            "N normal, A abnormal (counts per frame for multi-frame files), M lesion mask",
        );
}
