use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::{Sleep, sleep};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tracing::Level;

use super::{
    OTHER_ROUTE, ResponseFuture, RouteSnapshot, Timing, TimingBody, TimingLayer, TimingSnapshot,
    TimingStats,
};
use crate::short_text::Millis;

use crate::capture::{Capture, Value};

/// A handler that waits for the duration in the request body, then answers `200`.
async fn sleep_for(request: Request<Duration>) -> Result<Response<String>, Infallible> {
    sleep(*request.body()).await;
    Ok(Response::new(String::from("ok")))
}

fn get(path: &str) -> Request<Duration> {
    Request::get(path).body(Duration::ZERO).unwrap()
}

fn after(delay: Duration) -> Request<Duration> {
    Request::get("/").body(delay).unwrap()
}

fn header<B>(response: &Response<B>, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

fn only_route(stats: &TimingStats) -> RouteSnapshot {
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.routes.len(), 1, "{snapshot:?}");
    snapshot.routes.into_iter().next().unwrap()
}

// ===== header =====

#[test]
fn millis_format() {
    let cases = [
        (Duration::ZERO, "0.00ms"),
        (Duration::from_nanos(4_999), "0.00ms"),
        (Duration::from_nanos(5_000), "0.01ms"),
        (Duration::from_micros(10), "0.01ms"),
        (Duration::from_micros(999), "1.00ms"),
        (Duration::from_micros(125_434), "125.43ms"),
        (Duration::from_micros(125_435), "125.44ms"),
        (Duration::from_millis(125), "125.00ms"),
        (Duration::from_secs(3_600), "3600000.00ms"),
        (Duration::MAX, "184467440737095516.15ms"),
    ];
    for (duration, expected) in cases {
        let millis = Millis::new(duration);
        assert_eq!(
            std::str::from_utf8(millis.process_time()).unwrap(),
            expected
        );
        assert_eq!(
            std::str::from_utf8(millis.server_timing()).unwrap(),
            format!("app;dur={}", expected.trim_end_matches("ms"))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn header_carries_handler_time() {
    let service = ServiceBuilder::new()
        .layer(TimingLayer::new())
        .service_fn(sleep_for);
    let response = service
        .oneshot(after(Duration::from_millis(125)))
        .await
        .unwrap();
    assert_eq!(header(&response, "x-process-time"), "125.00ms");
    assert!(!response.headers().contains_key("server-timing"));
}

#[tokio::test(start_paused = true)]
async fn header_for_instant_response() {
    let service = ServiceBuilder::new()
        .layer(TimingLayer::new())
        .service_fn(sleep_for);
    let response = service.oneshot(get("/")).await.unwrap();
    assert_eq!(header(&response, "x-process-time"), "0.00ms");
}

#[tokio::test(start_paused = true)]
async fn header_replaces_inner_process_time() {
    let service =
        ServiceBuilder::new()
            .layer(TimingLayer::new())
            .service_fn(|_: Request<()>| async {
                let mut response = Response::new(String::new());
                response
                    .headers_mut()
                    .insert("x-process-time", HeaderValue::from_static("inner"));
                Ok::<_, Infallible>(response)
            });
    let response = service.oneshot(Request::new(())).await.unwrap();
    let values: Vec<_> = response
        .headers()
        .get_all("x-process-time")
        .iter()
        .collect();
    assert_eq!(values, ["0.00ms"]);
}

#[tokio::test(start_paused = true)]
async fn server_timing_when_enabled() {
    let service = ServiceBuilder::new()
        .layer(TimingLayer::new().server_timing(true))
        .service_fn(sleep_for);
    let response = service
        .oneshot(after(Duration::from_millis(42)))
        .await
        .unwrap();
    assert_eq!(header(&response, "server-timing"), "app;dur=42.00");
    assert_eq!(header(&response, "x-process-time"), "42.00ms");
}

#[tokio::test(start_paused = true)]
async fn server_timing_appended_to_inner_value() {
    let service = ServiceBuilder::new()
        .layer(TimingLayer::new().server_timing(true))
        .service_fn(|_: Request<()>| async {
            sleep(Duration::from_millis(7)).await;
            let mut response = Response::new(String::new());
            response
                .headers_mut()
                .insert("server-timing", HeaderValue::from_static("db;dur=3.5"));
            Ok::<_, Infallible>(response)
        });
    let response = service.oneshot(Request::new(())).await.unwrap();
    let values: Vec<_> = response
        .headers()
        .get_all("server-timing")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert_eq!(values, ["db;dur=3.5", "app;dur=7.00"]);
}

// ===== slow-request log =====

#[tokio::test(start_paused = true)]
async fn slow_request_logged_with_fields() {
    let (capture, _guard) = Capture::install();
    let service = ServiceBuilder::new()
        .layer(TimingLayer::new().route_fn(|_: &Request<Duration>| Some("/reports/{id}")))
        .service_fn(|request: Request<Duration>| async move {
            sleep(*request.body()).await;
            let mut response = Response::new(String::new());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, Infallible>(response)
        });

    let request = Request::post("/reports/7")
        .body(Duration::from_millis(1_500))
        .unwrap();
    service.oneshot(request).await.unwrap();

    let events = capture.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.level, Level::WARN);
    assert_eq!(event.target, "perfkit::timing");
    assert_eq!(
        event.fields["message"],
        Value::Str(String::from("slow request"))
    );
    assert_eq!(event.fields["method"], Value::Str(String::from("POST")));
    assert_eq!(
        event.fields["route"],
        Value::Str(String::from("/reports/{id}"))
    );
    assert_eq!(event.fields["status"], Value::U64(503));
    assert_eq!(event.fields["duration_ms"], Value::F64(1_500.0));
}

#[tokio::test(start_paused = true)]
async fn fast_request_not_logged() {
    let (capture, _guard) = Capture::install();
    let service = ServiceBuilder::new()
        .layer(TimingLayer::new())
        .service_fn(sleep_for);
    service
        .oneshot(after(Duration::from_millis(999)))
        .await
        .unwrap();
    assert!(capture.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn threshold_is_inclusive_and_configurable() {
    let (capture, _guard) = Capture::install();
    let layer = TimingLayer::new().slow_threshold(Duration::from_millis(50));
    let service = ServiceBuilder::new().layer(layer).service_fn(sleep_for);
    service
        .clone()
        .oneshot(after(Duration::from_millis(49)))
        .await
        .unwrap();
    assert!(capture.events().is_empty());
    service
        .oneshot(after(Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(capture.events().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn slow_log_can_be_disabled() {
    let (capture, _guard) = Capture::install();
    for layer in [
        TimingLayer::new().slow_threshold(None),
        TimingLayer::new().no_slow_log(),
    ] {
        let service = ServiceBuilder::new().layer(layer).service_fn(sleep_for);
        service
            .oneshot(after(Duration::from_secs(10)))
            .await
            .unwrap();
    }
    assert!(capture.events().is_empty());
}

// ===== statistics =====

/// Allowed distance between a reported percentile and the recorded value.
fn assert_close(reported: f64, expected: f64) {
    let tolerance = expected / 64.0 + 0.001;
    assert!(
        (reported - expected).abs() <= tolerance,
        "reported {reported} ms, expected {expected} ms ± {tolerance}"
    );
}

#[tokio::test(start_paused = true)]
async fn percentiles_of_known_latencies() {
    let layer = TimingLayer::new().no_slow_log();
    let stats = layer.stats();
    let mut service = ServiceBuilder::new().layer(layer).service_fn(sleep_for);
    // Shuffled order, so the result cannot depend on arrival order.
    for i in 0..100u64 {
        let ms = (i * 37) % 100 + 1;
        let request = after(Duration::from_millis(ms));
        service.ready().await.unwrap().call(request).await.unwrap();
    }

    let route = only_route(&stats);
    assert_eq!(route.route, OTHER_ROUTE);
    assert_eq!(route.count, 100);
    assert_eq!(route.server_errors, 0);
    assert_close(route.p50_ms, 50.0);
    assert_close(route.p95_ms, 95.0);
    assert_close(route.p99_ms, 99.0);
    assert_eq!(route.max_ms, 100.0);
    assert_eq!(route.mean_ms, 50.5);
}

#[tokio::test(start_paused = true)]
async fn server_errors_counted() {
    let layer = TimingLayer::new();
    let stats = layer.stats();
    let service =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|request: Request<u16>| async move {
                let mut response = Response::new(String::new());
                *response.status_mut() = StatusCode::from_u16(*request.body()).unwrap();
                Ok::<_, Infallible>(response)
            });
    for status in [200, 404, 500, 502, 503, 499, 200] {
        service.clone().oneshot(Request::new(status)).await.unwrap();
    }
    let route = only_route(&stats);
    assert_eq!(route.count, 7);
    assert_eq!(route.server_errors, 3);
}

#[tokio::test(start_paused = true)]
async fn inner_error_passes_through_unrecorded() {
    let layer = TimingLayer::new();
    let stats = layer.stats();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: Request<()>| async { Err::<Response<String>, _>("boom") });
    let error = service.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(error, "boom");
    assert!(stats.snapshot().routes.is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropped_future_unrecorded() {
    let layer = TimingLayer::new();
    let stats = layer.stats();
    let mut service = ServiceBuilder::new().layer(layer).service_fn(sleep_for);
    let future = service
        .ready()
        .await
        .unwrap()
        .call(after(Duration::from_secs(5)));
    let cancelled = tokio::time::timeout(Duration::from_millis(10), future).await;
    assert!(cancelled.is_err());
    assert!(stats.snapshot().routes.is_empty());
}

#[tokio::test(start_paused = true)]
async fn services_and_clones_share_stats() {
    let layer = TimingLayer::new();
    let stats = layer.stats();
    let first = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(sleep_for);
    let second = ServiceBuilder::new().layer(layer).service_fn(sleep_for);
    first.clone().oneshot(get("/")).await.unwrap();
    first.oneshot(get("/")).await.unwrap();
    second.oneshot(get("/")).await.unwrap();
    assert_eq!(only_route(&stats).count, 3);

    // One `TimingStats` across separately built layers.
    let shared = TimingStats::new();
    for _ in 0..2 {
        let service = ServiceBuilder::new()
            .layer(TimingLayer::with_stats(shared.clone()))
            .service_fn(sleep_for);
        service.oneshot(get("/")).await.unwrap();
    }
    assert_eq!(only_route(&shared).count, 2);
}

#[tokio::test(start_paused = true)]
async fn routes_labelled_and_sorted() {
    let layer =
        TimingLayer::new().route_fn(|request: &Request<Duration>| match request.uri().path() {
            path if path.starts_with("/users/") => Some("/users/{id}"),
            "/health" => Some("/health"),
            "/literally-other" => Some(OTHER_ROUTE),
            _ => None,
        });
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service_fn(sleep_for);
    for path in [
        "/users/1",
        "/users/2",
        "/health",
        "/nope",
        "/literally-other",
        "/users/3",
    ] {
        service.clone().oneshot(get(path)).await.unwrap();
    }
    let snapshot = stats.snapshot();
    let routes: Vec<_> = snapshot
        .routes
        .iter()
        .map(|route| (route.route.as_str(), route.count))
        .collect();
    assert_eq!(routes, [("/health", 1), ("/users/{id}", 3), ("other", 2)]);
    assert_eq!(stats.route("/users/{id}").unwrap().count, 3);
    assert_eq!(stats.route(OTHER_ROUTE).unwrap().count, 2);
    assert!(stats.route("/users/1").is_none());
    assert_eq!(snapshot.route("/health").unwrap().count, 1);
}

#[tokio::test(start_paused = true)]
async fn reset_zeroes_counters() {
    let layer = TimingLayer::new().route_fn(|_: &Request<Duration>| Some("/a"));
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service_fn(sleep_for);
    service
        .clone()
        .oneshot(after(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(stats.route("/a").unwrap().count, 1);

    stats.reset();
    assert!(stats.snapshot().routes.is_empty());
    assert!(stats.route("/a").is_none());

    service
        .oneshot(after(Duration::from_millis(20)))
        .await
        .unwrap();
    let route = stats.route("/a").unwrap();
    assert_eq!(route.count, 1);
    assert_eq!(route.max_ms, 20.0);
}

#[tokio::test(start_paused = true)]
async fn snapshot_serde_round_trip() {
    let layer = TimingLayer::new().route_fn(|_: &Request<Duration>| Some("/users/{id}"));
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service_fn(sleep_for);
    service
        .oneshot(after(Duration::from_millis(12)))
        .await
        .unwrap();

    let snapshot = stats.snapshot();
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "routes": [{
                "route": "/users/{id}",
                "count": 1,
                "server_errors": 0,
                "p50_ms": 12.0,
                "p95_ms": 12.0,
                "p99_ms": 12.0,
                "max_ms": 12.0,
                "mean_ms": 12.0,
            }]
        })
    );
    let back: TimingSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, snapshot);
}

// ===== measure_body =====

/// A body that sends one frame `delay` after it is created, then ends.
struct DelayedBody {
    sleep: Pin<Box<Sleep>>,
    sent: bool,
}

impl DelayedBody {
    fn new(delay: Duration) -> Self {
        Self {
            sleep: Box::pin(sleep(delay)),
            sent: false,
        }
    }
}

impl Body for DelayedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Ready(None);
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"done")))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent
    }
}

/// Answers after 100 ms with a body whose only frame comes 500 ms later.
async fn streaming(_: Request<()>) -> Result<Response<DelayedBody>, Infallible> {
    sleep(Duration::from_millis(100)).await;
    Ok(Response::new(DelayedBody::new(Duration::from_millis(500))))
}

#[tokio::test(start_paused = true)]
async fn measure_body_records_stream_end() {
    let (capture, _guard) = Capture::install();
    let layer = TimingLayer::new()
        .measure_body(true)
        .slow_threshold(Duration::from_millis(400));
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service_fn(streaming);

    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&response, "x-process-time"), "100.00ms");
    assert!(stats.snapshot().routes.is_empty());
    assert!(capture.events().is_empty());

    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "done");
    let route = only_route(&stats);
    assert_eq!(route.count, 1);
    assert_eq!(route.max_ms, 600.0);
    assert_close(route.p50_ms, 600.0);

    let events = capture.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].fields["duration_ms"], Value::F64(600.0));
}

