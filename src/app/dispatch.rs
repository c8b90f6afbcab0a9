//! The one place that changes the [`AppState`]: user actions (commands and the parameterised
//! actions panels emit) and background job events are applied here, once per frame, on the UI
//! thread. Jobs are started here and call the library (`io`), never egui.
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use eframe::egui;

use crate::app::commands::Command;
use crate::app::jobs::{Job, JobStatus, each_file};
use crate::app::state::labels::{ImageKey, Label};
use crate::app::state::project::{self, ProjectFile};
use crate::app::state::viewer::SideTab;
use crate::app::state::viewer::{
    BRUSH_MAX, BRUSH_MIN, Display, Measurement, Tool, ZOOM_MAX, ZOOM_MIN, presets,
};
use crate::app::state::{AppState, LoadedFile, THUMBNAIL_SIDE, Thumbnail};
use crate::io::image::{ImageStack, Window};
use crate::io::study::scan_for_viewer;

mod model;
mod pacs;

pub use model::{labelled_images, score_queue};

/// Everything a user can do, as panels and shortcuts report it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A named command (menus, shortcuts, palette, buttons).
    Run(Command),
    /// Add files and folders to the study browser (dialogs, drag and drop, command line).
    Open(Vec<PathBuf>),
    /// Open a recent entry: a project file or files and folders.
    OpenRecent(PathBuf),
    /// Show one frame of one file.
    Show(ImageKey),
    /// A click on a file in the browser: replace the selection (and show it), toggle it in the
    /// selection (Ctrl), or extend the selection to it (Shift).
    Select {
        /// The file clicked.
        path: PathBuf,
        /// How the click changes the selection.
        mode: SelectMode,
    },
    /// Move through the current series by this many frames.
    Step(isize),
    /// Jump to this position of the current series (the slider).
    GoTo(usize),
    /// Set the window of the current series, in modality units.
    SetWindow {
        /// Window centre (level), in modality units.
        center: f64,
        /// Window width, in modality units (raised to 1 when smaller).
        width: f64,
    },
    /// Zoom (points per image pixel) and pan (points), leaving fit-to-window.
    SetView {
        /// Screen points per image pixel.
        zoom: f32,
        /// Offset of the image centre from the viewport centre, in points.
        pan: [f32; 2],
    },
    /// The viewer's size in points.
    Viewport([f32; 2]),
    /// One segment of a brush or eraser stroke, image pixel coordinates.
    Paint {
        /// Start of the segment, in image pixels.
        from: [f32; 2],
        /// End of the segment, in image pixels.
        to: [f32; 2],
    },
    /// The mouse button was released: the stroke becomes one undo step.
    EndStroke,
    /// Fill the inside of a closed outline, image pixel coordinates.
    FillOutline(Vec<[f32; 2]>),
    /// Record a length measurement, image pixel coordinates.
    Measure {
        /// One end of the measured segment, in image pixels.
        from: [f32; 2],
        /// The other end of the measured segment, in image pixels.
        to: [f32; 2],
    },
    /// Multiply the brush radius (Ctrl+wheel).
    ScaleBrush(f32),
    /// Save the project to this file, without a dialog.
    SaveProjectTo(PathBuf),
    /// Open this project file, without a dialog.
    OpenProject(PathBuf),
    /// Replace the current image's lesion mask by this mask image, without a dialog.
    ImportMaskFrom(PathBuf),
    /// Answer to the recovery offer at start: reopen the unsaved work of the last session.
    Recover,
    /// Answer to the recovery offer at start: delete the autosave, losing its unsaved work.
    DiscardRecovery,
    /// Show a tab of the right-hand panel.
    SetTab(crate::app::state::viewer::SideTab),
    /// Set the organ word of the prompts (the detector is rebuilt with it).
    SetOrgan(String),
    /// Set the fine-tuning schedule.
    SetSchedule(crate::workflow::Schedule),
    /// Change how results are shown (map, colours, thresholds, views, table order).
    SetResultsView(crate::app::state::model::ResultsView),
    /// Import the adapters of this file, without a dialog.
    ImportAdaptersFrom(PathBuf),
    /// Save the detector to this file, without a dialog.
    SaveDetectorTo(PathBuf),
    /// Open, change or close (`None`) the export window.
    SetExportDialog(Option<crate::app::state::model::ExportDialog>),
    /// Choose the export folder with a dialog.
    ChooseExportFolder,
    /// Start the export the window describes.
    StartExport,
    /// Use this PACS node.
    SetPacsNode(String),
    /// Change the PACS search criteria.
    SetPacsForm(crate::app::state::pacs::QueryForm),
    /// Search studies on the PACS node.
    PacsSearch,
    /// Retrieve the study at this row of the search results into the browser.
    PacsRetrieve(usize),
    /// List the series of the study at this row of the search results.
    PacsListSeries(usize),
    /// Retrieve the series at this row of the listed series into the browser.
    PacsRetrieveSeries(usize),
    /// Send the last export's Secondary Captures and score SRs to the PACS node.
    PacsSendResults,
}

