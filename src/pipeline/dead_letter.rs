//! Dead letters (`[dead_letter] topic`): a row whose event the encoder
//! refuses, or whose record is larger than a Kafka record may be, is
//! written to the dead-letter topic instead of stopping the connector.
//!
//! The dead letter is produced where the event would have been, inside
//! the same Kafka transaction and covered by the same offset, so it is
//! written exactly once like the events around it. It names the position,
//! table, key and error and carries the row's raw text values as JSON; if
//! even that is too large, the longest values are cut to fit and
//! `values_truncated` says so. Logs name table, position and error, never
//! values.

use serde_json::{Map, Value};

use super::transactions::Ordered;
use crate::avro::encode::{write_bytes, write_long};
use crate::event::{ChangeEvent, RelationVersion, Tuple, TupleValue};

/// The dead-letter value schema (no key: dead letters are not compacted).
pub(super) const SCHEMA: &str = include_str!("../../schemas/dead-letter.avsc");

/// Debezium's placeholder for a value PostgreSQL did not send.
const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// The dead-letter topic of one writer.
#[derive(Debug)]
pub(super) struct DeadLetters {
    pub topic: String,
    /// The value schema id, registered with the first dead letter.
    pub schema_id: Option<u32>,
}

/// What a dead letter says about the change besides its values.
pub(super) struct Letter<'a> {
    pub connector: &'a str,
    pub table: &'a str,
    pub topic: &'a str,
    pub event: &'a ChangeEvent,
    pub error: &'a str,
    pub order: Option<&'a Ordered>,
    pub now_ms: i64,
}

impl DeadLetters {
    pub(super) fn new(topic: String) -> DeadLetters {
        DeadLetters {
            topic,
            schema_id: None,
        }
    }
}

/// The dead letter's value (Confluent framed), no larger than `limit`
/// bytes unless even empty values would not fit.
pub(super) fn encode(schema_id: u32, letter: &Letter<'_>, limit: usize) -> Vec<u8> {
    let event = letter.event;
    let rel = &event.relation;
    let mut cut: Option<usize> = None;
    loop {
        let values = values_json(rel, event, cut);
        let mut out = Vec::with_capacity(256 + values.len());
        out.push(0);
        out.extend_from_slice(&schema_id.to_be_bytes());
        write_bytes(&mut out, letter.connector.as_bytes());
        write_bytes(&mut out, letter.table.as_bytes());
        write_bytes(&mut out, letter.topic.as_bytes());
        write_bytes(&mut out, event.position.commit_lsn.to_string().as_bytes());
        write_long(&mut out, event.position.index as i64);
        write_bytes(&mut out, event.op.code().as_bytes());
        match key_json(rel, event) {
            Some(k) => {
                out.push(2);
                write_bytes(&mut out, k.as_bytes());
            }
            None => out.push(0),
        }
        write_bytes(&mut out, letter.error.as_bytes());
        write_bytes(&mut out, values.as_bytes());
        out.push(u8::from(cut.is_some()));
        match letter.order {
            Some(o) => {
                out.push(2);
                write_bytes(&mut out, o.id.as_bytes());
                out.push(2);
                write_long(&mut out, o.total_order as i64);
                out.push(2);
                write_long(&mut out, o.data_collection_order as i64);
            }
            None => out.extend_from_slice(&[0, 0, 0]),
        }
        write_long(&mut out, letter.now_ms);
        if out.len() <= limit || cut == Some(0) {
            return out;
        }
        // Shorten every value to at most half the longest one still cut.
        let longest = cut.unwrap_or_else(|| longest_value(event));
        cut = Some(longest / 2);
    }
}

