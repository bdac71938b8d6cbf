//! Command line: `siphon run`, `siphon check`, `siphon version`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "siphon",
    version,
    about = "PostgreSQL change data capture to Kafka, exactly once"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SIPHON_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run connectors: each file (or each *.toml in a directory) is one.
    Run {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Address of the HTTP server (/health/live, /health/ready, /metrics).
        #[arg(long, env = "SIPHON_HTTP_ADDR", default_value = "0.0.0.0:9090")]
        http_addr: SocketAddr,
        /// Address of the control listener (POST /connectors/{name}/snapshot),
        /// e.g. 127.0.0.1:9091; off unless set. Needs a bearer token from
        /// the SIPHON_CONTROL_TOKEN environment variable or --control-token-file.
        #[arg(long, env = "SIPHON_CONTROL_ADDR")]
        control_addr: Option<SocketAddr>,
        /// File holding the control listener's bearer token (a mounted Secret).
        #[arg(long, env = "SIPHON_CONTROL_TOKEN_FILE")]
        control_token_file: Option<PathBuf>,
        /// On SIGTERM, how long connectors may take to commit or abort their
        /// open Kafka transaction, ack and close before siphon exits anyway.
        #[arg(long, env = "SIPHON_SHUTDOWN_GRACE_MS", default_value_t = 30_000)]
        shutdown_grace_ms: u64,
    },
    /// Validate connector files, then check PostgreSQL, Kafka and the
    /// schema registry for each connector (read-only); exit 1 on problems.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Only validate the files; connect to nothing.
        #[arg(long)]
        offline: bool,
    },
    /// Print the version.
    Version,
}
