//! The rate-limit layer end to end: decisions on a controlled clock, responses and headers,
//! keys behind proxies, missing connection info, and a budget shared through Redis.
#![cfg(feature = "rate-limit")]

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use perfkit::rate_limit::{
    Check, ClientIp, Error, Key, ManualClock, MemoryStore, MissingKey, Policy, Quota,
    RateLimitHeaders, RateLimitLayer, Store, TrustedProxies,
};
use support::capture::Capture;
use tower::{Layer, Service, ServiceExt, service_fn};

type Req = Request<String>;

async fn ok(_req: Req) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::from("ok")))
}

/// A memory store on a clock the test moves.
fn store() -> (MemoryStore, ManualClock) {
    let clock = ManualClock::new();
    (MemoryStore::builder().clock(clock.clone()).build(), clock)
}

fn request(path: &str, peer: &str, headers: &[(&str, &str)]) -> Req {
    let mut request = Request::get(path).body(String::new()).unwrap();
    request
        .extensions_mut()
        .insert(peer.parse::<SocketAddr>().unwrap());
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn send<S>(service: &mut S, request: Req) -> Answer
where
    S: Service<Req, Response = Response<perfkit::body::ResponseBody<String>>, Error = Infallible>,
{
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer.headers[name].to_str().unwrap()
}

#[tokio::test]
async fn refusals_are_429_with_retry_after_rounded_up_and_never_zero() {
    let (store, clock) = store();
    let policy = Policy::new(Quota::per_minute(2)).with_name("api");
    let layer = RateLimitLayer::with_store(policy, store);
    let mut service = layer.layer(service_fn(ok));
    let peer = "203.0.113.9:5000";

    let first = send(&mut service, request("/", peer, &[])).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, "ok");
    assert_eq!(header(&first, "x-ratelimit-limit"), "2");
    assert_eq!(header(&first, "x-ratelimit-remaining"), "1");
    assert_eq!(header(&first, "x-ratelimit-reset"), "30");
    assert_eq!(header(&first, "ratelimit-policy"), r#""api";q=2;w=60"#);
    let ratelimit = header(&first, "ratelimit");
    assert!(
        ratelimit.starts_with(r#""api";r=1;t=30;pk=:"#),
        "{ratelimit}"
    );
    assert!(!ratelimit.contains("203.0.113.9"));
    assert!(!first.headers.contains_key("retry-after"));

    let second = send(&mut service, request("/", peer, &[])).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(header(&second, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&second, "x-ratelimit-reset"), "60");
    // One client, one partition key.
    let pk = |a: &Answer| {
        header(a, "ratelimit")
            .split("pk=")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(pk(&first), pk(&second));

    let refused = send(&mut service, request("/", peer, &[])).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "content-type"), "application/json");
    assert_eq!(header(&refused, "retry-after"), "30");
    assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&refused, "x-ratelimit-limit"), "2");
    let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["retry_after"], 30);
    assert_eq!(body["message"], "Too many requests; retry in 30 seconds");

    clock.advance(Duration::from_millis(29_500));
    let almost = send(&mut service, request("/", peer, &[])).await;
    assert_eq!(almost.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&almost, "retry-after"), "1");
    clock.advance(Duration::from_micros(499_999));
    let last_microsecond = send(&mut service, request("/", peer, &[])).await;
    assert_eq!(last_microsecond.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&last_microsecond, "retry-after"), "1");
    let body: serde_json::Value = serde_json::from_str(&last_microsecond.body).unwrap();
    assert_eq!(body["retry_after"], 1);
    assert_eq!(body["message"], "Too many requests; retry in 1 second");

    clock.advance(Duration::from_micros(1));
    let again = send(&mut service, request("/", peer, &[])).await;
    assert_eq!(again.status, StatusCode::OK);

    let counters = layer.stats().snapshot();
    assert_eq!((counters.allowed, counters.refused), (3, 3));
}

