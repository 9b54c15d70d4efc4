//! The Redis and tiered backends beside their anchors, in one run:
//!
//! - `cache_redis_hit`: a `Cache::get` hit on the Redis backend of an entry with two tags
//!   (one `EVALSHA` that checks both epochs, then decoding) against a raw `GET` of the
//!   same stored bytes through the same `RedisHandle` (goal: at most 1.3×), and against
//!   `raw_get_decode`, a hand-written cache read: `GET` of the value's MessagePack and
//!   decoding it, no tags; `tracked_hit_2_tags` is the same read on a backend with
//!   [`track_epochs`](perfkit::cache::RedisBackend::track_epochs): one plain `GET` and the
//!   epochs compared in memory;
//! - `cache_cluster_hit`: the same four reads on a Redis Cluster given by
//!   `REDIS_CLUSTER_URLS` (skipped, with a line saying so, when it is unset);
//! - `cache_tiered_hit`: a tiered L1 hit against a memory-backend hit, same value.
//! - `cache_redis_down`: a `Cache::get` on a Redis backend whose server is gone (a closed
//!   loopback port, the handle built with its default reconnect settings), failing fast
//!   while Redis is known to be down (`down_fail_fast`, the default) and trying Redis on
//!   every call (`down_every_call_tries`, `retry_interval(0)`, the behaviour before the
//!   breaker), beside a miss on the live Redis (`up_miss`).
//!
//! Skipped, with a line saying so, when `REDIS_URL` is unset or the `redis` feature is off.

/// Adds the Redis and tiered groups to `c`, or prints why they are skipped.
pub(crate) fn run(c: &mut criterion::Criterion, rt: &tokio::runtime::Runtime) {
    #[cfg(feature = "redis")]
    with_redis::run(c, rt);
    #[cfg(not(feature = "redis"))]
    {
        let _ = (c, rt);
        println!("skipped cache Redis benches: the `redis` feature is off");
    }
}

#[cfg(feature = "redis")]
mod with_redis {

    use std::{hint::black_box, time::Duration};

    use criterion::Criterion;
    use perfkit::{
        cache::{Cache, EntryOptions, MemoryBackend, RedisBackend, TieredBackend},
        pool::{RedisHandle, RedisPoolBuilder},
    };
    use redis::AsyncCommands;
    use tokio::runtime::Runtime;

    use super::super::records::{Record, records};
    use crate::support::print_ratios;

