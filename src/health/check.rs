use std::{borrow::Cow, error::Error as StdError, fmt, future::Future};

use async_trait::async_trait;

use crate::fmt::truncate_at_char_boundary;

/// Longest failure message kept from a check, in bytes; longer ones are cut at a character
/// boundary so a report stays small whatever a backend puts in its errors.
const MAX_MESSAGE_LEN: usize = 512;

/// One dependency the service needs: a database, a cache, a queue.
///
/// A check answers whether the dependency works right now. The [`HealthMonitor`] runs every
/// check in the background, each under its own timeout, and keeps the latest results, so
/// `check` may take as long as a real round trip takes.
///
/// Implement it for a type of your own, or build one from a closure with [`check_fn`].
///
/// ```
/// use perfkit::health::{CheckError, HealthCheck, async_trait};
///
/// struct DiskSpace;
///
/// #[async_trait]
/// impl HealthCheck for DiskSpace {
///     fn name(&self) -> &str {
///         "disk"
///     }
///
///     fn critical(&self) -> bool {
///         false
///     }
///
///     async fn check(&self) -> Result<(), CheckError> {
///         let free_bytes: u64 = 10 << 30;
///         if free_bytes < 1 << 30 {
///             return Err(CheckError::new("less than 1 GiB free"));
///         }
///         Ok(())
///     }
/// }
/// ```
///
/// [`HealthMonitor`]: super::HealthMonitor
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// The name the check's result appears under in the report, e.g. `database`.
    fn name(&self) -> &str;

    /// Whether the service cannot work without this dependency.
    ///
    /// A failing critical check makes the report `unhealthy` and `/health/ready` answer
    /// `503`; a failing non-critical check only makes it `degraded`. Defaults to `true`.
    fn critical(&self) -> bool {
        true
    }

    /// Probes the dependency once.
    ///
    /// # Errors
    ///
    /// The reason the dependency does not work; its message appears in the report.
    async fn check(&self) -> Result<(), CheckError>;
}

/// Why a [`HealthCheck`] failed; its message is what the report shows.
///
/// Build one from a message with [`CheckError::new`] or from any error with
/// [`CheckError::from_error`]; `?` converts the errors checks usually meet (sqlx, redis,
/// I/O, boxed errors) on its own. Messages longer than 512 bytes are shortened.
pub struct CheckError {
    inner: Box<Inner>,
}

struct Inner {
    message: Cow<'static, str>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl CheckError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(message.into(), None)
    }

    /// A failure caused by `error`; the message is the error's own, followed by those of its
    /// sources that it does not already include.
    pub fn from_error(error: impl StdError + Send + Sync + 'static) -> Self {
        Self::from_boxed(Box::new(error))
    }

    /// A failure caused by a boxed error, as [`CheckError::from_error`].
    fn from_boxed(error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        Self::from_boxed_in(None, error)
    }

    /// A failure of `what` caused by `error`: `<what> failed: <error>`.
    #[cfg(any(
        feature = "postgres",
        feature = "sqlite",
        feature = "redis",
        feature = "cache"
    ))]
    fn failed(what: &str, error: impl StdError + Send + Sync + 'static) -> Self {
        Self::from_boxed_in(Some(what), Box::new(error))
    }

    fn from_boxed_in(what: Option<&str>, error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        let mut message = match what {
            Some(what) => format!("{what} failed: {error}"),
            None => error.to_string(),
        };
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !message.contains(&cause_text) {
                message.push_str(": ");
                message.push_str(&cause_text);
            }
            if message.len() > MAX_MESSAGE_LEN {
                break;
            }
            source = cause.source();
        }
        Self::build(message.into(), Some(error))
    }

    fn build(
        mut message: Cow<'static, str>,
        source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        if message.len() > MAX_MESSAGE_LEN {
            let kept = truncate_at_char_boundary(&message, MAX_MESSAGE_LEN);
            let mut short = String::with_capacity(kept.len() + '…'.len_utf8());
            short.push_str(kept);
            short.push('…');
            message = Cow::Owned(short);
        }
        Self {
            inner: Box::new(Inner { message, source }),
        }
    }

    /// The message the report shows.
    pub fn message(&self) -> &str {
        &self.inner.message
    }
}

