//! The AI node's configuration: one TOML file (`serve --config serve.toml`), documented in
//! `packaging/serve.example.toml`. Parsing checks what can be checked without the network:
//! names are unique, every route names a destination, patterns compile, listen addresses
//! parse; `serve --check` then tries every file and node ([`super::check`]).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::pacs::node::{DimseEndpoint, WebEndpoint};
use crate::pacs::{Endpoint, Node};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Listeners, storage and limits.
    pub node: NodeSettings,
    /// TLS for both listeners; absent: plain TCP.
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// De-identification of the results.
    #[serde(default)]
    pub deidentification: Deidentification,
    /// Which detector scores which series, first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// Where results go.
    #[serde(default, rename = "destination")]
    pub destinations: Vec<Destination>,
}

/// `[node]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Our AE title: associations must call it.
    #[serde(default = "default_ae_title")]
    pub ae_title: String,
    /// Address of the C-STORE SCP, e.g. `0.0.0.0:11112`; absent: no DIMSE listener.
    #[serde(default)]
    pub dimse_listen: Option<SocketAddr>,
    /// Address of the HTTP listener (STOW-RS at `/studies`, `/health`, `/metrics`); absent:
    /// none.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// Calling AE titles allowed to send; empty: any.
    #[serde(default)]
    pub allowed_callers: Vec<String>,
    /// Journal, received instances and results live here.
    pub data_dir: PathBuf,
    /// A series counts as complete when nothing arrived for it for this long.
    #[serde(default = "default_quiet_seconds")]
    pub quiet_seconds: f64,
    /// Also count a series complete when the association (or STOW-RS request) that sent it
    /// ends. Leave off for senders that open one association per instance.
    #[serde(default = "yes")]
    pub complete_at_release: bool,
    /// Received instances not yet scored, at most; beyond it senders are refused (C-STORE
    /// status 0xA700, HTTP 503) until the queue drains.
    #[serde(default = "default_max_queued")]
    pub max_queued_instances: u64,
    /// Associations served at once; more are rejected (transient).
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// Largest instance accepted, in MiB.
    #[serde(default = "default_max_instance_mib")]
    pub max_instance_mib: usize,
    /// Seconds between send retries grow from 2 to this.
    #[serde(default = "default_max_backoff")]
    pub max_retry_seconds: f64,
    /// Log lines as JSON objects (default) or text.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Force the CPU backend even when a GPU build finds a GPU.
    #[serde(default)]
    pub cpu: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

fn default_ae_title() -> String {
    "MVFA_NODE".into()
}
fn default_quiet_seconds() -> f64 {
    30.0
}
fn yes() -> bool {
    true
}
fn default_max_queued() -> u64 {
    20_000
}
fn default_max_associations() -> usize {
    32
}
fn default_max_instance_mib() -> usize {
    512
}
fn default_max_backoff() -> f64 {
    300.0
}

/// `[tls]`: the server's certificate for DICOM TLS and HTTPS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA whose client certificates are required; absent: clients are not asked for one.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// `[deidentification]`: how results leave the node (see `score --dicom`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deidentification {
    /// Keep the patient's identity; results join the source study.
    #[serde(default)]
    pub identified: bool,
    /// Dates of de-identified results: `remove`, `shift` or `keep`.
    #[serde(default = "default_dates")]
    pub dates: String,
    /// Keep patient sex and age.
    #[serde(default)]
    pub retain_patient_characteristics: bool,
    /// Keep station name and device serial number.
    #[serde(default)]
    pub retain_device_identity: bool,
    /// Environment variable with the de-identification key; absent: a key generated once
    /// and kept in the data folder, so pseudonyms stay stable across restarts.
    #[serde(default)]
    pub key_env: Option<String>,
}

fn default_dates() -> String {
    "remove".into()
}

impl Default for Deidentification {
    fn default() -> Self {
        Deidentification {
            identified: false,
            dates: default_dates(),
            retain_patient_characteristics: false,
            retain_device_identity: false,
            key_env: None,
        }
    }
}

/// `[[route]]`: a detector and the series it scores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Shown in logs, metrics and the journal.
    pub name: String,
    /// The fitted detector.
    pub checkpoint: PathBuf,
    /// Its CLIP weights.
    pub clip: PathBuf,
    /// CLIP model config, when not beside the weights.
    #[serde(default)]
    pub clip_config: Option<PathBuf>,
    /// Organ word; default: the checkpoint's.
    #[serde(default)]
    pub organ: Option<String>,
    /// Frames per forward pass.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Modalities (0008,0060) matched, any of; empty: any.
    #[serde(default)]
    pub modality: Vec<String>,
    /// Body parts (0018,0015) matched, any of, case-insensitive; empty: any.
    #[serde(default)]
    pub body_part: Vec<String>,
    /// Regular expression the Series Description (0008,103E) must match; absent: any.
    #[serde(default)]
    pub series_description: Option<String>,
    /// Name of the `[[destination]]` its results go to.
    pub destination: String,
}

