//! A tour of perfkit on the embedded default: no server, no network, one process.
//!
//! Run with: `cargo run --release --example showcase --all-features`
//!
//! It drives the reference app (`examples/axum_app.rs`) in-process, once without perfkit's
//! layers and once with them, and prints what changes.

#[allow(dead_code)]
#[path = "axum_app.rs"]
mod axum_app;

use std::{convert::Infallible, hint::black_box, time::Duration};

use axum::{Router, body::Body};
use http::{Request, Response};
use http_body_util::BodyExt;
use perfkit::{
    health::{HealthCheck, SqlCheck},
    pool::SqlitePoolBuilder,
    timeout::TimeoutLayer,
    timing::TimingLayer,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

struct Answer {
    status: u16,
    elapsed: Duration,
    process_time: Option<String>,
    cache: Option<String>,
    body: String,
}

async fn get(app: &Router, uri: &str) -> Answer {
    let start = Instant::now();
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let process_time = header(response.headers(), "x-process-time");
    let cache = header(response.headers(), "x-cache");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        elapsed: start.elapsed(),
        process_time,
        cache,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or_default().to_owned())
}

fn heading(title: &str) {
    println!("\n{title}\n{}", "=".repeat(title.chars().count()));
}

async fn timeouts() {
    heading("1. TimeoutLayer: a request that would hang");
    let deadline = Duration::from_millis(250);
    let before = get(&axum_app::bare_app(), "/slow?ms=1500").await;
    let app = axum_app::app(axum_app::Config::embedded(deadline))
        .await
        .expect("the embedded default needs no server");
    let after = get(&app, "/slow?ms=1500").await;

    println!(
        "GET /slow?ms=1500 with a {} ms deadline\n",
        deadline.as_millis()
    );
    println!("{:<22} {:>7} {:>11}  body", "", "status", "answered in");
    for (label, answer) in [
        ("before (no layer)", &before),
        ("after (TimeoutLayer)", &after),
    ] {
        println!(
            "{:<22} {:>7} {:>9.0}ms  {}",
            label,
            answer.status,
            answer.elapsed.as_secs_f64() * 1000.0,
            answer.body
        );
    }
    println!("\nThe handler's future was dropped at the deadline: its work stopped with it.");
}

async fn timing() {
    heading("2. TimingLayer: headers and per-route latency");
    let app = axum_app::app(axum_app::Config::embedded(Duration::from_millis(400)))
        .await
        .expect("the embedded default needs no server");

    let mut requests = Vec::new();
    for i in 0..60u64 {
        requests.push(format!("/slow?ms={}", 5 + (i * 37) % 60));
    }
    requests.extend((0..40).map(|_| "/hello".to_owned()));
    requests.extend((0..5).map(|_| "/big".to_owned()));
    requests.extend((0..3).map(|_| "/slow?ms=1000".to_owned()));
    requests.extend((0..500).map(|i| format!("/users/{i}/profile")));

    let tasks: Vec<_> = requests
        .into_iter()
        .map(|uri| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, &uri).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    let sample = answers.iter().find(|a| a.status == 200).unwrap();
    println!(
        "{} requests served concurrently; e.g. X-Process-Time: {}",
        answers.len(),
        sample.process_time.as_deref().unwrap_or("-")
    );
    println!("500 requests to distinct unknown paths were labelled by template, not by path.\n");

    let snapshot: serde_json::Value =
        serde_json::from_str(&get(&app, "/metrics/timing").await.body).unwrap();
    println!(
        "{:<18} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "route", "count", "5xx", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for route in snapshot["routes"].as_array().unwrap() {
        println!(
            "{:<18} {:>6} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            route["route"].as_str().unwrap(),
            route["count"].as_u64().unwrap_or_default(),
            route["server_errors"].as_u64().unwrap_or_default(),
            route["p50_ms"].as_f64().unwrap_or_default(),
            route["p95_ms"].as_f64().unwrap_or_default(),
            route["p99_ms"].as_f64().unwrap_or_default(),
            route["max_ms"].as_f64().unwrap_or_default(),
        );
    }
}

