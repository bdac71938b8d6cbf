//! The analytics pattern: append-only Parquet files, a change log plus a
//! current-state view, queryable by any Parquet reader (DuckDB, Spark,
//! pandas, `parquet` crate).
//!
//! In the output directory:
//!
//! - `log/{seq:010}.parquet` — one file per applied batch, never
//!   rewritten: columns `table`, `key`, `position`, `op`, `ts_ms`, `row`
//!   (JSON of the new row, null for deletes and truncates), `topic`,
//!   `partition`, `offset`. The footer's `siphon.offsets` metadata holds
//!   the last Kafka offset per `topic/partition` the file covers.
//! - `state.parquet` — the current rows: `table`, `key`, `position`,
//!   `row`, rewritten (temporary file, then rename) after each log file;
//!   its footer's `siphon.log_seq` says which log files it includes and
//!   `siphon.truncated` holds each table's last truncate position.
//!
//! Exactly once: a log file is written to a temporary name, synced and
//! renamed (atomic) before the consumer offsets are committed; on start
//! the offsets in the footers say what the log already holds, so records a
//! crash makes Kafka deliver again are skipped, never appended twice. The
//! state is a pure function of the log: rows are kept per key by newest
//! position, and a truncate removes the table's rows older than it, so
//! replaying log files the state missed (a crash between the two renames)
//! gives the same state.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::Value as Json;

use crate::decode::{Change, ChangeKind};
use crate::source::Store;

const OFFSETS_KEY: &str = "siphon.offsets";
const LOG_SEQ_KEY: &str = "siphon.log_seq";
const TRUNCATED_KEY: &str = "siphon.truncated";

fn log_schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("table", false),
        s("key", false),
        s("position", false),
        s("op", false),
        Field::new("ts_ms", DataType::Int64, false),
        s("row", true),
        s("topic", false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]))
}

fn state_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("table"),
        s("key"),
        s("position"),
        s("row"),
    ]))
}

/// One change log row.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    pub table: String,
    pub key: String,
    pub position: String,
    pub op: String,
    pub ts_ms: i64,
    pub row: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The current-state view: (table, key) → (position, row JSON).
pub type State = BTreeMap<(String, String), (String, String)>;

pub struct Analytics {
    dir: PathBuf,
    /// Last offset per (topic, partition) in the log files.
    written: HashMap<(String, i32), i64>,
    next_seq: u64,
    state: State,
    truncated: BTreeMap<String, String>,
    buffer: Vec<LogRow>,
}

impl Analytics {
    /// Opens (or creates) the directory: offsets from the log footers, the
    /// state file, and any log file the state does not include yet.
    pub fn open(dir: &Path) -> Result<Analytics> {
        let log_dir = dir.join("log");
        fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let mut files = Vec::new();
        for entry in fs::read_dir(&log_dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.ends_with(".tmp") {
                fs::remove_file(&path)?; // a write a crash interrupted
            } else if let Some(seq) = name
                .strip_suffix(".parquet")
                .and_then(|s| s.parse::<u64>().ok())
            {
                files.push((seq, path));
            }
        }
        files.sort();
        let mut a = Analytics {
            dir: dir.to_owned(),
            written: HashMap::new(),
            next_seq: files.last().map_or(1, |(s, _)| s + 1),
            state: State::new(),
            truncated: BTreeMap::new(),
            buffer: Vec::new(),
        };
        let state_seq = a.load_state()?;
        let mut replayed = false;
        for (seq, path) in &files {
            let (meta, rows) = read_file(path)?;
            let offsets: BTreeMap<String, i64> =
                serde_json::from_str(meta.get(OFFSETS_KEY).map_or("{}", String::as_str))?;
            for (tp, o) in offsets {
                let (t, p) = tp.rsplit_once('/').context("offsets key")?;
                let e = a.written.entry((t.to_owned(), p.parse()?)).or_insert(o);
                *e = (*e).max(o);
            }
            if *seq > state_seq {
                for r in log_rows(&rows)? {
                    a.apply_state(&r);
                }
                replayed = true;
            }
        }
        if replayed {
            a.write_state(a.next_seq - 1)?;
        }
        Ok(a)
    }

