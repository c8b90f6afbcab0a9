//! The node's two workers: the scorer, which turns complete series into result objects with
//! the route's detector, and the sender, which delivers committed results with back-off.
//! Both take their work from the journal only, so a restart resumes exactly where the last
//! process stopped.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{Route, ServeConfig, Target};
use super::journal::{Journal, PendingResult, ResultObject, SeriesJob, now};
use super::metrics::Metrics;
use crate::backend::BackendInfo;
use crate::io::export::write_atomically;
use crate::io::output::InputSet;
use crate::workflow::{
    DicomExport, ExportOptions, Exported, Exporter, FileScorer, export_files, open_scorer,
    results_sr_name,
};

/// Scoring attempts of one series before it is marked failed.
const MAX_SCORING_ATTEMPTS: u32 = 3;
/// Pause of an idle worker between looks at the journal.
const IDLE: Duration = Duration::from_millis(200);

/// What both workers share.
pub struct Workers {
    /// The configuration.
    pub config: Arc<ServeConfig>,
    /// The journal.
    pub journal: Arc<Mutex<Journal>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The backend detectors run on.
    pub backend: BackendInfo,
    /// The de-identification of results.
    pub dicom: DicomExport,
    /// Set to stop both workers.
    pub stop: Arc<AtomicBool>,
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn results_dir(&self) -> PathBuf {
        self.config.node.data_dir.join("results")
    }

