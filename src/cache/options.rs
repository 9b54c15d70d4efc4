//! Per-entry options: TTL, tags and freshness policy.

use std::time::Duration;

/// How one entry is stored: TTL, tags and freshness policy.
///
/// ```
/// use std::time::Duration;
/// use perfkit::cache::EntryOptions;
///
/// let options = EntryOptions::new()
///     .ttl(Duration::from_secs(60))
///     .tags(["users", "org:7"])
///     .stale_while_revalidate(Duration::from_secs(30))
///     .stale_if_error(Duration::from_secs(600));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct EntryOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) tags: Vec<String>,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) early_refresh_beta: f64,
}

impl Default for EntryOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryOptions {
    /// Options with every default: the cache's default TTL, no tags, no stale windows,
    /// early refresh with beta 1.0.
    pub fn new() -> Self {
        Self {
            ttl: None,
            tags: Vec::new(),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            early_refresh_beta: 1.0,
        }
    }

    /// How long the entry is fresh. Defaults to the cache's default TTL
    /// ([`CacheBuilder::default_ttl`](super::CacheBuilder::default_ttl), 300 s). A zero TTL
    /// means the entry is not stored.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Adds one tag. Defaults to none.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds tags: [`Cache::invalidate_tags`](super::Cache::invalidate_tags) with any of them
    /// invalidates the entry. Defaults to none.
    pub fn tags<I>(mut self, tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// After the TTL, `get_or_compute` serves the stale value for this long while one
    /// background task recomputes it. Defaults to zero (no window).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// After the TTL, when recomputing the value fails, `get_or_compute` serves the stale
    /// value for this long instead of the error. Defaults to zero (no window).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// Probabilistic early refresh (XFetch): a fresh hit on an entry that took `delta` to
    /// compute starts one background recomputation when
    /// `now + delta * beta * -ln(random) >= expiry`, so the chance rises toward expiry and
    /// with the cost of the computation. Higher `beta` refreshes earlier. Defaults to 1.0;
    /// non-finite or negative values count as 0.
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.early_refresh_beta = if beta.is_finite() && beta > 0.0 {
            beta
        } else {
            0.0
        };
        self
    }

    /// Turns early refresh off: the entry is recomputed only once it expires.
    pub fn no_early_refresh(self) -> Self {
        self.early_refresh(0.0)
    }
}