impl fmt::Debug for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckError")
            .field("message", &self.inner.message)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl StdError for CheckError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

impl From<&'static str> for CheckError {
    fn from(message: &'static str) -> Self {
        Self::new(message)
    }
}

impl From<String> for CheckError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<Box<dyn StdError + Send + Sync + 'static>> for CheckError {
    fn from(error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        Self::from_boxed(error)
    }
}

impl From<std::io::Error> for CheckError {
    fn from(error: std::io::Error) -> Self {
        Self::from_error(error)
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl From<sqlx::Error> for CheckError {
    fn from(error: sqlx::Error) -> Self {
        Self::from_error(error)
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for CheckError {
    fn from(error: redis::RedisError) -> Self {
        Self::from_error(error)
    }
}

// ===== check_fn =====

/// A [`HealthCheck`] named `name` that runs `check`.
///
/// The check is critical; call [`CheckFn::non_critical`] for one the service can work
/// without.
///
/// ```
/// use perfkit::health::{CheckError, check_fn};
///
/// let queue = check_fn("queue", || async {
///     let depth = 12_u32;
///     if depth > 10_000 {
///         return Err(CheckError::new(format!("{depth} jobs waiting")));
///     }
///     Ok(())
/// })
/// .non_critical();
/// ```
pub fn check_fn<F, Fut>(name: impl Into<String>, check: F) -> CheckFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CheckError>> + Send,
{
    CheckFn {
        name: name.into(),
        critical: true,
        check,
    }
}

/// A [`HealthCheck`] built from a closure by [`check_fn`].
#[must_use]
pub struct CheckFn<F> {
    name: String,
    critical: bool,
    check: F,
}

impl<F> CheckFn<F> {
    /// Marks the check non-critical: when it fails the report is `degraded` rather than
    /// `unhealthy`, and `/health/ready` still answers `200`. Checks are critical by default.
    pub fn non_critical(mut self) -> Self {
        self.critical = false;
        self
    }
}

impl<F> fmt::Debug for CheckFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckFn")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> HealthCheck for CheckFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CheckError>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> Result<(), CheckError> {
        (self.check)().await
    }
}

// ===== SqlCheck =====

/// A [`HealthCheck`] that runs `SELECT 1` on a sqlx pool.
///
/// Named `database` and critical unless told otherwise. The query waits for a connection
/// like any other, so a pool that is exhausted or cannot connect fails the check; keep the
/// pool's acquire timeout at or below the monitor's check timeout to see its error rather
/// than "timed out".
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn run() -> Result<(), sqlx::Error> {
/// use perfkit::health::{HealthMonitor, SqlCheck};
///
/// let pool = sqlx::PgPool::connect("postgres://app@127.0.0.1/app").await?;
/// let monitor = HealthMonitor::builder().check(SqlCheck::new(pool)).build();
/// monitor.start().await;
/// # Ok(())
/// # }
/// ```
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
#[must_use]
pub struct SqlCheck<DB: sqlx::Database> {
    name: String,
    critical: bool,
    pool: sqlx::Pool<DB>,
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<DB: sqlx::Database> SqlCheck<DB> {
    /// A critical check named `database` on `pool`.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Self {
            name: String::from("database"),
            critical: true,
            pool,
        }
    }

    /// Sets the name the result appears under. Defaults to `database`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Marks the check non-critical (a read replica, an analytics database). Checks are
    /// critical by default.
    pub fn non_critical(mut self) -> Self {
        self.critical = false;
        self
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<DB: sqlx::Database> From<&crate::pool::SqlPool<DB>> for SqlCheck<DB> {
    /// A critical check named `database` on a perfkit pool.
    fn from(pool: &crate::pool::SqlPool<DB>) -> Self {
        Self::new(pool.sqlx().clone())
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<DB: sqlx::Database> fmt::Debug for SqlCheck<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlCheck")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .field("database", &DB::NAME)
            .finish_non_exhaustive()
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[async_trait]
impl<DB> HealthCheck for SqlCheck<DB>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> Result<(), CheckError> {
        sqlx::raw_sql("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|error| CheckError::failed("SELECT 1", error))?;
        Ok(())
    }
}

// ===== RedisCheck =====

/// A [`HealthCheck`] that sends `PING` over a Redis connection and expects `PONG`.
///
/// Named `redis` and critical unless told otherwise. The connection is cloned for each
/// check, so a multiplexed connection such as the default
/// [`ConnectionManager`](redis::aio::ConnectionManager) shares its socket with the
/// application. Give it a response timeout shorter than the monitor's check timeout
/// ([`ConnectionManagerConfig::set_response_timeout`](redis::aio::ConnectionManagerConfig::set_response_timeout))
/// so a server that went away fails with its own error.
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # async fn run() -> redis::RedisResult<()> {
/// use perfkit::health::{HealthMonitor, RedisCheck};
///
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let conn = client.get_connection_manager().await?;
/// let monitor = HealthMonitor::builder()
///     .check(RedisCheck::new(conn).name("cache").non_critical())
///     .build();
/// monitor.start().await;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[must_use]
pub struct RedisCheck<C = redis::aio::ConnectionManager> {
    name: String,
    critical: bool,
    conn: C,
}

#[cfg(feature = "redis")]
impl<C> RedisCheck<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A critical check named `redis` on `conn`.
    pub fn new(conn: C) -> Self {
        Self {
            name: String::from("redis"),
            critical: true,
            conn,
        }
    }

    /// Sets the name the result appears under. Defaults to `redis`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Marks the check non-critical (a cache the service can run without). Checks are
    /// critical by default.
    pub fn non_critical(mut self) -> Self {
        self.critical = false;
        self
    }
}

#[cfg(feature = "redis")]
impl From<&crate::pool::RedisHandle> for RedisCheck {
    /// A critical check named `redis` on perfkit's multiplexed handle.
    fn from(handle: &crate::pool::RedisHandle) -> Self {
        Self::new(handle.connection())
    }
}

#[cfg(feature = "redis")]
impl<C> fmt::Debug for RedisCheck<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCheck")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl<C> HealthCheck for RedisCheck<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> Result<(), CheckError> {
        let mut conn = self.conn.clone();
        let reply: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|error| CheckError::failed("PING", error))?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(CheckError::new(format!(
                "PING answered {:?} instead of PONG",
                truncate_at_char_boundary(&reply, 64)
            )))
        }
    }
}

// ===== CacheCheck =====

/// A [`HealthCheck`] on the store behind a [`Cache`](crate::cache::Cache): Redis-backed
/// backends (Redis, tiered) send `PING` under their own deadline; the memory backend is
/// always up.
///
/// Named `cache` and critical unless told otherwise; a service that runs on without its
/// cache (every read a miss) usually marks it [`non_critical`](Self::non_critical).
///
/// ```
/// # #[cfg(feature = "cache")]
/// # fn run() -> perfkit::cache::Result<()> {
/// use perfkit::{cache::Cache, health::{CacheCheck, HealthMonitor}};
///
/// let cache = Cache::builder().build()?;
/// let monitor = HealthMonitor::builder()
///     .check(CacheCheck::from(&cache).non_critical())
///     .build();
/// # let _ = monitor;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
#[must_use]
pub struct CacheCheck {
    name: String,
    critical: bool,
    backend: std::sync::Arc<dyn crate::cache::Backend>,
}

#[cfg(feature = "cache")]
impl CacheCheck {
    /// A critical check named `cache` on `cache`'s backend.
    pub fn new(cache: &crate::cache::Cache) -> Self {
        Self {
            name: String::from("cache"),
            critical: true,
            backend: std::sync::Arc::clone(cache.backend()),
        }
    }

