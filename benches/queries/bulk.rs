//! 10 000 rows in one transaction: row by row, hand-written `push_values` chunks,
//! hand-written `UNNEST` of one array per column (one statement, four binds), and
//! `BulkInsert`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use perfkit::bulk::BulkInsert;
use perfkit::pool::PgPool;
use sqlx::QueryBuilder;
use tokio::runtime::Runtime;

use super::setup::Bench;
use crate::support;

pub(crate) const GROUP: &str = "bulk_insert";

const ROWS: i64 = 10_000;
const CHUNK: usize = 1_000;

type Row = (i64, String, String, i32);

fn rows() -> Vec<Row> {
    (1..=ROWS)
        .map(|i| {
            (
                i,
                format!("User {i}"),
                format!("user{i}@example.com"),
                (i % 101) as i32,
            )
        })
        .collect()
}

async fn empty(pool: &PgPool) {
    sqlx::query("TRUNCATE bulk_target")
        .execute(&**pool)
        .await
        .unwrap();
}

/// Times `insert` only, emptying the table before each run.
async fn timed<F, Fut>(pool: &PgPool, iters: u64, insert: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        empty(pool).await;
        let started = Instant::now();
        insert().await;
        total += started.elapsed();
    }
    total
}

pub(crate) fn run(c: &mut Criterion, rt: &Runtime, bench: &Bench) {
    let pool = &bench.pool;
    let rows = rows();
    let mut group = c.benchmark_group(GROUP);
    group.sample_size(10);
    group.bench_function("row_by_row", |b| {
        b.to_async(rt).iter_custom(|iters| {
            timed(pool, iters, || async {
                let mut tx = pool.begin().await.unwrap();
                for (id, name, email, score) in &rows {
                    sqlx::query(
                        "INSERT INTO bulk_target (id, name, email, score) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(id)
                    .bind(name)
                    .bind(email)
                    .bind(score)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
            })
        })
    });
    group.bench_function("sqlx_push_values", |b| {
        b.to_async(rt).iter_custom(|iters| {
            timed(pool, iters, || async {
                let mut tx = pool.begin().await.unwrap();
                for chunk in rows.chunks(CHUNK) {
                    let mut query =
                        QueryBuilder::new("INSERT INTO bulk_target (id, name, email, score) ");
                    query.push_values(chunk, |mut b, (id, name, email, score)| {
                        b.push_bind(*id)
                            .push_bind(name.clone())
                            .push_bind(email.clone())
                            .push_bind(*score);
                    });
                    query.build().execute(&mut *tx).await.unwrap();
                }
                tx.commit().await.unwrap();
            })
        })
    });
    group.bench_function("sqlx_unnest", |b| {
        let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
        let names: Vec<String> = rows.iter().map(|row| row.1.clone()).collect();
        let emails: Vec<String> = rows.iter().map(|row| row.2.clone()).collect();
        let scores: Vec<i32> = rows.iter().map(|row| row.3).collect();
        let (ids, names, emails, scores) = (&ids, &names, &emails, &scores);
        b.to_async(rt).iter_custom(|iters| {
            timed(pool, iters, || async move {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(
                    "INSERT INTO bulk_target (id, name, email, score) \
                     SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::INTEGER[])",
                )
                .bind(ids)
                .bind(names)
                .bind(emails)
                .bind(scores)
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
            })
        })
    });
    let insert = BulkInsert::new("bulk_target", &["id", "name", "email", "score"]);
    group.bench_function("bulk_insert", |b| {
        b.to_async(rt).iter_custom(|iters| {
            timed(pool, iters, || async {
                let written = insert
                    .execute(pool, &rows, |mut b, (id, name, email, score)| {
                        b.push_bind(*id)
                            .push_bind(name.clone())
                            .push_bind(email.clone())
                            .push_bind(*score);
                    })
                    .await
                    .unwrap();
                black_box(written);
            })
        })
    });
    group.finish();
    support::print_ratios(
        GROUP,
        "sqlx_push_values",
        &["bulk_insert", "sqlx_unnest", "row_by_row"],
    );
}
