//! A fitted MVFA detector: backbone + adapters + text features + memory banks + calibration,
//! scoring images into raw branch outputs, calibrated fused maps and image scores.
//!
//! Which head feeds which output follows spec 4.3: pixel maps always come from the seg head;
//! image scores of a segmentation task are the maximum of the fused map (the reference's
//! few-shot protocol), of a classification task the det-head image scores.
//!
//! The memory bank remembers which rows came from which normal source shot, so that the same
//! few-shot path ([`Scorer::few_shot_maps`]) gives the full branch and the leave-one-out
//! branch used for calibration (the bank without the exemplar's own rows).
//!
//! The memory bank may come from other adapters than the text comparison
//! ([`Detector::set_bank_adapters`]): a fit can keep the segmentation features of the adapters
//! before fine-tuning for the nearest-neighbour search, which fine-tuning tends to degrade,
//! while the text branch uses the fine-tuned ones (chosen on the user's labels,
//! [`crate::train::select`]).
//!
//! A detector keeps its invariants: its fields are private, and a step that fails (building a
//! bank, calibrating) leaves the detector as it was.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::prelude::*;

use crate::model::mvfa::adapter::{
    AdaptedFeatures, Head, MvfaAdapters, MvfaAdaptersConfig, MvfaError, TappedBackbone,
};
use crate::model::mvfa::calibration::{
    BranchStats, Calibration, ConformalThreshold, DEFAULT_FPR, DEFAULT_TEXT_WEIGHT, LeaveOut,
    METHOD, quantile,
};
use crate::model::mvfa::scoring::{LevelMaps, MemoryBank, Scorer};

/// What the user's labels describe, which decides the image-score branch (spec 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TaskKind {
    /// Lesions are localised (masks exist): image score = max of the fused seg map.
    Segmentation,
    /// Image labels only: image score = fused det-head image scores.
    Classification,
}

/// The few-shot memory bank of both heads, with the number of support images of each group
/// (one group per normal source shot: the shot and its augmentations), in row order.
#[derive(Debug, Clone)]
pub struct SupportBank<B: Backend> {
    seg: MemoryBank<B>,
    det: MemoryBank<B>,
    group_images: Vec<usize>,
}

impl<B: Backend> SupportBank<B> {
    /// A bank from both heads' memory banks; `group_images[g]` support images of group `g`
    /// gave consecutive rows. Errors when the banks' rows do not divide into those images.
    pub fn new(
        seg: MemoryBank<B>,
        det: MemoryBank<B>,
        group_images: Vec<usize>,
    ) -> Result<Self, MvfaError> {
        let images: usize = group_images.iter().sum();
        let fits = |bank: &MemoryBank<B>| images > 0 && bank.rows().is_multiple_of(images);
        if !fits(&seg) || !fits(&det) || seg.rows() != det.rows() || group_images.contains(&0) {
            return Err(MvfaError::Bank(format!(
                "memory banks of {} and {} rows do not split into groups of {group_images:?} images",
                seg.rows(),
                det.rows()
            )));
        }
        Ok(Self {
            seg,
            det,
            group_images,
        })
    }

    /// Number of support groups (normal source shots).
    pub fn groups(&self) -> usize {
        self.group_images.len()
    }

    /// Number of support images.
    pub fn images(&self) -> usize {
        self.group_images.iter().sum()
    }

    fn head(&self, head: Head) -> &MemoryBank<B> {
        match head {
            Head::Seg => &self.seg,
            Head::Det => &self.det,
        }
    }

    /// The same rows with every image its own group.
    fn image_by_image(&self) -> Self {
        Self {
            seg: self.seg.clone(),
            det: self.det.clone(),
            group_images: vec![1; self.images()],
        }
    }

    /// The bank without group `g`; `None` when nothing would remain.
    fn without_group(&self, g: usize) -> Option<Self> {
        let rows_per_image = self.seg.rows() / self.images();
        let first: usize = self.group_images[..g].iter().sum();
        let (start, len) = (
            first * rows_per_image,
            self.group_images[g] * rows_per_image,
        );
        let mut group_images = self.group_images.clone();
        group_images.remove(g);
        Some(Self {
            seg: self.seg.without_rows(start, len)?,
            det: self.det.without_rows(start, len)?,
            group_images,
        })
    }
}

