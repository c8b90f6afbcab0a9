//! CLIP tokenizer and MVFA prompt ensemble against open_clip (fixture written by
//! tools/tokenizer/make_tokenizer_fixtures.py from the /work/pyref reference venv).
use std::sync::LazyLock;

use burn::backend::NdArray;
use burn::prelude::*;
use burn::tensor::TensorData;
use mvfa_studio::model::clip::prompts::{
    TextFeatureCache, TextFeatures, abnormal_sentences, build_text_features, normal_sentences,
};
use mvfa_studio::model::clip::tokenizer::{
    CONTEXT_LENGTH, ClipTokenizer, EOT_TOKEN, SOT_TOKEN, TokenizeError, VOCAB_SIZE,
};
use serde::Deserialize;

type B = NdArray<f32>;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct StatePrompts {
    normal: Vec<Case>,
    abnormal: Vec<Case>,
}

#[derive(Deserialize)]
struct NearLimit {
    text: String,
    padded: Vec<u32>,
}

#[derive(Deserialize)]
struct Padded {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
}

#[derive(Deserialize)]
struct Features {
    embed_dim: usize,
    features: std::collections::BTreeMap<String, Vec<Vec<f64>>>,
}

#[derive(Deserialize)]
struct Fixture {
    prompts: std::collections::BTreeMap<String, StatePrompts>,
    cases: Vec<Case>,
    near_limit: NearLimit,
    over_limit: String,
    padded: Padded,
    text_features: Features,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let path = crate::support::fixture_dir("tokenizer/tokenizer_cases.json");
    let text = std::fs::read_to_string(path).expect("tokenizer fixture present");
    serde_json::from_str(&text).expect("tokenizer fixture parses")
});

static TOK: LazyLock<ClipTokenizer> = LazyLock::new(ClipTokenizer::new);

#[test]
fn bundled_vocabulary_has_clip_layout() {
    assert_eq!(TOK.vocab_size(), VOCAB_SIZE);
    assert_eq!(TOK.encode("<start_of_text>"), vec![SOT_TOKEN]);
    assert_eq!(TOK.encode("<end_of_text>"), vec![EOT_TOKEN]);
    assert_eq!(
        TOK.decode(&TOK.encode("a photo of the brain.")),
        "a photo of the brain . "
    );
}

#[test]
fn bundled_vocabulary_is_the_recorded_file() {
    use sha2::{Digest, Sha256};
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/bpe_simple_vocab_16e6.txt.gz"
    );
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    // The SHA-256 recorded in assets/README.md.
    assert_eq!(
        hex,
        "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    );
}

#[test]
fn odd_inputs_match_open_clip() {
    let mut failures = Vec::new();
    for case in &FIXTURE.cases {
        let got = TOK.encode(&case.text);
        if got != case.ids {
            failures.push(format!(
                "{:?}: got {got:?}, open_clip {:?}",
                case.text, case.ids
            ));
        }
    }
    assert!(FIXTURE.cases.len() >= 30);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn prompt_sentences_and_ids_match_open_clip() {
    for (organ, expected) in &FIXTURE.prompts {
        for (state, sentences, cases) in [
            ("normal", normal_sentences(organ), &expected.normal),
            ("abnormal", abnormal_sentences(organ), &expected.abnormal),
        ] {
            assert_eq!(sentences.len(), cases.len(), "{organ} {state}");
            for (s, case) in sentences.iter().zip(cases) {
                assert_eq!(s, &case.text, "{organ} {state} sentence");
                assert_eq!(TOK.encode(s), case.ids, "{organ} {state}: {s:?}");
            }
        }
    }
    assert_eq!(FIXTURE.prompts.len(), 2);
}

#[test]
fn sentence_counts_and_ends_follow_spec() {
    let n = normal_sentences("Brain");
    let a = abnormal_sentences("Brain");
    assert_eq!(n.len(), 245);
    assert_eq!(a.len(), 175);
    assert_eq!(n.first().unwrap(), "a bad photo of a Brain.");
    assert_eq!(
        n.last().unwrap(),
        "this is one Brain without damage in the scene."
    );
    assert_eq!(a.first().unwrap(), "a bad photo of a damaged Brain.");
    assert_eq!(
        a.last().unwrap(),
        "this is one Brain with damage in the scene."
    );
    assert!(n.contains(&"a bad photo of a Brain without flaw.".to_string()));
}

#[test]
fn tokenize_pads_like_open_clip() {
    let texts: Vec<&str> = FIXTURE.padded.texts.iter().map(String::as_str).collect();
    let rows = TOK.tokenize(&texts, CONTEXT_LENGTH).unwrap();
    assert_eq!(rows, FIXTURE.padded.ids);

    let near = TOK
        .tokenize(&[&FIXTURE.near_limit.text], CONTEXT_LENGTH)
        .unwrap();
    assert_eq!(near[0], FIXTURE.near_limit.padded);
    assert_eq!(near[0][CONTEXT_LENGTH - 1], EOT_TOKEN);
}

#[test]
fn tokenize_rejects_text_over_context() {
    let err = TOK
        .tokenize(&["fine", &FIXTURE.over_limit], CONTEXT_LENGTH)
        .unwrap_err();
    match &err {
        TokenizeError::TooLong {
            index,
            tokens,
            context_length,
            ..
        } => assert_eq!((*index, *tokens, *context_length), (1, 78, 77)),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("78 tokens"), "{err}");
    assert!(matches!(
        TOK.tokenize(&["x"], 1),
        Err(TokenizeError::ContextTooShort(1))
    ));
}

/// The fixture's fake sentence encoder: emb[n, d] = sum_p (p + 1) / 77 *
/// sin(0.0137 * id[n, p] * (d + 1) + 0.71 * d), in f64, handed over as f32.
fn fake_encoder(
    embed_dim: usize,
    calls: &std::cell::Cell<usize>,
) -> impl FnMut(Tensor<B, 2, Int>) -> Tensor<B, 2> + '_ {
    move |ids: Tensor<B, 2, Int>| {
        calls.set(calls.get() + 1);
        let [n, l] = ids.dims();
        assert!(n <= 64 && l == CONTEXT_LENGTH);
        let ids: Vec<i64> = ids.into_data().convert::<i64>().into_vec().unwrap();
        let mut out = vec![0f32; n * embed_dim];
        for r in 0..n {
            for d in 0..embed_dim {
                let mut acc = 0f64;
                for p in 0..l {
                    let id = ids[r * l + p] as f64;
                    let w = (p as f64 + 1.0) / 77.0;
                    acc += w * (0.0137 * id * (d as f64 + 1.0) + 0.71 * d as f64).sin();
                }
                out[r * embed_dim + d] = acc as f32;
            }
        }
        Tensor::from_data(TensorData::new(out, [n, embed_dim]), &Default::default())
    }
}

