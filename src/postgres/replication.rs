//! The PostgreSQL streaming-replication client: one `replication=database`
//! connection, its replication commands, and the CopyBoth stream that
//! carries `pgoutput` data one way and standby status updates the other.
//!
//! tokio-postgres cannot speak CopyBoth, so this module drives the wire
//! protocol itself with `postgres_protocol`'s message codecs over a
//! `TcpStream`, or a TLS stream over it. Ordinary catalog queries belong to
//! tokio-postgres elsewhere; this module only does what needs the walsender.
//!
//! It implements:
//! - SSL negotiation (SSLRequest, then TLS as `tls` sets it up), startup and
//!   authentication (trust, cleartext, md5, SCRAM-SHA-256, and
//!   SCRAM-SHA-256-PLUS with `tls-server-end-point` channel binding over
//!   TLS): <https://www.postgresql.org/docs/15/protocol-flow.html>
//! - `IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`, `START_REPLICATION` and the
//!   CopyBoth sub-protocol (XLogData, primary keepalive, standby status
//!   update): <https://www.postgresql.org/docs/15/protocol-replication.html>
//!
//! Invariants:
//! - Server input never panics: every malformed, truncated or unexpected
//!   message becomes a [`ReplicationError`]. Frames longer than PostgreSQL can
//!   produce (1 GiB) are refused before any buffer grows for them.
//! - [`ReplicationStream::next`] is cancel-safe: partial frames stay in the
//!   connection's read buffer, so dropping the future (e.g. in `select!`)
//!   loses no bytes.
//! - The session pins `DateStyle`, `TimeZone`, `IntervalStyle`,
//!   `extra_float_digits`, `bytea_output` and `lc_monetary`, because `pgoutput` sends values
//!   in the text output format of the walsender session and the decoder
//!   parses exactly that format.
//! - XLogData payloads are handed out as slices of the read buffer, not
//!   copies.
//! - Passwords are never logged or printed by `Debug`.
//!
//! This module does not decide what to acknowledge: callers pass the LSNs
//! they have made durable to [`ReplicationStream::send_status_update`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256,
};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_native_tls::TlsStream;
use tokio_postgres::fallible_iterator::FallibleIterator;
use tracing::{debug, warn};

use super::tls::{self, TlsError};
use crate::config::{SslConfig, SslMode};
use crate::event::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01
/// 00:00:00 UTC), in which the replication protocol sends times.
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Largest frame accepted from the server. PostgreSQL cannot build a message
/// beyond `MaxAllocSize` (1 GiB - 1), so anything larger is a corrupt stream;
/// refusing it up front keeps a bad length from reserving gigabytes.
const MAX_FRAME_BYTES: usize = 1 << 30;

/// Minimum free space in the read buffer before each socket read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Tag of CopyBothResponse, which `postgres_protocol` 0.6 does not parse.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// Header of an XLogData message: type byte, WAL start, WAL end, send time.
const XLOG_DATA_HEADER_BYTES: usize = 1 + 8 + 8 + 8;

/// Length of a primary keepalive message: type byte, WAL end, send time,
/// reply flag.
const KEEPALIVE_BYTES: usize = 1 + 8 + 8 + 1;

/// Where and how to open the replication connection.
#[derive(Clone)]
pub struct ReplicationConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Needed when the server asks for a password (cleartext, md5, SCRAM).
    pub password: Option<String>,
    pub dbname: String,
    /// Shown in `pg_stat_replication.application_name`.
    pub application_name: String,
    /// Bound on TCP connect, TLS handshake and authentication; 0 means no
    /// bound.
    pub connect_timeout_ms: u64,
    /// TLS, as libpq's `sslmode` and friends; `host` is the name checked
    /// against the server certificate in `verify-full`.
    pub ssl: SslConfig,
}

impl fmt::Debug for ReplicationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("ssl", &self.ssl)
            .finish()
    }
}

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier (`pg_control_system().system_identifier`),
    /// as text because it does not fit every consumer's integer type.
    pub system_id: String,
    pub timeline: u32,
    /// Current WAL flush location.
    pub xlogpos: Lsn,
    /// The database connected to; `None` for physical replication connections.
    pub dbname: Option<String>,
}

/// What to do with the snapshot a new logical slot is created at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotAction {
    /// `NOEXPORT_SNAPSHOT`: no snapshot; streaming starts at the slot's
    /// consistent point.
    NoExport,
    /// `EXPORT_SNAPSHOT`: export the snapshot so another session can read the
    /// tables as of the consistent point with `SET TRANSACTION SNAPSHOT`. It
    /// stays valid only until the next command on this connection.
    Export,
    /// `USE_SNAPSHOT`: make the snapshot the current transaction's; the
    /// connection must be inside `BEGIN ISOLATION LEVEL REPEATABLE READ
    /// READ ONLY` (PostgreSQL 16.13, 17.10 and 18.4 refuse a read-write
    /// one).
    Use,
}

/// What `CREATE_REPLICATION_SLOT` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// The LSN from which the slot's changes are complete.
    pub consistent_point: Lsn,
    /// Present with [`SnapshotAction::Export`].
    pub snapshot_name: Option<String>,
}

/// Options of `START_REPLICATION` for `pgoutput` (protocol version 1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Publications to stream; at least one.
    pub publications: Vec<String>,
    /// Also stream `pg_logical_emit_message` messages.
    pub messages: bool,
}

/// One message of the CopyBoth stream from the walsender.
///
/// `Debug` shows the payload's length, not its bytes: they are row values.
#[derive(Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data: one `pgoutput` message in `data`.
    XLogData {
        /// WAL position the server gives for this data. Several messages
        /// may carry the same one: never use it as a change's position
        /// (see `event::Position`).
        wal_start: Lsn,
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Server clock at sending, microseconds since the Unix epoch.
        server_time_us: i64,
        /// The pgoutput message, a slice of the read buffer.
        data: Bytes,
    },
    /// Primary keepalive.
    PrimaryKeepalive {
        /// Current end of WAL on the server.
        wal_end: Lsn,
        /// Server clock at sending, microseconds since the Unix epoch.
        server_time_us: i64,
        /// The server will disconnect unless a status update comes soon.
        reply_requested: bool,
    },
}

impl fmt::Debug for ReplicationMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_time_us,
                data,
            } => f
                .debug_struct("XLogData")
                .field("wal_start", &format_args!("{wal_start}"))
                .field("wal_end", &format_args!("{wal_end}"))
                .field("server_time_us", server_time_us)
                .field("data_len", &data.len())
                .field("tag", &data.first().map(|&b| char::from(b)))
                .finish(),
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                server_time_us,
                reply_requested,
            } => f
                .debug_struct("PrimaryKeepalive")
                .field("wal_end", &format_args!("{wal_end}"))
                .field("server_time_us", server_time_us)
                .field("reply_requested", reply_requested)
                .finish(),
        }
    }
}

