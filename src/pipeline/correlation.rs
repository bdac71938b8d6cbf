//! Correlation headers: what every event carries besides its key and
//! value, so consumers can deduplicate and trace end to end.
//!
//! - `siphon.position`: the change's position as
//!   `{commit_lsn:016X}/{index:016X}` (fixed-width upper-case hex), so the
//!   text sorts byte-wise exactly like the position. A delete's tombstone
//!   and the delete/create pair of a key-changing update carry their
//!   change's position. A row of a watermark-window (incremental) snapshot
//!   carries its real position inside the high watermark's transaction. A
//!   row of the initial snapshot carries `(C - 1, 2^64 - 1)` where `C` is
//!   the slot's consistent point: it sorts after every change the snapshot
//!   includes (committed before `C`) and before every change the stream
//!   carries (committed at or after `C`, where the stream's indexes start
//!   at 0), which is what the row's state is. All rows of one initial
//!   snapshot share it (one row per key). A snapshot-only run (no slot)
//!   has no stream and writes `(0, 0)`.
//! - `traceparent`: the W3C trace context found in the configured column
//!   (`correlation.traceparent_column`) of the row (the new row, or the old
//!   one of a delete), copied only when it is a valid `traceparent`; an
//!   invalid one is left out and warned about once per table. Without one,
//!   the trace context of the transaction: the latest transactional logical
//!   message with prefix `correlation.traceparent_message_prefix` before
//!   the event in its transaction (invalid ones warned about once).
//!
//! Headers are part of the record, so they are written in the same Kafka
//! transaction as the event and come out identical after a restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::warn;

use crate::config::ConnectorConfig;
use crate::event::{ChangeEvent, Position, RelationVersion, TupleValue};

pub const POSITION_HEADER: &str = "siphon.position";
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The position header's text.
pub fn position_text(p: Position) -> String {
    format!("{:016X}/{:016X}", p.commit_lsn.0, p.index)
}

/// The position an initial-snapshot row stands for, given the position its
/// event carries (the consistent point, index 0): just before the stream.
pub fn initial_snapshot_position(p: Position) -> Position {
    match p.commit_lsn.0.checked_sub(1) {
        Some(lsn) => Position {
            commit_lsn: crate::event::Lsn(lsn),
            index: u64::MAX,
        },
        None => p,
    }
}

/// Whether `v` is a W3C `traceparent` a tracer would accept
/// (<https://www.w3.org/TR/trace-context/#traceparent-header>): version,
/// trace id (not all zeros), parent id (not all zeros) and flags in
/// lower-case hex; version `ff` is invalid, version `00` is exactly 55
/// characters, later versions may append `-` and more.
pub fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let nonzero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return false;
    }
    let (version, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    if !(hex(version) && hex(trace) && hex(parent) && hex(flags)) || version == b"ff" {
        return false;
    }
    if !(nonzero(trace) && nonzero(parent)) {
        return false;
    }
    if version == b"00" {
        v.len() == 55
    } else {
        v.len() == 55 || v[55] == b'-'
    }
}

/// Builds the headers of each event of one connector.
pub(super) struct Correlation {
    column: Option<String>,
    /// The trace context a message gave a transaction: (commit LSN, value).
    transaction_trace: Option<(crate::event::Lsn, bytes::Bytes)>,
    warned_message: bool,
    /// Index of the trace column per relation version (`None`: absent).
    columns: HashMap<(u32, u64), Option<usize>>,
    warned: HashSet<u32>,
    connector: String,
}

impl Correlation {
    pub(super) fn new(cfg: &ConnectorConfig) -> Correlation {
        Correlation {
            column: cfg.correlation.traceparent_column.clone(),
            transaction_trace: None,
            warned_message: false,
            columns: HashMap::new(),
            warned: HashSet::new(),
            connector: cfg.name.to_string(),
        }
    }

    /// The headers of `event`; `initial_snapshot` marks a row of the
    /// initial snapshot (see the module docs for its position).
    pub(super) fn headers(&mut self, event: &ChangeEvent, initial_snapshot: bool) -> EventHeaders {
        let position = if initial_snapshot {
            initial_snapshot_position(event.position)
        } else {
            event.position
        };
        let traceparent = self.traceparent(event).or_else(|| {
            self.transaction_trace
                .as_ref()
                .filter(|(lsn, _)| *lsn == event.tx.commit_lsn && !initial_snapshot)
                .map(|(_, v)| v.clone())
        });
        EventHeaders {
            position: position_text(position),
            traceparent,
        }
    }

