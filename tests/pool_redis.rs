//! The Redis handle and pool against a real server: round trips, connect and acquire errors
//! with their causes, outages and reconnects on a private `redis-server`, connections
//! the pool must not hand out again, leak reports and per-connection lifetimes.
#![cfg(feature = "redis")]

mod support;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use perfkit::pool::{Error, RedisPoolBuilder};
use redis::AsyncCommands;
use support::{RedisServer, capture::Capture};

/// Slack for scheduling and connection set-up on a loaded test machine.
const SLACK: Duration = Duration::from_millis(1500);

async fn client_id(conn: &mut perfkit::pool::PooledRedisConnection) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn handle_round_trips_set_and_get() {
    let Some(redis) = support::redis("handle_round_trips_set_and_get").await else {
        return;
    };
    let handle = RedisPoolBuilder::new(&redis.url).build().await.unwrap();
    assert_eq!(handle.url(), redis.url);

    let key = redis.key("greeting");
    let mut conn = handle.connection();
    let () = conn.set(&key, "hello").await.unwrap();
    let value: String = conn.get(&key).await.unwrap();
    assert_eq!(value, "hello");
    assert_eq!(
        handle.stats().acquires,
        0,
        "commands on connection() are not counted"
    );

    let mut counted = handle.clone();
    let value: String = counted.get(&key).await.unwrap();
    assert_eq!(value, "hello");
    handle.ping().await.unwrap();
    let stats = handle.stats();
    assert_eq!(stats.acquires, 2);
    assert_eq!((stats.size, stats.in_use, stats.idle), (1, 0, 1));
    assert!(stats.acquire_max_ms > 0.0);

    // `from_env` reads the same REDIS_URL the harness used.
    let from_env = RedisPoolBuilder::from_env().unwrap().build().await.unwrap();
    let value: String = from_env.connection().get(&key).await.unwrap();
    assert_eq!(value, "hello");
}

