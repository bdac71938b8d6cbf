//! siphon: PostgreSQL logical replication → versioned Avro → Kafka, exactly once.
pub mod config;
pub mod error;
pub mod event;
