//! MVFA residual adapters (spec section 2) and the adapted forward pass.
//!
//! One [`Adapter`] is two bias-free linear layers, each followed by LeakyReLU(0.01):
//! `h = leaky(W1 x)` (width -> bottleneck, the "tapped feature" compared with text) and
//! `y = leaky(W2 h)` (bottleneck -> width, the residual contribution). At every tapped level
//! there is one segmentation ("seg") and one detection ("det") adapter; the two heads live in
//! separate [`AdapterBank`] modules because training runs one Adam optimiser per head
//! (spec 5.2) and `GradientsParams::from_module` is taken per bank.
//!
//! After the tapped block `l` the residual stream is replaced by
//! `x <- stream_ratio * x + seg_ratio * y_seg(x) + det_ratio * y_det(x)` (0.8 / 0.1 / 0.1);
//! the tokens `h_seg`, `h_det` of level `l` are computed from `x` *before* that mixing.
//!
//! # Freezing the backbone
//! Only the adapters are trained. Under an autodiff backend, call `Module::no_grad()` on the
//! vision tower once after loading it (`let vision = vision.no_grad();`): its parameters then
//! never get gradients (nothing is stored for them in the backward pass), while gradients still
//! flow *through* the frozen blocks from later-level losses into earlier-level adapters, as
//! in the reference. Take gradients with `GradientsParams::from_module(&mut grads, &bank)` per
//! bank, never over the backbone. `tests/mvfa_parity.rs` checks both properties.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::leaky_relu;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::RngCore;

use crate::model::clip::vision::VisionTransformer;
use crate::rng::{Stream, seeded};

/// LeakyReLU negative slope of the reference adapters (PyTorch's default, spec 2).
pub const LEAKY_SLOPE: f64 = 0.01;

/// Errors of the adapted forward pass (configuration mismatches between backbone and adapters).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MvfaError {
    /// The adapter banks and the tapped blocks disagree in number.
    #[error(
        "MVFA adapters have {seg} seg / {det} det levels but the backbone taps {taps} blocks {tap_blocks:?}"
    )]
    LevelCount {
        /// Levels of the seg adapter bank.
        seg: usize,
        /// Levels of the det adapter bank.
        det: usize,
        /// Blocks the backbone taps.
        taps: usize,
        /// The tapped blocks, 1-based.
        tap_blocks: Vec<usize>,
    },
    /// The adapters were built for a different residual width than the backbone's.
    #[error("MVFA adapters expect residual width {adapters}, the backbone has width {backbone}")]
    Width {
        /// Residual width the adapters were built for.
        adapters: usize,
        /// Residual width of the backbone.
        backbone: usize,
    },
    /// The few-shot memory bank or its calibration exemplars are inconsistent.
    #[error("memory bank: {0}")]
    Bank(String),
}

/// Configuration of one adapter: `width -> bottleneck -> width`.
#[derive(Config, Debug)]
pub struct AdapterConfig {
    /// Residual-stream width of the vision tower (1024 for ViT-L/14).
    #[config(default = 1024)]
    pub width: usize,
    /// Bottleneck = joint text/image embedding dim (768 for ViT-L/14-336), because the
    /// bottleneck activations are compared with the text embeddings directly (spec 1.4).
    #[config(default = 768)]
    pub bottleneck: usize,
}

impl AdapterConfig {
    /// Initialises with PyTorch's `nn.Linear` default, Kaiming-uniform with a = sqrt(5), i.e.
    /// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from seed 0 (see [`Self::init_from`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Adapter<B> {
        self.init_from(&mut seeded(0, Stream::AdapterInit), device)
    }

    /// Like [`Self::init`], drawing fc1 then fc2 (row-major `[in, out]`) from `rng`. The
    /// values are made on the host, so a seed gives the same adapters on every backend.
    pub fn init_from<B: Backend>(&self, rng: &mut ChaCha8Rng, device: &B::Device) -> Adapter<B> {
        Adapter {
            fc1: seeded_linear(self.width, self.bottleneck, rng, device),
            fc2: seeded_linear(self.bottleneck, self.width, rng, device),
        }
    }
}

/// A bias-free `Linear` `[d_in, d_out]` with weights U(-1/sqrt(d_in), 1/sqrt(d_in)).
fn seeded_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> Linear<B> {
    let bound = 1.0 / (d_in as f32).sqrt();
    // 24 random bits give every f32 in [0, 1) on a uniform grid; no `rand` distribution code
    // whose algorithm could change between releases.
    let values: Vec<f32> = (0..d_in * d_out)
        .map(|_| {
            let unit = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
            (2.0 * unit - 1.0) * bound
        })
        .collect();
    Linear {
        weight: Param::from_data(TensorData::new(values, [d_in, d_out]), device),
        bias: None,
    }
}

