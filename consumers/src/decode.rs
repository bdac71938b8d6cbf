//! Records → [`Change`]s: the Confluent wire format through the schema
//! registry (`GET /schemas/ids/{id}`, cached), Debezium's envelope, and
//! siphon's correlation headers.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use apache_avro::Schema;
use apache_avro::types::Value;
use serde_json::{Map, Value as Json};

/// The header holding the change's position (`{commit_lsn:016X}/{index:016X}`):
/// byte-wise order is stream order.
pub const POSITION_HEADER: &str = "siphon.position";

/// What a record says happened to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// `c`, `u` or `r`: the key's row is now `row`.
    Upsert { row: Json },
    /// `d`: the key's row is gone.
    Delete,
    /// `t`: every row of the table written before this position is gone.
    Truncate,
    /// A tombstone (null value) after a delete: nothing new.
    Tombstone,
}

/// One decoded record.
#[derive(Clone, Debug)]
pub struct Change {
    /// `schema.table`.
    pub table: String,
    /// The key record as canonical JSON text (fields sorted by name);
    /// empty for a truncate.
    pub key: String,
    /// The `siphon.position` header.
    pub position: String,
    /// The envelope's `op` (`c`, `u`, `d`, `r`, `t`; empty for a tombstone).
    pub op: String,
    /// The envelope's `ts_ms` (0 for a tombstone).
    pub ts_ms: i64,
    pub kind: ChangeKind,
    /// Where the record was read.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Decodes records with schemas fetched from the registry by id.
pub struct Decoder {
    url: String,
    http: reqwest::blocking::Client,
    schemas: HashMap<u32, Schema>,
}

impl Decoder {
    pub fn new(registry_url: &str) -> Result<Decoder> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Decoder {
            url: registry_url.trim_end_matches('/').to_owned(),
            http,
            schemas: HashMap::new(),
        })
    }

    fn schema(&mut self, id: u32) -> Result<&Schema> {
        if !self.schemas.contains_key(&id) {
            let url = format!("{}/schemas/ids/{id}", self.url);
            let body: Json = self
                .http
                .get(&url)
                .send()
                .and_then(reqwest::blocking::Response::error_for_status)
                .with_context(|| format!("registry: GET {url}"))?
                .json()
                .with_context(|| format!("registry: GET {url}: not JSON"))?;
            let text = body["schema"]
                .as_str()
                .ok_or_else(|| anyhow!("registry: GET {url}: no \"schema\" in the answer"))?;
            let schema = Schema::parse_str(text).with_context(|| format!("schema id {id}"))?;
            self.schemas.insert(id, schema);
        }
        Ok(&self.schemas[&id])
    }

    /// Decodes one Confluent-framed Avro datum.
    pub fn datum(&mut self, bytes: &[u8]) -> Result<Value> {
        if bytes.len() < 5 || bytes[0] != 0 {
            bail!("not in the Confluent wire format (magic byte 0 and a schema id)");
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let schema = self.schema(id)?;
        let mut body = &bytes[5..];
        apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .and_then(|r| r.read_value(&mut body))
            .with_context(|| format!("Avro datum of schema id {id}"))
    }

    /// One record of a table topic as a [`Change`] (`partition` and
    /// `offset` left 0 for the caller); `topic` names the table when the
    /// value does not (tombstones).
    pub fn change(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        position: Option<&[u8]>,
    ) -> Result<Change> {
        let position = position
            .and_then(|p| std::str::from_utf8(p).ok())
            .ok_or_else(|| anyhow!("{topic}: a record without a {POSITION_HEADER} header (written by siphon before correlation headers?)"))?
            .to_owned();
        let key = match key {
            Some(k) => json(&self.datum(k)?).to_string(),
            None => String::new(),
        };
        let Some(value) = value else {
            return Ok(Change {
                table: table_of_topic(topic),
                key,
                position,
                op: String::new(),
                ts_ms: 0,
                kind: ChangeKind::Tombstone,
                topic: topic.to_owned(),
                partition: 0,
                offset: 0,
            });
        };
        let envelope = self.datum(value)?;
        let op = match field(&envelope, "op") {
            Some(Value::String(s)) => s.clone(),
            other => bail!("{topic}: envelope without op: {other:?}"),
        };
        let ts_ms = match field(&envelope, "ts_ms") {
            Some(Value::Long(t)) => *t,
            _ => 0,
        };
        let table = match field(&envelope, "source") {
            Some(source) => match (field(source, "schema"), field(source, "table")) {
                (Some(Value::String(s)), Some(Value::String(t))) => format!("{s}.{t}"),
                _ => table_of_topic(topic),
            },
            None => table_of_topic(topic),
        };
        let kind = match op.as_str() {
            "c" | "u" | "r" => ChangeKind::Upsert {
                row: json(
                    field(&envelope, "after")
                        .ok_or_else(|| anyhow!("{topic}: {op} without after"))?,
                ),
            },
            "d" => ChangeKind::Delete,
            "t" => ChangeKind::Truncate,
            other => bail!("{topic}: unknown op {other:?}"),
        };
        Ok(Change {
            table,
            key,
            position,
            op,
            ts_ms,
            kind,
            topic: topic.to_owned(),
            partition: 0,
            offset: 0,
        })
    }
}

