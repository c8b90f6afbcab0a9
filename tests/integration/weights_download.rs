//! `weights::download` and `mvfa-studio weights download` against a tiny hub on 127.0.0.1: a
//! std `TcpListener` thread answering like the Hugging Face hub (`/resolve/` with
//! `X-Repo-Commit`, an LFS file redirected to a "CDN" path with `X-Linked-Etag`, byte ranges).
//! No test touches the network.
use crate::support::cli::bin;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mvfa_studio::weights::download::{
    DownloadError, DownloadProgress, DownloadSource, DownloadStage, RemoteFile, download_weights,
};
use sha2::{Digest, Sha256};

const REPO: &str = "test/tiny-clip";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const CONFIG: &[u8] = br#"{"architectures": ["CLIPModel"]}"#;
/// A Git blob id for config.json: not a SHA-256, as on the hub.
const CONFIG_ETAG: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic "weights" of `len` bytes.
fn weights_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// How the tiny hub behaves.
#[derive(Clone)]
struct HubSpec {
    /// The weights bytes it sends.
    served: Vec<u8>,
    /// The SHA-256 it announces for them (that of the real file).
    announced_sha: String,
    /// Revisions (URL-encoded, as in the path) that hold the files; others answer 404.
    revisions: Vec<&'static str>,
    /// Send bodies in small pieces with pauses, so a transfer can be cancelled midway.
    slow: bool,
}

impl HubSpec {
    fn honest(weights: &[u8]) -> Self {
        Self {
            served: weights.to_vec(),
            announced_sha: sha256_hex(weights),
            revisions: vec!["main", COMMIT],
            slow: false,
        }
    }
}

/// One request the hub saw: path and `Range` header.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
}

