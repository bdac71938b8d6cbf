//! Correlation headers (`siphon.position`, `traceparent`) on every kind of
//! event: initial-snapshot rows, inserts, updates, deletes and their
//! tombstones, a key change, a truncate and incremental-snapshot rows, read
//! back from the broker with read_committed.

mod support;

use std::collections::BTreeMap;

use rdkafka::message::{Headers, Message};
use support::bed::Bed;
use support::bed::WAIT;
use support::events::{decode, field, int, unwrap_union};
use support::kafka::{assign_all, drain_each, read_committed};
use support::kafka_proxy::KafkaProxy;
use support::poll_until;

const TP1: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TP2: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
const TP3: &str = "00-11111111111111111111111111111111-2222222222222222-01";

/// A record's headers: name → value.
type HeaderMap = BTreeMap<String, String>;

/// One record with its headers, decoded.
#[derive(Debug)]
struct Read {
    id: i64,
    /// `None` for a tombstone.
    op: Option<String>,
    snapshot: String,
    tx_id: Option<i64>,
    headers: BTreeMap<String, Vec<String>>,
}

impl Read {
    fn one(&self, name: &str) -> Option<&str> {
        match self.headers.get(name).map(Vec::as_slice) {
            Some([v]) => Some(v.as_str()),
            _ => None,
        }
    }

    fn position(&self) -> (u64, u64) {
        let text = self.one("siphon.position").unwrap_or("");
        let parsed = text.split_once('/').and_then(|(l, i)| {
            (l.len() == 16 && i.len() == 16)
                .then(|| {
                    Some((
                        u64::from_str_radix(l, 16).ok()?,
                        u64::from_str_radix(i, 16).ok()?,
                    ))
                })
                .flatten()
        });
        // A missing or malformed header is reported by the header check.
        parsed.unwrap_or((0, 0))
    }
}

