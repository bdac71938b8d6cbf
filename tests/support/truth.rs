//! Ground truth for the fault tests and the checker that compares it with
//! what a read_committed consumer received.
//!
//! Truth is a second logical slot with `test_decoding`, created before the
//! workload starts and read with `pg_logical_slot_peek_changes` at the end:
//! PostgreSQL itself says which transactions committed (the workload cannot
//! know across server restarts), in commit order. The checker builds, per
//! (table, key), the list of changes from both sides and requires them to
//! be equal — every change present once, nothing extra, per-key order kept —
//! and every table row to equal what the last event of its key says.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use futures_util::{StreamExt, pin_mut};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use siphon::avro::registry::RegistryClient;

use super::events::{field, unwrap_union, wire};
use super::kafka::{READ_IDLE, assign_all};
use super::postgres::PgCluster;

/// The ground-truth slot's name.
pub const TRUTH_SLOT: &str = "fault_truth";

/// One change of one key, as both sides can tell it: inserts and updates
/// carry the row's unique `v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    Insert(i64),
    Update(i64),
    Delete,
    /// The null-value record after a delete (log compaction).
    Tombstone,
}

/// (table, id) → its changes in order.
pub type History = BTreeMap<(String, i32), Vec<Change>>;

/// Where each change of a [`History`] read from Kafka sits: (partition,
/// offset) per key, in the same order as the key's changes.
pub type Positions = BTreeMap<(String, i32), Vec<(i32, i64)>>;

/// What a consumer read from the tables' topics.
pub struct KafkaRead {
    pub history: History,
    pub positions: Positions,
    pub records: u64,
}

/// Creates the ground-truth slot; call before the workload's first change.
pub fn create_truth_slot(pg: &PgCluster, db: &str) {
    pg.psql(
        db,
        &format!(
            "SELECT 1 FROM pg_create_logical_replication_slot('{TRUTH_SLOT}', 'test_decoding')"
        ),
    );
}

/// Every committed change of `tables` (schema public) since the truth slot
/// was created, in commit order; with `tombstones`, a delete is followed
/// by its tombstone as siphon writes it.
pub async fn truth_history(
    pg: &PgCluster,
    db: &str,
    tables: &[String],
    tombstones: bool,
) -> History {
    let client = pg.client(db).await;
    let wanted: HashSet<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    let sql = format!("SELECT data FROM pg_logical_slot_peek_changes('{TRUTH_SLOT}', NULL, NULL)");
    let rows = client
        .query_raw(&sql, std::iter::empty::<i32>())
        .await
        .expect("peek truth slot");
    pin_mut!(rows);
    let mut out = History::new();
    while let Some(row) = rows.next().await {
        let row = row.expect("truth row");
        let data: &str = row.get(0);
        let Some(rest) = data.strip_prefix("table ") else {
            continue; // BEGIN / COMMIT
        };
        let (table, rest) = rest.split_once(": ").expect("test_decoding table line");
        if !wanted.contains(table) {
            continue;
        }
        let (op, columns) = rest.split_once(": ").unwrap_or((rest, ""));
        let col = |name: &str| -> Option<i64> {
            columns
                .split(' ')
                .find_map(|c| c.strip_prefix(name))
                .map(|v| v.parse().expect("integer column"))
        };
        let id = col("id[integer]:").unwrap_or_else(|| panic!("no id in {data}")) as i32;
        let key = (table.trim_start_matches("public.").to_owned(), id);
        let list = out.entry(key).or_default();
        match op {
            "INSERT" => list.push(Change::Insert(col("v[bigint]:").expect("v"))),
            "UPDATE" => list.push(Change::Update(col("v[bigint]:").expect("v"))),
            "DELETE" => {
                list.push(Change::Delete);
                if tombstones {
                    list.push(Change::Tombstone);
                }
            }
            other => panic!("unexpected test_decoding op {other}: {data}"),
        }
    }
    out
}

/// What a read_committed consumer of `bootstrap` (the Kafka proxy) reads
/// from the tables' topics `{prefix}.public.{table}`, decoded, per key in
/// partition order. Also returns how many records were read.
pub async fn kafka_history(
    bootstrap: &str,
    registry: &RegistryClient,
    prefix: &str,
    tables: &[String],
) -> KafkaRead {
    kafka_history_with(bootstrap, registry, prefix, tables, "read_committed").await
}

