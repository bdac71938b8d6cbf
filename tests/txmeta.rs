//! Transaction metadata (`[transactions]`), against the real services: a
//! BEGIN and an END per source transaction with events, END's counts equal
//! to what reached the topics, and every event's `transaction` block
//! (total_order 1..n without gap or repeat, data_collection_order 1..k per
//! table) — including a big source transaction split over many Kafka
//! transactions and a SIGKILL of siphon in its middle, after which the
//! resumed part continues the counts exactly.
//!
//! Kafka goes through the faithful proxy (tests/support/kafka_proxy.rs):
//! siphon is killed inside an open Kafka transaction, whose records tansu
//! alone would show to read_committed readers.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;

use apache_avro::types::Value;
use siphon::event::Lsn;
use siphon::kafka::offsets::OffsetRecord;
use support::bed::{Bed, WAIT};
use support::events::{CachedDecoder, Event, field, int, unwrap_union};
use support::kafka::read_committed;
use support::kafka_proxy::KafkaProxy;
use support::poll_until;
use support::siphon::Siphon;

const A: &str = "tm.public.a";
const B: &str = "tm.public.b";
const TX_TOPIC: &str = "tm.transaction";
/// Records per Kafka transaction (`kafka.batch_max_events`).
const PART: usize = 50;

struct Setup {
    bed: Bed,
    proxy: KafkaProxy,
    file: PathBuf,
}

/// Connector `tm` on tables a and b through the proxy, with transaction
/// metadata on, small Kafka transactions and a linger longer than any
/// part takes (so parts end by size).
async fn setup() -> Setup {
    let bed = Bed::start("tm").await;
    bed.pg.psql(
        "tm",
        "CREATE TABLE a (id bigint PRIMARY KEY, note text); \
         CREATE TABLE b (id bigint PRIMARY KEY, note text); \
         INSERT INTO a VALUES (-1, 'snapshot row'), (-2, 'snapshot row')",
    );
    let proxy = KafkaProxy::start(&bed.broker.bootstrap);
    let extra = format!(
        "batch_max_events = {PART}\nidle_offset_interval_ms = 3600000\nemit_truncate = true\n\
         [kafka.properties]\n\"batch.num.messages\" = \"100\"\n\
         [transactions]\nenabled = true\n"
    );
    let file = bed.connector("tm", "tm", &["public.a", "public.b"], &extra);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&bed.broker.bootstrap, &proxy.bootstrap)
        .replace("batch_linger_ms = 50", "batch_linger_ms = 10000");
    std::fs::write(&file, text).unwrap();
    Setup { bed, proxy, file }
}

fn offsets(proxy: &KafkaProxy) -> Vec<OffsetRecord> {
    read_committed(&proxy.bootstrap, "siphon.offsets")
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"tm".as_slice()))
        .map(|r| OffsetRecord::from_wire(r.value.as_ref().expect("offset value")).unwrap())
        .collect()
}

