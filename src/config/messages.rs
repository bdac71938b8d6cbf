//! `[messages]` and `[outbox]`: logical decoding messages as events, and
//! the outbox event router (docs/consumers.md, "Outbox").
//!
//! - `[messages]`: `pg_logical_emit_message` messages (transactional or
//!   not) become events on one topic, as Debezium's PostgreSQL connector
//!   publishes them (`<prefix>.message`).
//! - `[outbox]`: rows inserted into one outbox table, and optionally
//!   logical messages with one prefix, become events on a topic chosen by
//!   a column, value = the payload, key = the aggregate id, with the
//!   event's id and type as headers (Debezium's outbox event router).

use super::reader::Section;
use super::{TableName, is_topic_char, parse_table};

/// `[messages]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessagesConfig {
    /// Publish logical decoding messages.
    pub enabled: bool,
    /// Their topic; `{prefix}` stands for `kafka.topic_prefix`.
    pub topic: String,
    /// Only messages with one of these prefixes (all when empty). siphon's
    /// own snapshot watermarks, the outbox prefix and the trace-context
    /// prefix (`correlation.traceparent_message_prefix`) are never
    /// published here.
    pub prefixes: Vec<String>,
}

impl MessagesConfig {
    /// The topic with `{prefix}` replaced.
    pub fn topic_for(&self, topic_prefix: &str) -> String {
        self.topic.replace("{prefix}", topic_prefix)
    }

    /// Whether a message with `prefix` is published on the messages topic.
    pub fn publishes(&self, prefix: &str) -> bool {
        self.enabled && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| p == prefix))
    }
}

/// `[outbox]`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxConfig {
    /// The outbox table (one of `postgres.tables`); `None` when off.
    pub table: Option<TableName>,
    pub id_column: String,
    pub aggregate_type_column: String,
    pub aggregate_id_column: String,
    pub type_column: String,
    pub payload_column: String,
    /// Topic template: `{aggregatetype}` stands for the row's aggregate
    /// type, `{prefix}` for `kafka.topic_prefix`.
    pub topic: String,
    /// Also publish the outbox table's own change events on its table
    /// topic.
    pub publish_table: bool,
    /// Logical messages with this prefix are outbox events too (content:
    /// a JSON object with the same fields as the table's columns); empty
    /// when off.
    pub message_prefix: String,
    /// The payload as written (JSON), or expanded to Avro with a schema
    /// inferred from it and registered (`true`).
    pub expand_payload: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            table: None,
            id_column: "id".to_owned(),
            aggregate_type_column: "aggregatetype".to_owned(),
            aggregate_id_column: "aggregateid".to_owned(),
            type_column: "type".to_owned(),
            payload_column: "payload".to_owned(),
            topic: "outbox.event.{aggregatetype}".to_owned(),
            publish_table: false,
            message_prefix: String::new(),
            expand_payload: false,
        }
    }
}

impl OutboxConfig {
    /// Whether any outbox source is configured.
    pub fn enabled(&self) -> bool {
        self.table.is_some() || !self.message_prefix.is_empty()
    }

    /// Whether `schema.table` is the outbox table.
    pub fn is_table(&self, schema: &str, table: &str) -> bool {
        self.table
            .as_ref()
            .is_some_and(|t| t.schema == schema && t.table == table)
    }

    /// The topic of an event of `aggregate_type`, or why there is none (a
    /// value that cannot be part of a topic name).
    pub fn topic_for(&self, topic_prefix: &str, aggregate_type: &str) -> Result<String, String> {
        if aggregate_type.is_empty() || !aggregate_type.chars().all(is_topic_char) {
            return Err(format!(
                "the aggregate type ({} characters; the value is not logged) cannot be part of a topic name: use letters, digits, '.', '_' and '-' only, not empty",
                aggregate_type.chars().count()
            ));
        }
        Ok(self
            .topic
            .replace("{prefix}", topic_prefix)
            .replace("{aggregatetype}", aggregate_type))
    }
}

pub(super) fn read_messages(mut section: Section) -> MessagesConfig {
    let enabled = section.optional("enabled").unwrap_or(false);
    let topic: String = section
        .optional("topic")
        .unwrap_or_else(|| "{prefix}.message".to_owned());
    check_topic_template(&section, "topic", &topic, &["{prefix}"]);
    let prefixes: Vec<String> = section.optional("prefixes").unwrap_or_default();
    if prefixes.iter().any(String::is_empty) {
        section.problem_at(
            "prefixes",
            "holds an empty prefix: list the prefixes to publish, or leave the list empty for all",
        );
    }
    section.finish();
    MessagesConfig {
        enabled,
        topic,
        prefixes,
    }
}

pub(super) fn read_outbox(mut section: Section, tables: &[TableName]) -> OutboxConfig {
    let defaults = OutboxConfig::default();
    let table = section.optional::<String>("table").and_then(|t| {
        match parse_table(&t) {
            None => section.problem_at(
                "table",
                &format!("{t:?} must be written schema.table, e.g. \"public.outbox\""),
            ),
            Some(t) if !tables.contains(&t) => section.problem_at(
                "table",
                &format!(
                    "{t} is not one of postgres.tables: add it there (siphon must capture it)"
                ),
            ),
            Some(t) => return Some(t),
        }
        None
    });
    let mut column = |key: &str, default: &str| -> String {
        let v: String = section.optional(key).unwrap_or_else(|| default.to_owned());
        if v.is_empty() {
            section.problem_at(key, "must name a column of the outbox table");
        }
        v
    };
    let id_column = column("id_column", &defaults.id_column);
    let aggregate_type_column = column("aggregate_type_column", &defaults.aggregate_type_column);
    let aggregate_id_column = column("aggregate_id_column", &defaults.aggregate_id_column);
    let type_column = column("type_column", &defaults.type_column);
    let payload_column = column("payload_column", &defaults.payload_column);
    let topic: String = section.optional("topic").unwrap_or(defaults.topic);
    check_topic_template(&section, "topic", &topic, &["{prefix}", "{aggregatetype}"]);
    let publish_table = section.optional("publish_table").unwrap_or(false);
    let message_prefix: String = section.optional("message_prefix").unwrap_or_default();
    let expand_payload = section.optional("expand_payload").unwrap_or(false);
    if publish_table && table.is_none() {
        section.problem_at(
            "publish_table",
            "has no effect without outbox.table: set the table or remove publish_table",
        );
    }
    section.finish();
    OutboxConfig {
        table,
        id_column,
        aggregate_type_column,
        aggregate_id_column,
        type_column,
        payload_column,
        topic,
        publish_table,
        message_prefix,
        expand_payload,
    }
}

/// A topic template is a legal topic name once its placeholders are
/// replaced by legal characters.
fn check_topic_template(section: &Section, key: &str, template: &str, placeholders: &[&str]) {
    let mut plain = template.to_owned();
    for p in placeholders {
        plain = plain.replace(p, "x");
    }
    if plain.is_empty() || !plain.chars().all(is_topic_char) {
        section.problem_at(
            key,
            &format!(
                "{template:?} is not a topic name: letters, digits, '.', '_' and '-', with the placeholders {}",
                placeholders.join(", ")
            ),
        );
    }
}