#[tokio::test]
async fn handle_build_against_a_refused_port_names_the_url_without_its_password() {
    let result = RedisPoolBuilder::new("redis://:secret@127.0.0.1:1")
        .connection_timeout(Duration::from_secs(1))
        .reconnect_retries(0)
        .build()
        .await;
    let error = result.unwrap_err();
    let Error::Connect { url, source } = &error else {
        panic!("expected a connect error, got {error:?}");
    };
    assert_eq!(url, "redis://:***@127.0.0.1:1");
    assert!(
        source.to_string().to_lowercase().contains("refused"),
        "{source}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("cannot connect to redis://:***@127.0.0.1:1"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    assert!(!format!("{error:?}").contains("secret"));

    // A lazy handle starts anyway and reports the outage on use.
    let lazy = RedisPoolBuilder::new("redis://:secret@127.0.0.1:1")
        .reconnect_retries(0)
        .build_lazy()
        .unwrap();
    assert!(lazy.ping().await.is_err());
}

#[tokio::test]
async fn handle_fails_fast_while_the_server_is_down_and_reconnects_after() {
    let Some(mut server) =
        RedisServer::start("handle_fails_fast_while_the_server_is_down_and_reconnects_after").await
    else {
        return;
    };
    let response_timeout = Duration::from_secs(1);
    let handle = RedisPoolBuilder::new(server.url())
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(response_timeout)
        .build()
        .await
        .unwrap();
    let mut conn = handle.connection();
    let () = conn.set("k", "before").await.unwrap();

    server.stop().await;
    for attempt in 0..5 {
        let started = Instant::now();
        let result: redis::RedisResult<Option<String>> = conn.get("k").await;
        let took = started.elapsed();
        assert!(result.is_err(), "attempt {attempt}: the server is down");
        assert!(
            took < response_timeout + SLACK,
            "attempt {attempt} took {took:?}: commands must fail, not hang"
        );
    }

    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.set::<_, _, ()>("k", "after").await {
            Ok(()) => break,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the handle did not reconnect: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let value: String = handle.connection().get("k").await.unwrap();
    assert_eq!(value, "after");
    handle.ping().await.unwrap();
}

#[tokio::test]
async fn exhausted_pool_times_out_saying_all_connections_are_in_use() {
    let Some(redis) =
        support::redis("exhausted_pool_times_out_saying_all_connections_are_in_use").await
    else {
        return;
    };
    let timeout = Duration::from_millis(300);
    let pool = RedisPoolBuilder::new(&redis.url)
        .max_connections(2)
        .connection_timeout(timeout)
        .build_pool()
        .await
        .unwrap();
    let first = pool.get().await.unwrap();
    let second = pool.get().await.unwrap();

    let started = Instant::now();
    let error = pool.get().await.unwrap_err();
    let took = started.elapsed();
    let Error::AcquireTimeout { url, waited, cause } = &error else {
        panic!("expected an acquire timeout, got {error:?}");
    };
    assert_eq!(url, &redis.url);
    assert_eq!(cause, "all 2 connections are in use");
    assert!(
        *waited >= timeout && took < timeout + SLACK,
        "{waited:?} / {took:?}"
    );
    assert!(
        error
            .to_string()
            .ends_with("; all 2 connections are in use"),
        "{error}"
    );

    let stats = pool.stats();
    assert_eq!(stats.acquire_timeouts, 1);
    assert_eq!(stats.acquires, 2);
    assert_eq!(
        (stats.size, stats.in_use, stats.idle, stats.max),
        (2, 2, 0, 2)
    );
    assert_eq!(stats.utilisation, 1.0);

    drop(first);
    let mut third = pool.get().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut third).await.unwrap();
    assert_eq!(pong, "PONG");
    drop(second);
}

#[tokio::test]
async fn pool_against_a_stopped_server_times_out_with_the_connect_error() {
    let Some(mut server) =
        RedisServer::start("pool_against_a_stopped_server_times_out_with_the_connect_error").await
    else {
        return;
    };
    let url = server.url();
    server.stop().await;
    let builder = RedisPoolBuilder::new(&url)
        .max_connections(2)
        .connection_timeout(Duration::from_millis(500));

    let error = builder.clone().build_pool().await.unwrap_err();
    assert!(
        matches!(&error, Error::Connect { url: u, .. } if *u == url),
        "{error:?}"
    );

    let pool = builder.build_pool_lazy().unwrap();
    let error = pool.get().await.unwrap_err();
    let Error::AcquireTimeout { cause, .. } = &error else {
        panic!("expected an acquire timeout, got {error:?}");
    };
    assert!(cause.starts_with("last connect error: "), "{cause}");
    assert!(cause.to_lowercase().contains("refused"), "{cause}");
    assert_eq!(pool.stats().acquire_timeouts, 1);

    // Once the server is back the same pool serves, and the stale error is forgotten.
    server.restart().await;
    let mut conn = pool.get().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn pool_stats_reflect_connections_in_use_and_idle() {
    let Some(redis) = support::redis("pool_stats_reflect_connections_in_use_and_idle").await else {
        return;
    };
    let pool = RedisPoolBuilder::new(&redis.url)
        .max_connections(5)
        .min_idle(1)
        .build_pool()
        .await
        .unwrap();
    let stats = pool.stats();
    assert!(stats.size >= 1 && stats.in_use == 0, "{stats:?}");
    assert_eq!((stats.max, stats.min), (5, 1));

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.get().await.unwrap());
    }
    let stats = pool.stats();
    assert_eq!(stats.in_use, 3, "{stats:?}");
    assert_eq!(stats.acquires, 3);
    assert!((stats.utilisation - 0.6).abs() < 1e-9);

    held.pop();
    let stats = pool.stats();
    assert_eq!(stats.in_use, 2, "{stats:?}");
    assert!(stats.idle >= 1, "{stats:?}");
}

