//! Which memory-bank rows can hold a query's nearest neighbour: a bf16 pre-filter for the
//! few-shot search on CPUs with AVX512-BF16.
//!
//! The few-shot branch needs, for every query patch, the largest cosine similarity over the
//! whole bank (k = 4: 12,760 rows x 289 patches x 768 dimensions, 5.7 GFLOP per level and
//! head), which in f32 is bound by the CPU's FMA rate. `vdpbf16ps` multiplies bf16 pairs at
//! twice that rate. So the search first scores every row in bf16 and keeps, for each query,
//! the rows within a proven error margin of its best bf16 score; the scorer then computes the
//! exact f32 similarities of those rows only ([`crate::model::mvfa::scoring`]).
//!
//! **Why no neighbour is lost.** With unit-norm rows and queries (the bank and the queries
//! are normalised) and bf16's unit roundoff u = 2⁻⁸, rounding both operands moves a dot
//! product by at most (2u + u²)·‖q‖‖b‖; the bf16 products are exact in f32 and their f32
//! sum over K terms is off by at most γ_K = K·2⁻²⁴/(1 − K·2⁻²⁴); the exact f32 product the
//! scorer computes is off from the real one by at most γ_K too. If row j* has the largest
//! f32 similarity and row ĵ the largest bf16 score, then
//! bf16(j*) ≥ real(j*) − e ≥ f32(j*) − γ − e ≥ f32(ĵ) − γ − e ≥ bf16(ĵ) − 2γ − 2e,
//! so every row whose bf16 score is within 2(e + γ) of the best one is kept ([`margin`]).
//! The kept rows of all queries are merged, and the maximum over any set of rows that holds
//! each query's best row is that query's maximum over the whole bank.
use std::sync::OnceLock;

use rayon::prelude::*;

/// Rows of a memory-bank level in bf16, row-major, two dimensions per `u32` (the layout
/// `vdpbf16ps` reads): `rows x pairs` words.
#[derive(Debug, Clone, PartialEq)]
pub struct Bf16Rows {
    rows: usize,
    dim: usize,
    words: Vec<u32>,
}

/// Rounds to bf16, nearest even (NaN stays NaN).
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    ((bits as u64 + round as u64) >> 16) as u16
}

/// `values` (`n x dim`, row-major) as bf16 pairs, `n x ceil(dim / 2)` words (an odd last
/// dimension is paired with zero).
fn pack_rows(values: &[f32], dim: usize) -> Vec<u32> {
    let pairs = dim.div_ceil(2);
    let rows = values.len().checked_div(dim).unwrap_or(0);
    let mut words = Vec::with_capacity(rows * pairs);
    for row in values.chunks_exact(dim) {
        for pair in row.chunks(2) {
            let low = to_bf16(pair[0]) as u32;
            let high = pair.get(1).map_or(0, |&x| to_bf16(x) as u32);
            words.push(low | (high << 16));
        }
    }
    words
}

impl Bf16Rows {
    /// Rounds `values` (`rows x dim`, row-major, the normalised bank) to bf16.
    pub fn new(values: &[f32], dim: usize) -> Self {
        assert!(
            dim > 0 && values.len().is_multiple_of(dim),
            "bf16 rows: ragged"
        );
        Self {
            rows: values.len() / dim,
            dim,
            words: pack_rows(values, dim),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// These rows without rows `start..start + len` (a leave-one-out bank).
    pub fn without_rows(&self, start: usize, len: usize) -> Self {
        let pairs = self.dim.div_ceil(2);
        let mut words = self.words[..start * pairs].to_vec();
        words.extend_from_slice(&self.words[(start + len) * pairs..]);
        Self {
            rows: self.rows - len,
            dim: self.dim,
            words,
        }
    }
}

/// Whether this CPU runs the bf16 pre-filter (AVX-512F and AVX512-BF16), checked once.
/// `MVFA_BANK_FILTER=off` switches it off (for comparisons).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("MVFA_BANK_FILTER").is_ok_and(|v| v == "off" || v == "0");
        !off && kernel::supported()
    })
}

