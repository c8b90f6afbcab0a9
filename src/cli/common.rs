//! Pieces shared by the model-driven subcommands (`train`, `score`, `eval`): the CLIP
//! arguments, opening the backbone with a printed summary, progress bars, argument parsers,
//! the `--schedule` values and memory figures (also used by the developer binary `mvfa-dev`).
//! Everything else is the workflow layer's ([`crate::workflow`]).
use std::path::PathBuf;
use std::time::Duration;

use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::BackendInfo;
use crate::weights::clip::LoadReport;
use crate::workflow::{Backbone, Schedule};

/// The backbone arguments every model-driven subcommand takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// CLIP weights: a safetensors file in the Hugging Face CLIPModel or the open_clip /
    /// OpenAI layout (both towers; the text tower builds the prompt features).
    #[arg(long, value_name = "WEIGHTS")]
    pub clip: PathBuf,
    /// Architecture file for --clip (Hugging Face config.json or open_clip model config);
    /// default: config.json / open_clip_config.json beside the weights, else ViT-L/14-336.
    #[arg(long, value_name = "JSON")]
    pub clip_config: Option<PathBuf>,
    /// Run on the CPU even when a GPU backend is compiled in and available.
    #[arg(long)]
    pub cpu: bool,
    /// Organ / object word inserted into the text prompts (spec 3.1), e.g. "Brain",
    /// "Chest X-ray film". Default: from the checkpoint or the dataset.
    #[arg(long, value_name = "WORD")]
    pub organ: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = parse_positive)]
    pub batch: usize,
}

impl ModelArgs {
    /// The files these arguments read (the CLIP weights and their config).
    pub fn input_paths(&self) -> Vec<&std::path::Path> {
        let mut paths = vec![self.clip.as_path()];
        paths.extend(self.clip_config.as_deref());
        paths
    }

    /// Picks the backend (GPU when compiled in and present, unless `--cpu`) and prints the
    /// choice, with the reason for a fallback, to stderr.
    pub fn backend(&self) -> BackendInfo {
        let info = crate::backend::probe(self.cpu);
        if let Some(reason) = &info.fallback_reason {
            eprintln!("note: {reason}");
        }
        eprintln!("backend: {} on {}", info.backend, info.device);
        info
    }
}

/// Opens both CLIP towers from `--clip` (and `--clip-config`) on `device` and prints a short
/// load summary to stderr.
pub fn open_backbone<B: Backend>(
    args: &ModelArgs,
    device: &B::Device,
) -> anyhow::Result<Backbone<B>> {
    let started = std::time::Instant::now();
    let backbone = Backbone::open(&args.clip, args.clip_config.as_deref(), device)?;
    eprintln!("{}", load_summary(backbone.report(), started.elapsed()));
    Ok(backbone)
}

/// Two lines: the file, its layout and config source; the vision tower's shape.
pub fn load_summary(report: &LoadReport, elapsed: Duration) -> String {
    let v = &report.config.vision;
    format!(
        "CLIP: {} ({:.1} MB, {}, config: {}), {} tower(s), {} tensors applied in {:.1} s\n\
         vision: width {}, {} blocks, patch {}, embed {}, {} px input ({}x{} patches)",
        report.path.display(),
        report.file_bytes as f64 / 1e6,
        report.layout,
        report.config_source,
        report.tower_names(),
        report.applied.len(),
        elapsed.as_secs_f64(),
        v.width,
        v.layers,
        v.patch_size,
        v.embed_dim,
        v.image_size,
        v.grid_size(),
        v.grid_size(),
    )
}

/// A progress bar on stderr for `len` units of `what` (e.g. "images"), with rate and ETA.
/// Hidden automatically when stderr is not a terminal (pipes, tests).
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template =
        format!("{{msg:>12}} [{{bar:30}}] {{pos}}/{{len}} {what} ({{per_sec}}, ETA {{eta}})");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// The largest count a flag takes (`--batch`, `--shots`, `--repeat`...): far above any real
/// use, low enough that sizes computed from it cannot overflow.
pub const MAX_COUNT: usize = 1_000_000;

/// Parses a count of at least 1 and at most [`MAX_COUNT`] (for `--batch`, `--shots`,
/// `--repeat`...).
pub fn parse_positive(s: &str) -> Result<usize, ArgValueError> {
    match s.parse::<usize>()? {
        0 => Err(ArgValueError::Zero { least: "1" }),
        n if n > MAX_COUNT => Err(ArgValueError::TooLarge {
            value: n,
            unit: "",
            max: MAX_COUNT,
        }),
        n => Ok(n),
    }
}

/// The largest model input side `--image-size` takes (a ViT at 2048 px already holds
/// 21 000 tokens per image).
pub const MAX_IMAGE_SIDE: usize = 2048;

/// Parses an image side in pixels, 1 to [`MAX_IMAGE_SIDE`] (the model configuration then
/// checks that it holds a patch).
pub fn parse_image_side(s: &str) -> Result<usize, ArgValueError> {
    match s.parse::<usize>()? {
        0 => Err(ArgValueError::Zero { least: "1 pixel" }),
        n if n > MAX_IMAGE_SIDE => Err(ArgValueError::TooLarge {
            value: n,
            unit: " pixels",
            max: MAX_IMAGE_SIDE,
        }),
        n => Ok(n),
    }
}

/// A command-line value that its option does not take (clap prints it after the option).
#[derive(Debug, thiserror::Error)]
pub enum ArgValueError {
    /// Not a slice context.
    #[error("{0:?} is not a slice context: give off, max:W or mean:W with W from 0 to 1")]
    SliceContext(String),
    /// Not a whole number.
    #[error("{0}")]
    NotAWholeNumber(#[from] std::num::ParseIntError),
    /// Not a number.
    #[error("{text:?} is not a number")]
    NotANumber {
        /// The value given.
        text: String,
    },
    /// Zero, where the option needs at least `least`.
    #[error("must be at least {least}")]
    Zero {
        /// The least value, with its unit.
        least: &'static str,
    },
    /// Above the largest value the option takes.
    #[error("{value}{unit} is too large (at most {max})")]
    TooLarge {
        /// The value given.
        value: usize,
        /// Its unit, with a leading space ("" for counts).
        unit: &'static str,
        /// The largest value taken.
        max: usize,
    },
    /// Not strictly between 0 and 1.
    #[error("{text} is not a rate: give a share of normal images between 0 and 1, e.g. 0.05")]
    NotARate {
        /// The value given.
        text: String,
    },
    /// A range without its comma.
    #[error("expected MIN,MAX")]
    NotARange,
    /// One end of a range is not a number.
    #[error("{text:?}: {source}")]
    RangeEnd {
        /// The end given.
        text: String,
        /// Why it is not a number.
        source: std::num::ParseFloatError,
    },
    /// A range that is empty or not finite.
    #[error("need finite MIN < MAX, got {lo},{hi}")]
    EmptyRange {
        /// The lower end given.
        lo: f32,
        /// The upper end given.
        hi: f32,
    },
}

/// `--schedule` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleArg {
    /// The reference's schedule.
    Paper,
    /// The quick CPU schedule.
    Quick,
}

impl From<ScheduleArg> for Schedule {
    fn from(arg: ScheduleArg) -> Self {
        match arg {
            ScheduleArg::Paper => Schedule::Paper,
            ScheduleArg::Quick => Schedule::Quick,
        }
    }
}

/// Peak resident memory of this process (`VmHWM`), in bytes, where /proc is available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `12.3 MB` style size.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
