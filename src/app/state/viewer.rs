//! What the viewer shows and how: the current image, zoom and pan, the tool, window and
//! inversion per series, window presets, measurements.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::app::state::labels::ImageKey;
use crate::io::image::{ImageStack, VoiFunction, Window};

/// What a left drag in the viewer does (right drag always sets the window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Tool {
    /// Left drag pans the image.
    #[default]
    Navigate,
    /// Left drag paints the lesion mask.
    Brush,
    /// Left drag erases the lesion mask.
    Eraser,
    /// A closed outline drawn with the left button is filled as lesion.
    Fill,
    /// Left drag measures a length.
    Measure,
}

impl Tool {
    /// The tool's name as the user reads it.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Navigate => "Pan",
            Tool::Brush => "Brush",
            Tool::Eraser => "Eraser",
            Tool::Fill => "Fill outline",
            Tool::Measure => "Measure",
        }
    }
}

/// Grey-level display of a series or file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Display {
    /// The VOI window (centre and width) mapping stored values to grey levels.
    pub window: Window,
    /// Whether the grey levels are shown inverted.
    pub invert: bool,
}

/// A length measurement on one image, in image pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The image measured on.
    pub key: ImageKey,
    /// One end of the segment, in image pixels.
    pub from: [f32; 2],
    /// The other end of the segment, in image pixels.
    pub to: [f32; 2],
}

/// Smallest brush radius, in image pixels.
pub const BRUSH_MIN: f32 = 1.0;
/// Largest brush radius, in image pixels.
pub const BRUSH_MAX: f32 = 200.0;
/// Smallest zoom, in screen points per image pixel.
pub const ZOOM_MIN: f32 = 0.01;
/// Largest zoom, in screen points per image pixel.
pub const ZOOM_MAX: f32 = 512.0;

/// The viewer's state: current image, zoom and pan, tool, display settings, measurements and
/// the panels shown.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The image shown.
    pub current: Option<ImageKey>,
    /// Whether the app chose `current` when files opened (the user has not moved since): an
    /// opening image that turns out unreadable is passed over for the next one that reads.
    pub opened_by_app: bool,
    /// Fit the image to the viewport (zoom and pan follow the viewport size).
    pub fit: bool,
    /// Screen points per image pixel when not fitting.
    pub zoom: f32,
    /// Offset of the image centre from the viewport centre, in points.
    pub pan: [f32; 2],
    /// Size of the viewport in points at the last frame (for zoom commands).
    pub viewport: [f32; 2],
    /// What a left drag in the viewer does.
    pub tool: Tool,
    /// Radius of the brush and eraser, in image pixels (the brush commands keep it between
    /// [`BRUSH_MIN`] and [`BRUSH_MAX`]).
    pub brush_radius: f32,
    /// Window and inversion per display key (see `Group::display_key`).
    pub display: HashMap<String, Display>,
    /// Length measurements of every image, in image pixel coordinates.
    pub measurements: Vec<Measurement>,
    /// Whether the metadata panel is shown.
    pub show_metadata: bool,
    /// Whether the help panel (commands and shortcuts) is shown.
    pub show_help: bool,
    /// Whether the command palette is open.
    pub show_palette: bool,
    /// The tab of the right-hand panel.
    pub tab: SideTab,
}

/// The tabs of the right-hand panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SideTab {
    /// Labels, window and tools of the current image.
    #[default]
    Image,
    /// Weights, organ word, adapters and fine-tuning.
    Model,
    /// Heatmap display, legend, score histogram and table.
    Results,
}

impl SideTab {
    /// Every tab, in order.
    pub const ALL: [SideTab; 3] = [SideTab::Image, SideTab::Model, SideTab::Results];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            SideTab::Image => "Image",
            SideTab::Model => "Model",
            SideTab::Results => "Results",
        }
    }
}

impl Default for Viewer {
    fn default() -> Self {
        Self {
            current: None,
            opened_by_app: false,
            fit: true,
            zoom: 1.0,
            pan: [0.0, 0.0],
            viewport: [1.0, 1.0],
            tool: Tool::Navigate,
            brush_radius: 8.0,
            display: HashMap::new(),
            measurements: Vec::new(),
            show_metadata: false,
            tab: SideTab::Image,
            show_help: false,
            show_palette: false,
        }
    }
}

impl Viewer {
    /// The zoom that fits an image of `size` pixels in the viewport.
    pub fn fit_zoom(&self, size: [u32; 2]) -> f32 {
        let zx = self.viewport[0] / size[0].max(1) as f32;
        let zy = self.viewport[1] / size[1].max(1) as f32;
        zx.min(zy).clamp(ZOOM_MIN, ZOOM_MAX)
    }

    /// The zoom in effect for an image of `size` pixels.
    pub fn effective_zoom(&self, size: [u32; 2]) -> f32 {
        if self.fit {
            self.fit_zoom(size)
        } else {
            self.zoom
        }
    }
}

fn preset(label: &str, center: f64, width: f64) -> Window {
    Window {
        center,
        width,
        function: VoiFunction::Linear,
        label: label.into(),
        lut: None,
    }
}

/// The window presets of a stack, in key order (1-9): the file's own windows first, then the
/// usual CT windows for CT (brain 80/40, soft tissue 400/40, lung 1500/-600, liver 150/90,
/// bone 2500/480, as width/level), and the full range the loader generated last.
pub fn presets(stack: &ImageStack) -> Vec<Window> {
    let (full, file): (Vec<&Window>, Vec<&Window>) =
        stack.windows.iter().partition(|w| w.label == "Full range");
    let mut out: Vec<Window> = file.into_iter().cloned().collect();
    if stack.info.modality.as_deref() == Some("CT") {
        out.extend([
            preset("Brain", 40.0, 80.0),
            preset("Soft tissue", 40.0, 400.0),
            preset("Lung", -600.0, 1500.0),
            preset("Liver", 90.0, 150.0),
            preset("Bone", 480.0, 2500.0),
        ]);
    }
    out.extend(full.into_iter().cloned());
    out
}
