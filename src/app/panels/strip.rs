//! The score strip under the frame slider: one cell per frame of the series, coloured by its
//! image score with the heatmap's colormap and range, dark grey with a light middle line until
//! scored; frames at or above
//! the threshold carry a white mark on top, labelled frames an N or A mark below, the current
//! frame an outline. A click or drag goes to the frame under the pointer. It reads the scores
//! every frame, so it fills in while background scoring runs.
use eframe::egui::{self, Align2, Color32, FontId, Rect, Sense, Stroke, pos2, vec2};

use crate::app::action::Action;
use crate::app::state::AppState;
use crate::app::state::labels::{ImageKey, Label};
use crate::workflow::MapScale;

/// Height of the strip in points.
pub const STRIP_HEIGHT: f32 = 18.0;
/// A frame not scored yet: dark grey with a light line through the middle, which no colormap
/// cell has (a grey of its own could be read as a score on Cividis).
const UNSCORED: Color32 = Color32::from_gray(45);
const UNSCORED_LINE: Color32 = Color32::from_gray(140);
/// Marks of labelled frames.
const NORMAL_MARK: Color32 = Color32::from_rgb(90, 200, 120);
const ABNORMAL_MARK: Color32 = Color32::from_rgb(240, 80, 70);

/// The frame index under `x` in a strip spanning `rect` with `frames` cells.
pub fn frame_at(rect: Rect, frames: usize, x: f32) -> usize {
    let t = ((x - rect.left()) / rect.width()).clamp(0.0, 1.0);
    ((t * frames as f32) as usize).min(frames.saturating_sub(1))
}

/// Draws the strip for `sequence` (the current image at `at`) across the available width.
pub fn show(
    ui: &mut egui::Ui,
    state: &AppState,
    sequence: &[ImageKey],
    at: usize,
    actions: &mut Vec<Action>,
) {
    let width = ui.available_width();
    let (rect, response) =
        ui.allocate_exact_size(vec2(width, STRIP_HEIGHT), Sense::click_and_drag());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Score strip"));
    let painter = ui.painter_at(rect);
    let scores = state.frame_scores(sequence);
    let calibrated = sequence.iter().any(|k| {
        state
            .model
            .results
            .get(k)
            .is_some_and(|s| s.result.score.is_some())
    });
    let scale = if calibrated {
        MapScale::Calibrated
    } else {
        MapScale::Raw
    };
    let view = &state.model.view;
    let (lo, hi) = view.range(scale);
    let threshold = state.model.score_threshold().filter(|_| calibrated);
    let n = sequence.len();
    let cell = rect.width() / n as f32;
    let letters = cell >= 9.0;
    for (i, key) in sequence.iter().enumerate() {
        let x0 = rect.left() + i as f32 * cell;
        let cell_rect = Rect::from_min_max(pos2(x0, rect.top()), pos2(x0 + cell, rect.bottom()));
        let colour = scores[i].map(|s| {
            let t = ((s - lo) / (hi - lo)).clamp(0.0, 1.0);
            let [r, g, b] = view.colormap.rgb(t);
            Color32::from_rgb(r, g, b)
        });
        let flagged = matches!((scores[i], threshold), (Some(s), Some(t)) if s >= t);
        paint_cell(
            &painter,
            cell_rect,
            colour,
            flagged,
            state.labels.label(key),
            letters,
        );
    }
    let x = rect.left() + at as f32 * cell;
    painter.rect_stroke(
        Rect::from_min_max(pos2(x, rect.top()), pos2(x + cell.max(2.0), rect.bottom())),
        0.0,
        Stroke::new(2.0, Color32::WHITE),
        egui::StrokeKind::Inside,
    );
    if let Some(pointer) = response.interact_pointer_pos()
        && (response.clicked() || response.dragged())
    {
        let index = frame_at(rect, n, pointer.x);
        if index != at {
            actions.push(Action::GoTo(index));
        }
    }
    response.on_hover_ui_at_pointer(|ui| {
        let Some(pointer) = ui.ctx().pointer_hover_pos() else {
            return;
        };
        let i = frame_at(rect, n, pointer.x);
        let score = scores[i].map_or("not scored".to_string(), |s| format!("score {s:.2}"));
        let label = state
            .labels
            .label(&sequence[i])
            .map_or(String::new(), |l| format!(", labelled {}", l.name()));
        let mark = threshold.map_or(String::new(), |t| {
            format!("\nWhite mark: at or above the threshold {t:.2}")
        });
        ui.label(format!("Frame {}: {score}{label}{mark}", i + 1));
    });
}

/// One frame's cell: its colour (`None`: not scored yet), the threshold mark on top, the
/// label's mark below (with its letter when `letters`).
fn paint_cell(
    painter: &egui::Painter,
    cell: Rect,
    colour: Option<Color32>,
    flagged: bool,
    label: Option<Label>,
    letters: bool,
) {
    painter.rect_filled(cell, 0.0, colour.unwrap_or(UNSCORED));
    if colour.is_none() {
        let y = cell.center().y;
        painter.rect_filled(
            Rect::from_min_max(pos2(cell.left(), y - 1.0), pos2(cell.right(), y + 1.0)),
            0.0,
            UNSCORED_LINE,
        );
    }
    if flagged {
        let top = Rect::from_min_max(cell.min, pos2(cell.right(), cell.top() + 3.0));
        painter.rect_filled(top, 0.0, Color32::WHITE);
    }
    if let Some(label) = label {
        let (mark, letter) = match label {
            Label::Normal => (NORMAL_MARK, "N"),
            Label::Abnormal => (ABNORMAL_MARK, "A"),
        };
        if letters {
            painter.text(
                cell.center(),
                Align2::CENTER_CENTER,
                letter,
                FontId::proportional(11.0),
                Color32::BLACK,
            );
        }
        let bottom = Rect::from_min_max(pos2(cell.left(), cell.bottom() - 4.0), cell.max);
        painter.rect_filled(bottom, 0.0, mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_position_maps_to_a_frame() {
        let rect = Rect::from_min_size(pos2(10.0, 0.0), vec2(100.0, 10.0));
        assert_eq!(frame_at(rect, 20, 0.0), 0);
        assert_eq!(frame_at(rect, 20, 10.0), 0);
        assert_eq!(frame_at(rect, 20, 14.99), 0);
        assert_eq!(frame_at(rect, 20, 15.0), 1);
        assert_eq!(frame_at(rect, 20, 109.9), 19);
        assert_eq!(frame_at(rect, 20, 500.0), 19);
        assert_eq!(frame_at(rect, 1, 50.0), 0);
    }
}
