//! Which unlabelled image to label next: the next-sample strategies of active learning, as
//! MONAI Label offers them (most uncertain, most anomalous, random). Each proposal comes with
//! the reason, in words, for the status bar.
use rand::Rng;

/// How the next image to label is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum LabelStrategy {
    /// The image whose calibrated score lies closest to the threshold: the detector's least
    /// certain decision.
    #[default]
    NearThreshold,
    /// The image where the zero-shot and few-shot branches disagree most (each in normal
    /// spreads of its own calibration).
    Disagreement,
    /// The most anomalous unlabelled image: a likely abnormal shot, or a false alarm to
    /// correct.
    MostAnomalous,
    /// An unlabelled image drawn at random (from the fit seed), whether scored or not.
    Random,
}

impl LabelStrategy {
    /// Every strategy, in the order the Model tab lists them.
    pub const ALL: [LabelStrategy; 4] = [
        LabelStrategy::NearThreshold,
        LabelStrategy::Disagreement,
        LabelStrategy::MostAnomalous,
        LabelStrategy::Random,
    ];

    /// The name a menu shows.
    pub fn label(self) -> &'static str {
        match self {
            LabelStrategy::NearThreshold => "Most uncertain (nearest the threshold)",
            LabelStrategy::Disagreement => "Most uncertain (branches disagree)",
            LabelStrategy::MostAnomalous => "Most anomalous",
            LabelStrategy::Random => "Random",
        }
    }
}

/// An unlabelled image that could be proposed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Candidate {
    /// Calibrated image score (`None`: not scored, or no calibration).
    pub score: Option<f32>,
    /// Zero-shot and few-shot image scores in normal spreads of their calibration.
    pub branches: Option<(f32, f32)>,
}

/// The proposed image: its index among the candidates, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Index into the candidates.
    pub index: usize,
    /// Why it was chosen, for the status bar.
    pub reason: String,
}

/// Why nothing could be proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoProposal {
    /// No unlabelled image.
    #[error("every image is labelled")]
    AllLabelled,
    /// The strategy needs scores and no unlabelled image has one.
    #[error(
        "no unlabelled image has a calibrated score yet; wait for scoring, or label next at random"
    )]
    NotScored,
    /// The strategy needs a threshold and the detector has none.
    #[error(
        "the detector has no threshold yet (label a normal image first), or label next at random"
    )]
    NoThreshold,
    /// The strategy needs both branches calibrated.
    #[error(
        "the two branches are not both calibrated (the few-shot branch needs normal shots); choose another strategy"
    )]
    NoBranches,
}

