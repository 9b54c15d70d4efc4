//! [`ClientIp`]: the client address behind trusted reverse proxies.

use std::{fmt, net::IpAddr};

use http::{HeaderMap, HeaderName, Request, header::FORWARDED};

use super::{
    Key, KeyExtractor, Or, PeerIp, PeerLookup, TrustedProxies,
    forwarded::{Hop, RevElements, forwarded_for, node},
    peer::MISSING_PEER,
};

/// Which forwarding header a [`ClientIp`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, AWS and Google load
    /// balancers, Cloudflare). The default.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for="[2001:db8::1]:4711"` (RFC 7239).
    Forwarded,
    /// `X-Real-IP: client` (nginx's `real_ip` module): one address, set by the proxy.
    XRealIp,
}

impl ForwardedHeader {
    fn name(self) -> HeaderName {
        match self {
            Self::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            Self::Forwarded => FORWARDED,
            Self::XRealIp => HeaderName::from_static("x-real-ip"),
        }
    }
}

/// The default bound on the forwarding hops [`ClientIp`] examines.
pub const DEFAULT_MAX_HOPS: usize = 16;

/// The client address behind trusted reverse proxies.
///
/// The forwarding header is read **only when the peer is a trusted proxy**. It is then
/// walked from the right (the entries the proxies themselves appended), skipping addresses
/// in the trusted list; the first untrusted address is the client. So:
///
/// - a client talking to the server directly is counted by its own address whatever
///   headers it sends;
/// - a client behind the proxies can prepend anything it likes to `X-Forwarded-For`, but
///   the proxy appends the address it saw, which the walk reaches first;
/// - when every hop is trusted, the leftmost one is the client.
///
/// Only one header is read ([`header`](Self::header), `X-Forwarded-For` by default): a
/// proxy passes headers it does not manage through unchanged, so reading a second one
/// would let a client forge it. Pick the one your proxies set.
///
/// Malformed entries are never guessed around: the walk stops at the first entry it cannot
/// read (not an address, longer than an address can be, not UTF-8, `unknown`) and the
/// client is the last trusted hop it had reached, which a client cannot forge; this is
/// logged at debug level. The walk examines at most 16 entries ([`max_hops`](Self::max_hops))
/// and never reads more of a header line than those entries span.
///
/// An RFC 7239 obfuscated identifier (`for=_hidden`) written by a trusted proxy becomes the
/// key, scoped to the proxy that wrote it. IPv6 clients are grouped by prefix as in
/// [`PeerIp`].
#[derive(Clone)]
pub struct ClientIp {
    peer: PeerIp,
    trusted: TrustedProxies,
    header: ForwardedHeader,
    max_hops: usize,
}

impl ClientIp {
    /// Trusts the forwarding headers of peers in `trusted`.
    pub fn new(trusted: TrustedProxies) -> Self {
        Self {
            peer: PeerIp::new(),
            trusted,
            header: ForwardedHeader::XForwardedFor,
            max_hops: DEFAULT_MAX_HOPS,
        }
    }

    /// Trusts the proxies listed in `TRUSTED_PROXIES`; see [`TrustedProxies::from_env`].
    ///
    /// # Errors
    ///
    /// When the variable holds something that is not a list of addresses or CIDR ranges.
    pub fn from_env() -> Result<Self, crate::EnvError> {
        Ok(Self::new(TrustedProxies::from_env()?))
    }

    /// Reads `header` from trusted proxies. Defaults to
    /// [`ForwardedHeader::XForwardedFor`].
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Examines at most `max` entries of the forwarding header, from the right. Defaults to
    /// 16; at least 1.
    #[must_use]
    pub fn max_hops(mut self, max: usize) -> Self {
        self.max_hops = max.max(1);
        self
    }

    /// Groups IPv6 clients by their first `len` bits. Defaults to 64.
    #[must_use]
    pub fn ipv6_prefix(mut self, len: u8) -> Self {
        self.peer = self.peer.ipv6_prefix(len);
        self
    }

