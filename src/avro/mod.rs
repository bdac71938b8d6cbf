//! Avro: schemas derived from relations (Debezium's names and envelope),
//! the PostgreSQL text → Avro type mapping, the direct binary encoder used
//! on the hot path, and the schema registry client.

pub mod array;
pub mod encode;
pub mod flat;
pub mod infer;
pub mod message;
pub mod modes;
pub mod projection;
pub mod registry;
pub mod schema;
pub mod types;

/// Test helper: decodes one Avro datum `body` (no wire header) with the
/// schema `schema` (JSON text), and checks nothing is left after it.
#[cfg(test)]
pub(crate) fn decode_datum(schema: &str, body: &[u8]) -> apache_avro::types::Value {
    let schema = apache_avro::Schema::parse_str(schema).expect("schema parses");
    decode_datum_with(&schema, body)
}

/// [`decode_datum`] with a parsed schema.
#[cfg(test)]
pub(crate) fn decode_datum_with(
    schema: &apache_avro::Schema,
    body: &[u8],
) -> apache_avro::types::Value {
    let mut rest = body;
    let value = apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()
        .and_then(|r| r.read_value(&mut rest))
        .expect("the datum decodes with its schema");
    assert!(rest.is_empty(), "{} bytes left after the datum", rest.len());
    value
}
