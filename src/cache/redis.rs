//! [`RedisBackend`]: entries and tag epochs in Redis, one round trip per operation.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use crate::{
    breaker::Breaker,
    log_gate::{LOG_INTERVAL, LogGate},
};

use super::{
    backend::{
        Backend, Decoder, Entry, EntryMeta, Epoch, Key, KeyPrefix, Tag, TagEpoch, Value, now_ms,
    },
    error::BackendError,
    subscription::{DEFAULT_PING_INTERVAL, Subscription, channel, namespace_of},
    tracked::TrackedEpochs,
};
use crate::pool::{RedisHandle, SharedConnection};

/// Name the backend reports in its errors.
const NAME: &str = "redis";

/// First byte of every entry this backend writes: the entry layout, version 1.
const LAYOUT_V1: u8 = 0xE1;
/// Bytes before the first tag: layout byte, three `u64` windows, `u32` compute time and the
/// `u16` tag count.
const FIXED_HEADER: usize = 1 + 8 * 3 + 4 + 2;

/// Reads an entry and checks its tags' epochs in one step (see [`RedisBackend`]).
///
/// Returns the stored bytes when every tag's epoch key holds the recorded epoch, nil when
/// the entry is absent or one epoch differs or is missing (the entry is then unlinked), and
/// `0` when the bytes are not an entry of this layout (also unlinked).
const GET_SCRIPT: &str = r"
local blob = redis.pcall('GET', KEYS[1])
if type(blob) == 'table' then
  redis.call('UNLINK', KEYS[1])
  return 0
end
if not blob then return false end
local len = #blob
if len < 31 or string.byte(blob, 1) ~= 225 then
  redis.call('UNLINK', KEYS[1])
  return 0
end
local count = string.byte(blob, 30) * 256 + string.byte(blob, 31)
local pos = 32
for i = 1, count do
  if pos + 1 > len then
    redis.call('UNLINK', KEYS[1])
    return 0
  end
  local name_end = pos + 1 + string.byte(blob, pos) * 256 + string.byte(blob, pos + 1)
  local epoch_end = name_end + 16
  if epoch_end > len then
    redis.call('UNLINK', KEYS[1])
    return 0
  end
  local current = redis.pcall('GET', string.sub(blob, pos + 2, name_end))
  if current ~= string.sub(blob, name_end + 1, epoch_end) then
    redis.call('UNLINK', KEYS[1])
    return false
  end
  pos = epoch_end + 1
end
return blob
";

/// Returns the current epoch of every tag key in `KEYS`, creating the missing ones (and
/// replacing any that is not 16 bytes) with the candidates in `ARGV[2..]`; `ARGV[1]` is the
/// epoch keys' time to live in milliseconds, `0` for none, refreshed on every call.
const EPOCHS_SCRIPT: &str = r"
local ttl = tonumber(ARGV[1])
local epochs = {}
for i, key in ipairs(KEYS) do
  local epoch = redis.pcall('GET', key)
  if type(epoch) ~= 'string' or #epoch ~= 16 then
    epoch = ARGV[i + 1]
    if ttl > 0 then
      redis.call('SET', key, epoch, 'PX', ttl)
    else
      redis.call('SET', key, epoch)
    end
  elseif ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
  epochs[i] = epoch
end
return epochs
";

/// Default for [`RedisBackend::deadline`].
const DEFAULT_DEADLINE: Duration = Duration::from_millis(100);
/// Default for [`RedisBackend::retry_interval`].
const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// Default for [`RedisBackend::epoch_ttl`].
const DEFAULT_EPOCH_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Default for [`RedisBackend::scan_count`].
const DEFAULT_SCAN_COUNT: usize = 1000;
/// Most tag epochs a backend tracking epochs keeps (see [`RedisBackend::track_epochs`]).
const TRACKED_TAGS: usize = 100_000;
/// Age after which a tracked epoch is read from Redis again.
const TRACKED_MAX_AGE: Duration = Duration::from_secs(60);

