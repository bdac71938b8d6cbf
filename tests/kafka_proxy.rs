//! The faithful Kafka proxy of the test bed (`support::kafka_proxy`) against
//! a real tansu broker and real librdkafka clients: read_committed consumers
//! reading through it never see records of aborted or fenced transactions,
//! tansu alone still shows them (DESIGN.md, "Known broker gaps"), and its
//! faults reach the clients.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::kafka::{Broker, Record, drain_assigned, read_committed, read_committed_with};
use support::kafka_proxy::{Aborted, Batch, KafkaProxy, PartitionLog};

const TIMEOUT: Duration = Duration::from_secs(30);

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        ))
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

type TxProducer = ThreadedProducer<DefaultProducerContext>;

/// A transactional producer, initialised (which fences any earlier producer
/// with the same `transactional.id`).
fn producer(bootstrap: &str, transactional_id: &str) -> TxProducer {
    let p: TxProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    p.init_transactions(TIMEOUT).expect("init_transactions");
    p
}

fn send(p: &TxProducer, topic: &str, partition: i32, value: &str) {
    p.send(
        BaseRecord::to(topic)
            .partition(partition)
            .key(value)
            .payload(value),
    )
    .unwrap_or_else(|(e, _)| panic!("send {value}: {e}"));
}

/// One transaction of `values` to partition 0, committed or aborted.
fn transaction(p: &TxProducer, topic: &str, values: &[String], commit: bool) {
    p.begin_transaction().expect("begin");
    for v in values {
        send(p, topic, 0, v);
    }
    if commit {
        p.commit_transaction(TIMEOUT).expect("commit");
    } else {
        p.flush(TIMEOUT).expect("flush before abort");
        p.abort_transaction(TIMEOUT).expect("abort");
    }
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn payloads(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().expect("value")).expect("utf-8"))
        .collect()
}

fn assert_clean(proxy: &KafkaProxy) {
    assert_eq!(proxy.errors(), Vec::<String>::new(), "proxy errors");
}

/// Committed, aborted, committed: returns (committed values in order,
/// aborted values).
fn explicit_abort(bootstrap: &str, topic: &str) -> (Vec<String>, Vec<String>) {
    create_topic(bootstrap, topic, 1);
    let p = producer(bootstrap, &format!("{topic}-tx"));
    let (c1, aborted, c2) = (values("c1", 5), values("aborted", 5), values("c2", 5));
    transaction(&p, topic, &c1, true);
    transaction(&p, topic, &aborted, false);
    transaction(&p, topic, &c2, true);
    ([c1, c2].concat(), aborted)
}

/// A producer commits, then dies inside its next transaction (records
/// written, no commit, no abort); a new producer with the same
/// `transactional.id` fences it and commits. Returns (committed values in
/// order, the zombie's values).
fn fenced_zombie(bootstrap: &str, topic: &str) -> (Vec<String>, Vec<String>) {
    create_topic(bootstrap, topic, 1);
    let id = format!("{topic}-tx");
    let (c1, zombie, c2) = (values("c1", 5), values("zombie", 5), values("c2", 5));
    let p1 = producer(bootstrap, &id);
    transaction(&p1, topic, &c1, true);
    p1.begin_transaction().expect("begin");
    for v in &zombie {
        send(&p1, topic, 0, v);
    }
    p1.flush(TIMEOUT).expect("zombie records written");
    // Like a killed siphon: p1 says nothing more. p2's init fences it and
    // makes the broker abort its open transaction.
    let p2 = producer(bootstrap, &id);
    drop(p1);
    transaction(&p2, topic, &c2, true);
    ([c1, c2].concat(), zombie)
}

#[test]
fn explicitly_aborted_transaction_is_invisible_through_the_proxy() {
    let broker = Broker::start();
    let proxy = KafkaProxy::start(&broker.bootstrap);
    let (committed, _) = explicit_abort(&proxy.bootstrap, "abort.through");
    assert_eq!(
        payloads(&read_committed(&proxy.bootstrap, "abort.through")),
        committed
    );
    assert!(proxy.stats().aborted_listed > 0, "{:?}", proxy.stats());
    assert_clean(&proxy);
}

