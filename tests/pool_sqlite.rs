//! `perfkit::pool` on SQLite: in-memory pools share one database, file pools open several
//! connections, and the statistics and errors match PostgreSQL's.
#![cfg(feature = "sqlite")]

use std::time::{Duration, Instant};

use perfkit::pool::{Error, SqlitePool, SqlitePoolBuilder};

async fn count(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&**pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_in_memory_pool_shares_one_database_across_acquires() {
    let pool = SqlitePoolBuilder::new("sqlite::memory:")
        .pool_size(5)
        .max_overflow(5)
        .build()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&*pool)
        .await
        .unwrap();
    for body in ["a", "b", "c"] {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("INSERT INTO notes VALUES (?)")
            .bind(body)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    assert_eq!(count(&pool).await, 3);

    let stats = pool.stats();
    assert_eq!(
        (stats.min, stats.max),
        (1, 1),
        "one connection, whatever was asked"
    );
    assert_eq!(stats.size, 1);
    assert_eq!(stats.acquires, 3);
}

#[tokio::test]
async fn in_memory_data_survives_idle_time_and_recycling() {
    // One connection asked for: recycling or reaping it would close the database's last
    // connection, and SQLite would drop the database with it.
    let pool = SqlitePoolBuilder::new("sqlite::memory:")
        .pool_size(1)
        .max_overflow(0)
        .recycle(Duration::from_millis(50))
        .idle_timeout(Duration::from_millis(50))
        .pre_ping_after(Duration::ZERO)
        .build()
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('kept')")
        .execute(&*pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = pool.acquire().await.unwrap();
    let body: String = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        body, "kept",
        "closing the only connection would lose the database"
    );
}

#[tokio::test]
async fn two_in_memory_pools_do_not_share_data() {
    let first = SqlitePoolBuilder::new("sqlite::memory:")
        .build()
        .await
        .unwrap();
    let second = SqlitePoolBuilder::new("sqlite::memory:")
        .build()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&*first)
        .await
        .unwrap();
    let err = sqlx::query("SELECT * FROM notes")
        .execute(&*second)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such table"), "{err}");
}

#[tokio::test]
async fn a_busy_in_memory_pool_times_out_saying_its_connection_is_in_use() {
    let pool = SqlitePoolBuilder::new("sqlite::memory:")
        .acquire_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let _held = pool.acquire().await.unwrap();
    let started = Instant::now();
    let err = pool.acquire().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    let Error::AcquireTimeout { cause, url, .. } = &err else {
        panic!("expected an acquire timeout, got {err:?}");
    };
    assert_eq!(cause, "its only connection is in use");
    assert_eq!(url, "sqlite::memory:");
    assert_eq!(pool.stats().acquire_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_pool_opens_several_connections() {
    let dir = std::env::temp_dir().join(format!(
        "perfkit-sqlite-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pool.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = SqlitePoolBuilder::new(&url)
        .pool_size(3)
        .max_overflow(1)
        .build()
        .await
        .unwrap();
    let stats = pool.stats();
    assert_eq!((stats.min, stats.max), (3, 4));
    assert_eq!(stats.size, 3, "build() opens pool_size connections");

    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&*pool)
        .await
        .unwrap();
    let mut a = pool.acquire().await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    sqlx::query("INSERT INTO notes VALUES ('from a')")
        .execute(&mut *a)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&mut *b)
        .await
        .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(pool.stats().in_use, 2);
    drop((a, b));
    pool.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_missing_file_fails_the_build_with_a_connect_error() {
    let path = std::env::temp_dir()
        .join("perfkit-no-such-dir")
        .join("missing.db");
    let err = SqlitePoolBuilder::new(format!("sqlite://{}", path.display()))
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    let Error::Connect { url, .. } = &err else {
        panic!("expected a connect error, got {err:?}");
    };
    assert!(url.ends_with("missing.db"), "{url}");
}

#[tokio::test]
async fn from_env_defaults_to_an_in_memory_database() {
    // Only meaningful where DATABASE_URL is not a SQLite URL of its own.
    if std::env::var("DATABASE_URL").is_ok_and(|url| !url.trim().is_empty()) {
        return;
    }
    let pool = SqlitePoolBuilder::from_env()
        .unwrap()
        .build()
        .await
        .unwrap();
    assert_eq!(pool.url(), "sqlite::memory:");
    assert_eq!(pool.stats().max, 1);
}
