use super::{policy::MAX_QUOTAS, quota::Quota};

/// How a [`Policy`](super::Policy)'s quotas are spent. Every store decides each algorithm the
/// same way, to the microsecond.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// The generic cell rate algorithm (the default): one timestamp per key and quota. A
    /// quota of `count` per `period` with a burst `b` admits `b` requests at once, then one
    /// every `period / count`; nothing resets all at once, so there is no edge of a window
    /// at which twice the quota gets through.
    #[default]
    Gcra,
    /// The sliding-window counter: the count of the current fixed window plus the previous
    /// window's count weighted by how much of it the sliding window still covers. Two
    /// counters per key and quota; admits `count` per any window of `period`, approximately.
    SlidingWindow,
    /// Fixed windows aligned on multiples of the period: `count` requests per window, the
    /// budget restored all at once when the window ends.
    FixedWindow,
}

impl Algorithm {
    /// A one-byte tag naming the algorithm in store keys.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::Gcra => b'g',
            Self::SlidingWindow => b's',
            Self::FixedWindow => b'f',
        }
    }
}

/// One quota's state for one key, in 16 bytes, whatever the algorithm:
///
/// - GCRA: `a` is the theoretical arrival time in µs (0 when the key is fresh);
/// - fixed window: `a` is the window's index plus one (0 when fresh), `b` its count;
/// - sliding window: `a` as for the fixed window, `b` the current window's count in its low
///   32 bits and the previous window's in its high 32 bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) a: u64,
    pub(crate) b: u64,
}

/// One quota's verdict.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    allowed: bool,
    remaining: u64,
    reset: u64,
    retry: u64,
    next: Slot,
}

/// What [`decide`] found, before it becomes a [`Decision`](super::Decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) allowed: bool,
    /// Index of the binding quota.
    pub(crate) binding: usize,
    pub(crate) remaining: u64,
    /// µs until the binding quota is whole again.
    pub(crate) reset: u64,
    /// µs until the request would be admitted; 0 when admitted.
    pub(crate) retry: u64,
    /// Whether `slots` changed, so the key's state must be written back.
    pub(crate) changed: bool,
}

/// Decides a request of weight `cost` at `now` (µs) against every quota, updating `slots`
/// only when every quota admits it and `cost` is not 0.
///
/// The binding quota is, when refused, the refusing quota with the longest wait; when
/// admitted, the quota with the fewest requests left (the first of equals).
pub(crate) fn decide(
    algorithm: Algorithm,
    quotas: &[Quota],
    slots: &mut [Slot],
    now: u64,
    cost: u32,
) -> Outcome {
    let mut allowed = true;
    let mut binding = 0;
    let mut verdicts = [None; MAX_QUOTAS];
    for (i, (quota, slot)) in quotas.iter().zip(slots.iter()).enumerate() {
        let verdict = match algorithm {
            Algorithm::Gcra => gcra(quota, *slot, now, cost),
            Algorithm::FixedWindow => fixed(quota, *slot, now, cost),
            Algorithm::SlidingWindow => sliding(quota, *slot, now, cost),
        };
        verdicts[i] = Some(verdict);
        if i == 0 {
            allowed = verdict.allowed;
            continue;
        }
        let Some(current) = verdicts[binding] else {
            continue;
        };
        match (allowed, verdict.allowed) {
            (true, false) => {
                allowed = false;
                binding = i;
            }
            (true, true) if verdict.remaining < current.remaining => binding = i,
            (false, false) if verdict.retry > current.retry => binding = i,
            _ => {}
        }
    }
    let changed = allowed && cost > 0;
    if changed {
        for (slot, verdict) in slots.iter_mut().zip(verdicts.iter().flatten()) {
            *slot = verdict.next;
        }
    }
    let verdict = verdicts[binding].expect("a policy has at least one quota");
    Outcome {
        allowed,
        binding,
        remaining: verdict.remaining,
        reset: verdict.reset,
        retry: if allowed { 0 } else { verdict.retry.max(1) },
        changed,
    }
}

/// A policy of one GCRA quota, with its figures computed once: the case most policies are,
/// and the one [`gcra_single`] decides without the general loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SingleGcra {
    /// The emission interval (µs).
    pub(crate) interval: u64,
    /// `burst × interval` (µs).
    pub(crate) tolerance: u64,
    pub(crate) burst: u32,
}

