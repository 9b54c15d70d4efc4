//! The ±10 % spread of connection lifetimes shared by every pool, so that connections
//! opened together are not all closed and reopened together.

use std::time::Duration;

/// How far a connection's own lifetime may stray from the configured one.
const JITTER: f64 = 0.10;

/// The longest lifetime any connection gets: 110 % of `lifetime`.
pub(crate) fn upper_bound(lifetime: Duration) -> Duration {
    scale(lifetime, 1.0 + JITTER)
}

/// The lifetime of a connection whose identity hashes to `hash`: between 90 % and 110 % of
/// `lifetime`, spread evenly over hashes.
pub(crate) fn jittered(lifetime: Duration, hash: u64) -> Duration {
    // The top 53 bits as a fraction in [0, 1).
    let unit = (hash >> 11) as f64 / (1_u64 << 53) as f64;
    scale(lifetime, 1.0 - JITTER + 2.0 * JITTER * unit)
}

/// `duration × factor`, saturating at `Duration::MAX` instead of panicking like `mul_f64`.
fn scale(duration: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(duration.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_stay_within_ten_percent() {
        let lifetime = Duration::from_secs(100);
        assert_eq!(jittered(lifetime, 0), Duration::from_secs(90));
        assert!(jittered(lifetime, u64::MAX) <= upper_bound(lifetime));
        assert!(jittered(lifetime, u64::MAX) > Duration::from_secs(109));
        assert_eq!(upper_bound(lifetime), Duration::from_secs(110));
    }

    #[test]
    fn huge_lifetimes_saturate_instead_of_panicking() {
        assert_eq!(upper_bound(Duration::MAX), Duration::MAX);
        assert_eq!(upper_bound(Duration::from_secs(u64::MAX)), Duration::MAX);
        let _ = jittered(Duration::MAX, u64::MAX);
        let _ = jittered(Duration::from_secs(u64::MAX), 0);
    }
}