async fn read_all(bed: &Bed, topic: &str) -> Vec<Read> {
    let (consumer, pending) = assign_all(&bed.broker.bootstrap, topic, &[]).expect("topic");
    let mut raw = Vec::new();
    drain_each(&consumer, topic, pending, |m| {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                headers
                    .entry(h.key.to_owned())
                    .or_default()
                    .push(String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned());
            }
        }
        raw.push((
            m.offset(),
            m.key().map(<[u8]>::to_vec),
            m.payload().map(<[u8]>::to_vec),
            headers,
        ));
    });
    raw.sort_by_key(|r| r.0);
    let mut out = Vec::new();
    for (_, key, value, headers) in raw {
        let id = match key {
            Some(k) => int(field(&decode(&bed.client, &k).await.1, "id").expect("id")),
            None => -1,
        };
        let value = match value {
            Some(v) => Some(decode(&bed.client, &v).await.1),
            None => None,
        };
        let text = |name: &str| match value.as_ref().and_then(|v| field(v, name)) {
            Some(apache_avro::types::Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let source = value.as_ref().and_then(|v| field(v, "source")).cloned();
        let snapshot = source
            .as_ref()
            .and_then(|s| field(s, "snapshot"))
            .map(|v| match unwrap_union(v) {
                apache_avro::types::Value::Enum(_, s) | apache_avro::types::Value::String(s) => {
                    s.clone()
                }
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        let tx_id =
            source
                .as_ref()
                .and_then(|s| field(s, "txId"))
                .and_then(|v| match unwrap_union(v) {
                    apache_avro::types::Value::Null => None,
                    v => Some(int(v)),
                });
        out.push(Read {
            id,
            op: text("op"),
            snapshot,
            tx_id,
            headers,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_carries_its_position_and_a_valid_traceparent() {
    let bed = Bed::start("app").await;
    bed.pg.psql(
        "app",
        &format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text, traceparent text);
             ALTER TABLE items REPLICA IDENTITY FULL;
             CREATE TABLE siphon_signals (id text PRIMARY KEY, type text NOT NULL, data text);
             INSERT INTO items VALUES (1, 'one', '{TP1}'), (2, 'two', 'not-a-traceparent'), (3, 'three', NULL);"
        ),
    );
    let file = bed.connector(
        "corr",
        "app",
        &["public.items"],
        "emit_truncate = true\n[correlation]\ntraceparent_column = \"traceparent\"\n[snapshot]\nsignal_table = \"public.siphon_signals\"\n",
    );
    let siphon = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_corr").await;
    bed.pg.psql(
        "app",
        &format!(
            "INSERT INTO items VALUES (4, 'four', '{TP2}');
             BEGIN;
             UPDATE items SET name = 'uno', traceparent = '{TP3}' WHERE id = 1;
             UPDATE items SET name = 'dos', traceparent = '00-zz' WHERE id = 2;
             COMMIT;
             DELETE FROM items WHERE id = 4;
             UPDATE items SET id = 5 WHERE id = 1;
             TRUNCATE items;
             INSERT INTO items VALUES (6, 'six', '{TP2}');
             INSERT INTO siphon_signals VALUES ('s1', 'execute-snapshot', '{{\"data-collections\": [\"public.items\"], \"type\": \"incremental\"}}');"
        ),
    );
    // r1 r2 r3, c4, u1 u2, d4 + tombstone, d1 + tombstone + c5 (key
    // change), t, c6, r6 (incremental).
    bed.wait_records("corr.public.items", 14, &siphon).await;
    let reads = read_all(&bed, "corr.public.items").await;
    let shape: Vec<(i64, Option<&str>)> = reads.iter().map(|r| (r.id, r.op.as_deref())).collect();
    assert_eq!(
        shape,
        vec![
            (1, Some("r")),
            (2, Some("r")),
            (3, Some("r")),
            (4, Some("c")),
            (1, Some("u")),
            (2, Some("u")),
            (4, Some("d")),
            (4, None),
            (1, Some("d")),
            (1, None),
            (5, Some("c")),
            (-1, Some("t")),
            (6, Some("c")),
            (6, Some("r")),
        ][..],
        "{reads:#?}"
    );
    // Soft checks: every broken one is listed.
    let mut problems = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    for r in &reads {
        check(
            r.headers.get("siphon.position").map(Vec::len) == Some(1) && r.position() != (0, 0),
            format!("exactly one valid siphon.position header: {r:?}"),
        );
    }
    let pos: Vec<(u64, u64)> = reads.iter().map(Read::position).collect();
    // Initial snapshot rows: one shared position just before the stream.
    check(
        pos[0] == pos[1]
            && pos[1] == pos[2]
            && pos[0].1 == u64::MAX
            && reads[0].snapshot != "incremental",
        format!(
            "initial snapshot rows share (C - 1, 2^64 - 1): {:?}",
            &pos[..3]
        ),
    );
    check(
        pos[0].0 < pos[3].0,
        format!(
            "the snapshot's position lies before the stream's: {:?} vs {:?}",
            pos[0], pos[3]
        ),
    );
    // Stream: strictly increasing, except the tombstone (its delete's) and
    // the two halves of a key change (one change).
    for i in 3..reads.len() {
        let same = reads[i].op.is_none() || (reads[i].id == 5 && reads[i - 1].op.is_none());
        let ok = if same {
            pos[i] == pos[i - 1]
        } else {
            pos[i] > pos[i - 1]
        };
        check(
            ok,
            format!(
                "position {i} {:?} after {:?} (same: {same})",
                pos[i],
                pos[i - 1]
            ),
        );
    }
    // One source transaction, one commit LSN, indexes from 0 in order.
    check(
        reads[4].tx_id == reads[5].tx_id && pos[4].0 == pos[5].0 && pos[4].1 == 0 && pos[5].1 == 1,
        format!(
            "one transaction's two updates at (L, 0) and (L, 1): {:?} {:?}",
            pos[4], pos[5]
        ),
    );
    check(
        pos[3].1 == 0,
        format!("a one-change transaction at index 0: {:?}", pos[3]),
    );
    // The incremental snapshot row: a real position after everything before.
    check(
        reads[13].snapshot == "incremental" && pos[13] > pos[12] && pos[13].1 != u64::MAX,
        format!(
            "the incremental row is positioned in the stream: {:?} after {:?}",
            pos[13], pos[12]
        ),
    );
    // traceparent: copied when valid (from the old row of a delete), left
    // out when invalid or NULL, absent on a truncate.
    let expected: [Option<&str>; 14] = [
        Some(TP1),
        None,
        None,
        Some(TP2),
        Some(TP3),
        None,
        Some(TP2),
        Some(TP2),
        Some(TP3),
        Some(TP3),
        Some(TP3),
        None,
        Some(TP2),
        Some(TP2),
    ];
    for (i, (r, want)) in reads.iter().zip(expected).enumerate() {
        check(
            r.one("traceparent") == want && r.headers.get("traceparent").map_or(0, Vec::len) <= 1,
            format!(
                "record {i} traceparent {:?}, expected {want:?}",
                r.headers.get("traceparent")
            ),
        );
    }
    let log = siphon.log();
    check(
        log.matches("holds no valid W3C traceparent").count() == 1,
        format!("one warning for the table's invalid traceparents:\n{log}"),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A change written again after a crash (its first Kafka transaction was
/// aborted) carries the same headers as the first time: what consumers
/// deduplicate by must not depend on which attempt they see. The aborted
/// attempt is read with read_uncommitted (tansu hands aborted records to
/// such readers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_of_a_change_written_again_after_a_crash_are_the_same() {
    let bed = Bed::start("app").await;
    bed.pg.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text, traceparent text)",
    );
    let file = bed.connector(
        "again",
        "app",
        &["public.items"],
        "\n[correlation]\ntraceparent_column = \"traceparent\"\n",
    );
    // siphon writes through the Kafka proxy, so read_committed readers of
    // the proxy never see the aborted attempt (tansu alone shows it).
    let kafka = KafkaProxy::start(&bed.broker.bootstrap);
    let body = std::fs::read_to_string(&file).expect("connector file");
    std::fs::write(&file, body.replace(&bed.broker.bootstrap, &kafka.bootstrap))
        .expect("connector file through the proxy");
    let mut siphon = bed.siphon(&file);
    bed.wait_slot_active("app", "siphon_again").await;
    assert!(siphon.stop().success(), "{}", siphon.log());
    // The next start's first commit is this data's: it crashes just before.
    let mut crashing = bed.siphon_with_env(&file, &[("FAILPOINTS", "before_commit=return")]);
    bed.wait_slot_active("app", "siphon_again").await;
    bed.pg.psql(
        "app",
        &format!(
            "INSERT INTO items SELECT g, 'n' || g, '{TP1}' FROM generate_series(1, 50) g;
             UPDATE items SET name = 'x', traceparent = '{TP2}' WHERE id <= 10;
             DELETE FROM items WHERE id > 45;"
        ),
    );
    let status = crashing
        .wait(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| panic!("siphon did not crash at before_commit:\n{}", crashing.log()));
    assert!(!status.success(), "{}", crashing.log());
    let siphon = bed.siphon(&file);
    // 50 c, 10 u, 5 d + 5 tombstones, committed once.
    let topic = "again.public.items";
    poll_until(WAIT, "the changes committed", async || {
        let n = read_committed(&kafka.bootstrap, topic).len();
        assert!(n <= 70, "{n} records\n{}", siphon.log());
        (n == 70).then_some(())
    })
    .await;

    let (consumer, pending) = assign_all(
        &bed.broker.bootstrap,
        topic,
        &[("isolation.level", "read_uncommitted")],
    )
    .expect("topic");
    // Per key, events and tombstones apart, the headers in offset order:
    // the aborted attempt's records, then the committed attempt's.
    let mut seen: BTreeMap<(Vec<u8>, bool), Vec<HeaderMap>> = BTreeMap::new();
    drain_each(&consumer, topic, pending, |m| {
        let headers: HeaderMap = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = (m.key().unwrap_or_default().to_vec(), m.payload().is_some());
        seen.entry(key).or_default().push(headers);
    });
    // A key whose records both attempts hold in full has an even count;
    // one the crash cut short (records not yet sent) is left out.
    let mut twice = 0;
    let mut problems = Vec::new();
    for ((key, value), attempts) in &seen {
        if attempts.len() >= 2 && attempts.len() % 2 == 0 {
            let (first, second) = attempts.split_at(attempts.len() / 2);
            if first != second {
                problems.push(format!(
                    "key {key:?} (value: {value}): {first:?} then {second:?}"
                ));
            }
            twice += 1;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        twice >= 20,
        "only {twice} keys were seen in both attempts (aborted and committed): {seen:?}"
    );
}

/// `correlation.traceparent_message_prefix`: a transactional message gives
/// the events after it in its transaction their `traceparent`, also those
/// written after a crash inside the transaction (PostgreSQL sends the
/// message again, before the rest); the next transaction has none. The
/// messages themselves (a non-transactional one too, which gives no
/// transaction its context) are not published on the messages topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_message_gives_its_transactions_events_their_traceparent_across_a_crash() {
    let bed = Bed::start("tm").await;
    bed.pg
        .psql("tm", "CREATE TABLE t (id int PRIMARY KEY, v text);");
    let file = bed.connector(
        "tm",
        "tm",
        &["public.t"],
        "batch_max_events = 10\n\n[correlation]\ntraceparent_message_prefix = \"traceparent\"\n\n[messages]\nenabled = true\n",
    );
    let mut siphon = bed.siphon_with_env(&file, &[("FAILPOINTS", "after_commit=2*off->return")]);
    bed.wait_slot_active("tm", "siphon_tm").await;
    bed.pg.psql(
        "tm",
        &format!(
            "SELECT pg_logical_emit_message(false, 'traceparent', '{TP2}');
             BEGIN;
             INSERT INTO t VALUES (0, 'before the message');
             SELECT pg_logical_emit_message(true, 'traceparent', '{TP1}');
             INSERT INTO t SELECT i, 'x' FROM generate_series(1, 60) i;
             COMMIT;"
        ),
    );
    let status = siphon
        .wait(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| panic!("siphon did not crash at its fail point:\n{}", siphon.log()));
    assert!(!status.success());
    let siphon = bed.siphon(&file);
    bed.pg
        .psql("tm", "INSERT INTO t VALUES (100, 'next transaction');");
    let records = bed.wait_records("tm.public.t", 62, &siphon).await;
    for r in &records {
        let key = decode(&bed.client, r.key.as_deref().expect("key")).await.1;
        let id = int(field(&key, "id").expect("id"));
        let expected = (1..=60).contains(&id).then_some(TP1.as_bytes());
        assert_eq!(r.header("traceparent"), expected, "row {id}");
    }
    assert!(
        read_committed(&bed.broker.bootstrap, "tm.message").is_empty(),
        "trace-context messages are not published"
    );
}
