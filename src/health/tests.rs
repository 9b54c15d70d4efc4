use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Router, routing::get};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Level;

use super::{report::rfc3339, *};

use crate::capture::{Capture, Captured, Value};

/// What the closures of the test checks return.
type Ready = std::future::Ready<Result<(), CheckError>>;

/// A check that passes or fails as `healthy` says, counting its runs.
fn switch(
    name: &'static str,
    healthy: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
) -> CheckFn<impl Fn() -> Ready + Send + Sync + 'static> {
    check_fn(name, move || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(if healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(CheckError::new("switched off"))
        })
    })
}

fn passing(name: &'static str) -> CheckFn<impl Fn() -> Ready + Send + Sync + 'static> {
    check_fn(name, || std::future::ready(Ok(())))
}

fn failing(name: &'static str) -> CheckFn<impl Fn() -> Ready + Send + Sync + 'static> {
    check_fn(name, || {
        std::future::ready(Err(CheckError::new("connection refused")))
    })
}

async fn send(service: &HealthService, method: Method, path: &str) -> Response<HealthBody> {
    service
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn get_json(service: &HealthService, path: &str) -> (StatusCode, serde_json::Value) {
    let response = send(service, Method::GET, path).await;
    let status = response.status();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

// ===== statuses =====

#[tokio::test(start_paused = true)]
async fn all_checks_passing_is_healthy() {
    let monitor = HealthMonitor::builder()
        .check(passing("database"))
        .check(passing("cache"))
        .build();
    monitor.refresh().await;

    let report = monitor.report();
    assert_eq!(report.status, Status::Healthy);
    assert!(report.is_ready());
    assert_eq!(report.checks.len(), 2);
    for result in report.checks.values() {
        assert_eq!(result.status, Status::Healthy);
        assert_eq!(result.error, None);
        assert!(result.critical);
    }
    assert!(report.checked_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn failing_non_critical_check_degrades() {
    let monitor = HealthMonitor::builder()
        .check(passing("database"))
        .check(failing("search").non_critical())
        .build();
    monitor.refresh().await;

    let report = monitor.report();
    assert_eq!(report.status, Status::Degraded);
    assert!(report.is_ready());
    let search = &report.checks["search"];
    assert_eq!(search.status, Status::Unhealthy);
    assert_eq!(search.error.as_deref(), Some("connection refused"));
    assert!(!search.critical);
}

#[tokio::test(start_paused = true)]
async fn failing_critical_check_is_unhealthy_whatever_the_others() {
    let monitor = HealthMonitor::builder()
        .check(failing("database"))
        .check(failing("search").non_critical())
        .check(passing("cache"))
        .build();
    monitor.refresh().await;

    let report = monitor.report();
    assert_eq!(report.status, Status::Unhealthy);
    assert!(!report.is_ready());
    assert_eq!(report.checks["database"].status, Status::Unhealthy);
    assert_eq!(report.checks["cache"].status, Status::Healthy);
}

#[tokio::test(start_paused = true)]
async fn monitor_without_checks_is_healthy() {
    let monitor = HealthMonitor::builder().build();
    assert_eq!(monitor.report().status, Status::Healthy);
    monitor.refresh().await;
    assert_eq!(monitor.report().status, Status::Healthy);
    assert!(monitor.report().checks.is_empty());
}

#[tokio::test(start_paused = true)]
async fn checks_not_run_yet_count_as_failing() {
    let monitor = HealthMonitor::builder().check(passing("database")).build();
    let report = monitor.report();
    assert_eq!(report.status, Status::Unhealthy);
    assert_eq!(report.checked_at, None);
    assert_eq!(report.age(), None);
    assert_eq!(
        report.checks["database"].error.as_deref(),
        Some("not checked yet")
    );

    let optional = HealthMonitor::builder()
        .check(passing("search").non_critical())
        .build();
    assert_eq!(optional.report().status, Status::Degraded);
}

#[tokio::test(start_paused = true)]
async fn a_check_named_like_an_earlier_one_replaces_it() {
    let monitor = HealthMonitor::builder()
        .check(failing("database"))
        .check(passing("database"))
        .build();
    monitor.refresh().await;
    let report = monitor.report();
    assert_eq!(report.checks.len(), 1);
    assert_eq!(report.status, Status::Healthy);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_check_fails_alone() {
    let monitor = HealthMonitor::builder()
        .check(check_fn("broken", || async {
            panic!("check bug");
        }))
        .check(passing("database"))
        .build();
    monitor.refresh().await;

    let report = monitor.report();
    assert_eq!(report.checks["broken"].status, Status::Unhealthy);
    assert_eq!(
        report.checks["broken"].error.as_deref(),
        Some("check panicked")
    );
    assert_eq!(report.checks["database"].status, Status::Healthy);
}

// ===== timeouts, intervals, refresh =====

#[tokio::test(start_paused = true)]
async fn slow_check_fails_at_its_timeout() {
    let monitor = HealthMonitor::builder()
        .check(check_fn("database", || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }))
        .timeout(Duration::from_secs(5))
        .build();

    let started = Instant::now();
    monitor.refresh().await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));

    let result = &monitor.report().checks["database"];
    assert_eq!(result.status, Status::Unhealthy);
    assert_eq!(result.error.as_deref(), Some("timed out after 5 s"));
    assert_eq!(result.latency_ms, 5000.0);
}

#[tokio::test(start_paused = true)]
async fn checks_run_concurrently_and_report_their_latency() {
    let slow = |name: &'static str, ms: u64| {
        check_fn(name, move || async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        })
    };
    let monitor = HealthMonitor::builder()
        .check(slow("a", 300))
        .check(slow("b", 1200))
        .check(slow("c", 700))
        .build();

    let started = Instant::now();
    monitor.refresh().await;
    assert_eq!(started.elapsed(), Duration::from_millis(1200));

    let report = monitor.report();
    assert_eq!(report.checks["a"].latency_ms, 300.0);
    assert_eq!(report.checks["b"].latency_ms, 1200.0);
    assert_eq!(report.checks["c"].latency_ms, 700.0);
}

#[tokio::test(start_paused = true)]
async fn background_task_reruns_checks_every_interval() {
    let runs = Arc::new(AtomicUsize::new(0));
    let monitor = HealthMonitor::builder()
        .check(switch(
            "database",
            Arc::new(AtomicBool::new(true)),
            runs.clone(),
        ))
        .interval(Duration::from_secs(10))
        .build();

    monitor.start().await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "start runs every check once"
    );

    tokio::time::sleep(Duration::from_millis(9_990)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 5);

    // A second start does not add a second background task.
    monitor.start().await;
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 7);
}

