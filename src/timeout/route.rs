use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::scope;

/// The deadline of one route, overriding the [`TimeoutLayer`](super::TimeoutLayer) default.
///
/// Used two ways (see the [module docs](super#per-route-deadlines)):
///
/// - as a request extension, read when the request enters the timeout layer;
/// - as a layer on a route, which inserts itself as an extension and moves the deadline of
///   the enclosing timeout layer even when that layer already saw the request, as with
///   axum's route layers.
///
/// The deadline always counts from the moment the request entered the timeout layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteTimeout {
    duration: Option<Duration>,
}

impl RouteTimeout {
    /// A deadline of `duration`.
    pub const fn new(duration: Duration) -> Self {
        Self {
            duration: Some(duration),
        }
    }

    /// No deadline: the request may take as long as it needs (streams, long polls).
    pub const fn disabled() -> Self {
        Self { duration: None }
    }

    /// The deadline, or `None` when disabled.
    pub const fn duration(&self) -> Option<Duration> {
        self.duration
    }
}

impl<S> Layer<S> for RouteTimeout {
    type Service = SetRouteTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        scope::enable();
        SetRouteTimeout {
            inner,
            route: *self,
        }
    }
}

/// The service built by using a [`RouteTimeout`] as a layer.
#[derive(Clone, Copy, Debug)]
pub struct SetRouteTimeout<S> {
    inner: S,
    route: RouteTimeout,
}

impl<S> SetRouteTimeout<S> {
    define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for SetRouteTimeout<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RouteTimeoutFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.route);
        RouteTimeoutFuture {
            inner: self.inner.call(request),
            route: Some(self.route),
        }
    }
}

pin_project! {
    /// The response future of [`SetRouteTimeout`].
    #[derive(Debug)]
    pub struct RouteTimeoutFuture<F> {
        #[pin]
        inner: F,
        route: Option<RouteTimeout>,
    }
}

impl<F: Future> Future for RouteTimeoutFuture<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(route) = this.route.take() {
            scope::record(route);
        }
        this.inner.poll(cx)
    }
}
