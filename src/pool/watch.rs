//! The background watch every pool runs: connections held too long, and utilisation that
//! stays high.
//!
//! A pool hands its shared state to [`spawn`] through the [`Watched`] trait; the watch keeps
//! only a weak reference and ends with the pool.

use std::{
    panic::Location,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, Instant},
};

use super::{AcquireStats, PoolSnapshot};

/// Utilisation above which the pool counts as under pressure.
const HIGH_UTILISATION: f64 = 0.8;
/// How long utilisation must stay high before the watch warns.
const SUSTAINED: Duration = Duration::from_secs(10);
/// The shortest time between two utilisation warnings of one pool.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How often the watch looks at the pool, at most.
const PERIOD: Duration = Duration::from_secs(1);
/// How often the watch looks at the pool, at least (for very small leak thresholds).
const MIN_PERIOD: Duration = Duration::from_millis(50);

/// Records a successful acquire that started at `started`: its wait in `stats` and, when
/// the pool watches for leaks, where and when the connection went out.
pub(super) fn checked_out(
    stats: &AcquireStats,
    checkouts: Option<&Arc<Checkouts>>,
    location: &'static Location<'static>,
    started: Instant,
) -> Option<CheckoutGuard> {
    let now = Instant::now();
    stats.acquired(now - started);
    checkouts.map(|checkouts| checkouts.insert(location, now))
}

// ===== Checkouts =====

/// Where and when each connection handed out by a pool's acquire (`SqlPool::acquire`,
/// `RedisPool::get`) was acquired.
///
/// One slot per connection out, reused once it comes back: neither sqlx nor bb8 lets more
/// than the pool's maximum be out at once, so the table stays that small.
#[derive(Debug)]
pub(super) struct Checkouts {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Option<Checkout>>,
    free: Vec<usize>,
}

#[derive(Clone, Copy, Debug)]
struct Checkout {
    since: Instant,
    location: &'static Location<'static>,
    reported: bool,
}

/// A connection held longer than the leak threshold, reported once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Overdue {
    pub(super) location: &'static Location<'static>,
    pub(super) held: Duration,
}

