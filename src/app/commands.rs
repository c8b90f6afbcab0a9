//! User commands: every action a person can take by name. Menus, the help panel (F1), the
//! command palette (Ctrl+K) and the keyboard shortcuts all iterate [`Command::ALL`], so that an
//! action has one label, one tooltip, one shortcut and one implementation (in
//! [`dispatch`](super::dispatch)).
use eframe::egui::{Key, KeyboardShortcut, Modifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
/// An action the user can run from a menu, the command palette or its keyboard shortcut.
pub enum Command {
    /// Add image files (DICOM, PNG, JPEG, TIFF, BMP, NIfTI) or a DICOMDIR to the study browser.
    OpenFiles,
    /// Add every image under a folder (recursively) to the study browser; large folders are read in the background.
    OpenFolder,
    /// Open a project file: its studies, labels, masks and view.
    OpenProject,
    /// Save labels, masks, display settings and view to the project file.
    SaveProject,
    /// Save the project to a new file.
    SaveProjectAs,
    /// Replace the current image's lesion mask by a mask image (non-zero = lesion).
    ImportMask,
    /// Choose a CLIP ViT-L/14-336 safetensors file and load it in the background.
    OpenWeights,
    /// Download the public CLIP ViT-L/14-336 weights from the Hugging Face hub (SHA-256 checked) and load them.
    DownloadWeights,
    /// Search studies on a PACS node, retrieve them into the browser, send results back.
    TogglePacs,
    /// Stop the running background jobs (folder scan, file loading, weights loading).
    CancelJob,
    /// Toggle skipping the GPU even when one is available (applies at the next start).
    ToggleForceCpu,
    /// Close the application (unsaved work stays in the autosave).
    Quit,
    /// Undo the last label change or mask edit.
    Undo,
    /// Redo what was undone.
    Redo,
    /// Label the current image, or the images selected in the browser, as a normal shot.
    MarkNormal,
    /// Label the current image, or the images selected in the browser, as an abnormal shot.
    MarkAbnormal,
    /// Remove the label (and mask) of the current or selected images.
    ClearLabel,
    /// Go to the next frame or slice of the current series or folder.
    NextFrame,
    /// Go to the previous frame or slice of the current series or folder.
    PreviousFrame,
    /// Skip 10 frames forward.
    PageForward,
    /// Skip 10 frames back.
    PageBack,
    /// Go to the first frame of the current series or folder.
    FirstFrame,
    /// Go to the last frame of the current series or folder.
    LastFrame,
    /// Magnify the image.
    ZoomIn,
    /// Shrink the image.
    ZoomOut,
    /// Fit the whole image in the viewer.
    ZoomFit,
    /// Zoom to one image pixel per screen pixel.
    ZoomActualSize,
    /// Toggle showing the grey levels inverted.
    Invert,
    /// Go back to the file's default window (centre/width).
    ResetWindow,
    /// Apply window preset 1 (listed in the right panel).
    Preset1,
    /// Apply window preset 2 (listed in the right panel).
    Preset2,
    /// Apply window preset 3 (listed in the right panel).
    Preset3,
    /// Apply window preset 4 (listed in the right panel).
    Preset4,
    /// Apply window preset 5 (listed in the right panel).
    Preset5,
    /// Apply window preset 6 (listed in the right panel).
    Preset6,
    /// Apply window preset 7 (listed in the right panel).
    Preset7,
    /// Apply window preset 8 (listed in the right panel).
    Preset8,
    /// Apply window preset 9 (listed in the right panel).
    Preset9,
    /// Select the pan tool: left drag pans the image.
    ToolNavigate,
    /// Select the mask brush: left drag paints the lesion mask of an abnormal image.
    ToolBrush,
    /// Select the mask eraser: left drag erases the lesion mask.
    ToolEraser,
    /// Select the fill tool: draw a closed outline with the left button; its inside becomes lesion.
    ToolFill,
    /// Select the measuring tool: left drag measures a length (mm where the file gives the pixel spacing).
    ToolMeasure,
    /// Make the brush larger.
    BrushLarger,
    /// Make the brush smaller.
    BrushSmaller,
    /// Remove the length measurements of the current image.
    ClearMeasurements,
    /// Use the adapters of an MVFA Studio checkpoint or a reference MVFA .pth file (with its memory bank and calibration when it stores them)
    ImportAdapters,
    /// Write the current adapters, memory bank and calibration to a checkpoint file
    SaveDetector,
    /// Fine-tune the adapters on the labelled images in the background (the schedule is chosen in the Model tab)
    StartTraining,
    /// Show or hide the anomaly heatmap over the image
    ToggleHeatmap,
    /// Show the image and its heatmap side by side, zoom and pan linked
    ToggleSideBySide,
    /// Show the next map: fused, zero-shot, few-shot, then each level of each branch
    NextLayer,
    /// Show the previous map (fused, branches, levels)
    PreviousLayer,
    /// Go to the next image in order of decreasing anomaly score
    NextAnomalous,
    /// Go back to the previous image in order of decreasing anomaly score
    PreviousAnomalous,
    /// Label the current image normal: the memory bank and the scores update at once
    AcceptNormal,
    /// Label the current image abnormal with the region above the contour level as its starting mask (edit it with the brush)
    AcceptAbnormal,
    /// Write the overlay PNG with legend, heatmap, raw maps, CSV and optionally a DICOM Secondary Capture of the current image
    ExportImage,
    /// Write the outputs of every scored image as one background job
    ExportStudy,
    /// Show the labels, window and tools of the current image in the right panel
    ShowImageTab,
    /// Show the weights, organ word, detector and fine-tuning in the right panel
    ShowModelTab,
    /// Show the heatmap settings, score histogram and score table in the right panel
    ShowResultsTab,
    /// Show or hide the searchable metadata of the current image.
    ToggleMetadata,
    /// Show or hide the help panel listing every command with its shortcut.
    ToggleHelp,
    /// Open the command palette to find and run a command by name.
    CommandPalette,
}

/// The menu a command is listed under (and the heading of its group in the help panel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Menu {
    /// The File menu: files, projects, weights, jobs and quitting.
    File,
    /// The Edit menu: undo and redo.
    Edit,
    /// The View menu: frame navigation, zoom, windowing and metadata.
    View,
    /// The Label menu: normal/abnormal labels.
    Label,
    /// The Tools menu: pointer tools, brush size and measurements.
    Tools,
    /// The Model menu: adapters, checkpoints and fine-tuning.
    Model,
    /// The Results menu: heatmaps, ranking, corrections and export.
    Results,
    /// The Settings menu: preferences such as always using the CPU.
    Settings,
    /// The Help menu: help panel and command palette.
    Help,
}

