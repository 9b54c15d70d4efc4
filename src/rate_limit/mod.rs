//! Rate limiting: per-client quotas decided by GCRA, sliding or fixed windows, in memory or
//! shared through Redis.
//!
//! [`RateLimitLayer`] counts each request against its client's key and answers those over
//! the quota with `429 Too Many Requests`; every response it decides carries the
//! rate-limit headers.
//!
//! ```
//! use std::{convert::Infallible, net::SocketAddr};
//! use http::{Request, Response, StatusCode};
//! use perfkit::rate_limit::{Quota, RateLimitLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = RateLimitLayer::new(Quota::per_minute(2));
//! let stats = layer.stats();
//! let mut service = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     });
//!
//! // Servers put the peer address in the request extensions (see "Keys" below).
//! let request = || {
//!     let mut request = Request::new(String::new());
//!     request.extensions_mut().insert(SocketAddr::from(([203, 0, 113, 7], 40000)));
//!     request
//! };
//! for _ in 0..2 {
//!     let response = service.ready().await.unwrap().call(request()).await.unwrap();
//!     assert_eq!(response.status(), StatusCode::OK);
//! }
//! let response = service.ready().await.unwrap().call(request()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(response.headers()["retry-after"], "30");
//! assert_eq!(stats.snapshot().refused, 1);
//! # }
//! ```
//!
//! The 429 body is JSON: `{"error":"rate_limited","message":"Too many requests; retry in 30
//! seconds","retry_after":30}`, `retry_after` matching the `Retry-After` header.
//!
//! # Policies
//!
//! ```
//! use perfkit::rate_limit::{Key, Policy, Quota};
//!
//! let policy: Policy = "10/second, 1000/hour".parse()?;
//! assert_eq!(policy.quotas(), [Quota::per_second(10), Quota::per_hour(1000)]);
//! let key = Key::ip("203.0.113.7".parse().unwrap());
//! assert_eq!(key.to_string(), "ip:203.0.113.7");
//! # Ok::<_, perfkit::rate_limit::Error>(())
//! ```
//!
//! # Stores
//!
//! A [`Store`] keeps each key's state and decides each request with one call,
//! [`Store::check`], which returns a [`Decision`]: admitted or not, the figures for the
//! rate-limit headers, and who decided ([`Source`]). Both stores run the same three
//! [`Algorithm`]s with the same integer arithmetic, and one test suite holds them to the
//! same decisions on a controlled clock.
//!
//! - [`MemoryStore`] (the default): sharded, a fixed size per key (64 bytes of state), and
//!   bounded ([`MemoryStoreBuilder::max_keys`], 100 000 by default): a full shard first
//!   forgets keys whose budget is whole again, so a flood of new addresses costs bounded
//!   memory. Decisions are ready at once and allocate nothing.
//! - [`RedisStore`] (with `redis`): budgets shared by every server, one `EVALSHA` per
//!   decision on Redis's own clock (`TIME`), keys hash-tagged to one cluster slot and
//!   expiring when idle. When Redis errors or misses its deadline (50 ms), the [`Fallback`]
//!   decides (an in-memory store of the instance by default), the failure is logged at most
//!   once per interval, and Redis is used again as soon as it answers.
//!
//! Time is a [`Clock`] of microseconds: the memory store reads the CPU's time-stamp counter
//! through [`QuantaClock`] by default, the Redis store's local timing reads [`SystemClock`]
//! ([`Instant`](std::time::Instant)), [`ManualClock`] is for tests, and [`CoarseClock`] where a clock refreshed every millisecond
//! is precise enough and a cheaper read matters (`benches/rate_limit.rs` measures both).
//!
//! # The layer
//!
//! One [`RateLimitLayer`] is one budget: its store and counters are shared by every
//! service it builds and every clone, so a key gets its quota once however many routes,
//! connections or clones serve it (unlike `tower::limit::RateLimit`, one budget per service
//! instance for all callers together). The builder chooses:
//!
//! - the store: a [`MemoryStore`] by default, [`RedisStore`](RateLimitLayer::store) to share
//!   budgets between servers. A store error never becomes an error response: a Redis store
//!   decides with its insurance, and an error that still reaches the layer lets the request
//!   through and is counted ([`RateLimitSnapshot::store_errors`]);
//! - the key ([`RateLimitLayer::key`]), see below;
//! - the default policy, and per-route policies or exemptions ([`RateLimitLayer::per_route`]);
//! - the cost of each request ([`RateLimitLayer::cost`]);
//! - an allow-list of keys and networks ([`RateLimitLayer::allow_keys`],
//!   [`RateLimitLayer::allow_nets`]);
//! - shadow mode, which counts and logs what would be refused and lets it through
//!   ([`RateLimitLayer::shadow`]);
//! - the header families ([`RateLimitLayer::headers`]).
//!
//! [`RateLimitLayer::from_env`] reads `RATE_LIMIT` (`100/minute` by default), or
//! `RATE_LIMIT_PER_MINUTE` when only that is set, and `TRUSTED_PROXIES`.
//!
//! The layer is generic over request and response bodies and keeps the inner service's
//! error type, so it runs under axum, hyper and tonic alike. A decision the store makes at
//! once (the memory store) costs no allocation in the response future; a Redis decision is
//! awaited before the inner service is called, so a refused request never reaches it.
//!
//! # Keys
//!
//! A [`KeyExtractor`] picks the key of each request; closures
//! `Fn(&Request<B>) -> Option<Key>` are extractors too. The built-ins:
//!
//! - [`PeerIp`] (the default): the connection's peer address, from axum's
//!   `ConnectInfo<SocketAddr>` (with the `axum` feature) or a plain [`SocketAddr`] extension
//!   (hyper-based servers); [`PeerIp::peer_from`] reads any other extension, such as tonic's
//!   `TcpConnectInfo`. IPv4-mapped IPv6 addresses count as IPv4; IPv6 addresses are grouped
//!   by /64.
//! - [`ClientIp`]: the client behind reverse proxies. Its forwarding header is read only
//!   when the peer is in the [`TrustedProxies`] list, walking from the right, so a client
//!   that forges `X-Forwarded-For` is still counted by its own address.
//! - [`HeaderKey`]: a header such as an API key, hashed before it becomes a key.
//! - [`ExtensionKey`]: a request extension such as the authenticated user.
//! - [`Global`]: one budget for every request. [`Or`] chains two extractors.
//!
//! ## When there is no key
//!
//! A request the extractor finds no key for (no peer address because the server was not
//! asked for connection info, no API key header) follows [`MissingKey`]: by default it is
//! counted against one shared fallback key; [`MissingKey::Refuse`] answers it with a chosen
//! status (`400` suits a missing credential) and [`MissingKey::Allow`] lets it through. The
//! first such request is logged once per layer; when the cause is missing connection info,
//! as an error naming the fix (`into_make_service_with_connect_info::<SocketAddr>()` for
//! axum, inserting the peer's `SocketAddr` for hyper). Never a panic, never a `500`.
//!
//! # Headers
//!
//! Every decided response carries (unless [`RateLimitHeaders`] says otherwise), for the
//! binding quota of the decision:
//!
//! | header | value |
//! | --- | --- |
//! | `X-RateLimit-Limit` | the quota's count |
//! | `X-RateLimit-Remaining` | requests still admitted now |
//! | `X-RateLimit-Reset` | seconds (rounded up) until the quota is whole again: not a timestamp |
//! | `RateLimit-Policy` | `"name";q=100;w=60` per quota (draft-ietf-httpapi-ratelimit-headers-09) |
//! | `RateLimit` | `"name";r=42;t=30;pk=:…:`, `pk` an opaque 64-bit digest of the key, keyed per layer |
//! | `Retry-After` | on refusals only: seconds until the same request would pass, rounded up, at least 1 |
//!
//! Exempt and allow-listed requests carry none of them. The partition key never reveals
//! the client's key: it is a keyed hash, stable for the life of the layer.
//!
//! # Counters
//!
//! [`RateLimitLayer::counters`] gives [`RateLimitStats`]: allowed, refused,
//! shadow-refused, exempt, allow-listed, missing-key, store errors and fallback decisions,
//! as a serializable [`RateLimitSnapshot`].
//!
//! [`SocketAddr`]: std::net::SocketAddr

