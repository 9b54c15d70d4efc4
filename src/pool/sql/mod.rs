//! sqlx pools: PostgreSQL and SQLite.
//!
//! [`SqlPool`] wraps a `sqlx::Pool` built by [`PgPoolBuilder`] or [`SqlitePoolBuilder`]. On top
//! of sqlx it measures acquires, explains acquire timeouts, pings only connections that sat
//! idle, recycles connections with jitter, and watches for leaked connections and sustained
//! high utilisation.

mod before_acquire;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod replicated;
mod settings;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::{
    fmt,
    future::Future,
    ops::{Deref, DerefMut},
    panic::Location,
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::{ConnectOptions, Connection, Database, pool::PoolOptions};

use self::{
    before_acquire::{AcquireCheck, Recycle},
    settings::Common,
};
use super::{
    AcquireStats, Error, PoolSnapshot, Result,
    watch::{self, CheckoutGuard, Checkouts, Watched, checked_out},
};

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::postgres::PgPoolBuilder;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::replicated::{
    PrimaryPin, ReplicaSnapshot, ReplicaStatus, ReplicatedPool, ReplicatedPoolBuilder,
    ReplicatedSnapshot,
};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::sqlite::SqlitePoolBuilder;

/// A PostgreSQL pool, built by [`PgPoolBuilder`].
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub type PgPool = SqlPool<sqlx::Postgres>;

/// A SQLite pool, built by [`SqlitePoolBuilder`].
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub type SqlitePool = SqlPool<sqlx::Sqlite>;

/// The connect options of database `DB`.
type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

/// How long the cause found for an acquire timeout is reused: an outage makes every waiting
/// acquire time out, and one connect attempt a second is enough to name the cause.
const CAUSE_TTL: Duration = Duration::from_secs(1);
/// The longest a connect attempt made to explain an acquire timeout may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection pool over sqlx, with acquire statistics and clear errors.
///
/// Cheap to clone: clones share one pool. It dereferences to [`sqlx::Pool`], so it runs
/// queries directly (`query.fetch_all(&*pool)`) and offers everything sqlx's pool does;
/// [`acquire`](Self::acquire) goes through perfkit, which measures the wait, explains a
/// timeout and watches for connections held too long.
///
/// Built by:
#[cfg_attr(
    feature = "postgres",
    doc = "- [`PgPoolBuilder`], for PostgreSQL ([`PgPool`] is `SqlPool<Postgres>`);"
)]
#[cfg_attr(
    feature = "sqlite",
    doc = "- [`SqlitePoolBuilder`], for SQLite ([`SqlitePool`] is `SqlPool<Sqlite>`)."
)]
///
/// Each pool runs a small background task (it ends with the pool) that logs at WARN when
/// utilisation stays above 80 % for 10 seconds (at most once a minute) and when a connection
/// is held longer than the leak threshold.
///
/// # Example
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn run() -> perfkit::pool::Result<()> {
/// use perfkit::pool::PgPoolBuilder;
///
/// // DATABASE_URL, DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_TIMEOUT, DB_POOL_RECYCLE, DB_QUERY_TIMEOUT
/// let pool = PgPoolBuilder::from_env()?.application_name("billing").build().await?;
///
/// // A query on the pool itself.
/// let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&*pool).await?;
///
/// // A connection of its own, for several statements; back to the pool when dropped.
/// let mut conn = pool.acquire().await?;
/// let id: i64 = sqlx::query_scalar("INSERT INTO users (name) VALUES ('ada') RETURNING id")
///     .fetch_one(&mut *conn)
///     .await?;
/// sqlx::query("INSERT INTO audit (user_id) VALUES ($1)").bind(id).execute(&mut *conn).await?;
/// drop(conn);
///
/// let stats = pool.stats();
/// println!("{} of {} connections in use, p99 acquire {} ms", stats.in_use, stats.max, stats.acquire_p99_ms);
/// # Ok(())
/// # }
/// ```
pub struct SqlPool<DB: Database> {
    shared: Arc<Shared<DB>>,
}

// NOTE: not derived, which would require `DB: Clone`.
impl<DB: Database> Clone for SqlPool<DB> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<DB: Database> fmt::Debug for SqlPool<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlPool")
            .field("url", &self.shared.url)
            .field("size", &self.shared.pool.size())
            .field("idle", &self.shared.pool.num_idle())
            .field("max", &self.shared.max)
            .field("min", &self.shared.min)
            .finish_non_exhaustive()
    }
}

