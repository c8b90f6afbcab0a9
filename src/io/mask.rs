//! Lesion masks at an image's own resolution: the in-memory form the labelling tools paint
//! into, PNG encoding for project files, and import of a mask drawn in another tool.
//!
//! A mask is one byte per pixel (0 or 1) so that painting, undo patches and PNG encoding are
//! plain slices; a 4k x 4k radiograph costs 16 MB per mask, which is acceptable for the
//! handful of abnormal shots a few-shot project holds.
use std::io::Cursor;
use std::path::Path;

use super::input::{InputError, load_stack};

/// A binary mask, `height` rows of `width` pixels, row-major, 1 = lesion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels (the image's own width).
    pub width: u32,
    /// Height in pixels (the image's own height).
    pub height: u32,
    data: Vec<u8>,
}

/// A pixel rectangle `[x0, x1) x [y0, y1)` inside a mask: what one edit touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    /// Left edge, inclusive.
    pub x0: u32,
    /// Top edge, inclusive.
    pub y0: u32,
    /// Right edge, exclusive.
    pub x1: u32,
    /// Bottom edge, exclusive.
    pub y1: u32,
}

impl PixelRect {
    /// Whether the rectangle holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.x0 >= self.x1 || self.y0 >= self.y1
    }

    /// The smallest rectangle holding both (an empty one is ignored).
    pub fn union(self, other: PixelRect) -> PixelRect {
        if self.is_empty() {
            return other;
        }
        if other.is_empty() {
            return self;
        }
        PixelRect {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }

    /// A rectangle holding no pixel (the start of a union).
    pub const EMPTY: PixelRect = PixelRect {
        x0: 0,
        y0: 0,
        x1: 0,
        y1: 0,
    };
}

