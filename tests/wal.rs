//! WAL safety: the slot keeps moving, and PostgreSQL keeps releasing WAL,
//! while the captured tables are idle and the server is busy elsewhere —
//! by siphon's idle offset-only commits (an unpublished table of the same
//! database), and by the heartbeat action query (another database on the
//! same server). And the heartbeat's failures: fatal ones stop the
//! connector with the option's name and the SQL error, transient ones are
//! retried.
//!
//! PostgreSQL moves a logical slot's `restart_lsn` only when decoding meets
//! an `xl_running_xacts` record (logged by the background writer every
//! 15 s while WAL is written, and by checkpoints) *and* the client has
//! confirmed past it, so the tests keep writing until it has moved past a
//! mark rather than expecting it at once.

mod support;

use siphon::event::Lsn;
use siphon::kafka::offsets::OffsetRecord;
use support::bed::{Bed, WAIT};
use support::kafka::read_committed;
use support::poll_until;

/// (restart_lsn, confirmed_flush_lsn) of `slot`.
fn slot_lsns(bed: &Bed, db: &str, slot: &str) -> (Lsn, Lsn) {
    let row = bed.pg.psql(
        db,
        &format!(
            "SELECT restart_lsn || ' ' || confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    );
    let (r, c) = row.split_once(' ').expect("slot row");
    (r.parse().unwrap(), c.parse().unwrap())
}

fn current_lsn(bed: &Bed, db: &str) -> Lsn {
    bed.pg
        .psql(db, "SELECT pg_current_wal_lsn()")
        .parse()
        .unwrap()
}

/// About `rows` × 250 bytes of WAL (inserted, then deleted) in `db`.
fn noise(bed: &Bed, db: &str, rows: u32) {
    bed.pg.psql(
        db,
        &format!(
            "INSERT INTO noise SELECT g, repeat('x', 200) FROM generate_series(1, {rows}) g;
             DELETE FROM noise;"
        ),
    );
}

/// Writes noise into `db` until the slot's restart point and confirmed
/// position have both passed `mark`; returns the WAL it still retains.
async fn noise_until_released(bed: &Bed, db: &str, slot_db: &str, slot: &str, mark: Lsn) -> u64 {
    poll_until(
        WAIT,
        &format!("slot {slot} to confirm and release WAL up to {mark}"),
        async || {
            noise(bed, db, 5_000);
            let (restart, confirmed) = slot_lsns(bed, slot_db, slot);
            (restart >= mark && confirmed >= mark).then(|| current_lsn(bed, slot_db).0 - restart.0)
        },
    )
    .await
}

const MIB: u64 = 1024 * 1024;

/// Writes ~60 MiB of WAL into `db` (none of it captured), then noise until
/// the slot released it; fails unless the WAL still retained is less than
/// what was written. Returns the mark the slot had to pass.
async fn busy_then_released(bed: &Bed, db: &str, slot_db: &str, slot: &str) -> Lsn {
    let start = current_lsn(bed, db);
    for _ in 0..4 {
        noise(bed, db, 60_000);
    }
    let mark = current_lsn(bed, db);
    assert!(
        mark.0 - start.0 > 50 * MIB,
        "the noise wrote too little WAL"
    );
    let retained = noise_until_released(bed, db, slot_db, slot, mark).await;
    // Everything written before the mark is released; what is retained is
    // what was written since (a few polls' noise), not the 60 MiB.
    assert!(
        retained < mark.0 - start.0,
        "{} MiB retained",
        retained / MIB
    );
    mark
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_captured_tables_retain_no_wal_while_other_tables_and_databases_are_busy() {
    let bed = Bed::start("app").await;
    bed.pg.psql(
        "app",
        "CREATE TABLE captured (id int PRIMARY KEY);
         CREATE TABLE noise (id int PRIMARY KEY, pad text);",
    );
    let file = bed.connector(
        "app",
        "app",
        &["public.captured"],
        "idle_offset_interval_ms = 500",
    );
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_app").await;
    bed.pg.psql("app", "INSERT INTO captured VALUES (1)");
    bed.wait_records("app.public.captured", 1, &siphon).await;

    // ~60 MiB of WAL that no captured table is part of.
    busy_then_released(&bed, "app", "app", "siphon_app").await;

    // The same when the WAL comes from another database of the server:
    // keepalives carry the server's WAL end, whichever database wrote it.
    bed.pg.create_database("other");
    bed.pg
        .psql("other", "CREATE TABLE noise (id int PRIMARY KEY, pad text)");
    let mark = busy_then_released(&bed, "other", "app", "siphon_app").await;

    // It was the offset-only commits that moved it: no event was written.
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "app.public.captured").len(),
        1
    );
    let idle: Vec<OffsetRecord> = read_committed(&bed.broker.bootstrap, "siphon.offsets")
        .iter()
        .map(|r| OffsetRecord::from_wire(r.value.as_ref().unwrap()).unwrap())
        .filter(|o| o.index.is_none() && o.flush_lsn >= mark)
        .collect();
    assert!(!idle.is_empty(), "no idle offset past {mark}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_moves_the_slot_while_another_database_is_busy() {
    let bed = Bed::start("app").await;
    bed.pg.create_database("other");
    bed.pg.psql(
        "app",
        "CREATE TABLE siphon_heartbeat (id int PRIMARY KEY, ts timestamptz NOT NULL);
         INSERT INTO siphon_heartbeat VALUES (1, now());",
    );
    bed.pg
        .psql("other", "CREATE TABLE noise (id int PRIMARY KEY, pad text)");
    // Idle offsets off: only the heartbeat's changes can move the slot.
    let file = bed.connector(
        "app",
        "app",
        &["public.siphon_heartbeat"],
        "idle_offset_interval_ms = 3600000",
    );
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(
        "\n[heartbeat]\ninterval_ms = 500\naction_query = \"UPDATE siphon_heartbeat SET ts = now() WHERE id = 1\"\n",
    );
    std::fs::write(&file, text).unwrap();
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_app").await;

    busy_then_released(&bed, "other", "app", "siphon_app").await;

    // The heartbeat's updates are ordinary change events, and counted.
    let beats = read_committed(&bed.broker.bootstrap, "app.public.siphon_heartbeat").len();
    assert!(beats >= 2, "{beats} heartbeat events");
    let ran = siphon
        .metric("siphon_heartbeats_total{connector=\"app\"}")
        .await
        .unwrap_or(0.0);
    assert!(ran >= beats as f64, "{ran} heartbeats counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_failures_name_the_option_lock_timeouts_are_retried_and_denied_access_is_fatal() {
    let bed = Bed::start("app").await;
    bed.pg.psql(
        "app",
        "CREATE TABLE siphon_heartbeat (id int PRIMARY KEY, ts timestamptz NOT NULL);
         INSERT INTO siphon_heartbeat VALUES (1, now());
         CREATE ROLE heartbeat_reader NOLOGIN;",
    );
    let with_heartbeat = |name: &str, query: &str| {
        let file = bed.connector(name, "app", &["public.siphon_heartbeat"], "");
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str(&format!(
            "\n[heartbeat]\ninterval_ms = 300\naction_query = {query:?}\n"
        ));
        std::fs::write(&file, text).unwrap();
        file
    };

    // Transient: the heartbeat table is locked; the connector restarts
    // until the lock goes away, then beats.
    let file = with_heartbeat(
        "locked",
        "SET lock_timeout = '200ms'; UPDATE siphon_heartbeat SET ts = now() WHERE id = 1",
    );
    let siphon = bed.siphon(&file);
    bed.wait_ready_status(&siphon, 200).await;
    let locker = bed.pg.client("app").await;
    locker
        .batch_execute("BEGIN; LOCK TABLE siphon_heartbeat IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    poll_until(WAIT, "a heartbeat failure to be retried", async || {
        let log = siphon.log();
        (log.contains("connector interrupted, restarting from its stored offset")
            && log.contains("heartbeat.action_query failed (SET lock_timeout"))
        .then_some(())
    })
    .await;
    // siphon's counter (it survives the connector's restarts) rather than
    // the topic: tansu's read_committed readers lag while siphon commits
    // every few hundred milliseconds.
    let beats = async || {
        siphon
            .metric(r#"siphon_heartbeats_total{connector="locked"}"#)
            .await
            .unwrap_or(0.0)
    };
    let before = beats().await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    poll_until(WAIT, "heartbeats after the lock went away", async || {
        (beats().await >= before + 2.0).then_some(())
    })
    .await;
    bed.wait_ready_status(&siphon, 200).await;
    // A graceful stop: a killed instance would leave its open transaction
    // on the shared offsets topic, and the next connector's offset read
    // would wait for the broker to time it out (transaction_timeout_ms).
    let mut siphon = siphon;
    assert!(siphon.stop().success(), "{}", siphon.log());

    // Fatal: the role the query runs as may not update the table.
    let file = with_heartbeat(
        "denied",
        "SET ROLE heartbeat_reader; UPDATE siphon_heartbeat SET ts = now() WHERE id = 1",
    );
    let log = bed.run_until_fatal(&file, &[]);
    assert!(
        log.contains(
            "heartbeat.action_query failed (SET ROLE heartbeat_reader; UPDATE siphon_heartbeat SET ts = now() WHERE id = 1): grant the connector's user the privilege the query needs"
        ) && log.contains("permission denied for table siphon_heartbeat"),
        "{log}"
    );
    assert!(
        !log.contains("connector interrupted"),
        "retried a fatal error:\n{log}"
    );
}