    /// Scores complete series until stopped.
    pub fn score_loop(&self) {
        let mut scorers: HashMap<String, Box<dyn FileScorer>> = HashMap::new();
        // Open every detector now, not when its first series is complete: opening rebuilds
        // the memory bank, which takes minutes with ViT-L on a CPU. One that fails is tried
        // again for its first series, which then fails with the reason.
        for route in &self.config.routes {
            if let Err(SeriesError::Permanent(reason) | SeriesError::Retry(reason)) =
                self.scorer(route, &mut scorers)
            {
                tracing::error!(route = route.name, reason, "detector not opened");
            }
        }
        while !self.stop.load(Ordering::Relaxed) {
            let job = {
                let mut j = self.lock();
                j.promote(self.config.node.quiet_seconds)
                    .and_then(|_| j.next_ready())
            };
            match job {
                Ok(Some(job)) => self.score_series(&job, &mut scorers),
                Ok(None) => std::thread::sleep(IDLE),
                Err(e) => {
                    tracing::error!(error = %e, "journal unavailable to the scorer");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn score_series(&self, job: &SeriesJob, scorers: &mut HashMap<String, Box<dyn FileScorer>>) {
        let series = job.series_uid.as_str();
        let Some(route) = self.config.route_for(&job.facts) else {
            let reason = format!(
                "no route matches modality {:?}, body part {:?}, description {:?}: stored, not scored",
                job.facts.modality, job.facts.body_part, job.facts.description
            );
            tracing::info!(series_uid = series, reason, "series unmatched");
            Metrics::inc(&self.metrics.unmatched);
            self.journal_write(|j| j.finish_without_results(series, "unmatched", &reason));
            return;
        };
        if job.attempts >= MAX_SCORING_ATTEMPTS {
            let reason = format!("scoring failed {} times; giving up", job.attempts);
            self.give_up(series, route, &reason);
            return;
        }
        if !self.journal_write(|j| j.start_scoring(series, &route.name)) {
            return;
        }
        let started = Instant::now();
        let outcome = self
            .scorer(route, scorers)
            .and_then(|scorer| self.run_series(job, scorer));
        match outcome {
            Ok((results, frames, failures)) => {
                let seconds = started.elapsed().as_secs_f64();
                let detail = format!(
                    "route {}: {frames} frame(s) scored, {} unreadable, {} result object(s), {seconds:.2} s",
                    route.name,
                    failures.len(),
                    results.len()
                );
                if self.journal_write(|j| j.record_results(series, &results, &detail)) {
                    Metrics::inc(&self.metrics.scored);
                    self.metrics.observe_scoring(seconds);
                    tracing::info!(
                        series_uid = series,
                        route = route.name,
                        frames,
                        unreadable = failures.len(),
                        results = results.len(),
                        seconds,
                        "series scored"
                    );
                    for f in failures {
                        tracing::warn!(series_uid = series, error = f, "instance not scored");
                    }
                }
            }
            Err(SeriesError::Permanent(reason)) => self.give_up(series, route, &reason),
            Err(SeriesError::Retry(reason)) => {
                tracing::warn!(
                    series_uid = series,
                    route = route.name,
                    reason,
                    "scoring failed; will retry"
                );
                self.journal_write(|j| j.retry_later(series, &reason));
            }
        }
    }

    /// Ends a series as failed, with the reason in the log and the journal.
    fn give_up(&self, series: &str, route: &Route, reason: &str) {
        tracing::error!(
            series_uid = series,
            route = route.name,
            reason,
            "series failed"
        );
        Metrics::inc(&self.metrics.failed);
        self.journal_write(|j| j.finish_without_results(series, "failed", reason));
    }

    /// Runs a journal update; logs and returns false when it fails.
    fn journal_write(
        &self,
        f: impl FnOnce(&mut Journal) -> Result<(), super::journal::JournalError>,
    ) -> bool {
        match f(&mut self.lock()) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "journal update failed");
                false
            }
        }
    }

    fn scorer<'s>(
        &self,
        route: &Route,
        scorers: &'s mut HashMap<String, Box<dyn FileScorer>>,
    ) -> Result<&'s dyn FileScorer, SeriesError> {
        if !scorers.contains_key(&route.name) {
            let started = Instant::now();
            let scorer = open_scorer(&route.scorer_spec(), &self.backend).map_err(|e| {
                SeriesError::Permanent(format!(
                    "cannot open the detector of route {}: {e}",
                    route.name
                ))
            })?;
            tracing::info!(
                route = route.name,
                seconds = started.elapsed().as_secs_f64(),
                detector = scorer.info().description,
                "detector opened"
            );
            scorers.insert(route.name.clone(), scorer);
        }
        Ok(scorers[&route.name].as_ref())
    }

    /// Scores one series into a fresh attempt folder; returns its result objects, the frames
    /// scored and the unreadable inputs.
    fn run_series(
        &self,
        job: &SeriesJob,
        scorer: &dyn FileScorer,
    ) -> Result<(Vec<ResultObject>, usize, Vec<String>), SeriesError> {
        let files = self
            .lock()
            .instance_paths(&job.series_uid)
            .map_err(|e| SeriesError::Retry(e.to_string()))?;
        let out = self
            .results_dir()
            .join(&job.series_uid)
            .join(format!("attempt-{}", job.attempts + 1));
        if out.exists() {
            std::fs::remove_dir_all(&out)
                .map_err(|e| SeriesError::Retry(format!("cannot clear {}: {e}", out.display())))?;
        }
        let options = ExportOptions {
            heatmap_png: false,
            overlay: false,
            dicom: Some(self.dicom.clone()),
            ..ExportOptions::default()
        };
        let info = scorer.info();
        let inputs = InputSet::new(files.iter().map(PathBuf::as_path));
        let mut exporter = Exporter::new(&out, options, info.facts.clone(), inputs)
            .map_err(|e| SeriesError::Retry(e.to_string()))?;
        let mut failures = Vec::new();
        let mut frames = 0;
        export_files(scorer, &files, &mut exporter, &mut |event| match event {
            Exported::Failed(e) => failures.push(e.to_string()),
            Exported::Written(..) => frames += 1,
        })
        .map_err(|e| SeriesError::Retry(e.to_string()))?;
        if frames == 0 {
            return Err(SeriesError::Permanent(format!(
                "no frame of the series could be scored: {}",
                failures.first().map_or("no instance", String::as_str)
            )));
        }
        let summary = exporter
            .finish()
            .map_err(|e| SeriesError::Retry(e.to_string()))?;
        for note in &summary.notes {
            tracing::info!(series_uid = job.series_uid, note, "export note");
        }
        let mut results: Vec<ResultObject> = summary
            .objects
            .iter()
            .map(|(path, o)| ResultObject {
                sop_uid: o.sop_instance_uid.clone(),
                path: path.clone(),
            })
            .collect();
        for (i, report) in summary.reports.iter().enumerate() {
            results.push(ResultObject {
                sop_uid: report.object.sop_instance_uid.clone(),
                path: out.join(results_sr_name(i + 1)),
            });
        }
        Ok((results, frames, failures))
    }

    /// Delivers committed results until stopped; a destination that fails is left alone for
    /// a back-off that doubles per attempt, from 2 s up to `max_retry_seconds`.
    pub fn send_loop(&self) {
        let mut down_until: HashMap<String, f64> = HashMap::new();
        while !self.stop.load(Ordering::Relaxed) {
            let due = match self.lock().due_results(64) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "journal unavailable to the sender");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let mut sent_any = false;
            for result in &due {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Some(dest) = self
                    .config
                    .routes
                    .iter()
                    .find(|r| r.name == result.route)
                    .and_then(|r| self.config.destination(&r.destination))
                else {
                    let reason = format!("route {:?} is no longer configured", result.route);
                    self.journal_write(|j| j.send_failed(result, &reason, 3600.0));
                    continue;
                };
                if down_until.get(&dest.name).is_some_and(|t| *t > now()) {
                    continue;
                }
                match self.deliver(result, dest) {
                    Ok(()) => {
                        down_until.remove(&dest.name);
                        sent_any = true;
                        Metrics::inc(&self.metrics.sent);
                        tracing::info!(
                            sop_uid = result.sop_uid,
                            series_uid = result.series_uid,
                            destination = dest.name,
                            "result sent"
                        );
                        self.journal_write(|j| j.mark_sent(result, &dest.name));
                    }
                    Err(reason) => {
                        let wait = backoff(result.attempts, self.config.node.max_retry_seconds);
                        down_until.insert(dest.name.clone(), now() + wait);
                        Metrics::inc(&self.metrics.send_failures);
                        tracing::warn!(
                            sop_uid = result.sop_uid,
                            destination = dest.name,
                            reason,
                            retry_in_seconds = wait,
                            "send failed; results wait on disk"
                        );
                        self.journal_write(|j| j.send_failed(result, &reason, wait));
                    }
                }
            }
            if !sent_any {
                std::thread::sleep(IDLE);
            }
        }
    }

    fn deliver(
        &self,
        result: &PendingResult,
        dest: &super::config::Destination,
    ) -> Result<(), String> {
        match dest.target(&self.config.node.ae_title)? {
            Target::Folder(dir) => copy_to_folder(&result.path, &dir, &result.sop_uid),
            Target::Node(node) => {
                let client = crate::pacs::connect(&node).map_err(|e| e.to_string())?;
                client
                    .store(&result.path)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Seconds to wait after the `attempts`-th failed send (0-based): 2, 4, 8, ... up to `max`.
fn backoff(attempts: u32, max: f64) -> f64 {
    (2f64.powi(attempts.min(30) as i32 + 1)).min(max)
}

fn copy_to_folder(file: &Path, dir: &Path, sop_uid: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    write_atomically(&dir.join(format!("{sop_uid}.dcm")), |w| {
        Ok(w.write_all(&bytes)?)
    })
    .map_err(|e| e.to_string())
}

/// Why a series was not scored.
enum SeriesError {
    /// Retrying cannot help (no detector, nothing readable).
    Permanent(String),
    /// It may work next time (disk full, a model error).
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn back_off_doubles_up_to_the_limit() {
        let waits: Vec<f64> = (0..10).map(|a| backoff(a, 300.0)).collect();
        assert_eq!(waits[..4], [2.0, 4.0, 8.0, 16.0]);
        assert_eq!(waits[9], 300.0);
    }
}
