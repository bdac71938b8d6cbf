//! Flattened rows (`[unwrap]`, Debezium's ExtractNewRecordState) against a
//! private PostgreSQL, the broker and the registry stand-in: the registered
//! schema, every kind of record (snapshot, insert, update, delete), the
//! delete handlings, added fields and headers, and the tables it applies to.

mod support;

use apache_avro::types::Value;
use support::bed::Bed;
use support::events::{decode, field, int, unwrap_union};
use support::kafka::Record;

fn text(v: &Value) -> String {
    match unwrap_union(v) {
        Value::String(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A flattened record as (field name, value) pairs, unions unwrapped.
async fn flat(bed: &Bed, r: &Record) -> Vec<(String, Value)> {
    let value = decode(&bed.client, r.value.as_deref().expect("a value"))
        .await
        .1;
    let Value::Record(fields) = value else {
        panic!("not a record: {value:?}")
    };
    fields
        .into_iter()
        .map(|(n, v)| (n, unwrap_union(&v).clone()))
        .collect()
}

fn get<'a>(fields: &'a [(String, Value)], name: &str) -> &'a Value {
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
        .1
}

/// `delete_handling = "rewrite"` with added fields and headers on one
/// table; another table keeps the envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flattened_rows_carry_the_row_and_the_chosen_facts() {
    let bed = Bed::start("app").await;
    bed.pg.psql(
        "app",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, note text);
         CREATE TABLE orders (id int PRIMARY KEY, amount int NOT NULL);
         INSERT INTO customers VALUES (1, 'Ada', 'first');",
    );
    let file = bed.connector(
        "app",
        "app",
        &["public.customers", "public.orders"],
        r#"
[unwrap]
enabled = true
tables = ["public\\.cust.*"]
delete_handling = "rewrite"
add_fields = ["op", "table", "lsn", "source.ts_ms"]
add_headers = ["op", "db"]
"#,
    );
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_app").await;
    bed.pg.psql(
        "app",
        "INSERT INTO customers VALUES (2, 'Grace', NULL);
         UPDATE customers SET note = 'second' WHERE id = 1;
         DELETE FROM customers WHERE id = 2;
         INSERT INTO orders VALUES (10, 5);
         DELETE FROM orders WHERE id = 10;",
    );
    // Snapshot read, insert, update, delete: no tombstone when rewritten.
    let records = bed.wait_records("app.public.customers", 4, &siphon).await;
    let mut seen = Vec::new();
    for r in &records {
        let f = flat(&bed, r).await;
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "name",
                "note",
                "__op",
                "__table",
                "__lsn",
                "__source_ts_ms",
                "__deleted"
            ]
        );
        assert_eq!(text(get(&f, "__table")), "customers");
        assert!(int(get(&f, "__lsn")) > 0);
        assert!(int(get(&f, "__source_ts_ms")) > 1_700_000_000_000);
        let op = text(get(&f, "__op"));
        assert_eq!(
            r.header("__op"),
            Some(op.as_bytes()),
            "the op header agrees with the field"
        );
        assert_eq!(r.header("__db"), Some(&b"app"[..]));
        let opt = |name: &str| match get(&f, name) {
            Value::Null => None,
            v => Some(text(v)),
        };
        seen.push((
            op,
            int(get(&f, "id")),
            opt("name"),
            opt("note"),
            text(get(&f, "__deleted")),
        ));
    }
    let s = |x: &str| x.to_owned();
    assert_eq!(
        seen,
        vec![
            (s("r"), 1, Some(s("Ada")), Some(s("first")), s("false")),
            (s("c"), 2, Some(s("Grace")), None, s("false")),
            (s("u"), 1, Some(s("Ada")), Some(s("second")), s("false")),
            // The old row of a delete (REPLICA IDENTITY DEFAULT): the key;
            // text columns are nullable (types.unchanged_toast = "null").
            (s("d"), 2, None, None, s("true")),
        ]
    );
    // The registered value schema is the flattened record.
    let (_, key) = decode(&bed.client, records[0].key.as_deref().expect("key")).await;
    assert_eq!(field(&key, "id"), Some(&Value::Int(1)));

    // The other table keeps Debezium's envelope and its tombstone.
    let orders = bed.wait_events("app.public.orders", 3, &siphon).await;
    assert_eq!(orders[0].op().as_deref(), Some("c"));
    assert_eq!(orders[1].op().as_deref(), Some("d"));
    assert!(orders[2].value.is_none());
}

/// `delete_handling` = "tombstone" (the default), "drop" and
/// "rewrite-with-tombstone": what a delete becomes, each on its own
/// connector over the same table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delete_handling_gives_its_records() {
    let bed = Bed::start("del").await;
    bed.pg
        .psql("del", "CREATE TABLE t (id int PRIMARY KEY, v text);");
    let mut connectors = Vec::new();
    for (name, handling) in [
        ("tomb", "tombstone"),
        ("dropped", "drop"),
        ("both", "rewrite-with-tombstone"),
    ] {
        let file = bed.connector(
            name,
            "del",
            &["public.t"],
            &format!("\n[unwrap]\nenabled = true\ndelete_handling = \"{handling}\"\n"),
        );
        let s = bed.siphon(&file);
        bed.wait_slot_active("del", &format!("siphon_{name}")).await;
        connectors.push((name, s));
    }
    bed.pg.psql(
        "del",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b');
         DELETE FROM t WHERE id = 1;
         INSERT INTO t VALUES (3, 'c');",
    );
    // (value present, __deleted if any) per record, in order.
    type Records = Vec<(bool, Option<&'static str>)>;
    let expected: [(&str, Records); 3] = [
        (
            "tomb",
            vec![(true, None), (true, None), (false, None), (true, None)],
        ),
        ("dropped", vec![(true, None), (true, None), (true, None)]),
        (
            "both",
            vec![
                (true, Some("false")),
                (true, Some("false")),
                (true, Some("true")),
                (false, None),
                (true, Some("false")),
            ],
        ),
    ];
    for ((name, want), (_, s)) in expected.iter().zip(&connectors) {
        let records = bed
            .wait_records(&format!("{name}.public.t"), want.len(), s)
            .await;
        let mut got = Vec::new();
        for r in &records {
            match &r.value {
                None => got.push((false, None)),
                Some(_) => {
                    let f = flat(&bed, r).await;
                    let deleted = f
                        .iter()
                        .find(|(n, _)| n == "__deleted")
                        .map(|(_, v)| text(v));
                    got.push((true, deleted));
                }
            }
        }
        let want: Vec<(bool, Option<String>)> = want
            .iter()
            .map(|(v, d)| (*v, d.map(str::to_owned)))
            .collect();
        assert_eq!(got, want, "connector {name}");
    }
}
