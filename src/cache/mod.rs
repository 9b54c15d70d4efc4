//! A typed cache with O(1) tag invalidation, single-flight and early refresh, over
//! pluggable backends.
//!
//! A [`Cache`] stores any `Serialize + DeserializeOwned + Clone` value under a string key,
//! in a [`Backend`]: [`MemoryBackend`] (the default) keeps values in process; remote
//! backends keep them as MessagePack bytes. Entries carry a TTL, tags, and a freshness
//! policy ([`EntryOptions`]).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use perfkit::cache::{Cache, EntryOptions};
//!
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct User { id: u64, name: String }
//!
//! async fn load_users() -> Result<Vec<User>, std::io::Error> {
//!     Ok(vec![User { id: 1, name: "Ada".into() }])
//! }
//!
//! let cache = Cache::builder().prefix("app").build()?; // memory backend
//! let options = EntryOptions::new()
//!     .ttl(Duration::from_secs(300))
//!     .tag("users")
//!     .stale_while_revalidate(Duration::from_secs(30));
//!
//! // Computed once, then served from the cache; concurrent callers share one computation.
//! let users = cache.get_or_compute("users:list", options, load_users).await?;
//! assert_eq!(users.len(), 1);
//! assert!(cache.get::<Vec<User>>("users:list").await?.is_some());
//!
//! // A user changed: every entry tagged `users` is invalid, in one write.
//! cache.invalidate_tags(&["users"]).await?;
//! assert!(cache.get::<Vec<User>>("users:list").await?.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! Each of these is checked by a test in `tests/cache_memory.rs` or beside the code.
//!
//! - **Invalidation is O(1) per tag.** Each tag has an epoch, a random 128-bit value; an
//!   entry records the epochs of its tags, and a read compares them with the current ones.
//!   [`Cache::invalidate_tags`] replaces each tag's epoch: one write per tag whatever the
//!   number of tagged entries, and no per-tag index of keys that could grow.
//! - **No value computed before an invalidation is served after it.** The epochs an entry
//!   records are captured *before* its value is computed ([`Cache::get_or_compute`]) or at
//!   the call ([`Cache::set`]), so once [`Cache::invalidate_tags`] returns, a value
//!   computed from older data is never served, even when its write lands after the
//!   invalidation.
//! - **Eviction never resurrects.** A tag whose epoch is gone (evicted from a bounded
//!   table, flushed) counts as invalidated; a new epoch is random, never an old one. An
//!   eviction can cost a miss, never serve stale data.
//! - **Single-flight.** Concurrent [`Cache::get_or_compute`] calls for one key in one
//!   process run one computation; the others wait and receive its value or its error.
//!   Errors are shared, never stored. If the computing call is dropped, a waiting call
//!   takes over; nobody hangs. Bookkeeping exists only while a computation runs.
//! - **Freshness windows.** Within an entry's stale-while-revalidate window the stale value
//!   is served at once and one background task recomputes it; within its stale-if-error
//!   window a failed recomputation serves the stale value instead of the error. Before
//!   expiry, early refresh (XFetch) recomputes in the background with a probability rising
//!   toward expiry and with the recorded computation time.
//! - **Expiry.** An entry is not served past its TTL (beyond the windows above). Time is
//!   [`now_ms`], which follows tokio's clock, so tests control it with
//!   `tokio::time::pause`.
//! - **A changed type never decodes into the wrong fields**, and corrupt or foreign bytes
//!   are a miss, logged (rate-limited) and removed; nothing panics (see *Format*).
//! - **A memory hit never deserializes**: [`MemoryBackend`] keeps the decoded value and a
//!   hit clones it out.
//! - **Any string is a key.** Keys and tags are namespaced by the prefix; long or odd keys
//!   are hashed and never reach a pattern raw (see *Keys*).
//! - **Degradation.** A backend failure on a read is a miss, on a write a skipped write,
//!   both logged at most once per 10 s per kind and counted in [`CacheSnapshot::errors`];
//!   requests keep being served. [`Cache::invalidate_tags`], [`Cache::invalidate_prefix`]
//!   and [`Cache::delete`] return the failure to their caller.
//! - **Bounded memory.** [`MemoryBackend`] holds at most its entry count and its bytes,
//!   and at most its number of tag epochs; latency statistics are a fixed-size histogram.
//!
//! # Backends
//!
//! - [`MemoryBackend`] (the default): decoded values in process, bounded by entries, bytes
//!   and tag epochs (see *Memory backend* below).
//! - [`RedisBackend`] (with `redis`): entries and tag epochs in Redis, over the pool's
//!   [`RedisHandle`](crate::pool::RedisHandle). A read is one round trip: one script reads
//!   the entry and its tags' current epochs and answers only if they all match. Every call
//!   has a deadline (100 ms), so a hung Redis costs a miss, not a stalled request.
//! - [`TieredBackend`] (with `redis`): a [`MemoryBackend`] L1 in front of a [`RedisBackend`]
//!   L2. L1 hits cost no network and no decoding; every change is published on the
//!   namespace's channel in the same round trip, and every instance drops its copies on
//!   receipt. L1 copies live at most 30 s should a message be lost, are not trusted while the
//!   subscription is down (they are served only when Redis cannot answer), and are flushed
//!   when it comes back.
//!
//! [`Cache::from_env`] picks memory without `REDIS_URL` (or `REDIS_CLUSTER_URLS`) and tiered
//! with it, on one handle that its subscription also goes through.
//!
//! # Keys
//!
//! The storage key is `{prefix}:k:` and the key; tags are `{prefix}:t:` and the tag. The
//! braces make the prefix a Redis hash tag, so one script may touch an entry and its tags.
//! A key longer than 200 bytes, or holding anything but ASCII letters, digits and
//! `-_.:/@=+,;!$%&()<>|~` (whitespace, control characters, glob characters `*?[]\^`,
//! braces, `#`, quotes, non-ASCII), is stored as its leading safe part, `#`, and 128 bits
//! of its SHA-256 in hex. [`Cache::invalidate_prefix`] therefore reaches a hashed key when
//! the prefix lies within that leading part, as `users:` does for `users:name with spaces`;
//! a prefix that itself holds such characters is cut before the first one, which may
//! remove more entries than asked, never fewer.
//!
//! # Format
//!
//! Remote backends store a one-byte header, then MessagePack (rmp-serde) with **named
//! fields**: structs are maps keyed by field name. A value whose MessagePack exceeds the
//! compression threshold (1 KiB by default) is deflated at the fast level, which the
//! header records. Measured on a 10-record value (`cargo bench --bench cache`, group
//! `cache_codec_*`, on a busy 2-core machine):
//!
//! | encoding | encode | decode | bytes |
//! | --- | --- | --- | --- |
//! | MessagePack, named fields | 4.8 µs | 7.4 µs | 1847 (389 deflated) |
//! | MessagePack, positional | 3.1 µs | 4.8 µs | 1377 |
//! | serde_json | 6.3 µs | 13.1 µs | 2125 |
//!
//! Named fields cost about a third more time and size than positional arrays (and
//! compression takes most of the size back); in exchange a struct whose fields were reordered still decodes
//! correctly, and one whose fields were renamed or retyped fails to decode (a miss, and the
//! entry is removed) instead of silently filling the wrong fields, as positional encoding
//! would. Fields added with `#[serde(default)]` decode from old entries. To change a type
//! incompatibly without waiting for TTLs, change the cache prefix.
//!
//! # Memory backend
//!
//! [`MemoryBackend`] keeps `Arc`ed decoded values in quick_cache, weighed by their
//! uncompressed MessagePack size (never below `max_bytes / max_entries`, which enforces
//! both bounds with one weigher), with expiry checked on every read against [`now_ms`].
//! quick_cache was chosen over moka by measurement (`cargo bench --bench cache`, group
//! `cache_store_*`, the same `Arc<Entry>` values and weights in both): a hit took 69 ns
//! against moka's 432 ns (6× faster), an insert into a full store 0.21 µs against 2.7 µs
//! (13× faster). moka's advantage, expiring entries on its own timer, matters little
//! here: expiry must be checked on read anyway to follow tokio's clock, and an expired
//! entry that is never read again leaves by eviction, within the bounds.