    /// Reads the peer address with `lookup`; see [`PeerIp::peer_from`].
    #[must_use]
    pub fn peer_from(mut self, lookup: PeerLookup) -> Self {
        self.peer = self.peer.peer_from(lookup);
        self
    }

    /// Falls back to `other` when this extractor finds no key.
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }

    /// The trusted proxies.
    pub fn trusted(&self) -> &TrustedProxies {
        &self.trusted
    }

    /// The client of a request coming from `peer`, as the walk finds it.
    fn client<'h>(&self, peer: IpAddr, headers: &'h HeaderMap) -> Client<'h> {
        if !self.trusted.contains(peer) {
            return Client::Ip(peer);
        }
        walk(peer, self.hops(headers), &self.trusted, self.max_hops)
    }

    /// The entries of the chosen forwarding header, rightmost first, read lazily: each one
    /// is parsed only when the walk asks for it.
    fn hops<'h>(&self, headers: &'h HeaderMap) -> impl Iterator<Item = Hop<'h>> + use<'h> {
        let header = self.header;
        let forwarded = header == ForwardedHeader::Forwarded;
        let lines = headers.get_all(header.name()).into_iter().rev();
        let hops = lines.flat_map(move |line| {
            RevElements::new(line.as_bytes(), forwarded).map(move |element| {
                if forwarded {
                    forwarded_for(element)
                } else {
                    node(element)
                }
            })
        });
        // `X-Real-IP` holds one address; with several lines, the last one counts.
        let limit = if header == ForwardedHeader::XRealIp {
            1
        } else {
            usize::MAX
        };
        hops.take(limit)
    }
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("trusted", &self.trusted)
            .field("header", &self.header)
            .field("max_hops", &self.max_hops)
            .field("ipv6_prefix", &self.peer.ipv6_prefix)
            .finish_non_exhaustive()
    }
}

impl<B> KeyExtractor<B> for ClientIp {
    fn extract(&self, request: &Request<B>) -> Option<Key> {
        let peer = self.peer.peer(request.extensions())?;
        Some(match self.client(peer, request.headers()) {
            Client::Ip(ip) => Key::ip_prefix(ip, self.peer.ipv6_prefix),
            Client::Obfuscated { proxy, id } => obfuscated_key(proxy, id),
        })
    }

    fn misconfigured(&self) -> Option<&'static str> {
        Some(MISSING_PEER)
    }
}

/// The client a [`ClientIp`] walk settles on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client<'h> {
    Ip(IpAddr),
    /// An RFC 7239 obfuscated identifier, as written by the trusted `proxy`.
    Obfuscated {
        proxy: IpAddr,
        id: &'h str,
    },
}

/// Walks `hops` (rightmost first) from a trusted `peer`.
fn walk<'h>(
    peer: IpAddr,
    hops: impl Iterator<Item = Hop<'h>>,
    trusted: &TrustedProxies,
    max_hops: usize,
) -> Client<'h> {
    let mut last = peer;
    for (n, hop) in hops.enumerate() {
        if n == max_hops {
            tracing::debug!(%peer, max_hops, "forwarding chain longer than the hop bound; counting the last trusted hop");
            return Client::Ip(last);
        }
        match hop {
            Hop::Ip(ip) => {
                let ip = ip.to_canonical();
                if !trusted.contains(ip) {
                    return Client::Ip(ip);
                }
                last = ip;
            }
            Hop::Obfuscated(id) => return Client::Obfuscated { proxy: last, id },
            Hop::Unknown => return Client::Ip(last),
            Hop::Malformed => {
                tracing::debug!(%peer, hop = n, "malformed forwarding header entry; counting the last trusted hop");
                return Client::Ip(last);
            }
        }
    }
    Client::Ip(last)
}

