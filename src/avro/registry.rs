//! Client for the Confluent Schema Registry REST API.
//!
//! Owns the HTTP conversation with a Confluent-compatible registry (Confluent
//! Schema Registry, Karapace, Apicurio's `ccompat` API): registering a
//! subject's schema, fetching a schema by id, listing versions and reading or
//! setting a subject's compatibility level. Only the documented REST API is
//! used (<https://docs.confluent.io/platform/current/schema-registry/develop/api.html>),
//! so any of these registries works.
//!
//! What it must not do:
//! - retry: every error says whether it is transient
//!   ([`RegistryError::is_transient`]) and the connector's supervisor owns the
//!   backoff, so a registry outage delays events and never drops one;
//! - print credentials: the password never reaches `Debug`, `Display`, logs or
//!   error messages, and URLs carrying credentials are refused.
//!
//! Invariants:
//! - a registered `(subject, schema)` pair and an id's schema text are
//!   immutable in the registry, so both are cached for the life of the client
//!   and a repeated schema costs no request. Both caches grow with the number
//!   of distinct schema versions the connector has seen, which is small;
//! - the cache key of a schema is its canonical JSON (keys sorted, no
//!   insignificant whitespace), so formatting differences do not cost a request.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The media type of the registry's v1 API, sent as the request body type.
const SCHEMA_REGISTRY_V1_JSON: &str = "application/vnd.schemaregistry.v1+json";

/// The `Accept` header Confluent's own clients send.
const ACCEPT: &str = "application/vnd.schemaregistry.v1+json, \
                      application/vnd.schemaregistry+json; qs=0.9, application/json; qs=0.5";

/// Longest error text kept from a response that is not a registry error body
/// (an HTML page from a proxy, say).
const MAX_RAW_MESSAGE_CHARS: usize = 512;

/// How to reach the registry.
#[derive(Clone)]
pub struct RegistryClientConfig {
    /// Base URL, e.g. `http://registry:8081` or `https://host/registry/`; a
    /// trailing slash and a path prefix are both fine. Must not carry
    /// credentials: set `username` and `password` instead.
    pub url: String,
    /// HTTP basic auth user name.
    pub username: Option<String>,
    /// HTTP basic auth password; needs `username`.
    pub password: Option<String>,
    /// Timeout of one request, connect to last body byte.
    pub request_timeout_ms: u64,
    /// PEM file of CA certificates to trust for https, in addition to the
    /// system's (a registry behind a private CA).
    pub root_cert_file: Option<std::path::PathBuf>,
}

impl From<&crate::config::RegistryConfig> for RegistryClientConfig {
    fn from(cfg: &crate::config::RegistryConfig) -> Self {
        RegistryClientConfig {
            url: cfg.url.clone(),
            username: cfg.username.clone(),
            password: cfg.password.as_ref().map(|p| p.expose().to_owned()),
            request_timeout_ms: cfg.request_timeout_ms,
            root_cert_file: cfg.ssl_root_cert_file.clone(),
        }
    }
}

impl fmt::Debug for RegistryClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClientConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// What a failed request was about, so errors name the subject or schema id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A subject, e.g. `shop.public.orders-value`.
    Subject(String),
    /// A global schema id.
    SchemaId(u32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Subject(subject) => write!(f, "subject {subject:?}"),
            Target::SchemaId(id) => write!(f, "schema id {id}"),
        }
    }
}

