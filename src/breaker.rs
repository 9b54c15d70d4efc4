//! Leaving a failing server alone for a while, with one caller probing it meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};

/// The state shared by every caller of one server: answering, or failed and left alone
/// until a retry time, when exactly one caller tries it again while the others keep
/// skipping it. The first answer puts everyone back on the server.
///
/// Times are in whatever unit and on whatever monotonic clock the owner decides on (the
/// rate limiter's microseconds, the cache's milliseconds), so a breaker follows tokio's
/// paused clock or an injected test clock as its owner does.
#[derive(Debug)]
pub(crate) struct Breaker {
    retry_interval: u64,
    /// 0 while the server answers; else when it may be tried again.
    retry_at: AtomicU64,
}

impl Breaker {
    /// A closed breaker that, once failed, leaves the server alone for `retry_interval`.
    pub(crate) const fn new(retry_interval: u64) -> Self {
        Self {
            retry_interval,
            retry_at: AtomicU64::new(0),
        }
    }

    /// Whether a call at `now` should skip the server; claims the retry when it is due, so
    /// only the caller that gets `false` past the retry time probes the server.
    #[inline]
    pub(crate) fn skip(&self, now: u64) -> bool {
        let retry_at = self.retry_at.load(Ordering::Acquire);
        if retry_at == 0 {
            return false;
        }
        if now < retry_at {
            return true;
        }
        // Only the caller that moves the retry time on tries the server.
        self.retry_at
            .compare_exchange(
                retry_at,
                self.next_retry(now),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
    }

    /// Whether the server failed the last time it was tried.
    pub(crate) fn is_open(&self) -> bool {
        self.retry_at.load(Ordering::Acquire) != 0
    }

    /// The server answered; returns whether it had been failing, for a recovery log line.
    #[inline]
    pub(crate) fn succeeded(&self) -> bool {
        if self.retry_at.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.retry_at.swap(0, Ordering::AcqRel) != 0
    }

    /// The server failed at `now`: callers skip it for the retry interval.
    pub(crate) fn failed(&self, now: u64) {
        self.retry_at.store(self.next_retry(now), Ordering::Release);
    }

    fn next_retry(&self, now: u64) -> u64 {
        now.saturating_add(self.retry_interval).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_server_is_skipped_then_probed_by_one_caller() {
        let breaker = Breaker::new(100);
        assert!(!breaker.skip(5));
        assert!(!breaker.is_open());

        breaker.failed(1_000);
        assert!(breaker.is_open());
        assert!(breaker.skip(1_000));
        assert!(breaker.skip(1_099));
        assert!(
            !breaker.skip(1_100),
            "the first caller past the retry time probes"
        );
        assert!(
            breaker.skip(1_100),
            "the others keep skipping while it does"
        );
        assert!(breaker.skip(1_199));

        assert!(
            breaker.succeeded(),
            "the probe answered: it had been failing"
        );
        assert!(!breaker.succeeded(), "and reports so once");
        assert!(!breaker.skip(1_150));
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_failed_probe_leaves_the_server_alone_for_another_interval() {
        let breaker = Breaker::new(100);
        breaker.failed(0);
        assert!(!breaker.skip(100));
        breaker.failed(130);
        assert!(breaker.skip(229));
        assert!(!breaker.skip(230));
    }

    #[test]
    fn time_zero_and_huge_intervals_still_open_the_breaker() {
        let breaker = Breaker::new(0);
        breaker.failed(0);
        assert!(breaker.is_open());
        let forever = Breaker::new(u64::MAX);
        forever.failed(10);
        assert!(forever.skip(u64::MAX - 1));
    }
}
