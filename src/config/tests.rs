use std::io::Write;

use super::*;

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).expect("create test file");
    f.write_all(body.as_bytes()).expect("write test file");
    path
}

const GOOD: &str = r#"
name = "shop"
[postgres]
database = "shop"
user = "siphon"
password_env = "PG_PASS"
tables = ["public.orders"]
[kafka]
bootstrap_servers = "127.0.0.1:9092"
topic_prefix = "shop"
[kafka.properties]
"compression.type" = "zstd"
"linger.ms" = 5
[registry]
url = "http://127.0.0.1:8081"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn loads_a_good_file_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shop.toml", GOOD);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "hunter2")])).unwrap();
    assert_eq!(c.name.as_str(), "shop");
    assert_eq!(c.postgres.port, 5432);
    assert_eq!(c.postgres.slot, "siphon_shop");
    assert_eq!(c.postgres.publication, "siphon_shop");
    assert_eq!(
        c.postgres.tables,
        vec![TableName {
            schema: "public".into(),
            table: "orders".into()
        }]
    );
    assert_eq!(c.postgres.password.as_ref().unwrap().expose(), "hunter2");
    assert_eq!(c.kafka.properties["compression.type"], "zstd");
    assert_eq!(c.kafka.properties["linger.ms"], "5");
    assert_eq!(c.kafka.offsets_topic, "siphon.offsets");
    assert_eq!(c.postgres.ssl, SslConfig::default());
    assert_eq!(c.postgres.ssl.mode, SslMode::Prefer);
}

/// PEM-looking files for the TLS keys; config checks only the block labels.
fn tls_files(dir: &tempfile::TempDir) -> (PathBuf, PathBuf, PathBuf) {
    (
        write(
            dir,
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        ),
        write(
            dir,
            "client.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        ),
        write(
            dir,
            "client.key",
            "-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----\n",
        ),
    )
}

#[test]
fn tls_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(&dir);
    let body = GOOD.replace(
        "tables = [",
        &format!(
            "ssl_mode = \"verify-full\"\nssl_root_cert_file = {:?}\nssl_cert_file = {:?}\nssl_key_file = {:?}\ntables = [",
            ca.display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    let path = write(&dir, "shop.toml", &body);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert_eq!(
        c.postgres.ssl,
        SslConfig {
            mode: SslMode::VerifyFull,
            root_cert_file: Some(ca),
            cert_file: Some(cert),
            key_file: Some(key),
        }
    );
    assert!(c.postgres.ssl.verifies_host());
    let shown = format!("{c:?}");
    assert!(!shown.contains("secret-key-bytes"), "{shown}");
}

#[test]
fn tls_problems_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, _) = tls_files(&dir);
    let rsa_key = write(
        &dir,
        "rsa.key",
        "-----BEGIN RSA PRIVATE KEY-----\nsecret-key-bytes\n-----END RSA PRIVATE KEY-----\n",
    );
    let missing = dir.path().join("missing-ca.pem");
    let body = GOOD.replace(
        "tables = [",
        &format!(
            "ssl_mode = \"verify_full\"\nssl_root_cert_file = {:?}\nssl_key_file = {:?}\ntables = [",
            missing.display().to_string(),
            rsa_key.display().to_string()
        ),
    );
    let path = write(&dir, "bad.toml", &body);
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    let file = path.display();
    let (missing, rsa_key) = (missing.display(), rsa_key.display());
    assert_eq!(
        err.problems,
        vec![
            format!(
                "{file}: postgres.ssl_mode: must be one of disable, prefer, require, verify-ca, verify-full, got \"verify_full\""
            ),
            format!(
                "{file}: postgres.ssl_root_cert_file: cannot read {missing}: No such file or directory (os error 2)"
            ),
            format!(
                "{file}: postgres.ssl_key_file: {rsa_key} is not a PKCS#8 key (BEGIN PRIVATE KEY): convert it with openssl pkcs8 -topk8 -nocrypt -in {rsa_key} -out <new file>"
            ),
            format!(
                "{file}: postgres.ssl_key_file: needs ssl_cert_file too: set both (client certificate and its key) or neither"
            ),
        ]
    );
    assert!(!err.to_string().contains("secret-key-bytes"));

    // A certificate without its key, and TLS files with TLS turned off.
    let body = GOOD.replace(
        "tables = [",
        &format!(
            "ssl_mode = \"disable\"\nssl_cert_file = {:?}\ntables = [",
            cert.display().to_string()
        ),
    );
    let path = write(&dir, "bad2.toml", &body);
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    let file = path.display();
    assert_eq!(
        err.problems,
        vec![
            format!(
                "{file}: postgres.ssl_cert_file: needs ssl_key_file too: set both (client certificate and its key) or neither"
            ),
            format!(
                "{file}: postgres.ssl_cert_file: is set but ssl_mode is \"disable\": remove it, or choose another ssl_mode"
            ),
        ]
    );
}

