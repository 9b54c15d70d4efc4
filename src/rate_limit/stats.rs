//! The layer's counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// What a [`RateLimitLayer`](super::RateLimitLayer) has decided so far: a handle to atomic
/// counters shared by every service and clone of the layer.
///
/// Get one with [`RateLimitLayer::counters`](super::RateLimitLayer::counters); read it with
/// [`snapshot`](Self::snapshot).
#[derive(Debug, Default)]
pub struct RateLimitStats {
    allowed: AtomicU64,
    refused: AtomicU64,
    shadow_refused: AtomicU64,
    exempt: AtomicU64,
    allow_listed: AtomicU64,
    missing_key: AtomicU64,
    store_errors: AtomicU64,
    fallback: AtomicU64,
}

/// The former name of [`RateLimitStats`].
#[deprecated(since = "0.1.0", note = "renamed to `RateLimitStats`")]
pub type RateLimitCounters = RateLimitStats;

/// The counters of a [`RateLimitStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateLimitSnapshot {
    /// Requests the store admitted (including those decided by a fallback).
    pub allowed: u64,
    /// Requests answered `429`.
    pub refused: u64,
    /// Requests the store refused but shadow mode let through.
    pub shadow_refused: u64,
    /// Requests the per-route policy exempted.
    pub exempt: u64,
    /// Requests whose key or address is on the allow-list.
    pub allow_listed: u64,
    /// Requests the key extractor found no key for (the missing-key rule applied).
    pub missing_key: u64,
    /// Checks the store could not decide; those requests were let through.
    pub store_errors: u64,
    /// Decisions made by a store's fallback (insurance, fail-open, fail-closed) rather than
    /// the store itself; they also count as allowed or refused.
    pub fallback: u64,
}

/// What happened to one request, for [`RateLimitStats::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    Allowed,
    Refused,
    ShadowRefused,
    Exempt,
    AllowListed,
    MissingKey,
    StoreError,
    Fallback,
}

impl RateLimitStats {
    #[inline]
    pub(super) fn count(&self, event: Event) {
        let counter = match event {
            Event::Allowed => &self.allowed,
            Event::Refused => &self.refused,
            Event::ShadowRefused => &self.shadow_refused,
            Event::Exempt => &self.exempt,
            Event::AllowListed => &self.allow_listed,
            Event::MissingKey => &self.missing_key,
            Event::StoreError => &self.store_errors,
            Event::Fallback => &self.fallback,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The counters now. Each is read atomically; the set is not one atomic picture.
    pub fn snapshot(&self) -> RateLimitSnapshot {
        RateLimitSnapshot {
            allowed: self.allowed.load(Relaxed),
            refused: self.refused.load(Relaxed),
            shadow_refused: self.shadow_refused.load(Relaxed),
            exempt: self.exempt.load(Relaxed),
            allow_listed: self.allow_listed.load(Relaxed),
            missing_key: self.missing_key.load(Relaxed),
            store_errors: self.store_errors.load(Relaxed),
            fallback: self.fallback.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_snapshot_and_serialize() {
        let counters = RateLimitStats::default();
        counters.count(Event::Allowed);
        counters.count(Event::Allowed);
        counters.count(Event::Refused);
        counters.count(Event::Fallback);
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.allowed, 2);
        assert_eq!(snapshot.refused, 1);
        assert_eq!(snapshot.fallback, 1);
        let json = serde_json::to_value(snapshot).unwrap();
        assert_eq!(json["allowed"], 2);
        assert_eq!(json["shadow_refused"], 0);
        let back: RateLimitSnapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snapshot);
    }
}
