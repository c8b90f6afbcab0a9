//! CLIP vision transformer with tapped block outputs and a hook on the residual stream.
//!
//! `images -> patch embedding (+ CLS) + positions -> ln_pre -> blocks -> ln_post(CLS) @ proj`.
//! MVFA reads the block outputs at the end of each quarter of the stack and mixes its adapters
//! into the stream there (spec section 2); [`VisionTransformer::forward_tapped`] exposes both.
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use super::config::VisionConfig;
use super::transformer::ResidualAttentionBlock;
use burn::module::Initializer;

/// What a vision forward pass returns.
#[derive(Debug, Clone)]
pub struct VisionOutput<B: Backend> {
    /// Block outputs `[batch, tokens, width]` at each requested tap, as they were BEFORE the
    /// hook.
    pub taps: Vec<Tensor<B, 3>>,
    /// `ln_post(CLS) @ proj`: `[batch, embed_dim]` (MVFA discards it).
    pub embedding: Tensor<B, 2>,
}

/// The CLIP image encoder (ViT).
#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// The patch convolution (no bias) as a matrix `[3 * patch * patch, width]`; rows are
    /// ordered (channel, y, x) like the flattened conv kernel. Stride = kernel = patch, so the
    /// convolution is exactly "cut into patches, then one matmul".
    pub patch_embed: Param<Tensor<B, 2>>,
    /// `[width]` class token.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// `[1 + grid², width]` position table at the INPUT grid (the loader stores the resized
    /// table here, spec 1.1).
    pub position_embedding: Param<Tensor<B, 2>>,
    /// LayerNorm after the embeddings.
    pub ln_pre: LayerNorm<B>,
    /// The transformer blocks.
    pub blocks: Vec<ResidualAttentionBlock<B>>,
    /// LayerNorm on the CLS token before the projection.
    pub ln_post: LayerNorm<B>,
    /// `[width, embed_dim]` output projection (open_clip `visual.proj`).
    pub proj: Param<Tensor<B, 2>>,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Patches per side of the input (17 at 240 px / 14).
    pub grid: usize,
    /// Residual stream width.
    pub width: usize,
    /// Output embedding width.
    pub embed_dim: usize,
}

impl<B: Backend> VisionTransformer<B> {
    /// Random (lazily initialised) tower; see [`VisionConfig::init`].
    pub(crate) fn new(cfg: &VisionConfig, device: &B::Device) -> Self {
        let w = cfg.width;
        let grid = cfg.grid_size();
        let patch_in = 3 * cfg.patch_size * cfg.patch_size;
        let scale = (w as f64).powf(-0.5);
        let normal = Initializer::Normal {
            mean: 0.0,
            std: scale,
        };
        let ln = LayerNormConfig::new(w).with_epsilon(cfg.layer_norm_eps);
        let block = cfg.block();
        Self {
            patch_embed: Initializer::KaimingUniform {
                gain: 1.0 / 3f64.sqrt(),
                fan_out_only: false,
            }
            .init_with([patch_in, w], Some(patch_in), Some(w), device),
            class_embedding: normal.init([w], device),
            position_embedding: normal.init([1 + grid * grid, w], device),
            ln_pre: ln.init(device),
            blocks: (0..cfg.layers).map(|_| block.init(device)).collect(),
            ln_post: ln.init(device),
            proj: normal.init([w, cfg.embed_dim], device),
            patch_size: cfg.patch_size,
            grid,
            width: w,
            embed_dim: cfg.embed_dim,
        }
    }

    /// Residual stream width (1024 for ViT-L).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Output embedding width (768 for ViT-L).
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// Patches per side of the input image (17 at 240 px).
    pub fn grid_size(&self) -> usize {
        self.grid
    }

    /// Number of transformer blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Smallest input side the tower accepts (`grid * patch`, 238 at 240 px; extra pixels on
    /// the right and bottom are ignored like PyTorch's strided convolution does).
    pub fn min_image_size(&self) -> usize {
        self.grid * self.patch_size
    }

    /// The end of each quarter of the stack: `[6, 12, 18, 24]` for 24 blocks, `[2, 4, 6, 8]`
    /// for 8 (MVFA's `features_list`, spec 1.3). For depths not divisible by 4 the quarter
    /// ends are rounded to the nearest block (at least 1).
    pub fn default_taps(&self) -> Vec<usize> {
        let n = self.blocks.len();
        (1..=4).map(|q| ((q * n + 2) / 4).max(1)).collect()
    }

