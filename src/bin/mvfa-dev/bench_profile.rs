//! `bench --profile-block`: where the time of one vision block goes, op by op, forward and
//! backward, with the real shapes (batch 1, 290 tokens, width 1024, 16 heads, MLP 4096 by
//! default; the `--width`, `--heads` flags apply). Each op runs on its own inputs, once untimed,
//! then `--repeat` times; the table shows the median wall time, its share of the sum, and the
//! cores it kept busy (process CPU time / wall time over the timed runs).
//!
//! Backward rows run on the autodiff backend with frozen weights and an input that needs a
//! gradient, as in training (the backbone is frozen, gradients flow to earlier adapters): the
//! op's forward is built untimed, then `backward()` (gradient of the sum of the output) is
//! timed. The whole block, forward and backward, is timed as well: the gap between it and the
//! sum of the rows is what the split misses (allocation and layout work that the op-by-op runs
//! do differently, the autodiff bookkeeping).
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::bench::{BenchArgs, print_cells};
use mvfa_studio::model::clip::transformer::{BlockConfig, ResidualAttentionBlock};

/// Process CPU time (user + system), seconds.
fn cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF and a valid pointer.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } == 0 {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
            return tv(u.ru_utime) + tv(u.ru_stime);
        }
    }
    f64::NAN
}

/// One measured op: median wall ms and mean cores busy.
struct Op {
    name: String,
    ms: f64,
    cores: f64,
}