fn default_batch() -> usize {
    8
}

/// `[[destination]]`: a DIMSE or DICOMweb node, or a folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Referred to by routes.
    pub name: String,
    /// `dimse`, `dicomweb` or `folder`.
    pub protocol: String,
    /// DIMSE: host.
    #[serde(default)]
    pub host: Option<String>,
    /// DIMSE: port.
    #[serde(default)]
    pub port: Option<u16>,
    /// DIMSE: the destination's AE title.
    #[serde(default)]
    pub called_ae: Option<String>,
    /// DIMSE: our AE title towards it; default: `[node] ae_title`.
    #[serde(default)]
    pub calling_ae: Option<String>,
    /// DICOMweb: base URL of the service.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Folder: where result files are copied.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// TLS towards a network destination (CA file, client certificate), as for PACS nodes.
    #[serde(default)]
    pub tls: Option<crate::pacs::TlsSettings>,
    /// Seconds to wait for the destination.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

/// Where a destination's results go, checked.
#[derive(Debug, Clone)]
pub enum Target {
    /// A PACS node (DIMSE or DICOMweb).
    Node(Node),
    /// A folder.
    Folder(PathBuf),
}

impl Destination {
    /// The destination as a PACS node or a folder.
    pub fn target(&self, our_ae: &str) -> Result<Target, String> {
        let missing = |field: &str| {
            format!(
                "destination {:?}: protocol {:?} needs `{field}`",
                self.name, self.protocol
            )
        };
        let endpoint = match self.protocol.as_str() {
            "folder" => {
                return Ok(Target::Folder(
                    self.path.clone().ok_or_else(|| missing("path"))?,
                ));
            }
            "dimse" => Endpoint::Dimse(DimseEndpoint {
                host: self.host.clone().ok_or_else(|| missing("host"))?,
                port: self.port.ok_or_else(|| missing("port"))?,
                called_ae: self.called_ae.clone().ok_or_else(|| missing("called_ae"))?,
                calling_ae: self.calling_ae.clone().unwrap_or_else(|| our_ae.into()),
                tls: self.tls.clone(),
            }),
            "dicomweb" => Endpoint::Dicomweb(WebEndpoint {
                base_url: self.base_url.clone().ok_or_else(|| missing("base_url"))?,
                auth: Default::default(),
                tls: self.tls.clone(),
            }),
            other => {
                return Err(format!(
                    "destination {:?}: protocol must be dimse, dicomweb or folder, not {other:?}",
                    self.name
                ));
            }
        };
        Ok(Target::Node(Node {
            name: self.name.clone(),
            endpoint,
            timeout_secs: self.timeout_secs,
        }))
    }
}

/// What a series offers to the routing rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFacts {
    /// Modality (0008,0060).
    pub modality: String,
    /// Body Part Examined (0018,0015).
    pub body_part: String,
    /// Series Description (0008,103E).
    pub description: String,
}

impl Route {
    fn description_pattern(&self) -> Result<Option<Regex>, String> {
        self.series_description
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| format!("route {:?}: series_description: {e}", self.name))
    }

    /// The detector to open for this route (the checkpoint's own false-positive rate).
    pub fn scorer_spec(&self) -> crate::workflow::ScorerSpec {
        crate::workflow::ScorerSpec {
            clip: self.clip.clone(),
            clip_config: self.clip_config.clone(),
            checkpoint: self.checkpoint.clone(),
            organ: self.organ.clone(),
            batch: self.batch,
            fpr: None,
        }
    }

    /// Whether this route scores a series with these facts.
    pub fn matches(&self, facts: &SeriesFacts) -> bool {
        let any_of = |list: &[String], value: &str| {
            list.is_empty() || list.iter().any(|v| v.eq_ignore_ascii_case(value.trim()))
        };
        any_of(&self.modality, &facts.modality)
            && any_of(&self.body_part, &facts.body_part)
            && self
                .description_pattern()
                .ok()
                .flatten()
                .is_none_or(|re| re.is_match(&facts.description))
    }
}

