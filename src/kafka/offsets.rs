//! The offset record: where a connector stands, committed in the same Kafka
//! transaction as the events it covers (DESIGN.md, "Exactly-once protocol").
//!
//! Key: the connector name (UTF-8). Value: Confluent wire format (magic 0,
//! 4-byte schema id, Avro binary) of `schemas/offset.avsc`, so registry-aware
//! tools can read it. siphon decodes it with its own copy of the schema.
//!
//! A record read back is not trusted blindly: one that does not decode, has
//! a negative LSN or impossible snapshot progress
//! ([`SnapshotProgress::validate`]) is an error, never a panic or a skip.
//!
//! Invariant: a change at position `p` has been written iff
//! [`OffsetRecord::covers`]`(p)`. Deduplication after a restart relies on
//! this alone.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::KafkaError;
use crate::config::ConnectorConfig;
use crate::event::{Lsn, Position};
use crate::snapshot::progress::{SnapshotProgress, TableProgress};

/// The offset schema, fixed by siphon.
pub const OFFSET_SCHEMA: &str = include_str!("../../schemas/offset.avsc");

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    Schema::parse_str(OFFSET_SCHEMA).expect("invariant: schemas/offset.avsc is valid Avro")
});

/// The first version of the schema (before snapshot progress). Avro binary
/// is the concatenation of the fields, and every version since added
/// fields at the very end of the bytes, so a record is read as this prefix
/// and then, while bytes remain, what each later version added; a record
/// written by an older siphon simply ends earlier:
///
/// - v2 ([`TAIL`]): the `snapshot` field;
/// - v3 ([`SNAPSHOT_TAIL`]): `snapshot.initial_tables` and
///   `snapshot.chunk_items`, the last fields of the last field, so their
///   bytes come last (only when `snapshot` is set).
const OFFSET_SCHEMA_V1: &str = include_str!("../../schemas/offset-v1.avsc");

/// The second version (snapshot progress without `initial_tables`).
const OFFSET_SCHEMA_V2: &str = include_str!("../../schemas/offset-v2.avsc");

static SCHEMA_V1: LazyLock<Schema> = LazyLock::new(|| {
    Schema::parse_str(OFFSET_SCHEMA_V1).expect("invariant: schemas/offset-v1.avsc is valid Avro")
});

fn json(schema: &str) -> serde_json::Value {
    serde_json::from_str(schema).expect("invariant: the offset schemas are JSON")
}

/// The fields v2 added after [`SCHEMA_V1`]'s, as a record of their own.
static TAIL: LazyLock<Schema> = LazyLock::new(|| {
    let n = json(OFFSET_SCHEMA_V1)["fields"]
        .as_array()
        .map_or(0, Vec::len);
    let tail: Vec<serde_json::Value> = json(OFFSET_SCHEMA_V2)["fields"]
        .as_array()
        .map(|f| f[n..].to_vec())
        .unwrap_or_default();
    let schema = serde_json::json!({
        "type": "record", "name": "OffsetTail", "namespace": "io.siphon", "fields": tail
    });
    Schema::parse(&schema).expect("invariant: the offset schema's v2 fields are valid Avro")
});

/// The fields v3 added to the `SnapshotProgress` record after v2's.
static SNAPSHOT_TAIL: LazyLock<Schema> = LazyLock::new(|| {
    let progress_fields = |schema: &str| -> Vec<serde_json::Value> {
        let v = json(schema);
        v["fields"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == "snapshot"))
            .and_then(|f| f["type"].as_array())
            .and_then(|u| u.get(1))
            .and_then(|r| r["fields"].as_array())
            .cloned()
            .unwrap_or_default()
    };
    let n = progress_fields(OFFSET_SCHEMA_V2).len();
    let tail: Vec<serde_json::Value> = progress_fields(OFFSET_SCHEMA)
        .get(n..)
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    let schema = serde_json::json!({
        "type": "record", "name": "SnapshotProgressTail", "namespace": "io.siphon", "fields": tail
    });
    Schema::parse(&schema).expect("invariant: the offset schema's v3 fields are valid Avro")
});

