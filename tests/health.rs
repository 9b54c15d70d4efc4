//! `perfkit::health` checks against real PostgreSQL and a private Redis server.
#![cfg(all(feature = "health", any(feature = "postgres", feature = "redis")))]

mod support;

use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use perfkit::health::{HealthMonitor, HealthService, Status};
use tower::ServiceExt;

/// Answers one GET for `path`: its status, JSON body and how long the service took.
async fn probe(service: &HealthService, path: &str) -> (StatusCode, serde_json::Value, Duration) {
    let started = Instant::now();
    let response = service
        .clone()
        .oneshot(Request::get(path).body(()).unwrap())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap(), elapsed)
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn sql_check_is_healthy_against_postgres() {
    use perfkit::health::SqlCheck;

    let Some(db) = support::postgres("sql_check_is_healthy_against_postgres").await else {
        return;
    };
    let monitor = HealthMonitor::builder()
        .check(SqlCheck::new(db.pool.clone()))
        .build();
    monitor.start().await;

    let report = monitor.report();
    assert_eq!(report.status, Status::Healthy, "{report:?}");
    let database = &report.checks["database"];
    assert!(database.latency_ms > 0.0);
    assert!(database.latency_ms < 5000.0);

    let (status, body, _) = probe(&monitor.service(), "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["database"]["status"], "healthy");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn sql_check_reports_the_pool_error_when_postgres_is_unreachable() {
    use perfkit::health::SqlCheck;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy_with(
            PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username("postgres"),
        );
    let monitor = HealthMonitor::builder()
        .check(SqlCheck::new(pool).name("primary"))
        .timeout(Duration::from_secs(5))
        .build();

    let started = Instant::now();
    monitor.refresh().await;
    assert!(started.elapsed() < Duration::from_secs(5));

    let report = monitor.report();
    assert_eq!(report.status, Status::Unhealthy);
    let error = report.checks["primary"].error.as_deref().unwrap();
    assert!(error.starts_with("SELECT 1 failed: "), "{error}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_check_follows_a_server_that_stops_and_restarts() {
    use perfkit::health::RedisCheck;
    use redis::aio::ConnectionManagerConfig;
    use support::RedisServer;

    const TEST: &str = "redis_check_follows_a_server_that_stops_and_restarts";
    let Some(mut server) = RedisServer::start(TEST).await else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(100));
    let conn = client
        .get_connection_manager_with_config(config)
        .await
        .unwrap();

    let monitor = HealthMonitor::builder()
        .check(RedisCheck::new(conn).name("cache"))
        .timeout(Duration::from_secs(2))
        .build();
    let service = monitor.service();
    monitor.start().await;
    assert_eq!(monitor.report().status, Status::Healthy);
    let (status, body, _) = probe(&service, "/health/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    server.stop().await;

    // Probes answer from the last results while the round that finds the server gone runs.
    let refresh = tokio::spawn({
        let monitor = monitor.clone();
        async move { monitor.refresh().await }
    });
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let (status, _, elapsed) = probe(&service, "/health").await;
        assert!(status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE);
        slowest = slowest.max(elapsed);
    }
    refresh.await.unwrap();
    for _ in 0..200 {
        let (_, _, elapsed) = probe(&service, "/health").await;
        slowest = slowest.max(elapsed);
    }
    eprintln!("slowest of 400 /health probes with Redis down: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(10),
        "slowest probe took {slowest:?}"
    );

    let report = monitor.report();
    assert_eq!(report.status, Status::Unhealthy, "{report:?}");
    let cache = &report.checks["cache"];
    assert_eq!(cache.status, Status::Unhealthy);
    let error = cache.error.as_deref().unwrap();
    assert!(error.starts_with("PING failed: "), "{error}");
    let (status, body, _) = probe(&service, "/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        serde_json::json!({ "status": "not_ready", "failing": ["cache"] })
    );
    let (status, body, _) = probe(&service, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unhealthy");
    let (status, _, _) = probe(&service, "/health/live").await;
    assert_eq!(status, StatusCode::OK);

    server.restart().await;
    // The connection manager reconnects in the background; give it a few rounds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        monitor.refresh().await;
        if monitor.report().status == Status::Healthy || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        monitor.report().status,
        Status::Healthy,
        "{:?}",
        monitor.report()
    );
    let (status, body, _) = probe(&service, "/health/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({ "status": "ready" }));
}
