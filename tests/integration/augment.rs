//! Parity of the few-shot augmentation (spec 7.2) with torch `affine_grid` + `grid_sample`
//! (reflection, bilinear, align_corners=False) and flips. Fixtures in tests/fixtures/augment/,
//! written by tools/eval/make_augment_fixtures.py.
use mvfa_studio::train::augment::{
    AUGMENT_FACTOR, AugmentError, Augmentation, Planar, augment_group, augment_group_with_masks,
    few_shot_augmentations,
};
use serde::Deserialize;

use crate::support::fixture_dir;

const TOL: f32 = 1e-5;

fn read_f32(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture_dir("augment").join(name)).expect("read fixture");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn split(data: Vec<f32>, n: usize, c: usize, h: usize, w: usize) -> Vec<Planar> {
    assert_eq!(data.len(), n * c * h * w);
    data.chunks_exact(c * h * w)
        .map(|d| Planar::new(c, h, w, d.to_vec()).unwrap())
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn small_group_matches_torch() {
    let (k, h, w) = (2, 28, 36);
    let images = split(read_f32("small_images.bin"), k, 3, h, w);
    let masks = split(read_f32("small_masks.bin"), k, 1, h, w);
    let want_img = split(
        read_f32("small_images_aug.bin"),
        AUGMENT_FACTOR * k,
        3,
        h,
        w,
    );
    let want_mask = split(read_f32("small_masks_aug.bin"), AUGMENT_FACTOR * k, 1, h, w);

    let (got_img, got_mask) = augment_group_with_masks(&images, &masks).unwrap();
    assert_eq!(got_img.len(), 22);
    assert_eq!(got_mask.len(), 22);
    let mut worst_img = 0.0f32;
    let mut worst_mask = 0.0f32;
    for i in 0..22 {
        let e = max_abs(&got_img[i].data, &want_img[i].data);
        let m = max_abs(&got_mask[i].data, &want_mask[i].data);
        println!("output {i:2} (block {}): image {e:.2e} mask {m:.2e}", i / k);
        assert!(e <= TOL, "image output {i}: max |diff| {e}");
        assert!(m <= TOL, "mask output {i}: max |diff| {m}");
        // Flips and the original are exact copies.
        if i < k || i >= 9 * k {
            assert_eq!(e, 0.0);
            assert_eq!(m, 0.0);
        }
        worst_img = worst_img.max(e);
        worst_mask = worst_mask.max(m);
    }
    println!("max |diff| vs torch: images {worst_img:.3e}, masks {worst_mask:.3e}");
    // Masks got soft edges from the bilinear warps.
    assert!(got_mask[2].data.iter().any(|&v| v > 0.05 && v < 0.95));
}

#[derive(Deserialize)]
struct Large {
    height: usize,
    width: usize,
    sums: Vec<Vec<f64>>,
    positions: Vec<(usize, usize)>,
    samples: Vec<Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
struct Meta {
    large: Large,
}

/// The 240x240 image of the fixture script, regenerated from its formula.
fn large_image(h: usize, w: usize) -> Planar {
    let mut data = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let v = if (60..120).contains(&y) && (150..200).contains(&x) {
                    0.95
                } else {
                    0.5 + 0.3
                        * (y as f64 / 17.0 + c as f64).sin()
                        * (x as f64 / 23.0 - 0.5 * c as f64).cos()
                };
                data.push(v as f32);
            }
        }
    }
    Planar::new(3, h, w, data).unwrap()
}

