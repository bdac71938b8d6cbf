//! The fault-injection harness: a sustained write workload over several
//! tables (multi-statement transactions, a transaction of 100k rows) while
//! siphon is killed, crashed at named protocol steps, cut off from each
//! service, fenced by a second instance and told its Kafka commit failed.
//! After each run a read_committed consumer's view is compared with ground
//! truth from a second logical slot (`test_decoding`): every change once,
//! nothing extra, per-key order kept, every final row equal to the table
//! (`support::truth`).
//!
//! siphon and the checking consumer both go through the faithful Kafka
//! proxy (tansu alone shows aborted records to read_committed consumers);
//! PostgreSQL and the registry are reached through plain TCP proxies, so
//! their network can be cut or stalled too.
//!
//! Needs the binary built with `--features failpoints` (scripts/test.sh
//! does it). The `long_run` test is the long version, run by
//! scripts/faults-long.sh with its knobs in the environment.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use support::bed::{Bed, WAIT};
use support::kafka_proxy::KafkaProxy;
use support::poll_until;
use support::siphon::Siphon;
use support::tcp_proxy::TcpProxy;
use support::truth::{self, Verdict};
use support::workload::{self, Workload, WorkloadSpec};

const DB: &str = "app";

/// Generous: catching up after a burst of faults on a loaded 2-core machine.
const CATCH_UP: Duration = Duration::from_secs(600);

/// One fault run: services, proxies, the connector file, the workload, and
/// the faults injected so far.
struct Run {
    bed: Bed,
    kafka: KafkaProxy,
    pg_net: TcpProxy,
    registry_net: TcpProxy,
    name: String,
    tables: Vec<String>,
    file: PathBuf,
    workload: Option<Workload>,
    faults: BTreeMap<&'static str, u64>,
    peak_rss_kb: u64,
    rng: rand::rngs::StdRng,
}