/// A [`Backend`] that keeps entries and tag epochs in Redis, over perfkit's multiplexed
/// [`RedisHandle`].
///
/// # Storage
///
/// Every key starts with the cache's namespace as a hash tag (`{namespace}:k:<key>` for
/// entries, `{namespace}:t:<tag>` for tag epochs), so the keys one script touches share a
/// cluster slot. An entry is one string: a fixed header (a layout byte, the freshness
/// windows, the compute time), its tags' storage names each with the 16-byte epoch it
/// recorded, then the codec bytes of the value. The header is what lets the read script
/// find the tags without decoding the value. Entries are written with `PX`, expiring when
/// their last freshness window ends.
///
/// # Guarantees
///
/// - **One round trip per read.** [`get`](Backend::get) is a single `EVALSHA` of a Lua
///   script that reads the entry and the current epoch of each of its tags and returns the
///   entry only if all of them still hold the recorded epoch. An entry that fails (an
///   invalidated tag, or an epoch key that is gone: evicted, flushed, expired) is unlinked
///   by the script and read as a miss, so eviction can cost a miss but never serve stale
///   data. The script reads the tag keys named inside the entry, which is why they must
///   share its slot; `redis::Script` reloads the script after `SCRIPT FLUSH` or a failover.
/// - **One round trip per write.** [`set`](Backend::set) is `SET .. PX` and a `PUBLISH`,
///   pipelined; [`tag_epochs`](Backend::tag_epochs) is one script that reads each epoch and
///   creates the missing ones; [`invalidate_tags`](Backend::invalidate_tags) writes one new
///   random epoch per tag, with no per-tag index of keys, whatever the number of entries
///   under the tag, and publishes the tags.
/// - **Epoch keys** live for [`epoch_ttl`](Self::epoch_ttl) (7 days by default), refreshed
///   whenever an entry records them: a tag in use never loses its epoch while entries with
///   shorter lifetimes depend on it, and tags nobody uses any more leave Redis by themselves.
///   An epoch key that expires or is evicted counts as invalidated.
/// - **Bytes that are not an entry** (another program wrote the key, or the value is not a
///   string) are a miss, logged (at most one line per 10 seconds), and the key is unlinked by the read
///   script. Entry bytes whose value does not decode are reported by the cache, which
///   deletes the key through [`delete`](Backend::delete).
/// - **A slow or absent Redis** fails each call after the [`deadline`](Self::deadline)
///   (100 ms by default) instead of stalling the request: the cache reads a miss, skips the
///   write, or reports the failed invalidation to its caller.
/// - **A Redis known to be down costs nothing.** Once a call fails for want of the server
///   (refused, dropped, reconnecting, or past the deadline), every call fails at once for
///   the [`retry_interval`](Self::retry_interval) (200 ms by default); then one call tries
///   Redis again while the others keep failing fast, and the first answer puts every call
///   back on Redis. An outage therefore costs each request microseconds rather than a
///   deadline per call, and a [`TieredBackend`](super::TieredBackend) answers from its L1
///   copies at in-process speed meanwhile. Errors the server answers with (a wrong type, a
///   script error) do not count: the server is up.
/// - **Prefix deletion** ([`delete_prefix`](Backend::delete_prefix)) walks the namespace
///   with a non-blocking `SCAN` and `UNLINK`s the matches page by page: it costs O(keys in
///   the database), each step under the deadline.
///
/// Deletions, writes and invalidations are also published on the namespace's channel
/// (`{namespace}:l1`), for the in-process copies of [`TieredBackend`](super::TieredBackend)s
/// and the tracked epochs of other instances.
///
/// # Tracked epochs
///
/// With [`track_epochs`](Self::track_epochs), a read is a plain `GET` of the entry and a
/// comparison of its recorded epochs with a local table of the epochs this instance has
/// seen; an epoch the table does not hold (first use, evicted, older than a minute) is read
/// with one `MGET` and kept. The table learns of invalidations from the namespace's
/// channel, which this backend then subscribes to. What is guaranteed:
///
/// - **On the instance that invalidates**, once [`invalidate_tags`](Backend::invalidate_tags)
///   has returned, no read serves a value computed before it: the call forgets the tags'
///   epochs itself, and a read that fetched an epoch while a change landed does not keep it.
/// - **On other instances**, within the time the invalidation message takes to arrive
///   (`tests/cache_redis.rs` measures it under 250 ms with a margin; on loopback it is well
///   under a millisecond). The read script has no such window, which is why tracking is
///   an option and not the default.
/// - **While the subscription is down** (not yet open, dropped, reopening), reads go
///   through the read script, as without tracking, and the table is emptied when the
///   subscription is back, since messages may have been missed.
/// - The table is bounded (100 000 tags); eviction costs an `MGET`, never a stale hit. An
///   entry whose tag was invalidated is a miss but stays in Redis until it is overwritten or
///   expires (the read script unlinks it).
///
/// On a Redis Cluster the namespace's hash tag keeps an entry and its tags' epoch keys in
/// one slot, so the read script works there too; tracking saves its cost in either case.
/// Figures: BENCHMARKS.md, "Cache", "Tracked epochs".
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use perfkit::{cache::RedisBackend, pool::RedisPoolBuilder};
///
/// let handle = RedisPoolBuilder::new("redis://127.0.0.1:6379").build().await?;
/// let backend = RedisBackend::new(handle).deadline(Duration::from_millis(50));
/// # let _ = backend;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    handle: RedisHandle,
    conn: SharedConnection,
    deadline: Duration,
    retry_interval: Duration,
    /// Whether Redis is known to be down, in ms on [`now_ms`]'s clock.
    breaker: Breaker,
    epoch_ttl: Option<Duration>,
    scan_count: usize,
    /// Written in every published message, so a tiered backend skips its own.
    instance: u128,
    get_script: Script,
    epochs_script: Script,
    corrupt_log: LogGate,
    /// The tag epochs seen, when reads validate tags locally.
    tracked: Option<Subscription<TrackedEpochs>>,
}

