//! A fitted MVFA detector: backbone + adapters + text features + memory banks + calibration,
//! scoring images into raw branch outputs, calibrated fused maps and image scores.
//!
//! Which head feeds which output follows spec 4.3: pixel maps always come from the seg head;
//! image scores of a segmentation task are the maximum of the fused map (the reference's
//! few-shot protocol), of a classification task the det-head image scores.
//!
//! The memory bank is kept as groups (one per normal source shot) so that the same code gives
//! the full few-shot branch (minimum over all groups) and the leave-one-out branch used for
//! calibration (minimum over the other groups).
use burn::prelude::*;

use crate::model::mvfa::adapter::{
    AdaptedFeatures, Head, MvfaAdapters, MvfaAdaptersConfig, MvfaError, TappedBackbone,
};
use crate::model::mvfa::calibration::{BranchStats, Calibration, LeaveOut, METHOD, quantile};
use crate::model::mvfa::scoring::{MemoryBank, Scorer};

/// What the user's labels describe, which decides the image-score branch (spec 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskKind {
    /// Lesions are localised (masks exist): image score = max of the fused seg map.
    Segmentation,
    /// Image labels only: image score = fused det-head image scores.
    Classification,
}

/// Memory banks of one support group, both heads.
#[derive(Debug, Clone)]
pub struct BankGroup<B: Backend> {
    pub seg: MemoryBank<B>,
    pub det: MemoryBank<B>,
}

impl<B: Backend> BankGroup<B> {
    fn head(&self, head: Head) -> &MemoryBank<B> {
        match head {
            Head::Seg => &self.seg,
            Head::Det => &self.det,
        }
    }
}

/// Raw branch outputs of one image, on the host. Maps are `S*S` row-major at model
/// resolution; "levels" vectors hold one entry per tapped level, the plain fields their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct RawResult {
    /// Zero-shot image score (det head).
    pub zero_image: f32,
    pub zero_image_levels: Vec<f32>,
    /// Few-shot image score (det head; mean of its few-shot map).
    pub few_image: Option<f32>,
    /// Zero-shot pixel map (seg head).
    pub zero_map: Vec<f32>,
    pub zero_map_levels: Vec<Vec<f32>>,
    /// Few-shot pixel map (seg head).
    pub few_map: Option<Vec<f32>>,
    pub few_map_levels: Vec<Vec<f32>>,
}

/// Raw outputs plus the calibrated fused map and image score (when calibrated).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageResult {
    pub raw: RawResult,
    /// Calibrated fused map (`S*S`).
    pub fused_map: Option<Vec<f32>>,
    /// Calibrated image score.
    pub score: Option<f32>,
}

/// A fitted detector. `V` is the frozen vision tower.
pub struct Detector<B: Backend, V: TappedBackbone<B>> {
    pub vision: V,
    pub adapters: MvfaAdapters<B>,
    pub adapters_cfg: MvfaAdaptersConfig,
    pub scorer: Scorer<B>,
    /// Support groups of the few-shot memory bank (empty: zero-shot only).
    pub bank_groups: Vec<BankGroup<B>>,
    pub calibration: Option<Calibration>,
    pub task: TaskKind,
    /// Images per forward pass when scoring many.
    pub batch_size: usize,
}

fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

fn split_rows(flat: Vec<f32>, rows: usize) -> Vec<Vec<f32>> {
    if rows == 0 {
        return Vec::new();
    }
    let len = flat.len() / rows;
    flat.chunks(len).map(<[f32]>::to_vec).collect()
}

impl<B: Backend, V: TappedBackbone<B>> Detector<B, V> {
    /// Adapted tokens of `images [n, 3, S, S]`.
    pub fn features(&self, images: Tensor<B, 4>) -> Result<AdaptedFeatures<B>, MvfaError> {
        self.adapters
            .forward_adapted(&self.vision, images, &self.adapters_cfg)
    }

    /// Builds the memory bank from support images, given as groups of `[n, 3, S, S]` batches
    /// (one group per normal source shot; see the module docs).
    pub fn set_support(&mut self, groups: Vec<Tensor<B, 4>>) -> Result<(), MvfaError> {
        let mut built = Vec::with_capacity(groups.len());
        for images in groups {
            let mut seg_parts = Vec::new();
            let mut det_parts = Vec::new();
            let n = images.dims()[0];
            let step = self.batch_size.max(1);
            let mut start = 0;
            while start < n {
                let len = step.min(n - start);
                let f = self.features(images.clone().narrow(0, start, len))?;
                seg_parts.push(f.seg_tokens);
                det_parts.push(f.det_tokens);
                start += len;
            }
            built.push(BankGroup {
                seg: MemoryBank::from_parts(&seg_parts),
                det: MemoryBank::from_parts(&det_parts),
            });
        }
        self.bank_groups = built;
        Ok(())
    }

