//! The rate limiter against its anchors, in one run:
//!
//! - `rate_limit_memory`: a `MemoryStore` decision beside governor's keyed limiter
//!   (`DefaultKeyedRateLimiter`, dashmap-based), same quota and keys: 1 key and 10,000 keys,
//!   from one thread and from two. Time per decision (wall time over all threads). Governor
//!   runs twice: on its default clock (quanta, which reads the CPU's time-stamp counter) and
//!   on `MonotonicClock` (`Instant`). `perfkit` is the memory store on its default clock
//!   (`QuantaClock`, the same time-stamp counter); `perfkit_system` on `SystemClock`
//!   (`Instant`, its default until issue 15) and `perfkit_coarse` on the opt-in `CoarseClock`
//!   (1 ms resolution), each against governor on quanta.
//! - `rate_limit_redis`: a `RedisStore` decision (one `EVALSHA`) beside a raw `INCR` through
//!   the same `RedisHandle`, from 50 concurrent tasks; skipped when `REDIS_URL` is unset.
//!   `script_floor` is the least any atomic read-decide-write in Redis costs: an `EVALSHA` of
//!   a script that only does `GET` and `SET ... PX` on the same keys, without deciding
//!   anything, so the store's distance to it is what its decision adds.
//! - `rate_limit_redis_cluster`: the same three rows on the Redis Cluster whose seed nodes
//!   `REDIS_CLUSTER_URLS` lists; skipped when it is unset.
//! - `rate_limit_layer`, `rate_limit_layer_refusing`: the layer's added cost on a hello-world
//!   service beside tower_governor's layer and a bare service (`rate_limit/layer.rs`).
//!
//! Run with `cargo bench --all-features --bench rate_limit`.

mod rate_limit {
    pub(crate) mod layer;
}
mod support;

use std::{
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU32,
    time::{Duration, Instant},
};

use criterion::Criterion;
use governor::{
    DefaultKeyedRateLimiter, RateLimiter, clock::MonotonicClock, middleware::NoOpMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

/// Governor's keyed limiter on `Instant`, perfkit's clock.
type InstantKeyedRateLimiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, MonotonicClock, NoOpMiddleware<Instant>>;
use perfkit::rate_limit::{CoarseClock, Key, MemoryStore, Policy, Quota, SystemClock};

const MEMORY: &str = "rate_limit_memory";
const REDIS: &str = "rate_limit_redis";
/// The same rows on a Redis Cluster (`REDIS_CLUSTER_URLS`).
const REDIS_CLUSTER: &str = "rate_limit_redis_cluster";
const PER_SECOND: u32 = 1000;
#[cfg(feature = "redis")]
const TASKS: u64 = 50;

/// Runs `iters` calls of `f` spread over `threads` threads and returns the wall time.
fn on_threads<F>(threads: u64, iters: u64, f: &F) -> Duration
where
    F: Fn(u64) + Sync,
{
    if threads == 1 {
        let start = Instant::now();
        for i in 0..iters {
            f(i);
        }
        return start.elapsed();
    }
    let per_thread = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for i in 0..per_thread {
                    f(t * per_thread + i);
                }
            });
        }
    });
    start.elapsed()
}

fn memory(c: &mut Criterion) {
    let policy = Policy::new(Quota::per_second(PER_SECOND));
    let mut group = c.benchmark_group(MEMORY);
    for keys in [1usize, 10_000] {
        let addrs: Vec<IpAddr> = (0..keys as u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let perfkit_keys: Vec<Key> = addrs.iter().copied().map(Key::ip).collect();
        let store = MemoryStore::new();
        let coarse = MemoryStore::builder().clock(CoarseClock::new()).build();
        let system = MemoryStore::builder().clock(SystemClock::new()).build();
        let quota = governor::Quota::per_second(NonZeroU32::new(PER_SECOND).unwrap());
        let governor: DefaultKeyedRateLimiter<IpAddr> = RateLimiter::keyed(quota);
        let governor_instant: InstantKeyedRateLimiter =
            RateLimiter::new(quota, DefaultKeyedStateStore::default(), MonotonicClock);
        for threads in [1u64, 2] {
            let id = format!("{keys}keys_{threads}threads");
            group.bench_function(format!("perfkit_{id}"), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, &|i| {
                        let key = &perfkit_keys[(i as usize) % keys];
                        std::hint::black_box(store.decide(&policy, key, 1));
                    })
                })
            });
            group.bench_function(format!("perfkit_system_{id}"), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, &|i| {
                        let key = &perfkit_keys[(i as usize) % keys];
                        std::hint::black_box(system.decide(&policy, key, 1));
                    })
                })
            });
            group.bench_function(format!("perfkit_coarse_{id}"), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, &|i| {
                        let key = &perfkit_keys[(i as usize) % keys];
                        std::hint::black_box(coarse.decide(&policy, key, 1));
                    })
                })
            });
            group.bench_function(format!("governor_{id}"), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, &|i| {
                        let key = &addrs[(i as usize) % keys];
                        let _ = std::hint::black_box(governor.check_key(key));
                    })
                })
            });
            group.bench_function(format!("governor_instant_{id}"), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, iters, &|i| {
                        let key = &addrs[(i as usize) % keys];
                        let _ = std::hint::black_box(governor_instant.check_key(key));
                    })
                })
            });
        }
    }
    group.finish();
}

