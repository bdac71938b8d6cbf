//! A throwaway PostgreSQL cluster for integration tests.
//!
//! Each [`PgCluster`] is its own `initdb` in a fresh temporary directory,
//! listening on `127.0.0.1` on a free port and on a unix socket inside that
//! directory. It never touches the machine's own PostgreSQL service (port
//! 5432): only the server binaries in [`server_bin`] and the client tools in
//! [`CLIENT_BIN`] are used. Dropping the cluster stops the server
//! (`immediate`) and removes the directory.
//!
//! The server's major version comes from one environment variable,
//! `SIPHON_TEST_PG` (`15`, `16`, `17` or `18`; 15 when unset): 15 is
//! Debian's (`/usr/lib/postgresql/15/bin`), 16-18 are the prebuilt servers
//! `scripts/install-deps.sh` puts in `/usr/local/lib/siphon-pg/<major>/bin`
//! (`SIPHON_PG_ROOT` moves that root). The client tools (psql, pg_isready,
//! pg_recvlogical) stay Debian's 15 ones, which talk to every server. A
//! test of a feature some versions lack asks [`require_server`] first.
//!
//! `initdb` and `pg_ctl` refuse to run as root, so when the tests run as root
//! the server commands go through `runuser -u postgres --` and the directory
//! is handed to the `postgres` OS user. `psql` always connects as the
//! `postgres` superuser through the unix socket, which is `trust` whatever
//! the TCP authentication method is.
//!
//! With [`PgOptions::tls`] the cluster serves TLS with a certificate for
//! `localhost` (and nothing else) from a throwaway CA made with the
//! `openssl` CLI for that cluster alone, and accepts TCP connections only
//! over TLS (`hostssl` lines, no `host` lines); see [`TlsFiles`].
//!
//! Everything here panics on failure with the server log's tail: it is test
//! support, and a cluster that does not come up is a broken test bed.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's PostgreSQL 15 binaries live: the client tools for every
/// server version, and the server itself for version 15.
pub const CLIENT_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The variable naming the server's major version.
pub const VERSION_VAR: &str = "SIPHON_TEST_PG";

/// The server majors the test bed runs.
pub const SUPPORTED_MAJORS: [u32; 4] = [15, 16, 17, 18];

/// The server's major version under test: `SIPHON_TEST_PG`, 15 when unset.
/// Panics on anything but a supported major: a typo must not quietly test
/// version 15.
pub fn server_major() -> u32 {
    match std::env::var(VERSION_VAR) {
        Err(std::env::VarError::NotPresent) => 15,
        Ok(v) if v.trim().is_empty() => 15,
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(major) if SUPPORTED_MAJORS.contains(&major) => major,
            _ => panic!("{VERSION_VAR}={v:?}: expected one of {SUPPORTED_MAJORS:?}"),
        },
        Err(e) => panic!("{VERSION_VAR}: {e}"),
    }
}

/// The directory of the server binaries (initdb, pg_ctl, postgres) for
/// [`server_major`].
pub fn server_bin() -> PathBuf {
    match server_major() {
        15 => PathBuf::from(CLIENT_BIN),
        major => {
            let root = std::env::var("SIPHON_PG_ROOT")
                .unwrap_or_else(|_| "/usr/local/lib/siphon-pg".to_owned());
            Path::new(&root).join(major.to_string()).join("bin")
        }
    }
}

/// Whether the server under test is at least `min_major`. When it is not,
/// prints why the calling test checks nothing and returns false; the test
/// then returns early. Only for features a server version lacks.
pub fn require_server(min_major: u32, feature: &str) -> bool {
    let major = server_major();
    if major >= min_major {
        return true;
    }
    skipped(&format!(
        "{feature} needs PostgreSQL {min_major} or later; this run is on PostgreSQL {major} \
         ({VERSION_VAR}={major})"
    ));
    false
}

