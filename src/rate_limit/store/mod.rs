//! The store trait, the keys and decisions it deals in, and the stores.

use std::{
    fmt,
    future::Future,
    net::{IpAddr, Ipv6Addr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use sha2::{Digest, Sha256};

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

use super::{error::Result, policy::Policy, quota::Quota};

/// Longest text a [`Key::text`] keeps as it is; longer texts are hashed.
const MAX_TEXT_KEY_LEN: usize = 64;

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

/// Who a budget belongs to: a client address, a hashed credential, a user id, or everyone.
///
/// Keys are cheap to clone, hash and compare, and bounded in size: texts longer than 64
/// bytes and credentials are kept as a 128-bit SHA-256 prefix, never as they came.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Global,
    Ip(IpAddr),
    /// A 128-bit digest as two halves (most significant first), so a key is aligned on 8
    /// bytes, not 16, and takes 24 bytes.
    Hashed([u64; 2]),
    Text(Arc<str>),
}

impl Key {
    /// The one key every request shares.
    pub fn global() -> Self {
        Self(Repr::Global)
    }

    /// A client address. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) become IPv4.
    pub fn ip(addr: IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        };
        Self(Repr::Ip(addr))
    }

    /// The IPv6 network of `addr` with a `prefix_len`-bit prefix (clamped to 128), so a
    /// client cannot escape its budget by changing the low bits of its address; IPv4 and
    /// IPv4-mapped addresses are kept whole.
    pub fn ip_prefix(addr: IpAddr, prefix_len: u8) -> Self {
        match Self::ip(addr).0 {
            Repr::Ip(IpAddr::V6(v6)) => {
                let len = u32::from(prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Self(Repr::Ip(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))))
            }
            other => Self(other),
        }
    }

    /// A secret or personal value (an API key, a token): only a 128-bit SHA-256 prefix of it
    /// is kept, so the value itself never reaches the store, a header or a log.
    pub fn hashed(value: impl AsRef<[u8]>) -> Self {
        let digest = Sha256::digest(value.as_ref());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(Repr::Hashed(split(u128::from_be_bytes(bytes))))
    }

    /// A value that is not secret, such as a user id or a tenant name; texts longer than 64
    /// bytes are hashed as by [`Key::hashed`].
    pub fn text(value: &str) -> Self {
        if value.len() > MAX_TEXT_KEY_LEN {
            Self::hashed(value)
        } else {
            Self(Repr::Text(value.into()))
        }
    }

    /// The address, when the key is one.
    pub fn as_ip(&self) -> Option<IpAddr> {
        match self.0 {
            Repr::Ip(addr) => Some(addr),
            _ => None,
        }
    }
}

fn split(value: u128) -> [u64; 2] {
    [(value >> 64) as u64, value as u64]
}

fn join([high, low]: [u64; 2]) -> u128 {
    (u128::from(high) << 64) | u128::from(low)
}

/// `*` for the global key, `ip:<addr>`, `h:<32 hex digits>`, `t:<text>`: the form keys
/// take in Redis.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Global => f.write_str("*"),
            Repr::Ip(addr) => write!(f, "ip:{addr}"),
            Repr::Hashed(hash) => write!(f, "h:{:032x}", join(*hash)),
            Repr::Text(text) => write!(f, "t:{text}"),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl From<IpAddr> for Key {
    fn from(addr: IpAddr) -> Self {
        Self::ip(addr)
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
