//! The PACS window's state: the configured nodes, the query form, the studies found and the
//! series of one of them, the running PACS job, and the DICOM files of the last export, Secondary Captures and score SRs
//! (what "send results" sends).
use std::path::PathBuf;

use crate::pacs::{Match, PacsSettings};

/// The search criteria as typed (empty: no criterion).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryForm {
    /// Patient ID (wildcards `*` and `?` allowed).
    pub patient_id: String,
    /// Patient name (wildcards allowed).
    pub patient_name: String,
    /// First study date, YYYYMMDD.
    pub date_from: String,
    /// Last study date, YYYYMMDD.
    pub date_to: String,
    /// Modality (CT, MR, CR, ...).
    pub modality: String,
    /// Accession number.
    pub accession: String,
}

/// What a PACS job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacsJobKind {
    /// Searching studies.
    Find,
    /// Listing the series of a study.
    FindSeries,
    /// Retrieving a study.
    Retrieve,
    /// Sending results.
    Send,
}

/// Everything the PACS window shows.
pub struct PacsState {
    /// Whether the window is open.
    pub open: bool,
    /// Where the nodes are kept (`None`: no data folder on this system).
    pub settings_path: Option<PathBuf>,
    /// The configured nodes.
    pub settings: PacsSettings,
    /// Why the nodes could not be read, if so.
    pub settings_error: Option<String>,
    /// The node in use, by name.
    pub node: Option<String>,
    /// The search criteria.
    pub form: QueryForm,
    /// The studies of the last search.
    pub matches: Vec<Match>,
    /// The series listed for one of those studies: its StudyInstanceUID and its series.
    pub series: Option<(String, Vec<Match>)>,
    /// What the last PACS job did (or why it failed).
    pub status: String,
    /// Where retrieved studies go (one folder per study).
    pub folder: PathBuf,
    /// The DICOM files written by the last export (Secondary Captures and score SRs), for
    /// "send results".
    pub last_export_dicom: Vec<PathBuf>,
}

impl PacsState {
    /// The nodes saved by `mvfa-studio pacs nodes add` (from `path`), retrieved studies going
    /// under `folder`.
    pub fn load(path: Option<PathBuf>, folder: PathBuf) -> Self {
        let (settings, settings_error) = match &path {
            Some(p) => match PacsSettings::load(p) {
                Ok(s) => (s, None),
                Err(e) => (PacsSettings::default(), Some(e.to_string())),
            },
            None => (PacsSettings::default(), None),
        };
        let node = settings.nodes.first().map(|n| n.name.clone());
        Self {
            open: false,
            settings_path: path,
            settings,
            settings_error,
            node,
            form: QueryForm::default(),
            matches: Vec::new(),
            series: None,
            status: String::new(),
            folder,
            last_export_dicom: Vec::new(),
        }
    }
}
