//! The outbox event router and logical decoding messages (`[outbox]`,
//! `[messages]`), against a private PostgreSQL, the broker and the
//! registry stand-in: events reach their topics exactly once, in the Kafka
//! transactions of the business rows written with them, across a SIGKILL.

mod support;

use std::collections::BTreeMap;

use apache_avro::types::Value;
use support::bed::Bed;
use support::events::{decode, field, int, unwrap_union};
use support::kafka::{Record, read_committed};

const OUTBOX: &str = "
[outbox]
table = \"public.outbox\"
message_prefix = \"outbox\"
";

fn text(v: &[u8]) -> String {
    String::from_utf8(v.to_vec()).expect("utf-8")
}

/// Waits for siphon's crash at its armed fail point.
fn crashed(siphon: &mut support::siphon::Siphon) {
    let status = siphon
        .wait(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| panic!("siphon did not crash at its fail point:\n{}", siphon.log()));
    assert!(!status.success());
}

/// The outbox events of the `order` topic as (id, aggregate id, type,
/// payload JSON), checking each record's key and headers agree.
fn outbox_events(records: &[Record]) -> Vec<(String, String, String, serde_json::Value)> {
    // Each carries its position, increasing in a partition's order.
    let mut last: BTreeMap<i32, Vec<u8>> = BTreeMap::new();
    for r in records {
        let position = r
            .header("siphon.position")
            .expect("position header")
            .to_vec();
        if let Some(before) = last.insert(r.partition, position.clone()) {
            assert!(
                before < position,
                "positions increase: {before:?} then {position:?}"
            );
        }
    }
    records
        .iter()
        .map(|r| {
            let id = text(r.header("id").expect("id header"));
            let kind = text(r.header("type").expect("type header"));
            let key = text(r.key.as_deref().expect("key"));
            let payload: serde_json::Value =
                serde_json::from_slice(r.value.as_deref().expect("payload"))
                    .expect("payload is JSON");
            (id, key, kind, payload)
        })
        .collect()
}

