//! Conformance of the DICOM loader against the shared corpus (`../shared/data/dicom`; those
//! tests are ignored by default and fail where the corpus is absent) and a deterministic
//! mutation test (truncations and byte corruptions of the committed synthetic fixtures and,
//! with the corpus, of corpus files) that must never panic or hang.
//!
//! Run with `cargo test --test integration io_dicom_corpus -- --include-ignored --nocapture`
//! to see the pass table by transfer syntax (decoded / clear error / failed).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use mvfa_studio::io::dicom::{DicomError, DicomErrorKind, load_dicom, load_dicom_bytes};
use mvfa_studio::io::image::{Channels, ImageStack};

use crate::support::{self, corpus};

fn fixtures_dir() -> PathBuf {
    support::fixture_dir("dicom")
}

/// Minimal RFC 4180 reader (quoted fields with doubled quotes, commas and newlines inside).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
        } else {
            match c {
                '"' => quoted = true,
                ',' => row.push(std::mem::take(&mut field)),
                '\r' => {}
                '\n' => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                _ => field.push(c),
            }
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

fn read_table(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = parse_csv(&text).into_iter();
    let header = rows.next().expect("header row");
    rows.filter(|r| r.len() == header.len())
        .map(|r| header.iter().cloned().zip(r).collect())
        .collect()
}

/// Runs `work` on its own thread; `None` when it did not finish within `limit` (a hang), and
/// `Some(Err(message))` when it panicked (the panic escaped the loader's guard).
fn with_timeout<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<Result<T, String>> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let _ = tx.send(r.map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        }));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => {
            let _ = handle.join();
            Some(r)
        }
        Err(_) => None,
    }
}

struct Stats {
    channels: usize,
    min: f64,
    max: f64,
    mean: f64,
    std: f64,
}