/// Failures of the replication connection.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to PostgreSQL at {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    /// Connect plus authentication took longer than `connect_timeout_ms`.
    #[error("connecting to PostgreSQL at {host}:{port} timed out after {timeout_ms} ms")]
    ConnectTimeout {
        host: String,
        port: u16,
        timeout_ms: u64,
    },
    /// Reading or writing the socket failed.
    #[error("i/o error on the replication connection")]
    Io {
        #[source]
        source: io::Error,
    },
    /// The server closed the connection without saying why.
    #[error("replication connection closed by the server")]
    Closed,
    /// The walsender ended the stream because the server is shutting down.
    #[error("the server ended the replication stream because it is shutting down")]
    ServerShutdown,
    /// An earlier i/o or protocol error left the connection in an unknown
    /// state; open a new one.
    #[error("replication connection is unusable after an earlier error")]
    Broken,
    /// The server sent an ErrorResponse.
    #[error("server error {code}: {message}{}", hint_suffix(.hint))]
    Server {
        /// `ERROR`, `FATAL` or `PANIC` (not localized).
        severity: String,
        /// SQLSTATE, e.g. `28P01` (invalid_password).
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    /// The server sent something the protocol does not allow here.
    #[error("replication protocol violation: {0}")]
    Protocol(String),
    /// Authentication could not proceed on the client side (no password
    /// configured, unsupported method, failed SCRAM server proof).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// An argument cannot be sent (e.g. a name containing a NUL byte).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// TLS could not be set up: files, the server's refusal, the handshake.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(hint) => format!(" (hint: {hint})"),
        None => String::new(),
    }
}

impl ReplicationError {
    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether retrying on a new connection may succeed without an operator
    /// changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicationError::Connect { .. }
            | ReplicationError::ConnectTimeout { .. }
            | ReplicationError::Io { .. }
            | ReplicationError::Closed
            | ReplicationError::ServerShutdown
            | ReplicationError::Broken => true,
            ReplicationError::Server { code, .. } => is_transient_sqlstate(code),
            ReplicationError::Tls(e) => e.is_transient(),
            ReplicationError::Protocol(_)
            | ReplicationError::Auth(_)
            | ReplicationError::InvalidArgument(_) => false,
        }
    }
}

/// SQLSTATEs that describe the server's momentary condition rather than a
/// problem with what we asked for; the same classes as the catalog
/// connection's classification in `postgres`.
fn is_transient_sqlstate(code: &str) -> bool {
    match code.get(..2) {
        // A protocol violation reported by the server is our bug; retrying
        // repeats it.
        Some("08") => code != "08P01",
        // connection exception, operator intervention (shutdown, cancel),
        // insufficient resources, system error, transaction rollback
        Some("57" | "53" | "58" | "40") => true,
        // object_in_use (the slot is still active for a previous walsender),
        // lock_not_available
        Some("55") => code == "55006" || code == "55P03",
        _ => false,
    }
}

/// A `replication=database` connection, ready for replication commands.
pub struct ReplicationClient {
    conn: Connection,
    parameters: HashMap<String, String>,
    backend_pid: Option<i32>,
}

impl fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("backend_pid", &self.backend_pid)
            .field("server_version", &self.parameter("server_version"))
            .finish_non_exhaustive()
    }
}

impl ReplicationClient {
    /// Opens the connection, authenticates and waits until the server is
    /// ready for commands.
    pub async fn connect(cfg: &ReplicationConfig) -> Result<Self, ReplicationError> {
        if cfg.connect_timeout_ms == 0 {
            return Self::connect_unbounded(cfg).await;
        }
        let bound = Duration::from_millis(cfg.connect_timeout_ms);
        match tokio::time::timeout(bound, Self::connect_unbounded(cfg)).await {
            Ok(result) => result,
            Err(_) => Err(ReplicationError::ConnectTimeout {
                host: cfg.host.clone(),
                port: cfg.port,
                timeout_ms: cfg.connect_timeout_ms,
            }),
        }
    }

    async fn connect_unbounded(cfg: &ReplicationConfig) -> Result<Self, ReplicationError> {
        let stream = TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|source| ReplicationError::Connect {
                host: cfg.host.clone(),
                port: cfg.port,
                source,
            })?;
        // Status updates are tiny and latency matters for keepalive replies.
        stream
            .set_nodelay(true)
            .map_err(|source| ReplicationError::Io { source })?;
        let stream = negotiate_tls(stream, cfg).await?;
        let encrypted = matches!(stream, PgStream::Tls(_));
        let mut conn = Connection::new(stream);

        let mut params: Vec<(&str, &str)> = vec![
            ("user", &cfg.user),
            ("database", &cfg.dbname),
            ("replication", "database"),
            ("application_name", &cfg.application_name),
        ];
        params.extend(super::SESSION_SETTINGS);
        frontend::startup_message(params, &mut conn.write_buf)
            .map_err(|e| invalid_argument("startup parameters", e))?;
        conn.flush().await?;

        authenticate(&mut conn, cfg)
            .await
            .map_err(|e| explain_startup_error(e, cfg, encrypted))?;

