//! The in-process backend.

use std::sync::Arc;

use async_trait::async_trait;
use quick_cache::{Weighter, sync::Cache as QuickCache};

use super::{
    backend::{Backend, Decoder, Entry, Epoch, Key, KeyPrefix, LocalLookup, Tag, now_ms},
    error::BackendError,
    tags::EpochTable,
};

/// Default bound on the number of entries.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Default bound on the weight of the entries, in bytes.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default bound on the number of tags with an epoch.
pub const DEFAULT_MAX_TAGS: usize = 100_000;

/// An entry as the store keeps it, with its weight computed once.
#[derive(Clone)]
struct Slot {
    entry: Arc<Entry>,
    weight: u64,
}

/// Weighs a slot by its bytes, but never below `max_bytes / max_entries`: the total weight
/// stays under `max_bytes`, so both the byte bound and the entry bound hold.
#[derive(Clone)]
struct SlotWeighter {
    floor: u64,
}

impl Weighter<Arc<str>, Slot> for SlotWeighter {
    fn weight(&self, _key: &Arc<str>, slot: &Slot) -> u64 {
        slot.weight.max(self.floor)
    }
}

/// Entries in process memory, kept decoded: a hit clones the value out and never
/// deserializes.
///
/// Bounded by entry count and by bytes (an entry weighs its encoded size plus its key and
/// tags, measured once when it is stored). Eviction is quick_cache's CLOCK-Pro, chosen by
/// measurement over moka (see the [module docs](super#memory-backend)). Expiry is checked on every read against
/// [`now_ms`]; an expired entry is removed when read and otherwise leaves by eviction.
/// Tag epochs live in a table bounded separately
/// ([`max_tags`](MemoryBackendBuilder::max_tags)); a tag evicted from it counts as
/// invalidated.
///
/// Cloning is cheap and shares the entries.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

struct Inner {
    entries: QuickCache<Arc<str>, Slot, SlotWeighter>,
    epochs: EpochTable,
    max_entries: usize,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.inner.entries.len())
            .field("max_entries", &self.inner.max_entries)
            .field("weight", &self.inner.entries.weight())
            .field("max_bytes", &self.inner.max_bytes)
            .field("epochs", &self.inner.epochs)
            .finish()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A backend with the default bounds.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set the bounds.
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder::new()
    }

    /// Number of entries held (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// Total weight of the entries held, in bytes.
    pub fn weight(&self) -> u64 {
        self.inner.entries.weight()
    }

    /// Number of tags with an epoch.
    pub fn tags_len(&self) -> usize {
        self.inner.epochs.len()
    }

    #[inline]
    fn lookup(&self, key: &Key) -> Option<Arc<Entry>> {
        let slot = self.inner.entries.get(key.as_str())?;
        if slot.entry.meta.expires_at() <= now_ms() || !self.inner.epochs.valid(&slot.entry.tags) {
            self.inner
                .entries
                .remove_if(key.as_str(), |held| Arc::ptr_eq(&held.entry, &slot.entry));
            return None;
        }
        Some(slot.entry)
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &Key, _decode: Decoder) -> Result<Option<Arc<Entry>>, BackendError> {
        Ok(self.lookup(key))
    }

    #[inline]
    fn get_local(&self, key: &Key) -> LocalLookup {
        match self.lookup(key) {
            Some(entry) => LocalLookup::Hit(entry),
            None => LocalLookup::Miss,
        }
    }

    async fn set(&self, key: &Key, entry: Entry) -> Result<(), BackendError> {
        let weight = entry.weight(key) as u64;
        let entry = match entry.value.decoded() {
            Some(_) => Entry {
                value: entry.value.without_encoded(),
                ..entry
            },
            None => entry,
        };
        self.inner.entries.insert(
            key.as_arc().clone(),
            Slot {
                entry: Arc::new(entry),
                weight,
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.inner.entries.remove(key.as_str());
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &KeyPrefix) -> Result<u64, BackendError> {
        let keys: Vec<Arc<str>> = self
            .inner
            .entries
            .iter()
            .filter(|(key, _)| key.starts_with(prefix.as_str()))
            .map(|(key, _)| key)
            .collect();
        let mut removed = 0;
        for key in keys {
            if self.inner.entries.remove(&*key).is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn tag_epochs(&self, tags: &[Tag]) -> Result<Vec<Epoch>, BackendError> {
        Ok(tags
            .iter()
            .map(|tag| self.inner.epochs.current(tag))
            .collect())
    }

    async fn invalidate_tags(&self, tags: &[Tag]) -> Result<(), BackendError> {
        for tag in tags {
            self.inner.epochs.invalidate(tag);
        }
        Ok(())
    }
}

/// Builds a [`MemoryBackend`].
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryBackendBuilder {
    max_entries: usize,
    max_bytes: u64,
    max_tags: usize,
}

impl Default for MemoryBackendBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackendBuilder {
    /// A builder with the default bounds.
    pub fn new() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_tags: DEFAULT_MAX_TAGS,
        }
    }

    /// Most entries held at once. Defaults to 10 000; 0 counts as 1.
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max.max(1);
        self
    }

    /// Most bytes held at once, by the entries' weights. Defaults to 64 MiB; 0 counts as 1.
    ///
    /// An entry heavier than what one shard of the store holds is not kept.
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = max.max(1);
        self
    }

    /// Most tags with an epoch. Defaults to 100 000; 0 counts as 1. A tag evicted from the
    /// table counts as invalidated: keep this above the number of tags in use.
    pub fn max_tags(mut self, max: usize) -> Self {
        self.max_tags = max.max(1);
        self
    }

    /// Builds the backend.
    pub fn build(self) -> MemoryBackend {
        let floor = (self.max_bytes / self.max_entries as u64).max(1);
        let entries =
            QuickCache::with_weighter(self.max_entries, self.max_bytes, SlotWeighter { floor });
        MemoryBackend {
            inner: Arc::new(Inner {
                entries,
                epochs: EpochTable::new(self.max_tags),
                max_entries: self.max_entries,
                max_bytes: self.max_bytes,
            }),
        }
    }
}
