use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    mem,
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::{
    CostFor, Decision, Key, KeyExtractor, MissingKey, Policy, PolicyFor, RateLimitLayer,
    ResponseFuture, RoutePolicy,
    future::Pending,
    headers::{PolicyRef, RateLimitHeaders, Stamp, retry_after_secs},
    layer::Config,
    stats::Event,
};
use crate::body::ResponseBody;

/// The service built by [`RateLimitLayer`]; see the [module docs](super).
///
/// Services built from one layer, and their clones, share one budget.
///
/// The inner service must be `Clone` (axum routers, tonic services and `service_fn`s are):
/// when the store has to wait (Redis), the inner service that was polled ready travels with
/// the request until the decision, and a clone takes its place, as tower's docs prescribe.
pub struct RateLimit<S, K, R = (), C = ()> {
    pub(super) inner: S,
    pub(super) config: Arc<Config>,
    pub(super) key: K,
    pub(super) route: R,
    pub(super) cost: C,
}

impl<S, K, R, C> RateLimit<S, K, R, C> {
    define_inner_service_accessors!();

    /// The layer this service was built from, as a [`RateLimitLayer`].
    pub fn layer(&self) -> RateLimitLayer<K, R, C>
    where
        K: Clone,
        R: Clone,
        C: Clone,
    {
        RateLimitLayer {
            config: self.config.clone(),
            key: self.key.clone(),
            route: self.route.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<S: Clone, K: Clone, R: Clone, C: Clone> Clone for RateLimit<S, K, R, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            key: self.key.clone(),
            route: self.route.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<S: fmt::Debug, K, R, C> fmt::Debug for RateLimit<S, K, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, K, R, C, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, K, R, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyExtractor<ReqBody>,
    R: PolicyFor<ReqBody>,
    C: CostFor<ReqBody>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        let counters = &config.state.counters;
        // Every request that is let through leaves this block with its headers, so that the
        // inner service is called in one place only.
        let stamp = 'pass: {
            let route = self.route.policy_for(&request);
            let policy = match &route {
                RoutePolicy::Default => &config.policy,
                RoutePolicy::Policy(policy) => policy,
                RoutePolicy::Exempt => {
                    counters.count(Event::Exempt);
                    break 'pass None;
                }
            };

            let key = match self.key.extract(&request) {
                Some(key) => key,
                None => {
                    counters.count(Event::MissingKey);
                    report_missing(config, self.key.misconfigured());
                    match &config.missing {
                        MissingKey::Fallback(key) => key.clone(),
                        MissingKey::Allow => break 'pass None,
                        MissingKey::Refuse(status) => {
                            return ResponseFuture::unidentified(*status);
                        }
                    }
                }
            };
            if config.allow_listed(&key) {
                counters.count(Event::AllowListed);
                break 'pass None;
            }

            let cost = self.cost.cost_for(&request);
            let mut check = config.store.check(policy, &key, cost);
            match check.take_ready() {
                Some(result) => match verdict(config, policy, &key, result) {
                    Verdict::Pass(stamp) => stamp,
                    Verdict::Refuse { retry_after, stamp } => {
                        return ResponseFuture::refused(retry_after, stamp);
                    }
                },
                None => {
                    // The inner service is called once the store answers: take the one that
                    // was polled ready and leave a clone in its place.
                    let clone = self.inner.clone();
                    let service = mem::replace(&mut self.inner, clone);
                    let policy = match route {
                        RoutePolicy::Policy(policy) => policy,
                        _ => config.policy.clone(),
                    };
                    return ResponseFuture::checking(
                        check,
                        Pending {
                            service,
                            request,
                            config: self.config.clone(),
                            policy,
                            key,
                        },
                    );
                }
            }
        };
        ResponseFuture::pass(self.inner.call(request), stamp)
    }
}

/// Logs, once per layer, that a request had no key; loudly when the stack is
/// misconfigured.
fn report_missing(config: &Config, misconfigured: Option<&'static str>) {
    let state = &config.state;
    if state.missing_reported.load(Ordering::Relaxed)
        || state.missing_reported.swap(true, Ordering::Relaxed)
    {
        return;
    }
    let rule = match &config.missing {
        MissingKey::Fallback(_) => {
            "counting it and every other such request against one shared fallback key"
        }
        MissingKey::Allow => "letting such requests through unlimited",
        MissingKey::Refuse(_) => "refusing such requests",
    };
    match misconfigured {
        Some(fix) => tracing::error!(
            rule,
            "rate limiting cannot identify clients, {fix}; until then the rate limiter is {rule} (reported once)"
        ),
        None => tracing::info!(
            rule,
            "a request had no rate-limit key; the rate limiter is {rule} (reported once)"
        ),
    }
}

/// What the layer does with a request once the store has answered.
pub(super) enum Verdict {
    /// Call the inner service, then write the headers, if any.
    Pass(Option<Stamp>),
    /// Answer `429`.
    Refuse { retry_after: u64, stamp: Stamp },
}

/// Counts, logs and turns the store's answer into a [`Verdict`].
#[inline]
pub(super) fn verdict(
    config: &Config,
    policy: &Policy,
    key: &Key,
    result: super::Result<Decision>,
) -> Verdict {
    let state = &config.state;
    let decision = match result {
        Ok(decision) => decision,
        Err(error) => {
            state.counters.count(Event::StoreError);
            if let Some(suppressed) = state.error_log.open(state.log_time()) {
                tracing::warn!(%error, suppressed, "rate-limit store failed; letting the request through");
            }
            return Verdict::Pass(None);
        }
    };
    if decision.source.is_fallback() {
        state.counters.count(Event::Fallback);
    }
    let families = config.headers;
    let stamp = |decision: &Decision| {
        let pk = if families.draft() {
            partition_key(&state.pk, key)
        } else {
            0
        };
        let policy = if *policy == config.policy {
            PolicyRef::Default(config.policy_headers.clone())
        } else {
            PolicyRef::Other(policy.clone())
        };
        Stamp::new(families, decision, policy, pk)
    };
    if decision.allowed {
        state.counters.count(Event::Allowed);
        let headers = families != RateLimitHeaders::NONE;
        return Verdict::Pass(headers.then(|| stamp(&decision)));
    }
    let mut stamp = stamp(&decision);
    if config.shadow {
        state.counters.count(Event::ShadowRefused);
        if let Some(suppressed) = state.shadow_log.open(state.log_time()) {
            tracing::info!(
                %key,
                policy = policy.name(),
                suppressed,
                "rate limit exceeded; shadow mode lets the request through"
            );
        }
        stamp.clear_retry_after();
        return Verdict::Pass(Some(stamp));
    }
    state.counters.count(Event::Refused);
    tracing::debug!(%key, policy = policy.name(), source = ?decision.source, "rate limit exceeded");
    Verdict::Refuse {
        retry_after: retry_after_secs(&decision),
        stamp,
    }
}

/// The partition key of `key`, keyed by `hasher`: address keys are hashed as one integer
/// (an IPv4 address with bit 32 set, so it never meets another kind of key's hash input).
#[inline]
fn partition_key(hasher: &RandomState, key: &Key) -> u64 {
    match key.as_ip() {
        Some(IpAddr::V4(ip)) => hasher.hash_one(u64::from(ip.to_bits()) | 1 << 32),
        Some(IpAddr::V6(ip)) => hasher.hash_one(ip.to_bits()),
        None => hasher.hash_one(key),
    }
}
