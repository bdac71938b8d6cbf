//! Connector states, for `/health/ready` and the `siphon_connector_state`
//! metric.

use std::collections::BTreeMap;
use std::sync::{LazyLock, RwLock};

use super::metrics::metrics;

/// Where a connector is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorState {
    /// Connecting, checking, fencing, reading the stored offset.
    Starting,
    /// Reading the tables' current rows before streaming (initial
    /// snapshot). Not ready yet: consumers do not have the tables.
    Snapshotting,
    /// Replication is running.
    Streaming,
    /// A transient error stopped it; it restarts after a backoff.
    Retrying,
    /// A fatal error stopped it; an operator must act.
    Failed,
    /// Shut down on request.
    Stopped,
}

impl ConnectorState {
    const ALL: [ConnectorState; 6] = [
        ConnectorState::Starting,
        ConnectorState::Snapshotting,
        ConnectorState::Streaming,
        ConnectorState::Retrying,
        ConnectorState::Failed,
        ConnectorState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorState::Starting => "starting",
            ConnectorState::Streaming => "streaming",
            ConnectorState::Retrying => "retrying",
            ConnectorState::Failed => "failed",
            ConnectorState::Stopped => "stopped",
            ConnectorState::Snapshotting => "snapshotting",
        }
    }
}

static STATES: LazyLock<RwLock<BTreeMap<String, ConnectorState>>> =
    LazyLock::new(|| RwLock::new(BTreeMap::new()));

/// Records a connector's state.
pub fn set_state(connector: &str, state: ConnectorState) {
    if let Ok(mut states) = STATES.write() {
        states.insert(connector.to_owned(), state);
    }
    for s in ConnectorState::ALL {
        metrics()
            .connector_state
            .with_label_values(&[connector, s.as_str()])
            .set(i64::from(s == state));
    }
}

/// Every connector's state, and whether all of them stream.
pub fn readiness() -> (bool, BTreeMap<String, ConnectorState>) {
    let states = STATES.read().map(|s| s.clone()).unwrap_or_default();
    let ready = !states.is_empty() && states.values().all(|s| *s == ConnectorState::Streaming);
    (ready, states)
}
