//! Headless command line. Every subcommand is a thin layer over library code that the app
//! uses too; with no subcommand the desktop app starts.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod inspect;
mod smoke;
mod synth_data;
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
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Gui) {
        Command::Gui => crate::app::run(),
        Command::Inspect(args) => inspect::run(args),
        Command::Weights(args) => weights_cmd::run(args),
        Command::Smoke(args) => smoke::run(args),
        Command::SynthData(args) => synth_data::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
