//! A Confluent Schema Registry **stand-in** for tests and the local quickstart.
//!
//! NOT FOR PRODUCTION. Production runs Confluent Schema Registry, Karapace or
//! Apicurio; none of them installs on the development machines, so tests and
//! the quickstart run this in-memory imitation instead. It keeps nothing on
//! disk, has no authentication, and speaks only the subset of the Confluent
//! REST API siphon uses
//! (<https://docs.confluent.io/platform/current/schema-registry/develop/api.html>),
//! with Confluent's JSON bodies and `{"error_code": …, "message": …}` errors:
//!
//! | endpoint | |
//! | --- | --- |
//! | `POST /subjects/{subject}/versions` | register (idempotent, compatibility-checked) → `{"id"}` |
//! | `POST /subjects/{subject}` | is this schema registered under the subject → `{subject,id,version,schema}` |
//! | `GET /subjects` | subject names |
//! | `GET /subjects/{subject}/versions` | version numbers |
//! | `GET /subjects/{subject}/versions/{version\|latest}` | `{subject,id,version,schema}` |
//! | `DELETE /subjects/{subject}` | forget the subject → deleted versions |
//! | `GET /schemas/ids/{id}` | `{"schema"}` |
//! | `GET`/`PUT /config`, `/config/{subject}` | compatibility level |
//! | `POST /compatibility/subjects/{subject}/versions[/{version\|latest}]` | `{"is_compatible"}` |
//!
//! Compatibility is decided by apache-avro's schema resolution check, as
//! Confluent decides it with Avro's Java one: BACKWARD means the new schema
//! can read data written with the latest version, FORWARD that the latest can
//! read data written with the new one, FULL both; the `_TRANSITIVE` levels
//! check every version instead of the latest. A partial match (a writer union
//! branch or enum symbol the reader lacks) counts as incompatible, as in Java.
//!
//! Like Confluent, ids are global: the same schema text registered in another
//! subject gets the id it already has. Schemas are compared by their JSON with
//! sorted keys and no whitespace, and returned in that form.
//!
//! For tests, [`RegistryStandIn::request_count`] counts every request received
//! (to assert client caching) and [`RegistryStandIn::set_unavailable`]
//! simulates an outage (every request gets 503).
//!
//! Self-contained: shared by several test crates and the quickstart example,
//! so it depends on nothing else in `tests/support`.

// Each test crate or example that includes this file uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The media type Confluent answers with.
const SCHEMA_REGISTRY_V1_JSON: &str = "application/vnd.schemaregistry.v1+json";

/// A running stand-in registry on loopback; shuts its server down on drop.
pub struct RegistryStandIn {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl RegistryStandIn {
    /// Starts a stand-in on an ephemeral loopback port.
    pub async fn start() -> RegistryStandIn {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        RegistryStandIn::start_on(addr)
            .await
            .expect("bind the registry stand-in on 127.0.0.1:0")
    }

