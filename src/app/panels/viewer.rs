//! The viewer: the current frame through its window, the lesion mask over it, the frame
//! slider, overlays (file and frame, window, pixel value and position under the cursor,
//! orientation labels, scale bar, measurements) and the mouse: wheel zooms about the cursor,
//! Shift+wheel scrolls frames, Ctrl+wheel sizes the brush, right drag sets the window, middle
//! drag (or left drag with the pan tool) pans, left drag uses the tool.
use std::sync::Arc;

use eframe::egui::{self, Align2, Color32, FontId, Pos2, Rect, Sense, Stroke, Vec2, pos2, vec2};

use crate::app::action::Action;
use crate::app::state::AppState;
use crate::app::state::labels::ImageKey;
use crate::app::state::viewer::Tool;
use crate::app::textures::{HeatmapKey, Textures, reduction_for};
use crate::io::export::overlay::Colormap;
use crate::io::image::ImageStack;
use crate::workflow::maps::sample;
use crate::workflow::{MapLayer, MapScale, layer_map};

const OVERLAY: Color32 = Color32::from_rgb(230, 230, 120);
/// The threshold contour: white reads on every colormap and on grey.
const CONTOUR: Color32 = Color32::WHITE;

fn stack_width(stack: &ImageStack, key: &ImageKey) -> f32 {
    stack.frames.get(key.frame).map_or(1.0, |f| f.width as f32)
}

fn stack_height(stack: &ImageStack, key: &ImageKey) -> f32 {
    stack.frames.get(key.frame).map_or(1.0, |f| f.height as f32)
}

pub fn show(
    ui: &mut egui::Ui,
    state: &AppState,
    textures: &mut Textures,
    actions: &mut Vec<Action>,
) {
    frame_slider(ui, state, actions);
    let (response, painter) = ui.allocate_painter(ui.available_size(), Sense::click_and_drag());
    // Side by side: the image on the left, the image with its heatmap on the right; both
    // panes share zoom and pan.
    let side_by_side = state.model.view.side_by_side;
    let panes = panes_of(response.rect, side_by_side);
    let viewport = [panes[0].width(), panes[0].height()];
    if viewport != state.viewer.viewport {
        actions.push(Action::Viewport(viewport));
    }
    let Some(shown) = shown(ui, state, &painter, response.rect) else {
        return;
    };
    let frame = &shown.stack.frames[shown.key.frame];
    let size = [frame.width, frame.height];
    let zoom = state.viewer.effective_zoom(size);
    let pan = if state.viewer.fit {
        [0.0, 0.0]
    } else {
        state.viewer.pan
    };
    let view_of = |pane: Rect| {
        let centre = pane.center() + vec2(pan[0], pan[1]);
        View {
            image_rect: Rect::from_center_size(
                centre,
                vec2(size[0] as f32 * zoom, size[1] as f32 * zoom),
            ),
            zoom,
            pane,
        }
    };
    let heat = heatmap_of(state, &shown.key);
    let pointer = response.hover_pos().or(response.interact_pointer_pos());
    let active = panes
        .iter()
        .position(|p| pointer.is_some_and(|q| p.contains(q)))
        .unwrap_or(0);
    for (index, &pane) in panes.iter().enumerate() {
        let with_heatmap = if side_by_side {
            index == 1
        } else {
            state.model.view.show_heatmap
        };
        let pane = Pane {
            view: view_of(pane),
            heat: heat.as_ref().filter(|_| with_heatmap),
            hover: pointer.filter(|_| index == active),
            first: index == 0,
            active: index == active,
        };
        draw_pane(
            ui,
            &painter,
            state,
            textures,
            &shown,
            &pane,
            heat.as_ref(),
            &response,
        );
    }
    mouse(ui, state, &response, &view_of(panes[active]), pan, actions);
}

