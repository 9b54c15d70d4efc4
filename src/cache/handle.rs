//! The typed cache over a backend.

use std::{any::type_name, fmt, future::Future, sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use tokio::task::JoinSet;

use crate::log_gate::{LOG_INTERVAL, LogGate};

use super::{
    CacheBuilder,
    backend::{
        AnyValue, Backend, Entry, EntryMeta, Epoch, Key, LocalLookup, Tag, TagEpoch, Value, now_ms,
    },
    codec,
    error::{CodecError, Result},
    flight::{Flights, Join, Leader, Outcome},
    namespace::Namespace,
    options::EntryOptions,
    stats::{CacheSnapshot, Stats},
};

/// What a cached value must be: serde both ways (for remote backends), cloneable (a hit
/// clones it out of the shared decoded value), and shareable across tasks.
pub trait Cacheable: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T> Cacheable for T where T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

/// A typed cache; cheap to clone (every clone shares the backend, flights and stats).
///
/// See the [module docs](super) for the guarantees and an example.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

pub(crate) struct Config {
    pub(crate) namespace: Namespace,
    pub(crate) default_ttl: Duration,
    pub(crate) compression_threshold: usize,
    pub(crate) warm_concurrency: usize,
    pub(crate) backend: Arc<dyn Backend>,
}

struct Inner {
    config: Config,
    flights: Arc<Flights>,
    stats: Stats,
    logs: Logs,
}

/// One gate per kind of degraded-operation log line.
struct Logs {
    get_failed: LogGate,
    set_failed: LogGate,
    undecodable: LogGate,
    refresh_failed: LogGate,
    encode_failed: LogGate,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.inner.config.namespace)
            .field("default_ttl", &self.inner.config.default_ttl)
            .field(
                "compression_threshold",
                &self.inner.config.compression_threshold,
            )
            .field("backend", &self.inner.config.backend)
            .finish()
    }
}

/// How a found entry may be used at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freshness {
    Fresh,
    /// Fresh, and XFetch picked this read to start a refresh.
    FreshRefresh,
    StaleWhileRevalidate,
    StaleIfError,
    Expired,
}

fn freshness(meta: &EntryMeta, now: u64, beta: f64) -> Freshness {
    if now < meta.fresh_until {
        if meta.compute_ms > 0 && beta > 0.0 {
            // XFetch: refresh when now - delta * beta * ln(rand) >= expiry, rand in (0, 1].
            let rand = 1.0 - fastrand::f64();
            let ahead = f64::from(meta.compute_ms) * beta * -rand.ln();
            if now as f64 + ahead >= meta.fresh_until as f64 {
                return Freshness::FreshRefresh;
            }
        }
        Freshness::Fresh
    } else if now < meta.stale_while_revalidate_until {
        Freshness::StaleWhileRevalidate
    } else if now < meta.stale_if_error_until {
        Freshness::StaleIfError
    } else {
        Freshness::Expired
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where a value returned by [`Cache::get_or_compute_with_source`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// A fresh entry in the cache.
    Hit,
    /// An entry past its TTL, served within its stale-while-revalidate window (a refresh
    /// runs in the background) or its stale-if-error window (the computation failed).
    Stale,
    /// This call computed the value (and stored it, when the backend could take it).
    Computed,
    /// Another call for the same key was computing it; this call waited for its result.
    /// Not a hit: the value was not in the cache when this call looked.
    Joined,
}

impl Source {
    /// The conventional `X-Cache` header value: `HIT`, `STALE`, or `MISS` for a value that
    /// this call computed or waited for.
    pub const fn x_cache(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Stale => "STALE",
            Self::Computed | Self::Joined => "MISS",
        }
    }

    /// Whether the value was in the cache ([`Hit`](Self::Hit) or [`Stale`](Self::Stale)).
    pub const fn is_cached(self) -> bool {
        matches!(self, Self::Hit | Self::Stale)
    }
}

/// Result of [`Cache::warm`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmReport {
    /// Keys that hold a value now (computed, or already fresh).
    pub filled: usize,
    /// Keys whose computation failed (each logged).
    pub failed: usize,
}

