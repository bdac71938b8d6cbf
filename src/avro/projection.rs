//! What of a relation version leaves siphon: the columns (in table order),
//! each one's mask, the key's columns, and naming changes from routing.
//!
//! A [`Projection`] is built once per relation version from the table's
//! `[[table]]` rule (`crate::config::TableRule`) and route, and both the
//! schema (`schema.rs`) and the encoder (`encode.rs`) follow it, so a
//! column left out is neither in the registered schema nor in any record,
//! and a masked column's type is what its masked value is (`string`).
//! [`Projection::identity`] is every column unmasked with the replica
//! identity as the key: what siphon wrote before rules existed.
//!
//! Masks write a string whatever the column's type (its text form is
//! what is hashed or cut); null stays null. Masks apply wherever the
//! column is written: `before`, `after` and the key.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::TableRule;
use crate::event::{ChangeEvent, Op, RelationVersion, ReplicaIdentity, TupleValue};

/// The key field naming the physical table when routing puts several
/// tables into one topic (Debezium's `ByLogicalTableRouter` default).
pub const PHYSICAL_TABLE_FIELD: &str = "__dbz__physicalTableIdentifier";

/// How a column's value is hidden.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Lower-case hex SHA-256 of the salt's bytes followed by the value's
    /// text (64 characters).
    Hash(Arc<[u8]>),
    /// The first so many characters of the value's text.
    Truncate(usize),
    /// This constant instead of the value.
    Replace(Arc<str>),
}

impl Mask {
    /// The masked text of `text`, written to `scratch` when it is new.
    #[inline]
    pub fn apply<'a>(&'a self, text: &'a [u8], scratch: &'a mut [u8; 64]) -> &'a [u8] {
        match self {
            Mask::Hash(salt) => {
                let mut h = Sha256::new();
                h.update(salt);
                h.update(text);
                let digest = h.finalize();
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for (i, b) in digest.iter().enumerate() {
                    scratch[2 * i] = HEX[usize::from(b >> 4)];
                    scratch[2 * i + 1] = HEX[usize::from(b & 0xf)];
                }
                &scratch[..]
            }
            Mask::Truncate(n) => {
                // Cut at the n-th character's start (UTF-8: a character
                // starts at every byte that is not a continuation byte).
                let mut chars = 0;
                for (i, &b) in text.iter().enumerate() {
                    if b & 0xC0 != 0x80 {
                        if chars == *n {
                            return &text[..i];
                        }
                        chars += 1;
                    }
                }
                text
            }
            Mask::Replace(constant) => constant.as_bytes(),
        }
    }
}

/// One column that leaves siphon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedColumn {
    /// Its index in the relation (and so in every tuple).
    pub source: usize,
    pub mask: Option<Mask>,
}

/// What of one relation version leaves siphon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Projection {
    /// The `before`/`after` columns, in table order.
    pub columns: Vec<ProjectedColumn>,
    /// The key's fields: indexes into `columns`, in key order. Empty: no
    /// key (null Kafka key).
    pub key: Vec<usize>,
    /// Value of [`PHYSICAL_TABLE_FIELD`], appended to the key when the
    /// table is routed (`{prefix}.{schema}.{table}`, its own topic's name).
    pub physical_table: Option<String>,
    /// Avro namespace instead of `{prefix}.{schema}.{table}` (a routed
    /// table's: its topic's), so that tables sharing a topic share record
    /// names.
    pub namespace: Option<String>,
}

impl Projection {
    /// Every column, unmasked; the replica identity's columns as the key.
    pub fn identity(relation: &RelationVersion) -> Projection {
        let columns: Vec<ProjectedColumn> = (0..relation.relation.columns.len())
            .map(|source| ProjectedColumn { source, mask: None })
            .collect();
        let key = relation
            .relation
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        Projection {
            columns,
            key,
            physical_table: None,
            namespace: None,
        }
    }

