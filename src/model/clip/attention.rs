//! Scaled dot-product attention, with its own backward pass for training on the CPU.
//!
//! burn's `Autodiff` backend differentiates `attention` by composing it from tracked tensor
//! ops, so a training step ran the softmax forward and backward as single-threaded
//! element-wise passes: about 23 of the 31 ms of a ViT-L block's attention backward here.
//! On `Autodiff<NdArray<f32>>` (the CPU training backend) attention is instead one autodiff
//! op whose backward is the closed form (dV = PᵀdO, dS = s·P∘(dP − rowsum(dP∘P)), dQ = dS·K,
//! dK = dSᵀ·Q), computed by the patched burn-ndarray (patch 10) from the probabilities its
//! forward kept. Every other backend, and scoring, calls burn's `attention` as before; the
//! op's forward output is the same as that call's, bit for bit.
use burn::prelude::*;
use burn::tensor::ops::AttentionModuleOptions;

/// Self-attention of already split heads.
///
/// - `q`, `k`, `v`: `[batch, heads, tokens, head_dim]`
/// - returns `[batch, heads, tokens, head_dim]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    #[cfg(patched_ndarray)]
    let (q, k, v) = match cpu_training::attention(q, k, v, options) {
        Ok(out) => return out,
        Err(inputs) => inputs,
    };
    burn::tensor::module::attention(q, k, v, None, None, options)
}

#[cfg(patched_ndarray)]
mod cpu_training {
    use std::any::{Any, TypeId};

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::prelude::*;
    use burn::tensor::TensorPrimitive;
    use burn::tensor::ops::{AttentionModuleOptions, FloatTensor, ModuleOps};

    use crate::backend::{CpuBackend, CpuTrainBackend};

    type Inputs<B> = (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>);

    /// Attention as one autodiff op when `B` is the CPU training backend; the inputs back
    /// otherwise.
    pub fn attention<B: Backend>(
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        options: AttentionModuleOptions,
    ) -> Result<Tensor<B, 4>, Inputs<B>> {
        if TypeId::of::<B>() != TypeId::of::<CpuTrainBackend>() || options.softcap.is_some() {
            return Err((q, k, v));
        }
        let out = tracked_attention(cast(q), cast(k), cast(v), options);
        Ok(cast(out))
    }

    /// The same tensor under its concrete type (only called where the two types are one).
    fn cast<From: Backend, To: Backend>(tensor: Tensor<From, 4>) -> Tensor<To, 4> {
        *(Box::new(tensor) as Box<dyn Any>)
            .downcast::<Tensor<To, 4>>()
            .expect("attention: backend types checked equal")
    }

    /// What the backward pass needs: the inputs, the forward's probabilities and the options.
    #[derive(Debug, Clone)]
    struct State {
        q: FloatTensor<CpuBackend>,
        k: FloatTensor<CpuBackend>,
        v: FloatTensor<CpuBackend>,
        probs: FloatTensor<CpuBackend>,
        options: AttentionModuleOptions,
    }

    #[derive(Debug)]
    struct AttentionBackward;

    impl Backward<CpuBackend, 3> for AttentionBackward {
        type State = State;

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let output_grad = grads.consume::<CpuBackend>(&ops.node);
            let State {
                q,
                k,
                v,
                probs,
                options,
            } = ops.state;
            let input_grads =
                burn_ndarray::attention_backward(q, k, v, probs, output_grad, options);
            for (parent, grad) in ops.parents.into_iter().zip(input_grads) {
                if let Some(node) = parent {
                    grads.register::<CpuBackend>(node.id, grad);
                }
            }
        }
    }

    fn tracked_attention(
        q: Tensor<CpuTrainBackend, 4>,
        k: Tensor<CpuTrainBackend, 4>,
        v: Tensor<CpuTrainBackend, 4>,
        options: AttentionModuleOptions,
    ) -> Tensor<CpuTrainBackend, 4> {
        let (q, k, v) = (
            q.into_primitive().tensor(),
            k.into_primitive().tensor(),
            v.into_primitive().tensor(),
        );
        let prep = AttentionBackward
            .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful();
        let out = match prep {
            OpsKind::Tracked(prep) => {
                let (out, probs) = burn_ndarray::attention_with_probs(
                    q.primitive.clone(),
                    k.primitive.clone(),
                    v.primitive.clone(),
                    options,
                );
                let state = State {
                    q: q.primitive,
                    k: k.primitive,
                    v: v.primitive,
                    probs,
                    options,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(CpuBackend::attention(
                q.primitive,
                k.primitive,
                v.primitive,
                None,
                None,
                options,
            )),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }
}

#[cfg(all(test, patched_ndarray))]
mod tests {
    use super::*;
    use crate::backend::CpuTrainBackend as AD;
    use burn::tensor::Distribution;

    /// On the CPU training backend the op gives burn's attention output and the gradients
    /// autodiff derives from burn's composed attention (to f32 rounding).
    #[test]
    fn training_attention_matches_burns_composed_attention() {
        let device = Default::default();
        for causal in [false, true] {
            let draw = || {
                Tensor::<AD, 4>::random([2, 3, 29, 8], Distribution::Normal(0.0, 2.0), &device)
                    .require_grad()
            };
            let (q, k, v) = (draw(), draw(), draw());
            let weights = Tensor::<AD, 4>::random([2, 3, 29, 8], Distribution::Default, &device);
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: causal,
            };
            let ours = attention(q.clone(), k.clone(), v.clone(), options);
            let burns = burn::tensor::module::attention(
                q.clone(),
                k.clone(),
                v.clone(),
                None,
                None,
                options,
            );
            assert_eq!(
                ours.clone().inner().into_data(),
                burns.clone().inner().into_data()
            );
            let ours = (ours * weights.clone()).sum().backward();
            let burns = (burns * weights).sum().backward();
            for input in [&q, &k, &v] {
                let (got, want) = (input.grad(&ours).unwrap(), input.grad(&burns).unwrap());
                let scale = want.clone().abs().max().into_scalar();
                let worst = (got - want).abs().max().into_scalar();
                assert!(
                    worst <= 1e-5 * scale,
                    "off by {worst:e} (largest {scale:e})"
                );
            }
        }
    }
}
