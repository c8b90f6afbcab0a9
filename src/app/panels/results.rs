//! The Results tab: which map is shown and how (colormap, opacity, range, contour level),
//! the corrections and export commands, the scores grouped by study and series (most anomalous
//! first, each slice sortable), and the score histogram with the decision threshold.
use eframe::egui::{self, Color32, RichText};
use egui_plot::{Bar, BarChart, Plot, VLine};

use super::widgets::command_button;
use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::state::AppState;
use crate::app::state::labels::{ImageKey, Label};
use crate::app::state::model::{ModelJobKind, ResultsView, Scored, SortColumn};
use crate::app::state::series::SeriesRow;
use crate::io::export::overlay::Colormap;
use crate::workflow::{MapLayer, MapScale, SERIES_RULE, SeriesRule, SliceContext, TOP_K};

/// Draws the Results tab.
pub fn show(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    let model = &state.model;
    ui.heading("Results");
    let total = model.results.len();
    let current = model
        .results
        .values()
        .filter(|s| s.generation == model.generation)
        .count();
    ui.label(if state.activity.model_running(ModelJobKind::Score) {
        format!("{current} image(s) scored by the current detector; scoring goes on")
    } else if model.scoring_paused {
        format!("{total} image(s) scored; scoring paused (Escape) until the detector changes")
    } else {
        format!("{total} image(s) scored")
    });
    display(ui, state, actions);
    imported(ui, state);
    ui.separator();
    ui.horizontal_wrapped(|ui| {
        command_button(ui, Command::NextAnomalous, actions);
        command_button(ui, Command::NextSeries, actions);
        command_button(ui, Command::AcceptNormal, actions);
        command_button(ui, Command::AcceptAbnormal, actions);
    });
    ui.horizontal_wrapped(|ui| {
        command_button(ui, Command::ExportImage, actions);
        command_button(ui, Command::ExportStudy, actions);
    });
    ui.separator();
    table(ui, state, actions);
    ui.separator();
    histogram(ui, state, actions);
}

/// The result objects read back (from disk or the PACS), and what the current image shows of
/// them: they are laid over their source frames where the detector has no result.
fn imported(ui: &mut egui::Ui, state: &AppState) {
    let lines = crate::app::state::imported::summary_lines(&state.imported);
    if lines.is_empty() {
        return;
    }
    ui.separator();
    ui.label(RichText::new("Imported results").strong());
    for line in lines {
        ui.add(egui::Label::new(line).truncate());
    }
    let over_current = state.viewer.current.as_ref().and_then(|key| {
        let stack = state.images.get(&key.path)?;
        state.imported.map_over(stack, key.frame)
    });
    ui.label(match over_current {
        Some(m) => format!("This image: {}", m.caption),
        None => "This image: no imported result matches it".to_string(),
    });
}

fn display(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    let mut view: ResultsView = state.model.view.clone();
    let levels = state.model.detector.as_ref().map_or(4, |d| d.levels);
    let scale = scale_of(state);
    ui.spacing_mut().slider_width = 120.0;
    egui::Grid::new("results display")
        .num_columns(2)
        .show(ui, |ui| {
            let label = ui.label("Map");
            egui::ComboBox::from_id_salt("map layer")
                .selected_text(view.layer.label())
                .show_ui(ui, |ui| {
                    for layer in MapLayer::all(levels) {
                        ui.selectable_value(&mut view.layer, layer, layer.label());
                    }
                })
                .response
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label("Colormap");
            egui::ComboBox::from_id_salt("colormap")
                .selected_text(format!("{:?}", view.colormap))
                .show_ui(ui, |ui| {
                    for map in Colormap::ALL {
                        ui.selectable_value(&mut view.colormap, map, format!("{map:?}"));
                    }
                })
                .response
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label("Opacity");
            ui.add(egui::Slider::new(&mut view.opacity, 0.0..=1.0))
                .labelled_by(label.id);
            ui.end_row();
            let label = ui.label("Colour range").on_hover_text(
                "Calibrated values at the two ends of the colormap; the same for every image",
            );
            ui.horizontal(|ui| {
                let (lo, hi) = &mut view.calibrated_range;
                ui.add(egui::DragValue::new(lo).speed(0.1).range(-20.0..=*hi - 0.1))
                    .labelled_by(label.id);
                ui.label("to");
                let low = *lo;
                ui.add(egui::DragValue::new(hi).speed(0.1).range(low + 0.1..=100.0))
                    .labelled_by(label.id);
            });
            ui.end_row();
            let label = ui
                .label("Contour at")
                .on_hover_text("The outline is drawn where the map reaches this value");
            match scale {
                MapScale::Calibrated => {
                    ui.add(egui::Slider::new(&mut view.contour_level, 0.0..=20.0))
                }
                MapScale::Raw => ui.add(egui::Slider::new(&mut view.raw_contour_level, 0.0..=1.0)),
            }
            .labelled_by(label.id);
            ui.end_row();
        });
    ui.horizontal(|ui| {
        ui.checkbox(&mut view.show_heatmap, Command::ToggleHeatmap.label())
            .on_hover_text(Command::ToggleHeatmap.tooltip());
        ui.checkbox(&mut view.side_by_side, Command::ToggleSideBySide.label())
            .on_hover_text(Command::ToggleSideBySide.tooltip());
    });
    colour_bar(ui, &view, scale);
    if view != state.model.view {
        actions.push(Action::SetResultsView(view));
    }
}

