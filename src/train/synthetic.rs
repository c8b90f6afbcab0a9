//! Synthetic anomaly data: textured backgrounds with blob or streak anomalies and exact masks.
//!
//! Used by the learning test (fine-tuning must beat untrained adapters on held-out images) and
//! by `mvfa-studio synth-data`, which writes the plain-folder layout so a newcomer can try the
//! whole flow without patient data. Deterministic for a given seed.
//!
//! The side comes from the command line (`synth-data --size`): [`try_generate`] checks that
//! `size * size` can be allocated before drawing; indices below stay under it.
#![deny(clippy::arithmetic_side_effects)]
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One generated grey image (8-bit, row-major) with its anomaly mask (0 or 255).
#[derive(Debug, Clone)]
pub struct SyntheticImage {
    /// Side of the square image in pixels.
    pub size: usize,
    /// `size * size` grey levels, row-major.
    pub pixels: Vec<u8>,
    /// `size * size` mask values: 255 inside the anomaly, 0 elsewhere (all 0 for normal images).
    pub mask: Vec<u8>,
    /// Whether an anomaly was painted in.
    pub abnormal: bool,
}

/// The kind of defect painted into abnormal images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyKind {
    /// A bright, roughly round blob.
    Blob,
    /// A dark, thin straight streak.
    Streak,
}

/// Draws a textured background: a few random oriented sinusoids plus fine noise, so that every
/// image differs but all share the same statistics (the "normal" appearance).
#[allow(
    clippy::arithmetic_side_effects,
    reason = "y * size + x < size * size, checked by try_generate"
)]
fn background(rng: &mut ChaCha8Rng, size: usize) -> Vec<f32> {
    let waves: Vec<(f32, f32, f32, f32)> = (0..4)
        .map(|_| {
            let angle = rng.random_range(0.0..std::f32::consts::PI);
            let freq = rng.random_range(0.04..0.12);
            let phase = rng.random_range(0.0..std::f32::consts::TAU);
            let amp = rng.random_range(8.0..18.0);
            (angle, freq, phase, amp)
        })
        .collect();
    let mut out = vec![0.0; size * size];
    for y in 0..size {
        for x in 0..size {
            let mut v = 110.0;
            for &(angle, freq, phase, amp) in &waves {
                let t = x as f32 * angle.cos() + y as f32 * angle.sin();
                v += amp * (t * freq + phase).sin();
            }
            v += rng.random_range(-6.0..6.0);
            out[y * size + x] = v;
        }
    }
    out
}

/// Paints one anomaly; returns the mask (true inside the defect).
#[allow(
    clippy::arithmetic_side_effects,
    reason = "y * size + x < size * size, checked by try_generate"
)]
fn paint_anomaly(
    rng: &mut ChaCha8Rng,
    image: &mut [f32],
    size: usize,
    kind: AnomalyKind,
) -> Vec<bool> {
    let mut mask = vec![false; size * size];
    let s = size as f32;
    let cx = rng.random_range(0.2 * s..0.8 * s);
    let cy = rng.random_range(0.2 * s..0.8 * s);
    let contrast = rng.random_range(70.0..110.0);
    match kind {
        AnomalyKind::Blob => {
            let radius = rng.random_range(0.06 * s..0.12 * s);
            for y in 0..size {
                for x in 0..size {
                    let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() / radius;
                    if d < 1.0 {
                        image[y * size + x] += contrast * (1.0 - d * d).sqrt();
                        mask[y * size + x] = d < 0.8;
                    }
                }
            }
        }
        AnomalyKind::Streak => {
            let angle = rng.random_range(0.0..std::f32::consts::PI);
            let (dx, dy) = (angle.cos(), angle.sin());
            let half_length = rng.random_range(0.15 * s..0.3 * s);
            let half_width = rng.random_range(0.015 * s..0.03 * s);
            for y in 0..size {
                for x in 0..size {
                    let (px, py) = (x as f32 - cx, y as f32 - cy);
                    let along = px * dx + py * dy;
                    let across = (-px * dy + py * dx).abs();
                    if along.abs() < half_length && across < half_width {
                        image[y * size + x] -= contrast;
                        mask[y * size + x] = true;
                    }
                }
            }
        }
    }
    mask
}

