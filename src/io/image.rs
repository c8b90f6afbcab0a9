//! The common in-memory image model shared by every loader (DICOM, raster, NIfTI) and by the
//! viewer, the model-input pipeline and the exports.
//!
//! Pixel values stay in modality units (after the modality LUT: rescale slope/intercept, e.g.
//! Hounsfield units for CT); windowing to display grey levels is a separate, explicit step.
use std::path::PathBuf;

/// Colour layout of a frame's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Channels {
    /// One sample per pixel, in modality units.
    Gray,
    /// Three interleaved samples per pixel (R, G, B), 0..=255 scale after colour conversion.
    Rgb,
}

impl Channels {
    /// Samples per pixel: 1 or 3.
    pub fn count(self) -> usize {
        match self {
            Channels::Gray => 1,
            Channels::Rgb => 3,
        }
    }
}

/// One 2-D image: `height` rows of `width` pixels, row-major, channels interleaved.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Samples per pixel and their meaning.
    pub channels: Channels,
    /// `width * height * channels.count()` samples in modality units.
    pub data: Vec<f32>,
}

/// DICOM VOI LUT function (C.11.2.1.3); `Linear` is the default when the tag is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum VoiFunction {
    /// `LINEAR` (the default): the classic window with the `- 0.5` / `w - 1` terms.
    #[default]
    Linear,
    /// `LINEAR_EXACT`: the window edges exactly at `c ± w / 2`.
    LinearExact,
    /// `SIGMOID`: a logistic curve centred on `c`.
    Sigmoid,
}

/// A window (VOI) in modality units, e.g. from a WindowCenter/WindowWidth pair of the file,
/// or a VOI LUT of the file's VOI LUT Sequence ([`Window::lut`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// Window centre (level), modality units.
    pub center: f64,
    /// Window width, modality units.
    pub width: f64,
    /// How values inside the window map to grey levels (see [`Window::map`]).
    pub function: VoiFunction,
    /// WindowCenterWidthExplanation, LUTExplanation, or a generated label such as
    /// "Full range".
    pub label: String,
    /// A lookup table that replaces the center/width function when present; center and width
    /// then describe the range of values it maps (a starting point for manual windowing).
    #[serde(default)]
    pub lut: Option<VoiLut>,
}

/// A VOI LUT (PS3.3 C.11.2.1.1): modality value `x` maps to
/// `data[clamp(round(x) - first_mapped, 0, len - 1)]`, out of `0..2^bits`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VoiLut {
    /// The first input value mapped, from the LUT Descriptor (0028,3002); lower values
    /// map to the first entry.
    pub first_mapped: i64,
    /// The table entries, from LUT Data (0028,3006).
    pub data: Vec<u16>,
    /// Bits per entry, 1 to 16.
    pub bits: u16,
}

impl VoiLut {
    /// The display value `0.0..=255.0` of modality value `x` (NaN maps to 0).
    pub fn map(&self, x: f64) -> f64 {
        let Some(last) = self.data.len().checked_sub(1) else {
            return 0.0;
        };
        if x.is_nan() {
            return 0.0;
        }
        let index = (x.round() - self.first_mapped as f64).clamp(0.0, last as f64) as usize;
        let max = ((1u32 << self.bits.clamp(1, 16)) - 1) as f64;
        (f64::from(self.data[index]) / max).min(1.0) * 255.0
    }
}

/// An overlay plane of a DICOM file (PS3.3 C.9.2): a bitmap for the viewer to draw over the
/// image, kept apart from the frames so that it never reaches the model input.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayPlane {
    /// The repeating group, 0x6000 to 0x601E.
    pub group: u16,
    /// OverlayRows (60xx,0010).
    pub rows: u32,
    /// OverlayColumns (60xx,0011).
    pub columns: u32,
    /// Image row and column (0-based) of the overlay's first pixel; may be negative.
    pub origin: (i32, i32),
    /// OverlayType: "G" (graphics) or "R" (region of interest).
    pub kind: String,
    /// OverlayLabel (60xx,1500), if present.
    pub label: Option<String>,
    /// OverlayDescription (60xx,0022), if present.
    pub description: Option<String>,
    /// The image frame (0-based) that the first overlay frame belongs to.
    pub first_frame: usize,
    /// One bitmap per overlay frame: `rows * columns` bytes, 1 where the overlay is set.
    pub frames: Vec<Vec<u8>>,
}

