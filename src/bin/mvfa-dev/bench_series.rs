//! `mvfa-dev bench --series N`: whole-series throughput, end to end from files. Writes an
//! N-slice synthetic DICOM series (512 x 512 by default, like a CT), then scores it the way
//! `score` and the app do ([`score_stream`]: frames decoded ahead on a thread of their own,
//! forward batches picked for throughput), with the random tower of `bench` and a memory bank,
//! and prints slices per second. It also times decoding alone, so that the table shows how
//! much of it the overlap hides.
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;

use super::bench::{BenchArgs, Tower};
use mvfa_studio::cli::common::{mb, peak_rss_bytes};
use mvfa_studio::io::export::dicom_volume::{SliceInVolume, write_slice};
use mvfa_studio::io::input::for_each_model_frame;
use mvfa_studio::model::clip::vision::VisionTransformer;
use mvfa_studio::model::mvfa::detector::{Detector, SupportBank, TaskKind};
use mvfa_studio::model::mvfa::scoring::{MemoryBank, Scorer};
use mvfa_studio::train::augment::AUGMENT_FACTOR;
use mvfa_studio::train::synthetic::generate_volume;
use mvfa_studio::workflow::{BatchTuner, SCORE_BATCH_MAX, Streamed, score_stream};

/// Writes the series, scores it and prints the figures.
pub fn run<B: Backend>(
    args: &BenchArgs,
    slices: usize,
    tower: &Tower<B>,
    device: &B::Device,
) -> anyhow::Result<()> {
    let side = args.slice_size;
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    let files = write_series(dir.path(), slices, side)?;
    println!(
        "series: {slices} slices of {side} x {side} written as DICOM in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    // Decoding, windowing and resizing alone.
    let start = Instant::now();
    for file in &files {
        for_each_model_frame(file, None, |frame| {
            std::hint::black_box(frame.map(|f| f.input.len()).ok());
            ControlFlow::Continue(())
        })?;
    }
    let decode = start.elapsed().as_secs_f64();
    let detector = detector(args, tower, device)?;
    let timed = score_series(&detector, &files, device)?;
    print_table(slices, side, decode, &timed);
    Ok(())
}

/// Writes `slices` synthetic slices of `side` px as one DICOM series in `dir`, generated in
/// volumes of at most 64 slices (memory).
fn write_series(dir: &Path, slices: usize, side: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::with_capacity(slices);
    let mut index = 0;
    while index < slices {
        let n = (slices - index).min(64);
        let volume = generate_volume(index as u64, n, side, index == 0)?;
        for slice in &volume.slices {
            let path = dir.join(format!("IM{index:05}.dcm"));
            write_slice(
                &path,
                u16::try_from(side)?,
                &slice.pixels,
                &SliceInVolume {
                    volume: "bench",
                    description: "bench series",
                    index,
                    instance_number: index + 1,
                    spacing: 1.0,
                },
            )?;
            files.push(path);
            index += 1;
        }
    }
    Ok(files)
}

/// A detector on the random tower with a random k-shot memory bank (no calibration).
fn detector<B: Backend>(
    args: &BenchArgs,
    tower: &Tower<B>,
    device: &B::Device,
) -> anyhow::Result<Detector<B, VisionTransformer<B>>> {
    let random_tokens = |n: usize| tower.random_tokens(n, args.embed_dim, device);
    let bank_images = AUGMENT_FACTOR * args.shots;
    let text_features =
        Tensor::<B, 2>::random([args.embed_dim, 2], Distribution::Normal(0.0, 1.0), device);
    let mut detector = Detector::new(
        tower.vision.clone(),
        tower.adapters.clone(),
        tower.adapters_cfg.clone(),
        Scorer::new(tower.scoring.clone(), text_features),
        TaskKind::Segmentation,
        SCORE_BATCH_MAX,
    );
    detector.set_support_bank(Some(
        SupportBank::new(
            MemoryBank::new(random_tokens(bank_images)),
            MemoryBank::new(random_tokens(bank_images)),
            vec![AUGMENT_FACTOR; args.shots],
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    ));
    Ok(detector)
}

/// What scoring the series took.
struct Timed {
    /// Seconds from the first decode to the last result.
    total: f64,
    /// Seconds to the first result.
    first: f64,
    /// The batch sizes tried.
    tuner: BatchTuner,
}

/// Scores every slice as `score` does, trying each batch size on the way.
fn score_series<B: Backend>(
    detector: &Detector<B, VisionTransformer<B>>,
    files: &[PathBuf],
    device: &B::Device,
) -> anyhow::Result<Timed> {
    let listed: Vec<(PathBuf, Option<Vec<usize>>)> =
        files.iter().map(|f| (f.clone(), None)).collect();
    let mut tuner = BatchTuner::new(SCORE_BATCH_MAX);
    let cancel = AtomicBool::new(false);
    let mut scored = 0usize;
    let mut first: Option<f64> = None;
    let start = Instant::now();
    score_stream(detector, &listed, &mut tuner, &cancel, device, |item| {
        if let Streamed::Scored(frame) = item {
            std::hint::black_box(frame.result.raw.zero_image);
            scored += 1;
            first.get_or_insert(start.elapsed().as_secs_f64());
        }
        ControlFlow::Continue(())
    })?;
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"))?;
    anyhow::ensure!(
        scored == files.len(),
        "scored {scored} of {} slices",
        files.len()
    );
    Ok(Timed {
        total: start.elapsed().as_secs_f64(),
        first: first.unwrap_or(f64::NAN),
        tuner,
    })
}

fn print_table(slices: usize, side: usize, decode: f64, timed: &Timed) {
    println!();
    println!("| whole series, end to end from files | value |");
    println!("|---|---:|");
    println!("| slices | {slices} ({side} x {side}, DICOM, 8-bit) |");
    println!(
        "| decoding, windowing and resizing alone | {decode:.1} s ({:.1} slices/s) |",
        slices as f64 / decode
    );
    println!("| scoring, decoding overlapped | {:.1} s |", timed.total);
    println!(
        "| **throughput** | **{:.2} slices/s** ({:.0} ms a slice) |",
        slices as f64 / timed.total,
        timed.total * 1e3 / slices as f64
    );
    println!("| first result after | {:.1} s |", timed.first);
    let timings: Vec<String> = timed
        .tuner
        .timings()
        .iter()
        .map(|(b, t)| format!("{b}: {:.0} ms", t * 1e3))
        .collect();
    println!(
        "| batch picked | {} (per slice: {}) |",
        timed
            .tuner
            .chosen()
            .map_or("none yet (too few slices)".into(), |b| b.to_string()),
        timings.join(", ")
    );
    if let Some(peak) = peak_rss_bytes() {
        println!("| peak memory (VmHWM) | {} |", mb(peak));
    }
}
