//! Reads a loaded connector document key by key, collecting every problem
//! instead of stopping at the first (which is all `serde` can do).
//!
//! Each section remembers which keys it was asked for; whatever is left when
//! it is finished is an unknown key, reported with the closest known key.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Secret;

/// One table of the connector file (or the top level).
pub(super) struct Section {
    file: String,
    /// Dotted path of this section ("" for the top level).
    path: String,
    map: Map<String, Value>,
    known: Vec<String>,
    /// Shared by every section of one file.
    problems: Rc<RefCell<Vec<String>>>,
}

impl Section {
    pub(super) fn root(file: &str, value: Value, problems: Rc<RefCell<Vec<String>>>) -> Self {
        let map = match value {
            Value::Object(m) => m,
            _ => {
                problems
                    .borrow_mut()
                    .push(format!("{file}: the file must be a TOML table"));
                Map::new()
            }
        };
        Section {
            file: file.to_owned(),
            path: String::new(),
            map,
            known: Vec::new(),
            problems,
        }
    }

    fn push(&self, line: String) {
        self.problems.borrow_mut().push(line);
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records a problem about `key` of this section.
    pub(super) fn problem_at(&self, key: &str, message: &str) {
        self.push(format!("{}: {}: {message}", self.file, self.key_path(key)));
    }

    /// A nested table; missing is the same as empty.
    pub(super) fn section(&mut self, key: &str) -> Section {
        self.known.push(key.to_owned());
        let map = match self.map.remove(key) {
            None => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                self.problem_at(
                    key,
                    &format!("must be a table ([{key}]), got {}", kind(&other)),
                );
                Map::new()
            }
        };
        Section {
            file: self.file.clone(),
            path: self.key_path(key),
            map,
            known: Vec::new(),
            problems: Rc::clone(&self.problems),
        }
    }

    pub(super) fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        self.known.push(key.to_owned());
        let value = self.map.remove(key)?;
        let shown = kind(&value);
        match serde_json::from_value(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem_at(key, &format!("{} (got {shown})", short(&e)));
                None
            }
        }
    }

    pub(super) fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let present = self.map.contains_key(key);
        let v = self.optional(key);
        if !present {
            self.problem_at(key, "is required");
        }
        v
    }

    /// A secret given as `<key>_env` (a variable name) or `<key>_file` (a
    /// path). A plain `<key>` in the file is refused: files get committed.
    pub(super) fn secret(&mut self, key: &str, env: &BTreeMap<String, String>) -> Option<Secret> {
        let env_key = format!("{key}_env");
        let file_key = format!("{key}_file");
        if self.map.contains_key(key) {
            self.known.push(key.to_owned());
            self.map.remove(key);
            self.problem_at(
                key,
                &format!(
                    "secrets are not read from connector files; name an environment variable with {env_key} or a file with {file_key}"
                ),
            );
        }
        let from_env: Option<String> = self.optional(&env_key);
        let from_file: Option<String> = self.optional(&file_key);
        match (from_env, from_file) {
            (Some(_), Some(_)) => {
                self.problem_at(
                    &env_key,
                    &format!("set either {env_key} or {file_key}, not both"),
                );
                None
            }
            (Some(var), None) => match env.get(&var) {
                Some(v) => Some(Secret::new(v.clone())),
                None => {
                    self.problem_at(&env_key, &format!("environment variable {var} is not set"));
                    None
                }
            },
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(v) => Some(Secret::new(v.trim_end_matches(['\n', '\r']).to_owned())),
                Err(e) => {
                    self.problem_at(&file_key, &format!("cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// A table of string values (numbers and booleans are accepted and
    /// turned into their text, as librdkafka wants every property as text).
    pub(super) fn string_map(&mut self, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut nested = self.section(key);
        for (k, v) in std::mem::take(&mut nested.map) {
            match v {
                Value::String(s) => {
                    out.insert(k, s);
                }
                Value::Number(n) => {
                    out.insert(k, n.to_string());
                }
                Value::Bool(b) => {
                    out.insert(k, b.to_string());
                }
                other => nested.problem_at(
                    &k,
                    &format!("must be a string, number or boolean, got {}", kind(&other)),
                ),
            }
        }
        out
    }

    pub(super) fn at_least(&self, key: &str, value: u64, min: u64) {
        if value < min {
            self.problem_at(key, &format!("must be >= {min}, got {value}"));
        }
    }

    /// Reports every key nobody asked for.
    pub(super) fn finish(self) {
        for key in self.map.keys() {
            let hint = closest(key, &self.known)
                .map(|k| format!("; did you mean {k:?}?"))
                .unwrap_or_default();
            let known = self.known.join(", ");
            self.problem_at(key, &format!("unknown key{hint} (known keys: {known})"));
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// serde_json's message without its " at line 1 column 2" tail, which points
/// into an intermediate document the user never saw.
fn short(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Section {
    /// An array of tables (`[[key]]` in TOML), each read as its own section
    /// named `key[i]` in messages; missing is the same as empty.
    pub(super) fn sections(&mut self, key: &str) -> Vec<Section> {
        self.known.push(key.to_owned());
        let items = match self.map.remove(key) {
            None => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.problem_at(
                    key,
                    &format!(
                        "must be an array of tables ([[{key}]] blocks), got {}",
                        kind(&other)
                    ),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let path = self.key_path(&format!("{key}[{i}]"));
            match item {
                Value::Object(map) => out.push(Section {
                    file: self.file.clone(),
                    path,
                    map,
                    known: Vec::new(),
                    problems: Rc::clone(&self.problems),
                }),
                other => self.push(format!(
                    "{}: {path}: must be a table, got {}",
                    self.file,
                    kind(&other)
                )),
            }
        }
        out
    }
}
