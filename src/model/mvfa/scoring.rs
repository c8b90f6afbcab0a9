//! MVFA scoring (spec 4): the zero-shot branch (text comparison) and the few-shot branch
//! (memory bank of support-image tokens), per level and fused (summed over levels).
//!
//! Shapes: tokens `[batch, 1 + g*g, bottleneck]` (CLS first, row-major patches), maps
//! `[batch, S, S]` with S = the model input size (240), scores `[batch]`.
//!
//! Which head feeds which output in the reference test scripts (spec 4.3); every branch is
//! exposed for both heads (see [`Scorer::score_head`]) so calibration and the CLI can choose:
//!
//! | setting | image score | pixel map |
//! |---|---|---|
//! | few-shot, segmentation dataset | max of the fused pixel map (seg head only) | 0.5 N(zero map, seg) + 0.5 N(few map, seg) |
//! | few-shot, classification dataset | 0.5 N(zero score, det) + 0.5 N(few score, det) | — |
//! | zero-shot | N(zero score, det) | N(zero map, seg) |
//!
//! N(.) is a min-max normalisation over a whole test set (spec 4.4); it belongs to the
//! calibration code, not here. No smoothing is applied anywhere.
//!
//! Everything stays on the device: the bilinear upsampling is two matrix products with
//! interpolation matrices built once on the host (`out = Ry X Rx^T`), which is exact for
//! separable bilinear interpolation.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::sigmoid;

use super::nearest::{self, Bf16Rows};

/// Scoring configuration (spec 4).
#[derive(Config, Debug)]
pub struct ScoringConfig {
    /// Side of the square model input and of the output maps (240 in the reference).
    #[config(default = 240)]
    pub image_size: usize,
    /// Patch-grid side (floor(240 / 14) = 17).
    #[config(default = 17)]
    pub grid_size: usize,
    /// Fixed logit scale applied to the cosine similarities (CLIP's learned scale is unused).
    #[config(default = 100.0)]
    pub logit_scale: f64,
    /// Memory-bank rows compared per matrix product, bounding the similarity buffer to
    /// `bank_chunk_rows x batch*g*g` floats.
    #[config(default = 4096)]
    pub bank_chunk_rows: usize,
}

/// A per-level quantity and its sum over levels.
#[derive(Debug, Clone)]
pub struct LevelScores<B: Backend> {
    /// One `[batch]` tensor per level.
    pub per_level: Vec<Tensor<B, 1>>,
    /// Sum over levels, `[batch]`.
    pub fused: Tensor<B, 1>,
}

/// Per-level maps and their sum over levels.
#[derive(Debug, Clone)]
pub struct LevelMaps<B: Backend> {
    /// One `[batch, S, S]` map per level.
    pub per_level: Vec<Tensor<B, 3>>,
    /// Sum over levels, `[batch, S, S]`.
    pub fused: Tensor<B, 3>,
}

impl<B: Backend> LevelMaps<B> {
    fn from_levels(per_level: Vec<Tensor<B, 3>>) -> Self {
        let fused = sum_all(&per_level);
        Self { per_level, fused }
    }

    /// Mean over all pixels of each map (the few-shot image score s_few of spec 4.2 is
    /// `mean_scores().fused`; the mean of the upsampled map, not of the grid).
    pub fn mean_scores(&self) -> LevelScores<B> {
        let mean = |m: &Tensor<B, 3>| {
            let [_, h, w] = m.dims();
            sum_map(m.clone()).div_scalar((h * w) as f64)
        };
        LevelScores {
            per_level: self.per_level.iter().map(mean).collect(),
            fused: mean(&self.fused),
        }
    }

    /// Per-image maximum of the fused map, `[batch]`.
    pub fn fused_max(&self) -> Tensor<B, 1> {
        self.fused
            .clone()
            .flatten::<2>(1, 2)
            .max_dim(1)
            .squeeze_dim(1)
    }
}

/// Every branch of one head for one batch of images.
#[derive(Debug, Clone)]
pub struct HeadScores<B: Backend> {
    /// Zero-shot image score: mean patch p_abn per level, summed (spec 4.1).
    pub zero_image: LevelScores<B>,
    /// Zero-shot pixel maps (softmax of upsampled logits, abnormal channel).
    pub zero_map: LevelMaps<B>,
    /// Few-shot maps (min of 1 - cosine against the memory bank), when a bank was given.
    pub few_map: Option<LevelMaps<B>>,
    /// Few-shot image scores = mean over pixels of the few-shot maps.
    pub few_image: Option<LevelScores<B>>,
}

