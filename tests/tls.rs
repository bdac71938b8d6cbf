//! TLS to PostgreSQL: both connections (the tokio-postgres catalog client
//! and the hand-written replication client) against private PostgreSQL 15
//! clusters serving a throwaway CA's certificate for `localhost` only and
//! accepting TCP connections only over TLS, then the whole `siphon` binary
//! streaming over TLS into a tansu broker.

mod support;

use std::path::Path;
use std::time::Duration;

use siphon::avro::registry::{RegistryClient, RegistryClientConfig};
use siphon::config::{PostgresConfig, Secret, SslConfig, SslMode, TableName};
use siphon::error::ErrorClass;
use siphon::postgres::PgError;
use siphon::postgres::catalog::Catalog;
use siphon::postgres::replication::{ReplicationClient, ReplicationConfig, ReplicationError};
use support::events::decode_all;
use support::kafka::{Broker, read_committed};
use support::poll_until;
use support::postgres::{PgCluster, PgOptions};
use support::registry::RegistryStandIn;
use support::siphon::{Siphon, Spec, connector_file};

const WAIT: Duration = Duration::from_secs(90);

fn tls_cluster() -> PgCluster {
    PgCluster::start_with(PgOptions {
        tls: true,
        ..PgOptions::default()
    })
}

fn ssl(mode: SslMode, root_cert_file: Option<&Path>) -> SslConfig {
    SslConfig {
        mode,
        root_cert_file: root_cert_file.map(Path::to_owned),
        cert_file: None,
        key_file: None,
    }
}

fn catalog_config(pg: &PgCluster, host: &str, ssl: &SslConfig) -> PostgresConfig {
    PostgresConfig {
        host: host.to_owned(),
        port: pg.port(),
        database: "postgres".to_owned(),
        user: pg.user().to_owned(),
        password: pg.password().map(|p| Secret::new(p.to_owned())),
        slot: "unused".to_owned(),
        publication: "unused".to_owned(),
        create_slot: false,
        create_publication: false,
        tables: vec![TableName {
            schema: "public".to_owned(),
            table: "unused".to_owned(),
        }],
        connect_timeout_ms: 10_000,
        status_interval_ms: 10_000,
        ssl: ssl.clone(),
        publish_via_partition_root: true,
        failover_slot: false,
        insert_only_tables: Vec::new(),
    }
}

fn replication_config(pg: &PgCluster, host: &str, ssl: &SslConfig) -> ReplicationConfig {
    ReplicationConfig {
        host: host.to_owned(),
        port: pg.port(),
        user: pg.user().to_owned(),
        password: pg.password().map(str::to_owned),
        dbname: "postgres".to_owned(),
        application_name: "siphon-tls-test".to_owned(),
        connect_timeout_ms: 10_000,
        ssl: ssl.clone(),
    }
}

async fn catalog(pg: &PgCluster, host: &str, ssl: &SslConfig) -> Result<Catalog, PgError> {
    Catalog::connect(&catalog_config(pg, host, ssl)).await
}

async fn replication(
    pg: &PgCluster,
    host: &str,
    ssl: &SslConfig,
) -> Result<ReplicationClient, ReplicationError> {
    ReplicationClient::connect(&replication_config(pg, host, ssl)).await
}

