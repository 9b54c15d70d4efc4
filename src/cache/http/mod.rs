//! Whole `GET` responses cached in a [`Cache`](crate::cache::Cache): one line per route,
//! tagged, invalidated by tag, with `ETag`/`304`, single-flight and stale-while-revalidate.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{convert::Infallible, time::Duration};
//!
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use perfkit::cache::{Cache, EntryOptions, http::ResponseCacheLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let cache = Cache::builder().prefix("app").build()?; // memory backend
//! let layer = ResponseCacheLayer::new(cache.clone())
//!     .options(EntryOptions::new().tag("stats").stale_while_revalidate(Duration::from_secs(10)))
//!     .ttl(Duration::from_secs(60));
//! let service = ServiceBuilder::new().layer(layer).service_fn(|_request: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"users\":3}"))))
//! });
//!
//! let first = service.clone().oneshot(Request::get("/stats").body(())?).await?;
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! let etag = first.headers()["etag"].clone();
//!
//! let second = service.clone().oneshot(Request::get("/stats").body(())?).await?;
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(second.into_body().collect().await?.to_bytes(), "{\"users\":3}");
//!
//! // A client that has the body already gets `304 Not Modified`, the handler not run.
//! let request = Request::get("/stats").header("if-none-match", etag).body(())?;
//! let revalidated = service.clone().oneshot(request).await?;
//! assert_eq!(revalidated.status(), 304);
//!
//! // The data changed: every entry tagged `stats` is invalid, in one write.
//! cache.invalidate_tags(&["stats"]).await?;
//! let third = service.oneshot(Request::get("/stats").body(())?).await?;
//! assert_eq!(third.headers()["x-cache"], "MISS");
//! # Ok(())
//! # }
//! ```
//!
//! Add it to one route (with axum, `get(handler).layer(layer)`); its statistics are
//! counted under the route template (a [`route_fn`](ResponseCacheLayer::route_fn) label,
//! else axum's `MatchedPath`), so layers on several routes can share one
//! [`ResponseCacheStats`] ([`ResponseCacheLayer::with_stats`]).
//!
//! # What is cached
//!
//! - **`GET` and `HEAD`.** A `HEAD` is answered from the `GET` entry; a `HEAD` that finds
//!   none is passed to the handler and nothing is stored. Other methods pass through.
//! - **Statuses**: `200` by default ([`statuses`](ResponseCacheLayer::statuses)).
//! - **The key** is the path, the query parameters sorted (`?b=2&a=1` and `?a=1&b=2` share
//!   an entry), the values of the request headers the route varies on
//!   ([`vary`](ResponseCacheLayer::vary)), and the user's key on
//!   [`per_user`](ResponseCacheLayer::per_user) routes. A response whose `Vary` names any
//!   other header, or `*`, is not stored.
//! - **Never shared**: responses with `Set-Cookie`, or `Cache-Control: private`, `no-store`
//!   or `no-cache`; requests with `Authorization` or `Cookie`, unless the route opts in
//!   with a per-user key. A request's `Cache-Control: no-cache` (or `no-store`, or
//!   `Pragma: no-cache`) goes to the handler
//!   ([`honor_request_no_cache`](ResponseCacheLayer::honor_request_no_cache)).
//! - **TTL**: [`ttl_for`](ResponseCacheLayer::ttl_for) on the request, else the response's
//!   `Cache-Control: s-maxage`, then `max-age`, then the layer's
//!   [`options`](ResponseCacheLayer::options) (whose stale-while-revalidate and
//!   stale-if-error windows apply as in [`Cache::get_or_compute`](crate::cache::Cache::get_or_compute)).
//!   `max-age=0` stores nothing.
//! - **Tags**: the options' tags plus [`tags_for`](ResponseCacheLayer::tags_for) on the
//!   request; [`Cache::invalidate_tags`](crate::cache::Cache::invalidate_tags) drops them
//!   on every backend, and on every instance sharing a Redis.
//! - **Size**: bodies up to [`max_body_size`](ResponseCacheLayer::max_body_size) (1 MiB by
//!   default). A body known to be larger streams through untouched; one of unknown length
//!   is read up to the limit, then what was read and the rest stream through. At most the
//!   limit is buffered per request. A body that fails, or ends in trailers, is passed on
//!   as it came and not stored; so is a handler's error. A handler that panics stores
//!   nothing.
//!
//! # Headers
//!
//! Every answer carries `X-Cache`: `HIT` (a fresh entry), `STALE` (an entry past its TTL,
//! within a stale window) or `MISS` (computed for this request, waited for, or not
//! cacheable). Entries carry a strong `ETag`, the XXH3-64 of the body (the handler's own
//! `ETag` is kept when it set one), and `Age`. `If-None-Match` (weak comparison, lists and
//! `*`) and, without it, `If-Modified-Since` against the handler's `Last-Modified` are
//! answered `304 Not Modified` from the entry, without running the handler.
//!
//! # Single-flight, and a cache that is down
//!
//! Concurrent requests for one cold key run the handler once; the others wait for its
//! response. A request waits for the cache (a lookup, or another request's computation) at
//! most [`wait`](ResponseCacheLayer::wait); past it, its own handler answers it (counted
//! as [`Bypass::CacheWait`] and logged at most once per 10 s). A request never cuts short
//! a computation it leads. A backend that fails is a miss (the cache logs and counts it,
//! [`CacheSnapshot::errors`](crate::cache::CacheSnapshot::errors)), and a Redis that hangs
//! costs at most its backend's deadline per call (100 ms by default) until its breaker
//! opens: the handler answers either way.
//!
//! # Compression
//!
//! Entries hold the identity body. Put [`CompressionLayer`](crate::compression::CompressionLayer)
//! *outside* this layer (`ServiceBuilder::new().layer(compression).layer(cache)`): the
//! cache stores and serves identity bodies, and compression encodes each answer, adding
//! `Vary: Accept-Encoding`. With compression *inside*, responses reach the cache already
//! encoded and are stored only when the route varies on `Accept-Encoding`
//! (`vary([ACCEPT_ENCODING])`, one entry per distinct header value); otherwise they are
//! passed through uncached ([`Bypass::Encoded`]), never served to a client that did not
//! ask for the coding.

//!
//! # Cost
//!
//! Measured by `benches/response_cache.rs` in process, request to collected body, on a
//! busy two-core machine (`BENCHMARKS.md`, "Response cache"): a memory hit takes 2.4 µs
//! (the trivial handler it caches 0.55 µs; a 20 ms handler, 21.4 ms); a Redis hit 33 µs,
//! 2.0× a raw `GET` of the same bytes, the cost of the cache core's validated read; a
//! brotli hit of a 200 KB body 4.7 µs, against 1.78 ms for compressing it on every request.
//! Over loopback TCP through [`serve`](mod@crate::serve), brotli hits of that body answer 5.0×
//! as many requests per second as identity hits, and 76× as many as `CompressionLayer`
//! compressing each one.
//! Variant lookups are cache reads too, and count in [`Cache::stats`](crate::cache::Cache::stats).

mod body;
mod entry;
mod layer;
mod service;
mod stats;
#[cfg(test)]
mod tests;
#[cfg(feature = "_compression")]
mod variant;

#[doc(inline)]
pub use self::{
    body::ResponseCacheBody,
    layer::{DEFAULT_MAX_BODY, DEFAULT_WAIT, ResponseCacheLayer},
    service::{ResponseCache, ResponseFuture},
    stats::{
        Bypass, MAX_ROUTES, OTHER_ROUTE, ResponseCacheCounts, ResponseCacheSnapshot,
        ResponseCacheStats,
    },
};

#[cfg(feature = "_compression")]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "compression-br", feature = "compression-gzip")))
)]
#[doc(inline)]
pub use self::variant::{
    DEFAULT_VARIANT_BROTLI_QUALITY, DEFAULT_VARIANT_GZIP_LEVEL, DEFAULT_VARIANT_MIN_SIZE,
};
