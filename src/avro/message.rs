//! Logical decoding messages (`pg_logical_emit_message`) as Debezium's
//! PostgreSQL connector publishes them: key `MessageKey {prefix}`, value
//! `MessageValue {op = "m", ts_ms, source, message {prefix, content}}`,
//! with the same `source` block as row events (`schema` and `table` empty;
//! `txId` null for a non-transactional message).
//!
//! Not on the hot path: messages are rare next to row changes, so the
//! schemas are fixed strings and values are written field by field.

use super::encode::{EnvelopeContext, write_bytes, write_long};
use super::schema::SOURCE_FIELD;
use crate::event::MessageEvent;

/// The key schema of the messages topic.
pub const KEY_SCHEMA: &str = r#"{"type":"record","name":"MessageKey","namespace":"io.debezium.connector.postgresql","fields":[{"name":"prefix","type":"string"}],"connect.name":"io.debezium.connector.postgresql.MessageKey"}"#;

/// The value schema of the messages topic.
pub fn value_schema() -> String {
    format!(
        concat!(
            r#"{{"type":"record","name":"MessageValue","namespace":"io.debezium.connector.postgresql","fields":["#,
            r#"{{"name":"op","type":"string"}},"#,
            r#"{{"name":"ts_ms","type":["null","long"],"default":null}},"#,
            r#"{source},"#,
            r#"{{"name":"message","type":{{"type":"record","name":"Message","fields":["#,
            r#"{{"name":"prefix","type":"string"}},"#,
            r#"{{"name":"content","type":"bytes"}}"#,
            r#"]}}}}"#,
            r#"],"connect.name":"io.debezium.connector.postgresql.MessageValue"}}"#,
        ),
        source = SOURCE_FIELD
    )
}

/// Appends the Avro body of a message's key.
pub fn encode_key(message: &MessageEvent, out: &mut Vec<u8>) {
    write_bytes(out, message.prefix.as_bytes());
}

/// Appends the Avro body of a message's value. A non-transactional
/// message has no commit time: its `ts_ms` fields say when siphon read it.
pub fn encode_value(message: &MessageEvent, ctx: &EnvelopeContext<'_>, out: &mut Vec<u8>) {
    const NULL: u8 = 0;
    const SECOND: u8 = 2;
    let ts_us = message.tx.as_ref().map_or(ctx.now_us, |tx| tx.commit_ts_us);
    write_bytes(out, b"m");
    out.push(SECOND);
    write_long(out, ctx.now_us.div_euclid(1000));
    // source, in the order of schema.rs's SOURCE_FIELD.
    write_bytes(out, ctx.connector_version.as_bytes());
    write_bytes(out, b"postgresql");
    write_bytes(out, ctx.name.as_bytes());
    write_long(out, ts_us.div_euclid(1000));
    out.push(0); // snapshot: branch 0 is the string enum
    write_bytes(out, b"false");
    write_bytes(out, ctx.db.as_bytes());
    out.push(NULL); // sequence
    out.push(SECOND);
    write_long(out, ts_us);
    out.push(SECOND);
    write_long(out, ts_us.saturating_mul(1000));
    write_bytes(out, b""); // schema
    write_bytes(out, b""); // table
    match &message.tx {
        Some(tx) => {
            out.push(SECOND);
            write_long(out, i64::from(tx.xid.0));
        }
        None => out.push(NULL),
    }
    out.push(SECOND);
    write_long(out, message.lsn.0 as i64);
    out.extend_from_slice(&[NULL; 3]); // xmin, origin, origin_lsn
    write_bytes(out, message.prefix.as_bytes());
    write_bytes(out, &message.content);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use apache_avro::types::Value;

    use super::*;
    use crate::event::{Lsn, Position, SourceTx, TxId};

    fn message(tx: bool) -> MessageEvent {
        MessageEvent {
            position: Position {
                commit_lsn: Lsn(0x200),
                index: 3,
            },
            tx: tx.then(|| {
                Arc::new(SourceTx {
                    xid: TxId(77),
                    commit_lsn: Lsn(0x200),
                    commit_ts_us: 1_700_000_000_123_456,
                })
            }),
            lsn: Lsn(0x100),
            prefix: "orders".to_owned(),
            content: bytes::Bytes::from_static(b"\x00{\"id\":1}"),
        }
    }

    fn decode(schema: &str, bytes: &[u8]) -> Value {
        crate::avro::decode_datum(schema, bytes)
    }

    fn field<'v>(v: &'v Value, name: &str) -> &'v Value {
        let Value::Record(fields) = v else {
            panic!("not a record: {v:?}")
        };
        &fields
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no field {name}"))
            .1
    }

    #[test]
    fn key_and_value_decode_with_their_schemas() {
        let ctx = EnvelopeContext {
            connector_version: "0.1.0",
            name: "shop",
            db: "app",
            snapshot: "false",
            now_us: 1_800_000_000_000_000,
            transaction: None,
        };
        for tx in [true, false] {
            let m = message(tx);
            let mut key = Vec::new();
            encode_key(&m, &mut key);
            assert_eq!(
                decode(KEY_SCHEMA, &key),
                Value::Record(vec![("prefix".into(), Value::String("orders".into()))])
            );
            let mut value = Vec::new();
            encode_value(&m, &ctx, &mut value);
            let v = decode(&value_schema(), &value);
            assert_eq!(field(&v, "op"), &Value::String("m".into()));
            let source = field(&v, "source");
            assert_eq!(field(source, "db"), &Value::String("app".into()));
            assert_eq!(
                field(source, "lsn"),
                &Value::Union(1, Box::new(Value::Long(0x100)))
            );
            let expected_tx = if tx {
                Value::Union(1, Box::new(Value::Long(77)))
            } else {
                Value::Union(0, Box::new(Value::Null))
            };
            assert_eq!(field(source, "txId"), &expected_tx);
            let expected_ts = if tx {
                1_700_000_000_123
            } else {
                1_800_000_000_000
            };
            assert_eq!(field(source, "ts_ms"), &Value::Long(expected_ts));
            let body = field(&v, "message");
            assert_eq!(field(body, "prefix"), &Value::String("orders".into()));
            assert_eq!(
                field(body, "content"),
                &Value::Bytes(b"\x00{\"id\":1}".to_vec())
            );
        }
    }
}
