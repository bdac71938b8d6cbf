//! Replica identities: the event key and the `before` image follow what
//! each identity makes PostgreSQL send.

mod support;

use apache_avro::types::Value;
use support::bed::Bed;
use support::events::{Event, field};

fn key_fields(e: &Event) -> Vec<String> {
    match e.key.as_ref() {
        Some(Value::Record(fields)) => fields.iter().map(|(k, _)| k.clone()).collect(),
        Some(other) => panic!("key is not a record: {other:?}"),
        None => Vec::new(),
    }
}

fn col(e: &Event, which: &str, name: &str) -> Value {
    e.row(which)
        .unwrap_or_else(|| panic!("no {which} image"))
        .remove(name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_before_image_follow_each_replica_identity() {
    let bed = Bed::start("ri").await;
    bed.pg.psql(
        "ri",
        "CREATE TABLE d (id int PRIMARY KEY, v text);
         CREATE TABLE f (id int PRIMARY KEY, v text);
         ALTER TABLE f REPLICA IDENTITY FULL;
         CREATE TABLE fk (v text);
         ALTER TABLE fk REPLICA IDENTITY FULL;
         CREATE TABLE i (id int PRIMARY KEY, code text NOT NULL, v text);
         CREATE UNIQUE INDEX i_code ON i (code);
         ALTER TABLE i REPLICA IDENTITY USING INDEX i_code;",
    );
    let file = bed.connector(
        "ri",
        "ri",
        &["public.d", "public.f", "public.fk", "public.i"],
        "",
    );
    let s = bed.siphon(&file);
    bed.wait_slot_active("ri", "siphon_ri").await;
    bed.pg.psql(
        "ri",
        "INSERT INTO d VALUES (1, 'a'); UPDATE d SET v = 'b'; DELETE FROM d;
         INSERT INTO f VALUES (1, 'a'); UPDATE f SET v = 'b'; DELETE FROM f;
         INSERT INTO fk VALUES ('a'); UPDATE fk SET v = 'b'; DELETE FROM fk;
         INSERT INTO i VALUES (1, 'x', 'a'); UPDATE i SET v = 'b'; DELETE FROM i;",
    );

    // DEFAULT: key = primary key; updates carry no before image; a delete's
    // before image holds the key (other columns null).
    let d = bed.wait_events("ri.public.d", 4, &s).await;
    assert_eq!(key_fields(&d[0]), ["id"]);
    assert!(d[1].row("before").is_none());
    assert_eq!(col(&d[2], "before", "id"), Value::Int(1));
    assert_eq!(col(&d[2], "before", "v"), Value::Null);

    // FULL with a primary key: key = primary key (not every column); before
    // images are whole rows.
    let f = bed.wait_events("ri.public.f", 4, &s).await;
    assert_eq!(key_fields(&f[0]), ["id"]);
    assert_eq!(col(&f[1], "before", "v"), Value::String("a".into()));
    assert_eq!(col(&f[1], "after", "v"), Value::String("b".into()));
    assert_eq!(col(&f[2], "before", "v"), Value::String("b".into()));

    // FULL without a key: no event key (and so no tombstone), whole rows.
    let fk = bed.wait_events("ri.public.fk", 3, &s).await;
    assert!(fk.iter().all(|e| e.key.is_none()));
    assert_eq!(col(&fk[1], "before", "v"), Value::String("a".into()));
    assert_eq!(fk[2].op().as_deref(), Some("d"));
    assert_eq!(col(&fk[2], "before", "v"), Value::String("b".into()));

    // USING INDEX: the key is the identity index's columns, the only ones a
    // delete's old row carries.
    let i = bed.wait_events("ri.public.i", 4, &s).await;
    assert_eq!(key_fields(&i[0]), ["code"]);
    assert!(i[1].row("before").is_none());
    let delete_key = i[2].key.as_ref().expect("delete key");
    assert_eq!(field(delete_key, "code"), Some(&Value::String("x".into())));
    assert_eq!(col(&i[2], "before", "code"), Value::String("x".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_a_key_are_refused_unless_declared_insert_only() {
    let bed = Bed::start("nokey").await;
    bed.pg.psql(
        "nokey",
        "CREATE TABLE n (id int, v text);
         ALTER TABLE n REPLICA IDENTITY NOTHING;
         CREATE TABLE k (v text);",
    );
    // Not declared: siphon refuses to start (publishing them would make
    // PostgreSQL refuse the application's UPDATE and DELETE), naming the fix.
    let file = bed.connector("nokey", "nokey", &["public.n", "public.k"], "");
    let log = bed.run_until_fatal(&file, &[]);
    for expected in [
        "table public.n has REPLICA IDENTITY NOTHING, so once it is published PostgreSQL refuses its UPDATE and DELETE",
        "table public.k has no primary key and REPLICA IDENTITY DEFAULT, so once it is published",
        "add a primary key, or run ALTER TABLE \"public\".\"k\" REPLICA IDENTITY FULL;",
        "if the table is insert-only, list public.n in postgres.insert_only_tables",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
    assert_eq!(
        bed.pg.psql(
            "nokey",
            "SELECT count(*) FROM pg_publication WHERE pubname = 'siphon_nokey'"
        ),
        "0",
        "nothing was created"
    );

    // Declared insert-only: inserts arrive with a null Kafka key.
    let file = bed.connector_with(
        "nokey",
        "nokey",
        &["public.n", "public.k"],
        "",
        "insert_only_tables = [\"public.n\", \"public.k\"]",
    );
    let s = bed.siphon(&file);
    bed.wait_slot_active("nokey", "siphon_nokey").await;
    bed.pg.psql(
        "nokey",
        "INSERT INTO n VALUES (1, 'a'); INSERT INTO k VALUES ('b');",
    );
    let n = bed.wait_events("nokey.public.n", 1, &s).await;
    let k = bed.wait_events("nokey.public.k", 1, &s).await;
    assert!(n[0].key.is_none() && k[0].key.is_none());
    assert_eq!(col(&n[0], "after", "id"), Value::Int(1));
    assert_eq!(col(&k[0], "after", "v"), Value::String("b".into()));

    // PostgreSQL itself refuses updates and deletes of such published tables.
    let client = bed.pg.client("nokey").await;
    let update = client.execute("UPDATE n SET v = 'x'", &[]).await;
    let err = update.expect_err("UPDATE of a published table without identity");
    assert!(
        format!("{err:?}").contains(
            "cannot update table \\\"n\\\" because it does not have a replica identity and publishes updates"
        ),
        "{err:?}"
    );
    let delete = client.execute("DELETE FROM k", &[]).await;
    let err = delete.expect_err("DELETE of a published table without identity");
    assert!(
        format!("{err:?}").contains("cannot delete from table \\\"k\\\" because it does not have a replica identity and publishes deletes"),
        "{err:?}"
    );
    assert_eq!(bed.pg.psql("nokey", "SELECT count(*) FROM k"), "1");
}