/// What a connector has durably written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetRecord {
    pub connector: String,
    /// Commit LSN of the source transaction of the last change written, or
    /// the WAL end of an idle-time offset.
    pub commit_lsn: Lsn,
    /// Index of the last change written in that transaction; `None` when
    /// none of it was.
    pub index: Option<u64>,
    /// Every change of the transaction at `commit_lsn` was written.
    pub txn_complete: bool,
    /// PostgreSQL may be told everything up to here is flushed: every
    /// transaction that ends at or before it was written.
    pub flush_lsn: Lsn,
    pub system_id: String,
    pub timeline: u32,
    pub database: String,
    pub slot: String,
    pub written_at_ms: i64,
    /// Progress of the snapshot in progress; `None` when none is.
    pub snapshot: Option<SnapshotProgress>,
}

impl OffsetRecord {
    /// Whether the change at `pos` was already written (and must be dropped
    /// if PostgreSQL sends it again).
    pub fn covers(&self, pos: Position) -> bool {
        if pos.commit_lsn != self.commit_lsn {
            return pos.commit_lsn < self.commit_lsn;
        }
        self.txn_complete || self.index.is_some_and(|i| pos.index <= i)
    }

    /// Records that the transaction committing at `commit_lsn` (its commit
    /// record ending at `end_lsn`) was handled to its end: its changes not
    /// covered yet were written, or it had none to capture.
    ///
    /// A transaction the record already covers leaves the position where
    /// it is. PostgreSQL sends older transactions again whenever the slot
    /// is behind the stored offset (siphon stored, then died before its
    /// ack; or the server's crash restart took the slot back to its last
    /// checkpoint); the reader drops their changes, but their ends still
    /// arrive. Moving the position back to one of them would uncover the
    /// parts of a split transaction written after it, and the next restart
    /// would write those parts again.
    pub fn complete_transaction(&mut self, commit_lsn: Lsn, end_lsn: Lsn) {
        if commit_lsn < self.commit_lsn {
            return;
        }
        if commit_lsn != self.commit_lsn {
            // None of this transaction was written in this run (nothing
            // captured in it).
            self.index = None;
        }
        self.commit_lsn = commit_lsn;
        self.txn_complete = true;
        self.flush_lsn = self.flush_lsn.max(end_lsn);
    }

    /// Whether both records say the same about progress (ignoring when
    /// they were written).
    pub fn same_position(&self, other: &OffsetRecord) -> bool {
        (
            self.commit_lsn,
            self.index,
            self.txn_complete,
            self.flush_lsn,
            &self.snapshot,
        ) == (
            other.commit_lsn,
            other.index,
            other.txn_complete,
            other.flush_lsn,
            &other.snapshot,
        )
    }

    /// Avro body (no Confluent header).
    pub fn to_avro(&self) -> Vec<u8> {
        let value = Value::Record(vec![
            ("connector".into(), Value::String(self.connector.clone())),
            ("commit_lsn".into(), Value::Long(self.commit_lsn.0 as i64)),
            (
                "index".into(),
                Value::Long(self.index.map_or(-1, |i| i as i64)),
            ),
            ("txn_complete".into(), Value::Boolean(self.txn_complete)),
            ("flush_lsn".into(), Value::Long(self.flush_lsn.0 as i64)),
            ("system_id".into(), Value::String(self.system_id.clone())),
            ("timeline".into(), Value::Int(self.timeline as i32)),
            ("database".into(), Value::String(self.database.clone())),
            ("slot".into(), Value::String(self.slot.clone())),
            ("written_at_ms".into(), Value::Long(self.written_at_ms)),
            (
                "snapshot".into(),
                match &self.snapshot {
                    None => Value::Union(0, Box::new(Value::Null)),
                    Some(p) => Value::Union(1, Box::new(progress_to_avro(p))),
                },
            ),
        ]);
        GenericDatumWriter::builder(&SCHEMA)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .expect("invariant: the offset record matches its own schema")
    }

