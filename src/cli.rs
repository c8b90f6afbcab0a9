//! Headless command line. Every subcommand is a thin layer over library code that the app
//! uses too; with no subcommand the desktop app starts. The developer commands (`bench`,
//! `smoke`) are in the separate binary `mvfa-dev` (src/bin/mvfa-dev).
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod common;
mod eval;
mod inspect;
mod pacs;
pub mod process;
mod score;
mod serve;
mod synth_data;
mod train;
mod weights_cmd;

/// The command line: an optional subcommand.
#[derive(Parser, Debug)]
#[command(
    name = "mvfa-studio",
    version,
    about = "MVFA Studio: few-shot anomaly detection for medical images"
)]
pub struct Cli {
    /// The subcommand; `None` starts the desktop app.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the desktop application (the default).
    Gui,
    /// Start the desktop application with these files, folders or DICOMDIRs open (what the
    /// desktop entry passes).
    View {
        /// CLIP weights to load at start (instead of the ones loaded last).
        #[arg(long)]
        clip: Option<std::path::PathBuf>,
        /// DICOM files, images, NIfTI volumes, folders (read recursively), DICOMDIRs, or a
        /// project file (`.json`).
        paths: Vec<std::path::PathBuf>,
    },
    /// Read DICOM / image files or folders and print one line per file plus a summary.
    Inspect(inspect::InspectArgs),
    /// Load a CLIP weights file and print the load report (applied, missing, unexpected keys);
    /// `weights download` fetches the public ViT-L/14-336 weights from the Hugging Face hub.
    Weights(weights_cmd::WeightsArgs),
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
    /// Query, retrieve from and store to a PACS over DICOMweb or DIMSE.
    Pacs(Box<pacs::PacsArgs>),
    /// Run as an AI node: receive studies over DICOM (C-STORE) and STOW-RS, score each
    /// complete series with the detector its route names, and send the results on.
    Serve(serve::ServeArgs),
}

/// Parses the command line and runs the subcommand (the app without one).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Gui) {
        Command::Gui => process::exit_code(crate::app::run(Vec::new(), None)),
        Command::View { clip, paths } => process::exit_code(crate::app::run(paths, clip)),
        // A long-running service: no SIGPIPE shortcut (a peer closing its socket must not
        // end the node), but interrupted output files are still cleaned up.
        Command::Serve(args) => process::run_service(|| serve::run(args)),
        command => process::run_headless(|| run(command)),
    }
}

/// Runs a headless subcommand.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Gui | Command::View { .. } => unreachable!("the app is started by main"),
        Command::Inspect(args) => inspect::run(args),
        Command::Weights(args) => weights_cmd::run(args),
        Command::SynthData(args) => synth_data::run(args),
        Command::Train(args) => train::run(args),
        Command::Score(args) => score::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Pacs(args) => pacs::run(*args),
        Command::Serve(args) => serve::run(args),
    }
}