/// A service writes its domain event and the business row in one
/// database transaction — as an outbox row or as a logical message —
/// and consumers see each committed event exactly once, never one of a
/// rolled-back transaction, across a SIGKILL of siphon; the outbox table's
/// own changes (and its clean-up deletes) are not published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_events_written_with_their_rows_reach_consumers_exactly_once() {
    let bed = Bed::start("shop").await;
    bed.pg.psql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, total numeric(10,2) NOT NULL);
         CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
                              type text NOT NULL, payload jsonb);",
    );
    let file = bed.connector(
        "shop",
        "shop",
        &["public.orders", "public.outbox"],
        // Transaction metadata on: after the crash inside a source
        // transaction, its written part is replayed to count it again,
        // which must not write its outbox events again.
        &format!("batch_max_events = 7\n{OUTBOX}\n[transactions]\nenabled = true\n"),
    );
    // Crashes right after its third Kafka commit, before PostgreSQL hears
    // of it: PostgreSQL sends that part again, which must be dropped.
    let mut siphon = bed.siphon_with_env(&file, &[("FAILPOINTS", "after_commit=2*off->return")]);
    bed.wait_slot_active("shop", "siphon_shop").await;

    let place = |from: i32, to: i32, commit: bool| {
        let mut sql = String::new();
        for i in from..to {
            sql.push_str(&format!(
                "BEGIN;
                 INSERT INTO orders VALUES ({i}, {i}.5);
                 INSERT INTO outbox VALUES ('placed-{i}', 'order', '{i}', 'OrderPlaced', '{{\"order\": {i}, \"total\": \"{i}.5\"}}');
                 SELECT pg_logical_emit_message(true, 'outbox',
                   '{{\"id\": \"audited-{i}\", \"aggregatetype\": \"order\", \"aggregateid\": {i}, \"type\": \"OrderAudited\", \"payload\": {{\"order\": {i}}}}}');
                 {};\n",
                if commit { "COMMIT" } else { "ROLLBACK" }
            ));
        }
        sql
    };
    bed.pg.psql("shop", &place(1, 21, true));
    bed.pg.psql("shop", &place(100, 105, false));
    // The rest while it is down, and a clean-up.
    let topic = "outbox.event.order";
    let bootstrap = bed.broker.bootstrap.clone();
    crashed(&mut siphon);
    bed.pg.psql("shop", &place(21, 41, true));
    bed.pg
        .psql("shop", "DELETE FROM outbox WHERE aggregateid::int < 10");
    // Not transactional: published even though its transaction rolls back.
    bed.pg.psql(
        "shop",
        "BEGIN;
         SELECT pg_logical_emit_message(false, 'outbox',
           '{\"id\": \"alarm-1\", \"aggregatetype\": \"order\", \"aggregateid\": \"7\", \"type\": \"OrderAlarm\", \"payload\": \"{\\\"level\\\": 2}\"}');
         ROLLBACK;",
    );
    let siphon = bed.siphon(&file);

    let records = bed.wait_records(topic, 40 * 2 + 1, &siphon).await;
    let events = outbox_events(&records);
    let mut expected = BTreeMap::new();
    for i in 1..41 {
        expected.insert(
            format!("placed-{i}"),
            (
                i.to_string(),
                "OrderPlaced".to_owned(),
                serde_json::json!({"order": i, "total": format!("{i}.5")}),
            ),
        );
        expected.insert(
            format!("audited-{i}"),
            (
                i.to_string(),
                "OrderAudited".to_owned(),
                serde_json::json!({"order": i}),
            ),
        );
    }
    expected.insert(
        "alarm-1".to_owned(),
        (
            "7".to_owned(),
            "OrderAlarm".to_owned(),
            serde_json::json!({"level": 2}),
        ),
    );
    let mut seen = BTreeMap::new();
    for (id, key, kind, payload) in &events {
        assert!(
            seen.insert(id.clone(), (key.clone(), kind.clone(), payload.clone()))
                .is_none(),
            "event {id} read twice"
        );
    }
    assert_eq!(seen, expected);
    // Per aggregate (one partition), the order written: placed, audited.
    let order_7: Vec<&str> = events
        .iter()
        .filter(|e| e.1 == "7")
        .map(|e| e.0.as_str())
        .collect();
    assert_eq!(order_7, ["placed-7", "audited-7", "alarm-1"]);

    // The business rows went their own way; the outbox table's own changes
    // did not (publish_table is off), not even its deletes.
    bed.wait_records("shop.public.orders", 40, &siphon).await;
    assert!(read_committed(&bootstrap, "shop.public.outbox").is_empty());
}

