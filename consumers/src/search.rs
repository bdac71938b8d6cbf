//! The search pattern: a local tantivy index with one document per row,
//! kept equal to the table, searchable by the text of its columns.
//!
//! Fields: `_id` (table and key, the document's identity), `_table`,
//! `_key`, `_position` (of the last change applied), `_live` (`1` for a
//! row; `0` for a deleted key's tombstone, kept so an older change can
//! never resurrect it; `t` for a table's truncate marker), `_row` (the row
//! as JSON, stored) and `text` (every string column, tokenized).
//!
//! A change is applied only if its position is newer than the key's
//! document and the table's truncate marker; a batch is one tantivy commit
//! (atomic: documents and positions together), made before the consumer
//! offsets are committed. A replay after a crash finds newer or equal
//! positions and changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value as Json;
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{QueryParser, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::decode::{Change, ChangeKind};
use crate::source::Store;

struct Fields {
    id: Field,
    table: Field,
    key: Field,
    position: Field,
    live: Field,
    row: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        id: b.add_text_field("_id", STRING | STORED),
        table: b.add_text_field("_table", STRING | STORED),
        key: b.add_text_field("_key", STRING | STORED),
        position: b.add_text_field("_position", STRING | STORED),
        live: b.add_text_field("_live", STRING | STORED),
        row: b.add_text_field("_row", STORED),
        text: b.add_text_field("text", TEXT),
    };
    (b.build(), f)
}

/// An existing index, for reading (never creates one under a running
/// consumer).
fn open_existing(dir: &Path) -> Result<(Index, Fields)> {
    let index = Index::open_in_dir(dir)
        .with_context(|| format!("opening the index in {}", dir.display()))?;
    let schema = index.schema();
    let field = |name: &str| {
        schema
            .get_field(name)
            .with_context(|| format!("no field {name} in the index"))
    };
    let fields = Fields {
        id: field("_id")?,
        table: field("_table")?,
        key: field("_key")?,
        position: field("_position")?,
        live: field("_live")?,
        row: field("_row")?,
        text: field("text")?,
    };
    Ok((index, fields))
}

fn open(dir: &Path) -> Result<(Index, Fields)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (schema, fields) = schema();
    let directory = tantivy::directory::MmapDirectory::open(dir)
        .with_context(|| format!("opening index directory {}", dir.display()))?;
    let index = Index::open_or_create(directory, schema)
        .with_context(|| format!("opening the index in {}", dir.display()))?;
    Ok((index, fields))
}

fn doc_id(table: &str, key: &str) -> String {
    format!("{table}\u{1f}{key}")
}

fn truncate_id(table: &str) -> String {
    format!("\u{1f}truncate\u{1f}{table}")
}

pub struct SearchIndex {
    fields: Fields,
    writer: IndexWriter,
    reader: IndexReader,
    /// Positions written by the uncommitted batch (`_id` → position).
    pending: HashMap<String, String>,
}

impl SearchIndex {
    pub fn open(dir: &Path) -> Result<SearchIndex> {
        let (index, fields) = open(dir)?;
        let writer = index.writer_with_num_threads(1, 50_000_000)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(SearchIndex {
            fields,
            writer,
            reader,
            pending: HashMap::new(),
        })
    }

