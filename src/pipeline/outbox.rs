//! The outbox event router (`[outbox]`, Debezium's outbox event router).
//!
//! A service writes its domain event into an outbox table (or as a logical
//! decoding message with the configured prefix) in the same database
//! transaction as the business rows it describes. siphon turns each
//! inserted outbox row into one record on the topic its aggregate type
//! chooses: key = the aggregate id, value = the payload (as written,
//! typically JSON; null makes a tombstone), headers `id` and `type`. The
//! record is written in the Kafka transaction that holds the rest of the
//! stream around it, so consumers reading `read_committed` see each event
//! exactly once, and never an event whose business rows were rolled back.
//!
//! Only inserts are events: an update or delete of an outbox row (say a
//! cleanup job) is not. The outbox table's own change events are published
//! on its table topic only with `outbox.publish_table = true`; its snapshot
//! rows never become events.

use bytes::Bytes;

use crate::config::OutboxConfig;
use crate::event::{ChangeEvent, TupleValue};

/// One outbox event, read from a row or a message.
#[derive(Debug, PartialEq)]
pub(super) struct OutboxEvent {
    pub id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    /// `None` writes a tombstone.
    pub payload: Option<Bytes>,
}

/// The event an inserted outbox row holds, or what is wrong with it
/// (naming the column and the fix, never a value).
pub(super) fn from_row(cfg: &OutboxConfig, event: &ChangeEvent) -> Result<OutboxEvent, String> {
    let relation = &event.relation.relation;
    let row = event
        .new
        .as_ref()
        .ok_or_else(|| "an insert without its new row".to_owned())?;
    let value = |column: &str, key: &str| -> Result<Option<Bytes>, String> {
        let i = relation
            .columns
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| {
                format!(
                    "the outbox table has no column {column:?} (outbox.{key}): name one of its columns ({})",
                    relation
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        match row.get(i) {
            Some(TupleValue::Text(b) | TupleValue::Binary(b)) => Ok(Some(b.clone())),
            Some(TupleValue::Null) => Ok(None),
            _ => Err(format!(
                "column {column:?} (outbox.{key}) was not sent in the row"
            )),
        }
    };
    let text = |column: &str, key: &str| -> Result<String, String> {
        let v = value(column, key)?.ok_or_else(|| {
            format!("column {column:?} (outbox.{key}) is null: every outbox event needs one")
        })?;
        String::from_utf8(v.to_vec())
            .map_err(|_| format!("column {column:?} (outbox.{key}) is not UTF-8 text"))
    };
    Ok(OutboxEvent {
        id: text(&cfg.id_column, "id_column")?,
        aggregate_type: text(&cfg.aggregate_type_column, "aggregate_type_column")?,
        aggregate_id: text(&cfg.aggregate_id_column, "aggregate_id_column")?,
        event_type: text(&cfg.type_column, "type_column")?,
        payload: value(&cfg.payload_column, "payload_column")?,
    })
}

/// The event a logical message with the outbox prefix holds: a JSON object
/// with the configured column names as fields. A string payload is used
/// as it is (an application that wrote its JSON as a string); any other
/// JSON value is written compactly; a missing or null one is a tombstone.
pub(super) fn from_message(cfg: &OutboxConfig, content: &[u8]) -> Result<OutboxEvent, String> {
    let json: serde_json::Value = serde_json::from_slice(content)
        .map_err(|e| format!("the message content is not JSON ({e})"))?;
    let serde_json::Value::Object(fields) = json else {
        return Err("the message content is not a JSON object".to_owned());
    };
    let text = |field: &str| -> Result<String, String> {
        match fields.get(field) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            _ => Err(format!(
                "field {field:?} is missing, empty or not a string or number: every outbox message needs one"
            )),
        }
    };
    let payload = match fields.get(&cfg.payload_column) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(Bytes::from(s.clone())),
        Some(other) => Some(Bytes::from(other.to_string())),
    };
    Ok(OutboxEvent {
        id: text(&cfg.id_column)?,
        aggregate_type: text(&cfg.aggregate_type_column)?,
        aggregate_id: text(&cfg.aggregate_id_column)?,
        event_type: text(&cfg.type_column)?,
        payload,
    })
}

/// An outbox payload (JSON text) expanded to Avro: (schema, body), the
/// record named `Payload` in a namespace made of the topic's name.
pub(super) fn expand(payload: &[u8], topic: &str) -> Result<(String, Vec<u8>), String> {
    let json: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        format!("the payload is not JSON ({e}), so it cannot be expanded to Avro (outbox.expand_payload)")
    })?;
    let namespace = topic
        .split('.')
        .map(|s| crate::avro::schema::avro_name(&s.replace('-', "_")).into_owned())
        .collect::<Vec<_>>()
        .join(".");
    crate::avro::infer::expand(&json, &namespace, "Payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_every_field_is_an_event() {
        let cfg = OutboxConfig::default();
        let e = from_message(
            &cfg,
            br#"{"id":"e1","aggregatetype":"order","aggregateid":42,"type":"OrderPlaced","payload":{"total":10}}"#,
        )
        .expect("an event");
        assert_eq!(
            e,
            OutboxEvent {
                id: "e1".into(),
                aggregate_type: "order".into(),
                aggregate_id: "42".into(),
                event_type: "OrderPlaced".into(),
                payload: Some(Bytes::from_static(br#"{"total":10}"#)),
            }
        );
        let e = from_message(
            &cfg,
            br#"{"id":"e2","aggregatetype":"order","aggregateid":"a","type":"T","payload":"{\"x\":1}"}"#,
        )
        .expect("an event");
        assert_eq!(e.payload, Some(Bytes::from_static(br#"{"x":1}"#)));
        let e = from_message(
            &cfg,
            br#"{"id":"e3","aggregatetype":"order","aggregateid":"a","type":"T"}"#,
        )
        .expect("an event");
        assert_eq!(e.payload, None);
    }

    #[test]
    fn a_message_without_a_field_or_not_json_is_refused_naming_it() {
        let cfg = OutboxConfig::default();
        let e = from_message(&cfg, br#"{"id":"e1","aggregateid":"a","type":"T"}"#).unwrap_err();
        assert!(e.contains("\"aggregatetype\""), "{e}");
        let e = from_message(&cfg, b"not json").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = from_message(&cfg, b"[1]").unwrap_err();
        assert!(e.contains("not a JSON object"), "{e}");
    }
}