/// Runs `setup` then `run` (timed) once untimed and `repeat` times timed.
fn measure<S>(
    repeat: usize,
    name: impl Into<String>,
    mut setup: impl FnMut() -> S,
    mut run: impl FnMut(S) -> f32,
) -> Op {
    run(setup());
    let mut times = Vec::with_capacity(repeat);
    let mut cpu = 0.0;
    let mut wall = 0.0;
    for _ in 0..repeat {
        let s = setup();
        let c = cpu_seconds();
        let t = Instant::now();
        std::hint::black_box(run(s));
        let dt = t.elapsed().as_secs_f64();
        cpu += cpu_seconds() - c;
        wall += dt;
        times.push(dt * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Op {
        name: name.into(),
        ms: times[times.len() / 2],
        cores: cpu / wall,
    }
}

fn first<B: Backend, const D: usize>(t: Tensor<B, D>) -> f32 {
    // One value read back: forces the work on lazy backends, costs nothing on ndarray.
    t.flatten::<1>(0, D - 1)
        .slice(s![0..1])
        .into_scalar()
        .elem::<f32>()
}

fn linear<B: Backend>(x: Tensor<B, 2>, layer: &burn::nn::Linear<B>) -> Tensor<B, 2> {
    burn::tensor::module::linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let info = mvfa_studio::backend::probe(args.cpu);
    if let Some(reason) = &info.fallback_reason {
        eprintln!("note: {reason}");
    }
    println!("backend: {} on {}", info.backend, info.device);
    mvfa_studio::with_backend!(info, |B, device| profile::<B>(args, &device))
}

fn profile<B: Backend>(
    args: &BenchArgs,
    device: &B::Device,
) -> anyhow::Result<std::process::ExitCode> {
    type AD<B> = Autodiff<B>;
    let width = args.width;
    let heads = args.heads.unwrap_or((width / 64).max(1));
    anyhow::ensure!(
        width.is_multiple_of(heads),
        "width {width} is not a multiple of {heads} heads"
    );
    let hd = width / heads;
    let mlp = 4 * width;
    let batch = *args.batches.first().unwrap_or(&1);
    let tokens = mvfa_studio::model::clip::config::VisionConfig::new().num_tokens();
    let n = batch * tokens;
    let r = args.repeat;
    println!(
        "one vision block: batch {batch}, {tokens} tokens, width {width}, {heads} heads of {hd}, MLP {mlp}; \
         median of {r} timed run(s) after one warm-up"
    );
    B::seed(device, 7);
    let block: ResidualAttentionBlock<B> = BlockConfig::new(width, heads, mlp).init(device);
    let rnd =
        |shape: [usize; 2]| Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let rnd4 =
        |shape: [usize; 4]| Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let x = rnd([n, width]);
    let opts = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    };
    let split = |qkv: Tensor<B, 2>| {
        let qkv = qkv
            .reshape([batch, tokens, 3, heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| {
            qkv.clone()
                .slice(s![i..i + 1])
                .reshape([batch, heads, tokens, hd])
        };
        (part(0), part(1), part(2))
    };
    let scale = 1.0 / (hd as f64).sqrt();

    // ---- forward, inner backend ----
    let mut fwd: Vec<Op> = Vec::new();
    fwd.push(measure(
        r,
        "LayerNorm ln_1",
        || x.clone(),
        |x| first(block.ln_1.forward(x)),
    ));
    fwd.push(measure(
        r,
        format!("matmul qkv [{n}x{width}]x[{width}x{}] + bias", 3 * width),
        || x.clone(),
        |x| first(linear(x, &block.attn.qkv)),
    ));
    let qkv_out = rnd([n, 3 * width]);
    fwd.push(measure(
        r,
        "attention (burn module::attention on the q k v views, as the block runs it)",
        || split(qkv_out.clone()),
        |(q, k, v)| first(attention(q, k, v, None, None, opts)),
    ));
    // The same attention written out, to split it: layout, q k^T, softmax, p v.
    fwd.push(measure(
        r,
        "  of which: q, k, v views to contiguous (copies)",
        || split(qkv_out.clone()),
        |(q, k, v)| first(q * 1.0) + first(k * 1.0) + first(v * 1.0),
    ));
    let (q, k, v) = (
        rnd4([batch, heads, tokens, hd]),
        rnd4([batch, heads, tokens, hd]),
        rnd4([batch, heads, tokens, hd]),
    );
    fwd.push(measure(
        r,
        format!("  of which: scores q k^T x scale [{heads}x{tokens}x{hd}]x[{hd}x{tokens}]"),
        || (q.clone(), k.clone()),
        |(q, k)| first(q.matmul(k.swap_dims(2, 3)) * scale),
    ));
    let scores = rnd4([batch, heads, tokens, tokens]);
    fwd.push(measure(
        r,
        format!("  of which: softmax [{heads}x{tokens}x{tokens}]"),
        || scores.clone(),
        |s| first(softmax(s, 3)),
    ));
    fwd.push(measure(
        r,
        format!("  of which: probs v [{heads}x{tokens}x{tokens}]x[{tokens}x{hd}]"),
        || (scores.clone(), v.clone()),
        |(p, v)| first(p.matmul(v)),
    ));
    let ctx = rnd4([batch, heads, tokens, hd]);
    fwd.push(measure(
        r,
        "merge heads (swap_dims + reshape: a copy)",
        || ctx.clone(),
        |c| first(c.swap_dims(1, 2).reshape([n, width]) * 1.0),
    ));
    fwd.push(measure(
        r,
        format!("matmul out_proj [{n}x{width}]x[{width}x{width}] + bias"),
        || x.clone(),
        |x| first(linear(x, &block.attn.out_proj)),
    ));
    fwd.push(measure(
        r,
        "residual add",
        || (x.clone(), x.clone()),
        |(a, b)| first(a + b),
    ));
    fwd.push(measure(
        r,
        "LayerNorm ln_2",
        || x.clone(),
        |x| first(block.ln_2.forward(x)),
    ));
    fwd.push(measure(
        r,
        format!("matmul c_fc [{n}x{width}]x[{width}x{mlp}] + bias"),
        || x.clone(),
        |x| first(linear(x, &block.mlp.c_fc)),
    ));
    let hidden = rnd([n, mlp]);
    fwd.push(measure(
        r,
        format!("erf GELU [{n}x{mlp}]"),
        || hidden.clone(),
        |h| first(gelu(h)),
    ));
    fwd.push(measure(
        r,
        format!("matmul c_proj [{n}x{mlp}]x[{mlp}x{width}] + bias"),
        || hidden.clone(),
        |h| first(linear(h, &block.mlp.c_proj)),
    ));
    fwd.push(measure(
        r,
        "residual add",
        || (x.clone(), x.clone()),
        |(a, b)| first(a + b),
    ));
    let x3 = x.clone().reshape([batch, tokens, width]);
    let whole_fwd = measure(
        r,
        "whole block forward (block.forward)",
        || x3.clone(),
        |x| first(block.forward(x, false)),
    );

    // ---- backward, autodiff backend, frozen weights, input needs a gradient ----
    let ad_block = ResidualAttentionBlock::<AD<B>>::from_inner(block.clone()).no_grad();
    let ad = |t: &Tensor<B, 2>| Tensor::<AD<B>, 2>::from_inner(t.clone()).require_grad();
    let ad4 = |t: &Tensor<B, 4>| Tensor::<AD<B>, 4>::from_inner(t.clone()).require_grad();
    let mut bwd: Vec<Op> = Vec::new();
    fn back<B: burn::tensor::backend::AutodiffBackend, const D: usize>(y: Tensor<B, D>) -> f32 {
        let g = y.backward();
        std::hint::black_box(g);
        0.0
    }
    bwd.push(measure(
        r,
        "LayerNorm ln_1",
        || ad_block.ln_1.forward(ad(&x)),
        back,
    ));
    bwd.push(measure(
        r,
        "matmul qkv (input gradient only)",
        || linear(ad(&x), &ad_block.attn.qkv),
        back,
    ));
    bwd.push(measure(
        r,
        "attention incl. head split (burn module::attention)",
        || {
            let qkv = ad(&qkv_out)
                .reshape([batch, tokens, 3, heads, hd])
                .permute([2, 0, 3, 1, 4]);
            let part = |i: usize| {
                qkv.clone()
                    .slice(s![i..i + 1])
                    .reshape([batch, heads, tokens, hd])
            };
            attention(part(0), part(1), part(2), None, None, opts)
        },
        back,
    ));
    bwd.push(measure(
        r,
        "  of which: scores q k^T x scale",
        || ad4(&q).matmul(ad4(&k).swap_dims(2, 3)) * scale,
        back,
    ));
    bwd.push(measure(
        r,
        "  of which: softmax",
        || softmax(ad4(&scores), 3),
        back,
    ));
    bwd.push(measure(
        r,
        "  of which: probs v",
        || ad4(&scores).matmul(ad4(&v)),
        back,
    ));
    bwd.push(measure(
        r,
        "merge heads (swap_dims + reshape)",
        || ad4(&ctx).swap_dims(1, 2).reshape([n, width]),
        back,
    ));
    bwd.push(measure(
        r,
        "matmul out_proj (input gradient only)",
        || linear(ad(&x), &ad_block.attn.out_proj),
        back,
    ));
    bwd.push(measure(r, "residual add", || ad(&x) + ad(&x), back));
    bwd.push(measure(
        r,
        "LayerNorm ln_2",
        || ad_block.ln_2.forward(ad(&x)),
        back,
    ));
    bwd.push(measure(
        r,
        "matmul c_fc (input gradient only)",
        || linear(ad(&x), &ad_block.mlp.c_fc),
        back,
    ));
    bwd.push(measure(r, "erf GELU", || gelu(ad(&hidden)), back));
    bwd.push(measure(
        r,
        "matmul c_proj (input gradient only)",
        || linear(ad(&hidden), &ad_block.mlp.c_proj),
        back,
    ));
    bwd.push(measure(r, "residual add", || ad(&x) + ad(&x), back));
    let whole_bwd = measure(
        r,
        "whole block backward",
        || ad_block.forward(ad(&x).reshape([batch, tokens, width]), false),
        back,
    );

    for (title, ops, whole) in [("forward", fwd, whole_fwd), ("backward", bwd, whole_bwd)] {
        // Sub-rows ("of which") are inside the attention row: not added to the sum.
        let sum: f64 = ops
            .iter()
            .filter(|o| !o.name.starts_with("  "))
            .map(|o| o.ms)
            .sum();
        let mut cells: Vec<[String; 4]> = ops
            .iter()
            .map(|o| {
                [
                    o.name.clone(),
                    format!("{:.2}", o.ms),
                    format!("{:.1}%", 100.0 * o.ms / sum),
                    format!("{:.2}", o.cores),
                ]
            })
            .collect();
        cells.push([
            "sum of the ops above".into(),
            format!("{sum:.2}"),
            "100.0%".into(),
            "".into(),
        ]);
        cells.push([
            whole.name.clone(),
            format!("{:.2}", whole.ms),
            format!("{:.1}%", 100.0 * whole.ms / sum),
            format!("{:.2}", whole.cores),
        ]);
        println!();
        print_cells(
            &[
                format!("{title} op"),
                "ms".into(),
                "share".into(),
                "cores busy".into(),
            ],
            &cells,
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
