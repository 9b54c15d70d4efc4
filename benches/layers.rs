//! Per-request cost of perfkit's timeout and timing layers beside a bare `service_fn` and
//! tower-http's `TimeoutLayer`, in one run.
//!
//! Two handler shapes: `ready` answers on its first poll (a cache hit, a static page);
//! `pending` yields once before answering, as any handler that waits on I/O does, so every
//! timeout layer has to arm its timer.
//!
//! Run with `cargo bench --bench layers --all-features`.

mod support;

use std::{convert::Infallible, time::Duration};

use criterion::Criterion;
use http::{Request, Response, StatusCode};
use support::layers::{drive, pending, ready};
use tokio::runtime::Runtime;
use tower::{Layer, service_fn};

const GROUPS: [&str; 2] = ["layers_ready", "layers_pending"];
const VARIANTS: [&str; 3] = ["perfkit_timeout", "tower_http_timeout", "perfkit_timing"];

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
