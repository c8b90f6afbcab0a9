//! MVFA prompt ensemble (spec 3.2-3.4): 7 normal and 5 abnormal state phrases x 35 templates per
//! organ word, reduced to one normalised text feature per state.
//!
//! The text tower is passed in as a closure so this module does not depend on it: anything that
//! maps `[n, 77]` token ids to `[n, embed]` projected sentence embeddings will do.
use std::collections::BTreeMap;

use anyhow::{Context, bail, ensure};
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use super::tokenizer::{CONTEXT_LENGTH, ClipTokenizer};

/// Normal state phrases, `{}` = organ word (spec 3.2, code order).
pub const NORMAL_STATES: [&str; 7] = [
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
];

/// Abnormal state phrases, `{}` = organ word (spec 3.2, code order).
pub const ABNORMAL_STATES: [&str; 5] = [
    "damaged {}",
    "broken {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
];

/// The 35 templates, `{}` = state phrase (spec 3.3, code order). MVFA's 22-template list
/// `TEMPLATES` is unused by the reference and deliberately absent.
pub const TEMPLATES: [&str; 35] = [
    "a bad photo of a {}.",
    "a low resolution photo of the {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a photo of my {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a photo of one {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "a dark photo of a {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
];

/// Sentences encoded per call of the text tower in [`build_text_features`]; bounds the memory of
/// one forward pass (64 x 77 tokens).
pub const ENCODE_CHUNK: usize = 64;

/// State phrase outer, template inner: MVFA's loop order.
fn sentences(states: &[&str], organ: &str) -> Vec<String> {
    states
        .iter()
        .flat_map(|state| {
            let phrase = state.replace("{}", organ);
            TEMPLATES.iter().map(move |t| t.replace("{}", &phrase))
        })
        .collect()
}

/// The 245 normal sentences for `organ` (7 states x 35 templates), e.g.
/// `"a bad photo of a Brain."` first. The word is inserted verbatim; the tokenizer lower-cases.
pub fn normal_sentences(organ: &str) -> Vec<String> {
    sentences(&NORMAL_STATES, organ)
}

/// The 175 abnormal sentences for `organ` (5 states x 35 templates), e.g.
/// `"a bad photo of a damaged Brain."` first.
pub fn abnormal_sentences(organ: &str) -> Vec<String> {
    sentences(&ABNORMAL_STATES, organ)
}

/// Mean of the L2-normalised rows of all sentence embeddings, `[1, embed]`, L2-normalised.
fn state_feature<B: Backend>(
    tokenizer: &ClipTokenizer,
    sentences: &[String],
    device: &B::Device,
    encode: &mut impl FnMut(Tensor<B, 2, Int>) -> Tensor<B, 2>,
) -> anyhow::Result<Tensor<B, 2>> {
    ensure!(!sentences.is_empty(), "no sentences to encode");
    let mut sum: Option<Tensor<B, 2>> = None;
    for chunk in sentences.chunks(ENCODE_CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let rows = tokenizer
            .tokenize(&refs, CONTEXT_LENGTH)
            .context("tokenising the prompt sentences")?;
        let ids: Vec<i64> = rows.iter().flatten().map(|&id| i64::from(id)).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids, [chunk.len(), CONTEXT_LENGTH]),
            device,
        );
        let emb = encode(tokens);
        let [n, e] = emb.dims();
        ensure!(
            n == chunk.len() && e > 0,
            "the text encoder returned [{n}, {e}] for {} sentences; expected [{}, embed]",
            chunk.len(),
            chunk.len()
        );
        if let Some(s) = &sum {
            let [_, e0] = s.dims();
            ensure!(
                e == e0,
                "the text encoder changed its embedding size from {e0} to {e}"
            );
        }
        let norm = emb.clone().powf_scalar(2.0).sum_dim(1).sqrt(); // [n, 1]
        let part = (emb / norm).sum_dim(0); // [1, e]
        sum = Some(match sum {
            Some(s) => s + part,
            None => part,
        });
    }
    let mean = sum.expect("at least one chunk") / sentences.len() as f64;
    let norm = mean.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    Ok(mean / norm)
}

/// Returns the [embed_dim, 2] text feature matrix (column 0 normal, column 1 abnormal), spec 3.4:
/// L2-normalise each sentence embedding, average per state, L2-normalise the mean.
///
/// `encode` maps `[n, 77]` token ids (start 49406, end 49407, zero padding) to `[n, embed]`
/// projected sentence embeddings; it is called on chunks of at most [`ENCODE_CHUNK`] sentences.
/// Errors on an empty organ word, a sentence too long for the context, an encoder output of the
/// wrong shape, or a non-finite result (e.g. an all-zero embedding).
pub fn build_text_features<B: Backend>(
    tokenizer: &ClipTokenizer,
    organ: &str,
    device: &B::Device,
    mut encode: impl FnMut(Tensor<B, 2, Int>) -> Tensor<B, 2>,
) -> anyhow::Result<Tensor<B, 2>> {
    let organ = organ.trim();
    ensure!(!organ.is_empty(), "the organ word for the prompts is empty");
    let normal = state_feature(tokenizer, &normal_sentences(organ), device, &mut encode)
        .with_context(|| format!("normal text features for {organ:?}"))?;
    let abnormal = state_feature(tokenizer, &abnormal_sentences(organ), device, &mut encode)
        .with_context(|| format!("abnormal text features for {organ:?}"))?;
    let features = Tensor::cat(vec![normal, abnormal], 0).transpose(); // [e, 2]
    let values = features
        .to_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading the text features back: {e:?}"))?;
    if values.iter().any(|v| !v.is_finite()) {
        bail!(
            "text features for {organ:?} are not finite (an all-zero or non-finite sentence embedding?)"
        );
    }
    Ok(features)
}

