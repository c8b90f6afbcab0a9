//! [mvfa patch 10] Attention's probabilities and its gradients, for an autodiff op.
//!
//! burn-autodiff differentiates `attention` by composing `attention_fallback` from tracked
//! ops: a training step then runs the softmax forward (9 passes) and its backward (about 15)
//! as single-threaded element-wise ops, which took 23 ms of a ViT-L block's 31 ms attention
//! backward. These functions give an autodiff op what it needs instead: the forward's output
//! with the probabilities it computed ([`attention_with_probs`]), and the gradients of query,
//! key and value from them ([`attention_backward`]), the softmax backward being one pass over
//! whole rows on rayon's pool.
//!
//! The forward's output is the very output of `ModuleOps::attention` (same products, same
//! softmax kernel), so training and scoring see the same attention values.

use burn_backend::{
    Scalar, TensorMetadata,
    ops::{AttentionModuleOptions, FloatTensorOps},
};

use crate::{NdArray, NdArrayTensor, SharedArray, execute_with_float_dtype, ops::fused};

/// The element-type parameters of `NdArray` do not matter here: its float ops dispatch on the
/// tensor's own dtype (f32 or f64).
type B = NdArray;

/// The scale of the scores: `options.scale`, else `1 / sqrt(head_dim)`.
fn scale_of(query: &NdArrayTensor, options: &AttentionModuleOptions) -> f64 {
    let head_dim = *query.shape().dims::<4>().last().expect("4-d query");
    options
        .scale
        .unwrap_or_else(|| 1.0 / (head_dim as f64).sqrt())
}

/// Softmax of the scaled scores `q k^T` (causal mask applied), `[batch, heads, seq_q, seq_k]`:
/// the probabilities of `ModuleOps::attention` without an explicit mask, bias or softcap.
pub(crate) fn attention_probs(
    query: NdArrayTensor,
    key: NdArrayTensor,
    options: AttentionModuleOptions,
) -> NdArrayTensor {
    let scale = scale_of(&query, &options);
    let finfo = query.dtype().finfo().expect("float tensor");
    let scores = B::float_matmul(query, B::float_transpose(key));
    execute_with_float_dtype!(scores, FloatElem, |array: SharedArray<FloatElem>| {
        let scale: Scalar = scale.into();
        let min: Scalar = finfo.min.into();
        let min_positive: Scalar = finfo.min_positive.into();
        fused::attention_softmax::<FloatElem>(
            array,
            scale.elem(),
            options.is_causal,
            min.elem(),
            min_positive.elem(),
        )
    })
}

/// Scaled dot-product attention that also returns its probabilities.
///
/// - `query`: `[batch, heads, seq_q, head_dim]`; `key`, `value`: `[batch, heads, seq_k, head_dim]`
/// - returns (`[batch, heads, seq_q, head_dim]` output, `[batch, heads, seq_q, seq_k]`
///   probabilities)
///
/// # Panics
/// With `options.softcap` set (not supported here; `ModuleOps::attention` handles it).
pub fn attention_with_probs(
    query: NdArrayTensor,
    key: NdArrayTensor,
    value: NdArrayTensor,
    options: AttentionModuleOptions,
) -> (NdArrayTensor, NdArrayTensor) {
    assert!(
        options.softcap.is_none(),
        "attention_with_probs: softcap is not supported"
    );
    let probs = attention_probs(query, key, options);
    let output = B::float_matmul(probs.clone(), value);
    (output, probs)
}

/// Gradients of query, key and value of [`attention_with_probs`], given its probabilities and
/// the gradient of its output (`[batch, heads, seq_q, head_dim]`). With P the probabilities,
/// dO the output gradient and s the scale:
///
/// - dV = P^T dO, dP = dO V^T,
/// - dS = s P (dP - rowsum(dP P)) (softmax backward; masked positions have P = 0),
/// - dQ = dS K, dK = dS^T Q.
///
/// Each row of dS is one sequential pass, so results do not depend on the thread count.
pub fn attention_backward(
    query: NdArrayTensor,
    key: NdArrayTensor,
    value: NdArrayTensor,
    probs: NdArrayTensor,
    output_grad: NdArrayTensor,
    options: AttentionModuleOptions,
) -> [NdArrayTensor; 3] {
    let scale = scale_of(&query, &options);
    let value_grad = B::float_matmul(B::float_transpose(probs.clone()), output_grad.clone());
    let probs_grad = B::float_matmul(output_grad, B::float_transpose(value));
    let scores_grad: NdArrayTensor =
        execute_with_float_dtype!((probs, probs_grad), FloatElem, |probs: SharedArray<
            FloatElem,
        >,
                                                                   grad: SharedArray<
            FloatElem,
        >| {
            let scale: Scalar = scale.into();
            fused::attention_softmax_backward::<FloatElem>(probs, grad, scale.elem())
        });
    let query_grad = B::float_matmul(scores_grad.clone(), key);
    let key_grad = B::float_matmul(B::float_transpose(scores_grad), query);
    [query_grad, key_grad, value_grad]
}
