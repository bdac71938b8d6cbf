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

#[cfg(test)]
mod tests {
    use super::*;

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