impl SingleGcra {
    pub(crate) fn new(quota: &Quota) -> Self {
        let interval = quota.interval_micros();
        Self {
            interval,
            tolerance: u64::from(quota.burst()) * interval,
            burst: quota.burst(),
        }
    }

    /// How many whole intervals `n` µs hold: the requests a quota has left.
    ///
    /// A plain division: dividing by a precomputed reciprocal instead saved no instruction
    /// per decision and under 2 ns on the benches' machine (BENCHMARKS.md, "Fast header
    /// values and keys"), so it was not worth its own proof.
    #[inline]
    fn per_interval(&self, n: u64) -> u64 {
        n / self.interval
    }
}

/// What [`decide`] returns for a policy of the one quota `gcra` describes, and the state it
/// leaves in `slot`, without the loop over quotas. When the request changes the state, the
/// key's [`idle_at`] is the new `slot.a`.
#[inline]
pub(crate) fn gcra_single(
    gcra: SingleGcra,
    quota: &Quota,
    slot: &mut Slot,
    now: u64,
    cost: u32,
) -> Outcome {
    if cost > gcra.burst {
        return decide(
            Algorithm::Gcra,
            std::slice::from_ref(quota),
            std::slice::from_mut(slot),
            now,
            cost,
        );
    }
    let tat = slot.a.max(now);
    let horizon = now + gcra.tolerance;
    let next_tat = tat + u64::from(cost) * gcra.interval;
    if next_tat <= horizon {
        let changed = cost > 0;
        if changed {
            slot.a = next_tat;
        }
        Outcome {
            allowed: true,
            binding: 0,
            remaining: gcra.per_interval(horizon - next_tat),
            reset: next_tat - now,
            retry: 0,
            changed,
        }
    } else {
        Outcome {
            allowed: false,
            binding: 0,
            remaining: gcra.per_interval(horizon - tat),
            reset: tat - now,
            retry: (next_tat - horizon).max(1),
            changed: false,
        }
    }
}

/// The time (µs) from which `slots` are worth no more than a fresh key's: the key may be
/// forgotten then.
pub(crate) fn idle_at(algorithm: Algorithm, quotas: &[Quota], slots: &[Slot]) -> u64 {
    quotas
        .iter()
        .zip(slots)
        .map(|(quota, slot)| match algorithm {
            Algorithm::Gcra => slot.a,
            // `a` is the window index plus one: the window ends at `a × period`.
            Algorithm::FixedWindow => slot.a.saturating_mul(quota.period_micros()),
            // The count also weighs on the next window.
            Algorithm::SlidingWindow => slot
                .a
                .saturating_add(1)
                .saturating_mul(quota.period_micros()),
        })
        .max()
        .unwrap_or(0)
}

fn oversized(quota: &Quota, slot: Slot, remaining: u64, reset: u64) -> Verdict {
    Verdict {
        allowed: false,
        remaining,
        reset,
        retry: quota.period_micros(),
        next: slot,
    }
}

fn gcra(quota: &Quota, slot: Slot, now: u64, cost: u32) -> Verdict {
    let interval = quota.interval_micros();
    let tolerance = u64::from(quota.burst()) * interval;
    let tat = slot.a.max(now);
    let horizon = now + tolerance;
    let remaining_now = (horizon - tat) / interval;
    if cost > quota.burst() {
        return oversized(quota, slot, remaining_now, tat - now);
    }
    let next_tat = tat + u64::from(cost) * interval;
    if next_tat <= horizon {
        Verdict {
            allowed: true,
            remaining: (horizon - next_tat) / interval,
            reset: next_tat - now,
            retry: 0,
            next: Slot { a: next_tat, b: 0 },
        }
    } else {
        Verdict {
            allowed: false,
            remaining: remaining_now,
            reset: tat - now,
            retry: next_tat - horizon,
            next: slot,
        }
    }
}

fn fixed(quota: &Quota, slot: Slot, now: u64, cost: u32) -> Verdict {
    let period = quota.period_micros();
    let limit = u64::from(quota.count());
    let window = now / period;
    let count = if slot.a == window + 1 { slot.b } else { 0 };
    let reset = (window + 1) * period - now;
    let remaining_now = limit.saturating_sub(count);
    if cost > quota.count() {
        return oversized(quota, slot, remaining_now, reset);
    }
    let next_count = count + u64::from(cost);
    if next_count <= limit {
        Verdict {
            allowed: true,
            remaining: limit - next_count,
            reset,
            retry: 0,
            next: Slot {
                a: window + 1,
                b: next_count,
            },
        }
    } else {
        Verdict {
            allowed: false,
            remaining: remaining_now,
            reset,
            retry: reset,
            next: slot,
        }
    }
}

