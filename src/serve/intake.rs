//! Taking in one received instance, the same for C-STORE and STOW-RS: check it, refuse it when
//! the queue is full, write it to disk (synced), record it in the journal, and only then
//! report success. A malformed instance is rejected with a reason and changes nothing.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::config::SeriesFacts;
use super::journal::{Journal, NewInstance, Recorded};
use super::metrics::Metrics;
use crate::io::export::write_atomically;
use crate::pacs::query::valid_uid;

/// What became of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and journaled (or already was).
    Stored {
        /// New, duplicate or late.
        recorded: Recorded,
        /// Its series.
        series_uid: String,
        /// Its SOP Class UID.
        sop_class_uid: String,
        /// Its SOP Instance UID.
        sop_uid: String,
    },
    /// The queue is full: try again later (0xA700, HTTP 503).
    QueueFull,
    /// Not a usable instance (0xC000, STOW-RS failure reason 0xC000).
    Malformed(String),
    /// The node could not store it (disk, journal): 0xA700 too, the sender retries.
    Failed(String),
}

/// Shared by every receiving thread.
pub struct Intake {
    /// The journal (one connection, serialised).
    pub journal: Arc<Mutex<Journal>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Received instances go under `<incoming>/<study>/<series>/<sop>.dcm`.
    pub incoming: PathBuf,
    /// Queue limit, in instances not yet scored.
    pub max_queued: u64,
}

/// A string attribute, trimmed; empty when absent.
pub(super) fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        })
        .unwrap_or_default()
}

impl Intake {
    /// Takes in a Part 10 file's bytes. `announced` is the SOP Instance UID the C-STORE
    /// request named, which must match the data set's.
    pub fn accept(&self, bytes: &[u8], announced: Option<&str>, source: &str) -> Outcome {
        let obj = match bytes
            .get(128..)
            .ok_or("shorter than a DICOM preamble")
            .map_err(str::to_string)
            .and_then(|b| dicom_object::from_reader(b).map_err(|e| e.to_string()))
        {
            Ok(obj) => obj,
            Err(e) => return self.malformed(format!("unreadable data set: {e}"), source),
        };
        let sop_uid = text(&obj, tags::SOP_INSTANCE_UID);
        let sop_class_uid = text(&obj, tags::SOP_CLASS_UID);
        let series_uid = text(&obj, tags::SERIES_INSTANCE_UID);
        let study_uid = text(&obj, tags::STUDY_INSTANCE_UID);
        for (name, uid) in [
            ("SOP Instance UID", &sop_uid),
            ("SOP Class UID", &sop_class_uid),
            ("Series Instance UID", &series_uid),
            ("Study Instance UID", &study_uid),
        ] {
            if !valid_uid(uid) {
                return self.malformed(format!("missing or invalid {name} {uid:?}"), source);
            }
        }
        if let Some(a) = announced.filter(|a| *a != sop_uid) {
            return self.malformed(
                format!("the request names instance {a} but the data set is {sop_uid}"),
                source,
            );
        }
        let stored = |recorded| Outcome::Stored {
            recorded,
            series_uid: series_uid.clone(),
            sop_class_uid: sop_class_uid.clone(),
            sop_uid: sop_uid.clone(),
        };
        {
            let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            match journal.has_instance(&sop_uid) {
                Ok(true) => {
                    Metrics::inc(&self.metrics.duplicates);
                    return stored(Recorded::Duplicate);
                }
                Ok(false) => {}
                Err(e) => return Outcome::Failed(e.to_string()),
            }
            // Several associations may pass this check at once: the queue can overshoot its
            // limit by at most one instance per open association.
            match journal.counts() {
                Ok(c) if c.queued_instances >= self.max_queued => {
                    Metrics::inc(&self.metrics.refused);
                    tracing::warn!(
                        sop_uid,
                        source,
                        queued = c.queued_instances,
                        "queue full: instance refused"
                    );
                    return Outcome::QueueFull;
                }
                Ok(_) => {}
                Err(e) => return Outcome::Failed(e.to_string()),
            }
        }
        let path = self
            .incoming
            .join(&study_uid)
            .join(&series_uid)
            .join(format!("{sop_uid}.dcm"));
        if let Err(e) = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                write_atomically(&path, |w| Ok(w.write_all(bytes)?)).map_err(|e| e.to_string())
            })
        {
            tracing::error!(sop_uid, error = %e, "cannot store instance");
            return Outcome::Failed(format!("cannot store the instance: {e}"));
        }
        let facts = SeriesFacts {
            modality: text(&obj, tags::MODALITY),
            body_part: text(&obj, tags::BODY_PART_EXAMINED),
            description: text(&obj, tags::SERIES_DESCRIPTION),
        };
        let record = NewInstance {
            sop_uid: sop_uid.clone(),
            series_uid: series_uid.clone(),
            study_uid,
            path,
            facts,
            source: source.to_string(),
        };
        let recorded = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record_instance(&record);
        match recorded {
            Ok(r) => {
                match r {
                    Recorded::Duplicate => Metrics::inc(&self.metrics.duplicates),
                    Recorded::Late => {
                        Metrics::inc(&self.metrics.late);
                        tracing::warn!(
                            sop_uid,
                            series_uid,
                            source,
                            "instance of a series already scored: stored, not scored"
                        );
                    }
                    Recorded::New => {}
                }
                if r != Recorded::Duplicate {
                    let c = if source.starts_with("stow") {
                        &self.metrics.received_stow
                    } else {
                        &self.metrics.received_dimse
                    };
                    Metrics::inc(c);
                }
                stored(r)
            }
            Err(e) => {
                tracing::error!(sop_uid, error = %e, "cannot journal instance");
                Outcome::Failed(e.to_string())
            }
        }
    }

    fn malformed(&self, reason: String, source: &str) -> Outcome {
        Metrics::inc(&self.metrics.rejected);
        tracing::warn!(source, reason, "malformed instance rejected");
        Outcome::Malformed(reason)
    }
}
