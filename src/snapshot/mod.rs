//! Snapshots: the current rows of the captured tables as `op = "r"`
//! events, handed off to the change stream with no gap and no duplicate.
//!
//! Two ways to read, one unit of progress (a ctid chunk of a table,
//! [`progress`]):
//!
//! - **Initial** ([`initial`]): the slot is created with an exported
//!   snapshot; `max_threads` connections import it
//!   (`SET TRANSACTION SNAPSHOT`) and read chunks in parallel with
//!   `COPY (SELECT … WHERE ctid …) TO STDOUT`. Every row is the table as of
//!   the slot's consistent point, so streaming from the slot afterwards
//!   continues exactly where the snapshot ends. Replication starts only
//!   when every chunk is written.
//! - **Watermark windows** ([`incremental`], DBLog): while streaming, one
//!   chunk at a time between a low and a high watermark
//!   (`pg_logical_emit_message`) that come back through the stream; rows
//!   whose key changed inside the window are dropped (the stream carries
//!   the newer state), the rest are emitted at the high watermark. This
//!   finishes a snapshot interrupted by a crash (the exported snapshot died
//!   with its connection), snapshots when the slot already exists, and runs
//!   incremental snapshots asked for by a signal.
//!
//! Invariant: a chunk's rows and the progress that marks it done are
//! written in one Kafka transaction (the writer never splits a chunk), so
//! after any crash a chunk is either entirely visible and done or entirely
//! invisible and read again.

pub mod copy;
pub mod incremental;
pub mod initial;
pub mod progress;

use std::sync::Arc;

use futures_util::StreamExt;

use crate::config::{TableName, quote_ident};
use crate::event::{
    ChangeEvent, Position, Relation, RelationColumn, RelationVersion, ReplicaIdentity, Tuple,
    TupleValue,
};
use crate::postgres::PgError;
use crate::postgres::catalog::Catalog;
use crate::telemetry::metrics::metrics;
use progress::SnapshotProgress;

/// `source.snapshot` values (Debezium's).
pub mod marker {
    pub const TRUE: &str = "true";
    pub const FIRST: &str = "first";
    pub const FIRST_IN_TABLE: &str = "first_in_data_collection";
    pub const LAST_IN_TABLE: &str = "last_in_data_collection";
    pub const LAST: &str = "last";
    pub const INCREMENTAL: &str = "incremental";
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("cannot read chunk {chunk} of table {table}")]
    Read {
        table: String,
        chunk: u64,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot parse the COPY output of table {table}")]
    Parse {
        table: String,
        #[source]
        source: copy::CopyError,
    },
    #[error("cannot {what} for snapshot chunks")]
    Watermark {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("table {table} to snapshot does not exist")]
    NoSuchTable { table: String },
    #[error("a snapshot worker of connector {connector} stopped unexpectedly")]
    WorkerGone { connector: String },
}

impl SnapshotError {
    pub fn class(&self) -> crate::error::ErrorClass {
        use crate::error::ErrorClass;
        match self {
            SnapshotError::Postgres(e) => e.class(),
            SnapshotError::Read { source, .. } | SnapshotError::Watermark { source, .. } => {
                crate::postgres::classify_sqlstate(source.code())
            }
            SnapshotError::Parse { .. } | SnapshotError::NoSuchTable { .. } => ErrorClass::Fatal,
            SnapshotError::WorkerGone { .. } => ErrorClass::Transient,
        }
    }
}

/// A table to snapshot, as the catalog describes it now.
#[derive(Debug)]
pub struct SnapTable {
    pub name: TableName,
    /// `schema.table`, the progress and metrics label.
    pub label: Arc<str>,
    pub relation: Arc<RelationVersion>,
    /// Heap pages now (`pg_relation_size / block_size`).
    pub pages: u64,
    /// `pg_class.reltuples`, for progress estimates (-1: never analysed).
    pub estimated_rows: i64,
    /// Column positions of the event key (replica identity columns).
    pub key_columns: Vec<usize>,
    /// `SELECT` list in column order.
    select_list: String,
}

/// Relation versions built from the catalog are numbered apart from the
/// stream's (which count from 1), so the writer keeps a plan for each;
/// identical shapes register the identical schema, under the same id.
const CATALOG_SHAPE: u64 = 0;