#[tokio::test(start_paused = true)]
async fn measure_body_records_dropped_body_once() {
    let layer = TimingLayer::new().measure_body(true);
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service_fn(streaming);

    let response = service.oneshot(Request::new(())).await.unwrap();
    tokio::time::advance(Duration::from_millis(200)).await;
    drop(response);
    let route = only_route(&stats);
    assert_eq!(route.count, 1);
    assert_eq!(route.max_ms, 300.0);
}

#[tokio::test(start_paused = true)]
async fn measure_body_records_once_when_polled_past_end() {
    let layer = TimingLayer::new().measure_body(true);
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service_fn(streaming);

    let mut body = service.oneshot(Request::new(())).await.unwrap().into_body();
    assert!(body.frame().await.unwrap().is_ok());
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none());
    assert!(body.frame().await.is_none());
    drop(body);
    assert_eq!(only_route(&stats).count, 1);
}

#[tokio::test(start_paused = true)]
async fn measure_body_with_empty_body_records_at_headers() {
    let layer = TimingLayer::new().measure_body(true);
    let stats = layer.stats();
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: Request<()>| async {
            sleep(Duration::from_millis(30)).await;
            Ok::<_, Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
        });
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(only_route(&stats).max_ms, 30.0);
    tokio::time::advance(Duration::from_secs(1)).await;
    drop(response);
    assert_eq!(only_route(&stats).count, 1);
    assert_eq!(only_route(&stats).max_ms, 30.0);
}

