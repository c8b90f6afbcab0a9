//! The AI node (`mvfa-studio serve`): a headless scorer that a PACS or a modality sends
//! studies to.
//!
//! - [`config`]: the TOML file: listeners, limits, routes (which detector scores which
//!   series), destinations, de-identification.
//! - [`store_scp`] (DICOM C-STORE over dicom-ul, optionally TLS) and [`http`] (STOW-RS,
//!   `/health`, `/metrics`, optionally HTTPS) receive instances through [`intake`], which
//!   stores each one and records it in the [`journal`] before the sender hears "success".
//! - [`pipeline`]: the scorer turns complete series into Parametric Maps, Segmentations and
//!   a measurement report (the export of `score --dicom`); the sender delivers them to the
//!   route's destination, retrying with back-off.
//! - [`metrics`]: Prometheus counters and gauges.
//!
//! Everything a restart needs is in the journal; nothing in memory is needed to resume.
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod config;
pub mod http;
pub mod intake;
pub mod journal;
pub mod metrics;
pub mod pipeline;
pub mod store_scp;

use config::{LogFormat, ServeConfig, ServerTls, Target};
use intake::Intake;
use journal::Journal;
use metrics::Metrics;
use pipeline::Workers;
use store_scp::ScpContext;

use crate::io::export::write_atomically;
use crate::workflow::{DicomExport, open_scorer};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(String);

fn fail(e: impl std::fmt::Display) -> ServeError {
    ServeError(e.to_string())
}

/// Sends log lines to standard error, as JSON objects or text.
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// The server-side TLS configuration for both listeners; `alpn` names the protocols offered
/// (HTTP/1.1 for HTTPS, none for DICOM).
fn server_tls(tls: &ServerTls, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| fail(format!("TLS {what} {}: {e}", path.display())))
    };
    let certs = |what: &str, path: &Path| -> Result<Vec<CertificateDer<'static>>, ServeError> {
        let bytes = read(what, path)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("TLS {what} {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(fail(format!(
                "TLS {what} {}: no PEM certificate in it",
                path.display()
            )));
        }
        Ok(certs)
    };
    let chain = certs("certificate", &tls.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read("key", &tls.key)?)
        .map_err(|e| fail(format!("TLS key {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(fail)?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("client CA", ca)? {
                roots.add(c).map_err(fail)?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(fail)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| fail(format!("TLS certificate and key: {e}")))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The de-identification settings, with the key from the environment or from
/// `data_dir/deid.key` (created once, readable by the owner only).
fn dicom_export(config: &ServeConfig) -> Result<DicomExport, ServeError> {
    let d = &config.deidentification;
    let key = if d.identified {
        None
    } else if let Some(var) = &d.key_env {
        Some(std::env::var(var).map_err(|_| {
            fail(format!(
                "[deidentification] key_env: environment variable {var} is not set"
            ))
        })?)
    } else {
        let path = config.node.data_dir.join("deid.key");
        match std::fs::read_to_string(&path) {
            Ok(k) if !k.trim().is_empty() => Some(k.trim().to_string()),
            _ => {
                let bytes: [u8; 32] = rand::random();
                let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_atomically(&path, |w| Ok(w.write_all(key.as_bytes())?)).map_err(fail)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
                }
                Some(key)
            }
        }
    };
    use crate::io::export::Dates;
    Ok(DicomExport {
        identified: d.identified,
        dates: match d.dates.as_str() {
            "shift" => Dates::Shift,
            "keep" => Dates::Keep,
            _ => Dates::Remove,
        },
        retain_patient_characteristics: d.retain_patient_characteristics,
        retain_device_identity: d.retain_device_identity,
        key,
        ..DicomExport::default()
    })
}

/// Runs the node until the process is stopped.
pub fn run(config: ServeConfig) -> Result<(), ServeError> {
    init_logging(config.node.log_format);
    let node = &config.node;
    let incoming = node.data_dir.join("incoming");
    std::fs::create_dir_all(&incoming)
        .map_err(|e| fail(format!("cannot create {}: {e}", incoming.display())))?;
    let mut journal = Journal::open(&node.data_dir).map_err(fail)?;
    let (rescore, collecting) = journal.resume().map_err(fail)?;
    let counts = journal.counts().map_err(fail)?;
    tracing::info!(
        rescore,
        collecting,
        queued_instances = counts.queued_instances,
        unsent_results = counts.unsent_results,
        "journal opened"
    );
    let dicom = dicom_export(&config)?;
    let journal = Arc::new(Mutex::new(journal));
    let metrics = Arc::new(Metrics::default());
    let intake = Arc::new(Intake {
        journal: journal.clone(),
        metrics: metrics.clone(),
        incoming,
        max_queued: node.max_queued_instances,
    });
    let max_object_bytes = node.max_instance_mib << 20;

    let mut threads = Vec::new();
    if let Some(addr) = node.dimse_listen {
        let listener =
            TcpListener::bind(addr).map_err(|e| fail(format!("cannot listen on {addr}: {e}")))?;
        let tls = config
            .tls
            .as_ref()
            .map(|t| server_tls(t, &[]))
            .transpose()?;
        let ctx = Arc::new(ScpContext {
            intake: intake.clone(),
            ae_title: node.ae_title.clone(),
            allowed_callers: node.allowed_callers.clone(),
            tls,
            max_associations: node.max_associations,
            max_object_bytes,
            complete_at_release: node.complete_at_release,
            timeout: Duration::from_secs(60),
        });
        tracing::info!(%addr, ae_title = node.ae_title, tls = config.tls.is_some(), "DICOM listener up");
        threads.push(std::thread::spawn(move || store_scp::serve(listener, ctx)));
    }
    if let Some(addr) = node.http_listen {
        let std_listener =
            TcpListener::bind(addr).map_err(|e| fail(format!("cannot listen on {addr}: {e}")))?;
        std_listener.set_nonblocking(true).map_err(fail)?;
        let tls = config
            .tls
            .as_ref()
            .map(|t| server_tls(t, &[b"http/1.1"]))
            .transpose()?;
        let ctx = Arc::new(http::HttpContext {
            intake: intake.clone(),
            complete_at_release: node.complete_at_release,
            requests: tokio::sync::Semaphore::new(node.max_associations),
            retry_after: 30,
        });
        let max_body = max_object_bytes.saturating_mul(4);
        tracing::info!(%addr, tls = tls.is_some(), "HTTP listener up (STOW-RS, /health, /metrics)");
        threads.push(std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the HTTP runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let tcp = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot use the HTTP listener");
                        return;
                    }
                };
                let app = http::router(ctx, max_body);
                let served = match tls {
                    None => axum::serve(tcp, app).await,
                    Some(cfg) => {
                        let listener = http::TlsListener {
                            tcp,
                            acceptor: tokio_rustls::TlsAcceptor::from(cfg),
                        };
                        axum::serve(listener, app).await
                    }
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP listener stopped");
                }
            });
        }));
    }

    let backend = crate::backend::probe(node.cpu);
    tracing::info!(
        backend = backend.backend,
        device = backend.device,
        "scoring backend"
    );
    let workers = Arc::new(Workers {
        config: Arc::new(config.clone()),
        journal,
        metrics,
        backend,
        dicom,
        stop: Arc::new(AtomicBool::new(false)),
    });
    let scorer = workers.clone();
    threads.push(std::thread::spawn(move || scorer.score_loop()));
    let sender = workers.clone();
    threads.push(std::thread::spawn(move || sender.send_loop()));
    tracing::info!("node ready");
    for t in threads {
        let _ = t.join();
    }
    Err(fail("a listener stopped; see the log"))
}

