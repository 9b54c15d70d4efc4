//! Rate limiting: per-client quotas decided by GCRA, sliding or fixed windows, in memory or
//! shared through Redis.
//!
//! # Example
//!
//! ```
//! use perfkit::rate_limit::{Key, Policy, Quota};
//!
//! let policy: Policy = "10/second, 1000/hour".parse()?;
//! assert_eq!(policy.quotas(), [Quota::per_second(10), Quota::per_hour(1000)]);
//! let key = Key::ip("203.0.113.7".parse().unwrap());
//! assert_eq!(key.to_string(), "ip:203.0.113.7");
//! # Ok::<_, perfkit::rate_limit::Error>(())
//! ```
//!
//! # Stores
//!
//! A [`Store`] keeps each key's state and decides each request with one call,
//! [`Store::check`], which returns a [`Decision`]: admitted or not, the figures for the
//! rate-limit headers, and who decided ([`Source`]).

mod algorithm;
mod clock;
mod error;
mod policy;
mod quota;
mod store;

#[doc(inline)]
pub use self::{
    algorithm::Algorithm,
    clock::{Clock, CoarseClock, ManualClock, SystemClock},
    error::{Error, Result},
    policy::{MAX_QUOTAS, Policy},
    quota::Quota,
    store::{Check, Decision, Key, MemoryStore, MemoryStoreBuilder, Source, Store},
};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use self::store::{Fallback, RedisStore, RedisStoreBuilder};
