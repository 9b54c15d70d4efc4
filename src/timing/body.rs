use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::stats::Recording;

pin_project! {
    /// Response body of [`Timing`](super::Timing).
    ///
    /// Passes the inner body through unchanged. With
    /// [`measure_body`](super::TimingLayer::measure_body) on, it records the request when
    /// the body ends (its last frame, an error, or being dropped unfinished), exactly once.
    pub struct TimingBody<B> {
        #[pin]
        inner: B,
        pending: Option<PendingBody>,
    }
}

impl<B> TimingBody<B> {
    /// A body that only passes `inner` through.
    pub(super) fn new(inner: B) -> Self {
        Self {
            inner,
            pending: None,
        }
    }

    /// A body that records `pending` when `inner` ends or is dropped.
    pub(super) fn measured(inner: B, pending: PendingBody) -> Self {
        Self {
            inner,
            pending: Some(pending),
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for TimingBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingBody")
            .field("inner", &self.inner)
            .field("measuring", &self.pending.is_some())
            .finish()
    }
}

impl<B: Body> Body for TimingBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if this.pending.is_some() {
            let ended = match &frame {
                None | Some(Err(_)) => true,
                Some(Ok(_)) => this.inner.is_end_stream(),
            };
            if ended {
                // Dropping the pending record records it.
                drop(this.pending.take());
            }
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request waiting for its response body to end; records itself when dropped.
pub(super) struct PendingBody {
    recording: Recording,
    status: StatusCode,
}

impl PendingBody {
    pub(super) fn new(recording: Recording, status: StatusCode) -> Self {
        Self { recording, status }
    }
}

impl Drop for PendingBody {
    fn drop(&mut self) {
        let elapsed = self.recording.start.elapsed();
        self.recording.finish(elapsed, self.status);
    }
}
