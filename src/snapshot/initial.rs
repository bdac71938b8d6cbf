//! The initial snapshot: every pending chunk of every table read in
//! parallel under one exported snapshot, before replication starts.
//!
//! `max_threads` workers each open a connection, import the snapshot
//! (`BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT`) and
//! take chunks from a shared queue; a coordinator turns finished chunks
//! into [`SnapshotChunk`]s for the writer. Workers read ahead of the writer
//! by at most one chunk each, so memory is bounded by
//! `max_threads × chunk_pages` of heap, whatever the table sizes.
//!
//! The coordinator holds back the newest non-empty chunk of each table
//! until the table's next non-empty chunk or its end, so that it knows
//! which row is the table's (and the snapshot's) last and can mark it as
//! Debezium does, whatever order the workers finish in.
//! <https://www.postgresql.org/docs/15/sql-set-transaction.html>

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::progress::SnapshotProgress;
use super::{ChunkRows, SnapTable, SnapshotChunk, SnapshotError, marker, read_chunk};

async fn read_chunk_none(
    client: &tokio_postgres::Client,
    table: &SnapTable,
    chunk: u64,
    range: &str,
) -> Result<ChunkRows, SnapshotError> {
    read_chunk(client, table, chunk, range, None, false).await
}
use crate::config::ConnectorConfig;
use crate::event::{ChangeEvent, Lsn, Op, Position, SourceTx, TxId};
use crate::postgres::catalog::Catalog;

/// Where the rows go: the pipeline's channel to the writer.
pub trait ChunkSink {
    /// Hands a chunk to the writer (waiting for room); `false` when the
    /// writer is gone.
    fn send(
        &self,
        chunk: SnapshotChunk,
        bytes: usize,
    ) -> impl std::future::Future<Output = bool> + Send;
}

#[derive(Clone, Copy, Debug)]
struct Job {
    table: usize,
    chunk: u64,
}

/// An initial snapshot to run.
pub struct Initial {
    pub cfg: Arc<ConnectorConfig>,
    /// The exported snapshot's name.
    pub snapshot_name: String,
    /// The slot's consistent point (`Lsn::ZERO` without a slot).
    pub consistent_point: Lsn,
    /// The tables, in the order of `progress.tables`.
    pub tables: Vec<Arc<SnapTable>>,
    pub progress: SnapshotProgress,
}

/// How an initial snapshot ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every chunk was handed to the writer.
    Done,
    /// Shutdown was requested first.
    Cancelled,
    /// The writer stopped (its error explains why).
    WriterGone,
}