/// `{prefix}.{schema}.{table}` → `schema.table`.
fn table_of_topic(topic: &str) -> String {
    let parts: Vec<&str> = topic.rsplitn(3, '.').collect();
    match parts.as_slice() {
        [t, s, _] => format!("{s}.{t}"),
        _ => topic.to_owned(),
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match unwrap(v) {
        Value::Record(fields) => fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| unwrap(v)),
        _ => None,
    }
}

fn unwrap(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => unwrap(inner),
        other => other,
    }
}

/// An Avro value as JSON: records as objects (keys sorted), unions
/// unwrapped, bytes (and decimals, fixed) as lower-case hex, logical
/// temporal types as their integer encoding.
pub fn json(v: &Value) -> Json {
    match unwrap(v) {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Json::from(*i),
        Value::Long(l)
        | Value::TimeMicros(l)
        | Value::TimestampMillis(l)
        | Value::TimestampMicros(l)
        | Value::TimestampNanos(l)
        | Value::LocalTimestampMillis(l)
        | Value::LocalTimestampMicros(l)
        | Value::LocalTimestampNanos(l) => Json::from(*l),
        Value::Float(f) => Json::from(f64::from(*f)),
        Value::Double(d) => Json::from(*d),
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::BigDecimal(d) => Json::String(d.to_string()),
        Value::Uuid(u) => Json::String(u.to_string()),
        Value::Bytes(b) | Value::Fixed(_, b) => Json::String(hex(b)),
        Value::Decimal(d) => {
            let bytes: Vec<u8> = d.try_into().unwrap_or_default();
            Json::String(hex(&bytes))
        }
        Value::Array(items) => Json::Array(items.iter().map(json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), json(v))).collect()),
        Value::Record(fields) => {
            let mut m = Map::new();
            for (k, v) in fields {
                m.insert(k.clone(), json(v));
            }
            Json::Object(m)
        }
        other => Json::String(format!("{other:?}")),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_their_table() {
        assert_eq!(table_of_topic("shop.public.orders"), "public.orders");
        assert_eq!(table_of_topic("a.b.public.orders"), "public.orders");
    }

    #[test]
    fn avro_values_become_ordered_json() {
        let v = Value::Record(vec![
            ("id".into(), Value::Int(7)),
            (
                "name".into(),
                Value::Union(1, Box::new(Value::String("x".into()))),
            ),
            ("note".into(), Value::Union(0, Box::new(Value::Null))),
            ("blob".into(), Value::Bytes(vec![0, 255])),
        ]);
        assert_eq!(
            json(&v).to_string(),
            r#"{"blob":"00ff","id":7,"name":"x","note":null}"#
        );
    }
}
