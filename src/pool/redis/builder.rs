use std::{fmt, time::Duration};

use ::redis::{
    AsyncConnectionConfig, Client, IntoConnectionInfo,
    aio::ConnectionManagerConfig,
    cluster::{ClusterClient, ClusterClientBuilder},
};

use super::{
    connection::{LastConnectError, ManagerSettings, RedisManager},
    handle::{RedisHandle, SharedConnection},
    pool::{PoolSettings, RedisPool},
};
use crate::pool::{Error, Result, redact_url};

const DEFAULT_MAX_CONNECTIONS: u32 = 50;
const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
const DEFAULT_LEAK_THRESHOLD: Duration = Duration::from_secs(60);
const DEFAULT_RECONNECT_RETRIES: usize = 2;
/// First pause between two reconnect attempts of a [`RedisHandle`]; it doubles (with jitter)
/// on each further attempt.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between two reconnect attempts of a [`RedisHandle`].
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

/// Builds the two Redis handles: a multiplexed [`RedisHandle`] and a bb8 [`RedisPool`].
///
/// One builder holds the settings of both; it is `Clone`, so one configuration can build a
/// handle for the hot path and a pool for blocking commands and transactions:
///
/// - [`build`](Self::build) / [`build_lazy`](Self::build_lazy) give a [`RedisHandle`]: one
///   connection that every task shares, pipelining their commands, reconnecting on its own.
///   It is the faster of the two for ordinary commands (see `benches/redis_pool.rs`) and the
///   handle the cache and rate-limit stores take.
/// - [`build_pool`](Self::build_pool) / [`build_pool_lazy`](Self::build_pool_lazy) give a
///   [`RedisPool`]: up to [`max_connections`](Self::max_connections) connections, each held by
///   one task at a time, for `BLPOP` and friends and for `WATCH`/`MULTI`/`EXEC`.
///
/// Settings are checked when building: a malformed URL or a zero timeout is an
/// [`Error::Config`] naming the problem, never a panic.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> perfkit::pool::Result<()> {
/// use std::time::Duration;
/// use perfkit::pool::RedisPoolBuilder;
///
/// let builder = RedisPoolBuilder::new("redis://127.0.0.1:6379")
///     .max_connections(20)
///     .connection_timeout(Duration::from_secs(2))
///     .response_timeout(Duration::from_secs(1));
/// let handle = builder.clone().build().await?;
/// let pool = builder.build_pool().await?;
/// handle.ping().await?;
/// # let _ = pool;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisPoolBuilder {
    url: String,
    /// The seed nodes of a Redis Cluster; `None` for one server at `url`.
    cluster: Option<Vec<String>>,
    max_connections: u32,
    min_idle: Option<u32>,
    connection_timeout: Duration,
    response_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    leak_threshold: Option<Duration>,
    pre_ping: bool,
    reconnect_retries: usize,
}

impl fmt::Debug for RedisPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPoolBuilder")
            .field("url", &redact_url(&self.url))
            .field("cluster", &self.cluster.is_some())
            .field("max_connections", &self.max_connections)
            .field("min_idle", &self.min_idle)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("leak_threshold", &self.leak_threshold)
            .field("pre_ping", &self.pre_ping)
            .field("reconnect_retries", &self.reconnect_retries)
            .finish()
    }
}