impl Initial {
    pub async fn run(
        mut self,
        sink: &impl ChunkSink,
        cancel: &CancellationToken,
    ) -> Result<Outcome, SnapshotError> {
        let connector = self.cfg.name.to_string();
        let mut jobs = VecDeque::new();
        let mut remaining: Vec<u64> = Vec::new();
        let mut started: Vec<bool> = Vec::new();
        for (i, t) in self.progress.tables.iter().enumerate() {
            let pending: Vec<u64> = t.pending().collect();
            remaining.push(pending.len() as u64);
            started.push(t.rows > 0 || pending.len() as u64 != t.chunks);
            jobs.extend(pending.into_iter().map(|chunk| Job { table: i, chunk }));
        }
        let resumed = started.iter().any(|&s| s);
        self.record_as_of().await?;
        // Store the plan (and what it is read as of) before any row: a crash
        // before the first chunk commits then resumes this snapshot too.
        let plan = SnapshotChunk {
            table: Arc::from(""),
            events: Vec::new(),
            marker: marker::TRUE,
            first_marker: None,
            last_marker: None,
            progress: next_progress(&self.progress),
            position: None,
        };
        if !sink.send(plan, 0).await {
            return Ok(Outcome::WriterGone);
        }
        let total = jobs.len();
        tracing::info!(
            connector = %connector,
            tables = self.tables.len(),
            chunks = total,
            workers = self.cfg.snapshot.max_threads.min(total.max(1)),
            consistent_point = %self.consistent_point,
            "initial snapshot started"
        );
        let ranges: Arc<Vec<Vec<String>>> = Arc::new(
            self.progress
                .tables
                .iter()
                .map(|t| (0..t.chunks).map(|c| t.ctid_range(c)).collect())
                .collect(),
        );
        let queue = Arc::new(Mutex::new(jobs));
        let workers = self.cfg.snapshot.max_threads.min(total).max(1);
        let (done_tx, mut done_rx) = mpsc::channel(workers);
        let mut set = JoinSet::new();
        for _ in 0..workers {
            let cfg = Arc::clone(&self.cfg);
            let name = self.snapshot_name.clone();
            let queue = Arc::clone(&queue);
            let tables = self.tables.clone();
            let ranges = Arc::clone(&ranges);
            let done = done_tx.clone();
            set.spawn(async move {
                let r = worker(&cfg, &name, &queue, &tables, &ranges, &done).await;
                if let Err(e) = r {
                    let _ = done.send(Err(e)).await;
                }
            });
        }
        drop(done_tx);

        let tx = Arc::new(SourceTx {
            xid: TxId(0),
            commit_lsn: self.consistent_point,
            commit_ts_us: now_us(),
        });
        let mut coord = Coordinator {
            connector: connector.clone(),
            held: HashMap::new(),
            remaining,
            started,
            any_sent: resumed,
            tx,
            lsn: self.consistent_point,
            sent_progress: None,
        };
        let mut received = 0;
        while received < total {
            // Priority: shutdown first, then finished chunks.
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(Outcome::Cancelled),
                next = done_rx.recv() => next,
            };
            let Some(result) = next else {
                return Err(SnapshotError::WorkerGone { connector });
            };
            let (job, rows) = result?;
            received += 1;
            if !coord
                .chunk_read(&mut self.progress, &self.tables, job, rows, sink)
                .await
            {
                return Ok(Outcome::WriterGone);
            }
        }
        if coord.sent_progress.as_ref() != Some(&None) {
            // Trailing empty chunks: store that they are done too.
            let progress = next_progress(&self.progress);
            let chunk = SnapshotChunk {
                table: Arc::from(""),
                events: Vec::new(),
                marker: marker::TRUE,
                first_marker: None,
                last_marker: None,
                progress,
                position: None,
            };
            if !sink.send(chunk, 0).await {
                return Ok(Outcome::WriterGone);
            }
        }
        while set.join_next().await.is_some() {}
        tracing::info!(connector = %connector, chunks = total, "initial snapshot read");
        Ok(Outcome::Done)
    }
}

impl Initial {
    /// Notes in the progress which snapshot the tables are read as of, so
    /// that chunks read after a restart (in watermark windows) can leave
    /// out what the stream carries.
    async fn record_as_of(&mut self) -> Result<(), SnapshotError> {
        if self.progress.tables.iter().all(|t| t.as_of.is_some()) {
            return Ok(());
        }
        let catalog = Catalog::connect(&self.cfg.postgres).await?;
        let client = catalog.client();
        let err = |source| SnapshotError::Watermark {
            what: "read the exported snapshot's transaction ids",
            source,
        };
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(err)?;
        client
            .batch_execute(&format!(
                "SET TRANSACTION SNAPSHOT '{}'",
                self.snapshot_name.replace('\'', "''")
            ))
            .await
            .map_err(err)?;
        let as_of: String = client
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(err)?
            .get(0);
        let _ = client.batch_execute("COMMIT").await;
        for t in &mut self.progress.tables {
            if t.as_of.is_none() {
                t.as_of = Some(as_of.clone());
            }
        }
        Ok(())
    }
}

struct Coordinator {
    connector: String,
    /// Per table: the newest non-empty chunk read but not yet handed on.
    held: HashMap<usize, (Job, ChunkRows)>,
    /// Per table: chunks not yet read.
    remaining: Vec<u64>,
    /// Per table: a row of it was handed on (in this run or before a restart).
    started: Vec<bool>,
    any_sent: bool,
    tx: Arc<SourceTx>,
    lsn: Lsn,
    /// The progress last handed to the writer.
    sent_progress: Option<Option<SnapshotProgress>>,
}

