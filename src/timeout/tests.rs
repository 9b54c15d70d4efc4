use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use super::*;

/// A handler that answers `"done"` after `delay`.
async fn sleepy(delay: Duration) -> Result<Response<String>, Infallible> {
    tokio::time::sleep(delay).await;
    Ok(Response::new(String::from("done")))
}

async fn body_string<B>(response: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn get_request(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn slow_handler_gets_504_with_json_body_at_the_deadline() {
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .service_fn(|_req: Request<String>| sleepy(Duration::from_secs(45)));

    let start = Instant::now();
    let response = service.oneshot(get_request("/")).await.unwrap();

    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        body_string(response).await,
        r#"{"error":"request_timeout","message":"Request exceeded 30.0s timeout"}"#
    );
}

#[tokio::test(start_paused = true)]
async fn fast_handler_passes_through_untouched() {
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service_fn(|_req: Request<String>| async {
            tokio::time::sleep(Duration::from_millis(999)).await;
            let mut response = Response::new(String::from("hello"));
            *response.status_mut() = StatusCode::CREATED;
            response
                .headers_mut()
                .insert("x-handler", "yes".parse().unwrap());
            Ok::<_, Infallible>(response)
        });

    let response = service.oneshot(get_request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-handler"], "yes");
    assert!(!response.body().is_full());
    assert_eq!(body_string(response).await, "hello");
}

#[tokio::test(start_paused = true)]
async fn inner_future_is_dropped_at_the_deadline() {
    struct DropGuard(Arc<AtomicBool>);
    impl Drop for DropGuard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let service = {
        let (dropped, finished) = (dropped.clone(), finished.clone());
        ServiceBuilder::new()
            .layer(TimeoutLayer::new(Duration::from_millis(100)))
            .service_fn(move |_req: Request<String>| {
                let guard = DropGuard(dropped.clone());
                let finished = finished.clone();
                async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    finished.store(true, Ordering::SeqCst);
                    Ok::<_, Infallible>(Response::new(String::new()))
                }
            })
    };

    // Poll the response future by hand and keep it alive after it answered: the inner
    // future must be gone as soon as the deadline passed, not when the caller drops ours.
    let mut future = Box::pin(service.oneshot(get_request("/")));
    let response = (&mut future).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(dropped.load(Ordering::SeqCst), "inner future still alive");

    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "cancelled work ran to completion"
    );
}

#[tokio::test(start_paused = true)]
async fn status_code_is_configurable() {
    let service = ServiceBuilder::new()
        .layer(
            TimeoutLayer::new(Duration::from_millis(250)).status_code(StatusCode::REQUEST_TIMEOUT),
        )
        .service_fn(|_req: Request<String>| sleepy(Duration::from_secs(1)));

    let response = service.oneshot(get_request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        body_string(response).await,
        r#"{"error":"request_timeout","message":"Request exceeded 0.3s timeout"}"#
    );
}

#[tokio::test(start_paused = true)]
async fn per_request_closure_overrides_the_default() {
    let layer = TimeoutLayer::new(Duration::from_secs(1)).per_request(|req: &Request<String>| {
        match req.uri().path() {
            "/export" => Some(Duration::from_secs(5)),
            "/ping" => Some(Duration::from_millis(10)),
            _ => None,
        }
    });
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_req: Request<String>| sleepy(Duration::from_secs(2)));

    let export = service
        .clone()
        .oneshot(get_request("/export"))
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);

    let start = Instant::now();
    let ping = service.clone().oneshot(get_request("/ping")).await.unwrap();
    assert_eq!(ping.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    assert_eq!(
        body_string(ping).await,
        r#"{"error":"request_timeout","message":"Request exceeded 0.0s timeout"}"#
    );

    let other = service.oneshot(get_request("/other")).await.unwrap();
    assert_eq!(other.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body_string(other).await,
        r#"{"error":"request_timeout","message":"Request exceeded 1.0s timeout"}"#
    );
}

#[tokio::test(start_paused = true)]
async fn route_timeout_extension_takes_precedence() {
    let layer = TimeoutLayer::new(Duration::from_secs(1))
        .per_request(|_: &Request<String>| Some(Duration::from_millis(1)));
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_req: Request<String>| sleepy(Duration::from_secs(3)));

    let mut longer = get_request("/");
    longer
        .extensions_mut()
        .insert(RouteTimeout::new(Duration::from_secs(4)));
    assert_eq!(
        service.clone().oneshot(longer).await.unwrap().status(),
        StatusCode::OK
    );

    let mut exempt = get_request("/");
    exempt.extensions_mut().insert(RouteTimeout::disabled());
    assert_eq!(
        service.clone().oneshot(exempt).await.unwrap().status(),
        StatusCode::OK
    );

    let mut shorter = get_request("/");
    shorter
        .extensions_mut()
        .insert(RouteTimeout::new(Duration::from_millis(1500)));
    let response = service.oneshot(shorter).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body_string(response).await,
        r#"{"error":"request_timeout","message":"Request exceeded 1.5s timeout"}"#
    );
}

