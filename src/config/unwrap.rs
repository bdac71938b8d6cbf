//! `[unwrap]`: publish the flattened row instead of Debezium's envelope,
//! as Debezium's `ExtractNewRecordState` transform does — the format most
//! cache and search sinks want (docs/consumers.md, "Flattened rows").

use regex::Regex;

use super::reader::Section;

/// What a delete becomes (`delete.tombstone.handling.mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeleteHandling {
    /// Nothing: neither the delete nor its tombstone.
    Drop,
    /// Only the tombstone (null value), for log compaction and sinks that
    /// delete on a null value.
    #[default]
    Tombstone,
    /// The old row with `__deleted = "true"` (every other record gets
    /// `"false"`); no tombstone.
    Rewrite,
    /// As `Rewrite`, followed by the tombstone.
    RewriteWithTombstone,
}

impl DeleteHandling {
    const ALL: [(&'static str, DeleteHandling); 4] = [
        ("drop", DeleteHandling::Drop),
        ("tombstone", DeleteHandling::Tombstone),
        ("rewrite", DeleteHandling::Rewrite),
        (
            "rewrite-with-tombstone",
            DeleteHandling::RewriteWithTombstone,
        ),
    ];

    /// Whether records carry the `__deleted` field.
    pub fn rewrites(self) -> bool {
        matches!(
            self,
            DeleteHandling::Rewrite | DeleteHandling::RewriteWithTombstone
        )
    }

    /// Whether a delete is followed by a tombstone.
    pub fn tombstone(self) -> bool {
        matches!(
            self,
            DeleteHandling::Tombstone | DeleteHandling::RewriteWithTombstone
        )
    }
}

/// A fact of the change added to a flattened record, as a `__`-prefixed
/// field or a header (Debezium's `add.fields` / `add.headers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// `op`: c, u, d, r.
    Op,
    /// `db`: the database.
    Db,
    /// `schema`: the table's schema.
    Schema,
    /// `table`: the table's name.
    Table,
    /// `lsn`: the change's LSN.
    Lsn,
    /// `txId`: the source transaction's id.
    TxId,
    /// `source.ts_ms`: the source transaction's commit time.
    SourceTsMs,
    /// `ts_ms`: when siphon wrote the event.
    TsMs,
}

impl Added {
    const ALL: [(&'static str, Added); 8] = [
        ("op", Added::Op),
        ("db", Added::Db),
        ("schema", Added::Schema),
        ("table", Added::Table),
        ("lsn", Added::Lsn),
        ("txId", Added::TxId),
        ("source.ts_ms", Added::SourceTsMs),
        ("ts_ms", Added::TsMs),
    ];

    /// The field or header name: `__` and the fact's name, dots as `_`.
    pub fn name(self) -> &'static str {
        match self {
            Added::Op => "__op",
            Added::Db => "__db",
            Added::Schema => "__schema",
            Added::Table => "__table",
            Added::Lsn => "__lsn",
            Added::TxId => "__txId",
            Added::SourceTsMs => "__source_ts_ms",
            Added::TsMs => "__ts_ms",
        }
    }

    /// Whether the value is text (else a long).
    pub fn is_text(self) -> bool {
        matches!(self, Added::Op | Added::Db | Added::Schema | Added::Table)
    }
}

/// `[unwrap]`.
#[derive(Clone, Debug, Default)]
pub struct UnwrapConfig {
    pub enabled: bool,
    /// Regexes on `schema.table` (whole name); empty: every table.
    pub tables: Vec<Regex>,
    pub delete_handling: DeleteHandling,
    pub add_fields: Vec<Added>,
    pub add_headers: Vec<Added>,
}

impl UnwrapConfig {
    /// Whether events of `schema.table` are flattened.
    pub fn applies_to(&self, schema: &str, table: &str) -> bool {
        self.enabled
            && (self.tables.is_empty() || {
                let name = format!("{schema}.{table}");
                self.tables.iter().any(|r| r.is_match(&name))
            })
    }
}

pub(super) fn read_unwrap(mut section: Section) -> UnwrapConfig {
    let enabled = section.optional("enabled").unwrap_or(false);
    let tables: Vec<String> = section.optional("tables").unwrap_or_default();
    let tables = tables
        .iter()
        .filter_map(|t| match Regex::new(&format!("^(?:{t})$")) {
            Ok(r) => Some(r),
            Err(e) => {
                section.problem_at("tables", &format!("{t:?} is not a valid regex: {e}"));
                None
            }
        })
        .collect();
    let delete_handling = match section.optional::<String>("delete_handling") {
        None => DeleteHandling::default(),
        Some(name) => DeleteHandling::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .unwrap_or_else(|| {
                section.problem_at(
                    "delete_handling",
                    &format!(
                        "{name:?} is not a delete handling: use one of {}",
                        names(&DeleteHandling::ALL)
                    ),
                );
                DeleteHandling::default()
            }),
    };
    let mut added = |key: &str| -> Vec<Added> {
        let listed: Vec<String> = section.optional(key).unwrap_or_default();
        let mut out = Vec::new();
        for name in listed {
            match Added::ALL.iter().find(|(n, _)| *n == name) {
                Some((_, a)) if !out.contains(a) => out.push(*a),
                Some(_) => section.problem_at(key, &format!("lists {name:?} twice")),
                None => section.problem_at(
                    key,
                    &format!(
                        "{name:?} is not a fact siphon can add: use {}",
                        names(&Added::ALL)
                    ),
                ),
            }
        }
        out
    };
    let add_fields = added("add_fields");
    let add_headers = added("add_headers");
    if !enabled && (!add_fields.is_empty() || !add_headers.is_empty()) {
        section.problem_at(
            "enabled",
            "is false, so add_fields and add_headers have no effect: set enabled = true or remove them",
        );
    }
    section.finish();
    UnwrapConfig {
        enabled,
        tables,
        delete_handling,
        add_fields,
        add_headers,
    }
}

fn names<T>(all: &[(&str, T)]) -> String {
    all.iter()
        .map(|(n, _)| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
