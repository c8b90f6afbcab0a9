//! Search criteria and their matches, independent of the protocol: `Query::keys` gives the
//! attributes both C-FIND identifiers and QIDO-RS parameters are built from, and
//! `Match::from_lookup` reads an answer through a tag lookup that both a data set and a
//! DICOM JSON object provide.
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;

use super::PacsError;

/// The query/retrieve level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// Studies (QueryRetrieveLevel `STUDY`); the default.
    #[default]
    Study,
    /// Series (`SERIES`).
    Series,
    /// Instances (`IMAGE`).
    Instance,
}

impl Level {
    /// The value of QueryRetrieveLevel (0008,0052).
    pub fn dicom_name(self) -> &'static str {
        match self {
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Instance => "IMAGE",
        }
    }
}

/// Search criteria; empty fields match everything. Patient name and ID accept DICOM
/// wildcards (`*`, `?`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    /// What to search for: studies, series or instances.
    pub level: Level,
    /// PatientID (0010,0020).
    pub patient_id: Option<String>,
    /// PatientName (0010,0010).
    pub patient_name: Option<String>,
    /// First study date (YYYYMMDD), inclusive.
    pub date_from: Option<String>,
    /// Last study date (YYYYMMDD), inclusive.
    pub date_to: Option<String>,
    /// Modality of the series (ModalitiesInStudy at study level).
    pub modality: Option<String>,
    /// AccessionNumber (0008,0050).
    pub accession: Option<String>,
    /// Restricts series and instance searches to one study.
    pub study_uid: Option<String>,
    /// Restricts instance searches to one series.
    pub series_uid: Option<String>,
}

/// One attribute of a query: a matching key when `value` is not empty, else a return key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub tag: Tag,
    pub vr: VR,
    pub value: String,
}

impl Query {
    /// Rejects criteria no server could match: malformed dates or UIDs, control characters.
    pub fn validate(&self) -> Result<(), PacsError> {
        for (what, date) in [("from", &self.date_from), ("to", &self.date_to)] {
            if let Some(d) = date
                && !(d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(PacsError::Invalid(format!(
                    "date {what} must be YYYYMMDD, got {d:?}"
                )));
            }
        }
        for uid in [&self.study_uid, &self.series_uid].into_iter().flatten() {
            if !valid_uid(uid) {
                return Err(PacsError::Invalid(format!("not a DICOM UID: {uid:?}")));
            }
        }
        let texts = [
            &self.patient_id,
            &self.patient_name,
            &self.modality,
            &self.accession,
        ];
        if texts
            .into_iter()
            .flatten()
            .any(|t| t.chars().any(|c| c.is_control() || c == '\\'))
        {
            return Err(PacsError::Invalid(
                "search terms may not contain control characters or backslashes".into(),
            ));
        }
        if self.level == Level::Instance && (self.study_uid.is_none() || self.series_uid.is_none())
        {
            return Err(PacsError::Invalid(
                "an instance search needs a study and a series UID".into(),
            ));
        }
        Ok(())
    }

    /// The study date as a DICOM range (`A-B`, `A-`, `-B`), or empty.
    fn date_range(&self) -> String {
        match (&self.date_from, &self.date_to) {
            (None, None) => String::new(),
            (Some(a), Some(b)) if a == b => a.clone(),
            (a, b) => format!(
                "{}-{}",
                a.as_deref().unwrap_or(""),
                b.as_deref().unwrap_or("")
            ),
        }
    }

    /// Matching and return keys for this level (PS3.4 C.6.2 study root).
    pub(crate) fn keys(&self) -> Vec<Key> {
        let key = |tag, vr, value: Option<&String>| Key {
            tag,
            vr,
            value: value.cloned().unwrap_or_default(),
        };
        let mut keys = vec![
            key(tags::PATIENT_NAME, VR::PN, self.patient_name.as_ref()),
            key(tags::PATIENT_ID, VR::LO, self.patient_id.as_ref()),
            Key {
                tag: tags::STUDY_DATE,
                vr: VR::DA,
                value: self.date_range(),
            },
            key(tags::ACCESSION_NUMBER, VR::SH, self.accession.as_ref()),
            key(tags::STUDY_DESCRIPTION, VR::LO, None),
            key(tags::STUDY_INSTANCE_UID, VR::UI, self.study_uid.as_ref()),
        ];
        match self.level {
            Level::Study => keys.extend([
                key(tags::MODALITIES_IN_STUDY, VR::CS, self.modality.as_ref()),
                key(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, None),
            ]),
            Level::Series => keys.extend([
                key(tags::SERIES_INSTANCE_UID, VR::UI, self.series_uid.as_ref()),
                key(tags::MODALITY, VR::CS, self.modality.as_ref()),
                key(tags::SERIES_DESCRIPTION, VR::LO, None),
                key(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, None),
            ]),
            Level::Instance => keys.extend([
                key(tags::SERIES_INSTANCE_UID, VR::UI, self.series_uid.as_ref()),
                key(tags::MODALITY, VR::CS, self.modality.as_ref()),
                key(tags::SOP_INSTANCE_UID, VR::UI, None),
                key(tags::SOP_CLASS_UID, VR::UI, None),
            ]),
        }
        keys
    }
}

