//! [`RateLimitCheck`]: a rate limiter's Redis store.

use std::fmt;

use async_trait::async_trait;

use super::{CheckError, HealthCheck, Label};

/// A [`HealthCheck`] for a rate limiter's [`RedisStore`](crate::rate_limit::RedisStore): fails
/// while its Redis does not answer `PING` within the store's deadline, or while the store
/// decides without Redis because Redis failed.
///
/// Named `rate_limit` and non-critical by default: while Redis is down the store keeps
/// deciding with its [`Fallback`](crate::rate_limit::Fallback), so the service still works and
/// the report reads `degraded`, naming the fallback. Call
/// [`as_critical`](Self::as_critical) when per-instance limits are not acceptable. The
/// [`MemoryStore`](crate::rate_limit::MemoryStore) needs no check: it has nothing that can
/// fail.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use perfkit::{
///     health::{HealthMonitor, RateLimitCheck},
///     pool::RedisPoolBuilder,
///     rate_limit::RedisStore,
/// };
///
/// let handle = RedisPoolBuilder::new("redis://127.0.0.1:6379").build().await?;
/// let store = RedisStore::new(handle);
/// let monitor = HealthMonitor::builder()
///     .check(RateLimitCheck::new(&store))
///     .build();
/// monitor.start().await;
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(all(feature = "rate-limit", feature = "redis"))))]
#[must_use]
pub struct RateLimitCheck {
    label: Label,
    store: crate::rate_limit::RedisStore,
}

label_setters!(impl[] RateLimitCheck, default = "`rate_limit`");

impl RateLimitCheck {
    /// A non-critical check named `rate_limit` on `store` (which it shares, not copies).
    pub fn new(store: &crate::rate_limit::RedisStore) -> Self {
        Self {
            label: Label::new("rate_limit", false),
            store: store.clone(),
        }
    }
}

impl From<&crate::rate_limit::RedisStore> for RateLimitCheck {
    fn from(store: &crate::rate_limit::RedisStore) -> Self {
        Self::new(store)
    }
}

impl fmt::Debug for RateLimitCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.label
            .fields(&mut f.debug_struct("RateLimitCheck"))
            .field("store", &self.store)
            .finish()
    }
}

#[async_trait]
impl HealthCheck for RateLimitCheck {
    label_accessors!();

    async fn check(&self) -> Result<(), CheckError> {
        let fallback = self.store.fallback();
        if let Err(error) = self.store.ping().await {
            return Err(CheckError::new(format!(
                "rate-limit Redis PING failed: {error}; deciding with {fallback:?}"
            )));
        }
        if self.store.fallback_active() {
            return Err(CheckError::new(format!(
                "rate-limit Redis answers PING but failed a decision; deciding with \
                 {fallback:?} until its next retry succeeds"
            )));
        }
        Ok(())
    }
}