impl Inner {
    fn tracking(instance: u128, handle: &RedisHandle) -> Subscription<TrackedEpochs> {
        Subscription::new(
            TrackedEpochs::new(instance, TRACKED_TAGS, TRACKED_MAX_AGE),
            handle.pubsub_clients().to_vec(),
            DEFAULT_PING_INTERVAL,
            "reads check tags in Redis until it is back",
        )
    }
}

impl RedisBackend {
    /// A backend over `handle`, with the default settings.
    pub fn new(handle: RedisHandle) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: handle.connection(),
                handle,
                deadline: DEFAULT_DEADLINE,
                retry_interval: DEFAULT_RETRY_INTERVAL,
                breaker: Breaker::new(millis(DEFAULT_RETRY_INTERVAL)),
                epoch_ttl: Some(DEFAULT_EPOCH_TTL),
                scan_count: DEFAULT_SCAN_COUNT,
                instance: fastrand::u128(..),
                get_script: Script::new(GET_SCRIPT),
                epochs_script: Script::new(EPOCHS_SCRIPT),
                corrupt_log: LogGate::new(LOG_INTERVAL),
                tracked: None,
            }),
        }
    }

    /// Validates a read's tags against a local table of the epochs this backend has seen,
    /// kept current by the namespace's invalidation channel, instead of in Redis: a hit is
    /// then one plain `GET` and a comparison in memory (see "Tracked epochs" above).
    ///
    /// Off by default. The subscription opens on its own connection (to the server, or to
    /// a seed node of a cluster) when the first key of a namespace is read; until it is up,
    /// and whenever it drops, reads run the read script as without tracking.
    #[must_use]
    pub fn track_epochs(self, enabled: bool) -> Self {
        self.with(|inner| {
            inner.tracked = enabled.then(|| Inner::tracking(inner.instance, &inner.handle));
        })
    }

    /// Whether reads validate tags against tracked epochs right now: tracking is on and
    /// its subscription is up.
    pub fn is_tracking(&self) -> bool {
        self.inner
            .tracked
            .as_ref()
            .is_some_and(Subscription::is_live)
    }

    /// How long one call to Redis may take before it fails, so that a hung server costs a
    /// request at most this much. A `SCAN` walk in
    /// [`delete_prefix`](Backend::delete_prefix) applies it to each page.
    ///
    /// Defaults to 100 milliseconds. A zero duration is raised to 1 millisecond.
    #[must_use]
    pub fn deadline(self, deadline: Duration) -> Self {
        self.with(|inner| inner.deadline = deadline.max(Duration::from_millis(1)))
    }

    /// How long every call fails at once after Redis failed for want of the server, before
    /// one call tries it again (see "A Redis known to be down costs nothing" above).
    ///
    /// Defaults to 200 milliseconds; zero tries Redis on every call, each waiting up to the
    /// [`deadline`](Self::deadline) while it is down.
    #[must_use]
    pub fn retry_interval(self, interval: Duration) -> Self {
        self.with(|inner| {
            inner.retry_interval = interval;
            inner.breaker = Breaker::new(millis(interval));
        })
    }

    /// Whether Redis failed the last time it was tried, so calls fail at once until a retry
    /// answers.
    pub fn is_down(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// How long a tag's epoch key lives after an entry last recorded it or an invalidation
    /// replaced it; `None` keeps epoch keys for ever.
    ///
    /// An entry whose tag's epoch key expired is a miss, so keep this longer than the
    /// longest entry lifetime. Defaults to 7 days.
    #[must_use]
    pub fn epoch_ttl(self, ttl: impl Into<Option<Duration>>) -> Self {
        let ttl = ttl.into().map(|ttl| ttl.max(Duration::from_millis(1)));
        self.with(|inner| inner.epoch_ttl = ttl)
    }

    /// The `COUNT` hint of each `SCAN` page in [`delete_prefix`](Backend::delete_prefix).
    ///
    /// Defaults to 1000. Zero is raised to 1.
    #[must_use]
    pub fn scan_count(self, count: usize) -> Self {
        self.with(|inner| inner.scan_count = count.max(1))
    }

    /// The handle this backend sends its commands on.
    pub fn handle(&self) -> &RedisHandle {
        &self.inner.handle
    }

    /// Applies `change` to the settings; clones them first if the backend is shared.
    fn with(mut self, change: impl FnOnce(&mut Inner)) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            change(inner);
            return self;
        }
        let instance = fastrand::u128(..);
        let mut inner = Inner {
            handle: self.inner.handle.clone(),
            conn: self.inner.conn.clone(),
            deadline: self.inner.deadline,
            retry_interval: self.inner.retry_interval,
            breaker: Breaker::new(millis(self.inner.retry_interval)),
            epoch_ttl: self.inner.epoch_ttl,
            scan_count: self.inner.scan_count,
            instance,
            get_script: Script::new(GET_SCRIPT),
            epochs_script: Script::new(EPOCHS_SCRIPT),
            corrupt_log: LogGate::new(LOG_INTERVAL),
            tracked: self
                .inner
                .tracked
                .as_ref()
                .map(|_| Inner::tracking(instance, &self.inner.handle)),
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The id written in the messages this backend publishes.
    pub(super) fn instance(&self) -> u128 {
        self.inner.instance
    }
}