impl Coordinator {
    async fn chunk_read(
        &mut self,
        progress: &mut SnapshotProgress,
        tables: &[Arc<SnapTable>],
        job: Job,
        rows: ChunkRows,
        sink: &impl ChunkSink,
    ) -> bool {
        self.remaining[job.table] -= 1;
        if rows.rows.is_empty() {
            progress.tables[job.table].mark_done(job.chunk, 0);
        } else if let Some((held_job, held_rows)) = self.held.insert(job.table, (job, rows))
            && !self
                .forward(progress, tables, held_job, held_rows, false, sink)
                .await
        {
            return false;
        }
        if self.remaining[job.table] == 0 {
            if let Some((j, r)) = self.held.remove(&job.table) {
                return self.forward(progress, tables, j, r, true, sink).await;
            }
            let t = &tables[job.table];
            super::report_progress(&self.connector, t, progress.tables[job.table].rows, 0);
        }
        true
    }

    async fn forward(
        &mut self,
        progress: &mut SnapshotProgress,
        tables: &[Arc<SnapTable>],
        job: Job,
        rows: ChunkRows,
        last_of_table: bool,
        sink: &impl ChunkSink,
    ) -> bool {
        let table = &tables[job.table];
        let n = rows.rows.len() as u64;
        progress.tables[job.table].mark_done(job.chunk, n);
        let first_marker = if !self.any_sent {
            Some(marker::FIRST)
        } else if !self.started[job.table] {
            Some(marker::FIRST_IN_TABLE)
        } else {
            None
        };
        let last_marker = last_of_table.then(|| {
            if self.remaining.iter().all(|&r| r == 0) && self.held.is_empty() {
                marker::LAST
            } else {
                marker::LAST_IN_TABLE
            }
        });
        self.any_sent = true;
        self.started[job.table] = true;
        let events = rows
            .rows
            .into_iter()
            .map(|row| ChangeEvent {
                position: Position {
                    commit_lsn: self.lsn,
                    index: 0,
                },
                op: Op::Read,
                relation: Arc::clone(&table.relation),
                tx: Arc::clone(&self.tx),
                lsn: self.lsn,
                old: None,
                new: Some(row),
            })
            .collect();
        let out = next_progress(progress);
        self.sent_progress = Some(out.clone());
        let chunk = SnapshotChunk {
            table: Arc::clone(&table.label),
            events,
            marker: marker::TRUE,
            first_marker,
            last_marker,
            progress: out,
            position: None,
        };
        let left = self.remaining[job.table] + u64::from(self.held.contains_key(&job.table));
        super::report_progress(
            &self.connector,
            table,
            progress.tables[job.table].rows,
            left,
        );
        sink.send(chunk, rows.bytes).await
    }
}

/// The progress to store: `None` once complete.
fn next_progress(p: &SnapshotProgress) -> Option<SnapshotProgress> {
    (!p.complete()).then(|| p.clone())
}

async fn worker(
    cfg: &ConnectorConfig,
    snapshot_name: &str,
    queue: &Mutex<VecDeque<Job>>,
    tables: &[Arc<SnapTable>],
    ranges: &[Vec<String>],
    done: &mpsc::Sender<Result<(Job, ChunkRows), SnapshotError>>,
) -> Result<(), SnapshotError> {
    let catalog = Catalog::connect(&cfg.postgres).await?;
    let client = catalog.client();
    let begin = |source| SnapshotError::Watermark {
        what: "import the exported snapshot",
        source,
    };
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(begin)?;
    client
        .batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT '{}'",
            snapshot_name.replace('\'', "''")
        ))
        .await
        .map_err(begin)?;
    loop {
        let job = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(job) = job else { break };
        let table = &tables[job.table];
        let rows = read_chunk_none(
            client,
            table,
            job.chunk,
            &ranges[job.table][job.chunk as usize],
        )
        .await?;
        if done.send(Ok((job, rows))).await.is_err() {
            break;
        }
    }
    let _ = client.batch_execute("COMMIT").await;
    Ok(())
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