#[tokio::test(start_paused = true)]
async fn header_time_recorded_without_measure_body() {
    let layer = TimingLayer::new();
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service_fn(streaming);
    let response = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(only_route(&stats).max_ms, 100.0);
    response.into_body().collect().await.unwrap();
    let route = only_route(&stats);
    assert_eq!(route.count, 1);
    assert_eq!(route.max_ms, 100.0);
}

// ===== route bound =====

#[tokio::test]
async fn unlabelled_raw_paths_pool_into_other() {
    let layer = TimingLayer::new().route_fn(|_: &Request<()>| None::<&str>);
    let stats = layer.stats();
    let mut service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    for i in 0..100_000 {
        let request = Request::get(format!("/items/{i}")).body(()).unwrap();
        service.ready().await.unwrap().call(request).await.unwrap();
    }
    let route = only_route(&stats);
    assert_eq!(route.route, OTHER_ROUTE);
    assert_eq!(route.count, 100_000);
}

#[tokio::test]
async fn max_routes_bounds_distinct_labels() {
    let labels: &'static [&'static str] = Vec::leak(
        (0..100_000)
            .map(|i| &*String::leak(format!("/route/{i}")))
            .collect(),
    );
    let layer = TimingLayer::new()
        .max_routes(8)
        .route_fn(move |request: &Request<usize>| Some(labels[*request.body()]));
    let stats = layer.stats();
    assert_eq!(stats.max_routes(), 8);
    let mut service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: Request<usize>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        });
    for i in 0..labels.len() {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(i))
            .await
            .unwrap();
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.routes.len(), 8 + 1);
    let total: u64 = snapshot.routes.iter().map(|route| route.count).sum();
    assert_eq!(total, 100_000);
    assert_eq!(
        snapshot.route(OTHER_ROUTE).unwrap().count,
        100_000 - 8,
        "the first 8 labels keep their own route"
    );
    assert_eq!(snapshot.route("/route/7").unwrap().count, 1);
}