/// Why a search answer cannot be used: a UID its level needs is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// A UID that is not a valid UID.
    #[error("malformed UID {uid:?} in ({:04X},{:04X})", tag.0, tag.1)]
    MalformedUid {
        /// What the answer held.
        uid: String,
        /// Where.
        tag: Tag,
    },
    /// A UID the level needs is absent.
    #[error("missing UID ({:04X},{:04X})", .0.0, .0.1)]
    MissingUid(Tag),
}

/// One study, series or instance found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    /// The level searched at: whether this is a study, a series or an instance.
    pub level: Level,
    /// PatientName (0010,0010); empty where the server did not say.
    pub patient_name: String,
    /// PatientID (0010,0020); empty where the server did not say.
    pub patient_id: String,
    /// StudyDate (0008,0020) as the server sent it (normally YYYYMMDD); may be empty.
    pub study_date: String,
    /// AccessionNumber (0008,0050); may be empty.
    pub accession: String,
    /// Series modality, or the modalities in the study separated by `\`.
    pub modality: String,
    /// Study or series description.
    pub description: String,
    /// StudyInstanceUID (0020,000D).
    pub study_uid: String,
    /// Empty at study level.
    pub series_uid: String,
    /// Empty above instance level.
    pub sop_instance_uid: String,
    /// SOPClassUID (0008,0016); empty where the server did not say.
    pub sop_class_uid: String,
    /// Instances in the study or series, where the server says.
    pub related_instances: Option<u32>,
}

impl Match {
    /// Reads a match through `get` (tag to trimmed string, multiple values joined by `\`).
    /// Fails when a UID the level needs is missing or malformed: such a match could not be
    /// retrieved.
    pub(crate) fn from_lookup(
        level: Level,
        get: impl Fn(Tag) -> Option<String>,
    ) -> Result<Self, AnswerError> {
        let text = |t| get(t).unwrap_or_default();
        let uid = |t: Tag, needed: bool| -> Result<String, AnswerError> {
            match get(t) {
                Some(u) if valid_uid(&u) => Ok(u),
                Some(u) => Err(AnswerError::MalformedUid { uid: u, tag: t }),
                None if needed => Err(AnswerError::MissingUid(t)),
                None => Ok(String::new()),
            }
        };
        let (modality_tag, description_tag, count_tag) = match level {
            Level::Study => (
                tags::MODALITIES_IN_STUDY,
                tags::STUDY_DESCRIPTION,
                tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
            ),
            _ => (
                tags::MODALITY,
                tags::SERIES_DESCRIPTION,
                tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
            ),
        };
        Ok(Match {
            level,
            patient_name: text(tags::PATIENT_NAME),
            patient_id: text(tags::PATIENT_ID),
            study_date: text(tags::STUDY_DATE),
            accession: text(tags::ACCESSION_NUMBER),
            modality: text(modality_tag),
            description: text(description_tag),
            study_uid: uid(tags::STUDY_INSTANCE_UID, true)?,
            series_uid: uid(tags::SERIES_INSTANCE_UID, level != Level::Study)?,
            sop_instance_uid: uid(tags::SOP_INSTANCE_UID, level == Level::Instance)?,
            sop_class_uid: uid(tags::SOP_CLASS_UID, false)?,
            related_instances: get(count_tag).and_then(|c| c.trim().parse().ok()),
        })
    }

    /// The instance this match names (instance level only).
    pub fn instance(&self) -> Option<InstanceRef> {
        (self.level == Level::Instance).then(|| InstanceRef {
            study_uid: self.study_uid.clone(),
            series_uid: self.series_uid.clone(),
            sop_instance_uid: self.sop_instance_uid.clone(),
            sop_class_uid: self.sop_class_uid.clone(),
        })
    }
}

/// One instance to retrieve.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceRef {
    /// StudyInstanceUID (0020,000D).
    pub study_uid: String,
    /// SeriesInstanceUID (0020,000E).
    pub series_uid: String,
    /// SOPInstanceUID (0008,0018).
    pub sop_instance_uid: String,
    /// May be empty where the server did not say.
    pub sop_class_uid: String,
}

/// A syntactically valid UID (PS3.5 9.1): digits and dots, at most 64 characters, no empty
/// component. Also what makes a UID safe as a file name.
pub fn valid_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_become_dicom_ranges_and_bad_input_is_refused() {
        let mut q = Query {
            date_from: Some("20200101".into()),
            ..Query::default()
        };
        assert_eq!(q.date_range(), "20200101-");
        q.date_to = Some("20201231".into());
        assert_eq!(q.date_range(), "20200101-20201231");
        assert!(q.validate().is_ok());
        q.date_to = Some("2020-12-31".into());
        assert!(q.validate().is_err());
        let q = Query {
            patient_id: Some("a\\b".into()),
            ..Query::default()
        };
        assert!(q.validate().is_err());
        assert!(valid_uid("1.2.840.10008.1.1"));
        assert!(!valid_uid("1..2") && !valid_uid("../etc") && !valid_uid(""));
    }
}
