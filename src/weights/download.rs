//! Downloading the public CLIP ViT-L/14-336 weights from the Hugging Face hub, for a machine
//! that is online and has no weights file yet: progress per file, cancellation, and a SHA-256
//! check before a file is kept.
//!
//! The files land in the Hugging Face cache layout (`models--<org>--<name>/blobs`,
//! `snapshots/<commit>/<file>` links, `refs/<revision>`), so the Python `huggingface_hub`, the
//! `hf-hub` crate and this module share one copy. The returned weights path lies in the
//! snapshot folder, with `config.json` beside it, which is where the loader
//! ([`crate::weights::clip`]) looks for the architecture.
//!
//! What comes from the `hf-hub` crate: the endpoint, token and cache conventions
//! ([`hf_hub::Cache`], [`hf_hub::Repo`]), the resolve URL of a file, and its metadata
//! ([`hf_hub::api::sync::Api::metadata`]: the commit a revision points to, the size, and for
//! Git LFS files the SHA-256 the hub reports in `X-Linked-Etag`). What is done here: the
//! transfer itself, with the `ureq` client `hf-hub` uses too, because `hf-hub`'s blocking
//! download cannot be cancelled (its progress callback cannot stop it) and checks no digest.
//! The part file keeps `hf-hub`'s name (`blobs/<etag>.part`), so an interrupted download
//! resumes where it stopped, with either tool.
//!
//! The SHA-256 a file is checked against: [`RemoteFile::sha256`] when pinned, else the hub's
//! LFS object id (the SHA-256 of the file's bytes, which Git LFS uses as its name). The
//! weights file must have one of the two. Small files stored in Git itself (`config.json`)
//! have no SHA-256 on the hub (only a Git SHA-1), so they are checked only when pinned; the
//! loader checks the config against the tensor shapes anyway.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError, Metadata};
use hf_hub::{Cache, CacheRepo, Repo, RepoType};
use sha2::{Digest, Sha256};
use ureq::config::RedirectAuthHeaders;
use ureq::tls::{TlsConfig, TlsProvider};

/// The hub repository of OpenAI's CLIP ViT-L/14 at 336 px in the Hugging Face `CLIPModel`
/// layout (the backbone MVFA was published with).
pub const VIT_L14_336_REPO: &str = "openai/clip-vit-large-patch14-336";

/// The revision of [`VIT_L14_336_REPO`] tried after `main` when `main` has no
/// `model.safetensors`: the `main` branch was published with `pytorch_model.bin` and
/// `tf_model.h5` only (which the loader does not read), and the hub's safetensors conversion
/// is the pull request `refs/pr/8`, where public code loading `model.safetensors` of this
/// repository takes it from. This was not checked against the live hub; if it is wrong, the
/// result is a clear "not found" error and `--revision` names the right ref. A pull-request
/// ref stays valid after a merge, so trying `main` first and then it finds the file either
/// way.
pub const VIT_L14_336_SAFETENSORS_REVISION: &str = "refs/pr/8";

/// The public hub, used when neither [`DownloadSource::endpoint`] nor `HF_ENDPOINT` names
/// another (a mirror).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How long the first answer of the hub may take before the machine counts as offline: a
/// network that drops packets would otherwise leave the user waiting for the system's TCP
/// timeout (minutes).
const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// Connection set-up limit of the transfer client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A transfer that receives nothing for this long is stopped (the part file stays for a
/// resume).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Read size of the transfer loop: the cancel flag is checked between two reads.
const CHUNK: usize = 256 * 1024;
/// Progress is reported at least every this many 1/1000 of a file, or this often in time.
const REPORT_PERMILLE: u64 = 5;
const REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// One file of a hub repository to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path of the file in the repository (`model.safetensors`, `config.json`).
    pub name: String,
    /// The expected SHA-256 (64 hex digits), when known in advance; `None` relies on the
    /// digest the hub reports for Git LFS files (see the module docs).
    pub sha256: Option<String>,
}

impl RemoteFile {
    /// A file checked against the hub-reported SHA-256 only.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sha256: None,
        }
    }
}

/// Where the weights come from: a hub repository, its revision(s), the files the loader
/// needs, and the hub's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSource {
    /// Repository id, `org/name`.
    pub repo: String,
    /// Branch, tag, commit or pull-request ref (`refs/pr/N`) tried first.
    pub revision: String,
    /// Revisions tried, in order, when the weights file is not found at `revision`.
    pub fallback_revisions: Vec<String>,
    /// The files to fetch. The first is the weights file whose path
    /// [`download_weights`] returns, and it must have a known SHA-256; the others (the
    /// `config.json`) land beside it.
    pub files: Vec<RemoteFile>,
    /// Hub address such as `https://huggingface.co` or a mirror; `None` reads
    /// `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
}

