//! How failures are classified. Every module has its own error enum; each
//! of them answers one question, once: may the connector retry, or must an
//! operator act first?

/// The class of a failure, decided where the error is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retrying may succeed (network cut, broker or registry outage,
    /// PostgreSQL restarting). The supervisor restarts the connector from
    /// its stored offset with capped, jittered backoff; nothing is skipped.
    Transient,
    /// Retrying cannot succeed until an operator changes something (config,
    /// privileges, wal_level, a lost slot). The connector stops and reports
    /// not ready; the message says what to do.
    Fatal,
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Fatal => "fatal",
        })
    }
}
