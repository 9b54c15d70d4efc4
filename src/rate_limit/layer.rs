use std::{
    collections::HashSet,
    fmt,
    hash::RandomState,
    str::FromStr,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use http::{Request, StatusCode};
use ipnet::IpNet;
use tower_layer::Layer;

use super::{
    ClientIp, Key, MemoryStore, PeerIp, Policy, Quota, RateLimit, RateLimitHeaders, RateLimitStats,
    Store, TrustedProxies,
    headers::PolicyHeaders,
    key::{TRUSTED_PROXIES_EXPECTED, canonical_net},
};
use crate::{
    EnvError,
    log_gate::{LOG_INTERVAL, LogGate},
};

/// The policy [`RateLimitLayer::from_env`] applies when neither variable is set.
pub const DEFAULT_RATE_LIMIT: &str = "100/minute";

/// The policy a request is decided under; see [`RateLimitLayer::per_route`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoutePolicy {
    /// The layer's default policy.
    Default,
    /// Another policy.
    Policy(Policy),
    /// No limit: the request passes without a decision and without rate-limit headers.
    Exempt,
}

/// Picks the policy of one request; see [`RateLimitLayer::per_route`].
///
/// Implemented for `()` (the default policy for every request) and for closures
/// `Fn(&Request<B>) -> Option<Policy>`, where `None` exempts the request.
pub trait PolicyFor<B> {
    /// The policy `request` is decided under.
    fn policy_for(&self, request: &Request<B>) -> RoutePolicy;
}

impl<B> PolicyFor<B> for () {
    #[inline]
    fn policy_for(&self, _: &Request<B>) -> RoutePolicy {
        RoutePolicy::Default
    }
}

impl<B, F> PolicyFor<B> for F
where
    F: Fn(&Request<B>) -> Option<Policy>,
{
    #[inline]
    fn policy_for(&self, request: &Request<B>) -> RoutePolicy {
        self(request).map_or(RoutePolicy::Exempt, RoutePolicy::Policy)
    }
}

/// Weighs one request; see [`RateLimitLayer::cost`].
///
/// Implemented for `()` (every request costs 1) and for closures `Fn(&Request<B>) -> u32`.
pub trait CostFor<B> {
    /// What `request` spends of its key's budget.
    fn cost_for(&self, request: &Request<B>) -> u32;
}

impl<B> CostFor<B> for () {
    #[inline]
    fn cost_for(&self, _: &Request<B>) -> u32 {
        1
    }
}

impl<B, F> CostFor<B> for F
where
    F: Fn(&Request<B>) -> u32,
{
    #[inline]
    fn cost_for(&self, request: &Request<B>) -> u32 {
        self(request)
    }
}

/// What the layer does with a request its key extractor finds no key for; see the
/// [module docs](super#when-there-is-no-key).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingKey {
    /// Count the request against this key, one budget shared by every request without a
    /// key. The default, with `Key::text("unidentified")`.
    Fallback(Key),
    /// Let the request through without a decision.
    Allow,
    /// Answer with this status and a JSON body
    /// `{"error":"client_unidentified","message":"..."}`, without calling the inner
    /// service. `400 Bad Request` suits a missing credential header; any status may be
    /// given, but a `5xx` would blame the server for every such request.
    Refuse(StatusCode),
}

impl Default for MissingKey {
    fn default() -> Self {
        Self::Fallback(Key::text("unidentified"))
    }
}

/// What every service built from one layer shares at run time.
#[derive(Debug)]
pub(super) struct State {
    pub(super) counters: Arc<RateLimitStats>,
    /// Whether the missing-key error was logged.
    pub(super) missing_reported: AtomicBool,
    /// When the layer was built: the origin of its log gates' time.
    pub(super) built: Instant,
    pub(super) error_log: LogGate,
    pub(super) shadow_log: LogGate,
    /// Keys the partition-key digest, so it is stable for the life of the layer and
    /// cannot be reversed (an IPv4 address could be, from an unkeyed hash).
    pub(super) pk: RandomState,
}

