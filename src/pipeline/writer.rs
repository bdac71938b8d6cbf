//! The writer task: encodes changes, produces them inside a Kafka
//! transaction together with the offset record that covers them, commits,
//! and only then publishes the new flush LSN to the reader.
//!
//! A Kafka transaction ends when it holds `batch_max_events` events or
//! `batch_max_bytes` bytes (even in the middle of a source transaction: the
//! offset's index says where), or `batch_linger_ms` after it began, or when
//! the reader stops. When the captured tables are idle, an offset-only
//! transaction at the server's WAL end lets the slot advance.
//!
//! A relation version seen for the first time gets its plan: schemas
//! derived, topic ensured, key and value schemas registered. A subject
//! that does not exist yet first gets `schemas.compatibility` (never an
//! existing one: operators own levels after creation); a version the
//! registry refuses follows `schemas.on_incompatible`, with the changed
//! columns named from a diff against the subject's latest version.
//!
//! What a table's events look like follows its rules (`[tables]`,
//! `[[table]]`, `[[route]]`, `crate::config::EventsConfig`), resolved once
//! per relation version: a [`Policy`] (filtered out, skipped operations,
//! truncate events) before anything is derived, then the plan's
//! projection (columns, masks, key; `crate::avro::projection`), topic,
//! partition column and tombstones. Skipped events still advance the
//! offset like written ones.
//!
//! A record (key, value and headers) larger than the producer's
//! `message.max.bytes` less [`RECORD_OVERHEAD_BYTES`] is never produced:
//! it could never be written, so the writer stops with a fatal error and
//! the open Kafka transaction is aborted, leaving the stored offset before
//! the change. A record the broker refuses as too large (its topic limit
//! can be lower) ends the same way at the commit. With `[dead_letter]`, a
//! record over the limit and an event the encoder refuses become dead
//! letters instead.
//!
//! With `[unwrap]`, a plan carries a [`Flat`]: the value is the flattened
//! row (`crate::avro::flat`) and a delete follows `delete_handling`.
//!
//! The extra outputs — transaction metadata, dead letters, heartbeat
//! records — live in `writer/outputs.rs`; logical decoding messages and
//! outbox events in `writer/messages.rs`. The hooks here are one call each.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::telemetry::metrics::metrics;

use super::{ConnectorError, Item, outbox};
use crate::avro::encode::{EncodePlan, EnvelopeContext};
use crate::avro::flat::Flat;
use crate::avro::projection::{self, Projection};
use crate::avro::registry::{RegistryClient, RegistryError};
use crate::avro::schema::SchemaError;
use crate::avro::schema::{self, SchemaNaming};
use crate::config::{ConnectorConfig, IncompatiblePolicy, OpSet};
use crate::event::{ChangeEvent, Lsn, Op, RelationVersion};
use crate::failpoint;
use crate::kafka::offsets::{OFFSET_SCHEMA, OffsetRecord};
use crate::kafka::producer::TxProducer;
use crate::kafka::{KafkaError, RECORD_OVERHEAD_BYTES, message_max_bytes, topic};

mod messages;
mod outputs;

/// Everything needed to write one relation version's events.
struct Plan {
    encode: EncodePlan,
    /// `schema.table`, the metrics label.
    table: Arc<str>,
    topic: String,
    key_id: Option<u32>,
    value_id: u32,
    /// `partition_by`: the column (relation index) whose text chooses the
    /// partition, and the topic's partition count.
    partition_by: Option<(usize, i32)>,
    /// A delete is followed by a tombstone.
    tombstones: bool,
    /// `[unwrap]`: the flattened row instead of the envelope.
    flat: Option<Flat>,
}

/// Which of a relation's events are written at all (`[tables]`,
/// `[[table]]`); decided once per relation version, before any plan.
#[derive(Clone, Copy)]
struct Policy {
    captured: bool,
    skip: OpSet,
    truncate: bool,
}

/// The open Kafka transaction.
struct Batch {
    started: Instant,
    events: usize,
    bytes: usize,
}

