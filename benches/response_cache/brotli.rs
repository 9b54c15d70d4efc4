//! `Accept-Encoding: br` of a 200 KB JSON body: compressed on every request by
//! `CompressionLayer`, or served from a stored brotli variant.

use std::time::Duration;

use criterion::Criterion;
use perfkit::{
    cache::{Cache, http::ResponseCacheLayer},
    compression::CompressionLayer,
};
use tokio::runtime::Runtime;
use tower::ServiceBuilder;

use super::common::{handler, json, request};
use crate::support::print_ratios;

pub(crate) fn run(c: &mut Criterion, rt: &Runtime) {
    let body = json(2000); // about 200 KB, as the reference app's /big
    let compressed = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .service(handler(body.clone(), Duration::ZERO));
    let cache = Cache::builder().prefix("bench").build().expect("a cache");
    let cached = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(ResponseCacheLayer::new(cache).ttl(Duration::from_secs(3600)))
        .service(handler(body.clone(), Duration::ZERO));
    let sizes = rt.block_on(async {
        let identity = request(&cached, None, false).await.len();
        let stored = request(&cached, Some("br"), true).await.len();
        let on_the_fly = request(&compressed, Some("br"), false).await.len();
        (identity, stored, on_the_fly)
    });
    println!(
        "response_cache_brotli: identity {} bytes, stored brotli variant {} bytes, on-the-fly brotli {} bytes",
        sizes.0, sizes.1, sizes.2
    );
    let group_name = "response_cache_brotli";
    let mut group = c.benchmark_group(group_name);
    group.bench_function("compression_layer_br", |b| {
        b.to_async(rt)
            .iter(|| request(&compressed, Some("br"), false));
    });
    group.bench_function("cache_hit_br", |b| {
        b.to_async(rt).iter(|| request(&cached, Some("br"), true));
    });
    group.bench_function("cache_hit_identity", |b| {
        b.to_async(rt).iter(|| request(&cached, None, true));
    });
    group.finish();
    print_ratios(
        group_name,
        "compression_layer_br",
        &["cache_hit_br", "cache_hit_identity"],
    );
}
