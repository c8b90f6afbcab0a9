//! [mvfa patches 2, 5, 6, 9] Fused, multi-threaded kernels: GELU and its backward, the softmax
//! of attention, `max_dim`.
//!
//! Upstream builds these from 5 to 15 separate single-threaded tensor ops, each allocating
//! a full-size temporary. Here each runs as one pass, split into fixed chunks (element-wise
//! maps) or whole rows (softmax) over rayon's pool. Every output element of the softmax,
//! `max_dim` and the f64 `gelu` is computed by exactly the same sequence of f32/f64
//! operations as the upstream composition, in the same order, so those results are bit for
//! bit upstream's, whatever the thread count or scheduling: no reduction is ever split
//! between threads. `gelu_backward` deliberately differs (patch 5: the exact derivative), and
//! the f32 `gelu` and `gelu_backward` use PyTorch's f32 `erf` (patch 9).

use alloc::vec::Vec;
use burn_backend::{ElementConversion, Scalar};
use core::f64::consts::SQRT_2;
use libm::{erf, exp};
use ndarray::{ArrayView1, ArrayViewMut1, IxDyn};

#[cfg(not(feature = "std"))]
#[allow(unused_imports)]
use num_traits::Float;

use crate::{SharedArray, element::FloatNdArrayElement};

/// Elements per parallel task: large enough that scheduling costs nothing next to the work.
#[cfg(feature = "multi-threads")]
const CHUNK: usize = 16 * 1024;

/// `f` applied to each element, in parallel chunks.
fn map_unary<E, F>(input: &[E], f: F) -> Vec<E>
where
    E: FloatNdArrayElement,
    F: Fn(E) -> E + Sync + Send,
{
    #[cfg(feature = "multi-threads")]
    {
        use rayon::prelude::*;
        input
            .par_iter()
            .with_min_len(CHUNK)
            .map(|&a| f(a))
            .collect()
    }
    #[cfg(not(feature = "multi-threads"))]
    {
        input.iter().map(|&a| f(a)).collect()
    }
}

/// `f` applied to each pair of elements, in parallel chunks.
fn map_binary<E, F>(lhs: &[E], rhs: &[E], f: F) -> Vec<E>
where
    E: FloatNdArrayElement,
    F: Fn(E, E) -> E + Sync + Send,
{
    debug_assert_eq!(lhs.len(), rhs.len());
    #[cfg(feature = "multi-threads")]
    {
        use rayon::prelude::*;
        lhs.par_iter()
            .zip(rhs.par_iter())
            .with_min_len(CHUNK)
            .map(|(&a, &b)| f(a, b))
            .collect()
    }
    #[cfg(not(feature = "multi-threads"))]
    {
        lhs.iter().zip(rhs.iter()).map(|(&a, &b)| f(a, b)).collect()
    }
}

/// The array in standard (row-major, contiguous) layout: shared when it already is.
fn standard<E: FloatNdArrayElement>(array: SharedArray<E>) -> SharedArray<E> {
    if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned().into_shared()
    }
}

fn from_vec<E: FloatNdArrayElement>(shape: &[usize], data: Vec<E>) -> SharedArray<E> {
    ndarray::Array::from_shape_vec(IxDyn(shape), data)
        .expect("fused kernel: shape")
        .into_shared()
}

/// Exact (erf) GELU, `x * (1 + erf(x / sqrt 2)) / 2`: upstream's default
/// `ActivationOps::gelu` (div_scalar, erf, add_scalar, mul, div_scalar) in one pass.
///
/// [mvfa patch 9] For f32, `erf` is PyTorch's CPU `erf` ([`fast_f32`]), vectorised, instead
/// of libm's f64 `erf` per element (a quarter of a ViT-L block's forward time on a Zen 4).
pub(crate) fn gelu<E: FloatNdArrayElement>(tensor: SharedArray<E>) -> SharedArray<E> {
    let tensor = standard(tensor);
    let input = tensor.as_slice().expect("standard layout");
    if let Some(input) = fast_f32::as_f32(input) {
        let out = fast_f32::map_chunks(input, None, fast_f32::Op::Gelu);
        return from_vec(tensor.shape(), fast_f32::into_e(out));
    }
    let sqrt_2: E = Scalar::from(SQRT_2).elem();
    let one: E = Scalar::from(1f32).elem();
    let two: E = Scalar::from(2f32).elem();
    let out = map_unary(input, |x| {
        let t = x / sqrt_2;
        let t: E = erf(t.to_f64()).elem();
        let t = t + one;
        let t = x * t;
        t / two
    });
    from_vec(tensor.shape(), out)
}