impl<DB: Database> Deref for SqlPool<DB> {
    type Target = sqlx::Pool<DB>;

    fn deref(&self) -> &sqlx::Pool<DB> {
        &self.shared.pool
    }
}

/// What every handle of one pool shares, and what its background watch looks at.
struct Shared<DB: Database> {
    pool: sqlx::Pool<DB>,
    /// The URL, password removed.
    url: String,
    stats: AcquireStats,
    /// `None` when leak detection is off.
    checkouts: Option<Arc<Checkouts>>,
    leak_threshold: Option<Duration>,
    min: u32,
    max: u32,
    /// The last cause found for an acquire timeout, and when.
    cause: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

impl<DB: Database> SqlPool<DB> {
    /// The sqlx pool underneath, for APIs that want one.
    ///
    /// Queries run on it directly are not counted in [`stats`](Self::stats) acquires and
    /// are not watched for leaks.
    pub fn sqlx(&self) -> &sqlx::Pool<DB> {
        &self.shared.pool
    }

    /// The URL the pool connects to, password replaced by `***`.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Sizes, acquire counts and latencies, timeouts and leaks, as of now.
    pub fn stats(&self) -> PoolSnapshot {
        self.shared.sizes()
    }

    /// Closes the pool: pending and later acquires fail with [`Error::Closed`], idle
    /// connections are closed, and this waits until every connection out has come back
    /// and been closed.
    pub async fn close(&self) {
        self.shared.pool.close().await;
    }

    /// Waits for a connection, for at most the acquire timeout.
    ///
    /// Records how long the wait took, and where it was called from: a connection held
    /// longer than the leak threshold is reported with that `file:line`. The connection
    /// goes back to the pool when the returned [`PooledConnection`] is dropped.
    ///
    /// # Errors
    ///
    /// - [`Error::AcquireTimeout`] when no connection became available in time. Its cause
    ///   says whether every connection was in use, or the server refused new ones and why
    ///   (`last connect error: ...`): sqlx retries refused connections until the deadline
    ///   and then drops the error, so perfkit makes one connect attempt of its own, at most
    ///   once a second per pool, to name it, within the acquire timeout: the wait for sqlx
    ///   ends a tenth of the timeout (at most 1 s) early to leave the attempt that time. The
    ///   timeout is counted in
    ///   [`PoolSnapshot::acquire_timeouts`].
    /// - [`Error::Closed`] when the pool was closed.
    /// - [`Error::Sql`] when opening a connection failed for a reason sqlx does not retry
    ///   (authentication, unknown database, TLS).
    #[track_caller]
    pub fn acquire(&self) -> impl Future<Output = Result<PooledConnection<DB>>> + Send + use<DB> {
        let location = Location::caller();
        let shared = Arc::clone(&self.shared);
        async move {
            let started = Instant::now();
            match shared.acquire_within_timeout().await {
                Ok(conn) => {
                    let checkout =
                        checked_out(&shared.stats, shared.checkouts.as_ref(), location, started);
                    Ok(PooledConnection {
                        _checkout: checkout,
                        conn,
                    })
                }
                Err(error) => Err(shared.acquire_error(error, started.elapsed()).await),
            }
        }
    }
}

impl<DB: Database> Watched for Shared<DB> {
    const WORK: &'static str = "queries";
    const SIZE_SETTINGS: &'static str = "DB_POOL_SIZE / DB_MAX_OVERFLOW";

    fn url(&self) -> &str {
        &self.url
    }

    fn utilisation(&self) -> f64 {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        f64::from(size.saturating_sub(idle)) / f64::from(self.max.max(1))
    }

    fn sizes(&self) -> PoolSnapshot {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle())
            .unwrap_or(u32::MAX)
            .min(size);
        self.stats.snapshot(size, idle, self.max, self.min)
    }

    fn stats(&self) -> &AcquireStats {
        &self.stats
    }

    fn leak_watch(&self) -> Option<(&Checkouts, Duration)> {
        Some((self.checkouts.as_deref()?, self.leak_threshold?))
    }

    fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

impl<DB: Database> Shared<DB> {
    /// sqlx's `acquire`, ended early enough that finding out why it timed out still fits in
    /// the acquire timeout.
    ///
    /// While the pool is below its size limit, a timeout means connections failed to open:
    /// the wait stops [`probe_timeout`](Self::probe_timeout) early and the probe in
    /// [`timeout_cause`](Self::timeout_cause) uses the rest. At the limit no probe runs, so
    /// the wait goes on for the whole timeout.
    async fn acquire_within_timeout(&self) -> Result<sqlx::pool::PoolConnection<DB>, sqlx::Error> {
        let total = self.pool.options().get_acquire_timeout();
        let mut acquire = std::pin::pin!(self.pool.acquire());
        match tokio::time::timeout(total.saturating_sub(self.probe_timeout()), &mut acquire).await {
            Ok(result) => result,
            Err(_) if self.pool.size() >= self.max => {
                tokio::time::timeout(self.probe_timeout(), &mut acquire)
                    .await
                    .unwrap_or(Err(sqlx::Error::PoolTimedOut))
            }
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// Turns an error of sqlx's `acquire` into ours.
    async fn acquire_error(&self, error: sqlx::Error, waited: Duration) -> Error {
        match error {
            sqlx::Error::PoolTimedOut => {
                self.stats.timed_out();
                Error::AcquireTimeout {
                    url: self.url.clone(),
                    waited,
                    cause: self.timeout_cause().await,
                }
            }
            sqlx::Error::PoolClosed => Error::Closed,
            other => Error::Sql(other),
        }
    }

    /// Why an acquire timed out: every connection in use, or connections failing to open.
    async fn timeout_cause(&self) -> String {
        let all_in_use = || all_in_use(self.max);
        // At its size limit the pool could not have opened a connection anyway: the wait
        // was for one to come back.
        if self.pool.size() >= self.max {
            return all_in_use();
        }
        // Below it, sqlx was trying to connect, retrying refusals until the deadline.
        let mut cause = self.cause.lock().await;
        if let Some((at, last_error)) = &*cause
            && at.elapsed() < CAUSE_TTL
        {
            return last_error
                .as_ref()
                .map_or_else(all_in_use, |err| format!("last connect error: {err}"));
        }
        let last_error = probe::<DB>(&self.pool.connect_options(), self.probe_timeout())
            .await
            .err()
            .map(|err| err.to_string());
        *cause = Some((Instant::now(), last_error.clone()));
        last_error.map_or_else(all_in_use, |err| format!("last connect error: {err}"))
    }

    /// How long the probe for a timeout's cause may take: a tenth of the acquire timeout, at
    /// most [`PROBE_TIMEOUT`].
    fn probe_timeout(&self) -> Duration {
        (self.pool.options().get_acquire_timeout() / 10).min(PROBE_TIMEOUT)
    }

    /// The error `build()` returns when its first connection could not be opened.
    async fn connect_error(&self, error: sqlx::Error) -> Error {
        let source: Box<dyn std::error::Error + Send + Sync> = match error {
            sqlx::Error::PoolClosed => return Error::Closed,
            sqlx::Error::PoolTimedOut => {
                let timeout = self.pool.options().get_acquire_timeout();
                match probe::<DB>(&self.pool.connect_options(), self.probe_timeout()).await {
                    Err(cause) => Box::new(cause),
                    Ok(()) => format!(
                        "no connection could be opened within the acquire timeout ({} ms); \
                         the server accepted one only afterwards",
                        timeout.as_millis()
                    )
                    .into(),
                }
            }
            other => Box::new(other),
        };
        Error::Connect {
            url: self.url.clone(),
            source,
        }
    }
}

/// `all N connections are in use`, in good English for any N.
fn all_in_use(max: u32) -> String {
    if max == 1 {
        "its only connection is in use".to_owned()
    } else {
        format!("all {max} connections are in use")
    }
}

/// Why a connect attempt made to explain a timeout failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("the server did not answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
}

/// Opens one connection with the pool's options, bounded by `timeout`, and closes it.
async fn probe<DB: Database>(
    options: &Options<DB>,
    timeout: Duration,
) -> std::result::Result<(), ProbeError> {
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => {
            // Closing politely takes a round trip the caller need not wait for.
            tokio::spawn(conn.close());
            Ok(())
        }
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(ProbeError::NoAnswer(timeout)),
    }
}

/// A connection acquired with [`SqlPool::acquire`]; back to the pool when dropped.
///
/// Dereferences to the driver's connection, so `&mut *conn` runs queries:
/// `sqlx::query("...").execute(&mut *conn)`.
pub struct PooledConnection<DB: Database> {
    // Declared first so that it is dropped first: the slot is free before sqlx can hand the
    // connection to someone else.
    _checkout: Option<CheckoutGuard>,
    conn: sqlx::pool::PoolConnection<DB>,
}

impl<DB: Database> PooledConnection<DB> {
    /// The sqlx connection, no longer watched for leaks; it still goes back to the pool
    /// when dropped.
    pub fn into_sqlx(self) -> sqlx::pool::PoolConnection<DB> {
        self.conn
    }
}

impl<DB: Database> fmt::Debug for PooledConnection<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection").finish_non_exhaustive()
    }
}