    /// Decodes a Confluent-framed offset value.
    pub fn from_wire(bytes: &[u8]) -> Result<OffsetRecord, String> {
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err("missing the Confluent wire-format header".into());
        }
        let mut body = &bytes[5..];
        let value = GenericDatumReader::builder(&SCHEMA_V1)
            .build()
            .and_then(|r| r.read_value(&mut body))
            .map_err(|e| e.to_string())?;
        let Value::Record(mut fields) = value else {
            return Err("not a record".into());
        };
        if !body.is_empty() {
            let tail = GenericDatumReader::builder(&TAIL)
                .build()
                .and_then(|r| r.read_value(&mut body))
                .map_err(|e| e.to_string())?;
            if let Value::Record(more) = tail {
                fields.extend(more);
            }
        }
        // v3: the snapshot progress's own new fields, when it is set.
        let mut snapshot_tail = None;
        if !body.is_empty() {
            let tail = GenericDatumReader::builder(&SNAPSHOT_TAIL)
                .build()
                .and_then(|r| r.read_value(&mut body))
                .map_err(|e| e.to_string())?;
            if let Value::Record(more) = tail {
                snapshot_tail = Some(more);
            }
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| format!("field {name} missing"))
        };
        let string = |name: &str| match get(name)? {
            Value::String(s) => Ok(s.clone()),
            _ => Err(format!("field {name} is not a string")),
        };
        let long = |name: &str| match get(name)? {
            Value::Long(v) => Ok(*v),
            _ => Err(format!("field {name} is not a long")),
        };
        let index = long("index")?;
        // LSNs are unsigned 64-bit; Avro longs are signed.
        let lsn = |name: &str| match long(name)? {
            v if v < 0 => Err(format!("field {name} is negative ({v})")),
            v => Ok(Lsn(v as u64)),
        };
        let snapshot = match fields.iter().find(|(n, _)| n == "snapshot") {
            None => None,
            Some((_, v)) => progress_from_avro(v, snapshot_tail.as_deref())?,
        };
        if let Some(p) = &snapshot {
            p.validate()?;
        }
        Ok(OffsetRecord {
            connector: string("connector")?,
            commit_lsn: lsn("commit_lsn")?,
            index: u64::try_from(index).ok(),
            txn_complete: matches!(get("txn_complete")?, Value::Boolean(true)),
            flush_lsn: lsn("flush_lsn")?,
            system_id: string("system_id")?,
            timeline: match get("timeline")? {
                Value::Int(t) => *t as u32,
                _ => return Err("field timeline is not an int".into()),
            },
            database: string("database")?,
            slot: string("slot")?,
            written_at_ms: long("written_at_ms")?,
            snapshot,
        })
    }
}

