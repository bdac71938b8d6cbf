//! Events shaped before they leave siphon (`[tables]`, `[[table]]`,
//! `[[route]]`): filters, column selection and masks (in the registered
//! schemas and in every record of the initial snapshot, the stream and an
//! incremental snapshot), skipped operations, tombstones and truncate
//! events per table, routing several tables into one topic, key override
//! and partitioning by a column; and the errors of rules that do not fit.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use apache_avro::types::Value;
use sha2::{Digest, Sha256};
use support::bed::Bed;
use support::events::{Event, decode_all, field, unwrap_union};
use support::kafka::{Record, read_committed};
use support::siphon::check;

fn append(file: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .expect("open connector file");
    f.write_all(text.as_bytes()).expect("append");
}

fn st(v: &str) -> Value {
    Value::String(v.into())
}

/// The key record as field → value.
fn key_fields(e: &Event) -> BTreeMap<String, Value> {
    match e.key.as_ref().expect("a key") {
        Value::Record(f) => f
            .iter()
            .map(|(k, v)| (k.clone(), unwrap_union(v).clone()))
            .collect(),
        other => panic!("key is not a record: {other:?}"),
    }
}

/// Field name → JSON type of the `Value` record of an envelope schema, or
/// of a key schema.
fn schema_fields(schema: &str) -> BTreeMap<String, serde_json::Value> {
    let json: serde_json::Value = serde_json::from_str(schema).unwrap();
    let record = if json["name"] == "Envelope" {
        json["fields"][0]["type"][1].clone()
    } else {
        json
    };
    record["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f["type"].clone()))
        .collect()
}

fn hash(salt: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

const SALT: &str = "pepper-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_masks_reach_schemas_and_every_record() {
    let bed = Bed::start("shape").await;
    bed.pg.psql(
        "shape",
        "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL, name text,
                                 phone text, age int, secret text);
         CREATE TABLE audit (id int PRIMARY KEY, x text);
         CREATE TABLE accounts (email text PRIMARY KEY, note text);
         CREATE TABLE siphon_signals (id text PRIMARY KEY, type text NOT NULL, data text);
         -- wider than postgres.tables: the filters keep audit out
         CREATE PUBLICATION shape_pub FOR TABLE customers, accounts, audit, siphon_signals;
         INSERT INTO customers VALUES
           (1, 'alice@example.com', 'Alice Liddell', '555-0101', 31, 's3cr3t-one');",
    );
    let file = bed.connector_with(
        "mask",
        "shape",
        &["public.customers", "public.accounts"],
        "",
        "publication = \"shape_pub\"\ncreate_publication = false",
    );
    append(
        &file,
        r#"
[snapshot]
signal_table = "public.siphon_signals"

[tables]
exclude = ["public\\.aud.*"]
hash_salt_env = "MASK_SALT"

[[table]]
match = "public\\.cust.*"
columns_exclude = ["secret"]
mask_hash = ["email", "age"]
mask_truncate = { name = 3 }
mask_replace = { phone = "***" }

[[table]]
match = "public\\.accounts"
columns_include = ["email"]
mask_hash = ["email"]
"#,
    );
    let s = bed.siphon_with_env(&file, &[("MASK_SALT", SALT)]);
    bed.wait_slot_active("shape", "siphon_mask").await;
    bed.pg.psql(
        "shape",
        "INSERT INTO customers VALUES (2, 'bob@example.com', 'Bob Builder', '555-0202', NULL, 's3cr3t-two');
         UPDATE customers SET phone = '555-0303', age = 32 WHERE id = 1;
         INSERT INTO audit VALUES (1, 'audit-row');
         INSERT INTO accounts VALUES ('carol@example.com', 'n');
         INSERT INTO siphon_signals VALUES ('s1', 'execute-snapshot', '{\"data-collections\": [\"public.customers\"]}');",
    );
    let topic = "mask.public.customers";
    // Snapshot read of 1, insert 2, update 1, incremental reads of 1 and 2.
    let records = bed.wait_records(topic, 5, &s).await;
    let events = decode_all(&bed.client, &records).await;
    let ops: Vec<String> = events.iter().map(|e| e.op().unwrap()).collect();
    assert_eq!(ops, ["r", "c", "u", "r", "r"], "{}", s.log());

    // The registered schema: no secret column, masked columns are strings
    // (age was an int), nullability as in the table.
    let value_schema = bed
        .client
        .latest_schema(&format!("{topic}-value"))
        .await
        .unwrap()
        .unwrap();
    let fields = schema_fields(&value_schema);
    assert_eq!(
        fields.keys().cloned().collect::<Vec<_>>(),
        ["age", "email", "id", "name", "phone"]
    );
    // NOT NULL text, widened as every toastable column (types.unchanged_toast).
    assert_eq!(fields["email"], serde_json::json!(["null", "string"]));
    assert_eq!(fields["age"], serde_json::json!(["null", "string"]));
    assert_eq!(fields["id"], serde_json::json!("int"));

    // Every record: the masked values, never an original.
    for r in &records {
        for bytes in [r.key.as_deref(), r.value.as_deref()].into_iter().flatten() {
            for original in [
                "alice@example.com",
                "bob@example.com",
                "Alice Liddell",
                "Bob Builder",
                "555-0",
                "s3cr3t",
            ] {
                assert!(
                    !contains(bytes, original),
                    "record at offset {} carries {original:?}",
                    r.offset
                );
            }
        }
    }
    let after = |i: usize| events[i].row("after").unwrap();
    let alice = after(0);
    assert_eq!(alice["email"], st(&hash(SALT, "alice@example.com")));
    assert_eq!(alice["age"], st(&hash(SALT, "31")));
    assert_eq!(alice["name"], st("Ali"));
    assert_eq!(alice["phone"], st("***"));
    assert!(!alice.contains_key("secret"));
    let bob = after(1);
    assert_eq!(bob["email"], st(&hash(SALT, "bob@example.com")));
    assert_eq!(bob["age"], Value::Null, "null stays null");
    assert_eq!(bob["name"], st("Bob"));
    assert_eq!(after(2)["age"], st(&hash(SALT, "32")));
    // The incremental snapshot's rows, in either order.
    let mut incremental = [after(3), after(4)];
    incremental.sort_by_key(|r| format!("{:?}", r["id"]));
    assert_eq!(incremental[0]["email"], alice["email"]);
    assert_eq!(incremental[0]["age"], st(&hash(SALT, "32")));
    assert_eq!(incremental[1]["name"], st("Bob"));

    // A masked key column: the key holds the hash, its schema a string.
    let accounts = bed.wait_records("mask.public.accounts", 1, &s).await;
    for bytes in [accounts[0].key.as_deref(), accounts[0].value.as_deref()] {
        assert!(!contains(bytes.unwrap(), "carol@example.com"));
    }
    let accounts = decode_all(&bed.client, &accounts).await;
    assert_eq!(
        accounts[0].row("after").unwrap().keys().collect::<Vec<_>>(),
        ["email"],
        "columns_include"
    );
    assert_eq!(
        key_fields(&accounts[0])["email"],
        st(&hash(SALT, "carol@example.com"))
    );

    // The excluded table: nothing written, nothing registered.
    assert!(read_committed(&bed.broker.bootstrap, "mask.public.audit").is_empty());
    assert!(
        bed.client
            .latest_schema("mask.public.audit-value")
            .await
            .map_or(true, |s| s.is_none())
    );
    assert!(
        !s.log().contains("s3cr3t") && !s.log().contains(SALT),
        "nothing secret in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_keys_partitions_and_per_table_switches() {
    let bed = Bed::start("route").await;
    bed.pg.psql(
        "route",
        "CREATE TABLE shard_1 (id int PRIMARY KEY, v text);
         CREATE TABLE shard_2 (id int PRIMARY KEY, v text);
         CREATE TABLE log (a text NOT NULL, b int);
         CREATE TABLE ev (id int PRIMARY KEY, tenant text NOT NULL) ;
         ALTER TABLE ev REPLICA IDENTITY FULL;
         CREATE TABLE nodel (id int PRIMARY KEY);
         CREATE TABLE notomb (id int PRIMARY KEY);
         CREATE TABLE trunc (id int PRIMARY KEY);",
    );
    let file = bed.connector_with(
        "rt",
        "route",
        &[
            "public.shard_1",
            "public.shard_2",
            "public.log",
            "public.ev",
            "public.nodel",
            "public.notomb",
            "public.trunc",
        ],
        "topic_partitions = 4",
        "insert_only_tables = [\"public.log\"]",
    );
    append(
        &file,
        r#"
[tables]
skip_ops = ["u"]        # every table but nodel, whose rule says ["d"]

[[table]]
match = "public\\.log"
key_columns = ["a"]

[[table]]
match = "public\\.ev"
partition_by = "tenant"

[[table]]
match = "public\\.nodel"
skip_ops = ["d"]

[[table]]
match = "public\\.notomb"
tombstones = false

[[table]]
match = "public\\.trunc"
truncate_events = true

[[route]]
match = "public\\.shard_(\\d+)"
topic = "{prefix}.shards"
"#,
    );
    let s = bed.siphon(&file);
    bed.wait_slot_active("route", "siphon_rt").await;
    let mut sql = String::from(
        "INSERT INTO shard_1 VALUES (1, 'one'); INSERT INTO shard_2 VALUES (1, 'uno');
         INSERT INTO log VALUES ('x', 1), ('y', 2);
         INSERT INTO nodel VALUES (1); UPDATE nodel SET id = 1; UPDATE nodel SET id = 2; DELETE FROM nodel;
         INSERT INTO notomb VALUES (1); DELETE FROM notomb;
         INSERT INTO trunc VALUES (1); TRUNCATE trunc;
         INSERT INTO shard_1 VALUES (2, 'two');",
    );
    for i in 0..48 {
        sql.push_str(&format!("INSERT INTO ev VALUES ({i}, 'tenant-{}');", i % 8));
    }
    sql.push_str(
        "UPDATE ev SET id = id + 100 WHERE id < 8; DELETE FROM ev WHERE id BETWEEN 40 AND 47;",
    );
    bed.pg.psql("route", &sql);

    // Routing: both shards in one topic, keys told apart by the table.
    let shards = bed.wait_events("rt.shards", 3, &s).await;
    // (Four partitions: read back in partition order, not commit order.)
    let keys: BTreeSet<(String, String)> = shards
        .iter()
        .map(|e| {
            let k = key_fields(e);
            assert_eq!(k.len(), 2, "{k:?}");
            (
                format!("{:?}", k["id"]),
                format!("{:?}", k["__dbz__physicalTableIdentifier"]),
            )
        })
        .collect();
    let want = |id: i32, t: &str| (format!("{:?}", Value::Int(id)), format!("{:?}", st(t)));
    assert_eq!(
        keys,
        BTreeSet::from([
            want(1, "rt.public.shard_1"),
            want(1, "rt.public.shard_2"),
            want(2, "rt.public.shard_1"),
        ])
    );
    for e in &shards {
        assert_eq!(
            key_fields(e)["__dbz__physicalTableIdentifier"],
            st(&format!(
                "rt.public.{}",
                match e.source("table") {
                    Some(Value::String(t)) => t,
                    other => panic!("{other:?}"),
                }
            ))
        );
    }
    assert!(read_committed(&bed.broker.bootstrap, "rt.public.shard_1").is_empty());
    let key_schema = bed
        .client
        .latest_schema("rt.shards-key")
        .await
        .unwrap()
        .unwrap();
    assert!(
        key_schema.contains(r#""namespace":"rt.shards""#),
        "{key_schema}"
    );
    assert_eq!(
        schema_fields(&key_schema)["__dbz__physicalTableIdentifier"],
        serde_json::json!("string")
    );
    // One value subject version: both shards register the same schema.
    assert_eq!(
        bed.client.versions("rt.shards-value").await.unwrap().len(),
        1
    );

    // Key override on a keyless (insert-only) table.
    let log = bed.wait_events("rt.public.log", 2, &s).await;
    let mut log_keys: Vec<_> = log.iter().map(key_fields).collect();
    log_keys.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(
        log_keys,
        [
            BTreeMap::from([("a".into(), st("x"))]),
            BTreeMap::from([("a".into(), st("y"))])
        ]
    );
    let log_key = bed.client.latest_schema("rt.public.log-key").await.unwrap();
    assert_eq!(
        schema_fields(&log_key.unwrap()).keys().collect::<Vec<_>>(),
        ["a"]
    );

    // skip_ops = ["d"]: no delete, no tombstone; of the key change
    // (delete + create) only the create.
    let nodel = bed.wait_events("rt.public.nodel", 3, &s).await;
    let mut nodel: Vec<_> = nodel
        .iter()
        .map(|e| (e.op().unwrap(), format!("{:?}", key_fields(e)["id"])))
        .collect();
    nodel.sort_by_key(|(op, id)| (id.clone(), op == "u"));
    assert_eq!(
        nodel,
        [
            ("c".into(), "Int(1)".into()),
            ("u".into(), "Int(1)".into()),
            ("c".into(), "Int(2)".into())
        ]
    );
    // tombstones = false: the delete without its tombstone.
    let notomb = bed.wait_events("rt.public.notomb", 2, &s).await;
    assert_eq!(
        notomb.iter().map(|e| e.op()).collect::<Vec<_>>(),
        [Some("c".into()), Some("d".into())]
    );
    // truncate_events = true although kafka.emit_truncate is false.
    // (No key: the truncate may sit on another partition than the insert.)
    let trunc = bed.wait_events("rt.public.trunc", 2, &s).await;
    let mut ops: Vec<_> = trunc.iter().map(|e| e.op().unwrap()).collect();
    ops.sort();
    assert_eq!(ops, ["c", "t"]);

    // partition_by: 48 inserts and 8 deletes + tombstones (the 8 key
    // changes are updates: skipped by tables.skip_ops).
    let ev: Vec<Record> = bed.wait_records("rt.public.ev", 48 + 8 * 2, &s).await;
    let events = decode_all(&bed.client, &ev).await;
    let mut by_tenant: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut last_id = 0;
    for (r, e) in ev.iter().zip(&events) {
        let tenant = match &e.value {
            Some(_) => {
                let image = if e.op().as_deref() == Some("d") {
                    "before"
                } else {
                    "after"
                };
                let row = e.row(image).unwrap();
                last_id = match row["id"] {
                    Value::Int(i) => i,
                    _ => panic!(),
                };
                match &row["tenant"] {
                    Value::String(t) => t.clone(),
                    _ => panic!(),
                }
            }
            // A tombstone follows its delete, on the same partition.
            None => format!("tenant-{}", last_id % 100 % 8),
        };
        assert_eq!(
            r.partition,
            siphon::avro::projection::partition_of(tenant.as_bytes(), 4),
            "{tenant} on the partition its text hashes to"
        );
        by_tenant.entry(tenant).or_default().insert(r.partition);
    }
    assert_eq!(by_tenant.len(), 8);
    assert!(by_tenant.values().all(|p| p.len() == 1), "{by_tenant:?}");
    let used: BTreeSet<i32> = by_tenant.values().flatten().copied().collect();
    assert!(used.len() > 1, "tenants spread over partitions: {used:?}");
    let _ = field;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_that_do_not_fit_give_one_clear_error_each() {
    let bed = Bed::start("bad").await;
    bed.pg.psql(
        "bad",
        "CREATE TABLE people (id int PRIMARY KEY, email text, region text);",
    );
    // Offline: a mistake in the file itself.
    let file = bed.connector("offline", "bad", &["public.people"], "");
    append(
        &file,
        "\n[[route]]\nmatch = \"public\\\\.(people\"\ntopic = \"x\"\n",
    );
    let (code, out) = check(&file);
    assert_eq!(code, Some(2), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("route[0]")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].contains(r#"route[0].match: "public\\.(people" is not a valid regex"#),
        "{out}"
    );

    // Against the database: a misspelt column, then a partition column a
    // delete would not carry. One line each, naming rule, table, column
    // and fix; `siphon run` refuses to start with the same line.
    let file = bed.connector("online", "bad", &["public.people"], "");
    append(
        &file,
        "\n[[table]]\nmatch = \"public\\\\.people\"\nmask_replace = { emial = \"x\" }\n",
    );
    let (code, out) = check(&file);
    assert_eq!(code, Some(1), "{out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.contains("PROBLEM")).collect();
    assert_eq!(problems.len(), 1, "{out}");
    assert!(
        problems[0].contains(
            r#"table[0].mask_replace names column "emial", which table public.people does not have (its columns: id, email, region): fix the name or remove it from the rule (match "public\\.people")"#
        ),
        "{out}"
    );
    let log = bed.run_until_fatal(&file, &[]);
    assert!(log.contains(r#"names column "emial""#), "{log}");

    let file = bed.connector("online2", "bad", &["public.people"], "");
    append(
        &file,
        "\n[[table]]\nmatch = \".*\"\npartition_by = \"region\"\n",
    );
    let (code, out) = check(&file);
    assert_eq!(code, Some(1), "{out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.contains("PROBLEM")).collect();
    assert_eq!(problems.len(), 1, "{out}");
    assert!(
        problems[0].contains(
            r#"table[0].partition_by names column "region" of public.people, which is not in its replica identity, so its deletes (and tombstones) would not carry it: run ALTER TABLE "public"."people" REPLICA IDENTITY FULL;"#
        ),
        "{out}"
    );
}
