//! What a pooled connection saves, and what perfkit's pre-ping costs, against PostgreSQL
//! over loopback.
//!
//! - `pool_vs_connect`: acquire a connection from a perfkit pool and run `SELECT 1`, beside
//!   opening a fresh connection, running `SELECT 1` and closing it.
//! - `pre_ping_1_task` / `pre_ping_8_tasks`: acquire + `SELECT 1` on pools of 8 connections,
//!   from one task or from 8 concurrent tasks: sqlx with no check (`sqlx_unchecked`, the
//!   floor), sqlx's `test_before_acquire(true)` (a ping round trip on every acquire), and
//!   perfkit's pool, which pings only connections idle for more than a second. After
//!   criterion's runs, the same three are run again interleaved, batch by batch, and their
//!   medians printed: on a shared machine that comparison is the steadier one.
//!
//! Needs `DATABASE_URL`; without it the bench prints a line and does nothing. Run with
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench pool --features postgres`
//! (about 30 seconds).

mod support;

use std::{
    hint::black_box,
    str::FromStr,
    time::{Duration, Instant},
};

use criterion::Criterion;
use perfkit::pool::{PgPool, PgPoolBuilder};
use sqlx::{
    ConnectOptions, Connection, PgConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::runtime::Runtime;

/// Connections in every pool, and concurrent tasks in the `8_tasks` group.
const POOL_SIZE: u32 = 8;

const CONNECT_GROUP: &str = "pool_vs_connect";
const PING_GROUPS: [(&str, usize); 2] = [("pre_ping_1_task", 1), ("pre_ping_8_tasks", 8)];
const PING_VARIANTS: [&str; 3] = ["sqlx_unchecked", "sqlx_test_before_acquire", "perfkit"];

/// Whichever pool a variant uses.
#[derive(Clone)]
enum AnyPool {
    Sqlx(sqlx::PgPool),
    Perfkit(PgPool),
}

impl AnyPool {
    async fn select_one(&self) {
        match self {
            AnyPool::Sqlx(pool) => {
                let mut conn = pool.acquire().await.unwrap();
                black_box(sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap());
            }
            AnyPool::Perfkit(pool) => {
                let mut conn = pool.acquire().await.unwrap();
                black_box(sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap());
            }
        }
    }

    async fn close(&self) {
        match self {
            AnyPool::Sqlx(pool) => pool.close().await,
            AnyPool::Perfkit(pool) => pool.close().await,
        }
    }
}

fn options(url: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(url)
        .expect("DATABASE_URL is not a valid PostgreSQL URL")
        .disable_statement_logging()
}

async fn perfkit_pool(url: &str) -> PgPool {
    PgPoolBuilder::from_options(options(url))
        .pool_size(POOL_SIZE)
        .max_overflow(0)
        .slow_statement_threshold(None)
        .build()
        .await
        .expect("cannot build the perfkit pool")
}

async fn sqlx_pool(url: &str, test_before_acquire: bool) -> sqlx::PgPool {
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .min_connections(POOL_SIZE)
        .test_before_acquire(test_before_acquire)
        .connect_with(options(url))
        .await
        .expect("cannot build the sqlx pool")
}

/// Runs `iters` acquire + `SELECT 1` spread over `tasks` concurrent tasks; the wall time.
async fn drive(pool: &AnyPool, tasks: usize, iters: u64) -> Duration {
    let per_task = iters.div_ceil(tasks as u64);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let pool = pool.clone();
        set.spawn(async move {
            for _ in 0..per_task {
                pool.select_one().await;
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    started.elapsed()
}

fn bench_connect(c: &mut Criterion, rt: &Runtime, url: &str) {
    let pool = AnyPool::Perfkit(rt.block_on(perfkit_pool(url)));
    let options = options(url);
    let mut group = c.benchmark_group(CONNECT_GROUP);
    // A fresh connection takes milliseconds: fewer samples keep the run short.
    group.sample_size(20);
    group.bench_function("perfkit_pool", |b| {
        b.iter_custom(|iters| rt.block_on(drive(&pool, 1, iters)));
    });
    group.bench_function("fresh_connection", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let mut conn = PgConnection::connect_with(&options).await.unwrap();
                    black_box(sqlx::query("SELECT 1").execute(&mut conn).await.unwrap());
                    conn.close().await.unwrap();
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    rt.block_on(pool.close());
}

fn bench_pre_ping(c: &mut Criterion, rt: &Runtime, url: &str) {
    let pools = rt.block_on(async {
        [
            AnyPool::Sqlx(sqlx_pool(url, false).await),
            AnyPool::Sqlx(sqlx_pool(url, true).await),
            AnyPool::Perfkit(perfkit_pool(url).await),
        ]
    });
    for (group_name, tasks) in PING_GROUPS {
        let mut group = c.benchmark_group(group_name);
        for (variant, pool) in PING_VARIANTS.iter().zip(&pools) {
            group.bench_function(*variant, |b| {
                b.iter_custom(|iters| rt.block_on(drive(pool, tasks, iters)));
            });
        }
        group.finish();
    }
    for (group_name, tasks) in PING_GROUPS {
        if selected(group_name) {
            interleaved(rt, &pools, tasks);
        }
    }
    rt.block_on(async {
        for pool in &pools {
            pool.close().await;
        }
    });
}

/// Rounds of the interleaved comparison, and acquires per variant in each round.
const ROUNDS: usize = 40;
const BATCH: u64 = 200;

/// The pre-ping variants again, interleaved: each round runs a batch on every pool, starting
/// with a different one each time, so load that comes and goes on a shared machine falls on
/// all of them alike; prints the median time per acquire + `SELECT 1` and the ratios.
fn interleaved(rt: &Runtime, pools: &[AnyPool; 3], tasks: usize) {
    let mut samples: [Vec<f64>; 3] = Default::default();
    for round in 0..ROUNDS {
        for offset in 0..pools.len() {
            let variant = (round + offset) % pools.len();
            let elapsed = rt.block_on(drive(&pools[variant], tasks, BATCH));
            samples[variant].push(elapsed.as_nanos() as f64 / BATCH as f64);
        }
    }
    let medians = samples.map(|mut ns| {
        ns.sort_by(f64::total_cmp);
        ns[ns.len() / 2]
    });
    println!();
    println!(
        "pre-ping, {tasks} task(s), interleaved medians of {ROUNDS} rounds x {BATCH} acquires:"
    );
    for (variant, ns) in PING_VARIANTS.iter().zip(medians) {
        println!(
            "  {variant:<28} {:>9.1} us {:>7.2}x",
            ns / 1000.0,
            ns / medians[0]
        );
    }
    println!(
        "  sqlx_test_before_acquire / perfkit = {:.2}x",
        medians[1] / medians[2]
    );
}

/// Whether the command line's benchmark filter, if any, selects `group`.
fn selected(group: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-') && arg.parse::<f64>().is_err())
        .collect();
    filters.is_empty() || filters.iter().any(|filter| group.contains(filter.as_str()))
}

fn main() {
    let Some(url) = support::service_url("DATABASE_URL") else {
        eprintln!("skipped the pool bench: DATABASE_URL is not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Criterion's plots take longer to draw than these benches take to run.
    let mut c = support::criterion().without_plots();
    bench_connect(&mut c, &rt, &url);
    bench_pre_ping(&mut c, &rt, &url);
    c.final_summary();

    support::print_ratios(CONNECT_GROUP, "perfkit_pool", &["fresh_connection"]);
    support::print_versus(CONNECT_GROUP, "fresh_connection", "perfkit_pool");
    for (group, _) in PING_GROUPS {
        support::print_ratios(group, "sqlx_unchecked", &PING_VARIANTS[1..]);
        support::print_versus(group, "sqlx_test_before_acquire", "perfkit");
    }
}
