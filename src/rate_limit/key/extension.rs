//! [`ExtensionKey`]: a key read from a request extension.

use std::{fmt, marker::PhantomData};

use http::Request;

use super::{Key, KeyExtractor, Or};

/// A key read from a request extension, such as the authenticated user an earlier layer
/// inserted.
///
/// ```
/// use perfkit::rate_limit::{ExtensionKey, Key};
///
/// #[derive(Clone)]
/// struct UserId(u64);
///
/// let by_user = ExtensionKey::new(|user: &UserId| Key::text(&user.0.to_string()));
/// # let _ = by_user;
/// ```
pub struct ExtensionKey<T, F> {
    f: F,
    _extension: PhantomData<fn(&T)>,
}

impl<T, F> ExtensionKey<T, F>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> Key,
{
    /// Keys requests by `f` applied to their extension of type `T`; requests without one
    /// have no key.
    pub fn new(f: F) -> Self {
        Self {
            f,
            _extension: PhantomData,
        }
    }

    /// Falls back to `other` when the extension is missing.
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }
}

impl<T, F: Clone> Clone for ExtensionKey<T, F> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _extension: PhantomData,
        }
    }
}

impl<T, F> fmt::Debug for ExtensionKey<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtensionKey")
            .field("extension", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<B, T, F> KeyExtractor<B> for ExtensionKey<T, F>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> Key,
{
    #[inline]
    fn extract(&self, request: &Request<B>) -> Option<Key> {
        request.extensions().get::<T>().map(&self.f)
    }
}