impl State {
    /// Milliseconds since the layer was built, the time its log gates go by.
    pub(super) fn log_time(&self) -> u64 {
        u64::try_from(self.built.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The layer's configuration, shared by its services behind an `Arc`.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) store: Arc<dyn Store>,
    pub(super) policy: Policy,
    /// The header values of the default policy, built once.
    pub(super) policy_headers: Arc<PolicyHeaders>,
    pub(super) allow_keys: HashSet<Key>,
    pub(super) allow_nets: Vec<IpNet>,
    pub(super) shadow: bool,
    pub(super) headers: RateLimitHeaders,
    pub(super) missing: MissingKey,
    pub(super) state: Arc<State>,
}

impl Config {
    /// Whether `key` is on the allow-list, by itself or by address.
    #[inline]
    pub(super) fn allow_listed(&self, key: &Key) -> bool {
        if !self.allow_nets.is_empty()
            && let Some(ip) = key.as_ip()
            && self.allow_nets.iter().any(|net| net.contains(&ip))
        {
            return true;
        }
        !self.allow_keys.is_empty() && self.allow_keys.contains(key)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("allow_keys", &self.allow_keys.len())
            .field("allow_nets", &self.allow_nets)
            .field("shadow", &self.shadow)
            .field("headers", &self.headers)
            .field("missing", &self.missing)
            .finish_non_exhaustive()
    }
}

/// Limits the rate of requests per key; see the [module docs](super).
///
/// **One layer is one budget.** The store, the counters and the one-time missing-key report
/// live behind an [`Arc`]: every service the layer builds and every clone of it spends the
/// same budget, so a router that applies the layer to several routes, or a server that
/// builds a service per connection, still admits each client `N` requests per period in
/// total. This is unlike `tower::limit::RateLimit`, whose budget belongs to one service
/// instance and is not per client. Two separately constructed layers have separate budgets,
/// unless they share a store and a policy name (as two servers sharing one Redis do).
///
/// Type parameters: `K` the [`KeyExtractor`](super::KeyExtractor), `R` the per-route
/// [`PolicyFor`], `C` the [`CostFor`].
pub struct RateLimitLayer<K = PeerIp, R = (), C = ()> {
    pub(super) config: Arc<Config>,
    pub(super) key: K,
    pub(super) route: R,
    pub(super) cost: C,
}

impl RateLimitLayer {
    /// Limits each client, by its peer address, to `policy` in a new [`MemoryStore`].
    ///
    /// Anything that converts into a [`Policy`] works: a [`Quota`], or a `Policy` parsed
    /// from a string:
    ///
    /// ```
    /// use perfkit::rate_limit::{Policy, Quota, RateLimitLayer};
    ///
    /// let per_ip = RateLimitLayer::new(Quota::per_minute(100));
    /// let layered = RateLimitLayer::new("10/second, 1000/hour".parse::<Policy>()?);
    /// # let _ = (per_ip, layered);
    /// # Ok::<_, perfkit::rate_limit::Error>(())
    /// ```
    pub fn new(policy: impl Into<Policy>) -> Self {
        Self::with_store(policy, MemoryStore::new())
    }

    /// Limits each client, by its peer address, to `policy` in `store`.
    pub fn with_store(policy: impl Into<Policy>, store: impl Store) -> Self {
        let policy = policy.into();
        Self {
            config: Arc::new(Config {
                store: Arc::new(store),
                policy_headers: Arc::new(PolicyHeaders::new(&policy)),
                policy,
                allow_keys: HashSet::new(),
                allow_nets: Vec::new(),
                shadow: false,
                headers: RateLimitHeaders::default(),
                missing: MissingKey::default(),
                state: Arc::new(State {
                    counters: Arc::default(),
                    missing_reported: AtomicBool::new(false),
                    built: Instant::now(),
                    error_log: LogGate::new(LOG_INTERVAL),
                    shadow_log: LogGate::new(LOG_INTERVAL),
                    pk: RandomState::new(),
                }),
            }),
            key: PeerIp::new(),
            route: (),
            cost: (),
        }
    }
}

impl RateLimitLayer<ClientIp> {
    /// A layer configured from the environment, in a new [`MemoryStore`]:
    ///
    /// | variable | default | meaning |
    /// | --- | --- | --- |
    /// | `RATE_LIMIT` | `100/minute` | the policy: one or more quotas, such as `10/second, 1000/hour` |
    /// | `RATE_LIMIT_PER_MINUTE` | unset | a whole number of requests per minute; used when `RATE_LIMIT` is unset |
    /// | `TRUSTED_PROXIES` | empty | comma-separated CIDR ranges whose `X-Forwarded-For` is believed |
    ///
    /// Requests are keyed by [`ClientIp`]: with no trusted proxy, that is the peer address.
    /// Pick another store with [`store`](Self::store).
    ///
    /// # Errors
    ///
    /// When a variable is set to something unreadable; the error names it.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables.
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        use crate::env::parse;
        let name = "RATE_LIMIT";
        let policy = match parse::<Policy>(
            name,
            get(name),
            "a rate limit such as `100/minute` or `10/second, 1000/hour`",
        )? {
            Some(policy) => policy,
            None => {
                let name = "RATE_LIMIT_PER_MINUTE";
                match parse::<PerMinute>(
                    name,
                    get(name),
                    "a whole number of requests per minute, from 1 to 1000000000",
                )? {
                    Some(PerMinute(quota)) => Policy::new(quota),
                    None => DEFAULT_RATE_LIMIT
                        .parse()
                        .expect("the default rate limit parses"),
                }
            }
        };
        let name = "TRUSTED_PROXIES";
        let trusted =
            parse::<TrustedProxies>(name, get(name), TRUSTED_PROXIES_EXPECTED)?.unwrap_or_default();
        Ok(RateLimitLayer::new(policy).key(ClientIp::new(trusted)))
    }
}

/// `RATE_LIMIT_PER_MINUTE`: a count of requests per minute.
struct PerMinute(Quota);

impl FromStr for PerMinute {
    type Err = super::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = s.parse().map_err(|_| {
            super::Error::InvalidQuota(if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "the count must be at most 1000000000"
            } else {
                "the count must be a whole number"
            })
        })?;
        Quota::new(count, Duration::from_secs(60)).map(Self)
    }
}