/// The frame slider above the image, for a series or multi-frame file, with the score strip
/// under it.
fn frame_slider(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    let sequence = state.sequence();
    let position = state
        .viewer
        .current
        .as_ref()
        .and_then(|k| sequence.iter().position(|s| s == k));
    let Some(at) = position.filter(|_| sequence.len() > 1) else {
        return;
    };
    ui.horizontal(|ui| {
        ui.add_space(6.0);
        ui.label(
            egui::RichText::new(format!("Frame {}/{}", at + 1, sequence.len()))
                .color(Color32::LIGHT_GRAY),
        );
        let mut index = at;
        ui.spacing_mut().slider_width = (ui.available_width() - 20.0).max(50.0);
        if ui
            .add(egui::Slider::new(&mut index, 0..=sequence.len() - 1).show_value(false))
            .on_hover_text("Frame / slice (arrows, Page Up/Down, Shift+wheel)")
            .changed()
        {
            actions.push(Action::GoTo(index));
        }
    });
    ui.horizontal(|ui| {
        ui.add_space(6.0);
        ui.spacing_mut().item_spacing.x = 0.0;
        let right = ui.available_width() - 6.0;
        ui.allocate_ui(vec2(right, super::strip::STRIP_HEIGHT), |ui| {
            super::strip::show(ui, state, &sequence, at, actions)
        });
    });
}

/// One pane, or two side by side.
fn panes_of(rect: Rect, side_by_side: bool) -> Vec<Rect> {
    if side_by_side {
        let (left, right) = rect.split_left_right_at_fraction(0.5);
        vec![left.shrink2(vec2(1.0, 0.0)), right.shrink2(vec2(1.0, 0.0))]
    } else {
        vec![rect]
    }
}

/// The image the viewer shows: its key, decoded stack and display.
struct Shown<'a> {
    key: ImageKey,
    stack: &'a ImageStack,
    display: crate::app::state::viewer::Display,
}

/// What there is to show; else says why not in the middle of `rect` (drop target, nothing
/// open, loading, unreadable) and gives `None`.
fn shown<'a>(
    ui: &egui::Ui,
    state: &'a AppState,
    painter: &egui::Painter,
    rect: Rect,
) -> Option<Shown<'a>> {
    // Wrapped to the viewer's width: a decoder's message can be long.
    let message = |text: &str| {
        let wrap = (rect.width() - 48.0).max(120.0);
        let font = FontId::proportional(16.0);
        let galley = painter.layout(text.to_string(), font, Color32::GRAY, wrap);
        let top_left = rect.center() - galley.size() / 2.0;
        painter.galley(top_left, galley, Color32::GRAY);
    };
    if ui.input(|i| !i.raw.hovered_files.is_empty()) {
        message("Drop to open");
        return None;
    }
    let Some(key) = state.viewer.current.clone() else {
        message("Open files or a folder (Ctrl+O, Ctrl+Shift+O) or drop them here");
        return None;
    };
    let Some(stack) = state.images.get(&key.path) else {
        match state
            .browser
            .unreadable
            .iter()
            .find(|(p, _)| *p == key.path)
        {
            Some((_, reason)) => message(&format!("Cannot show this file: {reason}")),
            None => message("Loading…"),
        }
        return None;
    };
    if stack.frames.get(key.frame).is_none() {
        message("Loading…");
        return None;
    }
    let Some(display) = state.display_for(&key.path) else {
        message("No window for this image");
        return None;
    };
    Some(Shown {
        key,
        stack,
        display,
    })
}

/// How one pane is drawn.
struct Pane<'a> {
    view: View,
    /// The heatmap, when this pane shows it.
    heat: Option<&'a Heat>,
    /// The pointer, when it is over this pane.
    hover: Option<Pos2>,
    /// The left (or only) pane, which always carries the overlays.
    first: bool,
    /// The pane the pointer is over, which shows the tool's feedback.
    active: bool,
}

