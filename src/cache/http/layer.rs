//! The layer: configuration shared by every service built from it.

use std::{fmt, sync::Arc, time::Duration};

use http::{HeaderName, StatusCode, request::Parts};
use tower_layer::Layer;

use crate::{
    cache::{Cache, EntryOptions},
    log_gate::{LOG_INTERVAL, LogGate},
};

use super::{ResponseCache, stats::ResponseCacheStats};

/// The largest body stored by default: 1 MiB. Larger bodies stream through uncached.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// How long a request waits by default for the cache (a lookup, or another request
/// computing the same key) before its own handler answers it: 5 s.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

type PartsFn<T> = Arc<dyn Fn(&Parts) -> T + Send + Sync>;

pub(crate) struct Config {
    pub(crate) cache: Cache,
    pub(crate) options: EntryOptions,
    pub(crate) ttl: Option<PartsFn<Option<Duration>>>,
    pub(crate) tags: Option<PartsFn<Vec<String>>>,
    pub(crate) user: Option<PartsFn<Option<String>>>,
    pub(crate) route: Option<PartsFn<Option<&'static str>>>,
    pub(crate) statuses: Vec<StatusCode>,
    pub(crate) vary: Vec<HeaderName>,
    pub(crate) honor_request_no_cache: bool,
    pub(crate) max_body: usize,
    pub(crate) wait: Duration,
    pub(crate) stats: ResponseCacheStats,
    pub(crate) wait_log: LogGate,
    #[cfg(feature = "_compression")]
    pub(crate) variants: Option<super::variant::Variants>,
}

/// Caches whole `GET` responses in a [`Cache`]; see the [module docs](super).
///
/// Cloning is cheap and every clone (and every service built from it) shares its
/// statistics.
#[derive(Clone)]
#[must_use]
pub struct ResponseCacheLayer {
    config: Config,
}

impl Clone for Config {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            options: self.options.clone(),
            ttl: self.ttl.clone(),
            tags: self.tags.clone(),
            user: self.user.clone(),
            route: self.route.clone(),
            statuses: self.statuses.clone(),
            vary: self.vary.clone(),
            honor_request_no_cache: self.honor_request_no_cache,
            max_body: self.max_body,
            wait: self.wait,
            stats: self.stats.clone(),
            wait_log: LogGate::new(LOG_INTERVAL),
            #[cfg(feature = "_compression")]
            variants: self.variants.clone(),
        }
    }
}

impl fmt::Debug for ResponseCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        f.debug_struct("ResponseCacheLayer")
            .field("cache", &config.cache)
            .field("options", &config.options)
            .field("statuses", &config.statuses)
            .field("vary", &config.vary)
            .field("per_user", &config.user.is_some())
            .field("honor_request_no_cache", &config.honor_request_no_cache)
            .field("max_body", &config.max_body)
            .field("wait", &config.wait)
            .finish_non_exhaustive()
    }
}

impl ResponseCacheLayer {
    /// A layer storing responses in `cache`, with statistics of its own.
    pub fn new(cache: Cache) -> Self {
        Self::with_stats(cache, ResponseCacheStats::new())
    }

    /// A layer storing responses in `cache` and counting into `stats`, which other layers
    /// (other routes) may share.
    pub fn with_stats(cache: Cache, stats: ResponseCacheStats) -> Self {
        Self {
            config: Config {
                cache,
                options: EntryOptions::new(),
                ttl: None,
                tags: None,
                user: None,
                route: None,
                statuses: vec![StatusCode::OK],
                vary: Vec::new(),
                honor_request_no_cache: true,
                max_body: DEFAULT_MAX_BODY,
                wait: DEFAULT_WAIT,
                stats,
                wait_log: LogGate::new(LOG_INTERVAL),
                #[cfg(feature = "_compression")]
                variants: Some(super::variant::Variants::default()),
            },
        }
    }

    /// The entry options every response is stored with: TTL, tags, and the
    /// stale-while-revalidate and stale-if-error windows. Defaults to
    /// [`EntryOptions::new`] (the cache's default TTL, no tags, no windows).
    ///
    /// A TTL from [`ttl_for`](Self::ttl_for) or from the response's `Cache-Control`
    /// replaces this one; tags from [`tags_for`](Self::tags_for) add to these.
    pub fn options(mut self, options: EntryOptions) -> Self {
        self.config.options = options;
        self
    }

