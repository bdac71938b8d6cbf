//! One huge source transaction, split over many Kafka transactions at
//! positions `(commit_lsn, index)`, survives SIGKILL at any point of it:
//! in its very first Kafka transaction, in the middle, and near the end.
//! Every row arrives exactly once and in order for a read_committed
//! consumer.
//!
//! Everything Kafka-side goes through the faithful proxy
//! (tests/support/kafka_proxy.rs): siphon is killed inside an open Kafka
//! transaction, and tansu alone would show that transaction's aborted
//! records to read_committed readers (DESIGN.md, "Known broker gaps").

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use rdkafka::message::Message;
use siphon::event::Lsn;
use siphon::kafka::offsets::OffsetRecord;
use support::bed::{Bed, WAIT};
use support::events::{field, unwrap_union, wire};
use support::kafka::{assign_all, drain_each, read_committed, read_committed_with};
use support::kafka_proxy::KafkaProxy;
use support::poll_until;
use support::postgres::PgOptions;
use support::siphon::Siphon;

/// Rows in the one source transaction.
const ROWS: i64 = 200_000;
/// Events per Kafka transaction (`kafka.batch_max_events`); with a linger
/// (10 s) longer than any part takes, every part holds exactly this many.
const PART: i64 = 2_000;
const PARTS: i64 = ROWS / PART;
const TOPIC: &str = "big.public.rows";

/// Where in the source transaction siphon is killed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KillPoint {
    /// Some of the first part's records are in the broker, its Kafka
    /// transaction is not committed.
    FirstPart,
    /// About half of the parts are committed.
    Middle,
    /// All but a few parts are committed.
    NearEnd,
}

struct Setup {
    bed: Bed,
    proxy: KafkaProxy,
    file: PathBuf,
}

/// A bed with table `rows`, the Kafka proxy, and connector `big` (reaching
/// the broker through the proxy) with `extra_kafka` lines and a batch
/// linger of `linger_ms`.
async fn setup(extra_kafka: &str, linger_ms: u64) -> Setup {
    setup_with(PgOptions::default(), extra_kafka, linger_ms).await
}

async fn setup_with(opts: PgOptions, extra_kafka: &str, linger_ms: u64) -> Setup {
    let bed = Bed::start_with(opts, "big").await;
    bed.pg.psql(
        "big",
        "CREATE TABLE rows (id bigint PRIMARY KEY, note text NOT NULL)",
    );
    let proxy = KafkaProxy::start(&bed.broker.bootstrap);
    let file = bed.connector("big", "big", &["public.rows"], extra_kafka);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&bed.broker.bootstrap, &proxy.bootstrap)
        .replace(
            "batch_linger_ms = 50",
            &format!("batch_linger_ms = {linger_ms}"),
        );
    std::fs::write(&file, text).unwrap();
    Setup { bed, proxy, file }
}

/// This connector's committed offset records, in commit order.
fn offsets(proxy: &KafkaProxy) -> Vec<OffsetRecord> {
    read_committed(&proxy.bootstrap, "siphon.offsets")
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"big".as_slice()))
        .map(|r| OffsetRecord::from_wire(r.value.as_ref().expect("offset value")).unwrap())
        .collect()
}

