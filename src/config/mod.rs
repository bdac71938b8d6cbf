//! Connector files: one TOML file describes one connector.
//!
//! A file is loaded with the `config` crate (the file, then environment
//! overrides `SIPHON_<SECTION>__<KEY>`, e.g. `SIPHON_KAFKA__BOOTSTRAP_SERVERS`)
//! and then read key by key, so that one pass reports *every* problem at
//! once — unknown keys, wrong types, bad values — each naming the file, the
//! key and the fix. Secrets (passwords) are never written in the file: they
//! come from an environment variable (`password_env`) or a file
//! (`password_file`) and are held in [`Secret`], which never prints.

mod correlation;
mod dead_letter;
mod events;
mod heartbeat;
mod messages;
mod reader;
mod schemas;
mod secret;
mod transactions;
mod types;
pub mod unwrap;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use correlation::CorrelationConfig;
pub use dead_letter::DeadLetterConfig;
pub use events::{EventsConfig, OpSet, Pattern, Route, TableRule};
pub use heartbeat::HeartbeatConfig;
pub use messages::{MessagesConfig, OutboxConfig};
use reader::Section;
pub use schemas::{Compatibility, IncompatiblePolicy, SchemasConfig};
pub use secret::Secret;
pub use transactions::TransactionsConfig;
pub use unwrap::UnwrapConfig;

/// A connector's name: it derives the Kafka `transactional.id`, the offset
/// record key and the default slot and publication names, so it must stay
/// stable across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectorName(String);

impl ConnectorName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A captured table, `schema.table`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

impl TableName {
    /// `"schema"."table"` quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

/// Quotes a SQL identifier the way PostgreSQL's `quote_ident` does.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// One connector, fully validated.
#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    /// The file it came from (for messages).
    pub file: PathBuf,
    pub name: ConnectorName,
    pub postgres: PostgresConfig,
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub pipeline: PipelineConfig,
    /// Registry subjects of the captured tables (`[schemas]`).
    pub schemas: SchemasConfig,
    pub heartbeat: HeartbeatConfig,
    /// `[types]`: how column values are represented (handling modes).
    pub types: crate::avro::modes::TypeModes,
    pub snapshot: SnapshotConfig,
    /// `[unwrap]`: flattened rows instead of the envelope.
    pub unwrap: UnwrapConfig,
    /// `[messages]`: logical decoding messages as events.
    pub messages: MessagesConfig,
    /// `[outbox]`: the outbox event router.
    pub outbox: OutboxConfig,
    /// `[transactions]`: transaction metadata (BEGIN/END records, blocks).
    pub transactions: TransactionsConfig,
    /// `[dead_letter]`: where rows go that cannot be written.
    pub dead_letter: DeadLetterConfig,
    /// `[tables]`, `[[table]]`, `[[route]]`: filters, masks, keys, routing.
    pub events: EventsConfig,
    /// `[correlation]`: headers copied into every event.
    pub correlation: CorrelationConfig,
}

impl ConnectorConfig {
    /// Settings that work but expose a credential: (component, message),
    /// logged once when the connector starts and printed by `siphon check`
    /// as WARN lines (not problems).
    pub fn security_warnings(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let pg = &self.postgres;
        if pg.password.is_some()
            && matches!(pg.ssl.mode, SslMode::Prefer | SslMode::Require)
            && !pg.ssl.verifies_chain()
        {
            out.push((
                "postgres",
                format!(
                    "postgres.ssl_mode = {} does not verify the server's certificate, so the password \
                     (cleartext or md5 if the server asks for them, over plain TCP when prefer falls back) \
                     can go to whoever answers at {}:{}: set postgres.ssl_mode = \"verify-full\" \
                     (with postgres.ssl_root_cert_file for a private CA)",
                    pg.ssl.mode, pg.host, pg.port
                ),
            ));
        }
        let registry = &self.registry;
        if registry.password.is_some()
            && registry
                .url
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            out.push((
                "registry",
                format!(
                    "registry.url {} is plain http: the basic-auth password of registry.username {} \
                     crosses the network in clear with every request; use https://",
                    registry.url,
                    registry.username.as_deref().unwrap_or("")
                ),
            ));
        }
        out
    }
}

