//! Adapter checkpoints: import of reference `.pth` files (valid and broken ones written by
//! `tools/parity/make_mvfa_fixtures.py` with `torch.save`), our safetensors format with its
//! metadata header, and the error messages for everything else.
use crate::support;

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use mvfa_studio::model::mvfa::adapter::{MvfaAdapters, MvfaAdaptersConfig};
use mvfa_studio::weights::adapters::{
    AdapterCheckpointMeta, AdapterFileFormat, BackboneIdentity, adapter_key, file_sha256_hex,
    import_mvfa_pth, load_adapter_file, load_adapters, save_adapters,
};
use safetensors::SafeTensors;

type B = NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    support::fixture_dir("mvfa").join(name)
}

/// The tiny fixture checkpoints: width 4, bottleneck 2, 4 levels.
fn tiny() -> MvfaAdaptersConfig {
    MvfaAdaptersConfig::new().with_width(4).with_bottleneck(2)
}

/// Raw f32 tensors of a plain safetensors file, by name.
fn raw_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32);
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (k, v.shape().to_vec(), vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The weight of `key` in PyTorch layout `[out, in]`, flattened.
fn torch_weight(adapters: &MvfaAdapters<B>, key: &str) -> Vec<f32> {
    let (head, rest) = key.split_once("_adapters.").unwrap();
    let (level, rest) = rest.split_once('.').unwrap();
    let bank = if head == "seg" {
        &adapters.seg
    } else {
        &adapters.det
    };
    let a = &bank.adapters[level.parse::<usize>().unwrap()];
    let lin = if rest.starts_with("fc1") {
        &a.fc1
    } else {
        &a.fc2
    };
    lin.weight.val().transpose().into_data().to_vec().unwrap()
}

#[test]
fn imports_reference_pth_exactly() {
    let device = Default::default();
    let adapters: MvfaAdapters<B> =
        import_mvfa_pth(&fixture("tiny_valid.pth"), &tiny(), &device).unwrap();
    assert_eq!(adapters.levels(), 4);
    assert_eq!(adapters.width(), Some(4));
    assert_eq!(adapters.bottleneck(), Some(2));
    let reference = raw_tensors(&fixture("tiny_valid_reference.safetensors"));
    assert_eq!(reference.len(), 16);
    for (key, shape, values) in reference {
        assert_eq!(shape, if key.contains("fc1") { [2, 4] } else { [4, 2] });
        assert_eq!(torch_weight(&adapters, &key), values, "{key}");
    }
}

#[test]
fn imports_half_precision_pth() {
    let device = Default::default();
    let half: MvfaAdapters<B> =
        import_mvfa_pth(&fixture("tiny_valid_f16.pth"), &tiny(), &device).unwrap();
    for (key, _, values) in raw_tensors(&fixture("tiny_valid_reference.safetensors")) {
        for (a, b) in torch_weight(&half, &key).iter().zip(values) {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs().max(1e-2),
                "{key}: {a} vs {b}"
            );
        }
    }
}

fn import_err(name: &str, cfg: &MvfaAdaptersConfig) -> String {
    let device = Default::default();
    let err = import_mvfa_pth::<B>(&fixture(name), cfg, &device).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(name), "message should name the file: {msg}");
    msg
}

#[test]
fn pth_errors_name_file_and_problem() {
    let msg = import_err("tiny_missing_key.pth", &tiny());
    assert!(
        msg.contains("missing tensor 'det_adapters.2.fc2.0.weight'"),
        "{msg}"
    );

    let msg = import_err("tiny_wrong_shape.pth", &tiny());
    assert!(
        msg.contains("'seg_adapters.1.fc1.0.weight' has shape [2, 5], expected [2, 4]"),
        "{msg}"
    );

    let msg = import_err("tiny_five_levels.pth", &tiny());
    assert!(
        msg.contains("unexpected tensor 'det_adapters.4.fc1.0.weight'")
            && msg.contains("taps 4 levels"),
        "{msg}"
    );

    let msg = import_err("tiny_flat_bank.pth", &tiny());
    assert!(
        msg.contains("not an MVFA adapter checkpoint")
            && msg.contains("not under 'seg_adapters' / 'det_adapters'"),
        "{msg}"
    );

    let msg = import_err("tiny_other_model.pth", &tiny());
    assert!(
        msg.contains("not an MVFA adapter checkpoint") && msg.contains("0.weight"),
        "{msg}"
    );

    // A valid file for another backbone width.
    let msg = import_err("tiny_valid.pth", &tiny().with_width(8));
    assert!(
        msg.contains("'seg_adapters.0.fc1.0.weight' has shape [2, 4], expected [2, 8]"),
        "{msg}"
    );

    // The real ViT-L/14 sizes against the tiny file.
    let msg = import_err("tiny_valid.pth", &MvfaAdaptersConfig::new());
    assert!(msg.contains("expected [768, 1024]"), "{msg}");
}

