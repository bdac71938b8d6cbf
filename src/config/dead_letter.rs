//! The `[dead_letter]` section: where rows go that cannot be written.
//!
//! Off by default: a row the encoder refuses, or one too large for a Kafka
//! record, stops the connector with a fatal error naming it. With `topic`
//! set, such a row becomes a dead-letter record on that topic instead (its
//! position, table, key, the error and its raw text values), written in the
//! same Kafka transaction as the events around it.

use super::reader::Section;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterConfig {
    /// The dead-letter topic; `None`: off (stop on such a row).
    pub topic: Option<String>,
}

/// Reads and finishes `[dead_letter]` (missing = off).
pub(super) fn read_dead_letter(mut section: Section) -> DeadLetterConfig {
    let topic: Option<String> = section.optional("topic");
    if topic.as_deref().is_some_and(|t| t.trim().is_empty()) {
        section.problem_at(
            "topic",
            "must not be empty: name a topic (e.g. \"siphon.dead-letter\") or remove the key to stop on rows that cannot be written",
        );
    }
    section.finish();
    DeadLetterConfig {
        topic: topic.filter(|t| !t.trim().is_empty()),
    }
}
