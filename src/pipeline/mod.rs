//! One connector's pipeline: a supervisor that (re)starts it, a reader task
//! that owns the replication connection, and a writer task that encodes and
//! commits to Kafka.
//!
//! ```text
//!   reader ──(bounded channel of Items)──▶ writer
//!     ▲                                      │
//!     └──── watch: flush LSN after each Kafka commit
//! ```
//!
//! Start-up order is the exactly-once protocol's (DESIGN.md, point 4):
//! init the transactional producer (fences any previous instance), read the
//! stored offset with read_committed, identify the system, then start
//! replication and drop everything the offset covers. Before anything is
//! acknowledged, the offset must belong here: same system, timeline,
//! database and slot, and not past the server's WAL (a damaged or foreign
//! record would otherwise make PostgreSQL skip changes). Every restart — on
//! any transient error — goes through the same steps, so there is one
//! recovery path and it is always exercised.

pub mod correlation;
mod dead_letter;
mod heartbeat;
mod outbox;
mod reader;
mod transactions;
mod writer;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use rand::RngExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::avro::registry::{RegistryClient, RegistryClientConfig, RegistryError};
use crate::avro::{encode::EncodeError, schema::SchemaError};
use crate::config::{ConnectorConfig, SnapshotMode};
use crate::error::ErrorClass;
use crate::event::{ChangeEvent, Lsn};
use crate::failpoint;
use crate::kafka::KafkaError;
use crate::kafka::offsets::{self, OffsetRecord};
use crate::kafka::producer::TxProducer;
use crate::postgres::PgError;
use crate::postgres::catalog::Catalog;
use crate::postgres::replication::{
    ReplicationClient, ReplicationConfig, SnapshotAction, StartOptions,
};
use crate::snapshot::initial::{ChunkSink, Initial, Outcome};
use crate::snapshot::progress::SnapshotProgress;
use crate::snapshot::{SnapshotChunk, SnapshotError};
use crate::telemetry::health::{self, ConnectorState};
use crate::telemetry::metrics::metrics;

/// What flows from the reader to the writer, in stream order.
#[derive(Debug)]
pub(crate) enum Item {
    /// A row change not yet covered by the stored offset, holding its share
    /// of the channel's byte budget until the writer is done with it.
    Change(ChangeEvent, tokio::sync::OwnedSemaphorePermit),
    /// A logical decoding message not yet covered by the stored offset.
    /// A non-transactional one is followed by a `Commit` at its own LSN.
    Message(
        crate::event::MessageEvent,
        tokio::sync::OwnedSemaphorePermit,
    ),
    /// A change the stored offset covers, re-sent by PostgreSQL, forwarded
    /// only with `[transactions]` on and only for the transaction the
    /// offset is inside of: the writer counts it again for the orders of
    /// the rest ([`transactions`]), never writes it.
    Written(ChangeEvent, tokio::sync::OwnedSemaphorePermit),
    /// The end of a source transaction: everything up to `end_lsn` is sent.
    Commit { commit_lsn: Lsn, end_lsn: Lsn },
    /// The reader is between transactions and the server's WAL ends here:
    /// nothing before it is unsent. Lets an idle connector move its slot.
    Idle { wal_end: Lsn },
    /// One snapshot chunk: written whole in one Kafka transaction together
    /// with the progress it carries.
    Snapshot(
        Box<SnapshotChunk>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ),
}

/// The sending side of the reader → writer channel, with its byte budget.
#[derive(Clone)]
pub(crate) struct ItemSender {
    tx: mpsc::Sender<Item>,
    budget: Arc<tokio::sync::Semaphore>,
    max_item_bytes: u32,
}

impl ItemSender {
    /// Sends a snapshot chunk once its bytes and a channel slot are free;
    /// `false` when the writer is gone.
    pub(crate) async fn send_chunk(&self, chunk: SnapshotChunk, bytes: usize) -> bool {
        let bytes = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .min(self.max_item_bytes);
        let Ok(permit) = Arc::clone(&self.budget).acquire_many_owned(bytes).await else {
            return false;
        };
        self.tx
            .send(Item::Snapshot(Box::new(chunk), Some(permit)))
            .await
            .is_ok()
    }
}

