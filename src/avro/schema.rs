//! Avro key and value schemas for one relation version, shaped like the
//! ones Debezium 3.x registers through Confluent's `AvroConverter`, so that
//! consumers built for Debezium read siphon's events unchanged.
//!
//! Layout (checked against Debezium 3.6.3's registered schemas):
//! - key: record `Key` in namespace `{prefix}.{schema}.{table}` with the
//!   key columns (`RelationColumn::is_key`) in table order; no key schema
//!   when the relation has no key columns (Debezium sends a null key then).
//!   Debezium orders key fields as the primary key declares them, which
//!   pgoutput does not send; for composite keys declared out of table order
//!   the two differ. Key fields follow the column's nullability;
//! - value: record `Envelope` with `before`/`after` (nullable record
//!   `Value`, every column in table order), `source`
//!   (`io.debezium.connector.postgresql.Source`), `transaction` (nullable
//!   `event.block`), `op`, `ts_ms`, `ts_us`, `ts_ns`.
//!
//! The JSON is written by hand in Debezium's property order so it reads
//! like theirs; every name in it has passed [`avro_name`], so nothing needs
//! escaping. The encoder writes fields in exactly this order: changing the
//! order here without changing `encode.rs` corrupts every event.
//!
//! Names: Avro names are `[A-Za-z_][A-Za-z0-9_]*`. Other characters become
//! `_` (and a leading digit gets a `_` prefix); two columns that end up with
//! the same field name are an error, never a silent merge.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::ErrorClass;
use crate::event::RelationVersion;

use super::modes::TypeModes;
use super::projection::{PHYSICAL_TABLE_FIELD, ProjectedColumn, Projection};
use super::types::{ColumnType, NamedTypes};

/// Naming inputs that do not come from the relation itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaNaming {
    /// Debezium's `topic.prefix` (the logical server name).
    pub topic_prefix: String,
    /// The captured database (goes into `source.db` of events).
    pub database: String,
}

/// Why no schema could be derived for a relation.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Two columns map to the same Avro field name once invalid characters
    /// are replaced.
    #[error(
        "columns {first:?} and {second:?} of {table} both map to Avro field name {field:?}; rename one of them"
    )]
    FieldNameCollision {
        table: String,
        first: String,
        second: String,
        field: String,
    },
    /// The catalog's nullability list does not match the relation's columns
    /// (a bug in whoever built the `RelationVersion`).
    #[error("{table} has {columns} columns but nullability for {nullable}")]
    NullabilityMismatch {
        table: String,
        columns: usize,
        nullable: usize,
    },
    /// The flattened schema (`[unwrap]`) could not be derived from the
    /// envelope's (a bug).
    #[error("the flattened value schema of {table} cannot be derived: {reason}")]
    Flatten { table: String, reason: String },
}

impl SchemaError {
    /// Always fatal: the relation must be changed (or siphon fixed) first.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}

/// The schemas of one relation version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationSchemas {
    /// `None` when the relation has no key columns.
    pub key: Option<String>,
    pub value: String,
}

/// Makes `raw` a valid Avro name: characters outside `[A-Za-z0-9_]` become
/// `_`, a leading digit (or an empty name) gets a `_` in front. This is
/// Debezium's field-name rule (`field.name.adjustment.mode=avro`,
/// `FieldNameSelector`), character for UTF-16 unit.
pub fn avro_name(raw: &str) -> Cow<'_, str> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid_start = raw.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if valid_start && raw.chars().all(valid) {
        return Cow::Borrowed(raw);
    }
    let mut name = String::with_capacity(raw.len() + 1);
    if raw.is_empty() || raw.starts_with(|c: char| c.is_ascii_digit()) {
        name.push('_');
    }
    for c in raw.chars() {
        if valid(c) {
            name.push(c);
        } else {
            // Debezium walks Java chars (UTF-16 units): a character outside
            // the BMP becomes two underscores there, so here too.
            name.extend(std::iter::repeat_n('_', c.len_utf16()));
        }
    }
    Cow::Owned(name)
}

/// The Avro namespace of a relation's records: `{prefix}.{schema}.{table}`,
/// each dot-separated part of the prefix and the schema and table names made
/// valid on their own (dots inside a schema or table name become `_`).
pub fn record_namespace(relation: &RelationVersion, naming: &SchemaNaming) -> String {
    let rel = &relation.relation;
    let mut ns = String::new();
    for part in naming.topic_prefix.split('.') {
        ns.push_str(&avro_name(part));
        ns.push('.');
    }
    ns.push_str(&avro_name(&rel.schema));
    ns.push('.');
    ns.push_str(&avro_name(&rel.name));
    ns
}