        let mut client = ReplicationClient {
            conn,
            parameters: HashMap::new(),
            backend_pid: None,
        };
        client.finish_startup().await?;
        client.check_session_settings()?;
        debug!(
            host = %cfg.host,
            port = cfg.port,
            backend_pid = client.backend_pid,
            tls = encrypted,
            "replication connection established"
        );
        Ok(client)
    }

    /// After AuthenticationOk: parameter statuses and backend key data until
    /// ReadyForQuery.
    async fn finish_startup(&mut self) -> Result<(), ReplicationError> {
        loop {
            match self.conn.read_frame().await? {
                Frame::Message(backend::Message::ParameterStatus(body)) => {
                    self.record_parameter(&body)?;
                }
                Frame::Message(backend::Message::BackendKeyData(body)) => {
                    self.backend_pid = Some(body.process_id());
                }
                Frame::Message(backend::Message::NoticeResponse(body)) => log_notice(&body),
                Frame::Message(backend::Message::ReadyForQuery(_)) => return Ok(()),
                Frame::Message(backend::Message::ErrorResponse(body)) => {
                    return Err(server_error(&body));
                }
                other => return Err(unexpected(&other, "startup")),
            }
        }
    }

    fn record_parameter(
        &mut self,
        body: &backend::ParameterStatusBody,
    ) -> Result<(), ReplicationError> {
        let name = body
            .name()
            .map_err(|e| protocol("ParameterStatus name", e))?;
        let value = body
            .value()
            .map_err(|e| protocol("ParameterStatus value", e))?;
        self.parameters.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    /// Refuses a session whose reported settings differ from the ones we
    /// sent (a pooler or proxy in between could do that), because the
    /// decoder would then misread pgoutput's values.
    fn check_session_settings(&self) -> Result<(), ReplicationError> {
        for (name, _) in super::SESSION_SETTINGS {
            let Some(value) = self.parameter(name) else {
                continue;
            };
            if !super::setting_as_sent(name, value) {
                return Err(ReplicationError::Protocol(format!(
                    "server reports {name}={value:?} although the startup packet set it; \
                     connect directly, not through a pooler that rewrites settings"
                )));
            }
        }
        Ok(())
    }

    /// A run-time parameter the server reported (`server_version`,
    /// `TimeZone`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Process id of the walsender serving this connection.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = single_row(&rows, "IDENTIFY_SYSTEM", 4)?;
        let system_id = required(row, 0, "IDENTIFY_SYSTEM", "systemid")?.to_owned();
        let timeline = required(row, 1, "IDENTIFY_SYSTEM", "timeline")?;
        let timeline = timeline.parse::<u32>().map_err(|_| {
            ReplicationError::Protocol(format!("IDENTIFY_SYSTEM: invalid timeline {timeline:?}"))
        })?;
        let xlogpos = parse_lsn(required(row, 2, "IDENTIFY_SYSTEM", "xlogpos")?)?;
        let dbname = row.get(3).cloned().flatten();
        Ok(SystemIdentity {
            system_id,
            timeline,
            xlogpos,
            dbname,
        })
    }

    /// `CREATE_REPLICATION_SLOT <name> LOGICAL pgoutput <snapshot action>`.
    pub async fn create_slot(
        &mut self,
        name: &str,
        snapshot: SnapshotAction,
    ) -> Result<CreatedSlot, ReplicationError> {
        self.create_slot_with(name, snapshot, false).await
    }

    /// [`Self::create_slot`], as a failover slot when `failover` is set
    /// (`(SNAPSHOT '...', FAILOVER true)`, PostgreSQL 17 and later; older
    /// servers refuse the option, so it is only sent when asked for).
    pub async fn create_slot_with(
        &mut self,
        name: &str,
        snapshot: SnapshotAction,
        failover: bool,
    ) -> Result<CreatedSlot, ReplicationError> {
        let command = if failover {
            let action = match snapshot {
                SnapshotAction::NoExport => "nothing",
                SnapshotAction::Export => "export",
                SnapshotAction::Use => "use",
            };
            format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT '{action}', FAILOVER true)",
                quote_identifier(name)
            )
        } else {
            let action = match snapshot {
                SnapshotAction::NoExport => "NOEXPORT_SNAPSHOT",
                SnapshotAction::Export => "EXPORT_SNAPSHOT",
                SnapshotAction::Use => "USE_SNAPSHOT",
            };
            format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {action}",
                quote_identifier(name)
            )
        };
        let rows = self.simple_query(&command).await?;
        let row = single_row(&rows, "CREATE_REPLICATION_SLOT", 3)?;
        Ok(CreatedSlot {
            slot_name: required(row, 0, "CREATE_REPLICATION_SLOT", "slot_name")?.to_owned(),
            consistent_point: parse_lsn(required(
                row,
                1,
                "CREATE_REPLICATION_SLOT",
                "consistent_point",
            )?)?,
            snapshot_name: row.get(2).cloned().flatten(),
        })
    }

    /// Runs `sql` with the simple query protocol and returns every row of
    /// every result set, values in text format. A server error is returned
    /// after the server is ready again, so the connection stays usable.
    ///
    /// Cancel-tolerant: if a previous call was dropped mid-way, its remaining
    /// responses are skipped before this query is sent.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        self.skip_abandoned_responses().await?;
        frontend::query(sql, &mut self.conn.write_buf)
            .map_err(|e| invalid_argument("query text", e))?;
        self.conn.awaiting_ready = true;
        self.conn.flush().await?;

        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.conn.read_frame().await? {
                Frame::Message(backend::Message::RowDescription(_))
                | Frame::Message(backend::Message::CommandComplete(_))
                | Frame::Message(backend::Message::EmptyQueryResponse) => {}
                Frame::Message(backend::Message::DataRow(body)) => {
                    if error.is_none() {
                        rows.push(parse_data_row(&body)?);
                    }
                }
                Frame::Message(backend::Message::ErrorResponse(body)) => {
                    error = Some(server_error(&body));
                }
                Frame::Message(backend::Message::NoticeResponse(body)) => log_notice(&body),
                Frame::Message(backend::Message::ParameterStatus(body)) => {
                    self.record_parameter(&body)?;
                }
                Frame::Message(backend::Message::ReadyForQuery(_)) => {
                    self.conn.awaiting_ready = false;
                    return match error {
                        Some(error) => Err(error),
                        None => Ok(rows),
                    };
                }
                other => {
                    // COPY modes cannot be left cleanly from here.
                    self.conn.broken = true;
                    return Err(unexpected(&other, "simple query"));
                }
            }
        }
    }

    async fn skip_abandoned_responses(&mut self) -> Result<(), ReplicationError> {
        while self.conn.awaiting_ready {
            match self.conn.read_frame().await? {
                Frame::Message(backend::Message::ReadyForQuery(_)) => {
                    self.conn.awaiting_ready = false;
                }
                Frame::Message(backend::Message::ParameterStatus(body)) => {
                    self.record_parameter(&body)?;
                }
                Frame::Message(_) => {}
                Frame::CopyBothResponse => {
                    self.conn.broken = true;
                    return Err(ReplicationError::Broken);
                }
            }
        }
        Ok(())
    }

    /// `START_REPLICATION SLOT <slot> LOGICAL <start> (proto_version '1',
    /// publication_names '…'[, messages 'true'])`, then the CopyBoth stream.
    ///
    /// The server streams transactions that commit after the slot's
    /// `confirmed_flush_lsn` (or `start`, if later).
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &StartOptions,
    ) -> Result<ReplicationStream, ReplicationError> {
        if options.publications.is_empty() {
            return Err(ReplicationError::InvalidArgument(format!(
                "START_REPLICATION on slot {slot} needs at least one publication"
            )));
        }
        let publications = options
            .publications
            .iter()
            .map(|p| quote_identifier(p))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names {}",
            quote_identifier(slot),
            quote_literal(&publications)
        );
        if options.messages {
            command.push_str(", messages 'true'");
        }
        command.push(')');

        self.skip_abandoned_responses().await?;
        frontend::query(&command, &mut self.conn.write_buf)
            .map_err(|e| invalid_argument("START_REPLICATION command", e))?;
        self.conn.awaiting_ready = true;
        self.conn.flush().await?;

        let mut error = None;
        loop {
            match self.conn.read_frame().await? {
                Frame::CopyBothResponse if error.is_none() => {
                    self.conn.awaiting_ready = false;
                    debug!(slot, start = %start, "replication stream started");
                    return Ok(ReplicationStream {
                        conn: self.conn,
                        backend_pid: self.backend_pid,
                        state: StreamState::Streaming,
                    });
                }
                Frame::Message(backend::Message::ErrorResponse(body)) => {
                    error = Some(server_error(&body));
                }
                Frame::Message(backend::Message::NoticeResponse(body)) => log_notice(&body),
                Frame::Message(backend::Message::ParameterStatus(_)) => {}
                Frame::Message(backend::Message::ReadyForQuery(_)) => {
                    return Err(error.unwrap_or_else(|| {
                        ReplicationError::Protocol(
                            "START_REPLICATION ended without entering COPY mode".to_owned(),
                        )
                    }));
                }
                other => return Err(unexpected(&other, "START_REPLICATION")),
            }
        }
    }
}

/// Where the CopyBoth exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    /// Both directions open.
    Streaming,
    /// The server sent CopyDone; it sends no more data, we may still send
    /// status updates until [`ReplicationStream::close`].
    ServerDone,
    /// The server ended the command without CopyDone: a walsender does that
    /// when the server shuts down (smart or fast) after the client confirmed
    /// the last WAL. The connection is ending.
    Ended,
    /// The server reported an error; the stream is over.
    Failed,
}

/// The CopyBoth stream of a started logical replication.
pub struct ReplicationStream {
    conn: Connection,
    backend_pid: Option<i32>,
    state: StreamState,
}

