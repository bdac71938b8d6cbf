//! The `[schemas]` section: how siphon treats the registry subjects of the
//! captured tables when a table's shape changes.
//!
//! - `compatibility`: the level siphon sets (`PUT /config/{subject}`) on a
//!   table's key and value subjects when it creates them, i.e. registers
//!   their first version. A subject that already exists keeps whatever
//!   level it has, so an operator's later change is never undone.
//! - `table_compatibility`: the same, per table (`"schema.table" = level`).
//! - `on_incompatible`: what happens when the registry refuses a new
//!   version as incompatible ([`IncompatiblePolicy`]).

use std::collections::BTreeMap;
use std::fmt;

use super::reader::Section;
use super::{TableName, parse_table};

/// A Confluent compatibility level, as the registry spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compatibility {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Compatibility {
    const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Case-insensitive, as the registry accepts it.
    fn parse(s: &str) -> Option<Compatibility> {
        Compatibility::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What siphon does when the registry refuses a table's new schema version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncompatiblePolicy {
    /// Stop the connector with an error naming the table, subject, columns
    /// and fix; nothing after the change is written until an operator acts.
    #[default]
    Stop,
    /// Register the version anyway: siphon sets the subject's level to
    /// `NONE`, registers, and puts the previous level back, logging a
    /// warning that names the table and columns. Every event still carries
    /// its writer schema id, so consumers that decode by id (Confluent's
    /// deserializers) keep reading; readers pinned to one reader schema
    /// must be updated.
    Register,
}

impl IncompatiblePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            IncompatiblePolicy::Stop => "stop",
            IncompatiblePolicy::Register => "register",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemasConfig {
    /// Level set on new subjects; default BACKWARD (Confluent's default).
    pub compatibility: Compatibility,
    /// Per-table overrides of `compatibility`.
    pub table_compatibility: BTreeMap<TableName, Compatibility>,
    pub on_incompatible: IncompatiblePolicy,
}

impl Default for SchemasConfig {
    fn default() -> Self {
        SchemasConfig {
            compatibility: default_compatibility(),
            table_compatibility: BTreeMap::new(),
            on_incompatible: IncompatiblePolicy::default(),
        }
    }
}

impl SchemasConfig {
    /// The level new subjects of `table` get.
    pub fn compatibility_of(&self, schema: &str, table: &str) -> Compatibility {
        self.table_compatibility
            .get(&TableName {
                schema: schema.to_owned(),
                table: table.to_owned(),
            })
            .copied()
            .unwrap_or(self.compatibility)
    }
}

fn default_compatibility() -> Compatibility {
    // Confluent Schema Registry's own default level.
    Compatibility::Backward
}

fn level(section: &Section, key: &str, text: &str) -> Option<Compatibility> {
    let parsed = Compatibility::parse(text);
    if parsed.is_none() {
        let known = Compatibility::ALL.map(Compatibility::as_str).join(", ");
        section.problem_at(key, &format!("must be one of {known}, got {text:?}"));
    }
    parsed
}

/// Reads `[schemas]`; `tables` are the connector's captured tables (an
/// override for a table that is not captured is a mistake worth naming).
pub(super) fn read(mut section: Section, tables: &[TableName]) -> SchemasConfig {
    let compatibility = section
        .optional::<String>("compatibility")
        .and_then(|t| level(&section, "compatibility", &t))
        .unwrap_or_else(default_compatibility);
    let mut table_compatibility = BTreeMap::new();
    for (table, text) in section.string_map("table_compatibility") {
        let key = format!("table_compatibility.{table}");
        let Some(level) = level(&section, &key, &text) else {
            continue;
        };
        match parse_table(&table) {
            Some(t) if tables.is_empty() || tables.contains(&t) => {
                table_compatibility.insert(t, level);
            }
            Some(_) => section.problem_at(
                &key,
                "is not one of postgres.tables: add the table there or remove this line",
            ),
            None => section.problem_at(&key, "must name a table as \"schema.table\""),
        }
    }
    let on_incompatible = match section.optional::<String>("on_incompatible") {
        None => IncompatiblePolicy::default(),
        Some(t) if t == "stop" => IncompatiblePolicy::Stop,
        Some(t) if t == "register" => IncompatiblePolicy::Register,
        Some(t) => {
            section.problem_at(
                "on_incompatible",
                &format!("must be \"stop\" or \"register\", got {t:?}"),
            );
            IncompatiblePolicy::default()
        }
    };
    section.finish();
    SchemasConfig {
        compatibility,
        table_compatibility,
        on_incompatible,
    }
}