/// [`kafka_history`] with another `isolation.level`: `read_uncommitted`
/// straight from the broker reads the raw log (aborted records too), to
/// tell a change the broker never kept from one it kept but did not show.
pub async fn kafka_history_with(
    bootstrap: &str,
    registry: &RegistryClient,
    prefix: &str,
    tables: &[String],
    isolation: &str,
) -> KafkaRead {
    let mut schemas: HashMap<u32, Schema> = HashMap::new();
    let mut out = History::new();
    let mut positions = Positions::new();
    let mut records = 0u64;
    for table in tables {
        let topic = format!("{prefix}.public.{table}");
        let settings = [
            ("group.id", "siphon-fault-checker"),
            ("isolation.level", isolation),
        ];
        let Some((consumer, mut pending)) = assign_all(bootstrap, &topic, &settings) else {
            continue;
        };
        let mut idle_since = Instant::now();
        while !pending.is_empty() {
            assert!(
                idle_since.elapsed() < READ_IDLE,
                "reading {topic}: nothing for {READ_IDLE:?}"
            );
            let m = match consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    pending.remove(&p);
                    continue;
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                Some(Ok(m)) => m,
            };
            idle_since = Instant::now();
            records += 1;
            let key = m.key().expect("every event has a key");
            let id = match decode_field(registry, &mut schemas, key, "id").await {
                Value::Int(i) => i,
                other => panic!("key id {other:?}"),
            };
            let change = match m.payload() {
                None => Change::Tombstone,
                Some(value) => {
                    let v = decode(registry, &mut schemas, value).await;
                    let op = match field(&v, "op") {
                        Some(Value::String(s)) => s.clone(),
                        other => panic!("op {other:?}"),
                    };
                    let after_v = || match field(&v, "after").and_then(|a| field(a, "v")) {
                        Some(Value::Long(x)) => *x,
                        other => panic!("after.v {other:?}"),
                    };
                    match op.as_str() {
                        "c" => Change::Insert(after_v()),
                        "u" => Change::Update(after_v()),
                        "d" => Change::Delete,
                        other => panic!("unexpected op {other}"),
                    }
                }
            };
            out.entry((table.clone(), id)).or_default().push(change);
            positions
                .entry((table.clone(), id))
                .or_default()
                .push((m.partition(), m.offset()));
        }
    }
    KafkaRead {
        history: out,
        positions,
        records,
    }
}

async fn decode(
    registry: &RegistryClient,
    schemas: &mut HashMap<u32, Schema>,
    bytes: &[u8],
) -> Value {
    let (id, mut body) = wire(bytes);
    if let std::collections::hash_map::Entry::Vacant(e) = schemas.entry(id) {
        let text = registry.schema_by_id(id).await.expect("schema by id");
        e.insert(Schema::parse_str(&text).expect("schema parses"));
    }
    let schema = &schemas[&id];
    let value = GenericDatumReader::builder(schema)
        .build()
        .and_then(|r| r.read_value(&mut body))
        .expect("record decodes");
    assert!(body.is_empty(), "bytes left after the datum");
    value
}

async fn decode_field(
    registry: &RegistryClient,
    schemas: &mut HashMap<u32, Schema>,
    bytes: &[u8],
    name: &str,
) -> Value {
    let v = decode(registry, schemas, bytes).await;
    unwrap_union(field(&v, name).unwrap_or_else(|| panic!("no field {name}"))).clone()
}

/// (table, id) → v of every row now in the tables.
pub async fn table_state(
    pg: &PgCluster,
    db: &str,
    tables: &[String],
) -> BTreeMap<(String, i32), i64> {
    let client = pg.client(db).await;
    let mut out = BTreeMap::new();
    for t in tables {
        for row in client
            .query(&format!("SELECT id, v FROM {t}"), &[])
            .await
            .expect("table state")
        {
            out.insert((t.clone(), row.get::<_, i32>(0)), row.get::<_, i64>(1));
        }
    }
    out
}

/// The outcome of one comparison.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Changes in the ground truth (tombstones included).
    pub changes: u64,
    /// Records the consumer read.
    pub records: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// Keys whose changes all arrived, in another order.
    pub reordered_keys: u64,
    /// Keys whose table row differs from what their last event says.
    pub state_mismatches: u64,
    pub examples: Vec<String>,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.missing == 0
            && self.duplicated == 0
            && self.reordered_keys == 0
            && self.state_mismatches == 0
            && self.changes == self.records
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "changes checked {}, records read {}, missing {}, duplicated {}, reordered keys {}, final-state mismatches {}",
            self.changes,
            self.records,
            self.missing,
            self.duplicated,
            self.reordered_keys,
            self.state_mismatches
        )?;
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Compares truth with what the consumer read and with the tables.
pub fn compare(
    truth: &History,
    kafka: &History,
    records: u64,
    state: &BTreeMap<(String, i32), i64>,
) -> Verdict {
    let mut v = Verdict {
        records,
        ..Verdict::default()
    };
    let empty = Vec::new();
    let keys: BTreeSet<&(String, i32)> = truth
        .keys()
        .chain(kafka.keys())
        .chain(state.keys())
        .collect();
    for key in keys {
        let t = truth.get(key).unwrap_or(&empty);
        let k = kafka.get(key).unwrap_or(&empty);
        v.changes += t.len() as u64;
        if t != k {
            let mut counts: HashMap<Change, i64> = HashMap::new();
            for c in t {
                *counts.entry(*c).or_default() += 1;
            }
            for c in k {
                *counts.entry(*c).or_default() -= 1;
            }
            let missing: i64 = counts.values().filter(|n| **n > 0).sum();
            let extra: i64 = -counts.values().filter(|n| **n < 0).sum::<i64>();
            v.missing += missing as u64;
            v.duplicated += extra as u64;
            if missing == 0 && extra == 0 {
                v.reordered_keys += 1;
            }
            if v.examples.len() < 10 {
                v.examples
                    .push(format!("{key:?}: truth {t:?}, kafka {k:?}"));
            }
        }
        let expected = match k.last() {
            Some(Change::Insert(x) | Change::Update(x)) => Some(*x),
            _ => None,
        };
        if expected != state.get(key).copied() {
            v.state_mismatches += 1;
            if v.examples.len() < 10 {
                v.examples.push(format!(
                    "{key:?}: table has {:?}, last event says {expected:?}",
                    state.get(key)
                ));
            }
        }
    }
    v
}
