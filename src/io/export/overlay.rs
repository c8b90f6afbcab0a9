//! Overlay images: the windowed image with a heatmap alpha-blended through a colormap, and a
//! colour legend (gradient bar + min/max labels) burned into a panel on the right.
use std::path::Path;

use super::ExportError;
use super::atomic::write_atomically;
use super::font::{self, GLYPH_H, GLYPH_W};
use super::heatmap::FloatMap;
use crate::io::image::Channels;
use crate::io::resample::Image8;

/// Colormaps offered for overlays (perceptually ordered ones from `colorous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Colormap {
    /// Google's Turbo rainbow map (the default).
    #[default]
    Turbo,
    /// Matplotlib's Inferno.
    Inferno,
    /// Matplotlib's Magma.
    Magma,
    /// Matplotlib's Plasma.
    Plasma,
    /// Matplotlib's Viridis.
    Viridis,
    /// Cividis (colour-vision-deficiency friendly).
    Cividis,
    /// Light to dark grey (ColorBrewer Greys).
    Greys,
}

impl Colormap {
    /// Every colormap, in the order offered to users.
    pub const ALL: [Colormap; 7] = [
        Colormap::Turbo,
        Colormap::Inferno,
        Colormap::Magma,
        Colormap::Plasma,
        Colormap::Viridis,
        Colormap::Cividis,
        Colormap::Greys,
    ];

    fn gradient(self) -> colorous::Gradient {
        match self {
            Colormap::Turbo => colorous::TURBO,
            Colormap::Inferno => colorous::INFERNO,
            Colormap::Magma => colorous::MAGMA,
            Colormap::Plasma => colorous::PLASMA,
            Colormap::Viridis => colorous::VIRIDIS,
            Colormap::Cividis => colorous::CIVIDIS,
            Colormap::Greys => colorous::GREYS,
        }
    }

    /// Colour at `t` in [0, 1] (clamped; NaN counts as 0).
    pub fn rgb(self, t: f32) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let c = self.gradient().eval_continuous(t as f64);
        [c.r, c.g, c.b]
    }
}

/// How the heatmap is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayOptions {
    /// Default: Turbo.
    pub colormap: Colormap,
    /// Weight of the heatmap colour in the blend, 0..=1. Default 0.5.
    pub opacity: f32,
    /// Values mapped to the ends of the colormap; `None`: the map's finite min..max.
    pub range: Option<(f32, f32)>,
    /// Values below this (or non-finite) are not coloured; `None`: every value is. Default
    /// `None`.
    pub threshold: Option<f32>,
    /// Burn the legend panel in. Default true.
    pub legend: bool,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            colormap: Colormap::Turbo,
            opacity: 0.5,
            range: None,
            threshold: None,
            legend: true,
        }
    }
}

/// Where the legend was drawn, in output-image pixels (for tests and hit-testing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegendLayout {
    /// Integer scale of the font (and of margins): 1 font pixel = `scale` x `scale` pixels.
    pub scale: usize,
    /// The gradient bar: columns `bar_x0..bar_x1`, rows `bar_top..=bar_bottom`; row `bar_top`
    /// shows the colour of `max`, row `bar_bottom` the colour of `min`.
    pub bar_x0: usize,
    /// End (exclusive) of the bar's columns.
    pub bar_x1: usize,
    /// First row of the bar (the colour of `max`).
    pub bar_top: usize,
    /// Last row of the bar (the colour of `min`).
    pub bar_bottom: usize,
    /// Left edge of the labels; the max label is vertically centred on `bar_top`, the min
    /// label on `bar_bottom`.
    pub label_x: usize,
    /// Value labelled at the bottom of the bar (low end of the colour range).
    pub min: f32,
    /// Value labelled at the top of the bar (high end of the colour range).
    pub max: f32,
}

/// A rendered overlay: RGB image (`width` = image + legend panel).
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// The blended image, RGB, with the legend panel to the right when drawn.
    pub image: Image8,
    /// Where the legend was drawn; `None` without a legend.
    pub legend: Option<LegendLayout>,
}

const WHITE: [u8; 3] = [255, 255, 255];

