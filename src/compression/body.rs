use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{
    CompressionStats,
    encoder::{Encoder, Flush},
};

/// The error type of [`CompressionBody`]: the inner body's error, boxed, or the encoder's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Input encoded in one poll at most, so that a large body never holds a runtime thread
/// for long: about a millisecond of brotli at quality 5 on this crate's bench machine.
pub(crate) const POLL_BUDGET: usize = 64 * 1024;

/// Compressed output gathered before it is sent as one frame, when the inner body has
/// more ready.
const FRAME_TARGET: usize = 32 * 1024;

pin_project! {
    /// The response body of [`Compression`](super::Compression): the inner body as it is,
    /// or compressed.
    pub struct CompressionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Identity { #[pin] body: B },
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Prefixed { prefix: Option<Bytes>, body: Pin<Box<B>> },
        Encoding { stream: Box<Stream<B>> },
        Failed { error: Option<BoxError> },
    }
}

impl<B> CompressionBody<B> {
    pub(crate) fn identity(body: B) -> Self {
        Self {
            kind: Kind::Identity { body },
        }
    }

    pub(crate) fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    /// The inner body, after `prefix` it already produced.
    pub(crate) fn prefixed(prefix: Bytes, body: Pin<Box<B>>) -> Self {
        Self {
            kind: Kind::Prefixed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                body,
            },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }

    pub(crate) fn encoding(stream: Stream<B>) -> Self {
        Self {
            kind: Kind::Encoding {
                stream: Box::new(stream),
            },
        }
    }
}

impl<B> fmt::Debug for CompressionBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Identity { .. } => "identity",
            Kind::Full { .. } => "full",
            Kind::Prefixed { .. } => "prefixed",
            Kind::Encoding { stream } => stream.encoder.encoding().as_str(),
            Kind::Failed { .. } => "failed",
        };
        f.debug_tuple("CompressionBody").field(&kind).finish()
    }
}

/// The inner body's frame with its data as `Bytes` (a move for `Bytes` itself).
pub(crate) fn into_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B> Body for CompressionBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Identity { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(into_bytes(frame)))),
                Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                None => Poll::Ready(None),
            },
            KindProj::Full { data, trailers } => Poll::Ready(match data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => trailers
                    .take()
                    .map(|trailers| Ok(Frame::trailers(trailers))),
            }),
            KindProj::Prefixed { prefix, body } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => Poll::Ready(Some(Ok(into_bytes(frame)))),
                    Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                    None => Poll::Ready(None),
                }
            }
            KindProj::Encoding { stream } => stream.poll_frame(cx),
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Identity { body } => body.is_end_stream(),
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Prefixed { prefix, body } => prefix.is_none() && body.is_end_stream(),
            Kind::Encoding { stream } => stream.state == StreamState::Done,
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Identity { body } => body.size_hint(),
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, Bytes::len) as u64)
            }
            Kind::Prefixed { prefix, body } => {
                let extra = prefix.as_ref().map_or(0, Bytes::len) as u64;
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + extra);
                }
                hint
            }
            Kind::Encoding { .. } | Kind::Failed { .. } => SizeHint::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamState {
    Running,
    /// The encoder finished; the inner body's trailers (if any) are next.
    Trailers,
    Done,
}

/// A body being compressed as it streams.
pub(crate) struct Stream<B> {
    body: Pin<Box<B>>,
    encoder: Encoder,
    /// Input taken from the inner body and not encoded yet.
    pending: Option<Bytes>,
    /// Flush after each inner frame (event streams), instead of only when the inner body
    /// makes the client wait.
    flush_each_frame: bool,
    /// Input was encoded since the last flush.
    unflushed: bool,
    trailers: Option<HeaderMap>,
    state: StreamState,
    bytes_in: u64,
    bytes_out: u64,
    stats: CompressionStats,
}

impl<B> Stream<B> {
    pub(crate) fn new(
        body: Pin<Box<B>>,
        encoder: Encoder,
        prefix: Bytes,
        flush_each_frame: bool,
        stats: CompressionStats,
    ) -> Self {
        Self {
            body,
            encoder,
            pending: (!prefix.is_empty()).then_some(prefix),
            flush_each_frame,
            unflushed: false,
            trailers: None,
            state: StreamState::Running,
            bytes_in: 0,
            bytes_out: 0,
            stats,
        }
    }
}

impl<B> Stream<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut out = Vec::new();
        let mut budget = POLL_BUDGET;
        loop {
            match self.state {
                StreamState::Done => return Poll::Ready(None),
                StreamState::Trailers => {
                    self.state = StreamState::Done;
                    return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                StreamState::Running => {}
            }
            if let Some(mut input) = self.pending.take() {
                let chunk = input.split_to(input.len().min(budget));
                if !input.is_empty() {
                    self.pending = Some(input);
                }
                budget -= chunk.len();
                let flush = if self.flush_each_frame && self.pending.is_none() {
                    Flush::Sync
                } else {
                    Flush::None
                };
                if let Err(error) = self.encoder.encode(&chunk, flush, &mut out) {
                    return self.fail(error.into());
                }
                self.bytes_in += chunk.len() as u64;
                self.unflushed = flush == Flush::None;
                if out.len() >= FRAME_TARGET || (flush == Flush::Sync && !out.is_empty()) {
                    return self.emit(out);
                }
                if budget == 0 {
                    if !out.is_empty() {
                        return self.emit(out);
                    }
                    // Let other tasks run; the rest of the input is encoded on the next poll.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            match self.body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        if data.has_remaining() {
                            self.pending = Some(data.copy_to_bytes(data.remaining()));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                        return self.finish(out);
                    }
                },
                Poll::Ready(Some(Err(error))) => return self.fail(error.into()),
                Poll::Ready(None) => return self.finish(out),
                Poll::Pending => {
                    // The client would wait: send what was encoded so far.
                    if self.unflushed {
                        if let Err(error) = self.encoder.encode(&[], Flush::Sync, &mut out) {
                            return self.fail(error.into());
                        }
                        self.unflushed = false;
                    }
                    if out.is_empty() {
                        return Poll::Pending;
                    }
                    return self.emit(out);
                }
            }
        }
    }

    fn emit(&mut self, out: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.stats.buffered(out.len());
        self.bytes_out += out.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
    }

    fn finish(&mut self, mut out: Vec<u8>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Err(error) = self.encoder.encode(&[], Flush::Finish, &mut out) {
            return self.fail(error.into());
        }
        self.state = StreamState::Trailers;
        self.stats.encoded(
            self.encoder.encoding(),
            self.bytes_in,
            self.bytes_out + out.len() as u64,
        );
        self.emit(out)
    }

    fn fail(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = StreamState::Done;
        Poll::Ready(Some(Err(error)))
    }
}