/// Largest image side [`try_generate`] draws (`synth-data` accepts less).
pub const MAX_SIZE: usize = 1 << 16;

/// Generates `count` images of `size`×`size`; `abnormal` ones get a blob or a streak.
///
/// # Panics
/// When `size` exceeds [`MAX_SIZE`]; sizes from users go through [`try_generate`].
pub fn generate(seed: u64, count: usize, size: usize, abnormal: bool) -> Vec<SyntheticImage> {
    try_generate(seed, count, size, abnormal).unwrap_or_else(|e| panic!("{e}"))
}

/// A synthetic image side above [`MAX_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("synthetic images of {size} x {size} pixels are too large (at most {MAX_SIZE} a side)")]
pub struct SyntheticSizeError {
    /// The side asked for.
    pub size: usize,
}

/// [`generate`], refusing a side above [`MAX_SIZE`] (whose pixel count could overflow or
/// exhaust memory) with a message saying so.
pub fn try_generate(
    seed: u64,
    count: usize,
    size: usize,
    abnormal: bool,
) -> Result<Vec<SyntheticImage>, SyntheticSizeError> {
    if size > MAX_SIZE {
        return Err(SyntheticSizeError { size });
    }
    let pixels = size.saturating_mul(size);
    let mut rng = crate::rng::seeded(seed, crate::rng::Stream::Synthetic);
    Ok((0..count)
        .map(|i| {
            let mut image = background(&mut rng, size);
            let mask = if abnormal {
                let kind = if i % 2 == 0 {
                    AnomalyKind::Blob
                } else {
                    AnomalyKind::Streak
                };
                paint_anomaly(&mut rng, &mut image, size, kind)
            } else {
                vec![false; pixels]
            };
            SyntheticImage {
                size,
                pixels: image
                    .iter()
                    .map(|v| v.round().clamp(0.0, 255.0) as u8)
                    .collect(),
                mask: mask.iter().map(|&m| if m { 255 } else { 0 }).collect(),
                abnormal,
            }
        })
        .collect())
}

/// A synthetic volume: slices of one textured background that changes slowly along the
/// slice axis, and for an abnormal volume one ellipsoid lesion spanning several slices (faint
/// and small at its ends, like a real lesion cut obliquely by thin slices). For measuring
/// context across slices ([`crate::eval::slice_context`]) and for `synth-data --volumes`.
#[derive(Debug, Clone)]
pub struct SyntheticVolume {
    /// The slices in order; each slice's mask marks the lesion on it (`abnormal` is whether
    /// that slice shows lesion).
    pub slices: Vec<SyntheticImage>,
    /// Whether the volume holds a lesion.
    pub abnormal: bool,
}

