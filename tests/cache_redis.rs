//! The Redis and tiered cache backends against a real Redis (`REDIS_URL`), and against a
//! private `redis-server` for the fault tests.
#![cfg(all(feature = "cache", feature = "redis"))]

mod support;

use std::{
    convert::Infallible,
    future::Future,
    time::{Duration, Instant},
};

use perfkit::{
    cache::{Backend, Cache, EntryOptions, RedisBackend, TieredBackend},
    pool::RedisPoolBuilder,
};
use redis::AsyncCommands;
use support::{RedisServer, capture::Capture, unique_id};

/// How long a test waits for something that should happen within milliseconds.
const WITHIN: Duration = Duration::from_secs(3);

/// A namespace no other test uses; its keys are removed when the guard drops.
struct Namespace {
    name: String,
    url: String,
}

impl Namespace {
    fn new(url: &str) -> Self {
        Self {
            name: format!("t{}", unique_id()),
            url: url.to_owned(),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{{{}}}:k:{key}", self.name)
    }

    fn tag(&self, tag: &str) -> String {
        format!("{{{}}}:t:{tag}", self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        let pattern = format!("{{{}}}*", self.name);
        let keys: Vec<String> = match redis::Commands::scan_match::<_, String>(&mut con, &pattern) {
            Ok(iter) => iter.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(chunk).query(&mut con);
        }
    }
}

async fn redis_backend(url: &str) -> RedisBackend {
    let handle = RedisPoolBuilder::new(url)
        .connection_timeout(Duration::from_secs(1))
        .reconnect_retries(0)
        .build_lazy()
        .unwrap();
    RedisBackend::new(handle)
}

/// A backend on a handle with the pool's default reconnect settings, as an application
/// builds it: while Redis is down, its commands wait for reconnection attempts.
fn default_backend(url: &str) -> RedisBackend {
    RedisBackend::new(RedisPoolBuilder::new(url).build_lazy().unwrap())
}

async fn tiered_backend(url: &str) -> TieredBackend {
    TieredBackend::builder(redis_backend(url).await, redis::Client::open(url).unwrap()).build()
}

fn cache(namespace: &Namespace, backend: impl Backend) -> Cache {
    Cache::builder()
        .prefix(namespace.name.as_str())
        .backend(backend)
        .build()
        .unwrap()
}

fn tagged(tags: &[&str]) -> EntryOptions {
    EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(tags.iter().copied())
}

/// Polls `check` until it is true, for at most [`WITHIN`]; returns how long it took.
async fn eventually<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    support::eventually(what, WITHIN, check).await
}

async fn subscribed(backend: &TieredBackend) {
    eventually("the subscription", || async { backend.is_subscribed() }).await;
}

/// A cache on a tiered backend whose subscription is open: the first key used opens it.
async fn subscribed_tiered(namespace: &Namespace, url: &str) -> (TieredBackend, Cache) {
    let backend = tiered_backend(url).await;
    let cache = cache(namespace, backend.clone());
    let _ = cache.get::<u32>("warm-up").await;
    subscribed(&backend).await;
    (backend, cache)
}

/// Runs `get_or_compute` whose computation waits for a signal, invalidates its tag while
/// it computes, then lets it store: the value must not be served afterwards.
async fn race(cache: &Cache, reader: &Cache) {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let computing = cache.clone();
    let task = tokio::spawn(async move {
        computing
            .get_or_compute("slow", tagged(&["race"]), move || async move {
                let _ = started_tx.send(());
                let _ = release_rx.await;
                Ok::<_, Infallible>(String::from("computed before the invalidation"))
            })
            .await
    });
    started_rx.await.unwrap();
    cache.invalidate_tags(&["race"]).await.unwrap();
    release_tx.send(()).unwrap();
    let value = task.await.unwrap().unwrap();
    assert_eq!(value, "computed before the invalidation");
    assert_eq!(cache.get::<String>("slow").await.unwrap(), None);
    assert_eq!(reader.get::<String>("slow").await.unwrap(), None);

    // A computation that starts after the invalidation is stored and served.
    let fresh = cache
        .get_or_compute("slow", tagged(&["race"]), || async {
            Ok::<_, Infallible>(String::from("computed after"))
        })
        .await
        .unwrap();
    assert_eq!(fresh, "computed after");
    assert_eq!(
        reader.get::<String>("slow").await.unwrap().as_deref(),
        Some("computed after")
    );
}

/// A cache on a Redis backend tracking epochs, whose subscription is up.
async fn tracking(namespace: &Namespace, url: &str) -> (RedisBackend, Cache) {
    let backend = redis_backend(url).await.track_epochs(true);
    let cache = cache(namespace, backend.clone());
    let _ = cache.get::<u32>("warm-up").await;
    eventually("the epoch subscription", || async { backend.is_tracking() }).await;
    (backend, cache)
}

/// Closes the private server's one subscription connection; returns an admin connection.
async fn kill_the_subscription(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    admin
}

/// How many times the server ran `command` (from `INFO commandstats`).
async fn calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |count| count.parse().unwrap())
}