/// `[messages]`: messages with a chosen prefix reach the messages topic as
/// Debezium's message events — transactional ones only when their
/// transaction commits, non-transactional ones always — once each across
/// a SIGKILL; other prefixes are not published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_messages_reach_the_messages_topic_once() {
    let bed = Bed::start("app").await;
    bed.pg.psql("app", "CREATE TABLE t (id int PRIMARY KEY);");
    let file = bed.connector(
        "app",
        "app",
        &["public.t"],
        "\n[messages]\nenabled = true\nprefixes = [\"audit\"]\n",
    );
    let mut siphon = bed.siphon_with_env(&file, &[("FAILPOINTS", "after_commit=3*off->return")]);
    bed.wait_slot_active("app", "siphon_app").await;
    let emit = |from: i32, to: i32| {
        for i in from..to {
            bed.pg.psql(
                "app",
                &format!(
                    "BEGIN;
                     INSERT INTO t VALUES ({i});
                     SELECT pg_logical_emit_message(true, 'audit', 'tx {i}');
                     SELECT pg_logical_emit_message(true, 'other', 'not published {i}');
                     COMMIT;
                     BEGIN;
                     SELECT pg_logical_emit_message(true, 'audit', 'rolled back {i}');
                     SELECT pg_logical_emit_message(false, 'audit', 'now {i}');
                     ROLLBACK;"
                ),
            );
        }
    };
    emit(0, 10);
    let topic = "app.message";
    crashed(&mut siphon);
    emit(10, 20);
    let siphon = bed.siphon(&file);
    let records = bed.wait_records(topic, 40, &siphon).await;
    bed.wait_records("app.public.t", 20, &siphon).await;

    let mut contents = Vec::new();
    for r in &records {
        let key = decode(&bed.client, r.key.as_deref().expect("key")).await.1;
        assert_eq!(field(&key, "prefix"), Some(&Value::String("audit".into())));
        let value = decode(&bed.client, r.value.as_deref().expect("value"))
            .await
            .1;
        assert_eq!(field(&value, "op"), Some(&Value::String("m".into())));
        let message = field(&value, "message").expect("message");
        let Some(Value::Bytes(content)) = field(message, "content") else {
            panic!("content is bytes: {message:?}")
        };
        let source = field(&value, "source").expect("source");
        let tx_id = unwrap_union(field(source, "txId").expect("txId"));
        let content = text(content);
        // Transactional messages carry their transaction's id.
        assert_eq!(
            content.starts_with("tx "),
            *tx_id != Value::Null,
            "{content}: txId {tx_id:?}"
        );
        if content.starts_with("tx ") {
            assert!(int(tx_id) > 0);
        }
        contents.push(content);
    }
    let mut expected: Vec<String> = (0..20)
        .flat_map(|i| [format!("tx {i}"), format!("now {i}")])
        .collect();
    expected.sort();
    let mut sorted = contents.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "each published message once");
    // Stream order: message i's non-transactional one ("now", in the
    // transaction that rolls back after) comes after its committed one.
    for i in 0..20 {
        let tx = contents.iter().position(|c| *c == format!("tx {i}"));
        let now = contents.iter().position(|c| *c == format!("now {i}"));
        assert!(tx < now, "tx {i} before now {i}: {contents:?}");
    }
}

/// An outbox row that cannot be routed (no aggregate type) stops the
/// connector with an error naming the row and column, and nothing of its
/// transaction is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_without_aggregate_type_is_fatal_and_nothing_of_it_is_written() {
    let bed = Bed::start("bad").await;
    bed.pg.psql(
        "bad",
        "CREATE TABLE orders (id int PRIMARY KEY);
         CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text, aggregateid text NOT NULL,
                              type text NOT NULL, payload jsonb);",
    );
    let file = bed.connector("bad", "bad", &["public.orders", "public.outbox"], OUTBOX);
    let mut siphon = bed.siphon(&file);
    bed.wait_slot_active("bad", "siphon_bad").await;
    bed.pg.psql("bad", "INSERT INTO orders VALUES (1);");
    bed.wait_records("bad.public.orders", 1, &siphon).await;
    bed.pg.psql(
        "bad",
        // The bad row first: nothing of its transaction can have been
        // committed before it (a Kafka transaction may end inside a
        // source transaction, batch_linger_ms after it began).
        "BEGIN;
         INSERT INTO outbox VALUES ('e1', NULL, '2', 'OrderPlaced', '{}');
         INSERT INTO orders VALUES (2);
         COMMIT;",
    );
    let status = siphon
        .wait(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| panic!("siphon kept running:\n{}", siphon.log()));
    assert!(!status.success());
    let log = siphon.log();
    assert!(
        log.contains("the outbox row of public.outbox at")
            && log.contains("column \"aggregatetype\" (outbox.aggregate_type_column) is null"),
        "{log}"
    );
    let orders = read_committed(&bed.broker.bootstrap, "bad.public.orders");
    assert_eq!(orders.len(), 1, "nothing of the failed transaction");
}

