//! The heartbeat task (`[heartbeat]`, Debezium's `heartbeat.action.query`):
//! runs the configured SQL every `interval_ms` on its own normal
//! connection to the connector's database.
//!
//! Why: the slot only moves when siphon confirms a position, and siphon
//! only confirms what it has seen. When the slot's database is idle while
//! other databases on the same server write a lot, the walsender still
//! sends keepalives and the writer's idle offset commits follow them; but
//! an action query that changes a row of a published table also gives the
//! slot a real change to confirm, and shows in Kafka that the pipeline is
//! alive end to end. See docs/operations.md, "WAL retention".
//!
//! It must not: touch the replication connection, or hold anything the
//! reader or writer wait for. A failure cancels the connector's run (the
//! reader then stops gracefully, committing what it has) and is returned
//! with the option's name and the server's error: transient ones (server
//! down, lock timeouts) restart the connector, others (permission denied,
//! syntax error, missing table) stop it for the operator to fix.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::ConnectorError;
use crate::config::ConnectorConfig;
use crate::postgres::PgError;
use crate::postgres::catalog::Catalog;
use crate::telemetry::metrics::metrics;

/// Starts the heartbeat when it is configured. The task ends with `Ok`
/// when `cancel` fires; on an error it cancels `cancel` itself, so the rest
/// of the connector winds down, and returns the error.
pub(super) fn spawn(
    cfg: &ConnectorConfig,
    cancel: CancellationToken,
) -> Option<JoinHandle<Result<(), ConnectorError>>> {
    let sql = cfg.heartbeat.action_query.clone()?;
    if cfg.heartbeat.interval_ms == 0 {
        return None;
    }
    let interval = Duration::from_millis(cfg.heartbeat.interval_ms);
    let pg = cfg.postgres.clone();
    let name = cfg.name.to_string();
    Some(tokio::spawn(async move {
        let result = tokio::select! {
            // Priority: shutdown first.
            biased;
            _ = cancel.cancelled() => Ok(()),
            r = beat(&pg, &name, &sql, interval) => r,
        };
        if result.is_err() {
            cancel.cancel();
        }
        result
    }))
}

/// Connects, then runs `sql` at each interval (the first right away) until
/// it fails.
async fn beat(
    pg: &crate::config::PostgresConfig,
    connector: &str,
    sql: &str,
    interval: Duration,
) -> Result<(), ConnectorError> {
    let catalog = Catalog::connect(pg).await?;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let beats = metrics().heartbeats.with_label_values(&[connector]);
    loop {
        ticker.tick().await;
        catalog
            .client()
            .batch_execute(sql)
            .await
            .map_err(|source| PgError::Heartbeat {
                sql: sql.to_owned(),
                source,
            })?;
        beats.inc();
        debug!(connector = %connector, "heartbeat action query ran");
    }
}

/// Heartbeat records (`heartbeat.emit_records`), as Debezium's: key
/// `{serverName}` (the topic prefix), value `{ts_ms}`. The writer produces
/// one every `interval_ms` inside its Kafka transactions, committing one of
/// its own when the captured tables are idle.
pub(super) mod records {
    use crate::avro::encode::{write_bytes, write_long};

    pub(in crate::pipeline) const KEY_SCHEMA: &str =
        include_str!("../../schemas/heartbeat-key.avsc");
    pub(in crate::pipeline) const VALUE_SCHEMA: &str =
        include_str!("../../schemas/heartbeat-value.avsc");

    /// The record's key and value, Confluent framed.
    pub(in crate::pipeline) fn record(
        ids: (u32, u32),
        server_name: &str,
        now_ms: i64,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut key = vec![0];
        key.extend_from_slice(&ids.0.to_be_bytes());
        write_bytes(&mut key, server_name.as_bytes());
        let mut value = vec![0];
        value.extend_from_slice(&ids.1.to_be_bytes());
        write_long(&mut value, now_ms);
        (key, value)
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;

    use super::records::{KEY_SCHEMA, VALUE_SCHEMA, record};

    fn decode(schema: &str, bytes: &[u8], id: u32) -> Value {
        assert_eq!(bytes[..5], [[0].as_slice(), &id.to_be_bytes()].concat());
        crate::avro::decode_datum(schema, &bytes[5..])
    }

    #[test]
    fn a_heartbeat_record_is_debeziums() {
        let (key, value) = record((3, 4), "shop", 1_700_000_000_123);
        assert_eq!(
            decode(KEY_SCHEMA, &key, 3),
            Value::Record(vec![("serverName".into(), Value::String("shop".into()))])
        );
        assert_eq!(
            decode(VALUE_SCHEMA, &value, 4),
            Value::Record(vec![("ts_ms".into(), Value::Long(1_700_000_000_123))])
        );
    }
}
