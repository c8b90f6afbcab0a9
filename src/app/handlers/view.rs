//! How the current image is shown: window and presets, zoom and pan, tools and brush,
//! measurements, panels and windows, and the application-level settings.
use eframe::egui;

use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::state::AppState;
use crate::app::state::viewer::{
    BRUSH_MAX, BRUSH_MIN, Display, Measurement, SideTab, Tool, ZOOM_MAX, ZOOM_MIN, presets,
};
use crate::io::image::Window;

/// How much one key press zooms (and one brush step scales).
const ZOOM_STEP: f32 = 1.25;

/// Runs a view command; false when `command` is not one.
pub fn run(state: &mut AppState, command: Command, ctx: &egui::Context) -> bool {
    let viewer = &mut state.viewer;
    match command {
        Command::ZoomIn => zoom_by(state, ZOOM_STEP),
        Command::ZoomOut => zoom_by(state, 1.0 / ZOOM_STEP),
        Command::ZoomFit => {
            viewer.fit = true;
            viewer.pan = [0.0, 0.0];
        }
        Command::ZoomActualSize => {
            viewer.fit = false;
            viewer.zoom = 1.0 / ctx.pixels_per_point();
        }
        Command::Invert => {
            if let Some(mut display) = current_display(state) {
                display.invert = !display.invert;
                set_display(state, display);
            }
        }
        Command::ResetWindow => {
            if let Some(key) = &state.viewer.current {
                let display_key = state.display_key(&key.path);
                state.viewer.display.remove(&display_key);
            }
        }
        Command::ClearMeasurements => {
            let current = viewer.current.clone();
            viewer
                .measurements
                .retain(|m| Some(&m.key) != current.as_ref());
        }
        Command::ToolNavigate => viewer.tool = Tool::Navigate,
        Command::ToolBrush => viewer.tool = Tool::Brush,
        Command::ToolEraser => viewer.tool = Tool::Eraser,
        Command::ToolFill => viewer.tool = Tool::Fill,
        Command::ToolMeasure => viewer.tool = Tool::Measure,
        Command::BrushLarger => scale_brush(state, ZOOM_STEP),
        Command::BrushSmaller => scale_brush(state, 1.0 / ZOOM_STEP),
        Command::ToggleMetadata => viewer.show_metadata = !viewer.show_metadata,
        Command::TogglePacs => state.pacs.open = !state.pacs.open,
        Command::ShowImageTab => viewer.tab = SideTab::Image,
        Command::ShowModelTab => viewer.tab = SideTab::Model,
        Command::ShowResultsTab => viewer.tab = SideTab::Results,
        Command::ToggleHelp => viewer.show_help = !viewer.show_help,
        Command::CommandPalette => viewer.show_palette = !viewer.show_palette,
        Command::ToggleForceCpu => {
            state.persisted.force_cpu = !state.persisted.force_cpu;
            let on = if state.persisted.force_cpu {
                "on"
            } else {
                "off"
            };
            state.log.push(format!(
                "Always use the CPU: {on} (applies at the next start)"
            ));
        }
        Command::Quit => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
        _ => match command.preset_index() {
            Some(index) => apply_preset(state, index),
            None => return false,
        },
    }
    true
}

/// Applies a view action; false when `action` is not one.
pub fn apply(state: &mut AppState, action: &Action) -> bool {
    match action {
        Action::SetTab(tab) => state.viewer.tab = *tab,
        Action::SetWindow { center, width } => {
            if let Some(mut display) = current_display(state) {
                display.window = Window {
                    center: *center,
                    width: width.max(1.0),
                    function: display.window.function,
                    label: "Custom".into(),
                    lut: None,
                };
                set_display(state, display);
            }
        }
        Action::SetView { zoom, pan } => {
            state.viewer.fit = false;
            state.viewer.zoom = zoom.clamp(ZOOM_MIN, ZOOM_MAX);
            state.viewer.pan = *pan;
        }
        Action::Viewport(size) => state.viewer.viewport = *size,
        Action::Measure { from, to } => {
            if let Some(key) = state.viewer.current.clone() {
                state.viewer.measurements.push(Measurement {
                    key,
                    from: *from,
                    to: *to,
                });
            }
        }
        Action::ScaleBrush(factor) => scale_brush(state, *factor),
        _ => return false,
    }
    true
}

fn scale_brush(state: &mut AppState, factor: f32) {
    state.viewer.brush_radius = (state.viewer.brush_radius * factor).clamp(BRUSH_MIN, BRUSH_MAX);
}

fn apply_preset(state: &mut AppState, index: usize) {
    let preset = state
        .current_stack()
        .and_then(|s| presets(s).get(index).cloned());
    match (preset, current_display(state)) {
        (Some(window), Some(mut display)) => {
            display.window = window;
            set_display(state, display);
        }
        _ => state
            .log
            .push(format!("No window preset {} for this image", index + 1)),
    }
}

fn current_display(state: &AppState) -> Option<Display> {
    state.display_for(&state.viewer.current.as_ref()?.path)
}

fn set_display(state: &mut AppState, display: Display) {
    if let Some(key) = &state.viewer.current {
        let display_key = state.display_key(&key.path);
        state.viewer.display.insert(display_key, display);
    }
}

fn zoom_by(state: &mut AppState, factor: f32) {
    let Some(size) = state.current_size() else {
        return;
    };
    let zoom = state.viewer.effective_zoom([size.0, size.1]);
    let pan = if state.viewer.fit {
        [0.0, 0.0]
    } else {
        state.viewer.pan
    };
    state.viewer.fit = false;
    state.viewer.zoom = (zoom * factor).clamp(ZOOM_MIN, ZOOM_MAX);
    let applied = state.viewer.zoom / zoom;
    state.viewer.pan = [pan[0] * applied, pan[1] * applied];
}