/// A crash after a Kafka commit that ended inside a big source
/// transaction of outbox rows, with transaction metadata on: PostgreSQL
/// sends the whole transaction again, siphon replays its written part to
/// count it for the metadata, and writes each outbox event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_big_outbox_transaction_writes_each_event_once() {
    let bed = Bed::start("big").await;
    bed.pg.psql(
        "big",
        "CREATE TABLE orders (id int PRIMARY KEY);
         CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
                              type text NOT NULL, payload jsonb);",
    );
    let file = bed.connector(
        "big",
        "big",
        &["public.orders", "public.outbox"],
        &format!("batch_max_events = 10\n{OUTBOX}\n[transactions]\nenabled = true\n"),
    );
    let mut siphon = bed.siphon_with_env(&file, &[("FAILPOINTS", "after_commit=2*off->return")]);
    bed.wait_slot_active("big", "siphon_big").await;
    bed.pg.psql(
        "big",
        "BEGIN;
         INSERT INTO outbox SELECT 'e' || i, 'order', i::text, 'OrderPlaced', jsonb_build_object('order', i)
           FROM generate_series(1, 100) i;
         INSERT INTO orders SELECT i FROM generate_series(1, 100) i;
         COMMIT;",
    );
    crashed(&mut siphon);
    let siphon = bed.siphon(&file);
    let records = bed.wait_records("outbox.event.order", 100, &siphon).await;
    let ids: std::collections::BTreeSet<String> =
        outbox_events(&records).into_iter().map(|e| e.0).collect();
    assert_eq!(ids.len(), 100, "every event once");
    bed.wait_records("big.public.orders", 100, &siphon).await;
}

/// `outbox.expand_payload`: the JSON payload becomes Avro with a schema
/// inferred from it and registered under the topic's value subject; a
/// payload with one more field is the next, compatible version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expanded_payloads_are_avro_with_registered_schemas() {
    let bed = Bed::start("avro").await;
    bed.pg.psql(
        "avro",
        "CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
                              type text NOT NULL, payload jsonb);",
    );
    let file = bed.connector(
        "avro",
        "avro",
        &["public.outbox"],
        &format!("{OUTBOX}expand_payload = true\n"),
    );
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("avro", "siphon_avro").await;
    bed.pg.psql(
        "avro",
        r#"INSERT INTO outbox VALUES ('e1', 'order', '1', 'OrderPlaced', '{"order": 1, "total": 9.5, "lines": [{"sku": "x"}]}');
           INSERT INTO outbox VALUES ('e2', 'order', '2', 'OrderPlaced', '{"order": 2, "total": 3.25, "coupon": "WELCOME"}');"#,
    );
    let records = bed.wait_records("outbox.event.order", 2, &siphon).await;
    let mut ids = Vec::new();
    let mut values = Vec::new();
    for r in &records {
        let (id, value) = decode(&bed.client, r.value.as_deref().expect("value")).await;
        ids.push(id);
        values.push(value);
    }
    assert_ne!(ids[0], ids[1], "the second shape is a new schema version");
    let get = |v: &Value, name: &str| unwrap_union(field(v, name).expect(name)).clone();
    assert_eq!(get(&values[0], "order"), Value::Long(1));
    assert_eq!(get(&values[0], "total"), Value::Double(9.5));
    let Value::Array(lines) = get(&values[0], "lines") else {
        panic!("lines is an array")
    };
    assert_eq!(
        get(unwrap_union(&lines[0]), "sku"),
        Value::String("x".into())
    );
    assert_eq!(get(&values[1], "order"), Value::Long(2));
    assert_eq!(get(&values[1], "total"), Value::Double(3.25));
    assert_eq!(get(&values[1], "coupon"), Value::String("WELCOME".into()));
    assert_eq!(r_header(&records[1], "type"), "OrderPlaced");
}

fn r_header(r: &Record, name: &str) -> String {
    text(r.header(name).expect("header"))
}
