//! Keyset pages at the depths of the OFFSET ones: hand-written sqlx beside
//! `Keyset::fetch`, both reading 51 rows past the boundary row.

use std::hint::black_box;

use criterion::Criterion;
use perfkit::paginate::{CursorKey, Keyset, KeysetPage, KeysetParams};
use sqlx::QueryBuilder;
use tokio::runtime::Runtime;

use super::{
    offset,
    setup::{Bench, DEPTHS, PAGE_SIZE, SELECT, User},
};
use crate::support;

const GROUP: &str = "paginate_keyset";

pub(crate) fn run(c: &mut Criterion, rt: &Runtime, bench: &Bench) {
    let pool = &bench.pool;
    let keyset = Keyset::builder()
        .asc("created_at")
        .unique("id")
        .cursor_key(CursorKey::random())
        .build()
        .unwrap();
    let mut group = c.benchmark_group(GROUP);
    for depth in DEPTHS {
        // The boundary: the last row of the page before, as hand-written code keeps it, and
        // the cursor perfkit handed out with that page (reached by walking to it).
        let (cursor, boundary) = rt.block_on(async {
            let mut params = KeysetParams::first(PAGE_SIZE);
            let mut last: Option<(String, i64)> = None;
            for _ in 1..depth {
                let page: KeysetPage<User> = keyset
                    .fetch(pool, QueryBuilder::new(SELECT), &params)
                    .await
                    .unwrap();
                let user = page.items.last().unwrap();
                last = Some((user.created_at.clone(), user.id));
                params = KeysetParams::after(page.next_cursor.unwrap(), PAGE_SIZE);
            }
            (params, last)
        });
        group.bench_function(format!("sqlx_depth_{depth}"), |b| {
            b.to_async(rt).iter(|| async {
                let mut users: Vec<User> = match &boundary {
                    Some((created_at, id)) => sqlx::query_as(
                        "SELECT id, name, email, created_at FROM users \
                         WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3",
                    )
                    .bind(created_at)
                    .bind(id)
                    .bind(PAGE_SIZE as i64 + 1)
                    .fetch_all(&**pool)
                    .await
                    .unwrap(),
                    None => sqlx::query_as(
                        "SELECT id, name, email, created_at FROM users \
                         ORDER BY created_at, id LIMIT $1",
                    )
                    .bind(PAGE_SIZE as i64 + 1)
                    .fetch_all(&**pool)
                    .await
                    .unwrap(),
                };
                let has_more = users.len() as u64 > PAGE_SIZE;
                users.truncate(PAGE_SIZE as usize);
                black_box((users, has_more))
            })
        });
        group.bench_function(format!("perfkit_depth_{depth}"), |b| {
            b.to_async(rt).iter(|| async {
                let page: KeysetPage<User> = keyset
                    .fetch(pool, QueryBuilder::new(SELECT), &cursor)
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
    // Keyset against the OFFSET "before", depth by depth.
    for depth in DEPTHS {
        if let (Some(offset_ns), Some(keyset_ns)) = (
            support::estimate_ns(offset::GROUP, &format!("sqlx_depth_{depth}")),
            support::estimate_ns(GROUP, &format!("perfkit_depth_{depth}")),
        ) {
            println!(
                "  depth {depth}: OFFSET (sqlx) {:.3} ms, keyset (perfkit) {:.3} ms, {:.1}x faster",
                offset_ns / 1e6,
                keyset_ns / 1e6,
                offset_ns / keyset_ns
            );
        }
    }
}
