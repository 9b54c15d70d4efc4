use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header, response::Parts};
use http_body::Body;
use pin_project_lite::pin_project;

use super::{
    CompressionBody, Encoding, EventStreams, NoCompression, Predicate,
    body::{BoxError, POLL_BUDGET, Stream},
    encoder::{Encoder, Flush},
    encoding::Negotiated,
    layer::{Config, ETagMode},
    predicate::is_event_stream,
    stats::Skip,
};

pin_project! {
    /// The response future of [`Compression`](super::Compression).
    pub struct ResponseFuture<F, B, P> {
        #[pin]
        state: State<F>,
        phase: Phase<B>,
        negotiated: Negotiated,
        head: bool,
        config: Arc<Config>,
        predicate: P,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        /// The inner service answered; [`Phase`] holds the rest of the work.
        Answered,
        /// Answered `406` without calling the inner service.
        Refused,
    }
}

/// Work between the inner response and the response this layer hands out.
enum Phase<B> {
    Waiting,
    /// Reading the body before deciding (unknown length, up to the minimum size) or
    /// before compressing it whole (known length, up to the in-memory limit).
    Collecting {
        parts: Parts,
        body: Pin<Box<B>>,
        buffer: Collected,
        trailers: Option<HeaderMap>,
        encoding: Encoding,
        /// The length the body declared, when it did.
        known: Option<u64>,
    },
    /// Compressing a collected body, [`POLL_BUDGET`] bytes per poll.
    Compressing {
        parts: Parts,
        input: Bytes,
        encoder: Encoder,
        out: Vec<u8>,
        trailers: Option<HeaderMap>,
        /// The collected body's length.
        len: u64,
    },
    Done,
}

/// Body bytes collected so far: the first chunk without a copy, later ones appended.
#[derive(Default)]
enum Collected {
    #[default]
    Empty,
    One(Bytes),
    Many(Vec<u8>),
}

impl Collected {
    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(bytes) => bytes.len(),
            Self::Many(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, mut data: impl Buf, capacity: usize) {
        match std::mem::take(self) {
            Self::Empty => *self = Self::One(data.copy_to_bytes(data.remaining())),
            Self::One(first) => {
                let mut all = Vec::with_capacity(capacity.max(first.len() + data.remaining()));
                all.extend_from_slice(&first);
                put(&mut all, data);
                *self = Self::Many(all);
            }
            Self::Many(mut all) => {
                put(&mut all, data);
                *self = Self::Many(all);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(bytes) => bytes,
            Self::Many(bytes) => Bytes::from(bytes),
        }
    }
}

fn put(out: &mut Vec<u8>, mut data: impl Buf) {
    while data.has_remaining() {
        let chunk = data.chunk();
        out.extend_from_slice(chunk);
        let n = chunk.len();
        data.advance(n);
    }
}

impl<F, B, P> ResponseFuture<F, B, P> {
    pub(crate) fn new(
        future: F,
        negotiated: Negotiated,
        head: bool,
        config: Arc<Config>,
        predicate: P,
    ) -> Self {
        Self {
            state: State::Inner { future },
            phase: Phase::Waiting,
            negotiated,
            head,
            config,
            predicate,
        }
    }

