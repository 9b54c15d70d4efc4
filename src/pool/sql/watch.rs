//! The pool's background watch: connections held too long, and utilisation that stays high.

use std::{
    panic::Location,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::{Duration, Instant},
};

use sqlx::Database;

use super::Shared;

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

// ===== Checkouts =====

/// Where and when each connection handed out by [`SqlPool::acquire`](super::SqlPool::acquire)
/// was acquired.
///
/// One slot per connection out, reused once it comes back: sqlx never lets more than
/// `max_connections` be out at once, so the table stays that small.
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

/// How often the watch of a pool with this leak threshold runs: every second, or four
/// times per threshold when that is shorter.
fn period(leak_threshold: Option<Duration>) -> Duration {
    leak_threshold
        .map(|threshold| (threshold / 4).clamp(MIN_PERIOD, PERIOD))
        .unwrap_or(PERIOD)
}

/// Spawns the watch of `shared` on the current tokio runtime.
///
/// The task holds only a weak reference and ends when the last [`SqlPool`](super::SqlPool)
/// handle is dropped or the pool is closed.
pub(super) fn spawn<DB: Database>(shared: &Arc<Shared<DB>>) {
    let weak: Weak<Shared<DB>> = Arc::downgrade(shared);
    let period = period(shared.leak_threshold);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once.
        ticks.tick().await;
        let mut utilisation = UtilisationWatch::default();
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            if shared.pool.is_closed() {
                return;
            }
            look(&shared, &mut utilisation, Instant::now());
        }
    });
}

/// One look at the pool: warn about pressure and about connections held too long.
fn look<DB: Database>(shared: &Shared<DB>, utilisation: &mut UtilisationWatch, now: Instant) {
    if let Some(high_for) = utilisation.observe(shared.utilisation(), now) {
        let stats = shared.sizes();
        tracing::warn!(
            url = %shared.url,
            in_use = stats.in_use,
            max = stats.max,
            utilisation = stats.utilisation,
            high_for_secs = high_for.as_secs(),
            "connection pool more than 80 % in use for {} s: requests will soon wait for \
             connections; raise DB_POOL_SIZE / DB_MAX_OVERFLOW, or look for slow queries and \
             connections held across slow work",
            high_for.as_secs(),
        );
    }
    if let (Some(checkouts), Some(threshold)) = (&shared.checkouts, shared.leak_threshold) {
        for overdue in checkouts.overdue(now, threshold) {
            shared.stats.leaked();
            tracing::warn!(
                url = %shared.url,
                acquired_at = %overdue.location,
                held_ms = u64::try_from(overdue.held.as_millis()).unwrap_or(u64::MAX),
                threshold_ms = u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX),
                "connection acquired at {} held for {:.1} s, longer than the leak threshold \
                 of {:.1} s: return it (drop it) as soon as the queries are done",
                overdue.location,
                overdue.held.as_secs_f64(),
                threshold.as_secs_f64(),
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
