//! Snapshot chunks read while streaming, between watermarks (DBLog,
//! <https://arxiv.org/abs/2010.12597>): one chunk at a time,
//!
//! 1. a low watermark is written (`pg_logical_emit_message`, transactional,
//!    prefix [`PREFIX`]) and committed,
//! 2. the chunk is read (`COPY`, its own statement snapshot, which sees
//!    everything committed before the low watermark),
//! 3. a high watermark is written.
//!
//! Both watermarks come back through the replication stream in commit
//! order. Between them, the reader records the keys of every change to the
//! chunk's table; at the high watermark the chunk's rows whose key changed
//! are dropped (the stream carries a state at least as new) and the rest
//! are emitted, positioned inside the high watermark's transaction. So for
//! every key the consumer sees states in commit order, and a row that is
//! never changed is emitted once.
//!
//! Watermarks carry a random run id: after a restart, the old run's
//! watermarks that PostgreSQL sends again are ignored and unfinished chunks
//! get new windows. Chunks are ctid ranges, so a row moved to another page
//! by an update is read where it is now; it changed after the snapshot
//! began, so the stream emits it as well. A table rewrite (VACUUM FULL,
//! CLUSTER) during a snapshot moves rows without changing them: it can
//! make a row appear twice or, if it moves into a finished chunk, be
//! missed; do not run one while a snapshot is in progress.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::progress::{PgSnapshot, SnapshotProgress, TableProgress};
use super::{ChunkRows, SnapTable, SnapshotChunk, SnapshotError, key_values, marker, read_chunk};
use crate::config::{ConnectorConfig, TableName};
use crate::event::{ChangeEvent, Op, Position, SourceTx};
use crate::postgres::catalog::Catalog;

/// Prefix of siphon's watermark messages.
pub const PREFIX: &str = "siphon.snapshot";

/// A request to the running snapshot (signal table or HTTP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Snapshot these tables (again), appended to what is pending.
    Execute(Vec<TableName>),
    /// Start no new window until resumed.
    Pause,
    Resume,
    /// Drop every pending chunk (of these tables, or all). The rest of an
    /// initial snapshot is dropped only when `force` is set: its rows are
    /// in no topic yet, and nothing would ever write them.
    Stop {
        tables: Vec<TableName>,
        force: bool,
    },
}

/// A signal on its way to a connector's reader, with where to say what
/// became of it.
#[derive(Debug)]
pub struct Signal {
    pub control: Control,
    /// `Err(reason)` when the connector refused it.
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// What a signal did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to store (pause, resume).
    Unchanged,
    /// The progress to store (`None`: no snapshot left).
    Changed(Option<SnapshotProgress>),
    /// Refused; nothing changed. The reason, for the reply and the log.
    Refused(String),
}

/// Where signals reach running connectors: connector name → its reader.
static CONTROLS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, mpsc::Sender<Signal>>>,
> = std::sync::LazyLock::new(Default::default);

/// Registers a streaming connector's signal receiver (replacing the one
/// of a previous run).
pub fn register(connector: &str) -> mpsc::Receiver<Signal> {
    let (tx, rx) = mpsc::channel(16);
    if let Ok(mut m) = CONTROLS.lock() {
        m.insert(connector.to_owned(), tx);
    }
    rx
}

/// Why a signal was not delivered.
#[derive(Debug, PartialEq, Eq)]
pub enum SignalError {
    /// No such connector, or it is not streaming.
    NotStreaming,
    /// Its queue of signals is full.
    Busy,
}

/// Delivers a signal to a streaming connector; the receiver gets what
/// became of it once the connector has applied it.
pub fn signal(
    connector: &str,
    control: Control,
) -> Result<oneshot::Receiver<Result<(), String>>, SignalError> {
    let tx = CONTROLS
        .lock()
        .ok()
        .and_then(|m| m.get(connector).cloned())
        .ok_or(SignalError::NotStreaming)?;
    let (reply, answer) = oneshot::channel();
    let signal = Signal {
        control,
        reply: Some(reply),
    };
    tx.try_send(signal).map(|()| answer).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => SignalError::Busy,
        mpsc::error::TrySendError::Closed(_) => SignalError::NotStreaming,
    })
}

