//! PostgreSQL array output (`{1,NULL,"a b"}`) → Avro array of the element
//! type with nullable elements.
//!
//! Implements the output side of
//! <https://www.postgresql.org/docs/current/arrays.html#ARRAYS-IO>: elements
//! separated by the element type's delimiter, `NULL` unquoted for SQL
//! NULL, double quotes around elements that are empty, contain the
//! delimiter, braces, quotes, backslashes or white space (or spell
//! `NULL`), with `\` escaping `"` and `\` inside quotes, and an optional
//! `[lower:upper]=` prefix when a lower bound is not 1.
//!
//! Multi-dimensional arrays are flattened in row-major order: the Avro
//! schema is fixed per relation version and pgoutput does not say how many
//! dimensions a column has (nor does PostgreSQL enforce it).
//!
//! Invariants: never panics on any input; allocates only for elements that
//! contain backslash escapes (into one scratch buffer per array).

use super::encode::write_long;
use super::types::{ColumnType, ValueError};

/// One leaf element as it appears in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element<'a> {
    /// Unquoted `NULL`.
    Null,
    /// The element's text, unquoted or quoted without escapes.
    Plain(&'a [u8]),
    /// Quoted text that contains `\` escapes (still escaped).
    Escaped(&'a [u8]),
}

const MALFORMED: ValueError = ValueError::Malformed("array");

/// Parser states between tokens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Right after `{`: an element, a nested `{`, or `}` (empty).
    Open,
    /// After a delimiter: an element or a nested `{`.
    Item,
    /// After an element or a `}`: the delimiter or `}`.
    After,
}

/// Calls `f` for every leaf element of `text` in row-major order, after
/// checking the structure as it goes.
fn for_each_element<'a>(
    text: &'a [u8],
    delimiter: u8,
    mut f: impl FnMut(Element<'a>) -> Result<(), ValueError>,
) -> Result<(), ValueError> {
    let mut s = text;
    if s.first() == Some(&b'[') {
        // Dimension decoration, e.g. `[0:1]={…}` or `[1:2][3:4]={…}`.
        let eq = s.iter().position(|&c| c == b'=').ok_or(MALFORMED)?;
        let dims_ok = s[..eq]
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'[' | b']' | b':' | b'-'));
        if !dims_ok {
            return Err(MALFORMED);
        }
        s = &s[eq + 1..];
    }
    if s.first() != Some(&b'{') {
        return Err(MALFORMED);
    }
    let mut i = 1;
    let mut depth = 1usize;
    let mut state = State::Open;
    while depth > 0 {
        let c = *s.get(i).ok_or(MALFORMED)?;
        match state {
            State::Open if c == b'}' => {
                depth -= 1;
                i += 1;
                state = State::After;
            }
            State::Open | State::Item => {
                if c == b'{' {
                    depth += 1;
                    i += 1;
                    state = State::Open;
                    continue;
                }
                if c == b'"' {
                    let body = &s[i + 1..];
                    let mut j = 0;
                    let mut escaped = false;
                    loop {
                        match body.get(j) {
                            None => return Err(MALFORMED),
                            Some(b'\\') => {
                                escaped = true;
                                j += 2;
                            }
                            Some(b'"') => break,
                            Some(_) => j += 1,
                        }
                    }
                    let raw = &body[..j];
                    f(if escaped {
                        Element::Escaped(raw)
                    } else {
                        Element::Plain(raw)
                    })?;
                    i += j + 2;
                } else {
                    let rest = &s[i..];
                    let len = rest
                        .iter()
                        .position(|&c| c == delimiter || c == b'}')
                        .ok_or(MALFORMED)?;
                    let raw = &rest[..len];
                    if raw.is_empty() || raw.iter().any(|&c| matches!(c, b'{' | b'"' | b'\\')) {
                        return Err(MALFORMED);
                    }
                    f(if raw.eq_ignore_ascii_case(b"NULL") {
                        Element::Null
                    } else {
                        Element::Plain(raw)
                    })?;
                    i += len;
                }
                state = State::After;
            }
            State::After if c == delimiter => {
                i += 1;
                state = State::Item;
            }
            State::After if c == b'}' => {
                depth -= 1;
                i += 1;
            }
            State::After => return Err(MALFORMED),
        }
    }
    if i == s.len() { Ok(()) } else { Err(MALFORMED) }
}

