//! Counters and the latency histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::histogram::{Histogram, Unit};

/// A point-in-time reading of a cache's counters and lookup latencies, from
/// [`Cache::stats`](super::Cache::stats); serializes for a metrics endpoint.
///
/// Every lookup counts exactly once, as a hit, a stale serve or a miss. Latencies come from
/// a fixed-size histogram over nanoseconds: percentiles are within about ±1.6 %, the
/// maximum and the mean are exact, and lookups above about 4.3 s count as 4.3 s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CacheSnapshot {
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
    /// Lookups timed: every read of the backend (not the computations).
    pub lookups: u64,
    /// Median lookup latency, in milliseconds.
    pub lookup_p50_ms: f64,
    /// 95th percentile lookup latency, in milliseconds.
    pub lookup_p95_ms: f64,
    /// 99th percentile lookup latency, in milliseconds.
    pub lookup_p99_ms: f64,
    /// Highest lookup latency, in milliseconds.
    pub lookup_max_ms: f64,
    /// Mean lookup latency, in milliseconds.
    pub lookup_mean_ms: f64,
}

/// The former name of [`CacheSnapshot`].
#[deprecated(
    since = "0.1.0",
    note = "renamed to `CacheSnapshot`; its latencies are the `lookup_*_ms` fields"
)]
pub type CacheStats = CacheSnapshot;

/// Latency percentiles in nanoseconds, as [`CacheSnapshot`] reported them before its
/// latencies became the `lookup_*_ms` fields; no longer produced.
#[deprecated(
    since = "0.1.0",
    note = "read the `lookup_*_ms` fields of `CacheSnapshot` instead"
)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    pub(crate) fn snapshot(&self) -> CacheSnapshot {
        let hits = self.hits.load(Relaxed);
        let stale_serves = self.stale_serves.load(Relaxed);
        let misses = self.misses.load(Relaxed);
        let lookups = hits + stale_serves + misses;
        let latency = self.latency.snapshot();
        let ms = latency.millis(Unit::Nanos);
        CacheSnapshot {
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
            lookups: latency.count,
            lookup_p50_ms: ms.p50,
            lookup_p95_ms: ms.p95,
            lookup_p99_ms: ms.p99,
            lookup_max_ms: ms.max,
            lookup_mean_ms: ms.mean,
        }
    }
}

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

    #[test]
    fn snapshot_reports_lookup_latency_in_milliseconds_and_round_trips() {
        let stats = Stats::default();
        for nanos in [1_000, 3_000] {
            stats.record_latency(nanos);
        }
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.lookups, 2);
        assert_eq!(snapshot.lookup_max_ms, 0.003);
        assert_eq!(snapshot.lookup_mean_ms, 0.002);
        let json = serde_json::to_value(snapshot).unwrap();
        assert_eq!(json["lookup_max_ms"], 0.003);
        let back: CacheSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snapshot);
    }
}
