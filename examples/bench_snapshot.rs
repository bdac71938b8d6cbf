//! Snapshot benchmark (run it with `scripts/bench-snapshot.sh`): how fast
//! siphon's initial snapshot moves a table into Kafka, next to baselines
//! measured in the same run on the same table:
//!
//! - `COPY items TO STDOUT (FORMAT binary)` into /dev/null through psql:
//!   how fast PostgreSQL hands out the table (the issue's yardstick);
//! - the same in text format, which is what siphon reads.
//!
//! siphon's time runs from its start (no slot, no offset: mode `initial`)
//! until `siphon_snapshot_rows_total` says every row is committed to Kafka.
//! Peak RSS is siphon's `VmHWM` from /proc.

#[path = "../tests/support/kafka.rs"]
mod kafka;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/registry.rs"]
mod registry;

#[allow(dead_code)]
mod bench;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(default))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = arg("--rows", 5_000_000)?;
    let threads: u64 = arg("--threads", 4)?;
    let chunk_pages: u64 = arg("--chunk-pages", 256)?;
    let pg = postgres::PgCluster::start_with(postgres::PgOptions {
        extra_conf: vec![
            "shared_buffers = '1GB'".into(),
            "max_wal_size = '4GB'".into(),
        ],
        ..postgres::PgOptions::default()
    });
    pg.create_database("bench");
    println!("writing {rows} rows...");
    let started = Instant::now();
    pg.psql(
        "bench",
        &format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, qty int NOT NULL, name text NOT NULL,
                                 price numeric(12,2) NOT NULL, at timestamptz NOT NULL);
             INSERT INTO items SELECT g, g % 1000, 'item number ' || g, (g % 100000) / 100.0, now()
               FROM generate_series(1, {rows}) g;
             VACUUM ANALYZE items;"
        ),
    );
    let size = pg.psql("bench", "SELECT pg_size_pretty(pg_relation_size('items'))");
    println!(
        "  written in {:.1} s ({size} of heap)",
        started.elapsed().as_secs_f64()
    );

    // Baselines: COPY out to /dev/null, binary then text (warm cache for both).
    let copy = |format: &str| -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = Command::new(format!("{}/psql", postgres::CLIENT_BIN))
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &pg.port().to_string()])
            .args(["-U", "postgres", "-d", "bench", "-c"])
            .arg(format!("COPY items TO STDOUT (FORMAT {format})"))
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("psql COPY failed: {status}");
        }
        Ok(started.elapsed())
    };
    copy("binary")?; // warm-up: the table into shared buffers / page cache
    let binary = copy("binary")?;
    let text = copy("text")?;

    let broker = kafka::Broker::start();
    let registry = registry::RegistryStandIn::start().await;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.toml");
    let http_port = kafka::free_port();
    std::fs::write(
        &file,
        format!(
            r#"name = "bench"
[postgres]
port = {port}
database = "bench"
user = "postgres"
tables = ["public.items"]
[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "bench"
[registry]
url = "{registry}"
[snapshot]
max_threads = {threads}
chunk_pages = {chunk_pages}
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
    let started = Instant::now();
    let mut siphon = Command::new(&siphon_bin)
        .args(["run", "--http-addr", &format!("127.0.0.1:{http_port}")])
        .arg(&file)
        .env(
            "RUST_LOG",
            std::env::var("SIPHON_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()?;
    let metrics = format!("http://127.0.0.1:{http_port}/metrics");
    let sample = r#"siphon_snapshot_rows_total{connector="bench",table="public.items"} "#;
    let client = reqwest::Client::new();
    let mut peak_rss_kib = 0u64;
    loop {
        peak_rss_kib = bench::peak_rss_kib(&siphon).unwrap_or(peak_rss_kib);
        let done = match client.get(&metrics).send().await {
            Ok(r) => r
                .text()
                .await
                .ok()
                .and_then(|body| {
                    body.lines()
                        .find_map(|l| l.strip_prefix(sample).map(|v| v.trim().to_owned()))
                })
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0),
            Err(_) => 0.0,
        };
        if done >= rows as f64 {
            break;
        }
        if let Some(status) = siphon.try_wait()? {
            bail!("siphon exited: {status}");
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("siphon did not finish within an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let siphon_time = started.elapsed();
    bench::terminate(&mut siphon)?;

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let machine = bench::machine();
    println!();
    println!(
        "machine: {machine}; {rows} rows ({size} heap), siphon max_threads = {threads}, chunk_pages = {chunk_pages}"
    );
    println!();
    println!("| what | time | rows/s |");
    println!("| --- | ---: | ---: |");
    println!(
        "| `COPY items TO STDOUT (FORMAT binary)` → /dev/null | {:.2} s | {:.0} |",
        binary.as_secs_f64(),
        rate(binary)
    );
    println!(
        "| `COPY items TO STDOUT` (text) → /dev/null | {:.2} s | {:.0} |",
        text.as_secs_f64(),
        rate(text)
    );
    println!(
        "| **siphon initial snapshot: PostgreSQL → Avro → tansu, committed** | {:.2} s | {:.0} |",
        siphon_time.as_secs_f64(),
        rate(siphon_time)
    );
    println!();
    println!("siphon peak RSS: {:.1} MiB", peak_rss_kib as f64 / 1024.0);
    Ok(())
}
