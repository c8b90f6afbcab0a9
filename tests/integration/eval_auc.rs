//! ROC AUC against scikit-learn values (tests/fixtures/eval/auc_cases.json, written by
//! tools/eval/make_auc_fixtures.py), and streaming vs one-shot agreement.
use mvfa_studio::eval::auc::{AucError, PixelAucAccumulator, roc_auc};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    scores: Vec<f64>,
    labels: Vec<u8>,
    auc: f64,
}

#[derive(Deserialize)]
struct PixelImage {
    height: usize,
    width: usize,
    map: Vec<f64>,
    mask: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct Pixel {
    images: Vec<PixelImage>,
    auc: f64,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
    pixel: Pixel,
}

fn fixture() -> Fixture {
    let path = crate::support::fixture_dir("eval/auc_cases.json");
    let text = std::fs::read_to_string(path).expect("read auc fixture");
    serde_json::from_str(&text).expect("parse auc fixture")
}

/// Tolerance against scikit-learn: its trapezoid sum rounds, ours is exact integers.
const TOL: f64 = 1e-12;

#[test]
fn image_auc_matches_sklearn() {
    let fx = fixture();
    assert!(fx.cases.len() >= 9);
    for case in &fx.cases {
        let scores: Vec<f32> = case.scores.iter().map(|&s| s as f32).collect();
        let labels: Vec<bool> = case.labels.iter().map(|&l| l != 0).collect();
        let auc = roc_auc(&scores, &labels).unwrap();
        let err = (auc - case.auc).abs();
        println!(
            "{:20} ours {auc:.17} sklearn {:.17} |diff| {err:.3e}",
            case.name, case.auc
        );
        assert!(err <= TOL, "{}: {auc} vs sklearn {}", case.name, case.auc);

        // The streaming accumulator on the same data, split into uneven chunks, is bit-equal.
        let mut acc = PixelAucAccumulator::new();
        let mut start = 0;
        let mut chunk = 1;
        while start < scores.len() {
            let end = (start + chunk).min(scores.len());
            acc.add(&scores[start..end], &labels[start..end]).unwrap();
            start = end;
            chunk = chunk * 3 + 1;
        }
        assert_eq!(acc.auc().unwrap().to_bits(), auc.to_bits(), "{}", case.name);
    }
}

#[test]
fn exact_simple_values() {
    let tie = roc_auc(
        &[0.3; 10],
        &[
            true, false, true, false, true, false, true, false, true, false,
        ],
    );
    assert_eq!(tie.unwrap(), 0.5);
    assert_eq!(roc_auc(&[0.0, 1.0], &[false, true]).unwrap(), 1.0);
    assert_eq!(roc_auc(&[0.0, 1.0], &[true, false]).unwrap(), 0.0);
    // Infinities are ordered, -0.0 ties with +0.0.
    let auc = roc_auc(
        &[f32::NEG_INFINITY, -0.0, 0.0, f32::INFINITY],
        &[false, true, false, true],
    )
    .unwrap();
    assert_eq!(auc, (2.0 + 2.0 + 1.0) / 8.0 + 0.25);
}

#[test]
fn pixel_auc_matches_sklearn_and_one_shot() {
    let fx = fixture();
    let mut acc = PixelAucAccumulator::new();
    let (mut all_s, mut all_l) = (Vec::new(), Vec::new());
    for img in &fx.pixel.images {
        let map: Vec<f32> = img.map.iter().map(|&s| s as f32).collect();
        assert_eq!(map.len(), img.height * img.width);
        match &img.mask {
            Some(mask) => {
                let mask: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
                acc.add(&map, &mask).unwrap();
                all_l.extend_from_slice(&mask);
            }
            None => {
                acc.add_uniform(&map, false).unwrap();
                all_l.extend(std::iter::repeat_n(false, map.len()));
            }
        }
        all_s.extend_from_slice(&map);
    }
    assert_eq!(acc.images(), fx.pixel.images.len());
    assert_eq!(acc.positives() + acc.negatives(), all_s.len() as u64);
    let streamed = acc.auc().unwrap();
    let one_shot = roc_auc(&all_s, &all_l).unwrap();
    println!(
        "pixel: streamed {streamed:.17} sklearn {:.17} |diff| {:.3e}",
        fx.pixel.auc,
        (streamed - fx.pixel.auc).abs()
    );
    assert_eq!(streamed.to_bits(), one_shot.to_bits());
    assert!((streamed - fx.pixel.auc).abs() <= TOL);
    // Asking again (after the in-place sort) and adding more keeps working.
    assert_eq!(acc.auc().unwrap().to_bits(), streamed.to_bits());
}

/// A larger synthetic pool (10^6 pixels, 8-bit-quantised and continuous maps) fed image by
/// image, in two accumulators merged, against the one-shot value.
#[test]
fn streaming_equals_one_shot_on_a_million_pixels() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let (h, w) = (100, 100);
    let (mut a, mut b) = (PixelAucAccumulator::new(), PixelAucAccumulator::new());
    let (mut all_s, mut all_l) = (Vec::new(), Vec::new());
    for img in 0..100 {
        let (cy, cx) = ((next() % 80 + 10) as i32, (next() % 80 + 10) as i32);
        let mut map = Vec::with_capacity(h * w);
        let mut mask = Vec::with_capacity(h * w);
        for y in 0..h as i32 {
            for x in 0..w as i32 {
                let inside = img % 3 != 0 && (y - cy).pow(2) + (x - cx).pow(2) < 64;
                let noise = (next() % 1_000_000) as f32 / 1e6;
                let mut s = 0.7 * noise + if inside { 0.3 } else { 0.0 };
                if img % 2 == 0 {
                    s = (s * 255.0).round() / 255.0;
                }
                map.push(s);
                mask.push(inside);
            }
        }
        let acc = if img % 2 == 0 { &mut a } else { &mut b };
        if img % 3 == 0 {
            acc.add_uniform(&map, false).unwrap();
        } else {
            acc.add(&map, &mask).unwrap();
        }
        all_s.extend_from_slice(&map);
        all_l.extend_from_slice(&mask);
    }
    a.merge(&b);
    assert_eq!(a.images(), 100);
    let streamed = a.auc().unwrap();
    let one_shot = roc_auc(&all_s, &all_l).unwrap();
    assert_eq!(streamed.to_bits(), one_shot.to_bits());
    assert!(streamed > 0.6 && streamed < 1.0);
    // The store holds 2 bytes per pixel plus growth slack, never an f64 copy.
    assert!(
        a.heap_bytes() <= 4 * all_s.len(),
        "{} bytes",
        a.heap_bytes()
    );
}