#[test]
fn fenced_transaction_is_invisible_through_the_proxy() {
    let broker = Broker::start();
    let proxy = KafkaProxy::start(&broker.bootstrap);
    let (committed, _) = fenced_zombie(&proxy.bootstrap, "fenced.through");
    assert_eq!(
        payloads(&read_committed(&proxy.bootstrap, "fenced.through")),
        committed
    );
    assert!(proxy.stats().aborted_listed > 0, "{:?}", proxy.stats());
    assert_clean(&proxy);
}

/// Documents the broker gap the proxy exists for: if this fails, tansu
/// lists aborted transactions itself and DESIGN.md's "Known broker gaps"
/// needs updating.
#[test]
fn tansu_alone_shows_aborted_and_fenced_records() {
    let broker = Broker::start();
    let (_, aborted) = explicit_abort(&broker.bootstrap, "abort.direct");
    let seen = payloads(&read_committed(&broker.bootstrap, "abort.direct"));
    assert!(
        aborted.iter().all(|v| seen.contains(v)),
        "tansu now hides explicitly aborted records: {seen:?}"
    );
    let (_, zombie) = fenced_zombie(&broker.bootstrap, "fenced.direct");
    let seen = payloads(&read_committed(&broker.bootstrap, "fenced.direct"));
    assert!(
        zombie.iter().all(|v| seen.contains(v)),
        "tansu now hides the fenced producer's records: {seen:?}"
    );
}

/// An aborted transaction whose ABORT marker comes after the data of a
/// transaction still open: the aborted records stay invisible, and the end
/// offset a read_committed consumer is told stops before the open
/// transaction (tansu alone says 0 while any transaction is open, which
/// would make a reader think the partition is empty).
#[test]
fn aborted_transaction_before_an_open_one_stays_invisible() {
    let broker = Broker::start();
    let proxy = KafkaProxy::start(&broker.bootstrap);
    let topic = "before-open";
    create_topic(&proxy.bootstrap, topic, 1);
    let early = producer(&proxy.bootstrap, "before-open-early");
    let late = producer(&proxy.bootstrap, "before-open-late");
    transaction(&early, topic, &values("c0", 2), true);
    early.begin_transaction().expect("begin early");
    for v in values("aborted", 3) {
        send(&early, topic, 0, &v);
    }
    early.flush(TIMEOUT).expect("flush early");
    late.begin_transaction().expect("begin late");
    for v in values("late", 3) {
        send(&late, topic, 0, &v);
    }
    late.flush(TIMEOUT).expect("flush late");
    assert_eq!(
        end_offsets(&proxy.bootstrap, topic, "read_uncommitted"),
        (0, 9)
    );
    early.abort_transaction(TIMEOUT).expect("abort early");

    // Log: c0 c0 COMMIT(2) aborted×3 (3..=5) late×3 (6..=8) ABORT(9).
    // The last stable offset is where the oldest open transaction begins:
    // 6, as Apache Kafka says (tansu says 3: it also waits for transactions
    // that began before the open one).
    assert_eq!(
        end_offsets(&proxy.bootstrap, topic, "read_committed"),
        (0, 6)
    );
    assert_eq!(
        end_offsets(&broker.bootstrap, topic, "read_committed"),
        (0, 0),
        "tansu fixed ListOffsets"
    );
    assert_eq!(
        end_offsets(&proxy.bootstrap, topic, "read_uncommitted"),
        (0, 10)
    );
    assert_eq!(
        payloads(&read_committed(&proxy.bootstrap, topic)),
        values("c0", 2)
    );

    late.commit_transaction(TIMEOUT).expect("commit late");
    assert_eq!(
        end_offsets(&proxy.bootstrap, topic, "read_committed"),
        (0, 11)
    );
    assert_eq!(
        payloads(&read_committed(&proxy.bootstrap, topic)),
        [values("c0", 2), values("late", 3)].concat()
    );
    assert_clean(&proxy);
}

