//! Textures the viewer draws, cached by what they show: (file, frame, reduction, window,
//! inversion) for images and (image, labels revision, reduction) for mask overlays. Scrolling
//! back to a frame or toggling between two presets reuses the texture; nothing is rebuilt per
//! frame.
//!
//! Large images are windowed at a reduction that matches the screen (a 4k x 4k radiograph
//! fitted in a 1000-point viewer is windowed from a 1k x 1k block average), and in tiles of
//! [`TILE`] pixels of which only the visible ones are built: dragging the window rebuilds about
//! as many pixels as the screen shows, and no texture exceeds what the GPU accepts. The
//! block-averaged copies (in modality units) are cached too.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui::{self, ColorImage, TextureHandle, TextureOptions};

use crate::app::state::labels::ImageKey;
use crate::app::state::viewer::Display;
use crate::io::export::overlay::Colormap;
use crate::io::image::{Channels, Frame, ImageStack, VoiFunction};
use crate::io::mask::Mask;
use crate::io::resample::Image8;
use crate::workflow::MapLayer;

/// Image textures kept (a scrolled series reuses its frames).
const IMAGE_CAPACITY: usize = 96;
/// Reduced frames kept.
const REDUCED_CAPACITY: usize = 8;

/// Side of a tile, in pixels of the reduced image (within every GPU's texture limit).
pub const TILE: u32 = 512;

/// One texture of a tiled image and where it goes.
pub struct Tile {
    /// The tile's texture.
    pub texture: TextureHandle,
    /// `[x0, y0, x1, y1]` in full-resolution image pixels.
    pub rect: [f32; 4],
}

#[derive(Debug, Clone, PartialEq)]
struct ImageTexKey {
    path: PathBuf,
    frame: usize,
    factor: u32,
    tile: (u32, u32),
    center: u64,
    width: u64,
    function: VoiFunction,
    invert: bool,
}

/// Line segments of a contour, in map pixel coordinates.
pub type Contour = Arc<Vec<[[f32; 2]; 2]>>;

/// What a heatmap texture shows: whose result, which map, which colours.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapKey {
    /// The image.
    pub key: ImageKey,
    /// The detector generation of the result; for an imported result object, its index in
    /// [`crate::app::state::ImportedResults`] and the frame, with the top bit set.
    pub generation: u64,
    /// The map.
    pub layer: MapLayer,
    /// The colormap.
    pub colormap: Colormap,
    /// The values at the two ends of the colormap (bit patterns, for exact comparison).
    pub range: (u32, u32),
}

#[derive(Debug, Clone, PartialEq)]
struct MaskTexKey {
    key: ImageKey,
    revision: u64,
    factor: u32,
}

/// A small least-recently-used list (linear search: capacities are tens of entries).
struct Lru<K, V> {
    entries: Vec<(K, V)>,
    capacity: usize,
}

impl<K: PartialEq, V: Clone> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Vec::new(),
            capacity,
        }
    }

    fn get_or_insert(&mut self, key: K, make: impl FnOnce() -> V) -> V {
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            let entry = self.entries.remove(i);
            self.entries.push(entry);
        } else {
            if self.entries.len() >= self.capacity {
                self.entries.remove(0);
            }
            self.entries.push((key, make()));
        }
        self.entries
            .last()
            .map(|(_, v)| v.clone())
            .expect("just pushed")
    }
}

/// The viewer's texture caches: image tiles, browser previews, reduced frames and mask
/// overlays.
pub struct Textures {
    images: Lru<ImageTexKey, TextureHandle>,
    thumbnails: HashMap<PathBuf, TextureHandle>,
    reduced: Lru<(PathBuf, usize, u32), Arc<Frame>>,
    masks: Lru<MaskTexKey, TextureHandle>,
    heatmaps: Lru<HeatmapKey, TextureHandle>,
    contours: Lru<(HeatmapKey, u32), Contour>,
    /// Image textures built so far (for tests and the frame-time measurement).
    pub builds: usize,
    /// Heatmap textures built so far (for tests).
    pub heatmap_builds: usize,
}