    /// Starts a stand-in on `addr` (e.g. a fixed port for the quickstart).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<RegistryStandIn> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = router(shared.clone());
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let stopped = async move {
                // Sent, or the sender dropped: either way, stop.
                let _ = stop.await;
            };
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                eprintln!("registry stand-in on {addr} failed: {err}");
            }
        });
        Ok(RegistryStandIn {
            url: format!("http://{addr}"),
            addr,
            shared,
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    /// Number of HTTP requests received so far, including rejected ones and
    /// those answered 503 while unavailable.
    pub fn request_count(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// While `on`, every request is answered `503` with error code 50003.
    pub fn set_unavailable(&self, on: bool) {
        self.shared.unavailable.store(on, Ordering::SeqCst);
    }

    /// Stops the server and waits until it has closed its listener and
    /// connections, so the port can be bound again at once.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for RegistryStandIn {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

#[derive(Default)]
struct Shared {
    requests: AtomicUsize,
    unavailable: AtomicBool,
    registry: Mutex<Registry>,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // No handler panics while holding the lock; recover if one ever does.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The registry's whole state.
#[derive(Default)]
struct Registry {
    /// Global compatibility level; `None` means the default, BACKWARD.
    global_level: Option<Level>,
    subject_levels: HashMap<String, Level>,
    /// Schema with id `i + 1`.
    schemas: Vec<Stored>,
    /// Normalized schema text → id.
    ids: HashMap<String, u32>,
    /// Subject → its versions, oldest first.
    subjects: BTreeMap<String, Vec<Version>>,
}

struct Stored {
    text: String,
    parsed: Schema,
}

#[derive(Clone, Copy)]
struct Version {
    version: u32,
    id: u32,
}

impl Registry {
    fn global_level(&self) -> Level {
        self.global_level.unwrap_or(Level::Backward)
    }

    fn level_of(&self, subject: &str) -> Level {
        self.subject_levels
            .get(subject)
            .copied()
            .unwrap_or_else(|| self.global_level())
    }

    fn stored(&self, id: u32) -> Option<&Stored> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.schemas.get(index)
    }

    fn versions(&self, subject: &str) -> Result<&[Version], ApiError> {
        match self.subjects.get(subject) {
            Some(versions) if !versions.is_empty() => Ok(versions),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                40401,
                format!("Subject '{subject}' not found."),
            )),
        }
    }

    fn version(&self, subject: &str, version: &str) -> Result<Version, ApiError> {
        let versions = self.versions(subject)?;
        match parse_version(version)? {
            None => Ok(*versions.last().expect("invariant: versions() is non-empty")),
            Some(wanted) => versions
                .iter()
                .find(|v| v.version == wanted)
                .copied()
                .ok_or_else(|| {
                    error(
                        StatusCode::NOT_FOUND,
                        40402,
                        format!("Version {wanted} not found."),
                    )
                }),
        }
    }

    /// Problems found checking `new` against `previous` (oldest first) under
    /// `level`; empty when compatible.
    fn incompatibilities(&self, level: Level, new: &Schema, previous: &[Version]) -> Vec<String> {
        let against: &[Version] = if level.transitive() {
            previous
        } else {
            match previous.last() {
                Some(latest) => std::slice::from_ref(latest),
                None => &[],
            }
        };
        let mut problems = Vec::new();
        for old in against.iter().rev() {
            let Some(stored) = self.stored(old.id) else {
                continue;
            };
            if level.backward()
                && let Err(why) = can_read(&stored.parsed, new)
            {
                problems.push(format!(
                    "new schema cannot read data written with version {}: {why}",
                    old.version
                ));
            }
            if level.forward()
                && let Err(why) = can_read(new, &stored.parsed)
            {
                problems.push(format!(
                    "version {} cannot read data written with the new schema: {why}",
                    old.version
                ));
            }
        }
        problems
    }
}

/// Compatibility levels, as Confluent names them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    /// No check.
    None,
    /// New schema reads data of the latest version.
    Backward,
    /// New schema reads data of every version.
    BackwardTransitive,
    /// Latest version reads data of the new schema.
    Forward,
    /// Every version reads data of the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version.
    FullTransitive,
}

impl Level {
    fn parse(name: &str) -> Option<Level> {
        Some(match name.to_ascii_uppercase().as_str() {
            "NONE" => Level::None,
            "BACKWARD" => Level::Backward,
            "BACKWARD_TRANSITIVE" => Level::BackwardTransitive,
            "FORWARD" => Level::Forward,
            "FORWARD_TRANSITIVE" => Level::ForwardTransitive,
            "FULL" => Level::Full,
            "FULL_TRANSITIVE" => Level::FullTransitive,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
}

/// Whether data written with `writer` can always be read with `reader`.
fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(
            "only partially compatible: some writer union branches or enum symbols \
             are missing in the reader"
                .to_owned(),
        ),
        Err(err) => Err(error_chain(&err)),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            post(register).get(list_versions),
        )
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, 404, "HTTP 404 Not Found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                405,
                "HTTP 405 Method Not Allowed",
            )
        })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            count_and_gate,
        ))
        .with_state(shared)
}

async fn count_and_gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if shared.unavailable.load(Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            50003,
            "schema registry stand-in is unavailable (simulated outage)",
        )
        .into_response();
    }
    next.run(request).await
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, SCHEMA_REGISTRY_V1_JSON)],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    reply(StatusCode::OK, body)
}

/// A Confluent error reply, `{"error_code": …, "message": …}`.
struct ApiError {
    status: StatusCode,
    error_code: u32,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(
            self.status,
            json!({ "error_code": self.error_code, "message": self.message }),
        )
    }
}

fn error(status: StatusCode, error_code: u32, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        error_code,
        message: message.into(),
    }
}

/// `Ok(None)` for `latest` (or `-1`), `Ok(Some(n))` for a version number.
fn parse_version(version: &str) -> Result<Option<u32>, ApiError> {
    if version == "latest" || version == "-1" {
        return Ok(None);
    }
    match version.parse::<u32>() {
        Ok(n) if n >= 1 && i32::try_from(n).is_ok() => Ok(Some(n)),
        _ => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are \
                 between [1, 2^31-1] and the string \"latest\""
            ),
        )),
    }
}