impl Checkouts {
    /// A table sized for `max_connections` connections out at once.
    pub(super) fn new(max_connections: u32) -> Self {
        let capacity = max_connections as usize;
        Self {
            slots: Mutex::new(Slots {
                entries: Vec::with_capacity(capacity),
                free: Vec::with_capacity(capacity),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves the table consistent: every method updates
        // it in one step.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a connection acquired at `location`, now; the guard removes it on drop.
    pub(super) fn insert(
        self: &Arc<Self>,
        location: &'static Location<'static>,
        since: Instant,
    ) -> CheckoutGuard {
        let checkout = Checkout {
            since,
            location,
            reported: false,
        };
        let mut slots = self.lock();
        let slot = match slots.free.pop() {
            Some(slot) => {
                slots.entries[slot] = Some(checkout);
                slot
            }
            None => {
                slots.entries.push(Some(checkout));
                slots.entries.len() - 1
            }
        };
        drop(slots);
        CheckoutGuard {
            table: Arc::clone(self),
            slot,
        }
    }

    fn remove(&self, slot: usize) {
        let mut slots = self.lock();
        if let Some(entry) = slots.entries.get_mut(slot)
            && entry.take().is_some()
        {
            slots.free.push(slot);
        }
    }

    /// Connections held longer than `threshold` at `now` and not reported yet; marks them
    /// reported.
    pub(super) fn overdue(&self, now: Instant, threshold: Duration) -> Vec<Overdue> {
        let mut slots = self.lock();
        slots
            .entries
            .iter_mut()
            .flatten()
            .filter_map(|checkout| {
                let held = now.saturating_duration_since(checkout.since);
                if checkout.reported || held <= threshold {
                    return None;
                }
                checkout.reported = true;
                Some(Overdue {
                    location: checkout.location,
                    held,
                })
            })
            .collect()
    }

    /// How many connections are out.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.iter().flatten().count()
    }
}

/// Keeps a connection in the [`Checkouts`] table while it is out.
#[derive(Debug)]
pub(super) struct CheckoutGuard {
    table: Arc<Checkouts>,
    slot: usize,
}

impl Drop for CheckoutGuard {
    fn drop(&mut self) {
        self.table.remove(self.slot);
    }
}

// ===== Utilisation =====

/// Decides when sustained high utilisation deserves a warning.
#[derive(Debug, Default)]
pub(super) struct UtilisationWatch {
    high_since: Option<Instant>,
    last_warning: Option<Instant>,
}

impl UtilisationWatch {
    /// Takes one sample; returns how long utilisation has been high when it is time to warn:
    /// above 80 % at every sample for 10 seconds, and no warning in the last minute.
    pub(super) fn observe(&mut self, utilisation: f64, now: Instant) -> Option<Duration> {
        if utilisation <= HIGH_UTILISATION {
            self.high_since = None;
            return None;
        }
        let since = *self.high_since.get_or_insert(now);
        let high_for = now.saturating_duration_since(since);
        if high_for < SUSTAINED {
            return None;
        }
        if self
            .last_warning
            .is_some_and(|last| now.saturating_duration_since(last) < WARN_EVERY)
        {
            return None;
        }
        self.last_warning = Some(now);
        Some(high_for)
    }
}

// ===== The task =====

/// What the watch needs from a pool: its sizes, its checkouts and where to count leaks.
pub(super) trait Watched: Send + Sync + 'static {
    /// What the pool's connections run, for log messages: `queries`, `commands`.
    const WORK: &'static str;
    /// The settings that size the pool, for log messages.
    const SIZE_SETTINGS: &'static str;

    /// The URL the pool connects to, password removed.
    fn url(&self) -> &str;

    /// Connections in use over the most the pool may open, cheaply (no counters read).
    fn utilisation(&self) -> f64;

    /// The current sizes with the acquire counters.
    fn sizes(&self) -> PoolSnapshot;

    /// The pool's acquire counters, where leaks are counted.
    fn stats(&self) -> &AcquireStats;

    /// The connections out, and how long one may be held before it is reported; `None` when
    /// leak detection is off.
    fn leak_watch(&self) -> Option<(&Checkouts, Duration)>;

    /// Whether the pool was closed, which ends the watch.
    fn is_closed(&self) -> bool;
}

/// How often the watch of a pool with this leak threshold runs: every second, or four
/// times per threshold when that is shorter.
fn period(leak_threshold: Option<Duration>) -> Duration {
    leak_threshold
        .map(|threshold| (threshold / 4).clamp(MIN_PERIOD, PERIOD))
        .unwrap_or(PERIOD)
}

/// Spawns the watch of `pool` on the current tokio runtime.
///
/// The task holds only a weak reference and ends when the last handle of the pool is
/// dropped or the pool is closed.
pub(super) fn spawn<W: Watched>(pool: &Arc<W>) {
    let weak: Weak<W> = Arc::downgrade(pool);
    let period = period(pool.leak_watch().map(|(_, threshold)| threshold));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once.
        ticks.tick().await;
        let mut utilisation = UtilisationWatch::default();
        loop {
            ticks.tick().await;
            let Some(pool) = weak.upgrade() else {
                return;
            };
            if pool.is_closed() {
                return;
            }
            look(&*pool, &mut utilisation, Instant::now());
        }
    });
}