    /// Patch + class + position embeddings and ln_pre.
    ///
    /// - `images`: `[batch, 3, H, W]`, `H, W >= min_image_size()`
    /// - returns `[batch, 1 + grid², width]`
    pub fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, channels, h, w] = images.dims();
        let (g, p) = (self.grid, self.patch_size);
        assert!(
            channels == 3 && h >= g * p && w >= g * p,
            "vision tower expects [batch, 3, >={min}, >={min}] images, got {:?}",
            [batch, channels, h, w],
            min = g * p
        );
        let images = if h == g * p && w == g * p {
            images
        } else {
            images.slice(s![.., .., 0..g * p, 0..g * p])
        };
        // [b, 3, g*p, g*p] -> [b, 3, gy, py, gx, px] -> [b, gy, gx, 3, py, px] -> [b*g*g, 3*p*p]
        let patches = images
            .reshape([batch, 3, g, p, g, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch * g * g, 3 * p * p]);
        let tokens = patches
            .matmul(self.patch_embed.val())
            .reshape([batch, g * g, self.width]);
        let cls = self
            .class_embedding
            .val()
            .reshape([1, 1, self.width])
            .expand([batch, 1, self.width]);
        let x = Tensor::cat(vec![cls, tokens], 1) + self.position_embedding.val().unsqueeze::<3>();
        self.ln_pre.forward(x)
    }

    /// Full forward pass with taps and a hook on the residual stream.
    ///
    /// - `images`: `[batch, 3, H, W]` in `[0, 1]` (no mean/std normalisation, spec 7.1);
    ///   `H, W >= min_image_size()` (240 for MVFA).
    /// - `tap_blocks`: 1-based block numbers (0 = the ln_pre output, before block 1). After
    ///   block `b = tap_blocks[i]`, `taps[i]` records the stream x and the stream is replaced by
    ///   `hook(i, x)`. With the identity hook this is plain CLIP. A block listed twice is
    ///   hooked twice, in list order.
    /// - returns the taps (`[batch, 1 + grid², width]` each, in `tap_blocks` order) and the
    ///   projected CLS embedding `[batch, embed_dim]`.
    ///
    /// # Panics
    /// If a tap block exceeds the number of blocks or the image is too small (programming
    /// errors: the app always feeds 240 px images and fixed taps).
    pub fn forward_tapped(
        &self,
        images: Tensor<B, 4>,
        tap_blocks: &[usize],
        hook: impl FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> VisionOutput<B> {
        self.forward_tapped_from(self.embed(images), 0, tap_blocks, hook)
    }

    /// The residual stream after block `block` (0: after the embedding), `[batch, tokens,
    /// width]`: the part of the tower before the first adapter, which fine-tuning can compute
    /// once per image instead of once per epoch.
    ///
    /// # Panics
    /// If `block` exceeds the number of blocks.
    pub fn stream_after(&self, images: Tensor<B, 4>, block: usize) -> Tensor<B, 3> {
        let mut x = self.embed(images);
        for b in &self.blocks[..block] {
            x = b.forward(x, false);
        }
        x
    }

    /// [`VisionTransformer::forward_tapped`] from `stream`, the output of block `from` (0: the
    /// embedding): blocks after `from` run, and taps at `from` or later are applied.
    ///
    /// # Panics
    /// As [`VisionTransformer::forward_tapped`], and if a tap lies before `from`.
    pub fn forward_tapped_from(
        &self,
        stream: Tensor<B, 3>,
        from: usize,
        tap_blocks: &[usize],
        mut hook: impl FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> VisionOutput<B> {
        let n = self.blocks.len();
        if let Some(bad) = tap_blocks.iter().find(|&&b| b > n || b < from) {
            panic!("tap block {bad} is not among blocks {from}..={n} of this tower");
        }
        let mut taps: Vec<Option<Tensor<B, 3>>> = vec![None; tap_blocks.len()];
        let mut x = stream;
        for b in from..=n {
            if b > from {
                x = self.blocks[b - 1].forward(x, false);
            }
            for (i, _) in tap_blocks.iter().enumerate().filter(|&(_, &t)| t == b) {
                taps[i] = Some(x.clone());
                x = hook(i, x);
            }
        }
        let [batch, _, width] = x.dims();
        let cls = x.slice(s![.., 0..1, ..]).reshape([batch, width]);
        let embedding = self.ln_post.forward(cls).matmul(self.proj.val());
        VisionOutput {
            taps: taps
                .into_iter()
                .map(|t| t.expect("every tap is visited"))
                .collect(),
            embedding,
        }
    }

    /// [`VisionTransformer::forward_tapped`] with [`VisionTransformer::default_taps`] and the
    /// identity hook.
    pub fn forward(&self, images: Tensor<B, 4>) -> VisionOutput<B> {
        self.forward_tapped(images, &self.default_taps(), |_, x| x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tolerance};

    type B = NdArray<f32>;

    fn tiny() -> VisionConfig {
        VisionConfig::new()
            .with_image_size(30)
            .with_patch_size(7)
            .with_width(8)
            .with_heads(2)
            .with_layers(8)
            .with_mlp_width(16)
            .with_embed_dim(4)
    }

    #[test]
    fn default_taps_are_quarter_ends() {
        let device = Default::default();
        assert_eq!(tiny().init::<B>(&device).default_taps(), vec![2, 4, 6, 8]);
        let full = VisionConfig::new().init::<B>(&device);
        assert_eq!(full.default_taps(), vec![6, 12, 18, 24]);
        assert_eq!(full.grid_size(), 17);
        assert_eq!((full.width(), full.embed_dim()), (1024, 768));
    }

    #[test]
    fn taps_shapes_and_hook_feed_forward() {
        let device = Default::default();
        let vit = tiny().init::<B>(&device);
        let img = Tensor::<B, 4>::random([2, 3, 30, 30], Distribution::Uniform(0.0, 1.0), &device);
        let plain = vit.forward(img.clone());
        assert_eq!(plain.taps.len(), 4);
        for t in &plain.taps {
            assert_eq!(t.dims(), [2, 1 + 16, 8]);
        }
        assert_eq!(plain.embedding.dims(), [2, 4]);

        // Hooking after block 4 leaves taps 2 and 4 unchanged and changes what follows.
        let mut seen = Vec::new();
        let hooked = vit.forward_tapped(img.clone(), &[2, 4, 6, 8], |i, x| {
            seen.push(i);
            if i == 1 { x * 0.5 } else { x }
        });
        assert_eq!(seen, vec![0, 1, 2, 3]);
        let tol = Tolerance::absolute(1e-6);
        hooked.taps[0]
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&plain.taps[0].clone().into_data(), tol);
        hooked.taps[1]
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&plain.taps[1].clone().into_data(), tol);
        let diff = (hooked.taps[2].clone() - plain.taps[2].clone())
            .abs()
            .max()
            .into_scalar();
        assert!(diff > 1e-3, "hook had no effect downstream ({diff})");

        // Block 6 output of the hooked run = blocks 5..6 applied to half of tap 4.
        let mut x = plain.taps[1].clone() * 0.5;
        for b in 4..6 {
            x = vit.blocks[b].forward(x, false);
        }
        hooked.taps[2]
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&x.into_data(), Tolerance::absolute(1e-5));

        // Tap 0 is the ln_pre output; the image beyond grid*patch is ignored.
        let out = vit.forward_tapped(img.clone(), &[0], |_, x| x);
        out.taps[0]
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&vit.embed(img.clone()).into_data(), tol);
        let bigger = Tensor::cat(vec![img.clone(), Tensor::ones([2, 3, 30, 5], &device)], 3);
        let bigger = Tensor::cat(vec![bigger, Tensor::zeros([2, 3, 3, 35], &device)], 2);
        let cropped = vit.forward(bigger);
        cropped
            .embedding
            .into_data()
            .assert_approx_eq::<f32>(&plain.embedding.into_data(), tol);
    }

    /// The patch matmul equals a strided, bias-free conv2d with the reshaped kernel.
    #[test]
    fn patch_embedding_equals_conv() {
        let device = Default::default();
        let vit = tiny().init::<B>(&device);
        let img = Tensor::<B, 4>::random([1, 3, 28, 28], Distribution::Uniform(0.0, 1.0), &device);
        // [3*7*7, 8] -> [8, 3, 7, 7]
        let kernel = vit.patch_embed.val().transpose().reshape([8, 3, 7, 7]);
        let conv = burn::tensor::module::conv2d(
            img.clone(),
            kernel,
            None,
            burn::tensor::ops::ConvOptions::new([7, 7], [0, 0], [1, 1], 1),
        ); // [1, 8, 4, 4]
        let want = conv.reshape([1, 8, 16]).swap_dims(1, 2);
        let cls = vit.class_embedding.val().reshape([1, 1, 8]);
        let want = Tensor::cat(vec![cls, want], 1) + vit.position_embedding.val().unsqueeze::<3>();
        let want = vit.ln_pre.forward(want);
        vit.embed(img)
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
    }
}