impl fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("backend_pid", &self.backend_pid)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ReplicationStream {
    /// The next message from the server; `Ok(None)` once the server has ended
    /// the copy cleanly with CopyDone (and on every call after that). A server
    /// shutting down ends the stream with [`ReplicationError::ServerShutdown`]
    /// (transient: reconnect and resume from the acknowledged position); a
    /// crash or network cut with [`ReplicationError::Closed`].
    ///
    /// Cancel-safe: a partially received frame stays buffered and the next
    /// call continues it.
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>, ReplicationError> {
        loop {
            match self.state {
                StreamState::Streaming => {}
                StreamState::ServerDone => return Ok(None),
                StreamState::Ended => return Err(ReplicationError::ServerShutdown),
                StreamState::Failed => return Err(ReplicationError::Broken),
            }
            match self.conn.read_frame().await? {
                Frame::Message(backend::Message::CopyData(body)) => {
                    return parse_copy_data(body.into_bytes()).map(Some);
                }
                Frame::Message(backend::Message::CopyDone) => {
                    self.state = StreamState::ServerDone;
                }
                Frame::Message(backend::Message::CommandComplete(_)) => {
                    self.state = StreamState::Ended;
                }
                Frame::Message(backend::Message::ErrorResponse(body)) => {
                    self.state = StreamState::Failed;
                    return Err(server_error(&body));
                }
                Frame::Message(backend::Message::NoticeResponse(body)) => log_notice(&body),
                Frame::Message(backend::Message::ParameterStatus(_)) => {}
                other => {
                    self.conn.broken = true;
                    return Err(unexpected(&other, "replication stream"));
                }
            }
        }
    }

    /// Sends a standby status update: everything up to `written` is received,
    /// up to `flushed` is durable downstream (PostgreSQL may then discard
    /// WAL and advance the slot's `confirmed_flush_lsn` to it), up to
    /// `applied` is applied. With `reply_requested` the server answers with
    /// a keepalive at once.
    ///
    /// If this future is dropped, the update may still be sent before the
    /// next one: the unsent bytes stay queued, never half-written.
    pub async fn send_status_update(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        applied: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        let mut body = BytesMut::with_capacity(1 + 8 + 8 + 8 + 8 + 1);
        body.put_u8(b'r');
        body.put_u64(written.0);
        body.put_u64(flushed.0);
        body.put_u64(applied.0);
        body.put_i64(unix_us_to_pg(now_unix_us()));
        body.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(body.freeze())
            .map_err(|source| ReplicationError::Io { source })?
            .write(&mut self.conn.write_buf);
        self.conn.flush().await
    }

    /// Process id of the walsender serving this stream.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Ends the copy (CopyDone), waits for the server to finish the command,
    /// then terminates the connection. Data still in flight is discarded.
    /// Bound it with a timeout if the server may be unresponsive.
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        // After a shutdown or a server error there is no copy left to end;
        // the caller already has the error.
        if matches!(self.state, StreamState::Ended | StreamState::Failed) || self.conn.broken {
            self.conn.terminate().await;
            return Ok(());
        }
        frontend::copy_done(&mut self.conn.write_buf);
        self.conn.flush().await?;
        let mut error = None;
        loop {
            let frame = match self.conn.read_frame().await {
                Ok(frame) => frame,
                // A server that is shutting down may close right after
                // CommandComplete without ReadyForQuery.
                Err(ReplicationError::Closed) if self.state == StreamState::Ended => break,
                Err(e) => return Err(e),
            };
            match frame {
                Frame::Message(backend::Message::CopyData(_)) => {}
                Frame::Message(backend::Message::CopyDone) => {
                    self.state = StreamState::ServerDone;
                }
                Frame::Message(backend::Message::CommandComplete(_)) => {
                    self.state = StreamState::Ended;
                }
                Frame::Message(backend::Message::ErrorResponse(body)) => {
                    error = Some(server_error(&body));
                }
                Frame::Message(backend::Message::NoticeResponse(body)) => log_notice(&body),
                Frame::Message(backend::Message::ParameterStatus(_))
                | Frame::Message(backend::Message::RowDescription(_))
                | Frame::Message(backend::Message::DataRow(_)) => {}
                Frame::Message(backend::Message::ReadyForQuery(_)) => break,
                other => {
                    self.conn.terminate().await;
                    return Err(unexpected(&other, "closing the replication stream"));
                }
            }
        }
        self.conn.terminate().await;
        match error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Decodes one CopyData payload of the replication stream.
fn parse_copy_data(data: Bytes) -> Result<ReplicationMessage, ReplicationError> {
    match data.first() {
        Some(b'w') => {
            if data.len() < XLOG_DATA_HEADER_BYTES {
                return Err(ReplicationError::Protocol(format!(
                    "XLogData message of {} bytes is shorter than its {XLOG_DATA_HEADER_BYTES}-byte header",
                    data.len()
                )));
            }
            Ok(ReplicationMessage::XLogData {
                wal_start: Lsn(read_u64(&data, 1)?),
                wal_end: Lsn(read_u64(&data, 9)?),
                server_time_us: pg_to_unix_us(read_u64(&data, 17)? as i64),
                data: data.slice(XLOG_DATA_HEADER_BYTES..),
            })
        }
        Some(b'k') => {
            if data.len() != KEEPALIVE_BYTES {
                return Err(ReplicationError::Protocol(format!(
                    "primary keepalive message of {} bytes, expected {KEEPALIVE_BYTES}",
                    data.len()
                )));
            }
            Ok(ReplicationMessage::PrimaryKeepalive {
                wal_end: Lsn(read_u64(&data, 1)?),
                server_time_us: pg_to_unix_us(read_u64(&data, 9)? as i64),
                reply_requested: data.get(17).is_some_and(|&b| b != 0),
            })
        }
        Some(&other) => Err(ReplicationError::Protocol(format!(
            "unknown replication message type {:?} (0x{other:02x})",
            char::from(other)
        ))),
        None => Err(ReplicationError::Protocol(
            "empty CopyData message in the replication stream".to_owned(),
        )),
    }
}

fn read_u64(data: &[u8], at: usize) -> Result<u64, ReplicationError> {
    data.get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| ReplicationError::Protocol("truncated replication message".to_owned()))
}

/// Protocol time (µs since 2000-01-01) to µs since the Unix epoch. Saturates
/// rather than overflowing on absurd server values.
fn pg_to_unix_us(pg_us: i64) -> i64 {
    pg_us.saturating_add(PG_EPOCH_OFFSET_US)
}

fn unix_us_to_pg(unix_us: i64) -> i64 {
    unix_us.saturating_sub(PG_EPOCH_OFFSET_US)
}

fn now_unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_micros()).ok())
        .unwrap_or(0)
}

