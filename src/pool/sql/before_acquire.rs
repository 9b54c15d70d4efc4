//! What runs on an idle connection before sqlx hands it out: the jittered recycle and the
//! idle-threshold pre-ping.

use std::{
    future::Future,
    hash::{BuildHasher, RandomState},
    pin::Pin,
    time::{Duration, Instant},
};

use sqlx::{Connection, pool::PoolConnectionMetadata};

/// The future sqlx's `before_acquire` hook returns.
pub(super) type CheckFuture<'c> =
    Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + 'c>>;

/// The per-acquire check, decided from the connection's age and idle time.
#[derive(Clone, Debug)]
pub(super) struct AcquireCheck {
    /// Ping connections idle for longer than this; `None`: never.
    pub(super) ping_after: Option<Duration>,
    /// Retire connections past their jittered lifetime; `None`: never.
    pub(super) recycle: Option<Recycle>,
}

impl AcquireCheck {
    /// Whether there is anything to check; without, sqlx needs no hook.
    pub(super) fn is_needed(&self) -> bool {
        self.ping_after.is_some() || self.recycle.is_some()
    }

    /// The `before_acquire` hook: `Ok(false)` makes sqlx close the connection and go on with
    /// another idle one, or open a new one.
    pub(super) fn run<'c, C>(
        &self,
        conn: &'c mut C,
        meta: PoolConnectionMetadata,
    ) -> CheckFuture<'c>
    where
        C: Connection,
    {
        // Decided before the future is built, so that it borrows nothing from `self`.
        if let Some(recycle) = &self.recycle
            && recycle.is_due(meta.age, Instant::now())
        {
            tracing::debug!(
                age_secs = meta.age.as_secs_f64(),
                "retiring a pooled connection past its recycle age"
            );
            return Box::pin(std::future::ready(Ok(false)));
        }
        let ping = self.ping_after.is_some_and(|after| meta.idle_for >= after);
        if !ping {
            return Box::pin(std::future::ready(Ok(true)));
        }
        Box::pin(async move {
            match conn.ping().await {
                Ok(()) => Ok(true),
                Err(error) => {
                    // The server or something in between hung up; the caller gets another
                    // connection, so this is worth a line but not a warning.
                    tracing::info!(
                        %error,
                        idle_secs = meta.idle_for.as_secs_f64(),
                        "discarding a pooled connection that failed its pre-ping"
                    );
                    Ok(false)
                }
            }
        })
    }
}

/// Recycling with a lifetime of its own for each connection, between 90 % and 110 % of the
/// configured age.
///
/// sqlx gives the hook only the connection's age, so a connection is identified by its
/// creation instant (now minus age) to the millisecond, relative to the pool's creation,
/// hashed with a key drawn at random for each pool: the same connection gets the same
/// lifetime on every acquire, and pools started in the same millisecond in different
/// processes still spread their reconnects apart. (The two clock readings behind "now minus
/// age" are microseconds apart; when they straddle a millisecond boundary, the connection
/// draws a second lifetime in the same 90-110 % window, which does not matter.)
#[derive(Clone, Debug)]
pub(super) struct Recycle {
    lifetime: Duration,
    epoch: Instant,
    key: RandomState,
}

impl Recycle {
    /// Recycling around `lifetime` for a pool created now.
    pub(super) fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            epoch: Instant::now(),
            key: RandomState::new(),
        }
    }

    /// The longest lifetime any connection draws, which sqlx's `max_lifetime` enforces.
    pub(super) fn upper_bound(&self) -> Duration {
        crate::pool::jitter::upper_bound(self.lifetime)
    }

    /// The lifetime of the connection created at `created`.
    fn lifetime_of(&self, created: Instant) -> Duration {
        let millis = created.saturating_duration_since(self.epoch).as_millis();
        crate::pool::jitter::jittered(self.lifetime, self.key.hash_one(millis))
    }

    /// Whether a connection of age `age` has outlived its own lifetime at `now`.
    fn is_due(&self, age: Duration, now: Instant) -> bool {
        let created = now.checked_sub(age).unwrap_or(self.epoch);
        age >= self.lifetime_of(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_spread_within_ten_percent() {
        let recycle = Recycle::new(Duration::from_secs(1000));
        let lifetimes: Vec<Duration> = (0..1000)
            .map(|ms| recycle.lifetime_of(recycle.epoch + Duration::from_millis(ms)))
            .collect();
        let min = *lifetimes.iter().min().unwrap();
        let max = *lifetimes.iter().max().unwrap();
        assert!(min >= Duration::from_secs(900), "{min:?}");
        assert!(max <= Duration::from_secs(1100), "{max:?}");
        assert!(max <= recycle.upper_bound());
        // 1000 draws over a 200 s window: they must cover most of it, not bunch up.
        assert!(max - min > Duration::from_secs(150), "{min:?}..{max:?}");
        let below = lifetimes
            .iter()
            .filter(|l| **l < Duration::from_secs(1000))
            .count();
        assert!(
            (350..650).contains(&below),
            "{below} of 1000 below the middle"
        );
    }

    #[test]
    fn a_connection_keeps_its_lifetime() {
        let recycle = Recycle::new(Duration::from_secs(100));
        let created = recycle.epoch + Duration::from_millis(1234);
        let first = recycle.lifetime_of(created);
        for extra_micros in [0, 100, 400] {
            assert_eq!(
                recycle.lifetime_of(created + Duration::from_micros(extra_micros)),
                first
            );
        }
        let now = created + first - Duration::from_millis(5);
        assert!(!recycle.is_due(now - created, now));
        let later = created + first + Duration::from_millis(5);
        assert!(recycle.is_due(later - created, later));
    }

    #[test]
    fn pools_draw_different_lifetimes() {
        let a = Recycle::new(Duration::from_secs(100));
        let b = Recycle {
            epoch: a.epoch,
            ..Recycle::new(Duration::from_secs(100))
        };
        let differ = (0..50)
            .filter(|ms| {
                let created = a.epoch + Duration::from_millis(*ms);
                a.lifetime_of(created) != b.lifetime_of(created)
            })
            .count();
        assert!(differ > 40, "only {differ} of 50 lifetimes differ");
    }

    #[test]
    fn connections_past_the_upper_bound_are_always_due() {
        let recycle = Recycle::new(Duration::from_millis(500));
        let now = Instant::now() + Duration::from_secs(5);
        for age_ms in [551, 600, 4000] {
            assert!(recycle.is_due(Duration::from_millis(age_ms), now));
        }
        for age_ms in [0, 100, 449] {
            assert!(!recycle.is_due(Duration::from_millis(age_ms), now));
        }
    }
}
