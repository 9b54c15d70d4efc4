//! `perfkit::cache` over the memory backend: expiry, tags, the invalidation race,
//! single-flight, freshness windows, corrupt bytes, bounds, odd keys, degradation, stats.
#![cfg(feature = "cache")]

mod support;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use perfkit::cache::{
    Backend, BackendError, Cache, Decoder, Entry, EntryMeta, EntryOptions, Epoch, Error, Key,
    KeyPrefix, MemoryBackend, Source, Tag, Value, now_ms,
};
use serde::{Deserialize, Serialize};
use support::capture::Capture;
use tokio::{sync::oneshot, task::JoinSet, time::sleep};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn cache() -> Cache {
    Cache::builder().build().unwrap()
}

/// A computation that counts its runs and returns `value` after `delay`.
fn counted<T: Clone + Send + 'static>(
    runs: &Arc<AtomicUsize>,
    delay: Duration,
    value: T,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<T, String>> + Send>> + Send + 'static
{
    let runs = Arc::clone(runs);
    move || {
        Box::pin(async move {
            runs.fetch_add(1, SeqCst);
            sleep(delay).await;
            Ok(value)
        })
    }
}

/// A computation that counts its runs and fails after `delay`.
fn failing<T: Send + 'static>(
    runs: &Arc<AtomicUsize>,
    delay: Duration,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<T, String>> + Send>> + Send + 'static
{
    let runs = Arc::clone(runs);
    move || {
        Box::pin(async move {
            runs.fetch_add(1, SeqCst);
            sleep(delay).await;
            Err("database down".to_owned())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl() {
    let cache = cache();
    cache
        .set("u", &user(1), EntryOptions::new().ttl(secs(10)))
        .await
        .unwrap();
    cache.set("d", &user(2), EntryOptions::new()).await.unwrap();
    tokio::time::advance(secs(9)).await;
    assert_eq!(cache.get::<User>("u").await.unwrap(), Some(user(1)));
    tokio::time::advance(secs(2)).await;
    assert_eq!(cache.get::<User>("u").await.unwrap(), None);
    // The default TTL is 300 s.
    assert_eq!(cache.get::<User>("d").await.unwrap(), Some(user(2)));
    tokio::time::advance(secs(290)).await;
    assert_eq!(cache.get::<User>("d").await.unwrap(), None);
}

#[tokio::test]
async fn invalidating_a_tag_drops_its_10k_entries_and_nothing_else() {
    let cache = Cache::builder().max_entries(30_000).build().unwrap();
    for id in 0..10_000u64 {
        let options = EntryOptions::new().tags(["users", &format!("user:{id}")]);
        cache
            .set(&format!("user:{id}"), &id, options)
            .await
            .unwrap();
    }
    for id in 0..100u64 {
        let options = EntryOptions::new().tag("orders");
        cache
            .set(&format!("order:{id}"), &id, options)
            .await
            .unwrap();
    }
    assert_eq!(cache.get::<u64>("user:9999").await.unwrap(), Some(9999));

    cache.invalidate_tags(&["users"]).await.unwrap();
    for id in 0..10_000 {
        assert_eq!(cache.get::<u64>(&format!("user:{id}")).await.unwrap(), None);
    }
    for id in 0..100 {
        assert_eq!(
            cache.get::<u64>(&format!("order:{id}")).await.unwrap(),
            Some(id)
        );
    }

    // New entries under the tag are valid again.
    cache
        .set("user:1", &1u64, EntryOptions::new().tag("users"))
        .await
        .unwrap();
    assert_eq!(cache.get::<u64>("user:1").await.unwrap(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_value_computed_before_an_invalidation_is_never_served_after_it() {
    let cache = cache();
    let (started_tx, started_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let computing = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_compute(
                    "report",
                    EntryOptions::new().tag("sales"),
                    move || async move {
                        // Reads the old data, then is slow to finish.
                        let _ = started_tx.send(());
                        let _ = finish_rx.await;
                        Ok::<_, String>("computed from old data".to_owned())
                    },
                )
                .await
        })
    };
    started_rx.await.unwrap();
    // The data changes while the computation runs; the invalidation returns before the
    // computation stores its value.
    cache.invalidate_tags(&["sales"]).await.unwrap();
    finish_tx.send(()).unwrap();
    assert_eq!(computing.await.unwrap().unwrap(), "computed from old data");

    assert_eq!(cache.get::<String>("report").await.unwrap(), None);
    let runs = Arc::new(AtomicUsize::new(0));
    let fresh = cache
        .get_or_compute(
            "report",
            EntryOptions::new().tag("sales"),
            counted(&runs, Duration::ZERO, "computed from new data".to_owned()),
        )
        .await
        .unwrap();
    assert_eq!(fresh, "computed from new data");
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(
        cache.get::<String>("report").await.unwrap().as_deref(),
        Some("computed from new data")
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_after_an_invalidation_never_joins_a_computation_that_predates_it() {
    let cache = cache();
    let (started_tx, started_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let options = EntryOptions::new().tag("sales");
    let first = {
        let (cache, options) = (cache.clone(), options.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute("report", options, move || async move {
                    let _ = started_tx.send(());
                    let _ = finish_rx.await;
                    Ok::<_, String>("old".to_owned())
                })
                .await
        })
    };
    started_rx.await.unwrap();
    cache.invalidate_tags(&["sales"]).await.unwrap();

    // Starts after the invalidation returned, while the old computation is in flight.
    let runs = Arc::new(AtomicUsize::new(0));
    let second = {
        let cache = cache.clone();
        let compute = counted(&runs, Duration::from_millis(10), "new".to_owned());
        tokio::spawn(async move { cache.get_or_compute("report", options, compute).await })
    };
    sleep(Duration::from_millis(1)).await;
    finish_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), "old");
    assert_eq!(second.await.unwrap().unwrap(), "new");
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(
        cache.get::<String>("report").await.unwrap().as_deref(),
        Some("new")
    );
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_callers_share_one_computation() {
    let cache = cache();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut callers = JoinSet::new();
    for _ in 0..100 {
        let cache = cache.clone();
        let compute = counted(&runs, Duration::from_millis(50), user(7));
        callers.spawn(async move {
            cache
                .get_or_compute("u7", EntryOptions::new(), compute)
                .await
        });
    }
    while let Some(result) = callers.join_next().await {
        assert_eq!(result.unwrap().unwrap(), user(7));
    }
    assert_eq!(runs.load(SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.computations, 1);
    assert_eq!(stats.misses, 100);
}

#[tokio::test(start_paused = true)]
async fn each_caller_learns_where_its_value_came_from_as_the_stats_count_it() {
    let cache = cache();
    let runs = Arc::new(AtomicUsize::new(0));
    let options = EntryOptions::new()
        .ttl(secs(10))
        .stale_while_revalidate(secs(60))
        .no_early_refresh();
    let mut callers = JoinSet::new();
    for _ in 0..20 {
        let cache = cache.clone();
        let compute = counted(&runs, Duration::from_millis(50), user(7));
        let options = options.clone();
        callers.spawn(async move {
            cache
                .get_or_compute_with_source("u7", options, compute)
                .await
        });
    }
    let mut sources = HashMap::new();
    while let Some(result) = callers.join_next().await {
        let (value, source) = result.unwrap().unwrap();
        assert_eq!(value, user(7));
        *sources.entry(source).or_insert(0) += 1;
    }
    assert_eq!(sources.get(&Source::Computed), Some(&1));
    assert_eq!(sources.get(&Source::Joined), Some(&19), "{sources:?}");
    assert_eq!(sources.get(&Source::Hit), None, "waiting is not a hit");
    assert_eq!(Source::Joined.x_cache(), "MISS");
    assert!(!Source::Joined.is_cached());

    let (_, source) = cache
        .get_or_compute_with_source("u7", options.clone(), counted(&runs, secs(1), user(8)))
        .await
        .unwrap();
    assert_eq!((source, source.x_cache()), (Source::Hit, "HIT"));

    tokio::time::advance(secs(15)).await;
    let (value, source) = cache
        .get_or_compute_with_source("u7", options, counted(&runs, secs(1), user(8)))
        .await
        .unwrap();
    assert_eq!(
        (value, source, source.x_cache()),
        (user(7), Source::Stale, "STALE")
    );

    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stale_serves), (1, 20, 1));
}

#[tokio::test(start_paused = true)]
async fn errors_are_shared_with_waiters_and_not_cached() {
    let cache = cache();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut callers = JoinSet::new();
    for _ in 0..100 {
        let cache = cache.clone();
        let compute = failing::<User>(&runs, Duration::from_millis(50));
        callers.spawn(async move {
            cache
                .get_or_compute("u", EntryOptions::new(), compute)
                .await
        });
    }
    while let Some(result) = callers.join_next().await {
        assert_eq!(*result.unwrap().unwrap_err(), "database down");
    }
    assert_eq!(runs.load(SeqCst), 1);

    // The error was not stored: the next call computes.
    let value = cache
        .get_or_compute(
            "u",
            EntryOptions::new(),
            counted(&runs, Duration::ZERO, user(1)),
        )
        .await
        .unwrap();
    assert_eq!(value, user(1));
    assert_eq!(runs.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    let cache = cache();
    let runs = Arc::new(AtomicUsize::new(0));
    let leader = {
        let cache = cache.clone();
        let compute = counted(&runs, secs(3600), user(1));
        tokio::spawn(async move {
            cache
                .get_or_compute("u", EntryOptions::new(), compute)
                .await
        })
    };
    sleep(Duration::from_millis(1)).await;
    assert_eq!(runs.load(SeqCst), 1);
    let mut waiters = JoinSet::new();
    for _ in 0..10 {
        let cache = cache.clone();
        let compute = counted(&runs, Duration::from_millis(10), user(2));
        waiters.spawn(async move {
            cache
                .get_or_compute("u", EntryOptions::new(), compute)
                .await
        });
    }
    sleep(Duration::from_millis(1)).await;
    leader.abort();
    let all = tokio::time::timeout(secs(60), async {
        while let Some(result) = waiters.join_next().await {
            assert_eq!(result.unwrap().unwrap(), user(2));
        }
    })
    .await;
    assert!(all.is_ok(), "waiters hung after their leader was cancelled");
    assert_eq!(runs.load(SeqCst), 2, "exactly one waiter took over");
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let cache = cache();
    let options = EntryOptions::new()
        .ttl(secs(10))
        .stale_while_revalidate(secs(60))
        .no_early_refresh();
    let runs = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_compute(
            "u",
            options.clone(),
            counted(&runs, Duration::ZERO, user(1)),
        )
        .await
        .unwrap();
    tokio::time::advance(secs(15)).await;

    for _ in 0..5 {
        let served = cache
            .get_or_compute("u", options.clone(), counted(&runs, secs(1), user(2)))
            .await
            .unwrap();
        assert_eq!(served, user(1), "the stale value is served at once");
    }
    assert_eq!(cache.stats().stale_serves, 5);
    // One background refresh, not five.
    sleep(secs(2)).await;
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(cache.get::<User>("u").await.unwrap(), Some(user(2)));

    // Past the window the value is gone: the caller waits for a new computation.
    tokio::time::advance(secs(100)).await;
    let served = cache
        .get_or_compute("u", options, counted(&runs, Duration::ZERO, user(3)))
        .await
        .unwrap();
    assert_eq!(served, user(3));
}

#[tokio::test(start_paused = true)]
async fn an_invalidated_entry_is_not_served_stale() {
    let cache = cache();
    let options = EntryOptions::new()
        .ttl(secs(10))
        .tag("users")
        .stale_while_revalidate(secs(60))
        .stale_if_error(secs(600));
    let runs = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_compute(
            "u",
            options.clone(),
            counted(&runs, Duration::ZERO, user(1)),
        )
        .await
        .unwrap();
    tokio::time::advance(secs(15)).await;
    cache.invalidate_tags(&["users"]).await.unwrap();

    // Within both windows, yet invalidated: the caller waits for a new value, and a
    // failing recomputation is an error, not the invalidated value.
    let error = cache
        .get_or_compute("u", options.clone(), failing::<User>(&runs, Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(*error, "database down");
    let served = cache
        .get_or_compute("u", options, counted(&runs, Duration::ZERO, user(2)))
        .await
        .unwrap();
    assert_eq!(served, user(2));
    assert_eq!(cache.stats().stale_serves, 0);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_stale_when_recomputing_fails() {
    let cache = cache();
    let options = EntryOptions::new()
        .ttl(secs(10))
        .stale_if_error(secs(60))
        .no_early_refresh();
    let runs = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_compute(
            "u",
            options.clone(),
            counted(&runs, Duration::ZERO, user(1)),
        )
        .await
        .unwrap();

    tokio::time::advance(secs(15)).await;
    let served = cache
        .get_or_compute("u", options.clone(), failing::<User>(&runs, Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(served, user(1));
    assert_eq!(runs.load(SeqCst), 2, "the value was recomputed first");
    assert_eq!(cache.stats().stale_serves, 1);

    // A successful recomputation replaces the stale value.
    let served = cache
        .get_or_compute(
            "u",
            options.clone(),
            counted(&runs, Duration::ZERO, user(2)),
        )
        .await
        .unwrap();
    assert_eq!(served, user(2));

    // Past the window the error reaches the caller.
    tokio::time::advance(secs(100)).await;
    let error = cache
        .get_or_compute("u", options, failing::<User>(&runs, Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(*error, "database down");
}

#[tokio::test(start_paused = true)]
async fn early_refresh_recomputes_before_expiry_in_proportion_to_the_compute_time() {
    let cache = cache();
    let runs = Arc::new(AtomicUsize::new(0));
    // Takes 1 s to compute, fresh for 10 s.
    let options = EntryOptions::new().ttl(secs(10)).early_refresh(100.0);
    cache
        .get_or_compute("slow", options.clone(), counted(&runs, secs(1), user(1)))
        .await
        .unwrap();
    // Just before expiry with a high beta a refresh is all but certain, and the caller
    // still gets the current value at once.
    tokio::time::advance(Duration::from_millis(9_999)).await;
    let served = cache
        .get_or_compute("slow", options.clone(), counted(&runs, secs(1), user(2)))
        .await
        .unwrap();
    assert_eq!(served, user(1));
    sleep(secs(2)).await;
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(cache.get::<User>("slow").await.unwrap(), Some(user(2)));

    // With early refresh off, nothing happens before expiry.
    let off = EntryOptions::new().ttl(secs(10)).no_early_refresh();
    cache
        .get_or_compute("off", off.clone(), counted(&runs, secs(1), user(1)))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(9_990)).await;
    for _ in 0..100 {
        cache
            .get_or_compute("off", off.clone(), counted(&runs, secs(1), user(2)))
            .await
            .unwrap();
    }
    assert_eq!(runs.load(SeqCst), 3);

    // A cheap value far from expiry is not refreshed early with the default beta.
    let cheap = EntryOptions::new().ttl(secs(300));
    cache
        .get_or_compute(
            "cheap",
            cheap.clone(),
            counted(&runs, Duration::from_millis(1), 1u8),
        )
        .await
        .unwrap();
    for _ in 0..1000 {
        cache
            .get_or_compute("cheap", cheap.clone(), counted(&runs, Duration::ZERO, 2u8))
            .await
            .unwrap();
    }
    sleep(secs(1)).await;
    assert_eq!(runs.load(SeqCst), 4);
}

/// A backend keeping only encoded bytes, like a remote store, so tests can put any bytes
/// under a key; and failing every call when `down` is set.
#[derive(Debug, Default, Clone)]
struct BytesBackend(Arc<BytesInner>);

#[derive(Debug, Default)]
struct BytesInner {
    entries: Mutex<HashMap<String, (Bytes, EntryMeta)>>,
    down: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for BytesBackend {
    type Target = BytesInner;
    fn deref(&self) -> &BytesInner {
        &self.0
    }
}

impl BytesInner {
    fn check(&self) -> Result<(), BackendError> {
        if self.down.load(SeqCst) {
            return Err(BackendError::new("bytes", "connection refused"));
        }
        Ok(())
    }

    fn put_raw(&self, key: &str, bytes: &'static [u8]) {
        let meta = EntryMeta {
            fresh_until: now_ms() + 60_000,
            stale_while_revalidate_until: 0,
            stale_if_error_until: 0,
            compute_ms: 0,
        };
        self.entries.lock().unwrap().insert(
            format!("{{perfkit}}:k:{key}"),
            (Bytes::from_static(bytes), meta),
        );
    }

    fn contains(&self, key: &str) -> bool {
        self.entries
            .lock()
            .unwrap()
            .contains_key(&format!("{{perfkit}}:k:{key}"))
    }
}

#[async_trait]
impl Backend for BytesBackend {
    async fn get(&self, key: &Key, _decode: Decoder) -> Result<Option<Arc<Entry>>, BackendError> {
        self.check()?;
        let entries = self.entries.lock().unwrap();
        Ok(entries.get(key.as_str()).map(|(bytes, meta)| {
            Arc::new(Entry {
                value: Value::from_encoded(bytes.clone()),
                meta: *meta,
                tags: Box::new([]),
            })
        }))
    }

    async fn set(&self, key: &Key, entry: Entry) -> Result<(), BackendError> {
        self.check()?;
        let bytes = entry.value.encoded().cloned().unwrap_or_default();
        self.entries
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned(), (bytes, entry.meta));
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.check()?;
        self.entries.lock().unwrap().remove(key.as_str());
        Ok(())
    }

    async fn delete_prefix(&self, _prefix: &KeyPrefix) -> Result<u64, BackendError> {
        self.check()?;
        Ok(0)
    }

    async fn tag_epochs(&self, tags: &[Tag]) -> Result<Vec<Epoch>, BackendError> {
        self.check()?;
        Ok(tags.iter().map(|_| Epoch::from_u128(1)).collect())
    }

    async fn invalidate_tags(&self, _tags: &[Tag]) -> Result<(), BackendError> {
        self.check()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn corrupt_or_foreign_bytes_are_a_logged_miss_and_are_removed() {
    let (logs, _guard) = Capture::install();
    let backend = BytesBackend::default();
    let cache = Cache::builder().backend(backend.clone()).build().unwrap();

    backend.put_raw("json", br#"{"id":1,"name":"x"}"#);
    backend.put_raw("truncated", &[0x01, 0x82, 0xa2]);
    backend.put_raw("deflate", &[0x81, 0xff, 0xff, 0xff]);
    for key in ["json", "truncated", "deflate"] {
        assert_eq!(cache.get::<User>(key).await.unwrap(), None, "{key}");
        assert!(!backend.contains(key), "{key} was removed");
    }
    assert_eq!(cache.stats().errors, 3);
    assert_eq!(cache.stats().misses, 3);
    let warnings = logs.warnings_containing("does not decode");
    assert_eq!(
        warnings.len(),
        1,
        "one line, the others held back: {warnings:?}"
    );

    // Encoded values round-trip through a bytes-only backend, and a bad key is recomputed.
    backend.put_raw("u", b"\xc1");
    let value = cache
        .get_or_compute("u", EntryOptions::new(), || async {
            Ok::<_, String>(user(5))
        })
        .await
        .unwrap();
    assert_eq!(value, user(5));
    assert_eq!(cache.get::<User>("u").await.unwrap(), Some(user(5)));
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_backend_degrades_reads_and_writes_and_reports_invalidations() {
    let (logs, _guard) = Capture::install();
    let backend = BytesBackend::default();
    let cache = Cache::builder().backend(backend.clone()).build().unwrap();
    backend.down.store(true, SeqCst);

    for _ in 0..100 {
        assert_eq!(cache.get::<User>("u").await.unwrap(), None);
    }
    cache
        .set("u", &user(1), EntryOptions::new().tag("t"))
        .await
        .unwrap();
    cache.set("u", &user(1), EntryOptions::new()).await.unwrap();
    let value = cache
        .get_or_compute("u", EntryOptions::new(), || async {
            Ok::<_, String>(user(2))
        })
        .await
        .unwrap();
    assert_eq!(value, user(2));
    assert!(matches!(
        cache.invalidate_tags(&["t"]).await,
        Err(Error::Backend(_))
    ));
    assert!(matches!(cache.delete("u").await, Err(Error::Backend(_))));

    assert_eq!(logs.warnings_containing("cache read failed").len(), 1);
    assert_eq!(logs.warnings_containing("cache write skipped").len(), 1);
    assert!(cache.stats().errors >= 103);

    backend.down.store(false, SeqCst);
    cache.set("u", &user(3), EntryOptions::new()).await.unwrap();
    assert_eq!(cache.get::<User>("u").await.unwrap(), Some(user(3)));
}

#[tokio::test]
async fn the_memory_backend_holds_its_entry_bound() {
    let backend = MemoryBackend::builder().max_entries(100).build();
    let cache = Cache::builder().backend(backend.clone()).build().unwrap();
    for id in 0..5_000u64 {
        cache
            .set(&format!("k{id}"), &id, EntryOptions::new())
            .await
            .unwrap();
        assert!(backend.len() <= 100, "{} entries", backend.len());
    }
    assert!(backend.len() >= 50, "the bound is used: {}", backend.len());
}

#[tokio::test]
async fn the_memory_backend_holds_its_byte_bound() {
    const MAX_BYTES: u64 = 256 * 1024;
    let backend = MemoryBackend::builder()
        .max_entries(100_000)
        .max_bytes(MAX_BYTES)
        .build();
    let cache = Cache::builder()
        .backend(backend.clone())
        .compression_threshold(usize::MAX)
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    for id in 0..2_000u64 {
        let value: String = (0..4096).map(|_| rng.alphanumeric()).collect();
        cache
            .set(&format!("k{id}"), &value, EntryOptions::new())
            .await
            .unwrap();
        assert!(backend.weight() <= MAX_BYTES, "{} bytes", backend.weight());
    }
    // 4 KiB values: about 64 fit, and far fewer than the entry bound.
    assert!(backend.len() <= 64, "{} entries", backend.len());
    assert!(backend.len() >= 16, "the bound is used: {}", backend.len());
}

#[tokio::test]
async fn an_evicted_tag_epoch_counts_as_invalidated() {
    let backend = MemoryBackend::builder().max_tags(10).build();
    let cache = Cache::builder().backend(backend.clone()).build().unwrap();
    cache
        .set("a", &1u8, EntryOptions::new().tag("a"))
        .await
        .unwrap();
    // Thousands of other tags, each in use, push the epoch of `a` out of the bounded table.
    for id in 0..5_000 {
        let key = format!("k{id}");
        let options = EntryOptions::new().tag(format!("t{id}"));
        cache.set(&key, &0u8, options).await.unwrap();
        assert_eq!(cache.get::<u8>(&key).await.unwrap(), Some(0));
        assert_eq!(cache.get::<u8>(&key).await.unwrap(), Some(0));
    }
    assert!(backend.tags_len() <= 20, "{} tags", backend.tags_len());
    assert_eq!(cache.get::<u8>("a").await.unwrap(), None);
    // Re-tagging after the eviction starts a new epoch: no resurrection, new values work.
    cache
        .set("a", &2u8, EntryOptions::new().tag("a"))
        .await
        .unwrap();
    assert_eq!(cache.get::<u8>("a").await.unwrap(), Some(2));
}

#[tokio::test]
async fn any_string_is_a_key_and_prefix_invalidation_reaches_hashed_keys() {
    let cache = cache();
    let long = format!("users:{}", "x".repeat(10_000));
    let keys = [
        "users:1",
        "users:a b",
        "users:*",
        "users:?",
        "users:[a-z]",
        "users:\n\t\0",
        "users:é",
        "users:#",
        "users:{tag}",
        long.as_str(),
        "other:a b",
        "",
        " ",
    ];
    for (i, key) in keys.iter().enumerate() {
        cache.set(key, &i, EntryOptions::new()).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cache.get::<usize>(key).await.unwrap(), Some(i), "{key:?}");
    }
    // `users:*` is a key, not a pattern: deleting it deletes only it.
    cache.delete("users:*").await.unwrap();
    assert_eq!(cache.get::<usize>("users:*").await.unwrap(), None);
    assert_eq!(cache.get::<usize>("users:1").await.unwrap(), Some(0));

    let removed = cache.invalidate_prefix("users:").await.unwrap();
    assert_eq!(removed, 9);
    for key in &keys[..10] {
        assert_eq!(cache.get::<usize>(key).await.unwrap(), None, "{key:?}");
    }
    assert_eq!(cache.get::<usize>("other:a b").await.unwrap(), Some(10));
    assert_eq!(cache.get::<usize>("").await.unwrap(), Some(11));
}

#[tokio::test]
async fn stats_count_every_lookup_once_and_report_latency() {
    let cache = cache();
    cache.set("a", &1u8, EntryOptions::new()).await.unwrap();
    for _ in 0..3 {
        cache.get::<u8>("a").await.unwrap();
    }
    cache.get::<u8>("missing").await.unwrap();
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.stale_serves), (3, 1, 0));
    assert_eq!(stats.hit_rate, 0.75);
    assert_eq!(stats.lookups, 4);
    assert!(stats.lookup_p50_ms > 0.0 && stats.lookup_p50_ms <= stats.lookup_max_ms);
    let json = serde_json::to_value(stats).unwrap();
    for field in ["hits", "misses", "stale_serves", "errors", "hit_rate"] {
        assert!(json.get(field).is_some(), "{field}");
    }
    assert!(json.get("lookup_p99_ms").is_some());
}

#[tokio::test]
async fn one_key_used_with_two_types_is_a_miss_not_a_panic() {
    let cache = cache();
    cache.set("k", &user(1), EntryOptions::new()).await.unwrap();
    assert_eq!(cache.get::<String>("k").await.unwrap(), None);
    assert_eq!(
        cache.get::<User>("k").await.unwrap(),
        None,
        "the entry was removed"
    );
}

#[tokio::test(start_paused = true)]
async fn warm_fills_keys_with_bounded_concurrency() {
    let cache = Cache::builder().warm_concurrency(4).build().unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let items = (0..50u64).map(|id| {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        let compute = move || async move {
            let now = running.fetch_add(1, SeqCst) + 1;
            peak.fetch_max(now, SeqCst);
            sleep(Duration::from_millis(10)).await;
            running.fetch_sub(1, SeqCst);
            if id == 13 {
                Err("no such user".to_owned())
            } else {
                Ok(user(id))
            }
        };
        (format!("user:{id}"), EntryOptions::new(), compute)
    });
    let report = cache.warm(items).await;
    assert_eq!((report.filled, report.failed), (49, 1));
    assert_eq!(peak.load(SeqCst), 4);
    assert_eq!(cache.get::<User>("user:49").await.unwrap(), Some(user(49)));
}

#[test]
fn bad_configuration_is_an_error_that_names_the_fix() {
    let error = Cache::builder().prefix("my app").build().unwrap_err();
    assert!(matches!(error, Error::Config(_)));
    assert!(error.to_string().contains("prefix"));
    let error = Cache::builder()
        .default_ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("CACHE_DEFAULT_TTL"));
}

static DECODES: AtomicUsize = AtomicUsize::new(0);

/// A value that counts how often it is deserialized.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Counted(u64);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, SeqCst);
        u64::deserialize(deserializer).map(Counted)
    }
}

#[tokio::test]
async fn a_memory_hit_never_deserializes() {
    let cache = cache();
    cache
        .set("c", &Counted(9), EntryOptions::new())
        .await
        .unwrap();
    cache
        .get_or_compute("d", EntryOptions::new(), || async {
            Ok::<_, String>(Counted(10))
        })
        .await
        .unwrap();
    let before = DECODES.load(SeqCst);
    for _ in 0..100 {
        assert_eq!(cache.get::<Counted>("c").await.unwrap(), Some(Counted(9)));
        assert_eq!(cache.get::<Counted>("d").await.unwrap(), Some(Counted(10)));
    }
    assert_eq!(DECODES.load(SeqCst), before);

    // The counter does count: a bytes-only backend decodes on every hit.
    let bytes = Cache::builder()
        .backend(BytesBackend::default())
        .build()
        .unwrap();
    bytes
        .set("c", &Counted(9), EntryOptions::new())
        .await
        .unwrap();
    assert_eq!(bytes.get::<Counted>("c").await.unwrap(), Some(Counted(9)));
    assert_eq!(DECODES.load(SeqCst), before + 1);
}