fn longest_value(event: &ChangeEvent) -> usize {
    let tuples = event.old.iter().map(|(_, t)| t).chain(event.new.as_ref());
    tuples
        .flat_map(|t| t.iter())
        .map(|v| match v {
            TupleValue::Text(b) => b.len(),
            TupleValue::Binary(b) => b.len() * 2 + 2,
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// `{"before": {...} | null, "after": {...} | null}`, values cut to `cut`
/// characters when set.
fn values_json(rel: &RelationVersion, event: &ChangeEvent, cut: Option<usize>) -> String {
    let image = |t: Option<&Tuple>| match t {
        None => Value::Null,
        Some(t) => Value::Object(row(rel, t, cut, |_| true)),
    };
    let mut out = Map::new();
    out.insert("before".into(), image(event.old.as_ref().map(|(_, t)| t)));
    out.insert("after".into(), image(event.new.as_ref()));
    Value::Object(out).to_string()
}

/// The replica identity columns as a JSON object, from the new row (the old
/// one for a delete); `None` without key columns.
fn key_json(rel: &RelationVersion, event: &ChangeEvent) -> Option<String> {
    if !rel.relation.columns.iter().any(|c| c.is_key) {
        return None;
    }
    let tuple = event.new.as_ref().or(event.old.as_ref().map(|(_, t)| t))?;
    let cols = &rel.relation.columns;
    Some(Value::Object(row(rel, tuple, None, |i| cols[i].is_key)).to_string())
}

fn row(
    rel: &RelationVersion,
    tuple: &Tuple,
    cut: Option<usize>,
    keep: impl Fn(usize) -> bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (i, (col, v)) in rel.relation.columns.iter().zip(tuple).enumerate() {
        if !keep(i) {
            continue;
        }
        let text = match v {
            TupleValue::Null => Value::Null,
            TupleValue::UnchangedToast => Value::String(UNAVAILABLE.into()),
            TupleValue::Text(b) => Value::String(shorten(&String::from_utf8_lossy(b), cut)),
            TupleValue::Binary(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                Value::String(shorten(&format!("\\x{hex}"), cut))
            }
        };
        out.insert(col.name.clone(), text);
    }
    out
}

fn shorten(s: &str, cut: Option<usize>) -> String {
    match cut {
        Some(n) if s.len() > n => {
            let mut end = n;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_owned()
        }
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as Avro;
    use bytes::Bytes;
    use std::sync::Arc;

    use crate::event::{
        Lsn, Op, Position, Relation, RelationColumn, ReplicaIdentity, SourceTx, TxId,
    };

    fn event(body: &str) -> ChangeEvent {
        let col = |name: &str, is_key| RelationColumn {
            is_key,
            name: name.into(),
            type_oid: 25,
            type_modifier: -1,
        };
        ChangeEvent {
            position: Position {
                commit_lsn: Lsn(0x1_0000_0010),
                index: 3,
            },
            op: Op::Create,
            relation: Arc::new(RelationVersion {
                relation: Relation {
                    oid: 1,
                    schema: "public".into(),
                    name: "t".into(),
                    replica_identity: ReplicaIdentity::Default,
                    columns: vec![col("id", true), col("body", false), col("n", false)],
                },
                version: 1,
                nullable: vec![false, true, true],
                defaults: vec![],
                custom_types: Default::default(),
            }),
            tx: Arc::new(SourceTx {
                xid: TxId(9),
                commit_lsn: Lsn(0x1_0000_0010),
                commit_ts_us: 0,
            }),
            lsn: Lsn(1),
            old: None,
            new: Some(vec![
                TupleValue::Text(Bytes::from_static(b"7")),
                TupleValue::Text(Bytes::from(body.to_owned())),
                TupleValue::Null,
            ]),
        }
    }

    fn field(v: &Avro, name: &str) -> Avro {
        match v {
            Avro::Record(f) => f.iter().find(|(n, _)| n == name).unwrap().1.clone(),
            _ => panic!("{v:?}"),
        }
    }

    fn decode(bytes: &[u8]) -> Avro {
        crate::avro::decode_datum(SCHEMA, &bytes[5..])
    }

    fn letter<'a>(event: &'a ChangeEvent) -> Letter<'a> {
        Letter {
            connector: "c",
            table: "public.t",
            topic: "p.public.t",
            event,
            error: "too large",
            order: None,
            now_ms: 5,
        }
    }

    #[test]
    fn a_dead_letter_names_the_row_and_carries_its_text_values() {
        let e = event("hello");
        let v = decode(&encode(1, &letter(&e), 10_000));
        assert_eq!(field(&v, "commit_lsn"), Avro::String("1/10".into()));
        assert_eq!(field(&v, "index"), Avro::Long(3));
        assert_eq!(
            field(&v, "key"),
            Avro::Union(1, Box::new(Avro::String(r#"{"id":"7"}"#.into())))
        );
        assert_eq!(
            field(&v, "values"),
            Avro::String(r#"{"after":{"body":"hello","id":"7","n":null},"before":null}"#.into())
        );
        assert_eq!(field(&v, "values_truncated"), Avro::Boolean(false));
    }

    #[test]
    fn a_dead_letter_too_large_is_cut_to_fit_and_says_so() {
        let e = event(&"x".repeat(50_000));
        let bytes = encode(1, &letter(&e), 4_000);
        assert!(bytes.len() <= 4_000, "{}", bytes.len());
        let v = decode(&bytes);
        assert_eq!(field(&v, "values_truncated"), Avro::Boolean(true));
        let Avro::String(values) = field(&v, "values") else {
            panic!()
        };
        let json: serde_json::Value = serde_json::from_str(&values).unwrap();
        let body = json["after"]["body"].as_str().unwrap();
        assert!(
            body.len() > 1_000 && body.chars().all(|c| c == 'x'),
            "{}",
            body.len()
        );
        assert_eq!(json["after"]["id"], "7");
    }
}
