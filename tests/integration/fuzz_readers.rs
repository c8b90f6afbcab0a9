//! Property tests of the readers that take user files (issue 14, class 6): the DICOM header
//! walk and decoder, the raster loader, the adapter checkpoint readers (safetensors and
//! `.pth`), the CLIP weights loader and the project file. Each feeds mutated copies of a valid
//! fixture (bytes flipped, runs overwritten, truncated) and random bytes, and asserts that the
//! reader returns (a value or an error) instead of panicking.
//!
//! CI runs a few dozen cases per reader (a few seconds); a longer run:
//! `PROPTEST_CASES=5000 cargo test --test integration fuzz_readers`.
use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use burn::backend::NdArray;
use mvfa_studio::app::state::labels::{ImageKey, Label};
use mvfa_studio::app::state::project::{
    self, FileEntry, LabelEntry, ModelEntry, ProjectFile, SetAside,
};
use mvfa_studio::app::state::viewer::{Display, Measurement};
use mvfa_studio::io::dicom::load_dicom_bytes;
use mvfa_studio::io::image::{VoiFunction, VoiLut, Window};
use mvfa_studio::io::mask::Mask;
use mvfa_studio::io::raster::{RasterLimits, load_raster_bytes_with};
use mvfa_studio::model::mvfa::adapter::MvfaAdaptersConfig;
use mvfa_studio::weights::adapters::{file_sha256_hex, load_adapter_file, read_checkpoint_meta};
use mvfa_studio::weights::clip::{LoadOptions, inspect_clip};
use proptest::prelude::*;
use serde_json::Value;

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

/// A valid project file over two real files of `dir` (both labelled, one with a mask and a
/// measurement), with a display LUT, a set-aside entry and a model entry: every field the
/// reader and `verify` walk.
fn sample_project(dir: &Path) -> ProjectFile {
    let (a, b) = (dir.join("a.png"), dir.join("b.dcm"));
    std::fs::write(&a, b"image a").unwrap();
    std::fs::write(&b, b"image b").unwrap();
    let entry = |p: &Path| FileEntry {
        path: p.to_path_buf(),
        sha256: file_sha256_hex(p).unwrap(),
    };
    let key = ImageKey {
        path: b.clone(),
        frame: 1,
    };
    let mut mask = Mask::new(12, 9);
    mask.paint_segment([2.0, 2.0], [9.0, 6.0], 1.5, true);
    let window = Window {
        center: 40.0,
        width: 400.0,
        function: VoiFunction::Linear,
        label: "Soft tissue".into(),
        lut: Some(VoiLut {
            first_mapped: -10,
            data: vec![0, 100, 4095],
            bits: 12,
        }),
    };
    let label = |path: &Path, frame, label| LabelEntry {
        path: path.to_path_buf(),
        frame,
        label,
    };
    ProjectFile {
        project_path: Some(dir.join("p.json")),
        sources: vec![dir.to_path_buf()],
        files: vec![entry(&a), entry(&b)],
        labels: vec![label(&a, 0, Label::Normal), label(&b, 1, Label::Abnormal)],
        masks: vec![project::encode_mask(&key, &mask).unwrap()],
        display: BTreeMap::from([(
            "1.2.3".to_string(),
            Display {
                window,
                invert: true,
            },
        )]),
        measurements: vec![Measurement {
            key,
            from: [1.0, 2.0],
            to: [10.5, 3.0],
        }],
        set_aside: vec![SetAside {
            file: FileEntry {
                path: dir.join("gone.png"),
                sha256: "00".repeat(32),
            },
            reason: "missing".into(),
            labels: vec![label(&dir.join("gone.png"), 0, Label::Normal)],
            masks: Vec::new(),
        }],
        model: Some(ModelEntry {
            organ: "Brain".into(),
            seed: 7,
            weights: Some(dir.join("clip.safetensors")),
            ..ModelEntry::default()
        }),
        ..ProjectFile::default()
    }
}

