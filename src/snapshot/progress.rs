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
    /// 0: chunks are whole pages. Otherwise each chunk is this many line
    /// pointers of one page (`chunk_pages` is then 1): a table whose
    /// rows are so large (TOASTed values) that one page's rows exceed
    /// `snapshot.chunk_max_bytes` is read a part of a page at a time.
    pub chunk_items: u64,
    /// With `chunk_items`: line pointers a page can hold
    /// (`MaxHeapTuplesPerPage` of the server's block size).
    pub page_items: u64,
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
            chunk_items: 0,
            page_items: 0,
        }
    }

    /// A plan whose chunks are `chunk_items` line pointers of one page
    /// (of `page_items`) each, for tables with very large rows.
    pub fn plan_items(
        table: String,
        pages: u64,
        chunk_items: u64,
        page_items: u64,
    ) -> TableProgress {
        let page_items = page_items.max(1);
        let chunk_items = chunk_items.clamp(1, page_items);
        let per_page = page_items.div_ceil(chunk_items);
        let chunks = pages.max(1) * per_page;
        TableProgress {
            chunk_items,
            page_items,
            chunks,
            done: vec![0; chunks.div_ceil(8) as usize],
            ..TableProgress::plan(table, pages, 1)
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
        if self.chunk_items > 0 {
            let per_page = self.page_items.max(1).div_ceil(self.chunk_items);
            let page = chunk / per_page;
            let part = chunk % per_page;
            // Line pointers count from 1.
            let first = part * self.chunk_items + 1;
            return if chunk + 1 >= self.chunks {
                format!("ctid >= '({page},{first})'::tid")
            } else if part + 1 == per_page {
                format!(
                    "ctid >= '({page},{first})'::tid AND ctid < '({},0)'::tid",
                    page + 1
                )
            } else {
                format!(
                    "ctid >= '({page},{first})'::tid AND ctid < '({page},{})'::tid",
                    first + self.chunk_items
                )
            };
        }
        let start = chunk * self.chunk_pages;
        if chunk + 1 >= self.chunks {
            format!("ctid >= '({start},0)'::tid")
        } else {
            let end = start + self.chunk_pages;
            format!("ctid >= '({start},0)'::tid AND ctid < '({end},0)'::tid")
        }
    }
}

/// Heap block numbers are 32-bit: no chunk starts at or past this page.
const PAGE_LIMIT: u64 = 1 << 32;

impl TableProgress {
    /// Checks progress read back from an offset record, which siphon must
    /// not trust blindly (a damaged or foreign record): the table name has
    /// the form `schema.table`, chunks are at least one page and start at
    /// valid page numbers, and no chunk past the planned count is marked
    /// done. The error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let table = &self.table;
        if !table
            .split_once('.')
            .is_some_and(|(s, t)| !s.is_empty() && !t.is_empty())
            || table.chars().any(char::is_control)
        {
            return Err(format!(
                "snapshot progress names table {table:?}, which is not of the form schema.table"
            ));
        }
        let bad = |what: String| Err(format!("snapshot progress of table {table}: {what}"));
        if self.chunk_pages == 0 {
            return bad("chunk_pages is 0".into());
        }
        if self.chunks == 0 {
            return bad("chunks is 0 (a plan has at least one)".into());
        }
        if self.chunk_items > 0
            && (self.page_items == 0 || self.page_items > 1 << 16 || self.chunk_pages != 1)
        {
            return bad(format!(
                "chunks of {} line pointers need 1 page per chunk and at most 65536 line pointers per page, got {} and {}",
                self.chunk_items, self.chunk_pages, self.page_items
            ));
        }
        let pages_per_chunk_unit = if self.chunk_items > 0 {
            1
        } else {
            self.chunk_pages
        };
        let chunks_per_page = if self.chunk_items > 0 {
            self.page_items.div_ceil(self.chunk_items)
        } else {
            1
        };
        let last_start = ((self.chunks - 1) / chunks_per_page).checked_mul(pages_per_chunk_unit);
        if last_start.is_none_or(|start| start >= PAGE_LIMIT) {
            return bad(format!(
                "{} chunks of {} pages reach past the largest page number ({})",
                self.chunks,
                self.chunk_pages,
                PAGE_LIMIT - 1
            ));
        }
        let bits = self.done.len() as u64 * 8;
        if let Some(c) = (self.chunks..bits).find(|&c| self.is_done(c)) {
            return bad(format!(
                "chunk {c} is marked done but the plan has {} chunks",
                self.chunks
            ));
        }
        if let Some(s) = &self.as_of
            && PgSnapshot::parse(s).is_none()
        {
            return bad(format!("as_of {s:?} is not a pg_snapshot"));
        }
        Ok(())
    }
}