impl SnapTable {
    /// Reads the table's shape the way pgoutput describes it: columns in
    /// `attnum` order without dropped and generated ones, key columns from
    /// the replica identity (the primary key under DEFAULT and FULL).
    pub async fn describe(catalog: &Catalog, name: &TableName) -> Result<SnapTable, SnapshotError> {
        let q = |source| PgError::Query {
            what: "snapshot table description",
            source,
        };
        let row = catalog
            .client()
            .query_opt(
                "SELECT c.oid, c.relreplident::text,
                        (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint,
                        c.reltuples::bigint
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2",
                &[&name.schema, &name.table],
            )
            .await
            .map_err(q)?
            .ok_or_else(|| SnapshotError::NoSuchTable {
                table: name.to_string(),
            })?;
        let oid: u32 = row.get(0);
        let identity: String = row.get(1);
        let pages: i64 = row.get(2);
        let estimated_rows: i64 = row.get(3);
        let columns = catalog
            .client()
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod, NOT a.attnotnull,
                        COALESCE(a.attnum = ANY ((SELECT i.indkey::int2[] FROM pg_index i
                                                   WHERE i.indrelid = a.attrelid
                                                     AND CASE WHEN $2 = 'i' THEN i.indisreplident ELSE i.indisprimary END
                                                   LIMIT 1)::int2[]), false),
                        CASE WHEN a.atthasdef THEN pg_get_expr(d.adbin, d.adrelid) END
                   FROM pg_attribute a
                   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                  ORDER BY a.attnum",
                &[&oid, &identity],
            )
            .await
            .map_err(q)?;
        let cols: Vec<RelationColumn> = columns
            .iter()
            .map(|r| RelationColumn {
                is_key: r.get(4),
                name: r.get(0),
                type_oid: r.get(1),
                type_modifier: r.get(2),
            })
            .collect();
        let nullable = columns.iter().map(|r| r.get(3)).collect();
        let defaults = columns.iter().map(|r| r.get(5)).collect();
        let type_oids: Vec<u32> = cols.iter().map(|c| c.type_oid).collect();
        let custom_types = catalog.custom_types(&type_oids).await?;
        let select_list = cols
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let key_columns = (0..cols.len()).filter(|&i| cols[i].is_key).collect();
        let relation = Relation {
            oid,
            schema: name.schema.clone(),
            name: name.table.clone(),
            replica_identity: match identity.as_str() {
                "n" => ReplicaIdentity::Nothing,
                "f" => ReplicaIdentity::Full,
                "i" => ReplicaIdentity::Index,
                _ => ReplicaIdentity::Default,
            },
            columns: cols,
        };
        Ok(SnapTable {
            name: name.clone(),
            label: Arc::from(name.to_string().as_str()),
            relation: Arc::new(RelationVersion {
                relation,
                version: CATALOG_SHAPE,
                nullable,
                defaults,
                custom_types,
            }),
            pages: pages.max(0) as u64,
            estimated_rows,
            key_columns,
            select_list,
        })
    }

    /// The key of `tuple` (text values of the key columns).
    pub fn key_of(&self, tuple: &Tuple) -> Vec<Option<bytes::Bytes>> {
        key_values(&self.key_columns, tuple)
    }
}

