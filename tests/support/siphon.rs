//! Runs the real `siphon` binary on a connector file written for the test
//! bed, and stops it gracefully (SIGTERM) or kills it (SIGKILL).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::kafka::Broker;
use super::postgres::PgCluster;

/// The `siphon` binary: cargo's for the root crate's tests; for tests of
/// another workspace member (the reference consumers), `SIPHON_BIN` or the
/// one built next to the test binary (`target/<profile>/siphon`).
pub fn siphon_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_siphon") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("SIPHON_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("siphon"))
        .expect("target directory");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build --bin siphon) or set SIPHON_BIN",
        bin.display()
    );
    bin
}

/// What a test connector file says.
pub struct Spec<'a> {
    pub name: &'a str,
    pub pg: &'a PgCluster,
    pub database: &'a str,
    pub broker: &'a Broker,
    pub registry_url: &'a str,
    pub tables: &'a [&'a str],
    /// Extra lines for the `[kafka]` section.
    pub extra_kafka: &'a str,
    /// Extra lines for the `[postgres]` section; a `host = ...` line there
    /// replaces the cluster's `127.0.0.1`.
    pub extra_postgres: &'a str,
}

/// Writes a connector file for the test bed into `dir` and returns its path.
pub fn connector_file(dir: &Path, spec: &Spec<'_>) -> PathBuf {
    let Spec {
        name,
        pg,
        database,
        broker,
        registry_url,
        tables,
        extra_kafka,
        extra_postgres,
    } = spec;
    let host = if extra_postgres
        .lines()
        .any(|l| l.trim_start().starts_with("host "))
    {
        String::new()
    } else {
        format!("host = {:?}\n", pg.host())
    };
    let tables = tables
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let body = format!(
        r#"name = "{name}"

[postgres]
{host}port = {port}
database = "{database}"
user = "{user}"
tables = [{tables}]
status_interval_ms = 500
{extra_postgres}

[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "{name}"
batch_linger_ms = 50
{extra_kafka}

[registry]
url = "{registry_url}"
"#,
        port = pg.port(),
        user = pg.user(),
        bootstrap = broker.bootstrap,
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, body).expect("write connector file");
    path
}

/// The control listener's bearer token in tests.
pub const CONTROL_TOKEN: &str = "test-control-token-0123456789";

/// A running siphon process. Killed on drop.
pub struct Siphon {
    child: Option<Child>,
    log: PathBuf,
    /// Port of its HTTP server (health and metrics).
    pub http_port: u16,
    /// Port of its control listener, when enabled.
    pub control_port: Option<u16>,
}

impl Siphon {
    pub fn start(connector: &Path, log_dir: &Path, env: &[(&str, &str)]) -> Siphon {
        Siphon::start_with(connector, log_dir, env, false)
    }

    /// [`Siphon::start`]; with `control`, the control listener is enabled
    /// on a free port with [`CONTROL_TOKEN`] (passed in the environment).
    pub fn start_with(
        connector: &Path,
        log_dir: &Path,
        env: &[(&str, &str)],
        control: bool,
    ) -> Siphon {
        let n = std::fs::read_dir(log_dir).map(|d| d.count()).unwrap_or(0);
        let log = log_dir.join(format!("siphon-{n}.log"));
        let file = std::fs::File::create(&log).expect("siphon log");
        let http_port = super::kafka::free_port();
        let mut cmd = Command::new(siphon_bin());
        cmd.arg("run")
            .arg(connector)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .env("RUST_LOG", "warn,siphon=debug")
            .env_remove("SIPHON_CONTROL_ADDR")
            .env_remove("SIPHON_CONTROL_TOKEN")
            .env_remove("SIPHON_CONTROL_TOKEN_FILE")
            .stdout(Stdio::from(file.try_clone().expect("log handle")))
            .stderr(Stdio::from(file));
        let control_port = control.then(super::kafka::free_port);
        if let Some(port) = control_port {
            cmd.arg("--control-addr")
                .arg(format!("127.0.0.1:{port}"))
                .env("SIPHON_CONTROL_TOKEN", CONTROL_TOKEN);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn siphon");
        Siphon {
            child: Some(child),
            log,
            http_port,
            control_port,
        }
    }

    /// POST with a JSON body to the control listener, with
    /// [`CONTROL_TOKEN`] as bearer token: (status, body).
    pub async fn control_post(&self, path: &str, body: &str) -> (u16, String) {
        self.control_post_as(path, body, Some(CONTROL_TOKEN)).await
    }

    /// POST to the control listener with the given bearer token (none:
    /// no `Authorization` header).
    pub async fn control_post_as(
        &self,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let port = self
            .control_port
            .expect("siphon started with the control listener");
        let mut request = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .timeout(Duration::from_secs(30));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.expect("post to the control listener");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// GET on siphon's HTTP server: (status, body); None when it does not answer.
    pub async fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// The value of one metric sample from /metrics, e.g.
    /// `siphon_events_total{connector="app",op="c",table="public.items"}`
    /// (labels in alphabetical order, as Prometheus prints them).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics").await?;
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The kernel's high-water mark of its resident memory (`VmHWM`), in
    /// KiB; 0 once it exited.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("siphon did not stop on SIGTERM:\n{}", self.log()))
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }
}

impl Drop for Siphon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `siphon check` on `file`: its exit code and everything it printed.
pub fn check(file: &Path) -> (Option<i32>, String) {
    let out = Command::new(siphon_bin())
        .arg("check")
        .arg(file)
        .output()
        .expect("run siphon check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}