/// Picks the candidate `strategy` prefers; ties go to the first in the given order.
/// `threshold` is the decision threshold; `draw` seeds the random strategy (the fit seed and a
/// counter, so that the same labels give the same proposals).
pub fn propose(
    candidates: &[Candidate],
    strategy: LabelStrategy,
    threshold: Option<f32>,
    draw: (u64, u64),
) -> Result<Proposal, NoProposal> {
    if candidates.is_empty() {
        return Err(NoProposal::AllLabelled);
    }
    let best = |key: &dyn Fn(&Candidate) -> Option<f32>| {
        candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| key(c).filter(|v| v.is_finite()).map(|v| (i, v)))
            .fold(None, |best: Option<(usize, f32)>, (i, v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((i, v)),
            })
    };
    match strategy {
        LabelStrategy::NearThreshold => {
            let t = threshold.ok_or(NoProposal::NoThreshold)?;
            let (index, _) =
                best(&|c| c.score.map(|s| -(s - t).abs())).ok_or(NoProposal::NotScored)?;
            let score = candidates[index].score.unwrap_or(f32::NAN);
            Ok(Proposal {
                index,
                reason: format!(
                    "its score {score:.2} is the nearest to the threshold {t:.2} of all unlabelled images: the detector is least sure of it"
                ),
            })
        }
        LabelStrategy::Disagreement => {
            if candidates.iter().all(|c| c.branches.is_none()) {
                return Err(if candidates.iter().any(|c| c.score.is_some()) {
                    NoProposal::NoBranches
                } else {
                    NoProposal::NotScored
                });
            }
            let (index, gap) =
                best(&|c| c.branches.map(|(z, f)| (z - f).abs())).ok_or(NoProposal::NotScored)?;
            let (zero, few) = candidates[index].branches.unwrap_or_default();
            Ok(Proposal {
                index,
                reason: format!(
                    "its branches disagree the most of all unlabelled images: zero-shot {zero:.2}, few-shot {few:.2} normal spreads (gap {gap:.2})"
                ),
            })
        }
        LabelStrategy::MostAnomalous => {
            let (index, score) = best(&|c| c.score).ok_or(NoProposal::NotScored)?;
            Ok(Proposal {
                index,
                reason: format!("it is the most anomalous unlabelled image (score {score:.2})"),
            })
        }
        LabelStrategy::Random => {
            let (seed, counter) = draw;
            let mut rng = crate::rng::seeded(seed, crate::rng::Stream::LabelNext);
            rng.set_word_pos(u128::from(counter) * 16);
            let index = rng.random_range(0..candidates.len());
            Ok(Proposal {
                index,
                reason: format!(
                    "drawn at random from {} unlabelled image(s) (seed {seed}, draw {counter})",
                    candidates.len()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(score: f32, branches: (f32, f32)) -> Candidate {
        Candidate {
            score: Some(score),
            branches: Some(branches),
        }
    }

    #[test]
    fn each_strategy_picks_its_image_and_says_why() {
        let c = [
            Candidate::default(),
            scored(1.0, (0.0, 0.5)),
            scored(2.8, (4.0, 0.0)),
            scored(9.0, (9.0, 8.5)),
        ];
        let near = propose(&c, LabelStrategy::NearThreshold, Some(3.0), (1, 0)).unwrap();
        assert_eq!(near.index, 2);
        assert!(
            near.reason.contains("2.80") && near.reason.contains("3.00"),
            "{}",
            near.reason
        );
        let gap = propose(&c, LabelStrategy::Disagreement, Some(3.0), (1, 0)).unwrap();
        assert_eq!(gap.index, 2);
        assert!(gap.reason.contains("gap 4.00"), "{}", gap.reason);
        let top = propose(&c, LabelStrategy::MostAnomalous, None, (1, 0)).unwrap();
        assert_eq!(top.index, 3);
        assert!(top.reason.contains("9.00"), "{}", top.reason);
    }

    #[test]
    fn random_draws_follow_the_seed_and_cover_the_candidates() {
        let c = [Candidate::default(); 5];
        let draw = |seed, n| {
            propose(&c, LabelStrategy::Random, None, (seed, n))
                .unwrap()
                .index
        };
        let first: Vec<usize> = (0..40).map(|n| draw(3, n)).collect();
        assert_eq!(first, (0..40).map(|n| draw(3, n)).collect::<Vec<_>>());
        assert_ne!(first, (0..40).map(|n| draw(4, n)).collect::<Vec<_>>());
        for i in 0..5 {
            assert!(first.contains(&i), "{first:?}");
        }
    }

    #[test]
    fn missing_scores_threshold_or_branches_are_told() {
        let unscored = [Candidate::default()];
        let e = propose(&unscored, LabelStrategy::MostAnomalous, None, (1, 0)).unwrap_err();
        assert_eq!(e, NoProposal::NotScored);
        let e = propose(&unscored, LabelStrategy::NearThreshold, None, (1, 0)).unwrap_err();
        assert_eq!(e, NoProposal::NoThreshold);
        let zero_only = [Candidate {
            score: Some(1.0),
            branches: None,
        }];
        let e = propose(&zero_only, LabelStrategy::Disagreement, None, (1, 0)).unwrap_err();
        assert_eq!(e, NoProposal::NoBranches);
        let e = propose(&[], LabelStrategy::Random, None, (1, 0)).unwrap_err();
        assert_eq!(e.to_string(), "every image is labelled");
    }
}
