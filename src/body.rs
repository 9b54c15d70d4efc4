//! The response body of layers that can answer a request themselves.
//!
//! A layer such as [`TimeoutLayer`](crate::timeout::TimeoutLayer) either passes the inner
//! service's response through or answers on its own with a small JSON body
//! `{"error":"...","message":"..."}`. [`ResponseBody`] carries either, so the layer stays
//! generic over the inner body type and keeps the inner service's error type.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A response body that is either the inner service's body or a complete body written
    /// by a perfkit layer.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A complete body holding `data`.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// Whether this body was written by a perfkit layer rather than the inner service.
    pub fn is_full(&self) -> bool {
        matches!(self.kind, Kind::Full { .. })
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseBody::Inner"),
            Kind::Full { data } => f
                .debug_struct("ResponseBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => {
                Poll::Ready(data.take().map(|data| Ok(Frame::data(data.into()))))
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, Bytes::len) as u64),
        }
    }
}

/// Builds the JSON error response shared by every layer:
/// `{"error":"<code>","message":"<message>"}`.
#[allow(dead_code)]
pub(crate) fn json_error<B>(
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<ResponseBody<B>> {
    json_response(status, json_object(code, message, None))
}

/// Builds a JSON error response that also tells the client when to retry:
/// `{"error":"<code>","message":"<message>","retry_after":<seconds>}`.
///
/// Only the body: the caller sets the `Retry-After` header, which it may want to format
/// differently.
#[allow(dead_code)]
pub(crate) fn json_error_retry_after<B>(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after_secs: u64,
) -> Response<ResponseBody<B>> {
    json_response(status, json_object(code, message, Some(retry_after_secs)))
}

/// The JSON error object alone, for a service that sets its own headers:
/// `{"error":"<code>","message":"<message>"}`.
#[cfg(any(
    feature = "health",
    feature = "compression-gzip",
    feature = "compression-br"
))]
pub(crate) fn json_error_body(code: &str, message: &str) -> String {
    json_object(code, message, None)
}

fn json_object(code: &str, message: &str, retry_after_secs: Option<u64>) -> String {
    let mut json = String::with_capacity(56 + code.len() + message.len());
    json.push_str("{\"error\":");
    push_json_string(&mut json, code);
    json.push_str(",\"message\":");
    push_json_string(&mut json, message);
    if let Some(secs) = retry_after_secs {
        json.push_str(",\"retry_after\":");
        json.push_str(itoa::Buffer::new().format(secs));
    }
    json.push('}');
    json
}

fn json_response<B>(status: StatusCode, json: String) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(json));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Appends `value` to `out` as a JSON string literal.
fn push_json_string(out: &mut String, value: &str) {
    use std::fmt::Write;

    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn json_error_escapes_and_sets_content_type() {
        let response = json_error::<String>(
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            "quote \" slash \\ newline \n bell \u{7}",
        );
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["error"], "request_timeout");
        assert_eq!(parsed["message"], "quote \" slash \\ newline \n bell \u{7}");
    }

    #[tokio::test]
    async fn json_error_retry_after_adds_a_number() {
        let response = json_error_retry_after::<String>(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "slow down",
            u64::MAX,
        );
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            r#"{"error":"rate_limited","message":"slow down","retry_after":18446744073709551615}"#
        );
    }

    #[tokio::test]
    async fn full_body_reports_exact_size_and_ends() {
        let body = ResponseBody::<String>::full("abc");
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");

        let empty = ResponseBody::<String>::full("");
        assert!(empty.is_end_stream());
    }

    #[tokio::test]
    async fn inner_body_passes_through() {
        let body = ResponseBody::new(String::from("inner"));
        assert!(!body.is_full());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "inner");
    }
}