/// [`offsets`], asserting that each position is at or after the one
/// before: the stored offset never moves back.
fn offsets_forward_only(proxy: &KafkaProxy) -> Vec<OffsetRecord> {
    let all = offsets(proxy);
    for w in all.windows(2) {
        assert!(
            progress(&w[0]) <= progress(&w[1]),
            "offset went backwards: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    all
}

/// Committed parts of the source transaction that commits after `before`.
fn parts_committed(proxy: &KafkaProxy, before: Lsn) -> Vec<OffsetRecord> {
    offsets(proxy)
        .into_iter()
        .filter(|o| o.commit_lsn > before && o.index.is_some())
        .collect()
}

/// Kafka transactions siphon has committed (offset-only ones included).
async fn committed_txns(siphon: &Siphon) -> f64 {
    siphon
        .metric(r#"siphon_kafka_transactions_total{connector="big",outcome="committed"}"#)
        .await
        .unwrap_or(0.0)
}

fn lsn(pg_text: &str) -> Lsn {
    pg_text.parse().expect("an LSN")
}

fn signal(siphon: &Siphon, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(siphon.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => i64::from(*i),
        Value::Long(l) => *l,
        other => panic!("not an integer: {other:?}"),
    }
}

/// Decodes Confluent-framed Avro, parsing each writer schema once (the
/// tests read up to millions of records). Synchronous, so that it can run
/// inside a consumer's poll loop: it fetches a schema it has not seen by
/// blocking this (multi-threaded) runtime's worker.
#[derive(Default)]
struct Decoder {
    schemas: HashMap<u32, Schema>,
}

impl Decoder {
    fn decode(&mut self, bed: &Bed, bytes: &[u8]) -> Value {
        let (id, mut body) = wire(bytes);
        if let std::collections::hash_map::Entry::Vacant(e) = self.schemas.entry(id) {
            let json = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(bed.client.schema_by_id(id))
            })
            .expect("schema by id");
            e.insert(Schema::parse_str(&json).expect("schema parses"));
        }
        let value = GenericDatumReader::builder(&self.schemas[&id])
            .build()
            .and_then(|r| r.read_value(&mut body))
            .expect("record decodes with its registered schema");
        assert!(body.is_empty(), "bytes left after the datum");
        value
    }
}

/// `source.sequence`: `["<commit LSN>","<change LSN>"]`, as numbers.
fn sequence(v: &Value) -> (u64, u64) {
    let Value::String(s) = v else {
        panic!("sequence is not a string: {v:?}")
    };
    let pair: Vec<String> = serde_json::from_str(s).expect("sequence JSON");
    (pair[0].parse().unwrap(), pair[1].parse().unwrap())
}

/// The position an offset record stands for, comparable across records:
/// an index `i` counts as `i + 1` changes done, a complete transaction as
/// all of them.
fn progress(o: &OffsetRecord) -> (Lsn, u64) {
    let done = if o.txn_complete {
        u64::MAX
    } else {
        o.index.map_or(0, |i| i + 1)
    };
    (o.commit_lsn, done)
}

/// Waits until siphon's slot confirmed `end`: siphon confirms only after
/// the Kafka commit of everything before it. Fails if siphon exits.
async fn wait_confirmed(bed: &Bed, siphon: &mut Siphon, end: Lsn, limit: Duration) {
    let confirmed = format!(
        "SELECT confirmed_flush_lsn >= '{end}' FROM pg_replication_slots WHERE slot_name = 'siphon_big'"
    );
    let deadline = std::time::Instant::now() + limit;
    while bed.pg.psql("big", &confirmed) != "t" {
        if let Some(status) = siphon.wait(Duration::ZERO) {
            panic!("siphon exited ({status}):\n{}", siphon.log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the big transaction was not confirmed in time:\n{}",
            siphon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn kill_inside_the_big_transaction(point: KillPoint) {
    // Small librdkafka batches make one part many Produce requests, so the
    // first part stays open long enough to be caught. No idle offsets:
    // siphon's count of committed Kafka transactions then counts parts.
    let extra = format!(
        "batch_max_events = {PART}\nidle_offset_interval_ms = 3600000\n\
         [kafka.properties]\n\"batch.num.messages\" = \"100\""
    );
    let Setup { bed, proxy, file } = setup(&extra, 10_000).await;
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("big", "siphon_big").await;
    bed.wait_ready_status(&siphon, 200).await;

    let before = lsn(&bed.pg.psql("big", "SELECT pg_current_wal_lsn()"));
    let base = committed_txns(&siphon).await;
    if point == KillPoint::FirstPart {
        // Every frame through the proxy waits: the first part takes
        // seconds, and the test sees its records before its commit.
        proxy.set_delay(Duration::from_millis(300));
    }
    bed.pg.psql(
        "big",
        &format!("INSERT INTO rows SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g"),
    );
    let end = lsn(&bed.pg.psql("big", "SELECT pg_current_wal_lsn()"));

    // Wait for the kill point, then freeze siphon to look at what the
    // broker holds before killing it.
    let wanted = match point {
        KillPoint::FirstPart => 0,
        KillPoint::Middle => PARTS / 2,
        KillPoint::NearEnd => PARTS - 15,
    };
    poll_until(
        WAIT,
        &format!("{point:?} of the big transaction"),
        async || {
            let ready = match point {
                // Written but not committed: read straight from tansu, which
                // shows uncommitted records (the proxy is slowed down).
                KillPoint::FirstPart => !read_committed_with(
                    &bed.broker.bootstrap,
                    TOPIC,
                    &[("isolation.level", "read_uncommitted")],
                )
                .is_empty(),
                // siphon's own count: reading the offsets topic lags while
                // siphon keeps a transaction open most of the time.
                _ => committed_txns(&siphon).await >= base + wanted as f64,
            };
            ready.then_some(())
        },
    )
    .await;
    signal(&siphon, "STOP");
    proxy.set_delay(Duration::ZERO);
    // siphon counts a part once its commit is acknowledged; the broker may
    // write the part's COMMIT marker a moment later, and only then does a
    // read_committed reader see it. siphon is stopped: the count is final.
    let mut committed = parts_committed(&proxy, before);
    let settle = std::time::Instant::now() + Duration::from_secs(10);
    while point != KillPoint::FirstPart
        && (committed.len() as i64) < wanted
        && std::time::Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        committed = parts_committed(&proxy, before);
    }
    let written = read_committed_with(
        &proxy.bootstrap,
        TOPIC,
        &[("isolation.level", "read_uncommitted")],
    )
    .len() as i64;
    match point {
        KillPoint::FirstPart => {
            assert!(
                committed.is_empty(),
                "the first part committed before the kill: {committed:?}"
            );
            assert!(written > 0 && written <= PART, "{written} records written");
        }
        _ => {
            let n = committed.len() as i64;
            assert!(
                n >= wanted && n < PARTS,
                "{n} of {PARTS} parts committed before the kill"
            );
            assert!(!committed.iter().any(|o| o.txn_complete));
            assert_eq!(committed.last().unwrap().index, Some((n * PART - 1) as u64));
        }
    }
    let mut siphon = siphon;
    siphon.kill();
    let done_before_kill = committed.len() as i64 * PART;

    // The restarted siphon fences the killed one's open transaction and
    // resumes after the last committed part.
    let mut siphon = bed.siphon(&file);
    wait_confirmed(&bed, &mut siphon, end, WAIT * 3).await;
    assert!(siphon.stop().success());

    let reading = std::time::Instant::now();
    let records = read_committed(&proxy.bootstrap, TOPIC);
    eprintln!("read {} records in {:?}", records.len(), reading.elapsed());
    assert_eq!(records.len() as i64, ROWS, "{}", siphon.log());
    let mut decoder = Decoder::default();
    let mut last_lsn = 0;
    let mut commit = None;
    for (i, r) in records.iter().enumerate() {
        let key = decoder.decode(&bed, r.key.as_ref().expect("key"));
        assert_eq!(
            int(field(&key, "id").unwrap()),
            i as i64 + 1,
            "event {i} is out of order or duplicated"
        );
        let value = decoder.decode(&bed, r.value.as_ref().expect("value"));
        let source = field(&value, "source").expect("source");
        let (c, l) = sequence(unwrap_union(field(source, "sequence").expect("sequence")));
        assert!(l > last_lsn, "change LSNs strictly increase");
        last_lsn = l;
        assert_eq!(*commit.get_or_insert(c), c, "one source transaction");
    }
    assert!(commit.unwrap() > before.0);

    // The offset records: positions only move forward, the big
    // transaction's parts end where the kill left them and continue after
    // it, and the last one says the transaction is complete.
    let all = offsets_forward_only(&proxy);
    let big: Vec<&OffsetRecord> = all
        .iter()
        .filter(|o| o.commit_lsn.0 == commit.unwrap())
        .collect();
    let last = big.last().unwrap();
    assert!(
        last.txn_complete && last.index == Some(ROWS as u64 - 1),
        "{last:?}"
    );
    let parts: Vec<u64> = big
        .iter()
        .filter(|o| !o.txn_complete)
        .filter_map(|o| o.index)
        .collect();
    let expected: Vec<u64> = (1..=PARTS).map(|p| (p * PART - 1) as u64).collect();
    assert_eq!(parts, expected, "one offset per part, each {PART} events");

    // The restart dropped exactly what the killed instance had committed.
    let log = siphon.log();
    if done_before_kill > 0 {
        assert!(
            log.contains(&format!("dropped={done_before_kill}")),
            "expected {done_before_kill} re-sent changes dropped:\n{log}"
        );
    } else {
        assert!(!log.contains("dropped re-sent changes"), "{log}");
    }
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_first_kafka_transaction_of_a_huge_transaction() {
    kill_inside_the_big_transaction(KillPoint::FirstPart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_huge_transaction() {
    kill_inside_the_big_transaction(KillPoint::Middle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_near_the_end_of_a_huge_transaction() {
    kill_inside_the_big_transaction(KillPoint::NearEnd).await;
}

/// PostgreSQL's crash restart can take a slot back: a slot's
/// `confirmed_flush_lsn` reaches disk only at a checkpoint that finds the
/// slot dirty, and only a new restart_lsn or catalog xmin makes it so. The
/// slot then sends again transactions the stored offset already covers,
/// while a split transaction after them is partly written. The reader drops
/// their changes; their ends must not take the stored position back before
/// the written parts (a restart would then write those parts again).
///
/// Deterministic version of what the long fault run found: the slot's
/// state file is put back as it was before the small transactions while
/// the server is down after an immediate stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_taken_back_by_a_crash_restart_never_takes_the_offset_back() {
    const SMALL: i64 = 20;
    const BIG: i64 = 100_000;
    let opts = PgOptions {
        // No checkpoint and no vacuum of the catalog rows the older slot
        // state still needs while the test runs.
        extra_conf: vec![
            "checkpoint_timeout = '1h'".into(),
            "autovacuum = off".into(),
        ],
        ..PgOptions::default()
    };
    let extra = format!("batch_max_events = {PART}\nidle_offset_interval_ms = 3600000");
    let Setup {
        mut bed,
        proxy,
        file,
    } = setup_with(opts, &extra, 50).await;
    let mut siphon = bed.siphon(&file);
    bed.wait_slot_active("big", "siphon_big").await;
    bed.wait_ready_status(&siphon, 200).await;
    let state = bed.pg.data_dir().join("pg_replslot/siphon_big/state");
    let before_small = std::fs::read(&state).expect("the slot's state file");

    for id in 1..=SMALL {
        bed.pg.psql(
            "big",
            &format!("INSERT INTO rows VALUES ({id}, 'small {id}')"),
        );
    }
    let before = lsn(&bed.pg.psql("big", "SELECT pg_current_wal_lsn()"));
    bed.pg.psql(
        "big",
        &format!(
            "INSERT INTO rows SELECT g, 'row ' || g FROM generate_series({}, {}) g",
            SMALL + 1,
            SMALL + BIG
        ),
    );
    let end = lsn(&bed.pg.psql("big", "SELECT pg_current_wal_lsn()"));
    // Half of the big transaction's parts committed (the first also holds
    // the small transactions' end if they shared it; either way at least
    // half of the big one is written).
    let half = BIG / PART / 2;
    poll_until(WAIT, "half of the big transaction committed", async || {
        (parts_committed(&proxy, before).len() as i64 >= half).then_some(())
    })
    .await;
    let written = parts_committed(&proxy, before);

    bed.pg.stop("immediate");
    std::fs::write(&state, &before_small).expect("put the slot's older state back");
    bed.pg.start_again();
    wait_confirmed(&bed, &mut siphon, end, WAIT * 3).await;
    assert!(siphon.stop().success());
    let log = siphon.log();
    assert!(
        log.contains("dropped re-sent changes already covered by the stored offset"),
        "PostgreSQL sent nothing again, so the case was not exercised:\n{log}"
    );

    // Positions only move forward, through the restart.
    let all = offsets_forward_only(&proxy);
    assert!(
        all.iter()
            .any(|o| progress(o) > progress(written.last().unwrap())),
        "nothing was stored after the restart"
    );
    // And every row arrived once, in order.
    let mut decoder = Decoder::default();
    let records = read_committed(&proxy.bootstrap, TOPIC);
    let ids: Vec<i64> = records
        .iter()
        .map(|r| int(field(&decoder.decode(&bed, r.key.as_ref().expect("key")), "id").unwrap()))
        .collect();
    assert_eq!(ids, (1..=SMALL + BIG).collect::<Vec<_>>());
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
}

/// The long version's huge transaction (scripts/faults-long.sh, release
/// build): ONE source transaction of `BIGTX_ROWS` rows (default
/// 10,000,000), siphon SIGKILLed `BIGTX_KILLS` times (default 3) at evenly
/// spread points of it and started again each time. Every row must reach
/// a read_committed consumer once, in order, from that one transaction;
/// prints siphon's peak RSS, which must not grow with the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the long version (minutes); run by scripts/faults-long.sh"]
async fn huge_transaction_survives_repeated_sigkills() {
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or(default)
    };
    let rows = env("BIGTX_ROWS", 10_000_000);
    let kills = env("BIGTX_KILLS", 3);
    let started = std::time::Instant::now();
    // Default batching; no idle offsets, so every offset record is a part.
    let Setup { bed, proxy, file } = setup("idle_offset_interval_ms = 3600000", 50).await;
    let mut siphon = bed.siphon(&file);
    bed.wait_slot_active("big", "siphon_big").await;
    bed.wait_ready_status(&siphon, 200).await;

    let before = lsn(&bed.pg.psql("big", "SELECT pg_current_wal_lsn()"));
    bed.pg.psql(
        "big",
        &format!("INSERT INTO rows SELECT g, 'row ' || g FROM generate_series(1, {rows}) g"),
    );
    let end = lsn(&bed.pg.psql("big", "SELECT pg_current_wal_lsn()"));
    eprintln!("BIGTX: {rows} rows written in {:?}", started.elapsed());

    // Kill number k once k/(kills+1) of the rows are committed. An
    // instance's event counter counts only what it committed itself (a
    // restart re-reads the transaction from its start and drops what is
    // already in Kafka), so the count goes on from what the offsets topic
    // held at the previous kill.
    let events = r#"siphon_events_total{connector="big",op="c",table="public.rows"}"#;
    let mut peak_rss_kib = 0u64;
    let mut done = 0u64;
    for k in 1..=kills {
        let target = rows * k / (kills + 1);
        let base = done;
        poll_until(WAIT * 20, &format!("{target} rows produced"), async || {
            if let Some(status) = siphon.wait(Duration::ZERO) {
                panic!("siphon exited ({status}):\n{}", siphon.log());
            }
            let produced = siphon.metric(events).await.unwrap_or(0.0) as u64;
            (base + produced >= target).then_some(())
        })
        .await;
        peak_rss_kib = peak_rss_kib.max(siphon.peak_rss_kib());
        siphon.kill();
        // What is committed now: the restart resumes after it.
        done = parts_committed(&proxy, before)
            .last()
            .and_then(|o| o.index)
            .map_or(0, |i| i + 1);
        eprintln!(
            "BIGTX: SIGKILL {k}/{kills} with {done} rows committed, {:?} elapsed",
            started.elapsed()
        );
        siphon = bed.siphon(&file);
    }
    wait_confirmed(&bed, &mut siphon, end, WAIT * 60).await;
    peak_rss_kib = peak_rss_kib.max(siphon.peak_rss_kib());
    assert!(siphon.stop().success());
    let streamed = started.elapsed();

    // Read everything back through the proxy, decoding as it arrives.
    let (consumer, pending) =
        assign_all(&proxy.bootstrap, TOPIC, &[]).expect("the topic has records");
    let mut decoder = Decoder::default();
    let (mut read, mut last_lsn, mut commit) = (0u64, 0u64, None);
    drain_each(&consumer, TOPIC, pending, |m| {
        let key = decoder.decode(&bed, m.key().expect("key"));
        let id = int(field(&key, "id").unwrap());
        assert_eq!(
            id,
            read as i64 + 1,
            "record {read}: id {id} is out of order, duplicated or after a gap"
        );
        let value = decoder.decode(&bed, m.payload().expect("value"));
        let source = field(&value, "source").expect("source");
        let (c, l) = sequence(unwrap_union(field(source, "sequence").expect("sequence")));
        assert!(l > last_lsn, "change LSNs strictly increase");
        last_lsn = l;
        assert_eq!(*commit.get_or_insert(c), c, "one source transaction");
        read += 1;
    });
    assert_eq!(read, rows, "rows read back");
    let all = offsets_forward_only(&proxy);
    let parts = all.iter().filter(|o| o.commit_lsn > before).count();
    let last = all.last().expect("offsets");
    assert!(
        last.txn_complete && last.index == Some(rows - 1),
        "{last:?}"
    );
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
    eprintln!(
        "BIGTX long: {rows} rows in one transaction, {kills} SIGKILLs, {parts} Kafka \
         transactions; read back {read}: missing 0, duplicated 0, reordered 0; peak RSS \
         {:.1} MiB; streamed in {streamed:?}, {:?} in all",
        peak_rss_kib as f64 / 1024.0,
        started.elapsed()
    );
}
