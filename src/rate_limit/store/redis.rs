use std::{fmt, sync::Arc, time::Duration};

use ::redis::{Script, Value};

use super::{
    Check, Decision, Key, MemoryStore, Store,
    fallback::{Fallback, Insurance},
    memory::decision,
};
use crate::{
    pool::RedisHandle,
    rate_limit::{
        algorithm::Outcome,
        clock::{Clock, SystemClock},
        error::{Error, Result},
        policy::Policy,
    },
};

/// The decision script: the algorithms of `algorithm.rs`, in Lua.
const SCRIPT: &str = include_str!("script.lua");

/// A [`Store`] in Redis, shared by every server that uses the same Redis and prefix.
///
/// Each decision is one atomic Lua script (sent with `EVALSHA`, loaded on demand after a
/// `NOSCRIPT` reply), so concurrent requests from any number of servers never admit more
/// than the quota, and a decision costs one round trip whatever the number of quotas. The
/// script reads the time from Redis (`TIME`), so servers with skewed clocks agree.
///
/// Each pair of policy and key is one hash under `<prefix>{<policy>:<algorithm>:<key>}`: the
/// braces make the whole state of one decision live in one Redis Cluster slot. A key expires
/// (`PEXPIRE`) as soon as its state is worth no more than a fresh key's, so idle clients
/// leave nothing behind.
///
/// # Failures
///
/// When Redis answers with an error or not within the [deadline](RedisStoreBuilder::timeout)
/// (a hang is a failure too), the decision is made by the [`Fallback`]: by default an
/// in-memory store of this instance, marked [`Source::Insurance`](super::Source). Redis is
/// then left alone for the [retry interval](RedisStoreBuilder::retry_interval), after which
/// one request tries it again; the first answer puts every request back on Redis. Failures
/// are logged at most once per [log interval](RedisStoreBuilder::log_interval). A client
/// never sees an error because Redis is down: [`Store::check`] on this store only fails when
/// the script answers something it cannot read.
///
/// Cloning is cheap and shares the connection and the insurance.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use perfkit::{pool::RedisPoolBuilder, rate_limit::{Key, Policy, RedisStore, Store}};
///
/// let handle = RedisPoolBuilder::new("redis://127.0.0.1:6379").build().await?;
/// let store = RedisStore::builder(handle)
///     .prefix("myapp:rl:")
///     .timeout(Duration::from_millis(50))
///     .build();
/// let policy: Policy = "100/minute".parse()?;
/// let decision = store.check(&policy, &Key::text("user-42"), 1).await?;
/// assert!(decision.allowed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    handle: RedisHandle,
    script: Script,
    prefix: Box<str>,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    client_time: bool,
    insurance: Insurance,
}

/// Builds a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    handle: RedisHandle,
    prefix: String,
    timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
    client_time: bool,
    fallback: Fallback,
    insurance: Option<MemoryStore>,
    retry_interval: Duration,
    log_interval: Duration,
}

impl RedisStoreBuilder {
    /// The prefix of every key the store writes. Defaults to `rl:`.
    pub fn prefix(self, prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            ..self
        }
    }

    /// The hard deadline of one decision in Redis; past it, the [`Fallback`] decides.
    /// Defaults to 50 ms.
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// What decides while Redis fails. Defaults to [`Fallback::Memory`].
    pub fn fallback(self, fallback: Fallback) -> Self {
        Self { fallback, ..self }
    }

    /// The in-memory store [`Fallback::Memory`] decides with. Defaults to a
    /// [`MemoryStore`] with its default bound, on this builder's [`clock`](Self::clock).
    pub fn insurance(self, store: MemoryStore) -> Self {
        Self {
            insurance: Some(store),
            ..self
        }
    }

    /// How long Redis is left alone after a failure before one request tries it again.
    /// Defaults to 200 ms.
    pub fn retry_interval(self, interval: Duration) -> Self {
        Self {
            retry_interval: interval,
            ..self
        }
    }

    /// The shortest time between two log lines about failures. Defaults to 10 s.
    pub fn log_interval(self, interval: Duration) -> Self {
        Self {
            log_interval: interval,
            ..self
        }
    }

    /// The local clock: it times the retry interval and the failure log, and it is the
    /// insurance's clock. Defaults to a [`SystemClock`].
    pub fn clock(self, clock: impl Clock) -> Self {
        Self {
            clock: Some(Arc::new(clock)),
            ..self
        }
    }

    /// Whether decisions use the local [`clock`](Self::clock) instead of Redis's `TIME`.
    /// Defaults to `false`.
    ///
    /// Only for tests on a controlled clock, or when every server shares one clock: the
    /// local time of separate processes differs, and their decisions would too.
    pub fn client_time(self, enabled: bool) -> Self {
        Self {
            client_time: enabled,
            ..self
        }
    }

    /// Builds the store; no I/O happens until the first decision.
    pub fn build(self) -> RedisStore {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let memory = self
            .insurance
            .unwrap_or_else(|| MemoryStore::builder().clock(Arc::clone(&clock)).build());
        RedisStore {
            inner: Arc::new(Inner {
                handle: self.handle,
                script: Script::new(SCRIPT),
                prefix: self.prefix.into_boxed_str(),
                timeout: self.timeout,
                client_time: self.client_time,
                insurance: Insurance::new(
                    self.fallback,
                    memory,
                    self.retry_interval,
                    self.log_interval,
                ),
                clock,
            }),
        }
    }
}

