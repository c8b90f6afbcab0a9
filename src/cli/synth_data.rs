//! `mvfa-studio synth-data`: writes a small synthetic dataset in the plain-folder layout
//! (`normal/`, `abnormal/`, `masks/`), for trying the whole flow without patient data, and with
//! `--volumes` synthetic DICOM series whose lesions span several slices.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::io::export::dicom_volume::{SliceInVolume, write_slice};
use crate::io::export::write_png;
use crate::io::image::Channels;
use crate::io::output::{InputSet, OutputKind, check_output};
use crate::io::resample::Image8;
use crate::train::synthetic::{SyntheticImage, generate_volume, try_generate};

#[derive(clap::Args, Debug)]
pub struct SynthDataArgs {
    /// Output folder (created; must be empty or absent).
    pub out: PathBuf,
    /// Normal images to write.
    #[arg(long, default_value_t = 8)]
    pub normal: usize,
    /// Abnormal images (with masks) to write.
    #[arg(long, default_value_t = 8)]
    pub abnormal: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 240)]
    pub size: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write this many volumes (every other one with a lesion spanning several slices)
    /// as DICOM MR series under `volumes/`, lesion masks under `masks/volumes/`. File names do
    /// not follow the slice order: readers must order by Image Position.
    #[arg(long, default_value_t = 0)]
    pub volumes: usize,
    /// Slices per volume.
    #[arg(long, default_value_t = 12)]
    pub slices: usize,
}

/// Image sides `--size` accepts (the model reads 240 px; larger sides only cost memory).
pub const SIZE_RANGE: std::ops::RangeInclusive<usize> = 32..=4096;
/// Most pixels one run may generate (all images are built in memory before writing).
pub const MAX_TOTAL_PIXELS: usize = 1 << 30;

fn write_grey(path: &Path, size: usize, pixels: &[u8]) -> anyhow::Result<()> {
    let side = u32::try_from(size).context("image side too large")?;
    let image = Image8::new(side, side, Channels::Gray, pixels.to_vec())
        .context("image buffer has the wrong size")?;
    // Atomic: an interrupted run leaves no half-written PNG.
    write_png(path, &image)?;
    Ok(())
}

/// Refuses sizes and counts that cannot be generated, before anything is written.
fn check_sizes(args: &SynthDataArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        SIZE_RANGE.contains(&args.size),
        "--size {} is out of range: give an image side of {} to {} pixels",
        args.size,
        SIZE_RANGE.start(),
        SIZE_RANGE.end()
    );
    anyhow::ensure!(
        args.volumes == 0 || (2..=1000).contains(&args.slices),
        "--slices {} is out of range: give 2 to 1000 slices a volume",
        args.slices
    );
    anyhow::ensure!(
        args.volumes == 0 || args.size <= usize::from(u16::MAX),
        "--size {} is too large for a DICOM slice",
        args.size
    );
    let pixels = args
        .volumes
        .checked_mul(args.slices)
        .and_then(|n| n.checked_add(args.normal))
        .and_then(|n| n.checked_add(args.abnormal))
        .and_then(|n| n.checked_mul(args.size))
        .and_then(|n| n.checked_mul(args.size))
        .filter(|&n| n <= MAX_TOTAL_PIXELS);
    anyhow::ensure!(
        pixels.is_some(),
        "{} normal + {} abnormal images of {}x{} pixels are too many (at most {} pixels in all); \
         write fewer or smaller images",
        args.normal,
        args.abnormal,
        args.size,
        args.size,
        MAX_TOTAL_PIXELS
    );
    Ok(())
}

/// Writes `args.volumes` volumes as DICOM series, the odd ones with a lesion.
fn write_volumes(args: &SynthDataArgs) -> anyhow::Result<()> {
    use rand::seq::SliceRandom;
    for v in 0..args.volumes {
        let lesion = v % 2 == 1;
        let name = format!("{}_{v:03}", if lesion { "lesion" } else { "normal" });
        let volume = generate_volume(
            args.seed.wrapping_mul(7919).wrapping_add(v as u64),
            args.slices,
            args.size,
            lesion,
        )?;
        // File names and instance numbers in a shuffled order, from the seed.
        let mut order: Vec<usize> = (0..args.slices).collect();
        order.shuffle(&mut crate::rng::seeded(
            args.seed.wrapping_add(v as u64),
            crate::rng::Stream::SyntheticVolume,
        ));
        let folder = args.out.join("volumes").join(&name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("{}: cannot create the folder", folder.display()))?;
        for (index, slice) in volume.slices.iter().enumerate() {
            let number = order[index] + 1;
            let file = format!("IM{number:04}");
            write_slice(
                &folder.join(format!("{file}.dcm")),
                args.size as u16,
                &slice.pixels,
                &SliceInVolume {
                    volume: &format!("{}-{name}", args.seed),
                    description: if lesion {
                        "synthetic volume with a lesion"
                    } else {
                        "synthetic normal volume"
                    },
                    index,
                    instance_number: number,
                    spacing: 3.0,
                },
            )?;
            if slice.abnormal {
                let masks = args.out.join("masks").join("volumes").join(&name);
                std::fs::create_dir_all(&masks)
                    .with_context(|| format!("{}: cannot create the folder", masks.display()))?;
                write_grey(&masks.join(format!("{file}.png")), slice.size, &slice.mask)?;
            }
        }
    }
    if args.volumes > 0 {
        println!(
            "wrote {} volume(s) of {} slices as DICOM series to {}",
            args.volumes,
            args.slices,
            args.out.join("volumes").display()
        );
    }
    Ok(())
}

pub fn run(args: SynthDataArgs) -> anyhow::Result<ExitCode> {
    check_sizes(&args)?;
    check_output(&args.out, OutputKind::Folder, &InputSet::default())?;
    if args.out.exists()
        && std::fs::read_dir(&args.out)
            .with_context(|| format!("{}: cannot read the folder", args.out.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!(
            "{}: folder is not empty; choose a new one",
            args.out.display()
        );
    }
    for sub in ["normal", "abnormal", "masks"] {
        std::fs::create_dir_all(args.out.join(sub)).with_context(|| {
            format!("{}: cannot create the folder", args.out.join(sub).display())
        })?;
    }
    let write_set =
        |images: Vec<SyntheticImage>, folder: &str, prefix: &str| -> anyhow::Result<()> {
            for (i, img) in images.iter().enumerate() {
                let name = format!("{prefix}_{i:03}.png");
                write_grey(&args.out.join(folder).join(&name), img.size, &img.pixels)?;
                if img.abnormal {
                    write_grey(&args.out.join("masks").join(&name), img.size, &img.mask)?;
                }
            }
            Ok(())
        };
    write_set(
        try_generate(args.seed, args.normal, args.size, false)?,
        "normal",
        "normal",
    )?;
    write_set(
        try_generate(
            args.seed.wrapping_add(1_000_003),
            args.abnormal,
            args.size,
            true,
        )?,
        "abnormal",
        "abnormal",
    )?;
    write_volumes(&args)?;
    println!(
        "wrote {} normal and {} abnormal images (with masks) to {}",
        args.normal,
        args.abnormal,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
