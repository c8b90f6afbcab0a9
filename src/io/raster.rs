//! Plain raster images (PNG 8/16-bit, JPEG, TIFF 8/16-bit, BMP) as single-frame
//! [`ImageStack`]s, decoded by the `image` crate.
//!
//! Pixel values:
//! - grey (with or without alpha) -> [`Channels::Gray`] with the raw stored values: 0..=255 for
//!   8-bit, 0..=65535 for 16-bit (no rescaling, so a 16-bit PNG/TIFF keeps its units);
//! - colour (RGB, RGBA, palette, which the decoder expands) -> [`Channels::Rgb`] on the
//!   0..=255 scale (16-bit colour is divided by 257, float colour multiplied by 255);
//! - 8-bit colour whose pixels are all neutral (R = G = B, e.g. a grey BMP stored with a grey
//!   palette, or a grey scan saved as RGB) loads as grey: the values are the same, and the
//!   viewer's grey windowing then applies;
//! - alpha is dropped (Pillow's `convert('RGB')` in the reference drops it too);
//! - EXIF orientation is not applied: the reference (`Image.open`) does not apply it either.
//!
//! Default window: for 8-bit data the full range of the type (center 127.5, width 256, i.e.
//! identity); for 16-bit grey the data range `min..max` (center `(min + max) / 2`, width
//! `max - min + 1`), since 16-bit medical rasters rarely use the whole 0..65535 range.
// Pixel limits and sizes from headers: checked arithmetic only.
#![deny(clippy::arithmetic_side_effects)]
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};

use super::image::{Channels, Frame, ImageStack, MetadataNode, VoiFunction, Window};

/// A raster file that could not be read, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot read raster image: {reason}")]
pub struct RasterError {
    /// The raster file.
    pub path: PathBuf,
    /// Why it could not be read.
    pub reason: String,
}

fn err(path: &Path, reason: impl Into<String>) -> RasterError {
    RasterError {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Lower-case file extensions this module reads.
pub const RASTER_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "bmp"];

/// True when the file name has one of [`RASTER_EXTENSIONS`] (case-insensitive).
pub fn is_raster_path(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| RASTER_EXTENSIONS.contains(&e.as_str()))
}

/// Environment variable that overrides [`RasterLimits::DEFAULT_MAX_PIXELS`].
pub const MAX_PIXELS_ENV: &str = "MVFA_MAX_IMAGE_PIXELS";

/// Bounds on what a raster file may make us allocate, checked from the header before any
/// pixel is decoded (like DICOM's sample limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RasterLimits {
    /// Most pixels (width x height) of one image.
    pub max_pixels: u64,
}

impl RasterLimits {
    /// 2^27 pixels (an 11 585 px square): a colour image of that size already takes 1.6 GB
    /// as float samples.
    pub const DEFAULT_MAX_PIXELS: u64 = 1 << 27;

    /// The default limit, or the one set in [`MAX_PIXELS_ENV`] (a positive integer).
    pub fn from_env() -> Self {
        let max_pixels = std::env::var(MAX_PIXELS_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(Self::DEFAULT_MAX_PIXELS);
        Self { max_pixels }
    }
}

impl Default for RasterLimits {
    fn default() -> Self {
        Self::from_env()
    }
}

/// Reads a raster file. The format is sniffed from the content (falling back to the
/// extension), so a mislabelled file still opens. Images above [`RasterLimits::from_env`]
/// are refused before decoding.
pub fn load_raster(path: &Path) -> Result<ImageStack, RasterError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    load_raster_bytes(&bytes, path)
}

/// Decodes an in-memory raster file; `source` names it in errors and in the stack.
pub fn load_raster_bytes(bytes: &[u8], source: &Path) -> Result<ImageStack, RasterError> {
    load_raster_bytes_with(bytes, source, &RasterLimits::from_env())
}