impl DownloadSource {
    /// OpenAI's CLIP ViT-L/14-336 in the Hugging Face layout: `model.safetensors` and the
    /// `config.json` the loader reads beside it, from `main`, else from the safetensors
    /// conversion ref [`VIT_L14_336_SAFETENSORS_REVISION`].
    pub fn vit_l14_336() -> Self {
        Self {
            repo: VIT_L14_336_REPO.to_string(),
            revision: "main".to_string(),
            fallback_revisions: vec![VIT_L14_336_SAFETENSORS_REVISION.to_string()],
            files: vec![
                RemoteFile::new("model.safetensors"),
                RemoteFile::new("config.json"),
            ],
            endpoint: None,
        }
    }

    /// The hub address this source uses: [`Self::endpoint`], else `HF_ENDPOINT`, else
    /// [`DEFAULT_ENDPOINT`], without a trailing slash.
    pub fn resolved_endpoint(&self) -> String {
        let endpoint = match &self.endpoint {
            Some(e) => e.clone(),
            None => std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
        };
        endpoint.trim().trim_end_matches('/').to_string()
    }

    /// `revision`, then the fallbacks, without repeats.
    fn revisions(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in std::iter::once(&self.revision).chain(&self.fallback_revisions) {
            if !out.contains(&r.as_str()) {
                out.push(r);
            }
        }
        out
    }

    /// Rejects what cannot be fetched safely: no file, a path leaving the cache folder, a
    /// pinned digest that is not 64 hex digits.
    fn validate(&self) -> Result<(), DownloadError> {
        let invalid = |why: String| Err(DownloadError::InvalidSource(why));
        if self.repo.trim().is_empty() || self.repo.contains("..") {
            return invalid(format!("`{}` is not a repository id", self.repo));
        }
        if self.revision.trim().is_empty() {
            return invalid("the revision is empty".into());
        }
        if self.files.is_empty() {
            return invalid("no file to download".into());
        }
        for f in &self.files {
            let path = Path::new(&f.name);
            let plain =
                !f.name.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                return invalid(format!("`{}` is not a relative file path", f.name));
            }
            if let Some(s) = &f.sha256
                && !is_sha256(s)
            {
                return invalid(format!(
                    "the SHA-256 given for {} is not 64 hex digits",
                    f.name
                ));
            }
        }
        Ok(())
    }
}

impl Default for DownloadSource {
    /// [`DownloadSource::vit_l14_336`].
    fn default() -> Self {
        Self::vit_l14_336()
    }
}

/// What a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadStage {
    /// Asking the hub which commit the revision is at and how large the file is.
    Resolving,
    /// Hashing bytes already on disk (a partial download being resumed, or a blob another
    /// revision already fetched).
    Verifying,
    /// Receiving the file.
    Downloading,
    /// The file is in place and checked; `done == total`.
    Finished,
}

/// One progress report of [`download_weights`]: where in which file it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadProgress {
    /// The file's path in the repository.
    pub file: String,
    /// Its position in [`DownloadSource::files`] (0 is the weights).
    pub index: usize,
    /// How many files the download has.
    pub count: usize,
    /// What is happening to the file.
    pub stage: DownloadStage,
    /// Bytes received (or hashed, when verifying) so far.
    pub done: u64,
    /// The file's size in bytes; 0 while resolving.
    pub total: u64,
    /// The checked SHA-256 (hex), on the `Finished` report of a file that had one.
    pub sha256: Option<String>,
}

