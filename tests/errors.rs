//! Bad input gets a clear error naming the fix, and never loses data:
//! connector file mistakes, wal_level not logical, a wrong password, a table
//! without a primary key or replica identity.

mod support;

use std::process::{Command, Output};

use support::bed::Bed;
use support::kafka::read_committed;
use support::postgres::{PgCluster, PgOptions};

fn siphon(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_siphon"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run siphon")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_file_with_three_mistakes_gets_one_error_listing_all_three() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        r#"name = "bad"
[postgres]
database = "shop"
user = "siphon"
tables = ["orders"]
[kafka]
bootstrap_servers = "127.0.0.1:9092"
topic_prefix = "shop"
batch_linger = 5
[registry]
url = "localhost:8081"
"#,
    )
    .unwrap();
    for command in ["check", "run"] {
        let out = siphon(&[command, file.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        let f = file.display();
        let lines: Vec<String> = stderr(&out).lines().map(str::to_owned).collect();
        assert_eq!(
            lines,
            vec![
                format!("{f}: postgres.tables: \"orders\" is not of the form \"schema.table\""),
                format!(
                    "{f}: kafka.batch_linger: unknown key; did you mean \"batch_linger_ms\"? (known keys: bootstrap_servers, topic_prefix, offsets_topic, create_topics, topic_partitions, topic_replication_factor, transaction_timeout_ms, commit_timeout_ms, batch_max_events, batch_max_bytes, batch_linger_ms, tombstones_on_delete, emit_truncate, idle_offset_interval_ms, properties, properties_env, properties_file)"
                ),
                format!(
                    "{f}: registry.url: must start with http:// or https://, got \"localhost:8081\""
                ),
            ],
            "{command}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_is_refused_with_the_fix() {
    let replica = PgOptions {
        wal_level: "replica".into(),
        ..PgOptions::default()
    };
    let bed = Bed::start_with(replica, "shop").await;
    bed.pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let file = bed.connector("shop", "shop", &["public.t"], "");
    let log = bed.run_until_fatal(&file, &[]);
    assert!(
        log.contains("wal_level is \"replica\", logical replication needs \"logical\": run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL"),
        "{log}"
    );
    // Nothing was created on the way to the error.
    assert_eq!(
        bed.pg
            .psql("shop", "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_key_or_identity_is_named_with_the_fix_and_nothing_is_lost() {
    let bed = Bed::start("shop").await;
    bed.pg.psql(
        "shop",
        "CREATE TABLE keyed (id int PRIMARY KEY, v text);
         CREATE TABLE loose (v text);",
    );
    let file = bed.connector("shop", "shop", &["public.keyed", "public.loose"], "");
    let log = bed.run_until_fatal(&file, &[]);
    assert!(
        log.contains("table public.loose has no primary key and REPLICA IDENTITY DEFAULT, so once it is published PostgreSQL refuses its UPDATE and DELETE")
            && log.contains("add a primary key, or run ALTER TABLE \"public\".\"loose\" REPLICA IDENTITY FULL;"),
        "{log}"
    );

    // The operator applies the fix; siphon then captures everything,
    // including deletes of the key-less table (whole old row as before).
    bed.pg
        .psql("shop", "ALTER TABLE loose REPLICA IDENTITY FULL");
    let s = bed.siphon(&file);
    bed.wait_slot_active("shop", "siphon_shop").await;
    bed.pg.psql(
        "shop",
        "INSERT INTO keyed VALUES (1, 'a'); INSERT INTO loose VALUES ('x'); DELETE FROM loose;",
    );
    bed.wait_records("shop.public.keyed", 1, &s).await;
    // A key-less table's events have no key, so no tombstone follows a delete.
    let loose = bed.wait_records("shop.public.loose", 2, &s).await;
    assert!(loose.iter().all(|r| r.key.is_none() && r.value.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_fatal_and_changes_made_meanwhile_are_not_lost() {
    let scram = PgOptions {
        auth_method: "scram-sha-256".into(),
        password: Some("right-password".into()),
        ..PgOptions::default()
    };
    let bed = Bed::start_with(scram, "shop").await;
    bed.pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let file = bed.connector("shop", "shop", &["public.t"], "");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "[postgres]\n",
        "[postgres]\npassword_env = \"SHOP_PG_PASSWORD\"\n",
    );
    std::fs::write(&file, text).unwrap();
    let topic = "shop.public.t";
    let right = [("SHOP_PG_PASSWORD", "right-password")];

    // A working connector streams for a while and stops.
    let mut s = bed.siphon_with_env(&file, &right);
    bed.wait_slot_active("shop", "siphon_shop").await;
    bed.pg
        .psql("shop", "INSERT INTO t SELECT generate_series(1, 10)");
    bed.wait_records(topic, 10, &s).await;
    assert!(s.stop().success());

    // Changes happen while it is down; it comes back with a wrong password.
    bed.pg
        .psql("shop", "INSERT INTO t SELECT generate_series(11, 20)");
    let log = bed.run_until_fatal(&file, &[("SHOP_PG_PASSWORD", "wrong-password")]);
    assert!(
        log.contains("password authentication failed; check the password in postgres.password_env / password_file"),
        "{log}"
    );
    assert!(
        !log.contains("wrong-password") && !log.contains("right-password"),
        "{log}"
    );

    // With the password fixed, the changes made meanwhile all arrive, once.
    let s = bed.siphon_with_env(&file, &right);
    bed.wait_records(topic, 20, &s).await;
}

/// A connector that streamed 5 rows of `public.t` and was stopped cleanly.
async fn streamed_and_stopped() -> (Bed, std::path::PathBuf) {
    let bed = Bed::start("shop").await;
    bed.pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let file = bed.connector("shop", "shop", &["public.t"], "");
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("shop", "siphon_shop").await;
    bed.pg
        .psql("shop", "INSERT INTO t SELECT generate_series(1, 5)");
    bed.wait_records("shop.public.t", 5, &s).await;
    assert!(s.stop().success(), "{}", s.log());
    (bed, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_refused_not_silently_recreated() {
    let (bed, file) = streamed_and_stopped().await;
    bed.pg
        .psql("shop", "SELECT pg_drop_replication_slot('siphon_shop')");
    bed.pg.psql("shop", "INSERT INTO t VALUES (6)");
    let log = bed.run_until_fatal(&file, &[]);
    assert!(
        log.contains(
            "replication slot siphon_shop does not exist but connector shop has a stored offset at"
        ),
        "{log}"
    );
    assert_eq!(
        bed.pg
            .psql("shop", "SELECT count(*) FROM pg_replication_slots"),
        "0",
        "the slot must not be re-created"
    );
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "shop.public.t").len(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_advanced_behind_siphons_back_is_refused() {
    let (bed, file) = streamed_and_stopped().await;
    bed.pg
        .psql("shop", "INSERT INTO t SELECT generate_series(6, 10)");
    bed.pg.psql(
        "shop",
        "SELECT pg_replication_slot_advance('siphon_shop', pg_current_wal_lsn())",
    );
    let log = bed.run_until_fatal(&file, &[]);
    assert!(
        log.contains("replication slot siphon_shop has confirmed")
            && log.contains("but connector shop stored only")
            && log.contains("changes in between were consumed outside siphon and are lost"),
        "{log}"
    );
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "shop.public.t").len(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_database_system_is_refused() {
    let (bed, file) = streamed_and_stopped().await;
    // The same connector file now points at another cluster (a restore, or a
    // failover to a server that is not a copy of the first one).
    let other = PgCluster::start();
    other.create_database("shop");
    other.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &format!("port = {}", bed.pg.port()),
        &format!("port = {}", other.port()),
    );
    std::fs::write(&file, text).unwrap();
    let log = bed.run_until_fatal(&file, &[]);
    assert!(
        log.contains(
            "PostgreSQL system identifier changed: the stored offset of connector shop belongs to"
        ),
        "{log}"
    );
    // Nothing was created on the wrong server.
    assert_eq!(
        other.psql(
            "shop",
            "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_timeline_is_refused() {
    let (mut bed, file) = streamed_and_stopped().await;
    // A point-in-time restore or a promoted standby: the same system and
    // slot, but the WAL after the switch is another history.
    bed.pg.switch_timeline();
    bed.pg.psql("shop", "INSERT INTO t VALUES (6)");
    let log = bed.run_until_fatal(&file, &[]);
    assert!(
        log.contains(
            "PostgreSQL timeline changed: the stored offset of connector shop belongs to 1, the server is 2"
        ),
        "{log}"
    );
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "shop.public.t").len(),
        5
    );
}
