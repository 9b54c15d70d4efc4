//! The body of a response that went through the response cache.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The body of a response through [`ResponseCache`](super::ResponseCache): a complete
/// body (from the cache, or buffered on a miss) or the inner service's body streamed
/// through, after whatever part of it was read while deciding whether to cache it.
pub struct ResponseCacheBody<B: Body> {
    kind: Kind<B>,
}

enum Kind<B: Body> {
    Full(Option<Bytes>),
    Stream {
        /// Data read before the body was found too large (or not cacheable) to keep.
        prefix: Option<Bytes>,
        /// The frame or error read after the prefix, given out once the prefix is.
        held: Option<Result<Frame<Bytes>, B::Error>>,
        /// The rest of the inner body; `None` once it ended.
        rest: Option<Pin<Box<B>>>,
    },
}

impl<B: Body> ResponseCacheBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full((!data.is_empty()).then_some(data)),
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    pub(crate) fn stream(body: B) -> Self {
        Self::resume(Bytes::new(), None, Some(Box::pin(body)))
    }

    /// The rest of a body of which `prefix` (and then `held`) was already read.
    pub(crate) fn resume(
        prefix: Bytes,
        held: Option<Result<Frame<Bytes>, B::Error>>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            kind: Kind::Stream {
                prefix: (!prefix.is_empty()).then_some(prefix),
                held,
                rest,
            },
        }
    }

    /// Whether the body is complete in memory (served from the cache or buffered).
    pub fn is_full(&self) -> bool {
        matches!(self.kind, Kind::Full(_))
    }
}

// No field is ever pinned in place: the inner body is boxed.
impl<B: Body> Unpin for ResponseCacheBody<B> {}

impl<B: Body> fmt::Debug for ResponseCacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(data) => f
                .debug_struct("ResponseCacheBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Stream { .. } => f.write_str("ResponseCacheBody::Stream"),
        }
    }
}

/// Moves a frame's data into `Bytes` (no copy when it already is `Bytes`).
pub(crate) fn frame_bytes<D: Buf>(frame: Frame<D>) -> Result<Frame<Bytes>, HeaderMap> {
    match frame.into_data() {
        Ok(mut data) => Ok(Frame::data(data.copy_to_bytes(data.remaining()))),
        Err(frame) => Err(frame.into_trailers().unwrap_or_default()),
    }
}

impl<B: Body> Body for ResponseCacheBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            Kind::Stream { prefix, held, rest } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                if let Some(held) = held.take() {
                    return Poll::Ready(Some(held));
                }
                let Some(body) = rest else {
                    return Poll::Ready(None);
                };
                match body.as_mut().poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        *rest = None;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
                    Poll::Ready(Some(Ok(frame))) => {
                        Poll::Ready(Some(Ok(frame_bytes(frame).unwrap_or_else(Frame::trailers))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Stream { prefix, held, rest } => {
                prefix.is_none()
                    && held.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, Bytes::len) as u64),
            Kind::Stream { prefix, held, rest } => {
                let already = prefix.as_ref().map_or(0, Bytes::len) as u64
                    + match held {
                        Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len) as u64,
                        _ => 0,
                    };
                let mut hint = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
                let lower = hint.lower().saturating_add(already);
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper.saturating_add(already));
                }
                hint.set_lower(lower);
                hint
            }
        }
    }
}
