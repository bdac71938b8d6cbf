//! Behaviour that depends on the PostgreSQL version under test
//! (`SIPHON_TEST_PG`, see tests/support/postgres.rs): failover slots
//! (PostgreSQL 17+), a transaction's commit end equal to the next one's
//! first change across restarts (every version; a peer lost data there on
//! PostgreSQL 17), and generated columns, which PostgreSQL 18 can publish.
//!
//! A test of a feature the server lacks prints `SKIPPED: ...` and checks
//! nothing; scripts/test.sh runs this file on every version.

mod support;

use std::collections::BTreeSet;

use apache_avro::types::Value;
use support::bed::{Bed, WAIT};
use support::kafka_proxy::KafkaProxy;
use support::poll_until;
use support::postgres::{PgCluster, require_server, server_major};
use support::siphon::check;
use support::truth::{self, TRUTH_SLOT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_slot_is_created_as_one() {
    if !require_server(17, "postgres.failover_slot (failover slots)") {
        return;
    }
    let bed = Bed::start("fo").await;
    bed.pg
        .psql("fo", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let file = bed.connector_with("fo", "fo", &["public.t"], "", "failover_slot = true");
    let (code, report) = check(&file);
    assert_eq!(code, Some(0), "{report}");
    let s = bed.siphon(&file);
    bed.wait_slot_active("fo", "siphon_fo").await;
    assert_eq!(
        bed.pg.psql(
            "fo",
            "SELECT failover FROM pg_replication_slots WHERE slot_name = 'siphon_fo'"
        ),
        "t",
        "{}",
        s.log()
    );
    // And it streams as any slot does.
    bed.pg.psql("fo", "INSERT INTO t VALUES (1, 'one')");
    let events = bed.wait_events("fo.public.t", 1, &s).await;
    assert_eq!(
        events[0].row("after").unwrap()["v"],
        Value::String("one".into())
    );

    // An existing ordinary slot is used as it is, with a warning that
    // names the command that makes it a failover slot.
    bed.pg.psql(
        "fo",
        "SELECT 1 FROM pg_create_logical_replication_slot('siphon_pre', 'pgoutput')",
    );
    let pre = bed.connector_with("pre", "fo", &["public.t"], "", "failover_slot = true");
    let s_pre = bed.siphon(&pre);
    bed.wait_slot_active("fo", "siphon_pre").await;
    poll_until(WAIT, "the failover warning", async || {
        let log = s_pre.log();
        (log.contains("postgres.failover_slot is true but slot siphon_pre is not a failover slot")
            && log.contains("dbname=fo replication=database")
            && log.contains("-c 'ALTER_REPLICATION_SLOT siphon_pre (FAILOVER true)'"))
        .then_some(())
    })
    .await;
    assert_eq!(
        bed.pg.psql(
            "fo",
            "SELECT failover FROM pg_replication_slots WHERE slot_name = 'siphon_pre'"
        ),
        "f"
    );
    // The command it names works (on the idle slot).
    let mut s_pre = s_pre;
    assert!(s_pre.stop().success(), "{}", s_pre.log());
    bed.pg.psql(
        "dbname=fo replication=database",
        "ALTER_REPLICATION_SLOT siphon_pre (FAILOVER true)",
    );
    assert_eq!(
        bed.pg.psql(
            "fo",
            "SELECT failover FROM pg_replication_slots WHERE slot_name = 'siphon_pre'"
        ),
        "t"
    );

    // The default stays an ordinary slot.
    let plain = bed.connector("plain", "fo", &["public.t"], "");
    let p = bed.siphon(&plain);
    bed.wait_slot_active("fo", "siphon_plain").await;
    assert_eq!(
        bed.pg.psql(
            "fo",
            "SELECT failover FROM pg_replication_slots WHERE slot_name = 'siphon_plain'"
        ),
        "f",
        "{}",
        p.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_slot_is_refused_before_postgresql_17() {
    let major = server_major();
    if major >= 17 {
        support::postgres::skipped(&format!(
            "refusing postgres.failover_slot is for PostgreSQL 15 and 16; this run is on PostgreSQL {major}"
        ));
        return;
    }
    let bed = Bed::start("fo").await;
    bed.pg
        .psql("fo", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let file = bed.connector_with("fo", "fo", &["public.t"], "", "failover_slot = true");
    let problem = format!(
        "postgres.failover_slot = true needs PostgreSQL 17 or later (failover slots), but the server is version {major}: set postgres.failover_slot = false or upgrade PostgreSQL"
    );
    let (code, report) = check(&file);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(&format!("PROBLEM postgres: {problem}")),
        "{report}"
    );
    let log = bed.run_until_fatal(&file, &[]);
    assert!(log.contains(&problem), "{log}");
    // Refused before anything was created.
    assert_eq!(
        bed.pg
            .psql("fo", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

/// One transaction as the truth slot's `pg_logical_slot_peek_changes`
/// tells it: the LSN of its first change (test_decoding's BEGIN row) and
/// the end of its commit record (the COMMIT row).
#[derive(Debug)]
struct TxLsns {
    first: String,
    end: String,
}

fn transactions(pg: &PgCluster, db: &str) -> Vec<TxLsns> {
    let rows = pg.psql(
        db,
        &format!(
            "SELECT lsn, split_part(data, ' ', 1) FROM pg_logical_slot_peek_changes('{TRUTH_SLOT}', NULL, NULL)
              WHERE data LIKE 'BEGIN%' OR data LIKE 'COMMIT%'"
        ),
    );
    let mut out = Vec::new();
    let mut first = None;
    for line in rows.lines() {
        let (lsn, what) = line.split_once('|').expect("lsn|what");
        match what {
            "BEGIN" => first = Some(lsn.to_owned()),
            "COMMIT" => out.push(TxLsns {
                first: first.take().expect("BEGIN before COMMIT"),
                end: lsn.to_owned(),
            }),
            other => panic!("unexpected row {other}"),
        }
    }
    out
}

/// Back-to-back autocommit transactions from one session: each one's first
/// change is written right where the previous commit record ends. Inserts
/// of new ids, updates and deletes of earlier ones; `v` is unique.
fn burst(pg: &PgCluster, next_id: &mut i32, next_v: &mut i64) {
    let mut sql = String::new();
    for _ in 0..15 {
        let id = *next_id;
        *next_id += 1;
        sql.push_str(&format!("INSERT INTO t VALUES ({id}, {});\n", *next_v));
        *next_v += 1;
        if id % 3 == 0 {
            sql.push_str(&format!(
                "UPDATE t SET v = {} WHERE id = {};\n",
                *next_v,
                id - 1
            ));
            *next_v += 1;
        }
        if id % 5 == 0 {
            sql.push_str(&format!("DELETE FROM t WHERE id = {};\n", id - 4));
        }
    }
    pg.psql("b2b", &sql);
}

/// Waits until siphon acknowledged everything committed so far: the slot's
/// confirmed position reached the last transaction's commit end.
async fn wait_acked(bed: &Bed) -> String {
    let end = transactions(&bed.pg, "b2b")
        .last()
        .expect("a transaction")
        .end
        .clone();
    let sql = format!(
        "SELECT confirmed_flush_lsn >= '{end}' FROM pg_replication_slots WHERE slot_name = 'siphon_b2b'"
    );
    poll_until(WAIT, &format!("siphon to acknowledge {end}"), async || {
        (bed.pg.psql("b2b", &sql) == "t").then_some(())
    })
    .await;
    end
}

/// The slot's confirmed position: where the next start resumes.
fn confirmed(pg: &PgCluster) -> String {
    pg.psql(
        "b2b",
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'siphon_b2b'",
    )
}

/// A peer lost data on PostgreSQL 17 when it restarted at a commit end LSN
/// equal to the next transaction's first change. Here every restart (SIGKILL
/// and graceful, while caught up and in the middle of a burst) happens
/// between back-to-back transactions, the slot's confirmed position after
/// each caught-up one is recorded, and the test requires that at least one
/// restart resumed exactly at the first change of a transaction written
/// afterwards; then every change must be in Kafka once, in order, and the
/// table equal to the last event of each key.
///
/// Without idle-time offsets a stored position is always a commit's end;
/// with them (every 200 ms), it is also the WAL end of a keepalive, which
/// PostgreSQL gives as the end of the last record it decoded: the same LSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_between_back_to_back_transactions_lose_and_duplicate_nothing() {
    back_to_back("idle_offset_interval_ms = 3600000").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_between_back_to_back_transactions_with_idle_offsets() {
    back_to_back("idle_offset_interval_ms = 200").await;
}

async fn back_to_back(extra_kafka: &str) {
    const ROUNDS: usize = 8;
    let bed = Bed::start("b2b").await;
    bed.pg.psql(
        "b2b",
        "CREATE TABLE t (id int PRIMARY KEY, v bigint NOT NULL)",
    );
    truth::create_truth_slot(&bed.pg, "b2b");
    // Aborted records of a killed instance are hidden from read_committed
    // consumers only through the proxy (tansu does not list them).
    let kafka = KafkaProxy::start(&bed.broker.bootstrap);
    let file = bed.connector("b2b", "b2b", &["public.t"], extra_kafka);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&bed.broker.bootstrap, &kafka.bootstrap);
    std::fs::write(&file, text).unwrap();

    let (mut next_id, mut next_v) = (1, 1);
    let mut resumed_at = Vec::new();
    for round in 0..ROUNDS {
        let mut s = bed.siphon(&file);
        bed.wait_slot_active("b2b", "siphon_b2b").await;
        burst(&bed.pg, &mut next_id, &mut next_v);
        match round % 4 {
            // Caught up, then SIGKILL: no Kafka transaction is open.
            0 => {
                wait_acked(&bed).await;
                s.kill();
                resumed_at.push(confirmed(&bed.pg));
            }
            // Caught up, then a graceful stop.
            1 => {
                wait_acked(&bed).await;
                assert!(s.stop().success(), "{}", s.log());
                resumed_at.push(confirmed(&bed.pg));
            }
            // A graceful stop in the middle of the stream.
            2 => {
                assert!(s.stop().success(), "{}", s.log());
            }
            // SIGKILL in the middle of the stream (maybe inside a Kafka
            // transaction: the proxy hides what the broker aborts).
            _ => s.kill(),
        }
        // Written while siphon is down: the restart resumes right before it.
        burst(&bed.pg, &mut next_id, &mut next_v);
    }
    let mut s = bed.siphon(&file);
    wait_acked(&bed).await;
    assert!(s.stop().success(), "{}", s.log());

    let txs = transactions(&bed.pg, "b2b");
    let firsts: BTreeSet<&str> = txs.iter().map(|t| t.first.as_str()).collect();
    let adjacent = txs.windows(2).filter(|w| w[0].end == w[1].first).count();
    let exact = resumed_at
        .iter()
        .filter(|end| firsts.contains(end.as_str()))
        .count();
    println!(
        "VERSIONS back-to-back ({extra_kafka}) on PostgreSQL {}: {} transactions, {adjacent} starting at the previous commit's end; {exact} of {} caught-up restarts resumed exactly at a later transaction's first change",
        server_major(),
        txs.len(),
        resumed_at.len()
    );
    assert!(
        adjacent * 2 > txs.len(),
        "the workload did not write back-to-back transactions: {txs:?}"
    );
    assert!(
        exact > 0,
        "no restart resumed at a transaction's first change: confirmed {resumed_at:?}, transactions {txs:?}"
    );

    let tables = vec!["t".to_owned()];
    let truth = truth::truth_history(&bed.pg, "b2b", &tables, true).await;
    let read = truth::kafka_history(&kafka.bootstrap, &bed.client, "b2b", &tables).await;
    let state = truth::table_state(&bed.pg, "b2b", &tables).await;
    let verdict = truth::compare(&truth, &read.history, read.records, &state);
    assert!(verdict.clean(), "{verdict}\n{}", s.log());
    assert!(verdict.changes > 200, "{verdict}");
}

/// What siphon does with a stored generated column: it leaves it out in
/// every phase (docs/types.md, "Generated columns"). On PostgreSQL 18 the
/// publication siphon creates does not publish generated columns (the
/// default `publish_generated_columns = none`), so snapshot and stream
/// events have the same schema and values; a publication that does publish
/// them is refused with the fix, since the snapshot would not match it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_have_the_same_shape_in_snapshot_and_stream() {
    if !require_server(18, "publish_generated_columns") {
        return;
    }
    let bed = Bed::start("gen").await;
    bed.pg.psql(
        "gen",
        "CREATE TABLE g (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED);
         INSERT INTO g (id, a) VALUES (1, 5), (2, 7);",
    );
    let file = bed.connector("gen", "gen", &["public.g"], "");
    let s = bed.siphon(&file);
    bed.wait_slot_active("gen", "siphon_gen").await;
    bed.pg.psql(
        "gen",
        "INSERT INTO g (id, a) VALUES (3, 9); UPDATE g SET a = 6 WHERE id = 1",
    );
    let events = bed.wait_events("gen.public.g", 4, &s).await;
    let ops: Vec<String> = events.iter().map(|e| e.op().unwrap()).collect();
    assert_eq!(ops, ["r", "r", "c", "u"], "{}", s.log());
    for e in &events {
        let after = e.row("after").unwrap();
        assert_eq!(after.keys().collect::<Vec<_>>(), ["a", "id"], "{e:?}");
    }
    let values: Vec<(Value, Value)> = events
        .iter()
        .map(|e| {
            let after = e.row("after").unwrap();
            (after["id"].clone(), after["a"].clone())
        })
        .collect();
    assert_eq!(
        values,
        [
            (Value::Int(1), Value::Int(5)),
            (Value::Int(2), Value::Int(7)),
            (Value::Int(3), Value::Int(9)),
            (Value::Int(1), Value::Int(6)),
        ]
    );
    // One schema for both phases.
    let ids: BTreeSet<u32> = events.iter().map(|e| e.value_schema_id.unwrap()).collect();
    assert_eq!(ids.len(), 1, "{events:?}");
    let schema = bed
        .client
        .schema_by_id(*ids.first().unwrap())
        .await
        .unwrap();
    assert!(!schema.contains(r#""name":"b""#), "{schema}");
    assert_eq!(
        bed.pg.psql(
            "gen",
            "SELECT pubgencols FROM pg_publication WHERE pubname = 'siphon_gen'"
        ),
        "n"
    );

    // A publication that publishes them does not match the snapshot's shape.
    bed.pg.psql(
        "gen",
        "CREATE PUBLICATION gen_all FOR TABLE g WITH (publish_generated_columns = stored)",
    );
    let all = bed.connector_with("all", "gen", &["public.g"], "", "publication = \"gen_all\"");
    let problem = "publication gen_all publishes generated columns (publish_generated_columns = stored), which siphon leaves out of snapshots and events: run ALTER PUBLICATION \"gen_all\" SET (publish_generated_columns = none);";
    let (code, report) = check(&all);
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains(problem), "{report}");
    let log = bed.run_until_fatal(&all, &[]);
    assert!(log.contains(problem), "{log}");
    // So is one whose column list names a generated column.
    bed.pg
        .psql("gen", "CREATE PUBLICATION gen_list FOR TABLE g (id, a, b)");
    let list = bed.connector_with(
        "list",
        "gen",
        &["public.g"],
        "",
        "publication = \"gen_list\"",
    );
    let (code, report) = check(&list);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("PROBLEM postgres: publication gen_list lists generated column b of public.g in its column list"),
        "{report}"
    );
}