/// `grad` times the derivative of the exact (erf) GELU,
/// `Phi(x) + x phi(x) = (1 + erf(x / sqrt 2)) / 2 + x exp(-x^2 / 2) / sqrt(2 pi)`, as PyTorch
/// differentiates `nn.GELU()`: for f32 with PyTorch's CPU `erf` and `exp` ([`fast_f32`],
/// patch 9), for other types in f64 rounded once.
///
/// [mvfa patch 5] Upstream's default `gelu_backward` differentiates the *tanh approximation*
/// of GELU, also for the exact `gelu` that `ActivationOps::gelu` computes: up to 8.7e-4 off
/// per element (at x = 2.02), which made fine-tuning gradients differ from PyTorch's at the
/// 1e-3 level. It was also 15 ops with f64 `powf` and `tanh`; this is one pass.
pub(crate) fn gelu_backward<E: FloatNdArrayElement>(
    x: SharedArray<E>,
    grad: SharedArray<E>,
) -> SharedArray<E> {
    assert_eq!(x.shape(), grad.shape(), "gelu_backward: shapes differ");
    let (x, grad) = (standard(x), standard(grad));
    const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    let xs = x.as_slice().expect("standard layout");
    let gs = grad.as_slice().expect("standard layout");
    if let (Some(xs), Some(gs)) = (fast_f32::as_f32(xs), fast_f32::as_f32(gs)) {
        let out = fast_f32::map_chunks(xs, Some(gs), fast_f32::Op::GeluBackward);
        return from_vec(x.shape(), fast_f32::into_e(out));
    }
    let out = map_binary(xs, gs, |x, g| {
        let x = x.to_f64();
        let cdf = 0.5 * (1.0 + erf(x / SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
        let derivative: E = (cdf + x * pdf).elem();
        derivative * g
    });
    from_vec(x.shape(), out)
}

/// [mvfa patch 9] GELU and its derivative in f32 as PyTorch's CPU kernels compute them
/// (`aten/src/ATen/cpu/vec/vec512/vec512_float.h`, `Vectorized<float>::erf`): Abramowitz &
/// Stegun 7.1.26, `erf(x) = sign(x) (1 - t (p1 + t (p2 + ...)) exp(-x^2))` with
/// `t = 1 / (1 + p |x|)`, absolute error at most 1.5e-7, and an `exp` by Cody-Waite range
/// reduction and Cephes' `expf` polynomial (about 1 ulp).
///
/// Written as plain f32 multiplies and adds (no `mul_add`, which Rust never forms on its
/// own), so the values are the same whether the loop runs as SSE2, AVX2 or AVX-512: those
/// are only wider copies of the same operations, and [`map_chunks`] picks the widest the CPU
/// has. Values do not depend on the thread count (element-wise).
mod fast_f32 {
    use alloc::vec::Vec;
    use core::any::TypeId;

    const FRAC_1_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
    /// `1 / sqrt(2 pi)`.
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

    /// `e^v` for `v <= 0` (arguments below -87 give `e^-87`; they only ever multiply
    /// numbers below 1 here, so this changes nothing beyond 1e-38).
    #[inline(always)]
    fn exp_nonpositive(v: f32) -> f32 {
        const LOG2E: f32 = core::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        // Round to nearest (ties to even) without a libm call: adding and removing 1.5 * 2^23.
        const ROUND: f32 = 12_582_912.0;
        let v = if v < -87.0 { -87.0 } else { v };
        let n = (v * LOG2E + ROUND) - ROUND;
        let r = (v - n * LN2_HI) - n * LN2_LO;
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 1.666_666_5e-1)
            * r
            + 5.000_000_1e-1;
        let e = (p * (r * r) + r) + 1.0;
        // 2^n for n in [-126, 0]: the exponent field.
        e * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    /// PyTorch's `Vectorized<float>::erf`.
    #[inline(always)]
    fn erf(x: f32) -> f32 {
        const P: f32 = 0.327_591_1;
        const P1: f32 = 0.254_829_6;
        const P2: f32 = -0.284_496_74;
        const P3: f32 = 1.421_413_7;
        const P4: f32 = -1.453_152;
        const P5: f32 = 1.061_405_4;
        let a = x.abs();
        let t = 1.0 / (P * a + 1.0);
        let r = (((P5 * t + P4) * t + P3) * t + P2) * t + P1;
        let e = exp_nonpositive(-(x * x));
        let y = (t * -e) * r + 1.0;
        y.copysign(x)
    }

    #[inline(always)]
    fn gelu(x: f32) -> f32 {
        x * 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2))
    }

    #[inline(always)]
    fn gelu_derivative(x: f32) -> f32 {
        let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp_nonpositive(-0.5 * x * x);
        cdf + x * pdf
    }

    /// The element-wise maps of this module.
    #[derive(Clone, Copy)]
    pub(super) enum Op {
        /// `out[i] = gelu(x[i])`.
        Gelu,
        /// `out[i] = grad[i] * gelu'(x[i])`.
        GeluBackward,
    }

    #[inline(always)]
    fn apply(op: Op, x: &[f32], grad: Option<&[f32]>, out: &mut [f32]) {
        match (op, grad) {
            (Op::Gelu, _) => {
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = gelu(x);
                }
            }
            (Op::GeluBackward, Some(grad)) => {
                for ((o, &x), &g) in out.iter_mut().zip(x).zip(grad) {
                    *o = gelu_derivative(x) * g;
                }
            }
            (Op::GeluBackward, None) => unreachable!("GeluBackward needs the gradient"),
        }
    }

    /// `op` over `x` (and `grad`) in parallel chunks, each compiled for the widest vectors
    /// the CPU has.
    pub(super) fn map_chunks(x: &[f32], grad: Option<&[f32]>, op: Op) -> Vec<f32> {
        let mut out = alloc::vec![0f32; x.len()];
        let run = |(index, chunk): (usize, &mut [f32])| {
            let start = index * super::CHUNK_F32;
            let x = &x[start..start + chunk.len()];
            let grad = grad.map(|g| &g[start..start + chunk.len()]);
            widest(op, x, grad, chunk);
        };
        #[cfg(feature = "multi-threads")]
        {
            use rayon::prelude::*;
            out.par_chunks_mut(super::CHUNK_F32)
                .enumerate()
                .for_each(run);
        }
        #[cfg(not(feature = "multi-threads"))]
        out.chunks_mut(super::CHUNK_F32).enumerate().for_each(run);
        out
    }

    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    fn widest(op: Op, x: &[f32], grad: Option<&[f32]>, out: &mut [f32]) {
        #[target_feature(enable = "avx512f")]
        fn avx512(op: Op, x: &[f32], grad: Option<&[f32]>, out: &mut [f32]) {
            apply(op, x, grad, out)
        }
        #[target_feature(enable = "avx2")]
        fn avx2(op: Op, x: &[f32], grad: Option<&[f32]>, out: &mut [f32]) {
            apply(op, x, grad, out)
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked on the line above).
            unsafe { avx512(op, x, grad, out) }
        } else if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked on the line above).
            unsafe { avx2(op, x, grad, out) }
        } else {
            apply(op, x, grad, out)
        }
    }

    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    fn widest(op: Op, x: &[f32], grad: Option<&[f32]>, out: &mut [f32]) {
        apply(op, x, grad, out)
    }

    /// `Some` when `E` is `f32`.
    pub(super) fn as_f32<E: 'static>(values: &[E]) -> Option<&[f32]> {
        if TypeId::of::<E>() != TypeId::of::<f32>() {
            return None;
        }
        // SAFETY: `E` is `f32`.
        Some(unsafe { core::slice::from_raw_parts(values.as_ptr() as *const f32, values.len()) })
    }

    /// `values` as a `Vec<E>`, for `E` = `f32` (checked by the caller through [`as_f32`]).
    pub(super) fn into_e<E: 'static>(values: Vec<f32>) -> Vec<E> {
        assert!(
            TypeId::of::<E>() == TypeId::of::<f32>(),
            "into_e: E is not f32"
        );
        let mut values = core::mem::ManuallyDrop::new(values);
        // SAFETY: `E` is `f32`: same size, alignment and representation.
        unsafe {
            Vec::from_raw_parts(
                values.as_mut_ptr() as *mut E,
                values.len(),
                values.capacity(),
            )
        }
    }
}

