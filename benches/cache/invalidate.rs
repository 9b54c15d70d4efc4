//! `invalidate_tags` costs the same whatever the number of tagged entries.

use criterion::Criterion;
use perfkit::cache::{Cache, EntryOptions};
use tokio::runtime::Runtime;

use crate::support;

const GROUP: &str = "cache_invalidate";

pub(crate) fn run(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group(GROUP);
    for (id, entries) in [("10_entries", 10u64), ("100k_entries", 100_000)] {
        let cache = Cache::builder().max_entries(200_000).build().unwrap();
        rt.block_on(async {
            for i in 0..entries {
                let options = EntryOptions::new().tag("users");
                cache.set(&format!("user:{i}"), &i, options).await.unwrap();
            }
        });
        group.bench_function(id, |b| {
            b.to_async(rt)
                .iter(|| async { cache.invalidate_tags(&["users"]).await.unwrap() })
        });
    }
    group.finish();
    support::print_ratios(GROUP, "10_entries", &["100k_entries"]);
}