/// A schema from a request body `{"schema": "...", "schemaType"?: "AVRO"}`.
struct Submitted {
    /// JSON with sorted keys and no whitespace: the identity of the schema.
    text: String,
    parsed: Schema,
}

fn submitted_schema(body: &[u8]) -> Result<Submitted, ApiError> {
    let invalid = |message: String| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, message);
    let request: Value = serde_json::from_slice(body).map_err(|err| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            format!("Unrecognized request body: {err}"),
        )
    })?;
    let schema_type = request.get("schemaType").and_then(Value::as_str);
    if !matches!(schema_type, None | Some("AVRO")) {
        return Err(invalid(format!(
            "Invalid schema: the stand-in supports only AVRO, got schemaType {schema_type:?}"
        )));
    }
    if request
        .get("references")
        .and_then(Value::as_array)
        .is_some_and(|refs| !refs.is_empty())
    {
        return Err(invalid(
            "Invalid schema: the stand-in does not support schema references".to_owned(),
        ));
    }
    let Some(schema_text) = request.get("schema").and_then(Value::as_str) else {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            "Unrecognized request body: a string field \"schema\" is required",
        ));
    };
    let json: Value = serde_json::from_str(schema_text)
        .map_err(|err| invalid(format!("Invalid schema {schema_text}: {err}")))?;
    let parsed = Schema::parse(&json).map_err(|err| {
        invalid(format!(
            "Invalid schema {schema_text}: {}",
            error_chain(&err)
        ))
    })?;
    let mut text = String::with_capacity(schema_text.len());
    write_canonical(&json, &mut text);
    Ok(Submitted { text, parsed })
}

/// `value` as JSON with object keys sorted and no whitespace.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn version_body(registry: &Registry, subject: &str, v: Version) -> Value {
    let schema = registry.stored(v.id).map(|s| s.text.as_str());
    json!({ "subject": subject, "version": v.version, "id": v.id, "schema": schema })
}

/// Handlers answer a success body or a Confluent error.
type Reply = Result<Response, ApiError>;

async fn register(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Reply {
    let new = submitted_schema(&body)?;
    let mut registry = shared.registry();
    let previous = registry.subjects.get(&subject).cloned().unwrap_or_default();

    // Already a version of this subject: same id, no check, no new version.
    if let Some(&id) = registry.ids.get(&new.text)
        && previous.iter().any(|v| v.id == id)
    {
        return Ok(ok(json!({ "id": id })));
    }

    let level = registry.level_of(&subject);
    let problems = registry.incompatibilities(level, &new.parsed, &previous);
    if !problems.is_empty() {
        let details: Vec<String> = problems
            .iter()
            .map(|p| format!("{{reason: '{p}'}}"))
            .collect();
        return Err(error(
            StatusCode::CONFLICT,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \
                 \"{subject}\", details: [{}, {{compatibility: '{}'}}]",
                details.join(", "),
                level.name()
            ),
        ));
    }

    let id = match registry.ids.get(&new.text) {
        Some(&id) => id,
        None => {
            registry.schemas.push(Stored {
                text: new.text.clone(),
                parsed: new.parsed,
            });
            let id = u32::try_from(registry.schemas.len()).expect("fewer than 2^32 schemas");
            registry.ids.insert(new.text, id);
            id
        }
    };
    let version = previous.last().map_or(1, |v| v.version + 1);
    registry
        .subjects
        .entry(subject)
        .or_default()
        .push(Version { version, id });
    Ok(ok(json!({ "id": id })))
}

async fn lookup(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Reply {
    let new = submitted_schema(&body)?;
    let registry = shared.registry();
    let versions = registry.versions(&subject)?;
    let found = registry
        .ids
        .get(&new.text)
        .and_then(|&id| versions.iter().find(|v| v.id == id))
        .ok_or_else(|| error(StatusCode::NOT_FOUND, 40403, "Schema not found"))?;
    Ok(ok(version_body(&registry, &subject, *found)))
}

async fn list_subjects(State(shared): State<Arc<Shared>>) -> Response {
    let registry = shared.registry();
    let names: Vec<&String> = registry
        .subjects
        .iter()
        .filter(|(_, versions)| !versions.is_empty())
        .map(|(name, _)| name)
        .collect();
    ok(json!(names))
}

async fn list_versions(State(shared): State<Arc<Shared>>, Path(subject): Path<String>) -> Reply {
    let registry = shared.registry();
    let versions = registry.versions(&subject)?;
    Ok(ok(json!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>()
    )))
}