impl Menu {
    /// Every menu, in menu-bar order.
    pub const ALL: [Menu; 9] = [
        Menu::File,
        Menu::Edit,
        Menu::View,
        Menu::Label,
        Menu::Tools,
        Menu::Model,
        Menu::Results,
        Menu::Settings,
        Menu::Help,
    ];

    /// The menu's title in the menu bar.
    pub fn title(self) -> &'static str {
        match self {
            Menu::File => "File",
            Menu::Edit => "Edit",
            Menu::View => "View",
            Menu::Label => "Label",
            Menu::Tools => "Tools",
            Menu::Model => "Model",
            Menu::Results => "Results",
            Menu::Settings => "Settings",
            Menu::Help => "Help",
        }
    }
}

const fn key(key: Key) -> Option<KeyboardShortcut> {
    Some(KeyboardShortcut::new(Modifiers::NONE, key))
}

const fn cmd(key: Key) -> Option<KeyboardShortcut> {
    Some(KeyboardShortcut::new(Modifiers::COMMAND, key))
}

const fn shift(key: Key) -> Option<KeyboardShortcut> {
    Some(KeyboardShortcut::new(Modifiers::SHIFT, key))
}

const fn cmd_shift(key: Key) -> Option<KeyboardShortcut> {
    Some(KeyboardShortcut::new(
        Modifiers::COMMAND.plus(Modifiers::SHIFT),
        key,
    ))
}

