//! The service: the request path through the cache.

use std::{
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header, request::Parts};
use http_body::{Body, Frame};
use tower_service::Service;

use crate::cache::{Source, now_ms};

use super::{
    body::{ResponseCacheBody, frame_bytes},
    entry::{self, CachedResponse, Stored},
    layer::Config,
    stats::{Bypass, Counters},
};

/// The service built by [`ResponseCacheLayer`](super::ResponseCacheLayer).
pub struct ResponseCache<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for ResponseCache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ResponseCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> ResponseCache<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    define_inner_service_accessors!();
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The future of [`ResponseCache`]. It is boxed: the path through the cache awaits the
/// cache's own futures, which are not nameable.
pub struct ResponseFuture<B: Body, E> {
    inner: BoxFuture<Result<Response<ResponseCacheBody<B>>, E>>,
}

impl<B: Body, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<B: Body, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<ResponseCacheBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// What the computation and the request's own future hand each other: the request and a
/// ready service until the computation takes them (or the request takes them back when no
/// computation of its own ran), and the response when it may not be stored.
struct Slot<S, ReqBody, ResBody: Body, E> {
    request: Option<(Request<ReqBody>, S)>,
    answer: Option<Result<Response<ResponseCacheBody<ResBody>>, E>>,
}

type Shared<S, ReqBody, ResBody, E> = Arc<Mutex<Slot<S, ReqBody, ResBody, E>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a computation produced nothing to store; the response itself is in the slot.
#[derive(Debug)]
struct NotStored(Bypass);

impl fmt::Display for NotStored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response not stored: {}", self.0)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseCache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Send,
{
    type Response = Response<ResponseCacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let config = Arc::clone(&self.config);
        let (parts, body) = request.into_parts();
        let counters = config.stats.route(route_label(&config, &parts));
        let bypass = if parts.method != Method::GET && parts.method != Method::HEAD {
            Some(Bypass::Method)
        } else if config.honor_request_no_cache && entry::request_no_cache(&parts.headers) {
            Some(Bypass::RequestNoCache)
        } else {
            None
        };
        let has_credentials = parts.headers.contains_key(header::AUTHORIZATION)
            || parts.headers.contains_key(header::COOKIE);
        let user = config.user.as_ref().and_then(|user| user(&parts));
        let bypass = bypass.or((has_credentials && user.is_none()).then_some(Bypass::Credentials));
        if let Some(reason) = bypass {
            counters.bypass(reason);
            let future = self.inner.call(Request::from_parts(parts, body));
            return ResponseFuture {
                inner: Box::pin(async move {
                    future
                        .await
                        .map(|response| response.map(ResponseCacheBody::stream))
                }),
            };
        }
        // The ready service goes with the request; this one takes a clone's place.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let key = entry::key(&parts, &config.vary, user.as_deref());
        let head = parts.method == Method::HEAD;
        let conditions = Conditions::of(&parts.headers);
        let slot: Shared<S, ReqBody, ResBody, S::Error> = Arc::new(Mutex::new(Slot {
            request: Some((Request::from_parts(parts, body), service)),
            answer: None,
        }));
        ResponseFuture {
            inner: Box::pin(through_cache(config, counters, key, head, conditions, slot)),
        }
    }
}

fn route_label<'a>(config: &Config, parts: &'a Parts) -> Option<&'a str> {
    if let Some(label) = config.route.as_ref().and_then(|route| route(parts)) {
        return Some(label);
    }
    #[cfg(feature = "axum")]
    if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return Some(matched.as_str());
    }
    None
}

/// The request's validators and `Accept-Encoding`, kept when the request moves into the
/// computation.
#[derive(Default)]
struct Conditions {
    headers: HeaderMap,
}

impl Conditions {
    fn of(headers: &HeaderMap) -> Self {
        let mut kept = HeaderMap::new();
        for name in [
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::ACCEPT_ENCODING,
        ] {
            for value in headers.get_all(&name) {
                kept.append(name.clone(), value.clone());
            }
        }
        Self { headers: kept }
    }

    /// Whether the client holds the representation with this `ETag` already.
    fn not_modified(&self, stored: &Stored, etag: &[u8]) -> bool {
        if !self.headers.contains_key(header::IF_NONE_MATCH)
            && !self.headers.contains_key(header::IF_MODIFIED_SINCE)
        {
            return false;
        }
        match entry::if_none_match(&self.headers, etag) {
            Some(matched) => matched,
            None => entry::not_modified_since(&self.headers, stored.header(&header::LAST_MODIFIED)),
        }
    }
}

