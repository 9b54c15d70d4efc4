//! Who a request is counted against: the [`Key`], the [`KeyExtractor`] trait that picks it,
//! and the built-in extractors, one file each.

mod client;
mod extension;
mod forwarded;
mod header;
mod peer;
mod trusted;
mod value;

use http::Request;

pub(super) use self::trusted::{TRUSTED_PROXIES_EXPECTED, canonical_net};
pub use self::{
    client::{ClientIp, DEFAULT_MAX_HOPS, ForwardedHeader},
    extension::ExtensionKey,
    header::HeaderKey,
    peer::{DEFAULT_IPV6_PREFIX, PeerIp, PeerLookup, default_peer},
    trusted::TrustedProxies,
    value::Key,
};

/// Picks the key a request is counted against; see the [module docs](super#keys).
///
/// Implemented by the built-ins ([`PeerIp`], [`ClientIp`], [`HeaderKey`], [`ExtensionKey`],
/// [`Global`], [`Or`]) and by closures `Fn(&Request<B>) -> Option<Key>`. Returning `None`
/// means the request carries nothing to count it by; the layer then follows its
/// [`MissingKey`](super::MissingKey) rule.
pub trait KeyExtractor<B> {
    /// The key of `request`, or `None` when the request carries nothing to identify it by.
    fn extract(&self, request: &Request<B>) -> Option<Key>;

    /// What to tell the operator, once, when [`extract`](Self::extract) returns `None`
    /// because the stack is misconfigured (not because a client sent less than it could).
    ///
    /// `None` by default. The peer-address extractors return how to provide connection
    /// info, and the layer logs it as an error at the first request without a key.
    fn misconfigured(&self) -> Option<&'static str> {
        None
    }
}

impl<B, F> KeyExtractor<B> for F
where
    F: Fn(&Request<B>) -> Option<Key>,
{
    #[inline]
    fn extract(&self, request: &Request<B>) -> Option<Key> {
        self(request)
    }
}

/// One key for every request: a budget the whole service shares.
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

impl<B> KeyExtractor<B> for Global {
    #[inline]
    fn extract(&self, _: &Request<B>) -> Option<Key> {
        Some(Key::global())
    }
}

/// The first of two extractors that finds a key.
#[derive(Clone, Copy, Debug)]
pub struct Or<A, O> {
    first: A,
    second: O,
}

impl<A, O> Or<A, O> {
    /// Tries `first`, then `second`.
    pub fn new(first: A, second: O) -> Self {
        Self { first, second }
    }
}

impl<B, A, O> KeyExtractor<B> for Or<A, O>
where
    A: KeyExtractor<B>,
    O: KeyExtractor<B>,
{
    #[inline]
    fn extract(&self, request: &Request<B>) -> Option<Key> {
        self.first
            .extract(request)
            .or_else(|| self.second.extract(request))
    }

    fn misconfigured(&self) -> Option<&'static str> {
        self.second
            .misconfigured()
            .or_else(|| self.first.misconfigured())
    }
}

#[cfg(test)]
mod testing {
    //! What the extractors' tests share: addresses, proxy lists and requests from text.

    use std::net::{IpAddr, SocketAddr};

    use http::{HeaderName, Request};

    use super::{KeyExtractor, TrustedProxies};

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(super) fn trusted(s: &str) -> TrustedProxies {
        s.parse().unwrap()
    }

    pub(super) fn request(peer: Option<&str>, headers: &[(&str, &[u8])]) -> Request<()> {
        let mut request = Request::new(());
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(peer.parse::<SocketAddr>().unwrap());
        }
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        request
    }

    pub(super) fn key_of(extractor: &impl KeyExtractor<()>, request: &Request<()>) -> String {
        extractor.extract(request).unwrap().to_string()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::testing::{key_of, request};
    use super::*;

    #[test]
    fn header_keys_are_hashed_and_extensions_read() {
        let by_key = HeaderKey::new(HeaderName::from_static("x-api-key"));
        let req = request(None, &[("x-api-key", b"secret-123")]);
        let key = key_of(&by_key, &req);
        assert!(key.starts_with("h:"), "{key}");
        assert!(!key.contains("secret"));
        assert_eq!(key, Key::hashed("secret-123").to_string());
        assert!(
            KeyExtractor::<()>::extract(&by_key, &request(None, &[("x-api-key", b"  ")])).is_none()
        );

        let fallback = by_key.or(Global);
        assert_eq!(key_of(&fallback, &request(None, &[])), "*");

        #[derive(Clone)]
        struct User(u32);
        let by_user = ExtensionKey::new(|user: &User| Key::text(&user.0.to_string()));
        let mut req = request(Some("1.2.3.4:5"), &[]);
        assert!(KeyExtractor::<()>::extract(&by_user, &req).is_none());
        let by_user_or_ip = by_user.clone().or(PeerIp::new());
        assert_eq!(key_of(&by_user_or_ip, &req), "ip:1.2.3.4");
        assert!(KeyExtractor::<()>::misconfigured(&by_user_or_ip).is_some());
        req.extensions_mut().insert(User(7));
        assert_eq!(key_of(&by_user, &req), "t:7");

        let closure = |req: &Request<()>| req.uri().path().strip_prefix("/t/").map(Key::text);
        let req = Request::get("/t/acme").body(()).unwrap();
        assert_eq!(key_of(&closure, &req), "t:acme");
    }
}