/// What `pg_stat_ssl` says about the catalog connection.
async fn catalog_ssl(catalog: &Catalog) -> bool {
    catalog
        .client()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

/// What `pg_stat_ssl` says about the replication connection (a
/// `replication=database` walsender runs SQL too).
async fn replication_ssl(client: &mut ReplicationClient) -> bool {
    let rows = client
        .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .expect("pg_stat_ssl");
    rows[0][0].as_deref() == Some("t")
}

/// Connects both clients with `ssl` to `host` and asserts both are (or
/// are not) encrypted.
async fn assert_both_connect(pg: &PgCluster, host: &str, ssl: &SslConfig, encrypted: bool) {
    let catalog = catalog(pg, host, ssl).await.unwrap_or_else(|e| {
        panic!(
            "catalog connect to {host} ({:?}): {}",
            ssl.mode,
            siphon::pipeline::chain(&e)
        )
    });
    assert_eq!(catalog_ssl(&catalog).await, encrypted);
    let mut client = replication(pg, host, ssl).await.unwrap_or_else(|e| {
        panic!(
            "replication connect to {host} ({:?}): {}",
            ssl.mode,
            siphon::pipeline::chain(&e)
        )
    });
    assert_eq!(replication_ssl(&mut client).await, encrypted);
    client.identify_system().await.expect("IDENTIFY_SYSTEM");
}

/// Both connections fail with a fatal error whose message is `expected`.
async fn assert_both_fail_fatally(pg: &PgCluster, host: &str, ssl: &SslConfig, expected: &str) {
    let err = catalog(pg, host, ssl)
        .await
        .err()
        .expect("catalog connect succeeded");
    assert_eq!(
        err.to_string(),
        expected,
        "{}",
        siphon::pipeline::chain(&err)
    );
    assert_eq!(err.class(), ErrorClass::Fatal);

    let err = replication(pg, host, ssl)
        .await
        .expect_err("replication connect succeeded");
    assert_eq!(
        err.to_string(),
        expected,
        "{}",
        siphon::pipeline::chain(&err)
    );
    assert!(!err.is_transient());
    let err = PgError::Replication {
        slot: "s".to_owned(),
        source: err,
    };
    assert_eq!(err.class(), ErrorClass::Fatal);
}

#[tokio::test]
async fn verify_full_to_the_certificate_name_encrypts_both_connections() {
    // scram-sha-256 over TLS: the replication client must bind the channel
    // (SCRAM-SHA-256-PLUS), since the server refuses a client that says it
    // could but thinks the server cannot.
    let pg = PgCluster::start_with(PgOptions {
        tls: true,
        auth_method: "scram-sha-256".to_owned(),
        ..PgOptions::default()
    });
    let ssl = ssl(SslMode::VerifyFull, Some(&pg.tls().ca_cert));
    assert_both_connect(&pg, "localhost", &ssl, true).await;
}

#[tokio::test]
async fn verify_full_to_a_name_not_in_the_certificate_is_fatal() {
    let pg = tls_cluster();
    let ssl = ssl(SslMode::VerifyFull, Some(&pg.tls().ca_cert));
    let expected = format!(
        "TLS handshake with PostgreSQL at 127.0.0.1:{} failed: certificate does not match host \
         name \"127.0.0.1\" (ssl_mode = verify-full): use the name in the server certificate as \
         postgres.host, or ssl_mode = verify-ca",
        pg.port()
    );
    assert_both_fail_fatally(&pg, "127.0.0.1", &ssl, &expected).await;
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let pg = tls_cluster();
    let ssl_ok = ssl(SslMode::VerifyCa, Some(&pg.tls().ca_cert));
    assert_both_connect(&pg, "127.0.0.1", &ssl_ok, true).await;

    // A CA that did not sign the server certificate.
    let wrong = ssl(SslMode::VerifyCa, Some(&pg.tls().other_ca_cert));
    let expected = format!(
        "TLS handshake with PostgreSQL at 127.0.0.1:{} failed: server certificate is not signed \
         by a CA in postgres.ssl_root_cert_file (ssl_mode = verify-ca): put the CA that signed \
         the server certificate into that file",
        pg.port()
    );
    assert_both_fail_fatally(&pg, "127.0.0.1", &wrong, &expected).await;
}

#[tokio::test]
async fn require_encrypts_without_a_root_certificate_and_verifies_with_one() {
    let pg = tls_cluster();
    assert_both_connect(&pg, "127.0.0.1", &ssl(SslMode::Require, None), true).await;
    // prefer takes TLS when the server offers it.
    assert_both_connect(&pg, "127.0.0.1", &ssl(SslMode::Prefer, None), true).await;

    // With a root certificate file, require is verify-ca (as in libpq).
    let with_root = ssl(SslMode::Require, Some(&pg.tls().other_ca_cert));
    let err = replication(&pg, "127.0.0.1", &with_root)
        .await
        .expect_err("require with the wrong root certificate connected");
    assert!(
        err.to_string().contains("is not signed by a CA"),
        "{}",
        siphon::pipeline::chain(&err)
    );
}

#[tokio::test]
async fn disable_against_a_hostssl_only_server_fails_clearly() {
    let pg = tls_cluster();
    let off = ssl(SslMode::Disable, None);

    let err = catalog(&pg, "127.0.0.1", &off)
        .await
        .err()
        .expect("unencrypted catalog connect succeeded");
    let shown = siphon::pipeline::chain(&err);
    assert_eq!(err.class(), ErrorClass::Fatal, "{shown}");
    assert!(shown.contains("no encryption"), "{shown}");
    assert!(
        shown.contains("the server refused the unencrypted login; if pg_hba.conf accepts this client only with hostssl, set postgres.ssl_mode = verify-full (or require)"),
        "{shown}"
    );

    let err = replication(&pg, "127.0.0.1", &off)
        .await
        .expect_err("unencrypted replication connect succeeded");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.sqlstate(), Some("28000"));
    let shown = err.to_string();
    assert!(shown.contains("no encryption"), "{shown}");
    assert!(
        shown.contains("(hint: the server refused the unencrypted login; if pg_hba.conf accepts this client only with hostssl, set postgres.ssl_mode = verify-full (or require))"),
        "{shown}"
    );
}

