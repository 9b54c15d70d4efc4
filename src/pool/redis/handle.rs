use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering::Relaxed},
    },
    time::Instant,
};

use ::redis::{
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
};

use crate::pool::{AcquireStats, Error, PoolSnapshot, Result};

/// A cheap-to-clone handle on one multiplexed Redis connection that reconnects by itself:
/// the default way to talk to Redis, to one server or to a Redis Cluster.
///
/// Every clone shares one connection (redis-rs's [`ConnectionManager`]; on a cluster,
/// redis-rs's [`ClusterConnection`], one multiplexed connection per node): commands from all
/// tasks are written to it as they come and their replies matched in order, so no task ever
/// waits for a connection to be free, and a burst of commands leaves in few packets. In
/// `benches/redis_pool.rs`, 50 concurrent tasks doing 1 KiB `GET`s get 2 to 4 times the
/// throughput of a bb8 pool of 50 connections (4 to 6 times with bb8's checkout `PING`);
/// from a single task, where each command waits for its reply anyway, the two are level.
///
/// When the connection drops, the command that noticed fails, a reconnect starts in the
/// background, and later commands wait for it (bounded by
/// [`reconnect_retries`](super::RedisPoolBuilder::reconnect_retries) and the
/// [`connection_timeout`](super::RedisPoolBuilder::connection_timeout)); once the server is
/// back the same handle works again. Each command also fails after the
/// [`response_timeout`](super::RedisPoolBuilder::response_timeout) instead of hanging.
///
/// What one shared connection cannot do (blocking pops, `WATCH`/`MULTI`, anything that
/// changes the session with `SELECT` or `CLIENT`) belongs on a
/// [`RedisPool`](super::RedisPool).
///
/// # On a cluster
///
/// A handle built from seed nodes ([`RedisPoolBuilder::cluster`](super::RedisPoolBuilder::cluster),
/// or `REDIS_CLUSTER_URLS` through [`from_env`](super::RedisPoolBuilder::from_env)) is the
/// same type and is used the same way: redis-rs routes each command to the master owning
/// its key's hash slot, follows `MOVED` and `ASK` redirections, refreshes the slot map and
/// reconnects to nodes that come back. The crate's stores hash-tag their keys so that every
/// script they run touches one slot; a script or pipeline of yours must do the same.
///
/// Send commands through [`connection`](Self::connection), or through the handle itself,
/// which implements [`ConnectionLike`] and counts what it sends for [`stats`](Self::stats).
///
/// # Example
///
/// ```no_run
/// # async fn run() -> perfkit::pool::Result<()> {
/// use perfkit::pool::RedisPoolBuilder;
/// use redis::AsyncCommands;
///
/// let handle = RedisPoolBuilder::new("redis://127.0.0.1:6379").build().await?;
///
/// // A clone of the connection for redis-rs commands, scripts and pipelines.
/// let mut conn = handle.connection();
/// let () = conn.set_ex("session:42", "alice", 60).await?;
///
/// // Or the handle itself, counted in its statistics.
/// let mut counted = handle.clone();
/// let user: Option<String> = counted.get("session:42").await?;
/// assert_eq!(user.as_deref(), Some("alice"));
/// assert_eq!(handle.stats().acquires, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisHandle {
    conn: SharedConnection,
    shared: Arc<Shared>,
}

/// The connection every clone of a [`RedisHandle`] shares: to one server, or to a cluster.
///
/// Cloning is cheap (a reference count). It implements [`ConnectionLike`], so every
/// redis-rs command, pipeline and script runs on it as on the connection it wraps.
#[derive(Clone)]
#[non_exhaustive]
pub enum SharedConnection {
    /// One server, through redis-rs's reconnecting [`ConnectionManager`].
    Node(ConnectionManager),
    /// A Redis Cluster, through redis-rs's [`ClusterConnection`].
    Cluster(ClusterConnection),
}

impl SharedConnection {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for SharedConnection {
    #[inline]
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    #[inline]
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Node(_) => "SharedConnection::Node",
            Self::Cluster(_) => "SharedConnection::Cluster",
        })
    }
}

