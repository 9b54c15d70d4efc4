use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    io::Read,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::{Service, ServiceExt, service_fn};

use super::*;

/// JSON-like text of `len` bytes, varied enough that compression has work to do.
fn json(len: usize) -> Bytes {
    let mut out = String::with_capacity(len + 100);
    let mut i = 0u64;
    while out.len() < len {
        i += 1;
        out.push_str(&format!(
            r#"{{"id":{i},"name":"user {}","email":"u{}@example.com","active":{}}},"#,
            i * 7919 % 1000,
            i * 104_729 % 10_007,
            i.is_multiple_of(3)
        ));
    }
    out.truncate(len);
    Bytes::from(out)
}

pub(crate) fn decode(encoding: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        None => out.extend_from_slice(data),
        Some("gzip") => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some(other) => panic!("unexpected coding {other}"),
    }
    out
}

/// A body of unknown length yielding `frames`, each ready at once.
struct Chunks(VecDeque<Result<Frame<Bytes>, std::io::Error>>);

impl Chunks {
    fn new(data: &[u8], frame: usize) -> Self {
        Self(
            data.chunks(frame)
                .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
                .collect(),
        )
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}

/// A body fed through a channel, frame by frame, pending in between.
struct Channel(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

fn channel() -> (mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, Channel) {
    let (tx, rx) = mpsc::channel(16);
    (tx, Channel(rx))
}

fn request(accept: Option<&str>) -> Request<()> {
    let mut request = Request::new(());
    if let Some(accept) = accept {
        request.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept).unwrap(),
        );
    }
    request
}

/// Runs one request through `layer` over a handler answering `response()`.
async fn run<B>(
    layer: &CompressionLayer,
    request: Request<()>,
    response: impl FnOnce() -> Response<B>,
) -> Response<CompressionBody<B>>
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut response = Some(response());
    let service = layer.layer_for(service_fn(move |_: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(response.take().expect("one request")))
    }));
    service.oneshot(request).await.unwrap()
}

impl CompressionLayer {
    fn layer_for<S>(&self, inner: S) -> Compression<S, DefaultPredicate> {
        tower_layer::Layer::layer(self, inner)
    }
}

fn json_response(body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .unwrap()
}

fn coding(response: &Response<impl Body>) -> Option<String> {
    response
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap().to_owned())
}

async fn body_bytes<B>(response: Response<CompressionBody<B>>) -> Bytes
where
    B: Body,
    B::Error: Into<BoxError>,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

// ===== round trips =====

#[tokio::test]
async fn every_coding_round_trips_at_every_size_known_and_streamed() {
    let layer = CompressionLayer::new();
    for (accept, expected) in [("br", "br"), ("gzip", "gzip"), ("deflate", "deflate")] {
        for len in [0, 1, 1023, 1024, 64 * 1024, 1024 * 1024] {
            let data = json(len);
            let compressed = len >= 1024;

            let response = run(&layer, request(Some(accept)), || {
                json_response(data.clone())
            })
            .await;
            assert_eq!(
                coding(&response).as_deref(),
                compressed.then_some(expected),
                "{accept} {len} known"
            );
            let declared = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
            let encoding = coding(&response);
            let body = body_bytes(response).await;
            if !compressed {
                assert_eq!(declared, None, "{accept} {len}: the handler's own head");
            } else if len <= 512 * 1024 {
                assert_eq!(declared, Some(body.len()), "{accept} {len}: exact length");
            } else {
                assert_eq!(declared, None, "{accept} {len}: streamed, no length");
            }
            assert_eq!(
                decode(encoding.as_deref(), &body),
                data,
                "{accept} {len} known"
            );

            let response = run(&layer, request(Some(accept)), || {
                Response::new(Chunks::new(&data, 10_000))
            })
            .await;
            assert_eq!(
                coding(&response).as_deref(),
                compressed.then_some(expected),
                "{accept} {len} streamed"
            );
            let encoding = coding(&response);
            let body = body_bytes(response).await;
            assert_eq!(
                decode(encoding.as_deref(), &body),
                data,
                "{accept} {len} streamed"
            );
        }
    }
}

#[tokio::test]
async fn compressed_json_is_much_smaller() {
    let layer = CompressionLayer::new();
    let data = json(200 * 1024);
    for accept in ["br", "gzip"] {
        let response = run(&layer, request(Some(accept)), || {
            json_response(data.clone())
        })
        .await;
        let body = body_bytes(response).await;
        assert!(
            body.len() * 4 < data.len(),
            "{accept}: {} of {}",
            body.len(),
            data.len()
        );
    }
}