/// The representation of an entry a response carries: the identity body, or a stored
/// compressed variant.
struct Chosen {
    body: Bytes,
    etag: Bytes,
    coding: Option<HeaderValue>,
    /// Whether the answer depends on `Accept-Encoding` (the entry has variants).
    #[cfg_attr(not(feature = "_compression"), allow(dead_code))]
    vary: bool,
}

impl Chosen {
    fn identity(config: &Config, stored: &Stored) -> Self {
        let _ = config;
        Self {
            body: stored.body.clone(),
            etag: stored.etag.clone(),
            coding: None,
            #[cfg(feature = "_compression")]
            vary: stored.compressible && config.variants.is_some(),
            #[cfg(not(feature = "_compression"))]
            vary: false,
        }
    }

    /// The variant the request's `Accept-Encoding` prefers, encoded and stored on first
    /// use; the identity body when there is none or the cache does not answer in time.
    #[cfg(feature = "_compression")]
    async fn negotiate(
        config: &Config,
        key: &str,
        options: &crate::cache::EntryOptions,
        conditions: &Conditions,
        stored: &Stored,
    ) -> Self {
        use super::entry::Variant;
        let identity = Self::identity(config, stored);
        let Some(variants) = config.variants.as_ref().filter(|_| stored.compressible) else {
            return identity;
        };
        let Some(encoding) = variants.choose(&conditions.headers) else {
            return identity;
        };
        let etag = entry::variant_etag(&stored.etag, encoding.as_str());
        let coding = Some(encoding.header_value());
        if conditions.not_modified(stored, &etag) {
            // A 304 carries no body: no need for the variant.
            let body = Bytes::new();
            return Self {
                body,
                etag,
                coding,
                vary: true,
            };
        }
        let variant_key = entry::variant_key(key, encoding.as_str(), &stored.etag);
        let (body, variants) = (stored.body.clone(), variants.clone());
        let compute = move || async move {
            let encoded =
                tokio::task::spawn_blocking(move || variants.encode(encoding, &body)).await;
            match encoded {
                Ok(Some(body)) => Ok((Variant { body }, None)),
                _ => Err(NotStored(Bypass::Body)),
            }
        };
        let found = config.cache.get_or_compute_ttl::<Variant, NotStored, _, _>(
            &variant_key,
            options.clone(),
            compute,
        );
        match tokio::time::timeout(config.wait, found).await {
            Ok(Ok((variant, _))) => Self {
                body: variant.body,
                etag,
                coding,
                vary: true,
            },
            _ => {
                if let Some(held_back) = config.wait_log.open(now_ms()) {
                    tracing::warn!(
                        coding = encoding.as_str(),
                        held_back,
                        "compressed variant unavailable: serving the identity body"
                    );
                }
                identity
            }
        }
    }
}

