//! Model input against Pillow: bicubic and nearest resizes compared with the outputs Pillow
//! wrote (`tools/io/make_resize_fixtures.py`), inputs regenerated from the same seeds.
use crate::support;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use mvfa_studio::io::image::Channels;
use mvfa_studio::io::model_input::{
    MODEL_INPUT_LEN, MODEL_INPUT_SIZE, mask_batch, mask_input, model_input, model_input_batch,
    model_input_image, model_input_tensor,
};
use mvfa_studio::io::resample::{
    Image8, PillowOrder, resize_bicubic, resize_bicubic_with, resize_nearest,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    support::fixture_dir("io/resize")
}

#[derive(Deserialize)]
struct Manifest {
    pillow: String,
    out: u32,
    order: PillowOrder,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    filter: String,
    file: Option<String>,
    width: u32,
    height: u32,
    channels: usize,
    content: String,
    seed: u64,
    sha256: String,
}

/// splitmix64, top byte per draw (same as the Python generator).
fn splitmix_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 56) as u8
        })
        .collect()
}

fn smooth_sample(x: u64, y: u64, c: usize, w: u64, h: u64) -> u8 {
    let gx = x * 255 / (w - 1).max(1);
    let gy = y * 255 / (h - 1).max(1);
    (match c {
        0 => (gx + gy) / 2,
        1 => (gx * 3 + (255 - gy)) / 4,
        _ => (x * x + y * y) * 255 / ((w - 1).pow(2) + (h - 1).pow(2)).max(1),
    }) as u8
}

fn make_input(case: &Case) -> Image8 {
    let (w, h, ch) = (case.width as u64, case.height as u64, case.channels);
    let data = match case.content.as_str() {
        "random" => splitmix_bytes(case.seed, (w * h) as usize * ch),
        kind => {
            let mut d = Vec::with_capacity((w * h) as usize * ch);
            for y in 0..h {
                for x in 0..w {
                    for c in 0..ch {
                        d.push(if kind == "smooth" {
                            smooth_sample(x, y, c, w, h)
                        } else {
                            ((x * 31 + y * 17 + c as u64 * 101) % 256) as u8
                        });
                    }
                }
            }
            d
        }
    };
    let channels = if ch == 1 {
        Channels::Gray
    } else {
        Channels::Rgb
    };
    Image8::new(case.width, case.height, channels, data).unwrap()
}

fn load_png(path: &Path) -> Image8 {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match img {
        image::DynamicImage::ImageLuma8(b) => {
            let (w, h) = b.dimensions();
            Image8::new(w, h, Channels::Gray, b.into_raw()).unwrap()
        }
        image::DynamicImage::ImageRgb8(b) => {
            let (w, h) = b.dimensions();
            Image8::new(w, h, Channels::Rgb, b.into_raw()).unwrap()
        }
        other => panic!("unexpected fixture layout {:?}", other.color()),
    }
}

