//! Flattened rows (`[unwrap]`, Debezium's `ExtractNewRecordState`): the
//! record is the envelope's `Value` — the row's columns as the projection
//! leaves them — followed by the `__`-prefixed facts the connector adds
//! (`add_fields`) and, when deletes are rewritten, `__deleted`.
//!
//! The schema is derived from the envelope's own (its `Value` record lifted
//! out, same name and namespace), so the two can never disagree on a
//! column; the encoder writes the row with the envelope's row writer
//! ([`super::encode::EncodePlan::encode_flat`]) and the added fields here.

use crate::config::unwrap::{Added, UnwrapConfig};
use crate::event::{ChangeEvent, Op};

use super::encode::{EnvelopeContext, write_bytes, write_long};

/// The added fields of a flattened record.
#[derive(Clone, Debug, PartialEq)]
pub struct Flat {
    pub fields: Vec<Added>,
    /// Records end with `__deleted` ("true" for a rewritten delete).
    pub deleted: bool,
}

impl Flat {
    pub fn new(cfg: &UnwrapConfig) -> Flat {
        Flat {
            fields: cfg.add_fields.clone(),
            deleted: cfg.delete_handling.rewrites(),
        }
    }

    /// The flattened value schema, from the envelope schema `envelope`:
    /// its `before` record (`Value`) with the added fields appended.
    pub fn value_schema(&self, envelope: &str) -> Result<String, String> {
        let mut env: serde_json::Value =
            serde_json::from_str(envelope).map_err(|e| format!("envelope schema: {e}"))?;
        let namespace = env
            .get("namespace")
            .and_then(|n| n.as_str())
            .map(str::to_owned)
            .ok_or("envelope schema without a namespace")?;
        let before = env
            .get_mut("fields")
            .and_then(|f| f.as_array_mut())
            .and_then(|f| f.iter_mut().find(|f| f["name"] == "before"))
            .ok_or("envelope schema without a before field")?;
        let mut value = before["type"]
            .as_array_mut()
            .and_then(|u| u.get_mut(1))
            .map(serde_json::Value::take)
            .ok_or("the before field is not a union of null and the Value record")?;
        let record = value
            .as_object_mut()
            .ok_or("the Value record is not a JSON object")?;
        record.insert("namespace".into(), namespace.into());
        let fields = record
            .get_mut("fields")
            .and_then(|f| f.as_array_mut())
            .ok_or("the Value record has no fields")?;
        let optional = |name: &str, ty: &str| serde_json::json!({"name": name, "type": ["null", ty], "default": null});
        for a in &self.fields {
            fields.push(optional(
                a.name(),
                if a.is_text() { "string" } else { "long" },
            ));
        }
        if self.deleted {
            fields.push(optional("__deleted", "string"));
        }
        Ok(value.to_string())
    }

    /// Appends the added fields of `event` (after its row).
    pub fn write_added(&self, event: &ChangeEvent, ctx: &EnvelopeContext<'_>, out: &mut Vec<u8>) {
        const SECOND: u8 = 2;
        for a in &self.fields {
            out.push(SECOND);
            match a {
                Added::Op => write_bytes(out, event.op.code().as_bytes()),
                Added::Db => write_bytes(out, ctx.db.as_bytes()),
                Added::Schema => write_bytes(out, event.relation.relation.schema.as_bytes()),
                Added::Table => write_bytes(out, event.relation.relation.name.as_bytes()),
                Added::Lsn => write_long(out, event.lsn.0 as i64),
                Added::TxId => write_long(out, i64::from(event.tx.xid.0)),
                Added::SourceTsMs => write_long(out, event.tx.commit_ts_us.div_euclid(1000)),
                Added::TsMs => write_long(out, ctx.now_us.div_euclid(1000)),
            }
        }
        if self.deleted {
            out.push(SECOND);
            let deleted: &[u8] = if event.op == Op::Delete {
                b"true"
            } else {
                b"false"
            };
            write_bytes(out, deleted);
        }
    }

    /// The text of an added fact, for a header.
    pub fn header_value(added: Added, event: &ChangeEvent, ctx: &EnvelopeContext<'_>) -> String {
        match added {
            Added::Op => event.op.code().to_owned(),
            Added::Db => ctx.db.to_owned(),
            Added::Schema => event.relation.relation.schema.clone(),
            Added::Table => event.relation.relation.name.clone(),
            Added::Lsn => event.lsn.0.to_string(),
            Added::TxId => event.tx.xid.0.to_string(),
            Added::SourceTsMs => event.tx.commit_ts_us.div_euclid(1000).to_string(),
            Added::TsMs => ctx.now_us.div_euclid(1000).to_string(),
        }
    }
}
