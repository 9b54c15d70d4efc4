//! The progress of 100 users: one query per user, one hand-written `ANY` query, `load_many`
//! and a `DataLoader`.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::Criterion;
use perfkit::eager::{self, DataLoader, Relation};
use tokio::runtime::Runtime;

use super::setup::{Bench, Progress, SELECT_PROGRESS};
use crate::support;

pub(crate) const GROUP: &str = "eager_load";

/// The users whose progress is read: 100 spread over the table.
fn users() -> Vec<i64> {
    (0..100).map(|i| i * 97 + 13).collect()
}

pub(crate) fn run(c: &mut Criterion, rt: &Runtime, bench: &Bench) {
    let pool = &bench.pool;
    let users = users();
    let relation = Relation::new(SELECT_PROGRESS, "user_id");
    let mut group = c.benchmark_group(GROUP);
    group.bench_function("n_plus_one", |b| {
        b.to_async(rt).iter(|| async {
            let mut by_user = Vec::with_capacity(users.len());
            for &user in &users {
                let rows: Vec<Progress> = sqlx::query_as(
                    "SELECT id, user_id, lesson, score FROM user_progress WHERE user_id = $1",
                )
                .bind(user)
                .fetch_all(&**pool)
                .await
                .unwrap();
                by_user.push(rows);
            }
            black_box(by_user)
        })
    });
    group.bench_function("sqlx_any", |b| {
        b.to_async(rt).iter(|| async {
            let rows: Vec<Progress> = sqlx::query_as(
                "SELECT id, user_id, lesson, score FROM user_progress WHERE user_id = ANY($1)",
            )
            .bind(&users)
            .fetch_all(&**pool)
            .await
            .unwrap();
            let mut by_user: HashMap<i64, Vec<Progress>> = HashMap::with_capacity(users.len());
            for row in rows {
                by_user.entry(row.1).or_default().push(row);
            }
            black_box(by_user)
        })
    });
    group.bench_function("load_many", |b| {
        b.to_async(rt).iter(|| async {
            let loaded: eager::Loaded<i64, Progress> =
                eager::load_many(pool, &users, |&u| u, &relation)
                    .await
                    .unwrap();
            black_box(loaded)
        })
    });
    group.bench_function("data_loader", |b| {
        b.to_async(rt).iter(|| async {
            // A fresh loader per iteration, as per request: nothing is remembered between.
            let loader: DataLoader<i64, Vec<Progress>, eager::Error> =
                DataLoader::children(pool.sqlx().clone(), relation.clone());
            let loaded = loader.load_all(users.iter().copied()).await.unwrap();
            black_box(loaded)
        })
    });
    group.finish();
    support::print_ratios(
        GROUP,
        "sqlx_any",
        &["load_many", "data_loader", "n_plus_one"],
    );
}