#[test]
fn text_features_match_numpy_reduction() {
    let device = Default::default();
    let e = FIXTURE.text_features.embed_dim;
    let mut max_err = 0f64;
    for (organ, expected) in &FIXTURE.text_features.features {
        let calls = std::cell::Cell::new(0);
        let t = build_text_features::<B>(&TOK, organ, &device, fake_encoder(e, &calls)).unwrap();
        assert_eq!(t.dims(), [e, 2]);
        // 245 normal -> 4 chunks of <= 64, 175 abnormal -> 3 chunks.
        assert_eq!(calls.get(), 7);
        let got: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
        for (i, row) in expected.iter().enumerate() {
            for (s, &want) in row.iter().enumerate() {
                max_err = max_err.max((got[i * 2 + s] as f64 - want).abs());
            }
        }
    }
    eprintln!("text features max-abs error vs NumPy: {max_err:e}");
    assert!(max_err < 1e-5, "max-abs error {max_err}");
}

#[test]
fn feature_cache_builds_once_per_word_and_round_trips() {
    let device = Default::default();
    let e = FIXTURE.text_features.embed_dim;
    let calls = std::cell::Cell::new(0);
    let mut cache = TextFeatureCache::new("fake-encoder");
    let a = cache
        .get_or_build::<B>(&TOK, "Brain", &device, fake_encoder(e, &calls))
        .unwrap();
    let b = cache
        .get_or_build::<B>(&TOK, "  BRAIN ", &device, fake_encoder(e, &calls))
        .unwrap();
    assert_eq!(calls.get(), 7, "second lookup must hit the cache");
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.organs().collect::<Vec<_>>(), vec!["brain"]);
    assert_eq!(a.to_data(), b.to_data());

    // Lower-casing the word does not change the features (the tokenizer lower-cases).
    let expected = &FIXTURE.text_features.features["Brain"];
    let got = &cache.get("brain").unwrap().data;
    for (i, row) in expected.iter().enumerate() {
        for (s, &want) in row.iter().enumerate() {
            assert!((got[i * 2 + s] as f64 - want).abs() < 1e-5);
        }
    }

    let loaded = TextFeatureCache::from_json(&cache.to_json().unwrap()).unwrap();
    assert_eq!(loaded, cache);
    assert_eq!(loaded.backbone, "fake-encoder");

    let err = TextFeatureCache::from_json(
        b"{\"backbone\":\"x\",\"entries\":{\"brain\":{\"embed_dim\":3,\"data\":[1.0]}}}",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("brain"), "{err}");
}

#[test]
fn build_rejects_bad_encoder_output_and_empty_word() {
    let device = Default::default();
    let err = build_text_features::<B>(&TOK, "   ", &device, |_| Tensor::zeros([1, 4], &device))
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    let err = build_text_features::<B>(&TOK, "Brain", &device, |ids: Tensor<B, 2, Int>| {
        Tensor::ones([ids.dims()[0] + 1, 4], &device)
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("returned ["), "{err:#}");

    let err = build_text_features::<B>(&TOK, "Brain", &device, |ids: Tensor<B, 2, Int>| {
        Tensor::zeros([ids.dims()[0], 4], &device)
    })
    .unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err:#}");

    let features = TextFeatures {
        embed_dim: 4,
        data: vec![0.0; 3],
    };
    assert!(features.to_tensor::<B>(&device).is_err());
}
