//! Exact ROC AUC, the value scikit-learn's `roc_auc_score` reports (spec section 6).
//!
//! scikit-learn integrates the ROC curve with the trapezoid rule over all distinct
//! thresholds, which equals the Mann–Whitney statistic with ties counted one half:
//!
//! ```text
//! AUC = (#{(p, n) : s_p > s_n} + ½ #{(p, n) : s_p = s_n}) / (P · N)
//! ```
//!
//! over all (positive, negative) pairs. Both functions here compute that count **exactly in
//! integers** and divide once at the end, so the result is the exact rational value rounded
//! once (exactly rounded while P·N < 4.5·10^15, within ~2e-16 relative beyond).
//! scikit-learn's float trapezoid sum differs from it by its own rounding only (~1e-16).
//!
//! How exactness is kept:
//! - Scores are compared through an order-preserving map of the f32 bit pattern to a `u32`
//!   key ([`order_key`]), so two scores tie exactly when they are the same f32 (with `-0.0`
//!   folded onto `+0.0`, as numpy compares them). No binning, no conversion that could merge
//!   or split values.
//! - Counts are integers; the doubled Mann–Whitney sum `2·#greater + #equal` is accumulated
//!   in `u128`, which cannot overflow for any number of samples addressable in memory.
//!
//! [`roc_auc`] is the one-shot form for image-level scores. [`PixelAucAccumulator`] pools
//! pixel maps image by image for the pixel-level AUC over ~2·10^8 pixels in bounded memory;
//! see its documentation for the memory bound.
//!
//! Infinite scores are ordered like any other value (scikit-learn rejects them); NaN scores
//! are an error because they have no order.

/// Why an AUC could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AucError {
    /// ROC AUC is undefined unless both classes are present.
    #[error(
        "ROC AUC needs both classes, but there are {positives} positive and {negatives} negative samples"
    )]
    OneClass {
        /// Positive (abnormal) samples.
        positives: u64,
        /// Negative (normal) samples.
        negatives: u64,
    },
    /// A score is NaN (it has no place in the ranking).
    #[error("score {index} is NaN; ROC AUC is undefined for NaN scores")]
    NanScore {
        /// Index of the NaN score.
        index: usize,
    },
    /// A pixel of a map is NaN. `image` counts the maps added so far, from 0.
    #[error("pixel {pixel} of image {image} has a NaN score; ROC AUC is undefined for NaN scores")]
    NanPixel {
        /// Index of the map, counting from 0 in the order added.
        image: usize,
        /// Index of the NaN value within the map.
        pixel: usize,
    },
    /// Scores and labels (or a map and its mask) differ in length.
    #[error("{scores} scores but {labels} labels")]
    LengthMismatch {
        /// Scores (or map values) given.
        scores: usize,
        /// Labels (or mask values) given.
        labels: usize,
    },
}

/// Order-preserving key of an f32: `a < b` (as floats) iff `order_key(a) < order_key(b)`,
/// and `order_key(a) == order_key(b)` iff `a == b`. `-0.0` and `+0.0` map to the same key;
/// infinities map to the extremes. NaN must be rejected before calling.
#[inline]
pub fn order_key(x: f32) -> u32 {
    // `x == 0.0` is true for both zeros; fold them onto +0.0.
    let bits = if x == 0.0 { 0 } else { x.to_bits() };
    if bits & 0x8000_0000 != 0 {
        // Negative: larger magnitude must sort lower, so flip every bit.
        !bits
    } else {
        // Positive: set the sign bit so positives sort above all negatives.
        bits | 0x8000_0000
    }
}

/// The final division: `u2 = 2·#greater + #equal` over `pos · neg` pairs.
fn finish_u2(u2: u128, pos: u64, neg: u64) -> Result<f64, AucError> {
    if pos == 0 || neg == 0 {
        return Err(AucError::OneClass {
            positives: pos,
            negatives: neg,
        });
    }
    // Exact while both numbers are below 2^53 (P·N < 4.5·10^15); beyond that each conversion
    // rounds by at most half an ulp, so the quotient stays within ~2e-16 relative of the
    // exact rational value.
    let denom = 2 * pos as u128 * neg as u128;
    Ok(u2 as f64 / denom as f64)
}