impl OverlayPlane {
    /// Whether the overlay is set over image pixel (`row`, `column`) of image frame `frame`.
    pub fn is_set(&self, frame: usize, row: i64, column: i64) -> bool {
        let Some(bitmap) = frame
            .checked_sub(self.first_frame)
            .and_then(|f| self.frames.get(f))
        else {
            return false;
        };
        let (r, c) = (
            row - i64::from(self.origin.0),
            column - i64::from(self.origin.1),
        );
        if r < 0 || c < 0 || r >= i64::from(self.rows) || c >= i64::from(self.columns) {
            return false;
        }
        bitmap
            .get(r as usize * self.columns as usize + c as usize)
            .is_some_and(|&b| b != 0)
    }
}

/// A node of the per-instance metadata tree shown in the viewer's metadata panel.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataNode {
    /// e.g. "(0010,0010) PatientName".
    pub name: String,
    /// Display value; empty for sequences.
    pub value: String,
    /// Items of a sequence, each with its elements.
    pub children: Vec<MetadataNode>,
}

/// A loaded image object: a DICOM instance, a raster file or a NIfTI volume.
#[derive(Debug, Clone)]
pub struct ImageStack {
    /// The file the image was loaded from.
    pub source: PathBuf,
    /// One frame per slice / DICOM frame, in display order.
    pub frames: Vec<Frame>,
    /// Window presets, most specific first (file-provided first, then generated ones).
    pub windows: Vec<Window>,
    /// MONOCHROME1: low values are displayed bright; applied after windowing.
    pub invert: bool,
    /// Metadata tree (empty for plain rasters).
    pub metadata: Vec<MetadataNode>,
    /// Acquisition context (modality, UIDs, geometry); all `None`/empty for plain rasters.
    pub info: ImageInfo,
    /// Overlay planes for the viewer to draw (DICOM 60xx groups); never part of `frames`.
    pub overlays: Vec<OverlayPlane>,
    /// What the loader tolerated (e.g. unparsable bytes after complete pixel data), for the
    /// viewer and `inspect` to show.
    pub warnings: Vec<String>,
}

/// Where an image comes from and how it sits in the patient: what the viewer shows next to the
/// pixels and what the study browser groups and orders by. Everything is optional because
/// plain rasters have none of it and DICOM files often lack some of it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageInfo {
    /// DICOM Modality (0008,0060), e.g. "CT", "MR", "CR".
    pub modality: Option<String>,
    /// StudyInstanceUID (0020,000D).
    pub study_instance_uid: Option<String>,
    /// SeriesInstanceUID (0020,000E).
    pub series_instance_uid: Option<String>,
    /// SOPInstanceUID (0008,0018).
    pub sop_instance_uid: Option<String>,
    /// FrameOfReferenceUID (0020,0052): the patient coordinate system of the positions.
    pub frame_of_reference_uid: Option<String>,
    /// InstanceNumber (0020,0013).
    pub instance_number: Option<i32>,
    /// PixelSpacing (0028,0030) in mm: `[between rows, between columns]`.
    pub pixel_spacing: Option<[f64; 2]>,
    /// SliceThickness (0018,0050) in mm.
    pub slice_thickness: Option<f64>,
    /// ImageOrientationPatient (0020,0037): row direction cosines then column direction cosines.
    pub image_orientation: Option<[f64; 6]>,
    /// ImagePositionPatient (0020,0032) of each frame's first pixel, one entry per frame
    /// (enhanced multi-frame files give one per frame; classic files repeat the single value).
    pub frame_positions: Vec<Option<[f64; 3]>>,
    /// The photometric interpretation as stored (before conversion to grey or RGB), e.g.
    /// "MONOCHROME1", "YBR_FULL_422", "PALETTE COLOR".
    pub photometric: Option<String>,
    /// BitsStored (0028,0101) of the source samples.
    pub bits_stored: Option<u16>,
    /// Transfer syntax UID of the source file.
    pub transfer_syntax_uid: Option<String>,
    /// Window presets per frame, for enhanced multi-frame files whose frames carry different
    /// Frame VOI LUT functional groups: entry k is frame k's presets. Empty when the stack's
    /// `windows` serve every frame; see [`ImageStack::windows_for_frame`].
    pub frame_windows: Vec<Vec<Window>>,
}

