//! Shapes of tables beyond a plain keyed one, through each snapshot phase:
//! partitioned tables (under the root's topic, and per partition), keyless
//! insert-only tables read in watermark windows while they are written,
//! databases whose session defaults change how values print, and a
//! SIGKILL in the middle of an initial snapshot of a partitioned and a
//! keyless table under concurrent writes. Each check compares what a
//! read_committed consumer got with what the tables hold.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use apache_avro::types::Value;
use support::bed::{Bed, WAIT};
use support::events::{CachedDecoder, Event, int};
use support::kafka::read_committed;
use support::kafka_proxy::KafkaProxy;
use support::poll_until;

fn with_snapshot(file: PathBuf, snapshot: &str) -> PathBuf {
    let body = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{body}\n[snapshot]\n{snapshot}\n")).unwrap();
    file
}

async fn events(bed: &Bed, bootstrap: &str, topic: &str) -> Vec<Event> {
    let records = read_committed(bootstrap, topic);
    CachedDecoder::new(&bed.registry.url).events(&records).await
}

/// `column` of an event's `after` (or `before`) row.
fn col(e: &Event, which: &str, column: &str) -> Option<i64> {
    e.row(which)?.get(column).map(int)
}

fn snapshot_marker(e: &Event) -> String {
    match e.source("snapshot") {
        Some(Value::String(s) | Value::Enum(_, s)) => s,
        other => panic!("source.snapshot {other:?}"),
    }
}

/// The partitioned table `m`: list partitions by `region`, one of them
/// partitioned again by range, and a default partition.
fn create_partitioned(bed: &Bed, db: &str, rows: i64) {
    bed.pg.psql(
        db,
        &format!(
            "CREATE TABLE m (id bigint NOT NULL, region int NOT NULL, val bigint NOT NULL, pad text,
                             PRIMARY KEY (id, region)) PARTITION BY LIST (region);
             CREATE TABLE m_eu PARTITION OF m FOR VALUES IN (1);
             CREATE TABLE m_us PARTITION OF m FOR VALUES IN (2) PARTITION BY RANGE (id);
             CREATE TABLE m_us_low PARTITION OF m_us FOR VALUES FROM (MINVALUE) TO ({half});
             CREATE TABLE m_us_high PARTITION OF m_us FOR VALUES FROM ({half}) TO (MAXVALUE);
             CREATE TABLE m_rest PARTITION OF m DEFAULT;
             INSERT INTO m SELECT g, g % 3, g * 10, repeat('x', 80) FROM generate_series(1, {rows}) g;
             ANALYZE m;",
            half = rows / 2
        ),
    );
}

/// `(id, region) → val` of table `table` now.
fn partitioned_state(bed: &Bed, db: &str, table: &str) -> BTreeMap<(i64, i64), i64> {
    bed.pg
        .psql(db, &format!("SELECT id, region, val FROM {table}"))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Vec<i64> = l.split('|').map(|x| x.parse().unwrap()).collect();
            ((v[0], v[1]), v[2])
        })
        .collect()
}

/// What a consumer applying `events` in order holds, keyed by `(id, region)`.
fn consumer_state(events: &[Event]) -> BTreeMap<(i64, i64), i64> {
    let mut state = BTreeMap::new();
    for e in events {
        let key = |which| {
            (
                col(e, which, "id").expect("id"),
                col(e, which, "region").expect("region"),
            )
        };
        match e.op().as_deref() {
            Some("r" | "c" | "u") => {
                if e.row("before").is_some() {
                    state.remove(&key("before"));
                }
                state.insert(key("after"), col(e, "after", "val").expect("val"));
            }
            Some("d") => {
                state.remove(&key("before"));
            }
            _ => {}
        }
    }
    state
}

