//! A typed cache with O(1) tag invalidation, single-flight and early refresh, over
//! pluggable backends.

mod backend;
mod builder;
mod cache;
mod codec;
mod error;
mod flight;
mod key;
mod memory;
mod options;
#[cfg(feature = "redis")]
mod redis;
mod stats;
mod tags;
#[cfg(feature = "redis")]
mod tiered;

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
    cache::{Cache, Cacheable, WarmReport},
    error::{BackendError, CodecError, Error, Result},
    memory::{
        DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TAGS, MemoryBackend,
        MemoryBackendBuilder,
    },
    options::EntryOptions,
    stats::{CacheStats, LatencyStats},
};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use self::{
    redis::RedisBackend,
    tiered::{TieredBackend, TieredBackendBuilder},
};
