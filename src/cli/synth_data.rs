//! `mvfa-studio synth-data`: writes a small synthetic dataset in the plain-folder layout
//! (`normal/`, `abnormal/`, `masks/`), for trying the whole flow without patient data.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::train::synthetic::{SyntheticImage, generate};

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
}

fn write_grey(path: &Path, size: usize, pixels: &[u8]) -> anyhow::Result<()> {
    image::GrayImage::from_raw(size as u32, size as u32, pixels.to_vec())
        .context("image buffer has the wrong size")?
        .save(path)
        .with_context(|| format!("{}: could not write the image", path.display()))
}

pub fn run(args: SynthDataArgs) -> anyhow::Result<ExitCode> {
    if args.out.exists()
        && std::fs::read_dir(&args.out)
            .with_context(|| format!("{}: cannot read the folder", args.out.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!("{}: folder is not empty; choose a new one", args.out.display());
    }
    for sub in ["normal", "abnormal", "masks"] {
        std::fs::create_dir_all(args.out.join(sub))
            .with_context(|| format!("{}: cannot create the folder", args.out.join(sub).display()))?;
    }
    let write_set = |images: Vec<SyntheticImage>, folder: &str, prefix: &str| -> anyhow::Result<()> {
        for (i, img) in images.iter().enumerate() {
            let name = format!("{prefix}_{i:03}.png");
            write_grey(&args.out.join(folder).join(&name), img.size, &img.pixels)?;
            if img.abnormal {
                write_grey(&args.out.join("masks").join(&name), img.size, &img.mask)?;
            }
        }
        Ok(())
    };
    write_set(generate(args.seed, args.normal, args.size, false), "normal", "normal")?;
    write_set(
        generate(args.seed.wrapping_add(1_000_003), args.abnormal, args.size, true),
        "abnormal",
        "abnormal",
    )?;
    println!(
        "wrote {} normal and {} abnormal images (with masks) to {}",
        args.normal,
        args.abnormal,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
