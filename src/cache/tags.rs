//! The bounded in-process table of tag epochs.

use std::sync::Arc;

use quick_cache::sync::Cache as QuickCache;

use super::backend::{Epoch, Tag, TagEpoch};

/// Current epochs of tags, bounded by count.
///
/// A tag evicted from the table has no epoch: every entry recorded under its old epoch is
/// invalid, and the next capture creates a new random one. Eviction therefore costs misses
/// and never makes an invalidated entry valid again.
pub(crate) struct EpochTable {
    epochs: QuickCache<Arc<str>, Epoch>,
}

impl std::fmt::Debug for EpochTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochTable")
            .field("tags", &self.epochs.len())
            .field("capacity", &self.epochs.capacity())
            .finish()
    }
}

impl EpochTable {
    pub(crate) fn new(max_tags: usize) -> Self {
        Self {
            epochs: QuickCache::new(max_tags.max(1)),
        }
    }

    /// The current epoch of `tag`, created at random if it has none.
    pub(crate) fn current(&self, tag: &Tag) -> Epoch {
        match self
            .epochs
            .get_or_insert_with(tag.as_arc(), || Ok::<_, ()>(Epoch::random()))
        {
            Ok(epoch) => epoch,
            Err(()) => Epoch::random(),
        }
    }

    /// Gives `tag` a new random epoch.
    pub(crate) fn invalidate(&self, tag: &Tag) {
        self.epochs.insert(tag.as_arc().clone(), Epoch::random());
    }

    /// Whether every tag still has the recorded epoch.
    #[inline]
    pub(crate) fn valid(&self, tags: &[TagEpoch]) -> bool {
        tags.iter()
            .all(|(tag, epoch)| self.epochs.get(tag.as_str()) == Some(*epoch))
    }

    /// Number of tags with an epoch.
    pub(crate) fn len(&self) -> usize {
        self.epochs.len()
    }
}
