//! PACS client against a real Orthanc (started here on loopback, free ports, temporary
//! storage, generated config; skipped with a printed reason where Orthanc is not installed),
//! and against tiny hostile servers on 127.0.0.1 (always run).
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use mvfa_studio::io::export::{
    COMPREHENSIVE_SR_SOP_CLASS, ScOptions, SourceAttributes, write_secondary_capture,
};
use mvfa_studio::io::image::Channels;
use mvfa_studio::io::resample::Image8;
use mvfa_studio::pacs::node::{DimseEndpoint, WebEndpoint};
use mvfa_studio::pacs::{
    Endpoint, GetTarget, InstanceRef, Level, Limits, Node, PacsClient, PacsError, Query, Secret,
    WebAuth, connect, retrieve,
};
use mvfa_studio::workflow::{DicomExport, results_sr_name};

use crate::support::cli::{bin, run};
use crate::support::fixture_dir;

const ORTHANC: &str = "/usr/sbin/Orthanc";
const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// The committed fixtures that are valid DICOM instances (the corpus sent to Orthanc).
const CORPUS: &[&str] = &[
    "ct_rescale_windows.dcm",
    "ct_rescale_windows_bigendian.dcm",
    "ct_rescale_windows_implicit.dcm",
    "cr_mono1_sigmoid.dcm",
    "enhanced_multiframe.dcm",
    "multiframe_j2k.dcm",
    "multiframe_jpegls.dcm",
    "multiframe_rle.dcm",
    "palette.dcm",
    "rgb_planar.dcm",
    "ybr_full.dcm",
    "ybr_full_422.dcm",
];

const NATIVE_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
];

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// An Orthanc process with its own folder; killed when dropped.
pub(crate) struct Orthanc {
    child: Child,
    _dir: tempfile::TempDir,
    pub(crate) http_port: u16,
    pub(crate) dicom_port: u16,
}

impl Orthanc {
    /// Starts Orthanc, or says why it cannot (then the caller skips).
    fn start() -> Result<Self, String> {
        Self::start_with_users(&[])
    }

    /// [`Orthanc::start`] with HTTP basic authentication for these (user, password) pairs.
    fn start_with_users(users: &[(&str, &str)]) -> Result<Self, String> {
        Self::start_with(users, serde_json::json!({}))
    }