/// Derives the key and value schemas of `relation` with the default
/// handling modes.
pub fn derive_schemas(
    relation: &RelationVersion,
    naming: &SchemaNaming,
) -> Result<RelationSchemas, SchemaError> {
    derive_schemas_with(relation, naming, &TypeModes::default())
}

/// The optional envelope field listing the `after` fields whose unchanged
/// TOAST value PostgreSQL did not send (`types.unchanged_toast = "null"`).
/// Appended last with a null default, so readers with Debezium's envelope
/// ignore it and registry compatibility holds both ways.
pub const UNAVAILABLE_COLUMNS_FIELD: &str = "unavailable_columns";

/// Whether the envelope of `relation` carries [`UNAVAILABLE_COLUMNS_FIELD`]:
/// under `unchanged_toast = "null"` when some non-key column is toastable.
pub fn lists_unavailable_columns(relation: &RelationVersion, modes: &TypeModes) -> bool {
    modes.lists_unavailable_columns()
        && relation
            .relation
            .columns
            .iter()
            .any(|c| modes.value_nullable(false, c.is_key, c.type_oid, &relation.custom_types))
}

/// Derives the key and value schemas of `relation` under `modes`.
pub fn derive_schemas_with(
    relation: &RelationVersion,
    naming: &SchemaNaming,
    modes: &TypeModes,
) -> Result<RelationSchemas, SchemaError> {
    derive_projected(relation, naming, modes, &Projection::identity(relation))
}

/// The type a column is written with: a masked one is a string.
pub(super) fn projected_type(
    relation: &RelationVersion,
    column: &ProjectedColumn,
    modes: &TypeModes,
) -> ColumnType {
    let c = &relation.relation.columns[column.source];
    if column.mask.is_some() {
        ColumnType::resolve_with(super::types::oid::TEXT, -1, &relation.custom_types, modes)
    } else {
        ColumnType::resolve_with(c.type_oid, c.type_modifier, &relation.custom_types, modes)
    }
}

/// Whether the envelope of `relation` under `projection` carries
/// [`UNAVAILABLE_COLUMNS_FIELD`]: some projected non-key column is
/// toastable.
pub(super) fn projection_lists_unavailable(
    relation: &RelationVersion,
    modes: &TypeModes,
    projection: &Projection,
) -> bool {
    modes.lists_unavailable_columns()
        && projection.columns.iter().any(|p| {
            let c = &relation.relation.columns[p.source];
            modes.value_nullable(false, c.is_key, c.type_oid, &relation.custom_types)
        })
}

