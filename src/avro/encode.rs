//! The hot path: Avro binary for an event's key and Debezium-style value,
//! written straight from the tuple's text slices.
//!
//! An [`EncodePlan`] is built once per relation version (schemas, per-column
//! converters, pre-encoded constant parts); encoding an event then appends
//! bytes to a caller-owned buffer with no `apache_avro::types::Value` tree
//! and no per-column heap allocation (numerics wider than 38 digits aside).
//! The caller writes the Confluent header (magic byte 0, 4-byte schema id)
//! before calling; this module writes only the Avro body.
//!
//! Invariants:
//! - Fields are written in exactly the order `schema.rs` declares them;
//!   the two files change together.
//! - On error the buffer is truncated back to where this call started, so
//!   a failed event never leaves half a record behind.
//! - Errors name the table and column and what was wrong, never the value.
//!
//! Debezium behaviours mirrored (observed on Debezium 3.6.3 with pgoutput):
//! - insert/snapshot read: `before` null, `after` the new row.
//! - update: `after` the new row; `before` the old row when PostgreSQL sent
//!   one (`REPLICA IDENTITY FULL`, or a key-only old row when the key
//!   changed), else null.
//! - delete: `before` the old row, `after` null.
//! - key-only old rows (`K`, `REPLICA IDENTITY DEFAULT`/`INDEX`): key columns
//!   carry their values, nullable non-key columns are null, and NOT NULL
//!   non-key columns get the type's zero value ("", 0, false, epoch…)
//!   because Avro cannot hold null there — exactly what Debezium writes.
//! - primary-key change: Debezium emits a delete (key = old key), a
//!   tombstone and a create (key = new key) instead of one update. That split is the
//!   writer's job: [`EncodePlan::key_changed`] tells it when, and the two
//!   halves are ordinary delete and create events for this encoder.
//! - an unchanged TOAST value in the new row is taken from the full old row
//!   when there is one. Otherwise, under `unchanged_toast = "placeholder"`,
//!   strings and bytes get Debezium's placeholder
//!   `__debezium_unavailable_value` and other types null (an error when the
//!   column is NOT NULL).
//!
//! Where siphon differs by default (`unchanged_toast = "null"`, see
//! `docs/types.md`): such a value is written as null (the plan made every
//! toastable non-key column nullable) and the envelope's last field,
//! `unavailable_columns`, lists the `after` fields concerned. Counting
//! happens while the row is written; the names are written only when the
//! count is non-zero, so events without unchanged values pay one byte.
//! - truncate: `before` and `after` null, op `t`, no key.
//! - `source.sequence` is a JSON array of two decimal LSN strings, e.g.
//!   `["22374900","22374784"]`. Debezium puts the end LSN of the previous
//!   transaction's commit in the first slot (`null` until it has seen one)
//!   and the event's LSN in the second. siphon writes the commit LSN of the
//!   event's own transaction first: the event alone does not know the
//!   previous commit, and this choice orders events the same way (commit
//!   order, then LSN within the transaction) while making a re-sent event
//!   byte-identical to the first send, which exactly-once replay relies on.
//!   Other `source` fields: `ts_ms`/`ts_us`/`ts_ns` are the commit time,
//!   `txId` the xid, `lsn` the event's LSN, `xmin`/`origin`/`origin_lsn`
//!   null, as Debezium writes them for pgoutput.

use crate::error::ErrorClass;
use crate::event::{ChangeEvent, Lsn, OldTupleKind, Op, Tuple, TupleValue};

use super::modes::{TypeModes, UnchangedToastMode};
use super::projection::{Mask, Projection};
use super::schema::{
    RelationSchemas, SchemaError, SchemaNaming, avro_name, derive_projected, projected_type,
    projection_lists_unavailable,
};
use super::types::{ColumnType, ValueError, fmt_u64};

/// Per-call facts for the envelope that are not in the event.
#[derive(Clone, Copy, Debug)]
pub struct EnvelopeContext<'a> {
    /// siphon's version, written to `source.version`.
    pub connector_version: &'a str,
    /// Debezium's logical name (the topic prefix), `source.name`.
    pub name: &'a str,
    /// The captured database, `source.db`.
    pub db: &'a str,
    /// `source.snapshot`: "false" while streaming.
    pub snapshot: &'a str,
    /// Processing time (µs since the epoch) for the top-level
    /// `ts_ms`/`ts_us`/`ts_ns`.
    pub now_us: i64,
    /// The envelope's `transaction` block; `None` writes null.
    pub transaction: Option<TransactionBlock<'a>>,
}

/// Debezium's `transaction` block of one event (`[transactions]`).
#[derive(Clone, Copy, Debug)]
pub struct TransactionBlock<'a> {
    /// The source transaction's id (`{xid}:{commit_lsn}`).
    pub id: &'a str,
    /// 1-based position among the transaction's events.
    pub total_order: u64,
    /// 1-based position among the transaction's events of this table.
    pub data_collection_order: u64,
}

/// Why an event could not be encoded. Messages name the table and column,
/// never the value.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A column's text is not what its type should print.
    #[error("invalid value in column {column} of {table}")]
    InvalidValue {
        table: String,
        column: String,
        #[source]
        reason: ValueError,
    },
    /// NULL where the catalog said NOT NULL (the relation's nullability is
    /// stale, or PostgreSQL sent something unexpected).
    #[error("null in NOT NULL column {column} of {table}")]
    NullInNotNull { table: String, column: String },
    /// pgoutput sent binary format although siphon asks for text.
    #[error("column {column} of {table} arrived in binary format; siphon requests text format")]
    BinaryValue { table: String, column: String },
    /// An unchanged TOAST value in a NOT NULL column whose type has no
    /// placeholder, with no full old row to take it from.
    #[error(
        "unchanged TOAST value in NOT NULL column {column} of {table} is not available; set REPLICA IDENTITY FULL on {table}"
    )]
    UnavailableToast { table: String, column: String },
    /// A key column's value is an unchanged TOAST value with no old key to
    /// take it from.
    #[error("key column {column} of {table} is an unchanged TOAST value with no old key")]
    UnavailableKey { table: String, column: String },
    /// The tuple does not have one value per relation column.
    #[error("tuple for {table} has {got} columns, the relation has {expected}")]
    ColumnCount {
        table: String,
        expected: usize,
        got: usize,
    },
    /// An event lacks the row its operation needs.
    #[error("{op} event for {table} carries no {which} row")]
    MissingTuple {
        table: String,
        op: &'static str,
        which: &'static str,
    },
    /// [`EncodePlan::encode_key`] on a relation without key columns.
    #[error("{table} has no key columns")]
    NoKey { table: String },
    /// The event was written with a different relation shape than the plan.
    #[error(
        "event for {table} has relation oid {event_oid} version {event_version}, plan is for oid {plan_oid} version {plan_version}"
    )]
    PlanMismatch {
        table: String,
        event_oid: u32,
        event_version: u64,
        plan_oid: u32,
        plan_version: u64,
    },
}

impl EncodeError {
    /// Always fatal: the same change would fail the same way on every retry
    /// (the data or the relation shape must change first).
    pub fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}

/// How to encode one column.
#[derive(Debug)]
struct ColumnPlan {
    /// The PostgreSQL column name, for error messages.
    name: String,
    /// The Avro field name, Avro-encoded (for `unavailable_columns`).
    field: Vec<u8>,
    ty: ColumnType,
    /// Nullable in the `Value` record (key columns: in the key too, the
    /// modes never widen them).
    nullable: bool,
    is_key: bool,
    /// Index of the column in the relation, and so in every tuple.
    source: usize,
    /// Applied to the column's text wherever it is written.
    mask: Option<Mask>,
}

