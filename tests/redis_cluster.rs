//! perfkit on a real three-master Redis Cluster built on loopback: the same handle type,
//! rate-limit store and cache backends as on one node, exact decisions, invalidation
//! across instances, keys spread over every master, and a master killed and restarted
//! mid-load.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use perfkit::{
    cache::{Cache, EntryOptions, RedisBackend},
    pool::{RedisHandle, RedisPoolBuilder},
    rate_limit::{Algorithm, Key, ManualClock, Policy, Quota, RedisStore, Source, Store},
};
use support::{redis_cluster::RedisCluster, unique_id};

/// How long a test waits for something that should happen within milliseconds.
const WITHIN: Duration = Duration::from_secs(10);

async fn handle(cluster: &RedisCluster) -> RedisHandle {
    let handle = RedisPoolBuilder::cluster(cluster.seed_urls())
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert!(handle.is_cluster());
    handle
}

fn store(handle: RedisHandle, prefix: &str) -> RedisStore {
    RedisStore::builder(handle)
        .prefix(prefix)
        .timeout(Duration::from_secs(2))
        .build()
}

fn cache(prefix: &str, backend: RedisBackend) -> Cache {
    Cache::builder()
        .prefix(prefix)
        .backend(backend)
        .build()
        .unwrap()
}

fn tagged(tags: &[&str]) -> EntryOptions {
    EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(tags.iter().copied())
}

/// Polls `check` until it is true, for at most [`WITHIN`].
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    support::eventually(what, WITHIN, check).await;
}

#[tokio::test]
async fn a_cluster_handle_routes_commands_and_refuses_a_pool() {
    let Some(cluster) =
        RedisCluster::start("a_cluster_handle_routes_commands_and_refuses_a_pool").await
    else {
        return;
    };
    let handle = handle(&cluster).await;
    handle.ping().await.unwrap();
    let mut conn = handle.connection();
    for i in 0..30 {
        let () = redis::AsyncCommands::set(&mut conn, format!("{{k{i}}}"), i)
            .await
            .unwrap();
    }
    let spread = cluster.count_keys_per_master("{k").await;
    assert!(spread.iter().all(|&count| count > 0), "{spread:?}");

    let error = RedisPoolBuilder::cluster(cluster.seed_urls())
        .build_pool()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("one server"), "{error}");
    let error = RedisPoolBuilder::cluster(["not a url"])
        .build()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid Redis URL"), "{error}");
}

#[tokio::test]
async fn store_decisions_are_exact_on_the_cluster() {
    let Some(cluster) = RedisCluster::start("store_decisions_are_exact_on_the_cluster").await
    else {
        return;
    };
    let clock = ManualClock::new();
    let store = RedisStore::builder(handle(&cluster).await)
        .prefix("exact:")
        .client_time(true)
        .clock(clock.clone())
        .timeout(Duration::from_secs(2))
        .build();
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        // Several quotas on one key stay one script on one node: all or nothing.
        let policy: Policy = "3/second, 5/minute".parse().unwrap();
        let policy = policy.with_algorithm(algorithm);
        for client in 0..6 {
            let key = Key::text(&format!("{algorithm:?}-{client}"));
            let mut admitted = 0;
            for _ in 0..10 {
                let decision = store.check(&policy, &key, 1).await.unwrap();
                assert_eq!(decision.source, Source::Store);
                admitted += usize::from(decision.allowed);
            }
            assert_eq!(admitted, 3, "{algorithm:?} client {client}");
        }
        clock.advance(Duration::from_secs(2));
        for client in 0..6 {
            let key = Key::text(&format!("{algorithm:?}-{client}"));
            let mut admitted = 0;
            for _ in 0..10 {
                admitted += usize::from(store.check(&policy, &key, 1).await.unwrap().allowed);
            }
            assert_eq!(
                admitted, 2,
                "{algorithm:?} client {client}: the minute quota"
            );
        }
    }
    let spread = cluster.count_keys_per_master("exact:").await;
    assert!(
        spread.iter().all(|&count| count > 0),
        "rate-limit keys spread over every master: {spread:?}"
    );
}