/// Elements per parallel task of the f32 kernels.
const CHUNK_F32: usize = 16 * 1024;

/// Softmax over the last axis of attention scores, as `attention_fallback` computes it
/// (optional scale, causal mask, NaN-safe max and sum clamps), one whole row per task.
///
/// - `scores`: `[..., seq_q, seq_k]` raw `q k^T`
/// - `scale`: multiplies the scores first (upstream's `float_mul_scalar`)
/// - `causal`: masks `col > row + (seq_k - seq_q)` with -inf
pub(crate) fn attention_softmax<E: FloatNdArrayElement>(
    scores: SharedArray<E>,
    scale: E,
    causal: bool,
    finfo_min: E,
    finfo_min_positive: E,
) -> SharedArray<E> {
    let scores = standard(scores);
    let shape = scores.shape().to_vec();
    let ndims = shape.len();
    let (seq_q, seq_k) = (shape[ndims - 2], shape[ndims - 1]);
    let offset = seq_k as i64 - seq_q as i64;
    let neg_inf: E = Scalar::from(f32::NEG_INFINITY).elem();
    // In place: `scores` is normally the fresh output of the matmul (no copy then).
    let mut scores = scores.into_owned();
    let out = scores.as_slice_mut().expect("standard layout");
    let row_op = |row_index: usize, row: &mut [E]| {
        for v in row.iter_mut() {
            *v = *v * scale;
        }
        if causal {
            let q = (row_index % seq_q) as i64;
            for (j, v) in row.iter_mut().enumerate() {
                if q + offset < j as i64 {
                    *v = neg_inf;
                }
            }
        }
        // max_dim then clamp_min(finfo.min): the max of a row does not depend on order.
        let mut max = row[0];
        for &v in row[1..].iter() {
            if v > max {
                max = v;
            }
        }
        if max < finfo_min {
            max = finfo_min;
        }
        for v in row.iter_mut() {
            *v = (*v - max).exp_elem();
        }
        // sum_dim: ndarray's `sum` of the contiguous row, the very function upstream calls.
        let mut sum = ArrayView1::from(&*row).sum();
        if sum < finfo_min_positive {
            sum = finfo_min_positive;
        }
        ArrayViewMut1::from(row).mapv_inplace(|v| v / sum);
    };
    if seq_k > 0 {
        #[cfg(feature = "multi-threads")]
        {
            use rayon::prelude::*;
            let rows_per_task = (CHUNK / seq_k).max(1);
            out.par_chunks_mut(seq_k)
                .with_min_len(rows_per_task)
                .enumerate()
                .for_each(|(i, row)| row_op(i, row));
        }
        #[cfg(not(feature = "multi-threads"))]
        for (i, row) in out.chunks_mut(seq_k).enumerate() {
            row_op(i, row);
        }
    }
    scores.into_shared()
}

