//! TLS to PostgreSQL, shared by the catalog connection (tokio-postgres with
//! `postgres-native-tls`) and the hand-written replication connection
//! (`tokio-native-tls`): building the connector from [`SslConfig`] with
//! libpq's `sslmode` semantics, and turning handshake failures into errors
//! that say what failed and what to change.
//!
//! native-tls uses OpenSSL here, the same library reqwest and librdkafka
//! already link, so siphon carries one TLS stack.
//!
//! Invariants:
//! - Certificate and key files are read on every connect (rotated
//!   certificates apply on the next reconnect) and their content never
//!   reaches a log or an error message; errors name the key and the path.
//! - A failed verification is [`TlsError::is_transient`] `false`: retrying
//!   against the same certificate cannot succeed. A network failure during
//!   the handshake is transient.
//!
//! SSL negotiation: <https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.11>,
//! modes: <https://www.postgresql.org/docs/15/libpq-ssl.html#LIBPQ-SSL-PROTECTION>.

use std::error::Error;
use std::io;
use std::path::{Path, PathBuf};

use native_tls::{Certificate, Identity, TlsConnector};

use crate::config::{SslConfig, SslMode};

/// Why TLS to PostgreSQL could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read postgres.{key} {}", path.display())]
    ReadFile {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A certificate or key file holds something else than it should.
    #[error("postgres.{key} {}: {problem}", path.display())]
    BadFile {
        key: &'static str,
        path: PathBuf,
        problem: &'static str,
        #[source]
        source: native_tls::Error,
    },
    /// OpenSSL refused the connector's settings.
    #[error("cannot set up TLS for PostgreSQL")]
    Setup(#[source] native_tls::Error),
    /// The server answered the SSLRequest with 'N' although the mode
    /// requires TLS.
    #[error(
        "PostgreSQL at {host}:{port} does not accept TLS connections (ssl_mode = {mode}): \
         turn on ssl in the server's postgresql.conf, or set postgres.ssl_mode = prefer or disable"
    )]
    NotSupported {
        host: String,
        port: u16,
        mode: SslMode,
    },
    /// The TLS handshake (or the server's verdict on it) failed.
    #[error("{}", describe_handshake(.host, *.port, .ssl, *.failure))]
    Handshake {
        host: String,
        port: u16,
        ssl: SslConfig,
        failure: HandshakeFailure,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
}

/// What went wrong in a TLS handshake, as far as it decides the fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The chain is trusted but the certificate names another host.
    HostMismatch,
    /// The chain does not lead to a trusted root certificate.
    Untrusted,
    /// The server certificate is expired or not yet valid.
    Expired,
    /// The server refused the client certificate, or asked for one and got
    /// none.
    ClientCertificateRejected,
    /// The network failed during the handshake.
    Io,
    /// Anything else (e.g. the server went away mid-handshake).
    Other,
}

impl TlsError {
    /// Whether reconnecting may succeed without an operator changing
    /// anything: only network trouble during the handshake.
    pub fn is_transient(&self) -> bool {
        match self {
            TlsError::Handshake { failure, .. } => {
                matches!(failure, HandshakeFailure::Io | HandshakeFailure::Other)
            }
            TlsError::ReadFile { .. }
            | TlsError::BadFile { .. }
            | TlsError::Setup(_)
            | TlsError::NotSupported { .. } => false,
        }
    }
}

fn describe_handshake(host: &str, port: u16, ssl: &SslConfig, failure: HandshakeFailure) -> String {
    let mode = ssl.mode;
    let start = format!("TLS handshake with PostgreSQL at {host}:{port} failed");
    match failure {
        HandshakeFailure::HostMismatch => format!(
            "{start}: certificate does not match host name {host:?} (ssl_mode = {mode}): \
             use the name in the server certificate as postgres.host, or ssl_mode = verify-ca"
        ),
        HandshakeFailure::Untrusted if ssl.root_cert_file.is_some() => format!(
            "{start}: server certificate is not signed by a CA in postgres.ssl_root_cert_file \
             (ssl_mode = {mode}): put the CA that signed the server certificate into that file"
        ),
        HandshakeFailure::Untrusted => format!(
            "{start}: server certificate is not signed by a CA in the system trust store \
             (ssl_mode = {mode}): set postgres.ssl_root_cert_file to the CA that signed it"
        ),
        HandshakeFailure::Expired => format!(
            "{start}: server certificate has expired or is not valid yet (ssl_mode = {mode}): \
             renew the server certificate, or check the clocks"
        ),
        HandshakeFailure::ClientCertificateRejected => format!(
            "{start}: the server refused the client certificate (ssl_mode = {mode}): set \
             postgres.ssl_cert_file and ssl_key_file to a certificate signed by a CA in the \
             server's ssl_ca_file"
        ),
        HandshakeFailure::Io | HandshakeFailure::Other => format!("{start} (ssl_mode = {mode})"),
    }
}