/// Text features of one organ word on the host: `[embed_dim, 2]` row-major (column 0 normal,
/// column 1 abnormal), i.e. `data[i * 2 + state]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextFeatures {
    /// Embedding size (768 for ViT-L/14-336).
    pub embed_dim: usize,
    /// `embed_dim * 2` values, row-major `[embed_dim, 2]`.
    pub data: Vec<f32>,
}

impl TextFeatures {
    /// Copies a `[embed_dim, 2]` tensor to the host.
    pub fn from_tensor<B: Backend>(t: Tensor<B, 2>) -> anyhow::Result<Self> {
        let [embed_dim, states] = t.dims();
        ensure!(
            states == 2,
            "text features must be [embed, 2], got [{embed_dim}, {states}]"
        );
        let data = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading the text features back: {e:?}"))?;
        Ok(Self { embed_dim, data })
    }

    /// The `[embed_dim, 2]` tensor on `device`; errors if `data` does not hold `embed_dim * 2`
    /// values (a corrupt cache file).
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> anyhow::Result<Tensor<B, 2>> {
        ensure!(
            self.embed_dim > 0 && self.data.len() == self.embed_dim * 2,
            "text features hold {} values, expected {} x 2",
            self.data.len(),
            self.embed_dim
        );
        Ok(Tensor::from_data(
            TensorData::new(self.data.clone(), [self.embed_dim, 2]),
            device,
        ))
    }
}

/// Text features per organ word, for one backbone (the features depend on the text tower's
/// weights, so keep one cache per backbone and tag it with [`TextFeatureCache::backbone`]).
/// Keys are the trimmed, lower-cased organ word: the tokenizer lower-cases, so `"Brain"` and
/// `" brain "` give the same features.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TextFeatureCache {
    /// Free-form identity of the backbone the features were built with (e.g. a weights hash).
    pub backbone: String,
    entries: BTreeMap<String, TextFeatures>,
}

impl TextFeatureCache {
    /// An empty cache for the backbone identified by `backbone`.
    pub fn new(backbone: impl Into<String>) -> Self {
        Self {
            backbone: backbone.into(),
            entries: BTreeMap::new(),
        }
    }

    /// The cache key of an organ word: trimmed and lower-cased.
    pub fn key(organ: &str) -> String {
        organ.trim().to_lowercase()
    }

    /// Cached features for `organ`, if any.
    pub fn get(&self, organ: &str) -> Option<&TextFeatures> {
        self.entries.get(&Self::key(organ))
    }

    /// Stores features for `organ`, replacing any previous ones.
    pub fn insert(&mut self, organ: &str, features: TextFeatures) {
        self.entries.insert(Self::key(organ), features);
    }

    /// Number of cached organ words.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Cached organ keys, sorted.
    pub fn organs(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The `[embed, 2]` features for `organ` on `device`: from the cache, or built with
    /// [`build_text_features`] (the organ key, i.e. lower-cased, is what gets tokenised) and
    /// stored. `encode` is only called on a miss.
    pub fn get_or_build<B: Backend>(
        &mut self,
        tokenizer: &ClipTokenizer,
        organ: &str,
        device: &B::Device,
        encode: impl FnMut(Tensor<B, 2, Int>) -> Tensor<B, 2>,
    ) -> anyhow::Result<Tensor<B, 2>> {
        let key = Self::key(organ);
        if let Some(f) = self.entries.get(&key) {
            return f.to_tensor(device);
        }
        let t = build_text_features(tokenizer, &key, device, encode)?;
        self.entries
            .insert(key, TextFeatures::from_tensor(t.clone())?);
        Ok(t)
    }

    /// The cache as JSON bytes.
    pub fn to_json(&self) -> std::io::Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(std::io::Error::other)
    }

    /// Reads a cache written by [`TextFeatureCache::to_json`], checking every entry's size.
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<Self> {
        let cache: Self =
            serde_json::from_slice(bytes).context("parsing the text feature cache")?;
        for (organ, f) in &cache.entries {
            ensure!(
                f.embed_dim > 0 && f.data.len() == f.embed_dim * 2,
                "text feature cache: entry {organ:?} holds {} values for embed_dim {}",
                f.data.len(),
                f.embed_dim
            );
        }
        Ok(cache)
    }
}
