//! [`TieredBackend`]: decoded entries in process memory in front of Redis, kept coherent
//! by pub/sub.

use std::{
    collections::hash_map::DefaultHasher,
    fmt,
    hash::{Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use async_trait::async_trait;

use super::{
    backend::{
        Backend, Decoder, Entry, EntryMeta, Epoch, Key, KeyPrefix, LocalLookup, Tag, Value, now_ms,
    },
    error::BackendError,
    memory::MemoryBackend,
    redis::{Message, RedisBackend},
    subscription::{DEFAULT_PING_INTERVAL, Listener, Subscription},
};

/// Default for [`TieredBackendBuilder::l1_ttl`].
const DEFAULT_L1_TTL: Duration = Duration::from_secs(30);
/// Number of per-key write counters; keys share them by hash.
const STRIPES: usize = 64;

/// An in-process [`MemoryBackend`] (L1) in front of a [`RedisBackend`] (L2): L1 hits cost
/// no network and no decoding, and every instance drops its copies when any instance
/// changes Redis.
///
/// # How it stays coherent
///
/// - **Reads** are answered by L1 when it holds a valid entry. Otherwise Redis answers (one
///   round trip, tags checked there), the value is decoded once and kept in L1 with its tags.
/// - **Writes, deletions and invalidations** go to Redis, which publishes them on the
///   namespace's channel in the same round trip; every other instance's listener drops the
///   key, the keys under the prefix, or bumps the tags' local epochs, within the time a
///   message takes to cross Redis (well under a millisecond on a local network). A write
///   does not fill L1 here: the next read does, from Redis.
/// - **Races** between a read that fills L1 and a change that lands meanwhile are settled by
///   write counters (per key, and one for tags and prefixes): a fill that overlapped a change
///   is discarded, and tags are checked against the local epochs captured after the read,
///   so a message can never be overtaken by an older copy.
/// - **Safety net.** An L1 copy lives at most [`l1_ttl`](TieredBackendBuilder::l1_ttl)
///   (30 s by default), or less if the entry expires sooner, in case a message is lost. Its
///   freshness windows are cut at that point; when the fresh window is cut the copy does not
///   trigger early refresh, since Redis still holds the full lifetime.
/// - **The subscription** runs on a connection of its own, opened from the `redis::Client`
///   given to [`builder`](Self::builder) (or, with [`with_l2`](Self::with_l2), to the L2
///   handle's server or a cluster's seed nodes), when the first key of a namespace is used. It is checked with a
///   `PING` every 5 seconds ([`ping_interval`](TieredBackendBuilder::ping_interval)) and reopened with backoff (100 ms doubling to 5 s) when it drops.
///   From the moment it drops (messages may be missed) L1 is no longer trusted: reads go to
///   Redis, and fall back on the L1 copy, within its TTL, only when Redis cannot answer, so
///   an application keeps serving what it has while Redis is down. When the subscription is
///   back, L1 is flushed and fills again.
/// - **Lifetime.** The listener task ends when the last clone of the backend is dropped.
///
/// Redis's own `CLIENT TRACKING` in broadcast mode could replace the published messages.
/// This backend publishes its own instead: a message names the sender (so an instance
/// skips its own), the invalidation rides in the same pipeline as the write, and it needs
/// neither RESP3 nor a redirect connection.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use perfkit::{
///     cache::{Cache, MemoryBackend, RedisBackend, TieredBackend},
///     pool::RedisPoolBuilder,
/// };
///
/// let url = "redis://127.0.0.1:6379";
/// let handle = RedisPoolBuilder::new(url).build().await?;
/// let backend = TieredBackend::builder(RedisBackend::new(handle), redis::Client::open(url)?)
///     .l1(MemoryBackend::builder().max_entries(50_000).build())
///     .l1_ttl(Duration::from_secs(10))
///     .build();
/// let cache = Cache::builder().prefix("app").backend(backend).build()?;
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TieredBackend {
    shared: Arc<Shared>,
}

struct Shared {
    l2: RedisBackend,
    /// The invalidation subscription; while it is live, L1 may be trusted.
    subscription: Subscription<Coherence>,
    l1_ttl: Duration,
}

/// What the subscription keeps coherent.
struct Coherence {
    l1: MemoryBackend,
    /// The L2 backend's id, written in the messages it publishes.
    instance: u128,
    /// Bumped by every change of a tag, a prefix or the whole of L1.
    global: AtomicU64,
    /// Bumped by every change of a key, by the key's hash.
    stripes: [AtomicU64; STRIPES],
}

/// The write counters a fill must find unchanged.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    global: u64,
    stripe: u64,
}

impl TieredBackend {
    /// A builder over `l2`, subscribing through `client` (a connection of its own).
    pub fn builder(l2: RedisBackend, client: ::redis::Client) -> TieredBackendBuilder {
        TieredBackendBuilder {
            l2,
            clients: vec![client],
            l1: None,
            l1_ttl: DEFAULT_L1_TTL,
            ping_interval: DEFAULT_PING_INTERVAL,
        }
    }

    /// A builder over `l2`, subscribing on a connection of its own to the server of `l2`'s
    /// [`RedisHandle`](crate::pool::RedisHandle), or to one of a cluster's seed nodes (the
    /// next one when it is gone): no second URL to configure.
    pub fn with_l2(l2: RedisBackend) -> TieredBackendBuilder {
        TieredBackendBuilder {
            clients: l2.handle().pubsub_clients().to_vec(),
            l2,
            l1: None,
            l1_ttl: DEFAULT_L1_TTL,
            ping_interval: DEFAULT_PING_INTERVAL,
        }
    }

    /// Whether the invalidation subscription is up, so that L1 answers reads.
    pub fn is_subscribed(&self) -> bool {
        self.shared.subscription.is_live()
    }

    /// The in-process tier.
    pub fn l1(&self) -> &MemoryBackend {
        &self.coherence().l1
    }

    fn coherence(&self) -> &Coherence {
        self.shared.subscription.listener()
    }

    /// The Redis tier.
    pub fn l2(&self) -> &RedisBackend {
        &self.shared.l2
    }

    /// Makes sure the listener subscribes to the namespace of `storage`.
    fn want(&self, storage: &str) {
        self.shared.subscription.want(storage);
    }

    /// Keeps `entry`, just read from Redis, in L1, unless something changed since `before`.
    async fn fill(&self, key: &Key, entry: &Entry, before: Snapshot) {
        let subscription = &self.shared.subscription;
        let coherence = subscription.listener();
        if !subscription.is_live()
            || coherence.snapshot(key) != before
            || !subscription.subscribed(key.as_str())
        {
            return;
        }
        let tags: Vec<Tag> = entry.tags.iter().map(|(tag, _)| tag.clone()).collect();
        let Ok(epochs) = coherence.l1.tag_epochs(&tags).await else {
            return;
        };
        let copy = Entry {
            value: entry.value.clone(),
            meta: meta_within_ttl(entry.meta, now_ms(), self.shared.l1_ttl),
            tags: tags.into_iter().zip(epochs).collect(),
        };
        let _ = coherence.l1.set(key, copy).await;
        if !subscription.is_live() || coherence.snapshot(key) != before {
            let _ = coherence.l1.delete(key).await;
        }
    }
}

#[async_trait]
impl Backend for TieredBackend {
    async fn get(&self, key: &Key, decode: Decoder) -> Result<Option<Arc<Entry>>, BackendError> {
        self.want(key.as_str());
        let coherence = self.coherence();
        if self.shared.subscription.is_live()
            && let LocalLookup::Hit(entry) = coherence.l1.get_local(key)
        {
            return Ok(Some(entry));
        }
        let before = coherence.snapshot(key);
        match self.shared.l2.get(key, decode).await {
            Ok(Some(entry)) => {
                let Some(encoded) = entry.value.encoded() else {
                    return Ok(Some(entry));
                };
                // Bytes that do not decode go back as they are: the cache reports them and
                // deletes the key.
                let Ok(decoded) = decode(encoded) else {
                    return Ok(Some(entry));
                };
                let entry = Entry {
                    value: Value::new(decoded, encoded.clone()),
                    meta: entry.meta,
                    tags: entry.tags.clone(),
                };
                self.fill(key, &entry, before).await;
                Ok(Some(Arc::new(entry)))
            }
            Ok(None) => {
                let _ = coherence.l1.delete(key).await;
                Ok(None)
            }
            Err(error) => match coherence.l1.get_local(key) {
                LocalLookup::Hit(entry) => Ok(Some(entry)),
                _ => Err(error),
            },
        }
    }

    #[inline]
    fn get_local(&self, key: &Key) -> LocalLookup {
        if self.shared.subscription.is_live()
            && let LocalLookup::Hit(entry) = self.coherence().l1.get_local(key)
        {
            return LocalLookup::Hit(entry);
        }
        LocalLookup::Unknown
    }

    async fn set(&self, key: &Key, entry: Entry) -> Result<(), BackendError> {
        self.want(key.as_str());
        let result = self.shared.l2.set(key, entry).await;
        self.coherence().drop_key(key).await;
        result
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        let result = self.shared.l2.delete(key).await;
        self.coherence().drop_key(key).await;
        result
    }

    async fn delete_prefix(&self, prefix: &KeyPrefix) -> Result<u64, BackendError> {
        let result = self.shared.l2.delete_prefix(prefix).await;
        self.coherence().drop_prefix(prefix).await;
        result
    }

    async fn tag_epochs(&self, tags: &[Tag]) -> Result<Vec<Epoch>, BackendError> {
        if let Some(tag) = tags.first() {
            self.want(tag.as_str());
        }
        self.shared.l2.tag_epochs(tags).await
    }

    async fn invalidate_tags(&self, tags: &[Tag]) -> Result<(), BackendError> {
        let result = self.shared.l2.invalidate_tags(tags).await;
        self.coherence().drop_tags(tags).await;
        result
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.shared.l2.ping().await
    }
}

impl fmt::Debug for TieredBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredBackend")
            .field("l1", &self.coherence().l1)
            .field("l2", &self.shared.l2)
            .field("l1_ttl", &self.shared.l1_ttl)
            .field("subscribed", &self.is_subscribed())
            .finish()
    }
}

