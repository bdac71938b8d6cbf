//! The test bed: every test starts its own PostgreSQL cluster, broker and
//! registry stand-in on loopback, and stops them when it ends.

#![allow(dead_code)]

pub mod bed;
pub mod events;
pub mod kafka;
pub mod kafka_proxy;
pub mod postgres;
pub mod registry;
pub mod s3;
pub mod siphon;
pub mod tcp_proxy;
pub mod truth;
pub mod workload;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn poll_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
