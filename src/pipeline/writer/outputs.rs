//! The writer's extra outputs, each off by default: transaction metadata
//! (`[transactions]`), dead letters (`[dead_letter]`) and heartbeat records
//! (`heartbeat.emit_records`). All are produced inside the writer's Kafka
//! transactions, next to the events they concern, so the exactly-once
//! protocol covers them as it covers the events; the hooks in the writer
//! are [`Writer::order`], [`Writer::dead_letter_or`],
//! [`Writer::end_transaction`], [`Writer::recount`] and
//! [`Writer::write_heartbeat`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::{Plan, Writer, now_us};
use crate::config::ConnectorConfig;
use crate::event::{ChangeEvent, Lsn, Op};
use crate::kafka::topic;
use crate::pipeline::ConnectorError;
use crate::pipeline::dead_letter::{self, DeadLetters, Letter};
use crate::pipeline::heartbeat::records as heartbeat;
use crate::pipeline::transactions::{self, Ordered, TxMetadata};
use crate::telemetry::metrics::metrics;

/// State of the extra outputs of one writer.
pub(super) struct Extras {
    txmeta: Option<TxMetadata>,
    dead_letters: Option<DeadLetters>,
    heartbeat_topic: Option<String>,
    heartbeat_ids: Option<(u32, u32)>,
    /// Dead letters of the open Kafka transaction by table, counted into
    /// the metrics once it commits.
    dead_letter_counts: HashMap<Arc<str>, u64>,
    /// The writer is counting a re-sent change ([`Writer::recount`]):
    /// nothing is produced.
    pub replaying: bool,
}

impl Extras {
    pub(super) fn new(cfg: &ConnectorConfig) -> Extras {
        let prefix = &cfg.kafka.topic_prefix;
        Extras {
            txmeta: cfg
                .transactions
                .enabled
                .then(|| TxMetadata::new(cfg.transactions.topic(prefix))),
            dead_letters: cfg.dead_letter.topic.clone().map(DeadLetters::new),
            heartbeat_topic: cfg
                .heartbeat
                .records_interval_ms()
                .map(|_| cfg.heartbeat.topic(prefix)),
            heartbeat_ids: None,
            dead_letter_counts: HashMap::new(),
            replaying: false,
        }
    }

    /// Adds the committed transaction's dead letters to the metrics.
    pub(super) fn count_committed(&mut self, connector: &str) {
        for (table, n) in self.dead_letter_counts.drain() {
            metrics()
                .dead_letters
                .with_label_values(&[connector, &table])
                .inc_by(n);
        }
    }
}

/// The heartbeat records' ticker, first due one interval after the start.
pub(super) fn heartbeat_ticker(cfg: &ConnectorConfig) -> Option<tokio::time::Interval> {
    let every = Duration::from_millis(cfg.heartbeat.records_interval_ms()?);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(ticker)
}

