//! The node's counters, rendered in the Prometheus text format at `/metrics`. Counters count
//! since the process started (Prometheus handles resets); the queue gauges are read from the
//! journal, so they are right after a restart too.
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::journal::Counts;

/// Upper bounds (seconds) of the scoring-time histogram buckets.
const SCORING_BUCKETS: [f64; 10] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Every counter of the node.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Instances stored over DIMSE.
    pub received_dimse: AtomicU64,
    /// Instances stored over STOW-RS.
    pub received_stow: AtomicU64,
    /// Instances received again (already stored): success, nothing done.
    pub duplicates: AtomicU64,
    /// Instances of series already scored: stored, not scored.
    pub late: AtomicU64,
    /// Instances refused because the queue was full.
    pub refused: AtomicU64,
    /// Instances rejected as malformed.
    pub rejected: AtomicU64,
    /// Series scored (results committed).
    pub scored: AtomicU64,
    /// Series that matched no route.
    pub unmatched: AtomicU64,
    /// Series whose scoring failed.
    pub failed: AtomicU64,
    /// Result objects sent.
    pub sent: AtomicU64,
    /// Failed sends (retried later).
    pub send_failures: AtomicU64,
    /// Associations open now.
    pub associations: AtomicU64,
    /// Associations rejected (caller not allowed, too many at once).
    pub associations_rejected: AtomicU64,
    scoring: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; SCORING_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time one series took to score.
    pub fn observe_scoring(&self, seconds: f64) {
        let mut h = self.scoring.lock().unwrap_or_else(|p| p.into_inner());
        for (bound, n) in SCORING_BUCKETS.iter().zip(h.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The text format, with the journal's queue gauges.
    pub fn render(&self, counts: Option<Counts>) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, series: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "mvfa_node_instances_received_total",
            "Instances stored and journaled, by protocol.",
            &[
                ("{protocol=\"dimse\"}", get(&self.received_dimse)),
                ("{protocol=\"stow\"}", get(&self.received_stow)),
            ],
        );
        counter(
            "mvfa_node_instances_duplicate_total",
            "Instances received again; answered with success, nothing stored twice.",
            &[("", get(&self.duplicates))],
        );
        counter(
            "mvfa_node_instances_late_total",
            "Instances of series already scored; stored, not scored.",
            &[("", get(&self.late))],
        );
        counter(
            "mvfa_node_instances_refused_total",
            "Instances refused because the queue was full (0xA700 or HTTP 503).",
            &[("", get(&self.refused))],
        );
        counter(
            "mvfa_node_instances_rejected_total",
            "Malformed instances rejected.",
            &[("", get(&self.rejected))],
        );
        counter(
            "mvfa_node_series_scored_total",
            "Series scored, results committed.",
            &[("", get(&self.scored))],
        );
        counter(
            "mvfa_node_series_unmatched_total",
            "Series that matched no route (stored, not scored).",
            &[("", get(&self.unmatched))],
        );
        counter(
            "mvfa_node_series_failed_total",
            "Series that could not be scored.",
            &[("", get(&self.failed))],
        );
        counter(
            "mvfa_node_results_sent_total",
            "Result objects delivered to their destination.",
            &[("", get(&self.sent))],
        );
        counter(
            "mvfa_node_send_failures_total",
            "Failed deliveries (each is retried with back-off).",
            &[("", get(&self.send_failures))],
        );
        counter(
            "mvfa_node_associations_rejected_total",
            "Associations rejected (caller not allowed, or too many at once).",
            &[("", get(&self.associations_rejected))],
        );
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "mvfa_node_associations_open",
            "Associations open now.",
            get(&self.associations),
        );
        if let Some(c) = counts {
            gauge(
                "mvfa_node_queue_instances",
                "Received instances not yet scored (the queue limit applies to this).",
                c.queued_instances,
            );
            gauge(
                "mvfa_node_queue_series",
                "Series collecting, ready or being scored.",
                c.queued_series,
            );
            gauge(
                "mvfa_node_results_unsent",
                "Result objects committed and not yet delivered.",
                c.unsent_results,
            );
        }
        let h = self.scoring.lock().unwrap_or_else(|p| p.into_inner());
        let name = "mvfa_node_scoring_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to score one series and write its results.\n# TYPE {name} histogram"
        );
        for (bound, n) in SCORING_BUCKETS.iter().zip(h.buckets.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_a_cumulative_histogram() {
        let m = Metrics::default();
        Metrics::inc(&m.received_dimse);
        Metrics::inc(&m.received_dimse);
        m.observe_scoring(0.7);
        m.observe_scoring(20.0);
        let text = m.render(Some(Counts {
            queued_instances: 5,
            queued_series: 2,
            unsent_results: 1,
        }));
        assert!(text.contains("mvfa_node_instances_received_total{protocol=\"dimse\"} 2\n"));
        assert!(text.contains("mvfa_node_queue_instances 5\n"));
        assert!(
            text.contains("mvfa_node_scoring_seconds_bucket{le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("mvfa_node_scoring_seconds_bucket{le=\"30\"} 2\n"));
        assert!(text.contains("mvfa_node_scoring_seconds_count 2\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<f64>().unwrap();
        }
    }
}
