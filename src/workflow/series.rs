//! Series and study scores, and context across slices.
//!
//! A radiologist reads a series (a stack of slices) and a study (several series). A series
//! score comes from the image scores of its slices, in slice order:
//! - `max`: the most anomalous slice; one lesion on one slice is enough;
//! - `top_mean`: the mean of the [`TOP_K`] highest slices, which one noisy slice cannot carry
//!   alone.
//!
//! Both are shown. The one the Results tab sorts by and `series.csv` calls `series_score` is
//! [`SERIES_RULE`]; the measurement behind the choice is `mvfa-dev slice-context` (see the
//! README). A study score is the highest series score of the study.
//!
//! [`SliceContext`] optionally mixes each slice's map and score with its neighbours along the
//! slice axis. It is off by default: see [`SliceContext::default`].

/// Slices whose scores the top-k mean averages.
pub const TOP_K: usize = 3;

/// How a series score is made from its slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeriesRule {
    /// The highest slice score.
    Max,
    /// The mean of the [`TOP_K`] highest slice scores (all of them when fewer).
    TopMean,
}

/// The rule the series score uses. Measured on synthetic volumes by `mvfa-dev slice-context`:
/// the maximum ranks series as well as the top-3 mean or better, and it says which slice
/// made the series anomalous, so that J goes to it.
pub const SERIES_RULE: SeriesRule = SeriesRule::Max;

impl SeriesRule {
    /// Column name and label.
    pub fn name(self) -> &'static str {
        match self {
            SeriesRule::Max => "max",
            SeriesRule::TopMean => "top3_mean",
        }
    }
}

/// The score of one series from its slices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesScore {
    /// Slices in the series.
    pub slices: usize,
    /// Slices that have a score.
    pub scored: usize,
    /// The highest slice score.
    pub max: f32,
    /// The mean of the [`TOP_K`] highest slice scores.
    pub top_mean: f32,
    /// Index in slice order of the highest slice (the first of equal ones).
    pub peak: usize,
    /// Slices at or above the threshold, when one was given.
    pub flagged: Option<usize>,
}

impl SeriesScore {
    /// The series score by [`SERIES_RULE`].
    pub fn score(&self) -> f32 {
        self.by(SERIES_RULE)
    }

    /// The series score by `rule`.
    pub fn by(&self, rule: SeriesRule) -> f32 {
        match rule {
            SeriesRule::Max => self.max,
            SeriesRule::TopMean => self.top_mean,
        }
    }
}

/// The score of a series from its slices' scores in slice order (`None`: not scored yet);
/// `None` when no slice has a finite score. `threshold` counts the flagged slices.
pub fn series_score(slices: &[Option<f32>], threshold: Option<f32>) -> Option<SeriesScore> {
    let mut scored: Vec<(usize, f32)> = slices
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.filter(|v| v.is_finite()).map(|v| (i, v)))
        .collect();
    if scored.is_empty() {
        return None;
    }
    // Highest first; equal scores keep slice order, so the peak is the first of them.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = &scored[..scored.len().min(TOP_K)];
    let top_mean = top.iter().map(|&(_, v)| f64::from(v)).sum::<f64>() / top.len() as f64;
    Some(SeriesScore {
        slices: slices.len(),
        scored: scored.len(),
        max: scored[0].1,
        top_mean: top_mean as f32,
        peak: scored[0].0,
        flagged: threshold.map(|t| scored.iter().filter(|&&(_, v)| v >= t).count()),
    })
}

/// A study's score: the highest score of its series (`None` when none is scored).
pub fn study_score<'a>(series: impl IntoIterator<Item = &'a SeriesScore>) -> Option<f32> {
    series
        .into_iter()
        .map(SeriesScore::score)
        .fold(None, |best, s| Some(best.map_or(s, |b: f32| b.max(s))))
}

/// Context across slices: each slice's map and score mixed with those of the adjacent slices
/// (the one before and the one after, in geometric order) of the same series.
///
/// Both mixes are unchanged by adding a constant to every value or multiplying by a positive
/// one, so they suit calibrated values (which are negative below the normal mean) as well as
/// raw ones.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, Default)]
pub enum SliceContext {
    /// Each slice on its own. The default: on the synthetic volumes `mvfa-dev slice-context`
    /// draws, neither mix raised both image and pixel AUC over every seed.
    #[default]
    Off,
    /// `v + w * max(0, neighbour - v)` with the higher neighbour: a weighted maximum. A
    /// lesion seen strongly on one slice lifts its faint edge on the next.
    WeightedMax {
        /// Weight `w` in 0..=1 of the neighbour's excess.
        weight: f32,
    },
    /// `(1 - w) * v + w * mean(neighbours)`: smoothing along the slice axis, which weakens
    /// what one slice alone shows and keeps what several show.
    WeightedMean {
        /// Weight `w` in 0..=1 of the neighbours.
        weight: f32,
    },
}

