//! The stored offset is read to the end of the log, even while another
//! connector's transaction on the shared offsets topic is open. Runs
//! through the faithful Kafka proxy, so read_committed means what it means
//! on a correct broker (DESIGN.md, "Known broker gaps").

mod support;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use support::bed::{Bed, WAIT};
use support::kafka::read_committed;
use support::kafka_proxy::KafkaProxy;
use support::poll_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_of_another_connector_does_not_hide_the_newest_offset() {
    let bed = Bed::start("shop").await;
    bed.pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY)");
    let proxy = KafkaProxy::start(&bed.broker.bootstrap);
    let file = bed.connector("shop", "shop", &["public.t"], "");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&bed.broker.bootstrap, &proxy.bootstrap);
    std::fs::write(&file, text).unwrap();
    let topic = "shop.public.t";
    let count = || read_committed(&proxy.bootstrap, topic).len();

    let mut s = bed.siphon(&file);
    bed.wait_slot_active("shop", "siphon_shop").await;
    bed.pg
        .psql("shop", "INSERT INTO t SELECT generate_series(1, 5)");
    poll_until(WAIT, "first 5 events", async || {
        (count() == 5).then_some(())
    })
    .await;

    // Another connector (another transactional id) opens a transaction on
    // the shared offsets topic and keeps it open.
    let other: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &proxy.bootstrap)
        .set("transactional.id", "siphon-other")
        .create()
        .unwrap();
    other.init_transactions(Duration::from_secs(30)).unwrap();
    other.begin_transaction().unwrap();
    other
        .send(
            BaseRecord::to("siphon.offsets")
                .key("other")
                .payload("in flight"),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    other.flush(Duration::from_secs(10)).unwrap();

    // This connector commits newer offsets after that transaction began ...
    bed.pg
        .psql("shop", "INSERT INTO t SELECT generate_series(6, 10)");
    // (tansu holds read_committed readers of every partition back while any
    // transaction is open, so count what was written, committed or not:
    // siphon commits each batch before it writes the next.)
    let written = || {
        support::kafka::read_committed_with(
            &proxy.bootstrap,
            topic,
            &[("isolation.level", "read_uncommitted")],
        )
        .len()
    };
    poll_until(WAIT, "10 events written", async || {
        (written() == 10).then_some(())
    })
    .await;
    assert!(s.stop().success());

    // A stop asked for while the offset read waits for that transaction is
    // honoured at once: nothing is open yet, so there is nothing to finish.
    let mut waiting = bed.siphon(&file);
    poll_until(WAIT, "the offset read to wait", async || {
        waiting
            .log()
            .contains("waiting for an open transaction on the offsets topic")
            .then_some(())
    })
    .await;
    let asked = std::time::Instant::now();
    assert!(waiting.stop().success(), "{}", waiting.log());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the stop took {:?}:\n{}",
        asked.elapsed(),
        waiting.log()
    );

    // ... and restarts while it is still open. Reading only up to the last
    // stable offset would find an older offset and write 6..10 again.
    let s = bed.siphon(&file);
    poll_until(WAIT, "siphon to start", async || {
        s.http_get("/health/live").await
    })
    .await;
    other.commit_transaction(Duration::from_secs(30)).unwrap();
    bed.wait_ready_status(&s, 200).await;
    bed.pg.psql("shop", "INSERT INTO t VALUES (11)");
    poll_until(WAIT, "11 events", async || {
        let n = count();
        assert!(n <= 11, "duplicates after the restart:\n{}", s.log());
        (n == 11).then_some(())
    })
    .await;
    assert!(proxy.errors().is_empty(), "{:?}", proxy.errors());
}