/// Many tasks on two stores with two cluster handles: exactly the quota is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_exceed_the_quota_on_the_cluster() {
    let Some(cluster) =
        RedisCluster::start("two_instances_never_exceed_the_quota_on_the_cluster").await
    else {
        return;
    };
    let stores = [
        store(handle(&cluster).await, "two:"),
        store(handle(&cluster).await, "two:"),
    ];
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        let policy = Policy::new(Quota::per_day(50)).with_algorithm(algorithm);
        let mut tasks = Vec::new();
        for task in 0..40 {
            let store = stores[task % 2].clone();
            let policy = policy.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = [0usize; 3];
                for _ in 0..10 {
                    for (client, count) in admitted.iter_mut().enumerate() {
                        let key = Key::text(&format!("{algorithm:?}-{client}"));
                        let decision = store.check(&policy, &key, 1).await.unwrap();
                        assert_eq!(decision.source, Source::Store);
                        *count += usize::from(decision.allowed);
                    }
                }
                admitted
            }));
        }
        let mut admitted = [0usize; 3];
        for task in tasks {
            for (total, count) in admitted.iter_mut().zip(task.await.unwrap()) {
                *total += count;
            }
        }
        assert_eq!(admitted, [50, 50, 50], "{algorithm:?}");
    }
}

#[tokio::test]
async fn the_cache_expires_and_invalidates_across_instances_on_the_cluster() {
    let Some(cluster) =
        RedisCluster::start("the_cache_expires_and_invalidates_across_instances_on_the_cluster")
            .await
    else {
        return;
    };
    for tracking in [false, true] {
        let prefix = format!("c{}", unique_id());
        let a_backend = RedisBackend::new(handle(&cluster).await).track_epochs(tracking);
        let b_backend = RedisBackend::new(handle(&cluster).await).track_epochs(tracking);
        let a = cache(&prefix, a_backend.clone());
        let b = cache(&prefix, b_backend.clone());
        if tracking {
            let _ = a.get::<u32>("warm-up").await;
            let _ = b.get::<u32>("warm-up").await;
            eventually("both subscriptions", || async {
                a_backend.is_tracking() && b_backend.is_tracking()
            })
            .await;
        }

        a.set("k", &1u32, tagged(&["t"])).await.unwrap();
        assert_eq!(
            b.get::<u32>("k").await.unwrap(),
            Some(1),
            "tracking {tracking}"
        );
        a.invalidate_tags(&["t"]).await.unwrap();
        assert_eq!(
            a.get::<u32>("k").await.unwrap(),
            None,
            "tracking {tracking}"
        );
        eventually("B seeing the invalidation", || async {
            b.get::<u32>("k").await.unwrap().is_none()
        })
        .await;

        let short = EntryOptions::new().ttl(Duration::from_millis(300));
        a.set("short", &2u32, short).await.unwrap();
        assert_eq!(b.get::<u32>("short").await.unwrap(), Some(2));
        eventually("the entry expiring", || async {
            b.get::<u32>("short").await.unwrap().is_none()
        })
        .await;
    }
}

/// A computation that overlaps an invalidation is never served, with the read script and
/// with tracked epochs, by the instance that invalidated and by another one.
#[tokio::test]
async fn a_computation_overlapping_an_invalidation_is_never_served_on_the_cluster() {
    let Some(cluster) = RedisCluster::start(
        "a_computation_overlapping_an_invalidation_is_never_served_on_the_cluster",
    )
    .await
    else {
        return;
    };
    for tracking in [false, true] {
        let prefix = format!("r{}", unique_id());
        let writer_backend = RedisBackend::new(handle(&cluster).await).track_epochs(tracking);
        let reader_backend = RedisBackend::new(handle(&cluster).await).track_epochs(tracking);
        let writer = cache(&prefix, writer_backend.clone());
        let reader = cache(&prefix, reader_backend.clone());
        if tracking {
            let _ = writer.get::<u32>("warm-up").await;
            let _ = reader.get::<u32>("warm-up").await;
            eventually("both subscriptions", || async {
                writer_backend.is_tracking() && reader_backend.is_tracking()
            })
            .await;
        }
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let computing = writer.clone();
        let task = tokio::spawn(async move {
            computing
                .get_or_compute("slow", tagged(&["race"]), move || async move {
                    let _ = started_tx.send(());
                    let _ = release_rx.await;
                    Ok::<_, std::convert::Infallible>(7u32)
                })
                .await
        });
        started_rx.await.unwrap();
        writer.invalidate_tags(&["race"]).await.unwrap();
        release_tx.send(()).unwrap();
        assert_eq!(task.await.unwrap().unwrap(), 7);
        assert_eq!(
            writer.get::<u32>("slow").await.unwrap(),
            None,
            "tracking {tracking}"
        );
        eventually("the other instance refusing the stale value", || async {
            reader.get::<u32>("slow").await.unwrap().is_none()
        })
        .await;
    }
}

