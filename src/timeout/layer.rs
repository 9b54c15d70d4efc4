use std::{fmt, time::Duration};

use http::{Request, StatusCode};
use tower_layer::Layer;

use super::{DEFAULT_TIMEOUT, Timeout};
use crate::EnvError;

/// Picks the deadline of one request; see [`TimeoutLayer::per_request`].
///
/// Implemented for closures `Fn(&Request<B>) -> Option<Duration>` and for `()`, which never
/// overrides the default.
pub trait TimeoutFor<B> {
    /// The deadline for `request`, or `None` for the layer's default.
    fn timeout_for(&self, request: &Request<B>) -> Option<Duration>;
}

impl<B> TimeoutFor<B> for () {
    #[inline]
    fn timeout_for(&self, _: &Request<B>) -> Option<Duration> {
        None
    }
}

impl<B, F> TimeoutFor<B> for F
where
    F: Fn(&Request<B>) -> Option<Duration>,
{
    #[inline]
    fn timeout_for(&self, request: &Request<B>) -> Option<Duration> {
        self(request)
    }
}

/// Applies a deadline to every request; see the [module docs](super).
///
/// The layer is configuration only: cloning it is cheap, and services built from it share
/// nothing at run time.
#[derive(Clone, Copy)]
pub struct TimeoutLayer<T = ()> {
    pub(super) timeout: Duration,
    pub(super) status: StatusCode,
    pub(super) per_request: T,
}

impl TimeoutLayer {
    /// A layer answering requests that take longer than `timeout` with
    /// `504 Gateway Timeout`.
    pub const fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            status: StatusCode::GATEWAY_TIMEOUT,
            per_request: (),
        }
    }

    /// A layer whose default deadline comes from `REQUEST_TIMEOUT_MS` (whole milliseconds),
    /// or [`DEFAULT_TIMEOUT`] (30 s) when the variable is unset or empty.
    ///
    /// # Errors
    ///
    /// When the variable is set to something that is not a whole number of milliseconds.
    pub fn from_env() -> Result<Self, EnvError> {
        let timeout =
            crate::env::var::<u64>("REQUEST_TIMEOUT_MS", "a whole number of milliseconds")?
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        Ok(Self::new(timeout))
    }
}

impl<T> TimeoutLayer<T> {
    /// The default deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the default deadline: the one a request gets when neither
    /// [`per_request`](Self::per_request) nor a [`RouteTimeout`](super::RouteTimeout) picks
    /// another.
    #[must_use]
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the status of the timeout response. Defaults to `504 Gateway Timeout`;
    /// `408 Request Timeout` is the other usual choice.
    #[must_use]
    pub fn status_code(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Lets `f` pick the deadline of each request from the request itself (its path,
    /// method, headers or extensions). `None` keeps the default; a [`RouteTimeout`]
    /// extension on the request still takes precedence.
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::Request;
    /// use perfkit::timeout::TimeoutLayer;
    ///
    /// let layer = TimeoutLayer::new(Duration::from_secs(30)).per_request(|req: &Request<String>| {
    ///     req.uri().path().starts_with("/export/").then(|| Duration::from_secs(300))
    /// });
    /// # let _ = layer;
    /// ```
    ///
    /// [`RouteTimeout`]: super::RouteTimeout
    #[must_use]
    pub fn per_request<F>(self, f: F) -> TimeoutLayer<F> {
        TimeoutLayer {
            timeout: self.timeout,
            status: self.status,
            per_request: f,
        }
    }
}

impl<T> fmt::Debug for TimeoutLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutLayer")
            .field("timeout", &self.timeout)
            .field("status", &self.status)
            .field("per_request", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, T: Clone> Layer<S> for TimeoutLayer<T> {
    type Service = Timeout<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            timeout: self.timeout,
            status: self.status,
            per_request: self.per_request.clone(),
        }
    }
}