/// The connector for `ssl`, with its files read now. `None` for
/// [`SslMode::Disable`].
pub fn connector(ssl: &SslConfig) -> Result<Option<TlsConnector>, TlsError> {
    if ssl.mode == SslMode::Disable {
        return Ok(None);
    }
    let mut builder = TlsConnector::builder();
    if let Some(path) = &ssl.root_cert_file {
        let pem = read("ssl_root_cert_file", path)?;
        let roots = Certificate::stack_from_pem(&pem).map_err(|source| TlsError::BadFile {
            key: "ssl_root_cert_file",
            path: path.clone(),
            problem: "is not a PEM certificate bundle",
            source,
        })?;
        // As libpq: the file replaces the system's roots rather than adding
        // to them, so only the CAs the operator named are trusted.
        builder.disable_built_in_roots(true);
        for root in roots {
            builder.add_root_certificate(root);
        }
    }
    if let (Some(cert_path), Some(key_path)) = (&ssl.cert_file, &ssl.key_file) {
        let cert = read("ssl_cert_file", cert_path)?;
        let key = read("ssl_key_file", key_path)?;
        let identity = Identity::from_pkcs8(&cert, &key).map_err(|source| TlsError::BadFile {
            key: "ssl_key_file",
            path: key_path.clone(),
            problem: "does not load with postgres.ssl_cert_file as an unencrypted PKCS#8 PEM key \
                      and its certificate",
            source,
        })?;
        builder.identity(identity);
    }
    builder.danger_accept_invalid_certs(!ssl.verifies_chain());
    builder.danger_accept_invalid_hostnames(!ssl.verifies_host());
    builder.build().map(Some).map_err(TlsError::Setup)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        key,
        path: path.to_owned(),
        source,
    })
}

/// The error for a failed handshake with `host:port`; `source` is the
/// native-tls error or an error that carries one in its chain.
pub fn handshake_error(
    host: &str,
    port: u16,
    ssl: &SslConfig,
    source: Box<dyn Error + Send + Sync>,
) -> TlsError {
    TlsError::Handshake {
        host: host.to_owned(),
        port,
        ssl: ssl.clone(),
        failure: classify(&*source),
        source,
    }
}