#[tokio::test]
async fn cache_namespaces_spread_over_every_master() {
    let Some(cluster) = RedisCluster::start("cache_namespaces_spread_over_every_master").await
    else {
        return;
    };
    let backend = RedisBackend::new(handle(&cluster).await);
    for namespace in 0..30 {
        let cache = cache(&format!("ns{namespace}"), backend.clone());
        cache.set("k", &namespace, tagged(&["t"])).await.unwrap();
        assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(namespace));
    }
    let spread = cluster.count_keys_per_master("{ns").await;
    assert!(spread.iter().all(|&count| count > 0), "{spread:?}");
}

/// Load on the rate limiter and the cache while one master is killed and restarted: every
/// decision is made (by the insurance for the dead master's keys), every cache call answers
/// (misses for the dead master's namespace), and both return to Redis afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_load_costs_insurance_and_misses_then_recovers() {
    let Some(mut cluster) =
        RedisCluster::start("a_master_killed_mid_load_costs_insurance_and_misses_then_recovers")
            .await
    else {
        return;
    };
    let handle = handle(&cluster).await;
    let store = RedisStore::builder(handle.clone())
        .prefix("kill:")
        .timeout(Duration::from_millis(200))
        .retry_interval(Duration::from_millis(100))
        .build();
    let backend = RedisBackend::new(handle)
        .deadline(Duration::from_millis(200))
        .retry_interval(Duration::from_millis(100));
    let policy = Policy::new(Quota::per_day(1_000_000));

    // One rate-limit key and one cache namespace on each master.
    let mut keys = Vec::new();
    let mut caches = Vec::new();
    for master in 0..3 {
        let mut i = 0;
        loop {
            let key = Key::text(&format!("client{i}"));
            if cluster.node_for_key(&store.redis_key(&policy, &key)).await == master {
                keys.push(key);
                break;
            }
            i += 1;
        }
        loop {
            let prefix = format!("ns{i}");
            i += 1;
            if cluster.node_for_key(&format!("{{{prefix}}}:k:x")).await == master {
                let cache = cache(&prefix, backend.clone());
                cache.set("x", &master, tagged(&[])).await.unwrap();
                caches.push(cache);
                break;
            }
        }
    }
    const DEAD: usize = 1;

    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let decided = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (store, policy, keys, caches) =
            (store.clone(), policy.clone(), keys.clone(), caches.clone());
        let (stop, slowest, decided) = (stop.clone(), slowest.clone(), decided.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (key, cache) in keys.iter().zip(&caches) {
                    let started = Instant::now();
                    let decision = store.check(&policy, key, 1).await;
                    let read = cache.get::<usize>("x").await;
                    let took = started.elapsed();
                    assert!(decision.is_ok(), "a decision failed: {decision:?}");
                    assert!(read.is_ok(), "a cache read failed: {read:?}");
                    decided.fetch_add(1, Ordering::Relaxed);
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
            }
        }));
    }

    eventually("load running", || async {
        decided.load(Ordering::Relaxed) > 100
    })
    .await;
    cluster.stop_master(DEAD).await;
    eventually("the dead master's key decided by the insurance", || async {
        store.check(&policy, &keys[DEAD], 1).await.unwrap().source == Source::Insurance
    })
    .await;
    assert_eq!(
        caches[DEAD].get::<usize>("x").await.unwrap(),
        None,
        "the dead master's namespace reads as a miss"
    );
    let during = decided.load(Ordering::Relaxed);
    cluster.start_master(DEAD).await;
    eventually("the dead master's key back on Redis", || async {
        store.check(&policy, &keys[DEAD], 1).await.unwrap().source == Source::Store
    })
    .await;
    eventually("the cache reading the restarted master", || async {
        caches[DEAD].set("x", &DEAD, tagged(&[])).await.is_ok()
            && caches[DEAD].get::<usize>("x").await.unwrap() == Some(DEAD)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(
        decided.load(Ordering::Relaxed) > during,
        "the load kept running"
    );
    for (master, cache) in caches.iter().enumerate() {
        assert_eq!(cache.get::<usize>("x").await.unwrap(), Some(master));
    }
    // Each step is a decision and a read, each bounded by its 200 ms deadline.
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest < Duration::from_millis(1000),
        "a decision and a read took {slowest:?} together"
    );
}