/// Authentication exchange, up to and including AuthenticationOk.
async fn authenticate(
    conn: &mut Connection,
    cfg: &ReplicationConfig,
) -> Result<(), ReplicationError> {
    let mut scram: Option<ScramSha256> = None;
    // Set once the server's SCRAM proof checked out; AuthenticationOk
    // without it would let an impostor skip proving it knows the password.
    let mut scram_verified = false;
    loop {
        match conn.read_frame().await? {
            Frame::Message(backend::Message::AuthenticationOk) => {
                if scram.is_some() && !scram_verified {
                    return Err(ReplicationError::Auth(
                        "server skipped the SCRAM-SHA-256 final message".to_owned(),
                    ));
                }
                return Ok(());
            }
            Frame::Message(backend::Message::AuthenticationCleartextPassword) => {
                let password = require_password(cfg, "password")?;
                frontend::password_message(password.as_bytes(), &mut conn.write_buf)
                    .map_err(|e| invalid_argument("password", e))?;
                conn.flush().await?;
            }
            Frame::Message(backend::Message::AuthenticationMd5Password(body)) => {
                let password = require_password(cfg, "md5")?;
                let hash = md5_hash(cfg.user.as_bytes(), password.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut conn.write_buf)
                    .map_err(|e| invalid_argument("password", e))?;
                conn.flush().await?;
            }
            Frame::Message(backend::Message::AuthenticationSasl(body)) => {
                let mut mechanisms = Vec::new();
                let mut iter = body.mechanisms();
                while let Some(mechanism) = iter
                    .next()
                    .map_err(|e| protocol("SASL mechanism list", e))?
                {
                    mechanisms.push(mechanism.to_owned());
                }
                let offers = |name: &str| mechanisms.iter().any(|m| m == name);
                if !offers(SCRAM_SHA_256) && !offers(SCRAM_SHA_256_PLUS) {
                    return Err(ReplicationError::Auth(format!(
                        "server offers SASL mechanisms {mechanisms:?}, siphon supports only \
                         {SCRAM_SHA_256} and {SCRAM_SHA_256_PLUS}"
                    )));
                }
                let password = require_password(cfg, SCRAM_SHA_256)?;
                // Bind to the TLS channel when the server offers it, so a
                // man in the middle with another certificate cannot relay
                // the exchange. The gs2 header must tell the truth either
                // way: the server refuses "y" (client could bind but thinks
                // the server cannot) when it offered -PLUS.
                let end_point = conn.stream.tls_server_end_point();
                let (mechanism, binding) = match end_point {
                    Some(hash) if offers(SCRAM_SHA_256_PLUS) => (
                        SCRAM_SHA_256_PLUS,
                        ChannelBinding::tls_server_end_point(hash),
                    ),
                    Some(_) => (SCRAM_SHA_256, ChannelBinding::unrequested()),
                    None => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                };
                if !offers(mechanism) {
                    return Err(ReplicationError::Auth(format!(
                        "server offers only {SCRAM_SHA_256_PLUS}, which needs TLS: set \
                         postgres.ssl_mode to require or verify-full"
                    )));
                }
                let state = ScramSha256::new(password.as_bytes(), binding);
                frontend::sasl_initial_response(mechanism, state.message(), &mut conn.write_buf)
                    .map_err(|e| invalid_argument("SASL initial response", e))?;
                scram = Some(state);
                conn.flush().await?;
            }
            Frame::Message(backend::Message::AuthenticationSaslContinue(body)) => {
                let Some(state) = scram.as_mut() else {
                    return Err(ReplicationError::Protocol(
                        "SASL continue without a SASL exchange".to_owned(),
                    ));
                };
                state.update(body.data()).map_err(|e| {
                    ReplicationError::Auth(format!("SCRAM server-first message: {e}"))
                })?;
                frontend::sasl_response(state.message(), &mut conn.write_buf)
                    .map_err(|e| invalid_argument("SASL response", e))?;
                conn.flush().await?;
            }
            Frame::Message(backend::Message::AuthenticationSaslFinal(body)) => {
                let Some(state) = scram.as_mut() else {
                    return Err(ReplicationError::Protocol(
                        "SASL final without a SASL exchange".to_owned(),
                    ));
                };
                state
                    .finish(body.data())
                    .map_err(|e| ReplicationError::Auth(format!("SCRAM server proof: {e}")))?;
                scram_verified = true;
            }
            Frame::Message(backend::Message::ErrorResponse(body)) => {
                return Err(server_error(&body));
            }
            Frame::Message(backend::Message::NoticeResponse(body)) => log_notice(&body),
            Frame::Message(
                backend::Message::AuthenticationKerberosV5
                | backend::Message::AuthenticationScmCredential
                | backend::Message::AuthenticationGss
                | backend::Message::AuthenticationGssContinue(_)
                | backend::Message::AuthenticationSspi,
            ) => {
                return Err(ReplicationError::Auth(
                    "server asks for Kerberos/GSSAPI/SSPI/SCM authentication, which siphon does \
                     not support; use scram-sha-256 in pg_hba.conf"
                        .to_owned(),
                ));
            }
            other => return Err(unexpected(&other, "authentication")),
        }
    }
}

fn require_password<'a>(
    cfg: &'a ReplicationConfig,
    method: &str,
) -> Result<&'a str, ReplicationError> {
    cfg.password.as_deref().ok_or_else(|| {
        ReplicationError::Auth(format!(
            "server asks for {method} authentication of user {} but no password is configured",
            cfg.user
        ))
    })
}

/// Answers of the server to an SSLRequest.
const SSL_ACCEPTED: u8 = b'S';
const SSL_REFUSED: u8 = b'N';

/// SSLRequest and, when the server agrees, the TLS handshake: the stream
/// the startup message then goes over.
///
/// Exactly the one answer byte is read off the plain socket before the
/// handshake, so no unencrypted byte the server (or a man in the middle)
/// sends after it can be taken for part of the encrypted session
/// (CVE-2021-23222).
async fn negotiate_tls(
    mut tcp: TcpStream,
    cfg: &ReplicationConfig,
) -> Result<PgStream, ReplicationError> {
    // Files are read before the server is bothered: a bad one is the
    // operator's to fix whatever the server says.
    let Some(connector) = tls::connector(&cfg.ssl)? else {
        return Ok(PgStream::Plain(tcp));
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request)
        .await
        .map_err(|source| ReplicationError::Io { source })?;
    let answer = match tcp.read_u8().await {
        Ok(answer) => answer,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ReplicationError::Closed);
        }
        Err(source) => return Err(ReplicationError::Io { source }),
    };
    match answer {
        SSL_ACCEPTED => {}
        SSL_REFUSED if cfg.ssl.mode == SslMode::Prefer => {
            debug!(host = %cfg.host, port = cfg.port, "server does not offer TLS, continuing without (ssl_mode = prefer)");
            return Ok(PgStream::Plain(tcp));
        }
        SSL_REFUSED => {
            return Err(TlsError::NotSupported {
                host: cfg.host.clone(),
                port: cfg.port,
                mode: cfg.ssl.mode,
            }
            .into());
        }
        other => {
            return Err(ReplicationError::Protocol(format!(
                "unexpected answer {:?} (0x{other:02x}) to SSLRequest",
                char::from(other)
            )));
        }
    }
    // `host` is both the SNI name and, in verify-full, the name the
    // certificate must carry (an IP address is checked against IP SANs).
    let stream = tokio_native_tls::TlsConnector::from(connector)
        .connect(&cfg.host, tcp)
        .await
        .map_err(|e| tls::handshake_error(&cfg.host, cfg.port, &cfg.ssl, Box::new(e)))?;
    Ok(PgStream::Tls(Box::new(stream)))
}

