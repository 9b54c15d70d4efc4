//! The store inside the memory backend: moka (per-entry expiry) against quick_cache, both
//! holding `Arc<Entry>` values weighed by bytes, as the backend would.

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::Criterion;
use perfkit::cache::{Entry, EntryMeta, Value};
use quick_cache::Weighter;
use tokio::runtime::Runtime;

use super::records::records;
use crate::support;

const GROUP_GET: &str = "cache_store_get";
const GROUP_CHURN: &str = "cache_store_insert_evict";
const CAPACITY: usize = 10_000;
const WEIGHT: u32 = 2_000;

struct Ttl;

impl moka::Expiry<Arc<str>, Arc<Entry>> for Ttl {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        _value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

#[derive(Clone)]
struct Bytes;

impl Weighter<Arc<str>, Arc<Entry>> for Bytes {
    fn weight(&self, _key: &Arc<str>, _value: &Arc<Entry>) -> u64 {
        u64::from(WEIGHT)
    }
}

fn entry() -> Arc<Entry> {
    Arc::new(Entry {
        value: Value::from_decoded(Arc::new(records())),
        meta: EntryMeta::default(),
        tags: Box::new([]),
    })
}

fn moka_store() -> moka::sync::Cache<Arc<str>, Arc<Entry>> {
    moka::sync::Cache::builder()
        .max_capacity(CAPACITY as u64 * u64::from(WEIGHT))
        .weigher(|_key, _value| WEIGHT)
        .expire_after(Ttl)
        .build()
}

fn quick_store() -> quick_cache::sync::Cache<Arc<str>, Arc<Entry>, Bytes> {
    quick_cache::sync::Cache::with_weighter(CAPACITY, CAPACITY as u64 * u64::from(WEIGHT), Bytes)
}

fn keys(n: usize) -> Vec<Arc<str>> {
    (0..n)
        .map(|i| Arc::from(format!("{{perfkit}}:k:users:{i}")))
        .collect()
}

pub(crate) fn run(c: &mut Criterion, _rt: &Runtime) {
    let entry = entry();
    let hot = keys(1_000);

    let mut group = c.benchmark_group(GROUP_GET);
    let moka = moka_store();
    let quick = quick_store();
    for key in &hot {
        moka.insert(key.clone(), entry.clone());
        quick.insert(key.clone(), entry.clone());
    }
    moka.run_pending_tasks();
    group.bench_function("moka", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % hot.len();
            black_box(moka.get(&*hot[i]))
        })
    });
    group.bench_function("quick_cache", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % hot.len();
            black_box(quick.get(&*hot[i]))
        })
    });
    group.finish();

    // Inserting over a full store: every insert evicts.
    let churn = keys(4 * CAPACITY);
    let mut group = c.benchmark_group(GROUP_CHURN);
    let moka = moka_store();
    let quick = quick_store();
    group.bench_function("moka", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % churn.len();
            moka.insert(churn[i].clone(), entry.clone());
        })
    });
    group.bench_function("quick_cache", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % churn.len();
            quick.insert(churn[i].clone(), entry.clone());
        })
    });
    group.finish();

    support::print_ratios(GROUP_GET, "moka", &["quick_cache"]);
    support::print_ratios(GROUP_CHURN, "moka", &["quick_cache"]);
}
