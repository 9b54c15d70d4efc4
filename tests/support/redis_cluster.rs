//! A private three-master Redis Cluster on loopback ports, for tests that need the real thing.
//!
//! [`RedisCluster::start`] runs three `redis-server --cluster-enabled yes` processes (each a
//! [`RedisServer`] with its own directory and `nodes.conf`), gives each a third of the 16384
//! slots with `CLUSTER ADDSLOTS`, joins them with `CLUSTER MEET` and waits until every node
//! reports the whole slot map as served and agrees with the others on it. No replicas: a
//! stopped master's slots stay unserved until [`RedisCluster::start_master`] brings it back
//! on the same port, from the same `nodes.conf`, with the same slots.
//!
//! The nodes run with `cluster-require-full-coverage no`, so while one master is down the
//! other two keep serving their own slots and only the missing master's slots fail.
//!
//! Redis holds a freshly started master back from serving for two seconds, so a start (and
//! a restart) takes a little over two seconds however fast the rest is.

use std::collections::HashSet;
use std::fmt;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{POLL_INTERVAL, REDIS_SERVER_BIN, RedisServer, missing, read_log};

/// Number of masters in the cluster.
pub const MASTERS: usize = 3;
/// Number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// Offset of a node's cluster bus port from its client port.
const BUS_OFFSET: u16 = 10000;
/// `cluster-node-timeout` of every node, in milliseconds.
const NODE_TIMEOUT_MS: u64 = 1000;
/// How long a start or restart waits for the cluster to agree and serve every slot.
const CLUSTER_WAIT: Duration = Duration::from_secs(20);
/// Lowest client port handed out. With the bus at `port + 10000`, both stay below Linux's
/// default ephemeral range (32768 and up), so outgoing connections do not take them.
const PORT_BASE: u16 = 20000;
/// Number of client ports handed out, `PORT_BASE..PORT_BASE + PORT_SPAN`.
const PORT_SPAN: u16 = 2700;

/// A three-master Redis Cluster of the test's own. Dropping it kills every node and removes
/// their directories, also when the test panics.
pub struct RedisCluster {
    test: String,
    nodes: Vec<RedisServer>,
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("test", &self.test)
            .field("ports", &self.ports())
            .finish_non_exhaustive()
    }
}

/// Returns a client port whose bus port is free too, never one handed out before in this
/// process, so parallel tests (and a master stopped for a while) keep their ports.
fn cluster_port() -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    // Processes running tests at the same time start from different places in the range.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let seed = u64::from(std::process::id()) * 7919
        + u64::from(nanos / 1000)
        + COUNTER.fetch_add(1, Ordering::Relaxed) * 131;
    for step in 0..u64::from(PORT_SPAN) {
        let port = PORT_BASE + ((seed + step) % u64::from(PORT_SPAN)) as u16;
        if taken.contains(&port) {
            continue;
        }
        let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if bindable(port) && bindable(port + BUS_OFFSET) {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free loopback port pair (port, port + {BUS_OFFSET}) from {PORT_BASE}");
}

/// The major version of `redis-server`, `Ok(None)` when it is not on `PATH`.
fn server_major_version() -> Result<Option<u32>, String> {
    let output = match Command::new(REDIS_SERVER_BIN)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot run {REDIS_SERVER_BIN}: {err}")),
    };
    // "Redis server v=7.0.15 sha=... malloc=... bits=64 build=..."
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .and_then(|version| version.split('.').next())
        .and_then(|major| major.parse().ok())
        .map(Some)
        .ok_or_else(|| format!("cannot read the version of {REDIS_SERVER_BIN} from {text:?}"))
}

/// Opens a connection to `url`, bounded by a second.
async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    match tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "connect timed out",
        ))),
    }
}

/// Sends `cmd` to `url` over a fresh connection, bounded by a few seconds.
async fn query<T: redis::FromRedisValue>(url: &str, cmd: &redis::Cmd) -> Result<T, String> {
    let attempt = async {
        let mut conn = connect(url).await?;
        cmd.query_async::<T>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{url}: {err}")),
        Err(_) => Err(format!("{url}: no answer in time")),
    }
}