// ===== negotiation through the layer =====

#[tokio::test]
async fn the_layer_negotiates_as_the_table_says() {
    let layer = CompressionLayer::new();
    let data = json(4096);
    for (accept, expected) in [
        (Some("gzip, deflate, br"), Some("br")),
        (Some("br;q=0, gzip"), Some("gzip")),
        (Some("gzip;q=2"), None),
        (Some("zstd"), None),
        (None, None),
    ] {
        let response = run(&layer, request(accept), || json_response(data.clone())).await;
        assert_eq!(coding(&response).as_deref(), expected, "{accept:?}");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::VARY], "accept-encoding");
    }

    let gzip_only = CompressionLayer::new().encoding(Encoding::Brotli, false);
    let response = run(&gzip_only, request(Some("br, gzip")), || {
        json_response(data.clone())
    })
    .await;
    assert_eq!(coding(&response).as_deref(), Some("gzip"));

    let gzip_first = CompressionLayer::new().preference([Encoding::Gzip, Encoding::Brotli]);
    let response = run(&gzip_first, request(Some("br, gzip")), || {
        json_response(data.clone())
    })
    .await;
    assert_eq!(coding(&response).as_deref(), Some("gzip"));
}

#[tokio::test]
async fn nothing_acceptable_is_identity_by_default_and_406_when_asked() {
    let data = json(4096);
    let lenient = CompressionLayer::new();
    let response = run(&lenient, request(Some("identity;q=0, zstd")), || {
        json_response(data.clone())
    })
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(coding(&response), None);
    assert_eq!(body_bytes(response).await, data);

    let strict = CompressionLayer::new().not_acceptable(true);
    let stats = strict.stats();
    let mut handler_ran = false;
    let service = strict.layer_for(service_fn(|_: Request<()>| {
        handler_ran = true;
        std::future::ready(Ok::<_, Infallible>(json_response(data.clone())))
    }));
    let response = service
        .oneshot(request(Some("identity;q=0, zstd")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(body["error"], "not_acceptable");
    assert!(!handler_ran, "refused before the handler ran");
    assert_eq!(stats.snapshot().skipped.not_acceptable, 1);

    // Still fine with a coding it can use.
    let response = run(&strict, request(Some("identity;q=0, gzip")), || {
        json_response(data.clone())
    })
    .await;
    assert_eq!(coding(&response).as_deref(), Some("gzip"));
}

// ===== skip rules =====

#[tokio::test]
async fn responses_compression_would_break_pass_untouched() {
    let layer = CompressionLayer::new();
    let stats = layer.stats();
    let data = json(8192);
    let with = |name: header::HeaderName, value: &'static str| {
        let data = data.clone();
        move || {
            let mut response = json_response(data);
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
            response
        }
    };
    type Handler = Box<dyn FnOnce() -> Response<Full<Bytes>>>;
    let cases: Vec<(&str, Handler)> = vec![
        ("encoded", Box::new(with(header::CONTENT_ENCODING, "gzip"))),
        (
            "no-transform",
            Box::new(with(header::CACHE_CONTROL, "public, No-Transform")),
        ),
        (
            "range",
            Box::new(with(header::CONTENT_RANGE, "bytes 0-8191/20000")),
        ),
        ("png", Box::new(with(header::CONTENT_TYPE, "image/png"))),
        ("partial", {
            let data = data.clone();
            Box::new(move || {
                let mut response = json_response(data);
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                response
            })
        }),
        (
            "no content",
            Box::new(|| {
                let mut response = json_response(Bytes::new());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }),
        ),
        (
            "not modified",
            Box::new(|| {
                let mut response = json_response(Bytes::new());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                response
            }),
        ),
        ("opted out", {
            let data = data.clone();
            Box::new(move || {
                let mut response = json_response(data);
                response.extensions_mut().insert(NoCompression);
                response
            })
        }),
    ];
    for (name, response) in cases {
        let response = run(&layer, request(Some("gzip, br")), response).await;
        let before = response.headers().get(header::CONTENT_ENCODING).cloned();
        assert!(
            before.is_none() || before.as_ref().unwrap() == "gzip",
            "{name}: not re-encoded"
        );
        assert!(
            !response.headers().contains_key(header::VARY),
            "{name}: no Vary"
        );
        let body = body_bytes(response).await;
        if !body.is_empty() {
            assert_eq!(body, data, "{name}: the body as the handler wrote it");
        }
    }
    let skipped = stats.snapshot().skipped;
    assert_eq!(
        (
            skipped.already_encoded,
            skipped.no_transform,
            skipped.partial,
            skipped.predicate,
            skipped.no_body,
            skipped.opted_out
        ),
        (1, 1, 2, 1, 2, 1)
    );
}

#[tokio::test]
async fn head_requests_and_small_bodies_pass_untouched() {
    let layer = CompressionLayer::new();
    let stats = layer.stats();
    let data = json(8192);
    let mut head = request(Some("gzip"));
    *head.method_mut() = http::Method::HEAD;
    let response = run(&layer, head, || json_response(data.clone())).await;
    assert_eq!(coding(&response), None);

    let small = json(1023);
    let response = run(&layer, request(Some("gzip")), || {
        json_response(small.clone())
    })
    .await;
    assert_eq!(coding(&response), None);
    assert_eq!(response.headers()[header::VARY], "accept-encoding");
    assert_eq!(body_bytes(response).await, small);

    // Unknown length, small in total: held until it ends, then sent as it is, with its length.
    let response = run(&layer, request(Some("gzip")), || {
        Response::new(Chunks::new(&small, 300))
    })
    .await;
    assert_eq!(coding(&response), None);
    assert_eq!(response.headers()[header::CONTENT_LENGTH], "1023");
    assert_eq!(body_bytes(response).await, small);

    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.skipped.no_body, snapshot.skipped.too_small),
        (1, 2)
    );
}

