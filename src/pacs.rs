//! PACS client: query, retrieve and store over DICOMweb (QIDO-RS, WADO-RS, STOW-RS) and DIMSE
//! (C-ECHO, C-FIND, C-GET, C-STORE), behind one [`PacsClient`] trait so the CLI and the app
//! do not care which protocol a node speaks.
//!
//! - [`node`]: configured nodes and the settings file they live in; credentials never appear
//!   in `Debug` output or error messages.
//! - [`query`]: search criteria and matches, shared by both protocols.
//! - [`dimse`] and [`dicomweb`]: the two protocol clients.
//! - [`tls`]: DICOM TLS and `https://` settings (own CA, client certificate).
//! - [`retrieve`]: retrieval into a local folder: one file per instance, written atomically
//!   (temporary file + rename), so an interrupted retrieval leaves only complete files and a
//!   second run resumes by skipping them.
//!
//! Every network wait is bounded by the node's timeout, and every response by size limits
//! ([`Limits`]): a hostile or broken server yields a [`PacsError`], never a hang or a partial
//! file.
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod dicomweb;
pub mod dimse;
pub mod node;
pub mod query;
pub mod retrieve;
pub mod tls;

pub use node::{Endpoint, Node, PacsSettings, Secret, WebAuth};
pub use query::{InstanceRef, Level, Match, Query};
pub use retrieve::{GetReport, GetTarget, Progress};
pub use tls::TlsSettings;

/// Bounds on what one operation may wait for or accept from a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a connection, and for each read or write on it (DIMSE); the whole
    /// request including its body (DICOMweb).
    pub timeout: Duration,
    /// Largest single DICOM object or HTTP response body accepted.
    pub max_object_bytes: usize,
    /// Most matches a query may return before the answer is refused as oversized.
    pub max_matches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(30),
            max_object_bytes: 2 << 30,
            max_matches: 10_000,
        }
    }
}

