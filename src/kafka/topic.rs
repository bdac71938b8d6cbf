//! Topic and subject naming.

/// The topic of a table: `{prefix}.{schema}.{table}`, as Debezium names it.
pub fn table_topic(prefix: &str, schema: &str, table: &str) -> String {
    format!("{prefix}.{schema}.{table}")
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
}
