//! `mvfa-studio inspect <files or folders...>`: one line per file, then a summary, in the
//! manner of `dcmdump`-style tools. It runs the loaders of the app
//! ([`load_dicom`](crate::io::dicom::load_dicom), the study scan), so it doubles as the
//! conformance tool: by default every image is fully decoded, which is what proves that the
//! app can show it. `--no-decode` reads headers only (fast, for large archives).
//!
//! Line formats:
//! - `PATH: MODALITY, TRANSFER SYNTAX, ROWS x COLUMNS, N frame(s)` for an image, followed by
//!   `; warning: WHAT` for each thing the loader tolerated (e.g. bytes after the pixel data);
//! - `PATH: MODALITY, TRANSFER SYNTAX, no image (SOP CLASS)` for an instance without pixel data;
//! - `PATH: error: PROBLEM` for a file that cannot be read or decoded;
//! - `PATH: skipped: not a DICOM file` only for non-DICOM files named on the command line
//!   (those found inside folders are skipped silently and only counted).
//!
//! Exit status: 0 when no file had an error, 1 otherwise.
use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::io::dicom::{DicomErrorKind, DicomSummary, inspect_dicom, load_dicom, looks_like_dicom};
use crate::io::study::{ScanProgress, scan_paths};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// DICOM files, folders (scanned recursively) or DICOMDIR files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Decode the pixel data of every image (the default).
    #[arg(long, overrides_with = "no_decode")]
    pub decode: bool,
    /// Read headers only; do not decode pixel data.
    #[arg(long = "no-decode", overrides_with = "decode")]
    pub no_decode: bool,
}

/// Counters of the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InspectCounts {
    pub files: usize,
    pub images: usize,
    pub decoded: usize,
    pub no_image: usize,
    pub errors: usize,
    pub skipped_non_dicom: usize,
}

fn image_line(path: &Path, s: &DicomSummary, rows: u32, cols: u32, frames: usize) -> String {
    format!(
        "{}: {}, {}, {rows} x {cols}, {frames} frame{}",
        path.display(),
        s.modality.as_deref().unwrap_or("??"),
        s.transfer_syntax_name,
        if frames == 1 { "" } else { "s" }
    )
}

fn no_image_line(path: &Path, s: &DicomSummary) -> String {
    let class = match (s.sop_class_name.is_empty(), s.sop_class_uid.is_empty()) {
        (false, _) => s.sop_class_name.as_str(),
        (true, false) => s.sop_class_uid.as_str(),
        (true, true) => "no SOP class",
    };
    format!(
        "{}: {}, {}, no image ({class})",
        path.display(),
        s.modality.as_deref().unwrap_or("--"),
        s.transfer_syntax_name
    )
}

/// Inspects one file, returning its line and updating the counters.
fn inspect_file(
    path: &Path,
    explicit: bool,
    decode: bool,
    counts: &mut InspectCounts,
) -> Option<String> {
    counts.files += 1;
    if explicit && let Err(e) = std::fs::File::open(path) {
        // A missing or unreadable path is a read error with the system's reason.
        counts.errors += 1;
        return Some(format!("{}: error: cannot read: {e}", path.display()));
    }
    if !looks_like_dicom(path) {
        counts.skipped_non_dicom += 1;
        return explicit.then(|| format!("{}: skipped: not a DICOM file", path.display()));
    }
    let summary = match inspect_dicom(path) {
        Ok(s) => s,
        Err(e) => {
            counts.errors += 1;
            return Some(format!("{}: error: {}", path.display(), e.message));
        }
    };
    if !summary.has_image() {
        counts.no_image += 1;
        return Some(no_image_line(path, &summary));
    }
    counts.images += 1;
    if !decode {
        return Some(image_line(
            path,
            &summary,
            summary.rows.unwrap_or(0),
            summary.columns.unwrap_or(0),
            summary.frames.unwrap_or(1) as usize,
        ));
    }
    match load_dicom(path) {
        Ok(stack) => {
            counts.decoded += 1;
            let f = &stack.frames[0];
            let mut line = image_line(path, &summary, f.height, f.width, stack.frames.len());
            for w in &stack.warnings {
                line.push_str(&format!("; warning: {w}"));
            }
            Some(line)
        }
        Err(e) if e.kind == DicomErrorKind::NoPixelData => {
            counts.images -= 1;
            counts.no_image += 1;
            Some(no_image_line(path, &summary))
        }
        Err(e) => {
            counts.errors += 1;
            Some(format!("{}: error: {}", path.display(), e.message))
        }
    }
}

/// Runs the inspection, writing lines to `out`; returns the counters and the number of
/// studies and series found.
pub fn inspect(
    paths: &[PathBuf],
    decode: bool,
    out: &mut dyn FnMut(&str),
) -> (InspectCounts, usize, usize) {
    let explicit: HashSet<PathBuf> = paths.iter().filter(|p| !p.is_dir()).cloned().collect();
    let mut counts = InspectCounts::default();
    let mut walked = HashSet::new();
    let mut progress = |p: &ScanProgress| {
        walked.insert(p.current.clone());
        if let Some(line) = inspect_file(
            &p.current,
            explicit.contains(&p.current),
            decode,
            &mut counts,
        ) {
            out(&line);
        }
        ControlFlow::Continue(())
    };
    let scan = scan_paths(paths, &mut progress);
    // Problems outside the files walked above: unreadable folders, an unreadable DICOMDIR,
    // files a DICOMDIR references that do not exist.
    for e in scan.errors.iter().filter(|e| !walked.contains(&e.path)) {
        counts.errors += 1;
        out(&format!("{}: error: {}", e.path.display(), e.message));
    }
    (counts, scan.studies.len(), scan.series_count())
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let decode = !args.no_decode;
    let (c, studies, series) = inspect(&args.paths, decode, &mut |line| println!("{line}"));
    println!();
    println!(
        "{} file(s): {} image(s){}, {} without image, {} error(s), {} skipped (not DICOM); {} study(ies), {} series",
        c.files,
        c.images,
        if decode {
            format!(" ({} decoded)", c.decoded)
        } else {
            " (headers only)".to_string()
        },
        c.no_image,
        c.errors,
        c.skipped_non_dicom,
        studies,
        series
    );
    Ok(if c.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