/// Whether memory banks get a bf16 copy: where the filter runs, and in this crate's unit
/// tests on every CPU (there with the portable scorer, [`candidate_rows`]), so that the
/// search's equality with the full comparison is tested everywhere.
pub fn enabled() -> bool {
    available() || cfg!(test)
}

/// The bf16 score margin of the module docs for `dim`-dimensional unit vectors: 2(e + γ),
/// with e = (2u + u²) (1 + 1e-5) (norms up to f32 rounding) + γ, γ = γ_dim, and 1e-6 for
/// products that `vdpbf16ps` flushes to zero.
pub fn margin(dim: usize) -> f32 {
    let u = 2f64.powi(-8);
    let k = dim as f64 * 2f64.powi(-24);
    let gamma = k / (1.0 - k);
    let e = (2.0 * u + u * u) * (1.0 + 1e-5) + gamma;
    (2.0 * (e + gamma) + 1e-6) as f32
}

/// The bank rows that can hold a query's nearest neighbour, ascending, or `None` when the
/// filter would not save work (more than `max_rows` rows kept) or a query's scores are not
/// numbers. Scores with `vdpbf16ps` where the CPU has it, else with a portable loop (the same
/// products and error bound, for tests; slower than the f32 search it filters).
///
/// - `queries`: `n x dim`, row-major, unit norm
pub fn candidate_rows(
    bank: &Bf16Rows,
    queries: &[f32],
    n: usize,
    max_rows: usize,
) -> Option<Vec<usize>> {
    candidates(bank, queries, n, max_rows, kernel::supported())
}

/// Rows per parallel block of the maximum and threshold passes.
const BLOCK_ROWS: usize = 128;

fn candidates(
    bank: &Bf16Rows,
    queries: &[f32],
    n: usize,
    max_rows: usize,
    simd: bool,
) -> Option<Vec<usize>> {
    if n == 0 || bank.rows == 0 || queries.len() != n * bank.dim {
        return None;
    }
    if simd {
        SCORES.with_borrow_mut(|buffer| {
            let stride = kernel::scores(bank, queries, n, buffer);
            kept_rows(&buffer[..bank.rows * stride], stride, n, bank.dim, max_rows)
        })
    } else {
        let scores = portable_scores(bank, queries, n);
        kept_rows(&scores, n, n, bank.dim, max_rows)
    }
}