async fn ns_per_request<S>(mut service: S, iterations: u32) -> f64
where
    S: Service<Request<()>, Response = Response<String>> + Clone,
    S::Error: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    for _ in 0..iterations {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        black_box(response);
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

/// Gives every measured service the same response type; the body is empty anyway.
fn drop_body<B>(response: Response<B>) -> Response<String> {
    response.map(|_| String::new())
}

async fn overhead() {
    heading("3. What the layers cost per request");
    // Like any real response, the handler's carries a header already.
    let handler = |_req: Request<()>| async {
        let mut response = Response::new(String::new());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Ok::<_, Infallible>(response)
    };
    let iterations = 200_000;

    let bare = ns_per_request(service_fn(handler), iterations).await;
    let timeout = ns_per_request(
        TimeoutLayer::new(Duration::from_secs(30))
            .layer(service_fn(handler))
            .map_response(drop_body),
        iterations,
    )
    .await;
    let timing = ns_per_request(
        TimingLayer::new()
            .layer(service_fn(handler))
            .map_response(drop_body),
        iterations,
    )
    .await;

    println!("{:<26} {:>10} {:>10}", "service", "ns/req", "added ns");
    for (label, ns) in [
        ("bare service_fn", bare),
        ("+ TimeoutLayer", timeout),
        ("+ TimingLayer", timing),
    ] {
        println!("{label:<26} {ns:>10.0} {:>10.0}", ns - bare);
    }
    if cfg!(debug_assertions) {
        println!("\n(debug build: run with --release for representative figures)");
    }
    println!("Side-by-side figures with tower-http: cargo bench --bench layers --all-features");
}

async fn health() {
    heading("4. Health: probes answered from background checks");
    let app = axum_app::app(axum_app::Config::embedded(Duration::from_secs(30)))
        .await
        .expect("the embedded default needs no server");
    // Let the first health round hand its connection back to the pool.
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!("GET /health       {}", get(&app, "/health").await.body);
    println!(
        "GET /health/pools {}",
        get(&app, "/health/pools").await.body
    );

    // The "before": a probe that checks the database itself, on every request.
    let pool = SqlitePoolBuilder::new("sqlite::memory:")
        .build()
        .await
        .expect("in-memory SQLite");
    let check = SqlCheck::from(&pool);
    let probes = 2_000u32;

    let start = Instant::now();
    for _ in 0..probes {
        black_box(get(&app, "/health").await);
    }
    let monitored = start.elapsed() / probes;
    let start = Instant::now();
    for _ in 0..probes {
        black_box(check.check().await.is_ok());
        black_box(get(&app, "/health/live").await);
    }
    let inline = start.elapsed() / probes;

    println!("\n{:<36} {:>12}", "probe", "µs/probe");
    println!(
        "{:<36} {:>12.1}",
        "before: SELECT 1 inline per probe",
        inline.as_secs_f64() * 1e6
    );
    println!(
        "{:<36} {:>12.1}",
        "after: HealthMonitor results",
        monitored.as_secs_f64() * 1e6
    );
    println!(
        "\nThis is SQLite in memory; against a database across a network, or one that is slow or\n\
         down, the inline probe takes as long as the database does and the monitored one does not."
    );
}

async fn post(app: &Router, uri: &str) -> u16 {
    let response = app
        .clone()
        .oneshot(Request::post(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status().as_u16()
}

async fn cache() {
    heading("5. Cache: an aggregate computed once, invalidated by tag");
    let app = axum_app::app(axum_app::Config::embedded(Duration::from_secs(30)))
        .await
        .expect("the embedded default needs no server");

    println!("{:<34} {:>8} {:>13}", "request", "X-Cache", "answered in");
    let show = |label: &str, answer: &Answer| {
        let outcome = if answer.body.contains("\"users\"") {
            answer.cache.as_deref().unwrap_or("-")
        } else {
            "error"
        };
        println!(
            "{label:<34} {outcome:>8} {:>11.2}ms",
            answer.elapsed.as_secs_f64() * 1000.0
        );
    };
    show("GET /stats", &get(&app, "/stats").await);
    for _ in 0..3 {
        show("GET /stats", &get(&app, "/stats").await);
    }
    let status = post(&app, "/stats/invalidate").await;
    println!("{:<34} {status:>8}", "POST /stats/invalidate");
    show("GET /stats", &get(&app, "/stats").await);
    show("GET /stats", &get(&app, "/stats").await);

    let requests = 2_000u32;
    let start = Instant::now();
    for _ in 0..requests {
        black_box(get(&app, "/stats").await);
    }
    let per_hit = start.elapsed() / requests;
    println!(
        "\nA hit costs {:.1} µs end to end through the app; the computation it saves takes at\n\
         least 20 ms. Invalidating the tag is one write, however many entries carry it.\n\
         Side-by-side figures with moka and raw Redis: cargo bench --bench cache --all-features",
        per_hit.as_secs_f64() * 1e6
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("perfkit showcase: embedded default, no server needed");
    timeouts().await;
    timing().await;
    overhead().await;
    health().await;
    cache().await;
}
