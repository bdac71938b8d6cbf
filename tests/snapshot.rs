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
    stop: Arc<AtomicBool>,
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
            if n % 3 == 0 {
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
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    })
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
    let writes = spawn_writes(&bed, "app", "items", 20_000, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let file = with_snapshot(
        bed.connector("snap", "app", &["public.items"], ""),
        "max_threads = 3\nchunk_pages = 8",
    );
    let siphon = bed.siphon(&file);
    // The slot turns active only when replication starts, after the snapshot.
    wait_streaming(&bed, "app", "siphon_snap", &siphon).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
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
