//! Errors of the cache.

use crate::EnvError;

/// Why a cache operation or its configuration failed.
///
/// Reads and writes degrade instead of failing (a backend error on `get` is a miss, on
/// `set` a skipped write, both logged), so callers meet this type from
/// [`invalidate_tags`](super::Cache::invalidate_tags),
/// [`invalidate_prefix`](super::Cache::invalidate_prefix), `delete` and the builders.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend failed; the invalidation or deletion may not have happened.
    #[error(transparent)]
    Backend(#[from] BackendError),

    /// A value could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),

    /// A configuration variable is set to something unreadable.
    #[error(transparent)]
    Env(#[from] EnvError),

    /// A setting that cannot work; the message says which and how to fix it.
    #[error("invalid cache configuration: {0}")]
    Config(String),
}

/// A failure reported by a [`Backend`](super::Backend).
#[derive(Debug, thiserror::Error)]
#[error("cache backend {backend} failed: {source}")]
pub struct BackendError {
    backend: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl BackendError {
    /// An error of the backend named `backend` (`"redis"`, `"memory"`, ...) caused by
    /// `source`.
    pub fn new(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            backend,
            source: source.into(),
        }
    }

    /// The name of the backend that failed.
    pub fn backend(&self) -> &'static str {
        self.backend
    }
}

/// Bytes that could not be encoded or decoded.
///
/// On a read this never reaches the caller: the entry counts as a miss, is logged and is
/// removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are empty or their header names no codec this version knows: another
    /// program wrote the key, or a newer version of this one did. Give each program or
    /// format its own cache prefix.
    #[error("unknown cache value header {0:#04x}; another program or version wrote this key")]
    UnknownHeader(u8),

    /// The bytes are shorter than their header says.
    #[error("cache value is empty")]
    Empty,

    /// Decompression failed.
    #[error("cache value does not decompress: {0}")]
    Decompress(#[source] std::io::Error),

    /// MessagePack decoding failed: the bytes are corrupt or the type changed since they
    /// were written.
    #[error(
        "cache value does not decode into the requested type (corrupt, or the type changed): {0}"
    )]
    Decode(#[source] rmp_serde::decode::Error),

    /// MessagePack encoding failed (a `Serialize` impl returned an error).
    #[error("value cannot be encoded for the cache: {0}")]
    Encode(#[source] rmp_serde::encode::Error),

    /// A decoded value in process memory has another type than the one requested: the same
    /// key is used for two types.
    #[error("cached value has another type than {requested}; use one type per key")]
    TypeMismatch {
        /// The type requested.
        requested: &'static str,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