/// Per-image sum of `maps [batch, H, W]` -> `[batch]`, row sums first.
///
/// Summing row by row keeps f32 sums of many near-equal values accurate on every backend
/// (a single running sum over 57,600 probabilities close to 1 drops their small remainders:
/// a relative error of ~1e-4 on the CPU backend, against PyTorch's pairwise sums).
pub fn sum_map<B: Backend>(maps: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, h, _] = maps.dims();
    sum_last_dim(maps).reshape([b, h]).sum_dim(1).reshape([b])
}

/// Sum over the last dim (kept, of size 1), computed on the `[rows, len]` matrix. The CPU
/// backend sums the last axis of a strided 3-D view in another order than a matrix's rows, so
/// an image's sums (and every score after them) changed in the last bits with the other images
/// of its batch; as matrix rows, every row is summed alike whatever surrounds it.
pub fn sum_last_dim<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let len = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut kept = dims;
    kept[D - 1] = 1;
    x.reshape([rows, len]).sum_dim(1).reshape(kept)
}

fn sum_all<B: Backend, const D: usize>(tensors: &[Tensor<B, D>]) -> Tensor<B, D> {
    let mut iter = tensors.iter().cloned();
    let first = iter.next().expect("at least one level");
    iter.fold(first, |acc, t| acc + t)
}

/// Softmax over a dimension of size 2, as `(sigmoid(x0 - x1), sigmoid(x1 - x0))`.
///
/// Mathematically the same as `softmax(x, dim)`; it exists for the gradients: burn 0.21's
/// softmax is composed of max/exp/sum/div under autodiff, and its backward loses about 1e-4
/// relative accuracy in f32 on the saturated x100 logits MVFA produces (measured against
/// PyTorch's f32 and f64 gradients), while the sigmoid has a dedicated backward.
pub fn softmax2<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let dims = x.dims();
    assert_eq!(dims[dim], 2, "softmax2 needs a dimension of size 2");
    let x0 = x.clone().narrow(dim, 0, 1);
    let x1 = x.narrow(dim, 1, 1);
    let d = x1 - x0;
    Tensor::cat(vec![sigmoid(d.clone().neg()), sigmoid(d)], dim)
}

/// Weights of 1-D bilinear interpolation from `input` to `output` samples, as an
/// `[output, input]` row-major matrix, following PyTorch's `upsample_bilinear2d` exactly
/// (scale and source coordinate computed in f32):
/// - `align_corners = true`: src = dst * (in - 1) / (out - 1);
/// - `align_corners = false`: src = max((dst + 0.5) * in / out - 0.5, 0) (half-pixel centres).
///
/// Then i0 = floor(src), i1 = min(i0 + 1, in - 1), weights (1 - t, t) with t = src - i0.
pub fn bilinear_matrix(input: usize, output: usize, align_corners: bool) -> Vec<f32> {
    let mut m = vec![0f32; input * output];
    let scale = if align_corners {
        if output > 1 {
            (input as f32 - 1.0) / (output as f32 - 1.0)
        } else {
            0.0
        }
    } else {
        input as f32 / output as f32
    };
    for dst in 0..output {
        let src = if align_corners {
            scale * dst as f32
        } else {
            (scale * (dst as f32 + 0.5) - 0.5).max(0.0)
        };
        let i0 = (src as usize).min(input - 1);
        let t = src - i0 as f32;
        let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
        m[dst * input + i0] += 1.0 - t;
        m[dst * input + i1] += t;
    }
    m
}

/// Separable bilinear resampling `[n, in_h, in_w] -> [n, out_h, out_w]` as two matrix
/// products with precomputed interpolation matrices (built on the host once, kept on the
/// device).
#[derive(Debug, Clone)]
pub struct BilinearResize<B: Backend> {
    /// `[in_w, out_w]`: right factor Rx^T.
    rx_t: Tensor<B, 2>,
    /// `[in_h, out_h]`: Ry^T, applied after a transpose.
    ry_t: Tensor<B, 2>,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
}