async fn through_cache<S, ReqBody, ResBody>(
    config: Arc<Config>,
    counters: Arc<Counters>,
    key: String,
    head: bool,
    conditions: Conditions,
    slot: Shared<S, ReqBody, ResBody, S::Error>,
) -> Result<Response<ResponseCacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Send,
{
    if head {
        // A HEAD is answered from the GET entry; the handler's answer to a HEAD has no
        // body to store, so a miss is passed through.
        let found = bounded(&config, &slot, config.cache.get::<CachedResponse>(&key)).await;
        return match found {
            Some(Ok(Some(cached))) => {
                counters.hit();
                let chosen = Chosen::identity(&config, &cached.0);
                Ok(answer(
                    &cached.0,
                    &chosen,
                    "HIT",
                    true,
                    &conditions,
                    Some(&counters),
                ))
            }
            Some(_) => {
                counters.miss();
                counters.bypass(Bypass::HeadMiss);
                alone(&slot, "MISS").await
            }
            None => {
                counters.bypass(Bypass::CacheWait);
                alone(&slot, "MISS").await
            }
        };
    }
    let options = match &config.tags {
        Some(tags) => {
            let request = lock(&slot);
            let parts = request.request.as_ref().map(|(request, _)| request);
            match parts {
                Some(request) => {
                    let (parts, ()) = clone_parts(request);
                    config.options.clone().tags(tags(&parts))
                }
                None => config.options.clone(),
            }
        }
        None => config.options.clone(),
    };
    let compute = {
        let slot = Arc::clone(&slot);
        let config = Arc::clone(&config);
        move || compute(config, slot)
    };
    let lookup = config
        .cache
        .get_or_compute_ttl::<CachedResponse, NotStored, _, _>(&key, options.clone(), compute);
    let Some(result) = bounded(&config, &slot, lookup).await else {
        counters.bypass(Bypass::CacheWait);
        return alone(&slot, "MISS").await;
    };
    match result {
        Ok((cached, source)) => {
            match source {
                Source::Hit => counters.hit(),
                Source::Stale => counters.stale(),
                _ => counters.miss(),
            }
            // A stale-if-error serve leaves the failed answer in the slot: drop it.
            lock(&slot).answer = None;
            let served = source.is_cached().then_some(&*counters);
            #[cfg(feature = "_compression")]
            let chosen = Chosen::negotiate(&config, &key, &options, &conditions, &cached.0).await;
            #[cfg(not(feature = "_compression"))]
            let chosen = Chosen::identity(&config, &cached.0);
            let response = answer(
                &cached.0,
                &chosen,
                source.x_cache(),
                false,
                &conditions,
                served,
            );
            if response.status() == StatusCode::NOT_MODIFIED && !source.is_cached() {
                counters.not_modified();
            }
            Ok(response)
        }
        Err(not_stored) => {
            counters.miss();
            let answer = lock(&slot).answer.take();
            match answer {
                // This request's own computation: its answer, not stored.
                Some(answer) => {
                    counters.bypass(not_stored.0);
                    answer.map(|mut response| {
                        response
                            .headers_mut()
                            .insert("x-cache", HeaderValue::from_static("MISS"));
                        response
                    })
                }
                // Another request's computation failed or was not storable: this one asks
                // its handler itself.
                None => alone(&slot, "MISS").await,
            }
        }
    }
}

fn clone_parts<B>(request: &Request<B>) -> (Parts, ()) {
    let mut clone = Request::new(());
    *clone.method_mut() = request.method().clone();
    *clone.uri_mut() = request.uri().clone();
    *clone.version_mut() = request.version();
    *clone.headers_mut() = request.headers().clone();
    clone.into_parts()
}

/// Awaits `future` for at most the layer's wait, unless this request's own computation
/// started meanwhile (it is never cut short): `None` when the wait ran out first.
async fn bounded<S, ReqBody, ResBody: Body, E, T>(
    config: &Config,
    slot: &Shared<S, ReqBody, ResBody, E>,
    future: impl Future<Output = T>,
) -> Option<T> {
    let mut future = std::pin::pin!(future);
    let mut sleep = std::pin::pin!(tokio::time::sleep(config.wait));
    let mut expired = false;
    poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if !expired && sleep.as_mut().poll(cx).is_ready() {
            expired = true;
            if lock(slot).request.is_some() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await
    .or_else(|| {
        if let Some(held_back) = config.wait_log.open(now_ms()) {
            tracing::warn!(
                wait_ms = config.wait.as_millis() as u64,
                held_back,
                "response cache did not answer in time: the handler answers alone"
            );
        }
        None
    })
}

/// The handler's answer to this request, outside the cache.
async fn alone<S, ReqBody, ResBody>(
    slot: &Shared<S, ReqBody, ResBody, S::Error>,
    x_cache: &'static str,
) -> Result<Response<ResponseCacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    let taken = lock(slot).request.take();
    let Some((request, mut service)) = taken else {
        // Unreachable by construction: the request is only taken by a computation, whose
        // answer is then in the slot.
        let mut response = Response::new(ResponseCacheBody::empty());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(response);
    };
    poll_fn(|cx| service.poll_ready(cx)).await?;
    let mut response = service.call(request).await?.map(ResponseCacheBody::stream);
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(x_cache));
    Ok(response)
}