/// The proxy computes each partition's last stable offset from that
/// partition's own markers, as a correct broker does: an open transaction
/// holds back the partitions it wrote to and no other. (tansu's own stable
/// offset, which the proxy no longer uses, once stayed at 0 in every
/// partition although each transaction in the log had its marker.)
#[test]
fn an_open_transaction_holds_back_only_its_own_partition() {
    let broker = Broker::start();
    let proxy = KafkaProxy::start(&broker.bootstrap);
    create_topic(&proxy.bootstrap, "held", 1);
    create_topic(&proxy.bootstrap, "free", 1);
    let open = producer(&proxy.bootstrap, "held-open");
    let other = producer(&proxy.bootstrap, "free-other");
    transaction(&other, "free", &values("before", 2), true);
    open.begin_transaction().expect("begin");
    send(&open, "held", 0, "open");
    open.flush(TIMEOUT).expect("flush");
    transaction(&other, "free", &values("after", 2), true);

    // before×2, COMMIT, after×2, COMMIT.
    assert_eq!(
        end_offsets(&proxy.bootstrap, "free", "read_committed"),
        (0, 6)
    );
    assert_eq!(
        payloads(&read_committed(&proxy.bootstrap, "free")),
        [values("before", 2), values("after", 2)].concat()
    );
    assert_eq!(
        end_offsets(&proxy.bootstrap, "held", "read_committed"),
        (0, 0)
    );
    assert!(read_committed(&proxy.bootstrap, "held").is_empty());

    open.commit_transaction(TIMEOUT).expect("commit");
    assert_eq!(
        payloads(&read_committed(&proxy.bootstrap, "held")),
        ["open"]
    );
    assert_clean(&proxy);
}

/// Partition 0's (low, high) watermarks as a consumer with `isolation`
/// is told them.
fn end_offsets(bootstrap: &str, topic: &str, isolation: &str) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    consumer
        .fetch_watermarks(topic, 0, TIMEOUT)
        .expect("watermarks")
}

/// Records librdkafka's error callbacks (disconnects show up there).
#[derive(Clone, Default)]
struct ErrorLog(Arc<Mutex<Vec<String>>>);

impl ClientContext for ErrorLog {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for ErrorLog {}

fn watching_consumer(bootstrap: &str) -> (BaseConsumer<ErrorLog>, ErrorLog) {
    let log = ErrorLog::default();
    let consumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "proxy-faults")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "200")
        .create_with_context(log.clone())
        .expect("consumer");
    (consumer, log)
}

#[test]
fn cut_disconnects_clients_and_they_reconnect() {
    let broker = Broker::start();
    let proxy = KafkaProxy::start(&broker.bootstrap);
    let topic = "cut";
    create_topic(&proxy.bootstrap, topic, 1);
    let p = producer(&proxy.bootstrap, "cut-tx");
    transaction(&p, topic, &values("before", 3), true);
    // A consumer fetching at the end of the partition always has a Fetch
    // in flight, so librdkafka reports the disconnect (an idle connection
    // closing is only logged at debug level); with one broker it reports
    // "all brokers down".
    let (consumer, errors) = watching_consumer(&proxy.bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::End)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + TIMEOUT;
    while proxy.stats().fetches == 0 {
        assert!(Instant::now() < deadline, "consumer never fetched");
        consumer.poll(Duration::from_millis(100));
    }
    let before = proxy.stats().connections;

    proxy.cut();
    let deadline = Instant::now() + TIMEOUT;
    let disconnected = |e: &String| e.contains("Disconnected") || e.contains("AllBrokersDown");
    while !errors.0.lock().expect("lock").iter().any(disconnected) {
        assert!(
            Instant::now() < deadline,
            "no disconnect seen: {:?}",
            errors.0
        );
        consumer.poll(Duration::from_millis(100));
    }

    let deadline = Instant::now() + TIMEOUT;
    while proxy.stats().connections == before {
        assert!(Instant::now() < deadline, "clients did not reconnect");
        consumer.poll(Duration::from_millis(100));
    }

    // Both clients work again over new connections.
    consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .expect("metadata after cut");
    transaction(&p, topic, &values("after", 3), true);
    assert!(proxy.stats().connections > before, "{:?}", proxy.stats());
    assert_eq!(
        payloads(&read_committed(&proxy.bootstrap, topic)),
        [values("before", 3), values("after", 3)].concat()
    );
    assert_clean(&proxy);
}

