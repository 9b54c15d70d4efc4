use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{HeaderName, HeaderValue, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{TimingBody, body::PendingBody, layer::Config, stats::Recording};

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
            return Poll::Ready(Ok(response.map(TimingBody::new)));
        };

        let elapsed = recording.start.elapsed();
        let millis = Millis::new(elapsed);
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_bytes(millis.process_time()) {
            headers.insert(X_PROCESS_TIME, value);
        }
        if *this.server_timing
            && let Ok(value) = HeaderValue::from_bytes(millis.server_timing())
        {
            headers.append(SERVER_TIMING, value);
        }

        let status = response.status();
        if *this.measure_body && !response.body().is_end_stream() {
            let pending = PendingBody::new(recording, status);
            Poll::Ready(Ok(response.map(|body| TimingBody::measured(body, pending))))
        } else {
            recording.finish(elapsed, status);
            Poll::Ready(Ok(response.map(TimingBody::new)))
        }
    }
}

/// A duration in milliseconds with two decimals, written right-aligned into a stack
/// buffer with room for the `app;dur=` prefix of `Server-Timing` in front.
pub(super) struct Millis {
    buf: [u8; Self::LEN],
    /// Index of the first digit.
    start: usize,
}

impl Millis {
    const PREFIX: &'static [u8] = b"app;dur=";
    const UNIT: &'static [u8] = b"ms";
    /// Prefix, up to 20 integer digits, the point, two decimals and the unit.
    const LEN: usize = Self::PREFIX.len() + 20 + 1 + 2 + Self::UNIT.len();

    /// Formats `elapsed` rounded to the nearest 10 µs (halves round up).
    pub(super) fn new(elapsed: Duration) -> Self {
        let mut hundredths = elapsed
            .as_secs()
            .saturating_mul(100_000)
            .saturating_add(u64::from((elapsed.subsec_nanos() + 5_000) / 10_000));

        let mut buf = [0u8; Self::LEN];
        let mut at = Self::LEN - Self::UNIT.len();
        buf[at..].copy_from_slice(Self::UNIT);
        for _ in 0..2 {
            at -= 1;
            buf[at] = b'0' + (hundredths % 10) as u8;
            hundredths /= 10;
        }
        at -= 1;
        buf[at] = b'.';
        loop {
            at -= 1;
            buf[at] = b'0' + (hundredths % 10) as u8;
            hundredths /= 10;
            if hundredths == 0 {
                break;
            }
        }
        buf[at - Self::PREFIX.len()..at].copy_from_slice(Self::PREFIX);
        Self { buf, start: at }
    }

    /// `125.43ms`
    pub(super) fn process_time(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// `app;dur=125.43`
    pub(super) fn server_timing(&self) -> &[u8] {
        &self.buf[self.start - Self::PREFIX.len()..Self::LEN - Self::UNIT.len()]
    }
}
