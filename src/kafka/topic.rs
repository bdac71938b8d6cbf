//! Topic and subject naming.
//!
//! Kafka topic names are `[a-zA-Z0-9._-]`, at most 249 characters. Like
//! Debezium's topic naming strategy, siphon replaces every other character
//! of a schema or table name with `_` (one per UTF-16 unit, as Java
//! counts), so `public."order items"` goes to `{prefix}.public.order_items`.
//! Two captured tables that end up with one topic are refused at preflight
//! (`crate::postgres::catalog`), never merged.

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// The topic of a table: `{prefix}.{schema}.{table}`, as Debezium names it,
/// with characters Kafka forbids replaced by `_`.
pub fn table_topic(prefix: &str, schema: &str, table: &str) -> String {
    let mut topic = String::with_capacity(prefix.len() + schema.len() + table.len() + 2);
    topic.push_str(prefix);
    for part in [schema, table] {
        topic.push('.');
        for c in part.chars() {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                topic.push(c);
            } else {
                topic.extend(std::iter::repeat_n('_', c.len_utf16()));
            }
        }
    }
    topic
}

/// Confluent's TopicNameStrategy subject for a topic's keys.
pub fn key_subject(topic: &str) -> String {
    format!("{topic}-key")
}

/// Confluent's TopicNameStrategy subject for a topic's values.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// The Kafka transactional id of a connector: stable across restarts so a
/// new instance fences the previous one.
pub fn transactional_id(connector: &str) -> String {
    format!("siphon-{connector}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_debezium_and_topic_name_strategy() {
        let t = table_topic("shop", "public", "orders");
        assert_eq!(t, "shop.public.orders");
        assert_eq!(key_subject(&t), "shop.public.orders-key");
        assert_eq!(value_subject(&t), "shop.public.orders-value");
        assert_eq!(transactional_id("shop"), "siphon-shop");
    }

    #[test]
    fn characters_kafka_forbids_become_underscores() {
        assert_eq!(
            table_topic("shop", "My Schema", "order items"),
            "shop.My_Schema.order_items"
        );
        assert_eq!(table_topic("p", "public", "a-b.c_1"), "p.public.a-b.c_1");
        assert_eq!(table_topic("p", "public", "größe"), "p.public.gr__e");
        assert_eq!(table_topic("p", "s", "🦀"), "p.s.__");
    }
}
