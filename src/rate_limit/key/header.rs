//! [`HeaderKey`]: a request header, hashed.

use http::{HeaderName, Request};

use super::{Key, KeyExtractor, Or};

/// A request header, such as an API key, hashed before it becomes a key.
///
/// The raw value never reaches the store, logs or response headers: the key is a SHA-256
/// digest of it, the same on every server so that a shared store agrees. A request
/// without the header (or with it empty) has no key, and the layer's
/// [`MissingKey`](crate::rate_limit::MissingKey) rule applies; combine with another extractor with
/// [`or`](Self::or) to count anonymous requests by address instead.
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys requests by the value of the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }

    /// Falls back to `other` when the header is missing.
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }
}

impl<B> KeyExtractor<B> for HeaderKey {
    fn extract(&self, request: &Request<B>) -> Option<Key> {
        let value = request.headers().get(&self.name)?.as_bytes().trim_ascii();
        (!value.is_empty()).then(|| Key::hashed(value))
    }
}