impl ImageStack {
    /// The presets for frame `index`: its own (enhanced multi-frame files with per-frame VOI
    /// groups), else the stack's.
    pub fn windows_for_frame(&self, index: usize) -> &[Window] {
        self.info
            .frame_windows
            .get(index)
            .filter(|w| !w.is_empty())
            .unwrap_or(&self.windows)
    }

    /// The preset the viewer starts with: the first file-provided window, else the generated
    /// full-range one. `None` only for a stack with no windows at all.
    pub fn default_window(&self) -> Option<&Window> {
        self.windows.first()
    }

    /// Frame `index` as an 8-bit display image through `window` and this stack's MONOCHROME1
    /// inversion; `None` when `index` is out of range.
    pub fn display_frame(&self, index: usize, window: &Window) -> Option<::image::DynamicImage> {
        self.frames
            .get(index)
            .map(|f| f.to_display_image(window, self.invert))
    }
}

impl ImageInfo {
    /// The patient directions at the left, right, top and bottom edges of the displayed frame
    /// (e.g. `["R", "L", "A", "P"]` for an axial slice), from ImageOrientationPatient in the
    /// DICOM patient system (+x left, +y posterior, +z head). Oblique directions get up to
    /// three letters, most dominant first, as radiology viewers print them. `None` without
    /// an orientation.
    pub fn orientation_labels(&self) -> Option<[String; 4]> {
        let o = self.image_orientation?;
        let row = [o[0], o[1], o[2]];
        let col = [o[3], o[4], o[5]];
        let neg = |v: [f64; 3]| [-v[0], -v[1], -v[2]];
        Some([
            direction_letters(neg(row)),
            direction_letters(row),
            direction_letters(neg(col)),
            direction_letters(col),
        ])
    }
}

/// Letters of a patient-space direction (DICOM LPS): components above 0.25 of the unit
/// length, largest first.
fn direction_letters(v: [f64; 3]) -> String {
    let letters = [('L', 'R'), ('P', 'A'), ('H', 'F')];
    let mut axes: Vec<usize> = (0..3).filter(|&a| v[a].abs() > 0.25).collect();
    axes.sort_by(|&a, &b| v[b].abs().total_cmp(&v[a].abs()));
    axes.iter()
        .map(|&a| {
            if v[a] > 0.0 {
                letters[a].0
            } else {
                letters[a].1
            }
        })
        .collect()
}

impl Window {
    /// The full-range window of integer data spanning `min..=max`, labelled "Full range":
    /// center `(min + max + 1) / 2`, width `max - min + 1` (DCMTK's min-max window), so that
    /// with the linear function `min` maps exactly to 0 and `max` exactly to 255.
    pub fn full_range(min: f64, max: f64) -> Window {
        let (min, max) = if min.is_finite() && max.is_finite() && min <= max {
            (min, max)
        } else {
            (0.0, 255.0)
        };
        Window {
            center: (min + max + 1.0) / 2.0,
            width: max - min + 1.0,
            function: VoiFunction::Linear,
            label: "Full range".to_string(),
            lut: None,
        }
    }