/// Builds a [`TieredBackend`].
#[derive(Debug)]
#[must_use]
pub struct TieredBackendBuilder {
    l2: RedisBackend,
    clients: Vec<::redis::Client>,
    l1: Option<MemoryBackend>,
    l1_ttl: Duration,
    ping_interval: Duration,
}

impl TieredBackendBuilder {
    /// The in-process tier, with its bounds. Defaults to [`MemoryBackend::new`] (10 000
    /// entries, 64 MiB).
    pub fn l1(mut self, l1: MemoryBackend) -> Self {
        self.l1 = Some(l1);
        self
    }

    /// The longest an entry stays in L1 after it was read from Redis, the safety net should
    /// an invalidation message be lost. Defaults to 30 seconds; zero is raised to 1 ms.
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// How often the idle subscription is checked with a `PING`, so that a connection lost
    /// without a word (a silent network, a server that hangs) is noticed and reopened.
    /// Defaults to 5 seconds; zero is raised to 1 ms.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Builds the backend. The subscription opens when the first key is used, inside a
    /// Tokio runtime.
    pub fn build(self) -> TieredBackend {
        let coherence = Coherence {
            l1: self.l1.unwrap_or_default(),
            instance: self.l2.instance(),
            global: AtomicU64::new(0),
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        TieredBackend {
            shared: Arc::new(Shared {
                l2: self.l2,
                subscription: Subscription::new(
                    coherence,
                    self.clients,
                    self.ping_interval,
                    "reads go to Redis until it is back",
                ),
                l1_ttl: self.l1_ttl,
            }),
        }
    }
}

impl Coherence {
    fn stripe(&self, key: &str) -> &AtomicU64 {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        &self.stripes[(hasher.finish() % STRIPES as u64) as usize]
    }

