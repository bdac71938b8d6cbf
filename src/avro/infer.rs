//! An Avro schema inferred from a JSON document, and the document encoded
//! with it: outbox payloads expanded to Avro (`outbox.payload_format =
//! "avro"`, Debezium's `table.expand.json.payload`).
//!
//! The document must be a JSON object; it becomes a record whose fields are
//! its keys in sorted order (so the same keys give the same schema
//! whatever order a writer put them in). Every field is optional (`["null", T]`,
//! default null), so a later document with more fields, or without some,
//! gives a BACKWARD-compatible next version. Types: `true`/`false` →
//! boolean, an integer → long, any other number → double, a string →
//! string, an object → a nested record (named after its field), an array →
//! an array of its first non-null element's type (of strings when it has
//! none). A null field's type is unknown: it is a string field holding
//! null. What cannot be typed this way — array elements of different
//! kinds, a field name Avro cannot take — is an error naming the path.

use apache_avro::Schema;
use apache_avro::types::Value as Avro;
use serde_json::{Map, Value as Json};

use super::schema::avro_name;

/// The inferred schema (canonical JSON text) and the Avro binary body of
/// `document`, a JSON object. `namespace` and `name` name the top record.
pub fn expand(document: &Json, namespace: &str, name: &str) -> Result<(String, Vec<u8>), String> {
    let Json::Object(fields) = document else {
        return Err("the payload is not a JSON object".to_owned());
    };
    let schema = record_schema(fields, name, Some(namespace), "")?;
    let text = schema.to_string();
    let parsed = Schema::parse_str(&text).map_err(|e| format!("inferred schema: {e}"))?;
    let value = record_value(fields, "")?;
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(&parsed)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| format!("payload does not fit its inferred schema: {e}"))?;
    Ok((text, body))
}

fn record_schema(
    fields: &Map<String, Json>,
    name: &str,
    namespace: Option<&str>,
    path: &str,
) -> Result<Json, String> {
    let mut out = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        let field_path = join(path, key);
        let field_name = avro_name(key);
        if field_name != key.as_str() {
            return Err(format!(
                "field {field_path:?}: not a valid Avro field name (letters, digits and '_', not starting with a digit)"
            ));
        }
        out.push(serde_json::json!({
            "name": key,
            "type": ["null", type_of(value, &field_path)?],
            "default": null,
        }));
    }
    let mut record = serde_json::json!({"type": "record", "name": name, "fields": out});
    if let Some(ns) = namespace {
        record["namespace"] = Json::from(ns);
    }
    Ok(record)
}

/// The Avro type of a (non-top-level) JSON value.
fn type_of(value: &Json, path: &str) -> Result<Json, String> {
    Ok(match value {
        Json::Null | Json::String(_) => Json::from("string"),
        Json::Bool(_) => Json::from("boolean"),
        Json::Number(n) if n.is_i64() => Json::from("long"),
        Json::Number(_) => Json::from("double"),
        // Nested records are named by their path, so two of them with the
        // same key in different places never clash.
        Json::Object(fields) => record_schema(fields, &record_name(path), None, path)?,
        Json::Array(items) => {
            let first = items.iter().find(|v| !v.is_null());
            let item = match first {
                None => Json::from("string"),
                Some(v) => type_of(v, &format!("{path}[]"))?,
            };
            for (i, v) in items.iter().enumerate() {
                if !v.is_null() && first.is_some_and(|f| !same_kind(f, v)) {
                    return Err(format!(
                        "field {path:?}: element {i} is not of the same kind as the first element; an Avro array holds one type"
                    ));
                }
            }
            serde_json::json!({"type": "array", "items": ["null", item]})
        }
    })
}

fn same_kind(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.is_i64() == y.is_i64(),
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

fn record_name(path: &str) -> String {
    let mut name: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    name.insert_str(0, "Payload_");
    name
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn record_value(fields: &Map<String, Json>, path: &str) -> Result<Avro, String> {
    let mut out = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        out.push((key.clone(), optional(value, &join(path, key))?));
    }
    Ok(Avro::Record(out))
}

/// A value in its `["null", T]` union.
fn optional(value: &Json, path: &str) -> Result<Avro, String> {
    Ok(match value {
        Json::Null => Avro::Union(0, Box::new(Avro::Null)),
        other => Avro::Union(1, Box::new(plain(other, path)?)),
    })
}

fn plain(value: &Json, path: &str) -> Result<Avro, String> {
    Ok(match value {
        Json::Null => Avro::Null,
        Json::Bool(b) => Avro::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Avro::Long(i),
            None => Avro::Double(
                n.as_f64()
                    .ok_or_else(|| format!("field {path:?}: number out of range"))?,
            ),
        },
        Json::String(s) => Avro::String(s.clone()),
        Json::Object(fields) => record_value(fields, path)?,
        Json::Array(items) => Avro::Array(
            items
                .iter()
                .map(|v| optional(v, &format!("{path}[]")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    fn decode(schema: &str, body: &[u8]) -> Avro {
        crate::avro::decode_datum(schema, body)
    }

    #[test]
    fn a_document_round_trips_through_its_inferred_schema() {
        let doc = serde_json::json!({
            "order": 42, "total": 9.5, "paid": true, "note": null, "customer": {"name": "Ada", "tags": ["a", "b"]},
            "lines": [{"sku": "x", "qty": 1}, {"sku": "y", "qty": 2}], "empty": []
        });
        let (schema, body) = expand(&doc, "outbox.event", "order").expect("expands");
        let some = |v: Avro| Avro::Union(1, Box::new(v));
        let line = |sku: &str, qty: i64| {
            some(Avro::Record(vec![
                ("qty".into(), some(Avro::Long(qty))),
                ("sku".into(), some(Avro::String(sku.into()))),
            ]))
        };
        assert_eq!(
            decode(&schema, &body),
            Avro::Record(vec![
                (
                    "customer".into(),
                    some(Avro::Record(vec![
                        ("name".into(), some(Avro::String("Ada".into()))),
                        (
                            "tags".into(),
                            some(Avro::Array(vec![
                                some(Avro::String("a".into())),
                                some(Avro::String("b".into()))
                            ]))
                        ),
                    ]))
                ),
                ("empty".into(), some(Avro::Array(vec![]))),
                (
                    "lines".into(),
                    some(Avro::Array(vec![line("x", 1), line("y", 2)]))
                ),
                ("note".into(), Avro::Union(0, Box::new(Avro::Null))),
                ("order".into(), some(Avro::Long(42))),
                ("paid".into(), some(Avro::Boolean(true))),
                ("total".into(), some(Avro::Double(9.5))),
            ])
        );
        assert!(schema.contains(r#""namespace":"outbox.event""#), "{schema}");
    }

    #[test]
    fn what_avro_cannot_hold_is_named() {
        let e = expand(&serde_json::json!([1]), "n", "r").unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
        let e = expand(&serde_json::json!({"a": {"b": [1, "x"]}}), "n", "r").unwrap_err();
        assert!(e.contains("\"a.b\"") && e.contains("element 1"), "{e}");
        let e = expand(&serde_json::json!({"first name": 1}), "n", "r").unwrap_err();
        assert!(
            e.contains("\"first name\"") && e.contains("Avro field name"),
            "{e}"
        );
    }
}
