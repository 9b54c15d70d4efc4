//! A typed cache with O(1) tag invalidation, single-flight and early refresh, over
//! pluggable backends.
//!
//! Values are stored by a [`Backend`]: the interface every store implements (entries with
//! their freshness windows and tag epochs, namespaced [`Key`]s and [`Tag`]s).

mod backend;
mod codec;
mod error;

#[doc(inline)]
pub use self::{
    backend::{
        AnyValue, Backend, Decoder, Entry, EntryMeta, Epoch, Key, KeyPrefix, LocalLookup, Tag,
        TagEpoch, Value, now_ms,
    },
    error::{BackendError, CodecError, Error, Result},
};
