//! Position-table resize: PyTorch `F.interpolate(mode='bicubic', antialias=True,
//! align_corners=False)` on the CPU, exactly as spec section 1.1 describes it.
//!
//! The checkpoint's table is trained for a 24x24 grid (336 px); MVFA feeds 240 px images
//! (17x17 grid). The CLS row is kept, the grid rows are treated as `width` image planes and
//! resized separably with PyTorch's antialiased cubic filter (Keys a = -0.5, support scaled by
//! the downsampling factor, weights normalised per output index). Computed in f64; PyTorch's
//! f32 kernel agrees to float rounding.

/// Keys cubic with a = -0.5 (PyTorch's antialias bicubic; the non-antialias path uses -0.75),
/// the same kernel as Pillow's.
use crate::io::resample::bicubic_filter as cubic;

/// Interpolation taps of one output index: the first input index and the normalised weights
/// of `input[first..first + weights.len()]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Taps {
    /// First input index.
    pub first: usize,
    /// Weights summing to 1.
    pub weights: Vec<f64>,
}

/// Antialiased bicubic taps for resizing `input` samples to `output` along one axis
/// (PyTorch `_compute_indices_weights_aa`, align_corners = false, no explicit scale factor).
pub fn antialias_bicubic_taps(input: usize, output: usize) -> Vec<Taps> {
    assert!(
        input > 0 && output > 0,
        "resize needs non-empty axes ({input} -> {output})"
    );
    let scale = input as f64 / output as f64;
    // Bicubic interp_size = 4: support 2, widened by the scale when downsampling.
    let (support, inv_scale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            // `as i64` truncates toward zero, like the C++ int64_t cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut weights: Vec<f64> = (xmin..xmax)
                .map(|j| cubic((j as f64 - center + 0.5) * inv_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps {
                first: xmin,
                weights,
            }
        })
        .collect()
}

/// Resizes a CLIP position table `[1 + g_in², width]` (row-major, CLS first) to
/// `[1 + g_out², width]`, keeping the CLS row (spec 1.1). `table` is row-major.
///
/// Returns `None` when `table.len()` is not `(1 + g_in²) * width` for a whole `g_in`.
pub fn resize_position_table(table: &[f32], width: usize, g_out: usize) -> Option<Vec<f32>> {
    if width == 0 || !table.len().is_multiple_of(width) || table.len() / width < 2 {
        return None;
    }
    let rows = table.len() / width - 1;
    let g_in = (rows as f64).sqrt().round() as usize;
    if g_in * g_in != rows || g_out == 0 {
        return None;
    }
    let mut out = Vec::with_capacity((1 + g_out * g_out) * width);
    out.extend_from_slice(&table[..width]);
    if g_in == g_out {
        out.extend_from_slice(&table[width..]);
        return Some(out);
    }
    let taps = antialias_bicubic_taps(g_in, g_out);
    let grid = &table[width..];
    // Along x: [g_in(y), g_in(x), w] -> [g_in(y), g_out(x), w]
    let mut tmp = vec![0f64; g_in * g_out * width];
    for y in 0..g_in {
        for (ox, t) in taps.iter().enumerate() {
            let dst = &mut tmp[(y * g_out + ox) * width..][..width];
            for (k, &wt) in t.weights.iter().enumerate() {
                let src = &grid[(y * g_in + t.first + k) * width..][..width];
                dst.iter_mut()
                    .zip(src)
                    .for_each(|(d, &s)| *d += wt * s as f64);
            }
        }
    }
    // Along y: [g_in, g_out, w] -> [g_out, g_out, w]
    let mut acc = vec![0f64; width];
    for t in &taps {
        for ox in 0..g_out {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (k, &wt) in t.weights.iter().enumerate() {
                let src = &tmp[((t.first + k) * g_out + ox) * width..][..width];
                acc.iter_mut().zip(src).for_each(|(a, &s)| *a += wt * s);
            }
            out.extend(acc.iter().map(|&a| a as f32));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 24 -> 17 weight table printed in spec 1.1 (rows 0..=8; 9..=16 mirror 7..=0).
    const SPEC: [(usize, &[f64]); 9] = [
        (0, &[0.702086, 0.351198, -0.053127, -0.000157]),
        (0, &[-0.037517, 0.456337, 0.596905, 0.007949, -0.023673]),
        (1, &[-0.048894, 0.178245, 0.705669, 0.216015, -0.051034]),
        (
            2,
            &[
                -0.018964, -0.007082, 0.568477, 0.497339, -0.029641, -0.010128,
            ],
        ),
        (4, &[-0.052253, 0.295930, 0.689544, 0.109084, -0.042305]),
        (
            5,
            &[
                -0.033554, 0.051105, 0.653621, 0.378392, -0.048266, -0.001298,
            ],
        ),
        (
            6,
            &[
                -0.003449, -0.043918, 0.419396, 0.629253, 0.027459, -0.028743,
            ],
        ),
        (8, &[-0.045942, 0.142486, 0.700255, 0.255413, -0.052213]),
        (
            9,
            &[
                -0.014348, -0.019470, 0.533818, 0.533818, -0.019470, -0.014348,
            ],
        ),
    ];

    #[test]
    fn spec_table_24_to_17() {
        let taps = antialias_bicubic_taps(24, 17);
        assert_eq!(taps.len(), 17);
        for (i, (first, w)) in SPEC.iter().enumerate() {
            assert_eq!(taps[i].first, *first, "row {i} first index");
            assert_eq!(taps[i].weights.len(), w.len(), "row {i} length");
            for (k, (&got, &want)) in taps[i].weights.iter().zip(w.iter()).enumerate() {
                assert!(
                    (got - want).abs() < 1e-6,
                    "row {i} weight {k}: {got} vs {want}"
                );
            }
        }
        // Rows 9..=16 mirror rows 7..=0, with first indices 11, 12, 13, 15, 16, 18, 19, 20.
        let firsts: Vec<usize> = taps[9..].iter().map(|t| t.first).collect();
        assert_eq!(firsts, vec![11, 12, 13, 15, 16, 18, 19, 20]);
        for i in 9..17 {
            let m = &taps[16 - i];
            assert_eq!(
                taps[i].first,
                24 - (m.first + m.weights.len()),
                "mirror first of {i}"
            );
            let rev: Vec<f64> = m.weights.iter().rev().copied().collect();
            for (a, b) in taps[i].weights.iter().zip(&rev) {
                assert!(
                    (a - b).abs() < 1e-12,
                    "row {i} is not the mirror of {}",
                    16 - i
                );
            }
            // ... and so match the spec's rows read backwards.
            let (first, w) = SPEC[16 - i];
            assert_eq!(m.first, first);
            for (a, b) in taps[i].weights.iter().zip(w.iter().rev()) {
                assert!((a - b).abs() < 1e-6, "row {i}: {a} vs {b}");
            }
        }
        for t in &taps {
            assert!((t.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn identity_and_constant_tables() {
        // Same grid: unchanged. Constant planes stay constant (weights sum to 1).
        let w = 3;
        let table: Vec<f32> = (0..(1 + 16) * w).map(|v| v as f32).collect();
        assert_eq!(resize_position_table(&table, w, 4).unwrap(), table);
        let mut table = vec![2.5f32; (1 + 25) * w];
        table[..w].copy_from_slice(&[9.0, 8.0, 7.0]);
        let out = resize_position_table(&table, w, 3).unwrap();
        assert_eq!(out.len(), (1 + 9) * w);
        assert_eq!(&out[..w], &[9.0, 8.0, 7.0]);
        assert!(out[w..].iter().all(|&v| (v - 2.5).abs() < 1e-6));
        assert!(resize_position_table(&table[..table.len() - 1], w, 3).is_none());
        assert!(resize_position_table(&vec![0.0; 11 * w], w, 3).is_none());
    }

    /// Down- and upsampling against values printed by PyTorch 2.15 (`F.interpolate` on a
    /// 6x6 float64 plane, bicubic, antialias=True, align_corners=False).
    #[test]
    fn matches_torch_down_and_up() {
        let plane: Vec<f32> = (0..36)
            .map(|i| (((i / 6) * 7 + (i % 6) * 3) % 11) as f32 * 0.25 - 1.0)
            .collect();
        let mut table = vec![0.5f32];
        table.extend(&plane);
        let down = resize_position_table(&table, 1, 4).unwrap();
        let want4 = [
            -0.087180957,
            0.30080299,
            0.555305486,
            -0.350360281,
            0.463830119,
            0.626375147,
            -0.079536314,
            0.125537103,
            0.756113804,
            0.051947192,
            0.195744579,
            0.151716375,
            0.131528131,
            0.400861471,
            -0.397298751,
            0.696501136,
        ];
        assert_eq!(down[0], 0.5);
        for (g, w) in down[1..].iter().zip(want4) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        let up = resize_position_table(&table, 1, 9).unwrap();
        // First two rows and the centre value of the 9x9 output.
        let want9 = [
            -1.164473684,
            -0.816950464,
            -0.218354045,
            0.41901194,
            1.135279605,
            1.085899427,
            -0.647805495,
            -0.500580495,
            0.12703428,
            -0.166989164,
            0.276816609,
            0.580235566,
            -0.032645697,
            0.382352941,
            0.81420207,
            0.268722767,
            -0.282871972,
            -0.61996904,
        ];
        for (g, w) in up[1..19].iter().zip(want9) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert!((up[1 + 40] as f64 - 0.641601562).abs() < 1e-6);
        assert!((up[81] as f64 - 0.483552632).abs() < 1e-6);
    }
}