/// Everything needed to encode events of one relation version, computed
/// once when the version appears.
#[derive(Debug)]
pub struct EncodePlan {
    oid: u32,
    version: u64,
    /// `schema.table` as PostgreSQL names it, for error messages.
    table: String,
    schemas: RelationSchemas,
    columns: Vec<ColumnPlan>,
    /// Indexes into `columns` of the key's fields, in the key record's order.
    key_columns: Vec<usize>,
    /// The key's fields, as `columns` but with the catalog's nullability
    /// (the key schema's; a key column chosen by `key_columns` may be one
    /// the value widens for unchanged TOAST values).
    key_plans: Vec<ColumnPlan>,
    /// The key's last field, already Avro-encoded, when the table is routed
    /// (`projection::PHYSICAL_TABLE_FIELD`).
    physical_table: Option<Vec<u8>>,
    /// Columns of the relation (every tuple has this many values).
    relation_columns: usize,
    /// `source.schema` and `source.table`, already Avro-encoded.
    source_schema_table: Vec<u8>,
    /// Unchanged TOAST values without a full old row: null (listed in the
    /// envelope) or Debezium's placeholder.
    unchanged_toast: UnchangedToastMode,
    /// The envelope ends with `unavailable_columns`.
    lists_unavailable: bool,
}

/// Which image of a row fills a `Value` record.
#[derive(Clone, Copy)]
enum RowImage<'a> {
    /// A complete row. Unchanged TOAST values are looked up in `old`.
    Full {
        tuple: &'a Tuple,
        old: Option<(OldTupleKind, &'a Tuple)>,
    },
    /// A key-only old row: non-key columns are missing.
    KeyOnly(&'a Tuple),
}

/// The `before` image of an old row.
fn old_image((kind, tuple): (OldTupleKind, &Tuple)) -> RowImage<'_> {
    match kind {
        OldTupleKind::Full => RowImage::Full { tuple, old: None },
        OldTupleKind::Key => RowImage::KeyOnly(tuple),
    }
}

/// Avro union branch indexes, already zigzag-encoded (branch 1 → 2).
const UNION_NULL: u8 = 0;
const UNION_SECOND: u8 = 2;

impl EncodePlan {
    /// Derives the schemas and column converters for `relation` with the
    /// default handling modes.
    pub fn new(
        relation: &crate::event::RelationVersion,
        naming: &SchemaNaming,
    ) -> Result<EncodePlan, SchemaError> {
        EncodePlan::with_modes(relation, naming, &TypeModes::default())
    }

    /// Derives the schemas and column converters for `relation` under the
    /// connector's handling modes. The modes are resolved here, once per
    /// relation version, into each column's [`ColumnType`] and nullability.
    pub fn with_modes(
        relation: &crate::event::RelationVersion,
        naming: &SchemaNaming,
        modes: &TypeModes,
    ) -> Result<EncodePlan, SchemaError> {
        EncodePlan::with_projection(relation, naming, modes, &Projection::identity(relation))
    }

    /// [`EncodePlan::with_modes`] for the part of `relation` that
    /// `projection` lets out: its columns, masks and key.
    pub fn with_projection(
        relation: &crate::event::RelationVersion,
        naming: &SchemaNaming,
        modes: &TypeModes,
        projection: &Projection,
    ) -> Result<EncodePlan, SchemaError> {
        let schemas = derive_projected(relation, naming, modes, projection)?;
        let rel = &relation.relation;
        let custom = &relation.custom_types;
        let plan_of = |p: &super::projection::ProjectedColumn, in_key: bool| {
            let c = &rel.columns[p.source];
            let nullable = relation.nullable[p.source];
            let mut field = Vec::new();
            write_bytes(&mut field, avro_name(&c.name).as_bytes());
            ColumnPlan {
                name: c.name.clone(),
                field,
                ty: projected_type(relation, p, modes),
                nullable: if in_key {
                    nullable
                } else {
                    modes.value_nullable(nullable, c.is_key, c.type_oid, custom)
                },
                is_key: c.is_key,
                source: p.source,
                mask: p.mask.clone(),
            }
        };
        let key_plans = projection
            .key
            .iter()
            .map(|&k| plan_of(&projection.columns[k], true))
            .collect();
        let columns: Vec<ColumnPlan> = projection
            .columns
            .iter()
            .map(|p| plan_of(p, false))
            .collect();
        let key_columns = projection.key.clone();
        let physical_table = projection.physical_table.as_ref().map(|t| {
            let mut b = Vec::new();
            write_bytes(&mut b, t.as_bytes());
            b
        });
        let mut source_schema_table = Vec::new();
        write_bytes(&mut source_schema_table, rel.schema.as_bytes());
        write_bytes(&mut source_schema_table, rel.name.as_bytes());
        Ok(EncodePlan {
            oid: rel.oid,
            version: relation.version,
            table: format!("{}.{}", rel.schema, rel.name),
            schemas,
            columns,
            key_columns,
            key_plans,
            physical_table,
            relation_columns: rel.columns.len(),
            source_schema_table,
            unchanged_toast: modes.unchanged_toast,
            lists_unavailable: projection_lists_unavailable(relation, modes, projection),
        })
    }

    /// The key schema JSON; `None` when the relation has no key columns
    /// (its events get a null Kafka key).
    pub fn key_schema(&self) -> Option<&str> {
        self.schemas.key.as_deref()
    }

    /// The value (envelope) schema JSON.
    pub fn value_schema(&self) -> &str {
        &self.schemas.value
    }