/// One line of `serve --check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    /// What was checked.
    pub what: String,
    /// `None` when it passed, else why not.
    pub problem: Option<String>,
}

/// `serve --check`: the data folder, the listen addresses, TLS, every detector and every
/// destination (C-ECHO, a minimal QIDO-RS search, or a write to the folder).
pub fn check(config: &ServeConfig) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let mut line = |what: String, result: Result<(), String>| {
        lines.push(CheckLine {
            what,
            problem: result.err(),
        })
    };
    let node = &config.node;
    line(
        format!("data folder {}", node.data_dir.display()),
        std::fs::create_dir_all(&node.data_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                Journal::open(&node.data_dir)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
    );
    for (kind, addr) in [("DICOM", node.dimse_listen), ("HTTP", node.http_listen)] {
        if let Some(addr) = addr {
            line(
                format!("{kind} listen address {addr}"),
                TcpListener::bind(addr)
                    .map(|_| ())
                    .map_err(|e| format!("{e} (is the node already running, or the port taken?)")),
            );
        }
    }
    if let Some(tls) = &config.tls {
        line(
            format!("TLS certificate {}", tls.cert.display()),
            server_tls(tls, &[]).map(|_| ()).map_err(|e| e.to_string()),
        );
    }
    if let Some(var) = config
        .deidentification
        .key_env
        .as_ref()
        .filter(|_| !config.deidentification.identified)
    {
        line(
            format!("de-identification key in ${var}"),
            std::env::var(var)
                .map(|_| ())
                .map_err(|_| "not set".to_string()),
        );
    }
    let backend = crate::backend::probe(node.cpu);
    for route in &config.routes {
        line(
            format!(
                "route {}: detector {} with {}",
                route.name,
                route.checkpoint.display(),
                route.clip.display()
            ),
            open_scorer(&route.scorer_spec(), &backend)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
    }
    for dest in &config.destinations {
        let result = dest.target(&node.ae_title).and_then(|target| match target {
            Target::Folder(dir) => std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    let probe = dir.join(".mvfa-node-check");
                    std::fs::write(&probe, b"")?;
                    std::fs::remove_file(probe)
                })
                .map_err(|e| format!("{}: {e}", dir.display())),
            Target::Node(n) => crate::pacs::connect(&n)
                .and_then(|c| c.echo())
                .map_err(|e| e.to_string()),
        });
        line(
            format!("destination {} ({})", dest.name, dest.protocol),
            result,
        );
    }
    lines
}
