//! The node's journal: every received instance, every series job and every result, in SQLite
//! (WAL, `synchronous = FULL`), so that what a sender was told is stored survives `kill -9` and
//! a power cut, and a restart picks up every unfinished job.
//!
//! A series moves `receiving` → `ready` (complete: quiet time or end of association) →
//! `scoring` → `scored` (its results and their SOP Instance UIDs committed in one
//! transaction) → `done` (every result sent); or to `unmatched` (no route) or `failed`
//! (nothing in it could be scored). Results are only sent once committed, so a crash while
//! scoring leaves nothing half-sent: the series is scored again and only that attempt's
//! objects ever leave. A crash between a send and its record resends the same objects, which
//! a destination stores once (same SOP Instance UIDs).
//!
//! `event` is an append-only audit trail (received, scored, sent, ...), one row per fact.
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::config::SeriesFacts;

/// Seconds since the Unix epoch, as stored.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A journal failure: the node cannot promise anything it has not recorded, so callers
/// refuse the instance (or retry the job) on it.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// The journal file, open.
pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

/// One instance as received and written to disk.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// SOP Instance UID.
    pub sop_uid: String,
    /// Its series.
    pub series_uid: String,
    /// Its study.
    pub study_uid: String,
    /// Where it was written.
    pub path: PathBuf,
    /// What the routing rules look at.
    pub facts: SeriesFacts,
    /// `dimse:<calling AE>` or `stow:<peer>`.
    pub source: String,
}

/// What recording an instance did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// New, and its series is still collecting.
    New,
    /// Already recorded (a resend): nothing changed, success for the sender.
    Duplicate,
    /// New, but its series was already scored: stored and logged, not scored again.
    Late,
}

/// A series ready to be scored.
#[derive(Debug, Clone)]
pub struct SeriesJob {
    /// Series Instance UID.
    pub series_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Routing facts of its first instance.
    pub facts: SeriesFacts,
    /// Scoring attempts so far (a crash or failure leaves one behind).
    pub attempts: u32,
}

/// One result object of a scored series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultObject {
    /// Its SOP Instance UID, fixed from now on.
    pub sop_uid: String,
    /// Its file.
    pub path: PathBuf,
}

/// A result waiting to be sent.
#[derive(Debug, Clone)]
pub struct PendingResult {
    /// SOP Instance UID.
    pub sop_uid: String,
    /// Its series (the source series).
    pub series_uid: String,
    /// Its file.
    pub path: PathBuf,
    /// The route that scored it.
    pub route: String,
    /// Sends tried so far.
    pub attempts: u32,
}

