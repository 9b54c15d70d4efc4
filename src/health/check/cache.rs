//! [`CacheCheck`]: the store behind a cache.

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use super::{CheckError, HealthCheck, Label};

/// A [`HealthCheck`] on the store behind a [`Cache`](crate::cache::Cache): Redis-backed
/// backends (Redis, tiered) send `PING` under their own deadline; the memory backend is
/// always up.
///
/// Named `cache` and critical unless told otherwise; a service that runs on without its
/// cache (every read a miss) usually marks it [`non_critical`](Self::non_critical).
///
/// ```
/// # #[cfg(feature = "cache")]
/// # fn run() -> perfkit::cache::Result<()> {
/// use perfkit::{cache::Cache, health::{CacheCheck, HealthMonitor}};
///
/// let cache = Cache::builder().build()?;
/// let monitor = HealthMonitor::builder()
///     .check(CacheCheck::from(&cache).non_critical())
///     .build();
/// # let _ = monitor;
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
#[must_use]
pub struct CacheCheck {
    label: Label,
    backend: Arc<dyn crate::cache::Backend>,
}

label_setters!(impl[] CacheCheck, default = "`cache`");

impl CacheCheck {
    /// A critical check named `cache` on `cache`'s backend.
    pub fn new(cache: &crate::cache::Cache) -> Self {
        Self {
            label: Label::new("cache", true),
            backend: Arc::clone(cache.backend()),
        }
    }
}

impl From<&crate::cache::Cache> for CacheCheck {
    /// A critical check named `cache`, as [`CacheCheck::new`].
    fn from(cache: &crate::cache::Cache) -> Self {
        Self::new(cache)
    }
}

impl fmt::Debug for CacheCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.label
            .fields(&mut f.debug_struct("CacheCheck"))
            .field("backend", &self.backend)
            .finish()
    }
}

#[async_trait]
impl HealthCheck for CacheCheck {
    label_accessors!();

    async fn check(&self) -> Result<(), CheckError> {
        self.backend
            .ping()
            .await
            .map_err(|error| CheckError::failed("cache PING", error))
    }
}
