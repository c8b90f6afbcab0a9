//! The anomaly maps a result offers for display and export, each on a scale that is the same
//! for every image (never a per-image min-max).
//!
//! - With a calibration, every layer is in robust-z units of the normal exemplars ("how many
//!   normal spreads above a typical normal exemplar", see [`crate::model::mvfa::calibration`]):
//!   the fused map as stored, a branch map through its branch statistics, and one level of a
//!   branch as if it were the whole branch, `(L * level - median) / scale` for `L` levels, so
//!   that the mean of a branch's level maps is the branch map.
//! - Without one (a zero-shot detector with no normal shot yet), the raw per-level values are
//!   probabilities (zero-shot) or halved cosine distances (few-shot), both in 0..=1; a branch
//!   map is shown as the mean of its levels, in the same units.
use serde::{Deserialize, Serialize};

use crate::model::mvfa::calibration::{BranchStats, Calibration};
use crate::model::mvfa::detector::ImageResult;

/// The zero-shot (text prompts) or few-shot (memory bank) branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Branch {
    /// Adapted patch tokens compared with the text embeddings.
    ZeroShot,
    /// Adapted patch tokens compared with the normal memory bank.
    FewShot,
}

impl Branch {
    /// Short name for menus and file names.
    pub fn label(self) -> &'static str {
        match self {
            Branch::ZeroShot => "zero-shot",
            Branch::FewShot => "few-shot",
        }
    }
}

/// Levels an MVFA detector taps (after blocks 6, 12, 18 and 24 of ViT-L/14): the most a
/// result has. Smaller test configurations tap fewer.
pub const MAX_LEVELS: usize = 4;

/// One map of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum MapLayer {
    /// Calibrated fusion of both branches (what the image score is taken from).
    #[default]
    Fused,
    /// A branch summed over its levels.
    Branch(Branch),
    /// One level (0-based tap index) of a branch.
    Level(Branch, usize),
}

impl MapLayer {
    /// Every layer of a detector with `levels` tapped levels, in the order offered to users.
    pub fn all(levels: usize) -> Vec<MapLayer> {
        let mut out = vec![
            MapLayer::Fused,
            MapLayer::Branch(Branch::ZeroShot),
            MapLayer::Branch(Branch::FewShot),
        ];
        for branch in [Branch::ZeroShot, Branch::FewShot] {
            out.extend((0..levels).map(|l| MapLayer::Level(branch, l)));
        }
        out
    }

    /// Name for menus, legends and file names ("fused", "few-shot level 2").
    pub fn label(self) -> String {
        match self {
            MapLayer::Fused => "fused".into(),
            MapLayer::Branch(b) => b.label().into(),
            MapLayer::Level(b, l) => format!("{} level {}", b.label(), l + 1),
        }
    }
}

/// The units of a [`LayerMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapScale {
    /// Robust z-score against the normal exemplars of the calibration.
    Calibrated,
    /// Uncalibrated level values in 0..=1.
    Raw,
}

impl MapScale {
    /// Legend caption of the units.
    pub fn caption(self) -> &'static str {
        match self {
            MapScale::Calibrated => "calibrated (normal spreads)",
            MapScale::Raw => "uncalibrated (0-1)",
        }
    }

    /// The default colour range of the legend: the same for every image.
    pub fn default_range(self) -> (f32, f32) {
        match self {
            MapScale::Calibrated => (0.0, 8.0),
            MapScale::Raw => (0.0, 1.0),
        }
    }
}

/// One layer's values at model resolution (`S * S`, row-major) and their units.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMap {
    /// The map, row-major at model resolution.
    pub values: Vec<f32>,
    /// What the values mean.
    pub scale: MapScale,
}

/// The map of `layer`, or the zero-shot branch where `layer` is the fused map and the detector
/// is uncalibrated: the map every export draws and the Python package returns.
pub fn layer_or_zero_shot(
    result: &ImageResult,
    calibration: Option<&Calibration>,
    layer: MapLayer,
) -> (MapLayer, Option<LayerMap>) {
    match layer_map(result, calibration, layer) {
        None if layer == MapLayer::Fused => {
            let zero = MapLayer::Branch(Branch::ZeroShot);
            (zero, layer_map(result, calibration, zero))
        }
        map => (layer, map),
    }
}

