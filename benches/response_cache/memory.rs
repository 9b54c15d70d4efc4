//! A memory-backend hit beside the handler it caches.

use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use perfkit::cache::{Cache, http::ResponseCacheLayer};
use tokio::runtime::Runtime;
use tower::ServiceBuilder;

use super::common::{handler, json, request};
use crate::support::print_ratios;

pub(crate) fn run(c: &mut Criterion, rt: &Runtime) {
    let body = json(20); // about 2 KB
    for (group_name, delay) in [
        ("response_cache_memory_trivial", Duration::ZERO),
        ("response_cache_memory_20ms", Duration::from_millis(20)),
    ] {
        let cache = Cache::builder().prefix("bench").build().expect("a cache");
        let bare = handler(body.clone(), delay);
        let cached = ServiceBuilder::new()
            .layer(ResponseCacheLayer::new(cache).ttl(Duration::from_secs(3600)))
            .service(handler(body.clone(), delay));
        rt.block_on(request(&cached, None, false));
        let mut group = c.benchmark_group(group_name);
        if !delay.is_zero() {
            group.sampling_mode(SamplingMode::Flat).sample_size(10);
        }
        group.bench_function("handler", |b| {
            b.to_async(rt).iter(|| request(&bare, None, false));
        });
        group.bench_function("memory_hit", |b| {
            b.to_async(rt).iter(|| request(&cached, None, true));
        });
        group.finish();
        print_ratios(group_name, "handler", &["memory_hit"]);
    }
}
