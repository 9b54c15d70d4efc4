use std::{fmt, sync::Arc, time::Duration};

use ::redis::{ErrorKind, Script, ServerErrorKind, Value};

use super::{
    Check, Decision, Key, MemoryStore, Store,
    fallback::{Fallback, Insurance},
    memory::decision,
};
use crate::{
    pool::RedisHandle,
    rate_limit::{
        algorithm::{self, Algorithm, Slot},
        clock::{Clock, SystemClock},
        error::{Error, Result},
        policy::{MAX_QUOTAS, Policy},
        quota::Quota,
    },
};

/// The decision script: the admission tests of `algorithm.rs`, in Lua.
const SCRIPT: &str = include_str!("script.lua");

/// A [`Store`] in Redis, shared by every server that uses the same Redis and prefix.
///
/// Each decision is one atomic Lua script (sent with `EVALSHA`, loaded on demand after a
/// `NOSCRIPT` reply), so concurrent requests from any number of servers never admit more
/// than the quota, and a decision costs one round trip whatever the number of quotas. The
/// script reads the time from Redis (`TIME`), so servers with skewed clocks agree.
///
/// Each pair of policy and key is one string under `<prefix>{<policy>:<algorithm>:<key>}`
/// (read with `GET`, written with `SET ... PX`): the braces make the whole state of one
/// decision live in one Redis Cluster slot. A key expires at the latest when its state could
/// be worth no more than a fresh key's (GCRA: the burst's refill time after the last admitted
/// request; a fixed window: one period; a sliding window: two), so idle clients leave
/// nothing behind. The script only tests the
/// admission and writes the next state; the figures of the [`Decision`] are derived on the
/// client from the state Redis found, by the same code as the memory store's.
///
/// # Memory in Redis
///
/// Redis holds one key per client that made a request within its quota's period (about
/// 150 bytes each with its name and Redis's own overhead), so memory is bounded by the number of distinct keys
/// seen in one period (GCRA, fixed window) or two (sliding window), not by traffic. A flood
/// of distinct clients (say, forwarded addresses from a trusted proxy) costs that many keys
/// for that long.
///
/// The store sets no cap of its own, because Redis already bounds it and the choice of
/// what to give up belongs to the operator: set `maxmemory`. With `volatile-ttl` or
/// `volatile-lru` Redis evicts rate-limit keys (they all carry a TTL), which only hands the
/// evicted clients a fresh budget; with `noeviction`, a full Redis refuses the writes and
/// the [`Fallback`] decides in memory, within the memory store's own bound of 100 000 keys
/// (tested with a 2 MiB `maxmemory`). A per-instance cap on new keys would refuse, or let
/// through unchecked, the new clients of a legitimate traffic spike alike, which is worse
/// than either.
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

    /// Whether decisions are made by the [`Fallback`] right now, because Redis failed the
    /// last time it was tried; `false` again from its first answer.
    pub fn fallback_active(&self) -> bool {
        self.inner.insurance.active()
    }

    /// What decides while Redis fails.
    pub fn fallback(&self) -> Fallback {
        self.inner.insurance.mode
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
    ///
    /// The script only tests the admission and writes the next state; it answers with the
    /// state it found and the time it decided at, from which [`algorithm::decide`] derives
    /// the figures exactly as the memory store does.
    async fn decide_in_redis(
        inner: &Inner,
        policy: &Policy,
        key: &Key,
        cost: u32,
    ) -> Result<Decision> {
        let quotas = policy.quotas();
        let algorithm = policy.algorithm();
        let single_gcra = algorithm == Algorithm::Gcra && quotas.len() == 1;
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(inner.script.get_hash())
            .arg(1)
            .arg(redis_key(&inner.prefix, policy, key))
            .arg(if single_gcra {
                "G"
            } else {
                script_tag(algorithm)
            })
            .arg(cost);
        if inner.client_time {
            cmd.arg(inner.clock.now_micros());
        } else {
            cmd.arg("");
        }
        cmd.arg(time_to_live_ms(algorithm, quotas));
        for quota in quotas {
            if algorithm == Algorithm::Gcra {
                let interval = quota.interval_micros();
                cmd.arg(interval).arg(u64::from(quota.burst()) * interval);
            } else {
                cmd.arg(quota.count()).arg(quota.period_micros());
            }
        }
        let mut handle = inner.handle.clone();
        let reply = match tokio::time::timeout(inner.timeout, evaluate(&cmd, &mut handle)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return Err(Error::Redis(error)),
            Err(_) => return Err(Error::Timeout(inner.timeout)),
        };
        let unexpected = || Error::UnexpectedReply(format!("{reply:?}"));
        let (admitted, now, mut slots) =
            parse_reply(&reply, algorithm, quotas.len(), single_gcra).ok_or_else(unexpected)?;
        let outcome = algorithm::decide(algorithm, quotas, &mut slots, now, cost);
        if outcome.allowed != admitted {
            return Err(unexpected());
        }
        Ok(decision(policy, &outcome))
    }
}