fn router() -> Router {
    Router::new()
        .route(
            "/report",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "report"
            })
            .layer(RouteTimeout::new(Duration::from_secs(2))),
        )
        .route(
            "/quick",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                "quick"
            })
            .layer(RouteTimeout::new(Duration::from_millis(100))),
        )
        .route(
            "/stream",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(600)).await;
                "stream"
            })
            .layer(RouteTimeout::disabled()),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        )
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
}

#[tokio::test(start_paused = true)]
async fn route_layer_inside_an_axum_router_moves_the_outer_deadline() {
    let app = router();

    let report = app
        .clone()
        .oneshot(
            Request::get("/report")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(report.status(), StatusCode::OK, "longer route deadline");
    assert_eq!(body_string(report).await, "report");

    let start = Instant::now();
    let quick = app
        .clone()
        .oneshot(
            Request::get("/quick")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        quick.status(),
        StatusCode::GATEWAY_TIMEOUT,
        "shorter route deadline"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(
        body_string(quick).await,
        r#"{"error":"request_timeout","message":"Request exceeded 0.1s timeout"}"#
    );

    let stream = app
        .clone()
        .oneshot(
            Request::get("/stream")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK, "route exempted");

    let slow = app
        .oneshot(
            Request::get("/slow")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        slow.status(),
        StatusCode::GATEWAY_TIMEOUT,
        "default deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn route_override_reaches_only_the_innermost_timeout() {
    // Outer 10 s, inner 1 s; the route asks for 5 s. The inner timeout takes the override,
    // the outer one keeps its own 10 s.
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(10)))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .layer(RouteTimeout::new(Duration::from_secs(5)))
        .service_fn(|_req: Request<String>| sleepy(Duration::from_secs(3)));
    let response = service.oneshot(get_request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Outside any timeout layer a route timeout changes nothing and does not fail.
    let bare = ServiceBuilder::new()
        .layer(RouteTimeout::new(Duration::from_millis(1)))
        .service_fn(|_req: Request<String>| sleepy(Duration::from_millis(50)));
    assert_eq!(
        bare.oneshot(get_request("/")).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn zero_duration_answers_every_waiting_request_at_once() {
    let layer = TimeoutLayer::new(Duration::ZERO);

    // A response ready on the first poll was produced within the deadline.
    let ready = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::from("instant")))
        });
    let response = ready.oneshot(get_request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let waiting = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_req: Request<String>| sleepy(Duration::from_millis(1)));
    let start = Instant::now();
    let response = waiting.oneshot(get_request("/")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body_string(response).await,
        r#"{"error":"request_timeout","message":"Request exceeded 0.0s timeout"}"#
    );
}

#[tokio::test(start_paused = true)]
async fn huge_duration_never_fires_and_never_panics() {
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::MAX))
        .service_fn(|_req: Request<String>| sleepy(Duration::from_secs(3600)));
    let response = service.oneshot(get_request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Boom;

    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(service_fn(|_req: Request<String>| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<Response<String>, _>(Boom)
        }));
    assert_eq!(service.oneshot(get_request("/")).await.unwrap_err(), Boom);
}

#[test]
fn layer_and_service_are_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_traits::<TimeoutLayer>();
    assert_traits::<
        Timeout<tower::util::BoxCloneSyncService<Request<String>, Response<String>, Infallible>>,
    >();
    assert_traits::<RouteTimeout>();

    fn assert_send<T: Send>(_: &T) {}
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service_fn(|_req: Request<String>| sleepy(Duration::ZERO));
    assert_send(&service.oneshot(get_request("/")));
}

#[tokio::test]
async fn time_spent_in_the_inner_call_counts_against_the_deadline() {
    // The inner service blocks for 60 ms in `call` itself, then answers 20 ms later: with a
    // 50 ms deadline counted from when the request entered the layer, it is too late.
    let inner = tower::service_fn(|_req: Request<String>| {
        std::thread::sleep(Duration::from_millis(60));
        sleepy(Duration::from_millis(20))
    });
    let service = ServiceBuilder::new()
        .layer(TimeoutLayer::new(Duration::from_millis(50)))
        .service(inner);
    let response = service.oneshot(get_request("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}
