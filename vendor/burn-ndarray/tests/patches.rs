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

/// [patch 9] f32 GELU with PyTorch's CPU `erf` (Abramowitz & Stegun 7.1.26, |error| <=
/// 1.5e-7) against the exact GELU in f64: within that error times |x| / 2, plus f32 rounding.
#[test]
fn gelu_matches_the_exact_gelu_to_pytorchs_accuracy() {
    let x = input([70, 1030]);
    let got = gelu(x.clone()).into_data().to_vec::<f32>().unwrap();
    let xs = x.into_data().to_vec::<f32>().unwrap();
    let mut worst = 0f64;
    for (&x, &got) in xs.iter().zip(&got) {
        let x = f64::from(x);
        let want = 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        let bound = 2e-7 * x.abs() + 2.5e-7 * want.abs() + 1e-30;
        worst = worst.max((f64::from(got) - want).abs() / bound);
    }
    assert!(worst <= 1.0, "error {worst} times the bound");
    // Far tails: exactly x, and exactly 0 (no NaN from the exponential's underflow).
    let tails = Tensor::<B, 1>::from_floats([30.0, 1e6, -30.0, -1e6, 0.0], &Default::default());
    let tails = gelu(tails).into_data().to_vec::<f32>().unwrap();
    assert_eq!(tails, [30.0, 1e6, -0.0, -0.0, 0.0]);
}

/// [patch 9] The f32 GELU gives each element the same value whatever the tensor's size
/// (vector width, chunking and threads change nothing).
#[test]
fn gelu_values_do_not_depend_on_the_tensor_size() {
    let x = input([70, 1030]);
    let full = bits(gelu(x.clone()).into_data());
    let part = bits(gelu(x.slice([3..4, 5..22])).into_data());
    let want: Vec<u32> = (5..22).map(|j| full[3 * 1030 + j]).collect();
    assert_eq!(part, want);
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
        // PyTorch's f32 erf (|error| <= 1.5e-7, patch 9) in the cdf, f32 rounding.
        let bound = 2e-7 * f64::from(g).abs() + 3e-7 * want.abs();
        worst = worst.max((f64::from(got) - want).abs() / bound);
    }
    assert!(worst <= 1.0, "error {worst} times the bound");
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

/// [patch 10] Attention's forward with its probabilities gives `attention`'s output bit for
/// bit, and its closed-form backward the gradients that autodiff derives from the composed
/// fallback, computed in f64 (within f32 rounding of the largest gradient).
#[test]
fn attention_backward_matches_autodiff_of_the_fallback_in_f64() {
    use burn_tensor::{DType, TensorPrimitive};
    type B64 = burn_ndarray::NdArray<f64>;
    type AD64 = Autodiff<B64>;
    let device = Default::default();
    for (batch, heads, tokens, causal) in [(1, 4, 290, false), (2, 3, 37, true)] {
        let draw = || {
            Tensor::<B, 4>::random(
                [batch, heads, tokens, 16],
                Distribution::Normal(0.0, 2.0),
                &device,
            )
        };
        let (q, k, v, grad) = (draw(), draw(), draw(), draw());
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal,
        };
        let prim = |t: &Tensor<B, 4>| t.clone().into_primitive().tensor();
        let (out, probs) =
            burn_ndarray::attention_with_probs(prim(&q), prim(&k), prim(&v), options);
        let out = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(out));
        assert_same(
            out,
            attention(q.clone(), k.clone(), v.clone(), None, None, options),
        );
        let got = burn_ndarray::attention_backward(
            prim(&q),
            prim(&k),
            prim(&v),
            probs,
            prim(&grad),
            options,
        );

        let to64 = |t: &Tensor<B, 4>| {
            Tensor::<AD64, 4>::from_data(t.to_data().convert::<f64>(), (&device, DType::F64))
                .require_grad()
        };
        let (q64, k64, v64) = (to64(&q), to64(&k), to64(&v));
        let out64 = attention_fallback(q64.clone(), k64.clone(), v64.clone(), None, None, options);
        let grad64 =
            Tensor::<AD64, 4>::from_data(grad.to_data().convert::<f64>(), (&device, DType::F64));
        let grads = (out64 * grad64).sum().backward();
        for (name, got, want) in [
            ("query", got[0].clone(), q64.grad(&grads).unwrap()),
            ("key", got[1].clone(), k64.grad(&grads).unwrap()),
            ("value", got[2].clone(), v64.grad(&grads).unwrap()),
        ] {
            let got = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(got))
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let want = want.into_data().to_vec::<f64>().unwrap();
            let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0.0f64, f64::max);
            assert!(
                worst <= 1e-5 * scale,
                "{name} gradient (causal {causal}): off by {worst:e}, largest {scale:e}"
            );
        }
    }
}