/// `floor(prev × (period − elapsed) / period)`, all in milliseconds: the previous window's
/// count still inside the sliding window.
fn weighted(prev: u64, period_ms: u64, elapsed_ms: u64) -> u64 {
    prev * (period_ms - elapsed_ms) / period_ms
}

/// The first elapsed millisecond of a window at which `floor(prev × (period − e) / period)`
/// is at most `room`.
fn first_fit(prev: u64, period_ms: u64, room: u64) -> u64 {
    if prev == 0 {
        return 0;
    }
    period_ms.saturating_sub(((room + 1) * period_ms - 1) / prev)
}

fn sliding(quota: &Quota, slot: Slot, now: u64, cost: u32) -> Verdict {
    let period = quota.period_micros();
    let period_ms = quota.period_millis();
    let limit = u64::from(quota.count());
    let window = now / period;
    let start = window * period;
    let (current, previous) = if slot.a == window + 1 {
        (slot.b & u64::from(u32::MAX), slot.b >> 32)
    } else if slot.a == window {
        (0, slot.b & u64::from(u32::MAX))
    } else {
        (0, 0)
    };
    let elapsed_ms = (now - start) / 1000;
    let estimate = current + weighted(previous, period_ms, elapsed_ms);
    let reset = start + period - now;
    let remaining_now = limit.saturating_sub(estimate);
    if cost > quota.count() {
        return oversized(quota, slot, remaining_now, reset);
    }
    let cost = u64::from(cost);
    if estimate + cost <= limit {
        let next_current = current + cost;
        Verdict {
            allowed: true,
            remaining: limit - estimate - cost,
            reset,
            retry: 0,
            next: Slot {
                a: window + 1,
                b: (previous << 32) | next_current,
            },
        }
    } else {
        let admitted_at = if current + cost <= limit {
            start + first_fit(previous, period_ms, limit - current - cost) * 1000
        } else {
            start + period + first_fit(current, period_ms, limit - cost) * 1000
        };
        Verdict {
            allowed: false,
            remaining: remaining_now,
            reset,
            retry: admitted_at.saturating_sub(now),
            next: slot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::quota::MAX_COUNT;

    const S: u64 = 1_000_000;

    struct Key {
        algorithm: Algorithm,
        quotas: Vec<Quota>,
        slots: [Slot; MAX_QUOTAS],
    }

    impl Key {
        fn new(algorithm: Algorithm, quotas: &[Quota]) -> Self {
            Self {
                algorithm,
                quotas: quotas.to_vec(),
                slots: [Slot::default(); MAX_QUOTAS],
            }
        }

        fn at(&mut self, now: u64, cost: u32) -> Outcome {
            decide(self.algorithm, &self.quotas, &mut self.slots, now, cost)
        }

        /// Admitted requests of cost 1 at `now`, up to 100.
        fn drain(&mut self, now: u64) -> usize {
            (0..100).take_while(|_| self.at(now, 1).allowed).count()
        }
    }

    #[test]
    fn gcra_admits_the_burst_then_spaces_requests() {
        let mut key = Key::new(Algorithm::Gcra, &[Quota::per_second(10)]);
        let first = key.at(0, 1);
        assert!(first.allowed);
        assert_eq!((first.remaining, first.reset), (9, 100_000));
        assert_eq!(key.drain(0), 9);
        let refused = key.at(0, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry, 100_000);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset, S);
        // One interval later exactly one more.
        assert!(!key.at(99_999, 1).allowed);
        assert!(key.at(100_000, 1).allowed);
        assert!(!key.at(100_000, 1).allowed);
        // After a full period the whole burst again.
        assert_eq!(key.drain(100_000 + S), 10);
    }

    #[test]
    fn gcra_burst_smaller_than_count() {
        let mut key = Key::new(Algorithm::Gcra, &[Quota::per_minute(60).with_burst(3)]);
        assert_eq!(key.drain(0), 3);
        let refused = key.at(0, 1);
        assert_eq!(refused.retry, S);
        assert_eq!(refused.reset, 3 * S);
        assert!(key.at(S, 1).allowed);
        assert!(!key.at(S, 1).allowed);
    }

    #[test]
    fn gcra_cost_counts_several_cells() {
        let mut key = Key::new(Algorithm::Gcra, &[Quota::per_second(10)]);
        let heavy = key.at(0, 4);
        assert!(heavy.allowed);
        assert_eq!(heavy.remaining, 6);
        assert!(key.at(0, 6).allowed);
        let refused = key.at(0, 3);
        assert!(!refused.allowed);
        assert_eq!(refused.retry, 300_000);
        assert!(key.at(300_000, 3).allowed);
    }

    #[test]
    fn cost_above_the_burst_is_always_refused_with_the_period() {
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::SlidingWindow,
            Algorithm::FixedWindow,
        ] {
            let mut key = Key::new(algorithm, &[Quota::per_second(5)]);
            let refused = key.at(0, 6);
            assert!(!refused.allowed, "{algorithm:?}");
            assert_eq!(refused.retry, S, "{algorithm:?}");
            assert_eq!(refused.remaining, 5, "{algorithm:?}");
            assert!(!refused.changed);
            assert_eq!(key.drain(0), 5, "{algorithm:?}: nothing was consumed");
        }
    }

    #[test]
    fn cost_zero_reads_without_consuming() {
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::SlidingWindow,
            Algorithm::FixedWindow,
        ] {
            let mut key = Key::new(algorithm, &[Quota::per_second(5)]);
            key.at(0, 2);
            let peek = key.at(0, 0);
            assert!(peek.allowed);
            assert!(!peek.changed);
            assert_eq!(peek.remaining, 3, "{algorithm:?}");
            assert_eq!(key.drain(0), 3, "{algorithm:?}");
        }
    }

    #[test]
    fn fixed_window_resets_at_the_edge() {
        let mut key = Key::new(Algorithm::FixedWindow, &[Quota::per_second(3)]);
        assert_eq!(key.drain(500_000), 3);
        let refused = key.at(999_999, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry, 1);
        assert_eq!(refused.reset, 1);
        // The next window admits the whole count at once: the known weakness of windows.
        let first = key.at(S, 1);
        assert!(first.allowed);
        assert_eq!((first.remaining, first.reset), (2, S));
        assert_eq!(key.drain(S), 2);
    }

    #[test]
    fn sliding_window_weighs_the_previous_window() {
        let mut key = Key::new(Algorithm::SlidingWindow, &[Quota::per_second(10)]);
        assert_eq!(key.drain(0), 10);
        // At the start of the next window the previous one still counts in full.
        let refused = key.at(S, 1);
        assert!(!refused.allowed);
        // floor(10 × (1000 − e) / 1000) <= 9 from e = 1 ms.
        assert_eq!(refused.retry, 1000);
        assert!(!key.at(S + 999, 1).allowed);
        assert!(key.at(S + 1000, 1).allowed);
        // Halfway: 5 of the previous window weigh, 1 of this one: 4 left.
        assert_eq!(key.drain(S + 500_000), 4);
        // Two windows later everything is forgotten.
        assert_eq!(key.drain(3 * S), 10);
    }

    #[test]
    fn sliding_window_full_current_window_waits_for_the_next() {
        let mut key = Key::new(Algorithm::SlidingWindow, &[Quota::per_second(4)]);
        assert_eq!(key.drain(900_000), 4);
        let refused = key.at(950_000, 1);
        // Next window from 1 s: floor(4 × (1000 − e) / 1000) <= 3 from e = 1 ms.
        assert_eq!(refused.retry, 50_000 + 1000);
        assert!(!key.at(S + 999, 1).allowed);
        assert!(key.at(S + 1000, 1).allowed);
    }

    #[test]
    fn several_quotas_are_all_or_nothing() {
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::SlidingWindow,
            Algorithm::FixedWindow,
        ] {
            let quotas = [Quota::per_second(3), Quota::per_minute(5)];
            let mut key = Key::new(algorithm, &quotas);
            assert_eq!(key.drain(0), 3, "{algorithm:?}");
            let refused = key.at(0, 1);
            assert!(!refused.allowed);
            assert_eq!(refused.binding, 0, "{algorithm:?}");
            // The minute quota was not charged for the refused requests.
            assert_eq!(key.drain(2 * S), 2, "{algorithm:?}");
            let refused = key.at(2 * S, 1);
            assert_eq!(refused.binding, 1, "{algorithm:?}");
            assert!(refused.retry > S, "{algorithm:?}");
        }
    }

    #[test]
    fn binding_quota_is_the_one_with_fewest_left() {
        let quotas = [Quota::per_second(10), Quota::per_minute(3)];
        let mut key = Key::new(Algorithm::Gcra, &quotas);
        let first = key.at(0, 1);
        assert_eq!((first.binding, first.remaining), (1, 2));
        assert_eq!(first.reset, 20 * S);
    }

    #[test]
    fn dividing_by_the_interval_is_exact() {
        for interval in [1, 2, 3, 7, 1000, 999_983, 86_400_000_000, (1 << 52) - 1] {
            let quota = Quota::new(1, std::time::Duration::from_millis(1)).unwrap();
            let gcra = SingleGcra {
                interval,
                ..SingleGcra::new(&quota)
            };
            for n in [
                0,
                1,
                interval - 1,
                interval,
                interval + 1,
                3 * interval - 1,
                1 << 52,
            ]
            .into_iter()
            .chain((0..1000_u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11))
            {
                assert_eq!(gcra.per_interval(n), n / interval, "{n} / {interval}");
            }
        }
    }

    #[test]
    fn the_single_gcra_path_decides_as_the_general_one() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut below = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for quota in [
            Quota::per_second(10),
            Quota::per_minute(60).with_burst(3),
            "7/3s burst 20".parse().unwrap(),
            Quota::new(MAX_COUNT, std::time::Duration::from_secs(3600)).unwrap(),
        ] {
            let gcra = SingleGcra::new(&quota);
            let mut general = [Slot::default(); MAX_QUOTAS];
            let mut single = Slot::default();
            let mut now = 1 << 40;
            for _ in 0..2000 {
                now += below(3 * quota.interval_micros());
                let cost = match below(10) {
                    0 => 0,
                    1 => quota.burst() + 1,
                    2 => u32::MAX,
                    _ => below(4) as u32 + 1,
                };
                let expected = decide(Algorithm::Gcra, &[quota], &mut general, now, cost);
                let got = gcra_single(gcra, &quota, &mut single, now, cost);
                assert_eq!(got, expected, "{quota:?} at {now} cost {cost}");
                assert_eq!(single, general[0]);
                if got.changed {
                    assert_eq!(single.a, idle_at(Algorithm::Gcra, &[quota], &general));
                }
            }
        }
    }

    #[test]
    fn idle_at_marks_when_state_is_worthless() {
        let quota = [Quota::per_second(10)];
        let mut slots = [Slot::default(); MAX_QUOTAS];
        decide(Algorithm::Gcra, &quota, &mut slots, 5 * S, 3);
        assert_eq!(idle_at(Algorithm::Gcra, &quota, &slots), 5 * S + 300_000);
        let mut slots = [Slot::default(); MAX_QUOTAS];
        decide(Algorithm::FixedWindow, &quota, &mut slots, 5 * S + 1, 1);
        assert_eq!(idle_at(Algorithm::FixedWindow, &quota, &slots), 6 * S);
        let mut slots = [Slot::default(); MAX_QUOTAS];
        decide(Algorithm::SlidingWindow, &quota, &mut slots, 5 * S + 1, 1);
        assert_eq!(idle_at(Algorithm::SlidingWindow, &quota, &slots), 7 * S);
    }

    #[test]
    fn extreme_quotas_do_not_overflow() {
        let quotas = [
            Quota::new(MAX_COUNT, std::time::Duration::from_secs(3600)).unwrap(),
            Quota::new(1, std::time::Duration::from_secs(366 * 86_400)).unwrap(),
        ];
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::SlidingWindow,
            Algorithm::FixedWindow,
        ] {
            let mut key = Key::new(algorithm, &quotas[..1]);
            assert!(key.at(1 << 51, u32::MAX).retry > 0);
            assert!(key.at(1 << 51, MAX_COUNT).allowed, "{algorithm:?}");
            let mut key = Key::new(algorithm, &quotas[1..]);
            assert!(key.at(1 << 51, 1).allowed);
            assert!(!key.at(1 << 51, 1).allowed);
        }
    }
}