/// Why a download failed, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No network, no route, refused connection, DNS failure, TLS failure or no answer in
    /// time: the user should pick a local file instead.
    #[error(
        "the Hugging Face hub ({endpoint}) cannot be reached ({reason}). Without a network, \
         choose a CLIP weights file you already have with File > Open CLIP weights… (on the \
         command line: --clip FILE)"
    )]
    Offline {
        /// The hub address tried.
        endpoint: String,
        /// The network error, as the client worded it.
        reason: String,
    },
    /// The file (or the revision, or the repository) does not exist on the hub.
    #[error("{file} was not found in {repo} at revision {revision} on the hub")]
    NotFound {
        /// Repository id.
        repo: String,
        /// The revision(s) tried.
        revision: String,
        /// The file's path.
        file: String,
    },
    /// 401/403: the hub answers this for private, gated or missing repositories.
    #[error(
        "the hub refused access to {repo} (HTTP {status}): the repository does not exist or \
         needs a login token (HF_TOKEN or `huggingface-cli login`)"
    )]
    AccessDenied {
        /// Repository id.
        repo: String,
        /// The HTTP status.
        status: u16,
    },
    /// Another HTTP error status.
    #[error("the hub answered HTTP {status} for {url}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The requested address.
        url: String,
    },
    /// The server answered, but not like the Hugging Face hub (missing headers, a broken
    /// redirect): a wrong `--endpoint`, a captive portal or a proxy page.
    #[error("the server at {endpoint} does not answer like the Hugging Face hub: {reason}")]
    NotAHub {
        /// The hub address tried.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// The connection broke during a transfer; the part already received stays for a resume.
    #[error(
        "the download of {file} was interrupted ({reason}); run it again to resume where it \
         stopped"
    )]
    Interrupted {
        /// The file's path.
        file: String,
        /// The network error.
        reason: String,
    },
    /// The received bytes do not have the expected SHA-256; they were deleted.
    #[error(
        "{file} failed its SHA-256 check (expected {expected}, got {actual}); the downloaded \
         file was deleted"
    )]
    ChecksumMismatch {
        /// The file's path.
        file: String,
        /// The pinned or hub-reported digest.
        expected: String,
        /// The digest of the received bytes.
        actual: String,
    },
    /// The hub serves a different file than the pinned digest names (nothing downloaded).
    #[error(
        "the hub's {file} is not the expected one: its SHA-256 is {hub}, the pinned SHA-256 \
         is {pinned}"
    )]
    PinnedMismatch {
        /// The file's path.
        file: String,
        /// The pinned digest.
        pinned: String,
        /// The digest the hub reports.
        hub: String,
    },
    /// More or fewer bytes arrived than the hub announced; they were deleted.
    #[error("{file} has {actual} bytes, the hub announced {expected}; the download was deleted")]
    SizeMismatch {
        /// The file's path.
        file: String,
        /// Announced size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// Neither a pinned SHA-256 nor a hub-reported one exists for the weights file, so it
    /// could not be checked.
    #[error(
        "no SHA-256 is known for {file} (not pinned, and the hub reports none), so it is not \
         downloaded unchecked"
    )]
    NoChecksum {
        /// The file's path.
        file: String,
    },
    /// The cancel flag was set; a partial file stays only as `<blob>.part` for a resume.
    #[error("the download was cancelled")]
    Cancelled,
    /// Another process holds the lock of this file's download.
    #[error("another download of {file} into {path} is running; wait for it to finish")]
    Busy {
        /// The file's path.
        file: String,
        /// The lock file.
        path: PathBuf,
    },
    /// Neither a folder was given nor a default cache folder found (no HOME).
    #[error("no folder to download into: pass one (--out DIR), or set HF_HOME")]
    NoCacheDir,
    /// The source description cannot be used.
    #[error("invalid download source: {0}")]
    InvalidSource(String),
    /// A file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl DownloadError {
    /// Whether the hub could not be reached, i.e. the UI should offer the file chooser.
    pub fn is_offline(&self) -> bool {
        matches!(self, DownloadError::Offline { .. })
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The Hugging Face cache folder the hub tools share: `HF_HUB_CACHE`, else `HF_HOME/hub`,
/// else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`; `None` without a
/// home folder.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE") {
        return Some(p);
    }
    if let Some(p) = var("HF_HOME") {
        return Some(p.join("hub"));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Some(p.join("huggingface").join("hub"));
    }
    std::env::home_dir().map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// The weights file of `source` when a previous download left all its files in the cache
/// (`cache_dir`, else [`default_cache_dir`]); no network. Lets the UI offer "use the
/// downloaded weights" without asking the hub.
pub fn cached_weights(source: &DownloadSource, cache_dir: Option<&Path>) -> Option<PathBuf> {
    let root = match cache_dir {
        Some(d) => d.to_path_buf(),
        None => default_cache_dir()?,
    };
    let cache = Cache::new(root);
    source.revisions().into_iter().find_map(|rev| {
        let repo = cache.repo(Repo::with_revision(
            source.repo.clone(),
            RepoType::Model,
            rev.to_string(),
        ));
        let mut paths = source.files.iter().map(|f| repo.get(&f.name));
        let weights = paths.next()??;
        paths.all(|p| p.is_some()).then_some(weights)
    })
}

