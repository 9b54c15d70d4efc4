use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The time source of the rate limiter: microseconds from a fixed origin, never decreasing.
///
/// [`SystemClock`] (the default) reads [`Instant`], which is monotonic on every platform
/// Rust supports. [`ManualClock`] is moved by hand, for tests that need exact decisions.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Microseconds since the clock's origin.
    fn now_micros(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now_micros(&self) -> u64 {
        (**self).now_micros()
    }
}

/// The default [`Clock`]: [`Instant`]-based, monotonic, origin at its creation.
///
/// Clones share the origin, so they agree on the time.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_micros(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.origin);
        // Saturates after 584,000 years.
        elapsed
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(elapsed.subsec_micros()))
    }
}

/// A [`Clock`] that only moves when told to, for tests: clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use perfkit::rate_limit::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now_micros(), 1_500_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading 0. Starts at 0 µs.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock reading `start`.
    pub fn starting_at(start: Duration) -> Self {
        let clock = Self::new();
        clock.set(start);
        clock
    }

    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .micros
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Sets the clock to `to` from its origin; a time before the current one is ignored, so
    /// the clock never runs backwards.
    pub fn set(&self, to: Duration) {
        let to = u64::try_from(to.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_max(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_micros(&self) -> u64 {
        self.micros.load(Ordering::SeqCst)
    }
}