impl Command {
    /// Every command, in the order menus, the help panel and the palette list them.
    pub const ALL: [Command; 65] = [
        Command::OpenFiles,
        Command::OpenFolder,
        Command::OpenProject,
        Command::SaveProject,
        Command::SaveProjectAs,
        Command::ImportMask,
        Command::OpenWeights,
        Command::DownloadWeights,
        Command::TogglePacs,
        Command::CancelJob,
        Command::Quit,
        Command::Undo,
        Command::Redo,
        Command::MarkNormal,
        Command::MarkAbnormal,
        Command::ClearLabel,
        Command::NextFrame,
        Command::PreviousFrame,
        Command::PageForward,
        Command::PageBack,
        Command::FirstFrame,
        Command::LastFrame,
        Command::ZoomIn,
        Command::ZoomOut,
        Command::ZoomFit,
        Command::ZoomActualSize,
        Command::Invert,
        Command::ResetWindow,
        Command::Preset1,
        Command::Preset2,
        Command::Preset3,
        Command::Preset4,
        Command::Preset5,
        Command::Preset6,
        Command::Preset7,
        Command::Preset8,
        Command::Preset9,
        Command::ToggleMetadata,
        Command::ShowImageTab,
        Command::ShowModelTab,
        Command::ShowResultsTab,
        Command::ImportAdapters,
        Command::SaveDetector,
        Command::StartTraining,
        Command::ToggleHeatmap,
        Command::ToggleSideBySide,
        Command::NextLayer,
        Command::PreviousLayer,
        Command::NextAnomalous,
        Command::PreviousAnomalous,
        Command::AcceptNormal,
        Command::AcceptAbnormal,
        Command::ExportImage,
        Command::ExportStudy,
        Command::ToolNavigate,
        Command::ToolBrush,
        Command::ToolEraser,
        Command::ToolFill,
        Command::ToolMeasure,
        Command::BrushLarger,
        Command::BrushSmaller,
        Command::ClearMeasurements,
        Command::ToggleForceCpu,
        Command::ToggleHelp,
        Command::CommandPalette,
    ];