/// Draws one pane: the image tiles, the mask, the heatmap, the overlays and the tool.
#[allow(clippy::too_many_arguments)] // the pieces of one frame's drawing, each distinct
fn draw_pane(
    ui: &egui::Ui,
    painter: &egui::Painter,
    state: &AppState,
    textures: &mut Textures,
    shown: &Shown,
    pane: &Pane,
    heat: Option<&Heat>,
    response: &egui::Response,
) {
    let ctx = ui.ctx().clone();
    let view = &pane.view;
    let key = &shown.key;
    let factor = reduction_for(view.zoom * ctx.pixels_per_point());
    let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
    let painter = painter.with_clip_rect(view.pane);
    let top_left = view.to_image(view.pane.min);
    let bottom_right = view.to_image(view.pane.max);
    let visible = [top_left[0], top_left[1], bottom_right[0], bottom_right[1]];
    for tile in textures.image_tiles(&ctx, shown.stack, key, factor, &shown.display, visible) {
        let [x0, y0, x1, y1] = tile.rect;
        let screen = Rect::from_min_max(view.to_screen([x0, y0]), view.to_screen([x1, y1]));
        painter.image(tile.texture.id(), screen, uv, Color32::WHITE);
    }
    if let Some(mask) = state.labels.mask(key) {
        let max_side = ctx.input(|i| i.max_texture_side);
        let texture = textures.mask(&ctx, key, state.labels.revision, mask, factor, max_side);
        painter.image(texture.id(), view.image_rect, uv, Color32::WHITE);
    }
    if let Some(heat) = pane.heat {
        draw_heatmap(&painter, state, textures, &ctx, heat, view);
    }
    if pane.first || pane.hover.is_some() {
        overlays(
            &painter,
            view.pane,
            state,
            shown.stack,
            key,
            view,
            &shown.display.window,
            pane.hover,
            heat,
        );
    }
    if pane.active {
        tool_feedback(ui, &painter, state, response, view);
    }
}

/// The map of the current image under the current display settings: the detector's, else an
/// imported result object's.
struct Heat {
    key: HeatmapKey,
    /// The map's values, row-major (shared with an imported object's frame: not copied each
    /// frame).
    values: Arc<Vec<f32>>,
    /// What the values mean.
    scale: MapScale,
    /// Columns and rows of the map.
    size: [usize; 2],
    /// Colour range, contour level and legend caption of an imported map (the display
    /// settings give the detector's).
    imported: Option<((f32, f32), f32, String)>,
}

/// The top bit of an imported map's [`HeatmapKey::generation`], apart from every detector's.
const IMPORTED: u64 = 1 << 63;

fn heatmap_of(state: &AppState, key: &ImageKey) -> Option<Heat> {
    model_heat(state, key).or_else(|| imported_heat(state, key))
}

/// An imported Parametric Map or Segmentation over the frame, when one matches it.
fn imported_heat(state: &AppState, key: &ImageKey) -> Option<Heat> {
    let stack = state.images.get(&key.path)?;
    let m = state.imported.map_over(stack, key.frame)?;
    let colormap = state.model.view.colormap;
    let (lo, hi) = m.range;
    // A Segmentation's contour outlines its region; a map's marks the upper half of its range.
    let level = (lo + hi) / 2.0;
    Some(Heat {
        key: HeatmapKey {
            key: key.clone(),
            generation: IMPORTED | ((m.object as u64) << 32) | m.frame as u64,
            layer: MapLayer::Fused,
            colormap,
            range: (lo.to_bits(), hi.to_bits()),
        },
        values: m.values,
        scale: MapScale::Raw,
        size: [m.width, m.height],
        imported: Some(((lo, hi), level, m.caption)),
    })
}

fn model_heat(state: &AppState, key: &ImageKey) -> Option<Heat> {
    let scored = state.model.result(key)?;
    let detector = state.model.detector.as_ref()?;
    let view = &state.model.view;
    let map = layer_map(&scored.result, detector.calibration.as_ref(), view.layer)?;
    // A result whose maps wait in the spill folder has none until they are read back.
    if map.values.len() != detector.model_size * detector.model_size {
        return None;
    }
    let (lo, hi) = view.range(map.scale);
    Some(Heat {
        key: HeatmapKey {
            key: key.clone(),
            generation: scored.generation,
            layer: view.layer,
            colormap: view.colormap,
            range: (lo.to_bits(), hi.to_bits()),
        },
        values: Arc::new(map.values),
        scale: map.scale,
        size: [detector.model_size, detector.model_size],
        imported: None,
    })
}