#[tokio::test]
async fn max_routes_on_one_layer_leaves_shared_stats_alone() {
    let stats = TimingStats::with_max_routes(10);
    let label = |request: &Request<&'static str>| Some(*request.body());
    let bounded = TimingLayer::with_stats(stats.clone())
        .max_routes(1)
        .route_fn(label);
    let unbounded = TimingLayer::with_stats(stats.clone()).route_fn(label);
    assert_eq!(
        stats.max_routes(),
        10,
        "the shared bound is fixed at creation"
    );
    assert_eq!(unbounded.stats().max_routes(), 10);

    let respond =
        |_: Request<&'static str>| async { Ok::<_, Infallible>(Response::new(String::new())) };
    let bounded = ServiceBuilder::new().layer(bounded).service_fn(respond);
    let unbounded = ServiceBuilder::new().layer(unbounded).service_fn(respond);
    for path in ["/a", "/b"] {
        bounded.clone().oneshot(Request::new(path)).await.unwrap();
    }
    for path in ["/c", "/d", "/b"] {
        unbounded.clone().oneshot(Request::new(path)).await.unwrap();
    }
    let snapshot = stats.snapshot();
    let routes: Vec<&str> = snapshot.routes.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(routes, ["/a", "/b", "/c", "/d", OTHER_ROUTE]);
    assert_eq!(
        snapshot.route("/b").unwrap().count,
        1,
        "only the unbounded layer added /b"
    );
    assert_eq!(snapshot.route(OTHER_ROUTE).unwrap().count, 1);

    // A layer whose statistics nobody holds yet gets its own, bounded ones.
    let own = TimingLayer::new().max_routes(3);
    assert_eq!(own.stats().max_routes(), 3);
    // Once they are shared, the bound stays theirs.
    let shared = own.clone().max_routes(2);
    assert_eq!(shared.stats().max_routes(), 3);
}