/// One MVFA adapter. Burn stores `fc1.weight` as `[width, bottleneck]` (`[in, out]`); the
/// reference checkpoint key `{i}.fc1.0.weight` holds the transpose `[bottleneck, width]`.
#[derive(Module, Debug)]
pub struct Adapter<B: Backend> {
    /// width -> bottleneck, no bias (checkpoint `fc1.0`).
    pub fc1: Linear<B>,
    /// bottleneck -> width, no bias (checkpoint `fc2.0`).
    pub fc2: Linear<B>,
}

impl<B: Backend> Adapter<B> {
    /// `x [..., width]` -> `(h [..., bottleneck], y [..., width])`, both after LeakyReLU(0.01).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> (Tensor<B, D>, Tensor<B, D>) {
        let h = leaky_relu(self.fc1.forward(x), LEAKY_SLOPE);
        let y = leaky_relu(self.fc2.forward(h.clone()), LEAKY_SLOPE);
        (h, y)
    }

    /// Residual width (input of fc1).
    pub fn width(&self) -> usize {
        self.fc1.weight.dims()[0]
    }

    /// Bottleneck width (output of fc1).
    pub fn bottleneck(&self) -> usize {
        self.fc1.weight.dims()[1]
    }
}

/// The adapters of one head (seg or det), one per tapped level, in level order.
#[derive(Module, Debug)]
pub struct AdapterBank<B: Backend> {
    /// `adapters[l]` serves level `l` (0-based; checkpoint index `{l}`).
    pub adapters: Vec<Adapter<B>>,
}

impl<B: Backend> AdapterBank<B> {
    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.adapters.len()
    }
}

/// Configuration of the dual-adapter set and its residual mixing (spec 2).
#[derive(Config, Debug)]
pub struct MvfaAdaptersConfig {
    /// Number of tapped levels (4: blocks 6, 12, 18, 24 of ViT-L/14).
    #[config(default = 4)]
    pub levels: usize,
    /// Residual width of the vision tower.
    #[config(default = 1024)]
    pub width: usize,
    /// Adapter bottleneck = joint embedding dim.
    #[config(default = 768)]
    pub bottleneck: usize,
    /// Weight of the unadapted stream in the mixing `x <- a x + b y_seg + c y_det`.
    #[config(default = 0.8)]
    pub stream_ratio: f64,
    /// Weight of the seg adapter's residual output.
    #[config(default = 0.1)]
    pub seg_ratio: f64,
    /// Weight of the det adapter's residual output.
    #[config(default = 0.1)]
    pub det_ratio: f64,
    /// Seed of the fresh adapter weights ([`Stream::AdapterInit`]).
    #[config(default = 0)]
    pub seed: u64,
}

impl MvfaAdaptersConfig {
    /// Fresh adapters with PyTorch's Linear initialisation law, drawn from `seed`: the seg
    /// head's levels in order, then the det head's.
    pub fn init<B: Backend>(&self, device: &B::Device) -> MvfaAdapters<B> {
        let one = AdapterConfig::new()
            .with_width(self.width)
            .with_bottleneck(self.bottleneck);
        let mut rng = seeded(self.seed, Stream::AdapterInit);
        let mut bank = || AdapterBank {
            adapters: (0..self.levels)
                .map(|_| one.init_from(&mut rng, device))
                .collect(),
        };
        let seg = bank();
        let det = bank();
        MvfaAdapters { seg, det }
    }
}

/// All MVFA adapters: the seg head and the det head, each a separate module so that each can
/// get its own optimiser.
#[derive(Module, Debug)]
pub struct MvfaAdapters<B: Backend> {
    /// Segmentation head (pixel maps, focal + dice losses).
    pub seg: AdapterBank<B>,
    /// Detection head (image scores, BCE loss).
    pub det: AdapterBank<B>,
}

impl<B: Backend> MvfaAdapters<B> {
    /// Levels of the seg bank (equal to the det bank's for well-formed adapters).
    pub fn levels(&self) -> usize {
        self.seg.levels()
    }

    /// Residual width, or `None` for an empty set.
    pub fn width(&self) -> Option<usize> {
        self.seg.adapters.first().map(Adapter::width)
    }

