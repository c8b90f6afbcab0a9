//! The CLIP loader refuses bad files with a message that names the file and the problem:
//! truncated, not safetensors, unknown layout, missing / unexpected keys, wrong shapes,
//! unsupported dtypes, and an architecture that cannot be found.
use crate::support;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use mvfa_studio::weights::clip::{
    ConfigSource, LoadOptions, WeightsError, inspect_clip, load_clip, load_clip_vision,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = NdArray<f32>;

fn fixtures() -> PathBuf {
    support::fixture_dir("clip")
}

fn oc_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("open_clip/open_clip_model.safetensors")).unwrap()
}

/// A temp dir with `open_clip_config.json` and `bytes` as `model.safetensors`.
fn with_config(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("open_clip/open_clip_config.json"),
        dir.path().join("open_clip_config.json"),
    )
    .unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Rewrites the open_clip fixture through `edit(name, dtype, shape, data)`: return None to drop
/// a tensor; `extra` tensors are added.
fn rewrite(
    edit: impl Fn(&str, Dtype, &[usize], &[u8]) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
    extra: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
) -> Vec<u8> {
    let bytes = oc_bytes();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| edit(&n, v.dtype(), v.shape(), v.data()).map(|(d, s, b)| (n, d, s, b)))
        .collect();
    owned.extend(extra);
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn keep(_: &str, d: Dtype, s: &[usize], b: &[u8]) -> Option<(Dtype, Vec<usize>, Vec<u8>)> {
    Some((d, s.to_vec(), b.to_vec()))
}

fn err_of(path: &Path) -> WeightsError {
    match load_clip::<B>(path, &LoadOptions::default(), &Default::default()) {
        Ok(_) => panic!("{} loaded although it is broken", path.display()),
        Err(e) => e,
    }
}

#[test]
fn truncated_file() {
    let bytes = oc_bytes();
    let (_d, path) = with_config(&bytes[..bytes.len() - 1000]);
    let e = err_of(&path);
    let msg = e.to_string();
    assert!(matches!(e, WeightsError::Truncated { .. }), "{msg}");
    assert!(msg.contains("model.safetensors is truncated"), "{msg}");
    assert!(
        msg.contains(&format!("has only {}", bytes.len() - 1000)),
        "{msg}"
    );

    let (_d, path) = with_config(&bytes[..100]);
    let msg = err_of(&path).to_string();
    assert!(
        msg.contains("is truncated") && msg.contains("inside the header"),
        "{msg}"
    );
}

#[test]
fn wrong_files() {
    let cfg = std::fs::read(fixtures().join("open_clip/open_clip_config.json")).unwrap();
    for (bytes, what) in [
        (cfg, "does not start with a safetensors header"),
        (
            b"\x89PNG\r\n\x1a\n0000000000000000".to_vec(),
            "does not start with a safetensors header",
        ),
        (vec![1, 2, 3], "fewer than a safetensors header"),
    ] {
        let (_d, path) = with_config(&bytes);
        let e = err_of(&path);
        let msg = e.to_string();
        assert!(matches!(e, WeightsError::NotSafetensors { .. }), "{msg}");
        assert!(
            msg.contains("is not a safetensors file") && msg.contains(what),
            "{msg}"
        );
    }
    // Trailing garbage after the last tensor.
    let mut bytes = oc_bytes();
    bytes.extend_from_slice(&[0u8; 16]);
    let (_d, path) = with_config(&bytes);
    let msg = err_of(&path).to_string();
    assert!(msg.contains("16 bytes follow the last tensor"), "{msg}");
    // A missing file.
    let msg = err_of(Path::new("/nonexistent/clip.safetensors")).to_string();
    assert!(
        msg.starts_with("cannot read /nonexistent/clip.safetensors"),
        "{msg}"
    );
    // Valid safetensors, but not CLIP.
    let other = rewrite(
        |_, _, _, _| None,
        vec![("encoder.weight".into(), Dtype::F32, vec![2], vec![0; 8])],
    );
    let (_d, path) = with_config(&other);
    let e = err_of(&path);
    assert!(matches!(e, WeightsError::UnknownLayout { .. }), "{e}");
    assert!(e.to_string().contains("encoder.weight"), "{e}");
}

#[test]
fn missing_key() {
    let bytes = rewrite(
        |n, d, s, b| {
            if n == "visual.ln_post.bias" {
                None
            } else {
                keep(n, d, s, b)
            }
        },
        vec![],
    );
    let (_d, path) = with_config(&bytes);
    let e = err_of(&path);
    let msg = e.to_string();
    assert!(
        msg.contains("does not match the CLIP architecture"),
        "{msg}"
    );
    assert!(
        msg.contains("1 missing key(s): visual.ln_post.bias"),
        "{msg}"
    );
    let WeightsError::Mismatch { report } = e else {
        panic!("{msg}")
    };
    assert_eq!(report.missing, vec!["visual.ln_post.bias"]);
    assert!(report.unexpected.is_empty() && report.mismatched.is_empty());
}

#[test]
fn unexpected_key() {
    let extra = vec![(
        "visual.transformer.resblocks.8.ln_1.weight".to_string(),
        Dtype::F32,
        vec![32],
        vec![0u8; 128],
    )];
    let bytes = rewrite(keep, extra);
    let (_d, path) = with_config(&bytes);
    let msg = err_of(&path).to_string();
    assert!(
        msg.contains("1 unexpected key(s): visual.transformer.resblocks.8.ln_1.weight"),
        "{msg}"
    );
    // The vision-only load rejects it too (it is a vision key).
    let e = load_clip_vision::<B>(&path, &LoadOptions::default(), &Default::default()).unwrap_err();
    assert!(e.to_string().contains("unexpected"), "{e}");
}