/// Polls until a consumer of `topic` holds what `table` holds.
async fn wait_partitioned_converged(
    bed: &Bed,
    bootstrap: &str,
    table: &str,
    topic: &str,
    log: &dyn Fn() -> String,
) -> Vec<Event> {
    let want = partitioned_state(bed, "app", table);
    let mut last;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let evs = events(bed, bootstrap, topic).await;
        last = consumer_state(&evs);
        if last == want {
            return evs;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<_> = want
                .keys()
                .filter(|k| !last.contains_key(k))
                .take(10)
                .collect();
            let extra: Vec<_> = last
                .keys()
                .filter(|k| !want.contains_key(k))
                .take(10)
                .collect();
            panic!(
                "{topic}: consumer holds {} rows, {table} {}; missing {missing:?}, extra {extra:?}\n{}",
                last.len(),
                want.len(),
                log()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every row of `1..=rows` (there before the snapshot began) was read
/// exactly once — or, with `changed_since`, not at all when the stream's
/// first event of it is an update (a row changed after the snapshot began
/// is the stream's: its newer state comes whole in the update).
fn assert_read_once(evs: &[Event], rows: i64, changed_since: bool, log: &str) {
    let mut reads: BTreeMap<i64, usize> = BTreeMap::new();
    let mut first: BTreeMap<i64, String> = BTreeMap::new();
    for e in evs.iter().filter(|e| e.value.is_some()) {
        let id = col(e, "after", "id")
            .or_else(|| col(e, "before", "id"))
            .expect("id");
        let op = e.op().expect("op");
        first.entry(id).or_insert_with(|| op.clone());
        if op == "r" {
            *reads.entry(id).or_default() += 1;
        }
    }
    for id in 1..=rows {
        let n = reads.get(&id).copied().unwrap_or(0);
        let updated_first = first.get(&id).is_some_and(|op| op == "u");
        assert!(
            n == 1 || (changed_since && n == 0 && updated_first),
            "row {id} read {n} times (first event {:?})\n{log}",
            first.get(&id)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_table_is_snapshotted_partition_by_partition_under_the_roots_topic() {
    const ROWS: i64 = 3_000;
    let bed = Bed::start("app").await;
    create_partitioned(&bed, "app", ROWS);
    bed.pg.psql(
        "app",
        "CREATE TABLE siphon_signals (id text PRIMARY KEY, type text NOT NULL, data text)",
    );
    let file = with_snapshot(
        bed.connector("part", "app", &["public.m"], ""),
        "max_threads = 2\nchunk_pages = 2\nsignal_table = \"public.siphon_signals\"",
    );
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_part").await;
    // Streamed after the snapshot: a row moving to another partition (a
    // delete and an insert), an update, a delete, an insert.
    bed.pg.psql(
        "app",
        "UPDATE m SET region = 1 WHERE id = 2; UPDATE m SET val = -1 WHERE id = 4;
         DELETE FROM m WHERE id = 6; INSERT INTO m VALUES (5000, 2, 7, 'new');",
    );
    let evs =
        wait_partitioned_converged(&bed, &bed.broker.bootstrap, "m", "part.public.m", &|| {
            s.log()
        })
        .await;
    let log = s.log();
    assert_read_once(&evs, ROWS, false, &log);
    // Under the root's name, and nothing under the partitions' topics.
    assert!(
        evs.iter()
            .filter(|e| e.value.is_some())
            .all(|e| e.source("table") == Some(Value::String("m".into()))),
        "an event not named after the root"
    );
    for leaf in ["m_eu", "m_us_low", "m_us_high", "m_rest"] {
        assert!(read_committed(&bed.broker.bootstrap, &format!("part.public.{leaf}")).is_empty());
    }
    // Debezium's markers over the whole snapshot: one first, one last.
    let markers: Vec<String> = evs
        .iter()
        .filter(|e| e.op().as_deref() == Some("r"))
        .map(snapshot_marker)
        .collect();
    assert_eq!(
        markers.iter().filter(|m| *m == "first").count(),
        1,
        "{markers:?}"
    );
    assert_eq!(markers.iter().filter(|m| *m == "last").count(), 1);

    // An incremental snapshot of the root reads every partition again,
    // under the root's topic, and a consumer still holds the table.
    bed.pg.psql(
        "app",
        r#"INSERT INTO siphon_signals VALUES ('p', 'execute-snapshot', '{"data-collections": ["public.m"]}')"#,
    );
    let rows = partitioned_state(&bed, "app", "m").len();
    let evs = poll_until(WAIT, "the incremental snapshot of m", async || {
        let evs = events(&bed, &bed.broker.bootstrap, "part.public.m").await;
        let n = evs
            .iter()
            .filter(|e| e.op().as_deref() == Some("r") && snapshot_marker(e) == "incremental")
            .count();
        (n >= rows).then_some(evs)
    })
    .await;
    let log = s.log();
    let again: Vec<Event> = evs
        .iter()
        .filter(|e| e.op().as_deref() == Some("r") && snapshot_marker(e) == "incremental")
        .cloned()
        .collect();
    assert_eq!(again.len(), rows, "{log}");
    assert_eq!(
        consumer_state(&again),
        partitioned_state(&bed, "app", "m"),
        "{log}"
    );
    assert_eq!(
        consumer_state(&evs),
        partitioned_state(&bed, "app", "m"),
        "{log}"
    );
    assert!(s.stop().success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_publish_via_root_each_partition_is_snapshotted_to_its_own_topic() {
    const ROWS: i64 = 1_200;
    let bed = Bed::start("app").await;
    create_partitioned(&bed, "app", ROWS);
    let file = with_snapshot(
        bed.connector_with(
            "leaf",
            "app",
            &["public.m"],
            "",
            "publish_via_partition_root = false",
        ),
        "chunk_pages = 2",
    );
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_leaf").await;
    bed.pg
        .psql("app", "INSERT INTO m VALUES (9000, 1, 1, 'new')");
    for leaf in ["m_eu", "m_us_low", "m_us_high", "m_rest"] {
        let topic = format!("leaf.public.{leaf}");
        let evs =
            wait_partitioned_converged(&bed, &bed.broker.bootstrap, leaf, &topic, &|| s.log())
                .await;
        let reads = evs
            .iter()
            .filter(|e| e.op().as_deref() == Some("r"))
            .count();
        let rows: usize = bed
            .pg
            .psql(
                "app",
                &format!("SELECT count(*) FROM {leaf} WHERE id <= {ROWS}"),
            )
            .parse()
            .unwrap();
        assert!(rows > 0);
        assert_eq!(reads, rows, "{topic}");
        assert!(
            evs.iter()
                .all(|e| e.source("table") == Some(Value::String(leaf.into())))
        );
    }
    assert!(read_committed(&bed.broker.bootstrap, "leaf.public.m").is_empty());
    assert!(s.stop().success(), "{}", s.log());
}

async fn connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Inserts rows `(seq, note)` into keyless `table` from `next` on, one
/// per statement, until stopped; returns the next unused seq.
fn spawn_inserts(
    bed: &Bed,
    table: &'static str,
    next: i64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<i64> {
    let conn = bed.pg.connection_string("app");
    tokio::spawn(async move {
        let client = connect(&conn).await;
        let mut seq = next;
        while !stop.load(Ordering::Relaxed) {
            client
                .execute(
                    &format!("INSERT INTO {table} (seq, note) VALUES ($1, 'live')"),
                    &[&seq],
                )
                .await
                .expect("insert");
            seq += 1;
            done.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seq
    })
}

async fn writes_advance(done: &AtomicU64, more: u64) {
    let target = done.load(Ordering::Relaxed) + more;
    poll_until(WAIT, "the concurrent writes to go on", async || {
        (done.load(Ordering::Relaxed) >= target).then_some(())
    })
    .await;
}

/// Per `seq` of a keyless table's events: how many reads and inserts.
fn keyless_counts(evs: &[Event]) -> BTreeMap<i64, (usize, usize)> {
    let mut counts: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    for e in evs {
        let seq = col(e, "after", "seq").expect("seq");
        let c = counts.entry(seq).or_default();
        match e.op().as_deref() {
            Some("r") => c.0 += 1,
            Some("c") => c.1 += 1,
            other => panic!("op {other:?} on an insert-only table"),
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_table_loses_no_chunk_in_watermark_windows_while_it_is_written() {
    const ROWS: i64 = 20_000;
    let bed = Bed::start("app").await;
    bed.pg.psql(
        "app",
        &format!(
            "CREATE TABLE log (seq bigint NOT NULL, note text);
             INSERT INTO log SELECT g, repeat('n', 40) FROM generate_series(1, {ROWS}) g;
             CREATE TABLE siphon_signals (id text PRIMARY KEY, type text NOT NULL, data text);"
        ),
    );
    let file = with_snapshot(
        bed.connector_with(
            "keyless",
            "app",
            &["public.log"],
            "",
            "insert_only_tables = [\"public.log\"]",
        ),
        "mode = \"no_data\"\nchunk_pages = 8\nsignal_table = \"public.siphon_signals\"",
    );
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_keyless").await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writes = spawn_inserts(&bed, "log", ROWS + 1, Arc::clone(&stop), Arc::clone(&done));
    writes_advance(&done, 20).await;
    bed.pg.psql(
        "app",
        r#"INSERT INTO siphon_signals VALUES ('k1', 'execute-snapshot', '{"data-collections": ["public.log"]}')"#,
    );
    poll_until(WAIT, "the incremental snapshot to complete", async || {
        s.log()
            .contains("snapshot in watermark windows complete")
            .then_some(())
    })
    .await;
    writes_advance(&done, 20).await;
    stop.store(true, Ordering::Relaxed);
    let next = writes.await.unwrap();

    let total = (next - 1) as usize;
    let evs = poll_until(WAIT, "every inserted row to be streamed", async || {
        let evs = events(&bed, &bed.broker.bootstrap, "keyless.public.log").await;
        let inserts = evs
            .iter()
            .filter(|e| e.op().as_deref() == Some("c"))
            .count();
        (inserts == total - ROWS as usize).then_some(evs)
    })
    .await;
    let log = s.log();
    let counts = keyless_counts(&evs);
    for seq in 1..next {
        let (reads, inserts) = counts.get(&seq).copied().unwrap_or_default();
        if seq <= ROWS {
            // There before the slot: never streamed, read exactly once.
            assert_eq!((reads, inserts), (1, 0), "seq {seq}\n{log}");
        } else {
            // Streamed once; read at most once more (a row inserted in a
            // window is the stream's alone).
            assert_eq!(inserts, 1, "seq {seq}\n{log}");
            assert!(reads <= 1, "seq {seq} read {reads} times\n{log}");
        }
    }
    assert!(s.stop().success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_values_read_as_the_stream_sends_them_whatever_the_session_defaults() {
    let bed = Bed::start("app").await;
    // Defaults a database may well have: every one changes how some type
    // prints in COPY's text.
    bed.pg.psql(
        "app",
        "ALTER DATABASE app SET DateStyle = 'SQL, DMY';
         ALTER DATABASE app SET IntervalStyle = 'postgres_verbose';
         ALTER DATABASE app SET bytea_output = 'escape';
         ALTER DATABASE app SET extra_float_digits = 0;
         ALTER DATABASE app SET TimeZone = 'America/New_York';
         ALTER DATABASE app SET lc_monetary = 'C.utf8';",
    );
    bed.pg.psql(
        "app",
        "CREATE TABLE v (id int PRIMARY KEY, iv interval, d date, ts timestamp, tstz timestamptz,
                         t time, b bytea, m money, f float8, r real, n numeric(12,4), a interval[]);
         INSERT INTO v VALUES (1, '1 year 2 mons 3 days 04:05:06.789', '2024-02-29',
                               '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.5+02', '23:59:59.999',
                               '\\x00ff10', 1234.56, 0.1, 1.1, 12345678.1234, '{1 day,-2 hours}');",
    );
    let file = bed.connector("fmt", "app", &["public.v"], "");
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_fmt").await;
    bed.pg.psql(
        "app",
        "INSERT INTO v SELECT 2, iv, d, ts, tstz, t, b, m, f, r, n, a FROM v WHERE id = 1",
    );
    let evs = poll_until(WAIT, "the read and the insert", async || {
        let evs = events(&bed, &bed.broker.bootstrap, "fmt.public.v").await;
        (evs.len() == 2).then_some(evs)
    })
    .await;
    let log = s.log();
    assert_eq!(evs[0].op().as_deref(), Some("r"), "{log}");
    assert_eq!(evs[1].op().as_deref(), Some("c"), "{log}");
    let mut read = evs[0].row("after").unwrap();
    let mut streamed = evs[1].row("after").unwrap();
    read.remove("id");
    streamed.remove("id");
    assert_eq!(
        read, streamed,
        "the snapshot read other values than the stream sent"
    );
    // And they are the right ones, not equally wrong.
    assert_eq!(
        read["d"],
        Value::Int(19_782),
        "2024-02-29 as days since 1970 (DMY would misread it)"
    );
    assert!(
        matches!(read["iv"], Value::Long(us) if us > 36_000_000_000_000),
        "{:?}",
        read["iv"]
    );
    assert!(s.stop().success(), "{log}");
}

/// Updates random rows of the partitioned `m` (+1) and inserts into it and
/// into the keyless `log`, until stopped.
fn spawn_mixed_writes(
    bed: &Bed,
    rows: i64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<i64> {
    let conn = bed.pg.connection_string("app");
    tokio::spawn(async move {
        let client = connect(&conn).await;
        let mut seed = 99u64;
        let mut next = rows + 1;
        while !stop.load(Ordering::Relaxed) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (seed >> 33) as i64 % rows + 1;
            client
                .execute("UPDATE m SET val = val + 1 WHERE id = $1", &[&id])
                .await
                .expect("update");
            client
                .batch_execute(&format!(
                    "INSERT INTO m VALUES ({next}, {}, 0, 'new'); INSERT INTO log VALUES ({next}, 'live')",
                    next % 3
                ))
                .await
                .expect("insert");
            next += 1;
            done.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        next
    })
}

/// Every key of `m` as a chain: at most one read, each update adding 1
/// (so a repeated or missed change breaks it).
fn assert_chains(evs: &[Event], log: &str) {
    let mut by_key: BTreeMap<(i64, i64), Vec<(String, i64)>> = BTreeMap::new();
    for e in evs.iter().filter(|e| e.value.is_some()) {
        let key = (
            col(e, "after", "id").unwrap(),
            col(e, "after", "region").unwrap(),
        );
        by_key
            .entry(key)
            .or_default()
            .push((e.op().unwrap(), col(e, "after", "val").unwrap()));
    }
    for (key, chain) in by_key {
        let reads = chain.iter().filter(|(op, _)| op == "r").count();
        assert!(reads <= 1, "{key:?} read {reads} times: {chain:?}\n{log}");
        // An update first: the row changed after the snapshot began.
        assert!(
            matches!(chain[0].0.as_str(), "r" | "c" | "u"),
            "{key:?}: {chain:?}"
        );
        for pair in chain.windows(2) {
            assert_eq!(pair[1].0, "u", "{key:?}: {chain:?}\n{log}");
            assert_eq!(
                pair[1].1,
                pair[0].1 + 1,
                "{key:?}: a change missing or repeated: {chain:?}\n{log}"
            );
        }
    }
}

/// SIGKILLs siphon in the middle of an initial snapshot of `tables` (a
/// partitioned and a keyless table) under concurrent writes, once the
/// first listed has `kill_after` rows read, then checks that a second run
/// finishes it with every row once and both tables equal to what a
/// consumer holds.
async fn sigkill_mid_snapshot(name: &str, tables: &[&str], kill_sample: &str, kill_after: f64) {
    const ROWS: i64 = 40_000;
    let bed = Bed::start("app").await;
    let proxy = KafkaProxy::start(&bed.broker.bootstrap);
    create_partitioned(&bed, "app", ROWS);
    bed.pg.psql(
        "app",
        &format!(
            "CREATE TABLE log (seq bigint NOT NULL, note text);
             INSERT INTO log SELECT g, repeat('n', 60) FROM generate_series(1, {ROWS}) g;"
        ),
    );
    let file = bed.connector_with(
        name,
        "app",
        tables,
        "batch_max_events = 300",
        "insert_only_tables = [\"public.log\"]",
    );
    let body = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, body.replace(&bed.broker.bootstrap, &proxy.bootstrap)).unwrap();
    let file = with_snapshot(file, "max_threads = 2\nchunk_pages = 4");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writes = spawn_mixed_writes(&bed, ROWS, Arc::clone(&stop), Arc::clone(&done));
    writes_advance(&done, 20).await;
    let mut first = bed.siphon(&file);
    let sample =
        format!("siphon_snapshot_rows_total{{connector=\"{name}\",table=\"{kill_sample}\"}}");
    poll_until(WAIT, "part of the snapshot to be committed", async || {
        first.metric(&sample).await.filter(|&n| n >= kill_after)
    })
    .await;
    first.kill();
    let first_log = first.log();
    let second = bed.siphon(&file);
    bed.wait_slot_active("app", &format!("siphon_{name}")).await;
    // Killed mid-way, the rest is read in watermark windows.
    poll_until(
        WAIT,
        "the snapshot's rest to start in windows",
        async || {
            second
                .log()
                .contains("snapshot in watermark windows started")
                .then_some(())
        },
    )
    .await;
    poll_until(WAIT, "the snapshot's rest to be read", async || {
        second
            .log()
            .contains("snapshot in watermark windows complete")
            .then_some(())
    })
    .await;
    writes_advance(&done, 20).await;
    stop.store(true, Ordering::Relaxed);
    let next = writes.await.unwrap();
    let log = || format!("first run:\n{first_log}\nsecond run:\n{}", second.log());

    let m = wait_partitioned_converged(
        &bed,
        &proxy.bootstrap,
        "m",
        &format!("{name}.public.m"),
        &log,
    )
    .await;
    assert_chains(&m, &log());
    assert_read_once(&m, ROWS, true, &log());

    let evs = poll_until(WAIT, "every row of log", async || {
        let evs = events(&bed, &proxy.bootstrap, &format!("{name}.public.log")).await;
        (evs.len() as i64 >= next - 1).then_some(evs)
    })
    .await;
    let counts = keyless_counts(&evs);
    let want: BTreeSet<i64> = (1..next).collect();
    let got: BTreeSet<i64> = counts.keys().copied().collect();
    assert_eq!(got, want, "{}", log());
    for (seq, (reads, inserts)) in counts {
        // A row read in the snapshot was there before it began: the stream
        // never carries it; a newer one comes from the stream alone.
        assert_eq!(
            reads + inserts,
            1,
            "seq {seq}: {reads} reads, {inserts} inserts\n{}",
            log()
        );
        // Rows there before siphon started were read (rows the workload
        // added meanwhile may be either).
        assert!(
            seq > ROWS || reads == 1,
            "seq {seq} was not read\n{}",
            log()
        );
    }
    assert_eq!(proxy.errors(), Vec::<String>::new(), "proxy errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_an_initial_snapshot_of_a_keyless_table_resumes_with_every_row_once() {
    sigkill_mid_snapshot(
        "crashlog",
        &["public.log", "public.m"],
        "public.log",
        8_000.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_an_initial_snapshot_of_a_partitioned_table_resumes_with_every_row_once() {
    sigkill_mid_snapshot(
        "crashpart",
        &["public.m", "public.log"],
        "public.m_eu",
        3_000.0,
    )
    .await;
}

/// A row as text per column (`None` for NULL), the way both sides compare.
type TextRow = BTreeMap<String, Option<String>>;

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Int(i) => Some(i.to_string()),
        Value::Long(l) => Some(l.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Union(_, inner) => text_of(inner),
        other => panic!("unexpected value {other:?}"),
    }
}

/// The `unavailable_columns` of an event.
fn unavailable(e: &Event) -> Vec<String> {
    match e
        .value
        .as_ref()
        .and_then(|v| support::events::field(v, "unavailable_columns"))
    {
        Some(Value::Union(_, inner)) => match inner.as_ref() {
            Value::Array(items) => items.iter().filter_map(text_of).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn text_row(e: &Event, which: &str) -> Option<TextRow> {
    Some(
        e.row(which)?
            .iter()
            .map(|(k, v)| (k.clone(), text_of(v)))
            .collect(),
    )
}

/// A table's rows as text: SQL columns `sql` of `table`, named
/// `columns` (their Avro names).
fn table_rows(bed: &Bed, table: &str, sql: &[&str], columns: &[&str]) -> Vec<TextRow> {
    let list: Vec<String> = sql
        .iter()
        .map(|c| format!("coalesce({c}::text, '<null>')"))
        .collect();
    let out = bed
        .pg
        .psql("app", &format!("SELECT {} FROM {table}", list.join(", ")));
    let mut rows: Vec<TextRow> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            columns
                .iter()
                .zip(l.split('|'))
                .map(|(c, v)| (c.to_string(), (v != "<null>").then(|| v.to_owned())))
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// What a consumer holds after applying `events` in order: rows keyed by
/// `key` (`None`: a keyless table, held as a multiset), a value listed in
/// `unavailable_columns` kept from the row's previous state.
fn apply(events: &[&Event], key: Option<&str>) -> Vec<TextRow> {
    let mut keyed: BTreeMap<Option<String>, TextRow> = BTreeMap::new();
    let mut bag: Vec<TextRow> = Vec::new();
    for e in events {
        let op = e.op();
        let before = text_row(e, "before");
        let after = text_row(e, "after");
        match key {
            Some(k) => {
                if let Some(b) = &before {
                    keyed.remove(&b[k]);
                }
                if op.as_deref() == Some("d") {
                    continue;
                }
                let Some(mut after) = after else { continue };
                if let Some(old) = keyed.get(&after[k]) {
                    for c in unavailable(e) {
                        after.insert(c.clone(), old[&c].clone());
                    }
                }
                keyed.insert(after[k].clone(), after);
            }
            None => {
                if let Some(b) = &before {
                    let i = bag.iter().position(|r| r == b).unwrap_or_else(|| {
                        panic!("{op:?} of a row the consumer does not hold: {b:?}")
                    });
                    bag.remove(i);
                }
                if op.as_deref() != Some("d")
                    && let Some(a) = after
                {
                    bag.push(a);
                }
            }
        }
    }
    let mut rows: Vec<TextRow> = match key {
        Some(_) => keyed.into_values().collect(),
        None => bag,
    };
    rows.sort();
    rows
}

/// The rows an incremental snapshot emitted.
fn incremental_reads(events: &[Event]) -> Vec<TextRow> {
    let mut rows: Vec<TextRow> = events
        .iter()
        .filter(|e| e.op().as_deref() == Some("r") && snapshot_marker(e) == "incremental")
        .filter_map(|e| text_row(e, "after"))
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_every_shape_reach_consumers_equal_in_every_phase() {
    let bed = Bed::start("app").await;
    // A name and columns that need quoting and sanitizing; REPLICA
    // IDENTITY FULL without a key, with two identical rows; TOASTed values
    // that updates leave unchanged; 2 MB rows.
    bed.pg.psql(
        "app",
        r#"CREATE TABLE "Odd Table" ("Id" int PRIMARY KEY, "2nd col" text, "weird-name" int);
           CREATE TABLE full_nokey (a int NOT NULL, b text);
           ALTER TABLE full_nokey REPLICA IDENTITY FULL;
           CREATE TABLE toasty (id int PRIMARY KEY, body text, n int NOT NULL);
           ALTER TABLE toasty ALTER COLUMN body SET STORAGE EXTERNAL;
           CREATE TABLE big (id int PRIMARY KEY, blob text NOT NULL);
           CREATE TABLE siphon_signals (id text PRIMARY KEY, type text NOT NULL, data text);
           INSERT INTO "Odd Table" VALUES (1, 'one', 10), (2, NULL, 20), (3, 'three', NULL);
           INSERT INTO full_nokey VALUES (1, 'a'), (2, 'b'), (2, 'b');
           INSERT INTO toasty SELECT g, repeat(g::text || 'body', 20000), g FROM generate_series(1, 3) g;
           INSERT INTO big VALUES (1, repeat('x', 2000000));"#,
    );
    let tables = [
        "public.Odd Table",
        "public.full_nokey",
        "public.toasty",
        "public.big",
    ];
    let file = with_snapshot(
        bed.connector(
            "shapes",
            "app",
            &tables,
            "properties = { \"message.max.bytes\" = \"10000000\" }",
        ),
        "signal_table = \"public.siphon_signals\"",
    );
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_shapes").await;
    // Streamed: every kind of change on every shape.
    bed.pg.psql(
        "app",
        r#"INSERT INTO "Odd Table" VALUES (4, 'four', 40);
           UPDATE "Odd Table" SET "weird-name" = 11 WHERE "Id" = 1;
           DELETE FROM "Odd Table" WHERE "Id" = 2;
           INSERT INTO full_nokey VALUES (3, 'c');
           UPDATE full_nokey SET b = 'a2' WHERE a = 1;
           DELETE FROM full_nokey WHERE ctid = (SELECT ctid FROM full_nokey WHERE a = 2 LIMIT 1);
           UPDATE toasty SET n = n + 100 WHERE id = 1;
           INSERT INTO toasty VALUES (4, repeat('4body', 20000), 4);
           INSERT INTO big VALUES (2, repeat('y', 2000000));
           UPDATE big SET blob = repeat('z', 2000000) WHERE id = 1;"#,
    );
    // Then an incremental snapshot of all four, with nothing written
    // meanwhile: its reads must be exactly the tables.
    bed.pg.psql(
        "app",
        r#"INSERT INTO siphon_signals VALUES ('all', 'execute-snapshot',
           '{"data-collections": ["public.Odd Table", "public.full_nokey", "public.toasty", "public.big"]}')"#,
    );
    poll_until(WAIT, "the incremental snapshot to complete", async || {
        s.log()
            .contains("snapshot in watermark windows complete")
            .then_some(())
    })
    .await;

    type Check<'a> = (
        &'a str,
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        Option<&'a str>,
    );
    let checks: [Check; 4] = [
        (
            "shapes.public.Odd_Table",
            "\"Odd Table\"",
            &["\"Id\"", "\"2nd col\"", "\"weird-name\""],
            &["Id", "_2nd_col", "weird_name"],
            Some("Id"),
        ),
        (
            "shapes.public.full_nokey",
            "full_nokey",
            &["a", "b"],
            &["a", "b"],
            None,
        ),
        (
            "shapes.public.toasty",
            "toasty",
            &["id", "body", "n"],
            &["id", "body", "n"],
            Some("id"),
        ),
        (
            "shapes.public.big",
            "big",
            &["id", "blob"],
            &["id", "blob"],
            Some("id"),
        ),
    ];
    for (topic, table, sql, columns, key) in checks {
        let want = table_rows(&bed, table, sql, columns);
        let evs = poll_until(
            WAIT,
            &format!("{topic} to hold the incremental snapshot"),
            async || {
                let evs = events(&bed, &bed.broker.bootstrap, topic).await;
                (incremental_reads(&evs).len() == want.len()).then_some(evs)
            },
        )
        .await;
        let log = s.log();
        // Initial snapshot and stream: the consumer holds the table.
        let before_signal: Vec<&Event> = evs
            .iter()
            .filter(|e| !(e.op().as_deref() == Some("r") && snapshot_marker(e) == "incremental"))
            .collect();
        let initial = before_signal
            .iter()
            .filter(|e| e.op().as_deref() == Some("r"))
            .count();
        assert!(
            initial > 0,
            "{table}: nothing read by the initial snapshot\n{log}"
        );
        assert_eq!(
            apply(&before_signal, key),
            want,
            "{table}: initial snapshot + stream\n{log}"
        );
        // The incremental snapshot read exactly the table.
        assert_eq!(
            incremental_reads(&evs),
            want,
            "{table}: incremental snapshot\n{log}"
        );
        // Keyless: no Kafka key; keyed: the key record.
        assert_eq!(
            evs.iter().all(|e| e.key.is_none()),
            key.is_none(),
            "{table}: keys"
        );
    }
    assert!(s.stop().success(), "{}", s.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_a_toast_heavy_table_are_bounded_in_bytes() {
    const ROWS: i64 = 120;
    let bed = Bed::start("app").await;
    // 120 rows of ~200 kB each (24 MB in TOAST) on one heap page.
    bed.pg.psql(
        "app",
        &format!(
            "CREATE TABLE docs (id int PRIMARY KEY, body text);
             ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO docs SELECT g, repeat(md5(g::text), 6250) FROM generate_series(1, {ROWS}) g;
             ANALYZE docs;"
        ),
    );
    assert_eq!(
        bed.pg.psql("app", "SELECT pg_relation_size('docs') / 8192"),
        "1"
    );
    let file = with_snapshot(
        bed.connector("docs", "app", &["public.docs"], ""),
        "chunk_max_bytes = 2097152",
    );
    let mut s = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_docs").await;
    let evs = poll_until(WAIT, "every row read", async || {
        let evs = events(&bed, &bed.broker.bootstrap, "docs.public.docs").await;
        (evs.len() as i64 >= ROWS).then_some(evs)
    })
    .await;
    let log = s.log();
    let ids: BTreeSet<i64> = evs.iter().map(|e| col(e, "after", "id").unwrap()).collect();
    assert_eq!(evs.len(), ids.len(), "a row read twice\n{log}");
    assert_eq!(ids, (1..=ROWS).collect(), "{log}");
    // 2 MiB of ~200 kB rows: about ten rows a chunk, parts of the one page.
    let chunks: u64 = log
        .lines()
        .find(|l| l.contains("initial snapshot started"))
        .and_then(|l| l.split("chunks=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no chunk count in the log\n{log}"));
    assert!(chunks >= 12, "{chunks} chunks for 24 MB of rows\n{log}");
    assert!(s.stop().success(), "{log}");
}