mod algorithm;
mod clock;
mod error;
mod future;
mod headers;
mod key;
mod layer;
mod policy;
mod quota;
mod service;
mod stats;
mod store;

#[doc(inline)]
pub use self::{
    algorithm::Algorithm,
    clock::{Clock, CoarseClock, ManualClock, QuantaClock, SystemClock},
    error::{Error, Result},
    future::ResponseFuture,
    headers::RateLimitHeaders,
    key::{
        ClientIp, DEFAULT_IPV6_PREFIX, DEFAULT_MAX_HOPS, ExtensionKey, ForwardedHeader, Global,
        HeaderKey, Key, KeyExtractor, Or, PeerIp, PeerLookup, TrustedProxies, default_peer,
    },
    layer::{CostFor, DEFAULT_RATE_LIMIT, MissingKey, PolicyFor, RateLimitLayer, RoutePolicy},
    policy::{MAX_QUOTAS, Policy},
    quota::Quota,
    service::RateLimit,
    stats::{RateLimitSnapshot, RateLimitStats},
    store::{Check, Decision, MemoryStore, MemoryStoreBuilder, Source, Store},
};

#[doc(inline)]
#[allow(deprecated)]
pub use self::stats::RateLimitCounters;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use self::store::{Fallback, RedisStore, RedisStoreBuilder};
