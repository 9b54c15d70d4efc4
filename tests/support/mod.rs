//! Shared helpers for integration tests that talk to Redis or PostgreSQL.
//!
//! Services are found through `REDIS_URL` and `DATABASE_URL`. When a variable is unset the
//! helper prints `skipped <test>: ...` to stderr and returns `None`, unless
//! `PERFKIT_REQUIRE_SERVICES` is `1` or `true`, in which case it panics. A service that is
//! configured but does not answer is always a failure.
//!
//! Every helper isolates its test: [`TestRedis`] hands out keys under a prefix of its own,
//! [`TestDb`] points every pooled connection at a schema of its own, and [`RedisServer`] runs a
//! private `redis-server` on a free loopback port.
//!
//! Connecting is bounded by tokio's timer, as are the pools' own acquire timeouts. With the
//! clock paused (`start_paused = true`, `tokio::time::pause()`) the runtime jumps time forward
//! while it waits on a socket and those timeouts fire at once, so tests that use [`redis`] or
//! [`postgres`] keep the clock running.

#![allow(dead_code, unreachable_pub)]

pub mod capture;
pub mod pg_replica;
pub mod redis_cluster;

use std::fmt;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// Environment variable that turns a missing service from a skip into a failure.
pub const REQUIRE_SERVICES_VAR: &str = "PERFKIT_REQUIRE_SERVICES";
/// Environment variable holding the Redis URL, e.g. `redis://127.0.0.1:6379`.
pub const REDIS_URL_VAR: &str = "REDIS_URL";
/// Environment variable holding the PostgreSQL URL, e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub const DATABASE_URL_VAR: &str = "DATABASE_URL";

/// How long a helper waits for a service to accept a connection or answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RedisServer`] waits for its process to answer, or to go away.
const SERVER_WAIT: Duration = Duration::from_secs(5);
/// Pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Returns true when `PERFKIT_REQUIRE_SERVICES` is `1` or `true`.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_VAR)
        .map(|value| {
            let value = value.trim();
            value == "1" || value.eq_ignore_ascii_case("true")
        })
        .unwrap_or(false)
}

/// Reports a missing service: panics when services are required, else prints a skip line.
fn missing(test: &str, what: &str) {
    if services_required() {
        panic!("{test}: {what}, and {REQUIRE_SERVICES_VAR} is set, so the test cannot be skipped");
    }
    eprintln!("skipped {test}: {what}");
}

/// Reads a service URL; `None` (after [`missing`]) when it is unset or empty.
fn service_url(test: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            missing(test, &format!("{var} is not set"));
            None
        }
    }
}

/// Polls `check` every millisecond until it is true; panics naming `what` once `within` has
/// passed. Returns how long it took.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Returns an id unique across the tests of every process: process id, a counter and the time.
pub fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:x}_{count:x}_{nanos:x}", std::process::id())
}

/// Keeps ASCII letters, digits and `_`, replaces everything else with `_`, and lowercases.
fn sanitize(test: &str) -> String {
    test.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

// ===== Redis =====

/// A Redis connection for one test, with a key prefix no other test uses.
///
/// Dropping it deletes every key under [`TestRedis::prefix`].
pub struct TestRedis {
    /// Multiplexed connection; clone it to send commands concurrently.
    pub conn: ConnectionManager,
    /// The URL the connection was opened with.
    pub url: String,
    /// Prefix of every key this test owns, e.g. `perfkit-test:my_test:1f2-0-18a...:`.
    pub prefix: String,
}

impl TestRedis {
    /// Returns `name` under this test's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Returns a clone of the multiplexed connection.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

impl fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestRedis")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        // The prefix holds only letters, digits, `_`, `-` and `:`, none of which SCAN's glob
        // treats specially, so `prefix*` matches exactly this test's keys.
        delete_keys(&self.url, &format!("{}*", self.prefix));
    }
}

/// Deletes the keys matching `pattern`, ignoring every error.
fn delete_keys(url: &str, pattern: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return;
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = con.set_write_timeout(Some(Duration::from_secs(5)));
    let keys: Vec<String> = match redis::Commands::scan_match::<_, String>(&mut con, pattern) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(chunk).query(&mut con);
    }
}

