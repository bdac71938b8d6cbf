//! A plain TCP proxy on loopback that injects network faults between siphon
//! and a service whose protocol the test does not need to understand
//! (PostgreSQL, the schema registry). For Kafka, use `kafka_proxy`.
//!
//! Faults: [`TcpProxy::cut`] closes every open connection (new ones are
//! accepted), [`TcpProxy::set_down`] also refuses new ones, and
//! [`TcpProxy::stall`] stops forwarding without closing anything.
//!
//! It runs on its own thread and tokio runtime, so it works from blocking
//! code too; dropping the handle stops it and closes every connection.

#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Debug, Default)]
struct Faults {
    /// Bumped to close every connection accepted under an older value.
    generation: u64,
    down: bool,
    stalled: bool,
    shutdown: bool,
}

pub struct TcpProxy {
    pub port: u16,
    faults: watch::Sender<Faults>,
    connections: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Forwards a free loopback port to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> TcpProxy {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind tcp proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("proxy address").port();
        let (faults, _) = watch::channel(Faults::default());
        let connections = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_owned();
        let rx = faults.subscribe();
        let count = Arc::clone(&connections);
        let thread = std::thread::Builder::new()
            .name(format!("tcp-proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(accept_loop(listener, upstream, rx, count));
            })
            .expect("proxy thread");
        TcpProxy {
            port,
            faults,
            connections,
            thread: Some(thread),
        }
    }

    /// Closes every open connection now.
    pub fn cut(&self) {
        self.faults.send_modify(|f| f.generation += 1);
    }

    /// `true`: closes every connection and each new one at once.
    pub fn set_down(&self, on: bool) {
        self.faults.send_modify(|f| {
            if on {
                f.generation += 1;
            }
            f.down = on;
        });
    }

    /// `true`: forwards nothing (both ways) and closes nothing.
    pub fn stall(&self, on: bool) {
        self.faults.send_modify(|f| f.stalled = on);
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.faults.send_modify(|f| f.shutdown = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: StdListener,
    upstream: String,
    mut faults: watch::Receiver<Faults>,
    count: Arc<AtomicU64>,
) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let mut tasks = tokio::task::JoinSet::new();
    // Priority: shutdown first, then new connections.
    loop {
        let accepted = tokio::select! {
            biased;
            _ = faults.wait_for(|f| f.shutdown) => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let state = faults.borrow().clone();
        if state.down {
            let _ = client.set_zero_linger();
            continue;
        }
        count.fetch_add(1, Ordering::Relaxed);
        let upstream = upstream.clone();
        let rx = faults.clone();
        tasks.spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // Whichever direction ends first closes both.
            tokio::select! {
                _ = pump(cr, sw, rx.clone(), state.generation) => {}
                _ = pump(sr, cw, rx, state.generation) => {}
            }
        });
        while tasks.try_join_next().is_some() {}
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    generation: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Wait out a stall; end on a cut or shutdown.
        loop {
            let f = faults.borrow_and_update().clone();
            if f.shutdown || f.generation != generation {
                return;
            }
            if !f.stalled {
                break;
            }
            if faults.changed().await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = faults.changed() => if changed.is_err() { return },
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}
