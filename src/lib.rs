//! siphon: PostgreSQL logical replication → versioned Avro → Kafka, exactly once.
//!
//! ```text
//! PostgreSQL walsender (pgoutput)
//!   │ replication connection (postgres::replication): CopyBoth, keepalives, status updates
//!   ▼
//! reader   (pipeline::reader) decode (postgres::pgoutput), relation cache,
//!   │       positions (commit_lsn, index), drop what the stored offset covers
//!   ▼ bounded channel (backpressure: when Kafka is slow, siphon stops reading)
//! writer   (pipeline::writer) Avro per relation version (avro::*), schema
//!   │       registry ids, events + offset record in ONE Kafka transaction (kafka::*)
//!   └─ after the Kafka commit succeeds → flush LSN → reader acks it to PostgreSQL
//! ```
//!
//! Snapshots (`snapshot::*`) feed the same writer with `op = "r"` chunks:
//! the initial snapshot before replication starts (parallel COPY under the
//! slot's exported snapshot), watermark windows from inside the reader
//! while streaming (resume after a crash, incremental snapshots). A chunk
//! and the progress marking it done share one Kafka transaction.
//!
//! The progress invariant: the LSN acknowledged to PostgreSQL never exceeds
//! what the committed offset record covers, and after any restart every
//! change at a position the offset covers is dropped. So a read_committed
//! consumer sees every change exactly once, whatever fails.
// Errors carry the identifiers an operator needs (connector, slot, topic,
// LSN) plus their source; they are built on failure paths only, so their
// size costs nothing on the hot path.
#![allow(clippy::result_large_err)]

pub mod avro;
pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod event;
pub mod failpoint;
pub mod kafka;
pub mod pipeline;
pub mod postgres;
pub mod snapshot;
pub mod telemetry;
