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
        let c = mvfa_studio::backend::process_cpu_seconds();
        let t = Instant::now();
        std::hint::black_box(run(s));
        let dt = t.elapsed().as_secs_f64();
        cpu += mvfa_studio::backend::process_cpu_seconds() - c;
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

/// The shapes of the profiled block and the number of timed runs.
struct Shapes {
    batch: usize,
    tokens: usize,
    width: usize,
    heads: usize,
    /// Head dimension.
    hd: usize,
    mlp: usize,
    /// Rows of the token matrix: batch x tokens.
    n: usize,
    repeat: usize,
}

impl Shapes {
    fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        let width = args.width;
        let heads = args.heads.unwrap_or((width / 64).max(1));
        anyhow::ensure!(
            width.is_multiple_of(heads),
            "width {width} is not a multiple of {heads} heads"
        );
        let batch = *args.batches.first().unwrap_or(&1);
        let tokens = mvfa_studio::model::clip::config::VisionConfig::new().num_tokens();
        Ok(Self {
            batch,
            tokens,
            width,
            heads,
            hd: width / heads,
            mlp: 4 * width,
            n: batch * tokens,
            repeat: args.repeat,
        })
    }

    /// The q, k, v views of a qkv projection, as the block takes them.
    fn split<B: Backend>(&self, qkv: Tensor<B, 2>) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let (batch, tokens, heads, hd) = (self.batch, self.tokens, self.heads, self.hd);
        let qkv = qkv
            .reshape([batch, tokens, 3, heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| {
            qkv.clone()
                .slice(s![i..i + 1])
                .reshape([batch, heads, tokens, hd])
        };
        (part(0), part(1), part(2))
    }

    /// `1 / sqrt(head dimension)`.
    fn scale(&self) -> f64 {
        1.0 / (self.hd as f64).sqrt()
    }
}

/// Random inputs of each op, drawn in this order from the seeded generator.
struct Inputs<B: Backend> {
    /// Block input, `[n, width]`.
    x: Tensor<B, 2>,
    /// Output of the qkv projection, `[n, 3 width]`.
    qkv_out: Tensor<B, 2>,
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    /// Attention scores, `[batch, heads, tokens, tokens]`.
    scores: Tensor<B, 4>,
    /// Attention output per head, `[batch, heads, tokens, hd]`.
    ctx: Tensor<B, 4>,
    /// MLP hidden layer, `[n, mlp]`.
    hidden: Tensor<B, 2>,
}

impl<B: Backend> Inputs<B> {
    fn new(sh: &Shapes, device: &B::Device) -> Self {
        let rnd = |shape: [usize; 2]| {
            Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 1.0), device)
        };
        let rnd4 = |shape: [usize; 4]| {
            Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device)
        };
        let per_head = [sh.batch, sh.heads, sh.tokens, sh.hd];
        Self {
            x: rnd([sh.n, sh.width]),
            qkv_out: rnd([sh.n, 3 * sh.width]),
            q: rnd4(per_head),
            k: rnd4(per_head),
            v: rnd4(per_head),
            scores: rnd4([sh.batch, sh.heads, sh.tokens, sh.tokens]),
            ctx: rnd4(per_head),
            hidden: rnd([sh.n, sh.mlp]),
        }
    }
}

fn attention_options() -> AttentionModuleOptions {
    AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: false,
    }
}

/// A copy of `t` on the autodiff backend that needs a gradient.
fn ad<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Tensor<Autodiff<B>, D> {
    Tensor::<Autodiff<B>, D>::from_inner(t.clone()).require_grad()
}

/// The timed part of a backward row: the gradient of the sum of `y`.
fn back<B: burn::tensor::backend::AutodiffBackend, const D: usize>(y: Tensor<B, D>) -> f32 {
    let g = y.backward();
    std::hint::black_box(g);
    0.0
}

