use std::{
    fmt,
    future::Future,
    ops::{Deref, DerefMut},
    panic::Location,
    sync::Arc,
    time::{Duration, Instant},
};

use ::redis::{
    Client, Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, PubSub},
};

use super::connection::{LastConnectError, RedisConnection, RedisManager};
use crate::pool::{
    AcquireStats, Error, PoolSnapshot, Result,
    watch::{self, CheckoutGuard, Checkouts, Watched, checked_out},
};

/// A bb8 pool of Redis connections, each held by one task at a time.
///
/// Use it for what a shared [`RedisHandle`](super::RedisHandle) cannot do: blocking commands
/// (`BLPOP`, `BRPOPLPUSH`, `XREAD BLOCK`, `WAIT`), `WATCH`/`MULTI`/`EXEC` transactions, and
/// anything else that needs the connection to itself. For ordinary commands the handle is
/// faster: a checkout costs a trip through the pool, and each connection carries one task's
/// commands instead of everyone's.
///
/// A connection whose last user left it in a foreign state (a transaction open, a command
/// cancelled before its reply, a connection error) is closed on return instead of being
/// reused; see [`RedisConnection`]. Cloning the pool is cheap and shares its connections.
///
/// [`get`](Self::get) measures how long each checkout waited, counts the ones that timed out,
/// and turns bb8's bare timeout into an [`Error::AcquireTimeout`] that says why: every
/// connection was in use, or the server refused new ones, with the error it gave.
///
/// Each pool runs a small background task (it ends with the pool's last handle) that logs at
/// WARN when utilisation stays above 80 % for 10 seconds (at most once a minute), and when a
/// connection is held longer than the
/// [`leak_threshold`](super::RedisPoolBuilder::leak_threshold), naming the `file:line` of the
/// `get` that checked it out.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> perfkit::pool::Result<()> {
/// use perfkit::pool::RedisPoolBuilder;
/// use redis::AsyncCommands;
///
/// let pool = RedisPoolBuilder::new("redis://127.0.0.1:6379")
///     .max_connections(8)
///     .build_pool()
///     .await?;
///
/// // A transaction: WATCH a key, read it, write it back only if nobody changed it meanwhile.
/// let mut conn = pool.get().await?;
/// let () = redis::cmd("WATCH").arg("balance").query_async(&mut conn).await?;
/// let balance: Option<i64> = conn.get("balance").await?;
/// let balance = balance.unwrap_or(0);
/// let committed: Option<()> = redis::pipe()
///     .atomic()
///     .set("balance", balance + 10)
///     .ignore()
///     .query_async(&mut conn)
///     .await?;
/// println!("committed: {}", committed.is_some());
/// println!("{:?}", pool.stats());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisPool {
    shared: Arc<Shared>,
}

/// What every handle of one pool shares, and what its background watch looks at.
struct Shared {
    pool: bb8::Pool<RedisManager>,
    client: Client,
    url: String,
    max: u32,
    min: u32,
    connection_timeout: Duration,
    last_error: LastConnectError,
    stats: AcquireStats,
    /// `None` when leak detection is off.
    checkouts: Option<Arc<Checkouts>>,
    leak_threshold: Option<Duration>,
}

/// What the builder hands to [`RedisPool::new`].
pub(super) struct PoolSettings {
    pub(super) url: String,
    pub(super) max: u32,
    pub(super) min: u32,
    pub(super) connection_timeout: Duration,
    pub(super) leak_threshold: Option<Duration>,
    pub(super) last_error: LastConnectError,
}

impl RedisPool {
    /// The pool over `pool`, with its background watch spawned on the current runtime.
    pub(super) fn new(
        pool: bb8::Pool<RedisManager>,
        client: Client,
        settings: PoolSettings,
    ) -> Self {
        let shared = Arc::new(Shared {
            pool,
            client,
            url: settings.url,
            max: settings.max,
            min: settings.min,
            connection_timeout: settings.connection_timeout,
            last_error: settings.last_error,
            stats: AcquireStats::default(),
            checkouts: settings
                .leak_threshold
                .map(|_| Arc::new(Checkouts::new(settings.max))),
            leak_threshold: settings.leak_threshold,
        });
        watch::spawn(&shared);
        Self { shared }
    }

    /// Checks a connection out of the pool, opening one if none is idle and the pool is not
    /// full, or waiting for one to come back. It returns to the pool when dropped.
    ///
    /// Records how long the wait took, and where it was called from: a connection held
    /// longer than the [`leak_threshold`](super::RedisPoolBuilder::leak_threshold) is
    /// reported with that `file:line`.
    ///
    /// # Errors
    ///
    /// [`Error::AcquireTimeout`] when no connection was available within the
    /// [`connection_timeout`](super::RedisPoolBuilder::connection_timeout); its `cause` reads
    /// `all N connections are in use`, or `last connect error: ...` with the error the
    /// server gave when the pool tried to open one.
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<PooledRedisConnection>> + Send + use<> {
        let location = Location::caller();
        let shared = Arc::clone(&self.shared);
        async move {
            let started = Instant::now();
            match shared.pool.get_owned().await {
                Ok(conn) => {
                    let checkout =
                        checked_out(&shared.stats, shared.checkouts.as_ref(), location, started);
                    Ok(PooledRedisConnection {
                        _checkout: checkout,
                        conn,
                    })
                }
                Err(bb8::RunError::User(error)) => Err(Error::Redis(error)),
                Err(bb8::RunError::TimedOut) => {
                    let waited = started.elapsed();
                    shared.stats.timed_out();
                    let cause = shared.timeout_cause();
                    tracing::warn!(
                        url = %shared.url,
                        waited_ms = waited.as_millis() as u64,
                        cause = %cause,
                        "timed out waiting for a Redis pool connection"
                    );
                    Err(Error::AcquireTimeout {
                        url: shared.url.clone(),
                        waited,
                        cause,
                    })
                }
            }
        }
    }

