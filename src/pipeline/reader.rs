//! The reader task: owns the replication stream, decodes pgoutput, keeps
//! the relation cache, numbers changes with their positions, drops what the
//! stored offset covers, and acks to PostgreSQL what the writer committed.
//!
//! Invariant: the flushed LSN sent to PostgreSQL only ever comes from the
//! writer's watch channel, i.e. from a committed offset record, and only
//! moves forward.
//!
//! Memory: a source transaction is never held whole. Each change goes to
//! the channel as soon as it is decoded, and the channel is bounded in
//! events and in bytes (`pipeline.channel_capacity_*`); the writer commits
//! a Kafka transaction every `kafka.batch_max_events` / `batch_max_bytes`
//! even inside a source transaction. So memory does not grow with a
//! transaction's size (tests/bigtx.rs, scripts/bench-bigtx.sh).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{ConnectorError, Item};
use crate::config::ConnectorConfig;
use crate::event::{
    ChangeEvent, Lsn, MessageEvent, Op, Position, Relation, RelationVersion, ReplicaIdentity,
    SourceTx, Tuple, TupleValue,
};
use crate::kafka::offsets::OffsetRecord;
use crate::postgres::PgError;
use crate::postgres::catalog::Catalog;
use crate::postgres::pgoutput::{self, LogicalMessage};
use crate::postgres::replication::{ReplicationError, ReplicationMessage, ReplicationStream};
use crate::snapshot::incremental::{self, Applied, Control, Signal, Watermark, Windows};
use crate::snapshot::{SnapshotChunk, SnapshotError, marker};
use crate::telemetry::metrics::metrics;

pub(super) struct Reader {
    cfg: Arc<ConnectorConfig>,
    catalog: Catalog,
    stored: Option<OffsetRecord>,
    tx: mpsc::Sender<Item>,
    /// Bytes of row data in the channel (and in the writer's hands).
    byte_budget: Arc<Semaphore>,
    flushed: watch::Receiver<Lsn>,
    ticker: Interval,
    relations: HashMap<u32, Arc<RelationVersion>>,
    /// The source transaction being received and the index of its next change.
    current: Option<(Arc<SourceTx>, u64)>,
    /// Highest WAL position received.
    received: Lsn,
    /// Highest flushed position reported to PostgreSQL.
    acked: Lsn,
    skipped: u64,
    /// Snapshot chunks read in watermark windows while streaming.
    windows: Option<Windows>,
    /// Snapshot signals from the HTTP endpoint.
    controls: mpsc::Receiver<Signal>,
}

/// An item on its way to the channel.
enum Pending {
    Change(ChangeEvent),
    Message(MessageEvent),
    /// A covered change, to be counted only ([`Item::Written`]).
    Written(ChangeEvent),
    Other(Item),
    Snapshot(Box<SnapshotChunk>, usize),
}

impl From<ChangeEvent> for Pending {
    fn from(e: ChangeEvent) -> Self {
        Pending::Change(e)
    }
}

impl From<Item> for Pending {
    fn from(i: Item) -> Self {
        Pending::Other(i)
    }
}

