//! Tests of the MVFA Studio patches to burn-ndarray 0.21.0 (PATCHES.md, `[mvfa patch N]` in
//! `src/`), against upstream's own compositions of the same ops: the fused kernels (patches 2,
//! 6, 7) and the copy-free matmul operands (patch 1) must give the same values bit for bit;
//! the matmul (patch 3's split, patch 4's AVX-512 kernels where the CPU has them) must give
//! each element a value that depends only on its row and column, whatever the batch, layout or
//! thread count; and the GELU gradient (patch 5) must be the exact one PyTorch uses.
//!
//! Only burn-tensor and burn-autodiff besides this crate, so that the file runs both here
//! (`cargo test --no-default-features --features std,multi-threads --test patches` in this
//! folder) and from the application, whose `cargo test` builds it as its `ndarray_patches`
//! test against the crate it is patched into.
use burn_autodiff::Autodiff;
use burn_tensor::activation::gelu;
use burn_tensor::module::{attention, attention_fallback, linear};
use burn_tensor::ops::AttentionModuleOptions;
use burn_tensor::{Distribution, Tensor, TensorData};

type B = burn_ndarray::NdArray<f32>;
type AD = Autodiff<B>;

fn bits(data: TensorData) -> Vec<u32> {
    data.to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

fn assert_same<const D: usize>(got: Tensor<B, D>, want: Tensor<B, D>) {
    assert_eq!(got.dims(), want.dims());
    let (got, want) = (bits(got.into_data()), bits(want.into_data()));
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {} values differ", got.len());
}

/// Large enough to be split across threads (several chunks), with values in GELU's
/// curved range and beyond.
fn input(shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::random(shape, Distribution::Normal(0.0, 3.0), &Default::default())
}

#[test]
fn gelu_matches_upstream_composition() {
    let x = input([70, 1030]);
    let want =
        (x.clone() * (x.clone().div_scalar(std::f64::consts::SQRT_2).erf() + 1.0)).div_scalar(2.0);
    assert_same(gelu(x), want);
}

/// The derivative of the exact GELU, `Phi(x) + x phi(x)` (PyTorch's `GeluBackward`),
/// not of its tanh approximation (burn-backend's default, up to 8.7e-4 off).
#[test]
fn gelu_backward_is_the_exact_derivative() {
    let x = input([70, 1030]);
    let g = input([70, 1030]);
    let xa = Tensor::<AD, 2>::from_inner(x.clone()).require_grad();
    let y = gelu(xa.clone()) * Tensor::<AD, 2>::from_inner(g.clone());
    let grads = y.sum().backward();
    let got = xa
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let xs = x.into_data().to_vec::<f32>().unwrap();
    let gs = g.into_data().to_vec::<f32>().unwrap();
    let mut worst = 0f64;
    for ((&x, &g), &got) in xs.iter().zip(&gs).zip(&got) {
        let x = f64::from(x);
        let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let want = (cdf + x * pdf) * f64::from(g);
        worst = worst.max((f64::from(got) - want).abs() / want.abs().max(1e-3));
    }
    // f32 rounding of the derivative and of the product: at most ~2 ulp.
    assert!(worst < 3e-7, "relative error {worst:e}");
}

#[test]
fn attention_matches_upstream_fallback() {
    let device = Default::default();
    // The first case has enough rows to be split across threads; the last one has
    // scores above 2^21 floats, so the patch runs it one batch item at a time.
    for (batch, heads, tokens, causal) in
        [(1, 4, 290, false), (2, 3, 37, true), (3, 16, 290, false)]
    {
        let qkv = |_| {
            Tensor::<B, 4>::random(
                [batch, heads, tokens, 16],
                Distribution::Normal(0.0, 2.0),
                &device,
            )
        };
        let (q, k, v) = (qkv(0), qkv(1), qkv(2));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal,
        };
        let got = attention(q.clone(), k.clone(), v.clone(), None, None, options);
        let want = attention_fallback(q, k, v, None, None, options);
        assert_same(got, want);
    }
}

#[test]
fn transposed_matmul_and_linear_backward_match_contiguous_copies() {
    let x = input([29, 48]);
    let w = input([48, 64]);
    let g = input([29, 64]);
    // A strided (transposed) operand against the same values copied contiguous.
    let wt = w.clone().transpose();
    let wt_copy = Tensor::<B, 2>::from_data(wt.to_data(), &Default::default());
    assert_same(g.clone().matmul(wt), g.clone().matmul(wt_copy.clone()));
    assert_same(x.clone().transpose().matmul(g.clone()), {
        let xt = Tensor::<B, 2>::from_data(x.clone().transpose().to_data(), &Default::default());
        xt.matmul(g.clone())
    });
    // linear's input gradient through autodiff, frozen weight.
    let xa = Tensor::<AD, 2>::from_inner(x).require_grad();
    let wa = Tensor::<AD, 2>::from_inner(w);
    let y = linear(xa.clone(), wa, None) * Tensor::<AD, 2>::from_inner(g.clone());
    let grads = y.sum().backward();
    assert_same(xa.grad(&grads).unwrap(), g.matmul(wt_copy));
    // Batched: the transposed key of attention, [2, 3, 16, 37].
    let k = Tensor::<B, 4>::random([2, 3, 37, 16], Distribution::Default, &Default::default());
    let q = Tensor::<B, 4>::random([2, 3, 37, 16], Distribution::Default, &Default::default());
    let kt_copy =
        Tensor::<B, 4>::from_data(k.clone().swap_dims(2, 3).to_data(), &Default::default());
    assert_same(q.clone().matmul(k.swap_dims(2, 3)), q.matmul(kt_copy));
}

