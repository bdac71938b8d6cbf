//! The transactional producer of one connector.
//!
//! librdkafka's transactional calls block, so they run on the blocking pool.
//! Sends are asynchronous inside librdkafka; a Kafka commit waits for every
//! send of its transaction and fails if any of them failed, so delivery
//! errors surface there and never silently drop an event.
//!
//! A commit or abort that fails or times out leaves the transaction's fate
//! unknown: this type never retries it. The caller drops the producer and
//! restarts from the stored offset; the next producer's
//! `init_transactions` fences this one and aborts whatever it left open.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Mutex;

use super::{KafkaError, base_client_config, topic};
use crate::config::ConnectorConfig;

/// One connector's producer plus the topics it knows exist.
pub struct TxProducer {
    connector: String,
    producer: Arc<ThreadedProducer<FenceWatch>>,
    admin: AdminClient<DefaultClientContext>,
    commit_timeout: Duration,
    create_topics: bool,
    partitions: i32,
    replication: i32,
    known_topics: Mutex<HashSet<String>>,
}

impl TxProducer {
    /// Creates the producer and initialises transactions, which fences any
    /// previous instance of this connector.
    pub async fn start(cfg: &ConnectorConfig) -> Result<TxProducer, KafkaError> {
        let connector = cfg.name.to_string();
        let client_err = |what, source| KafkaError::Client {
            connector: connector.clone(),
            what,
            source,
        };
        let defaults = [
            // Java clients (and so Debezium) place keys with murmur2; using
            // it too keeps a key in the same partition whichever wrote it.
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
        ];
        let producer: ThreadedProducer<FenceWatch> = base_client_config(cfg, &defaults)
            .set("transactional.id", topic::transactional_id(&connector))
            .set("enable.idempotence", "true")
            .set(
                "transaction.timeout.ms",
                cfg.kafka.transaction_timeout_ms.to_string(),
            )
            .create_with_context(FenceWatch::default())
            .map_err(|e| client_err("producer", super::redact(cfg, e)))?;
        let admin: AdminClient<DefaultClientContext> = base_client_config(cfg, &[])
            .create()
            .map_err(|e| client_err("admin", super::redact(cfg, e)))?;
        let producer = Arc::new(producer);
        let timeout = Duration::from_millis(cfg.kafka.transaction_timeout_ms);
        let p = Arc::clone(&producer);
        tokio::task::spawn_blocking(move || p.init_transactions(timeout))
            .await?
            .map_err(|source| txn_error(&connector, "init", source))?;
        Ok(TxProducer {
            connector,
            producer,
            admin,
            commit_timeout: Duration::from_millis(cfg.kafka.commit_timeout_ms),
            create_topics: cfg.kafka.create_topics,
            partitions: cfg.kafka.topic_partitions,
            replication: cfg.kafka.topic_replication_factor,
            known_topics: Mutex::new(HashSet::new()),
        })
    }

    pub fn begin(&self) -> Result<(), KafkaError> {
        self.producer
            .begin_transaction()
            .map_err(|source| self.txn_error("begin", source))
    }

    /// Whether librdkafka recorded that a newer instance fenced this
    /// producer. A fencing often surfaces as something else first — a
    /// produce error (`Fatal`, `State`) or a commit that times out — and
    /// treating that as transient would restart this instance, whose new
    /// producer would fence the newer one back: two instances taking turns
    /// for ever instead of one writing.
    fn fenced(&self) -> bool {
        self.producer.context().fenced.load(Ordering::SeqCst)
            || matches!(
                self.producer.client().fatal_error(),
                Some((
                    RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced,
                    _
                ))
            )
    }

    fn txn_error(&self, step: &'static str, source: RdKafkaError) -> KafkaError {
        if self.fenced() {
            return KafkaError::Fenced {
                connector: self.connector.clone(),
                source,
            };
        }
        // A record of the transaction refused as too large (by the broker,
        // whose topic limit can be lower than the client's): the commit
        // fails with the transaction's abortable error, which does not say
        // which record.
        if let Some((topic, bytes)) = self.refused_as_too_large() {
            return KafkaError::RecordTooLarge {
                topic,
                bytes: Some(bytes),
                source,
            };
        }
        txn_error(&self.connector, step, source)
    }

    /// Topic and size (key and value) of a record of the open transaction
    /// refused as too large, if any.
    pub fn refused_as_too_large(&self) -> Option<(String, usize)> {
        self.producer
            .context()
            .too_large
            .lock()
            .ok()
            .and_then(|r| r.clone())
    }