/// Derives the key and value schemas of the part of `relation` that
/// `projection` lets out (see `projection.rs`).
pub fn derive_projected(
    relation: &RelationVersion,
    naming: &SchemaNaming,
    modes: &TypeModes,
    projection: &Projection,
) -> Result<RelationSchemas, SchemaError> {
    let rel = &relation.relation;
    let table = format!("{}.{}", rel.schema, rel.name);
    if relation.nullable.len() != rel.columns.len() {
        return Err(SchemaError::NullabilityMismatch {
            table,
            columns: rel.columns.len(),
            nullable: relation.nullable.len(),
        });
    }
    let field_names = field_names(relation, &table)?;
    let ns = projection
        .namespace
        .clone()
        .unwrap_or_else(|| record_namespace(relation, naming));
    let custom = &relation.custom_types;
    let columns: Vec<(&str, ColumnType, bool, Option<&str>)> = projection
        .columns
        .iter()
        .map(|p| {
            let i = p.source;
            (
                field_names[i].as_ref(),
                projected_type(relation, p, modes),
                relation.nullable[i],
                // A masked column's default would show the original.
                relation
                    .defaults
                    .get(i)
                    .and_then(|d| d.as_deref())
                    .filter(|_| p.mask.is_none()),
            )
        })
        .collect();
    // The Value record's nullability: the catalog's, widened where an
    // unchanged TOAST value may be written as null.
    let value_nullable: Vec<bool> = projection
        .columns
        .iter()
        .map(|p| {
            let c = &rel.columns[p.source];
            modes.value_nullable(relation.nullable[p.source], c.is_key, c.type_oid, custom)
        })
        .collect();

    let key = (!projection.key.is_empty()).then(|| {
        let mut json = format!(r#"{{"type":"record","name":"Key","namespace":"{ns}","fields":["#);
        let mut named = NamedTypes::default();
        let mut first = true;
        for &k in &projection.key {
            let (name, ty, nullable, default) = &columns[k];
            write_field(
                &mut json, &mut first, name, ty, *nullable, *default, &mut named,
            );
        }
        if projection.physical_table.is_some() {
            json.push_str(&format!(
                r#",{{"name":"{PHYSICAL_TABLE_FIELD}","type":"string"}}"#
            ));
        }
        json.push_str(&format!(r#"],"connect.name":"{ns}.Key"}}"#));
        json
    });

    let mut value = format!(
        r#"{{"type":"record","name":"Envelope","namespace":"{ns}","fields":[{{"name":"before","type":["null",{{"type":"record","name":"Value","fields":["#
    );
    let mut named = NamedTypes::default();
    let mut first = true;
    for ((name, ty, _, default), nullable) in columns.iter().zip(&value_nullable) {
        write_field(
            &mut value, &mut first, name, ty, *nullable, *default, &mut named,
        );
    }
    value.push_str(&format!(
        r#"],"connect.name":"{ns}.Value"}}],"default":null}},{{"name":"after","type":["null","Value"],"default":null}},"#
    ));
    value.push_str(SOURCE_FIELD);
    value.push(',');
    value.push_str(TRANSACTION_FIELD);
    value.push_str(concat!(
        r#",{"name":"op","type":"string"},"#,
        r#"{"name":"ts_ms","type":["null","long"],"default":null},"#,
        r#"{"name":"ts_us","type":["null","long"],"default":null},"#,
        r#"{"name":"ts_ns","type":["null","long"],"default":null}"#,
    ));
    if projection_lists_unavailable(relation, modes, projection) {
        value.push_str(&format!(
            r#",{{"name":"{UNAVAILABLE_COLUMNS_FIELD}","type":["null",{{"type":"array","items":"string"}}],"default":null}}"#
        ));
    }
    value.push_str(&format!(
        r#"],"connect.version":2,"connect.name":"{ns}.Envelope"}}"#
    ));
    Ok(RelationSchemas { key, value })
}

/// Valid, unique Avro field names for the relation's columns, in order.
fn field_names<'a>(
    relation: &'a RelationVersion,
    table: &str,
) -> Result<Vec<Cow<'a, str>>, SchemaError> {
    let columns = &relation.relation.columns;
    let names: Vec<Cow<'a, str>> = columns.iter().map(|c| avro_name(&c.name)).collect();
    match first_collision(columns.iter().map(|c| c.name.as_str())) {
        Some((first, second, field)) => Err(SchemaError::FieldNameCollision {
            table: table.to_owned(),
            first: first.to_owned(),
            second: second.to_owned(),
            field,
        }),
        None => Ok(names),
    }
}

/// The first two of `columns` that share an Avro field name once
/// sanitized, with that name: `(first, second, field)`. Preflight uses it
/// to refuse such a table before anything streams.
pub fn first_collision<'a>(
    columns: impl IntoIterator<Item = &'a str>,
) -> Option<(&'a str, &'a str, String)> {
    let mut seen: HashMap<Cow<'a, str>, &'a str> = HashMap::new();
    for column in columns {
        let name = avro_name(column);
        if let Some(first) = seen.get(&name) {
            return Some((first, column, name.into_owned()));
        }
        seen.insert(name, column);
    }
    None
}

/// What changed, column by column, between two key or two value schemas
/// this module derived (`old` typically the subject's latest version): one
/// line per added, dropped or retyped column, for messages about a change
/// the registry refused. Empty when either text is not such a schema.
pub fn column_changes(old: &str, new: &str) -> Vec<String> {
    let (Some(old), Some(new)) = (column_fields(old), column_fields(new)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, new_type) in &new {
        match old.iter().find(|(n, _)| n == name) {
            None if is_nullable(new_type) => out.push(format!("column {name} added")),
            None => out.push(format!(
                "column {name} added as {} without a default (NOT NULL)",
                type_label(new_type)
            )),
            Some((_, old_type)) if old_type != new_type => out.push(format!(
                "column {name} changed from {} to {}",
                type_label(old_type),
                type_label(new_type)
            )),
            Some(_) => {}
        }
    }
    for (name, old_type) in &old {
        if !new.iter().any(|(n, _)| n == name) {
            out.push(format!("column {name} ({}) dropped", type_label(old_type)));
        }
    }
    out
}