mod backend;
mod builder;
mod codec;
mod error;
mod flight;
mod handle;
pub mod http;
mod memory;
mod namespace;
mod options;
#[cfg(feature = "redis")]
mod redis;
mod stats;
#[cfg(feature = "redis")]
mod subscription;
mod tags;
#[cfg(feature = "redis")]
mod tiered;
#[cfg(feature = "redis")]
mod tracked;

#[doc(inline)]
#[allow(deprecated)]
pub use self::stats::{CacheStats, LatencyStats};
#[doc(inline)]
pub use self::{
    backend::{
        AnyValue, Backend, Decoder, Entry, EntryMeta, Epoch, Key, KeyPrefix, LocalLookup, Tag,
        TagEpoch, Value, now_ms,
    },
    builder::{
        CacheBuilder, DEFAULT_COMPRESSION_THRESHOLD, DEFAULT_PREFIX, DEFAULT_TTL,
        DEFAULT_WARM_CONCURRENCY,
    },
    error::{BackendError, CodecError, Error, Result},
    handle::{Cache, Cacheable, Source, WarmReport},
    memory::{
        DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TAGS, MemoryBackend,
        MemoryBackendBuilder,
    },
    options::EntryOptions,
    stats::CacheSnapshot,
};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use self::{
    redis::RedisBackend,
    tiered::{TieredBackend, TieredBackendBuilder},
};