fn scale_of(state: &AppState) -> MapScale {
    match state.model.detector.as_ref() {
        Some(d) if d.calibration.is_none() => MapScale::Raw,
        _ => MapScale::Calibrated,
    }
}

/// The legend as a horizontal bar with its end values and the contour mark.
fn colour_bar(ui: &mut egui::Ui, view: &ResultsView, scale: MapScale) {
    let (lo, hi) = view.range(scale);
    let width = ui.available_width().min(240.0);
    let (rect, _) = ui.allocate_exact_size(egui::vec2(width, 14.0), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    let steps = 64;
    for i in 0..steps {
        let t = i as f32 / steps as f32;
        let [r, g, b] = view.colormap.rgb(t);
        let x0 = rect.left() + t * rect.width();
        let x1 = rect.left() + (i + 1) as f32 / steps as f32 * rect.width();
        painter.rect_filled(
            egui::Rect::from_x_y_ranges(x0..=x1, rect.y_range()),
            0.0,
            Color32::from_rgb(r, g, b),
        );
    }
    let level = view.contour(scale);
    if hi > lo && (lo..=hi).contains(&level) {
        let x = rect.left() + (level - lo) / (hi - lo) * rect.width();
        painter.line_segment(
            [egui::pos2(x, rect.top()), egui::pos2(x, rect.bottom())],
            egui::Stroke::new(2.0, Color32::WHITE),
        );
    }
    ui.horizontal(|ui| {
        ui.label(RichText::new(format!("{lo:.1}")).small());
        ui.label(RichText::new(format!("{} · contour {level:.1}", scale.caption())).small());
        ui.label(RichText::new(format!("{hi:.1}")).small());
    });
}

fn histogram(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    let model = &state.model;
    let scores: Vec<f32> = model.results.values().map(Scored::score).collect();
    ui.label(RichText::new("Image scores").strong());
    if scores.is_empty() {
        ui.label("No scores yet.");
        return;
    }
    let threshold = model.score_threshold();
    if let Some(t) = threshold {
        let above = scores.iter().filter(|&&s| s >= t).count();
        ui.label(format!(
            "{above} of {} image(s) at or above the threshold {t:.2}",
            scores.len()
        ));
        if let Some(meaning) = model.threshold_meaning() {
            ui.add(egui::Label::new(RichText::new(meaning).italics()).wrap());
        }
    }
    let lo = scores.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lo = threshold.map_or(lo, |t| lo.min(t));
    let hi = threshold.map_or(hi, |t| hi.max(t));
    let bins = 20usize;
    let width = ((hi - lo) / bins as f32).max(1e-3);
    let mut counts = vec![0u32; bins];
    for s in &scores {
        let i = (((s - lo) / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let bars: Vec<Bar> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let centre = lo + (i as f32 + 0.5) * width;
            let fill = match threshold {
                Some(t) if centre >= t => Color32::from_rgb(230, 110, 80),
                _ => Color32::from_rgb(90, 150, 220),
            };
            Bar::new(centre as f64, c as f64)
                .width(width as f64 * 0.95)
                .fill(fill)
        })
        .collect();
    Plot::new("score histogram")
        .height(120.0)
        .allow_scroll(false)
        .allow_drag(false)
        .allow_zoom(false)
        .x_axis_label("calibrated image score")
        .show(ui, |plot| {
            plot.bar_chart(BarChart::new("images", bars));
            if let Some(t) = threshold {
                plot.vline(
                    VLine::new("threshold", t as f64)
                        .color(Color32::WHITE)
                        .width(2.0),
                );
            }
        });
    if let Some(mut t) = threshold {
        let range = lo.min(0.0)..=hi.max(t) + 1.0;
        let response = ui
            .add(egui::Slider::new(&mut t, range).text("abnormal if at least"))
            .on_hover_text(
                "Image-score threshold of the table and histogram (default: the calibration's)",
            );
        if response.changed() {
            let mut view = model.view.clone();
            view.score_threshold = Some(t);
            actions.push(Action::SetResultsView(view));
        }
    }
}

/// The scores grouped by study and series (expandable), most anomalous series first; each
/// series heading shows its max and top-k mean with the peak slice, and its slices sort by the
/// chosen column.
fn table(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    let studies = state.studies();
    if studies.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        ui.label(RichText::new("By series").strong());
        context_choice(ui, state, actions);
    });
    ui.label(
        RichText::new(format!(
            "Series score: {} of its slices (also shown: mean of the top {TOP_K})",
            if SERIES_RULE == SeriesRule::Max {
                "the maximum"
            } else {
                "the top-k mean"
            }
        ))
        .small(),
    );
    let single = studies.len() == 1 && studies[0].series.len() == 1;
    egui::ScrollArea::vertical()
        .id_salt("score table")
        .max_height(360.0)
        .show(ui, |ui| {
            for study in &studies {
                let heading = match study.score {
                    Some(s) => format!("{}: study score {s:.2}", study.title),
                    None => format!("{}: not scored", study.title),
                };
                section(ui, ("study", &study.title), &heading, true, |ui| {
                    for series in &study.series {
                        series_block(ui, state, series, single, actions);
                    }
                });
            }
        });
}