    /// The window spanning the data's own range `lo..=hi`, labelled `label`. Integer data gets
    /// the DICOM convention (linear, width `hi - lo + 1`, so `lo..hi` fill 0..255 exactly);
    /// float data (values in [0, 1), say, or fractional slopes) the exact linear function over
    /// `hi - lo`, so a narrow range is stretched rather than thresholded. A constant image
    /// (`lo == hi`) maps to mid grey and is labelled as constant. Non-finite bounds give the
    /// 8-bit range.
    pub fn data_range(lo: f64, hi: f64, integer: bool, label: &str) -> Window {
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Window::full_range(0.0, 255.0);
        }
        if lo == hi {
            return Window {
                center: lo,
                width: 1.0,
                function: VoiFunction::LinearExact,
                label: format!("Constant image (every value is {lo})"),
                lut: None,
            };
        }
        if integer {
            Window {
                center: (lo + hi) / 2.0,
                width: hi - lo + 1.0,
                function: VoiFunction::Linear,
                label: label.to_string(),
                lut: None,
            }
        } else {
            Window {
                center: (lo + hi) / 2.0,
                width: hi - lo,
                function: VoiFunction::LinearExact,
                label: label.to_string(),
                lut: None,
            }
        }
    }

    /// Maps one modality value to the display range `0.0..=255.0` with this window's VOI LUT
    /// function (PS3.3 C.11.2.1.2 and C.11.2.1.3, `y_min = 0`, `y_max = 255`):
    /// - `Linear`: `x <= c - 0.5 - (w - 1) / 2` -> 0, `x > c - 0.5 + (w - 1) / 2` -> 255, else
    ///   `((x - (c - 0.5)) / (w - 1) + 0.5) * 255`. The standard requires `w >= 1`; a smaller
    ///   width is treated as a threshold at `c - 0.5`.
    /// - `LinearExact`: `x <= c - w / 2` -> 0, `x > c + w / 2` -> 255, else
    ///   `((x - c) / w + 0.5) * 255`; requires `w > 0`, a threshold at `c` otherwise.
    /// - `Sigmoid`: `255 / (1 + exp(-4 (x - c) / w))`; a threshold at `c` when `w <= 0`.
    ///
    /// NaN maps to 0. A window with a [`VoiLut`] maps through the table instead.
    pub fn map(&self, x: f64) -> f64 {
        const Y_MAX: f64 = 255.0;
        let (c, w) = (self.center, self.width);
        if let Some(lut) = &self.lut {
            return lut.map(x);
        }
        if x.is_nan() {
            return 0.0;
        }
        match self.function {
            VoiFunction::Linear => {
                if w.is_nan() || w < 1.0 {
                    return if x <= c - 0.5 { 0.0 } else { Y_MAX };
                }
                let half = (w - 1.0) / 2.0;
                if x <= c - 0.5 - half {
                    0.0
                } else if x > c - 0.5 + half {
                    Y_MAX
                } else if w == 1.0 {
                    // Only reachable for x == c - 0.5 exactly, which the first branch took.
                    Y_MAX
                } else {
                    ((x - (c - 0.5)) / (w - 1.0) + 0.5) * Y_MAX
                }
            }
            VoiFunction::LinearExact => {
                if w.is_nan() || w <= 0.0 {
                    return if x <= c { 0.0 } else { Y_MAX };
                }
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    Y_MAX
                } else {
                    ((x - c) / w + 0.5) * Y_MAX
                }
            }
            VoiFunction::Sigmoid => {
                if w.is_nan() || w <= 0.0 {
                    return if x <= c { 0.0 } else { Y_MAX };
                }
                Y_MAX / (1.0 + (-4.0 * (x - c) / w).exp())
            }
        }
    }

    /// [`Window::map`] quantised to a display level: the output range `0..=255` is read as 256
    /// bins `[k, k + 1)` (with 255 itself in the last bin), so a level is `floor(y)`. This is
    /// what the `- 0.5` terms of the linear function are for: with center 127.5 and width 256
    /// the 8-bit inputs land on the bin centres `x + 0.5` and come out unchanged, and so do they
    /// with `LinearExact`, center 127.5, width 255. A tiny tolerance absorbs rounding error of
    /// the exact function.
    pub fn map_u8(&self, x: f64) -> u8 {
        let y = self.map(x);
        (y + 1e-9).floor().clamp(0.0, 255.0) as u8
    }
}