    /// Names of the columns whose type has no dedicated mapping and travel
    /// as their text form. The caller warns once per column.
    pub fn fallback_columns(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|c| c.ty.is_fallback())
            .map(|c| c.name.as_str())
    }

    /// Appends the Avro key record built from the key columns of `tuple`
    /// (a full row or a key-only old row).
    pub fn encode_key(&self, tuple: &Tuple, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.write_key(tuple, None, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Appends the Kafka key of `event`: the old row's key for deletes, the
    /// new row's otherwise (unchanged TOAST key values taken from the old
    /// key). Returns false, writing nothing, when the event has no key
    /// (relation without key columns, or truncate).
    pub fn encode_event_key(
        &self,
        event: &ChangeEvent,
        out: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        if self.key_columns.is_empty() || event.op == Op::Truncate {
            return Ok(false);
        }
        self.check_relation(event)?;
        let start = out.len();
        let result = match event.op {
            Op::Delete => match &event.old {
                Some((_, old)) => self.write_key(old, None, out),
                None => Err(self.missing(event.op, "old")),
            },
            _ => match &event.new {
                Some(new) => self.write_key(new, event.old.as_ref().map(|(_, t)| t), out),
                None => Err(self.missing(event.op, "new")),
            },
        };
        if result.is_err() {
            out.truncate(start);
        }
        result.map(|()| true)
    }

    /// Whether `event` is an update that changed the key. Debezium emits
    /// such an update as a delete of the old key (plus tombstone) followed
    /// by a create of the new one; the writer does the same.
    pub fn key_changed(&self, event: &ChangeEvent) -> bool {
        let (Op::Update, Some((_, old)), Some(new)) = (event.op, &event.old, &event.new) else {
            return false;
        };
        self.key_columns
            .iter()
            .map(|&k| self.columns[k].source)
            .any(|i| match (new.get(i), old.get(i)) {
                (Some(TupleValue::UnchangedToast), _) => false,
                (Some(n), Some(o)) => n != o,
                _ => false,
            })
    }

    /// Appends the Avro envelope of `event`.
    pub fn encode_value(
        &self,
        event: &ChangeEvent,
        ctx: &EnvelopeContext<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.write_value(event, ctx, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Appends the Avro body of `event`'s flattened value (`[unwrap]`): the
    /// new row of an insert, update or snapshot read, the old row of a
    /// delete, then `flat`'s added fields. A truncate has no row: the
    /// writer never asks for it.
    pub fn encode_flat(
        &self,
        event: &ChangeEvent,
        ctx: &EnvelopeContext<'_>,
        flat: &super::flat::Flat,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.check_relation(event).and_then(|()| {
            let old = event.old.as_ref().map(|(kind, t)| (*kind, t));
            let image = match event.op {
                Op::Create | Op::Read | Op::Update => RowImage::Full {
                    tuple: event
                        .new
                        .as_ref()
                        .ok_or_else(|| self.missing(event.op, "new"))?,
                    old,
                },
                Op::Delete => old_image(old.ok_or_else(|| self.missing(event.op, "old"))?),
                Op::Truncate => return Err(self.missing(event.op, "new")),
            };
            self.write_row(image, out)?;
            flat.write_added(event, ctx, out);
            Ok(())
        });
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn write_value(
        &self,
        event: &ChangeEvent,
        ctx: &EnvelopeContext<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.check_relation(event)?;
        let old = event.old.as_ref().map(|(kind, t)| (*kind, t));
        let new = || {
            event
                .new
                .as_ref()
                .ok_or_else(|| self.missing(event.op, "new"))
        };
        let (before, after) = match event.op {
            Op::Create | Op::Read => (
                None,
                Some(RowImage::Full {
                    tuple: new()?,
                    old: None,
                }),
            ),
            Op::Update => (
                old.map(old_image),
                Some(RowImage::Full { tuple: new()?, old }),
            ),
            Op::Delete => {
                let old = old.ok_or_else(|| self.missing(event.op, "old"))?;
                (Some(old_image(old)), None)
            }
            Op::Truncate => (None, None),
        };
        let mut unavailable = 0;
        for image in [before, after] {
            match image {
                None => out.push(UNION_NULL),
                Some(image) => {
                    out.push(UNION_SECOND);
                    unavailable = self.write_row(image, out)?;
                }
            }
        }

        // source, in the order of schema.rs's SOURCE_FIELD.
        let commit_us = event.tx.commit_ts_us;
        write_bytes(out, ctx.connector_version.as_bytes());
        write_bytes(out, b"postgresql");
        write_bytes(out, ctx.name.as_bytes());
        write_long(out, commit_us.div_euclid(1000));
        out.push(0); // snapshot: branch 0 is the string enum
        write_bytes(out, ctx.snapshot.as_bytes());
        write_bytes(out, ctx.db.as_bytes());
        out.push(UNION_SECOND);
        write_sequence(out, event.tx.commit_lsn, event.lsn);
        out.push(UNION_SECOND);
        write_long(out, commit_us);
        out.push(UNION_SECOND);
        write_long(out, commit_us.saturating_mul(1000));
        out.extend_from_slice(&self.source_schema_table);
        out.push(UNION_SECOND);
        write_long(out, i64::from(event.tx.xid.0));
        out.push(UNION_SECOND);
        // Debezium's source.lsn is a signed long too; WAL never reaches 2^63.
        write_long(out, event.lsn.0 as i64);
        out.extend_from_slice(&[UNION_NULL; 3]); // xmin, origin, origin_lsn

        match &ctx.transaction {
            None => out.push(UNION_NULL),
            Some(block) => {
                out.push(UNION_SECOND);
                write_bytes(out, block.id.as_bytes());
                write_long(out, block.total_order as i64);
                write_long(out, block.data_collection_order as i64);
            }
        }
        write_bytes(out, event.op.code().as_bytes());
        for v in [
            ctx.now_us.div_euclid(1000),
            ctx.now_us,
            ctx.now_us.saturating_mul(1000),
        ] {
            out.push(UNION_SECOND);
            write_long(out, v);
        }
        if self.lists_unavailable {
            match (after, unavailable) {
                (Some(RowImage::Full { tuple, old }), 1..) => {
                    out.push(UNION_SECOND);
                    write_long(out, unavailable as i64);
                    for col in &self.columns {
                        if tuple[col.source] == TupleValue::UnchangedToast
                            && Self::toast_from_old(col, old).is_none()
                        {
                            out.extend_from_slice(&col.field);
                        }
                    }
                    write_long(out, 0);
                }
                _ => out.push(UNION_NULL),
            }
        }
        Ok(())
    }

    /// The text of an unchanged TOAST value in column `i` that the old row
    /// carries: a full old row has every column, a key-only one only keys.
    #[inline]
    fn toast_from_old<'t>(
        col: &ColumnPlan,
        old: Option<(OldTupleKind, &'t Tuple)>,
    ) -> Option<&'t bytes::Bytes> {
        old.and_then(|(kind, t)| match (kind, t.get(col.source)) {
            (OldTupleKind::Key, _) if !col.is_key => None,
            (_, Some(TupleValue::Text(text))) => Some(text),
            _ => None,
        })
    }

    /// Writes one row record; returns how many columns were written as
    /// null because their unchanged TOAST value was not available.
    fn write_row(&self, image: RowImage<'_>, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let (tuple, old, key_only) = match image {
            RowImage::Full { tuple, old } => (tuple, old, false),
            RowImage::KeyOnly(tuple) => (tuple, None, true),
        };
        self.check_len(tuple)?;
        let mut unavailable = 0;
        for col in &self.columns {
            let value = &tuple[col.source];
            if key_only && !col.is_key {
                // Not in a key-only row: null, or Debezium's zero value
                // where Avro cannot hold null.
                if col.nullable {
                    out.push(UNION_NULL);
                } else {
                    col.ty.encode_missing(out);
                }
                continue;
            }
            match value {
                TupleValue::Text(text) => self.write_text(col, text, out)?,
                TupleValue::Null => self.write_null(col, out)?,
                TupleValue::UnchangedToast => match Self::toast_from_old(col, old) {
                    Some(text) => self.write_text(col, text, out)?,
                    None => {
                        self.write_unavailable(col, out)?;
                        unavailable += 1;
                    }
                },
                TupleValue::Binary(_) => return Err(self.column_error(col, ErrorKind::Binary)),
            }
        }
        Ok(unavailable)
    }

    fn write_key(
        &self,
        tuple: &Tuple,
        old: Option<&Tuple>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if self.key_columns.is_empty() {
            return Err(EncodeError::NoKey {
                table: self.table.clone(),
            });
        }
        self.check_len(tuple)?;
        for col in &self.key_plans {
            let i = col.source;
            let value = match &tuple[i] {
                TupleValue::UnchangedToast => old.and_then(|t| t.get(i)).unwrap_or(&tuple[i]),
                value => value,
            };
            match value {
                TupleValue::Text(text) => self.write_text(col, text, out)?,
                TupleValue::Null => self.write_null(col, out)?,
                TupleValue::UnchangedToast => {
                    return Err(self.column_error(col, ErrorKind::UnavailableKey));
                }
                TupleValue::Binary(_) => return Err(self.column_error(col, ErrorKind::Binary)),
            }
        }
        if let Some(physical) = &self.physical_table {
            out.extend_from_slice(physical);
        }
        Ok(())
    }

    #[inline]
    fn write_text(
        &self,
        col: &ColumnPlan,
        text: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let mark = out.len();
        if col.nullable {
            out.push(UNION_SECOND);
        }
        let mut scratch;
        let text = match &col.mask {
            None => text,
            Some(mask) => {
                scratch = [0u8; 64];
                mask.apply(text, &mut scratch)
            }
        };
        match col.ty.encode_text(text, out) {
            Ok(()) => Ok(()),
            Err(reason) => self.text_failed(col, reason, mark, out),
        }
    }

    /// A value that did not convert. Numeric NaN/±Infinity become null,
    /// as Debezium writes them, where the column can hold null.
    #[cold]
    fn text_failed(
        &self,
        col: &ColumnPlan,
        reason: ValueError,
        mark: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if reason == ValueError::NumericSpecial && col.nullable {
            out.truncate(mark);
            out.push(UNION_NULL);
            return Ok(());
        }
        Err(self.column_error(col, ErrorKind::Invalid(reason)))
    }

    fn write_null(&self, col: &ColumnPlan, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if col.nullable {
            out.push(UNION_NULL);
            Ok(())
        } else {
            Err(self.column_error(col, ErrorKind::Null))
        }
    }

    fn write_unavailable(&self, col: &ColumnPlan, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mark = out.len();
        if self.unchanged_toast == UnchangedToastMode::Placeholder {
            if col.nullable {
                out.push(UNION_SECOND);
            }
            if col.ty.encode_unavailable(out) {
                return Ok(());
            }
        }
        out.truncate(mark);
        if col.nullable {
            out.push(UNION_NULL);
            Ok(())
        } else {
            Err(self.column_error(col, ErrorKind::UnavailableToast))
        }
    }

    fn check_relation(&self, event: &ChangeEvent) -> Result<(), EncodeError> {
        let rel = &event.relation;
        if rel.relation.oid == self.oid && rel.version == self.version {
            return Ok(());
        }
        Err(EncodeError::PlanMismatch {
            table: self.table.clone(),
            event_oid: rel.relation.oid,
            event_version: rel.version,
            plan_oid: self.oid,
            plan_version: self.version,
        })
    }

    fn check_len(&self, tuple: &Tuple) -> Result<(), EncodeError> {
        if tuple.len() == self.relation_columns {
            return Ok(());
        }
        Err(EncodeError::ColumnCount {
            table: self.table.clone(),
            expected: self.relation_columns,
            got: tuple.len(),
        })
    }

    fn missing(&self, op: Op, which: &'static str) -> EncodeError {
        EncodeError::MissingTuple {
            table: self.table.clone(),
            op: op_name(op),
            which,
        }
    }

    #[cold]
    fn column_error(&self, col: &ColumnPlan, kind: ErrorKind) -> EncodeError {
        let table = self.table.clone();
        let column = col.name.clone();
        match kind {
            ErrorKind::Invalid(reason) => EncodeError::InvalidValue {
                table,
                column,
                reason,
            },
            ErrorKind::Null => EncodeError::NullInNotNull { table, column },
            ErrorKind::Binary => EncodeError::BinaryValue { table, column },
            ErrorKind::UnavailableToast => EncodeError::UnavailableToast { table, column },
            ErrorKind::UnavailableKey => EncodeError::UnavailableKey { table, column },
        }
    }
}

/// Column-level failures, turned into [`EncodeError`] (with owned names)
/// only on the error path.
enum ErrorKind {
    Invalid(ValueError),
    Null,
    Binary,
    UnavailableToast,
    UnavailableKey,
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Create => "insert",
        Op::Update => "update",
        Op::Delete => "delete",
        Op::Read => "snapshot read",
        Op::Truncate => "truncate",
    }
}

/// Appends an Avro `long`/`int`: zigzag, then little-endian base-128.
#[inline]
pub(crate) fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    // Byte-wise pushes: a variable-length copy would cost a memcpy call,
    // which dominates for these 1–10 byte writes.
    out.reserve(10);
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends Avro `bytes`/`string`: length, then the bytes.
#[inline]
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // A slice never exceeds isize::MAX bytes, so the length fits.
    write_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// Appends the `source.sequence` string `["<commit LSN>","<event LSN>"]`
/// (decimal LSNs, Debezium's format; see the module docs for the first slot).
fn write_sequence(out: &mut Vec<u8>, commit: Lsn, lsn: Lsn) {
    let mut first = [0u8; 20];
    let first_len = fmt_u64(commit.0, &mut first);
    let mut second = [0u8; 20];
    let second_len = fmt_u64(lsn.0, &mut second);
    // ["digits","digits"]
    let len = first_len + second_len + 7;
    write_long(out, len as i64);
    out.reserve(len);
    out.extend_from_slice(b"[\"");
    // Byte pushes: see write_long on why not a slice copy.
    for &d in &first[20 - first_len..] {
        out.push(d);
    }
    out.extend_from_slice(b"\",\"");
    for &d in &second[20 - second_len..] {
        out.push(d);
    }
    out.extend_from_slice(b"\"]");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::modes::{BinaryMode, DecimalMode, IntervalMode, TimePrecisionMode};
    use crate::avro::types::{UNAVAILABLE_VALUE_PLACEHOLDER, oid};
    use crate::event::{
        Position, Relation, RelationColumn, RelationVersion, ReplicaIdentity, SourceTx, TxId,
    };
    use apache_avro::Schema;
    use apache_avro::types::Value;
    use bytes::Bytes;
    use std::sync::Arc;

    /// Debezium's exact behaviour: default modes plus its unchanged TOAST
    /// placeholder (siphon's default lists unavailable columns instead).
    fn debezium() -> TypeModes {
        TypeModes {
            unchanged_toast: UnchangedToastMode::Placeholder,
            ..TypeModes::default()
        }
    }

    fn naming() -> SchemaNaming {
        SchemaNaming {
            topic_prefix: "pfx".into(),
            database: "shop".into(),
        }
    }

    fn relation(columns: &[(&str, u32, i32, bool, bool)]) -> Arc<RelationVersion> {
        Arc::new(RelationVersion {
            defaults: Vec::new(),
            relation: Relation {
                oid: 16400,
                schema: "public".into(),
                name: "orders".into(),
                replica_identity: ReplicaIdentity::Default,
                columns: columns
                    .iter()
                    .map(
                        |&(name, type_oid, type_modifier, is_key, _)| RelationColumn {
                            is_key,
                            name: name.into(),
                            type_oid,
                            type_modifier,
                        },
                    )
                    .collect(),
            },
            version: 3,
            nullable: columns.iter().map(|c| c.4).collect(),
            custom_types: Default::default(),
        })
    }

    /// id int4 PK, note text NOT NULL, qty int4 NULL, price numeric(10,2)
    /// NULL, body text NULL (toastable), at timestamptz NOT NULL.
    fn orders() -> Arc<RelationVersion> {
        relation(&[
            ("id", oid::INT4, -1, true, false),
            ("note", oid::TEXT, -1, false, false),
            ("qty", oid::INT4, -1, false, true),
            ("price", oid::NUMERIC, (10 << 16 | 2) + 4, false, true),
            ("body", oid::TEXT, -1, false, true),
            ("at", oid::TIMESTAMPTZ, -1, false, false),
        ])
    }

    fn t(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn event(
        rel: &Arc<RelationVersion>,
        op: Op,
        old: Option<(OldTupleKind, Tuple)>,
        new: Option<Tuple>,
    ) -> ChangeEvent {
        ChangeEvent {
            position: Position {
                commit_lsn: Lsn(22_374_900),
                index: 0,
            },
            op,
            relation: rel.clone(),
            tx: Arc::new(SourceTx {
                xid: TxId(737),
                commit_lsn: Lsn(22_374_900),
                commit_ts_us: 1_795_433_471_569_193,
            }),
            lsn: Lsn(22_374_784),
            old,
            new,
        }
    }

    const CTX: EnvelopeContext<'static> = EnvelopeContext {
        connector_version: "0.1.0",
        name: "pfx",
        db: "shop",
        snapshot: "false",
        now_us: 1_795_433_472_065_758,
        transaction: None,
    };

    fn decode(schema: &str, bytes: &[u8]) -> Value {
        let schema = Schema::parse_str(schema).expect("schema parses");
        let mut reader = bytes;
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .expect("reader")
            .read_value(&mut reader)
            .expect("decodes");
        assert!(reader.is_empty(), "{} trailing bytes", reader.len());
        value
    }

    fn record(fields: Vec<(&str, Value)>) -> Value {
        Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    fn null() -> Value {
        Value::Union(0, Box::new(Value::Null))
    }

    fn some(v: Value) -> Value {
        Value::Union(1, Box::new(v))
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    fn price(unscaled: i64) -> Value {
        let bytes = num_bigint::BigInt::from(unscaled).to_signed_bytes_be();
        some(Value::Decimal(apache_avro::Decimal::from(bytes)))
    }

    fn source(lsn: i64, sequence: &str) -> Value {
        record(vec![
            ("version", s("0.1.0")),
            ("connector", s("postgresql")),
            ("name", s("pfx")),
            ("ts_ms", Value::Long(1_795_433_471_569)),
            ("snapshot", Value::Union(0, Box::new(s("false")))),
            ("db", s("shop")),
            ("sequence", some(s(sequence))),
            ("ts_us", some(Value::Long(1_795_433_471_569_193))),
            ("ts_ns", some(Value::Long(1_795_433_471_569_193_000))),
            ("schema", s("public")),
            ("table", s("orders")),
            ("txId", some(Value::Long(737))),
            ("lsn", some(Value::Long(lsn))),
            ("xmin", null()),
            ("origin", null()),
            ("origin_lsn", null()),
        ])
    }

    fn envelope(before: Value, after: Value, op: &str) -> Value {
        record(vec![
            ("before", before),
            ("after", after),
            ("source", source(22_374_784, r#"["22374900","22374784"]"#)),
            ("transaction", null()),
            ("op", s(op)),
            ("ts_ms", some(Value::Long(1_795_433_472_065))),
            ("ts_us", some(Value::Long(1_795_433_472_065_758))),
            ("ts_ns", some(Value::Long(1_795_433_472_065_758_000))),
        ])
    }

    fn row(id: i32, note: &str, qty: Value, price: Value, body: Value, at: &str) -> Value {
        some(record(vec![
            ("id", Value::Int(id)),
            ("note", s(note)),
            ("qty", qty),
            ("price", price),
            ("body", body),
            ("at", s(at)),
        ]))
    }

    fn full_row() -> Tuple {
        vec![
            t("7"),
            t("héllo ☃"),
            t("-3"),
            t("-12345.67"),
            t("long body"),
            t("2024-01-02 03:04:05.123456+00"),
        ]
    }

    fn encode(plan: &EncodePlan, ev: &ChangeEvent) -> Value {
        let mut out = Vec::new();
        plan.encode_value(ev, &CTX, &mut out).expect("encodes");
        decode(plan.value_schema(), &out)
    }

    #[test]
    fn create_envelope() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let ev = event(&rel, Op::Create, None, Some(full_row()));
        let expected = envelope(
            null(),
            row(
                7,
                "héllo ☃",
                some(Value::Int(-3)),
                price(-1_234_567),
                some(s("long body")),
                "2024-01-02T03:04:05.123456Z",
            ),
            "c",
        );
        assert_eq!(encode(&plan, &ev), expected);

        let mut key = Vec::new();
        assert!(plan.encode_event_key(&ev, &mut key).unwrap());
        assert_eq!(
            decode(plan.key_schema().unwrap(), &key),
            record(vec![("id", Value::Int(7))])
        );
        let mut direct = Vec::new();
        plan.encode_key(&full_row(), &mut direct).unwrap();
        assert_eq!(direct, key);
    }

    #[test]
    fn nulls_in_nullable_columns() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let new = vec![
            t("-2147483648"),
            t(""),
            TupleValue::Null,
            TupleValue::Null,
            TupleValue::Null,
            t("0044-03-15 12:00:00+00 BC"),
        ];
        let ev = event(&rel, Op::Read, None, Some(new));
        let expected = envelope(
            null(),
            row(
                i32::MIN,
                "",
                null(),
                null(),
                null(),
                "-0043-03-15T12:00:00.000000Z",
            ),
            "r",
        );
        assert_eq!(encode(&plan, &ev), expected);
    }

    #[test]
    fn update_with_full_old_row_fills_unchanged_toast() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let mut new = full_row();
        new[2] = t("4");
        new[4] = TupleValue::UnchangedToast;
        let ev = event(
            &rel,
            Op::Update,
            Some((OldTupleKind::Full, full_row())),
            Some(new),
        );
        let expected = envelope(
            row(
                7,
                "héllo ☃",
                some(Value::Int(-3)),
                price(-1_234_567),
                some(s("long body")),
                "2024-01-02T03:04:05.123456Z",
            ),
            row(
                7,
                "héllo ☃",
                some(Value::Int(4)),
                price(-1_234_567),
                some(s("long body")),
                "2024-01-02T03:04:05.123456Z",
            ),
            "u",
        );
        assert_eq!(encode(&plan, &ev), expected);
        assert!(!plan.key_changed(&ev));
    }

    #[test]
    fn update_without_old_row_uses_toast_placeholder() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let mut new = full_row();
        new[4] = TupleValue::UnchangedToast;
        // price has no placeholder type: nullable → null.
        new[3] = TupleValue::UnchangedToast;
        let ev = event(&rel, Op::Update, None, Some(new));
        let expected = envelope(
            null(),
            row(
                7,
                "héllo ☃",
                some(Value::Int(-3)),
                null(),
                some(s(UNAVAILABLE_VALUE_PLACEHOLDER)),
                "2024-01-02T03:04:05.123456Z",
            ),
            "u",
        );
        assert_eq!(encode(&plan, &ev), expected);
    }

    #[test]
    fn update_without_old_row_writes_null_and_lists_unavailable_columns() {
        // siphon's default: no placeholder; NOT NULL toastable columns are
        // nullable in Value, and the envelope names what is missing.
        let rel = relation(&[
            ("id", oid::INT4, -1, true, false),
            ("doc", oid::TEXT, -1, false, false),
            ("n", oid::NUMERIC, -1, false, false),
            ("tags", 1009, -1, false, true), // text[]
            ("qty", oid::INT4, -1, false, false),
        ]);
        let plan = EncodePlan::new(&rel, &naming()).unwrap();
        let ev = event(
            &rel,
            Op::Update,
            None,
            Some(vec![
                t("1"),
                TupleValue::UnchangedToast,
                t("2.5"),
                TupleValue::UnchangedToast,
                t("4"),
            ]),
        );
        let Value::Record(fields) = encode(&plan, &ev) else {
            panic!("not a record")
        };
        let after = fields.iter().find(|(n, _)| n == "after").unwrap();
        assert_eq!(
            after.1,
            some(record(vec![
                ("id", Value::Int(1)),
                ("doc", null()),
                (
                    "n",
                    some(record(vec![
                        ("scale", Value::Int(1)),
                        ("value", Value::Bytes(vec![25])),
                    ]))
                ),
                ("tags", null()),
                ("qty", Value::Int(4)),
            ]))
        );
        assert_eq!(
            fields.last().unwrap(),
            &(
                "unavailable_columns".to_string(),
                some(Value::Array(vec![s("doc"), s("tags")]))
            )
        );

        // With a full old row nothing is unavailable.
        let full = event(
            &rel,
            Op::Update,
            Some((
                OldTupleKind::Full,
                vec![t("1"), t("old doc"), t("2.5"), t("{a}"), t("3")],
            )),
            Some(vec![
                t("1"),
                TupleValue::UnchangedToast,
                t("2.5"),
                TupleValue::UnchangedToast,
                t("4"),
            ]),
        );
        let Value::Record(fields) = encode(&plan, &full) else {
            panic!("not a record")
        };
        let after = &fields.iter().find(|(n, _)| n == "after").unwrap().1;
        let Value::Union(1, after) = after else {
            panic!("{after:?}")
        };
        let Value::Record(after) = &**after else {
            panic!()
        };
        assert_eq!(after[1].1, some(s("old doc")));
        assert_eq!(after[3].1, some(Value::Array(vec![some(s("a"))])));
        assert_eq!(fields.last().unwrap().1, null());
    }

    #[test]
    fn unavailable_toast_in_not_null_non_placeholder_column_is_an_error() {
        let rel = relation(&[
            ("id", oid::INT4, -1, true, false),
            ("n", oid::NUMERIC, -1, false, false),
        ]);
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let ev = event(
            &rel,
            Op::Update,
            None,
            Some(vec![t("1"), TupleValue::UnchangedToast]),
        );
        let mut out = vec![9];
        let err = plan.encode_value(&ev, &CTX, &mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unchanged TOAST value in NOT NULL column n of public.orders is not available; set REPLICA IDENTITY FULL on public.orders"
        );
        assert_eq!(out, vec![9], "buffer restored on error");
    }

    #[test]
    fn primary_key_change_with_key_only_old_row() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let old = vec![
            t("7"),
            TupleValue::Null,
            TupleValue::Null,
            TupleValue::Null,
            TupleValue::Null,
            TupleValue::Null,
        ];
        let mut new = full_row();
        new[0] = t("10");
        let ev = event(
            &rel,
            Op::Update,
            Some((OldTupleKind::Key, old.clone())),
            Some(new.clone()),
        );
        assert!(plan.key_changed(&ev));

        // As Debezium does, the writer turns this into a delete + create.
        let delete = event(&rel, Op::Delete, Some((OldTupleKind::Key, old)), None);
        let create = event(&rel, Op::Create, None, Some(new));
        // Debezium 3.6.3's before for a key-only row: NOT NULL non-key
        // columns get zero values, nullable ones null.
        let expected_delete = envelope(
            row(7, "", null(), null(), null(), "1970-01-01T00:00:00Z"),
            null(),
            "d",
        );
        assert_eq!(encode(&plan, &delete), expected_delete);
        let mut key = Vec::new();
        assert!(plan.encode_event_key(&delete, &mut key).unwrap());
        assert_eq!(
            decode(plan.key_schema().unwrap(), &key),
            record(vec![("id", Value::Int(7))])
        );
        let value = encode(&plan, &create);
        let Value::Record(fields) = &value else {
            panic!("{value:?}")
        };
        assert_eq!(fields[0].1, null());
        assert_eq!(fields[4].1, s("c"));
        key.clear();
        plan.encode_event_key(&create, &mut key).unwrap();
        assert_eq!(
            decode(plan.key_schema().unwrap(), &key),
            record(vec![("id", Value::Int(10))])
        );

        // Encoded as one update anyway, before is the key-only image.
        let Value::Record(fields) = encode(&plan, &ev) else {
            panic!()
        };
        assert_eq!(
            fields[0].1,
            row(7, "", null(), null(), null(), "1970-01-01T00:00:00Z")
        );
    }

    #[test]
    fn delete_with_full_old_row() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let ev = event(
            &rel,
            Op::Delete,
            Some((OldTupleKind::Full, full_row())),
            None,
        );
        let expected = envelope(
            row(
                7,
                "héllo ☃",
                some(Value::Int(-3)),
                price(-1_234_567),
                some(s("long body")),
                "2024-01-02T03:04:05.123456Z",
            ),
            null(),
            "d",
        );
        assert_eq!(encode(&plan, &ev), expected);
    }

    #[test]
    fn truncate_envelope_has_no_rows_and_no_key() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let ev = event(&rel, Op::Truncate, None, None);
        assert_eq!(encode(&plan, &ev), envelope(null(), null(), "t"));
        let mut key = Vec::new();
        assert!(!plan.encode_event_key(&ev, &mut key).unwrap());
        assert!(key.is_empty());
    }

    #[test]
    fn keyless_relation() {
        let rel = relation(&[
            ("a", oid::INT4, -1, false, true),
            ("b", oid::TEXT, -1, false, true),
        ]);
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        assert_eq!(plan.key_schema(), None);
        let ev = event(&rel, Op::Create, None, Some(vec![t("1"), t("x")]));
        let mut out = Vec::new();
        assert!(!plan.encode_event_key(&ev, &mut out).unwrap());
        assert!(matches!(
            plan.encode_key(&vec![t("1"), t("x")], &mut out),
            Err(EncodeError::NoKey { .. })
        ));
        let mut out = Vec::new();
        plan.encode_value(&ev, &CTX, &mut out).unwrap();
        decode(plan.value_schema(), &out);
    }

    #[test]
    fn sequence_holds_full_width_lsns() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let mut ev = event(&rel, Op::Create, None, Some(full_row()));
        ev.tx = Arc::new(SourceTx {
            commit_lsn: Lsn(u64::MAX),
            ..(*ev.tx).clone()
        });
        ev.lsn = Lsn(0);
        let Value::Record(fields) = encode(&plan, &ev) else {
            panic!()
        };
        let Value::Record(source) = &fields[2].1 else {
            panic!()
        };
        assert_eq!(source[6].1, some(s(r#"["18446744073709551615","0"]"#)));
        assert_eq!(source[12].1, some(Value::Long(0)));
    }

    #[test]
    fn errors_name_table_and_column_but_not_the_value() {
        let rel = orders();
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let mut new = full_row();
        new[2] = t("secret-42");
        let ev = event(&rel, Op::Create, None, Some(new));
        let mut out = Vec::new();
        let err = plan.encode_value(&ev, &CTX, &mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value in column qty of public.orders"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(source, "not a valid int4 text value");
        assert!(!format!("{err:?}").contains("secret"));
        assert!(out.is_empty());

        let mut new = full_row();
        new[1] = TupleValue::Null;
        let ev = event(&rel, Op::Create, None, Some(new));
        assert_eq!(
            plan.encode_value(&ev, &CTX, &mut out)
                .unwrap_err()
                .to_string(),
            "null in NOT NULL column note of public.orders"
        );
        // Numeric NaN: null where the column allows it (Debezium's value),
        // an error naming the column where it does not.
        let mut new = full_row();
        new[3] = t("NaN");
        let ev = event(&rel, Op::Create, None, Some(new));
        let Value::Record(fields) = encode(&plan, &ev) else {
            panic!()
        };
        let Value::Union(1, after) = &fields[1].1 else {
            panic!()
        };
        let Value::Record(after) = after.as_ref() else {
            panic!()
        };
        assert_eq!(after[3], ("price".to_string(), null()));
        let strict = relation(&[
            ("id", oid::INT4, -1, true, false),
            ("price", oid::NUMERIC, (10 << 16 | 2) + 4, false, false),
        ]);
        let strict_plan = EncodePlan::with_modes(&strict, &naming(), &debezium()).unwrap();
        let ev = event(
            &strict,
            Op::Create,
            None,
            Some(vec![t("1"), t("-Infinity")]),
        );
        let err = strict_plan.encode_value(&ev, &CTX, &mut out).unwrap_err();
        assert!(matches!(
            err,
            EncodeError::InvalidValue {
                reason: ValueError::NumericSpecial,
                ref column,
                ..
            } if column == "price"
        ));
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "numeric NaN or infinity has no Avro decimal representation and the column is NOT NULL"
        );
        assert!(out.is_empty());
        let mut new = full_row();
        new[5] = TupleValue::Binary(Bytes::from_static(b"\0\0"));
        let ev = event(&rel, Op::Create, None, Some(new));
        assert_eq!(
            plan.encode_value(&ev, &CTX, &mut out)
                .unwrap_err()
                .to_string(),
            "column at of public.orders arrived in binary format; siphon requests text format"
        );
        let ev = event(&rel, Op::Create, None, Some(vec![t("1")]));
        assert_eq!(
            plan.encode_value(&ev, &CTX, &mut out)
                .unwrap_err()
                .to_string(),
            "tuple for public.orders has 1 columns, the relation has 6"
        );
        let ev = event(&rel, Op::Delete, None, None);
        assert_eq!(
            plan.encode_value(&ev, &CTX, &mut out)
                .unwrap_err()
                .to_string(),
            "delete event for public.orders carries no old row"
        );
        let newer = Arc::new(RelationVersion {
            version: 4,
            ..(*rel).clone()
        });
        let ev = event(&newer, Op::Create, None, Some(full_row()));
        assert!(matches!(
            plan.encode_value(&ev, &CTX, &mut out),
            Err(EncodeError::PlanMismatch { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn unchanged_toast_key_comes_from_old_key() {
        let rel = relation(&[
            ("k", oid::TEXT, -1, true, false),
            ("v", oid::INT4, -1, false, true),
        ]);
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let old = vec![t("big-key"), TupleValue::Null];
        let new = vec![TupleValue::UnchangedToast, t("2")];
        let ev = event(
            &rel,
            Op::Update,
            Some((OldTupleKind::Key, old)),
            Some(new.clone()),
        );
        assert!(!plan.key_changed(&ev));
        let mut key = Vec::new();
        plan.encode_event_key(&ev, &mut key).unwrap();
        assert_eq!(
            decode(plan.key_schema().unwrap(), &key),
            record(vec![("k", s("big-key"))])
        );
        let Value::Record(fields) = encode(&plan, &ev) else {
            panic!()
        };
        assert_eq!(
            fields[1].1,
            some(record(vec![
                ("k", s("big-key")),
                ("v", some(Value::Int(2)))
            ]))
        );
        let mut out = Vec::new();
        assert!(matches!(
            plan.encode_key(&new, &mut out),
            Err(EncodeError::UnavailableKey { .. })
        ));
    }

    /// One row through every mapped type, nullable and NOT NULL, encoded and
    /// decoded through the generated schema.
    #[test]
    fn every_type_in_one_row() {
        let cols: Vec<(&str, u32, i32, &str, Value)> = vec![
            ("b", oid::BOOL, -1, "t", Value::Boolean(true)),
            ("s2", oid::INT2, -1, "-32768", Value::Int(-32768)),
            ("i4", oid::INT4, -1, "2147483647", Value::Int(i32::MAX)),
            (
                "i8",
                oid::INT8,
                -1,
                "-9223372036854775808",
                Value::Long(i64::MIN),
            ),
            ("f4", oid::FLOAT4, -1, "1.5", Value::Float(1.5)),
            (
                "f8",
                oid::FLOAT8,
                -1,
                "-Infinity",
                Value::Double(f64::NEG_INFINITY),
            ),
            (
                "n",
                oid::NUMERIC,
                (10 << 16 | 3) + 4,
                "-12345.678",
                Value::Decimal(apache_avro::Decimal::from(vec![0xff, 0x43, 0x9e, 0xb2])),
            ),
            (
                "nv",
                oid::NUMERIC,
                -1,
                "12.3400",
                record(vec![
                    ("scale", Value::Int(2)),
                    ("value", Value::Bytes(vec![0x04, 0xd2])),
                ]),
            ),
            ("t", oid::TEXT, -1, "日本語", s("日本語")),
            ("vc", oid::VARCHAR, 24, "vc", s("vc")),
            ("bp", oid::BPCHAR, 9, "ab   ", s("ab   ")),
            ("nm", oid::NAME, -1, "nm", s("nm")),
            (
                "by",
                oid::BYTEA,
                -1,
                r"\xdeadbeef",
                Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
            ),
            (
                "u",
                oid::UUID,
                -1,
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ),
            ("j", oid::JSON, -1, r#"{"a": 1}"#, s(r#"{"a": 1}"#)),
            (
                "jb",
                oid::JSONB,
                -1,
                r#"{"b": [1, 2]}"#,
                s(r#"{"b": [1, 2]}"#),
            ),
            ("d", oid::DATE, -1, "0044-03-15 BC", Value::Int(-735_160)),
            (
                "tm",
                oid::TIME,
                -1,
                "23:59:59.999999",
                Value::Long(86_399_999_999),
            ),
            ("tm3", oid::TIME, 3, "12:34:56.789", Value::Int(45_296_789)),
            (
                "ts",
                oid::TIMESTAMP,
                -1,
                "1969-12-31 23:59:59.5",
                Value::Long(-500_000),
            ),
            (
                "ts3",
                oid::TIMESTAMP,
                3,
                "2024-01-02 03:04:05.123",
                Value::Long(1_704_164_645_123),
            ),
            (
                "tstz",
                oid::TIMESTAMPTZ,
                -1,
                "2024-01-02 03:04:05.123456+00",
                s("2024-01-02T03:04:05.123456Z"),
            ),
            ("inet", 869, -1, "10.0.0.1/8", s("10.0.0.1/8")),
            ("other", 16_500, -1, "(1,x)", s("(1,x)")),
        ];
        for nullable in [false, true] {
            let spec: Vec<(&str, u32, i32, bool, bool)> = cols
                .iter()
                .map(|c| (c.0, c.1, c.2, c.0 == "i4", nullable && c.0 != "i4"))
                .collect();
            let rel = relation(&spec);
            let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
            let new: Tuple = cols.iter().map(|c| t(c.3)).collect();
            let expected: Vec<(String, Value)> = cols
                .iter()
                .map(|c| {
                    let v = if nullable && c.0 != "i4" {
                        some(c.4.clone())
                    } else {
                        c.4.clone()
                    };
                    (c.0.to_string(), v)
                })
                .collect();
            let ev = event(&rel, Op::Create, None, Some(new));
            let Value::Record(fields) = encode(&plan, &ev) else {
                panic!()
            };
            assert_eq!(
                fields[1].1,
                some(Value::Record(expected)),
                "nullable={nullable}"
            );
            assert_eq!(plan.fallback_columns().collect::<Vec<_>>(), vec!["other"]);
        }
    }

    #[test]
    fn varints_match_apache_avro() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut ours = Vec::new();
            write_long(&mut ours, v);
            let theirs = apache_avro::writer::datum::GenericDatumWriter::builder(&Schema::Long)
                .build()
                .unwrap()
                .write_value_to_vec(Value::Long(v))
                .unwrap();
            assert_eq!(ours, theirs, "{v}");
        }
    }

    /// `cargo test --release -- --ignored --nocapture encode_benchmark`
    #[test]
    #[ignore]
    fn encode_benchmark() {
        let rel = relation(&[
            ("id", oid::INT8, -1, true, false),
            ("customer_id", oid::INT4, -1, false, false),
            ("status", oid::TEXT, -1, false, false),
            ("amount", oid::NUMERIC, (12 << 16 | 2) + 4, false, true),
            ("qty", oid::INT2, -1, false, true),
            ("paid", oid::BOOL, -1, false, false),
            ("created_at", oid::TIMESTAMPTZ, -1, false, false),
            ("updated_at", oid::TIMESTAMP, -1, false, true),
            ("ref", oid::UUID, -1, false, true),
            ("note", oid::VARCHAR, 260, false, true),
        ]);
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let new = vec![
            t("1234567890"),
            t("42"),
            t("shipped"),
            t("1999.95"),
            t("3"),
            t("t"),
            t("2024-01-02 03:04:05.123456+00"),
            t("2024-01-02 03:04:05.654321"),
            t("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            t("leave at the door, ring twice"),
        ];
        let ev = event(&rel, Op::Create, None, Some(new.clone()));
        let mut out = Vec::with_capacity(1024);
        let iterations = 2_000_000u32;
        // Warm up, then time value + key per row.
        for _ in 0..10_000 {
            out.clear();
            plan.encode_value(&ev, &CTX, &mut out).unwrap();
        }
        let started = std::time::Instant::now();
        for _ in 0..iterations {
            out.clear();
            plan.encode_value(std::hint::black_box(&ev), &CTX, &mut out)
                .unwrap();
            plan.encode_key(&new, &mut out).unwrap();
            std::hint::black_box(&out);
        }
        let per_row = started.elapsed().as_nanos() as f64 / f64::from(iterations);
        let started = std::time::Instant::now();
        let mut row_only = Vec::with_capacity(512);
        for _ in 0..iterations {
            row_only.clear();
            plan.write_row(
                std::hint::black_box(RowImage::Full {
                    tuple: &new,
                    old: None,
                }),
                &mut row_only,
            )
            .unwrap();
        }
        let row_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
        let truncate = event(&rel, Op::Truncate, None, None);
        let started = std::time::Instant::now();
        for _ in 0..iterations {
            row_only.clear();
            plan.encode_value(std::hint::black_box(&truncate), &CTX, &mut row_only)
                .unwrap();
        }
        let envelope_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
        println!(
            "10-column row: {per_row:.0} ns per event (envelope + key, {} bytes), {row_ns:.0} ns for the row record alone, {envelope_ns:.0} ns for an envelope without rows",
            out.len()
        );

        // The types added for the "every PostgreSQL type" issue.
        let rel = relation(&[
            ("id", oid::INT8, -1, true, false),
            ("dur", oid::INTERVAL, -1, false, true),
            ("price", oid::MONEY, -1, false, true),
            ("at", oid::TIMETZ, -1, false, true),
            ("flags", oid::VARBIT, -1, false, true),
            ("pos", oid::POINT, -1, false, true),
            ("ids", 1007, -1, false, true),  // int4[]
            ("tags", 1009, -1, false, true), // text[]
            ("addr", oid::INET, -1, false, true),
            ("span", oid::INT4RANGE, -1, false, true),
        ]);
        let plan = EncodePlan::with_modes(&rel, &naming(), &debezium()).unwrap();
        let new = vec![
            t("1234567890"),
            t("P1Y2M3DT4H5M6.789S"),
            t("$1,234.56"),
            t("04:05:06.789+02"),
            t("10100101"),
            t("(1.5,-2.25)"),
            t("{1,2,NULL,4,5}"),
            t(r#"{red,"dark blue",NULL}"#),
            t("192.168.0.1/24"),
            t("[1,10)"),
        ];
        let started = std::time::Instant::now();
        for _ in 0..iterations {
            row_only.clear();
            plan.write_row(
                std::hint::black_box(RowImage::Full {
                    tuple: &new,
                    old: None,
                }),
                &mut row_only,
            )
            .unwrap();
        }
        let new_types_ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
        println!(
            "10-column row of the newer types (interval, money, timetz, varbit, point, int4[], text[], inet, int4range): {new_types_ns:.0} ns for the row record ({} bytes)",
            row_only.len()
        );

        // Handling modes, each against the defaults in the same run.
        let time_value = |plan: &EncodePlan, ev: &ChangeEvent, out: &mut Vec<u8>| {
            let started = std::time::Instant::now();
            for _ in 0..iterations {
                out.clear();
                plan.encode_value(std::hint::black_box(ev), &CTX, out)
                    .unwrap();
            }
            started.elapsed().as_nanos() as f64 / f64::from(iterations)
        };
        let rel = relation(&[
            ("id", oid::INT8, -1, true, false),
            ("amount", oid::NUMERIC, (12 << 16 | 2) + 4, false, true),
            ("ratio", oid::NUMERIC, -1, false, true),
            ("price", oid::MONEY, -1, false, true),
            ("day", oid::DATE, -1, false, true),
            ("at", oid::TIME, -1, false, true),
            ("ts", oid::TIMESTAMP, -1, false, true),
            ("blob", oid::BYTEA, -1, false, true),
            ("dur", oid::INTERVAL, -1, false, true),
            ("body", oid::TEXT, -1, false, false),
        ]);
        let row = vec![
            t("1234567890"),
            t("1999.95"),
            t("0.000123456789"),
            t("$1,234.56"),
            t("2024-01-02"),
            t("04:05:06.789123"),
            t("2024-01-02 03:04:05.654321"),
            t("\\xdeadbeefcafebabe0011223344556677"),
            t("P1Y2M3DT4H5M6.789S"),
            t("a text value"),
        ];
        let create = event(&rel, Op::Create, None, Some(row.clone()));
        let mut toasted = row.clone();
        toasted[9] = TupleValue::UnchangedToast;
        let update = event(&rel, Op::Update, None, Some(toasted));
        let variants = [
            ("debezium (placeholder)", debezium()),
            ("default (unchanged_toast=null)", TypeModes::default()),
            (
                "double/connect/base64/string",
                TypeModes {
                    decimal: DecimalMode::Double,
                    time_precision: TimePrecisionMode::Connect,
                    binary: BinaryMode::Base64,
                    interval: IntervalMode::String,
                    ..TypeModes::default()
                },
            ),
            (
                "string/micros/hex",
                TypeModes {
                    decimal: DecimalMode::String,
                    time_precision: TimePrecisionMode::AdaptiveTimeMicroseconds,
                    binary: BinaryMode::Hex,
                    ..TypeModes::default()
                },
            ),
        ];
        for (label, modes) in variants {
            let plan = EncodePlan::with_modes(&rel, &naming(), &modes).unwrap();
            let create_ns = time_value(&plan, &create, &mut out);
            let update_ns = time_value(&plan, &update, &mut out);
            println!(
                "modes {label}: insert {create_ns:.0} ns, update with an unchanged TOAST column {update_ns:.0} ns per envelope ({} bytes)",
                out.len()
            );
        }
    }
}