/// Counts for `/health` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Instances of series not yet scored.
    pub queued_instances: u64,
    /// Series collecting, ready or being scored.
    pub queued_series: u64,
    /// Results committed and not yet sent.
    pub unsent_results: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT NOT NULL,
    body_part TEXT NOT NULL,
    description TEXT NOT NULL,
    state TEXT NOT NULL,
    instances INTEGER NOT NULL DEFAULT 0,
    last_received REAL NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    route TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE TABLE IF NOT EXISTS instance (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    late INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instance_series ON instance(series_uid);
CREATE TABLE IF NOT EXISTS result (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS result_unsent ON result(sent, next_attempt);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    series_uid TEXT,
    sop_uid TEXT,
    detail TEXT
);
";

/// States whose instances count against the queue limit.
const QUEUED: &str = "('receiving', 'ready', 'scoring')";

impl Journal {
    /// Opens (or creates) `data_dir/journal.sqlite3`.
    pub fn open(data_dir: &Path) -> Result<Self, JournalError> {
        let path = data_dir.join("journal.sqlite3");
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Journal { conn, path })
    }

    /// Wraps SQLite errors with the journal's path, without borrowing the journal (for use
    /// inside a transaction).
    fn on_error(&self) -> impl Fn(rusqlite::Error) -> JournalError + use<> {
        let path = self.path.clone();
        move |source| JournalError {
            path: path.clone(),
            source,
        }
    }

    fn err(&self, source: rusqlite::Error) -> JournalError {
        JournalError {
            path: self.path.clone(),
            source,
        }
    }

    /// After a start: a series that was being scored is ready again (its uncommitted attempt
    /// never left the node), and a series still collecting gets its quiet time afresh, so that
    /// a sender retrying after the outage can finish it.
    pub fn resume(&mut self) -> Result<(usize, usize), JournalError> {
        let e = self.on_error();
        let tx = self.conn.transaction().map_err(&e)?;
        let rescore = tx
            .execute(
                "UPDATE series SET state = 'ready' WHERE state = 'scoring'",
                [],
            )
            .map_err(&e)?;
        let collecting = tx
            .execute(
                "UPDATE series SET last_received = ?1 WHERE state = 'receiving'",
                params![now()],
            )
            .map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok((rescore, collecting))
    }

    /// Instances not yet scored (the queue the limit applies to).
    pub fn counts(&self) -> Result<Counts, JournalError> {
        let (queued_instances, queued_series): (i64, i64) = self
            .conn
            .query_row(
                &format!(
                    "SELECT COALESCE(SUM(instances), 0), COUNT(*) FROM series WHERE state IN {QUEUED}"
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        let unsent: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM result WHERE sent = 0", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))?;
        Ok(Counts {
            queued_instances: queued_instances as u64,
            queued_series: queued_series as u64,
            unsent_results: unsent as u64,
        })
    }

    /// Whether this SOP Instance UID is already recorded.
    pub fn has_instance(&self, sop_uid: &str) -> Result<bool, JournalError> {
        self.conn
            .query_row(
                "SELECT 1 FROM instance WHERE sop_uid = ?1",
                params![sop_uid],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// Records a received instance (already on disk) in one transaction; only after this
    /// returns may the sender be told it is stored.
    pub fn record_instance(&mut self, inst: &NewInstance) -> Result<Recorded, JournalError> {
        let t = now();
        let e = self.on_error();
        let tx = self.conn.transaction().map_err(&e)?;
        let known = tx
            .query_row(
                "SELECT 1 FROM instance WHERE sop_uid = ?1",
                params![inst.sop_uid],
                |_| Ok(()),
            )
            .optional()
            .map_err(&e)?
            .is_some();
        if known {
            return Ok(Recorded::Duplicate);
        }
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM series WHERE series_uid = ?1",
                params![inst.series_uid],
                |r| r.get(0),
            )
            .optional()
            .map_err(&e)?;
        let recorded = match state.as_deref() {
            None => {
                tx.execute(
                    "INSERT INTO series (series_uid, study_uid, modality, body_part, description,
                     state, instances, last_received) VALUES (?1, ?2, ?3, ?4, ?5, 'receiving', 1, ?6)",
                    params![
                        inst.series_uid,
                        inst.study_uid,
                        inst.facts.modality,
                        inst.facts.body_part,
                        inst.facts.description,
                        t
                    ],
                )
                .map_err(&e)?;
                Recorded::New
            }
            Some("receiving") | Some("ready") => {
                tx.execute(
                    "UPDATE series SET instances = instances + 1, last_received = ?2
                     WHERE series_uid = ?1",
                    params![inst.series_uid, t],
                )
                .map_err(&e)?;
                Recorded::New
            }
            Some(_) => Recorded::Late,
        };
        tx.execute(
            "INSERT INTO instance (sop_uid, series_uid, path, received_at, source, late)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                inst.sop_uid,
                inst.series_uid,
                inst.path.to_string_lossy(),
                t,
                inst.source,
                recorded == Recorded::Late
            ],
        )
        .map_err(&e)?;
        let kind = if recorded == Recorded::Late {
            "received-late"
        } else {
            "received"
        };
        event(
            &tx,
            kind,
            Some(&inst.series_uid),
            Some(&inst.sop_uid),
            &inst.source,
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(recorded)
    }

    /// The sender's association (or STOW-RS request) ended: its series are complete.
    pub fn close_series(&mut self, series: &[String]) -> Result<(), JournalError> {
        let e = self.on_error();
        let tx = self.conn.transaction().map_err(&e)?;
        for s in series {
            tx.execute(
                "UPDATE series SET closed = 1 WHERE series_uid = ?1 AND state = 'receiving'",
                params![s],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)
    }

    /// Series that are complete (closed, or quiet for `quiet` seconds) become ready.
    pub fn promote(&mut self, quiet: f64) -> Result<usize, JournalError> {
        let n = self
            .conn
            .execute(
                "UPDATE series SET state = 'ready'
                 WHERE state = 'receiving' AND (closed = 1 OR last_received <= ?1)",
                params![now() - quiet],
            )
            .map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// The oldest ready series.
    pub fn next_ready(&self) -> Result<Option<SeriesJob>, JournalError> {
        self.conn
            .query_row(
                "SELECT series_uid, study_uid, modality, body_part, description, attempts
                 FROM series WHERE state = 'ready' ORDER BY last_received LIMIT 1",
                [],
                |r| {
                    Ok(SeriesJob {
                        series_uid: r.get(0)?,
                        study_uid: r.get(1)?,
                        facts: SeriesFacts {
                            modality: r.get(2)?,
                            body_part: r.get(3)?,
                            description: r.get(4)?,
                        },
                        attempts: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Marks a series as being scored by `route` (one more attempt).
    pub fn start_scoring(&mut self, series_uid: &str, route: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE series SET state = 'scoring', route = ?2, attempts = attempts + 1
                 WHERE series_uid = ?1",
                params![series_uid, route],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Ends a series without results: `unmatched` or `failed`, with the reason.
    pub fn finish_without_results(
        &mut self,
        series_uid: &str,
        state: &str,
        reason: &str,
    ) -> Result<(), JournalError> {
        let e = self.on_error();
        let tx = self.conn.transaction().map_err(&e)?;
        tx.execute(
            "UPDATE series SET state = ?2, error = ?3 WHERE series_uid = ?1",
            params![series_uid, state, reason],
        )
        .map_err(&e)?;
        event(&tx, state, Some(series_uid), None, reason).map_err(&e)?;
        tx.commit().map_err(&e)
    }

    /// A scoring attempt failed in a way a retry may fix: back to ready.
    pub fn retry_later(&mut self, series_uid: &str, reason: &str) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE series SET state = 'ready', error = ?2, last_received = ?3
                 WHERE series_uid = ?1",
                params![series_uid, reason, now()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The files of a series, in the order received.
    pub fn instance_paths(&self, series_uid: &str) -> Result<Vec<PathBuf>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM instance WHERE series_uid = ?1 AND late = 0 ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![series_uid], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map(PathBuf::from).map_err(|e| self.err(e)))
            .collect()
    }

    /// Commits a series' results in one transaction: from here on their SOP Instance UIDs
    /// are fixed and they will be sent.
    pub fn record_results(
        &mut self,
        series_uid: &str,
        results: &[ResultObject],
        detail: &str,
    ) -> Result<(), JournalError> {
        let e = self.on_error();
        let tx = self.conn.transaction().map_err(&e)?;
        for r in results {
            tx.execute(
                "INSERT OR IGNORE INTO result (sop_uid, series_uid, path) VALUES (?1, ?2, ?3)",
                params![r.sop_uid, series_uid, r.path.to_string_lossy()],
            )
            .map_err(&e)?;
        }
        let state = if results.is_empty() { "done" } else { "scored" };
        tx.execute(
            "UPDATE series SET state = ?2, error = NULL WHERE series_uid = ?1",
            params![series_uid, state],
        )
        .map_err(&e)?;
        event(&tx, "scored", Some(series_uid), None, detail).map_err(&e)?;
        tx.commit().map_err(&e)
    }

    /// Results due for sending (never sent, and past their back-off).
    pub fn due_results(&self, limit: usize) -> Result<Vec<PendingResult>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.sop_uid, r.series_uid, r.path, COALESCE(s.route, ''), r.attempts
                 FROM result r JOIN series s ON s.series_uid = r.series_uid
                 WHERE r.sent = 0 AND r.next_attempt <= ?1 ORDER BY r.rowid LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![now(), limit as i64], |r| {
                Ok(PendingResult {
                    sop_uid: r.get(0)?,
                    series_uid: r.get(1)?,
                    path: PathBuf::from(r.get::<_, String>(2)?),
                    route: r.get(3)?,
                    attempts: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map_err(|e| self.err(e))).collect()
    }

    /// Records a result as sent; the series is done once all of its results are.
    pub fn mark_sent(&mut self, result: &PendingResult, to: &str) -> Result<(), JournalError> {
        let e = self.on_error();
        let tx = self.conn.transaction().map_err(&e)?;
        tx.execute(
            "UPDATE result SET sent = 1, attempts = attempts + 1, error = NULL WHERE sop_uid = ?1",
            params![result.sop_uid],
        )
        .map_err(&e)?;
        tx.execute(
            "UPDATE series SET state = 'done' WHERE series_uid = ?1 AND state = 'scored'
             AND NOT EXISTS (SELECT 1 FROM result WHERE series_uid = ?1 AND sent = 0)",
            params![result.series_uid],
        )
        .map_err(&e)?;
        event(
            &tx,
            "sent",
            Some(&result.series_uid),
            Some(&result.sop_uid),
            to,
        )
        .map_err(&e)?;
        tx.commit().map_err(&e)
    }

    /// Records a failed send and when to try again.
    pub fn send_failed(
        &mut self,
        result: &PendingResult,
        reason: &str,
        retry_in: f64,
    ) -> Result<(), JournalError> {
        self.conn
            .execute(
                "UPDATE result SET attempts = attempts + 1, error = ?2, next_attempt = ?3
                 WHERE sop_uid = ?1",
                params![result.sop_uid, reason, now() + retry_in],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Series per state, for the health report.
    pub fn series_states(&self) -> Result<Vec<(String, u64)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM series GROUP BY state ORDER BY state")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map_err(|e| self.err(e))).collect()
    }
}

fn event(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    series: Option<&str>,
    sop: Option<&str>,
    detail: &str,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO event (at, kind, series_uid, sop_uid, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now(), kind, series, sop, detail],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(sop: &str, series: &str) -> NewInstance {
        NewInstance {
            sop_uid: sop.into(),
            series_uid: series.into(),
            study_uid: "1.2".into(),
            path: PathBuf::from(format!("/x/{sop}.dcm")),
            facts: SeriesFacts::default(),
            source: "test".into(),
        }
    }

    #[test]
    fn a_series_is_scored_once_and_its_results_sent_once_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert_eq!(
            j.record_instance(&instance("1.1", "9")).unwrap(),
            Recorded::New
        );
        assert_eq!(
            j.record_instance(&instance("1.2", "9")).unwrap(),
            Recorded::New
        );
        assert_eq!(
            j.record_instance(&instance("1.1", "9")).unwrap(),
            Recorded::Duplicate
        );
        assert_eq!(j.counts().unwrap().queued_instances, 2);
        j.close_series(&["9".into()]).unwrap();
        assert_eq!(j.promote(1e9).unwrap(), 1);
        let job = j.next_ready().unwrap().unwrap();
        j.start_scoring(&job.series_uid, "r").unwrap();
        // A crash while scoring: reopened, the series is ready again.
        drop(j);
        let mut j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.resume().unwrap(), (1, 0));
        let job = j.next_ready().unwrap().unwrap();
        assert_eq!(job.attempts, 1);
        assert_eq!(j.instance_paths("9").unwrap().len(), 2);
        j.start_scoring(&job.series_uid, "r").unwrap();
        let results = [ResultObject {
            sop_uid: "5.1".into(),
            path: "/r/a.dcm".into(),
        }];
        j.record_results("9", &results, "2 frames").unwrap();
        assert_eq!(
            j.record_instance(&instance("1.3", "9")).unwrap(),
            Recorded::Late
        );
        assert_eq!(j.counts().unwrap().queued_instances, 0);
        let due = j.due_results(10).unwrap();
        assert_eq!(due.len(), 1);
        j.send_failed(&due[0], "down", 60.0).unwrap();
        assert!(j.due_results(10).unwrap().is_empty());
        j.conn
            .execute("UPDATE result SET next_attempt = 0", [])
            .unwrap();
        let due = j.due_results(10).unwrap();
        j.mark_sent(&due[0], "dest").unwrap();
        assert!(j.due_results(10).unwrap().is_empty());
        assert_eq!(j.series_states().unwrap(), vec![("done".to_string(), 1)]);
        let scored: i64 = j
            .conn
            .query_row(
                "SELECT COUNT(*) FROM event WHERE kind = 'scored'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(scored, 1);
    }
}
