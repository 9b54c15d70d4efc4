//! Counters of the response cache, per route template.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use serde::{Deserialize, Serialize};

/// The most route labels counted separately; requests of further routes are counted under
/// [`OTHER_ROUTE`]. Labels are route templates, so real applications stay far below it.
pub const MAX_ROUTES: usize = 256;

/// The label of requests with no route template (no label function answered and no
/// axum `MatchedPath`), and of routes beyond [`MAX_ROUTES`].
pub const OTHER_ROUTE: &str = "other";

/// Why a request was answered without the cache, or a response was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Bypass {
    /// Neither `GET` nor `HEAD`.
    Method,
    /// The request carried `Authorization` or `Cookie` and the route has no per-user key.
    Credentials,
    /// The request said `Cache-Control: no-cache` (or `no-store`, or `Pragma: no-cache`).
    RequestNoCache,
    /// The cache did not answer within the layer's wait; the handler answered alone.
    CacheWait,
    /// A `HEAD` request found no fresh entry: the handler answered it, nothing was stored.
    HeadMiss,
    /// The response's status is not in the cacheable list.
    Status,
    /// The response sets a cookie.
    SetCookie,
    /// The response's `Cache-Control` says `private`, `no-store` or `no-cache`.
    CacheControl,
    /// The response varies (`Vary`) on `*` or on a request header the key does not hold.
    Vary,
    /// The response is already content-encoded and the key does not hold
    /// `Accept-Encoding`.
    Encoded,
    /// The body is larger than the layer's limit; it streamed through.
    TooLarge,
    /// The body failed, or ended in trailers.
    Body,
    /// The handler returned an error.
    HandlerError,
}

impl Bypass {
    /// The reason's name in snapshots and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Credentials => "credentials",
            Self::RequestNoCache => "request_no_cache",
            Self::CacheWait => "cache_wait",
            Self::HeadMiss => "head_miss",
            Self::Status => "status",
            Self::SetCookie => "set_cookie",
            Self::CacheControl => "cache_control",
            Self::Vary => "vary",
            Self::Encoded => "encoded",
            Self::TooLarge => "too_large",
            Self::Body => "body",
            Self::HandlerError => "handler_error",
        }
    }

    const ALL: [Self; 13] = [
        Self::Method,
        Self::Credentials,
        Self::RequestNoCache,
        Self::CacheWait,
        Self::HeadMiss,
        Self::Status,
        Self::SetCookie,
        Self::CacheControl,
        Self::Vary,
        Self::Encoded,
        Self::TooLarge,
        Self::Body,
        Self::HandlerError,
    ];

    const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Bypass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    not_modified: AtomicU64,
    bytes_served: AtomicU64,
    bypasses: [AtomicU64; Bypass::ALL.len()],
}

impl Counters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    pub(crate) fn stale(&self) {
        self.stale.fetch_add(1, Relaxed);
    }

    pub(crate) fn not_modified(&self) {
        self.not_modified.fetch_add(1, Relaxed);
    }

    pub(crate) fn served(&self, bytes: usize) {
        self.bytes_served.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn bypass(&self, reason: Bypass) {
        self.bypasses[reason.index()].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> ResponseCacheCounts {
        ResponseCacheCounts {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            stale: self.stale.load(Relaxed),
            not_modified: self.not_modified.load(Relaxed),
            bytes_served: self.bytes_served.load(Relaxed),
            bypasses: Bypass::ALL
                .iter()
                .filter_map(|reason| {
                    let count = self.bypasses[reason.index()].load(Relaxed);
                    (count > 0).then(|| (reason.as_str().to_owned(), count))
                })
                .collect(),
        }
    }
}

/// The live counters of one or more [`ResponseCacheLayer`](super::ResponseCacheLayer)s;
/// cheap to clone, every clone counts into the same figures.
///
/// Pass one to [`ResponseCacheLayer::with_stats`](super::ResponseCacheLayer::with_stats)
/// for several routes to share it; read it with [`snapshot`](Self::snapshot).
#[derive(Clone, Debug, Default)]
pub struct ResponseCacheStats {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    routes: Mutex<HashMap<Box<str>, Arc<Counters>>>,
    other: Arc<Counters>,
}

impl ResponseCacheStats {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `route`, created on first use while fewer than [`MAX_ROUTES`]
    /// exist; [`OTHER_ROUTE`]'s beyond that.
    pub(crate) fn route(&self, route: Option<&str>) -> Arc<Counters> {
        let Some(route) = route.filter(|route| *route != OTHER_ROUTE) else {
            return Arc::clone(&self.inner.other);
        };
        let mut routes = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(counters) = routes.get(route) {
            return Arc::clone(counters);
        }
        if routes.len() >= MAX_ROUTES {
            return Arc::clone(&self.inner.other);
        }
        let counters = Arc::new(Counters::default());
        routes.insert(route.into(), Arc::clone(&counters));
        counters
    }

    /// The counters so far, in total and per route template.
    pub fn snapshot(&self) -> ResponseCacheSnapshot {
        let mut routes: BTreeMap<String, ResponseCacheCounts> = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(route, counters)| (route.to_string(), counters.snapshot()))
            .collect();
        let other = self.inner.other.snapshot();
        if other != ResponseCacheCounts::default() {
            routes.insert(OTHER_ROUTE.to_owned(), other);
        }
        let mut total = ResponseCacheCounts::default();
        for counts in routes.values() {
            total.add(counts);
        }
        ResponseCacheSnapshot { total, routes }
    }
}

/// The counters of one route (or of all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResponseCacheCounts {
    /// Responses served from a fresh entry (`X-Cache: HIT`), `304`s included.
    pub hits: u64,
    /// Responses the handler computed for the cache, or that waited for another request's
    /// computation (`X-Cache: MISS`).
    pub misses: u64,
    /// Responses served from an entry past its TTL (`X-Cache: STALE`).
    pub stale: u64,
    /// `304 Not Modified` answers (from a hit, a stale entry or a fresh computation).
    pub not_modified: u64,
    /// Body bytes served from entries (hits and stale serves, `HEAD` and `304` count 0).
    pub bytes_served: u64,
    /// Requests answered without the cache and responses not stored, by
    /// [`Bypass`] reason name; reasons that never happened are left out.
    pub bypasses: BTreeMap<String, u64>,
}

impl ResponseCacheCounts {
    fn add(&mut self, other: &Self) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.stale += other.stale;
        self.not_modified += other.not_modified;
        self.bytes_served += other.bytes_served;
        for (reason, count) in &other.bypasses {
            *self.bypasses.entry(reason.clone()).or_default() += count;
        }
    }

    /// The count of one bypass reason.
    pub fn bypassed(&self, reason: Bypass) -> u64 {
        self.bypasses.get(reason.as_str()).copied().unwrap_or(0)
    }
}

/// A [`ResponseCacheStats`] at one moment; serde both ways.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResponseCacheSnapshot {
    /// Every route together.
    pub total: ResponseCacheCounts,
    /// Per route template; [`OTHER_ROUTE`] holds the unlabelled ones.
    pub routes: BTreeMap<String, ResponseCacheCounts>,
}
