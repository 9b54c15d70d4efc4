//! The response cache over the memory backend, on tokio's paused clock.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::*;
use crate::cache::{Cache, EntryOptions};

/// A body of chunks (or an error), with an exact length or none.
struct Chunks {
    chunks: VecDeque<Result<Bytes, &'static str>>,
    exact: Option<u64>,
}

impl Chunks {
    fn full(data: &'static [u8]) -> Self {
        Self {
            chunks: VecDeque::from([Ok(Bytes::from_static(data))]),
            exact: Some(data.len() as u64),
        }
    }

    fn streaming(chunks: Vec<Result<Bytes, &'static str>>) -> Self {
        Self {
            chunks: chunks.into(),
            exact: None,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = &'static str;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
        Poll::Ready(self.chunks.pop_front().map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.exact
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

type Handler = Arc<dyn Fn(&Request<()>) -> Response<Chunks> + Send + Sync>;

/// A service answering with `handler`, counting its runs, each taking `delay`.
#[derive(Clone)]
struct App {
    runs: Arc<AtomicUsize>,
    handler: Handler,
    delay: Duration,
}

impl App {
    fn new(handler: impl Fn(&Request<()>) -> Response<Chunks> + Send + Sync + 'static) -> Self {
        Self {
            runs: Arc::default(),
            handler: Arc::new(handler),
            delay: Duration::ZERO,
        }
    }

    fn body(body: &'static [u8]) -> Self {
        Self::new(move |_| Response::new(Chunks::full(body)))
    }

    fn runs(&self) -> usize {
        self.runs.load(SeqCst)
    }
}

impl Service<Request<()>> for App {
    type Response = Response<Chunks>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Chunks>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        self.runs.fetch_add(1, SeqCst);
        let response = (self.handler)(&request);
        let delay = self.delay;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(response)
        })
    }
}

fn cache() -> Cache {
    Cache::builder().prefix("test").build().unwrap()
}

fn layer(cache: &Cache) -> ResponseCacheLayer {
    ResponseCacheLayer::new(cache.clone())
        .options(EntryOptions::new().no_early_refresh())
        .ttl(Duration::from_secs(60))
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Result<Bytes, String>,
}

impl Answer {
    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("-", |value| value.to_str().unwrap())
    }
}

async fn send<S>(service: &S, request: Request<()>) -> Answer
where
    S: Service<Request<()>, Response = Response<ResponseCacheBody<Chunks>>, Error = Infallible>
        + Clone,
{
    let response = service.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(str::to_owned),
    }
}

async fn get<S>(service: &S, uri: &str) -> Answer
where
    S: Service<Request<()>, Response = Response<ResponseCacheBody<Chunks>>, Error = Infallible>
        + Clone,
{
    send(service, Request::get(uri).body(()).unwrap()).await
}

