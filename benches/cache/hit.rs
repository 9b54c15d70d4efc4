//! A hit on a 10-record value: perfkit's memory backend beside moka's `get`. Cloning the
//! value out dominates both; the `_u64` pair shows the fixed cost of each on a value that
//! is free to clone.

use std::{hint::black_box, time::Instant};

use criterion::Criterion;
use perfkit::cache::{Cache, EntryOptions};
use tokio::runtime::Runtime;

use super::records::{Record, records};
use crate::support;

const GROUP: &str = "cache_hit";

pub(crate) fn run(c: &mut Criterion, rt: &Runtime) {
    let value = records();
    let mut group = c.benchmark_group(GROUP);

    let moka: moka::sync::Cache<String, Vec<Record>> = moka::sync::Cache::new(10_000);
    moka.insert("users:list".to_owned(), value.clone());
    group.bench_function("moka_get", |b| {
        b.iter(|| black_box(moka.get(black_box("users:list"))))
    });

    for (id, tags) in [
        ("perfkit_get", &[][..]),
        ("perfkit_get_2_tags", &["users", "org:7"][..]),
    ] {
        let cache = Cache::builder().build().unwrap();
        rt.block_on(cache.set(
            "users:list",
            &value,
            EntryOptions::new().tags(tags.iter().copied()),
        ))
        .unwrap();
        group.bench_function(id, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let cache = cache.clone();
                async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        black_box(
                            cache
                                .get::<Vec<Record>>(black_box("users:list"))
                                .await
                                .unwrap(),
                        );
                    }
                    started.elapsed()
                }
            })
        });
    }

    let cache = Cache::builder().build().unwrap();
    rt.block_on(cache.set("users:list", &value, EntryOptions::new()))
        .unwrap();
    group.bench_function("perfkit_get_or_compute", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let cache = cache.clone();
            async move {
                let started = Instant::now();
                for _ in 0..iters {
                    let value = cache
                        .get_or_compute("users:list", EntryOptions::new(), || async {
                            Ok::<_, String>(records())
                        })
                        .await
                        .unwrap();
                    black_box(value);
                }
                started.elapsed()
            }
        })
    });

    let moka_small: moka::sync::Cache<String, u64> = moka::sync::Cache::new(10_000);
    moka_small.insert("counter".to_owned(), 7);
    group.bench_function("moka_get_u64", |b| {
        b.iter(|| black_box(moka_small.get(black_box("counter"))))
    });
    let cache = Cache::builder().build().unwrap();
    rt.block_on(cache.set("counter", &7u64, EntryOptions::new()))
        .unwrap();
    group.bench_function("perfkit_get_u64", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let cache = cache.clone();
            async move {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(cache.get::<u64>(black_box("counter")).await.unwrap());
                }
                started.elapsed()
            }
        })
    });
    group.finish();

    support::print_versus(GROUP, "perfkit_get_u64", "moka_get_u64");
    support::print_ratios(
        GROUP,
        "moka_get",
        &[
            "perfkit_get",
            "perfkit_get_2_tags",
            "perfkit_get_or_compute",
        ],
    );
}