impl Inner {
    /// Runs `command` on the multiplexed connection under the deadline; fails at once while
    /// Redis is known to be down.
    async fn call<T, F, Fut>(&self, command: F) -> Result<T, BackendError>
    where
        F: FnOnce(SharedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.breaker.skip(now_ms()) {
            return Err(self.known_down());
        }
        self.tried(tokio::time::timeout(self.deadline, command(self.conn.clone())).await)
    }

    /// Records what a call that reached for Redis found, and turns it into the result.
    fn tried<T>(
        &self,
        outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, BackendError> {
        let error = match outcome {
            Ok(Ok(value)) => {
                self.answered();
                return Ok(value);
            }
            Ok(Err(error)) if !unreachable(&error) => {
                self.answered();
                return Err(BackendError::new(NAME, error));
            }
            Ok(Err(error)) => BackendError::new(NAME, error),
            Err(_) => self.timed_out(),
        };
        if !self.breaker.is_open() {
            tracing::debug!(
                %error,
                retry_ms = millis(self.retry_interval),
                "cache backend redis failed; calls fail at once until a retry answers"
            );
        }
        self.breaker.failed(now_ms());
        Err(error)
    }

    fn answered(&self) {
        if self.breaker.succeeded() {
            tracing::info!("cache backend redis answers again");
        }
    }

    fn known_down(&self) -> BackendError {
        BackendError::new(
            NAME,
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!(
                    "Redis failed moments ago; calls fail at once until one of them, every {:?}, \
                     finds it answering",
                    self.retry_interval
                ),
            ),
        )
    }