/// [mvfa patch 6] Maximum along `dim`, keeping the axis (length 1): the values of upstream's
/// `float_max_dim` (argmax, then gather), bit for bit. Its argmax keeps the first element
/// and replaces it by each later one that is strictly greater, so does this (a NaN in first
/// place stays, later NaNs are skipped). Along an inner axis, whole sub-arrays are merged
/// element-wise in order (contiguous rows for a row-major array); along the last axis, each
/// contiguous lane is folded.
pub(crate) fn max_dim<E: FloatNdArrayElement>(
    tensor: SharedArray<E>,
    dim: usize,
) -> SharedArray<E> {
    use ndarray::{Axis, Zip};
    let view = tensor.view();
    let ndim = view.ndim();
    assert!(
        dim < ndim,
        "max_dim: dim {dim} out of range for {ndim} dims"
    );
    let keep = |e: E, best: E| e > best;
    let out = if dim + 1 == ndim {
        view.map_axis(Axis(dim), |lane| {
            lane.iter()
                .fold(lane[0], |best, &e| if keep(e, best) { e } else { best })
        })
    } else {
        let mut best = view.index_axis(Axis(dim), 0).to_owned();
        for sub in view.axis_iter(Axis(dim)).skip(1) {
            Zip::from(&mut best).and(&sub).for_each(|b, &e| {
                if keep(e, *b) {
                    *b = e;
                }
            });
        }
        best
    };
    out.insert_axis(Axis(dim)).into_shared()
}

/// [mvfa patch 10] Softmax backward of attention, scaled: `scale * p * (g - sum(g * p))` per
/// row, with `p` the probabilities and `g` their gradient (`[..., seq_q, seq_k]`, same
/// shape). One whole row per task and the row sum in order, so the result does not depend on
/// the thread count. Works in place on `grad` when it is not shared.
pub(crate) fn attention_softmax_backward<E: FloatNdArrayElement>(
    probs: SharedArray<E>,
    grad: SharedArray<E>,
    scale: E,
) -> SharedArray<E> {
    assert_eq!(
        probs.shape(),
        grad.shape(),
        "attention softmax backward: shapes differ"
    );
    let probs = standard(probs);
    let seq_k = probs.shape().last().copied().unwrap_or(0);
    let probs = probs.as_slice().expect("standard layout");
    let mut grad = standard(grad).into_owned();
    let out = grad.as_slice_mut().expect("standard layout");
    let row_op = |(g, p): (&mut [E], &[E])| {
        let mut dot = <E as num_traits::Zero>::zero();
        for (&gv, &pv) in g.iter().zip(p) {
            dot = dot + gv * pv;
        }
        for (gv, &pv) in g.iter_mut().zip(p) {
            *gv = scale * (pv * (*gv - dot));
        }
    };
    if seq_k > 0 {
        #[cfg(feature = "multi-threads")]
        {
            use rayon::prelude::*;
            let rows_per_task = (CHUNK / seq_k).max(1);
            out.par_chunks_mut(seq_k)
                .zip(probs.par_chunks(seq_k))
                .with_min_len(rows_per_task)
                .for_each(row_op);
        }
        #[cfg(not(feature = "multi-threads"))]
        out.chunks_mut(seq_k)
            .zip(probs.chunks(seq_k))
            .for_each(row_op);
    }
    grad.into_shared()
}
