//! The topics next to the tables' ones, against the real services:
//! heartbeat records (`heartbeat.emit_records`) and the dead-letter topic
//! (`[dead_letter] topic`). The default (no dead-letter topic: a row that
//! cannot be written stops the connector) is tests/errors.rs's.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use support::bed::{Bed, WAIT};
use support::events::{CachedDecoder, Event, field, int, unwrap_union};
use support::kafka::read_committed;
use support::kafka_proxy::KafkaProxy;
use support::poll_until;

fn string(v: &Value) -> String {
    match unwrap_union(v) {
        Value::String(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn get(e: &Event, name: &str) -> Value {
    unwrap_union(field(e.value.as_ref().expect("a value"), name).expect(name)).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_records_arrive_while_idle_at_the_interval_as_debeziums() {
    let bed = Bed::start("hb").await;
    bed.pg.psql("hb", "CREATE TABLE t (id int PRIMARY KEY)");
    let file = bed.connector(
        "hb",
        "hb",
        &["public.t"],
        "idle_offset_interval_ms = 2000\n[heartbeat]\ninterval_ms = 500\nemit_records = true\n",
    );
    let s = bed.siphon(&file);
    bed.wait_slot_active("hb", "siphon_hb").await;
    let topic = "__debezium-heartbeat.hb";
    // Idle tables: the records come anyway, one per interval.
    let started = Instant::now();
    let records = poll_until(WAIT, "6 heartbeat records", async || {
        let r = read_committed(&bed.broker.bootstrap, topic);
        (r.len() >= 6).then_some(r)
    })
    .await;
    let elapsed = started.elapsed();
    let mut decoder = CachedDecoder::new(&bed.registry.url);
    let beats = decoder.events(&records).await;
    let ts: Vec<i64> = beats
        .iter()
        .map(|e| {
            assert_eq!(
                e.key,
                Some(Value::Record(vec![(
                    "serverName".into(),
                    Value::String("hb".into())
                )])),
                "Debezium's key: the topic prefix"
            );
            int(&get(e, "ts_ms"))
        })
        .collect();
    for w in ts.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            (300..=1_500).contains(&gap),
            "heartbeats {gap} ms apart, configured 500: {ts:?}\n{}",
            s.log()
        );
    }
    assert!(
        elapsed >= Duration::from_millis(2_000),
        "6 heartbeats in {elapsed:?}"
    );
    let subjects: Vec<String> = reqwest::get(format!("{}/subjects", bed.registry.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for subject in [format!("{topic}-key"), format!("{topic}-value")] {
        assert!(subjects.contains(&subject), "{subject} in {subjects:?}");
    }
    let value_schema: serde_json::Value = serde_json::from_str(
        &bed.client
            .schema_by_id(beats[0].value_schema_id.unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(value_schema["name"], "Heartbeat");
    assert_eq!(value_schema["namespace"], "io.debezium.connector.common");

    // Heartbeats (every 500 ms) do not hold back the idle offsets (every
    // 2 s): WAL written outside the captured tables is still confirmed.
    bed.pg.psql(
        "hb",
        "CREATE TABLE other (id int); INSERT INTO other SELECT generate_series(1, 1000)",
    );
    let end = bed.pg.psql("hb", "SELECT pg_current_wal_lsn()");
    let sql = format!(
        "SELECT confirmed_flush_lsn >= '{end}' FROM pg_replication_slots WHERE slot_name = 'siphon_hb'"
    );
    poll_until(WAIT, "the idle slot to advance", async || {
        (bed.pg.psql("hb", &sql) == "t").then_some(())
    })
    .await;

    // Changes still flow, each once.
    bed.pg.psql("hb", "INSERT INTO t VALUES (1), (2)");
    bed.wait_records("hb.public.t", 2, &s).await;
}

const LIMIT: &str = r#"properties = { "message.max.bytes" = "200000" }"#;

/// A dead-letter record, decoded.
#[derive(Debug, PartialEq)]
struct Letter {
    table: String,
    topic: String,
    commit_lsn: String,
    index: i64,
    op: String,
    key: Option<String>,
    error: String,
    values: serde_json::Value,
    values_truncated: bool,
    total_order: Option<i64>,
}

fn letter(e: &Event) -> Letter {
    let opt_long = |name| match get(e, name) {
        Value::Null => None,
        v => Some(int(&v)),
    };
    Letter {
        table: string(&get(e, "table")),
        topic: string(&get(e, "topic")),
        commit_lsn: string(&get(e, "commit_lsn")),
        index: int(&get(e, "index")),
        op: string(&get(e, "op")),
        key: match get(e, "key") {
            Value::Null => None,
            v => Some(string(&v)),
        },
        error: string(&get(e, "error")),
        values: serde_json::from_str(&string(&get(e, "values"))).expect("values are JSON"),
        values_truncated: get(e, "values_truncated") == Value::Boolean(true),
        total_order: opt_long("total_order"),
    }
}

/// A row too large for a Kafka record and a row the encoder refuses (NaN in
/// a NOT NULL numeric: with `unchanged_toast = "placeholder"` the column is
/// not nullable in the schema, and Avro decimals have no NaN) go to the dead-letter topic, the rows around them to
/// their table's topic, all in the source transaction's order; siphon
/// crashes twice inside the Kafka transactions holding them (at the
/// `mid_batch` fail point: inside an open Kafka transaction, as SIGKILL)
/// and after the restarts nothing is missing or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_cannot_be_written_go_to_the_dead_letter_topic_exactly_once_across_crashes() {
    if !cfg!(feature = "failpoints") {
        panic!("needs `--features failpoints` (scripts/test.sh builds with it)");
    }
    let bed = Bed::start("dl").await;
    bed.pg.psql(
        "dl",
        "CREATE TABLE t (id int PRIMARY KEY, body text, n numeric(10, 2) NOT NULL)",
    );
    let proxy = KafkaProxy::start(&bed.broker.bootstrap);
    let extra = format!(
        "batch_max_events = 2\n{LIMIT}\n[transactions]\nenabled = true\n\
         [dead_letter]\ntopic = \"dl.dead-letter\"\n\
         [types]\nunchanged_toast = \"placeholder\"\n"
    );
    let file = bed.connector("dl", "dl", &["public.t"], &extra);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&bed.broker.bootstrap, &proxy.bootstrap);
    std::fs::write(&file, text).unwrap();

    // Run 1 crashes at the fifth event queued: row 6, whose Kafka
    // transaction holds row 5's dead letter.
    let mut s = bed.siphon_with_env(&file, &[("FAILPOINTS", "mid_batch=4*off->return")]);
    bed.wait_slot_active("dl", "siphon_dl").await;
    bed.pg.psql(
        "dl",
        "INSERT INTO t SELECT g, 'small', g FROM generate_series(1, 3) g",
    );
    bed.pg.psql(
        "dl",
        "BEGIN; INSERT INTO t VALUES (4, 'small', 4); \
         INSERT INTO t VALUES (5, repeat('x', 300000), 5); \
         INSERT INTO t VALUES (6, 'small', 6); \
         INSERT INTO t VALUES (7, 'small', 'NaN'); \
         INSERT INTO t VALUES (8, 'small', 8); COMMIT",
    );
    let status = s.wait(WAIT).expect("run 1 crashes at its fail point");
    assert!(!status.success(), "{}", s.log());
    assert!(s.log().contains("mid_batch"), "{}", s.log());
    // Run 2 re-writes row 5's dead letter and row 6, then crashes at row 8,
    // whose Kafka transaction holds row 7's dead letter.
    let mut s = bed.siphon_with_env(&file, &[("FAILPOINTS", "mid_batch=1*off->return")]);
    let status = s.wait(WAIT).expect("run 2 crashes at its fail point");
    assert!(!status.success(), "{}", s.log());
    // Run 3 finishes.
    let mut s = bed.siphon(&file);
    let end: String = bed.pg.psql("dl", "SELECT pg_current_wal_lsn()");
    let sql = format!(
        "SELECT confirmed_flush_lsn >= '{end}' FROM pg_replication_slots WHERE slot_name = 'siphon_dl'"
    );
    poll_until(WAIT, "the slot to confirm the workload", async || {
        (bed.pg.psql("dl", &sql) == "t").then_some(())
    })
    .await;
    let dead = s
        .metric(r#"siphon_dead_letters_total{connector="dl",table="public.t"}"#)
        .await;
    let log = s.log();
    assert!(s.stop().success(), "{log}");

    let mut decoder = CachedDecoder::new(&bed.registry.url);
    let events = decoder
        .events(&read_committed(&proxy.bootstrap, "dl.public.t"))
        .await;
    let ids: Vec<i64> = events
        .iter()
        .map(|e| int(e.row("after").unwrap().get("id").unwrap()))
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 6, 8], "{log}");
    let letters: Vec<Letter> = decoder
        .events(&read_committed(&proxy.bootstrap, "dl.dead-letter"))
        .await
        .iter()
        .map(letter)
        .collect();
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let commit_lsn = events[3]
        .source("sequence")
        .map(|v| string(&v))
        .and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok())
        .map(|pair| siphon::event::Lsn(pair[0].parse().unwrap()).to_string())
        .unwrap();
    let (big, nan) = (&letters[0], &letters[1]);
    for (l, index, id) in [(big, 1, 5), (nan, 3, 7)] {
        assert_eq!(
            (
                l.table.as_str(),
                l.topic.as_str(),
                l.commit_lsn.as_str(),
                l.index,
                l.op.as_str()
            ),
            ("public.t", "dl.public.t", commit_lsn.as_str(), index, "c"),
            "{l:#?}"
        );
        assert_eq!(
            l.key.as_deref(),
            Some(format!(r#"{{"id":"{id}"}}"#).as_str())
        );
        assert_eq!(l.values["before"], serde_json::Value::Null);
        assert_eq!(l.values["after"]["id"], id.to_string());
    }
    assert!(
        big.error.contains("over the limit of 199903 bytes")
            && big.error.contains(&format!("({commit_lsn}, 1)")),
        "{big:#?}"
    );
    assert!(big.values_truncated, "{big:#?}");
    let body = big.values["after"]["body"].as_str().unwrap();
    assert!(
        body.len() > 10_000 && body.len() < 200_000 && body.bytes().all(|b| b == b'x'),
        "{}",
        body.len()
    );
    assert!(
        nan.error.contains("column n of public.t")
            && nan.error.contains("no Avro decimal representation"),
        "{nan:#?}"
    );
    assert!(!nan.values_truncated);
    assert_eq!(nan.values["after"]["n"], "NaN");
    assert_eq!(nan.values["after"]["body"], "small");

    // Transaction metadata counts the dead letters in their place: END says
    // five events, the topic shows orders 1, 3, 5 and the letters 2, 4.
    let orders: Vec<i64> = events[3..]
        .iter()
        .map(|e| {
            let b = unwrap_union(field(e.value.as_ref().unwrap(), "transaction").unwrap());
            int(field(b, "total_order").unwrap())
        })
        .collect();
    assert_eq!(orders, [1, 3, 5]);
    assert_eq!(
        letters.iter().map(|l| l.total_order).collect::<Vec<_>>(),
        [Some(2), Some(4)]
    );
    let boundaries = decoder
        .events(&read_committed(&proxy.bootstrap, "dl.transaction"))
        .await;
    let ends: Vec<(i64, BTreeMap<String, i64>)> = boundaries
        .iter()
        .filter(|e| string(&get(e, "status")) == "END")
        .map(|e| {
            let tables = match get(e, "data_collections") {
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        (
                            string(field(i, "data_collection").unwrap()),
                            int(field(i, "event_count").unwrap()),
                        )
                    })
                    .collect(),
                other => panic!("{other:?}"),
            };
            (int(&get(e, "event_count")), tables)
        })
        .collect();
    assert_eq!(
        boundaries.len(),
        4,
        "one BEGIN and END each: {boundaries:#?}"
    );
    assert_eq!(
        ends,
        [
            (3, BTreeMap::from([("public.t".to_owned(), 3)])),
            (5, BTreeMap::from([("public.t".to_owned(), 5)])),
        ]
    );

    // Run 3 wrote row 7's dead letter: counted once, logged at WARN with
    // table and position, never the values.
    assert_eq!(dead, Some(1.0), "{log}");
    let warn_line = log
        .lines()
        .find(|l| l.contains("event written to the dead-letter topic"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        warn_line.contains("WARN")
            && warn_line.contains("public.t")
            && warn_line.contains(&format!("({commit_lsn}, 3)")),
        "{warn_line}"
    );
    assert!(!log.contains("small"), "a value in the log:\n{log}");
}
