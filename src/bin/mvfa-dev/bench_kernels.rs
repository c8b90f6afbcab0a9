//! `mvfa-dev bench --kernels`: GFLOP/s of every f32 matmul kernel this process can run (the
//! pure-Rust kernels and each BLAS it can open) on the ViT's product shapes, with the cores
//! busy and the row check of the kernel choice (`mvfa_studio::backend::matmul_choice`).
use std::process::ExitCode;

use std::time::Instant;

use burn::backend::ndarray::{F32Kernel, bf16_product, blas_libraries, f32_product};
use mvfa_studio::backend::cpu_model;
use mvfa_studio::backend::matmul_choice::{choose, measure, pseudo_random, rows_independent};

/// (what, m, k, n, right operand transposed).
const SHAPES: [(&str, usize, usize, usize, bool); 7] = [
    ("qkv", 290, 1024, 3072, false),
    ("c_fc", 290, 1024, 4096, false),
    ("c_proj", 290, 4096, 1024, false),
    ("c_proj input gradient (W^T)", 290, 1024, 4096, true),
    ("c_fc at batch 8", 2320, 1024, 4096, false),
    ("text MLP c_fc", 1540, 512, 2048, false),
    ("few-shot search", 289, 768, 12760, false),
];

pub fn run(repeat: usize) -> anyhow::Result<ExitCode> {
    let choice = choose();
    println!("CPU: {}", cpu_model());
    println!(
        "threads: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("kernel of this process: {}", choice.describe());
    let kernels = F32Kernel::available();
    println!("\nGFLOP/s (median of {repeat} runs), cores busy in brackets:\n");
    let mut header = String::from("| product (m x k x n) |");
    let mut rule = String::from("|---|");
    for kernel in &kernels {
        header.push_str(&format!(" {} |", kernel.name()));
        rule.push_str("---:|");
    }
    println!("{header}\n{rule}");
    for (what, m, k, n, transposed) in SHAPES {
        let mut line = format!("| {what} {m} x {k} x {n} |");
        for &kernel in &kernels {
            let (gflops, busy) = measure(kernel, (m, k, n, transposed), repeat);
            line.push_str(&format!(" {gflops:.0} ({busy:.2}) |"));
        }
        println!("{line}");
    }
    let mut line = String::from("| rows independent of the row count |");
    for &kernel in &kernels {
        line.push_str(if rows_independent(kernel) {
            " yes |"
        } else {
            " no |"
        });
    }
    println!("{line}");
    bf16_table(repeat);
    Ok(ExitCode::SUCCESS)
}

/// bf16 products with f32 accumulation (MKL's `cblas_gemm_bf16bf16f32`, where a BLAS found
/// has it), rounding of both operands included: GFLOP/s, and the largest error against the
/// f32 product relative to the largest |value| of the f32 product.
fn bf16_table(repeat: usize) {
    let with_bf16: Vec<_> = blas_libraries()
        .iter()
        .filter(|blas| bf16_product(blas, (1, 1, 1), &[0.0], &[0.0], false).is_some())
        .collect();
    if with_bf16.is_empty() {
        println!(
            "
bf16: no BLAS found here has cblas_gemm_bf16bf16f32 (MKL's); not measured"
        );
        return;
    }
    for blas in with_bf16 {
        println!(
            "
bf16 operands, f32 accumulation, {} (conversion of both operands included):
",
            blas.name
        );
        println!(
            "| product (m x k x n) | GFLOP/s | max error / max |f32 value| |
|---|---:|---:|"
        );
        for (what, m, k, n, transposed) in SHAPES {
            let lhs = pseudo_random(m * k, 1);
            let rhs = pseudo_random(k * n, 2);
            let exact = f32_product(F32Kernel::Blas(blas), (m, k, n), &lhs, &rhs, transposed);
            let mut times = Vec::new();
            let mut last = Vec::new();
            for _ in 0..repeat.max(1) + 1 {
                let started = Instant::now();
                last = bf16_product(blas, (m, k, n), &lhs, &rhs, transposed).unwrap_or_default();
                times.push(started.elapsed().as_secs_f64());
            }
            times.remove(0);
            times.sort_by(f64::total_cmp);
            let gflops = 2.0 * (m * k * n) as f64 / times[times.len() / 2] / 1e9;
            let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
            let error = exact
                .iter()
                .zip(&last)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            println!(
                "| {what} {m} x {k} x {n} | {gflops:.0} | {:.1e} |",
                error / scale
            );
        }
    }
}