/// Parses a signal the way Debezium's signal table carries it: `type`
/// (`execute-snapshot`, `stop-snapshot`, `pause-snapshot`,
/// `resume-snapshot`) and `data` (JSON, `{"data-collections": ["schema.table", …]}`;
/// a stop also takes `"force": true`, to drop an initial snapshot's rest).
pub fn parse_signal(kind: &str, data: Option<&str>) -> Result<Control, String> {
    // Parsed only by the signals that use it.
    let data = || -> Result<Option<serde_json::Value>, String> {
        data.filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d).map_err(|e| format!("data is not JSON: {e}")))
            .transpose()
    };
    let tables = || -> Result<Vec<TableName>, String> {
        let Some(v) = data()? else {
            return Ok(Vec::new());
        };
        if let Some(t) = v.get("type").and_then(|t| t.as_str())
            && !t.eq_ignore_ascii_case("incremental")
        {
            return Err(format!(
                "snapshot type {t:?} is not supported: use \"incremental\""
            ));
        }
        let list = v
            .get("data-collections")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|t| {
                let s = t.as_str().ok_or("data-collections must be strings")?;
                let (schema, table) = s
                    .split_once('.')
                    .ok_or_else(|| format!("{s:?} is not of the form \"schema.table\""))?;
                Ok(TableName {
                    schema: schema.to_owned(),
                    table: table.to_owned(),
                })
            })
            .collect()
    };
    match kind {
        "execute-snapshot" => {
            let t = tables()?;
            if t.is_empty() {
                return Err("execute-snapshot needs data-collections".into());
            }
            Ok(Control::Execute(t))
        }
        "stop-snapshot" => {
            let force = match data()?.as_ref().and_then(|d| d.get("force")) {
                None => false,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(_) => return Err("\"force\" must be true or false".into()),
            };
            Ok(Control::Stop {
                tables: tables()?,
                force,
            })
        }
        "pause-snapshot" => Ok(Control::Pause),
        "resume-snapshot" => Ok(Control::Resume),
        other => Err(format!(
            "unknown signal type {other:?}: use execute-snapshot, stop-snapshot, pause-snapshot or resume-snapshot"
        )),
    }
}

struct Window {
    id: u64,
    table: usize,
    chunk: u64,
    low_seen: bool,
    truncated: bool,
    /// Keys of the table's rows changed inside the window.
    changed: HashSet<Vec<Option<Bytes>>>,
    /// Transactions that changed the table inside the window (for a table
    /// without a key, whose rows are told apart by the `xmin` of the
    /// version read).
    writers: HashSet<u32>,
    rows: Option<ChunkRows>,
    rx: mpsc::Receiver<Result<ChunkRows, SnapshotError>>,
    task: JoinHandle<()>,
}

impl Drop for Window {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watermark-window snapshot of one connector, driven by the reader.
pub struct Windows {
    cfg: Arc<ConnectorConfig>,
    catalog: Arc<Catalog>,
    tables: Vec<Arc<SnapTable>>,
    progress: SnapshotProgress,
    run: u64,
    next_id: u64,
    open: Option<Window>,
    paused: bool,
}

/// What a watermark message meant.
pub enum Watermark {
    /// Not ours, or from another run.
    Ignored,
    /// The window's low watermark.
    Opened,
    /// The high watermark: this chunk is to be written.
    Closed(Box<SnapshotChunk>, usize),
}

impl Windows {
    /// Connects and describes the tables of `progress`.
    pub async fn start(
        cfg: &Arc<ConnectorConfig>,
        progress: SnapshotProgress,
    ) -> Result<Windows, SnapshotError> {
        let catalog = Catalog::connect(&cfg.postgres).await?;
        let parts = super::describe_all(cfg, &catalog).await?;
        let (tables, progress) = super::align(cfg.name.as_str(), progress, &parts, &cfg.snapshot);
        let pending: usize = progress.tables.iter().map(|t| t.pending().count()).sum();
        tracing::info!(connector = %cfg.name, tables = tables.len(), chunks = pending, "snapshot in watermark windows started");
        Ok(Windows {
            cfg: Arc::clone(cfg),
            catalog: Arc::new(catalog),
            tables,
            progress,
            run: rand::random(),
            next_id: 0,
            open: None,
            paused: false,
        })
    }

    /// Windows with nothing to read yet (for a signal).
    pub async fn idle(cfg: &Arc<ConnectorConfig>) -> Result<Windows, SnapshotError> {
        Windows::start(cfg, SnapshotProgress::default()).await
    }

