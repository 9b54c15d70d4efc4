use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    Check, Key, Policy,
    headers::Stamp,
    layer::Config,
    service::{Verdict, verdict},
};
use crate::body::{ResponseBody, json_error, json_error_retry_after};

/// What a request waiting on the store needs once it answers.
pub(super) struct Pending<S, B> {
    pub(super) service: S,
    pub(super) request: Request<B>,
    pub(super) config: Arc<Config>,
    pub(super) policy: Policy,
    pub(super) key: Key,
}

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit).
    ///
    /// A request decided at once (by the memory store, or exempt) goes straight to the inner
    /// service's future; no allocation is made for it.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        /// Waiting on a store that does I/O. Boxed, so that the request it holds does not
        /// make every future of the layer larger (the store's I/O allocates anyway).
        Checking {
            #[pin]
            check: Check,
            pending: Option<Box<Pending<S, B>>>,
        },
        /// Waiting on the inner service.
        Inner {
            #[pin]
            future: S::Future,
            stamp: Option<Stamp>,
        },
        /// Refused: `429` with these headers.
        Refused {
            retry_after: u64,
            stamp: Option<Stamp>,
        },
        /// No key, and the layer refuses such requests with this status.
        Unidentified {
            status: StatusCode,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn pass(future: S::Future, stamp: Option<Stamp>) -> Self {
        Self {
            state: State::Inner { future, stamp },
        }
    }

    pub(super) fn refused(retry_after: u64, stamp: Stamp) -> Self {
        Self {
            state: State::Refused {
                retry_after,
                stamp: Some(stamp),
            },
        }
    }

    pub(super) fn unidentified(status: StatusCode) -> Self {
        Self {
            state: State::Unidentified { status },
        }
    }

    pub(super) fn checking(check: Check, pending: Pending<S, B>) -> Self {
        Self {
            state: State::Checking {
                check,
                pending: Some(Box::new(pending)),
            },
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking",
            State::Inner { .. } => "inner",
            State::Refused { .. } => "refused",
            State::Unidentified { .. } => "unidentified",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { future, stamp } => {
                    let response = ready!(future.poll(cx))?;
                    let (mut parts, body) = response.into_parts();
                    if let Some(stamp) = stamp.take() {
                        stamp.apply(&mut parts.headers);
                    }
                    return Poll::Ready(Ok(Response::from_parts(parts, ResponseBody::new(body))));
                }
                StateProj::Checking { check, pending } => {
                    let result = ready!(check.poll(cx));
                    let Pending {
                        mut service,
                        request,
                        config,
                        policy,
                        key,
                    } = *pending
                        .take()
                        .expect("rate_limit ResponseFuture polled after completion");
                    match verdict(&config, &policy, &key, result) {
                        Verdict::Pass(stamp) => {
                            let future = service.call(request);
                            state.set(State::Inner { future, stamp });
                        }
                        Verdict::Refuse { retry_after, stamp } => {
                            state.set(State::Refused {
                                retry_after,
                                stamp: Some(stamp),
                            });
                        }
                    }
                }
                StateProj::Refused { retry_after, stamp } => {
                    return Poll::Ready(Ok(too_many_requests(*retry_after, stamp.take())));
                }
                StateProj::Unidentified { status } => {
                    return Poll::Ready(Ok(json_error(
                        *status,
                        "client_unidentified",
                        "The request carries nothing to identify its client by, so it cannot be rate limited",
                    )));
                }
            }
        }
    }
}

/// The `429` answer: `{"error":"rate_limited","message":"...","retry_after":N}`.
fn too_many_requests<B>(retry_after: u64, stamp: Option<Stamp>) -> Response<ResponseBody<B>> {
    let mut message = String::with_capacity(56);
    message.push_str("Too many requests; retry in ");
    message.push_str(itoa::Buffer::new().format(retry_after));
    message.push_str(if retry_after == 1 {
        " second"
    } else {
        " seconds"
    });
    let mut response = json_error_retry_after(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &message,
        retry_after,
    );
    if let Some(stamp) = stamp {
        stamp.apply(response.headers_mut());
    }
    response
}