/// [`load_raster_bytes`] under explicit `limits`.
pub fn load_raster_bytes_with(
    bytes: &[u8],
    source: &Path,
    limits: &RasterLimits,
) -> Result<ImageStack, RasterError> {
    let (reader, format) = sniffed_reader(bytes, source)?;
    let decoder = reader
        .into_decoder()
        .map_err(|e| err(source, e.to_string()))?;
    // From the header, before any pixel buffer exists.
    check_pixel_limit(&decoder, source, limits)?;
    let stored = decoder.original_color_type();
    let img = DynamicImage::from_decoder(decoder).map_err(|e| err(source, e.to_string()))?;
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(err(source, "image has no pixels"));
    }
    let loaded = loaded_samples(img, source)?;
    let (channels, data, layout) =
        neutral_colour_as_grey(loaded.channels, loaded.data, loaded.layout);
    let node = |name: &str, value: String| MetadataNode {
        name: name.to_string(),
        value,
        children: Vec::new(),
    };
    let metadata = vec![
        node("Format", format!("{format:?}")),
        node("Size", format!("{width} x {height}")),
        node("Stored colour type", format!("{stored:?}")),
        node("Loaded as", layout.to_string()),
    ];
    Ok(ImageStack {
        source: source.to_path_buf(),
        frames: vec![Frame {
            width,
            height,
            channels,
            data,
        }],
        windows: loaded.windows,
        invert: false,
        metadata,
        info: Default::default(),
        overlays: Vec::new(),
        warnings: Vec::new(),
    })
}

/// An in-memory reader and the format it will decode.
type Sniffed<'a> = (ImageReader<Cursor<&'a [u8]>>, image::ImageFormat);

/// A reader whose format is sniffed from the content, falling back to the extension so that
/// a mislabelled or headerless file still opens.
fn sniffed_reader<'a>(bytes: &'a [u8], source: &Path) -> Result<Sniffed<'a>, RasterError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(source, e.to_string()))?;
    if reader.format().is_none()
        && let Some(fmt) = source
            .extension()
            .and_then(image::ImageFormat::from_extension)
    {
        reader.set_format(fmt);
    }
    let format = reader.format().ok_or_else(|| {
        err(
            source,
            "unrecognised format (expected PNG, JPEG, TIFF or BMP)",
        )
    })?;
    Ok((reader, format))
}

/// Refuses images above `limits` from the header's size, before any pixel buffer exists.
fn check_pixel_limit(
    decoder: &impl ImageDecoder,
    source: &Path,
    limits: &RasterLimits,
) -> Result<(), RasterError> {
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w).saturating_mul(u64::from(h));
    if pixels > limits.max_pixels {
        let channels = u64::from(decoder.color_type().channel_count());
        let bytes = pixels.saturating_mul(channels).saturating_mul(4);
        return Err(err(
            source,
            format!(
                "image of {w} x {h} pixels exceeds the {}-pixel limit (it would take about \
                 {:.1} GB as float samples; set {MAX_PIXELS_ENV} to raise the limit)",
                limits.max_pixels,
                bytes as f64 / 1e9
            ),
        ));
    }
    Ok(())
}

/// The decoded samples of one raster, before neutral colour is folded to grey.
struct Loaded {
    channels: Channels,
    data: Vec<f32>,
    windows: Vec<Window>,
    /// How the stored layout was loaded, for the metadata panel.
    layout: &'static str,
}

/// The samples of `img` on the scales described in the module documentation, with the
/// default window of each layout.
fn loaded_samples(img: DynamicImage, source: &Path) -> Result<Loaded, RasterError> {
    let full8 = Window {
        center: 127.5,
        width: 256.0,
        function: VoiFunction::Linear,
        label: "Full range".to_string(),
        lut: None,
    };
    let (channels, data, windows, layout) = match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => grey_samples(img, full8),
        DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => integer_colour_samples(img, full8),
        DynamicImage::ImageRgb32F(b) => {
            let (data, w, unit) = float_samples(b.into_raw(), &full8);
            let layout = if unit {
                "float RGB (0..1, scaled to 0..255)"
            } else {
                "float RGB (windowed from its own range)"
            };
            (Channels::Rgb, data, vec![w], layout)
        }
        DynamicImage::ImageRgba32F(b) => {
            let values = b.pixels().flat_map(|p| [p.0[0], p.0[1], p.0[2]]).collect();
            let (data, w, unit) = float_samples(values, &full8);
            let layout = if unit {
                "float RGBA (0..1, scaled to 0..255, alpha dropped)"
            } else {
                "float RGBA (windowed from its own range, alpha dropped)"
            };
            (Channels::Rgb, data, vec![w], layout)
        }
        other => {
            return Err(err(
                source,
                format!("unsupported pixel layout {:?}", other.color()),
            ));
        }
    };
    Ok(Loaded {
        channels,
        data,
        windows,
        layout,
    })
}