#[tokio::test]
async fn zero_max_routes_counts_everything_as_other() {
    let stats = TimingStats::with_max_routes(0);
    let service = ServiceBuilder::new()
        .layer(TimingLayer::with_stats(stats.clone()).route_fn(|_: &Request<Duration>| Some("/a")))
        .service_fn(sleep_for);
    service.oneshot(get("/")).await.unwrap();
    assert_eq!(only_route(&stats).route, OTHER_ROUTE);
}

#[test]
fn many_routes_each_counted() {
    let stats = TimingStats::with_max_routes(5_000);
    let labels: Vec<String> = (0..3_000).map(|i| format!("/r/{i}")).collect();
    for round in 0..3 {
        for label in &labels[..labels.len() - round * 1_000] {
            stats.entry(Some(label), usize::MAX).record(
                Duration::from_millis(1),
                StatusCode::OK,
                &http::Method::GET,
                None,
            );
        }
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.routes.len(), 3_000);
    assert_eq!(snapshot.route("/r/0").unwrap().count, 3);
    assert_eq!(snapshot.route("/r/1999").unwrap().count, 2);
    assert_eq!(snapshot.route("/r/2999").unwrap().count, 1);
    assert!(snapshot.route(OTHER_ROUTE).is_none());
}

#[test]
fn concurrent_recording_is_exact_and_bounded() {
    let stats = TimingStats::with_max_routes(50);
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let stats = stats.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    let label = format!("/t/{}", (i + thread) % 100);
                    stats.entry(Some(&label), usize::MAX).record(
                        Duration::from_micros(i),
                        StatusCode::OK,
                        &http::Method::GET,
                        None,
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.routes.len(), 50 + 1);
    let total: u64 = snapshot.routes.iter().map(|route| route.count).sum();
    assert_eq!(total, 80_000);
    // Every label occurs 100 times per thread; labels beyond the bound pool into "other".
    for route in &snapshot.routes {
        let expected = if route.route == OTHER_ROUTE {
            50 * 800
        } else {
            800
        };
        assert_eq!(route.count, expected, "{route:?}");
    }
}