    /// The position stored for document `id` (this batch's first).
    fn position_of(&self, id: &str) -> Result<Option<String>> {
        if let Some(p) = self.pending.get(id) {
            return Ok(Some(p.clone()));
        }
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.id, id),
            IndexRecordOption::Basic,
        );
        let hits = searcher.search(&query, &TopDocs::with_limit(1).order_by_score())?;
        let Some((_, address)) = hits.first() else {
            return Ok(None);
        };
        let doc: TantivyDocument = searcher.doc(*address)?;
        Ok(text(&doc, self.fields.position))
    }

    fn put(&mut self, id: &str, c: &Change, live: &str, row: Option<&Json>) -> Result<()> {
        let f = &self.fields;
        self.writer.delete_term(Term::from_field_text(f.id, id));
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, id);
        doc.add_text(f.table, &c.table);
        doc.add_text(f.key, &c.key);
        doc.add_text(f.position, &c.position);
        doc.add_text(f.live, live);
        if let Some(row) = row {
            doc.add_text(f.row, row.to_string());
            let mut words = String::new();
            if let Json::Object(m) = row {
                for v in m.values() {
                    if let Json::String(s) = v {
                        words.push_str(s);
                        words.push('\n');
                    }
                }
            }
            doc.add_text(f.text, words);
        }
        self.writer.add_document(doc)?;
        self.pending.insert(id.to_owned(), c.position.clone());
        Ok(())
    }

    fn truncate(&mut self, c: &Change) -> Result<()> {
        self.put(&truncate_id(&c.table), c, "t", None)?;
        // Committed documents of the table older than the truncate...
        let searcher = self.reader.searcher();
        let query = TermQuery::new(
            Term::from_field_text(self.fields.table, &c.table),
            IndexRecordOption::Basic,
        );
        let mut gone = Vec::new();
        for address in searcher.search(&query, &DocSetCollector)? {
            let doc: TantivyDocument = searcher.doc(address)?;
            let (Some(id), Some(pos)) =
                (text(&doc, self.fields.id), text(&doc, self.fields.position))
            else {
                continue;
            };
            if pos < c.position && !self.pending.contains_key(&id) {
                gone.push(id);
            }
        }
        // ...and this batch's.
        let prefix = doc_id(&c.table, "");
        gone.extend(
            self.pending
                .iter()
                .filter(|(id, pos)| id.starts_with(&prefix) && **pos < c.position)
                .map(|(id, _)| id.clone()),
        );
        for id in gone {
            self.writer
                .delete_term(Term::from_field_text(self.fields.id, &id));
            self.pending.remove(&id);
        }
        Ok(())
    }
}

fn text(doc: &TantivyDocument, field: Field) -> Option<String> {
    doc.get_first(field)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

impl Store for SearchIndex {
    fn apply(&mut self, batch: &[Change]) -> Result<usize> {
        let mut applied = 0;
        for c in batch {
            if c.kind == ChangeKind::Tombstone {
                continue;
            }
            let truncated = self.position_of(&truncate_id(&c.table))?;
            if truncated.is_some_and(|t| c.position <= t) {
                continue;
            }
            if c.kind == ChangeKind::Truncate {
                self.truncate(c)?;
                applied += 1;
                continue;
            }
            let id = doc_id(&c.table, &c.key);
            if self.position_of(&id)?.is_some_and(|p| c.position <= p) {
                continue;
            }
            match &c.kind {
                ChangeKind::Upsert { row } => self.put(&id, c, "1", Some(row))?,
                _ => self.put(&id, c, "0", None)?,
            }
            applied += 1;
        }
        Ok(applied)
    }

    fn flush(&mut self) -> Result<()> {
        self.writer.commit()?;
        self.reader.reload()?;
        self.pending.clear();
        Ok(())
    }
}

/// Every live row in the index at `dir`: (table, key) → row.
pub fn rows(dir: &Path) -> Result<BTreeMap<(String, String), Json>> {
    let (index, f) = open_existing(dir)?;
    let searcher = index.reader()?.searcher();
    let query = TermQuery::new(Term::from_field_text(f.live, "1"), IndexRecordOption::Basic);
    let mut out = BTreeMap::new();
    for address in searcher.search(&query, &DocSetCollector)? {
        let doc: TantivyDocument = searcher.doc(address)?;
        let (Some(table), Some(key), Some(row)) =
            (text(&doc, f.table), text(&doc, f.key), text(&doc, f.row))
        else {
            continue;
        };
        let duplicate = out.insert((table.clone(), key.clone()), serde_json::from_str(&row)?);
        anyhow::ensure!(duplicate.is_none(), "two documents for {table} {key}");
    }
    Ok(out)
}

/// Rows whose string columns match `query` (tantivy's query syntax), best
/// first: (table, row).
pub fn search(dir: &Path, query: &str, limit: usize) -> Result<Vec<(String, Json)>> {
    let (index, f) = open_existing(dir)?;
    let searcher = index.reader()?.searcher();
    let parser = QueryParser::for_index(&index, vec![f.text]);
    let q = parser.parse_query(&format!("+_live:1 +({query})"))?;
    let mut out = Vec::new();
    for (_, address) in searcher.search(&q, &TopDocs::with_limit(limit).order_by_score())? {
        let doc: TantivyDocument = searcher.doc(address)?;
        if let (Some(table), Some(row)) = (text(&doc, f.table), text(&doc, f.row)) {
            out.push((table, serde_json::from_str(&row)?));
        }
    }
    Ok(out)
}