/// Downloads the files of `source` into the Hugging Face cache at `cache_dir` (default
/// [`default_cache_dir`]) and returns the path of the weights file (the first of
/// [`DownloadSource::files`]), the other files beside it.
///
/// `progress` receives reports per file (see [`DownloadProgress`]); setting `cancel` stops
/// the download between two reads with [`DownloadError::Cancelled`]. Every file with a known
/// SHA-256 is hashed while it streams and kept only when the digest matches; a mismatch
/// deletes it. Files already in the cache are not fetched again. When the hub cannot be
/// reached the result is [`DownloadError::Offline`], unless an earlier download of the same
/// source is complete in the cache, whose path is then returned.
///
/// Blocking: run it on a worker thread in the UI.
pub fn download_weights(
    source: &DownloadSource,
    cache_dir: Option<&Path>,
    progress: &mut dyn FnMut(DownloadProgress),
    cancel: &AtomicBool,
) -> Result<PathBuf, DownloadError> {
    source.validate()?;
    let root = match cache_dir {
        Some(d) => d.to_path_buf(),
        None => default_cache_dir().ok_or(DownloadError::NoCacheDir)?,
    };
    let endpoint = source.resolved_endpoint();
    let cache = Cache::new(root.clone());
    let (api, token) = hub_api(&cache, &endpoint, source)?;
    let count = source.files.len();
    let weights = &source.files[0];
    let (revision, weights_meta) =
        match resolve_revision(&api, source, &endpoint, &root, progress, cancel)? {
            Resolved::At(revision, meta) => (revision, meta),
            Resolved::Cached(path) => return Ok(path),
        };
    let commit = weights_meta.commit_hash().trim().to_string();
    if !is_plain_name(&commit) {
        return Err(DownloadError::NotAHub {
            endpoint,
            reason: format!("unusable commit id `{commit}`"),
        });
    }
    // Every file comes from that commit, so all of them land in one snapshot folder.
    let at_commit = api.repo(Repo::with_revision(
        source.repo.clone(),
        RepoType::Model,
        commit.clone(),
    ));
    let cache_repo = cache.repo(Repo::with_revision(
        source.repo.clone(),
        RepoType::Model,
        revision.to_string(),
    ));
    let agent = transfer_agent();
    let mut weights_meta = Some(weights_meta);
    for (index, file) in source.files.iter().enumerate() {
        check_cancel(cancel)?;
        let url = at_commit.url(&file.name);
        let meta = match weights_meta.take() {
            Some(m) if index == 0 => m,
            _ => {
                progress(resolving(file, index, count));
                metadata(&api, &url, cancel, &endpoint, source, &commit, &file.name)?
            }
        };
        let job = FileJob {
            source,
            endpoint: &endpoint,
            cache_repo: &cache_repo,
            commit: &commit,
            file,
            index,
            count,
            url,
            token: token.as_deref(),
            agent: &agent,
        };
        job.fetch(&meta, progress, cancel)?;
    }
    cache_repo
        .create_ref(&commit)
        .map_err(io_err(&cache_repo.pointer_path(&commit)))?;
    Ok(cache_repo.pointer_path(&commit).join(&weights.name))
}

/// The hub client for `endpoint`, with the token from `HF_TOKEN` or the cache (also
/// returned: the file transfers send it themselves).
fn hub_api(
    cache: &Cache,
    endpoint: &str,
    source: &DownloadSource,
) -> Result<(Api, Option<String>), DownloadError> {
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(endpoint.to_string())
        .with_token(token.clone())
        .with_progress(false)
        .with_user_agent("mvfa-studio", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| classify_api_error(e, endpoint, source, "", ""))?;
    Ok((api, token))
}

/// The `Resolving` report of one file.
fn resolving(file: &RemoteFile, index: usize, count: usize) -> DownloadProgress {
    DownloadProgress {
        file: file.name.clone(),
        index,
        count,
        stage: DownloadStage::Resolving,
        done: 0,
        total: 0,
        sha256: None,
    }
}

/// Where the weights file was found.
enum Resolved<'a> {
    /// At this revision, with the file's metadata (which names the commit).
    At(&'a str, Metadata),
    /// The hub is unreachable, but an earlier download is complete in the cache.
    Cached(PathBuf),
}

