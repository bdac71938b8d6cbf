//! Bad input gets a clear error naming the fix, and never loses data:
//! connector file mistakes, wal_level not logical, a wrong password, a table
//! without a primary key or replica identity.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use siphon::event::{Lsn, Position};
use siphon::kafka::offsets::OffsetRecord;
use siphon::snapshot::progress::{SnapshotProgress, TableProgress};
use support::bed::Bed;
use support::kafka::{read_committed, write_committed};
use support::postgres::{PgCluster, PgOptions};
use support::siphon::Siphon;

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

const OFFSETS: &str = "siphon.offsets";

/// The last committed offset record of `connector`.
fn stored_offset(bed: &Bed, connector: &str) -> Option<OffsetRecord> {
    read_committed(&bed.broker.bootstrap, OFFSETS)
        .into_iter()
        .rfind(|r| r.key.as_deref() == Some(connector.as_bytes()))
        .and_then(|r| r.value)
        .map(|v| OffsetRecord::from_wire(&v).expect("siphon's own offset record decodes"))
}

/// Commits `record` to the offsets topic as the connector's newest offset,
/// in a Kafka transaction as siphon writes them.
fn forge(bed: &Bed, record: &OffsetRecord) {
    let mut value = vec![0, 0, 0, 0, 1];
    value.extend(record.to_avro());
    write_committed(
        &bed.broker.bootstrap,
        OFFSETS,
        record.connector.as_bytes(),
        Some(&value),
    );
}

/// Stores `forged` as the connector's offset, writes one more row, runs
/// siphon until it stops with a fatal error, and checks that nothing
/// moved: the slot was not acknowledged and no event was added. Returns
/// siphon's log.
fn refused_untouched(bed: &Bed, file: &std::path::Path, forged: &OffsetRecord) -> String {
    forge(bed, forged);
    bed.pg.psql("shop", "INSERT INTO t VALUES (6)");
    let confirmed = confirmed_flush(bed);
    let log = bed.run_until_fatal(file, &[]);
    assert_eq!(
        confirmed_flush(bed),
        confirmed,
        "the slot was acknowledged\n{log}"
    );
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "shop.public.t").len(),
        5,
        "{log}"
    );
    log
}

fn confirmed_flush(bed: &Bed) -> String {
    bed.pg.psql(
        "shop",
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'siphon_shop'",
    )
}

/// A stored offset past the server's WAL (a damaged record, or one restored
/// from another cluster's backup) would make siphon drop every change
/// before it as "already written" and acknowledge it, so PostgreSQL skips
/// them for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_ahead_of_the_servers_wal_is_refused_and_never_acknowledged() {
    let (bed, file) = streamed_and_stopped().await;
    let mut forged = stored_offset(&bed, "shop").expect("an offset");
    let far = Lsn(forged.flush_lsn.0 + (1 << 40));
    forged.commit_lsn = far;
    forged.flush_lsn = far;
    forged.index = None;
    forged.txn_complete = true;
    let log = refused_untouched(&bed, &file, &forged);
    assert!(
        log.contains(&format!(
            "the stored offset of connector shop is at {far}, ahead of the server's WAL, which ends at"
        )) && log.contains("reset the connector"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_of_another_slot_is_refused() {
    let (bed, file) = streamed_and_stopped().await;
    let mut forged = stored_offset(&bed, "shop").expect("an offset");
    forged.slot = "siphon_elsewhere".into();
    let log = refused_untouched(&bed, &file, &forged);
    assert!(
        log.contains(
            "the stored offset of connector shop belongs to replication slot siphon_elsewhere, but the connector reads replication slot siphon_shop"
        ),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_snapshot_progress_is_refused_with_a_clear_error() {
    let (bed, file) = streamed_and_stopped().await;
    let mut forged = stored_offset(&bed, "shop").expect("an offset");
    // Chunk 1 would start at page 2^40: page numbers are 32-bit.
    forged.snapshot = Some(SnapshotProgress {
        tables: vec![TableProgress {
            table: "public.t".into(),
            chunk_pages: 1 << 40,
            chunks: 3,
            done: vec![0b1],
            rows: 5,
            as_of: None,
            initial: true,
            chunk_items: 0,
            page_items: 0,
        }],
    });
    let log = refused_untouched(&bed, &file, &forged);
    assert!(
        log.contains("offset record of connector shop in topic siphon.offsets is invalid: snapshot progress of table public.t:")
            && !log.contains("panicked"),
        "{log}"
    );
}

/// Waits for siphon to stop by itself with a failure, failing as soon as it
/// restarts a connector instead (an error that cannot go away, retried).
fn fatal_without_retry(s: &mut Siphon) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = s.wait(Duration::from_millis(200)) {
            assert!(!status.success(), "siphon succeeded:\n{}", s.log());
            return s.log();
        }
        let log = s.log();
        assert!(
            !log.contains("restarting from its stored offset"),
            "the connector retries an error that cannot go away:\n{log}"
        );
        assert!(Instant::now() < deadline, "siphon kept running:\n{log}");
    }
}

/// `(commit_lsn, index)` as an error message prints it after `prefix`.
fn position_after(log: &str, prefix: &str) -> Position {
    let rest = &log[log
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} in:\n{log}"))
        + prefix.len()..];
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.split_once(')'))
        .unwrap_or_else(|| panic!("a position after {prefix:?}:\n{log}"))
        .0;
    let (lsn, index) = inner.split_once(", ").expect("lsn, index");
    let (hi, lo) = lsn.split_once('/').expect("an LSN");
    Position {
        commit_lsn: Lsn(
            u64::from_str_radix(hi, 16).unwrap() << 32 | u64::from_str_radix(lo, 16).unwrap()
        ),
        index: index.parse().expect("an index"),
    }
}

