//! Prometheus metrics: every name in one place, bounded labels only
//! (connector, table, op, outcome, class, state) — never an LSN, xid or key.
//! Recorded per batch or per status update, not per row.

use std::sync::LazyLock;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const EVENTS_TOTAL: &str = "siphon_events_total";
pub const KAFKA_TRANSACTIONS_TOTAL: &str = "siphon_kafka_transactions_total";
pub const KAFKA_COMMIT_SECONDS: &str = "siphon_kafka_commit_duration_seconds";
pub const REGISTRY_REQUESTS_TOTAL: &str = "siphon_registry_requests_total";
pub const REPLICATION_LAG_BYTES: &str = "siphon_replication_lag_bytes";
pub const REPLICATION_LAG_MS: &str = "siphon_replication_lag_milliseconds";
pub const CONNECTOR_STATE: &str = "siphon_connector_state";
pub const ERRORS_TOTAL: &str = "siphon_errors_total";
pub const CHANNEL_EVENTS: &str = "siphon_channel_events";
pub const HEARTBEATS_TOTAL: &str = "siphon_heartbeats_total";
pub const SNAPSHOT_ROWS_TOTAL: &str = "siphon_snapshot_rows_total";
pub const SNAPSHOT_ROWS_ESTIMATED: &str = "siphon_snapshot_rows_estimated";
pub const SNAPSHOT_CHUNKS_REMAINING: &str = "siphon_snapshot_chunks_remaining";
pub const DEAD_LETTERS_TOTAL: &str = "siphon_dead_letters_total";

pub struct Metrics {
    registry: Registry,
    /// Events written to Kafka (committed), by table and op.
    pub events: IntCounterVec,
    /// Kafka transactions by outcome (`committed`, `aborted`, `failed`).
    pub kafka_transactions: IntCounterVec,
    pub kafka_commit_seconds: HistogramVec,
    /// Schema registrations by outcome (`registered`, `error`).
    pub registry_requests: IntCounterVec,
    /// WAL received from PostgreSQL but not yet confirmed as flushed.
    pub replication_lag_bytes: IntGaugeVec,
    /// Age of the newest committed change (commit time → Kafka commit).
    pub replication_lag_ms: IntGaugeVec,
    /// 1 for the connector's current state, 0 for the others.
    pub connector_state: IntGaugeVec,
    /// Errors by class (`transient`, `fatal`).
    pub errors: IntCounterVec,
    /// Changes waiting between the reader and the writer.
    pub channel_events: IntGaugeVec,
    /// Heartbeat action queries that ran (`[heartbeat]`).
    pub heartbeats: IntCounterVec,
    /// Snapshot rows committed to Kafka, by table.
    pub snapshot_rows: IntCounterVec,
    /// The table's estimated row count (`pg_class.reltuples`) while it is
    /// snapshotted.
    pub snapshot_rows_estimated: IntGaugeVec,
    /// Chunks of the table not yet handed to the writer.
    pub snapshot_chunks_remaining: IntGaugeVec,
    /// Events written to the dead-letter topic (committed), by table.
    pub dead_letters: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("invariant: valid metric definition")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("invariant: valid metric definition")
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::new(),
        events: counter(
            EVENTS_TOTAL,
            "Change events committed to Kafka",
            &["connector", "table", "op"],
        ),
        kafka_transactions: counter(
            KAFKA_TRANSACTIONS_TOTAL,
            "Kafka transactions by outcome",
            &["connector", "outcome"],
        ),
        kafka_commit_seconds: HistogramVec::new(
            HistogramOpts::new(KAFKA_COMMIT_SECONDS, "Kafka transaction commit latency").buckets(
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["connector"],
        )
        .expect("invariant: valid metric definition"),
        registry_requests: counter(
            REGISTRY_REQUESTS_TOTAL,
            "Schema registry registrations by outcome",
            &["connector", "outcome"],
        ),
        replication_lag_bytes: gauge(
            REPLICATION_LAG_BYTES,
            "WAL bytes received from PostgreSQL and not yet confirmed flushed",
            &["connector"],
        ),
        replication_lag_ms: gauge(
            REPLICATION_LAG_MS,
            "Milliseconds between a change's commit in PostgreSQL and its Kafka commit",
            &["connector"],
        ),
        connector_state: gauge(
            CONNECTOR_STATE,
            "1 for the connector's current state",
            &["connector", "state"],
        ),
        errors: counter(
            ERRORS_TOTAL,
            "Connector errors by class",
            &["connector", "class"],
        ),
        channel_events: gauge(
            CHANNEL_EVENTS,
            "Changes buffered between the replication reader and the Kafka writer",
            &["connector"],
        ),
        heartbeats: counter(
            HEARTBEATS_TOTAL,
            "Heartbeat action queries run",
            &["connector"],
        ),
        snapshot_rows: counter(
            SNAPSHOT_ROWS_TOTAL,
            "Snapshot rows committed to Kafka",
            &["connector", "table"],
        ),
        snapshot_rows_estimated: gauge(
            SNAPSHOT_ROWS_ESTIMATED,
            "Estimated rows of a table being snapshotted",
            &["connector", "table"],
        ),
        snapshot_chunks_remaining: gauge(
            SNAPSHOT_CHUNKS_REMAINING,
            "Snapshot chunks of a table not yet read",
            &["connector", "table"],
        ),
        dead_letters: counter(
            DEAD_LETTERS_TOTAL,
            "Events written to the dead-letter topic instead of their table's topic",
            &["connector", "table"],
        ),
    };
    for c in [
        Box::new(m.events.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(m.kafka_transactions.clone()),
        Box::new(m.kafka_commit_seconds.clone()),
        Box::new(m.registry_requests.clone()),
        Box::new(m.replication_lag_bytes.clone()),
        Box::new(m.replication_lag_ms.clone()),
        Box::new(m.connector_state.clone()),
        Box::new(m.errors.clone()),
        Box::new(m.channel_events.clone()),
        Box::new(m.heartbeats.clone()),
        Box::new(m.snapshot_rows.clone()),
        Box::new(m.snapshot_rows_estimated.clone()),
        Box::new(m.snapshot_chunks_remaining.clone()),
        Box::new(m.dead_letters.clone()),
    ] {
        m.registry
            .register(c)
            .expect("invariant: metric names are unique");
    }
    m
});

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    TextEncoder::new()
        .encode_to_string(&METRICS.registry.gather())
        .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
}
