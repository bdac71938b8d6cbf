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
        "offset record of connector {connector} in topic {topic} is unreadable: {reason}; it was not written by this version of siphon"
    )]
    CorruptOffset {
        connector: String,
        topic: String,
        reason: String,
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