/// Raw branch outputs of one image, on the host. Maps are `S*S` row-major at model
/// resolution; "levels" vectors hold one entry per tapped level, the plain fields their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct RawResult {
    /// Zero-shot image score (det head).
    pub zero_image: f32,
    /// Zero-shot image score per level.
    pub zero_image_levels: Vec<f32>,
    /// Few-shot image score (det head; mean of its few-shot map).
    pub few_image: Option<f32>,
    /// Zero-shot pixel map (seg head).
    pub zero_map: Vec<f32>,
    /// Zero-shot pixel map per level.
    pub zero_map_levels: Vec<Vec<f32>>,
    /// Few-shot pixel map (seg head).
    pub few_map: Option<Vec<f32>>,
    /// Few-shot pixel map per level (empty without a memory bank).
    pub few_map_levels: Vec<Vec<f32>>,
}

/// Raw outputs plus the calibrated fused map and image score (when calibrated).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageResult {
    /// The branches before calibration.
    pub raw: RawResult,
    /// Calibrated fused map (`S*S`).
    pub fused_map: Option<Vec<f32>>,
    /// Calibrated image score.
    pub score: Option<f32>,
}

/// The images a calibration is estimated from (see [`crate::model::mvfa::calibration`]).
#[derive(Debug, Clone)]
pub struct CalibrationImages<B: Backend> {
    /// The augmented normal support images, one `[n, 3, S, S]` tensor per group in bank
    /// order (what [`Detector::set_support`] was given). Scored leave-one-out when no
    /// held-out images are given.
    pub support: Vec<Tensor<B, 4>>,
    /// Normal images `[n, 3, S, S]` that neither the adapters nor the memory bank have seen,
    /// when the user supplied some: every branch is calibrated on them (the adapters are
    /// over-confident on the images they were trained on). Augmented block-major: the first
    /// `held_out_images` are the images themselves.
    pub held_out: Option<Tensor<B, 4>>,
    /// How many held-out source images `held_out` holds (its first rows).
    pub held_out_images: usize,
    /// Augmented abnormal shots `[n, 3, S, S]`, used only to place the threshold.
    pub abnormal: Option<Tensor<B, 4>>,
}

/// How a calibration fuses the branches and places its threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationOptions {
    /// Weight of the zero-shot (text) branch in the fusion (the few-shot branch gets the rest).
    pub text_weight: f32,
    /// Share of normal images the threshold may flag (split-conformal).
    pub fpr: f32,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        Self {
            text_weight: DEFAULT_TEXT_WEIGHT,
            fpr: DEFAULT_FPR,
        }
    }
}

/// The raw outputs a calibration is computed from.
#[derive(Debug, Clone)]
pub struct CalibrationRaws {
    /// Normal exemplars outside the memory bank (held out, or scored leave-one-out).
    pub normal: Vec<RawResult>,
    /// Abnormal shots (scored against the full bank).
    pub abnormal: Vec<RawResult>,
    /// Which leave-out the normal exemplars' few-shot branch used.
    pub leave_out: LeaveOut,
    /// Indices in `normal` of the exemplars that are source images themselves, not
    /// augmentations: the ones exchangeable with a new normal image, which the conformal
    /// threshold is computed from.
    pub sources: Vec<usize>,
}

/// Which adapters a forward pass runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdapterSet {
    /// The adapters compared with the text features.
    Text,
    /// The adapters whose tokens fill the memory bank.
    Bank,
}

/// A fitted detector. `V` is the frozen vision tower.
pub struct Detector<B: Backend, V: TappedBackbone<B>> {
    vision: V,
    adapters: MvfaAdapters<B>,
    /// Adapters of the memory bank when they differ from `adapters`.
    bank_adapters: Option<MvfaAdapters<B>>,
    adapters_cfg: MvfaAdaptersConfig,
    scorer: Scorer<B>,
    bank: Option<SupportBank<B>>,
    calibration: Option<Calibration>,
    task: TaskKind,
    batch_size: usize,
    cache: Option<FeatureCache<B>>,
    bank_cache: Option<FeatureCache<B>>,
}

/// Most bytes of adapted tokens a [`FeatureCache`] keeps (an image's tokens take about 7 MB
/// at ViT-L/14 and 240 px, so about 150 images: a 6+6-shot set with its 11 augmentations).
/// Past it the least recently used images go, never one that the request being served needs.
const FEATURE_CACHE_BYTES: usize = 1 << 30;

/// One cached image: its tokens, their size, and when it was last used.
struct CachedFeatures<B: Backend> {
    features: AdaptedFeatures<B>,
    bytes: usize,
    /// The use counter at its last use (a strict order, so eviction is deterministic).
    last_used: u64,
    /// The request that last used it.
    request: u64,
}