/// An obfuscated identifier is only unique to the proxy that made it up.
fn obfuscated_key(proxy: IpAddr, id: &str) -> Key {
    Key::text(&format!("fwd:{proxy}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{key_of, request, trusted};
    use super::*;

    #[test]
    fn forged_headers_from_untrusted_peers_are_ignored() {
        let client = ClientIp::new(trusted("10.0.0.0/8"));
        let forged = request(
            Some("198.51.100.7:1234"),
            &[("x-forwarded-for", b"1.2.3.4")],
        );
        assert_eq!(key_of(&client, &forged), "ip:198.51.100.7");
        let proxied = request(Some("10.0.0.2:1234"), &[("x-forwarded-for", b"1.2.3.4")]);
        assert_eq!(key_of(&client, &proxied), "ip:1.2.3.4");
    }

    #[test]
    fn the_walk_skips_trusted_hops_from_the_right() {
        let client = ClientIp::new(trusted("10.0.0.0/8, 192.168.0.0/16"));
        let key = |peer: &str, xff: &[&[u8]]| {
            let headers: Vec<_> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            key_of(&client, &request(Some(peer), &headers))
        };
        // The client prepended a forged address; the proxy appended the real one.
        assert_eq!(
            key("10.0.0.2:1", &[b"6.6.6.6, 203.0.113.5, 192.168.3.3"]),
            "ip:203.0.113.5"
        );
        // Over several header lines, in order.
        assert_eq!(
            key("10.0.0.2:1", &[b"6.6.6.6", b"203.0.113.5", b"192.168.3.3"]),
            "ip:203.0.113.5"
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            key("10.0.0.2:1", &[b"10.9.9.9, 192.168.3.3"]),
            "ip:10.9.9.9"
        );
        // No header: the proxy itself.
        assert_eq!(key("10.0.0.2:1", &[]), "ip:10.0.0.2");
        // A port, an IPv4-mapped client, an IPv6 client grouped by /64.
        assert_eq!(key("10.0.0.2:1", &[b"203.0.113.5:5555"]), "ip:203.0.113.5");
        assert_eq!(
            key("10.0.0.2:1", &[b"::ffff:203.0.113.5"]),
            "ip:203.0.113.5"
        );
        assert_eq!(
            key("10.0.0.2:1", &[b"2001:db8:aa:bb:1::1"]),
            "ip:2001:db8:aa:bb::"
        );
        // A mapped trusted peer is trusted.
        assert_eq!(
            key("[::ffff:10.0.0.2]:1", &[b"203.0.113.5"]),
            "ip:203.0.113.5"
        );
    }

    #[test]
    fn malformed_entries_stop_the_walk_at_the_last_trusted_hop() {
        let client = ClientIp::new(trusted("10.0.0.0/8"));
        let key = |xff: &[u8]| {
            key_of(
                &client,
                &request(Some("10.0.0.2:1"), &[("x-forwarded-for", xff)]),
            )
        };
        // Garbage where the client's address should be: the proxy is counted, never the
        // forged address behind it.
        assert_eq!(key(b"6.6.6.6, garbage"), "ip:10.0.0.2");
        assert_eq!(key(b"6.6.6.6, garbage, 10.1.1.1"), "ip:10.1.1.1");
        assert_eq!(key(b"6.6.6.6,,"), "ip:10.0.0.2");
        assert_eq!(key(b"6.6.6.6, unknown"), "ip:10.0.0.2");
        assert_eq!(key(&[b'1', 0xff, b',', b'2']), "ip:10.0.0.2");
        assert_eq!(
            key(&[
                0x80, 0x81, b',', b' ', b'7', b'.', b'7', b'.', b'7', b'.', b'7'
            ]),
            "ip:7.7.7.7"
        );
        // Garbage left of the client is never read.
        assert_eq!(key(b"\xfe\xfdjunk, 203.0.113.5"), "ip:203.0.113.5");
    }

    /// How many forwarding-header entries the walk parses for `request`: the work it does,
    /// counted rather than timed.
    fn examined(client: &ClientIp, request: &Request<()>) -> usize {
        let peer = client.peer.peer(request.extensions()).unwrap();
        let mut parsed = 0;
        let hops = client.hops(request.headers()).inspect(|_| parsed += 1);
        walk(peer, hops, &client.trusted, client.max_hops);
        parsed
    }

    #[test]
    fn huge_headers_cost_bounded_work() {
        let client = ClientIp::new(trusted("10.0.0.0/8"));
        let mut hops = "10.1.1.1, ".repeat(100_000);
        hops.push_str("10.1.1.2");
        let req = request(Some("10.0.0.2:1"), &[("x-forwarded-for", hops.as_bytes())]);
        // Past the hop bound: the last trusted hop reached.
        assert_eq!(key_of(&client, &req), "ip:10.1.1.1");
        // ... having parsed no more entries than the bound (plus the one that crosses it),
        // out of 100 001.
        assert!(examined(&client, &req) <= DEFAULT_MAX_HOPS + 1);
        let blob = vec![b'a'; 1 << 20];
        let req = request(Some("10.0.0.2:1"), &[("x-forwarded-for", &blob)]);
        assert_eq!(key_of(&client, &req), "ip:10.0.0.2");
        assert_eq!(examined(&client, &req), 1);
        let req = request(Some("10.0.0.2:1"), &[("forwarded", &blob)]);
        let forwarded = client.clone().header(ForwardedHeader::Forwarded);
        assert_eq!(key_of(&forwarded, &req), "ip:10.0.0.2");
        assert_eq!(examined(&forwarded, &req), 1);
        let short = client.max_hops(1);
        let req = request(
            Some("10.0.0.2:1"),
            &[("x-forwarded-for", b"203.0.113.5, 10.1.1.1")],
        );
        assert_eq!(key_of(&short, &req), "ip:10.1.1.1");
    }

    #[test]
    fn forwarded_and_x_real_ip_are_read_when_chosen() {
        let forwarded = ClientIp::new(trusted("10.0.0.0/8")).header(ForwardedHeader::Forwarded);
        let req = request(
            Some("10.0.0.2:1"),
            &[
                ("x-forwarded-for", b"6.6.6.6"),
                ("forwarded", br#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.3.3.3;by=10.0.0.2"#),
            ],
        );
        assert_eq!(key_of(&forwarded, &req), "ip:2001:db8:cafe::");
        let req = request(Some("10.0.0.2:1"), &[("forwarded", b"for=_abc;proto=http")]);
        let key = key_of(&forwarded, &req);
        assert_eq!(key, "t:fwd:10.0.0.2/_abc");
        let req = request(Some("10.0.0.2:1"), &[("forwarded", b"for=unknown")]);
        assert_eq!(key_of(&forwarded, &req), "ip:10.0.0.2");
        // Only the chosen header counts.
        let req = request(Some("10.0.0.2:1"), &[("x-forwarded-for", b"6.6.6.6")]);
        assert_eq!(key_of(&forwarded, &req), "ip:10.0.0.2");

        let real = ClientIp::new(trusted("10.0.0.0/8")).header(ForwardedHeader::XRealIp);
        let req = request(Some("10.0.0.2:1"), &[("x-real-ip", b"203.0.113.5")]);
        assert_eq!(key_of(&real, &req), "ip:203.0.113.5");
        let req = request(
            Some("10.0.0.2:1"),
            &[("x-real-ip", b"6.6.6.6"), ("x-real-ip", b"203.0.113.5")],
        );
        assert_eq!(key_of(&real, &req), "ip:203.0.113.5");
        let req = request(Some("198.51.100.1:1"), &[("x-real-ip", b"203.0.113.5")]);
        assert_eq!(key_of(&real, &req), "ip:198.51.100.1");
    }
}
