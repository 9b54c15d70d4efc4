use std::{
    fmt,
    hash::BuildHasher,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::{Check, Decision, Key, Source, Store};
use crate::{
    log_gate::{LOG_INTERVAL, LogGate},
    rate_limit::{
        algorithm::{self, Slot},
        clock::{Clock, QuantaClock},
        policy::{MAX_QUOTAS, Policy},
    },
};

/// Keys a memory store holds by default.
const DEFAULT_MAX_KEYS: usize = 100_000;
/// Fewest keys per shard.
const MIN_SHARD_KEYS: usize = 8;

/// A [`Store`] in the process's memory: sharded, with a fixed size per key and a bound on the
/// number of keys.
///
/// Each key costs about 80 bytes whatever its traffic (a 64-byte entry and the table's
/// spare room), and 64 more when its policy has several quotas. The keys are spread over
/// shards, each behind its own lock held only for the few nanoseconds a decision takes, so
/// threads rarely wait on each other. Decisions never allocate, except when a new key's
/// shard must grow or a new key's policy has several quotas.
///
/// The number of keys is bounded ([`max_keys`](MemoryStoreBuilder::max_keys)): when a new key
/// finds its shard full, the shard first forgets the keys whose state has run out (a key
/// whose budget is whole again is worth nothing), then, if that did not free an eighth of
/// the shard, the keys closest to running out. A flood of new client addresses therefore
/// costs bounded memory and amortised constant time per request, and can at worst restore
/// the budget of a key that was nearly whole again. No background task is involved.
///
/// Cloning is cheap and shares the keys.
///
/// ```
/// use perfkit::rate_limit::{Key, MemoryStore, Policy, Quota};
///
/// let store = MemoryStore::new();
/// let policy = Policy::new(Quota::per_second(2));
/// let key = Key::text("user-42");
/// assert!(store.decide(&policy, &key, 1).allowed);
/// assert!(store.decide(&policy, &key, 1).allowed);
/// let refused = store.decide(&policy, &key, 1);
/// assert!(!refused.allowed);
/// assert!(refused.retry_after.is_some());
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Shard]>,
    shard_mask: usize,
    shard_capacity: usize,
    hasher: DefaultHashBuilder,
    /// The clock given to the builder; `None` for the default, read without a virtual call.
    clock: Option<Arc<dyn Clock>>,
    system_clock: QuantaClock,
    eviction_log: LogGate,
}

/// One lock and its table, padded to a cache line so neighbouring shards do not share one.
#[repr(align(128))]
struct Shard {
    table: Mutex<HashTable<Entry>>,
}

/// One key's state under one policy: 64 bytes, one cache line, for a single quota.
struct Entry {
    policy: u64,
    key: Key,
    /// When the state is worth no more than a fresh key's (µs).
    idle_at: u64,
    slots: Slots,
}

/// The state of every quota of a policy; boxed for several, so that a key of a policy of one
/// quota (most keys) stays small and more of them fit in the CPU's caches.
enum Slots {
    One(Slot),
    Many(Box<[Slot; MAX_QUOTAS]>),
}

impl Slots {
    /// Room for `quotas` slots (a policy's quotas may change under the same name).
    #[inline]
    fn for_quotas(&mut self, quotas: usize) -> &mut [Slot] {
        if quotas > 1
            && let Self::One(slot) = *self
        {
            let mut many = [Slot::default(); MAX_QUOTAS];
            many[0] = slot;
            *self = Self::Many(Box::new(many));
        }
        match self {
            Self::One(slot) => std::slice::from_mut(slot),
            Self::Many(slots) => &mut slots[..quotas.min(MAX_QUOTAS)],
        }
    }
}

impl Entry {
    /// Decides on this key's state, and keeps `idle_at` up to date.
    #[inline]
    fn decide(&mut self, policy: &Policy, now: u64, cost: u32) -> algorithm::Outcome {
        let quotas = policy.quotas();
        let slots = self.slots.for_quotas(quotas.len());
        if let Some(gcra) = policy.single_gcra() {
            let outcome = algorithm::gcra_single(gcra, &quotas[0], &mut slots[0], now, cost);
            if outcome.changed {
                self.idle_at = slots[0].a;
            }
            return outcome;
        }
        let algorithm = policy.algorithm();
        let outcome = algorithm::decide(algorithm, quotas, slots, now, cost);
        if outcome.changed {
            self.idle_at = algorithm::idle_at(algorithm, quotas, slots);
        }
        outcome
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_keys: usize,
    shards: Option<usize>,
    clock: Option<Arc<dyn Clock>>,
}

impl MemoryStoreBuilder {
    /// The most keys the store holds (each pair of policy and key counts once); beyond it,
    /// new keys evict idle ones first. Defaults to 100,000 (about 8 MB).
    pub fn max_keys(self, max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            ..self
        }
    }

    /// The number of shards, rounded up to a power of two between 1 and 1024. Defaults to
    /// four per available CPU, at least 4.
    pub fn shards(self, shards: usize) -> Self {
        Self {
            shards: Some(shards.clamp(1, 1024).next_power_of_two()),
            ..self
        }
    }