// ===== Redis backend =====

#[tokio::test]
async fn redis_entries_expire_with_their_ttl() {
    let Some(redis) = support::redis("redis_entries_expire_with_their_ttl").await else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let cache = cache(&ns, redis_backend(&redis.url).await);
    let options = EntryOptions::new().ttl(Duration::from_millis(300));
    cache.set("short", &7u32, options).await.unwrap();
    assert_eq!(cache.get::<u32>("short").await.unwrap(), Some(7));
    let ttl: i64 = redis.conn().pttl(ns.key("short")).await.unwrap();
    assert!(ttl > 0 && ttl <= 300, "PTTL {ttl}");
    eventually("expiry", || async {
        cache.get::<u32>("short").await.unwrap().is_none()
    })
    .await;
    // The cache's clock starts the TTL when `set` is called and Redis's when the command
    // arrives, so Redis may expire the key a moment after the cache stops serving it.
    eventually("Redis expiring the key itself", || async {
        let exists: bool = redis.conn().exists(ns.key("short")).await.unwrap();
        !exists
    })
    .await;
}

#[tokio::test]
async fn redis_invalidating_a_tag_drops_ten_thousand_entries_in_one_write() {
    let Some(redis) =
        support::redis("redis_invalidating_a_tag_drops_ten_thousand_entries_in_one_write").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    // Thousands of writes in flight at once on a busy machine can outlast the default
    // per-call deadline, and a write past it is skipped: this test is about invalidation.
    let backend = redis_backend(&redis.url)
        .await
        .deadline(Duration::from_secs(5));
    let cache = cache(&ns, backend);
    let keys: Vec<String> = (0..10_000).map(|i| format!("item:{i}")).collect();
    for chunk in keys.chunks(500) {
        let sets = chunk.iter().map(|key| {
            let cache = cache.clone();
            let key = key.clone();
            async move { cache.set(&key, &key, tagged(&["items"])).await }
        });
        for result in join_all(sets).await {
            result.unwrap();
        }
    }
    cache
        .set("other", &1u8, tagged(&["unrelated"]))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("item:9999").await.unwrap().as_deref(),
        Some("item:9999")
    );

    let epoch_before: Vec<u8> = redis.conn().get(ns.tag("items")).await.unwrap();
    cache.invalidate_tags(&["items"]).await.unwrap();
    let epoch_after: Vec<u8> = redis.conn().get(ns.tag("items")).await.unwrap();
    assert_eq!(epoch_after.len(), 16);
    assert_ne!(epoch_before, epoch_after, "one write: the tag's epoch");
    let still_stored: bool = redis.conn().exists(ns.key("item:1")).await.unwrap();
    assert!(still_stored, "entries are not visited by the invalidation");

    for chunk in keys.chunks(500) {
        let gets = chunk.iter().map(|key| {
            let cache = cache.clone();
            let key = key.clone();
            async move { cache.get::<String>(&key).await }
        });
        for found in join_all(gets).await {
            assert_eq!(found.unwrap(), None);
        }
    }
    assert_eq!(cache.get::<u8>("other").await.unwrap(), Some(1));
    let removed: bool = redis.conn().exists(ns.key("item:1")).await.unwrap();
    assert!(!removed, "the read script unlinks an invalidated entry");
}