/// Sends `cmd` (an `EVALSHA` of [`SCRIPT`]); loads the script and sends it again when Redis
/// does not know it yet.
async fn evaluate(cmd: &::redis::Cmd, handle: &mut RedisHandle) -> ::redis::RedisResult<Value> {
    match cmd.query_async(handle).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            let _: String = ::redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SCRIPT)
                .query_async(handle)
                .await?;
            cmd.query_async(handle).await
        }
        result => result,
    }
}

/// How long a key may live after a write: the longest its state can take to run out (GCRA:
/// the burst's tolerance; a fixed window: one period; a sliding window: two, as its count
/// weighs on the next window), in whole milliseconds, at least 1.
fn time_to_live_ms(algorithm: Algorithm, quotas: &[Quota]) -> u64 {
    quotas
        .iter()
        .map(|quota| match algorithm {
            Algorithm::Gcra => (u64::from(quota.burst()) * quota.interval_micros()).div_ceil(1000),
            Algorithm::FixedWindow => quota.period_millis(),
            Algorithm::SlidingWindow => 2 * quota.period_millis(),
        })
        .max()
        .unwrap_or(0)
        .max(1)
}

/// The script's name for an algorithm deciding several quotas (or one window).
fn script_tag(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Gcra => "g",
        Algorithm::SlidingWindow => "s",
        Algorithm::FixedWindow => "f",
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

/// Reads the script's `{admitted, now, state}` into the admission, the time and the slots
/// the state held before the decision; `None` when the reply has another shape.
fn parse_reply(
    reply: &Value,
    algorithm: Algorithm,
    quotas: usize,
    single_gcra: bool,
) -> Option<(bool, u64, [Slot; MAX_QUOTAS])> {
    let Value::Array(items) = reply else {
        return None;
    };
    let [Value::Int(admitted @ 0..=1), Value::Int(now @ 0..), state] = items.as_slice() else {
        return None;
    };
    let mut slots = [Slot::default(); MAX_QUOTAS];
    match state {
        Value::Int(tat @ 0..) if single_gcra => slots[0].a = tat.unsigned_abs(),
        Value::Nil if !single_gcra => {}
        Value::BulkString(bytes) if !single_gcra && bytes.len() == 24 * quotas => {
            for (slot, fields) in slots.iter_mut().zip(bytes.chunks_exact(24)) {
                let field = |i: usize| {
                    let mut le = [0u8; 8];
                    le.copy_from_slice(&fields[8 * i..8 * i + 8]);
                    // Whole numbers below 2^53, as the script wrote them.
                    f64::from_le_bytes(le) as u64
                };
                let (a, b, c) = (field(0), field(1), field(2));
                *slot = match algorithm {
                    Algorithm::Gcra => Slot { a, b: 0 },
                    Algorithm::FixedWindow => Slot { a, b },
                    Algorithm::SlidingWindow => Slot {
                        a,
                        b: (c << 32) | (b & u64::from(u32::MAX)),
                    },
                };
            }
        }
        _ => return None,
    }
    Some((*admitted == 1, now.unsigned_abs(), slots))
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
