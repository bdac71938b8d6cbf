//! The `[heartbeat]` section, Debezium's `heartbeat.*` options: an action
//! query siphon runs periodically on a normal connection
//! (`heartbeat.action.query`), and heartbeat records written to Kafka
//! (`heartbeat.interval.ms` with the topic `__debezium-heartbeat.{prefix}`).
//!
//! The query's purpose is WAL safety: a change it makes in a published
//! table gives the slot something to confirm even when the slot's own
//! database is idle while others on the same server are busy
//! (docs/operations.md, "WAL retention"). The records show consumers that
//! the pipeline is alive while the captured tables are idle.
//!
//! `interval_ms` paces both; it must be set when either is on, and it does
//! nothing alone, so a half-configured heartbeat never silently does
//! nothing.

use super::reader::Section;

#[derive(Clone, Debug, Default)]
pub struct HeartbeatConfig {
    /// How often to run `action_query` and to write a heartbeat record;
    /// 0 turns both off.
    pub interval_ms: u64,
    /// The SQL to run (e.g. an UPDATE of a heartbeat table in the
    /// publication). Present only when `interval_ms > 0`.
    pub action_query: Option<String>,
    /// Write a heartbeat record every `interval_ms` (off by default).
    pub emit_records: bool,
    /// The heartbeat topic; `None` means Debezium's
    /// `__debezium-heartbeat.{topic_prefix}`.
    pub topic: Option<String>,
}

impl HeartbeatConfig {
    /// The interval at which records are written, when they are.
    pub fn records_interval_ms(&self) -> Option<u64> {
        (self.emit_records && self.interval_ms > 0).then_some(self.interval_ms)
    }

    /// The heartbeat topic for a connector with this topic prefix.
    pub fn topic(&self, topic_prefix: &str) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("__debezium-heartbeat.{topic_prefix}"))
    }
}

/// Reads and finishes `[heartbeat]`.
pub(super) fn read_heartbeat(mut section: Section) -> HeartbeatConfig {
    let interval_ms: u64 = section.optional("interval_ms").unwrap_or(0);
    let action_query: Option<String> = section
        .optional::<String>("action_query")
        .filter(|q| !q.trim().is_empty());
    let emit_records: bool = section.optional("emit_records").unwrap_or(false);
    let topic: Option<String> = section.optional("topic");
    let used = action_query.is_some() || emit_records;
    match (interval_ms, used) {
        (0, true) => {
            let key = if action_query.is_some() {
                "action_query"
            } else {
                "emit_records"
            };
            section.problem_at(
                key,
                &format!("has no effect while heartbeat.interval_ms is 0 (off); set interval_ms (e.g. 10000) or remove {key}"),
            );
        }
        (i, false) if i > 0 => section.problem_at(
            "action_query",
            "is required when heartbeat.interval_ms > 0 (unless heartbeat.emit_records = true): the SQL to run at each interval, e.g. \"UPDATE siphon_heartbeat SET ts = now()\"",
        ),
        (i, true) if i > 0 => section.at_least("interval_ms", i, 100),
        _ => {}
    }
    if topic.is_some() && !emit_records {
        section.problem_at(
            "topic",
            "has no effect while heartbeat.emit_records is false; set emit_records = true or remove topic",
        );
    }
    if topic.as_deref().is_some_and(|t| t.trim().is_empty()) {
        section.problem_at(
            "topic",
            "must not be empty: remove it for the default \"__debezium-heartbeat.{topic_prefix}\"",
        );
    }
    section.finish();
    HeartbeatConfig {
        interval_ms,
        action_query: if interval_ms > 0 { action_query } else { None },
        emit_records: emit_records && interval_ms > 0,
        topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_need_the_flag_and_an_interval_and_default_to_debeziums_topic() {
        let mut c = HeartbeatConfig {
            interval_ms: 5000,
            emit_records: true,
            ..HeartbeatConfig::default()
        };
        assert_eq!(c.records_interval_ms(), Some(5000));
        assert_eq!(c.topic("shop"), "__debezium-heartbeat.shop");
        c.topic = Some("beats".into());
        assert_eq!(c.topic("shop"), "beats");
        c.emit_records = false;
        assert_eq!(c.records_interval_ms(), None);
        assert_eq!(HeartbeatConfig::default().records_interval_ms(), None);
    }
}
