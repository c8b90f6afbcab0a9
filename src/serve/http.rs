//! The node's HTTP side (axum on a small tokio runtime): DICOMweb STOW-RS at
//! `POST /studies[/{study}]`, `GET /health` and `GET /metrics`, optionally over HTTPS.
//!
//! STOW-RS answers as PS3.18 10.5.3 says: 200 when every instance was stored, 202 when some
//! failed, 409 when all failed, and 503 (with `Retry-After`) when the queue refused them all.
//! The response body lists stored instances (ReferencedSOPSequence) and failed ones with
//! their FailureReason (FailedSOPSequence).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::intake::{Intake, Outcome};
use super::journal::Recorded;
use super::store_scp::{CANNOT_UNDERSTAND, OUT_OF_RESOURCES};

/// What the handlers share.
pub struct HttpContext {
    /// Where instances go.
    pub intake: Arc<Intake>,
    /// Complete a request's series when it ends.
    pub complete_at_release: bool,
    /// STOW-RS requests served at once (each holds its body in memory).
    pub requests: Semaphore,
    /// Seconds a refused sender is told to wait.
    pub retry_after: u64,
}

/// The router.
pub fn router(ctx: Arc<HttpContext>, max_body: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/studies", post(stow))
        .route("/studies/{study}", post(stow))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(ctx)
}

