//! `[tables]`, `[[table]]` and `[[route]]`: what of the captured tables
//! leaves siphon, and how (Debezium's filters, masks, `skipped.operations`,
//! `message.key.columns` and `ByLogicalTableRouter`, built in).
//!
//! - `[tables]`: `include` / `exclude` regexes on `schema.table` (anchored:
//!   the whole name must match), `skip_ops` for every table, and the salt of
//!   `mask_hash` (`hash_salt_env` / `hash_salt_file`, a [`Secret`]).
//! - `[[table]]`: per-table rules; the first whose `match` regex matches a
//!   table's `schema.table` applies to it (later ones are not merged).
//! - `[[route]]`: the first whose `match` matches names the table's topic
//!   from a template (`$1`.. capture groups, `{prefix}`, `{schema}`,
//!   `{table}`).
//!
//! Only names are checked here: whether a rule's columns exist is known
//! once the table's columns are (preflight and the writer, through
//! `crate::avro::projection`).

use std::collections::BTreeMap;

use regex::Regex;

use super::reader::Section;
use super::{Secret, TableName};
use crate::event::Op;

/// A regex on `schema.table`, matched against the whole name.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// As written in the file (for messages).
    pub text: String,
    regex: Regex,
}

impl Pattern {
    fn parse(section: &Section, key: &str, text: &str) -> Option<Pattern> {
        match Pattern::new(text) {
            Ok(p) => Some(p),
            Err(e) => {
                let why = e.to_string();
                let last = why.lines().last().unwrap_or("invalid").trim();
                section.problem_at(
                    key,
                    &format!(
                        "{text:?} is not a valid regex ({last}); write e.g. \"public\\\\.orders_.*\""
                    ),
                );
                None
            }
        }
    }

    /// A pattern from its text (anchored).
    pub fn new(text: &str) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            text: text.to_owned(),
            regex: Regex::new(&format!("^(?:{text})$"))?,
        })
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// A set of operations (`c`, `u`, `d`, `t`), Debezium's
/// `skipped.operations`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpSet(u8);

impl OpSet {
    fn bit(op: Op) -> u8 {
        match op {
            Op::Create => 1,
            Op::Update => 2,
            Op::Delete => 4,
            Op::Truncate => 8,
            // Snapshot reads are never skipped.
            Op::Read => 0,
        }
    }

    pub fn contains(self, op: Op) -> bool {
        self.0 & Self::bit(op) != 0
    }

    fn read(section: &mut Section, key: &str) -> Option<OpSet> {
        let codes: Vec<String> = section.optional(key)?;
        let mut set = OpSet(0);
        for code in &codes {
            let op = match code.as_str() {
                "c" => Op::Create,
                "u" => Op::Update,
                "d" => Op::Delete,
                "t" => Op::Truncate,
                "none" => continue,
                other => {
                    section.problem_at(
                        key,
                        &format!(
                            "{other:?} is not an operation that can be skipped: use \"c\" (insert), \"u\" (update), \"d\" (delete) or \"t\" (truncate)"
                        ),
                    );
                    continue;
                }
            };
            set.0 |= Self::bit(op);
        }
        Some(set)
    }
}

/// One `[[table]]` block.
#[derive(Clone, Debug)]
pub struct TableRule {
    /// `table[i]`, as messages name the block.
    pub name: String,
    pub pattern: Pattern,
    /// Only these columns leave siphon (`None`: all but `columns_exclude`).
    pub columns_include: Option<Vec<String>>,
    pub columns_exclude: Vec<String>,
    /// Columns replaced by the hex SHA-256 of salt and text value.
    pub mask_hash: Vec<String>,
    /// Columns cut to so many characters.
    pub mask_truncate: BTreeMap<String, usize>,
    /// Columns replaced by a constant.
    pub mask_replace: BTreeMap<String, String>,
    /// The Kafka key's columns, in this order, instead of the replica
    /// identity's (`message.key.columns`).
    pub key_columns: Option<Vec<String>>,
    /// The column whose value chooses the partition.
    pub partition_by: Option<String>,
    /// Replaces `[tables] skip_ops` for these tables.
    pub skip_ops: Option<OpSet>,
    /// Replaces `kafka.tombstones_on_delete` for these tables.
    pub tombstones: Option<bool>,
    /// Replaces `kafka.emit_truncate` for these tables.
    pub truncate_events: Option<bool>,
}

/// One `[[route]]` block.
#[derive(Clone, Debug)]
pub struct Route {
    /// `route[i]`, as messages name the block.
    pub name: String,
    pub pattern: Pattern,
    /// Topic template: `$1`.. capture groups, `{prefix}`, `{schema}`, `{table}`.
    pub topic: String,
}