#[test]
fn secrets_never_print() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shop.toml", GOOD);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "hunter2")])).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shop.toml", GOOD);
    let c = load_file_with_env(
        &path,
        env(&[
            ("PG_PASS", "x"),
            ("SIPHON_KAFKA__BOOTSTRAP_SERVERS", "broker:9093"),
            ("SIPHON_POSTGRES__PORT", "6543"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka.bootstrap_servers, "broker:9093");
    assert_eq!(c.postgres.port, 6543);
}

#[test]
fn reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let body = GOOD
        .replace("user = \"siphon\"", "usr = \"siphon\"")
        .replace(
            "topic_prefix = \"shop\"",
            "topic_prefix = \"shop\"\nbatch_max_events = 0",
        )
        .replace("http://127.0.0.1:8081", "127.0.0.1:8081");
    let path = write(&dir, "bad.toml", &body);
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    let file = path.display();
    assert_eq!(
        err.problems,
        vec![
            format!("{file}: postgres.user: is required"),
            format!(
                "{file}: postgres.usr: unknown key; did you mean \"user\"? (known keys: host, port, database, user, password_env, password_file, slot, publication, create_slot, create_publication, tables, connect_timeout_ms, status_interval_ms, ssl_mode, ssl_root_cert_file, ssl_cert_file, ssl_key_file, publish_via_partition_root, insert_only_tables, failover_slot)"
            ),
            format!("{file}: kafka.batch_max_events: must be >= 1, got 0"),
            format!(
                "{file}: registry.url: must start with http:// or https://, got \"127.0.0.1:8081\""
            ),
        ]
    );
}

#[test]
fn wrong_types_and_plain_passwords_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let body = GOOD
        .replace(
            "password_env = \"PG_PASS\"",
            "password = \"hunter2\"\nport = \"five\"",
        )
        .replace(
            "\"compression.type\" = \"zstd\"",
            "\"transactional.id\" = \"mine\"",
        );
    let path = write(&dir, "bad.toml", &body);
    let err = load_file_with_env(&path, env(&[])).unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("postgres.password: secrets are not read from connector files"),
        "{text}"
    );
    assert!(
        text.contains("postgres.port: invalid type: string \"five\", expected u16"),
        "{text}"
    );
    assert!(
        text.contains("kafka.properties.transactional.id: is set by siphon itself"),
        "{text}"
    );
}

#[test]
fn missing_env_var_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shop.toml", GOOD);
    let err = load_file_with_env(&path, env(&[])).unwrap_err();
    assert_eq!(
        err.problems,
        vec![format!(
            "{}: postgres.password_env: environment variable PG_PASS is not set",
            path.display()
        )]
    );
}

