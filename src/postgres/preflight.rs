//! The PostgreSQL part of `siphon check`: everything the connector needs
//! from the server, checked without changing anything, each finding with
//! its fix.

use super::PgError;
use super::catalog::{Catalog, missing_tables_problem};
use crate::check::Finding;
use crate::config::{ConnectorConfig, TableName, quote_ident};

const COMPONENT: &str = "postgres";

pub async fn check(cfg: &ConnectorConfig) -> Vec<Finding> {
    let pg = &cfg.postgres;
    let catalog = match Catalog::connect(pg).await {
        Ok(c) => c,
        Err(e) => return vec![Finding::problem(COMPONENT, crate::pipeline::chain(&e))],
    };
    let mut out = Vec::new();
    let version = catalog
        .client()
        .query_one("SHOW server_version", &[])
        .await
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default();
    out.push(Finding::ok(
        COMPONENT,
        format!(
            "connected to {}:{} as {} (database {}, PostgreSQL {version})",
            pg.host, pg.port, pg.user, pg.database
        ),
    ));
    match catalog.problems(cfg).await {
        Ok(problems) if problems.is_empty() => out.push(Finding::ok(
            COMPONENT,
            format!(
                "wal_level is logical, role {} may replicate, and {} captured table(s) exist with a usable replica identity and SELECT privilege",
                pg.user,
                pg.tables.len()
            ),
        )),
        Ok(problems) => out.extend(problems.into_iter().map(|p| Finding::problem(COMPONENT, p))),
        Err(e) => out.push(Finding::problem(COMPONENT, crate::pipeline::chain(&e))),
    }
    if let Err(e) = headroom(&catalog, cfg, &mut out).await {
        out.push(Finding::problem(COMPONENT, crate::pipeline::chain(&e)));
    }
    if let Err(e) = publication(&catalog, cfg, &mut out).await {
        out.push(Finding::problem(COMPONENT, crate::pipeline::chain(&e)));
    }
    out
}

/// Free replication slots and WAL senders, and the state of the
/// connector's own slot (including the WAL it retains).
async fn headroom(
    catalog: &Catalog,
    cfg: &ConnectorConfig,
    out: &mut Vec<Finding>,
) -> Result<(), tokio_postgres::Error> {
    let slot = &cfg.postgres.slot;
    let row = catalog
        .client()
        .query_one(
            "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int,
                    current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)::int",
            &[],
        )
        .await?;
    let free_slots: i32 = row.get(0);
    let free_senders: i32 = row.get(1);
    let state = catalog
        .client()
        .query_opt(
            "SELECT active, wal_status, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)),
                    plugin::text, database::text
               FROM pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    match state {
        None if free_slots <= 0 => out.push(Finding::problem(
            COMPONENT,
            format!(
                "slot {slot} does not exist and no replication slot is free (max_replication_slots reached): raise max_replication_slots and restart PostgreSQL, or drop an unused slot"
            ),
        )),
        None if !cfg.postgres.create_slot => out.push(Finding::problem(
            COMPONENT,
            format!(
                "slot {slot} does not exist and postgres.create_slot is false: run SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput'); or set create_slot = true"
            ),
        )),
        None => out.push(Finding::ok(
            COMPONENT,
            format!("slot {slot} does not exist yet; siphon will create it ({free_slots} slot(s) free)"),
        )),
        Some(row) => {
            let active: bool = row.get(0);
            let wal_status: Option<String> = row.get(1);
            let retained: Option<String> = row.get(2);
            let plugin: Option<String> = row.get(3);
            let database: Option<String> = row.get(4);
            if plugin.as_deref() != Some("pgoutput")
                || database.as_deref() != Some(cfg.postgres.database.as_str())
            {
                out.push(Finding::problem(
                    COMPONENT,
                    format!(
                        "slot {slot} is not a pgoutput slot of database {} (plugin {plugin:?}, database {database:?}): choose another postgres.slot",
                        cfg.postgres.database
                    ),
                ));
            } else if wal_status.as_deref() == Some("lost") {
                out.push(Finding::problem(
                    COMPONENT,
                    format!(
                        "slot {slot} has lost WAL it needed (wal_status lost): the changes are gone; drop the slot and rebuild consumers from the current tables under a new connector name"
                    ),
                ));
            } else {
                out.push(Finding::ok(
                    COMPONENT,
                    format!(
                        "slot {slot} exists ({}, wal_status {}, retains {} of WAL)",
                        if active { "in use by a walsender" } else { "idle" },
                        wal_status.as_deref().unwrap_or("unknown"),
                        retained.as_deref().unwrap_or("no")
                    ),
                ));
            }
        }
    }
    if free_senders <= 0 {
        out.push(Finding::problem(
            COMPONENT,
            "no WAL sender is free (max_wal_senders reached): raise max_wal_senders and restart PostgreSQL".to_owned(),
        ));
    } else {
        out.push(Finding::ok(
            COMPONENT,
            format!("{free_senders} WAL sender(s) free"),
        ));
    }
    Ok(())
}