impl<K, R, C> RateLimitLayer<K, R, C> {
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The statistics of every service built from this layer and its clones, as a live
    /// handle: [`RateLimitStats::snapshot`] reads them.
    pub fn stats(&self) -> Arc<RateLimitStats> {
        self.config.state.counters.clone()
    }

    /// The former name of [`stats`](Self::stats).
    #[deprecated(
        since = "0.1.0",
        note = "renamed to `stats`, like `TimingLayer::stats`"
    )]
    pub fn counters(&self) -> Arc<RateLimitStats> {
        self.stats()
    }

    /// The default policy.
    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    /// Replaces the store. Defaults to a [`MemoryStore`] with its default bounds.
    ///
    /// Services built before keep the store they were built with.
    #[must_use]
    pub fn store(mut self, store: impl Store) -> Self {
        self.config_mut().store = Arc::new(store);
        self
    }

    /// Replaces the store with one shared with other layers or with the caller.
    #[must_use]
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.config_mut().store = store;
        self
    }

    /// Sets the default policy, which [`per_route`](Self::per_route) may override.
    #[must_use]
    pub fn default_policy(mut self, policy: impl Into<Policy>) -> Self {
        let policy = policy.into();
        let config = self.config_mut();
        config.policy_headers = Arc::new(PolicyHeaders::new(&policy));
        config.policy = policy;
        self
    }

    /// Picks who each request is counted against. Defaults to [`PeerIp`] (for
    /// [`new`](RateLimitLayer::new)) or [`ClientIp`] (for
    /// [`from_env`](RateLimitLayer::from_env)); see [`KeyExtractor`](super::KeyExtractor).
    #[must_use]
    pub fn key<K2>(self, key: K2) -> RateLimitLayer<K2, R, C> {
        RateLimitLayer {
            config: self.config,
            key,
            route: self.route,
            cost: self.cost,
        }
    }

    /// Lets `route` pick each request's policy, or exempt it. Defaults to the default
    /// policy for every request.
    ///
    /// ```
    /// use http::Request;
    /// use perfkit::rate_limit::{Policy, Quota, RateLimitLayer};
    ///
    /// let login: Policy = Policy::new(Quota::per_minute(5)).with_name("login");
    /// let layer = RateLimitLayer::new(Quota::per_minute(100)).per_route(
    ///     move |req: &Request<String>| match req.uri().path() {
    ///         "/health" => None,
    ///         "/login" => Some(login.clone()),
    ///         _ => Some(Policy::new(Quota::per_minute(100))),
    ///     },
    /// );
    /// # let _ = layer;
    /// ```
    ///
    /// A closure returns a [`Policy`] for every request it limits; implement [`PolicyFor`]
    /// to return [`RoutePolicy::Default`] instead and skip cloning it.
    #[must_use]
    pub fn per_route<R2>(self, route: R2) -> RateLimitLayer<K, R2, C> {
        RateLimitLayer {
            config: self.config,
            key: self.key,
            route,
            cost: self.cost,
        }
    }

    /// Lets `cost` weigh each request (an export may cost 10, a cached page 1). Defaults to
    /// 1 for every request. A cost of 0 spends nothing and is always admitted.
    #[must_use]
    pub fn cost<C2>(self, cost: C2) -> RateLimitLayer<K, R, C2> {
        RateLimitLayer {
            config: self.config,
            key: self.key,
            route: self.route,
            cost,
        }
    }

    /// Never limits requests with one of these keys. Defaults to none.
    #[must_use]
    pub fn allow_keys(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        self.config_mut().allow_keys.extend(keys);
        self
    }

    /// Never limits requests whose key is an address in one of these networks (keys from
    /// [`PeerIp`] or [`ClientIp`]). Defaults to none.
    #[must_use]
    pub fn allow_nets(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        let config = self.config_mut();
        for net in nets {
            // `Key::ip` holds IPv4-mapped addresses as IPv4, so must the ranges.
            config.allow_nets.push(canonical_net(net));
        }
        self
    }

    /// Shadow (dry-run) mode: requests the store refuses are let through, counted as
    /// [`shadow_refused`](super::RateLimitSnapshot::shadow_refused) and logged (at most once
    /// per 10 s, with the number held back). Headers are written as usual, but
    /// `Retry-After`. Off by default.
    #[must_use]
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.config_mut().shadow = shadow;
        self
    }

    /// Picks the rate-limit header families written on every decided response. Defaults to
    /// [`RateLimitHeaders::ALL`]; `Retry-After` is always written on refusals.
    #[must_use]
    pub fn headers(mut self, headers: RateLimitHeaders) -> Self {
        self.config_mut().headers = headers;
        self
    }

    /// What to do with requests the key extractor finds no key for. Defaults to
    /// [`MissingKey::Fallback`] with `Key::text("unidentified")`.
    #[must_use]
    pub fn on_missing_key(mut self, rule: MissingKey) -> Self {
        self.config_mut().missing = rule;
        self
    }
}

