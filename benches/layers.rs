//! Per-request cost of perfkit's timeout and timing layers beside a bare `service_fn` and
//! tower-http's `TimeoutLayer`, in one run.
//!
//! Two handler shapes: `ready` answers on its first poll (a cache hit, a static page);
//! `pending` yields once before answering, as any handler that waits on I/O does, so every
//! timeout layer has to arm its timer.
//!
//! Run with `cargo bench --bench layers --all-features`.

mod support;

use std::{convert::Infallible, hint::black_box, time::Duration};

use criterion::Criterion;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

const GROUPS: [&str; 2] = ["layers_ready", "layers_pending"];
const VARIANTS: [&str; 3] = ["perfkit_timeout", "tower_http_timeout", "perfkit_timing"];

/// What a handler answers: like any real response, it carries a header, so adding one is
/// not also the first allocation of the header map.
fn response() -> Response<String> {
    let mut response = Response::new(String::new());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn ready(_req: Request<()>) -> Result<Response<String>, Infallible> {
    Ok(response())
}

async fn pending(_req: Request<()>) -> Result<Response<String>, Infallible> {
    tokio::task::yield_now().await;
    Ok(response())
}

/// Times `iters` sequential requests through a fresh `service`.
async fn drive<S>(mut service: S, iters: u64) -> Duration
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    for _ in 0..iters {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        black_box(response);
    }
    start.elapsed()
}

fn bench_group<H, F>(c: &mut Criterion, rt: &Runtime, name: &str, handler: H)
where
    H: Fn(Request<()>) -> F + Copy,
    F: Future<Output = Result<Response<String>, Infallible>>,
{
    let timeout = Duration::from_secs(30);
    let mut group = c.benchmark_group(name);
    group.bench_function("bare", |b| {
        b.to_async(rt)
            .iter_custom(|iters| drive(service_fn(handler), iters))
    });
    group.bench_function("perfkit_timeout", |b| {
        let layer = perfkit::timeout::TimeoutLayer::new(timeout);
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(handler)), iters))
    });
    group.bench_function("tower_http_timeout", |b| {
        let layer = tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        );
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(handler)), iters))
    });
    group.bench_function("perfkit_timing", |b| {
        let layer = perfkit::timing::TimingLayer::new();
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(handler)), iters))
    });
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = support::criterion();
    bench_group(&mut c, &rt, GROUPS[0], ready);
    bench_group(&mut c, &rt, GROUPS[1], pending);
    c.final_summary();

    for group in GROUPS {
        support::print_ratios(group, "bare", &VARIANTS);
        support::print_versus(group, "perfkit_timeout", "tower_http_timeout");
    }
}