#[test]
fn down_refuses_stall_holds_and_delay_slows() {
    let broker = Broker::start();
    let proxy = KafkaProxy::start(&broker.bootstrap);
    let (consumer, _) = watching_consumer(&proxy.bootstrap);
    consumer.fetch_metadata(None, TIMEOUT).expect("metadata");

    proxy.set_down(true);
    assert!(
        consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_err()
    );
    assert!(proxy.stats().refused > 0, "{:?}", proxy.stats());
    proxy.set_down(false);
    consumer
        .fetch_metadata(None, TIMEOUT)
        .expect("metadata when up again");

    proxy.stall(true);
    assert!(
        consumer
            .fetch_metadata(None, Duration::from_secs(2))
            .is_err()
    );
    proxy.stall(false);
    consumer
        .fetch_metadata(None, TIMEOUT)
        .expect("metadata after the stall");

    proxy.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    consumer
        .fetch_metadata(None, TIMEOUT)
        .expect("metadata with delay");
    // One frame each way.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    proxy.set_delay(Duration::ZERO);
    assert_clean(&proxy);
}

/// Two producers interleave transactions over four partitions, each
/// aborting some; a third producer is fenced mid-transaction. A
/// read_committed consumer through the proxy reads exactly the committed
/// records, each producer's in its order, also with fetch sizes so small
/// that a transaction spans many Fetch responses.
#[test]
fn interleaved_transactions_with_aborts_over_partitions() {
    const PARTITIONS: i32 = 4;
    let broker = Broker::start();
    let proxy = KafkaProxy::start(&broker.bootstrap);
    let topic = "interleaved";
    create_topic(&proxy.bootstrap, topic, PARTITIONS);
    let a = producer(&proxy.bootstrap, "interleaved-a");
    let b = producer(&proxy.bootstrap, "interleaved-b");
    let mut committed = BTreeSet::new();
    let mut aborted = BTreeSet::new();
    for round in 0..24 {
        a.begin_transaction().expect("begin a");
        b.begin_transaction().expect("begin b");
        let mut sent_a = Vec::new();
        let mut sent_b = Vec::new();
        for k in 0..6 {
            let va = format!("a-{round:02}-{k}");
            let vb = format!("b-{round:02}-{k}");
            send(&a, topic, (round + k) % PARTITIONS, &va);
            send(&b, topic, (round + 2 * k) % PARTITIONS, &vb);
            sent_a.push(va);
            sent_b.push(vb);
        }
        a.flush(TIMEOUT).expect("flush a");
        b.flush(TIMEOUT).expect("flush b");
        // Alternate which transaction ends first so each one's data sits
        // between the other's data and markers.
        let outcomes = [(&a, round % 3 != 0, sent_a), (&b, round % 4 != 1, sent_b)];
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for (n, i) in order.into_iter().enumerate() {
            if n == 1 && round % 4 == 1 {
                // Read between the two outcomes (b aborted, a open): the
                // last stable offset sits before b's abort marker wherever
                // b's data comes first, so the proxy reads ahead for it.
                let seen: BTreeSet<String> = payloads(&read_committed(&proxy.bootstrap, topic))
                    .into_iter()
                    .collect();
                assert!(
                    seen.is_subset(&committed),
                    "round {round}: not committed: {:?}",
                    seen.difference(&committed).collect::<Vec<_>>()
                );
            }
            let (p, commit, sent) = &outcomes[i];
            if *commit {
                p.commit_transaction(TIMEOUT).expect("commit");
                committed.extend(sent.iter().cloned());
            } else {
                p.abort_transaction(TIMEOUT).expect("abort");
                aborted.extend(sent.iter().cloned());
            }
        }
        if round == 12 {
            // A zombie: writes to every partition, then is fenced.
            let z1 = producer(&proxy.bootstrap, "interleaved-z");
            z1.begin_transaction().expect("begin zombie");
            for part in 0..PARTITIONS {
                let v = format!("z-zombie-{part}");
                send(&z1, topic, part, &v);
                aborted.insert(v);
            }
            z1.flush(TIMEOUT).expect("flush zombie");
            let z2 = producer(&proxy.bootstrap, "interleaved-z");
            drop(z1);
            transaction(&z2, topic, &["z-after".to_owned()], true);
            committed.insert("z-after".to_owned());
        }
    }

    let check = |records: Vec<Record>, how: &str| {
        let seen = payloads(&records);
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{how}: duplicates");
        assert_eq!(unique, committed, "{how}: not the committed set");
        // Per partition, each producer's records in the order it sent them.
        let mut last: BTreeMap<(i32, char), String> = BTreeMap::new();
        for (r, v) in records.iter().zip(&seen) {
            let producer = v.chars().next().expect("non-empty");
            if let Some(prev) = last.insert((r.partition, producer), v.clone()) {
                assert!(prev < *v, "{how}: {prev} before {v} in {}", r.partition);
            }
        }
    };
    let started = Instant::now();
    check(
        read_committed(&proxy.bootstrap, topic),
        "default fetch sizes",
    );
    let through_proxy = started.elapsed();
    check(
        read_committed_with(
            &proxy.bootstrap,
            topic,
            &[
                ("message.max.bytes", "1000"),
                ("fetch.max.bytes", "1000"),
                ("max.partition.fetch.bytes", "1"),
            ],
        ),
        "one batch per fetch",
    );
    let stats = proxy.stats();
    assert_clean(&proxy);

    // Without the proxy, the same log shows the aborted records.
    let started = Instant::now();
    let direct = read_committed(&broker.bootstrap, topic);
    let direct_time = started.elapsed();
    assert!(aborted.iter().all(|v| payloads(&direct).contains(v)));
    eprintln!(
        "read {} records through the proxy in {through_proxy:?}, {} directly in {direct_time:?}; {stats:?}",
        committed.len(),
        direct.len()
    );

    // A consumer resuming in the middle of an aborted transaction, through
    // a new proxy that has not seen the log: the proxy reads the log from
    // its start to find where that transaction began.
    let all = read_committed(&proxy.bootstrap, topic);
    let starts: Vec<(i32, i64)> = (0..PARTITIONS)
        .map(|p| {
            let inside: Vec<i64> = direct
                .iter()
                .zip(payloads(&direct))
                .filter(|(r, v)| r.partition == p && aborted.contains(v))
                .map(|(r, _)| r.offset)
                .collect();
            (p, inside[inside.len() / 2])
        })
        .collect();
    let fresh = KafkaProxy::start(&broker.bootstrap);
    let resumed = read_committed_from(&fresh.bootstrap, topic, &starts);
    let expected: Vec<(i32, i64)> = all
        .iter()
        .filter(|r| {
            starts
                .iter()
                .any(|&(p, o)| r.partition == p && r.offset >= o)
        })
        .map(|r| (r.partition, r.offset))
        .collect();
    let got: Vec<(i32, i64)> = resumed.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(got, expected, "resumed from {starts:?}");
    assert!(fresh.stats().read_aheads > 0, "{:?}", fresh.stats());
    assert_clean(&fresh);
}