impl<K: Clone, R: Clone, C: Clone> Clone for RateLimitLayer<K, R, C> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            key: self.key.clone(),
            route: self.route.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<K, R, C> fmt::Debug for RateLimitLayer<K, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("config", &self.config)
            .field("key", &std::any::type_name::<K>())
            .field("route", &std::any::type_name::<R>())
            .field("cost", &std::any::type_name::<C>())
            .finish()
    }
}

impl<S, K: Clone, R: Clone, C: Clone> Layer<S> for RateLimitLayer<K, R, C> {
    type Service = RateLimit<S, K, R, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            config: self.config.clone(),
            key: self.key.clone(),
            route: self.route.clone(),
            cost: self.cost.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimitLayer as Layer_;

    fn from_pairs(pairs: &[(&str, &str)]) -> Result<Layer_<super::ClientIp>, crate::EnvError> {
        Layer_::from_vars(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn from_env_reads_the_policy_and_the_per_minute_count() {
        use super::Quota;
        let layer = from_pairs(&[]).unwrap();
        assert_eq!(layer.policy().quotas(), [Quota::per_minute(100)]);
        let layer = from_pairs(&[("RATE_LIMIT", "10/second, 1000/hour")]).unwrap();
        assert_eq!(
            layer.policy().quotas(),
            [Quota::per_second(10), Quota::per_hour(1000)]
        );
        let layer = from_pairs(&[("RATE_LIMIT_PER_MINUTE", " 30 ")]).unwrap();
        assert_eq!(layer.policy().quotas(), [Quota::per_minute(30)]);
        let layer =
            from_pairs(&[("RATE_LIMIT", "5/second"), ("RATE_LIMIT_PER_MINUTE", "30")]).unwrap();
        assert_eq!(layer.policy().quotas(), [Quota::per_second(5)]);
    }

    #[test]
    fn from_env_errors_carry_the_parsers_reason() {
        for (name, value, reason) in [
            (
                "RATE_LIMIT",
                "10000000/second",
                "quota `10000000/second` is out of range: the period must leave at least 1 µs per request",
            ),
            (
                "RATE_LIMIT",
                "1000000000/minute",
                "quota `1000000000/minute` is out of range: the period must leave at least 1 µs per request",
            ),
            (
                "RATE_LIMIT_PER_MINUTE",
                "2000000000",
                "the count must be at most 1000000000",
            ),
            ("RATE_LIMIT_PER_MINUTE", "0", "the count must be at least 1"),
            (
                "RATE_LIMIT_PER_MINUTE",
                "lots",
                "the count must be a whole number",
            ),
            (
                "TRUSTED_PROXIES",
                "10.0.0.0/8, proxy.internal",
                "invalid trusted proxy `proxy.internal`",
            ),
        ] {
            let Err(err) = from_pairs(&[(name, value)]) else {
                panic!("{name}={value} was accepted");
            };
            assert_eq!(err.name(), name);
            assert_eq!(err.value(), value);
            assert!(err.reason().contains(reason), "{name}={value}: {err}");
            assert!(
                err.to_string().contains("which cannot be used: "),
                "{name}={value}: {err}"
            );
        }
    }

    use super::*;

    #[test]
    fn per_minute_parses_counts_only() {
        assert_eq!(
            "30".parse::<PerMinute>().unwrap().0,
            Quota::new(30, Duration::from_secs(60)).unwrap()
        );
        assert!("0".parse::<PerMinute>().is_err());
        assert!("ten".parse::<PerMinute>().is_err());
    }
}
