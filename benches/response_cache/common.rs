//! The handler, the body and the request loop every group shares.

use std::{convert::Infallible, hint::black_box, time::Duration};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

/// A JSON array of `rows` user-like records.
pub(crate) fn json(rows: usize) -> Bytes {
    let rows: Vec<String> = (0..rows)
        .map(|i| {
            format!(
                r#"{{"id":{i},"username":"user{i}","email":"user{i}@example.com","age":{},"active":{},"city":"{}"}}"#,
                18 + i % 60,
                i % 3 == 0,
                ["Paris", "Lyon", "Berlin", "Madrid", "Rome"][i % 5]
            )
        })
        .collect();
    Bytes::from(format!("[{}]", rows.join(",")))
}

/// A handler answering `body` as JSON, after `delay` when it is not zero.
pub(crate) fn handler(
    body: Bytes,
    delay: Duration,
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |_request: Request<()>| {
        let body = body.clone();
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut response = Response::new(Full::new(body));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            Ok::<_, Infallible>(response)
        }
    })
}

/// One request through `service`, its body collected; `expect_hit` checks the `X-Cache`.
pub(crate) async fn request<S, B>(service: &S, accept: Option<&str>, expect_hit: bool) -> Bytes
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let mut request = Request::get("/data");
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT_ENCODING, accept);
    }
    let response = service
        .clone()
        .oneshot(request.body(()).unwrap())
        .await
        .unwrap();
    if expect_hit {
        assert_eq!(
            response.headers()["x-cache"],
            "HIT",
            "a hit figure on hits only"
        );
    }
    black_box(response.into_body().collect().await.unwrap().to_bytes())
}