// ===== headers =====

#[tokio::test]
async fn vary_is_merged_once_whatever_the_case() {
    let layer = CompressionLayer::new();
    let data = json(4096);
    for (existing, expected) in [
        (&["origin"][..], "origin, accept-encoding"),
        (&["Accept-Encoding"][..], "Accept-Encoding"),
        (&["origin, ACCEPT-ENCODING"][..], "origin, ACCEPT-ENCODING"),
        (&["*"][..], "*"),
        (&["origin", "cookie"][..], "origin, cookie, accept-encoding"),
    ] {
        let response = run(&layer, request(Some("gzip")), || {
            let mut response = json_response(data.clone());
            for value in existing {
                response
                    .headers_mut()
                    .append(header::VARY, HeaderValue::from_static(value));
            }
            response
        })
        .await;
        let vary: Vec<_> = response.headers().get_all(header::VARY).iter().collect();
        assert_eq!(vary, [expected], "{existing:?}");
    }
}

#[tokio::test]
async fn compressed_responses_lose_ranges_and_their_etag_follows_the_mode() {
    let data = json(4096);
    for (mode, expected) in [
        (ETagMode::Weaken, Some("W/\"v1\"")),
        (ETagMode::Suffix, Some("\"v1-gzip\"")),
        (ETagMode::Drop, None),
        (ETagMode::Keep, Some("\"v1\"")),
    ] {
        let layer = CompressionLayer::new().etag(mode);
        let response = run(&layer, request(Some("gzip")), || {
            let mut response = json_response(data.clone());
            let headers = response.headers_mut();
            headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("4096"));
            response
        })
        .await;
        let headers = response.headers();
        assert_eq!(
            headers.get(header::ETAG).map(|v| v.to_str().unwrap()),
            expected,
            "{mode:?}"
        );
        assert!(!headers.contains_key(header::ACCEPT_RANGES));
        assert_ne!(headers[header::CONTENT_LENGTH], "4096");
    }
    // A weak ETag stays as it is.
    let layer = CompressionLayer::new();
    let response = run(&layer, request(Some("gzip")), || {
        let mut response = json_response(data.clone());
        response
            .headers_mut()
            .insert(header::ETAG, HeaderValue::from_static("W/\"v2\""));
        response
    })
    .await;
    assert_eq!(response.headers()[header::ETAG], "W/\"v2\"");
}

// ===== streams =====

type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

/// Polls `body` once, without waiting.
fn poll_once<B: Body + Unpin>(body: &mut B) -> Polled<B> {
    let waker = std::task::Waker::noop();
    Pin::new(body).poll_frame(&mut Context::from_waker(waker))
}