/// The matmul splits output rows across the thread pool: the values must not depend on
/// how many threads there are (a fit on 2 cores and one on 16 give the same adapters).
#[test]
fn matmul_does_not_depend_on_the_thread_count() {
    // Split by rows (m > n) and by columns (n > m).
    let x = input([290, 256]);
    let w = input([256, 96]);
    let w_wide = input([256, 700]);
    let k = Tensor::<B, 4>::random([1, 3, 100, 64], Distribution::Default, &Default::default());
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            (
                x.clone().matmul(w.clone()),
                x.clone().matmul(w_wide.clone()),
                k.clone().matmul(k.clone().swap_dims(2, 3)),
            )
        })
    };
    let (a1, b1, c1) = run(1);
    for threads in [2, 3, 5] {
        let (a, b, c) = run(threads);
        assert_same(a, a1.clone());
        assert_same(b, b1.clone());
        assert_same(c, c1.clone());
    }
}

/// A row's values must not depend on how many rows share the product (a batch of 1 and
/// a batch of 8 give the same scores and maps), on the operands' layout, or on whether
/// the product is degenerate (one row, one column, or tiny).
#[test]
fn matmul_rows_do_not_depend_on_batch_layout_or_shape() {
    let device = Default::default();
    for (k, n) in [(768, 2), (1024, 300), (300, 64), (40, 1), (2, 70)] {
        let a = input([300, k]);
        let b = input([k, n]);
        let full = a.clone().matmul(b.clone());
        let b_t_copy = Tensor::<B, 2>::from_data(b.clone().transpose().to_data(), &device);
        for (start, rows) in [(0, 1), (7, 2), (100, 64), (3, 65), (0, 300)] {
            let part = a.clone().narrow(0, start, rows);
            let want = full.clone().narrow(0, start, rows);
            assert_same(part.clone().matmul(b.clone()), want.clone());
            // The same right operand stored k-contiguous (a transposed view).
            assert_same(
                part.clone().matmul(b_t_copy.clone().transpose()),
                want.clone(),
            );
            // The left operand stored column-major.
            let part_t = Tensor::<B, 2>::from_data(part.clone().transpose().to_data(), &device);
            assert_same(part_t.transpose().matmul(b.clone()), want);
        }
        // Batched with a broadcast weight, as `linear` runs it.
        let batched = a
            .clone()
            .reshape([3, 100, k])
            .matmul(b.clone().unsqueeze::<3>());
        assert_same(batched.reshape([300, n]), full);
    }
}

/// Whatever kernel runs (AVX-512 gemm or matrixmultiply), the product is the exact one
/// to f32 accuracy.
#[test]
fn matmul_matches_f64_reference() {
    let (m, k, n) = (70, 300, 90);
    let a = input([m, k]);
    let b = input([k, n]);
    let got = a
        .clone()
        .matmul(b.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let a = a.into_data().to_vec::<f32>().unwrap();
    let b = b.into_data().to_vec::<f32>().unwrap();
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut scale) = (0f64, 0f64);
            for l in 0..k {
                let p = f64::from(a[i * k + l]) * f64::from(b[l * n + j]);
                sum += p;
                scale += p.abs();
            }
            let err = (f64::from(got[i * n + j]) - sum).abs();
            assert!(
                err <= 1e-5 * scale,
                "({i}, {j}): {err:e} for a sum of {scale}"
            );
        }
    }
}

/// `max_dim` (patched: one pass) against upstream's argmax + gather, bit for bit,
/// including NaNs, ties between 0.0 and -0.0, and every axis.
#[test]
fn max_dim_matches_argmax_then_gather() {
    let device = Default::default();
    let mut values = input([6, 7])
        .reshape([2, 3, 7])
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    values[0] = f32::NAN;
    values[9] = f32::NAN;
    values[1] = 0.0;
    values[8] = -0.0;
    let x = Tensor::<B, 3>::from_data(TensorData::new(values, [2, 3, 7]), &device);
    for dim in 0..3 {
        let got = x.clone().max_dim(dim);
        let index = x.clone().argmax(dim);
        let want = x.clone().gather(dim, index);
        assert_eq!(got.dims(), want.dims());
        let (got, want) = (bits(got.into_data()), bits(want.into_data()));
        assert_eq!(got, want, "dim {dim}");
    }
}