#[tokio::test]
async fn redis_a_computation_overlapping_an_invalidation_is_never_served() {
    let Some(redis) =
        support::redis("redis_a_computation_overlapping_an_invalidation_is_never_served").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let writer = cache(&ns, redis_backend(&redis.url).await);
    let reader = cache(&ns, redis_backend(&redis.url).await);
    race(&writer, &reader).await;
}

#[tokio::test]
async fn redis_a_missing_epoch_key_makes_its_entries_misses() {
    let Some(redis) = support::redis("redis_a_missing_epoch_key_makes_its_entries_misses").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let cache = cache(&ns, redis_backend(&redis.url).await);
    cache
        .set("k", &"v".to_owned(), tagged(&["evicted", "kept"]))
        .await
        .unwrap();
    assert!(cache.get::<String>("k").await.unwrap().is_some());
    let _: i64 = redis.conn().del(ns.tag("evicted")).await.unwrap();
    assert_eq!(cache.get::<String>("k").await.unwrap(), None);

    // A new capture creates a new random epoch; the old entry stays invalid.
    cache
        .set("k2", &"v2".to_owned(), tagged(&["evicted"]))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("k2").await.unwrap().as_deref(),
        Some("v2")
    );
}

#[tokio::test]
async fn redis_bytes_written_by_another_program_are_a_logged_miss_and_removed() {
    let Some(redis) =
        support::redis("redis_bytes_written_by_another_program_are_a_logged_miss_and_removed")
            .await
    else {
        return;
    };
    let (capture, _guard) = Capture::install();
    let ns = Namespace::new(&redis.url);
    let backend = redis_backend(&redis.url).await;
    let cache = cache(&ns, backend.clone());
    let mut conn = redis.conn();

    // Not an entry at all.
    let () = conn.set(ns.key("foreign"), "hello").await.unwrap();
    assert_eq!(cache.get::<String>("foreign").await.unwrap(), None);
    let exists: bool = conn.exists(ns.key("foreign")).await.unwrap();
    assert!(!exists);
    assert!(!capture.warnings_containing("corrupt").is_empty());

    // Another type of Redis value under the key.
    let () = conn.hset(ns.key("hash"), "field", "x").await.unwrap();
    assert_eq!(cache.get::<String>("hash").await.unwrap(), None);
    let exists: bool = conn.exists(ns.key("hash")).await.unwrap();
    assert!(!exists);
    assert!(
        !backend.is_down(),
        "a server that answers, even oddly, is up"
    );

    // An entry whose value bytes do not decode: the cache's codec reports it.
    let far = u64::MAX / 2;
    let mut blob = vec![0xE1];
    for _ in 0..3 {
        blob.extend_from_slice(&far.to_be_bytes());
    }
    blob.extend_from_slice(&0u32.to_be_bytes());
    blob.extend_from_slice(&0u16.to_be_bytes());
    blob.extend_from_slice(b"\x7fgarbage");
    let () = conn.set(ns.key("garbage"), blob).await.unwrap();
    assert_eq!(cache.get::<String>("garbage").await.unwrap(), None);
    let exists: bool = conn.exists(ns.key("garbage")).await.unwrap();
    assert!(!exists);
    assert!(!capture.warnings_containing("decode").is_empty());
    assert!(cache.stats().errors >= 1);
}