/// One look at the pool: warn about pressure and about connections held too long.
fn look<W: Watched>(pool: &W, utilisation: &mut UtilisationWatch, now: Instant) {
    if let Some(high_for) = utilisation.observe(pool.utilisation(), now) {
        let stats = pool.sizes();
        tracing::warn!(
            url = %pool.url(),
            in_use = stats.in_use,
            max = stats.max,
            utilisation = stats.utilisation,
            high_for_secs = high_for.as_secs(),
            "connection pool more than 80 % in use for {} s: requests will soon wait for \
             connections; raise {}, or look for slow {} and connections held across slow work",
            high_for.as_secs(),
            W::SIZE_SETTINGS,
            W::WORK,
        );
    }
    if let Some((checkouts, threshold)) = pool.leak_watch() {
        for overdue in checkouts.overdue(now, threshold) {
            pool.stats().leaked();
            tracing::warn!(
                url = %pool.url(),
                acquired_at = %overdue.location,
                held_ms = u64::try_from(overdue.held.as_millis()).unwrap_or(u64::MAX),
                threshold_ms = u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX),
                "connection acquired at {} held for {:.1} s, longer than the leak threshold \
                 of {:.1} s: return it (drop it) as soon as the {} are done",
                overdue.location,
                overdue.held.as_secs_f64(),
                threshold.as_secs_f64(),
                W::WORK,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_bounded() {
        let table = Arc::new(Checkouts::new(2));
        let here = Location::caller();
        let now = Instant::now();
        for _ in 0..100 {
            let a = table.insert(here, now);
            let b = table.insert(here, now);
            assert_eq!(table.len(), 2);
            drop(a);
            drop(b);
        }
        assert_eq!(table.len(), 0);
        assert_eq!(table.lock().entries.len(), 2, "slots must be reused");
    }

    #[test]
    fn a_connection_held_too_long_is_reported_once() {
        let table = Arc::new(Checkouts::new(4));
        let here = Location::caller();
        let start = Instant::now();
        let _held = table.insert(here, start);
        let returned = table.insert(here, start);
        drop(returned);
        let threshold = Duration::from_secs(60);

        assert!(
            table
                .overdue(start + Duration::from_secs(59), threshold)
                .is_empty()
        );
        let overdue = table.overdue(start + Duration::from_secs(61), threshold);
        assert_eq!(
            overdue,
            [Overdue {
                location: here,
                held: Duration::from_secs(61)
            }]
        );
        assert!(
            table
                .overdue(start + Duration::from_secs(600), threshold)
                .is_empty()
        );
    }

    #[test]
    fn utilisation_warns_after_ten_high_seconds_then_once_a_minute() {
        let mut watch = UtilisationWatch::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        for s in 0..10 {
            assert_eq!(watch.observe(0.9, at(s)), None, "second {s}");
        }
        assert_eq!(watch.observe(0.95, at(10)), Some(Duration::from_secs(10)));
        for s in 11..70 {
            assert_eq!(watch.observe(1.0, at(s)), None, "second {s}");
        }
        assert_eq!(watch.observe(1.0, at(70)), Some(Duration::from_secs(70)));
    }

    #[test]
    fn a_dip_restarts_the_count() {
        let mut watch = UtilisationWatch::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        for s in 0..9 {
            assert_eq!(watch.observe(0.9, at(s)), None);
        }
        assert_eq!(watch.observe(0.8, at(9)), None, "80 % is not above 80 %");
        for s in 10..19 {
            assert_eq!(watch.observe(0.9, at(s)), None, "second {s}");
        }
        assert!(watch.observe(0.9, at(20)).is_some());
    }

    /// A pool of 4 connections, 3 of them out.
    struct Fake {
        stats: AcquireStats,
        checkouts: Arc<Checkouts>,
    }

    impl Watched for Fake {
        const WORK: &'static str = "commands";
        const SIZE_SETTINGS: &'static str = "max_connections";

        fn url(&self) -> &str {
            "redis://127.0.0.1:6379"
        }

        fn utilisation(&self) -> f64 {
            0.75
        }

        fn sizes(&self) -> PoolSnapshot {
            self.stats.snapshot(4, 1, 4, 0)
        }

        fn stats(&self) -> &AcquireStats {
            &self.stats
        }

        fn leak_watch(&self) -> Option<(&Checkouts, Duration)> {
            Some((&self.checkouts, Duration::from_secs(1)))
        }

        fn is_closed(&self) -> bool {
            false
        }
    }

    #[test]
    fn each_overdue_connection_is_counted_once_whatever_the_pool() {
        let pool = Fake {
            stats: AcquireStats::default(),
            checkouts: Arc::new(Checkouts::new(4)),
        };
        let start = Instant::now();
        let _a = pool.checkouts.insert(Location::caller(), start);
        let _b = pool.checkouts.insert(Location::caller(), start);
        let mut utilisation = UtilisationWatch::default();
        look(&pool, &mut utilisation, start + Duration::from_millis(500));
        assert_eq!(pool.sizes().leaks_reported, 0);
        look(&pool, &mut utilisation, start + Duration::from_secs(2));
        assert_eq!(pool.sizes().leaks_reported, 2);
        look(&pool, &mut utilisation, start + Duration::from_secs(3));
        assert_eq!(pool.sizes().leaks_reported, 2);
    }

    #[test]
    fn small_leak_thresholds_shorten_the_period() {
        assert_eq!(period(None), Duration::from_secs(1));
        assert_eq!(
            period(Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
        assert_eq!(
            period(Some(Duration::from_millis(400))),
            Duration::from_millis(100)
        );
        assert_eq!(
            period(Some(Duration::from_millis(10))),
            Duration::from_millis(50)
        );
    }
}