impl Cache {
    /// A builder; see [`CacheBuilder`] for the settings and their defaults.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::new()
    }

    /// A cache configured from `CACHE_PREFIX`, `CACHE_DEFAULT_TTL` and `REDIS_URL` or
    /// `REDIS_CLUSTER_URLS`; see
    /// [`CacheBuilder::from_env`].
    ///
    /// # Errors
    ///
    /// When a variable is set to something unreadable or a setting cannot work.
    pub fn from_env() -> Result<Self> {
        CacheBuilder::from_env()?.build()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                flights: Arc::default(),
                stats: Stats::default(),
                logs: Logs {
                    get_failed: LogGate::new(LOG_INTERVAL),
                    set_failed: LogGate::new(LOG_INTERVAL),
                    undecodable: LogGate::new(LOG_INTERVAL),
                    refresh_failed: LogGate::new(LOG_INTERVAL),
                    encode_failed: LogGate::new(LOG_INTERVAL),
                },
            }),
        }
    }

    /// The backend entries live in.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.config.backend
    }

    /// The fresh value under `key`, or `None`.
    ///
    /// A stale value (past its TTL) is not returned: only
    /// [`get_or_compute`](Self::get_or_compute) serves stale values, because only it can
    /// refresh them.
    ///
    /// # Errors
    ///
    /// None today: a backend failure is a miss (logged, rate-limited, counted in
    /// [`CacheSnapshot::errors`]), and so are bytes that do not decode into `T` (logged, and the
    /// entry is removed).
    pub async fn get<T: Cacheable>(&self, key: &str) -> Result<Option<T>> {
        let key = self.inner.config.namespace.key(key);
        let found = self.lookup::<T>(&key).await;
        let stats = &self.inner.stats;
        match found {
            // The backend returned it before `expires_at`: with no stale windows it is
            // fresh, and the clock need not be read again.
            Some((value, meta))
                if meta.fresh_until >= meta.expires_at() || now_ms() < meta.fresh_until =>
            {
                Stats::count(&stats.hits);
                Ok(Some(value))
            }
            _ => {
                Stats::count(&stats.misses);
                Ok(None)
            }
        }
    }

    /// Stores `value` under `key` with `options`.
    ///
    /// The tags' epochs are captured at the call: an [`invalidate_tags`](Self::invalidate_tags)
    /// of one of them that returns before this call starts invalidates nothing stored here;
    /// one that runs concurrently invalidates this value whichever write lands last.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`](super::Error::Codec) when `value`'s `Serialize` fails. A backend
    /// failure skips the write (logged, rate-limited) and is not an error.
    pub async fn set<T: Cacheable>(
        &self,
        key: &str,
        value: &T,
        options: EntryOptions,
    ) -> Result<()> {
        let key = self.inner.config.namespace.key(key);
        let tags = self.tags(&options.tags);
        let Some(epochs) = self.capture(&tags).await else {
            return Ok(());
        };
        let encoded = codec::encode(value, self.inner.config.compression_threshold)?;
        let decoded: AnyValue = Arc::new(value.clone());
        let recorded: Vec<TagEpoch> = tags.into_iter().zip(epochs).collect();
        self.store(&key, Value::new(decoded, encoded), &options, &recorded, 0)
            .await;
        Ok(())
    }

    /// Removes the entry under `key`.
    ///
    /// A computation that started before this call may still store its value afterwards;
    /// tag the entry and use [`invalidate_tags`](Self::invalidate_tags) where that matters.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](super::Error::Backend) when the backend failed: the entry may
    /// still be there.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let key = self.inner.config.namespace.key(key);
        Ok(self.inner.config.backend.delete(&key).await?)
    }

    /// Invalidates every entry tagged with any of `tags`: one write per tag, whatever the
    /// number of entries.
    ///
    /// Once this returns `Ok`, no value computed (or `set`) before it started is served,
    /// even one whose write lands after it.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](super::Error::Backend) when the backend failed: some tags may not
    /// be invalidated; retry.
    pub async fn invalidate_tags<S: AsRef<str>>(&self, tags: &[S]) -> Result<()> {
        let tags: Vec<Tag> = tags
            .iter()
            .map(|tag| self.inner.config.namespace.tag(tag.as_ref()))
            .collect();
        Ok(self.inner.config.backend.invalidate_tags(&tags).await?)
    }

    /// Removes every entry whose key starts with `prefix`; returns how many were removed.
    ///
    /// This visits every key of the backend (memory: an iteration; Redis: a non-blocking
    /// `SCAN`): O(keys). Prefer tags for anything frequent. Keys that are hashed (see the
    /// module docs) keep their readable leading part, so they are removed when `prefix` is
    /// part of it; a `prefix` holding characters that keys would hash is cut before the
    /// first of them, which may remove more entries than asked, never fewer.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](super::Error::Backend) when the backend failed part way.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        let prefix = self.inner.config.namespace.prefix(prefix);
        Ok(self.inner.config.backend.delete_prefix(&prefix).await?)
    }

    /// The value under `key`, computing and storing it with `compute` when there is no
    /// usable one.
    ///
    /// - Concurrent calls for one key in this process run one computation; the others
    ///   wait for it and get its value or its error (errors are shared, never stored). If
    ///   the computing call is dropped, a waiting one takes over.
    /// - Past the TTL, within the entry's stale-while-revalidate window, the stale value is
    ///   returned at once and one background task recomputes it.
    /// - Past the TTL, within the stale-if-error window, the value is recomputed; if that
    ///   fails the stale value is returned instead of the error.
    /// - Before the TTL, early refresh (XFetch) may start one background recomputation.
    ///
    /// The tags' epochs are captured before `compute` runs, so an invalidation that
    /// overlaps the computation invalidates its result.
    ///
    /// # Errors
    ///
    /// The error of `compute` (this call's or the one it waited for), unless a stale value
    /// could be served. Cache failures never surface: the value is computed and returned.
    pub async fn get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        options: EntryOptions,
        compute: F,
    ) -> Result<T, Arc<E>>
    where
        T: Cacheable,
        E: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.get_or_compute_with_source(key, options, compute)
            .await
            .map(|(value, _)| value)
    }

    /// [`get_or_compute`](Self::get_or_compute), telling where the value came from: the
    /// cache, a stale entry, this call's computation, or another call's computation that
    /// this one waited for.
    ///
    /// The [`Source`] agrees with the [statistics](Self::stats): [`Source::Hit`] is counted
    /// in `hits`, [`Source::Stale`] in `stale_serves`, [`Source::Computed`] and
    /// [`Source::Joined`] in `misses`. An `X-Cache` header built from
    /// [`Source::x_cache`] therefore says `HIT` exactly as often as the cache counts hits.
    ///
    /// # Errors
    ///
    /// As [`get_or_compute`](Self::get_or_compute).
    pub async fn get_or_compute_with_source<T, E, F, Fut>(
        &self,
        key: &str,
        options: EntryOptions,
        compute: F,
    ) -> Result<(T, Source), Arc<E>>
    where
        T: Cacheable,
        E: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.get_or_compute_ttl(key, options, move || {
            let computing = compute();
            async move { computing.await.map(|value| (value, None)) }
        })
        .await
    }

    /// [`get_or_compute_with_source`](Self::get_or_compute_with_source) for a computation
    /// that may choose its entry's TTL itself (`Some` replaces `options`' TTL), as a cached
    /// HTTP response does from its `Cache-Control`.
    pub(crate) async fn get_or_compute_ttl<T, E, F, Fut>(
        &self,
        key: &str,
        options: EntryOptions,
        compute: F,
    ) -> Result<(T, Source), Arc<E>>
    where
        T: Cacheable,
        E: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, Option<Duration>), E>> + Send + 'static,
    {
        let key = self.inner.config.namespace.key(key);
        let stats = &self.inner.stats;
        loop {
            let found = self.lookup::<T>(&key).await;
            let mut stale = None;
            if let Some((value, meta)) = found {
                match freshness(&meta, now_ms(), options.early_refresh_beta) {
                    Freshness::Fresh => {
                        Stats::count(&stats.hits);
                        return Ok((value, Source::Hit));
                    }
                    Freshness::FreshRefresh => {
                        Stats::count(&stats.hits);
                        self.refresh_in_background(&key, options, compute);
                        return Ok((value, Source::Hit));
                    }
                    Freshness::StaleWhileRevalidate => {
                        Stats::count(&stats.stale_serves);
                        self.refresh_in_background(&key, options, compute);
                        return Ok((value, Source::Stale));
                    }
                    Freshness::StaleIfError => stale = Some(value),
                    Freshness::Expired => {}
                }
            }
            let result: Result<(T, Source), Arc<E>> = match self.inner.flights.join(&key) {
                Join::Lead(leader) => self
                    .compute_and_store(key.clone(), &options, compute, leader)
                    .await
                    .map(|value| (T::clone(&value), Source::Computed)),
                Join::Follow(follower) => match follower.wait().await {
                    // The computing call was dropped before it finished: look again, and
                    // lead if nobody else does.
                    None => continue,
                    Some(outcome) => match typed::<T, E>(outcome) {
                        // A computation that captured its epochs before an invalidation
                        // this call may have followed: look again instead.
                        Some(Ok((value, recorded))) => {
                            if !self.still_current(&recorded).await {
                                continue;
                            }
                            Ok((value, Source::Joined))
                        }
                        Some(Err(error)) => Err(error),
                        None => {
                            return self
                                .compute_alone(compute)
                                .await
                                .map(|value| (value, Source::Computed));
                        }
                    },
                },
            };
            return match (result, stale) {
                (Ok(found), _) => {
                    Stats::count(&stats.misses);
                    Ok(found)
                }
                (Err(_), Some(stale)) => {
                    Stats::count(&stats.stale_serves);
                    Ok((stale, Source::Stale))
                }
                (Err(error), None) => {
                    Stats::count(&stats.misses);
                    Err(error)
                }
            };
        }
    }

    /// Fills many keys with at most [`warm_concurrency`](CacheBuilder::warm_concurrency)
    /// computations at once, each as [`get_or_compute`](Self::get_or_compute) (keys with a
    /// fresh value are left as they are).
    ///
    /// Failed computations are logged and counted in the report.
    pub async fn warm<I, K, T, E, F, Fut>(&self, items: I) -> WarmReport
    where
        I: IntoIterator<Item = (K, EntryOptions, F)>,
        K: Into<String>,
        T: Cacheable,
        E: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let limit = self.inner.config.warm_concurrency;
        let mut report = WarmReport::default();
        let mut running = JoinSet::new();
        let mut tally = |result: Result<Result<(), ()>, tokio::task::JoinError>| match result {
            Ok(Ok(())) => report.filled += 1,
            _ => report.failed += 1,
        };
        for (key, options, compute) in items {
            while running.len() >= limit {
                if let Some(done) = running.join_next().await {
                    tally(done);
                }
            }
            let cache = self.clone();
            let key: String = key.into();
            running.spawn(async move {
                match cache.get_or_compute(&key, options, compute).await {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        tracing::warn!(key = %key, error = %error, "cache warm-up computation failed");
                        Err(())
                    }
                }
            });
        }
        while let Some(done) = running.join_next().await {
            tally(done);
        }
        report
    }

    /// Counters and lookup latency percentiles since the cache was built.
    pub fn stats(&self) -> CacheSnapshot {
        self.inner.stats.snapshot()
    }

    fn tags(&self, tags: &[String]) -> Vec<Tag> {
        tags.iter()
            .map(|tag| self.inner.config.namespace.tag(tag))
            .collect()
    }

    /// The tags' current epochs, or `None` (logged) when the backend cannot tell: then
    /// nothing may be stored, since its validity could not be checked.
    async fn capture(&self, tags: &[Tag]) -> Option<Vec<Epoch>> {
        if tags.is_empty() {
            return Some(Vec::new());
        }
        match self.inner.config.backend.tag_epochs(tags).await {
            Ok(epochs) if epochs.len() == tags.len() => Some(epochs),
            Ok(_) => {
                self.set_failed(&"the backend returned the wrong number of tag epochs");
                None
            }
            Err(error) => {
                self.set_failed(&error);
                None
            }
        }
    }

    fn set_failed(&self, error: &dyn fmt::Display) {
        Stats::count(&self.inner.stats.errors);
        if let Some(held_back) = self.inner.logs.set_failed.open(now_ms()) {
            tracing::warn!(error = %error, held_back, "cache write skipped: backend failed");
        }
    }

    /// Writes an entry; failures are logged and skipped.
    async fn store(
        &self,
        key: &Key,
        value: Value,
        options: &EntryOptions,
        recorded: &[TagEpoch],
        compute_ms: u32,
    ) {
        let ttl = millis(options.ttl.unwrap_or(self.inner.config.default_ttl));
        if ttl == 0 {
            return;
        }
        let fresh_until = now_ms().saturating_add(ttl);
        let meta = EntryMeta {
            fresh_until,
            stale_while_revalidate_until: fresh_until
                .saturating_add(millis(options.stale_while_revalidate)),
            stale_if_error_until: fresh_until.saturating_add(millis(options.stale_if_error)),
            compute_ms,
        };
        let entry = Entry {
            value,
            meta,
            tags: recorded.into(),
        };
        if let Err(error) = self.inner.config.backend.set(key, entry).await {
            self.set_failed(&error);
        }
    }

    /// Reads and decodes the entry under `key`; every failure is a logged miss.
    async fn lookup<T: Cacheable>(&self, key: &Key) -> Option<(T, EntryMeta)> {
        let started = std::time::Instant::now();
        let backend = &self.inner.config.backend;
        let entry = match backend.get_local(key) {
            LocalLookup::Hit(entry) => Some(entry),
            LocalLookup::Miss => None,
            LocalLookup::Unknown => match backend.get(key, codec::decode_any::<T>).await {
                Ok(entry) => entry,
                Err(error) => {
                    Stats::count(&self.inner.stats.errors);
                    if let Some(held_back) = self.inner.logs.get_failed.open(now_ms()) {
                        tracing::warn!(error = %error, held_back, "cache read failed: counted as a miss");
                    }
                    None
                }
            },
        };
        let result = match entry {
            Some(entry) => match value_of::<T>(&entry.value) {
                Ok(value) => Some((value, entry.meta)),
                Err(error) => {
                    self.undecodable(key, &error).await;
                    None
                }
            },
            None => None,
        };
        self.inner
            .stats
            .record_latency(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        result
    }

    async fn undecodable(&self, key: &Key, error: &CodecError) {
        Stats::count(&self.inner.stats.errors);
        if let Some(held_back) = self.inner.logs.undecodable.open(now_ms()) {
            tracing::warn!(key = ?key, error = %error, held_back, "cache entry does not decode: removed, counted as a miss");
        }
        // Best effort: a failure here is a failure of the backend, already logged by reads.
        let _ = self.inner.config.backend.delete(key).await;
    }

    /// Runs `compute` as the flight's leader: captures the tags' epochs, computes, stores,
    /// publishes the outcome to the followers.
    async fn compute_and_store<T, E, F, Fut>(
        &self,
        key: Key,
        options: &EntryOptions,
        compute: F,
        leader: Leader,
    ) -> Result<Arc<T>, Arc<E>>
    where
        T: Cacheable,
        E: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, Option<Duration>), E>> + Send + 'static,
    {
        let tags = self.tags(&options.tags);
        let recorded: Option<Arc<[TagEpoch]>> = self
            .capture(&tags)
            .await
            .map(|epochs| tags.into_iter().zip(epochs).collect());
        Stats::count(&self.inner.stats.computations);
        let started = tokio::time::Instant::now();
        let result = compute().await;
        let compute_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let result = match result {
            Ok((value, ttl)) => {
                let value = Arc::new(value);
                if let Some(recorded) = &recorded {
                    let chosen;
                    let options = match ttl {
                        Some(ttl) => {
                            chosen = options.clone().ttl(ttl);
                            &chosen
                        }
                        None => options,
                    };
                    self.store_computed(&key, &value, options, recorded, compute_ms)
                        .await;
                }
                Ok(value)
            }
            Err(error) => Err(Arc::new(error)),
        };
        leader.publish(match &result {
            // Without captured epochs nothing was stored; waiters take the value as is.
            Ok(value) => Ok((
                Arc::clone(value) as AnyValue,
                recorded.unwrap_or_else(|| Arc::new([])),
            )),
            Err(error) => Err(Arc::clone(error) as AnyValue),
        });
        result
    }

    /// Whether every tag still has the epoch recorded for it; `false` when the backend
    /// cannot tell.
    async fn still_current(&self, recorded: &[TagEpoch]) -> bool {
        if recorded.is_empty() {
            return true;
        }
        let tags: Vec<Tag> = recorded.iter().map(|(tag, _)| tag.clone()).collect();
        match self.inner.config.backend.tag_epochs(&tags).await {
            Ok(current) => current.iter().eq(recorded.iter().map(|(_, epoch)| epoch)),
            Err(_) => false,
        }
    }

    async fn store_computed<T: Cacheable>(
        &self,
        key: &Key,
        value: &Arc<T>,
        options: &EntryOptions,
        recorded: &[TagEpoch],
        compute_ms: u32,
    ) {
        match codec::encode(&**value, self.inner.config.compression_threshold) {
            Ok(encoded) => {
                let stored = Value::new(Arc::clone(value) as AnyValue, encoded);
                self.store(key, stored, options, recorded, compute_ms.max(1))
                    .await;
            }
            Err(error) => {
                Stats::count(&self.inner.stats.errors);
                if let Some(held_back) = self.inner.logs.encode_failed.open(now_ms()) {
                    tracing::warn!(key = ?key, error = %error, held_back, "computed value not cached: it does not encode");
                }
            }
        }
    }

    /// Computes outside the flight, for the rare caller whose types differ from the
    /// flight's (one key used with two types).
    async fn compute_alone<T, E, F, Fut>(&self, compute: F) -> Result<T, Arc<E>>
    where
        T: Cacheable,
        E: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, Option<Duration>), E>> + Send + 'static,
    {
        Stats::count(&self.inner.stats.misses);
        Stats::count(&self.inner.stats.computations);
        compute().await.map(|(value, _)| value).map_err(Arc::new)
    }

    /// Starts one background recomputation of `key`, unless one is in flight or there is
    /// no tokio runtime to run it.
    fn refresh_in_background<T, E, F, Fut>(&self, key: &Key, options: EntryOptions, compute: F)
    where
        T: Cacheable,
        E: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(T, Option<Duration>), E>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(leader) = self.inner.flights.try_lead(key) else {
            return;
        };
        let cache = self.clone();
        let key = key.clone();
        runtime.spawn(async move {
            if let Err(error) = cache.compute_and_store(key.clone(), &options, compute, leader).await {
                Stats::count(&cache.inner.stats.errors);
                if let Some(held_back) = cache.inner.logs.refresh_failed.open(now_ms()) {
                    tracing::warn!(key = ?key, error = %error, held_back, "background cache refresh failed; the stale value stays");
                }
            }
        });
    }
}

/// The typed result of a flight's outcome; `None` when the flight computed other types.
/// A flight's outcome for one caller: its value with the epochs it was computed under, or
/// its error.
type Typed<T, E> = Result<(T, Arc<[TagEpoch]>), Arc<E>>;

fn typed<T: Cacheable, E: Send + Sync + 'static>(outcome: Outcome) -> Option<Typed<T, E>> {
    match outcome {
        Ok((value, recorded)) => value
            .downcast::<T>()
            .ok()
            .map(|value| Ok((T::clone(&value), recorded))),
        Err(error) => error.downcast::<E>().ok().map(Err),
    }
}

/// Clones the value out of an entry: the decoded form when it has type `T`, else decoding
/// the bytes.
fn value_of<T: Cacheable>(value: &Value) -> Result<T, CodecError> {
    if let Some(value) = value.decoded().and_then(|d| d.downcast_ref::<T>()) {
        return Ok(value.clone());
    }
    match value.encoded() {
        Some(bytes) => codec::decode::<T>(bytes),
        None => Err(CodecError::TypeMismatch {
            requested: type_name::<T>(),
        }),
    }
}
