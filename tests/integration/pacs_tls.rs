//! PACS over TLS: DICOM TLS against a real Orthanc with DICOM TLS on (client certificates
//! required, as Orthanc does by default), and DICOMweb over `https://` against a real Orthanc
//! behind a TLS-terminating proxy (the way hospitals usually publish DICOMweb; Debian's
//! Orthanc 1.10 crashes on its own HTTPS). Certificates come from a CA made per run with
//! rcgen. Ignored by default (`.ci/run` runs them where Orthanc is installed); run with
//! `--ignored`, they fail where it is not.
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mvfa_studio::pacs::node::{DimseEndpoint, WebEndpoint};
use mvfa_studio::pacs::{Endpoint, Node, PacsError, TlsSettings, connect};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::pacs::{Orthanc, round_trip};
use crate::support::cli::{bin, run};

/// A throw-away PKI: a CA, a server and a client certificate it signs, and a stranger CA
/// that signs nothing we meet.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca_params = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p.distinguished_name.push(DnType::CommonName, name);
            p
        };
        let ca =
            CertifiedIssuer::self_signed(ca_params("MVFA test CA"), KeyPair::generate().unwrap())
                .unwrap();
        write("ca.pem", ca.pem());
        let stranger =
            CertifiedIssuer::self_signed(ca_params("Stranger CA"), KeyPair::generate().unwrap())
                .unwrap();
        write("stranger.pem", stranger.pem());
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ),
            ("client", vec!["mvfa-test-client".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &ca).unwrap();
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What a node needs to talk to our server: our CA, our client certificate.
    pub(crate) fn client_settings(&self) -> TlsSettings {
        TlsSettings {
            ca_file: Some(self.path("ca.pem")),
            client_cert: Some(self.path("client.pem")),
            client_key: Some(self.path("client.key")),
        }
    }
}

/// An Orthanc whose DICOM port speaks DICOM TLS only and requires a client certificate.
/// Fails (never passes quietly) when it cannot start.
fn orthanc_with_dicom_tls(pki: &Pki, what: &str) -> Orthanc {
    let p = |name: &str| pki.path(name).to_string_lossy().into_owned();
    let started = Orthanc::start_with(
        &[],
        serde_json::json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": p("server.pem"),
            "DicomTlsPrivateKey": p("server.key"),
            "DicomTlsTrustedCertificates": p("ca.pem"),
            "DicomTlsRemoteCertificateRequired": true,
        }),
    );
    crate::pacs::started(what, started)
}

fn with_dimse_tls(orthanc: &Orthanc, tls: Option<TlsSettings>) -> Node {
    let mut node = orthanc.dimse();
    if let Endpoint::Dimse(DimseEndpoint { tls: slot, .. }) = &mut node.endpoint {
        *slot = tls;
    }
    node.timeout_secs = 5;
    node
}