    pub(super) fn run(c: &mut Criterion, runtime: &Runtime) {
        let Some(url) = crate::support::service_url("REDIS_URL") else {
            println!("skipped cache Redis benches: REDIS_URL is not set");
            return;
        };
        let prefix = format!("bench{}", std::process::id());
        let value = records();
        let options = EntryOptions::new()
            .ttl(Duration::from_secs(600))
            .tags(["users", "stats"])
            .no_early_refresh();

        let (handle, redis_cache, tiered, tiered_cache, memory_cache) = runtime.block_on(async {
            let handle = RedisPoolBuilder::new(url.as_str())
                .build()
                .await
                .expect("REDIS_URL answers");
            let redis_cache = Cache::builder()
                .prefix(prefix.as_str())
                .backend(RedisBackend::new(handle.clone()))
                .build()
                .expect("a cache");
            let tiered = TieredBackend::builder(
                RedisBackend::new(handle.clone()),
                redis::Client::open(url.as_str()).expect("a Redis URL"),
            )
            .build();
            let tiered_cache = Cache::builder()
                .prefix(prefix.as_str())
                .backend(tiered.clone())
                .build()
                .expect("a cache");
            let memory_cache = Cache::builder()
                .prefix(prefix.as_str())
                .backend(MemoryBackend::new())
                .build()
                .expect("a cache");
            (handle, redis_cache, tiered, tiered_cache, memory_cache)
        });

        runtime.block_on(async {
            redis_cache
                .set("records", &value, options.clone())
                .await
                .expect("set");
            memory_cache
                .set("records", &value, options.clone())
                .await
                .expect("set");
            // Fill the tiered L1 once the subscription is up.
            let _ = tiered_cache.get::<Vec<Record>>("records").await;
            while !tiered.is_subscribed() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = tiered_cache.get::<Vec<Record>>("records").await;
            assert!(!tiered.l1().is_empty(), "the tiered L1 holds the entry");
        });

        hit_group(c, runtime, "cache_redis_hit", &handle, &prefix);
        match crate::support::service_url("REDIS_CLUSTER_URLS") {
            Some(seeds) => {
                let cluster = runtime.block_on(async {
                    RedisPoolBuilder::cluster(seeds.split(','))
                        .build()
                        .await
                        .expect("REDIS_CLUSTER_URLS answers")
                });
                hit_group(c, runtime, "cache_cluster_hit", &cluster, &prefix);
            }
            None => println!("skipped cache_cluster_hit: REDIS_CLUSTER_URLS is not set"),
        }

        let group_name = "cache_tiered_hit";
        let mut group = c.benchmark_group(group_name);
        group.bench_function("memory_hit", |b| {
            b.to_async(runtime).iter(|| async {
                let found: Option<Vec<Record>> = memory_cache.get("records").await.expect("get");
                black_box(found.expect("a hit"))
            });
        });
        group.bench_function("tiered_l1_hit", |b| {
            b.to_async(runtime).iter(|| async {
                let found: Option<Vec<Record>> = tiered_cache.get("records").await.expect("get");
                black_box(found.expect("a hit"))
            });
        });
        group.finish();
        print_ratios(group_name, "memory_hit", &["tiered_l1_hit"]);

        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a loopback port")
            .port();
        let down_url = format!("redis://127.0.0.1:{closed_port}");
        let down_cache = |retry_interval: Duration| {
            let handle = RedisPoolBuilder::new(down_url.as_str())
                .build_lazy()
                .expect("a Redis URL");
            Cache::builder()
                .prefix(prefix.as_str())
                .backend(RedisBackend::new(handle).retry_interval(retry_interval))
                .build()
                .expect("a cache")
        };
        let (fail_fast, every_call) = runtime.block_on(async {
            (
                down_cache(Duration::from_millis(200)),
                down_cache(Duration::ZERO),
            )
        });
        let group_name = "cache_redis_down";
        let mut group = c.benchmark_group(group_name);
        // The slowest variant waits for reconnection attempts on every call: flat sampling
        // with few samples keeps it to seconds.
        group
            .sampling_mode(criterion::SamplingMode::Flat)
            .sample_size(10);
        for (name, cache) in [
            ("up_miss", &redis_cache),
            ("down_fail_fast", &fail_fast),
            ("down_every_call_tries", &every_call),
        ] {
            group.bench_function(name, |b| {
                b.to_async(runtime).iter(|| async {
                    let found: Option<Vec<Record>> = cache.get("absent").await.expect("get");
                    black_box(found)
                });
            });
        }
        group.finish();
        print_ratios(
            group_name,
            "up_miss",
            &["down_fail_fast", "down_every_call_tries"],
        );

        runtime.block_on(async {
            let _ = redis_cache.invalidate_prefix("").await;
            let mut conn = handle.connection();
            let _: redis::RedisResult<i64> = conn
                .del(&[
                    format!("{{{prefix}}}:t:users"),
                    format!("{{{prefix}}}:t:stats"),
                ])
                .await;
        });
    }

    /// Concurrent readers in the `_50_tasks` rows.
    const TASKS: u64 = 50;