    /// Opens a dedicated pub/sub connection, outside the pool (a subscribed connection can do
    /// nothing else, so it is never shared nor pooled).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when the server cannot be reached within the
    /// [`connection_timeout`](super::RedisPoolBuilder::connection_timeout).
    pub async fn pubsub(&self) -> Result<PubSub> {
        let connect = self.shared.client.get_async_pubsub();
        match tokio::time::timeout(self.shared.connection_timeout, connect).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::Redis(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out opening a pub/sub connection",
            )))),
        }
    }

    /// A snapshot of the pool: sizes from bb8, checkout latencies and timeouts measured by
    /// [`get`](Self::get). `max` is [`max_connections`](super::RedisPoolBuilder::max_connections)
    /// and `min` is [`min_idle`](super::RedisPoolBuilder::min_idle) (0 when unset).
    pub fn stats(&self) -> PoolSnapshot {
        self.shared.sizes()
    }

    /// The server's URL, without its password.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The underlying bb8 pool, for what this type does not expose (its `state()` with bb8's
    /// own statistics, `dedicated_connection()`). Checkouts made on it directly are not
    /// counted in [`stats`](Self::stats) and time out with bb8's bare error.
    pub fn inner(&self) -> &bb8::Pool<RedisManager> {
        &self.shared.pool
    }
}

impl Shared {
    /// Why a checkout found no connection.
    fn timeout_cause(&self) -> String {
        let state = self.pool.state();
        let max = self.max;
        if state.connections >= max && state.idle_connections == 0 {
            return format!("all {max} connections are in use");
        }
        match self.last_error.get() {
            Some(error) => format!("last connect error: {error}"),
            None => format!(
                "{} of {max} connections are open and busy, and no new one opened in time \
                 (no connect error was reported)",
                state.connections
            ),
        }
    }
}

impl Watched for Shared {
    const WORK: &'static str = "commands";
    const SIZE_SETTINGS: &'static str = "max_connections (REDIS_MAX_CONNECTIONS)";

    fn url(&self) -> &str {
        &self.url
    }

    fn utilisation(&self) -> f64 {
        let state = self.pool.state();
        let in_use = state.connections.saturating_sub(state.idle_connections);
        f64::from(in_use) / f64::from(self.max.max(1))
    }

    fn sizes(&self) -> PoolSnapshot {
        let state = self.pool.state();
        self.stats.snapshot(
            state.connections,
            state.idle_connections.min(state.connections),
            self.max,
            self.min,
        )
    }

    fn stats(&self) -> &AcquireStats {
        &self.stats
    }

    fn leak_watch(&self) -> Option<(&Checkouts, Duration)> {
        Some((self.checkouts.as_deref()?, self.leak_threshold?))
    }

    /// A bb8 pool is never closed: the watch ends with the last [`RedisPool`] handle.
    fn is_closed(&self) -> bool {
        false
    }
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.pool.state();
        f.debug_struct("RedisPool")
            .field("url", &self.shared.url)
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .field("max", &self.shared.max)
            .finish_non_exhaustive()
    }
}

/// A connection checked out of a [`RedisPool`]; it goes back to the pool when dropped.
///
/// Send commands on `&mut conn`: it implements redis-rs's [`ConnectionLike`], so
/// [`redis::AsyncCommands`], `cmd(..).query_async(&mut conn)`, pipelines and scripts all work.
/// It dereferences to the [`RedisConnection`] it holds.
///
/// # Example
///
/// ```no_run
/// # async fn run(pool: perfkit::pool::RedisPool) -> perfkit::pool::Result<()> {
/// use std::time::Duration;
/// use redis::AsyncCommands;
///
/// let mut conn = pool.get().await?;
/// // Block up to 30 s for a job: longer than the default response timeout, so lift it for
/// // this checkout only.
/// conn.set_response_timeout(Some(Duration::from_secs(35)));
/// let job: Option<(String, String)> = conn.blpop("jobs", 30.0).await?;
/// # let _ = job;
/// # Ok(())
/// # }
/// ```
pub struct PooledRedisConnection {
    // Declared first so that it is dropped first: the slot is free before bb8 can hand the
    // connection to someone else.
    _checkout: Option<CheckoutGuard>,
    conn: bb8::PooledConnection<'static, RedisManager>,
}

impl Deref for PooledRedisConnection {
    type Target = RedisConnection;

    fn deref(&self) -> &RedisConnection {
        &self.conn
    }
}

impl DerefMut for PooledRedisConnection {
    fn deref_mut(&mut self) -> &mut RedisConnection {
        &mut self.conn
    }
}

impl ConnectionLike for PooledRedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl fmt::Debug for PooledRedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PooledRedisConnection")
            .field(&*self.conn)
            .finish()
    }
}