#[derive(Clone, Debug)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    /// Logical replication slot; default `siphon_<name>`.
    pub slot: String,
    /// Publication; default `siphon_<name>`.
    pub publication: String,
    /// Create the slot when it does not exist yet (only ever when the
    /// connector has no stored offset: a lost slot is never silently
    /// re-created).
    pub create_slot: bool,
    /// Create the publication for `tables` when it does not exist.
    pub create_publication: bool,
    pub tables: Vec<TableName>,
    pub connect_timeout_ms: u64,
    /// How often a standby status update is sent even when nothing changed.
    pub status_interval_ms: u64,
    /// TLS for both connections to PostgreSQL.
    pub ssl: SslConfig,
    /// Set on the publication siphon creates (and required of an existing
    /// one): changes of a partitioned table's partitions are published as
    /// the root table's (one topic, the root's schema). Off: each partition
    /// is its own table and topic.
    pub publish_via_partition_root: bool,
    /// Tables without a usable replica identity (no primary key, or
    /// REPLICA IDENTITY NOTHING) that the operator declares insert-only:
    /// captured with a null Kafka key. PostgreSQL refuses their UPDATE and
    /// DELETE while they are published.
    pub insert_only_tables: Vec<TableName>,
    /// Create the slot as a failover slot (PostgreSQL 17+: synchronized to
    /// standbys with `sync_replication_slots`, so it survives a failover).
    pub failover_slot: bool,
}

/// Whether and how the connections to PostgreSQL use TLS; the modes and
/// their meaning are libpq's (`sslmode`), so a DBA's habits carry over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, else plain. No verification (unless
    /// a root certificate file is given).
    #[default]
    Prefer,
    /// TLS or fail. No verification (unless a root certificate file is
    /// given: then as `VerifyCa`).
    Require,
    /// TLS with the server's chain verified against the root certificates,
    /// not its host name.
    VerifyCa,
    /// `VerifyCa` plus the certificate must name `postgres.host`.
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// The libpq spelling, as written in connector files.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(s: &str) -> Option<SslMode> {
        SslMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// TLS settings of the `[postgres]` section. Paths only: the files are read
/// when a connection is opened, so rotated certificates are picked up on
/// the next reconnect. The key file's content is never logged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslConfig {
    pub mode: SslMode,
    /// PEM bundle of the CAs trusted to sign the server certificate; the
    /// system trust store when absent.
    pub root_cert_file: Option<PathBuf>,
    /// PEM client certificate (chain), presented when the server asks.
    pub cert_file: Option<PathBuf>,
    /// Unencrypted PKCS#8 PEM key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl SslConfig {
    /// Whether the server's certificate chain is checked: always in the
    /// verify modes, and (as libpq does) in the others too when a root
    /// certificate file is given.
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::Disable => false,
            SslMode::Prefer | SslMode::Require => self.root_cert_file.is_some(),
            SslMode::VerifyCa | SslMode::VerifyFull => true,
        }
    }

    /// Whether the server's certificate must name the host connected to.
    pub fn verifies_host(&self) -> bool {
        self.mode == SslMode::VerifyFull
    }
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Topics are `{topic_prefix}.{schema}.{table}`; also Debezium's logical
    /// name (`source.name`) and the Avro namespace prefix.
    pub topic_prefix: String,
    /// Compacted topic holding one offset record per connector.
    pub offsets_topic: String,
    /// Create missing topics (table topics and the offsets topic).
    pub create_topics: bool,
    pub topic_partitions: i32,
    pub topic_replication_factor: i32,
    pub transaction_timeout_ms: u64,
    /// How long a commit or abort may take before its fate counts as unknown.
    pub commit_timeout_ms: u64,
    /// A Kafka transaction is committed when it holds this many events ...
    pub batch_max_events: usize,
    /// ... or this many encoded bytes ...
    pub batch_max_bytes: usize,
    /// ... or when it has been open this long.
    pub batch_linger_ms: u64,
    /// After a delete event, also write a tombstone (null value) for compaction.
    pub tombstones_on_delete: bool,
    /// Emit `op = "t"` events for TRUNCATE (Debezium skips them by default).
    pub emit_truncate: bool,
    /// When the captured tables are idle, commit an offset-only transaction
    /// at most this often so the slot can advance and WAL is not retained.
    pub idle_offset_interval_ms: u64,
    /// librdkafka properties passed through as they are (security settings,
    /// compression, ...). Keys siphon owns for exactly-once are refused.
    pub properties: BTreeMap<String, String>,
    /// Secret librdkafka properties (`sasl.password`, ...), read from the
    /// environment variables (`properties_env`) or files (`properties_file`)
    /// the connector file names.
    pub secret_properties: BTreeMap<String, Secret>,
}

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub request_timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust for an https registry.
    pub ssl_root_cert_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Changes buffered between the replication reader and the Kafka writer;
    /// when full, siphon stops reading from PostgreSQL (backpressure).
    pub channel_capacity_events: usize,
    /// Row data buffered between reader and writer, in bytes; bounds memory
    /// whatever the row sizes.
    pub channel_capacity_bytes: u64,
}