/// Connects to `REDIS_URL` for `test`.
///
/// Returns `None` after printing a skip line when the variable is unset (panics instead when
/// services are required). Panics when the server does not answer `PING`.
pub async fn redis(test: &str) -> Option<TestRedis> {
    let url = service_url(test, REDIS_URL_VAR)?;
    let client = redis::Client::open(url.as_str())
        .unwrap_or_else(|err| panic!("{test}: {REDIS_URL_VAR}={url} is not a valid URL: {err}"));
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    let mut conn = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.get_connection_manager_with_config(config),
    )
    .await
    .unwrap_or_else(|_| panic!("{test}: Redis at {url} did not accept a connection in time"))
    .unwrap_or_else(|err| panic!("{test}: cannot connect to Redis at {url}: {err}"));
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|err| panic!("{test}: Redis at {url} did not answer PING: {err}"));
    assert_eq!(pong, "PONG", "{test}: unexpected PING reply from {url}");
    let prefix = format!(
        "perfkit-test:{}:{}:",
        sanitize(test),
        unique_id().replace('_', "-")
    );
    Some(TestRedis { conn, url, prefix })
}

// ===== PostgreSQL =====

/// A connection pool for one test whose `search_path` is a schema no other test uses.
///
/// Unqualified names such as `CREATE TABLE items` land in [`TestDb::schema`]. Dropping it drops
/// the schema, unless the test is panicking: then the schema is kept and its name printed.
pub struct TestDb {
    /// Pool whose connections all use `search_path = <schema>`.
    pub pool: PgPool,
    /// Name of this test's schema.
    pub schema: String,
    /// The URL from `DATABASE_URL`.
    pub url: String,
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb")
            .field("schema", &self.schema)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestDb {
    /// Returns the connect options of this database, with `search_path` set to the schema.
    pub fn connect_options(&self) -> PgConnectOptions {
        schema_options(&self.url, &self.schema)
    }
}

/// Connect options for `url` whose sessions use `schema` and are named after it.
fn schema_options(url: &str, schema: &str) -> PgConnectOptions {
    base_options(url)
        .application_name(schema)
        .options([("search_path", schema)])
}

/// Connect options for `url`, panicking when it does not parse.
fn base_options(url: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(url)
        .unwrap_or_else(|err| panic!("{DATABASE_URL_VAR}={url} is not a valid URL: {err}"))
        .disable_statement_logging()
}

/// Returns a schema name `perfkit_<test>_<unique>` of at most 63 bytes.
fn schema_name(test: &str) -> String {
    const MAX_IDENTIFIER: usize = 63;
    let unique = unique_id();
    let room = MAX_IDENTIFIER - "perfkit_".len() - 1 - unique.len();
    let mut test = sanitize(test);
    test.truncate(room);
    format!("perfkit_{test}_{unique}")
}

/// Creates a schema of its own for `test` in `DATABASE_URL` and returns a pool that uses it.
///
/// Returns `None` after printing a skip line when the variable is unset (panics instead when
/// services are required). Panics when the server does not accept a connection.
pub async fn postgres(test: &str) -> Option<TestDb> {
    let url = service_url(test, DATABASE_URL_VAR)?;
    let schema = schema_name(test);

    let mut admin = tokio::time::timeout(CONNECT_TIMEOUT, base_options(&url).connect())
        .await
        .unwrap_or_else(|_| {
            panic!("{test}: PostgreSQL at {url} did not accept a connection in time")
        })
        .unwrap_or_else(|err| panic!("{test}: cannot connect to PostgreSQL at {url}: {err}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|err| panic!("{test}: cannot create schema {schema}: {err}"));
    let _ = admin.close().await;

    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(schema_options(&url, &schema))
        .await
        .unwrap_or_else(|err| panic!("{test}: cannot open a pool on {url}: {err}"));
    Some(TestDb { pool, schema, url })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Creating the close future marks the pool closed at once, so clones of it hand out
        // no more connections. Awaiting it here could deadlock: connections go back to the
        // pool through tasks on the test's runtime, which is blocked in this call.
        drop(self.pool.close());
        if std::thread::panicking() {
            eprintln!(
                "kept schema \"{}\" of a failed test for inspection ({DATABASE_URL_VAR}={})",
                self.schema, self.url
            );
            return;
        }
        let url = self.url.clone();
        let schema = self.schema.clone();
        // Drop cannot await, so the schema is dropped on a thread with a runtime of its own,
        // over a connection of its own.
        let cleanup =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(drop_schema(&url, &schema)),
                    Err(err) => eprintln!("could not drop test schema \"{schema}\": {err}"),
                }
            });
        let _ = cleanup.join();
    }
}

/// Ends the sessions of the pool that used `schema` and drops it, printing any failure.
async fn drop_schema(url: &str, schema: &str) {
    let result = async {
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, base_options(url).connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        // The pool's sessions are named after the schema. One left inside a transaction
        // would hold locks that make DROP SCHEMA wait, so they are ended first.
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(schema)
        .execute(&mut conn)
        .await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await?;
        conn.close().await
    }
    .await;
    if let Err(err) = result {
        eprintln!("could not drop test schema \"{schema}\": {err}");
    }
}