fn with(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn miss_then_hit_then_expired_then_miss() {
    let cache = cache();
    let app = App::body(b"hello");
    let service = ServiceBuilder::new()
        .layer(layer(&cache))
        .service(app.clone());
    let first = get(&service, "/a").await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(first.body.clone().unwrap(), "hello");
    let second = get(&service, "/a").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body.clone().unwrap(), "hello");
    assert_eq!(second.headers[header::CONTENT_LENGTH], "5");
    assert_eq!(second.headers[header::ETAG], first.headers[header::ETAG]);
    assert_eq!(app.runs(), 1);
    tokio::time::advance(Duration::from_secs(30)).await;
    let aged = get(&service, "/a").await;
    assert_eq!(aged.x_cache(), "HIT");
    // The cache's clock is whole milliseconds on top of tokio's: 30 s can read 29.999.
    let age: u64 = aged.headers[header::AGE].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&age), "Age: {age}");
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(get(&service, "/a").await.x_cache(), "MISS");
    assert_eq!(app.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let cache = cache();
    let app = App::body(b"v");
    let options = EntryOptions::new()
        .no_early_refresh()
        .ttl(Duration::from_secs(10))
        .stale_while_revalidate(Duration::from_secs(10));
    let service = ServiceBuilder::new()
        .layer(ResponseCacheLayer::new(cache.clone()).options(options))
        .service(app.clone());
    assert_eq!(get(&service, "/a").await.x_cache(), "MISS");
    tokio::time::advance(Duration::from_secs(11)).await;
    let stale = get(&service, "/a").await;
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(stale.body.clone().unwrap(), "v");
    // The refresh runs in the background; let it finish.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(app.runs(), 2);
    assert_eq!(get(&service, "/a").await.x_cache(), "HIT");
    assert_eq!(app.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_the_entry_when_the_handler_fails() {
    let cache = cache();
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = App::new({
        let failing = Arc::clone(&failing);
        move |_| {
            let mut response = Response::new(Chunks::full(b"ok"));
            if failing.load(SeqCst) {
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            response
        }
    });
    let options = EntryOptions::new()
        .no_early_refresh()
        .ttl(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(60));
    let service = ServiceBuilder::new()
        .layer(ResponseCacheLayer::new(cache.clone()).options(options))
        .service(app.clone());
    assert_eq!(get(&service, "/a").await.x_cache(), "MISS");
    failing.store(true, SeqCst);
    tokio::time::advance(Duration::from_secs(11)).await;
    let stale = get(&service, "/a").await;
    assert_eq!((stale.status, stale.x_cache()), (StatusCode::OK, "STALE"));
    assert_eq!(app.runs(), 2);
    tokio::time::advance(Duration::from_secs(60)).await;
    let failed = get(&service, "/a").await;
    assert_eq!(
        (failed.status, failed.x_cache()),
        (StatusCode::INTERNAL_SERVER_ERROR, "MISS")
    );
}

#[tokio::test(start_paused = true)]
async fn query_parameters_in_any_order_share_an_entry_and_values_do_not() {
    let cache = cache();
    let app = App::new(|request| {
        let body = Bytes::from(request.uri().to_string());
        Response::new(Chunks {
            exact: Some(body.len() as u64),
            chunks: VecDeque::from([Ok(body)]),
        })
    });
    let service = ServiceBuilder::new()
        .layer(layer(&cache))
        .service(app.clone());
    assert_eq!(get(&service, "/a?x=1&y=2").await.x_cache(), "MISS");
    assert_eq!(get(&service, "/a?y=2&x=1").await.x_cache(), "HIT");
    assert_eq!(get(&service, "/a?x=1&y=3").await.x_cache(), "MISS");
    assert_eq!(get(&service, "/b?x=1&y=2").await.x_cache(), "MISS");
    assert_eq!(app.runs(), 3);
}

#[tokio::test(start_paused = true)]
async fn vary_separates_entries_by_header_value() {
    let cache = cache();
    let app = App::new(|request| {
        let lang = request
            .headers()
            .get("accept-language")
            .map(|v| v.as_bytes().to_vec());
        let body: &'static [u8] = match lang.as_deref() {
            Some(b"fr") => b"bonjour",
            _ => b"hello",
        };
        let mut response = Response::new(Chunks::full(body));
        response
            .headers_mut()
            .insert(header::VARY, "Accept-Language".parse().unwrap());
        response
    });
    let service = ServiceBuilder::new()
        .layer(layer(&cache).vary([header::ACCEPT_LANGUAGE]))
        .service(app.clone());
    let en = send(&service, with("/a", &[("accept-language", "en")])).await;
    let fr = send(&service, with("/a", &[("accept-language", "fr")])).await;
    assert_eq!((en.x_cache(), fr.x_cache()), ("MISS", "MISS"));
    let fr = send(&service, with("/a", &[("accept-language", "fr")])).await;
    assert_eq!(
        (fr.x_cache(), fr.body.clone().unwrap()),
        ("HIT", Bytes::from("bonjour"))
    );
    let en = send(&service, with("/a", &[("accept-language", "en")])).await;
    assert_eq!(
        (en.x_cache(), en.body.clone().unwrap()),
        ("HIT", Bytes::from("hello"))
    );
    assert_eq!(en.headers[header::VARY], "Accept-Language");
}

/// Sends `/a` twice through a fresh cache and tells whether the second was a hit.
async fn cached_twice(
    layer_of: impl Fn(&Cache) -> ResponseCacheLayer,
    app: App,
    request: impl Fn() -> Request<()>,
) -> (bool, ResponseCacheSnapshot) {
    let cache = cache();
    let layer = layer_of(&cache);
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service(app.clone());
    send(&service, request()).await;
    let second = send(&service, request()).await;
    (second.x_cache() == "HIT", stats.snapshot())
}

fn with_header(name: &'static str, value: &'static str) -> App {
    App::new(move |_| {
        let mut response = Response::new(Chunks::full(b"x"));
        response
            .headers_mut()
            .append(HeaderName::from_static(name), value.parse().unwrap());
        response
    })
}

#[tokio::test(start_paused = true)]
async fn responses_that_must_not_be_shared_are_never_stored() {
    let get_a = || with("/a", &[]);
    for (name, value, reason) in [
        ("set-cookie", "session=1", Bypass::SetCookie),
        ("cache-control", "private, max-age=60", Bypass::CacheControl),
        ("cache-control", "no-store", Bypass::CacheControl),
        ("cache-control", "No-Cache", Bypass::CacheControl),
        ("vary", "*", Bypass::Vary),
        ("vary", "accept-language", Bypass::Vary),
        ("content-encoding", "gzip", Bypass::Encoded),
    ] {
        let (hit, stats) = cached_twice(layer, with_header(name, value), get_a).await;
        assert!(!hit, "{name}: {value} was cached");
        assert_eq!(
            stats.total.bypassed(reason),
            2,
            "{name}: {value}: {stats:?}"
        );
    }
    // The control: a plain response is cached.
    let (hit, _) = cached_twice(layer, with_header("cache-control", "public"), get_a).await;
    assert!(hit);
}

#[tokio::test(start_paused = true)]
async fn requests_with_credentials_bypass_unless_the_route_keys_by_user() {
    for credentials in [("authorization", "Bearer a"), ("cookie", "session=a")] {
        let (hit, stats) =
            cached_twice(layer, App::body(b"mine"), || with("/me", &[credentials])).await;
        assert!(!hit, "{credentials:?}");
        assert_eq!(stats.total.bypassed(Bypass::Credentials), 2);
    }
    let cache = cache();
    let app = App::new(|request| {
        let user = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let user = user.unwrap_or_default();
        let body: &'static [u8] = if user == b"Bearer a" {
            b"alice"
        } else {
            b"bob"
        };
        Response::new(Chunks::full(body))
    });
    let per_user = layer(&cache).per_user(|parts| {
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    });
    let service = ServiceBuilder::new().layer(per_user).service(app.clone());
    let a = || with("/me", &[("authorization", "Bearer a")]);
    let b = || with("/me", &[("authorization", "Bearer b")]);
    assert_eq!(send(&service, a()).await.x_cache(), "MISS");
    assert_eq!(send(&service, b()).await.body.clone().unwrap(), "bob");
    let again = send(&service, a()).await;
    assert_eq!(
        (again.x_cache(), again.body.clone().unwrap()),
        ("HIT", Bytes::from("alice"))
    );
    // No user named: not cached.
    assert_eq!(
        send(&service, with("/me", &[("cookie", "x=1")]))
            .await
            .x_cache(),
        "-"
    );
}

#[tokio::test(start_paused = true)]
async fn request_no_cache_bypasses_unless_configured_otherwise() {
    let no_cache = || with("/a", &[("cache-control", "no-cache")]);
    let (hit, stats) = cached_twice(layer, App::body(b"x"), no_cache).await;
    assert!(!hit);
    assert_eq!(stats.total.bypassed(Bypass::RequestNoCache), 2);
    let pragma = || with("/a", &[("pragma", "no-cache")]);
    assert!(!cached_twice(layer, App::body(b"x"), pragma).await.0);
    let ignoring = |cache: &Cache| layer(cache).honor_request_no_cache(false);
    assert!(cached_twice(ignoring, App::body(b"x"), no_cache).await.0);
}

#[tokio::test(start_paused = true)]
async fn other_methods_and_statuses_pass_through() {
    let post = || Request::post("/a").body(()).unwrap();
    let (hit, stats) = cached_twice(layer, App::body(b"x"), post).await;
    assert!(!hit);
    assert_eq!(stats.total.bypassed(Bypass::Method), 2);
    let not_found = || {
        App::new(|_| {
            let mut response = Response::new(Chunks::full(b"none"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        })
    };
    let (hit, stats) = cached_twice(layer, not_found(), || with("/a", &[])).await;
    assert!(!hit);
    assert_eq!(stats.total.bypassed(Bypass::Status), 2);
    let with_404 = |cache: &Cache| layer(cache).statuses([StatusCode::OK, StatusCode::NOT_FOUND]);
    assert!(
        cached_twice(with_404, not_found(), || with("/a", &[]))
            .await
            .0
    );
}

#[tokio::test(start_paused = true)]
async fn ttl_comes_from_the_route_then_s_maxage_then_max_age() {
    let cache = cache();
    let app = with_header("cache-control", "public, max-age=100, s-maxage=5");
    let service = ServiceBuilder::new()
        .layer(
            ResponseCacheLayer::new(cache.clone()).options(EntryOptions::new().no_early_refresh()),
        )
        .service(app.clone());
    assert_eq!(get(&service, "/a").await.x_cache(), "MISS");
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(get(&service, "/a").await.x_cache(), "HIT");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        get(&service, "/a").await.x_cache(),
        "MISS",
        "s-maxage=5 is over"
    );

    let app = with_header("cache-control", "max-age=3");
    let service = ServiceBuilder::new()
        .layer(layer(&cache))
        .service(app.clone());
    assert_eq!(get(&service, "/b").await.x_cache(), "MISS");
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(
        get(&service, "/b").await.x_cache(),
        "MISS",
        "max-age=3 is over"
    );

    let routed = layer(&cache).ttl_for(|_| Some(Duration::from_secs(20)));
    let service = ServiceBuilder::new().layer(routed).service(app.clone());
    assert_eq!(get(&service, "/c").await.x_cache(), "MISS");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        get(&service, "/c").await.x_cache(),
        "HIT",
        "the route's 20 s wins"
    );

    let app = with_header("cache-control", "max-age=0");
    let service = ServiceBuilder::new()
        .layer(layer(&cache))
        .service(app.clone());
    get(&service, "/d").await;
    assert_eq!(
        get(&service, "/d").await.x_cache(),
        "MISS",
        "max-age=0 stores nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn if_none_match_answers_304_without_the_handler() {
    let cache = cache();
    let app = App::body(b"body");
    let layer = layer(&cache);
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service(app.clone());
    let first = get(&service, "/a").await;
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
    let weak = format!("W/{etag}");
    let list = format!("\"other\", {weak}");
    for candidate in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let answer = send(&service, with("/a", &[("if-none-match", candidate)])).await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{candidate}");
        assert_eq!(answer.body.clone().unwrap(), "");
        assert_eq!(answer.headers[header::ETAG], etag.as_str());
    }
    let other = send(&service, with("/a", &[("if-none-match", "\"other\"")])).await;
    assert_eq!(
        (other.status, other.body.clone().unwrap()),
        (StatusCode::OK, Bytes::from("body"))
    );
    assert_eq!(app.runs(), 1);
    assert_eq!(stats.snapshot().total.not_modified, 4);

    // A cold key with a matching validator: the handler runs once, the client gets 304.
    cache.invalidate_prefix("").await.unwrap();
    let answer = send(&service, with("/a", &[("if-none-match", etag.as_str())])).await;
    assert_eq!(
        (answer.status, answer.x_cache()),
        (StatusCode::NOT_MODIFIED, "MISS")
    );
}

#[tokio::test(start_paused = true)]
async fn the_handlers_etag_and_last_modified_are_kept_and_honoured() {
    let cache = cache();
    let app = App::new(|_| {
        let mut response = Response::new(Chunks::full(b"x"));
        let headers = response.headers_mut();
        headers.insert(header::ETAG, "W/\"v1\"".parse().unwrap());
        headers.insert(
            header::LAST_MODIFIED,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        response
    });
    let service = ServiceBuilder::new()
        .layer(layer(&cache))
        .service(app.clone());
    assert_eq!(get(&service, "/a").await.headers[header::ETAG], "W/\"v1\"");
    let answer = send(&service, with("/a", &[("if-none-match", "\"v1\"")])).await;
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
    let since = |date| with("/a", &[("if-modified-since", date)]);
    let answer = send(&service, since("Thu, 22 Oct 2015 07:28:00 GMT")).await;
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
    let answer = send(&service, since("Tue, 20 Oct 2015 07:28:00 GMT")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = send(&service, since("not a date")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(app.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_cold_requests_run_the_handler_once() {
    let cache = cache();
    let mut app = App::body(b"slow");
    app.delay = Duration::from_millis(20);
    let service = ServiceBuilder::new()
        .layer(layer(&cache))
        .service(app.clone());
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { get(&service, "/a").await })
        })
        .collect();
    let mut misses = 0;
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.body.clone().unwrap(), "slow");
        misses += usize::from(answer.x_cache() == "MISS");
    }
    assert_eq!(app.runs(), 1);
    assert_eq!(misses, 100, "they all waited for the one computation");
    assert_eq!(get(&service, "/a").await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_another_ones_computation_at_most_the_wait() {
    let cache = cache();
    let mut app = App::body(b"slow");
    app.delay = Duration::from_secs(10);
    let layer = layer(&cache).wait(Duration::from_secs(1));
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service(app.clone());
    let leader = tokio::spawn({
        let service = service.clone();
        async move { get(&service, "/a").await }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let follower = tokio::spawn({
        let service = service.clone();
        async move { get(&service, "/a").await }
    });
    let answer = follower.await.unwrap();
    // Its own handler run (10 s) after waiting 1 s, not the leader's remaining time plus.
    assert_eq!(answer.body.clone().unwrap(), "slow");
    assert_eq!(started.elapsed(), Duration::from_secs(11));
    assert_eq!(stats.snapshot().total.bypassed(Bypass::CacheWait), 1);
    assert_eq!(
        leader.await.unwrap().x_cache(),
        "MISS",
        "the leader was not cut short"
    );
    assert_eq!(app.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_the_get_entry() {
    let cache = cache();
    let app = App::body(b"hello");
    let service = ServiceBuilder::new()
        .layer(layer(&cache))
        .service(app.clone());
    let head = || Request::head("/a").body(()).unwrap();
    assert_eq!(send(&service, head()).await.x_cache(), "MISS");
    assert_eq!(
        get(&service, "/a").await.x_cache(),
        "MISS",
        "a HEAD stores nothing"
    );
    let answer = send(&service, head()).await;
    assert_eq!(answer.x_cache(), "HIT");
    assert_eq!(answer.body.clone().unwrap(), "");
    assert_eq!(answer.headers[header::CONTENT_LENGTH], "5");
    assert_eq!(app.runs(), 2);
}

#[tokio::test(start_paused = true)]
async fn bodies_past_the_limit_stream_through_uncached() {
    let big: &'static [u8] = &[b'x'; 64];
    let small = |cache: &Cache| layer(cache).max_body_size(32);
    // Known to be too large: passed on as it is.
    let (hit, stats) = cached_twice(small, App::body(big), || with("/a", &[])).await;
    assert!(!hit);
    assert_eq!(stats.total.bypassed(Bypass::TooLarge), 2);
    // Unknown length, too large half way: what was read, then the rest.
    let chunked = App::new(move |_| {
        Response::new(Chunks::streaming(
            big.chunks(20)
                .map(|chunk| Ok(Bytes::from_static(chunk)))
                .collect(),
        ))
    });
    let cache = cache();
    let service = ServiceBuilder::new()
        .layer(small(&cache))
        .service(chunked.clone());
    for _ in 0..2 {
        let answer = get(&service, "/a").await;
        assert_eq!(
            (answer.x_cache(), answer.body.clone().unwrap()),
            ("MISS", Bytes::from_static(big))
        );
    }
    // Unknown length within the limit: stored.
    let service = ServiceBuilder::new().layer(layer(&cache)).service(chunked);
    get(&service, "/b").await;
    let answer = get(&service, "/b").await;
    assert_eq!(
        (answer.x_cache(), answer.body.clone().unwrap()),
        ("HIT", Bytes::from_static(big))
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_is_passed_on_and_not_stored() {
    let app = App::new(|_| {
        Response::new(Chunks::streaming(vec![
            Ok(Bytes::from_static(b"part")),
            Err("broken"),
        ]))
    });
    let cache = cache();
    let layer = layer(&cache);
    let stats = layer.stats();
    let service = ServiceBuilder::new().layer(layer).service(app.clone());
    for _ in 0..2 {
        let answer = get(&service, "/a").await;
        assert_eq!(answer.body, Err("broken".to_owned()));
    }
    assert_eq!(app.runs(), 2);
    assert_eq!(stats.snapshot().total.bypassed(Bypass::Body), 2);
}

#[tokio::test(start_paused = true)]
async fn a_handler_error_or_panic_is_not_stored() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = Arc::clone(&calls);
        tower::service_fn(move |_request: Request<()>| {
            let call = calls.fetch_add(1, SeqCst);
            async move {
                match call {
                    0 => Err("unavailable"),
                    1 => panic!("handler panicked"),
                    _ => Ok(Response::new(Chunks::full(b"fine"))),
                }
            }
        })
    };
    let service = ServiceBuilder::new().layer(layer(&cache)).service(handler);
    let request = || Request::get("/a").body(()).unwrap();
    assert_eq!(
        service.clone().oneshot(request()).await.unwrap_err(),
        "unavailable"
    );
    let panicked = tokio::spawn(service.clone().oneshot(request())).await;
    assert!(panicked.unwrap_err().is_panic());
    let answer = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(answer.headers()["x-cache"], "MISS");
    let answer = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(answer.headers()["x-cache"], "HIT");
    assert_eq!(calls.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn invalidating_a_tag_drops_the_entries_of_that_tag_only() {
    let cache = cache();
    let app = App::body(b"x");
    let tagged = layer(&cache)
        .options(EntryOptions::new().no_early_refresh().tag("all"))
        .tags_for(|parts| vec![format!("path:{}", parts.uri.path())]);
    let service = ServiceBuilder::new().layer(tagged).service(app.clone());
    get(&service, "/a").await;
    get(&service, "/b").await;
    cache.invalidate_tags(&["path:/a"]).await.unwrap();
    assert_eq!(get(&service, "/a").await.x_cache(), "MISS");
    assert_eq!(get(&service, "/b").await.x_cache(), "HIT");
    cache.invalidate_tags(&["all"]).await.unwrap();
    assert_eq!(get(&service, "/a").await.x_cache(), "MISS");
    assert_eq!(get(&service, "/b").await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn counters_are_per_route_template_and_round_trip_through_serde() {
    let cache = cache();
    let app = App::body(b"12345");
    let stats = ResponseCacheStats::new();
    let routed = ResponseCacheLayer::with_stats(cache.clone(), stats.clone()).route_fn(|parts| {
        parts
            .uri
            .path()
            .starts_with("/users/")
            .then_some("/users/{id}")
    });
    let service = ServiceBuilder::new().layer(routed).service(app.clone());
    for uri in ["/users/1", "/users/1", "/users/2", "/other", "/other"] {
        get(&service, uri).await;
    }
    let snapshot = stats.snapshot();
    let users = &snapshot.routes["/users/{id}"];
    assert_eq!((users.hits, users.misses, users.bytes_served), (1, 2, 5));
    let other = &snapshot.routes[OTHER_ROUTE];
    assert_eq!((other.hits, other.misses), (1, 1));
    assert_eq!((snapshot.total.hits, snapshot.total.misses), (2, 3));
    assert_eq!(snapshot.routes.len(), 2, "raw paths are never labels");
    let json = serde_json::to_string(&snapshot).unwrap();
    assert_eq!(
        serde_json::from_str::<ResponseCacheSnapshot>(&json).unwrap(),
        snapshot
    );
}

#[test]
fn route_labels_are_bounded() {
    let stats = ResponseCacheStats::new();
    let labels: Vec<&'static str> = (0..MAX_ROUTES + 10)
        .map(|i| &*Box::leak(format!("/r{i}").into_boxed_str()))
        .collect();
    for label in &labels {
        stats.route(Some(label)).hit();
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.routes.len(), MAX_ROUTES + 1);
    assert_eq!(snapshot.routes[OTHER_ROUTE].hits, 10);
}

/// Compressed variants, and the two ways of composing with `CompressionLayer`.
#[cfg(all(feature = "compression-br", feature = "compression-gzip"))]
mod variants {
    use super::*;
    use crate::compression::{CompressionLayer, tests::decode};

    fn json() -> &'static [u8] {
        let rows: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"id":{i},"name":"user {i}","active":{}}}"#, i % 3 == 0))
            .collect();
        Box::leak(
            format!("[{}]", rows.join(","))
                .into_bytes()
                .into_boxed_slice(),
        )
    }

    fn json_app() -> App {
        let body = json();
        App::new(move |_| {
            let mut response = Response::new(Chunks::full(body));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            response
        })
    }

    fn accepting(coding: &str) -> Request<()> {
        with("/a", &[("accept-encoding", coding)])
    }

    #[tokio::test(start_paused = true)]
    async fn variants_decode_to_the_identity_body_and_are_encoded_once() {
        let cache = cache();
        let app = json_app();
        let service = ServiceBuilder::new()
            .layer(layer(&cache))
            .service(app.clone());
        let identity = get(&service, "/a").await;
        assert_eq!(identity.headers[header::VARY], "accept-encoding");
        assert!(identity.headers.get(header::CONTENT_ENCODING).is_none());
        let identity_etag = identity.headers[header::ETAG].to_str().unwrap().to_owned();
        for coding in ["br", "gzip"] {
            for round in 0..3 {
                let answer = send(&service, accepting(coding)).await;
                assert_eq!(answer.headers[header::CONTENT_ENCODING], coding);
                assert_eq!(answer.headers[header::VARY], "accept-encoding");
                let body = answer.body.clone().unwrap();
                assert!(
                    body.len() < json().len() / 2,
                    "{coding}: {} bytes",
                    body.len()
                );
                assert_eq!(
                    answer.headers[header::CONTENT_LENGTH],
                    body.len().to_string()
                );
                assert_eq!(
                    decode(Some(coding), &body),
                    json(),
                    "{coding} round {round}"
                );
                let etag = answer.headers[header::ETAG].to_str().unwrap();
                let bare = identity_etag.trim_matches('"');
                assert_eq!(etag, format!("\"{bare}-{coding}\""));
                let revalidated = send(
                    &service,
                    with(
                        "/a",
                        &[("accept-encoding", coding), ("if-none-match", etag)],
                    ),
                )
                .await;
                assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
            }
        }
        assert_eq!(app.runs(), 1);
        // The entry and one variant per coding: three computations, however many hits.
        assert_eq!(cache.stats().computations, 3);
        // A client that takes neither gets identity.
        let deflate = send(&service, accepting("deflate")).await;
        assert!(deflate.headers.get(header::CONTENT_ENCODING).is_none());
        assert_eq!(deflate.body.unwrap(), json());
    }

    #[tokio::test(start_paused = true)]
    async fn small_bodies_and_compressed_types_get_no_variants() {
        let cache = cache();
        let service = ServiceBuilder::new()
            .layer(layer(&cache))
            .service(App::body(b"tiny"));
        let answer = send(&service, accepting("br")).await;
        assert!(answer.headers.get(header::CONTENT_ENCODING).is_none());
        assert!(answer.headers.get(header::VARY).is_none());
        let png = App::new(|_| {
            let mut response = Response::new(Chunks::full(&[0u8; 4096]));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "image/png".parse().unwrap());
            response
        });
        let service = ServiceBuilder::new().layer(layer(&cache)).service(png);
        let answer = send(&service, with("/png", &[("accept-encoding", "br")])).await;
        assert!(answer.headers.get(header::CONTENT_ENCODING).is_none());
        let off = ServiceBuilder::new()
            .layer(layer(&cache).no_precompress())
            .service(json_app());
        let answer = send(&off, with("/off", &[("accept-encoding", "br")])).await;
        assert!(answer.headers.get(header::CONTENT_ENCODING).is_none());
    }

    /// Collects a response of any body type.
    async fn collect<B>(response: Response<B>) -> (http::response::Parts, Bytes)
    where
        B: Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = response.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn with_compression_outside_hits_are_not_compressed_again() {
        let cache = cache();
        let compression = CompressionLayer::new();
        let stats = compression.stats();
        let app = json_app();
        let service = ServiceBuilder::new()
            .layer(compression)
            .layer(layer(&cache))
            .service(app.clone());
        for round in 0..3 {
            let response = service.clone().oneshot(accepting("br")).await.unwrap();
            let (parts, body) = collect(response).await;
            assert_eq!(
                parts.headers[header::CONTENT_ENCODING],
                "br",
                "round {round}"
            );
            assert_eq!(parts.headers.get_all(header::VARY).iter().count(), 1);
            assert_eq!(parts.headers[header::VARY], "accept-encoding");
            assert_eq!(
                parts.headers[header::CONTENT_LENGTH],
                body.len().to_string()
            );
            assert_eq!(decode(Some("br"), &body), json());
        }
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.br.responses, 0, "{snapshot:?}");
        assert_eq!(snapshot.skipped.already_encoded, 3, "{snapshot:?}");
        // A coding the cache does not store is left to the compression layer.
        let response = service.clone().oneshot(accepting("deflate")).await.unwrap();
        let (parts, body) = collect(response).await;
        assert_eq!(parts.headers[header::CONTENT_ENCODING], "deflate");
        assert_eq!(decode(Some("deflate"), &body), json());
        assert_eq!(app.runs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_compression_inside_encoded_responses_are_kept_per_accept_encoding() {
        let cache = cache();
        let app = json_app();
        // Without Accept-Encoding in the key, an encoded response is never stored.
        let unkeyed = ServiceBuilder::new()
            .layer(layer(&cache))
            .layer(CompressionLayer::new())
            .service(app.clone());
        for _ in 0..2 {
            let response = unkeyed.clone().oneshot(accepting("br")).await.unwrap();
            assert_eq!(response.headers()["x-cache"], "MISS");
            let (parts, body) = collect(response).await;
            assert_eq!(decode(Some("br"), &body), json());
            assert_eq!(parts.headers[header::CONTENT_ENCODING], "br");
        }
        let keyed = ServiceBuilder::new()
            .layer(layer(&cache).vary([header::ACCEPT_ENCODING]))
            .layer(CompressionLayer::new())
            .service(app.clone());
        for coding in ["br", "gzip", "identity"] {
            for round in 0..2 {
                let response = keyed.clone().oneshot(accepting(coding)).await.unwrap();
                let expected = if round == 0 { "MISS" } else { "HIT" };
                assert_eq!(response.headers()["x-cache"], expected, "{coding}");
                let (parts, body) = collect(response).await;
                let encoding = parts
                    .headers
                    .get(header::CONTENT_ENCODING)
                    .map(|v| v.to_str().unwrap());
                assert_eq!(encoding, (coding != "identity").then_some(coding));
                assert_eq!(
                    parts.headers[header::CONTENT_LENGTH],
                    body.len().to_string()
                );
                assert_eq!(decode(encoding, &body), json());
            }
        }
    }
}
