//! The AI node (`mvfa-studio serve`) as a separate process on loopback ports, fed by DCMTK's
//! `storescu`, by STOW-RS requests and by our own DIMSE client, delivering to a folder or to
//! a real Orthanc. The tests that need dcmtk or Orthanc are ignored without them (`.ci/run`
//! installs both); the others run everywhere.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mvfa_studio::pacs::node::DimseEndpoint;
use mvfa_studio::pacs::{Endpoint, Node, PacsError};

use crate::pacs::{Orthanc, free_port, started};
use crate::pacs_tls::Pki;
use crate::support::cli::{bin, run};
use crate::support::tiny_clip;

/// Synthetic DICOM volumes (one series and study each) and a quick detector fitted on the
/// same draw.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    volumes: PathBuf,
    checkpoint: PathBuf,
}

fn fixture(seed: u64, volumes: usize, slices: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let data = root.join("data");
    let (o, _, stderr) = run(bin()
        .args([
            "synth-data",
            "--normal",
            "4",
            "--abnormal",
            "4",
            "--size",
            "64",
        ])
        .args(["--volumes", &volumes.to_string()])
        .args(["--slices", &slices.to_string()])
        .args(["--seed", &seed.to_string()])
        .arg(&data));
    assert!(o.status.success(), "{stderr}");
    let checkpoint = root.join("detector.safetensors");
    let (o, _, stderr) = run(bin()
        .args([
            "train", "--cpu", "--organ", "Brain", "--epochs", "0", "--clip",
        ])
        .arg(tiny_clip())
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&checkpoint));
    assert!(o.status.success(), "{stderr}");
    Fixture {
        _dir: dir,
        volumes: data.join("volumes"),
        root,
        checkpoint,
    }
}