    /// Shorthand for a fixed TTL in [`options`](Self::options).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.options = self.config.options.ttl(ttl);
        self
    }

    /// The TTL of one request's entry; `None` falls back to the response's
    /// `Cache-Control: s-maxage`, then `max-age`, then [`options`](Self::options)' TTL.
    /// Defaults to none.
    pub fn ttl_for<F>(mut self, ttl: F) -> Self
    where
        F: Fn(&Parts) -> Option<Duration> + Send + Sync + 'static,
    {
        self.config.ttl = Some(Arc::new(ttl));
        self
    }

    /// Tags for one request's entry (such as `user:{id}` from the path), added to those of
    /// [`options`](Self::options); invalidate them with [`Cache::invalidate_tags`].
    /// Defaults to none.
    pub fn tags_for<F>(mut self, tags: F) -> Self
    where
        F: Fn(&Parts) -> Vec<String> + Send + Sync + 'static,
    {
        self.config.tags = Some(Arc::new(tags));
        self
    }

    /// Caches requests that carry `Authorization` or `Cookie` under a per-user key: the
    /// closure names the user (from a verified session, a token's subject); `None` leaves
    /// the request uncached. Without it (the default), such requests bypass the cache.
    pub fn per_user<F>(mut self, user: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.config.user = Some(Arc::new(user));
        self
    }

    /// The route template statistics are counted under (`"/users/{id}"`, never a raw
    /// path). `None` falls back to axum's `MatchedPath` (with the `axum` feature), then to
    /// [`OTHER_ROUTE`](super::OTHER_ROUTE). Defaults to none.
    pub fn route_fn<F>(mut self, route: F) -> Self
    where
        F: Fn(&Parts) -> Option<&'static str> + Send + Sync + 'static,
    {
        self.config.route = Some(Arc::new(route));
        self
    }

    /// The statuses whose responses are stored. Defaults to `200 OK` alone; add, say,
    /// `404` with a short TTL from [`ttl_for`](Self::ttl_for).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.config.statuses = statuses.into_iter().collect();
        self
    }

    /// The request headers the route's responses depend on: their values are part of the
    /// key, and a response may `Vary` on them. A response that varies on any other header
    /// (or on `*`) is not stored. Defaults to none.
    pub fn vary(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.config.vary = headers.into_iter().collect();
        self.config.vary.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        self.config.vary.dedup();
        self
    }

    /// Whether a request's `Cache-Control: no-cache` (or `no-store`, or
    /// `Pragma: no-cache`) sends it past the cache to the handler. Defaults to `true`.
    pub fn honor_request_no_cache(mut self, honor: bool) -> Self {
        self.config.honor_request_no_cache = honor;
        self
    }

    /// The largest body stored, in bytes; larger ones (known from their length, or found
    /// while reading) stream through uncached, and at most this much is buffered per
    /// request. Defaults to [`DEFAULT_MAX_BODY`] (1 MiB).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// How long a request waits for the cache before its handler answers it alone: a
    /// lookup in a hung store, or another request computing the same key (single-flight).
    /// A computation this request leads is never cut short. Keep it below the request's
    /// deadline (a [`TimeoutLayer`](crate::timeout::TimeoutLayer) around it) so a slow
    /// cache costs at most this much. Defaults to [`DEFAULT_WAIT`] (5 s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.config.wait = wait;
        self
    }

    /// Whether entries get compressed variants, with a compression feature on
    /// (`compression-br`, `compression-gzip`). Defaults to `true`.
    ///
    /// A request whose `Accept-Encoding` prefers brotli or gzip is served the entry's
    /// variant in that coding, encoded the first time one is asked for at
    /// [`DEFAULT_VARIANT_BROTLI_QUALITY`](super::DEFAULT_VARIANT_BROTLI_QUALITY) /
    /// [`DEFAULT_VARIANT_GZIP_LEVEL`](super::DEFAULT_VARIANT_GZIP_LEVEL) and stored beside
    /// it (same tags), so later hits cost no compression. Bodies below
    /// [`DEFAULT_VARIANT_MIN_SIZE`](super::DEFAULT_VARIANT_MIN_SIZE), of already-compressed
    /// types, `no-transform` or marked
    /// [`NoCompression`](crate::compression::NoCompression) are served as they are.
    #[cfg(feature = "_compression")]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(feature = "compression-br", feature = "compression-gzip")))
    )]
    pub fn precompress(mut self, enabled: bool) -> Self {
        self.config.variants = enabled.then(super::variant::Variants::default);
        self
    }

    /// The brotli quality (0–11) and gzip level (0–9) of stored variants; see
    /// [`precompress`](Self::precompress). Defaults to 9 and 9.
    #[cfg(feature = "_compression")]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(feature = "compression-br", feature = "compression-gzip")))
    )]
    pub fn precompress_levels(mut self, brotli: u32, gzip: u32) -> Self {
        self.config.variants = self.config.variants.take().map(|v| v.levels(brotli, gzip));
        self
    }

    /// The smallest body given compressed variants; see [`precompress`](Self::precompress).
    /// Defaults to [`DEFAULT_VARIANT_MIN_SIZE`](super::DEFAULT_VARIANT_MIN_SIZE) (1 KiB).
    #[cfg(feature = "_compression")]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(feature = "compression-br", feature = "compression-gzip")))
    )]
    pub fn precompress_min_size(mut self, bytes: u64) -> Self {
        self.config.variants = self.config.variants.take().map(|v| v.min_size(bytes));
        self
    }

    /// Serves identity bodies only, leaving compression to a layer outside; available
    /// whatever the features. The same as `precompress(false)`.
    #[cfg_attr(not(feature = "_compression"), allow(unused_mut))]
    pub fn no_precompress(mut self) -> Self {
        #[cfg(feature = "_compression")]
        {
            self.config.variants = None;
        }
        self
    }

    /// The statistics this layer counts into (a handle on the same counters).
    pub fn stats(&self) -> ResponseCacheStats {
        self.config.stats.clone()
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCache::new(inner, Arc::new(self.config.clone()))
    }
}