/// Makes startup failures that TLS settings explain say so: a login
/// refused on a connection the operator chose to leave unencrypted (the
/// server says only "no encryption"), and a TLS 1.3 server refusing our
/// client certificate, which arrives after the handshake as an i/o error on
/// the first read.
fn explain_startup_error(
    e: ReplicationError,
    cfg: &ReplicationConfig,
    encrypted: bool,
) -> ReplicationError {
    match e {
        ReplicationError::Server {
            severity,
            code,
            message,
            detail,
            hint: None,
        } if code == "28000" && cfg.ssl.mode == SslMode::Disable => ReplicationError::Server {
            severity,
            code,
            message,
            detail,
            hint: Some(
                super::NOT_ENCRYPTED_HINT
                    .trim_start_matches(": ")
                    .to_owned(),
            ),
        },
        ReplicationError::Io { source }
            if encrypted
                && tls::classify(&source) == tls::HandshakeFailure::ClientCertificateRejected =>
        {
            tls::handshake_error(&cfg.host, cfg.port, &cfg.ssl, Box::new(source)).into()
        }
        other => other,
    }
}

/// The connection's byte stream: plain TCP, or TLS over it. Everything
/// above (framing, buffers, cancel-safety) sees only `AsyncRead` and
/// `AsyncWrite`; a TLS read or write that returns `Pending` has consumed
/// nothing, as with TCP.
enum PgStream {
    Plain(TcpStream),
    // Boxed: the TLS state is large and this enum lives in every connection.
    Tls(Box<TlsStream<TcpStream>>),
}

impl PgStream {
    /// The hash of the server certificate for SCRAM's
    /// `tls-server-end-point` channel binding (RFC 5929), if TLS is on and
    /// the certificate's signature algorithm defines one.
    fn tls_server_end_point(&self) -> Option<Vec<u8>> {
        match self {
            PgStream::Plain(_) => None,
            PgStream::Tls(tls) => tls.get_ref().tls_server_end_point().ok().flatten(),
        }
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A frame read from the server.
enum Frame {
    Message(backend::Message),
    /// CopyBothResponse, which `backend::Message` does not know. Its column
    /// formats carry nothing for logical replication, so they are dropped.
    CopyBothResponse,
}

/// The socket with its read and write buffers.
struct Connection {
    stream: PgStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// A query was sent and its ReadyForQuery not read yet (its caller may
    /// have been cancelled).
    awaiting_ready: bool,
    /// An i/o or framing error happened; the byte stream cannot be trusted.
    broken: bool,
}

impl Connection {
    fn new(stream: PgStream) -> Self {
        Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            write_buf: BytesMut::new(),
            awaiting_ready: false,
            broken: false,
        }
    }

    /// Reads until one whole frame is buffered. Cancel-safe: bytes read so
    /// far stay in `read_buf`.
    async fn read_frame(&mut self) -> Result<Frame, ReplicationError> {
        if self.broken {
            return Err(ReplicationError::Broken);
        }
        loop {
            match parse_frame(&mut self.read_buf) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK_BYTES {
                self.read_buf.reserve(READ_CHUNK_BYTES);
            }
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) => {
                    self.broken = true;
                    return Err(ReplicationError::Closed);
                }
                Ok(_) => {}
                Err(source) => {
                    self.broken = true;
                    return Err(ReplicationError::Io { source });
                }
            }
        }
    }

    /// Writes out `write_buf`. Bytes leave the buffer only once written, so
    /// a cancelled flush never leaves half a message behind.
    async fn flush(&mut self) -> Result<(), ReplicationError> {
        if self.broken {
            return Err(ReplicationError::Broken);
        }
        while !self.write_buf.is_empty() {
            match self.stream.write_buf(&mut self.write_buf).await {
                Ok(0) => {
                    self.broken = true;
                    return Err(ReplicationError::Io {
                        source: io::Error::from(io::ErrorKind::WriteZero),
                    });
                }
                Ok(_) => {}
                Err(source) => {
                    self.broken = true;
                    return Err(ReplicationError::Io { source });
                }
            }
        }
        // A no-op on plain TCP; TLS has written whole records already, but
        // flushing keeps that an implementation detail of the stream.
        if let Err(source) = self.stream.flush().await {
            self.broken = true;
            return Err(ReplicationError::Io { source });
        }
        Ok(())
    }

    /// Best-effort Terminate and shutdown; the connection is going away
    /// either way.
    async fn terminate(&mut self) {
        if !self.broken {
            frontend::terminate(&mut self.write_buf);
            let _ = self.flush().await;
        }
        let _ = self.stream.shutdown().await;
    }
}

/// Splits one complete frame off the front of `buf`, or returns `None` when
/// more bytes are needed (reserving room for them).
fn parse_frame(buf: &mut BytesMut) -> Result<Option<Frame>, ReplicationError> {
    let Some(header) = backend::Header::parse(buf).map_err(|e| protocol("message header", e))?
    else {
        return Ok(None);
    };
    let len = usize::try_from(header.len()).map_err(|_| {
        ReplicationError::Protocol(format!("negative message length {}", header.len()))
    })?;
    if len > MAX_FRAME_BYTES {
        return Err(ReplicationError::Protocol(format!(
            "message of {len} bytes (tag {:?}) exceeds the {MAX_FRAME_BYTES}-byte limit",
            char::from(header.tag())
        )));
    }
    if header.tag() == COPY_BOTH_RESPONSE_TAG {
        let total = len + 1;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let _ = buf.split_to(total);
        return Ok(Some(Frame::CopyBothResponse));
    }
    backend::Message::parse(buf)
        .map(|message| message.map(Frame::Message))
        .map_err(|e| protocol("backend message", e))
}

fn parse_data_row(body: &backend::DataRowBody) -> Result<Vec<Option<String>>, ReplicationError> {
    let buffer = body.buffer();
    let mut values = Vec::new();
    let mut ranges = body.ranges();
    while let Some(range) = ranges.next().map_err(|e| protocol("DataRow", e))? {
        values.push(match range {
            None => None,
            Some(range) => Some(text_at(buffer, range)?),
        });
    }
    Ok(values)
}

fn text_at(buffer: &[u8], range: Range<usize>) -> Result<String, ReplicationError> {
    let bytes = buffer
        .get(range)
        .ok_or_else(|| ReplicationError::Protocol("DataRow value out of bounds".to_owned()))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ReplicationError::Protocol("DataRow value is not UTF-8".to_owned()))
}