/// The cache's contents and bookkeeping.
struct CacheInner<B: Backend> {
    entries: HashMap<[u8; 32], CachedFeatures<B>>,
    bytes: usize,
    /// Request counter: entries of the current request are never evicted.
    request: u64,
    /// Use counter, for least-recently-used eviction.
    uses: u64,
}

impl<B: Backend> Default for CacheInner<B> {
    fn default() -> Self {
        CacheInner {
            entries: HashMap::new(),
            bytes: 0,
            request: 0,
            uses: 0,
        }
    }
}

/// Adapted tokens of images these adapters have already seen, keyed by the SHA-256 of the
/// image's values. A session shares one between the detectors it builds around the same
/// adapters, so that rebuilding the memory bank and calibration after a label edit runs the
/// backbone only on the shots that are new (and only once per shot within a rebuild, where the
/// bank and the calibration see the same support images). Only support, held-out and
/// abnormal shots go through it, never the images being scored. Bounded by
/// [`FEATURE_CACHE_BYTES`], least recently used first out.
#[derive(Clone)]
pub struct FeatureCache<B: Backend> {
    inner: Arc<Mutex<CacheInner<B>>>,
    limit: usize,
}

impl<B: Backend> Default for FeatureCache<B> {
    fn default() -> Self {
        Self::with_limit(FEATURE_CACHE_BYTES)
    }
}

impl<B: Backend> FeatureCache<B> {
    /// An empty cache that keeps at most `limit_bytes` of tokens (beyond what one request
    /// needs at once).
    pub fn with_limit(limit_bytes: usize) -> Self {
        FeatureCache {
            inner: Arc::new(Mutex::new(CacheInner::default())),
            limit: limit_bytes,
        }
    }

    /// Images cached.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of tokens cached.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner<B>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached tokens of `key`, marked as used by the current request.
    fn get(&self, key: &[u8; 32]) -> Option<AdaptedFeatures<B>> {
        let mut inner = self.lock();
        inner.uses += 1;
        let (uses, request) = (inner.uses, inner.request);
        let entry = inner.entries.get_mut(key)?;
        entry.last_used = uses;
        entry.request = request;
        Some(entry.features.clone())
    }

    /// Starts a request: entries it touches count as newer than all before.
    fn begin_request(&self) {
        let mut inner = self.lock();
        inner.request += 1;
    }

    /// Adds `features` for `key`, then evicts the least recently used entries of earlier
    /// requests until the cache fits its limit again (or only this request's are left).
    fn insert(&self, key: [u8; 32], features: AdaptedFeatures<B>) {
        let bytes = features
            .seg_tokens
            .iter()
            .chain(&features.det_tokens)
            .map(|t| t.shape().num_elements() * std::mem::size_of::<f32>())
            .sum();
        let mut inner = self.lock();
        inner.uses += 1;
        let (uses, now) = (inner.uses, inner.request);
        if let Some(old) = inner.entries.insert(
            key,
            CachedFeatures {
                features,
                bytes,
                last_used: uses,
                request: now,
            },
        ) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.limit {
            let oldest = inner
                .entries
                .iter()
                .filter(|(_, e)| e.request < now)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k);
            let Some(oldest) = oldest else { break };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
        }
    }
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

/// Calibrated fused map and image score of `raw` under `cal` for `task`.
pub fn apply_calibration(cal: &Calibration, task: TaskKind, raw: &RawResult) -> (Vec<f32>, f32) {
    let fused = cal.fuse_map(&raw.zero_map, raw.few_map.as_deref());
    let score = match task {
        TaskKind::Segmentation => cal.image_score_from_map(&fused),
        TaskKind::Classification => cal.image_score_from_scores(raw.zero_image, raw.few_image),
    };
    (fused, score)
}

/// The calibration of a detector of `task` from the raw outputs of its exemplars (see
/// [`crate::model::mvfa::calibration`]); a pure function, so a fit can try several fusion
/// weights on the same forward passes.
///
/// # Panics
/// When `raws.normal` is empty ([`Detector::calibration_raws`] never returns that).
pub fn calibration_from_raws(
    raws: &CalibrationRaws,
    task: TaskKind,
    options: CalibrationOptions,
) -> Calibration {
    let mut cal = branch_calibration(raws, options.text_weight);
    set_threshold(&mut cal, raws, task, options);
    cal
}