impl RedisStore {
    /// A store with the default settings on `handle`.
    pub fn new(handle: RedisHandle) -> Self {
        Self::builder(handle).build()
    }

    /// A builder to choose the prefix, the deadline and what happens when Redis fails.
    pub fn builder(handle: RedisHandle) -> RedisStoreBuilder {
        RedisStoreBuilder {
            handle,
            prefix: "rl:".to_owned(),
            timeout: Duration::from_millis(50),
            clock: None,
            client_time: false,
            fallback: Fallback::Memory,
            insurance: None,
            retry_interval: Duration::from_millis(200),
            log_interval: Duration::from_secs(10),
        }
    }

    /// The Redis key holding `key`'s state under `policy`.
    pub fn redis_key(&self, policy: &Policy, key: &Key) -> String {
        redis_key(&self.inner.prefix, policy, key)
    }

    /// Sends `PING`, for a health check.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] when Redis does not answer `PONG`; [`Error::Timeout`] when it does
    /// not answer within the store's deadline.
    pub async fn ping(&self) -> Result<()> {
        match tokio::time::timeout(self.inner.timeout, self.inner.handle.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(crate::pool::Error::Redis(error))) => Err(Error::Redis(error)),
            Ok(Err(error)) => Err(Error::UnexpectedReply(error.to_string())),
            Err(_) => Err(Error::Timeout(self.inner.timeout)),
        }
    }

    /// The decision as Redis makes it, without the fallback.
    async fn decide_in_redis(
        inner: &Inner,
        policy: &Policy,
        key: &Key,
        cost: u32,
    ) -> Result<Decision> {
        let mut invocation = inner.script.prepare_invoke();
        invocation
            .key(redis_key(&inner.prefix, policy, key))
            .arg(char::from(policy.algorithm().tag()).to_string())
            .arg(cost);
        if inner.client_time {
            invocation.arg(inner.clock.now_micros());
        } else {
            invocation.arg("");
        }
        for quota in policy.quotas() {
            invocation
                .arg(quota.count())
                .arg(quota.burst())
                .arg(quota.period_millis());
        }
        let mut handle = inner.handle.clone();
        let reply: Value =
            match tokio::time::timeout(inner.timeout, invocation.invoke_async(&mut handle)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => return Err(Error::Redis(error)),
                Err(_) => return Err(Error::Timeout(inner.timeout)),
            };
        let outcome = parse_reply(&reply, policy.quotas().len())?;
        Ok(decision(policy, &outcome))
    }
}

/// `<prefix>{<policy>:<algorithm>:<key>}`.
fn redis_key(prefix: &str, policy: &Policy, key: &Key) -> String {
    format!(
        "{prefix}{{{}:{}:{key}}}",
        policy.name(),
        char::from(policy.algorithm().tag()),
    )
}

/// Reads the script's `{allowed, binding, remaining, reset, retry}`.
fn parse_reply(reply: &Value, quotas: usize) -> Result<Outcome> {
    let unexpected = || Error::UnexpectedReply(format!("{reply:?}"));
    let Value::Array(items) = reply else {
        return Err(unexpected());
    };
    let mut numbers = [0u64; 5];
    if items.len() != numbers.len() {
        return Err(unexpected());
    }
    for (number, item) in numbers.iter_mut().zip(items) {
        match item {
            Value::Int(value) if *value >= 0 => *number = *value as u64,
            _ => return Err(unexpected()),
        }
    }
    let [allowed, binding, remaining, reset, retry] = numbers;
    let binding = usize::try_from(binding).unwrap_or(usize::MAX);
    if allowed > 1 || binding >= quotas {
        return Err(unexpected());
    }
    Ok(Outcome {
        allowed: allowed == 1,
        binding,
        remaining,
        reset,
        retry,
        changed: false,
    })
}

impl Store for RedisStore {
    fn check(&self, policy: &Policy, key: &Key, cost: u32) -> Check {
        let inner = &self.inner;
        let now = inner.clock.now_micros();
        if inner.insurance.skip_redis(now) {
            return Check::ready(Ok(inner.insurance.decide(policy, key, cost, &*inner.clock)));
        }
        let inner = Arc::clone(inner);
        let policy = policy.clone();
        let key = key.clone();
        Check::pending(async move {
            match Self::decide_in_redis(&inner, &policy, &key, cost).await {
                Ok(decision) => {
                    inner.insurance.succeeded();
                    Ok(decision)
                }
                Err(error @ Error::UnexpectedReply(_)) => Err(error),
                Err(error) => {
                    inner.insurance.failed(inner.clock.now_micros(), &error);
                    Ok(inner.insurance.decide(&policy, &key, cost, &*inner.clock))
                }
            }
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.handle.url())
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("client_time", &self.inner.client_time)
            .field("fallback", &self.inner.insurance.mode)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("client_time", &self.client_time)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}
