//! [mvfa patch 2] Fused, multi-threaded element-wise kernels (GELU and its backward, the
//! softmax of attention).
//!
//! Upstream builds these from 5 to 15 separate single-threaded tensor ops, each allocating
//! a full-size temporary. Here each runs as one pass, split into fixed chunks (element-wise
//! maps) or whole rows (softmax) over rayon's pool. Every output element is computed by
//! exactly the same sequence of f32/f64 operations as the upstream composition, in the same
//! order, so the results are bit for bit those of upstream, whatever the thread count or
//! scheduling: no reduction is ever split between threads.

use alloc::vec::Vec;
use burn_backend::{ElementConversion, Scalar};
use core::f64::consts::SQRT_2;
use libm::erf;
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

/// Upstream's default `ActivationOps::gelu_backward` in one pass: `grad` times the derivative
/// of the tanh approximation of GELU (sic: upstream differentiates the approximation even for
/// the exact GELU; kept as is so that gradients stay those of upstream).
pub(crate) fn gelu_backward<E: FloatNdArrayElement>(
    x: SharedArray<E>,
    grad: SharedArray<E>,
) -> SharedArray<E> {
    assert_eq!(x.shape(), grad.shape(), "gelu_backward: shapes differ");
    let (x, grad) = (standard(x), standard(grad));
    let c1: E = Scalar::from(0.0356774f64).elem();
    let c2: E = Scalar::from(0.797885f64).elem();
    let c3: E = Scalar::from(0.0535161f64).elem();
    let c4: E = Scalar::from(0.398942f64).elem();
    let three: f32 = Scalar::from(3i32).elem();
    let minus_one: E = Scalar::from(-1f32).elem();
    let one: E = Scalar::from(1i32).elem();
    let half: E = Scalar::from(0.5f64).elem();
    let xs = x.as_slice().expect("standard layout");
    let gs = grad.as_slice().expect("standard layout");
    let out = map_binary(xs, gs, |x, g| {
        let x3 = x.powf_elem(three);
        let inner1 = x3 * c1 + x * c2;
        let inner2 = x3 * c3 + x * c4;
        let tanh: E = inner1.to_f64().tanh().elem();
        let sech = (tanh * tanh) * minus_one + one;
        let y1 = tanh * half;
        let y2 = inner2 * sech + half;
        (y1 + y2) * g
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
    let input = scores.as_slice().expect("standard layout");
    let mut out = input.to_vec();
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
    from_vec(&shape, out)
}
