//! Who a request is counted against: the [`KeyExtractor`] trait and its built-ins.

use std::{
    fmt,
    marker::PhantomData,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use http::{Extensions, HeaderMap, HeaderName, Request, header::FORWARDED};
use ipnet::IpNet;

use super::Key;

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

/// How to provide the peer address, named in the error logged when it is missing.
const MISSING_PEER: &str = "no peer address in the request extensions: serve axum with \
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
/// Behind a reverse proxy every request comes from the proxy: use [`ClientIp`] there.
#[derive(Clone, Copy)]
pub struct PeerIp {
    lookup: PeerLookup,
    ipv6_prefix: u8,
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
            .map(|ip| ip_key(ip, self.ipv6_prefix))
    }

    fn misconfigured(&self) -> Option<&'static str> {
        Some(MISSING_PEER)
    }
}

// ===== TrustedProxies =====

/// The networks whose forwarding headers are believed: a list of CIDR ranges.
///
/// Parses from a comma-separated list of ranges or single addresses
/// (`"10.0.0.0/8, 192.168.1.7, fd00::/8"`); a single address is its own /32 or /128.
/// IPv4-mapped IPv6 addresses match the IPv4 ranges. Cloning shares the list.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
}

impl TrustedProxies {
    /// Trusts no proxy: forwarding headers are never read.
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts the given networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().map(canonical_net).collect(),
        }
    }

    /// The ranges from `TRUSTED_PROXIES` (comma-separated), or none when it is unset or
    /// empty.
    ///
    /// # Errors
    ///
    /// When the variable holds something that is not a list of addresses or CIDR ranges.
    pub fn from_env() -> Result<Self, crate::EnvError> {
        Ok(crate::env::var::<Self>(
            "TRUSTED_PROXIES",
            "a comma-separated list of IP addresses or CIDR ranges",
        )?
        .unwrap_or_default())
    }

    /// Whether `ip` (canonicalized) is in one of the trusted ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether no range is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The trusted ranges.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.nets.iter()).finish()
    }
}

/// Reads a comma-separated list of addresses and CIDR ranges; empty entries are skipped.
impl FromStr for TrustedProxies {
    type Err = super::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| super::Error::ParseTrustedProxies {
                    entry: entry.chars().take(64).collect(),
                })?;
            nets.push(canonical_net(net));
        }
        Ok(Self::new(nets))
    }
}

/// The network with its host bits cleared; IPv4-mapped IPv6 ranges as IPv4
/// (`::ffff:10.0.0.0/104` is `10.0.0.0/8`), as addresses are compared canonical.
pub(super) fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_or(net, |net| net.trunc())
            }
            None => net.trunc(),
        },
        net => net.trunc(),
    }
}

// ===== ClientIp =====

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
        let lines = headers.get_all(self.header.name()).into_iter().rev();
        let hops = lines.flat_map(move |line| {
            let bytes = line.as_bytes();
            let forwarded = self.header == ForwardedHeader::Forwarded;
            RevElements::new(bytes, forwarded).map(move |element| {
                if forwarded {
                    forwarded_for(element)
                } else {
                    node(element)
                }
            })
        });
        // `X-Real-IP` holds one address; with several lines, the last one counts.
        let limit = if self.header == ForwardedHeader::XRealIp {
            1
        } else {
            usize::MAX
        };
        let hops = hops.take(limit);
        walk(peer, hops, &self.trusted, self.max_hops)
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
            Client::Ip(ip) => ip_key(ip, self.peer.ipv6_prefix),
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

/// One entry of a forwarding header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop<'h> {
    Ip(IpAddr),
    Obfuscated(&'h str),
    /// `unknown`, or a `Forwarded` element without `for`.
    Unknown,
    Malformed,
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

/// The longest entry worth parsing: `for="[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535"`
/// and a few parameters fit well within it.
const MAX_ELEMENT: usize = 256;

/// The comma-separated elements of one header line, rightmost first, trimmed. With `quoted`,
/// commas inside double quotes do not separate (RFC 7239 quoted strings).
struct RevElements<'h> {
    rest: Option<&'h [u8]>,
    quoted: bool,
}

impl<'h> RevElements<'h> {
    fn new(bytes: &'h [u8], quoted: bool) -> Self {
        Self {
            rest: Some(bytes),
            quoted,
        }
    }
}

impl<'h> Iterator for RevElements<'h> {
    type Item = &'h [u8];