    /// Sets the name the result appears under. Defaults to `cache`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Marks the check non-critical. Checks are critical by default.
    pub fn non_critical(mut self) -> Self {
        self.critical = false;
        self
    }
}

#[cfg(feature = "cache")]
impl From<&crate::cache::Cache> for CacheCheck {
    /// A critical check named `cache`, as [`CacheCheck::new`].
    fn from(cache: &crate::cache::Cache) -> Self {
        Self::new(cache)
    }
}

#[cfg(feature = "cache")]
impl fmt::Debug for CacheCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheCheck")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .field("backend", &self.backend)
            .finish()
    }
}

#[cfg(feature = "cache")]
#[async_trait]
impl HealthCheck for CacheCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> Result<(), CheckError> {
        self.backend
            .ping()
            .await
            .map_err(|error| CheckError::failed("cache PING", error))
    }
}

// ===== RateLimitCheck =====

/// A [`HealthCheck`] for a rate limiter's [`RedisStore`](crate::rate_limit::RedisStore): fails
/// while its Redis does not answer `PING` within the store's deadline, or while the store
/// decides without Redis because Redis failed.
///
/// Named `rate_limit` and non-critical by default: while Redis is down the store keeps
/// deciding with its [`Fallback`](crate::rate_limit::Fallback), so the service still works and
/// the report reads `degraded`, naming the fallback. Call
/// [`as_critical`](Self::as_critical) when per-instance limits are not acceptable. The
/// [`MemoryStore`](crate::rate_limit::MemoryStore) needs no check: it has nothing that can
/// fail.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use perfkit::{
///     health::{HealthMonitor, RateLimitCheck},
///     pool::RedisPoolBuilder,
///     rate_limit::RedisStore,
/// };
///
/// let handle = RedisPoolBuilder::new("redis://127.0.0.1:6379").build().await?;
/// let store = RedisStore::new(handle);
/// let monitor = HealthMonitor::builder()
///     .check(RateLimitCheck::new(&store))
///     .build();
/// monitor.start().await;
/// # Ok(())
/// # }
/// ```
#[cfg(all(feature = "rate-limit", feature = "redis"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "rate-limit", feature = "redis"))))]
#[must_use]
pub struct RateLimitCheck {
    name: String,
    critical: bool,
    store: crate::rate_limit::RedisStore,
}