/// Prints `SKIPPED: <why>` on stderr past the test harness's capture, so
/// that the run's output says which test checked nothing.
pub fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// The superuser every cluster is created with.
const SUPERUSER: &str = "postgres";

/// Password given to the superuser when an authentication method other than
/// `trust` is asked for without one.
const DEFAULT_PASSWORD: &str = "siphon-test-password";

/// How many ports to try before giving up on starting the server.
const START_ATTEMPTS: usize = 5;

/// Upper bound for the server to accept connections after `pg_ctl start`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to set up a cluster. `PgOptions::default()` gives what
/// [`PgCluster::start`] uses: `wal_level=logical`, `trust` over TCP.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `logical` (default) or `replica`.
    pub wal_level: String,
    /// pg_hba method for TCP connections (normal and replication) from
    /// 127.0.0.1: `trust` (default), `password`, `md5` or `scram-sha-256`.
    pub auth_method: String,
    /// The superuser's password. When `None` and `auth_method` is not
    /// `trust`, a fixed test password is used ([`PgCluster::password`]).
    pub password: Option<String>,
    /// Lines appended verbatim to `postgresql.conf`, e.g. `"wal_sender_timeout = '2s'"`.
    pub extra_conf: Vec<String>,
    /// Serve TLS and accept TCP connections (normal and replication) only
    /// over it.
    pub tls: bool,
    /// With `tls`: demand a client certificate signed by the test CA whose
    /// CN is the user name (`clientcert=verify-full`).
    pub client_cert: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            wal_level: "logical".to_owned(),
            auth_method: "trust".to_owned(),
            password: None,
            extra_conf: Vec::new(),
            tls: false,
            client_cert: false,
        }
    }
}

/// A running (or stopped, see [`PgCluster::stop`]) private PostgreSQL cluster.
pub struct PgCluster {
    // Declared first so it is dropped last: the server is stopped in `Drop`
    // before the directory goes away.
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    password: Option<String>,
    /// Run server commands through `runuser -u postgres --` (we are root).
    as_postgres: bool,
    running: bool,
    tls: Option<TlsFiles>,
}

