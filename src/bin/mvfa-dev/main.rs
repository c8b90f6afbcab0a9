//! `mvfa-dev`: the developer commands, kept out of the clinician's binary `mvfa-studio`.
//! Benchmarks and smoke runs with random weights; run them in release mode:
//!
//! ```text
//! cargo run --release --bin mvfa-dev -- bench          # timing table (bench.rs)
//! cargo run --release --bin mvfa-dev -- smoke          # one image through the tower (smoke.rs)
//! cargo run --release --bin mvfa-dev -- slice-context  # context across slices, measured
//! ```
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_compare;
#[cfg(patched_ndarray)]
mod bench_kernels;
mod bench_profile;
mod bench_series;
mod slice_context;
mod smoke;

/// The command line of the developer binary.
#[derive(Parser, Debug)]
#[command(
    name = "mvfa-dev",
    version,
    about = "MVFA Studio developer tools: benchmarks and smoke runs with random weights"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Build a CLIP vision tower (full ViT-L/14-336 by default) with random weights and run one
    /// 240 px image end to end, printing tap shapes, wall time and peak memory.
    Smoke(smoke::SmokeArgs),
    /// Time the adapted forward pass, text features, few-shot search and a training step with
    /// random weights (full ViT-L/14-336 at 240 px by default), and report peak memory.
    Bench(bench::BenchArgs),
    /// Measure context across slices (off, weighted max, weighted mean) on synthetic volumes
    /// whose lesions span several slices: slice image, pixel and series AUC over seeds.
    SliceContext(slice_context::SliceContextArgs),
}

fn main() -> ExitCode {
    mvfa_studio::cli::process::tune_allocator();
    let cli = Cli::parse();
    mvfa_studio::cli::process::run_headless(|| match cli.command {
        Command::Smoke(args) => smoke::run(args),
        Command::Bench(args) => bench::run(args),
        Command::SliceContext(args) => slice_context::run(args),
    })
}
