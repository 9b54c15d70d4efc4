//! One log line per interval for failures that can repeat on every request.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// How often a repeating failure is logged, unless its owner has a reason to differ.
#[cfg_attr(not(feature = "serve"), allow(dead_code))]
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one log line of a kind through per interval and counts the ones it held back, so a
/// store that is down costs one line every few seconds rather than one per request.
///
/// The caller gives the time, in milliseconds on whatever monotonic clock it decides on, so
/// a gate follows tokio's paused clock or an injected test clock as its owner does.
#[derive(Debug)]
pub(crate) struct LogGate {
    interval_ms: u64,
    /// When the next line may pass (ms + 1; 0 = no line yet).
    next: AtomicU64,
    held_back: AtomicU64,
}

impl LogGate {
    pub(crate) const fn new(interval: Duration) -> Self {
        let millis = interval.as_millis();
        Self {
            interval_ms: if millis > u64::MAX as u128 {
                u64::MAX
            } else {
                millis as u64
            },
            next: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged at `now_ms`.
    pub(crate) fn open(&self, now_ms: u64) -> Option<u64> {
        let next = self.next.load(Relaxed);
        let due = next == 0 || now_ms.saturating_add(1) >= next;
        let then = now_ms.saturating_add(self.interval_ms).saturating_add(1);
        if due
            && self
                .next
                .compare_exchange(next, then, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Relaxed));
        }
        self.held_back.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let gate = LogGate::new(Duration::from_secs(10));
        assert_eq!(gate.open(0), Some(0));
        assert_eq!(gate.open(1), None);
        assert_eq!(gate.open(9_999), None);
        assert_eq!(gate.open(10_000), Some(2));
        assert_eq!(gate.open(10_001), None);
        assert_eq!(gate.open(20_000), Some(1));
    }

    #[test]
    fn a_late_first_line_starts_the_interval() {
        let gate = LogGate::new(Duration::from_secs(1));
        assert_eq!(gate.open(5_000), Some(0));
        assert_eq!(gate.open(5_999), None);
        assert_eq!(gate.open(6_000), Some(1));
    }

    #[test]
    fn a_zero_interval_lets_every_line_through() {
        let gate = LogGate::new(Duration::ZERO);
        assert_eq!(gate.open(7), Some(0));
        assert_eq!(gate.open(7), Some(0));
    }
}
