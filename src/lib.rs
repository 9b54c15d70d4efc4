//! The performance toolkit for tower-based web backends.
//!
//! perfkit gives any stack built on [`tower`](https://docs.rs/tower) and [`http`] (axum,
//! hyper, tonic, or a hand-written service) the layers production backends keep writing by
//! hand, each measured side by side with the crate people would pick instead.
//!
//! | module | feature | what it does |
//! | --- | --- | --- |
//! | [`rate_limit`] | `rate-limit` | a layer enforcing per-client quotas (GCRA, sliding or fixed windows) in memory or shared through Redis, with in-memory insurance when Redis fails; spoof-proof client keys; `429` JSON and standard headers |
//! | [`timeout`] | `timeout` | answers slow requests with a `504` JSON body and cancels their work; per-route overrides |
//! | [`timing`] | `timing` | `X-Process-Time` / `Server-Timing` headers, slow-request log, per-route latency percentiles |
//! | [`pool`] | `postgres`, `sqlite`, `redis` | pool builders with the knobs backends tune, pool statistics, acquire timeouts that name their cause |
//! | [`cache`] | `cache` | typed cache over memory, Redis and tiered (in-process L1, Redis L2) backends: O(1) tag invalidation by epochs, single-flight, stale-while-revalidate, early refresh, stats |
//! | [`cache::http`] | `cache` | whole `GET` responses cached in a `Cache`: tags, `ETag`/`304`, single-flight, stale windows, never-share rules, brotli and gzip variants stored once (with a compression feature), a cache that is down never failing a request |
//! | [`health`] | `health` | checks run in the background; `/health`, `/health/ready`, `/health/live`, `/health/pools` answered without I/O |
//! | [`compression`] | `compression-br`, `compression-gzip` | brotli-first, gzip and deflate fallback response compression: RFC 9110 negotiation, skip rules that never break a response, an in-memory path with exact `Content-Length`, streams flushed as they come, bounded work per poll |
//! | [`paginate`] | `paginate` | page/offset pagination with a choice of count (exact, inline, estimated, none) and RFC 8288 links; keyset pagination with HMAC-signed cursors, over sqlx on PostgreSQL and SQLite |
//! | [`eager`] | `eager` | the children of a page of parents in one query (`= ANY($1)` on PostgreSQL, chunked `IN` on SQLite), grouped in parent order; a request-scoped `DataLoader` and the layer that gives each request its loaders |
//! | [`bulk`] | `bulk` | multi-row inserts in one transaction under the bind limit, all or none, the refused row named |
//! | [`serve`](mod@serve) | `serve` | serves any tower HTTP service over TCP (hyper 1, HTTP/1 and HTTP/2) with header-read, idle and write-stall timeouts, a connection bound, accept errors that never end the server, peer addresses for the rate limiter, graceful shutdown |
//!
//! Every layer is generic over request and response bodies and keeps the inner service's
//! error type: a timeout is an answer, never a dropped connection.
//!
//! # Example
//!
//! ```
//! # #[cfg(all(feature = "timeout", feature = "timing"))]
//! # async fn run() {
//! use std::{convert::Infallible, time::Duration};
//! use http::{Request, Response};
//! use perfkit::{timeout::TimeoutLayer, timing::TimingLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let timing = TimingLayer::new();
//! let stats = timing.stats();
//! let service = ServiceBuilder::new()
//!     .layer(timing)
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))
//!     .service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     });
//!
//! let response = service.oneshot(Request::new(String::new())).await.unwrap();
//! assert!(response.headers().contains_key("x-process-time"));
//! assert_eq!(stats.snapshot().routes[0].count, 1);
//! # }
//! # #[cfg(all(feature = "timeout", feature = "timing"))]
//! # tokio::runtime::Runtime::new().unwrap().block_on(run());
//! ```
//!
//! # Feature flags
//!
//! No feature is on by default; enable the capabilities you use, or `full` for all.
//!
//! - `rate-limit`: [`rate_limit`], the layer, key extractors and the memory store; with
//!   `redis`, the Redis store and its in-memory insurance.
//! - `timeout`: [`timeout`], the request timeout layer.
//! - `timing`: [`timing`], the request timing layer and its statistics.
//! - `postgres`, `sqlite`: [`pool`] builders over sqlx, and PostgreSQL diagnostics.
//! - `redis`: [`pool`]'s multiplexed Redis handle and bb8 pool.
//! - `compression-br`, `compression-gzip`: [`compression`], the compression layer with
//!   brotli, and with gzip and deflate; either one enables the layer.
//! - `cache`: [`cache`], the typed cache and its memory backend, and the response cache
//!   [`cache::http`]; with `redis`, the Redis and tiered backends; with a compression
//!   feature, the response cache's stored brotli and gzip variants.
//! - `health`: [`health`], background checks and the health service.
//! - `serve`: [`serve`](mod@serve), the hardened TCP server over hyper and hyper-util.
//! - `paginate`: [`paginate`], page/offset and keyset pagination over sqlx queries; with
//!   `postgres` and/or `sqlite` for the databases it runs on, with `axum` for its extractors.
//! - `eager`: [`eager`], `load_many` / `load_one`, the `DataLoader` and its layer, over
//!   sqlx on `postgres` and/or `sqlite`; with `axum`, the loaders are an extractor.
//! - `bulk`: [`bulk`], multi-row inserts in one transaction over sqlx on `postgres`
//!   and/or `sqlite`.
//! - `axum`: route templates from axum's `MatchedPath` for the timing statistics, and
//!   client addresses from axum's `ConnectInfo` for the rate limiter.
//! - `full`: every feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod body;
#[cfg(all(feature = "redis", any(feature = "cache", feature = "rate-limit")))]
mod breaker;
mod env;
#[cfg(any(
    feature = "health",
    feature = "rate-limit",
    feature = "timeout",
    feature = "postgres",
    feature = "sqlite",
    feature = "redis",
    feature = "paginate"
))]
mod fmt;
#[cfg(any(
    feature = "timing",
    feature = "postgres",
    feature = "sqlite",
    feature = "redis",
    feature = "cache"
))]
mod histogram;
#[cfg(any(
    feature = "cache",
    feature = "rate-limit",
    feature = "serve",
    feature = "paginate"
))]
mod log_gate;
#[cfg(any(feature = "paginate", feature = "eager", feature = "bulk"))]
mod query;
#[cfg(any(feature = "timing", feature = "rate-limit", feature = "cache"))]
mod short_text;