fn progress_to_avro(p: &SnapshotProgress) -> Value {
    let tables = p
        .tables
        .iter()
        .map(|t| {
            Value::Record(vec![
                ("table".into(), Value::String(t.table.clone())),
                ("chunk_pages".into(), Value::Long(t.chunk_pages as i64)),
                ("chunks".into(), Value::Long(t.chunks as i64)),
                ("done".into(), Value::Bytes(t.done.clone())),
                ("rows".into(), Value::Long(t.rows as i64)),
                (
                    "as_of".into(),
                    match &t.as_of {
                        None => Value::Union(0, Box::new(Value::Null)),
                        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
                    },
                ),
            ])
        })
        .collect();
    let initial = p
        .tables
        .iter()
        .filter(|t| t.initial)
        .map(|t| Value::String(t.table.clone()))
        .collect();
    Value::Record(vec![
        ("tables".into(), Value::Array(tables)),
        ("initial_tables".into(), Value::Array(initial)),
        (
            "chunk_items".into(),
            Value::Array(
                p.tables
                    .iter()
                    .filter(|t| t.chunk_items > 0)
                    .map(|t| {
                        Value::Record(vec![
                            ("table".into(), Value::String(t.table.clone())),
                            ("chunk_items".into(), Value::Long(t.chunk_items as i64)),
                            ("page_items".into(), Value::Long(t.page_items as i64)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

/// `tail`: the fields v3 added (`initial_tables`), `None` in an older
/// record.
fn progress_from_avro(
    v: &Value,
    tail: Option<&[(String, Value)]>,
) -> Result<Option<SnapshotProgress>, String> {
    let v = match v {
        Value::Union(_, inner) => inner.as_ref(),
        other => other,
    };
    let bad = || "field snapshot is malformed".to_string();
    let fields = match v {
        Value::Null => return Ok(None),
        Value::Record(f) => f,
        _ => return Err(bad()),
    };
    let Some((_, Value::Array(items))) = fields.iter().find(|(n, _)| n == "tables") else {
        return Err(bad());
    };
    // Older records do not say which tables are an initial snapshot's:
    // all of them count as one, so none is stopped unless forced.
    let initial: Option<Vec<&str>> = match tail {
        None => None,
        Some(tail) => match tail.iter().find(|(n, _)| n == "initial_tables") {
            Some((_, Value::Array(names))) => Some(
                names
                    .iter()
                    .map(|n| match n {
                        Value::String(s) => Ok(s.as_str()),
                        _ => Err("field snapshot.initial_tables is malformed".to_string()),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err("field snapshot.initial_tables is malformed".into()),
        },
    };
    // Tables read a part of a page at a time: table → (chunk_items, page_items).
    let mut sub_page: Vec<(String, u64, u64)> = Vec::new();
    if let Some(Value::Array(list)) = tail
        .and_then(|t| t.iter().find(|(n, _)| n == "chunk_items"))
        .map(|(_, v)| v)
    {
        for entry in list {
            let malformed = || "field snapshot.chunk_items is malformed".to_string();
            let Value::Record(f) = entry else {
                return Err(malformed());
            };
            let get = |name: &str| f.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            let long = |name: &str| match get(name) {
                Some(Value::Long(v)) if *v >= 0 => Ok(*v as u64),
                _ => Err(malformed()),
            };
            let Some(Value::String(table)) = get("table") else {
                return Err(malformed());
            };
            sub_page.push((table.clone(), long("chunk_items")?, long("page_items")?));
        }
    }
    let mut tables = Vec::with_capacity(items.len());
    for item in items {
        let Value::Record(f) = item else {
            return Err(bad());
        };
        let get = |name: &str| f.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let table = match get("table") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(bad()),
        };
        let long = |name: &str| match get(name) {
            Some(Value::Long(v)) if *v >= 0 => Ok(*v as u64),
            Some(Value::Long(v)) => Err(format!(
                "snapshot progress of table {table}: {name} is negative ({v})"
            )),
            _ => Err(format!("field snapshot.tables.{name} is malformed")),
        };
        tables.push(TableProgress {
            initial: initial
                .as_ref()
                .is_none_or(|names| names.contains(&table.as_str())),
            chunk_items: sub_page
                .iter()
                .find(|(t, ..)| *t == table)
                .map_or(0, |s| s.1),
            page_items: sub_page
                .iter()
                .find(|(t, ..)| *t == table)
                .map_or(0, |s| s.2),
            table: table.clone(),
            chunk_pages: long("chunk_pages")?,
            chunks: long("chunks")?,
            done: match get("done") {
                Some(Value::Bytes(b)) => b.clone(),
                _ => return Err(bad()),
            },
            rows: long("rows")?,
            as_of: match get("as_of") {
                Some(Value::Union(_, v)) => match v.as_ref() {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                },
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            },
        });
    }
    Ok(Some(SnapshotProgress { tables }))
}

/// Reads the connector's last committed offset with `read_committed`.
///
/// Must run after the transactional producer was initialised: that fences
/// any previous instance and makes the broker abort its open transaction, so
/// nothing newer than what is read here can still become visible.
///
/// The read runs on a blocking thread and can wait a long time (for an
/// open transaction to end); dropping the returned future stops it within
/// a poll interval, so a shutdown never waits for it.
pub async fn read_stored_offset(cfg: &ConnectorConfig) -> Result<Option<OffsetRecord>, KafkaError> {
    let cfg = cfg.clone();
    let dropped = CancellationToken::new();
    let _stop_when_dropped = dropped.clone().drop_guard();
    tokio::task::spawn_blocking(move || read_blocking(&cfg, &dropped)).await?
}

fn read_blocking(
    cfg: &ConnectorConfig,
    dropped: &CancellationToken,
) -> Result<Option<OffsetRecord>, KafkaError> {
    let connector = cfg.name.as_str();
    let topic = cfg.kafka.offsets_topic.as_str();
    let read_err = |source: RdKafkaError| KafkaError::ReadOffset {
        connector: connector.to_owned(),
        topic: topic.to_owned(),
        source,
    };
    let consumer: BaseConsumer<EofIsNotAnError> = super::base_client_config(cfg, &[])
        .set("group.id", format!("siphon-offsets-{connector}"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(EofIsNotAnError)
        .map_err(|source| KafkaError::Client {
            connector: connector.to_owned(),
            what: "offset reader",
            source: super::redact(cfg, source),
        })?;
    let timeout = Duration::from_millis(cfg.kafka.commit_timeout_ms.max(10_000));
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(read_err)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Ok(None);
    }
    // Read up to the end of the log as it is now, including records of other
    // connectors' transactions that are still open: a read_committed
    // consumer's end (the last stable offset) can lie before this
    // connector's newest offset record when another transaction in the
    // partition began earlier and is still open. So the targets are the
    // read_uncommitted high watermarks, and the reader waits at the stable
    // offset until those transactions end (each within its timeout).
    let uncommitted: BaseConsumer<EofIsNotAnError> = super::base_client_config(cfg, &[])
        .set("group.id", format!("siphon-offsets-{connector}"))
        .set("isolation.level", "read_uncommitted")
        .create_with_context(EofIsNotAnError)
        .map_err(|source| KafkaError::Client {
            connector: connector.to_owned(),
            what: "offset reader",
            source: super::redact(cfg, source),
        })?;
    let mut tpl = TopicPartitionList::new();
    let mut targets = HashMap::new();
    for &p in &partitions {
        let (low, high) = uncommitted
            .fetch_watermarks(topic, p, timeout)
            .map_err(read_err)?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(read_err)?;
            targets.insert(p, high);
        }
    }
    drop(uncommitted);
    if targets.is_empty() {
        return Ok(None);
    }
    consumer.assign(&tpl).map_err(read_err)?;
    // Waiting out other transactions can take up to their timeout.
    let limit = timeout * 3 + Duration::from_millis(cfg.kafka.transaction_timeout_ms);
    let started = Instant::now();
    let deadline = started + limit;
    let mut said_waiting = false;
    let mut latest = None;
    while !targets.is_empty() {
        if !said_waiting && started.elapsed() > Duration::from_secs(5) {
            said_waiting = true;
            tracing::info!(
                connector,
                topic,
                timeout_ms = cfg.kafka.transaction_timeout_ms,
                "waiting for an open transaction on the offsets topic to end (an instance killed \
                 mid-transaction, or another connector's slow commit); the broker aborts an \
                 abandoned one within its transaction timeout"
            );
        }
        if dropped.is_cancelled() {
            return Err(KafkaError::ReadOffsetAbandoned {
                connector: connector.to_owned(),
            });
        }
        if Instant::now() > deadline {
            return Err(KafkaError::ReadOffsetTimeout {
                connector: connector.to_owned(),
                topic: topic.to_owned(),
                timeout_ms: limit.as_millis() as u64,
            });
        }
        let polled = consumer.poll(Duration::from_millis(100));
        if matches!(polled, None | Some(Err(RdKafkaError::PartitionEOF(_)))) {
            // At the end for now: done with every partition whose position
            // (which moves past control records) reached its target.
            let positions = consumer.position().map_err(read_err)?;
            for e in positions.elements() {
                if let Offset::Offset(o) = e.offset()
                    && targets.get(&e.partition()).is_some_and(|t| o >= *t)
                {
                    targets.remove(&e.partition());
                }
            }
        }
        match polled {
            None | Some(Err(RdKafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(read_err(e)),
            Some(Ok(msg)) => {
                if msg.key() != Some(connector.as_bytes()) {
                    continue;
                }
                match msg.payload() {
                    // A tombstone resets the connector (an operator's choice).
                    None => latest = None,
                    Some(bytes) => {
                        let record = OffsetRecord::from_wire(bytes).map_err(|reason| {
                            KafkaError::CorruptOffset {
                                connector: connector.to_owned(),
                                topic: topic.to_owned(),
                                reason,
                            }
                        })?;
                        latest = Some(record);
                    }
                }
            }
        }
    }
    Ok(latest)
}

/// The offset reader asks for end-of-partition events to know when it has
/// read everything; librdkafka also reports them as global errors, which
/// the default context would log at ERROR.
struct EofIsNotAnError;

impl ClientContext for EofIsNotAnError {
    fn error(&self, error: RdKafkaError, reason: &str) {
        let eof = matches!(error, RdKafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(error = %error, reason, "kafka client error while reading offsets");
        }
    }
}

impl ConsumerContext for EofIsNotAnError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(commit: u64, index: Option<u64>, complete: bool) -> OffsetRecord {
        OffsetRecord {
            connector: "shop".into(),
            commit_lsn: Lsn(commit),
            index,
            txn_complete: complete,
            flush_lsn: Lsn(commit),
            system_id: "7300000000000000000".into(),
            timeline: 1,
            database: "shop".into(),
            slot: "siphon_shop".into(),
            written_at_ms: 1_700_000_000_000,
            snapshot: None,
        }
    }

    fn pos(commit: u64, index: u64) -> Position {
        Position {
            commit_lsn: Lsn(commit),
            index,
        }
    }

    #[test]
    fn a_complete_transaction_covers_all_of_it_and_everything_before() {
        let r = record(100, Some(4), true);
        assert!(r.covers(pos(99, 1_000)));
        assert!(r.covers(pos(100, 0)));
        assert!(r.covers(pos(100, 4)));
        assert!(r.covers(pos(100, 5_000)));
        assert!(!r.covers(pos(101, 0)));
    }

    #[test]
    fn a_split_transaction_covers_only_what_was_written() {
        let r = record(100, Some(499), false);
        assert!(r.covers(pos(100, 499)));
        assert!(!r.covers(pos(100, 500)));
        assert!(r.covers(pos(50, 7)));
    }

    #[test]
    fn an_idle_offset_covers_nothing_at_its_own_lsn() {
        // Written at a keepalive's WAL end: a transaction that commits
        // exactly there was not sent yet.
        let r = record(100, None, false);
        assert!(!r.covers(pos(100, 0)));
        assert!(r.covers(pos(99, 0)));
    }

    #[test]
    fn a_transaction_end_moves_the_position_forward_only() {
        // Parts of the transaction committing at 300 are written; the slot
        // sent the transaction at 200 again (it is behind the offset).
        let mut r = record(300, Some(9_999), false);
        r.flush_lsn = Lsn(250);
        r.complete_transaction(Lsn(200), Lsn(210));
        assert_eq!(r.commit_lsn, Lsn(300));
        assert_eq!((r.index, r.txn_complete), (Some(9_999), false));
        assert_eq!(r.flush_lsn, Lsn(250));
        assert!(!r.covers(pos(300, 10_000)));

        // Its own end completes it, keeping the index.
        r.complete_transaction(Lsn(300), Lsn(320));
        assert_eq!((r.index, r.txn_complete), (Some(9_999), true));
        assert_eq!(r.flush_lsn, Lsn(320));

        // A later transaction with nothing captured.
        r.complete_transaction(Lsn(400), Lsn(410));
        assert_eq!(r.commit_lsn, Lsn(400));
        assert_eq!((r.index, r.txn_complete), (None, true));
        assert_eq!(r.flush_lsn, Lsn(410));

        // After an idle offset (at a keepalive's WAL end), a transaction
        // committing before it is an old one sent again.
        let mut idle = record(500, None, false);
        idle.complete_transaction(Lsn(450), Lsn(460));
        assert_eq!(idle, record(500, None, false));
    }

    #[test]
    fn round_trips_through_the_wire_format() {
        for r in [
            record(100, Some(4), true),
            record(u64::from(u32::MAX) * 7, None, false),
        ] {
            let mut wire = vec![0, 0, 0, 0, 42];
            wire.extend(r.to_avro());
            assert_eq!(OffsetRecord::from_wire(&wire).unwrap(), r);
        }
    }

    #[test]
    fn snapshot_progress_round_trips() {
        let mut r = record(100, None, false);
        let mut t = TableProgress::plan("public.orders".into(), 1000, 256);
        t.mark_done(2, 77);
        t.as_of = Some("100:110:103,105".into());
        r.snapshot = Some(SnapshotProgress {
            tables: vec![
                t,
                TableProgress::plan("s.e".into(), 0, 256),
                TableProgress::plan_initial("s.i".into(), 10, 256),
                TableProgress::plan_items("s.toasted".into(), 3, 16, 291),
            ],
        });
        let mut wire = vec![0, 0, 0, 0, 42];
        wire.extend(r.to_avro());
        let back = OffsetRecord::from_wire(&wire).unwrap();
        assert_eq!(back, r);
        let initial: Vec<bool> = back
            .snapshot
            .unwrap()
            .tables
            .iter()
            .map(|t| t.initial)
            .collect();
        assert_eq!(initial, [false, false, true, false]);
    }

    #[test]
    fn a_snapshot_written_before_initial_tables_existed_counts_as_initial() {
        // Written with the second schema version: progress without
        // `initial_tables`.
        let schema = Schema::parse_str(OFFSET_SCHEMA_V2).unwrap();
        let table = Value::Record(vec![
            ("table".into(), Value::String("public.orders".into())),
            ("chunk_pages".into(), Value::Long(256)),
            ("chunks".into(), Value::Long(4)),
            ("done".into(), Value::Bytes(vec![0b0101])),
            ("rows".into(), Value::Long(10)),
            ("as_of".into(), Value::Union(0, Box::new(Value::Null))),
        ]);
        let mut fields = v1_fields();
        fields.push((
            "snapshot".into(),
            Value::Union(
                1,
                Box::new(Value::Record(vec![(
                    "tables".into(),
                    Value::Array(vec![table]),
                )])),
            ),
        ));
        let wire = framed(&schema, Value::Record(fields));
        let back = OffsetRecord::from_wire(&wire).unwrap();
        let progress = back.snapshot.unwrap();
        assert_eq!(progress.tables.len(), 1);
        let t = &progress.tables[0];
        assert_eq!(
            (t.table.as_str(), t.rows, t.chunks),
            ("public.orders", 10, 4)
        );
        assert!(t.initial);
        assert!(t.is_done(0) && !t.is_done(1) && t.is_done(2));
    }

    /// The fields of a record as the first schema version wrote them
    /// (what `record(100, Some(4), true)` holds).
    fn v1_fields() -> Vec<(String, Value)> {
        vec![
            ("connector".into(), Value::String("shop".into())),
            ("commit_lsn".into(), Value::Long(100)),
            ("index".into(), Value::Long(4)),
            ("txn_complete".into(), Value::Boolean(true)),
            ("flush_lsn".into(), Value::Long(100)),
            (
                "system_id".into(),
                Value::String("7300000000000000000".into()),
            ),
            ("timeline".into(), Value::Int(1)),
            ("database".into(), Value::String("shop".into())),
            ("slot".into(), Value::String("siphon_shop".into())),
            ("written_at_ms".into(), Value::Long(1_700_000_000_000)),
        ]
    }

    /// `value` written with an older `schema`, Confluent-framed.
    fn framed(schema: &Schema, value: Value) -> Vec<u8> {
        let body = GenericDatumWriter::builder(schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .unwrap();
        let mut wire = vec![0, 0, 0, 0, 42];
        wire.extend(body);
        wire
    }

    #[test]
    fn a_record_written_before_snapshots_existed_still_decodes() {
        // Written with the first schema version, as older siphons did.
        let wire = framed(&SCHEMA_V1, Value::Record(v1_fields()));
        assert_eq!(
            OffsetRecord::from_wire(&wire).unwrap(),
            record(100, Some(4), true)
        );
    }

    #[test]
    fn damaged_records_are_errors_naming_what_is_wrong() {
        let wire = |r: &OffsetRecord| {
            let mut w = vec![0, 0, 0, 0, 42];
            w.extend(r.to_avro());
            w
        };
        let mut r = record(100, None, false);
        r.flush_lsn = Lsn(u64::MAX);
        assert_eq!(
            OffsetRecord::from_wire(&wire(&r)).unwrap_err(),
            "field flush_lsn is negative (-1)"
        );
        let mut r = record(100, None, false);
        let mut t = TableProgress::plan("public.orders".into(), 1000, 256);
        t.rows = u64::MAX;
        r.snapshot = Some(SnapshotProgress { tables: vec![t] });
        assert_eq!(
            OffsetRecord::from_wire(&wire(&r)).unwrap_err(),
            "snapshot progress of table public.orders: rows is negative (-1)"
        );
        let mut r = record(100, None, false);
        let mut t = TableProgress::plan("public.orders".into(), 1000, 256);
        t.done = vec![0xff];
        r.snapshot = Some(SnapshotProgress { tables: vec![t] });
        assert_eq!(
            OffsetRecord::from_wire(&wire(&r)).unwrap_err(),
            "snapshot progress of table public.orders: chunk 4 is marked done but the plan has 4 chunks"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(OffsetRecord::from_wire(&[]).is_err());
        assert!(OffsetRecord::from_wire(&[0, 0, 0, 0, 1, 0xff, 0xff]).is_err());
        assert!(OffsetRecord::from_wire(&[1, 0, 0, 0, 1]).is_err());
    }
}