/// The publication exists and publishes every table, or siphon may create it.
async fn publication(
    catalog: &Catalog,
    cfg: &ConnectorConfig,
    out: &mut Vec<Finding>,
) -> Result<(), PgError> {
    let pg = &cfg.postgres;
    let name = &pg.publication;
    let unpublished = catalog.unpublished_tables(cfg).await?;
    let list = |tables: &[&TableName]| {
        tables
            .iter()
            .map(|t| t.quoted())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(missing) = unpublished else {
        if !pg.create_publication {
            out.push(Finding::problem(
                COMPONENT,
                format!(
                    "publication {name} does not exist and postgres.create_publication is false: run CREATE PUBLICATION {} FOR TABLE {};",
                    quote_ident(name),
                    list(&pg.tables.iter().collect::<Vec<_>>())
                ),
            ));
            return Ok(());
        }
        // Creating a publication for tables needs ownership of each.
        let mut not_owned = Vec::new();
        for t in &pg.tables {
            let owns = catalog
                .client()
                .query_opt(
                    "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = $1 AND c.relname = $2",
                    &[&t.schema, &t.table],
                )
                .await
                .map_err(|source| PgError::Query {
                    what: "table ownership",
                    source,
                })?
                .is_some_and(|r| r.get::<_, bool>(0));
            if !owns {
                not_owned.push(t);
            }
        }
        // ... and CREATE on the database.
        let may_create = catalog
            .client()
            .query_one(
                "SELECT has_database_privilege(current_database(), 'CREATE')",
                &[],
            )
            .await
            .map_err(|source| PgError::Query {
                what: "database privilege",
                source,
            })?
            .get::<_, bool>(0);
        if !may_create {
            out.push(Finding::problem(
                COMPONENT,
                format!(
                    "publication {name} does not exist and role {} lacks CREATE on database {}, so it cannot create it: run GRANT CREATE ON DATABASE {} TO {}; or have an owner create the publication and set postgres.create_publication = false",
                    pg.user,
                    pg.database,
                    quote_ident(&pg.database),
                    quote_ident(&pg.user)
                ),
            ));
        }
        if not_owned.is_empty() {
            if may_create {
                out.push(Finding::ok(
                    COMPONENT,
                    format!("publication {name} does not exist yet; siphon will create it"),
                ));
            }
        } else {
            out.push(Finding::problem(
                COMPONENT,
                format!(
                    "publication {name} does not exist and role {} does not own {}, so it cannot create it: have the owner run CREATE PUBLICATION {} FOR TABLE {}; and set postgres.create_publication = false",
                    pg.user,
                    list(&not_owned),
                    quote_ident(name),
                    list(&pg.tables.iter().collect::<Vec<_>>())
                ),
            ));
        }
        return Ok(());
    };
    if missing.is_empty() {
        out.push(Finding::ok(
            COMPONENT,
            format!("publication {name} publishes every captured table"),
        ));
    } else {
        out.push(Finding::problem(
            COMPONENT,
            missing_tables_problem(name, &missing),
        ));
    }
    Ok(())
}