pub(super) struct Writer {
    cfg: Arc<ConnectorConfig>,
    producer: TxProducer,
    registry: RegistryClient,
    naming: SchemaNaming,
    plans: HashMap<(u32, u64), Arc<Plan>>,
    policies: HashMap<(u32, u64), Policy>,
    warned_columns: HashSet<(u32, String)>,
    /// Subjects known to exist (or created with the configured
    /// compatibility level) since this writer started.
    known_subjects: HashSet<String>,
    /// The last offset committed to Kafka.
    durable: OffsetRecord,
    /// The offset the open (or next) transaction will commit.
    pending: OffsetRecord,
    batch: Option<Batch>,
    last_commit: Instant,
    offset_schema_id: Option<u32>,
    flushed: watch::Sender<Lsn>,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    version: &'static str,
    /// Events of the open transaction by (table, op), counted into the
    /// metrics once it commits.
    batch_counts: HashMap<(Arc<str>, Op), u64>,
    /// Commit time of the newest change in the open transaction.
    newest_commit_us: Option<i64>,
    /// `source.snapshot` of the event being written.
    snapshot_marker: &'static str,
    /// Snapshot rows of the open transaction by table.
    snapshot_counts: HashMap<Arc<str>, u64>,
    /// The producer's `message.max.bytes`, and the largest key plus value
    /// produced (that less the record overhead).
    message_max_bytes: u64,
    record_limit: usize,
    /// The messages topic and its key and value schema ids, once ready.
    message_plan: Option<(String, u32, u32)>,
    /// Schema ids of expanded outbox payloads by (subject, schema).
    outbox_schemas: HashMap<(String, String), u32>,
    /// Extra outputs: transaction metadata, dead letters, heartbeats
    /// (`outputs`).
    extras: outputs::Extras,
    /// Builds each event's headers (position, trace context).
    correlation: super::correlation::Correlation,
}

impl Writer {
    pub(super) fn new(
        cfg: Arc<ConnectorConfig>,
        producer: TxProducer,
        registry: RegistryClient,
        initial: OffsetRecord,
        flushed: watch::Sender<Lsn>,
    ) -> Writer {
        let naming = SchemaNaming {
            topic_prefix: cfg.kafka.topic_prefix.clone(),
            database: cfg.postgres.database.clone(),
        };
        Writer {
            producer,
            registry,
            naming,
            plans: HashMap::new(),
            policies: HashMap::new(),
            warned_columns: HashSet::new(),
            known_subjects: HashSet::new(),
            durable: initial.clone(),
            pending: initial,
            batch: None,
            last_commit: Instant::now(),
            offset_schema_id: None,
            flushed,
            key_buf: Vec::with_capacity(256),
            value_buf: Vec::with_capacity(4096),
            version: env!("CARGO_PKG_VERSION"),
            batch_counts: HashMap::new(),
            newest_commit_us: None,
            snapshot_marker: "false",
            snapshot_counts: HashMap::new(),
            message_max_bytes: message_max_bytes(&cfg),
            record_limit: usize::try_from(crate::kafka::record_limit_bytes(&cfg))
                .unwrap_or(usize::MAX),
            message_plan: None,
            outbox_schemas: HashMap::new(),
            extras: outputs::Extras::new(&cfg),
            correlation: super::correlation::Correlation::new(&cfg),
            cfg,
        }
    }

    /// Runs until the reader closes the channel; commits what is open and
    /// returns the final flush LSN. On error, the open transaction is
    /// aborted (best effort; the next producer's fencing aborts it anyway).
    pub(super) async fn run(mut self, rx: mpsc::Receiver<Item>) -> Result<Lsn, ConnectorError> {
        let result = self.run_inner(rx).await;
        if result.is_err() && self.batch.is_some() {
            let outcome = match self.producer.abort().await {
                Ok(()) => "aborted",
                Err(_) => "failed",
            };
            metrics()
                .kafka_transactions
                .with_label_values(&[self.cfg.name.as_str(), outcome])
                .inc();
        }
        result
    }

