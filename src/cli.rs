//! Headless command line. Every subcommand is a thin layer over library code that the app
//! uses too; with no subcommand the desktop app starts.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
pub mod common;
mod eval;
mod inspect;
mod pacs;
mod score;
mod smoke;
mod synth_data;
mod train;
mod weights_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "mvfa-studio",
    version,
    about = "MVFA Studio: few-shot anomaly detection for medical images"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the desktop application (the default).
    Gui,
    /// Read DICOM / image files or folders and print one line per file plus a summary.
    Inspect(inspect::InspectArgs),
    /// Load a CLIP weights file and print the load report (applied, missing, unexpected keys).
    Weights(weights_cmd::WeightsArgs),
    /// Build a CLIP vision tower (full ViT-L/14-336 by default) with random weights and run one
    /// 240 px image end to end, printing tap shapes, wall time and peak memory.
    Smoke(smoke::SmokeArgs),
    /// Write a small synthetic dataset (textures with blob and streak anomalies, with masks).
    SynthData(synth_data::SynthDataArgs),
    /// Fit a detector (MVFA adapters, memory bank, calibration) on labelled shots.
    Train(train::TrainArgs),
    /// Score images, DICOM files or folders with a detector checkpoint: heatmap and overlay
    /// PNGs per frame, a scores.csv, and with --raw the float32 maps of every branch.
    Score(score::ScoreArgs),
    /// Run the benchmark protocols (few-shot k, zero-shot) on the MVFA dataset layout: an AUC
    /// table in the paper's column order, and JSON.
    Eval(eval::EvalArgs),
    /// Time the adapted forward pass, text features, few-shot search and a training step with
    /// random weights (full ViT-L/14-336 at 240 px by default), and report peak memory.
    Bench(bench::BenchArgs),
    /// Query, retrieve from and store to a PACS over DICOMweb or DIMSE.
    Pacs(pacs::PacsArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Gui) {
        Command::Gui => crate::app::run(),
        Command::Inspect(args) => inspect::run(args),
        Command::Weights(args) => weights_cmd::run(args),
        Command::Smoke(args) => smoke::run(args),
        Command::SynthData(args) => synth_data::run(args),
        Command::Train(args) => train::run(args),
        Command::Score(args) => score::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Pacs(args) => pacs::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