    fn next(&mut self) -> Option<&'h [u8]> {
        let rest = self.rest?;
        let mut in_quotes = false;
        let mut split = None;
        for (i, &b) in rest.iter().enumerate().rev() {
            if self.quoted && b == b'"' {
                in_quotes = !in_quotes;
            } else if b == b',' && !in_quotes {
                split = Some(i);
                break;
            }
        }
        let element = match split {
            Some(i) => {
                self.rest = Some(&rest[..i]);
                &rest[i + 1..]
            }
            None => {
                self.rest = None;
                rest
            }
        };
        Some(element.trim_ascii())
    }
}

/// Reads one node (`X-Forwarded-For` entry, `X-Real-IP` value, or `Forwarded` `for=` value
/// without its quotes): an address, optionally with a port, IPv6 optionally in brackets.
fn node(element: &[u8]) -> Hop<'_> {
    if element.is_empty() || element.len() > MAX_ELEMENT {
        return Hop::Malformed;
    }
    let Ok(text) = std::str::from_utf8(element) else {
        return Hop::Malformed;
    };
    if text.eq_ignore_ascii_case("unknown") {
        return Hop::Unknown;
    }
    if let Some(id) = text.strip_prefix('_') {
        let valid = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        return if valid {
            Hop::Obfuscated(text)
        } else {
            Hop::Malformed
        };
    }
    parse_ip(text).map_or(Hop::Malformed, Hop::Ip)
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    // IPv4 with a port: exactly one colon.
    let (host, port) = text.split_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A decimal port, or an RFC 7239 obfuscated port (`_abc`).
fn valid_port(port: &str) -> bool {
    (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
        || port.strip_prefix('_').is_some_and(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// The `for` parameter of one RFC 7239 element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
fn forwarded_for(element: &[u8]) -> Hop<'_> {
    if element.len() > MAX_ELEMENT {
        return Hop::Malformed;
    }
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            return Hop::Malformed;
        };
        let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        if !name.eq_ignore_ascii_case(b"for") {
            continue;
        }
        if found.is_some() {
            // A parameter may appear once per element.
            return Hop::Malformed;
        }
        let value = match value {
            [b'"', inner @ .., b'"'] => inner,
            [b'"', ..] => return Hop::Malformed,
            value => value,
        };
        found = Some(value);
    }
    found.map_or(Hop::Unknown, node)
}

/// Splits `bytes` on `sep` outside double quotes.
fn split_unquoted(bytes: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut in_quotes = false;
    bytes.split(move |&b| {
        if b == b'"' {
            in_quotes = !in_quotes;
        }
        b == sep && !in_quotes
    })
}

// ===== HeaderKey, ExtensionKey, Global, Or =====

/// A request header, such as an API key, hashed before it becomes a key.
///
/// The raw value never reaches the store, logs or response headers: the key is a SHA-256
/// digest of it, the same on every server so that a shared store agrees. A request
/// without the header (or with it empty) has no key, and the layer's
/// [`MissingKey`](super::MissingKey) rule applies; combine with another extractor with
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
        (!value.is_empty()).then(|| hashed_key(value))
    }
}

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

/// One key for every request: a budget the whole service shares.
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

