//! The HTTP endpoints: `/health/live`, `/health/ready`, `/metrics`.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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
        .route("/metrics", get(prometheus));
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