/// Exact ROC AUC of `scores` against binary `labels` (`true` = positive / anomalous), equal
/// to scikit-learn's `roc_auc_score(labels, scores)` up to float rounding of its trapezoid sum.
///
/// Errors: different lengths, a NaN score (named by index), or only one class present.
/// Memory: one `u32` per sample. Time: O(n log n).
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Result<f64, AucError> {
    if scores.len() != labels.len() {
        return Err(AucError::LengthMismatch {
            scores: scores.len(),
            labels: labels.len(),
        });
    }
    if let Some(index) = scores.iter().position(|s| s.is_nan()) {
        return Err(AucError::NanScore { index });
    }
    let mut pos: Vec<u32> = Vec::new();
    let mut neg: Vec<u32> = Vec::new();
    for (&s, &l) in scores.iter().zip(labels) {
        if l {
            pos.push(order_key(s));
        } else {
            neg.push(order_key(s));
        }
    }
    if pos.is_empty() || neg.is_empty() {
        return finish_u2(0, pos.len() as u64, neg.len() as u64);
    }
    pos.sort_unstable();
    neg.sort_unstable();
    // Two-pointer walk: for each positive key, count negatives strictly below and equal.
    let mut u2: u128 = 0;
    let mut below = 0usize; // negatives with key < current positive key
    let mut i = 0usize;
    while i < pos.len() {
        let key = pos[i];
        let mut run = 1usize;
        while i + run < pos.len() && pos[i + run] == key {
            run += 1;
        }
        while below < neg.len() && neg[below] < key {
            below += 1;
        }
        let mut eq = 0usize;
        while below + eq < neg.len() && neg[below + eq] == key {
            eq += 1;
        }
        u2 += run as u128 * (2 * below as u128 + eq as u128);
        i += run;
    }
    finish_u2(u2, pos.len() as u64, neg.len() as u64)
}

/// Number of high-key buckets (top 16 bits of the order key).
const BUCKETS: usize = 1 << 16;
/// A bucket's sparse list turns into a dense table when it reaches this length: at that point
/// the list (2 bytes per entry) is as large as the dense table (2^16 × 8 bytes = 512 KiB).
const DENSE_AT: usize = (BUCKETS * std::mem::size_of::<u64>()) / std::mem::size_of::<u16>();

/// Low 16 key bits of every sample that fell into one bucket, either as a list or as counts.
#[derive(Debug, Clone)]
enum Bucket {
    /// Unsorted low halves, one per sample (no allocation while empty).
    Sparse(Vec<u16>),
    /// Count per low half.
    Dense(Box<[u64]>),
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket::Sparse(Vec::new())
    }
}

impl Bucket {
    #[inline]
    fn push(&mut self, low: u16) {
        match self {
            Bucket::Sparse(v) => {
                if v.len() == DENSE_AT {
                    let mut counts = vec![0u64; BUCKETS].into_boxed_slice();
                    for &x in v.iter() {
                        counts[x as usize] += 1;
                    }
                    counts[low as usize] += 1;
                    *self = Bucket::Dense(counts);
                } else {
                    v.push(low);
                }
            }
            Bucket::Dense(c) => c[low as usize] += 1,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Bucket::Sparse(v) => v.is_empty(),
            // A dense bucket only exists after DENSE_AT pushes.
            Bucket::Dense(_) => false,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Bucket::Sparse(v) => v.capacity() * std::mem::size_of::<u16>(),
            Bucket::Dense(c) => c.len() * std::mem::size_of::<u64>(),
        }
    }

    /// Sorted `(low, count)` runs of this bucket. Sorts a sparse list in place (the multiset,
    /// which is all that matters, is unchanged).
    fn runs(&mut self, out: &mut Vec<(u16, u64)>) {
        out.clear();
        match self {
            Bucket::Sparse(v) => {
                v.sort_unstable();
                let mut i = 0;
                while i < v.len() {
                    let x = v[i];
                    let mut j = i + 1;
                    while j < v.len() && v[j] == x {
                        j += 1;
                    }
                    out.push((x, (j - i) as u64));
                    i = j;
                }
            }
            Bucket::Dense(c) => {
                out.extend(
                    c.iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(x, n)| (x as u16, *n)),
                );
            }
        }
    }

    fn total(&self) -> u64 {
        match self {
            Bucket::Sparse(v) => v.len() as u64,
            Bucket::Dense(c) => c.iter().sum(),
        }
    }

    fn merge_from(&mut self, other: &Bucket) {
        match other {
            Bucket::Sparse(v) => {
                for &x in v {
                    self.push(x);
                }
            }
            Bucket::Dense(c) => {
                if let Bucket::Sparse(v) = self {
                    let mut counts = vec![0u64; BUCKETS].into_boxed_slice();
                    for &x in v.iter() {
                        counts[x as usize] += 1;
                    }
                    *self = Bucket::Dense(counts);
                }
                if let Bucket::Dense(mine) = self {
                    for (m, o) in mine.iter_mut().zip(c.iter()) {
                        *m += *o;
                    }
                }
            }
        }
    }
}

