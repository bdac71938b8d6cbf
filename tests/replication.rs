//! Integration tests of the replication-protocol client against private
//! PostgreSQL 15 clusters (see `support::postgres`), plus a scripted fake
//! server for the cancel-safety of `ReplicationStream::next`.

mod support;

use std::future::Future;
use std::time::Duration;

use siphon::config::{SslConfig, SslMode};
use siphon::event::Lsn;
use siphon::postgres::replication::{
    ReplicationClient, ReplicationConfig, ReplicationError, ReplicationMessage, ReplicationStream,
    SnapshotAction, StartOptions,
};
use support::postgres::{PgCluster, PgOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const APPLICATION_NAME: &str = "siphon-replication-test";

fn config(pg: &PgCluster, password: Option<&str>) -> ReplicationConfig {
    ReplicationConfig {
        host: pg.host().to_owned(),
        port: pg.port(),
        user: pg.user().to_owned(),
        password: password.map(str::to_owned),
        dbname: "postgres".to_owned(),
        application_name: APPLICATION_NAME.to_owned(),
        connect_timeout_ms: 10_000,
        // The test clusters have no TLS: prefer falls back to plain.
        ssl: SslConfig::default(),
    }
}

async fn connect(pg: &PgCluster) -> ReplicationClient {
    ReplicationClient::connect(&config(pg, pg.password()))
        .await
        .expect("replication connect")
}

/// Awaits `fut`, failing the test if it takes longer than `secs`.
async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// Reads until the next XLogData message, skipping keepalives.
async fn next_xlog_data(stream: &mut ReplicationStream) -> (Lsn, bytes::Bytes) {
    loop {
        match stream.next().await.expect("replication stream") {
            Some(ReplicationMessage::XLogData {
                wal_start, data, ..
            }) => return (wal_start, data),
            Some(ReplicationMessage::PrimaryKeepalive { .. }) => {}
            None => panic!("replication stream ended"),
        }
    }
}

/// Reads until the next keepalive, skipping data.
async fn next_keepalive(stream: &mut ReplicationStream) -> (Lsn, i64, bool) {
    loop {
        match stream.next().await.expect("replication stream") {
            Some(ReplicationMessage::PrimaryKeepalive {
                wal_end,
                server_time_us,
                reply_requested,
            }) => return (wal_end, server_time_us, reply_requested),
            Some(ReplicationMessage::XLogData { .. }) => {}
            None => panic!("replication stream ended"),
        }
    }
}

fn publications(names: &[&str]) -> StartOptions {
    StartOptions {
        publications: names.iter().map(|n| n.to_string()).collect(),
        messages: false,
    }
}

/// `end_lsn` of a pgoutput Commit message: tag, flags, commit LSN, end LSN.
fn commit_end_lsn(commit: &[u8]) -> Lsn {
    assert_eq!(commit[0], b'C');
    Lsn(u64::from_be_bytes(commit[10..18].try_into().unwrap()))
}

async fn confirmed_flush_lsn(db: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
    let row = db
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("query pg_replication_slots");
    row.get::<_, Option<String>>(0)
        .map(|text| text.parse().expect("pg_lsn text"))
}

fn assert_server_error(err: &ReplicationError, sqlstate: &str) {
    assert!(
        matches!(err, ReplicationError::Server { .. }),
        "expected a server error {sqlstate}, got {err:?}"
    );
    assert_eq!(err.sqlstate(), Some(sqlstate), "{err}");
}

// --- connection and authentication -----------------------------------------

#[tokio::test]
async fn trust_connection_identifies_the_system() {
    let pg = PgCluster::start();
    let mut client = connect(&pg).await;

    let identity = client.identify_system().await.expect("IDENTIFY_SYSTEM");
    let expected = pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    assert_eq!(identity.system_id, expected);
    assert_eq!(identity.timeline, 1);
    assert!(identity.xlogpos > Lsn::ZERO);
    assert_eq!(identity.dbname.as_deref(), Some("postgres"));
    assert!(client.backend_pid().is_some());
}

#[tokio::test]
async fn session_settings_make_pgoutput_text_stable() {
    let pg = PgCluster::start();
    // Role settings that would change the text format must not win over
    // the startup packet.
    pg.psql(
        "postgres",
        "ALTER ROLE postgres SET DateStyle = 'German, DMY';\n\
         ALTER ROLE postgres SET TimeZone = 'Europe/Berlin';\n\
         ALTER ROLE postgres SET bytea_output = 'escape';",
    );
    let mut client = connect(&pg).await;
    assert_eq!(client.parameter("TimeZone"), Some("UTC"));
    assert_eq!(client.parameter("IntervalStyle"), Some("iso_8601"));

    let show = |rows: Vec<Vec<Option<String>>>| rows[0][0].clone().unwrap();
    for (setting, expected) in [
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
        ("client_encoding", "UTF8"),
    ] {
        let rows = client
            .simple_query(&format!("SHOW {setting}"))
            .await
            .expect("SHOW");
        assert_eq!(show(rows), expected, "{setting}");
    }
    let rows = client
        .simple_query("SELECT timestamptz '2024-05-06 07:08:09+02', interval '1 day 2 hours', '\\x0102'::bytea")
        .await
        .expect("SELECT");
    assert_eq!(
        rows,
        vec![vec![
            Some("2024-05-06 05:08:09+00".to_owned()),
            Some("P1DT2H".to_owned()),
            Some("\\x0102".to_owned()),
        ]]
    );
}

#[tokio::test]
async fn simple_query_returns_rows_and_recovers_from_errors() {
    let pg = PgCluster::start();
    let mut client = connect(&pg).await;

    let rows = client
        .simple_query("SELECT 1, NULL::text; SELECT 'two', 'ünï'")
        .await
        .expect("two statements");
    assert_eq!(
        rows,
        vec![
            vec![Some("1".to_owned()), None],
            vec![Some("two".to_owned()), Some("ünï".to_owned())],
        ]
    );

    let err = client.simple_query("SELECT 1/0").await.unwrap_err();
    assert_server_error(&err, "22012");
    assert!(!err.is_transient());

    // The connection is still usable after a server error.
    let rows = client.simple_query("SELECT 42").await.expect("after error");
    assert_eq!(rows, vec![vec![Some("42".to_owned())]]);

    let err = client.simple_query("SELECT 'a\0b'").await.unwrap_err();
    assert!(
        matches!(err, ReplicationError::InvalidArgument(_)),
        "{err:?}"
    );
}

/// `asked` is how the client's error names the method the server asked for,
/// proving which exchange actually ran.
async fn connects_with_auth_method(method: &str, asked: &str) {
    let pg = PgCluster::start_with(PgOptions {
        auth_method: method.to_owned(),
        password: Some("s3cret 'pw'".to_owned()),
        ..PgOptions::default()
    });
    let mut client = connect(&pg).await;
    client.identify_system().await.expect("IDENTIFY_SYSTEM");

    let err = ReplicationClient::connect(&config(&pg, Some("wrong")))
        .await
        .unwrap_err();
    assert_server_error(&err, "28P01");
    assert!(!err.is_transient());
    let ReplicationError::Server { severity, .. } = &err else {
        unreachable!()
    };
    assert_eq!(severity, "FATAL");

    let err = ReplicationClient::connect(&config(&pg, None))
        .await
        .unwrap_err();
    assert!(matches!(err, ReplicationError::Auth(_)), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        format!(
            "authentication failed: server asks for {asked} authentication of user postgres \
             but no password is configured"
        )
    );
}

#[tokio::test]
async fn md5_authentication() {
    connects_with_auth_method("md5", "md5").await;
}

#[tokio::test]
async fn scram_sha_256_authentication() {
    connects_with_auth_method("scram-sha-256", "SCRAM-SHA-256").await;
}

#[tokio::test]
async fn cleartext_password_authentication() {
    connects_with_auth_method("password", "password").await;
}

#[tokio::test]
async fn connect_errors_are_transient() {
    // Nothing listens on a port we just released.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut cfg = ReplicationConfig {
        host: "127.0.0.1".to_owned(),
        port,
        user: "postgres".to_owned(),
        password: None,
        dbname: "postgres".to_owned(),
        application_name: APPLICATION_NAME.to_owned(),
        connect_timeout_ms: 5_000,
        ssl: SslConfig::default(),
    };
    let err = ReplicationClient::connect(&cfg).await.unwrap_err();
    assert!(matches!(err, ReplicationError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());

    // A server that accepts but never answers hits the connect timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    cfg.port = silent.local_addr().unwrap().port();
    cfg.connect_timeout_ms = 200;
    let holder = tokio::spawn(async move {
        let (_socket, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let err = within(10, "connect timeout", ReplicationClient::connect(&cfg))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ReplicationError::ConnectTimeout {
                timeout_ms: 200,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    holder.abort();
}

// --- slots ------------------------------------------------------------------

#[tokio::test]
async fn create_slot_reports_consistent_point_and_snapshot() {
    let pg = PgCluster::start();
    let mut client = connect(&pg).await;

    let slot = client
        .create_slot("siphon_plain", SnapshotAction::NoExport)
        .await
        .expect("create slot");
    assert_eq!(slot.slot_name, "siphon_plain");
    assert!(slot.consistent_point > Lsn::ZERO);
    assert_eq!(slot.snapshot_name, None);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT plugin || ',' || slot_type || ',' || database \
             FROM pg_replication_slots WHERE slot_name = 'siphon_plain'"
        ),
        "pgoutput,logical,postgres"
    );

    // A duplicate is a definite server error and leaves the connection usable.
    let err = client
        .create_slot("siphon_plain", SnapshotAction::NoExport)
        .await
        .unwrap_err();
    assert_server_error(&err, "42710");

    let exported = client
        .create_slot("siphon_exported", SnapshotAction::Export)
        .await
        .expect("create slot with exported snapshot");
    let snapshot = exported.snapshot_name.expect("snapshot name");
    // The exported snapshot is importable while this connection is idle.
    let db = pg.client("postgres").await;
    db.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'; COMMIT;"
    ))
    .await
    .expect("import exported snapshot");

    // PostgreSQL 16.13, 17.10 and 18.4 refuse USE_SNAPSHOT in a
    // read-write transaction (15.20 accepts it).
    client
        .simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .expect("BEGIN");
    let used = client
        .create_slot("siphon_used", SnapshotAction::Use)
        .await
        .expect("create slot using the snapshot");
    assert_eq!(used.snapshot_name, None);
    client.simple_query("COMMIT").await.expect("COMMIT");

    // Names are sent quoted; PostgreSQL's own validation still applies.
    // From PostgreSQL 16 on, the replication command scanner does not take
    // a doubled quote inside a quoted name: a syntax error there.
    let err = client
        .create_slot("Bad\"Name", SnapshotAction::NoExport)
        .await
        .unwrap_err();
    let refused = if support::postgres::server_major() >= 16 {
        "42601"
    } else {
        "42602"
    };
    assert_server_error(&err, refused);
}

#[tokio::test]
async fn create_slot_without_logical_wal_is_a_server_error() {
    let pg = PgCluster::start_with(PgOptions {
        wal_level: "replica".to_owned(),
        ..PgOptions::default()
    });
    let mut client = connect(&pg).await;
    let err = client
        .create_slot("siphon_nowal", SnapshotAction::NoExport)
        .await
        .unwrap_err();
    assert_server_error(&err, "55000");
    assert!(!err.is_transient());
    // Still usable.
    client.identify_system().await.expect("IDENTIFY_SYSTEM");
}

#[tokio::test]
async fn start_replication_on_a_missing_slot_is_a_server_error() {
    let pg = PgCluster::start();
    let client = connect(&pg).await;
    let err = client
        .start_replication("siphon_missing", Lsn::ZERO, &publications(&["p"]))
        .await
        .unwrap_err();
    assert_server_error(&err, "42704");

    let client = connect(&pg).await;
    let err = client
        .start_replication("siphon_missing", Lsn::ZERO, &publications(&[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReplicationError::InvalidArgument(_)),
        "{err:?}"
    );
}

// --- streaming --------------------------------------------------------------

#[tokio::test]
async fn streams_transactions_and_acknowledges_flushed_lsn() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE items (id int PRIMARY KEY, name text);\n\
         CREATE PUBLICATION \"all-tables\" FOR ALL TABLES;\n\
         CREATE PUBLICATION \"it's\" FOR TABLE items;",
    );
    let mut client = connect(&pg).await;
    let slot = client
        .create_slot("siphon_stream", SnapshotAction::NoExport)
        .await
        .expect("create slot");
    let options = StartOptions {
        publications: vec!["all-tables".to_owned(), "it's".to_owned()],
        messages: true,
    };
    let mut stream = client
        .start_replication("siphon_stream", slot.consistent_point, &options)
        .await
        .expect("start replication");

    let db = pg.client("postgres").await;
    let active: String = db
        .query_one(
            "SELECT application_name FROM pg_stat_replication WHERE pid = $1",
            &[&stream.backend_pid().unwrap()],
        )
        .await
        .expect("pg_stat_replication")
        .get(0);
    assert_eq!(active, APPLICATION_NAME);

    db.batch_execute(
        "BEGIN;\n\
         INSERT INTO items VALUES (1, 'one'), (2, 'two');\n\
         SELECT pg_logical_emit_message(true, 'siphon', 'hello');\n\
         COMMIT;",
    )
    .await
    .expect("insert");

    let mut tags = Vec::new();
    let commit = within(30, "the transaction", async {
        loop {
            let (_, data) = next_xlog_data(&mut stream).await;
            tags.push(char::from(data[0]));
            if data[0] == b'C' {
                return data;
            }
        }
    })
    .await;
    assert_eq!(tags, ['B', 'R', 'I', 'I', 'M', 'C']);
    let end = commit_end_lsn(&commit);
    assert!(end > slot.consistent_point);

    assert_ne!(confirmed_flush_lsn(&db, "siphon_stream").await, Some(end));
    stream
        .send_status_update(end, end, end, false)
        .await
        .expect("status update");
    support::poll_until(
        Duration::from_secs(10),
        "confirmed_flush_lsn to reach the acked LSN",
        async || (confirmed_flush_lsn(&db, "siphon_stream").await == Some(end)).then_some(()),
    )
    .await;

    within(10, "graceful close", stream.close())
        .await
        .expect("close");
    support::poll_until(
        Duration::from_secs(10),
        "the slot to become inactive",
        async || {
            let row = db
                .query_one(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = 'siphon_stream'",
                    &[],
                )
                .await
                .unwrap();
            (!row.get::<_, bool>(0)).then_some(())
        },
    )
    .await;

    // Resuming from the acked position does not resend the transaction.
    let client = connect(&pg).await;
    let mut stream = client
        .start_replication("siphon_stream", Lsn::ZERO, &options)
        .await
        .expect("restart replication");
    db.batch_execute("INSERT INTO items VALUES (3, 'three')")
        .await
        .unwrap();
    let mut tags = Vec::new();
    within(30, "the second transaction", async {
        loop {
            let (_, data) = next_xlog_data(&mut stream).await;
            tags.push(char::from(data[0]));
            if data[0] == b'C' {
                return;
            }
        }
    })
    .await;
    assert_eq!(tags, ['B', 'R', 'I', 'C']);
}

