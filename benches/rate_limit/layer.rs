//! The rate-limit layer's added cost on a hello-world service, beside tower_governor's layer
//! with the same quota and a bare service: admitting (a quota generous enough never to
//! refuse) and refusing (a quota of one per hour, spent on the first request).

use std::time::Duration;

use criterion::Criterion;
use perfkit::rate_limit::{Quota, RateLimitHeaders, RateLimitLayer};
use tokio::runtime::Runtime;
use tower::{Layer, service_fn};
use tower_governor::{GovernorLayer, governor::GovernorConfigBuilder};

use crate::support::rate_limit::{BURST, RATE, drive, hello};

const ADMIT: &str = "rate_limit_layer";
const REFUSE: &str = "rate_limit_layer_refusing";
const ADMIT_VARIANTS: [&str; 6] = [
    "perfkit",
    "perfkit_no_headers",
    "perfkit_legacy_headers",
    "perfkit_draft_headers",
    "tower_governor",
    "tower_governor_headers",
];
const REFUSE_VARIANTS: [&str; 2] = ["perfkit", "tower_governor"];

fn perfkit(quota: Quota, headers: RateLimitHeaders) -> RateLimitLayer {
    RateLimitLayer::new(quota).headers(headers)
}

pub(crate) fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    admitting(c, &rt);
    refusing(c, &rt);

    support_summary();
}

fn admitting(c: &mut Criterion, rt: &Runtime) {
    let quota = Quota::per_second(RATE).with_burst(BURST);
    let mut group = c.benchmark_group(ADMIT);
    group.bench_function("bare", |b| {
        b.to_async(rt)
            .iter_custom(|iters| drive(service_fn(hello), iters))
    });
    group.bench_function("perfkit", |b| {
        let layer = perfkit(quota, RateLimitHeaders::ALL);
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(hello)), iters))
    });
    group.bench_function("perfkit_no_headers", |b| {
        let layer = perfkit(quota, RateLimitHeaders::NONE);
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(hello)), iters))
    });
    for (id, headers) in [
        ("perfkit_legacy_headers", RateLimitHeaders::LEGACY),
        ("perfkit_draft_headers", RateLimitHeaders::DRAFT),
    ] {
        group.bench_function(id, |b| {
            let layer = perfkit(quota, headers);
            b.to_async(rt)
                .iter_custom(|iters| drive(layer.layer(service_fn(hello)), iters))
        });
    }
    group.bench_function("tower_governor", |b| {
        let config = GovernorConfigBuilder::default()
            .per_nanosecond(u64::from(1_000_000_000 / RATE))
            .burst_size(BURST)
            .finish()
            .expect("a valid governor quota");
        let layer = GovernorLayer::new(config);
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(hello)), iters))
    });
    group.bench_function("tower_governor_headers", |b| {
        let config = GovernorConfigBuilder::default()
            .per_nanosecond(u64::from(1_000_000_000 / RATE))
            .burst_size(BURST)
            .use_headers()
            .finish()
            .expect("a valid governor quota");
        let layer = GovernorLayer::new(config);
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(hello)), iters))
    });
    group.finish();
}

fn refusing(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group(REFUSE);
    group.bench_function("bare", |b| {
        b.to_async(rt)
            .iter_custom(|iters| drive(service_fn(hello), iters))
    });
    group.bench_function("perfkit", |b| {
        let layer = perfkit(Quota::per_hour(1), RateLimitHeaders::ALL);
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(hello)), iters))
    });
    group.bench_function("tower_governor", |b| {
        let config = GovernorConfigBuilder::default()
            .period(Duration::from_secs(3600))
            .burst_size(1)
            .finish()
            .expect("a valid governor quota");
        let layer = GovernorLayer::new(config);
        b.to_async(rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(hello)), iters))
    });
    group.finish();
}

/// Prints the ratios of both groups once criterion has measured them.
fn support_summary() {
    crate::support::print_ratios(ADMIT, "bare", &ADMIT_VARIANTS);
    crate::support::print_versus(ADMIT, "perfkit", "tower_governor");
    crate::support::print_versus(ADMIT, "perfkit", "tower_governor_headers");
    crate::support::print_ratios(REFUSE, "bare", &REFUSE_VARIANTS);
    crate::support::print_versus(REFUSE, "perfkit", "tower_governor");
}
