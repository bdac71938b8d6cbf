//! PostgreSQL: the replication protocol client, the pgoutput decoder, and
//! the catalog connection used for preflight checks and metadata, and TLS
//! for both connections.

pub mod catalog;
pub mod pgoutput;
pub mod preflight;
pub mod replication;
pub mod tls;

use tokio_postgres::error::SqlState;

use crate::config::SslMode;
use crate::error::ErrorClass;
use crate::event::Lsn;

/// Session settings every connection to PostgreSQL starts with (in the
/// startup packet). Values reach siphon as text — pgoutput formats them
/// with the walsender's settings, `COPY` with the snapshot connection's —
/// and the encoder parses one format only: these make that text the same
/// whatever the server's, database's or role's defaults are
/// (`ALTER DATABASE … SET DateStyle = 'SQL, DMY'` and the like).
pub(crate) const SESSION_SETTINGS: [(&str, &str); 7] = [
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    // `money` prints as `$1,234.56` with two fraction digits in the C
    // locale, whatever the server's default locale is.
    ("lc_monetary", "C"),
];

/// Whether `value`, as the server reports setting `name`, is what
/// [`SESSION_SETTINGS`] asked for (`DateStyle` keeps its day/month order
/// part, `TimeZone` may be reported under its alias).
pub(crate) fn setting_as_sent(name: &str, value: &str) -> bool {
    match name {
        "DateStyle" => value.starts_with("ISO"),
        "TimeZone" => value == "UTC" || value == "Etc/UTC",
        "client_encoding" => value.eq_ignore_ascii_case("UTF8"),
        _ => SESSION_SETTINGS
            .iter()
            .find(|(n, _)| *n == name)
            .is_none_or(|(_, v)| *v == value),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to PostgreSQL at {host}:{port} as {user} (database {database}){}", connect_hint(.source, *.ssl_mode))]
    Connect {
        host: String,
        port: u16,
        user: String,
        database: String,
        ssl_mode: SslMode,
        #[source]
        source: tokio_postgres::Error,
    },
    /// TLS to the server failed (either connection).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("PostgreSQL query for {what} failed")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the server reports {name} = {value:?} although siphon asked for another value when connecting: connect to PostgreSQL directly, not through a pooler or proxy that drops startup options, or the rows siphon reads would be misparsed"
    )]
    SessionSetting { name: String, value: String },
    #[error("heartbeat.action_query failed ({sql}){}", heartbeat_hint(.source))]
    Heartbeat {
        sql: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("connector {connector} cannot start:\n  - {}", .problems.join("\n  - "))]
    Preflight {
        connector: String,
        problems: Vec<String>,
    },
    #[error("replication connection failed (slot {slot})")]
    Replication {
        slot: String,
        #[source]
        source: replication::ReplicationError,
    },
    #[error("cannot decode a pgoutput message at {lsn}")]
    Decode {
        lsn: Lsn,
        #[source]
        source: pgoutput::DecodeError,
    },
    #[error(
        "pgoutput sent a change for relation oid {oid} before describing it (no Relation message)"
    )]
    UnknownRelation { oid: u32 },
    #[error(
        "replication slot {slot} does not exist but connector {connector} has a stored offset at {flush_lsn}: the changes since then are gone. \
         Changes were lost outside siphon: rebuild consumers from the current tables under a new connector name, or, to accept the loss, write a tombstone for this connector's key in the offsets topic"
    )]
    SlotLost {
        connector: String,
        slot: String,
        flush_lsn: Lsn,
    },
    #[error(
        "replication slot {slot} does not exist and postgres.create_slot is false: run SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput'); or set create_slot = true"
    )]
    SlotMissing { slot: String },
    #[error(
        "replication slot {slot} has confirmed {confirmed} but connector {connector} stored only {stored}: \
         changes in between were consumed outside siphon and are lost. Stop whatever else reads this slot; rebuild consumers from the current tables under a new connector name, or tombstone this connector's offset to accept the loss"
    )]
    SlotAhead {
        connector: String,
        slot: String,
        confirmed: Lsn,
        stored: Lsn,
    },
    #[error(
        "replication slot {slot} is in use by another connection: another instance of connector {connector} is streaming (this one waits and starts when the slot is free), or a stopped instance's connection is still closing"
    )]
    SlotInUse { connector: String, slot: String },
    #[error(
        "replication slot {slot} is not a pgoutput logical slot of database {database} (plugin {plugin:?}, database {found_db:?}): choose another postgres.slot"
    )]
    SlotMismatch {
        slot: String,
        database: String,
        plugin: Option<String>,
        found_db: Option<String>,
    },
    #[error(
        "PostgreSQL {what} changed: the stored offset of connector {connector} belongs to {stored}, the server is {found}. \
         Its positions mean nothing here (restore or failover to an unsynced server): rebuild consumers from this server's tables under a new connector name"
    )]
    SystemChanged {
        connector: String,
        what: &'static str,
        stored: String,
        found: String,
    },
    #[error(
        "the stored offset of connector {connector} is at {stored}, ahead of the server's WAL, which ends at {server}: \
         the offset record is damaged, forged, or belongs to another history of this server (restored from a backup or a disk \
         snapshot without a new timeline). Trusting it would acknowledge WAL never read and make PostgreSQL skip the changes \
         in between, so nothing was acknowledged. Fix: if the server was restored, rebuild consumers from its tables under a \
         new connector name; otherwise reset the connector (docs/operations.md, \"Resetting a connector\")"
    )]
    OffsetAhead {
        connector: String,
        stored: Lsn,
        server: Lsn,
    },
    #[error(
        "the stored offset of connector {connector} belongs to {what} {stored}, but the connector reads {what} {found}: \
         its positions say nothing about this {what}, and nothing was acknowledged. Fix: if postgres.{key} was changed by \
         mistake, set it back to \"{stored}\"; otherwise reset the connector (docs/operations.md, \"Resetting a connector\")"
    )]
    OffsetElsewhere {
        connector: String,
        what: &'static str,
        key: &'static str,
        stored: String,
        found: String,
    },
}