impl<B: Backend> BilinearResize<B> {
    /// A resampler from `in_hw` to `out_hw` (both `(height, width)`).
    pub fn new(
        in_hw: (usize, usize),
        out_hw: (usize, usize),
        align_corners: bool,
        device: &B::Device,
    ) -> Self {
        let (in_h, in_w) = in_hw;
        let (out_h, out_w) = out_hw;
        let rx = bilinear_matrix(in_w, out_w, align_corners);
        let ry = bilinear_matrix(in_h, out_h, align_corners);
        let rx = Tensor::<B, 2>::from_data(TensorData::new(rx, [out_w, in_w]), device);
        let ry = Tensor::<B, 2>::from_data(TensorData::new(ry, [out_h, in_h]), device);
        Self {
            rx_t: rx.transpose(),
            ry_t: ry.transpose(),
            in_h,
            in_w,
            out_h,
            out_w,
        }
    }

    /// `x [n, in_h, in_w]` -> `[n, out_h, out_w]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, h, w] = x.dims();
        assert_eq!(
            (h, w),
            (self.in_h, self.in_w),
            "BilinearResize input size mismatch"
        );
        // Along x: [n*in_h, in_w] @ [in_w, out_w].
        let t = x.reshape([n * h, w]).matmul(self.rx_t.clone());
        // Along y: bring y last, [n*out_w, in_h] @ [in_h, out_h], and back.
        let t = t
            .reshape([n, h, self.out_w])
            .swap_dims(1, 2)
            .reshape([n * self.out_w, h]);
        t.matmul(self.ry_t.clone())
            .reshape([n, self.out_w, self.out_h])
            .swap_dims(1, 2)
    }
}

/// Resizes `[batch, S, S]` maps (model resolution) to an image's original `height x width`
/// for display: bilinear with half-pixel centres (`align_corners = false`, no antialiasing),
/// the convention that maps pixel centres onto pixel centres. The model input was a plain
/// (aspect-squashing) resize of the whole image to S x S, so this puts every map value back
/// over the part of the original image it was computed from. Built on the fly; for repeated
/// resizes to one size, keep a [`BilinearResize`].
pub fn resize_map_to_original<B: Backend>(
    maps: Tensor<B, 3>,
    height: usize,
    width: usize,
) -> Tensor<B, 3> {
    let [_, h, w] = maps.dims();
    let device = maps.device();
    BilinearResize::new((h, w), (height, width), false, &device).forward(maps)
}

/// Per-level memory bank of one head for the few-shot branch (spec 4.2): all tokens, CLS
/// included, of every support image, L2-normalised once (the reference normalises inside
/// every cosine call; the result is the same). Rows are detached from any autodiff graph.
#[derive(Debug, Clone)]
pub struct MemoryBank<B: Backend> {
    /// `[rows, bottleneck]` per level, each row divided by max(||v||, 1e-8).
    levels: Vec<Tensor<B, 2>>,
    /// The same rows in bf16 per level, for the search's pre-filter ([`nearest`]), where it
    /// runs: the CPU backend on a CPU with AVX512-BF16.
    filters: Option<Arc<Vec<Bf16Rows>>>,
}

/// Divides each row (last dim) by max(||v||, eps).
fn normalize_rows<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let norm = sum_last_dim(x.clone().square()).sqrt().clamp_min(eps);
    x / norm
}

impl<B: Backend> MemoryBank<B> {
    /// Builds the bank from support token sets: `parts[j][l]` is level `l` of the `j`-th
    /// batch of support images, `[n_j, tokens, bottleneck]`. Parts are concatenated in order.
    pub fn from_parts(parts: &[Vec<Tensor<B, 3>>]) -> Self {
        let levels = parts.first().map_or(0, Vec::len);
        let levels = (0..levels)
            .map(|l| {
                let rows: Vec<Tensor<B, 2>> = parts
                    .iter()
                    .map(|p| p[l].clone().detach().flatten::<2>(0, 1))
                    .collect();
                normalize_rows(Tensor::cat(rows, 0), 1e-8)
            })
            .collect::<Vec<_>>();
        let filters = bf16_filters(&levels);
        Self { levels, filters }
    }