/// The slice context choice (applies to the strip, the table and the series scores).
fn context_choice(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    let mut view = state.model.view.clone();
    let choices = [
        SliceContext::Off,
        SliceContext::WeightedMax { weight: 0.5 },
        SliceContext::WeightedMean { weight: 0.5 },
    ];
    let label = ui.label("Slice context");
    egui::ComboBox::from_id_salt("slice context")
        .selected_text(view.slice_context.describe())
        .show_ui(ui, |ui| {
            for c in choices {
                ui.selectable_value(&mut view.slice_context, c, c.describe());
            }
        })
        .response
        .labelled_by(label.id)
        .on_hover_text(
            "Mix each slice's score with its neighbours' in the series. Off by default: it \
             ranks better on synthetic volumes, but the threshold is calibrated on single \
             slices, so more normal slices reach it than it states",
        );
    if view != state.model.view {
        actions.push(Action::SetResultsView(view));
    }
}

fn series_block(
    ui: &mut egui::Ui,
    state: &AppState,
    series: &SeriesRow,
    open: bool,
    actions: &mut Vec<Action>,
) {
    let n = series.frames.len();
    let heading = match series.score {
        Some(s) => format!(
            "{}: {:.2} (peak slice {} of {n}) · top-{TOP_K} mean {:.2}{}",
            series.title,
            s.max,
            s.peak + 1,
            s.top_mean,
            s.flagged
                .map_or(String::new(), |f| format!(" · {f} at or above threshold")),
        ),
        None => format!("{}: {n} slice(s), not scored", series.title),
    };
    let id = series.frames.first().map(|k| k.path.clone());
    section(ui, ("series", id), &heading, open, |ui| {
        if let (Some(s), Some(peak)) = (series.score, series.peak()) {
            ui.horizontal_wrapped(|ui| {
                if ui
                    .button(format!("Go to peak slice {}", s.peak + 1))
                    .on_hover_text("Show the slice with the highest score")
                    .clicked()
                {
                    actions.push(Action::Show(peak.clone()));
                }
                if s.scored < n {
                    ui.label(format!("{} of {n} scored", s.scored));
                }
            });
        }
        slice_rows(ui, state, series, actions);
    });
}