    fn timed_out(&self) -> BackendError {
        BackendError::new(
            NAME,
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer within {:?}; raise RedisBackend::deadline if the server is slow \
                     rather than gone",
                    self.deadline
                ),
            ),
        )
    }

    fn epoch_ttl_ms(&self) -> u64 {
        self.epoch_ttl.map_or(0, |ttl| ttl.as_millis() as u64)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &Key, _decode: Decoder) -> Result<Option<Arc<Entry>>, BackendError> {
        if let Some(tracked) = &self.inner.tracked
            && tracked.want_live(key.as_str())
            && let Some(read) = self.get_tracked(key, tracked.listener()).await
        {
            return read;
        }
        self.get_scripted(key).await
    }

    async fn set(&self, key: &Key, entry: Entry) -> Result<(), BackendError> {
        let inner = &*self.inner;
        let ttl_ms = entry.meta.expires_at().saturating_sub(now_ms());
        let message = Message::key(inner.instance, key.as_str());
        let channel = channel_of(key.as_str());
        if ttl_ms == 0 {
            return self.delete(key).await;
        }
        let blob = encode_entry(&entry)?;
        inner
            .call(|mut conn| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(key.as_str())
                    .arg(blob)
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .ignore()
                    .exec_async(&mut conn)
                    .await
            })
            .await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        let inner = &*self.inner;
        let message = Message::key(inner.instance, key.as_str());
        let channel = channel_of(key.as_str());
        inner
            .call(|mut conn| async move {
                redis::pipe()
                    .cmd("UNLINK")
                    .arg(key.as_str())
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .ignore()
                    .exec_async(&mut conn)
                    .await
            })
            .await
    }

    async fn delete_prefix(&self, prefix: &KeyPrefix) -> Result<u64, BackendError> {
        let inner = &*self.inner;
        let pattern = format!("{}*", escape_glob(prefix.as_str()));
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let pattern = pattern.as_str();
            let (next, keys): (u64, Vec<Vec<u8>>) = inner
                .call(|mut conn| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(inner.scan_count)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            if !keys.is_empty() {
                let unlinked: u64 = inner
                    .call(|mut conn| async move {
                        redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await
                    })
                    .await?;
                deleted += unlinked;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let message = Message::prefix(inner.instance, prefix.as_str());
        let channel = channel_of(prefix.as_str());
        inner
            .call(|mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .exec_async(&mut conn)
                    .await
            })
            .await?;
        Ok(deleted)
    }

    async fn tag_epochs(&self, tags: &[Tag]) -> Result<Vec<Epoch>, BackendError> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        let replies: Vec<Vec<u8>> = inner
            .call(|mut conn| async move {
                let mut invocation = inner.epochs_script.prepare_invoke();
                invocation.arg(inner.epoch_ttl_ms());
                for tag in tags {
                    invocation
                        .key(tag.as_str())
                        .arg(&Epoch::random().to_bytes()[..]);
                }
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if replies.len() != tags.len() {
            return Err(BackendError::new(
                NAME,
                format!(
                    "the epoch script answered {} epochs for {} tags",
                    replies.len(),
                    tags.len()
                ),
            ));
        }
        replies
            .iter()
            .map(|bytes| {
                Epoch::from_bytes(bytes).ok_or_else(|| {
                    BackendError::new(NAME, "the epoch script answered an epoch of the wrong size")
                })
            })
            .collect()
    }

    async fn invalidate_tags(&self, tags: &[Tag]) -> Result<(), BackendError> {
        if tags.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        let mut pipe = redis::pipe();
        for tag in tags {
            let command = pipe
                .cmd("SET")
                .arg(tag.as_str())
                .arg(&Epoch::random().to_bytes()[..]);
            if let Some(ttl) = inner.epoch_ttl {
                command.arg("PX").arg(ttl.as_millis() as u64);
            }
            command.ignore();
        }
        for (channel, message) in Message::tags(inner.instance, tags) {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        let pipe = &pipe;
        let result = inner
            .call(|mut conn| async move { pipe.exec_async(&mut conn).await })
            .await;
        // Whether or not the write landed, the epochs this instance saw may be stale now.
        if let Some(tracked) = &inner.tracked {
            tracked
                .listener()
                .forget(tags.iter().map(|tag| tag.as_str()));
        }
        result
    }

    async fn ping(&self) -> Result<(), BackendError> {
        // Always tried, even while Redis is known to be down: a health check wants the
        // server's own answer, and a good one lets every call through again.
        let handle = self.inner.handle.clone();
        let reply = tokio::time::timeout(self.inner.deadline, async move { handle.ping().await })
            .await
            .map(|reply| {
                reply.map_err(|error| match error {
                    crate::pool::Error::Redis(error) => error,
                    other => redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "PING failed",
                        other.to_string(),
                    )),
                })
            });
        self.inner.tried(reply)
    }
}