#[tokio::test]
async fn an_event_stream_is_flushed_frame_by_frame() {
    let layer = CompressionLayer::new();
    let (tx, body) = channel();
    let response = run(&layer, request(Some("gzip")), || {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(body)
            .unwrap()
    })
    .await;
    assert_eq!(coding(&response).as_deref(), Some("gzip"));
    let mut body = response.into_body();
    let mut received = Vec::new();
    let mut decoder = flate2::Decompress::new_gzip(15);
    for event in ["data: one\n\n", "data: two\n\n", "data: three\n\n"] {
        assert!(
            poll_once(&mut body).is_pending(),
            "nothing before the event"
        );
        tx.send(Ok(Frame::data(Bytes::from(event)))).await.unwrap();
        let Poll::Ready(Some(Ok(frame))) = poll_once(&mut body) else {
            panic!("the event is sent at once");
        };
        let data = frame.into_data().unwrap();
        let mut out = Vec::with_capacity(1024);
        decoder
            .decompress_vec(&data, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, event.as_bytes(), "each event decodes on arrival");
        received.extend_from_slice(&data);
    }
    drop(tx);
    while let Some(frame) = body.frame().await {
        received.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(
        decode(Some("gzip"), &received),
        b"data: one\n\ndata: two\n\ndata: three\n\n"
    );

    let skip = CompressionLayer::new().event_streams(EventStreams::Skip);
    let (_tx, body) = channel();
    let response = run(&skip, request(Some("gzip")), || {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(body)
            .unwrap()
    })
    .await;
    assert_eq!(coding(&response), None);
}

#[tokio::test]
async fn a_stream_is_flushed_whenever_the_inner_body_waits() {
    let layer = CompressionLayer::new();
    let (tx, body) = channel();
    let first = json(4096);
    tx.send(Ok(Frame::data(first.clone()))).await.unwrap();
    let response = run(&layer, request(Some("br")), || Response::new(body)).await;
    assert_eq!(coding(&response).as_deref(), Some("br"));
    let mut body = response.into_body();
    let Poll::Ready(Some(Ok(frame))) = poll_once(&mut body) else {
        panic!("what the inner body gave is sent while it waits");
    };
    let mut prefix = Vec::new();
    let _ =
        brotli::Decompressor::new(&frame.into_data().unwrap()[..], 4096).read_to_end(&mut prefix);
    assert_eq!(prefix, first);
    assert!(poll_once(&mut body).is_pending());
}

#[tokio::test]
async fn a_body_error_mid_stream_is_an_error_not_a_short_body() {
    let layer = CompressionLayer::new();
    for frames in [1, 40] {
        let data = json(frames * 10_000);
        let mut chunks = Chunks::new(&data, 10_000);
        chunks.0.push_back(Err(std::io::Error::other("disk gone")));
        let response = run(&layer, request(Some("gzip")), || Response::new(chunks)).await;
        let error = response.into_body().collect().await.unwrap_err();
        assert!(error.to_string().contains("disk gone"), "{error}");
    }
    // Before the head: a known-length body that fails while collected.
    let failing = Chunks(VecDeque::from([
        Ok(Frame::data(json(2000))),
        Err(std::io::Error::other("disk gone")),
    ]));
    struct Sized(Chunks);
    impl Body for Sized {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Pin::new(&mut self.0).poll_frame(cx)
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(4000)
        }
    }
    let response = run(&layer, request(Some("gzip")), || {
        Response::new(Sized(failing))
    })
    .await;
    assert!(response.into_body().collect().await.is_err());
}

#[tokio::test]
async fn trailers_pass_through() {
    let layer = CompressionLayer::new();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let data = json(5000);
    for stream in [false, true] {
        let mut chunks = Chunks::new(&data, 2500);
        chunks.0.push_back(Ok(Frame::trailers(trailers.clone())));
        let layer = if stream {
            layer.clone().min_size(0)
        } else {
            layer.clone()
        };
        let response = run(&layer, request(Some("gzip")), || Response::new(chunks)).await;
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers), "stream: {stream}");
        assert_eq!(decode(Some("gzip"), &collected.to_bytes()), data);
    }
}

#[tokio::test]
async fn a_large_body_is_compressed_over_several_polls() {
    let layer = CompressionLayer::new();
    let data = json(400 * 1024);
    let service = layer.layer_for(service_fn(move |_: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(json_response(data.clone())))
    }));
    let mut future = std::pin::pin!(service.oneshot(request(Some("br"))));
    let waker = std::task::Waker::noop();
    let mut pending = 0;
    let response = loop {
        match future.as_mut().poll(&mut Context::from_waker(waker)) {
            Poll::Ready(response) => break response.unwrap(),
            Poll::Pending => pending += 1,
        }
    };
    // 400 KiB in slices of 64 KiB: the runtime got six chances to run other tasks.
    assert_eq!(pending, 6);
    assert_eq!(coding(&response).as_deref(), Some("br"));
}