fn max_abs_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn manifest(version: &str) -> Manifest {
    let path = fixtures().join(version).join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every case of one Pillow generation's fixtures: the SHA-256 of our output must equal
/// Pillow's, and where Pillow's output is stored the max difference is printed and must be 0.
fn check_against(version: &str, expected_order: PillowOrder) {
    let m = manifest(version);
    assert_eq!(m.order, expected_order);
    let mut worst = 0u8;
    let mut checked = 0;
    for case in &m.cases {
        let input = make_input(case);
        let out = match case.filter.as_str() {
            "bicubic" => resize_bicubic_with(&input, m.out, m.out, m.order).unwrap(),
            "nearest" => resize_nearest(&input, m.out, m.out).unwrap(),
            "luma" => input.to_luma(),
            other => panic!("unknown filter {other}"),
        };
        let label = format!(
            "{} {}x{} ch{} {}",
            case.filter, case.width, case.height, case.channels, case.content
        );
        if let Some(file) = &case.file {
            let reference = load_png(&fixtures().join(file));
            assert_eq!(
                (reference.width, reference.height, reference.channels),
                (out.width, out.height, out.channels),
                "{label}"
            );
            let d = max_abs_diff(&out.data, &reference.data);
            println!("{label}: max |diff| vs Pillow {}: {d}", m.pillow);
            worst = worst.max(d);
        }
        assert_eq!(
            sha_hex(&out.data),
            case.sha256,
            "{label}: output differs from Pillow"
        );
        checked += 1;
    }
    assert_eq!(worst, 0, "max difference vs Pillow {}", m.pillow);
    assert!(checked >= 42, "only {checked} cases");
}

/// Pillow <= 12.1 (horizontal pass first): the order MVFA's reference ran with and the
/// default of `resize_bicubic` / `model_input`.
#[test]
fn resizes_match_pillow_12_1_exactly() {
    check_against("pillow-12.1", PillowOrder::HorizontalFirst);
}

/// Pillow 12.2/12.3 run the vertical pass first for inputs over 100x taller than wide (3x400).
#[test]
fn resizes_match_pillow_12_3_exactly() {
    check_against("pillow-12.3", PillowOrder::Pillow12_2);
}

/// Pillow 13.0 runs the vertical pass first for tall inputs (512x1024, 17x300, 3x400 here).
#[test]
fn resizes_match_pillow_13_0_exactly() {
    check_against("pillow-13.0", PillowOrder::Pillow13);
}

#[test]
fn default_order_is_the_reference_one() {
    assert_eq!(PillowOrder::default(), PillowOrder::HorizontalFirst);
    let case = Case {
        filter: "bicubic".into(),
        file: None,
        width: 512,
        height: 1024,
        channels: 1,
        content: "random".into(),
        seed: 5,
        sha256: String::new(),
    };
    let input = make_input(&case);
    let a = resize_bicubic(&input, 240, 240).unwrap();
    let b = resize_bicubic_with(&input, 240, 240, PillowOrder::Pillow13).unwrap();
    // The order matters for this shape (intermediate rounding), by a few grey levels at most.
    let d = max_abs_diff(&a.data, &b.data);
    assert!(d > 0 && d < 32, "{d}");
    let img = model_input_image(&input).unwrap();
    assert_eq!(img.to_luma().data, a.data);
}

#[test]
fn passthrough_and_model_input_layout() {
    // 240x240 is passed through unchanged (BrainMRI case of spec 7.1).
    let data: Vec<u8> = (0..240 * 240).map(|i| (i * 7 % 251) as u8).collect();
    let grey = Image8::new(240, 240, Channels::Gray, data.clone()).unwrap();
    assert_eq!(resize_bicubic(&grey, 240, 240).unwrap(), grey);
    let v = model_input(&grey).unwrap();
    assert_eq!(v.len(), MODEL_INPUT_LEN);
    let plane = MODEL_INPUT_SIZE * MODEL_INPUT_SIZE;
    for (i, &d) in data.iter().enumerate().step_by(97) {
        for c in 0..3 {
            assert_eq!(v[c * plane + i], d as f32 / 255.0);
        }
    }
    // Colour: CHW order, channel planes from R, G, B.
    let rgb = Image8::new(2, 1, Channels::Rgb, vec![10, 20, 30, 40, 50, 60]).unwrap();
    let img = model_input_image(&rgb).unwrap();
    let v = model_input(&rgb).unwrap();
    assert_eq!(v[0], img.data[0] as f32 / 255.0);
    assert_eq!(v[plane], img.data[1] as f32 / 255.0);
    assert_eq!(v[2 * plane], img.data[2] as f32 / 255.0);
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
}

#[test]
fn grey_input_equals_replicated_rgb_input() {
    let case = Case {
        filter: "bicubic".into(),
        file: None,
        width: 300,
        height: 211,
        channels: 1,
        content: "random".into(),
        seed: 77,
        sha256: String::new(),
    };
    let grey = make_input(&case);
    assert_eq!(
        model_input(&grey).unwrap(),
        model_input(&grey.to_rgb()).unwrap()
    );
}

#[test]
fn masks_are_binarised_after_nearest() {
    // Left half 255, right half 100 (< 128): only the left half survives the 0.5 threshold.
    let (w, h) = (512u32, 496u32);
    let data: Vec<u8> = (0..h)
        .flat_map(|_| (0..w).map(|x| if x < w / 2 { 255 } else { 100 }))
        .collect();
    let mask = Image8::new(w, h, Channels::Gray, data).unwrap();
    let m = mask_input(&mask).unwrap();
    assert_eq!(m.len(), 240 * 240);
    for y in [0usize, 119, 239] {
        assert_eq!(m[y * 240], 1.0);
        assert_eq!(m[y * 240 + 119], 1.0);
        assert_eq!(m[y * 240 + 120], 0.0);
    }
    // 128/255 > 0.5, 127/255 < 0.5.
    let edge = Image8::new(2, 1, Channels::Gray, vec![128, 127]).unwrap();
    let m = mask_input(&edge).unwrap();
    assert_eq!(m[0], 1.0);
    assert_eq!(m[239], 0.0);
}

#[test]
fn tensors_have_model_shapes() {
    type B = NdArray<f32>;
    let device = Default::default();
    let img = Image8::new(3, 2, Channels::Gray, vec![0, 50, 100, 150, 200, 250]).unwrap();
    let v = model_input(&img).unwrap();
    let t = model_input_tensor::<B>(&v, &device).unwrap();
    assert_eq!(t.dims(), [1, 3, 240, 240]);
    let back: Vec<f32> = t.into_data().to_vec().unwrap();
    assert_eq!(back, v);
    let b = model_input_batch::<B>(&[&v, &v], &device).unwrap();
    assert_eq!(b.dims(), [2, 3, 240, 240]);
    let m = mask_input(&img).unwrap();
    assert_eq!(
        mask_batch::<B>(&[&m], &device).unwrap().dims(),
        [1, 1, 240, 240]
    );
    let err = model_input_batch::<B>(&[&v[..10]], &device).unwrap_err();
    assert!(err.to_string().contains("expected 172800"), "{err}");
}

#[test]
fn model_frames_of_a_multiframe_file_are_those_of_the_whole_load() {
    use mvfa_studio::io::input::{load_model_frames, load_model_images};
    let path = support::fixture_dir("dicom/multiframe_rle.dcm");
    let all = load_model_images(&path).unwrap();
    assert_eq!(all.len(), 2);
    // Asked out of order, with a frame the file does not have: frame order, that one left out.
    let some = load_model_frames(&path, Some(&[999, 1])).unwrap();
    assert_eq!(some.iter().map(|f| f.frame).collect::<Vec<_>>(), [1]);
    for f in &some {
        let whole = &all[f.frame];
        assert_eq!((f.frames, &f.input), (whole.frames, &whole.input));
    }
}