    /// Whether a window waits for its task's rows.
    pub fn awaiting_rows(&self) -> bool {
        self.open.as_ref().is_some_and(|w| w.rows.is_none())
    }

    /// Waits for the open window's rows (or its task's error).
    pub async fn rows(&mut self) -> Result<(), SnapshotError> {
        let Some(w) = self.open.as_mut() else {
            return std::future::pending().await;
        };
        match w.rx.recv().await {
            Some(Ok(rows)) => {
                w.rows = Some(rows);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Err(SnapshotError::WorkerGone {
                connector: self.cfg.name.to_string(),
            }),
        }
    }

    /// Whether a chunk is still to be read.
    pub fn pending(&self) -> bool {
        !self.progress.complete()
    }

    /// Opens the next window when none is open.
    pub fn poll_start(&mut self) {
        if self.open.is_some() || self.paused {
            return;
        }
        let next = self
            .progress
            .tables
            .iter()
            .enumerate()
            .find_map(|(i, t)| t.pending().next().map(|c| (i, c)));
        let Some((table, chunk)) = next else {
            return;
        };
        self.next_id += 1;
        let id = self.next_id;
        let label = format!("{:016x}/{id}", self.run);
        let (tx, rx) = mpsc::channel(2);
        let catalog = Arc::clone(&self.catalog);
        let t = Arc::clone(&self.tables[table]);
        let range = self.progress.tables[table].ctid_range(chunk);
        let as_of = self.progress.tables[table]
            .as_of
            .as_deref()
            .and_then(PgSnapshot::parse);
        let task = tokio::spawn(async move {
            if let Err(e) =
                window_task(&catalog, &t, chunk, &range, as_of.as_ref(), &label, &tx).await
            {
                let _ = tx.send(Err(e)).await;
            }
        });
        self.open = Some(Window {
            id,
            table,
            chunk,
            low_seen: false,
            truncated: false,
            changed: HashSet::new(),
            writers: HashSet::new(),
            rows: None,
            rx,
            task,
        });
    }

    /// Records a streamed change: inside a window, its key's chunk row is
    /// stale. A table without a key has nothing to match rows by (an empty
    /// key would match every row and drop the whole chunk): there the
    /// change's transaction is recorded instead, and the chunk's rows
    /// written by it are left to the stream, which carries them.
    pub fn on_change(&mut self, event: &ChangeEvent) {
        let Some(w) = self.open.as_mut() else { return };
        let table = &self.tables[w.table];
        if !w.low_seen || event.relation.relation.oid != table.relation.relation.oid {
            return;
        }
        if event.op == Op::Truncate {
            w.truncated = true;
            return;
        }
        if !table.has_key() {
            w.writers.insert(event.tx.xid.0);
            return;
        }
        let cols = &event.relation.relation.columns;
        let key: Vec<usize> = (0..cols.len()).filter(|&i| cols[i].is_key).collect();
        if let Some(new) = &event.new {
            w.changed.insert(key_values(&key, new));
        }
        if let Some((_, old)) = &event.old {
            w.changed.insert(key_values(&key, old));
        }
    }

    /// Handles a logical message; `next_index` is the index of the next
    /// change in the message's transaction.
    pub fn on_message(
        &mut self,
        prefix: &str,
        content: &[u8],
        tx: &Arc<SourceTx>,
        next_index: &mut u64,
        lsn: crate::event::Lsn,
    ) -> Watermark {
        if prefix != PREFIX {
            return Watermark::Ignored;
        }
        let Ok(content) = std::str::from_utf8(content) else {
            return Watermark::Ignored;
        };
        let Some(w) = self.open.as_mut() else {
            return Watermark::Ignored;
        };
        let mine = format!("{:016x}/{}", self.run, w.id);
        match content.strip_prefix(mine.as_str()) {
            Some("/low") => {
                w.low_seen = true;
                Watermark::Opened
            }
            Some("/high") if w.low_seen => {
                let Some(w) = self.open.take() else {
                    return Watermark::Ignored;
                };
                self.close(w, tx, next_index, lsn)
            }
            _ => Watermark::Ignored,
        }
    }

    fn close(
        &mut self,
        mut w: Window,
        tx: &Arc<SourceTx>,
        next_index: &mut u64,
        lsn: crate::event::Lsn,
    ) -> Watermark {
        // The task hands the rows over before it writes the high watermark.
        let rows = w.rows.take().or_else(|| match w.rx.try_recv() {
            Ok(Ok(rows)) => Some(rows),
            _ => None,
        });
        let Some(rows) = rows else {
            // Cannot happen (see above); read the chunk again.
            return Watermark::Ignored;
        };
        let table = Arc::clone(&self.tables[w.table]);
        let mut events = Vec::with_capacity(rows.rows.len());
        if !w.truncated {
            let mut xmins = rows.xmins.into_iter();
            for row in rows.rows {
                let xmin = xmins.next();
                let stale = if table.has_key() {
                    w.changed.contains(&table.key_of(&row))
                } else {
                    xmin.is_some_and(|x| w.writers.contains(&x))
                };
                if stale {
                    continue;
                }
                events.push(ChangeEvent {
                    position: Position {
                        commit_lsn: tx.commit_lsn,
                        index: *next_index,
                    },
                    op: Op::Read,
                    relation: Arc::clone(&table.relation),
                    tx: Arc::clone(tx),
                    lsn,
                    old: None,
                    new: Some(row),
                });
                *next_index += 1;
            }
        }
        let t: &mut TableProgress = &mut self.progress.tables[w.table];
        t.mark_done(w.chunk, events.len() as u64);
        let left = t.pending().count() as u64;
        super::report_progress(self.cfg.name.as_str(), &table, t.rows, left);
        let position = events.last().map(|e| e.position);
        let progress = (!self.progress.complete()).then(|| self.progress.clone());
        if progress.is_none() {
            tracing::info!(connector = %self.cfg.name, "snapshot in watermark windows complete");
        }
        let chunk = SnapshotChunk {
            table: Arc::clone(&table.label),
            events,
            marker: marker::INCREMENTAL,
            first_marker: None,
            last_marker: None,
            progress,
            position,
        };
        Watermark::Closed(Box::new(chunk), rows.bytes)
    }

    /// Applies a signal.
    pub async fn control(&mut self, c: Control) -> Result<Applied, SnapshotError> {
        match c {
            Control::Pause => {
                self.paused = true;
                tracing::info!(connector = %self.cfg.name, "snapshot paused");
                Ok(Applied::Unchanged)
            }
            Control::Resume => {
                self.paused = false;
                tracing::info!(connector = %self.cfg.name, "snapshot resumed");
                Ok(Applied::Unchanged)
            }
            Control::Stop { tables, force } => {
                let stop_all = tables.is_empty();
                let names: Vec<String> = tables.iter().map(ToString::to_string).collect();
                // A name is a captured table (all its partitions) or one part.
                let keep: Vec<bool> = self
                    .tables
                    .iter()
                    .map(|t| {
                        !(stop_all
                            || names.contains(&t.captured.to_string())
                            || names.iter().any(|n| **n == *t.label))
                    })
                    .collect();
                let initial: Vec<&str> = self
                    .progress
                    .tables
                    .iter()
                    .zip(&keep)
                    .filter(|(t, keep)| !**keep && t.initial && !t.complete())
                    .map(|(t, _)| t.table.as_str())
                    .collect();
                if !initial.is_empty() {
                    let list = initial.join(", ");
                    if !force {
                        return Ok(Applied::Refused(format!(
                            "stop refused: the snapshot of {list} is the rest of the initial snapshot \
                             (interrupted, now read in watermark windows); its remaining rows are in no \
                             topic yet and nothing would ever write them. Stop other tables by name, or \
                             send \"force\": true to drop it anyway (then snapshot those tables again \
                             with execute-snapshot)"
                        )));
                    }
                    tracing::warn!(connector = %self.cfg.name, tables = %list, "initial snapshot's rest dropped on a forced stop: those tables' unread rows are in no topic; execute-snapshot them again to write them");
                }
                if let Some(w) = &self.open
                    && !keep[w.table]
                {
                    self.open = None;
                }
                let mut i = 0;
                self.progress.tables.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
                let mut i = 0;
                self.tables.retain(|_| {
                    i += 1;
                    keep[i - 1]
                });
                if let Some(w) = self.open.as_mut() {
                    w.table = keep[..w.table].iter().filter(|&&k| k).count();
                }
                tracing::info!(connector = %self.cfg.name, tables = ?names, "snapshot stopped");
                Ok(Applied::Changed(
                    (!self.progress.complete()).then(|| self.progress.clone()),
                ))
            }
            Control::Execute(tables) => {
                for name in tables {
                    if !self.cfg.postgres.tables.contains(&name) {
                        tracing::warn!(connector = %self.cfg.name, table = %name, "incremental snapshot of a table this connector does not capture ignored: add it to postgres.tables first");
                        continue;
                    }
                    let parts = SnapTable::describe(
                        &self.catalog,
                        &name,
                        self.cfg.postgres.publish_via_partition_root,
                    )
                    .await?;
                    for t in parts {
                        self.plan_part(t);
                    }
                    tracing::info!(connector = %self.cfg.name, table = %name, "incremental snapshot of table requested");
                }
                Ok(Applied::Changed(
                    (!self.progress.complete()).then(|| self.progress.clone()),
                ))
            }
        }
    }
}

impl Windows {
    /// Plans an incremental snapshot of `t`, replacing a finished one of
    /// it; one still running goes on as it is.
    fn plan_part(&mut self, t: SnapTable) {
        let label = t.label.to_string();
        if self
            .progress
            .tables
            .iter()
            .any(|p| p.table == label && !p.complete())
        {
            return;
        }
        if let Some(i) = self.progress.tables.iter().position(|p| p.table == label) {
            if self.open.as_ref().is_some_and(|w| w.table == i) {
                self.open = None;
            }
            self.progress.tables.remove(i);
            self.tables.remove(i);
            if let Some(w) = self.open.as_mut()
                && w.table > i
            {
                w.table -= 1;
            }
        }
        self.progress
            .tables
            .push(super::plan_part(&t, &self.cfg.snapshot));
        self.tables.push(Arc::new(t));
    }
}

async fn window_task(
    catalog: &Catalog,
    table: &SnapTable,
    chunk: u64,
    range: &str,
    as_of: Option<&PgSnapshot>,
    label: &str,
    tx: &mpsc::Sender<Result<ChunkRows, SnapshotError>>,
) -> Result<(), SnapshotError> {
    let client = catalog.client();
    let mark = |what| move |source| SnapshotError::Watermark { what, source };
    client
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&PREFIX, &format!("{label}/low")],
        )
        .await
        .map_err(mark("write the low watermark"))?;
    if let Some(ms) = crate::failpoint::fires(crate::failpoint::SLOW_WINDOW) {
        tokio::time::sleep(std::time::Duration::from_millis(
            ms.parse().unwrap_or(1_000),
        ))
        .await;
    }
    let rows = read_chunk(client, table, chunk, range, as_of, !table.has_key()).await?;
    if tx.send(Ok(rows)).await.is_err() {
        return Ok(());
    }
    client
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&PREFIX, &format!("{label}/high")],
        )
        .await
        .map_err(mark("write the high watermark"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_as_debezium_writes_them() {
        assert_eq!(
            parse_signal(
                "execute-snapshot",
                Some(r#"{"data-collections": ["public.b"], "type": "incremental"}"#)
            ),
            Ok(Control::Execute(vec![TableName {
                schema: "public".into(),
                table: "b".into()
            }]))
        );
        assert_eq!(parse_signal("pause-snapshot", None), Ok(Control::Pause));
        assert_eq!(
            parse_signal("resume-snapshot", Some("")),
            Ok(Control::Resume)
        );
        assert_eq!(
            parse_signal("stop-snapshot", None),
            Ok(Control::Stop {
                tables: vec![],
                force: false
            })
        );
        assert_eq!(
            parse_signal(
                "stop-snapshot",
                Some(r#"{"data-collections": ["public.b"], "force": true}"#)
            ),
            Ok(Control::Stop {
                tables: vec![TableName {
                    schema: "public".into(),
                    table: "b".into()
                }],
                force: true
            })
        );
        assert!(parse_signal("stop-snapshot", Some(r#"{"force": "yes"}"#)).is_err());
        assert_eq!(
            parse_signal("pause-snapshot", Some("not json")),
            Ok(Control::Pause)
        );
        assert!(parse_signal("execute-snapshot", Some("{}")).is_err());
        assert!(parse_signal("execute-snapshot", Some(r#"{"data-collections":["x"]}"#)).is_err());
        assert!(
            parse_signal(
                "execute-snapshot",
                Some(r#"{"data-collections":["a.b"],"type":"blocking"}"#)
            )
            .is_err()
        );
        assert!(parse_signal("log", None).is_err());
    }
}