impl RedisPoolBuilder {
    /// A builder for the server at `url` (`redis://[:password@]host[:port][/db]`, or
    /// `redis+unix:///path`), with every other setting at its default.
    ///
    /// The URL is parsed when building.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            min_idle: None,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            leak_threshold: Some(DEFAULT_LEAK_THRESHOLD),
            pre_ping: false,
            reconnect_retries: DEFAULT_RECONNECT_RETRIES,
        }
    }

    /// A builder for a Redis Cluster reached through `seeds`, the URLs of some of its nodes
    /// (`redis://[:password@]host:port` each; one live node is enough to find the others).
    ///
    /// [`build`](Self::build) and [`build_lazy`](Self::build_lazy) then give a
    /// [`RedisHandle`] on redis-rs's async cluster client, used like one on a single server.
    /// A [`RedisPool`] holds connections to one server, so
    /// [`build_pool`](Self::build_pool) refuses a cluster. The timeouts and
    /// [`reconnect_retries`](Self::reconnect_retries) apply per node.
    pub fn cluster<I, S>(seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let seeds: Vec<String> = seeds
            .into_iter()
            .map(|seed| seed.into().trim().to_owned())
            .collect();
        let url = seeds
            .iter()
            .map(|seed| redact_url(seed))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            cluster: Some(seeds),
            ..Self::new(url)
        }
    }

    /// A builder configured from the environment:
    ///
    /// - `REDIS_CLUSTER_URLS`: comma-separated seed nodes of a Redis Cluster
    ///   (`redis://10.0.0.1:7000,redis://10.0.0.2:7000`); when set, it wins over `REDIS_URL`
    ///   and the builder is [`cluster`](Self::cluster)'s;
    /// - `REDIS_URL` (required without `REDIS_CLUSTER_URLS`): the server's URL;
    /// - `REDIS_MAX_CONNECTIONS`: [`max_connections`](Self::max_connections), default 50.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when neither `REDIS_CLUSTER_URLS` nor `REDIS_URL` is set,
    /// `REDIS_CLUSTER_URLS` lists no URL, or `REDIS_MAX_CONNECTIONS` is 0;
    /// [`Error::Env`] when `REDIS_MAX_CONNECTIONS` is not a number.
    pub fn from_env() -> Result<Self> {
        let seeds: Option<String> =
            crate::env::var("REDIS_CLUSTER_URLS", "comma-separated Redis URLs")?;
        let url: Option<String> = crate::env::var("REDIS_URL", "a Redis URL")?;
        let mut builder = match (seeds, url) {
            (Some(seeds), _) => {
                let seeds: Vec<&str> = seeds
                    .split(',')
                    .map(str::trim)
                    .filter(|seed| !seed.is_empty())
                    .collect();
                if seeds.is_empty() {
                    return Err(Error::Config(
                        "REDIS_CLUSTER_URLS lists no URL; give the seed nodes, e.g. \
                         redis://127.0.0.1:7000,redis://127.0.0.1:7001"
                            .into(),
                    ));
                }
                Self::cluster(seeds)
            }
            (None, Some(url)) => Self::new(url.trim()),
            (None, None) => {
                return Err(Error::Config(
                    "REDIS_URL is not set; set it to the server's URL, e.g. \
                     redis://127.0.0.1:6379 (or REDIS_CLUSTER_URLS to a cluster's seed nodes)"
                        .into(),
                ));
            }
        };
        let max: Option<u32> =
            crate::env::var("REDIS_MAX_CONNECTIONS", "a whole number of connections")?;
        if let Some(max) = max {
            if max == 0 {
                return Err(Error::Config(
                    "REDIS_MAX_CONNECTIONS is 0; a pool needs at least 1 connection".into(),
                ));
            }
            builder = builder.max_connections(max);
        }
        Ok(builder)
    }

    /// The most connections the [`RedisPool`] opens (bb8's `max_size`). A [`RedisHandle`]
    /// always uses one connection.
    ///
    /// Defaults to 50. Zero is refused when building.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Connections the [`RedisPool`] keeps open even when idle (bb8's `min_idle`); an eager
    /// build opens them before returning.
    ///
    /// Defaults to `None`: connections are opened on demand. More than
    /// [`max_connections`](Self::max_connections) is refused when building.
    pub fn min_idle(mut self, min_idle: impl Into<Option<u32>>) -> Self {
        self.min_idle = min_idle.into();
        self
    }

    /// How long opening one connection may take, and how long [`RedisPool::get`] waits for a
    /// connection (bb8's `connection_timeout`) before failing with
    /// [`Error::AcquireTimeout`].
    ///
    /// Defaults to 5 seconds. Zero is refused when building.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long a command waits for its reply before failing with a timeout error, on the
    /// handle and on pooled connections alike. `None` waits forever.
    ///
    /// A blocking command such as `BLPOP key 10` needs a longer timeout than it blocks for:
    /// raise it here for a pool dedicated to such commands, or per checkout with
    /// [`RedisConnection::set_response_timeout`](super::RedisConnection::set_response_timeout).
    ///
    /// Defaults to 5 seconds. Zero is refused when building.
    pub fn response_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.response_timeout = timeout.into();
        self
    }

    /// How long a [`RedisPool`] connection may sit idle before it is closed (bb8's
    /// `idle_timeout`, checked every 30 seconds). `None` keeps idle connections open.
    ///
    /// Defaults to 10 minutes. Zero is refused when building.
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = timeout.into();
        self
    }

    /// How long a [`RedisPool`] connection lives before it is closed and replaced (the
    /// recycle age). `None` keeps connections for ever.
    ///
    /// Each connection draws its own lifetime, between 90 % and 110 % of this, when it is
    /// opened, so that connections opened together (at start-up, after an outage) are not
    /// all replaced at the same moment. A connection past its lifetime is closed when it is
    /// returned to the pool, or when a checkout finds it idle (a check on the clock, no round
    /// trip); bb8's own `max_lifetime`, set to the upper bound (110 %), closes any that sit
    /// idle beyond it.
    ///
    /// Defaults to 30 minutes. Zero is refused when building.
    pub fn max_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.max_lifetime = lifetime.into();
        self
    }

    /// Reports, once at WARN, a [`RedisPool`] connection held longer than this, with the
    /// place it was checked out (`file:line` of the [`RedisPool::get`] call) and how long it
    /// has been held, and counts it in
    /// [`PoolSnapshot::leaks_reported`](crate::pool::PoolSnapshot::leaks_reported); `None` turns
    /// the check off. The check runs in the pool's background task.
    ///
    /// A worker that holds one connection for good, looping on `BLPOP`, is reported too:
    /// give such workers a pool with the check off.
    ///
    /// Defaults to 60 seconds. Zero is refused when building.
    pub fn leak_threshold(mut self, threshold: impl Into<Option<Duration>>) -> Self {
        self.leak_threshold = threshold.into();
        self
    }

    /// Whether [`RedisPool::get`] sends a `PING` on each connection before handing it out
    /// (in bb8's `is_valid` check on checkout), replacing connections that do not answer.
    ///
    /// Defaults to `false`: the check costs a round trip on every checkout (it roughly halves
    /// throughput, see `benches/redis_pool.rs`), and a pooled connection that failed with a
    /// connection error, timed out, or was returned in the middle of a command or a
    /// transaction is already closed instead of being reused. Turn it on where a connection
    /// can die silently while idle, for instance behind a proxy that drops idle connections.
    pub fn pre_ping(mut self, enabled: bool) -> Self {
        self.pre_ping = enabled;
        self
    }

    /// How many times a [`RedisHandle`] retries to connect after losing its connection,
    /// before failing the commands that wait on it; the next command starts a new round.
    /// Pauses between attempts start at 100 ms and double, with jitter, up to 1 second.
    ///
    /// While the server is down, a command on the handle therefore fails after at most
    /// `retries + 1` connection attempts: quickly when the server refuses connections, after
    /// up to `(retries + 1) × connection_timeout` when it does not answer at all.
    ///
    /// Defaults to 2.
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// Connects a [`RedisHandle`] and waits until its connection is open.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL or setting, or when called outside a Tokio
    /// runtime; [`Error::Connect`] (naming the URL without its password) when the server
    /// cannot be reached.
    pub async fn build(self) -> Result<RedisHandle> {
        if let Some(client) = self.cluster_client()? {
            let conn = client
                .get_async_connection()
                .await
                .map_err(|err| Error::Connect {
                    url: self.url.clone(),
                    source: Box::new(err),
                })?;
            tracing::debug!(seeds = %self.url, "connected Redis Cluster handle");
            let seeds = self.seed_clients()?;
            return Ok(RedisHandle::new(
                SharedConnection::Cluster(conn),
                self.url,
                seeds,
            ));
        }
        let client = self.client()?;
        let url = redact_url(&self.url);
        let conn = client
            .get_connection_manager_with_config(self.manager_config())
            .await
            .map_err(|err| Error::Connect {
                url: url.clone(),
                source: Box::new(err),
            })?;
        tracing::debug!(url = %url, "connected Redis handle");
        Ok(RedisHandle::new(
            SharedConnection::Node(conn),
            url,
            vec![client],
        ))
    }

    /// A [`RedisHandle`] that connects on its first command, so an application can start
    /// while Redis is down.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL or setting, or when called outside a Tokio
    /// runtime.
    pub fn build_lazy(self) -> Result<RedisHandle> {
        if let Some(client) = self.cluster_client()? {
            let conn = client.get_pending_async_connection_with_config(
                ::redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(self.connection_timeout),
            );
            let seeds = self.seed_clients()?;
            return Ok(RedisHandle::new(
                SharedConnection::Cluster(conn),
                self.url,
                seeds,
            ));
        }
        let client = self.client()?;
        let conn = client
            .get_connection_manager_lazy(self.manager_config())
            .map_err(|err| Error::Config(format!("cannot create a Redis handle: {err}")))?;
        Ok(RedisHandle::new(
            SharedConnection::Node(conn),
            redact_url(&self.url),
            vec![client],
        ))
    }

    /// Builds a [`RedisPool`], opening one connection (and [`min_idle`](Self::min_idle)
    /// ones) before returning so that a server that cannot be reached is reported now.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL or setting, or when called outside a Tokio
    /// runtime; [`Error::Connect`] (naming the URL without its password) when the server
    /// cannot be reached.
    pub async fn build_pool(self) -> Result<RedisPool> {
        let client = self.client()?;
        let url = redact_url(&self.url);
        let (manager, last_error) = self.manager(client.clone());
        let connect_error = |err: ::redis::RedisError| Error::Connect {
            url: url.clone(),
            source: Box::new(err),
        };
        let first = bb8::ManageConnection::connect(&manager)
            .await
            .map_err(connect_error)?;
        let pool = self
            .pool_builder(&manager, last_error.clone())
            .build(manager)
            .await
            .map_err(connect_error)?;
        // With `min_idle` equal to `max_connections` the pool is already full, and the first
        // connection is simply closed.
        let _ = pool.add(first);
        tracing::debug!(url = %url, max = self.max_connections, "opened Redis pool");
        Ok(self.into_pool(pool, client, last_error))
    }

    /// A [`RedisPool`] that opens connections when they are first asked for (and
    /// [`min_idle`](Self::min_idle) ones in the background), so an application can start
    /// while Redis is down.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL or setting, or when called outside a Tokio
    /// runtime.
    pub fn build_pool_lazy(self) -> Result<RedisPool> {
        let client = self.client()?;
        let (manager, last_error) = self.manager(client.clone());
        let pool = self
            .pool_builder(&manager, last_error.clone())
            .build_unchecked(manager);
        Ok(self.into_pool(pool, client, last_error))
    }

    /// The cluster client, after checking every setting; `None` for a single server.
    fn cluster_client(&self) -> Result<Option<ClusterClient>> {
        let Some(seeds) = &self.cluster else {
            return Ok(None);
        };
        self.check_settings()?;
        if seeds.is_empty() {
            return Err(Error::Config(
                "a Redis Cluster needs at least one seed node URL".into(),
            ));
        }
        let mut nodes = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let info = seed.as_str().into_connection_info().map_err(|err| {
                Error::Config(format!("invalid Redis URL {}: {err}", redact_url(seed)))
            })?;
            nodes.push(info);
        }
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(self.connection_timeout)
            .retries(u32::try_from(self.reconnect_retries).unwrap_or(u32::MAX));
        if let Some(timeout) = self.response_timeout {
            builder = builder.response_timeout(timeout);
        }
        builder
            .build()
            .map(Some)
            .map_err(|err| Error::Config(format!("invalid Redis Cluster settings: {err}")))
    }

    /// One client per seed node of a cluster, for subscriptions.
    fn seed_clients(&self) -> Result<Vec<Client>> {
        self.cluster
            .iter()
            .flatten()
            .map(|seed| {
                Client::open(seed.as_str()).map_err(|err| {
                    Error::Config(format!("invalid Redis URL {}: {err}", redact_url(seed)))
                })
            })
            .collect()
    }

    /// Checks every setting and parses the URL of a single server.
    fn client(&self) -> Result<Client> {
        if self.cluster.is_some() {
            return Err(Error::Config(
                "a RedisPool holds connections to one server; on a Redis Cluster use the \
                 RedisHandle from build(), which routes every command to its node"
                    .into(),
            ));
        }
        self.check_settings()?;
        Client::open(self.url.as_str()).map_err(|err| {
            // The parser's messages name what is wrong, never the URL itself.
            Error::Config(format!(
                "invalid Redis URL {}: {err}",
                redact_url(&self.url)
            ))
        })
    }

    /// Checks the settings that do not depend on the server.
    fn check_settings(&self) -> Result<()> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "Redis handles must be built inside a Tokio runtime".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::Config(
                "max_connections is 0; a pool needs at least 1 connection".into(),
            ));
        }
        if let Some(min_idle) = self.min_idle
            && min_idle > self.max_connections
        {
            return Err(Error::Config(format!(
                "min_idle ({min_idle}) is larger than max_connections ({}); \
                 lower min_idle or raise max_connections",
                self.max_connections
            )));
        }
        let durations = [
            ("connection_timeout", Some(self.connection_timeout)),
            ("response_timeout", self.response_timeout),
            ("idle_timeout", self.idle_timeout),
            ("max_lifetime", self.max_lifetime),
            ("leak_threshold", self.leak_threshold),
        ];
        for (name, duration) in durations {
            if duration == Some(Duration::ZERO) {
                return Err(Error::Config(format!(
                    "{name} is zero; give it a positive duration{}",
                    if name == "connection_timeout" {
                        ""
                    } else {
                        ", or None for no limit"
                    }
                )));
            }
        }
        Ok(())
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(self.response_timeout)
            .set_number_of_retries(self.reconnect_retries)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
    }

    fn manager(&self, client: Client) -> (RedisManager, LastConnectError) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(self.response_timeout);
        let last_error = LastConnectError::new(redact_url(&self.url));
        let manager = RedisManager::new(
            client,
            ManagerSettings {
                config,
                response_timeout: self.response_timeout,
                last_error: last_error.clone(),
                max_lifetime: self.max_lifetime,
                pre_ping: self.pre_ping,
            },
        );
        (manager, last_error)
    }

    fn pool_builder(
        &self,
        manager: &RedisManager,
        last_error: LastConnectError,
    ) -> bb8::Builder<RedisManager> {
        bb8::Pool::builder()
            .max_size(self.max_connections)
            .min_idle(self.min_idle)
            // Cheap without pre-ping: the manager then only compares the connection's
            // lifetime with the clock.
            .test_on_check_out(manager.checks_on_checkout())
            .idle_timeout(self.idle_timeout)
            .max_lifetime(manager.lifetime_upper_bound())
            .connection_timeout(self.connection_timeout)
            .error_sink(Box::new(last_error))
    }

    fn into_pool(
        self,
        pool: bb8::Pool<RedisManager>,
        client: Client,
        last_error: LastConnectError,
    ) -> RedisPool {
        RedisPool::new(
            pool,
            client,
            PoolSettings {
                url: redact_url(&self.url),
                max: self.max_connections,
                min: self.min_idle.unwrap_or(0),
                connection_timeout: self.connection_timeout,
                leak_threshold: self.leak_threshold,
                last_error,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(builder: RedisPoolBuilder) -> String {
        match builder.build_pool_lazy() {
            Err(Error::Config(message)) => message,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_urls_are_configuration_errors_without_the_password() {
        for url in [
            "",
            "not a url",
            "http://127.0.0.1:6379",
            "redis://:s3cret@127.0.0.1:notaport",
        ] {
            let message = config_error(RedisPoolBuilder::new(url));
            assert!(message.starts_with("invalid Redis URL"), "{url}: {message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
        let Err(Error::Config(message)) =
            RedisPoolBuilder::new("redis://:s3cret@127.0.0.1:notaport").build_lazy()
        else {
            panic!("the handle must refuse the URL too");
        };
        assert!(message.contains("redis://:***@"), "{message}");
    }

    #[tokio::test]
    async fn impossible_settings_are_named() {
        let base = || RedisPoolBuilder::new("redis://127.0.0.1:6379");
        assert!(config_error(base().max_connections(0)).contains("max_connections is 0"));
        assert!(config_error(base().max_connections(2).min_idle(3)).contains("min_idle (3)"));
        assert!(
            config_error(base().connection_timeout(Duration::ZERO))
                .contains("connection_timeout is zero")
        );
        assert!(
            config_error(base().response_timeout(Duration::ZERO))
                .contains("response_timeout is zero")
        );
        assert!(config_error(base().idle_timeout(Duration::ZERO)).contains("idle_timeout is zero"));
        assert!(config_error(base().max_lifetime(Duration::ZERO)).contains("max_lifetime is zero"));
        assert!(
            config_error(base().leak_threshold(Duration::ZERO)).contains("leak_threshold is zero")
        );
        // `None` means no limit and is accepted.
        base()
            .response_timeout(None)
            .idle_timeout(None)
            .max_lifetime(None)
            .leak_threshold(None)
            .build_pool_lazy()
            .unwrap();
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let builder = RedisPoolBuilder::new("redis://127.0.0.1:6379");
        assert!(matches!(
            builder.clone().build_lazy(),
            Err(Error::Config(message)) if message.contains("Tokio runtime")
        ));
        assert!(matches!(
            builder.build_pool_lazy(),
            Err(Error::Config(message)) if message.contains("Tokio runtime")
        ));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let debug = format!("{:?}", RedisPoolBuilder::new("redis://:s3cret@cache:6379"));
        assert!(debug.contains("redis://:***@cache:6379"), "{debug}");
        assert!(!debug.contains("s3cret"));
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let builder = RedisPoolBuilder::new("redis://127.0.0.1");
        assert_eq!(builder.max_connections, 50);
        assert_eq!(builder.connection_timeout, Duration::from_secs(5));
        assert_eq!(builder.response_timeout, Some(Duration::from_secs(5)));
        assert_eq!(builder.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(builder.max_lifetime, Some(Duration::from_secs(1800)));
        assert_eq!(builder.leak_threshold, Some(Duration::from_secs(60)));
        assert!(!builder.pre_ping);
        assert_eq!(builder.min_idle, None);
        assert_eq!(builder.reconnect_retries, 2);
    }
}
