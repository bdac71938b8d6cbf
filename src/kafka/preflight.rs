//! The Kafka part of `siphon check`: the brokers answer, transactions are
//! allowed for this connector, and its topics exist or may be created.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

use super::{base_client_config, topic};
use crate::check::Finding;
use crate::config::ConnectorConfig;

const COMPONENT: &str = "kafka";

pub async fn check(cfg: &ConnectorConfig) -> Vec<Finding> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || check_blocking(&cfg))
        .await
        .unwrap_or_else(|e| vec![Finding::problem(COMPONENT, format!("check failed: {e}"))])
}

fn check_blocking(cfg: &ConnectorConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let bootstrap = &cfg.kafka.bootstrap_servers;
    let timeout = Duration::from_millis(cfg.kafka.commit_timeout_ms.min(15_000));
    let consumer: BaseConsumer = match base_client_config(cfg, &[]).create() {
        Ok(c) => c,
        Err(e) => {
            let e = super::redact(cfg, e);
            out.push(Finding::problem(
                COMPONENT,
                format!("invalid client settings: {e}; check kafka.properties"),
            ));
            return out;
        }
    };
    let metadata = match consumer.fetch_metadata(None, timeout) {
        Ok(m) => m,
        Err(e) => {
            out.push(Finding::problem(
                COMPONENT,
                format!(
                    "cannot reach Kafka at {bootstrap}: {e}; check kafka.bootstrap_servers and the security settings in kafka.properties"
                ),
            ));
            return out;
        }
    };
    out.push(Finding::ok(
        COMPONENT,
        format!(
            "reached {bootstrap} ({} broker(s))",
            metadata.brokers().len()
        ),
    ));

    // A transactional id of its own, so the check never fences a running
    // connector; ACLs granted on the prefix siphon-<name> cover it.
    let check_id = format!("{}-check", topic::transactional_id(cfg.name.as_str()));
    let transactions = base_client_config(cfg, &[])
        .set("transactional.id", &check_id)
        .set(
            "transaction.timeout.ms",
            cfg.kafka.transaction_timeout_ms.to_string(),
        )
        .create::<ThreadedProducer<DefaultProducerContext>>()
        .and_then(|p| p.init_transactions(timeout));
    match transactions {
        Ok(()) => out.push(Finding::ok(COMPONENT, "transactions are allowed".to_owned())),
        Err(e) => out.push(Finding::problem(
            COMPONENT,
            format!(
                "cannot initialise a transactional producer: {}; siphon needs transactions (brokers with transaction.state.log settings that fit the cluster, and WRITE/DESCRIBE on transactional ids with prefix {})",
                super::redact(cfg, e),
                topic::transactional_id(cfg.name.as_str())
            ),
        )),
    }

    out.push(record_limit_finding(cfg));

    let existing: Vec<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();
    let mut wanted = vec![cfg.kafka.offsets_topic.clone()];
    wanted.extend(
        cfg.postgres
            .tables
            .iter()
            .map(|t| topic::table_topic(&cfg.kafka.topic_prefix, &t.schema, &t.table)),
    );
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|t| !existing.contains(&t.as_str()))
        .collect();
    if missing.is_empty() {
        out.push(Finding::ok(
            COMPONENT,
            format!("all {} topic(s) exist", wanted.len()),
        ));
    } else if cfg.kafka.create_topics {
        out.push(Finding::ok(
            COMPONENT,
            format!(
                "{} topic(s) do not exist yet and will be created: {}",
                missing.len(),
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    } else {
        out.push(Finding::problem(
            COMPONENT,
            format!(
                "topics missing and kafka.create_topics is false: {} (the offsets topic should be compacted)",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    out
}

/// The largest record siphon will produce, and where that comes from: a
/// row over it stops the connector (checked before producing).
fn record_limit_finding(cfg: &ConnectorConfig) -> Finding {
    let max = super::message_max_bytes(cfg);
    let source = if cfg.kafka.properties.contains_key("message.max.bytes") {
        "set in kafka.properties"
    } else {
        "librdkafka's default"
    };
    Finding::ok(
        COMPONENT,
        format!(
            "records up to {} bytes of key, value and headers are produced: message.max.bytes is {max} ({source}), less {} bytes of record overhead; a larger row stops the connector. The topics' max.message.bytes on the broker must be at least {max}",
            super::record_limit_bytes(cfg),
            super::RECORD_OVERHEAD_BYTES
        ),
    )
}
