//! End to end: a private PostgreSQL, a tansu broker and the registry
//! stand-in, the real `siphon` binary between them, and a read_committed
//! consumer checking what arrived against what the test wrote.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use apache_avro::types::Value;
use num_bigint::BigInt;
use support::bed::Bed;
use support::events::Event;
use support::kafka::read_committed;
use support::postgres::{PgCluster, PgOptions};

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => i64::from(*i),
        Value::Long(l) => *l,
        other => panic!("not an integer: {other:?}"),
    }
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A `decimal` value as its unscaled integer.
fn unscaled(v: &Value) -> BigInt {
    match v {
        Value::Decimal(d) => {
            let bytes: Vec<u8> = d.try_into().expect("decimal bytes");
            BigInt::from_signed_bytes_be(&bytes)
        }
        Value::Bytes(b) => BigInt::from_signed_bytes_be(b),
        other => panic!("not a decimal: {other:?}"),
    }
}

fn key_id(e: &Event) -> i64 {
    let key = e.key.as_ref().expect("event has a key");
    int(support::events::field(key, "id").expect("key has id"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_two_tables_arrive_as_registered_avro_in_commit_order() {
    let bed = Bed::start("shop").await;
    bed.pg.psql(
        "shop",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email varchar(100), joined timestamptz);
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, amount numeric(10,2) NOT NULL, note text, paid boolean);",
    );
    let file = bed.connector("shop", "shop", &["public.customers", "public.orders"], "");
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("shop", "siphon_shop").await;

    bed.pg.psql(
        "shop",
        "INSERT INTO customers VALUES (1, 'Zoë Ångström', 'zoe@example.com', '2024-01-02 03:04:05.123456+00'), (2, '李小龙 🐉', NULL, NULL);
         BEGIN;
         INSERT INTO orders VALUES (10, 1, 12345.67, 'first ☕', true);
         UPDATE customers SET email = 'zoe@new.example' WHERE id = 1;
         COMMIT;
         UPDATE orders SET amount = -0.05, note = NULL, paid = NULL WHERE id = 10;
         DELETE FROM customers WHERE id = 2;",
    );

    // customers: c(1), c(2), u(1), d(2) + tombstone; orders: c(10), u(10).
    let customers = bed.wait_events("shop.public.customers", 5, &siphon).await;
    let orders = bed.wait_events("shop.public.orders", 2, &siphon).await;

    let ops: Vec<(i64, Option<String>)> = customers.iter().map(|e| (key_id(e), e.op())).collect();
    assert_eq!(
        ops,
        vec![
            (1, Some("c".into())),
            (2, Some("c".into())),
            (1, Some("u".into())),
            (2, Some("d".into())),
            (2, None), // tombstone
        ]
    );
    let zoe = customers[0].row("after").expect("after");
    assert_eq!(int(&zoe["id"]), 1);
    assert_eq!(string(&zoe["name"]), "Zoë Ångström");
    assert_eq!(string(&zoe["email"]), "zoe@example.com");
    assert_eq!(string(&zoe["joined"]), "2024-01-02T03:04:05.123456Z");
    assert!(customers[0].row("before").is_none());
    let bruce = customers[1].row("after").expect("after");
    assert_eq!(string(&bruce["name"]), "李小龙 🐉");
    assert_eq!(bruce["email"], Value::Null);
    assert_eq!(bruce["joined"], Value::Null);
    let updated = customers[2].row("after").expect("after");
    assert_eq!(string(&updated["email"]), "zoe@new.example");
    assert_eq!(string(&updated["name"]), "Zoë Ångström");
    let deleted = customers[3].row("before").expect("delete has before");
    assert_eq!(int(&deleted["id"]), 2);
    assert!(customers[3].row("after").is_none());
    assert!(customers[4].value.is_none());

    assert_eq!(orders.iter().map(key_id).collect::<Vec<_>>(), vec![10, 10]);
    assert_eq!(orders[0].op().as_deref(), Some("c"));
    let first = orders[0].row("after").expect("after");
    assert_eq!(unscaled(&first["amount"]), BigInt::from(1_234_567));
    assert_eq!(string(&first["note"]), "first ☕");
    assert_eq!(first["paid"], Value::Boolean(true));
    assert_eq!(int(&first["customer_id"]), 1);
    let second = orders[1].row("after").expect("after");
    assert_eq!(orders[1].op().as_deref(), Some("u"));
    assert_eq!(unscaled(&second["amount"]), BigInt::from(-5));
    assert_eq!(second["note"], Value::Null);
    assert_eq!(second["paid"], Value::Null);

    // The transaction that touched both tables: same txId and commit, in
    // statement order.
    let tx_order = orders[0].source("txId").expect("txId");
    let tx_customer = customers[2].source("txId").expect("txId");
    assert_eq!(tx_order, tx_customer);
    assert!(int(&orders[0].source("lsn").unwrap()) < int(&customers[2].source("lsn").unwrap()));
    assert_eq!(string(&orders[0].source("table").unwrap()), "orders");
    assert_eq!(string(&orders[0].source("schema").unwrap()), "public");
    assert_eq!(string(&orders[0].source("db").unwrap()), "shop");

    // Subjects follow TopicNameStrategy.
    for subject in [
        "shop.public.customers-key",
        "shop.public.customers-value",
        "shop.public.orders-key",
        "shop.public.orders-value",
    ] {
        assert_eq!(bed.client.versions(subject).await.expect(subject), vec![1]);
    }
}

/// What the workload wrote, per id, in commit order: Some(val) for an
/// insert or update, None for a delete.
type Truth = BTreeMap<i64, Vec<Option<i64>>>;

/// Runs `rounds` transactions against `items`: inserts, updates and
/// deletes, some transactions with several statements.
fn workload(pg: &PgCluster, truth: &mut Truth, next_id: &mut i64, rounds: usize) {
    for _ in 0..rounds {
        let a = *next_id;
        let b = a + 1;
        *next_id += 2;
        pg.psql(
            "app",
            &format!(
                "BEGIN;
                 INSERT INTO items VALUES ({a}, {a}), ({b}, {b});
                 UPDATE items SET val = val + 1000 WHERE id = {a};
                 COMMIT;
                 DELETE FROM items WHERE id = {b};"
            ),
        );
        truth
            .entry(a)
            .or_default()
            .extend([Some(a), Some(a + 1000)]);
        truth.entry(b).or_default().extend([Some(b), None]);
    }
}

/// What a read_committed consumer saw, in the same shape as [`Truth`]
/// (tombstones skipped; they are checked by count).
fn observed(events: &[Event]) -> Truth {
    let mut seen = Truth::new();
    for e in events {
        let Some(op) = e.op() else { continue };
        let id = key_id(e);
        let val = match op.as_str() {
            "c" | "u" => Some(int(&e.row("after").expect("after")["val"])),
            "d" => None,
            other => panic!("unexpected op {other}"),
        };
        seen.entry(id).or_default().push(val);
    }
    seen
}

fn expected_records(truth: &Truth) -> usize {
    // Every change is one record; each delete adds a tombstone.
    truth
        .values()
        .flatten()
        .map(|v| if v.is_none() { 2 } else { 1 })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_and_sigkill_lose_and_duplicate_nothing() {
    // No timed checkpoint during the test (on a loaded machine it can run
    // past the default 5 minutes): a checkpoint saves the slot's confirmed
    // position, and PostgreSQL's crash below would then re-send nothing.
    let opts = PgOptions {
        extra_conf: vec!["checkpoint_timeout = '1h'".into()],
        ..PgOptions::default()
    };
    let bed = Bed::start_with(opts, "app").await;
    bed.pg.psql(
        "app",
        "CREATE TABLE items (id bigint PRIMARY KEY, val bigint NOT NULL)",
    );
    // No idle-time offsets: after catching up, no Kafka transaction is open
    // when the test kills siphon (see DESIGN.md, "Known broker gaps").
    let file = bed.connector(
        "app",
        "app",
        &["public.items"],
        "idle_offset_interval_ms = 3600000",
    );
    let topic = "app.public.items";
    let mut truth = Truth::new();
    let mut next_id = 1;

    let mut siphon = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_app").await;
    // A transaction left open (with an xid) keeps the slot's restart point
    // and catalog xmin from moving, so PostgreSQL saves the slot's confirmed
    // position only at checkpoints: its crash below then makes it re-send
    // what siphon already wrote and acked.
    let holder = bed.pg.client("app").await;
    holder
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .expect("open transaction");
    workload(&bed.pg, &mut truth, &mut next_id, 20);

    // Graceful stop in the middle of a stream; writes go on while it is down.
    siphon.stop();
    workload(&bed.pg, &mut truth, &mut next_id, 20);
    let mut siphon = bed.siphon(&file);
    workload(&bed.pg, &mut truth, &mut next_id, 20);
    bed.wait_events(topic, expected_records(&truth), &siphon)
        .await;

    // SIGKILL once caught up (no Kafka transaction open), writes go on, and
    // PostgreSQL crashes too: its slot falls back to the position saved at
    // its last checkpoint, so it re-sends changes siphon already wrote.
    siphon.kill();
    workload(&bed.pg, &mut truth, &mut next_id, 20);
    let mut pg = bed.pg;
    pg.stop("immediate");
    drop(holder);
    pg.start_again();
    let bed = Bed { pg, ..bed };
    let siphon = bed.siphon(&file);
    workload(&bed.pg, &mut truth, &mut next_id, 20);

    let events = bed
        .wait_events(topic, expected_records(&truth), &siphon)
        .await;
    assert_eq!(observed(&events), truth, "{}", siphon.log());
    let log = siphon.log();
    assert!(
        log.contains("dropped re-sent changes already covered by the stored offset"),
        "PostgreSQL re-sent nothing, so deduplication was not exercised:\n{log}"
    );
    // A graceful stop commits whatever siphon still had: nothing more may
    // arrive with it.
    let mut siphon = siphon;
    assert!(siphon.stop().success());
    assert_eq!(
        read_committed(&bed.broker.bootstrap, topic).len(),
        expected_records(&truth)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_column_registers_a_new_version_and_old_and_new_events_decode() {
    let bed = Bed::start("evo").await;
    bed.pg
        .psql("evo", "CREATE TABLE things (id int PRIMARY KEY, name text)");
    let file = bed.connector("evo", "evo", &["public.things"], "");
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("evo", "siphon_evo").await;

    bed.pg.psql("evo", "INSERT INTO things VALUES (1, 'one')");
    bed.pg.psql(
        "evo",
        "ALTER TABLE things ADD COLUMN weight numeric(6,3);
         INSERT INTO things VALUES (2, 'two', 1.5);
         UPDATE things SET weight = 2.25 WHERE id = 1;",
    );
    let events = bed.wait_events("evo.public.things", 3, &siphon).await;
    let ids: Vec<Option<u32>> = events.iter().map(|e| e.value_schema_id).collect();
    assert_ne!(
        ids[0], ids[1],
        "the event after ADD COLUMN carries a new schema id"
    );
    assert_eq!(ids[1], ids[2]);
    assert_eq!(
        bed.client
            .versions("evo.public.things-value")
            .await
            .unwrap(),
        vec![1, 2]
    );
    let old = events[0].row("after").unwrap();
    assert!(!old.contains_key("weight"));
    assert_eq!(string(&old["name"]), "one");
    let new = events[1].row("after").unwrap();
    assert_eq!(unscaled(&new["weight"]), BigInt::from(1500));
    let updated = events[2].row("after").unwrap();
    assert_eq!(unscaled(&updated["weight"]), BigInt::from(2250));
    assert_eq!(string(&updated["name"]), "one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_change_stops_with_the_fix_and_loses_nothing() {
    let bed = Bed::start("evo").await;
    bed.pg.psql(
        "evo",
        "CREATE TABLE t (id int PRIMARY KEY, size text NOT NULL)",
    );
    let file = bed.connector("evo", "evo", &["public.t"], "");
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("evo", "siphon_evo").await;
    bed.pg.psql("evo", "INSERT INTO t VALUES (1, 'large')");
    bed.wait_events("evo.public.t", 1, &s).await;

    // A type change the registry's BACKWARD rule refuses (string → int).
    bed.pg.psql(
        "evo",
        "ALTER TABLE t ALTER COLUMN size TYPE int USING length(size);
         INSERT INTO t VALUES (2, 42);",
    );
    let status = s
        .wait(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("siphon kept running:\n{}", s.log()));
    assert!(!status.success());
    let log = s.log();
    assert!(
        log.contains("the new schema of table public.t is incompatible with the versions registered under subject evo.public.t-value:")
            && log.contains("Nothing after this change was written")
            && log.contains("PUT /config/evo.public.t-value"),
        "{log}"
    );
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "evo.public.t").len(),
        1,
        "nothing after the change may be written"
    );

    // The operator decides consumers can follow and relaxes the subject.
    bed.client
        .set_compatibility("evo.public.t-value", "NONE")
        .await
        .expect("set compatibility");
    let s = bed.siphon(&file);
    let events = bed.wait_events("evo.public.t", 2, &s).await;
    let after = events[1].row("after").expect("after");
    assert_eq!(after["size"], Value::Int(42));
    assert_eq!(
        bed.client.versions("evo.public.t-value").await.unwrap(),
        vec![1, 2]
    );
}
