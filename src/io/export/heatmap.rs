//! Raw anomaly maps as 16-bit grey PNG files that keep their float scale.
//!
//! Stored value `q` (0..=65535) and the `mvfa:scale` tEXt chunk `min=<f32> max=<f32>` give the
//! float back as `min + q / 65535 * (max - min)`; quantisation error is at most
//! `(max - min) / 131070`. Any PNG viewer shows the map as a grey image.
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::ExportError;
use super::atomic::write_atomically;

/// tEXt keyword holding the scale.
pub const SCALE_KEYWORD: &str = "mvfa:scale";

/// A float map, `height` rows of `width` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatMap {
    /// Values per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// `width * height` values.
    pub data: Vec<f32>,
}

impl FloatMap {
    /// Checked constructor: `data.len()` must be `width * height`.
    pub fn new(width: u32, height: u32, data: Vec<f32>) -> Result<Self, ExportError> {
        let m = FloatMap {
            width,
            height,
            data,
        };
        m.check()?;
        Ok(m)
    }

    pub(crate) fn check(&self) -> Result<(), ExportError> {
        let n = self.width as usize * self.height as usize;
        if n != self.data.len() {
            return Err(ExportError::Invalid(format!(
                "map of {}x{} needs {n} values, has {}",
                self.width,
                self.height,
                self.data.len()
            )));
        }
        Ok(())
    }

    /// Smallest and largest value, ignoring non-finite ones; `None` if there are none.
    pub fn finite_range(&self) -> Option<(f32, f32)> {
        let (lo, hi) = self
            .data
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        lo.is_finite().then_some((lo, hi))
    }
}

/// The float range a 16-bit heatmap PNG encodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeatmapScale {
    /// Float value of the stored level 0.
    pub min: f32,
    /// Float value of the stored level 65535.
    pub max: f32,
}

impl HeatmapScale {
    /// The tEXt value, `min=<f> max=<f>` (shortest decimal that reads back to the same f32).
    pub fn to_text(&self) -> String {
        format!("min={} max={}", self.min, self.max)
    }

    /// Parses [`HeatmapScale::to_text`]'s format.
    pub fn parse(text: &str) -> Option<Self> {
        let mut min = None;
        let mut max = None;
        for part in text.split_whitespace() {
            if let Some(v) = part.strip_prefix("min=") {
                min = v.parse::<f32>().ok();
            } else if let Some(v) = part.strip_prefix("max=") {
                max = v.parse::<f32>().ok();
            }
        }
        let (min, max) = (min?, max?);
        (min.is_finite() && max.is_finite() && max >= min).then_some(HeatmapScale { min, max })
    }
}

/// Writes `map` as a 16-bit grey PNG with its scale in a `mvfa:scale` tEXt chunk (plus
/// `Software`). The scale is the map's min..max; non-finite values are rejected (they have no
/// 16-bit code). Returns the scale.
pub fn write_heatmap_png(path: &Path, map: &FloatMap) -> Result<HeatmapScale, ExportError> {
    map.check()?;
    if map.width == 0 || map.height == 0 {
        return Err(ExportError::Invalid("empty heatmap".into()));
    }
    if let Some(i) = map.data.iter().position(|v| !v.is_finite()) {
        return Err(ExportError::Invalid(format!(
            "heatmap value #{i} is {} (not finite)",
            map.data[i]
        )));
    }
    let (min, max) = map.finite_range().unwrap_or((0.0, 0.0));
    let scale = HeatmapScale { min, max };
    let span = max as f64 - min as f64;
    let mut bytes = Vec::with_capacity(map.data.len() * 2);
    for &v in &map.data {
        let q = if span > 0.0 {
            ((v as f64 - min as f64) / span * 65535.0)
                .round()
                .clamp(0.0, 65535.0) as u16
        } else {
            0
        };
        bytes.extend_from_slice(&q.to_be_bytes());
    }
    write_atomically(path, |w| {
        let mut enc = png::Encoder::new(w, map.width, map.height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        enc.add_text_chunk(SCALE_KEYWORD.to_string(), scale.to_text())?;
        enc.add_text_chunk("Software".to_string(), "MVFA Studio".to_string())?;
        let mut writer = enc.write_header()?;
        writer.write_image_data(&bytes)?;
        writer.finish()?;
        Ok(())
    })?;
    Ok(scale)
}

/// Reads a heatmap written by [`write_heatmap_png`] back into floats.
pub fn read_heatmap_png(path: &Path) -> Result<(FloatMap, HeatmapScale), ExportError> {
    let file = File::open(path).map_err(|e| ExportError::read(path, e))?;
    let mut dec = png::Decoder::new(BufReader::new(file));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| ExportError::read(path, e))?;
    let (color, depth) = (reader.info().color_type, reader.info().bit_depth);
    if color != png::ColorType::Grayscale || depth != png::BitDepth::Sixteen {
        return Err(ExportError::read(
            path,
            format!("expected a 16-bit grey PNG, found {color:?} {depth:?}"),
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ExportError::read(path, "image too large"))?;
    let mut buf = vec![0u8; size];
    let out = reader
        .next_frame(&mut buf)
        .map_err(|e| ExportError::read(path, e))?;
    reader.finish().map_err(|e| ExportError::read(path, e))?;
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == SCALE_KEYWORD)
        .map(|t| t.text.clone())
        .ok_or_else(|| {
            ExportError::read(
                path,
                format!("no `{SCALE_KEYWORD}` text chunk (not an MVFA heatmap)"),
            )
        })?;
    let scale = HeatmapScale::parse(&text).ok_or_else(|| {
        ExportError::read(path, format!("malformed `{SCALE_KEYWORD}` value {text:?}"))
    })?;
    let (width, height) = (out.width, out.height);
    let span = scale.max as f64 - scale.min as f64;
    let data = buf[..out.buffer_size()]
        .chunks_exact(out.line_size)
        .flat_map(|line| line.chunks_exact(2).take(width as usize))
        .map(|b| {
            let q = u16::from_be_bytes([b[0], b[1]]) as f64;
            (scale.min as f64 + q / 65535.0 * span) as f32
        })
        .collect();
    Ok((
        FloatMap {
            width,
            height,
            data,
        },
        scale,
    ))
}
