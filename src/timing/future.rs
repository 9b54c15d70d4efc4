use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{HeaderName, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{TimingBody, body::PendingBody, layer::Config, stats::Recording};
use crate::short_text::Millis;

/// `X-Process-Time`: the time to the response headers, as `125.43ms`.
pub(super) const X_PROCESS_TIME: HeaderName = HeaderName::from_static("x-process-time");

/// `Server-Timing`, holding `app;dur=125.43` when enabled.
pub(super) const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

pin_project! {
    /// Response future of [`Timing`](super::Timing).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        recording: Option<Recording>,
        server_timing: bool,
        measure_body: bool,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, recording: Recording, config: Config) -> Self {
        Self {
            inner,
            recording: Some(recording),
            server_timing: config.server_timing,
            measure_body: config.measure_body,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("server_timing", &self.server_timing)
            .field("measure_body", &self.measure_body)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<TimingBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            // No response, nothing to time: the error passes through unrecorded.
            Err(error) => return Poll::Ready(Err(error)),
        };
        let Some(recording) = this.recording.take() else {
            // Polled again after completion; the inner future decides what that means.
            let (parts, body) = response.into_parts();
            return Poll::Ready(Ok(Response::from_parts(parts, TimingBody::new(body))));
        };

        let elapsed = recording.start.elapsed();
        let millis = Millis::new(elapsed);
        let headers = response.headers_mut();
        if let Some(value) = millis.process_time_value() {
            headers.insert(X_PROCESS_TIME, value);
        }
        if *this.server_timing
            && let Some(value) = millis.server_timing_value()
        {
            headers.append(SERVER_TIMING, value);
        }

        let status = response.status();
        let (parts, body) = response.into_parts();
        let body = if *this.measure_body && !body.is_end_stream() {
            TimingBody::measured(body, PendingBody::new(recording, status))
        } else {
            recording.finish(elapsed, status);
            TimingBody::new(body)
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}
