use std::{
    fmt,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower_service::Service;

use super::{ResponseFuture, RouteTimeout, TimeoutFor, TimeoutLayer};
use crate::body::ResponseBody;

/// The service built by [`TimeoutLayer`]; see the [module docs](super).
#[derive(Clone)]
pub struct Timeout<S, T = ()> {
    pub(super) inner: S,
    pub(super) timeout: Duration,
    pub(super) status: StatusCode,
    pub(super) per_request: T,
}

impl<S> Timeout<S> {
    /// Wraps `inner` with a default deadline of `timeout`.
    pub const fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            status: StatusCode::GATEWAY_TIMEOUT,
            per_request: (),
        }
    }

    /// A [`TimeoutLayer`] with a default deadline of `timeout`.
    pub const fn layer(timeout: Duration) -> TimeoutLayer {
        TimeoutLayer::new(timeout)
    }
}

impl<S, T> Timeout<S, T> {
    define_inner_service_accessors!();
}

impl<S: fmt::Debug, T> fmt::Debug for Timeout<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .field("status", &self.status)
            .field("per_request", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for Timeout<S, T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    T: TimeoutFor<ReqBody>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The deadline counts from here, so work the inner service does in `call` counts too.
        let start = Instant::now();
        let timeout = match request.extensions().get::<RouteTimeout>() {
            Some(route) => route.duration(),
            None => Some(
                self.per_request
                    .timeout_for(&request)
                    .unwrap_or(self.timeout),
            ),
        };
        ResponseFuture::new(self.inner.call(request), start, timeout, self.status)
    }
}
