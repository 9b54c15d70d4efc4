//! A fixed-size, lock-free, log-linear histogram of `u64` values, and the rule every
//! module's statistics follow.
//!
//! The histogram knows no unit: each user records in its own (timing and pools in
//! microseconds, the cache in nanoseconds) and says which when it turns a snapshot into
//! milliseconds with [`HistogramSnapshot::millis`].
//!
//! Values below [`SUB_BUCKETS`] each have their own bucket. Above that, every power of two
//! `[2^e, 2^(e+1))` is split into [`SUB_BUCKETS`] equal buckets of width `2^(e - 5)`, so a
//! bucket never spans more than 1/32 of its lower bound. A percentile is reported as the
//! midpoint of its bucket, which is within 1/64 (about ±1.6 %) of the recorded value.
//! Values of [`MAX_VALUE`] (`2^32 - 1`: about 71.6 minutes in microseconds, 4.3 s in
//! nanoseconds) and above share the last bucket.
//!
//! # Statistics types: one family
//!
//! Every module that reports statistics (timing, the cache, rate limiting, pools, and the
//! response cache, compression and pagination to come) follows one rule, so a metrics
//! exposition reads them all alike:
//!
//! - **A live handle and its `…Snapshot`.** The value that records is a handle named
//!   `<Thing>Stats` (atomic counters, cheap to clone or share, no lock on the recording
//!   path); `<Thing>Stats::snapshot()` returns a `<Thing>Snapshot`. When the handle is the
//!   module's main type (a `Cache`, a pool), its `stats()` returns the `<Thing>Snapshot`
//!   directly. A renamed type keeps a `#[deprecated]` alias under its old name.
//! - **A snapshot is plain data**: public fields, `#[non_exhaustive]`, and
//!   `Clone, Debug, Default, PartialEq, Serialize, Deserialize`, so it goes to JSON and
//!   back unchanged.
//! - **Counts** are `u64`, named after what they count in the plural (`hits`, `acquires`),
//!   or `count` in the snapshot of one timed thing (a route).
//! - **Latencies** are `f64` milliseconds in flat fields ending in `_ms`: `p50_ms`, `p95_ms`,
//!   `p99_ms`, `max_ms` and `mean_ms`, prefixed by what is timed when the snapshot reports
//!   more than that (`acquire_p50_ms`, `lookup_p50_ms`), each beside the count of the timed
//!   operations. They come from [`HistogramSnapshot::millis`], never converted by hand.
//! - **Ratios** are `f64` from 0.0 to 1.0 (`hit_rate`, `utilisation`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// log2 of the number of linear sub-buckets per power of two.
const SUB_BITS: u32 = 5;

/// Linear sub-buckets per power of two.
pub(crate) const SUB_BUCKETS: u64 = 1 << SUB_BITS;

/// Largest exponent with its own buckets: the histogram resolves values up to `2^32 - 1`.
const MAX_EXPONENT: u32 = 31;

/// Largest value with its own bucket; larger values are clamped into the last bucket.
pub(crate) const MAX_VALUE: u64 = (1 << (MAX_EXPONENT + 1)) - 1;

/// Number of buckets: the exact range below `SUB_BUCKETS`, then `SUB_BUCKETS` buckets for
/// every exponent from `SUB_BITS` to `MAX_EXPONENT`.
pub(crate) const BUCKETS: usize = ((MAX_EXPONENT - SUB_BITS + 2) << SUB_BITS) as usize;

/// The bucket index for `value`.
#[inline]
pub(crate) fn index_of(value: u64) -> usize {
    let value = value.min(MAX_VALUE);
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let exponent = u64::BITS - 1 - value.leading_zeros();
    let shift = exponent - SUB_BITS;
    // `value >> shift` lies in [SUB_BUCKETS, 2 * SUB_BUCKETS): the sub-bucket plus an offset
    // that, added to the exponent's block, lands every exponent after the previous one.
    (((shift as u64) << SUB_BITS) + (value >> shift)) as usize
}