/// The ErrorResponse fields callers classify by. An unparsable body still
/// yields an error that says so rather than a panic.
fn server_error(body: &backend::ErrorResponseBody) -> ReplicationError {
    let mut severity = None;
    let mut localized_severity = None;
    let mut code = None;
    let mut message = None;
    let mut detail = None;
    let mut hint = None;
    let mut fields = body.fields();
    loop {
        match fields.next() {
            Ok(Some(field)) => {
                let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
                match field.type_() {
                    b'V' => severity = Some(value),
                    b'S' => localized_severity = Some(value),
                    b'C' => code = Some(value),
                    b'M' => message = Some(value),
                    b'D' => detail = Some(value),
                    b'H' => hint = Some(value),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return protocol("ErrorResponse", e),
        }
    }
    ReplicationError::Server {
        severity: severity
            .or(localized_severity)
            .unwrap_or_else(|| "ERROR".to_owned()),
        // internal_error when a (non-PostgreSQL) server leaves the code out
        code: code.unwrap_or_else(|| "XX000".to_owned()),
        message: message.unwrap_or_default(),
        detail,
        hint,
    }
}

fn log_notice(body: &backend::NoticeResponseBody) {
    let mut code = String::new();
    let mut message = String::new();
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    if code.starts_with("01") {
        warn!(sqlstate = %code, notice = %message, "postgresql warning on the replication connection");
    } else {
        debug!(sqlstate = %code, notice = %message, "postgresql notice on the replication connection");
    }
}

fn unexpected(frame: &Frame, during: &str) -> ReplicationError {
    ReplicationError::Protocol(format!("unexpected {} during {during}", frame_name(frame)))
}

fn frame_name(frame: &Frame) -> &'static str {
    use backend::Message as M;
    match frame {
        Frame::CopyBothResponse => "CopyBothResponse",
        Frame::Message(message) => match message {
            M::AuthenticationOk
            | M::AuthenticationCleartextPassword
            | M::AuthenticationMd5Password(_)
            | M::AuthenticationSasl(_)
            | M::AuthenticationSaslContinue(_)
            | M::AuthenticationSaslFinal(_)
            | M::AuthenticationKerberosV5
            | M::AuthenticationScmCredential
            | M::AuthenticationGss
            | M::AuthenticationGssContinue(_)
            | M::AuthenticationSspi => "authentication request",
            M::BackendKeyData(_) => "BackendKeyData",
            M::BindComplete => "BindComplete",
            M::CloseComplete => "CloseComplete",
            M::CommandComplete(_) => "CommandComplete",
            M::CopyData(_) => "CopyData",
            M::CopyDone => "CopyDone",
            M::CopyInResponse(_) => "CopyInResponse",
            M::CopyOutResponse(_) => "CopyOutResponse",
            M::DataRow(_) => "DataRow",
            M::EmptyQueryResponse => "EmptyQueryResponse",
            M::ErrorResponse(_) => "ErrorResponse",
            M::NoData => "NoData",
            M::NoticeResponse(_) => "NoticeResponse",
            M::NotificationResponse(_) => "NotificationResponse",
            M::ParameterDescription(_) => "ParameterDescription",
            M::ParameterStatus(_) => "ParameterStatus",
            M::ParseComplete => "ParseComplete",
            M::PortalSuspended => "PortalSuspended",
            M::ReadyForQuery(_) => "ReadyForQuery",
            M::RowDescription(_) => "RowDescription",
            _ => "message",
        },
    }
}

fn single_row<'a>(
    rows: &'a [Vec<Option<String>>],
    command: &str,
    min_columns: usize,
) -> Result<&'a [Option<String>], ReplicationError> {
    match rows {
        [row] if row.len() >= min_columns => Ok(row),
        [row] => Err(ReplicationError::Protocol(format!(
            "{command} returned {} columns, expected at least {min_columns}",
            row.len()
        ))),
        _ => Err(ReplicationError::Protocol(format!(
            "{command} returned {} rows, expected 1",
            rows.len()
        ))),
    }
}

fn required<'a>(
    row: &'a [Option<String>],
    index: usize,
    command: &str,
    column: &str,
) -> Result<&'a str, ReplicationError> {
    row.get(index)
        .and_then(|v| v.as_deref())
        .ok_or_else(|| ReplicationError::Protocol(format!("{command} returned NULL {column}")))
}

fn parse_lsn(text: &str) -> Result<Lsn, ReplicationError> {
    text.parse::<Lsn>().map_err(ReplicationError::Protocol)
}

/// A double-quoted SQL identifier; the replication grammar accepts these for
/// slot names, and pgoutput's `publication_names` list uses the same syntax.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A single-quoted SQL string literal. The replication command scanner knows
/// no backslash escapes, only doubled quotes.
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn protocol(what: &str, e: io::Error) -> ReplicationError {
    ReplicationError::Protocol(format!("malformed {what}: {e}"))
}