    /// Builds the bank from one batch of support token sets (`[n, tokens, bottleneck]` per
    /// level), e.g. `AdaptedFeatures::seg_tokens` of the augmented normal shots.
    pub fn new(levels: Vec<Tensor<B, 3>>) -> Self {
        Self::from_parts(&[levels])
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// Rows per level (support images x tokens).
    pub fn rows(&self) -> usize {
        self.levels.first().map_or(0, |t| t.dims()[0])
    }

    /// The normalised rows of one level, `[rows, bottleneck]`.
    pub fn level(&self, level: usize) -> &Tensor<B, 2> {
        &self.levels[level]
    }

    /// The bf16 pre-filter of one level, where it runs.
    fn filter(&self, level: usize) -> Option<&Bf16Rows> {
        self.filters.as_ref().map(|f| &f[level])
    }

    /// This bank without rows `start..start + len` (a leave-one-out bank). `None` when no row
    /// would remain.
    pub fn without_rows(&self, start: usize, len: usize) -> Option<Self> {
        let rows = self.rows();
        let end = start.checked_add(len).filter(|&end| end <= rows)?;
        if end - start == rows {
            return None;
        }
        let levels = self
            .levels
            .iter()
            .map(|level| {
                let mut kept = Vec::with_capacity(2);
                if start > 0 {
                    kept.push(level.clone().narrow(0, 0, start));
                }
                if end < rows {
                    kept.push(level.clone().narrow(0, end, rows - end));
                }
                Tensor::cat(kept, 0)
            })
            .collect();
        let filters = self
            .filters
            .as_ref()
            .map(|filters| Arc::new(filters.iter().map(|f| f.without_rows(start, len)).collect()));
        Some(Self { levels, filters })
    }
}

/// The bf16 copies of the levels for the pre-filter, on the CPU backend where the CPU runs it.
fn bf16_filters<B: Backend>(levels: &[Tensor<B, 2>]) -> Option<Arc<Vec<Bf16Rows>>> {
    let device = levels.first()?.device();
    if !nearest::enabled() || !B::name(&device).contains("ndarray") {
        return None;
    }
    levels
        .iter()
        .map(|level| {
            let dim = level.dims()[1];
            let data = level.to_data().convert::<f32>();
            Some(Bf16Rows::new(data.as_slice::<f32>().ok()?, dim))
        })
        .collect::<Option<Vec<_>>>()
        .map(Arc::new)
}

/// Scores adapted tokens against the text features and memory banks.
///
/// # Panics
/// Token tensors must hold `1 + grid_size^2` tokens and a memory bank must have rows and
/// as many levels as the tokens; both are fixed by the model and configuration, so a
/// mismatch is a programming error and panics with a message naming the sizes.
#[derive(Debug, Clone)]
pub struct Scorer<B: Backend> {
    cfg: ScoringConfig,
    /// `[bottleneck, 2]`: column 0 normal, column 1 abnormal.
    text: Tensor<B, 2>,
    /// grid -> image_size, align_corners = true (spec 4.1, 4.2).
    upsample: BilinearResize<B>,
}

impl<B: Backend> Scorer<B> {
    /// `text_features [bottleneck, 2]` (column 0 normal, column 1 abnormal, spec 3.4).
    pub fn new(cfg: ScoringConfig, text_features: Tensor<B, 2>) -> Self {
        let device = text_features.device();
        let g = cfg.grid_size;
        let s = cfg.image_size;
        let upsample = BilinearResize::new((g, g), (s, s), true, &device);
        Self {
            cfg,
            text: text_features,
            upsample,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ScoringConfig {
        &self.cfg
    }

    /// The text features `[bottleneck, 2]`.
    pub fn text_features(&self) -> &Tensor<B, 2> {
        &self.text
    }

    /// Drops the CLS token: `[batch, 1 + g*g, E]` -> `[batch, g*g, E]`.
    fn patches(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, l, e] = tokens.dims();
        let g2 = self.cfg.grid_size * self.cfg.grid_size;
        assert_eq!(
            l,
            g2 + 1,
            "expected 1 + {g2} tokens for grid {}",
            self.cfg.grid_size
        );
        tokens.slice([0..b, 1..l, 0..e])
    }

    /// Text logits of the patch tokens: `100 * normalize(h) @ T`,
    /// `[batch, 1 + g*g, E]` -> `[batch, g*g, 2]` (CLS dropped). The per-token L2 norm is a
    /// plain division as in the reference (clamped at 1e-12 only to keep an all-zero token
    /// finite).
    pub fn text_logits(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        let z = normalize_rows(self.patches(tokens), 1e-12);
        let [b, n, e] = z.dims();
        z.reshape([b * n, e])
            .matmul(self.text.clone())
            .mul_scalar(self.cfg.logit_scale)
            .reshape([b, n, 2])
    }

    /// Per-patch abnormal probability `softmax(logits)[.., 1]` (= sigmoid of the logit
    /// difference, see [`softmax2`]), `[batch, g*g]`.
    pub fn patch_abnormality(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let l = self.text_logits(tokens);
        let [b, n, _] = l.dims();
        let d = l.clone().slice([0..b, 0..n, 1..2]) - l.slice([0..b, 0..n, 0..1]);
        sigmoid(d).squeeze_dim(2)
    }

    /// Zero-shot image score of one level, `s_l = mean over patches of p_abn`, `[batch]`.
    /// This is also the (probability-valued) input of the BCE loss (spec 5.1).
    pub fn zero_shot_level_score(&self, tokens: Tensor<B, 3>) -> Tensor<B, 1> {
        self.patch_abnormality(tokens).mean_dim(1).squeeze_dim(1)
    }

    /// Zero-shot image scores per level and summed (det head in the reference).
    pub fn zero_shot_image_scores(&self, levels: &[Tensor<B, 3>]) -> LevelScores<B> {
        let per_level: Vec<_> = levels
            .iter()
            .map(|t| self.zero_shot_level_score(t.clone()))
            .collect();
        let fused = sum_all(&per_level);
        LevelScores { per_level, fused }
    }

    /// Softmax over the two channels of the upsampled logits of one level (spec 4.1 / 5.1):
    /// logits reshaped to `[batch, 2, g, g]`, upsampled bilinearly (align_corners = true) to
    /// `[batch, 2, S, S]`, then softmax over the channel dim. This `P_l` feeds the focal and
    /// dice losses; its channel 1 is the zero-shot pixel map.
    pub fn pixel_probabilities(&self, tokens: Tensor<B, 3>) -> Tensor<B, 4> {
        let logits = self.text_logits(tokens);
        let [b, _, _] = logits.dims();
        let g = self.cfg.grid_size;
        let s = self.cfg.image_size;
        // [b, g*g, 2] -> [b, 2, g*g] -> [b*2, g, g] (row-major patches).
        let planes = logits.swap_dims(1, 2).reshape([b * 2, g, g]);
        let up = self.upsample.forward(planes).reshape([b, 2, s, s]);
        softmax2(up, 1)
    }

    /// Zero-shot pixel map of one level (abnormal channel of [`Self::pixel_probabilities`]),
    /// `[batch, S, S]`.
    pub fn zero_shot_level_map(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        let p = self.pixel_probabilities(tokens);
        let [b, _, s, _] = p.dims();
        p.slice([0..b, 1..2, 0..s, 0..s]).squeeze_dim(1)
    }

    /// Zero-shot pixel maps per level and summed (seg head in the reference).
    pub fn zero_shot_maps(&self, levels: &[Tensor<B, 3>]) -> LevelMaps<B> {
        LevelMaps::from_levels(
            levels
                .iter()
                .map(|t| self.zero_shot_level_map(t.clone()))
                .collect(),
        )
    }

    /// Few-shot distance grid of one level: for each patch token, min over bank rows of
    /// (1 - cosine), `[batch, g, g]`.
    ///
    /// Where the bank has a bf16 pre-filter, only the rows it keeps are compared in f32
    /// ([`nearest`] proves that they hold every query's nearest row); each row's similarity
    /// is the same f32 product either way, so the grid is the same.
    pub fn few_shot_level_grid(
        &self,
        tokens: Tensor<B, 3>,
        bank: &MemoryBank<B>,
        level: usize,
    ) -> Tensor<B, 3> {
        let q = normalize_rows(self.patches(tokens), 1e-8);
        let [b, n, e] = q.dims();
        let q = q.reshape([b * n, e]);
        let kept = bank.filter(level).and_then(|filter| {
            let data = q.to_data().convert::<f32>();
            let queries = data.as_slice::<f32>().ok()?;
            // Past a third of the bank the filter saves less than it costs.
            nearest::candidate_rows(filter, queries, b * n, filter.rows() / 3)
        });
        let rows = match kept {
            Some(kept) => {
                let len = kept.len();
                let kept: Vec<i64> = kept.into_iter().map(|j| j as i64).collect();
                let index =
                    Tensor::<B, 1, Int>::from_data(TensorData::new(kept, [len]), &q.device());
                bank.level(level).clone().select(0, index)
            }
            None => bank.level(level).clone(),
        };
        let best = self.max_similarity(rows, q.transpose());
        let g = self.cfg.grid_size;
        // min(1 - cos) = 1 - max(cos): x -> 1 - x is monotone, also after f32 rounding.
        best.neg().add_scalar(1.0).reshape([b, g, g])
    }

    /// Largest similarity of each query over `bank [rows, E]`: `[1, queries]` from the
    /// transposed queries `q_t [E, queries]`, comparing `bank_chunk_rows` rows per product.
    fn max_similarity(&self, bank: Tensor<B, 2>, q_t: Tensor<B, 2>) -> Tensor<B, 2> {
        let rows = bank.dims()[0];
        let chunk = self.cfg.bank_chunk_rows.max(1);
        let mut best: Option<Tensor<B, 2>> = None;
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let sim = bank
                .clone()
                .narrow(0, start, len)
                .matmul(q_t.clone())
                .max_dim(0); // [1, queries]
            best = Some(match best {
                Some(prev) => prev.max_pair(sim),
                None => sim,
            });
            start += len;
        }
        best.expect("memory bank has no rows")
    }

