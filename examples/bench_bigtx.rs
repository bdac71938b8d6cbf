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

use std::process::{Command, Stdio};
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
    let pg = postgres::PgCluster::start_with(postgres::PgOptions {
        extra_conf: vec![
            "shared_buffers = '512MB'".into(),
            "max_wal_size = '4GB'".into(),
        ],
        ..postgres::PgOptions::default()
    });
    pg.create_database("bench");
    pg.psql(
        "bench",
        "CREATE TABLE items (id bigint PRIMARY KEY, qty int NOT NULL, name text NOT NULL,
                             price numeric(12,2) NOT NULL, at timestamptz NOT NULL);
         CREATE PUBLICATION bench_pub FOR TABLE items;
         SELECT pg_create_logical_replication_slot('baseline', 'pgoutput');",
    );
    let broker = kafka::Broker::start();
    let registry = registry::RegistryStandIn::start().await;

    // siphon's slot and topic exist before the workload: start it once and
    // stop it, so the timed run only streams.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.toml");
    std::fs::write(
        &file,
        format!(
            r#"name = "bench"
[postgres]
port = {port}
database = "bench"
user = "postgres"
publication = "bench_pub"
tables = ["public.items"]
[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "bench"
[registry]
url = "{registry}"
"#,
            port = pg.port(),
            bootstrap = broker.bootstrap,
            registry = registry.url
        ),
    )?;
    let siphon_bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("siphon"))
        .context("locating the siphon binary")?;
    let run_siphon = || {
        Command::new(&siphon_bin)
            .args(["run", "--http-addr", "127.0.0.1:0"])
            .arg(&file)
            .env(
                "RUST_LOG",
                std::env::var("SIPHON_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
    };
    let mut warmup = run_siphon()?;
    wait_for(
        &pg,
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'siphon_bench' AND active",
        "1",
    )?;
    pg.psql(
        "bench",
        "INSERT INTO items VALUES (0, 0, 'warm-up', 0, now())",
    );
    let warm_lsn = pg.psql("bench", "SELECT pg_current_wal_lsn()");
    wait_for(
        &pg,
        &format!(
            "SELECT confirmed_flush_lsn >= '{warm_lsn}' FROM pg_replication_slots WHERE slot_name = 'siphon_bench'"
        ),
        "t",
    )?;
    terminate(&mut warmup)?;

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
    let started = Instant::now();
    let status = Command::new(format!("{}/pg_recvlogical", postgres::PG_BIN))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "bench",
        ])
        .args([
            "--slot",
            "baseline",
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
        ])
        .args(["-o", "proto_version=1", "-o", "publication_names=bench_pub"])
        .args(["--endpos", &end_lsn])
        .status()?;
    let recvlogical = started.elapsed();
    if !status.success() {
        bail!("pg_recvlogical failed: {status}");
    }

    // siphon streams everything into Kafka.
    let started = Instant::now();
    let mut siphon = run_siphon()?;
    let mut peak_rss_kib = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", siphon.id())) {
            for line in status.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    peak_rss_kib = v
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse()
                        .unwrap_or(peak_rss_kib);
                }
            }
        }
        let done = pg.psql(
            "bench",
            &format!("SELECT confirmed_flush_lsn >= '{end_lsn}' FROM pg_replication_slots WHERE slot_name = 'siphon_bench'"),
        );
        if done == "t" {
            break;
        }
        if let Some(status) = siphon.try_wait()? {
            bail!("siphon exited: {status}");
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("siphon did not finish within 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let siphon_time = started.elapsed();
    terminate(&mut siphon)?;

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
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "machine: {cores} cores, {cpu}; ONE transaction of {rows} inserted rows; siphon wrote it in {kafka_txns} Kafka transactions (offset records at its commit LSN)"
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
fn wait_for(pg: &postgres::PgCluster, sql: &str, want: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.psql("bench", sql) != want {
        if Instant::now() > deadline {
            bail!("timed out waiting for {sql}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn terminate(child: &mut std::process::Child) -> anyhow::Result<()> {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    child.wait()?;
    Ok(())
}