impl ChunkSink for ItemSender {
    async fn send(&self, chunk: SnapshotChunk, bytes: usize) -> bool {
        self.send_chunk(chunk, bytes).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("schema registry request for subject {subject} failed")]
    Registry {
        subject: String,
        #[source]
        source: RegistryError,
    },
    #[error(
        "the new schema of table {table} is incompatible with the versions registered under subject {subject}: {reason}. \
         Nothing after this change was written. Fix: make the change compatible for consumers (e.g. add columns as nullable \
         instead of changing a type), or, if consumers can follow, change the subject's compatibility level in the registry \
         (PUT /config/{subject}); then restart siphon, which resumes at this change"
    )]
    IncompatibleSchema {
        table: String,
        subject: String,
        reason: String,
    },
    #[error("cannot create the registry client")]
    RegistryClient(#[source] RegistryError),
    #[error("cannot derive the Avro schema of table {table}")]
    Schema {
        table: String,
        #[source]
        source: SchemaError,
    },
    /// A `[[table]]` rule that does not fit the table it matches (unknown
    /// column, key column a delete would not carry, ...).
    #[error("{file}: {message}")]
    Rules { file: String, message: String },
    #[error("cannot encode a change of table {table} at {position}")]
    Encode {
        table: String,
        position: crate::event::Position,
        #[source]
        source: EncodeError,
    },
    #[error(
        "{change} is {bytes} bytes as a Kafka record (key, value and headers), over the limit of {limit} bytes \
         (kafka.properties.\"message.max.bytes\" = {max}, less {overhead} bytes of record overhead): it can never be \
         written, so the connector stopped; the Kafka transaction holding it was aborted and the stored offset stays \
         before it. Fix: raise kafka.properties.\"message.max.bytes\" (librdkafka counts the whole record: key, value \
         and headers) together with max.message.bytes of topic {topic} on the broker (or the broker's message.max.bytes \
         when the topic has no override), then restart siphon, which resumes at this change"
    )]
    RecordTooLarge {
        /// Which change, e.g. "a change of table public.t at (0/16B3748, 1)".
        change: String,
        topic: String,
        bytes: usize,
        limit: usize,
        max: u64,
        overhead: u64,
    },
    #[error(
        "a change of table {table} after {after}, up to {upto}, cannot be written; the Kafka transaction holding it \
         was not committed and the stored offset stays at {after}"
    )]
    RecordRefused {
        table: String,
        after: String,
        upto: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "{what} cannot be routed as an outbox event: {reason}. Nothing from it on was written; fix the outbox \
         configuration ([outbox] in the connector file) or the application that wrote it, then restart siphon, \
         which resumes at this event"
    )]
    Outbox {
        /// Which row or message, e.g. "the outbox row at (0/16B3748, 1)".
        what: String,
        reason: String,
    },
    #[error("the writer task of connector {connector} stopped unexpectedly")]
    WriterGone { connector: String },
    #[error(
        "connector {connector} panicked: {message}. This is a bug in siphon (please report it with the log); \
         the connector restarts from its stored offset"
    )]
    Panicked { connector: String, message: String },
    #[error("snapshot of connector {connector} failed")]
    Snapshot {
        connector: String,
        #[source]
        source: SnapshotError,
    },
}

impl ConnectorError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ConnectorError::Postgres(e) => e.class(),
            ConnectorError::Kafka(e) => e.class(),
            ConnectorError::Registry { source, .. } | ConnectorError::RegistryClient(source) => {
                if source.is_transient() {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Fatal
                }
            }
            ConnectorError::Schema { .. }
            | ConnectorError::Encode { .. }
            | ConnectorError::RecordTooLarge { .. }
            | ConnectorError::RecordRefused { .. }
            | ConnectorError::Outbox { .. }
            | ConnectorError::IncompatibleSchema { .. }
            | ConnectorError::Rules { .. } => ErrorClass::Fatal,
            ConnectorError::WriterGone { .. } | ConnectorError::Panicked { .. } => {
                ErrorClass::Transient
            }
            ConnectorError::Snapshot { source, .. } => source.class(),
        }
    }
}