#[tokio::test]
async fn blpop_on_the_pool_while_the_handle_keeps_serving() {
    let Some(redis) = support::redis("blpop_on_the_pool_while_the_handle_keeps_serving").await
    else {
        return;
    };
    let builder = RedisPoolBuilder::new(&redis.url);
    let handle = builder.clone().build().await.unwrap();
    let pool = builder.build_pool().await.unwrap();
    let queue = redis.key("jobs");

    let waiter = {
        let pool = pool.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut conn = pool.get().await.unwrap();
            let popped: Option<(String, String)> = conn.blpop(&queue, 4.0).await.unwrap();
            popped
        })
    };

    // The blocked pool connection holds up nothing on the handle.
    let mut conn = handle.connection();
    let key = redis.key("counter");
    let started = Instant::now();
    for _ in 0..200 {
        let _: i64 = conn.incr(&key, 1).await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        !waiter.is_finished(),
        "BLPOP returned before anything was pushed"
    );
    let count: i64 = conn.get(&key).await.unwrap();
    assert_eq!(count, 200);

    let _: i64 = conn.rpush(&queue, "job-1").await.unwrap();
    let popped = waiter.await.unwrap();
    assert_eq!(popped, Some((queue, "job-1".to_owned())));
}

#[tokio::test]
async fn pool_reuses_clean_connections_and_closes_those_left_in_a_foreign_state() {
    let Some(redis) =
        support::redis("pool_reuses_clean_connections_and_closes_those_left_in_a_foreign_state")
            .await
    else {
        return;
    };
    let pool = RedisPoolBuilder::new(&redis.url)
        .max_connections(1)
        .build_pool()
        .await
        .unwrap();
    let list = redis.key("list");

    // A server error (WRONGTYPE) leaves the connection usable.
    let mut conn = pool.get().await.unwrap();
    let id = client_id(&mut conn).await;
    let _: i64 = conn.rpush(&list, "x").await.unwrap();
    let wrong: redis::RedisResult<Option<String>> = conn.get(&list).await;
    assert!(wrong.is_err());
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    assert_eq!(
        client_id(&mut conn).await,
        id,
        "a clean connection is reused"
    );

    // An open MULTI must not reach the next task.
    let () = redis::cmd("MULTI").query_async(&mut conn).await.unwrap();
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    let next = client_id(&mut conn).await;
    assert_ne!(next, id, "a connection inside MULTI is closed");

    // Nor may the reply of a command cancelled while waiting for it.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        conn.blpop::<_, Option<(String, String)>>(redis.key("empty"), 2.0),
    )
    .await;
    assert!(cancelled.is_err(), "BLPOP should still be blocked");
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    let last = client_id(&mut conn).await;
    assert_ne!(last, next, "a connection awaiting a reply is closed");
    let len: i64 = conn.llen(&list).await.unwrap();
    assert_eq!(len, 1);

    // A response timeout changed for one checkout is restored for the next.
    conn.set_response_timeout(Some(Duration::from_millis(50)));
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    assert_eq!(client_id(&mut conn).await, last);
    let popped: Option<(String, String)> = conn.blpop(redis.key("empty"), 0.2).await.unwrap();
    assert_eq!(popped, None, "the default 5 s response timeout is back");
}

#[tokio::test]
async fn watch_multi_exec_aborts_when_the_key_changes() {
    let Some(redis) = support::redis("watch_multi_exec_aborts_when_the_key_changes").await else {
        return;
    };
    let builder = RedisPoolBuilder::new(&redis.url);
    let handle = builder.clone().build().await.unwrap();
    let pool = builder.build_pool().await.unwrap();
    let key = redis.key("balance");
    let () = handle.connection().set(&key, 10).await.unwrap();

    let mut conn = pool.get().await.unwrap();
    let () = redis::cmd("WATCH")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let balance: i64 = conn.get(&key).await.unwrap();
    // Another client writes the key between the read and the transaction.
    let () = handle.connection().set(&key, 99).await.unwrap();
    let committed: Option<()> = redis::pipe()
        .atomic()
        .set(&key, balance + 5)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(committed, None, "EXEC must abort");
    let value: i64 = handle.connection().get(&key).await.unwrap();
    assert_eq!(value, 99);
}