    /// The projection of `relation` under `rule` (`None`: identity
    /// columns and key). `salt` is `tables.hash_salt`. Errors name the
    /// rule, the table, the column and the fix.
    pub fn build(
        relation: &RelationVersion,
        rule: Option<&TableRule>,
        salt: Option<&[u8]>,
    ) -> Result<Projection, String> {
        let mut p = Projection::identity(relation);
        let Some(rule) = rule else {
            return Ok(p);
        };
        let rel = &relation.relation;
        let table = format!("{}.{}", rel.schema, rel.name);
        // For the ALTER TABLE in error messages.
        let quoted_table = || {
            crate::config::TableName {
                schema: rel.schema.clone(),
                table: rel.name.clone(),
            }
            .quoted()
        };
        let names: Vec<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
        let index = |key: &str, column: &str| -> Result<usize, String> {
            names.iter().position(|n| *n == column).ok_or_else(|| {
                format!(
                    "{}.{key} names column {column:?}, which table {table} does not have (its columns: {}): fix the name or remove it from the rule (match {:?})",
                    rule.name,
                    names.join(", "),
                    rule.pattern.text
                )
            })
        };
        // Which columns stay.
        let mut keep = vec![true; names.len()];
        if let Some(include) = &rule.columns_include {
            keep = vec![false; names.len()];
            for c in include {
                keep[index("columns_include", c)?] = true;
            }
        }
        for c in &rule.columns_exclude {
            keep[index("columns_exclude", c)?] = false;
        }
        // Masks.
        let mut masks: Vec<Option<Mask>> = vec![None; names.len()];
        for c in &rule.mask_hash {
            let salt = salt.ok_or_else(|| {
                format!(
                    "{}.mask_hash needs tables.hash_salt_env or tables.hash_salt_file",
                    rule.name
                )
            })?;
            masks[index("mask_hash", c)?] = Some(Mask::Hash(Arc::from(salt)));
        }
        for (c, n) in &rule.mask_truncate {
            masks[index("mask_truncate", c)?] = Some(Mask::Truncate(*n));
        }
        for (c, v) in &rule.mask_replace {
            masks[index("mask_replace", c)?] = Some(Mask::Replace(Arc::from(v.as_str())));
        }
        let position_in = |columns: &[ProjectedColumn], source: usize| {
            columns.iter().position(|c| c.source == source)
        };
        let columns: Vec<ProjectedColumn> = (0..names.len())
            .filter(|&i| keep[i])
            .map(|i| ProjectedColumn {
                source: i,
                mask: masks[i].take(),
            })
            .collect();
        // The key: the rule's columns, or the identity's (which must stay).
        let key_sources: Vec<usize> = match &rule.key_columns {
            Some(list) => {
                let mut out = Vec::new();
                for c in list {
                    let i = index("key_columns", c)?;
                    // A delete carries only the identity's columns unless
                    // the identity is FULL; a table without identity
                    // columns has no updates or deletes at all.
                    let has_identity = rel.columns.iter().any(|c| c.is_key);
                    if !rel.columns[i].is_key
                        && rel.replica_identity != ReplicaIdentity::Full
                        && has_identity
                    {
                        return Err(format!(
                            "{}.key_columns names column {c:?} of {table}, which is not in its replica identity, so its deletes would not carry it: run ALTER TABLE {} REPLICA IDENTITY FULL; or choose replica-identity columns",
                            rule.name,
                            quoted_table()
                        ));
                    }
                    out.push(i);
                }
                out
            }
            None => p.key.clone(),
        };
        let mut key = Vec::new();
        for source in key_sources {
            match position_in(&columns, source) {
                Some(k) => key.push(k),
                None => {
                    return Err(format!(
                        "{} leaves out column {:?} of {table}, which is in its Kafka key: keep the column, or set key_columns to columns that stay",
                        rule.name, names[source]
                    ));
                }
            }
        }
        if let Some(c) = &rule.partition_by {
            let i = index("partition_by", c)?;
            let in_identity = rel.columns[i].is_key
                || rel.replica_identity == ReplicaIdentity::Full
                || !rel.columns.iter().any(|c| c.is_key);
            if !in_identity {
                return Err(format!(
                    "{}.partition_by names column {c:?} of {table}, which is not in its replica identity, so its deletes (and tombstones) would not carry it: run ALTER TABLE {} REPLICA IDENTITY FULL; or choose a replica-identity column",
                    rule.name,
                    quoted_table()
                ));
            }
        }
        p.columns = columns;
        p.key = key;
        Ok(p)
    }

