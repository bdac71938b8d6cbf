//! What becomes of particular tables: partitioned tables (published via
//! the root or per partition), generated columns, and identifiers that
//! Avro or Kafka forbid.

mod support;

use apache_avro::types::Value;
use support::bed::Bed;
use support::events::{Event, field};
use support::kafka::read_committed;
use support::siphon::check;

fn summary(e: &Event) -> (String, Value, Value) {
    let image = if e.op().as_deref() == Some("d") {
        "before"
    } else {
        "after"
    };
    let row = e.row(image).expect("row image");
    (e.op().unwrap(), row["id"].clone(), row["region"].clone())
}

fn st(v: &str) -> Value {
    Value::String(v.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_publish_via_the_root_or_each_on_their_own() {
    let bed = Bed::start("part").await;
    bed.pg.psql(
        "part",
        "CREATE TABLE m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu');
         CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us');",
    );
    let root = bed.connector("root", "part", &["public.m"], "");
    let leaf = bed.connector_with(
        "leaf",
        "part",
        &["public.m"],
        "",
        "publish_via_partition_root = false",
    );
    let s_root = bed.siphon(&root);
    let s_leaf = bed.siphon(&leaf);
    bed.wait_slot_active("part", "siphon_root").await;
    bed.wait_slot_active("part", "siphon_leaf").await;
    assert_eq!(
        bed.pg.psql(
            "part",
            "SELECT string_agg(pubname || '=' || pubviaroot, ',' ORDER BY pubname) FROM pg_publication"
        ),
        "siphon_leaf=false,siphon_root=true"
    );

    // A row moving between partitions, and a partition attached later.
    bed.pg.psql(
        "part",
        "INSERT INTO m VALUES (1, 'eu', 'a');
         INSERT INTO m VALUES (2, 'us', 'b');
         UPDATE m SET region = 'us' WHERE id = 1;
         CREATE TABLE m_asia PARTITION OF m FOR VALUES IN ('asia');
         INSERT INTO m VALUES (3, 'asia', 'c');",
    );

    // Via the root: one topic, the root's schema, the move as a delete
    // (+ tombstone) and a create of the new key.
    let events = bed.wait_events("root.public.m", 6, &s_root).await;
    let values: Vec<_> = events.iter().filter(|e| e.value.is_some()).collect();
    assert_eq!(
        values.iter().map(|e| summary(e)).collect::<Vec<_>>(),
        [
            ("c".into(), Value::Int(1), st("eu")),
            ("c".into(), Value::Int(2), st("us")),
            ("d".into(), Value::Int(1), st("eu")),
            ("c".into(), Value::Int(1), st("us")),
            ("c".into(), Value::Int(3), st("asia")),
        ]
    );
    assert!(values.iter().all(|e| e.source("table") == Some(st("m"))));
    assert_eq!(events.iter().filter(|e| e.value.is_none()).count(), 1);
    assert_eq!(
        bed.client.versions("root.public.m-value").await.unwrap(),
        vec![1]
    );
    for partition in ["m_eu", "m_us", "m_asia"] {
        assert!(
            read_committed(&bed.broker.bootstrap, &format!("root.public.{partition}")).is_empty()
        );
    }

    // Per partition: each partition is a table of its own.
    let eu = bed.wait_events("leaf.public.m_eu", 3, &s_leaf).await;
    let eu: Vec<_> = eu
        .iter()
        .filter(|e| e.value.is_some())
        .map(summary)
        .collect();
    assert_eq!(
        eu,
        [
            ("c".into(), Value::Int(1), st("eu")),
            ("d".into(), Value::Int(1), st("eu")),
        ]
    );
    let us = bed.wait_events("leaf.public.m_us", 2, &s_leaf).await;
    assert_eq!(
        us.iter().map(summary).collect::<Vec<_>>(),
        [
            ("c".into(), Value::Int(2), st("us")),
            ("c".into(), Value::Int(1), st("us")),
        ]
    );
    let asia = bed.wait_events("leaf.public.m_asia", 1, &s_leaf).await;
    assert_eq!(asia[0].source("table"), Some(st("m_asia")));
    assert!(read_committed(&bed.broker.bootstrap, "leaf.public.m").is_empty());

    // An existing publication whose setting differs from the connector's.
    let mismatch = bed.connector_with(
        "mismatch",
        "part",
        &["public.m"],
        "",
        "publication = \"siphon_root\"\npublish_via_partition_root = false",
    );
    let (code, report) = check(&mismatch);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains(
            "PROBLEM postgres: publication siphon_root has publish_via_partition_root = true but postgres.publish_via_partition_root is false and public.m involve partitions: run ALTER PUBLICATION \"siphon_root\" SET (publish_via_partition_root = false); or set postgres.publish_via_partition_root = true"
        ),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_are_not_in_events() {
    let bed = Bed::start("gen").await;
    bed.pg.psql(
        "gen",
        "CREATE TABLE g (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED)",
    );
    let file = bed.connector("gen", "gen", &["public.g"], "");
    let s = bed.siphon(&file);
    bed.wait_slot_active("gen", "siphon_gen").await;
    bed.pg.psql(
        "gen",
        "INSERT INTO g (id, a) VALUES (1, 5); UPDATE g SET a = 6",
    );
    let events = bed.wait_events("gen.public.g", 2, &s).await;
    // pgoutput leaves generated columns out of Relation and row messages
    // (PostgreSQL 18 sends them only for a publication that asks, which
    // siphon refuses: tests/versions.rs), so they are in neither the
    // schema nor the event.
    for e in &events {
        let after = e.row("after").unwrap();
        assert_eq!(after.keys().collect::<Vec<_>>(), ["a", "id"]);
    }
    assert_eq!(events[1].row("after").unwrap()["a"], Value::Int(6));
    let schema = bed
        .client
        .schema_by_id(events[0].value_schema_id.unwrap())
        .await
        .unwrap();
    assert!(!schema.contains(r#""name":"b""#), "{schema}");
    assert_eq!(bed.pg.psql("gen", "SELECT b FROM g"), "12");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_avro_and_kafka_forbid_are_sanitized_and_collisions_refused() {
    let bed = Bed::start("names").await;
    bed.pg.psql(
        "names",
        r#"CREATE SCHEMA "Sales-EU";
           CREATE TABLE "Sales-EU"."Order Items" ("Id" int PRIMARY KEY, "1st" text, "unit-price" int, "naïve" text, "has space" text);"#,
    );
    let file = bed.connector("names", "names", &["Sales-EU.Order Items"], "");
    let s = bed.siphon(&file);
    bed.wait_slot_active("names", "siphon_names").await;
    bed.pg.psql(
        "names",
        r#"INSERT INTO "Sales-EU"."Order Items" VALUES (1, 'first', 10, 'yes', 'x y');
           UPDATE "Sales-EU"."Order Items" SET "unit-price" = 11;
           DELETE FROM "Sales-EU"."Order Items";"#,
    );
    // Kafka allows '-' but not ' ': topic names.Sales-EU.Order_Items.
    let events = bed.wait_events("names.Sales-EU.Order_Items", 4, &s).await;
    let created = events[0].row("after").unwrap();
    assert_eq!(
        created.keys().collect::<Vec<_>>(),
        ["Id", "_1st", "has_space", "na_ve", "unit_price"]
    );
    assert_eq!(created["_1st"], st("first"));
    assert_eq!(created["na_ve"], st("yes"));
    assert_eq!(created["has_space"], st("x y"));
    assert_eq!(
        events[1].row("after").unwrap()["unit_price"],
        Value::Int(11)
    );
    assert_eq!(events[2].op().as_deref(), Some("d"));
    assert_eq!(
        field(events[2].key.as_ref().unwrap(), "Id"),
        Some(&Value::Int(1))
    );
    assert!(events[3].value.is_none(), "tombstone");
    // source keeps the real names; the Avro names are sanitized.
    assert_eq!(events[0].source("schema"), Some(st("Sales-EU")));
    assert_eq!(events[0].source("table"), Some(st("Order Items")));
    let schema = bed
        .client
        .schema_by_id(events[0].value_schema_id.unwrap())
        .await
        .unwrap();
    assert!(
        schema.contains(r#""namespace":"names.Sales_EU.Order_Items""#),
        "{schema}"
    );

    // Collisions: two columns with one field name, two tables with one topic.
    bed.pg.psql(
        "names",
        r#"CREATE TABLE "a b" (id int PRIMARY KEY, "x-y" int, x_y int);
           CREATE TABLE "t t" (id int PRIMARY KEY);
           CREATE TABLE t_t (id int PRIMARY KEY);"#,
    );
    let clash = bed.connector(
        "clash",
        "names",
        &["public.a b", "public.t t", "public.t_t"],
        "",
    );
    let (code, report) = check(&clash);
    assert_eq!(code, Some(1), "{report}");
    for expected in [
        r#"PROBLEM postgres: columns "x-y" and "x_y" of table public.a b both become Avro field name "x_y""#,
        r#"PROBLEM postgres: tables public.t t and public.t_t would both go to topic "clash.public.t_t""#,
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let log = bed.run_until_fatal(&clash, &[]);
    assert!(log.contains("both become Avro field name"), "{log}");
}