struct Hub {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Hub {
    fn start(spec: HubSpec) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = format!("http://{addr}");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, endpoint2) = (seen.clone(), endpoint.clone());
        // The thread ends with the test binary.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (spec, seen, endpoint) = (spec.clone(), seen2.clone(), endpoint2.clone());
                std::thread::spawn(move || serve(stream, &spec, &seen, &endpoint));
            }
        });
        Hub { endpoint, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Answers one request (`Connection: close`).
fn serve(stream: TcpStream, spec: &HubSpec, seen: &Mutex<Vec<Seen>>, endpoint: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let mut out = stream;
    let sha = &spec.announced_sha;
    let commit = [("X-Repo-Commit".to_string(), COMMIT.to_string())];

    if let Some(rest) = path.strip_prefix(&format!("/{REPO}/resolve/")) {
        let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        if !spec.revisions.contains(&rev) {
            return respond(&mut out, 404, &[], b"", range.as_deref(), false);
        }
        match file {
            "model.safetensors" => {
                let h = [
                    commit[0].clone(),
                    ("X-Linked-Etag".into(), format!("\"{sha}\"")),
                    ("X-Linked-Size".into(), spec.served.len().to_string()),
                    ("Location".into(), format!("{endpoint}/cdn/{sha}")),
                ];
                respond(&mut out, 302, &h, b"", None, false)
            }
            "config.json" => {
                let h = [
                    commit[0].clone(),
                    ("ETag".into(), format!("\"{CONFIG_ETAG}\"")),
                ];
                respond(&mut out, 200, &h, CONFIG, range.as_deref(), false)
            }
            _ => respond(&mut out, 404, &commit, b"", None, false),
        }
    } else if path == format!("/cdn/{sha}") {
        respond(
            &mut out,
            200,
            &[],
            &spec.served,
            range.as_deref(),
            spec.slow,
        )
    } else {
        respond(&mut out, 404, &[], b"", None, false)
    }
}

/// Writes a response; a `Range: bytes=A-[B]` turns a 200 into a 206 with `Content-Range`.
fn respond(
    out: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    range: Option<&str>,
    slow: bool,
) {
    let (mut status, mut body, mut extra) = (status, body, Vec::new());
    let full = body.len();
    if status == 200
        && let Some(spec) = range.and_then(|r| r.strip_prefix("bytes="))
    {
        let (a, b) = spec.split_once('-').unwrap();
        let a: usize = a.parse().unwrap();
        let b: usize = if b.is_empty() {
            full - 1
        } else {
            b.parse::<usize>().unwrap().min(full - 1)
        };
        status = 206;
        body = &body[a..=b];
        extra.push(("Content-Range".to_string(), format!("bytes {a}-{b}/{full}")));
    }
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        _ => "Not Found",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers.iter().chain(&extra) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    // The client may hang up midway (a cancelled download): write errors end the answer.
    if slow {
        for piece in body.chunks(16 * 1024) {
            if out.write_all(piece).and_then(|_| out.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    } else {
        let _ = out.write_all(body);
    }
}

fn source(endpoint: &str) -> DownloadSource {
    DownloadSource {
        repo: REPO.to_string(),
        endpoint: Some(endpoint.to_string()),
        fallback_revisions: Vec::new(),
        ..DownloadSource::vit_l14_336()
    }
}

/// A 127.0.0.1 port nothing listens on.
fn closed_port_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn run(
    src: &DownloadSource,
    cache: &Path,
    cancel_after: Option<u64>,
) -> (Result<PathBuf, DownloadError>, Vec<DownloadProgress>) {
    let cancel = AtomicBool::new(false);
    let mut events = Vec::new();
    let result = download_weights(
        src,
        Some(cache),
        &mut |p: DownloadProgress| {
            if let Some(n) = cancel_after
                && p.stage == DownloadStage::Downloading
                && p.done >= n
            {
                cancel.store(true, Ordering::Relaxed);
            }
            events.push(p);
        },
        &cancel,
    );
    (result, events)
}

/// Every regular file under `dir` (links excluded), relative.
fn files_under(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn download_checks_the_sha256_and_lands_in_the_hub_cache_layout() {
    let weights = weights_bytes(300_000);
    let hub = Hub::start(HubSpec::honest(&weights));
    let cache = tempfile::tempdir().unwrap();
    let (result, events) = run(&source(&hub.endpoint), cache.path(), None);
    let path = result.unwrap();

    let snapshot = cache
        .path()
        .join("models--test--tiny-clip/snapshots")
        .join(COMMIT);
    assert_eq!(path, snapshot.join("model.safetensors"));
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    assert_eq!(
        std::fs::read(snapshot.join("config.json")).unwrap(),
        CONFIG,
        "config.json lies beside the weights, where the loader looks"
    );
    let refs = cache.path().join("models--test--tiny-clip/refs/main");
    assert_eq!(std::fs::read_to_string(refs).unwrap(), COMMIT);

    // Progress reached the total, and the weights' Finished report names the checked digest.
    let total = weights.len() as u64;
    assert!(events.iter().any(|p| p.index == 0
        && p.stage == DownloadStage::Downloading
        && p.done == total
        && p.total == total));
    let finished = events
        .iter()
        .find(|p| p.index == 0 && p.stage == DownloadStage::Finished)
        .expect("a Finished report for the weights");
    assert_eq!((finished.done, finished.total), (total, total));
    assert_eq!(
        finished.sha256.as_deref(),
        Some(sha256_hex(&weights).as_str())
    );
    assert!(
        events
            .iter()
            .any(|p| p.index == 1 && p.stage == DownloadStage::Finished && p.count == 2)
    );
    assert!(
        !files_under(cache.path())
            .iter()
            .any(|f| f.ends_with(".part")),
        "no part file left"
    );

    // A second run reuses the files: no transfer from the CDN again.
    let cdn_gets = |seen: &[Seen]| {
        seen.iter()
            .filter(|s| s.path.starts_with("/cdn/") && s.range.as_deref() != Some("bytes=0-0"))
            .count()
    };
    let before = cdn_gets(&hub.seen());
    let (again, _) = run(&source(&hub.endpoint), cache.path(), None);
    assert_eq!(again.unwrap(), path);
    assert_eq!(cdn_gets(&hub.seen()), before);

    // Offline, a complete earlier download is still found.
    let (offline, _) = run(&source(&closed_port_endpoint()), cache.path(), None);
    assert_eq!(offline.unwrap(), path);
}

#[test]
fn wrong_bytes_fail_the_sha256_check_and_leave_no_file() {
    let weights = weights_bytes(200_000);
    let mut spec = HubSpec::honest(&weights);
    spec.served = weights.iter().map(|b| b ^ 0x5a).collect();
    let hub = Hub::start(spec);
    let cache = tempfile::tempdir().unwrap();
    let (result, _) = run(&source(&hub.endpoint), cache.path(), None);
    match result {
        Err(DownloadError::ChecksumMismatch {
            file,
            expected,
            actual,
        }) => {
            assert_eq!(file, "model.safetensors");
            assert_eq!(expected, sha256_hex(&weights));
            assert_ne!(actual, expected);
        }
        other => panic!("expected a SHA-256 mismatch, got {other:?}"),
    }
    let left = files_under(cache.path());
    assert!(
        left.iter()
            .all(|f| f.ends_with(".lock") || f.ends_with("config.json") || f.contains(CONFIG_ETAG)),
        "only locks (and no weights, whole or part) may remain: {left:?}"
    );
    assert!(
        !cache
            .path()
            .join("models--test--tiny-clip/snapshots")
            .join(COMMIT)
            .join("model.safetensors")
            .exists()
    );
}

#[test]
fn a_pinned_sha256_the_hub_contradicts_stops_before_downloading() {
    let weights = weights_bytes(50_000);
    let hub = Hub::start(HubSpec::honest(&weights));
    let cache = tempfile::tempdir().unwrap();
    let mut src = source(&hub.endpoint);
    src.files[0] = RemoteFile {
        name: "model.safetensors".into(),
        sha256: Some("0".repeat(64)),
    };
    let (result, _) = run(&src, cache.path(), None);
    assert!(
        matches!(result, Err(DownloadError::PinnedMismatch { .. })),
        "{result:?}"
    );
    assert!(
        !hub.seen()
            .iter()
            .any(|s| s.path.starts_with("/cdn/") && s.range.as_deref() != Some("bytes=0-0")),
        "nothing was transferred"
    );
}

#[test]
fn an_unreachable_hub_gives_the_offline_message() {
    let cache = tempfile::tempdir().unwrap();
    let (result, _) = run(&source(&closed_port_endpoint()), cache.path(), None);
    let err = result.unwrap_err();
    assert!(err.is_offline(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("cannot be reached"), "{msg}");
    assert!(msg.contains("File > Open CLIP weights"), "{msg}");
    assert!(files_under(cache.path()).is_empty());
}

#[test]
fn cancel_stops_midway_and_the_next_run_resumes() {
    let weights = weights_bytes(512 * 1024);
    let mut spec = HubSpec::honest(&weights);
    spec.slow = true;
    let hub = Hub::start(spec);
    let cache = tempfile::tempdir().unwrap();
    let (result, _) = run(&source(&hub.endpoint), cache.path(), Some(64 * 1024));
    assert!(
        matches!(result, Err(DownloadError::Cancelled)),
        "{result:?}"
    );
    let weights_path = cache
        .path()
        .join("models--test--tiny-clip/snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert!(!weights_path.exists(), "no weights file as if complete");
    let blobs = cache.path().join("models--test--tiny-clip/blobs");
    let sha = sha256_hex(&weights);
    assert!(!blobs.join(&sha).exists(), "no complete blob");
    let part = blobs.join(format!("{sha}.part"));
    let partial = std::fs::metadata(&part).expect("the part file stays").len();
    assert!(partial > 0 && partial < weights.len() as u64, "{partial}");

    let (result, events) = run(&source(&hub.endpoint), cache.path(), None);
    assert_eq!(result.unwrap(), weights_path);
    assert_eq!(std::fs::read(&weights_path).unwrap(), weights);
    assert!(!part.exists());
    assert!(
        events.iter().any(|p| p.stage == DownloadStage::Verifying),
        "the kept part is hashed before resuming"
    );
    let resumed = hub
        .seen()
        .iter()
        .any(|s| s.path.starts_with("/cdn/") && s.range == Some(format!("bytes={partial}-")));
    assert!(resumed, "the second run asks only for the rest");
}

#[test]
fn a_fallback_revision_is_tried_when_main_lacks_the_weights() {
    let weights = weights_bytes(10_000);
    let mut spec = HubSpec::honest(&weights);
    spec.revisions = vec!["refs%2Fpr%2F8", COMMIT];
    let hub = Hub::start(spec);
    let cache = tempfile::tempdir().unwrap();
    let mut src = source(&hub.endpoint);
    src.fallback_revisions = vec!["refs/pr/8".into()];
    let (result, _) = run(&src, cache.path(), None);
    let path = result.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    let refs = cache.path().join("models--test--tiny-clip/refs/refs/pr/8");
    assert_eq!(std::fs::read_to_string(refs).unwrap(), COMMIT);

    // Without the fallback, main's 404 names the file and the revision.
    let (missing, _) = run(
        &source(&hub.endpoint),
        tempfile::tempdir().unwrap().path(),
        None,
    );
    let msg = missing.unwrap_err().to_string();
    assert!(msg.contains("model.safetensors was not found"), "{msg}");
}

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let (out, stdout, stderr) =
        crate::support::cli::run(bin().args(args).env_remove("HF_ENDPOINT"));
    (out.status.code(), stdout, stderr)
}

#[test]
fn cli_offline_prints_the_message_and_exits_1() {
    let cache = tempfile::tempdir().unwrap();
    let endpoint = closed_port_endpoint();
    let out = cache.path().to_str().unwrap();
    let (code, stdout, stderr) =
        cli(&["weights", "download", "--out", out, "--endpoint", &endpoint]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("cannot be reached"), "{stderr}");
    assert!(stderr.contains("File > Open CLIP weights"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cli_download_prints_the_weights_path() {
    let weights = weights_bytes(20_000);
    let hub = Hub::start(HubSpec::honest(&weights));
    let cache = tempfile::tempdir().unwrap();
    let out = cache.path().to_str().unwrap();
    let (code, stdout, stderr) = cli(&[
        "weights",
        "download",
        "--out",
        out,
        "--endpoint",
        &hub.endpoint,
        "--repo",
        REPO,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let path = PathBuf::from(stdout.trim());
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    assert!(stderr.contains(&sha256_hex(&weights)), "{stderr}");
}
