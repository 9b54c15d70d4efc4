//! The service and the client of the rate-limit layer benches, shared by
//! `benches/rate_limit/layer.rs` (wall-clock) and `benches/layers_instructions.rs`
//! (instructions), so both measure the same requests.

use std::{convert::Infallible, hint::black_box, net::SocketAddr, time::Duration};

use axum::{body::Body, extract::ConnectInfo};
use http::{HeaderValue, Request, Response, header};
use tower::{Service, ServiceExt};

/// A million requests per second with a burst of a billion: never refuses in a bench run.
pub(crate) const RATE: u32 = 1_000_000;
pub(crate) const BURST: u32 = 1_000_000_000;

/// The hello-world handler; its response carries a header, as any real one does.
pub(crate) async fn hello(_req: Request<()>) -> Result<Response<Body>, Infallible> {
    let mut response = Response::new(Body::from("Hello, World!"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// Sends `requests` requests from one client through `service` and returns the time taken.
/// Every variant, the bare one included, pays for the connection info a server would
/// insert: axum's `ConnectInfo`, which tower_governor reads, and the plain address perfkit
/// reads without its `axum` feature.
pub(crate) async fn drive<S, B>(mut service: S, requests: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let addr = SocketAddr::from(([203, 0, 113, 7], 40_000));
    let start = std::time::Instant::now();
    for _ in 0..requests {
        let mut request = Request::new(());
        request.extensions_mut().insert(ConnectInfo(addr));
        request.extensions_mut().insert(addr);
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        black_box(response);
    }
    start.elapsed()
}