/// When a connector reads its tables' current rows (op `r`) before or
/// while streaming their changes; the names are Debezium's `snapshot.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Snapshot when the connector has no stored offset, then stream.
    #[default]
    Initial,
    /// Snapshot when the connector has no stored offset, then stop (no slot
    /// is created).
    InitialOnly,
    /// Never snapshot: stream changes from the slot's start only.
    NoData,
    /// Snapshot every time the connector starts, then stream.
    Always,
    /// Snapshot when there is no usable stored offset: none, or its slot is
    /// gone (where `initial` stops with an error).
    WhenNeeded,
}

impl SnapshotMode {
    const ALL: [SnapshotMode; 5] = [
        SnapshotMode::Initial,
        SnapshotMode::InitialOnly,
        SnapshotMode::NoData,
        SnapshotMode::Always,
        SnapshotMode::WhenNeeded,
    ];

    /// The spelling in connector files.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Initial => "initial",
            SnapshotMode::InitialOnly => "initial_only",
            SnapshotMode::NoData => "no_data",
            SnapshotMode::Always => "always",
            SnapshotMode::WhenNeeded => "when_needed",
        }
    }
}

/// The `[snapshot]` section (see docs/snapshots.md).
#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    pub mode: SnapshotMode,
    /// Connections reading chunks in parallel during an initial snapshot
    /// (Debezium's `snapshot.max.threads`).
    pub max_threads: usize,
    /// Heap pages (8 KiB each) per chunk: tables are read in ctid ranges of
    /// this many pages; a chunk is also the unit of progress and of one
    /// incremental-snapshot window.
    pub chunk_pages: u64,
    /// Upper bound on one chunk's row data (TOASTed values included), as
    /// estimated from the table's size: a table of large rows gets fewer
    /// pages per chunk, down to parts of one page.
    pub chunk_max_bytes: u64,
    /// Table whose inserted rows are signals (`execute-snapshot`,
    /// `pause-snapshot`, …), as Debezium's `signal.data.collection`; it
    /// must be in the publication. `None`: signals only over HTTP.
    pub signal_table: Option<TableName>,
}

/// Everything wrong with one or more connector files.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    /// One line per problem: `file: key: what is wrong and the fix`.
    pub problems: Vec<String>,
}

/// librdkafka settings siphon sets itself; overriding them would break the
/// exactly-once protocol.
const RESERVED_KAFKA_PROPERTIES: &[&str] = &[
    "transactional.id",
    "enable.idempotence",
    "isolation.level",
    "bootstrap.servers",
    "transaction.timeout.ms",
    "enable.auto.commit",
    "group.id",
];

/// librdkafka properties that hold secrets: refused in `properties`, taken
/// from `properties_env` / `properties_file` instead.
const SECRET_KAFKA_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
];

