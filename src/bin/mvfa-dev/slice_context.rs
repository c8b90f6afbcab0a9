//! `mvfa-dev slice-context`: whether mixing neighbouring slices helps, on fresh draws of
//! synthetic volumes (see [`mvfa_studio::eval::slice_context`]). Prints a Markdown table of
//! slice image, pixel and series AUC for each context over the seeds.
use std::process::ExitCode;

use mvfa_studio::eval::slice_context::{VolumeTask, measure_seed, table};

#[derive(clap::Args, Debug)]
pub struct SliceContextArgs {
    /// Seeds to draw (1..=N).
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Held-out volumes per seed (half with a lesion).
    #[arg(long, default_value_t = 8)]
    pub volumes: usize,
    /// Slices per volume.
    #[arg(long, default_value_t = 12)]
    pub slices: usize,
}

pub fn run(args: SliceContextArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.seeds >= 1, "--seeds must be at least 1");
    anyhow::ensure!(
        args.volumes >= 2 && args.slices >= 3,
        "need at least 2 volumes of 3 slices"
    );
    let task = VolumeTask {
        volumes: args.volumes,
        slices: args.slices,
        ..VolumeTask::default()
    };
    let mut seeds = Vec::new();
    for seed in 1..=args.seeds {
        eprintln!("seed {seed} of {}", args.seeds);
        seeds.push(measure_seed(seed, task));
    }
    println!("{}", table(&seeds));
    Ok(ExitCode::SUCCESS)
}