impl SliceContext {
    /// A short description for tables and logs.
    pub fn describe(&self) -> String {
        match self {
            SliceContext::Off => "off".into(),
            SliceContext::WeightedMax { weight } => format!("weighted max w={weight}"),
            SliceContext::WeightedMean { weight } => format!("weighted mean w={weight}"),
        }
    }

    /// The value of a slice with value `own` between neighbours `before` and `after`.
    fn mix(&self, own: f32, before: Option<f32>, after: Option<f32>) -> f32 {
        let neighbours = before.into_iter().chain(after).filter(|v| v.is_finite());
        match *self {
            SliceContext::Off => own,
            SliceContext::WeightedMax { weight } => {
                let high = neighbours.fold(own, f32::max);
                own + weight * (high - own)
            }
            SliceContext::WeightedMean { weight } => {
                let (sum, n) = neighbours.fold((0.0f32, 0usize), |(s, n), v| (s + v, n + 1));
                if n == 0 {
                    own
                } else {
                    (1.0 - weight) * own + weight * sum / n as f32
                }
            }
        }
    }

    /// Mixes a series of scores in slice order; unscored slices (`None`) stay unscored and
    /// count as absent neighbours.
    pub fn scores(&self, slices: &[Option<f32>]) -> Vec<Option<f32>> {
        (0..slices.len())
            .map(|i| {
                let own = slices[i]?;
                let before = i.checked_sub(1).and_then(|j| slices[j]);
                let after = slices.get(i + 1).copied().flatten();
                Some(self.mix(own, before, after))
            })
            .collect()
    }

    /// Mixes a series of maps (each `S*S`, row-major, all of one size) in slice order, pixel
    /// by pixel; a missing map (`None`) stays missing and counts as an absent neighbour.
    pub fn maps(&self, slices: &[Option<&[f32]>]) -> Vec<Option<Vec<f32>>> {
        (0..slices.len())
            .map(|i| {
                let own = slices[i]?;
                let before = i.checked_sub(1).and_then(|j| slices[j]);
                let after = slices.get(i + 1).copied().flatten();
                Some(
                    own.iter()
                        .enumerate()
                        .map(|(p, &v)| {
                            self.mix(
                                v,
                                before.and_then(|m| m.get(p).copied()),
                                after.and_then(|m| m.get(p).copied()),
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_score_takes_max_and_top_mean_with_the_peak() {
        let s = series_score(
            &[Some(1.0), None, Some(5.0), Some(3.0), Some(5.0)],
            Some(3.0),
        )
        .unwrap();
        assert_eq!((s.slices, s.scored, s.max, s.peak), (5, 4, 5.0, 2));
        assert!((s.top_mean - 13.0 / 3.0).abs() < 1e-6);
        assert_eq!(s.flagged, Some(3));
        let two = series_score(&[Some(2.0), Some(4.0)], None).unwrap();
        assert_eq!((two.top_mean, two.flagged), (3.0, None));
        assert!(series_score(&[None, Some(f32::NAN)], None).is_none());
        let studies = [s, two];
        assert_eq!(study_score(&studies), Some(5.0));
        assert_eq!(study_score(&[]), None);
    }

    #[test]
    fn context_off_changes_nothing_and_mixes_are_shift_invariant() {
        let scores = [Some(0.0), Some(4.0), None, Some(-2.0), Some(1.0)];
        assert_eq!(SliceContext::Off.scores(&scores), scores.to_vec());
        for context in [
            SliceContext::WeightedMax { weight: 0.5 },
            SliceContext::WeightedMean { weight: 0.5 },
        ] {
            let shifted: Vec<_> = scores.iter().map(|s| s.map(|v| v * 2.0 - 7.0)).collect();
            let a = context.scores(&scores);
            let b = context.scores(&shifted);
            for (x, y) in a.iter().zip(&b) {
                match (x, y) {
                    (Some(x), Some(y)) => assert!((x * 2.0 - 7.0 - y).abs() < 1e-5),
                    (None, None) => {}
                    _ => panic!("{a:?} vs {b:?}"),
                }
            }
        }
        let max = SliceContext::WeightedMax { weight: 0.5 }.scores(&scores);
        assert_eq!(max, [Some(2.0), Some(4.0), None, Some(-0.5), Some(1.0)]);
        let mean = SliceContext::WeightedMean { weight: 0.5 }.scores(&scores);
        assert_eq!(mean, [Some(2.0), Some(2.0), None, Some(-0.5), Some(-0.5)]);
    }

    #[test]
    fn context_maps_mix_pixel_by_pixel() {
        let a = [0.0, 1.0];
        let b = [2.0, 1.0];
        let out = SliceContext::WeightedMax { weight: 1.0 }.maps(&[Some(&a), None, Some(&b)]);
        assert_eq!(out[0].as_deref(), Some(&a[..]));
        assert!(out[1].is_none());
        let out = SliceContext::WeightedMean { weight: 0.5 }.maps(&[Some(&a), Some(&b)]);
        assert_eq!(out[0].as_deref(), Some(&[1.0, 1.0][..]));
        assert_eq!(out[1].as_deref(), Some(&[1.0, 1.0][..]));
    }
}