#[tokio::test]
async fn header_families_can_be_chosen() {
    let (store, _clock) = store();
    let layer =
        RateLimitLayer::with_store(Quota::per_minute(1), store).headers(RateLimitHeaders::LEGACY);
    let mut service = layer.layer(service_fn(ok));
    let allowed = send(&mut service, request("/", "192.0.2.1:1", &[])).await;
    assert!(allowed.headers.contains_key("x-ratelimit-limit"));
    assert!(!allowed.headers.contains_key("ratelimit"));
    assert!(!allowed.headers.contains_key("ratelimit-policy"));

    let (store, _clock) = self::store();
    let layer =
        RateLimitLayer::with_store(Quota::per_minute(1), store).headers(RateLimitHeaders::NONE);
    let mut service = layer.layer(service_fn(ok));
    let allowed = send(&mut service, request("/", "192.0.2.1:1", &[])).await;
    assert_eq!(allowed.headers.len(), 0);
    let refused = send(&mut service, request("/", "192.0.2.1:1", &[])).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), "60");
    assert!(!refused.headers.contains_key("x-ratelimit-limit"));
}

#[tokio::test]
async fn shadow_mode_counts_and_logs_but_lets_through() {
    let (capture, _guard) = Capture::install();
    let (store, _clock) = store();
    let layer = RateLimitLayer::with_store(Quota::per_minute(1), store).shadow(true);
    let mut service = layer.layer(service_fn(ok));
    for _ in 0..3 {
        let answer = send(&mut service, request("/", "192.0.2.1:1", &[])).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.headers.contains_key("retry-after"));
    }
    let counters = layer.stats().snapshot();
    assert_eq!(counters.allowed, 1);
    assert_eq!(counters.shadow_refused, 2);
    assert_eq!(counters.refused, 0);
    let logged: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.text.contains("shadow mode lets the request through"))
        .collect();
    assert_eq!(
        logged.len(),
        1,
        "logged at most once per interval: {logged:?}"
    );
    assert!(logged[0].text.contains("ip:192.0.2.1"), "{:?}", logged[0]);
}