fn expect_quick_error(what: &str, node: &Node) -> PacsError {
    let started = Instant::now();
    let result = connect(node).and_then(|c| c.echo());
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "{what} took {elapsed:?}");
    let e = result.expect_err(what);
    eprintln!("{what}: {e}");
    e
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn orthanc_dicom_tls_store_find_get_byte_identical_and_send_back() {
    let pki = Pki::new();
    let orthanc = orthanc_with_dicom_tls(&pki, "DICOM TLS round trip");
    let node = with_dimse_tls(&orthanc, Some(pki.client_settings()));
    round_trip(&node, &node);
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn dicom_tls_failures_are_reported_clearly_and_quickly() {
    let pki = Pki::new();
    let orthanc = orthanc_with_dicom_tls(&pki, "DICOM TLS failures");
    // The server's certificate is not signed by the CA we trust.
    let e = expect_quick_error(
        "untrusted server certificate",
        &with_dimse_tls(
            &orthanc,
            Some(TlsSettings {
                ca_file: Some(pki.path("stranger.pem")),
                ..pki.client_settings()
            }),
        ),
    );
    assert!(matches!(e, PacsError::Connect { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.contains("certificate"), "{text}");
    // Without a client certificate Orthanc refuses us.
    let e = expect_quick_error(
        "no client certificate",
        &with_dimse_tls(
            &orthanc,
            Some(TlsSettings {
                ca_file: Some(pki.path("ca.pem")),
                ..TlsSettings::default()
            }),
        ),
    );
    assert!(matches!(e, PacsError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("--client-cert"), "{e}");
    // Plain DIMSE to a TLS port: an error, not a hang.
    let e = expect_quick_error("plain DIMSE to a TLS port", &with_dimse_tls(&orthanc, None));
    assert!(e.to_string().contains("TLS settings"), "{e}");
    // A certificate file that is not one.
    let e = expect_quick_error(
        "bad CA file",
        &with_dimse_tls(
            &orthanc,
            Some(TlsSettings {
                ca_file: Some(pki.path("client.key")),
                ..pki.client_settings()
            }),
        ),
    );
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    assert!(e.to_string().contains("client.key"), "{e}");
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn pacs_cli_echoes_over_dicom_tls() {
    let pki = Pki::new();
    let orthanc = orthanc_with_dicom_tls(&pki, "pacs CLI over DICOM TLS");
    let port = orthanc.dicom_port.to_string();
    let path = |n: &str| pki.path(n).to_string_lossy().into_owned();
    let (out, stdout, stderr) = run(bin()
        .args([
            "pacs",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--aet",
            "ORTHANC",
        ])
        .args(["--ca-file", &path("ca.pem")])
        .args(["--client-cert", &path("client.pem")])
        .args(["--client-key", &path("client.key")])
        .arg("echo"));
    assert!(out.status.success(), "{stdout}{stderr}");
}

/// A TLS-terminating proxy on 127.0.0.1 in front of `upstream` (plain HTTP), with the PKI's
/// server certificate. Returns its port; it serves until the test process ends.
fn https_proxy(pki: &Pki, upstream: u16) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = Arc::clone(&config);
            std::thread::spawn(move || relay(stream, config, upstream));
        }
    });
    port
}

/// Relays one connection: TLS on `client`'s side, plain TCP to `upstream`, until either ends.
fn relay(client: TcpStream, config: Arc<rustls::ServerConfig>, upstream: u16) {
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let poll = Some(Duration::from_millis(5));
    if client.set_read_timeout(poll).is_err() || server.set_read_timeout(poll).is_err() {
        return;
    }
    let mut tls = rustls::StreamOwned::new(connection, client);
    let idle = |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if server.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        match server.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
    }
}

fn https_node(port: u16, tls: Option<TlsSettings>) -> Node {
    Node {
        name: "orthanc-https".into(),
        endpoint: Endpoint::Dicomweb(WebEndpoint {
            base_url: format!("https://localhost:{port}/dicom-web"),
            auth: Default::default(),
            tls,
        }),
        timeout_secs: 20,
    }
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn orthanc_dicomweb_over_https_store_find_get_byte_identical_and_send_back() {
    let orthanc = crate::pacs::orthanc("DICOMweb over https");
    let pki = Pki::new();
    let port = https_proxy(&pki, orthanc.http_port);
    let node = https_node(
        port,
        Some(TlsSettings {
            ca_file: Some(pki.path("ca.pem")),
            ..TlsSettings::default()
        }),
    );
    round_trip(&node, &node);
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn https_failures_are_reported_clearly() {
    let orthanc = crate::pacs::orthanc("https failures");
    let pki = Pki::new();
    let port = https_proxy(&pki, orthanc.http_port);
    // Our CA is not among the public roots, nor is it the stranger.
    for (what, tls) in [
        ("public roots only", None),
        (
            "stranger CA",
            Some(TlsSettings {
                ca_file: Some(pki.path("stranger.pem")),
                ..TlsSettings::default()
            }),
        ),
    ] {
        let e = expect_quick_error(what, &https_node(port, tls));
        assert!(matches!(e, PacsError::Connect { .. }), "{what}: {e:?}");
        assert!(e.to_string().contains("certificate"), "{what}: {e}");
    }
    // Certificates are for https only.
    let mut plain = orthanc.web();
    if let Endpoint::Dicomweb(w) = &mut plain.endpoint {
        w.tls = Some(TlsSettings {
            ca_file: Some(pki.path("ca.pem")),
            ..TlsSettings::default()
        });
    }
    let e = connect(&plain).map(drop).unwrap_err();
    assert!(matches!(e, PacsError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("https://"), "{e}");
}
