//! The rate-limit stores: one suite of exact decisions on a controlled clock run against the
//! memory store and the Redis store alike, on one node and on a private Redis Cluster, then
//! what only Redis does (sharing a budget across instances, expiring idle keys, outages)
//! and the memory store's bound.
#![cfg(feature = "rate-limit")]

mod support;

use std::{sync::Arc, time::Duration};

use perfkit::rate_limit::{
    Algorithm, Decision, Key, ManualClock, MemoryStore, Policy, Quota, Source, Store,
};

const SECOND: Duration = Duration::from_secs(1);

/// A store on a manual clock, and what keeps its Redis keys apart from other tests' (or
/// the private cluster it runs on).
struct Subject {
    name: &'static str,
    store: Arc<dyn Store>,
    clock: ManualClock,
    _redis: Option<support::TestRedis>,
    #[cfg(feature = "redis")]
    _cluster: Option<support::redis_cluster::RedisCluster>,
}

/// The memory store and, when Redis is configured, the Redis store deciding on the clock.
async fn subjects(test: &str) -> Vec<Subject> {
    let clock = ManualClock::new();
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut subjects = vec![Subject {
        name: "memory",
        store: Arc::new(MemoryStore::builder().clock(clock.clone()).build()),
        clock,
        _redis: None,
        #[cfg(feature = "redis")]
        _cluster: None,
    }];
    #[cfg(feature = "redis")]
    if let Some(redis) = support::redis(test).await {
        let clock = ManualClock::new();
        let handle = perfkit::pool::RedisPoolBuilder::new(&redis.url)
            .build()
            .await
            .unwrap();
        let store = perfkit::rate_limit::RedisStore::builder(handle)
            .prefix(&redis.prefix)
            .client_time(true)
            .clock(clock.clone())
            .timeout(Duration::from_secs(5))
            .build();
        subjects.push(Subject {
            name: "redis",
            store: Arc::new(store),
            clock,
            _redis: Some(redis),
            _cluster: None,
        });
    }
    // The same cases on a private three-master Redis Cluster.
    #[cfg(feature = "redis")]
    if let Some(cluster) = support::redis_cluster::RedisCluster::start(test).await {
        let clock = ManualClock::new();
        let handle = perfkit::pool::RedisPoolBuilder::cluster(cluster.seed_urls())
            .build()
            .await
            .unwrap();
        let store = perfkit::rate_limit::RedisStore::builder(handle)
            .client_time(true)
            .clock(clock.clone())
            .timeout(Duration::from_secs(5))
            .build();
        subjects.push(Subject {
            name: "redis cluster",
            store: Arc::new(store),
            clock,
            _redis: None,
            _cluster: Some(cluster),
        });
    }
    #[cfg(not(feature = "redis"))]
    let _ = test;
    subjects
}

async fn check(subject: &Subject, policy: &Policy, key: &Key, cost: u32) -> Decision {
    let decision = subject
        .store
        .check(policy, key, cost)
        .await
        .unwrap_or_else(|error| panic!("{}: {error}", subject.name));
    assert_eq!(decision.source, Source::Store, "{}", subject.name);
    decision
}

/// Admitted requests of cost 1, up to 100.
async fn drain(subject: &Subject, policy: &Policy, key: &Key) -> usize {
    let mut admitted = 0;
    while admitted < 100 && check(subject, policy, key, 1).await.allowed {
        admitted += 1;
    }
    admitted
}