fn profile<B: Backend>(
    args: &BenchArgs,
    device: &B::Device,
) -> anyhow::Result<std::process::ExitCode> {
    let sh = Shapes::new(args)?;
    let (batch, tokens, width, heads, hd, mlp) =
        (sh.batch, sh.tokens, sh.width, sh.heads, sh.hd, sh.mlp);
    let r = sh.repeat;
    println!(
        "one vision block: batch {batch}, {tokens} tokens, width {width}, {heads} heads of {hd}, MLP {mlp}; \
         median of {r} timed run(s) after one warm-up"
    );
    B::seed(device, 7);
    let block: ResidualAttentionBlock<B> = BlockConfig::new(width, heads, mlp).init(device);
    let inputs = Inputs::<B>::new(&sh, device);

    let mut fwd = forward_attention(&sh, &block, &inputs);
    let whole_fwd = forward_mlp(&sh, &block, &inputs, &mut fwd);
    let ad_block = ResidualAttentionBlock::<Autodiff<B>>::from_inner(block.clone()).no_grad();
    let mut bwd = backward_attention(&sh, &ad_block, &inputs);
    let whole_bwd = backward_mlp(&sh, &ad_block, &inputs, &mut bwd);

    for (title, ops, whole) in [("forward", fwd, whole_fwd), ("backward", bwd, whole_bwd)] {
        print_ops(title, &ops, &whole);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Forward rows, inner backend: from `ln_1` to the attention's output projection.
fn forward_attention<B: Backend>(
    sh: &Shapes,
    block: &ResidualAttentionBlock<B>,
    inp: &Inputs<B>,
) -> Vec<Op> {
    let (r, n, width, heads, tokens, hd) = (sh.repeat, sh.n, sh.width, sh.heads, sh.tokens, sh.hd);
    let Inputs {
        x,
        qkv_out,
        q,
        k,
        v,
        scores,
        ctx,
        ..
    } = inp;
    let scale = sh.scale();
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
    fwd.push(measure(
        r,
        "attention (burn module::attention on the q k v views, as the block runs it)",
        || sh.split(qkv_out.clone()),
        |(q, k, v)| first(attention(q, k, v, None, None, attention_options())),
    ));
    // The same attention written out, to split it: layout, q k^T, softmax, p v.
    fwd.push(measure(
        r,
        "  of which: q, k, v views to contiguous (copies)",
        || sh.split(qkv_out.clone()),
        |(q, k, v)| first(q * 1.0) + first(k * 1.0) + first(v * 1.0),
    ));
    fwd.push(measure(
        r,
        format!("  of which: scores q k^T x scale [{heads}x{tokens}x{hd}]x[{hd}x{tokens}]"),
        || (q.clone(), k.clone()),
        |(q, k)| first(q.matmul(k.swap_dims(2, 3)) * scale),
    ));
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
    fwd
}

/// Forward rows from the attention's residual add to the MLP's, appended to `fwd`; returns
/// the whole block's forward.
fn forward_mlp<B: Backend>(
    sh: &Shapes,
    block: &ResidualAttentionBlock<B>,
    inp: &Inputs<B>,
    fwd: &mut Vec<Op>,
) -> Op {
    let (r, n, width, mlp) = (sh.repeat, sh.n, sh.width, sh.mlp);
    let Inputs { x, hidden, .. } = inp;
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
    let x3 = x.clone().reshape([sh.batch, sh.tokens, width]);
    measure(
        r,
        "whole block forward (block.forward)",
        || x3.clone(),
        |x| first(block.forward(x, false)),
    )
}

/// Backward rows (autodiff backend, frozen weights, input needs a gradient): from `ln_1` to
/// the attention's residual add.
fn backward_attention<B: Backend>(
    sh: &Shapes,
    block: &ResidualAttentionBlock<Autodiff<B>>,
    inp: &Inputs<B>,
) -> Vec<Op> {
    let (r, n, width) = (sh.repeat, sh.n, sh.width);
    let Inputs {
        x,
        qkv_out,
        q,
        k,
        v,
        scores,
        ctx,
        ..
    } = inp;
    let scale = sh.scale();
    let mut bwd: Vec<Op> = Vec::new();
    bwd.push(measure(
        r,
        "LayerNorm ln_1",
        || block.ln_1.forward(ad(x)),
        back,
    ));
    bwd.push(measure(
        r,
        "matmul qkv (input gradient only)",
        || linear(ad(x), &block.attn.qkv),
        back,
    ));
    bwd.push(measure(
        r,
        "attention incl. head split (burn module::attention)",
        || {
            let (q, k, v) = sh.split(ad(qkv_out));
            attention(q, k, v, None, None, attention_options())
        },
        back,
    ));
    bwd.push(measure(
        r,
        "  of which: scores q k^T x scale",
        || ad(q).matmul(ad(k).swap_dims(2, 3)) * scale,
        back,
    ));
    bwd.push(measure(
        r,
        "  of which: softmax",
        || softmax(ad(scores), 3),
        back,
    ));
    bwd.push(measure(
        r,
        "  of which: probs v",
        || ad(scores).matmul(ad(v)),
        back,
    ));
    bwd.push(measure(
        r,
        "merge heads (swap_dims + reshape)",
        || ad(ctx).swap_dims(1, 2).reshape([n, width]),
        back,
    ));
    bwd.push(measure(
        r,
        "matmul out_proj (input gradient only)",
        || linear(ad(x), &block.attn.out_proj),
        back,
    ));
    bwd.push(measure(r, "residual add", || ad(x) + ad(x), back));
    bwd
}

/// Backward rows from `ln_2` to the MLP's residual add, appended to `bwd`; returns the whole
/// block's backward.
fn backward_mlp<B: Backend>(
    sh: &Shapes,
    block: &ResidualAttentionBlock<Autodiff<B>>,
    inp: &Inputs<B>,
    bwd: &mut Vec<Op>,
) -> Op {
    let r = sh.repeat;
    let Inputs { x, hidden, .. } = inp;
    bwd.push(measure(
        r,
        "LayerNorm ln_2",
        || block.ln_2.forward(ad(x)),
        back,
    ));
    bwd.push(measure(
        r,
        "matmul c_fc (input gradient only)",
        || linear(ad(x), &block.mlp.c_fc),
        back,
    ));
    bwd.push(measure(r, "erf GELU", || gelu(ad(hidden)), back));
    bwd.push(measure(
        r,
        "matmul c_proj (input gradient only)",
        || linear(ad(hidden), &block.mlp.c_proj),
        back,
    ));
    bwd.push(measure(r, "residual add", || ad(x) + ad(x), back));
    measure(
        r,
        "whole block backward",
        || block.forward(ad(x).reshape([sh.batch, sh.tokens, sh.width]), false),
        back,
    )
}

/// One table: the ops, their sum (sub-rows left out) and the whole block.
fn print_ops(title: &str, ops: &[Op], whole: &Op) {
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