#[tokio::test]
async fn prefer_falls_back_to_plain_and_require_refuses_a_server_without_tls() {
    let pg = PgCluster::start();
    assert_both_connect(&pg, "127.0.0.1", &ssl(SslMode::Prefer, None), false).await;

    let expected = format!(
        "PostgreSQL at 127.0.0.1:{} does not accept TLS connections (ssl_mode = require): turn \
         on ssl in the server's postgresql.conf, or set postgres.ssl_mode = prefer or disable",
        pg.port()
    );
    assert_both_fail_fatally(&pg, "127.0.0.1", &ssl(SslMode::Require, None), &expected).await;
}

#[tokio::test]
async fn client_certificate_is_presented_when_the_server_demands_one() {
    let pg = PgCluster::start_with(PgOptions {
        tls: true,
        client_cert: true,
        ..PgOptions::default()
    });
    let files = pg.tls().clone();
    let with_cert = SslConfig {
        mode: SslMode::VerifyFull,
        root_cert_file: Some(files.ca_cert.clone()),
        cert_file: Some(files.client_cert.clone()),
        key_file: Some(files.client_key.clone()),
    };
    assert_both_connect(&pg, "localhost", &with_cert, true).await;

    // Without one the server refuses the login after the handshake.
    let without = ssl(SslMode::VerifyFull, Some(&files.ca_cert));
    let err = replication(&pg, "localhost", &without)
        .await
        .expect_err("connected without a client certificate");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.sqlstate(), Some("28000"), "{err}");
    let err = catalog(&pg, "localhost", &without)
        .await
        .err()
        .expect("catalog connected without a client certificate");
    assert_eq!(err.class(), ErrorClass::Fatal);
}

/// The binary end to end: a row inserted into a TLS-only server arrives in
/// Kafka, and both of siphon's connections show up in `pg_stat_ssl` as
/// encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siphon_streams_over_tls_with_verify_full() {
    let pg = tls_cluster();
    pg.create_database("shop");
    pg.psql(
        "shop",
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);",
    );
    let broker = Broker::start();
    let registry = RegistryStandIn::start().await;
    let registry_client = RegistryClient::new(&RegistryClientConfig {
        url: registry.url.clone(),
        username: None,
        password: None,
        request_timeout_ms: 5_000,
        root_cert_file: None,
    })
    .expect("registry client");
    let dir = tempfile::tempdir().expect("temp dir");
    let extra_postgres = format!(
        "host = \"localhost\"\nssl_mode = \"verify-full\"\nssl_root_cert_file = {:?}",
        pg.tls().ca_cert.display().to_string()
    );
    let file = connector_file(
        dir.path(),
        &Spec {
            name: "tls",
            pg: &pg,
            database: "shop",
            broker: &broker,
            registry_url: &registry.url,
            tables: &["public.items"],
            extra_kafka: "",
            extra_postgres: &extra_postgres,
        },
    );
    let mut siphon = Siphon::start(&file, dir.path(), &[]);

    poll_until(WAIT, "siphon to stream from its slot", async || {
        let active = pg.psql(
            "shop",
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'siphon_tls'",
        );
        assert!(siphon.pid() > 0);
        (active.trim() == "t").then_some(())
    })
    .await;

    pg.psql("shop", "INSERT INTO items VALUES (1, 'over tls');");
    let records = poll_until(WAIT, "the insert in tls.public.items", async || {
        let r = read_committed(&broker.bootstrap, "tls.public.items");
        assert!(r.len() <= 1, "{} records\n{}", r.len(), siphon.log());
        (r.len() == 1).then_some(r)
    })
    .await;
    let events = decode_all(&registry_client, &records).await;
    assert_eq!(events[0].op().as_deref(), Some("c"));
    let after = events[0].row("after").expect("after");
    assert_eq!(
        after["name"],
        apache_avro::types::Value::String("over tls".to_owned())
    );

    let connections = pg.psql(
        "shop",
        "SELECT application_name, ssl FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name LIKE 'siphon%' ORDER BY application_name",
    );
    assert_eq!(
        connections,
        "siphon|t\nsiphon-tls|t",
        "catalog and replication connections over TLS\n{}",
        siphon.log()
    );

    assert!(siphon.stop().success(), "{}", siphon.log());
}
