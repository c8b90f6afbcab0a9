//! Property tests of the readers that take user files (issue 14, class 6): the DICOM header
//! walk and decoder, the raster loader, the adapter checkpoint readers (safetensors and
//! `.pth`) and the CLIP weights loader. Each feeds mutated copies of a valid fixture
//! (bytes flipped, runs overwritten, truncated) and random bytes, and asserts that the reader
//! returns (a value or an error) instead of panicking.
//!
//! CI runs a few dozen cases per reader (a few seconds); a longer run:
//! `PROPTEST_CASES=5000 cargo test --test integration fuzz_readers`.
use std::path::Path;

use burn::backend::NdArray;
use mvfa_studio::io::dicom::load_dicom_bytes;
use mvfa_studio::io::raster::{RasterLimits, load_raster_bytes_with};
use mvfa_studio::model::mvfa::adapter::MvfaAdaptersConfig;
use mvfa_studio::weights::adapters::{load_adapter_file, read_checkpoint_meta};
use mvfa_studio::weights::clip::{LoadOptions, inspect_clip};
use proptest::prelude::*;

use crate::support::fixture_dir;

/// Cases per property: `PROPTEST_CASES`, else `default`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One edit of a file: flip bytes, overwrite a run, or truncate.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, xor: u8 },
    Overwrite { at: usize, bytes: Vec<u8> },
    Truncate { keep: usize },
}

/// Edits aimed at the first `head` bytes (headers, where the parsers branch).
fn edits(head: usize) -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        4 => (0..head, 1u8..=255).prop_map(|(at, xor)| Edit::Flip { at, xor }),
        2 => (0..head, proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Overwrite { at, bytes }),
        1 => (0..head).prop_map(|keep| Edit::Truncate { keep }),
    ];
    proptest::collection::vec(edit, 1..6)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match e {
            Edit::Flip { at, xor } => {
                if let Some(b) = bytes.get_mut(*at) {
                    *b ^= xor;
                }
            }
            Edit::Overwrite { at, bytes: run } => {
                for (i, v) in run.iter().enumerate() {
                    if let Some(b) = bytes.get_mut(at + i) {
                        *b = *v;
                    }
                }
            }
            Edit::Truncate { keep } => bytes.truncate(*keep),
        }
    }
    bytes
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Writes `bytes` to a fresh file named `name` and runs `f` on it.
fn with_file<T>(name: &str, bytes: &[u8], f: impl FnOnce(&Path) -> T) -> T {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    f(&path)
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn dicom_reader_never_panics_on_mutated_files(
        seed in 0usize..4,
        edits in edits(1024),
    ) {
        let names = [
            "ct_rescale_windows.dcm",
            "ct_rescale_windows_bigendian.dcm",
            "ct_rescale_windows_implicit.dcm",
            "cr_mono1_sigmoid.dcm",
        ];
        let bytes = apply(read(&fixture_dir("dicom").join(names[seed])), &edits);
        let _ = load_dicom_bytes(&bytes, Path::new("fuzz.dcm"));
    }

    #[test]
    fn dicom_reader_never_panics_on_random_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        preamble in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        if preamble {
            bytes.extend([0u8; 128]);
            bytes.extend(b"DICM");
        }
        bytes.extend(body);
        let _ = load_dicom_bytes(&bytes, Path::new("fuzz.dcm"));
    }

    #[test]
    fn raster_reader_never_panics(
        format in 0usize..4,
        edits in edits(256),
    ) {
        // A small image in each format, then edited.
        let img = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(23, 17, |x, y| {
            image::Luma([(x * 11 + y * 7) as u8])
        }));
        let fmt = [
            image::ImageFormat::Png,
            image::ImageFormat::Bmp,
            image::ImageFormat::Tiff,
            image::ImageFormat::Jpeg,
        ][format];
        let mut encoded = std::io::Cursor::new(Vec::new());
        img.write_to(&mut encoded, fmt).unwrap();
        let bytes = apply(encoded.into_inner(), &edits);
        let limits = RasterLimits { max_pixels: 1 << 22 };
        let _ = load_raster_bytes_with(&bytes, Path::new("fuzz.img"), &limits);
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn adapter_readers_never_panic(
        seed in 0usize..3,
        edits in edits(512),
    ) {
        let (name, file) = [
            ("a.safetensors", "tiny_valid_reference.safetensors"),
            ("a.pth", "tiny_valid.pth"),
            ("a.pth", "tiny_valid_f16.pth"),
        ][seed];
        let bytes = apply(read(&fixture_dir("mvfa").join(file)), &edits);
        with_file(name, &bytes, |path| {
            let _ = read_checkpoint_meta(path);
            let cfg = MvfaAdaptersConfig::new().with_width(4).with_bottleneck(2);
            let _ = load_adapter_file::<NdArray<f32>>(path, &cfg, &Default::default());
        });
    }

    #[test]
    fn clip_loader_never_panics_on_mutated_headers(edits in edits(4096)) {
        let original = read(&fixture_dir("clip/open_clip").join("open_clip_model.safetensors"));
        let bytes = apply(original, &edits);
        with_file("model.safetensors", &bytes, |path| {
            // Header, layout and shapes (what a bad file trips on); the fixture's config is
            // not beside the copy, so the loader also guesses the architecture.
            let _ = inspect_clip(path, &LoadOptions::default(), true);
        });
    }
}