/// `(field name, type)` of the column record: the `Value` record of an
/// `Envelope`, or the fields of a `Key`.
fn column_fields(schema: &str) -> Option<Vec<(String, serde_json::Value)>> {
    let json: serde_json::Value = serde_json::from_str(schema).ok()?;
    let record = if json.get("name")?.as_str()? == "Envelope" {
        let before = json.get("fields")?.as_array()?.first()?;
        before.get("type")?.as_array()?.get(1)?.clone()
    } else {
        json
    };
    let fields = record.get("fields")?.as_array()?;
    fields
        .iter()
        .map(|f| Some((f.get("name")?.as_str()?.to_owned(), f.get("type")?.clone())))
        .collect()
}

fn is_nullable(ty: &serde_json::Value) -> bool {
    ty.as_array()
        .is_some_and(|branches| branches.iter().any(|b| b == "null"))
}

/// A short name of an Avro type for messages: `nullable long`,
/// `io.debezium.time.MicroTimestamp`, `string`.
fn type_label(ty: &serde_json::Value) -> String {
    match ty {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(branches) => {
            let inner: Vec<String> = branches
                .iter()
                .filter(|b| *b != "null")
                .map(type_label)
                .collect();
            if branches.iter().any(|b| b == "null") {
                format!("nullable {}", inner.join("|"))
            } else {
                inner.join("|")
            }
        }
        serde_json::Value::Object(o) => ["connect.name", "logicalType", "connect.type", "type"]
            .iter()
            .find_map(|k| o.get(*k).and_then(|v| v.as_str()))
            .unwrap_or("record")
            .to_owned(),
        other => other.to_string(),
    }
}

