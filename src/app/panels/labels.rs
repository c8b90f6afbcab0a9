//! The Image tab of the right panel: the current image's label and mask, the shot counts, the window (numeric
//! entry in modality units, presets, inversion), the tools, and the labels set aside because
//! their files moved or changed.
use eframe::egui::{self, RichText};

use super::widgets::command_button;
use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::state::AppState;
use crate::app::state::viewer::{Tool, presets};
use crate::workflow::label_next::LabelStrategy;

pub fn show(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    labels(ui, state, actions);
    ui.separator();
    window(ui, state, actions);
    ui.separator();
    tools(ui, state, actions);
    set_aside(ui, state);
}

fn labels(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.heading("Labels");
    let counts = state.labels.counts();
    ui.label(format!(
        "Shots: {} normal, {} abnormal; {} with a mask",
        counts.normal, counts.abnormal, counts.masks
    ));
    let targets = state.label_targets();
    match (&state.viewer.current, targets.len()) {
        (_, n) if n > 1 && state.selection.len() > 1 => {
            ui.label(format!(
                "{} files selected ({n} images)",
                state.selection.len()
            ));
        }
        (Some(key), _) => {
            let label = state.labels.label(key);
            ui.label(format!(
                "Current image: {}",
                label.map_or("not labelled", |l| l.name())
            ));
            if let Some(mask) = state.labels.mask(key) {
                ui.label(format!(
                    "Mask: {} pixels at {}x{}",
                    mask.count(),
                    mask.width,
                    mask.height
                ));
            }
        }
        _ => {
            ui.label("No image open");
        }
    }
    ui.horizontal_wrapped(|ui| {
        command_button(ui, Command::MarkNormal, actions);
        command_button(ui, Command::MarkAbnormal, actions);
        command_button(ui, Command::ClearLabel, actions);
    });
    label_next(ui, state, actions);
    ui.horizontal_wrapped(|ui| {
        ui.add_enabled_ui(state.labels.can_undo(), |ui| {
            command_button(ui, Command::Undo, actions)
        });
        ui.add_enabled_ui(state.labels.can_redo(), |ui| {
            command_button(ui, Command::Redo, actions)
        });
    });
}

/// The "Label next" command with its strategy.
fn label_next(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.horizontal_wrapped(|ui| {
        command_button(ui, Command::NextUnlabelled, actions);
        command_button(ui, Command::LabelNext, actions);
        let mut view = state.model.view.clone();
        egui::ComboBox::from_id_salt("label next strategy")
            .selected_text(view.label_strategy.label())
            .show_ui(ui, |ui| {
                for strategy in LabelStrategy::ALL {
                    ui.selectable_value(&mut view.label_strategy, strategy, strategy.label());
                }
            })
            .response
            .on_hover_text("How Label next (Shift+U) chooses the image");
        if view != state.model.view {
            actions.push(Action::SetResultsView(view));
        }
    });
}

fn window(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.heading("Window");
    let (Some(key), Some(stack)) = (&state.viewer.current, state.current_stack()) else {
        ui.label("No image loaded");
        return;
    };
    let Some(display) = state.display_for(&key.path) else {
        return;
    };
    let unit = match stack.info.modality.as_deref() {
        Some("CT") => " HU",
        _ => "",
    };
    let (mut center, mut width) = (display.window.center, display.window.width);
    let speed = (width / 200.0).max(0.01);
    let mut changed = false;
    egui::Grid::new("window_entry")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Width");
            changed |= ui
                .add(
                    egui::DragValue::new(&mut width)
                        .speed(speed)
                        .suffix(unit)
                        .range(1.0..=f64::MAX),
                )
                .on_hover_text("Window width in modality units (right drag: horizontal)")
                .changed();
            ui.end_row();
            ui.label("Level");
            changed |= ui
                .add(egui::DragValue::new(&mut center).speed(speed).suffix(unit))
                .on_hover_text("Window centre in modality units (right drag: vertical)")
                .changed();
            ui.end_row();
        });
    if changed {
        actions.push(Action::SetWindow { center, width });
    }
    ui.label(RichText::new(format!("Preset: {}", display.window.label)).small());
    let mut invert = display.invert;
    if ui
        .checkbox(&mut invert, Command::Invert.label())
        .on_hover_text(Command::Invert.tooltip())
        .clicked()
    {
        actions.push(Action::Run(Command::Invert));
    }
    ui.label("Presets:");
    for (window, command) in presets(stack).iter().zip(Command::PRESETS) {
        let text = format!(
            "{} {}  {:.0}/{:.0}",
            command.preset_index().map_or(0, |i| i + 1),
            window.label,
            window.width,
            window.center
        );
        if ui
            .selectable_label(display.window == *window, text)
            .on_hover_text("width / level; press the number key")
            .clicked()
        {
            actions.push(Action::Run(command));
        }
    }
}

fn tools(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.heading("Tools");
    ui.horizontal_wrapped(|ui| {
        for (tool, command) in [
            (Tool::Navigate, Command::ToolNavigate),
            (Tool::Brush, Command::ToolBrush),
            (Tool::Eraser, Command::ToolEraser),
            (Tool::Fill, Command::ToolFill),
            (Tool::Measure, Command::ToolMeasure),
        ] {
            let text = format!("{} ({})", tool.name(), command.shortcut_text(ui.ctx()));
            if ui
                .selectable_label(state.viewer.tool == tool, text)
                .on_hover_text(command.tooltip())
                .clicked()
            {
                actions.push(Action::Run(command));
            }
        }
    });
    ui.horizontal_wrapped(|ui| {
        ui.label(format!("Brush radius: {:.0} px", state.viewer.brush_radius));
        command_button(ui, Command::BrushSmaller, actions);
        command_button(ui, Command::BrushLarger, actions);
    });
    ui.horizontal_wrapped(|ui| {
        command_button(ui, Command::ImportMask, actions);
        command_button(ui, Command::ClearMeasurements, actions);
    });
}

fn set_aside(ui: &mut egui::Ui, state: &AppState) {
    if state.project.set_aside.is_empty() {
        return;
    }
    ui.separator();
    ui.heading(RichText::new("Moved or changed files").color(ui.visuals().warn_fg_color));
    ui.label("Their labels are kept in the project but not applied:");
    for aside in &state.project.set_aside {
        ui.label(RichText::new(aside.file.path.display().to_string()).strong());
        ui.label(format!(
            "{} ({} labels, {} masks)",
            aside.reason,
            aside.labels.len(),
            aside.masks.len()
        ));
    }
}
