//! Snapshots against the real services: the initial snapshot's hand-off
//! to the stream under concurrent writes, a SIGKILL in the middle of a
//! parallel snapshot, each `snapshot.mode`, and an incremental snapshot
//! started over HTTP while the table is written to.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use support::bed::{Bed, WAIT};
use support::events::{field, unwrap_union, wire};
use support::kafka::{Record, read_committed};
use support::kafka_proxy::KafkaProxy;
use support::poll_until;

/// One event as the checks need it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    id: i64,
    /// `r`, `c`, `u`, `d`; `-` for a tombstone.
    op: String,
    val: Option<i64>,
    snapshot: String,
}

fn int(v: &Value) -> i64 {
    match unwrap_union(v) {
        Value::Int(i) => i64::from(*i),
        Value::Long(l) => *l,
        other => panic!("not an integer: {other:?}"),
    }
}

/// Decodes records, parsing each registered schema once.
struct Decoder {
    bed_url: String,
    schemas: HashMap<u32, Schema>,
}

impl Decoder {
    fn new(bed: &Bed) -> Decoder {
        Decoder {
            bed_url: bed.registry.url.clone(),
            schemas: HashMap::new(),
        }
    }

    async fn value(&mut self, bytes: &[u8]) -> Value {
        let (id, mut body) = wire(bytes);
        if !self.schemas.contains_key(&id) {
            let url = format!("{}/schemas/ids/{id}", self.bed_url);
            let v: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            let schema = Schema::parse_str(v["schema"].as_str().unwrap()).unwrap();
            self.schemas.insert(id, schema);
        }
        GenericDatumReader::builder(&self.schemas[&id])
            .build()
            .and_then(|r| r.read_value(&mut body))
            .expect("record decodes")
    }

    async fn events(&mut self, records: &[Record]) -> Vec<Ev> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let key = self.value(r.key.as_ref().expect("key")).await;
            let id = int(field(&key, "id").expect("id"));
            let Some(v) = &r.value else {
                out.push(Ev {
                    id,
                    op: "-".into(),
                    val: None,
                    snapshot: String::new(),
                });
                continue;
            };
            let v = self.value(v).await;
            let op = match field(&v, "op") {
                Some(Value::String(s)) => s.clone(),
                other => panic!("op {other:?}"),
            };
            let after = field(&v, "after").map(unwrap_union);
            let val = match after {
                Some(Value::Record(f)) => f.iter().find(|(n, _)| n == "val").map(|(_, v)| int(v)),
                _ => None,
            };
            let snapshot = match field(field(&v, "source").unwrap(), "snapshot").map(unwrap_union) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Enum(_, s)) => s.clone(),
                other => panic!("snapshot {other:?}"),
            };
            out.push(Ev {
                id,
                op,
                val,
                snapshot,
            });
        }
        out
    }
}

