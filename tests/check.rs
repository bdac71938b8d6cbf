//! `siphon check`: a readable report of what would stop a connector, each
//! problem with its fix, against real services; exit 1 on problems.

mod support;

use std::process::Command;

use support::bed::Bed;
use support::kafka::free_port;
use support::postgres::PgOptions;
use support::siphon::check;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_good_setup() {
    let bed = Bed::start("shop").await;
    bed.pg
        .psql("shop", "CREATE TABLE orders (id int PRIMARY KEY)");
    let file = bed.connector("shop", "shop", &["public.orders"], "");
    let (code, report) = check(&file);
    assert_eq!(code, Some(0), "{report}");
    for line in [
        "ok      postgres: connected to 127.0.0.1:",
        "ok      postgres: wal_level is logical, role postgres may replicate, and 1 captured table(s) exist",
        "ok      postgres: slot siphon_shop does not exist yet; siphon will create it",
        "ok      postgres: publication siphon_shop does not exist yet; siphon will create it",
        "ok      kafka: reached 127.0.0.1:",
        "ok      kafka: transactions are allowed",
        "ok      kafka: records up to 999903 bytes of key, value and headers are produced: message.max.bytes is 1000000 (librdkafka's default), less 97 bytes of record overhead",
        "ok      kafka: 2 topic(s) do not exist yet and will be created: siphon.offsets, shop.public.orders",
        "ok      registry: reached http://127.0.0.1:",
        "compatibility level for shop.public.orders-value is BACKWARD (the subject does not exist yet; siphon will create it with BACKWARD)",
        "=> ready to run",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
    // Read-only: nothing was created.
    assert_eq!(
        bed.pg.psql(
            "shop",
            "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)"
        ),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_problem_with_its_fix() {
    let replica = PgOptions {
        wal_level: "replica".into(),
        ..PgOptions::default()
    };
    let bed = Bed::start_with(replica, "shop").await;
    bed.pg.psql(
        "shop",
        "CREATE ROLE app LOGIN;
         CREATE TABLE orders (id int PRIMARY KEY);
         CREATE TABLE loose (v text);
         CREATE TABLE secret (id int PRIMARY KEY);
         GRANT SELECT ON orders, loose TO app;",
    );
    let file = bed.connector(
        "shop",
        "shop",
        &["public.orders", "public.loose", "public.secret"],
        "",
    );
    // Connect as the unprivileged role, to an unreachable broker and registry.
    let closed = free_port();
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("user = \"postgres\"", "user = \"app\"")
        .replace(&bed.broker.bootstrap, &format!("127.0.0.1:{closed}"))
        .replace(&bed.registry.url, &format!("http://127.0.0.1:{closed}"));
    std::fs::write(&file, text).unwrap();
    let (code, report) = check(&file);
    assert_eq!(code, Some(1), "{report}");
    for line in [
        "PROBLEM postgres: wal_level is \"replica\", logical replication needs \"logical\": run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL",
        "PROBLEM postgres: role app may not stream changes: run ALTER ROLE \"app\" WITH REPLICATION;",
        "PROBLEM postgres: table public.loose has no primary key and REPLICA IDENTITY DEFAULT, so once it is published PostgreSQL refuses its UPDATE and DELETE",
        "add a primary key, or run ALTER TABLE \"public\".\"loose\" REPLICA IDENTITY FULL;",
        "PROBLEM postgres: role app may not read table public.secret: run GRANT SELECT ON \"public\".\"secret\" TO \"app\";",
        "PROBLEM postgres: publication siphon_shop does not exist and role app does not own \"public\".\"orders\", \"public\".\"loose\", \"public\".\"secret\", so it cannot create it",
        "PROBLEM kafka: cannot reach Kafka at 127.0.0.1:",
        "PROBLEM registry: ",
        "PROBLEM postgres: publication siphon_shop does not exist and role app lacks CREATE on database shop, so it cannot create it: run GRANT CREATE ON DATABASE \"shop\" TO \"app\";",
        "=> 8 problem(s) to fix",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_exposed_credentials_and_never_prints_a_secret() {
    const KAFKA_SECRET: &str = "Planted-Kafka-Secret-4e1b";
    let bed = Bed::start("shop").await;
    bed.pg
        .psql("shop", "CREATE TABLE orders (id int PRIMARY KEY)");
    let file = bed.connector_with(
        "shop",
        "shop",
        &["public.orders"],
        "[kafka.properties_env]\n\"security.protocol\" = \"CHECK_KAFKA_SECRET\"",
        "password_env = \"CHECK_PG_PASSWORD\"",
    );
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        format!("{text}username = \"siphon\"\npassword_env = \"CHECK_REGISTRY_PASSWORD\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_siphon"))
        .arg("check")
        .arg(&file)
        .env("CHECK_KAFKA_SECRET", KAFKA_SECRET)
        .env("CHECK_PG_PASSWORD", "pg-password")
        .env("CHECK_REGISTRY_PASSWORD", "registry-password")
        .output()
        .expect("run siphon check");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // librdkafka refuses the value; the report says where, not what.
    assert!(
        report.contains("PROBLEM kafka: invalid client settings")
            && report.contains("security.protocol"),
        "{report}"
    );
    assert!(
        !report.contains(KAFKA_SECRET),
        "the secret leaked:\n{report}"
    );
    assert!(
        !report.contains("pg-password") && !report.contains("registry-password"),
        "{report}"
    );
    // Working but unsafe settings are warnings, not problems.
    assert!(
        report.contains(
            "WARN    postgres: postgres.ssl_mode = prefer does not verify the server's certificate"
        ) && report.contains("verify-full"),
        "{report}"
    );
    assert!(
        report.contains("WARN    registry: registry.url http://127.0.0.1:")
            && report.contains("use https://"),
        "{report}"
    );
    assert!(
        !report.contains("PROBLEM postgres") && !report.contains("PROBLEM registry"),
        "{report}"
    );
}