/// The map of `layer` from `result`, on the scale the module docs describe; `None` when the
/// result lacks it (few-shot without a memory bank, fused without a calibration, a level past
/// the last).
pub fn layer_map(
    result: &ImageResult,
    calibration: Option<&Calibration>,
    layer: MapLayer,
) -> Option<LayerMap> {
    let raw = &result.raw;
    let levels_of = |branch: Branch| match branch {
        Branch::ZeroShot => &raw.zero_map_levels,
        Branch::FewShot => &raw.few_map_levels,
    };
    let stats_of = |cal: &Calibration, branch: Branch| -> Option<BranchStats> {
        match branch {
            Branch::ZeroShot => Some(cal.zero_map),
            Branch::FewShot => cal.few_map,
        }
    };
    match layer {
        MapLayer::Fused => result.fused_map.clone().map(|values| LayerMap {
            values,
            scale: MapScale::Calibrated,
        }),
        MapLayer::Branch(branch) => {
            let levels = levels_of(branch);
            if levels.is_empty() {
                return None;
            }
            let sum: Vec<f32> = match branch {
                Branch::ZeroShot => raw.zero_map.clone(),
                Branch::FewShot => raw.few_map.clone()?,
            };
            Some(match calibration.and_then(|c| stats_of(c, branch)) {
                Some(stats) => LayerMap {
                    values: sum.iter().map(|&v| stats.normalise(v)).collect(),
                    scale: MapScale::Calibrated,
                },
                None => {
                    let n = levels.len() as f32;
                    LayerMap {
                        values: sum.iter().map(|&v| v / n).collect(),
                        scale: MapScale::Raw,
                    }
                }
            })
        }
        MapLayer::Level(branch, level) => {
            let levels = levels_of(branch);
            let map = levels.get(level)?;
            let n = levels.len() as f32;
            Some(match calibration.and_then(|c| stats_of(c, branch)) {
                Some(stats) => LayerMap {
                    values: map.iter().map(|&v| stats.normalise(n * v)).collect(),
                    scale: MapScale::Calibrated,
                },
                None => LayerMap {
                    values: map.clone(),
                    scale: MapScale::Raw,
                },
            })
        }
    }
}