/// The first of the source's revisions the weights file exists at, and its metadata; the
/// cached download when the hub cannot be reached.
fn resolve_revision<'a>(
    api: &Api,
    source: &'a DownloadSource,
    endpoint: &str,
    root: &Path,
    progress: &mut dyn FnMut(DownloadProgress),
    cancel: &AtomicBool,
) -> Result<Resolved<'a>, DownloadError> {
    let weights = &source.files[0];
    let mut tried = Vec::new();
    for rev in source.revisions() {
        check_cancel(cancel)?;
        progress(resolving(weights, 0, source.files.len()));
        let repo = Repo::with_revision(source.repo.clone(), RepoType::Model, rev.to_string());
        let url = api.repo(repo).url(&weights.name);
        match metadata(api, &url, cancel, endpoint, source, rev, &weights.name) {
            Ok(m) => return Ok(Resolved::At(rev, m)),
            Err(DownloadError::NotFound { .. }) => tried.push(rev),
            Err(e @ DownloadError::Offline { .. }) => {
                if let Some(path) = cached_weights(source, Some(root)) {
                    report_cached(source, &path, progress);
                    return Ok(Resolved::Cached(path));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(DownloadError::NotFound {
        repo: source.repo.clone(),
        revision: tried.join(", "),
        file: weights.name.clone(),
    })
}

/// Whether a blob already in the cache has the expected SHA-256 (any blob does when none is
/// expected).
fn blob_matches(
    blob: &Path,
    size: u64,
    expected: Option<&str>,
    rep: &mut Reporter,
    cancel: &AtomicBool,
) -> Result<bool, DownloadError> {
    Ok(match expected {
        None => true,
        Some(want) => hash_file(blob, size, rep, cancel)? == want,
    })
}

/// `Finished` reports for files found complete in the cache.
fn report_cached(
    source: &DownloadSource,
    weights: &Path,
    progress: &mut dyn FnMut(DownloadProgress),
) {
    let dir = weights.parent().unwrap_or(Path::new("."));
    for (index, f) in source.files.iter().enumerate() {
        let size = fs::metadata(dir.join(&f.name)).map_or(0, |m| m.len());
        progress(DownloadProgress {
            file: f.name.clone(),
            index,
            count: source.files.len(),
            stage: DownloadStage::Finished,
            done: size,
            total: size,
            sha256: None,
        });
    }
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), DownloadError> {
    if cancel.load(Ordering::Relaxed) {
        Err(DownloadError::Cancelled)
    } else {
        Ok(())
    }
}

/// `hf-hub`'s metadata request, on a helper thread so that `cancel` and
/// [`ANSWER_DEADLINE`] are honoured while it connects (the request itself has no timeout),
/// and so that a panic inside it on a malformed answer becomes an error.
fn metadata(
    api: &Api,
    url: &str,
    cancel: &AtomicBool,
    endpoint: &str,
    source: &DownloadSource,
    revision: &str,
    file: &str,
) -> Result<Metadata, DownloadError> {
    let (tx, rx) = mpsc::channel();
    let (api2, url2) = (api.clone(), url.to_string());
    std::thread::Builder::new()
        .name("hub-metadata".into())
        .spawn(move || {
            let _ = tx.send(api2.metadata(&url2));
        })
        .map_err(io_err(Path::new(url)))?;
    let deadline = Instant::now() + ANSWER_DEADLINE;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(m)) => return Ok(m),
            Ok(Err(e)) => return Err(classify_api_error(e, endpoint, source, revision, file)),
            Err(RecvTimeoutError::Timeout) => {
                check_cancel(cancel)?;
                if Instant::now() > deadline {
                    return Err(DownloadError::Offline {
                        endpoint: endpoint.to_string(),
                        reason: format!("no answer within {} s", ANSWER_DEADLINE.as_secs()),
                    });
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(DownloadError::NotAHub {
                    endpoint: endpoint.to_string(),
                    reason: format!("malformed answer for {url}"),
                });
            }
        }
    }
}

fn classify_api_error(
    e: ApiError,
    endpoint: &str,
    source: &DownloadSource,
    revision: &str,
    file: &str,
) -> DownloadError {
    match e {
        ApiError::RequestError(err) => classify_ureq_error(&err, endpoint, source, revision, file),
        ApiError::IoError(source) => DownloadError::Io {
            path: PathBuf::from(endpoint),
            source,
        },
        other => DownloadError::NotAHub {
            endpoint: endpoint.to_string(),
            reason: other.to_string(),
        },
    }
}

/// An HTTP status becomes the matching error; anything below HTTP (DNS, connect, TLS,
/// timeouts) means the hub is out of reach.
fn classify_ureq_error(
    err: &ureq::Error,
    endpoint: &str,
    source: &DownloadSource,
    revision: &str,
    file: &str,
) -> DownloadError {
    match err {
        ureq::Error::StatusCode(status) => status_error(*status, endpoint, source, revision, file),
        other => DownloadError::Offline {
            endpoint: endpoint.to_string(),
            reason: other.to_string(),
        },
    }
}

fn status_error(
    status: u16,
    url: &str,
    source: &DownloadSource,
    revision: &str,
    file: &str,
) -> DownloadError {
    match status {
        404 => DownloadError::NotFound {
            repo: source.repo.clone(),
            revision: revision.to_string(),
            file: file.to_string(),
        },
        401 | 403 => DownloadError::AccessDenied {
            repo: source.repo.clone(),
            status,
        },
        _ => DownloadError::Http {
            status,
            url: url.to_string(),
        },
    }
}

/// The client of the transfers: the rustls TLS `hf-hub` uses, redirects followed (the hub
/// sends LFS files from a CDN), the token kept to the hub's own host, no compression (byte
/// ranges must count file bytes), timeouts for connecting and for a stalled transfer.
fn transfer_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().provider(TlsProvider::Rustls).build())
        .http_status_as_error(false)
        .redirect_auth_headers(RedirectAuthHeaders::SameHost)
        .accept_encoding("identity")
        .user_agent(format!("mvfa-studio/{}", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(ANSWER_DEADLINE))
        .timeout_per_read(Some(STALL_TIMEOUT))
        .build()
        .into()
}