impl RedisBackend {
    /// A read validated by the read script, in Redis.
    async fn get_scripted(&self, key: &Key) -> Result<Option<Arc<Entry>>, BackendError> {
        let inner = &*self.inner;
        let reply: redis::Value = inner
            .call(|mut conn| async move {
                inner
                    .get_script
                    .key(key.as_str())
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let blob = match reply {
            redis::Value::BulkString(blob) => Bytes::from(blob),
            redis::Value::Nil => return Ok(None),
            redis::Value::Int(_) => {
                warn_corrupt(&inner.corrupt_log, key, "not an entry of this cache");
                return Ok(None);
            }
            other => {
                return Err(BackendError::new(
                    NAME,
                    format!("unexpected reply to the read script: {other:?}"),
                ));
            }
        };
        match decode_entry(blob) {
            Some(entry) if now_ms() < entry.meta.expires_at() => Ok(Some(Arc::new(entry))),
            Some(_) => Ok(None),
            None => {
                // The script checked the layout byte and the tag list, so this is an entry
                // whose tag names are not UTF-8: written by something else.
                warn_corrupt(&inner.corrupt_log, key, "entry header is malformed");
                let _ = self.delete(key).await;
                Ok(None)
            }
        }
    }

    /// A read validated against the tracked epochs: one `GET`, plus one `MGET` of the epochs
    /// the table does not know. `None` when the server answers the `GET` with an error (a
    /// key of another type), which the read script handles.
    async fn get_tracked(
        &self,
        key: &Key,
        table: &TrackedEpochs,
    ) -> Option<Result<Option<Arc<Entry>>, BackendError>> {
        let inner = &*self.inner;
        let blob: Option<Vec<u8>> = match inner
            .call(|mut conn| async move {
                redis::cmd("GET")
                    .arg(key.as_str())
                    .query_async(&mut conn)
                    .await
            })
            .await
        {
            Ok(blob) => blob,
            Err(_) if !inner.breaker.is_open() => return None,
            Err(error) => return Some(Err(error)),
        };
        let Some(blob) = blob else {
            return Some(Ok(None));
        };
        let Some(entry) = decode_entry(Bytes::from(blob)) else {
            warn_corrupt(&inner.corrupt_log, key, "not an entry of this cache");
            let _ = self.delete(key).await;
            return Some(Ok(None));
        };
        let now = now_ms();
        if now >= entry.meta.expires_at() {
            return Some(Ok(None));
        }
        let mut unknown: Vec<usize> = Vec::new();
        for (index, (tag, recorded)) in entry.tags.iter().enumerate() {
            match table.get(tag.as_str(), now) {
                Some(current) if current == *recorded => {}
                Some(_) => return Some(Ok(None)),
                None => unknown.push(index),
            }
        }
        if unknown.is_empty() {
            return Some(Ok(Some(Arc::new(entry))));
        }
        // The tags share the entry's namespace, hence its slot: one MGET on a cluster too.
        let generation = table.generation();
        let names: Vec<&str> = unknown
            .iter()
            .map(|&index| entry.tags[index].0.as_str())
            .collect();
        let names = &names;
        let current = match inner
            .call(|mut conn| async move {
                redis::cmd("MGET")
                    .arg(names)
                    .query_async::<Vec<Option<Vec<u8>>>>(&mut conn)
                    .await
            })
            .await
        {
            Ok(current) if current.len() == names.len() => current,
            Ok(_) => return None,
            Err(error) => return Some(Err(error)),
        };
        let mut valid = true;
        for (&index, bytes) in unknown.iter().zip(current) {
            let (tag, recorded) = &entry.tags[index];
            match bytes.as_deref().and_then(Epoch::from_bytes) {
                Some(epoch) => {
                    table.insert(tag.as_arc(), epoch, generation);
                    valid &= epoch == *recorded;
                }
                // A missing epoch key counts as invalidated, as in the read script.
                None => valid = false,
            }
        }
        Some(Ok(valid.then(|| Arc::new(entry))))
    }
}

/// Whether `error` says Redis could not be reached (refused, dropped, reconnecting, a
/// timeout of its own) rather than that it answered with an error.
fn unreachable(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.handle.url())
            .field("deadline", &self.inner.deadline)
            .field("epoch_ttl", &self.inner.epoch_ttl)
            .field("scan_count", &self.inner.scan_count)
            .finish_non_exhaustive()
    }
}

// ===== Entry layout =====

