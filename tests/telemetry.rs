//! Operations: health endpoints follow the connectors, metrics move with
//! traffic, and secrets and row values never reach logs or metrics.

mod support;

use support::bed::{Bed, WAIT};
use support::kafka::read_committed;
use support::poll_until;
use support::postgres::PgOptions;
use support::siphon::Siphon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_connector_and_metrics_move_with_traffic() {
    let mut bed = Bed::start("tel").await;
    bed.pg
        .psql("tel", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let file = bed.connector("tel", "tel", &["public.t"], "");
    let s = bed.siphon(&file);
    bed.wait_ready_status(&s, 200).await;
    let (status, body) = s.http_get("/health/ready").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(r#""tel":"streaming""#), "{body}");
    assert_eq!(s.http_get("/health/live").await.map(|r| r.0), Some(200));

    let events = r#"siphon_events_total{connector="tel",op="c",table="public.t"}"#;
    let committed = r#"siphon_kafka_transactions_total{connector="tel",outcome="committed"}"#;
    bed.pg.psql(
        "tel",
        "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g",
    );
    poll_until(WAIT, "10 events counted", async || {
        (s.metric(events).await == Some(10.0)).then_some(())
    })
    .await;
    let commits_before = s.metric(committed).await.expect("commits counted");
    assert!(commits_before >= 1.0);
    bed.pg.psql("tel", "UPDATE t SET v = 'y' WHERE id <= 3");
    let updates = r#"siphon_events_total{connector="tel",op="u",table="public.t"}"#;
    poll_until(WAIT, "3 updates counted", async || {
        (s.metric(updates).await == Some(3.0)).then_some(())
    })
    .await;
    assert!(s.metric(committed).await.unwrap() > commits_before);
    let (_, metrics) = s.http_get("/metrics").await.unwrap();
    for name in [
        "siphon_kafka_commit_duration_seconds_count{connector=\"tel\"}",
        "siphon_replication_lag_bytes{connector=\"tel\"}",
        "siphon_replication_lag_milliseconds{connector=\"tel\"}",
        "siphon_registry_requests_total{connector=\"tel\",outcome=\"registered\"}",
        "siphon_connector_state{connector=\"tel\",state=\"streaming\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    // PostgreSQL goes away: the connector retries and is not ready ...
    bed.pg.stop("fast");
    bed.wait_ready_status(&s, 503).await;
    // Each restart attempt passes through "starting" (and fails again), so
    // the state alternates; it must say "retrying" between attempts.
    poll_until(WAIT, "readiness to say retrying", async || {
        let (status, body) = s.http_get("/health/ready").await?;
        (status == 503 && body.contains(r#""tel":"retrying""#)).then_some(())
    })
    .await;
    assert_eq!(s.http_get("/health/live").await.map(|r| r.0), Some(200));
    let transient = r#"siphon_errors_total{class="transient",connector="tel"}"#;
    assert!(s.metric(transient).await.unwrap_or(0.0) >= 1.0);

    // ... and ready again once it is back, streaming what happened meanwhile.
    bed.pg.start_again();
    bed.wait_ready_status(&s, 200).await;
    bed.pg.psql("tel", "INSERT INTO t VALUES (11, 'z')");
    poll_until(WAIT, "11 inserts counted", async || {
        (s.metric(events).await == Some(11.0)).then_some(())
    })
    .await;
    assert_eq!(
        read_committed(&bed.broker.bootstrap, "tel.public.t").len(),
        14
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_secret_and_row_values_never_reach_logs_or_metrics() {
    const SECRET: &str = "Planted-Secret-7f3a9c";
    const ROW_VALUE: &str = "Planted-Row-Value-51d2e8";
    let scram = PgOptions {
        auth_method: "scram-sha-256".into(),
        password: Some(SECRET.into()),
        ..PgOptions::default()
    };
    let bed = Bed::start_with(scram, "sec").await;
    bed.pg.psql(
        "sec",
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)",
    );
    let file = bed.connector("sec", "sec", &["public.t"], "");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "[postgres]\n",
        "[postgres]\npassword_env = \"SEC_PG_PASSWORD\"\n",
    );
    std::fs::write(&file, text).unwrap();
    // Everything at debug level, dependencies included.
    let env = [("SEC_PG_PASSWORD", SECRET), ("RUST_LOG", "debug")];
    let mut s = bed.siphon_with_env(&file, &env);
    bed.wait_ready_status(&s, 200).await;
    bed.pg.psql(
        "sec",
        &format!("INSERT INTO t VALUES (1, '{ROW_VALUE}'); UPDATE t SET v = '{ROW_VALUE}!' WHERE id = 1; DELETE FROM t;"),
    );
    bed.wait_records("sec.public.t", 4, &s).await;
    let (_, metrics) = s.http_get("/metrics").await.unwrap();
    let (_, ready) = s.http_get("/health/ready").await.unwrap();
    assert!(s.stop().success());
    let log = s.log();
    assert!(
        log.contains("streaming"),
        "the log is not what the test thinks:\n{log}"
    );
    // A password over an unverified connection (ssl_mode prefer, the
    // default) is warned about, once, at start.
    assert_eq!(
        log.matches("does not verify the server's certificate")
            .count(),
        1,
        "{log}"
    );
    for (what, text) in [("log", &log), ("metrics", &metrics), ("readiness", &ready)] {
        assert!(!text.contains(SECRET), "the secret leaked into the {what}");
        assert!(
            !text.contains(ROW_VALUE),
            "a row value leaked into the {what}"
        );
    }
    // A failing login names the problem, not the password.
    let wrong = [
        ("SEC_PG_PASSWORD", "Wrong-Planted-Secret-2b"),
        ("RUST_LOG", "debug"),
    ];
    let log = bed.run_until_fatal(&file, &wrong);
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(
        !log.contains("Wrong-Planted-Secret-2b") && !log.contains(SECRET),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_connector_does_not_stop_another_in_the_same_process() {
    let bed = Bed::start("multi").await;
    bed.pg.psql(
        "multi",
        "CREATE TABLE good (id int PRIMARY KEY); CREATE TABLE bad (v text);",
    );
    let connectors = bed.dir.path().join("connectors");
    std::fs::create_dir(&connectors).unwrap();
    for (name, table) in [("good", "public.good"), ("bad", "public.bad")] {
        let file = bed.connector(name, "multi", &[table], "");
        std::fs::rename(&file, connectors.join(file.file_name().unwrap())).unwrap();
    }
    let s = Siphon::start(
        &connectors,
        bed.dir.path(),
        &[("SIPHON_LOG_FORMAT", "json")],
    );
    poll_until(WAIT, "good streaming, bad failed", async || {
        let (status, body) = s.http_get("/health/ready").await?;
        (status == 503
            && body.contains(r#""good":"streaming""#)
            && body.contains(r#""bad":"failed""#))
        .then_some(())
    })
    .await;
    bed.pg.psql("multi", "INSERT INTO good VALUES (1), (2)");
    bed.wait_records("good.public.good", 2, &s).await;
    assert!(
        s.pid() > 0 && s.http_get("/health/live").await.is_some(),
        "the process must keep running"
    );
    let log = s.log();
    assert!(log.contains("table public.bad has no primary key"), "{log}");
    // JSON logs: one object per line, fields first-class.
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines >= 3, "{log}");
}

/// POST on siphon's health listener: (status, body); None when it does not answer.
async fn health_post(s: &Siphon, path: &str, body: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}{path}", s.http_port))
        .body(body.to_owned())
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_endpoint_is_off_by_default_and_needs_its_token_on_its_own_listener() {
    use std::io::{Read, Write};
    use support::siphon::CONTROL_TOKEN;

    let bed = Bed::start("ctl").await;
    bed.pg.psql("ctl", "CREATE TABLE t (id int PRIMARY KEY)");
    let file = bed.connector("ctl", "ctl", &["public.t"], "");
    let pause = r#"{"action":"pause"}"#;

    // Off by default: the health listener has no such route.
    let mut s = bed.siphon(&file);
    bed.wait_ready_status(&s, 200).await;
    let (status, body) = health_post(&s, "/connectors/ctl/snapshot", pause)
        .await
        .expect("the health listener answers");
    assert_eq!(status, 404, "{body}");
    assert!(s.stop().success());

    // Enabled without a token: siphon refuses to start.
    let mut s = bed.siphon_with_env(&file, &[("SIPHON_CONTROL_ADDR", "127.0.0.1:0")]);
    let status = s.wait(WAIT).expect("siphon exits");
    assert_eq!(status.code(), Some(2), "{}", s.log());
    assert!(s.log().contains("SIPHON_CONTROL_TOKEN"), "{}", s.log());

    // Enabled: its own listener, bearer token required.
    let mut s = bed.siphon_with_control(&file);
    bed.wait_ready_status(&s, 200).await;
    let path = "/connectors/ctl/snapshot";
    let (status, body) = s.control_post_as(path, pause, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = s
        .control_post_as(path, pause, Some("test-control-token-0123456788"))
        .await;
    assert_eq!(status, 401);
    let (status, _) = s.control_post_as(path, pause, Some("")).await;
    assert_eq!(status, 401);
    let (status, body) = s.control_post(path, pause).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = s.control_post(path, r#"{"action":"resume"}"#).await;
    assert_eq!(status, 202, "{body}");
    // Still not on the health listener, and the control listener serves
    // nothing else.
    let (status, _) = health_post(&s, path, pause).await.unwrap();
    assert_eq!(status, 404);
    let (status, _) = s.control_post("/metrics", "").await;
    assert_eq!(status, 404);

    // Bounded: a body over 64 KiB is refused unread ...
    let big = format!(
        r#"{{"action":"execute","tables":["public.t"],"pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, _) = s.control_post(path, &big).await;
    assert_eq!(status, 413);
    // ... and a client that never finishes its headers is disconnected.
    let port = s.control_port.unwrap();
    let slow = tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        c.write_all(b"POST /connectors/ctl/snapshot HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        // The server closes it (or answers 408 and closes it).
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        started.elapsed()
    });
    let held = slow.await.unwrap();
    assert!(
        held < std::time::Duration::from_secs(30),
        "a half-sent request held its connection for {held:?}"
    );

    assert!(s.stop().success());
    assert!(
        !s.log().contains(CONTROL_TOKEN),
        "the token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_connector_goes_not_ready_and_restarts() {
    let bed = Bed::start("pan").await;
    bed.pg.psql("pan", "CREATE TABLE t (id int PRIMARY KEY)");
    let file = bed.connector("pan", "pan", &["public.t"], "");
    // The reader panics on the first captured change, once.
    let s = bed.siphon_with_env(&file, &[("FAILPOINTS", "reader_panics=1*return")]);
    bed.wait_ready_status(&s, 200).await;
    // Watch readiness closely from before the panic.
    let port = s.http_port;
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = std::sync::Arc::clone(&watching);
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{port}/health/ready");
            let mut seen = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = client.get(&url).send().await {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    if seen.last().map(|(s, _)| *s) != Some(status) {
                        seen.push((status, body));
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            seen
        })
    };
    bed.pg.psql("pan", "INSERT INTO t VALUES (1)");
    // It restarts from its stored offset and streams again: the change
    // that met the panic arrives, and so do later ones.
    poll_until(
        WAIT,
        "the connector to restart after its panic",
        async || s.log().contains("panicked").then_some(()),
    )
    .await;
    bed.wait_ready_status(&s, 200).await;
    bed.pg.psql("pan", "INSERT INTO t VALUES (2)");
    bed.wait_records("pan.public.t", 2, &s).await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.await.unwrap();
    assert!(
        seen.iter().any(|(status, _)| *status == 503),
        "readiness never left 200 after the panic: {seen:?}\n{}",
        s.log()
    );
    assert_eq!(seen.last().map(|(s, _)| *s), Some(200), "{seen:?}");
    let transient = r#"siphon_errors_total{class="transient",connector="pan"}"#;
    assert!(s.metric(transient).await.unwrap_or(0.0) >= 1.0);
    assert!(
        s.log()
            .contains("connector pan panicked: fail point reader_panics"),
        "{}",
        s.log()
    );
}
