//! The HTTP endpoints, on two listeners:
//!
//! - the **health** listener (`--http-addr`): `/health/live`,
//!   `/health/ready`, `/metrics`. Read-only, unauthenticated, for probes
//!   and scrapers;
//! - the **control** listener (`--control-addr`, off unless set):
//!   `POST /connectors/{name}/snapshot` (incremental snapshot signals).
//!   It changes what a connector does, so every request must carry
//!   `Authorization: Bearer <token>`; the token comes from the environment
//!   or a file, never from the command line, and is never logged.
//!
//! Both bound what a client can hold: headers must arrive within
//! [`HEADER_READ_TIMEOUT`], a whole request within [`REQUEST_TIMEOUT`],
//! bodies are at most [`MAX_BODY_BYTES`], and at most [`MAX_CONNECTIONS`]
//! connections are served at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{health, metrics};
use crate::config::Secret;

/// Largest request body either listener reads (a signal is a few hundred
/// bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A client that has not sent its request headers by then is disconnected.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request (body included) not answered by then gets 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once per listener; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a signal request waits for the connector to apply it.
const SIGNAL_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The environment variable holding the control listener's token.
pub const CONTROL_TOKEN_ENV: &str = "SIPHON_CONTROL_TOKEN";
/// Shortest token accepted.
const MIN_TOKEN_CHARS: usize = 16;

/// The bearer token of the control listener.
#[derive(Clone, Debug)]
pub struct ControlToken(Secret);

impl ControlToken {
    /// The token from `file` (surrounding whitespace trimmed, so a
    /// trailing newline does not count) or else from `env_value` (the
    /// value of [`CONTROL_TOKEN_ENV`]); exactly one must be given.
    pub fn load(file: Option<&Path>, env_value: Option<String>) -> Result<ControlToken, String> {
        let token = match (file, env_value.filter(|v| !v.is_empty())) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "control token: both --control-token-file and {CONTROL_TOKEN_ENV} are set: keep one"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "control token: --control-addr is set but no token is: set {CONTROL_TOKEN_ENV} \
                     or --control-token-file (SIPHON_CONTROL_TOKEN_FILE), e.g. from a Kubernetes Secret"
                ));
            }
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|e| {
                    format!(
                        "control token: cannot read --control-token-file {}: {e}",
                        path.display()
                    )
                })?
                .trim()
                .to_owned(),
            (None, Some(v)) => v.trim().to_owned(),
        };
        if token.chars().count() < MIN_TOKEN_CHARS || token.chars().any(char::is_whitespace) {
            return Err(format!(
                "control token: must be at least {MIN_TOKEN_CHARS} characters without spaces \
                 (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(ControlToken(Secret::new(token)))
    }

    /// Whether an `Authorization` header value carries this token, compared
    /// in time independent of where the two differ.
    fn admits(&self, authorization: &[u8]) -> bool {
        let Some(scheme) = authorization.get(..7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        constant_time_eq(authorization[7..].trim_ascii(), self.0.expose().as_bytes())
    }
}

/// Equal byte strings, in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Binds the health listener at `addr` (so a bad address fails at start-up,
/// not later) and serves it until `cancel` fires.
pub async fn serve(addr: SocketAddr, cancel: CancellationToken) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(prometheus));
    serve_router(addr, bounded(app), cancel).await
}

/// Binds the control listener at `addr` and serves it until `cancel` fires;
/// every request must carry `token`.
pub async fn serve_control(
    addr: SocketAddr,
    token: ControlToken,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/connectors/{name}/snapshot", post(snapshot_signal))
        .layer(middleware::from_fn_with_state(Arc::new(token), authorize));
    serve_router(addr, bounded(app), cancel).await
}

/// The limits both listeners share (the timeout outermost, so it also
/// covers a body that trickles in).
fn bounded(app: Router) -> Router {
    app.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(request_timeout))
}

async fn request_timeout(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response(),
    }
}

async fn authorize(
    State(token): State<Arc<ControlToken>>,
    request: Request,
    next: Next,
) -> Response {
    let admitted = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| token.admits(v.as_bytes()));
    if !admitted {
        tracing::debug!(path = %request.uri().path(), "control request without a valid bearer token refused");
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Bearer"),
                (header::CONTENT_TYPE, "application/json"),
            ],
            serde_json::json!({
                "message": "missing or wrong bearer token: send Authorization: Bearer <the control token>"
            })
            .to_string(),
        )
            .into_response();
    }
    next.run(request).await
}

