//! The Model tab: compute device, CLIP weights, organ word, the current detector and its
//! checkpoint (with how the last fit chose it and what its threshold means), and fine-tuning
//! with its progress, ETA and live loss plot.
use eframe::egui::{self, Color32, RichText};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::widgets::command_button;
use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::state::model::{ModelJobKind, ORGAN_PRESETS};
use crate::app::state::{AppState, WeightsStatus};
use crate::model::mvfa::detector::TaskKind;
use crate::train::fit::FitMode;
use crate::train::select::{BankSource, SelectionReport, Verdict};
use crate::workflow::Schedule;

/// Draws the Model tab.
pub fn show(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    weights(ui, state, actions);
    ui.separator();
    organ(ui, state, actions);
    ui.separator();
    detector(ui, state, actions);
    ui.separator();
    training(ui, state, actions);
}

fn weights(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.heading("Model");
    // Values wrap within the panel: a long device name must not widen it.
    egui::Grid::new("backend").num_columns(2).show(ui, |ui| {
        ui.label("Backend");
        ui.add(egui::Label::new(&state.backend.backend).wrap());
        ui.end_row();
        ui.label("Device");
        ui.add(egui::Label::new(&state.backend.device).wrap());
        ui.end_row();
        if let Some(reason) = &state.backend.fallback_reason {
            ui.label("Note");
            ui.add(egui::Label::new(reason).wrap());
            ui.end_row();
        }
    });
    ui.label(RichText::new("CLIP weights").strong());
    if let Some(job) = &state.activity.download {
        let (fraction, message) = (job.fraction, &job.message);
        let bar = match fraction {
            Some(f) => egui::ProgressBar::new(f).show_percentage(),
            None => egui::ProgressBar::new(0.0).animate(true),
        };
        ui.add(bar.text(format!("Downloading: {message}")));
        command_button(ui, Command::CancelJob, actions);
    }
    match &state.weights {
        WeightsStatus::NotLoaded => {
            ui.label("No weights loaded");
            ui.horizontal_wrapped(|ui| {
                command_button(ui, Command::OpenWeights, actions);
                command_button(ui, Command::DownloadWeights, actions);
            });
        }
        WeightsStatus::Loading {
            path,
            fraction,
            message,
        } => {
            ui.label(format!("Loading {}", path.display()));
            let bar = match fraction {
                Some(f) => egui::ProgressBar::new(*f).show_percentage(),
                None => egui::ProgressBar::new(0.0).animate(true),
            };
            ui.add(bar.text(message.as_str()));
            command_button(ui, Command::CancelJob, actions);
        }
        WeightsStatus::Loaded(summary) => {
            ui.label(format!("Loaded {}", summary.path.display()));
            for line in &summary.lines {
                ui.label(RichText::new(line).small());
            }
            command_button(ui, Command::OpenWeights, actions);
        }
        WeightsStatus::Failed { path, message } => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("Could not load {}", path.display()),
            );
            ui.label(message);
            ui.horizontal_wrapped(|ui| {
                command_button(ui, Command::OpenWeights, actions);
                command_button(ui, Command::DownloadWeights, actions);
            });
        }
    }
}

fn organ(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    let heading = ui
        .label(RichText::new("Organ word of the prompts").strong())
        .on_hover_text("The subject of the text prompts (\"a photo of a normal {organ}\")");
    let current = &state.model.organ;
    let preset_name = ORGAN_PRESETS
        .iter()
        .find(|(_, word)| word == current)
        .map_or("Custom", |(name, _)| name);
    egui::ComboBox::from_id_salt("organ preset")
        .selected_text(preset_name)
        .show_ui(ui, |ui| {
            for (name, word) in ORGAN_PRESETS {
                if ui.selectable_label(word == current, name).clicked() {
                    actions.push(Action::SetOrgan(word.to_string()));
                }
            }
        })
        .response
        .labelled_by(heading.id);
    let id = egui::Id::unique("organ text");
    let mut text: String = ui
        .data(|d| d.get_temp::<String>(id))
        .unwrap_or_else(|| current.clone());
    let response = ui
        .add(
            egui::TextEdit::singleline(&mut text)
                .hint_text("free text, e.g. knee MRI")
                .desired_width(ui.available_width().min(240.0)),
        )
        .labelled_by(heading.id);
    if response.changed() {
        ui.data_mut(|d| d.insert_temp(id, text.clone()));
    }
    if response.lost_focus() {
        ui.data_mut(|d| d.remove_temp::<String>(id));
        if text.trim() != current {
            actions.push(Action::SetOrgan(text));
        }
    }
}

