//! Configured PACS nodes and the settings file that keeps them.
//!
//! The file is JSON (`pacs_nodes.json` in the app's storage folder unless a path is given) and
//! may hold passwords and tokens, so it is written atomically with owner-only permissions on
//! Unix, and [`Secret`] hides its value from `Debug`: nodes can be logged, credentials cannot.
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tls::TlsSettings;
use super::{Limits, PacsError};
use crate::io::export::write_atomically;

/// A credential: serialised as-is into the settings file, shown as `***` everywhere else.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value` as a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that puts it on the wire.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How a DICOMweb server wants us to log in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WebAuth {
    /// No `Authorization` header.
    #[default]
    None,
    /// HTTP Basic authentication: `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// A bearer token: `Authorization: Bearer <token>`.
    Bearer {
        /// The token, sent as-is.
        token: Secret,
    },
}

/// A DIMSE peer: TCP address and the AE titles of both ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimseEndpoint {
    /// The server's host name or IP address.
    pub host: String,
    /// The server's TCP port.
    pub port: u16,
    /// The server's AE title.
    pub called_ae: String,
    /// Ours; default "MVFA_STUDIO".
    #[serde(default = "default_calling_ae")]
    pub calling_ae: String,
    /// DICOM TLS settings; `None`: plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

fn default_calling_ae() -> String {
    "MVFA_STUDIO".to_string()
}

/// A DICOMweb service: base URL (`http://` or `https://`, up to and without `/studies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebEndpoint {
    /// The service's base URL, e.g. `https://pacs.example/dicom-web`.
    pub base_url: String,
    /// How to log in (default: no authentication).
    #[serde(default)]
    pub auth: WebAuth,
    /// Certificates for an `https://` URL (own CA, client certificate); `None`: the public
    /// web roots, no client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

/// Which protocol a node speaks, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum Endpoint {
    /// DICOM networking over TCP (C-ECHO, C-FIND, C-GET).
    Dimse(DimseEndpoint),
    /// DICOMweb (PS3.18) over HTTP or HTTPS.
    Dicomweb(WebEndpoint),
}

/// One configured PACS node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name the user picks it by.
    pub name: String,
    /// The protocol and address of the server.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Network timeout in seconds (default 30).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    30
}

impl Node {
    /// The limits for operations on this node: its timeout, default size limits.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            ..Limits::default()
        }
    }
}

/// All configured nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PacsSettings {
    /// The configured nodes, in file order; [`PacsSettings::upsert`] keeps names unique.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

impl PacsSettings {
    /// `pacs_nodes.json` in the folder where the app keeps its state.
    pub fn default_path() -> Option<PathBuf> {
        eframe::storage_dir("MVFA Studio").map(|d| d.join("pacs_nodes.json"))
    }

    /// Reads the settings; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, PacsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(settings_error(path, e)),
        };
        serde_json::from_str(&text).map_err(|e| settings_error(path, e))
    }

    /// Writes the settings atomically, readable by the owner only (they may hold secrets).
    pub fn save(&self, path: &Path) -> Result<(), PacsError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| settings_error(path, e))?;
        }
        let json = serde_json::to_vec_pretty(self).map_err(|e| settings_error(path, e))?;
        write_atomically(path, |w| Ok(w.write_all(&json)?)).map_err(|e| settings_error(path, e))?;
        restrict_to_owner(path).map_err(|e| settings_error(path, e))
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Adds `node`, replacing one of the same name.
    pub fn upsert(&mut self, node: Node) {
        match self.nodes.iter_mut().find(|n| n.name == node.name) {
            Some(slot) => *slot = node,
            None => self.nodes.push(node),
        }
    }
}

fn settings_error(path: &Path, e: impl ToString) -> PacsError {
    PacsError::Settings {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output_but_round_trip_through_the_file() {
        let node = Node {
            name: "web".into(),
            endpoint: Endpoint::Dicomweb(WebEndpoint {
                base_url: "https://pacs.example/dicom-web".into(),
                auth: WebAuth::Basic {
                    username: "rad".into(),
                    password: Secret::new("hunter2"),
                },
                tls: Some(TlsSettings {
                    ca_file: Some("/etc/pacs/ca.pem".into()),
                    ..TlsSettings::default()
                }),
            }),
            timeout_secs: 5,
        };
        assert!(!format!("{node:?}").contains("hunter2"));
        let settings = PacsSettings { nodes: vec![node] };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/nodes.json");
        settings.save(&path).unwrap();
        assert_eq!(PacsSettings::load(&path).unwrap(), settings);
    }
}