/// The stored form of `entry`: header, tags with their epochs, value bytes.
fn encode_entry(entry: &Entry) -> Result<Vec<u8>, BackendError> {
    let value = entry.value.encoded().ok_or_else(|| {
        BackendError::new(
            NAME,
            "the entry has no encoded value; Redis stores only encoded values",
        )
    })?;
    let count = u16::try_from(entry.tags.len())
        .map_err(|_| BackendError::new(NAME, "an entry may have at most 65535 tags"))?;
    let tags_len: usize = entry
        .tags
        .iter()
        .map(|(tag, _)| 2 + tag.as_str().len() + 16)
        .sum();
    let mut blob = Vec::with_capacity(FIXED_HEADER + tags_len + value.len());
    blob.push(LAYOUT_V1);
    blob.extend_from_slice(&entry.meta.fresh_until.to_be_bytes());
    blob.extend_from_slice(&entry.meta.stale_while_revalidate_until.to_be_bytes());
    blob.extend_from_slice(&entry.meta.stale_if_error_until.to_be_bytes());
    blob.extend_from_slice(&entry.meta.compute_ms.to_be_bytes());
    blob.extend_from_slice(&count.to_be_bytes());
    for (tag, epoch) in entry.tags.iter() {
        let name = tag.as_str().as_bytes();
        let len = u16::try_from(name.len())
            .map_err(|_| BackendError::new(NAME, "a tag's storage name exceeds 65535 bytes"))?;
        blob.extend_from_slice(&len.to_be_bytes());
        blob.extend_from_slice(name);
        blob.extend_from_slice(&epoch.to_bytes());
    }
    blob.extend_from_slice(value);
    Ok(blob)
}

/// Reads what [`encode_entry`] wrote; `None` when the bytes do not follow the layout.
fn decode_entry(blob: Bytes) -> Option<Entry> {
    let mut reader = Reader {
        bytes: &blob,
        pos: 0,
    };
    if reader.take(1)? != [LAYOUT_V1] {
        return None;
    }
    let meta = EntryMeta {
        fresh_until: u64::from_be_bytes(reader.array()?),
        stale_while_revalidate_until: u64::from_be_bytes(reader.array()?),
        stale_if_error_until: u64::from_be_bytes(reader.array()?),
        compute_ms: u32::from_be_bytes(reader.array()?),
    };
    let count = u16::from_be_bytes(reader.array()?);
    let mut tags: Vec<TagEpoch> = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = u16::from_be_bytes(reader.array()?);
        let name = std::str::from_utf8(reader.take(usize::from(len))?).ok()?;
        let epoch = Epoch::from_bytes(reader.take(16)?)?;
        tags.push((Tag::from_arc(name.into()), epoch));
    }
    let value = blob.slice(reader.pos..);
    Some(Entry {
        value: Value::from_encoded(value),
        meta,
        tags: tags.into_boxed_slice(),
    })
}

/// A cursor over a byte slice that fails instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

// ===== Invalidation messages =====

/// The pub/sub channel of the namespace `storage` belongs to: its hash tag and `:l1`.
pub(super) fn channel_of(storage: &str) -> String {
    channel(namespace_of(storage).unwrap_or(storage))
}

/// What a tiered backend drops from its in-process copy when another instance changes
/// Redis: 16 bytes of the sender's id, one byte of kind, then the storage names.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Message {
    /// An entry was written or deleted.
    Key(String),
    /// Every entry under this storage prefix was deleted.
    Prefix(String),
    /// These tags were invalidated.
    Tags(Vec<String>),
}

const KIND_KEY: u8 = b'k';
const KIND_PREFIX: u8 = b'p';
const KIND_TAGS: u8 = b't';

impl Message {
    fn key(instance: u128, key: &str) -> Vec<u8> {
        Self::with_header(instance, KIND_KEY, key.as_bytes())
    }

    fn prefix(instance: u128, prefix: &str) -> Vec<u8> {
        Self::with_header(instance, KIND_PREFIX, prefix.as_bytes())
    }