/// The computation of a cold key: runs the handler and reads its body, up to the limit.
async fn compute<S, ReqBody, ResBody>(
    config: Arc<Config>,
    slot: Shared<S, ReqBody, ResBody, S::Error>,
) -> Result<(CachedResponse, Option<std::time::Duration>), NotStored>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    let taken = lock(&slot).request.take();
    let Some((request, mut service)) = taken else {
        return Err(NotStored(Bypass::HandlerError));
    };
    let ttl = config.ttl.as_ref().and_then(|ttl| {
        let (parts, ()) = clone_parts(&request);
        ttl(&parts)
    });
    let response = match poll_fn(|cx| service.poll_ready(cx)).await {
        Ok(()) => service.call(request).await,
        Err(error) => Err(error),
    };
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            lock(&slot).answer = Some(Err(error));
            return Err(NotStored(Bypass::HandlerError));
        }
    };
    let (parts, body) = response.into_parts();
    let pass = |parts, body: ResponseCacheBody<ResBody>, reason| {
        lock(&slot).answer = Some(Ok(Response::from_parts(parts, body)));
        Err(NotStored(reason))
    };
    let refused = if !config.statuses.contains(&parts.status) {
        Some(Bypass::Status)
    } else {
        entry::refuse_response(&parts.headers, &config.vary)
    };
    if let Some(reason) = refused {
        return pass(parts, ResponseCacheBody::stream(body), reason);
    }
    if body.size_hint().lower() > config.max_body as u64 {
        return pass(parts, ResponseCacheBody::stream(body), Bypass::TooLarge);
    }
    // Boxed so that, should it turn out not storable half way, the rest can go on.
    let mut body = Box::pin(body);
    let mut buffer = BytesMut::new();
    loop {
        let (held, reason) = match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => match frame_bytes(frame) {
                Ok(frame) => {
                    let data = frame.into_data().unwrap_or_default();
                    if buffer.len() + data.len() <= config.max_body {
                        buffer.extend_from_slice(&data);
                        continue;
                    }
                    // Too large after all: what was read goes first, then the rest.
                    (Ok(Frame::data(data)), Bypass::TooLarge)
                }
                Err(trailers) => (Ok(Frame::trailers(trailers)), Bypass::Body),
            },
            Some(Err(error)) => (Err(error), Bypass::Body),
        };
        let rest = ResponseCacheBody::resume(buffer.freeze(), Some(held), Some(body));
        return pass(parts, rest, reason);
    }
    let ttl = ttl.or_else(|| entry::response_ttl(&parts.headers));
    #[cfg(feature = "_compression")]
    let compressible = config
        .variants
        .as_ref()
        .is_some_and(|variants| variants.compressible(&parts, buffer.len()));
    #[cfg(not(feature = "_compression"))]
    let compressible = false;
    let stored = Stored::new(
        parts.status.as_u16(),
        &parts.headers,
        buffer.freeze(),
        now_ms(),
        compressible,
    );
    Ok((CachedResponse(Arc::new(stored)), ttl))
}

/// The response for a cached entry: the stored headers and body (none for `HEAD` and
/// `304`), `X-Cache`, `Age` and `Content-Length`. `from_cache` counts what an entry
/// served (not a fresh computation's answer).
fn answer<B: Body>(
    stored: &Stored,
    chosen: &Chosen,
    x_cache: &'static str,
    head: bool,
    conditions: &Conditions,
    from_cache: Option<&Counters>,
) -> Response<ResponseCacheBody<B>> {
    let not_modified = conditions.not_modified(stored, &chosen.etag);
    let mut response = Response::new(if head || not_modified {
        ResponseCacheBody::empty()
    } else {
        if let Some(counters) = from_cache {
            counters.served(chosen.body.len());
        }
        ResponseCacheBody::full(chosen.body.clone())
    });
    let headers = response.headers_mut();
    stored.write_headers(headers);
    if let Some(coding) = &chosen.coding {
        headers.insert(header::CONTENT_ENCODING, coding.clone());
        headers.remove(header::ACCEPT_RANGES);
        if let Ok(etag) = HeaderValue::from_maybe_shared(chosen.etag.clone()) {
            headers.insert(header::ETAG, etag);
        }
    }
    #[cfg(feature = "_compression")]
    if chosen.vary {
        crate::compression::future::add_vary(headers);
    }
    if not_modified {
        if let Some(counters) = from_cache {
            counters.not_modified();
        }
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_TYPE);
        headers.remove(header::CONTENT_ENCODING);
    } else {
        *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(chosen.body.len()));
    }
    let headers = response.headers_mut();
    headers.insert("x-cache", HeaderValue::from_static(x_cache));
    let age = now_ms().saturating_sub(stored.stored_at_ms) / 1000;
    headers.insert(header::AGE, HeaderValue::from(age));
    response
}