/// A failed PACS operation: what went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    /// The TCP connection (or the DNS lookup before it) failed.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The server: `AE@host:port` (DIMSE) or the base URL (DICOMweb).
        address: String,
        /// Why, as the network layer reported it.
        reason: String,
    },
    /// The server did not answer within the node's timeout.
    #[error("no answer from {address} within {secs} s")]
    Timeout {
        /// The server, as for [`PacsError::Connect`].
        address: String,
        /// The timeout in whole seconds (at least 1).
        secs: u64,
    },
    /// The DIMSE peer rejected the association (A-ASSOCIATE-RJ).
    #[error("association rejected by {address}: {reason}")]
    Rejected {
        /// The server, as for [`PacsError::Connect`].
        address: String,
        /// The rejection source and reason the peer gave.
        reason: String,
    },
    /// The DIMSE peer accepted no presentation context for a service, SOP class or transfer
    /// syntax the operation needs.
    #[error("{address} does not support {what}")]
    Unsupported {
        /// The server, as for [`PacsError::Connect`].
        address: String,
        /// What it lacks, e.g. "C-GET (study root)".
        what: String,
    },
    /// A DICOMweb server answered with a status outside 200 to 299.
    #[error("{address} answered with HTTP status {status}: {body}")]
    Http {
        /// The base URL.
        address: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (up to 300 bytes), trimmed.
        body: String,
    },
    /// A DIMSE operation ended with a failure or unexpected status in its response.
    #[error("{operation} failed on {address}: status 0x{status:04X}{comment}")]
    Status {
        /// The server, as for [`PacsError::Connect`].
        address: String,
        /// The operation: "C-ECHO", "C-FIND", "C-GET" or "C-STORE".
        operation: &'static str,
        /// The Status (0000,0900) of the response; 0xFFFF when it had none.
        status: u16,
        /// The number of failed sub-operations and the ErrorComment (0000,0902) where the
        /// response gives them, formatted to follow the status (e.g. `, 2 sub-operations
        /// failed (reason)`); else empty.
        comment: String,
    },
    /// The server's answer broke the protocol or could not be parsed.
    #[error("malformed answer from {address}: {reason}")]
    Protocol {
        /// The server, as for [`PacsError::Connect`].
        address: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An answer exceeded one of the [`Limits`] (object size, number of matches) or the
    /// largest DIMSE command accepted.
    #[error("answer from {address} exceeds the limit of {limit} {unit}")]
    TooLarge {
        /// The server, as for [`PacsError::Connect`].
        address: String,
        /// The limit exceeded.
        limit: usize,
        /// What the limit counts, e.g. "matches" or "bytes in one object".
        unit: &'static str,
    },
    /// A local file to store could not be read or is not a usable DICOM Part 10 file.
    #[error("cannot read {path}: {reason}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A retrieved instance could not be written to the local folder.
    #[error("cannot write {path}: {reason}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The node settings file could not be read, parsed or written.
    #[error("PACS settings {path}: {reason}")]
    Settings {
        /// The settings file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The request is invalid (bad search criteria, UID, AE title, base URL or host; caught
    /// before anything is sent), or a retrieval's answer made no sense: nothing listed,
    /// malformed UIDs listed, an instance not asked for, or fewer instances than requested.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The user cancelled the operation; what was written before is complete.
    #[error("cancelled; the instances retrieved so far are complete, and a rerun fetches the rest")]
    Cancelled,
}

impl PacsError {
    /// No answer from `address` within the limits' timeout.
    pub(crate) fn timeout(address: &str, limits: &Limits) -> Self {
        PacsError::Timeout {
            address: address.to_string(),
            secs: limits.timeout.as_secs().max(1),
        }
    }

    pub(crate) fn protocol(address: &str, reason: impl Into<String>) -> Self {
        PacsError::Protocol {
            address: address.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn read_file(path: &Path, reason: impl ToString) -> Self {
        PacsError::ReadFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Why bytes could not be taken (or framed) as a DICOM Part 10 file.
#[derive(Debug, thiserror::Error)]
pub enum Part10Error {
    /// No preamble and `DICM` prefix.
    #[error("not a DICOM file (no DICM prefix)")]
    NoPrefix,
    /// The file meta group could not be parsed.
    #[error("unreadable file meta group: {0}")]
    UnreadableMeta(dicom_object::meta::Error),
    /// The file meta group for a received data set could not be built.
    #[error("cannot build a file meta group: {0}")]
    BuildMeta(dicom_object::meta::Error),
    /// The file meta group could not be written.
    #[error("cannot write a file meta group: {0}")]
    WriteMeta(dicom_object::meta::Error),
}

/// One instance as received: a complete DICOM Part 10 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The instance's SOP Instance UID, as in MediaStorageSOPInstanceUID (0002,0003).
    pub sop_instance_uid: String,
    /// The whole file: preamble, `DICM`, file meta group and data set.
    pub bytes: Vec<u8>,
}

impl Received {
    /// Checks that `bytes` start like a Part 10 file (preamble, `DICM`, a readable file meta
    /// group) and takes the SOP Instance UID from the meta group.
    pub fn from_part10(bytes: Vec<u8>) -> Result<Self, Part10Error> {
        if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
            return Err(Part10Error::NoPrefix);
        }
        let meta = dicom_object::meta::FileMetaTable::from_reader(&bytes[128..])
            .map_err(Part10Error::UnreadableMeta)?;
        let sop_instance_uid = meta
            .media_storage_sop_instance_uid()
            .trim_end_matches(['\0', ' '])
            .to_string();
        Ok(Received {
            sop_instance_uid,
            bytes,
        })
    }

    /// Frames a data set received over DIMSE as a Part 10 file: preamble, `DICM`, a file meta
    /// group naming its class, instance and transfer syntax, then the data set bytes as they
    /// came (so pixel data stays byte-identical).
    pub fn from_dataset(
        sop_class_uid: &str,
        sop_instance_uid: &str,
        transfer_syntax: &str,
        dataset: &[u8],
    ) -> Result<Self, Part10Error> {
        let meta = dicom_object::meta::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class_uid)
            .media_storage_sop_instance_uid(sop_instance_uid)
            .transfer_syntax(transfer_syntax)
            .build()
            .map_err(Part10Error::BuildMeta)?;
        let mut bytes = vec![0u8; 128];
        bytes.extend_from_slice(b"DICM");
        meta.write(&mut bytes).map_err(Part10Error::WriteMeta)?;
        bytes.extend_from_slice(dataset);
        Ok(Received {
            sop_instance_uid: sop_instance_uid.to_string(),
            bytes,
        })
    }
}

/// What both protocol clients offer; [`connect`] picks one for a node.
pub trait PacsClient {
    /// Checks that the node answers (C-ECHO, or a minimal QIDO-RS search).
    fn echo(&self) -> Result<(), PacsError>;
    /// Searches at the query's level.
    fn find(&self, query: &Query) -> Result<Vec<Match>, PacsError>;
    /// Lists the instances of a study or series, for retrieval.
    fn instances(&self, target: &GetTarget) -> Result<Vec<InstanceRef>, PacsError>;
    /// Retrieves these instances, handing each complete one to `sink` as it arrives.
    fn fetch(
        &self,
        wanted: &[InstanceRef],
        sink: &mut dyn FnMut(Received) -> Result<(), PacsError>,
    ) -> Result<(), PacsError>;
    /// Stores one DICOM file on the node; returns its SOP Instance UID.
    fn store(&self, path: &Path) -> Result<String, PacsError>;
}

/// The client for a node's protocol.
pub fn connect(node: &Node) -> Result<Box<dyn PacsClient>, PacsError> {
    let limits = node.limits();
    Ok(match &node.endpoint {
        Endpoint::Dimse(d) => Box::new(dimse::DimseClient::new(d.clone(), limits)?),
        Endpoint::Dicomweb(w) => Box::new(dicomweb::WebClient::new(w.clone(), limits)?),
    })
}
