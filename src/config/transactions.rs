//! The `[transactions]` section: Debezium's `provide.transaction.metadata`.
//!
//! Off by default. When on, every source transaction that produced events
//! gets a BEGIN and an END record on the transaction topic (default
//! `{topic_prefix}.transaction`, Debezium's), and every streamed event's
//! envelope carries its `transaction` block.

use super::reader::Section;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransactionsConfig {
    pub enabled: bool,
    /// The transaction topic; `None` means `{topic_prefix}.transaction`.
    pub topic: Option<String>,
}

impl TransactionsConfig {
    /// The transaction topic for a connector with this topic prefix.
    pub fn topic(&self, topic_prefix: &str) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("{topic_prefix}.transaction"))
    }
}

/// Reads and finishes `[transactions]` (missing = off).
pub(super) fn read_transactions(mut section: Section) -> TransactionsConfig {
    let enabled: bool = section.optional("enabled").unwrap_or(false);
    let topic: Option<String> = section.optional("topic");
    if topic.as_deref().is_some_and(|t| t.trim().is_empty()) {
        section.problem_at(
            "topic",
            "must not be empty: remove it for the default \"{topic_prefix}.transaction\"",
        );
    }
    if topic.is_some() && !enabled {
        section.problem_at(
            "topic",
            "has no effect while transactions.enabled is false; set enabled = true or remove topic",
        );
    }
    section.finish();
    TransactionsConfig { enabled, topic }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_defaults_to_debeziums() {
        let on = TransactionsConfig {
            enabled: true,
            topic: None,
        };
        assert_eq!(on.topic("shop"), "shop.transaction");
        let named = TransactionsConfig {
            enabled: true,
            topic: Some("tx".into()),
        };
        assert_eq!(named.topic("shop"), "tx");
        assert!(!TransactionsConfig::default().enabled);
    }
}