fn connect_hint(e: &tokio_postgres::Error, ssl_mode: SslMode) -> &'static str {
    match e.code() {
        Some(c)
            if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && ssl_mode == SslMode::Disable =>
        {
            NOT_ENCRYPTED_HINT
        }
        Some(c) if *c == SqlState::INVALID_PASSWORD => {
            ": password authentication failed; check the password in postgres.password_env / password_file"
        }
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            ": the server refused the login; check pg_hba.conf allows this user from this host"
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            ": the database does not exist; check postgres.database"
        }
        _ => "",
    }
}

/// What the operator does about a heartbeat query the server refused (no
/// hint for I/O and other transient errors: siphon retries those).
fn heartbeat_hint(e: &tokio_postgres::Error) -> &'static str {
    match e.code() {
        Some(c) if classify_sqlstate(Some(c)) == ErrorClass::Transient => "",
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            ": grant the connector's user the privilege the query needs (e.g. GRANT UPDATE ON the heartbeat table), or change heartbeat.action_query"
        }
        Some(_) => {
            ": fix heartbeat.action_query (run it in psql as the connector's user to check it), or set heartbeat.interval_ms = 0 to turn the heartbeat off"
        }
        None => "",
    }
}

/// For a login refused while TLS is off: hostssl-only pg_hba.conf lines are
/// the usual cause.
pub(crate) const NOT_ENCRYPTED_HINT: &str = ": the server refused the unencrypted login; if pg_hba.conf accepts this client only with hostssl, set postgres.ssl_mode = verify-full (or require)";

impl PgError {
    pub fn class(&self) -> ErrorClass {
        match self {
            PgError::Connect { source, .. }
            | PgError::Query { source, .. }
            | PgError::Heartbeat { source, .. } => classify_sqlstate(source.code()),
            PgError::Replication { source, .. } => {
                if source.is_transient() {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Fatal
                }
            }
            PgError::Tls(e) => {
                if e.is_transient() {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Fatal
                }
            }
            // Waiting is the point: the instance that streams goes on, this
            // one starts when it stops.
            PgError::SlotInUse { .. } => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        }
    }
}

/// Errors with no SQLSTATE are I/O (server down, network cut): transient.
/// Authentication, privilege and configuration errors need an operator.
pub(crate) fn classify_sqlstate(code: Option<&SqlState>) -> ErrorClass {
    let Some(code) = code else {
        return ErrorClass::Transient;
    };
    let class = &code.code()[..2];
    match class {
        // connection exception, operator intervention (shutdown), insufficient
        // resources, system error, object in use / lock not available.
        "08" | "57" | "53" | "58" | "40" => ErrorClass::Transient,
        "55" if *code == SqlState::OBJECT_IN_USE || *code == SqlState::LOCK_NOT_AVAILABLE => {
            ErrorClass::Transient
        }
        _ => ErrorClass::Fatal,
    }
}
