//! CLIP text transformer: token + position embeddings, causal pre-norm blocks, ln_final,
//! end-of-text pooling and the text projection (spec 3.4, step 2).
use burn::module::{Initializer, Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::prelude::*;

use super::config::TextConfig;
use super::transformer::ResidualAttentionBlock;

/// The CLIP text encoder.
#[derive(Module, Debug)]
pub struct TextTransformer<B: Backend> {
    /// `[vocab, width]` token table.
    pub token_embedding: Embedding<B>,
    /// `[context, width]` learned positions.
    pub positional_embedding: Param<Tensor<B, 2>>,
    /// Causal transformer blocks.
    pub blocks: Vec<ResidualAttentionBlock<B>>,
    /// Final LayerNorm.
    pub ln_final: LayerNorm<B>,
    /// `[width, embed_dim]` projection into the joint space.
    pub text_projection: Param<Tensor<B, 2>>,
    /// Token positions (77).
    pub context_length: usize,
    /// Residual stream width.
    pub width: usize,
    /// Output embedding width.
    pub embed_dim: usize,
}

impl<B: Backend> TextTransformer<B> {
    /// Random (lazily initialised) tower; see [`TextConfig::init`].
    pub(crate) fn new(cfg: &TextConfig, device: &B::Device) -> Self {
        let w = cfg.width;
        let block = cfg.block();
        Self {
            token_embedding: EmbeddingConfig::new(cfg.vocab_size, w)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            positional_embedding: Initializer::Normal {
                mean: 0.0,
                std: 0.01,
            }
            .init([cfg.context_length, w], device),
            blocks: (0..cfg.layers).map(|_| block.init(device)).collect(),
            ln_final: LayerNormConfig::new(w)
                .with_epsilon(cfg.layer_norm_eps)
                .init(device),
            text_projection: Initializer::Normal {
                mean: 0.0,
                std: (w as f64).powf(-0.5),
            }
            .init([w, cfg.embed_dim], device),
            context_length: cfg.context_length,
            width: w,
            embed_dim: cfg.embed_dim,
        }
    }

    /// Output embedding width (768 for ViT-L/14).
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// Token positions the tower accepts (77).
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Encodes tokenised sentences.
    ///
    /// - `tokens`: `[n, L]` token ids, `L <= context_length` (77 from the tokenizer), each row
    ///   `<start> ... <end>` padded with 0. The end-of-text token (49407) is the largest id,
    ///   so its position is the row's arg-max, as in CLIP.
    /// - returns `[n, embed_dim]`: the projected end-of-text features, NOT normalised.
    ///
    /// The batch is cut right after its last end-of-text position before the blocks: with the
    /// causal mask no position attends to later ones, so the pooled outputs are unchanged and
    /// the work drops about 5x for MVFA's short prompts (spec 3.4). Finding that length reads
    /// one integer back from the device.
    pub fn encode(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [n, len] = tokens.dims();
        assert!(
            len <= self.context_length,
            "text tower takes at most {} tokens per row, got {len}",
            self.context_length
        );
        let eot = tokens.clone().argmax(1); // [n, 1]
        let keep = (eot.clone().max().into_scalar().elem::<i64>().max(0) as usize + 1).min(len);
        let tokens = tokens.slice(s![.., 0..keep]);
        let positions = self.positional_embedding.val().slice(s![0..keep, ..]);
        let mut x = self.token_embedding.forward(tokens) + positions.unsqueeze::<3>();
        for block in &self.blocks {
            x = block.forward(x, true);
        }
        // Pool before ln_final (it acts per token, so the result is the same and cheaper).
        let index = eot.reshape([n, 1, 1]).expand([n, 1, self.width]);
        let pooled = x.gather(1, index).reshape([n, self.width]);
        self.ln_final
            .forward(pooled)
            .matmul(self.text_projection.val())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{TensorData, Tolerance};

    type B = NdArray<f32>;

    fn tiny() -> TextConfig {
        TextConfig::new()
            .with_vocab_size(50)
            .with_context_length(10)
            .with_width(8)
            .with_heads(2)
            .with_layers(2)
            .with_mlp_width(16)
            .with_embed_dim(4)
    }

    /// Untruncated reference: all positions through the blocks, ln_final, then pool.
    fn reference(t: &TextTransformer<B>, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [n, len] = tokens.dims();
        let eot: Vec<i64> = tokens
            .clone()
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        let mut x = t.token_embedding.forward(tokens)
            + t.positional_embedding
                .val()
                .slice(s![0..len, ..])
                .unsqueeze::<3>();
        for b in &t.blocks {
            x = b.forward(x, true);
        }
        let x = t.ln_final.forward(x);
        let rows: Vec<_> = (0..n)
            .map(|i| {
                let e = eot[i] as usize;
                x.clone()
                    .slice(s![i..i + 1, e..e + 1, ..])
                    .reshape([1, t.width])
            })
            .collect();
        Tensor::cat(rows, 0).matmul(t.text_projection.val())
    }

    #[test]
    fn truncation_and_pooling_match_full_sequence() {
        let device = Default::default();
        let t = tiny().init::<B>(&device);
        // EOT (largest id, 49) at positions 3 and 5; padding after.
        let tokens = Tensor::<B, 2, Int>::from_data(
            TensorData::from([
                [48i64, 7, 9, 49, 0, 0, 0, 0, 0, 0],
                [48, 3, 3, 4, 5, 49, 0, 0, 0, 0],
            ]),
            &device,
        );
        let got = t.encode(tokens.clone());
        assert_eq!(got.dims(), [2, 4]);
        got.clone().into_data().assert_approx_eq::<f32>(
            &reference(&t, tokens.clone()).into_data(),
            Tolerance::absolute(1e-5),
        );
        // Padding content after EOT does not matter (causal mask).
        let noisy = Tensor::<B, 2, Int>::from_data(
            TensorData::from([
                [48i64, 7, 9, 49, 11, 12, 13, 0, 0, 0],
                [48, 3, 3, 4, 5, 49, 1, 2, 3, 4],
            ]),
            &device,
        );
        t.encode(noisy)
            .into_data()
            .assert_approx_eq::<f32>(&got.into_data(), Tolerance::absolute(1e-5));
    }
}