/// Blends `map` (same size as `base`) over the display image `base` (grey or RGB) and adds the
/// legend panel. Per pixel: `out = base * (1 - a) + colour(t) * a` with `a = opacity` where the
/// value is finite and >= threshold (else `a = 0`), `t = (v - lo) / (hi - lo)` clamped; results
/// rounded to nearest.
pub fn render_overlay(
    base: &Image8,
    map: &FloatMap,
    opts: &OverlayOptions,
) -> Result<Overlay, ExportError> {
    base.check()
        .map_err(|e| ExportError::Invalid(e.to_string()))?;
    map.check()?;
    if (base.width, base.height) != (map.width, map.height) {
        return Err(ExportError::Invalid(format!(
            "heatmap is {}x{}, image is {}x{}",
            map.width, map.height, base.width, base.height
        )));
    }
    if !(0.0..=1.0).contains(&opts.opacity) {
        return Err(ExportError::Invalid(format!(
            "opacity {} outside 0..=1",
            opts.opacity
        )));
    }
    let (lo, hi) = match opts.range {
        Some((lo, hi)) if lo.is_finite() && hi.is_finite() && hi >= lo => (lo, hi),
        Some((lo, hi)) => {
            return Err(ExportError::Invalid(format!("bad value range {lo}..{hi}")));
        }
        None => map.finite_range().unwrap_or((0.0, 1.0)),
    };
    let span = hi - lo;
    let rgb = base.to_rgb();
    let (w, h) = (base.width as usize, base.height as usize);

    let layout = opts.legend.then(|| legend_layout(h, lo, hi));
    let panel_w = layout.map_or(0, |l| panel_width(&l));
    let out_w = w + panel_w;
    let out_h = layout.map_or(h, |l| h.max(l.bar_bottom + l.bar_top + 1));
    let mut out = vec![0u8; out_w * out_h * 3];

    for y in 0..h {
        for x in 0..w {
            let v = map.data[y * w + x];
            let src = &rgb.data[(y * w + x) * 3..][..3];
            let dst = &mut out[(y * out_w + x) * 3..][..3];
            let shown = v.is_finite() && opts.threshold.is_none_or(|t| v >= t);
            if shown && opts.opacity > 0.0 {
                let t = if span > 0.0 { (v - lo) / span } else { 0.0 };
                let c = opts.colormap.rgb(t);
                for k in 0..3 {
                    let f = src[k] as f32 * (1.0 - opts.opacity) + c[k] as f32 * opts.opacity;
                    dst[k] = (f + 0.5).clamp(0.0, 255.0) as u8;
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
    // Shift the legend geometry from panel to image coordinates and draw it.
    let legend = layout.map(|l| {
        let l = LegendLayout {
            bar_x0: l.bar_x0 + w,
            bar_x1: l.bar_x1 + w,
            label_x: l.label_x + w,
            ..l
        };
        draw_legend(&mut out, out_w, &l, opts.colormap);
        l
    });
    Ok(Overlay {
        image: Image8 {
            width: out_w as u32,
            height: out_h as u32,
            channels: Channels::Rgb,
            data: out,
        },
        legend,
    })
}

/// Legend geometry relative to the panel's left edge, for an image `h` pixels high. The font
/// scale grows with the image (1 up to 383 px, 2 up to 639 px, ...), so labels stay legible.
fn legend_layout(h: usize, lo: f32, hi: f32) -> LegendLayout {
    let s = (h / 256).max(1);
    let pad = 4 * s;
    let half_text = (GLYPH_H * s).div_ceil(2);
    let bar_top = pad + half_text;
    // At least 3 label heights of bar, even on tiny images (the canvas grows then).
    let bar_bottom = (h.saturating_sub(pad + half_text + 1)).max(bar_top + 3 * GLYPH_H * s);
    let bar_x0 = pad;
    let bar_x1 = bar_x0 + 12 * s;
    LegendLayout {
        scale: s,
        bar_x0,
        bar_x1,
        bar_top,
        bar_bottom,
        label_x: bar_x1 + 4 * s,
        min: lo,
        max: hi,
    }
}

fn panel_width(l: &LegendLayout) -> usize {
    let chars = font::text_width(&font::format_tick(l.min))
        .max(font::text_width(&font::format_tick(l.max)));
    l.label_x + chars * l.scale + 4 * l.scale
}

fn put(out: &mut [u8], out_w: usize, x: usize, y: usize, c: [u8; 3]) {
    if let Some(p) = out.get_mut((y * out_w + x) * 3..(y * out_w + x) * 3 + 3) {
        p.copy_from_slice(&c);
    }
}

fn draw_legend(out: &mut [u8], out_w: usize, l: &LegendLayout, cmap: Colormap) {
    let height = (l.bar_bottom - l.bar_top) as f32;
    for y in l.bar_top..=l.bar_bottom {
        let t = (l.bar_bottom - y) as f32 / height;
        let c = cmap.rgb(t);
        for x in l.bar_x0..l.bar_x1 {
            put(out, out_w, x, y, c);
        }
    }
    // Ticks from the bar to the labels, then the labels centred on the bar ends.
    for (y, v) in [(l.bar_top, l.max), (l.bar_bottom, l.min)] {
        for x in l.bar_x1..l.bar_x1 + 2 * l.scale {
            for dy in 0..l.scale {
                put(out, out_w, x, y + dy, WHITE);
            }
        }
        let top = y.saturating_sub((GLYPH_H * l.scale) / 2);
        draw_text(out, out_w, l.label_x, top, l.scale, &font::format_tick(v));
    }
}

fn draw_text(out: &mut [u8], out_w: usize, x0: usize, y0: usize, s: usize, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let cx = x0 + i * (GLYPH_W + 1) * s;
        for row in 0..GLYPH_H {
            for col in 0..GLYPH_W {
                if font::pixel(ch, col, row) {
                    for dy in 0..s {
                        for dx in 0..s {
                            put(out, out_w, cx + col * s + dx, y0 + row * s + dy, WHITE);
                        }
                    }
                }
            }
        }
    }
}

/// Writes an 8-bit grey or RGB image as PNG (atomically).
pub fn write_png(path: &Path, img: &Image8) -> Result<(), ExportError> {
    img.check()
        .map_err(|e| ExportError::Invalid(e.to_string()))?;
    write_atomically(path, |w| {
        let mut enc = png::Encoder::new(w, img.width, img.height);
        enc.set_color(match img.channels {
            Channels::Gray => png::ColorType::Grayscale,
            Channels::Rgb => png::ColorType::Rgb,
        });
        enc.set_depth(png::BitDepth::Eight);
        enc.add_text_chunk("Software".to_string(), "MVFA Studio".to_string())?;
        let mut writer = enc.write_header()?;
        writer.write_image_data(&img.data)?;
        writer.finish()?;
        Ok(())
    })
}

/// Renders ([`render_overlay`]) and writes the overlay PNG; returns the rendered overlay.
pub fn write_overlay_png(
    path: &Path,
    base: &Image8,
    map: &FloatMap,
    opts: &OverlayOptions,
) -> Result<Overlay, ExportError> {
    let overlay = render_overlay(base, map, opts)?;
    write_png(path, &overlay.image)?;
    Ok(overlay)
}
