//! A lifetime of its own for each connection of a [`RedisPool`](super::RedisPool), so that
//! connections opened together are not all closed and reopened together.

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Draws the lifetime of each new connection, between 90 % and 110 % of the configured one.
///
/// Each draw hashes a counter with a key chosen at random for the pool, so pools started
/// together in different processes spread their reconnects apart too.
#[derive(Debug)]
pub(super) struct Lifetimes {
    lifetime: Duration,
    key: RandomState,
    drawn: AtomicU64,
}

impl Lifetimes {
    /// Lifetimes around `lifetime`.
    pub(super) fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            key: RandomState::new(),
            drawn: AtomicU64::new(0),
        }
    }

    /// The longest lifetime any connection draws.
    pub(super) fn upper_bound(&self) -> Duration {
        crate::pool::jitter::upper_bound(self.lifetime)
    }

    /// The lifetime of the next connection.
    pub(super) fn draw(&self) -> Duration {
        let hash = self.key.hash_one(self.drawn.fetch_add(1, Relaxed));
        crate::pool::jitter::jittered(self.lifetime, hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_spread_over_the_ten_percent_window() {
        let lifetimes = Lifetimes::new(Duration::from_secs(1000));
        let drawn: Vec<Duration> = (0..1000).map(|_| lifetimes.draw()).collect();
        let min = *drawn.iter().min().unwrap();
        let max = *drawn.iter().max().unwrap();
        assert!(min >= Duration::from_secs(900), "{min:?}");
        assert!(max <= lifetimes.upper_bound(), "{max:?}");
        assert_eq!(lifetimes.upper_bound(), Duration::from_secs(1100));
        // 1000 draws over a 200 s window cover most of it instead of bunching up.
        assert!(max - min > Duration::from_secs(180), "{min:?}..{max:?}");
        let below = drawn
            .iter()
            .filter(|l| **l < Duration::from_secs(1000))
            .count();
        assert!(
            (400..600).contains(&below),
            "{below} of 1000 below the middle"
        );
        // Four 50 s bands each get a fair share.
        for band in 0..4 {
            let from = Duration::from_secs(900 + 50 * band);
            let to = from + Duration::from_secs(50);
            let count = drawn.iter().filter(|l| (from..to).contains(*l)).count();
            assert!((150..350).contains(&count), "band {band}: {count}");
        }
    }

    #[test]
    fn pools_draw_different_lifetimes() {
        let a = Lifetimes::new(Duration::from_secs(100));
        let b = Lifetimes::new(Duration::from_secs(100));
        let differ = (0..50).filter(|_| a.draw() != b.draw()).count();
        assert!(differ > 40, "only {differ} of 50 lifetimes differ");
    }

    #[test]
    fn huge_lifetimes_saturate_instead_of_panicking() {
        let lifetimes = Lifetimes::new(Duration::MAX);
        assert_eq!(lifetimes.upper_bound(), Duration::MAX);
        assert!(lifetimes.draw() > Duration::from_secs(1 << 60));
        let tiny = Lifetimes::new(Duration::from_nanos(1));
        assert!(tiny.draw() <= Duration::from_nanos(2));
    }
}
