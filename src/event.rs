//! Domain types shared by every stage: positions in the source stream, the
//! shape of a captured relation, and decoded row changes.
//!
//! Nothing here knows about PostgreSQL connections, Avro or Kafka. Row values
//! stay as the raw `bytes::Bytes` slices pgoutput sent (text format) until the
//! encoder turns them into Avro, so a change costs no copies on its way
//! through the pipeline.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// A PostgreSQL write-ahead-log position.
///
/// Displayed the way PostgreSQL prints `pg_lsn` values (`0/16B3748`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid LSN {s:?}: expected the form 0/16B3748"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| format!("invalid LSN {s:?}"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| format!("invalid LSN {s:?}"))?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A PostgreSQL transaction id (as pgoutput sends it: 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

/// Where a change sits in the ordered stream: the commit LSN of its source
/// transaction (known from pgoutput's BEGIN) and its index inside that
/// transaction. Strictly increasing in stream order; the exactly-once
/// protocol deduplicates by it (never by a per-change LSN, which several
/// changes may share).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub commit_lsn: Lsn,
    pub index: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.commit_lsn, self.index)
    }
}

/// The kind of a change, with Debezium's one-letter codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A row was inserted (`c`).
    Create,
    /// A row was updated (`u`).
    Update,
    /// A row was deleted (`d`).
    Delete,
    /// A row was read by a snapshot (`r`).
    Read,
    /// The table was truncated (`t`).
    Truncate,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// How PostgreSQL identifies the old row of an update or delete
/// (`pg_class.relreplident`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing; updates and deletes carry no old row.
    Nothing,
    /// `f`: the full old row.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

/// One column of a relation as pgoutput describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (pgoutput flag bit 1).
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`: -1 when the type has no modifier.
    pub type_modifier: i32,
}

/// A table as pgoutput's Relation message describes it. A new Relation
/// message for the same oid replaces the old shape for every later change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn>,
}

/// A column value inside a tuple as pgoutput sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL.
    Null,
    /// A TOASTed value that the update did not change; PostgreSQL does not
    /// resend it.
    UnchangedToast,
    /// The value in the type's text output format.
    Text(Bytes),
    /// The value in the type's binary format (pgoutput `binary` option).
    Binary(Bytes),
}

/// The column values of one row, in relation column order.
pub type Tuple = Vec<TupleValue>;

/// Which old image an update or delete carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldTupleKind {
    /// `K`: only the replica identity columns are meaningful, the rest are
    /// NULL placeholders.
    Key,
    /// `O`: the full old row (REPLICA IDENTITY FULL).
    Full,
}

/// Facts about the source transaction a change belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceTx {
    pub xid: TxId,
    pub commit_lsn: Lsn,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_ts_us: i64,
}

/// One captured row change, ready for encoding.
#[derive(Clone, Debug)]
pub struct ChangeEvent {
    pub position: Position,
    pub op: Op,
    /// The relation shape this change was written with.
    pub relation: Arc<RelationVersion>,
    pub tx: Arc<SourceTx>,
    /// LSN of the change record itself (XLogData start), as Debezium reports
    /// it in `source.lsn`.
    pub lsn: Lsn,
    pub old: Option<(OldTupleKind, Tuple)>,
    pub new: Option<Tuple>,
}

/// A logical decoding message (`pg_logical_emit_message`), numbered in the
/// stream like a change.
///
/// A transactional message belongs to its transaction and takes the next
/// index in it. A non-transactional one is sent by PostgreSQL as soon as
/// it is decoded, outside any transaction: it gets the position
/// `(its own LSN, 0)`, which falls between the commits decoded before and
/// after it, so positions stay strictly increasing in stream order.
#[derive(Clone, Debug)]
pub struct MessageEvent {
    pub position: Position,
    /// Its source transaction; `None` for a non-transactional message.
    pub tx: Option<Arc<SourceTx>>,
    /// LSN of the message record.
    pub lsn: Lsn,
    pub prefix: String,
    /// Zero-copy slice of what the replication stream sent.
    pub content: Bytes,
}

/// A relation shape plus what siphon learned about it from the catalog,
/// numbered so that every new shape gets a new schema version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationVersion {
    pub relation: Relation,
    /// Increases each time a Relation message for this oid changes its shape.
    pub version: u64,
    /// Per column, in relation column order: whether the column accepts NULL
    /// (`NOT attnotnull`). pgoutput does not send this; siphon reads it from
    /// the catalog when the Relation message arrives.
    pub nullable: Vec<bool>,
    /// Per column, in relation column order: its default expression as the
    /// catalog prints it, when it has one (read with `nullable`). Constant
    /// defaults become Avro field defaults, so adding a `NOT NULL DEFAULT`
    /// column stays BACKWARD compatible. May be empty: no defaults known.
    pub defaults: Vec<Option<String>>,
    /// Catalog facts about the column types whose OIDs are not fixed
    /// (enums, domains, composites, extension types such as `hstore`, and
    /// arrays of them), keyed by type OID. pgoutput's Relation message
    /// carries only the OID; the encoder needs to know what it stands for.
    /// Must hold every such OID a column refers to, and, transitively, the
    /// element type of an array and the base type of a domain. Built-in
    /// types need no entry; a missing entry makes the column a text
    /// fallback.
    pub custom_types: CustomTypes,
}

/// [`RelationVersion::custom_types`]: type OID → what the catalog says.
pub type CustomTypes = BTreeMap<u32, CustomType>;

/// One `pg_type` row, reduced to what decides the Avro mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomType {
    /// `pg_type.typname` (extension types like `hstore`, `citext` and
    /// `ltree` are recognised by it, as Debezium does).
    pub name: String,
    pub kind: CustomTypeKind,
}

/// What kind of type a [`CustomType`] is (`pg_type.typtype`, plus arrays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomTypeKind {
    /// `typtype = 'e'`: the labels in `enumsortorder` order.
    Enum { labels: Vec<String> },
    /// `typtype = 'd'`: the domain's base type (`typbasetype`) and its
    /// modifier (`typtypmod`, -1 when none).
    Domain {
        base_oid: u32,
        base_type_modifier: i32,
    },
    /// An array type (`typelem <> 0 AND typlen = -1`) of `element_oid`.
    Array { element_oid: u32 },
    /// `typtype = 'c'`: a composite (row) type.
    Composite,
    /// `typtype = 'r'` or `'m'`: a range or multirange type.
    Range,
    /// Any other type, typically a base type from an extension.
    Base,
}
