//! The consume loop every reference consumer shares: read_committed,
//! decode, apply in batches, make the store durable, then commit offsets.
//!
//! Partitions are assigned (`assign()`, every partition of every table
//! topic `{topic_prefix}.{schema}.{table}`, re-listed every few seconds so new
//! tables are picked up) and start at the group's committed offsets, or at
//! the beginning. One instance per group: this is a reference for the
//! apply logic, not for scaling out (use `subscribe()` and a rebalance
//! callback that flushes the store for that).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::decode::{Change, Decoder, POSITION_HEADER};

/// Settings every consumer takes (flags or environment variables).
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,
    /// Schema registry URL.
    #[arg(long, env = "REGISTRY_URL", default_value = "http://127.0.0.1:8081")]
    pub registry_url: String,
    /// The connector's `kafka.topic_prefix`: every topic `{prefix}.*` is read.
    #[arg(long, env = "TOPIC_PREFIX", default_value = "shop")]
    pub topic_prefix: String,
    /// Consumer group whose committed offsets say where to resume.
    #[arg(long, env = "GROUP_ID")]
    pub group_id: Option<String>,
    /// Most records applied per batch (one store commit, one offset commit).
    #[arg(long, env = "BATCH_MAX_RECORDS", default_value_t = 500)]
    pub batch_max_records: usize,
    /// Longest a batch collects before it is applied.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 200)]
    pub batch_linger_ms: u64,
    /// Testing aid: exit abruptly after applying this many batches, before
    /// committing that batch's offsets (what a crash at the worst moment
    /// does). 0: never.
    #[arg(long, env = "CRASH_AFTER_APPLY_BATCHES", default_value_t = 0)]
    pub crash_after_apply_batches: u64,
}

/// A store changes are applied to.
pub trait Store {
    /// Applies a batch: each change only if its position is newer than
    /// what the store holds for its key and than its table's last truncate.
    /// Returns how many were applied (the rest were replays or older).
    fn apply(&mut self, batch: &[Change]) -> Result<usize>;
    /// Makes everything applied durable; called before offsets commit.
    fn flush(&mut self) -> Result<()>;
}

/// Runs until killed (or an error).
pub fn run(args: &CommonArgs, store: &mut dyn Store) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set(
            "group.id",
            args.group_id
                .as_deref()
                .context("--group-id (or GROUP_ID) is required: the consumer group whose offsets say where to resume")?,
        )
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("kafka consumer")?;
    let mut decoder = Decoder::new(&args.registry_url)?;
    let mut assigned: HashMap<(String, i32), ()> = HashMap::new();
    let mut listed: Option<Instant> = None;
    let mut batches = 0u64;
    let linger = Duration::from_millis(args.batch_linger_ms);
    let prefix = format!("{}.", args.topic_prefix);
    loop {
        if listed.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            assign_new(&consumer, &prefix, &mut assigned)?;
            listed = Some(Instant::now());
        }
        // Collect a batch: up to batch_max_records or batch_linger_ms.
        let started = Instant::now();
        let mut changes = Vec::new();
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        while changes.len() < args.batch_max_records && started.elapsed() < linger {
            let Some(m) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let m = m.context("kafka poll")?;
            let position = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == POSITION_HEADER))
                .and_then(|h| h.value);
            let mut change = decoder
                .change(m.topic(), m.key(), m.payload(), position)
                .with_context(|| {
                    format!(
                        "{} partition {} offset {}",
                        m.topic(),
                        m.partition(),
                        m.offset()
                    )
                })?;
            change.partition = m.partition();
            change.offset = m.offset();
            next.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            changes.push(change);
        }
        if changes.is_empty() {
            continue;
        }
        let applied = store.apply(&changes)?;
        store.flush()?;
        batches += 1;
        let tombstones = changes
            .iter()
            .filter(|c| c.kind == crate::ChangeKind::Tombstone)
            .count();
        eprintln!(
            "consumer: batch {batches}: {} records, {applied} applied, {tombstones} tombstones, {} older or replayed",
            changes.len(),
            changes.len().saturating_sub(applied + tombstones)
        );
        if args.crash_after_apply_batches > 0 && batches >= args.crash_after_apply_batches {
            eprintln!("consumer: exiting before committing offsets (CRASH_AFTER_APPLY_BATCHES)");
            std::process::exit(3);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .context("committing consumer offsets")?;
    }
}

/// Assigns partitions of `{prefix}*` topics not assigned yet, from the
/// group's committed offsets (or the beginning).
fn assign_new(
    consumer: &BaseConsumer,
    prefix: &str,
    assigned: &mut HashMap<(String, i32), ()>,
) -> Result<()> {
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .context("kafka metadata")?;
    let mut fresh = TopicPartitionList::new();
    for t in metadata.topics() {
        // Table topics only: `{prefix}.{schema}.{table}`.
        let table_topic = t
            .name()
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.matches('.').count() == 1);
        if !table_topic || t.error().is_some() {
            continue;
        }
        for p in t.partitions() {
            if !assigned.contains_key(&(t.name().to_owned(), p.id())) {
                fresh.add_partition(t.name(), p.id());
            }
        }
    }
    if fresh.count() == 0 {
        return Ok(());
    }
    let committed = consumer
        .committed_offsets(fresh, timeout)
        .context("reading the group's committed offsets")?;
    let mut start = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start.add_partition_offset(e.topic(), e.partition(), offset)?;
        assigned.insert((e.topic().to_owned(), e.partition()), ());
    }
    consumer.incremental_assign(&start).context("assign")?;
    Ok(())
}
