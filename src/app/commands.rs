//! User commands: every action a person can take by name. Menus, the help panel (F1), the
//! command palette (Ctrl+K) and the keyboard shortcuts all iterate [`Command::ALL`].
//!
//! Each command is declared once, in the [`commands!`] table below: its doc comment is its
//! tooltip, then its label, menu and shortcut. Adding a command is two edits: its line here and
//! its arm in the handler of its domain (`app/handlers/`).
use eframe::egui::{Key, KeyboardShortcut, Modifiers};

/// Declares [`Command`] with its table: `/// tooltip` then `Name = "label", Menu, shortcut;`.
/// The doc comment becomes both the variant's documentation and the tooltip, so they cannot
/// drift apart.
macro_rules! commands {
    ($( $(#[doc = $doc:literal])+ $name:ident = $label:literal, $menu:ident, $shortcut:expr; )+) => {
        /// An action the user can run from a menu, the command palette or its keyboard shortcut.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Command {
            $( $(#[doc = $doc])+ $name, )+
        }

        impl Command {
            /// Every command, in the order menus, the help panel and the palette list them.
            pub const ALL: [Command; [$(stringify!($name)),+].len()] = [$(Command::$name),+];

            /// The short name shown in menus, the help panel and the command palette.
            pub fn label(self) -> &'static str {
                match self {
                    $(Command::$name => $label,)+
                }
            }

            /// One sentence on what the command does, shown on hover and in the help panel:
            /// the variant's doc comment.
            pub fn tooltip(self) -> &'static str {
                match self {
                    $(Command::$name => concat!($($doc),+).trim_ascii(),)+
                }
            }

            /// The keyboard shortcut that runs the command, if it has one.
            pub fn shortcut(self) -> Option<KeyboardShortcut> {
                match self {
                    $(Command::$name => $shortcut,)+
                }
            }

            /// The menu the command is listed under.
            pub fn menu(self) -> Menu {
                match self {
                    $(Command::$name => Menu::$menu,)+
                }
            }
        }
    };
}

commands! {
    /// Add image files (DICOM, PNG, JPEG, TIFF, BMP, NIfTI) or a DICOMDIR to the study browser
    OpenFiles = "Open files…", File, cmd(Key::O);
    /// Add every image under a folder (recursively) to the study browser; large folders are read in
    /// the background
    OpenFolder = "Open folder…", File, cmd_shift(Key::O);
    /// Open a project file: its studies, labels, masks and view
    OpenProject = "Open project…", File, cmd(Key::P);
    /// Save labels, masks, display settings and view to the project file
    SaveProject = "Save project", File, cmd(Key::S);
    /// Save the project to a new file
    SaveProjectAs = "Save project as…", File, cmd_shift(Key::S);
    /// Replace the current image's lesion mask by a mask image (non-zero = lesion)
    ImportMask = "Import mask image…", File, cmd(Key::M);
    /// Choose a CLIP ViT-L/14-336 safetensors file and load it in the background
    OpenWeights = "Open CLIP weights…", File, None;
    /// Download the public CLIP ViT-L/14-336 weights from the Hugging Face hub (SHA-256 checked)
    /// and load them
    DownloadWeights = "Download CLIP weights…", File, None;
    /// Search studies on a PACS node, retrieve them into the browser, send results back
    TogglePacs = "PACS…", File, key(Key::F6);
    /// Stop the running background jobs (scan, loading, fine-tuning, scoring, export)
    CancelJob = "Cancel job", File, key(Key::Escape);
    /// Close the application (unsaved work stays in the autosave)
    Quit = "Quit", File, cmd(Key::Q);
    /// Undo the last label change or mask edit
    Undo = "Undo", Edit, cmd(Key::Z);
    /// Redo what was undone
    Redo = "Redo", Edit, cmd_shift(Key::Z);
    /// Label the current image, or the images selected in the browser, as a normal shot
    MarkNormal = "Mark normal", Label, key(Key::N);
    /// Label the current image, or the images selected in the browser, as an abnormal shot
    MarkAbnormal = "Mark abnormal", Label, key(Key::A);
    /// Remove the label (and mask) of the current or selected images
    ClearLabel = "Clear label", Label, key(Key::Backspace);
    /// Go to the next image of the series or folder that has no label yet (after the current
    /// one, wrapping around), to label a series slice by slice.
    NextUnlabelled = "Next unlabelled image", Label, key(Key::U);
    /// Go to the unlabelled image whose label would help the detector most, by the strategy
    /// chosen in the Model tab (most uncertain, most anomalous or random); the status bar says
    /// why it was chosen
    LabelNext = "Label next (suggested)", Label, shift(Key::U);
    /// Next frame or slice of the series (also Shift+wheel)
    NextFrame = "Next frame", View, key(Key::ArrowDown);
    /// Previous frame or slice of the series (also Shift+wheel)
    PreviousFrame = "Previous frame", View, key(Key::ArrowUp);
    /// Skip 10 frames forward
    PageForward = "Forward 10 frames", View, key(Key::PageDown);
    /// Skip 10 frames back
    PageBack = "Back 10 frames", View, key(Key::PageUp);
    /// Go to the first frame of the series
    FirstFrame = "First frame", View, key(Key::Home);
    /// Go to the last frame of the series
    LastFrame = "Last frame", View, key(Key::End);
    /// Magnify the image (also the mouse wheel)
    ZoomIn = "Zoom in", View, key(Key::Plus);
    /// Shrink the image (also the mouse wheel)
    ZoomOut = "Zoom out", View, key(Key::Minus);
    /// Fit the whole image in the viewer
    ZoomFit = "Fit to window", View, key(Key::F);
    /// One image pixel per screen pixel
    ZoomActualSize = "Actual size (1:1)", View, key(Key::Num0);
    /// Show the grey levels inverted
    Invert = "Invert grey levels", View, key(Key::I);
    /// Back to the file's default window
    ResetWindow = "Reset window", View, key(Key::R);
    /// Apply window preset 1 (listed in the right panel)
    Preset1 = "Window preset 1", View, key(Key::Num1);
    /// Apply window preset 2 (listed in the right panel)
    Preset2 = "Window preset 2", View, key(Key::Num2);
    /// Apply window preset 3 (listed in the right panel)
    Preset3 = "Window preset 3", View, key(Key::Num3);
    /// Apply window preset 4 (listed in the right panel)
    Preset4 = "Window preset 4", View, key(Key::Num4);
    /// Apply window preset 5 (listed in the right panel)
    Preset5 = "Window preset 5", View, key(Key::Num5);
    /// Apply window preset 6 (listed in the right panel)
    Preset6 = "Window preset 6", View, key(Key::Num6);
    /// Apply window preset 7 (listed in the right panel)
    Preset7 = "Window preset 7", View, key(Key::Num7);
    /// Apply window preset 8 (listed in the right panel)
    Preset8 = "Window preset 8", View, key(Key::Num8);
    /// Apply window preset 9 (listed in the right panel)
    Preset9 = "Window preset 9", View, key(Key::Num9);
    /// Show or hide the searchable metadata of the current image
    ToggleMetadata = "Metadata", View, cmd(Key::I);
    /// Show the labels, window and tools of the current image in the right panel
    ShowImageTab = "Image tab", View, key(Key::F2);
    /// Show the weights, organ word, detector and fine-tuning in the right panel
    ShowModelTab = "Model tab", View, key(Key::F3);
    /// Show the heatmap settings, score histogram and score table in the right panel
    ShowResultsTab = "Results tab", View, key(Key::F4);
    /// Use the adapters of an MVFA Studio checkpoint or a reference MVFA .pth file (with its memory
    /// bank and calibration when it stores them)
    ImportAdapters = "Import adapters…", Model, None;
    /// Write the current adapters, memory bank and calibration to a checkpoint file
    SaveDetector = "Save detector…", Model, None;
    /// Fine-tune the adapters on the labelled images in the background (the schedule is chosen in
    /// the Model tab)
    StartTraining = "Fine-tune", Model, cmd(Key::T);
    /// Show or hide the anomaly heatmap over the image
    ToggleHeatmap = "Show heatmap", Results, key(Key::H);
    /// Show the image and its heatmap side by side, zoom and pan linked
    ToggleSideBySide = "Side by side", Results, key(Key::D);
    /// Show the next map: fused, zero-shot, few-shot, then each level of each branch
    NextLayer = "Next map", Results, key(Key::Period);
    /// Show the previous map (fused, branches, levels)
    PreviousLayer = "Previous map", Results, key(Key::Comma);
    /// Walk the results the way a series is read: series by decreasing series score, and
    /// within a series its slices by decreasing score (the first press: the peak slice of the
    /// most anomalous series)
    NextAnomalous = "Next most anomalous", Results, key(Key::J);
    /// Go back one step in the reading order of J
    PreviousAnomalous = "Previous most anomalous", Results, key(Key::K);
    /// Go to the peak slice of the next series in order of decreasing series score
    NextSeries = "Next most anomalous series", Results, shift(Key::J);
    /// Go to the peak slice of the previous series in order of decreasing series score
    PreviousSeries = "Previous most anomalous series", Results, shift(Key::K);
    /// Label the current image normal: the memory bank and the scores update at once
    AcceptNormal = "Accept as normal", Results, shift(Key::N);
    /// Label the current image abnormal with the region above the contour level as its starting
    /// mask (edit it with the brush)
    AcceptAbnormal = "Accept as abnormal", Results, shift(Key::A);
    /// Write the overlay PNG with legend, heatmap, raw maps, CSV and optionally a DICOM Secondary
    /// Capture of the current image
    ExportImage = "Export current image…", Results, cmd(Key::E);
    /// Write the outputs of every scored image as one background job
    ExportStudy = "Export all results…", Results, cmd_shift(Key::E);
    /// Left drag pans the image (right drag always sets the window)
    ToolNavigate = "Pan tool", Tools, key(Key::V);
    /// Left drag paints the lesion mask of an abnormal image; Ctrl+wheel sizes the brush
    ToolBrush = "Mask brush", Tools, key(Key::B);
    /// Left drag erases the lesion mask; Ctrl+wheel sizes the brush
    ToolEraser = "Mask eraser", Tools, key(Key::E);
    /// Draw a closed outline with the left button: its inside becomes lesion
    ToolFill = "Fill outline", Tools, key(Key::L);
    /// Left drag measures a length (mm where the file gives the pixel spacing)
    ToolMeasure = "Measure length", Tools, key(Key::M);
    /// Make the brush larger (also Ctrl+wheel)
    BrushLarger = "Larger brush", Tools, key(Key::CloseBracket);
    /// Make the brush smaller (also Ctrl+wheel)
    BrushSmaller = "Smaller brush", Tools, key(Key::OpenBracket);
    /// Remove the length measurements of the current image
    ClearMeasurements = "Clear measurements", Tools, None;
    /// Skip the GPU even when one is available (applies at the next start)
    ToggleForceCpu = "Always use the CPU", Settings, None;
    /// List every command with its shortcut
    ToggleHelp = "Help: commands and shortcuts", Help, key(Key::F1);
    /// Find and run a command by name
    CommandPalette = "Command palette…", Help, cmd(Key::K);
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