/// The heatmap over the image at the chosen opacity, the contour at the chosen level, and the
/// legend in the pane's lower right corner.
fn draw_heatmap(
    painter: &egui::Painter,
    state: &AppState,
    textures: &mut Textures,
    ctx: &egui::Context,
    heat: &Heat,
    view: &View,
) {
    let settings = &state.model.view;
    let uv = Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0));
    let texture = textures.heatmap(ctx, heat.key.clone(), &heat.values, heat.size);
    let alpha = (settings.opacity.clamp(0.0, 1.0) * 255.0).round() as u8;
    painter.image(
        texture.id(),
        view.image_rect,
        uv,
        Color32::from_white_alpha(alpha),
    );
    let (range, level, caption) = match &heat.imported {
        Some((range, level, caption)) => (*range, *level, caption.clone()),
        None => (
            settings.range(heat.scale),
            settings.contour(heat.scale),
            format!("{} · {}", heat.key.layer.label(), heat.scale.caption()),
        ),
    };
    let segments = textures.contour(heat.key.clone(), level, &heat.values, heat.size);
    let scale = view.image_rect.size() / vec2(heat.size[0] as f32, heat.size[1] as f32);
    let to_screen = |p: [f32; 2]| view.image_rect.min + vec2(p[0] * scale.x, p[1] * scale.y);
    let stroke = Stroke::new(1.5, CONTOUR);
    for [a, b] in segments.iter() {
        painter.line_segment([to_screen(*a), to_screen(*b)], stroke);
    }
    legend(
        painter,
        view.pane,
        settings.colormap,
        range,
        level,
        &caption,
    );
}

/// A vertical colour bar with its end values, the contour level marked, and a caption.
fn legend(
    painter: &egui::Painter,
    pane: Rect,
    colormap: Colormap,
    (lo, hi): (f32, f32),
    level: f32,
    caption: &str,
) {
    let font = FontId::proportional(12.0);
    let bar = legend_bar(pane);
    let steps = 64;
    for i in 0..steps {
        let t0 = i as f32 / steps as f32;
        let [r, g, b] = colormap.rgb(t0);
        let y1 = bar.bottom() - t0 * bar.height();
        let y0 = bar.bottom() - (i + 1) as f32 / steps as f32 * bar.height();
        painter.rect_filled(
            Rect::from_x_y_ranges(bar.x_range(), y0..=y1),
            0.0,
            Color32::from_rgb(r, g, b),
        );
    }
    painter.rect_stroke(
        bar,
        0.0,
        Stroke::new(1.0, Color32::GRAY),
        egui::StrokeKind::Outside,
    );
    let label = |v: f32, y: f32| {
        painter.text(
            pos2(bar.right() + 4.0, y),
            Align2::LEFT_CENTER,
            format!("{v:.1}"),
            font.clone(),
            OVERLAY,
        );
    };
    label(hi, bar.top());
    label(lo, bar.bottom());
    if hi > lo && (lo..=hi).contains(&level) {
        let y = bar.bottom() - (level - lo) / (hi - lo) * bar.height();
        painter.line_segment(
            [pos2(bar.left() - 4.0, y), pos2(bar.right() + 2.0, y)],
            Stroke::new(2.0, CONTOUR),
        );
        label(level, y);
    }
    painter.text(
        pos2(pane.right() - 8.0, bar.bottom() + 14.0),
        Align2::RIGHT_TOP,
        caption,
        font,
        OVERLAY,
    );
}

/// The legend's colour bar, in the pane's lower right corner. Its labels take up to 50
/// points to its right, its caption the row from 14 to 30 points below it.
fn legend_bar(pane: Rect) -> Rect {
    Rect::from_min_size(
        pos2(pane.right() - 60.0, pane.bottom() - 190.0),
        vec2(14.0, 140.0),
    )
}