/// The certificates and keys of a TLS test cluster, all PEM, keys PKCS#8,
/// in the cluster's temporary directory.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The throwaway CA that signed the server and client certificates.
    pub ca_cert: PathBuf,
    /// Another CA, which signed nothing the server uses.
    pub other_ca_cert: PathBuf,
    /// The server's certificate: CN and only SAN `DNS:localhost`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate for the superuser (CN `postgres`), by the CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl PgCluster {
    /// A cluster with `wal_level=logical` and `trust` authentication.
    pub fn start() -> PgCluster {
        PgCluster::start_with(PgOptions::default())
    }

    /// A cluster set up as `opts` says.
    pub fn start_with(opts: PgOptions) -> PgCluster {
        let password = match (opts.auth_method.as_str(), opts.password) {
            ("trust", p) => p,
            (_, Some(p)) => Some(p),
            (_, None) => Some(DEFAULT_PASSWORD.to_owned()),
        };
        let dir = tempfile::Builder::new()
            .prefix("siphon-pg-")
            .tempdir()
            .expect("create temp dir for the test cluster");
        let as_postgres = fs::metadata(dir.path()).expect("stat temp dir").uid() == 0;
        if as_postgres {
            let (uid, gid) = postgres_os_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown temp dir to the postgres user");
        }
        let mut cluster = PgCluster {
            data_dir: dir.path().join("data"),
            socket_dir: dir.path().to_path_buf(),
            log_file: dir.path().join("server.log"),
            dir,
            port: 0,
            password,
            as_postgres,
            running: false,
            tls: None,
        };
        if opts.tls {
            cluster.tls = Some(make_tls_files(cluster.dir.path(), as_postgres));
        }
        cluster.init(
            &opts.wal_level,
            &opts.auth_method,
            &opts.extra_conf,
            opts.client_cert,
        );

        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => {
                    cluster.running = true;
                    break;
                }
                Err(failure) => last_failure = failure,
            }
        }
        if !cluster.running {
            panic!(
                "test PostgreSQL did not start after {START_ATTEMPTS} attempts: {last_failure}\n\
                 --- server log tail ---\n{}",
                cluster.log_tail()
            );
        }
        if let Some(password) = cluster.password.clone() {
            let encryption = if opts.auth_method == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            };
            cluster.psql(
                "postgres",
                &format!(
                    "SET password_encryption = '{encryption}';\n\
                     ALTER ROLE {SUPERUSER} PASSWORD '{}';",
                    password.replace('\'', "''")
                ),
            );
        }
        // The run is on the version it says, whatever is installed where.
        let num = cluster.psql("postgres", "SHOW server_version_num");
        assert_eq!(
            num.parse::<u32>().ok().map(|n| n / 10_000),
            Some(server_major()),
            "server_version_num {num} is not PostgreSQL {} ({VERSION_VAR})",
            server_major()
        );
        cluster
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn user(&self) -> &str {
        SUPERUSER
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The certificates of a cluster started with [`PgOptions::tls`].
    pub fn tls(&self) -> &TlsFiles {
        self.tls
            .as_ref()
            .expect("the cluster was started without PgOptions::tls")
    }

    /// The data directory (inside the temporary directory).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A key/value connection string for `tokio_postgres::connect` over TCP.
    pub fn connection_string(&self, db: &str) -> String {
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            self.host(),
            self.port,
            quote_conninfo(SUPERUSER),
            quote_conninfo(db)
        );
        if let Some(password) = &self.password {
            s.push_str(" password=");
            s.push_str(&quote_conninfo(password));
        }
        s
    }

    /// A connected tokio-postgres client; its connection task is spawned on
    /// the current runtime.
    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.connection_string(db), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to test PostgreSQL db {db}: {e}"));
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // test sees that through the client.
            let _ = connection.await;
        });
        client
    }

    /// Runs `sql` with `psql -X -A -t -v ON_ERROR_STOP=1` through the unix
    /// socket and returns its output without the trailing newline. Each
    /// statement runs on its own (the script is fed on stdin), so
    /// `CREATE DATABASE` works inside a script.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut child = pg_command("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        child
            .stdin
            .take()
            .expect("psql stdin is piped")
            .write_all(sql.as_bytes())
            .expect("write SQL to psql");
        let out = child.wait_with_output().expect("wait for psql");
        if !out.status.success() {
            panic!(
                "psql failed ({}) on db {db}:\n{sql}\n--- stderr ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        while stdout.ends_with('\n') {
            stdout.pop();
        }
        stdout
    }

    /// Stops the server with `pg_ctl stop -m <mode>` (`smart`, `fast` or
    /// `immediate`) and waits for it to be gone.
    pub fn stop(&mut self, mode: &str) {
        assert!(
            matches!(mode, "smart" | "fast" | "immediate"),
            "unknown stop mode {mode:?}"
        );
        if !self.running {
            return;
        }
        let out = self.pg_ctl(&["stop", "-w", "-t", "60", "-m", mode]);
        if !out.status.success() {
            panic!(
                "pg_ctl stop -m {mode} failed: {}\n--- server log tail ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        self.running = false;
    }

    /// Starts the server again on the same directory and port.
    pub fn start_again(&mut self) {
        if self.running {
            return;
        }
        if let Err(failure) = self.try_start() {
            panic!(
                "test PostgreSQL did not start again: {failure}\n--- server log tail ---\n{}",
                self.log_tail()
            );
        }
        self.running = true;
    }

    /// Moves the server to a new timeline, as a promoted standby or a
    /// point-in-time restore does: a stop, then an archive recovery of its
    /// own WAL (`recovery.signal`, nothing to restore) that ends in a
    /// promotion. The system identifier and the replication slots stay.
    pub fn switch_timeline(&mut self) {
        self.stop("fast");
        append(
            &self.data_dir.join("postgresql.conf"),
            "restore_command = 'false'\n",
        );
        let signal = self.data_dir.join("recovery.signal");
        fs::write(&signal, "").expect("write recovery.signal");
        if self.as_postgres {
            let (uid, gid) = postgres_os_user();
            std::os::unix::fs::chown(&signal, Some(uid), Some(gid))
                .expect("chown recovery.signal to the postgres user");
        }
        self.start_again();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "recovery did not end:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn create_database(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{}\";", name.replace('"', "\"\"")),
        );
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn init(&self, wal_level: &str, auth_method: &str, extra_conf: &[String], client_cert: bool) {
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .expect("run initdb");
        if !out.status.success() {
            panic!(
                "initdb failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let socket_dir = self.socket_dir.display().to_string().replace('\'', "''");
        let mut conf = format!(
            "\n# siphon test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{socket_dir}'\n\
             wal_level = {wal_level}\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n\
             fsync = off\n\
             logging_collector = off\n"
        );
        // Only `hostssl` lines with TLS: a connection without it matches no
        // line and is refused ("no encryption").
        let (host, options) = match &self.tls {
            None => ("host", ""),
            Some(files) => {
                let quoted = |p: &Path| p.display().to_string().replace('\'', "''");
                conf.push_str(&format!(
                    "ssl = on\n\
                     ssl_cert_file = '{}'\n\
                     ssl_key_file = '{}'\n\
                     ssl_ca_file = '{}'\n",
                    quoted(&files.server_cert),
                    quoted(&files.server_key),
                    quoted(&files.ca_cert),
                ));
                let options = if client_cert {
                    " clientcert=verify-full"
                } else {
                    ""
                };
                ("hostssl", options)
            }
        };
        for line in extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&self.data_dir.join("postgresql.conf"), &conf);
        // The files initdb wrote belong to postgres and stay writable for
        // root, so plain file writes work in both modes.
        fs::write(
            self.data_dir.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 local replication all trust\n\
                 {host} all all 127.0.0.1/32 {auth_method}{options}\n\
                 {host} replication all 127.0.0.1/32 {auth_method}{options}\n"
            ),
        )
        .expect("write pg_hba.conf");
    }

    /// One `pg_ctl start` on `self.port`, then `pg_isready` until the server
    /// accepts TCP connections. Returns a description of the failure.
    fn try_start(&self) -> Result<(), String> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("start")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .arg("-o")
            .arg(format!("-p {}", self.port));
        let out = cmd.output().expect("run pg_ctl start");
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start on port {} failed: {}",
                self.port,
                describe(&out)
            ));
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = pg_command("pg_isready")
                .args(["-h", self.host(), "-p"])
                .arg(self.port.to_string())
                .args(["-U", SUPERUSER, "-d", "postgres", "-t", "1"])
                .output()
                .expect("run pg_isready");
            if ready.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // Leave no server behind that a retry would not know about.
                let _ = self.pg_ctl(&["stop", "-w", "-t", "10", "-m", "immediate"]);
                return Err(format!(
                    "server on port {} not ready after {READY_TIMEOUT:?}: {}",
                    self.port,
                    describe(&ready)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.server_command("pg_ctl")
            .args(args)
            .arg("-D")
            .arg(&self.data_dir)
            .output()
            .expect("run pg_ctl")
    }

    /// A command for a server binary, run as the `postgres` OS user when we
    /// are root, from the cluster directory (initdb fails when it cannot
    /// read the current directory).
    fn server_command(&self, bin: &str) -> Command {
        let path = server_bin().join(bin);
        assert!(
            path.exists(),
            "{} is missing: run scripts/install-deps.sh ({VERSION_VAR}={})",
            path.display(),
            server_major()
        );
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.current_dir(self.dir.path());
        clear_pg_env(&mut cmd);
        cmd
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            // Best effort: a failure here must not turn into a double panic
            // while a failing test unwinds.
            let _ = self.pg_ctl(&["stop", "-w", "-t", "30", "-m", "immediate"]);
        }
        // `self.dir` removes the directory when it drops (root may remove
        // files owned by postgres; otherwise we own them).
    }
}

