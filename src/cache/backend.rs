//! The storage interface under [`Cache`](super::Cache): entries, tag epochs and keys.

use std::{
    any::Any,
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;

use super::error::{BackendError, CodecError};

/// A decoded value as a backend keeps it: type-erased, shared, cloned out by the typed API.
pub type AnyValue = Arc<dyn Any + Send + Sync>;

/// Turns encoded bytes (header included) into a decoded value of the type the caller asked
/// for.
///
/// [`Cache`](super::Cache) passes one with every read; a backend that keeps decoded values
/// in process (a tiered L1) uses it to decode what it fetched from a remote store once,
/// before keeping it. It is a plain function pointer: passing it costs nothing.
pub type Decoder = fn(&[u8]) -> Result<AnyValue, CodecError>;

/// The current epoch of a tag: a random 128-bit value.
///
/// An entry records the epochs of its tags as they were before its value was computed; it
/// is valid while every one of them is still current. Invalidating a tag replaces its epoch
/// with a fresh random one, which makes every entry recorded under the old one invalid at
/// once.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(u128);

impl Epoch {
    /// A new random epoch.
    pub fn random() -> Self {
        Self(fastrand::u128(..))
    }

    /// The epoch with this value.
    pub const fn from_u128(value: u128) -> Self {
        Self(value)
    }

    /// The epoch's value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The epoch as 16 big-endian bytes, the form stored by remote backends.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The epoch from 16 big-endian bytes; `None` unless `bytes` has exactly 16.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 16] = bytes.try_into().ok()?;
        Some(Self(u128::from_be_bytes(bytes)))
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({:032x})", self.0)
    }
}

/// A namespaced storage key, built by [`Cache`](super::Cache) from the caller's key.
///
/// The storage form is `{namespace}:k:<key>`: the namespace is a Redis hash tag, so every
/// key and tag of one cache lives in one cluster slot and one script may touch them
/// together. Keys longer than a bound, or holding characters outside a small safe set
/// (whitespace, control characters, glob characters `*?[]\`, braces, `#`, non-ASCII), are
/// stored as their safe leading part, `#`, and a SHA-256 digest of the whole key: the
/// storage form never contains a glob character, so it is safe to put in a `SCAN MATCH`
/// pattern after the namespace.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(Arc<str>);

impl Key {
    #[cfg(test)]
    pub(crate) fn from_storage(storage: String) -> Self {
        Self(storage.into())
    }

    pub(crate) fn from_arc(storage: Arc<str>) -> Self {
        Self(storage)
    }

    /// The storage form, namespace included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The storage form as a shared string.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A namespaced key prefix for [`Backend::delete_prefix`].
///
/// Its storage form is `{namespace}:k:<safe part>`: the prefix the caller gave, cut at its
/// first character that keys would hash (and at the key bound). Every storage key that
/// starts with it must be deleted; because the cut can only make it shorter, that is a
/// superset of the keys starting with the caller's prefix. It never contains a glob
/// character.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(Arc<str>);

impl KeyPrefix {
    pub(crate) fn from_storage(storage: String) -> Self {
        Self(storage.into())
    }

    /// The storage form, namespace included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A namespaced tag, in the storage form `{namespace}:t:<tag>` (hashed like keys).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tag(Arc<str>);

impl Tag {
    pub(crate) fn from_arc(storage: Arc<str>) -> Self {
        Self(storage)
    }

    /// The storage form, namespace included; also the name of the tag's epoch key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The storage form as a shared string.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A cached value, in one or both of its forms.
#[derive(Clone)]
pub struct Value {
    decoded: Option<AnyValue>,
    encoded: Option<Bytes>,
}

impl Value {
    /// A value from both forms; [`Cache::set`](super::Cache::set) hands these to
    /// [`Backend::set`], so each backend keeps the form it wants.
    pub fn new(decoded: AnyValue, encoded: Bytes) -> Self {
        Self {
            decoded: Some(decoded),
            encoded: Some(encoded),
        }
    }

    /// A value known only decoded.
    pub fn from_decoded(decoded: AnyValue) -> Self {
        Self {
            decoded: Some(decoded),
            encoded: None,
        }
    }

    /// A value known only as codec bytes (header included), as read from a remote store.
    pub fn from_encoded(encoded: Bytes) -> Self {
        Self {
            decoded: None,
            encoded: Some(encoded),
        }
    }

    /// The decoded form, if present.
    pub fn decoded(&self) -> Option<&AnyValue> {
        self.decoded.as_ref()
    }

    /// The codec bytes (header included), if present.
    pub fn encoded(&self) -> Option<&Bytes> {
        self.encoded.as_ref()
    }