fn detector(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.label(RichText::new("Detector").strong());
    let model = &state.model;
    match &model.detector {
        None if !state.activity.session => {
            ui.label("Load the CLIP weights first.");
        }
        None => {
            ui.label(
                "No detector yet: mark at least one normal image (N) for the memory bank, \
                 or import adapters.",
            );
        }
        Some(d) => {
            egui::Grid::new("detector").num_columns(2).show(ui, |ui| {
                ui.label("Adapters");
                ui.label(&d.adapters);
                ui.end_row();
                ui.label("Organ word");
                ui.label(&d.organ);
                ui.end_row();
                ui.label("Task");
                ui.label(match d.task {
                    TaskKind::Segmentation => "segmentation (pixel maps)",
                    TaskKind::Classification => "classification (image scores)",
                });
                ui.end_row();
                if let Some(mode) = d.mode {
                    ui.label("Last fit");
                    ui.label(match mode {
                        FitMode::Masks => "masks (focal + dice + BCE)",
                        FitMode::ImageLabels => "image labels (BCE)",
                        FitMode::NormalOnly => "normal images only (no fine-tuning)",
                    });
                    ui.end_row();
                }
                ui.label("Memory bank");
                ui.label(format!("{} normal shot(s)", d.normal_shots));
                ui.end_row();
                match &d.calibration {
                    Some(c) => {
                        ui.label("Calibration");
                        ui.add(
                            egui::Label::new(format!(
                                "{} normal, {} abnormal exemplars; text branch weight {:.2}",
                                c.normal_exemplars, c.abnormal_exemplars, c.text_weight
                            ))
                            .wrap(),
                        );
                        ui.end_row();
                        ui.label("Threshold");
                        ui.add(
                            egui::Label::new(match &c.fpr {
                                Some(t) => format!("{:.2}: {}", c.threshold, t.describe()),
                                None => {
                                    format!("{:.2} (no stated false-positive rate)", c.threshold)
                                }
                            })
                            .wrap(),
                        );
                    }
                    None => {
                        ui.label("Calibration");
                        ui.label("none (maps shown uncalibrated)");
                    }
                }
                ui.end_row();
                ui.label("Checkpoint");
                ui.label(match (&model.checkpoint, model.detector_unsaved) {
                    (_, true) => "not saved".to_string(),
                    (Some(p), false) => p.display().to_string(),
                    (None, false) => "none".to_string(),
                });
                ui.end_row();
            });
            if let Some(note) = &d.note {
                ui.label(RichText::new(note).italics());
            }
            if let Some(report) = &d.selection {
                selection(ui, report);
            }
        }
    }
    ui.horizontal(|ui| {
        command_button(ui, Command::ImportAdapters, actions);
        command_button(ui, Command::SaveDetector, actions);
    });
    if let Some((kind, job)) = &state.activity.model
        && *kind != ModelJobKind::Train
    {
        let bar = match job.fraction {
            Some(f) => egui::ProgressBar::new(f),
            None => egui::ProgressBar::new(0.0).animate(true),
        };
        ui.add(bar.text(format!("{}: {}", kind.title(), job.message)));
    }
    if let Some(error) = &model.error {
        ui.colored_label(ui.visuals().error_fg_color, error);
    }
}

/// How the last fit chose the detector: the verdict in plain words and every candidate's
/// cross-validated numbers.
fn selection(ui: &mut egui::Ui, report: &SelectionReport) {
    let colour = match report.verdict {
        Verdict::Improved => ui.visuals().text_color(),
        Verdict::KeptCurrent | Verdict::Unchecked => ui.visuals().warn_fg_color,
    };
    ui.add(egui::Label::new(RichText::new(&report.message).color(colour)).wrap());
    if report.candidates.is_empty() {
        return;
    }
    egui::CollapsingHeader::new(format!(
        "Validated candidates ({})",
        report.candidates.len()
    ))
    .id_salt("validated candidates")
    .show(ui, |ui| {
        ui.add(
            egui::Label::new(
                RichText::new(format!(
                    "Cross-validated on {} folds of {} normal and {} abnormal images{}, {} views \
                     each. Image and pixel AUC of the calibrated fused output.",
                    report.folds,
                    report.validation_images[0],
                    report.validation_images[1],
                    match report.validation_images[2] {
                        0 => String::new(),
                        n => format!(" and {n} held-out normals"),
                    },
                    report.validation_augmentations
                ))
                .small(),
            )
            .wrap(),
        );
        // No inner scroll area: the panel scrolls, and the column headings stay with the rows.
        egui::Grid::new("candidates")
                .num_columns(6)
                .striped(true)
                .show(ui, |ui| {
                    for heading in ["Epochs", "Bank", "Text", "Image", "Pixel", ""] {
                        ui.label(RichText::new(heading).strong());
                    }
                    ui.end_row();
                    for (i, c) in report.candidates.iter().enumerate() {
                        let chosen = report.chosen == Some(i);
                        let text = |t: String| {
                            if chosen {
                                RichText::new(t).strong()
                            } else {
                                RichText::new(t)
                            }
                        };
                        ui.label(text(if c.epochs == 0 {
                            "before".into()
                        } else {
                            c.epochs.to_string()
                        }))
                        .on_hover_text(
                            "Fine-tuning epochs on a fold's shots (before: the adapters before fine-tuning)",
                        );
                        ui.label(text(match (c.epochs, c.bank) {
                            (0, _) | (_, BankSource::Current) => "before".into(),
                            (_, BankSource::FineTuned) => "tuned".into(),
                        }))
                        .on_hover_text(
                            "Features of the memory bank: from the adapters before fine-tuning, or the fine-tuned ones",
                        );
                        ui.label(text(format!("{:.2}", c.text_weight)))
                            .on_hover_text("Weight of the text branch against the memory bank");
                        ui.label(text(format!("{:.3}", c.image_auc)));
                        ui.label(text(
                            c.pixel_auc.map_or("-".into(), |p| format!("{p:.3}")),
                        ));
                        ui.label(match (chosen, c.current) {
                            (true, _) => "installed",
                            (false, true) => "current",
                            _ => "",
                        });
                        ui.end_row();
                    }
                });
    });
}