/// Makes a throwaway CA, a server certificate for `localhost` and a client
/// certificate for the superuser in `dir`, plus an unrelated CA. The server
/// key is handed to the `postgres` OS user when the server runs as it:
/// PostgreSQL refuses a key file it does not own or that others can read.
fn make_tls_files(dir: &Path, as_postgres: bool) -> TlsFiles {
    let path = |name: &str| dir.join(name);
    let files = TlsFiles {
        ca_cert: path("ca.pem"),
        other_ca_cert: path("other-ca.pem"),
        server_cert: path("server.pem"),
        server_key: path("server.key"),
        client_cert: path("client.pem"),
        client_key: path("client.key"),
    };
    let ca_key = path("ca.key");
    // P-256 keys: fast to make, and `openssl req` writes them as PKCS#8.
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (cert, key, cn) in [
        (&files.ca_cert, &ca_key, "siphon test CA"),
        (
            &files.other_ca_cert,
            &path("other-ca.key"),
            "siphon other test CA",
        ),
    ] {
        openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "2"])
                .args(new_key)
                .arg("-keyout")
                .arg(key)
                .arg("-out")
                .arg(cert)
                .args(["-subj", &format!("/CN={cn}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        );
    }
    for (cert, key, cn, usage) in [
        (
            &files.server_cert,
            &files.server_key,
            "localhost",
            "serverAuth",
        ),
        (
            &files.client_cert,
            &files.client_key,
            SUPERUSER,
            "clientAuth",
        ),
    ] {
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509", "-days", "2"])
            .args(new_key)
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert)
            .arg("-CA")
            .arg(&files.ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-subj", &format!("/CN={cn}")])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", &format!("extendedKeyUsage={usage}")]);
        if usage == "serverAuth" {
            cmd.args(["-addext", "subjectAltName=DNS:localhost"]);
        }
        openssl(&mut cmd);
    }
    let mut permissions = fs::metadata(&files.server_key)
        .expect("stat server key")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    fs::set_permissions(&files.server_key, permissions).expect("chmod 0600 server key");
    if as_postgres {
        let (uid, gid) = postgres_os_user();
        std::os::unix::fs::chown(&files.server_key, Some(uid), Some(gid))
            .expect("chown server key to the postgres user");
    }
    files
}