    /// Sets the naming of a routed table: records in the namespace of
    /// `topic`, and the key's [`PHYSICAL_TABLE_FIELD`] = `physical`.
    pub fn routed(mut self, topic: &str, physical: String) -> Projection {
        let ns: Vec<String> = topic
            .split('.')
            .map(|p| super::schema::avro_name(p).into_owned())
            .collect();
        self.namespace = Some(ns.join("."));
        self.physical_table = Some(physical);
        self
    }

    /// Whether any column is masked or left out, or the key differs from
    /// the identity's.
    pub fn is_identity(&self, relation: &RelationVersion) -> bool {
        *self == Projection::identity(relation)
    }
}

/// Kafka's murmur2 (as Java's `Utils.murmur2`), the hash of the default
/// partitioner; `partition_by` places a row on `toPositive(murmur2(text))
/// % partitions` of its column's text, as a Java producer would place a
/// record whose key is that text.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The text of column `source` in `event`: the old row's for a delete,
/// the new row's otherwise (an unchanged TOAST value from the old row).
/// `None` for null or a value not sent.
pub fn column_text(event: &ChangeEvent, source: usize) -> Option<&[u8]> {
    let old = event.old.as_ref().and_then(|(_, t)| t.get(source));
    let value = match (event.op, event.new.as_ref().and_then(|t| t.get(source))) {
        (Op::Delete, _) | (_, Some(TupleValue::UnchangedToast)) => old,
        (_, new) => new,
    };
    match value {
        Some(TupleValue::Text(text)) => Some(text),
        _ => None,
    }
}

