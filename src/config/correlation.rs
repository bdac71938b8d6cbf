//! The `[correlation]` section: what siphon copies into every event's Kafka
//! headers so consumers can deduplicate and trace (see
//! `crate::pipeline::correlation`).
//!
//! - `traceparent_column`: a column whose value, when it holds a valid W3C
//!   `traceparent`, becomes the event's `traceparent` header. Unset (the
//!   default): no `traceparent` header.
//! - `traceparent_message_prefix`: a transactional logical decoding message
//!   with this prefix (`pg_logical_emit_message(true, 'traceparent',
//!   '00-…')`) gives the events after it in its transaction their
//!   `traceparent` header (a row's own column wins). The position header
//!   (`siphon.position`) is always written and needs no setting.

use super::reader::Section;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorrelationConfig {
    /// Column holding the writing application's W3C trace context.
    pub traceparent_column: Option<String>,
    /// Prefix of the logical messages carrying a transaction's trace
    /// context.
    pub traceparent_message_prefix: Option<String>,
}

/// Reads `[correlation]`.
pub(super) fn read(mut section: Section) -> CorrelationConfig {
    let traceparent_column: Option<String> = section.optional("traceparent_column");
    if traceparent_column.as_deref().is_some_and(str::is_empty) {
        section.problem_at(
            "traceparent_column",
            "must name a column (e.g. \"traceparent\"), or be left out for no traceparent header",
        );
    }
    let traceparent_message_prefix: Option<String> = section.optional("traceparent_message_prefix");
    if traceparent_message_prefix
        .as_deref()
        .is_some_and(str::is_empty)
    {
        section.problem_at(
            "traceparent_message_prefix",
            "must be a message prefix (e.g. \"traceparent\"), or be left out",
        );
    }
    section.finish();
    CorrelationConfig {
        traceparent_column: traceparent_column.filter(|c| !c.is_empty()),
        traceparent_message_prefix: traceparent_message_prefix.filter(|c| !c.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::load_file_with_env;

    const BASE: &str = r#"
name = "shop"
[postgres]
database = "shop"
user = "siphon"
tables = ["public.orders"]
[kafka]
bootstrap_servers = "127.0.0.1:9092"
topic_prefix = "shop"
[registry]
url = "http://127.0.0.1:8081"
"#;

    fn load(extra: &str) -> Result<super::CorrelationConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.toml");
        write!(std::fs::File::create(&path).unwrap(), "{BASE}{extra}").unwrap();
        load_file_with_env(&path, Vec::new())
            .map(|c| c.correlation)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn traceparent_column_is_off_by_default_and_read_when_set() {
        assert_eq!(load("").unwrap().traceparent_column, None);
        let c = load("[correlation]\ntraceparent_column = \"traceparent\"\n").unwrap();
        assert_eq!(c.traceparent_column.as_deref(), Some("traceparent"));
    }

    #[test]
    fn an_empty_column_or_unknown_key_is_named() {
        let err = load("[correlation]\ntraceparent_column = \"\"\n").unwrap_err();
        assert!(
            err.contains("shop.toml: correlation.traceparent_column: must name a column (e.g. \"traceparent\"), or be left out for no traceparent header"),
            "{err}"
        );
        let err = load("[correlation]\ntrace_column = \"tp\"\n").unwrap_err();
        assert!(
            err.contains("correlation.trace_column: unknown key (known keys: traceparent_column, traceparent_message_prefix)"),
            "{err}"
        );
        let err = load("[correlation]\ntraceparent_message_prefix = \"\"\n").unwrap_err();
        assert!(
            err.contains("correlation.traceparent_message_prefix: must be a message prefix"),
            "{err}"
        );
    }
}