async fn committed_txns(siphon: &Siphon) -> f64 {
    siphon
        .metric(r#"siphon_kafka_transactions_total{connector="tm",outcome="committed"}"#)
        .await
        .unwrap_or(0.0)
}

fn lsn(bed: &Bed) -> Lsn {
    bed.pg
        .psql("tm", "SELECT pg_current_wal_lsn()")
        .parse()
        .expect("an LSN")
}

async fn wait_confirmed(bed: &Bed, siphon: &mut Siphon, end: Lsn) {
    let sql = format!(
        "SELECT confirmed_flush_lsn >= '{end}' FROM pg_replication_slots WHERE slot_name = 'siphon_tm'"
    );
    poll_until(WAIT * 2, "the slot to confirm the workload", async || {
        if let Some(status) = siphon.wait(std::time::Duration::ZERO) {
            panic!("siphon exited ({status}):\n{}", siphon.log());
        }
        (bed.pg.psql("tm", &sql) == "t").then_some(())
    })
    .await;
}

fn string(v: &Value) -> String {
    match unwrap_union(v) {
        Value::String(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A transaction topic record: (status, id, event_count, per table).
#[derive(Debug)]
struct Boundary {
    status: String,
    id: String,
    event_count: Option<i64>,
    tables: Option<Vec<(String, i64)>>,
    ts_ms: i64,
}

fn boundary(e: &Event) -> Boundary {
    let v = e.value.as_ref().expect("a boundary value");
    let key_id = string(field(e.key.as_ref().expect("a boundary key"), "id").unwrap());
    let id = string(field(v, "id").unwrap());
    assert_eq!(key_id, id, "the key is the transaction id");
    let tables = match unwrap_union(field(v, "data_collections").unwrap()) {
        Value::Null => None,
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| {
                    (
                        string(field(i, "data_collection").unwrap()),
                        int(field(i, "event_count").unwrap()),
                    )
                })
                .collect(),
        ),
        other => panic!("data_collections: {other:?}"),
    };
    Boundary {
        status: string(field(v, "status").unwrap()),
        id,
        event_count: match unwrap_union(field(v, "event_count").unwrap()) {
            Value::Null => None,
            other => Some(int(other)),
        },
        tables,
        ts_ms: int(field(v, "ts_ms").unwrap()),
    }
}

/// An event's transaction block: (id, total_order, data_collection_order).
fn block(e: &Event) -> Option<(String, i64, i64)> {
    match unwrap_union(field(e.value.as_ref()?, "transaction")?) {
        Value::Null => None,
        b => Some((
            string(field(b, "id").unwrap()),
            int(field(b, "total_order").unwrap()),
            int(field(b, "data_collection_order").unwrap()),
        )),
    }
}

/// Checks the transaction topic against every event of `topics`, and
/// returns each transaction's END counts per table, by id.
async fn check_metadata(
    bed: &Bed,
    proxy: &KafkaProxy,
    siphon: &Siphon,
) -> (Vec<Boundary>, HashMap<String, BTreeMap<String, i64>>) {
    let mut decoder = CachedDecoder::new(&bed.registry.url);
    let boundaries: Vec<Boundary> = decoder
        .events(&read_committed(&proxy.bootstrap, TX_TOPIC))
        .await
        .iter()
        .map(boundary)
        .collect();
    // One BEGIN then one END per transaction, never interleaved (one
    // partition keyed by id; the stream is in commit order).
    let mut ends: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    let mut totals: HashMap<String, i64> = HashMap::new();
    for pair in boundaries.chunks(2) {
        let [begin, end] = pair else {
            panic!("a BEGIN without END: {pair:?}\n{}", siphon.log())
        };
        assert_eq!(
            (begin.status.as_str(), end.status.as_str()),
            ("BEGIN", "END"),
            "{boundaries:#?}"
        );
        assert_eq!(begin.id, end.id);
        assert_eq!((begin.event_count, &begin.tables), (None, &None));
        assert_eq!(begin.ts_ms, end.ts_ms, "both carry the commit time");
        let tables: BTreeMap<String, i64> = end.tables.clone().unwrap().into_iter().collect();
        assert_eq!(
            tables.values().sum::<i64>(),
            end.event_count.unwrap(),
            "{end:?}"
        );
        totals.insert(end.id.clone(), end.event_count.unwrap());
        assert!(
            ends.insert(end.id.clone(), tables).is_none(),
            "transaction {} has two BEGIN/END pairs:\n{boundaries:#?}",
            end.id
        );
    }
    // Every event's block, against END.
    let mut seen_total: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen_table: HashMap<(String, String), Vec<i64>> = HashMap::new();
    for topic in [A, B] {
        let events = decoder
            .events(&read_committed(&proxy.bootstrap, topic))
            .await;
        let table = topic.trim_start_matches("tm.").to_owned();
        for e in events.iter().filter(|e| e.value.is_some()) {
            let b = block(e);
            if e.op().as_deref() == Some("r") {
                assert_eq!(b, None, "a snapshot row has no transaction: {e:?}");
                continue;
            }
            let (id, total, per_table) =
                b.unwrap_or_else(|| panic!("a streamed event without a block: {e:?}"));
            let (xid, commit) = id.split_once(':').expect("{xid}:{lsn}");
            assert_eq!(
                e.source("txId").map(|v| int(&v).to_string()).as_deref(),
                Some(xid)
            );
            let seq = string(&e.source("sequence").unwrap());
            assert!(seq.starts_with(&format!("[\"{commit}\"")), "{seq} vs {id}");
            seen_total.entry(id.clone()).or_default().push(total);
            seen_table
                .entry((id, table.clone()))
                .or_default()
                .push(per_table);
        }
    }
    assert_eq!(
        seen_total.keys().collect::<std::collections::BTreeSet<_>>(),
        ends.keys().collect(),
        "transactions with events vs with BEGIN/END"
    );
    for (id, mut orders) in seen_total {
        orders.sort_unstable();
        let n = totals[&id];
        assert_eq!(
            orders,
            (1..=n).collect::<Vec<_>>(),
            "total_order of {id}: gap or repeat"
        );
    }
    for ((id, table), orders) in seen_table {
        // One partition per topic: a table's events are in order.
        let n = ends[&id][&table];
        assert_eq!(
            orders,
            (1..=n).collect::<Vec<_>>(),
            "data_collection_order of {table} in {id}"
        );
    }
    (boundaries, ends)
}

fn expect(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_end_and_orders_hold_across_a_split_big_transaction_and_a_kill_in_its_middle() {
    let Setup { bed, proxy, file } = setup().await;
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("tm", "siphon_tm").await;
    bed.wait_ready_status(&siphon, 200).await;

    // A small transaction over both tables, and one whose key-changing
    // update is two events (delete, create; the tombstone is none).
    bed.pg.psql(
        "tm",
        "BEGIN; INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES (1, 'x'), (2, 'y'); COMMIT",
    );
    bed.pg.psql(
        "tm",
        "BEGIN; UPDATE a SET id = 10 WHERE id = 1; DELETE FROM b WHERE id = 2; COMMIT",
    );
    // The big one: key changes early (inside the part the restart skips),
    // then many parts.
    let before = lsn(&bed);
    let base = committed_txns(&siphon).await;
    bed.pg.psql(
        "tm",
        "BEGIN; \
         INSERT INTO a SELECT g, 'a' || g FROM generate_series(100, 599) g; \
         UPDATE a SET id = id + 100000 WHERE id BETWEEN 100 AND 109; \
         INSERT INTO b SELECT g, 'b' || g FROM generate_series(100, 2099) g; \
         INSERT INTO a SELECT g, 'a' || g FROM generate_series(600, 2599) g; \
         COMMIT",
    );
    // Kill after about a third of its ~92 parts.
    poll_until(WAIT, "a third of the big transaction", async || {
        (committed_txns(&siphon).await >= base + 30.0).then_some(())
    })
    .await;
    let status = Command::new("kill")
        .args(["-KILL", &siphon.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut killed = siphon;
    killed.wait(WAIT);
    let stored = offsets(&proxy).pop().expect("an offset");
    assert!(
        stored.commit_lsn > before && stored.index.is_some() && !stored.txn_complete,
        "killed inside the big transaction: {stored:?}"
    );
    let resumed_at = stored.index.unwrap();
    assert!(
        resumed_at > 520 && resumed_at < 4000,
        "the skipped prefix holds the key changes: {stored:?}"
    );

    let mut siphon = bed.siphon(&file);
    // A transaction after the restart: an insert and a truncate.
    bed.pg.psql(
        "tm",
        "BEGIN; INSERT INTO b VALUES (5000, 'after'); TRUNCATE a; COMMIT",
    );
    wait_confirmed(&bed, &mut siphon, lsn(&bed)).await;
    assert!(
        siphon
            .log()
            .contains("dropped re-sent changes already covered by the stored offset"),
        "{}",
        siphon.log()
    );
    assert!(siphon.stop().success());

    let (boundaries, ends) = check_metadata(&bed, &proxy, &siphon).await;
    let counts: Vec<&BTreeMap<String, i64>> =
        boundaries.chunks(2).map(|p| &ends[&p[1].id]).collect();
    assert_eq!(
        counts,
        [
            &expect(&[("public.a", 1), ("public.b", 2)]),
            &expect(&[("public.a", 2), ("public.b", 1)]),
            &expect(&[("public.a", 500 + 20 + 2000), ("public.b", 2000)]),
            &expect(&[("public.a", 1), ("public.b", 1)]),
        ],
        "{boundaries:#?}"
    );
    // END lists tables in first-seen order.
    let big_end = &boundaries[5];
    assert_eq!(
        big_end.tables.as_ref().unwrap()[0].0,
        "public.a",
        "{big_end:?}"
    );
}