async fn get_version(
    State(shared): State<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
) -> Reply {
    let registry = shared.registry();
    let v = registry.version(&subject, &version)?;
    Ok(ok(version_body(&registry, &subject, v)))
}

async fn delete_subject(State(shared): State<Arc<Shared>>, Path(subject): Path<String>) -> Reply {
    let mut registry = shared.registry();
    registry.versions(&subject)?;
    let deleted = registry.subjects.remove(&subject).unwrap_or_default();
    Ok(ok(json!(
        deleted.iter().map(|v| v.version).collect::<Vec<_>>()
    )))
}

async fn schema_by_id(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Reply {
    let registry = shared.registry();
    let stored = id
        .parse::<u32>()
        .ok()
        .and_then(|id| registry.stored(id))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                40403,
                format!("Schema {id} not found"),
            )
        })?;
    Ok(ok(json!({ "schema": stored.text })))
}

fn level_from_body(body: &[u8]) -> Result<Level, ApiError> {
    let request: Value = serde_json::from_slice(body).map_err(|err| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            422,
            format!("Unrecognized request body: {err}"),
        )
    })?;
    request
        .get("compatibility")
        .and_then(Value::as_str)
        .and_then(Level::parse)
        .ok_or_else(|| {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                42203,
                "Invalid compatibility level. Valid values are none, backward, forward, full, \
                 backward_transitive, forward_transitive, and full_transitive",
            )
        })
}

async fn get_global_config(State(shared): State<Arc<Shared>>) -> Response {
    let level = shared.registry().global_level();
    ok(json!({ "compatibilityLevel": level.name() }))
}

async fn put_global_config(State(shared): State<Arc<Shared>>, body: Bytes) -> Reply {
    let level = level_from_body(&body)?;
    shared.registry().global_level = Some(level);
    Ok(ok(json!({ "compatibility": level.name() })))
}

async fn get_subject_config(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Reply {
    let registry = shared.registry();
    let default_to_global = query
        .get("defaultToGlobal")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let level = match registry.subject_levels.get(&subject) {
        Some(&level) => level,
        None if default_to_global => registry.global_level(),
        None => {
            return Err(error(
                StatusCode::NOT_FOUND,
                40408,
                format!("Subject '{subject}' does not have subject-level compatibility configured"),
            ));
        }
    };
    Ok(ok(json!({ "compatibilityLevel": level.name() })))
}

async fn put_subject_config(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Reply {
    let level = level_from_body(&body)?;
    shared.registry().subject_levels.insert(subject, level);
    Ok(ok(json!({ "compatibility": level.name() })))
}

fn compatibility_reply(problems: Vec<String>, query: &HashMap<String, String>) -> Response {
    let verbose = query
        .get("verbose")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if verbose {
        ok(json!({ "is_compatible": problems.is_empty(), "messages": problems }))
    } else {
        ok(json!({ "is_compatible": problems.is_empty() }))
    }
}

/// `POST /compatibility/subjects/{subject}/versions`: against the versions the
/// subject's level names (all for `_TRANSITIVE`, else the latest), as
/// registration would check.
async fn check_all(
    State(shared): State<Arc<Shared>>,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Reply {
    let new = submitted_schema(&body)?;
    let registry = shared.registry();
    let previous = registry.subjects.get(&subject).cloned().unwrap_or_default();
    let problems = registry.incompatibilities(registry.level_of(&subject), &new.parsed, &previous);
    Ok(compatibility_reply(problems, &query))
}

/// `POST /compatibility/subjects/{subject}/versions/{version}`: `latest` is
/// checked as registration would; a numbered version alone.
async fn check_version(
    State(shared): State<Arc<Shared>>,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Reply {
    let new = submitted_schema(&body)?;
    let registry = shared.registry();
    let target = registry.version(&subject, &version)?;
    let level = registry.level_of(&subject);
    let problems = if parse_version(&version)?.is_none() {
        let previous = registry.subjects.get(&subject).cloned().unwrap_or_default();
        registry.incompatibilities(level, &new.parsed, &previous)
    } else {
        let single = match level {
            Level::BackwardTransitive => Level::Backward,
            Level::ForwardTransitive => Level::Forward,
            Level::FullTransitive => Level::Full,
            other => other,
        };
        registry.incompatibilities(single, &new.parsed, &[target])
    };
    Ok(compatibility_reply(problems, &query))
}