    async fn run_inner(&mut self, mut rx: mpsc::Receiver<Item>) -> Result<Lsn, ConnectorError> {
        let linger = Duration::from_millis(self.cfg.kafka.batch_linger_ms);
        let mut heartbeat = outputs::heartbeat_ticker(&self.cfg);
        loop {
            let deadline = self
                .batch
                .as_ref()
                .map(|b| tokio::time::Instant::from_std(b.started + linger));
            // Priority: a due commit first (bounds latency even under a
            // steady stream), then a due heartbeat record, then new items.
            tokio::select! {
                biased;
                _ = sleep_until_opt(deadline), if deadline.is_some() => self.commit().await?,
                _ = outputs::tick(&mut heartbeat) => self.write_heartbeat().await?,
                item = rx.recv() => match item {
                    None => break,
                    Some(item) => self.handle(item).await?,
                },
            }
        }
        // Also store progress that no event carried (transactions whose
        // changes were all re-sent ones), so a restart need not re-read them.
        if self.batch.is_some() || !self.pending.same_position(&self.durable) {
            self.commit().await?;
        }
        Ok(self.durable.flush_lsn)
    }

    async fn handle(&mut self, item: Item) -> Result<(), ConnectorError> {
        match item {
            Item::Change(event, _budget) => {
                self.write_change(&event).await?;
                self.pending.commit_lsn = event.position.commit_lsn;
                self.pending.index = Some(event.position.index);
                self.pending.txn_complete = false;
                if let Some(b) = &self.batch
                    && (b.events >= self.cfg.kafka.batch_max_events
                        || b.bytes >= self.cfg.kafka.batch_max_bytes)
                {
                    self.commit().await?;
                }
            }
            Item::Message(message, _budget) => {
                let trace_prefix = self.cfg.correlation.traceparent_message_prefix.as_deref();
                if let Some(tx) = &message.tx
                    && trace_prefix == Some(message.prefix.as_str())
                {
                    self.correlation
                        .trace_message(tx.commit_lsn, &message.content);
                    // Re-sent (the reader forwards trace contexts it
                    // already wrote past) or not, it is not published.
                    if self.durable.covers(message.position) {
                        return Ok(());
                    }
                } else {
                    self.write_message(&message).await?;
                }
                self.pending.commit_lsn = message.position.commit_lsn;
                self.pending.index = Some(message.position.index);
                self.pending.txn_complete = false;
                if let Some(b) = &self.batch
                    && (b.events >= self.cfg.kafka.batch_max_events
                        || b.bytes >= self.cfg.kafka.batch_max_bytes)
                {
                    self.commit().await?;
                }
            }
            Item::Written(event, _budget) => self.recount(&event).await?,
            Item::Commit {
                commit_lsn,
                end_lsn,
            } => {
                self.end_transaction(commit_lsn).await?;
                self.pending.complete_transaction(commit_lsn, end_lsn);
                // A size-triggered commit may have closed the batch just
                // before this transaction's end: open one anyway, so the
                // linger timer stores the completed position (and lets
                // PostgreSQL release its WAL) instead of waiting for the
                // next change or an idle keepalive.
                if !self.pending.same_position(&self.durable) {
                    self.begin_if_needed()?;
                }
            }
            Item::Snapshot(chunk, _budget) => {
                let rows = chunk.events.len() as u64;
                for (i, event) in chunk.events.iter().enumerate() {
                    self.snapshot_marker = chunk.marker_of(i);
                    let written = self.write_change(event).await;
                    self.snapshot_marker = "false";
                    written?;
                }
                if rows > 0 {
                    *self
                        .snapshot_counts
                        .entry(Arc::clone(&chunk.table))
                        .or_default() += rows;
                }
                if let Some(pos) = chunk.position {
                    self.pending.commit_lsn = pos.commit_lsn;
                    self.pending.index = Some(pos.index);
                    self.pending.txn_complete = false;
                }
                let complete = chunk.progress.is_none();
                self.pending.snapshot = chunk.progress;
                // A chunk is never split over Kafka transactions: its rows
                // and the progress marking it done commit together.
                self.begin_if_needed()?;
                // The snapshot's end commits at once, before any streamed
                // change joins the transaction: a crash inside the first
                // streamed transaction must not find "no offset" and take
                // the snapshot again.
                if complete
                    || self.batch.as_ref().is_some_and(|b| {
                        b.events >= self.cfg.kafka.batch_max_events
                            || b.bytes >= self.cfg.kafka.batch_max_bytes
                    })
                {
                    self.commit().await?;
                }
            }
            Item::Idle { wal_end } => {
                let interval = Duration::from_millis(self.cfg.kafka.idle_offset_interval_ms);
                if self.batch.is_none()
                    && wal_end > self.pending.flush_lsn
                    && wal_end > self.pending.commit_lsn
                    && self.last_commit.elapsed() >= interval
                {
                    // Every transaction committing before wal_end was sent
                    // and handled; one committing at or after it was not.
                    self.pending.commit_lsn = wal_end;
                    self.pending.index = None;
                    self.pending.txn_complete = false;
                    self.pending.flush_lsn = wal_end;
                    self.commit().await?;
                }
            }
        }
        Ok(())
    }

