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

/// A duration in milliseconds with two decimals, as the `X-Process-Time` and
/// `Server-Timing` header values.
///
/// Durations below [`SHORT_LIMIT`] take both values from the static [`SHORT`] table, so
/// their header values are neither formatted nor allocated; longer ones are written
/// right-aligned into a stack buffer with room for the `app;dur=` prefix in front.
pub(super) struct Millis(Repr);

enum Repr {
    /// The index of an entry of [`SHORT`] and [`PROCESS_TIME`].
    Short(usize),
    Long {
        buf: [u8; Millis::LEN],
        /// Index of the first digit.
        start: usize,
    },
}

/// Hundredths of a millisecond below which values come from [`SHORT`]: 10 ms.
const SHORT_LIMIT: u64 = 1_000;

/// Length of each [`SHORT`] entry: `app;dur=9.99ms`.
const SHORT_ENTRY: usize = Millis::PREFIX.len() + 4 + Millis::UNIT.len();

/// Every value from `app;dur=0.00ms` to `app;dur=9.99ms`, one after the other (14 KB).
static SHORT: &str = match std::str::from_utf8(&SHORT_BYTES) {
    Ok(table) => table,
    Err(_) => panic!("the short-duration table is ASCII"),
};

static SHORT_BYTES: [u8; SHORT_LIMIT as usize * SHORT_ENTRY] = {
    let mut table = [0; SHORT_LIMIT as usize * SHORT_ENTRY];
    let mut hundredths = 0;
    while hundredths < SHORT_LIMIT as usize {
        let entry = hundredths * SHORT_ENTRY;
        let mut i = 0;
        while i < Millis::PREFIX.len() {
            table[entry + i] = Millis::PREFIX[i];
            i += 1;
        }
        let at = entry + Millis::PREFIX.len();
        table[at] = b'0' + (hundredths / 100) as u8;
        table[at + 1] = b'.';
        table[at + 2] = b'0' + (hundredths / 10 % 10) as u8;
        table[at + 3] = b'0' + (hundredths % 10) as u8;
        table[at + 4] = Millis::UNIT[0];
        table[at + 5] = Millis::UNIT[1];
        hundredths += 1;
    }
    table
};

/// The `X-Process-Time` values of [`SHORT`] (40 KB), ready to clone: cloning a static
/// value copies a pointer and a length, where building one checks each of its bytes.
static PROCESS_TIME: [HeaderValue; SHORT_LIMIT as usize] = {
    const EMPTY: HeaderValue = HeaderValue::from_static("");
    let mut values = [EMPTY; SHORT_LIMIT as usize];
    let mut hundredths = 0;
    while hundredths < SHORT_LIMIT as usize {
        let (_, value) = SHORT.split_at(hundredths * SHORT_ENTRY + Millis::PREFIX.len());
        let (value, _) = value.split_at(SHORT_ENTRY - Millis::PREFIX.len());
        let empty = std::mem::replace(&mut values[hundredths], HeaderValue::from_static(value));
        std::mem::forget(empty);
        hundredths += 1;
    }
    values
};

impl Millis {
    const PREFIX: &'static [u8] = b"app;dur=";
    const UNIT: &'static [u8] = b"ms";
    /// Prefix, up to 20 integer digits, the point, two decimals and the unit.
    const LEN: usize = Self::PREFIX.len() + 20 + 1 + 2 + Self::UNIT.len();

    /// Formats `elapsed` rounded to the nearest 10 µs (halves round up).
    #[inline]
    pub(super) fn new(elapsed: Duration) -> Self {
        let hundredths = elapsed
            .as_secs()
            .saturating_mul(100_000)
            .saturating_add(u64::from((elapsed.subsec_nanos() + 5_000) / 10_000));
        if hundredths < SHORT_LIMIT {
            return Self(Repr::Short(hundredths as usize));
        }
        Self::long(hundredths)
    }

    #[cold]
    fn long(mut hundredths: u64) -> Self {
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
        Self(Repr::Long { buf, start: at })
    }

    /// Entry `index` of [`SHORT`], `app;dur=1.23ms`; empty past the end.
    fn short(index: usize) -> &'static str {
        SHORT
            .get(index * SHORT_ENTRY..(index + 1) * SHORT_ENTRY)
            .unwrap_or_default()
    }

    /// `125.43ms`
    pub(super) fn process_time(&self) -> &[u8] {
        match &self.0 {
            Repr::Short(index) => Self::short(*index)
                .as_bytes()
                .get(Self::PREFIX.len()..)
                .unwrap_or_default(),
            Repr::Long { buf, start } => &buf[*start..],
        }
    }

    /// `app;dur=125.43`
    pub(super) fn server_timing(&self) -> &[u8] {
        match &self.0 {
            Repr::Short(index) => Self::short(*index)
                .as_bytes()
                .get(..SHORT_ENTRY - Self::UNIT.len())
                .unwrap_or_default(),
            Repr::Long { buf, start } => {
                &buf[*start - Self::PREFIX.len()..Self::LEN - Self::UNIT.len()]
            }
        }
    }

    /// The `X-Process-Time` value, `125.43ms`; without an allocation below 10 ms.
    #[inline]
    pub(super) fn process_time_value(&self) -> Option<HeaderValue> {
        match self.0 {
            Repr::Short(index) => PROCESS_TIME.get(index).cloned(),
            Repr::Long { .. } => HeaderValue::from_bytes(self.process_time()).ok(),
        }
    }

    /// The `Server-Timing` value, `app;dur=125.43`; without an allocation below 10 ms.
    #[inline]
    pub(super) fn server_timing_value(&self) -> Option<HeaderValue> {
        match self.0 {
            Repr::Short(index) => Self::short(index)
                .get(..SHORT_ENTRY - Self::UNIT.len())
                .map(HeaderValue::from_static),
            Repr::Long { .. } => HeaderValue::from_bytes(self.server_timing()).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_table_matches_formatting() {
        for hundredths in 0..SHORT_LIMIT + 5 {
            let millis = Millis::new(Duration::from_micros(hundredths * 10));
            assert_eq!(
                matches!(millis.0, Repr::Short(_)),
                hundredths < SHORT_LIMIT,
                "{hundredths}"
            );
            let long = Millis::long(hundredths);
            assert_eq!(millis.process_time(), long.process_time());
            assert_eq!(millis.server_timing(), long.server_timing());
            assert_eq!(
                millis.process_time_value().unwrap().as_bytes(),
                long.process_time()
            );
            assert_eq!(
                millis.server_timing_value().unwrap().as_bytes(),
                long.server_timing()
            );
        }
        assert_eq!(
            Millis::new(Duration::from_nanos(9_994_999)).process_time(),
            b"9.99ms"
        );
        assert_eq!(
            Millis::new(Duration::from_nanos(9_995_000)).process_time(),
            b"10.00ms"
        );
    }
}