impl<B> KeyExtractor<B> for Global {
    #[inline]
    fn extract(&self, _: &Request<B>) -> Option<Key> {
        Some(global_key())
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

// ===== Keys =====

#[inline]
fn ip_key(ip: IpAddr, ipv6_prefix: u8) -> Key {
    Key::ip_prefix(ip, ipv6_prefix)
}

/// An obfuscated identifier is only unique to the proxy that made it up.
fn obfuscated_key(proxy: IpAddr, id: &str) -> Key {
    Key::text(&format!("fwd:{proxy}/{id}"))
}

#[inline]
fn hashed_key(value: &[u8]) -> Key {
    Key::hashed(value)
}

#[inline]
fn global_key() -> Key {
    Key::global()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(s: &str) -> TrustedProxies {
        s.parse().unwrap()
    }

    fn request(peer: Option<&str>, headers: &[(&str, &[u8])]) -> Request<()> {
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

    fn key_of(extractor: &impl KeyExtractor<()>, request: &Request<()>) -> String {
        extractor.extract(request).unwrap().to_string()
    }

    #[test]
    fn nodes_parse_in_every_usual_form() {
        let cases: [(&str, Hop<'_>); 14] = [
            ("192.0.2.60", Hop::Ip(ip("192.0.2.60"))),
            ("192.0.2.60:4711", Hop::Ip(ip("192.0.2.60"))),
            ("2001:db8::1", Hop::Ip(ip("2001:db8::1"))),
            ("[2001:db8::1]", Hop::Ip(ip("2001:db8::1"))),
            ("[2001:db8::1]:443", Hop::Ip(ip("2001:db8::1"))),
            ("[2001:db8::1]:_port", Hop::Ip(ip("2001:db8::1"))),
            ("unknown", Hop::Unknown),
            ("UNKNOWN", Hop::Unknown),
            ("_hidden.Proxy-1", Hop::Obfuscated("_hidden.Proxy-1")),
            ("_", Hop::Malformed),
            ("_bad!", Hop::Malformed),
            ("192.0.2.60:99999999", Hop::Malformed),
            ("[2001:db8::1", Hop::Malformed),
            ("example.com", Hop::Malformed),
        ];
        for (text, expected) in cases {
            assert_eq!(node(text.as_bytes()), expected, "{text}");
        }
        assert_eq!(node(b""), Hop::Malformed);
        assert_eq!(node(&[0xff, 0xfe]), Hop::Malformed);
        assert_eq!(node("1".repeat(MAX_ELEMENT + 1).as_bytes()), Hop::Malformed);
    }

    #[test]
    fn elements_come_rightmost_first_and_quotes_protect_commas() {
        let plain: Vec<_> = RevElements::new(b"a, b ,c", false).collect();
        assert_eq!(plain, [&b"c"[..], b"b", b"a"]);
        let quoted: Vec<_> = RevElements::new(br#"for="x,y";by=1, for=z"#, true).collect();
        assert_eq!(quoted, [&b"for=z"[..], br#"for="x,y";by=1"#]);
    }

    #[test]
    fn forwarded_elements_yield_their_for_parameter() {
        let cases: [(&str, Hop<'_>); 8] = [
            ("for=192.0.2.43", Hop::Ip(ip("192.0.2.43"))),
            (
                r#"For="[2001:db8:cafe::17]:4711""#,
                Hop::Ip(ip("2001:db8:cafe::17")),
            ),
            (
                "for=192.0.2.60;proto=http;by=203.0.113.43",
                Hop::Ip(ip("192.0.2.60")),
            ),
            (
                "proto=https; for = 198.51.100.17 ",
                Hop::Ip(ip("198.51.100.17")),
            ),
            ("for=_hidden", Hop::Obfuscated("_hidden")),
            ("proto=https", Hop::Unknown),
            ("for=1.2.3.4;for=5.6.7.8", Hop::Malformed),
            (r#"for="1.2.3.4"#, Hop::Malformed),
        ];
        for (text, expected) in cases {
            assert_eq!(forwarded_for(text.as_bytes()), expected, "{text}");
        }
        assert_eq!(forwarded_for(b"garbage"), Hop::Malformed);
    }

    #[test]
    fn trusted_proxies_parse_lists_and_name_the_bad_entry() {
        let list = trusted(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,::ffff:172.16.0.0/108,");
        assert!(list.contains(ip("10.200.0.1")));
        assert!(list.contains(ip("::ffff:10.1.1.1")));
        assert!(list.contains(ip("192.168.1.7")));
        assert!(!list.contains(ip("192.168.1.8")));
        assert!(list.contains(ip("fd12::1")));
        assert!(list.contains(ip("172.16.5.5")));
        assert!(trusted("").is_empty());
        let err = "10.0.0.0/8, nonsense"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid trusted proxy `nonsense`: write trusted proxies"),
            "{err}"
        );
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }

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

    #[test]
    fn huge_headers_cost_bounded_work() {
        let client = ClientIp::new(trusted("10.0.0.0/8"));
        let mut hops = "10.1.1.1, ".repeat(100_000);
        hops.push_str("10.1.1.2");
        let req = request(Some("10.0.0.2:1"), &[("x-forwarded-for", hops.as_bytes())]);
        let start = Instant::now();
        // Past the hop bound: the last trusted hop reached.
        assert_eq!(key_of(&client, &req), "ip:10.1.1.1");
        let blob = vec![b'a'; 1 << 20];
        let req = request(Some("10.0.0.2:1"), &[("x-forwarded-for", &blob)]);
        assert_eq!(key_of(&client, &req), "ip:10.0.0.2");
        let req = request(Some("10.0.0.2:1"), &[("forwarded", &blob)]);
        assert_eq!(
            key_of(&client.clone().header(ForwardedHeader::Forwarded), &req),
            "ip:10.0.0.2"
        );
        assert!(start.elapsed().as_secs() < 2, "{:?}", start.elapsed());
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
