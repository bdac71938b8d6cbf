//! Snapshots: the current rows of the captured tables as `op = "r"`
//! events, handed off to the change stream with no gap and no duplicate.
//!
//! What is read is a list of parts ([`SnapTable`]): a captured table, or
//! each leaf partition of a captured partitioned table (emitted under the
//! root's shape and topic when the publication publishes via the root).
//! Two ways to read, one unit of progress (a ctid chunk of a part — whole
//! pages, or line pointers of one page for tables of very large rows —
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

use crate::config::{SnapshotConfig, TableName, quote_ident};
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

/// One relation to read for a captured table, as the catalog describes it
/// now: the table itself, or one leaf partition of a partitioned table.
/// It is the unit of progress ([`progress::TableProgress`]).
#[derive(Debug)]
pub struct SnapTable {
    /// The relation read (`COPY … FROM ONLY name`): a plain table, or a leaf
    /// partition of [`SnapTable::captured`].
    pub name: TableName,
    /// The `postgres.tables` entry this belongs to.
    pub captured: TableName,
    /// `schema.table` of [`SnapTable::name`]: the progress and metrics label.
    pub label: Arc<str>,
    /// The shape and topic rows are emitted under: the partition root's
    /// when the publication publishes via the root (as the stream then
    /// does), the relation's own otherwise.
    pub relation: Arc<RelationVersion>,
    /// Heap pages now (`pg_relation_size / block_size`).
    pub pages: u64,
    /// `pg_class.reltuples`, for progress estimates (-1: never analysed).
    pub estimated_rows: i64,
    /// `pg_table_size`: heap and TOAST bytes, to size chunks.
    pub bytes: u64,
    /// Line pointers a heap page holds on this server
    /// (`MaxHeapTuplesPerPage`: `(block_size - 24) / 28`).
    pub page_items: u64,
    /// Column positions of the event key (replica identity columns); empty
    /// for a table without one (insert-only, or `REPLICA IDENTITY FULL`
    /// without a primary key).
    pub key_columns: Vec<usize>,
    /// `SELECT` list in the emitted shape's column order.
    select_list: String,
}

/// Relation versions built from the catalog are numbered apart from the
/// stream's (which count from 1), so the writer keeps a plan for each;
/// identical shapes register the identical schema, under the same id.
const CATALOG_SHAPE: u64 = 0;

/// A relation to read, before its shape is known.
struct Part {
    name: TableName,
    oid: u32,
    identity: String,
    pages: i64,
    estimated_rows: i64,
    bytes: i64,
    block_size: i64,
}

