//! Counters, the latency histogram and the pace of failure logs.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use serde::Serialize;

use crate::histogram::Histogram;

/// A point-in-time reading of a cache's counters, from [`Cache::stats`](super::Cache::stats).
///
/// Every lookup counts exactly once, as a hit, a stale serve or a miss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered with a fresh value.
    pub hits: u64,
    /// Lookups answered with a value past its TTL: within its stale-while-revalidate
    /// window, or within its stale-if-error window because recomputing it failed.
    pub stale_serves: u64,
    /// Lookups that found no usable value.
    pub misses: u64,
    /// Backend failures, undecodable entries and failed background refreshes.
    pub errors: u64,
    /// Computations run by `get_or_compute` and `warm`, in the foreground or background.
    pub computations: u64,
    /// `(hits + stale_serves) / lookups`; 0 before the first lookup.
    pub hit_rate: f64,
    /// Latency of lookups (not of computations), in nanoseconds.
    pub get_latency: LatencyStats,
}

/// Latency percentiles from a fixed-size histogram, in nanoseconds, each within about
/// ±1.6 %; values above about 4.3 s are counted as 4.3 s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Number of values recorded.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 95th percentile.
    pub p95_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Largest value.
    pub max_ns: u64,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) hits: AtomicU64,
    pub(crate) stale_serves: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) computations: AtomicU64,
    latency: Histogram,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl Stats {
    #[inline]
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    #[inline]
    pub(crate) fn record_latency(&self, nanos: u64) {
        self.latency.record(nanos);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let hits = self.hits.load(Relaxed);
        let stale_serves = self.stale_serves.load(Relaxed);
        let misses = self.misses.load(Relaxed);
        let lookups = hits + stale_serves + misses;
        let latency = self.latency.snapshot();
        CacheStats {
            hits,
            stale_serves,
            misses,
            errors: self.errors.load(Relaxed),
            computations: self.computations.load(Relaxed),
            hit_rate: if lookups == 0 {
                0.0
            } else {
                (hits + stale_serves) as f64 / lookups as f64
            },
            get_latency: LatencyStats {
                count: latency.count,
                p50_ns: latency.p50,
                p95_ns: latency.p95,
                p99_ns: latency.p99,
                max_ns: latency.max,
            },
        }
    }
}

/// Interval between two log lines of one kind of cache failure.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_counts_stale_serves_as_answers() {
        let stats = Stats::default();
        Stats::count(&stats.hits);
        Stats::count(&stats.stale_serves);
        Stats::count(&stats.misses);
        Stats::count(&stats.misses);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.hit_rate, 0.5);
    }
}
