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
//! A record (key and value) larger than the producer's
//! `message.max.bytes` less [`RECORD_OVERHEAD_BYTES`] is never produced:
//! it could never be written, so the writer stops with a fatal error and
//! the open Kafka transaction is aborted, leaving the stored offset before
//! the change. A record the broker refuses as too large (its topic limit
//! can be lower) ends the same way at the commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::telemetry::metrics::metrics;

use super::{ConnectorError, Item};
use crate::avro::encode::{EncodePlan, EnvelopeContext};
use crate::avro::registry::{RegistryClient, RegistryError};
use crate::avro::schema::{self, SchemaNaming};
use crate::config::{ConnectorConfig, IncompatiblePolicy};
use crate::event::{ChangeEvent, Lsn, Op, RelationVersion};
use crate::failpoint;
use crate::kafka::offsets::{OFFSET_SCHEMA, OffsetRecord};
use crate::kafka::producer::TxProducer;
use crate::kafka::{KafkaError, RECORD_OVERHEAD_BYTES, message_max_bytes, topic};

/// Everything needed to write one relation version's events.
struct Plan {
    encode: EncodePlan,
    /// `schema.table`, the metrics label.
    table: Arc<str>,
    topic: String,
    key_id: Option<u32>,
    value_id: u32,
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
        loop {
            let deadline = self
                .batch
                .as_ref()
                .map(|b| tokio::time::Instant::from_std(b.started + linger));
            // Priority: a due commit first (bounds latency even under a
            // steady stream), then new items.
            tokio::select! {
                biased;
                _ = sleep_until_opt(deadline), if deadline.is_some() => self.commit().await?,
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
            Item::Commit {
                commit_lsn,
                end_lsn,
            } => {
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
        if event.op == Op::Truncate && !self.cfg.kafka.emit_truncate {
            return Ok(());
        }
        let plan = self.plan_for(&event.relation).await?;
        self.begin_if_needed()?;
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
            self.produce(&plan, &delete).await?;
            return self.produce(&plan, &create).await;
        }
        self.produce(&plan, event).await
    }

    /// Encodes and sends one event (plus its tombstone for a delete).
    async fn produce(&mut self, plan: &Plan, event: &ChangeEvent) -> Result<(), ConnectorError> {
        let key = match plan.key_id {
            Some(id) => {
                self.key_buf.clear();
                push_header(&mut self.key_buf, id);
                let r = plan.encode.encode_event_key(event, &mut self.key_buf);
                self.encode_err(plan, event, r)?
            }
            None => false,
        };
        self.value_buf.clear();
        push_header(&mut self.value_buf, plan.value_id);
        let ctx = EnvelopeContext {
            connector_version: self.version,
            name: &self.cfg.kafka.topic_prefix,
            db: &self.cfg.postgres.database,
            snapshot: self.snapshot_marker,
            now_us: now_us(),
        };
        let r = plan.encode.encode_value(event, &ctx, &mut self.value_buf);
        self.encode_err(plan, event, r)?;
        let key_bytes = key.then_some(self.key_buf.as_slice());
        let initial_snapshot =
            event.op == Op::Read && self.snapshot_marker != crate::snapshot::marker::INCREMENTAL;
        let headers = self.correlation.headers(event, initial_snapshot);
        let headers = headers.pairs();
        let size = key_bytes.map_or(0, <[u8]>::len)
            + self.value_buf.len()
            + super::correlation::headers_len(&headers);
        if size > self.record_limit {
            return Err(self.too_large(plan, event, size));
        }
        self.producer
            .send_with_headers(&plan.topic, key_bytes, Some(&self.value_buf), &headers)
            .await
            .map_err(|e| self.refused(e))?;
        failpoint::crash(failpoint::MID_BATCH);
        let mut bytes = self.key_buf.len() + self.value_buf.len();
        let mut events = 1;
        if event.op == Op::Delete && self.cfg.kafka.tombstones_on_delete && key {
            self.producer
                .send_with_headers(&plan.topic, key_bytes, None, &headers)
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
        let encode =
            EncodePlan::with_modes(rv, &self.naming, &self.cfg.types).map_err(|source| {
                ConnectorError::Schema {
                    table: table.clone(),
                    source,
                }
            })?;
        let topic = topic::table_topic(
            &self.cfg.kafka.topic_prefix,
            &rv.relation.schema,
            &rv.relation.name,
        );
        self.producer.ensure_topic(&topic, false).await?;
        let key_id = match encode.key_schema() {
            Some(schema) => Some(
                self.register_table_subject(rv, &table, &topic::key_subject(&topic), schema)
                    .await?,
            ),
            None => None,
        };
        let value_id = self
            .register_table_subject(
                rv,
                &table,
                &topic::value_subject(&topic),
                encode.value_schema(),
            )
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
        });
        self.plans.insert(id, Arc::clone(&plan));
        Ok(plan)
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
