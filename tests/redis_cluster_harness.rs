//! Checks of the Redis Cluster harness in `tests/support/redis_cluster.rs`, through redis-rs's
//! own async cluster client.

mod support;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use support::redis_cluster::{MASTERS, RedisCluster};

/// Bound of every polling loop below.
const WAIT: Duration = Duration::from_secs(20);

async fn cluster_connection(cluster: &RedisCluster) -> ClusterConnection {
    ClusterClient::builder(cluster.seed_urls())
        .retries(2)
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(1))
        .build()
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("cluster connection")
}

/// A key on master `master`, under `prefix`, with a hash tag of its own.
async fn key_on(cluster: &RedisCluster, prefix: &str, master: usize) -> String {
    for n in 0.. {
        let key = format!("{prefix}{{tag{n}}}:value");
        if cluster.node_for_key(&key).await == master {
            return key;
        }
    }
    unreachable!()
}

#[tokio::test]
async fn cluster_serves_keys_spread_over_all_three_masters() {
    const TEST: &str = "cluster_serves_keys_spread_over_all_three_masters";
    let started = Instant::now();
    let Some(cluster) = RedisCluster::start(TEST).await else {
        return;
    };
    eprintln!("{TEST}: cluster up in {:?}", started.elapsed());
    let urls = cluster.urls_env();
    assert_eq!(urls.split(',').count(), MASTERS);
    assert!(
        urls.split(',')
            .all(|url| url.starts_with("redis://127.0.0.1:"))
    );

    let mut conn = cluster_connection(&cluster).await;
    let prefix = "spread:";
    for n in 0..1000 {
        let () = conn
            .set(format!("{prefix}{{user{n}}}:name"), n)
            .await
            .unwrap();
    }
    for n in 0..1000 {
        let value: i64 = conn.get(format!("{prefix}{{user{n}}}:name")).await.unwrap();
        assert_eq!(value, n);
    }

    let counts = cluster.count_keys_per_master(prefix).await;
    assert_eq!(counts.iter().sum::<usize>(), 1000, "{counts:?}");
    assert!(
        counts.iter().all(|&count| count > 200),
        "1000 distinct hash tags should land on every master: {counts:?}"
    );
    let mut expected = [0; MASTERS];
    for n in 0..100 {
        expected[cluster
            .node_for_key(&format!("{prefix}{{user{n}}}:name"))
            .await] += 1;
    }
    let sample = cluster
        .count_keys_per_master(&format!("{prefix}{{user"))
        .await;
    assert_eq!(sample, counts, "a narrower prefix is still every key");
    assert!(expected.iter().all(|&count| count > 0), "{expected:?}");
}

#[tokio::test]
async fn a_stopped_master_fails_its_slots_only_and_serves_them_again_after_restart() {
    const TEST: &str = "a_stopped_master_fails_its_slots_only_and_serves_them_again_after_restart";
    let Some(mut cluster) = RedisCluster::start(TEST).await else {
        return;
    };
    let mut conn = cluster_connection(&cluster).await;
    let down = key_on(&cluster, "restart:", 1).await;
    let up = key_on(&cluster, "restart:", 0).await;
    let () = conn.set(&down, "before").await.unwrap();
    let () = conn.set(&up, "before").await.unwrap();

    cluster.stop_master(1).await;
    let result = tokio::time::timeout(WAIT, conn.get::<_, Option<String>>(&down)).await;
    assert!(
        matches!(result, Ok(Err(_))),
        "a key of the stopped master must fail, got {result:?}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = conn.set::<_, _, ()>(&up, "during");
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => break,
            Ok(Err(err)) => assert!(
                Instant::now() < deadline,
                "the other masters must keep serving their slots: {err}"
            ),
            Err(_) => assert!(Instant::now() < deadline, "SET on a live master hung"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cluster.start_master(1).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = conn.set::<_, _, ()>(&down, "after");
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(())) => break,
            Ok(Err(err)) => assert!(
                Instant::now() < deadline,
                "the restarted master's slots must be served again: {err}"
            ),
            Err(_) => assert!(Instant::now() < deadline, "SET after the restart hung"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let value: String = conn.get(&down).await.unwrap();
    assert_eq!(value, "after");
    let value: String = conn.get(&up).await.unwrap();
    assert_eq!(value, "during");
}

#[tokio::test]
async fn clusters_started_side_by_side_do_not_share_ports() {
    const TEST: &str = "clusters_started_side_by_side_do_not_share_ports";
    let (first, second) = tokio::join!(RedisCluster::start(TEST), RedisCluster::start(TEST));
    let (Some(first), Some(second)) = (first, second) else {
        return;
    };
    let mut ports = first.ports();
    ports.extend(second.ports());
    let count = ports.len();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        ports.len(),
        count,
        "{:?} {:?}",
        first.ports(),
        second.ports()
    );

    let key = "{shared}:key";
    let mut one = cluster_connection(&first).await;
    let mut two = cluster_connection(&second).await;
    let () = one.set(key, "first").await.unwrap();
    let missing: Option<String> = two.get(key).await.unwrap();
    assert_eq!(missing, None, "the clusters must be apart");
}