#[cfg(all(feature = "rate-limit", feature = "redis"))]
impl RateLimitCheck {
    /// A non-critical check named `rate_limit` on `store` (which it shares, not copies).
    pub fn new(store: &crate::rate_limit::RedisStore) -> Self {
        Self {
            name: String::from("rate_limit"),
            critical: false,
            store: store.clone(),
        }
    }

    /// Sets the name the result appears under. Defaults to `rate_limit`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Marks the check critical: a failure makes the report `unhealthy`. Non-critical by
    /// default.
    pub fn as_critical(mut self) -> Self {
        self.critical = true;
        self
    }
}

#[cfg(all(feature = "rate-limit", feature = "redis"))]
impl From<&crate::rate_limit::RedisStore> for RateLimitCheck {
    fn from(store: &crate::rate_limit::RedisStore) -> Self {
        Self::new(store)
    }
}

#[cfg(all(feature = "rate-limit", feature = "redis"))]
impl fmt::Debug for RateLimitCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitCheck")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .field("store", &self.store)
            .finish()
    }
}

#[cfg(all(feature = "rate-limit", feature = "redis"))]
#[async_trait]
impl HealthCheck for RateLimitCheck {
    fn name(&self) -> &str {
        &self.name
    }

    fn critical(&self) -> bool {
        self.critical
    }

    async fn check(&self) -> Result<(), CheckError> {
        let fallback = self.store.fallback();
        if let Err(error) = self.store.ping().await {
            return Err(CheckError::new(format!(
                "rate-limit Redis PING failed: {error}; deciding with {fallback:?}"
            )));
        }
        if self.store.fallback_active() {
            return Err(CheckError::new(format!(
                "rate-limit Redis answers PING but failed a decision; deciding with \
                 {fallback:?} until its next retry succeeds"
            )));
        }
        Ok(())
    }
}