/// The volume folders, sorted.
fn series_dirs(volumes: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(volumes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn dcm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Node settings a test changes.
struct Settings {
    quiet_seconds: f64,
    complete_at_release: bool,
    max_queued: u64,
    destination: String,
    extra_node: String,
    /// Extra keys of the one route (matching rules).
    extra_route: String,
}

impl Settings {
    fn folder(path: &Path) -> Self {
        Settings {
            quiet_seconds: 3600.0,
            complete_at_release: true,
            max_queued: 10_000,
            destination: format!("protocol = \"folder\"\npath = {:?}\n", path),
            extra_node: String::new(),
            extra_route: String::new(),
        }
    }

    fn dimse(port: u16) -> Self {
        Settings {
            destination: format!(
                "protocol = \"dimse\"\nhost = \"127.0.0.1\"\nport = {port}\ncalled_ae = \"ORTHANC\"\ntimeout_secs = 5\n"
            ),
            ..Settings::folder(Path::new("/unused"))
        }
    }
}

/// A running node; killed (SIGKILL) when dropped.
struct NodeProcess {
    child: Option<Child>,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    dimse_port: u16,
    http_port: u16,
    /// `http` or `https`, and the client that speaks it.
    scheme: &'static str,
    agent: ureq::Agent,
    /// DICOM TLS settings of our DIMSE client.
    dimse_tls: Option<mvfa_studio::pacs::TlsSettings>,
}

fn plain_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

impl NodeProcess {
    fn write_config(config: &Path, ports: (u16, u16), ckpt: &Path, s: &Settings) {
        let (dimse_port, http_port) = ports;
        let text = format!(
            "[node]\nae_title = \"MVFA_NODE\"\ndimse_listen = \"127.0.0.1:{dimse_port}\"\n\
             http_listen = \"127.0.0.1:{http_port}\"\ndata_dir = \"node\"\nquiet_seconds = {}\n\
             complete_at_release = {}\nmax_queued_instances = {}\nmax_retry_seconds = 2\n\
             cpu = true\n{}\n\
             [[route]]\nname = \"synthetic\"\ncheckpoint = {:?}\nclip = {:?}\nbatch = 8\n\
             destination = \"results\"\n{}\n[[destination]]\nname = \"results\"\n{}",
            s.quiet_seconds,
            s.complete_at_release,
            s.max_queued,
            s.extra_node,
            ckpt,
            tiny_clip(),
            s.extra_route,
            s.destination
        );
        std::fs::write(config, text).unwrap();
    }

    fn start(root: &Path, ckpt: &Path, s: &Settings) -> Self {
        let (dimse_port, http_port) = (free_port(), free_port());
        let config = root.join("serve.toml");
        Self::write_config(&config, (dimse_port, http_port), ckpt, s);
        let mut node = NodeProcess {
            child: None,
            config,
            data_dir: root.join("node"),
            log: root.join("node.log"),
            dimse_port,
            http_port,
            scheme: "http",
            agent: plain_agent(),
            dimse_tls: None,
        };
        node.restart();
        node
    }

    /// [`NodeProcess::start`] with DICOM TLS and HTTPS, client certificates required; our
    /// clients present the PKI's client certificate.
    fn start_tls(root: &Path, ckpt: &Path, s: &Settings, pki: &Pki) -> Self {
        let (dimse_port, http_port) = (free_port(), free_port());
        let config = root.join("serve.toml");
        let tls = Settings {
            extra_node: format!(
                "[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
                pki.path("server.pem"),
                pki.path("server.key"),
                pki.path("ca.pem")
            ),
            destination: s.destination.clone(),
            quiet_seconds: s.quiet_seconds,
            complete_at_release: s.complete_at_release,
            max_queued: s.max_queued,
            extra_route: s.extra_route.clone(),
        };
        Self::write_config(&config, (dimse_port, http_port), ckpt, &tls);
        let pem = |name: &str| std::fs::read(pki.path(name)).unwrap();
        let ca = ureq::tls::Certificate::from_pem(&pem("ca.pem"))
            .unwrap()
            .to_owned();
        let client = ureq::tls::Certificate::from_pem(&pem("client.pem"))
            .unwrap()
            .to_owned();
        let key = ureq::tls::PrivateKey::from_pem(&pem("client.key"))
            .unwrap()
            .to_owned();
        let tls_config = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
            .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[client], key)))
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls_config)
            .build()
            .into();
        let mut node = NodeProcess {
            child: None,
            config,
            data_dir: root.join("node"),
            log: root.join("node.log"),
            dimse_port,
            http_port,
            scheme: "https",
            agent,
            dimse_tls: Some(pki.client_settings()),
        };
        node.restart();
        node
    }

    /// Starts the process (again) and waits for its health endpoint.
    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = bin()
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.try_health().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the node did not come up:\n{}", self.log_text());
    }

    /// Stops the node (SIGKILL), rewrites its config with the same ports, and starts it.
    fn restart_with(&mut self, ckpt: &Path, s: &Settings) {
        self.kill9();
        Self::write_config(&self.config, (self.dimse_port, self.http_port), ckpt, s);
        self.restart();
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        // The server certificate names localhost.
        format!("{}://localhost:{}{path}", self.scheme, self.http_port)
    }

    fn try_health(&self) -> Option<serde_json::Value> {
        let mut r = self.agent.get(&self.url("/health")).call().ok()?;
        if r.status() != 200 {
            return None;
        }
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    }

    fn metrics(&self) -> HashMap<String, f64> {
        let text = self
            .agent
            .get(&self.url("/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// Waits until no series is queued and every result is sent, and `series_done` series
    /// are done.
    fn wait_done(&self, series_done: u64, secs: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(h) = self.try_health() {
                if h["queued_series"] == 0
                    && h["unsent_results"] == 0
                    && h["series"]["done"].as_u64() == Some(series_done)
                {
                    return h;
                }
                last = Some(h);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "not done within {secs} s; last health {last:?}\nlog:\n{}",
            self.log_text()
        );
    }

    fn journal(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data_dir.join("journal.sqlite3")).unwrap()
    }

    /// `kind` events per series (or per result for `sent`).
    fn events(&self, kind: &str, per: &str) -> BTreeMap<String, i64> {
        let j = self.journal();
        let mut stmt = j
            .prepare(&format!(
                "SELECT {per}, COUNT(*) FROM event WHERE kind = ?1 GROUP BY {per}"
            ))
            .unwrap();
        stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn results(&self) -> Vec<(String, String)> {
        let j = self.journal();
        let mut stmt = j
            .prepare("SELECT series_uid, sop_uid FROM result ORDER BY series_uid")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Our own DIMSE client towards the node.
    fn client(&self) -> Box<dyn mvfa_studio::pacs::PacsClient> {
        self.client_with(self.dimse_tls.clone())
    }

    fn client_with(
        &self,
        tls: Option<mvfa_studio::pacs::TlsSettings>,
    ) -> Box<dyn mvfa_studio::pacs::PacsClient> {
        mvfa_studio::pacs::connect(&Node {
            name: "node".into(),
            endpoint: Endpoint::Dimse(DimseEndpoint {
                host: "localhost".into(),
                port: self.dimse_port,
                called_ae: "MVFA_NODE".into(),
                calling_ae: "TEST_SCU".into(),
                tls,
            }),
            timeout_secs: 5,
        })
        .unwrap()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A STOW-RS request of these Part 10 files; returns the status and the JSON answer.
fn stow(node: &NodeProcess, files: &[Vec<u8>]) -> (u16, serde_json::Value) {
    let boundary = "mvfa-test-boundary-7f3a";
    let mut body = Vec::new();
    for f in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(f);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut r = node
        .agent
        .post(&node.url("/studies"))
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )
        .send(&body[..])
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

fn sequence_len(answer: &serde_json::Value, tag: &str) -> usize {
    answer[tag]["Value"].as_array().map_or(0, Vec::len)
}

/// A copy of `file` whose data set is cut in the middle of an element: a malformed instance.
fn truncated(file: &Path) -> Vec<u8> {
    let bytes = std::fs::read(file).unwrap();
    // The file meta group ends where its group length says; keep 40 bytes of the data set.
    let meta_len = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    let data_start = 144 + meta_len;
    bytes[..data_start + 40].to_vec()
}

#[test]
fn serve_check_names_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "[node]\nhttp_listen = \"127.0.0.1:1\"\ndata_dir = \"node\"\n\
         [[route]]\nname = \"r\"\ncheckpoint = \"missing.safetensors\"\nclip = \"missing-clip.safetensors\"\n\
         destination = \"pacs\"\n[[destination]]\nname = \"pacs\"\nprotocol = \"dimse\"\n\
         host = \"127.0.0.1\"\nport = 9\ncalled_ae = \"PACS\"\ntimeout_secs = 2\n",
    )
    .unwrap();
    let (o, stdout, stderr) = run(bin().args(["serve", "--check", "--config"]).arg(&config));
    assert!(!o.status.success(), "{stdout}");
    assert!(stdout.contains("data folder"), "{stdout}");
    assert!(
        stdout.contains("route r: detector") && stdout.contains("FAILED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("destination pacs (dimse): FAILED: cannot connect to PACS@127.0.0.1:9"),
        "{stdout}"
    );
    assert!(stderr.contains("check(s) failed"), "{stderr}");

    // A config that does not parse says where.
    std::fs::write(&config, "[node]\ndata_dir = 3\n").unwrap();
    let (o, _, stderr) = run(bin().args(["serve", "--config"]).arg(&config));
    assert!(!o.status.success());
    assert!(
        stderr.contains("error: config") && stderr.contains("data_dir"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn stow_rs_series_are_scored_once_and_a_malformed_part_is_refused_alone() {
    let fx = fixture(3, 3, 4);
    let out = fx.root.join("delivered");
    let node = NodeProcess::start(&fx.root, &fx.checkpoint, &Settings::folder(&out));
    let dirs = series_dirs(&fx.volumes);
    // Two series in one request, with a malformed instance among them.
    let mut files: Vec<Vec<u8>> = dirs[..2]
        .iter()
        .flat_map(|d| dcm_files(d))
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    files.insert(3, truncated(&dcm_files(&dirs[0])[0]));
    let (status, answer) = stow(&node, &files);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(sequence_len(&answer, "00081199"), 8, "{answer}");
    assert_eq!(sequence_len(&answer, "00081198"), 1, "{answer}");
    assert_eq!(
        answer["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xC000
    );
    // The third series in a request of its own: complete when the request ends.
    let third: Vec<Vec<u8>> = dcm_files(&dirs[2])
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let (status, answer) = stow(&node, &third);
    assert_eq!(status, 200, "{answer}");
    node.wait_done(3, 120);
    // A resend is a success that changes nothing.
    let (status, _) = stow(&node, &third[..1]);
    assert_eq!(status, 200);

    let scored = node.events("scored", "series_uid");
    assert_eq!(scored.len(), 3);
    assert!(scored.values().all(|n| *n == 1), "{scored:?}");
    let results = node.results();
    let sent = node.events("sent", "sop_uid");
    assert_eq!(sent.len(), results.len());
    assert!(sent.values().all(|n| *n == 1));
    // Parametric Map, Segmentation and report per series, all delivered to the folder.
    assert_eq!(results.len(), 9, "{results:?}");
    assert_eq!(dcm_files(&out).len(), 9);
    let m = node.metrics();
    assert_eq!(
        m["mvfa_node_instances_received_total{protocol=\"stow\"}"],
        12.0
    );
    assert_eq!(m["mvfa_node_instances_rejected_total"], 1.0);
    assert_eq!(m["mvfa_node_instances_duplicate_total"], 1.0);
    assert_eq!(m["mvfa_node_series_scored_total"], 3.0);
    assert_eq!(m["mvfa_node_results_sent_total"], 9.0);
    assert_eq!(m["mvfa_node_scoring_seconds_count"], 3.0);
    assert!(node.log_text().contains("malformed instance rejected"));
}

#[test]
fn a_full_queue_refuses_c_store_with_a700_and_stow_with_503_then_drains() {
    let fx = fixture(4, 2, 3);
    let out = fx.root.join("delivered");
    let settings = Settings {
        max_queued: 3,
        complete_at_release: false,
        ..Settings::folder(&out)
    };
    let node = NodeProcess::start(&fx.root, &fx.checkpoint, &settings);
    let dirs = series_dirs(&fx.volumes);
    let client = node.client();
    for f in dcm_files(&dirs[0]) {
        client.store(&f).unwrap();
    }
    // The queue holds 3 unscored instances: the next is refused, over DIMSE and STOW-RS.
    let next = dcm_files(&dirs[1]);
    match client.store(&next[0]) {
        Err(PacsError::Status {
            operation: "C-STORE",
            status: 0xA700,
            ..
        }) => {}
        other => panic!("expected status 0xA700, got {other:?}"),
    }
    let (status, answer) = stow(&node, &[std::fs::read(&next[0]).unwrap()]);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["00081198"]["Value"][0]["00081197"]["Value"][0],
        0xA700
    );
    let m = node.metrics();
    assert_eq!(m["mvfa_node_instances_refused_total"], 2.0);
    assert_eq!(m["mvfa_node_queue_instances"], 3.0);
    // A resend of a stored instance is still a success while the queue is full.
    client.store(&dcm_files(&dirs[0])[0]).unwrap();
    drop(client);

    // Once scored (here: a restart with a quiet time of 1 s), the queue drains and the
    // refused instances go in.
    let mut node = node;
    node.restart_with(
        &fx.checkpoint,
        &Settings {
            quiet_seconds: 1.0,
            ..settings
        },
    );
    node.wait_done(1, 60);
    let client = node.client();
    for f in &next {
        client.store(f).unwrap();
    }
    node.wait_done(2, 60);
}

#[test]
fn a_malformed_c_store_gets_c000_and_the_rest_of_its_series_is_scored() {
    let fx = fixture(5, 1, 4);
    let out = fx.root.join("delivered");
    // Our client opens one association per instance, as many modalities do: the series is
    // complete after a quiet time, not at a release.
    let settings = Settings {
        quiet_seconds: 2.0,
        complete_at_release: false,
        ..Settings::folder(&out)
    };
    let node = NodeProcess::start(&fx.root, &fx.checkpoint, &settings);
    let files = dcm_files(&series_dirs(&fx.volumes)[0]);
    let bad = fx.root.join("bad.dcm");
    std::fs::write(&bad, truncated(&files[1])).unwrap();
    let client = node.client();
    client.store(&files[0]).unwrap();
    match client.store(&bad) {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("0xC000"), "{text}");
        }
        Ok(_) => panic!("a truncated instance was accepted"),
    }
    for f in &files[1..] {
        client.store(f).unwrap();
    }
    let log = node.log_text();
    assert!(log.contains("malformed instance rejected"), "{log}");
    node.wait_done(1, 60);
    let j = node.journal();
    let frames: String = j
        .query_row("SELECT detail FROM event WHERE kind = 'scored'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(frames.contains("4 frame(s) scored"), "{frames}");
    let instances: i64 = j
        .query_row("SELECT COUNT(*) FROM instance", [], |r| r.get(0))
        .unwrap();
    assert_eq!(instances, 4);
}

#[test]
fn a_series_no_route_matches_is_stored_and_logged_not_scored() {
    let fx = fixture(12, 1, 3);
    let out = fx.root.join("delivered");
    let settings = Settings {
        extra_route: "modality = [\"US\"]\n".into(),
        ..Settings::folder(&out)
    };
    let node = NodeProcess::start(&fx.root, &fx.checkpoint, &settings);
    let files: Vec<Vec<u8>> = dcm_files(&series_dirs(&fx.volumes)[0])
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let (status, _) = stow(&node, &files);
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = node.try_health().unwrap();
        if h["series"]["unmatched"] == 1 {
            assert_eq!(h["queued_instances"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "{h}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(node.metrics()["mvfa_node_series_unmatched_total"], 1.0);
    assert!(node.results().is_empty());
    assert!(!out.exists());
    assert_eq!(dcm_files(&node.data_dir.join("incoming")).len(), 3);
    assert!(node.log_text().contains("no route matches modality"));
}

// ---- with DCMTK and Orthanc ----------------------------------------------------------------

const NEEDS: &str = "needs dcmtk (storescu) and Orthanc";

fn storescu(node: &NodeProcess, inputs: &[&Path]) -> std::process::Output {
    storescu_to(node.dimse_port, "MVFA_NODE", inputs)
}

fn storescu_to(port: u16, called: &str, inputs: &[&Path]) -> std::process::Output {
    Command::new("storescu")
        .args(["-aec", called, "-aet", "SCANNER", "+sd", "+r", "-nh"])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(inputs)
        .output()
        .unwrap_or_else(|e| panic!("{NEEDS}: storescu: {e}"))
}

/// Instances Orthanc holds.
fn orthanc_instances(o: &Orthanc) -> u64 {
    let mut r = ureq::get(&format!("http://127.0.0.1:{}/statistics", o.http_port))
        .call()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["CountInstances"].as_u64().unwrap()
}

fn orthanc(what: &str) -> Orthanc {
    started(what, Orthanc::start_with(&[], serde_json::json!({})))
}

#[test]
#[ignore = "needs dcmtk (storescu) and Orthanc (Debian dcmtk, orthanc)"]
fn storescu_study_is_scored_once_per_series_and_the_results_arrive_in_orthanc() {
    let o = orthanc("storescu_study");
    let fx = fixture(6, 3, 5);
    let node = NodeProcess::start(&fx.root, &fx.checkpoint, &Settings::dimse(o.dicom_port));
    // One association with three series (storescu sends a whole folder tree).
    let sent = storescu(&node, &[&fx.volumes]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    node.wait_done(3, 120);
    // Sending it all again changes nothing.
    let again = storescu(&node, &[&fx.volumes]);
    assert!(again.status.success());
    std::thread::sleep(Duration::from_secs(1));
    let scored = node.events("scored", "series_uid");
    assert_eq!(scored.len(), 3);
    assert!(scored.values().all(|n| *n == 1), "{scored:?}");
    let results = node.results();
    assert_eq!(results.len(), 9);
    assert_eq!(orthanc_instances(&o), 9);
    let m = node.metrics();
    assert_eq!(
        m["mvfa_node_instances_received_total{protocol=\"dimse\"}"],
        15.0
    );
    assert_eq!(m["mvfa_node_instances_duplicate_total"], 15.0);
}

#[test]
#[ignore = "needs dcmtk (storescu) and Orthanc (Debian dcmtk, orthanc)"]
fn kill_9_in_a_200_instance_stream_then_restart_scores_each_series_once_and_sends_each_result_once_to_orthanc()
 {
    let o = orthanc("kill_9");
    let fx = fixture(7, 10, 20);
    let mut node = NodeProcess::start(&fx.root, &fx.checkpoint, &Settings::dimse(o.dicom_port));
    let dirs = series_dirs(&fx.volumes);
    // The first five series in one association: complete at its release, scoring starts.
    let first: Vec<&Path> = dirs[..5].iter().map(PathBuf::as_path).collect();
    let out = storescu(&node, &first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The other five stream in while those are scored; kill -9 in the middle.
    let rest: Vec<&Path> = dirs[5..].iter().map(PathBuf::as_path).collect();
    let mut second = Command::new("storescu")
        .args(["-aec", "MVFA_NODE", "-aet", "SCANNER", "+sd", "+r", "-nh"])
        .arg("127.0.0.1")
        .arg(node.dimse_port.to_string())
        .args(&rest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed while a series is being scored and the stream is past 140 instances.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = node.metrics();
        let scoring = node
            .try_health()
            .is_some_and(|h| h["series"]["scoring"] == 1);
        if m["mvfa_node_instances_received_total{protocol=\"dimse\"}"] >= 140.0 && scoring {
            break;
        }
        assert!(Instant::now() < deadline, "the stream did not progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill9();
    let _ = second.wait();
    let before: i64 = node
        .journal()
        .query_row("SELECT COUNT(*) FROM instance", [], |r| r.get(0))
        .unwrap();
    assert!((140..200).contains(&before), "{before} instances journaled");
    // Restart, and the sender sends everything again (as a modality retrying would).
    node.restart();
    // The series being scored at the kill is scored again; its first attempt never left.
    assert!(
        node.log_text().contains("\"rescore\":1"),
        "{}",
        node.log_text()
    );
    let out = storescu(&node, &rest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.wait_done(10, 300);
    let scored = node.events("scored", "series_uid");
    assert_eq!(scored.len(), 10);
    assert!(scored.values().all(|n| *n == 1), "{scored:?}");
    let results = node.results();
    let sent = node.events("sent", "sop_uid");
    assert_eq!(sent.len(), results.len());
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    // Orthanc holds exactly the committed results: nothing from an interrupted attempt.
    assert_eq!(orthanc_instances(&o), results.len() as u64);
    let instances: i64 = node
        .journal()
        .query_row("SELECT COUNT(*) FROM instance", [], |r| r.get(0))
        .unwrap();
    assert_eq!(instances, 200);
}

#[test]
#[ignore = "needs dcmtk (storescu) and Orthanc (Debian dcmtk, orthanc)"]
fn a_destination_orthanc_that_is_down_gets_the_results_once_it_is_back() {
    let fx = fixture(8, 2, 4);
    let port = free_port();
    let node = NodeProcess::start(&fx.root, &fx.checkpoint, &Settings::dimse(port));
    let out = storescu(&node, &[&fx.volumes]);
    assert!(out.status.success());
    // Scored, but the destination is down: the results wait, and the sender backs off.
    let deadline = Instant::now() + Duration::from_secs(120);
    while node.metrics()["mvfa_node_send_failures_total"] < 2.0 {
        assert!(Instant::now() < deadline, "{}", node.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(node.metrics()["mvfa_node_results_sent_total"], 0.0);
    let o = started(
        "destination_down",
        Orthanc::start_with(&[], serde_json::json!({ "DicomPort": port })),
    );
    node.wait_done(2, 120);
    assert_eq!(orthanc_instances(&o), node.results().len() as u64);
    assert!(
        node.log_text()
            .contains("send failed; results wait on disk")
    );
}

#[test]
#[ignore = "needs dcmtk (storescu)"]
fn storescu_hears_out_of_resources_when_the_queue_is_full() {
    let fx = fixture(9, 2, 4);
    let settings = Settings {
        max_queued: 4,
        ..Settings::folder(&fx.root.join("delivered"))
    };
    let node = NodeProcess::start(&fx.root, &fx.checkpoint, &settings);
    let out = Command::new("storescu")
        .args([
            "-v",
            "-aec",
            "MVFA_NODE",
            "-aet",
            "SCANNER",
            "+sd",
            "+r",
            "-nh",
        ])
        .arg("127.0.0.1")
        .arg(node.dimse_port.to_string())
        .arg(&fx.volumes)
        .output()
        .unwrap_or_else(|e| panic!("{NEEDS}: storescu: {e}"));
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    // 8 instances: 4 stored, then 4 refused (storescu's words for status 0xA700).
    assert_eq!(
        log.matches("Received Store Response (Refused: OutOfResources)")
            .count(),
        4,
        "{log}"
    );
    assert_eq!(
        log.matches("Received Store Response (Success)").count(),
        4,
        "{log}"
    );
    assert_eq!(node.metrics()["mvfa_node_instances_refused_total"], 4.0);
}

#[test]
#[ignore = "needs dcmtk (storescu)"]
fn twenty_associations_at_once_are_all_stored_with_bounded_memory() {
    let fx = fixture(10, 20, 3);
    let node = NodeProcess::start(
        &fx.root,
        &fx.checkpoint,
        &Settings::folder(&fx.root.join("delivered")),
    );
    let senders: Vec<Child> = series_dirs(&fx.volumes)
        .iter()
        .map(|d| {
            Command::new("storescu")
                .args(["-aec", "MVFA_NODE", "-aet", "SCANNER", "+sd", "+r"])
                .arg("127.0.0.1")
                .arg(node.dimse_port.to_string())
                .arg(d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut s in senders {
        assert!(s.wait().unwrap().success());
    }
    node.wait_done(20, 300);
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    println!("peak RSS with 20 associations: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 1024 * 1024, "peak RSS {peak_kib} KiB");
    assert_eq!(node.events("scored", "series_uid").len(), 20);
}

#[test]
fn dicom_tls_and_https_require_the_client_certificate_and_carry_a_series() {
    let pki = Pki::new();
    let fx = fixture(11, 1, 3);
    let out = fx.root.join("delivered");
    // One series over two protocols: complete after a quiet time, not at a release.
    let settings = Settings {
        quiet_seconds: 2.0,
        complete_at_release: false,
        ..Settings::folder(&out)
    };
    let node = NodeProcess::start_tls(&fx.root, &fx.checkpoint, &settings, &pki);
    let files = dcm_files(&series_dirs(&fx.volumes)[0]);
    // Without TLS, or without a client certificate, nothing gets in.
    assert!(node.client_with(None).store(&files[0]).is_err());
    let no_cert = mvfa_studio::pacs::TlsSettings {
        ca_file: Some(pki.path("ca.pem")),
        ..Default::default()
    };
    assert!(node.client_with(Some(no_cert)).store(&files[0]).is_err());
    assert!(
        ureq::get(&format!("http://localhost:{}/health", node.http_port))
            .call()
            .is_err()
    );
    // With it: the first instance over DICOM TLS, the others over HTTPS (STOW-RS).
    node.client().store(&files[0]).unwrap();
    let rest: Vec<Vec<u8>> = files[1..]
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let (status, answer) = stow(&node, &rest);
    assert_eq!(status, 200, "{answer}");
    node.wait_done(1, 60);
    assert_eq!(node.results().len(), 3);
    let m = node.metrics();
    assert_eq!(
        m["mvfa_node_instances_received_total{protocol=\"dimse\"}"],
        1.0
    );
    assert_eq!(
        m["mvfa_node_instances_received_total{protocol=\"stow\"}"],
        2.0
    );
}

#[test]
#[ignore = "needs dcmtk (storescu) and Orthanc (Debian dcmtk, orthanc, orthanc-dicomweb)"]
fn orthanc_forwards_studies_over_c_store_and_stow_rs_and_gets_the_results_back_over_stow_rs() {
    // Orthanc plays the PACS: it holds two studies, sends one to the node over C-STORE and
    // the other over STOW-RS (its DICOMweb client), and takes the results back over STOW-RS.
    let fx = fixture(13, 2, 4);
    let (orthanc_port, orthanc_http) = (free_port(), free_port());
    let settings = Settings {
        destination: format!(
            "protocol = \"dicomweb\"\nbase_url = \"http://127.0.0.1:{orthanc_http}/dicom-web\"\ntimeout_secs = 10\n"
        ),
        ..Settings::folder(Path::new("/unused"))
    };
    let node = NodeProcess::start(&fx.root, &fx.checkpoint, &settings);
    let o = started(
        "orthanc_forwards",
        Orthanc::start_with(
            &[],
            serde_json::json!({
                "DicomPort": orthanc_port,
                "HttpPort": orthanc_http,
                "DicomModalities": { "node": ["MVFA_NODE", "127.0.0.1", node.dimse_port] },
                "DicomWeb": {
                    "Enable": true,
                    "Root": "/dicom-web/",
                    "Servers": { "node": [format!("http://127.0.0.1:{}/", node.http_port)] },
                },
            }),
        ),
    );
    let upload = storescu_to(o.dicom_port, "ORTHANC", &[&fx.volumes]);
    assert!(upload.status.success());
    let api = |path: &str| format!("http://127.0.0.1:{}{path}", o.http_port);
    let studies: Vec<String> = serde_json::from_str(
        &ureq::get(&api("/studies"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(studies.len(), 2);
    ureq::post(&api("/modalities/node/store"))
        .send(studies[0].as_str())
        .unwrap();
    let body = serde_json::json!({ "Resources": [studies[1]] }).to_string();
    ureq::post(&api("/dicom-web/servers/node/stow"))
        .send(body.as_str())
        .unwrap();
    node.wait_done(2, 120);
    let m = node.metrics();
    assert_eq!(
        m["mvfa_node_instances_received_total{protocol=\"dimse\"}"],
        4.0
    );
    assert_eq!(
        m["mvfa_node_instances_received_total{protocol=\"stow\"}"],
        4.0
    );
    let results = node.results();
    assert_eq!(results.len(), 6);
    assert_eq!(orthanc_instances(&o), 8 + 6);
}