/// Where the image sits on screen.
struct View {
    image_rect: Rect,
    /// Points per image pixel.
    zoom: f32,
    /// The pane the image is drawn in (the whole viewer, or one half side by side).
    pane: Rect,
}

impl View {
    fn to_image(&self, p: Pos2) -> [f32; 2] {
        let d = (p - self.image_rect.min) / self.zoom;
        [d.x, d.y]
    }

    fn to_screen(&self, q: [f32; 2]) -> Pos2 {
        self.image_rect.min + vec2(q[0], q[1]) * self.zoom
    }
}

fn mouse(
    ui: &egui::Ui,
    state: &AppState,
    response: &egui::Response,
    view: &View,
    pan: [f32; 2],
    actions: &mut Vec<Action>,
) {
    if let Some(pointer) = response.hover_pos() {
        wheel(ui, view, pointer, pan, actions);
    }
    let delta = response.drag_delta();
    if response.dragged_by(egui::PointerButton::Secondary)
        && delta != Vec2::ZERO
        && let Some(display) = state
            .viewer
            .current
            .as_ref()
            .and_then(|k| state.display_for(&k.path))
    {
        // Sensitivity follows the width, so narrow and wide windows both respond usefully.
        let w = &display.window;
        let k = (w.width / 256.0).max(0.05);
        actions.push(Action::SetWindow {
            center: w.center + delta.y as f64 * k,
            width: (w.width + delta.x as f64 * k).max(1.0),
        });
    }
    let panning = response.dragged_by(egui::PointerButton::Middle)
        || (response.dragged_by(egui::PointerButton::Primary)
            && state.viewer.tool == Tool::Navigate);
    if panning && delta != Vec2::ZERO {
        actions.push(Action::SetView {
            zoom: view.zoom,
            pan: [pan[0] + delta.x, pan[1] + delta.y],
        });
    }
    match state.viewer.tool {
        Tool::Brush | Tool::Eraser => brush(response, view, actions),
        Tool::Fill | Tool::Measure => outline(ui, state, response, view, actions),
        Tool::Navigate => {}
    }
}

/// The wheel: zoom about the cursor, Shift scrolls frames, Ctrl sizes the brush.
fn wheel(ui: &egui::Ui, view: &View, pointer: Pos2, pan: [f32; 2], actions: &mut Vec<Action>) {
    let rect = view.pane;
    let wheel: Vec<(Vec2, egui::Modifiers, egui::MouseWheelUnit)> = ui.input(|i| {
        i.events
            .iter()
            .filter_map(|e| match e {
                egui::Event::MouseWheel {
                    unit,
                    delta,
                    modifiers,
                    ..
                } => Some((*delta, *modifiers, *unit)),
                _ => None,
            })
            .collect()
    });
    for (delta, modifiers, unit) in wheel {
        // Notches: a line is one notch, 50 points about one.
        let notches = match unit {
            egui::MouseWheelUnit::Point => (delta.y + delta.x) / 50.0,
            egui::MouseWheelUnit::Line => delta.y + delta.x,
            egui::MouseWheelUnit::Page => (delta.y + delta.x) * 10.0,
        };
        if notches == 0.0 {
            continue;
        }
        if modifiers.shift {
            actions.push(Action::Step(if notches > 0.0 { -1 } else { 1 }));
        } else if modifiers.command {
            actions.push(Action::ScaleBrush(1.15f32.powf(notches)));
        } else {
            let new_zoom = view.zoom * 1.15f32.powf(notches);
            // Keep the image point under the cursor where it is.
            let offset = pointer - rect.center() - vec2(pan[0], pan[1]);
            let new_pan = pointer - rect.center() - offset * (new_zoom / view.zoom);
            actions.push(Action::SetView {
                zoom: new_zoom,
                pan: [new_pan.x, new_pan.y],
            });
        }
    }
}