    /// A future that answers `406 Not Acceptable` at once.
    pub(crate) fn refused(config: Arc<Config>, predicate: P) -> Self {
        Self {
            state: State::Refused,
            phase: Phase::Waiting,
            negotiated: Negotiated::NotAcceptable,
            head: false,
            config,
            predicate,
        }
    }
}

type Output<B, E> = Result<Response<CompressionBody<B>>, E>;

impl<F, B, E, P> Future for ResponseFuture<F, B, P>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Error: Into<BoxError>,
    P: Predicate,
{
    type Output = Output<B, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let StateProj::Refused = this.state.as_mut().project() {
            this.config.stats.skipped(Skip::NotAcceptable);
            this.state.set(State::Answered);
            return Poll::Ready(Ok(not_acceptable()));
        }
        if let StateProj::Inner { future } = this.state.as_mut().project() {
            let response = ready!(future.poll(cx))?;
            this.state.set(State::Answered);
            let (parts, body) = response.into_parts();
            match start(
                parts,
                body,
                *this.negotiated,
                *this.head,
                this.config,
                this.predicate,
            ) {
                Start::Respond(response) => return Poll::Ready(Ok(response)),
                Start::Continue(phase) => *this.phase = phase,
            }
        }
        loop {
            match std::mem::replace(this.phase, Phase::Done) {
                Phase::Collecting {
                    parts,
                    mut body,
                    mut buffer,
                    mut trailers,
                    encoding,
                    known,
                } => {
                    let config = &**this.config;
                    // Unknown length: decide once the minimum is reached. Known length:
                    // collect it all, unless it proves longer than declared.
                    let stop_at = match known {
                        None => config.min_size,
                        Some(_) => config.in_memory_limit.saturating_add(1),
                    };
                    let ended = loop {
                        if buffer.len() as u64 >= stop_at {
                            break false;
                        }
                        match body.as_mut().poll_frame(cx) {
                            Poll::Pending => {
                                *this.phase = Phase::Collecting {
                                    parts,
                                    body,
                                    buffer,
                                    trailers,
                                    encoding,
                                    known,
                                };
                                return Poll::Pending;
                            }
                            Poll::Ready(None) => break true,
                            Poll::Ready(Some(Err(error))) => {
                                return Poll::Ready(Ok(Response::from_parts(
                                    parts,
                                    CompressionBody::failed(error.into()),
                                )));
                            }
                            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                                Ok(data) => buffer.push(data, known.unwrap_or(0) as usize),
                                Err(frame) => {
                                    trailers = frame.into_trailers().ok();
                                    break true;
                                }
                            },
                        }
                    };
                    config.stats.buffered(buffer.len());
                    let collected = buffer.into_bytes();
                    if !ended {
                        // Long enough and still going: compress as a stream.
                        let mut parts = parts;
                        encoded_headers(&mut parts.headers, encoding, config.etag, None);
                        let level = config.levels[encoding.index()].for_size(None);
                        let Some(encoder) = Encoder::new(encoding, level, None) else {
                            return Poll::Ready(Ok(Response::from_parts(
                                parts,
                                CompressionBody::prefixed(collected, body),
                            )));
                        };
                        let stream =
                            Stream::new(body, encoder, collected, false, config.stats.clone());
                        return Poll::Ready(Ok(Response::from_parts(
                            parts,
                            CompressionBody::encoding(stream),
                        )));
                    }
                    let len = collected.len() as u64;
                    if len < config.min_size {
                        config.stats.skipped(Skip::TooSmall);
                        let mut parts = parts;
                        parts
                            .headers
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                        return Poll::Ready(Ok(Response::from_parts(
                            parts,
                            CompressionBody::full(collected, trailers),
                        )));
                    }
                    let level = config.levels[encoding.index()].for_size(Some(len));
                    let Some(encoder) = Encoder::new(encoding, level, Some(len)) else {
                        return Poll::Ready(Ok(Response::from_parts(
                            parts,
                            CompressionBody::full(collected, trailers),
                        )));
                    };
                    *this.phase = Phase::Compressing {
                        parts,
                        out: Vec::with_capacity(collected.len() / 4 + 64),
                        input: collected,
                        encoder,
                        trailers,
                        len,
                    };
                }
                Phase::Compressing {
                    mut parts,
                    mut input,
                    mut encoder,
                    mut out,
                    trailers,
                    len,
                } => {
                    let config = &**this.config;
                    let chunk = input.split_to(input.len().min(POLL_BUDGET));
                    let flush = if input.is_empty() {
                        Flush::Finish
                    } else {
                        Flush::None
                    };
                    if let Err(error) = encoder.encode(&chunk, flush, &mut out) {
                        return Poll::Ready(Ok(Response::from_parts(
                            parts,
                            CompressionBody::failed(error.into()),
                        )));
                    }
                    if flush == Flush::None {
                        *this.phase = Phase::Compressing {
                            parts,
                            input,
                            encoder,
                            out,
                            trailers,
                            len,
                        };
                        // Let other tasks run between slices of a large body.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    let encoding = encoder.encoding();
                    config.stats.encoded(encoding, len, out.len() as u64);
                    config.stats.buffered(out.len());
                    encoded_headers(
                        &mut parts.headers,
                        encoding,
                        config.etag,
                        Some(out.len() as u64),
                    );
                    return Poll::Ready(Ok(Response::from_parts(
                        parts,
                        CompressionBody::full(Bytes::from(out), trailers),
                    )));
                }
                Phase::Waiting | Phase::Done => {
                    panic!("ResponseFuture polled after completion")
                }
            }
        }
    }
}

/// What the response head decides.
enum Start<B> {
    /// The response is final: passed through, or refused.
    Respond(Response<CompressionBody<B>>),
    /// The body must be read first.
    Continue(Phase<B>),
}

