//! Few-shot augmentation of spec 7.2: a group of k shots becomes 11k training images (and the
//! same warps of their masks).
//!
//! Output order, block by block, each block holding the k inputs in their order:
//! `[original | rot −π/8 | rot −π/16 | rot +π/16 | rot +π/8 | shift (0.1, 0.1) |
//! shift (−0.1, 0.1) | shift (−0.1, −0.1) | shift (0.1, −0.1) | hflip | vflip]`.
//!
//! Rotations and shifts reproduce torch's `F.affine_grid(theta, size, align_corners=False)`
//! followed by `F.grid_sample(mode="bilinear", padding_mode="reflection",
//! align_corners=False)`: output pixel centre p (in normalised coordinates, [−1, 1] spanning
//! the image edges) samples the input at θ·[p, 1], reflected at the image edges and
//! interpolated bilinearly. Masks go through the same bilinear warps, so their edges become
//! soft (the loss binarises them at 0.5).
//!
//! This is data preparation done once per training run on a few images, so it works on host
//! `Vec<f32>` planes in plain loops. Coordinates and weights are computed in f64 and the output
//! rounded to f32; torch computes them in f32, so outputs differ from torch by float rounding
//! only (≤ 5e-6 on random [0, 1] images, see `tests/augment.rs`).

/// One image as planes: `channels` planes of `height` rows of `width` f32 samples (CHW,
/// row-major). Masks are single-plane images.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    /// Number of planes (3 for RGB, 1 for a mask).
    pub channels: usize,
    /// Rows per plane.
    pub height: usize,
    /// Samples per row.
    pub width: usize,
    /// `channels * height * width` samples.
    pub data: Vec<f32>,
}

/// Bad input to the augmentation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AugmentError {
    /// The sample count does not match `channels * height * width`.
    #[error("{what} {index}: {len} samples, but {channels}x{height}x{width} needs {expected}")]
    BadLength {
        /// `image` or `mask`.
        what: &'static str,
        /// Index of the input in its group.
        index: usize,
        /// Samples present.
        len: usize,
        /// Declared planes.
        channels: usize,
        /// Declared rows.
        height: usize,
        /// Declared columns.
        width: usize,
        /// Samples required (`channels * height * width`).
        expected: usize,
    },
    /// An input with a zero dimension.
    #[error("{what} {index} is empty ({channels}x{height}x{width})")]
    Empty {
        /// `image` or `mask`.
        what: &'static str,
        /// Index of the input in its group.
        index: usize,
        /// Declared planes.
        channels: usize,
        /// Declared rows.
        height: usize,
        /// Declared columns.
        width: usize,
    },
    #[error("{images} images but {masks} masks")]
    /// Masks were given, but not one per image.
    CountMismatch {
        /// Images given.
        images: usize,
        /// Masks given.
        masks: usize,
    },
    /// A mask is not a single plane of its image's height and width.
    #[error(
        "mask {index} is {mask_channels}x{mask_height}x{mask_width}; it must be one plane of its image's {height}x{width}"
    )]
    MaskShape {
        /// Index of the mask (and its image).
        index: usize,
        /// Planes of the mask.
        mask_channels: usize,
        /// Rows of the mask.
        mask_height: usize,
        /// Columns of the mask.
        mask_width: usize,
        /// Rows of the image.
        height: usize,
        /// Columns of the image.
        width: usize,
    },
}

impl Planar {
    /// Checks that `data` holds exactly `channels * height * width` samples.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        data: Vec<f32>,
    ) -> Result<Self, AugmentError> {
        let p = Planar {
            channels,
            height,
            width,
            data,
        };
        p.validate("image", 0)?;
        Ok(p)
    }

    fn validate(&self, what: &'static str, index: usize) -> Result<(), AugmentError> {
        let expected = self.channels * self.height * self.width;
        if expected == 0 {
            return Err(AugmentError::Empty {
                what,
                index,
                channels: self.channels,
                height: self.height,
                width: self.width,
            });
        }
        if self.data.len() != expected {
            return Err(AugmentError::BadLength {
                what,
                index,
                len: self.data.len(),
                channels: self.channels,
                height: self.height,
                width: self.width,
                expected,
            });
        }
        Ok(())
    }
}

/// One geometric transform of the augmentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Augmentation {
    /// The input unchanged.
    Identity,
    /// `output(p) = input(θ·[p, 1])` in normalised coordinates, bilinear, reflection padding
    /// (torch `affine_grid` + `grid_sample`, align_corners=False). `theta` is the 2×3 matrix.
    Affine {
        /// The 2×3 matrix θ, rows `[a, b, tx]` and `[c, d, ty]`.
        theta: [[f32; 3]; 2],
    },
    /// Mirror left–right.
    HFlip,
    /// Mirror top–bottom.
    VFlip,
}