fn training(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.label(RichText::new("Fine-tuning").strong());
    let model = &state.model;
    ui.horizontal(|ui| {
        for (schedule, name, cost) in [
            (Schedule::Quick, "Quick", "minutes on a CPU"),
            (
                Schedule::Paper,
                "Paper",
                "the reference's: hours on a CPU, minutes on a GPU",
            ),
        ] {
            let tip = format!(
                "{} augmentations of each shot, {} epochs: {cost}",
                schedule.training_augmentations(),
                schedule.epochs()
            );
            if ui
                .radio(model.schedule == schedule, name)
                .on_hover_text(tip)
                .clicked()
            {
                actions.push(Action::SetSchedule(schedule));
            }
        }
    });
    let training = state.activity.model_running(ModelJobKind::Train);
    ui.horizontal(|ui| {
        ui.add_enabled_ui(!training && state.activity.session, |ui| {
            command_button(ui, Command::StartTraining, actions);
        });
        if training
            && ui
                .button("Cancel fine-tuning")
                .on_hover_text("Stop at the next step; the previous detector is kept")
                .clicked()
        {
            actions.push(Action::Run(Command::CancelJob));
        }
    });
    let run = &model.training;
    if training {
        let done = run.losses.last().map_or(0, |p| p.step);
        let fraction = done as f32 / run.total_steps.max(1) as f32;
        let eta = run
            .eta_seconds
            .map(|s| format!(", about {} left", duration_text(s)))
            .unwrap_or_default();
        ui.add(
            egui::ProgressBar::new(fraction)
                .text(format!("step {done} of {}{eta}", run.total_steps)),
        );
    }
    if !run.status.is_empty() {
        ui.label(format!("Status: {}", run.status));
    }
    if !run.losses.is_empty() {
        loss_plot(ui, state);
    }
}

/// "1 h 05 min", "3 min 20 s", "12 s".
fn duration_text(seconds: f32) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

fn loss_plot(ui: &mut egui::Ui, state: &AppState) {
    let losses = &state.model.training.losses;
    let series = |get: fn(&crate::app::state::model::LossPoint) -> f32| -> PlotPoints<'static> {
        losses
            .iter()
            .map(|p| [p.step as f64, get(p) as f64])
            .collect()
    };
    // As tall as the panel has room for (with the axis caption), between 110 and 170 points,
    // so that on a short window the caption is not cut off below the panel's edge.
    let height = (ui.available_height() - 24.0).clamp(110.0, 170.0);
    Plot::new("losses")
        .height(height)
        .legend(Legend::default())
        .x_axis_label("step")
        .allow_scroll(false)
        .show(ui, |plot| {
            // Terms that stay 0 (focal and dice when training on image labels) are left out.
            let used = |get: fn(&crate::app::state::model::LossPoint) -> f32| {
                losses.iter().any(|p| get(p) != 0.0)
            };
            if used(|p| p.focal) {
                plot.line(Line::new("focal", series(|p| p.focal)));
            }
            if used(|p| p.dice) {
                plot.line(Line::new("dice", series(|p| p.dice)));
            }
            plot.line(Line::new("bce", series(|p| p.bce)));
            plot.line(Line::new("total", series(|p| p.total)).color(Color32::WHITE));
        });
}