#[tokio::test]
async fn gcra_burst_then_spacing() {
    for subject in subjects("gcra_burst_then_spacing").await {
        let name = subject.name;
        let policy = Policy::new(Quota::per_second(10));
        let key = Key::text("client");
        let first = check(&subject, &policy, &key, 1).await;
        assert!(first.allowed, "{name}");
        assert_eq!(
            (first.limit, first.remaining, first.reset),
            (10, 9, Duration::from_millis(100)),
            "{name}"
        );
        assert_eq!(drain(&subject, &policy, &key).await, 9, "{name}");
        let refused = check(&subject, &policy, &key, 1).await;
        assert!(!refused.allowed, "{name}");
        assert_eq!(
            refused.retry_after,
            Some(Duration::from_millis(100)),
            "{name}"
        );
        assert_eq!((refused.remaining, refused.reset), (0, SECOND), "{name}");

        subject.clock.advance(Duration::from_micros(99_999));
        assert!(!check(&subject, &policy, &key, 1).await.allowed, "{name}");
        subject.clock.advance(Duration::from_micros(1));
        assert!(check(&subject, &policy, &key, 1).await.allowed, "{name}");
        assert!(!check(&subject, &policy, &key, 1).await.allowed, "{name}");

        subject.clock.advance(SECOND);
        assert_eq!(drain(&subject, &policy, &key).await, 10, "{name}");
        // Another key has its own budget.
        assert_eq!(
            drain(&subject, &policy, &Key::text("other")).await,
            10,
            "{name}"
        );
    }
}

#[tokio::test]
async fn gcra_burst_and_costs() {
    for subject in subjects("gcra_burst_and_costs").await {
        let name = subject.name;
        let policy = Policy::new(Quota::per_minute(60).with_burst(5));
        let key = Key::ip("198.51.100.1".parse().unwrap());
        assert!(check(&subject, &policy, &key, 3).await.allowed, "{name}");
        let refused = check(&subject, &policy, &key, 3).await;
        assert!(!refused.allowed, "{name}");
        assert_eq!(refused.retry_after, Some(SECOND), "{name}");
        assert_eq!(refused.remaining, 2, "{name}");
        let peek = check(&subject, &policy, &key, 0).await;
        assert!(peek.allowed && peek.remaining == 2, "{name}");
        assert!(check(&subject, &policy, &key, 2).await.allowed, "{name}");
        // A cost above the burst is never admitted, and consumes nothing.
        subject.clock.advance(Duration::from_secs(10));
        let oversized = check(&subject, &policy, &key, 6).await;
        assert!(!oversized.allowed, "{name}");
        assert_eq!(
            oversized.retry_after,
            Some(Duration::from_secs(60)),
            "{name}"
        );
        assert_eq!(drain(&subject, &policy, &key).await, 5, "{name}");
    }
}

#[tokio::test]
async fn fixed_window_edges() {
    for subject in subjects("fixed_window_edges").await {
        let name = subject.name;
        let policy = Policy::new(Quota::per_second(3)).with_algorithm(Algorithm::FixedWindow);
        let key = Key::global();
        subject.clock.advance(Duration::from_millis(500));
        assert_eq!(drain(&subject, &policy, &key).await, 3, "{name}");
        subject.clock.advance(Duration::from_micros(499_999));
        let refused = check(&subject, &policy, &key, 1).await;
        assert_eq!(
            refused.retry_after,
            Some(Duration::from_micros(1)),
            "{name}"
        );
        subject.clock.advance(Duration::from_micros(1));
        let first = check(&subject, &policy, &key, 1).await;
        assert!(first.allowed, "{name}");
        assert_eq!((first.remaining, first.reset), (2, SECOND), "{name}");
    }
}

#[tokio::test]
async fn sliding_window_weighs_the_previous_window() {
    for subject in subjects("sliding_window_weighs_the_previous_window").await {
        let name = subject.name;
        let policy = Policy::new(Quota::per_second(10)).with_algorithm(Algorithm::SlidingWindow);
        let key = Key::hashed("api-key-123");
        assert_eq!(drain(&subject, &policy, &key).await, 10, "{name}");
        subject.clock.advance(SECOND);
        let refused = check(&subject, &policy, &key, 1).await;
        assert_eq!(
            refused.retry_after,
            Some(Duration::from_millis(1)),
            "{name}"
        );
        subject.clock.advance(Duration::from_millis(500));
        assert_eq!(drain(&subject, &policy, &key).await, 5, "{name}");
        subject.clock.advance(Duration::from_secs(2));
        assert_eq!(drain(&subject, &policy, &key).await, 10, "{name}");
    }
}

