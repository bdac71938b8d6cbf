//! The cache consumer converges: Redis holds exactly the tables' rows
//! after crashes of siphon and of the consumer, and a truncate.

#[path = "../../tests/support/mod.rs"]
mod support;

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Consumer, Rows, converges};
use support::bed::Bed;
use support::kafka::free_port;
use support::kafka_proxy::KafkaProxy;

/// A private Redis on a free loopback port (never the machine's 6379),
/// without persistence; killed on drop.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start(dir: &std::path::Path) -> Redis {
        let port = free_port();
        let child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/bin/redis-server");
        let url = format!("redis://127.0.0.1:{port}/");
        let deadline = Instant::now() + Duration::from_secs(30);
        while redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection())
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "redis did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, url }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every row key `siphon:{table}:{key}` and its value.
fn cached(url: &str) -> Rows {
    let mut out = Rows::new();
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return out;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("siphon:*")
        .query(&mut con)
        .unwrap_or_default();
    for k in keys {
        let Some(rest) = k.strip_prefix("siphon:{") else {
            continue;
        };
        let Some((table, key)) = rest.split_once("}:") else {
            continue;
        };
        if key == "positions" || key == "truncated" {
            continue;
        }
        let value: Option<String> = redis::cmd("GET")
            .arg(&k)
            .query(&mut con)
            .unwrap_or_default();
        if let Some(v) = value {
            out.insert(
                (table.to_owned(), key.to_owned()),
                serde_json::from_str(&v).expect("a row as JSON"),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_equals_the_tables_after_crashes_and_a_truncate() {
    let bed = Bed::start("shop").await;
    let kafka = KafkaProxy::start(&bed.broker.bootstrap);
    let redis = Redis::start(bed.dir.path());
    let mut consumer = Consumer::new(
        env!("CARGO_BIN_EXE_cache"),
        &bed,
        &kafka.bootstrap,
        &["--redis-url".to_owned(), redis.url.clone()],
    );
    converges(&bed, &kafka, &mut consumer, || cached(&redis.url)).await;
}
