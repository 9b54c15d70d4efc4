use std::{
    convert::Infallible,
    fmt,
    future::{Ready, ready},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use tower_service::Service;

use super::HealthMonitor;
use crate::body::{ResponseBody, json_error_body};

/// A tower service that answers health probes from a [`HealthMonitor`]'s latest results.
///
/// Made by [`HealthMonitor::service`]. It routes on the last segment of the request path, so
/// it answers the same way however it is mounted (nested under `/health`, at a route of its
/// own, or as a fallback):
///
/// | path | answer |
/// | --- | --- |
/// | `/health`, `/healthz` (or the mount point itself) | the [`HealthReport`] as JSON; `200` when healthy or degraded, `503` when unhealthy |
/// | `/health/ready`, `/readyz` | `200 {"status":"ready"}`, or `503 {"status":"not_ready","failing":[...]}` naming the failing critical checks |
/// | `/health/live`, `/livez` | `200 {"status":"alive"}` while the process runs; no check is consulted |
/// | `/health/pools` | the statistics of the pools registered with the monitor, by name; `{}` when none |
/// | anything else | `404` with a JSON error |
///
/// `GET` and `HEAD` are answered; other methods get `405` with an `Allow` header. Every
/// response is `application/json` with `Cache-Control: no-store`. No answer does I/O or waits
/// for a running check: the report's JSON is written once per round of checks.
///
/// [`HealthReport`]: super::HealthReport
#[derive(Clone)]
pub struct HealthService {
    monitor: HealthMonitor,
}

impl HealthService {
    pub(super) fn new(monitor: HealthMonitor) -> Self {
        Self { monitor }
    }

    /// The monitor whose results this service answers with.
    pub fn monitor(&self) -> &HealthMonitor {
        &self.monitor
    }

    /// The answer to a `method` request for `path`.
    fn respond(&self, method: &Method, path: &str) -> Response<HealthBody> {
        if *method != Method::GET && *method != Method::HEAD {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                error_body(
                    "method_not_allowed",
                    "health endpoints answer GET and HEAD only",
                ),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let mut response = match Endpoint::of(path) {
            Endpoint::Report => {
                let snapshot = self.monitor.snapshot();
                let status = if snapshot.report.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, snapshot.report_json.clone())
            }
            Endpoint::Ready => {
                let snapshot = self.monitor.snapshot();
                let status = if snapshot.report.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, snapshot.ready_json.clone())
            }
            Endpoint::Live => json(StatusCode::OK, Bytes::from_static(br#"{"status":"alive"}"#)),
            Endpoint::Pools => json(StatusCode::OK, self.monitor.pool_stats_json()),
            Endpoint::Unknown => json(
                StatusCode::NOT_FOUND,
                error_body(
                    "not_found",
                    "no such health endpoint; try /health, /health/ready, /health/live or /health/pools",
                ),
            ),
        };
        if *method == Method::HEAD {
            let len = response.body().size_hint().exact().unwrap_or_default();
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            *response.body_mut() = HealthBody::full(Bytes::new());
        }
        response
    }
}

impl fmt::Debug for HealthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthService")
            .field("monitor", &self.monitor)
            .finish()
    }
}

impl<B> Service<Request<B>> for HealthService {
    type Response = Response<HealthBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.respond(request.method(), request.uri().path())))
    }
}

/// What a path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Report,
    Ready,
    Live,
    Pools,
    Unknown,
}

impl Endpoint {
    /// Chooses by the last non-empty path segment.
    fn of(path: &str) -> Self {
        let last = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        match last {
            "" | "health" | "healthz" => Endpoint::Report,
            "ready" | "readyz" => Endpoint::Ready,
            "live" | "livez" => Endpoint::Live,
            "pools" => Endpoint::Pools,
            _ => Endpoint::Unknown,
        }
    }
}

/// A response with a JSON `body` and the headers every health answer carries.
fn json(status: StatusCode, body: Bytes) -> Response<HealthBody> {
    let mut response = Response::new(HealthBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `{"error":"<code>","message":"<message>"}`.
fn error_body(code: &str, message: &str) -> Bytes {
    json_error_body(code, message).into()
}

/// The body of a [`HealthService`] response: a complete JSON document.
///
/// A [`ResponseBody`] that only ever holds a complete body; it implements
/// [`http_body::Body`] with `Data = Bytes` and `Error = Infallible`, as axum, hyper and
/// tonic expect.
pub type HealthBody = ResponseBody<String>;
