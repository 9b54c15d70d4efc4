use std::{
    fmt,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::{
    DefaultRouteLabel, ResponseFuture, RouteLabel, TimingLayer, TimingStats, layer::Config, route,
    stats::Recording,
};

/// Measures each request: sets `X-Process-Time`, logs slow requests and records per-route
/// latency statistics.
///
/// Usually built by [`TimingLayer`]; see the [module docs](super) for details.
#[derive(Clone)]
pub struct Timing<S, R = DefaultRouteLabel> {
    inner: S,
    stats: TimingStats,
    config: Config,
    route_label: R,
}

impl<S> Timing<S> {
    /// Wraps `inner` with new, empty statistics and the default settings.
    pub fn new(inner: S) -> Self {
        Self::from_parts(
            inner,
            TimingStats::new(),
            Config::DEFAULT,
            DefaultRouteLabel,
        )
    }

    /// A [`TimingLayer`] with the default settings, the same as [`TimingLayer::new`].
    pub fn layer() -> TimingLayer {
        TimingLayer::new()
    }
}

impl<S, R> Timing<S, R> {
    pub(super) fn from_parts(inner: S, stats: TimingStats, config: Config, route_label: R) -> Self {
        Self {
            inner,
            stats,
            config,
            route_label,
        }
    }

    /// The statistics this service records into.
    pub fn stats(&self) -> &TimingStats {
        &self.stats
    }

    define_inner_service_accessors!();
}

impl<S: fmt::Debug, R> fmt::Debug for Timing<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timing")
            .field("inner", &self.inner)
            .field("stats", &self.stats)
            .field("config", &self.config)
            .field("route_fn", &std::any::type_name::<R>())
            .finish()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Timing<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RouteLabel<ReqBody>,
    ResBody: Body,
{
    type Response = Response<super::TimingBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let entry = self.stats.entry(
            route::resolve(&self.route_label, &request),
            self.config.max_routes,
        );
        let recording = Recording {
            entry,
            method: request.method().clone(),
            start,
            slow_threshold: self.config.slow_threshold,
        };
        ResponseFuture::new(self.inner.call(request), recording, self.config)
    }
}
