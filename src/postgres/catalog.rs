//! The ordinary (non-replication) connection: preflight checks, the
//! publication, slot state, and catalog facts pgoutput does not send
//! (column nullability, what non-built-in column types are).
//!
//! Every check here exists so that a misconfigured database stops the
//! connector *before* anything is streamed, with a message naming the fix,
//! instead of losing or skipping data later.

use std::collections::HashMap;
use std::time::Duration;

use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::{PgError, tls};
use crate::avro::types::oid::FIRST_NON_FIXED;
use crate::config::{ConnectorConfig, PostgresConfig, SslMode, TableName, quote_ident};
use crate::event::{CustomType, CustomTypeKind, CustomTypes, Lsn};

/// A connected catalog client. The connection task ends when it is dropped.
pub struct Catalog {
    client: Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Catalog {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// What `pg_replication_slots` says about a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub slot_type: String,
    pub active: bool,
    pub confirmed_flush_lsn: Option<Lsn>,
    /// Whether it is a failover slot; `None` before PostgreSQL 17.
    pub failover: Option<bool>,
}

impl Catalog {
    pub async fn connect(cfg: &PostgresConfig) -> Result<Catalog, PgError> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&cfg.host)
            .port(cfg.port)
            .user(&cfg.user)
            .dbname(&cfg.database)
            .application_name("siphon")
            .options(session_options())
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            // tokio-postgres knows only these three; what the verify modes
            // add is in the connector's settings.
            .ssl_mode(match cfg.ssl.mode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                    tokio_postgres::config::SslMode::Require
                }
            });
        if let Some(p) = &cfg.password {
            pg.password(p.expose());
        }
        let connected = match tls::connector(&cfg.ssl)? {
            None => pg
                .connect(NoTls)
                .await
                .map(|(client, connection)| (client, tokio::spawn(drive(connection)))),
            Some(connector) => pg
                .connect(MakeTlsConnector::new(connector))
                .await
                .map(|(client, connection)| (client, tokio::spawn(drive(connection)))),
        };
        let (client, connection) = connected.map_err(|source| connect_error(cfg, source))?;
        let catalog = Catalog { client, connection };
        catalog.check_session_settings().await?;
        Ok(catalog)
    }

    /// Refuses a session whose settings are not the ones the startup
    /// packet asked for (a pooler or proxy in between may drop `options`):
    /// snapshot rows read through it would be misparsed.
    async fn check_session_settings(&self) -> Result<(), PgError> {
        let names: Vec<&str> = super::SESSION_SETTINGS.iter().map(|(n, _)| *n).collect();
        let rows = self
            .client
            .query(
                "SELECT n, current_setting(n) FROM unnest($1::text[]) n",
                &[&names],
            )
            .await
            .map_err(|source| PgError::Query {
                what: "session settings",
                source,
            })?;
        for row in rows {
            let (name, value): (String, String) = (row.get(0), row.get(1));
            if !super::setting_as_sent(&name, &value) {
                return Err(PgError::SessionSetting { name, value });
            }
        }
        Ok(())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Checks everything that would make streaming fail or lose data, and
    /// reports all problems at once.
    pub async fn preflight(&self, cfg: &ConnectorConfig) -> Result<(), PgError> {
        let problems = self.problems(cfg).await?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PgError::Preflight {
                connector: cfg.name.to_string(),
                problems,
            })
        }
    }

    /// What would stop the connector from streaming correctly, each with
    /// its fix: wal_level, the REPLICATION privilege, and every table's
    /// existence, replica identity and SELECT privilege.
    pub async fn problems(&self, cfg: &ConnectorConfig) -> Result<Vec<String>, PgError> {
        let mut problems = Vec::new();
        let q = |e| PgError::Query {
            what: "preflight checks",
            source: e,
        };
        let wal_level: String = self
            .client
            .query_one("SHOW wal_level", &[])
            .await
            .map_err(q)?
            .get(0);
        if wal_level != "logical" {
            problems.push(format!(
                "wal_level is {wal_level:?}, logical replication needs \"logical\": run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL"
            ));
        }
        let row = self
            .client
            .query_one(
                "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(q)?;
        if !row.get::<_, bool>(0) {
            problems.push(format!(
                "role {} may not stream changes: run ALTER ROLE {} WITH REPLICATION;",
                cfg.postgres.user,
                quote_ident(&cfg.postgres.user)
            ));
        }
        for table in &cfg.postgres.tables {
            let insert_only = cfg.postgres.insert_only_tables.contains(table);
            problems.extend(
                self.check_table(table, &cfg.postgres.user, insert_only)
                    .await?,
            );
        }
        problems.extend(naming_problems(cfg));
        problems.extend(self.rule_problems(cfg).await);
        if cfg.postgres.failover_slot {
            let version: String = self
                .client
                .query_one("SHOW server_version_num", &[])
                .await
                .map_err(q)?
                .get(0);
            let major = version.parse::<u32>().map(|n| n / 10_000).unwrap_or(0);
            if major < 17 {
                problems.push(format!(
                    "postgres.failover_slot = true needs PostgreSQL 17 or later (failover slots), but the server is version {major}: set postgres.failover_slot = false or upgrade PostgreSQL"
                ));
            }
        }
        if let Some(p) = self.partition_root_problem(cfg).await? {
            problems.push(p);
        }
        problems.extend(self.generated_columns_problems(cfg).await?);
        Ok(problems)
    }

    /// `[[table]]` rules that do not fit the tables they match (unknown
    /// columns, key or partition columns a delete would not carry), as
    /// the writer would find them at the table's first event.
    async fn rule_problems(&self, cfg: &ConnectorConfig) -> Vec<String> {
        let events = &cfg.events;
        if events.rules.is_empty() {
            return Vec::new();
        }
        let salt = events.hash_salt.as_ref().map(|s| s.expose().as_bytes());
        let mut problems = Vec::new();
        for table in &cfg.postgres.tables {
            // A table that does not exist is reported by check_table.
            let Ok(parts) = crate::snapshot::SnapTable::describe(
                self,
                table,
                cfg.postgres.publish_via_partition_root,
            )
            .await
            else {
                continue;
            };
            for part in parts {
                let rel = &part.relation;
                let r = &rel.relation;
                let rule = events.rule_for(&r.schema, &r.name);
                if let Err(p) = crate::avro::projection::Projection::build(rel, rule, salt)
                    && !problems.contains(&p)
                {
                    problems.push(p);
                }
            }
        }
        problems
    }

    /// An existing publication that publishes stored generated columns
    /// (PostgreSQL 18: `publish_generated_columns = stored`, or a column
    /// list naming one): the snapshot leaves them out, so its rows and the
    /// stream's would have different schemas. siphon leaves them out in
    /// every phase (docs/types.md).
    async fn generated_columns_problems(
        &self,
        cfg: &ConnectorConfig,
    ) -> Result<Vec<String>, PgError> {
        let pg = &cfg.postgres;
        let q = |e| PgError::Query {
            what: "publication checks",
            source: e,
        };
        let mut problems = Vec::new();
        // `pubgencols` exists from PostgreSQL 18 on: read through jsonb,
        // which gives null where the column does not exist.
        let stored = self
            .client
            .query_opt(
                "SELECT (to_jsonb(p) ->> 'pubgencols') = 's' FROM pg_publication p WHERE pubname = $1",
                &[&pg.publication],
            )
            .await
            .map_err(q)?
            .and_then(|r| r.get::<_, Option<bool>>(0))
            .unwrap_or(false);
        if stored {
            problems.push(format!(
                "publication {} publishes generated columns (publish_generated_columns = stored), which siphon leaves out of snapshots and events: run ALTER PUBLICATION {} SET (publish_generated_columns = none);",
                pg.publication,
                quote_ident(&pg.publication)
            ));
        }
        // Column lists may name generated columns from PostgreSQL 18 on.
        let listed = self
            .client
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), a.attname::text
                   FROM pg_publication p
                   JOIN pg_publication_rel pr ON pr.prpubid = p.oid
                   JOIN pg_class c ON c.oid = pr.prrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = pr.prrelid
                                      AND a.attnum = ANY (pr.prattrs::int2[])
                  WHERE p.pubname = $1 AND a.attgenerated <> ''
                  ORDER BY 1, 2",
                &[&pg.publication],
            )
            .await
            .map_err(q)?;
        for row in listed {
            let table: String = row.get(0);
            let column: String = row.get(1);
            problems.push(format!(
                "publication {} lists generated column {column} of {table} in its column list, which siphon leaves out of snapshots and events: run ALTER PUBLICATION {} SET TABLE {table} (...) with the column list without {}",
                pg.publication,
                quote_ident(&pg.publication),
                quote_ident(&column)
            ));
        }
        Ok(problems)
    }

    /// The problems of one captured table: it exists and is a table, its
    /// replica identity lets PostgreSQL publish its updates and deletes
    /// (for a partitioned table: each partition's), the role may read it,
    /// and its column names stay distinct as Avro field names.
    async fn check_table(
        &self,
        table: &TableName,
        user: &str,
        insert_only: bool,
    ) -> Result<Vec<String>, PgError> {
        let q = |e| PgError::Query {
            what: "table checks",
            source: e,
        };
        let row = self
            .client
            .query_opt(
                "SELECT c.oid, c.relkind::text, has_table_privilege(c.oid, 'SELECT')
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2",
                &[&table.schema, &table.table],
            )
            .await
            .map_err(q)?;
        let Some(row) = row else {
            return Ok(vec![format!(
                "table {table} does not exist: create it or remove it from postgres.tables"
            )]);
        };
        let oid: u32 = row.get(0);
        let kind: String = row.get(1);
        let can_select: bool = row.get(2);
        if kind != "r" && kind != "p" {
            return Ok(vec![format!(
                "{table} is not a table (relkind {kind:?}): only tables can be published"
            )]);
        }
        let mut problems = Vec::new();
        if !can_select {
            problems.push(format!(
                "role {user} may not read table {table}: run GRANT SELECT ON {} TO {};",
                table.quoted(),
                quote_ident(user)
            ));
        }
        // The table itself, or every leaf partition of a partitioned table
        // (PostgreSQL checks the identity of the partition a row is in).
        let leaves = self
            .client
            .query(
                "SELECT n.nspname::text, c.relname::text, c.relreplident::text,
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
                   FROM (SELECT relid FROM pg_partition_tree($1::oid::regclass) WHERE isleaf
                         UNION
                         -- pg_partition_tree is empty for a plain table
                         SELECT c.oid::regclass FROM pg_class c WHERE c.oid = $1 AND c.relkind = 'r') t
                   JOIN pg_class c ON c.oid = t.relid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  ORDER BY 1, 2",
                &[&oid],
            )
            .await
            .map_err(q)?;
        for leaf in leaves {
            let name = TableName {
                schema: leaf.get(0),
                table: leaf.get(1),
            };
            let identity: String = leaf.get(2);
            let has_pk: bool = leaf.get(3);
            let has_identity_index: bool = leaf.get(4);
            let what = if &name == table {
                format!("table {table}")
            } else {
                format!("partition {name} of {table}")
            };
            let fix = format!(
                "add a primary key, or run ALTER TABLE {} REPLICA IDENTITY FULL; (or USING INDEX on a unique index of NOT NULL columns)",
                name.quoted()
            );
            let keyless = |why: &str| {
                format!(
                    "{what} has {why}, so once it is published PostgreSQL refuses its UPDATE and DELETE (\"cannot update table ... because it does not have a replica identity and publishes updates\"): {fix}; if the table is insert-only, list {table} in postgres.insert_only_tables to capture its inserts with a null Kafka key"
                )
            };
            match identity.as_str() {
                "d" if !has_pk && !insert_only => {
                    problems.push(keyless("no primary key and REPLICA IDENTITY DEFAULT"))
                }
                "n" if !insert_only => problems.push(keyless("REPLICA IDENTITY NOTHING")),
                "i" if !has_identity_index => problems.push(format!(
                    "{what} has REPLICA IDENTITY USING INDEX but the index is gone: {fix}"
                )),
                _ => {}
            }
        }
        let columns = self
            .client
            .query(
                "SELECT attname::text FROM pg_attribute
                  WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(q)?;
        let columns: Vec<String> = columns.iter().map(|r| r.get(0)).collect();
        if let Some((first, second, field)) =
            crate::avro::schema::first_collision(columns.iter().map(String::as_str))
        {
            problems.push(format!(
                "columns {first:?} and {second:?} of table {table} both become Avro field name {field:?} (characters Avro forbids are replaced by '_'): rename one of them, e.g. ALTER TABLE {} RENAME COLUMN {} TO ...;",
                table.quoted(),
                quote_ident(second)
            ));
        }
        Ok(problems)
    }

    /// When a captured table is partitioned or a partition, an existing
    /// publication must publish via the root exactly as configured (that
    /// decides the topics the partitions' changes go to).
    async fn partition_root_problem(
        &self,
        cfg: &ConnectorConfig,
    ) -> Result<Option<String>, PgError> {
        let pg = &cfg.postgres;
        let q = |e| PgError::Query {
            what: "publication",
            source: e,
        };
        let Some(row) = self
            .client
            .query_opt(
                "SELECT pubviaroot FROM pg_publication WHERE pubname = $1",
                &[&pg.publication],
            )
            .await
            .map_err(q)?
        else {
            return Ok(None);
        };
        let via_root: bool = row.get(0);
        if via_root == pg.publish_via_partition_root {
            return Ok(None);
        }
        let mut partitioned = Vec::new();
        for t in &pg.tables {
            let involved = self
                .client
                .query_opt(
                    "SELECT c.relkind = 'p' OR c.relispartition
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = $1 AND c.relname = $2",
                    &[&t.schema, &t.table],
                )
                .await
                .map_err(q)?
                .is_some_and(|r| r.get::<_, bool>(0));
            if involved {
                partitioned.push(t.to_string());
            }
        }
        if partitioned.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "publication {} has publish_via_partition_root = {via_root} but postgres.publish_via_partition_root is {} and {} involve partitions: run ALTER PUBLICATION {} SET (publish_via_partition_root = {}); or set postgres.publish_via_partition_root = {via_root}",
            pg.publication,
            pg.publish_via_partition_root,
            partitioned.join(", "),
            quote_ident(&pg.publication),
            pg.publish_via_partition_root,
        )))
    }

    /// Creates the publication for the configured tables when it does not
    /// exist; when it does, checks that it publishes all of them.
    pub async fn ensure_publication(&self, cfg: &ConnectorConfig) -> Result<(), PgError> {
        let pg = &cfg.postgres;
        let q = |e| PgError::Query {
            what: "publication",
            source: e,
        };
        let unpublished = self.unpublished_tables(cfg).await?;
        let tables = pg
            .tables
            .iter()
            .map(TableName::quoted)
            .collect::<Vec<_>>()
            .join(", ");
        let Some(missing) = unpublished else {
            if !pg.create_publication {
                return Err(PgError::Preflight {
                    connector: cfg.name.to_string(),
                    problems: vec![format!(
                        "publication {} does not exist and postgres.create_publication is false: run CREATE PUBLICATION {} FOR TABLE {tables};",
                        pg.publication,
                        quote_ident(&pg.publication)
                    )],
                });
            }
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {tables} WITH (publish_via_partition_root = {})",
                quote_ident(&pg.publication),
                pg.publish_via_partition_root
            );
            return match self.client.batch_execute(&sql).await {
                Ok(()) => {
                    tracing::info!(connector = %cfg.name, publication = %pg.publication, "created publication");
                    Ok(())
                }
                Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    Err(PgError::Preflight {
                        connector: cfg.name.to_string(),
                        problems: vec![format!(
                            "role {} may not create publication {}: have a table owner run CREATE PUBLICATION {} FOR TABLE {tables}; and set postgres.create_publication = false",
                            pg.user,
                            pg.publication,
                            quote_ident(&pg.publication)
                        )],
                    })
                }
                Err(e) => Err(q(e)),
            };
        };
        if missing.is_empty() {
            Ok(())
        } else {
            Err(PgError::Preflight {
                connector: cfg.name.to_string(),
                problems: vec![missing_tables_problem(&pg.publication, &missing)],
            })
        }
    }

    /// The configured tables the publication does not publish, or `None`
    /// when the publication does not exist.
    pub async fn unpublished_tables(
        &self,
        cfg: &ConnectorConfig,
    ) -> Result<Option<Vec<TableName>>, PgError> {
        let pg = &cfg.postgres;
        let q = |e| PgError::Query {
            what: "publication",
            source: e,
        };
        let exists = self
            .client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&pg.publication],
            )
            .await
            .map_err(q)?
            .is_some();
        if !exists {
            return Ok(None);
        }
        // A partitioned table counts as published when it or any of its
        // partitions is listed: without publish_via_partition_root,
        // pg_publication_tables lists the partitions instead of the root.
        let mut missing = Vec::new();
        for t in &pg.tables {
            let published: bool = self
                .client
                .query_one(
                    "SELECT EXISTS (
                         SELECT 1 FROM pg_publication_tables pt
                          WHERE pt.pubname = $1
                            AND format('%I.%I', pt.schemaname, pt.tablename)::regclass IN
                                (SELECT to_regclass($2)
                                 UNION
                                 SELECT relid FROM pg_partition_tree(to_regclass($2))))",
                    &[&pg.publication, &t.quoted()],
                )
                .await
                .map_err(q)?
                .get(0);
            if !published {
                missing.push(t.clone());
            }
        }
        Ok(Some(missing))
    }

    pub async fn slot_state(&self, slot: &str) -> Result<Option<SlotState>, PgError> {
        let row = self
            .client
            .query_opt(
                // `failover` exists from PostgreSQL 17 on: read through
                // jsonb, which gives null where the column does not exist.
                "SELECT plugin::text, database::text, slot_type, active, confirmed_flush_lsn::text,
                        (to_jsonb(s) ->> 'failover')::bool
                   FROM pg_replication_slots s WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| PgError::Query {
                what: "slot state",
                source: e,
            })?;
        Ok(row.map(|r| SlotState {
            plugin: r.get(0),
            database: r.get(1),
            slot_type: r.get(2),
            active: r.get(3),
            confirmed_flush_lsn: r.get::<_, Option<String>>(4).and_then(|s| s.parse().ok()),
            failover: r.get(5),
        }))
    }

    /// Facts pgoutput's Relation message does not carry, per column name,
    /// as the catalog says now: whether the column accepts NULL and whether
    /// it is part of the primary key. Debezium reads them the same way.
    pub async fn column_facts(
        &self,
        relation_oid: u32,
    ) -> Result<HashMap<String, ColumnFacts>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, NOT a.attnotnull,
                        COALESCE(a.attnum = ANY (i.indkey::int2[]), false),
                        CASE WHEN a.atthasdef AND a.attgenerated = ''
                             THEN pg_get_expr(d.adbin, d.adrelid) END
                   FROM pg_attribute a
                   LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
                   LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&relation_oid],
            )
            .await
            .map_err(|e| PgError::Query {
                what: "column facts",
                source: e,
            })?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    ColumnFacts {
                        nullable: r.get(1),
                        in_primary_key: r.get(2),
                        default: r.get(3),
                    },
                )
            })
            .collect())
    }
}