#[test]
fn duplicate_names_across_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir,
        "a.toml",
        &GOOD.replace("password_env = \"PG_PASS\"", ""),
    );
    write(
        &dir,
        "b.toml",
        &GOOD.replace("password_env = \"PG_PASS\"", ""),
    );
    let err = load_paths(&[dir.path().to_owned()]).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(err.problems[0].contains("connector name \"shop\" is also used by"));
}

/// The example files users copy must always load.
#[test]
fn every_example_connector_file_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
    let mut env_vars = env(&[]);
    // Example files name their secrets' variables; supply each one.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("password_env = ") {
                env_vars.push((rest.trim_matches('"').to_owned(), "example".to_owned()));
            }
        }
    }
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load_file_with_env(&path, env_vars.clone())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert!(loaded >= 1, "no connector files in {}", dir.display());
}

#[test]
fn kafka_secrets_come_from_env_or_files_and_never_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write(&dir, "key-pass", "from-a-file\n");
    let body = GOOD.replace(
        "[registry]",
        &format!(
            "[kafka.properties_env]\n\"sasl.password\" = \"KAFKA_PASS\"\n[kafka.properties_file]\n\"ssl.key.password\" = {:?}\n[registry]",
            secret_file.display().to_string()
        ),
    );
    let path = write(&dir, "shop.toml", &body);
    let c = load_file_with_env(
        &path,
        env(&[("PG_PASS", "x"), ("KAFKA_PASS", "kafka-secret")]),
    )
    .unwrap();
    assert_eq!(
        c.kafka.secret_properties["sasl.password"].expose(),
        "kafka-secret"
    );
    assert_eq!(
        c.kafka.secret_properties["ssl.key.password"].expose(),
        "from-a-file"
    );
    assert!(!format!("{c:?}").contains("kafka-secret"));

    let plain = GOOD.replace(
        "\"compression.type\" = \"zstd\"",
        "\"sasl.password\" = \"in-the-file\"",
    );
    let path = write(&dir, "plain.toml", &plain);
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    assert_eq!(
        err.problems,
        vec![format!(
            "{}: kafka.properties.sasl.password: secrets are not read from connector files; name an environment variable in [kafka.properties_env] (\"sasl.password\" = \"VARIABLE\") or a file in [kafka.properties_file]",
            path.display()
        )]
    );
}

#[test]
fn heartbeat_is_off_by_default_and_needs_both_keys() {
    let dir = tempfile::tempdir().unwrap();
    let vars = env(&[("PG_PASS", "x")]);
    let path = write(&dir, "shop.toml", GOOD);
    let c = load_file_with_env(&path, vars.clone()).unwrap();
    assert_eq!(c.heartbeat.interval_ms, 0);
    assert_eq!(c.heartbeat.action_query, None);

    let on = format!(
        "{GOOD}[heartbeat]\ninterval_ms = 5000\naction_query = \"UPDATE siphon_heartbeat SET ts = now()\"\n"
    );
    let path = write(&dir, "on.toml", &on);
    let c = load_file_with_env(&path, vars.clone()).unwrap();
    assert_eq!(c.heartbeat.interval_ms, 5000);
    assert_eq!(
        c.heartbeat.action_query.as_deref(),
        Some("UPDATE siphon_heartbeat SET ts = now()")
    );

    let cases = [
        (
            "[heartbeat]\ninterval_ms = 5000\n",
            "heartbeat.action_query: is required when heartbeat.interval_ms > 0 (unless heartbeat.emit_records = true): the SQL to run at each interval, e.g. \"UPDATE siphon_heartbeat SET ts = now()\"",
        ),
        (
            "[heartbeat]\naction_query = \"SELECT 1\"\n",
            "heartbeat.action_query: has no effect while heartbeat.interval_ms is 0 (off); set interval_ms (e.g. 10000) or remove action_query",
        ),
        (
            "[heartbeat]\ninterval_ms = 10\naction_query = \"SELECT 1\"\n",
            "heartbeat.interval_ms: must be >= 100, got 10",
        ),
        (
            "[heartbeat]\ninterval_msec = 10\n",
            "heartbeat.interval_msec: unknown key; did you mean \"interval_ms\"? (known keys: interval_ms, action_query, emit_records, topic)",
        ),
        (
            "[heartbeat]\nemit_records = true\n",
            "heartbeat.emit_records: has no effect while heartbeat.interval_ms is 0 (off); set interval_ms (e.g. 10000) or remove emit_records",
        ),
        (
            "[heartbeat]\ninterval_ms = 1000\naction_query = \"SELECT 1\"\ntopic = \"hb\"\n",
            "heartbeat.topic: has no effect while heartbeat.emit_records is false; set emit_records = true or remove topic",
        ),
        (
            "[transactions]\ntopic = \"tx\"\n",
            "transactions.topic: has no effect while transactions.enabled is false; set enabled = true or remove topic",
        ),
        (
            "[dead_letter]\ntopic = \"\"\n",
            "dead_letter.topic: must not be empty: name a topic (e.g. \"siphon.dead-letter\") or remove the key to stop on rows that cannot be written",
        ),
    ];
    for (section, problem) in cases {
        let path = write(&dir, "bad.toml", &format!("{GOOD}{section}"));
        let err = load_file_with_env(&path, vars.clone()).unwrap_err();
        let file = path.display();
        assert_eq!(err.problems, vec![format!("{file}: {problem}")]);
    }
}