struct Shared {
    url: String,
    /// Where a subscription connection can be opened: the server, or each seed node of a
    /// cluster (whose nodes forward every `PUBLISH` to the subscribers of all the others).
    subscribe_to: Vec<::redis::Client>,
    in_flight: AtomicU32,
    stats: AcquireStats,
}

/// Counts one command as in flight until dropped, even when its future is cancelled.
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl RedisHandle {
    pub(crate) fn new(
        conn: SharedConnection,
        url: String,
        subscribe_to: Vec<::redis::Client>,
    ) -> Self {
        Self {
            conn,
            shared: Arc::new(Shared {
                url,
                subscribe_to,
                in_flight: AtomicU32::new(0),
                stats: AcquireStats::default(),
            }),
        }
    }

    /// A clone of the multiplexed connection, to send any redis-rs command, pipeline or
    /// script on. Cloning is cheap (a reference count); commands sent on it are not counted
    /// in [`stats`](Self::stats).
    pub fn connection(&self) -> SharedConnection {
        self.conn.clone()
    }

    /// The server's URL without its password; for a cluster, the seed nodes' URLs joined
    /// by commas.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Whether the handle talks to a Redis Cluster, where every command and script must
    /// touch keys of one hash slot (group work by [`redis::cluster_routing::Slot::for_key`]).
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// Clients to open a pub/sub connection with (`get_async_pubsub`), in the order to try
    /// them: the server's own, or one per seed node of a cluster, whose nodes forward every
    /// `PUBLISH` to the subscribers of all the others. The shared connection cannot
    /// subscribe; a subscription needs a connection of its own.
    pub fn pubsub_clients(&self) -> &[::redis::Client] {
        &self.shared.subscribe_to
    }

    /// Sends `PING` and checks the reply, for a health check. On a cluster redis-rs sends it
    /// to every node and it succeeds only if all of them answer.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when the server cannot be reached, does not answer within the
    /// response timeout, or answers something other than `PONG`.
    pub async fn ping(&self) -> Result<()> {
        let reply: String = ::redis::cmd("PING").query_async(&mut self.clone()).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(Error::Redis(
                (
                    ::redis::ErrorKind::Client,
                    "PING was not answered with PONG",
                )
                    .into(),
            ))
        }
    }

    /// What the handle has seen of the commands sent through it (by [`ping`](Self::ping) or
    /// on the handle as a [`ConnectionLike`]), in the pool statistics' shape.
    ///
    /// A multiplexed handle has no checkout, so the fields read:
    ///
    /// - `size`, `max`, `min`: 1, the one shared connection;
    /// - `in_use`: commands waiting for their reply right now, all sharing that connection
    ///   (it can exceed 1); `idle` is 1 when there are none, else 0;
    /// - `utilisation`: 1.0 while any command is in flight, else 0.0;
    /// - `acquires` and the `acquire_*_ms` percentiles: commands answered and their round-trip
    ///   times, the figure that rises when the connection or the server is saturated;
    /// - `acquire_timeouts`: commands that failed with a timeout (no reply within the
    ///   response timeout, or no connection within the connection timeout);
    /// - `leaks_reported`: always 0.
    ///
    /// Commands sent on clones from [`connection`](Self::connection) are not counted.
    pub fn stats(&self) -> PoolSnapshot {
        let in_flight = self.shared.in_flight.load(Relaxed);
        let idle = u32::from(in_flight == 0);
        let mut stats = self.shared.stats.snapshot(1, idle, 1, 1);
        stats.in_use = in_flight;
        stats
    }

    fn record<T>(&self, started: Instant, result: &RedisResult<T>) {
        match result {
            Err(error) if error.is_timeout() => self.shared.stats.timed_out(),
            Err(error) if error.is_io_error() => {}
            _ => self.shared.stats.acquired(started.elapsed()),
        }
    }
}

impl ConnectionLike for RedisHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let _in_flight = InFlight::enter(&self.shared.in_flight);
            let started = Instant::now();
            let result = self.conn.req_packed_command(cmd).await;
            self.record(started, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let _in_flight = InFlight::enter(&self.shared.in_flight);
            let started = Instant::now();
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.record(started, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHandle")
            .field("url", &self.shared.url)
            .field("in_flight", &self.shared.in_flight.load(Relaxed))
            .finish_non_exhaustive()
    }
}