#[tokio::test]
async fn redis_outage_degrades_to_misses_and_recovers_after_restart() {
    let Some(mut server) =
        RedisServer::start("redis_outage_degrades_to_misses_and_recovers_after_restart").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let cache = cache(&ns, redis_backend(&server.url()).await);
    cache.set("k", &1u32, tagged(&["t"])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));

    server.stop().await;
    let started = Instant::now();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
    cache.set("k2", &2u32, tagged(&["t"])).await.unwrap();
    assert!(cache.invalidate_tags(&["t"]).await.is_err());
    assert!(cache.delete("k").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "each call is bounded by the deadline: {:?}",
        started.elapsed()
    );
    assert!(cache.stats().errors >= 1);

    server.restart().await;
    eventually("recovery", || async {
        cache.set("k3", &3u32, tagged(&["t"])).await.unwrap();
        cache.get::<u32>("k3").await.unwrap() == Some(3)
    })
    .await;
    cache.invalidate_tags(&["t"]).await.unwrap();
    assert_eq!(cache.get::<u32>("k3").await.unwrap(), None);
}

#[tokio::test]
async fn redis_a_server_known_to_be_down_costs_calls_nothing_until_a_retry_finds_it() {
    let Some(mut server) = RedisServer::start(
        "redis_a_server_known_to_be_down_costs_calls_nothing_until_a_retry_finds_it",
    )
    .await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let backend = default_backend(&server.url()).retry_interval(Duration::from_millis(300));
    let cache = cache(&ns, backend.clone());
    cache.set("k", &1u32, tagged(&["t"])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    assert!(!backend.is_down());

    server.stop().await;
    // The first call finds out, within the deadline.
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
    assert!(backend.is_down());

    // The next ones fail at once: 200 reads, writes and invalidations in far less than one
    // deadline (100 ms) each would take.
    let started = Instant::now();
    for i in 0..50u32 {
        assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
        cache.set("k2", &i, tagged(&["t"])).await.unwrap();
        assert!(cache.invalidate_tags(&["t"]).await.is_err());
        let value = cache
            .get_or_compute("computed", tagged(&["t"]), move || async move {
                Ok::<_, Infallible>(i)
            })
            .await
            .unwrap();
        assert_eq!(value, i, "computed afresh and not stored");
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(300),
        "250 calls on a Redis known to be down took {elapsed:?}"
    );
    let error = cache.delete("k").await.unwrap_err().to_string();
    assert!(error.contains("fail at once"), "{error}");

    // Back up: within a retry interval a call finds it, and every call uses it again.
    server.restart().await;
    let recovered = eventually("a retry finding Redis", || async {
        cache.set("k3", &3u32, tagged(&[])).await.unwrap();
        cache.get::<u32>("k3").await.unwrap() == Some(3)
    })
    .await;
    assert!(recovered < Duration::from_secs(2), "{recovered:?}");
    assert!(!backend.is_down());
    assert!(cache.invalidate_tags(&["t"]).await.is_ok());
}

#[tokio::test]
async fn tiered_l1_answers_at_in_process_speed_while_redis_is_down() {
    let Some(mut server) =
        RedisServer::start("tiered_l1_answers_at_in_process_speed_while_redis_is_down").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let url = server.url();
    let backend =
        TieredBackend::builder(default_backend(&url), redis::Client::open(url).unwrap()).build();
    let cache = cache(&ns, backend.clone());
    cache.set("k", &1u32, tagged(&["t"])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    subscribed(&backend).await;
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(backend.l1().len(), 1);

    server.stop().await;
    eventually("the listener noticing", || async {
        !backend.is_subscribed()
    })
    .await;
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    assert!(backend.l2().is_down());

    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
        assert_eq!(cache.get::<u32>("absent").await.unwrap(), None);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(300),
        "200 reads with Redis down took {elapsed:?}"
    );
}

#[tokio::test]
async fn redis_a_hung_server_costs_at_most_the_deadline() {
    let Some(mut server) =
        RedisServer::start("redis_a_hung_server_costs_at_most_the_deadline").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let backend = redis_backend(&server.url())
        .await
        .deadline(Duration::from_millis(50));
    let cache = cache(&ns, backend);
    cache.set("k", &1u32, tagged(&[])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));

    // CLIENT PAUSE holds every client's commands for a second: a hung server.
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(50),
        "the server was paused: {elapsed:?}"
    );
    server.stop().await;
}

// ===== Tiered backend =====

