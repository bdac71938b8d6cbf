//! An S3 endpoint for tansu's storage, so that a broker restart keeps the
//! log: the tansu binary installed here has no `postgres` or `libsql`
//! storage engine compiled in (it says `FeatureNotEnabled`), only memory and
//! S3. This runs `moto_server` (PyPI `moto[server]`, an S3 API
//! implementation in Python, in memory) on a free loopback port — a
//! stand-in for object storage, as the registry stand-in is for a registry;
//! it lives as long as the handle, across broker restarts.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::kafka::free_port;

pub struct S3StandIn {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl S3StandIn {
    /// Starts `moto_server` and creates `bucket`.
    pub fn start(bucket: &str) -> S3StandIn {
        let dir = tempfile::tempdir().expect("temp dir for moto");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log");
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server: {e}; scripts/install-deps.sh installs it")
            });
        let s3 = S3StandIn {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                let req = format!(
                    "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                c.write_all(req.as_bytes()).expect("create bucket");
                let mut reply = String::new();
                let _ = c.read_to_string(&mut reply);
                assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
                return s3;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Environment for tansu (the object_store S3 client) to use it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

impl Drop for S3StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$SIPHON_MOTO`, `moto_server` on PATH, or where scripts/install-deps.sh
/// links it.
fn moto_binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("SIPHON_MOTO") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("moto_server").exists()));
    if !on_path && let Ok(home) = std::env::var("HOME") {
        let p = std::path::PathBuf::from(home).join(".local/bin/moto_server");
        if p.exists() {
            return p;
        }
    }
    "moto_server".into()
}