/// Loads every connector file named by `paths` (files, or directories whose
/// `*.toml` files are each a connector). Reports all problems of all files.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<ConnectorConfig>, ConfigError> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        problems.push(format!("{}: no *.toml connector files", path.display()));
                    }
                    files.extend(found);
                }
                Err(e) => problems.push(format!("{}: cannot read directory: {e}", path.display())),
            }
        } else {
            files.push(path.clone());
        }
    }
    let mut connectors = Vec::new();
    for file in &files {
        match load_file(file) {
            Ok(c) => connectors.push(c),
            Err(e) => problems.extend(e.problems),
        }
    }
    let mut seen = BTreeMap::new();
    for c in &connectors {
        if let Some(other) = seen.insert(c.name.as_str().to_owned(), c.file.clone()) {
            problems.push(format!(
                "{}: name: connector name {:?} is also used by {}; each connector needs its own name",
                c.file.display(),
                c.name.as_str(),
                other.display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(connectors)
    } else {
        Err(ConfigError { problems })
    }
}

/// Loads one connector file with environment overrides from the process.
pub fn load_file(path: &Path) -> Result<ConnectorConfig, ConfigError> {
    load_file_with_env(path, std::env::vars())
}

/// Loads one connector file; `env` supplies both the `SIPHON_...` overrides
/// and the variables that `password_env` keys name.
pub fn load_file_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<ConnectorConfig, ConfigError> {
    let file = path.display().to_string();
    let env: BTreeMap<String, String> = env.into_iter().collect();
    if !path.is_file() {
        return Err(ConfigError {
            problems: vec![format!("{file}: no such connector file")],
        });
    }
    let overrides: std::collections::HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("SIPHON_") && k.contains("__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let loaded = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("SIPHON")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .and_then(|c| c.try_deserialize::<serde_json::Value>());
    let root = match loaded {
        Ok(v) => v,
        Err(e) => {
            return Err(ConfigError {
                problems: vec![format!("{file}: cannot parse: {e}")],
            });
        }
    };
    let problems = Rc::new(RefCell::new(Vec::new()));
    let config = read_connector(path, &file, root, &env, Rc::clone(&problems));
    let problems = problems.take();
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(ConfigError { problems }),
    }
}

fn read_connector(
    path: &Path,
    file: &str,
    root: serde_json::Value,
    env: &BTreeMap<String, String>,
    problems: Rc<RefCell<Vec<String>>>,
) -> Option<ConnectorConfig> {
    let mut top = Section::root(file, root, problems);
    let name: Option<String> = top.required("name");
    if let Some(n) = &name
        && (n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    {
        top.problem_at(
            "name",
            "must be non-empty and use only letters, digits, '_' and '-' (it names the slot and the Kafka transactional id)",
        );
    }
    let mut pg = top.section("postgres");
    let mut kafka = top.section("kafka");
    let mut registry = top.section("registry");
    let mut pipeline = top.section("pipeline");
    let schemas_section = top.section("schemas");
    let heartbeat = heartbeat::read_heartbeat(top.section("heartbeat"));
    let transactions = transactions::read_transactions(top.section("transactions"));
    let dead_letter = dead_letter::read_dead_letter(top.section("dead_letter"));
    let types = types::read_types(top.section("types"));
    let snapshot = top.section("snapshot");
    let messages = messages::read_messages(top.section("messages"));
    let unwrap = unwrap::read_unwrap(top.section("unwrap"));
    let outbox_section = top.section("outbox");
    let events_sections = (
        top.section("tables"),
        top.sections("table"),
        top.sections("route"),
    );
    let correlation = correlation::read(top.section("correlation"));
    top.finish();

    let default_object = name
        .as_deref()
        .map(|n| format!("siphon_{}", n.to_lowercase().replace('-', "_")))
        .unwrap_or_default();

    let host = pg.optional("host").unwrap_or_else(default_pg_host);
    let port = pg.optional("port").unwrap_or_else(default_pg_port);
    let database: Option<String> = pg.required("database");
    let user: Option<String> = pg.required("user");
    let password = pg.secret("password", env);
    let slot = pg
        .optional("slot")
        .unwrap_or_else(|| default_object.clone());
    let publication = pg
        .optional("publication")
        .unwrap_or_else(|| default_object.clone());
    let create_slot = pg.optional("create_slot").unwrap_or(true);
    let create_publication = pg.optional("create_publication").unwrap_or(true);
    let table_names: Option<Vec<String>> = pg.required("tables");
    let connect_timeout_ms = pg.optional("connect_timeout_ms").unwrap_or(10_000);
    let status_interval_ms = pg.optional("status_interval_ms").unwrap_or(10_000);
    let ssl = read_ssl(&mut pg);
    let publish_via_partition_root = pg
        .optional("publish_via_partition_root")
        .unwrap_or_else(default_publish_via_partition_root);
    let insert_only_names: Vec<String> = pg.optional("insert_only_tables").unwrap_or_default();
    let failover_slot = pg.optional("failover_slot").unwrap_or(false);
    if !slot.is_empty() && !is_slot_name(&slot) {
        pg.problem_at(
            "slot",
            &format!(
                "{slot:?} is not a valid replication slot name: use lower-case letters, digits and '_' (at most 63)"
            ),
        );
    }
    pg.at_least("connect_timeout_ms", connect_timeout_ms, 100);
    pg.at_least("status_interval_ms", status_interval_ms, 100);
    let mut tables = Vec::new();
    if let Some(list) = &table_names {
        if list.is_empty() {
            pg.problem_at(
                "tables",
                "list at least one table to capture, e.g. [\"public.orders\"]",
            );
        }
        for t in list {
            match parse_table(t) {
                Some(t) => tables.push(t),
                None => pg.problem_at(
                    "tables",
                    &format!("{t:?} is not of the form \"schema.table\""),
                ),
            }
        }
    }
    let mut insert_only_tables = Vec::new();
    for t in &insert_only_names {
        match parse_table(t) {
            Some(t) if tables.contains(&t) => insert_only_tables.push(t),
            Some(_) => pg.problem_at(
                "insert_only_tables",
                &format!("{t:?} is not one of postgres.tables: add it there or remove it here"),
            ),
            None => pg.problem_at(
                "insert_only_tables",
                &format!("{t:?} is not of the form \"schema.table\""),
            ),
        }
    }
    pg.finish();
    let schemas = schemas::read(schemas_section, &tables);
    let outbox = messages::read_outbox(outbox_section, &tables);
    let (filters, rules, routes) = events_sections;
    let events = events::read(filters, rules, routes, &tables, env);

    let bootstrap_servers: Option<String> = kafka.required("bootstrap_servers");
    let topic_prefix: Option<String> = kafka.required("topic_prefix");
    let offsets_topic = kafka
        .optional("offsets_topic")
        .unwrap_or_else(|| "siphon.offsets".to_owned());
    let create_topics = kafka.optional("create_topics").unwrap_or(true);
    let topic_partitions = kafka.optional("topic_partitions").unwrap_or(1);
    let topic_replication_factor = kafka.optional("topic_replication_factor").unwrap_or(1);
    let transaction_timeout_ms = kafka.optional("transaction_timeout_ms").unwrap_or(60_000);
    let commit_timeout_ms = kafka.optional("commit_timeout_ms").unwrap_or(30_000);
    let batch_max_events = kafka.optional("batch_max_events").unwrap_or(10_000);
    let batch_max_bytes = kafka
        .optional("batch_max_bytes")
        .unwrap_or(16 * 1024 * 1024);
    let batch_linger_ms = kafka.optional("batch_linger_ms").unwrap_or(100);
    let tombstones_on_delete = kafka.optional("tombstones_on_delete").unwrap_or(true);
    let emit_truncate = kafka.optional("emit_truncate").unwrap_or(false);
    let idle_offset_interval_ms = kafka.optional("idle_offset_interval_ms").unwrap_or(10_000);
    let properties: BTreeMap<String, String> = kafka.string_map("properties");
    let mut secret_properties = BTreeMap::new();
    for (key, var) in kafka.string_map("properties_env") {
        match env.get(&var) {
            Some(v) => {
                secret_properties.insert(key, Secret::new(v.clone()));
            }
            None => kafka.problem_at(
                &format!("properties_env.{key}"),
                &format!("environment variable {var} is not set"),
            ),
        }
    }
    for (key, path) in kafka.string_map("properties_file") {
        match std::fs::read_to_string(&path) {
            Ok(v) => {
                let v = v.trim_end_matches(['\n', '\r']).to_owned();
                if secret_properties
                    .insert(key.clone(), Secret::new(v))
                    .is_some()
                {
                    kafka.problem_at(
                        &format!("properties_file.{key}"),
                        "is also set in properties_env; set it once",
                    );
                }
            }
            Err(e) => kafka.problem_at(
                &format!("properties_file.{key}"),
                &format!("cannot read {path}: {e}"),
            ),
        }
    }
    kafka.at_least("transaction_timeout_ms", transaction_timeout_ms, 1000);
    kafka.at_least("commit_timeout_ms", commit_timeout_ms, 1000);
    kafka.at_least("batch_max_events", batch_max_events as u64, 1);
    kafka.at_least("batch_max_bytes", batch_max_bytes as u64, 1024);
    kafka.at_least("topic_partitions", topic_partitions.max(0) as u64, 1);
    kafka.at_least("idle_offset_interval_ms", idle_offset_interval_ms, 100);
    if commit_timeout_ms > transaction_timeout_ms {
        kafka.problem_at(
            "commit_timeout_ms",
            &format!(
                "must not exceed transaction_timeout_ms ({transaction_timeout_ms}), got {commit_timeout_ms}"
            ),
        );
    }
    if topic_replication_factor < 1 {
        kafka.problem_at(
            "topic_replication_factor",
            &format!("must be >= 1, got {topic_replication_factor}"),
        );
    }
    // siphon refuses records over this limit itself (before producing),
    // so it must read it as librdkafka does.
    if let Some(v) = properties.get("message.max.bytes")
        && !v
            .trim()
            .parse::<u64>()
            .is_ok_and(|n| (1000..=1_000_000_000).contains(&n))
    {
        kafka.problem_at(
            "properties.message.max.bytes",
            &format!("must be a whole number of bytes from 1000 to 1000000000, got {v:?}"),
        );
    }
    for key in properties.keys() {
        if SECRET_KAFKA_PROPERTIES.contains(&key.as_str()) {
            kafka.problem_at(
                &format!("properties.{key}"),
                &format!(
                    "secrets are not read from connector files; name an environment variable in [kafka.properties_env] (\"{key}\" = \"VARIABLE\") or a file in [kafka.properties_file]"
                ),
            );
        }
        if RESERVED_KAFKA_PROPERTIES.contains(&key.as_str()) {
            kafka.problem_at(
                &format!("properties.{key}"),
                "is set by siphon itself for exactly-once delivery; remove it (use the kafka section's own keys where they exist)",
            );
        }
    }
    if let Some(p) = &topic_prefix
        && (p.is_empty() || !p.chars().all(is_topic_char))
    {
        kafka.problem_at(
            "topic_prefix",
            "must be non-empty and use only letters, digits, '.', '_' and '-'",
        );
    }
    kafka.finish();

    let url: Option<String> = registry.required("url");
    let reg_username: Option<String> = registry.optional("username");
    let reg_password = registry.secret("password", env);
    let request_timeout_ms = registry.optional("request_timeout_ms").unwrap_or(10_000);
    let ssl_root_cert_file: Option<PathBuf> = registry.optional("ssl_root_cert_file");
    if let Some(p) = &ssl_root_cert_file
        && !p.is_file()
    {
        registry.problem_at(
            "ssl_root_cert_file",
            &format!("{} is not a readable file", p.display()),
        );
    }
    registry.at_least("request_timeout_ms", request_timeout_ms, 100);
    if let Some(u) = &url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        registry.problem_at(
            "url",
            &format!("must start with http:// or https://, got {u:?}"),
        );
    }
    registry.finish();

    let channel_capacity_events = pipeline
        .optional("channel_capacity_events")
        .unwrap_or(20_000);
    let channel_capacity_bytes = pipeline
        .optional("channel_capacity_bytes")
        .unwrap_or(64 * 1024 * 1024);
    pipeline.at_least("channel_capacity_events", channel_capacity_events as u64, 1);
    pipeline.at_least("channel_capacity_bytes", channel_capacity_bytes, 1024);
    pipeline.finish();
    let snapshot = read_snapshot(snapshot);

    Some(ConnectorConfig {
        file: path.to_owned(),
        name: ConnectorName(name?),
        postgres: PostgresConfig {
            host,
            port,
            database: database?,
            user: user?,
            password,
            slot,
            publication,
            create_slot,
            create_publication,
            tables,
            connect_timeout_ms,
            status_interval_ms,
            ssl,
            publish_via_partition_root,
            insert_only_tables,
            failover_slot,
        },
        kafka: KafkaConfig {
            bootstrap_servers: bootstrap_servers?,
            topic_prefix: topic_prefix?,
            offsets_topic,
            create_topics,
            topic_partitions,
            topic_replication_factor,
            transaction_timeout_ms,
            commit_timeout_ms,
            batch_max_events,
            batch_max_bytes,
            batch_linger_ms,
            tombstones_on_delete,
            emit_truncate,
            idle_offset_interval_ms,
            properties,
            secret_properties,
        },
        registry: RegistryConfig {
            url: url?,
            username: reg_username,
            password: reg_password,
            request_timeout_ms,
            ssl_root_cert_file,
        },
        pipeline: PipelineConfig {
            channel_capacity_events,
            channel_capacity_bytes,
        },
        schemas,
        heartbeat,
        types,
        snapshot: snapshot?,
        messages,
        outbox,
        unwrap,
        transactions,
        dead_letter,
        events,
        correlation,
    })
}

fn read_snapshot(mut section: Section) -> Option<SnapshotConfig> {
    let mode_name: Option<String> = section.optional("mode");
    let mode = match mode_name.as_deref() {
        None => Some(SnapshotMode::default()),
        Some(m) => {
            let mode = SnapshotMode::ALL.into_iter().find(|x| x.as_str() == m);
            if mode.is_none() {
                let all: Vec<&str> = SnapshotMode::ALL.iter().map(|m| m.as_str()).collect();
                section.problem_at(
                    "mode",
                    &format!(
                        "{m:?} is not a snapshot mode: use one of {}",
                        all.join(", ")
                    ),
                );
            }
            mode
        }
    };
    let max_threads: u64 = section.optional("max_threads").unwrap_or(4);
    let chunk_pages: u64 = section.optional("chunk_pages").unwrap_or(256);
    let chunk_max_bytes: u64 = section
        .optional("chunk_max_bytes")
        .unwrap_or_else(default_chunk_max_bytes);
    let signal: Option<String> = section.optional("signal_table");
    section.at_least("max_threads", max_threads, 1);
    section.at_least("chunk_pages", chunk_pages, 1);
    section.at_least("chunk_max_bytes", chunk_max_bytes, 65_536);
    let signal_table = match signal.as_deref().map(parse_table) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => {
            section.problem_at(
                "signal_table",
                &format!(
                    "{:?} is not of the form \"schema.table\"",
                    signal.unwrap_or_default()
                ),
            );
            None
        }
    };
    // Unknown keys are reported whatever else is wrong.
    section.finish();
    Some(SnapshotConfig {
        mode: mode?,
        max_threads: max_threads.clamp(1, 64) as usize,
        chunk_pages: chunk_pages.max(1),
        chunk_max_bytes: chunk_max_bytes.max(65_536),
        signal_table,
    })
}

/// 16 MiB, as `kafka.batch_max_bytes`: a chunk is written in one Kafka
/// transaction, so it should fit in about one batch.
fn default_chunk_max_bytes() -> u64 {
    16 * 1024 * 1024
}

fn default_pg_host() -> String {
    // PostgreSQL's own default when no host is given is the local socket;
    // siphon connects over TCP, so loopback is the closest equivalent.
    "127.0.0.1".to_owned()
}

fn default_publish_via_partition_root() -> bool {
    // A partitioned table is one table to its users: one topic, one schema,
    // rows moving between partitions stay one key's history.
    true
}

fn default_ssl_mode() -> SslMode {
    // libpq's default: TLS when the server offers it.
    SslMode::Prefer
}

/// The `ssl_*` keys of `[postgres]`: the mode, and files that must exist and
/// look like what they are meant to hold, so that a wrong path or a key in
/// the wrong format is reported at load time rather than at the first
/// connection.
fn read_ssl(pg: &mut Section) -> SslConfig {
    let mode = match pg.optional::<String>("ssl_mode") {
        None => default_ssl_mode(),
        Some(text) => SslMode::parse(&text).unwrap_or_else(|| {
            let known = SslMode::ALL.map(SslMode::as_str).join(", ");
            pg.problem_at("ssl_mode", &format!("must be one of {known}, got {text:?}"));
            default_ssl_mode()
        }),
    };
    let root_cert_file = pem_file(pg, "ssl_root_cert_file", PemKind::Certificates);
    let cert_file = pem_file(pg, "ssl_cert_file", PemKind::Certificates);
    let key_file = pem_file(pg, "ssl_key_file", PemKind::Pkcs8Key);
    match (&cert_file, &key_file) {
        (Some(_), None) => pg.problem_at(
            "ssl_cert_file",
            "needs ssl_key_file too: set both (client certificate and its key) or neither",
        ),
        (None, Some(_)) => pg.problem_at(
            "ssl_key_file",
            "needs ssl_cert_file too: set both (client certificate and its key) or neither",
        ),
        _ => {}
    }
    if mode == SslMode::Disable {
        for (key, set) in [
            ("ssl_root_cert_file", root_cert_file.is_some()),
            ("ssl_cert_file", cert_file.is_some()),
            ("ssl_key_file", key_file.is_some()),
        ] {
            if set {
                pg.problem_at(
                    key,
                    "is set but ssl_mode is \"disable\": remove it, or choose another ssl_mode",
                );
            }
        }
    }
    SslConfig {
        mode,
        root_cert_file,
        cert_file,
        key_file,
    }
}

/// What a TLS file must hold.
#[derive(Clone, Copy)]
enum PemKind {
    /// One or more `CERTIFICATE` blocks.
    Certificates,
    /// One unencrypted PKCS#8 `PRIVATE KEY` block (what native-tls loads).
    Pkcs8Key,
}

/// Reads the path under `key` and checks the file is there and of `kind`.
/// Only block labels are inspected and named in messages, never content.
fn pem_file(pg: &mut Section, key: &str, kind: PemKind) -> Option<PathBuf> {
    let path = PathBuf::from(pg.optional::<String>(key)?);
    let shown = path.display();
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            pg.problem_at(key, &format!("cannot read {shown}: {e}"));
            return Some(path);
        }
    };
    let problem = match kind {
        PemKind::Certificates if !text.contains("-----BEGIN CERTIFICATE-----") => Some(format!(
            "{shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )),
        PemKind::Pkcs8Key if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") => {
            Some(format!(
                "{shown} is an encrypted key; siphon needs it unencrypted: openssl pkcs8 -topk8 -nocrypt -in {shown} -out <new file>"
            ))
        }
        PemKind::Pkcs8Key if text.contains("-----BEGIN PRIVATE KEY-----") => None,
        PemKind::Pkcs8Key
            if text.contains("-----BEGIN RSA PRIVATE KEY-----")
                || text.contains("-----BEGIN EC PRIVATE KEY-----") =>
        {
            Some(format!(
                "{shown} is not a PKCS#8 key (BEGIN PRIVATE KEY): convert it with openssl pkcs8 -topk8 -nocrypt -in {shown} -out <new file>"
            ))
        }
        PemKind::Pkcs8Key => Some(format!(
            "{shown} holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
        )),
        PemKind::Certificates => None,
    };
    if let Some(problem) = problem {
        pg.problem_at(key, &problem);
    }
    Some(path)
}

fn default_pg_port() -> u16 {
    // PostgreSQL's default port.
    5432
}

fn is_slot_name(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn parse_table(s: &str) -> Option<TableName> {
    let (schema, table) = s.split_once('.')?;
    if schema.is_empty() || table.is_empty() || table.contains('.') {
        return None;
    }
    Some(TableName {
        schema: schema.to_owned(),
        table: table.to_owned(),
    })
}

#[cfg(test)]
mod tests;