/// How a click on a file in the browser changes the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectMode {
    /// Plain click: show the file, which replaces the selection.
    Replace,
    /// Ctrl+click: add the file to the selection, or remove it.
    Toggle,
    /// Shift+click: select every file from the first selected one to this one, in browser order.
    Extend,
}

/// How much one key press zooms.
const ZOOM_STEP: f32 = 1.25;
/// Frames skipped by Page Up / Page Down.
const PAGE: isize = 10;

fn repaint(ctx: &egui::Context) -> impl Fn() + Send + Sync + 'static {
    let ctx = ctx.clone();
    move || ctx.request_repaint()
}

/// Applies one action.
pub fn apply(state: &mut AppState, action: Action, ctx: &egui::Context) {
    if model::apply(state, &action, ctx) || pacs::apply(state, &action, ctx) {
        return;
    }
    match action {
        Action::SetTab(tab) => state.viewer.tab = tab,
        Action::SetOrgan(_)
        | Action::SetSchedule(_)
        | Action::SetResultsView(_)
        | Action::ImportAdaptersFrom(_)
        | Action::SaveDetectorTo(_)
        | Action::SetExportDialog(_)
        | Action::ChooseExportFolder
        | Action::StartExport => unreachable!("applied by dispatch::model"),
        Action::SetPacsNode(_)
        | Action::SetPacsForm(_)
        | Action::PacsSearch
        | Action::PacsRetrieve(_)
        | Action::PacsListSeries(_)
        | Action::PacsRetrieveSeries(_)
        | Action::PacsSendResults => unreachable!("applied by dispatch::pacs"),
        Action::Run(command) => run(state, command, ctx),
        Action::Open(paths) => open(state, paths, ctx),
        Action::OpenRecent(path) => {
            if path.extension().is_some_and(|e| e == "json") && path.is_file() {
                open_project(state, &path, false, ctx);
            } else {
                open(state, vec![path], ctx);
            }
        }
        Action::Show(key) => show(state, key, ctx),
        Action::Select { path, mode } => select(state, path, mode, ctx),
        Action::Step(n) => step(state, n, ctx),
        Action::GoTo(index) => {
            if let Some(key) = state.sequence().get(index).cloned() {
                show(state, key, ctx);
            }
        }
        Action::SetWindow { center, width } => {
            if let Some(mut display) = current_display(state) {
                display.window = Window {
                    center,
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
            state.viewer.pan = pan;
        }
        Action::Viewport(size) => state.viewer.viewport = size,
        Action::Paint { from, to } => {
            let erase = state.viewer.tool == Tool::Eraser;
            let radius = state.viewer.brush_radius;
            edit_mask(state, |labels, key, size| {
                labels.paint(key, size, from, to, radius, !erase)
            });
        }
        Action::EndStroke => state.labels.end_stroke(),
        Action::FillOutline(points) => {
            edit_mask(state, |labels, key, size| labels.fill(key, size, &points))
        }
        Action::Measure { from, to } => {
            if let Some(key) = state.viewer.current.clone() {
                state
                    .viewer
                    .measurements
                    .push(Measurement { key, from, to });
            }
        }
        Action::ScaleBrush(factor) => {
            state.viewer.brush_radius =
                (state.viewer.brush_radius * factor).clamp(BRUSH_MIN, BRUSH_MAX);
        }
        Action::SaveProjectTo(path) => save_project(state, &path, ctx),
        Action::OpenProject(path) => open_project(state, &path, false, ctx),
        Action::ImportMaskFrom(path) => import_mask(state, &path),
        Action::Recover => {
            if let Some(path) = state.project.recovery.take() {
                open_project(state, &path, true, ctx);
            }
        }
        Action::DiscardRecovery => {
            if let Some(path) = state.project.recovery.take() {
                let _ = std::fs::remove_file(path);
                state
                    .log
                    .push("Discarded the unsaved work of the last session".into());
            }
        }
    }
}

fn run(state: &mut AppState, command: Command, ctx: &egui::Context) {
    if model::run(state, command, ctx) {
        return;
    }
    match command {
        Command::ImportAdapters
        | Command::DownloadWeights
        | Command::SaveDetector
        | Command::StartTraining
        | Command::ToggleHeatmap
        | Command::ToggleSideBySide
        | Command::NextLayer
        | Command::PreviousLayer
        | Command::NextAnomalous
        | Command::PreviousAnomalous
        | Command::AcceptNormal
        | Command::AcceptAbnormal
        | Command::ExportImage
        | Command::ExportStudy => unreachable!("run by dispatch::model"),
        Command::OpenFiles => {
            if let Some(paths) = rfd::FileDialog::new()
                .set_title("Open images (DICOM, PNG, JPEG, TIFF, BMP, NIfTI) or a DICOMDIR")
                .pick_files()
            {
                open(state, paths, ctx);
            }
        }
        Command::OpenFolder => {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Open a folder of images")
                .pick_folder()
            {
                open(state, vec![path], ctx);
            }
        }
        Command::OpenProject => {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Open an MVFA Studio project")
                .add_filter("MVFA Studio project", &["json"])
                .pick_file()
            {
                open_project(state, &path, false, ctx);
            }
        }
        Command::SaveProject => match state.project.path.clone() {
            Some(path) => save_project(state, &path, ctx),
            None => run(state, Command::SaveProjectAs, ctx),
        },
        Command::SaveProjectAs => {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Save the project")
                .add_filter("MVFA Studio project", &["json"])
                .set_file_name("project.mvfa.json")
                .save_file()
            {
                save_project(state, &path, ctx);
            }
        }
        Command::ImportMask => {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Import a lesion mask image")
                .pick_file()
            {
                import_mask(state, &path);
            }
        }
        Command::OpenWeights => {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Choose CLIP ViT-L/14-336 weights (safetensors)")
                .add_filter("safetensors", &["safetensors"])
                .pick_file()
            {
                state.start_loading_weights(path, repaint(ctx));
            }
        }
        Command::CancelJob => {
            if let Some(job) = &state.weights_job {
                job.cancel();
            }
            if let Some(job) = &state.model.job {
                job.job.cancel();
                if job.kind == crate::app::state::model::ModelJobKind::Score {
                    state.model.scoring_paused = true;
                    state
                        .log
                        .push("Scoring paused until the detector changes".into());
                }
            }
            if let Some(job) = &state.download_job {
                job.cancel();
            }
            if let Some((_, job)) = &state.pacs.job {
                job.cancel();
            }
            cancel_file_jobs(state);
        }
        Command::ToggleForceCpu => {
            state.persisted.force_cpu = !state.persisted.force_cpu;
            state.log.push(format!(
                "Always use the CPU: {} (applies at the next start)",
                if state.persisted.force_cpu {
                    "on"
                } else {
                    "off"
                }
            ));
        }
        Command::Quit => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
        Command::Undo => {
            let msg = state
                .labels
                .undo()
                .unwrap_or_else(|| "Nothing to undo".into());
            state.log.push(msg);
        }
        Command::Redo => {
            let msg = state
                .labels
                .redo()
                .unwrap_or_else(|| "Nothing to redo".into());
            state.log.push(msg);
        }
        Command::MarkNormal => set_label(state, Some(Label::Normal)),
        Command::MarkAbnormal => set_label(state, Some(Label::Abnormal)),
        Command::ClearLabel => set_label(state, None),
        Command::NextFrame => step(state, 1, ctx),
        Command::PreviousFrame => step(state, -1, ctx),
        Command::PageForward => step(state, PAGE, ctx),
        Command::PageBack => step(state, -PAGE, ctx),
        Command::FirstFrame => step(state, isize::MIN / 2, ctx),
        Command::LastFrame => step(state, isize::MAX / 2, ctx),
        Command::ZoomIn => zoom_by(state, ZOOM_STEP),
        Command::ZoomOut => zoom_by(state, 1.0 / ZOOM_STEP),
        Command::ZoomFit => {
            state.viewer.fit = true;
            state.viewer.pan = [0.0, 0.0];
        }
        Command::ZoomActualSize => {
            state.viewer.fit = false;
            state.viewer.zoom = 1.0 / ctx.pixels_per_point();
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
            let current = state.viewer.current.clone();
            state
                .viewer
                .measurements
                .retain(|m| Some(&m.key) != current.as_ref());
        }
        Command::ToolNavigate => state.viewer.tool = Tool::Navigate,
        Command::ToolBrush => state.viewer.tool = Tool::Brush,
        Command::ToolEraser => state.viewer.tool = Tool::Eraser,
        Command::ToolFill => state.viewer.tool = Tool::Fill,
        Command::ToolMeasure => state.viewer.tool = Tool::Measure,
        Command::BrushLarger => apply(state, Action::ScaleBrush(ZOOM_STEP), ctx),
        Command::BrushSmaller => apply(state, Action::ScaleBrush(1.0 / ZOOM_STEP), ctx),
        Command::ToggleMetadata => state.viewer.show_metadata = !state.viewer.show_metadata,
        Command::TogglePacs => state.pacs.open = !state.pacs.open,
        Command::ShowImageTab => state.viewer.tab = SideTab::Image,
        Command::ShowModelTab => state.viewer.tab = SideTab::Model,
        Command::ShowResultsTab => state.viewer.tab = SideTab::Results,
        Command::ToggleHelp => state.viewer.show_help = !state.viewer.show_help,
        Command::CommandPalette => state.viewer.show_palette = !state.viewer.show_palette,
        Command::Preset1
        | Command::Preset2
        | Command::Preset3
        | Command::Preset4
        | Command::Preset5
        | Command::Preset6
        | Command::Preset7
        | Command::Preset8
        | Command::Preset9 => {
            let index = command.preset_index().unwrap_or(0);
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
    }
}

/// Asks the scan, loader and preview jobs to stop (they report when they have).
fn cancel_file_jobs(state: &AppState) {
    if let Some(job) = &state.scan_job {
        job.cancel();
    }
    if let Some(job) = &state.load_job {
        job.cancel();
    }
    if let Some(job) = &state.thumbnail_job {
        job.cancel();
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
    let Some(size) = current_size(state) else {
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

/// Width and height of the current frame, when loaded.
fn current_size(state: &AppState) -> Option<(u32, u32)> {
    let key = state.viewer.current.as_ref()?;
    let frame = state.images.get(&key.path)?.frames.get(key.frame)?;
    Some((frame.width, frame.height))
}

fn set_label(state: &mut AppState, label: Option<Label>) {
    let targets = state.label_targets();
    if targets.is_empty() {
        state.log.push("Open an image first".into());
        return;
    }
    if state.labels.set(&targets, label) {
        state.log.push(format!(
            "{} image(s) {}",
            targets.len(),
            label.map_or("unlabelled", Label::name)
        ));
    }
}

/// Runs a mask edit on the current image; a refusal (image not abnormal) goes to the status
/// bar once.
fn edit_mask(
    state: &mut AppState,
    edit: impl FnOnce(
        &mut crate::app::state::labels::Labels,
        &ImageKey,
        (u32, u32),
    ) -> Result<(), String>,
) {
    let (Some(key), Some(size)) = (state.viewer.current.clone(), current_size(state)) else {
        return;
    };
    if let Err(message) = edit(&mut state.labels, &key, size)
        && state.log.last() != Some(&message)
    {
        state.log.push(message);
    }
}

fn import_mask(state: &mut AppState, path: &Path) {
    let (Some(key), Some(size)) = (state.viewer.current.clone(), current_size(state)) else {
        state
            .log
            .push("Open an image before importing its mask".into());
        return;
    };
    let result = crate::io::mask::import_mask(path, size.0, size.1)
        .map_err(|e| e.to_string())
        .and_then(|(mask, note)| {
            state.labels.replace_mask(&key, mask)?;
            Ok(note)
        });
    match result {
        Ok(note) => state.log.push(match note {
            Some(note) => format!("Imported {}: {note}", path.display()),
            None => format!("Imported {}", path.display()),
        }),
        Err(e) => state.log.push(e),
    }
}

fn open(state: &mut AppState, paths: Vec<PathBuf>, ctx: &egui::Context) {
    // A project file among the paths (command line, drop) opens as the project.
    let (projects, paths): (Vec<PathBuf>, Vec<PathBuf>) = paths
        .into_iter()
        .partition(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"));
    if let Some(project) = projects.first() {
        open_project(state, project, false, ctx);
    }
    if paths.is_empty() {
        return;
    }
    for p in &paths {
        state.persisted.remember(p);
        if !state.browser.roots.contains(p) {
            state.browser.roots.push(p.clone());
        }
    }
    if let Some(job) = state.scan_job.take() {
        job.cancel();
    }
    // Rescan every root: a cancelled scan may have left earlier roots incomplete (the browser
    // ignores files it already holds).
    let roots = state.browser.roots.clone();
    state.scan_job = Some(Job::spawn("Reading files", repaint(ctx), move |job| {
        scan_for_viewer(&roots, &mut |item, progress| {
            if let Some(item) = item {
                job.emit(item);
            }
            let fraction =
                (progress.total > 0).then(|| progress.done as f32 / progress.total as f32);
            job.progress(
                fraction,
                format!("{} of {} files", progress.done, progress.total),
            );
            if job.is_cancelled() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if job.is_cancelled() {
            Err("cancelled".into())
        } else {
            Ok(())
        }
    }));
}

fn show(state: &mut AppState, key: ImageKey, ctx: &egui::Context) {
    let group_of = |state: &AppState, path: &Path| state.browser.locate(path).map(|(g, _)| g);
    let old_group = state
        .viewer
        .current
        .as_ref()
        .and_then(|k| group_of(state, &k.path));
    if old_group.is_none() || old_group != group_of(state, &key.path) {
        state.viewer.fit = true;
        state.viewer.pan = [0.0, 0.0];
    }
    state.labels.end_stroke();
    state.selection = vec![key.path.clone()];
    state.viewer.current = Some(key);
    ensure_loading(state, ctx);
}

fn select(state: &mut AppState, path: PathBuf, mode: SelectMode, ctx: &egui::Context) {
    match mode {
        SelectMode::Replace => show(state, ImageKey { path, frame: 0 }, ctx),
        SelectMode::Toggle => {
            if let Some(i) = state.selection.iter().position(|p| *p == path) {
                state.selection.remove(i);
            } else {
                state.selection.push(path);
            }
        }
        SelectMode::Extend => {
            let order: Vec<&PathBuf> = state
                .browser
                .groups
                .iter()
                .flat_map(|g| g.items.iter().map(|i| &i.path))
                .collect();
            let anchor = state.selection.first().cloned();
            let a = anchor.and_then(|a| order.iter().position(|p| **p == a));
            let b = order.iter().position(|p| **p == path);
            if let (Some(a), Some(b)) = (a, b) {
                let (lo, hi) = (a.min(b), a.max(b));
                let mut selection: Vec<PathBuf> =
                    order[lo..=hi].iter().map(|p| (*p).clone()).collect();
                // Keep the anchor first so that a further Shift+click extends from it.
                if a > b {
                    selection.reverse();
                }
                state.selection = selection;
            } else {
                state.selection = vec![path];
            }
        }
    }
}

fn step(state: &mut AppState, n: isize, ctx: &egui::Context) {
    let sequence = state.sequence();
    let Some(current) = &state.viewer.current else {
        return;
    };
    let Some(at) = sequence.iter().position(|k| k == current) else {
        return;
    };
    let to = (at as isize)
        .saturating_add(n)
        .clamp(0, sequence.len() as isize - 1) as usize;
    if to != at {
        let key = sequence[to].clone();
        state.labels.end_stroke();
        state.selection = vec![key.path.clone()];
        state.viewer.current = Some(key);
        ensure_loading(state, ctx);
    }
}

/// Starts the loader when the current file is not decoded yet: the current file first, then
/// the rest of its series outward from it, so that scrolling finds its neighbours ready.
fn ensure_loading(state: &mut AppState, ctx: &egui::Context) {
    let Some(current) = state.viewer.current.as_ref().map(|k| k.path.clone()) else {
        return;
    };
    let unreadable =
        |state: &AppState, p: &Path| state.browser.unreadable.iter().any(|(u, _)| u == p);
    if state.images.contains_key(&current)
        || unreadable(state, &current)
        || (state.load_job.is_some() && state.load_queue.contains(&current))
    {
        return;
    }
    let mut queue = vec![current.clone()];
    if let Some((g, i)) = state.browser.locate(&current) {
        let items = &state.browser.groups[g].items;
        for d in 1..items.len() {
            for j in [i.checked_add(d), i.checked_sub(d)].into_iter().flatten() {
                if let Some(item) = items.get(j) {
                    queue.push(item.path.clone());
                }
            }
        }
    }
    queue.retain(|p| !state.images.contains_key(p) && !unreadable(state, p));
    if let Some(job) = state.load_job.take() {
        job.cancel();
    }
    state.load_queue.clone_from(&queue);
    state.load_job = Some(each_file("Loading images", repaint(ctx), queue, |path| {
        let stack = crate::io::input::load_stack(path).map_err(|e| e.message)?;
        if stack.frames.is_empty() {
            return Err("the file holds no image frames".to_string());
        }
        let hash = crate::weights::adapters::file_sha256_hex(path)
            .map_err(|e| format!("cannot read the file: {e}"))?;
        Ok((Arc::new(stack), hash))
    }));
}

/// Applies what the background jobs reported since the last frame, and autosaves; call once
/// per frame before drawing.
pub fn poll(state: &mut AppState, ctx: &egui::Context) {
    state.poll_jobs();
    model::poll(state, ctx);
    pacs::poll(state, ctx);
    if let Some(job) = state.scan_job.as_mut() {
        let status = job.poll();
        let items = job.take_items();
        state.browser.add(items);
        if state.viewer.current.is_none()
            && let Some(item) = state.browser.groups.first().and_then(|g| g.items.first())
        {
            let key = ImageKey {
                path: item.path.clone(),
                frame: 0,
            };
            show(state, key, ctx);
        }
        let done = match status {
            JobStatus::Running { .. } => None,
            JobStatus::Succeeded(()) => Some(format!(
                "{} files in the browser, {} unreadable",
                state.browser.len(),
                state.browser.unreadable.len()
            )),
            JobStatus::Cancelled => Some("Reading files was cancelled".into()),
            JobStatus::Failed(e) => Some(e),
        };
        if let Some(message) = done {
            state.log.push(message);
            state.scan_job = None;
            // Files found after the viewer asked for its series are loaded now.
            ensure_loading(state, ctx);
        }
    }
    if let Some(job) = state.load_job.as_mut() {
        let status = job.poll();
        let items: Vec<LoadedFile> = job.take_items();
        for (path, result) in items {
            match result {
                Ok((stack, hash)) => {
                    state.browser.set_frames(&path, stack.frames.len());
                    state.project.hashes.insert(path.clone(), hash);
                    state.images.insert(path, stack);
                }
                Err(reason) => {
                    state.log.push(format!("{}: {reason}", path.display()));
                    state.browser.add_unreadable(path, reason);
                }
            }
        }
        let over_budget = keep_within_budget(state);
        if over_budget || !matches!(status, JobStatus::Running { .. }) {
            if let JobStatus::Failed(e) = status {
                state.log.push(e);
            }
            if let Some(job) = state.load_job.take() {
                job.cancel();
            }
            state.load_queue.clear();
            ensure_loading(state, ctx);
        }
    }
    poll_thumbnails(state, ctx);
    // A frame index beyond what the loaded file holds (a NIfTI volume counted as one frame
    // before loading, a project from another version of the file) falls back to the last one.
    if let Some(key) = state.viewer.current.clone()
        && let Some(stack) = state.images.get(&key.path)
        && key.frame >= stack.frames.len()
    {
        state.viewer.current = Some(ImageKey {
            frame: stack.frames.len() - 1,
            ..key
        });
    }
    autosave(state, false);
}

/// Drops decoded files, farthest from the current image first (other series before its own
/// neighbours), until they fit in the image budget; says whether the budget was exceeded, in
/// which case the loader should stop.
fn keep_within_budget(state: &mut AppState) -> bool {
    let bytes = |s: &ImageStack| s.frames.iter().map(|f| f.data.len() * 4).sum::<usize>();
    let mut total: usize = state.images.values().map(|s| bytes(s)).sum();
    if total <= state.image_budget {
        return false;
    }
    let current = state.viewer.current.as_ref().map(|k| k.path.clone());
    let here = current.as_deref().and_then(|c| state.browser.locate(c));
    let mut others: Vec<(usize, PathBuf)> = state
        .images
        .keys()
        .filter(|p| Some(*p) != current.as_ref())
        .map(|p| {
            let distance = match (here, state.browser.locate(p)) {
                (Some((g, i)), Some((h, j))) if g == h => i.abs_diff(j),
                _ => usize::MAX,
            };
            (distance, p.clone())
        })
        .collect();
    others.sort_by_key(|o| std::cmp::Reverse(o.0));
    for (_, path) in others {
        if total <= state.image_budget {
            break;
        }
        if let Some(stack) = state.images.remove(&path) {
            total -= bytes(&stack);
        }
    }
    true
}

/// Collects the previews made so far and, once no scan runs, starts making the missing ones
/// (in browser order). A file that cannot be read is listed as unreadable right away.
fn poll_thumbnails(state: &mut AppState, ctx: &egui::Context) {
    if let Some(job) = state.thumbnail_job.as_mut() {
        let status = job.poll();
        let items: Vec<Thumbnail> = job.take_items();
        for (path, result) in items {
            match result {
                Ok(image) => {
                    state.thumbnails.insert(path, image);
                }
                Err(reason) => state.browser.add_unreadable(path, reason),
            }
        }
        if !matches!(status, JobStatus::Running { .. }) {
            state.thumbnail_job = None;
        }
        return;
    }
    if state.scan_job.is_some() {
        return;
    }
    let missing: Vec<PathBuf> = state
        .browser
        .groups
        .iter()
        .flat_map(|g| &g.items)
        .map(|i| i.path.clone())
        .filter(|p| !state.thumbnails_tried.contains(p))
        .collect();
    if missing.is_empty() {
        return;
    }
    state.thumbnails_tried.extend(missing.iter().cloned());
    state.thumbnail_job = Some(each_file(
        "Making previews",
        repaint(ctx),
        missing,
        |path| {
            crate::io::input::thumbnail(path, THUMBNAIL_SIDE)
                .map(Arc::new)
                .map_err(|e| e.message)
        },
    ));
}

/// Writes unsaved work to the autosave file when it is due (or now, with `force`, at exit),
/// and removes the autosave once everything is saved.
pub fn autosave(state: &mut AppState, force: bool) {
    let Some(path) = state.project.autosave_path.clone() else {
        return;
    };
    if state.project.recovery.is_some() {
        // Never overwrite work the user has not decided to recover or discard yet.
        return;
    }
    if !state.unsaved() {
        if state.project.autosaved_revision != state.labels.revision && path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        state.project.autosaved_revision = state.labels.revision;
        return;
    }
    let due = state.project.last_autosave.elapsed() >= state.project.autosave_every;
    if state.project.autosaved_revision == state.labels.revision || !(due || force) {
        return;
    }
    let result = snapshot(state, None).and_then(|file| project::write(&path, &file));
    state.project.last_autosave = Instant::now();
    match result {
        Ok(()) => state.project.autosaved_revision = state.labels.revision,
        Err(e) => state.log.push(format!("Autosave failed: {e}")),
    }
}

/// The project file of the current session.
/// The project file of the current session; `sidecars` (detector, results) are where a save
/// writes the model's files (`None` for the autosave, which refers only to saved ones).
fn snapshot(
    state: &mut AppState,
    sidecars: Option<&(PathBuf, PathBuf)>,
) -> Result<ProjectFile, String> {
    let mut paths: Vec<PathBuf> = state
        .labels
        .labels()
        .map(|(k, _)| k.path.clone())
        .chain(state.labels.masks().map(|(k, _)| k.path.clone()))
        .collect();
    paths.sort();
    paths.dedup();
    let files = paths
        .into_iter()
        .map(|path| {
            let sha256 = state.project.hash(&path)?;
            Ok(project::FileEntry { path, sha256 })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let labels = state
        .labels
        .labels()
        .map(|(k, &label)| project::LabelEntry {
            path: k.path.clone(),
            frame: k.frame,
            label,
        })
        .collect();
    let masks = state
        .labels
        .masks()
        .map(|(k, m)| project::encode_mask(k, m))
        .collect::<Result<Vec<_>, String>>()?;
    let v = &state.viewer;
    Ok(ProjectFile {
        project_path: state.project.path.clone(),
        sources: state.browser.roots.clone(),
        files,
        labels,
        masks,
        display: v
            .display
            .iter()
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect(),
        view: v.view_entry(),
        measurements: v.measurements.clone(),
        set_aside: state.project.set_aside.clone(),
        model: model::project_entry(state, sidecars),
        ..Default::default()
    })
}

fn save_project(state: &mut AppState, path: &Path, ctx: &egui::Context) {
    state.labels.end_stroke();
    let previous = state.project.path.replace(path.to_path_buf());
    let sidecars = project::sidecars(path);
    match snapshot(state, Some(&sidecars)).and_then(|file| project::write(path, &file)) {
        Ok(()) => {
            model::save_sidecars(state, &sidecars, ctx);
            state.project.saved_revision = state.labels.revision;
            state.persisted.remember(path);
            state.log.push(format!("Saved {}", path.display()));
            autosave(state, false);
        }
        Err(e) => {
            state.project.path = previous;
            state.log.push(format!("Could not save: {e}"));
        }
    }
}

/// Opens a project file (or, with `recovered`, an autosave: its work counts as unsaved and
/// saves go to the project it came from).
fn open_project(state: &mut AppState, path: &Path, recovered: bool, ctx: &egui::Context) {
    let file = match project::read(path) {
        Ok(f) => f,
        Err(e) => {
            state.log.push(e);
            return;
        }
    };
    let verified = project::verify(&file, &mut state.project);
    // What the old jobs still hand over belongs to the previous session: drop them.
    cancel_file_jobs(state);
    state.scan_job = None;
    state.load_job = None;
    state.thumbnail_job = None;
    state.browser.clear();
    state.images.clear();
    state.thumbnails.clear();
    state.thumbnails_tried.clear();
    state.selection.clear();
    state.labels.restore(verified.labels, verified.masks);
    state.project.set_aside = verified.set_aside;
    state.project.path = if recovered {
        file.project_path.clone()
    } else {
        Some(path.to_path_buf())
    };
    state.project.saved_revision = if recovered { 0 } else { state.labels.revision };
    let v = &mut state.viewer;
    v.display = file.display.into_iter().collect();
    v.measurements = file.measurements;
    v.fit = file.view.fit;
    v.zoom = file.view.zoom;
    v.pan = file.view.pan;
    v.tool = file.view.tool;
    v.brush_radius = file.view.brush_radius;
    v.current = file.view.current.clone();
    if !recovered {
        state.persisted.remember(path);
    }
    model::restore(state, file.model.as_ref(), ctx);
    state.log.extend(verified.problems);
    let aside = state.project.set_aside.len();
    state.log.push(if aside > 0 {
        format!(
            "Opened {}; {aside} file(s) moved or changed: their labels are set aside (Labels panel)",
            path.display()
        )
    } else {
        format!("Opened {}", path.display())
    });
    open(state, file.sources, ctx);
    let fit = state.viewer.fit;
    ensure_loading(state, ctx);
    state.viewer.fit = fit;
}

/// What to do when the window closes: keep unsaved work in the autosave for recovery.
pub fn on_exit(state: &mut AppState) {
    model::finish_results_save(state);
    autosave(state, true);
}
