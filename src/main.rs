//! The `siphon` binary: parse the command line, load and validate the
//! connector files, run them until SIGTERM/SIGINT, and exit non-zero if a
//! connector stopped with a fatal error.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use siphon::cli::{Cli, Command};
use siphon::config;
use siphon::telemetry::http::{CONTROL_TOKEN_ENV, ControlToken};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

fn main() -> ExitCode {
    // Armed only in builds with the `failpoints` feature (fault tests).
    let _failpoints = siphon::failpoint::setup();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("siphon {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { paths, offline } => {
            let connectors = match config::load_paths(&paths) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            if offline {
                for c in connectors {
                    println!("{}: connector {} is valid", c.file.display(), c.name);
                }
                return ExitCode::SUCCESS;
            }
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            runtime.block_on(async {
                let mut all_ok = true;
                for c in &connectors {
                    let findings = siphon::check::check_connector(c).await;
                    let (report, ok) = siphon::check::render(c, &findings);
                    print!("{report}");
                    all_ok &= ok;
                }
                if all_ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            })
        }
        Command::Run {
            paths,
            http_addr,
            control_addr,
            control_token_file,
            shutdown_grace_ms,
        } => {
            let connectors = match config::load_paths(&paths) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            // The token is read here, never taken from the command line.
            let control = match control_addr {
                None => None,
                Some(addr) => match ControlToken::load(
                    control_token_file.as_deref(),
                    std::env::var(CONTROL_TOKEN_ENV).ok(),
                ) {
                    Ok(token) => Some((addr, token)),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
            };
            siphon::telemetry::init(cli.log_format);
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let code = runtime.block_on(run(
                connectors,
                http_addr,
                control,
                Duration::from_millis(shutdown_grace_ms),
            ));
            // Every connector has stopped; what is left must not hold the
            // exit: a blocking librdkafka call abandoned at shutdown (a
            // fencing init waiting on the broker), or a fenced producer
            // whose destruction waits on its broker connections for up to
            // a socket timeout. Dropping the runtime would wait for them;
            // the process ends here instead, and the kernel closes the rest.
            std::mem::forget(runtime);
            code
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("cannot start the async runtime: {e}"))
        .ok()
}

async fn run(
    connectors: Vec<config::ConnectorConfig>,
    http_addr: SocketAddr,
    control: Option<(SocketAddr, ControlToken)>,
    grace: Duration,
) -> ExitCode {
    let root = CancellationToken::new();
    // The HTTP server outlives the connectors' shutdown, so probes keep
    // answering (not ready) while they finish.
    let http_cancel = CancellationToken::new();
    match siphon::telemetry::http::serve(http_addr, http_cancel.clone()).await {
        Ok(bound) => info!(address = %bound, "serving /health/live, /health/ready, /metrics"),
        Err(e) => {
            error!(address = %http_addr, error = %e, "cannot serve HTTP: choose another --http-addr");
            return ExitCode::FAILURE;
        }
    }
    if let Some((addr, token)) = control {
        match siphon::telemetry::http::serve_control(addr, token, http_cancel.clone()).await {
            Ok(bound) => {
                info!(address = %bound, "serving the control endpoint POST /connectors/{{name}}/snapshot (bearer token required)")
            }
            Err(e) => {
                error!(address = %addr, error = %e, "cannot serve the control endpoint: choose another --control-addr");
                return ExitCode::FAILURE;
            }
        }
    }
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
    let (grace_tx, grace_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!(
            grace_ms = grace.as_millis() as u64,
            "shutdown requested: finishing open Kafka transactions"
        );
        shutdown.cancel();
        tokio::time::sleep(grace).await;
        let _ = grace_tx.send(());
    });
    let mut failed = false;
    tokio::pin!(grace_rx);
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(j) => j,
                None => break,
            },
            _ = &mut grace_rx => {
                // Whatever is still open is aborted by the next instance's
                // fencing; its changes are re-sent, nothing is lost.
                error!(remaining = tasks.len(), "shutdown grace period elapsed; exiting with connectors still running");
                tasks.abort_all();
                failed = true;
                break;
            }
        };
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
    http_cancel.cancel();
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