    fn load_state(&mut self) -> Result<u64> {
        let path = self.dir.join("state.parquet");
        if !path.exists() {
            return Ok(0);
        }
        let (meta, batches) = read_file(&path)?;
        for b in &batches {
            let col = |i: usize| string_column(b, i);
            let (t, k, p, r) = (col(0)?, col(1)?, col(2)?, col(3)?);
            for i in 0..b.num_rows() {
                self.state.insert(
                    (t.value(i).to_owned(), k.value(i).to_owned()),
                    (p.value(i).to_owned(), r.value(i).to_owned()),
                );
            }
        }
        self.truncated =
            serde_json::from_str(meta.get(TRUNCATED_KEY).map_or("{}", String::as_str))?;
        Ok(meta.get(LOG_SEQ_KEY).map_or(Ok(0), |s| s.parse())?)
    }

    /// Applies one log row to the state: newest position per key wins; a
    /// truncate drops the table's older rows and every later-arriving
    /// change older than it.
    fn apply_state(&mut self, r: &LogRow) -> bool {
        if self
            .truncated
            .get(&r.table)
            .is_some_and(|t| r.position <= *t)
        {
            return false;
        }
        if r.op == "t" {
            self.state
                .retain(|(table, _), (pos, _)| *table != r.table || *pos > r.position);
            self.truncated.insert(r.table.clone(), r.position.clone());
            return true;
        }
        let k = (r.table.clone(), r.key.clone());
        if self
            .state
            .get(&k)
            .is_some_and(|(pos, _)| r.position <= *pos)
        {
            return false;
        }
        match &r.row {
            Some(row) => {
                self.state.insert(k, (r.position.clone(), row.clone()));
            }
            None => {
                self.state.remove(&k);
            }
        }
        true
    }

    fn write_state(&self, seq: u64) -> Result<()> {
        let s = &self.state;
        let column =
            |values: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from_iter_values(values)) };
        let batch = RecordBatch::try_new(
            state_schema(),
            vec![
                column(s.keys().map(|k| k.0.as_str()).collect()),
                column(s.keys().map(|k| k.1.as_str()).collect()),
                column(s.values().map(|v| v.0.as_str()).collect()),
                column(s.values().map(|v| v.1.as_str()).collect()),
            ],
        )?;
        let meta = vec![
            KeyValue::new(LOG_SEQ_KEY.to_owned(), seq.to_string()),
            KeyValue::new(
                TRUNCATED_KEY.to_owned(),
                serde_json::to_string(&self.truncated)?,
            ),
        ];
        write_atomically(&self.dir.join("state.parquet"), &batch, meta)
    }
}

impl Store for Analytics {
    fn apply(&mut self, batch: &[Change]) -> Result<usize> {
        let mut applied = 0;
        for c in batch {
            let tp = (c.topic.clone(), c.partition);
            if self.written.get(&tp).is_some_and(|&o| c.offset <= o) {
                continue; // already in a log file
            }
            self.written.insert(tp, c.offset);
            let row = match &c.kind {
                ChangeKind::Tombstone => continue,
                ChangeKind::Upsert { row } => Some(row.to_string()),
                ChangeKind::Delete | ChangeKind::Truncate => None,
            };
            let r = LogRow {
                table: c.table.clone(),
                key: c.key.clone(),
                position: c.position.clone(),
                op: c.op.clone(),
                ts_ms: c.ts_ms,
                row,
                topic: c.topic.clone(),
                partition: c.partition,
                offset: c.offset,
            };
            applied += usize::from(self.apply_state(&r));
            self.buffer.push(r);
        }
        Ok(applied)
    }

    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let b = std::mem::take(&mut self.buffer);
        let text =
            |values: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from_iter_values(values)) };
        let batch = RecordBatch::try_new(
            log_schema(),
            vec![
                text(b.iter().map(|r| r.table.as_str()).collect()),
                text(b.iter().map(|r| r.key.as_str()).collect()),
                text(b.iter().map(|r| r.position.as_str()).collect()),
                text(b.iter().map(|r| r.op.as_str()).collect()),
                Arc::new(Int64Array::from_iter_values(b.iter().map(|r| r.ts_ms))),
                Arc::new(StringArray::from(
                    b.iter().map(|r| r.row.as_deref()).collect::<Vec<_>>(),
                )),
                text(b.iter().map(|r| r.topic.as_str()).collect()),
                Arc::new(Int32Array::from_iter_values(b.iter().map(|r| r.partition))),
                Arc::new(Int64Array::from_iter_values(b.iter().map(|r| r.offset))),
            ],
        )?;
        let offsets: BTreeMap<String, i64> = self
            .written
            .iter()
            .map(|((t, p), o)| (format!("{t}/{p}"), *o))
            .collect();
        let seq = self.next_seq;
        let path = self.dir.join("log").join(format!("{seq:010}.parquet"));
        write_atomically(
            &path,
            &batch,
            vec![KeyValue::new(
                OFFSETS_KEY.to_owned(),
                serde_json::to_string(&offsets)?,
            )],
        )?;
        self.next_seq += 1;
        self.write_state(seq)
    }
}