    /// Bottleneck width, or `None` for an empty set.
    pub fn bottleneck(&self) -> Option<usize> {
        self.seg.adapters.first().map(Adapter::bottleneck)
    }

    /// Convenience for [`forward_adapted`] with this set's two banks.
    pub fn forward_adapted<V: TappedBackbone<B>>(
        &self,
        vision: &V,
        images: Tensor<B, 4>,
        cfg: &MvfaAdaptersConfig,
    ) -> Result<AdaptedFeatures<B>, MvfaError> {
        forward_adapted(vision, &self.seg, &self.det, images, cfg)
    }

    /// [`Self::forward_adapted`] from images or from the cached stream at the first tap.
    pub fn forward_adapted_from<V: TappedBackbone<B>>(
        &self,
        vision: &V,
        input: AdaptedInput<B>,
        cfg: &MvfaAdaptersConfig,
    ) -> Result<AdaptedFeatures<B>, MvfaError> {
        forward_adapted_from(vision, &self.seg, &self.det, input, cfg).map(|t| t.features)
    }
}

/// Which adapter head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Head {
    /// The segmentation head (pixel-level anomaly maps).
    Seg,
    /// The detection head (image-level anomaly scores).
    Det,
}

/// A vision tower that can run with a hook after chosen blocks.
///
/// Implemented for the CLIP [`VisionTransformer`] (delegating to its `forward_tapped`); tests
/// implement it for small stand-in backbones.
pub trait TappedBackbone<B: Backend> {
    /// Residual-stream width.
    fn width(&self) -> usize;
    /// The 1-based blocks MVFA taps (`[6, 12, 18, 24]` for 24 blocks).
    fn default_taps(&self) -> Vec<usize>;
    /// Runs `images [batch, 3, H, W]` through the tower; after block `tap_blocks[i]` the
    /// stream `x [batch, tokens, width]` is replaced by `hook(i, x)`. Outputs other than the
    /// stream seen by the hook are not needed by MVFA.
    fn run_tapped(
        &self,
        images: Tensor<B, 4>,
        tap_blocks: &[usize],
        hook: &mut dyn FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    );

    /// The stream after block `block` (0: after the embedding) when the tower can resume
    /// from it ([`Self::run_tapped_from`]); `None` (the default) when it cannot, and callers
    /// then run whole images.
    fn stream_after(&self, _images: Tensor<B, 4>, _block: usize) -> Option<Tensor<B, 3>> {
        None
    }

    /// [`Self::run_tapped`] resumed from `stream`, the output of block `from`. Only called
    /// with streams this tower's [`Self::stream_after`] returned.
    fn run_tapped_from(
        &self,
        _stream: Tensor<B, 3>,
        _from: usize,
        _tap_blocks: &[usize],
        _hook: &mut dyn FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    ) {
        unreachable!("run_tapped_from without stream_after support")
    }
}

impl<B: Backend> TappedBackbone<B> for VisionTransformer<B> {
    fn width(&self) -> usize {
        VisionTransformer::width(self)
    }

    fn default_taps(&self) -> Vec<usize> {
        VisionTransformer::default_taps(self)
    }

    /// Delegates to `forward_tapped`; its taps and pooled embedding are dropped (MVFA keeps the
    /// taps through the hook and never uses the embedding, spec 1.4).
    fn run_tapped(
        &self,
        images: Tensor<B, 4>,
        tap_blocks: &[usize],
        hook: &mut dyn FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    ) {
        let _ = self.forward_tapped(images, tap_blocks, hook);
    }

    fn stream_after(&self, images: Tensor<B, 4>, block: usize) -> Option<Tensor<B, 3>> {
        Some(VisionTransformer::stream_after(self, images, block))
    }

    fn run_tapped_from(
        &self,
        stream: Tensor<B, 3>,
        from: usize,
        tap_blocks: &[usize],
        hook: &mut dyn FnMut(usize, Tensor<B, 3>) -> Tensor<B, 3>,
    ) {
        let _ = self.forward_tapped_from(stream, from, tap_blocks, hook);
    }
}

/// Outputs of one level: the two heads' tokens and the mixed stream that feeds the next block.
#[derive(Debug, Clone)]
pub struct LevelOutput<B: Backend> {
    /// `h_seg [batch, tokens, bottleneck]`.
    pub seg_tokens: Tensor<B, 3>,
    /// `h_det [batch, tokens, bottleneck]`.
    pub det_tokens: Tensor<B, 3>,
    /// `stream_ratio x + seg_ratio y_seg + det_ratio y_det`, `[batch, tokens, width]`.
    pub mixed: Tensor<B, 3>,
}