#[cfg(feature = "redis")]
fn redis(c: &mut Criterion) {
    let Some(url) = support::service_url("REDIS_URL") else {
        println!("{REDIS}: skipped, REDIS_URL is not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let handle = rt.block_on(async {
        perfkit::pool::RedisPoolBuilder::new(&url)
            .build()
            .await
            .expect("Redis handle")
    });
    redis_group(c, &rt, REDIS, handle);
    match support::service_url("REDIS_CLUSTER_URLS") {
        Some(seeds) => {
            let cluster = rt.block_on(async {
                perfkit::pool::RedisPoolBuilder::cluster(seeds.split(','))
                    .build()
                    .await
                    .expect("REDIS_CLUSTER_URLS answers")
            });
            redis_group(c, &rt, REDIS_CLUSTER, cluster);
        }
        None => println!("{REDIS_CLUSTER}: skipped, REDIS_CLUSTER_URLS is not set"),
    }
}

/// The Redis rows on `handle`: raw `INCR`, the script floor and the store's decision.
#[cfg(feature = "redis")]
fn redis_group(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group_name: &str,
    handle: perfkit::pool::RedisHandle,
) {
    use perfkit::rate_limit::{RedisStore, Store};

    let prefix = format!("perfkit-bench:rate_limit:{}:", std::process::id());
    let store = RedisStore::builder(handle.clone()).prefix(&prefix).build();
    let policy = Policy::new(Quota::per_second(1_000_000));
    let counter = format!("{prefix}incr");

    let mut group = c.benchmark_group(group_name);
    group.bench_function("incr", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let handle = handle.clone();
            let counter = counter.clone();
            async move {
                run_tasks(iters, move |_| {
                    let mut handle = handle.clone();
                    let counter = counter.clone();
                    async move {
                        let _: i64 = redis::cmd("INCR")
                            .arg(&counter)
                            .query_async(&mut handle)
                            .await
                            .expect("INCR");
                    }
                })
                .await
            }
        })
    });
    let floor = redis::Script::new(
        "local v = redis.call('GET', KEYS[1]) \
         redis.call('SET', KEYS[1], '1', 'PX', 1000) return 1",
    );
    group.bench_function("script_floor", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let handle = handle.clone();
            let floor = floor.clone();
            let prefix = prefix.clone();
            async move {
                run_tasks(iters, move |i| {
                    let mut handle = handle.clone();
                    let floor = floor.clone();
                    let key = format!("{prefix}floor:{}", i % 10_000);
                    async move {
                        let _: i64 = floor
                            .key(key)
                            .invoke_async(&mut handle)
                            .await
                            .expect("EVALSHA");
                    }
                })
                .await
            }
        })
    });
    group.bench_function("redis_store", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = store.clone();
            let policy = policy.clone();
            async move {
                run_tasks(iters, move |i| {
                    let store = store.clone();
                    let policy = policy.clone();
                    async move {
                        let key = Key::ip(IpAddr::V4(Ipv4Addr::from(i as u32 % 10_000)));
                        let decision = store.check(&policy, &key, 1).await.expect("decision");
                        assert!(
                            !decision.source.is_fallback(),
                            "Redis failed during the run"
                        );
                    }
                })
                .await
            }
        })
    });
    group.finish();

    rt.block_on(async {
        let mut conn = handle.connection();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<i64> =
                redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
    });
}

#[cfg(feature = "redis")]
/// Runs `iters` operations over [`TASKS`] concurrent tasks; returns the wall time.
async fn run_tasks<F, Fut>(iters: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per_task = iters.div_ceil(TASKS);
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    op(t * per_task + i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    start.elapsed()
}

fn main() {
    let mut c = support::criterion();
    memory(&mut c);
    #[cfg(feature = "redis")]
    redis(&mut c);
    #[cfg(not(feature = "redis"))]
    println!("{REDIS}: skipped, the `redis` feature is off");
    rate_limit::layer::bench(&mut c);
    c.final_summary();

    println!();
    println!(
        "{MEMORY}: perfkit / governor on its default clock (quanta), then on Instant \
         (below 1 = perfkit faster)"
    );
    for id in [
        "1keys_1threads",
        "1keys_2threads",
        "10000keys_1threads",
        "10000keys_2threads",
    ] {
        support::print_versus(MEMORY, &format!("perfkit_{id}"), &format!("governor_{id}"));
        support::print_versus(
            MEMORY,
            &format!("perfkit_{id}"),
            &format!("governor_instant_{id}"),
        );
        support::print_versus(
            MEMORY,
            &format!("perfkit_coarse_{id}"),
            &format!("governor_{id}"),
        );
        support::print_versus(
            MEMORY,
            &format!("perfkit_system_{id}"),
            &format!("governor_{id}"),
        );
    }
    support::print_ratios(REDIS, "incr", &["script_floor", "redis_store"]);
}
