//! MVFA prompt ensemble (spec 3.2-3.4): 7 normal and 5 abnormal state phrases x 35 templates per
//! organ word, reduced to one normalised text feature per state.
//!
//! The text tower is passed in as a closure so this module does not depend on it: anything that
//! maps `[n, 77]` token ids to `[n, embed]` projected sentence embeddings will do.
use std::collections::BTreeMap;

use std::fmt;

use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use super::tokenizer::{CONTEXT_LENGTH, ClipTokenizer, TokenizeError};

/// Why the features of one prompt state (all normal or all abnormal sentences) could not be
/// built.
#[derive(Debug, thiserror::Error)]
pub enum StateFeatureError {
    /// Nothing to average.
    #[error("no sentences to encode")]
    NoSentences,
    /// A sentence the tokenizer refused (too long for the context...).
    #[error("tokenising the prompt sentences")]
    Tokenize(#[source] TokenizeError),
    /// The encoder's output does not have one row per sentence.
    #[error(
        "the text encoder returned [{rows}, {embed}] for {sentences} sentences; expected [{sentences}, embed]"
    )]
    EncoderShape {
        /// Rows returned.
        rows: usize,
        /// Columns returned.
        embed: usize,
        /// Sentences given.
        sentences: usize,
    },
    /// The encoder's embedding size changed between chunks.
    #[error("the text encoder changed its embedding size from {from} to {to}")]
    EmbeddingChanged {
        /// Size of the first chunk's embeddings.
        from: usize,
        /// Size of this chunk's.
        to: usize,
    },
}

/// What went wrong with prompt features: building, copying or reading them back.
#[derive(Debug, thiserror::Error)]
pub enum PromptErrorKind {
    /// An organ word of only blanks.
    #[error("the organ word for the prompts is empty")]
    EmptyOrgan,
    /// The normal state's features could not be built.
    #[error("normal text features for {organ:?}")]
    Normal {
        /// The organ word.
        organ: String,
        /// Why.
        #[source]
        cause: StateFeatureError,
    },
    /// The abnormal state's features could not be built.
    #[error("abnormal text features for {organ:?}")]
    Abnormal {
        /// The organ word.
        organ: String,
        /// Why.
        #[source]
        cause: StateFeatureError,
    },
    /// The device could not hand the features back.
    #[error("reading the text features back: {0}")]
    ReadBack(String),
    /// NaN or infinite features.
    #[error(
        "text features for {0:?} are not finite (an all-zero or non-finite sentence embedding?)"
    )]
    NotFinite(String),
    /// A tensor that is not `[embed, 2]`.
    #[error("text features must be [embed, 2], got [{embed_dim}, {states}]")]
    NotTwoStates {
        /// Rows.
        embed_dim: usize,
        /// Columns.
        states: usize,
    },
    /// Host features whose value count does not match their size.
    #[error("text features hold {values} values, expected {embed_dim} x 2")]
    WrongLength {
        /// Values held.
        values: usize,
        /// Embedding size claimed.
        embed_dim: usize,
    },
    /// A cache file that is not the cache's JSON.
    #[error("parsing the text feature cache")]
    CacheJson(#[source] serde_json::Error),
    /// A cache entry whose value count does not match its size.
    #[error("text feature cache: entry {organ:?} holds {values} values for embed_dim {embed_dim}")]
    CacheEntry {
        /// The organ key.
        organ: String,
        /// Values held.
        values: usize,
        /// Embedding size claimed.
        embed_dim: usize,
    },
}

/// A prompt feature error ([`PromptErrorKind`]). `{}` shows the outermost message, `{:#}`
/// the whole chain of causes separated by `: ` (so a context such as `normal text features
/// for "brain"` is followed by what went wrong).
#[derive(Debug)]
pub struct PromptError(pub PromptErrorKind);

impl PromptError {
    /// What went wrong.
    pub fn kind(&self) -> &PromptErrorKind {
        &self.0
    }
}

impl From<PromptErrorKind> for PromptError {
    fn from(kind: PromptErrorKind) -> Self {
        PromptError(kind)
    }
}

impl fmt::Display for PromptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        if f.alternate() {
            let mut cause = std::error::Error::source(&self.0);
            while let Some(e) = cause {
                write!(f, ": {e}")?;
                cause = e.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for PromptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

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
) -> Result<Tensor<B, 2>, StateFeatureError> {
    if sentences.is_empty() {
        return Err(StateFeatureError::NoSentences);
    }
    let mut sum: Option<Tensor<B, 2>> = None;
    for chunk in sentences.chunks(ENCODE_CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let rows = tokenizer
            .tokenize(&refs, CONTEXT_LENGTH)
            .map_err(StateFeatureError::Tokenize)?;
        let ids: Vec<i64> = rows.iter().flatten().map(|&id| i64::from(id)).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids, [chunk.len(), CONTEXT_LENGTH]),
            device,
        );
        let emb = encode(tokens);
        let [n, e] = emb.dims();
        if n != chunk.len() || e == 0 {
            return Err(StateFeatureError::EncoderShape {
                rows: n,
                embed: e,
                sentences: chunk.len(),
            });
        }
        if let Some(s) = &sum {
            let [_, e0] = s.dims();
            if e != e0 {
                return Err(StateFeatureError::EmbeddingChanged { from: e0, to: e });
            }
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
) -> Result<Tensor<B, 2>, PromptError> {
    let organ = organ.trim();
    if organ.is_empty() {
        return Err(PromptErrorKind::EmptyOrgan.into());
    }
    let normal = state_feature(tokenizer, &normal_sentences(organ), device, &mut encode).map_err(
        |cause| PromptErrorKind::Normal {
            organ: organ.to_string(),
            cause,
        },
    )?;
    let abnormal = state_feature(tokenizer, &abnormal_sentences(organ), device, &mut encode)
        .map_err(|cause| PromptErrorKind::Abnormal {
            organ: organ.to_string(),
            cause,
        })?;
    let features = Tensor::cat(vec![normal, abnormal], 0).transpose(); // [e, 2]
    let values = features
        .to_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| PromptErrorKind::ReadBack(format!("{e:?}")))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(PromptErrorKind::NotFinite(organ.to_string()).into());
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
    pub fn from_tensor<B: Backend>(t: Tensor<B, 2>) -> Result<Self, PromptError> {
        let [embed_dim, states] = t.dims();
        if states != 2 {
            return Err(PromptErrorKind::NotTwoStates { embed_dim, states }.into());
        }
        let data = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| PromptErrorKind::ReadBack(format!("{e:?}")))?;
        Ok(Self { embed_dim, data })
    }

    /// The `[embed_dim, 2]` tensor on `device`; errors if `data` does not hold `embed_dim * 2`
    /// values (a corrupt cache file).
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Result<Tensor<B, 2>, PromptError> {
        if self.embed_dim == 0 || self.data.len() != self.embed_dim * 2 {
            return Err(PromptErrorKind::WrongLength {
                values: self.data.len(),
                embed_dim: self.embed_dim,
            }
            .into());
        }
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
    ) -> Result<Tensor<B, 2>, PromptError> {
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
    pub fn from_json(bytes: &[u8]) -> Result<Self, PromptError> {
        let cache: Self = serde_json::from_slice(bytes).map_err(PromptErrorKind::CacheJson)?;
        for (organ, f) in &cache.entries {
            if f.embed_dim == 0 || f.data.len() != f.embed_dim * 2 {
                return Err(PromptErrorKind::CacheEntry {
                    organ: organ.clone(),
                    values: f.data.len(),
                    embed_dim: f.embed_dim,
                }
                .into());
            }
        }
        Ok(cache)
    }
}