#[tokio::test]
async fn allow_listed_keys_and_networks_are_never_limited() {
    let (store, _clock) = store();
    let layer = RateLimitLayer::with_store(Quota::per_minute(1), store)
        .allow_keys([Key::ip("198.51.100.1".parse().unwrap())])
        .allow_nets([
            "10.0.0.0/8".parse().unwrap(),
            "::ffff:172.16.0.0/108".parse().unwrap(),
        ]);
    let mut service = layer.layer(service_fn(ok));
    for peer in [
        "198.51.100.1:1",
        "10.9.8.7:1",
        "172.16.3.3:1",
        "[::ffff:10.1.1.1]:1",
    ] {
        for _ in 0..3 {
            let answer = send(&mut service, request("/", peer, &[])).await;
            assert_eq!(answer.status, StatusCode::OK, "{peer}");
            assert!(!answer.headers.contains_key("x-ratelimit-limit"));
        }
    }
    send(&mut service, request("/", "198.51.100.2:1", &[])).await;
    let other = send(&mut service, request("/", "198.51.100.2:1", &[])).await;
    assert_eq!(other.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(layer.stats().snapshot().allow_listed, 12);
}

#[tokio::test]
async fn routes_can_be_exempt_or_have_their_own_policy() {
    let (store, _clock) = store();
    let login = Policy::new(Quota::per_minute(1)).with_name("login");
    let default = Policy::new(Quota::per_minute(3)).with_name("default");
    let layer = RateLimitLayer::with_store(default.clone(), store).per_route(move |req: &Req| {
        match req.uri().path() {
            p if p.starts_with("/health") => None,
            "/login" => Some(login.clone()),
            _ => Some(default.clone()),
        }
    });
    let mut service = layer.layer(service_fn(ok));
    let peer = "192.0.2.1:1";
    for _ in 0..10 {
        let health = send(&mut service, request("/health/ready", peer, &[])).await;
        assert_eq!(health.status, StatusCode::OK);
        assert!(!health.headers.contains_key("x-ratelimit-limit"));
    }
    let login1 = send(&mut service, request("/login", peer, &[])).await;
    assert_eq!(header(&login1, "ratelimit-policy"), r#""login";q=1;w=60"#);
    let login2 = send(&mut service, request("/login", peer, &[])).await;
    assert_eq!(login2.status, StatusCode::TOO_MANY_REQUESTS);
    // The login budget is separate from the default one.
    for remaining in ["2", "1", "0"] {
        let page = send(&mut service, request("/page", peer, &[])).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(header(&page, "x-ratelimit-remaining"), remaining);
        assert_eq!(header(&page, "ratelimit-policy"), r#""default";q=3;w=60"#);
    }
    assert_eq!(layer.stats().snapshot().exempt, 10);
}

#[tokio::test]
async fn weighted_requests_spend_their_cost() {
    let (store, _clock) = store();
    let layer = RateLimitLayer::with_store(Quota::per_minute(3), store)
        .cost(|req: &Req| if req.uri().path() == "/export" { 2 } else { 1 });
    let mut service = layer.layer(service_fn(ok));
    let peer = "192.0.2.1:1";
    let export = send(&mut service, request("/export", peer, &[])).await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(header(&export, "x-ratelimit-remaining"), "1");
    let export = send(&mut service, request("/export", peer, &[])).await;
    assert_eq!(export.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&export, "retry-after"), "20");
    let page = send(&mut service, request("/page", peer, &[])).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(header(&page, "x-ratelimit-remaining"), "0");
}

#[tokio::test]
async fn one_layer_is_one_budget_across_clones_and_services() {
    let (store, _clock) = store();
    let layer = RateLimitLayer::with_store(Quota::per_minute(4), store);
    let clone = layer.clone();
    let mut first = layer.layer(service_fn(ok));
    let mut second = clone.layer(service_fn(ok));
    let mut first_clone = first.clone();
    let peer = "192.0.2.1:1";
    assert_eq!(send(&mut first, request("/", peer, &[])).await.status, 200);
    assert_eq!(send(&mut second, request("/", peer, &[])).await.status, 200);
    assert_eq!(
        send(&mut first_clone, request("/", peer, &[])).await.status,
        200
    );
    assert_eq!(send(&mut second, request("/", peer, &[])).await.status, 200);
    for service in [&mut first, &mut second, &mut first_clone] {
        assert_eq!(send(service, request("/", peer, &[])).await.status, 429);
    }
    assert_eq!(clone.stats().snapshot().refused, 3);

    // A layer of its own has a budget of its own.
    let (store, _clock) = self::store();
    let mut separate =
        RateLimitLayer::with_store(Quota::per_minute(4), store).layer(service_fn(ok));
    assert_eq!(
        send(&mut separate, request("/", peer, &[])).await.status,
        200
    );
}

#[tokio::test]
async fn forged_forwarding_headers_only_count_from_trusted_proxies() {
    let (store, _clock) = store();
    let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
    let layer = RateLimitLayer::with_store(Quota::per_minute(2), store).key(ClientIp::new(trusted));
    let mut service = layer.layer(service_fn(ok));

    // A client talking directly rotates forged addresses: still one budget.
    let direct = "198.51.100.7:4000";
    for (i, status) in [200, 200, 429, 429].into_iter().enumerate() {
        let forged = format!("1.2.3.{i}");
        let answer = send(
            &mut service,
            request(
                "/",
                direct,
                &[("x-forwarded-for", &forged), ("x-real-ip", &forged)],
            ),
        )
        .await;
        assert_eq!(answer.status, status, "request {i}");
    }

    // Behind the trusted proxy, each client has its own budget.
    let proxy = "10.0.0.2:4000";
    for i in 0..3 {
        let client = format!("203.0.113.{i}");
        let chain = format!("6.6.6.6, {client}");
        for _ in 0..2 {
            let answer = send(
                &mut service,
                request("/", proxy, &[("x-forwarded-for", &chain)]),
            )
            .await;
            assert_eq!(answer.status, 200, "{client}");
        }
        let answer = send(
            &mut service,
            request("/", proxy, &[("x-forwarded-for", &client)]),
        )
        .await;
        assert_eq!(answer.status, 429, "{client}");
    }
}

#[tokio::test]
async fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
    let (store, _clock) = store();
    let mut service = RateLimitLayer::with_store(Quota::per_minute(2), store).layer(service_fn(ok));
    assert_eq!(
        send(&mut service, request("/", "[2001:db8:1:2::1]:1", &[]))
            .await
            .status,
        200
    );
    assert_eq!(
        send(
            &mut service,
            request("/", "[2001:db8:1:2:dead:beef::9]:1", &[])
        )
        .await
        .status,
        200
    );
    assert_eq!(
        send(&mut service, request("/", "[2001:db8:1:2:ffff::]:1", &[]))
            .await
            .status,
        429
    );
    assert_eq!(
        send(&mut service, request("/", "[2001:db8:1:3::1]:1", &[]))
            .await
            .status,
        200
    );

    assert_eq!(
        send(&mut service, request("/", "192.0.2.44:1", &[]))
            .await
            .status,
        200
    );
    assert_eq!(
        send(&mut service, request("/", "[::ffff:192.0.2.44]:1", &[]))
            .await
            .status,
        200
    );
    assert_eq!(
        send(&mut service, request("/", "192.0.2.44:2", &[]))
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn malformed_forwarding_headers_never_panic_and_count_the_proxy() {
    let (store, _clock) = store();
    let layer = RateLimitLayer::with_store(Quota::per_minute(1000), store)
        .key(ClientIp::new("10.0.0.0/8".parse().unwrap()));
    let mut service = layer.layer(service_fn(ok));
    let huge = "x".repeat(64 * 1024);
    let many = "10.1.1.1,".repeat(10_000);
    let values: [&[u8]; 7] = [
        b"garbage",
        b",,,,",
        b"[::1",
        b"1.2.3.4:port",
        b"\xff\xfe\xfd",
        huge.as_bytes(),
        many.as_bytes(),
    ];
    for value in values {
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            let mut req = request("/", "10.0.0.2:1", &[]);
            req.headers_mut()
                .insert(name, http::HeaderValue::from_bytes(value).unwrap());
            let answer = send(&mut service, req).await;
            assert_eq!(answer.status, 200);
        }
    }
    // Every one of them was counted against the proxy, the last trusted hop.
    let (store, _clock) = self::store();
    let strict = RateLimitLayer::with_store(Quota::per_minute(1), store)
        .key(ClientIp::new("10.0.0.0/8".parse().unwrap()));
    let mut service = strict.layer(service_fn(ok));
    let mut req = request("/", "10.0.0.2:1", &[]);
    req.headers_mut().insert(
        "x-forwarded-for",
        http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    assert_eq!(send(&mut service, req).await.status, 200);
    let plain = request("/", "10.0.0.2:1", &[]);
    assert_eq!(send(&mut service, plain).await.status, 429);
}

#[tokio::test(flavor = "current_thread")]
async fn missing_connection_info_is_reported_once_then_the_rule_applies() {
    let (capture, _guard) = Capture::install();
    let (store, _clock) = store();
    let layer = RateLimitLayer::with_store(Quota::per_minute(2), store);
    let mut service = layer.layer(service_fn(ok));
    let bare = || Request::get("/").body(String::new()).unwrap();
    // The default rule: one shared fallback budget.
    assert_eq!(send(&mut service, bare()).await.status, 200);
    assert_eq!(send(&mut service, bare()).await.status, 200);
    assert_eq!(send(&mut service, bare()).await.status, 429);
    let errors: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.level == tracing::Level::ERROR)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .text
            .contains("into_make_service_with_connect_info::<SocketAddr>()")
    );
    assert!(errors[0].text.contains("SocketAddr"));
    assert_eq!(layer.stats().snapshot().missing_key, 3);

    let (store, _clock) = self::store();
    let refuse = RateLimitLayer::with_store(Quota::per_minute(2), store)
        .on_missing_key(MissingKey::Refuse(StatusCode::BAD_REQUEST));
    let mut service = refuse.layer(service_fn(ok));
    let answer = send(&mut service, bare()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"], "client_unidentified");

    let (store, _clock) = self::store();
    let allow =
        RateLimitLayer::with_store(Quota::per_minute(1), store).on_missing_key(MissingKey::Allow);
    let mut service = allow.layer(service_fn(ok));
    for _ in 0..3 {
        assert_eq!(send(&mut service, bare()).await.status, 200);
    }
    let errors = capture
        .events()
        .into_iter()
        .filter(|e| e.level == tracing::Level::ERROR)
        .count();
    assert_eq!(errors, 3, "one report per layer");
}

/// A store that fails, or answers through a future that is not ready at once.
#[derive(Debug)]
enum TestStore {
    Failing,
    Deferred(MemoryStore),
}

impl Store for TestStore {
    fn check(&self, policy: &Policy, key: &Key, cost: u32) -> Check {
        match self {
            Self::Failing => Check::ready(Err(Error::Timeout(Duration::from_millis(50)))),
            Self::Deferred(store) => {
                let mut check = store.check(policy, key, cost);
                let result = check.take_ready().unwrap();
                Check::pending(async move {
                    tokio::task::yield_now().await;
                    result
                })
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn store_errors_let_requests_through_and_are_counted() {
    let (capture, _guard) = Capture::install();
    let layer = RateLimitLayer::with_store(Quota::per_minute(1), TestStore::Failing);
    let mut service = layer.layer(service_fn(ok));
    for _ in 0..5 {
        let answer = send(&mut service, request("/", "192.0.2.1:1", &[])).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.headers.contains_key("x-ratelimit-limit"));
    }
    assert_eq!(layer.stats().snapshot().store_errors, 5);
    assert_eq!(
        capture.warnings_containing("rate-limit store failed").len(),
        1
    );
}

#[tokio::test]
async fn stores_that_wait_call_the_inner_service_once_decided() {
    let (store, _clock) = store();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let layer = RateLimitLayer::with_store(Quota::per_minute(2), TestStore::Deferred(store));
    let mut service = layer.layer(service_fn(move |req: Req| {
        counted.fetch_add(1, Ordering::SeqCst);
        ok(req)
    }));
    let statuses = [200, 200, 429];
    for status in statuses {
        let answer = send(&mut service, request("/", "192.0.2.1:1", &[])).await;
        assert_eq!(answer.status, status);
        assert!(answer.headers.contains_key("x-ratelimit-remaining"));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a refused request never reaches the service"
    );
}

#[tokio::test]
async fn from_env_defaults_to_100_per_minute_by_client_ip() {
    // Neither variable is set in the test environment.
    if std::env::var_os("RATE_LIMIT").is_some()
        || std::env::var_os("RATE_LIMIT_PER_MINUTE").is_some()
    {
        return;
    }
    let layer = RateLimitLayer::from_env().unwrap();
    assert_eq!(layer.policy().quotas(), [Quota::per_minute(100)]);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_layers_sharing_redis_never_admit_more_than_the_quota() {
    use perfkit::{pool::RedisPoolBuilder, rate_limit::RedisStore};

    let Some(redis) =
        support::redis("two_layers_sharing_redis_never_admit_more_than_the_quota").await
    else {
        return;
    };
    const QUOTA: u32 = 50;
    const TASKS_PER_LAYER: usize = 16;
    const REQUESTS_PER_TASK: usize = 20;

    // Two servers: separate handles, stores and layers, one Redis and one prefix.
    let mut layers = Vec::new();
    for _ in 0..2 {
        let handle = RedisPoolBuilder::new(&redis.url).build().await.unwrap();
        // A generous deadline: this test is about atomicity, not about the insurance.
        let store = RedisStore::builder(handle)
            .prefix(&redis.prefix)
            .timeout(Duration::from_secs(2))
            .build();
        layers.push(RateLimitLayer::with_store(Quota::per_day(QUOTA), store));
    }

    let mut tasks = Vec::new();
    for layer in &layers {
        for _ in 0..TASKS_PER_LAYER {
            let mut service = layer.layer(service_fn(ok));
            tasks.push(tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..REQUESTS_PER_TASK {
                    let answer = send(&mut service, request("/", "203.0.113.50:1", &[])).await;
                    match answer.status {
                        StatusCode::OK => allowed += 1,
                        StatusCode::TOO_MANY_REQUESTS => {}
                        other => panic!("unexpected status {other}"),
                    }
                }
                allowed
            }));
        }
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.unwrap();
    }
    assert_eq!(
        allowed, QUOTA as usize,
        "exactly the quota across both layers"
    );
    let (a, b) = (layers[0].stats().snapshot(), layers[1].stats().snapshot());
    assert_eq!(a.allowed + b.allowed, u64::from(QUOTA));
    assert_eq!(
        a.refused + b.refused,
        (2 * TASKS_PER_LAYER * REQUESTS_PER_TASK) as u64 - u64::from(QUOTA)
    );
    assert_eq!(
        a.fallback + b.fallback + a.store_errors + b.store_errors,
        0,
        "decided by Redis"
    );
}