#[test]
fn shape_mismatch() {
    let bytes = rewrite(
        |n, d, s, b| {
            if n == "visual.proj" {
                Some((d, vec![32, 15], b[..32 * 15 * 4].to_vec()))
            } else {
                keep(n, d, s, b)
            }
        },
        vec![],
    );
    let (_d, path) = with_config(&bytes);
    let msg = err_of(&path).to_string();
    assert!(
        msg.contains("1 shape mismatch(es): visual.proj is [32, 15], expected [32, 16]"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtype() {
    let bytes = rewrite(
        |n, d, s, b| {
            if n == "visual.class_embedding" {
                Some((Dtype::I32, s.to_vec(), b.to_vec()))
            } else {
                keep(n, d, s, b)
            }
        },
        vec![],
    );
    let (_d, path) = with_config(&bytes);
    let msg = err_of(&path).to_string();
    assert!(
        msg.contains("unsupported dtype: visual.class_embedding (I32)"),
        "{msg}"
    );
}

#[test]
fn config_discovery() {
    // Without a config beside it, the ViT-L/14-336 defaults are checked and do not fit.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, oc_bytes()).unwrap();
    let e = err_of(&path);
    let msg = e.to_string();
    assert!(msg.contains("ViT-L/14-336 defaults"), "{msg}");
    assert!(
        msg.contains("visual.conv1.weight is [32, 3, 14, 14], expected [1024, 3, 14, 14]"),
        "{msg}"
    );

    // An explicit config works from anywhere, in either format.
    for cfg in ["open_clip/open_clip_config.json", "hf/config.json"] {
        let opts = LoadOptions {
            config: Some(fixtures().join(cfg)),
            ..Default::default()
        };
        let report = inspect_clip(&path, &opts, true).unwrap();
        assert!(report.is_complete());
        assert!(matches!(
            report.config_source,
            ConfigSource::OpenClip(_) | ConfigSource::HuggingFace(_)
        ));
        assert_eq!(report.config.vision.width, 32);
    }

    // A config that disagrees with the tensors: every mismatch is listed.
    let opts = LoadOptions {
        config: Some(dir.path().join("bad.json")),
        ..Default::default()
    };
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"embed_dim": 16, "vision_cfg": {"image_size": 336, "layers": 8, "width": 32, "patch_size": 14, "head_width": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 4, "heads": 2, "layers": 2}}"#,
    )
    .unwrap();
    let e = load_clip::<B>(&path, &opts, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unexpected key(s): transformer.resblocks.2."),
        "{e}"
    );
    // A config that is not a CLIP config.
    std::fs::write(dir.path().join("bad.json"), r#"{"hello": 1}"#).unwrap();
    let e = load_clip::<B>(&path, &opts, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config ") && e.contains("bad.json") && e.contains("neither"),
        "{e}"
    );
}

#[test]
fn vision_file_lacks_text_tower() {
    // A vision-only file loads as a vision tower, and as a full CLIP it names the text keys.
    let bytes = rewrite(
        |n, d, s, b| {
            if n.starts_with("visual.") {
                keep(n, d, s, b)
            } else {
                None
            }
        },
        vec![],
    );
    let (_d, path) = with_config(&bytes);
    let (_, report) =
        load_clip_vision::<B>(&path, &LoadOptions::default(), &Default::default()).unwrap();
    assert!(report.is_complete() && report.skipped.is_empty());
    let msg = err_of(&path).to_string();
    assert!(
        msg.contains("missing key(s): ln_final.bias, ln_final.weight, positional_embedding"),
        "{msg}"
    );
}

/// F64 and BF16 files load (converted to f32): F64 exactly, BF16 to its own precision.
#[test]
fn f64_and_bf16_files_load() {
    let device = Default::default();
    let (reference, _) = load_clip_vision::<B>(
        &fixtures().join("open_clip/open_clip_model.safetensors"),
        &LoadOptions::default(),
        &device,
    )
    .unwrap();
    let want: Vec<f32> = reference
        .class_embedding
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let to_f64 = |n: &str, d: Dtype, s: &[usize], b: &[u8]| {
        if d != Dtype::F32 {
            return keep(n, d, s, b);
        }
        let out = f32s(b)
            .iter()
            .flat_map(|&v| (v as f64).to_le_bytes())
            .collect();
        Some((Dtype::F64, s.to_vec(), out))
    };
    let to_bf16 = |n: &str, d: Dtype, s: &[usize], b: &[u8]| {
        if d != Dtype::F32 {
            return keep(n, d, s, b);
        }
        let out = f32s(b)
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        Some((Dtype::BF16, s.to_vec(), out))
    };
    for (bytes, dtype) in [
        (rewrite(to_f64, vec![]), "F64"),
        (rewrite(to_bf16, vec![]), "BF16"),
    ] {
        let (_d, path) = with_config(&bytes);
        let (vit, report) = load_clip_vision::<B>(&path, &LoadOptions::default(), &device).unwrap();
        assert!(report.applied.iter().any(|a| a.dtype == dtype), "{dtype}");
        let got: Vec<f32> = vit.class_embedding.val().into_data().to_vec().unwrap();
        for (g, w) in got.iter().zip(&want) {
            let w = if dtype == "BF16" {
                half::bf16::from_f32(*w).to_f32()
            } else {
                *w
            };
            assert_eq!(*g, w, "{dtype}");
        }
    }
}