fn stats(stack: &ImageStack) -> Stats {
    let (mut n, mut sum, mut sum2) = (0f64, 0f64, 0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in stack.frames.iter().flat_map(|f| f.data.iter()) {
        let v = f64::from(*v);
        n += 1.0;
        sum += v;
        sum2 += v * v;
        min = min.min(v);
        max = max.max(v);
    }
    let mean = sum / n;
    Stats {
        channels: stack.frames.first().map_or(0, |f| f.channels.count()),
        min,
        max,
        mean,
        std: (sum2 / n - mean * mean).max(0.0).sqrt(),
    }
}

fn ts_uid_of(cell: &str) -> String {
    match (cell.rfind('('), cell.rfind(')')) {
        (Some(a), Some(b)) if b > a && cell[a + 1..b].starts_with("1.2.") => {
            cell[a + 1..b].to_string()
        }
        _ => cell.to_string(),
    }
}

fn lossy(ts: &str) -> bool {
    matches!(
        ts,
        "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.81"
    )
}

/// Compares decoded statistics with the independent reference (pydicom + pylibjpeg). Lossless
/// encodings must match to rounding; lossy ones (different IDCT / wavelet implementations)
/// within a small fraction of the value range.
fn compare_stats(
    ours: &Stats,
    reference: &HashMap<String, String>,
    ts: &str,
) -> Result<String, String> {
    let get = |k: &str| reference[k].parse::<f64>().unwrap();
    let (rmin, rmax, rmean, rstd) = (get("min"), get("max"), get("mean"), get("std"));
    let rch: usize = reference["channels"].parse().unwrap();
    if ours.channels != rch {
        return Err(format!("{} channels, reference {rch}", ours.channels));
    }
    let range = (rmax - rmin).max(1.0);
    // Lossless: equal up to f32 storage and the 9 significant digits of the reference file.
    let (tol_mean, tol_ext) = if lossy(ts) {
        (0.005 * range, 0.05 * range)
    } else {
        (1e-5 * range, 1e-4 * rmax.abs().max(rmin.abs()).max(1.0))
    };
    let checks = [
        ("min", ours.min, rmin, tol_ext),
        ("max", ours.max, rmax, tol_ext),
        ("mean", ours.mean, rmean, tol_mean),
        ("std", ours.std, rstd, 2.0 * tol_mean),
    ];
    for (name, a, b, tol) in checks {
        if (a - b).abs() > tol {
            return Err(format!(
                "{name} {a} differs from reference {b} (tolerance {tol})"
            ));
        }
    }
    Ok(format!(
        "vs reference: |d mean| {:.3e}, |d std| {:.3e}, |d min| {}, |d max| {}",
        (ours.mean - rmean).abs(),
        (ours.std - rstd).abs(),
        (ours.min - rmin).abs(),
        (ours.max - rmax).abs()
    ))
}

#[derive(Default)]
struct Tally {
    decoded: usize,
    clear_error: usize,
    failed: usize,
}

#[test]
#[ignore = "needs the shared DICOM corpus (../shared/data/dicom)"]
fn corpus_conformance() {
    let dir = corpus::dir();
    let manifest = read_table(&dir.join("MANIFEST.csv"));
    let reference: HashMap<String, HashMap<String, String>> =
        read_table(&fixtures_dir().join("reference_stats.csv"))
            .into_iter()
            .map(|r| (r["file"].clone(), r))
            .collect();
    assert!(manifest.len() > 100, "manifest has {} rows", manifest.len());

    let mut table: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for row in &manifest {
        let rel = row["file"].clone();
        let path = dir.join(&rel);
        let ts = ts_uid_of(&row["transfer_syntax"]);
        let decode_ok = row["pixel_decode"].starts_with("ok");
        let malformed = row["malformed"] == "yes";
        let p = path.clone();
        let started = std::time::Instant::now();
        let outcome = with_timeout(Duration::from_secs(120), move || load_dicom(&p));
        let took = started.elapsed();
        let tally = table.entry(ts.clone()).or_default();
        let mut detail = String::new();
        let verdict: Result<&str, String> = match outcome {
            None => Err("did not finish within 120 s".to_string()),
            Some(Err(panic)) => Err(format!("panicked: {panic}")),
            Some(Ok(Ok(stack))) => {
                if !decode_ok {
                    Err(format!(
                        "decoded although the reference says {:?}",
                        row["pixel_decode"]
                    ))
                } else {
                    let frames: usize = row["frames"].parse().unwrap_or(1);
                    let (rows, cols): (u32, u32) =
                        (row["rows"].parse().unwrap(), row["cols"].parse().unwrap());
                    let f0 = &stack.frames[0];
                    if stack.frames.len() != frames || f0.height != rows || f0.width != cols {
                        Err(format!(
                            "decoded {} frame(s) of {}x{}, manifest says {frames} of {rows}x{cols}",
                            stack.frames.len(),
                            f0.height,
                            f0.width
                        ))
                    } else if stack
                        .frames
                        .iter()
                        .any(|f| f.data.len() != (f.width * f.height) as usize * f.channels.count())
                    {
                        Err("frame data length inconsistent".to_string())
                    } else if let Some(r) = reference.get(&rel) {
                        compare_stats(&stats(&stack), r, &ts).map(|d| {
                            detail = d;
                            "decoded"
                        })
                    } else {
                        Ok("decoded")
                    }
                }
            }
            Some(Ok(Err(err))) => {
                let msg = err.to_string();
                let names_file =
                    msg.starts_with(&path.display().to_string()) && err.message.len() > 10;
                if !names_file {
                    Err(format!(
                        "error does not name the file and the problem: {msg}"
                    ))
                } else if decode_ok && !malformed {
                    Err(format!("reference decodes it, we failed: {}", err.message))
                } else {
                    Ok("clear error")
                }
            }
        };
        match verdict {
            Ok("decoded") => {
                tally.decoded += 1;
                lines.push(format!(
                    "  decoded      {rel} ({} ms) {detail}",
                    took.as_millis()
                ));
            }
            Ok(_) => {
                tally.clear_error += 1;
                let e = load_dicom(&path)
                    .err()
                    .map(|e| e.message)
                    .unwrap_or_default();
                lines.push(format!(
                    "  clear error  {rel} ({} ms): {e}",
                    took.as_millis()
                ));
            }
            Err(why) => {
                tally.failed += 1;
                lines.push(format!("  FAILED       {rel}: {why}"));
                failures.push(format!("{rel}: {why}"));
            }
        }
    }
    println!("\nPer file:");
    for l in &lines {
        println!("{l}");
    }
    println!(
        "\nPass table by transfer syntax (corpus: {} files)",
        manifest.len()
    );
    println!("| transfer syntax | files | decoded | clear error | failed |");
    println!("|---|---:|---:|---:|---:|");
    let mut total = Tally::default();
    for (ts, t) in &table {
        let name = if ts.starts_with("1.2.") {
            format!(
                "{} ({ts})",
                mvfa_studio::io::dicom::transfer_syntax_name(ts)
            )
        } else {
            ts.clone()
        };
        println!(
            "| {name} | {} | {} | {} | {} |",
            t.decoded + t.clear_error + t.failed,
            t.decoded,
            t.clear_error,
            t.failed
        );
        total.decoded += t.decoded;
        total.clear_error += t.clear_error;
        total.failed += t.failed;
    }
    println!(
        "| total | {} | {} | {} | {} |",
        total.decoded + total.clear_error + total.failed,
        total.decoded,
        total.clear_error,
        total.failed
    );
    assert!(
        failures.is_empty(),
        "{} corpus file(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Lossless encodings of the same image must decode to identical pixels.
#[test]
#[ignore = "needs the shared DICOM corpus (../shared/data/dicom)"]
fn corpus_same_image_in_every_lossless_encoding() {
    let dir = corpus::dir();
    let groups: [&[&str]; 2] = [
        &[
            "pydicom/MR_small.dcm",
            "pydicom/MR_small_implicit.dcm",
            "pydicom/MR_small_bigendian.dcm",
            "pydicom/MR_small_RLE.dcm",
            "pydicom/MR_small_jp2klossless.dcm",
            "pydicom/MR_small_jpeg_ls_lossless.dcm",
            "pydicom/MR_small_padded.dcm",
            "pydicom/zipMR.gz",
        ],
        &[
            "pydicom-data/emri_small.dcm",
            "pydicom-data/emri_small_RLE.dcm",
            "pydicom-data/emri_small_jpeg_2k_lossless.dcm",
            "pydicom-data/emri_small_jpeg_ls_lossless.dcm",
        ],
    ];
    for group in groups {
        let first = load_dicom(&dir.join(group[0])).unwrap();
        for other in &group[1..] {
            let s = load_dicom(&dir.join(other)).unwrap();
            assert_eq!(s.frames.len(), first.frames.len(), "{other}");
            for (a, b) in first.frames.iter().zip(&s.frames) {
                assert_eq!(a.data, b.data, "{other} differs from {}", group[0]);
            }
        }
    }
}

/// Display-pipeline facts the corpus can check: MONOCHROME1 inversion and window presets.
#[test]
#[ignore = "needs the shared DICOM corpus (../shared/data/dicom)"]
fn corpus_display_attributes() {
    let dir = corpus::dir();
    let cr = load_dicom(&dir.join("pydicom/dicomdirtests/77654033/CR1/6154")).unwrap();
    assert!(cr.invert, "CR MONOCHROME1 must be flagged for inversion");
    let ct = load_dicom(&dir.join("pydicom/CT_small.dcm")).unwrap();
    assert!(!ct.invert);
    assert_eq!(ct.windows.last().unwrap().label, "Full range");
    assert_eq!(ct.info.modality.as_deref(), Some("CT"));
    let us = load_dicom(&dir.join("pydicom/examples_ybr_color.dcm")).unwrap();
    assert_eq!(us.frames.len(), 30);
    assert!(us.frames.iter().all(|f| f.channels == Channels::Rgb));
}

// ---------------------------------------------------------------------------------------
// Mutation test
// ---------------------------------------------------------------------------------------

/// Knuth's MMIX linear congruential generator: deterministic across platforms and runs.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Truncated and corrupted variants of `bytes`, deterministically.
fn mutations(
    bytes: &[u8],
    seed: u64,
    truncations: usize,
    corruptions: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut rng = Lcg(seed);
    let len = bytes.len();
    let mut out = Vec::new();
    let mut cuts: Vec<usize> = vec![
        0,
        1,
        4,
        128,
        131,
        132,
        140,
        200,
        len / 2,
        len.saturating_sub(1),
        len.saturating_sub(2),
    ];
    for _ in 0..truncations {
        cuts.push(rng.below(len));
    }
    cuts.retain(|&c| c < len);
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts {
        out.push((format!("truncated at {c}"), bytes[..c].to_vec()));
    }
    for i in 0..corruptions {
        let mut m = bytes.to_vec();
        // Bias half of the corruptions towards the header, where lengths and attributes live.
        let span = if i % 2 == 0 { len.min(2048) } else { len };
        let pos = rng.below(span);
        let kind = rng.below(5);
        let desc = match kind {
            0 => {
                m[pos] ^= 1 << rng.below(8);
                format!("bit flip at {pos}")
            }
            1 => {
                m[pos] = 0xFF;
                format!("0xFF at {pos}")
            }
            2 => {
                m[pos] = 0x00;
                format!("0x00 at {pos}")
            }
            3 => {
                // A large little-endian 32-bit value: a length or a size field gone wild.
                for (k, b) in [0xF0u8, 0xFF, 0xFF, 0x7F].iter().enumerate() {
                    if let Some(x) = m.get_mut(pos + k) {
                        *x = *b;
                    }
                }
                format!("huge u32 at {pos}")
            }
            _ => {
                for k in 0..8 {
                    if let Some(x) = m.get_mut(pos + k) {
                        *x = rng.next() as u8;
                    }
                }
                format!("8 random bytes at {pos}")
            }
        };
        out.push((desc, m));
    }
    out
}

/// The committed synthetic fixtures, mutated.
#[test]
fn mutated_files_never_panic_or_hang() {
    let mut inputs: Vec<(PathBuf, usize, usize)> = Vec::new();
    for name in [
        "ct_rescale_windows.dcm",
        "ct_rescale_windows_implicit.dcm",
        "ct_rescale_windows_bigendian.dcm",
        "cr_mono1_sigmoid.dcm",
        "rgb_planar.dcm",
        "ybr_full.dcm",
        "ybr_full_422.dcm",
        "palette.dcm",
        "enhanced_multiframe.dcm",
        "multiframe_rle.dcm",
        "multiframe_jpegls.dcm",
        "multiframe_j2k.dcm",
        "mpeg2.dcm",
        "dicomdir_set/DICOMDIR",
    ] {
        inputs.push((fixtures_dir().join(name), 24, 60));
    }
    check_mutations(&inputs, 0);
}

/// Files of the shared corpus (other encoders, real-world quirks), mutated.
#[test]
#[ignore = "needs the shared DICOM corpus (../shared/data/dicom)"]
fn corpus_mutated_files_never_panic_or_hang() {
    let dir = corpus::dir();
    let mut inputs: Vec<(PathBuf, usize, usize)> = Vec::new();
    for name in [
        "pydicom/MR_small.dcm",
        "pydicom/MR_small_bigendian.dcm",
        "pydicom/MR_small_RLE.dcm",
        "pydicom/MR_small_jp2klossless.dcm",
        "pydicom/MR_small_jpeg_ls_lossless.dcm",
        "pydicom/JPGExtended.dcm",
        "pydicom/JPEG2000.dcm",
        "pydicom/SC_jpeg_no_color_transform.dcm",
        "pydicom/image_dfl.dcm",
        "pydicom/rtdose.dcm",
        "pydicom/test-SR.dcm",
        "pydicom/ExplVR_BigEnd.dcm",
        "pydicom/zipMR.gz",
        "pydicom/liver_1frame.dcm",
        "pydicom-data/emri_small_RLE.dcm",
        "pydicom/dicomdirtests/DICOMDIR",
    ] {
        inputs.push((dir.join(name), 16, 40));
    }
    // The seeds these files had when one test mutated the fixtures and then them.
    check_mutations(&inputs, 14);
}

/// Loads `truncations` truncated and `corruptions` corrupted copies of each file: every
/// load must end within 10 s, without a panic escaping, in an image or in an error that
/// names the file and the problem.
/// File `i` of `inputs` is mutated from seed `0x5EED_0000 + first_seed + i`.
fn check_mutations(inputs: &[(PathBuf, usize, usize)], first_seed: u64) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut panic_examples = Vec::new();
    let mut total = 0usize;
    for (seed, (path, truncations, corruptions)) in inputs.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (what, data) in mutations(
            &bytes,
            0x5EED_0000 + first_seed + seed as u64,
            *truncations,
            *corruptions,
        ) {
            total += 1;
            let label = PathBuf::from(format!("{} [{what}]", path.display()));
            let l = label.clone();
            match with_timeout(Duration::from_secs(10), move || load_dicom_bytes(&data, &l)) {
                None => problems.push(format!("{}: no result within 10 s (hang)", label.display())),
                Some(Err(panic)) => {
                    problems.push(format!("{}: panic escaped: {panic}", label.display()))
                }
                Some(Ok(Ok(_))) => *counts.entry("loaded".into()).or_default() += 1,
                Some(Ok(Err(DicomError {
                    path,
                    kind,
                    message,
                }))) => {
                    if path != label || message.is_empty() {
                        problems.push(format!(
                            "{}: error without file or problem: {message}",
                            label.display()
                        ));
                    }
                    *counts.entry(format!("{kind:?}")).or_default() += 1;
                    if kind == DicomErrorKind::Decode && message.contains("failed internally") {
                        *counts
                            .entry("(of which: caught decoder panics)".into())
                            .or_default() += 1;
                        if panic_examples.len() < 5 {
                            panic_examples.push(format!("{}: {message}", label.display()));
                        }
                    }
                }
            }
        }
    }
    println!(
        "\nMutation test: {total} mutated inputs from {} files",
        inputs.len()
    );
    for (k, v) in &counts {
        println!("  {k}: {v}");
    }
    for e in &panic_examples {
        println!("  caught: {e}");
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