    /// Few-shot map of one level, upsampled with align_corners = true, `[batch, S, S]`.
    pub fn few_shot_level_map(
        &self,
        tokens: Tensor<B, 3>,
        bank: &MemoryBank<B>,
        level: usize,
    ) -> Tensor<B, 3> {
        self.upsample_grid(self.few_shot_level_grid(tokens, bank, level))
    }

    /// Upsamples `[batch, g, g]` grids to the map size (bilinear, align_corners = true), the
    /// resampling every map of spec 4 uses.
    pub fn upsample_grid(&self, grid: Tensor<B, 3>) -> Tensor<B, 3> {
        self.upsample.forward(grid)
    }

    /// Few-shot maps per level and summed. `levels` and `bank` must come from the same head.
    pub fn few_shot_maps(&self, levels: &[Tensor<B, 3>], bank: &MemoryBank<B>) -> LevelMaps<B> {
        assert_eq!(
            levels.len(),
            bank.levels(),
            "memory bank has {} levels, tokens have {}",
            bank.levels(),
            levels.len()
        );
        LevelMaps::from_levels(
            levels
                .iter()
                .enumerate()
                .map(|(l, t)| self.few_shot_level_map(t.clone(), bank, l))
                .collect(),
        )
    }

    /// All branches for one head's token sets (`bank` built from the same head).
    pub fn score_head(
        &self,
        levels: &[Tensor<B, 3>],
        bank: Option<&MemoryBank<B>>,
    ) -> HeadScores<B> {
        let few_map = bank.map(|bank| self.few_shot_maps(levels, bank));
        let few_image = few_map.as_ref().map(LevelMaps::mean_scores);
        HeadScores {
            zero_image: self.zero_shot_image_scores(levels),
            zero_map: self.zero_shot_maps(levels),
            few_map,
            few_image,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn softmax2_equals_softmax() {
        let device = Default::default();
        let x = Tensor::<B, 3>::random(
            [3, 2, 5],
            burn::tensor::Distribution::Normal(0.0, 30.0),
            &device,
        );
        let a = softmax2(x.clone(), 1);
        let b = burn::tensor::activation::softmax(x, 1);
        let d: f32 = (a - b).abs().max().into_scalar();
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn align_corners_matrix_hits_grid_points() {
        // 17 -> 240 with align_corners: dst 239 maps to src 16 exactly, dst 0 to 0, and
        // every row sums to 1.
        let m = bilinear_matrix(17, 240, true);
        for row in m.chunks(17) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        assert_eq!(m[0], 1.0);
        assert_eq!(m[239 * 17 + 16], 1.0);
        // dst 1: src = 16/239 = 0.066945...
        assert!((m[17 + 1] - 16.0 / 239.0).abs() < 1e-6);
    }

    #[test]
    fn half_pixel_matrix_matches_hand_values() {
        // 2 -> 4, align_corners = false: src = (dst + 0.5) / 2 - 0.5 clamped: 0, .25, .75, 1.25.
        let m = bilinear_matrix(2, 4, false);
        let expect = [1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0];
        for (a, b) in m.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{m:?}");
        }
    }

    #[test]
    fn resize_matches_direct_bilinear_formula() {
        let device = Default::default();
        let data: Vec<f32> = (0..2 * 3 * 4).map(|i| ((i * 7) % 11) as f32).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(data.clone(), [2, 3, 4]), &device);
        let out = to_vec(BilinearResize::new((3, 4), (5, 7), true, &device).forward(x));
        for n in 0..2 {
            for y in 0..5 {
                for xx in 0..7 {
                    let sy = y as f64 * 2.0 / 4.0;
                    let sx = xx as f64 * 3.0 / 6.0;
                    let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
                    let (y1, x1) = ((y0 + 1).min(2), (x0 + 1).min(3));
                    let (ty, tx) = (sy - y0 as f64, sx - x0 as f64);
                    let v = |yy: usize, xi: usize| data[n * 12 + yy * 4 + xi] as f64;
                    let want = (1.0 - ty) * ((1.0 - tx) * v(y0, x0) + tx * v(y0, x1))
                        + ty * ((1.0 - tx) * v(y1, x0) + tx * v(y1, x1));
                    let got = out[n * 35 + y * 7 + xx] as f64;
                    assert!((got - want).abs() < 1e-5, "({n},{y},{xx}) {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn display_resize_is_identity_at_same_size_and_half_pixel_otherwise() {
        let device = Default::default();
        let data: Vec<f32> = (0..2 * 6 * 6).map(|i| (i % 13) as f32).collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(data.clone(), [2, 6, 6]), &device);
        assert_eq!(to_vec(resize_map_to_original(x.clone(), 6, 6)), data);
        // 6 -> 3 rows: half-pixel centres land between source rows 0/1, 2/3, 4/5.
        let out = to_vec(resize_map_to_original(x, 3, 6));
        for r in 0..3 {
            for c in 0..6 {
                let want = 0.5 * (data[2 * r * 6 + c] + data[(2 * r + 1) * 6 + c]);
                assert!((out[r * 6 + c] - want).abs() < 1e-5);
            }
        }
    }

    /// The bf16 pre-filter changes nothing: over seeds, banks with near-duplicate rows
    /// (augmented copies) give the grid of the full f32 comparison bit for bit.
    #[test]
    fn filtered_search_equals_the_full_search_bit_for_bit() {
        use burn::tensor::Distribution;
        let device = Default::default();
        let scorer = Scorer::<B>::new(
            ScoringConfig::new()
                .with_grid_size(4)
                .with_image_size(8)
                .with_bank_chunk_rows(23),
            Tensor::random([48, 2], Distribution::Default, &device),
        );
        for seed in 0..5u64 {
            B::seed(&device, seed);
            let source =
                Tensor::<B, 3>::random([3, 17, 48], Distribution::Normal(0.0, 1.0), &device);
            // 4 noisy copies of each support image, as augmentation gives.
            let copies: Vec<Tensor<B, 3>> = (0..4)
                .map(|_| {
                    source.clone()
                        + Tensor::random([3, 17, 48], Distribution::Normal(0.0, 0.05), &device)
                })
                .collect();
            let bank = MemoryBank::new(vec![Tensor::cat(copies, 0)]);
            assert!(bank.filters.is_some());
            let queries = source.slice(s![0..2]).clone()
                + Tensor::random([2, 17, 48], Distribution::Normal(0.0, 0.1), &device);
            let filtered = scorer.few_shot_level_grid(queries.clone(), &bank, 0);
            let q = normalize_rows(scorer.patches(queries), 1e-8).reshape([2 * 16, 48]);
            let full = scorer
                .max_similarity(bank.level(0).clone(), q.transpose())
                .neg()
                .add_scalar(1.0)
                .reshape([2, 4, 4]);
            assert_eq!(to_vec(filtered), to_vec(full), "seed {seed}");
            // A leave-one-out bank keeps a filter of its own rows.
            let smaller = bank.without_rows(17, 17).unwrap();
            assert_eq!(smaller.filter(0).unwrap().rows(), smaller.rows());
        }
    }

    fn small_scorer(device: &burn::backend::ndarray::NdArrayDevice) -> Scorer<B> {
        let text = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], device);
        Scorer::new(
            ScoringConfig::new()
                .with_grid_size(2)
                .with_image_size(5)
                .with_bank_chunk_rows(3),
            text,
        )
    }

    #[test]
    fn zero_shot_scores_follow_definition() {
        let device = Default::default();
        let scorer = small_scorer(&device);
        // CLS (ignored) + 4 patches, E = 3.
        let tokens = Tensor::<B, 3>::from_floats(
            [[
                [9.0, -9.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 2.0, 0.0],
                [1.0, 1.0, 5.0],
                [0.0, 0.0, 1.0],
            ]],
            &device,
        );
        let p = to_vec(scorer.patch_abnormality(tokens.clone()));
        let sig = |d: f64| 1.0 / (1.0 + (-d).exp());
        let expect = [sig(-100.0), sig(100.0), sig(0.0), sig(0.0)];
        for (a, b) in p.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-6, "{p:?}");
        }
        let s = to_vec(scorer.zero_shot_level_score(tokens));
        assert!((s[0] as f64 - expect.iter().sum::<f64>() / 4.0).abs() < 1e-6);
    }