/// The text values of `columns` in `tuple` (None for NULL or unsent).
pub fn key_values(columns: &[usize], tuple: &Tuple) -> Vec<Option<bytes::Bytes>> {
    columns
        .iter()
        .map(|&i| match tuple.get(i) {
            Some(TupleValue::Text(b) | TupleValue::Binary(b)) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

/// The rows of one chunk.
pub struct ChunkRows {
    pub rows: Vec<Tuple>,
    /// Bytes of row data (for the channel's byte budget).
    pub bytes: usize,
}

/// Reads chunk `chunk` of `table` (ctid range `range`) with COPY text, in
/// whatever transaction `client` is in. With `as_of`, rows written after
/// that snapshot are left out.
pub async fn read_chunk(
    client: &tokio_postgres::Client,
    table: &SnapTable,
    chunk: u64,
    range: &str,
    as_of: Option<&progress::PgSnapshot>,
) -> Result<ChunkRows, SnapshotError> {
    let Some(as_of) = as_of else {
        return read_chunk_plain(client, table, chunk, range, false).await;
    };
    let mut read = read_chunk_plain(client, table, chunk, range, true).await?;
    let next: String = client
        .query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[])
        .await
        .map_err(|source| SnapshotError::Read {
            table: table.label.to_string(),
            chunk,
            source,
        })?
        .get(0);
    let next: u64 = next.parse().unwrap_or(u64::MAX);
    read.rows.retain_mut(|row| {
        let xmin = match row.first() {
            Some(TupleValue::Text(b)) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
            _ => None,
        };
        row.remove(0);
        // A row whose xmin cannot be read is kept: a duplicate state is
        // better than a missing row.
        !xmin.is_some_and(|x| as_of.written_after(x, next))
    });
    Ok(read)
}

async fn read_chunk_plain(
    client: &tokio_postgres::Client,
    table: &SnapTable,
    chunk: u64,
    range: &str,
    with_xmin: bool,
) -> Result<ChunkRows, SnapshotError> {
    let read_err = |source| SnapshotError::Read {
        table: table.label.to_string(),
        chunk,
        source,
    };
    let list = match (with_xmin, table.select_list.is_empty()) {
        (false, _) => table.select_list.clone(),
        (true, true) => "xmin".to_owned(),
        (true, false) => format!("xmin, {}", table.select_list),
    };
    let sql = format!(
        "COPY (SELECT {list} FROM ONLY {} WHERE {range}) TO STDOUT",
        table.name.quoted()
    );
    let stream = client.copy_out(sql.as_str()).await.map_err(read_err)?;
    futures_util::pin_mut!(stream);
    let mut parser =
        copy::CopyParser::new(table.relation.relation.columns.len() + usize::from(with_xmin));
    let mut rows = Vec::new();
    let mut bytes = 0;
    while let Some(data) = stream.next().await {
        let data = data.map_err(read_err)?;
        bytes += parser
            .push(data, &mut rows)
            .map_err(|source| SnapshotError::Parse {
                table: table.label.to_string(),
                source,
            })?;
    }
    parser.finish().map_err(|source| SnapshotError::Parse {
        table: table.label.to_string(),
        source,
    })?;
    bytes += rows.len() * 32 * table.relation.relation.columns.len().max(1);
    Ok(ChunkRows { rows, bytes })
}

/// What the writer gets for one chunk: its rows as events, the
/// `source.snapshot` markers, and the progress to store with them.
#[derive(Debug)]
pub struct SnapshotChunk {
    pub table: Arc<str>,
    pub events: Vec<ChangeEvent>,
    /// Marker of every row but those below.
    pub marker: &'static str,
    pub first_marker: Option<&'static str>,
    pub last_marker: Option<&'static str>,
    /// The snapshot's progress including this chunk; `None` when this
    /// chunk completes the snapshot.
    pub progress: Option<SnapshotProgress>,
    /// For chunks emitted inside the stream (watermark windows): the
    /// position of the last row, which the offset records.
    pub position: Option<Position>,
}

impl SnapshotChunk {
    /// The marker of row `i`.
    pub fn marker_of(&self, i: usize) -> &'static str {
        if i + 1 == self.events.len()
            && let Some(m) = self.last_marker
        {
            return m;
        }
        if i == 0
            && let Some(m) = self.first_marker
        {
            return m;
        }
        self.marker
    }
}

/// Logs and records a table's progress after a chunk is handed to the writer.
pub(crate) fn report_progress(
    connector: &str,
    table: &SnapTable,
    rows_done: u64,
    chunks_left: u64,
) {
    let m = metrics();
    m.snapshot_rows_estimated
        .with_label_values(&[connector, &table.label])
        .set(table.estimated_rows.max(rows_done as i64));
    m.snapshot_chunks_remaining
        .with_label_values(&[connector, &table.label])
        .set(chunks_left as i64);
    if !chunks_left.is_multiple_of(16) {
        return;
    }
    tracing::info!(
        connector,
        table = %table.label,
        rows_done,
        rows_estimated = table.estimated_rows.max(rows_done as i64),
        chunks_left,
        "snapshot progress"
    );
}
