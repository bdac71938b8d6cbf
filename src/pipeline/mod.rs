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
//! replication and drop everything the offset covers. Every restart — on
//! any transient error — goes through the same steps, so there is one
//! recovery path and it is always exercised.

mod heartbeat;
mod reader;
mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::avro::registry::{RegistryClient, RegistryClientConfig, RegistryError};
use crate::avro::{encode::EncodeError, schema::SchemaError};
use crate::config::ConnectorConfig;
use crate::error::ErrorClass;
use crate::event::{ChangeEvent, Lsn};
use crate::kafka::KafkaError;
use crate::kafka::offsets::{self, OffsetRecord};
use crate::kafka::producer::TxProducer;
use crate::postgres::PgError;
use crate::postgres::catalog::Catalog;
use crate::postgres::replication::{
    ReplicationClient, ReplicationConfig, SnapshotAction, StartOptions,
};
use crate::telemetry::health::{self, ConnectorState};
use crate::telemetry::metrics::metrics;

/// What flows from the reader to the writer, in stream order.
#[derive(Debug)]
pub(crate) enum Item {
    /// A row change not yet covered by the stored offset, holding its share
    /// of the channel's byte budget until the writer is done with it.
    Change(ChangeEvent, tokio::sync::OwnedSemaphorePermit),
    /// The end of a source transaction: everything up to `end_lsn` is sent.
    Commit { commit_lsn: Lsn, end_lsn: Lsn },
    /// The reader is between transactions and the server's WAL ends here:
    /// nothing before it is unsent. Lets an idle connector move its slot.
    Idle { wal_end: Lsn },
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
    #[error("cannot encode a change of table {table} at {position}")]
    Encode {
        table: String,
        position: crate::event::Position,
        #[source]
        source: EncodeError,
    },
    #[error("the writer task of connector {connector} stopped unexpectedly")]
    WriterGone { connector: String },
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
            | ConnectorError::IncompatibleSchema { .. } => ErrorClass::Fatal,
            ConnectorError::WriterGone { .. } => ErrorClass::Transient,
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
    loop {
        let started = Instant::now();
        health::set_state(name, ConnectorState::Starting);
        let result = run_once(&cfg, &cancel).await;
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

    let catalog = Catalog::connect(pg).await?;
    catalog.preflight(cfg).await?;

    // Fence any previous instance before trusting what the offsets topic says.
    let producer = TxProducer::start(cfg).await?;
    producer
        .ensure_topic(&cfg.kafka.offsets_topic, true)
        .await?;
    let stored = offsets::read_stored_offset(cfg).await?;

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
    }

    // Only now, with the server known to be the one the offset belongs to,
    // create anything on it.
    catalog.ensure_publication(cfg).await?;
    match catalog.slot_state(&pg.slot).await? {
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
            let created = repl
                .create_slot(&pg.slot, SnapshotAction::NoExport)
                .await
                .map_err(repl_err)?;
            info!(connector = %name, slot = %pg.slot, consistent_point = %created.consistent_point, "created replication slot");
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
        }
    }

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

    let registry = RegistryClient::new(&RegistryClientConfig::from(&cfg.registry))
        .map_err(ConnectorError::RegistryClient)?;

    let initial = stored.clone().unwrap_or_else(|| OffsetRecord {
        connector: name.to_string(),
        commit_lsn: Lsn::ZERO,
        index: None,
        txn_complete: false,
        // Nothing before the slot's confirmed position will be sent: the
        // first offset must not claim less, or a restart before any
        // transaction completes (killed inside the first, huge one) would
        // find the slot "ahead" of it.
        flush_lsn: confirmed.unwrap_or(Lsn::ZERO),
        system_id: system.system_id.clone(),
        timeline: system.timeline,
        database: pg.database.clone(),
        slot: pg.slot.clone(),
        written_at_ms: 0,
    });
    let (tx, rx) = mpsc::channel(cfg.pipeline.channel_capacity_events);
    let byte_budget = Arc::new(tokio::sync::Semaphore::new(
        cfg.pipeline.channel_capacity_bytes as usize,
    ));
    let (flushed_tx, flushed_rx) = watch::channel(initial.flush_lsn);
    let writer = writer::Writer::new(Arc::clone(cfg), producer, registry, initial, flushed_tx);
    let writer = tokio::spawn(writer.run(rx));
    let reader = reader::Reader::new(
        Arc::clone(cfg),
        catalog,
        stored,
        tx,
        byte_budget,
        flushed_rx,
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