/// Applies one level's adapter pair to the tapped stream `x [batch, tokens, width]`.
pub fn adapt_level<B: Backend>(
    seg: &Adapter<B>,
    det: &Adapter<B>,
    x: Tensor<B, 3>,
    cfg: &MvfaAdaptersConfig,
) -> LevelOutput<B> {
    let (h_seg, y_seg) = seg.forward(x.clone());
    let (h_det, y_det) = det.forward(x.clone());
    let mixed = x.mul_scalar(cfg.stream_ratio)
        + y_seg.mul_scalar(cfg.seg_ratio)
        + y_det.mul_scalar(cfg.det_ratio);
    LevelOutput {
        seg_tokens: h_seg,
        det_tokens: h_det,
        mixed,
    }
}

/// The adapted token sets of an image batch, one tensor per level.
#[derive(Debug, Clone)]
pub struct AdaptedFeatures<B: Backend> {
    /// Seg-head bottleneck tokens per level, each `[batch, tokens, bottleneck]` (CLS first).
    pub seg_tokens: Vec<Tensor<B, 3>>,
    /// Det-head bottleneck tokens per level, each `[batch, tokens, bottleneck]` (CLS first).
    pub det_tokens: Vec<Tensor<B, 3>>,
}

impl<B: Backend> AdaptedFeatures<B> {
    /// The token sets of one head.
    pub fn head(&self, head: Head) -> &[Tensor<B, 3>] {
        match head {
            Head::Seg => &self.seg_tokens,
            Head::Det => &self.det_tokens,
        }
    }
}

/// [`AdaptedFeatures`] plus the intermediate streams, for parity checks and inspection.
#[derive(Debug, Clone)]
pub struct AdaptedTrace<B: Backend> {
    /// The adapted token sets.
    pub features: AdaptedFeatures<B>,
    /// The block outputs at the taps, before mixing, `[batch, tokens, width]` per level.
    pub taps: Vec<Tensor<B, 3>>,
    /// The mixed streams that replaced them, `[batch, tokens, width]` per level.
    pub mixed: Vec<Tensor<B, 3>>,
}

/// Runs `images [batch, 3, H, W]` (values in [0, 1], no mean/std normalisation, spec 7.1)
/// through the backbone with the MVFA adapters hooked in after each tapped block.
///
/// Returns per level `[batch, tokens, bottleneck]` seg and det tokens (tokens = 1 + grid^2,
/// CLS first). Batches of any size work; each image is independent.
pub fn forward_adapted<B: Backend, V: TappedBackbone<B>>(
    vision: &V,
    seg: &AdapterBank<B>,
    det: &AdapterBank<B>,
    images: Tensor<B, 4>,
    cfg: &MvfaAdaptersConfig,
) -> Result<AdaptedFeatures<B>, MvfaError> {
    forward_adapted_traced(vision, seg, det, images, cfg).map(|t| t.features)
}

/// What an adapted forward pass starts from.
#[derive(Debug, Clone)]
pub enum AdaptedInput<B: Backend> {
    /// Images `[batch, 3, S, S]`.
    Images(Tensor<B, 4>),
    /// The frozen stream `[batch, tokens, width]` after the first tapped block, from
    /// [`TappedBackbone::stream_after`] (computed once, reused every epoch).
    FirstTap(Tensor<B, 3>),
}

/// [`forward_adapted`] that also returns the taps and mixed streams.
pub fn forward_adapted_traced<B: Backend, V: TappedBackbone<B>>(
    vision: &V,
    seg: &AdapterBank<B>,
    det: &AdapterBank<B>,
    images: Tensor<B, 4>,
    cfg: &MvfaAdaptersConfig,
) -> Result<AdaptedTrace<B>, MvfaError> {
    forward_adapted_from(vision, seg, det, AdaptedInput::Images(images), cfg)
}