/// Appends the array `text` as an Avro array whose items are
/// `["null", element]`. A numeric `NaN`/`±Infinity` element becomes null,
/// as Debezium writes it.
pub(crate) fn write_array(
    text: &[u8],
    delimiter: u8,
    element: &ColumnType,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let mut count = 0i64;
    for_each_element(text, delimiter, |_| {
        count += 1;
        Ok(())
    })?;
    if count > 0 {
        // One block with every item, then the terminating empty block.
        write_long(out, count);
        let mut scratch = Vec::new();
        for_each_element(text, delimiter, |e| match e {
            Element::Null => {
                out.push(0);
                Ok(())
            }
            Element::Plain(raw) => write_item(element, raw, out),
            Element::Escaped(raw) => {
                scratch.clear();
                let mut bytes = raw.iter();
                while let Some(&c) = bytes.next() {
                    scratch.push(if c == b'\\' {
                        *bytes.next().ok_or(MALFORMED)?
                    } else {
                        c
                    });
                }
                write_item(element, &scratch, out)
            }
        })?;
    }
    write_long(out, 0);
    Ok(())
}

fn write_item(element: &ColumnType, text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    let mark = out.len();
    out.push(2); // union branch 1: the element type
    match element.encode_text(text, out) {
        Err(ValueError::NumericSpecial) => {
            out.truncate(mark);
            out.push(0);
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(text: &str) -> Result<Vec<Option<String>>, ValueError> {
        let mut v = Vec::new();
        for_each_element(text.as_bytes(), b',', |e| {
            v.push(match e {
                Element::Null => None,
                Element::Plain(r) => Some(String::from_utf8(r.to_vec()).unwrap()),
                Element::Escaped(r) => Some(format!("esc:{}", String::from_utf8_lossy(r))),
            });
            Ok(())
        })?;
        Ok(v)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.into())
    }

    #[test]
    fn parses_postgres_array_output() {
        assert_eq!(leaves("{}").unwrap(), vec![]);
        assert_eq!(leaves("{1}").unwrap(), vec![s("1")]);
        assert_eq!(leaves("{1,NULL,-3}").unwrap(), vec![s("1"), None, s("-3")]);
        // Quoted "NULL" is the string, unquoted NULL is SQL NULL.
        assert_eq!(
            leaves(r#"{"NULL",NULL,null,"",""}"#).unwrap(),
            vec![s("NULL"), None, None, s(""), s("")]
        );
        assert_eq!(
            leaves(r#"{"a b","{x}"," sp ","a,b"}"#).unwrap(),
            vec![s("a b"), s("{x}"), s(" sp "), s("a,b")]
        );
        assert_eq!(
            leaves(r#"{"q\"uo\\te"}"#).unwrap(),
            vec![s(r#"esc:q\"uo\\te"#)]
        );
        // Multi-dimensional: row-major.
        assert_eq!(
            leaves("{{1,2},{3,NULL}}").unwrap(),
            vec![s("1"), s("2"), s("3"), None]
        );
        assert_eq!(
            leaves("{{{1},{2}},{{3},{4}}}").unwrap(),
            vec![s("1"), s("2"), s("3"), s("4")]
        );
        // Lower bounds other than 1.
        assert_eq!(leaves("[0:1]={7,8}").unwrap(), vec![s("7"), s("8")]);
        assert_eq!(
            leaves("[-2:-1][1:1]={{7},{8}}").unwrap(),
            vec![s("7"), s("8")]
        );
    }

    #[test]
    fn rejects_what_postgres_never_prints() {
        for bad in [
            "",
            "{",
            "}",
            "1,2",
            "{1,2",
            "{1,,2}",
            "{,}",
            "{1}}",
            "{1}x",
            "{\"a}",
            "{\"a\"b}",
            "{a\"b}",
            "{a\\b}",
            "{{1},2",
            "[1:2]{1,2}",
            "[a]={1}",
            "{1 2}}",
        ] {
            assert_eq!(leaves(bad), Err(MALFORMED), "{bad:?}");
        }
    }

    #[test]
    fn box_arrays_use_semicolons() {
        let mut v = Vec::new();
        for_each_element(b"{(1,1),(0,0);(2,2),(1,1)}", b';', |e| {
            v.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            v,
            vec![
                Element::Plain(b"(1,1),(0,0)"),
                Element::Plain(b"(2,2),(1,1)")
            ]
        );
    }
}