/// Reads `topic` with read_committed from the given (partition, offset)
/// starts to the end of each partition.
fn read_committed_from(bootstrap: &str, topic: &str, starts: &[(i32, i64)]) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "proxy-resume")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in starts {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    drain_assigned(&consumer, topic, starts.iter().map(|&(p, _)| p).collect())
}

fn data(base: i64, last: i64, producer_id: i64) -> Batch {
    Batch {
        base,
        last,
        producer_id,
        transactional: true,
        abort_marker: None,
        size: 0,
        producer_epoch: 0,
    }
}

fn marker(at: i64, producer_id: i64, abort: bool) -> Batch {
    Batch {
        base: at,
        last: at,
        producer_id,
        transactional: true,
        abort_marker: Some(abort),
        size: 0,
        producer_epoch: 0,
    }
}

fn pairs(v: Vec<Aborted>) -> Vec<(i64, i64)> {
    v.iter().map(|a| (a.producer_id, a.first_offset)).collect()
}

#[test]
fn index_lists_aborted_transactions_overlapping_the_fetched_range_only() {
    let mut log = PartitionLog::default();
    // pid 1 aborts [0..=1] at 4; pid 2 commits [2..=3] at 5;
    // pid 1 commits [6] at 7; pid 2 aborts [8] at 9.
    for b in [
        data(0, 1, 1),
        data(2, 3, 2),
        marker(4, 1, true),
        marker(5, 2, false),
        data(6, 6, 1),
        marker(7, 1, false),
        data(8, 8, 2),
        marker(9, 2, true),
    ] {
        log.ingest(&b);
    }
    assert_eq!(log.stable(10), 10, "every transaction has its marker");
    assert_eq!(pairs(log.aborted_overlapping(0, 10)), [(1, 0), (2, 8)]);
    // The first abort's marker (4) is behind a fetch from 5: listing it
    // would hide pid 1's committed record at 6.
    assert_eq!(pairs(log.aborted_overlapping(5, 10)), [(2, 8)]);
    // A fetch from inside the first aborted transaction lists it.
    assert_eq!(pairs(log.aborted_overlapping(1, 3)), [(1, 0)]);
    // Records ending before the second aborted transaction's data.
    assert_eq!(pairs(log.aborted_overlapping(5, 8)), []);
}

