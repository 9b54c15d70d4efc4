//! Health checks run in the background, and the `/health` service that reports them.
//!
//! A [`HealthMonitor`] holds the service's [`HealthCheck`]s (a database, a cache, anything
//! built with [`check_fn`]), runs them all concurrently every interval, each under its own
//! timeout, and keeps the latest results. [`HealthMonitor::service`] is a tower service that
//! answers probes from those results.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, StatusCode};
//! use perfkit::health::{CheckError, HealthMonitor, Status, check_fn};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let monitor = HealthMonitor::builder()
//!     .check(check_fn("database", || async { Ok(()) }))
//!     .check(
//!         check_fn("search", || async { Err(CheckError::new("connection refused")) })
//!             .non_critical(),
//!     )
//!     .interval(Duration::from_secs(30))
//!     .timeout(Duration::from_secs(2))
//!     .build();
//! monitor.start().await;
//!
//! let report = monitor.report();
//! assert_eq!(report.status, Status::Degraded);
//! assert_eq!(report.checks["search"].error.as_deref(), Some("connection refused"));
//!
//! let response = monitor
//!     .service()
//!     .oneshot(Request::get("/health/ready").body(()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # }
//! ```
//!
//! # Probes do no I/O
//!
//! A load balancer or orchestrator probes `/health` every few seconds on every instance. If
//! each probe ran the checks, the probes would load the database they watch, and a slow
//! database would make the probes slow and time out in turn. Here the checks run on the
//! monitor's own schedule ([`interval`](HealthMonitorBuilder::interval), 60 s by default,
//! plus [`refresh`](HealthMonitor::refresh) on demand), and a probe only reads each check's
//! latest result: [`HealthMonitor::report`] and every answer of the service take
//! microseconds, however long a check is taking meanwhile. Call
//! [`start`](HealthMonitor::start) before serving: it returns once every check has run once.
//!
//! # A failure shows at once
//!
//! Each check's result is published the moment it comes, so a check that fails shows in the
//! report without waiting for a slower one in the same round. A check still running when
//! its next result was due (one [`interval`](HealthMonitorBuilder::interval) into the round,
//! or its [`timeout`](HealthMonitorBuilder::timeout) if that is shorter) counts as failing,
//! with the error `no answer within 1 s; still running`, until it answers; at its timeout
//! (5 s by default) it fails with `timed out after 5 s`. A hung server therefore turns
//! `/health/ready` to `503` within one interval, whatever the timeout.
//!
//! # Statuses
//!
//! Each check is `healthy` or `unhealthy`. The report is `unhealthy` when a critical check
//! fails, `degraded` when only non-critical checks fail ([`CheckFn::non_critical`],
//! [`HealthCheck::critical`]), `healthy` otherwise. A check that starts failing is logged at
//! WARN and one that recovers at INFO, once per change rather than every round.
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /health` | the [`HealthReport`]: `200` when healthy or degraded, `503` when unhealthy |
//! | `GET /health/ready` | `200 {"status":"ready"}`, `503` when a critical check fails |
//! | `GET /health/live` | `200` while the process runs, without consulting any check |
//! | `GET /health/pools` | the registered pools' statistics, by name |
//!
//! ```json
//! {"status":"degraded","checks":{
//!   "database":{"status":"healthy","latency_ms":1.2,"critical":true},
//!   "search":{"status":"unhealthy","latency_ms":5000.0,"error":"timed out after 5 s","critical":false}},
//!  "checked_at":"2025-01-31T09:30:00.125Z"}
//! ```
//!
//! # Mounting in axum
//!
//! [`HealthService`] routes on the last segment of the path, so it can be nested, given a
//! route of its own, or used as a fallback:
//!
//! ```
//! use axum::{Router, routing::get};
//! use perfkit::health::HealthMonitor;
//!
//! let monitor = HealthMonitor::builder().build();
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .nest_service("/health", monitor.service());
//! ```
//!
//! # Built-in checks
//!
//! | check | feature | what it does |
//! | --- | --- | --- |
//! | [`SqlCheck`] | `postgres` or `sqlite` | `SELECT 1` on a pooled connection |
//! | [`RedisCheck`] | `redis` | `PING` on a Redis connection or handle |
//! | [`ReplicatedCheck`] | `postgres` | one check per member of a replicated pool: the primary critical, each replica non-critical |
//! | [`CacheCheck`] | `cache` | pings a Redis or tiered cache backend; a memory cache is always up |
//! | [`RateLimitCheck`] | `rate-limit` and `redis` | pings a Redis rate-limit store, and fails while its insurance decides |
//!
//! # Pool statistics
//!
//! With a pool feature (`postgres`, `sqlite`, `redis`) enabled,
//! [`HealthMonitorBuilder::pools`] registers a [`PoolSnapshot`](crate::pool::PoolSnapshot)
//! provider per pool; `/health/pools` serves them so operators can alert on pool pressure.

mod check;
mod monitor;
mod report;
mod service;

#[cfg(test)]
mod tests;

#[doc(inline)]
pub use self::{
    check::{CheckError, CheckFn, HealthCheck, check_fn},
    monitor::{DEFAULT_CHECK_TIMEOUT, DEFAULT_INTERVAL, HealthMonitor, HealthMonitorBuilder},
    report::{CheckResult, HealthReport, Status},
    service::{HealthBody, HealthService},
};

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[doc(inline)]
pub use self::check::SqlCheck;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use self::check::RedisCheck;

#[cfg(feature = "postgres")]
#[doc(inline)]
pub use self::check::{MemberCheck, ReplicatedCheck};

#[cfg(feature = "cache")]
#[doc(inline)]
pub use self::check::CacheCheck;

#[cfg(all(feature = "rate-limit", feature = "redis"))]
#[doc(inline)]
pub use self::check::RateLimitCheck;

/// The attribute that makes `async fn` usable in a [`HealthCheck`] implementation.
pub use async_trait::async_trait;