/// The lowest value and the width of bucket `index`.
#[inline]
pub(crate) fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < 2 * SUB_BUCKETS {
        return (index, 1);
    }
    let shift = (index >> SUB_BITS) - 1;
    let mantissa = (index & (SUB_BUCKETS - 1)) | SUB_BUCKETS;
    (mantissa << shift, 1 << shift)
}

/// The value a percentile falling in bucket `index` reports: the bucket's midpoint, which is
/// exact for the buckets of width one.
#[inline]
fn representative(index: usize) -> u64 {
    let (low, width) = bucket_bounds(index);
    low + width / 2
}

/// Quantiles reported by [`Histogram::snapshot`], as `numerator / 100`.
const QUANTILES: [u64; 3] = [50, 95, 99];

/// Counters of one series of values (one route's latencies, one pool's acquires).
pub(crate) struct Histogram {
    counts: Box<[AtomicU64; BUCKETS]>,
    sum: AtomicU64,
    max: AtomicU64,
}

/// A point-in-time reading of a [`Histogram`], in the unit it was recorded in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HistogramSnapshot {
    pub(crate) count: u64,
    pub(crate) sum: u64,
    pub(crate) max: u64,
    pub(crate) p50: u64,
    pub(crate) p95: u64,
    pub(crate) p99: u64,
}

/// The unit a [`Histogram`] records in, to turn its readings into milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Microseconds: request and acquire latencies.
    #[cfg_attr(
        not(any(
            feature = "timing",
            feature = "postgres",
            feature = "sqlite",
            feature = "redis"
        )),
        allow(dead_code)
    )]
    Micros,
    /// Nanoseconds: cache lookups, which take well under a microsecond.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    Nanos,
}

impl Unit {
    fn per_milli(self) -> f64 {
        match self {
            Self::Micros => 1e3,
            Self::Nanos => 1e6,
        }
    }
}