/// Decides from the response head what becomes of the response.
fn start<B, P>(
    mut parts: Parts,
    body: B,
    negotiated: Negotiated,
    head: bool,
    config: &Config,
    predicate: &P,
) -> Start<B>
where
    B: Body,
    P: Predicate,
{
    let stats = &config.stats;
    let pass = |parts: Parts, body: B, reason: Skip| {
        stats.skipped(reason);
        Start::Respond(Response::from_parts(parts, CompressionBody::identity(body)))
    };
    let status = parts.status;
    if head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return pass(parts, body, Skip::NoBody);
    }
    if parts.extensions.get::<NoCompression>().is_some() {
        return pass(parts, body, Skip::OptedOut);
    }
    if parts.headers.contains_key(header::CONTENT_ENCODING) {
        return pass(parts, body, Skip::AlreadyEncoded);
    }
    if status == StatusCode::PARTIAL_CONTENT || parts.headers.contains_key(header::CONTENT_RANGE) {
        return pass(parts, body, Skip::Partial);
    }
    if has_no_transform(&parts.headers) {
        return pass(parts, body, Skip::NoTransform);
    }
    let size = body.size_hint().exact();
    if !predicate.should_compress(&parts, size) {
        return pass(parts, body, Skip::Predicate);
    }
    // From here on the representation depends on Accept-Encoding, compressed or not.
    add_vary(&mut parts.headers);
    let event_stream = is_event_stream(&parts.headers);
    if event_stream && config.event_streams == EventStreams::Skip {
        return pass(parts, body, Skip::EventStream);
    }
    let encoding = match negotiated {
        Negotiated::Encode(encoding) => encoding,
        Negotiated::Identity | Negotiated::NotAcceptable => {
            return pass(parts, body, Skip::Identity);
        }
    };
    if size.is_some_and(|size| size < config.min_size) {
        return pass(parts, body, Skip::TooSmall);
    }
    let body = Box::pin(body);
    let streamed = event_stream
        || size.is_some_and(|size| size > config.in_memory_limit)
        || (size.is_none() && config.min_size == 0);
    if streamed {
        let level = config.levels[encoding.index()].for_size(size);
        let Some(encoder) = Encoder::new(encoding, level, size) else {
            return pass_boxed(parts, body, stats);
        };
        encoded_headers(&mut parts.headers, encoding, config.etag, None);
        let stream = Stream::new(body, encoder, Bytes::new(), event_stream, stats.clone());
        return Start::Respond(Response::from_parts(
            parts,
            CompressionBody::encoding(stream),
        ));
    }
    Start::Continue(Phase::Collecting {
        parts,
        body,
        buffer: Collected::Empty,
        trailers: None,
        encoding,
        known: size,
    })
}

fn pass_boxed<B>(parts: Parts, body: Pin<Box<B>>, stats: &super::CompressionStats) -> Start<B> {
    stats.skipped(Skip::Identity);
    Start::Respond(Response::from_parts(
        parts,
        CompressionBody::prefixed(Bytes::new(), body),
    ))
}

/// Whether `Cache-Control` forbids transforming the body.
pub(crate) fn has_no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"))
}

/// Adds `Accept-Encoding` to `Vary`, once, whatever the case, into a single field; leaves
/// `Vary: *` alone.
pub(crate) fn add_vary(headers: &mut HeaderMap) {
    let mut existing = headers.get_all(header::VARY).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        return;
    }
    let mut merged = Vec::new();
    for value in existing {
        for name in value.as_bytes().split(|&b| b == b',') {
            let name = name.trim_ascii();
            if name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding") {
                return;
            }
            if !name.is_empty() {
                if !merged.is_empty() {
                    merged.extend_from_slice(b", ");
                }
                merged.extend_from_slice(name);
            }
        }
    }
    if !merged.is_empty() {
        merged.extend_from_slice(b", ");
    }
    merged.extend_from_slice(b"accept-encoding");
    if let Ok(value) = HeaderValue::from_bytes(&merged) {
        headers.insert(header::VARY, value);
    }
}

/// The head of a compressed response: its coding, its length (or none, for a stream), no
/// byte ranges, and its `ETag` as configured.
fn encoded_headers(headers: &mut HeaderMap, encoding: Encoding, etag: ETagMode, len: Option<u64>) {
    headers.insert(header::CONTENT_ENCODING, encoding.header_value());
    headers.remove(header::ACCEPT_RANGES);
    match len {
        Some(len) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    let Some(value) = headers.get(header::ETAG) else {
        return;
    };
    let bytes = value.as_bytes();
    if bytes.starts_with(b"W/") {
        return;
    }
    let replacement = match etag {
        ETagMode::Keep => return,
        ETagMode::Drop => None,
        ETagMode::Weaken => HeaderValue::from_bytes(&[b"W/", bytes].concat()).ok(),
        ETagMode::Suffix => match bytes.strip_suffix(b"\"") {
            Some(open) => {
                HeaderValue::from_bytes(&[open, b"-", encoding.as_str().as_bytes(), b"\""].concat())
                    .ok()
            }
            None => None,
        },
    };
    match replacement {
        Some(value) => {
            headers.insert(header::ETAG, value);
        }
        None => {
            headers.remove(header::ETAG);
        }
    }
}

/// The `406 Not Acceptable` answer to a request that excludes identity and every offered
/// coding.
pub(crate) fn not_acceptable<B>() -> Response<CompressionBody<B>> {
    let json = crate::body::json_error_body(
        "not_acceptable",
        "no acceptable content coding: the request excludes identity and every coding this server offers",
    );
    let mut response = Response::new(CompressionBody::full(Bytes::from(json), None));
    *response.status_mut() = StatusCode::NOT_ACCEPTABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_vary(headers);
    response
}