    fn begin_if_needed(&mut self) -> Result<(), ConnectorError> {
        if self.batch.is_none() {
            self.producer.begin()?;
            failpoint::crash(failpoint::BEFORE_PRODUCE);
            self.batch = Some(Batch {
                started: Instant::now(),
                events: 0,
                bytes: 0,
            });
        }
        Ok(())
    }

    async fn write_change(&mut self, event: &ChangeEvent) -> Result<(), ConnectorError> {
        let policy = self.policy_for(&event.relation);
        if !policy.captured {
            return Ok(());
        }
        let relation = &event.relation.relation;
        if self.cfg.outbox.is_table(&relation.schema, &relation.name) {
            // A replayed change (counted again for transaction metadata)
            // was written before, outbox event included.
            if event.op == Op::Create && self.snapshot_marker == "false" && !self.extras.replaying {
                let routed = outbox::from_row(&self.cfg.outbox, event).map_err(|reason| {
                    ConnectorError::Outbox {
                        what: format!(
                            "the outbox row of {}.{} at {}",
                            relation.schema, relation.name, event.position
                        ),
                        reason,
                    }
                })?;
                self.produce_outbox(&routed, event.position, event.tx.commit_ts_us)
                    .await?;
            }
            if !self.cfg.outbox.publish_table {
                return Ok(());
            }
        }
        // The table's own events follow its rule; its outbox events above
        // do not.
        if policy.skip.contains(event.op) || (event.op == Op::Truncate && !policy.truncate) {
            return Ok(());
        }
        let plan = self.plan_for(&event.relation).await?;
        if !self.extras.replaying {
            self.begin_if_needed()?;
        }
        // An update that changes the key is, for keyed consumers, a delete
        // of the old key and a create of the new one (as Debezium emits it).
        if plan.encode.key_changed(event) {
            let delete = ChangeEvent {
                op: Op::Delete,
                new: None,
                ..event.clone()
            };
            let create = ChangeEvent {
                op: Op::Create,
                old: None,
                ..event.clone()
            };
            if !policy.skip.contains(Op::Delete) {
                self.produce(&plan, &delete).await?;
            }
            if policy.skip.contains(Op::Create) {
                return Ok(());
            }
            return self.produce(&plan, &create).await;
        }
        self.produce(&plan, event).await
    }

