//! Reference consumers of siphon's events (docs/consumers.md): a Redis
//! cache ([`cache`]), a tantivy full-text index ([`search`]) and Parquet
//! analytics files ([`analytics`]), sharing one consume loop ([`source`]).
//!
//! Every consumer follows the same recipe, which is what makes its store
//! converge to the table exactly whatever crashes:
//!
//! 1. read with `isolation.level=read_committed`, so only changes of
//!    committed siphon transactions are seen (each exactly once in Kafka);
//! 2. decode key and value through the schema registry (Confluent wire
//!    format: magic byte 0, 4-byte schema id, Avro binary) — [`decode`];
//! 3. apply each change to the store only if its `siphon.position` header
//!    is newer than what the store holds for that key (and than the
//!    table's last truncate), in the store's own atomic unit;
//! 4. make the store durable, and only then commit the consumer offsets.
//!
//! A crash between 3 and 4 replays changes the store already holds; the
//! position check makes that replay harmless.

pub mod analytics;
pub mod cache;
pub mod decode;
pub mod search;
pub mod source;

pub use decode::{Change, ChangeKind};
pub use source::{CommonArgs, Store, run};