    fn snapshot(&self, key: &Key) -> Snapshot {
        Snapshot {
            global: self.global.load(SeqCst),
            stripe: self.stripe(key.as_str()).load(SeqCst),
        }
    }

    // Each change bumps its counter before touching L1, so a fill that read the counter
    // before the bump discards itself, and one that read it after captured the new state.

    async fn drop_key(&self, key: &Key) {
        self.stripe(key.as_str()).fetch_add(1, SeqCst);
        let _ = self.l1.delete(key).await;
    }

    async fn drop_prefix(&self, prefix: &KeyPrefix) {
        self.global.fetch_add(1, SeqCst);
        let _ = self.l1.delete_prefix(prefix).await;
    }

    async fn drop_tags(&self, tags: &[Tag]) {
        self.global.fetch_add(1, SeqCst);
        let _ = self.l1.invalidate_tags(tags).await;
    }

    async fn flush(&self) {
        self.global.fetch_add(1, SeqCst);
        let _ = self
            .l1
            .delete_prefix(&KeyPrefix::from_storage(String::new()))
            .await;
    }
}

impl Listener for Coherence {
    /// Applies a message from another instance.
    async fn apply(&self, payload: &[u8]) {
        match Message::decode(payload) {
            Some((sender, _)) if sender == self.instance => {}
            Some((_, Message::Key(key))) => self.drop_key(&Key::from_arc(key.into())).await,
            Some((_, Message::Prefix(prefix))) => {
                self.drop_prefix(&KeyPrefix::from_storage(prefix)).await;
            }
            Some((_, Message::Tags(tags))) => {
                let tags: Vec<Tag> = tags
                    .into_iter()
                    .map(|tag| Tag::from_arc(tag.into()))
                    .collect();
                self.drop_tags(&tags).await;
            }
            // Something else publishes on the channel: drop everything rather than guess.
            None => self.flush().await,
        }
    }