#[tokio::test]
async fn a_100_mib_stream_is_compressed_in_bounded_memory() {
    let layer = CompressionLayer::new();
    let stats = layer.stats();
    let (tx, body) = channel();
    let chunk = json(64 * 1024);
    let producer = tokio::spawn(async move {
        for _ in 0..1600 {
            if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                return;
            }
        }
    });
    let response = run(&layer, request(Some("gzip")), || Response::new(body)).await;
    let mut decoder = flate2::write::GzDecoder::new(Counter(0));
    let mut body = response.into_body();
    let mut largest = 0;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        largest = largest.max(data.len());
        std::io::Write::write_all(&mut decoder, &data).unwrap();
    }
    producer.await.unwrap();
    assert_eq!(decoder.finish().unwrap().0, 1600 * 64 * 1024);
    let held = stats.snapshot().largest_buffer_bytes;
    assert!(largest <= 128 * 1024, "largest frame {largest}");
    assert!(held <= 128 * 1024, "largest buffer {held}");
}

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ===== statistics and configuration =====

#[tokio::test]
async fn statistics_count_codings_bytes_and_reasons() {
    let layer = CompressionLayer::new();
    let data = json(10_000);
    for accept in [Some("br"), Some("br"), Some("gzip"), None] {
        let response = run(&layer, request(accept), || json_response(data.clone())).await;
        body_bytes(response).await;
    }
    let snapshot = layer.stats().snapshot();
    assert_eq!(snapshot.br.responses, 2);
    assert_eq!(snapshot.br.bytes_in, 20_000);
    assert!(
        snapshot.br.ratio > 0.0 && snapshot.br.ratio < 0.5,
        "{}",
        snapshot.br.ratio
    );
    assert_eq!(snapshot.gzip.responses, 1);
    assert_eq!(snapshot.skipped.identity, 1);
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: CompressionSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snapshot);
}

#[test]
fn levels_can_depend_on_size() {
    let level = Level::new(4).up_to(16 * 1024, 6).up_to(1024, 9);
    assert_eq!(level.for_size(Some(100)), 9);
    assert_eq!(level.for_size(Some(1025)), 6);
    assert_eq!(level.for_size(Some(16 * 1024)), 6);
    assert_eq!(level.for_size(Some(16 * 1024 + 1)), 4);
    assert_eq!(level.for_size(None), 4);
}

#[test]
fn from_env_reads_the_seed_variables() {
    let layer = CompressionLayer::from_pairs(&[
        ("COMPRESSION_MIN_SIZE", "2048"),
        ("COMPRESSION_LEVEL", "9"),
        ("USE_BROTLI", "false"),
    ])
    .unwrap();
    assert_eq!(layer.config.min_size, 2048);
    assert_eq!(layer.config.levels[Encoding::Gzip.index()], Level::new(9));
    assert_eq!(
        layer.config.offer.order(),
        [Encoding::Gzip, Encoding::Deflate]
    );

    let defaults = CompressionLayer::from_pairs(&[("USE_BROTLI", " ")]).unwrap();
    assert_eq!(defaults.config.min_size, DEFAULT_MIN_SIZE);
    assert_eq!(defaults.config.offer.order(), Encoding::ALL);

    let error = CompressionLayer::from_pairs(&[("COMPRESSION_LEVEL", "10")]).unwrap_err();
    assert_eq!(error.name(), "COMPRESSION_LEVEL");
    assert!(error.reason().contains("at most 9"), "{error}");
    let error = CompressionLayer::from_pairs(&[("COMPRESSION_LEVEL", "99999999999")]).unwrap_err();
    assert_eq!(error.reason(), "the level must be at most 9", "{error}");
    let error = CompressionLayer::from_pairs(&[("COMPRESSION_LEVEL", "-1")]).unwrap_err();
    assert_eq!(
        error.reason(),
        "the level must be a whole number",
        "{error}"
    );
    let error = CompressionLayer::from_pairs(&[("USE_BROTLI", "maybe")]).unwrap_err();
    assert_eq!(error.name(), "USE_BROTLI");
    let error = CompressionLayer::from_pairs(&[("COMPRESSION_MIN_SIZE", "1k")]).unwrap_err();
    assert_eq!(error.name(), "COMPRESSION_MIN_SIZE");
}

/// The layer's service and future are `Send` when the inner ones are, so they run on a
/// multi-threaded runtime.
#[test]
fn services_and_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let mut service = CompressionLayer::new().layer_for(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(json_response(Bytes::new()))
    }));
    send(&service);
    let future = service.call(request(None));
    send(&future);
}