/// Everything that can go wrong talking to the registry.
///
/// `message` fields hold the registry's own explanation (the `message` of its
/// `{"error_code": …, "message": …}` body), which is what the operator needs.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The client configuration cannot work; nothing was sent.
    #[error("invalid schema registry client config: {reason}")]
    Config { reason: String },

    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the schema registry http client")]
    ClientBuild(#[source] reqwest::Error),

    /// No HTTP response: connect failure, timeout, connection reset.
    #[error("schema registry request for {target} failed")]
    Transport {
        target: Target,
        #[source]
        source: reqwest::Error,
    },

    /// 409 on registration: the schema breaks the subject's compatibility level.
    #[error("registry rejected schema for subject {subject:?} as incompatible (409): {message}")]
    Incompatible { subject: String, message: String },

    /// 422 on registration: the registry could not parse the schema.
    #[error("registry rejected schema for subject {subject:?} as invalid (422): {message}")]
    InvalidSchema {
        subject: String,
        error_code: Option<u32>,
        message: String,
    },

    /// 401 or 403: wrong or missing credentials, or no permission.
    #[error(
        "registry denied access to {target} ({status}): {message}; check the registry username, password and ACLs"
    )]
    Unauthorized {
        target: Target,
        status: u16,
        message: String,
    },

    /// 404: the subject, version or schema id does not exist
    /// (error codes 40401, 40402, 40403 respectively).
    #[error("registry found nothing for {target} (404, error code {}): {message}", OptCode(*.error_code))]
    NotFound {
        target: Target,
        error_code: Option<u32>,
        message: String,
    },

    /// 408, 429 or 5xx: the registry is overloaded, restarting or failing.
    #[error("registry unavailable for {target} ({status}): {message}")]
    Unavailable {
        target: Target,
        status: u16,
        message: String,
    },

    /// Any other non-success status, e.g. 422 for an invalid compatibility level.
    #[error("registry rejected request for {target} ({status}, error code {}): {message}", OptCode(*.error_code))]
    Rejected {
        target: Target,
        status: u16,
        error_code: Option<u32>,
        message: String,
    },

    /// A success status with a body that is not what the API documents.
    #[error("cannot decode schema registry response for {target}")]
    Decode {
        target: Target,
        #[source]
        source: serde_json::Error,
    },
}

impl RegistryError {
    /// Whether retrying the same request later may succeed: connection errors,
    /// timeouts, 408, 429 and 5xx. A rejected schema, bad credentials or a
    /// missing subject need an operator (or a different request) instead.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { source, .. } => !source.is_builder(),
            RegistryError::Unavailable { .. } => true,
            RegistryError::Config { .. }
            | RegistryError::ClientBuild(_)
            | RegistryError::Incompatible { .. }
            | RegistryError::InvalidSchema { .. }
            | RegistryError::Unauthorized { .. }
            | RegistryError::NotFound { .. }
            | RegistryError::Rejected { .. }
            | RegistryError::Decode { .. } => false,
        }
    }
}

/// Displays an optional registry error code, `none` when the body had none.
struct OptCode(Option<u32>);

impl fmt::Display for OptCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(code) => write!(f, "{code}"),
            None => f.write_str("none"),
        }
    }
}

/// A Confluent Schema Registry client with id and schema caches.
///
/// Cheap to clone: clones share the HTTP connection pool and the caches.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Base URL without credentials, query or fragment.
    base: Url,
    username: Option<String>,
    password: Option<String>,
    /// `(subject, canonical schema JSON)` → id.
    registered: Mutex<HashMap<(String, String), u32>>,
    /// id → schema text as the registry returned it.
    schemas: Mutex<HashMap<u32, String>>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("url", &self.inner.base.as_str())
            .field("username", &self.inner.username)
            .field(
                "password",
                &self.inner.password.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(Deserialize)]
struct ConfigResponse {
    #[serde(rename = "compatibilityLevel", alias = "compatibility")]
    compatibility_level: String,
}

/// The registry's error body, `{"error_code": 40401, "message": "…"}`.
#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<u32>,
    message: Option<String>,
}

