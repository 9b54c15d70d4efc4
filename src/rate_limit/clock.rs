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
/// [`QuantaClock`] (the [`MemoryStore`](super::MemoryStore)'s default) reads the CPU's
/// time-stamp counter through `quanta`, as governor does. [`SystemClock`] reads [`Instant`],
/// which is monotonic on every platform Rust supports. [`CoarseClock`] reads the same time from memory, refreshed by a thread, for
/// when the cost of reading the system clock matters more than sub-millisecond precision.
/// [`ManualClock`] is moved by hand, for tests that need exact decisions.
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

/// The [`MemoryStore`](super::MemoryStore)'s default [`Clock`]: the CPU's time-stamp counter
/// read through `quanta`, origin at its creation.
///
/// A read costs a few nanoseconds where [`Instant::now`] costs a system-clock read. Where the
/// time-stamp counter is missing or not invariant, `quanta` reads the operating system's
/// monotonic clock instead. Clones share the origin, so they agree on the time.
///
/// ```
/// use perfkit::rate_limit::{Clock, QuantaClock};
///
/// let clock = QuantaClock::new();
/// let earlier = clock.now_micros();
/// assert!(clock.now_micros() >= earlier);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct QuantaClock {
    origin: quanta::Instant,
}

impl QuantaClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: quanta::Instant::now(),
        }
    }
}

impl Default for QuantaClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for QuantaClock {
    #[inline]
    fn now_micros(&self) -> u64 {
        let elapsed = quanta::Instant::now().saturating_duration_since(self.origin);
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

/// Shortest [`CoarseClock`] resolution.
const MIN_COARSE_RESOLUTION: Duration = Duration::from_micros(100);
/// Longest [`CoarseClock`] resolution.
const MAX_COARSE_RESOLUTION: Duration = Duration::from_millis(100);

/// An opt-in [`Clock`] read from memory: a background thread stores the [`Instant`]-based time
/// every `resolution` (1 ms by default), and reading it costs one atomic load instead of a
/// system clock read (about 20 to 40 ns, depending on the machine).
///
/// The time it reads is monotonic, and behind the true time by up to the resolution plus
/// however late the thread is scheduled. A late clock only makes a rate limiter stricter:
/// budgets refill as of the time read, so no more requests are admitted than with
/// [`SystemClock`], and the figures of a decision (`reset`, `retry_after`) are late by as
/// much. Use it where decisions are many and quotas are counted in whole milliseconds or
/// more; keep the default where sub-millisecond spacing matters.
///
/// Each `CoarseClock::new` starts one thread, which stops once every clone is dropped:
/// create one and share its clones. If the thread cannot be started, the clock reads
/// [`Instant`] on every call instead, and says so once in the log.
///
/// ```
/// use std::time::Duration;
/// use perfkit::rate_limit::{Clock, CoarseClock, MemoryStore};
///
/// let clock = CoarseClock::with_resolution(Duration::from_millis(1));
/// let store = MemoryStore::builder().clock(clock.clone()).build();
/// let before = clock.now_micros();
/// std::thread::sleep(Duration::from_millis(5));
/// assert!(clock.now_micros() > before);
/// # drop(store);
/// ```
#[derive(Debug, Clone)]
pub struct CoarseClock {
    shared: Arc<CoarseShared>,
}

#[derive(Debug)]
struct CoarseShared {
    clock: SystemClock,
    micros: AtomicU64,
    resolution: Duration,
    /// Whether the thread runs; when it could not be started, every read is precise.
    ticking: bool,
}

impl CoarseClock {
    /// A clock refreshed every millisecond.
    pub fn new() -> Self {
        Self::with_resolution(Duration::from_millis(1))
    }

    /// A clock refreshed every `resolution`, clamped between 100 µs and 100 ms.
    pub fn with_resolution(resolution: Duration) -> Self {
        let resolution = resolution.clamp(MIN_COARSE_RESOLUTION, MAX_COARSE_RESOLUTION);
        let clock = SystemClock::new();
        let (tx, rx) = std::sync::mpsc::channel::<Arc<CoarseShared>>();
        let spawned = std::thread::Builder::new()
            .name("perfkit-coarse-clock".into())
            .spawn(move || {
                let Ok(shared) = rx.recv() else {
                    return;
                };
                let weak = Arc::downgrade(&shared);
                drop(shared);
                loop {
                    std::thread::sleep(resolution);
                    let Some(shared) = weak.upgrade() else {
                        return;
                    };
                    shared
                        .micros
                        .fetch_max(shared.clock.now_micros(), Ordering::Relaxed);
                }
            });
        if let Err(error) = &spawned {
            tracing::warn!(
                %error,
                "rate-limit CoarseClock could not start its thread; reading the system clock \
                 on every call instead"
            );
        }
        let shared = Arc::new(CoarseShared {
            micros: AtomicU64::new(clock.now_micros()),
            clock,
            resolution,
            ticking: spawned.is_ok(),
        });
        if spawned.is_ok() {
            let _ = tx.send(Arc::clone(&shared));
        }
        Self { shared }
    }

    /// How often the time is refreshed.
    pub fn resolution(&self) -> Duration {
        self.shared.resolution
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now_micros(&self) -> u64 {
        if self.shared.ticking {
            self.shared.micros.load(Ordering::Relaxed)
        } else {
            self.shared.clock.now_micros()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quanta_clock_keeps_time_with_the_system_clock() {
        // Building a quanta clock may calibrate it first: compare what each clock measures
        // over the same interval, read back to back, not their origins.
        let quanta = QuantaClock::new();
        let system = SystemClock::new();
        let (q0, s0) = (quanta.now_micros(), system.now_micros());
        std::thread::sleep(Duration::from_millis(20));
        let (q1, s1) = (quanta.now_micros(), system.now_micros());
        let (q, s) = (q1 - q0, s1 - s0);
        assert!(q >= 20_000, "{q} µs over a 20 ms sleep");
        assert!(
            q.abs_diff(s) < 5_000,
            "quanta measured {q} µs, the system clock {s} µs"
        );
        let copy = quanta;
        assert!(copy.now_micros() >= q1);
    }

    #[test]
    fn coarse_clock_moves_forward_and_its_thread_stops_with_the_last_clone() {
        let clock = CoarseClock::with_resolution(Duration::ZERO);
        assert_eq!(clock.resolution(), MIN_COARSE_RESOLUTION);
        let copy = clock.clone();
        let first = clock.now_micros();
        let deadline = Instant::now() + Duration::from_secs(5);
        while copy.now_micros() <= first {
            assert!(Instant::now() < deadline, "the coarse clock did not move");
            std::thread::sleep(Duration::from_millis(1));
        }
        let precise = SystemClock {
            origin: clock.shared.clock.origin,
        };
        assert!(clock.now_micros() <= precise.now_micros());
        let weak = Arc::downgrade(&clock.shared);
        drop((clock, copy));
        // The thread holds the state only while it refreshes it.
        while weak.strong_count() > 0 {
            assert!(Instant::now() < deadline, "the thread kept the clock alive");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