#[tokio::test]
async fn tiered_a_computation_overlapping_an_invalidation_is_never_served() {
    let Some(redis) =
        support::redis("tiered_a_computation_overlapping_an_invalidation_is_never_served").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let (_, writer) = subscribed_tiered(&ns, &redis.url).await;
    let (reader_backend, reader) = subscribed_tiered(&ns, &redis.url).await;
    race(&writer, &reader).await;
    // The reader now holds the fresh value in L1, and it is still right.
    assert!(!reader_backend.l1().is_empty());
}

#[tokio::test]
async fn tiered_instances_see_each_others_changes_within_milliseconds() {
    let Some(redis) =
        support::redis("tiered_instances_see_each_others_changes_within_milliseconds").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let (a_backend, a) = subscribed_tiered(&ns, &redis.url).await;
    let (_, b) = subscribed_tiered(&ns, &redis.url).await;

    // Tag invalidation.
    b.set("tagged", &1u32, tagged(&["t"])).await.unwrap();
    assert_eq!(a.get::<u32>("tagged").await.unwrap(), Some(1));
    assert_eq!(a_backend.l1().len(), 1, "A keeps the entry in process");
    let started = Instant::now();
    b.invalidate_tags(&["t"]).await.unwrap();
    eventually("A dropping the invalidated entry", || async {
        a.get::<u32>("tagged").await.unwrap().is_none()
    })
    .await;
    let invalidation = started.elapsed();

    // Delete.
    b.set("deleted", &2u32, tagged(&[])).await.unwrap();
    assert_eq!(a.get::<u32>("deleted").await.unwrap(), Some(2));
    assert_eq!(a.get::<u32>("deleted").await.unwrap(), Some(2));
    b.delete("deleted").await.unwrap();
    eventually("A dropping the deleted entry", || async {
        a.get::<u32>("deleted").await.unwrap().is_none()
    })
    .await;

    // Overwrite.
    b.set("written", &3u32, tagged(&[])).await.unwrap();
    assert_eq!(a.get::<u32>("written").await.unwrap(), Some(3));
    b.set("written", &4u32, tagged(&[])).await.unwrap();
    eventually("A seeing the new value", || async {
        a.get::<u32>("written").await.unwrap() == Some(4)
    })
    .await;

    // Prefix invalidation.
    b.set("user:1", &5u32, tagged(&[])).await.unwrap();
    assert_eq!(a.get::<u32>("user:1").await.unwrap(), Some(5));
    b.invalidate_prefix("user:").await.unwrap();
    eventually("A dropping the prefix", || async {
        a.get::<u32>("user:1").await.unwrap().is_none()
    })
    .await;

    assert!(
        invalidation < Duration::from_millis(250),
        "an invalidation took {invalidation:?} to reach the other instance"
    );
}