    /// Encodes and sends one event (plus its tombstone for a delete).
    async fn produce(&mut self, plan: &Plan, event: &ChangeEvent) -> Result<(), ConnectorError> {
        // Flattened rows: a truncate has none; a delete is a record only
        // when rewritten (else at most its tombstone).
        let cfg = Arc::clone(&self.cfg);
        let unwrap = &cfg.unwrap;
        let flat_delete = plan.flat.is_some() && event.op == Op::Delete;
        if plan.flat.is_some() && event.op == Op::Truncate {
            return Ok(());
        }
        let record = !flat_delete || unwrap.delete_handling.rewrites();
        let tombstone = if plan.flat.is_some() {
            unwrap.delete_handling.tombstone()
        } else {
            plan.tombstones
        };
        if !record && !tombstone {
            return Ok(());
        }
        let order = if record {
            self.order(plan, event).await?
        } else {
            None
        };
        if self.extras.replaying {
            return Ok(());
        }
        let key = match plan.key_id {
            Some(id) => {
                self.key_buf.clear();
                push_header(&mut self.key_buf, id);
                let r = plan.encode.encode_event_key(event, &mut self.key_buf);
                match self.encode_err(plan, event, r) {
                    Ok(key) => key,
                    Err(e) => return self.dead_letter_or(e, plan, event, order.as_ref()).await,
                }
            }
            None => false,
        };
        // partition_by: the column's text decides (null: partition 0).
        let partition = plan.partition_by.map(|(source, partitions)| {
            projection::column_text(event, source)
                .map_or(0, |text| projection::partition_of(text, partitions))
        });
        if !record {
            return self.tombstone_only(plan, event, key, partition).await;
        }
        self.value_buf.clear();
        push_header(&mut self.value_buf, plan.value_id);
        let ctx = EnvelopeContext {
            connector_version: self.version,
            name: &self.cfg.kafka.topic_prefix,
            db: &self.cfg.postgres.database,
            snapshot: self.snapshot_marker,
            now_us: now_us(),
            transaction: order.as_ref().map(|o| o.block()),
        };
        let r = match &plan.flat {
            Some(flat) => plan
                .encode
                .encode_flat(event, &ctx, flat, &mut self.value_buf),
            None => plan.encode.encode_value(event, &ctx, &mut self.value_buf),
        };
        if let Err(e) = self.encode_err(plan, event, r) {
            return self.dead_letter_or(e, plan, event, order.as_ref()).await;
        }
        // `[unwrap] add_headers`: the change's facts as headers.
        let added: Vec<(&str, String)> = match &plan.flat {
            Some(_) => unwrap
                .add_headers
                .iter()
                .map(|&a| (a.name(), Flat::header_value(a, event, &ctx)))
                .collect(),
            None => Vec::new(),
        };
        let key_bytes = key.then_some(self.key_buf.as_slice());
        let initial_snapshot =
            event.op == Op::Read && self.snapshot_marker != crate::snapshot::marker::INCREMENTAL;
        let correlation = self.correlation.headers(event, initial_snapshot);
        let mut headers = correlation.pairs();
        headers.extend(added.iter().map(|(n, v)| (*n, v.as_bytes())));
        let size = key_bytes.map_or(0, <[u8]>::len)
            + self.value_buf.len()
            + super::correlation::headers_len(&headers);
        if size > self.record_limit {
            let e = self.too_large(plan, event, size);
            return self.dead_letter_or(e, plan, event, order.as_ref()).await;
        }
        self.producer
            .send_with(
                &plan.topic,
                partition,
                key_bytes,
                Some(&self.value_buf),
                &headers,
            )
            .await
            .map_err(|e| self.refused(e))?;
        failpoint::crash(failpoint::MID_BATCH);
        let mut bytes = self.key_buf.len() + self.value_buf.len();
        let mut events = 1;
        if event.op == Op::Delete && tombstone && key {
            self.producer
                .send_with(&plan.topic, partition, key_bytes, None, &headers)
                .await
                .map_err(|e| self.refused(e))?;
            bytes += self.key_buf.len();
            events += 1;
        }
        if let Some(b) = &mut self.batch {
            b.events += events;
            b.bytes += bytes;
        }
        *self
            .batch_counts
            .entry((Arc::clone(&plan.table), event.op))
            .or_default() += 1;
        self.newest_commit_us = Some(event.tx.commit_ts_us);
        Ok(())
    }

    /// A flattened delete that is only a tombstone (`delete_handling =
    /// "tombstone"`): nothing for a keyless table.
    async fn tombstone_only(
        &mut self,
        plan: &Plan,
        event: &ChangeEvent,
        key: bool,
        partition: Option<i32>,
    ) -> Result<(), ConnectorError> {
        if !key {
            return Ok(());
        }
        let correlation = self.correlation.headers(event, false);
        self.producer
            .send_with(
                &plan.topic,
                partition,
                Some(&self.key_buf),
                None,
                &correlation.pairs(),
            )
            .await
            .map_err(|e| self.refused(e))?;
        failpoint::crash(failpoint::MID_BATCH);
        if let Some(b) = &mut self.batch {
            b.events += 1;
            b.bytes += self.key_buf.len();
        }
        *self
            .batch_counts
            .entry((Arc::clone(&plan.table), event.op))
            .or_default() += 1;
        self.newest_commit_us = Some(event.tx.commit_ts_us);
        Ok(())
    }

