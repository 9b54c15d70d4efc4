//! What each count strategy adds to page 1: the page alone (`provided`), beside
//! `exact`, `inline`, `estimated` and `none`, and a hand-written `SELECT COUNT(*)` alone.

use std::hint::black_box;

use criterion::Criterion;
use perfkit::paginate::{Count, Page, PageParams, paginate};
use sqlx::QueryBuilder;
use tokio::runtime::Runtime;

use super::setup::{Bench, PAGE_SIZE, SELECT, USERS, User};
use crate::support;

const GROUP: &str = "paginate_count";

pub(crate) fn run(c: &mut Criterion, rt: &Runtime, bench: &Bench) {
    let pool = &bench.pool;
    let mut group = c.benchmark_group(GROUP);
    let strategies = [
        ("provided", Count::Provided(USERS as u64)),
        ("none", Count::None),
        ("estimated", Count::Estimated),
        ("exact", Count::Exact),
        ("inline", Count::Inline),
    ];
    for (id, count) in strategies {
        group.bench_function(id, |b| {
            b.to_async(rt).iter(|| async {
                let mut query = QueryBuilder::new(SELECT);
                query.push(" ORDER BY created_at, id");
                let page: Page<User> = paginate(pool, query, PageParams::new(1, PAGE_SIZE), count)
                    .await
                    .unwrap();
                black_box(page)
            })
        });
    }
    group.bench_function("sqlx_count_alone", |b| {
        b.to_async(rt).iter(|| async {
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&**pool)
                .await
                .unwrap();
            black_box(total)
        })
    });
    group.finish();
    support::print_ratios(
        GROUP,
        "provided",
        &["none", "estimated", "exact", "inline", "sqlx_count_alone"],
    );
}