#[test]
fn stable_offset_is_where_the_oldest_open_transaction_begins() {
    let mut log = PartitionLog::default();
    log.ingest(&data(0, 0, 1));
    log.ingest(&data(1, 1, 2));
    log.ingest(&marker(2, 2, false));
    assert_eq!(
        log.stable(3),
        0,
        "pid 1's transaction at 0 has no marker yet"
    );
    log.ingest(&marker(3, 1, true));
    assert_eq!(log.stable(4), 4);
    assert_eq!(log.stable(9), 4, "offsets 4.. not read yet");
    log.ingest(&data(4, 5, 2));
    log.ingest(&data(6, 6, 1));
    assert_eq!(log.stable(7), 4, "pid 2 opened another at 4");
    log.ingest(&marker(7, 2, false));
    assert_eq!(log.stable(8), 6, "pid 1's at 6 is still open");
}

#[test]
fn a_newer_epoch_ends_the_older_ones_open_transaction_and_its_late_writes() {
    let with_epoch = |b: Batch, e: i16| Batch {
        producer_epoch: e,
        ..b
    };
    let mut log = PartitionLog::default();
    // Epoch 0 of pid 1 writes at 0..=1 and is killed; epoch 1 (its
    // successor) writes at 2 and commits at 4; a late write of epoch 0
    // lands at 3, after epoch 1 began.
    log.ingest(&with_epoch(data(0, 1, 1), 0));
    assert_eq!(log.stable(2), 0);
    log.ingest(&with_epoch(data(2, 2, 1), 1));
    log.ingest(&with_epoch(data(3, 3, 1), 0));
    assert_eq!(log.stable(4), 2, "epoch 1's transaction is open");
    log.ingest(&with_epoch(marker(4, 1, false), 1));
    assert_eq!(log.stable(5), 5);
    let mut fenced: Vec<i64> = log.fenced.iter().copied().collect();
    fenced.sort();
    assert_eq!(fenced, [0, 3], "what a correct broker would not show");
    assert_eq!(pairs(log.aborted_overlapping(0, 5)), []);
}

#[test]
fn index_takes_forwarded_batches_only_where_it_stopped() {
    let mut log = PartitionLog::default();
    log.ingest_forwarded(&[data(5, 6, 1)]);
    assert_eq!(log.next, 0);
    log.ingest_forwarded(&[data(0, 1, 1), data(2, 2, 2)]);
    assert_eq!(log.next, 3);
    log.ingest_forwarded(&[data(2, 2, 2), data(3, 4, 2)]);
    assert_eq!(log.next, 5);
}
