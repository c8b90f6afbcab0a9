//! The export window: which images, which files, where, and the de-identification of DICOM
//! exports, with the plain-words list of what will be written and what leaves the machine,
//! shown before anything is written.
use eframe::egui::{self, RichText};

use crate::app::action::Action;
use crate::app::state::AppState;
use crate::app::state::model::{ExportDialog, ExportScope};
use crate::io::export::dicom_sc::Dates;
use crate::workflow::{DicomExport, MapLayer, RawFormat, describe_options};

/// Draws the export window when it is open.
pub fn show_window(ctx: &egui::Context, state: &AppState, actions: &mut Vec<Action>) {
    let Some(dialog) = &state.model.export else {
        return;
    };
    let mut edited: ExportDialog = dialog.clone();
    let mut open = true;
    egui::Window::new("Export results")
        .open(&mut open)
        .collapsible(false)
        .default_width(460.0)
        .show(ctx, |ui| {
            form(ui, state, &mut edited, actions);
        });
    if !open {
        actions.push(Action::SetExportDialog(None));
    } else if &edited != dialog {
        actions.push(Action::SetExportDialog(Some(edited)));
    }
}

fn form(ui: &mut egui::Ui, state: &AppState, d: &mut ExportDialog, actions: &mut Vec<Action>) {
    let scored = state.model.results.len();
    ui.horizontal(|ui| {
        ui.radio_value(&mut d.scope, ExportScope::Current, "Current image");
        ui.radio_value(
            &mut d.scope,
            ExportScope::All,
            format!("All {scored} scored images"),
        );
    });
    ui.horizontal(|ui| {
        let folder = d
            .folder
            .as_ref()
            .map_or("no folder chosen".to_string(), |f| f.display().to_string());
        ui.label(format!("Folder: {folder}"));
        if ui.button("Choose folder…").clicked() {
            actions.push(Action::ChooseExportFolder);
        }
    });
    ui.separator();
    let o = &mut d.options;
    ui.checkbox(&mut o.overlay, "Overlay PNG with legend");
    ui.checkbox(
        &mut o.heatmap_png,
        "Heatmap PNG (16-bit, scale in its metadata)",
    );
    let mut raw = o.raw.is_some();
    ui.horizontal(|ui| {
        ui.checkbox(&mut raw, "Raw float maps (every level and branch)");
        if raw {
            let mut format = o.raw.unwrap_or(RawFormat::Safetensors);
            ui.radio_value(&mut format, RawFormat::Safetensors, "safetensors");
            ui.radio_value(&mut format, RawFormat::Npy, "npy");
            o.raw = Some(format);
        } else {
            o.raw = None;
        }
    });
    let mut dicom = o.dicom.is_some();
    ui.checkbox(
        &mut dicom,
        "DICOM results: Parametric Map, Segmentation and measurement report",
    );
    if dicom {
        let sc = o.dicom.get_or_insert_with(DicomExport::default);
        ui.indent("dicom options", |ui| {
            ui.checkbox(
                &mut sc.secondary_capture,
                "Also burn the overlay into a Secondary Capture (old viewers)",
            );
            let has = |l: &MapLayer| matches!(l, MapLayer::Branch(_));
            let mut branches = sc.extra_maps.iter().any(has);
            let mut levels = sc
                .extra_maps
                .iter()
                .any(|l| matches!(l, MapLayer::Level(..)));
            ui.checkbox(&mut branches, "Also Parametric Maps of each branch");
            ui.checkbox(&mut levels, "Also Parametric Maps of each level");
            sc.extra_maps = MapLayer::all(crate::workflow::MAX_LEVELS)
                .into_iter()
                .filter(|l| match l {
                    MapLayer::Branch(_) => branches,
                    MapLayer::Level(..) => levels,
                    MapLayer::Fused => false,
                })
                .collect();
            ui.checkbox(
                &mut sc.identified,
                "Keep the patient's identity (for your own PACS only)",
            );
            if !sc.identified {
                ui.horizontal(|ui| {
                    ui.label("Dates:");
                    ui.radio_value(&mut sc.dates, Dates::Remove, "remove");
                    ui.radio_value(&mut sc.dates, Dates::Shift, "shift");
                    ui.radio_value(&mut sc.dates, Dates::Keep, "keep");
                });
                ui.checkbox(
                    &mut sc.retain_patient_characteristics,
                    "Keep patient sex and age",
                );
                ui.checkbox(
                    &mut sc.retain_device_identity,
                    "Keep station name and device serial number",
                );
            }
        });
    } else {
        o.dicom = None;
    }
    ui.separator();
    ui.label(RichText::new("What will be written, and what leaves this machine").strong());
    egui::ScrollArea::vertical()
        .max_height(200.0)
        .show(ui, |ui| {
            for line in describe_options(o) {
                ui.label(format!("• {line}"));
            }
        });
    ui.separator();
    ui.horizontal(|ui| {
        let ready = d.folder.is_some() && (o.overlay || o.heatmap_png || o.raw.is_some());
        if ui
            .add_enabled(ready, egui::Button::new("Export"))
            .on_disabled_hover_text("Choose a folder and at least one kind of file")
            .clicked()
        {
            actions.push(Action::StartExport);
        }
        if ui.button("Cancel").clicked() {
            actions.push(Action::SetExportDialog(None));
        }
    });
}
