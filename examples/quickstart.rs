//! The quickstart (run it with `scripts/quickstart.sh`): a throwaway
//! PostgreSQL (15 unless `SIPHON_TEST_PG` says otherwise), a tansu broker
//! and the schema-registry stand-in on loopback, the real `siphon` binary
//! on a demo connector file, a few changes, and the decoded events printed
//! as JSON. With `--keep`, everything stays up until Ctrl-C so the
//! reference consumers (docs/consumers.md) can read the stream.
//!
//! It reuses the test bed of `tests/support` so the quickstart and the
//! tests run on exactly the same set-up.

#[path = "../tests/support/events.rs"]
mod events;
#[path = "../tests/support/kafka.rs"]
mod kafka;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/registry.rs"]
mod registry;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use siphon::avro::registry::{RegistryClient, RegistryClientConfig};

const DEMO_SQL: &str = "
INSERT INTO customers (id, name, email) VALUES (1, 'Ada Lovelace', 'ada@example.com'), (2, 'Grace Hopper', NULL);
BEGIN;
INSERT INTO orders (id, customer_id, amount, placed_at) VALUES (100, 1, 42.50, now());
UPDATE customers SET email = 'ada@analytical.engine' WHERE id = 1;
COMMIT;
DELETE FROM customers WHERE id = 2;
";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!(
        "== starting PostgreSQL {} (throwaway cluster, wal_level=logical)",
        postgres::server_major()
    );
    let pg = postgres::PgCluster::start();
    pg.create_database("shop");
    pg.psql(
        "shop",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
         CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
                              amount numeric(10,2) NOT NULL, placed_at timestamptz);",
    );
    println!("   port {}", pg.port());
    println!("== starting tansu (Kafka-protocol broker)");
    let broker = kafka::Broker::start();
    println!("   {}", broker.bootstrap);
    println!("== starting the schema registry stand-in (Confluent REST API, test/dev only)");
    let registry = registry::RegistryStandIn::start().await;
    println!("   {}", registry.url);

    let dir = std::env::current_dir()?.join(".quickstart");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("shop.toml");
    std::fs::write(
        &file,
        format!(
            r#"# Written by the quickstart.
name = "shop"

[postgres]
host = "127.0.0.1"
port = {port}
database = "shop"
user = "postgres"
tables = ["public.customers", "public.orders"]

[kafka]
bootstrap_servers = "{bootstrap}"
topic_prefix = "shop"

[registry]
url = "{registry}"
"#,
            port = pg.port(),
            bootstrap = broker.bootstrap,
            registry = registry.url
        ),
    )?;
    println!("== connector file {}:\n", file.display());
    println!("{}", std::fs::read_to_string(&file)?);

    let exe = std::env::current_exe()?;
    let siphon_bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("siphon"))
        .context("locating the siphon binary next to the example")?;
    println!("== siphon run {}", file.display());
    let mut siphon = Command::new(&siphon_bin)
        .arg("run")
        .arg(&file)
        .arg("--http-addr")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", siphon_bin.display()))?;

    let deadline = Instant::now() + Duration::from_secs(60);
    while pg
        .psql(
            "shop",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'siphon_shop' AND active",
        )
        .trim()
        != "1"
    {
        if Instant::now() > deadline {
            let _ = siphon.kill();
            bail!("siphon did not start streaming within 60 s");
        }
        if let Some(status) = siphon.try_wait()? {
            bail!("siphon exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("== making changes:{DEMO_SQL}");
    pg.psql("shop", DEMO_SQL);

    let client = RegistryClient::new(&RegistryClientConfig {
        url: registry.url.clone(),
        username: None,
        password: None,
        request_timeout_ms: 5_000,
        root_cert_file: None,
    })?;
    // customers: 2 inserts, 1 update, 1 delete + tombstone; orders: 1 insert.
    let expected = [("shop.public.customers", 5), ("shop.public.orders", 1)];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut all = Vec::new();
    for (topic, n) in expected {
        loop {
            let records = kafka::read_committed(&broker.bootstrap, topic);
            if records.len() >= n {
                all.extend(records);
                break;
            }
            if Instant::now() > deadline {
                let _ = siphon.kill();
                bail!("only {} of {n} events arrived in {topic}", records.len());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    println!(
        "== events, read back with isolation.level=read_committed and decoded with the registered schemas:\n"
    );
    for event in events::decode_all(&client, &all).await {
        let scales = match event.value_schema_id {
            Some(id) => decimal_scales(&client.schema_by_id(id).await?)?,
            None => Default::default(),
        };
        let key = event
            .key
            .clone()
            .map(serde_json::Value::try_from)
            .transpose()?;
        let summary = match &event.value {
            None => serde_json::json!({"topic": event.topic, "key": key, "value": null}),
            Some(_) => serde_json::json!({
                "topic": event.topic,
                "schema_id": event.value_schema_id,
                "key": key,
                "op": event.op(),
                "before": event.row("before").map(|r| row_json(r, &scales)).transpose()?,
                "after": event.row("after").map(|r| row_json(r, &scales)).transpose()?,
                "source.lsn": event.source("lsn").map(serde_json::Value::try_from).transpose()?,
                "source.txId": event.source("txId").map(serde_json::Value::try_from).transpose()?,
            }),
        };
        println!("{}", serde_json::to_string(&summary)?);
    }

    if std::env::args().any(|a| a == "--keep") {
        // Leave everything running for the reference consumers
        // (docs/consumers.md) until Ctrl-C.
        println!(
            "\n== still running (--keep); the reference consumers read it with:\n   \
             export KAFKA_BOOTSTRAP_SERVERS={} REGISTRY_URL={} TOPIC_PREFIX=shop\n   \
             change rows with: psql -h {} -p {} -U {} shop\n   Ctrl-C stops everything",
            broker.bootstrap,
            registry.url,
            pg.host(),
            pg.port(),
            pg.user()
        );
        tokio::signal::ctrl_c().await?;
    }
    println!("\n== stopping siphon (SIGTERM: commits, acks, closes)");
    Command::new("kill")
        .arg("-TERM")
        .arg(siphon.id().to_string())
        .status()?;
    let status = siphon.wait()?;
    println!("   siphon exited: {status}");
    println!("== done; PostgreSQL, the broker and the registry stand-in stop now");
    Ok(())
}

/// Column → scale of every `decimal` column of an envelope schema.
fn decimal_scales(schema_json: &str) -> anyhow::Result<BTreeMap<String, u32>> {
    let schema: serde_json::Value = serde_json::from_str(schema_json)?;
    let mut out = BTreeMap::new();
    let fields = schema["fields"].as_array().cloned().unwrap_or_default();
    // The `Value` record is defined where it first appears (`before`);
    // `after` refers to it by name.
    for envelope_field in fields
        .iter()
        .filter(|f| f["name"] == "before" || f["name"] == "after")
    {
        for branch in envelope_field["type"].as_array().into_iter().flatten() {
            for column in branch["fields"].as_array().into_iter().flatten() {
                let types = match &column["type"] {
                    serde_json::Value::Array(branches) => branches.clone(),
                    other => vec![other.clone()],
                };
                for t in types {
                    if t["logicalType"] == "decimal"
                        && let (Some(name), Some(scale)) =
                            (column["name"].as_str(), t["scale"].as_u64())
                    {
                        out.insert(name.to_owned(), scale as u32);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A decimal as text, e.g. unscaled 4250 with scale 2 → "42.50".
fn decimal_text(unscaled: &num_bigint::BigInt, scale: u32) -> String {
    let digits = unscaled.magnitude().to_string();
    let sign = if unscaled.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

fn row_json(
    row: BTreeMap<String, apache_avro::types::Value>,
    scales: &BTreeMap<String, u32>,
) -> anyhow::Result<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (k, v) in row {
        let v = match v {
            // Decimals as their text, as a consumer would show them.
            apache_avro::types::Value::Decimal(d) => {
                let bytes: Vec<u8> = (&d).try_into()?;
                let unscaled = num_bigint::BigInt::from_signed_bytes_be(&bytes);
                serde_json::Value::String(decimal_text(
                    &unscaled,
                    scales.get(&k).copied().unwrap_or(0),
                ))
            }
            other => serde_json::Value::try_from(other)?,
        };
        out.insert(k, v);
    }
    Ok(serde_json::Value::Object(out))
}
