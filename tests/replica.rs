//! `ReplicatedPool` on a real PostgreSQL primary and a streaming replica of it.
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use perfkit::pool::{
    PgPoolBuilder, PrimaryPin, ReplicaStatus, ReplicatedPool, ReplicatedPoolBuilder,
};
use support::pg_replica::PgReplicaSet;

const MAX_LAG: Duration = Duration::from_millis(500);
const INTERVAL: Duration = Duration::from_millis(100);
/// How long a test waits for the pool to notice a change.
const NOTICE: Duration = Duration::from_secs(15);

async fn pool(set: &PgReplicaSet) -> ReplicatedPool {
    let member = |url: String| {
        PgPoolBuilder::new(url)
            .pool_size(1)
            .max_overflow(2)
            .acquire_timeout(Duration::from_secs(2))
    };
    ReplicatedPoolBuilder::new(member(set.primary_url()))
        .replica(member(set.replica_url()))
        .max_lag(MAX_LAG)
        .check_interval(INTERVAL)
        .check_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("the replicated pool builds")
}

async fn in_recovery(pool: &perfkit::pool::PgPool) -> bool {
    sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(pool.sqlx())
        .await
        .unwrap()
}

async fn visible(pool: &perfkit::pool::PgPool, id: i32) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM items WHERE id = $1)")
        .bind(id)
        .fetch_one(pool.sqlx())
        .await
        .unwrap()
}

/// Waits until `ready` holds, panicking with `what` after [`NOTICE`].
async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + NOTICE;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {NOTICE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reads_reach_the_replica_writes_the_primary_and_pins_the_primary() {
    let Some(set) = PgReplicaSet::start("reads_reach_the_replica").await else {
        return;
    };
    let pool = pool(&set).await;
    assert!(pool.is_serving(0), "{:?}", pool.stats());
    assert!(
        in_recovery(pool.reader()).await,
        "reads must reach the replica"
    );
    assert!(
        !in_recovery(pool.writer()).await,
        "writes must reach the primary"
    );
    assert!(!in_recovery(pool.primary()).await);

    sqlx::raw_sql("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1)")
        .execute(pool.writer().sqlx())
        .await
        .unwrap();
    // Pinned, the read that follows a write sees it at once.
    let pin = pool.pin();
    assert!(pin.is_active());
    assert!(!in_recovery(pool.reader_pinned(Some(&pin))).await);
    assert!(visible(pool.reader_pinned(Some(&pin)), 1).await);
    let expired = PrimaryPin::until(Instant::now());
    assert!(in_recovery(pool.reader_pinned(Some(&expired))).await);
    assert!(in_recovery(pool.reader_pinned(None)).await);

    // An idle primary does not make a caught-up replica look lagging.
    tokio::time::sleep(MAX_LAG * 4).await;
    assert!(pool.is_serving(0), "{:?}", pool.stats());
    let stats = pool.stats();
    assert_eq!(stats.replicas[0].status, ReplicaStatus::Serving);
    assert!(
        stats.replicas[0]
            .lag_ms
            .is_some_and(|lag| lag <= MAX_LAG.as_millis() as f64),
        "{stats:?}"
    );
    assert!(stats.replicas[0].reads >= 3, "{stats:?}");
    assert!(stats.pinned_reads >= 2, "{stats:?}");
    assert!(stats.primary.acquires == 0 || stats.primary.size >= 1);
}

#[tokio::test]
async fn a_stopped_replica_is_skipped_reads_fall_back_to_the_primary_and_it_comes_back() {
    let Some(mut set) = PgReplicaSet::start("a_stopped_replica_is_skipped").await else {
        return;
    };
    let pool = pool(&set).await;
    assert!(in_recovery(pool.reader()).await);

    set.stop_replica().await;
    eventually("skipping the stopped replica", || !pool.is_serving(0)).await;
    assert_eq!(pool.stats().replicas[0].status, ReplicaStatus::Down);
    let before = pool.stats().primary_reads;
    // No replica left: reads work, on the primary.
    assert!(!in_recovery(pool.reader()).await);
    assert!(pool.stats().primary_reads > before);

    set.start_replica().await;
    eventually("serving from the restarted replica", || pool.is_serving(0)).await;
    assert!(in_recovery(pool.reader()).await);
    assert_eq!(pool.stats().replicas[0].error, None);
}

#[tokio::test]
async fn a_lagging_replica_is_skipped_and_comes_back_once_it_catches_up() {
    let Some(set) = PgReplicaSet::start("a_lagging_replica_is_skipped").await else {
        return;
    };
    let pool = pool(&set).await;
    sqlx::raw_sql("CREATE TABLE items (id int PRIMARY KEY)")
        .execute(pool.writer().sqlx())
        .await
        .unwrap();
    let replica = pool.replicas().next().unwrap();
    let deadline = Instant::now() + NOTICE;
    while sqlx::query("SELECT 1 FROM items")
        .execute(replica.sqlx())
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the replica did not replay CREATE TABLE"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("the replica serving", || pool.is_serving(0)).await;

    set.pause_replay().await;
    sqlx::query("INSERT INTO items VALUES (7)")
        .execute(pool.writer().sqlx())
        .await
        .unwrap();
    eventually("skipping the lagging replica", || !pool.is_serving(0)).await;
    let stats = pool.stats();
    assert_eq!(
        stats.replicas[0].status,
        ReplicaStatus::Lagging,
        "{stats:?}"
    );
    assert!(
        stats.replicas[0].lag_ms.unwrap() > MAX_LAG.as_millis() as f64,
        "{stats:?}"
    );
    assert!(stats.replicas[0].behind_bytes.unwrap() > 0, "{stats:?}");
    // The replica really is behind, and reads no longer go there.
    assert!(!visible(replica, 7).await);
    assert!(visible(pool.reader(), 7).await);

    set.resume_replay().await;
    eventually("serving from the caught-up replica", || pool.is_serving(0)).await;
    assert!(in_recovery(pool.reader()).await);
    assert!(visible(pool.reader(), 7).await);
}

#[cfg(feature = "health")]
#[tokio::test]
async fn health_reports_every_member_and_degrades_while_a_replica_is_skipped() {
    use perfkit::health::{HealthMonitor, ReplicatedCheck, Status};

    let Some(mut set) = PgReplicaSet::start("health_reports_every_member").await else {
        return;
    };
    let pool = pool(&set).await;
    let monitor = ReplicatedCheck::new(&pool)
        .add_to(HealthMonitor::builder())
        .build();
    monitor.refresh().await;
    let report = monitor.report();
    assert_eq!(report.status, Status::Healthy, "{report:?}");
    assert!(report.checks["database.primary"].critical);
    assert!(!report.checks["database.replica.0"].critical);
    let pools = monitor.pool_stats();
    assert!(pools.contains_key("database.primary") && pools.contains_key("database.replica.0"));

    set.stop_replica().await;
    eventually("skipping the stopped replica", || !pool.is_serving(0)).await;
    monitor.refresh().await;
    let report = monitor.report();
    assert_eq!(report.status, Status::Degraded, "{report:?}");
    let error = report.checks["database.replica.0"].error.clone().unwrap();
    assert!(error.contains("down"), "{error}");
}
