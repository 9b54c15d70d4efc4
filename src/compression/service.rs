use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{CompressionBody, ResponseFuture, encoding::Negotiated, layer::Config};

/// Compresses the responses of the inner service; built by
/// [`CompressionLayer`](super::CompressionLayer).
#[derive(Clone, Debug)]
pub struct Compression<S, P> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config>,
    pub(crate) predicate: P,
}

impl<S, P> Compression<S, P> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, taking this one apart.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for Compression<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Error: Into<super::BoxError>,
    P: super::Predicate,
{
    type Response = Response<CompressionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, P>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let negotiated = self.config.offer.negotiate(request.headers());
        if negotiated == Negotiated::NotAcceptable && self.config.not_acceptable {
            return ResponseFuture::refused(self.config.clone(), self.predicate.clone());
        }
        let head = request.method() == Method::HEAD;
        ResponseFuture::new(
            self.inner.call(request),
            negotiated,
            head,
            self.config.clone(),
            self.predicate.clone(),
        )
    }
}
