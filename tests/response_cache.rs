//! The response cache over the Redis and tiered backends (`REDIS_URL`), across two
//! instances, and with a private `redis-server` stopped or frozen under it.
#![cfg(all(feature = "cache", feature = "redis"))]

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use perfkit::{
    cache::{
        Backend, Cache, EntryOptions, RedisBackend, TieredBackend,
        http::{ResponseCacheLayer, ResponseCacheStats},
    },
    pool::RedisPoolBuilder,
};
use support::{RedisServer, unique_id};
use tower::{Service, ServiceBuilder, ServiceExt};

fn redis_backend(url: &str) -> RedisBackend {
    let handle = RedisPoolBuilder::new(url)
        .connection_timeout(Duration::from_secs(1))
        .reconnect_retries(0)
        .build_lazy()
        .unwrap();
    RedisBackend::new(handle)
}

fn tiered_backend(url: &str) -> TieredBackend {
    TieredBackend::builder(redis_backend(url), redis::Client::open(url).unwrap()).build()
}

fn cache(prefix: &str, backend: impl Backend) -> Cache {
    Cache::builder()
        .prefix(prefix)
        .backend(backend)
        .build()
        .unwrap()
}

/// A handler counting its runs, answering `body`.
#[derive(Clone, Default)]
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn service(
        &self,
        body: &'static str,
    ) -> impl Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        let runs = Arc::clone(&self.0);
        tower::service_fn(move |_request: Request<()>| {
            runs.fetch_add(1, SeqCst);
            async move {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    body.as_bytes(),
                ))))
            }
        })
    }

    fn runs(&self) -> usize {
        self.0.load(SeqCst)
    }
}

fn layer(cache: &Cache) -> ResponseCacheLayer {
    ResponseCacheLayer::new(cache.clone()).options(
        EntryOptions::new()
            .no_early_refresh()
            .ttl(Duration::from_secs(60))
            .tag("pages"),
    )
}

/// `X-Cache` and body of a `GET`.
async fn get<S>(service: &S, uri: &str) -> (String, Bytes)
where
    S: Service<
            Request<()>,
            Response = Response<perfkit::cache::http::ResponseCacheBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone,
{
    let response = service
        .clone()
        .oneshot(Request::get(uri).body(()).unwrap())
        .await
        .unwrap();
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    (
        x_cache,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// Two instances sharing one Redis: one computes, the other hits; an invalidation on
/// either reaches both.
async fn two_instances_share_entries_and_invalidations(a: Cache, b: Cache) {
    let (handler_a, handler_b) = (Counted::default(), Counted::default());
    let service_a = ServiceBuilder::new()
        .layer(layer(&a))
        .service(handler_a.service("page"));
    let service_b = ServiceBuilder::new()
        .layer(layer(&b))
        .service(handler_b.service("page"));
    assert_eq!(get(&service_a, "/p").await.0, "MISS");
    let (x_cache, body) = get(&service_b, "/p").await;
    assert_eq!((x_cache.as_str(), &body[..]), ("HIT", &b"page"[..]));
    assert_eq!((handler_a.runs(), handler_b.runs()), (1, 0));

    b.invalidate_tags(&["pages"]).await.unwrap();
    // The tiered L1 learns of it by message: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (x_cache, _) = get(&service_a, "/p").await;
        if x_cache == "MISS" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance a still serves an invalidated entry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        get(&service_b, "/p").await.0,
        "HIT",
        "b hits a's recomputation"
    );
    a.invalidate_prefix("").await.unwrap();
}

#[tokio::test]
async fn redis_instances_share_entries_and_invalidations() {
    let Some(redis) = support::redis("redis_instances_share_entries_and_invalidations").await
    else {
        return;
    };
    let prefix = format!("rc{}", unique_id());
    let a = cache(&prefix, redis_backend(&redis.url));
    let b = cache(&prefix, redis_backend(&redis.url));
    two_instances_share_entries_and_invalidations(a, b).await;
}

#[tokio::test]
async fn tiered_instances_share_entries_and_invalidations() {
    let Some(redis) = support::redis("tiered_instances_share_entries_and_invalidations").await
    else {
        return;
    };
    let prefix = format!("rc{}", unique_id());
    // The subscriptions open with the first key used; until then L2 answers.
    let a = cache(&prefix, tiered_backend(&redis.url));
    let b = cache(&prefix, tiered_backend(&redis.url));
    two_instances_share_entries_and_invalidations(a, b).await;
}

/// Requests through a layer over a Redis that does not answer: each is answered by the
/// handler well within a 2 s deadline.
async fn answered_by_the_handler(cache: &Cache, stats: &ResponseCacheStats) {
    let handler = Counted::default();
    let layer = ResponseCacheLayer::with_stats(cache.clone(), stats.clone())
        .ttl(Duration::from_secs(60))
        .wait(Duration::from_millis(500));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(handler.service("fine"));
    for i in 0..5 {
        let started = Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(2), get(&service, "/p")).await;
        let (x_cache, body) =
            answered.unwrap_or_else(|_| panic!("request {i} was not answered in 2 s"));
        assert_eq!((x_cache.as_str(), &body[..]), ("MISS", &b"fine"[..]));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(handler.runs(), 5, "every request ran the handler");
}

#[tokio::test]
async fn a_stopped_redis_never_fails_a_request() {
    let Some(mut server) = RedisServer::start("a_stopped_redis_never_fails_a_request").await else {
        return;
    };
    let cache = cache(&format!("rc{}", unique_id()), redis_backend(&server.url()));
    let stats = ResponseCacheStats::new();
    answered_by_the_handler_after_warm_up(&cache, &stats).await;
    server.stop().await;
    answered_by_the_handler(&cache, &stats).await;
    assert!(cache.stats().errors > 0, "the failures were counted");
}

/// Checks the cache works before the fault, so the fault is what the test exercises.
async fn answered_by_the_handler_after_warm_up(cache: &Cache, stats: &ResponseCacheStats) {
    let handler = Counted::default();
    let layer =
        ResponseCacheLayer::with_stats(cache.clone(), stats.clone()).ttl(Duration::from_secs(60));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(handler.service("warm"));
    assert_eq!(get(&service, "/warm").await.0, "MISS");
    assert_eq!(get(&service, "/warm").await.0, "HIT");
}

#[tokio::test]
async fn a_frozen_redis_never_fails_a_request() {
    let Some(mut server) = RedisServer::start("a_frozen_redis_never_fails_a_request").await else {
        return;
    };
    let cache = cache(&format!("rc{}", unique_id()), redis_backend(&server.url()));
    let stats = ResponseCacheStats::new();
    answered_by_the_handler_after_warm_up(&cache, &stats).await;
    server.pause();
    answered_by_the_handler(&cache, &stats).await;
    server.resume();
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.total.misses, 6, "{snapshot:?}");
    server.stop().await;
}