#[tokio::test]
async fn a_completed_transaction_keeps_its_connection() {
    let Some(redis) = support::redis("a_completed_transaction_keeps_its_connection").await else {
        return;
    };
    let pool = RedisPoolBuilder::new(&redis.url)
        .max_connections(1)
        .build_pool()
        .await
        .unwrap();
    let key = redis.key("balance");

    let mut conn = pool.get().await.unwrap();
    let before = client_id(&mut conn).await;
    let () = redis::cmd("WATCH")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let balance: Option<i64> = conn.get(&key).await.unwrap();
    let committed: Option<()> = redis::pipe()
        .atomic()
        .set(&key, balance.unwrap_or(0) + 1)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(committed.is_some(), "EXEC must commit");
    drop(conn);

    // EXEC ended both the transaction and the WATCH: the connection is clean and reused.
    let mut conn = pool.get().await.unwrap();
    assert_eq!(client_id(&mut conn).await, before);
}

#[tokio::test]
async fn pool_with_pre_ping_serves_at_once_after_a_server_restart() {
    let Some(mut server) =
        RedisServer::start("pool_with_pre_ping_serves_at_once_after_a_server_restart").await
    else {
        return;
    };
    let builder = RedisPoolBuilder::new(server.url())
        .max_connections(1)
        .connection_timeout(Duration::from_secs(2));
    let plain = builder.clone().build_pool().await.unwrap();
    let checked = builder.pre_ping(true).build_pool().await.unwrap();

    server.restart().await;

    // The checked pool notices the dead connection at checkout and replaces it.
    let mut conn = checked.get().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    // Without the check the first command fails, and that connection is not reused.
    let mut conn = plain.get().await.unwrap();
    let first: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
    assert!(first.is_err(), "the connection predates the restart");
    drop(conn);
    let mut conn = plain.get().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn pubsub_receives_what_the_handle_publishes() {
    let Some(redis) = support::redis("pubsub_receives_what_the_handle_publishes").await else {
        return;
    };
    let builder = RedisPoolBuilder::new(&redis.url);
    let handle = builder.clone().build().await.unwrap();
    let pool = builder.build_pool_lazy().unwrap();
    let channel = redis.key("events");

    let mut pubsub = pool.pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    // PUBLISH answers how many subscribers received the message.
    let receivers: i64 = handle
        .connection()
        .publish(&channel, "hello")
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    assert_eq!(pool.stats().size, 0, "the pub/sub connection is not pooled");
}

// ===== Leak reports and lifetimes =====

#[tokio::test(flavor = "current_thread")]
async fn a_leaked_pool_connection_is_reported_once_with_its_location() {
    let Some(redis) = support::redis("a_leaked_pool_connection_is_reported_once").await else {
        return;
    };
    let (capture, _guard) = Capture::install();
    let pool = RedisPoolBuilder::new(&redis.url)
        .max_connections(2)
        .leak_threshold(Duration::from_millis(300))
        .build_pool()
        .await
        .unwrap();

    let returned = pool.get().await.unwrap();
    drop(returned);
    let line = line!() + 1;
    let mut held = pool.get().await.unwrap();
    let () = redis::cmd("PING").query_async(&mut held).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;

    let location = format!("{}:{line}", file!());
    let reports = capture.warnings_containing("leak threshold");
    assert_eq!(reports.len(), 1, "{:?}", capture.events());
    assert!(reports[0].text.contains(&location), "{}", reports[0].text);
    assert!(reports[0].text.contains("held_ms="), "{}", reports[0].text);
    assert!(
        reports[0].text.contains("as soon as the commands are done"),
        "{}",
        reports[0].text
    );
    assert_eq!(pool.stats().leaks_reported, 1);

    // Reported once, however long it is held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(capture.warnings_containing("leak threshold").len(), 1);
    assert_eq!(pool.stats().leaks_reported, 1);
    drop(held);

    // Without a threshold nothing is watched.
    let unwatched = RedisPoolBuilder::new(&redis.url)
        .max_connections(1)
        .leak_threshold(None)
        .build_pool()
        .await
        .unwrap();
    let held = unwatched.get().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(unwatched.stats().leaks_reported, 0);
    assert_eq!(capture.warnings_containing("leak threshold").len(), 1);
    drop(held);
}

#[tokio::test]
async fn connections_past_their_lifetime_are_replaced_on_return_and_on_checkout() {
    let Some(redis) = support::redis("connections_past_their_lifetime_are_replaced").await else {
        return;
    };
    // Every connection lives between 270 and 330 ms.
    let pool = RedisPoolBuilder::new(&redis.url)
        .max_connections(1)
        .max_lifetime(Duration::from_millis(300))
        .build_pool()
        .await
        .unwrap();

    // Returned past its lifetime: closed at once.
    let mut conn = pool.get().await.unwrap();
    let first = client_id(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(conn);
    assert_eq!(pool.stats().size, 0, "{:?}", pool.stats());

    // Returned young, then left idle past its lifetime: replaced at the next checkout.
    let mut conn = pool.get().await.unwrap();
    let second = client_id(&mut conn).await;
    assert_ne!(second, first);
    drop(conn);
    let mut conn = pool.get().await.unwrap();
    assert_eq!(
        client_id(&mut conn).await,
        second,
        "a young connection is reused"
    );
    drop(conn);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut conn = pool.get().await.unwrap();
    let third = client_id(&mut conn).await;
    assert_ne!(third, second);
    assert_eq!(pool.stats().acquire_timeouts, 0);
}

#[tokio::test]
async fn connections_opened_together_are_not_all_retired_together() {
    let Some(redis) = support::redis("connections_opened_together_are_not_all_retired").await
    else {
        return;
    };
    const N: usize = 16;
    // Long enough that a loaded machine's scheduling delays are small against the window.
    let lifetime = Duration::from_secs(6);
    let pool = RedisPoolBuilder::new(&redis.url)
        .max_connections(N as u32)
        .max_lifetime(lifetime)
        .build_pool()
        .await
        .unwrap();

    // Open N connections at once.
    let opened = Instant::now();
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(pool.get().await.unwrap());
    }
    let mut original = HashSet::new();
    for conn in &mut held {
        original.insert(client_id(conn).await);
    }
    assert_eq!(original.len(), N);
    held.clear();

    // Halfway through the window (5.4 s to 6.6 s), some have outlived their lifetime and
    // some have not.
    tokio::time::sleep_until((opened + lifetime).into()).await;
    for _ in 0..N {
        held.push(pool.get().await.unwrap());
    }
    let mut survivors = 0;
    for conn in &mut held {
        if original.contains(&client_id(conn).await) {
            survivors += 1;
        }
    }
    assert!(
        opened.elapsed() < lifetime + Duration::from_millis(300),
        "the checkouts took too long for the test to mean anything"
    );
    assert!(
        (1..N).contains(&survivors),
        "{survivors} of {N} connections outlived the middle of the window: lifetimes are not spread"
    );

    // Past the window, none is left.
    tokio::time::sleep_until((opened + lifetime.mul_f64(1.15)).into()).await;
    held.clear();
    for _ in 0..N {
        held.push(pool.get().await.unwrap());
    }
    for conn in &mut held {
        assert!(!original.contains(&client_id(conn).await));
    }
}