#[test]
fn errors_are_explicit() {
    assert_eq!(
        roc_auc(&[0.1, 0.2], &[true, true]),
        Err(AucError::OneClass {
            positives: 2,
            negatives: 0
        })
    );
    assert_eq!(
        roc_auc(&[0.1, f32::NAN, 0.3], &[true, false, true]),
        Err(AucError::NanScore { index: 1 })
    );
    assert_eq!(
        roc_auc(&[0.1], &[true, false]),
        Err(AucError::LengthMismatch {
            scores: 1,
            labels: 2
        })
    );
    let msg = roc_auc(&[0.1, f32::NAN], &[true, false])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("NaN") && msg.contains('1'), "{msg}");

    let mut acc = PixelAucAccumulator::new();
    acc.add(&[0.1, 0.2], &[false, true]).unwrap();
    let err = acc
        .add(&[0.1, f32::NAN, 0.3], &[false, false, true])
        .unwrap_err();
    assert_eq!(
        err,
        AucError::NanPixel {
            image: 1,
            pixel: 2 - 1
        }
    );
    // Nothing from the rejected map was added.
    assert_eq!(acc.images(), 1);
    assert_eq!(acc.positives() + acc.negatives(), 2);
    assert_eq!(acc.auc().unwrap(), 1.0);

    let mut only_neg = PixelAucAccumulator::new();
    only_neg.add_uniform(&[0.5; 16], false).unwrap();
    assert!(matches!(
        only_neg.auc(),
        Err(AucError::OneClass {
            positives: 0,
            negatives: 16
        })
    ));
}