/// A collapsible section whose heading is cut at the panel's edge (whole on hover), so that a
/// long series description never widens the side panel; a click on the heading opens it.
fn section(
    ui: &mut egui::Ui,
    id_salt: impl egui::AsIdSalt,
    heading: &str,
    default_open: bool,
    body: impl FnOnce(&mut egui::Ui),
) {
    use egui::collapsing_header::CollapsingState;
    let id = ui.make_persistent_id(id_salt);
    let (_, header, _) = CollapsingState::load_with_default_open(ui.ctx(), id, default_open)
        .show_header(ui, |ui| {
            ui.add(
                egui::Label::new(heading)
                    .truncate()
                    .sense(egui::Sense::click()),
            )
            .on_hover_text(heading)
            .clicked()
        })
        .body(body);
    if header.inner {
        let mut state = CollapsingState::load_with_default_open(ui.ctx(), id, default_open);
        state.toggle(ui);
        state.store(ui.ctx());
    }
}

fn slice_rows(ui: &mut egui::Ui, state: &AppState, series: &SeriesRow, actions: &mut Vec<Action>) {
    let model = &state.model;
    let view = &model.view;
    let mut rows: Vec<(usize, &ImageKey, &Scored, f32)> = series
        .frames
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let scored = model.results.get(k)?;
            Some((i, k, scored, series.scores[i].unwrap_or(f32::NAN)))
        })
        .collect();
    rows.sort_by(|a, b| {
        let order = match view.sort {
            SortColumn::Image => a.0.cmp(&b.0),
            SortColumn::Score => a.3.total_cmp(&b.3),
            SortColumn::ZeroShot => {
                a.2.result
                    .raw
                    .zero_image
                    .total_cmp(&b.2.result.raw.zero_image)
            }
            SortColumn::FewShot => {
                a.2.result
                    .raw
                    .few_image
                    .unwrap_or(f32::NAN)
                    .total_cmp(&b.2.result.raw.few_image.unwrap_or(f32::NAN))
            }
        };
        let order = if view.ascending {
            order
        } else {
            order.reverse()
        };
        order.then(a.0.cmp(&b.0))
    });
    let threshold = model.score_threshold();
    let current = state.viewer.current.as_ref();
    egui::Grid::new(("scores", series.frames.first()))
        .num_columns(4)
        .striped(true)
        .show(ui, |ui| {
            sort_header(ui, view, actions);
            for (index, key, scored, score) in rows {
                let name = key.path.file_name().unwrap_or_default().to_string_lossy();
                let mut text = if series.frames.len() > 1 {
                    format!("{}: {name}", index + 1)
                } else {
                    name.to_string()
                };
                let frames = state
                    .browser
                    .item(&key.path)
                    .map_or(1, |(_, item)| item.frames);
                if frames > 1 {
                    text.push_str(&format!(" [{}]", key.frame + 1));
                }
                if let Some(label) = state.labels.label(key) {
                    text.push_str(match label {
                        Label::Normal => "  N",
                        Label::Abnormal => "  A",
                    });
                }
                let mut rich = RichText::new(text);
                if scored.generation != model.generation {
                    rich = rich.italics().weak();
                }
                if ui
                    .selectable_label(current == Some(key), rich)
                    .on_hover_text(key.path.display().to_string())
                    .clicked()
                {
                    actions.push(Action::Show(key.clone()));
                }
                let flagged = threshold.is_some_and(|t| score >= t);
                let colour = if flagged {
                    Color32::from_rgb(240, 130, 100)
                } else {
                    ui.visuals().text_color()
                };
                ui.colored_label(colour, format!("{score:.2}"));
                ui.label(format!("{:.3}", scored.result.raw.zero_image));
                ui.label(
                    scored
                        .result
                        .raw
                        .few_image
                        .map_or("-".to_string(), |v| format!("{v:.3}")),
                );
                ui.end_row();
            }
        });
}

/// The column titles of a series' slice rows; a click sorts by the column (again: reverses).
fn sort_header(ui: &mut egui::Ui, view: &ResultsView, actions: &mut Vec<Action>) {
    for (column, title) in [
        (SortColumn::Image, "Slice"),
        (SortColumn::Score, "Score"),
        (SortColumn::ZeroShot, "Zero"),
        (SortColumn::FewShot, "Few"),
    ] {
        let arrow = match (view.sort == column, view.ascending) {
            (true, true) => " ^",
            (true, false) => " v",
            _ => "",
        };
        if ui
            .button(RichText::new(format!("{title}{arrow}")).strong())
            .on_hover_text("Sort by this column (again: reverse)")
            .clicked()
        {
            let mut v = view.clone();
            v.ascending = if v.sort == column {
                !v.ascending
            } else {
                column == SortColumn::Image
            };
            v.sort = column;
            actions.push(Action::SetResultsView(v));
        }
    }
    ui.end_row();
}
