use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::scope::Scope;
use crate::{
    body::{ResponseBody, json_error},
    fmt::HumanDuration,
};

pin_project! {
    /// The response future of [`Timeout`](super::Timeout).
    pub struct ResponseFuture<F> {
        // `None` once the deadline passed: the inner future is dropped right then.
        #[pin]
        inner: Option<F>,
        // Registered only when the inner future is not ready on a poll.
        #[pin]
        sleep: Option<Sleep>,
        start: Instant,
        timeout: Option<Duration>,
        status: StatusCode,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        start: Instant,
        timeout: Option<Duration>,
        status: StatusCode,
    ) -> Self {
        Self {
            inner: Some(inner),
            sleep: None,
            start,
            timeout,
            status,
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("start", &self.start)
            .field("timeout", &self.timeout)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let inner = this
            .inner
            .as_mut()
            .as_pin_mut()
            .expect("timeout ResponseFuture polled after completion");

        let scope = Scope::enter();
        let polled = inner.poll(cx);
        if let Some(route) = scope.exit() {
            *this.timeout = route.duration();
            this.sleep.set(None);
        }
        if let Poll::Ready(result) = polled {
            return Poll::Ready(match result {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    Ok(Response::from_parts(parts, ResponseBody::new(body)))
                }
                Err(error) => Err(error),
            });
        }

        let Some(timeout) = *this.timeout else {
            return Poll::Pending;
        };
        if this.sleep.is_none() {
            // A zero deadline has passed by definition: answer without arming a timer,
            // which would only fire at the timer driver's next tick.
            if timeout.is_zero() {
                return Poll::Ready(Ok(timed_out(this.inner, timeout, *this.status)));
            }
            // A deadline beyond what the clock can represent never passes.
            let Some(deadline) = this.start.checked_add(timeout) else {
                return Poll::Pending;
            };
            this.sleep.set(Some(tokio::time::sleep_until(deadline)));
        }
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
        }
        this.sleep.set(None);
        Poll::Ready(Ok(timed_out(this.inner, timeout, *this.status)))
    }
}

/// Drops the inner future, cancelling its work, and writes the timeout response.
fn timed_out<F, B>(
    mut inner: Pin<&mut Option<F>>,
    timeout: Duration,
    status: StatusCode,
) -> Response<ResponseBody<B>> {
    inner.set(None);
    tracing::debug!(timeout_ms = timeout.as_millis() as u64, "request timed out");
    json_error(status, "request_timeout", &message(timeout))
}

/// `Request exceeded 30.0s timeout`: seconds with one decimal, halves rounded up.
fn message(timeout: Duration) -> String {
    format!(
        "Request exceeded {} timeout",
        HumanDuration::tenths(timeout)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_one_decimal_rounded_half_up() {
        let cases = [
            (Duration::from_secs(30), "30.0"),
            (Duration::ZERO, "0.0"),
            (Duration::from_millis(49), "0.0"),
            (Duration::from_millis(50), "0.1"),
            (Duration::from_millis(250), "0.3"),
            (Duration::from_millis(1449), "1.4"),
            (Duration::from_millis(1450), "1.5"),
            (Duration::from_secs(86_400), "86400.0"),
        ];
        for (timeout, seconds) in cases {
            assert_eq!(
                message(timeout),
                format!("Request exceeded {seconds}s timeout"),
                "{timeout:?}"
            );
        }
        // The largest duration still formats (u64::MAX seconds and 999 ms round up).
        assert_eq!(
            message(Duration::MAX),
            "Request exceeded 18446744073709551616.0s timeout"
        );
    }
}