#[tokio::test(start_paused = true)]
async fn background_task_stops_with_the_last_monitor() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let runs = Arc::new(AtomicUsize::new(0));
    let monitor = HealthMonitor::builder()
        .check(switch(
            "database",
            Arc::new(AtomicBool::new(true)),
            runs.clone(),
        ))
        .interval(Duration::from_secs(10))
        .build();
    monitor.start().await;
    let service = monitor.service();
    drop(monitor);
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);

    // The service keeps the monitor, and the checks, alive.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    drop(service);
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(metrics.num_alive_tasks(), baseline);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn overrunning_round_delays_the_next_instead_of_overlapping() {
    let running = Arc::new(AtomicUsize::new(0));
    let overlapped = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let check = {
        let (running, overlapped, runs) = (running.clone(), overlapped.clone(), runs.clone());
        check_fn("slow", move || {
            let (running, overlapped, runs) = (running.clone(), overlapped.clone(), runs.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if running.fetch_add(1, Ordering::SeqCst) > 0 {
                    overlapped.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
    };
    let monitor = HealthMonitor::builder()
        .check(check)
        .interval(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .build();
    monitor.start().await;
    let refresh = tokio::spawn({
        let monitor = monitor.clone();
        async move { monitor.refresh().await }
    });
    tokio::time::sleep(Duration::from_secs(20)).await;
    refresh.await.unwrap();
    assert!(!overlapped.load(Ordering::SeqCst));
    let runs = runs.load(Ordering::SeqCst);
    assert!((6..=8).contains(&runs), "{runs} rounds of 3 s in 23 s");
}

/// A check that passes until `hang` is set, then sleeps for a minute before passing.
fn hanging(name: &'static str, hang: Arc<AtomicBool>) -> impl HealthCheck {
    check_fn(name, move || {
        let hang = hang.load(Ordering::SeqCst);
        async move {
            if hang {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_failing_check_shows_without_waiting_for_a_slow_one() {
    let hang = Arc::new(AtomicBool::new(false));
    let healthy = Arc::new(AtomicBool::new(true));
    let monitor = HealthMonitor::builder()
        .check(hanging("redis", hang.clone()))
        .check(switch("limiter", healthy.clone(), Arc::default()).non_critical())
        .interval(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build();
    monitor.start().await;
    let started = Instant::now();
    assert_eq!(monitor.report().status, Status::Healthy);
    hang.store(true, Ordering::SeqCst);
    healthy.store(false, Ordering::SeqCst);

    // The next round starts at 1 s: the limiter's failure shows at once, while the Redis
    // check is still within its interval and keeps its last result.
    tokio::time::sleep_until(started + Duration::from_millis(1_001)).await;
    let report = monitor.report();
    assert_eq!(report.checks["limiter"].status, Status::Unhealthy);
    assert_eq!(report.checks["redis"].status, Status::Healthy);
    assert_eq!(report.status, Status::Degraded);

    // One interval into the round, the Redis check has not answered: it counts as failing.
    tokio::time::sleep_until(started + Duration::from_millis(2_001)).await;
    let report = monitor.report();
    let redis = &report.checks["redis"];
    assert_eq!(redis.status, Status::Unhealthy);
    assert_eq!(
        redis.error.as_deref(),
        Some("no answer within 1 s; still running")
    );
    assert_eq!(redis.latency_ms, 1000.0);
    assert_eq!(report.status, Status::Unhealthy);
    let (status, ready) = get_json(&monitor.service(), "/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["failing"], serde_json::json!(["redis"]));

    // At its timeout it fails for that reason.
    tokio::time::sleep_until(started + Duration::from_millis(6_001)).await;
    let redis = &monitor.report().checks["redis"];
    assert_eq!(redis.error.as_deref(), Some("timed out after 5 s"));
    assert_eq!(redis.latency_ms, 5000.0);
}

#[tokio::test(start_paused = true)]
async fn a_check_that_recovers_after_being_overdue_shows_healthy() {
    let monitor = HealthMonitor::builder()
        .check(check_fn("slow", || async {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            Ok(())
        }))
        .interval(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build();
    let refresh = tokio::spawn({
        let monitor = monitor.clone();
        async move { monitor.refresh().await }
    });
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(monitor.report().status, Status::Unhealthy);
    refresh.await.unwrap();
    let report = monitor.report();
    assert_eq!(report.status, Status::Healthy);
    assert_eq!(report.checks["slow"].latency_ms, 1500.0);
}

#[tokio::test(start_paused = true)]
async fn refresh_replaces_the_results() {
    let healthy = Arc::new(AtomicBool::new(true));
    let runs = Arc::new(AtomicUsize::new(0));
    let monitor = HealthMonitor::builder()
        .check(switch("database", healthy.clone(), runs.clone()))
        .build();
    monitor.start().await;
    assert_eq!(monitor.report().status, Status::Healthy);

    healthy.store(false, Ordering::SeqCst);
    assert_eq!(
        monitor.report().status,
        Status::Healthy,
        "no run, no change"
    );
    monitor.refresh().await;
    let report = monitor.report();
    assert_eq!(report.status, Status::Unhealthy);
    assert_eq!(
        report.checks["database"].error.as_deref(),
        Some("switched off")
    );

    healthy.store(true, Ordering::SeqCst);
    monitor.refresh().await;
    assert_eq!(monitor.report().status, Status::Healthy);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn probes_never_wait_for_a_running_check() {
    let hang = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::builder()
        .check({
            let hang = hang.clone();
            check_fn("database", move || {
                let hang = hang.load(Ordering::SeqCst);
                async move {
                    if hang {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    Ok(())
                }
            })
        })
        .timeout(Duration::from_secs(30))
        .build();
    monitor.start().await;
    hang.store(true, Ordering::SeqCst);

    let refresh = tokio::spawn({
        let monitor = monitor.clone();
        async move { monitor.refresh().await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!refresh.is_finished(), "the round waits on the check");

    // Each probe is answered on its first poll: it never waits, whatever the check does.
    let service = monitor.service();
    let virtual_start = Instant::now();
    for _ in 0..100 {
        assert_eq!(monitor.report().status, Status::Healthy);
        let mut probe = std::pin::pin!(send(&service, Method::GET, "/health"));
        let response = match poll_once(probe.as_mut()) {
            std::task::Poll::Ready(response) => response,
            std::task::Poll::Pending => panic!("a probe waited"),
        };
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(virtual_start.elapsed(), Duration::ZERO);
    assert!(!refresh.is_finished());

    refresh.await.unwrap();
    assert_eq!(virtual_start.elapsed(), Duration::from_secs(10));
}

// ===== transitions are logged once =====

/// The events at INFO and above captured since the last call.
fn logged(capture: &Capture) -> Vec<Captured> {
    capture
        .take()
        .into_iter()
        .filter(|event| event.level <= Level::INFO)
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn status_changes_are_logged_once() {
    let (capture, _guard) = Capture::install();

    let healthy = Arc::new(AtomicBool::new(true));
    let monitor = HealthMonitor::builder()
        .check(switch("database", healthy.clone(), Arc::default()))
        .build();
    monitor.refresh().await;
    monitor.refresh().await;
    assert!(
        logged(&capture).is_empty(),
        "a passing check is not logged at INFO"
    );

    healthy.store(false, Ordering::SeqCst);
    monitor.refresh().await;
    monitor.refresh().await;
    let failing = logged(&capture);
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0].level, Level::WARN);
    assert_eq!(failing[0].message(), "health check failing");
    assert_eq!(failing[0].fields["check"], Value::Str("database".into()));
    assert!(failing[0].text.contains("switched off"), "{failing:?}");

    healthy.store(true, Ordering::SeqCst);
    monitor.refresh().await;
    monitor.refresh().await;
    let recovered = logged(&capture);
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0].level, Level::INFO);
    assert_eq!(recovered[0].message(), "health check recovered");
}

// ===== the service =====

#[tokio::test(start_paused = true)]
async fn health_answers_the_report_with_200_or_503() {
    let healthy = Arc::new(AtomicBool::new(true));
    let monitor = HealthMonitor::builder()
        .check(switch("database", healthy.clone(), Arc::default()))
        .check(failing("search").non_critical())
        .build();
    let service = monitor.service();

    let (status, body) = get_json(&service, "/health").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not started: {body}"
    );

    monitor.start().await;
    let (status, body) = get_json(&service, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["database"]["status"], "healthy");
    assert_eq!(body["checks"]["database"]["latency_ms"], 0.0);
    assert_eq!(body["checks"]["database"]["critical"], true);
    assert!(body["checks"]["database"].get("error").is_none());
    assert_eq!(body["checks"]["search"]["status"], "unhealthy");
    assert_eq!(body["checks"]["search"]["error"], "connection refused");
    assert_eq!(body["checks"]["search"]["critical"], false);
    let checked_at = body["checked_at"].as_str().unwrap();
    assert!(
        checked_at.ends_with('Z') && checked_at.len() == 24,
        "{checked_at}"
    );

    healthy.store(false, Ordering::SeqCst);
    monitor.refresh().await;
    let (status, body) = get_json(&service, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unhealthy");
}

#[tokio::test(start_paused = true)]
async fn ready_follows_critical_checks_only() {
    let healthy = Arc::new(AtomicBool::new(true));
    let monitor = HealthMonitor::builder()
        .check(switch("database", healthy.clone(), Arc::default()))
        .check(failing("search").non_critical())
        .build();
    let service = monitor.service();
    monitor.start().await;

    let (status, body) = get_json(&service, "/health/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({ "status": "ready" }));

    healthy.store(false, Ordering::SeqCst);
    monitor.refresh().await;
    let (status, body) = get_json(&service, "/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        serde_json::json!({ "status": "not_ready", "failing": ["database"] })
    );
}

#[tokio::test(start_paused = true)]
async fn live_answers_without_consulting_checks() {
    let monitor = HealthMonitor::builder().check(failing("database")).build();
    monitor.start().await;
    let (status, body) = get_json(&monitor.service(), "/health/live").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({ "status": "alive" }));
}

#[tokio::test(start_paused = true)]
async fn pools_is_an_empty_object_without_pools() {
    let monitor = HealthMonitor::builder().build();
    let (status, body) = get_json(&monitor.service(), "/health/pools").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({}));
}

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
#[tokio::test(start_paused = true)]
async fn pools_serves_every_registered_provider() {
    use crate::pool::PoolSnapshot;

    let calls = Arc::new(AtomicUsize::new(0));
    let monitor = HealthMonitor::builder()
        .pools("database", {
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::SeqCst);
                PoolSnapshot {
                    size: 8,
                    idle: 6,
                    in_use: 2,
                    max: 10,
                    utilisation: 0.2,
                    ..PoolSnapshot::default()
                }
            }
        })
        .pools("cache", PoolSnapshot::default)
        .build();
    assert_eq!(monitor.pool_stats().len(), 2);

    let (status, body) = get_json(&monitor.service(), "/health/pools").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["database"]["size"], 8);
    assert_eq!(body["database"]["in_use"], 2);
    assert_eq!(body["database"]["utilisation"], 0.2);
    assert_eq!(body["cache"]["size"], 0);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "stats are read per request"
    );
}

#[tokio::test(start_paused = true)]
async fn other_methods_get_405_and_unknown_paths_404() {
    let monitor = HealthMonitor::builder().build();
    let service = monitor.service();

    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let response = send(&service, method.clone(), "/health").await;
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }

    for path in ["/health/nope", "/health/ready/extra", "/metrics"] {
        let (status, body) = get_json(&service, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"], "not_found");
        assert!(body["message"].as_str().unwrap().contains("/health/ready"));
    }
}

#[tokio::test(start_paused = true)]
async fn head_gets_headers_and_no_body() {
    let monitor = HealthMonitor::builder().check(passing("database")).build();
    monitor.start().await;
    let service = monitor.service();
    let get = send(&service, Method::GET, "/health").await;
    let get_len = get.into_body().collect().await.unwrap().to_bytes().len();

    let head = send(&service, Method::HEAD, "/health").await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        head.headers()[header::CONTENT_LENGTH],
        get_len.to_string().as_str()
    );
    assert!(
        head.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn routes_by_the_last_path_segment() {
    let monitor = HealthMonitor::builder().build();
    monitor.start().await;
    let service = monitor.service();
    let cases = [
        ("/", "healthy"),
        ("/health", "healthy"),
        ("/health/", "healthy"),
        ("/api/v1/health", "healthy"),
        ("/healthz", "healthy"),
        ("/ready", "ready"),
        ("/health/ready", "ready"),
        ("/readyz", "ready"),
        ("/live", "alive"),
        ("/health/live/", "alive"),
        ("/livez", "alive"),
    ];
    for (path, expected) in cases {
        let (status, body) = get_json(&service, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["status"], expected, "{path}");
    }
    let (_, pools) = get_json(&service, "/x/pools?verbose=1").await;
    assert!(pools.is_object());
}

#[tokio::test]
async fn mounts_in_axum_routers() {
    let healthy = Arc::new(AtomicBool::new(false));
    let monitor = HealthMonitor::builder()
        .check(switch("database", healthy.clone(), Arc::default()))
        .build();
    monitor.start().await;

    let nested: Router = Router::new()
        .route("/", get(|| async { "home" }))
        .nest_service("/health", monitor.service());
    let routed: Router = Router::new()
        .route_service("/healthz", monitor.service())
        .route_service("/readyz", monitor.service());
    let fallback: Router = Router::new()
        .route("/", get(|| async { "home" }))
        .fallback_service(monitor.service());

    let call = |router: Router, path: &'static str| async move {
        router
            .oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    };
    assert_eq!(
        call(nested.clone(), "/health").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(nested.clone(), "/health/ready").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(call(nested.clone(), "/health/live").await, StatusCode::OK);
    assert_eq!(call(nested.clone(), "/health/pools").await, StatusCode::OK);
    assert_eq!(
        call(nested.clone(), "/health/other").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(nested.clone(), "/").await, StatusCode::OK);
    assert_eq!(
        call(routed.clone(), "/healthz").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(call(fallback.clone(), "/health/live").await, StatusCode::OK);
    assert_eq!(
        call(fallback.clone(), "/health/ready").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(fallback.clone(), "/unknown").await,
        StatusCode::NOT_FOUND
    );

    healthy.store(true, Ordering::SeqCst);
    monitor.refresh().await;
    assert_eq!(call(nested.clone(), "/health").await, StatusCode::OK);
    assert_eq!(call(routed, "/readyz").await, StatusCode::OK);
    assert_eq!(call(fallback, "/health/ready").await, StatusCode::OK);

    let response = nested
        .oneshot(
            Request::get("/health")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], "healthy");
}

// ===== errors, formatting, types =====

#[test]
fn check_error_messages_include_causes_and_stay_short() {
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot reach the queue")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    let error = CheckError::from_error(Outer(io));
    assert_eq!(
        error.message(),
        "cannot reach the queue: connection refused"
    );
    assert!(std::error::Error::source(&error).is_some());

    let error: CheckError = "plain".into();
    assert_eq!(error.to_string(), "plain");
    assert!(std::error::Error::source(&error).is_none());

    let long = "é".repeat(1000);
    let error = CheckError::new(long);
    assert!(error.message().len() <= 512 + '…'.len_utf8());
    assert!(error.message().ends_with('…'));

    let boxed: Box<dyn std::error::Error + Send + Sync> = "boxed".into();
    assert_eq!(CheckError::from(boxed).message(), "boxed");
}

#[test]
fn check_error_is_pointer_sized() {
    assert_eq!(size_of::<CheckError>(), size_of::<usize>());
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<HealthMonitor>();
    assert_send_sync::<HealthService>();
    assert_send_sync::<HealthReport>();
    assert_send_sync::<CheckError>();
    assert_send_sync::<HealthBody>();
}

#[test]
fn timestamps_are_rfc3339_utc() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
        "2000-02-29T00:00:00.123Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(1_738_315_800)),
        "2025-01-31T09:30:00.000Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(4_107_542_399)),
        "2100-02-28T23:59:59.000Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
        "1970-01-01T00:00:00.000Z"
    );
    assert!(rfc3339(SystemTime::now()).starts_with("20"));
}

#[test]
fn latency_is_rounded_to_microseconds() {
    let result = CheckResult::new(true, Duration::from_nanos(1_234_567), None);
    assert_eq!(result.latency_ms, 1.235);
    assert_eq!(result.status, Status::Healthy);
}

#[test]
fn builder_clamps_a_zero_interval() {
    let monitor = HealthMonitor::builder().interval(Duration::ZERO).build();
    let debug = format!("{monitor:?}");
    assert!(debug.contains("interval: 1ms"), "{debug}");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sql_check_runs_select_1_on_sqlite() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let monitor = HealthMonitor::builder()
        .check(SqlCheck::new(pool.clone()))
        .check(SqlCheck::new(pool.clone()).name("replica").non_critical())
        .build();
    monitor.refresh().await;
    let report = monitor.report();
    assert_eq!(report.status, Status::Healthy);
    assert!(report.checks["replica"].latency_ms > 0.0);

    pool.close().await;
    monitor.refresh().await;
    let report = monitor.report();
    assert_eq!(report.status, Status::Unhealthy);
    let error = report.checks["database"].error.as_deref().unwrap();
    assert!(
        error.starts_with("SELECT 1 failed: ") && error.contains("closed"),
        "{error}"
    );
    assert!(!report.checks["replica"].critical);
}
