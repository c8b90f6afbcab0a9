//! The pre-norm residual attention block shared by both CLIP towers:
//! `x <- x + Attn(ln_1(x)); x <- x + MLP(ln_2(x))` (no LayerScale, no dropout).
//!
//! Layout choices, for speed on the ndarray backend and for any backend alike:
//! - q, k and v come from one fused `[width, 3 * width]` linear (the open_clip
//!   `in_proj_weight`, transposed), so each block does one large matmul instead of three.
//! - Every linear runs on the token matrix `[batch * tokens, width]`: one 2-D matmul per layer
//!   instead of a broadcast batched one.
//! - Attention itself is burn's `attention` op, which the CUDA backend implements as a fused
//!   kernel and the CPU backends as matmul + softmax; CPU training differentiates it as one
//!   op (`attention.rs`).
use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::ops::AttentionModuleOptions;

use super::attention::attention;
use super::config::Activation;

/// Configuration of one residual attention block.
#[derive(Config, Debug, PartialEq)]
pub struct BlockConfig {
    /// Residual stream width.
    pub width: usize,
    /// Attention heads (head width = `width / heads`).
    pub heads: usize,
    /// Hidden width of the MLP (4 x width in CLIP).
    pub mlp_width: usize,
    /// MLP activation; erf GELU for MVFA (spec 1.2).
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl BlockConfig {
    /// Builds a block with random weights (lazy: allocated on first use).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResidualAttentionBlock<B> {
        let ln = LayerNormConfig::new(self.width).with_epsilon(self.layer_norm_eps);
        ResidualAttentionBlock {
            ln_1: ln.init(device),
            attn: SelfAttention {
                qkv: LinearConfig::new(self.width, 3 * self.width).init(device),
                out_proj: LinearConfig::new(self.width, self.width).init(device),
                heads: self.heads,
            },
            ln_2: ln.init(device),
            mlp: Mlp {
                c_fc: LinearConfig::new(self.width, self.mlp_width).init(device),
                c_proj: LinearConfig::new(self.mlp_width, self.width).init(device),
                activation: self.activation,
            },
        }
    }
}

/// Multi-head self-attention with a fused q/k/v projection.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `[width, 3 * width]`: columns `0..w` give q, `w..2w` k, `2w..3w` v (open_clip's
    /// `in_proj_weight` transposed; Hugging Face q/k/v projections stacked then transposed).
    pub qkv: Linear<B>,
    /// `[width, width]` output projection.
    pub out_proj: Linear<B>,
    /// Number of heads.
    pub heads: usize,
}

/// The block MLP: `c_proj(act(c_fc(x)))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[width, mlp_width]`.
    pub c_fc: Linear<B>,
    /// `[mlp_width, width]`.
    pub c_proj: Linear<B>,
    /// Non-linearity between the two.
    pub activation: Activation,
}

/// One pre-norm residual attention block.
#[derive(Module, Debug)]
pub struct ResidualAttentionBlock<B: Backend> {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm<B>,
    /// Self-attention.
    pub attn: SelfAttention<B>,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// Feed-forward part.
    pub mlp: Mlp<B>,
}

/// `x @ weight + bias` on a token matrix `[n, d_in] -> [n, d_out]`.
fn linear<B: Backend>(x: Tensor<B, 2>, layer: &Linear<B>) -> Tensor<B, 2> {
    burn::tensor::module::linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

impl<B: Backend> ResidualAttentionBlock<B> {
    /// Applies the block.
    ///
    /// - `x`: `[batch, tokens, width]`
    /// - `causal`: mask attention to earlier positions (the text tower)
    /// - returns `[batch, tokens, width]`
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let [batch, tokens, width] = x.dims();
        let x = x.reshape([batch * tokens, width]);
        let h = self
            .attn
            .forward(self.ln_1.forward(x.clone()), batch, tokens, causal);
        let x = x + h;
        let h = self.mlp.forward(self.ln_2.forward(x.clone()));
        (x + h).reshape([batch, tokens, width])
    }
}

impl<B: Backend> SelfAttention<B> {
    /// Self-attention over the token matrix.
    ///
    /// - `x`: `[batch * tokens, width]` (already layer-normed)
    /// - returns `[batch * tokens, width]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        batch: usize,
        tokens: usize,
        causal: bool,
    ) -> Tensor<B, 2> {
        let [n, width] = x.dims();
        let head_dim = width / self.heads;
        // [n, 3w] -> [batch, tokens, 3, heads, head_dim] -> [3, batch, heads, tokens, head_dim]
        let qkv = linear(x, &self.qkv)
            .reshape([batch, tokens, 3, self.heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| {
            qkv.clone()
                .slice(s![i..i + 1])
                .reshape([batch, self.heads, tokens, head_dim])
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal,
        };
        // scale defaults to 1/sqrt(head_dim), as in CLIP.
        let context = attention(q, k, v, options);
        // [batch, heads, tokens, head_dim] -> [batch, tokens, heads, head_dim] -> [n, width]
        let context = context.swap_dims(1, 2).reshape([n, width]);
        linear(context, &self.out_proj)
    }
}

impl<B: Backend> Mlp<B> {
    /// - `x`: `[n, width]` (already layer-normed); returns `[n, width]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = linear(x, &self.c_fc);
        let h = match self.activation {
            Activation::Gelu => exact_gelu(h),
            Activation::QuickGelu => h.clone() * sigmoid(h * 1.702),
        };
        linear(h, &self.c_proj)
    }
}