#[test]
fn non_pickle_and_missing_files_are_clear_errors() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pth");
    std::fs::write(&text, "these are not weights\n").unwrap();
    let msg = import_mvfa_pth::<B>(&text, &tiny(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("notes.pth") && msg.contains("not a readable PyTorch checkpoint"),
        "{msg}"
    );

    let msg = load_adapter_file::<B>(&text, &tiny(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("notes.pth") && msg.contains("not a safetensors file"),
        "{msg}"
    );

    let missing = dir.path().join("absent.pth");
    let msg = import_mvfa_pth::<B>(&missing, &tiny(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("absent.pth") && msg.contains("cannot read"),
        "{msg}"
    );
    let msg = load_adapter_file::<B>(&missing, &tiny(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("absent.pth") && msg.contains("cannot read"),
        "{msg}"
    );
}

fn sample_meta() -> AdapterCheckpointMeta {
    AdapterCheckpointMeta {
        organ_word: Some("Brain".into()),
        shots: Some(4),
        epochs: Some(50),
        backbone: Some(BackboneIdentity {
            model: "ViT-L-14-336".into(),
            image_size: 240,
            vision_width: 1024,
            vision_layers: 24,
            embed_dim: 768,
            tap_blocks: vec![6, 12, 18, 24],
            weights_sha256_prefix: Some("3035c92b3509".into()),
        }),
        source: Some("unit test".into()),
        calibration: Some(serde_json::json!({
            "zero_map": {"min": 0.1, "max": 3.9},
            "few_map": {"min": 0.0, "max": 1.7}
        })),
        ..AdapterCheckpointMeta::default()
    }
}

#[test]
fn safetensors_round_trip_keeps_weights_and_metadata() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let imported: MvfaAdapters<B> =
        import_mvfa_pth(&fixture("tiny_valid.pth"), &tiny(), &device).unwrap();
    let path = dir.path().join("brain.safetensors");
    let meta = sample_meta();
    save_adapters(&path, &imported, &meta).unwrap();
    // Saving again replaces the file.
    save_adapters(&path, &imported, &meta).unwrap();

    // On disk: reference key names, PyTorch layout, same values as the .pth.
    let on_disk = raw_tensors(&path);
    let reference = raw_tensors(&fixture("tiny_valid_reference.safetensors"));
    assert_eq!(on_disk, reference);

    let (loaded, loaded_meta) = load_adapters::<B>(&path, &tiny(), &device).unwrap();
    assert_eq!(loaded_meta, meta);
    for (key, _, _) in &reference {
        assert_eq!(
            torch_weight(&loaded, key),
            torch_weight(&imported, key),
            "{key}"
        );
    }

    let any = load_adapter_file::<B>(&path, &tiny(), &device).unwrap();
    assert_eq!(any.format, AdapterFileFormat::Safetensors);
    assert_eq!(any.meta.as_ref(), Some(&meta));
    let any = load_adapter_file::<B>(&fixture("tiny_valid.pth"), &tiny(), &device).unwrap();
    assert_eq!(any.format, AdapterFileFormat::Pytorch);
    assert!(any.meta.is_none());

    // Wrong backbone size is caught on load too.
    let msg = load_adapters::<B>(&path, &tiny().with_bottleneck(3), &device)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("brain.safetensors") && msg.contains("expected [3, 4]"),
        "{msg}"
    );
}

#[test]
fn safetensors_without_our_metadata_is_rejected() {
    let device = Default::default();
    let msg = load_adapters::<B>(
        &fixture("tiny_valid_reference.safetensors"),
        &tiny(),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("tiny_valid_reference.safetensors") && msg.contains("no 'mvfa' entry"),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.safetensors");
    let adapters: MvfaAdapters<B> = tiny().init(&device);
    let meta = AdapterCheckpointMeta {
        format_version: 99,
        ..AdapterCheckpointMeta::default()
    };
    save_adapters(&path, &adapters, &meta).unwrap();
    let msg = load_adapters::<B>(&path, &tiny(), &device)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("version 99"), "{msg}");
}

#[test]
fn fresh_adapters_round_trip_and_hash_helper() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let adapters: MvfaAdapters<B> = tiny().with_levels(2).init(&device);
    let path = dir.path().join("two.safetensors");
    save_adapters(&path, &adapters, &AdapterCheckpointMeta::default()).unwrap();
    let (loaded, meta) = load_adapters::<B>(&path, &tiny().with_levels(2), &device).unwrap();
    assert_eq!(meta.mixing.stream, 0.8);
    for level in 0..2 {
        for fc in [1, 2] {
            let key = adapter_key("det", level, fc);
            assert_eq!(torch_weight(&loaded, &key), torch_weight(&adapters, &key));
        }
    }
    // A 2-level file does not satisfy a 4-level backbone.
    let msg = load_adapters::<B>(&path, &tiny(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("missing tensor 'seg_adapters.2.fc1.0.weight'"),
        "{msg}"
    );

    let hash_file = dir.path().join("abc.txt");
    std::fs::write(&hash_file, "abc").unwrap();
    assert_eq!(
        file_sha256_hex(&hash_file).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