/// Runs one connector until `cancel` fires (Ok) or a fatal error (Err).
/// Transient errors restart it from its stored offset with capped,
/// jittered backoff.
pub async fn supervise(
    cfg: Arc<ConnectorConfig>,
    cancel: CancellationToken,
) -> Result<(), ConnectorError> {
    const MIN_BACKOFF: Duration = Duration::from_millis(250);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let mut backoff = MIN_BACKOFF;
    let name = cfg.name.as_str();
    for (component, message) in cfg.security_warnings() {
        warn!(connector = %cfg.name, component, "{message}");
    }
    loop {
        let started = Instant::now();
        health::set_state(name, ConnectorState::Starting);
        // A panic in this run (a bug) must not leave the connector reported
        // as streaming while nothing runs: it becomes a transient error, so
        // the connector is not ready, then restarts from its stored offset.
        // What the run left behind is dropped with it: its writer task ends
        // when its channel closes, its open Kafka transaction is aborted by
        // the next run's fencing.
        let result = match AssertUnwindSafe(run_once(&cfg, &cancel))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => Err(ConnectorError::Panicked {
                connector: name.to_owned(),
                message: panic_message(panic.as_ref()),
            }),
        };
        if let Err(e) = &result {
            metrics()
                .errors
                .with_label_values(&[name, e.class().to_string().as_str()])
                .inc();
        }
        match result {
            Ok(()) => {
                health::set_state(name, ConnectorState::Stopped);
                return Ok(());
            }
            Err(e) if cancel.is_cancelled() => {
                health::set_state(name, ConnectorState::Stopped);
                warn!(connector = %cfg.name, error = %chain(&e), "connector stopped with an error during shutdown");
                return Ok(());
            }
            Err(e) if e.class() == ErrorClass::Fatal => {
                health::set_state(name, ConnectorState::Failed);
                error!(connector = %cfg.name, error = %chain(&e), "connector stopped: fix the cause and restart it");
                return Err(e);
            }
            Err(e) => {
                health::set_state(name, ConnectorState::Retrying);
                if started.elapsed() > MAX_BACKOFF * 2 {
                    backoff = MIN_BACKOFF;
                }
                let jitter = rand::rng().random_range(0.5..1.0);
                let wait = backoff.mul_f64(jitter);
                warn!(connector = %cfg.name, error = %chain(&e), retry_in_ms = wait.as_millis() as u64, "connector interrupted, restarting from its stored offset");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// An error with its sources, for one log line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

async fn run_once(
    cfg: &Arc<ConnectorConfig>,
    cancel: &CancellationToken,
) -> Result<(), ConnectorError> {
    let name = &cfg.name;
    let pg = &cfg.postgres;

    // Start-up opens nothing that needs finishing (no Kafka transaction, no
    // replication stream yet), and parts of it can wait long (fencing, an
    // open transaction on the offsets topic): a stop asked for meanwhile
    // ends it at once.
    let startup = async {
        let catalog = Catalog::connect(pg).await?;
        catalog.preflight(cfg).await?;
        // Another instance streaming from the slot is not fenced: this one
        // waits (as a transient error) until the slot is free. Fencing a
        // live instance lets it restart and fence this one back.
        let in_use = catalog
            .slot_state(&pg.slot)
            .await?
            .is_some_and(|s| s.active);
        if in_use && failpoint::fires(failpoint::SLOT_LOOKS_FREE).is_none() {
            return Err(PgError::SlotInUse {
                connector: name.to_string(),
                slot: pg.slot.clone(),
            }
            .into());
        }
        // Fence any previous instance before trusting what the offsets topic says.
        let producer = TxProducer::start(cfg).await?;
        producer
            .ensure_topic(&cfg.kafka.offsets_topic, true)
            .await?;
        let stored = offsets::read_stored_offset(cfg).await?;
        Ok::<_, ConnectorError>((catalog, producer, stored))
    };
    let (catalog, producer, mut stored) = tokio::select! {
        started = startup => started?,
        () = cancel.cancelled() => return Ok(()),
    };
    let mode = cfg.snapshot.mode;
    let snap_err = |source| ConnectorError::Snapshot {
        connector: name.to_string(),
        source,
    };

    if mode == SnapshotMode::InitialOnly {
        return initial_only(cfg, &catalog, producer, stored, cancel).await;
    }

    let repl_cfg = ReplicationConfig {
        host: pg.host.clone(),
        port: pg.port,
        user: pg.user.clone(),
        password: pg.password.as_ref().map(|p| p.expose().to_owned()),
        dbname: pg.database.clone(),
        application_name: format!("siphon-{name}"),
        connect_timeout_ms: pg.connect_timeout_ms,
        ssl: pg.ssl.clone(),
    };
    let repl_err = |source| PgError::Replication {
        slot: pg.slot.clone(),
        source,
    };
    let mut repl = ReplicationClient::connect(&repl_cfg)
        .await
        .map_err(repl_err)?;
    let system = repl.identify_system().await.map_err(repl_err)?;
    if let Some(s) = &stored {
        if s.system_id != system.system_id {
            return Err(PgError::SystemChanged {
                connector: name.to_string(),
                what: "system identifier",
                stored: s.system_id.clone(),
                found: system.system_id.clone(),
            }
            .into());
        }
        if s.timeline != system.timeline {
            return Err(PgError::SystemChanged {
                connector: name.to_string(),
                what: "timeline",
                stored: s.timeline.to_string(),
                found: system.timeline.to_string(),
            }
            .into());
        }
        check_offset_belongs(cfg, s, system.xlogpos)?;
    }

    // Only now, with the server known to be the one the offset belongs to,
    // create anything on it.
    match &cfg.snapshot.signal_table {
        // The signal table's inserts reach siphon through the stream.
        Some(t) if !cfg.postgres.tables.contains(t) => {
            let mut with_signals = (**cfg).clone();
            with_signals.postgres.tables.push(t.clone());
            catalog.ensure_publication(&with_signals).await?;
        }
        _ => catalog.ensure_publication(cfg).await?,
    }
    let slot_state = catalog.slot_state(&pg.slot).await?;
    if mode == SnapshotMode::WhenNeeded && stored.is_some() && slot_state.is_none() {
        warn!(connector = %name, slot = %pg.slot, "the stored offset's slot is gone: snapshot.mode = when_needed takes a new snapshot");
        stored = None;
    }
    // The exported snapshot of a slot created here: (name, consistent point).
    let mut exported = None;
    // Nothing before the slot's confirmed position will be sent: the first
    // offset must not claim less, or a restart before any transaction
    // completes (killed inside the first, huge one) would find the slot
    // "ahead" of it.
    let mut slot_confirmed = slot_state.as_ref().and_then(|s| s.confirmed_flush_lsn);
    match slot_state {
        None => {
            if let Some(s) = &stored {
                return Err(PgError::SlotLost {
                    connector: name.to_string(),
                    slot: pg.slot.clone(),
                    flush_lsn: s.flush_lsn,
                }
                .into());
            }
            if !pg.create_slot {
                return Err(PgError::SlotMissing {
                    slot: pg.slot.clone(),
                }
                .into());
            }
            let action = if mode == SnapshotMode::NoData {
                SnapshotAction::NoExport
            } else {
                SnapshotAction::Export
            };
            let created = repl
                .create_slot_with(&pg.slot, action, pg.failover_slot)
                .await
                .map_err(repl_err)?;
            info!(connector = %name, slot = %pg.slot, consistent_point = %created.consistent_point, failover = pg.failover_slot, "created replication slot");
            slot_confirmed = Some(created.consistent_point);
            if let Some(snapshot) = created.snapshot_name {
                exported = Some((snapshot, created.consistent_point));
            }
        }
        Some(state) => {
            if state.slot_type != "logical"
                || state.plugin.as_deref() != Some("pgoutput")
                || state.database.as_deref() != Some(pg.database.as_str())
            {
                return Err(PgError::SlotMismatch {
                    slot: pg.slot.clone(),
                    database: pg.database.clone(),
                    plugin: state.plugin,
                    found_db: state.database,
                }
                .into());
            }
            if pg.failover_slot && state.failover == Some(false) {
                // Streaming works the same; only a standby's promotion
                // would lose the slot. Not changed here: the slot may be
                // someone else's choice.
                warn!(
                    connector = %name,
                    slot = %pg.slot,
                    "postgres.failover_slot is true but slot {} is not a failover slot; siphon only sets it on the slots it creates: run psql \"dbname={} replication=database\" -c 'ALTER_REPLICATION_SLOT {} (FAILOVER true)'",
                    pg.slot,
                    pg.database,
                    pg.slot
                );
            }
        }
    }

    let registry = RegistryClient::new(&RegistryClientConfig::from(&cfg.registry))
        .map_err(ConnectorError::RegistryClient)?;
    let mut initial = stored.clone().unwrap_or_else(|| OffsetRecord {
        connector: name.to_string(),
        commit_lsn: Lsn::ZERO,
        index: None,
        txn_complete: false,
        flush_lsn: slot_confirmed.unwrap_or(Lsn::ZERO),
        system_id: system.system_id.clone(),
        timeline: system.timeline,
        database: pg.database.clone(),
        slot: pg.slot.clone(),
        written_at_ms: 0,
        snapshot: None,
    });
    // Tables to read in the stream (watermark windows): an interrupted
    // snapshot's rest, or a whole snapshot the slot could not export.
    let mut windowed: Option<SnapshotProgress> = stored.as_ref().and_then(|s| s.snapshot.clone());
    let mut initial_run = None;
    if let Some((snapshot_name, consistent_point)) = exported {
        let tables = crate::snapshot::describe_all(cfg, &catalog)
            .await
            .map_err(snap_err)?;
        let progress = crate::snapshot::plan(&tables, &cfg.snapshot);
        // Everything before the consistent point is in the snapshot: an
        // offset there covers exactly that (and lets the slot keep it).
        initial.commit_lsn = consistent_point;
        initial.flush_lsn = consistent_point;
        initial.snapshot = Some(progress.clone());
        stored = Some(initial.clone());
        initial_run = Some(Initial {
            cfg: Arc::clone(cfg),
            snapshot_name,
            consistent_point,
            tables,
            progress,
        });
    } else if windowed.is_none()
        && matches!(
            mode,
            SnapshotMode::Always | SnapshotMode::Initial | SnapshotMode::WhenNeeded
        )
        && (stored.is_none() || mode == SnapshotMode::Always)
    {
        let tables = crate::snapshot::describe_all(cfg, &catalog)
            .await
            .map_err(snap_err)?;
        info!(connector = %name, mode = mode.as_str(), "the slot exists, so the snapshot is read in watermark windows while streaming");
        windowed = Some(crate::snapshot::plan(&tables, &cfg.snapshot));
    }

    let (tx, rx) = mpsc::channel(cfg.pipeline.channel_capacity_events);
    let byte_budget = Arc::new(tokio::sync::Semaphore::new(
        cfg.pipeline.channel_capacity_bytes as usize,
    ));
    let (flushed_tx, flushed_rx) = watch::channel(initial.flush_lsn);
    let writer = writer::Writer::new(Arc::clone(cfg), producer, registry, initial, flushed_tx);
    let writer = tokio::spawn(writer.run(rx));
    let sender = ItemSender {
        tx: tx.clone(),
        budget: Arc::clone(&byte_budget),
        max_item_bytes: u32::try_from(cfg.pipeline.channel_capacity_bytes).unwrap_or(u32::MAX),
    };

    if let Some(run) = initial_run {
        health::set_state(name.as_str(), ConnectorState::Snapshotting);
        let outcome = run.run(&sender, cancel).await;
        if !matches!(outcome, Ok(Outcome::Done)) {
            drop(sender);
            drop(tx);
            let written = writer.await;
            return match (outcome, written) {
                (Err(e), _) => Err(snap_err(e)),
                (Ok(_), Ok(Err(e))) => Err(e),
                (Ok(Outcome::WriterGone), _) | (Ok(_), Err(_)) => Err(ConnectorError::WriterGone {
                    connector: name.to_string(),
                }),
                (Ok(_), Ok(Ok(_))) => Ok(()),
            };
        }
    }

    // The reader holds the only sender from here: the writer ends (and
    // commits what it has) when the reader closes it.
    drop(sender);

    // Start where the slot says, not at the stored offset: whatever
    // PostgreSQL re-sends (un-acked commits, or more after its own crash
    // reverted the slot) is dropped by position below, so the dedup path
    // is exercised on every restart rather than only in rare cases.
    let start = Lsn::ZERO;
    let stream = repl
        .start_replication(
            &pg.slot,
            start,
            &StartOptions {
                publications: vec![pg.publication.clone()],
                messages: true,
            },
        )
        .await
        .map_err(repl_err)?;

    // The slot is ours now (one walsender per slot), so its confirmed
    // position cannot move under us any more: compare it with the offset.
    let confirmed = catalog
        .slot_state(&pg.slot)
        .await?
        .and_then(|state| state.confirmed_flush_lsn);
    if let (Some(s), Some(confirmed)) = (&stored, confirmed)
        && confirmed > s.flush_lsn
    {
        return Err(PgError::SlotAhead {
            connector: name.to_string(),
            slot: pg.slot.clone(),
            confirmed,
            stored: s.flush_lsn,
        }
        .into());
    }
    health::set_state(name.as_str(), ConnectorState::Streaming);
    info!(
        connector = %name,
        slot = %pg.slot,
        resume_after = %stored.as_ref().map(|s| format!("({}, {:?}, complete={})", s.commit_lsn, s.index, s.txn_complete)).unwrap_or_else(|| "nothing".into()),
        "streaming"
    );

    let windows = match windowed {
        Some(progress) => Some(
            crate::snapshot::incremental::Windows::start(cfg, progress)
                .await
                .map_err(snap_err)?,
        ),
        None => None,
    };
    let reader = reader::Reader::new(
        Arc::clone(cfg),
        catalog,
        stored,
        tx,
        byte_budget,
        flushed_rx,
        windows,
    );
    // A failing heartbeat cancels this run's token: the reader then stops
    // as on shutdown (committing what the writer has) and its error is
    // returned below.
    let run_cancel = cancel.child_token();
    let heartbeat = heartbeat::spawn(cfg, run_cancel.clone());
    let result = reader.run(stream, run_cancel.clone(), writer).await;
    run_cancel.cancel();
    let beat = match heartbeat {
        Some(task) => task.await.unwrap_or_else(|_| {
            Err(ConnectorError::WriterGone {
                connector: name.to_string(),
            })
        }),
        None => Ok(()),
    };
    result.and(beat)
}

/// Refuses a stored offset that cannot be this connector's on this server:
/// of another slot or database, or ahead of the server's WAL. Acknowledging
/// such a position would make PostgreSQL skip changes for good; the checks
/// run before the replication stream starts, so nothing is acknowledged.
///
/// `wal_end` is IDENTIFY_SYSTEM's `xlogpos`: the WAL flushed on a primary
/// (`pg_current_wal_flush_lsn()`), replayed on a standby. Every position
/// siphon stores was sent by a walsender, which only sends flushed WAL, so
/// a genuine offset is never past it.
fn check_offset_belongs(
    cfg: &ConnectorConfig,
    stored: &OffsetRecord,
    wal_end: Lsn,
) -> Result<(), PgError> {
    let pg = &cfg.postgres;
    let elsewhere = |what, key, stored: &str, found: &str| PgError::OffsetElsewhere {
        connector: cfg.name.to_string(),
        what,
        key,
        stored: stored.to_owned(),
        found: found.to_owned(),
    };
    if stored.database != pg.database {
        return Err(elsewhere(
            "database",
            "database",
            &stored.database,
            &pg.database,
        ));
    }
    if stored.slot != pg.slot {
        return Err(elsewhere(
            "replication slot",
            "slot",
            &stored.slot,
            &pg.slot,
        ));
    }
    let furthest = stored.flush_lsn.max(stored.commit_lsn);
    if furthest > wal_end {
        return Err(PgError::OffsetAhead {
            connector: cfg.name.to_string(),
            stored: furthest,
            server: wal_end,
        });
    }
    Ok(())
}

/// `snapshot.mode = initial_only`: read the tables under one exported
/// snapshot of an ordinary transaction (no slot: nothing is streamed
/// afterwards), store that it is done, and stop. After a crash the
/// unfinished chunks are read under a new snapshot.
async fn initial_only(
    cfg: &Arc<ConnectorConfig>,
    catalog: &Catalog,
    producer: TxProducer,
    stored: Option<OffsetRecord>,
    cancel: &CancellationToken,
) -> Result<(), ConnectorError> {
    let name = &cfg.name;
    let snap_err = |source| ConnectorError::Snapshot {
        connector: name.to_string(),
        source,
    };
    if stored.as_ref().is_some_and(|s| s.snapshot.is_none()) {
        info!(connector = %name, "snapshot.mode = initial_only and the snapshot is complete: nothing to do");
        return Ok(());
    }
    let parts = crate::snapshot::describe_all(cfg, catalog)
        .await
        .map_err(snap_err)?;
    let (tables, progress) = match stored.as_ref().and_then(|s| s.snapshot.clone()) {
        Some(p) => crate::snapshot::align(name.as_str(), p, &parts, &cfg.snapshot),
        None => {
            let progress = crate::snapshot::plan(&parts, &cfg.snapshot);
            (parts, progress)
        }
    };
    // The exporting transaction must stay open until every worker imported
    // its snapshot; it stays open (idle) until the end.
    let exporter = Catalog::connect(&cfg.postgres).await?;
    let export_err = |source| {
        snap_err(SnapshotError::Watermark {
            what: "export a snapshot",
            source,
        })
    };
    exporter
        .client()
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(export_err)?;
    let snapshot_name: String = exporter
        .client()
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(export_err)?
        .get(0);
    let id: (String, i32) = {
        let row = catalog
            .client()
            .query_one(
                "SELECT system_identifier::text, (SELECT timeline_id FROM pg_control_checkpoint()) FROM pg_control_system()",
                &[],
            )
            .await
            .map_err(|source| PgError::Query {
                what: "system identifier",
                source,
            })?;
        (row.get(0), row.get(1))
    };
    let mut initial = stored.unwrap_or_else(|| OffsetRecord {
        connector: name.to_string(),
        commit_lsn: Lsn::ZERO,
        index: None,
        txn_complete: false,
        flush_lsn: Lsn::ZERO,
        system_id: id.0.clone(),
        timeline: id.1 as u32,
        database: cfg.postgres.database.clone(),
        slot: cfg.postgres.slot.clone(),
        written_at_ms: 0,
        snapshot: None,
    });
    initial.snapshot = Some(progress.clone());
    let registry = RegistryClient::new(&RegistryClientConfig::from(&cfg.registry))
        .map_err(ConnectorError::RegistryClient)?;
    let (tx, rx) = mpsc::channel(cfg.pipeline.channel_capacity_events);
    let (flushed_tx, _flushed_rx) = watch::channel(initial.flush_lsn);
    let writer = writer::Writer::new(Arc::clone(cfg), producer, registry, initial, flushed_tx);
    let writer = tokio::spawn(writer.run(rx));
    let sender = ItemSender {
        tx,
        budget: Arc::new(tokio::sync::Semaphore::new(
            cfg.pipeline.channel_capacity_bytes as usize,
        )),
        max_item_bytes: u32::try_from(cfg.pipeline.channel_capacity_bytes).unwrap_or(u32::MAX),
    };
    health::set_state(name.as_str(), ConnectorState::Snapshotting);
    let run = Initial {
        cfg: Arc::clone(cfg),
        snapshot_name,
        consistent_point: Lsn::ZERO,
        tables,
        progress,
    };
    let outcome = run.run(&sender, cancel).await;
    drop(sender);
    let written = writer.await;
    drop(exporter);
    match (outcome, written) {
        (Err(e), _) => Err(snap_err(e)),
        (Ok(_), Ok(Err(e))) => Err(e),
        (Ok(Outcome::WriterGone), _) | (Ok(_), Err(_)) => Err(ConnectorError::WriterGone {
            connector: name.to_string(),
        }),
        (Ok(Outcome::Done), Ok(Ok(_))) => {
            info!(connector = %name, "snapshot.mode = initial_only: snapshot complete, not streaming");
            Ok(())
        }
        (Ok(Outcome::Cancelled), Ok(Ok(_))) => Ok(()),
    }
}
