//! A tansu broker (a real Kafka-protocol broker, memory storage) per test,
//! on a free loopback port, and a read_committed consumer that reads topics
//! back.
//!
//! tansu does not list aborted transactions in Fetch responses (DESIGN.md,
//! "Known broker gaps"): records of aborted transactions are visible to a
//! read_committed consumer that reads from the broker directly. Tests that
//! rely on isolation of aborted transactions put the faithful proxy
//! (`kafka_proxy`) between every client and the broker and read through it.

#![allow(dead_code)]

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The tansu binary: `$SIPHON_TANSU`, `~/.cargo/bin/tansu`, or `tansu` on PATH.
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SIPHON_TANSU") {
        return PathBuf::from(p);
    }
    if let Ok(home) = std::env::var("HOME") {
        let p = PathBuf::from(home).join(".cargo/bin/tansu");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("tansu")
}

pub struct Broker {
    child: Child,
    pub port: u16,
    pub bootstrap: String,
    log: PathBuf,
    storage: String,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with_storage("memory://tansu/", &[])
    }

    /// A broker on `storage` (tansu's `--storage-engine`), with `env` for
    /// it (e.g. S3 credentials). With storage that outlives the process,
    /// [`Broker::restart`] keeps the data.
    pub fn start_with_storage(storage: &str, env: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir for tansu");
        let port = free_port();
        let log = dir.path().join("tansu.log");
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>();
        let child = spawn_tansu(port, &log, storage, &env);
        let broker = Broker {
            child,
            port,
            bootstrap: format!("127.0.0.1:{port}"),
            log,
            storage: storage.to_owned(),
            env,
            _dir: dir,
        };
        broker.wait_listening();
        broker
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and
    /// storage. With memory storage everything is lost.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_tansu(self.port, &self.log, &self.storage, &self.env);
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let port = self.port;
        let broker = self;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {port}: {}",
                broker.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_tansu(port: u16, log: &std::path::Path, storage: &str, env: &[(String, String)]) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("tansu log file");
    Command::new(tansu_binary())
        .arg("broker")
        .arg("--listener-url")
        .arg(&url)
        .arg("--advertised-listener-url")
        .arg(&url)
        .arg("--storage-engine")
        .arg(storage)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::from(log_file.try_clone().expect("log handle")))
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start tansu ({}): {e}; .ci/run installs it",
                tansu_binary().display()
            )
        })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One record as a consumer sees it.
#[derive(Clone, Debug)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Record headers (name, value), in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads every committed record of `topic` (all partitions) with
/// `isolation.level=read_committed`, up to the current end. A topic that
/// does not exist yet reads as empty.
pub fn read_committed(bootstrap: &str, topic: &str) -> Vec<Record> {
    read_committed_with(bootstrap, topic, &[])
}

/// [`read_committed`] with extra consumer `settings` (e.g. small fetch
/// sizes, so that one transaction spans several Fetch responses).
pub fn read_committed_with(bootstrap: &str, topic: &str, settings: &[(&str, &str)]) -> Vec<Record> {
    let Some((consumer, pending)) = assign_all(bootstrap, topic, settings) else {
        return Vec::new();
    };
    drain_assigned(&consumer, topic, pending)
}

/// A read_committed consumer (other `settings` override) assigned to every
/// non-empty partition of `topic` from its beginning, and those
/// partitions; None when the topic does not exist or is empty.
pub fn assign_all(
    bootstrap: &str,
    topic: &str,
    settings: &[(&str, &str)],
) -> Option<(BaseConsumer, HashSet<i32>)> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "siphon-tests")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("allow.auto.create.topics", "false");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("test consumer");
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut pending = HashSet::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .expect("watermarks");
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("assign");
            pending.insert(p);
        }
    }
    if pending.is_empty() {
        return None;
    }
    consumer.assign(&tpl).expect("assign");
    Some((consumer, pending))
}

/// How long a reader waits for the next record before it gives up.
pub const READ_IDLE: Duration = Duration::from_secs(120);

/// Polls an assigned consumer until every partition in `pending` reported
/// its end, handing each message to `each` in arrival order. Fails after
/// [`READ_IDLE`] without a message, however long the whole read takes.
pub fn drain_each(
    consumer: &BaseConsumer,
    topic: &str,
    mut pending: HashSet<i32>,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) {
    let mut idle_since = Instant::now();
    while !pending.is_empty() {
        assert!(
            idle_since.elapsed() < READ_IDLE,
            "reading {topic}: nothing for {READ_IDLE:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                idle_since = Instant::now();
                each(&m);
            }
        }
    }
}

/// Polls an assigned consumer until every partition in `pending` reported
/// its end, and returns the records in (partition, offset) order.
pub fn drain_assigned(consumer: &BaseConsumer, topic: &str, pending: HashSet<i32>) -> Vec<Record> {
    let mut out = Vec::new();
    drain_each(consumer, topic, pending, |m| {
        out.push(Record {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        })
    });
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Writes one record to `topic` in a Kafka transaction of its own (another
/// transactional id than any siphon connector's) and commits it, so that
/// read_committed consumers — siphon's offset reader among them — see it.
pub fn write_committed(bootstrap: &str, topic: &str, key: &[u8], value: Option<&[u8]>) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", "siphon-tests-writer")
        .create()
        .expect("test producer");
    let timeout = Duration::from_secs(30);
    producer
        .init_transactions(timeout)
        .expect("init transactions");
    producer.begin_transaction().expect("begin");
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer.send(record).map_err(|(e, _)| e).expect("send");
    producer.commit_transaction(timeout).expect("commit");
}