impl SnapTable {
    /// The relations to read for captured table `name`: the table itself,
    /// or, for a partitioned table, each of its leaf partitions (a
    /// partitioned table has no rows of its own: `FROM ONLY` it reads
    /// nothing). With `via_root` (the publication's
    /// `publish_via_partition_root`) every partition's rows take the
    /// root's shape, as its changes do in the stream; without it each
    /// partition is a table of its own. Foreign-table partitions are left
    /// out: pgoutput does not publish them either.
    pub async fn describe(
        catalog: &Catalog,
        name: &TableName,
        via_root: bool,
    ) -> Result<Vec<SnapTable>, SnapshotError> {
        let q = |source| PgError::Query {
            what: "snapshot table description",
            source,
        };
        let row = catalog
            .client()
            .query_opt(
                "SELECT c.oid, c.relkind::text, c.relreplident::text,
                        (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint,
                        c.reltuples::bigint, pg_table_size(c.oid), current_setting('block_size')::bigint
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2",
                &[&name.schema, &name.table],
            )
            .await
            .map_err(q)?
            .ok_or_else(|| SnapshotError::NoSuchTable {
                table: name.to_string(),
            })?;
        let root = Part {
            name: name.clone(),
            oid: row.get(0),
            identity: row.get(2),
            pages: row.get(3),
            estimated_rows: row.get(4),
            bytes: row.get(5),
            block_size: row.get(6),
        };
        let kind: String = row.get(1);
        if kind != "p" {
            let relation = shape(catalog, &root).await?;
            return Ok(vec![SnapTable::new(name, root, relation)]);
        }
        let leaves: Vec<Part> = catalog
            .client()
            .query(
                "SELECT n.nspname::text, c.relname::text, c.oid, c.relreplident::text,
                        (pg_relation_size(c.oid) / current_setting('block_size')::bigint)::bigint,
                        c.reltuples::bigint, pg_table_size(c.oid), current_setting('block_size')::bigint
                   FROM pg_partition_tree($1::oid::regclass) t
                   JOIN pg_class c ON c.oid = t.relid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE t.isleaf AND c.relkind = 'r'
                  ORDER BY n.nspname, c.relname",
                &[&root.oid],
            )
            .await
            .map_err(q)?
            .iter()
            .map(|r| Part {
                name: TableName {
                    schema: r.get(0),
                    table: r.get(1),
                },
                oid: r.get(2),
                identity: r.get(3),
                pages: r.get(4),
                estimated_rows: r.get(5),
                bytes: r.get(6),
                block_size: r.get(7),
            })
            .collect();
        let root_shape = if via_root {
            Some(shape(catalog, &root).await?)
        } else {
            None
        };
        let mut parts = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            let relation = match &root_shape {
                Some(s) => s.clone(),
                None => shape(catalog, &leaf).await?,
            };
            parts.push(SnapTable::new(name, leaf, relation));
        }
        Ok(parts)
    }

    fn new(captured: &TableName, part: Part, shape: Shape) -> SnapTable {
        SnapTable {
            label: Arc::from(part.name.to_string().as_str()),
            name: part.name,
            captured: captured.clone(),
            relation: shape.relation,
            pages: part.pages.max(0) as u64,
            estimated_rows: part.estimated_rows,
            bytes: part.bytes.max(0) as u64,
            // PageHeaderData is 24 bytes; each tuple takes at least a
            // 24-byte header (MAXALIGNed) and a 4-byte line pointer.
            page_items: (part.block_size.max(32) as u64 - 24) / 28,
            key_columns: shape.key_columns,
            select_list: shape.select_list,
        }
    }

    /// The key of `tuple` (text values of the key columns).
    pub fn key_of(&self, tuple: &Tuple) -> Vec<Option<bytes::Bytes>> {
        key_values(&self.key_columns, tuple)
    }

    /// Whether rows can be told apart by key; without one, the watermark
    /// windows tell a row's versions apart by transaction id instead.
    pub fn has_key(&self) -> bool {
        !self.key_columns.is_empty()
    }
}

/// A relation's shape as pgoutput describes it, shared by the parts read
/// under it.
#[derive(Clone)]
struct Shape {
    relation: Arc<RelationVersion>,
    key_columns: Vec<usize>,
    select_list: String,
}

/// Reads `part`'s shape the way pgoutput describes it: columns in `attnum`
/// order without dropped and generated ones, key columns from the replica
/// identity (the primary key under DEFAULT and FULL).
async fn shape(catalog: &Catalog, part: &Part) -> Result<Shape, SnapshotError> {
    let q = |source| PgError::Query {
        what: "snapshot table description",
        source,
    };
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
            &[&part.oid, &part.identity],
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
        oid: part.oid,
        schema: part.name.schema.clone(),
        name: part.name.table.clone(),
        replica_identity: match part.identity.as_str() {
            "n" => ReplicaIdentity::Nothing,
            "f" => ReplicaIdentity::Full,
            "i" => ReplicaIdentity::Index,
            _ => ReplicaIdentity::Default,
        },
        columns: cols,
    };
    Ok(Shape {
        relation: Arc::new(RelationVersion {
            relation,
            version: CATALOG_SHAPE,
            nullable,
            defaults,
            custom_types,
        }),
        key_columns,
        select_list,
    })
}