impl Augmentation {
    /// Rotation matrix `[[cos, −sin, 0], [sin, cos, 0]]` for `angle` radians (cos and sin
    /// rounded to f32 from f64).
    pub fn rotation(angle: f32) -> Self {
        let (s, c) = (angle as f64).sin_cos();
        Self::rotation_from(c as f32, s as f32)
    }

    fn rotation_from(cos: f32, sin: f32) -> Self {
        Augmentation::Affine {
            theta: [[cos, -sin, 0.0], [sin, cos, 0.0]],
        }
    }

    /// Shift matrix `[[1, 0, a], [0, 1, b]]`: output(p) = input(p + (a, b)), so content moves
    /// by −a, −b (0.1 normalised = 5% of the side, 12 px at 240).
    pub fn shift(a: f32, b: f32) -> Self {
        Augmentation::Affine {
            theta: [[1.0, 0.0, a], [0.0, 1.0, b]],
        }
    }

    /// Applies this transform to one image (any channel count and size).
    pub fn apply(&self, img: &Planar) -> Planar {
        match self {
            Augmentation::Identity => img.clone(),
            Augmentation::Affine { theta } => affine_sample(img, theta),
            Augmentation::HFlip => flip(img, true),
            Augmentation::VFlip => flip(img, false),
        }
    }
}

/// The eleven transforms of spec 7.2 in output order.
///
/// The rotation entries are the float32 values the reference gets from
/// `torch.cos(torch.tensor(±π/8))` etc. (the angle is a float32 tensor; torch's float32 cos of
/// π/16 is one ulp above the correctly rounded value, so the bits are spelled out rather than
/// recomputed).
pub fn few_shot_augmentations() -> [Augmentation; 11] {
    let cos8 = f32::from_bits(1_064_076_126); // 0.9238795
    let sin8 = f32::from_bits(1_053_028_118); // 0.38268346
    let cos16 = f32::from_bits(1_065_030_847); // 0.9807853
    let sin16 = f32::from_bits(1_044_891_074); // 0.19509032
    [
        Augmentation::Identity,
        Augmentation::rotation_from(cos8, -sin8),
        Augmentation::rotation_from(cos16, -sin16),
        Augmentation::rotation_from(cos16, sin16),
        Augmentation::rotation_from(cos8, sin8),
        Augmentation::shift(0.1, 0.1),
        Augmentation::shift(-0.1, 0.1),
        Augmentation::shift(-0.1, -0.1),
        Augmentation::shift(0.1, -0.1),
        Augmentation::HFlip,
        Augmentation::VFlip,
    ]
}

/// Number of outputs per input image.
pub const AUGMENT_FACTOR: usize = 11;

/// Augments a group of k images to 11k, block by block in the order of
/// [`few_shot_augmentations`] (output `b * k + i` is transform `b` of input `i`).
pub fn augment_group(images: &[Planar]) -> Result<Vec<Planar>, AugmentError> {
    for (i, img) in images.iter().enumerate() {
        img.validate("image", i)?;
    }
    Ok(few_shot_augmentations()
        .iter()
        .flat_map(|op| images.iter().map(move |img| op.apply(img)))
        .collect())
}

/// Augments images and their masks together (same order, same transforms). Each mask must be
/// one plane of its image's height and width. Returns `(images, masks)`, each 11k long.
pub fn augment_group_with_masks(
    images: &[Planar],
    masks: &[Planar],
) -> Result<(Vec<Planar>, Vec<Planar>), AugmentError> {
    if images.len() != masks.len() {
        return Err(AugmentError::CountMismatch {
            images: images.len(),
            masks: masks.len(),
        });
    }
    for (i, (img, mask)) in images.iter().zip(masks).enumerate() {
        img.validate("image", i)?;
        mask.validate("mask", i)?;
        if mask.channels != 1 || mask.height != img.height || mask.width != img.width {
            return Err(AugmentError::MaskShape {
                index: i,
                mask_channels: mask.channels,
                mask_height: mask.height,
                mask_width: mask.width,
                height: img.height,
                width: img.width,
            });
        }
    }
    Ok((augment_group(images)?, augment_group(masks)?))
}