impl Catalog {
    /// What the catalog says about the column types in `type_oids` whose
    /// OIDs are not fixed (enums, domains, composites, extension types,
    /// arrays of them), following array elements and domain base types;
    /// the encoder needs it for [`crate::event::RelationVersion::custom_types`].
    pub async fn custom_types(&self, type_oids: &[u32]) -> Result<CustomTypes, PgError> {
        let wanted: Vec<u32> = type_oids
            .iter()
            .copied()
            .filter(|&oid| oid >= FIRST_NON_FIXED)
            .collect();
        if wanted.is_empty() {
            return Ok(CustomTypes::new());
        }
        let rows = self
            .client
            .query(
                "WITH RECURSIVE t(oid) AS (
                     SELECT unnest($1::oid[])
                   UNION
                     SELECT n.oid
                       FROM t JOIN pg_type p ON p.oid = t.oid,
                            LATERAL (VALUES (CASE WHEN p.typlen = -1 THEN p.typelem END),
                                            (p.typbasetype)) AS n(oid)
                      WHERE n.oid IS NOT NULL AND n.oid >= $2
                 )
                 SELECT p.oid, p.typname::text, p.typtype::text,
                        CASE WHEN p.typlen = -1 THEN p.typelem ELSE 0::oid END,
                        p.typbasetype, p.typtypmod,
                        ARRAY(SELECT e.enumlabel::text FROM pg_enum e
                               WHERE e.enumtypid = p.oid ORDER BY e.enumsortorder)
                   FROM pg_type p JOIN t ON t.oid = p.oid",
                &[&wanted, &FIRST_NON_FIXED],
            )
            .await
            .map_err(|e| PgError::Query {
                what: "column types",
                source: e,
            })?;
        Ok(rows
            .iter()
            .map(|r| {
                let typtype: String = r.get(2);
                let element_oid: u32 = r.get(3);
                let kind = match typtype.as_str() {
                    "e" => CustomTypeKind::Enum { labels: r.get(6) },
                    "d" => CustomTypeKind::Domain {
                        base_oid: r.get(4),
                        base_type_modifier: r.get(5),
                    },
                    "c" => CustomTypeKind::Composite,
                    "r" | "m" => CustomTypeKind::Range,
                    _ if element_oid != 0 => CustomTypeKind::Array { element_oid },
                    _ => CustomTypeKind::Base,
                };
                (
                    r.get(0),
                    CustomType {
                        name: r.get(1),
                        kind,
                    },
                )
            })
            .collect())
    }
}

