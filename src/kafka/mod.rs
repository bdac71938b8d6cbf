//! Kafka: the transactional producer that publishes events and offsets
//! together, the offset store, and topic naming.
//!
//! Exactly-once rests on two Kafka features used here and nowhere else:
//! a stable `transactional.id` per connector (a new instance fences the old
//! one and makes the broker abort its open transaction) and
//! `isolation.level=read_committed` when reading the stored offset back.

pub mod offsets;
pub mod preflight;
pub mod producer;
pub mod topic;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};

use crate::config::ConnectorConfig;
use crate::error::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot create the Kafka {what} client for connector {connector}")]
    Client {
        connector: String,
        what: &'static str,
        #[source]
        source: RdKafkaError,
    },
    #[error("Kafka transaction {step} failed for connector {connector}")]
    Transaction {
        connector: String,
        step: &'static str,
        #[source]
        source: RdKafkaError,
    },
    #[error(
        "this instance of connector {connector} was fenced: another instance with the same transactional id took over"
    )]
    Fenced {
        connector: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("cannot produce to topic {topic}")]
    Produce {
        topic: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("cannot create topic {topic}")]
    CreateTopic {
        topic: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("cannot read the offset of connector {connector} from topic {topic}")]
    ReadOffset {
        connector: String,
        topic: String,
        #[source]
        source: RdKafkaError,
    },
    #[error(
        "timed out after {timeout_ms} ms reading the offset of connector {connector} from topic {topic}"
    )]
    ReadOffsetTimeout {
        connector: String,
        topic: String,
        timeout_ms: u64,
    },
    #[error("the offset read of connector {connector} was abandoned: shutting down")]
    ReadOffsetAbandoned { connector: String },
    #[error(
        "offset record of connector {connector} in topic {topic} is invalid: {reason}. \
         It is damaged or was not written by siphon, and nothing was acknowledged to PostgreSQL. \
         Fix: if another tool writes this key, give siphon an offsets topic of its own (kafka.offsets_topic); \
         otherwise reset the connector (docs/operations.md, \"Resetting a connector\")"
    )]
    CorruptOffset {
        connector: String,
        topic: String,
        reason: String,
    },
    #[error(
        "Kafka refused a record{} to topic {topic} as too large: it can never be written. \
         Fix: raise max.message.bytes of topic {topic} on the broker (it can be lower than the client's \
         kafka.properties.\"message.max.bytes\", which siphon checks before producing) together with \
         kafka.properties.\"message.max.bytes\" (librdkafka counts the whole record: key, value and headers), \
         then restart siphon, which resumes at its stored offset",
        .bytes.map(|b| format!(" of {b} bytes (key and value)")).unwrap_or_default()
    )]
    RecordTooLarge {
        topic: String,
        /// Key plus value, when known.
        bytes: Option<usize>,
        #[source]
        source: RdKafkaError,
    },
    #[error("a blocking Kafka call panicked or was cancelled")]
    Join(#[from] tokio::task::JoinError),
}

impl KafkaError {
    pub fn class(&self) -> ErrorClass {
        match self {
            // Another instance owns the connector now; restarting would just
            // fence it back and forth.
            KafkaError::Fenced { .. } => ErrorClass::Fatal,
            KafkaError::CorruptOffset { .. } => ErrorClass::Fatal,
            // The same record is refused again after every restart, while
            // the slot holds WAL: an operator must raise the limits.
            KafkaError::RecordTooLarge { .. } => ErrorClass::Fatal,
            KafkaError::Produce { source, .. } | KafkaError::Transaction { source, .. }
                if is_too_large(source) =>
            {
                ErrorClass::Fatal
            }
            KafkaError::Client { source, .. } if is_config_error(source) => ErrorClass::Fatal,
            KafkaError::CreateTopic { source, .. } if is_authorization_error(source) => {
                ErrorClass::Fatal
            }
            // Everything else — timeouts, broker restarts, network cuts,
            // commits of unknown fate — is retried by restarting the
            // connector from its stored offset with a fresh producer.
            _ => ErrorClass::Transient,
        }
    }
}

fn is_config_error(e: &RdKafkaError) -> bool {
    matches!(e, RdKafkaError::ClientConfig(..))
}