thread_local! {
    /// The bf16 scores of this thread's last search, kept for its next: at k = 4 they are
    /// 15.5 MB per level, whose fresh allocation and first-touch page faults cost about as
    /// much as the threshold passes.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The rows within [`margin`] of a query's best score, from `scores` (`rows x stride`, query
/// `q` of row `j` at `j * stride + q`, lanes past `n` padding).
fn kept_rows(
    scores: &[f32],
    stride: usize,
    n: usize,
    dim: usize,
    max_rows: usize,
) -> Option<Vec<usize>> {
    // Each query's best score, by blocks of rows in parallel; a NaN anywhere (a broken token
    // or bank row) leaves the search to the full comparison, whose NaN rules are its own.
    let block_maxima: Vec<(Vec<f32>, bool)> = scores
        .par_chunks(BLOCK_ROWS * stride)
        .map(|block| {
            let mut best = vec![f32::NEG_INFINITY; stride];
            let mut nan = false;
            for row in block.chunks_exact(stride) {
                for (b, &s) in best.iter_mut().zip(row) {
                    nan |= s.is_nan();
                    *b = b.max(s);
                }
            }
            (best, nan)
        })
        .collect();
    let mut best = vec![f32::NEG_INFINITY; stride];
    for (block, nan) in &block_maxima {
        if *nan {
            return None;
        }
        for (b, &s) in best.iter_mut().zip(block) {
            *b = b.max(s);
        }
    }
    let margin = margin(dim);
    // Padding lanes (queries past `n`) never keep a row.
    let threshold: Vec<f32> = (0..stride)
        .map(|q| {
            if q < n {
                best[q] - margin
            } else {
                f32::INFINITY
            }
        })
        .collect();
    if threshold[..n].iter().any(|t| !t.is_finite()) {
        return None;
    }
    let kept: Vec<usize> = scores
        .par_chunks_exact(stride)
        .enumerate()
        .filter_map(|(j, row)| {
            // No early exit: the comparison vectorises.
            let mut hit = false;
            for (s, t) in row.iter().zip(&threshold) {
                hit |= s >= t;
            }
            hit.then_some(j)
        })
        .collect();
    (kept.len() <= max_rows).then_some(kept)
}

/// bf16 scores without SIMD: each bf16 product (exact in f32) summed in order, `rows x n`.
fn portable_scores(bank: &Bf16Rows, queries: &[f32], n: usize) -> Vec<f32> {
    let pairs = bank.dim.div_ceil(2);
    let queries = pack_rows(queries, bank.dim);
    let half =
        |word: u32, high: bool| f32::from_bits(if high { word & 0xffff_0000 } else { word << 16 });
    let mut scores = Vec::with_capacity(bank.rows * n);
    for row in bank.words.chunks_exact(pairs) {
        for query in queries.chunks_exact(pairs) {
            let mut sum = 0f32;
            for (&b, &q) in row.iter().zip(query) {
                sum += half(b, false) * half(q, false);
                sum += half(b, true) * half(q, true);
            }
            scores.push(sum);
        }
    }
    scores
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use rayon::prelude::*;

    use super::{Bf16Rows, pack_rows};

    /// Bank rows per register tile, and query vectors (16 queries each) per tile at most:
    /// 6 x 4 accumulators, 4 query loads and one broadcast fill 29 of the 32 registers.
    const TILE_ROWS: usize = 6;
    const TILE_VECTORS: usize = 4;
    /// Rows per parallel task: enough that scheduling costs nothing next to the work.
    const TASK_ROWS: usize = TILE_ROWS * 16;

    pub fn supported() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }

    /// Queries as bf16 pairs, in vectors of 16 queries: `[vector][pair][16]` words, queries
    /// past `n` zero.
    fn pack_queries(queries: &[f32], n: usize, dim: usize) -> (Vec<u32>, usize) {
        let pairs = dim.div_ceil(2);
        let vectors = n.div_ceil(16);
        let rows = pack_rows(queries, dim);
        let mut packed = vec![0u32; vectors * pairs * 16];
        for q in 0..n {
            for p in 0..pairs {
                packed[(q / 16) * pairs * 16 + p * 16 + q % 16] = rows[q * pairs + p];
            }
        }
        (packed, vectors)
    }

    /// Scores of `ROWS` bank rows against `VECTORS` query vectors, stored to `out` (one
    /// row of `out_stride` floats per bank row, the vectors' 16 lanes side by side).
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-BF16; `bank` must hold `ROWS x pairs` words,
    /// `queries` `VECTORS x pairs x 16` words, and `out` `ROWS x out_stride` floats with
    /// `out_stride >= VECTORS x 16`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const ROWS: usize, const VECTORS: usize>(
        bank: *const u32,
        queries: *const u32,
        pairs: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); VECTORS]; ROWS];
        for p in 0..pairs {
            let mut q = [_mm512_setzero_ps(); VECTORS];
            for (v, q) in q.iter_mut().enumerate() {
                // SAFETY: within `queries` (caller's contract).
                *q = unsafe { _mm512_loadu_ps(queries.add(v * pairs * 16 + p * 16).cast()) };
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: within `bank` (caller's contract).
                let word = unsafe { *bank.add(r * pairs + p) };
                // SAFETY: a bf16 vector is 32 pairs of bf16 in 512 bits, as the words are.
                let b: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(word as i32)) };
                for (acc, &q) in acc.iter_mut().zip(&q) {
                    // SAFETY: as above.
                    let q: __m512bh = unsafe { std::mem::transmute(q) };
                    *acc = _mm512_dpbf16_ps(*acc, q, b);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &acc) in acc.iter().enumerate() {
                // SAFETY: within `out` (caller's contract).
                unsafe { _mm512_storeu_ps(out.add(r * out_stride + v * 16), acc) };
            }
        }
    }

    /// bf16 scores of `rows` (a range of bank rows) against all query vectors into `out`
    /// (`rows.len() x vectors x 16`).
    fn score_rows(
        bank: &Bf16Rows,
        rows: std::ops::Range<usize>,
        queries: &[u32],
        vectors: usize,
        out: &mut [f32],
    ) {
        let pairs = bank.dim.div_ceil(2);
        let stride = vectors * 16;
        assert!(rows.end <= bank.rows && out.len() >= rows.len() * stride);
        assert!(queries.len() >= vectors * pairs * 16);
        let mut row = rows.start;
        while row < rows.end {
            let tile_rows = if rows.end - row >= TILE_ROWS {
                TILE_ROWS
            } else {
                1
            };
            let mut v = 0;
            while v < vectors {
                let tile_vectors = (vectors - v).min(TILE_VECTORS);
                let b = bank.words[row * pairs..].as_ptr();
                let q = queries[v * pairs * 16..].as_ptr();
                let o = out[(row - rows.start) * stride + v * 16..].as_mut_ptr();
                // SAFETY: `supported()` was checked by the caller (`available`); the asserts
                // above keep every tile inside its slices.
                unsafe {
                    match (tile_rows, tile_vectors) {
                        (TILE_ROWS, 4) => tile::<TILE_ROWS, 4>(b, q, pairs, o, stride),
                        (TILE_ROWS, 3) => tile::<TILE_ROWS, 3>(b, q, pairs, o, stride),
                        (TILE_ROWS, 2) => tile::<TILE_ROWS, 2>(b, q, pairs, o, stride),
                        (TILE_ROWS, _) => tile::<TILE_ROWS, 1>(b, q, pairs, o, stride),
                        (_, 4) => tile::<1, 4>(b, q, pairs, o, stride),
                        (_, 3) => tile::<1, 3>(b, q, pairs, o, stride),
                        (_, 2) => tile::<1, 2>(b, q, pairs, o, stride),
                        _ => tile::<1, 1>(b, q, pairs, o, stride),
                    }
                }
                v += tile_vectors;
            }
            row += tile_rows;
        }
    }

    /// bf16 scores of every bank row against the queries into `out`, `rows x (vectors x 16)`
    /// (queries padded to whole vectors; `out` grown as needed), and that row length.
    pub fn scores(bank: &Bf16Rows, queries: &[f32], n: usize, out: &mut Vec<f32>) -> usize {
        let (packed, vectors) = pack_queries(queries, n, bank.dim);
        let stride = vectors * 16;
        let len = bank.rows * stride;
        if out.len() < len {
            out.resize(len, 0.0);
        }
        // Every element of `out[..len]` is written: each tile stores all its lanes.
        out[..len]
            .par_chunks_mut(TASK_ROWS * stride)
            .enumerate()
            .for_each(|(task, out)| {
                let start = task * TASK_ROWS;
                let end = (start + TASK_ROWS).min(bank.rows);
                score_rows(bank, start..end, &packed, vectors, out);
            });
        stride
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    use super::Bf16Rows;

    pub fn supported() -> bool {
        false
    }

    pub fn scores(_: &Bf16Rows, _: &[f32], _: usize, _: &mut Vec<f32>) -> usize {
        unreachable!("no SIMD bf16 kernel on this architecture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn unit_rows(values: &mut [f32], dim: usize) {
        for row in values.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-8);
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }

    /// A bank with near-duplicate rows (augmented copies differ little) and a few
    /// large dimensions (as ViT features have), and queries that are noisy bank rows, so
    /// that many rows fall within the margin of the best one.
    fn draw(seed: u64, rows: usize, n: usize, dim: usize) -> (Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut gauss = move |scale: f32| -> f32 {
            let (a, b): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
            scale * (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
        };
        let base: Vec<f32> = (0..rows / 4 * dim).map(|_| gauss(1.0)).collect();
        let mut bank = Vec::with_capacity(rows * dim);
        for r in 0..rows {
            let source = &base[(r % (rows / 4)) * dim..][..dim];
            bank.extend(source.iter().enumerate().map(|(i, &x)| {
                let spike = if i % 97 == 0 { 8.0 } else { 1.0 };
                spike * x + gauss(0.05)
            }));
        }
        unit_rows(&mut bank, dim);
        let mut queries = Vec::with_capacity(n * dim);
        for q in 0..n {
            let source = &bank[(q * 7 % rows) * dim..][..dim];
            let noise = if q % 3 == 0 { 1.0 } else { 0.02 };
            queries.extend(
                source
                    .iter()
                    .map(|&x| x + gauss(noise / (dim as f32).sqrt())),
            );
        }
        unit_rows(&mut queries, dim);
        (bank, queries)
    }

    /// The f32 similarity as any order of summation could give it: in f64, then rounded.
    fn best_rows(bank: &[f32], queries: &[f32], dim: usize) -> Vec<usize> {
        queries
            .chunks_exact(dim)
            .flat_map(|q| {
                let sims: Vec<f64> = bank
                    .chunks_exact(dim)
                    .map(|b| b.iter().zip(q).map(|(&x, &y)| x as f64 * y as f64).sum())
                    .collect();
                let best = sims.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                // Every row within f32 rounding of the best could be the f32 argmax.
                let slack = 2.0 * dim as f64 * 2f64.powi(-24);
                (0..sims.len())
                    .filter(|&j| sims[j] >= best - slack)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_row_that_can_be_nearest_is_kept_over_seeds() {
        for seed in 0..6 {
            let (rows, n, dim) = (203, 13, 96 + seed as usize % 2);
            let (bank_values, queries) = draw(seed, rows, n, dim);
            let bank = Bf16Rows::new(&bank_values, dim);
            let kernels = if kernel::supported() {
                vec![false, true]
            } else {
                vec![false]
            };
            for simd in kernels {
                let kept = candidates(&bank, &queries, n, rows, simd).expect("kept");
                assert!(kept.windows(2).all(|w| w[0] < w[1]));
                for j in best_rows(&bank_values, &queries, dim) {
                    assert!(
                        kept.binary_search(&j).is_ok(),
                        "seed {seed}: row {j} lost (simd {simd})"
                    );
                }
                // The filter does filter: near-duplicates of the best rows, not the bank.
                assert!(
                    kept.len() < rows / 2,
                    "seed {seed}: kept {} of {rows}",
                    kept.len()
                );
            }
        }
    }

    #[test]
    #[ignore = "needs a CPU with AVX512-BF16 (.ci/run runs it where /proc/cpuinfo has avx512_bf16)"]
    fn the_avx512_bf16_and_portable_scores_agree_within_f32_rounding() {
        assert!(kernel::supported(), "this CPU has no AVX512-BF16");
        let (rows, n, dim) = (31, 21, 64);
        let (bank_values, queries) = draw(9, rows, n, dim);
        let bank = Bf16Rows::new(&bank_values, dim);
        let mut simd = Vec::new();
        let stride = kernel::scores(&bank, &queries, n, &mut simd);
        let portable = portable_scores(&bank, &queries, n);
        for j in 0..rows {
            for q in 0..n {
                let (a, b) = (simd[j * stride + q], portable[j * n + q]);
                assert!((a - b).abs() <= 1e-5, "row {j}, query {q}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn too_many_kept_rows_or_nan_queries_fall_back() {
        let (bank_values, mut queries) = draw(3, 40, 5, 16);
        let bank = Bf16Rows::new(&bank_values, 16);
        assert!(candidates(&bank, &queries, 5, 0, false).is_none());
        queries[3] = f32::NAN;
        assert!(candidates(&bank, &queries, 5, 40, false).is_none());
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert!(f32::from_bits((to_bf16(f32::NAN) as u32) << 16).is_nan());
    }

    #[test]
    fn leave_out_removes_the_rows() {
        let values: Vec<f32> = (0..5 * 3).map(|i| i as f32).collect();
        let rows = Bf16Rows::new(&values, 3);
        let without = rows.without_rows(1, 2);
        assert_eq!(without.rows(), 3);
        let keep: Vec<f32> = [0..3, 9..15]
            .into_iter()
            .flatten()
            .map(|i| i as f32)
            .collect();
        assert_eq!(without, Bf16Rows::new(&keep, 3));
    }

    #[test]
    fn the_margin_covers_bf16_rounding_of_unit_vectors() {
        // 2 (2u + u^2) is 0.0157; the f32 accumulation terms add about 2e-4 at 768.
        let m = margin(768);
        assert!(m > 0.0157 && m < 0.0162, "{m}");
    }
}
