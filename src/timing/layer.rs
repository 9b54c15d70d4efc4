use std::{fmt, time::Duration};

use tower_layer::Layer;

use super::{DefaultRouteLabel, Timing, TimingStats};

/// The slow-request threshold unless [`TimingLayer::slow_threshold`] changes it.
const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_secs(1);

/// Settings a [`TimingLayer`] passes to each of its services and futures.
#[derive(Clone, Copy, Debug)]
pub(super) struct Config {
    pub(super) server_timing: bool,
    pub(super) measure_body: bool,
    pub(super) slow_threshold: Option<Duration>,
    /// This layer's own bound on distinct routes, below the statistics' bound.
    pub(super) max_routes: usize,
}

impl Config {
    pub(super) const DEFAULT: Self = Self {
        server_timing: false,
        measure_body: false,
        slow_threshold: Some(DEFAULT_SLOW_THRESHOLD),
        max_routes: usize::MAX,
    };
}

/// Applies [`Timing`] to a service: `X-Process-Time` header, slow-request log and
/// per-route latency statistics.
///
/// Cheap to clone. Every service this layer builds, and every clone of the layer, records
/// into the same [`TimingStats`] (see [`TimingLayer::stats`]).
///
/// See the [module docs](super) for what is measured and how routes are labelled.
#[derive(Clone)]
pub struct TimingLayer<R = DefaultRouteLabel> {
    stats: TimingStats,
    config: Config,
    route_label: R,
}

impl TimingLayer {
    /// Creates a layer with new, empty statistics and the default settings.
    pub fn new() -> Self {
        Self::with_stats(TimingStats::new())
    }

    /// Creates a layer that records into `stats`, which may be shared with other layers.
    pub fn with_stats(stats: TimingStats) -> Self {
        Self {
            stats,
            config: Config::DEFAULT,
            route_label: DefaultRouteLabel,
        }
    }
}

impl Default for TimingLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> TimingLayer<R> {
    /// A handle to the statistics this layer records into.
    pub fn stats(&self) -> TimingStats {
        self.stats.clone()
    }

    /// Whether to append a `Server-Timing: app;dur=<ms>` header, keeping any
    /// `Server-Timing` the inner service set.
    ///
    /// Defaults to `false`.
    #[must_use]
    pub fn server_timing(mut self, enable: bool) -> Self {
        self.config.server_timing = enable;
        self
    }

    /// Whether statistics and the slow-request log use the time until the response body
    /// has been streamed (or dropped) instead of the time until the response headers.
    ///
    /// The `X-Process-Time` header always carries the time until the headers, since it is
    /// sent with them.
    ///
    /// Defaults to `false`.
    #[must_use]
    pub fn measure_body(mut self, enable: bool) -> Self {
        self.config.measure_body = enable;
        self
    }

    /// Requests that take at least this long are logged at `WARN` with the fields
    /// `method`, `route`, `status` and `duration_ms`. `None` turns the log off.
    ///
    /// Defaults to one second.
    #[must_use]
    pub fn slow_threshold(mut self, threshold: impl Into<Option<Duration>>) -> Self {
        self.config.slow_threshold = threshold.into();
        self
    }

    /// Turns the slow-request log off; the same as `slow_threshold(None)`.
    #[must_use]
    pub fn no_slow_log(self) -> Self {
        self.slow_threshold(None)
    }

    /// The most distinct route labels this layer adds to its statistics; requests with
    /// further labels are counted under [`OTHER_ROUTE`](super::OTHER_ROUTE).
    ///
    /// The bound of a [`TimingStats`] is fixed when it is created
    /// ([`TimingStats::with_max_routes`], 256 by default), and this call never changes the
    /// bound of statistics another layer or handle shares:
    ///
    /// - on a layer whose statistics nothing else holds yet (made by [`TimingLayer::new`],
    ///   before [`stats`](Self::stats) is called or the layer cloned), it replaces them with
    ///   new, empty `TimingStats::with_max_routes(max_routes)`;
    /// - otherwise, this layer alone stops adding routes once the statistics hold
    ///   `max_routes`, and can never exceed their own bound; other layers sharing them are
    ///   not affected.
    ///
    /// To share one bound between layers, create the statistics with
    /// [`TimingStats::with_max_routes`] and pass them to [`TimingLayer::with_stats`].
    #[must_use]
    pub fn max_routes(mut self, max_routes: usize) -> Self {
        if self.stats.is_unshared() {
            self.stats = TimingStats::with_max_routes(max_routes);
        }
        self.config.max_routes = max_routes;
        self
    }

    /// Labels requests with `route_label`, usually a closure
    /// `Fn(&Request<B>) -> Option<&'static str>` returning the route template.
    ///
    /// When it returns `None`, the label comes from axum's `MatchedPath` (with the `axum`
    /// feature), else it is [`OTHER_ROUTE`](super::OTHER_ROUTE).
    ///
    /// Defaults to [`DefaultRouteLabel`], which returns `None`.
    #[must_use]
    pub fn route_fn<F>(self, route_label: F) -> TimingLayer<F> {
        TimingLayer {
            stats: self.stats,
            config: self.config,
            route_label,
        }
    }
}

impl<R> fmt::Debug for TimingLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingLayer")
            .field("stats", &self.stats)
            .field("config", &self.config)
            .field("route_fn", &std::any::type_name::<R>())
            .finish()
    }
}

impl<S, R: Clone> Layer<S> for TimingLayer<R> {
    type Service = Timing<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Timing::from_parts(
            inner,
            self.stats.clone(),
            self.config,
            self.route_label.clone(),
        )
    }
}
