//! Scores by series and study, derived each frame from the browser's groups and the scored
//! frames: what the Results tab groups by, what J/K walk, what the score strip shows. Plain
//! data; the series rules are [`crate::workflow::series`].
use std::collections::HashSet;

use super::AppState;
use super::browser::GroupKind;
use super::labels::ImageKey;
use crate::workflow::{SeriesScore, series_score, study_score};

/// One series (or folder of images) with its frames' scores.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRow {
    /// Modality, number and description, or the folder's name.
    pub title: String,
    /// Its frames in slice order.
    pub frames: Vec<ImageKey>,
    /// Each frame's image score (with the slice context), `None` where not scored.
    pub scores: Vec<Option<f32>>,
    /// The series score, once a frame is scored.
    pub score: Option<SeriesScore>,
}

impl SeriesRow {
    /// The frame that scored highest.
    pub fn peak(&self) -> Option<&ImageKey> {
        self.score.map(|s| &self.frames[s.peak])
    }
}

/// One study (a folder, for images that are not DICOM) and its series, most anomalous first.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyRow {
    /// Patient and study, or the folder.
    pub title: String,
    /// Its series, by decreasing series score (unscored last, in browser order).
    pub series: Vec<SeriesRow>,
    /// The highest series score.
    pub score: Option<f32>,
}

impl AppState {
    /// The frames of browser group `group` in slice order.
    pub fn group_frames(&self, group: usize) -> Vec<ImageKey> {
        self.browser.groups[group]
            .items
            .iter()
            .flat_map(|item| {
                (0..item.frames).map(|frame| ImageKey {
                    path: item.path.clone(),
                    frame,
                })
            })
            .collect()
    }

    /// The image scores of `frames` in their order, mixed with the neighbours' when the slice
    /// context is on (`None`: not scored).
    pub fn frame_scores(&self, frames: &[ImageKey]) -> Vec<Option<f32>> {
        let own: Vec<Option<f32>> = frames
            .iter()
            .map(|k| self.model.results.get(k).map(|s| s.score()))
            .collect();
        self.model.view.slice_context.scores(&own)
    }

    /// Every study with its series and scores, most anomalous first. Scored frames that are
    /// no longer in the browser (a project's results of a moved file) come last as "Other
    /// images".
    pub fn studies(&self) -> Vec<StudyRow> {
        let threshold = self.model.score_threshold();
        let row = |title: String, frames: Vec<ImageKey>| {
            let scores = self.frame_scores(&frames);
            SeriesRow {
                title,
                score: series_score(&scores, threshold),
                frames,
                scores,
            }
        };
        let mut studies: Vec<StudyRow> = Vec::new();
        let mut listed: HashSet<&ImageKey> = HashSet::new();
        for (g, group) in self.browser.groups.iter().enumerate() {
            let (study, series) = match &group.kind {
                GroupKind::Series {
                    patient,
                    study,
                    series,
                    ..
                } => (format!("{patient} · {study}"), series.clone()),
                GroupKind::Folder(folder) => (
                    format!("Folder {}", folder.display()),
                    folder.file_name().map_or_else(
                        || folder.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    ),
                ),
            };
            let frames = self.group_frames(g);
            let series = row(series, frames);
            match studies.iter_mut().find(|s| s.title == study) {
                Some(s) => s.series.push(series),
                None => studies.push(StudyRow {
                    title: study,
                    series: vec![series],
                    score: None,
                }),
            }
        }
        for study in &studies {
            for series in &study.series {
                listed.extend(series.frames.iter());
            }
        }
        let mut others: Vec<ImageKey> = self
            .model
            .results
            .keys()
            .filter(|k| !listed.contains(k))
            .cloned()
            .collect();
        if !others.is_empty() {
            others.sort();
            studies.push(StudyRow {
                title: "Other images".into(),
                series: vec![row("Not in the browser".into(), others)],
                score: None,
            });
        }
        let by_score = |a: Option<f32>, b: Option<f32>| match (a, b) {
            (Some(a), Some(b)) => b.total_cmp(&a),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        for study in &mut studies {
            // Stable sorts: equal and unscored ones keep browser order.
            study
                .series
                .sort_by(|a, b| by_score(a.score.map(|s| s.score()), b.score.map(|s| s.score())));
            study.score = study_score(study.series.iter().filter_map(|s| s.score.as_ref()));
        }
        studies.sort_by(|a, b| by_score(a.score, b.score));
        studies
    }

    /// The series of every study, most anomalous first across studies.
    pub fn series_by_score(&self) -> Vec<SeriesRow> {
        let mut series: Vec<SeriesRow> = self
            .studies()
            .into_iter()
            .flat_map(|s| s.series)
            .filter(|s| s.score.is_some())
            .collect();
        series.sort_by(|a, b| {
            let (a, b) = (a.score.map(|s| s.score()), b.score.map(|s| s.score()));
            b.unwrap_or(f32::NEG_INFINITY)
                .total_cmp(&a.unwrap_or(f32::NEG_INFINITY))
        });
        series
    }

    /// What J and K walk: the series by decreasing series score, and within each series its
    /// scored frames by decreasing score (the peak first). With the index in this order where
    /// each series starts.
    pub fn reading_order(&self) -> (Vec<ImageKey>, Vec<usize>) {
        let mut order = Vec::new();
        let mut starts = Vec::new();
        for series in self.series_by_score() {
            starts.push(order.len());
            let mut frames: Vec<(usize, f32)> = series
                .scores
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.map(|s| (i, s)))
                .collect();
            frames.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            order.extend(frames.into_iter().map(|(i, _)| series.frames[i].clone()));
        }
        (order, starts)
    }
}