    /// The short name shown in menus, the help panel and the command palette.
    pub fn label(self) -> &'static str {
        match self {
            Command::OpenFiles => "Open files…",
            Command::OpenFolder => "Open folder…",
            Command::OpenProject => "Open project…",
            Command::SaveProject => "Save project",
            Command::SaveProjectAs => "Save project as…",
            Command::ImportMask => "Import mask image…",
            Command::OpenWeights => "Open CLIP weights…",
            Command::DownloadWeights => "Download CLIP weights…",
            Command::TogglePacs => "PACS…",
            Command::CancelJob => "Cancel job",
            Command::ToggleForceCpu => "Always use the CPU",
            Command::Quit => "Quit",
            Command::Undo => "Undo",
            Command::Redo => "Redo",
            Command::MarkNormal => "Mark normal",
            Command::MarkAbnormal => "Mark abnormal",
            Command::ClearLabel => "Clear label",
            Command::NextFrame => "Next frame",
            Command::PreviousFrame => "Previous frame",
            Command::PageForward => "Forward 10 frames",
            Command::PageBack => "Back 10 frames",
            Command::FirstFrame => "First frame",
            Command::LastFrame => "Last frame",
            Command::ZoomIn => "Zoom in",
            Command::ZoomOut => "Zoom out",
            Command::ZoomFit => "Fit to window",
            Command::ZoomActualSize => "Actual size (1:1)",
            Command::Invert => "Invert grey levels",
            Command::ResetWindow => "Reset window",
            Command::Preset1 => "Window preset 1",
            Command::Preset2 => "Window preset 2",
            Command::Preset3 => "Window preset 3",
            Command::Preset4 => "Window preset 4",
            Command::Preset5 => "Window preset 5",
            Command::Preset6 => "Window preset 6",
            Command::Preset7 => "Window preset 7",
            Command::Preset8 => "Window preset 8",
            Command::Preset9 => "Window preset 9",
            Command::ToolNavigate => "Pan tool",
            Command::ToolBrush => "Mask brush",
            Command::ToolEraser => "Mask eraser",
            Command::ToolFill => "Fill outline",
            Command::ToolMeasure => "Measure length",
            Command::BrushLarger => "Larger brush",
            Command::BrushSmaller => "Smaller brush",
            Command::ClearMeasurements => "Clear measurements",
            Command::ToggleMetadata => "Metadata",
            Command::ShowImageTab => "Image tab",
            Command::ShowModelTab => "Model tab",
            Command::ShowResultsTab => "Results tab",

            Command::ImportAdapters => "Import adapters…",
            Command::SaveDetector => "Save detector…",
            Command::StartTraining => "Fine-tune",
            Command::ToggleHeatmap => "Show heatmap",
            Command::ToggleSideBySide => "Side by side",
            Command::NextLayer => "Next map",
            Command::PreviousLayer => "Previous map",
            Command::NextAnomalous => "Next most anomalous",
            Command::PreviousAnomalous => "Previous most anomalous",
            Command::AcceptNormal => "Accept as normal",
            Command::AcceptAbnormal => "Accept as abnormal",
            Command::ExportImage => "Export current image…",
            Command::ExportStudy => "Export all results…",

            Command::ToggleHelp => "Help: commands and shortcuts",
            Command::CommandPalette => "Command palette…",
        }
    }

    /// One sentence on what the command does, shown on hover and in the help panel.
    pub fn tooltip(self) -> &'static str {
        match self {
            Command::OpenFiles => {
                "Add image files (DICOM, PNG, JPEG, TIFF, BMP, NIfTI) or a DICOMDIR to the study browser"
            }
            Command::OpenFolder => {
                "Add every image under a folder (recursively) to the study browser; large folders are read in the background"
            }
            Command::OpenProject => "Open a project file: its studies, labels, masks and view",
            Command::SaveProject => {
                "Save labels, masks, display settings and view to the project file"
            }
            Command::SaveProjectAs => "Save the project to a new file",
            Command::ImportMask => {
                "Replace the current image's lesion mask by a mask image (non-zero = lesion)"
            }
            Command::OpenWeights => {
                "Choose a CLIP ViT-L/14-336 safetensors file and load it in the background"
            }
            Command::DownloadWeights => {
                "Download the public CLIP ViT-L/14-336 weights from the Hugging Face hub (SHA-256 checked) and load them"
            }
            Command::TogglePacs => {
                "Search studies on a PACS node, retrieve them into the browser, send results back"
            }
            Command::CancelJob => {
                "Stop the running background jobs (scan, loading, fine-tuning, scoring, export)"
            }
            Command::ToggleForceCpu => {
                "Skip the GPU even when one is available (applies at the next start)"
            }
            Command::Quit => "Close the application (unsaved work stays in the autosave)",
            Command::Undo => "Undo the last label change or mask edit",
            Command::Redo => "Redo what was undone",
            Command::MarkNormal => {
                "Label the current image, or the images selected in the browser, as a normal shot"
            }
            Command::MarkAbnormal => {
                "Label the current image, or the images selected in the browser, as an abnormal shot"
            }
            Command::ClearLabel => "Remove the label (and mask) of the current or selected images",
            Command::NextFrame => "Next frame or slice of the series (also Shift+wheel)",
            Command::PreviousFrame => "Previous frame or slice of the series (also Shift+wheel)",
            Command::PageForward => "Skip 10 frames forward",
            Command::PageBack => "Skip 10 frames back",
            Command::FirstFrame => "Go to the first frame of the series",
            Command::LastFrame => "Go to the last frame of the series",
            Command::ZoomIn => "Magnify the image (also the mouse wheel)",
            Command::ZoomOut => "Shrink the image (also the mouse wheel)",
            Command::ZoomFit => "Fit the whole image in the viewer",
            Command::ZoomActualSize => "One image pixel per screen pixel",
            Command::Invert => "Show the grey levels inverted",
            Command::ResetWindow => "Back to the file's default window",
            Command::Preset1 => "Apply window preset 1 (listed in the right panel)",
            Command::Preset2 => "Apply window preset 2 (listed in the right panel)",
            Command::Preset3 => "Apply window preset 3 (listed in the right panel)",
            Command::Preset4 => "Apply window preset 4 (listed in the right panel)",
            Command::Preset5 => "Apply window preset 5 (listed in the right panel)",
            Command::Preset6 => "Apply window preset 6 (listed in the right panel)",
            Command::Preset7 => "Apply window preset 7 (listed in the right panel)",
            Command::Preset8 => "Apply window preset 8 (listed in the right panel)",
            Command::Preset9 => "Apply window preset 9 (listed in the right panel)",
            Command::ToolNavigate => "Left drag pans the image (right drag always sets the window)",
            Command::ToolBrush => {
                "Left drag paints the lesion mask of an abnormal image; Ctrl+wheel sizes the brush"
            }
            Command::ToolEraser => "Left drag erases the lesion mask; Ctrl+wheel sizes the brush",
            Command::ToolFill => {
                "Draw a closed outline with the left button: its inside becomes lesion"
            }
            Command::ToolMeasure => {
                "Left drag measures a length (mm where the file gives the pixel spacing)"
            }
            Command::BrushLarger => "Make the brush larger (also Ctrl+wheel)",
            Command::BrushSmaller => "Make the brush smaller (also Ctrl+wheel)",
            Command::ClearMeasurements => "Remove the length measurements of the current image",
            Command::ToggleMetadata => "Show or hide the searchable metadata of the current image",
            Command::ShowImageTab => {
                "Show the labels, window and tools of the current image in the right panel"
            }
            Command::ShowModelTab => {
                "Show the weights, organ word, detector and fine-tuning in the right panel"
            }
            Command::ShowResultsTab => {
                "Show the heatmap settings, score histogram and score table in the right panel"
            }

            Command::ImportAdapters => {
                "Use the adapters of an MVFA Studio checkpoint or a reference MVFA .pth file (with its memory bank and calibration when it stores them)"
            }
            Command::SaveDetector => {
                "Write the current adapters, memory bank and calibration to a checkpoint file"
            }
            Command::StartTraining => {
                "Fine-tune the adapters on the labelled images in the background (the schedule is chosen in the Model tab)"
            }
            Command::ToggleHeatmap => "Show or hide the anomaly heatmap over the image",
            Command::ToggleSideBySide => {
                "Show the image and its heatmap side by side, zoom and pan linked"
            }
            Command::NextLayer => {
                "Show the next map: fused, zero-shot, few-shot, then each level of each branch"
            }
            Command::PreviousLayer => "Show the previous map (fused, branches, levels)",
            Command::NextAnomalous => {
                "Walk the images in order of decreasing anomaly score: the first press goes to the most anomalous"
            }
            Command::PreviousAnomalous => {
                "Go back to the previous image in order of decreasing anomaly score"
            }
            Command::AcceptNormal => {
                "Label the current image normal: the memory bank and the scores update at once"
            }
            Command::AcceptAbnormal => {
                "Label the current image abnormal with the region above the contour level as its starting mask (edit it with the brush)"
            }
            Command::ExportImage => {
                "Write the overlay PNG with legend, heatmap, raw maps, CSV and optionally a DICOM Secondary Capture of the current image"
            }
            Command::ExportStudy => "Write the outputs of every scored image as one background job",

            Command::ToggleHelp => "List every command with its shortcut",
            Command::CommandPalette => "Find and run a command by name",
        }
    }

    /// The keyboard shortcut that runs the command, if it has one.
    pub fn shortcut(self) -> Option<KeyboardShortcut> {
        match self {
            Command::OpenFiles => cmd(Key::O),
            Command::OpenFolder => cmd_shift(Key::O),
            Command::OpenProject => cmd(Key::P),
            Command::SaveProject => cmd(Key::S),
            Command::SaveProjectAs => cmd_shift(Key::S),
            Command::ImportMask => cmd(Key::M),
            Command::OpenWeights => None,
            Command::DownloadWeights => None,
            Command::TogglePacs => key(Key::F6),
            Command::CancelJob => key(Key::Escape),
            Command::ToggleForceCpu => None,
            Command::Quit => cmd(Key::Q),
            Command::Undo => cmd(Key::Z),
            Command::Redo => cmd_shift(Key::Z),
            Command::MarkNormal => key(Key::N),
            Command::MarkAbnormal => key(Key::A),
            Command::ClearLabel => key(Key::Backspace),
            Command::NextFrame => key(Key::ArrowDown),
            Command::PreviousFrame => key(Key::ArrowUp),
            Command::PageForward => key(Key::PageDown),
            Command::PageBack => key(Key::PageUp),
            Command::FirstFrame => key(Key::Home),
            Command::LastFrame => key(Key::End),
            Command::ZoomIn => key(Key::Plus),
            Command::ZoomOut => key(Key::Minus),
            Command::ZoomFit => key(Key::F),
            Command::ZoomActualSize => key(Key::Num0),
            Command::Invert => key(Key::I),
            Command::ResetWindow => key(Key::R),
            Command::Preset1 => key(Key::Num1),
            Command::Preset2 => key(Key::Num2),
            Command::Preset3 => key(Key::Num3),
            Command::Preset4 => key(Key::Num4),
            Command::Preset5 => key(Key::Num5),
            Command::Preset6 => key(Key::Num6),
            Command::Preset7 => key(Key::Num7),
            Command::Preset8 => key(Key::Num8),
            Command::Preset9 => key(Key::Num9),
            Command::ToolNavigate => key(Key::V),
            Command::ToolBrush => key(Key::B),
            Command::ToolEraser => key(Key::E),
            Command::ToolFill => key(Key::L),
            Command::ToolMeasure => key(Key::M),
            Command::BrushLarger => key(Key::CloseBracket),
            Command::BrushSmaller => key(Key::OpenBracket),
            Command::ClearMeasurements => None,
            Command::ToggleMetadata => cmd(Key::I),
            Command::ShowImageTab => key(Key::F2),
            Command::ShowModelTab => key(Key::F3),
            Command::ShowResultsTab => key(Key::F4),

            Command::ImportAdapters => None,
            Command::SaveDetector => None,
            Command::StartTraining => cmd(Key::T),
            Command::ToggleHeatmap => key(Key::H),
            Command::ToggleSideBySide => key(Key::D),
            Command::NextLayer => key(Key::Period),
            Command::PreviousLayer => key(Key::Comma),
            Command::NextAnomalous => key(Key::J),
            Command::PreviousAnomalous => key(Key::K),
            Command::AcceptNormal => shift(Key::N),
            Command::AcceptAbnormal => shift(Key::A),
            Command::ExportImage => cmd(Key::E),
            Command::ExportStudy => cmd_shift(Key::E),

            Command::ToggleHelp => key(Key::F1),
            Command::CommandPalette => cmd(Key::K),
        }
    }

    /// The menu the command is listed under.
    pub fn menu(self) -> Menu {
        use Command::*;
        match self {
            OpenFiles | OpenFolder | OpenProject | SaveProject | SaveProjectAs | ImportMask
            | OpenWeights | DownloadWeights | TogglePacs | CancelJob | Quit => Menu::File,
            Undo | Redo => Menu::Edit,
            NextFrame | PreviousFrame | PageForward | PageBack | FirstFrame | LastFrame
            | ZoomIn | ZoomOut | ZoomFit | ZoomActualSize | Invert | ResetWindow | Preset1
            | Preset2 | Preset3 | Preset4 | Preset5 | Preset6 | Preset7 | Preset8 | Preset9
            | ToggleMetadata | ShowImageTab | ShowModelTab | ShowResultsTab => Menu::View,
            MarkNormal | MarkAbnormal | ClearLabel => Menu::Label,
            ToolNavigate | ToolBrush | ToolEraser | ToolFill | ToolMeasure | BrushLarger
            | BrushSmaller | ClearMeasurements => Menu::Tools,
            ToggleForceCpu => Menu::Settings,
            ImportAdapters | SaveDetector | StartTraining => Menu::Model,
            ToggleHeatmap | ToggleSideBySide | NextLayer | PreviousLayer | NextAnomalous
            | PreviousAnomalous | AcceptNormal | AcceptAbnormal | ExportImage | ExportStudy => {
                Menu::Results
            }
            ToggleHelp | CommandPalette => Menu::Help,
        }
    }

    /// The preset commands, in key order (1-9).
    pub const PRESETS: [Command; 9] = [
        Command::Preset1,
        Command::Preset2,
        Command::Preset3,
        Command::Preset4,
        Command::Preset5,
        Command::Preset6,
        Command::Preset7,
        Command::Preset8,
        Command::Preset9,
    ];

    /// The window preset (0-based) a `PresetN` command applies.
    pub fn preset_index(self) -> Option<usize> {
        Command::PRESETS.iter().position(|&p| p == self)
    }

    /// The shortcut as the user reads it ("Ctrl+Shift+Z", "]"), empty when there is none.
    /// egui spells some keys by name ("CloseBracket"); those are shown as the key's symbol.
    pub fn shortcut_text(self, ctx: &eframe::egui::Context) -> String {
        self.shortcut()
            .map(|s| {
                ctx.format_shortcut(&s)
                    .replace("OpenBracket", "[")
                    .replace("CloseBracket", "]")
                    .replace("Plus", "+")
                    .replace("Minus", "-")
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_listed_once_and_shortcuts_do_not_clash() {
        let mut seen = std::collections::HashSet::new();
        for c in Command::ALL {
            assert!(seen.insert(c), "{c:?} listed twice");
            assert!(!c.label().is_empty() && !c.tooltip().is_empty());
        }
        let shortcuts: Vec<_> = Command::ALL.iter().filter_map(|c| c.shortcut()).collect();
        for (i, a) in shortcuts.iter().enumerate() {
            assert!(!shortcuts[i + 1..].contains(a), "{a:?} bound twice");
        }
    }
}
