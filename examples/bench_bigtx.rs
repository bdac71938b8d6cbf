//! Big-transaction benchmark (run it with `scripts/bench-bigtx.sh`): ONE
//! PostgreSQL transaction of `BIGTX_ROWS` rows (default 10,000,000) streamed
//! by siphon into Kafka, split over many Kafka transactions, next to the
//! baseline measured in the same run on the same machine: `pg_recvlogical`
//! draining the same transaction with pgoutput to /dev/null (how fast
//! PostgreSQL emits it — siphon's ceiling).
//!
//! siphon's time runs from its start (the slot already holds the whole
//! transaction) until the slot's confirmed position passes the transaction's
//! end — siphon confirms only after the Kafka commit of its last part. Peak
//! RSS is the kernel's high-water mark (VmHWM in /proc/<pid>/status), read
//! while it runs: it must not grow with the transaction's size, because
//! neither the reader nor the writer holds more than the channel's and one
//! Kafka transaction's bounds.

#[path = "../tests/support/kafka.rs"]
mod kafka;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/registry.rs"]
mod registry;

mod bench;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use siphon::kafka::offsets::OffsetRecord;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::var("BIGTX_ROWS")
        .ok()
        .map(|v| v.replace('_', "").parse())
        .transpose()
        .context("BIGTX_ROWS must be a number of rows")?
        .unwrap_or(10_000_000);
    let bed = bench::StreamBed::start().await?;
    let (pg, broker) = (&bed.pg, &bed.broker);

    // The workload: one transaction.
    println!("writing {rows} rows in ONE transaction...");
    let started = Instant::now();
    pg.psql(
        "bench",
        &format!(
            "INSERT INTO items SELECT g, g % 1000, 'item number ' || g, (g % 100000) / 100.0, now()
               FROM generate_series(1, {rows}) g"
        ),
    );
    let end_lsn = pg.psql("bench", "SELECT pg_current_wal_lsn()");
    println!("  written in {:.1} s", started.elapsed().as_secs_f64());

    // Baseline 1: pg_recvlogical drains the same changes.
    let recvlogical = bed.recvlogical_to(&end_lsn)?;

    // siphon streams everything into Kafka.
    let (siphon_time, peak_rss_kib) = bed.stream_to(&end_lsn)?;

    // The offset records tell how the transaction was split, and the last
    // one must say all of it was written.
    let offsets: Vec<OffsetRecord> = kafka::read_committed(&broker.bootstrap, "siphon.offsets")
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"bench".as_slice()))
        .filter_map(|r| {
            r.value
                .as_deref()
                .and_then(|v| OffsetRecord::from_wire(v).ok())
        })
        .collect();
    let Some(done) = offsets
        .iter()
        .find(|o| o.txn_complete && o.index == Some(rows - 1))
    else {
        bail!("no offset record says the transaction's {rows} rows were all written");
    };
    let kafka_txns = offsets
        .iter()
        .filter(|o| o.commit_lsn == done.commit_lsn)
        .count();

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let machine = bench::machine();
    println!();
    println!(
        "machine: {machine}; ONE transaction of {rows} inserted rows; siphon wrote it in {kafka_txns} Kafka transactions (offset records at its commit LSN)"
    );
    println!();
    println!(
        "| rows in the transaction | pg_recvlogical → /dev/null | siphon → tansu, committed and acked | siphon peak RSS |"
    );
    println!("| ---: | ---: | ---: | ---: |");
    println!(
        "| {rows} | {:.1} s ({:.0} rows/s) | {:.1} s ({:.0} rows/s) | {:.1} MiB |",
        recvlogical.as_secs_f64(),
        rate(recvlogical),
        siphon_time.as_secs_f64(),
        rate(siphon_time),
        peak_rss_kib as f64 / 1024.0
    );
    Ok(())
}