#[tokio::test]
async fn several_quotas_are_all_or_nothing() {
    for subject in subjects("several_quotas_are_all_or_nothing").await {
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::SlidingWindow,
            Algorithm::FixedWindow,
        ] {
            let name = format!("{} {algorithm:?}", subject.name);
            let policy: Policy = "3/second, 5/minute".parse().unwrap();
            let policy = policy.with_algorithm(algorithm);
            let key = Key::text(&name);
            assert_eq!(drain(&subject, &policy, &key).await, 3, "{name}");
            let refused = check(&subject, &policy, &key, 1).await;
            assert_eq!(refused.quota, Quota::per_second(3), "{name}");
            subject.clock.advance(Duration::from_secs(2));
            assert_eq!(drain(&subject, &policy, &key).await, 2, "{name}");
            let refused = check(&subject, &policy, &key, 1).await;
            assert_eq!(refused.quota, Quota::per_minute(5), "{name}");
            assert!(refused.retry_after.unwrap() > SECOND, "{name}");
            subject.clock.advance(Duration::from_secs(120));
        }
    }
}

/// A long trace of requests at irregular times: every store gives the very same decisions.
#[tokio::test]
async fn stores_agree_on_a_long_trace() {
    let subjects = subjects("stores_agree_on_a_long_trace").await;
    let policies = [
        "7/second".parse::<Policy>().unwrap(),
        "5/second, 20/minute".parse().unwrap(),
        "10/3s burst 4".parse().unwrap(),
    ];
    let mut traces = Vec::new();
    for subject in &subjects {
        let mut rng = Rng(7);
        let mut trace = Vec::new();
        for policy in &policies {
            for algorithm in [
                Algorithm::Gcra,
                Algorithm::SlidingWindow,
                Algorithm::FixedWindow,
            ] {
                let policy = policy.clone().with_algorithm(algorithm);
                for _ in 0..150 {
                    subject
                        .clock
                        .advance(Duration::from_micros(rng.below(400_000)));
                    let key = Key::text(["a", "b"][rng.below(2) as usize]);
                    let mut decision = check(subject, &policy, &key, rng.below(4) as u32).await;
                    decision.source = Source::Store;
                    trace.push(decision);
                }
            }
        }
        traces.push((subject.name, trace));
    }
    let (first_name, first) = &traces[0];
    assert!(first.iter().any(|d| d.allowed) && first.iter().any(|d| !d.allowed));
    for (name, trace) in &traces[1..] {
        for (i, (a, b)) in first.iter().zip(trace).enumerate() {
            assert_eq!(a, b, "decision {i}: {first_name} and {name} differ");
        }
    }
}

/// xorshift64: the same trace for every store, without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn a_million_keys_stay_within_the_bound() {
    let clock = ManualClock::new();
    let store = MemoryStore::builder()
        .max_keys(10_000)
        .clock(clock.clone())
        .build();
    let policy = Policy::new(Quota::per_minute(100));
    for i in 0u32..1_000_000 {
        let key = Key::ip(std::net::Ipv4Addr::from(i).into());
        assert!(store.decide(&policy, &key, 1).allowed);
        if i % 1000 == 0 {
            clock.advance(Duration::from_millis(1));
        }
    }
    assert!(store.len() <= store.capacity(), "{} keys", store.len());
    assert!(store.capacity() < 12_000);
    // A drained key outlives the flood: keys that run out sooner are evicted first.
    let busy = Key::text("busy");
    assert!(store.decide(&policy, &busy, 100).allowed);
    for i in 0u32..100_000 {
        store.decide(&policy, &Key::ip(std::net::Ipv4Addr::from(i).into()), 1);
    }
    assert!(store.len() <= store.capacity());
    assert!(!store.decide(&policy, &busy, 1).allowed);
}