    #[test]
    fn few_shot_grid_is_min_cosine_distance_over_chunks() {
        let device = Default::default();
        let scorer = small_scorer(&device);
        // Bank of 2 "images" x 5 tokens (7 rows, chunk 3 -> 3 chunks incl. a partial one).
        let bank_tokens = Tensor::<B, 3>::from_floats(
            [[
                [1.0, 0.0, 0.0],
                [0.0, 3.0, 0.0],
                [0.0, 0.0, 2.0],
                [1.0, 1.0, 0.0],
                [-1.0, 0.0, 0.0],
            ]],
            &device,
        );
        let bank = MemoryBank::new(vec![bank_tokens]);
        assert_eq!(bank.rows(), 5);
        let q = Tensor::<B, 3>::from_floats(
            [[
                [0.0, 0.0, 0.0],
                [2.0, 0.0, 0.0],
                [0.0, -1.0, 0.0],
                [1.0, 0.0, 1.0],
                [3.0, 3.0, 0.1],
            ]],
            &device,
        );
        let d = to_vec(scorer.few_shot_level_grid(q, &bank, 0));
        let n = |v: [f64; 3]| {
            let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            [v[0] / l, v[1] / l, v[2] / l]
        };
        let rows = [
            n([1.0, 0.0, 0.0]),
            n([0.0, 3.0, 0.0]),
            n([0.0, 0.0, 2.0]),
            n([1.0, 1.0, 0.0]),
            n([-1.0, 0.0, 0.0]),
        ];
        let queries = [
            [2.0, 0.0, 0.0],
            [0.0, -1.0, 0.0],
            [1.0, 0.0, 1.0],
            [3.0, 3.0, 0.1],
        ];
        for (i, q) in queries.iter().enumerate() {
            let q = n(*q);
            let want = rows
                .iter()
                .map(|r| 1.0 - (r[0] * q[0] + r[1] * q[1] + r[2] * q[2]))
                .fold(f64::INFINITY, f64::min);
            assert!(
                (d[i] as f64 - want).abs() < 1e-6,
                "patch {i}: {} vs {want}",
                d[i]
            );
        }
    }

