//! The PACS window: the node, the study search, the studies found (each with its series list
//! and a retrieve button), the series of one study (each retrievable on its own), and sending
//! the last export's results back.
use eframe::egui::{self, RichText};

use crate::app::action::Action;
use crate::app::state::AppState;
use crate::app::state::pacs::QueryForm;

/// Draws the PACS window when it is open.
pub fn show_window(ctx: &egui::Context, state: &AppState, actions: &mut Vec<Action>) {
    if !state.pacs.open {
        return;
    }
    let mut open = true;
    egui::Window::new("PACS")
        .open(&mut open)
        .default_width(560.0)
        // The window takes the size of its content, which grows as search results and then
        // a series list arrive (a resizable window keeps its first size and cuts them off);
        // the two lists scroll inside their own bounded areas.
        .auto_sized()
        .max_width(760.0)
        .show(ctx, |ui| contents(ui, state, actions));
    if !open {
        actions.push(Action::Run(crate::app::commands::Command::TogglePacs));
    }
}

fn contents(ui: &mut egui::Ui, state: &AppState, actions: &mut Vec<Action>) {
    let pacs = &state.pacs;
    if let Some(e) = &pacs.settings_error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
    if pacs.settings.nodes.is_empty() {
        ui.label(
            "No PACS node configured. Add one on the command line: \
             mvfa-studio pacs nodes add NAME --host HOST --port PORT --aet AE (DIMSE) \
             or --url https://…/dicom-web (DICOMweb), then reopen this window.",
        );
    } else {
        let label = ui.label("Node");
        egui::ComboBox::from_id_salt("pacs node")
            .selected_text(pacs.node.clone().unwrap_or_default())
            .show_ui(ui, |ui| {
                for node in &pacs.settings.nodes {
                    if ui
                        .selectable_label(pacs.node.as_ref() == Some(&node.name), &node.name)
                        .clicked()
                    {
                        actions.push(Action::SetPacsNode(node.name.clone()));
                    }
                }
            })
            .response
            .labelled_by(label.id);
    }
    let mut form: QueryForm = pacs.form.clone();
    egui::Grid::new("pacs query").num_columns(2).show(ui, |ui| {
        for (name, hint, value) in [
            ("Patient ID", "wildcards * ?", &mut form.patient_id),
            ("Patient name", "DOE^J*", &mut form.patient_name),
            ("Study date from", "YYYYMMDD", &mut form.date_from),
            ("Study date to", "YYYYMMDD", &mut form.date_to),
            ("Modality", "CT, MR, CR…", &mut form.modality),
            ("Accession number", "", &mut form.accession),
        ] {
            let label = ui.label(name);
            ui.add(egui::TextEdit::singleline(value).hint_text(hint))
                .labelled_by(label.id);
            ui.end_row();
        }
    });
    if form != pacs.form {
        actions.push(Action::SetPacsForm(form));
    }
    ui.horizontal(|ui| {
        if ui.button("Search").clicked() {
            actions.push(Action::PacsSearch);
        }
        let results = pacs.last_export_dicom.len();
        if ui
            .add_enabled(
                results > 0,
                egui::Button::new(format!("Send results ({results})")),
            )
            .on_hover_text(
                "Store the Secondary Captures and score SRs of the last export on this node",
            )
            .on_disabled_hover_text("Export with \"DICOM Secondary Capture\" ticked first")
            .clicked()
        {
            actions.push(Action::PacsSendResults);
        }
    });
    if let Some((_, job)) = &state.activity.pacs {
        let bar = match job.fraction {
            Some(f) => egui::ProgressBar::new(f),
            None => egui::ProgressBar::new(0.0).animate(true),
        };
        ui.add(bar.text(&job.message));
    }
    if !pacs.status.is_empty() {
        ui.label(&pacs.status);
    }
    if pacs.matches.is_empty() {
        return;
    }
    ui.separator();
    egui::ScrollArea::both()
        .id_salt("pacs studies")
        .max_height(260.0)
        .show(ui, |ui| {
            egui::Grid::new("pacs studies")
                .num_columns(7)
                .striped(true)
                .show(ui, |ui| {
                    for title in ["Patient", "ID", "Date", "Modality", "Description", "", ""] {
                        ui.label(RichText::new(title).strong());
                    }
                    ui.end_row();
                    for (i, m) in pacs.matches.iter().enumerate() {
                        ui.label(&m.patient_name);
                        ui.label(&m.patient_id);
                        ui.label(&m.study_date);
                        ui.label(&m.modality);
                        ui.label(&m.description);
                        if ui
                            .button("Series")
                            .on_hover_text("List the series of this study")
                            .clicked()
                        {
                            actions.push(Action::PacsListSeries(i));
                        }
                        if ui
                            .button("Retrieve")
                            .on_hover_text(format!("The whole study {}", m.study_uid))
                            .clicked()
                        {
                            actions.push(Action::PacsRetrieve(i));
                        }
                        ui.end_row();
                    }
                });
        });
    if let Some((study_uid, series)) = &pacs.series {
        series_list(ui, study_uid, series, actions);
    }
}

/// The series listed for one study, each with its own retrieve button.
fn series_list(
    ui: &mut egui::Ui,
    study_uid: &str,
    series: &[crate::pacs::Match],
    actions: &mut Vec<Action>,
) {
    ui.separator();
    ui.label(RichText::new(format!("Series of study {study_uid}")).strong());
    egui::ScrollArea::both()
        .id_salt("pacs series")
        .max_height(200.0)
        .show(ui, |ui| {
            egui::Grid::new("pacs series")
                .num_columns(4)
                .striped(true)
                .show(ui, |ui| {
                    for title in ["Modality", "Description", "Images", ""] {
                        ui.label(RichText::new(title).strong());
                    }
                    ui.end_row();
                    for (i, s) in series.iter().enumerate() {
                        ui.label(&s.modality);
                        ui.label(&s.description);
                        ui.label(
                            s.related_instances
                                .map_or_else(|| "?".to_string(), |n| n.to_string()),
                        );
                        if ui
                            .button("Retrieve series")
                            .on_hover_text(format!("Series {}", s.series_uid))
                            .clicked()
                        {
                            actions.push(Action::PacsRetrieveSeries(i));
                        }
                        ui.end_row();
                    }
                });
        });
}
