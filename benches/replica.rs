//! Reads through a `ReplicatedPool` beside the same reads on the primary's pool alone, on a
//! private PostgreSQL primary and streaming replica the bench starts on loopback ports
//! (the harness of `tests/support/pg_replica.rs`).
//!
//! - `replica_reads_1_task`: one task, acquire + a primary-key `SELECT` per read.
//! - `replica_reads_8_tasks`: 8 concurrent tasks, per read.
//!
//! `primary_alone` reads on the primary's pool; `replicated_reader` takes the pool from
//! `ReplicatedPool::reader()` (round robin over serving replicas, here the one) for every
//! read, so the row also prices the choice. Skipped, with a line saying so, when the
//! PostgreSQL server binaries are missing. Run with
//! `cargo bench --bench replica --features postgres`.

mod support;

#[path = "../tests/support/pg_replica.rs"]
mod pg_replica;

use std::{hint::black_box, time::Instant};

use criterion::Criterion;
use perfkit::pool::{PgPool, PgPoolBuilder, ReplicatedPool, ReplicatedPoolBuilder};
use tokio::runtime::Runtime;

const ROWS: i64 = 1_000;
const GROUPS: [(&str, u64); 2] = [("replica_reads_1_task", 1), ("replica_reads_8_tasks", 8)];

async fn read(pool: &PgPool, id: i64) {
    let row: (i64, String) = sqlx::query_as("SELECT id, name FROM items WHERE id = $1")
        .bind(id)
        .fetch_one(&**pool)
        .await
        .expect("a row");
    black_box(row);
}

/// Total time of `iters` reads spread over `tasks` concurrent tasks.
async fn reads(pick: impl Fn() -> PgPool, tasks: u64, iters: u64) -> std::time::Duration {
    let per_task = iters.div_ceil(tasks);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let pools: Vec<PgPool> = (0..per_task).map(|_| pick()).collect();
        handles.push(tokio::spawn(async move {
            for (i, pool) in pools.iter().enumerate() {
                read(pool, (task as i64 * 37 + i as i64) % ROWS + 1).await;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a reader");
    }
    started
        .elapsed()
        .mul_f64(iters as f64 / (per_task * tasks) as f64)
}

fn bench(c: &mut Criterion, rt: &Runtime, pool: &ReplicatedPool) {
    let primary = pool.primary().clone();
    for (group_name, tasks) in GROUPS {
        let mut group = c.benchmark_group(group_name);
        group.bench_function("primary_alone", |b| {
            b.to_async(rt)
                .iter_custom(|iters| reads(|| primary.clone(), tasks, iters));
        });
        group.bench_function("replicated_reader", |b| {
            b.to_async(rt)
                .iter_custom(|iters| reads(|| pool.reader().clone(), tasks, iters));
        });
        group.finish();
        support::print_ratios(group_name, "primary_alone", &["replicated_reader"]);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(set) = rt.block_on(pg_replica::PgReplicaSet::start("bench replica")) else {
        println!("skipped replica benches: no PostgreSQL server binaries to build a replica");
        return;
    };
    let pool = rt.block_on(async {
        let pool = ReplicatedPoolBuilder::new(PgPoolBuilder::new(set.primary_url()))
            .replica_url(set.replica_url())
            .build()
            .await
            .expect("the replicated pool");
        sqlx::query("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
            .execute(&**pool.writer())
            .await
            .expect("the table");
        sqlx::query("INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, $1) i")
            .bind(ROWS)
            .execute(&**pool.writer())
            .await
            .expect("the rows");
        // Every read below must be answered by the replica: wait until it holds the rows and
        // the pool serves from it.
        let replica = pool.replicas().next().expect("one replica").clone();
        loop {
            let count: Result<(i64,), _> = sqlx::query_as("SELECT count(*) FROM items")
                .fetch_one(&*replica)
                .await;
            if matches!(count, Ok((n,)) if n == ROWS) && pool.is_serving(0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (in_recovery,): (bool,) = sqlx::query_as("SELECT pg_is_in_recovery()")
            .fetch_one(&**pool.reader())
            .await
            .expect("the reader answers");
        assert!(in_recovery, "the reader is the replica");
        pool
    });
    let mut c = support::criterion();
    bench(&mut c, &rt, &pool);
    c.final_summary();
    assert!(pool.is_serving(0), "the replica served throughout");
    rt.block_on(pool.close());
    drop(set);
}