/// The partition of a `partition_by` value's text among `partitions`.
pub fn partition_of(text: &[u8], partitions: i32) -> i32 {
    (murmur2(text) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Values from Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 7] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"", 275_646_681),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{}", String::from_utf8_lossy(data));
        }
    }

    use crate::avro::encode::{EncodePlan, EnvelopeContext};
    use crate::avro::modes::TypeModes;
    use crate::avro::schema::SchemaNaming;
    use crate::avro::types::oid;
    use crate::config::{Pattern, TableRule};
    use crate::event::{Lsn, Position, Relation, RelationColumn, SourceTx, TxId};
    use apache_avro::types::Value;
    use bytes::Bytes;

    fn decode(schema: &apache_avro::Schema, bytes: &[u8]) -> Value {
        crate::avro::decode_datum_with(schema, bytes)
    }

    /// id int PK, email text NOT NULL, age int NOT NULL DEFAULT -1, pw text.
    fn users(identity: ReplicaIdentity) -> RelationVersion {
        let col = |name: &str, type_oid, is_key| RelationColumn {
            is_key,
            name: name.into(),
            type_oid,
            type_modifier: -1,
        };
        RelationVersion {
            relation: Relation {
                oid: 1,
                schema: "public".into(),
                name: "users".into(),
                replica_identity: identity,
                columns: vec![
                    col("id", oid::INT4, true),
                    col("email", oid::TEXT, false),
                    col("age", oid::INT4, false),
                    col("pw", oid::TEXT, false),
                ],
            },
            version: 1,
            nullable: vec![false, false, false, true],
            defaults: vec![None, None, Some("'-1'::integer".into()), None],
            custom_types: Default::default(),
        }
    }

    fn rule() -> TableRule {
        TableRule {
            name: "table[0]".into(),
            pattern: Pattern::new("public\\.users").unwrap(),
            columns_include: None,
            columns_exclude: vec!["pw".into()],
            mask_hash: vec!["age".into()],
            mask_truncate: [("email".to_owned(), 2)].into(),
            mask_replace: Default::default(),
            key_columns: None,
            partition_by: None,
            skip_ops: None,
            tombstones: None,
            truncate_events: None,
        }
    }

    #[test]
    fn schema_and_records_follow_the_projection() {
        let rel = users(ReplicaIdentity::Default);
        let naming = SchemaNaming {
            topic_prefix: "p".into(),
            database: "d".into(),
        };
        let mut r = rule();
        r.key_columns = Some(vec!["id".into()]);
        let projection = Projection::build(&rel, Some(&r), Some(b"s"))
            .unwrap()
            .routed("p.all_users", "p.public.users".into());
        let modes = TypeModes::default();
        let plan = EncodePlan::with_projection(&rel, &naming, &modes, &projection).unwrap();
        let value: serde_json::Value = serde_json::from_str(plan.value_schema()).unwrap();
        let fields = &value["fields"][0]["type"][1]["fields"];
        // pw left out; age (int NOT NULL DEFAULT -1) hashed: a string,
        // without the default (which would show an original value).
        assert_eq!(
            fields,
            &serde_json::json!([
                {"name": "id", "type": "int"},
                {"name": "email", "type": ["null", "string"], "default": null},
                {"name": "age", "type": "string"},
            ])
        );
        assert_eq!(value["namespace"], "p.all_users");
        let key = plan.key_schema().unwrap();
        assert!(
            key.contains(r#"{"name":"__dbz__physicalTableIdentifier","type":"string"}"#),
            "{key}"
        );

        let t = |s: &str| TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()));
        let event = ChangeEvent {
            position: Position {
                commit_lsn: Lsn(1),
                index: 0,
            },
            op: Op::Create,
            relation: Arc::new(rel),
            tx: Arc::new(SourceTx {
                xid: TxId(1),
                commit_ts_us: 0,
                commit_lsn: Lsn(1),
            }),
            lsn: Lsn(1),
            old: None,
            new: Some(vec![t("7"), t("żółw@x"), t("42"), t("hunter2")]),
        };
        let ctx = EnvelopeContext {
            connector_version: "0",
            name: "p",
            db: "d",
            snapshot: "false",
            now_us: 0,
            transaction: None,
        };
        let mut out = Vec::new();
        plan.encode_value(&event, &ctx, &mut out).unwrap();
        assert!(!out.windows(7).any(|w| w == b"hunter2"));
        let schema = apache_avro::Schema::parse_str(plan.value_schema()).unwrap();
        let decoded = decode(&schema, &out);
        let Value::Record(fields) = decoded else {
            panic!("not a record")
        };
        let after = format!("{:?}", fields[1].1);
        let mut h = Sha256::new();
        h.update(b"s42");
        assert!(after.contains(&hex::encode(h.finalize())), "{after}");
        assert!(after.contains("String(\"żó\")"), "{after}");
        let mut key = Vec::new();
        assert!(plan.encode_event_key(&event, &mut key).unwrap());
        let key_schema = apache_avro::Schema::parse_str(plan.key_schema().unwrap()).unwrap();
        let decoded = decode(&key_schema, &key);
        assert_eq!(
            decoded,
            Value::Record(vec![
                ("id".into(), Value::Int(7)),
                (
                    PHYSICAL_TABLE_FIELD.into(),
                    Value::String("p.public.users".into())
                ),
            ])
        );
    }

    #[test]
    fn rules_that_do_not_fit_are_named() {
        let rel = users(ReplicaIdentity::Default);
        let mut r = rule();
        r.columns_exclude = vec!["id".into()];
        assert_eq!(
            Projection::build(&rel, Some(&r), Some(b"s")).unwrap_err(),
            r#"table[0] leaves out column "id" of public.users, which is in its Kafka key: keep the column, or set key_columns to columns that stay"#
        );
        let mut r = rule();
        r.mask_truncate = [("mail".to_owned(), 2)].into();
        assert_eq!(
            Projection::build(&rel, Some(&r), Some(b"s")).unwrap_err(),
            r#"table[0].mask_truncate names column "mail", which table public.users does not have (its columns: id, email, age, pw): fix the name or remove it from the rule (match "public\\.users")"#
        );
        let mut r = rule();
        r.key_columns = Some(vec!["email".into()]);
        assert!(
            Projection::build(&rel, Some(&r), Some(b"s"))
                .unwrap_err()
                .contains("not in its replica identity")
        );
        // With REPLICA IDENTITY FULL a delete carries every column.
        let full = users(ReplicaIdentity::Full);
        let p = Projection::build(&full, Some(&r), Some(b"s")).unwrap();
        assert_eq!(p.key, [1]);
        assert!(
            Projection::build(&rel, None, None)
                .unwrap()
                .is_identity(&rel)
        );
    }

    /// `cargo test --release --lib -- --ignored --nocapture projection_benchmark`:
    /// value + key per row of encode.rs's benchmark table, unshaped and
    /// with two columns left out, one hashed and one truncated.
    #[test]
    #[ignore]
    fn projection_benchmark() {
        let col = |name: &str, type_oid, type_modifier, is_key| RelationColumn {
            is_key,
            name: name.into(),
            type_oid,
            type_modifier,
        };
        let rel = Arc::new(RelationVersion {
            relation: Relation {
                oid: 1,
                schema: "public".into(),
                name: "orders".into(),
                replica_identity: ReplicaIdentity::Default,
                columns: vec![
                    col("id", oid::INT8, -1, true),
                    col("customer_id", oid::INT4, -1, false),
                    col("status", oid::TEXT, -1, false),
                    col("amount", oid::NUMERIC, (12 << 16 | 2) + 4, false),
                    col("qty", oid::INT2, -1, false),
                    col("paid", oid::BOOL, -1, false),
                    col("created_at", oid::TIMESTAMPTZ, -1, false),
                    col("updated_at", oid::TIMESTAMP, -1, false),
                    col("ref", oid::UUID, -1, false),
                    col("note", oid::VARCHAR, 260, false),
                ],
            },
            version: 1,
            nullable: vec![
                false, false, false, true, true, false, false, true, true, true,
            ],
            defaults: Vec::new(),
            custom_types: Default::default(),
        });
        let t = |s: &str| TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()));
        let new = vec![
            t("1234567890"),
            t("42"),
            t("shipped"),
            t("1999.95"),
            t("3"),
            t("t"),
            t("2024-01-02 03:04:05.123456+00"),
            t("2024-01-02 03:04:05.654321"),
            t("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            t("leave at the door, ring twice"),
        ];
        let event = ChangeEvent {
            position: Position {
                commit_lsn: Lsn(1),
                index: 0,
            },
            op: Op::Create,
            relation: Arc::clone(&rel),
            tx: Arc::new(SourceTx {
                xid: TxId(1),
                commit_ts_us: 0,
                commit_lsn: Lsn(1),
            }),
            lsn: Lsn(1),
            old: None,
            new: Some(new),
        };
        let ctx = EnvelopeContext {
            connector_version: "0.1.0",
            name: "pfx",
            db: "shop",
            snapshot: "false",
            now_us: 1,
            transaction: None,
        };
        let naming = SchemaNaming {
            topic_prefix: "pfx".into(),
            database: "shop".into(),
        };
        let rule = TableRule {
            name: "table[0]".into(),
            pattern: Pattern::new(".*").unwrap(),
            columns_include: None,
            columns_exclude: vec!["updated_at".into(), "ref".into()],
            mask_hash: vec!["customer_id".into()],
            mask_truncate: [("note".to_owned(), 5)].into(),
            mask_replace: Default::default(),
            key_columns: None,
            partition_by: None,
            skip_ops: None,
            tombstones: None,
            truncate_events: None,
        };
        let modes = TypeModes::default();
        let plain = Projection::identity(&rel);
        let shaped = Projection::build(&rel, Some(&rule), Some(b"salt")).unwrap();
        for (label, projection) in [("unshaped", plain), ("shaped", shaped)] {
            let plan = EncodePlan::with_projection(&rel, &naming, &modes, &projection).unwrap();
            let mut out = Vec::with_capacity(1024);
            let iterations = 1_000_000u32;
            for _ in 0..10_000 {
                out.clear();
                plan.encode_value(&event, &ctx, &mut out).unwrap();
            }
            let started = std::time::Instant::now();
            for _ in 0..iterations {
                out.clear();
                plan.encode_value(std::hint::black_box(&event), &ctx, &mut out)
                    .unwrap();
                plan.encode_event_key(&event, &mut out).unwrap();
                std::hint::black_box(&out);
            }
            let ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
            println!("{label}: {ns:.0} ns per row (value + key)");
        }
    }

    #[test]
    fn masks() {
        let mut scratch = [0u8; 64];
        let hash = Mask::Hash(Arc::from(&b"salt"[..]));
        let got = hash.apply(b"alice@example.com", &mut scratch).to_vec();
        let mut h = Sha256::new();
        h.update(b"saltalice@example.com");
        assert_eq!(got, hex::encode(h.finalize()).into_bytes());
        assert_eq!(
            Mask::Truncate(2).apply("żółw".as_bytes(), &mut scratch),
            "żó".as_bytes()
        );
        assert_eq!(Mask::Truncate(9).apply(b"abc", &mut scratch), b"abc");
        assert_eq!(
            Mask::Replace(Arc::from("***")).apply(b"secret", &mut scratch),
            b"***"
        );
    }
}