    /// Queues one record of the open transaction. Waits (without blocking
    /// the runtime) while librdkafka's queue is full.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), KafkaError> {
        self.send_with_headers(topic, key, value, &[]).await
    }

    /// [`send`](Self::send) with record headers (name, value).
    pub async fn send_with_headers(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
    ) -> Result<(), KafkaError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if !headers.is_empty() {
            let owned = headers.iter().fold(
                OwnedHeaders::new_with_capacity(headers.len()),
                |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(*value),
                    })
                },
            );
            record = record.headers(owned);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((source, _)) if self.fenced() => {
                    return Err(KafkaError::Fenced {
                        connector: self.connector.clone(),
                        source,
                    });
                }
                Err((source, _)) if super::is_too_large(&source) => {
                    return Err(KafkaError::RecordTooLarge {
                        topic: topic.to_owned(),
                        bytes: Some(key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)),
                        source,
                    });
                }
                Err((source, _)) => {
                    return Err(KafkaError::Produce {
                        topic: topic.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Commits the open transaction: returns only once every record of it
    /// is durably written and visible to read_committed consumers.
    pub async fn commit(&self) -> Result<(), KafkaError> {
        let p = Arc::clone(&self.producer);
        let timeout = self.commit_timeout;
        let injected = crate::failpoint::fires(crate::failpoint::COMMIT_FAILS);
        let result = tokio::task::spawn_blocking(move || match injected.as_deref() {
            None => p.commit_transaction(timeout),
            Some(when) => {
                if when == "after" {
                    p.commit_transaction(timeout)?;
                }
                Err(RdKafkaError::MessageProduction(
                    RDKafkaErrorCode::OperationTimedOut,
                ))
            }
        })
        .await?;
        result.map_err(|source| self.txn_error("commit", source))
    }

    /// Aborts the open transaction (best effort: on failure the next
    /// producer's fencing aborts it).
    pub async fn abort(&self) -> Result<(), KafkaError> {
        let p = Arc::clone(&self.producer);
        let timeout = self.commit_timeout;
        tokio::task::spawn_blocking(move || p.abort_transaction(timeout))
            .await?
            .map_err(|source| self.txn_error("abort", source))
    }

    /// Makes sure `topic` exists, creating it when configured to. `compact`
    /// selects log compaction (the offsets topic).
    pub async fn ensure_topic(&self, name: &str, compact: bool) -> Result<(), KafkaError> {
        let mut known = self.known_topics.lock().await;
        if known.contains(name) {
            return Ok(());
        }
        if self.create_topics {
            let partitions = if compact { 1 } else { self.partitions };
            let mut new =
                NewTopic::new(name, partitions, TopicReplication::Fixed(self.replication));
            if compact {
                new = new.set("cleanup.policy", "compact");
            }
            let opts = AdminOptions::new().operation_timeout(Some(self.commit_timeout));
            let results = self
                .admin
                .create_topics([&new], &opts)
                .await
                .map_err(|source| KafkaError::CreateTopic {
                    topic: name.to_owned(),
                    source,
                })?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((_, code)) => {
                        return Err(KafkaError::CreateTopic {
                            topic: name.to_owned(),
                            source: RdKafkaError::AdminOp(code),
                        });
                    }
                }
            }
        }
        known.insert(name.to_owned());
        Ok(())
    }
}

/// Notices a produce request refused because a newer instance fenced this
/// producer: librdkafka reports that only in the delivery report (as an
/// abortable error of the transaction; later calls then fail with `State`
/// or time out), not as a fatal error. Also keeps the first record refused
/// as too large (topic, key + value bytes), which likewise surfaces only as
/// a failed commit.
#[derive(Default)]
pub struct FenceWatch {
    fenced: AtomicBool,
    too_large: std::sync::Mutex<Option<(String, usize)>>,
}

impl ClientContext for FenceWatch {}

impl ProducerContext for FenceWatch {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((e, message)) = result else {
            return;
        };
        if matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced)
        ) {
            self.fenced.store(true, Ordering::SeqCst);
        }
        if super::is_too_large(e)
            && let Ok(mut first) = self.too_large.lock()
            && first.is_none()
        {
            use rdkafka::message::Message;
            let bytes = message.key_len() + message.payload_len();
            *first = Some((message.topic().to_owned(), bytes));
        }
    }
}

fn txn_error(connector: &str, step: &'static str, source: RdKafkaError) -> KafkaError {
    let fenced = matches!(
        source.rdkafka_error_code(),
        Some(
            // Only a newer instance fences us. An epoch bumped by the
            // coordinator (e.g. after a transaction timeout) is retried.
            RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced
        )
    );
    if fenced {
        KafkaError::Fenced {
            connector: connector.to_owned(),
            source,
        }
    } else {
        KafkaError::Transaction {
            connector: connector.to_owned(),
            step,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;
    use crate::error::ErrorClass;

    /// A broker whose topic limit is lower than the client's refuses the
    /// record at produce time; the commit then fails without saying which
    /// record. librdkafka's mock cluster injects that refusal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_the_broker_refuses_as_too_large_is_fatal_and_named() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.toml");
        write!(
            std::fs::File::create(&path).unwrap(),
            r#"name = "shop"
[postgres]
database = "shop"
user = "siphon"
tables = ["public.orders"]
[kafka]
bootstrap_servers = "{}"
topic_prefix = "shop"
[registry]
url = "http://127.0.0.1:8081"
"#,
            cluster.bootstrap_servers()
        )
        .unwrap();
        let cfg = crate::config::load_file_with_env(&path, Vec::new()).unwrap();
        cluster
            .create_topic("shop.public.orders", 1, 1)
            .expect("mock topic");
        let producer = TxProducer::start(&cfg).await.expect("producer");
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        producer.begin().unwrap();
        producer
            .send("shop.public.orders", Some(b"key"), Some(&[7; 1000]))
            .await
            .unwrap();
        let err = producer.commit().await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Fatal, "{err:?}");
        assert!(
            matches!(
                &err,
                KafkaError::RecordTooLarge { topic, bytes: Some(1003), .. } if topic == "shop.public.orders"
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(
                "Kafka refused a record of 1003 bytes (key and value) to topic shop.public.orders as too large: it can never be written. Fix: raise max.message.bytes of topic shop.public.orders on the broker"
            ),
            "{err}"
        );
    }

    #[test]
    fn too_large_errors_are_fatal_whatever_reports_them() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::MessageBatchTooLarge,
        ] {
            let produce = KafkaError::Produce {
                topic: "t".into(),
                source: RdKafkaError::MessageProduction(code),
            };
            assert_eq!(produce.class(), ErrorClass::Fatal);
        }
        let timeout = KafkaError::Produce {
            topic: "t".into(),
            source: RdKafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        };
        assert_eq!(timeout.class(), ErrorClass::Transient);
    }
}