/// Streaming, exact, pooled pixel-level ROC AUC (spec section 6: all pixels of all test images
/// at 240×240, normal images contributing all-negative masks).
///
/// Feed one map at a time with [`add`](Self::add) (pixel mask) or
/// [`add_uniform`](Self::add_uniform) (every pixel the same label, e.g. a normal image), then
/// call [`auc`](Self::auc). The result is bit-identical to [`roc_auc`] on the concatenation of
/// all maps and masks, in any feeding order.
///
/// # Exactness
/// Each score becomes its 32-bit order key ([`order_key`]); nothing is binned. The key is split
/// radix-style into a high half (one of 2^16 buckets per class) and a low half stored in the
/// bucket. At the end each bucket's low halves are sorted and the two classes are walked in
/// key order, adding `count_pos · (2·neg_below + neg_equal)` in `u128`, the doubled
/// Mann–Whitney sum, exactly. The one division happens at the very end.
///
/// # Memory
/// No f64 (or f32) copy of the data is kept: a pixel costs 2 bytes (its low key half) in a
/// bucket's list, plus at most the same again of `Vec` growth slack. A bucket whose list
/// reaches 2^18 entries switches to a dense table of 2^16 `u64` counts (512 KiB), after which
/// further pixels in that bucket cost nothing. So memory is at most
/// `min(4 B × pixels, 512 KiB × occupied buckets per class) + 3 MiB` of bucket headers:
/// for BrainMRI's 2.1·10^8 pixels at most ~850 MB, typically ~430 MB, against 1.7 GB for an
/// f64 copy or ~1 GB for scores plus labels. Heavily tied maps (quantised heatmaps) go dense
/// quickly and use far less.
///
/// Independent accumulators (e.g. one per worker thread) can be combined with
/// [`merge`](Self::merge).
#[derive(Debug, Clone)]
pub struct PixelAucAccumulator {
    /// `[negatives, positives]`, each `BUCKETS` buckets indexed by the key's top 16 bits.
    classes: [Vec<Bucket>; 2],
    counts: [u64; 2],
    images: usize,
}

impl Default for PixelAucAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl PixelAucAccumulator {
    /// An empty accumulator (no maps added).
    pub fn new() -> Self {
        Self {
            classes: [
                (0..BUCKETS).map(|_| Bucket::default()).collect(),
                (0..BUCKETS).map(|_| Bucket::default()).collect(),
            ],
            counts: [0, 0],
            images: 0,
        }
    }

    /// Adds one map and its per-pixel labels (`true` = anomalous pixel). Both are the same
    /// pixels in the same order (e.g. row-major 240×240). On error nothing is added.
    pub fn add(&mut self, map: &[f32], mask: &[bool]) -> Result<(), AucError> {
        if map.len() != mask.len() {
            return Err(AucError::LengthMismatch {
                scores: map.len(),
                labels: mask.len(),
            });
        }
        self.check_nan(map)?;
        for (&s, &l) in map.iter().zip(mask) {
            self.push(s, l);
        }
        self.images += 1;
        Ok(())
    }

    /// Adds one map whose pixels all carry `label` (a normal image: `false`). On error nothing
    /// is added.
    pub fn add_uniform(&mut self, map: &[f32], label: bool) -> Result<(), AucError> {
        self.check_nan(map)?;
        for &s in map {
            self.push(s, label);
        }
        self.images += 1;
        Ok(())
    }

    fn check_nan(&self, map: &[f32]) -> Result<(), AucError> {
        match map.iter().position(|s| s.is_nan()) {
            Some(pixel) => Err(AucError::NanPixel {
                image: self.images,
                pixel,
            }),
            None => Ok(()),
        }
    }

    #[inline]
    fn push(&mut self, score: f32, label: bool) {
        let key = order_key(score);
        let class = label as usize;
        self.classes[class][(key >> 16) as usize].push(key as u16);
        self.counts[class] += 1;
    }

    /// Adds everything another accumulator holds (so work can be split across threads).
    pub fn merge(&mut self, other: &PixelAucAccumulator) {
        for class in 0..2 {
            for (mine, theirs) in self.classes[class]
                .iter_mut()
                .zip(other.classes[class].iter())
            {
                if !theirs.is_empty() {
                    mine.merge_from(theirs);
                }
            }
            self.counts[class] += other.counts[class];
        }
        self.images += other.images;
    }

    /// Number of maps added.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Number of positive (anomalous) pixels added.
    pub fn positives(&self) -> u64 {
        self.counts[1]
    }

    /// Number of negative (normal) pixels added.
    pub fn negatives(&self) -> u64 {
        self.counts[0]
    }