#[tokio::test]
async fn keepalives_arrive_and_reply_requests_are_answered() {
    let pg = PgCluster::start_with(PgOptions {
        extra_conf: vec!["wal_sender_timeout = '2s'".to_owned()],
        ..PgOptions::default()
    });
    pg.psql("postgres", "CREATE PUBLICATION pub FOR ALL TABLES;");
    let mut client = connect(&pg).await;
    let before = client.identify_system().await.unwrap().xlogpos;
    client
        .create_slot("siphon_keepalive", SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut stream = client
        .start_replication("siphon_keepalive", Lsn::ZERO, &publications(&["pub"]))
        .await
        .unwrap();

    // An idle client gets a keepalive that asks for a reply within
    // wal_sender_timeout / 2.
    let wal_end = within(15, "a keepalive requesting a reply", async {
        loop {
            let (wal_end, server_time_us, reply_requested) = next_keepalive(&mut stream).await;
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64;
            assert!(
                (now_us - server_time_us).abs() < 60_000_000,
                "server time {server_time_us} is not on the Unix epoch (now {now_us})"
            );
            if reply_requested {
                return wal_end;
            }
        }
    })
    .await;
    assert!(wal_end >= before);

    // Our reply keeps the connection alive, and asking the server for a
    // reply gets a keepalive back.
    stream
        .send_status_update(wal_end, wal_end, wal_end, true)
        .await
        .unwrap();
    within(5, "the requested keepalive", next_keepalive(&mut stream)).await;

    // Answer every request for 3 s (longer than wal_sender_timeout): the
    // server must not drop us.
    within(20, "3 s of answered keepalives", async {
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < until {
            let (wal_end, _, reply) = next_keepalive(&mut stream).await;
            if reply {
                stream
                    .send_status_update(wal_end, wal_end, wal_end, false)
                    .await
                    .unwrap();
            }
        }
    })
    .await;
    within(10, "graceful close", stream.close())
        .await
        .expect("close");
}

/// `next()` is dropped over and over while transactions with large rows
/// stream in; every message must still arrive intact and in order.
#[tokio::test]
async fn next_is_cancel_safe_against_a_real_server() {
    const TRANSACTIONS: i32 = 100;
    const ROWS_PER_TRANSACTION: i32 = 20;
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE blobs (id int PRIMARY KEY, body text);\n\
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let mut client = connect(&pg).await;
    client
        .create_slot("siphon_cancel", SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut stream = client
        .start_replication("siphon_cancel", Lsn::ZERO, &publications(&["pub"]))
        .await
        .unwrap();
    // Written while we read, so the reader both waits for data (and is
    // cancelled there) and finds frames split across socket reads.
    let db = pg.client("postgres").await;
    let writer = tokio::spawn(async move {
        for t in 0..TRANSACTIONS {
            let first = t * ROWS_PER_TRANSACTION + 1;
            db.batch_execute(&format!(
                "INSERT INTO blobs SELECT i, repeat(md5(i::text), 100) \
                 FROM generate_series({first}, {}) i",
                first + ROWS_PER_TRANSACTION - 1
            ))
            .await
            .unwrap();
        }
    });

    let mut next_id = 1;
    let mut commits = 0;
    let mut cancelled = 0u64;
    within(60, "all transactions", async {
        while commits < TRANSACTIONS {
            tokio::select! {
                message = stream.next() => match message.expect("stream") {
                    Some(ReplicationMessage::XLogData { data, .. }) => match data[0] {
                        b'I' => {
                            // Tag, relation oid, 'N', column count (2), then
                            // id as text: 't', length, digits.
                            assert_eq!(data[5], b'N');
                            let len = u32::from_be_bytes(data[9..13].try_into().unwrap()) as usize;
                            let id: i32 = std::str::from_utf8(&data[13..13 + len]).unwrap().parse().unwrap();
                            assert_eq!(id, next_id, "inserts out of order or lost");
                            assert!(data.len() > 3200, "insert of {} bytes", data.len());
                            next_id += 1;
                        }
                        b'C' => commits += 1,
                        b'B' | b'R' => {}
                        other => panic!("unexpected pgoutput message {:?}", char::from(other)),
                    },
                    Some(ReplicationMessage::PrimaryKeepalive { .. }) => {}
                    None => panic!("stream ended"),
                },
                _ = tokio::time::sleep(Duration::from_micros(100)) => cancelled += 1,
            }
        }
    })
    .await;
    writer.await.unwrap();
    assert_eq!(next_id, TRANSACTIONS * ROWS_PER_TRANSACTION + 1);
    assert!(cancelled > 0, "next() was never cancelled");
}

/// A scripted server trickles frames one byte at a time, so `next()` is
/// certainly cancelled in the middle of frames.
#[tokio::test]
async fn next_is_cancel_safe_mid_frame() {
    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }
    fn xlog(start: u64, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![b'w'];
        body.extend_from_slice(&start.to_be_bytes());
        body.extend_from_slice(&(start + 100).to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.extend_from_slice(payload);
        frame(b'd', &body)
    }
    async fn read_message(socket: &mut tokio::net::TcpStream, tagged: bool) -> Vec<u8> {
        if tagged {
            socket.read_u8().await.unwrap();
        }
        let len = socket.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        socket.read_exact(&mut body).await.unwrap();
        body
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let startup = read_message(&mut socket, false).await;
        assert!(
            startup.windows(11).any(|w| w == b"replication"),
            "startup packet without replication=database"
        );
        let mut hello = frame(b'R', &0i32.to_be_bytes());
        hello.extend(frame(b'S', b"TimeZone\0UTC\0"));
        hello.extend(frame(b'Z', b"I"));
        socket.write_all(&hello).await.unwrap();
        let query = read_message(&mut socket, true).await;
        assert!(query.starts_with(b"START_REPLICATION SLOT \"s\" LOGICAL 0/10"));
        socket.write_all(&frame(b'W', &[0, 0, 0])).await.unwrap();

        let mut script = xlog(0x10, b"Bfirst");
        script.extend(xlog(0x20, &[b'I'; 300]));
        let mut keepalive = vec![b'k'];
        keepalive.extend_from_slice(&0x30u64.to_be_bytes());
        keepalive.extend_from_slice(&0i64.to_be_bytes());
        keepalive.push(1);
        script.extend(frame(b'd', &keepalive));
        script.extend(xlog(0x40, b"Clast"));
        script.extend(frame(b'c', b""));
        for byte in script {
            socket.write_all(&[byte]).await.unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Keep the socket open until the client is done.
        let _ = socket.read_u8().await;
    });

    let client = ReplicationClient::connect(&ReplicationConfig {
        host: "127.0.0.1".to_owned(),
        port,
        user: "u".to_owned(),
        password: None,
        dbname: "d".to_owned(),
        application_name: APPLICATION_NAME.to_owned(),
        connect_timeout_ms: 5_000,
        // The scripted server expects the startup packet first.
        ssl: SslConfig {
            mode: SslMode::Disable,
            ..SslConfig::default()
        },
    })
    .await
    .expect("connect to the scripted server");
    let mut stream = client
        .start_replication("s", Lsn(0x10), &publications(&["p"]))
        .await
        .expect("start on the scripted server");

    let mut received = Vec::new();
    let mut cancelled = 0u64;
    within(60, "the scripted stream", async {
        loop {
            match tokio::time::timeout(Duration::from_micros(300), stream.next()).await {
                Err(_) => cancelled += 1,
                Ok(Ok(Some(message))) => received.push(message),
                Ok(Ok(None)) => return,
                Ok(Err(e)) => panic!("stream error: {e}"),
            }
        }
    })
    .await;
    assert!(
        cancelled > 10,
        "next() was cancelled only {cancelled} times"
    );
    assert_eq!(received.len(), 4);
    let payloads: Vec<(Lsn, Vec<u8>)> = received
        .iter()
        .filter_map(|m| match m {
            ReplicationMessage::XLogData {
                wal_start, data, ..
            } => Some((*wal_start, data.to_vec())),
            ReplicationMessage::PrimaryKeepalive { .. } => None,
        })
        .collect();
    assert_eq!(
        payloads,
        vec![
            (Lsn(0x10), b"Bfirst".to_vec()),
            (Lsn(0x20), vec![b'I'; 300]),
            (Lsn(0x40), b"Clast".to_vec()),
        ]
    );
    assert_eq!(
        received[2],
        ReplicationMessage::PrimaryKeepalive {
            wal_end: Lsn(0x30),
            server_time_us: 946_684_800_000_000,
            reply_requested: true,
        }
    );
    // After the server's CopyDone the stream stays ended.
    assert!(stream.next().await.unwrap().is_none());
    drop(stream);
    server.await.unwrap();
}

/// Reads the stream, acknowledging every keepalive's WAL end, until it
/// fails; returns the error.
async fn stream_until_error(stream: &mut ReplicationStream) -> ReplicationError {
    loop {
        match stream.next().await {
            Ok(Some(ReplicationMessage::PrimaryKeepalive { wal_end, .. })) => {
                if let Err(e) = stream
                    .send_status_update(wal_end, wal_end, wal_end, false)
                    .await
                {
                    return e;
                }
            }
            Ok(Some(ReplicationMessage::XLogData { .. })) => {}
            Ok(None) => panic!("stream ended with CopyDone"),
            Err(e) => return e,
        }
    }
}

/// A server shutdown or crash ends the stream with a transient error, the
/// cluster comes back on the same port, and streaming resumes.
#[tokio::test]
async fn server_shutdown_is_transient_and_streaming_resumes() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY);\n\
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let mut client = connect(&pg).await;
    client
        .create_slot("siphon_restart", SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut pg = pg;
    // A fast shutdown ends the stream in the protocol; an immediate one
    // kills the walsender, which closes the socket — with a reset when our
    // keepalive answers were still unread — or gets its FATAL out first.
    let ended_as_expected = |mode: &str, err: &ReplicationError| match mode {
        "fast" => matches!(err, ReplicationError::ServerShutdown),
        _ => match err {
            ReplicationError::Closed => true,
            ReplicationError::Io { source } => source.kind() == std::io::ErrorKind::ConnectionReset,
            ReplicationError::Server { code, .. } => code == "57P01",
            _ => false,
        },
    };
    for mode in ["fast", "immediate"] {
        let client = connect(&pg).await;
        let mut stream = client
            .start_replication("siphon_restart", Lsn::ZERO, &publications(&["pub"]))
            .await
            .unwrap();
        // Stop from a blocking thread while this task keeps answering
        // keepalives (a fast shutdown waits for the client to confirm).
        let stopper = tokio::task::spawn_blocking(move || {
            pg.stop(mode);
            pg
        });
        let err = within(30, "the stream to end", stream_until_error(&mut stream)).await;
        pg = stopper.await.unwrap();
        assert!(ended_as_expected(mode, &err), "{mode}: {err:?}");
        assert!(err.is_transient(), "{mode}: {err:?}");
        // Further calls keep failing rather than hanging or panicking.
        assert!(stream.next().await.unwrap_err().is_transient());
        drop(stream);

        pg.start_again();
        let db = pg.client("postgres").await;
        db.batch_execute(&format!(
            "INSERT INTO t VALUES ({})",
            if mode == "fast" { 1 } else { 2 }
        ))
        .await
        .unwrap();
        let client = connect(&pg).await;
        let mut stream = client
            .start_replication("siphon_restart", Lsn::ZERO, &publications(&["pub"]))
            .await
            .unwrap();
        let mut tags = Vec::new();
        within(30, "the transaction after restart", async {
            loop {
                let (_, data) = next_xlog_data(&mut stream).await;
                tags.push(char::from(data[0]));
                if data[0] == b'C' {
                    return;
                }
            }
        })
        .await;
        assert!(tags.ends_with(&['B', 'R', 'I', 'C']), "{tags:?}");
        within(10, "graceful close", stream.close()).await.unwrap();
    }
    drop(client);
}