/// A PNG that claims `width` x `height` grey pixels and holds no image data.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(ihdr);
    png.extend(crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Values a hostile or damaged project file may hold where another is expected.
fn odd_value() -> impl Strategy<Value = Value> {
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(u64::MAX),
            Just(1u64 << 53),
            Just(u64::from(u32::MAX)),
            Just(0)
        ]
        .prop_map(Value::from),
        prop_oneof![
            Just(-1.0),
            Just(1e308),
            Just(-1e308),
            Just(0.5),
            Just(1e-320)
        ]
        .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(Value::from("../../../etc/passwd")),
        Just(Value::from("mvfa-studio-project")),
        Just(Value::from(b64(png_header(100_000, 100_000)))),
        Just(Value::from(b64(png_header(0, 0)))),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(move |v| Value::from(b64(v))),
        Just(Value::Array(Vec::new())),
        Just(Value::Object(serde_json::Map::new())),
        Just(serde_json::json!([0, 1, 2])),
    ]
}

/// Every node of `v` as a JSON pointer (the root included).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                pointers(
                    item,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Reads the project at `path` and, when it parses, verifies it and maps its LUTs; errors and
/// problems must be one-line messages that say what they are about.
fn read_and_verify(path: &Path) {
    match project::read(path) {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.starts_with(&path.display().to_string()),
                "the error names the file: {e}"
            );
            assert_eq!(e.matches(&path.display().to_string()).count(), 1, "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        Ok(file) => {
            let verified = project::verify(&file, &mut Default::default());
            for p in &verified.problems {
                assert!(p.starts_with("mask of "), "the problem names the mask: {p}");
                assert!(!p.contains('\n'), "one line: {p}");
            }
            for d in file.display.values() {
                if let Some(lut) = &d.window.lut {
                    for x in [f64::NAN, -1e300, -1.0, 0.0, 1.0, 1e300] {
                        assert!((0.0..=255.0).contains(&lut.map(x)));
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn project_reader_never_panics_on_mutated_files(edits in edits(4096)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        project::write(&path, &sample_project(dir.path())).unwrap();
        let bytes = apply(read(&path), &edits);
        std::fs::write(&path, bytes).unwrap();
        read_and_verify(&path);
    }

    #[test]
    fn project_reader_never_panics_on_odd_values(
        changes in proptest::collection::vec((any::<prop::sample::Index>(), odd_value()), 1..5),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut json = serde_json::to_value(sample_project(dir.path())).unwrap();
        for (at, value) in changes {
            let mut all = Vec::new();
            pointers(&json, String::new(), &mut all);
            let target = at.get(&all).clone();
            if target.is_empty() {
                json = value;
            } else if let Some(slot) = json.pointer_mut(&target) {
                *slot = value;
            }
        }
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        read_and_verify(&path);
    }

    #[test]
    fn project_reader_never_panics_on_random_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        json_start in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let mut bytes = Vec::new();
        if json_start {
            bytes.extend(br#"{"format":"mvfa-studio-project","version":1,"masks":[{"#);
        }
        bytes.extend(body);
        std::fs::write(&path, bytes).unwrap();
        read_and_verify(&path);
    }
}

#[test]
fn project_reader_reports_bad_masks_and_missing_files_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let mut file = sample_project(dir.path());
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut huge = file.masks[0].clone();
    huge.png_base64 = b64(png_header(100_000, 100_000));
    let mut junk = file.masks[0].clone();
    junk.png_base64 = b64(b"not a png".to_vec());
    file.masks.extend([huge, junk]);
    project::write(&path, &file).unwrap();
    let read = project::read(&path).unwrap();
    assert_eq!(read, file);
    let verified = project::verify(&read, &mut Default::default());
    assert_eq!(verified.masks.len(), 1, "{:?}", verified.problems);
    assert_eq!(verified.problems.len(), 2, "{:?}", verified.problems);
    for p in &verified.problems {
        assert!(p.starts_with("mask of ") && p.contains("b.dcm"), "{p}");
    }
    // The labelled files and the set-aside entry survive; a missing file is set aside.
    std::fs::remove_file(dir.path().join("a.png")).unwrap();
    let verified = project::verify(&read, &mut Default::default());
    assert_eq!(verified.set_aside.len(), 2);
    assert!(verified.set_aside[1].reason.starts_with("missing"));
    // Not a project, a newer version, a missing file: one-line errors naming the file.
    for (bytes, what) in [
        (
            &b"{\"format\": \"other\"}"[..],
            "not an MVFA Studio project",
        ),
        (
            &b"{\"version\": 4294967295}"[..],
            "is newer than this program reads",
        ),
        (&b"[1, 2"[..], "not a project file"),
    ] {
        std::fs::write(&path, bytes).unwrap();
        let e = project::read(&path).unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
        read_and_verify(&path);
    }
    let e = project::read(&dir.path().join("none.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("No such file"), "{e}");
}
