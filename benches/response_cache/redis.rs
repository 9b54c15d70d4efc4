//! A Redis-backend hit beside a raw `GET` of the same stored bytes.

/// Adds the Redis group to `c`, or prints why it is skipped.
pub(crate) fn run(c: &mut criterion::Criterion, rt: &tokio::runtime::Runtime) {
    #[cfg(feature = "redis")]
    with_redis::run(c, rt);
    #[cfg(not(feature = "redis"))]
    {
        let _ = (c, rt);
        println!("skipped response cache Redis bench: the `redis` feature is off");
    }
}

#[cfg(feature = "redis")]
mod with_redis {
    use std::{hint::black_box, time::Duration};

    use bytes::Bytes;
    use criterion::Criterion;
    use perfkit::{
        cache::{Cache, RedisBackend, http::ResponseCacheLayer},
        pool::RedisPoolBuilder,
    };
    use redis::AsyncCommands;
    use tokio::runtime::Runtime;
    use tower::ServiceBuilder;

    use super::super::common::{handler, json, request};
    use crate::support::print_ratios;

    pub(super) fn run(c: &mut Criterion, rt: &Runtime) {
        let Some(url) = crate::support::service_url("REDIS_URL") else {
            println!("skipped response cache Redis bench: REDIS_URL is not set");
            return;
        };
        let prefix = format!("benchrc{}", std::process::id());
        let handle = rt.block_on(async {
            RedisPoolBuilder::new(url.as_str())
                .build()
                .await
                .expect("REDIS_URL answers")
        });
        let cache = Cache::builder()
            .prefix(prefix.as_str())
            .backend(RedisBackend::new(handle.clone()))
            .build()
            .expect("a cache");
        let cached = ServiceBuilder::new()
            .layer(
                ResponseCacheLayer::new(cache.clone())
                    .ttl(Duration::from_secs(3600))
                    .tags_for(|_| vec!["pages".to_owned()]),
            )
            .service(handler(json(20), Duration::ZERO));
        let raw_key = format!("{{{prefix}}}:raw");
        rt.block_on(async {
            request(&cached, None, false).await;
            // The anchor reads the very bytes the cache stored.
            let mut conn = handle.connection();
            let mut keys: Vec<String> = conn.keys(format!("{{{prefix}}}:k:*")).await.expect("KEYS");
            let key = keys.pop().expect("the stored entry");
            let stored: Vec<u8> = conn.get(key).await.expect("the stored entry");
            let () = conn.set(&raw_key, stored).await.expect("set raw");
        });

        let group_name = "response_cache_redis";
        let mut group = c.benchmark_group(group_name);
        group.bench_function("raw_get", |b| {
            let conn = handle.connection();
            b.to_async(rt).iter(|| {
                let mut conn = conn.clone();
                let key = raw_key.as_str();
                async move {
                    let bytes: Vec<u8> = conn.get(key).await.expect("GET");
                    black_box(Bytes::from(bytes))
                }
            });
        });
        group.bench_function("redis_hit", |b| {
            b.to_async(rt).iter(|| request(&cached, None, true));
        });
        group.finish();
        print_ratios(group_name, "raw_get", &["redis_hit"]);
        rt.block_on(async {
            let _ = cache.invalidate_prefix("").await;
            let mut conn = handle.connection();
            let _: redis::RedisResult<()> = conn.del(&raw_key).await;
        });
    }
}
