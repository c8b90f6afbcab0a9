//! TLS for PACS nodes: DICOM TLS (PS3.15 B.1, the secure transport connection profile) for
//! DIMSE, `https://` for DICOMweb.
//!
//! Hospitals sign their PACS certificates with their own CA far more often than with a public
//! one, so a node names the CA file to trust; without one, Mozilla's roots (`webpki-roots`)
//! are used. Servers that authenticate their peers (Orthanc's default for DICOM TLS) get our
//! client certificate and key. The files are PEM; they are read at each operation, so a
//! renewed certificate needs no restart. Certificates are verified with the node's host
//! name or IP address; there is deliberately no "accept any certificate" switch.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

use super::PacsError;

/// How to secure the connection to a node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) that sign the server's certificate; `None`: the
    /// public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM file with our certificate (chain), for servers that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM file with the private key of [`TlsSettings::client_cert`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

/// The certificates and key of [`TlsSettings`], read and checked.
pub(crate) struct TlsMaterial {
    /// Trusted CAs; `None`: the public web roots.
    roots: Option<Vec<CertificateDer<'static>>>,
    /// Our certificate chain and its key.
    client: Option<ClientIdentity>,
}

/// Our certificate chain and its private key (also as PEM, the form ureq reads).
struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_pem: Vec<u8>,
}

fn tls_file_error(what: &str, path: &Path, reason: impl std::fmt::Display) -> PacsError {
    PacsError::Invalid(format!("TLS {what} {}: {reason}", path.display()))
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, PacsError> {
    std::fs::read(path).map_err(|e| tls_file_error(what, path, e))
}

/// The certificates of `path`; an error when it holds none.
fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PacsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(tls_file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

impl TlsSettings {
    /// Reads the files named; a missing file, one without the expected PEM item, or a
    /// certificate without its key (or the reverse) is [`PacsError::Invalid`] naming it.
    pub(crate) fn load(&self) -> Result<TlsMaterial, PacsError> {
        let roots = match &self.ca_file {
            Some(path) => Some(certificates("CA file", path)?),
            None => None,
        };
        let client = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(cert), Some(key_path)) => {
                let chain = certificates("client certificate", cert)?;
                let key_pem = read("client key", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| tls_file_error("client key", key_path, e))?;
                Some(ClientIdentity {
                    chain,
                    key,
                    key_pem,
                })
            }
            _ => {
                return Err(PacsError::Invalid(
                    "a TLS client certificate needs its key, and a key its certificate".into(),
                ));
            }
        };
        Ok(TlsMaterial { roots, client })
    }
}

impl TlsMaterial {
    /// The rustls client configuration for DICOM TLS (ring provider, TLS 1.2 and 1.3).
    pub(crate) fn rustls_config(&self) -> Result<Arc<rustls::ClientConfig>, PacsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.roots {
            Some(certs) => {
                for cert in certs {
                    roots.add(cert.clone()).map_err(|e| {
                        PacsError::Invalid(format!("TLS CA certificate not usable: {e}"))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PacsError::Invalid(format!("TLS set-up: {e}")))?
            .with_root_certificates(roots);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| PacsError::Invalid(format!("TLS client certificate: {e}")))?,
        };
        Ok(Arc::new(config))
    }

    /// The ureq TLS configuration for `https://` DICOMweb nodes.
    pub(crate) fn ureq_config(&self) -> Result<TlsConfig, PacsError> {
        let ureq_cert =
            |der: &CertificateDer<'static>| Certificate::from_der(der.as_ref()).to_owned();
        let roots = match &self.roots {
            Some(certs) => {
                RootCerts::new_with_certs(&certs.iter().map(ureq_cert).collect::<Vec<_>>())
            }
            None => RootCerts::WebPki,
        };
        let client = match &self.client {
            None => None,
            Some(id) => {
                let key = PrivateKey::from_pem(&id.key_pem)
                    .map_err(|e| PacsError::Invalid(format!("TLS client key: {e}")))?;
                let chain: Vec<_> = id.chain.iter().map(ureq_cert).collect();
                Some(ClientCert::new_with_certs(&chain, key))
            }
        };
        Ok(TlsConfig::builder()
            .root_certs(roots)
            .client_cert(client)
            .build())
    }
}