const SMALL_LIMIT: &str = r#"properties = { "message.max.bytes" = "200000" }"#;

/// A row over librdkafka's `message.max.bytes` can never be written: it is
/// fatal, said once with the fix, and the transaction holding it leaves no
/// trace (instead of a restart loop while the slot holds WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_change_is_fatal_once_with_the_fix_and_nothing_of_its_transaction_is_written()
{
    let bed = Bed::start("big").await;
    bed.pg
        .psql("big", "CREATE TABLE t (id int PRIMARY KEY, body text)");
    let file = bed.connector("big", "big", &["public.t"], SMALL_LIMIT);
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("big", "siphon_big").await;
    bed.pg.psql(
        "big",
        "INSERT INTO t SELECT g, 'small' FROM generate_series(1, 3) g",
    );
    bed.wait_records("big.public.t", 3, &s).await;
    bed.pg.psql(
        "big",
        "BEGIN; INSERT INTO t VALUES (4, 'small'); INSERT INTO t VALUES (5, repeat('x', 300000)); \
         INSERT INTO t VALUES (6, 'small'); COMMIT",
    );
    let log = fatal_without_retry(&mut s);
    let prefix = "a change of table public.t at ";
    let at = position_after(&log, prefix);
    assert_eq!(at.index, 1, "the second change of its transaction:\n{log}");
    assert!(
        log.contains(
            "bytes as a Kafka record (key, value and headers), over the limit of 199903 bytes"
        ) && log.contains(r#"raise kafka.properties."message.max.bytes""#)
            && log.contains("max.message.bytes of topic big.public.t"),
        "{log}"
    );
    assert_eq!(
        log.matches("connector stopped: fix the cause").count(),
        1,
        "{log}"
    );
    // Nothing from the row on, and the offset stays before it. The change
    // before it in its transaction may be in: a Kafka transaction also
    // ends batch_linger_ms after it began, inside a source transaction
    // too (seen on a loaded CI machine).
    let written = read_committed(&bed.broker.bootstrap, "big.public.t").len();
    let stored = stored_offset(&bed, "big").expect("an offset");
    match written {
        3 => {}
        4 => assert_eq!(
            (stored.commit_lsn, stored.index),
            (at.commit_lsn, Some(0)),
            "the change before the row was committed alone: {stored:?}"
        ),
        n => panic!("{n} records: the oversized row or one after it was written"),
    }
    assert!(!stored.covers(at), "{stored:?} covers {at}");
    assert!(stored.flush_lsn <= at.commit_lsn, "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_row_in_the_initial_snapshot_is_fatal_once_with_the_fix() {
    let bed = Bed::start("big").await;
    bed.pg
        .psql("big", "CREATE TABLE t (id int PRIMARY KEY, body text)");
    bed.pg.psql(
        "big",
        "INSERT INTO t SELECT g, 'small' FROM generate_series(1, 3) g; \
         INSERT INTO t VALUES (4, repeat('x', 300000))",
    );
    let file = bed.connector("big", "big", &["public.t"], SMALL_LIMIT);
    let mut s = bed.siphon(&file);
    let log = fatal_without_retry(&mut s);
    assert!(
        log.contains("a snapshot row of table public.t (snapshot at ")
            && log.contains(
                "bytes as a Kafka record (key, value and headers), over the limit of 199903 bytes"
            )
            && log.contains(r#"raise kafka.properties."message.max.bytes""#),
        "{log}"
    );
    // The chunk holding it was not written, nor marked done.
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "big.public.t").len(),
        0
    );
    if let Some(stored) = stored_offset(&bed, "big") {
        let progress = stored.snapshot.expect("the snapshot is not complete");
        assert!(
            progress.tables.iter().all(|t| !t.is_done(0)),
            "{progress:?}"
        );
    }
}
