//! Schema evolution: each kind of table change registers the right next
//! version (or none) of the key and value subjects, the events before and
//! after it decode with their own schema ids, and an incompatible change
//! follows `schemas.on_incompatible` without losing anything.

mod support;

use std::time::Duration;

use apache_avro::types::Value;
use support::bed::Bed;
use support::events::{Event, field};
use support::kafka::read_committed;

/// The subject's own compatibility level (`None`: it has none and follows
/// the global one), read straight from the registry's REST API.
async fn subject_level(bed: &Bed, subject: &str) -> Option<String> {
    let url = format!("{}/config/{subject}", bed.registry.url);
    let response = reqwest::get(&url).await.expect("GET /config/{subject}");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let body: serde_json::Value = response.json().await.expect("config body");
    body["compatibilityLevel"].as_str().map(str::to_owned)
}

async fn versions(bed: &Bed, subject: &str) -> Vec<u32> {
    bed.client.versions(subject).await.expect(subject)
}

fn after(e: &Event) -> std::collections::BTreeMap<String, Value> {
    e.row("after").expect("after image")
}

fn text(s: &str) -> Value {
    Value::String(s.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_registers_its_version_and_events_decode_with_their_own_schema() {
    let bed = Bed::start("evo").await;
    bed.pg.psql(
        "evo",
        "CREATE TABLE t (id int PRIMARY KEY, name varchar(10) NOT NULL, qty int, big int NOT NULL)",
    );
    let file = bed.connector("evo", "evo", &["public.t"], "");
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("evo", "siphon_evo").await;
    let topic = "evo.public.t";
    let (key_subject, value_subject) = ("evo.public.t-key", "evo.public.t-value");

    // Each step: DDL + one change, then the value versions registered so far.
    let steps: [(&str, &[u32]); 10] = [
        ("INSERT INTO t VALUES (1, 'a', 1, 1)", &[1]),
        (
            "ALTER TABLE t ADD COLUMN note text; INSERT INTO t VALUES (2, 'b', 2, 2, 'n2')",
            &[1, 2],
        ),
        (
            "ALTER TABLE t DROP COLUMN qty; INSERT INTO t VALUES (3, 'c', 3, 'n3')",
            &[1, 2, 3],
        ),
        (
            "ALTER TABLE t ALTER COLUMN big TYPE bigint; INSERT INTO t VALUES (4, 'd', 4, 'n4')",
            &[1, 2, 3, 4],
        ),
        // varchar(10) → text: both are an Avro string, so no new version.
        (
            "ALTER TABLE t ALTER COLUMN name TYPE text; INSERT INTO t VALUES (5, 'a long name', 5, 'n5')",
            &[1, 2, 3, 4],
        ),
        (
            "ALTER TABLE t ALTER COLUMN big DROP NOT NULL; INSERT INTO t VALUES (6, 'e', NULL, 'n6')",
            &[1, 2, 3, 4, 5],
        ),
        (
            "ALTER TABLE t RENAME COLUMN note TO remark; INSERT INTO t VALUES (7, 'g', 7, 'r7')",
            &[1, 2, 3, 4, 5, 6],
        ),
        // The key column's type: a new key version too (int → long is a
        // promotion BACKWARD allows).
        (
            "ALTER TABLE t ALTER COLUMN id TYPE bigint; INSERT INTO t VALUES (8, 'h', 8, 'r8')",
            &[1, 2, 3, 4, 5, 6, 7],
        ),
        ("UPDATE t SET big = 6 WHERE id = 6", &[1, 2, 3, 4, 5, 6, 7]),
        // A NOT NULL column with a constant default: the Avro field gets
        // the default, so BACKWARD accepts it.
        (
            "ALTER TABLE t ADD COLUMN flag bool NOT NULL DEFAULT true; INSERT INTO t VALUES (9, 'i', 9, 'r9', false)",
            &[1, 2, 3, 4, 5, 6, 7, 8],
        ),
    ];
    let mut events = Vec::new();
    for (n, (sql, expected)) in steps.iter().enumerate() {
        bed.pg.psql("evo", sql);
        events = bed.wait_events(topic, n + 1, &s).await;
        assert_eq!(
            &versions(&bed, value_subject).await,
            expected,
            "after {sql}"
        );
    }
    assert_eq!(versions(&bed, key_subject).await, vec![1, 2]);
    // siphon created both subjects with the default level, BACKWARD.
    for subject in [key_subject, value_subject] {
        assert_eq!(
            subject_level(&bed, subject).await.as_deref(),
            Some("BACKWARD")
        );
    }

    // Each event carries the id of the version in force when it was written.
    let ids: Vec<u32> = events.iter().map(|e| e.value_schema_id.unwrap()).collect();
    let distinct = |a: usize, b: usize| assert_ne!(ids[a], ids[b], "events {a} and {b}");
    for i in [0, 1, 2, 4, 5, 6] {
        distinct(i, i + 1);
    }
    assert_eq!(ids[3], ids[4], "varchar(10) → text keeps the schema");
    assert_eq!(ids[7], ids[8]);
    assert_ne!(ids[8], ids[9]);

    let rows: Vec<_> = events.iter().map(after).collect();
    // Before ADD COLUMN: no note; after: the value.
    assert_eq!(rows[0]["qty"], Value::Int(1));
    assert!(!rows[0].contains_key("note"));
    assert_eq!(rows[1]["note"], text("n2"));
    // DROP COLUMN: qty is gone from the new version only.
    assert!(!rows[2].contains_key("qty"));
    assert_eq!(rows[1]["qty"], Value::Int(2));
    // int → bigint.
    assert_eq!(rows[2]["big"], Value::Int(3));
    assert_eq!(rows[3]["big"], Value::Long(4));
    assert_eq!(rows[4]["name"], text("a long name"));
    // DROP NOT NULL: big may now be null. (NOT NULL changes are shown on
    // a fixed-length column: under the default unchanged_toast = "null"
    // text-like columns are nullable in the schema whatever the catalog says.)
    assert_eq!(rows[5]["big"], Value::Null);
    // RENAME COLUMN: the new name from then on.
    assert_eq!(rows[6]["remark"], text("r7"));
    assert!(!rows[6].contains_key("note"));
    // The key's type change shows in the key record.
    assert_eq!(
        field(events[6].key.as_ref().unwrap(), "id"),
        Some(&Value::Int(7))
    );
    assert_eq!(
        field(events[7].key.as_ref().unwrap(), "id"),
        Some(&Value::Long(8))
    );
    assert_eq!(events[8].op().as_deref(), Some("u"));
    assert_eq!(rows[8]["big"], Value::Long(6));
    assert_eq!(rows[9]["flag"], Value::Boolean(false));
    assert!(!rows[8].contains_key("flag"));

    // SET NOT NULL is incompatible under BACKWARD (a non-null reader cannot
    // read the nulls written before): siphon stops, naming the column.
    bed.pg.psql(
        "evo",
        "ALTER TABLE t ALTER COLUMN big SET NOT NULL; INSERT INTO t VALUES (10, 'j', 10, 'r10')",
    );
    let status = s
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("siphon kept running:\n{}", s.log()));
    assert!(!status.success());
    let log = s.log();
    assert!(
        log.contains("the new schema of table public.t is incompatible with the versions registered under subject evo.public.t-value: column big changed from nullable long to long; registry: "),
        "{log}"
    );
    assert_eq!(read_committed(&bed.broker.bootstrap, topic).len(), 10);
    assert_eq!(versions(&bed, value_subject).await.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_changes_are_registered_under_the_register_policy_and_levels_are_per_table() {
    let bed = Bed::start("reg").await;
    bed.pg.psql(
        "reg",
        "CREATE TABLE u (id int PRIMARY KEY, size text NOT NULL, opt int);
         CREATE TABLE w (id int PRIMARY KEY);",
    );
    let schemas = "
[schemas]
on_incompatible = \"register\"
[schemas.table_compatibility]
\"public.w\" = \"FULL\"
";
    let file = bed.connector("reg", "reg", &["public.u", "public.w"], schemas);
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("reg", "siphon_reg").await;
    let topic = "reg.public.u";
    let value_subject = "reg.public.u-value";

    bed.pg.psql(
        "reg",
        "INSERT INTO u VALUES (1, 'large', 1); INSERT INTO w VALUES (1);",
    );
    bed.wait_events(topic, 1, &s).await;
    bed.wait_events("reg.public.w", 1, &s).await;
    assert_eq!(
        subject_level(&bed, value_subject).await.as_deref(),
        Some("BACKWARD")
    );
    assert_eq!(
        subject_level(&bed, "reg.public.w-value").await.as_deref(),
        Some("FULL")
    );
    assert_eq!(
        subject_level(&bed, "reg.public.w-key").await.as_deref(),
        Some("FULL")
    );

    // string → int, a NOT NULL column whose default is no constant, SET NOT NULL: each
    // refused by BACKWARD, each registered anyway.
    for sql in [
        "ALTER TABLE u ALTER COLUMN size TYPE int USING length(size); INSERT INTO u VALUES (2, 42, 2)",
        "ALTER TABLE u ADD COLUMN flag bool NOT NULL DEFAULT (random() < 2); INSERT INTO u VALUES (3, 7, 3, false)",
        "ALTER TABLE u ALTER COLUMN opt SET NOT NULL; INSERT INTO u VALUES (4, 1, 4, true)",
    ] {
        bed.pg.psql("reg", sql);
    }
    let events = bed.wait_events(topic, 4, &s).await;
    assert_eq!(versions(&bed, value_subject).await, vec![1, 2, 3, 4]);
    let rows: Vec<_> = events.iter().map(after).collect();
    assert_eq!(rows[0]["size"], text("large"));
    assert_eq!(rows[1]["size"], Value::Int(42));
    assert_eq!(rows[2]["flag"], Value::Boolean(false));
    assert_eq!(rows[3]["opt"], Value::Int(4));
    let ids: Vec<u32> = events.iter().map(|e| e.value_schema_id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] != w[1]), "{ids:?}");
    // The exception covered those versions only: the level is back.
    assert_eq!(
        subject_level(&bed, value_subject).await.as_deref(),
        Some("BACKWARD")
    );
    let log = s.log();
    for expected in [
        "incompatible schema registered anyway",
        "column size changed from nullable string to int",
        "column flag added as boolean without a default (NOT NULL)",
        "column opt changed from nullable int to int",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }

    // An operator's later change of a level is not undone by a restart.
    s.stop();
    bed.client
        .set_compatibility("reg.public.u-key", "NONE")
        .await
        .unwrap();
    let s = bed.siphon(&file);
    bed.pg.psql("reg", "INSERT INTO u VALUES (5, 5, 5, true)");
    let events = bed.wait_events(topic, 5, &s).await;
    assert_eq!(after(&events[4])["id"], Value::Int(5));
    assert_eq!(
        subject_level(&bed, "reg.public.u-key").await.as_deref(),
        Some("NONE")
    );
    assert_eq!(versions(&bed, value_subject).await, vec![1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_table_moves_to_its_new_topic_and_a_recreated_one_continues_its_subject() {
    let bed = Bed::start("ren").await;
    bed.pg
        .psql("ren", "CREATE TABLE r (id int PRIMARY KEY, v text)");
    let file = bed.connector("ren", "ren", &["public.r"], "");
    let s = bed.siphon(&file);
    bed.wait_slot_active("ren", "siphon_ren").await;
    bed.pg.psql("ren", "INSERT INTO r VALUES (1, 'one')");
    let old = bed.wait_events("ren.public.r", 1, &s).await;

    // RENAME: same relation oid, still published; pgoutput sends the new
    // name, and the events follow it (as Debezium's do).
    bed.pg.psql(
        "ren",
        "ALTER TABLE r RENAME TO r2; INSERT INTO r2 VALUES (2, 'two')",
    );
    let renamed = bed.wait_events("ren.public.r2", 1, &s).await;
    assert_eq!(after(&renamed[0])["v"], text("two"));
    assert_eq!(renamed[0].source("table"), Some(text("r2")));
    assert_eq!(versions(&bed, "ren.public.r2-value").await, vec![1]);
    assert_eq!(versions(&bed, "ren.public.r-value").await, vec![1]);
    assert_ne!(old[0].value_schema_id, renamed[0].value_schema_id);

    // DROP + CREATE: the new table (new oid) is in no publication until
    // added; its changes before that are not captured by PostgreSQL.
    bed.pg.psql(
        "ren",
        "DROP TABLE r2;
         CREATE TABLE r2 (id int PRIMARY KEY, v text, extra int);
         INSERT INTO r2 VALUES (3, 'not published', 3);
         ALTER PUBLICATION siphon_ren ADD TABLE r2;
         INSERT INTO r2 VALUES (4, 'four', 4);",
    );
    let events = bed.wait_events("ren.public.r2", 2, &s).await;
    assert_eq!(after(&events[1])["id"], Value::Int(4));
    assert_eq!(after(&events[1])["extra"], Value::Int(4));
    assert_eq!(versions(&bed, "ren.public.r2-value").await, vec![1, 2]);
    assert_eq!(versions(&bed, "ren.public.r2-key").await, vec![1]);

    // The connector file still names public.r: the next start says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siphon"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(
            "PROBLEM postgres: table public.r does not exist: create it or remove it from postgres.tables"
        ),
        "{report}"
    );
}