/// Completes at the ticker's next tick; never without one.
pub(super) async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Writer {
    /// Ensures a topic of records with fixed schemas and registers them.
    async fn fixed_topic(
        &mut self,
        topic: &str,
        key_schema: Option<&str>,
        value_schema: &str,
    ) -> Result<(Option<u32>, u32), ConnectorError> {
        self.producer.ensure_topic(topic, false).await?;
        let key_id = match key_schema {
            Some(schema) => Some(self.register(&topic::key_subject(topic), schema).await?),
            None => None,
        };
        let value_id = self
            .register(&topic::value_subject(topic), value_schema)
            .await?;
        Ok((key_id, value_id))
    }

    /// The transaction block of a streamed event about to be produced (or
    /// re-counted), counting it; writes BEGIN first when it is its
    /// transaction's first. `None` without `[transactions]` and for
    /// snapshot rows.
    pub(super) async fn order(
        &mut self,
        plan: &Plan,
        event: &ChangeEvent,
    ) -> Result<Option<Ordered>, ConnectorError> {
        if event.op == Op::Read {
            return Ok(None);
        }
        let Some(meta) = &self.extras.txmeta else {
            return Ok(None);
        };
        if meta.ids.is_none() {
            let topic = meta.topic.clone();
            let (key, value) = self
                .fixed_topic(
                    &topic,
                    Some(transactions::KEY_SCHEMA),
                    transactions::VALUE_SCHEMA,
                )
                .await?;
            if let (Some(meta), Some(key)) = (&mut self.extras.txmeta, key) {
                meta.ids = Some((key, value));
            }
        }
        let Some(meta) = &mut self.extras.txmeta else {
            return Ok(None);
        };
        let order = meta.next(event, &plan.table);
        if order.first
            && !self.extras.replaying
            && let Some((key, value)) = meta.begin_record()
        {
            let topic = meta.topic.clone();
            self.write_extra(&topic, Some(&key), &value).await?;
        }
        Ok(Some(order))
    }

    /// Writes the END record of the transaction committing at `commit_lsn`
    /// when it produced events.
    pub(super) async fn end_transaction(&mut self, commit_lsn: Lsn) -> Result<(), ConnectorError> {
        let Some(meta) = &mut self.extras.txmeta else {
            return Ok(());
        };
        if !meta.ends_with(commit_lsn) {
            return Ok(());
        }
        let Some((key, value)) = meta.end(commit_lsn) else {
            return Ok(());
        };
        let topic = meta.topic.clone();
        self.write_extra(&topic, Some(&key), &value).await
    }

    /// Counts a change the stored offset covers (re-sent by PostgreSQL)
    /// through the same path as a written one, producing nothing.
    pub(super) async fn recount(&mut self, event: &ChangeEvent) -> Result<(), ConnectorError> {
        self.extras.replaying = true;
        let counted = self.write_change(event).await;
        self.extras.replaying = false;
        counted
    }

    /// An event that cannot be written (`error`): to the dead-letter topic
    /// when one is configured, else the error (the connector stops).
    pub(super) async fn dead_letter_or(
        &mut self,
        error: ConnectorError,
        plan: &Plan,
        event: &ChangeEvent,
        order: Option<&Ordered>,
    ) -> Result<(), ConnectorError> {
        let Some(letters) = &self.extras.dead_letters else {
            return Err(error);
        };
        let topic = letters.topic.clone();
        let schema_id = match letters.schema_id {
            Some(id) => id,
            None => {
                let (_, id) = self.fixed_topic(&topic, None, dead_letter::SCHEMA).await?;
                if let Some(l) = &mut self.extras.dead_letters {
                    l.schema_id = Some(id);
                }
                id
            }
        };
        let message = crate::pipeline::chain(&error);
        let value = dead_letter::encode(
            schema_id,
            &Letter {
                connector: self.cfg.name.as_str(),
                table: &plan.table,
                topic: &plan.topic,
                event,
                error: &message,
                order,
                now_ms: now_us() / 1000,
            },
            self.record_limit,
        );
        self.write_extra(&topic, None, &value).await?;
        warn!(connector = %self.cfg.name, table = %plan.table, position = %event.position, dead_letter_topic = %topic, error = %message, "event written to the dead-letter topic");
        *self
            .extras
            .dead_letter_counts
            .entry(Arc::clone(&plan.table))
            .or_default() += 1;
        Ok(())
    }

    /// Writes a heartbeat record: into the open Kafka transaction, or in
    /// one of its own (with the unchanged offset) when none is open.
    pub(super) async fn write_heartbeat(&mut self) -> Result<(), ConnectorError> {
        let Some(topic) = self.extras.heartbeat_topic.clone() else {
            return Ok(());
        };
        let ids = match self.extras.heartbeat_ids {
            Some(ids) => ids,
            None => {
                let (key, value) = self
                    .fixed_topic(&topic, Some(heartbeat::KEY_SCHEMA), heartbeat::VALUE_SCHEMA)
                    .await?;
                let ids = (key.unwrap_or_default(), value);
                self.extras.heartbeat_ids = Some(ids);
                ids
            }
        };
        let (key, value) = heartbeat::record(ids, &self.cfg.kafka.topic_prefix, now_us() / 1000);
        let own = self.batch.is_none();
        self.begin_if_needed()?;
        self.producer
            .send(&topic, Some(&key), Some(&value))
            .await
            .map_err(|e| self.refused(e))?;
        if own {
            // Not a commit for the idle-offset pacing: heartbeats more
            // frequent than kafka.idle_offset_interval_ms must not keep
            // the slot from advancing.
            let last_commit = self.last_commit;
            self.commit().await?;
            self.last_commit = last_commit;
        }
        Ok(())
    }

    /// Writes one extra record into the open (or a new) Kafka transaction
    /// and counts it in the batch.
    async fn write_extra(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(), ConnectorError> {
        self.begin_if_needed()?;
        self.producer
            .send(topic, key, Some(value))
            .await
            .map_err(|e| self.refused(e))?;
        if let Some(b) = &mut self.batch {
            b.events += 1;
            b.bytes += key.map_or(0, <[u8]>::len) + value.len();
        }
        Ok(())
    }
}