impl ServeConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config {}: {e}", path.display()))?;
        let config: ServeConfig =
            toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = config.resolved(base);
        config
            .validate()
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        Ok(config)
    }

    /// Relative paths in the file are relative to the file's folder.
    fn resolved(mut self, base: &Path) -> Self {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.node.data_dir);
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                fix(ca);
            }
        }
        for r in &mut self.routes {
            fix(&mut r.checkpoint);
            fix(&mut r.clip);
            if let Some(c) = &mut r.clip_config {
                fix(c);
            }
        }
        for d in &mut self.destinations {
            if let Some(p) = &mut d.path {
                fix(p);
            }
        }
        self
    }

    /// Checks what needs no file and no network.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.node;
        if n.dimse_listen.is_none() && n.http_listen.is_none() {
            return Err("[node] needs dimse_listen, http_listen or both".into());
        }
        if n.ae_title.is_empty() || n.ae_title.len() > 16 {
            return Err(format!(
                "[node] ae_title must be 1 to 16 characters, not {:?}",
                n.ae_title
            ));
        }
        if !(n.quiet_seconds.is_finite() && n.quiet_seconds >= 0.0) {
            return Err("[node] quiet_seconds must be 0 or more".into());
        }
        if n.max_queued_instances == 0 || n.max_associations == 0 {
            return Err(
                "[node] max_queued_instances and max_associations must be at least 1".into(),
            );
        }
        if !(n.max_retry_seconds.is_finite() && n.max_retry_seconds >= 1.0) {
            return Err("[node] max_retry_seconds must be at least 1".into());
        }
        if !["remove", "shift", "keep"].contains(&self.deidentification.dates.as_str()) {
            return Err(format!(
                "[deidentification] dates must be remove, shift or keep, not {:?}",
                self.deidentification.dates
            ));
        }
        if self.routes.is_empty() {
            return Err("no [[route]]: the node would score nothing".into());
        }
        let mut names = std::collections::HashSet::new();
        for d in &self.destinations {
            if !names.insert(d.name.as_str()) {
                return Err(format!("two destinations are named {:?}", d.name));
            }
            d.target(&n.ae_title)?;
        }
        let mut route_names = std::collections::HashSet::new();
        for r in &self.routes {
            if !route_names.insert(r.name.as_str()) {
                return Err(format!("two routes are named {:?}", r.name));
            }
            if !names.contains(r.destination.as_str()) {
                return Err(format!(
                    "route {:?} sends to {:?}, which no [[destination]] names",
                    r.name, r.destination
                ));
            }
            if r.batch == 0 {
                return Err(format!("route {:?}: batch must be at least 1", r.name));
            }
            r.description_pattern()?;
        }
        Ok(())
    }

    /// The first route matching `facts`.
    pub fn route_for(&self, facts: &SeriesFacts) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(facts))
    }

    /// The destination named `name`.
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../packaging/serve.example.toml");

    fn parse(text: &str) -> Result<ServeConfig, String> {
        let c: ServeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn the_packaged_example_parses_and_routes_by_modality_and_description() {
        let c = parse(EXAMPLE).unwrap();
        let chest = SeriesFacts {
            modality: "CT".into(),
            body_part: "CHEST".into(),
            description: "Thorax 1.0 B70f".into(),
        };
        assert_eq!(c.route_for(&chest).unwrap().name, "chest-ct");
        let brain = SeriesFacts {
            modality: "MR".into(),
            body_part: "HEAD".into(),
            description: "AX FLAIR".into(),
        };
        assert_eq!(c.route_for(&brain).unwrap().name, "brain-mr");
        let other = SeriesFacts {
            modality: "US".into(),
            ..SeriesFacts::default()
        };
        assert!(c.route_for(&other).is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let base = "[node]\ndata_dir = \"d\"\nhttp_listen = \"127.0.0.1:1\"\n";
        let route =
            "[[route]]\nname = \"r\"\ncheckpoint = \"c\"\nclip = \"w\"\ndestination = \"x\"\n";
        let e = parse(base).unwrap_err();
        assert!(e.contains("no [[route]]"), "{e}");
        let e = parse(&format!("{base}{route}")).unwrap_err();
        assert!(e.contains("which no [[destination]] names"), "{e}");
        let dest = "[[destination]]\nname = \"x\"\nprotocol = \"dimse\"\nhost = \"h\"\n";
        let e = parse(&format!("{base}{route}{dest}")).unwrap_err();
        assert!(e.contains("needs `port`"), "{e}");
        let e = parse(&format!("{base}bogus = 1\n{route}")).unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = parse(&format!(
            "{base}{route}series_description = \"(\"\n[[destination]]\nname = \"x\"\nprotocol = \"folder\"\npath = \"o\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("series_description"), "{e}");
        let e = parse("[node]\ndata_dir = \"d\"\n").unwrap_err();
        assert!(e.contains("dimse_listen, http_listen"), "{e}");
    }
}