/// Bilinear sample of a `size x size` map at map coordinates `(x, y)` in pixels of the map
/// (pixel centres at `i + 0.5`), with edge clamping: what the reference's display resize
/// (`align_corners = false`) computes at one point.
pub fn sample(values: &[f32], size: usize, x: f32, y: f32) -> f32 {
    let coord = |v: f32| {
        let c = (v - 0.5).clamp(0.0, (size - 1) as f32);
        let i0 = c.floor() as usize;
        let i1 = (i0 + 1).min(size - 1);
        (i0, i1, c - i0 as f32)
    };
    let (x0, x1, fx) = coord(x);
    let (y0, y1, fy) = coord(y);
    let at = |x: usize, y: usize| values[y * size + x];
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The map resized to `width x height` (row-major), bilinear with half-pixel centres like
/// [`crate::workflow::map_at_original`], without a tensor backend.
pub fn resize(values: &[f32], size: usize, width: usize, height: usize) -> Vec<f32> {
    let (sx, sy) = (size as f32 / width as f32, size as f32 / height as f32);
    let mut out = Vec::with_capacity(width * height);
    for row in 0..height {
        let y = (row as f32 + 0.5) * sy;
        for col in 0..width {
            out.push(sample(values, size, (col as f32 + 0.5) * sx, y));
        }
    }
    out
}

/// Line segments where the bilinearly interpolated map crosses `level` (marching squares
/// between pixel centres), in map pixel coordinates (centres at `i + 0.5`).
pub fn contour(values: &[f32], size: usize, level: f32) -> Vec<[[f32; 2]; 2]> {
    contour_rect(values, size, size, level)
}

/// [`contour`] of a `width x height` map.
pub fn contour_rect(values: &[f32], width: usize, height: usize, level: f32) -> Vec<[[f32; 2]; 2]> {
    let mut segments = Vec::new();
    if width < 2 || height < 2 || values.len() != width * height {
        return segments;
    }
    let at = |x: usize, y: usize| values[y * width + x];
    // Where the edge from a to b crosses the level, as a fraction from a.
    let cross = |a: f32, b: f32| ((level - a) / (b - a)).clamp(0.0, 1.0);
    for y in 0..height - 1 {
        for x in 0..width - 1 {
            let (tl, tr, br, bl) = (at(x, y), at(x + 1, y), at(x + 1, y + 1), at(x, y + 1));
            let case = (tl >= level) as u8
                | ((tr >= level) as u8) << 1
                | ((br >= level) as u8) << 2
                | ((bl >= level) as u8) << 3;
            if case == 0 || case == 15 {
                continue;
            }
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let top = [fx + cross(tl, tr), fy];
            let right = [fx + 1.0, fy + cross(tr, br)];
            let bottom = [fx + cross(bl, br), fy + 1.0];
            let left = [fx, fy + cross(tl, bl)];
            let mut push = |a: [f32; 2], b: [f32; 2]| segments.push([a, b]);
            match case {
                1 | 14 => push(left, top),
                2 | 13 => push(top, right),
                3 | 12 => push(left, right),
                4 | 11 => push(right, bottom),
                6 | 9 => push(top, bottom),
                7 | 8 => push(left, bottom),
                // Saddles: decide by the centre value.
                5 | 10 => {
                    let centre_in = 0.25 * (tl + tr + br + bl) >= level;
                    if (case == 5) == centre_in {
                        push(left, bottom);
                        push(top, right);
                    } else {
                        push(left, top);
                        push(right, bottom);
                    }
                }
                _ => {}
            }
        }
    }
    segments
}

/// The pixels of a `width x height` image where the map, resized like
/// [`resize`], is at least `level`: a starting lesion mask (row-major, 1 inside).
pub fn threshold_mask(
    values: &[f32],
    size: usize,
    width: usize,
    height: usize,
    level: f32,
) -> Vec<u8> {
    resize(values, size, width, height)
        .into_iter()
        .map(|v| u8::from(v >= level))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mvfa::calibration::LeaveOut;
    use crate::model::mvfa::detector::RawResult;

    fn result() -> ImageResult {
        ImageResult {
            raw: RawResult {
                zero_image: 0.0,
                zero_image_levels: vec![0.0, 0.0],
                few_image: Some(0.0),
                zero_map: vec![0.3, 0.9],
                zero_map_levels: vec![vec![0.1, 0.4], vec![0.2, 0.5]],
                few_map: Some(vec![0.2, 0.6]),
                few_map_levels: vec![vec![0.1, 0.3], vec![0.1, 0.3]],
            },
            fused_map: Some(vec![1.0, 2.0]),
            score: Some(2.0),
        }
    }

    fn calibration() -> Calibration {
        let stats = |median, scale| BranchStats { median, scale };
        Calibration {
            method: "test".into(),
            zero_map: stats(0.3, 0.1),
            few_map: Some(stats(0.2, 0.2)),
            zero_image: stats(0.0, 1.0),
            few_image: Some(stats(0.0, 1.0)),
            fused_map_max: stats(0.0, 1.0),
            leave_out: LeaveOut::SourceShot,
            normal_exemplars: 1,
            abnormal_exemplars: 0,
            threshold: 3.0,
            normal_p95: 0.0,
            abnormal_median: None,
            text_weight: 0.5,
            normal_scores: Vec::new(),
            fpr: None,
        }
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn calibrated_levels_average_to_their_branch() {
        let (r, cal) = (result(), calibration());
        let branch = layer_map(&r, Some(&cal), MapLayer::Branch(Branch::ZeroShot)).unwrap();
        close(&branch.values, &[0.0, 6.0]);
        let l0 = layer_map(&r, Some(&cal), MapLayer::Level(Branch::ZeroShot, 0)).unwrap();
        let l1 = layer_map(&r, Some(&cal), MapLayer::Level(Branch::ZeroShot, 1)).unwrap();
        let mean: Vec<f32> = l0
            .values
            .iter()
            .zip(&l1.values)
            .map(|(a, b)| 0.5 * (a + b))
            .collect();
        close(&mean, &branch.values);
        assert_eq!(l0.scale, MapScale::Calibrated);
    }

    #[test]
    fn uncalibrated_maps_stay_in_level_units() {
        let mut r = result();
        r.fused_map = None;
        assert!(layer_map(&r, None, MapLayer::Fused).is_none());
        let branch = layer_map(&r, None, MapLayer::Branch(Branch::FewShot)).unwrap();
        close(&branch.values, &[0.1, 0.3]);
        assert_eq!(branch.scale, MapScale::Raw);
        let level = layer_map(&r, None, MapLayer::Level(Branch::ZeroShot, 1)).unwrap();
        close(&level.values, &[0.2, 0.5]);
        assert!(layer_map(&r, None, MapLayer::Level(Branch::ZeroShot, 2)).is_none());
    }

    #[test]
    fn missing_few_shot_branch_has_no_map() {
        let mut r = result();
        r.raw.few_map = None;
        r.raw.few_map_levels.clear();
        assert!(layer_map(&r, None, MapLayer::Branch(Branch::FewShot)).is_none());
        assert!(layer_map(&r, None, MapLayer::Level(Branch::FewShot, 0)).is_none());
        assert_eq!(MapLayer::all(4).len(), 11);
        assert_eq!(
            MapLayer::Level(Branch::FewShot, 1).label(),
            "few-shot level 2"
        );
    }

    #[test]
    fn resize_matches_the_reference_display_resize() {
        type B = crate::backend::CpuBackend;
        let size = 7;
        let values: Vec<f32> = (0..size * size)
            .map(|i| ((i * 37) % 11) as f32 / 3.0)
            .collect();
        let device = Default::default();
        for (w, h) in [(7, 7), (20, 13), (5, 3)] {
            let ours = resize(&values, size, w, h);
            let reference =
                crate::workflow::map_at_original::<B>(&values, size, w, h, &device).unwrap();
            close(&ours, &reference);
        }
    }

    #[test]
    fn contour_surrounds_a_blob_and_threshold_mask_fills_it() {
        let size = 8;
        let mut values = vec![0.0; size * size];
        for y in 3..5 {
            for x in 3..5 {
                values[y * size + x] = 10.0;
            }
        }
        let segments = contour(&values, size, 5.0);
        assert!(!segments.is_empty());
        for [a, b] in &segments {
            for p in [a, b] {
                assert!(
                    (2.5..=5.5).contains(&p[0]) && (2.5..=5.5).contains(&p[1]),
                    "{p:?}"
                );
            }
        }
        let mask = threshold_mask(&values, size, 16, 16, 5.0);
        assert_eq!(mask[8 * 16 + 8], 1);
        assert_eq!(mask[0], 0);
        assert!(contour(&values, size, 20.0).is_empty());
    }
}