impl RegistryClient {
    /// Checks the configuration and builds the HTTP client; sends nothing.
    pub fn new(cfg: &RegistryClientConfig) -> Result<Self, RegistryError> {
        let config_error = |reason: String| RegistryError::Config { reason };
        let raw = cfg.url.trim();
        let base = Url::parse(raw).map_err(|err| {
            // A URL that does not parse may still hold a password: only echo it
            // when it cannot.
            if raw.contains('@') {
                config_error(format!("url is not a valid url: {err}"))
            } else {
                config_error(format!("url {raw:?} is not a valid url: {err}"))
            }
        })?;
        if !base.username().is_empty() || base.password().is_some() {
            return Err(config_error(
                "url must not contain credentials; set username and password instead".into(),
            ));
        }
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(config_error(format!(
                "url {:?} must use http or https",
                base.as_str()
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(config_error(format!(
                "url {:?} must not have a query or fragment",
                base.as_str()
            )));
        }
        if cfg.password.is_some() && cfg.username.is_none() {
            return Err(config_error("password is set but username is not".into()));
        }
        if cfg.request_timeout_ms == 0 {
            return Err(config_error("request_timeout_ms must be > 0, got 0".into()));
        }

        let mut http = reqwest::Client::builder();
        if let Some(path) = &cfg.root_cert_file {
            let pem = std::fs::read(path).map_err(|e| {
                config_error(format!(
                    "cannot read root certificate file {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    config_error(format!("{} holds no PEM certificates", path.display()))
                })?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(RegistryError::ClientBuild)?;

        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http,
                base,
                username: cfg.username.clone(),
                password: cfg.password.clone(),
                registered: Mutex::new(HashMap::new()),
                schemas: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Registers `schema_json` under `subject` (`POST /subjects/{subject}/versions`)
    /// and returns its global id.
    ///
    /// Registering an already registered schema returns its existing id, so
    /// this is idempotent; a schema this client has registered before in the
    /// same subject costs no request.
    pub async fn register(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let key = (subject.to_owned(), canonical_json(schema_json));
        if let Some(id) = lock(&self.inner.registered).get(&key) {
            return Ok(*id);
        }

        let target = Target::Subject(subject.to_owned());
        let body = json!({ "schema": schema_json }).to_string();
        let request = self
            .request(Method::POST, &["subjects", subject, "versions"])
            .body(body);
        let IdResponse { id } = match self.send(&target, request).await {
            Ok(bytes) => decode(&target, &bytes)?,
            Err(Failure::Status {
                status,
                error_code,
                message,
            }) => {
                return Err(match status {
                    StatusCode::CONFLICT => RegistryError::Incompatible {
                        subject: subject.to_owned(),
                        message,
                    },
                    StatusCode::UNPROCESSABLE_ENTITY => RegistryError::InvalidSchema {
                        subject: subject.to_owned(),
                        error_code,
                        message,
                    },
                    _ => status_error(target, status, error_code, message),
                });
            }
            Err(Failure::Error(err)) => return Err(err),
        };

        lock(&self.inner.registered).insert(key, id);
        tracing::debug!(subject, schema_id = id, "registered schema");
        Ok(id)
    }

    /// Returns the schema text of a global id (`GET /schemas/ids/{id}`).
    pub async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        if let Some(schema) = lock(&self.inner.schemas).get(&id) {
            return Ok(schema.clone());
        }

        let target = Target::SchemaId(id);
        let request = self.request(Method::GET, &["schemas", "ids", &id.to_string()]);
        let SchemaResponse { schema } = self.call(&target, request).await?;

        lock(&self.inner.schemas).insert(id, schema.clone());
        Ok(schema)
    }

    /// Lists the versions registered under `subject` (`GET /subjects/{subject}/versions`).
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let target = Target::Subject(subject.to_owned());
        let request = self.request(Method::GET, &["subjects", subject, "versions"]);
        self.call(&target, request).await
    }

    /// Returns the schema text of the latest version of `subject`
    /// (`GET /subjects/{subject}/versions/latest`), `None` when the subject
    /// does not exist (error code 40401).
    pub async fn latest_schema(&self, subject: &str) -> Result<Option<String>, RegistryError> {
        let target = Target::Subject(subject.to_owned());
        let request = self.request(Method::GET, &["subjects", subject, "versions", "latest"]);
        match self.call::<SchemaResponse>(&target, request).await {
            Ok(SchemaResponse { schema }) => Ok(Some(schema)),
            Err(RegistryError::NotFound {
                error_code: Some(40401),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Returns the compatibility level in force for `subject`: its own, or the
    /// global one when it has none (`GET /config/{subject}?defaultToGlobal=true`).
    pub async fn compatibility(&self, subject: &str) -> Result<String, RegistryError> {
        let target = Target::Subject(subject.to_owned());
        let mut url = self.url(&["config", subject]);
        url.query_pairs_mut().append_pair("defaultToGlobal", "true");
        let request = self.request_to(Method::GET, url);
        let ConfigResponse {
            compatibility_level,
        } = self.call(&target, request).await?;
        Ok(compatibility_level)
    }

    /// Sets the compatibility level of `subject` (`PUT /config/{subject}`), e.g.
    /// `BACKWARD`, `FULL_TRANSITIVE` or `NONE`.
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), RegistryError> {
        let target = Target::Subject(subject.to_owned());
        let body = json!({ "compatibility": level }).to_string();
        let request = self.request(Method::PUT, &["config", subject]).body(body);
        self.call::<Value>(&target, request).await?;
        Ok(())
    }

    /// Sends `request` and decodes a success body as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        target: &Target,
        request: RequestBuilder,
    ) -> Result<T, RegistryError> {
        match self.send(target, request).await {
            Ok(bytes) => decode(target, &bytes),
            Err(Failure::Status {
                status,
                error_code,
                message,
            }) => Err(status_error(target.clone(), status, error_code, message)),
            Err(Failure::Error(err)) => Err(err),
        }
    }

    /// Sends `request`; returns the body of a success response.
    async fn send(&self, target: &Target, request: RequestBuilder) -> Result<Vec<u8>, Failure> {
        let transport = |source| {
            Failure::Error(RegistryError::Transport {
                target: target.clone(),
                source,
            })
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let (error_code, message) = error_details(status, &body);
        Err(Failure::Status {
            status,
            error_code,
            message,
        })
    }

    /// The URL of `segments` below the base URL, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("invariant: an http(s) url, checked in new, has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.request_to(method, self.url(segments))
    }

    fn request_to(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self
            .inner
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .header(reqwest::header::CONTENT_TYPE, SCHEMA_REGISTRY_V1_JSON);
        match &self.inner.username {
            Some(username) => request.basic_auth(username, self.inner.password.as_ref()),
            None => request,
        }
    }
}

/// Why `send` did not return a success body.
enum Failure {
    /// The registry answered with a non-success status.
    Status {
        status: StatusCode,
        error_code: Option<u32>,
        message: String,
    },
    /// No usable answer.
    Error(RegistryError),
}

fn status_error(
    target: Target,
    status: StatusCode,
    error_code: Option<u32>,
    message: String,
) -> RegistryError {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
            target,
            status: status.as_u16(),
            message,
        },
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            target,
            error_code,
            message,
        },
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => RegistryError::Unavailable {
            target,
            status: status.as_u16(),
            message,
        },
        s if s.is_server_error() => RegistryError::Unavailable {
            target,
            status: status.as_u16(),
            message,
        },
        _ => RegistryError::Rejected {
            target,
            status: status.as_u16(),
            error_code,
            message,
        },
    }
}

/// The registry's error code and message from an error response body; for a
/// body that is not a registry error (a proxy's page), its text, shortened.
fn error_details(status: StatusCode, body: &[u8]) -> (Option<u32>, String) {
    if let Ok(ErrorBody {
        error_code,
        message: Some(message),
    }) = serde_json::from_slice::<ErrorBody>(body)
    {
        return (error_code, message);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        let reason = status.canonical_reason().unwrap_or("no reason given");
        return (None, reason.to_owned());
    }
    let mut message: String = text.chars().take(MAX_RAW_MESSAGE_CHARS).collect();
    if message.len() < text.len() {
        message.push('…');
    }
    (None, message)
}

fn decode<T: DeserializeOwned>(target: &Target, body: &[u8]) -> Result<T, RegistryError> {
    serde_json::from_slice(body).map_err(|source| RegistryError::Decode {
        target: target.clone(),
        source,
    })
}

/// The caches hold plain data that no panic can leave half-written, so a
/// poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `text` as JSON with object keys sorted and no insignificant whitespace;
/// text that is not JSON is returned as is (the registry will reject it).
fn canonical_json(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            let mut out = String::with_capacity(text.len());
            write_canonical(&value, &mut out);
            out
        }
        Err(_) => text.to_owned(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> RegistryClientConfig {
        RegistryClientConfig {
            url: url.into(),
            username: None,
            password: None,
            request_timeout_ms: 1000,
            root_cert_file: None,
        }
    }

    fn client(url: &str) -> RegistryClient {
        RegistryClient::new(&config(url)).unwrap()
    }

    #[test]
    fn urls_keep_path_prefix_and_ignore_trailing_slash() {
        for base in ["http://reg:8081", "http://reg:8081/"] {
            let url = client(base).url(&["subjects", "a.b-value", "versions"]);
            assert_eq!(url.as_str(), "http://reg:8081/subjects/a.b-value/versions");
        }
        for base in ["https://host/sr", "https://host/sr/"] {
            let url = client(base).url(&["schemas", "ids", "7"]);
            assert_eq!(url.as_str(), "https://host/sr/schemas/ids/7");
        }
    }

    #[test]
    fn subjects_are_percent_encoded_as_one_segment() {
        let url = client("http://reg").url(&["subjects", "a/b c?d#e%", "versions"]);
        assert_eq!(
            url.as_str(),
            "http://reg/subjects/a%2Fb%20c%3Fd%23e%25/versions"
        );
    }

    #[test]
    fn config_problems_are_reported() {
        let cases = [
            (config("not a url"), "url \"not a url\" is not a valid url"),
            (
                config("http://user:hunter2@reg"),
                "url must not contain credentials",
            ),
            (config("ftp://reg"), "must use http or https"),
            (
                config("http://reg?x=1"),
                "must not have a query or fragment",
            ),
            (
                RegistryClientConfig {
                    password: Some("hunter2".into()),
                    ..config("http://reg")
                },
                "password is set but username is not",
            ),
            (
                RegistryClientConfig {
                    request_timeout_ms: 0,
                    ..config("http://reg")
                },
                "request_timeout_ms must be > 0, got 0",
            ),
        ];
        for (cfg, expected) in cases {
            let err = RegistryClient::new(&cfg).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
            assert!(!err.contains("hunter2"), "{err:?} leaks the password");
        }
    }

    #[test]
    fn a_root_certificate_file_is_loaded_or_named_in_the_error() {
        let ca =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-ca.pem");
        let ok = RegistryClientConfig {
            root_cert_file: Some(ca),
            ..config("https://reg")
        };
        assert!(RegistryClient::new(&ok).is_ok());
        let not_pem = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let bad = RegistryClientConfig {
            root_cert_file: Some(not_pem.clone()),
            ..config("https://reg")
        };
        let err = RegistryClient::new(&bad).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} holds no PEM certificates", not_pem.display()))
                || err.contains("cannot"),
            "{err}"
        );
        let missing = RegistryClientConfig {
            root_cert_file: Some("/nonexistent/ca.pem".into()),
            ..config("https://reg")
        };
        let err = RegistryClient::new(&missing).unwrap_err().to_string();
        assert!(
            err.contains("cannot read root certificate file /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = RegistryClientConfig {
            username: Some("siphon".into()),
            password: Some("hunter2".into()),
            ..config("http://reg")
        };
        let client = RegistryClient::new(&cfg).unwrap();
        for text in [format!("{cfg:?}"), format!("{client:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn canonical_json_ignores_whitespace_and_key_order() {
        let a = r#"{"type": "record", "name": "V", "fields": [{"name": "id", "type": "long"}]}"#;
        let b = r#"{"name":"V","fields":[{"type":"long","name":"id"}],"type":"record"}"#;
        assert_eq!(canonical_json(a), canonical_json(b));
        assert_eq!(
            canonical_json(a),
            r#"{"fields":[{"name":"id","type":"long"}],"name":"V","type":"record"}"#
        );
        assert_eq!(canonical_json("not json"), "not json");
    }

    #[test]
    fn error_bodies_give_code_and_message() {
        let body = br#"{"error_code":40401,"message":"Subject 'x' not found."}"#;
        assert_eq!(
            error_details(StatusCode::NOT_FOUND, body),
            (Some(40401), "Subject 'x' not found.".to_owned())
        );
        assert_eq!(
            error_details(StatusCode::BAD_GATEWAY, b"  <html>bad gateway</html>\n"),
            (None, "<html>bad gateway</html>".to_owned())
        );
        assert_eq!(
            error_details(StatusCode::SERVICE_UNAVAILABLE, b""),
            (None, "Service Unavailable".to_owned())
        );
        let long = "x".repeat(MAX_RAW_MESSAGE_CHARS + 10);
        let (_, message) = error_details(StatusCode::BAD_GATEWAY, long.as_bytes());
        assert_eq!(message.chars().count(), MAX_RAW_MESSAGE_CHARS + 1);
    }

    #[test]
    fn statuses_are_classified() {
        let target = || Target::Subject("s".into());
        let transient = |status: u16| {
            let status = StatusCode::from_u16(status).unwrap();
            status_error(target(), status, None, String::new()).is_transient()
        };
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(transient(status), "{status} should be transient");
        }
        for status in [400, 401, 403, 404, 405, 409, 422] {
            assert!(!transient(status), "{status} should not be transient");
        }
        let err = status_error(
            Target::SchemaId(9),
            StatusCode::NOT_FOUND,
            Some(40403),
            "Schema 9 not found".into(),
        );
        assert_eq!(
            err.to_string(),
            "registry found nothing for schema id 9 (404, error code 40403): Schema 9 not found"
        );
    }
}
