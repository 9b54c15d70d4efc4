//! What a `/health` probe costs when it answers from a `HealthMonitor`'s last results,
//! beside a probe that runs its check inline, with a check that takes 200 ms behind both.
//!
//! Two checks: a sleeping `check_fn` (always run) and `SELECT pg_sleep(0.2)` on PostgreSQL
//! (run when `DATABASE_URL` is set). Variants:
//!
//! - `monitor`: the probe reads the monitor's last results;
//! - `monitor_busy`: the same while another task re-runs the checks back to back, so probes
//!   land in the middle of a running check;
//! - `inline`: the probe runs the check, then answers.
//!
//! Run with `cargo bench --bench health --features health,postgres`.

mod support;

use std::{convert::Infallible, future::Future, hint::black_box, time::Duration};

use criterion::{Criterion, SamplingMode};
use http::{HeaderValue, Request, Response, StatusCode, header};
use perfkit::health::{CheckError, HealthMonitor, check_fn};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt, service_fn};

/// How long the check behind every probe takes.
const CHECK_TIME: Duration = Duration::from_millis(200);
const VARIANTS: [&str; 2] = ["monitor_busy", "inline"];

/// Times `iters` sequential `GET /health` probes through `service`.
async fn drive<S, B>(mut service: S, iters: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    for _ in 0..iters {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(Request::get("/health").body(()).unwrap())
            .await
            .unwrap();
        assert!(response.status().is_success());
        black_box(response);
    }
    start.elapsed()
}

/// A probe handler that runs `check` before answering, as a `/health` route without a
/// monitor does.
async fn inline_probe<F, Fut>(check: F) -> Result<Response<String>, Infallible>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), CheckError>>,
{
    let started = std::time::Instant::now();
    let (status, body) = match check().await {
        Ok(()) => (
            StatusCode::OK,
            format!(
                r#"{{"status":"healthy","checks":{{"database":{{"status":"healthy","latency_ms":{}}}}}}}"#,
                started.elapsed().as_secs_f64() * 1000.0
            ),
        ),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"status":"unhealthy","error":"{error}"}}"#),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn bench_group<F, Fut>(c: &mut Criterion, rt: &Runtime, name: &str, check: F)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CheckError>> + Send + 'static,
{
    let monitor = HealthMonitor::builder()
        .check(check_fn("database", check.clone()))
        .build();
    rt.block_on(monitor.start());

    let mut group = c.benchmark_group(name);
    // The inline variant takes 200 ms an iteration: ten samples of one iteration each.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));

    group.bench_function("monitor", |b| {
        b.to_async(rt)
            .iter_custom(|iters| drive(monitor.service(), iters))
    });

    let busy = rt.spawn({
        let monitor = monitor.clone();
        async move {
            loop {
                monitor.refresh().await;
            }
        }
    });
    group.bench_function("monitor_busy", |b| {
        b.to_async(rt)
            .iter_custom(|iters| drive(monitor.service(), iters))
    });
    busy.abort();

    group.bench_function("inline", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let check = check.clone();
            drive(
                service_fn(move |_req: Request<()>| inline_probe(check.clone())),
                iters,
            )
        })
    });
    group.finish();
}

fn main() {
    // Two workers, so the busy variant's checks run beside the probes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = support::criterion();

    let sleeping = || async {
        tokio::time::sleep(CHECK_TIME).await;
        Ok(())
    };
    bench_group(&mut c, &rt, "health_probe_sleep", sleeping);

    let database_url = support::service_url("DATABASE_URL");
    let postgres = database_url.is_some();
    match database_url {
        Some(url) => {
            let pool = rt
                .block_on(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(4)
                        .connect(&url),
                )
                .expect("DATABASE_URL does not accept connections");
            let pg_sleep = move || {
                let pool = pool.clone();
                async move {
                    sqlx::query("SELECT pg_sleep(0.2)")
                        .execute(&pool)
                        .await
                        .map_err(CheckError::from_error)?;
                    Ok(())
                }
            };
            bench_group(&mut c, &rt, "health_probe_postgres", pg_sleep);
        }
        None => println!("health: postgres part skipped, DATABASE_URL is not set"),
    }
    c.final_summary();

    let groups: &[&str] = if postgres {
        &["health_probe_sleep", "health_probe_postgres"]
    } else {
        &["health_probe_sleep"]
    };
    for group in groups {
        support::print_ratios(group, "monitor", &VARIANTS);
        support::print_versus(group, "inline", "monitor");
    }
}
