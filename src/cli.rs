//! Headless command line. Every subcommand is a thin layer over library code that the app
//! uses too; with no subcommand the desktop app starts.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_compare;
mod bench_profile;
pub mod common;
mod eval;
mod inspect;
mod pacs;
mod score;
mod smoke;
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
    Pacs(Box<pacs::PacsArgs>),
}

/// Lets a closed output pipe (`mvfa-studio inspect dir | head -1`) end the process quietly,
/// as it does for other command-line tools, instead of panicking in `println!` (Rust ignores
/// SIGPIPE, so every write to the closed pipe fails). Not for the GUI, whose connections must
/// not kill it.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any thread is spawned; SIG_DFL is a valid action
    // for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Ends the process on Ctrl+C (SIGINT) or SIGTERM after removing the temporary files of the
/// atomic writes in progress ([`crate::io::export::atomic::remove_temporary_files`]), with
/// the shell's status for the signal (130, 143). The signals are blocked in every thread and
/// taken by a thread of their own with `sigwait`, so no code runs in signal context. Must run
/// before any other thread is started (threads inherit the blocked set); child processes get
/// an empty set from the standard library. Not for the GUI.
fn clean_up_on_interrupt() {
    #[cfg(unix)]
    {
        // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask and
        // sigwait get valid pointers; no other thread exists yet (see above).
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return;
            }
            set
        };
        let waiter = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                loop {
                    let mut signal = 0;
                    // SAFETY: see above.
                    if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                        continue;
                    }
                    let removed = crate::io::export::atomic::remove_temporary_files();
                    let name = if signal == libc::SIGINT {
                        "interrupted"
                    } else {
                        "terminated"
                    };
                    eprintln!("\n{name}: removed {removed} unfinished output file(s)");
                    std::process::exit(128 + signal);
                }
            });
        if waiter.is_err() {
            // Without the waiter the signals must keep their default action.
            // SAFETY: as above.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    }
}

/// Parses the command line and runs the subcommand (the app without one).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Gui);
    if !matches!(command, Command::Gui | Command::View { .. }) {
        default_sigpipe();
        clean_up_on_interrupt();
    }
    let result = match command {
        Command::Gui => crate::app::run(Vec::new(), None),
        Command::View { clip, paths } => crate::app::run(paths, clip),
        Command::Inspect(args) => inspect::run(args),
        Command::Weights(args) => weights_cmd::run(args),
        Command::Smoke(args) => smoke::run(args),
        Command::SynthData(args) => synth_data::run(args),
        Command::Train(args) => train::run(args),
        Command::Score(args) => score::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Pacs(args) => pacs::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined with ": ", leaving out a cause whose text the message
/// already holds (errors that quote their source would otherwise repeat the OS reason).
fn error_message(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}