/// The parts to read for every captured table (`postgres.tables`), in
/// that order.
pub async fn describe_all(
    cfg: &crate::config::ConnectorConfig,
    catalog: &Catalog,
) -> Result<Vec<Arc<SnapTable>>, SnapshotError> {
    let mut parts = Vec::new();
    for t in &cfg.postgres.tables {
        for part in SnapTable::describe(catalog, t, cfg.postgres.publish_via_partition_root).await?
        {
            parts.push(Arc::new(part));
        }
    }
    Ok(parts)
}

/// Pairs a stored snapshot's progress with the parts the catalog
/// describes now (`parts`, from [`describe_all`]), in the progress's order.
/// An entry of a part that is gone (its table no longer captured, a
/// partition detached or dropped) is dropped with a warning. An entry that
/// names a partitioned table itself — written by a siphon that read a
/// partitioned table `FROM ONLY` the root, which held no rows — is planned
/// again per partition, keeping what it is read as of.
pub fn align(
    connector: &str,
    progress: SnapshotProgress,
    parts: &[Arc<SnapTable>],
    cfg: &SnapshotConfig,
) -> (Vec<Arc<SnapTable>>, SnapshotProgress) {
    let mut tables = Vec::new();
    let mut aligned = SnapshotProgress::default();
    let mut taken = std::collections::HashSet::new();
    for entry in progress.tables {
        if let Some(part) = parts.iter().find(|p| *p.label == *entry.table) {
            if taken.insert(Arc::clone(&part.label)) {
                tables.push(Arc::clone(part));
                aligned.tables.push(entry);
            }
            continue;
        }
        let of_root: Vec<&Arc<SnapTable>> = parts
            .iter()
            .filter(|p| p.captured.to_string() == entry.table)
            .collect();
        if of_root.is_empty() {
            tracing::warn!(connector, table = %entry.table, "snapshot progress of a table that is no longer captured (or a partition detached or dropped since) is dropped");
            continue;
        }
        tracing::warn!(connector, table = %entry.table, partitions = of_root.len(), "snapshot progress of a partitioned table read as one table is planned again per partition");
        for part in of_root {
            if taken.insert(Arc::clone(&part.label)) {
                let mut plan = plan_part(part, cfg);
                plan.as_of.clone_from(&entry.as_of);
                plan.initial = entry.initial;
                tables.push(Arc::clone(part));
                aligned.tables.push(plan);
            }
        }
    }
    (tables, aligned)
}

/// A fresh initial snapshot of `parts`: every chunk pending.
pub fn plan(parts: &[Arc<SnapTable>], cfg: &SnapshotConfig) -> SnapshotProgress {
    SnapshotProgress {
        tables: parts
            .iter()
            .map(|t| progress::TableProgress {
                initial: true,
                ..plan_part(t, cfg)
            })
            .collect(),
    }
}

/// `part`'s chunks: `snapshot.chunk_pages` pages each, fewer when the
/// table's size (TOAST included) says that many pages hold more than
/// `snapshot.chunk_max_bytes` of rows, and parts of one page when even
/// one page does. An estimate (from `pg_table_size` and `reltuples`), not
/// a hard limit: rows are not all the same size.
pub fn plan_part(part: &SnapTable, cfg: &SnapshotConfig) -> progress::TableProgress {
    let label = part.label.to_string();
    let pages = part.pages.max(1);
    let per_page = part.bytes / pages;
    if per_page.saturating_mul(cfg.chunk_pages) <= cfg.chunk_max_bytes {
        return progress::TableProgress::plan(label, part.pages, cfg.chunk_pages);
    }
    if per_page <= cfg.chunk_max_bytes {
        let chunk_pages = (cfg.chunk_max_bytes / per_page.max(1)).clamp(1, cfg.chunk_pages);
        return progress::TableProgress::plan(label, part.pages, chunk_pages);
    }
    // Rows per page: from the statistics, or, never analysed, as if the
    // page were full.
    let rows_per_page = match u64::try_from(part.estimated_rows) {
        Ok(rows) if rows > 0 => rows.div_ceil(pages),
        _ => part.page_items,
    };
    let per_row = (per_page / rows_per_page.max(1)).max(1);
    let chunk_items = (cfg.chunk_max_bytes / per_row).clamp(1, part.page_items.max(1));
    progress::TableProgress::plan_items(label, part.pages, chunk_items, part.page_items)
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
    /// With [`read_chunk`]'s `with_xmin`: each row's `xmin` (the
    /// transaction that wrote this version of it), in `rows` order.
    pub xmins: Vec<u32>,
}