impl Default for Textures {
    fn default() -> Self {
        Self {
            images: Lru::new(IMAGE_CAPACITY),
            thumbnails: HashMap::new(),
            reduced: Lru::new(REDUCED_CAPACITY),
            masks: Lru::new(4),
            heatmaps: Lru::new(16),
            contours: Lru::new(16),
            builds: 0,
            heatmap_builds: 0,
        }
    }
}

/// Magnified pixels stay crisp squares (as radiologists expect); minified ones are smoothed.
const OPTIONS: TextureOptions = TextureOptions {
    magnification: egui::TextureFilter::Nearest,
    minification: egui::TextureFilter::Linear,
    wrap_mode: egui::TextureWrapMode::ClampToEdge,
    mipmap_mode: None,
};

/// The reduction (a power of two) at which an image shown at `pixels_per_image_pixel` screen
/// pixels per image pixel is windowed: the largest that still gives at least one texel per
/// screen pixel.
pub fn reduction_for(pixels_per_image_pixel: f32) -> u32 {
    let mut factor = 1u32;
    while factor < 64 && pixels_per_image_pixel * (factor * 2) as f32 <= 1.0 {
        factor *= 2;
    }
    factor
}

impl Textures {
    /// The tiles of `key`'s frame of `stack` through `display`, reduced by `factor`, that
    /// overlap `visible` (`[x0, y0, x1, y1]` in full-resolution image pixels).
    pub fn image_tiles(
        &mut self,
        ctx: &egui::Context,
        stack: &ImageStack,
        key: &ImageKey,
        factor: u32,
        display: &Display,
        visible: [f32; 4],
    ) -> Vec<Tile> {
        let Some(frame) = stack.frames.get(key.frame) else {
            return Vec::new();
        };
        let source: Arc<Frame>;
        let source: &Frame = if factor > 1 {
            source = self
                .reduced
                .get_or_insert((key.path.clone(), key.frame, factor), || {
                    Arc::new(frame.downsample(factor))
                });
            &source
        } else {
            frame
        };
        let invert = stack.invert != display.invert;
        let mut tiles = Vec::new();
        for ty in 0..source.height.div_ceil(TILE) {
            for tx in 0..source.width.div_ceil(TILE) {
                let (x0, y0) = (tx * TILE, ty * TILE);
                let (x1, y1) = (
                    (x0 + TILE).min(source.width),
                    (y0 + TILE).min(source.height),
                );
                // Reduced pixel i covers full pixels [i * factor, (i + 1) * factor).
                let rect = [
                    (x0 * factor) as f32,
                    (y0 * factor) as f32,
                    ((x1 * factor).min(frame.width)) as f32,
                    ((y1 * factor).min(frame.height)) as f32,
                ];
                if rect[2] <= visible[0]
                    || rect[0] >= visible[2]
                    || rect[3] <= visible[1]
                    || rect[1] >= visible[3]
                {
                    continue;
                }
                let tex_key = ImageTexKey {
                    path: key.path.clone(),
                    frame: key.frame,
                    factor,
                    tile: (tx, ty),
                    center: display.window.center.to_bits(),
                    width: display.window.width.to_bits(),
                    function: display.window.function,
                    invert,
                };
                let builds = &mut self.builds;
                let texture = self.images.get_or_insert(tex_key, || {
                    *builds += 1;
                    let part = source.crop(x0, y0, x1 - x0, y1 - y0);
                    let bytes = part.window_to_u8(&display.window, invert);
                    let size = [part.width as usize, part.height as usize];
                    let image = match part.channels {
                        Channels::Gray => ColorImage::from_gray(size, &bytes),
                        Channels::Rgb => ColorImage::from_rgb(size, &bytes),
                    };
                    ctx.load_texture(
                        format!("{}#{}/{tx},{ty}", key.path.display(), key.frame),
                        image,
                        OPTIONS,
                    )
                });
                tiles.push(Tile { texture, rect });
            }
        }
        tiles
    }

