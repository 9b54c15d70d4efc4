//! [`PeerIp`]: the connection's peer address, and how it is found.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use http::{Extensions, Request};

use super::{Key, KeyExtractor, Or};

/// How to provide the peer address, named in the error logged when it is missing.
pub(super) const MISSING_PEER: &str = "no peer address in the request extensions: serve axum with \
    `into_make_service_with_connect_info::<SocketAddr>()` (and enable perfkit's `axum` \
    feature), insert the connection's `SocketAddr` into each request's extensions (hyper), \
    or read another connection type with `PeerIp::peer_from` (tonic's `TcpConnectInfo`)";

/// Reads the peer address from the request extensions.
pub type PeerLookup = fn(&Extensions) -> Option<SocketAddr>;

/// The default [`PeerLookup`]: axum's `ConnectInfo<SocketAddr>` (with the `axum` feature),
/// then a plain [`SocketAddr`] extension.
pub fn default_peer(extensions: &Extensions) -> Option<SocketAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0);
    }
    extensions.get::<SocketAddr>().copied()
}

/// The default IPv6 prefix length by which clients are grouped.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

// ===== PeerIp =====

/// The address of the connection's peer, with IPv6 addresses grouped by prefix.
///
/// The peer address comes from the request extensions: axum's `ConnectInfo<SocketAddr>`
/// (with the `axum` feature, present when the router is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`) or a plain [`SocketAddr`]
/// extension, which hyper-based servers insert themselves. For other connection types
/// (tonic's `TcpConnectInfo`, a TLS or Unix-socket wrapper) give a lookup to
/// [`peer_from`](Self::peer_from).
///
/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) count as their IPv4 address, and IPv6
/// addresses are grouped by their first 64 bits ([`ipv6_prefix`](Self::ipv6_prefix)): one
/// host usually holds a whole /64, so counting single addresses would let it rotate
/// through 2^64 keys.
///
/// Behind a reverse proxy every request comes from the proxy: use [`ClientIp`](super::ClientIp) there.
#[derive(Clone, Copy)]
pub struct PeerIp {
    lookup: PeerLookup,
    pub(super) ipv6_prefix: u8,
}

impl PeerIp {
    /// Reads the peer from the default extensions, grouping IPv6 addresses by /64.
    pub const fn new() -> Self {
        Self {
            lookup: default_peer,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }

    /// Groups IPv6 addresses by their first `len` bits. Defaults to 64; `128` counts every
    /// address on its own. Values above 128 count as 128.
    #[must_use]
    pub const fn ipv6_prefix(mut self, len: u8) -> Self {
        self.ipv6_prefix = if len > 128 { 128 } else { len };
        self
    }

    /// Reads the peer address with `lookup` instead of the default, for a server that puts
    /// another connection type in the extensions:
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use perfkit::rate_limit::PeerIp;
    ///
    /// #[derive(Clone)]
    /// struct TlsConnectInfo {
    ///     remote: SocketAddr,
    /// }
    ///
    /// let peer = PeerIp::new().peer_from(|ext| ext.get::<TlsConnectInfo>().map(|info| info.remote));
    /// # let _ = peer;
    /// ```
    ///
    /// Under tonic, the lookup is
    /// `|ext| ext.get::<tonic::transport::server::TcpConnectInfo>()?.remote_addr()`.
    #[must_use]
    pub const fn peer_from(mut self, lookup: PeerLookup) -> Self {
        self.lookup = lookup;
        self
    }

    /// Falls back to `other` when this extractor finds no key.
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }

    /// The peer address of a request, canonical (IPv4-mapped addresses as IPv4).
    pub fn peer(&self, extensions: &Extensions) -> Option<IpAddr> {
        (self.lookup)(extensions).map(|addr| addr.ip().to_canonical())
    }
}

impl Default for PeerIp {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PeerIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIp")
            .field("ipv6_prefix", &self.ipv6_prefix)
            .finish_non_exhaustive()
    }
}

impl<B> KeyExtractor<B> for PeerIp {
    #[inline]
    fn extract(&self, request: &Request<B>) -> Option<Key> {
        self.peer(request.extensions())
            .map(|ip| Key::ip_prefix(ip, self.ipv6_prefix))
    }

    fn misconfigured(&self) -> Option<&'static str> {
        Some(MISSING_PEER)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{key_of, request};
    use super::*;

    #[test]
    fn peer_ip_groups_ipv6_and_unmaps_ipv4() {
        let peer = PeerIp::new();
        let v4 = request(Some("203.0.113.9:5000"), &[]);
        assert_eq!(key_of(&peer, &v4), "ip:203.0.113.9");
        let mapped = request(Some("[::ffff:203.0.113.9]:5000"), &[]);
        assert_eq!(key_of(&peer, &mapped), "ip:203.0.113.9");
        let v6 = request(Some("[2001:db8:1:2:3:4:5:6]:443"), &[]);
        assert_eq!(key_of(&peer, &v6), "ip:2001:db8:1:2::");
        let other_host = request(Some("[2001:db8:1:2:ffff::1]:443"), &[]);
        assert_eq!(key_of(&peer, &other_host), "ip:2001:db8:1:2::");
        assert_eq!(
            key_of(&peer.ipv6_prefix(128), &v6),
            "ip:2001:db8:1:2:3:4:5:6"
        );
        assert_eq!(key_of(&peer.ipv6_prefix(48), &v6), "ip:2001:db8:1::");
        assert_eq!(
            key_of(&peer.ipv6_prefix(200), &v6),
            "ip:2001:db8:1:2:3:4:5:6"
        );

        let missing = request(None, &[]);
        assert!(KeyExtractor::<()>::extract(&peer, &missing).is_none());
        assert!(
            KeyExtractor::<()>::misconfigured(&peer)
                .unwrap()
                .contains("into_make_service_with_connect_info")
        );
    }

    #[test]
    fn peer_lookup_can_be_replaced() {
        #[derive(Clone)]
        struct Conn(SocketAddr);
        let peer = PeerIp::new().peer_from(|ext| ext.get::<Conn>().map(|c| c.0));
        let mut req = request(Some("1.1.1.1:1"), &[]);
        assert!(KeyExtractor::<()>::extract(&peer, &req).is_none());
        req.extensions_mut()
            .insert(Conn("9.9.9.9:9".parse().unwrap()));
        assert_eq!(key_of(&peer, &req), "ip:9.9.9.9");
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info_is_read() {
        let mut req = request(None, &[]);
        req.extensions_mut().insert(axum::extract::ConnectInfo(
            "192.0.2.1:80".parse::<SocketAddr>().unwrap(),
        ));
        assert_eq!(key_of(&PeerIp::new(), &req), "ip:192.0.2.1");
    }
}
