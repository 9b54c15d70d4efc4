//! Building a [`Cache`].

use std::{any::Any, sync::Arc, time::Duration};

use super::{
    Cache,
    backend::Backend,
    error::{Error, Result},
    handle::Config,
    memory::{DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MemoryBackend},
    namespace::{Namespace, valid_namespace},
};
use crate::env;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "perfkit";
/// Default time to live.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default compression threshold in bytes.
pub const DEFAULT_COMPRESSION_THRESHOLD: usize = 1024;
/// Default number of computations [`Cache::warm`] runs at once.
pub const DEFAULT_WARM_CONCURRENCY: usize = 8;

/// Builds a [`Cache`]; from [`Cache::builder`] or [`CacheBuilder::from_env`].
#[must_use]
pub struct CacheBuilder {
    prefix: String,
    default_ttl: Duration,
    compression_threshold: usize,
    warm_concurrency: usize,
    max_entries: usize,
    max_bytes: u64,
    backend: Option<Arc<dyn Backend>>,
    /// Whether `backend` keeps decoded values only, so encoding is for weighing.
    in_process: bool,
    /// The Redis [`from_env`](Self::from_env) found.
    redis: Option<RedisFromEnv>,
}

/// Where [`CacheBuilder::from_env`] found Redis. Without the `redis` feature only which
/// variable it was is used, to say it is ignored.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
enum RedisFromEnv {
    /// `REDIS_URL`: one server.
    Node(String),
    /// `REDIS_CLUSTER_URLS`: a cluster's seed nodes, comma separated.
    Cluster(String),
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("compression_threshold", &self.compression_threshold)
            .field("warm_concurrency", &self.warm_concurrency)
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("backend", &self.backend)
            .field("redis", &self.redis.is_some())
            .finish()
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheBuilder {
    /// A builder with every default: prefix `perfkit`, TTL 300 s, compression above 1 KiB,
    /// a [`MemoryBackend`] of 10 000 entries and 64 MiB.
    pub fn new() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            default_ttl: DEFAULT_TTL,
            compression_threshold: DEFAULT_COMPRESSION_THRESHOLD,
            warm_concurrency: DEFAULT_WARM_CONCURRENCY,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            backend: None,
            in_process: false,
            redis: None,
        }
    }

    /// A builder configured from the environment:
    ///
    /// | variable | setting | default |
    /// | --- | --- | --- |
    /// | `CACHE_PREFIX` | [`prefix`](Self::prefix) | `perfkit` |
    /// | `CACHE_DEFAULT_TTL` | [`default_ttl`](Self::default_ttl), whole seconds | 300 |
    /// | `REDIS_URL` | the backend: memory when unset; with the `redis` feature, a `TieredBackend` (L1 with the memory bounds, Redis L2) when set | unset |
    /// | `REDIS_CLUSTER_URLS` | as `REDIS_URL`, on the Redis Cluster of these comma-separated seed nodes; wins over `REDIS_URL` | unset |
    ///
    /// # Errors
    ///
    /// [`Error::Env`] when a variable is set to something unreadable.
    pub fn from_env() -> Result<Self> {
        let mut builder = Self::new();
        if let Some(prefix) = env::var::<String>("CACHE_PREFIX", "a cache key prefix")? {
            builder.prefix = prefix;
        }
        if let Some(secs) = env::var::<u64>("CACHE_DEFAULT_TTL", "a whole number of seconds")? {
            builder.default_ttl = Duration::from_secs(secs);
        }
        let seeds = env::var::<String>("REDIS_CLUSTER_URLS", "comma-separated redis:// URLs")?;
        let url = env::var::<String>("REDIS_URL", "a redis:// URL")?;
        builder.redis = seeds
            .map(RedisFromEnv::Cluster)
            .or(url.map(RedisFromEnv::Node));
        Ok(builder)
    }

    /// Namespace of every key and tag: two caches with different prefixes never see each
    /// other's entries, even on one Redis. ASCII letters, digits and `-_.:/@=+,;!$&()<>|~`,
    /// 1 to 64 bytes. Defaults to `perfkit` (`CACHE_PREFIX`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// TTL of entries whose options set none. Defaults to 300 s (`CACHE_DEFAULT_TTL`).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Encoded values longer than this many bytes are compressed. Defaults to 1024.
    ///
    /// Applies to backends that store bytes; a [`MemoryBackend`] keeps decoded values, so
    /// nothing is compressed for it.
    pub fn compression_threshold(mut self, bytes: usize) -> Self {
        self.compression_threshold = bytes;
        self
    }

    /// How many computations [`Cache::warm`] runs at once. Defaults to 8; 0 counts as 1.
    pub fn warm_concurrency(mut self, concurrency: usize) -> Self {
        self.warm_concurrency = concurrency.max(1);
        self
    }

    /// Most entries of the default [`MemoryBackend`]. Defaults to 10 000. Ignored when a
    /// [`backend`](Self::backend) is given.
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max;
        self
    }

    /// Most bytes of the default [`MemoryBackend`]. Defaults to 64 MiB. Ignored when a
    /// [`backend`](Self::backend) is given.
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = max;
        self
    }

    /// Where entries live. Defaults to a [`MemoryBackend`] bounded by
    /// [`max_entries`](Self::max_entries) and [`max_bytes`](Self::max_bytes), or, after
    /// [`from_env`](Self::from_env) with `REDIS_URL` set, the Redis-backed choice.
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.in_process = (&backend as &dyn Any).is::<MemoryBackend>();
        self.backend = Some(Arc::new(backend));
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the prefix or the TTL cannot work.
    pub fn build(self) -> Result<Cache> {
        if !valid_namespace(&self.prefix) {
            return Err(Error::Config(format!(
                "prefix {:?} must be 1 to 64 bytes of ASCII letters, digits and -_.:/@=+,;!$&()<>|~",
                self.prefix
            )));
        }
        if self.default_ttl.is_zero() {
            return Err(Error::Config(
                "default TTL is zero; set CACHE_DEFAULT_TTL or default_ttl() to at least 1 s"
                    .to_owned(),
            ));
        }
        let (backend, in_process) = match self.backend {
            Some(backend) => (backend, self.in_process),
            None => match &self.redis {
                Some(redis) => (
                    redis_backend(redis, self.max_entries, self.max_bytes)?,
                    false,
                ),
                None => (
                    Arc::new(
                        MemoryBackend::builder()
                            .max_entries(self.max_entries)
                            .max_bytes(self.max_bytes)
                            .build(),
                    ) as Arc<dyn Backend>,
                    true,
                ),
            },
        };
        Ok(Cache::from_config(Config {
            namespace: Namespace::new(&self.prefix),
            default_ttl: self.default_ttl,
            compression_threshold: if in_process {
                usize::MAX
            } else {
                self.compression_threshold
            },
            warm_concurrency: self.warm_concurrency,
            backend,
        }))
    }
}