/// The smallest and largest value of `data` when every value is an integer of at most 2^24
/// in magnitude (exact in `f32`); `None` otherwise or when empty.
fn integer_range(data: &[f32]) -> Option<(i64, i64)> {
    const LIMIT: f32 = (1 << 24) as f32;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in data {
        if v.fract() != 0.0 || !(-LIMIT..=LIMIT).contains(&v) {
            return None;
        }
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo <= hi).then_some((lo as i64, hi as i64))
}

impl Frame {
    /// This frame through `window` as 8-bit display levels in the frame's own layout
    /// (`width * height * channels.count()` bytes, row-major, channels interleaved), inverted
    /// (`255 - level`) when `invert` is set (MONOCHROME1: inversion comes after the VOI step,
    /// PS3.4 N.2.1). Colour frames go through the same window per channel; their default
    /// window (center 127.5, width 256) leaves 0..=255 samples unchanged.
    ///
    /// Integer samples spanning a range smaller than the pixel count (CT, MR, radiographs)
    /// go through a lookup table of the window over that range, with the same result: the
    /// viewer rewindows millions of pixels per frame while the window is dragged.
    pub fn window_to_u8(&self, window: &Window, invert: bool) -> Vec<u8> {
        let level = |v: f64| {
            let level = window.map_u8(v);
            if invert { 255 - level } else { level }
        };
        if let Some((lo, hi)) = integer_range(&self.data)
            && ((hi - lo) as usize) < self.data.len()
        {
            let lut: Vec<u8> = (lo..=hi).map(|v| level(v as f64)).collect();
            return self
                .data
                .iter()
                .map(|&v| lut[(v as i64 - lo) as usize])
                .collect();
        }
        self.data.iter().map(|&v| level(v as f64)).collect()
    }