/// Approximate memory a change holds: its values plus per-value overhead.
fn event_size(event: &ChangeEvent) -> u32 {
    let tuple = |t: &Tuple| -> usize {
        t.iter()
            .map(|v| match v {
                TupleValue::Text(b) | TupleValue::Binary(b) => b.len() + 32,
                _ => 32,
            })
            .sum()
    };
    let n =
        128 + event.old.as_ref().map_or(0, |(_, t)| tuple(t)) + event.new.as_ref().map_or(0, tuple);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// How handling one message ended.
enum Flow {
    Continue,
    /// Shutdown was requested while waiting for room in the channel.
    Stop,
}

impl Reader {
    pub(super) fn new(
        cfg: Arc<ConnectorConfig>,
        catalog: Catalog,
        stored: Option<OffsetRecord>,
        tx: mpsc::Sender<Item>,
        byte_budget: Arc<Semaphore>,
        flushed: watch::Receiver<Lsn>,
        windows: Option<Windows>,
    ) -> Reader {
        let mut ticker =
            tokio::time::interval(Duration::from_millis(cfg.postgres.status_interval_ms));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let acked = *flushed.borrow();
        let cfg_clone = Arc::clone(&cfg);
        Reader {
            cfg,
            catalog,
            stored,
            tx,
            byte_budget,
            flushed,
            ticker,
            relations: HashMap::new(),
            current: None,
            received: Lsn::ZERO,
            acked,
            skipped: 0,
            controls: incremental::register(cfg_name(&cfg_clone)),
            windows,
        }
    }

    /// Streams until cancelled or failed, then lets the writer finish its
    /// batch and reports the final flushed position before closing.
    pub(super) async fn run(
        mut self,
        mut stream: ReplicationStream,
        cancel: CancellationToken,
        writer: JoinHandle<Result<Lsn, ConnectorError>>,
    ) -> Result<(), ConnectorError> {
        let result = self.stream_loop(&mut stream, &cancel).await;
        self.report_skipped();
        // Closing the channel tells the writer to commit what it has.
        let (closed_tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed_tx));
        let writer_result = match writer.await {
            Ok(r) => r,
            Err(_) => Err(ConnectorError::WriterGone {
                connector: self.cfg.name.to_string(),
            }),
        };
        match writer_result {
            Ok(flush) => {
                if result.is_ok() {
                    self.report(&mut stream, flush, false).await?;
                    let slot = self.cfg.postgres.slot.clone();
                    stream
                        .close()
                        .await
                        .map_err(|source| PgError::Replication { slot, source })?;
                    info!(connector = %self.cfg.name, flushed = %flush, "replication closed");
                }
                result
            }
            // The writer's own error explains a reader that found the channel closed.
            Err(e) => Err(e),
        }
    }

    async fn stream_loop(
        &mut self,
        stream: &mut ReplicationStream,
        cancel: &CancellationToken,
    ) -> Result<(), ConnectorError> {
        loop {
            if let Some(w) = self.windows.as_mut() {
                w.poll_start();
            }
            let awaiting_rows = self.windows.as_ref().is_some_and(Windows::awaiting_rows);
            // Priority: shutdown first; then acks of fresh Kafka commits
            // (they free WAL on the server); then the periodic status
            // update; then a snapshot window's rows; then new data.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                changed = self.flushed.changed() => {
                    if changed.is_err() {
                        return Err(ConnectorError::WriterGone { connector: self.cfg.name.to_string() });
                    }
                    let flush = *self.flushed.borrow_and_update();
                    self.report(stream, flush, false).await?;
                }
                _ = self.ticker.tick() => {
                    let flush = *self.flushed.borrow();
                    self.report(stream, flush, false).await?;
                }
                ctl = self.controls.recv() => {
                    if let Some(Signal { control, reply }) = ctl
                        && let Flow::Stop = self.apply_control(control, None, reply, stream, cancel).await?
                    {
                        return Ok(());
                    }
                }
                rows = async { self.windows.as_mut().expect("invariant: awaiting rows").rows().await }, if awaiting_rows => {
                    rows.map_err(|source| ConnectorError::Snapshot {
                        connector: self.cfg.name.to_string(),
                        source,
                    })?;
                }
                msg = stream.next() => {
                    let msg = msg.map_err(|source| self.repl_error(source))?;
                    let Some(msg) = msg else {
                        // The server ended the stream (e.g. it is shutting
                        // down): reconnect and resume from the stored offset.
                        return Err(self.repl_error(ReplicationError::Closed));
                    };
                    if let Flow::Stop = self.handle(msg, stream, cancel).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn repl_error(&self, source: ReplicationError) -> ConnectorError {
        PgError::Replication {
            slot: self.cfg.postgres.slot.clone(),
            source,
        }
        .into()
    }

    /// Sends a standby status update. The flushed position only moves forward.
    async fn report(
        &mut self,
        stream: &mut ReplicationStream,
        flush: Lsn,
        reply: bool,
    ) -> Result<(), ConnectorError> {
        assert!(
            flush >= self.acked || flush == Lsn::ZERO,
            "invariant: acked LSN moves forward ({} after {})",
            flush,
            self.acked
        );
        let advanced = flush > self.acked;
        self.acked = self.acked.max(flush);
        let written = self.received.max(self.acked);
        let m = metrics();
        let name = self.cfg.name.as_str();
        m.replication_lag_bytes
            .with_label_values(&[name])
            .set(i64::try_from(written.0 - self.acked.0).unwrap_or(i64::MAX));
        m.channel_events
            .with_label_values(&[name])
            .set((self.tx.max_capacity() - self.tx.capacity()) as i64);
        stream
            .send_status_update(written, self.acked, self.acked, reply)
            .await
            .map_err(|source| self.repl_error(source))?;
        if advanced {
            crate::failpoint::crash(crate::failpoint::AFTER_ACK);
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: ReplicationMessage,
        stream: &mut ReplicationStream,
        cancel: &CancellationToken,
    ) -> Result<Flow, ConnectorError> {
        match msg {
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                self.received = self.received.max(wal_end);
                if reply_requested {
                    let flush = *self.flushed.borrow();
                    self.report(stream, flush, false).await?;
                }
                if self.current.is_none() {
                    // Best effort: a busy writer does not need it.
                    let _ = self.tx.try_send(Item::Idle { wal_end });
                }
                Ok(Flow::Continue)
            }
            ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                data,
                ..
            } => {
                self.received = self.received.max(wal_end);
                let message = pgoutput::decode(&data).map_err(|source| PgError::Decode {
                    lsn: wal_start,
                    source,
                })?;
                self.handle_logical(message, wal_start, stream, cancel)
                    .await
            }
        }
    }

    async fn handle_logical(
        &mut self,
        message: LogicalMessage,
        lsn: Lsn,
        stream: &mut ReplicationStream,
        cancel: &CancellationToken,
    ) -> Result<Flow, ConnectorError> {
        match message {
            LogicalMessage::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            } => {
                self.current = Some((
                    Arc::new(SourceTx {
                        xid,
                        commit_lsn: final_lsn,
                        commit_ts_us,
                    }),
                    0,
                ));
                Ok(Flow::Continue)
            }
            LogicalMessage::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                self.current = None;
                self.send(
                    0,
                    Item::Commit {
                        commit_lsn,
                        end_lsn,
                    },
                    stream,
                    cancel,
                )
                .await
            }
            LogicalMessage::Relation(relation) => {
                self.update_relation(relation).await?;
                Ok(Flow::Continue)
            }
            LogicalMessage::Insert { relation_oid, new } => {
                self.change(
                    relation_oid,
                    Op::Create,
                    lsn,
                    None,
                    Some(new),
                    stream,
                    cancel,
                )
                .await
            }
            LogicalMessage::Update {
                relation_oid,
                old,
                new,
            } => {
                self.change(
                    relation_oid,
                    Op::Update,
                    lsn,
                    old,
                    Some(new),
                    stream,
                    cancel,
                )
                .await
            }
            LogicalMessage::Delete { relation_oid, old } => {
                self.change(
                    relation_oid,
                    Op::Delete,
                    lsn,
                    Some(old),
                    None,
                    stream,
                    cancel,
                )
                .await
            }
            LogicalMessage::Truncate { relation_oids, .. } => {
                for oid in relation_oids {
                    if let Flow::Stop = self
                        .change(oid, Op::Truncate, lsn, None, None, stream, cancel)
                        .await?
                    {
                        return Ok(Flow::Stop);
                    }
                }
                Ok(Flow::Continue)
            }
            LogicalMessage::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if self.windows.is_some() && prefix == incremental::PREFIX => {
                let (Some(windows), Some((tx, next_index))) =
                    (self.windows.as_mut(), self.current.as_mut())
                else {
                    return Ok(Flow::Continue);
                };
                let tx = Arc::clone(tx);
                match windows.on_message(&prefix, &content, &tx, next_index, lsn) {
                    Watermark::Closed(chunk, bytes) => {
                        self.send(0, Pending::Snapshot(chunk, bytes), stream, cancel)
                            .await
                    }
                    Watermark::Ignored | Watermark::Opened => Ok(Flow::Continue),
                }
            }
            LogicalMessage::Message {
                transactional,
                lsn: message_lsn,
                prefix,
                content,
            } if prefix != incremental::PREFIX => {
                self.message(transactional, message_lsn, prefix, content, stream, cancel)
                    .await
            }
            LogicalMessage::Type { .. }
            | LogicalMessage::Origin { .. }
            | LogicalMessage::Message { .. } => Ok(Flow::Continue),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn change(
        &mut self,
        relation_oid: u32,
        op: Op,
        lsn: Lsn,
        old: Option<(crate::event::OldTupleKind, crate::event::Tuple)>,
        new: Option<crate::event::Tuple>,
        stream: &mut ReplicationStream,
        cancel: &CancellationToken,
    ) -> Result<Flow, ConnectorError> {
        let Some((tx, next_index)) = self.current.as_mut() else {
            return Err(self.repl_error(ReplicationError::Protocol(format!(
                "a change at {lsn} arrived outside a transaction"
            ))));
        };
        let position = Position {
            commit_lsn: tx.commit_lsn,
            index: *next_index,
        };
        *next_index += 1;
        let tx = Arc::clone(tx);
        let covered = self.stored.as_ref().is_some_and(|s| s.covers(position));
        if covered && !self.recounts(position) {
            self.skipped += 1;
            return Ok(Flow::Continue);
        }
        if !covered {
            self.report_skipped();
        }
        let relation = self
            .relations
            .get(&relation_oid)
            .cloned()
            .ok_or(PgError::UnknownRelation { oid: relation_oid })?;
        if let Some(signals) = &self.cfg.snapshot.signal_table
            && relation.relation.schema == signals.schema
            && relation.relation.name == signals.table
        {
            if covered {
                // Acted on before the restart.
                return Ok(Flow::Continue);
            }
            // A signal, not data: acted on, never written to Kafka.
            if op != Op::Create {
                return Ok(Flow::Continue);
            }
            let column = |name: &str| {
                let i = relation
                    .relation
                    .columns
                    .iter()
                    .position(|c| c.name == name)?;
                match new.as_ref()?.get(i)? {
                    TupleValue::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                }
            };
            let kind = column("type").unwrap_or_default();
            return match incremental::parse_signal(&kind, column("data").as_deref()) {
                Ok(c) => {
                    info!(connector = %self.cfg.name, signal = %kind, "snapshot signal from the signal table");
                    self.apply_control(c, Some(position), None, stream, cancel)
                        .await
                }
                Err(e) => {
                    tracing::warn!(connector = %self.cfg.name, signal = %kind, error = %e, "signal ignored");
                    Ok(Flow::Continue)
                }
            };
        }
        if crate::failpoint::fires(crate::failpoint::READER_PANICS).is_some() {
            panic!("fail point {}", crate::failpoint::READER_PANICS);
        }
        let event = ChangeEvent {
            position,
            op,
            relation,
            tx,
            lsn,
            old,
            new,
        };
        let size = event_size(&event);
        if covered {
            self.skipped += 1;
            return self
                .send(size, Pending::Written(event), stream, cancel)
                .await;
        }
        if let Some(w) = self.windows.as_mut() {
            w.on_change(&event);
        }
        self.send(size, event, stream, cancel).await
    }

    /// A logical decoding message for the writer (which publishes it or
    /// not, see `[messages]` and `[outbox]`), numbered like a change.
    async fn message(
        &mut self,
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: bytes::Bytes,
        stream: &mut ReplicationStream,
        cancel: &CancellationToken,
    ) -> Result<Flow, ConnectorError> {
        let trace_prefix = self.cfg.correlation.traceparent_message_prefix.as_deref();
        if !self.cfg.messages.enabled
            && self.cfg.outbox.message_prefix.is_empty()
            && trace_prefix.is_none()
        {
            return Ok(Flow::Continue);
        }
        // A trace context goes to the writer even when re-sent: the events
        // after it in its transaction, re-sent or not, need it.
        let trace = transactional && trace_prefix == Some(prefix.as_str());
        let (position, tx) = match (transactional, self.current.as_mut()) {
            (true, Some((tx, next_index))) => {
                let position = Position {
                    commit_lsn: tx.commit_lsn,
                    index: *next_index,
                };
                *next_index += 1;
                (position, Some(Arc::clone(tx)))
            }
            (true, None) => {
                return Err(self.repl_error(ReplicationError::Protocol(format!(
                    "a transactional message at {lsn} arrived outside a transaction"
                ))));
            }
            (false, _) => (
                Position {
                    commit_lsn: lsn,
                    index: 0,
                },
                None,
            ),
        };
        if !trace && self.stored.as_ref().is_some_and(|s| s.covers(position)) {
            self.skipped += 1;
            return Ok(Flow::Continue);
        }
        self.report_skipped();
        let size = u32::try_from(128 + prefix.len() + content.len()).unwrap_or(u32::MAX);
        let message = MessageEvent {
            position,
            tx,
            lsn,
            prefix,
            content,
        };
        if let Flow::Stop = self
            .send(size, Pending::Message(message), stream, cancel)
            .await?
        {
            return Ok(Flow::Stop);
        }
        if transactional {
            return Ok(Flow::Continue);
        }
        // A non-transactional message is its own "transaction": once it is
        // written, everything before the byte after it was sent.
        self.send(
            0,
            Item::Commit {
                commit_lsn: lsn,
                end_lsn: Lsn(lsn.0 + 1),
            },
            stream,
            cancel,
        )
        .await
    }

    /// Whether a covered change goes to the writer anyway, to be counted
    /// for transaction metadata: with `[transactions]` on, the changes of
    /// the transaction the stored offset is inside of.
    fn recounts(&self, position: Position) -> bool {
        self.cfg.transactions.enabled
            && self
                .stored
                .as_ref()
                .is_some_and(|s| s.commit_lsn == position.commit_lsn && !s.txn_complete)
    }

    /// Applies a snapshot signal; the progress it changes is stored (at the
    /// signal's own position, for one from the signal table). `reply`
    /// hears whether it was applied or refused.
    async fn apply_control(
        &mut self,
        control: Control,
        position: Option<Position>,
        reply: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
        stream: &mut ReplicationStream,
        cancel: &CancellationToken,
    ) -> Result<Flow, ConnectorError> {
        let snap = |source: SnapshotError| ConnectorError::Snapshot {
            connector: self.cfg.name.to_string(),
            source,
        };
        if self.windows.is_none() {
            self.windows = Some(Windows::idle(&self.cfg).await.map_err(snap)?);
        }
        let Some(windows) = self.windows.as_mut() else {
            return Ok(Flow::Continue);
        };
        let applied = windows.control(control).await.map_err(snap)?;
        let answer = match &applied {
            Applied::Refused(reason) => {
                tracing::warn!(connector = %self.cfg.name, reason = %reason, "snapshot signal refused");
                Err(reason.clone())
            }
            _ => Ok(()),
        };
        if let Some(reply) = reply {
            // The requester may have stopped waiting: nothing to do then.
            let _ = reply.send(answer);
        }
        let Applied::Changed(progress) = applied else {
            return Ok(Flow::Continue);
        };
        let chunk = SnapshotChunk {
            table: Arc::from(""),
            events: Vec::new(),
            marker: marker::INCREMENTAL,
            first_marker: None,
            last_marker: None,
            progress,
            position,
        };
        self.send(0, Pending::Snapshot(Box::new(chunk), 0), stream, cancel)
            .await
    }

    /// Logs, once the stream has moved past the stored offset, how many
    /// re-sent changes were dropped.
    fn report_skipped(&mut self) {
        if self.skipped > 0 {
            info!(connector = %self.cfg.name, dropped = self.skipped, "dropped re-sent changes already covered by the stored offset");
            self.skipped = 0;
        }
    }

    /// Hands an item to the writer, waiting for room (in bytes for a
    /// change, then a channel slot) while still answering the server: a
    /// walsender that hears nothing for wal_sender_timeout drops the
    /// connection.
    async fn send(
        &mut self,
        bytes: u32,
        item: impl Into<Pending>,
        stream: &mut ReplicationStream,
        cancel: &CancellationToken,
    ) -> Result<Flow, ConnectorError> {
        let gone = ConnectorError::WriterGone {
            connector: self.cfg.name.to_string(),
        };
        let pending = item.into();
        let written = matches!(pending, Pending::Written(_));
        let item = match pending {
            Pending::Other(item) => item,
            Pending::Snapshot(chunk, bytes) => {
                let bytes = u32::try_from(bytes)
                    .unwrap_or(u32::MAX)
                    .min(self.max_item_bytes());
                let budget = Arc::clone(&self.byte_budget).acquire_many_owned(bytes);
                match self.wait_answering(budget, stream, cancel).await? {
                    None => return Ok(Flow::Stop),
                    Some(Err(_)) => return Err(gone),
                    Some(Ok(permit)) => Item::Snapshot(chunk, Some(permit)),
                }
            }
            Pending::Change(event) | Pending::Written(event) => {
                let budget = Arc::clone(&self.byte_budget)
                    .acquire_many_owned(bytes.min(self.max_item_bytes()));
                match self.wait_answering(budget, stream, cancel).await? {
                    None => return Ok(Flow::Stop),
                    Some(Err(_)) => return Err(gone),
                    Some(Ok(permit)) if written => Item::Written(event, permit),
                    Some(Ok(permit)) => Item::Change(event, permit),
                }
            }
            Pending::Message(message) => {
                let budget = Arc::clone(&self.byte_budget)
                    .acquire_many_owned(bytes.min(self.max_item_bytes()));
                match self.wait_answering(budget, stream, cancel).await? {
                    None => return Ok(Flow::Stop),
                    Some(Err(_)) => return Err(gone),
                    Some(Ok(permit)) => Item::Message(message, permit),
                }
            }
        };
        let tx = self.tx.clone();
        match self.wait_answering(tx.reserve(), stream, cancel).await? {
            None => Ok(Flow::Stop),
            Some(Err(_)) => Err(gone),
            Some(Ok(slot)) => {
                slot.send(item);
                Ok(Flow::Continue)
            }
        }
    }

    /// Awaits `fut` while keeping the replication connection alive; `None`
    /// when shutdown was requested first.
    async fn wait_answering<T>(
        &mut self,
        fut: impl Future<Output = T>,
        stream: &mut ReplicationStream,
        cancel: &CancellationToken,
    ) -> Result<Option<T>, ConnectorError> {
        tokio::pin!(fut);
        loop {
            // Priority: the awaited room, then shutdown, then status updates.
            tokio::select! {
                biased;
                v = &mut fut => return Ok(Some(v)),
                _ = cancel.cancelled() => return Ok(None),
                _ = self.ticker.tick() => {
                    let flush = *self.flushed.borrow();
                    self.report(stream, flush, false).await?;
                }
            }
        }
    }

    /// One change may take at most the whole budget (a bigger row still
    /// passes, alone).
    fn max_item_bytes(&self) -> u32 {
        u32::try_from(self.cfg.pipeline.channel_capacity_bytes).unwrap_or(u32::MAX)
    }

    /// Records a Relation message. A changed shape gets the next version
    /// number, which makes the writer register a new schema version.
    async fn update_relation(&mut self, mut relation: Relation) -> Result<(), ConnectorError> {
        let facts = self.catalog.column_facts(relation.oid).await?;
        // With REPLICA IDENTITY FULL pgoutput flags every column as part of
        // the identity; the event key is still the primary key (none: no key).
        if relation.replica_identity == ReplicaIdentity::Full {
            for c in &mut relation.columns {
                c.is_key = facts.get(&c.name).is_some_and(|f| f.in_primary_key);
            }
        }
        // A column the catalog no longer knows (dropped since) may be null.
        let nullable: Vec<bool> = relation
            .columns
            .iter()
            .map(|c| facts.get(&c.name).is_none_or(|f| f.nullable))
            .collect();
        let defaults: Vec<Option<String>> = relation
            .columns
            .iter()
            .map(|c| facts.get(&c.name).and_then(|f| f.default.clone()))
            .collect();
        let type_oids: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
        let custom_types = self.catalog.custom_types(&type_oids).await?;
        let previous = self.relations.get(&relation.oid);
        if let Some(p) = previous
            && p.relation == relation
            && p.nullable == nullable
            && p.defaults == defaults
            && p.custom_types == custom_types
        {
            return Ok(());
        }
        let version = previous.map_or(1, |p| p.version + 1);
        debug!(connector = %self.cfg.name, table = %format!("{}.{}", relation.schema, relation.name), version, "relation shape");
        self.relations.insert(
            relation.oid,
            Arc::new(RelationVersion {
                relation,
                version,
                nullable,
                defaults,
                custom_types,
            }),
        );
        Ok(())
    }
}

fn cfg_name(cfg: &ConnectorConfig) -> &str {
    cfg.name.as_str()
}
