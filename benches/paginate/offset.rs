//! OFFSET pages: hand-written sqlx beside `paginate` with a provided total, so both run
//! the same one statement and the difference is perfkit's own work.

use std::hint::black_box;

use criterion::Criterion;
use perfkit::paginate::{Count, Page, PageParams, paginate};
use sqlx::QueryBuilder;
use tokio::runtime::Runtime;

use super::setup::{Bench, DEPTHS, PAGE_SIZE, SELECT, USERS, User};
use crate::support;

pub(crate) const GROUP: &str = "paginate_offset";

pub(crate) fn run(c: &mut Criterion, rt: &Runtime, bench: &Bench) {
    let pool = &bench.pool;
    let mut group = c.benchmark_group(GROUP);
    for depth in DEPTHS {
        let offset = ((depth - 1) * PAGE_SIZE) as i64;
        let sql = format!("{SELECT} ORDER BY created_at, id LIMIT $1 OFFSET $2");
        group.bench_function(format!("sqlx_depth_{depth}"), |b| {
            b.to_async(rt).iter(|| async {
                let users: Vec<User> = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(PAGE_SIZE as i64)
                    .bind(offset)
                    .fetch_all(&**pool)
                    .await
                    .unwrap();
                black_box(users)
            })
        });
        group.bench_function(format!("perfkit_depth_{depth}"), |b| {
            b.to_async(rt).iter(|| async {
                let mut query = QueryBuilder::new(SELECT);
                query.push(" ORDER BY created_at, id");
                let page: Page<User> = paginate(
                    pool,
                    query,
                    PageParams::new(depth, PAGE_SIZE),
                    Count::Provided(USERS as u64),
                )
                .await
                .unwrap();
                black_box(page)
            })
        });
    }
    group.finish();
    for depth in DEPTHS {
        support::print_ratios(
            GROUP,
            &format!("sqlx_depth_{depth}"),
            &[&format!("perfkit_depth_{depth}")],
        );
    }
}