    /// The samples of pixel (x, y) (one for grey, three for RGB); `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<&[f32]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let n = self.channels.count();
        let start = (y as usize * self.width as usize + x as usize) * n;
        self.data.get(start..start + n)
    }

    /// The rectangle of `width` x `height` pixels at (`x`, `y`), clipped to the frame, as a
    /// frame of its own: one tile of a large image, which the viewer windows and uploads
    /// separately (GPUs limit a texture's side, often to 2048 or 8192).
    pub fn crop(&self, x: u32, y: u32, width: u32, height: u32) -> Frame {
        let x0 = x.min(self.width);
        let y0 = y.min(self.height);
        let x1 = x.saturating_add(width).min(self.width);
        let y1 = y.saturating_add(height).min(self.height);
        let n = self.channels.count();
        let mut data = Vec::with_capacity((x1 - x0) as usize * (y1 - y0) as usize * n);
        for row in y0..y1 {
            let start = (row as usize * self.width as usize + x0 as usize) * n;
            data.extend_from_slice(&self.data[start..start + (x1 - x0) as usize * n]);
        }
        Frame {
            width: x1 - x0,
            height: y1 - y0,
            channels: self.channels,
            data,
        }
    }

    /// This frame reduced by `factor` in each direction by averaging `factor` x `factor`
    /// blocks (edge blocks are partial), still in modality units. The viewer windows this
    /// display-sized copy instead of all pixels of a large radiograph, so that dragging the
    /// window stays interactive. Averages of integer data are rounded to integers (off by half
    /// a unit at most), which keeps the copy on the lookup-table path of
    /// [`Frame::window_to_u8`].
    pub fn downsample(&self, factor: u32) -> Frame {
        let factor = factor.max(1);
        if factor == 1 {
            return self.clone();
        }
        let n = self.channels.count();
        let (w, h) = (self.width.div_ceil(factor), self.height.div_ceil(factor));
        let mut data = vec![0f32; w as usize * h as usize * n];
        let mut counts = vec![0u32; w as usize * h as usize];
        for y in 0..self.height {
            let row = (y / factor) as usize * w as usize;
            for x in 0..self.width {
                let cell = row + (x / factor) as usize;
                let src = (y as usize * self.width as usize + x as usize) * n;
                for c in 0..n {
                    data[cell * n + c] += self.data[src + c];
                }
                counts[cell] += 1;
            }
        }
        let integers = integer_range(&self.data).is_some();
        for (cell, &count) in counts.iter().enumerate() {
            for c in 0..n {
                let mean = data[cell * n + c] / count.max(1) as f32;
                data[cell * n + c] = if integers { mean.round() } else { mean };
            }
        }
        Frame {
            width: w,
            height: h,
            channels: self.channels,
            data,
        }
    }

    /// [`Frame::window_to_u8`] as an `image` buffer: `Luma8` for grey frames, `Rgb8` for colour.
    pub fn to_display_image(&self, window: &Window, invert: bool) -> ::image::DynamicImage {
        let bytes = self.window_to_u8(window, invert);
        match self.channels {
            Channels::Gray => ::image::GrayImage::from_raw(self.width, self.height, bytes)
                .map(::image::DynamicImage::ImageLuma8),
            Channels::Rgb => ::image::RgbImage::from_raw(self.width, self.height, bytes)
                .map(::image::DynamicImage::ImageRgb8),
        }
        // `data` holds exactly width * height * channels samples by construction; an
        // inconsistent frame (built by hand) yields an empty image rather than a panic.
        .unwrap_or_else(|| ::image::DynamicImage::new_luma8(0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_labels_of_axial_and_coronal_slices() {
        let axial = ImageInfo {
            image_orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            ..Default::default()
        };
        assert_eq!(axial.orientation_labels().unwrap(), ["R", "L", "A", "P"]);
        let coronal = ImageInfo {
            image_orientation: Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]),
            ..Default::default()
        };
        assert_eq!(coronal.orientation_labels().unwrap(), ["R", "L", "H", "F"]);
        let oblique = ImageInfo {
            image_orientation: Some([0.8, 0.6, 0.0, 0.0, 0.0, -1.0]),
            ..Default::default()
        };
        assert_eq!(oblique.orientation_labels().unwrap()[1], "LP");
        assert!(ImageInfo::default().orientation_labels().is_none());
    }

    #[test]
    fn the_lookup_table_path_matches_the_voi_function() {
        let window = Window {
            center: 40.0,
            width: 400.0,
            function: VoiFunction::Sigmoid,
            label: String::new(),
            lut: None,
        };
        // Integer data over a small range (table) and the same with one fraction (direct).
        let ints: Vec<f32> = (0..4096).map(|i| (i % 700) as f32 - 300.0).collect();
        let frame = Frame {
            width: 64,
            height: 64,
            channels: Channels::Gray,
            data: ints.clone(),
        };
        let mut direct = frame.clone();
        direct.data[0] += 0.5;
        let a = frame.window_to_u8(&window, true);
        let b = direct.window_to_u8(&window, true);
        assert_eq!(a[1..], b[1..]);
        for (v, level) in ints.iter().zip(&a) {
            assert_eq!(*level, 255 - window.map_u8(*v as f64));
        }
        assert_eq!(integer_range(&[f32::NAN]), None);
        assert_eq!(integer_range(&[3.0, -2.0]), Some((-2, 3)));
    }

    #[test]
    fn downsampling_averages_blocks_and_keeps_partial_edges() {
        let frame = Frame {
            width: 3,
            height: 2,
            channels: Channels::Gray,
            data: vec![0.0, 2.0, 10.0, 4.0, 6.0, 20.0],
        };
        let half = frame.downsample(2);
        assert_eq!((half.width, half.height), (2, 1));
        assert_eq!(half.data, vec![3.0, 15.0]);
        let odd = Frame {
            data: vec![0.0, 1.0, 10.0, 0.0, 0.0, 20.0],
            ..frame.clone()
        };
        assert_eq!(
            odd.downsample(2).data,
            vec![0.0, 15.0],
            "integer data stay integers"
        );
        assert_eq!(frame.pixel(2, 1), Some(&[20.0][..]));
        assert_eq!(frame.pixel(3, 0), None);
        let tile = frame.crop(1, 0, 5, 1);
        assert_eq!(
            (tile.width, tile.height, tile.data),
            (2, 1, vec![2.0, 10.0])
        );
        assert_eq!(frame.crop(3, 0, 2, 2).data.len(), 0);
    }
}
