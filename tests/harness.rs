//! Checks of the shared test harness in `tests/support` against real Redis and PostgreSQL.

mod support;

use redis::AsyncCommands;
use support::{RedisServer, TestDb};

#[tokio::test]
async fn redis_keys_are_prefixed_per_test() {
    let Some(first) = support::redis("redis_keys_are_prefixed_per_test").await else {
        return;
    };
    let Some(second) = support::redis("redis_keys_are_prefixed_per_test").await else {
        return;
    };
    assert_ne!(first.prefix, second.prefix);
    assert!(first.key("a").starts_with(&first.prefix));

    let mut conn = first.conn();
    let key = first.key("greeting");
    let () = conn.set(&key, "hello").await.unwrap();
    let value: String = conn.get(&key).await.unwrap();
    assert_eq!(value, "hello");

    let missing: Option<String> = second.conn().get(second.key("greeting")).await.unwrap();
    assert_eq!(
        missing, None,
        "the second prefix must not see the first one's key"
    );
}

#[tokio::test]
async fn redis_keys_are_deleted_on_drop() {
    let Some(redis) = support::redis("redis_keys_are_deleted_on_drop").await else {
        return;
    };
    let Some(observer) = support::redis("redis_keys_are_deleted_on_drop_observer").await else {
        return;
    };
    let keys: Vec<String> = (0..25).map(|i| redis.key(&format!("k{i}"))).collect();
    let mut conn = redis.conn();
    for key in &keys {
        let () = conn.set(key, 1).await.unwrap();
    }
    let mut observer_conn = observer.conn();
    let present: i64 = observer_conn.exists(&keys).await.unwrap();
    assert_eq!(present, 25);

    drop(redis);

    let present: i64 = observer_conn.exists(&keys).await.unwrap();
    assert_eq!(present, 0, "keys under a dropped prefix must be gone");
}

async fn item_ids(db: &TestDb) -> Vec<i32> {
    sqlx::query_scalar("SELECT id FROM items ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn schema_exists(db: &TestDb, schema: &str) -> bool {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(schema)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    count == 1
}

#[tokio::test]
async fn postgres_schemas_are_isolated_and_dropped() {
    let Some(first) = support::postgres("postgres_schemas_are_isolated_and_dropped").await else {
        return;
    };
    let Some(second) = support::postgres("postgres_schemas_are_isolated_and_dropped").await else {
        return;
    };
    assert_ne!(first.schema, second.schema);
    assert!(first.schema.len() <= 63);

    for (db, ids) in [(&first, [1, 2]), (&second, [10, 20])] {
        sqlx::query("CREATE TABLE items (id int)")
            .execute(&db.pool)
            .await
            .unwrap();
        for id in ids {
            sqlx::query("INSERT INTO items (id) VALUES ($1)")
                .bind(id)
                .execute(&db.pool)
                .await
                .unwrap();
        }
    }
    assert_eq!(item_ids(&first).await, [1, 2]);
    assert_eq!(item_ids(&second).await, [10, 20]);

    let search_path: String = sqlx::query_scalar("SHOW search_path")
        .fetch_one(&first.pool)
        .await
        .unwrap();
    assert_eq!(search_path, first.schema);

    let dropped = first.schema.clone();
    assert!(schema_exists(&second, &dropped).await);
    drop(first);
    assert!(
        !schema_exists(&second, &dropped).await,
        "schema {dropped} must be dropped with its TestDb"
    );
    assert_eq!(item_ids(&second).await, [10, 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cleanup_works_on_a_multi_thread_runtime() {
    let Some(db) = support::postgres("postgres_cleanup_works_on_a_multi_thread_runtime").await
    else {
        return;
    };
    let Some(observer) = support::postgres("postgres_cleanup_observer").await else {
        return;
    };
    sqlx::query("CREATE TABLE items (id int)")
        .execute(&db.pool)
        .await
        .unwrap();
    let schema = db.schema.clone();
    drop(db);
    assert!(!schema_exists(&observer, &schema).await);
}

async fn set_get(url: &str, key: &str, value: &str) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let () = conn.set(key, value).await?;
    conn.get(key).await
}

#[tokio::test]
async fn redis_server_stops_and_restarts_on_the_same_port() {
    let Some(mut server) =
        RedisServer::start("redis_server_stops_and_restarts_on_the_same_port").await
    else {
        return;
    };
    assert!(server.is_running());
    let url = server.url();
    assert_eq!(url, format!("redis://127.0.0.1:{}", server.port()));
    assert_eq!(set_get(&url, "k", "before").await.unwrap(), "before");

    server.stop().await;
    assert!(!server.is_running());
    let client = redis::Client::open(url.as_str()).unwrap();
    assert!(
        client.get_multiplexed_async_connection().await.is_err(),
        "a stopped server must refuse connections"
    );

    server.restart().await;
    assert!(server.is_running());
    assert_eq!(server.url(), url);
    assert_eq!(set_get(&url, "k", "after").await.unwrap(), "after");
}

#[tokio::test]
async fn redis_servers_get_distinct_ports() {
    let Some(first) = RedisServer::start("redis_servers_get_distinct_ports").await else {
        return;
    };
    let Some(second) = RedisServer::start("redis_servers_get_distinct_ports").await else {
        return;
    };
    assert_ne!(first.port(), second.port());
    let port = first.port();
    drop(first);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "dropping a RedisServer must stop its process"
    );
    assert_eq!(set_get(&second.url(), "k", "v").await.unwrap(), "v");
}