/// The backend for the Redis `from_env` found: a [`TieredBackend`](super::TieredBackend)
/// whose L1 has the memory bounds, over a lazily connected handle (so the application
/// starts while Redis is down) that its subscription goes through too. Needs a Tokio
/// runtime.
#[cfg(feature = "redis")]
fn redis_backend(
    redis: &RedisFromEnv,
    max_entries: usize,
    max_bytes: u64,
) -> Result<Arc<dyn Backend>> {
    use super::{RedisBackend, TieredBackend};
    use crate::pool::RedisPoolBuilder;
    let (variable, builder) = match redis {
        RedisFromEnv::Node(url) => ("REDIS_URL", RedisPoolBuilder::new(url.as_str())),
        RedisFromEnv::Cluster(seeds) => (
            "REDIS_CLUSTER_URLS",
            RedisPoolBuilder::cluster(
                seeds
                    .split(',')
                    .map(str::trim)
                    .filter(|seed| !seed.is_empty()),
            ),
        ),
    };
    let handle = builder
        .build_lazy()
        .map_err(|err| Error::Config(format!("{variable}: {err}")))?;
    let l1 = MemoryBackend::builder()
        .max_entries(max_entries)
        .max_bytes(max_bytes)
        .build();
    Ok(Arc::new(
        TieredBackend::with_l2(RedisBackend::new(handle))
            .l1(l1)
            .build(),
    ))
}

/// The backend for the Redis `from_env` found, with the memory bounds for an in-process
/// tier.
///
/// This build has no Redis backend: the cache keeps its entries in memory and says so.
#[cfg(not(feature = "redis"))]
fn redis_backend(
    redis: &RedisFromEnv,
    max_entries: usize,
    max_bytes: u64,
) -> Result<Arc<dyn Backend>> {
    let variable = match redis {
        RedisFromEnv::Node(_) => "REDIS_URL",
        RedisFromEnv::Cluster(_) => "REDIS_CLUSTER_URLS",
    };
    tracing::warn!(
        "{variable} is set but this build of perfkit has no Redis cache backend; the cache keeps entries in memory"
    );
    Ok(Arc::new(
        MemoryBackend::builder()
            .max_entries(max_entries)
            .max_bytes(max_bytes)
            .build(),
    ))
}