    /// Anything may have changed while the subscription was down: L1 starts empty.
    async fn resync(&self) {
        self.flush().await;
    }

    /// L1 stops answering (the subscription is no longer live); fills in flight discard
    /// themselves.
    fn lost(&self) {
        self.global.fetch_add(1, SeqCst);
    }
}

/// `meta` with every window ending by `now + ttl`; a cut fresh window loses its compute
/// time, so the copy does not trigger early refresh.
fn meta_within_ttl(meta: EntryMeta, now: u64, ttl: Duration) -> EntryMeta {
    let limit = now.saturating_add(ttl.as_millis() as u64);
    EntryMeta {
        fresh_until: meta.fresh_until.min(limit),
        stale_while_revalidate_until: meta.stale_while_revalidate_until.min(limit),
        stale_if_error_until: meta.stale_if_error_until.min(limit),
        compute_ms: if meta.fresh_until > limit {
            0
        } else {
            meta.compute_ms
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_copies_are_cut_at_the_l1_ttl() {
        let meta = EntryMeta {
            fresh_until: 100_000,
            stale_while_revalidate_until: 200_000,
            stale_if_error_until: 100_000,
            compute_ms: 20,
        };
        let cut_meta = meta_within_ttl(meta, 1_000, Duration::from_secs(30));
        assert_eq!(cut_meta.expires_at(), 31_000);
        assert_eq!(cut_meta.compute_ms, 0);
        let short = meta_within_ttl(meta, 90_000, Duration::from_secs(30));
        assert_eq!(short.fresh_until, 100_000);
        assert_eq!(short.stale_while_revalidate_until, 120_000);
        assert_eq!(short.compute_ms, 20);
    }
}
