use std::{
    fmt,
    hash::Hasher,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::histogram::{Histogram, Unit};

/// The label of requests without a route label, and of labels beyond the route bound.
pub const OTHER_ROUTE: &str = "other";

/// The default bound on distinct route labels.
pub(super) const DEFAULT_MAX_ROUTES: usize = 256;

/// Bounds on the number of hash buckets of the route table (16 bytes each).
const MIN_BUCKETS: usize = 1024;
const MAX_BUCKETS: usize = 1 << 16;

/// Per-route latency statistics shared by every service of a [`TimingLayer`].
///
/// A cheap handle: clones share the same statistics. Get it from
/// [`TimingLayer::stats`], or create one and hand it to several layers with
/// [`TimingLayer::with_stats`].
///
/// Each route holds a fixed-size histogram (about 7 KiB) and counters. The number of routes
/// is bounded (256 by default, see [`TimingStats::with_max_routes`]); labels seen once the
/// bound is reached are counted under [`OTHER_ROUTE`], which does not count towards the
/// bound.
///
/// Recording a request for a known route takes no lock: the route table is append-only
/// and read with atomic loads, and counters are atomic. A mutex serializes only the
/// creation of new routes.
///
/// [`TimingLayer`]: super::TimingLayer
/// [`TimingLayer::stats`]: super::TimingLayer::stats
/// [`TimingLayer::with_stats`]: super::TimingLayer::with_stats
#[derive(Clone)]
pub struct TimingStats {
    shared: Arc<Shared>,
}

struct Shared {
    /// Hash buckets, each the head of an append-only chain of entries linked through
    /// [`RouteEntry::next`]. Set once, never removed, so readers need no lock.
    buckets: Box<[OnceLock<Arc<RouteEntry>>]>,
    /// Serializes appends to the chains.
    insert: Mutex<()>,
    /// Number of entries in the chains; only changed while `insert` is held.
    len: AtomicUsize,
    /// Fixed when the statistics are created: a layer's own bound can only be lower.
    max_routes: usize,
    other: Arc<RouteEntry>,
}

impl TimingStats {
    /// Creates empty statistics with the default bound of 256 distinct routes.
    pub fn new() -> Self {
        Self::with_max_routes(DEFAULT_MAX_ROUTES)
    }

    /// Creates empty statistics that keep at most `max_routes` distinct route labels, plus
    /// [`OTHER_ROUTE`] for the rest. With `0`, every request counts under
    /// [`OTHER_ROUTE`].
    ///
    /// The bound is fixed for the life of the statistics and holds for every layer that
    /// records into them; [`TimingLayer::max_routes`](super::TimingLayer::max_routes) can
    /// only set a lower bound for one layer.
    pub fn with_max_routes(max_routes: usize) -> Self {
        // At most about one route per bucket up to the bound, and at least 1024 buckets.
        let buckets = max_routes
            .clamp(MIN_BUCKETS, MAX_BUCKETS)
            .next_power_of_two();
        Self {
            shared: Arc::new(Shared {
                buckets: (0..buckets).map(|_| OnceLock::new()).collect(),
                insert: Mutex::new(()),
                len: AtomicUsize::new(0),
                max_routes,
                other: Arc::new(RouteEntry::new(Box::from(OTHER_ROUTE))),
            }),
        }
    }

    /// The bound on distinct route labels, set when the statistics were created.
    pub fn max_routes(&self) -> usize {
        self.shared.max_routes
    }

    /// Whether this handle is the only one: no clone, layer or service shares it.
    pub(super) fn is_unshared(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }

    /// A snapshot of every route that has recorded at least one request, sorted by route.
    pub fn snapshot(&self) -> TimingSnapshot {
        let mut routes: Vec<RouteSnapshot> = self
            .entries()
            .chain([&self.shared.other])
            .filter_map(|entry| entry.snapshot())
            .collect();
        routes.sort_unstable_by(|a, b| a.route.cmp(&b.route));
        TimingSnapshot { routes }
    }

    /// A snapshot of one route, if it has recorded at least one request.
    pub fn route(&self, route: &str) -> Option<RouteSnapshot> {
        if route == OTHER_ROUTE {
            return self.shared.other.snapshot();
        }
        self.find(route).ok()?.snapshot()
    }

    /// Sets every route's counters back to zero.
    ///
    /// Known routes stay known (and keep counting towards the route bound); they are left
    /// out of snapshots until they record again. Requests in flight during the reset are
    /// recorded after it.
    pub fn reset(&self) {
        for entry in self.entries() {
            entry.reset();
        }
        self.shared.other.reset();
    }

    /// The statistics entry for a route label: the label's own entry, a new one if the
    /// table holds fewer than `max_routes` (and than the statistics' own bound), or the
    /// shared [`OTHER_ROUTE`] entry.
    #[inline]
    pub(super) fn entry(&self, label: Option<&str>, max_routes: usize) -> Arc<RouteEntry> {
        match label {
            Some(label) if label != OTHER_ROUTE => self.labelled(label, max_routes),
            _ => self.shared.other.clone(),
        }
    }

    /// The entry of a route label other than [`OTHER_ROUTE`].
    fn labelled(&self, label: &str, max_routes: usize) -> Arc<RouteEntry> {
        match self.find(label) {
            Ok(entry) => entry.clone(),
            Err(_) => self.insert(label, max_routes.min(self.max_routes())),
        }
    }

    /// The entry for `label`, or the empty link at the end of its chain.
    #[inline]
    fn find(&self, label: &str) -> Result<&Arc<RouteEntry>, &OnceLock<Arc<RouteEntry>>> {
        let mut hasher = LabelHasher::default();
        hasher.write(label.as_bytes());
        let index = hasher.finish() as usize & (self.shared.buckets.len() - 1);
        let mut link = &self.shared.buckets[index];
        while let Some(entry) = link.get() {
            if *entry.name == *label {
                return Ok(entry);
            }
            link = &entry.next;
        }
        Err(link)
    }

    #[cold]
    fn insert(&self, label: &str, max_routes: usize) -> Arc<RouteEntry> {
        let shared = &*self.shared;
        // Once the table is full, unknown labels never take the mutex.
        if shared.len.load(Relaxed) >= max_routes {
            return shared.other.clone();
        }
        // The guarded data is `()`: a panic while it was held leaves nothing inconsistent.
        let _guard = shared.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let link = match self.find(label) {
            Ok(entry) => return entry.clone(),
            Err(link) => link,
        };
        if shared.len.load(Relaxed) >= max_routes {
            return shared.other.clone();
        }
        let entry = Arc::new(RouteEntry::new(Box::from(label)));
        // Appends are serialized by the mutex, so the empty link is still empty.
        let entry = link.get_or_init(|| entry).clone();
        shared.len.fetch_add(1, Relaxed);
        entry
    }

    /// Every entry of the route table, [`OTHER_ROUTE`] excepted.
    fn entries(&self) -> impl Iterator<Item = &Arc<RouteEntry>> {
        self.shared
            .buckets
            .iter()
            .flat_map(|head| std::iter::successors(head.get(), |entry| entry.next.get()))
    }
}

impl Default for TimingStats {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TimingStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingStats")
            .field("routes", &self.shared.len.load(Relaxed))
            .field("max_routes", &self.max_routes())
            .finish()
    }
}

