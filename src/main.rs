//! The `siphon` binary: parse the command line, load and validate the
//! connector files, run them until SIGTERM/SIGINT, and exit non-zero if a
//! connector stopped with a fatal error.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use siphon::cli::{Cli, Command};
use siphon::config;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("siphon {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { paths } => match config::load_paths(&paths) {
            Ok(connectors) => {
                for c in connectors {
                    println!("{}: connector {} is valid", c.file.display(), c.name);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { paths } => {
            let connectors = match config::load_paths(&paths) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            siphon::telemetry::init(cli.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(connectors))
        }
    }
}

async fn run(connectors: Vec<config::ConnectorConfig>) -> ExitCode {
    let root = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for cfg in connectors {
        let cfg = Arc::new(cfg);
        let cancel = root.child_token();
        info!(connector = %cfg.name, file = %cfg.file.display(), "starting connector");
        tasks.spawn(async move {
            let name = cfg.name.to_string();
            (name, siphon::pipeline::supervise(cfg, cancel).await)
        });
    }
    let shutdown = root.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested: finishing open Kafka transactions");
        shutdown.cancel();
    });
    let mut failed = false;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(_))) => {
                // Already logged with its cause by the supervisor.
                error!(connector = %name, "connector failed");
                failed = true;
            }
            Err(e) => {
                error!(error = %e, "connector task panicked");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