/// Names that stop being distinct once sanitized: two captured tables with
/// one Kafka topic, or with one Avro namespace (Kafka and Avro forbid
/// characters PostgreSQL allows; see `kafka::topic` and `avro::schema`),
/// and topics longer than Kafka allows.
pub fn naming_problems(cfg: &ConnectorConfig) -> Vec<String> {
    use crate::avro::schema::avro_name;
    use crate::kafka::topic::{MAX_TOPIC_LEN, table_topic};
    let mut problems = Vec::new();
    let mut topics: HashMap<String, &TableName> = HashMap::new();
    let mut namespaces: HashMap<String, &TableName> = HashMap::new();
    for t in &cfg.postgres.tables {
        // Tables routed together share their topic and namespace on purpose.
        if let Some(topic) = cfg
            .events
            .routed_topic(&cfg.kafka.topic_prefix, &t.schema, &t.table)
        {
            if topic.len() > MAX_TOPIC_LEN {
                problems.push(format!(
                    "table {t} is routed to topic {topic:?}, longer than Kafka's {MAX_TOPIC_LEN} characters: shorten the route's topic"
                ));
            }
            continue;
        }
        let topic = table_topic(&cfg.kafka.topic_prefix, &t.schema, &t.table);
        if topic.len() > MAX_TOPIC_LEN {
            problems.push(format!(
                "table {t} would go to topic {topic:?}, longer than Kafka's {MAX_TOPIC_LEN} characters: shorten kafka.topic_prefix or the table name"
            ));
        }
        if let Some(other) = topics.insert(topic.clone(), t) {
            problems.push(format!(
                "tables {other} and {t} would both go to topic {topic:?} (characters Kafka forbids become '_'): rename one of them or capture it with another connector"
            ));
            continue;
        }
        let namespace = format!("{}.{}", avro_name(&t.schema), avro_name(&t.table));
        if let Some(other) = namespaces.insert(namespace.clone(), t) {
            problems.push(format!(
                "tables {other} and {t} would both get Avro namespace {}.{namespace} (characters Avro forbids become '_'): rename one of them or capture it with another connector",
                cfg.kafka.topic_prefix
            ));
        }
    }
    problems
}

