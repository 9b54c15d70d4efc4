//! 1 KiB `GET`s through each way of holding Redis connections, from 1 task and from 50
//! concurrent tasks on a 2-worker runtime, in one run:
//!
//! - `bb8_redis_ping`: bb8-redis as shipped, `PING` on every checkout (bb8's default);
//! - `bb8_redis`: bb8-redis without the checkout `PING`;
//! - `pool_ping` / `pool`: perfkit's `RedisPool`, with and without `pre_ping`;
//! - `handle`: perfkit's `RedisHandle`, commands on `connection()` (one multiplexed
//!   connection shared by every task);
//! - `handle_counted`: the same handle, commands sent through it so `stats()` counts them.
//!
//! Every pool holds up to 50 connections. One iteration is one `GET`; the summary prints
//! operations per second and each variant's time relative to `handle`. Plots are off, which
//! keeps the default run under a minute.
//!
//! Run with `REDIS_URL=redis://127.0.0.1:6379 cargo bench --bench redis_pool --features redis`.

mod support;

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, Throughput};
use perfkit::pool::{RedisHandle, RedisPool, RedisPoolBuilder};
use redis::aio::ConnectionLike;
use tokio::runtime::Runtime;

const VALUE_SIZE: usize = 1024;
const POOL_SIZE: u32 = 50;
const GROUPS: [(&str, usize); 2] = [("redis_get_1_task", 1), ("redis_get_50_tasks", 50)];
const VARIANTS: [&str; 6] = [
    "bb8_redis_ping",
    "bb8_redis",
    "pool_ping",
    "pool",
    "handle",
    "handle_counted",
];

type Bb8Redis = bb8::Pool<bb8_redis::RedisConnectionManager>;

/// The connection holders under test, all built against the same server.
#[derive(Clone)]
enum Target {
    Bb8Redis(Bb8Redis),
    Pool(RedisPool),
    Handle(RedisHandle),
    HandleCounted(RedisHandle),
}

impl Target {
    /// One `GET` of `key`, checking a connection out and back in where there is a pool.
    async fn get(&self, key: &str) -> Vec<u8> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        match self {
            Target::Bb8Redis(pool) => {
                let mut conn = pool.get().await.expect("bb8-redis checkout");
                query(&mut *conn, &cmd).await
            }
            Target::Pool(pool) => {
                let mut conn = pool.get().await.expect("pool checkout");
                query(&mut conn, &cmd).await
            }
            Target::Handle(handle) => query(&mut handle.connection(), &cmd).await,
            Target::HandleCounted(handle) => query(&mut handle.clone(), &cmd).await,
        }
    }
}

async fn query<C: ConnectionLike + Send>(conn: &mut C, cmd: &redis::Cmd) -> Vec<u8> {
    cmd.query_async(conn).await.expect("GET")
}

/// Runs `iters` GETs split over `tasks` concurrent tasks and returns the wall time.
async fn drive(target: &Target, key: &Arc<str>, tasks: usize, iters: u64) -> Duration {
    let tasks_u64 = tasks as u64;
    let started = std::time::Instant::now();
    let mut joins = Vec::with_capacity(tasks);
    for task in 0..tasks_u64 {
        let share = iters / tasks_u64 + u64::from(task < iters % tasks_u64);
        let target = target.clone();
        let key = Arc::clone(key);
        joins.push(tokio::spawn(async move {
            for _ in 0..share {
                black_box(target.get(&key).await);
            }
        }));
    }
    for join in joins {
        join.await.expect("bench task");
    }
    started.elapsed()
}

async fn targets(url: &str) -> Vec<(&'static str, Target)> {
    let bb8_redis = |test_on_check_out: bool| async move {
        let manager = bb8_redis::RedisConnectionManager::new(url).expect("Redis URL");
        bb8::Pool::builder()
            .max_size(POOL_SIZE)
            .test_on_check_out(test_on_check_out)
            .build(manager)
            .await
            .expect("bb8-redis pool")
    };
    let builder = RedisPoolBuilder::new(url).max_connections(POOL_SIZE);
    let handle = builder.clone().build().await.expect("Redis handle");
    vec![
        ("bb8_redis_ping", Target::Bb8Redis(bb8_redis(true).await)),
        ("bb8_redis", Target::Bb8Redis(bb8_redis(false).await)),
        (
            "pool_ping",
            Target::Pool(
                builder
                    .clone()
                    .pre_ping(true)
                    .build_pool()
                    .await
                    .expect("pool"),
            ),
        ),
        (
            "pool",
            Target::Pool(builder.build_pool().await.expect("pool")),
        ),
        ("handle", Target::Handle(handle.clone())),
        ("handle_counted", Target::HandleCounted(handle)),
    ]
}

/// Prints operations per second for each variant of `group`, from criterion's estimates.
fn print_ops(group: &str) {
    println!();
    println!("{group}: operations per second");
    for variant in VARIANTS {
        if let Some(ns) = support::estimate_ns(group, variant) {
            println!("  {variant:<28} {:>12.0} ops/s", 1e9 / ns);
        }
    }
}

fn main() {
    let Some(url) = support::service_url("REDIS_URL") else {
        println!("redis_pool: skipped, REDIS_URL is not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let key: Arc<str> = format!("perfkit-bench:redis_pool:{}:value", std::process::id()).into();
    let targets = rt.block_on(async {
        let handle = RedisPoolBuilder::new(&url)
            .build()
            .await
            .expect("Redis handle");
        let () = redis::cmd("SET")
            .arg(&*key)
            .arg(vec![b'x'; VALUE_SIZE])
            .arg("EX")
            .arg(600)
            .query_async(&mut handle.connection())
            .await
            .expect("SET");
        targets(&url).await
    });

    // The summary below is the report; criterion's plots would double the run time.
    let mut c = support::criterion().without_plots();
    bench(&mut c, &rt, &targets, &key);
    c.final_summary();

    rt.block_on(async {
        if let Some((_, Target::Handle(handle))) = targets.iter().find(|(n, _)| *n == "handle") {
            let _: redis::RedisResult<i64> = redis::cmd("DEL")
                .arg(&*key)
                .query_async(&mut handle.connection())
                .await;
        }
    });

    for (group, _) in GROUPS {
        print_ops(group);
        support::print_ratios(group, "handle", &VARIANTS);
    }
}

fn bench(c: &mut Criterion, rt: &Runtime, targets: &[(&'static str, Target)], key: &Arc<str>) {
    for (group_name, tasks) in GROUPS {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(1));
        for (name, target) in targets {
            group.bench_function(*name, |b| {
                b.to_async(rt)
                    .iter_custom(|iters| async move { drive(target, key, tasks, iters).await })
            });
        }
        group.finish();
    }
}