/// Sorts a handshake failure by the texts of its error chain. native-tls
/// exposes OpenSSL's verification result only in its message ("certificate
/// verify failed ... (hostname mismatch)"), so the stable OpenSSL reason
/// strings are matched. They are matched in I/O errors too: after the
/// handshake, a TLS 1.3 server's alert about our certificate arrives as an
/// `io::Error` wrapping the TLS error. Otherwise an I/O error anywhere in
/// the chain makes it `Io`.
pub fn classify(error: &(dyn Error + 'static)) -> HandshakeFailure {
    let mut text = String::new();
    let mut io = false;
    let mut cur = Some(error);
    while let Some(e) = cur {
        io |= e.is::<io::Error>();
        text.push_str(&e.to_string());
        text.push('\n');
        cur = e.source();
    }
    classify_text(&text, io)
}

fn classify_text(text: &str, io: bool) -> HandshakeFailure {
    let lower = text.to_ascii_lowercase();
    let has = |needle: &str| lower.contains(needle);
    if has("hostname mismatch") || has("ip address mismatch") {
        HandshakeFailure::HostMismatch
    } else if has("certificate has expired") || has("certificate is not yet valid") {
        HandshakeFailure::Expired
    } else if has("certificate verify failed") {
        // Every other verification result: self-signed, unknown issuer,
        // unsuitable purpose, ...
        HandshakeFailure::Untrusted
    } else if has("alert bad certificate")
        || has("alert certificate required")
        || has("alert unknown ca")
        || has("alert certificate unknown")
        || has("alert certificate revoked")
        || has("alert certificate expired")
        || has("alert unsupported certificate")
        || has("alert access denied")
    {
        HandshakeFailure::ClientCertificateRejected
    } else if io {
        HandshakeFailure::Io
    } else {
        HandshakeFailure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl(mode: SslMode, root: bool) -> SslConfig {
        SslConfig {
            mode,
            root_cert_file: root.then(|| PathBuf::from("/etc/siphon/ca.pem")),
            cert_file: None,
            key_file: None,
        }
    }

    #[test]
    fn openssl_reasons_are_sorted() {
        let verify = "error:0A000086:SSL routines:tls_post_process_server_certificate:\
                      certificate verify failed:../ssl/statem/statem_clnt.c:1889: ";
        for (reason, failure) in [
            ("(hostname mismatch)", HandshakeFailure::HostMismatch),
            ("(IP address mismatch)", HandshakeFailure::HostMismatch),
            (
                "(self-signed certificate in certificate chain)",
                HandshakeFailure::Untrusted,
            ),
            (
                "(unable to get local issuer certificate)",
                HandshakeFailure::Untrusted,
            ),
            ("(certificate has expired)", HandshakeFailure::Expired),
        ] {
            assert_eq!(
                classify_text(&format!("{verify}{reason}"), false),
                failure,
                "{reason}"
            );
        }
        assert_eq!(
            classify_text(
                "error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required",
                true
            ),
            HandshakeFailure::ClientCertificateRejected
        );
        assert_eq!(
            classify_text("Connection reset by peer (os error 104)", true),
            HandshakeFailure::Io
        );
        assert_eq!(
            classify_text("unexpected eof while reading", false),
            HandshakeFailure::Other
        );
    }

    #[test]
    fn io_errors_in_the_chain_are_transient_verification_is_not() {
        let io: Box<dyn Error + Send + Sync> =
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset));
        let err = handshake_error("db", 5432, &ssl(SslMode::Require, false), io);
        assert!(err.is_transient(), "{err:?}");

        let bad: Box<dyn Error + Send + Sync> =
            "certificate verify failed: (hostname mismatch)".into();
        let err = handshake_error("127.0.0.1", 5432, &ssl(SslMode::VerifyFull, true), bad);
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "TLS handshake with PostgreSQL at 127.0.0.1:5432 failed: certificate does not match \
             host name \"127.0.0.1\" (ssl_mode = verify-full): use the name in the server \
             certificate as postgres.host, or ssl_mode = verify-ca"
        );
    }

    #[test]
    fn untrusted_names_the_trust_source() {
        let bad = || -> Box<dyn Error + Send + Sync> {
            "certificate verify failed: (self-signed certificate in certificate chain)".into()
        };
        let with_file = handshake_error("db", 5432, &ssl(SslMode::VerifyCa, true), bad());
        assert!(
            with_file
                .to_string()
                .contains("postgres.ssl_root_cert_file"),
            "{with_file}"
        );
        let system = handshake_error("db", 5432, &ssl(SslMode::VerifyCa, false), bad());
        assert!(
            system.to_string().contains("system trust store"),
            "{system}"
        );
    }

    #[test]
    fn modes_decide_what_is_verified() {
        assert!(!ssl(SslMode::Prefer, false).verifies_chain());
        assert!(!ssl(SslMode::Require, false).verifies_chain());
        assert!(ssl(SslMode::Require, true).verifies_chain());
        assert!(ssl(SslMode::VerifyCa, false).verifies_chain());
        assert!(!ssl(SslMode::VerifyCa, true).verifies_host());
        assert!(ssl(SslMode::VerifyFull, false).verifies_host());
        assert!(connector(&ssl(SslMode::Disable, false)).unwrap().is_none());
        assert!(connector(&ssl(SslMode::Require, false)).unwrap().is_some());
    }

    #[test]
    fn missing_files_name_key_and_path() {
        let err = connector(&ssl(SslMode::VerifyFull, true)).unwrap_err();
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "cannot read postgres.ssl_root_cert_file /etc/siphon/ca.pem"
        );
    }
}