/// Brush and eraser: each drag segment paints; releasing ends the stroke (one undo step).
fn brush(response: &egui::Response, view: &View, actions: &mut Vec<Action>) {
    let delta = response.drag_delta();
    if let Some(p) = response.interact_pointer_pos()
        && (response.dragged_by(egui::PointerButton::Primary)
            || response.clicked_by(egui::PointerButton::Primary))
    {
        let from = if response.drag_started_by(egui::PointerButton::Primary) || response.clicked() {
            p
        } else {
            p - delta
        };
        actions.push(Action::Paint {
            from: view.to_image(from),
            to: view.to_image(p),
        });
    }
    if response.drag_stopped_by(egui::PointerButton::Primary)
        || response.clicked_by(egui::PointerButton::Primary)
    {
        actions.push(Action::EndStroke);
    }
}

/// Fill and measure: the drag's points are kept until release, then filled or measured.
fn outline(
    ui: &egui::Ui,
    state: &AppState,
    response: &egui::Response,
    view: &View,
    actions: &mut Vec<Action>,
) {
    let id = response.id.with("outline");
    if response.dragged_by(egui::PointerButton::Primary)
        && let Some(p) = response.interact_pointer_pos()
    {
        let q = view.to_image(p);
        let started = response.drag_started_by(egui::PointerButton::Primary);
        ui.ctx().data_mut(|d| {
            let points: &mut Vec<[f32; 2]> = d.get_temp_mut_or_default(id);
            if started {
                points.clear();
            }
            points.push(q);
        });
    }
    if response.drag_stopped_by(egui::PointerButton::Primary) {
        let points: Vec<[f32; 2]> = ui.ctx().data_mut(|d| d.remove_temp(id).unwrap_or_default());
        if state.viewer.tool == Tool::Fill {
            actions.push(Action::FillOutline(points));
        } else if let (Some(&from), Some(&to)) = (points.first(), points.last()) {
            actions.push(Action::Measure { from, to });
        }
    }
}

/// What is under the cursor at `p`: position, pixel value, the map's value and the patient
/// coordinates in mm where the file gives its geometry; `None` outside the image.
fn pixel_readout(
    stack: &ImageStack,
    key: &ImageKey,
    view: &View,
    p: Pos2,
    heat: Option<&Heat>,
    unit: &str,
) -> Option<String> {
    let frame = stack.frames.get(key.frame)?;
    let q = view.to_image(p);
    if q[0] < 0.0 || q[1] < 0.0 {
        return None;
    }
    let (x, y) = (q[0] as u32, q[1] as u32);
    let value = frame
        .pixel(x, y)?
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!("x {x}  y {y}   {value}{unit}");
    if let Some(heat) = heat {
        let [w, h] = heat.size;
        if heat.imported.is_some() {
            // An imported map lies at the source's pixels.
            if let Some(v) = heat.values.get(y as usize * w + x as usize)
                && (x as usize) < w
                && (y as usize) < h
            {
                text.push_str(&format!("   imported: {v:.2}"));
            }
        } else {
            let s = w as f32;
            let v = sample(
                &heat.values,
                w,
                q[0] * s / stack_width(stack, key),
                q[1] * s / stack_height(stack, key),
            );
            text.push_str(&format!("   {}: {v:.2}", heat.key.layer.label()));
        }
    }
    if let (Some(o), Some(Some(origin)), Some([row, col])) = (
        stack.info.image_orientation,
        stack.info.frame_positions.get(key.frame),
        stack.info.pixel_spacing,
    ) {
        let (fx, fy) = (x as f64 * col, y as f64 * row);
        let mm: Vec<String> = (0..3)
            .map(|a| format!("{:.1}", origin[a] + fx * o[a] + fy * o[3 + a]))
            .collect();
        text.push_str(&format!("\n({}) mm", mm.join(", ")));
    }
    Some(text)
}

