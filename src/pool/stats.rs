use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::histogram::{Histogram, Unit};

/// A point-in-time view of one pool, for a metrics endpoint or an alert on pool pressure;
/// from `SqlPool::stats`, `RedisPool::stats` or `RedisHandle::stats`.
///
/// Sizes come from the pool itself; acquire counts and latencies are those perfkit measured
/// on the acquires made through it (`SqlPool::acquire`, `RedisPool::get`; for the
/// multiplexed `RedisHandle`, the commands sent through it).
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    /// Open connections, idle or in use.
    pub size: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
    /// Connections handed out and not yet returned.
    pub in_use: u32,
    /// The most connections the pool may open (pool size plus overflow).
    pub max: u32,
    /// Connections the pool keeps open even when idle (the pool size).
    pub min: u32,
    /// `in_use / max`, from 0.0 to 1.0.
    pub utilisation: f64,
    /// Connections acquired.
    pub acquires: u64,
    /// Acquires that gave up after the acquire timeout.
    pub acquire_timeouts: u64,
    /// Median time to acquire a connection, in milliseconds.
    pub acquire_p50_ms: f64,
    /// 95th percentile time to acquire a connection, in milliseconds.
    pub acquire_p95_ms: f64,
    /// 99th percentile time to acquire a connection, in milliseconds.
    pub acquire_p99_ms: f64,
    /// Longest time to acquire a connection, in milliseconds.
    pub acquire_max_ms: f64,
    /// Mean time to acquire a connection, in milliseconds.
    pub acquire_mean_ms: f64,
    /// Connections reported as held longer than the leak threshold.
    pub leaks_reported: u64,
}

/// The former name of [`PoolSnapshot`], which every pool's `stats()` returns.
#[deprecated(since = "0.1.0", note = "renamed to `PoolSnapshot`")]
pub type PoolStats = PoolSnapshot;

/// What a pool counts about its acquires; fixed size whatever the traffic.
#[derive(Default)]
pub(crate) struct AcquireStats {
    latency: Histogram,
    timeouts: AtomicU64,
    leaks: AtomicU64,
}

impl AcquireStats {
    /// Records a successful acquire that took `waited`.
    pub(crate) fn acquired(&self, waited: Duration) {
        self.latency
            .record(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records an acquire that timed out.
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    /// Records a connection reported as leaked.
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
    pub(crate) fn leaked(&self) {
        self.leaks.fetch_add(1, Relaxed);
    }

    /// Combines the counters with the pool's current sizes.
    pub(crate) fn snapshot(&self, size: u32, idle: u32, max: u32, min: u32) -> PoolSnapshot {
        let latency = self.latency.snapshot();
        let in_use = size.saturating_sub(idle);
        let ms = latency.millis(Unit::Micros);
        PoolSnapshot {
            size,
            idle,
            in_use,
            max,
            min,
            utilisation: if max == 0 {
                0.0
            } else {
                f64::from(in_use) / f64::from(max)
            },
            acquires: latency.count,
            acquire_timeouts: self.timeouts.load(Relaxed),
            acquire_p50_ms: ms.p50,
            acquire_p95_ms: ms.p95,
            acquire_p99_ms: ms.p99,
            acquire_max_ms: ms.max,
            acquire_mean_ms: ms.mean,
            leaks_reported: self.leaks.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_combines_sizes_and_counters() {
        let stats = AcquireStats::default();
        for ms in 1..=100 {
            stats.acquired(Duration::from_millis(ms));
        }
        stats.timed_out();
        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
        stats.leaked();
        let snapshot = stats.snapshot(8, 2, 10, 5);
        assert_eq!(snapshot.in_use, 6);
        assert!((snapshot.utilisation - 0.6).abs() < 1e-9);
        assert_eq!(snapshot.acquires, 100);
        assert_eq!(snapshot.acquire_timeouts, 1);
        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
        assert_eq!(snapshot.leaks_reported, 1);
        assert!((snapshot.acquire_p50_ms - 50.0).abs() <= 50.0 / 64.0);
        assert_eq!(snapshot.acquire_max_ms, 100.0);
        assert_eq!(snapshot.acquire_mean_ms, 50.5);
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["acquire_mean_ms"], 50.5);
        let back: PoolSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snapshot);
    }

    #[test]
    fn empty_pool_has_zero_utilisation() {
        let snapshot = AcquireStats::default().snapshot(0, 0, 0, 0);
        assert_eq!(snapshot.utilisation, 0.0);
        assert_eq!(snapshot.acquires, 0);
    }
}
