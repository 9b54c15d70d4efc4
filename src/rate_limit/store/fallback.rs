use std::time::Duration;

use super::{Decision, Key, MemoryStore};
use crate::{
    breaker::Breaker,
    log_gate::LogGate,
    rate_limit::{clock::Clock, error::Error, policy::Policy},
};

/// What a [`RedisStore`](super::RedisStore) decides while Redis fails (an error, or no answer
/// within the deadline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Decide with an in-memory store of this instance's own (the default): each server
    /// enforces the quota on the requests it sees, so a client spread over `n` servers may
    /// get up to `n` times its quota while Redis is down, and never a refusal caused by the
    /// outage.
    #[default]
    Memory,
    /// Admit every request.
    FailOpen,
    /// Refuse every request, with a `retry_after` of one second.
    FailClosed,
}

/// Redis's health as the store sees it, the insurance store, and the failure log's pace.
///
/// After a failure, Redis is left alone for `retry_interval`; then the first request tries it
/// again while the others keep using the fallback, and Redis is used for everyone from the
/// first answer on. A failure is logged at most once per `log_interval`, with the number of
/// failures left unlogged since.
#[derive(Debug)]
pub(super) struct Insurance {
    pub(super) mode: Fallback,
    pub(super) memory: MemoryStore,
    /// Redis's state, in µs on the store's clock.
    breaker: Breaker,
    failure_log: LogGate,
}

impl Insurance {
    pub(super) fn new(
        mode: Fallback,
        memory: MemoryStore,
        retry_interval: Duration,
        log_interval: Duration,
    ) -> Self {
        Self {
            mode,
            memory,
            breaker: Breaker::new(micros(retry_interval)),
            failure_log: LogGate::new(log_interval),
        }
    }

    /// Whether this request should skip Redis; claims the retry when it is due.
    #[inline]
    pub(super) fn skip_redis(&self, now: u64) -> bool {
        self.breaker.skip(now)
    }

    /// Whether Redis failed last time it was tried, so the fallback decides.
    pub(super) fn active(&self) -> bool {
        self.breaker.is_open()
    }

    /// Redis answered.
    #[inline]
    pub(super) fn succeeded(&self) {
        if self.breaker.succeeded() {
            tracing::info!(
                store = "redis",
                "rate-limit store answers again; deciding in Redis"
            );
        }
    }

    /// Redis failed at `now`: leaves it alone for a while and logs, at most once per interval.
    pub(super) fn failed(&self, now: u64, error: &Error) {
        self.breaker.failed(now);
        if let Some(unlogged) = self.failure_log.open(now / 1000) {
            tracing::warn!(
                store = "redis",
                %error,
                fallback = ?self.mode,
                unlogged_failures = unlogged,
                "rate-limit store failed; deciding without it until it answers again"
            );
        }
    }

    /// The decision made without Redis.
    pub(super) fn decide(
        &self,
        policy: &Policy,
        key: &Key,
        cost: u32,
        clock: &dyn Clock,
    ) -> Decision {
        match self.mode {
            Fallback::Memory => {
                let mut decision = self.memory.decide_at(policy, key, cost, clock.now_micros());
                decision.source = super::Source::Insurance;
                decision
            }
            Fallback::FailOpen => Decision::fail_open(policy.quotas()[0]),
            Fallback::FailClosed => {
                Decision::fail_closed(policy.quotas()[0], Duration::from_secs(1))
            }
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