/// The patient directions at the four edges (R/L, A/P, H/F), where the file gives them.
fn orientation_labels(painter: &egui::Painter, rect: Rect, stack: &ImageStack, margin: f32) {
    let Some([left, right, top, bottom]) = stack.info.orientation_labels() else {
        return;
    };
    let big = FontId::proportional(16.0);
    painter.text(
        pos2(rect.left() + margin, rect.center().y),
        Align2::LEFT_CENTER,
        left,
        big.clone(),
        OVERLAY,
    );
    painter.text(
        pos2(rect.right() - margin, rect.center().y),
        Align2::RIGHT_CENTER,
        right,
        big.clone(),
        OVERLAY,
    );
    painter.text(
        pos2(rect.center().x, rect.top() + margin),
        Align2::CENTER_TOP,
        top,
        big.clone(),
        OVERLAY,
    );
    painter.text(
        pos2(rect.center().x, rect.bottom() - margin),
        Align2::CENTER_BOTTOM,
        bottom,
        big,
        OVERLAY,
    );
}

/// The brush circle, the outline being drawn, the measurement being dragged.
fn tool_feedback(
    ui: &egui::Ui,
    painter: &egui::Painter,
    state: &AppState,
    response: &egui::Response,
    view: &View,
) {
    let stroke = Stroke::new(1.5, OVERLAY);
    match state.viewer.tool {
        Tool::Brush | Tool::Eraser => {
            if let Some(p) = response.hover_pos() {
                painter.circle_stroke(p, state.viewer.brush_radius * view.zoom, stroke);
            }
        }
        Tool::Fill | Tool::Measure => {
            let id = response.id.with("outline");
            let points: Vec<[f32; 2]> = ui.ctx().data(|d| d.get_temp(id).unwrap_or_default());
            let screen: Vec<Pos2> = points.iter().map(|&q| view.to_screen(q)).collect();
            if state.viewer.tool == Tool::Fill {
                painter.add(egui::Shape::line(screen, stroke));
            } else if let (Some(&a), Some(&b)) = (screen.first(), screen.last()) {
                painter.line_segment([a, b], stroke);
            }
        }
        Tool::Navigate => {}
    }
}

/// Length of a segment in mm when the pixel spacing is known, else in pixels.
fn length_text(stack: &ImageStack, from: [f32; 2], to: [f32; 2]) -> String {
    let (dx, dy) = ((to[0] - from[0]) as f64, (to[1] - from[1]) as f64);
    match stack.info.pixel_spacing {
        // PixelSpacing is [between rows, between columns]: y then x.
        Some([row, col]) => format!("{:.1} mm", ((dx * col).powi(2) + (dy * row).powi(2)).sqrt()),
        None => format!("{:.1} px", (dx * dx + dy * dy).sqrt()),
    }
}

#[allow(clippy::too_many_arguments)]
fn overlays(
    painter: &egui::Painter,
    rect: Rect,
    state: &AppState,
    stack: &ImageStack,
    key: &ImageKey,
    view: &View,
    window: &crate::io::image::Window,
    hover: Option<Pos2>,
    heat: Option<&Heat>,
) {
    let font = FontId::proportional(13.0);
    let margin = 8.0;
    let name = key.path.file_name().unwrap_or_default().to_string_lossy();
    let frames = stack.frames.len();
    let mut top_left = name.to_string();
    if frames > 1 {
        top_left.push_str(&format!("\nframe {}/{}", key.frame + 1, frames));
    }
    if let Some(label) = state.labels.label(key) {
        top_left.push_str(&format!("\n{}", label.name().to_uppercase()));
    }
    painter.text(
        rect.min + vec2(margin, margin),
        Align2::LEFT_TOP,
        top_left,
        font.clone(),
        OVERLAY,
    );
    let unit = if stack.info.modality.as_deref() == Some("CT") {
        " HU"
    } else {
        ""
    };
    painter.text(
        rect.right_top() + vec2(-margin, margin),
        Align2::RIGHT_TOP,
        format!(
            "W {:.0}{unit}  L {:.0}{unit}\nzoom {:.0}%",
            window.width,
            window.center,
            view.zoom * 100.0
        ),
        font.clone(),
        OVERLAY,
    );
    if let Some(p) = hover
        && let Some(text) = pixel_readout(stack, key, view, p, heat, unit)
    {
        painter.text(
            rect.left_bottom() + vec2(margin, -margin),
            Align2::LEFT_BOTTOM,
            text,
            font.clone(),
            OVERLAY,
        );
    }
    orientation_labels(painter, rect, stack, margin);
    if let Some([_, col]) = stack.info.pixel_spacing {
        scale_bar(painter, rect, view.zoom as f64 / col);
    }
    for m in state.viewer.measurements.iter().filter(|m| &m.key == key) {
        let (a, b) = (view.to_screen(m.from), view.to_screen(m.to));
        painter.line_segment([a, b], Stroke::new(2.0, Color32::from_rgb(120, 220, 255)));
        painter.text(
            b + vec2(6.0, 0.0),
            Align2::LEFT_CENTER,
            length_text(stack, m.from, m.to),
            font.clone(),
            Color32::from_rgb(120, 220, 255),
        );
    }
}