    /// [`Orthanc::start`] with basic authentication for `users` and the configuration entries
    /// of `extra` (a JSON object) added or replaced.
    pub(crate) fn start_with(
        users: &[(&str, &str)],
        extra: serde_json::Value,
    ) -> Result<Self, String> {
        if !Path::new(ORTHANC).exists() {
            return Err(format!(
                "{ORTHANC} not installed (apt-get install orthanc orthanc-dicomweb)"
            ));
        }
        if !Path::new(DICOMWEB_PLUGIN).exists() {
            return Err(format!(
                "{DICOMWEB_PLUGIN} not installed (apt-get install orthanc-dicomweb)"
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (http_port, dicom_port) = (free_port(), free_port());
        let storage = dir.path().join("storage");
        let registered: serde_json::Map<String, serde_json::Value> = users
            .iter()
            .map(|(u, p)| (u.to_string(), serde_json::Value::from(*p)))
            .collect();
        let mut config = serde_json::json!({
            "Name": "mvfa-test",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": !users.is_empty(),
            "RegisteredUsers": registered,
            "HttpServerEnabled": true,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowEcho": true,
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowFind": true,
            "DicomAlwaysAllowGet": true,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
            "ConcurrentJobs": 1,
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        // `extra` may name the ports (a destination that must come back on its old port).
        let port_of = |key: &str, default: u16| {
            config[key]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(default)
        };
        let (http_port, dicom_port) = (
            port_of("HttpPort", http_port),
            port_of("DicomPort", dicom_port),
        );
        let config_path = dir.path().join("orthanc.json");
        std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("orthanc.log")).map_err(|e| e.to_string())?;
        let child = Command::new(ORTHANC)
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {ORTHANC}: {e}"))?;
        let orthanc = Orthanc {
            child,
            _dir: dir,
            http_port,
            dicom_port,
        };
        // Both listeners up: bounded wait (30 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let up = |port| TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(http_port) && up(dicom_port) {
                return Ok(orthanc);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("Orthanc did not open its ports within 30 s".into())
    }

    pub(crate) fn dimse(&self) -> Node {
        Node {
            name: "orthanc-dimse".into(),
            endpoint: Endpoint::Dimse(DimseEndpoint {
                host: "127.0.0.1".into(),
                port: self.dicom_port,
                called_ae: "ORTHANC".into(),
                calling_ae: "MVFA_TEST".into(),
                tls: None,
            }),
            timeout_secs: 20,
        }
    }

    pub(crate) fn web(&self) -> Node {
        Node {
            name: "orthanc-web".into(),
            endpoint: Endpoint::Dicomweb(WebEndpoint {
                base_url: format!("http://127.0.0.1:{}/dicom-web", self.http_port),
                auth: WebAuth::None,
                tls: None,
            }),
            timeout_secs: 20,
        }
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn open(path: &Path) -> DefaultDicomObject {
    OpenFileOptions::new()
        .open_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn text(obj: &DefaultDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// The corpus by SOP Instance UID.
pub(crate) fn corpus() -> BTreeMap<String, PathBuf> {
    CORPUS
        .iter()
        .map(|name| {
            let path = fixture_dir("dicom").join(name);
            (text(&open(&path), tags::SOP_INSTANCE_UID), path)
        })
        .collect()
}

/// Stores the corpus, queries it, retrieves every study byte-identical (UIDs, pixel data),
/// resumes after a deleted file, sends a result back and finds it.
pub(crate) fn round_trip(store_with: &Node, get_with: &Node) {
    let corpus = corpus();
    let storer = connect(store_with).unwrap();
    storer.echo().unwrap();
    for (uid, path) in &corpus {
        assert_eq!(&storer.store(path).unwrap(), uid, "{}", path.display());
    }
    let client = connect(get_with).unwrap();
    client.echo().unwrap();
    let studies = client.find(&Query::default()).unwrap();
    let expected_studies: std::collections::BTreeSet<String> = corpus
        .values()
        .map(|p| text(&open(p), tags::STUDY_INSTANCE_UID))
        .collect();
    let found: std::collections::BTreeSet<String> =
        studies.iter().map(|m| m.study_uid.clone()).collect();
    assert_eq!(found, expected_studies);

    // Criteria narrow the search.
    let ct = open(&corpus[corpus.keys().next().unwrap()]);
    let by_id = client
        .find(&Query {
            patient_id: Some(text(&ct, tags::PATIENT_ID)),
            ..Query::default()
        })
        .unwrap();
    assert!(!by_id.is_empty());
    assert!(
        by_id
            .iter()
            .all(|m| m.patient_id == text(&ct, tags::PATIENT_ID))
    );
    let none = client
        .find(&Query {
            patient_id: Some("NO-SUCH-PATIENT".into()),
            ..Query::default()
        })
        .unwrap();
    assert!(none.is_empty());

    let out = tempfile::tempdir().unwrap();
    let mut got = 0;
    for study in &expected_studies {
        let target = GetTarget {
            study_uid: study.clone(),
            series_uid: None,
        };
        let mut last = None;
        let report = retrieve::get(
            client.as_ref(),
            &target,
            out.path(),
            &mut |p| last = Some(p),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(report.written, report.total);
        assert_eq!(last.map(|p| p.written), Some(report.total));
        got += report.written;
    }
    assert_eq!(got, corpus.len());
    let mut retrieved = Vec::new();
    collect_dcm(out.path(), &mut retrieved);
    assert_eq!(retrieved.len(), corpus.len());
    for path in &retrieved {
        let back = open(path);
        let uid = text(&back, tags::SOP_INSTANCE_UID);
        let original = open(&corpus[&uid]);
        for tag in [
            tags::SOP_INSTANCE_UID,
            tags::SOP_CLASS_UID,
            tags::STUDY_INSTANCE_UID,
            tags::SERIES_INSTANCE_UID,
        ] {
            assert_eq!(text(&back, tag), text(&original, tag), "{}", path.display());
        }
        // Compressed pixel data must come back in its own syntax, fragment for fragment.
        // Uncompressed data may change byte order (Orthanc sends the retired big endian
        // syntax as little endian over DIMSE); the decoded values compared below stay equal.
        let syntax = |o: &DefaultDicomObject| {
            o.meta()
                .transfer_syntax()
                .trim_end_matches('\0')
                .to_string()
        };
        if !NATIVE_SYNTAXES.contains(&syntax(&original).as_str()) {
            assert_eq!(syntax(&back), syntax(&original), "{}", path.display());
        }
        assert_eq!(
            back.element(tags::PIXEL_DATA).unwrap().value(),
            original.element(tags::PIXEL_DATA).unwrap().value(),
            "pixel data of {}",
            corpus[&uid].display()
        );
    }

    // Resume: only the deleted file is fetched again.
    let victim = &retrieved[0];
    std::fs::remove_file(victim).unwrap();
    let study = text(
        &open(&corpus[&victim_uid(victim)]),
        tags::STUDY_INSTANCE_UID,
    );
    let report = retrieve::get(
        client.as_ref(),
        &GetTarget {
            study_uid: study,
            series_uid: None,
        },
        out.path(),
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!((report.written, report.skipped + 1), (1, report.total));
    assert!(victim.is_file());

    // A result goes back into the source's study and can be found there.
    let source = &corpus[corpus.keys().next().unwrap()];
    let results = tempfile::tempdir().unwrap();
    let sc_path = results.path().join("result.sc.dcm");
    let overlay = Image8 {
        width: 8,
        height: 4,
        channels: Channels::Rgb,
        data: vec![200; 8 * 4 * 3],
    };
    let written = write_secondary_capture(
        &sc_path,
        &overlay,
        &SourceAttributes::from_file(source).unwrap(),
        // Identified, so the result lands in the source's study.
        &ScOptions {
            anonymise: None,
            ..ScOptions::default()
        },
    )
    .unwrap();
    assert_eq!(client.store(&sc_path).unwrap(), written.sop_instance_uid);
    let series = client
        .find(&Query {
            level: Level::Series,
            study_uid: Some(written.study_instance_uid.clone()),
            modality: Some("OT".into()),
            ..Query::default()
        })
        .unwrap();
    assert!(
        series
            .iter()
            .any(|m| m.series_uid == written.series_instance_uid),
        "{series:?}"
    );
    assert!(series.iter().all(|m| m.modality == "OT"), "{series:?}");
}

fn victim_uid(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

fn collect_dcm(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_dcm(&path, out);
        } else {
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("dcm"),
                "stray file {}",
                path.display()
            );
            out.push(path);
        }
    }
    out.sort();
}

/// Why the Orthanc tests are ignored by default; `.ci/run` runs them where Orthanc is
/// installed (`cargo test -- --ignored pacs`).
pub(crate) const NEEDS_ORTHANC: &str = "needs Orthanc";

/// A running Orthanc for the test `what`; fails (never passes quietly) when it cannot start.
pub(crate) fn orthanc(what: &str) -> Orthanc {
    started(what, Orthanc::start())
}

pub(crate) fn started(what: &str, started: Result<Orthanc, String>) -> Orthanc {
    started.unwrap_or_else(|reason| {
        panic!("{what} {NEEDS_ORTHANC} (Debian orthanc, orthanc-dicomweb): {reason}")
    })
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn dicomweb_basic_authentication_is_sent_and_refusal_is_reported() {
    let orthanc = started(
        "DICOMweb authentication",
        Orthanc::start_with_users(&[("rad", "s3cret-pw")]),
    );
    let with = |auth: WebAuth| {
        let mut node = orthanc.web();
        if let Endpoint::Dicomweb(w) = &mut node.endpoint {
            w.auth = auth;
        }
        connect(&node).unwrap().echo()
    };
    with(WebAuth::Basic {
        username: "rad".into(),
        password: Secret::new("s3cret-pw"),
    })
    .unwrap();
    for auth in [
        WebAuth::None,
        WebAuth::Basic {
            username: "rad".into(),
            password: Secret::new("wrong-pw"),
        },
    ] {
        let e = with(auth).unwrap_err();
        assert!(matches!(e, PacsError::Http { status: 401, .. }), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("pw"), "{e}");
    }
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn orthanc_dimse_store_find_get_byte_identical_and_send_back() {
    {
        let orthanc = orthanc("orthanc_dimse round trip");
        let node = orthanc.dimse();
        round_trip(&node, &node);
    }
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn cancelled_retrieval_keeps_complete_files_and_a_rerun_fetches_the_rest() {
    let orthanc = orthanc("cancelled retrieval");
    let corpus = corpus();
    let study = text(
        &open(corpus.values().next().unwrap()),
        tags::STUDY_INSTANCE_UID,
    );
    for node in [orthanc.dimse(), orthanc.web()] {
        let client = connect(&node).unwrap();
        for path in corpus.values() {
            client.store(path).unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let target = GetTarget {
            study_uid: study.clone(),
            series_uid: None,
        };
        // The user cancels once the third instance is written.
        let cancel = AtomicBool::new(false);
        let e = retrieve::get(
            client.as_ref(),
            &target,
            out.path(),
            &mut |p| {
                if p.written == 3 {
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            &cancel,
        )
        .unwrap_err();
        assert!(matches!(e, PacsError::Cancelled), "{e:?}");
        let mut files = Vec::new();
        collect_dcm(out.path(), &mut files);
        assert_eq!(files.len(), 3, "{}: {files:?}", node.name);
        for f in &files {
            open(f);
        }
        let report = retrieve::get(
            client.as_ref(),
            &target,
            out.path(),
            &mut |_| {},
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(
            (report.skipped, report.written, report.total),
            (3, corpus.len() - 3, corpus.len())
        );
        // Set before the start, nothing is asked of the server.
        let e = retrieve::get(
            client.as_ref(),
            &target,
            out.path(),
            &mut |_| panic!("no progress after a cancel"),
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(matches!(e, PacsError::Cancelled), "{e:?}");
    }
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn orthanc_dicomweb_store_find_get_byte_identical_and_send_back() {
    {
        let orthanc = orthanc("orthanc_dicomweb round trip");
        let node = orthanc.web();
        round_trip(&node, &node);
    }
}

fn cli(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let (out, stdout, stderr) = run(bin()
        .args(args)
        .env("MVFA_TEST_PACS_PASSWORD", "pw-that-must-not-leak"));
    assert!(
        !stdout.contains("pw-that-must-not-leak") && !stderr.contains("pw-that-must-not-leak"),
        "credential printed"
    );
    (out.status.success(), stdout, stderr)
}

#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn pacs_cli_saves_nodes_echoes_sends_finds_and_gets_against_orthanc() {
    let orthanc = orthanc("pacs CLI test");
    let tmp = tempfile::tempdir().unwrap();
    let nodes = tmp.path().join("nodes.json");
    let os = |s: &str| std::ffi::OsString::from(s);
    let run = |args: &[&str]| {
        let mut all = vec![os("pacs"), os("--nodes"), nodes.clone().into_os_string()];
        all.extend(args.iter().map(|a| os(a)));
        let refs: Vec<&std::ffi::OsStr> = all.iter().map(|a| a.as_os_str()).collect();
        let (ok, stdout, stderr) = cli(&refs);
        assert!(ok, "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        stdout
    };
    let web_url = format!("http://127.0.0.1:{}/dicom-web", orthanc.http_port);
    let port = orthanc.dicom_port.to_string();
    run(&[
        "nodes",
        "add",
        "web",
        "--url",
        &web_url,
        "--user",
        "rad",
        "--password-env",
        "MVFA_TEST_PACS_PASSWORD",
    ]);
    run(&[
        "nodes",
        "add",
        "dimse",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--aet",
        "ORTHANC",
    ]);
    let listed = run(&["nodes", "list"]);
    assert!(
        listed.contains("web\tdicomweb") && listed.contains("dimse\tdimse"),
        "{listed}"
    );
    assert!(
        std::fs::read_to_string(&nodes)
            .unwrap()
            .contains("pw-that-must-not-leak")
    );

    assert!(run(&["--node", "dimse", "echo"]).contains("answers"));
    assert!(run(&["--node", "web", "echo"]).contains("answers"));
    let fixture = fixture_dir("dicom").join("ct_rescale_windows.dcm");
    let sent = run(&["--node", "web", "send", fixture.to_str().unwrap()]);
    assert!(sent.contains("1 of 1 file(s) stored"), "{sent}");
    let study = text(&open(&fixture), tags::STUDY_INSTANCE_UID);
    for node in ["dimse", "web"] {
        let found = run(&[
            "--node",
            node,
            "find",
            "--patient-id",
            "FIX-001",
            "--modality",
            "CT",
        ]);
        assert!(found.starts_with(&study), "{node}: {found}");
    }
    let out = tmp.path().join("got");
    let out_s = out.to_str().unwrap();
    let got = run(&["--node", "dimse", "get", "--study", &study, "--out", out_s]);
    assert!(got.contains("1 retrieved, 0 already present"), "{got}");
    let again = run(&["--node", "web", "get", "--study", &study, "--out", out_s]);
    assert!(again.contains("0 retrieved, 1 already present"), "{again}");
}

// ---------------------------------------------------------------------------------------
// Hostile servers: each is one thread on 127.0.0.1 that serves one scripted connection.

const SHORT: Duration = Duration::from_secs(1);

fn dimse_node(port: u16) -> Node {
    Node {
        name: "fake".into(),
        endpoint: Endpoint::Dimse(DimseEndpoint {
            host: "127.0.0.1".into(),
            port,
            called_ae: "FAKE".into(),
            calling_ae: "MVFA_TEST".into(),
            tls: None,
        }),
        timeout_secs: 1,
    }
}

fn web_node(port: u16) -> Node {
    Node {
        name: "fake".into(),
        endpoint: Endpoint::Dicomweb(WebEndpoint {
            base_url: format!("http://127.0.0.1:{port}/dicom-web"),
            auth: WebAuth::None,
            tls: None,
        }),
        timeout_secs: 1,
    }
}

/// Serves one connection with `script` on a free port.
fn fake_server(script: impl FnOnce(TcpStream) + Send + 'static) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
            script(stream);
        }
    });
    (port, handle)
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    free_port()
}

fn assert_quick<T>(what: &str, started: Instant, result: Result<T, PacsError>) -> PacsError {
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "{what} took {elapsed:?}");
    match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => {
            eprintln!("{what}: {e}");
            e
        }
    }
}

#[test]
fn refused_connections_are_reported() {
    for node in [dimse_node(closed_port()), web_node(closed_port())] {
        let client = connect(&node).unwrap();
        let started = Instant::now();
        let e = assert_quick("refused", started, client.echo());
        assert!(matches!(e, PacsError::Connect { .. }), "{e:?}");
    }
}

#[test]
fn silent_servers_time_out() {
    for make in [dimse_node as fn(u16) -> Node, web_node] {
        let (port, server) = fake_server(|mut s| {
            // Read whatever comes, answer nothing, until the client gives up.
            let mut buf = [0u8; 4096];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        let client = connect(&make(port)).unwrap();
        let started = Instant::now();
        let e = assert_quick("silent", started, client.echo());
        assert!(matches!(e, PacsError::Timeout { .. }), "{e:?}");
        server.join().unwrap();
    }
}

#[test]
fn trickled_dimse_answer_times_out() {
    // Accepts the association, then answers the C-ECHO with a P-DATA PDU whose 100 bytes come
    // one every 300 ms: every read finishes within the 1 s timeout, the PDU would take 30 s.
    let (port, server) = fake_server(|stream| {
        let mut association = dicom_ul::association::server::ServerAssociationOptions::new()
            .accept_any()
            .promiscuous(true)
            .establish(stream)
            .unwrap();
        let _ = association.receive();
        let s = association.inner_stream();
        let _ = s.write_all(&[0x04, 0, 0, 0, 0, 100]);
        for _ in 0..100 {
            if s.write_all(&[0]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let client = connect(&dimse_node(port)).unwrap();
    let e = assert_quick("trickled PDU", Instant::now(), client.echo());
    assert!(matches!(e, PacsError::Timeout { .. }), "{e:?}");
    server.join().unwrap();
}

/// Reads one PDU (type, body).
fn read_pdu(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 6];
    s.read_exact(&mut header).unwrap();
    let len = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (header[0], body)
}

#[test]
fn rejected_association_is_reported() {
    let (port, server) = fake_server(|mut s| {
        let (kind, _) = read_pdu(&mut s);
        assert_eq!(kind, 0x01, "A-ASSOCIATE-RQ");
        // A-ASSOCIATE-RJ: rejected-permanent, by the service user, called AE not recognised.
        s.write_all(&[0x03, 0, 0, 0, 0, 4, 0, 1, 1, 7]).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let client = connect(&dimse_node(port)).unwrap();
    let e = assert_quick("rejected", Instant::now(), client.echo());
    assert!(matches!(e, PacsError::Rejected { .. }), "{e:?}");
    assert!(e.to_string().contains("called"), "{e}");
    server.join().unwrap();
}

fn http_response(s: &mut TcpStream, head: &str, body: &[u8]) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let _ = s.flush();
}

const LISTING: &str = r#"[{"0020000D":{"vr":"UI","Value":["1.2.3"]},"0020000E":{"vr":"UI","Value":["1.2.3.4"]},"00080018":{"vr":"UI","Value":["1.2.3.4.5"]},"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.7"]}}]"#;

/// A DICOMweb server that lists one instance, then answers the retrieval with `retrieval`
/// (raw HTTP: head and body).
fn web_retrieval_server(head: String, body: Vec<u8>) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for i in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            if i == 0 {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    LISTING.len()
                );
                http_response(&mut s, &head, LISTING.as_bytes());
            } else {
                http_response(&mut s, &head, &body);
            }
        }
    });
    (port, handle)
}

fn assert_folder_empty_of_files(dir: &Path) {
    let mut files = Vec::new();
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, files);
            } else {
                files.push(p);
            }
        }
    }
    walk(dir, &mut files);
    assert!(files.is_empty(), "left behind: {files:?}");
}

fn get_into(node: &Node, limits: Option<Limits>, dir: &Path) -> Result<(), PacsError> {
    let client: Box<dyn PacsClient> = match (limits, &node.endpoint) {
        (Some(l), Endpoint::Dicomweb(w)) => {
            Box::new(mvfa_studio::pacs::dicomweb::WebClient::new(w.clone(), l).unwrap())
        }
        _ => connect(node).unwrap(),
    };
    let target = GetTarget {
        study_uid: "1.2.3".into(),
        series_uid: Some("1.2.3.4".into()),
    };
    retrieve::get(
        client.as_ref(),
        &target,
        dir,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .map(drop)
}

#[test]
fn truncated_dicomweb_retrieval_leaves_nothing_behind() {
    let body = b"--B\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=B\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len() + 5000
    );
    let (port, server) = web_retrieval_server(head, body);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let e = assert_quick(
        "truncated",
        started,
        get_into(&web_node(port), None, dir.path()),
    );
    assert!(matches!(e, PacsError::Protocol { .. }), "{e:?}");
    assert_folder_empty_of_files(dir.path());
    server.join().unwrap();
}

#[test]
fn oversized_dicomweb_retrieval_is_refused_and_leaves_nothing_behind() {
    let mut body = b"--B\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(0u8, 256 << 10));
    body.extend_from_slice(b"\r\n--B--\r\n");
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=B\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (port, server) = web_retrieval_server(head, body);
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        timeout: SHORT,
        max_object_bytes: 64 << 10,
        max_matches: 10,
    };
    let e = assert_quick(
        "oversized",
        Instant::now(),
        get_into(&web_node(port), Some(limits), dir.path()),
    );
    assert!(matches!(e, PacsError::TooLarge { .. }), "{e:?}");
    assert_folder_empty_of_files(dir.path());
    server.join().unwrap();
}

#[test]
fn slow_dicomweb_body_times_out() {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 100000\r\n\r\n[".to_string();
    let (port, server) = fake_server(move |mut s| {
        http_response(&mut s, &head, b"");
        // Trickle a byte every 200 ms: no single read waits long, the whole request does.
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(200));
            if s.write_all(b" ").is_err() {
                break;
            }
        }
    });
    let client = connect(&web_node(port)).unwrap();
    let e = assert_quick("trickle", Instant::now(), client.echo());
    assert!(matches!(e, PacsError::Timeout { .. }), "{e:?}");
    server.join().unwrap();
}

/// A DIMSE server (dicom-ul's acceptor) that accepts the association, reads the client's
/// request, then plays `script` on the raw socket.
fn dimse_server(script: impl FnOnce(&mut TcpStream, u8) + Send + 'static) -> (u16, JoinHandle<()>) {
    fake_server(move |stream| {
        let mut association = dicom_ul::association::server::ServerAssociationOptions::new()
            .accept_any()
            .promiscuous(true)
            .establish(stream)
            .unwrap();
        let storage_context = association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.abstract_syntax.trim_end_matches('\0') == SC_CLASS)
            .map(|pc| pc.id)
            .unwrap_or(1);
        // The C-GET request: command and identifier.
        let _ = association.receive();
        let _ = association.receive();
        script(association.inner_stream(), storage_context);
    })
}

const SC_CLASS: &str = "1.2.840.10008.5.1.4.1.1.7";

/// One P-DATA-TF PDU holding one PDV.
fn pdata(context: u8, command: bool, last: bool, data: &[u8]) -> Vec<u8> {
    let pdv_len = (data.len() + 2) as u32;
    let mut out = vec![0x04, 0];
    out.extend_from_slice(&(pdv_len + 4).to_be_bytes());
    out.extend_from_slice(&pdv_len.to_be_bytes());
    out.push(context);
    out.push(u8::from(command) | (u8::from(last) << 1));
    out.extend_from_slice(data);
    out
}

/// A C-STORE-RQ command set (implicit VR little endian) announcing a data set.
fn store_command() -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::InMemDicomObject;
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(SC_CLASS),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(7u16)),
        DataElement::new(tags::PRIORITY, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4.5"),
        ),
    ]);
    let mut out = Vec::new();
    obj.write_dataset_with_ts(
        &mut out,
        &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .unwrap();
    out
}

fn wanted() -> Vec<InstanceRef> {
    vec![InstanceRef {
        study_uid: "1.2.3".into(),
        series_uid: "1.2.3.4".into(),
        sop_instance_uid: "1.2.3.4.5".into(),
        sop_class_uid: SC_CLASS.into(),
    }]
}

#[test]
fn truncated_dimse_sub_operation_is_an_error_and_nothing_is_delivered() {
    let (port, server) = dimse_server(|s, pc| {
        let _ = s.write_all(&pdata(pc, true, true, &store_command()));
        // A PDU that announces 8000 bytes and delivers 100, then the connection drops.
        let mut pdu = vec![0x04, 0];
        pdu.extend_from_slice(&8000u32.to_be_bytes());
        pdu.extend(std::iter::repeat_n(0u8, 100));
        let _ = s.write_all(&pdu);
    });
    let client = connect(&dimse_node(port)).unwrap();
    let mut delivered = 0;
    let e = assert_quick(
        "truncated dimse",
        Instant::now(),
        client.fetch(&wanted(), &mut |_| {
            delivered += 1;
            Ok(())
        }),
    );
    assert_eq!(delivered, 0);
    assert!(
        matches!(e, PacsError::Protocol { .. } | PacsError::Timeout { .. }),
        "{e:?}"
    );
    server.join().unwrap();
}

#[test]
fn oversized_dimse_object_is_refused() {
    let (port, server) = dimse_server(|s, pc| {
        let _ = s.write_all(&pdata(pc, true, true, &store_command()));
        for _ in 0..8 {
            if s.write_all(&pdata(pc, false, false, &[0u8; 8000])).is_err() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    let node = dimse_node(port);
    let Endpoint::Dimse(endpoint) = node.endpoint else {
        unreachable!()
    };
    let client = mvfa_studio::pacs::dimse::DimseClient::new(
        endpoint,
        Limits {
            timeout: SHORT,
            max_object_bytes: 20_000,
            max_matches: 10,
        },
    )
    .unwrap();
    let e = assert_quick(
        "oversized dimse",
        Instant::now(),
        client.fetch(&wanted(), &mut |_| Ok(())),
    );
    assert!(matches!(e, PacsError::TooLarge { .. }), "{e:?}");
    server.join().unwrap();
}

/// An export folder of `score --dicom` (Secondary Captures and the SRs of the score table)
/// sent by `pacs send` over DIMSE and over DICOMweb: every SR is found back at instance level
/// as a Basic Text SR in its study, and its series by modality SR.
#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn export_folder_with_score_srs_is_sent_over_dimse_and_dicomweb() {
    let orthanc = orthanc("sending score SRs");
    let tmp = tempfile::tempdir().unwrap();
    let sources = crate::export::sr_sources(&tmp.path().join("in"));
    let nodes = tmp.path().join("nodes.json");
    let port = orthanc.dicom_port.to_string();
    let url = format!("http://127.0.0.1:{}/dicom-web", orthanc.http_port);
    let protocols: [(&str, Vec<&str>, Node); 2] = [
        (
            "dimse",
            vec!["--host", "127.0.0.1", "--port", &port, "--aet", "ORTHANC"],
            orthanc.dimse(),
        ),
        ("dicomweb", vec!["--url", &url], orthanc.web()),
    ];
    for (name, node_args, node) in protocols {
        // A fresh key per export: each protocol's copy lands in studies of its own.
        let out = tmp.path().join(name);
        let dicom = DicomExport {
            secondary_capture: true,
            ..DicomExport::default()
        };
        let (summary, _) = crate::export::export_sources(&sources, &out, dicom);
        assert_eq!(summary.reports.len(), 4);
        let files = 5 + summary.objects.len() + 4;
        let mut args = vec![
            OsString::from("pacs"),
            "--nodes".into(),
            nodes.clone().into(),
        ];
        args.extend(node_args.iter().map(OsString::from));
        args.extend([OsString::from("send"), out.clone().into()]);
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (ok, stdout, stderr) = cli(&refs);
        assert!(ok, "{name}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(
            stdout.contains(&format!("{files} of {files} file(s) stored")),
            "{name}: {stdout}"
        );
        for n in 1..=4 {
            assert!(stdout.contains(&results_sr_name(n)), "{name}: {stdout}");
        }

        let client = connect(&node).unwrap();
        for report in &summary.reports {
            let instances = client
                .find(&Query {
                    level: Level::Instance,
                    study_uid: Some(report.object.study_instance_uid.clone()),
                    series_uid: Some(report.object.series_instance_uid.clone()),
                    ..Query::default()
                })
                .unwrap();
            assert_eq!(instances.len(), 1, "{name}: {instances:?}");
            assert_eq!(
                instances[0].sop_instance_uid,
                report.object.sop_instance_uid
            );
            assert_eq!(instances[0].sop_class_uid, COMPREHENSIVE_SR_SOP_CLASS);
            let series = client
                .find(&Query {
                    level: Level::Series,
                    study_uid: Some(report.object.study_instance_uid.clone()),
                    modality: Some("SR".into()),
                    ..Query::default()
                })
                .unwrap();
            assert!(
                series
                    .iter()
                    .any(|m| m.series_uid == report.object.series_instance_uid),
                "{name}: {series:?}"
            );
            // The study also holds that study's Secondary Captures (modality OT).
            let captures = client
                .find(&Query {
                    level: Level::Series,
                    study_uid: Some(report.object.study_instance_uid.clone()),
                    modality: Some("OT".into()),
                    ..Query::default()
                })
                .unwrap();
            assert_eq!(
                captures
                    .iter()
                    .map(|m| m.series_uid.clone())
                    .collect::<Vec<_>>(),
                [summary.series_instance_uid.clone().unwrap()],
                "{name}"
            );
        }
    }
}

/// The data set of a DICOM file, parsed and written again in explicit VR little endian:
/// equal for two files exactly when every element's value is equal (DCMTK, in Orthanc, writes
/// sequences with defined lengths where ours are undefined, which is the same data set).
fn data_set_bytes(path: &Path) -> Vec<u8> {
    let obj = open(path).into_inner();
    let mut out = Vec::new();
    obj.write_dataset_with_ts(
        &mut out,
        &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .unwrap();
    out
}

/// Every result object of an export (Parametric Maps, Segmentations, measurement reports,
/// Secondary Captures) stored in a real Orthanc, once over C-STORE and once over STOW-RS,
/// then retrieved (C-GET, WADO-RS): each comes back with the same data set, value for value
/// and byte for byte once encoded alike.
#[test]
#[ignore = "needs Orthanc (Debian orthanc, orthanc-dicomweb)"]
fn pacs_result_objects_round_trip_unchanged_over_dimse_and_dicomweb() {
    let orthanc = orthanc("result objects round trip");
    for (name, node) in [("dimse", orthanc.dimse()), ("dicomweb", orthanc.web())] {
        let dir = tempfile::tempdir().unwrap();
        // De-identified with a fresh key: each protocol's objects have UIDs of their own.
        let (out, summary) = crate::dicom_objects::export_everything(dir.path(), false);
        assert!(!summary.objects.is_empty());
        let client = connect(&node).unwrap();
        let mut sent = BTreeMap::new();
        let mut studies = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "dcm") {
                continue;
            }
            let uid = client.store(&path).unwrap();
            studies.insert(text(&open(&path), tags::STUDY_INSTANCE_UID));
            sent.insert(uid, path);
        }
        let back_dir = tempfile::tempdir().unwrap();
        for study in studies {
            let target = GetTarget {
                study_uid: study,
                series_uid: None,
            };
            retrieve::get(
                client.as_ref(),
                &target,
                back_dir.path(),
                &mut |_| {},
                &AtomicBool::new(false),
            )
            .unwrap();
        }
        let mut retrieved = Vec::new();
        collect_dcm(back_dir.path(), &mut retrieved);
        assert_eq!(retrieved.len(), sent.len(), "{name}");
        for path in &retrieved {
            let uid = text(&open(path), tags::SOP_INSTANCE_UID);
            let original = &sent[&uid];
            assert_eq!(
                data_set_bytes(path),
                data_set_bytes(original),
                "{name}: {} changed on its way through Orthanc",
                original.display()
            );
        }
    }
}
