//! Command line: `siphon run`, `siphon check`, `siphon version`.

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
    },
    /// Load and validate connector files without connecting to anything.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the version.
    Version,
}