/// Samples, windows and layout label of a decoded image.
type Samples = (Channels, Vec<f32>, Vec<Window>, &'static str);

/// Grey 8- and 16-bit images (alpha dropped): raw stored values; 16-bit data gets a window
/// over its own range.
fn grey_samples(img: DynamicImage, full8: Window) -> Samples {
    match img {
        DynamicImage::ImageLumaA8(b) => {
            let data = b.pixels().map(|p| f32::from(p.0[0])).collect();
            (
                Channels::Gray,
                data,
                vec![full8],
                "8-bit grey + alpha (alpha dropped)",
            )
        }
        DynamicImage::ImageLuma16(b) => {
            let data: Vec<f32> = b.into_raw().into_iter().map(f32::from).collect();
            let w = data_range_window(&data, true);
            (Channels::Gray, data, vec![w], "16-bit grey")
        }
        DynamicImage::ImageLumaA16(b) => {
            let data: Vec<f32> = b.pixels().map(|p| f32::from(p.0[0])).collect();
            let w = data_range_window(&data, true);
            (
                Channels::Gray,
                data,
                vec![w],
                "16-bit grey + alpha (alpha dropped)",
            )
        }
        // ImageLuma8, the only other layout sent here: into_luma8 hands its buffer back as is.
        other => {
            let data = other
                .into_luma8()
                .into_raw()
                .into_iter()
                .map(f32::from)
                .collect();
            (Channels::Gray, data, vec![full8], "8-bit grey")
        }
    }
}

/// 8- and 16-bit colour (alpha dropped) on the 0..=255 scale.
fn integer_colour_samples(img: DynamicImage, full8: Window) -> Samples {
    match img {
        DynamicImage::ImageRgba8(b) => {
            let data = b
                .pixels()
                .flat_map(|p| [p.0[0], p.0[1], p.0[2]].map(f32::from))
                .collect();
            (
                Channels::Rgb,
                data,
                vec![full8],
                "8-bit RGBA (alpha dropped)",
            )
        }
        DynamicImage::ImageRgb16(b) => {
            let data = b
                .into_raw()
                .into_iter()
                .map(|v| f32::from(v) / 257.0)
                .collect();
            (
                Channels::Rgb,
                data,
                vec![full8],
                "16-bit RGB (scaled to 0..255)",
            )
        }
        DynamicImage::ImageRgba16(b) => {
            let data = b
                .pixels()
                .flat_map(|p| [p.0[0], p.0[1], p.0[2]].map(|v| f32::from(v) / 257.0))
                .collect();
            (
                Channels::Rgb,
                data,
                vec![full8],
                "16-bit RGBA (scaled to 0..255, alpha dropped)",
            )
        }
        // ImageRgb8, the only other layout sent here: into_rgb8 hands its buffer back as is.
        other => {
            let data = other
                .into_rgb8()
                .into_raw()
                .into_iter()
                .map(f32::from)
                .collect();
            (Channels::Rgb, data, vec![full8], "8-bit RGB")
        }
    }
}

/// 8-bit colour whose pixels are all neutral (R = G = B) loads as grey: same values, and the
/// viewer's grey windowing then applies.
fn neutral_colour_as_grey(
    channels: Channels,
    data: Vec<f32>,
    layout: &'static str,
) -> (Channels, Vec<f32>, &'static str) {
    if channels == Channels::Rgb
        && matches!(layout, "8-bit RGB" | "8-bit RGBA (alpha dropped)")
        && data.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2])
    {
        let grey = data.chunks_exact(3).map(|p| p[0]).collect();
        (
            Channels::Gray,
            grey,
            "8-bit colour with neutral pixels, loaded as grey",
        )
    } else {
        (channels, data, layout)
    }
}

/// Window covering the data range ([`Window::data_range`]): center `(min + max) / 2`, width
/// `max - min + 1` for integer data, so that `min..max` maps onto the whole display range;
/// the exact linear function over `max - min` for float data; a labelled constant window.
fn data_range_window(data: &[f32], integer: bool) -> Window {
    let (lo, hi) = data
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return Window::data_range(0.0, 65535.0, true, "Data range");
    }
    Window::data_range(lo as f64, hi as f64, integer, "Data range")
}

/// Float samples: 0..1 data (the usual convention) scaled to 0..255 under the 8-bit window;
/// anything else keeps its values and gets a window from its own range.
fn float_samples(values: Vec<f32>, full8: &Window) -> (Vec<f32>, Window, bool) {
    let in_unit = values
        .iter()
        .all(|v| v.is_finite() && (0.0..=1.0).contains(v));
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if in_unit && lo < hi {
        (
            values.into_iter().map(|v| v * 255.0).collect(),
            full8.clone(),
            true,
        )
    } else {
        let w = data_range_window(&values, false);
        (values, w, false)
    }
}