/// Draws one volume of `slices` slices of `size` x `size` pixels; the lesion of an abnormal
/// volume shows on 2 to 7 adjacent slices (fewer when the volume is thinner) and lies inside
/// the volume.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "y * size + x < size * size, checked against MAX_SIZE first"
)]
pub fn generate_volume(
    seed: u64,
    slices: usize,
    size: usize,
    abnormal: bool,
) -> Result<SyntheticVolume, SyntheticSizeError> {
    if size > MAX_SIZE {
        return Err(SyntheticSizeError { size });
    }
    let mut rng = crate::rng::seeded(seed, crate::rng::Stream::SyntheticVolume);
    // (angle, frequency, phase, amplitude, phase step per slice)
    let waves: Vec<[f32; 5]> = (0..4)
        .map(|_| {
            [
                rng.random_range(0.0..std::f32::consts::PI),
                rng.random_range(0.04..0.12),
                rng.random_range(0.0..std::f32::consts::TAU),
                rng.random_range(8.0..18.0),
                rng.random_range(0.1..0.4),
            ]
        })
        .collect();
    let s = size as f32;
    let lesion = abnormal.then(|| {
        let half_depth = rng.random_range(1.5f32..3.5).min(slices as f32 / 2.0);
        let lo = half_depth - 0.5;
        let hi = (slices as f32 - half_depth - 0.5).max(lo + 1e-3);
        [
            rng.random_range(0.25 * s..0.75 * s),
            rng.random_range(0.25 * s..0.75 * s),
            rng.random_range(lo..hi),
            rng.random_range(0.07 * s..0.13 * s),
            half_depth,
            rng.random_range(45.0..85.0),
        ]
    });
    let mut out = Vec::with_capacity(slices);
    for z in 0..slices {
        let mut image = vec![0.0f32; size * size];
        let mut mask = vec![0u8; size * size];
        for y in 0..size {
            for x in 0..size {
                let mut v = 110.0;
                for &[angle, freq, phase, amp, step] in &waves {
                    let t = x as f32 * angle.cos() + y as f32 * angle.sin();
                    v += amp * (t * freq + phase + step * z as f32).sin();
                }
                image[y * size + x] = v + rng.random_range(-6.0..6.0);
            }
        }
        if let Some([cx, cy, cz, radius, half_depth, contrast]) = lesion {
            let dz = (z as f32 - cz) / half_depth;
            if dz.abs() < 1.0 {
                let r = radius * (1.0 - dz * dz).sqrt();
                let strength = contrast * (1.0 - dz * dz).sqrt();
                for y in 0..size {
                    for x in 0..size {
                        let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() / r;
                        if d < 1.0 {
                            image[y * size + x] += strength * (1.0 - d * d).sqrt();
                            if d < 0.8 {
                                mask[y * size + x] = 255;
                            }
                        }
                    }
                }
            }
        }
        let shows = mask.contains(&255);
        out.push(SyntheticImage {
            size,
            pixels: image
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
            mask,
            abnormal: shows,
        });
    }
    Ok(SyntheticVolume {
        slices: out,
        abnormal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_masks_only_on_abnormal_images() {
        let a = generate(7, 3, 64, true);
        let b = generate(7, 3, 64, true);
        assert_eq!(a[2].pixels, b[2].pixels);
        assert!(a.iter().all(|img| img.mask.contains(&255)));
        let normal = generate(8, 2, 64, false);
        assert!(normal.iter().all(|img| img.mask.iter().all(|&m| m == 0)));
        assert_ne!(normal[0].pixels, normal[1].pixels);
    }

    #[test]
    fn volume_lesions_span_several_adjacent_slices() {
        for seed in 0..20 {
            let v = generate_volume(seed, 12, 48, true).unwrap();
            let shows: Vec<usize> = (0..12).filter(|&z| v.slices[z].abnormal).collect();
            assert!((2..=7).contains(&shows.len()), "seed {seed}: {shows:?}");
            assert_eq!(
                shows.last().unwrap() - shows[0] + 1,
                shows.len(),
                "contiguous"
            );
            let normal = generate_volume(seed, 12, 48, false).unwrap();
            assert!(normal.slices.iter().all(|s| !s.abnormal));
            // Neighbouring slices look alike: closer than slices far apart.
            let diff = |a: &SyntheticImage, b: &SyntheticImage| -> i64 {
                a.pixels
                    .iter()
                    .zip(&b.pixels)
                    .map(|(&x, &y)| (i64::from(x) - i64::from(y)).abs())
                    .sum()
            };
            let s = &normal.slices;
            assert!(diff(&s[0], &s[1]) < diff(&s[0], &s[11]), "seed {seed}");
        }
        let a = generate_volume(3, 4, 32, true).unwrap();
        let b = generate_volume(3, 4, 32, true).unwrap();
        assert_eq!(a.slices[2].pixels, b.slices[2].pixels);
    }

    #[test]
    fn absurd_sides_are_errors() {
        let e = try_generate(1, 1, usize::MAX, true).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        assert_eq!(try_generate(1, 2, 40, false).unwrap().len(), 2);
    }
}
