//! DICOMweb client (PS3.18): QIDO-RS searches, WADO-RS retrieval of single instances, STOW-RS
//! stores, over `ureq` with rustls (ring provider) for `https://` nodes.
//!
//! Instances are asked for with `transfer-syntax=*`, so the server sends them as stored and
//! pixel data stays byte-identical. The whole request, body included, is bounded by the node's
//! timeout; bodies by [`Limits::max_object_bytes`]; searches by [`Limits::max_matches`].
//! Credentials travel only in the `Authorization` header; URLs with user information are
//! refused, because URLs appear in error messages.
use std::path::Path;

use base64::Engine;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use serde_json::Value;
use ureq::Agent;

use super::dimse::FileForStore;
use super::node::{WebAuth, WebEndpoint};
use super::query::{InstanceRef, Level, Match, Query};
use super::retrieve::GetTarget;
use super::{Limits, PacsClient, PacsError, Received};

const DICOM_JSON: &str = "application/dicom+json";

/// A DICOMweb service and the limits for talking to it.
#[derive(Debug)]
pub struct WebClient {
    endpoint: WebEndpoint,
    limits: Limits,
    agent: Agent,
    /// The base URL without a trailing slash.
    base: String,
}

impl WebClient {
    /// A client for `endpoint`; no request is made yet. Fails with [`PacsError::Invalid`]
    /// when the base URL does not start with `http://` or `https://`, or carries credentials
    /// (`user@host`).
    pub fn new(endpoint: WebEndpoint, limits: Limits) -> Result<Self, PacsError> {
        let base = endpoint.base_url.trim().trim_end_matches('/').to_string();
        let Some(rest) = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
        else {
            return Err(PacsError::Invalid(format!(
                "DICOMweb base URL must start with http:// or https://, got {base:?}"
            )));
        };
        if rest
            .split('/')
            .next()
            .is_some_and(|authority| authority.contains('@'))
        {
            return Err(PacsError::Invalid(
                "put DICOMweb credentials in the node's auth settings, not in the URL".into(),
            ));
        }
        let mut config = Agent::config_builder()
            .timeout_global(Some(limits.timeout))
            .http_status_as_error(false);
        if let Some(tls) = &endpoint.tls {
            if !base.starts_with("https://") {
                return Err(PacsError::Invalid(format!(
                    "TLS settings need an https:// base URL, got {base:?}"
                )));
            }
            config = config.tls_config(tls.load()?.ureq_config()?);
        }
        let agent: Agent = config.build().into();
        Ok(WebClient {
            endpoint,
            limits,
            agent,
            base,
        })
    }

    fn timeout_error(&self) -> PacsError {
        PacsError::timeout(&self.base, &self.limits)
    }

    fn protocol_error(&self, reason: impl ToString) -> PacsError {
        PacsError::protocol(&self.base, reason.to_string())
    }

    fn http_error(&self, e: ureq::Error) -> PacsError {
        use std::io::ErrorKind;
        match e {
            ureq::Error::Timeout(_) => self.timeout_error(),
            ureq::Error::Io(io)
                if matches!(io.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
            {
                self.timeout_error()
            }
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::ConnectionReset
                        | ErrorKind::NotFound
                        | ErrorKind::AddrNotAvailable
                ) =>
            {
                PacsError::Connect {
                    address: self.base.clone(),
                    reason: io.to_string(),
                }
            }
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => PacsError::Connect {
                address: self.base.clone(),
                reason: e.to_string(),
            },
            ureq::Error::BodyExceedsLimit(limit) => PacsError::TooLarge {
                address: self.base.clone(),
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
                unit: "bytes in one response",
            },
            ureq::Error::Io(io)
                if io
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
            {
                PacsError::Connect {
                    address: self.base.clone(),
                    reason: format!("TLS handshake failed: {io}"),
                }
            }
            ureq::Error::Rustls(tls) => PacsError::Connect {
                address: self.base.clone(),
                reason: format!("TLS handshake failed: {tls}"),
            },
            ureq::Error::Io(io) if io.kind() == ErrorKind::UnexpectedEof => {
                self.protocol_error(format!("response truncated: {io}"))
            }
            other => self.protocol_error(other.to_string()),
        }
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.endpoint.auth {
            WebAuth::None => request,
            WebAuth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                request.header("Authorization", format!("Basic {encoded}"))
            }
            WebAuth::Bearer { token } => {
                request.header("Authorization", format!("Bearer {}", token.expose()))
            }
        }
    }

    /// Reads a response: status, content type and body (bounded), or the error.
    fn finish(
        &self,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String, Vec<u8>), PacsError> {
        let mut response = response.map_err(|e| self.http_error(e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response
            .body_mut()
            .with_config()
            .limit(self.limits.max_object_bytes as u64)
            .read_to_vec()
            .map_err(|e| self.http_error(e))?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(PacsError::Http {
                address: self.base.clone(),
                status,
                body: text.trim().to_string(),
            });
        }
        Ok((status, content_type, body))
    }

    /// A QIDO-RS search at `path` with `params`, read as DICOM JSON objects; at most `limit`
    /// matches are accepted.
    fn search(
        &self,
        path: &str,
        params: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<serde_json::Map<String, Value>>, PacsError> {
        let mut request = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Accept", DICOM_JSON)
            // One more than allowed, to tell "exactly the limit" from "too many".
            .query("limit", (limit + 1).to_string());
        for (k, v) in params {
            request = request.query(k, v);
        }
        let (status, _, body) = self.finish(self.authorize(request).call())?;
        if status == 204 || body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| self.protocol_error(format!("search answer is not JSON: {e}")))?;
        let Value::Array(items) = value else {
            return Err(self.protocol_error("search answer is not a JSON array"));
        };
        if items.len() > limit {
            return Err(PacsError::TooLarge {
                address: self.base.clone(),
                limit,
                unit: "matches",
            });
        }
        items
            .into_iter()
            .map(|item| match item {
                Value::Object(map) => Ok(map),
                _ => Err(self.protocol_error("search answer holds a non-object")),
            })
            .collect()
    }

    fn matches(
        &self,
        level: Level,
        items: Vec<serde_json::Map<String, Value>>,
    ) -> Result<Vec<Match>, PacsError> {
        items
            .iter()
            .map(|item| {
                Match::from_lookup(level, |t| json_text(item, t))
                    .map_err(|e| self.protocol_error(e))
            })
            .collect()
    }
}

