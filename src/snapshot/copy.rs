//! Parser of `COPY … TO STDOUT` text format rows into tuples of text
//! values — the same text output functions pgoutput uses, so snapshot rows
//! go through the same encoder as streamed changes.
//!
//! PostgreSQL sends one row per CopyData message, but nothing here relies
//! on it: input is split on newlines, a partial line is carried over.
//! Fields without a backslash stay zero-copy slices of the input.
//! <https://www.postgresql.org/docs/15/sql-copy.html#id-1.9.3.55.9.2>

use bytes::{Bytes, BytesMut};

use crate::event::{Tuple, TupleValue};

/// Why a COPY row could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyError {
    #[error("a COPY row has {found} fields, the table has {expected} columns")]
    FieldCount { expected: usize, found: usize },
    #[error("the COPY data ended inside a row")]
    Truncated,
}

/// Splits COPY text data into rows of `columns` fields.
pub struct CopyParser {
    columns: usize,
    carry: BytesMut,
}

impl CopyParser {
    pub fn new(columns: usize) -> CopyParser {
        CopyParser {
            columns,
            carry: BytesMut::new(),
        }
    }

    /// Parses every complete row in `data` (plus what an earlier call left
    /// over) and appends it to `out`; returns the rows' value bytes.
    pub fn push(&mut self, data: Bytes, out: &mut Vec<Tuple>) -> Result<usize, CopyError> {
        let mut data = if self.carry.is_empty() {
            data
        } else {
            self.carry.extend_from_slice(&data);
            self.carry.split().freeze()
        };
        let mut bytes = 0;
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let line = data.split_to(nl + 1);
            let line = line.slice(..nl);
            bytes += line.len();
            out.push(self.row(line)?);
        }
        if !data.is_empty() {
            self.carry.extend_from_slice(&data);
        }
        Ok(bytes)
    }

    /// Ends the input: a partial row left over is an error.
    pub fn finish(&self) -> Result<(), CopyError> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(CopyError::Truncated)
        }
    }

    fn row(&self, line: Bytes) -> Result<Tuple, CopyError> {
        let mut tuple = Vec::with_capacity(self.columns);
        if self.columns == 0 {
            // A table without columns prints empty lines.
            return if line.is_empty() {
                Ok(tuple)
            } else {
                Err(CopyError::FieldCount {
                    expected: 0,
                    found: 1,
                })
            };
        }
        let mut start = 0;
        loop {
            let end = line[start..]
                .iter()
                .position(|&b| b == b'\t')
                .map_or(line.len(), |p| start + p);
            tuple.push(field(line.slice(start..end)));
            if end == line.len() {
                break;
            }
            start = end + 1;
        }
        if tuple.len() != self.columns {
            return Err(CopyError::FieldCount {
                expected: self.columns,
                found: tuple.len(),
            });
        }
        Ok(tuple)
    }
}

fn field(raw: Bytes) -> TupleValue {
    if raw.as_ref() == b"\\N" {
        return TupleValue::Null;
    }
    if !raw.contains(&b'\\') {
        return TupleValue::Text(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 == raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                    v = v * 8 + u32::from(raw[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                    v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    TupleValue::Text(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn parses_fields_nulls_and_escapes() {
        let mut p = CopyParser::new(3);
        let mut rows = Vec::new();
        p.push(
            Bytes::from_static(b"1\t\\N\ta\\tb\\\\c\\nd\n2\t\t\\101\\x41\n"),
            &mut rows,
        )
        .unwrap();
        p.finish().unwrap();
        assert_eq!(
            rows,
            vec![
                vec![text("1"), TupleValue::Null, text("a\tb\\c\nd")],
                vec![text("2"), text(""), text("AA")],
            ]
        );
    }

    #[test]
    fn a_row_split_over_messages_is_joined() {
        let mut p = CopyParser::new(2);
        let mut rows = Vec::new();
        p.push(Bytes::from_static(b"1\tab"), &mut rows).unwrap();
        assert!(rows.is_empty());
        assert_eq!(p.finish(), Err(CopyError::Truncated));
        p.push(Bytes::from_static(b"c\n"), &mut rows).unwrap();
        assert_eq!(rows, vec![vec![text("1"), text("abc")]]);
        p.finish().unwrap();
    }

    #[test]
    fn a_wrong_field_count_is_an_error_not_a_panic() {
        let mut p = CopyParser::new(3);
        let mut rows = Vec::new();
        assert_eq!(
            p.push(Bytes::from_static(b"1\t2\n"), &mut rows),
            Err(CopyError::FieldCount {
                expected: 3,
                found: 2
            })
        );
        // A trailing backslash is kept, not a panic.
        let mut p = CopyParser::new(1);
        p.push(Bytes::from_static(b"a\\\n"), &mut rows).unwrap();
    }
}
