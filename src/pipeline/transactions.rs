//! Transaction metadata (`[transactions]`, Debezium's
//! `provide.transaction.metadata`): the orders of each streamed event in
//! its source transaction, and the BEGIN and END records of the
//! transaction topic.
//!
//! A source transaction gets BEGIN with its first event and END (with the
//! event count per table, `schema.table`, in first-seen order) at its
//! commit, each inside the Kafka transaction that holds that event or that
//! moves the offset past the commit, so they are written exactly once like
//! the events. A transaction that produced no event gets neither.
//!
//! Events counted are the records a change produces on its table's topic:
//! one per change, two for an update that changes the key (delete, then
//! create), none for a truncate with `kafka.emit_truncate = false`;
//! tombstones are not events. A change that went to the dead-letter topic
//! counts too (the dead letter carries its orders), so END says what the
//! source transaction held. Snapshot rows (`op = r`) belong to no source
//! transaction: their block stays null, as Debezium's.
//!
//! Restarts: when the stored offset is inside a transaction, PostgreSQL
//! sends the whole transaction again and the reader forwards its covered
//! prefix as [`super::Item::Written`]; the writer counts those changes
//! through the same path as written ones without producing anything, so
//! the orders of the rest continue exactly, BEGIN is not written again
//! (it was, if the prefix produced an event) and END carries the totals.
//! Nothing is stored in the offset record.

use std::sync::Arc;

use crate::avro::encode::{TransactionBlock, write_bytes, write_long};
use crate::event::{ChangeEvent, Lsn};

/// The key schema of the transaction topic.
pub(super) const KEY_SCHEMA: &str = include_str!("../../schemas/transaction-key.avsc");
/// The value schema of the transaction topic.
pub(super) const VALUE_SCHEMA: &str = include_str!("../../schemas/transaction-value.avsc");

/// Counts of the source transaction being written.
#[derive(Debug)]
struct OpenTx {
    commit_lsn: Lsn,
    id: Arc<str>,
    ts_ms: i64,
    total: u64,
    /// Events per table, in the order the tables first appeared.
    tables: Vec<(Arc<str>, u64)>,
    /// BEGIN was written (now or, for a re-counted prefix, before).
    begun: bool,
}

/// One event's place in its transaction.
#[derive(Clone, Debug)]
pub(super) struct Ordered {
    pub id: Arc<str>,
    pub total_order: u64,
    pub data_collection_order: u64,
    /// The event is its transaction's first: BEGIN goes before it.
    pub first: bool,
}

impl Ordered {
    pub(super) fn block(&self) -> TransactionBlock<'_> {
        TransactionBlock {
            id: &self.id,
            total_order: self.total_order,
            data_collection_order: self.data_collection_order,
        }
    }
}

/// The transaction metadata state of one writer.
#[derive(Debug)]
pub(super) struct TxMetadata {
    pub topic: String,
    /// Key and value schema ids, registered with the first record.
    pub ids: Option<(u32, u32)>,
    open: Option<OpenTx>,
}

/// Debezium's PostgreSQL transaction id: `{xid}:{commit LSN}`, the LSN as a
/// decimal number (xids wrap; the pair does not).
pub(super) fn transaction_id(event: &ChangeEvent) -> String {
    format!("{}:{}", event.tx.xid.0, event.tx.commit_lsn.0)
}

impl TxMetadata {
    pub(super) fn new(topic: String) -> TxMetadata {
        TxMetadata {
            topic,
            ids: None,
            open: None,
        }
    }

    /// Counts one event of `table` and returns its orders. The first event
    /// of a transaction is marked `first` once: its BEGIN is due.
    pub(super) fn next(&mut self, event: &ChangeEvent, table: &Arc<str>) -> Ordered {
        let commit_lsn = event.tx.commit_lsn;
        let open = match &mut self.open {
            Some(o) if o.commit_lsn == commit_lsn => o,
            slot => slot.insert(OpenTx {
                commit_lsn,
                id: Arc::from(transaction_id(event)),
                ts_ms: event.tx.commit_ts_us.div_euclid(1000),
                total: 0,
                tables: Vec::new(),
                begun: false,
            }),
        };
        open.total += 1;
        let data_collection_order = match open.tables.iter_mut().find(|(t, _)| t == table) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                open.tables.push((Arc::clone(table), 1));
                1
            }
        };
        let first = !open.begun;
        open.begun = true;
        Ordered {
            id: Arc::clone(&open.id),
            total_order: open.total,
            data_collection_order,
            first,
        }
    }

    /// The END record's value for the transaction committing at
    /// `commit_lsn`, if it produced events; forgets it.
    /// Needs [`TxMetadata::ids`].
    pub(super) fn end(&mut self, commit_lsn: Lsn) -> Option<(Vec<u8>, Vec<u8>)> {
        let (key_id, value_id) = self.ids?;
        let open = self.open.take_if(|o| o.commit_lsn == commit_lsn)?;
        Some((key(key_id, &open.id), end_value(value_id, &open)))
    }

    /// Whether an END is due at the commit of `commit_lsn`.
    pub(super) fn ends_with(&self, commit_lsn: Lsn) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.commit_lsn == commit_lsn)
    }

    /// The BEGIN record (key, value) of the open transaction. Needs
    /// [`TxMetadata::ids`].
    pub(super) fn begin_record(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let open = self.open.as_ref()?;
        let (key_id, value_id) = self.ids?;
        let mut value = header(value_id);
        write_bytes(&mut value, b"BEGIN");
        write_bytes(&mut value, open.id.as_bytes());
        value.push(0); // event_count: null
        value.push(0); // data_collections: null
        write_long(&mut value, open.ts_ms);
        Some((key(key_id, &open.id), value))
    }
}