    /// The browser preview of `path` (made once per file: previews are a few kilobytes).
    pub fn thumbnail(&mut self, ctx: &egui::Context, path: &Path, image: &Image8) -> TextureHandle {
        self.thumbnails
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                let size = [image.width as usize, image.height as usize];
                let color = match image.channels {
                    Channels::Gray => ColorImage::from_gray(size, &image.data),
                    Channels::Rgb => ColorImage::from_rgb(size, &image.data),
                };
                ctx.load_texture(format!("thumbnail {}", path.display()), color, OPTIONS)
            })
            .clone()
    }

    /// The translucent overlay of `mask`, reduced by `factor` (nearest pixel), or more when
    /// the GPU's largest texture (`max_side`) needs it.
    pub fn mask(
        &mut self,
        ctx: &egui::Context,
        key: &ImageKey,
        revision: u64,
        mask: &Mask,
        factor: u32,
        max_side: usize,
    ) -> TextureHandle {
        let mut factor = factor.max(1);
        while (mask.width.max(mask.height) / factor) as usize > max_side.max(1) {
            factor *= 2;
        }
        let tex_key = MaskTexKey {
            key: key.clone(),
            revision,
            factor,
        };
        self.masks.get_or_insert(tex_key, || {
            let (w, h) = (mask.width.div_ceil(factor), mask.height.div_ceil(factor));
            let mut rgba = vec![0u8; w as usize * h as usize * 4];
            for y in 0..h {
                for x in 0..w {
                    if mask.get(x * factor, y * factor) {
                        let i = (y as usize * w as usize + x as usize) * 4;
                        rgba[i..i + 4].copy_from_slice(&[255, 64, 64, 110]);
                    }
                }
            }
            ctx.load_texture(
                "mask",
                ColorImage::from_rgba_unmultiplied([w as usize, h as usize], &rgba),
                OPTIONS,
            )
        })
    }
}

/// Heatmaps are smoothed when magnified: the map is coarser than the image, and a smooth
/// field is what it describes (the value under the cursor is interpolated the same way).
const HEATMAP_OPTIONS: TextureOptions = TextureOptions {
    magnification: egui::TextureFilter::Linear,
    minification: egui::TextureFilter::Linear,
    wrap_mode: egui::TextureWrapMode::ClampToEdge,
    mipmap_mode: None,
};

impl Textures {
    /// The coloured heatmap of a `size x size` map: a 256-entry colormap over `range`
    /// (the same for every image); values below the range (and non-finite ones) are
    /// transparent so that normal tissue stays visible. Opacity is applied when drawing.
    pub fn heatmap(
        &mut self,
        ctx: &egui::Context,
        key: HeatmapKey,
        values: &[f32],
        [width, height]: [usize; 2],
    ) -> TextureHandle {
        let builds = &mut self.heatmap_builds;
        self.heatmaps.get_or_insert(key.clone(), || {
            *builds += 1;
            let (lo, hi) = (f32::from_bits(key.range.0), f32::from_bits(key.range.1));
            let lut: Vec<[u8; 3]> = (0..256)
                .map(|i| key.colormap.rgb(i as f32 / 255.0))
                .collect();
            let span = (hi - lo).max(f32::EPSILON);
            let mut rgba = Vec::with_capacity(values.len() * 4);
            for &v in values {
                if !v.is_finite() || v < lo {
                    rgba.extend_from_slice(&[0, 0, 0, 0]);
                    continue;
                }
                let t = ((v - lo) / span).clamp(0.0, 1.0);
                let [r, g, b] = lut[(t * 255.0).round() as usize];
                rgba.extend_from_slice(&[r, g, b, 255]);
            }
            ctx.load_texture(
                "heatmap",
                ColorImage::from_rgba_unmultiplied([width, height], &rgba),
                HEATMAP_OPTIONS,
            )
        })
    }

    /// The contour of a map at `level` (cached with the heatmap's key), in map pixels.
    pub fn contour(
        &mut self,
        key: HeatmapKey,
        level: f32,
        values: &[f32],
        [width, height]: [usize; 2],
    ) -> Contour {
        self.contours.get_or_insert((key, level.to_bits()), || {
            Arc::new(crate::workflow::maps::contour_rect(
                values, width, height, level,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduction_keeps_a_texel_per_screen_pixel() {
        assert_eq!(reduction_for(2.0), 1);
        assert_eq!(reduction_for(1.0), 1);
        assert_eq!(reduction_for(0.5), 2);
        assert_eq!(reduction_for(0.3), 2);
        assert_eq!(reduction_for(0.25), 4);
        assert_eq!(reduction_for(0.0), 64);
    }
}
