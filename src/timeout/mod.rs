//! Request timeouts that answer instead of hanging up.
//!
//! [`TimeoutLayer`] gives every request a deadline. When the inner service has not produced
//! response headers by then, its future is dropped (so the work it was doing is cancelled)
//! and the client gets an answer:
//!
//! ```text
//! HTTP/1.1 504 Gateway Timeout
//! content-type: application/json
//!
//! {"error":"request_timeout","message":"Request exceeded 30.0s timeout"}
//! ```
//!
//! The status is configurable ([`TimeoutLayer::status_code`], typically `408` or `504`), the
//! message names the deadline that applied in seconds with one decimal, and the layer keeps
//! the inner service's error type: a timeout is a response, never a dropped connection, so
//! the layer also works over `Infallible` services such as axum routers.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use http::{Request, Response, StatusCode};
//! use perfkit::timeout::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)))
//!     .service_fn(|_req: Request<String>| async {
//!         tokio::time::sleep(Duration::from_secs(60)).await;
//!         Ok::<_, Infallible>(Response::new(String::from("too late")))
//!     });
//!
//! let response = service.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
//! # }
//! ```
//!
//! # Per-route deadlines
//!
//! The deadline of a request is chosen when it enters the layer, first match wins:
//!
//! 1. A [`RouteTimeout`] in the request's extensions, put there by a router or an earlier
//!    layer. [`RouteTimeout::disabled`] exempts the request.
//! 2. The closure given to [`TimeoutLayer::per_request`], when it returns `Some`.
//! 3. The layer's default duration.
//!
//! Routers such as axum run route-specific layers *inside* the global ones, after the
//! deadline was chosen. [`RouteTimeout`] is also a layer for that case: applied to a route,
//! it moves the deadline of the enclosing [`TimeoutLayer`] (counted from the moment the
//! request entered that layer), whether the route needs more time or less:
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use perfkit::timeout::{RouteTimeout, TimeoutLayer};
//!
//! let app: Router = Router::new()
//!     .route("/report", get(|| async { "slow report" })
//!         .layer(RouteTimeout::new(Duration::from_secs(120))))
//!     .route("/hello", get(|| async { "hello" }))
//!     .layer(TimeoutLayer::new(Duration::from_secs(30)));
//! ```
//!
//! The route layer reaches the enclosing timeout while the request's future is polled, so a
//! layer between the two that hands the request to another task (`tower::buffer`, a spawned
//! task) hides the override. Put the timeout layer closest to the routes in that case.
//!
//! # Cost
//!
//! A response that is ready the first time the inner future is polled never registers a
//! timer; a request that waits registers one, once. `benches/layers.rs` measures both paths
//! beside `tower_http::timeout::TimeoutLayer`.

mod future;
mod layer;
mod route;
mod scope;
mod service;

#[cfg(test)]
mod tests;

#[doc(inline)]
pub use self::{
    future::ResponseFuture,
    layer::{TimeoutFor, TimeoutLayer},
    route::{RouteTimeout, RouteTimeoutFuture, SetRouteTimeout},
    service::Timeout,
};

/// The `REQUEST_TIMEOUT_MS` default: 30 seconds.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
