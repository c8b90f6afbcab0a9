//! The status bar: compute device, weights, running jobs with progress and cancel, the shot
//! counts, whether work is unsaved, and the last message.
use eframe::egui;

use crate::app::action::Action;
use crate::app::commands::Command;
use crate::app::state::{AppState, WeightsStatus};

pub fn show(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        ui.label(&state.backend.short_device).on_hover_text(format!(
            "{}\nCompute backend: {}",
            state.backend.device, state.backend.backend
        ));
        ui.separator();
        let weights = match &state.weights {
            WeightsStatus::NotLoaded => "Weights: none".to_string(),
            WeightsStatus::Loading { message, .. } => format!("Weights: loading ({message})"),
            WeightsStatus::Loaded(s) => format!(
                "Weights: {}",
                s.path.file_name().unwrap_or_default().to_string_lossy()
            ),
            WeightsStatus::Failed { .. } => "Weights: failed".into(),
        };
        ui.label(weights);
        ui.separator();
        let activity = &state.activity;
        let jobs = [
            activity.scan.as_ref(),
            activity.load.as_ref(),
            activity.model.as_ref().map(|(_, p)| p),
            activity.project.as_ref(),
        ];
        for progress in jobs.into_iter().flatten() {
            ui.label(&progress.title);
            let bar = match progress.fraction {
                Some(f) => egui::ProgressBar::new(f),
                None => egui::ProgressBar::new(0.0).animate(true),
            };
            ui.add(bar.desired_width(120.0).text(&progress.message));
            if ui
                .small_button("Cancel")
                .on_hover_text(Command::CancelJob.tooltip())
                .clicked()
            {
                actions.push(Action::Run(Command::CancelJob));
            }
            ui.separator();
        }
        // Writing the results file is not cancellable (a project save must finish): no button.
        if let Some(job) = &state.activity.results_save {
            ui.label(&job.title);
            ui.add(
                egui::ProgressBar::new(0.0)
                    .animate(true)
                    .desired_width(120.0)
                    .text(&job.message),
            );
            ui.separator();
        }
        let counts = state.labels.counts();
        ui.label(format!(
            "Normal {} · Abnormal {} · Masks {}",
            counts.normal, counts.abnormal, counts.masks
        ));
        if state.unsaved() {
            ui.label(egui::RichText::new("unsaved").color(ui.visuals().warn_fg_color))
                .on_hover_text("Autosaved every minute; Ctrl+S saves the project");
        }
        ui.separator();
        // A long message (a file's path and a decoder's reason) ends in "…" at the window's
        // edge; hovering shows it whole.
        let message = state.log.last().map(String::as_str).unwrap_or("Ready");
        ui.add(egui::Label::new(message).truncate())
            .on_hover_text(message);
    });
}