/// [`forward_adapted_traced`] from images or from the cached stream at the first tap.
pub fn forward_adapted_from<B: Backend, V: TappedBackbone<B>>(
    vision: &V,
    seg: &AdapterBank<B>,
    det: &AdapterBank<B>,
    input: AdaptedInput<B>,
    cfg: &MvfaAdaptersConfig,
) -> Result<AdaptedTrace<B>, MvfaError> {
    let tap_blocks = vision.default_taps();
    if seg.levels() != tap_blocks.len() || det.levels() != tap_blocks.len() {
        return Err(MvfaError::LevelCount {
            seg: seg.levels(),
            det: det.levels(),
            taps: tap_blocks.len(),
            tap_blocks,
        });
    }
    for adapter in seg.adapters.iter().chain(&det.adapters) {
        if adapter.width() != vision.width() {
            return Err(MvfaError::Width {
                adapters: adapter.width(),
                backbone: vision.width(),
            });
        }
    }
    let levels = tap_blocks.len();
    let mut trace = AdaptedTrace {
        features: AdaptedFeatures {
            seg_tokens: Vec::with_capacity(levels),
            det_tokens: Vec::with_capacity(levels),
        },
        taps: Vec::with_capacity(levels),
        mixed: Vec::with_capacity(levels),
    };
    let mut hook = |level: usize, x: Tensor<B, 3>| {
        let out = adapt_level(&seg.adapters[level], &det.adapters[level], x.clone(), cfg);
        trace.taps.push(x);
        trace.features.seg_tokens.push(out.seg_tokens);
        trace.features.det_tokens.push(out.det_tokens);
        trace.mixed.push(out.mixed.clone());
        out.mixed
    };
    match input {
        AdaptedInput::Images(images) => vision.run_tapped(images, &tap_blocks, &mut hook),
        AdaptedInput::FirstTap(stream) => {
            vision.run_tapped_from(stream, tap_blocks[0], &tap_blocks, &mut hook)
        }
    }
    Ok(trace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn init_follows_pytorch_linear_bounds() {
        let device = Default::default();
        let a = AdapterConfig::new()
            .with_width(64)
            .with_bottleneck(32)
            .init::<B>(&device);
        assert_eq!(a.fc1.weight.dims(), [64, 32]);
        assert_eq!(a.fc2.weight.dims(), [32, 64]);
        assert!(a.fc1.bias.is_none() && a.fc2.bias.is_none());
        let max1: f32 = a.fc1.weight.val().abs().max().into_scalar();
        let max2: f32 = a.fc2.weight.val().abs().max().into_scalar();
        assert!(
            max1 <= 1.0 / 8.0 && max1 > 0.1,
            "fc1 bound 1/sqrt(64): {max1}"
        );
        let b2 = 1.0 / 32f32.sqrt();
        assert!(
            max2 <= b2 && max2 > 0.8 * b2,
            "fc2 bound 1/sqrt(32): {max2}"
        );
    }

    #[test]
    fn init_is_a_function_of_the_seed() {
        let device = Default::default();
        let cfg = MvfaAdaptersConfig::new()
            .with_levels(2)
            .with_width(16)
            .with_bottleneck(8);
        let weights = |cfg: &MvfaAdaptersConfig| -> Vec<f32> {
            let a = cfg.init::<B>(&device);
            a.det.adapters[1]
                .fc2
                .weight
                .val()
                .into_data()
                .to_vec()
                .unwrap()
        };
        assert_eq!(
            weights(&cfg.clone().with_seed(3)),
            weights(&cfg.clone().with_seed(3))
        );
        assert_ne!(
            weights(&cfg.clone().with_seed(3)),
            weights(&cfg.with_seed(4))
        );
    }

    #[test]
    fn adapter_forward_is_leaky_two_layer_map() {
        let device = Default::default();
        let mut a = AdapterConfig::new()
            .with_width(2)
            .with_bottleneck(1)
            .init::<B>(&device);
        // fc1: [in=2, out=1] = (1, -1); fc2: [in=1, out=2] = (2, -3).
        a.fc1.weight =
            burn::module::Param::from_tensor(Tensor::from_floats([[1.0], [-1.0]], &device));
        a.fc2.weight =
            burn::module::Param::from_tensor(Tensor::from_floats([[2.0, -3.0]], &device));
        let x = Tensor::<B, 2>::from_floats([[3.0, 1.0], [1.0, 3.0]], &device);
        let (h, y) = a.forward(x);
        let h: Vec<f32> = h.into_data().to_vec().unwrap();
        let y: Vec<f32> = y.into_data().to_vec().unwrap();
        // h = leaky(2) = 2, leaky(-2) = -0.02.
        assert_eq!(h, vec![2.0, -0.02]);
        // y row 0 = leaky(4), leaky(-6); row 1 = leaky(-0.04), leaky(0.06).
        let expect = [4.0, -0.06, -0.0004, 0.06];
        for (a, b) in y.iter().zip(expect) {
            assert!((a - b).abs() < 1e-7, "{y:?}");
        }
    }
}