#[test]
fn schemas_section_and_partition_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shop.toml", GOOD);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert_eq!(c.schemas, SchemasConfig::default());
    assert_eq!(c.schemas.compatibility, Compatibility::Backward);
    assert_eq!(c.schemas.on_incompatible, IncompatiblePolicy::Stop);
    assert!(c.postgres.publish_via_partition_root);
    assert!(c.postgres.insert_only_tables.is_empty());

    let body = GOOD.replace(
        "tables = [\"public.orders\"]",
        "tables = [\"public.orders\", \"public.log\"]\npublish_via_partition_root = false\ninsert_only_tables = [\"public.log\"]",
    ) + "[schemas]\ncompatibility = \"full_transitive\"\non_incompatible = \"register\"\n[schemas.table_compatibility]\n\"public.log\" = \"NONE\"\n";
    let path = write(&dir, "set.toml", &body);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert!(!c.postgres.publish_via_partition_root);
    assert_eq!(c.postgres.insert_only_tables[0].to_string(), "public.log");
    assert_eq!(c.schemas.compatibility, Compatibility::FullTransitive);
    assert_eq!(c.schemas.on_incompatible, IncompatiblePolicy::Register);
    assert_eq!(
        c.schemas.compatibility_of("public", "log"),
        Compatibility::None
    );
    assert_eq!(
        c.schemas.compatibility_of("public", "orders"),
        Compatibility::FullTransitive
    );

    let body = GOOD.replace(
        "tables = [\"public.orders\"]",
        "tables = [\"public.orders\"]\ninsert_only_tables = [\"public.other\", \"bad\"]",
    ) + "[schemas]\ncompatibility = \"sideways\"\non_incompatible = \"skip\"\nlevel = 1\n[schemas.table_compatibility]\n\"public.other\" = \"FULL\"\n\"public.orders\" = \"LOOSE\"\n";
    let path = write(&dir, "bad.toml", &body);
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    let f = path.display();
    assert_eq!(
        err.problems,
        vec![
            format!(
                "{f}: postgres.insert_only_tables: \"public.other\" is not one of postgres.tables: add it there or remove it here"
            ),
            format!(
                "{f}: postgres.insert_only_tables: \"bad\" is not of the form \"schema.table\""
            ),
            format!(
                "{f}: schemas.compatibility: must be one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, got \"sideways\""
            ),
            format!(
                "{f}: schemas.table_compatibility.public.orders: must be one of NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, got \"LOOSE\""
            ),
            format!(
                "{f}: schemas.table_compatibility.public.other: is not one of postgres.tables: add the table there or remove this line"
            ),
            format!("{f}: schemas.on_incompatible: must be \"stop\" or \"register\", got \"skip\""),
            format!(
                "{f}: schemas.level: unknown key (known keys: compatibility, table_compatibility, on_incompatible)"
            ),
        ]
    );
}

