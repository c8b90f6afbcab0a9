//! What a user can do, as panels, shortcuts and dialogs report it: plain data that
//! [`dispatch`](super::dispatch) applies once per frame.
use std::path::PathBuf;

use crate::app::commands::Command;
use crate::app::state::labels::ImageKey;

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
    /// Load the CLIP weights of this file, without a dialog.
    LoadWeightsFrom(PathBuf),
    /// Import the adapters of this file, without a dialog.
    ImportAdaptersFrom(PathBuf),
    /// Save the detector to this file, without a dialog.
    SaveDetectorTo(PathBuf),
    /// Open, change or close (`None`) the export window.
    SetExportDialog(Option<crate::app::state::model::ExportDialog>),
    /// Choose the export folder with a dialog.
    ChooseExportFolder,
    /// Export to this folder (the answer of the folder dialog).
    SetExportFolder(PathBuf),
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