impl<DB: Database> Deref for PooledConnection<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for PooledConnection<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

// ===== Building =====

/// What a builder hands to [`build_pool`]: its settings, resolved.
struct Plan<DB: Database> {
    common: Common,
    options: Options<DB>,
    /// The URL, password removed.
    url: String,
    /// SQLite in memory: one connection, never closed (see `SqlitePoolBuilder`).
    single_connection: bool,
}

/// Builds a pool from `plan` and opens its first connections.
async fn build_pool<DB: Database>(plan: Plan<DB>) -> Result<SqlPool<DB>> {
    let pool = build_lazy_pool(plan)?;
    warm_up(&pool.shared, pool.shared.min.max(1)).await?;
    Ok(pool)
}

/// Builds a pool from `plan`, sqlx options and background watch, without connecting.
fn build_lazy_pool<DB: Database>(plan: Plan<DB>) -> Result<SqlPool<DB>> {
    let Plan {
        common,
        mut options,
        url,
        single_connection,
    } = plan;
    common.validate()?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Config(
            "a pool must be built inside a tokio runtime: it spawns its background tasks there"
                .into(),
        ));
    }

    let (min, max) = if single_connection {
        (1, 1)
    } else {
        (
            common.pool_size.min(common.max_connections()),
            common.max_connections(),
        )
    };
    let recycle = if single_connection {
        None
    } else {
        common.recycle.map(Recycle::new)
    };
    let check = AcquireCheck {
        ping_after: common.pre_ping.then_some(common.pre_ping_after),
        recycle: recycle.clone(),
    };
    options = match common.slow_statement {
        Some(threshold) => options.log_slow_statements(log::LevelFilter::Warn, threshold),
        None => options.log_slow_statements(log::LevelFilter::Off, Duration::MAX),
    };

    let mut pool_options = PoolOptions::<DB>::new()
        .max_connections(max)
        .min_connections(min)
        .acquire_timeout(common.acquire_timeout)
        .idle_timeout(if single_connection {
            None
        } else {
            common.idle_timeout
        })
        .max_lifetime(recycle.as_ref().map(Recycle::upper_bound))
        .test_before_acquire(false);
    if check.is_needed() {
        pool_options = pool_options.before_acquire(move |conn, meta| check.run(conn, meta));
    }
    let pool = pool_options.connect_lazy_with(options);

    let shared = Arc::new(Shared {
        pool,
        url,
        stats: AcquireStats::default(),
        checkouts: common.leak_threshold.map(|_| Arc::new(Checkouts::new(max))),
        leak_threshold: common.leak_threshold,
        min,
        max,
        cause: tokio::sync::Mutex::new(None),
    });
    watch::spawn(&shared);
    Ok(SqlPool { shared })
}

/// Opens `count` connections: the first must succeed, the others are opened together and
/// any that fail are left to later acquires.
async fn warm_up<DB: Database>(shared: &Shared<DB>, count: u32) -> Result<()> {
    let first = match shared.pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => return Err(shared.connect_error(error).await),
    };
    let mut opened = vec![first];
    let mut others = tokio::task::JoinSet::new();
    for _ in 1..count {
        let pool = shared.pool.clone();
        others.spawn(async move { pool.acquire().await });
    }
    while let Some(joined) = others.join_next().await {
        match joined {
            Ok(Ok(conn)) => opened.push(conn),
            Ok(Err(error)) => tracing::warn!(
                url = %shared.url,
                %error,
                "could not open one of the pool's first connections; it will be opened on demand"
            ),
            Err(error) => tracing::warn!(%error, "a connection warm-up task failed"),
        }
    }
    let returned = opened.len();
    drop(opened);
    // sqlx returns connections to the pool from spawned tasks; wait for them briefly, so
    // that the pool's first statistics show them idle.
    let deadline = Instant::now() + Duration::from_millis(100);
    while shared.pool.num_idle() < returned && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_reads_well_for_any_pool_size() {
        assert_eq!(all_in_use(1), "its only connection is in use");
        assert_eq!(all_in_use(20), "all 20 connections are in use");
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn handles_and_connections_can_cross_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PgPool>();
        assert_send_sync::<PooledConnection<sqlx::Postgres>>();
    }
}
