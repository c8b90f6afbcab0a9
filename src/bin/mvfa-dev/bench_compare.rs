//! `bench --compare`: runs the repository's PyTorch script (tools/bench/torch_bench.py) with
//! the same sizes and prints one table, operation | PyTorch | mvfa-studio | ratio (ours / theirs,
//! so under 1.0x means we are faster or smaller).
//!
//! The interpreter is `$MVFA_PYTHON`, else `python3`. When it cannot be started, or cannot import
//! torch and open_clip, or the script fails, the PyTorch column is left empty and the reason is
//! printed: our own column is always printed.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::bench::BenchArgs;
use mvfa_studio::cli::common::mb;
use mvfa_studio::model::clip::prompts::{ENCODE_CHUNK, abnormal_sentences, normal_sentences};
use mvfa_studio::model::clip::tokenizer::{CONTEXT_LENGTH, ClipTokenizer};

/// Environment variable naming the Python interpreter of `--compare`.
pub const PYTHON_ENV: &str = "MVFA_PYTHON";
const SCRIPT: &str = "tools/bench/torch_bench.py";

/// One measurement of ours that the PyTorch script also makes.
pub(crate) struct Ours {
    /// Key of the script's JSON rows (`forward_b1`, `text`, `few_shot`, `train_step`).
    pub key: String,
    /// Operation, as the table shows it.
    pub label: String,
    /// Median, ms (per image where the label says so).
    pub ms: f64,
}

/// What the PyTorch side reported.
struct Theirs {
    version: String,
    threads: u64,
    rows: serde_json::Value,
    peak: Option<u64>,
}

/// `n:keep` per chunk of [`ENCODE_CHUNK`] sentences, normal sentences then abnormal: the token
/// columns our text tower keeps for each chunk (up to its longest sentence's end-of-text token),
/// so that the script cuts exactly where we do.
fn text_chunks(organ: &str) -> anyhow::Result<String> {
    let tokenizer = ClipTokenizer::new();
    let mut parts = Vec::new();
    for sentences in [normal_sentences(organ), abnormal_sentences(organ)] {
        for chunk in sentences.chunks(ENCODE_CHUNK) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let rows = tokenizer
                .tokenize(&refs, CONTEXT_LENGTH)
                .context("tokenising the prompt sentences")?;
            let keep = rows
                .iter()
                .map(|r| r.iter().take_while(|&&id| id != 0).count())
                .max()
                .unwrap_or(1);
            parts.push(format!("{}:{keep}", chunk.len()));
        }
    }
    Ok(parts.join(","))
}

fn script_path(arg: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = arg {
        return Some(p.to_path_buf());
    }
    [
        PathBuf::from(SCRIPT),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Runs the script; `Err` is the reason the PyTorch column stays empty.
fn run_torch(args: &BenchArgs) -> Result<Theirs, String> {
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import torch, open_clip"])
        .output()
        .map_err(|e| format!("cannot run the Python interpreter {python:?} ({PYTHON_ENV}): {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "{python} cannot import torch and open_clip ({}); pip install torch open_clip_torch",
            last_line(&probe.stderr)
        ));
    }
    let script = script_path(args.torch_script.as_deref())
        .ok_or_else(|| format!("{SCRIPT} not found (pass --torch-script)"))?;
    let chunks = text_chunks(&args.organ).map_err(|e| format!("{e:#}"))?;
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--layers", &args.layers.to_string()])
        .args(["--width", &args.width.to_string()])
        .args(["--embed-dim", &args.embed_dim.to_string()])
        .args(["--text-layers", &args.text_layers.to_string()])
        .args(["--text-width", &args.text_width.to_string()])
        .args(["--shots", &args.shots.to_string()])
        .args(["--repeat", &args.repeat.to_string()])
        .args(["--text-chunks", &chunks])
        .args([
            "--batches",
            &args
                .batches
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ]);
    if let Some(h) = args.heads {
        cmd.args(["--heads", &h.to_string()]);
    }
    eprintln!("compare: running {python} {}", script.display());
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {python} {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let json: serde_json::Value = serde_json::from_str(&last_line(&out.stdout))
        .map_err(|e| format!("{} printed no JSON result: {e}", script.display()))?;
    Ok(Theirs {
        version: json["torch"].as_str().unwrap_or("?").to_string(),
        threads: json["threads"].as_u64().unwrap_or(0),
        rows: json["rows"].clone(),
        peak: json["peak_rss_bytes"].as_u64(),
    })
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), where available: the machine may be
/// shared, and both columns are only comparable when it was quiet.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Runs the PyTorch side and prints the comparison table.
pub(crate) fn compare(args: &BenchArgs, ours: &[Ours], our_peak: Option<u64>) {
    let before = load_average();
    let theirs = run_torch(args);
    let head = match &theirs {
        Ok(t) => format!("PyTorch {} CPU, {} threads", t.version, t.threads),
        Err(reason) => {
            println!("compare: PyTorch side skipped: {reason}");
            "PyTorch (skipped)".to_string()
        }
    };
    let ms = |v: f64| format!("{v:.1} ms");
    let ratio = |a: f64, b: f64| format!("{:.2}x", a / b);
    let mut cells: Vec<[String; 4]> = ours
        .iter()
        .map(|o| {
            let t = theirs
                .as_ref()
                .ok()
                .and_then(|t| t.rows[&o.key]["median_ms"].as_f64());
            [
                o.label.clone(),
                t.map(ms).unwrap_or_else(|| "-".into()),
                ms(o.ms),
                t.map(|t| ratio(o.ms, t)).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let their_peak = theirs.as_ref().ok().and_then(|t| t.peak);
    cells.push([
        "peak RSS".into(),
        their_peak.map(mb).unwrap_or_else(|| "-".into()),
        our_peak.map(mb).unwrap_or_else(|| "-".into()),
        match (our_peak, their_peak) {
            (Some(a), Some(b)) => ratio(a as f64, b as f64),
            _ => "-".into(),
        },
    ]);
    let head = [
        "operation (median)".to_string(),
        head,
        "mvfa-studio".into(),
        "ratio".into(),
    ];
    super::bench::print_cells(&head, &cells);
    println!(
        "load average (1/5/15 min) after our side: {before}; after PyTorch's: {}; {} CPU threads",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