/// A bar of a round length (1, 2 or 5 x 10^n mm) about a fifth of the viewer wide.
fn scale_bar(painter: &egui::Painter, rect: Rect, points_per_mm: f64) {
    if !(points_per_mm.is_finite() && points_per_mm > 0.0) {
        return;
    }
    let target = rect.width() as f64 / 5.0 / points_per_mm;
    let magnitude = 10f64.powf(target.log10().floor());
    let mm = [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&m| m <= target)
        .unwrap_or(magnitude);
    let [x0, x1, y] = scale_bar_place(rect, (mm * points_per_mm) as f32);
    let stroke = Stroke::new(2.0, OVERLAY);
    painter.line_segment([pos2(x0, y), pos2(x1, y)], stroke);
    painter.line_segment([pos2(x0, y - 5.0), pos2(x0, y + 5.0)], stroke);
    painter.line_segment([pos2(x1, y - 5.0), pos2(x1, y + 5.0)], stroke);
    let text = if mm >= 10.0 {
        format!("{:.0} cm", mm / 10.0)
    } else if mm >= 1.0 {
        format!("{mm:.0} mm")
    } else {
        format!("{mm:.1} mm")
    };
    painter.text(
        pos2((x0 + x1) / 2.0, y - 6.0),
        Align2::CENTER_BOTTOM,
        text,
        FontId::proportional(12.0),
        OVERLAY,
    );
}

/// Where a scale bar `length` points long goes: `[x0, x1, y]`, in the lower left corner above
/// the pixel readout, with its text above it. The legend keeps the lower right corner and its
/// caption the bottom row, so the two never meet.
fn scale_bar_place(rect: Rect, length: f32) -> [f32; 3] {
    let x0 = rect.left() + 12.0;
    [x0, x0 + length, rect.bottom() - 44.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The legend (bar, labels, caption row) and the scale bar (ticks and text) share no
    /// point, whatever the pane's size and the bar's length (at most a fifth of the width).
    #[test]
    fn legend_and_scale_bar_never_overlap() {
        for (w, h) in [
            (240.0, 240.0),
            (400.0, 300.0),
            (900.0, 500.0),
            (2400.0, 1400.0),
        ] {
            let pane = Rect::from_min_size(pos2(10.0, 20.0), vec2(w, h));
            let bar = legend_bar(pane);
            let legend = Rect::from_min_max(
                bar.min - vec2(4.0, 8.0),
                pos2(pane.right(), bar.bottom() + 8.0),
            );
            let caption = Rect::from_min_max(
                pos2(pane.left(), bar.bottom() + 14.0),
                pos2(pane.right(), bar.bottom() + 30.0),
            );
            let [x0, x1, y] = scale_bar_place(pane, w / 5.0);
            let scale = Rect::from_min_max(pos2(x0 - 30.0, y - 20.0), pos2(x1 + 30.0, y + 5.0));
            assert!(
                !scale.intersects(legend),
                "{w}x{h}: scale bar on the legend"
            );
            assert!(
                !scale.intersects(caption),
                "{w}x{h}: scale bar on the caption"
            );
        }
    }
}
