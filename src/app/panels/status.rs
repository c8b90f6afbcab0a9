//! The status bar: compute device, weights, running jobs with progress and cancel, the shot
//! counts, whether work is unsaved, and the last message.
use eframe::egui;

use crate::app::commands::Command;
use crate::app::dispatch::Action;
use crate::app::state::{AppState, WeightsStatus};

pub fn show(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        ui.label(&state.backend.device)
            .on_hover_text(format!("Compute backend: {}", state.backend.backend));
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
        let jobs = [
            state
                .scan_job
                .as_ref()
                .map(|j| (j.title.as_str(), j.progress())),
            state
                .load_job
                .as_ref()
                .map(|j| (j.title.as_str(), j.progress())),
            state
                .model
                .job
                .as_ref()
                .map(|j| (j.job.title.as_str(), j.job.progress())),
        ];
        for (title, (fraction, message)) in jobs.into_iter().flatten() {
            ui.label(title);
            let bar = match fraction {
                Some(f) => egui::ProgressBar::new(f),
                None => egui::ProgressBar::new(0.0).animate(true),
            };
            ui.add(bar.desired_width(120.0).text(message));
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
        if let Some(job) = &state.model.results_save {
            ui.label(&job.title);
            ui.add(
                egui::ProgressBar::new(0.0)
                    .animate(true)
                    .desired_width(120.0)
                    .text(job.progress().1),
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
        ui.label(state.log.last().map(String::as_str).unwrap_or("Ready"));
    });
}
