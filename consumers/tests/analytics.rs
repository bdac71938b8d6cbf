//! The analytics consumer converges: the Parquet current-state view holds
//! exactly the tables' rows after crashes of siphon and of the consumer,
//! and a truncate; the change log holds every change record of the topics
//! exactly once.

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use std::collections::BTreeSet;

use common::{Consumer, Rows, TABLES, converges};
use siphon_consumers::analytics;
use support::bed::Bed;
use support::kafka::read_committed;
use support::kafka_proxy::KafkaProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parquet_state_equals_the_tables_and_the_log_holds_each_change_once() {
    let bed = Bed::start("shop").await;
    let kafka = KafkaProxy::start(&bed.broker.bootstrap);
    let dir = bed.dir.path().join("analytics");
    let mut consumer = Consumer::new(
        env!("CARGO_BIN_EXE_analytics"),
        &bed,
        &kafka.bootstrap,
        &["--out-dir".to_owned(), dir.display().to_string()],
    );
    converges(&bed, &kafka, &mut consumer, || {
        analytics::read_state(&dir).unwrap_or_else(|_| Rows::new())
    })
    .await;

    // The change log: every non-tombstone record of the table topics, each
    // once, in offset order per partition.
    let log = analytics::read_log(&dir).expect("read the change log");
    let mut want = BTreeSet::new();
    for t in TABLES {
        let topic = format!("shop.{t}");
        for r in read_committed(&kafka.bootstrap, &topic) {
            if r.value.is_some() {
                want.insert((topic.clone(), r.partition, r.offset));
            }
        }
    }
    let got: Vec<(String, i32, i64)> = log
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.offset))
        .collect();
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(
        got.len(),
        unique.len(),
        "the change log holds a record twice"
    );
    assert_eq!(unique, want, "the change log differs from the topics");
    assert!(
        log.iter().any(|r| r.op == "t" && r.table == "public.w0"),
        "no truncate in the log"
    );
    assert!(log.iter().any(|r| r.op == "r") && log.iter().any(|r| r.op == "d"));
}
