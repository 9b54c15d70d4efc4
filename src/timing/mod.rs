//! Request timing: an `X-Process-Time` header, a slow-request log and per-route latency
//! statistics.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//!
//! use http::{Request, Response};
//! use perfkit::timing::TimingLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let timing = TimingLayer::new()
//!     .server_timing(true)
//!     .slow_threshold(Duration::from_millis(500))
//!     .route_fn(|request: &Request<String>| match request.uri().path() {
//!         "/health" => Some("/health"),
//!         path if path.starts_with("/users/") => Some("/users/{id}"),
//!         _ => None,
//!     });
//! let stats = timing.stats();
//!
//! let service = ServiceBuilder::new()
//!     .layer(timing)
//!     .service_fn(|_request: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("hello")))
//!     });
//!
//! for path in ["/users/1", "/users/2", "/health"] {
//!     let request = Request::get(path).body(String::new()).unwrap();
//!     let response = service.clone().oneshot(request).await.unwrap();
//!     // For example `X-Process-Time: 0.04ms` and `Server-Timing: app;dur=0.04`.
//!     assert!(response.headers().contains_key("x-process-time"));
//!     assert!(response.headers().contains_key("server-timing"));
//! }
//!
//! let snapshot = stats.snapshot();
//! assert_eq!(snapshot.route("/users/{id}").unwrap().count, 2);
//! assert_eq!(snapshot.route("/health").unwrap().count, 1);
//! // `TimingSnapshot` serializes, e.g. for a metrics endpoint:
//! // {"routes":[{"route":"/health","count":1,"server_errors":0,"p50_ms":0.012,...},...]}
//! let json = serde_json::to_string(&snapshot).unwrap();
//! # assert!(json.contains("/users/{id}"));
//! # }
//! ```
//!
//! With axum, add the layer with `Router::layer` so it sees the matched route template:
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use axum::{Router, body::Body, routing::get};
//! use http::Request;
//! use perfkit::timing::TimingLayer;
//! use tower::ServiceExt;
//!
//! let timing = TimingLayer::new();
//! let stats = timing.stats();
//! let app = Router::new()
//!     .route("/users/{id}", get(|| async { "user" }))
//!     .layer(timing);
//!
//! for path in ["/users/1", "/users/2"] {
//!     let request = Request::get(path).body(Body::empty()).unwrap();
//!     app.clone().oneshot(request).await.unwrap();
//! }
//! assert_eq!(stats.route("/users/{id}").unwrap().count, 2);
//! # }
//! # #[cfg(not(feature = "axum"))]
//! # fn main() {}
//! ```
//!
//! # What is measured
//!
//! The clock starts when [`Timing`] is called and stops when the inner service's future
//! produces the response headers. That duration goes into the `X-Process-Time` header, in
//! milliseconds with two decimals (`X-Process-Time: 125.43ms`, rounded to the nearest
//! 10 µs), replacing any value the inner service set. With
//! [`server_timing(true)`](TimingLayer::server_timing) it is also appended as
//! `Server-Timing: app;dur=125.43`, after any `Server-Timing` the inner service set.
//!
//! The same duration feeds the statistics and the slow-request log, unless
//! [`measure_body(true)`](TimingLayer::measure_body) is set: then they use the time until
//! the response body has been streamed to its end, fails, or is dropped unfinished. Each
//! request is recorded once. A request whose inner service returns an error, or whose
//! future is dropped before the response, is not recorded.
//!
//! Time comes from [`tokio::time::Instant`], so tests under `tokio::time::pause()` see
//! exact durations.
//!
//! # Slow-request log
//!
//! A request that takes at least the [slow threshold](TimingLayer::slow_threshold) (one
//! second by default) is logged with [`tracing`] at `WARN`, target `perfkit::timing`,
//! message `slow request`, and the fields `method`, `route` (the label below), `status`
//! (a `u16`) and `duration_ms` (an `f64`).
//!
//! # Route labels
//!
//! Statistics are kept per route *template* (`/users/{id}`), never per raw path, so their
//! memory stays bounded whatever clients send. A request's label is, in order:
//!
//! 1. what the [`route_fn`](TimingLayer::route_fn) closure returns (a `&'static str`),
//! 2. with the `axum` feature, axum's `MatchedPath`, present when the layer is added with
//!    `Router::layer` or `Router::route_layer` (a layer wrapping the whole `Router` runs
//!    before routing and sees no `MatchedPath`),
//! 3. otherwise [`OTHER_ROUTE`] (`"other"`).
//!
//! At most [`TimingStats::max_routes`] distinct labels (256 by default, fixed when the
//! statistics are created with [`TimingStats::with_max_routes`]) are kept; requests with
//! further labels are counted under [`OTHER_ROUTE`]. [`TimingLayer::max_routes`] sets a
//! lower bound for one layer without changing the statistics other layers share.
//!
//! # Statistics
//!
//! [`TimingStats`] is a cheap, cloneable handle shared by every service of a layer. Its
//! [`snapshot`](TimingStats::snapshot) gives, per route, the request count, the number of
//! `5xx` responses, the p50, p95 and p99 latencies, the maximum and the mean.
//!
//! Each route keeps a fixed-size log-linear histogram of 896 atomic counters (7 KiB) over
//! microseconds: one bucket per microsecond below 32 µs, then every power of two split into
//! 32 equal buckets. A percentile is reported as the midpoint of its bucket, so it is
//! within about ±1.6 % of the recorded latency (exact below 64 µs), and never above the
//! maximum. The maximum and the mean are exact to the microsecond. Latencies from about
//! 71.6 minutes (2³² µs) up share the last bucket.
//!
//! Recording a request takes no lock and allocates nothing beyond the header value: the
//! route table is append-only and read with atomic loads, each request holds a reference
//! count on its route's entry, and the counters are relaxed atomics. Only the first request
//! of a new route takes a mutex, to add the route. Header values of requests faster than
//! 10 ms come from a static table, so those requests allocate nothing at all.

mod body;
mod future;
mod layer;
mod route;
mod service;
mod stats;

#[cfg(test)]
mod tests;

#[doc(inline)]
pub use self::{
    body::TimingBody,
    future::ResponseFuture,
    layer::TimingLayer,
    route::{DefaultRouteLabel, RouteLabel},
    service::Timing,
    stats::{OTHER_ROUTE, RouteSnapshot, TimingSnapshot, TimingStats},
};