impl Route {
    /// The topic of `table` under this route (`None` when it does not
    /// match). Characters Kafka forbids become `_`.
    pub fn topic_of(&self, prefix: &str, schema: &str, table: &str) -> Option<String> {
        let full = format!("{schema}.{table}");
        let caps = self.pattern.regex.captures(&full)?;
        let mut out = String::new();
        let mut rest = self.topic.as_str();
        while let Some(c) = rest.chars().next() {
            if c == '$'
                && let Some(n) = digits(&rest[1..])
            {
                out.push_str(caps.get(n.0).map_or("", |m| m.as_str()));
                rest = &rest[1 + n.1..];
                continue;
            }
            if let Some(after) = rest.strip_prefix("{prefix}") {
                out.push_str(prefix);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("{schema}") {
                out.push_str(schema);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("{table}") {
                out.push_str(table);
                rest = after;
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        Some(
            out.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        )
    }
}

/// A leading decimal number and its length in bytes.
fn digits(s: &str) -> Option<(usize, usize)> {
    let len = s.bytes().take_while(u8::is_ascii_digit).count();
    s[..len].parse().ok().map(|n| (n, len))
}

/// The three sections together.
#[derive(Clone, Debug, Default)]
pub struct EventsConfig {
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    /// Operations not written for any table (unless a rule says otherwise).
    pub skip_ops: OpSet,
    /// Salt of `mask_hash`.
    pub hash_salt: Option<Secret>,
    pub rules: Vec<TableRule>,
    pub routes: Vec<Route>,
}

impl EventsConfig {
    /// Whether events of `schema.table` leave siphon at all.
    pub fn captures(&self, schema: &str, table: &str) -> bool {
        let full = format!("{schema}.{table}");
        (self.include.is_empty() || self.include.iter().any(|p| p.is_match(&full)))
            && !self.exclude.iter().any(|p| p.is_match(&full))
    }

    /// The `[[table]]` rule of a table: the first that matches.
    pub fn rule_for(&self, schema: &str, table: &str) -> Option<&TableRule> {
        let full = format!("{schema}.{table}");
        self.rules.iter().find(|r| r.pattern.is_match(&full))
    }

    /// The routed topic of a table (`None`: the default topic).
    pub fn routed_topic(&self, prefix: &str, schema: &str, table: &str) -> Option<String> {
        self.routes
            .iter()
            .find_map(|r| r.topic_of(prefix, schema, table))
    }

    /// The operations skipped for a table.
    pub fn skip_ops_of(&self, rule: Option<&TableRule>) -> OpSet {
        rule.and_then(|r| r.skip_ops).unwrap_or(self.skip_ops)
    }
}

/// Reads `[tables]`, `[[table]]` and `[[route]]`; `tables` are
/// `postgres.tables`, each of which the filters must let through.
pub(super) fn read(
    mut filters: Section,
    rules: Vec<Section>,
    routes: Vec<Section>,
    tables: &[TableName],
    env: &BTreeMap<String, String>,
) -> EventsConfig {
    let patterns = |section: &mut Section, key: &str| -> Vec<Pattern> {
        let texts: Vec<String> = section.optional(key).unwrap_or_default();
        texts
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Pattern::parse(section, &format!("{key}[{i}]"), t))
            .collect()
    };
    let include = patterns(&mut filters, "include");
    let exclude = patterns(&mut filters, "exclude");
    let skip_ops = OpSet::read(&mut filters, "skip_ops").unwrap_or_default();
    let hash_salt = filters.secret("hash_salt", env);
    let mut out = EventsConfig {
        include,
        exclude,
        skip_ops,
        hash_salt,
        rules: Vec::new(),
        routes: Vec::new(),
    };
    for t in tables {
        if !out.captures(&t.schema, &t.table) {
            filters.problem_at(
                "include",
                &format!(
                    "postgres.tables lists {t}, which tables.include / tables.exclude filter out: remove it from postgres.tables (tables that are filtered out are not captured at all) or change the patterns"
                ),
            );
        }
    }
    for (i, mut section) in rules.into_iter().enumerate() {
        if let Some(rule) = read_rule(&mut section, i, out.hash_salt.is_some()) {
            out.rules.push(rule);
        }
        section.finish();
    }
    for (i, mut section) in routes.into_iter().enumerate() {
        let pattern: Option<String> = section.required("match");
        let topic: Option<String> = section.required("topic");
        let pattern = pattern.and_then(|p| Pattern::parse(&section, "match", &p));
        if let (Some(pattern), Some(topic)) = (pattern, topic) {
            let groups = pattern.regex.captures_len() - 1;
            let mut rest = topic.as_str();
            while let Some(at) = rest.find(['$', '{']) {
                rest = &rest[at..];
                if let Some(n) = rest.strip_prefix('$').and_then(digits) {
                    if n.0 == 0 || n.0 > groups {
                        section.problem_at(
                            "topic",
                            &format!(
                                "${} refers to a capture group that match {:?} does not have ({groups} group(s)): use $1..${groups}, or add a (group) to match",
                                n.0, pattern.text
                            ),
                        );
                    }
                    rest = &rest[1 + n.1..];
                } else if let Some(p) = ["{prefix}", "{schema}", "{table}"]
                    .iter()
                    .find(|p| rest.starts_with(**p))
                {
                    rest = &rest[p.len()..];
                } else if rest.starts_with('{') {
                    section.problem_at(
                        "topic",
                        &format!(
                            "{topic:?} has an unknown placeholder at {:?}: use {{prefix}}, {{schema}}, {{table}} or $1..",
                            rest.chars().take(12).collect::<String>()
                        ),
                    );
                    break;
                } else {
                    rest = &rest[1..];
                }
            }
            if topic.trim().is_empty() {
                section.problem_at("topic", "must not be empty");
            }
            out.routes.push(Route {
                name: format!("route[{i}]"),
                pattern,
                topic,
            });
        }
        section.finish();
    }
    filters.finish();
    out
}

fn read_rule(section: &mut Section, i: usize, have_salt: bool) -> Option<TableRule> {
    let pattern: Option<String> = section.required("match");
    let pattern = pattern.and_then(|p| Pattern::parse(section, "match", &p));
    let columns_include: Option<Vec<String>> = section.optional("columns_include");
    let columns_exclude: Vec<String> = section.optional("columns_exclude").unwrap_or_default();
    let mask_hash: Vec<String> = section.optional("mask_hash").unwrap_or_default();
    let mask_truncate: BTreeMap<String, i64> =
        section.optional("mask_truncate").unwrap_or_default();
    let mask_replace: BTreeMap<String, String> = section.string_map("mask_replace");
    let key_columns: Option<Vec<String>> = section.optional("key_columns");
    let partition_by: Option<String> = section.optional("partition_by");
    let skip_ops = OpSet::read(section, "skip_ops");
    let tombstones: Option<bool> = section.optional("tombstones");
    let truncate_events: Option<bool> = section.optional("truncate_events");

    if columns_include.is_some() && !columns_exclude.is_empty() {
        section.problem_at(
            "columns_exclude",
            "set either columns_include or columns_exclude, not both",
        );
    }
    if !mask_hash.is_empty() && !have_salt {
        section.problem_at(
            "mask_hash",
            "needs a salt: set tables.hash_salt_env (an environment variable) or tables.hash_salt_file (a file) to a secret value",
        );
    }
    let mut truncate = BTreeMap::new();
    for (column, n) in mask_truncate {
        if n < 1 {
            section.problem_at(
                &format!("mask_truncate.{column}"),
                &format!("must be >= 1 (characters kept), got {n}"),
            );
        } else {
            truncate.insert(column, n as usize);
        }
    }
    // One mask per column, and no mask on a column that is left out.
    let mut masked: BTreeMap<&str, &str> = BTreeMap::new();
    let masks = mask_hash
        .iter()
        .map(|c| (c.as_str(), "mask_hash"))
        .chain(truncate.keys().map(|c| (c.as_str(), "mask_truncate")))
        .chain(mask_replace.keys().map(|c| (c.as_str(), "mask_replace")));
    for (column, key) in masks {
        if let Some(other) = masked.insert(column, key) {
            section.problem_at(
                key,
                &format!("column {column:?} is also in {other}: give each column one mask"),
            );
        }
        if columns_exclude.iter().any(|c| c == column)
            || columns_include
                .as_ref()
                .is_some_and(|inc| !inc.iter().any(|c| c == column))
        {
            section.problem_at(
                key,
                &format!(
                    "column {column:?} is excluded from events, so there is nothing to mask: remove it here or keep the column"
                ),
            );
        }
    }
    if key_columns.as_ref().is_some_and(Vec::is_empty) {
        section.problem_at(
            "key_columns",
            "must name at least one column (leave it out to keep the table's own key)",
        );
    }
    Some(TableRule {
        name: format!("table[{i}]"),
        pattern: pattern?,
        columns_include,
        columns_exclude,
        mask_hash,
        mask_truncate: truncate,
        mask_replace,
        key_columns,
        partition_by,
        skip_ops,
        tombstones,
        truncate_events,
    })
}

#[cfg(test)]
mod tests {
    use super::super::load_file_with_env;

    const BASE: &str = r#"
name = "shop"
[postgres]
database = "shop"
user = "siphon"
tables = ["public.orders", "public.customers_1"]
[kafka]
bootstrap_servers = "k:9092"
topic_prefix = "shop"
[registry]
url = "http://r:8081"
"#;

    fn load(
        extra: &str,
        env: &[(&str, &str)],
    ) -> Result<super::super::ConnectorConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.toml");
        std::fs::write(&path, format!("{BASE}{extra}")).unwrap();
        load_file_with_env(
            &path,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .map_err(|e| {
            e.problems
                .iter()
                .map(|p| p.split_once(": ").unwrap().1.to_owned())
                .collect()
        })
    }

    #[test]
    fn reads_every_key() {
        let cfg = load(
            r#"
[tables]
include = ["public\\..*"]
exclude = ["public\\.audit"]
skip_ops = ["t"]
hash_salt_env = "SALT"

[[table]]
match = "public\\.orders"
columns_exclude = ["secret"]
mask_hash = ["email"]
mask_truncate = { name = 3 }
mask_replace = { phone = "***" }
key_columns = ["email"]
partition_by = "region"
skip_ops = ["d"]
tombstones = false
truncate_events = true

[[route]]
match = "(public)\\.customers_(\\d+)"
topic = "{prefix}.$1.customers"
"#,
            &[("SALT", "pepper")],
        )
        .unwrap();
        let e = &cfg.events;
        assert!(e.captures("public", "orders"));
        assert!(!e.captures("public", "audit"));
        assert!(!e.captures("other", "orders"));
        assert!(!e.captures("public", "orders_x") || e.captures("public", "orders_x"));
        assert_eq!(e.hash_salt.as_ref().unwrap().expose(), "pepper");
        let rule = e.rule_for("public", "orders").unwrap();
        assert_eq!(rule.mask_truncate["name"], 3);
        assert_eq!(rule.mask_replace["phone"], "***");
        assert!(e.skip_ops_of(Some(rule)).contains(crate::event::Op::Delete));
        assert!(
            !e.skip_ops_of(Some(rule))
                .contains(crate::event::Op::Truncate)
        );
        assert!(e.skip_ops_of(None).contains(crate::event::Op::Truncate));
        assert!(e.rule_for("public", "orders2").is_none(), "anchored");
        assert_eq!(
            e.routed_topic("shop", "public", "customers_1").as_deref(),
            Some("shop.public.customers")
        );
        assert_eq!(e.routed_topic("shop", "public", "orders"), None);
    }

    #[test]
    fn mistakes_are_named_with_their_fix() {
        let problems = load(
            r#"
[tables]
exclude = ["public\\.orders", "("]
skip_ops = ["x"]

[[table]]
match = "public\\.orders"
columns_include = ["id"]
columns_exclude = ["b"]
mask_hash = ["id"]
mask_truncate = { id = 0 }
colums = 1

[[route]]
match = "public\\.(.*)"
topic = "all.$2.{tabel}"
"#,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            problems,
            [
                r#"tables.exclude[1]: "(" is not a valid regex (error: unclosed group); write e.g. "public\\.orders_.*""#,
                r#"tables.skip_ops: "x" is not an operation that can be skipped: use "c" (insert), "u" (update), "d" (delete) or "t" (truncate)"#,
                "tables.include: postgres.tables lists public.orders, which tables.include / tables.exclude filter out: remove it from postgres.tables (tables that are filtered out are not captured at all) or change the patterns",
                "table[0].columns_exclude: set either columns_include or columns_exclude, not both",
                "table[0].mask_hash: needs a salt: set tables.hash_salt_env (an environment variable) or tables.hash_salt_file (a file) to a secret value",
                "table[0].mask_truncate.id: must be >= 1 (characters kept), got 0",
                r#"table[0].colums: unknown key (known keys: match, columns_include, columns_exclude, mask_hash, mask_truncate, mask_replace, key_columns, partition_by, skip_ops, tombstones, truncate_events)"#,
                r#"route[0].topic: $2 refers to a capture group that match "public\\.(.*)" does not have (1 group(s)): use $1..$1, or add a (group) to match"#,
                r#"route[0].topic: "all.$2.{tabel}" has an unknown placeholder at "{tabel}": use {prefix}, {schema}, {table} or $1.."#,
            ]
        );
    }
}
