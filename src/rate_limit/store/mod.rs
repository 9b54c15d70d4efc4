//! The store trait, the decisions it makes, and the stores.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

#[cfg(feature = "redis")]
mod fallback;
mod memory;
#[cfg(feature = "redis")]
mod redis;

pub use self::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis")]
pub use self::{
    fallback::Fallback,
    redis::{RedisStore, RedisStoreBuilder},
};

pub(super) use super::key::Key;
use super::{error::Result, policy::Policy, quota::Quota};

/// Where rate-limit state lives: decides whether `key` may spend `cost` under `policy`.
///
/// [`MemoryStore`](super::MemoryStore) keeps the state in the process and answers at once;
/// [`RedisStore`](super::RedisStore) shares it between servers through Redis. The layer
/// holds a store in an [`Arc`], so a store is shared by every service and clone built from
/// it.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Decides one request of weight `cost` (1 for most requests) from `key` under `policy`,
    /// and consumes its cost when it is admitted.
    ///
    /// A cost of 0 only reads the key's state: the decision says what is left and consumes
    /// nothing. A cost above a quota's burst (or, for the window algorithms, above its count)
    /// can never be admitted; see [`Decision::retry_after`].
    ///
    /// The returned [`Check`] is ready at once for stores that do no I/O, without allocating.
    fn check(&self, policy: &Policy, key: &Key, cost: u32) -> Check;
}

impl<S: Store + ?Sized> Store for Arc<S> {
    #[inline]
    fn check(&self, policy: &Policy, key: &Key, cost: u32) -> Check {
        (**self).check(policy, key, cost)
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    #[inline]
    fn check(&self, policy: &Policy, key: &Key, cost: u32) -> Check {
        (**self).check(policy, key, cost)
    }
}

/// Which part of the store made a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The store itself: the memory store, or Redis.
    Store,
    /// The in-memory insurance of a Redis store, while Redis failed.
    Insurance,
    /// Admitted without a decision, because Redis failed and the store fails open.
    FailOpen,
    /// Refused without a decision, because Redis failed and the store fails closed.
    FailClosed,
}

impl Source {
    /// Whether the decision was made without the store, because it failed.
    pub fn is_fallback(self) -> bool {
        !matches!(self, Self::Store)
    }
}

/// A store's answer for one request.
///
/// With several quotas, the figures are those of the binding quota: the one that refused
/// (the one with the longest wait, when several did), or, when admitted, the one with the
/// fewest requests left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The binding quota's count (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Requests of cost 1 the binding quota would still admit right now, after this one.
    pub remaining: u32,
    /// Time until the binding quota is whole again: for GCRA until the key's whole burst is
    /// available, for the windows until the current window ends.
    pub reset: Duration,
    /// While refused, the time until the same request would be admitted; `None` when
    /// admitted. A request that can never be admitted (its cost exceeds the burst) is
    /// refused with the quota's period, so clients back off instead of retrying at once.
    pub retry_after: Option<Duration>,
    /// The binding quota.
    pub quota: Quota,
    /// Who decided.
    pub source: Source,
}

#[cfg(feature = "redis")]
impl Decision {
    /// An admission made without consulting state, when a failed store fails open.
    pub(crate) fn fail_open(quota: Quota) -> Self {
        Self {
            allowed: true,
            limit: quota.count(),
            remaining: quota.count(),
            reset: Duration::ZERO,
            retry_after: None,
            quota,
            source: Source::FailOpen,
        }
    }

    /// A refusal made without consulting state, when a failed store fails closed.
    pub(crate) fn fail_closed(quota: Quota, retry_after: Duration) -> Self {
        Self {
            allowed: false,
            limit: quota.count(),
            remaining: 0,
            reset: retry_after,
            retry_after: Some(retry_after),
            quota,
            source: Source::FailClosed,
        }
    }
}

/// The future [`Store::check`] returns; ready at once (and allocation-free) for stores that
/// need no I/O.
#[must_use = "futures do nothing unless polled"]
pub struct Check(CheckInner);

enum CheckInner {
    Ready(Option<Result<Decision>>),
    Pending(Pin<Box<dyn Future<Output = Result<Decision>> + Send + 'static>>),
}

impl Check {
    /// A check that is already decided.
    pub fn ready(result: Result<Decision>) -> Self {
        Self(CheckInner::Ready(Some(result)))
    }

    /// A check that waits on `future`.
    pub fn pending(future: impl Future<Output = Result<Decision>> + Send + 'static) -> Self {
        Self(CheckInner::Pending(Box::pin(future)))
    }

    /// Takes the result when the check was ready from the start, so a caller can skip
    /// polling; `None` when it must be awaited (or was already taken).
    pub fn take_ready(&mut self) -> Option<Result<Decision>> {
        match &mut self.0 {
            CheckInner::Ready(result) => result.take(),
            CheckInner::Pending(_) => None,
        }
    }
}

impl Future for Check {
    type Output = Result<Decision>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            CheckInner::Ready(result) => Poll::Ready(
                result
                    .take()
                    .expect("rate_limit::Check polled after completion"),
            ),
            CheckInner::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            CheckInner::Ready(result) => f.debug_tuple("Check::Ready").field(result).finish(),
            CheckInner::Pending(_) => f.write_str("Check::Pending"),
        }
    }
}