/// Escapes the characters `SCAN`'s glob treats specially.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The slots `(first, last)` [`RedisCluster::start`] gives master `i`.
fn slot_range(i: usize) -> (u16, u16) {
    let per_master = SLOTS / MASTERS as u16;
    let first = per_master * i as u16;
    let last = if i + 1 == MASTERS {
        SLOTS - 1
    } else {
        first + per_master - 1
    };
    (first, last)
}

/// The slot map as one node reports it: `(first slot, last slot, client port)`, sorted.
type SlotMap = Vec<(u16, u16, u16)>;

impl RedisCluster {
    /// Starts a three-master cluster for `test` and waits until it serves every slot.
    ///
    /// Returns `None` after printing a skip line when `redis-server` is not on `PATH` or is
    /// too old for Redis Cluster (panics instead when services are required). Panics when
    /// the cluster does not form.
    pub async fn start(test: &str) -> Option<RedisCluster> {
        match server_major_version() {
            Ok(None) => {
                missing(test, &format!("{REDIS_SERVER_BIN} is not on PATH"));
                return None;
            }
            Ok(Some(major)) if major < 3 => {
                missing(
                    test,
                    &format!("{REDIS_SERVER_BIN} {major}.x has no cluster support"),
                );
                return None;
            }
            Ok(Some(_)) => {}
            Err(err) => panic!("{test}: {err}"),
        }

        let timeout = NODE_TIMEOUT_MS.to_string();
        let settings = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            timeout.as_str(),
            "--cluster-require-full-coverage",
            "no",
        ];
        let (a, b, c) = tokio::join!(
            RedisServer::start_on(test, &settings, cluster_port),
            RedisServer::start_on(test, &settings, cluster_port),
            RedisServer::start_on(test, &settings, cluster_port),
        );
        let cluster = RedisCluster {
            test: test.to_owned(),
            nodes: vec![a?, b?, c?],
        };