impl Run {
    /// Starts the services and a first siphon, waits until it owns its
    /// slot, creates the truth slot, and starts the workload.
    async fn start(name: &str, tables: usize, extra_kafka: &str) -> (Run, Siphon) {
        let bed = Bed::start(DB).await;
        workload::create_tables(&bed.pg, DB, tables);
        let kafka = KafkaProxy::start(&bed.broker.bootstrap);
        let pg_net = TcpProxy::start(&format!("127.0.0.1:{}", bed.pg.port()));
        let registry_addr = bed
            .registry
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let registry_net = TcpProxy::start(&registry_addr);
        let table_names = workload::table_names(tables);
        let listed = table_names
            .iter()
            .map(|t| format!("\"public.{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let body = format!(
            r#"name = "{name}"

[postgres]
host = "127.0.0.1"
port = {pg_port}
database = "{DB}"
user = "{user}"
tables = [{listed}]
status_interval_ms = 500
connect_timeout_ms = 5000

[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "{name}"
batch_linger_ms = 50
idle_offset_interval_ms = 500
transaction_timeout_ms = 20000
commit_timeout_ms = 10000
{extra_kafka}

[registry]
url = "http://127.0.0.1:{registry_port}"
request_timeout_ms = 3000
"#,
            pg_port = pg_net.port,
            user = bed.pg.user(),
            bootstrap = kafka.bootstrap,
            registry_port = registry_net.port,
        );
        let file = bed.dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, body).expect("connector file");
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        eprintln!("{name}: FAULTS_SEED={seed}");
        let mut run = Run {
            bed,
            kafka,
            pg_net,
            registry_net,
            name: name.to_owned(),
            tables: table_names,
            file,
            workload: None,
            faults: BTreeMap::new(),
            peak_rss_kb: 0,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        };
        let siphon = run.siphon(&[]);
        run.bed.wait_slot_active(DB, &run.slot()).await;
        truth::create_truth_slot(&run.bed.pg, DB);
        let pause = std::env::var("FAULTS_PAUSE_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        run.workload = Some(Workload::start(WorkloadSpec {
            conn: run.bed.pg.connection_string(DB),
            tables,
            seed,
            pause: Duration::from_millis(pause),
            big_rows: 100_000,
        }));
        (run, siphon)
    }

    fn slot(&self) -> String {
        format!("siphon_{}", self.name)
    }

    fn siphon(&self, env: &[(&str, &str)]) -> Siphon {
        self.bed.siphon_with_env(&self.file, env)
    }

    fn workload(&self) -> &Workload {
        self.workload.as_ref().expect("workload running")
    }

    fn count(&mut self, fault: &'static str) {
        *self.faults.entry(fault).or_default() += 1;
    }

    fn note_rss(&mut self, s: &Siphon) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            self.peak_rss_kb = self.peak_rss_kb.max(kb);
        }
    }

    /// SIGKILL and start a new instance.
    fn kill_restart(&mut self, s: &mut Siphon) {
        self.note_rss(s);
        s.kill();
        self.count("sigkill");
        *s = self.siphon(&[]);
    }

    async fn sleep_random(&mut self, lo_ms: u64, hi_ms: u64) {
        let ms = self.rng.random_range(lo_ms..=hi_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Waits for some workload progress, so faults land on a moving stream.
    async fn progress(&self, txns: u64) {
        let n = self.workload().stats().committed_txns + txns;
        self.workload().wait_committed(n, WAIT).await;
    }

    /// Stops the workload, lets `s` catch up with the WAL, stops it
    /// gracefully and compares. Panics unless the verdict is clean.
    async fn finish(mut self, mut s: Siphon) -> Verdict {
        let stats = self.workload.take().expect("workload").stop().await;
        let end = self.bed.pg.psql(DB, "SELECT pg_current_wal_lsn()");
        let slot = self.slot();
        let sql = format!(
            "SELECT confirmed_flush_lsn >= '{end}' FROM pg_replication_slots WHERE slot_name = '{slot}'"
        );
        let pg = &self.bed.pg;
        poll_until(CATCH_UP, "siphon to catch up with the WAL", async || {
            (pg.psql(DB, &sql) == "t").then_some(())
        })
        .await;
        self.note_rss(&s);
        let status = s.stop();
        assert!(
            status.success(),
            "siphon did not stop cleanly:\n{}",
            tail(&s.log())
        );
        self.count("graceful_stop");
        let truth = truth::truth_history(&self.bed.pg, DB, &self.tables, true).await;
        let (kafka, records) = truth::kafka_history(
            &self.kafka.bootstrap,
            &self.bed.client,
            &self.name,
            &self.tables,
        )
        .await;
        let state = truth::table_state(&self.bed.pg, DB, &self.tables).await;
        let verdict = truth::compare(&truth, &kafka, records, &state);
        println!(
            "FAULTS {}: {:?}; workload {stats:?}; peak siphon RSS {} kB; {verdict}",
            self.name, self.faults, self.peak_rss_kb
        );
        assert!(
            verdict.clean(),
            "{}: {verdict}\nsiphon log tail:\n{}",
            self.name,
            tail(&s.log())
        );
        assert_eq!(
            self.kafka.errors(),
            Vec::<String>::new(),
            "kafka proxy errors"
        );
        assert!(verdict.changes > 0, "the workload changed nothing");
        verdict
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Waits until `s` exits by itself; returns its log.
fn wait_exit(s: &mut Siphon, what: &str) -> String {
    let status = s
        .wait(WAIT)
        .unwrap_or_else(|| panic!("siphon did not exit ({what}):\n{}", tail(&s.log())));
    assert!(!status.success(), "siphon exited cleanly ({what})");
    s.log()
}

/// SIGKILLs at random moments — during start-up, mid-batch, around
/// commits and acks, during a 100k-row transaction — and a graceful
/// stop/start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let (mut run, mut s) = Run::start("kills", 3, "batch_max_events = 500").await;
    run.progress(20).await;
    for i in 0..12 {
        if i == 3 {
            run.workload().request_big();
        }
        run.sleep_random(200, 1500).await;
        run.kill_restart(&mut s);
        if i == 6 {
            // A graceful stop and start in the middle of the stream.
            run.progress(10).await;
            assert!(s.stop().success(), "graceful stop:\n{}", tail(&s.log()));
            run.count("graceful_stop");
            s = run.siphon(&[]);
        }
    }
    run.workload().wait_big_done(CATCH_UP).await;
    run.progress(20).await;
    let v = run.finish(s).await;
    assert!(v.changes > 100_000, "the big transaction is in: {v}");
}

/// A crash pinned at every named step of the protocol (fail points), and
/// Kafka commits that fail — before committing, and after committing
/// (outcome unknown): siphon must not retry them blindly but start over
/// from the stored offset with a new producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_protocol_step_and_failed_commits() {
    let (mut run, mut s) = Run::start("steps", 2, "batch_max_events = 50").await;
    run.progress(20).await;
    use siphon::failpoint::*;
    for point in [
        BEFORE_PRODUCE,
        MID_BATCH,
        BEFORE_COMMIT,
        DURING_COMMIT,
        AFTER_COMMIT,
        AFTER_ACK,
    ] {
        // Let it pass the point a few times first.
        let skip = run.rng.random_range(2..8);
        let arm = format!("{point}={skip}*off->return");
        run.note_rss(&s);
        s.kill();
        s = run.siphon(&[("FAILPOINTS", &arm)]);
        let log = wait_exit(&mut s, point);
        assert!(
            log.contains(&format!("fail point {point}: aborting")),
            "{point} did not fire:\n{}",
            tail(&log)
        );
        run.count(point);
    }
    // Commit failures: reported after committing, then before.
    s = run.siphon(&[(
        "FAILPOINTS",
        &format!("{COMMIT_FAILS}=3*off->1*return(after)->5*off->1*return"),
    )]);
    let sref = &s;
    poll_until(WAIT, "two injected commit failures", async || {
        let failed = sref
            .metric("siphon_kafka_transactions_total{connector=\"steps\",outcome=\"failed\"}")
            .await
            .unwrap_or(0.0);
        (failed >= 2.0).then_some(())
    })
    .await;
    run.count("commit_fails_after_commit");
    run.count("commit_fails_before_commit");
    run.progress(20).await;
    run.finish(s).await;
}

/// Network cuts and stalls to each service, a lost EndTxn answer (commit
/// outcome unknown), the registry down across a restart, and PostgreSQL
/// restarted with `fast` and `immediate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_and_service_faults() {
    let (mut run, mut s) = Run::start("net", 3, "").await;
    run.progress(20).await;

    run.kafka.cut();
    run.count("kafka_cut");
    run.progress(10).await;

    run.kafka.stall(true);
    run.sleep_random(1000, 3000).await;
    run.kafka.stall(false);
    run.count("kafka_stall");
    run.progress(10).await;

    run.kafka.cut_at_end_txn(1);
    let k = &run.kafka;
    poll_until(WAIT, "an EndTxn answer swallowed", async || {
        (k.end_txn_cuts() == 1).then_some(())
    })
    .await;
    run.count("commit_outcome_unknown");
    run.progress(10).await;

    run.pg_net.cut();
    run.count("postgres_cut");
    run.progress(10).await;

    run.pg_net.stall(true);
    run.sleep_random(1000, 3000).await;
    run.pg_net.stall(false);
    run.count("postgres_stall");
    run.progress(10).await;

    // The registry unreachable across a restart: siphon cannot register
    // its schemas, waits, and resumes when it is back.
    run.registry_net.set_down(true);
    run.kill_restart(&mut s);
    run.sleep_random(2000, 4000).await;
    run.registry_net.set_down(false);
    run.count("registry_down");
    run.progress(10).await;

    run.bed.registry.set_unavailable(true);
    run.kill_restart(&mut s);
    run.sleep_random(2000, 4000).await;
    run.bed.registry.set_unavailable(false);
    run.count("registry_503");
    run.progress(10).await;

    for mode in ["immediate", "fast"] {
        run.bed.pg.stop(mode);
        run.sleep_random(200, 1000).await;
        run.bed.pg.start_again();
        run.count(if mode == "fast" {
            "postgres_restart_fast"
        } else {
            "postgres_restart_immediate"
        });
        run.progress(10).await;
    }

    run.finish(s).await;
}