#[tokio::test]
async fn tiered_l1_serves_what_it_has_while_redis_is_down() {
    let Some(mut server) =
        RedisServer::start("tiered_l1_serves_what_it_has_while_redis_is_down").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let (backend, cache) = subscribed_tiered(&ns, &server.url()).await;
    cache.set("k", &1u32, tagged(&["t"])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(backend.l1().len(), 1);

    server.stop().await;
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(cache.get::<u32>("absent").await.unwrap(), None);
    assert!(cache.invalidate_tags(&["t"]).await.is_err());

    server.restart().await;
    subscribed(&backend).await;
    assert!(backend.l1().is_empty(), "L1 is flushed on resubscribe");
}

#[tokio::test]
async fn tiered_l1_is_not_trusted_once_the_subscription_drops() {
    let Some(server) =
        RedisServer::start("tiered_l1_is_not_trusted_once_the_subscription_drops").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let (backend, cache) = subscribed_tiered(&ns, &server.url()).await;
    cache.set("k", &1u32, tagged(&["t"])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(backend.l1().len(), 1);

    let mut admin = kill_the_subscription(&server).await;
    eventually("the listener noticing", || async {
        !backend.is_subscribed() || backend.l1().is_empty()
    })
    .await;

    // An invalidation whose message this instance cannot have received.
    let () = admin.set(ns.tag("t"), [0xAB; 16].as_slice()).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);

    subscribed(&backend).await;
    assert!(backend.l1().is_empty(), "L1 is flushed on resubscribe");
}

#[tokio::test]
async fn tiered_an_idle_subscription_stays_up_across_its_pings() {
    let Some(server) =
        RedisServer::start("tiered_an_idle_subscription_stays_up_across_its_pings").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let ping_interval = Duration::from_millis(40);
    let backend = TieredBackend::builder(
        redis_backend(&server.url()).await,
        redis::Client::open(server.url()).unwrap(),
    )
    .ping_interval(ping_interval)
    .build();
    let cache = cache(&ns, backend.clone());
    cache.set("k", &1u32, tagged(&["t"])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    subscribed(&backend).await;
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    assert_eq!(backend.l1().len(), 1);

    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let mut pubsub_ids = async || -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .unwrap();
        list.split_whitespace()
            .filter(|field| field.starts_with("id="))
            .map(str::to_owned)
            .collect()
    };
    let before = pubsub_ids().await;
    assert_eq!(before.len(), 1, "{before:?}");

    // Fifteen ping intervals with nothing else on the subscription.
    let idle_until = Instant::now() + ping_interval * 15;
    while Instant::now() < idle_until {
        assert!(
            backend.is_subscribed(),
            "the subscription dropped while idle"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(pubsub_ids().await, before, "the subscription was reopened");
    assert_eq!(backend.l1().len(), 1, "L1 was not flushed");
}

#[tokio::test]
async fn tiered_listener_stops_with_the_last_clone() {
    let Some(server) = RedisServer::start("tiered_listener_stops_with_the_last_clone").await else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let (backend, cache) = subscribed_tiered(&ns, &server.url()).await;
    let client = redis::Client::open(server.url()).unwrap();
    let admin = client.get_multiplexed_async_connection().await.unwrap();
    let pubsub_clients = || {
        let mut admin = admin.clone();
        async move {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut admin)
                .await
                .unwrap();
            list.lines().count()
        }
    };
    assert_eq!(pubsub_clients().await, 1);
    drop(cache);
    drop(backend);
    eventually("the subscription closing", || async {
        pubsub_clients().await == 0
    })
    .await;
}

#[cfg(feature = "health")]
// ===== Tracked epochs =====
#[tokio::test]
async fn tracked_a_hit_is_one_plain_get_and_no_script() {
    let Some(server) = RedisServer::start("tracked_a_hit_is_one_plain_get_and_no_script").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let (_, cache) = tracking(&ns, &server.url()).await;
    cache.set("k", &7u32, tagged(&["a", "b"])).await.unwrap();
    // The first read learns both epochs.
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(7));

    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap();
    for _ in 0..100 {
        assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(7));
    }
    assert_eq!(calls(&mut admin, "get").await, 100);
    assert_eq!(calls(&mut admin, "mget").await, 0);
    assert_eq!(calls(&mut admin, "evalsha").await, 0);
}

#[tokio::test]
async fn tracked_an_invalidation_on_this_instance_is_seen_before_it_returns() {
    let Some(redis) =
        support::redis("tracked_an_invalidation_on_this_instance_is_seen_before_it_returns").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let (_, cache) = tracking(&ns, &redis.url).await;
    for round in 0..50u32 {
        cache.set("k", &round, tagged(&["t"])).await.unwrap();
        assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(round));
        cache.invalidate_tags(&["t"]).await.unwrap();
        assert_eq!(cache.get::<u32>("k").await.unwrap(), None, "round {round}");
    }
}

#[tokio::test]
async fn tracked_a_computation_overlapping_an_invalidation_is_never_served() {
    let Some(redis) =
        support::redis("tracked_a_computation_overlapping_an_invalidation_is_never_served").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let (_, writer) = tracking(&ns, &redis.url).await;
    let (_, reader) = tracking(&ns, &redis.url).await;
    // The reader learns the tag's epoch first, so only the push can tell it of the change.
    writer
        .set("slow", &"old".to_owned(), tagged(&["race"]))
        .await
        .unwrap();
    assert!(reader.get::<String>("slow").await.unwrap().is_some());
    writer.invalidate_tags(&["race"]).await.unwrap();
    eventually("the reader hearing of the invalidation", || async {
        reader.get::<String>("slow").await.unwrap().is_none()
    })
    .await;
    race(&writer, &reader).await;
}

