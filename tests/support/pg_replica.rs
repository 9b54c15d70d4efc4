//! A private PostgreSQL primary and a streaming replica of it, on free loopback ports.
//!
//! [`PgReplicaSet::start`] runs `initdb` (as user `postgres` when run as root), starts the
//! primary with `wal_level = replica`, clones it with `pg_basebackup -R`, starts the clone as
//! a hot standby and waits until it streams. Dropping the set stops both servers and removes
//! their data directories. The binaries come from the newest `/usr/lib/postgresql/<version>/bin`.
//!
//! Self-contained so that benches can include it with `#[path]`.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// How long the set waits for a server to start, stop or stream.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A primary and one streaming replica of it, torn down on drop.
#[derive(Debug)]
pub struct PgReplicaSet {
    bin: PathBuf,
    dir: PathBuf,
    primary_port: u16,
    replica_port: u16,
    as_postgres: bool,
}

/// Where the PostgreSQL binaries are: the newest `/usr/lib/postgresql/<version>/bin` holding
/// `initdb`, `pg_ctl` and `pg_basebackup`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            ["initdb", "pg_ctl", "pg_basebackup", "postgres"]
                .iter()
                .all(|name| bin.join(name).is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn required() -> bool {
    std::env::var("PERFKIT_REQUIRE_SERVICES")
        .map(|value| {
            let value = value.trim();
            value == "1" || value.eq_ignore_ascii_case("true")
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgReplicaSet {
    /// Starts a primary and a streaming replica for `test`.
    ///
    /// Returns `None` after printing `skipped <test>: ...` when the binaries are missing;
    /// panics instead when `PERFKIT_REQUIRE_SERVICES` is set, and when a server does not come up.
    pub async fn start(test: &str) -> Option<PgReplicaSet> {
        let as_postgres = is_root();
        let missing = match postgres_bin_dir() {
            None => Some(
                "no PostgreSQL server binaries under /usr/lib/postgresql/<version>/bin".to_owned(),
            ),
            Some(_)
                if as_postgres
                    && !Path::new("/usr/sbin/runuser").exists()
                    && Command::new("runuser").arg("--version").output().is_err() =>
            {
                Some(
                    "running as root and runuser is missing, so initdb cannot run as postgres"
                        .to_owned(),
                )
            }
            Some(_) => None,
        };
        if let Some(what) = missing {
            if required() {
                panic!(
                    "{test}: {what}, and PERFKIT_REQUIRE_SERVICES is set, so the test cannot be skipped"
                );
            }
            eprintln!("skipped {test}: {what}");
            return None;
        }
        let bin = postgres_bin_dir().expect("checked above");
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "perfkit-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("{test}: cannot create {}: {err}", dir.display()));
        let set = PgReplicaSet {
            bin,
            dir,
            primary_port: free_port(),
            replica_port: free_port(),
            as_postgres,
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&set.dir)
                .status()
                .unwrap_or_else(|err| panic!("{test}: cannot run chown: {err}"));
            assert!(
                status.success(),
                "{test}: chown postgres {} failed",
                set.dir.display()
            );
        }
        set.init_primary(test);
        set.pg_ctl_start(&set.primary_dir(), &set.dir.join("primary.log"));
        set.base_backup(test);
        set.pg_ctl_start(&set.replica_dir(), &set.dir.join("replica.log"));
        set.wait_streaming().await;
        Some(set)
    }

    fn primary_dir(&self) -> PathBuf {
        self.dir.join("primary")
    }

    fn replica_dir(&self) -> PathBuf {
        self.dir.join("replica")
    }

    /// A command running `bin/<name>`, as user `postgres` when the tests run as root.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    fn run(&self, what: &str, mut command: Command) {
        let output = command
            .output()
            .unwrap_or_else(|err| panic!("cannot run {what}: {err}"));
        assert!(
            output.status.success(),
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn init_primary(&self, test: &str) {
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(self.primary_dir()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        self.run(&format!("{test}: initdb"), initdb);
        append(
            &self.primary_dir().join("postgresql.conf"),
            &format!(
                "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = ''\n\
                 wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\n\
                 shared_buffers = 16MB\nmax_connections = 50\n",
                self.primary_port
            ),
        );
        append(
            &self.primary_dir().join("pg_hba.conf"),
            "\nhost replication all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 trust\n",
        );
    }

    fn base_backup(&self, test: &str) {
        let mut backup = self.command("pg_basebackup");
        backup
            .arg("-D")
            .arg(self.replica_dir())
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ])
            .arg("-p")
            .arg(self.primary_port.to_string());
        self.run(&format!("{test}: pg_basebackup"), backup);
        append(
            &self.replica_dir().join("postgresql.conf"),
            &format!("\nport = {}\n", self.replica_port),
        );
    }

    fn pg_ctl_start(&self, data: &Path, log: &Path) {
        let mut start = self.command("pg_ctl");
        start
            .arg("start")
            .arg("-w")
            .args(["-t", "30"])
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(log)
            .stdout(Stdio::null());
        let status = start.status().expect("cannot run pg_ctl");
        assert!(
            status.success(),
            "pg_ctl start -D {} failed; log:\n{}",
            data.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    fn pg_ctl_stop(&self, data: &Path, mode: &str) {
        let mut stop = self.command("pg_ctl");
        stop.arg("stop")
            .arg("-w")
            .args(["-m", mode])
            .arg("-D")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
    }

    /// `postgres://postgres@127.0.0.1:<primary port>/postgres`.
    pub fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.primary_port
        )
    }

    /// `postgres://postgres@127.0.0.1:<replica port>/postgres`.
    pub fn replica_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.replica_port
        )
    }

    /// A connection of its own to `url`.
    pub async fn connect(url: &str) -> PgConnection {
        PgConnectOptions::from_str(url)
            .expect("a valid URL")
            .disable_statement_logging()
            .connect()
            .await
            .unwrap_or_else(|err| panic!("cannot connect to {url}: {err}"))
    }

    /// Waits until the replica's WAL receiver streams from the primary.
    pub async fn wait_streaming(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let streaming = async {
                let mut conn = PgConnectOptions::from_str(&self.replica_url())
                    .ok()?
                    .disable_statement_logging()
                    .connect()
                    .await
                    .ok()?;
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM pg_stat_wal_receiver")
                        .fetch_optional(&mut conn)
                        .await
                        .ok()?;
                let _ = conn.close().await;
                Some(status.as_deref() == Some("streaming"))
            }
            .await;
            if streaming == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not stream within {WAIT:?}; log:\n{}",
                std::fs::read_to_string(self.dir.join("replica.log")).unwrap_or_default()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the replica (`pg_ctl stop -m fast`); its port then refuses connections.
    pub async fn stop_replica(&mut self) {
        self.pg_ctl_stop(&self.replica_dir(), "fast");
    }

    /// Starts the stopped replica again and waits until it streams.
    pub async fn start_replica(&mut self) {
        self.pg_ctl_start(&self.replica_dir(), &self.dir.join("replica.log"));
        self.wait_streaming().await;
    }

    /// Pauses WAL replay on the replica (`pg_wal_replay_pause()`): it keeps receiving WAL
    /// but applies none of it, so it falls behind from the primary's next write on.
    pub async fn pause_replay(&self) {
        let mut conn = Self::connect(&self.replica_url()).await;
        sqlx::query("SELECT pg_wal_replay_pause()")
            .execute(&mut conn)
            .await
            .expect("pg_wal_replay_pause()");
        let _ = conn.close().await;
    }

    /// Resumes WAL replay on the replica (`pg_wal_replay_resume()`).
    pub async fn resume_replay(&self) {
        let mut conn = Self::connect(&self.replica_url()).await;
        sqlx::query("SELECT pg_wal_replay_resume()")
            .execute(&mut conn)
            .await
            .expect("pg_wal_replay_resume()");
        let _ = conn.close().await;
    }
}

impl Drop for PgReplicaSet {
    fn drop(&mut self) {
        self.pg_ctl_stop(&self.replica_dir(), "immediate");
        self.pg_ctl_stop(&self.primary_dir(), "immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Appends `text` to the file at `path`.
fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|err| panic!("cannot open {}: {err}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
}