// ===== Private redis-server =====

/// A `redis-server` process of the test's own on a free loopback port, for fault tests.
///
/// It keeps nothing on disk beyond a temporary directory removed on drop. Dropping it kills
/// the process.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// Settings passed on the command line beyond the defaults.
    settings: Vec<String>,
    child: Option<Child>,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("running", &self.child.is_some())
            .finish()
    }
}

/// Name of the Redis server binary looked up on `PATH`.
const REDIS_SERVER_BIN: &str = "redis-server";

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

impl RedisServer {
    /// Starts a private `redis-server` for `test` and waits until it answers `PING`.
    ///
    /// Returns `None` after printing a skip line when `redis-server` is not on `PATH` (panics
    /// instead when services are required). Panics when the server does not come up.
    pub async fn start(test: &str) -> Option<RedisServer> {
        Self::start_with(test, &[]).await
    }

    /// [`start`](Self::start) with extra `redis-server` settings, such as
    /// `["--maxmemory", "2mb"]`; they hold across restarts too.
    pub async fn start_with(test: &str, settings: &[&str]) -> Option<RedisServer> {
        Self::start_on(test, settings, free_port).await
    }

    /// [`start_with`](Self::start_with) on ports chosen by `choose_port`, asked again for
    /// each of the attempts made when a server does not come up.
    async fn start_on(
        test: &str,
        settings: &[&str],
        choose_port: fn() -> u16,
    ) -> Option<RedisServer> {
        match Command::new(REDIS_SERVER_BIN)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {
                missing(test, &format!("{REDIS_SERVER_BIN} is not on PATH"));
                return None;
            }
            Err(err) => panic!("{test}: cannot run {REDIS_SERVER_BIN}: {err}"),
        }

        let dir =
            std::env::temp_dir().join(format!("perfkit-redis-{}-{}", sanitize(test), unique_id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("{test}: cannot create {}: {err}", dir.display()));

        // The port is free when chosen but another process may take it before the server
        // binds it, so a server that does not come up is tried again on another port.
        let mut last_error = String::new();
        for _ in 0..3 {
            let mut server = RedisServer {
                port: choose_port(),
                dir: dir.clone(),
                settings: settings.iter().map(|s| (*s).to_owned()).collect(),
                child: None,
            };
            match server.launch().await {
                Ok(()) => return Some(server),
                Err(err) => last_error = err,
            }
        }
        panic!("{test}: {last_error}");
    }

    /// The server's URL, `redis://127.0.0.1:<port>`; the same across restarts.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's loopback port; the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns true while the process started last has not been stopped or exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Kills the server, waits for the process to exit and for the port to refuse connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let deadline = Instant::now() + SERVER_WAIT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        panic!("redis-server on port {} did not exit", self.port)
                    }
                    Ok(None) => tokio::time::sleep(POLL_INTERVAL).await,
                }
            }
        }
        let deadline = Instant::now() + SERVER_WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            assert!(
                Instant::now() < deadline,
                "port {} still accepts connections after redis-server exited",
                self.port
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Freezes the server (`SIGSTOP`): it keeps its connections open and answers nothing, as
    /// a hung server does, until [`resume`](Self::resume).
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) server run again; it then answers what it was sent.
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, signal: &str) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("redis-server on port {} is not running", self.port));
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .unwrap_or_else(|err| panic!("cannot run kill {signal}: {err}"));
        assert!(status.success(), "kill {signal} failed for redis-server");
    }

    /// Starts the server again on the same port and waits until it answers `PING`.
    ///
    /// Stops the running process first, if any. Panics when the server does not come up.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(err) = self.launch().await {
            panic!("{err}");
        }
    }

    /// Spawns the process on `self.port` and waits for `PING`; on failure the process is gone.
    async fn launch(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let child = Command::new(REDIS_SERVER_BIN)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.settings)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot start {REDIS_SERVER_BIN}: {err}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + SERVER_WAIT;
        loop {
            if !self.is_running() {
                break;
            }
            if ping(&self.url()).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(format!(
            "{REDIS_SERVER_BIN} on port {} did not answer PING within {SERVER_WAIT:?}; log:\n{}",
            self.port,
            read_log(&log)
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Returns true when the server at `url` answers `PING` within a second.
async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(reply)) if reply == "PONG"
    )
}

/// The server log, or a note that there is none.
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| format!("(no log at {}: {err})", path.display()))
}