#[test]
fn the_snapshot_section_has_defaults_and_names_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shop.toml", GOOD);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert_eq!(c.snapshot.mode, SnapshotMode::Initial);
    assert_eq!(c.snapshot.max_threads, 4);
    assert_eq!(c.snapshot.chunk_pages, 256);
    assert_eq!(c.snapshot.signal_table, None);

    let body = format!(
        "{GOOD}[snapshot]\nmode = \"when_needed\"\nmax_threads = 2\nchunk_pages = 16\nsignal_table = \"ops.signals\"\n"
    );
    let path = write(&dir, "ok.toml", &body);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert_eq!(c.snapshot.mode, SnapshotMode::WhenNeeded);
    assert_eq!(c.snapshot.max_threads, 2);
    assert_eq!(c.snapshot.chunk_pages, 16);
    assert_eq!(
        c.snapshot.signal_table,
        Some(TableName {
            schema: "ops".into(),
            table: "signals".into()
        })
    );

    let body = format!(
        "{GOOD}[snapshot]\nmode = \"sometimes\"\nmax_threads = 0\nsignal_table = \"signals\"\nchunk_page = 3\n"
    );
    let path = write(&dir, "bad.toml", &body);
    let file = path.display().to_string();
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    assert_eq!(
        err.problems,
        vec![
            format!(
                "{file}: snapshot.mode: \"sometimes\" is not a snapshot mode: use one of initial, initial_only, no_data, always, when_needed"
            ),
            format!("{file}: snapshot.max_threads: must be >= 1, got 0"),
            format!(
                "{file}: snapshot.signal_table: \"signals\" is not of the form \"schema.table\""
            ),
            format!(
                "{file}: snapshot.chunk_page: unknown key; did you mean \"chunk_pages\"? (known keys: mode, max_threads, chunk_pages, chunk_max_bytes, signal_table)"
            ),
        ]
    );
}

#[test]
fn message_max_bytes_must_be_what_librdkafka_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let good = GOOD.replace(
        "\"linger.ms\" = 5",
        "\"linger.ms\" = 5\n\"message.max.bytes\" = 200000",
    );
    let path = write(&dir, "shop.toml", &good);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert_eq!(crate::kafka::message_max_bytes(&c), 200_000);
    assert_eq!(crate::kafka::record_limit_bytes(&c), 199_903);
    let default = write(&dir, "plain.toml", GOOD);
    let c = load_file_with_env(&default, env(&[("PG_PASS", "x")])).unwrap();
    assert_eq!(crate::kafka::message_max_bytes(&c), 1_000_000);

    let bad = GOOD.replace("\"linger.ms\" = 5", "\"message.max.bytes\" = \"1MB\"");
    let path = write(&dir, "bad.toml", &bad);
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    assert_eq!(
        err.problems,
        vec![format!(
            "{}: kafka.properties.message.max.bytes: must be a whole number of bytes from 1000 to 1000000000, got \"1MB\"",
            path.display()
        )]
    );
}