    /// The clock decisions are made on. Defaults to a [`QuantaClock`].
    pub fn clock(self, clock: impl Clock) -> Self {
        Self {
            clock: Some(Arc::new(clock)),
            ..self
        }
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let shards = self.shards.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            (cpus * 4).clamp(4, 1024).next_power_of_two()
        });
        let shard_capacity = self.max_keys.div_ceil(shards).max(MIN_SHARD_KEYS);
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..shards)
                    .map(|_| Shard {
                        table: Mutex::new(HashTable::new()),
                    })
                    .collect(),
                shard_mask: shards - 1,
                shard_capacity,
                hasher: DefaultHashBuilder::default(),
                clock: self.clock,
                system_clock: QuantaClock::new(),
                eviction_log: LogGate::new(LOG_INTERVAL),
            }),
        }
    }
}

impl MemoryStore {
    /// A store with the default settings: 100,000 keys, four shards per CPU, a [`QuantaClock`].
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to choose the bound, the shards and the clock.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
            clock: None,
        }
    }

    /// Decides at once what [`Store::check`] decides.
    #[inline]
    pub fn decide(&self, policy: &Policy, key: &Key, cost: u32) -> Decision {
        let now = match &self.inner.clock {
            None => self.inner.system_clock.now_micros(),
            Some(clock) => clock.now_micros(),
        };
        self.decide_at(policy, key, cost, now)
    }

    pub(crate) fn decide_at(&self, policy: &Policy, key: &Key, cost: u32, now: u64) -> Decision {
        let inner = &*self.inner;
        let policy_id = policy.id();
        let hash = inner.hasher.hash_one((policy_id, key));
        let shard = &inner.shards[(hash >> 32) as usize & inner.shard_mask];
        let mut table = shard.table.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = match table.find_mut(hash, |e| e.policy == policy_id && e.key == *key) {
            Some(entry) => entry.decide(policy, now, cost),
            None => {
                let mut entry = Entry {
                    policy: policy_id,
                    key: key.clone(),
                    idle_at: 0,
                    slots: Slots::One(Slot::default()),
                };
                let outcome = entry.decide(policy, now, cost);
                if outcome.changed {
                    if table.len() >= inner.shard_capacity {
                        self.make_room(&mut table, now);
                    }
                    table.insert_unique(hash, entry, |e| inner.hasher.hash_one((e.policy, &e.key)));
                }
                outcome
            }
        };
        drop(table);
        decision(policy, &outcome)
    }

    /// Frees at least an eighth of a full shard: keys whose state ran out first, then those
    /// closest to running out.
    #[cold]
    fn make_room(&self, table: &mut HashTable<Entry>, now: u64) {
        let capacity = self.inner.shard_capacity;
        table.retain(|entry| entry.idle_at > now);
        let target = capacity - capacity / 8;
        if table.len() <= target {
            return;
        }
        let excess = table.len() - target;
        let mut idle_times: Vec<u64> = table.iter().map(|entry| entry.idle_at).collect();
        let (_, threshold, _) = idle_times.select_nth_unstable(excess - 1);
        let threshold = *threshold;
        let mut left = excess;
        table.retain(|entry| {
            if left > 0 && entry.idle_at <= threshold {
                left -= 1;
                false
            } else {
                true
            }
        });
        if let Some(held_back) = self.inner.eviction_log.open(now / 1000) {
            tracing::warn!(
                evicted = excess,
                held_back,
                max_keys = capacity * self.inner.shards.len(),
                "rate-limit memory store full: evicted keys whose budget was not yet whole; \
                 raise MemoryStoreBuilder::max_keys if this is regular traffic"
            );
        }
    }

    /// Keys held now, across all shards.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| {
                shard
                    .table
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys the store holds (the configured bound, rounded up to whole shards).
    pub fn capacity(&self) -> usize {
        self.inner.shard_capacity * self.inner.shards.len()
    }

    /// Forgets every key.
    pub fn clear(&self) {
        for shard in self.inner.shards.iter() {
            shard
                .table
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}

/// Turns an [`Outcome`](algorithm::Outcome) into the [`Decision`] of the policy's binding
/// quota.
pub(crate) fn decision(policy: &Policy, outcome: &algorithm::Outcome) -> Decision {
    let quota = policy.quotas()[outcome.binding];
    Decision {
        allowed: outcome.allowed,
        limit: quota.count(),
        remaining: u32::try_from(outcome.remaining).unwrap_or(u32::MAX),
        reset: Duration::from_micros(outcome.reset),
        retry_after: (!outcome.allowed).then(|| Duration::from_micros(outcome.retry)),
        quota,
        source: Source::Store,
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for MemoryStore {
    #[inline]
    fn check(&self, policy: &Policy, key: &Key, cost: u32) -> Check {
        Check::ready(Ok(self.decide(policy, key, cost)))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.inner.shards.len())
            .field("capacity", &self.capacity())
            .field(
                "clock",
                match &self.inner.clock {
                    None => &self.inner.system_clock,
                    Some(clock) => clock,
                },
            )
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;

    #[test]
    fn an_entry_fills_one_cache_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 64);
    }

    #[test]
    fn a_policy_that_gains_quotas_under_its_name_keeps_its_first_quota_state() {
        let clock = crate::rate_limit::ManualClock::new();
        let store = MemoryStore::builder().clock(clock.clone()).build();
        let key = Key::text("k");
        let one = Policy::new(crate::rate_limit::Quota::per_second(2)).with_name("p");
        let two = one.clone().and(crate::rate_limit::Quota::per_minute(100));
        assert!(store.decide(&one, &key, 2).allowed);
        let refused = store.decide(&two, &key, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.quota, one.quotas()[0]);
        clock.advance(Duration::from_secs(1));
        assert!(store.decide(&two, &key, 2).allowed);
        assert!(!store.decide(&one, &key, 1).allowed);
    }
}
