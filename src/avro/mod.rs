//! Avro: schemas derived from relations (Debezium's names and envelope),
//! the PostgreSQL text → Avro type mapping, the direct binary encoder used
//! on the hot path, and the schema registry client.

pub mod array;
pub mod encode;
pub mod flat;
pub mod infer;
pub mod message;
pub mod modes;
pub mod projection;
pub mod registry;
pub mod schema;
pub mod types;