/// The counters of one route.
pub(super) struct RouteEntry {
    name: Box<str>,
    histogram: Histogram,
    server_errors: AtomicU64,
    /// The next entry in the same hash bucket.
    next: OnceLock<Arc<RouteEntry>>,
}

impl RouteEntry {
    fn new(name: Box<str>) -> Self {
        Self {
            name,
            histogram: Histogram::new(),
            server_errors: AtomicU64::new(0),
            next: OnceLock::new(),
        }
    }

    /// Records one request and logs it when it took at least `slow_threshold`.
    #[inline]
    pub(super) fn record(
        &self,
        elapsed: Duration,
        status: StatusCode,
        method: &Method,
        slow_threshold: Option<Duration>,
    ) {
        let micros = elapsed
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(elapsed.subsec_micros()));
        self.histogram.record(micros);
        if status.is_server_error() {
            self.server_errors.fetch_add(1, Relaxed);
        }
        if slow_threshold.is_some_and(|threshold| elapsed >= threshold) {
            self.log_slow(micros, status, method);
        }
    }

    #[cold]
    fn log_slow(&self, micros: u64, status: StatusCode, method: &Method) {
        tracing::warn!(
            target: "perfkit::timing",
            method = %method,
            route = &*self.name,
            status = status.as_u16(),
            duration_ms = micros as f64 / 1000.0,
            "slow request"
        );
    }

    fn snapshot(&self) -> Option<RouteSnapshot> {
        let histogram = self.histogram.snapshot();
        if histogram.count == 0 {
            return None;
        }
        let ms = histogram.millis(Unit::Micros);
        Some(RouteSnapshot {
            route: String::from(&*self.name),
            count: histogram.count,
            server_errors: self.server_errors.load(Relaxed),
            p50_ms: ms.p50,
            p95_ms: ms.p95,
            p99_ms: ms.p99,
            max_ms: ms.max,
            mean_ms: ms.mean,
        })
    }

    fn reset(&self) {
        self.histogram.reset();
        self.server_errors.store(0, Relaxed);
    }
}

/// What a request records when it completes: its route, method and start time.
pub(super) struct Recording {
    pub(super) entry: Arc<RouteEntry>,
    pub(super) method: Method,
    pub(super) start: Instant,
    pub(super) slow_threshold: Option<Duration>,
}

impl Recording {
    #[inline]
    pub(super) fn finish(&self, elapsed: Duration, status: StatusCode) {
        self.entry
            .record(elapsed, status, &self.method, self.slow_threshold);
    }
}

/// A point-in-time copy of [`TimingStats`], ready to serialize (for a metrics endpoint, a
/// log line or a test).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TimingSnapshot {
    /// Every route that recorded at least one request, sorted by route.
    pub routes: Vec<RouteSnapshot>,
}

impl TimingSnapshot {
    /// The snapshot of one route, if it recorded at least one request.
    pub fn route(&self, route: &str) -> Option<&RouteSnapshot> {
        self.routes.iter().find(|snapshot| snapshot.route == route)
    }
}

/// Latency statistics of one route.
///
/// Percentiles come from a log-linear histogram and are within about ±1.6 % of the
/// recorded latency (exact to the microsecond below 64 µs); `max_ms` and `mean_ms` are
/// exact to the microsecond.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RouteSnapshot {
    /// The route template, or [`OTHER_ROUTE`].
    pub route: String,
    /// Requests recorded.
    pub count: u64,
    /// Requests answered with a `5xx` status.
    pub server_errors: u64,
    /// Median latency, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile latency, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Highest latency, in milliseconds.
    pub max_ms: f64,
    /// Mean latency, in milliseconds.
    pub mean_ms: f64,
}

/// The multiply-rotate hash of rustc's `FxHasher`, with a final rotation that moves the
/// well-mixed high bits into the low bits the table indexes by. Route labels are route
/// templates chosen by the application, never request data, so a non-keyed hash is safe.
#[derive(Default, Clone, Copy)]
pub(super) struct LabelHasher(u64);

impl LabelHasher {
    const SEED: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for LabelHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}