/// The tracing-capture helper the integration tests use, shared with the unit tests.
#[cfg(test)]
#[path = "../tests/support/capture.rs"]
mod capture;

#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub mod rate_limit;

#[cfg(feature = "timeout")]
#[cfg_attr(docsrs, doc(cfg(feature = "timeout")))]
pub mod timeout;

#[cfg(feature = "timing")]
#[cfg_attr(docsrs, doc(cfg(feature = "timing")))]
pub mod timing;

#[cfg(any(feature = "compression-gzip", feature = "compression-br"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "compression-gzip", feature = "compression-br")))
)]
pub mod compression;

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "postgres", feature = "sqlite", feature = "redis")))
)]
pub mod pool;

#[cfg(feature = "health")]
#[cfg_attr(docsrs, doc(cfg(feature = "health")))]
pub mod health;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;

#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;

#[cfg(feature = "paginate")]
#[cfg_attr(docsrs, doc(cfg(feature = "paginate")))]
pub mod paginate;

#[cfg(feature = "eager")]
#[cfg_attr(docsrs, doc(cfg(feature = "eager")))]
pub mod eager;

#[cfg(feature = "bulk")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulk")))]
pub mod bulk;

#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
#[doc(inline)]
pub use serve::serve;

pub use env::EnvError;

#[cfg(all(
    doctest,
    feature = "timeout",
    feature = "timing",
    feature = "axum",
    feature = "health",
    feature = "sqlite",
    feature = "rate-limit",
    feature = "cache",
    feature = "serve",
    feature = "paginate"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