    /// The fatal error for a record over the limit, naming the change
    /// (never its values).
    fn too_large(&self, plan: &Plan, event: &ChangeEvent, bytes: usize) -> ConnectorError {
        let change = if self.snapshot_marker == "false" {
            format!("a change of table {} at {}", plan.table, event.position)
        } else {
            format!(
                "a snapshot row of table {} (snapshot at {})",
                plan.table, event.position.commit_lsn
            )
        };
        ConnectorError::RecordTooLarge {
            change,
            topic: plan.topic.clone(),
            bytes,
            limit: self.record_limit,
            max: self.message_max_bytes,
            overhead: RECORD_OVERHEAD_BYTES,
        }
    }

    /// A record refused as too large by librdkafka or the broker, with the
    /// table and the positions the open transaction holds.
    fn refused(&self, e: KafkaError) -> ConnectorError {
        match e {
            KafkaError::RecordTooLarge { ref topic, .. } => {
                let table = self
                    .plans
                    .values()
                    .find(|p| p.topic == *topic)
                    .map_or_else(|| topic.clone(), |p| p.table.to_string());
                ConnectorError::RecordRefused {
                    table,
                    after: describe(&self.durable),
                    upto: describe(&self.pending),
                    source: e,
                }
            }
            other => other.into(),
        }
    }

    fn encode_err<T>(
        &self,
        plan: &Plan,
        event: &ChangeEvent,
        r: Result<T, crate::avro::encode::EncodeError>,
    ) -> Result<T, ConnectorError> {
        r.map_err(|source| ConnectorError::Encode {
            table: plan.topic.clone(),
            position: event.position,
            source,
        })
    }

    /// The plan for a relation version: derived, topic ensured and schemas
    /// registered the first time it is seen.
    async fn plan_for(&mut self, rv: &Arc<RelationVersion>) -> Result<Arc<Plan>, ConnectorError> {
        let id = (rv.relation.oid, rv.version);
        if let Some(p) = self.plans.get(&id) {
            return Ok(Arc::clone(p));
        }
        let table = format!("{}.{}", rv.relation.schema, rv.relation.name);
        let events = &self.cfg.events;
        let (schema_name, table_name) = (&rv.relation.schema, &rv.relation.name);
        let rule = events.rule_for(schema_name, table_name);
        let rules_err = |message| ConnectorError::Rules {
            file: self.cfg.file.display().to_string(),
            message,
        };
        let salt = events.hash_salt.as_ref().map(|s| s.expose().as_bytes());
        let mut projection = Projection::build(rv, rule, salt).map_err(rules_err)?;
        let prefix = &self.cfg.kafka.topic_prefix;
        let own_topic = topic::table_topic(prefix, schema_name, table_name);
        let topic = match events.routed_topic(prefix, schema_name, table_name) {
            Some(routed) => {
                projection = projection.routed(&routed, own_topic);
                routed
            }
            None => own_topic,
        };
        let encode = EncodePlan::with_projection(rv, &self.naming, &self.cfg.types, &projection)
            .map_err(|source| ConnectorError::Schema {
                table: table.clone(),
                source,
            })?;
        self.producer.ensure_topic(&topic, false).await?;
        let partition_by = match rule.and_then(|r| r.partition_by.as_ref()) {
            Some(column) => {
                let source = rv
                    .relation
                    .columns
                    .iter()
                    .position(|c| &c.name == column)
                    .expect("invariant: Projection::build checked partition_by");
                Some((source, self.producer.partition_count(&topic).await?))
            }
            None => None,
        };
        let tombstones = rule
            .and_then(|r| r.tombstones)
            .unwrap_or(self.cfg.kafka.tombstones_on_delete);
        let key_id = match encode.key_schema() {
            Some(schema) => Some(
                self.register_table_subject(rv, &table, &topic::key_subject(&topic), schema)
                    .await?,
            ),
            None => None,
        };
        let flat = self
            .cfg
            .unwrap
            .applies_to(schema_name, table_name)
            .then(|| Flat::new(&self.cfg.unwrap));
        let value_schema = match &flat {
            Some(flat) => flat.value_schema(encode.value_schema()).map_err(|reason| {
                ConnectorError::Schema {
                    table: table.clone(),
                    source: SchemaError::Flatten {
                        table: table.clone(),
                        reason,
                    },
                }
            })?,
            None => encode.value_schema().to_owned(),
        };
        let value_id = self
            .register_table_subject(rv, &table, &topic::value_subject(&topic), &value_schema)
            .await?;
        for column in encode.fallback_columns() {
            if self
                .warned_columns
                .insert((rv.relation.oid, column.to_owned()))
            {
                warn!(connector = %self.cfg.name, table = %table, column = %column, "column type is unknown to siphon (not built in, not an enum, domain, composite, range, hstore, citext or ltree); carrying its text form as an Avro string");
            }
        }
        info!(connector = %self.cfg.name, table = %table, shape = rv.version, key_schema_id = ?key_id, value_schema_id = value_id, "schema registered");
        let plan = Arc::new(Plan {
            encode,
            table: Arc::from(table.as_str()),
            topic,
            key_id,
            value_id,
            partition_by,
            tombstones,
            flat,
        });
        self.plans.insert(id, Arc::clone(&plan));
        Ok(plan)
    }