#[test]
fn messages_and_outbox_are_off_by_default_and_name_their_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shop.toml", GOOD);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert!(!c.messages.enabled);
    assert_eq!(c.messages.topic_for("shop"), "shop.message");
    assert!(!c.outbox.enabled());

    let good = format!(
        "{GOOD}\n[messages]\nenabled = true\nprefixes = [\"audit\"]\n\n[outbox]\ntable = \"public.orders\"\ntopic = \"{{prefix}}.events.{{aggregatetype}}\"\nmessage_prefix = \"outbox\"\n"
    );
    let path = write(&dir, "good.toml", &good);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert!(c.messages.publishes("audit") && !c.messages.publishes("other"));
    assert!(c.outbox.is_table("public", "orders"));
    assert_eq!(
        c.outbox.topic_for("shop", "order").as_deref(),
        Ok("shop.events.order")
    );
    assert!(c.outbox.topic_for("shop", "order lines").is_err());

    let bad = format!(
        "{GOOD}\n[messages]\nprefixes = [\"\"]\ntopic = \"a topic\"\n\n[outbox]\ntable = \"public.outbox\"\npayload_column = \"\"\npublish_tables = true\n"
    );
    let path = write(&dir, "bad.toml", &bad);
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    let file = path.display();
    assert_eq!(
        err.problems,
        vec![
            format!(
                "{file}: messages.topic: \"a topic\" is not a topic name: letters, digits, '.', '_' and '-', with the placeholders {{prefix}}"
            ),
            format!(
                "{file}: messages.prefixes: holds an empty prefix: list the prefixes to publish, or leave the list empty for all"
            ),
            format!(
                "{file}: outbox.table: public.outbox is not one of postgres.tables: add it there (siphon must capture it)"
            ),
            format!("{file}: outbox.payload_column: must name a column of the outbox table"),
            format!(
                "{file}: outbox.publish_tables: unknown key; did you mean \"publish_table\"? (known keys: table, id_column, aggregate_type_column, aggregate_id_column, type_column, payload_column, topic, publish_table, message_prefix, expand_payload)"
            ),
        ]
    );
}

#[test]
fn unwrap_is_off_by_default_and_names_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "shop.toml", GOOD);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert!(!c.unwrap.applies_to("public", "orders"));

    let good = format!(
        "{GOOD}\n[unwrap]\nenabled = true\ntables = [\"public\\\\.ord.*\"]\ndelete_handling = \"rewrite\"\nadd_fields = [\"op\", \"source.ts_ms\"]\nadd_headers = [\"db\"]\n"
    );
    let path = write(&dir, "good.toml", &good);
    let c = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap();
    assert!(c.unwrap.applies_to("public", "orders"));
    assert!(!c.unwrap.applies_to("public", "customers"));
    assert!(!c.unwrap.applies_to("other", "orders"));
    assert!(c.unwrap.delete_handling.rewrites() && !c.unwrap.delete_handling.tombstone());
    let fields: Vec<&str> = c.unwrap.add_fields.iter().map(|a| a.name()).collect();
    assert_eq!(fields, ["__op", "__source_ts_ms"]);

    let bad = format!(
        "{GOOD}\n[unwrap]\ntables = [\"(\"]\ndelete_handling = \"none\"\nadd_fields = [\"op\", \"op\", \"xmin\"]\n"
    );
    let path = write(&dir, "bad.toml", &bad);
    let err = load_file_with_env(&path, env(&[("PG_PASS", "x")])).unwrap_err();
    let file = path.display();
    assert_eq!(err.problems.len(), 5, "{:#?}", err.problems);
    assert!(err.problems[0].starts_with(&format!(
        "{file}: unwrap.tables: \"(\" is not a valid regex"
    )));
    assert_eq!(
        err.problems[1],
        format!(
            "{file}: unwrap.delete_handling: \"none\" is not a delete handling: use one of \"drop\", \"tombstone\", \"rewrite\", \"rewrite-with-tombstone\""
        )
    );
    assert_eq!(
        err.problems[2],
        format!("{file}: unwrap.add_fields: lists \"op\" twice")
    );
    assert!(err.problems[3].starts_with(&format!(
        "{file}: unwrap.add_fields: \"xmin\" is not a fact siphon can add: use \"op\""
    )));
    assert_eq!(
        err.problems[4],
        format!(
            "{file}: unwrap.enabled: is false, so add_fields and add_headers have no effect: set enabled = true or remove them"
        )
    );
}