// ===== types =====

#[test]
fn public_types_are_send_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<TimingLayer>();
    send_sync::<TimingStats>();
    send_sync::<TimingSnapshot>();
    send_sync::<Timing<()>>();
    send_sync::<TimingBody<String>>();
    send::<ResponseFuture<std::future::Ready<()>>>();
}

#[tokio::test]
async fn works_with_infallible_service_fn() {
    let mut service = Timing::new(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::from("body")))
    }));
    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "body");
    assert_eq!(service.stats().snapshot().routes[0].count, 1);
    let _inner = service.get_ref();
    let _inner = service.into_inner();
}

#[test]
fn debug_output() {
    let layer = TimingLayer::new().route_fn(|_: &Request<()>| None::<&str>);
    let debug = format!("{layer:?}");
    assert!(debug.starts_with("TimingLayer"), "{debug}");
    assert!(format!("{:?}", layer.stats()).contains("max_routes: 256"));
}

#[cfg(feature = "axum")]
mod axum_routes {
    use axum::{Router, body::Body, routing::get};

    use super::*;

    #[tokio::test]
    async fn matched_path_labels_routes() {
        let layer = TimingLayer::new();
        let stats = layer.stats();
        let app = Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .route("/health", get(|| async { "ok" }))
            .layer(layer);

        for path in ["/users/1", "/users/2", "/health", "/missing"] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert!(response.headers().contains_key("x-process-time"));
        }

        let snapshot = stats.snapshot();
        let routes: Vec<_> = snapshot
            .routes
            .iter()
            .map(|route| (route.route.as_str(), route.count))
            .collect();
        // `Router::layer` also wraps the fallback, which has no matched path.
        assert_eq!(routes, [("/health", 1), ("/users/{id}", 2), ("other", 1)]);
    }

    #[tokio::test]
    async fn route_fn_takes_precedence_over_matched_path() {
        let layer = TimingLayer::new().route_fn(|request: &Request<Body>| {
            request
                .uri()
                .path()
                .starts_with("/users/")
                .then_some("/people/{id}")
        });
        let stats = layer.stats();
        let app = Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .route("/health", get(|| async { "ok" }))
            .layer(layer);
        for path in ["/users/1", "/health"] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        assert_eq!(stats.route("/people/{id}").unwrap().count, 1);
        assert_eq!(stats.route("/health").unwrap().count, 1);
    }
}