/// Writes one Parquet file under a temporary name, syncs it, renames it
/// into place and syncs the directory.
fn write_atomically(path: &Path, batch: &RecordBatch, meta: Vec<KeyValue>) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(meta))
        .build();
    let mut w = ArrowWriter::try_new(file.try_clone()?, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A Parquet file's footer metadata and record batches.
pub fn read_file(path: &Path) -> Result<(BTreeMap<String, String>, Vec<RecordBatch>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading {}", path.display()))?;
    let meta = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
    Ok((meta, batches))
}

fn string_column(b: &RecordBatch, i: usize) -> Result<&StringArray> {
    b.column(i)
        .as_any()
        .downcast_ref::<StringArray>()
        .with_context(|| format!("column {i} is not text"))
}

/// The change log rows of one log file's batches.
pub fn log_rows(batches: &[RecordBatch]) -> Result<Vec<LogRow>> {
    let mut out = Vec::new();
    for b in batches {
        let s = |i| string_column(b, i);
        let int64 = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .context("not an int64 column")
        };
        let (table, key, position, op, row, topic) = (s(0)?, s(1)?, s(2)?, s(3)?, s(5)?, s(6)?);
        let (ts, offset) = (int64(4)?, int64(8)?);
        let partition = b
            .column(7)
            .as_any()
            .downcast_ref::<Int32Array>()
            .context("partition is not int32")?;
        for i in 0..b.num_rows() {
            out.push(LogRow {
                table: table.value(i).to_owned(),
                key: key.value(i).to_owned(),
                position: position.value(i).to_owned(),
                op: op.value(i).to_owned(),
                ts_ms: ts.value(i),
                row: (!row.is_null(i)).then(|| row.value(i).to_owned()),
                topic: topic.value(i).to_owned(),
                partition: partition.value(i),
                offset: offset.value(i),
            });
        }
    }
    Ok(out)
}

/// The whole change log under `dir`, in file order.
pub fn read_log(dir: &Path) -> Result<Vec<LogRow>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("log"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(log_rows(&read_file(&f)?.1)?);
    }
    Ok(out)
}

/// The current-state view under `dir`: (table, key) → row.
pub fn read_state(dir: &Path) -> Result<BTreeMap<(String, String), Json>> {
    let mut out = BTreeMap::new();
    let path = dir.join("state.parquet");
    if !path.exists() {
        return Ok(out);
    }
    for b in read_file(&path)?.1 {
        let (t, k, r) = (
            string_column(&b, 0)?,
            string_column(&b, 1)?,
            string_column(&b, 3)?,
        );
        for i in 0..b.num_rows() {
            out.insert(
                (t.value(i).to_owned(), k.value(i).to_owned()),
                serde_json::from_str(r.value(i))?,
            );
        }
    }
    Ok(out)
}