impl PacsClient for WebClient {
    fn echo(&self) -> Result<(), PacsError> {
        // A search for (at most a couple of) studies: cheap on any archive.
        self.search("/studies", &[], 1)
            .map(drop)
            .or_else(|e| match e {
                PacsError::TooLarge { .. } => Ok(()),
                other => Err(other),
            })
    }

    fn find(&self, query: &Query) -> Result<Vec<Match>, PacsError> {
        query.validate()?;
        let (path, in_path): (String, &[Tag]) =
            match (query.level, &query.study_uid, &query.series_uid) {
                (Level::Study, _, _) => ("/studies".into(), &[]),
                (Level::Series, Some(st), _) => {
                    (format!("/studies/{st}/series"), &[tags::STUDY_INSTANCE_UID])
                }
                (Level::Series, None, _) => ("/series".into(), &[]),
                (Level::Instance, Some(st), Some(se)) => (
                    format!("/studies/{st}/series/{se}/instances"),
                    &[tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID],
                ),
                // validate() requires both UIDs at instance level.
                (Level::Instance, _, _) => ("/instances".into(), &[]),
            };
        let mut params = Vec::new();
        for key in query.keys().iter().filter(|k| !in_path.contains(&k.tag)) {
            let tag = format!("{:04X}{:04X}", key.tag.0, key.tag.1);
            if key.value.is_empty() {
                params.push(("includefield".to_string(), tag));
            } else {
                params.push((tag, key.value.clone()));
            }
        }
        let items = self.search(&path, &params, self.limits.max_matches)?;
        self.matches(query.level, items)
    }

    fn instances(&self, target: &GetTarget) -> Result<Vec<InstanceRef>, PacsError> {
        target.validate()?;
        let path = match &target.series_uid {
            Some(se) => format!("/studies/{}/series/{se}/instances", target.study_uid),
            None => format!("/studies/{}/instances", target.study_uid),
        };
        let items = self.search(&path, &[], self.limits.max_matches)?;
        Ok(self
            .matches(Level::Instance, items)?
            .iter()
            .filter_map(Match::instance)
            .collect())
    }

    fn fetch(
        &self,
        wanted: &[InstanceRef],
        sink: &mut dyn FnMut(Received) -> Result<(), PacsError>,
    ) -> Result<(), PacsError> {
        for inst in wanted {
            let url = format!(
                "{}/studies/{}/series/{}/instances/{}",
                self.base, inst.study_uid, inst.series_uid, inst.sop_instance_uid
            );
            let request = self.agent.get(url).header(
                "Accept",
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            );
            let (_, content_type, body) = self.finish(self.authorize(request).call())?;
            let parts =
                multipart_parts(&content_type, &body).map_err(|e| self.protocol_error(e))?;
            let [part] = parts.as_slice() else {
                return Err(self
                    .protocol_error(format!("expected one instance, got {} parts", parts.len())));
            };
            let received =
                Received::from_part10(part.to_vec()).map_err(|e| self.protocol_error(e))?;
            sink(received)?;
        }
        Ok(())
    }