fn header(schema_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out
}

fn key(key_id: u32, id: &str) -> Vec<u8> {
    let mut out = header(key_id);
    write_bytes(&mut out, id.as_bytes());
    out
}

fn end_value(value_id: u32, open: &OpenTx) -> Vec<u8> {
    let mut value = header(value_id);
    write_bytes(&mut value, b"END");
    write_bytes(&mut value, open.id.as_bytes());
    value.push(2); // event_count: the long branch
    write_long(&mut value, open.total as i64);
    value.push(2); // data_collections: the array branch
    write_long(&mut value, open.tables.len() as i64);
    for (table, n) in &open.tables {
        write_bytes(&mut value, table.as_bytes());
        write_long(&mut value, *n as i64);
    }
    value.push(0); // end of the array
    write_long(&mut value, open.ts_ms);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    use crate::event::{Op, Position, Relation, RelationVersion, ReplicaIdentity, SourceTx, TxId};

    fn event(commit_lsn: u64, index: u64) -> ChangeEvent {
        ChangeEvent {
            position: Position {
                commit_lsn: Lsn(commit_lsn),
                index,
            },
            op: Op::Create,
            relation: Arc::new(RelationVersion {
                relation: Relation {
                    oid: 1,
                    schema: "public".into(),
                    name: "t".into(),
                    replica_identity: ReplicaIdentity::Default,
                    columns: vec![],
                },
                version: 1,
                nullable: vec![],
                defaults: vec![],
                custom_types: Default::default(),
            }),
            tx: Arc::new(SourceTx {
                xid: TxId(571),
                commit_lsn: Lsn(commit_lsn),
                commit_ts_us: 1_700_000_000_123_456,
            }),
            lsn: Lsn(commit_lsn - 10),
            old: None,
            new: Some(vec![]),
        }
    }

    fn decode(schema: &str, bytes: &[u8]) -> Value {
        assert_eq!(bytes[0], 0);
        crate::avro::decode_datum(schema, &bytes[5..])
    }

    #[test]
    fn orders_count_per_transaction_and_table_and_end_lists_them() {
        let mut m = TxMetadata::new("p.transaction".into());
        m.ids = Some((7, 8));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("public.a"), Arc::from("public.b"));
        let orders: Vec<(u64, u64, bool)> = [&a, &b, &a, &a]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let o = m.next(&event(1000, i as u64), t);
                assert_eq!(&*o.id, "571:1000");
                (o.total_order, o.data_collection_order, o.first)
            })
            .collect();
        assert_eq!(
            orders,
            [(1, 1, true), (2, 1, false), (3, 2, false), (4, 3, false)]
        );
        let (key, begin) = m.begin_record().unwrap();
        assert_eq!(
            decode(KEY_SCHEMA, &key),
            Value::Record(vec![("id".into(), Value::String("571:1000".into()))])
        );
        assert_eq!(
            decode(VALUE_SCHEMA, &begin),
            Value::Record(vec![
                ("status".into(), Value::String("BEGIN".into())),
                ("id".into(), Value::String("571:1000".into())),
                ("event_count".into(), Value::Union(0, Box::new(Value::Null))),
                (
                    "data_collections".into(),
                    Value::Union(0, Box::new(Value::Null))
                ),
                ("ts_ms".into(), Value::Long(1_700_000_000_123)),
            ])
        );
        assert!(m.end(Lsn(999)).is_none(), "another transaction's commit");
        let (_, end) = m.end(Lsn(1000)).unwrap();
        let dc = |t: &str, n: i64| {
            Value::Record(vec![
                ("data_collection".into(), Value::String(t.into())),
                ("event_count".into(), Value::Long(n)),
            ])
        };
        assert_eq!(
            decode(VALUE_SCHEMA, &end),
            Value::Record(vec![
                ("status".into(), Value::String("END".into())),
                ("id".into(), Value::String("571:1000".into())),
                (
                    "event_count".into(),
                    Value::Union(1, Box::new(Value::Long(4)))
                ),
                (
                    "data_collections".into(),
                    Value::Union(
                        1,
                        Box::new(Value::Array(vec![dc("public.a", 3), dc("public.b", 1)]))
                    )
                ),
                ("ts_ms".into(), Value::Long(1_700_000_000_123)),
            ])
        );
        assert!(m.end(Lsn(1000)).is_none(), "END once");
        // The next transaction starts over.
        let o = m.next(&event(2000, 0), &b);
        assert_eq!(
            (o.total_order, o.data_collection_order, o.first),
            (1, 1, true)
        );
    }
}