async fn health(State(ctx): State<Arc<HttpContext>>) -> Response {
    let intake = ctx.intake.clone();
    let report = tokio::task::spawn_blocking(move || {
        let journal = intake.journal.lock().unwrap_or_else(|p| p.into_inner());
        journal
            .counts()
            .and_then(|c| journal.series_states().map(|s| (c, s)))
    })
    .await;
    match report {
        Ok(Ok((c, states))) => {
            let series: serde_json::Map<String, Value> =
                states.into_iter().map(|(s, n)| (s, json!(n))).collect();
            axum::Json(json!({
                "status": "ok",
                "queued_instances": c.queued_instances,
                "queued_series": c.queued_series,
                "unsent_results": c.unsent_results,
                "series": series,
            }))
            .into_response()
        }
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "error", "reason": e.to_string()})),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(ctx): State<Arc<HttpContext>>) -> Response {
    let intake = ctx.intake.clone();
    let text = tokio::task::spawn_blocking(move || {
        let counts = intake
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts()
            .ok();
        intake.metrics.render(counts)
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The boundary of a `multipart/related` content type.
fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The bodies of a multipart message (RFC 2046), with each part's Content-Type.
fn parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<(String, &'a [u8])>, String> {
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let find = |from: usize| {
        body.get(from..)?
            .windows(d.len())
            .position(|w| w == d)
            .map(|p| p + from)
    };
    let mut at = find(0).ok_or("no multipart boundary in the body")?;
    let mut out = Vec::new();
    loop {
        let after = at + d.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Ok(out);
        }
        // Skip the rest of the delimiter line.
        let line_end = body[after..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated multipart body")?
            + after
            + 2;
        let headers_end = body[line_end..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + line_end)
            .or_else(|| {
                body[line_end..]
                    .starts_with(b"\r\n")
                    .then_some(line_end - 2)
            })
            .ok_or("a multipart part without a header end")?;
        let headers = String::from_utf8_lossy(&body[line_end..headers_end]);
        let content_type = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let start = headers_end + 4;
        let next = find(start).ok_or("a multipart part without a closing boundary")?;
        // The CRLF before a delimiter belongs to the delimiter.
        let end = if next >= 2 && &body[next - 2..next] == b"\r\n" {
            next - 2
        } else {
            next
        };
        out.push((content_type, &body[start.min(end)..end]));
        at = next;
    }
}

async fn stow(State(ctx): State<Arc<HttpContext>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Some(boundary) = boundary(&content_type) else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "STOW-RS takes multipart/related; type=\"application/dicom\" with a boundary",
        )
            .into_response();
    };
    let Ok(_permit) = ctx.requests.acquire().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let ctx2 = ctx.clone();
    let answer =
        tokio::task::spawn_blocking(move || store_parts(&ctx2, &body, &boundary, "stow")).await;
    match answer {
        Ok(Ok(r)) => r,
        Ok(Err(reason)) => {
            tracing::warn!(reason, "STOW-RS request rejected");
            (StatusCode::BAD_REQUEST, reason).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn store_parts(
    ctx: &HttpContext,
    body: &[u8],
    boundary: &str,
    source: &str,
) -> Result<Response, String> {
    let parts = parts(body, boundary)?;
    if parts.is_empty() {
        return Err("the request holds no instance".into());
    }
    let mut stored = Vec::new();
    let mut failed = Vec::new();
    let mut refused = 0;
    let mut series = std::collections::BTreeSet::new();
    for (content_type, bytes) in parts {
        let kind = content_type.split(';').next().unwrap_or("").trim();
        if !(kind.is_empty() || kind.eq_ignore_ascii_case("application/dicom")) {
            failed.push(json!({"00081197": {"vr": "US", "Value": [CANNOT_UNDERSTAND]}}));
            continue;
        }
        match ctx.intake.accept(bytes, None, source) {
            Outcome::Stored {
                recorded,
                series_uid,
                sop_class_uid,
                sop_uid,
            } => {
                if recorded != Recorded::Duplicate {
                    series.insert(series_uid);
                }
                stored.push(json!({
                    "00081150": {"vr": "UI", "Value": [sop_class_uid]},
                    "00081155": {"vr": "UI", "Value": [sop_uid]},
                }));
            }
            Outcome::QueueFull | Outcome::Failed(_) => {
                refused += 1;
                failed.push(json!({"00081197": {"vr": "US", "Value": [OUT_OF_RESOURCES]}}));
            }
            Outcome::Malformed(_) => {
                failed.push(json!({"00081197": {"vr": "US", "Value": [CANNOT_UNDERSTAND]}}));
            }
        }
    }
    if ctx.complete_at_release && !series.is_empty() {
        let series: Vec<String> = series.into_iter().collect();
        ctx.intake
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close_series(&series)
            .map_err(|e| e.to_string())?;
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else if stored.is_empty() && refused == failed.len() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if stored.is_empty() {
        StatusCode::CONFLICT
    } else {
        StatusCode::ACCEPTED
    };
    let mut answer = serde_json::Map::new();
    if !stored.is_empty() {
        answer.insert("00081199".into(), json!({"vr": "SQ", "Value": stored}));
    }
    if !failed.is_empty() {
        answer.insert("00081198".into(), json!({"vr": "SQ", "Value": failed}));
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/dicom+json")],
        Value::Object(answer).to_string(),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            ctx.retry_after.to_string().parse().expect("digits"),
        );
    }
    Ok(response)
}

/// A TCP listener whose connections are TLS (HTTPS), for axum.
pub struct TlsListener {
    /// The TCP side.
    pub tcp: tokio::net::TcpListener,
    /// The handshake.
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::warn!(peer = %addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::warn!(peer = %addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_related_bodies_split_into_their_parts() {
        assert_eq!(
            boundary("multipart/related; type=\"application/dicom\"; boundary=\"ab:c\"").as_deref(),
            Some("ab:c")
        );
        assert_eq!(boundary("application/dicom"), None);
        let body = b"preamble\r\n--XY\r\nContent-Type: application/dicom\r\n\r\nONE\r\n--XY\r\n\
Content-Type: application/dicom\r\n\r\nT\r\nWO\r\n--XY--\r\n";
        let p = parts(body, "XY").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "application/dicom");
        assert_eq!(p[0].1, b"ONE");
        assert_eq!(p[1].1, b"T\r\nWO");
        assert!(parts(b"--XY\r\nContent-Type: a\r\n\r\nbody", "XY").is_err());
        assert!(parts(b"nothing", "XY").is_err());
    }
}