fn openssl(cmd: &mut Command) {
    let out = cmd
        .output()
        .expect("run openssl (the test bed needs the openssl CLI)");
    if !out.status.success() {
        panic!("{cmd:?} failed: {}", describe(&out));
    }
}

/// A client binary (psql, pg_isready), run as whoever we are.
fn pg_command(bin: &str) -> Command {
    let mut cmd = Command::new(Path::new(CLIENT_BIN).join(bin));
    clear_pg_env(&mut cmd);
    cmd
}

/// libpq and the server read these; a developer's environment must not
/// redirect the test bed to another server or directory.
fn clear_pg_env(cmd: &mut Command) {
    for var in [
        "PGDATA",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGDATABASE",
        "PGOPTIONS",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGSSLMODE",
    ] {
        cmd.env_remove(var);
    }
}

/// A port that was free a moment ago. Another process may take it before the
/// server binds it; `start_with` then retries with a new one.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// uid and gid of the `postgres` OS user, from /etc/passwd.
fn postgres_os_user() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == "postgres" {
                Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
            } else {
                None
            }
        })
        .expect("running as root needs a `postgres` OS user in /etc/passwd")
}

fn append(path: &Path, text: &str) {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Quotes a value for a libpq-style key/value connection string.
fn quote_conninfo(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn describe(out: &Output) -> String {
    format!(
        "{} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}