/// A second siphon started with the same connector: each instance's
/// producer start fences the other's, the fenced one stops with a fatal
/// error, and exactly one goes on writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_is_fenced_and_exactly_one_writes() {
    let (mut run, mut first) = Run::start("fence", 2, "").await;
    run.progress(20).await;
    let mut second = run.siphon(&[]);
    let deadline = std::time::Instant::now() + WAIT * 2;
    let first_lost = loop {
        if first.wait(Duration::ZERO).is_some() {
            break true;
        }
        if second.wait(Duration::ZERO).is_some() {
            break false;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "neither instance was fenced\n--- first ---\n{}\n--- second ---\n{}",
            warnings(&first.log()),
            warnings(&second.log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (mut loser, winner) = if first_lost {
        (first, second)
    } else {
        (second, first)
    };
    let log = loser.log();
    assert!(
        log.contains("was fenced"),
        "stopped without a fencing error:\n{}",
        warnings(&log)
    );
    run.count("fenced");
    // The winner keeps streaming and writing.
    run.progress(30).await;
    let mut winner = winner;
    assert!(
        winner.wait(Duration::ZERO).is_none(),
        "the other instance stopped too:\n{}",
        warnings(&winner.log())
    );
    loser.kill();
    run.finish(winner).await;
}

/// WARN and ERROR lines of a siphon log.
fn warnings(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect::<Vec<_>>()
        .join("\n")
}