impl SnapshotProgress {
    /// [`TableProgress::validate`] for every table, each listed once.
    pub fn validate(&self) -> Result<(), String> {
        for (i, t) in self.tables.iter().enumerate() {
            t.validate()?;
            if self.tables[..i].iter().any(|u| u.table == t.table) {
                return Err(format!("snapshot progress lists table {} twice", t.table));
            }
        }
        Ok(())
    }

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
    fn progress_read_back_is_validated() {
        let mut plan = TableProgress::plan("public.t".into(), 10, 4);
        plan.mark_done(2, 7);
        plan.as_of = Some("100:110:103".into());
        assert_eq!(plan.validate(), Ok(()));
        let p = SnapshotProgress {
            tables: vec![plan.clone(), TableProgress::plan("s.e".into(), 0, 4)],
        };
        assert_eq!(p.validate(), Ok(()));
        // The largest table PostgreSQL allows, in one-page chunks.
        let big = TableProgress::plan("public.big".into(), PAGE_LIMIT - 1, 1);
        assert_eq!(big.validate(), Ok(()));

        let broken = |f: &dyn Fn(&mut TableProgress)| {
            let mut t = plan.clone();
            f(&mut t);
            t.validate().unwrap_err()
        };
        assert_eq!(
            broken(&|t| t.table = "orders".into()),
            "snapshot progress names table \"orders\", which is not of the form schema.table"
        );
        assert_eq!(
            broken(&|t| t.table = ".t".into()),
            "snapshot progress names table \".t\", which is not of the form schema.table"
        );
        assert_eq!(
            broken(&|t| t.chunk_pages = 0),
            "snapshot progress of table public.t: chunk_pages is 0"
        );
        assert_eq!(
            broken(&|t| t.chunks = 0),
            "snapshot progress of table public.t: chunks is 0 (a plan has at least one)"
        );
        assert_eq!(
            broken(&|t| t.chunk_pages = 1 << 40),
            "snapshot progress of table public.t: 3 chunks of 1099511627776 pages reach past the largest page number (4294967295)"
        );
        assert_eq!(
            broken(&|t| t.chunks = u64::MAX),
            "snapshot progress of table public.t: 18446744073709551615 chunks of 4 pages reach past the largest page number (4294967295)"
        );
        assert_eq!(
            broken(&|t| t.done = vec![0b1000]),
            "snapshot progress of table public.t: chunk 3 is marked done but the plan has 3 chunks"
        );
        assert_eq!(
            broken(&|t| t.done = vec![0, 1]),
            "snapshot progress of table public.t: chunk 8 is marked done but the plan has 3 chunks"
        );
        assert_eq!(
            broken(&|t| t.as_of = Some("x".into())),
            "snapshot progress of table public.t: as_of \"x\" is not a pg_snapshot"
        );
        let twice = SnapshotProgress {
            tables: vec![plan.clone(), plan],
        };
        assert_eq!(
            twice.validate().unwrap_err(),
            "snapshot progress lists table public.t twice"
        );
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
