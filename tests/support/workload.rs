//! A sustained write workload for the fault tests: inserts, updates and
//! deletes over several tables in multi-statement transactions, plus
//! transactions of 100k+ rows on request. It keeps going through
//! PostgreSQL restarts (reconnecting), because which of its transactions
//! committed is decided by the ground-truth slot (`truth`), not by it.
//!
//! Tables `w0..wN`: `id int primary key, v bigint not null, pad text not
//! null`. Every insert and update sets `v` from one sequence, so each row
//! image is unique and the checker can tell a duplicate from a repeat.
//! Keys are never updated.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::{RngExt, SeedableRng};

use super::postgres::PgCluster;

/// First id of the rows of big transactions (ordinary ids stay below it).
const BIG_ID_BASE: i64 = 100_000_000;

/// Table names `w0..w{n-1}` (schema `public`).
pub fn table_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("w{i}")).collect()
}

/// Creates the workload's tables and sequence in `db`.
pub fn create_tables(pg: &PgCluster, db: &str, n: usize) {
    let mut sql = String::from("CREATE SEQUENCE wl_v;\n");
    for t in table_names(n) {
        sql.push_str(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v bigint NOT NULL, pad text NOT NULL);\n"
        ));
    }
    pg.psql(db, &sql);
}

/// What the workload did, as far as it knows (commits whose reply was lost
/// count as failed here; the truth slot knows better).
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkloadStats {
    pub committed_txns: u64,
    pub failed_txns: u64,
    pub big_txns: u64,
}

struct Shared {
    stop: AtomicBool,
    paused: AtomicBool,
    /// The loop saw `paused` and holds between transactions.
    parked: AtomicBool,
    big_requests: AtomicU64,
    committed: AtomicU64,
    failed: AtomicU64,
    big: AtomicU64,
}

/// A running workload.
pub struct Workload {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub conn: String,
    pub tables: usize,
    pub seed: u64,
    /// Pause between transactions.
    pub pause: Duration,
    /// Rows of a big transaction.
    pub big_rows: i64,
}

impl Workload {
    pub fn start(spec: WorkloadSpec) -> Workload {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            big_requests: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            big: AtomicU64::new(0),
        });
        let task = tokio::spawn(run(spec, Arc::clone(&shared)));
        Workload { shared, task }
    }

    /// Holds the workload after the transaction in progress until
    /// [`Workload::resume`]; returns once nothing is in flight.
    pub async fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
        while !self.shared.parked.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
        self.shared.parked.store(false, Ordering::SeqCst);
    }

    /// Asks for one more big transaction (done between small ones).
    pub fn request_big(&self) {
        self.shared.big_requests.fetch_add(1, Ordering::SeqCst);
    }

    /// Big transactions requested and not yet committed.
    pub fn big_pending(&self) -> u64 {
        self.shared
            .big_requests
            .load(Ordering::SeqCst)
            .saturating_sub(self.shared.big.load(Ordering::SeqCst))
    }

    pub fn stats(&self) -> WorkloadStats {
        WorkloadStats {
            committed_txns: self.shared.committed.load(Ordering::SeqCst),
            failed_txns: self.shared.failed.load(Ordering::SeqCst),
            big_txns: self.shared.big.load(Ordering::SeqCst),
        }
    }

    /// Waits until at least `n` transactions committed (bounded by `timeout`).
    pub async fn wait_committed(&self, n: u64, timeout: Duration) {
        let start = std::time::Instant::now();
        while self.shared.committed.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < timeout,
                "workload committed only {:?} in {timeout:?}",
                self.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every requested big transaction is done.
    pub async fn wait_big_done(&self, timeout: Duration) {
        let start = std::time::Instant::now();
        while self.shared.big.load(Ordering::SeqCst)
            < self.shared.big_requests.load(Ordering::SeqCst)
        {
            assert!(start.elapsed() < timeout, "big transaction not done");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops after the transaction in progress.
    pub async fn stop(self) -> WorkloadStats {
        self.shared.stop.store(true, Ordering::SeqCst);
        let stats = Arc::clone(&self.shared);
        self.task.await.expect("workload task");
        WorkloadStats {
            committed_txns: stats.committed.load(Ordering::SeqCst),
            failed_txns: stats.failed.load(Ordering::SeqCst),
            big_txns: stats.big.load(Ordering::SeqCst),
        }
    }
}

async fn connect(conn: &str) -> Option<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(client)
}

async fn run(spec: WorkloadSpec, shared: Arc<Shared>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let tables = table_names(spec.tables);
    let mut next_id = vec![0i64; spec.tables];
    let mut big_base = BIG_ID_BASE;
    let mut client: Option<tokio_postgres::Client> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            client = connect(&spec.conn).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        };
        if shared.paused.load(Ordering::SeqCst) {
            shared.parked.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        shared.parked.store(false, Ordering::SeqCst);
        let big_due =
            shared.big.load(Ordering::SeqCst) < shared.big_requests.load(Ordering::SeqCst);
        let result = if big_due {
            let t = &tables[rng.random_range(0..tables.len())];
            let sql = format!(
                "INSERT INTO {t} SELECT g, nextval('wl_v'), 'big' FROM generate_series($1::int, $2::int) g"
            );
            let (lo, hi) = (big_base as i32, (big_base + spec.big_rows - 1) as i32);
            big_base += spec.big_rows;
            c.execute(&sql, &[&lo, &hi]).await.map(|_| ())
        } else {
            small_txn(c, &tables, &mut next_id, &mut rng).await
        };
        match result {
            Ok(()) => {
                shared.committed.fetch_add(1, Ordering::SeqCst);
                if big_due {
                    shared.big.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(_) => {
                // Server restarting or the connection cut: which way the
                // commit went is the truth slot's business.
                shared.failed.fetch_add(1, Ordering::SeqCst);
                if c.is_closed() {
                    client = None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !spec.pause.is_zero() {
            tokio::time::sleep(spec.pause).await;
        }
    }
}

/// One transaction of 1..=8 statements over random tables.
async fn small_txn(
    c: &mut tokio_postgres::Client,
    tables: &[String],
    next_id: &mut [i64],
    rng: &mut rand::rngs::StdRng,
) -> Result<(), tokio_postgres::Error> {
    let tx = c.transaction().await?;
    let statements = rng.random_range(1..=8);
    for _ in 0..statements {
        let i = rng.random_range(0..tables.len());
        let t = &tables[i];
        // Recent ids, so a transaction often touches one key several times.
        let recent = |rng: &mut rand::rngs::StdRng, n: i64| -> i32 {
            (n - rng.random_range(1..=n.clamp(1, 200))) as i32
        };
        let pad = format!("p{}", rng.random_range(0..1_000_000u32));
        match rng.random_range(0..10) {
            0..=4 => {
                let id = next_id[i] as i32;
                next_id[i] += 1;
                tx.execute(
                    &format!("INSERT INTO {t} VALUES ($1, nextval('wl_v'), $2)"),
                    &[&id, &pad],
                )
                .await?;
            }
            5..=8 if next_id[i] > 0 => {
                let id = recent(rng, next_id[i]);
                tx.execute(
                    &format!("UPDATE {t} SET v = nextval('wl_v'), pad = $2 WHERE id = $1"),
                    &[&id, &pad],
                )
                .await?;
            }
            _ if next_id[i] > 0 => {
                let id = recent(rng, next_id[i]);
                tx.execute(&format!("DELETE FROM {t} WHERE id = $1"), &[&id])
                    .await?;
            }
            _ => {}
        }
    }
    tx.commit().await
}
