//! Raster loading against files written by Pillow (`tools/io/make_raster_fixtures.py`) and by
//! the `image` crate's encoders.
use crate::support;
use std::path::{Path, PathBuf};

use mvfa_studio::io::image::{Channels, ImageStack};
use mvfa_studio::io::raster::{is_raster_path, load_raster, load_raster_bytes};
use serde::Deserialize;

fn fixtures() -> PathBuf {
    support::fixture_dir("io/raster")
}

#[derive(Deserialize)]
struct Expected {
    files: Vec<FileCase>,
}

#[derive(Deserialize)]
struct FileCase {
    file: String,
    mode: String,
    layout: String,
    width: u32,
    height: u32,
    tolerance: f32,
    samples: Vec<f32>,
}

fn single_frame(stack: &ImageStack) -> &mvfa_studio::io::image::Frame {
    assert_eq!(stack.frames.len(), 1);
    &stack.frames[0]
}

#[test]
fn pillow_written_rasters_load_with_their_values() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let expected: Expected = serde_json::from_str(&text).unwrap();
    assert!(expected.files.len() >= 13);
    for case in &expected.files {
        let path = fixtures().join(&case.file);
        let stack = load_raster(&path).unwrap_or_else(|e| panic!("{e}"));
        let frame = single_frame(&stack);
        let label = format!("{} (Pillow mode {})", case.file, case.mode);
        assert_eq!(
            (frame.width, frame.height),
            (case.width, case.height),
            "{label}"
        );
        let want = if case.layout == "gray" {
            Channels::Gray
        } else {
            Channels::Rgb
        };
        assert_eq!(frame.channels, want, "{label}");
        assert_eq!(frame.data.len(), case.samples.len(), "{label}");
        let max = frame
            .data
            .iter()
            .zip(&case.samples)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max <= case.tolerance, "{label}: max |diff| {max}");
        assert_eq!(stack.source, path);
        assert!(!stack.invert);
    }
}

#[test]
fn default_windows_follow_the_bit_depth() {
    // 8-bit: the type's full range, center 127.5, width 256.
    let s = load_raster(&fixtures().join("gray8.png")).unwrap();
    assert_eq!((s.windows[0].center, s.windows[0].width), (127.5, 256.0));
    // 16-bit: the data range (values keep 0..65535 units).
    let s = load_raster(&fixtures().join("gray16.png")).unwrap();
    let d = &single_frame(&s).data;
    let lo = d.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
    let hi = d.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    assert!(hi > 255.0, "16-bit values stay in 16-bit units");
    assert_eq!(s.windows[0].center, (lo + hi) / 2.0);
    assert_eq!(s.windows[0].width, hi - lo + 1.0);
    let t = load_raster(&fixtures().join("gray16.tif")).unwrap();
    assert_eq!(single_frame(&t).data, *d);
}

#[test]
fn image_crate_encoded_variants_load() {
    let dir = tempfile::tempdir().unwrap();
    // 16-bit RGBA PNG: colour on the 0..255 scale, alpha dropped.
    let mut img = image::RgbaImage::new(3, 2);
    for (i, p) in img.pixels_mut().enumerate() {
        *p = image::Rgba([i as u8 * 40, 255 - i as u8 * 40, 7, 100]);
    }
    let img16 = image::DynamicImage::ImageRgba8(img.clone()).into_rgba16();
    let p16 = dir.path().join("rgba16.png");
    img16.save(&p16).unwrap();
    let s = load_raster(&p16).unwrap();
    let f = single_frame(&s);
    assert_eq!(f.channels, Channels::Rgb);
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            assert!((f.data[i * 3 + c] - p.0[c] as f32).abs() < 1e-3);
        }
    }
    // Grey-alpha 16-bit PNG keeps raw grey values.
    let mut la = image::ImageBuffer::<image::LumaA<u16>, Vec<u16>>::new(2, 2);
    for (i, p) in la.pixels_mut().enumerate() {
        *p = image::LumaA([1000 * (i as u16 + 1), 5]);
    }
    let pla = dir.path().join("la16.png");
    image::DynamicImage::ImageLumaA16(la).save(&pla).unwrap();
    let s = load_raster(&pla).unwrap();
    assert_eq!(single_frame(&s).data, vec![1000.0, 2000.0, 3000.0, 4000.0]);
    assert_eq!(s.windows[0].center, 2500.0);
    // A PNG renamed to .jpg still opens (content sniffing).
    let renamed = dir.path().join("actually_png.jpg");
    std::fs::copy(fixtures().join("rgb.png"), &renamed).unwrap();
    assert_eq!(
        single_frame(&load_raster(&renamed).unwrap()).channels,
        Channels::Rgb
    );
}

#[test]
fn errors_name_the_file() {
    let bad = fixtures().join("not_an_image.png");
    let e = load_raster(&bad).unwrap_err().to_string();
    assert!(e.contains("not_an_image.png"), "{e}");
    let missing = fixtures().join("missing.png");
    let e = load_raster(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.png"), "{e}");
    // Truncated PNG: an error, never a panic.
    let bytes = std::fs::read(fixtures().join("rgb.png")).unwrap();
    for cut in [8, 20, 40, bytes.len() - 12] {
        let e = load_raster_bytes(&bytes[..cut], Path::new("cut.png")).unwrap_err();
        assert!(e.to_string().starts_with("cut.png: "), "{e}");
    }
    let e = load_raster_bytes(b"", Path::new("empty.bmp")).unwrap_err();
    assert!(e.to_string().contains("empty.bmp"));
}

#[test]
fn extensions_are_recognised() {
    for ok in ["a.png", "b.JPG", "c.jpeg", "d.tif", "e.TIFF", "f.bmp"] {
        assert!(is_raster_path(Path::new(ok)), "{ok}");
    }
    for no in ["a.dcm", "b.nii.gz", "c", "d.png.txt"] {
        assert!(!is_raster_path(Path::new(no)), "{no}");
    }
}