    /// Heap bytes held by the pixel store (excluding the fixed bucket headers).
    pub fn heap_bytes(&self) -> usize {
        self.classes
            .iter()
            .flat_map(|c| c.iter())
            .map(Bucket::bytes)
            .sum()
    }

    /// The exact pooled AUC of everything added so far. Takes `&mut self` only to sort the
    /// buckets in place; the accumulator stays valid and more maps may be added afterwards.
    pub fn auc(&mut self) -> Result<f64, AucError> {
        let (pos_total, neg_total) = (self.counts[1], self.counts[0]);
        if pos_total == 0 || neg_total == 0 {
            return finish_u2(0, pos_total, neg_total);
        }
        let [neg_buckets, pos_buckets] = &mut self.classes;
        let mut u2: u128 = 0;
        let mut neg_below: u64 = 0;
        let (mut pos_runs, mut neg_runs) = (Vec::new(), Vec::new());
        for (nb, pb) in neg_buckets.iter_mut().zip(pos_buckets.iter_mut()) {
            if pb.is_empty() {
                neg_below += nb.total();
                continue;
            }
            pb.runs(&mut pos_runs);
            nb.runs(&mut neg_runs);
            let mut j = 0usize;
            for &(low, count) in &pos_runs {
                while j < neg_runs.len() && neg_runs[j].0 < low {
                    neg_below += neg_runs[j].1;
                    j += 1;
                }
                let eq = match neg_runs.get(j) {
                    Some(&(l, c)) if l == low => c,
                    _ => 0,
                };
                u2 += count as u128 * (2 * neg_below as u128 + eq as u128);
            }
            // The rest of this bucket's negatives lie below every later positive.
            neg_below += neg_runs[j..].iter().map(|r| r.1).sum::<u64>();
        }
        debug_assert_eq!(neg_below, neg_total);
        finish_u2(u2, pos_total, neg_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force pairwise Mann–Whitney, the definition itself.
    fn brute(scores: &[f32], labels: &[bool]) -> f64 {
        let mut u2 = 0u64;
        let (mut p, mut n) = (0u64, 0u64);
        for (i, (&si, &li)) in scores.iter().zip(labels).enumerate() {
            if li {
                p += 1;
            } else {
                n += 1;
                continue;
            }
            for (j, (&sj, &lj)) in scores.iter().zip(labels).enumerate() {
                if i == j || lj {
                    continue;
                }
                if si > sj {
                    u2 += 2;
                } else if si == sj {
                    u2 += 1;
                }
            }
        }
        u2 as f64 / (2 * p * n) as f64
    }

    #[test]
    fn order_key_preserves_order_and_ties() {
        let vals = [
            f32::NEG_INFINITY,
            -3.0e38,
            -1.0,
            -1.0e-45,
            -0.0,
            0.0,
            1.0e-45,
            0.5,
            1.0,
            3.0e38,
            f32::INFINITY,
        ];
        for &a in &vals {
            for &b in &vals {
                assert_eq!(
                    a.partial_cmp(&b).unwrap(),
                    order_key(a).cmp(&order_key(b)),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn matches_brute_force_on_small_tied_sets() {
        // Deterministic pseudo-random sets with heavy ties.
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50 {
            let n = 2 + (next() % 60) as usize;
            let scores: Vec<f32> = (0..n).map(|_| (next() % 7) as f32 * 0.25 - 0.5).collect();
            let mut labels: Vec<bool> = (0..n).map(|_| next() % 3 == 0).collect();
            labels[0] = true;
            labels[1] = false;
            let a = roc_auc(&scores, &labels).unwrap();
            assert_eq!(a, brute(&scores, &labels));
            let mut acc = PixelAucAccumulator::new();
            acc.add(&scores, &labels).unwrap();
            assert_eq!(acc.auc().unwrap(), a);
        }
    }

    #[test]
    fn dense_buckets_give_the_same_result() {
        // More than DENSE_AT equal-bucket values in both classes forces the dense path.
        let n = 2 * DENSE_AT + 1000;
        let scores: Vec<f32> = (0..n).map(|i| 0.5 + (i % 97) as f32 * 1e-7).collect();
        let labels: Vec<bool> = (0..n).map(|i| (i * 7919) % 5 == 0).collect();
        let one_shot = roc_auc(&scores, &labels).unwrap();
        let mut acc = PixelAucAccumulator::new();
        acc.add(&scores[..n / 2], &labels[..n / 2]).unwrap();
        acc.add(&scores[n / 2..], &labels[n / 2..]).unwrap();
        assert!(acc.classes[0].iter().any(|b| matches!(b, Bucket::Dense(_))));
        assert_eq!(acc.auc().unwrap(), one_shot);
    }
}
