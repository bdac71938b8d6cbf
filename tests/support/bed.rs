//! One test's services — a private PostgreSQL cluster, a tansu broker, the
//! registry stand-in and a temp dir for connector files and logs — and the
//! waits tests share.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use siphon::avro::registry::{RegistryClient, RegistryClientConfig};

use super::events::{Event, decode_all};
use super::kafka::{Broker, Record, read_committed};
use super::poll_until;
use super::postgres::{PgCluster, PgOptions};
use super::registry::RegistryStandIn;
use super::siphon::{Siphon, Spec, connector_file};

/// How long a test waits for anything siphon should do.
pub const WAIT: Duration = Duration::from_secs(90);

pub struct Bed {
    pub pg: PgCluster,
    pub broker: Broker,
    pub registry: RegistryStandIn,
    /// A client of the registry stand-in, for decoding events.
    pub client: RegistryClient,
    pub dir: tempfile::TempDir,
}

impl Bed {
    /// Services with a default cluster holding an empty `database`.
    pub async fn start(database: &str) -> Bed {
        Bed::start_with(PgOptions::default(), database).await
    }

    pub async fn start_with(opts: PgOptions, database: &str) -> Bed {
        let pg = PgCluster::start_with(opts);
        pg.create_database(database);
        let broker = Broker::start();
        let registry = RegistryStandIn::start().await;
        let client = RegistryClient::new(&RegistryClientConfig {
            url: registry.url.clone(),
            username: None,
            password: None,
            request_timeout_ms: 5_000,
            root_cert_file: None,
        })
        .expect("registry client");
        Bed {
            pg,
            broker,
            registry,
            client,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Writes a connector file named `<name>.toml` into the bed's dir.
    pub fn connector(
        &self,
        name: &str,
        database: &str,
        tables: &[&str],
        extra_kafka: &str,
    ) -> PathBuf {
        self.connector_with(name, database, tables, extra_kafka, "")
    }

    /// [`Bed::connector`] with extra lines for the `[postgres]` section too.
    pub fn connector_with(
        &self,
        name: &str,
        database: &str,
        tables: &[&str],
        extra_kafka: &str,
        extra_postgres: &str,
    ) -> PathBuf {
        connector_file(
            self.dir.path(),
            &Spec {
                name,
                pg: &self.pg,
                database,
                broker: &self.broker,
                registry_url: &self.registry.url,
                tables,
                extra_kafka,
                extra_postgres,
            },
        )
    }

    pub fn siphon(&self, connector: &Path) -> Siphon {
        self.siphon_with_env(connector, &[])
    }

    pub fn siphon_with_env(&self, connector: &Path, env: &[(&str, &str)]) -> Siphon {
        Siphon::start(connector, self.dir.path(), env)
    }

    /// siphon with its control listener enabled (see [`Siphon::start_with`]).
    pub fn siphon_with_control(&self, connector: &Path) -> Siphon {
        Siphon::start_with(connector, self.dir.path(), &[], true)
    }

    /// Runs siphon until it exits by itself, which must be a failure (a
    /// fatal error), and returns its log.
    pub fn run_until_fatal(&self, connector: &Path, env: &[(&str, &str)]) -> String {
        let mut s = self.siphon_with_env(connector, env);
        let status = s
            .wait(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("siphon kept running:\n{}", s.log()));
        assert!(!status.success(), "siphon succeeded:\n{}", s.log());
        s.log()
    }

    /// Waits until some walsender streams from `slot`.
    pub async fn wait_slot_active(&self, db: &str, slot: &str) {
        let sql = format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'");
        poll_until(WAIT, "siphon to stream from its slot", async || {
            (self.pg.psql(db, &sql) == "t").then_some(())
        })
        .await;
    }

    /// Polls until `topic` holds `n` records (events and tombstones) for a
    /// read_committed consumer; fails as soon as it holds more.
    pub async fn wait_records(&self, topic: &str, n: usize, siphon: &Siphon) -> Vec<Record> {
        let bootstrap = self.broker.bootstrap.clone();
        poll_until(WAIT, &format!("{n} records in {topic}"), async || {
            let r = read_committed(&bootstrap, topic);
            assert!(
                r.len() <= n,
                "{topic}: {} records, expected {n}\n{}",
                r.len(),
                siphon.log()
            );
            (r.len() == n).then_some(r)
        })
        .await
    }

    /// [`Bed::wait_records`], decoded with the registered schemas.
    pub async fn wait_events(&self, topic: &str, n: usize, siphon: &Siphon) -> Vec<Event> {
        let records = self.wait_records(topic, n, siphon).await;
        decode_all(&self.client, &records).await
    }

    /// Waits until siphon's readiness endpoint answers `status`.
    pub async fn wait_ready_status(&self, siphon: &Siphon, status: u16) {
        poll_until(
            WAIT,
            &format!("/health/ready to answer {status}"),
            async || {
                matches!(siphon.http_get("/health/ready").await, Some((s, _)) if s == status)
                    .then_some(())
            },
        )
        .await;
    }
}