/// `id → val` as the table holds it now.
fn table_state(bed: &Bed, db: &str, table: &str) -> BTreeMap<i64, i64> {
    let out = bed.pg.psql(
        db,
        &format!("SELECT id || ',' || val FROM {table} ORDER BY id"),
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// `id → val` as a consumer that applies the events in order ends up with.
fn consumer_state(events: &[Ev]) -> BTreeMap<i64, i64> {
    let mut state = BTreeMap::new();
    for e in events {
        match e.op.as_str() {
            "r" | "c" | "u" => {
                state.insert(e.id, e.val.expect("after.val"));
            }
            "d" => {
                state.remove(&e.id);
            }
            _ => {}
        }
    }
    state
}

/// Polls until the consumer's state equals the table's; returns the events.
async fn wait_converged(
    bed: &Bed,
    bootstrap: &str,
    db: &str,
    table: &str,
    topic: &str,
    log: &dyn Fn() -> String,
) -> Vec<Ev> {
    let want = table_state(bed, db, table);
    let mut dec = Decoder::new(bed);
    let mut last = 0;
    let result = poll_until(
        WAIT,
        "the consumer's state to equal the table",
        async || {
            let records = read_committed(bootstrap, topic);
            let events = dec.events(&records).await;
            last = events.len();
            (consumer_state(&events) == want).then_some(events)
        },
    )
    .await;
    let _ = last;
    let _ = log;
    result
}

/// Waits until siphon streams from `slot`, showing its log if it does not.
async fn wait_streaming(bed: &Bed, db: &str, slot: &str, siphon: &support::siphon::Siphon) {
    let sql = format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'");
    let deadline = std::time::Instant::now() + WAIT;
    while bed.pg.psql(db, &sql) != "t" {
        assert!(
            std::time::Instant::now() < deadline,
            "siphon does not stream from {slot}:\n{}",
            siphon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn with_snapshot(file: PathBuf, snapshot: &str) -> PathBuf {
    let body = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{body}\n[snapshot]\n{snapshot}\n")).unwrap();
    file
}

/// Every key's events as a chain of states: an `r` (at most one) or a `c`
/// first, then each update adding exactly 1 to `val` — so a duplicated or
/// missed change breaks the chain.
fn assert_chains(events: &[Ev], log: &str) {
    let mut by_key: BTreeMap<i64, Vec<&Ev>> = BTreeMap::new();
    for e in events {
        by_key.entry(e.id).or_default().push(e);
    }
    for (id, evs) in by_key {
        let reads = evs.iter().filter(|e| e.op == "r").count();
        assert!(
            reads <= 1,
            "key {id} was read {reads} times: {evs:?}\n{log}"
        );
        for pair in evs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_eq!(b.op, "u", "key {id}: {evs:?}");
            assert_eq!(
                b.val,
                a.val.map(|v| v + 1),
                "key {id}: a change is missing or duplicated: {evs:?}\n{log}"
            );
        }
        assert!(matches!(evs[0].op.as_str(), "r" | "c"), "key {id}: {evs:?}");
    }
}

/// Updates random existing rows (+1) and inserts new ones (val 0) until
/// stopped; returns how many statements ran.
fn spawn_writes(
    bed: &Bed,
    db: &str,
    table: &'static str,
    max_id: i64,
    deletes: bool,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    let client_fut = {
        let pg = &bed.pg;
        let db = db.to_owned();
        let conn = pg.connection_string(&db);
        async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(connection);
            client
        }
    };
    let next = Arc::new(AtomicU64::new(max_id as u64 + 1));
    tokio::spawn(async move {
        let client = client_fut.await;
        let mut n = 0u64;
        let mut seed = 12345u64;
        while !stop.load(Ordering::Relaxed) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (seed >> 33) as i64 % max_id + 1;
            client
                .execute(
                    &format!("UPDATE {table} SET val = val + 1 WHERE id = $1"),
                    &[&id],
                )
                .await
                .expect("update");
            if deletes && n.is_multiple_of(7) {
                client
                    .execute(&format!("DELETE FROM {table} WHERE id = $1"), &[&(id + 1)])
                    .await
                    .expect("delete");
            }
            if n.is_multiple_of(3) {
                let new = next.fetch_add(1, Ordering::Relaxed) as i64;
                client
                    .execute(
                        &format!("INSERT INTO {table} (id, val) VALUES ($1, 0)"),
                        &[&new],
                    )
                    .await
                    .expect("insert");
            }
            n += 1;
            done.store(n, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    })
}

/// Waits until the writer task has done `more` statements beyond now.
async fn writes_advance(done: &AtomicU64, more: u64) {
    let target = done.load(Ordering::Relaxed) + more;
    poll_until(WAIT, "the concurrent writes to go on", async || {
        (done.load(Ordering::Relaxed) >= target).then_some(())
    })
    .await;
}

fn create_items(bed: &Bed, db: &str, table: &str, rows: i64) {
    bed.pg.psql(
        db,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, val bigint NOT NULL, pad text);
             INSERT INTO {table} SELECT g, g * 10, repeat('x', 60) FROM generate_series(1, {rows}) g;
             ANALYZE {table};"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_snapshot_hands_off_to_the_stream_under_concurrent_writes() {
    let bed = Bed::start("app").await;
    create_items(&bed, "app", "items", 20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writes = spawn_writes(
        &bed,
        "app",
        "items",
        20_000,
        false,
        Arc::clone(&stop),
        Arc::clone(&done),
    );
    writes_advance(&done, 30).await;

    let file = with_snapshot(
        bed.connector("snap", "app", &["public.items"], ""),
        "max_threads = 3\nchunk_pages = 8",
    );
    let siphon = bed.siphon(&file);
    // The slot turns active only when replication starts, after the snapshot.
    wait_streaming(&bed, "app", "siphon_snap", &siphon).await;
    writes_advance(&done, 30).await;
    stop.store(true, Ordering::Relaxed);
    let n = writes.await.unwrap();
    assert!(n > 50, "the workload ran {n} statements");

    let log = siphon.log();
    let events = wait_converged(
        &bed,
        &bed.broker.bootstrap,
        "app",
        "items",
        "snap.public.items",
        &|| siphon.log(),
    )
    .await;
    assert_chains(&events, &log);
    let reads: Vec<&Ev> = events.iter().filter(|e| e.op == "r").collect();
    // Every row that existed before siphon started was read (once: the
    // chains allow one read per key); rows inserted before the slot's
    // consistent point were read too.
    for id in 1..=20_000 {
        assert!(
            events.iter().any(|e| e.id == id && e.op == "r"),
            "row {id} never read"
        );
    }
    assert!(reads.len() >= 20_000);
    // Writes kept going during the snapshot: some changes came after it.
    assert!(events.iter().any(|e| e.op == "u"), "no streamed updates");
    // Debezium's markers: one first, one last (a single table), the rest true.
    let markers: Vec<&str> = reads.iter().map(|e| e.snapshot.as_str()).collect();
    assert_eq!(markers.iter().filter(|m| **m == "first").count(), 1);
    assert_eq!(markers.iter().filter(|m| **m == "last").count(), 1);
    assert_eq!(
        markers.iter().filter(|m| **m == "true").count(),
        reads.len() - 2
    );
    assert!(
        events
            .iter()
            .filter(|e| e.op != "r")
            .all(|e| e.snapshot == "false")
    );
    assert!(log.contains("initial snapshot started"), "{log}");
    // Parallel: more than one chunk, several workers.
    assert!(log.contains("workers=3"), "{log}");
}

/// `file` with its Kafka bootstrap replaced by the proxy's.
fn through_proxy(file: PathBuf, bed: &Bed, proxy: &KafkaProxy) -> PathBuf {
    let body = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, body.replace(&bed.broker.bootstrap, &proxy.bootstrap)).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_parallel_snapshot_resumes_with_no_duplicate_or_gap() {
    const ROWS: i64 = 150_000;
    let bed = Bed::start("app").await;
    // The proxy gives read_committed its real meaning: the killed
    // instance's open transaction is aborted, not shown.
    let proxy = KafkaProxy::start(&bed.broker.bootstrap);
    create_items(&bed, "app", "items", ROWS);
    let file = with_snapshot(
        through_proxy(
            bed.connector("kill", "app", &["public.items"], "batch_max_events = 200"),
            &bed,
            &proxy,
        ),
        "max_threads = 2\nchunk_pages = 4",
    );
    let mut first = bed.siphon(&file);
    let sample = r#"siphon_snapshot_rows_total{connector="kill",table="public.items"}"#;
    let done = poll_until(WAIT, "part of the snapshot to be committed", async || {
        first.metric(sample).await.filter(|&n| n >= 20_000.0)
    })
    .await;
    first.kill();
    assert!(
        done < ROWS as f64,
        "the snapshot finished before the kill ({done} rows)"
    );
    let first_log = first.log();

    let second = bed.siphon(&file);
    wait_streaming(&bed, "app", "siphon_kill", &second).await;
    bed.pg.psql(
        "app",
        "INSERT INTO items SELECT g, 0, 'new' FROM generate_series(200001, 200010) g",
    );
    let events = wait_converged(
        &bed,
        &proxy.bootstrap,
        "app",
        "items",
        "kill.public.items",
        &|| second.log(),
    )
    .await;
    let log = second.log();
    assert!(
        log.contains("snapshot in watermark windows started"),
        "{log}"
    );
    // Exactly one event per row: its read, or the insert of a new one.
    let mut per_key: BTreeMap<i64, Vec<&Ev>> = BTreeMap::new();
    for e in &events {
        per_key.entry(e.id).or_default().push(e);
    }
    assert_eq!(per_key.len() as i64, ROWS + 10);
    for (id, evs) in &per_key {
        let want = if *id > ROWS { "c" } else { "r" };
        assert!(
            evs.len() == 1 && evs[0].op == want,
            "key {id}: {evs:?}\nfirst run:\n{}\nsecond run:\n{log}",
            first_log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(events.len() as i64, ROWS + 10);
    // Rows read before the kill were marked as the initial snapshot's,
    // the rest as read in watermark windows.
    assert!(events.iter().any(|e| e.snapshot == "first"));
    assert!(events.iter().any(|e| e.snapshot == "incremental"));
    assert_eq!(proxy.errors(), Vec::<String>::new(), "proxy errors");
}

/// Records of `topic` once there are `n`, decoded.
async fn wait_n(bed: &Bed, topic: &str, n: usize, siphon: &support::siphon::Siphon) -> Vec<Ev> {
    let records = bed.wait_records(topic, n, siphon).await;
    Decoder::new(bed).events(&records).await
}

fn slot_exists(bed: &Bed, db: &str, slot: &str) -> bool {
    bed.pg.psql(
        db,
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    ) == "1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_snapshot_mode_behaves_as_documented() {
    let bed = Bed::start("app").await;
    for t in ["nd", "io", "al", "wn"] {
        create_items(&bed, "app", t, 100);
    }

    // no_data: only changes after the slot was created.
    let file = with_snapshot(
        bed.connector("nodata", "app", &["public.nd"], ""),
        "mode = \"no_data\"",
    );
    let mut s = bed.siphon(&file);
    wait_streaming(&bed, "app", "siphon_nodata", &s).await;
    bed.pg.psql("app", "INSERT INTO nd VALUES (1001, 0, '')");
    let events = wait_n(&bed, "nodata.public.nd", 1, &s).await;
    assert_eq!(events[0].op, "c");
    assert_eq!(events[0].id, 1001);
    assert!(s.stop().success(), "{}", s.log());

    // initial_only: the rows, then nothing: no slot, no stream.
    let file = with_snapshot(
        bed.connector("only", "app", &["public.io"], ""),
        "mode = \"initial_only\"",
    );
    let mut s = bed.siphon(&file);
    let events = wait_n(&bed, "only.public.io", 100, &s).await;
    assert!(events.iter().all(|e| e.op == "r"));
    poll_until(WAIT, "initial_only to finish", async || {
        s.log().contains("not streaming").then_some(())
    })
    .await;
    assert!(!slot_exists(&bed, "app", "siphon_only"));
    bed.pg.psql("app", "INSERT INTO io VALUES (1001, 0, '')");
    s.stop();
    let mut s = bed.siphon(&file);
    poll_until(WAIT, "initial_only to see it is done", async || {
        s.log().contains("nothing to do").then_some(())
    })
    .await;
    s.stop();
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "only.public.io").len(),
        100
    );

    // always: a snapshot at every start; the second, with the slot in
    // place, in watermark windows while streaming.
    let file = with_snapshot(
        bed.connector("always", "app", &["public.al"], ""),
        "mode = \"always\"",
    );
    let mut s = bed.siphon(&file);
    wait_streaming(&bed, "app", "siphon_always", &s).await;
    bed.pg
        .psql("app", "UPDATE al SET val = val + 1 WHERE id = 1");
    let events = wait_n(&bed, "always.public.al", 101, &s).await;
    assert_eq!(events.iter().filter(|e| e.op == "r").count(), 100);
    s.stop();
    bed.pg.psql("app", "INSERT INTO al VALUES (101, 0, '')");
    let s = bed.siphon(&file);
    let events = wait_n(&bed, "always.public.al", 101 + 1 + 101, &s).await;
    let second: Vec<&Ev> = events[101..].iter().collect();
    assert_eq!(
        second.iter().filter(|e| e.op == "r").count(),
        101,
        "{second:?}"
    );
    assert!(
        second
            .iter()
            .filter(|e| e.op == "r")
            .all(|e| e.snapshot == "incremental")
    );
    assert_eq!(consumer_state(&events), table_state(&bed, "app", "al"));
    drop(s);

    // when_needed: a stored offset whose slot is gone means a new snapshot
    // (initial would stop with an error instead).
    let file = with_snapshot(
        bed.connector("needed", "app", &["public.wn"], ""),
        "mode = \"when_needed\"",
    );
    let mut s = bed.siphon(&file);
    wait_streaming(&bed, "app", "siphon_needed", &s).await;
    wait_n(&bed, "needed.public.wn", 100, &s).await;
    s.stop();
    bed.pg
        .psql("app", "SELECT pg_drop_replication_slot('siphon_needed')");
    let mut s = bed.siphon(&file);
    wait_streaming(&bed, "app", "siphon_needed", &s).await;
    let events = wait_n(&bed, "needed.public.wn", 200, &s).await;
    assert!(events.iter().all(|e| e.op == "r"));
    assert!(s.log().contains("when_needed takes a new snapshot"));
    assert!(s.stop().success(), "{}", s.log());
}

async fn post(siphon: &support::siphon::Siphon, path: &str, body: &str) -> (u16, String) {
    siphon.control_post(path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_at_runtime_is_snapshotted_in_windows_while_it_is_written() {
    let bed = Bed::start("app").await;
    create_items(&bed, "app", "a", 0);
    create_items(&bed, "app", "b", 8_000);
    bed.pg.psql(
        "app",
        "CREATE TABLE siphon_signals (id text PRIMARY KEY, type text NOT NULL, data text)",
    );
    // Streaming only at first: b's rows are not read until asked for.
    let file = with_snapshot(
        bed.connector("inc", "app", &["public.a", "public.b"], ""),
        "mode = \"no_data\"\nchunk_pages = 4\nsignal_table = \"public.siphon_signals\"",
    );
    let mut s = bed.siphon_with_control(&file);
    wait_streaming(&bed, "app", "siphon_inc", &s).await;

    // Bad requests are refused with a reason.
    let (status, body) = post(&s, "/connectors/inc/snapshot", "{\"action\":\"explode\"}").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = post(&s, "/connectors/nope/snapshot", "{\"action\":\"pause\"}").await;
    assert_eq!(status, 409);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writes = spawn_writes(
        &bed,
        "app",
        "b",
        8_000,
        true,
        Arc::clone(&stop),
        Arc::clone(&done),
    );
    writes_advance(&done, 30).await;
    let (status, body) = post(
        &s,
        "/connectors/inc/snapshot",
        r#"{"action":"execute","tables":["public.b"]}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // Pause and resume while it runs.
    let (status, _) = post(&s, "/connectors/inc/snapshot", r#"{"action":"pause"}"#).await;
    assert_eq!(status, 202);
    writes_advance(&done, 30).await;
    let (status, _) = post(&s, "/connectors/inc/snapshot", r#"{"action":"resume"}"#).await;
    assert_eq!(status, 202);
    poll_until(WAIT, "the incremental snapshot to complete", async || {
        s.log()
            .contains("snapshot in watermark windows complete")
            .then_some(())
    })
    .await;
    writes_advance(&done, 30).await;
    stop.store(true, Ordering::Relaxed);
    let n = writes.await.unwrap();
    assert!(n > 50, "the workload ran {n} statements");

    let events = wait_converged(
        &bed,
        &bed.broker.bootstrap,
        "app",
        "b",
        "inc.public.b",
        &|| s.log(),
    )
    .await;
    let log = s.log();
    assert!(
        log.contains("snapshot paused") && log.contains("snapshot resumed"),
        "{log}"
    );
    let reads: Vec<&Ev> = events.iter().filter(|e| e.op == "r").collect();
    assert!(reads.len() > 1000, "{} reads", reads.len());
    assert!(reads.iter().all(|e| e.snapshot == "incremental"));
    assert!(events.iter().any(|e| e.op == "u" || e.op == "d"));

    // The signal table works the same way, and its rows are not events.
    bed.pg.psql(
        "app",
        r#"INSERT INTO a VALUES (1, 1, ''); INSERT INTO siphon_signals VALUES ('s1', 'execute-snapshot', '{"data-collections": ["public.a"], "type": "incremental"}')"#,
    );
    let a = wait_n(&bed, "inc.public.a", 2, &s).await;
    assert_eq!(
        a.iter().map(|e| e.op.as_str()).collect::<Vec<_>>(),
        vec!["c", "r"]
    );
    assert!(s.log().contains("snapshot signal from the signal table"));
    assert!(read_committed(&bed.broker.bootstrap, "inc.public.siphon_signals").is_empty());

    // stop-snapshot drops what is pending.
    bed.pg.psql(
        "app",
        r#"INSERT INTO siphon_signals VALUES ('s2', 'execute-snapshot', '{"data-collections": ["public.b"]}'), ('s3', 'stop-snapshot', NULL)"#,
    );
    poll_until(WAIT, "the snapshot to stop", async || {
        s.log().contains("snapshot stopped").then_some(())
    })
    .await;
    assert!(s.stop().success(), "{}", s.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_never_drops_an_interrupted_initial_snapshot_unless_forced() {
    const ROWS: i64 = 20_000;
    let bed = Bed::start("app").await;
    create_items(&bed, "app", "items", ROWS);
    create_items(&bed, "app", "other", 3_000);
    let file = with_snapshot(
        bed.connector(
            "halt",
            "app",
            &["public.items", "public.other"],
            "batch_max_events = 200",
        ),
        "max_threads = 1\nchunk_pages = 4",
    );
    // The initial snapshot is interrupted right after its fifth Kafka
    // commit (as by SIGKILL, but at a known point: nothing is open).
    let mut first = bed.siphon_with_env(&file, &[("FAILPOINTS", "after_commit=4*off->return")]);
    let status = first
        .wait(WAIT)
        .unwrap_or_else(|| panic!("the fail point did not fire:\n{}", first.log()));
    assert!(!status.success());
    assert!(
        first.log().contains("initial snapshot started"),
        "{}",
        first.log()
    );

    // The rest is read in watermark windows; the first window waits, so
    // the signals below certainly meet the snapshot unfinished.
    let s = support::siphon::Siphon::start_with(
        &file,
        bed.dir.path(),
        &[("FAILPOINTS", "slow_window=1*return(15000)")],
        true,
    );
    poll_until(
        WAIT,
        "the snapshot's rest to be read in windows",
        async || {
            s.log()
                .contains("snapshot in watermark windows started")
                .then_some(())
        },
    )
    .await;
    for body in [
        r#"{"action":"stop"}"#,
        r#"{"action":"stop","tables":["public.items"]}"#,
        r#"{"action":"stop","tables":["public.items"],"force":false}"#,
    ] {
        let (status, reply) = post(&s, "/connectors/halt/snapshot", body).await;
        assert_eq!(status, 409, "{body}: {reply}\n{}", s.log());
        assert!(
            reply.contains("public.items")
                && reply.contains("initial snapshot")
                && reply.contains("force"),
            "{reply}"
        );
    }
    // Every row arrives exactly once all the same.
    let events = wait_converged(
        &bed,
        &bed.broker.bootstrap,
        "app",
        "items",
        "halt.public.items",
        &|| s.log(),
    )
    .await;
    let mut per_key: BTreeMap<i64, usize> = BTreeMap::new();
    for e in &events {
        *per_key.entry(e.id).or_default() += 1;
    }
    assert_eq!(per_key.len() as i64, ROWS);
    assert!(per_key.values().all(|&n| n == 1), "a row was written twice");
    assert!(s.log().contains("snapshot signal refused"), "{}", s.log());
}