/// The latencies of a [`HistogramSnapshot`] in milliseconds, as every statistics snapshot
/// reports them (see the [module docs](self)); all 0.0 when nothing was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Millis {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl HistogramSnapshot {
    /// The percentiles, maximum and mean in milliseconds, from values recorded in `unit`.
    pub(crate) fn millis(&self, unit: Unit) -> Millis {
        let per_milli = unit.per_milli();
        let ms = |value: u64| value as f64 / per_milli;
        Millis {
            p50: ms(self.p50),
            p95: ms(self.p95),
            p99: ms(self.p99),
            max: ms(self.max),
            mean: if self.count == 0 {
                0.0
            } else {
                self.sum as f64 / self.count as f64 / per_milli
            },
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            counts: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Records one value.
    #[inline]
    pub(crate) fn record(&self, value: u64) {
        self.counts[index_of(value)].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
        // Most values are not a new maximum: a plain load avoids a read-modify-write.
        if value > self.max.load(Relaxed) {
            self.max.fetch_max(value, Relaxed);
        }
    }

    /// Reads the counters and computes the quantiles.
    ///
    /// Concurrent recording may land between the reads of different counters; the count
    /// and the quantiles always come from the same copy of the buckets, and quantiles never
    /// exceed the reported maximum.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let counts: [u64; BUCKETS] = std::array::from_fn(|i| self.counts[i].load(Relaxed));
        let count: u64 = counts.iter().sum();
        let sum = self.sum.load(Relaxed);
        let mut max = self.max.load(Relaxed);
        if count == 0 {
            return HistogramSnapshot::default();
        }

        // Nearest-rank quantiles: the smallest value with at least ceil(q * count) values at
        // or below it.
        let ranks = QUANTILES.map(|q| (u128::from(count) * u128::from(q)).div_ceil(100) as u64);
        let mut found = [0u64; QUANTILES.len()];
        let mut next = 0;
        let mut seen = 0u64;
        let mut highest = 0;
        for (index, &n) in counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            seen += n;
            highest = index;
            while next < ranks.len() && seen >= ranks[next] {
                found[next] = representative(index);
                next += 1;
            }
        }
        // A value recorded after `max` was read: keep max consistent with the buckets.
        if max < bucket_bounds(highest).0 {
            max = bucket_bounds(highest).0;
        }
        // The highest rank is the maximum itself, which is known exactly.
        for (value, &rank) in found.iter_mut().zip(&ranks) {
            *value = if rank >= count {
                max
            } else {
                (*value).min(max)
            };
        }
        let [p50, p95, p99] = found;
        HistogramSnapshot {
            count,
            sum,
            max,
            p50,
            p95,
            p99,
        }
    }

    /// Sets every counter back to zero.
    #[cfg(feature = "timing")]
    pub(crate) fn reset(&self) {
        for count in self.counts.iter() {
            count.store(0, Relaxed);
        }
        self.sum.store(0, Relaxed);
        self.max.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_cover_range_in_order() {
        assert_eq!(BUCKETS, 896);
        assert_eq!(index_of(0), 0);
        assert_eq!(index_of(MAX_VALUE), BUCKETS - 1);
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
        // One hour fits below the clamp.
        const { assert!(3_600_000_000 < MAX_VALUE) };

        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, width) = bucket_bounds(index);
            assert_eq!(
                low,
                expected_low,
                "bucket {index} starts where {} ends",
                index.wrapping_sub(1)
            );
            assert_eq!(index_of(low), index);
            assert_eq!(index_of(low + width - 1), index);
            if low >= SUB_BUCKETS {
                // Relative width is at most 1/32 of the lower bound.
                assert!(width * SUB_BUCKETS <= low, "bucket {index}: {low}+{width}");
            } else {
                assert_eq!(width, 1);
            }
            expected_low = low + width;
        }
        assert_eq!(expected_low, MAX_VALUE + 1);
    }

    #[test]
    fn histogram_quantiles_within_precision() {
        let histogram = Histogram::new();
        assert_eq!(histogram.snapshot().count, 0);
        for value in 1..=10_000u64 {
            histogram.record(value * 997);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 10_000);
        assert_eq!(snapshot.max, 10_000 * 997);
        assert_eq!(snapshot.sum, 997 * 10_000 * 10_001 / 2);
        for (reported, rank) in [
            (snapshot.p50, 5_000),
            (snapshot.p95, 9_500),
            (snapshot.p99, 9_900),
        ] {
            let expected = rank * 997;
            let error = reported.abs_diff(expected) as f64 / expected as f64;
            assert!(error <= 1.0 / 64.0, "{reported} vs {expected}");
        }

        #[cfg(feature = "timing")]
        {
            histogram.reset();
            assert_eq!(histogram.snapshot(), Default::default());
        }
    }

    #[test]
    fn histogram_exact_for_small_values_and_clamps_large() {
        let histogram = Histogram::new();
        for value in [0, 1, 2, 3, 63] {
            histogram.record(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.p50, 2);
        assert_eq!(snapshot.p99, 63);

        let histogram = Histogram::new();
        let two_hours = 7_200_000_000;
        histogram.record(two_hours);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.max, two_hours);
        // Clamped into the last bucket, never reported above the exact maximum.
        assert!(snapshot.p99 <= two_hours);
        assert!(snapshot.p99 >= bucket_bounds(BUCKETS - 1).0);
    }

    #[test]
    fn histogram_readings_in_milliseconds_from_either_unit() {
        let histogram = Histogram::new();
        assert_eq!(histogram.snapshot().millis(Unit::Micros), Millis::default());
        for value in [1_000, 2_000, 3_000, 4_000] {
            histogram.record(value);
        }
        let snapshot = histogram.snapshot();
        let micros = snapshot.millis(Unit::Micros);
        assert_eq!(micros.max, 4.0);
        assert_eq!(micros.mean, 2.5);
        assert!((micros.p50 - 2.0).abs() <= 2.0 / 64.0);
        let nanos = snapshot.millis(Unit::Nanos);
        assert_eq!(nanos.max, 0.004);
        assert_eq!(nanos.mean, 0.0025);
    }
}