/// The robust statistics of the normal exemplars' raw results: of each branch's map and
/// image score, and of the fused map's maximum (which needs the others first). The
/// threshold is left at its default.
fn branch_calibration(raws: &CalibrationRaws, text_weight: f32) -> Calibration {
    let normal = &raws.normal;
    let has_few = normal
        .iter()
        .all(|r| r.few_map.is_some() && r.few_image.is_some());
    let robust = |mut v: Vec<f32>| BranchStats::robust(&mut v).expect("non-empty exemplars");
    let zero_map = robust(
        normal
            .iter()
            .flat_map(|r| r.zero_map.iter().copied())
            .collect(),
    );
    let few_map = has_few.then(|| {
        robust(
            normal
                .iter()
                .flat_map(|r| r.few_map.iter().flatten().copied())
                .collect(),
        )
    });
    let zero_image = robust(normal.iter().map(|r| r.zero_image).collect());
    let few_image = has_few.then(|| robust(normal.iter().filter_map(|r| r.few_image).collect()));
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
        leave_out: raws.leave_out,
        normal_exemplars: normal.len(),
        abnormal_exemplars: 0,
        threshold: 3.0,
        normal_p95: 0.0,
        abnormal_median: None,
        text_weight: text_weight.clamp(0.0, 1.0),
        normal_scores: Vec::new(),
        fpr: None,
    };
    let maxima: Vec<f32> = normal
        .iter()
        .map(|r| {
            cal.fuse_map(&r.zero_map, r.few_map.as_deref())
                .into_iter()
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    cal.fused_map_max = robust(maxima);
    cal
}

/// The image scores of the normal and abnormal exemplars under `cal`, and the conformal
/// threshold at `options.fpr` (the default rate when too few normal images support it).
fn set_threshold(
    cal: &mut Calibration,
    raws: &CalibrationRaws,
    task: TaskKind,
    options: CalibrationOptions,
) {
    let normal = &raws.normal;
    let mut all_scores: Vec<f32> = normal
        .iter()
        .map(|r| apply_calibration(cal, task, r).1)
        .collect();
    // The conformal scores: one per normal source image (its augmentations are near-copies,
    // not new draws, and would make the threshold look better supported than it is).
    let mut normal_scores: Vec<f32> = raws
        .sources
        .iter()
        .filter_map(|&i| all_scores.get(i).copied())
        .collect();
    normal_scores.sort_unstable_by(f32::total_cmp);
    cal.normal_p95 = quantile(&mut all_scores, 0.95).expect("non-empty");
    let mut abnormal_scores: Vec<f32> = raws
        .abnormal
        .iter()
        .map(|r| apply_calibration(cal, task, r).1)
        .collect();
    cal.abnormal_exemplars = abnormal_scores.len();
    cal.abnormal_median = quantile(&mut abnormal_scores, 0.5);
    let conformal = ConformalThreshold::from_sorted(&normal_scores, options.fpr)
        .or_else(|| ConformalThreshold::from_sorted(&normal_scores, DEFAULT_FPR));
    cal.normal_scores = normal_scores;
    if let Some(t) = conformal {
        cal.threshold = t.threshold;
        cal.fpr = Some(t);
    }
}

impl<B: Backend, V: TappedBackbone<B>> Detector<B, V> {
    /// A detector without memory bank or calibration (the zero-shot branch only).
    /// `batch_size` is the number of images per forward pass when scoring many (at least 1).
    pub fn new(
        vision: V,
        adapters: MvfaAdapters<B>,
        adapters_cfg: MvfaAdaptersConfig,
        scorer: Scorer<B>,
        task: TaskKind,
        batch_size: usize,
    ) -> Self {
        Self {
            vision,
            adapters,
            bank_adapters: None,
            adapters_cfg,
            scorer,
            bank: None,
            calibration: None,
            task,
            batch_size: batch_size.max(1),
            cache: None,
            bank_cache: None,
        }
    }

    /// Makes the memory bank come from `adapters` (`None`: the text adapters), with their own
    /// feature cache. Rebuild the bank and the calibration afterwards.
    pub fn set_bank_adapters(
        &mut self,
        adapters: Option<MvfaAdapters<B>>,
        cache: Option<FeatureCache<B>>,
    ) {
        self.bank_cache = adapters.as_ref().and(cache);
        self.bank_adapters = adapters;
        self.bank = None;
    }

    /// The adapters of the memory bank when they differ from [`Self::adapters`].
    pub fn bank_adapters(&self) -> Option<&MvfaAdapters<B>> {
        self.bank_adapters.as_ref()
    }

    /// The frozen vision tower.
    pub fn vision(&self) -> &V {
        &self.vision
    }

    /// The (fine-tuned) adapters.
    pub fn adapters(&self) -> &MvfaAdapters<B> {
        &self.adapters
    }

    /// The adapters' configuration (sizes and mixing ratios).
    pub fn adapters_config(&self) -> &MvfaAdaptersConfig {
        &self.adapters_cfg
    }

    /// The scorer (text features and map geometry).
    pub fn scorer(&self) -> &Scorer<B> {
        &self.scorer
    }

    /// The few-shot memory bank, when one was built.
    pub fn support_bank(&self) -> Option<&SupportBank<B>> {
        self.bank.as_ref()
    }

    /// The calibration, when fitted or loaded.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// Images per forward pass when scoring many.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Which outputs the image score comes from.
    pub fn task(&self) -> TaskKind {
        self.task
    }

    /// Sets which outputs the image score comes from (e.g. a dataset's protocol).
    pub fn set_task(&mut self, task: TaskKind) {
        self.task = task;
    }

    /// Installs a stored calibration (from a checkpoint); `None` removes it.
    pub fn set_calibration(&mut self, calibration: Option<Calibration>) {
        self.calibration = calibration;
    }

    /// Drops the memory bank and the calibration: the zero-shot branch alone.
    pub fn into_zero_shot(mut self) -> Self {
        self.bank = None;
        self.calibration = None;
        self
    }

    /// Installs a memory bank built elsewhere (benchmarks with synthetic banks).
    pub fn set_support_bank(&mut self, bank: Option<SupportBank<B>>) {
        self.bank = bank;
    }

    /// Adapted tokens of `images [n, 3, S, S]` (the text adapters).
    pub fn features(&self, images: Tensor<B, 4>) -> Result<AdaptedFeatures<B>, MvfaError> {
        self.features_of(AdapterSet::Text, images)
    }

    fn features_of(
        &self,
        set: AdapterSet,
        images: Tensor<B, 4>,
    ) -> Result<AdaptedFeatures<B>, MvfaError> {
        let adapters = match (set, &self.bank_adapters) {
            (AdapterSet::Bank, Some(bank)) => bank,
            _ => &self.adapters,
        };
        adapters.forward_adapted(&self.vision, images, &self.adapters_cfg)
    }

    /// Shares `cache` with this detector: its shots' adapted tokens are taken from it and
    /// added to it. The cache must belong to this detector's adapters.
    pub fn set_feature_cache(&mut self, cache: Option<FeatureCache<B>>) {
        self.cache = cache;
    }

    /// The feature cache of the text adapters, if one is set (a session keeps it for the next
    /// fit around the same adapters).
    pub fn feature_cache(&self) -> Option<&FeatureCache<B>> {
        self.cache.as_ref()
    }

    /// The adapter set whose tokens `set` stands for (the text adapters when there are no
    /// separate bank adapters) and its feature cache.
    fn cache_of(&self, set: AdapterSet) -> (AdapterSet, Option<&FeatureCache<B>>) {
        match (set, &self.bank_adapters) {
            (AdapterSet::Bank, Some(_)) => (AdapterSet::Bank, self.bank_cache.as_ref()),
            _ => (AdapterSet::Text, self.cache.as_ref()),
        }
    }

    /// [`Self::features`] through the feature cache, when there is one: only images it lacks
    /// run through the backbone, each on its own so that its tokens never depend on the
    /// batch it came in.
    fn shot_features(
        &self,
        set: AdapterSet,
        images: Tensor<B, 4>,
    ) -> Result<AdaptedFeatures<B>, MvfaError> {
        let (set, cache) = self.cache_of(set);
        let Some(cache) = cache else {
            return self.features_of(set, images);
        };
        let keys = image_keys(&images);
        cache.begin_request();
        let mut cached = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let f = match cache.get(key) {
                Some(f) => f,
                None => {
                    let f = self.features_of(set, images.clone().narrow(0, i, 1))?;
                    cache.insert(*key, f.clone());
                    f
                }
            };
            cached.push(f);
        }
        Ok(concat_features(&cached))
    }

    /// [`Self::features_of`], taking the tokens of images the feature cache already holds
    /// (a shot being scored, e.g. the image just labelled) from it, without adding any: the
    /// tokens are the same either way (the backbone does not depend on the batch), only the
    /// pass is saved.
    fn peeked_features(
        &self,
        set: AdapterSet,
        images: Tensor<B, 4>,
    ) -> Result<AdaptedFeatures<B>, MvfaError> {
        let (set, cache) = self.cache_of(set);
        let Some(cache) = cache else {
            return self.features_of(set, images);
        };
        let hits: Vec<Option<AdaptedFeatures<B>>> =
            image_keys(&images).iter().map(|k| cache.get(k)).collect();
        if hits.iter().all(Option::is_none) {
            return self.features_of(set, images);
        }
        let parts = hits
            .into_iter()
            .enumerate()
            .map(|(i, hit)| match hit {
                Some(f) => Ok(f),
                None => self.features_of(set, images.clone().narrow(0, i, 1)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(concat_features(&parts))
    }

    /// Builds the memory bank from support images, given as groups of `[n, 3, S, S]` batches
    /// (one group per normal source shot; see the module docs). On error the detector keeps
    /// its previous bank. A stored calibration is kept: refit it when the shots change.
    pub fn set_support(&mut self, groups: Vec<Tensor<B, 4>>) -> Result<(), MvfaError> {
        let mut seg_parts = Vec::new();
        let mut det_parts = Vec::new();
        let mut group_images = Vec::with_capacity(groups.len());
        for images in groups {
            let n = images.dims()[0];
            let mut start = 0;
            while start < n {
                let len = self.batch_size.min(n - start);
                let f =
                    self.shot_features(AdapterSet::Bank, images.clone().narrow(0, start, len))?;
                seg_parts.push(f.seg_tokens);
                det_parts.push(f.det_tokens);
                start += len;
            }
            group_images.push(n);
        }
        self.bank = if group_images.is_empty() {
            None
        } else {
            Some(SupportBank::new(
                MemoryBank::from_parts(&seg_parts),
                MemoryBank::from_parts(&det_parts),
                group_images,
            )?)
        };
        Ok(())
    }

    /// Few-shot maps of one head for adapted `features`, against `bank` (all levels and
    /// their sum). The one few-shot path: scoring, calibration and the benchmark use it.
    pub fn few_shot_maps(
        &self,
        features: &AdaptedFeatures<B>,
        head: Head,
        bank: &SupportBank<B>,
    ) -> LevelMaps<B> {
        self.scorer
            .few_shot_maps(features.head(head), bank.head(head))
    }

    /// Raw branch outputs of `images [n, 3, S, S]` against the full memory bank.
    pub fn score_raw(&self, images: Tensor<B, 4>) -> Result<Vec<RawResult>, MvfaError> {
        self.score_raw_with(images, self.bank.as_ref(), Tokens::Fresh)
    }

    /// Raw branch outputs of `images [n, 3, S, S]` against `bank` (none: zero-shot only).
    /// `tokens`: where the adapted tokens come from ([`Tokens::Cached`] for the detector's
    /// own shots in calibration, [`Tokens::Peek`] when scoring).
    fn score_raw_with(
        &self,
        images: Tensor<B, 4>,
        bank: Option<&SupportBank<B>>,
        tokens: Tokens,
    ) -> Result<Vec<RawResult>, MvfaError> {
        let n = images.dims()[0];
        let bank_images = (bank.is_some() && self.bank_adapters.is_some()).then(|| images.clone());
        let features_of = |set, images| match tokens {
            Tokens::Fresh => self.features_of(set, images),
            Tokens::Cached => self.shot_features(set, images),
            Tokens::Peek => self.peeked_features(set, images),
        };
        let features = features_of(AdapterSet::Text, images)?;
        // The few-shot branch compares the bank adapters' tokens with the bank.
        let bank_features = bank_images
            .map(|images| features_of(AdapterSet::Bank, images))
            .transpose()?;
        let few_features = bank_features.as_ref().unwrap_or(&features);
        let zero_images = self.scorer.zero_shot_image_scores(&features.det_tokens);
        let zero_maps = self.scorer.zero_shot_maps(&features.seg_tokens);
        let few_seg = bank.map(|bank| self.few_shot_maps(few_features, Head::Seg, bank));
        let few_image = bank.map(|bank| {
            to_host(
                self.few_shot_maps(few_features, Head::Det, bank)
                    .mean_scores()
                    .fused,
            )
        });

        let zero_image = to_host(zero_images.fused);
        let zero_image_levels: Vec<Vec<f32>> =
            zero_images.per_level.into_iter().map(to_host).collect();
        let zero_map = split_rows(to_host(zero_maps.fused), n);
        let zero_map_levels: Vec<Vec<Vec<f32>>> = zero_maps
            .per_level
            .into_iter()
            .map(|m| split_rows(to_host(m), n))
            .collect();
        let few_map_levels: Option<Vec<Vec<Vec<f32>>>> = few_seg.as_ref().map(|maps| {
            maps.per_level
                .iter()
                .map(|m| split_rows(to_host(m.clone()), n))
                .collect()
        });
        let few_map = few_seg.map(|maps| split_rows(to_host(maps.fused), n));

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
        match &self.calibration {
            Some(cal) => {
                let (fused, score) = apply_calibration(cal, self.task, &raw);
                ImageResult {
                    raw,
                    fused_map: Some(fused),
                    score: Some(score),
                }
            }
            None => ImageResult {
                raw,
                fused_map: None,
                score: None,
            },
        }
    }

    /// Scores `images [n, 3, S, S]` in batches of `batch_size`: raw branches, calibrated fused
    /// map and image score. Each image's result depends only on that image.
    pub fn score(&self, images: Tensor<B, 4>) -> Result<Vec<ImageResult>, MvfaError> {
        Ok(self
            .score_batched(images, self.bank.as_ref(), Tokens::Peek)?
            .into_iter()
            .map(|raw| self.calibrate(raw))
            .collect())
    }

    /// Scores `images [n, 3, S, S]` in one forward pass of all `n`, whatever the batch size:
    /// for callers that choose the batch themselves ([`crate::workflow::BatchTuner`]). The
    /// results equal [`Self::score`]'s.
    pub fn score_one_batch(&self, images: Tensor<B, 4>) -> Result<Vec<ImageResult>, MvfaError> {
        Ok(self
            .score_raw_with(images, self.bank.as_ref(), Tokens::Peek)?
            .into_iter()
            .map(|raw| self.calibrate(raw))
            .collect())
    }

    /// Raw outputs of `images [n, 3, S, S]` against the full memory bank, taking the tokens
    /// of images seen before from the feature caches (for the shots and validation images of
    /// a fit, which are scored under several settings).
    pub fn score_raw_cached(&self, images: Tensor<B, 4>) -> Result<Vec<RawResult>, MvfaError> {
        self.score_batched(images, self.bank.as_ref(), Tokens::Cached)
    }

    /// Scores the calibration exemplars: the normal ones outside the memory bank (held out,
    /// or leave-one-out; see [`crate::model::mvfa::calibration`]) and the abnormal shots.
    pub fn calibration_raws(
        &self,
        images: &CalibrationImages<B>,
    ) -> Result<CalibrationRaws, MvfaError> {
        let bank = self.bank.as_ref();
        let leave_out = match (&images.held_out, bank) {
            (Some(_), _) => LeaveOut::HeldOut,
            (None, None) => LeaveOut::None,
            (None, Some(bank)) if bank.groups() == 1 => LeaveOut::Augmentation,
            (None, Some(_)) => LeaveOut::SourceShot,
        };
        let mut raws: Vec<RawResult> = Vec::new();
        // Support groups start with their source image (augmentation 0 is the identity).
        let mut sources = Vec::new();
        match (leave_out, bank) {
            (LeaveOut::HeldOut, _) => {
                let held_out = images.held_out.clone().expect("matched above");
                raws.extend(self.score_batched(held_out, bank, Tokens::Cached)?);
                sources.extend(0..images.held_out_images.min(raws.len()));
            }
            (LeaveOut::None, _) | (_, None) => {
                for group in &images.support {
                    sources.push(raws.len());
                    raws.extend(self.score_batched(group.clone(), None, Tokens::Cached)?);
                }
            }
            (LeaveOut::SourceShot, Some(bank)) => {
                for (g, group) in images.support.iter().enumerate() {
                    sources.push(raws.len());
                    raws.extend(self.score_batched(
                        group.clone(),
                        bank.without_group(g).as_ref(),
                        Tokens::Cached,
                    )?);
                }
            }
            (LeaveOut::Augmentation, Some(bank)) => {
                // One source shot: leave each augmented image out of its own bank.
                let singles = bank.image_by_image();
                let group = images.support.first().ok_or_else(|| {
                    MvfaError::Bank("calibration needs the support images".into())
                })?;
                sources.push(0);
                for i in 0..group.dims()[0] {
                    let image = group.clone().narrow(0, i, 1);
                    raws.extend(self.score_raw_with(
                        image,
                        singles.without_group(i).as_ref(),
                        Tokens::Cached,
                    )?);
                }
            }
        }
        if raws.is_empty() {
            return Err(MvfaError::Bank(
                "calibration needs at least one normal exemplar".into(),
            ));
        }
        let abnormal = match &images.abnormal {
            Some(abnormal) => {
                self.score_batched(abnormal.clone(), self.bank.as_ref(), Tokens::Cached)?
            }
            None => Vec::new(),
        };
        Ok(CalibrationRaws {
            normal: raws,
            abnormal,
            leave_out,
            sources,
        })
    }

    /// Fits the calibration (see [`crate::model::mvfa::calibration`]) and installs it. On
    /// error the detector is unchanged.
    pub fn fit_calibration(
        &mut self,
        images: &CalibrationImages<B>,
        options: CalibrationOptions,
    ) -> Result<Calibration, MvfaError> {
        let raws = self.calibration_raws(images)?;
        let cal = calibration_from_raws(&raws, self.task, options);
        self.calibration = Some(cal.clone());
        Ok(cal)
    }

    fn score_batched(
        &self,
        images: Tensor<B, 4>,
        bank: Option<&SupportBank<B>>,
        tokens: Tokens,
    ) -> Result<Vec<RawResult>, MvfaError> {
        let n = images.dims()[0];
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = self.batch_size.min(n - start);
            out.extend(self.score_raw_with(images.clone().narrow(0, start, len), bank, tokens)?);
            start += len;
        }
        Ok(out)
    }
}

/// The feature cache's key of each image of `images [n, 3, S, S]`: the SHA-256 of its f32
/// values.
fn image_keys<B: Backend>(images: &Tensor<B, 4>) -> Vec<[u8; 32]> {
    let n = images.dims()[0];
    let values = to_host(images.clone());
    let per_image = values.len() / n.max(1);
    values
        .chunks(per_image.max(1))
        .map(|v| {
            use sha2::Digest;
            let mut hash = sha2::Sha256::new();
            for x in v {
                hash.update(x.to_le_bytes());
            }
            hash.finalize().into()
        })
        .collect()
}

/// Per-image tokens joined along the batch axis, level by level.
fn concat_features<B: Backend>(parts: &[AdaptedFeatures<B>]) -> AdaptedFeatures<B> {
    let levels = parts.first().map_or(0, |f| f.seg_tokens.len());
    let cat = |pick: fn(&AdaptedFeatures<B>) -> &Vec<Tensor<B, 3>>, l: usize| {
        Tensor::cat(parts.iter().map(|f| pick(f)[l].clone()).collect(), 0)
    };
    AdaptedFeatures {
        seg_tokens: (0..levels).map(|l| cat(|f| &f.seg_tokens, l)).collect(),
        det_tokens: (0..levels).map(|l| cat(|f| &f.det_tokens, l)).collect(),
    }
}

/// Where [`Detector::score_raw_with`] takes the adapted tokens from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tokens {
    /// A forward pass of the batch.
    Fresh,
    /// The feature cache, adding what it lacks (the detector's own shots).
    Cached,
    /// The feature cache where it has them, a forward pass otherwise; nothing added.
    Peek,
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    /// Tokens of 1 KiB (2 levels x 2 heads x 64 values of 4 bytes).
    fn features(value: f32) -> AdaptedFeatures<B> {
        let t = || Tensor::<B, 3>::full([1, 8, 8], value, &Default::default());
        AdaptedFeatures {
            seg_tokens: vec![t(), t()],
            det_tokens: vec![t(), t()],
        }
    }

    #[test]
    fn feature_cache_evicts_least_recently_used_but_never_the_current_request() {
        let cache = FeatureCache::<B>::with_limit(3 * 1024);
        let key = |i: u8| [i; 32];
        cache.begin_request();
        for i in 0..3 {
            cache.insert(key(i), features(f32::from(i)));
        }
        assert_eq!((cache.len(), cache.bytes()), (3, 3 * 1024));
        // A new request uses image 0, then adds image 3: image 1, the oldest unused, goes.
        cache.begin_request();
        assert!(cache.get(&key(0)).is_some());
        cache.insert(key(3), features(3.0));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(1)).is_none());
        assert!(cache.get(&key(2)).is_some());
        // One request larger than the limit keeps all it needs.
        cache.begin_request();
        for i in 10..15 {
            cache.insert(key(i), features(f32::from(i)));
        }
        assert_eq!(cache.len(), 5);
        assert!((10..15).all(|i| cache.get(&key(i)).is_some()));
        assert_eq!(cache.bytes(), 5 * 1024);
    }
}
