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
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};

use super::image::{Channels, Frame, ImageStack, MetadataNode, VoiFunction, Window};

/// A raster file that could not be read, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot read raster image: {reason}")]
pub struct RasterError {
    pub path: PathBuf,
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

/// Reads a raster file. The format is sniffed from the content (falling back to the
/// extension), so a mislabelled file still opens.
pub fn load_raster(path: &Path) -> Result<ImageStack, RasterError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e.to_string()))?;
    load_raster_bytes(&bytes, path)
}

/// Decodes an in-memory raster file; `source` names it in errors and in the stack.
pub fn load_raster_bytes(bytes: &[u8], source: &Path) -> Result<ImageStack, RasterError> {
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
    let decoder = reader
        .into_decoder()
        .map_err(|e| err(source, e.to_string()))?;
    let stored = decoder.original_color_type();
    let img = DynamicImage::from_decoder(decoder).map_err(|e| err(source, e.to_string()))?;
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(err(source, "image has no pixels"));
    }

    let full8 = Window {
        center: 127.5,
        width: 256.0,
        function: VoiFunction::Linear,
        label: "Full range".to_string(),
        lut: None,
    };
    let (channels, data, windows, layout) = match img {
        DynamicImage::ImageLuma8(b) => {
            let data = b.into_raw().into_iter().map(f32::from).collect();
            (Channels::Gray, data, vec![full8], "8-bit grey")
        }
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
            let w = data_range_window(&data);
            (Channels::Gray, data, vec![w], "16-bit grey")
        }
        DynamicImage::ImageLumaA16(b) => {
            let data: Vec<f32> = b.pixels().map(|p| f32::from(p.0[0])).collect();
            let w = data_range_window(&data);
            (
                Channels::Gray,
                data,
                vec![w],
                "16-bit grey + alpha (alpha dropped)",
            )
        }
        DynamicImage::ImageRgb8(b) => {
            let data = b.into_raw().into_iter().map(f32::from).collect();
            (Channels::Rgb, data, vec![full8], "8-bit RGB")
        }
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
        DynamicImage::ImageRgb32F(b) => {
            let data = b.into_raw().into_iter().map(|v| v * 255.0).collect();
            (
                Channels::Rgb,
                data,
                vec![full8],
                "float RGB (scaled to 0..255)",
            )
        }
        DynamicImage::ImageRgba32F(b) => {
            let data = b
                .pixels()
                .flat_map(|p| [p.0[0], p.0[1], p.0[2]].map(|v| v * 255.0))
                .collect();
            (
                Channels::Rgb,
                data,
                vec![full8],
                "float RGBA (scaled to 0..255, alpha dropped)",
            )
        }
        other => {
            return Err(err(
                source,
                format!("unsupported pixel layout {:?}", other.color()),
            ));
        }
    };
    let (channels, data, layout) = if channels == Channels::Rgb
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
    };
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
        windows,
        invert: false,
        metadata,
        info: Default::default(),
        overlays: Vec::new(),
        warnings: Vec::new(),
    })
}

/// Window covering the data range: center `(min + max) / 2`, width `max - min + 1` (integer
/// data), so that `min..max` maps onto the whole display range.
fn data_range_window(data: &[f32]) -> Window {
    let (lo, hi) = data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo as f64, hi as f64)
    } else {
        (0.0, 65535.0)
    };
    Window {
        center: (lo + hi) / 2.0,
        width: hi - lo + 1.0,
        function: VoiFunction::Linear,
        label: "Data range".to_string(),
        lut: None,
    }
}