    /// Runs every future to completion, concurrently on the current task.
    async fn futures_join_all<F: Future<Output = ()>>(futures: impl Iterator<Item = F>) {
        let mut futures: Vec<_> = futures.map(Box::pin).collect();
        std::future::poll_fn(|cx| {
            futures.retain_mut(|future| future.as_mut().poll(cx).is_pending());
            if futures.is_empty() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    /// The hit group on `handle`: raw `GET`, raw `GET` + decode, the script hit and the
    /// tracked hit of one entry with two tags.
    fn hit_group(
        c: &mut Criterion,
        runtime: &Runtime,
        group_name: &str,
        handle: &RedisHandle,
        prefix: &str,
    ) {
        let value = records();
        let options = EntryOptions::new()
            .ttl(Duration::from_secs(600))
            .tags(["users", "stats"])
            .no_early_refresh();
        let scripted = Cache::builder()
            .prefix(prefix)
            .backend(RedisBackend::new(handle.clone()))
            .build()
            .expect("a cache");
        let tracked =
            runtime.block_on(async { RedisBackend::new(handle.clone()).track_epochs(true) });
        let tracked_cache = Cache::builder()
            .prefix(prefix)
            .backend(tracked.clone())
            .build()
            .expect("a cache");
        let entry_key = format!("{{{prefix}}}:k:records");
        let raw_key = format!("{{{prefix}}}:raw");
        let packed_key = format!("{{{prefix}}}:packed");
        runtime.block_on(async {
            scripted
                .set("records", &value, options.clone())
                .await
                .expect("set");
            // The anchor reads the very bytes the cache stored.
            let mut conn = handle.connection();
            let stored: Vec<u8> = conn.get(&entry_key).await.expect("the stored entry");
            let () = conn.set(&raw_key, stored).await.expect("set raw");
            let packed = rmp_serde::to_vec_named(&value).expect("MessagePack");
            let () = conn.set(&packed_key, packed).await.expect("set packed");
            // The tracked backend reads by GET once its subscription is up.
            let _ = tracked_cache.get::<Vec<Record>>("records").await;
            while !tracked.is_tracking() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = tracked_cache.get::<Vec<Record>>("records").await;
        });

        let single_node = !handle.is_cluster();
        if single_node {
            runtime.block_on(async {
                let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                    .arg("RESETSTAT")
                    .query_async(&mut handle.connection())
                    .await;
            });
        }
        let mut group = c.benchmark_group(group_name);
        group.bench_function("raw_get", |b| {
            let conn = handle.connection();
            b.to_async(runtime).iter(|| {
                let mut conn = conn.clone();
                let key = raw_key.as_str();
                async move {
                    let bytes: Vec<u8> = conn.get(key).await.expect("GET");
                    black_box(bytes)
                }
            });
        });
        group.bench_function("raw_get_decode", |b| {
            let conn = handle.connection();
            b.to_async(runtime).iter(|| {
                let mut conn = conn.clone();
                let key = packed_key.as_str();
                async move {
                    let bytes: Vec<u8> = conn.get(key).await.expect("GET");
                    let value: Vec<Record> = rmp_serde::from_slice(&bytes).expect("decode");
                    black_box(value)
                }
            });
        });
        for (name, cache) in [
            ("redis_hit_2_tags", &scripted),
            ("tracked_hit_2_tags", &tracked_cache),
        ] {
            group.bench_function(name, |b| {
                b.to_async(runtime).iter(|| async {
                    let found: Option<Vec<Record>> = cache.get("records").await.expect("get");
                    black_box(found.expect("a hit"))
                });
            });
        }
        // Fifty reads in flight at once on the shared connection: the server's own cost
        // per read (a script against a GET) decides the throughput.
        for (name, cache) in [
            ("redis_hit_2_tags_50_tasks", &scripted),
            ("tracked_hit_2_tags_50_tasks", &tracked_cache),
        ] {
            group.bench_function(name, |b| {
                b.to_async(runtime).iter_custom(|iters| async move {
                    let per_task = iters.div_ceil(TASKS);
                    let started = std::time::Instant::now();
                    let reads = (0..TASKS).map(|_| async {
                        for _ in 0..per_task {
                            let found: Option<Vec<Record>> =
                                cache.get("records").await.expect("get");
                            black_box(found.expect("a hit"));
                        }
                    });
                    futures_join_all(reads).await;
                    started
                        .elapsed()
                        .mul_f64(iters as f64 / (per_task * TASKS) as f64)
                });
            });
        }
        group.finish();
        assert!(
            tracked.is_tracking(),
            "the subscription stayed up: every tracked read was a tracked hit"
        );
        print_ratios(
            group_name,
            "redis_hit_2_tags_50_tasks",
            &["tracked_hit_2_tags_50_tasks"],
        );
        if single_node {
            // The server's own time per command over the group: what a read costs Redis.
            let info: String = runtime.block_on(async {
                redis::cmd("INFO")
                    .arg("commandstats")
                    .query_async(&mut handle.connection())
                    .await
                    .unwrap_or_default()
            });
            println!("{group_name}: Redis time per command (INFO commandstats)");
            for command in ["get", "evalsha", "mget"] {
                let prefix = format!("cmdstat_{command}:");
                if let Some(line) = info.lines().find(|line| line.starts_with(&prefix)) {
                    println!("  {line}");
                }
            }
        }
        print_ratios(
            group_name,
            "raw_get",
            &["raw_get_decode", "redis_hit_2_tags", "tracked_hit_2_tags"],
        );
        print_ratios(
            group_name,
            "raw_get_decode",
            &["redis_hit_2_tags", "tracked_hit_2_tags"],
        );
        runtime.block_on(async {
            let mut conn = handle.connection();
            let _: redis::RedisResult<i64> = conn.del(&[entry_key, raw_key, packed_key]).await;
        });
    }
}