    fn store(&self, path: &Path) -> Result<String, PacsError> {
        let file = FileForStore::read(path)?;
        let boundary = format!("mvfa-{:032x}", rand::random::<u128>());
        let mut body = Vec::with_capacity(file.bytes.len() + 200);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&file.bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let request = self
            .agent
            .post(format!("{}/studies", self.base))
            .header(
                "Content-Type",
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header("Accept", DICOM_JSON);
        let (status, _, answer) = self.finish(self.authorize(request).send(&body[..]))?;
        // 200: all stored. 202: stored with warnings or partly failed; look for failures.
        if status == 202 {
            let failed = serde_json::from_slice::<Value>(&answer)
                .ok()
                .and_then(|v| v.get("00081198").cloned());
            if let Some(failed) = failed {
                return Err(self.protocol_error(format!(
                    "the server refused {}: {failed}",
                    file.sop_instance_uid
                )));
            }
        }
        Ok(file.sop_instance_uid)
    }
}

/// The value of `tag` in a DICOM JSON object (PS3.18 F.2): strings and numbers as text,
/// person names by their alphabetic group, several values joined by `\`.
fn json_text(item: &serde_json::Map<String, Value>, tag: Tag) -> Option<String> {
    let key = format!("{:04X}{:04X}", tag.0, tag.1);
    let values = item.get(&key)?.get("Value")?.as_array()?;
    let texts: Vec<String> = values
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Object(o) => o
                .get("Alphabetic")
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        })
        .collect();
    let joined = texts.join("\\").trim().to_string();
    (!joined.is_empty()).then_some(joined)
}

/// Why a `multipart/related` response could not be split into its parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MultipartError {
    /// Another content type.
    #[error("expected multipart/related, got {0:?}")]
    NotMultipart(String),
    /// The content type names no boundary.
    #[error("multipart response without a boundary")]
    NoBoundary,
    /// The body never has the boundary.
    #[error("no multipart boundary in the response")]
    BoundaryAbsent,
    /// A part's headers never end.
    #[error("truncated multipart headers")]
    TruncatedHeaders,
    /// The closing delimiter never comes.
    #[error("multipart response truncated (no closing boundary)")]
    Truncated,
}

/// The bodies of a `multipart/related` response (RFC 2046). Fails when the boundary is
/// missing or the closing delimiter never comes (a truncated response).
pub(crate) fn multipart_parts<'a>(
    content_type: &str,
    body: &'a [u8],
) -> Result<Vec<&'a [u8]>, MultipartError> {
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/related")
    {
        return Err(MultipartError::NotMultipart(content_type.to_string()));
    }
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty())
        .ok_or(MultipartError::NoBoundary)?;
    let delimiter = format!("--{boundary}").into_bytes();
    let mut pos = find(body, &delimiter, 0).ok_or(MultipartError::BoundaryAbsent)?;
    let mut parts = Vec::new();
    loop {
        pos += delimiter.len();
        if body[pos..].starts_with(b"--") {
            return Ok(parts);
        }
        let headers_end = find(body, b"\r\n\r\n", pos).ok_or(MultipartError::TruncatedHeaders)?;
        let start = headers_end + 4;
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let end = find(body, &closing, start).ok_or(MultipartError::Truncated)?;
        parts.push(&body[start..end]);
        pos = end + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_are_split_and_truncation_is_an_error() {
        let ct = "multipart/related; type=\"application/dicom\"; boundary=\"XyZ\"";
        let body = b"--XyZ\r\nContent-Type: application/dicom\r\n\r\nab\r\n--Xy\r\n--XyZ\r\n\r\ncd\r\n--XyZ--\r\n";
        let parts = multipart_parts(ct, body).unwrap();
        assert_eq!(parts, vec![&b"ab\r\n--Xy"[..], &b"cd"[..]]);
        assert!(multipart_parts(ct, &body[..30]).is_err());
        assert!(multipart_parts("application/json", body).is_err());
    }

    #[test]
    fn json_values_become_text() {
        let item: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane"}]},
                "00080061":{"vr":"CS","Value":["CT","SR"]},
                "00201208":{"vr":"IS","Value":[3]}}"#,
        )
        .unwrap();
        assert_eq!(
            json_text(&item, tags::PATIENT_NAME).as_deref(),
            Some("Doe^Jane")
        );
        assert_eq!(
            json_text(&item, tags::MODALITIES_IN_STUDY).as_deref(),
            Some("CT\\SR")
        );
        assert_eq!(
            json_text(&item, tags::NUMBER_OF_STUDY_RELATED_INSTANCES).as_deref(),
            Some("3")
        );
        assert_eq!(json_text(&item, tags::PATIENT_ID), None);
    }
}