/// Exact (erf) GELU whose gradient, under autodiff, is the exact derivative
/// `Phi(x) + x phi(x)` as in PyTorch.
///
/// burn's `gelu` op computes the exact GELU, but burn-backend's default `gelu_backward`
/// differentiates its tanh approximation (up to 8.7e-4 off per element). The vendored
/// burn-ndarray overrides that with the exact derivative (vendor/burn-ndarray/PATCHES.md,
/// patch 5); on other backends (CUDA) training composes the GELU from `erf`, whose autodiff
/// gradient is exact. Inference always uses the `gelu` op.
fn exact_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if gelu_is_composed::<B>(&x.device()) {
        composed_gelu(x)
    } else {
        gelu(x)
    }
}

/// Whether [`exact_gelu`] composes the GELU from `erf`: under autodiff, on a backend other
/// than the patched burn-ndarray.
fn gelu_is_composed<B: Backend>(device: &B::Device) -> bool {
    B::ad_enabled(device) && !B::name(device).contains("ndarray")
}

/// `x (1 + erf(x / sqrt 2)) / 2`, in the order of burn-backend's default `gelu`.
fn composed_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    (x.clone() * (x.div_scalar(std::f64::consts::SQRT_2).erf() + 1.0)).div_scalar(2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    type B = NdArray<f32>;

    /// The fused block against a plain per-head reference written with separate matmuls.
    #[test]
    fn block_matches_unfused_reference() {
        let device = Default::default();
        for causal in [false, true] {
            let cfg = BlockConfig::new(12, 3, 20);
            let block = cfg.init::<B>(&device);
            let x = Tensor::<B, 3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &device);
            let got = block.forward(x.clone(), causal);

            // Reference: per batch, per head, explicit softmax.
            let ln1 = block.ln_1.forward(x.clone());
            let w = block.attn.qkv.weight.val();
            let b = block.attn.qkv.bias.as_ref().unwrap().val();
            let qkv = ln1.matmul(w.unsqueeze::<3>()) + b.unsqueeze::<3>();
            let mut heads = Vec::new();
            for h in 0..3 {
                let q = qkv.clone().slice(s![.., .., h * 4..h * 4 + 4]);
                let k = qkv.clone().slice(s![.., .., 12 + h * 4..12 + h * 4 + 4]);
                let v = qkv.clone().slice(s![.., .., 24 + h * 4..24 + h * 4 + 4]);
                let mut scores = q.matmul(k.swap_dims(1, 2)) / 2.0;
                if causal {
                    let mask = Tensor::<B, 2, Bool>::tril_mask([5, 5], 0, &device);
                    scores = scores
                        .mask_fill(mask.unsqueeze::<3>().expand([2, 5, 5]), f32::NEG_INFINITY);
                }
                heads.push(burn::tensor::activation::softmax(scores, 2).matmul(v));
            }
            let ctx = Tensor::cat(heads, 2);
            let o = block.attn.out_proj.forward(ctx);
            let x1 = x + o;
            let m = block
                .mlp
                .c_proj
                .forward(gelu(block.mlp.c_fc.forward(block.ln_2.forward(x1.clone()))));
            let want = x1 + m;
            got.into_data()
                .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn quick_gelu_is_x_sigmoid_1702x() {
        let device = Default::default();
        let mut mlp = BlockConfig::new(2, 1, 2)
            .with_activation(Activation::QuickGelu)
            .init::<B>(&device)
            .mlp;
        // Identity c_fc / c_proj so the output is the activation itself.
        let eye = Tensor::<B, 2>::from_data(TensorData::from([[1.0f32, 0.0], [0.0, 1.0]]), &device);
        let zero = Tensor::<B, 1>::zeros([2], &device);
        mlp.c_fc.weight = burn::module::Param::from_tensor(eye.clone());
        mlp.c_fc.bias = Some(burn::module::Param::from_tensor(zero.clone()));
        mlp.c_proj.weight = burn::module::Param::from_tensor(eye);
        mlp.c_proj.bias = Some(burn::module::Param::from_tensor(zero));
        let x = Tensor::<B, 2>::from_data(TensorData::from([[-1.0f32, 2.0]]), &device);
        let y = mlp.forward(x).into_data().to_vec::<f32>().unwrap();
        let q = |x: f32| x / (1.0 + (-1.702 * x).exp());
        assert!(
            (y[0] - q(-1.0)).abs() < 1e-6 && (y[1] - q(2.0)).abs() < 1e-6,
            "{y:?}"
        );
    }

    /// The composed GELU (training on backends without patched kernels) has the same values
    /// and, under autodiff, the same exact gradient as the patched burn-ndarray's `gelu`, to
    /// the accuracy of the patched kernel's f32 `erf` (PyTorch's: 1.5e-7, patch 9).
    #[test]
    fn composed_gelu_matches_the_patched_kernel_with_its_gradient() {
        type AD = burn::backend::Autodiff<B>;
        let device = Default::default();
        let x = Tensor::<B, 2>::random([40, 300], Distribution::Normal(0.0, 3.0), &device);
        let g = Tensor::<B, 2>::random([40, 300], Distribution::Normal(0.0, 1.0), &device);
        composed_gelu(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&gelu(x.clone()).into_data(), Tolerance::absolute(3e-6));
        let gradient = |composed: bool| {
            let xa = Tensor::<AD, 2>::from_inner(x.clone()).require_grad();
            let y = if composed {
                composed_gelu(xa.clone())
            } else {
                gelu(xa.clone())
            };
            let grads = (y * Tensor::<AD, 2>::from_inner(g.clone()))
                .sum()
                .backward();
            xa.grad(&grads).unwrap()
        };
        gradient(true)
            .into_data()
            .assert_approx_eq::<f32>(&gradient(false).into_data(), Tolerance::absolute(2e-6));
        // On the CPU backends the fused op is used, with and without autodiff.
        assert!(!gelu_is_composed::<B>(&device));
        assert!(!gelu_is_composed::<AD>(&device));
    }
}
