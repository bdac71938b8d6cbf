//! Snapshot progress as the offset record carries it: per table, which
//! ctid chunks are written. It travels in the same Kafka transaction as the
//! chunk's rows, so "chunk done" and "its rows visible" are one fact.

/// Progress of the snapshot in progress (`None` in the offset: none is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotProgress {
    pub tables: Vec<TableProgress>,
}

/// One table's chunks. Chunk `i` is the ctid range
/// `[(i * chunk_pages, 0), ((i + 1) * chunk_pages, 0))`; the last chunk has
/// no upper bound, so rows in pages added since the plan are read too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableProgress {
    /// `schema.table`.
    pub table: String,
    pub chunk_pages: u64,
    pub chunks: u64,
    /// Bit `i % 8` of byte `i / 8`: chunk `i` is written.
    pub done: Vec<u8>,
    /// Rows written so far.
    pub rows: u64,
    /// The snapshot the table was first read as of (`pg_current_snapshot()`
    /// text, `xmin:xmax:xip,…`), when that was an initial snapshot's: its
    /// remaining chunks, read later in watermark windows, skip rows written
    /// after it (the stream carries those). `None` for incremental
    /// snapshots.
    pub as_of: Option<String>,
    /// The table's chunks are the rest of an initial snapshot (one the
    /// connector's `snapshot.mode` asked for, read under the slot's
    /// exported snapshot or, when the slot already existed, in watermark
    /// windows), not of an incremental one a signal asked for. Its rows
    /// are in no topic yet, so a `stop` signal leaves it alone unless
    /// forced. Records written before siphon stored this say nothing: read
    /// back, their tables count as initial (the safe side).
    pub initial: bool,
}

impl TableProgress {
    /// A table of `pages` heap pages, nothing read yet (at least one chunk,
    /// so an empty table is still read once).
    pub fn plan(table: String, pages: u64, chunk_pages: u64) -> TableProgress {
        let chunk_pages = chunk_pages.max(1);
        let chunks = pages.div_ceil(chunk_pages).max(1);
        TableProgress {
            table,
            chunk_pages,
            chunks,
            done: vec![0; chunks.div_ceil(8) as usize],
            rows: 0,
            as_of: None,
            initial: false,
        }
    }

    /// [`TableProgress::plan`] for an initial snapshot.
    pub fn plan_initial(table: String, pages: u64, chunk_pages: u64) -> TableProgress {
        TableProgress {
            initial: true,
            ..TableProgress::plan(table, pages, chunk_pages)
        }
    }

    pub fn is_done(&self, chunk: u64) -> bool {
        self.done
            .get((chunk / 8) as usize)
            .is_some_and(|b| b & (1 << (chunk % 8)) != 0)
    }

    pub fn mark_done(&mut self, chunk: u64, rows: u64) {
        let byte = (chunk / 8) as usize;
        if self.done.len() <= byte {
            self.done.resize(byte + 1, 0);
        }
        if self.done[byte] & (1 << (chunk % 8)) == 0 {
            self.done[byte] |= 1 << (chunk % 8);
            self.rows += rows;
        }
    }

    /// Chunks not written yet, in order.
    pub fn pending(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.chunks).filter(|&c| !self.is_done(c))
    }

    pub fn complete(&self) -> bool {
        self.pending().next().is_none()
    }

    /// The `WHERE` condition selecting chunk `chunk` (pages are `u32` in a
    /// ctid; PostgreSQL 14+ runs it as a TID range scan).
    pub fn ctid_range(&self, chunk: u64) -> String {
        let start = chunk * self.chunk_pages;
        if chunk + 1 >= self.chunks {
            format!("ctid >= '({start},0)'::tid")
        } else {
            let end = start + self.chunk_pages;
            format!("ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid")
        }
    }
}

impl SnapshotProgress {
    pub fn complete(&self) -> bool {
        self.tables.iter().all(TableProgress::complete)
    }

    pub fn table_mut(&mut self, table: &str) -> Option<&mut TableProgress> {
        self.tables.iter_mut().find(|t| t.table == table)
    }
}

/// A `pg_snapshot` (`xmin:xmax:xip,…`, 64-bit transaction ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgSnapshot {
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
}

impl PgSnapshot {
    pub fn parse(s: &str) -> Option<PgSnapshot> {
        let mut parts = s.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(PgSnapshot { xmin, xmax, xip })
    }

    /// Whether a row version whose (raw, 32-bit) `xmin` is `xmin` was
    /// written by a transaction this snapshot does not see. `next` is a
    /// 64-bit id newer than every transaction the reading statement saw
    /// (its snapshot's xmax): the 32-bit id is widened to the newest 64-bit
    /// id below `next` with the same low bits.
    pub fn written_after(&self, xmin: u32, next: u64) -> bool {
        // Bootstrap and frozen ids (1, 2) are older than everything.
        if xmin < 3 {
            return false;
        }
        let back = u64::from((next as u32).wrapping_sub(xmin));
        let Some(full) = next.checked_sub(back) else {
            return false;
        };
        if full >= self.xmax {
            return true;
        }
        full >= self.xmin && self.xip.contains(&full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_versions_written_after_a_snapshot_are_recognised() {
        let s = PgSnapshot::parse("100:110:103,105").unwrap();
        assert!(!s.written_after(99, 200));
        assert!(!s.written_after(104, 200));
        assert!(s.written_after(103, 200));
        assert!(s.written_after(110, 200));
        assert!(s.written_after(150, 200));
        assert!(!s.written_after(2, 200));
        // Across the 32-bit wrap: xmax is 2^32 + 10.
        let s = PgSnapshot::parse("4294967290:4294967306:").unwrap();
        assert!(!s.written_after(4_294_967_295, 4_294_967_400));
        assert!(s.written_after(20, 4_294_967_400));
        assert!(!s.written_after(5, 4_294_967_400));
        assert_eq!(PgSnapshot::parse("nonsense"), None);
    }

    #[test]
    fn chunks_cover_every_page_once_and_the_last_is_open_ended() {
        let t = TableProgress::plan("public.t".into(), 10, 4);
        assert_eq!(t.chunks, 3);
        assert_eq!(
            t.ctid_range(0),
            "ctid >= '(0,0)'::tid AND ctid < '(4,0)'::tid"
        );
        assert_eq!(
            t.ctid_range(1),
            "ctid >= '(4,0)'::tid AND ctid < '(8,0)'::tid"
        );
        assert_eq!(t.ctid_range(2), "ctid >= '(8,0)'::tid");
        let empty = TableProgress::plan("public.e".into(), 0, 4);
        assert_eq!(empty.chunks, 1);
        assert_eq!(empty.ctid_range(0), "ctid >= '(0,0)'::tid");
    }

    #[test]
    fn marking_done_is_idempotent_and_counts_rows_once() {
        let mut t = TableProgress::plan("public.t".into(), 100, 10);
        assert_eq!(t.pending().count(), 10);
        t.mark_done(9, 5);
        t.mark_done(9, 5);
        t.mark_done(0, 3);
        assert_eq!(t.rows, 8);
        assert!(t.is_done(9) && t.is_done(0) && !t.is_done(1));
        assert_eq!(t.pending().collect::<Vec<_>>(), (1..9).collect::<Vec<_>>());
        for c in 1..9 {
            t.mark_done(c, 0);
        }
        assert!(t.complete());
    }
}