/// One file of a download, resolved to a commit.
struct FileJob<'a> {
    source: &'a DownloadSource,
    endpoint: &'a str,
    cache_repo: &'a CacheRepo,
    commit: &'a str,
    file: &'a RemoteFile,
    index: usize,
    count: usize,
    url: String,
    token: Option<&'a str>,
    agent: &'a ureq::Agent,
}

/// Rate-limited progress reports of one file.
struct Reporter<'a, 'b> {
    job: &'b FileJob<'a>,
    sink: &'b mut dyn FnMut(DownloadProgress),
    total: u64,
    last_done: u64,
    last_at: Instant,
}

impl Reporter<'_, '_> {
    fn send(&mut self, stage: DownloadStage, done: u64, sha256: Option<String>) {
        (self.sink)(DownloadProgress {
            file: self.job.file.name.clone(),
            index: self.job.index,
            count: self.job.count,
            stage,
            done,
            total: self.total,
            sha256,
        });
        self.last_done = done;
        self.last_at = Instant::now();
    }

    /// Reports unless the last report is very recent and close.
    fn tick(&mut self, stage: DownloadStage, done: u64) {
        let step = (self.total * REPORT_PERMILLE / 1000).max(1);
        if done.saturating_sub(self.last_done) >= step || self.last_at.elapsed() >= REPORT_INTERVAL
        {
            self.send(stage, done, None);
        }
    }
}