    /// One message per channel the tags belong to: `(channel, message)`.
    pub(super) fn tags(instance: u128, tags: &[Tag]) -> Vec<(String, Vec<u8>)> {
        let mut messages: Vec<(String, Vec<u8>)> = Vec::with_capacity(1);
        for tag in tags {
            let channel = channel_of(tag.as_str());
            let index = match messages.iter().position(|(known, _)| *known == channel) {
                Some(index) => index,
                None => {
                    messages.push((channel, Self::with_header(instance, KIND_TAGS, &[])));
                    messages.len() - 1
                }
            };
            let body = &mut messages[index].1;
            let name = tag.as_str().as_bytes();
            let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&name[..usize::from(len)]);
        }
        messages
    }

    fn with_header(instance: u128, kind: u8, body: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(17 + body.len());
        message.extend_from_slice(&instance.to_be_bytes());
        message.push(kind);
        message.extend_from_slice(body);
        message
    }

    /// The sender and the message; `None` for bytes this module did not write.
    pub(super) fn decode(bytes: &[u8]) -> Option<(u128, Self)> {
        let mut reader = Reader { bytes, pos: 0 };
        let instance = u128::from_be_bytes(reader.array()?);
        let kind = reader.take(1)?[0];
        let body = &bytes[reader.pos..];
        let message = match kind {
            KIND_KEY => Self::Key(std::str::from_utf8(body).ok()?.to_owned()),
            KIND_PREFIX => Self::Prefix(std::str::from_utf8(body).ok()?.to_owned()),
            KIND_TAGS => {
                let mut tags = Vec::new();
                while reader.pos < bytes.len() {
                    let len = u16::from_be_bytes(reader.array()?);
                    tags.push(
                        std::str::from_utf8(reader.take(usize::from(len))?)
                            .ok()?
                            .to_owned(),
                    );
                }
                Self::Tags(tags)
            }
            _ => return None,
        };
        Some((instance, message))
    }
}

/// Escapes the characters `SCAN MATCH` treats as glob syntax.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Logs a corrupt entry, rate-limited by `gate`.
fn warn_corrupt(gate: &LogGate, key: &Key, problem: &str) {
    if let Some(held_back) = gate.open(now_ms()) {
        tracing::warn!(
            key = key.as_str(),
            problem,
            held_back,
            "cache entry in Redis is corrupt: read as a miss and removed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str) -> Tag {
        Tag::from_arc(format!("{{ns}}:t:{name}").into())
    }

    #[test]
    fn entries_round_trip_through_the_layout() {
        let entry = Entry {
            value: Value::from_encoded(Bytes::from_static(b"\x01\x93\x01\x02\x03")),
            meta: EntryMeta {
                fresh_until: 1_000,
                stale_while_revalidate_until: 2_000,
                stale_if_error_until: 3_000,
                compute_ms: 42,
            },
            tags: vec![
                (tag("users"), Epoch::from_u128(7)),
                (tag("stats"), Epoch::from_u128(u128::MAX)),
            ]
            .into_boxed_slice(),
        };
        let blob = encode_entry(&entry).unwrap();
        assert_eq!(blob[0], LAYOUT_V1);
        let decoded = decode_entry(Bytes::from(blob)).unwrap();
        assert_eq!(decoded.meta, entry.meta);
        assert_eq!(decoded.tags, entry.tags);
        assert_eq!(decoded.value.encoded(), entry.value.encoded());
    }

    #[test]
    fn truncated_or_foreign_bytes_are_not_entries() {
        let entry = Entry {
            value: Value::from_encoded(Bytes::from_static(b"\x01\xc0")),
            meta: EntryMeta::default(),
            tags: vec![(tag("a"), Epoch::from_u128(1))].into_boxed_slice(),
        };
        let blob = encode_entry(&entry).unwrap();
        for len in 0..FIXED_HEADER + 2 + 7 + 16 {
            assert!(
                decode_entry(Bytes::copy_from_slice(&blob[..len])).is_none(),
                "{len}"
            );
        }
        assert!(decode_entry(Bytes::from_static(b"hello")).is_none());
    }

    #[test]
    fn messages_round_trip() {
        let key = Message::key(5, "{ns}:k:a");
        assert_eq!(
            Message::decode(&key),
            Some((5, Message::Key("{ns}:k:a".into())))
        );
        let prefix = Message::prefix(6, "{ns}:k:user:");
        assert_eq!(
            Message::decode(&prefix),
            Some((6, Message::Prefix("{ns}:k:user:".into())))
        );
        let tags = Message::tags(7, &[tag("a"), tag("b")]);
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].0, "{ns}:l1");
        assert_eq!(
            Message::decode(&tags[0].1),
            Some((7, Message::Tags(vec!["{ns}:t:a".into(), "{ns}:t:b".into()])))
        );
        assert_eq!(Message::decode(b"short"), None);
    }

    #[test]
    fn channels_follow_the_hash_tag() {
        assert_eq!(channel_of("{app}:k:x}y"), "{app}:l1");
        assert_eq!(channel_of("plain"), "plain:l1");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
