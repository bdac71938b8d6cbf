//! The HTTP endpoints: `/health/live`, `/health/ready`, `/metrics`, and
//! `POST /connectors/{name}/snapshot` (incremental snapshot signals).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use super::{health, metrics};

/// Binds `addr` (so a bad address fails at start-up, not later) and serves
/// until `cancel` fires.
pub async fn serve(addr: SocketAddr, cancel: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(prometheus))
        .route("/connectors/{name}/snapshot", post(snapshot_signal));
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "http server failed");
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

/// `{"action": "execute" | "stop" | "pause" | "resume", "tables": ["schema.table", …]}`:
/// 202 when the connector took it, 400 for a bad request, 409 when the
/// connector is not streaming (signals act on the stream).
async fn snapshot_signal(Path(name): Path<String>, body: String) -> impl IntoResponse {
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
    let data = serde_json::json!({
        "data-collections": request.get("tables").cloned().unwrap_or_else(|| serde_json::json!([]))
    })
    .to_string();
    let control = match parse_signal(&format!("{action}-snapshot"), Some(&data)) {
        Ok(c) => c,
        Err(e) => return reply(StatusCode::BAD_REQUEST, e),
    };
    match signal(&name, control) {
        Ok(()) => reply(StatusCode::ACCEPTED, format!("{action} accepted")),
        Err(SignalError::NotStreaming) => reply(
            StatusCode::CONFLICT,
            "no such connector streaming in this process".into(),
        ),
        Err(SignalError::Busy) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signals pending; retry".into(),
        ),
    }
}