/// The problem, with its fix, of a publication that misses tables.
pub fn missing_tables_problem(publication: &str, missing: &[TableName]) -> String {
    let names: Vec<String> = missing.iter().map(|t| t.to_string()).collect();
    let quoted: Vec<String> = missing.iter().map(TableName::quoted).collect();
    format!(
        "publication {publication} does not publish {}: run ALTER PUBLICATION {} ADD TABLE {};",
        names.join(", "),
        quote_ident(publication),
        quoted.join(", ")
    )
}

/// [`super::SESSION_SETTINGS`] as the startup packet's `options`
/// (`-c name=value …`; tokio-postgres sets `client_encoding` itself).
fn session_options() -> String {
    super::SESSION_SETTINGS
        .iter()
        .filter(|(name, _)| *name != "client_encoding")
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a tokio-postgres connection until it ends.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "catalog connection closed");
    }
}

/// tokio-postgres reports TLS trouble as an error whose source is the
/// native-tls error (handshake) or a bare message (the server said 'N');
/// those become [`tls::TlsError`]s, with the same wording and class as on
/// the replication connection.
fn connect_error(cfg: &PostgresConfig, source: tokio_postgres::Error) -> PgError {
    let inner = std::error::Error::source(&source);
    if inner.is_some_and(|e| e.is::<native_tls::Error>()) {
        return tls::handshake_error(&cfg.host, cfg.port, &cfg.ssl, Box::new(source)).into();
    }
    if inner.is_some_and(|e| e.to_string() == "server does not support TLS") {
        return tls::TlsError::NotSupported {
            host: cfg.host.clone(),
            port: cfg.port,
            mode: cfg.ssl.mode,
        }
        .into();
    }
    // A TLS 1.3 server refuses a client certificate after the handshake,
    // so that surfaces as an i/o error on the first read.
    if cfg.ssl.mode != SslMode::Disable
        && tls::classify(&source) == tls::HandshakeFailure::ClientCertificateRejected
    {
        return tls::handshake_error(&cfg.host, cfg.port, &cfg.ssl, Box::new(source)).into();
    }
    PgError::Connect {
        host: cfg.host.clone(),
        port: cfg.port,
        user: cfg.user.clone(),
        database: cfg.database.clone(),
        ssl_mode: cfg.ssl.mode,
        source,
    }
}

/// Catalog facts about one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnFacts {
    pub nullable: bool,
    pub in_primary_key: bool,
    /// The column's default as PostgreSQL prints it (`pg_get_expr`), e.g.
    /// `0`, `true`, `'new'::text`, `now()`; none for generated columns.
    pub default: Option<String>,
}