#[test]
fn full_size_image_matches_torch_samples_and_sums() {
    let text = std::fs::read_to_string(fixture_dir("augment/meta.json")).unwrap();
    let meta: Meta = serde_json::from_str(&text).unwrap();
    let l = meta.large;
    let img = large_image(l.height, l.width);
    let out = augment_group(std::slice::from_ref(&img)).unwrap();
    assert_eq!(out.len(), 11);
    let plane = l.height * l.width;
    let mut worst = 0.0f32;
    let mut worst_mean = 0.0f64;
    for (i, o) in out.iter().enumerate() {
        for c in 0..3 {
            let p = &o.data[c * plane..(c + 1) * plane];
            for (j, &(y, x)) in l.positions.iter().enumerate() {
                let d = (p[y * l.width + x] - l.samples[i][c][j]).abs();
                worst = worst.max(d);
                assert!(d <= TOL, "output {i} channel {c} at ({y},{x}): diff {d}");
            }
            let sum: f64 = p.iter().map(|&v| v as f64).sum();
            let mean_diff = (sum - l.sums[i][c]).abs() / plane as f64;
            worst_mean = worst_mean.max(mean_diff);
            assert!(
                mean_diff < 1e-6,
                "output {i} channel {c}: mean differs by {mean_diff}"
            );
        }
    }
    println!("240x240: max sample |diff| {worst:.3e}, max mean |diff| {worst_mean:.3e}");
}

#[test]
fn geometry_is_as_documented() {
    // A shift of (0.1, 0.1) on a 40x20 ramp moves content toward -x/-y by 0.05*size pixels:
    // output(x) = input(x + 2) horizontally (0.05*40), away from the reflected border.
    let (h, w) = (20, 40);
    let data: Vec<f32> = (0..h * w).map(|i| (i % w) as f32).collect();
    let img = Planar::new(1, h, w, data).unwrap();
    let out = Augmentation::shift(0.1, 0.1).apply(&img);
    for x in 0..w - 3 {
        let v = out.data[5 * w + x];
        assert!((v - (x as f32 + 2.0)).abs() < 1e-4, "x={x}: {v}");
    }
    // Near the right edge the sample position is reflected back into the image.
    let last = out.data[5 * w + w - 1];
    assert!((last - (w as f32 - 2.0)).abs() < 1e-4, "{last}");

    // A rotation by +pi/2 maps the ramp along x to a ramp along y (square image).
    let n = 8;
    let ramp: Vec<f32> = (0..n * n).map(|i| (i % n) as f32).collect();
    let sq = Planar::new(1, n, n, ramp).unwrap();
    let rot = Augmentation::rotation(std::f32::consts::FRAC_PI_2).apply(&sq);
    for y in 0..n {
        // theta = [[0,-1],[1,0]]: output(x, y) samples input at (-y, x), i.e. column n-1-y.
        let v = rot.data[y * n + 3];
        assert!((v - (n - 1 - y) as f32).abs() < 1e-4, "y={y}: {v}");
    }

    let ops = few_shot_augmentations();
    assert_eq!(ops.len(), AUGMENT_FACTOR);
    assert_eq!(ops[0], Augmentation::Identity);
    assert_eq!(ops[9], Augmentation::HFlip);
    assert_eq!(ops[10], Augmentation::VFlip);
    let hf = ops[9].apply(&img);
    assert_eq!(hf.data[3 * w], (w - 1) as f32);
}

#[test]
fn bad_inputs_are_rejected() {
    let img = Planar {
        channels: 3,
        height: 4,
        width: 4,
        data: vec![0.0; 47],
    };
    let err = augment_group(&[img]).unwrap_err();
    assert!(matches!(
        err,
        AugmentError::BadLength {
            expected: 48,
            len: 47,
            ..
        }
    ));
    assert!(err.to_string().contains("47"));
    assert!(Planar::new(3, 0, 4, vec![]).is_err());

    let good = Planar::new(3, 4, 4, vec![0.5; 48]).unwrap();
    let wrong_mask = Planar::new(1, 4, 5, vec![0.0; 20]).unwrap();
    assert!(matches!(
        augment_group_with_masks(std::slice::from_ref(&good), &[wrong_mask]),
        Err(AugmentError::MaskShape { index: 0, .. })
    ));
    assert!(matches!(
        augment_group_with_masks(&[good.clone(), good], &[]),
        Err(AugmentError::CountMismatch {
            images: 2,
            masks: 0
        })
    ));
    assert!(augment_group(&[]).unwrap().is_empty());
}
