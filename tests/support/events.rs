//! Decoding what siphon wrote: Confluent wire format → Avro values, with
//! the writer schema fetched by id from the registry.

#![allow(dead_code)]

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use siphon::avro::registry::RegistryClient;

use super::kafka::Record;

/// Splits the Confluent header off: (schema id, Avro body).
pub fn wire(bytes: &[u8]) -> (u32, &[u8]) {
    assert!(bytes.len() >= 5, "record shorter than the wire header");
    assert_eq!(bytes[0], 0, "magic byte");
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    (id, &bytes[5..])
}

/// Decodes one Confluent-framed Avro datum with the schema registered under its id.
pub async fn decode(registry: &RegistryClient, bytes: &[u8]) -> (u32, Value) {
    let (id, mut body) = wire(bytes);
    let schema_json = registry.schema_by_id(id).await.expect("schema by id");
    let schema = Schema::parse_str(&schema_json).expect("registered schema parses");
    let value = GenericDatumReader::builder(&schema)
        .build()
        .and_then(|r| r.read_value(&mut body))
        .expect("record decodes with its registered schema");
    assert!(body.is_empty(), "bytes left after the datum");
    (id, value)
}

/// A decoded change event.
#[derive(Clone, Debug)]
pub struct Event {
    pub topic: String,
    pub key: Option<Value>,
    pub value: Option<Value>,
    pub value_schema_id: Option<u32>,
}

impl Event {
    pub fn op(&self) -> Option<String> {
        match field(self.value.as_ref()?, "op")? {
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// `after` (or `before`) as column → value, unwrapping unions.
    pub fn row(&self, which: &str) -> Option<BTreeMap<String, Value>> {
        let v = unwrap_union(field(self.value.as_ref()?, which)?);
        match v {
            Value::Record(fields) => Some(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), unwrap_union(v).clone()))
                    .collect(),
            ),
            _ => None,
        }
    }

    pub fn source(&self, name: &str) -> Option<Value> {
        let source = field(self.value.as_ref()?, "source")?;
        field(source, name).map(|v| unwrap_union(v).clone())
    }
}

pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match unwrap_union(v) {
        Value::Record(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
        _ => None,
    }
}

pub fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

/// Decodes every record of a topic read with read_committed.
pub async fn decode_all(registry: &RegistryClient, records: &[Record]) -> Vec<Event> {
    decode_with(records, async |bytes: &[u8]| decode(registry, bytes).await).await
}

/// Records as [`Event`]s, each key and value decoded by `decode`.
async fn decode_with(
    records: &[Record],
    mut decode: impl AsyncFnMut(&[u8]) -> (u32, Value),
) -> Vec<Event> {
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let key = match &r.key {
            Some(k) => Some(decode(k).await.1),
            None => None,
        };
        let (value_schema_id, value) = match &r.value {
            Some(v) => {
                let (id, v) = decode(v).await;
                (Some(id), Some(v))
            }
            None => (None, None),
        };
        out.push(Event {
            topic: r.topic.clone(),
            key,
            value,
            value_schema_id,
        });
    }
    out
}

/// Decodes records fetching each writer schema from the registry once
/// (for tests that read tens of thousands of events).
pub struct CachedDecoder {
    registry_url: String,
    schemas: std::collections::HashMap<u32, Schema>,
}

impl CachedDecoder {
    pub fn new(registry_url: &str) -> CachedDecoder {
        CachedDecoder {
            registry_url: registry_url.to_owned(),
            schemas: std::collections::HashMap::new(),
        }
    }

    pub async fn value(&mut self, bytes: &[u8]) -> (u32, Value) {
        let (id, mut body) = wire(bytes);
        if !self.schemas.contains_key(&id) {
            let url = format!("{}/schemas/ids/{id}", self.registry_url);
            let v: serde_json::Value = reqwest::get(url)
                .await
                .expect("registry answers")
                .json()
                .await
                .expect("registry json");
            let schema = Schema::parse_str(v["schema"].as_str().expect("schema field"))
                .expect("registered schema parses");
            self.schemas.insert(id, schema);
        }
        let value = GenericDatumReader::builder(&self.schemas[&id])
            .build()
            .and_then(|r| r.read_value(&mut body))
            .expect("record decodes with its registered schema");
        assert!(body.is_empty(), "bytes left after the datum");
        (id, value)
    }

    pub async fn events(&mut self, records: &[Record]) -> Vec<Event> {
        decode_with(records, async |bytes: &[u8]| self.value(bytes).await).await
    }
}

/// An integer column's value (int or long).
pub fn int(v: &Value) -> i64 {
    match unwrap_union(v) {
        Value::Int(i) => i64::from(*i),
        Value::Long(l) => *l,
        other => panic!("not an integer: {other:?}"),
    }
}