impl FileJob<'_> {
    fn fetch(
        &self,
        meta: &Metadata,
        sink: &mut dyn FnMut(DownloadProgress),
        cancel: &AtomicBool,
    ) -> Result<(), DownloadError> {
        let name = &self.file.name;
        let (etag, expected) = self.checked_etag(meta)?;
        let size = meta.size() as u64;
        let mut rep = Reporter {
            job: self,
            sink,
            total: size,
            last_done: 0,
            last_at: Instant::now(),
        };

        let pointer = self.cache_repo.pointer_path(self.commit).join(name);
        if fs::metadata(&pointer).is_ok_and(|m| m.is_file() && m.len() == size) {
            rep.send(DownloadStage::Finished, size, None);
            return Ok(());
        }
        let blob = self.cache_repo.blob_path(&etag);
        let blobs = blob.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(blobs).map_err(io_err(blobs))?;
        let lock_path = blobs.join(format!("{etag}.lock"));
        let _lock = lock(&lock_path, name)?;

        // A blob an earlier download (of another revision, or by another tool) completed.
        if fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == size)
            && blob_matches(&blob, size, expected.as_deref(), &mut rep, cancel)?
        {
            self.link(&blob, &pointer)?;
            rep.send(DownloadStage::Finished, size, expected);
            return Ok(());
        }
        if fs::symlink_metadata(&blob).is_ok() {
            fs::remove_file(&blob).map_err(io_err(&blob))?;
        }

        let part = blobs.join(format!("{etag}.part"));
        let actual = self.transfer(&part, size, &mut rep, cancel)?;
        if let Some(want) = &expected
            && actual != *want
        {
            let _ = fs::remove_file(&part);
            return Err(DownloadError::ChecksumMismatch {
                file: name.clone(),
                expected: want.clone(),
                actual,
            });
        }
        fs::rename(&part, &blob).map_err(io_err(&blob))?;
        self.link(&blob, &pointer)?;
        rep.send(DownloadStage::Finished, size, expected);
        Ok(())
    }

    /// The file's ETag (its blob name in the cache) and the SHA-256 it must have: the pinned
    /// one, else the hub's when the ETag is one. Refuses an unusable ETag, a pin the hub
    /// contradicts, and a weights file with no checksum at all.
    fn checked_etag(&self, meta: &Metadata) -> Result<(String, Option<String>), DownloadError> {
        let name = &self.file.name;
        let etag = meta
            .etag()
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string();
        if !is_plain_name(&etag) {
            return Err(self.not_a_hub(format!("unusable ETag `{etag}` for {name}")));
        }
        let hub_sha = is_sha256(&etag).then(|| etag.to_ascii_lowercase());
        let expected = match (&self.file.sha256, &hub_sha) {
            (Some(pinned), Some(hub)) if !pinned.eq_ignore_ascii_case(hub) => {
                return Err(DownloadError::PinnedMismatch {
                    file: name.clone(),
                    pinned: pinned.to_ascii_lowercase(),
                    hub: hub.clone(),
                });
            }
            (Some(pinned), _) => Some(pinned.to_ascii_lowercase()),
            (None, hub) => hub.clone(),
        };
        if self.index == 0 && expected.is_none() {
            return Err(DownloadError::NoChecksum { file: name.clone() });
        }
        Ok((etag, expected))
    }

    fn not_a_hub(&self, reason: String) -> DownloadError {
        DownloadError::NotAHub {
            endpoint: self.endpoint.to_string(),
            reason,
        }
    }

    /// Streams the file into `part` (resuming a partial one), hashing as it goes; returns
    /// the SHA-256 of the whole file. A short transfer keeps the part for a resume; an
    /// oversized one deletes it.
    fn transfer(
        &self,
        part: &Path,
        size: u64,
        rep: &mut Reporter,
        cancel: &AtomicBool,
    ) -> Result<String, DownloadError> {
        let name = &self.file.name;
        let mut start = fs::metadata(part).map_or(0, |m| m.len());
        if start > size {
            fs::remove_file(part).map_err(io_err(part))?;
            start = 0;
        }
        let mut hasher = Sha256::new();
        if start > 0 {
            hash_prefix(part, start, &mut hasher, rep, cancel)?;
        }
        let mut done = start;
        if done < size {
            let (response, resumed) = self.request(part, start)?;
            let mut out = if resumed {
                OpenOptions::new().append(true).open(part)
            } else {
                hasher = Sha256::new();
                done = 0;
                File::create(part)
            }
            .map_err(io_err(part))?;
            let mut body = response.into_body().into_reader();
            rep.send(DownloadStage::Downloading, done, None);
            let streamed = self.stream(
                &mut body,
                &mut out,
                part,
                done,
                size,
                &mut hasher,
                rep,
                cancel,
            );
            if let Err(e @ DownloadError::SizeMismatch { .. }) = streamed {
                // More bytes than the file has: the part is useless (closed first, so that
                // every system lets it go).
                drop(out);
                let _ = fs::remove_file(part);
                return Err(e);
            }
            done = streamed?;
            out.sync_all().map_err(io_err(part))?;
        }
        if done < size {
            return Err(DownloadError::Interrupted {
                file: name.clone(),
                reason: format!("the connection closed after {done} of {size} bytes"),
            });
        }
        Ok(hex(&hasher.finalize()))
    }

    /// Asks for the file from byte `start` (the whole file when 0); whether the answer
    /// resumes `part`. A 416 means the stored part no longer fits the file: it is deleted so
    /// that the next try starts again.
    fn request(
        &self,
        part: &Path,
        start: u64,
    ) -> Result<(ureq::http::Response<ureq::Body>, bool), DownloadError> {
        let name = &self.file.name;
        let mut request = self.agent.get(&self.url);
        if let Some(token) = self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if start > 0 {
            request = request.header("Range", format!("bytes={start}-"));
        }
        let response = request
            .call()
            .map_err(|e| classify_ureq_error(&e, self.endpoint, self.source, self.commit, name))?;
        let status = response.status().as_u16();
        let resumed = match status {
            206 if start > 0 => {
                let range = response
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !range.starts_with(&format!("bytes {start}-")) {
                    return Err(self.not_a_hub(format!(
                        "asked for {name} from byte {start}, got range `{range}`"
                    )));
                }
                true
            }
            200 => false,
            // The stored part no longer fits the file: start again next time.
            416 => {
                fs::remove_file(part).map_err(io_err(part))?;
                return Err(DownloadError::Interrupted {
                    file: name.clone(),
                    reason: "the hub refused to resume the partial download".into(),
                });
            }
            s => return Err(status_error(s, &self.url, self.source, self.commit, name)),
        };
        Ok((response, resumed))
    }

    /// Copies the response body into `out` (holding `done` bytes so far) and the hasher
    /// until the body ends; returns the bytes held then. A cancel or a broken connection
    /// keeps what was written for a resume; more bytes than `size` are a
    /// [`DownloadError::SizeMismatch`] (the caller deletes the part).
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        body: &mut impl Read,
        out: &mut File,
        part: &Path,
        mut done: u64,
        size: u64,
        hasher: &mut Sha256,
        rep: &mut Reporter,
        cancel: &AtomicBool,
    ) -> Result<u64, DownloadError> {
        let name = &self.file.name;
        let mut buf = vec![0u8; CHUNK];
        loop {
            if cancel.load(Ordering::Relaxed) {
                out.flush().map_err(io_err(part))?;
                return Err(DownloadError::Cancelled);
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.flush().map_err(io_err(part))?;
                    return Err(DownloadError::Interrupted {
                        file: name.clone(),
                        reason: e.to_string(),
                    });
                }
            };
            if done + n as u64 > size {
                return Err(DownloadError::SizeMismatch {
                    file: name.clone(),
                    expected: size,
                    actual: done + n as u64,
                });
            }
            out.write_all(&buf[..n]).map_err(io_err(part))?;
            hasher.update(&buf[..n]);
            done += n as u64;
            rep.tick(DownloadStage::Downloading, done);
        }
        Ok(done)
    }

    /// Puts the snapshot entry for the file: a relative link to the blob where the system
    /// allows links (the hub cache layout), else a hard link or a copy.
    fn link(&self, blob: &Path, pointer: &Path) -> Result<(), DownloadError> {
        if let Some(dir) = pointer.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        if fs::symlink_metadata(pointer).is_ok() {
            fs::remove_file(pointer).map_err(io_err(pointer))?;
        }
        #[cfg(unix)]
        {
            // snapshots/<commit>/<name...> -> ../../(one more per folder in name)blobs/<etag>
            let depth = Path::new(&self.file.name).components().count() + 1;
            let mut target = PathBuf::new();
            for _ in 0..depth {
                target.push("..");
            }
            target.push("blobs");
            target.push(blob.file_name().unwrap_or_default());
            std::os::unix::fs::symlink(&target, pointer).map_err(io_err(pointer))
        }
        #[cfg(not(unix))]
        {
            fs::hard_link(blob, pointer)
                .or_else(|_| fs::copy(blob, pointer).map(|_| ()))
                .map_err(io_err(pointer))
        }
    }
}