    /// Whether and which events of a relation version are written.
    fn policy_for(&mut self, rv: &RelationVersion) -> Policy {
        let id = (rv.relation.oid, rv.version);
        if let Some(p) = self.policies.get(&id) {
            return *p;
        }
        let events = &self.cfg.events;
        let (schema, table) = (&rv.relation.schema, &rv.relation.name);
        let rule = events.rule_for(schema, table);
        let policy = Policy {
            captured: events.captures(schema, table),
            skip: events.skip_ops_of(rule),
            truncate: rule
                .and_then(|r| r.truncate_events)
                .unwrap_or(self.cfg.kafka.emit_truncate),
        };
        self.policies.insert(id, policy);
        policy
    }

    /// Registers a table's key or value schema. A subject siphon creates
    /// gets the configured compatibility level first; an existing one keeps
    /// its level. A version the registry refuses as incompatible follows
    /// `schemas.on_incompatible`.
    async fn register_table_subject(
        &mut self,
        rv: &RelationVersion,
        table: &str,
        subject: &str,
        schema: &str,
    ) -> Result<u32, ConnectorError> {
        let registry_err = |source| ConnectorError::Registry {
            subject: subject.to_owned(),
            source,
        };
        if !self.known_subjects.contains(subject) {
            match self.registry.versions(subject).await {
                Ok(_) => {}
                Err(RegistryError::NotFound {
                    error_code: Some(40401),
                    ..
                }) => {
                    let level = self
                        .cfg
                        .schemas
                        .compatibility_of(&rv.relation.schema, &rv.relation.name);
                    self.registry
                        .set_compatibility(subject, level.as_str())
                        .await
                        .map_err(registry_err)?;
                    info!(connector = %self.cfg.name, subject, compatibility = %level, "new subject: compatibility level set");
                }
                Err(e) => return Err(registry_err(e)),
            }
            self.known_subjects.insert(subject.to_owned());
        }
        let message = match self.register(subject, schema).await {
            Err(ConnectorError::Registry {
                source: RegistryError::Incompatible { message, .. },
                ..
            }) => message,
            other => return other,
        };
        // Name the columns: diff against the subject's latest version.
        let latest = self
            .registry
            .latest_schema(subject)
            .await
            .map_err(registry_err)?;
        let changes = latest
            .map(|old| schema::column_changes(&old, schema))
            .unwrap_or_default();
        let columns = if changes.is_empty() {
            String::new()
        } else {
            format!("{}; ", changes.join(", "))
        };
        match self.cfg.schemas.on_incompatible {
            IncompatiblePolicy::Stop => Err(ConnectorError::IncompatibleSchema {
                table: table.to_owned(),
                subject: subject.to_owned(),
                reason: format!("{columns}registry: {message}"),
            }),
            IncompatiblePolicy::Register => {
                let level = self
                    .registry
                    .compatibility(subject)
                    .await
                    .map_err(registry_err)?;
                self.registry
                    .set_compatibility(subject, "NONE")
                    .await
                    .map_err(registry_err)?;
                let registered = self.register(subject, schema).await;
                // Put the level back whatever happened, so the exception
                // covers this one version only.
                self.registry
                    .set_compatibility(subject, &level)
                    .await
                    .map_err(registry_err)?;
                let id = registered?;
                warn!(connector = %self.cfg.name, table, subject, schema_id = id, changes = %columns.trim_end_matches("; "), compatibility = %level, "incompatible schema registered anyway (schemas.on_incompatible = \"register\"): consumers must decode by schema id; readers with a fixed reader schema need updating");
                Ok(id)
            }
        }
    }