        for (i, node) in cluster.nodes.iter().enumerate() {
            let (first, last) = slot_range(i);
            // Distinct config epochs from the start spare the nodes a round of collision
            // handling before they agree.
            let mut epoch = redis::cmd("CLUSTER");
            epoch.arg("SET-CONFIG-EPOCH").arg(i + 1);
            let mut slots = redis::cmd("CLUSTER");
            slots
                .arg("ADDSLOTS")
                .arg((first..=last).collect::<Vec<u16>>());
            for cmd in [epoch, slots] {
                query::<()>(&node.url(), &cmd)
                    .await
                    .unwrap_or_else(|err| panic!("{test}: cannot set up a cluster node: {err}"));
            }
        }
        for other in &cluster.nodes[1..] {
            let mut meet = redis::cmd("CLUSTER");
            meet.arg("MEET").arg("127.0.0.1").arg(other.port());
            query::<()>(&cluster.nodes[0].url(), &meet)
                .await
                .unwrap_or_else(|err| panic!("{test}: CLUSTER MEET failed: {err}"));
        }
        cluster.wait_until_healthy().await;
        Some(cluster)
    }

    /// The client ports of the masters, in master order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The URL of master `i`, `redis://127.0.0.1:<port>`; the same across restarts.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// The URL of every master, `redis://127.0.0.1:<port>` each, in master order.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The seed URLs joined by commas, the format of `REDIS_CLUSTER_URLS`.
    pub fn urls_env(&self) -> String {
        self.seed_urls().join(",")
    }

    /// Kills master `i` and waits until its port refuses connections. Its slots fail until
    /// [`start_master`](Self::start_master); the other masters keep serving theirs.
    pub async fn stop_master(&mut self, i: usize) {
        self.nodes[i].stop().await;
    }

    /// Starts master `i` again on its port from its `nodes.conf`, so it rejoins with its
    /// slots, and waits until every node serves every slot again.
    pub async fn start_master(&mut self, i: usize) {
        self.nodes[i].restart().await;
        self.wait_until_healthy().await;
    }

    /// The hash slot of `key`, as `CLUSTER KEYSLOT` on a running master computes it.
    pub async fn slot_for_key(&self, key: &str) -> u16 {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("KEYSLOT").arg(key);
        let mut last_error = String::from("no master is running");
        for node in &self.nodes {
            match query::<u16>(&node.url(), &cmd).await {
                Ok(slot) => return slot,
                Err(err) => last_error = err,
            }
        }
        panic!(
            "{}: CLUSTER KEYSLOT {key:?} failed: {last_error}",
            self.test
        );
    }

    /// The index of the master that serves `key`'s slot.
    pub async fn node_for_key(&self, key: &str) -> usize {
        let slot = self.slot_for_key(key).await;
        (0..MASTERS)
            .find(|&i| {
                let (first, last) = slot_range(i);
                (first..=last).contains(&slot)
            })
            .unwrap_or_else(|| panic!("slot {slot} of {key:?} is out of range"))
    }

    /// How many keys starting with `prefix` each master holds (`SCAN` on each node).
    ///
    /// Panics when a master is not running.
    pub async fn count_keys_per_master(&self, prefix: &str) -> [usize; MASTERS] {
        let pattern = format!("{}*", glob_escape(prefix));
        let mut counts = [0; MASTERS];
        for (i, node) in self.nodes.iter().enumerate() {
            let mut conn = connect(&node.url())
                .await
                .unwrap_or_else(|err| panic!("{}: master {i}: {err}", self.test));
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_else(|err| panic!("{}: SCAN on master {i}: {err}", self.test));
                counts[i] += keys.len();
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        counts
    }

    /// Waits until every node knows all three, serves every slot, and all report the same
    /// slot map with one range per master in master order. Panics after [`CLUSTER_WAIT`].
    pub async fn wait_until_healthy(&self) {
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            let Err(last) = self.health().await else {
                return;
            };
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|node| read_log(&node.dir.join("redis.log")))
                    .collect();
                panic!(
                    "{}: the cluster on ports {:?} did not become healthy within \
                     {CLUSTER_WAIT:?}: {last}\nlogs:\n{}",
                    self.test,
                    self.ports(),
                    logs.join("\n---\n")
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `Ok` when the cluster is healthy, else what is not yet so.
    async fn health(&self) -> Result<(), String> {
        let expected = self.expected_slot_map();
        for node in &self.nodes {
            let info: String = query(&node.url(), redis::cmd("CLUSTER").arg("INFO")).await?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .unwrap_or("")
                    .to_owned()
            };
            let (state, slots_ok, known) = (
                field("cluster_state"),
                field("cluster_slots_ok"),
                field("cluster_known_nodes"),
            );
            if state != "ok" || slots_ok != SLOTS.to_string() || known != MASTERS.to_string() {
                return Err(format!(
                    "port {}: cluster_state:{state} cluster_slots_ok:{slots_ok} \
                     cluster_known_nodes:{known}",
                    node.port()
                ));
            }
            let slots: Vec<Vec<redis::Value>> =
                query(&node.url(), redis::cmd("CLUSTER").arg("SLOTS")).await?;
            let mut map = parse_slot_map(&slots).ok_or_else(|| {
                format!("port {}: unreadable CLUSTER SLOTS {slots:?}", node.port())
            })?;
            map.sort_unstable();
            if map != expected {
                return Err(format!("port {}: slot map {map:?}", node.port()));
            }
        }
        Ok(())
    }

    /// The slot map [`start`](Self::start) sets up.
    fn expected_slot_map(&self) -> SlotMap {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (first, last) = slot_range(i);
                (first, last, node.port())
            })
            .collect()
    }
}

/// Reads `CLUSTER SLOTS` (`[first, last, [ip, port, id, ...], replicas...]` per range) into
/// `(first, last, master port)` triples.
fn parse_slot_map(ranges: &[Vec<redis::Value>]) -> Option<SlotMap> {
    ranges
        .iter()
        .map(|range| {
            let first = redis::from_redis_value_ref::<u16>(range.first()?).ok()?;
            let last = redis::from_redis_value_ref::<u16>(range.get(1)?).ok()?;
            let redis::Value::Array(master) = range.get(2)? else {
                return None;
            };
            let port = redis::from_redis_value_ref::<u16>(master.get(1)?).ok()?;
            Some((first, last, port))
        })
        .collect()
}
