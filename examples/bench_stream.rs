//! Streaming benchmark (run it with `scripts/bench-stream.sh`): how fast
//! siphon moves changes from PostgreSQL into Kafka, next to two baselines
//! measured in the same run on the same machine:
//!
//! - `pg_recvlogical` draining the same changes with pgoutput to /dev/null:
//!   how fast PostgreSQL can emit them (siphon's ceiling);
//! - a raw transactional producer writing the same number of records of the
//!   same size to the same broker: how fast the broker can take them.
//!
//! siphon's time runs from its start (slot already holding every change)
//! until the slot's confirmed position passes the end of the workload —
//! siphon confirms only after the Kafka commit, so that is "all of it
//! durably in Kafka". Peak RSS is read from /proc at the end.

#[path = "../tests/support/kafka.rs"]
mod kafka;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/registry.rs"]
mod registry;

mod bench;

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::args()
        .skip_while(|a| a != "--rows")
        .nth(1)
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(200_000);
    let per_txn: u64 = 1_000;
    let bed = bench::StreamBed::start().await?;
    let (pg, broker) = (&bed.pg, &bed.broker);

    // The workload: `rows` inserts in transactions of `per_txn`.
    println!("writing {rows} rows in transactions of {per_txn}...");
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let n = per_txn.min(rows - written);
        pg.psql(
            "bench",
            &format!(
                "INSERT INTO items SELECT g, g % 1000, 'item number ' || g, (g % 100000) / 100.0, now()
                   FROM generate_series({}, {}) g",
                written + 1,
                written + n
            ),
        );
        written += n;
    }
    let end_lsn = pg.psql("bench", "SELECT pg_current_wal_lsn()");
    println!("  written in {:.1} s", started.elapsed().as_secs_f64());

    // Baseline 1: pg_recvlogical drains the same changes.
    let recvlogical = bed.recvlogical_to(&end_lsn)?;

    // siphon streams everything into Kafka.
    let (siphon_time, peak_rss_kib) = bed.stream_to(&end_lsn)?;

    // Baseline 2: a raw transactional producer writes as many records of
    // the same size to the same broker.
    let sample = kafka::read_committed(&broker.bootstrap, "bench.public.items");
    let avg_value = sample
        .iter()
        .filter_map(|r| r.value.as_ref())
        .map(Vec::len)
        .sum::<usize>()
        / sample.len().max(1);
    let payload = vec![b'x'; avg_value];
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("transactional.id", "bench-raw")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < rows {
        producer.begin_transaction()?;
        let n = 10_000.min(rows - sent);
        for i in 0..n {
            let key = (sent + i).to_be_bytes();
            let mut record = BaseRecord::to("bench.raw")
                .key(&key[..])
                .payload(&payload[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        producer.commit_transaction(Duration::from_secs(60))?;
        sent += n;
    }
    let raw = started.elapsed();

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let machine = bench::machine();
    println!();
    println!(
        "machine: {machine}; {rows} inserted rows in transactions of {per_txn}, {avg_value}-byte Avro values"
    );
    println!();
    println!("| what | time | rows/s |");
    println!("| --- | ---: | ---: |");
    println!(
        "| pg_recvlogical → /dev/null (PostgreSQL's emit ceiling) | {:.2} s | {:.0} |",
        recvlogical.as_secs_f64(),
        rate(recvlogical)
    );
    println!(
        "| raw transactional producer → tansu (broker ceiling) | {:.2} s | {:.0} |",
        raw.as_secs_f64(),
        rate(raw)
    );
    println!(
        "| **siphon: PostgreSQL → Avro → tansu, committed and acked** | {:.2} s | {:.0} |",
        siphon_time.as_secs_f64(),
        rate(siphon_time)
    );
    println!();
    println!("siphon peak RSS: {:.1} MiB", peak_rss_kib as f64 / 1024.0);
    Ok(())
}