/// Accepts connections (at most [`MAX_CONNECTIONS`] at once) and serves
/// HTTP/1.1 on each with [`HEADER_READ_TIMEOUT`]; on `cancel`, stops
/// accepting and lets open requests finish.
async fn serve_router(
    addr: SocketAddr,
    app: Router,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // Priority: shutdown first, then a free slot, then a client.
            let slot = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: let it pass.
                        tracing::warn!(address = %bound, error = %e, "http accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let service = TowerToHyperService::new(app.clone());
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = cancel.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    Ok(bound)
}

/// The process runs and answers: nothing more (restarting a pod does not
/// fix a connector's fatal error; readiness reports that).
async fn live() -> &'static str {
    "ok\n"
}

/// 200 when every connector streams, 503 otherwise; the body lists states.
async fn ready() -> impl IntoResponse {
    let (ready, states) = health::readiness();
    let body = serde_json::json!({ "ready": ready, "connectors": states }).to_string();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn prometheus() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
}

/// `{"action": "execute" | "stop" | "pause" | "resume", "tables": ["schema.table", …], "force": false}`:
/// 202 when the connector applied it (or took it and is still busy), 400
/// for a bad request, 409 when the connector is not streaming or refused
/// it (a stop that would drop an initial snapshot's rest without
/// `"force": true`), 413 for a body over [`MAX_BODY_BYTES`].
async fn snapshot_signal(UrlPath(name): UrlPath<String>, body: String) -> impl IntoResponse {
    use crate::snapshot::incremental::{SignalError, parse_signal, signal};
    let reply = |status: StatusCode, message: String| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "connector": name, "message": message }).to_string(),
        )
    };
    let request: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let Some(action) = request.get("action").and_then(|a| a.as_str()) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "missing \"action\": execute, stop, pause or resume".into(),
        );
    };
    let mut data = serde_json::json!({
        "data-collections": request.get("tables").cloned().unwrap_or_else(|| serde_json::json!([]))
    });
    if let Some(force) = request.get("force") {
        data["force"] = force.clone();
    }
    let control = match parse_signal(&format!("{action}-snapshot"), Some(&data.to_string())) {
        Ok(c) => c,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e),
    };
    let answer = match signal(&name, control) {
        Ok(answer) => answer,
        Err(SignalError::NotStreaming) => {
            return reply(
                StatusCode::CONFLICT,
                "no such connector streaming in this process".into(),
            );
        }
        Err(SignalError::Busy) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many signals pending; retry".into(),
            );
        }
    };
    match tokio::time::timeout(SIGNAL_ANSWER_WAIT, answer).await {
        Ok(Ok(Ok(()))) => reply(StatusCode::ACCEPTED, format!("{action} accepted")),
        Ok(Ok(Err(refused))) => reply(StatusCode::CONFLICT, refused),
        Ok(Err(_)) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "the connector restarted before it applied the signal; retry".into(),
        ),
        Err(_) => reply(
            StatusCode::ACCEPTED,
            format!(
                "{action} queued: the connector is busy and applies it next (its log says when)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ControlToken {
        ControlToken::load(None, Some("0123456789abcdef-token".into())).unwrap()
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = token();
        assert!(t.admits(b"Bearer 0123456789abcdef-token"));
        assert!(t.admits(b"bearer 0123456789abcdef-token"));
        assert!(!t.admits(b"Bearer 0123456789abcdef-tokem"));
        assert!(!t.admits(b"Bearer 0123456789abcdef-token2"));
        assert!(!t.admits(b"Basic 0123456789abcdef-token"));
        assert!(!t.admits(b"0123456789abcdef-token"));
        assert!(!t.admits(b"Bearer "));
        assert!(!t.admits(b""));
    }

    #[test]
    fn a_token_comes_from_one_place_and_is_long_enough() {
        assert!(ControlToken::load(None, None).is_err());
        assert!(ControlToken::load(None, Some(String::new())).is_err());
        assert!(ControlToken::load(None, Some("short".into())).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef-token\n").unwrap();
        let t = ControlToken::load(Some(&file), None).unwrap();
        assert!(t.admits(b"Bearer 0123456789abcdef-token"));
        assert!(ControlToken::load(Some(&file), Some("0123456789abcdef-other".into())).is_err());
        let err = ControlToken::load(Some(&dir.path().join("missing")), None).unwrap_err();
        assert!(err.contains("cannot read --control-token-file"), "{err}");
        // The value never prints.
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
    }
}