#[tokio::test]
async fn tracked_other_instances_see_an_invalidation_within_milliseconds() {
    let Some(redis) =
        support::redis("tracked_other_instances_see_an_invalidation_within_milliseconds").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let (_, a) = tracking(&ns, &redis.url).await;
    let (_, b) = tracking(&ns, &redis.url).await;
    let mut slowest = Duration::ZERO;
    for round in 0..20u32 {
        b.set("k", &round, tagged(&["t"])).await.unwrap();
        assert_eq!(a.get::<u32>("k").await.unwrap(), Some(round));
        let started = Instant::now();
        b.invalidate_tags(&["t"]).await.unwrap();
        eventually("A seeing the invalidation", || async {
            a.get::<u32>("k").await.unwrap().is_none()
        })
        .await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(250),
        "an invalidation took {slowest:?} to reach the other instance"
    );
}

#[tokio::test]
async fn tracked_epochs_are_distrusted_while_the_subscription_is_down() {
    let Some(server) =
        RedisServer::start("tracked_epochs_are_distrusted_while_the_subscription_is_down").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let (backend, cache) = tracking(&ns, &server.url()).await;
    cache.set("k", &1u32, tagged(&["t"])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));

    let mut admin = kill_the_subscription(&server).await;
    eventually("the listener noticing", || async { !backend.is_tracking() }).await;

    // An invalidation whose message this instance cannot have received.
    let () = admin.set(ns.tag("t"), [0xAB; 16].as_slice()).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);

    eventually("the subscription coming back", || async {
        backend.is_tracking()
    })
    .await;
    cache.set("k", &2u32, tagged(&["t"])).await.unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(2));
}

#[tokio::test]
async fn tracked_a_missing_epoch_key_and_foreign_bytes_are_misses() {
    let Some(redis) =
        support::redis("tracked_a_missing_epoch_key_and_foreign_bytes_are_misses").await
    else {
        return;
    };
    let ns = Namespace::new(&redis.url);
    let (_, cache) = tracking(&ns, &redis.url).await;
    cache
        .set("k", &"v".to_owned(), tagged(&["evicted"]))
        .await
        .unwrap();
    let _: i64 = redis.conn().del(ns.tag("evicted")).await.unwrap();
    assert_eq!(cache.get::<String>("k").await.unwrap(), None);

    let () = redis
        .conn()
        .set(ns.key("foreign"), "not an entry")
        .await
        .unwrap();
    assert_eq!(cache.get::<String>("foreign").await.unwrap(), None);
    let () = redis
        .conn()
        .rpush(ns.key("list"), "a list, not a string")
        .await
        .unwrap();
    assert_eq!(cache.get::<String>("list").await.unwrap(), None);
    let left: bool = redis.conn().exists(ns.key("list")).await.unwrap();
    assert!(!left, "the read script removes a key of another type");
}

#[tokio::test]
async fn health_check_pings_the_redis_behind_a_cache() {
    use perfkit::health::{CacheCheck, HealthCheck};

    let Some(mut server) = RedisServer::start("health_check_pings_the_redis_behind_a_cache").await
    else {
        return;
    };
    let ns = Namespace::new(&server.url());
    let tiered = cache(&ns, tiered_backend(&server.url()).await);
    let check = CacheCheck::from(&tiered).non_critical();
    assert_eq!(HealthCheck::name(&check), "cache");
    assert!(!check.critical());
    check.check().await.unwrap();

    let memory = Cache::builder().build().unwrap();
    let memory_check = CacheCheck::new(&memory);

    server.stop().await;
    let error = check.check().await.unwrap_err();
    assert!(error.message().contains("cache PING failed"), "{error}");
    memory_check.check().await.unwrap();
}

/// Awaits every future, concurrently, in order.
async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}