/// Takes the download lock of a blob (the file `hf-hub` locks too); fails at once when
/// another download holds it.
fn lock(path: &Path, file: &str) -> Result<File, DownloadError> {
    let handle = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(fs::TryLockError::WouldBlock) => Err(DownloadError::Busy {
            file: file.to_string(),
            path: path.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
}

/// Feeds the first `len` bytes of `path` to `hasher`, reporting them as verified.
fn hash_prefix(
    path: &Path,
    len: u64,
    hasher: &mut Sha256,
    rep: &mut Reporter,
    cancel: &AtomicBool,
) -> Result<(), DownloadError> {
    let mut f = File::open(path).map_err(io_err(path))?.take(len);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    rep.send(DownloadStage::Verifying, 0, None);
    loop {
        check_cancel(cancel)?;
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        rep.tick(DownloadStage::Verifying, done);
    }
    Ok(())
}

/// SHA-256 (hex) of a whole file on disk.
fn hash_file(
    path: &Path,
    len: u64,
    rep: &mut Reporter,
    cancel: &AtomicBool,
) -> Result<String, DownloadError> {
    let mut hasher = Sha256::new();
    hash_prefix(path, len, &mut hasher, rep, cancel)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits: a SHA-256 (Git LFS object ids are exactly that).
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Safe as one path component: ASCII letters, digits, `-`, `_`, `.`, not only dots.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.bytes().all(|b| b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_source_names_the_hf_layout_files() {
        let s = DownloadSource::default();
        assert_eq!(s.repo, VIT_L14_336_REPO);
        assert_eq!(s.files[0].name, "model.safetensors");
        assert!(s.files.iter().any(|f| f.name == "config.json"));
        assert_eq!(
            s.revisions(),
            vec!["main", VIT_L14_336_SAFETENSORS_REVISION]
        );
        s.validate().unwrap();
    }

    #[test]
    fn validate_rejects_paths_leaving_the_cache_and_bad_digests() {
        let mut s = DownloadSource::default();
        s.files[1].name = "../evil".into();
        assert!(matches!(s.validate(), Err(DownloadError::InvalidSource(_))));
        let mut s = DownloadSource::default();
        s.files[0].sha256 = Some("abc".into());
        assert!(matches!(s.validate(), Err(DownloadError::InvalidSource(_))));
        let mut s = DownloadSource::default();
        s.files.clear();
        assert!(s.validate().is_err());
    }

    #[test]
    fn endpoint_loses_its_trailing_slash() {
        let s = DownloadSource {
            endpoint: Some("http://127.0.0.1:9/".into()),
            ..DownloadSource::default()
        };
        assert_eq!(s.resolved_endpoint(), "http://127.0.0.1:9");
    }

    #[test]
    fn digests_and_names() {
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"a".repeat(40)));
        assert!(is_plain_name("0123abc"));
        assert!(!is_plain_name(".."));
        assert!(!is_plain_name("a/b"));
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }

    #[test]
    fn offline_message_points_to_the_file_chooser() {
        let e = DownloadError::Offline {
            endpoint: "https://huggingface.co".into(),
            reason: "host not found".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("cannot be reached"), "{msg}");
        assert!(msg.contains("File > Open CLIP weights"), "{msg}");
        assert!(msg.contains("--clip"), "{msg}");
        assert!(e.is_offline());
    }
}