fn flip(img: &Planar, horizontal: bool) -> Planar {
    let (h, w) = (img.height, img.width);
    let mut out = vec![0.0f32; img.data.len()];
    for c in 0..img.channels {
        let plane = &img.data[c * h * w..(c + 1) * h * w];
        let dst = &mut out[c * h * w..(c + 1) * h * w];
        for y in 0..h {
            let sy = if horizontal { y } else { h - 1 - y };
            let src_row = &plane[sy * w..(sy + 1) * w];
            let dst_row = &mut dst[y * w..(y + 1) * w];
            if horizontal {
                for (d, s) in dst_row.iter_mut().zip(src_row.iter().rev()) {
                    *d = *s;
                }
            } else {
                dst_row.copy_from_slice(src_row);
            }
        }
    }
    Planar {
        channels: img.channels,
        height: h,
        width: w,
        data: out,
    }
}

/// Reflects a pixel coordinate into `[0, size − 1]` the way `grid_sample` does with
/// `padding_mode="reflection", align_corners=False`: mirror about the image edges −0.5 and
/// size − 0.5 (repeatedly), then clip to the outermost pixel centres.
fn reflect(coord: f64, size: usize) -> f64 {
    let span = size as f64;
    let v = (coord + 0.5).abs();
    let extra = v % span;
    let flips = (v / span).floor() as i64;
    let r = if flips % 2 == 0 {
        extra - 0.5
    } else {
        span - extra - 0.5
    };
    r.clamp(0.0, span - 1.0)
}

/// Source position (fractional pixel index) for every output column or row: maps normalised
/// coordinates to pixels (align_corners=False: −1 ↦ −0.5, +1 ↦ size − 0.5).
#[inline]
fn unnormalize(g: f64, size: usize) -> f64 {
    ((g + 1.0) * size as f64 - 1.0) / 2.0
}

/// torch `affine_grid` + bilinear, reflection-padded `grid_sample`, align_corners=False.
fn affine_sample(img: &Planar, theta: &[[f32; 3]; 2]) -> Planar {
    let (c, h, w) = (img.channels, img.height, img.width);
    let t = theta.map(|row| row.map(f64::from));
    let mut out = vec![0.0f32; img.data.len()];
    for y in 0..h {
        // Output pixel centres in normalised coordinates.
        let gy0 = (2 * y + 1) as f64 / h as f64 - 1.0;
        for x in 0..w {
            let gx0 = (2 * x + 1) as f64 / w as f64 - 1.0;
            let gx = t[0][0] * gx0 + t[0][1] * gy0 + t[0][2];
            let gy = t[1][0] * gx0 + t[1][1] * gy0 + t[1][2];
            let ix = reflect(unnormalize(gx, w), w);
            let iy = reflect(unnormalize(gy, h), h);
            let (x0, y0) = (ix.floor() as usize, iy.floor() as usize);
            let (wx, wy) = (ix - x0 as f64, iy - y0 as f64);
            // After clipping, x0 ≤ w − 1; the right/bottom neighbour only matters when its
            // weight is non-zero, which implies it is inside.
            let x1 = (x0 + 1).min(w - 1);
            let y1 = (y0 + 1).min(h - 1);
            let (w00, w01) = ((1.0 - wx) * (1.0 - wy), wx * (1.0 - wy));
            let (w10, w11) = ((1.0 - wx) * wy, wx * wy);
            for ch in 0..c {
                let p = &img.data[ch * h * w..(ch + 1) * h * w];
                let v = p[y0 * w + x0] as f64 * w00
                    + p[y0 * w + x1] as f64 * w01
                    + p[y1 * w + x0] as f64 * w10
                    + p[y1 * w + x1] as f64 * w11;
                out[ch * h * w + y * w + x] = v as f32;
            }
        }
    }
    Planar {
        channels: c,
        height: h,
        width: w,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_mirror_about_edges() {
        // size 4: valid centres 0..3, edges at -0.5 and 3.5.
        assert_eq!(reflect(1.25, 4), 1.25);
        // Inside the edge pixel's outer half: mirrors to itself, then clips to the centre.
        assert_eq!(reflect(-0.25, 4), 0.0);
        // Mirror about -0.5.
        assert_eq!(reflect(-1.5, 4), 0.5);
        // Mirror about 3.5.
        assert_eq!(reflect(4.0, 4), 3.0);
        // Two mirrors: 8.0 → -1.0 (about 3.5) → 0.0 (about -0.5).
        assert_eq!(reflect(8.0, 4), 0.0);
    }

    #[test]
    fn identity_affine_is_exact() {
        let img = Planar::new(2, 3, 5, (0..30).map(|v| v as f32 / 29.0).collect()).unwrap();
        let out = Augmentation::shift(0.0, 0.0).apply(&img);
        for (a, b) in out.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}