fn invalid_argument(what: &str, e: io::Error) -> ReplicationError {
    ReplicationError::InvalidArgument(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn xlog_data(start: u64, end: u64, time: i64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b'w'];
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&end.to_be_bytes());
        out.extend_from_slice(&time.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn xlog_data_is_decoded_with_times_on_the_unix_epoch() {
        let raw = xlog_data(0x16B_3748, 0x16B_4000, 1_000_000, b"Bpayload");
        let message = parse_copy_data(Bytes::from(raw)).unwrap();
        assert_eq!(
            message,
            ReplicationMessage::XLogData {
                wal_start: Lsn(0x16B_3748),
                wal_end: Lsn(0x16B_4000),
                server_time_us: 946_684_801_000_000,
                data: Bytes::from_static(b"Bpayload"),
            }
        );
    }

    #[test]
    fn xlog_data_may_be_empty_but_not_shorter_than_its_header() {
        let raw = xlog_data(1, 2, 3, b"");
        assert!(matches!(
            parse_copy_data(Bytes::from(raw.clone())),
            Ok(ReplicationMessage::XLogData { data, .. }) if data.is_empty()
        ));
        let err = parse_copy_data(Bytes::from(raw[..24].to_vec())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "replication protocol violation: XLogData message of 24 bytes is shorter than its 25-byte header"
        );
    }

    #[test]
    fn keepalive_is_decoded() {
        let mut raw = vec![b'k'];
        raw.extend_from_slice(&0x1_0000_0000u64.to_be_bytes());
        raw.extend_from_slice(&(-1i64).to_be_bytes());
        raw.push(1);
        assert_eq!(
            parse_copy_data(Bytes::from(raw.clone())).unwrap(),
            ReplicationMessage::PrimaryKeepalive {
                wal_end: Lsn(0x1_0000_0000),
                server_time_us: PG_EPOCH_OFFSET_US - 1,
                reply_requested: true,
            }
        );
        raw.push(0);
        assert!(matches!(
            parse_copy_data(Bytes::from(raw)),
            Err(ReplicationError::Protocol(_))
        ));
    }

    #[test]
    fn unknown_and_empty_copy_data_are_protocol_errors() {
        let err = parse_copy_data(Bytes::from_static(b"zabc")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "replication protocol violation: unknown replication message type 'z' (0x7a)"
        );
        assert!(matches!(
            parse_copy_data(Bytes::new()),
            Err(ReplicationError::Protocol(_))
        ));
    }

    #[test]
    fn payload_is_a_slice_of_the_frame_not_a_copy() {
        let raw = Bytes::from(xlog_data(1, 2, 3, b"Ixyz"));
        let base = raw.as_ptr() as usize;
        let Ok(ReplicationMessage::XLogData { data, .. }) = parse_copy_data(raw) else {
            panic!("not XLogData");
        };
        assert_eq!(data.as_ptr() as usize, base + XLOG_DATA_HEADER_BYTES);
    }

    #[test]
    fn time_conversion_saturates() {
        assert_eq!(pg_to_unix_us(0), 946_684_800_000_000);
        assert_eq!(pg_to_unix_us(i64::MAX), i64::MAX);
        assert_eq!(unix_us_to_pg(946_684_800_000_000), 0);
        assert_eq!(unix_us_to_pg(i64::MIN), i64::MIN);
    }

    #[test]
    fn frames_are_taken_only_when_complete() {
        let mut wire = frame(b'd', &xlog_data(1, 2, 3, b"Cabc"));
        wire.extend(frame(b'c', b""));
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        // Feed one byte at a time: every prefix must either yield a frame or
        // ask for more, never lose or misparse bytes.
        for byte in wire {
            buf.put_u8(byte);
            while let Some(frame) = parse_frame(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(frames.len(), 2);
        let Frame::Message(backend::Message::CopyData(body)) = &frames[0] else {
            panic!("first frame is not CopyData");
        };
        assert!(matches!(
            parse_copy_data(Bytes::copy_from_slice(body.data())),
            Ok(ReplicationMessage::XLogData { data, .. }) if data == "Cabc"
        ));
        assert!(matches!(
            frames[1],
            Frame::Message(backend::Message::CopyDone)
        ));
    }

    #[test]
    fn copy_both_response_is_recognised() {
        let mut buf = BytesMut::from(&frame(b'W', &[0, 0, 0])[..]);
        buf.extend_from_slice(&frame(b'Z', b"I"));
        assert!(matches!(
            parse_frame(&mut buf),
            Ok(Some(Frame::CopyBothResponse))
        ));
        assert!(matches!(
            parse_frame(&mut buf),
            Ok(Some(Frame::Message(backend::Message::ReadyForQuery(_))))
        ));
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused() {
        let mut buf = BytesMut::from(&[b'd', 0x7f, 0xff, 0xff, 0xff][..]);
        let err = parse_frame(&mut buf)
            .err()
            .expect("oversized frame accepted");
        assert!(err.to_string().contains("exceeds"), "{err}");
        let mut buf = BytesMut::from(&[b'd', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            parse_frame(&mut buf),
            Err(ReplicationError::Protocol(_))
        ));
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(matches!(
            parse_frame(&mut buf),
            Err(ReplicationError::Protocol(_))
        ));
    }

    #[test]
    fn error_response_fields_are_surfaced() {
        let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"x\"\0Hcheck it\0\0";
        let mut buf = BytesMut::from(&frame(b'E', body)[..]);
        let Ok(Some(Frame::Message(backend::Message::ErrorResponse(body)))) = parse_frame(&mut buf)
        else {
            panic!("not an ErrorResponse");
        };
        let err = server_error(&body);
        assert_eq!(err.sqlstate(), Some("28P01"));
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "server error 28P01: password authentication failed for user \"x\" (hint: check it)"
        );
        let ReplicationError::Server { severity, .. } = err else {
            unreachable!()
        };
        assert_eq!(severity, "FATAL");
    }

    #[test]
    fn malformed_error_response_is_a_protocol_error() {
        let mut buf = BytesMut::from(&frame(b'E', b"C28P01")[..]);
        let Ok(Some(Frame::Message(backend::Message::ErrorResponse(body)))) = parse_frame(&mut buf)
        else {
            panic!("not an ErrorResponse");
        };
        assert!(matches!(server_error(&body), ReplicationError::Protocol(_)));
    }

    #[test]
    fn data_rows_become_optional_text() {
        let mut body = Vec::new();
        body.extend_from_slice(&2u16.to_be_bytes());
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"ok");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        let mut buf = BytesMut::from(&frame(b'D', &body)[..]);
        let Ok(Some(Frame::Message(backend::Message::DataRow(row)))) = parse_frame(&mut buf) else {
            panic!("not a DataRow");
        };
        assert_eq!(
            parse_data_row(&row).unwrap(),
            vec![Some("ok".to_owned()), None]
        );

        // A value length that runs past the row is an error, not a panic.
        let mut body = Vec::new();
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&9i32.to_be_bytes());
        body.extend_from_slice(b"ok");
        let mut buf = BytesMut::from(&frame(b'D', &body)[..]);
        let Ok(Some(Frame::Message(backend::Message::DataRow(row)))) = parse_frame(&mut buf) else {
            panic!("not a DataRow");
        };
        assert!(parse_data_row(&row).is_err());
    }

    /// Arbitrary bytes from the server must produce frames or errors, never
    /// a panic (a small deterministic fuzz loop).
    #[test]
    fn random_input_never_panics() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let tags = b"dcCDEWZSKRNTIw k";
        for _ in 0..20_000 {
            let mut raw = vec![tags[(next() % tags.len() as u64) as usize]];
            let body_len = (next() % 40) as usize;
            // Mostly consistent lengths, sometimes garbage.
            let declared = if next() % 4 == 0 {
                (next() % 64) as i32 - 8
            } else {
                body_len as i32 + 4
            };
            raw.extend_from_slice(&declared.to_be_bytes());
            let first = [b'w', b'k', b'r', 0][(next() % 4) as usize];
            raw.push(first);
            for _ in 1..body_len {
                raw.push(next() as u8);
            }
            let mut buf = BytesMut::from(&raw[..]);
            while let Ok(Some(frame)) = parse_frame(&mut buf) {
                if let Frame::Message(message) = frame {
                    match message {
                        backend::Message::CopyData(body) => {
                            let _ = parse_copy_data(body.into_bytes());
                        }
                        backend::Message::ErrorResponse(body) => {
                            let _ = server_error(&body);
                        }
                        backend::Message::DataRow(body) => {
                            let _ = parse_data_row(&body);
                        }
                        _ => {}
                    }
                }
            }
            let _ = parse_copy_data(Bytes::from(raw[5.min(raw.len())..].to_vec()));
        }
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_identifier("slot"), "\"slot\"");
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
        let list = ["a", "it's", "b\"c"]
            .iter()
            .map(|p| quote_identifier(p))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(quote_literal(&list), r#"'"a","it''s","b""c"'"#);
    }

    #[test]
    fn errors_are_classified() {
        let server = |code: &str| ReplicationError::Server {
            severity: "ERROR".to_owned(),
            code: code.to_owned(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        for code in [
            "57P01", "57014", "55006", "55P03", "53300", "58030", "08006", "40001",
        ] {
            assert!(server(code).is_transient(), "{code}");
        }
        for code in [
            "28P01", "28000", "55000", "42704", "42710", "08P01", "XX000",
        ] {
            assert!(!server(code).is_transient(), "{code}");
        }
        assert!(ReplicationError::Closed.is_transient());
        assert!(!ReplicationError::Protocol(String::new()).is_transient());
        assert!(!ReplicationError::Auth(String::new()).is_transient());
        assert_eq!(ReplicationError::Closed.sqlstate(), None);
    }

    #[test]
    fn debug_never_shows_row_bytes() {
        let raw = xlog_data(0x16B_3748, 0x16B_4000, 0, b"Isecret-value");
        let shown = format!("{:?}", parse_copy_data(Bytes::from(raw)).unwrap());
        assert_eq!(
            shown,
            "XLogData { wal_start: 0/16B3748, wal_end: 0/16B4000, server_time_us: 946684800000000, \
             data_len: 13, tag: Some('I') }"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = ReplicationConfig {
            host: "db".to_owned(),
            port: 5432,
            user: "siphon".to_owned(),
            password: Some("hunter2".to_owned()),
            dbname: "app".to_owned(),
            application_name: "siphon".to_owned(),
            connect_timeout_ms: 1000,
            ssl: SslConfig::default(),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