/// Reads chunk `chunk` of `table` (ctid range `range`) with COPY text, in
/// whatever transaction `client` is in. With `as_of`, rows written after
/// that snapshot are left out; with `with_xmin`, each row's `xmin` comes
/// along.
pub async fn read_chunk(
    client: &tokio_postgres::Client,
    table: &SnapTable,
    chunk: u64,
    range: &str,
    as_of: Option<&progress::PgSnapshot>,
    with_xmin: bool,
) -> Result<ChunkRows, SnapshotError> {
    let read_err = |source| SnapshotError::Read {
        table: table.label.to_string(),
        chunk,
        source,
    };
    let mut read =
        read_chunk_plain(client, table, chunk, range, as_of.is_some() || with_xmin).await?;
    let Some(as_of) = as_of else {
        return Ok(read);
    };
    let next: String = client
        .query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[])
        .await
        .map_err(read_err)?
        .get(0);
    let next: u64 = next.parse().unwrap_or(u64::MAX);
    let mut xmins = std::mem::take(&mut read.xmins).into_iter();
    read.rows.retain(|_| {
        let xmin = xmins.next();
        let keep = !xmin.is_some_and(|x| as_of.written_after(x, next));
        if keep && with_xmin {
            read.xmins.push(xmin.unwrap_or(0));
        }
        keep
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
    let parse_err = |source| SnapshotError::Parse {
        table: table.label.to_string(),
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
        bytes += parser.push(data, &mut rows).map_err(parse_err)?;
    }
    parser.finish().map_err(parse_err)?;
    bytes += rows.len() * 32 * table.relation.relation.columns.len().max(1);
    let mut xmins = Vec::new();
    if with_xmin {
        xmins.reserve(rows.len());
        for row in &mut rows {
            // xmin is an `xid`: its text is a decimal u32. One that does
            // not parse counts as 0, "older than everything": the row is
            // kept (a duplicate state is better than a missing row).
            let xmin = match row.first() {
                Some(TupleValue::Text(b)) => {
                    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok())
                }
                _ => None,
            };
            xmins.push(xmin.unwrap_or(0));
            row.remove(0);
        }
    }
    Ok(ChunkRows { rows, bytes, xmins })
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

#[cfg(test)]
mod tests {
    use super::*;
    use progress::TableProgress;

    fn name(s: &str) -> TableName {
        let (schema, table) = s.split_once('.').expect("schema.table");
        TableName {
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// Part `part` of captured table `captured`, `pages` pages.
    fn part(captured: &str, part: &str, pages: i64) -> Arc<SnapTable> {
        let shape = Shape {
            relation: Arc::new(RelationVersion {
                relation: Relation {
                    oid: 1,
                    schema: "public".into(),
                    name: "t".into(),
                    replica_identity: ReplicaIdentity::Default,
                    columns: Vec::new(),
                },
                version: CATALOG_SHAPE,
                nullable: Vec::new(),
                defaults: Vec::new(),
                custom_types: Default::default(),
            }),
            key_columns: Vec::new(),
            select_list: String::new(),
        };
        let p = Part {
            name: name(part),
            oid: 2,
            identity: "d".into(),
            pages,
            estimated_rows: 0,
            bytes: pages * 8192,
            block_size: 8192,
        };
        Arc::new(SnapTable::new(&name(captured), p, shape))
    }

    fn snapshot_config(chunk_pages: u64) -> SnapshotConfig {
        SnapshotConfig {
            mode: crate::config::SnapshotMode::Initial,
            max_threads: 1,
            chunk_pages,
            chunk_max_bytes: 16 << 20,
            signal_table: None,
        }
    }

    /// A part of `pages` pages holding `bytes` (heap and TOAST) in `rows`.
    fn sized(pages: i64, bytes: i64, rows: i64) -> SnapTable {
        let p = part("public.t", "public.t", pages);
        SnapTable {
            bytes: bytes as u64,
            estimated_rows: rows,
            ..Arc::into_inner(p).expect("one owner")
        }
    }

    #[test]
    fn chunks_of_large_rows_are_sized_by_bytes_down_to_parts_of_a_page() {
        let cfg = snapshot_config(256);
        // Ordinary rows: 256 pages of 8 KiB, well under 16 MiB.
        let t = plan_part(&sized(10_000, 10_000 * 8192, 500_000), &cfg);
        assert_eq!((t.chunk_pages, t.chunk_items, t.chunks), (256, 0, 40));
        // 1 MiB per page (TOASTed values): 16 pages a chunk.
        let t = plan_part(&sized(1_000, 1_000 << 20, 10_000), &cfg);
        assert_eq!((t.chunk_pages, t.chunk_items), (16, 0));
        // 100 rows of 1 MiB on each of 2 pages: 16 line pointers a chunk,
        // 19 chunks a page (291 line pointers).
        let t = plan_part(&sized(2, 200 << 20, 200), &cfg);
        assert_eq!((t.chunk_pages, t.chunk_items, t.page_items), (1, 16, 291));
        assert_eq!(t.chunks, 2 * 19);
        assert_eq!(
            t.ctid_range(0),
            "ctid >= '(0,1)'::tid AND ctid < '(0,17)'::tid"
        );
        assert_eq!(
            t.ctid_range(18),
            "ctid >= '(0,289)'::tid AND ctid < '(1,0)'::tid"
        );
        assert_eq!(
            t.ctid_range(19),
            "ctid >= '(1,1)'::tid AND ctid < '(1,17)'::tid"
        );
        assert_eq!(t.ctid_range(37), "ctid >= '(1,289)'::tid");
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn stored_progress_is_paired_with_the_parts_in_its_own_order() {
        let parts = vec![
            part("public.a", "public.a", 10),
            part("public.m", "public.m_1", 4),
            part("public.m", "public.m_2", 8),
        ];
        let mut m1 = TableProgress::plan("public.m_1".into(), 4, 2);
        m1.mark_done(0, 5);
        let stored = SnapshotProgress {
            tables: vec![
                m1.clone(),
                TableProgress::plan("public.gone".into(), 3, 2),
                TableProgress::plan("public.a".into(), 10, 2),
            ],
        };
        let (tables, progress) = align("c", stored, &parts, &snapshot_config(2));
        let labels: Vec<&str> = tables.iter().map(|t| &*t.label).collect();
        assert_eq!(labels, ["public.m_1", "public.a"]);
        assert_eq!(progress.tables[0], m1, "progress kept as stored");
        assert_eq!(progress.tables.len(), 2);
    }

    #[test]
    fn a_partitioned_root_read_as_one_table_is_planned_again_per_partition() {
        let parts = vec![
            part("public.m", "public.m_1", 4),
            part("public.m", "public.m_2", 8),
        ];
        // An older siphon planned the root itself (no pages: one chunk),
        // read nothing from it and marked it done.
        let mut root = TableProgress::plan("public.m".into(), 0, 2);
        root.as_of = Some("10:12:".into());
        root.mark_done(0, 0);
        let (tables, progress) = align(
            "c",
            SnapshotProgress { tables: vec![root] },
            &parts,
            &snapshot_config(2),
        );
        assert_eq!(tables.len(), 2);
        assert_eq!(progress.tables[0].table, "public.m_1");
        assert_eq!(progress.tables[0].chunks, 2);
        assert_eq!(progress.tables[1].chunks, 4);
        assert!(
            progress
                .tables
                .iter()
                .all(|t| t.as_of.as_deref() == Some("10:12:"))
        );
        assert!(!progress.complete(), "every partition is read");
    }
}