fn write_field(
    out: &mut String,
    first: &mut bool,
    name: &str,
    ty: &ColumnType,
    nullable: bool,
    default: Option<&str>,
    named: &mut NamedTypes,
) {
    if !*first {
        out.push(',');
    }
    *first = false;
    out.push_str(r#"{"name":""#);
    out.push_str(name);
    out.push_str(r#"","type":"#);
    if nullable {
        out.push_str(r#"["null","#);
        ty.write_schema(out, named);
        out.push_str(r#"],"default":null}"#);
    } else {
        let start = out.len();
        ty.write_schema(out, named);
        let avro_default = default.and_then(|d| constant_default(&out[start..], d));
        if let Some(d) = avro_default {
            out.push_str(r#","default":"#);
            out.push_str(&d.to_string());
        }
        out.push('}');
    }
}

/// The Avro default (as JSON) of a `NOT NULL` column whose PostgreSQL
/// default is a constant of a plain Avro type: `boolean`, `int`, `long`,
/// `float`, `double` or `string` without a logical/semantic type (so not
/// dates, decimals, JSON, ...). `expr` is what `pg_get_expr` prints:
/// `0`, `true`, `1.5`, `'-1'::integer`, `'new'::text`,
/// `'x'::character varying`. Anything else (`now()`, `nextval(...)`,
/// expressions) has no Avro default, like a column without one.
fn constant_default(type_schema: &str, expr: &str) -> Option<serde_json::Value> {
    let schema: serde_json::Value = serde_json::from_str(type_schema).ok()?;
    let primitive = match &schema {
        serde_json::Value::String(p) => p.as_str(),
        serde_json::Value::Object(o)
            if !o.contains_key("logicalType") && !o.contains_key("connect.name") =>
        {
            o.get("type")?.as_str()?
        }
        _ => return None,
    };
    // Strip the trailing casts, then one level of quoting.
    let mut text = expr.trim();
    while let Some(cast) = text.rfind("::") {
        let ty = &text[cast + 2..];
        if ty.contains('\'') || ty.contains('(') && !ty.ends_with(')') {
            break;
        }
        text = text[..cast].trim_end();
    }
    let (text, quoted) = match text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(inner) if !inner.replace("''", "").contains('\'') => (inner.replace("''", "'"), true),
        Some(_) => return None,
        None => (text.to_owned(), false),
    };
    match primitive {
        "boolean" => match text.as_str() {
            "true" => Some(true.into()),
            "false" => Some(false.into()),
            _ => None,
        },
        "int" => text.parse::<i32>().ok().map(Into::into),
        "long" => text.parse::<i64>().ok().map(Into::into),
        "float" | "double" => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number),
        "string" if quoted => Some(text.into()),
        _ => None,
    }
}

/// Debezium 3.6.3's PostgreSQL `source` block as `AvroData` renders it.
/// Field order is load-bearing: `encode.rs` writes values in this order.
pub(crate) const SOURCE_FIELD: &str = concat!(
    r#"{"name":"source","type":{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":["#,
    r#"{"name":"version","type":"string"},"#,
    r#"{"name":"connector","type":"string"},"#,
    r#"{"name":"name","type":"string"},"#,
    r#"{"name":"ts_ms","type":"long"},"#,
    r#"{"name":"snapshot","type":[{"type":"string","connect.version":1,"connect.parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"connect.default":"false","connect.name":"io.debezium.data.Enum"},"null"],"default":"false"},"#,
    r#"{"name":"db","type":"string"},"#,
    r#"{"name":"sequence","type":["null","string"],"default":null},"#,
    r#"{"name":"ts_us","type":["null","long"],"default":null},"#,
    r#"{"name":"ts_ns","type":["null","long"],"default":null},"#,
    r#"{"name":"schema","type":"string"},"#,
    r#"{"name":"table","type":"string"},"#,
    r#"{"name":"txId","type":["null","long"],"default":null},"#,
    r#"{"name":"lsn","type":["null","long"],"default":null},"#,
    r#"{"name":"xmin","type":["null","long"],"default":null},"#,
    r#"{"name":"origin","type":["null","string"],"default":null},"#,
    r#"{"name":"origin_lsn","type":["null","long"],"default":null}"#,
    r#"],"connect.version":1,"connect.name":"io.debezium.connector.postgresql.Source"}}"#,
);

/// Debezium's transaction block, filled in streamed events with
/// `[transactions] enabled` (Debezium's `provide.transaction.metadata`),
/// null otherwise and in snapshot rows.
const TRANSACTION_FIELD: &str = concat!(
    r#"{"name":"transaction","type":["null",{"type":"record","name":"block","namespace":"event","fields":["#,
    r#"{"name":"id","type":"string"},"#,
    r#"{"name":"total_order","type":"long"},"#,
    r#"{"name":"data_collection_order","type":"long"}"#,
    r#"],"connect.version":1,"connect.name":"event.block"}],"default":null}"#,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::types::oid;
    use crate::event::{Relation, RelationColumn, ReplicaIdentity};
    use apache_avro::Schema;

    fn relation(columns: &[(&str, u32, i32, bool, bool)]) -> RelationVersion {
        RelationVersion {
            relation: Relation {
                oid: 16384,
                schema: "public".into(),
                name: "t_types".into(),
                replica_identity: ReplicaIdentity::Default,
                columns: columns
                    .iter()
                    .map(
                        |&(name, type_oid, type_modifier, is_key, _)| RelationColumn {
                            is_key,
                            name: name.into(),
                            type_oid,
                            type_modifier,
                        },
                    )
                    .collect(),
            },
            version: 1,
            nullable: columns.iter().map(|c| c.4).collect(),
            defaults: Vec::new(),
            custom_types: Default::default(),
        }
    }

    fn naming() -> SchemaNaming {
        SchemaNaming {
            topic_prefix: "pfx".into(),
            database: "postgres".into(),
        }
    }

    fn canonical(json: &str) -> serde_json::Value {
        serde_json::from_str(json).expect("valid JSON")
    }

    /// Debezium's exact behaviour: default modes plus its unchanged TOAST
    /// placeholder.
    fn debezium() -> TypeModes {
        TypeModes {
            unchanged_toast: crate::avro::modes::UnchangedToastMode::Placeholder,
            ..TypeModes::default()
        }
    }

    #[test]
    fn unchanged_toast_null_widens_toastable_columns_and_lists_them() {
        let rel = relation(&[
            ("id", oid::TEXT, -1, true, false),
            ("body", oid::TEXT, -1, false, false),
            ("n", oid::INT4, -1, false, false),
        ]);
        let honest = derive_schemas(&rel, &naming()).unwrap();
        let placeholder = derive_schemas_with(&rel, &naming(), &debezium()).unwrap();
        let value: serde_json::Value = canonical(&honest.value);
        let fields = &value["fields"][0]["type"][1]["fields"];
        // Key column and fixed-length column: as the catalog says.
        assert_eq!(fields[0]["type"], "string");
        assert_eq!(fields[2]["type"], "int");
        // NOT NULL text: nullable, because an update may not carry it.
        assert_eq!(fields[1]["type"], serde_json::json!(["null", "string"]));
        assert_eq!(
            value["fields"][8],
            serde_json::json!({"name": "unavailable_columns",
                "type": ["null", {"type": "array", "items": "string"}], "default": null})
        );
        // Key schema unchanged by the mode.
        assert_eq!(honest.key, placeholder.key);

        // Registry compatibility when switching from placeholder to null:
        // BACKWARD holds (the new reader reads old data).
        use apache_avro::schema_compatibility::SchemaCompatibility;
        let honest = Schema::parse_str(&honest.value).unwrap();
        let placeholder = Schema::parse_str(&placeholder.value).unwrap();
        assert!(SchemaCompatibility::can_read(&placeholder, &honest).is_ok());

        // A table whose non-key columns are all fixed-length keeps
        // Debezium's envelope exactly.
        let fixed = relation(&[
            ("id", oid::TEXT, -1, true, false),
            ("n", oid::INT4, -1, false, false),
        ]);
        assert_eq!(
            derive_schemas(&fixed, &naming()).unwrap(),
            derive_schemas_with(&fixed, &naming(), &debezium()).unwrap()
        );
    }

    #[test]
    fn matches_the_schema_debezium_registered() {
        // Debezium 3.6.3 + Confluent AvroData output for
        // `create table t_types(id int primary key, s2 int2, n numeric(10,3),
        //  nv numeric, nv2 numeric, tstz timestamptz not null)`
        // (nv2 added here to show the second VariableScaleDecimal reference).
        let rel = relation(&[
            ("id", oid::INT4, -1, true, false),
            ("s2", oid::INT2, -1, false, true),
            ("n", oid::NUMERIC, (10 << 16 | 3) + 4, false, true),
            ("nv", oid::NUMERIC, -1, false, true),
            ("nv2", oid::NUMERIC, -1, false, true),
            ("tstz", oid::TIMESTAMPTZ, -1, false, false),
        ]);
        let schemas = derive_schemas_with(&rel, &naming(), &debezium()).unwrap();
        let expected_value = r#"{"type":"record","name":"Envelope","namespace":"pfx.public.t_types","fields":[
          {"name":"before","type":["null",{"type":"record","name":"Value","fields":[
            {"name":"id","type":"int"},
            {"name":"s2","type":["null",{"type":"int","connect.type":"int16"}],"default":null},
            {"name":"n","type":["null",{"type":"bytes","scale":3,"precision":10,"connect.version":1,"connect.parameters":{"scale":"3","connect.decimal.precision":"10"},"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},
            {"name":"nv","type":["null",{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data","fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}],"connect.doc":"Variable scaled decimal","connect.version":1,"connect.name":"io.debezium.data.VariableScaleDecimal"}],"default":null},
            {"name":"nv2","type":["null","io.debezium.data.VariableScaleDecimal"],"default":null},
            {"name":"tstz","type":{"type":"string","connect.version":1,"connect.name":"io.debezium.time.ZonedTimestamp"}}
          ],"connect.name":"pfx.public.t_types.Value"}],"default":null},
          {"name":"after","type":["null","Value"],"default":null},
          {"name":"source","type":{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":[
            {"name":"version","type":"string"},
            {"name":"connector","type":"string"},
            {"name":"name","type":"string"},
            {"name":"ts_ms","type":"long"},
            {"name":"snapshot","type":[{"type":"string","connect.version":1,"connect.parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"connect.default":"false","connect.name":"io.debezium.data.Enum"},"null"],"default":"false"},
            {"name":"db","type":"string"},
            {"name":"sequence","type":["null","string"],"default":null},
            {"name":"ts_us","type":["null","long"],"default":null},
            {"name":"ts_ns","type":["null","long"],"default":null},
            {"name":"schema","type":"string"},
            {"name":"table","type":"string"},
            {"name":"txId","type":["null","long"],"default":null},
            {"name":"lsn","type":["null","long"],"default":null},
            {"name":"xmin","type":["null","long"],"default":null},
            {"name":"origin","type":["null","string"],"default":null},
            {"name":"origin_lsn","type":["null","long"],"default":null}
          ],"connect.version":1,"connect.name":"io.debezium.connector.postgresql.Source"}},
          {"name":"transaction","type":["null",{"type":"record","name":"block","namespace":"event","fields":[
            {"name":"id","type":"string"},
            {"name":"total_order","type":"long"},
            {"name":"data_collection_order","type":"long"}
          ],"connect.version":1,"connect.name":"event.block"}],"default":null},
          {"name":"op","type":"string"},
          {"name":"ts_ms","type":["null","long"],"default":null},
          {"name":"ts_us","type":["null","long"],"default":null},
          {"name":"ts_ns","type":["null","long"],"default":null}
        ],"connect.version":2,"connect.name":"pfx.public.t_types.Envelope"}"#;
        assert_eq!(canonical(&schemas.value), canonical(expected_value));
        assert_eq!(
            schemas.key.as_deref(),
            Some(
                r#"{"type":"record","name":"Key","namespace":"pfx.public.t_types","fields":[{"name":"id","type":"int"}],"connect.name":"pfx.public.t_types.Key"}"#
            )
        );
        Schema::parse_str(&schemas.value).expect("value schema parses");
        Schema::parse_str(schemas.key.as_deref().unwrap()).expect("key schema parses");
    }

    #[test]
    fn every_mapped_type_parses_in_key_and_value() {
        let types = [
            oid::BOOL,
            oid::INT2,
            oid::INT4,
            oid::INT8,
            oid::FLOAT4,
            oid::FLOAT8,
            oid::NUMERIC,
            oid::TEXT,
            oid::VARCHAR,
            oid::BPCHAR,
            oid::NAME,
            oid::BYTEA,
            oid::UUID,
            oid::JSON,
            oid::JSONB,
            oid::DATE,
            oid::TIME,
            oid::TIMESTAMP,
            oid::TIMESTAMPTZ,
            869,
        ];
        let names: Vec<String> = (0..types.len() * 2).map(|i| format!("c{i}")).collect();
        let mut cols = Vec::new();
        for (i, &t) in types.iter().enumerate() {
            // Each type twice: key + nullable non-key, so named types repeat.
            cols.push((names[2 * i].as_str(), t, -1, true, false));
            cols.push((names[2 * i + 1].as_str(), t, -1, false, true));
        }
        let schemas = derive_schemas(&relation(&cols), &naming()).unwrap();
        Schema::parse_str(&schemas.value).expect("value schema parses");
        Schema::parse_str(&schemas.key.unwrap()).expect("key schema parses");
    }

    #[test]
    fn no_key_columns_means_no_key_schema() {
        let rel = relation(&[
            ("a", oid::INT4, -1, false, true),
            ("b", oid::TEXT, -1, false, true),
        ]);
        let schemas = derive_schemas(&rel, &naming()).unwrap();
        assert_eq!(schemas.key, None);
        Schema::parse_str(&schemas.value).unwrap();
    }

    #[test]
    fn composite_key_in_table_order() {
        let rel = relation(&[
            ("k1", oid::INT4, -1, true, false),
            ("v", oid::TEXT, -1, false, true),
            ("k2", oid::TEXT, -1, true, false),
        ]);
        let key = derive_schemas(&rel, &naming()).unwrap().key.unwrap();
        assert_eq!(
            key,
            r#"{"type":"record","name":"Key","namespace":"pfx.public.t_types","fields":[{"name":"k1","type":"int"},{"name":"k2","type":"string"}],"connect.name":"pfx.public.t_types.Key"}"#
        );
    }

    #[test]
    fn invalid_names_are_replaced() {
        assert_eq!(avro_name("plain_Name1"), "plain_Name1");
        assert_eq!(avro_name("my-col"), "my_col");
        assert_eq!(avro_name("1st"), "_1st");
        assert_eq!(avro_name("naïve col"), "na_ve_col");
        assert_eq!(avro_name(""), "_");
        assert_eq!(avro_name("ünï"), "_n_");
        assert_eq!(avro_name("$x"), "_x");
        assert_eq!(avro_name("a b.c"), "a_b_c");
        assert_eq!(avro_name("9"), "_9");
        assert_eq!(avro_name("x🦀"), "x__");
        assert_eq!(
            first_collision(["id", "a b", "c", "a-b"]),
            Some(("a b", "a-b", "a_b".to_owned()))
        );
        assert_eq!(first_collision(["id", "1", "_1x"]), None);

        let mut rel = relation(&[
            ("my-col", oid::INT4, -1, true, false),
            ("1st", oid::TEXT, -1, false, true),
            ("ok", oid::TEXT, -1, false, true),
        ]);
        rel.relation.schema = "My Schema".into();
        rel.relation.name = "order.items".into();
        let naming = SchemaNaming {
            topic_prefix: "prod-db.eu".into(),
            database: "db".into(),
        };
        let schemas = derive_schemas(&rel, &naming).unwrap();
        let value = Schema::parse_str(&schemas.value).unwrap();
        let key = Schema::parse_str(&schemas.key.unwrap()).unwrap();
        assert!(
            schemas
                .value
                .contains(r#""namespace":"prod_db.eu.My_Schema.order_items""#)
        );
        assert!(schemas.value.contains(r#"{"name":"my_col","type":"int"}"#));
        assert!(
            schemas
                .value
                .contains(r#"{"name":"_1st","type":["null","string"]"#)
        );
        match (value, key) {
            (Schema::Record(v), Schema::Record(k)) => {
                assert_eq!(
                    v.name.fullname(None),
                    "prod_db.eu.My_Schema.order_items.Envelope"
                );
                assert_eq!(
                    k.name.fullname(None),
                    "prod_db.eu.My_Schema.order_items.Key"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn colliding_names_are_an_error() {
        let rel = relation(&[
            ("a-b", oid::INT4, -1, true, false),
            ("a_b", oid::TEXT, -1, false, true),
        ]);
        let err = derive_schemas(&rel, &naming()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"columns "a-b" and "a_b" of public.t_types both map to Avro field name "a_b"; rename one of them"#
        );
    }

    #[test]
    fn nullability_must_match_columns() {
        let mut rel = relation(&[("a", oid::INT4, -1, true, false)]);
        rel.nullable.push(true);
        assert!(matches!(
            derive_schemas(&rel, &naming()),
            Err(SchemaError::NullabilityMismatch {
                columns: 1,
                nullable: 2,
                ..
            })
        ));
    }

    #[test]
    fn empty_relation_still_parses() {
        let rel = relation(&[]);
        let schemas = derive_schemas(&rel, &naming()).unwrap();
        assert_eq!(schemas.key, None);
        Schema::parse_str(&schemas.value).unwrap();
    }

    #[test]
    fn constant_column_defaults_become_avro_defaults() {
        use serde_json::json;
        let d = constant_default;
        assert_eq!(d(r#""boolean""#, "true"), Some(json!(true)));
        assert_eq!(d(r#""int""#, "0"), Some(json!(0)));
        assert_eq!(d(r#""int""#, "'-1'::integer"), Some(json!(-1)));
        assert_eq!(d(r#""int""#, "3000000000"), None);
        assert_eq!(d(r#""long""#, "'-5'::bigint"), Some(json!(-5)));
        assert_eq!(d(r#""double""#, "1.5"), Some(json!(1.5)));
        assert_eq!(d(r#""double""#, "'NaN'::double precision"), None);
        assert_eq!(d(r#""string""#, "'new'::text"), Some(json!("new")));
        assert_eq!(
            d(r#""string""#, "'it''s::x'::character varying"),
            Some(json!("it's::x"))
        );
        assert_eq!(
            d(r#"{"type":"int","connect.type":"int16"}"#, "'7'::smallint"),
            Some(json!(7))
        );
        // Not constants, or not plain types: no default.
        assert_eq!(d(r#""string""#, "gen_random_uuid()::text"), None);
        assert_eq!(d(r#""long""#, "nextval('t_id_seq'::regclass)"), None);
        assert_eq!(
            d(
                r#"{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}"#,
                "now()"
            ),
            None
        );

        // In the schema: NOT NULL columns get it, nullable ones keep null.
        let mut rel = relation(&[
            ("id", oid::INT4, -1, true, false),
            ("flag", oid::BOOL, -1, false, false),
            ("n", oid::INT4, -1, false, true),
        ]);
        rel.defaults = vec![None, Some("true".into()), Some("5".into())];
        let schemas = derive_schemas(&rel, &naming()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&schemas.value).unwrap();
        let fields = &value["fields"][0]["type"][1]["fields"];
        assert_eq!(
            fields[1],
            json!({"name": "flag", "type": "boolean", "default": true})
        );
        assert_eq!(fields[2]["default"], json!(null));
        Schema::parse_str(&schemas.value).unwrap();
    }

    #[test]
    fn column_changes_name_each_column() {
        let old = relation(&[
            ("id", oid::INT4, -1, true, false),
            ("size", oid::TEXT, -1, false, true),
            ("gone", oid::INT4, -1, false, false),
            ("same", oid::INT8, -1, false, true),
        ]);
        let new = relation(&[
            ("id", oid::INT8, -1, true, false),
            ("size", oid::INT4, -1, false, true),
            ("same", oid::INT8, -1, false, true),
            ("extra", oid::TEXT, -1, false, true),
            ("strict", oid::INT4, -1, false, false),
        ]);
        let old = derive_schemas(&old, &naming()).unwrap();
        let new = derive_schemas(&new, &naming()).unwrap();
        assert_eq!(
            column_changes(&old.value, &new.value),
            [
                "column id changed from int to long",
                "column size changed from nullable string to nullable int",
                "column extra added",
                "column strict added as int without a default (NOT NULL)",
                "column gone (int) dropped",
            ]
        );
        assert_eq!(
            column_changes(old.key.as_deref().unwrap(), new.key.as_deref().unwrap()),
            ["column id changed from int to long"]
        );
        assert!(column_changes("not json", &new.value).is_empty());
    }
}