    async fn register(&self, subject: &str, schema: &str) -> Result<u32, ConnectorError> {
        let result = self.registry.register(subject, schema).await;
        let outcome = if result.is_ok() {
            "registered"
        } else {
            "error"
        };
        metrics()
            .registry_requests
            .with_label_values(&[self.cfg.name.as_str(), outcome])
            .inc();
        result.map_err(|source| ConnectorError::Registry {
            subject: subject.to_owned(),
            source,
        })
    }

    /// Writes the offset record into the open transaction (opening one for
    /// an offset-only commit) and commits. Only after the commit succeeds
    /// does the new flush LSN reach the reader.
    async fn commit(&mut self) -> Result<(), ConnectorError> {
        let schema_id = match self.offset_schema_id {
            Some(id) => id,
            None => {
                let subject = topic::value_subject(&self.cfg.kafka.offsets_topic);
                let id = self.register(&subject, OFFSET_SCHEMA).await?;
                self.offset_schema_id = Some(id);
                id
            }
        };
        self.begin_if_needed()?;
        self.pending.written_at_ms = now_us() / 1000;
        let mut value = Vec::with_capacity(128);
        push_header(&mut value, schema_id);
        value.extend(self.pending.to_avro());
        self.producer
            .send(
                &self.cfg.kafka.offsets_topic,
                Some(self.cfg.name.as_str().as_bytes()),
                Some(&value),
            )
            .await?;
        failpoint::crash(failpoint::BEFORE_COMMIT);
        let started = Instant::now();
        let name = self.cfg.name.as_str();
        let m = metrics();
        failpoint::crash_soon(failpoint::DURING_COMMIT);
        if let Err(e) = self.producer.commit().await {
            // Fate unknown: the caller restarts with a new producer, whose
            // fencing aborts this transaction if it is still open.
            self.batch = None;
            m.kafka_transactions
                .with_label_values(&[name, "failed"])
                .inc();
            return Err(self.refused(e));
        }
        failpoint::crash(failpoint::AFTER_COMMIT);
        m.kafka_transactions
            .with_label_values(&[name, "committed"])
            .inc();
        m.kafka_commit_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        for (table, n) in self.snapshot_counts.drain() {
            m.snapshot_rows.with_label_values(&[name, &table]).inc_by(n);
        }
        self.extras.count_committed(name);
        for ((table, op), n) in self.batch_counts.drain() {
            m.events
                .with_label_values(&[name, &table, op.code()])
                .inc_by(n);
        }
        let lag_ms = self
            .newest_commit_us
            .take()
            .map_or(0, |ts| (now_us() - ts).max(0) / 1000);
        m.replication_lag_ms.with_label_values(&[name]).set(lag_ms);
        let batch = self.batch.take();
        self.durable = self.pending.clone();
        self.last_commit = Instant::now();
        tracing::debug!(
            connector = %self.cfg.name,
            events = batch.as_ref().map_or(0, |b| b.events),
            commit_ms = started.elapsed().as_millis() as u64,
            flush = %self.durable.flush_lsn,
            "kafka transaction committed"
        );
        self.flushed.send_if_modified(|f| {
            if self.durable.flush_lsn > *f {
                *f = self.durable.flush_lsn;
                true
            } else {
                false
            }
        });
        Ok(())
    }
}

/// An offset's position, as error messages name it.
fn describe(o: &OffsetRecord) -> String {
    match (o.index, o.txn_complete) {
        (_, true) => format!("the transaction committed at {}", o.commit_lsn),
        (Some(i), false) => format!("({}, {i})", o.commit_lsn),
        (None, false) => o.commit_lsn.to_string(),
    }
}

/// Confluent wire format header: magic byte 0, then the schema id.
fn push_header(buf: &mut Vec<u8>, schema_id: u32) {
    buf.push(0);
    buf.extend_from_slice(&schema_id.to_be_bytes());
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