    /// This value without its encoded form (what an in-process store keeps).
    #[must_use]
    pub fn without_encoded(&self) -> Self {
        Self {
            decoded: self.decoded.clone(),
            encoded: None,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("decoded", &self.decoded.is_some())
            .field("encoded_len", &self.encoded.as_ref().map(Bytes::len))
            .finish()
    }
}

/// Freshness of an entry, in milliseconds since the Unix epoch by the writer's clock.
///
/// - before `fresh_until` the entry is fresh (served; early refresh may start);
/// - before `stale_while_revalidate_until` it may be served stale while one background
///   task recomputes it;
/// - before `stale_if_error_until` it may be served stale when recomputing it fails;
/// - after [`EntryMeta::expires_at`] (the latest of the three) it is gone: a backend must
///   not return it, and should let its storage expire it then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EntryMeta {
    /// End of the fresh period.
    pub fresh_until: u64,
    /// End of the stale-while-revalidate window (`fresh_until` when there is none).
    pub stale_while_revalidate_until: u64,
    /// End of the stale-if-error window (`fresh_until` when there is none).
    pub stale_if_error_until: u64,
    /// How long the value took to compute, in milliseconds (the XFetch delta; 0 for a
    /// plain `set`).
    pub compute_ms: u32,
}

impl EntryMeta {
    /// When the entry stops being servable in any way: the latest of its windows.
    pub fn expires_at(&self) -> u64 {
        self.fresh_until
            .max(self.stale_while_revalidate_until)
            .max(self.stale_if_error_until)
    }
}

/// What a tag's epoch was when the entry's value began to be computed.
pub type TagEpoch = (Tag, Epoch);

/// One cached entry: the value, its freshness, and the epochs of its tags.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The value.
    pub value: Value,
    /// Freshness windows.
    pub meta: EntryMeta,
    /// The entry's tags with their epochs captured before the value was computed.
    pub tags: Box<[TagEpoch]>,
}

impl Entry {
    /// Bytes this entry weighs in a bounded store: the encoded length when known, plus the
    /// key and tag names and a fixed overhead.
    pub fn weight(&self, key: &Key) -> usize {
        const OVERHEAD: usize = 96;
        let value = self.value.encoded().map_or(64, Bytes::len);
        let tags: usize = self
            .tags
            .iter()
            .map(|(tag, _)| tag.as_str().len() + 32)
            .sum();
        OVERHEAD + key.as_str().len() + value + tags
    }
}

/// A read answered in process, without awaiting: see [`Backend::get_local`].
#[derive(Debug)]
pub enum LocalLookup {
    /// A valid entry (tags current, not past [`EntryMeta::expires_at`]).
    Hit(Arc<Entry>),
    /// Definitely absent or invalid: no need to call [`Backend::get`].
    Miss,
    /// Not known in process: call [`Backend::get`].
    Unknown,
}

/// Where a [`Cache`](super::Cache) keeps its entries and tag epochs.
///
/// # Contract
///
/// - **Tags by epochs.** [`tag_epochs`](Backend::tag_epochs) returns the current epoch of
///   each tag, creating a random one for a tag that has none.
///   [`invalidate_tags`](Backend::invalidate_tags) replaces each tag's epoch with a new
///   random one (or removes it), one write per tag, and returns only when that is done.
///   [`get`](Backend::get) and [`get_local`](Backend::get_local) return an entry only if
///   every tag it records still has the recorded epoch; a tag whose epoch is missing
///   (evicted, flushed) counts as invalidated. A backend must never recreate a missing
///   epoch with an old value.
/// - **Expiry.** An entry is never returned after `now >= meta.expires_at()`, where `now`
///   is [`now_ms`] (milliseconds since the Unix epoch; tests pausing tokio's clock move it).
///   The caller decides between fresh and stale; the backend only drops what is expired.
/// - **Errors** are reported, never panicked; the cache turns errors of reads and writes
///   into misses and skipped writes, and returns errors of invalidations to its caller.
/// - Every method may be called concurrently from many tasks.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Reads the entry under `key`, checking its tags and expiry (see the contract).
    ///
    /// The returned value may be decoded or encoded; `decode` turns encoded bytes into the
    /// caller's type for a backend that wants to keep the decoded form.
    async fn get(&self, key: &Key, decode: Decoder) -> Result<Option<Arc<Entry>>, BackendError>;

    /// Answers a read from process memory without awaiting, when the backend can.
    ///
    /// The default is [`LocalLookup::Unknown`]; in-process stores answer every read here,
    /// which spares the hot path a boxed future.
    fn get_local(&self, key: &Key) -> LocalLookup {
        let _ = key;
        LocalLookup::Unknown
    }

    /// Stores `entry` under `key`, replacing what is there, until `entry.meta.expires_at()`.
    async fn set(&self, key: &Key, entry: Entry) -> Result<(), BackendError>;

    /// Removes the entry under `key`, if any.
    async fn delete(&self, key: &Key) -> Result<(), BackendError>;

    /// Removes every entry whose storage key starts with `prefix`; returns how many.
    ///
    /// This visits every key (memory: an iteration; Redis: a non-blocking `SCAN`), so it
    /// costs O(keys).
    async fn delete_prefix(&self, prefix: &KeyPrefix) -> Result<u64, BackendError>;

    /// The current epochs of `tags`, in order, creating random ones for tags without one.
    async fn tag_epochs(&self, tags: &[Tag]) -> Result<Vec<Epoch>, BackendError>;

    /// Replaces the epoch of every tag in `tags`: entries recorded under the old epochs are
    /// never returned again.
    async fn invalidate_tags(&self, tags: &[Tag]) -> Result<(), BackendError>;

    /// Checks that the store behind the backend answers, for a health check.
    ///
    /// The default answers `Ok` at once: an in-process store is always up. A remote store
    /// sends one cheap command (Redis: `PING`) under its own deadline.
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Milliseconds since the Unix epoch by the cache's clock.
///
/// It is the system clock at the first call plus the time elapsed since on tokio's clock,
/// so tests that pause and advance tokio's time move it too. Backends check expiry
/// against it.
pub fn now_ms() -> u64 {
    use std::sync::OnceLock;
    static BASE: OnceLock<(u64, tokio::time::Instant)> = OnceLock::new();
    let (wall, instant) = *BASE.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (wall, tokio::time::Instant::now())
    });
    wall + tokio::time::Instant::now()
        .saturating_duration_since(instant)
        .as_millis() as u64
}