impl Mask {
    /// An empty (all background) mask.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            data: vec![0; width as usize * height as usize],
        }
    }

    /// Whether pixel (x, y) is lesion; false outside the mask.
    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.data[self.index(x, y)] != 0
    }

    /// Number of lesion pixels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    /// Row-major 0/1 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    fn index(&self, x: u32, y: u32) -> usize {
        y as usize * self.width as usize + x as usize
    }

    /// Sets every pixel within `radius` of the segment `a`-`b` (image pixel coordinates,
    /// pixel centres at +0.5) to `value`; returns the rectangle it may have changed. A brush
    /// stroke is a chain of such segments, so fast mouse moves leave no gaps.
    pub fn paint_segment(
        &mut self,
        a: [f32; 2],
        b: [f32; 2],
        radius: f32,
        value: bool,
    ) -> PixelRect {
        let radius = radius.max(0.5);
        let rect = self.clip(
            a[0].min(b[0]) - radius,
            a[1].min(b[1]) - radius,
            a[0].max(b[0]) + radius,
            a[1].max(b[1]) + radius,
        );
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len2 = dx * dx + dy * dy;
        let r2 = radius * radius;
        for y in rect.y0..rect.y1 {
            for x in rect.x0..rect.x1 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = if len2 > 0.0 {
                    (((px - a[0]) * dx + (py - a[1]) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (cx, cy) = (a[0] + t * dx - px, a[1] + t * dy - py);
                if cx * cx + cy * cy <= r2 {
                    let i = self.index(x, y);
                    self.data[i] = value as u8;
                }
            }
        }
        rect
    }

    /// Sets the inside of the closed polygon `points` (even-odd rule, tested at pixel
    /// centres) to `value`; returns the rectangle it may have changed. This is "fill a closed
    /// outline": the user draws the outline, the inside becomes lesion.
    pub fn fill_polygon(&mut self, points: &[[f32; 2]], value: bool) -> PixelRect {
        if points.len() < 3 {
            return PixelRect::EMPTY;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in points {
            x0 = x0.min(p[0]);
            y0 = y0.min(p[1]);
            x1 = x1.max(p[0]);
            y1 = y1.max(p[1]);
        }
        let rect = self.clip(x0, y0, x1, y1);
        let mut crossings = Vec::new();
        for y in rect.y0..rect.y1 {
            let py = y as f32 + 0.5;
            crossings.clear();
            for (i, p) in points.iter().enumerate() {
                let q = points[(i + 1) % points.len()];
                if (p[1] <= py) != (q[1] <= py) {
                    crossings.push(p[0] + (py - p[1]) / (q[1] - p[1]) * (q[0] - p[0]));
                }
            }
            crossings.sort_by(f32::total_cmp);
            for pair in crossings.chunks_exact(2) {
                for x in rect.x0..rect.x1 {
                    let px = x as f32 + 0.5;
                    if px >= pair[0] && px < pair[1] {
                        let i = self.index(x, y);
                        self.data[i] = value as u8;
                    }
                }
            }
        }
        rect
    }

    /// A copy of the pixels of `rect` (row-major), for undo.
    pub fn region(&self, rect: PixelRect) -> Vec<u8> {
        let mut out = Vec::with_capacity(((rect.x1 - rect.x0) * (rect.y1 - rect.y0)) as usize);
        for y in rect.y0..rect.y1 {
            let start = self.index(rect.x0, y);
            out.extend_from_slice(&self.data[start..start + (rect.x1 - rect.x0) as usize]);
        }
        out
    }

    /// Writes back pixels taken by [`Mask::region`] for the same rectangle.
    pub fn set_region(&mut self, rect: PixelRect, pixels: &[u8]) {
        let w = (rect.x1 - rect.x0) as usize;
        for (row, y) in (rect.y0..rect.y1).enumerate() {
            let start = self.index(rect.x0, y);
            self.data[start..start + w].copy_from_slice(&pixels[row * w..(row + 1) * w]);
        }
    }

    /// The pixel rectangle covering the float box, clipped to the mask.
    fn clip(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> PixelRect {
        let clamp = |v: f32, max: u32| v.max(0.0).min(max as f32) as u32;
        PixelRect {
            x0: clamp(x0.floor(), self.width),
            y0: clamp(y0.floor(), self.height),
            x1: clamp(x1.ceil() + 1.0, self.width),
            y1: clamp(y1.ceil() + 1.0, self.height),
        }
    }

    /// An 8-bit grey PNG (0 / 255) of the mask: what project files and exports store.
    pub fn to_png(&self) -> Result<Vec<u8>, MaskPngError> {
        let grey: Vec<u8> = self.data.iter().map(|&v| v * 255).collect();
        let img = ::image::GrayImage::from_raw(self.width, self.height, grey)
            .ok_or(MaskPngError::Size)?;
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ::image::ImageFormat::Png)
            .map_err(MaskPngError::Encode)?;
        Ok(out.into_inner())
    }

    /// Decodes a PNG written by [`Mask::to_png`] (any grey or colour PNG: lesion where the
    /// grey level is above 127).
    pub fn from_png(bytes: &[u8]) -> Result<Mask, MaskPngError> {
        let img = ::image::load_from_memory_with_format(bytes, ::image::ImageFormat::Png)
            .map_err(MaskPngError::Decode)?
            .to_luma8();
        let (width, height) = img.dimensions();
        let data = img
            .into_raw()
            .into_iter()
            .map(|v| (v > 127) as u8)
            .collect();
        Ok(Mask {
            width,
            height,
            data,
        })
    }
}

/// Why a mask could not be stored as, or read from, a PNG.
#[derive(Debug, thiserror::Error)]
pub enum MaskPngError {
    /// The mask's data is not `width * height` values.
    #[error("mask buffer does not match its size")]
    Size,
    /// The PNG encoder failed.
    #[error("cannot encode the mask as PNG: {0}")]
    Encode(::image::ImageError),
    /// The bytes are not a PNG the decoder reads.
    #[error("cannot decode the mask PNG: {0}")]
    Decode(::image::ImageError),
}

/// Reads a mask drawn elsewhere (any image the loaders read: PNG, TIFF, DICOM, ...) for an
/// image of `width` x `height`: lesion where the first frame's value is above zero. A mask of
/// another size is resized with nearest neighbour so that it is stored at the image's own
/// resolution; the returned note says so.
pub fn import_mask(
    path: &Path,
    width: u32,
    height: u32,
) -> Result<(Mask, Option<String>), InputError> {
    let stack = load_stack(path)?;
    let frame = stack.frames.first().ok_or_else(|| InputError {
        path: path.to_path_buf(),
        message: "the file holds no image".into(),
    })?;
    let nch = frame.channels.count();
    let (fw, fh) = (frame.width, frame.height);
    if fw == 0 || fh == 0 || width == 0 || height == 0 {
        return Err(InputError {
            path: path.to_path_buf(),
            message: "empty image".into(),
        });
    }
    let mut mask = Mask::new(width, height);
    for y in 0..height {
        let sy = (y as u64 * fh as u64 / height as u64) as usize;
        for x in 0..width {
            let sx = (x as u64 * fw as u64 / width as u64) as usize;
            let start = (sy * fw as usize + sx) * nch;
            let on = frame.data[start..start + nch].iter().any(|&v| v > 0.0);
            let i = mask.index(x, y);
            mask.data[i] = on as u8;
        }
    }
    let note = (fw != width || fh != height).then(|| {
        format!("the mask is {fw}x{fh}, the image {width}x{height}: resized (nearest neighbour)")
    });
    Ok((mask, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_paints_a_capsule_and_erasing_restores() {
        let mut m = Mask::new(20, 10);
        let rect = m.paint_segment([2.5, 5.5], [15.5, 5.5], 1.0, true);
        assert!(m.get(2, 5) && m.get(15, 5) && m.get(9, 4) && m.get(9, 6));
        assert!(!m.get(9, 7) && !m.get(17, 5));
        assert!(rect.x0 <= 1 && rect.x1 >= 16, "{rect:?}");
        m.paint_segment([0.0, 0.0], [20.0, 10.0], 30.0, false);
        assert_eq!(m.count(), 0);
    }

    #[test]
    fn a_closed_outline_fills_its_inside_only() {
        let mut m = Mask::new(10, 10);
        m.fill_polygon(&[[2.0, 2.0], [8.0, 2.0], [8.0, 8.0], [2.0, 8.0]], true);
        assert_eq!(m.count(), 36);
        assert!(m.get(2, 2) && m.get(7, 7) && !m.get(8, 8) && !m.get(1, 5));
    }

    #[test]
    fn regions_round_trip_for_undo() {
        let mut m = Mask::new(8, 8);
        let rect = m.paint_segment([4.0, 4.0], [4.0, 4.0], 2.0, true);
        let after = m.region(rect);
        m.set_region(rect, &vec![0; after.len()]);
        assert_eq!(m.count(), 0);
        m.set_region(rect, &after);
        assert!(m.count() > 0);
    }

    #[test]
    fn png_round_trip_and_import_with_resize() {
        let mut m = Mask::new(6, 4);
        m.fill_polygon(&[[0.0, 0.0], [3.0, 0.0], [3.0, 4.0], [0.0, 4.0]], true);
        let png = m.to_png().unwrap();
        assert_eq!(Mask::from_png(&png).unwrap(), m);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mask.png");
        std::fs::write(&path, &png).unwrap();
        let (same, note) = import_mask(&path, 6, 4).unwrap();
        assert_eq!(same, m);
        assert!(note.is_none());
        let (big, note) = import_mask(&path, 12, 8).unwrap();
        assert_eq!(big.count(), 4 * m.count());
        assert!(note.unwrap().contains("6x4"));
        assert!(import_mask(&dir.path().join("none.png"), 6, 4).is_err());
    }
}