/// [patch 11] Reading back a shared array (a clone is alive) copies a standard-layout array
/// whole: the same values in the same order as element by element, for plain, sliced (an
/// offset) and transposed (element by element still) tensors.
#[test]
fn reading_back_shared_tensors_keeps_values_and_order() {
    let device = Default::default();
    let values: Vec<f32> = (0..2 * 5 * 7).map(|i| i as f32).collect();
    let x = Tensor::<B, 3>::from_data(TensorData::new(values.clone(), [2, 5, 7]), &device);
    let _alive = x.clone();
    assert_eq!(x.to_data().to_vec::<f32>().unwrap(), values);
    let sliced = x.clone().slice([0..1, 1..5, 0..7]);
    let want: Vec<f32> = values[7..35].to_vec();
    let _alive = sliced.clone();
    assert_eq!(sliced.into_data().to_vec::<f32>().unwrap(), want);
    let transposed = x.clone().swap_dims(1, 2);
    let _alive = transposed.clone();
    let mut want = Vec::new();
    for b in 0..2 {
        for c in 0..7 {
            for r in 0..5 {
                want.push(values[b * 35 + r * 7 + c]);
            }
        }
    }
    assert_eq!(transposed.into_data().to_vec::<f32>().unwrap(), want);
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

/// [patch 8] Every kernel this process can run (the pure-Rust ones and each BLAS it can
/// open, e.g. Debian's libopenblas0 where installed) computes the exact product to f32
/// accuracy, with a plain and a transposed right operand, for one row and for many.
#[test]
fn every_available_kernel_matches_f64_reference() {
    let (k, n) = (300, 90);
    for kernel in burn_ndarray::F32Kernel::available() {
        for m in [1, 70] {
            for transposed in [false, true] {
                let lhs: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                    .collect();
                let rhs: Vec<f32> = (0..k * n)
                    .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                    .collect();
                let got = burn_ndarray::f32_product(kernel, (m, k, n), &lhs, &rhs, transposed);
                for i in 0..m {
                    for j in 0..n {
                        let (mut sum, mut scale) = (0f64, 0f64);
                        for l in 0..k {
                            let b = if transposed {
                                rhs[j * k + l]
                            } else {
                                rhs[l * n + j]
                            };
                            let p = f64::from(lhs[i * k + l]) * f64::from(b);
                            sum += p;
                            scale += p.abs();
                        }
                        let err = (f64::from(got[i * n + j]) - sum).abs();
                        assert!(
                            err <= 1e-5 * scale,
                            "{}: m {m}, transposed {transposed}, ({i}, {j}): {err:e}",
                            kernel.name()
                        );
                    }
                }
            }
        }
    }
}

/// [patch 8] The pure-Rust kernels give a row the same value whatever the number of rows
/// (the property the application's kernel choice requires of a BLAS before it picks it).
#[test]
fn pure_rust_kernels_give_rows_independent_of_the_row_count() {
    let (m, k, n) = (130, 257, 150);
    let lhs: Vec<f32> = (0..m * k)
        .map(|i| ((i * 31 % 103) as f32 - 51.0) / 51.0)
        .collect();
    let rhs: Vec<f32> = (0..k * n)
        .map(|i| ((i * 17 % 89) as f32 - 44.0) / 44.0)
        .collect();
    for kernel in burn_ndarray::F32Kernel::available() {
        if matches!(kernel, burn_ndarray::F32Kernel::Blas(_)) {
            continue;
        }
        for transposed in [false, true] {
            let full = burn_ndarray::f32_product(kernel, (m, k, n), &lhs, &rhs, transposed);
            for (first, rows) in [(0, 1), (3, 2), (64, 65), (129, 1)] {
                let part = burn_ndarray::f32_product(
                    kernel,
                    (rows, k, n),
                    &lhs[first * k..(first + rows) * k],
                    &rhs,
                    transposed,
                );
                assert!(
                    part.iter()
                        .zip(&full[first * n..(first + rows) * n])
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{}: rows {first}..{} differ",
                    kernel.name(),
                    first + rows
                );
            }
        }
    }
}

/// [patch 8] Naming a kernel that cannot run here says why.
#[test]
fn an_unavailable_kernel_is_refused_with_its_reason() {
    let err = burn_ndarray::F32Kernel::from_name("/nonexistent/libnoblas.so").unwrap_err();
    assert!(err.contains("/nonexistent/libnoblas.so"), "{err}");
    let matrixmultiply = burn_ndarray::F32Kernel::from_name("matrixmultiply").unwrap();
    assert_eq!(matrixmultiply.key(), "matrixmultiply");
    #[cfg(target_arch = "x86_64")]
    if !std::is_x86_feature_detected!("avx512f") {
        let err = burn_ndarray::F32Kernel::from_name("gemm").unwrap_err();
        assert!(err.contains("AVX-512"), "{err}");
    }
}