    /// Few-shot distance grids of one head, summed over levels after upsampling, for the
    /// tokens of a batch; the groups in `exclude` are left out. `None` without groups.
    fn few_shot_maps(
        &self,
        features: &AdaptedFeatures<B>,
        head: Head,
        exclude: Option<usize>,
    ) -> Option<Vec<Tensor<B, 3>>> {
        let groups: Vec<&BankGroup<B>> = self
            .bank_groups
            .iter()
            .enumerate()
            .filter(|(g, _)| Some(*g) != exclude)
            .map(|(_, group)| group)
            .collect();
        if groups.is_empty() {
            return None;
        }
        let maps = features
            .head(head)
            .iter()
            .enumerate()
            .map(|(level, tokens)| {
                // min over groups of (1 - max cos) = the distance to the union of the groups.
                let grid = groups
                    .iter()
                    .map(|group| {
                        self.scorer
                            .few_shot_level_grid(tokens.clone(), group.head(head).level(level))
                    })
                    .reduce(|a, b| a.min_pair(b))
                    .expect("non-empty");
                self.scorer.upsample_grid(grid)
            })
            .collect();
        Some(maps)
    }

    /// Raw branch outputs of `images [n, 3, S, S]`, with the few-shot bank group `exclude`
    /// left out (leave-one-out calibration) or all groups (`None`).
    pub fn score_raw_excluding(
        &self,
        images: Tensor<B, 4>,
        exclude: Option<usize>,
    ) -> Result<Vec<RawResult>, MvfaError> {
        let n = images.dims()[0];
        let features = self.features(images)?;
        let zero_images = self.scorer.zero_shot_image_scores(&features.det_tokens);
        let zero_maps = self.scorer.zero_shot_maps(&features.seg_tokens);
        let few_seg = self.few_shot_maps(&features, Head::Seg, exclude);
        let few_det = self.few_shot_maps(&features, Head::Det, exclude);

        let zero_image = to_host(zero_images.fused);
        let zero_image_levels: Vec<Vec<f32>> =
            zero_images.per_level.into_iter().map(to_host).collect();
        let zero_map = split_rows(to_host(zero_maps.fused), n);
        let zero_map_levels: Vec<Vec<Vec<f32>>> = zero_maps
            .per_level
            .into_iter()
            .map(|m| split_rows(to_host(m), n))
            .collect();
        let sum = |maps: &[Tensor<B, 3>]| {
            maps.iter()
                .cloned()
                .reduce(|a, b| a + b)
                .expect("at least one level")
        };
        let few_map_levels: Option<Vec<Vec<Vec<f32>>>> = few_seg.as_ref().map(|maps| {
            maps.iter()
                .map(|m| split_rows(to_host(m.clone()), n))
                .collect()
        });
        let few_map = few_seg
            .as_ref()
            .map(|maps| split_rows(to_host(sum(maps)), n));
        let few_image = few_det
            .as_ref()
            .map(|maps| to_host(sum(maps).flatten::<2>(1, 2).mean_dim(1).squeeze_dim::<1>(1)));

        Ok((0..n)
            .map(|i| RawResult {
                zero_image: zero_image[i],
                zero_image_levels: zero_image_levels.iter().map(|l| l[i]).collect(),
                few_image: few_image.as_ref().map(|s| s[i]),
                zero_map: zero_map[i].clone(),
                zero_map_levels: zero_map_levels.iter().map(|l| l[i].clone()).collect(),
                few_map: few_map.as_ref().map(|m| m[i].clone()),
                few_map_levels: few_map_levels
                    .as_ref()
                    .map(|levels| levels.iter().map(|l| l[i].clone()).collect())
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Applies the stored calibration (if any) to raw outputs.
    pub fn calibrate(&self, raw: RawResult) -> ImageResult {
        let Some(cal) = &self.calibration else {
            return ImageResult {
                raw,
                fused_map: None,
                score: None,
            };
        };
        let fused = cal.fuse_map(&raw.zero_map, raw.few_map.as_deref());
        let score = match self.task {
            TaskKind::Segmentation => cal.image_score_from_map(&fused),
            TaskKind::Classification => cal.image_score_from_scores(raw.zero_image, raw.few_image),
        };
        ImageResult {
            raw,
            fused_map: Some(fused),
            score: Some(score),
        }
    }

    /// Scores `images [n, 3, S, S]` in batches of `batch_size`: raw branches, calibrated fused
    /// map and image score. Each image's result depends only on that image.
    pub fn score(&self, images: Tensor<B, 4>) -> Result<Vec<ImageResult>, MvfaError> {
        Ok(self
            .score_batched(images, None)?
            .into_iter()
            .map(|raw| self.calibrate(raw))
            .collect())
    }

    /// Fits the calibration from the support groups themselves (see
    /// [`crate::model::mvfa::calibration`]): `support` are the same groups given to
    /// [`Self::set_support`] (or, with a single group, that group split into its images);
    /// `abnormal` are the (augmented) abnormal shots, used only to place the threshold.
    pub fn fit_calibration(
        &mut self,
        support: &[Tensor<B, 4>],
        abnormal: Option<Tensor<B, 4>>,
    ) -> Result<Calibration, MvfaError> {
        let leave_out = match self.bank_groups.len() {
            0 => LeaveOut::None,
            1 => LeaveOut::Augmentation,
            _ => LeaveOut::SourceShot,
        };
        // Raw results of every normal exemplar with its own group left out.
        let mut raws: Vec<RawResult> = Vec::new();
        match leave_out {
            LeaveOut::SourceShot | LeaveOut::None => {
                for (g, images) in support.iter().enumerate() {
                    let exclude = (leave_out == LeaveOut::SourceShot).then_some(g);
                    raws.extend(self.score_batched(images.clone(), exclude)?);
                }
            }
            LeaveOut::Augmentation => {
                // One group: regroup it image by image and leave each image out of its own
                // bank. The groups are restored afterwards.
                let images = support[0].clone();
                let n = images.dims()[0];
                let singles: Vec<Tensor<B, 4>> =
                    (0..n).map(|i| images.clone().narrow(0, i, 1)).collect();
                let saved = std::mem::take(&mut self.bank_groups);
                self.set_support(singles.clone())?;
                for (i, image) in singles.into_iter().enumerate() {
                    raws.extend(self.score_raw_excluding(image, Some(i))?);
                }
                self.bank_groups = saved;
            }
        }
        let has_few = leave_out != LeaveOut::None;
        let robust = |mut v: Vec<f32>| BranchStats::robust(&mut v).expect("non-empty exemplars");
        let zero_map = robust(
            raws.iter()
                .flat_map(|r| r.zero_map.iter().copied())
                .collect(),
        );
        let few_map = has_few.then(|| {
            robust(
                raws.iter()
                    .flat_map(|r| r.few_map.as_ref().expect("bank present").iter().copied())
                    .collect(),
            )
        });
        let zero_image = robust(raws.iter().map(|r| r.zero_image).collect());
        let few_image = has_few.then(|| {
            robust(
                raws.iter()
                    .map(|r| r.few_image.expect("bank present"))
                    .collect(),
            )
        });
        let mut cal = Calibration {
            method: METHOD.into(),
            zero_map,
            few_map,
            zero_image,
            few_image,
            fused_map_max: BranchStats {
                median: 0.0,
                scale: 1.0,
            },
            leave_out,
            normal_exemplars: raws.len(),
            abnormal_exemplars: 0,
            threshold: 3.0,
            normal_p95: 0.0,
            abnormal_median: None,
        };
        let maxima: Vec<f32> = raws
            .iter()
            .map(|r| {
                cal.fuse_map(&r.zero_map, r.few_map.as_deref())
                    .into_iter()
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect();
        cal.fused_map_max = robust(maxima);
        self.calibration = Some(cal);

        let image_score =
            |this: &Self, raw: RawResult| this.calibrate(raw).score.expect("calibrated");
        let mut normal_scores: Vec<f32> = raws.into_iter().map(|r| image_score(self, r)).collect();
        let normal_p95 = quantile(&mut normal_scores, 0.95).expect("non-empty");
        let mut abnormal_scores: Vec<f32> = match abnormal {
            Some(images) => self
                .score_batched(images, None)?
                .into_iter()
                .map(|r| image_score(self, r))
                .collect(),
            None => Vec::new(),
        };
        let cal = self.calibration.as_mut().expect("set above");
        cal.normal_p95 = normal_p95;
        cal.abnormal_exemplars = abnormal_scores.len();
        cal.abnormal_median = quantile(&mut abnormal_scores, 0.5);
        cal.threshold = match cal.abnormal_median {
            Some(abnormal) if abnormal > normal_p95 => 0.5 * (normal_p95 + abnormal),
            _ => normal_p95.max(3.0),
        };
        Ok(cal.clone())
    }

    fn score_batched(
        &self,
        images: Tensor<B, 4>,
        exclude: Option<usize>,
    ) -> Result<Vec<RawResult>, MvfaError> {
        let n = images.dims()[0];
        let step = self.batch_size.max(1);
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = step.min(n - start);
            out.extend(self.score_raw_excluding(images.clone().narrow(0, start, len), exclude)?);
            start += len;
        }
        Ok(out)
    }
}
