//! The search consumer converges: the tantivy index holds exactly one
//! document per row of the tables after crashes of siphon and of the
//! consumer, and a truncate; and it finds rows by their text.

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use common::{Consumer, Rows, converges};
use siphon_consumers::search;
use support::bed::Bed;
use support::kafka_proxy::KafkaProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_equals_the_tables_after_crashes_and_a_truncate() {
    let bed = Bed::start("shop").await;
    let kafka = KafkaProxy::start(&bed.broker.bootstrap);
    let dir = bed.dir.path().join("index");
    let mut consumer = Consumer::new(
        env!("CARGO_BIN_EXE_search"),
        &bed,
        &kafka.bootstrap,
        &["--index-dir".to_owned(), dir.display().to_string()],
    );
    converges(&bed, &kafka, &mut consumer, || {
        search::rows(&dir).unwrap_or_else(|_| Rows::new())
    })
    .await;
    let hits = search::search(&dir, "needle", 10).expect("search");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].0, "public.w1");
    assert_eq!(hits[0].1["pad"], "a needle in the haystack");
    assert_eq!(hits[0].1["id"], 2_000_000_000);
}
