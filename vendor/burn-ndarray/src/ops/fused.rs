//! [mvfa patches 2, 5, 6] Fused, multi-threaded kernels: GELU and its backward, the softmax
//! of attention, `max_dim`.
//!
//! Upstream builds these from 5 to 15 separate single-threaded tensor ops, each allocating
//! a full-size temporary. Here each runs as one pass, split into fixed chunks (element-wise
//! maps) or whole rows (softmax) over rayon's pool. Every output element of `gelu`, the
//! softmax and `max_dim` is computed by exactly the same sequence of f32/f64 operations as
//! the upstream composition, in the same order, so those results are bit for bit upstream's,
//! whatever the thread count or scheduling: no reduction is ever split between threads.
//! `gelu_backward` deliberately differs (patch 5: the exact derivative).

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
pub(crate) fn gelu<E: FloatNdArrayElement>(tensor: SharedArray<E>) -> SharedArray<E> {
    let tensor = standard(tensor);
    let sqrt_2: E = Scalar::from(SQRT_2).elem();
    let one: E = Scalar::from(1f32).elem();
    let two: E = Scalar::from(2f32).elem();
    let input = tensor.as_slice().expect("standard layout");
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
/// `Phi(x) + x phi(x) = (1 + erf(x / sqrt 2)) / 2 + x exp(-x^2 / 2) / sqrt(2 pi)`, computed
/// in f64 and rounded once, as PyTorch differentiates `nn.GELU()`.
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
    let out = map_binary(xs, gs, |x, g| {
        let x = x.to_f64();
        let cdf = 0.5 * (1.0 + erf(x / SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
        let derivative: E = (cdf + x * pdf).elem();
        derivative * g
    });
    from_vec(x.shape(), out)
}

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