/// librdkafka's own size check and the broker's (a record, or a batch of
/// one record, over the topic's `max.message.bytes`: `MessageSizeTooLarge`;
/// `RECORD_LIST_TOO_LARGE` / `MessageBatchTooLarge`, code 18).
pub(crate) fn is_too_large(e: &RdKafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

/// librdkafka's `message.max.bytes` when `kafka.properties` does not set it.
pub const DEFAULT_MESSAGE_MAX_BYTES: u64 = 1_000_000;

/// What a record of one key and value costs beyond their bytes at most:
/// librdkafka's per-record overhead (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`,
/// 36 bytes of varints and attributes, which it adds before comparing with
/// `message.max.bytes`) plus the 61-byte v2 record batch header the broker
/// counts against the topic's `max.message.bytes`.
pub const RECORD_OVERHEAD_BYTES: u64 = 36 + 61;

/// The effective `message.max.bytes` of the connector's producer.
pub fn message_max_bytes(cfg: &ConnectorConfig) -> u64 {
    cfg.kafka
        .properties
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

/// The largest key plus value siphon produces: larger ones are refused
/// before producing, as librdkafka or the broker would refuse them.
pub fn record_limit_bytes(cfg: &ConnectorConfig) -> u64 {
    message_max_bytes(cfg).saturating_sub(RECORD_OVERHEAD_BYTES)
}

fn is_authorization_error(e: &RdKafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
        )
    )
}

/// `e` with every value of a secret property (`kafka.properties_env`,
/// `kafka.properties_file`) replaced by `***`: librdkafka's configuration
/// errors quote the value they refuse, and these errors reach logs and
/// `siphon check`'s report.
pub(crate) fn redact(cfg: &ConnectorConfig, e: RdKafkaError) -> RdKafkaError {
    let secrets = &cfg.kafka.secret_properties;
    let scrub = |text: &str| {
        secrets
            .values()
            .map(|s| s.expose())
            .filter(|s| !s.is_empty())
            .fold(text.to_owned(), |t, s| t.replace(s, "***"))
    };
    match e {
        RdKafkaError::ClientConfig(res, desc, key, value) => {
            let value = if secrets.contains_key(&key) {
                "***".to_owned()
            } else {
                scrub(&value)
            };
            RdKafkaError::ClientConfig(res, scrub(&desc), key, value)
        }
        RdKafkaError::ClientCreation(text) => RdKafkaError::ClientCreation(scrub(&text)),
        other => other,
    }
}

/// The settings every client of a connector shares: brokers, siphon's
/// `defaults` for this client, then the user's pass-through properties
/// (security, compression, ...), which win over the defaults.
pub(crate) fn base_client_config(cfg: &ConnectorConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    c.set("client.id", format!("siphon-{}", cfg.name));
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    for (k, v) in &cfg.kafka.secret_properties {
        c.set(k, v.expose());
    }
    c
}

#[cfg(test)]
mod redaction_tests {
    use rdkafka::consumer::BaseConsumer;

    use super::*;
    use crate::config::Secret;

    #[test]
    fn a_refused_secret_property_value_is_not_in_the_error() {
        const PLANTED: &str = "Planted-Kafka-Secret-93c1";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.toml");
        std::fs::write(
            &file,
            "name = \"shop\"\n[postgres]\nhost = \"127.0.0.1\"\ndatabase = \"shop\"\nuser = \"siphon\"\ntables = [\"public.orders\"]\n\
             [kafka]\nbootstrap_servers = \"127.0.0.1:9\"\ntopic_prefix = \"shop\"\n[registry]\nurl = \"http://127.0.0.1:8081\"\n",
        )
        .unwrap();
        let mut cfg = crate::config::load_file(&file).unwrap();
        // An enum-valued property librdkafka refuses, quoting the value.
        cfg.kafka
            .secret_properties
            .insert("security.protocol".into(), Secret::new(PLANTED.into()));
        let raw = base_client_config(&cfg, &[])
            .create::<BaseConsumer>()
            .err()
            .expect("librdkafka refuses the value");
        assert!(
            raw.to_string().contains(PLANTED),
            "the test assumes librdkafka quotes the value: {raw}"
        );
        let redacted = redact(&cfg, raw).to_string();
        assert!(!redacted.contains(PLANTED), "{redacted}");
        assert!(redacted.contains("security.protocol"), "{redacted}");
    }
}
