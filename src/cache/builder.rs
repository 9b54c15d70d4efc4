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
    redis_url: Option<String>,
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
            .field("redis_url", &self.redis_url.is_some())
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
            redis_url: None,
        }
    }

    /// A builder configured from the environment:
    ///
    /// | variable | setting | default |
    /// | --- | --- | --- |
    /// | `CACHE_PREFIX` | [`prefix`](Self::prefix) | `perfkit` |
    /// | `CACHE_DEFAULT_TTL` | [`default_ttl`](Self::default_ttl), whole seconds | 300 |
    /// | `REDIS_URL` | the backend: memory when unset; with the `redis` feature, a `TieredBackend` (L1 with the memory bounds, Redis L2) when set | unset |
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
        builder.redis_url = env::var::<String>("REDIS_URL", "a redis:// URL")?;
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
            None => match self.redis_url.as_deref() {
                Some(url) => (redis_backend(url, self.max_entries, self.max_bytes)?, false),
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

/// The backend for `REDIS_URL`: a [`TieredBackend`](super::TieredBackend) whose L1 has the
/// memory bounds, over a lazily connected handle, so the application starts while Redis is
/// down. Needs a Tokio runtime.
#[cfg(feature = "redis")]
fn redis_backend(url: &str, max_entries: usize, max_bytes: u64) -> Result<Arc<dyn Backend>> {
    use super::{RedisBackend, TieredBackend};
    let handle = crate::pool::RedisPoolBuilder::new(url)
        .build_lazy()
        .map_err(|err| Error::Config(format!("REDIS_URL: {err}")))?;
    let client = ::redis::Client::open(url)
        .map_err(|err| Error::Config(format!("REDIS_URL is not a valid Redis URL: {err}")))?;
    let l1 = MemoryBackend::builder()
        .max_entries(max_entries)
        .max_bytes(max_bytes)
        .build();
    Ok(Arc::new(
        TieredBackend::builder(RedisBackend::new(handle), client)
            .l1(l1)
            .build(),
    ))
}

/// The backend for `REDIS_URL`, with the memory bounds for an in-process tier.
///
/// This build has no Redis backend: the cache keeps its entries in memory and says so.
#[cfg(not(feature = "redis"))]
fn redis_backend(_url: &str, max_entries: usize, max_bytes: u64) -> Result<Arc<dyn Backend>> {
    tracing::warn!(
        "REDIS_URL is set but this build of perfkit has no Redis cache backend; the cache keeps entries in memory"
    );
    Ok(Arc::new(
        MemoryBackend::builder()
            .max_entries(max_entries)
            .max_bytes(max_bytes)
            .build(),
    ))
}