    #[test]
    fn batched_scoring_equals_per_image_scoring() {
        let device = Default::default();
        let scorer = Scorer::new(
            ScoringConfig::new()
                .with_grid_size(3)
                .with_image_size(8)
                .with_bank_chunk_rows(7),
            Tensor::<B, 2>::random([4, 2], burn::tensor::Distribution::Default, &device),
        );
        let tokens = Tensor::<B, 3>::random(
            [3, 10, 4],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let bank = MemoryBank::new(vec![Tensor::<B, 3>::random(
            [2, 10, 4],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        )]);
        let all = scorer.score_head(std::slice::from_ref(&tokens), Some(&bank));
        for i in 0..3 {
            let one = scorer.score_head(&[tokens.clone().narrow(0, i, 1)], Some(&bank));
            let pairs = [
                (
                    all.zero_map.fused.clone().narrow(0, i, 1),
                    one.zero_map.fused,
                ),
                (
                    all.few_map.as_ref().unwrap().fused.clone().narrow(0, i, 1),
                    one.few_map.unwrap().fused,
                ),
            ];
            for (a, b) in pairs {
                let diff: f32 = (a - b).abs().max().into_scalar();
                assert!(diff < 1e-6);
            }
            let sa = to_vec(all.zero_image.fused.clone())[i];
            let sb = to_vec(one.zero_image.fused)[0];
            assert!((sa - sb).abs() < 1e-6);
            let fa = to_vec(all.few_image.as_ref().unwrap().fused.clone())[i];
            let fb = to_vec(one.few_image.unwrap().fused)[0];
            assert!((fa - fb).abs() < 1e-6);
        }
    }
}