    /// A trace-context message (`correlation.traceparent_message_prefix`)
    /// of the transaction committing at `commit_lsn`: the events after it
    /// in that transaction carry `content` as their `traceparent` when it
    /// is valid.
    pub(super) fn trace_message(&mut self, commit_lsn: crate::event::Lsn, content: &bytes::Bytes) {
        if valid_traceparent(content) {
            self.transaction_trace = Some((commit_lsn, content.clone()));
            return;
        }
        self.transaction_trace = None;
        if !self.warned_message {
            self.warned_message = true;
            warn!(connector = %self.connector, commit_lsn = %commit_lsn, "a trace-context message holds no valid W3C traceparent: no traceparent header from it (warned once)");
        }
    }

    fn traceparent(&mut self, event: &ChangeEvent) -> Option<bytes::Bytes> {
        let column = self.column.as_deref()?;
        let rv: &Arc<RelationVersion> = &event.relation;
        let index = (*self
            .columns
            .entry((rv.relation.oid, rv.version))
            .or_insert_with(|| rv.relation.columns.iter().position(|c| c.name == column)))?;
        let tuple = event.new.as_ref().or(event.old.as_ref().map(|(_, t)| t))?;
        let value = match tuple.get(index)? {
            // text's binary send format is its text.
            TupleValue::Text(b) | TupleValue::Binary(b) => b,
            TupleValue::Null | TupleValue::UnchangedToast => return None,
        };
        if valid_traceparent(&value[..]) {
            return Some(value.clone());
        }
        if self.warned.insert(rv.relation.oid) {
            warn!(connector = %self.connector, table = %format!("{}.{}", rv.relation.schema, rv.relation.name), column, "a row's trace column holds no valid W3C traceparent: no traceparent header for it (warned once per table)");
        }
        None
    }
}

/// One event's headers.
pub(super) struct EventHeaders {
    position: String,
    traceparent: Option<bytes::Bytes>,
}

impl EventHeaders {
    /// (name, value) pairs, as the producer takes them.
    pub(super) fn pairs(&self) -> Vec<(&'static str, &[u8])> {
        let mut out = Vec::with_capacity(2);
        out.push((POSITION_HEADER, self.position.as_bytes()));
        if let Some(tp) = &self.traceparent {
            out.push((TRACEPARENT_HEADER, &tp[..]));
        }
        out
    }
}

/// Bytes headers add to a record (names, values and their lengths).
pub(super) fn headers_len(headers: &[(&str, &[u8])]) -> usize {
    headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Lsn;

    #[test]
    fn position_text_sorts_like_the_position() {
        let positions = [
            Position {
                commit_lsn: Lsn(0x16B3748),
                index: 0,
            },
            Position {
                commit_lsn: Lsn(0x16B3748),
                index: 9,
            },
            Position {
                commit_lsn: Lsn(0x16B3748),
                index: 10,
            },
            Position {
                commit_lsn: Lsn(0x1_0000_0000),
                index: 0,
            },
        ];
        assert_eq!(
            position_text(positions[0]),
            "00000000016B3748/0000000000000000"
        );
        for w in positions.windows(2) {
            assert!(position_text(w[0]) < position_text(w[1]), "{w:?}");
        }
        let initial = initial_snapshot_position(positions[0]);
        assert_eq!(position_text(initial), "00000000016B3747/FFFFFFFFFFFFFFFF");
        assert!(position_text(initial) < position_text(positions[0]));
        assert!(
            position_text(initial)
                > position_text(Position {
                    commit_lsn: Lsn(0x16B3747),
                    index: 1 << 40
                })
        );
        let none = Position {
            commit_lsn: Lsn::ZERO,
            index: 0,
        };
        assert_eq!(initial_snapshot_position(none), none);
    }

    #[test]
    fn traceparents_are_checked_as_w3c_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(good.as_bytes()));
        assert!(valid_traceparent(
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
        ));
        for bad in [
            "",
            "not a traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad.as_bytes()), "{bad:?}");
        }
    }
}
