//! What the streaming benchmarks (bench_stream, bench_bigtx) share: a
//! throwaway PostgreSQL with the `items` table, its publication and a
//! `baseline` pgoutput slot, tansu, the registry stand-in, a connector file,
//! and a siphon that has already created its slot and topic (a warm-up run),
//! so the timed run only streams. Included with `#[path]`; the example
//! declares the `kafka`, `postgres` and `registry` support modules.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{kafka, postgres, registry};

pub struct StreamBed {
    pub pg: postgres::PgCluster,
    pub broker: kafka::Broker,
    /// Kept running for siphon.
    _registry: registry::RegistryStandIn,
    _dir: tempfile::TempDir,
    file: PathBuf,
    siphon_bin: PathBuf,
}

impl StreamBed {
    pub async fn start() -> anyhow::Result<StreamBed> {
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
        let bed = StreamBed {
            pg,
            broker,
            _registry: registry,
            _dir: dir,
            file,
            siphon_bin,
        };
        bed.warm_up()?;
        Ok(bed)
    }

    /// Starts siphon on the bench connector (log level from
    /// `SIPHON_BENCH_LOG`, default warn).
    pub fn siphon(&self) -> std::io::Result<Child> {
        Command::new(&self.siphon_bin)
            .args(["run", "--http-addr", "127.0.0.1:0"])
            .arg(&self.file)
            .env(
                "RUST_LOG",
                std::env::var("SIPHON_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
    }

    /// siphon's slot and topic exist before the workload: start it once,
    /// let it write one row, and stop it.
    fn warm_up(&self) -> anyhow::Result<()> {
        let mut warmup = self.siphon()?;
        wait_for(
            &self.pg,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'siphon_bench' AND active",
            "1",
        )?;
        self.pg.psql(
            "bench",
            "INSERT INTO items VALUES (0, 0, 'warm-up', 0, now())",
        );
        let warm_lsn = self.pg.psql("bench", "SELECT pg_current_wal_lsn()");
        wait_for(
            &self.pg,
            &format!(
                "SELECT confirmed_flush_lsn >= '{warm_lsn}' FROM pg_replication_slots WHERE slot_name = 'siphon_bench'"
            ),
            "t",
        )?;
        terminate(&mut warmup)
    }
}

impl StreamBed {
    /// Baseline: `pg_recvlogical` drains the `baseline` slot with pgoutput to
    /// /dev/null up to `end_lsn` — how fast PostgreSQL emits the changes.
    pub fn recvlogical_to(&self, end_lsn: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = Command::new(format!("{}/pg_recvlogical", postgres::CLIENT_BIN))
            .args(["-h", "127.0.0.1", "-p", &self.pg.port().to_string()])
            .args(["-U", "postgres", "-d", "bench", "--slot", "baseline"])
            .args(["--start", "--no-loop", "-f", "/dev/null"])
            .args(["-o", "proto_version=1", "-o", "publication_names=bench_pub"])
            .args(["--endpos", end_lsn])
            .status()?;
        let took = started.elapsed();
        if !status.success() {
            bail!("pg_recvlogical failed: {status}");
        }
        Ok(took)
    }

    /// Runs siphon until its slot confirmed `end_lsn` (everything before it
    /// committed to Kafka), then stops it: the time taken and siphon's peak
    /// RSS in KiB.
    pub fn stream_to(&self, end_lsn: &str) -> anyhow::Result<(Duration, u64)> {
        let started = Instant::now();
        let mut siphon = self.siphon()?;
        let mut peak = 0;
        let done_sql = format!(
            "SELECT confirmed_flush_lsn >= '{end_lsn}' FROM pg_replication_slots WHERE slot_name = 'siphon_bench'"
        );
        loop {
            peak = peak_rss_kib(&siphon).unwrap_or(peak);
            if self.pg.psql("bench", &done_sql) == "t" {
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
        let took = started.elapsed();
        terminate(&mut siphon)?;
        Ok((took, peak))
    }
}

/// The process's peak resident set so far (VmHWM from /proc), in KiB.
pub fn peak_rss_kib(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// Polls `sql` in the bench database until it answers `want` (2 min).
pub fn wait_for(pg: &postgres::PgCluster, sql: &str, want: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.psql("bench", sql) != want {
        if Instant::now() > deadline {
            bail!("timed out waiting for {sql}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// SIGTERM, then wait for the exit.
pub fn terminate(child: &mut Child) -> anyhow::Result<()> {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    child.wait()?;
    Ok(())
}

/// "N cores, CPU model" for the report.
pub fn machine() -> String {
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
    format!("{cores} cores, {cpu}")
}
