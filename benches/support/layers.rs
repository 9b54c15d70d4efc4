//! The handlers and request loop that the layer benches share.

use std::{convert::Infallible, hint::black_box, time::Duration};

use http::{HeaderValue, Request, Response, header};
use tower::{Service, ServiceExt};

/// What a handler answers: like any real response, it carries a header, so adding one is
/// not also the first allocation of the header map.
fn response() -> Response<String> {
    let mut response = Response::new(String::new());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A handler that answers on its first poll (a cache hit, a static page).
pub(crate) async fn ready(_req: Request<()>) -> Result<Response<String>, Infallible> {
    Ok(response())
}

/// A handler that yields once before answering, as any handler waiting on I/O does.
pub(crate) async fn pending(_req: Request<()>) -> Result<Response<String>, Infallible> {
    tokio::task::yield_now().await;
    Ok(response())
}

/// Sends `requests` sequential requests through `service` and returns how long they took.
pub(crate) async fn drive<S>(mut service: S, requests: u64) -> Duration
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    for _ in 0..requests {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        black_box(response);
    }
    start.elapsed()
}