#[cfg(feature = "redis")]
mod redis_only {
    use std::time::Instant;

    use perfkit::{
        pool::RedisPoolBuilder,
        rate_limit::{Fallback, RedisStore},
    };
    use redis::AsyncCommands;
    use support::{RedisServer, capture::Capture};

    use super::*;

    /// Many tasks on two stores with two connections, on Redis's own clock: exactly the quota
    /// is admitted, for every algorithm.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_never_exceed_the_quota() {
        let Some(redis) = support::redis("two_instances_never_exceed_the_quota").await else {
            return;
        };
        let mut stores = Vec::new();
        for _ in 0..2 {
            let handle = RedisPoolBuilder::new(&redis.url).build().await.unwrap();
            stores.push(
                RedisStore::builder(handle)
                    .prefix(&redis.prefix)
                    .timeout(Duration::from_secs(5))
                    .build(),
            );
        }
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::SlidingWindow,
            Algorithm::FixedWindow,
        ] {
            let policy = Policy::new(Quota::per_day(100)).with_algorithm(algorithm);
            let mut tasks = Vec::new();
            for task in 0..40 {
                let store = stores[task % 2].clone();
                let policy = policy.clone();
                tasks.push(tokio::spawn(async move {
                    let mut admitted = 0;
                    for _ in 0..10 {
                        let decision = store.check(&policy, &Key::global(), 1).await.unwrap();
                        assert_eq!(decision.source, Source::Store);
                        admitted += usize::from(decision.allowed);
                    }
                    admitted
                }));
            }
            let mut admitted = 0;
            for task in tasks {
                admitted += task.await.unwrap();
            }
            assert_eq!(admitted, 100, "{algorithm:?}");
        }
    }

    #[tokio::test]
    async fn idle_keys_expire() {
        let Some(redis) = support::redis("idle_keys_expire").await else {
            return;
        };
        let handle = RedisPoolBuilder::new(&redis.url).build().await.unwrap();
        // A generous deadline: this test is about expiry, and a late answer would be
        // decided by the insurance, leaving nothing in Redis to expire.
        let store = RedisStore::builder(handle)
            .prefix(&redis.prefix)
            .timeout(Duration::from_secs(5))
            .build();
        let policy = Policy::new(Quota::per_second(10));
        let key = Key::text("idle");
        assert!(store.check(&policy, &key, 2).await.unwrap().allowed);
        let redis_key = store.redis_key(&policy, &key);
        assert!(redis_key.starts_with(&redis.prefix));
        assert!(redis_key.ends_with("{q10w1:g:t:idle}"), "{redis_key}");
        let mut conn = redis.conn();
        // Until the burst is refilled after the last admitted request: 1 s.
        let ttl: i64 = conn.pttl(&redis_key).await.unwrap();
        assert!((800..=1000).contains(&ttl), "PTTL {ttl}");
        let deadline = Instant::now() + Duration::from_secs(3);
        while conn.exists::<_, bool>(&redis_key).await.unwrap() {
            assert!(Instant::now() < deadline, "{redis_key} still exists");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A refused request writes nothing.
        let policy = Policy::new(Quota::per_second(1));
        assert!(!store.check(&policy, &key, 2).await.unwrap().allowed);
        let exists: bool = conn.exists(store.redis_key(&policy, &key)).await.unwrap();
        assert!(!exists);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn outage_falls_back_to_insurance_then_recovers() {
        let Some(mut server) = RedisServer::start("rate_limit_outage").await else {
            return;
        };
        let (capture, _guard) = Capture::install();
        let handle = RedisPoolBuilder::new(server.url())
            .connection_timeout(Duration::from_millis(200))
            .reconnect_retries(0)
            .build()
            .await
            .unwrap();
        let clock = ManualClock::new();
        let store = RedisStore::builder(handle)
            .clock(clock.clone())
            .retry_interval(Duration::from_millis(200))
            .build();
        let policy = Policy::new(Quota::per_second(5));
        let key = Key::text("client");
        let up = store.check(&policy, &key, 1).await.unwrap();
        assert_eq!(up.source, Source::Store);

        server.stop().await;
        // Every request is still decided, by the insurance, which enforces the quota.
        let mut admitted = 0;
        for _ in 0..8 {
            let decision = store.check(&policy, &key, 1).await.unwrap();
            assert_eq!(decision.source, Source::Insurance);
            admitted += usize::from(decision.allowed);
        }
        assert_eq!(admitted, 5);
        // Retries after the interval fail again, still without errors, and are not logged
        // again within the log interval.
        for _ in 0..3 {
            clock.advance(Duration::from_millis(250));
            let decision = store.check(&policy, &key, 1).await.unwrap();
            assert_eq!(decision.source, Source::Insurance);
        }
        let warnings = capture.warnings_containing("rate-limit store failed");
        assert_eq!(warnings.len(), 1, "{warnings:?}");

        server.restart().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            clock.advance(Duration::from_millis(250));
            let decision = store.check(&policy, &key, 0).await.unwrap();
            if decision.source == Source::Store {
                break;
            }
            assert_eq!(decision.source, Source::Insurance);
            assert!(Instant::now() < deadline, "Redis decisions did not resume");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            store.check(&policy, &key, 1).await.unwrap().source,
            Source::Store
        );
    }

    /// A flood of new keys cannot grow Redis past its `maxmemory`: with `noeviction` the
    /// full server refuses the writes, and the insurance decides, within its own bound.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_redis_refuses_new_keys_and_the_insurance_decides() {
        let Some(server) = RedisServer::start_with(
            "rate_limit_full",
            &["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"],
        )
        .await
        else {
            return;
        };
        let handle = RedisPoolBuilder::new(server.url()).build().await.unwrap();
        let store = RedisStore::builder(handle.clone()).build();
        let policy = Policy::new(Quota::per_minute(10));
        let mut from_insurance = 0;
        for i in 0..40_000u32 {
            let decision = store
                .check(&policy, &Key::text(&format!("client-{i}")), 1)
                .await
                .unwrap();
            assert!(decision.allowed, "a new client has its whole budget");
            if decision.source == Source::Insurance {
                from_insurance += 1;
                if from_insurance > 100 {
                    break;
                }
            }
        }
        assert!(from_insurance > 0, "the server never filled up");
        let mut conn = handle.connection();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap();
        let used: u64 = info
            .lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap();
        assert!(
            used < 3 * 1024 * 1024,
            "Redis held {used} bytes past its 2 MiB limit"
        );
    }

    /// A hung Redis (stopped, connections open) is a failure too: no request waits much
    /// longer than the deadline, the insurance decides, and Redis decides again once it
    /// answers.
    #[tokio::test(flavor = "current_thread")]
    async fn hung_redis_is_decided_within_the_deadline() {
        let Some(mut server) = RedisServer::start("rate_limit_hung").await else {
            return;
        };
        let handle = RedisPoolBuilder::new(server.url()).build().await.unwrap();
        let deadline = Duration::from_millis(50);
        let clock = ManualClock::new();
        let store = RedisStore::builder(handle)
            .clock(clock.clone())
            .timeout(deadline)
            .retry_interval(Duration::from_millis(200))
            .build();
        let policy = Policy::new(Quota::per_second(2));
        let key = Key::text("client");
        assert_eq!(
            store.check(&policy, &key, 1).await.unwrap().source,
            Source::Store
        );

        server.pause();
        let mut admitted = 0;
        let mut slowest = Duration::ZERO;
        for round in 0..8 {
            if round % 2 == 0 {
                // Past the retry interval: this request tries Redis again and waits for it.
                clock.advance(Duration::from_millis(250));
            }
            let started = Instant::now();
            let decision = store.check(&policy, &key, 1).await.unwrap();
            slowest = slowest.max(started.elapsed());
            assert_eq!(decision.source, Source::Insurance, "round {round}");
            admitted += usize::from(decision.allowed);
        }
        server.resume();
        assert!(
            slowest >= deadline && slowest < deadline + Duration::from_millis(100),
            "slowest decision took {slowest:?}, the deadline is {deadline:?}"
        );
        assert!(store.fallback_active());
        // The insurance enforces the quota: two requests at 250 ms (the burst), then one
        // every 500 ms, at 750 ms; the others are refused.
        assert_eq!(admitted, 3);

        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            clock.advance(Duration::from_millis(250));
            if store.check(&policy, &key, 0).await.unwrap().source == Source::Store {
                break;
            }
            assert!(Instant::now() < give_up, "Redis decisions did not resume");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!store.fallback_active());
    }

    /// The health check fails, naming the fallback, while Redis is down and while the store
    /// still decides without it; it passes when Redis decides again.
    #[cfg(feature = "health")]
    #[tokio::test(flavor = "current_thread")]
    async fn health_check_reports_the_fallback() {
        use perfkit::health::{HealthCheck, RateLimitCheck};

        let Some(mut server) = RedisServer::start("rate_limit_health").await else {
            return;
        };
        let handle = RedisPoolBuilder::new(server.url())
            .connection_timeout(Duration::from_millis(200))
            .reconnect_retries(0)
            .build()
            .await
            .unwrap();
        let clock = ManualClock::new();
        let store = RedisStore::builder(handle).clock(clock.clone()).build();
        let check = RateLimitCheck::new(&store);
        assert_eq!(HealthCheck::name(&check), "rate_limit");
        assert!(!HealthCheck::critical(&check));
        assert!(HealthCheck::critical(
            &RateLimitCheck::from(&store).as_critical()
        ));
        check.check().await.unwrap();

        let policy = Policy::new(Quota::per_second(5));
        let key = Key::text("client");
        server.stop().await;
        let error = check.check().await.unwrap_err().to_string();
        assert!(
            error.contains("PING failed") && error.contains("Memory"),
            "{error}"
        );
        assert_eq!(
            store.check(&policy, &key, 1).await.unwrap().source,
            Source::Insurance
        );

        server.restart().await;
        // Redis answers, but the store has not tried it again yet.
        let give_up = Instant::now() + Duration::from_secs(10);
        let error = loop {
            match check.check().await {
                Err(error) => {
                    if error.to_string().contains("answers PING") {
                        break error.to_string();
                    }
                }
                Ok(()) => panic!("healthy while the store still decides without Redis"),
            }
            assert!(Instant::now() < give_up, "Redis did not come back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(error.contains("Memory"), "{error}");
        clock.advance(Duration::from_millis(250));
        assert_eq!(
            store.check(&policy, &key, 1).await.unwrap().source,
            Source::Store
        );
        check.check().await.unwrap();
    }

    #[tokio::test]
    async fn fail_open_and_fail_closed() {
        // Nothing listens on this port, so every call fails at once.
        let handle = RedisPoolBuilder::new("redis://127.0.0.1:1")
            .connection_timeout(Duration::from_millis(100))
            .build_lazy()
            .unwrap();
        let policy = Policy::new(Quota::per_second(1));
        for (fallback, source, allowed) in [
            (Fallback::FailOpen, Source::FailOpen, true),
            (Fallback::FailClosed, Source::FailClosed, false),
        ] {
            let store = RedisStore::builder(handle.clone())
                .fallback(fallback)
                .build();
            for _ in 0..3 {
                let decision = store.check(&policy, &Key::global(), 1).await.unwrap();
                assert_eq!((decision.source, decision.allowed), (source, allowed));
            }
        }
    }
}
