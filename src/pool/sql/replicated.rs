//! A read/write-split PostgreSQL pool: one primary and streaming replicas.

use std::{
    collections::VecDeque,
    fmt,
    str::FromStr,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use sqlx::{ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions};

use super::{PgPool, PgPoolBuilder, settings::DATABASE_URL};
use crate::pool::{Error, PoolSnapshot, Result};

/// `DATABASE_REPLICA_URLS`: the replicas, comma separated.
const DATABASE_REPLICA_URLS: &str = "DATABASE_REPLICA_URLS";
/// The most replicas one pool takes: which replicas are serving is one 64-bit mask.
const MAX_REPLICAS: usize = 64;

/// Default [`max_lag`](ReplicatedPoolBuilder::max_lag).
const DEFAULT_MAX_LAG: Duration = Duration::from_secs(5);
/// Default [`check_interval`](ReplicatedPoolBuilder::check_interval).
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Default [`check_timeout`](ReplicatedPoolBuilder::check_timeout).
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A PostgreSQL pool that sends reads to streaming replicas and writes to the primary.
///
/// Made of one [`PgPool`] for the primary and one per replica, each built by a
/// [`PgPoolBuilder`]. [`reader`](Self::reader) hands out a replica that is serving, in
/// round robin; [`writer`](Self::writer) (or [`primary`](Self::primary)) the primary, for
/// writes and transactions. Cheap to clone: clones share the pools.
///
/// # Which replicas serve
///
/// A background task (never the request path) looks at every member each
/// [`check_interval`](ReplicatedPoolBuilder::check_interval): it reads the primary's WAL
/// position (`pg_current_wal_lsn()`) and each replica's `pg_is_in_recovery()` and replayed
/// position (`pg_last_wal_replay_lsn()`), each under
/// [`check_timeout`](ReplicatedPoolBuilder::check_timeout). A replica is skipped while it is
/// unreachable, is not in recovery (promoted, or not a replica at all), or lags more than
/// [`max_lag`](ReplicatedPoolBuilder::max_lag). With no replica serving, reads go to the
/// primary.
///
/// **Lag** is how long ago the primary first stood at a WAL position the replica has not
/// replayed yet: the task keeps the positions it sampled and when, and a replica that has
/// replayed everything the primary had at the last sample lags 0. It is deliberately not
/// `now() - pg_last_xact_replay_timestamp()`, which grows without bound on a replica that is
/// fully caught up with an idle primary and would skip it for nothing. The measure is exact
/// to within one check interval. While the primary cannot be reached, replicas are compared
/// with the last position it was seen at.
///
/// # Read your writes
///
/// A replica serves a write made on the primary once it has replayed it. A request that
/// wrote and must then read its own write takes a [`PrimaryPin`] from
/// [`pin`](Self::pin) and reads through [`reader_pinned`](Self::reader_pinned): the primary
/// while the pin lasts, a replica after. The default pin lasts `max_lag + 2 × (check_interval
/// + check_timeout)`, the time after which every serving replica is known to have replayed
/// the write (a replica that had not would show more than `max_lag` of lag and be skipped).
/// A pin is `Copy + Send + Sync`, so it travels as a request extension
/// (`request.extensions_mut().insert(pin)`); across requests, keep
/// [`PrimaryPin::remaining`] in the client's session.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> perfkit::pool::Result<()> {
/// use perfkit::pool::ReplicatedPoolBuilder;
///
/// // DATABASE_URL, DATABASE_REPLICA_URLS and the DB_* knobs, for every member.
/// let pool = ReplicatedPoolBuilder::from_env()?.build().await?;
///
/// let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
///     .fetch_one(pool.reader().sqlx())
///     .await?;
/// sqlx::query("INSERT INTO users (name) VALUES ('ada')")
///     .execute(pool.writer().sqlx())
///     .await?;
/// // This request wrote: its reads see the write.
/// let pin = pool.pin();
/// let again: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
///     .fetch_one(pool.reader_pinned(Some(&pin)).sqlx())
///     .await?;
/// assert!(again > count);
/// for replica in pool.stats().replicas {
///     println!("{} {:?} lag {:?} ms", replica.url, replica.status, replica.lag_ms);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReplicatedPool {
    shared: Arc<Shared>,
}

struct Shared {
    primary: PgPool,
    replicas: Box<[Replica]>,
    /// Bit `i` set: replica `i` serves reads.
    serving: AtomicU64,
    next: AtomicUsize,
    primary_reads: AtomicU64,
    pinned_reads: AtomicU64,
    pin_for: Duration,
    max_lag: Duration,
    primary_error: Mutex<Option<String>>,
}

struct Replica {
    pool: PgPool,
    reads: AtomicU64,
    state: Mutex<State>,
}

/// What the last look at a replica found.
#[derive(Clone, Debug)]
struct State {
    status: ReplicaStatus,
    lag: Option<Duration>,
    behind_bytes: Option<u64>,
    error: Option<String>,
}

impl fmt::Debug for ReplicatedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedPool")
            .field("primary", &self.shared.primary.url())
            .field(
                "replicas",
                &self
                    .shared
                    .replicas
                    .iter()
                    .map(|replica| replica.pool.url())
                    .collect::<Vec<_>>(),
            )
            .field("max_lag", &self.shared.max_lag)
            .finish_non_exhaustive()
    }
}

/// Whether a replica serves reads, and if not why.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaStatus {
    /// Reachable, in recovery, and within the lag bound: it serves reads.
    Serving,
    /// Lags more than the bound: skipped until it catches up.
    Lagging,
    /// Could not be reached or did not answer in time: skipped until it does.
    Down,
    /// Answers but is not in recovery (promoted, or not a replica): skipped.
    NotReplica,
}

impl ReplicaStatus {
    /// `serving`, `lagging`, `down` or `not_replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Lagging => "lagging",
            Self::Down => "down",
            Self::NotReplica => "not_replica",
        }
    }
}

/// The statistics of a [`ReplicatedPool`], member by member.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedSnapshot {
    /// The primary's pool.
    pub primary: PoolSnapshot,
    /// Why the last look at the primary failed; `None` when it answered.
    pub primary_error: Option<String>,
    /// Each replica, in the order they were given.
    pub replicas: Vec<ReplicaSnapshot>,
    /// Reads sent to the primary because no replica was serving.
    pub primary_reads: u64,
    /// Reads sent to the primary because a [`PrimaryPin`] was active.
    pub pinned_reads: u64,
}

/// One replica of a [`ReplicatedSnapshot`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSnapshot {
    /// The replica's URL, password removed.
    pub url: String,
    /// Whether it serves reads.
    pub status: ReplicaStatus,
    /// Its lag at the last look, in milliseconds; `None` when it could not be measured.
    pub lag_ms: Option<f64>,
    /// How many bytes of WAL it had still to replay at the last look.
    pub behind_bytes: Option<u64>,
    /// Why it is skipped; `None` while it serves.
    pub error: Option<String>,
    /// Reads [`ReplicatedPool::reader`] sent to it.
    pub reads: u64,
    /// Its pool.
    pub pool: PoolSnapshot,
}

/// Sends a request's reads to the primary until a deadline: how a request that wrote reads
/// its own write. Made by [`ReplicatedPool::pin`] or [`PrimaryPin::until`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrimaryPin {
    until: Instant,
}

impl PrimaryPin {
    /// A pin that lasts until `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self { until: deadline }
    }

    /// A pin that lasts `duration` from now.
    pub fn for_duration(duration: Duration) -> Self {
        Self::until(Instant::now() + duration)
    }

    /// Whether reads still go to the primary.
    pub fn is_active(&self) -> bool {
        Instant::now() < self.until
    }

    /// How long the pin still lasts; zero once it expired.
    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }
}

impl ReplicatedPool {
    /// A pool for reads: a serving replica in round robin, or the primary when none serves.
    ///
    /// Reads only the routing state the background task keeps: no I/O, no lock.
    pub fn reader(&self) -> &PgPool {
        let serving = self.shared.serving.load(Ordering::Acquire);
        if serving == 0 {
            self.shared.primary_reads.fetch_add(1, Ordering::Relaxed);
            return &self.shared.primary;
        }
        let skip = self.shared.next.fetch_add(1, Ordering::Relaxed) % serving.count_ones() as usize;
        let mut bits = serving;
        for _ in 0..skip {
            bits &= bits - 1;
        }
        let replica = &self.shared.replicas[bits.trailing_zeros() as usize];
        replica.reads.fetch_add(1, Ordering::Relaxed);
        &replica.pool
    }

    /// [`reader`](Self::reader), except that the primary serves while `pin` is active.
    pub fn reader_pinned(&self, pin: Option<&PrimaryPin>) -> &PgPool {
        match pin {
            Some(pin) if pin.is_active() => {
                self.shared.pinned_reads.fetch_add(1, Ordering::Relaxed);
                &self.shared.primary
            }
            _ => self.reader(),
        }
    }

    /// The primary, for writes and transactions.
    pub fn writer(&self) -> &PgPool {
        &self.shared.primary
    }

    /// The primary; the same pool as [`writer`](Self::writer).
    pub fn primary(&self) -> &PgPool {
        &self.shared.primary
    }

    /// Every replica's pool, in the order they were given, serving or not.
    pub fn replicas(&self) -> impl ExactSizeIterator<Item = &PgPool> {
        self.shared.replicas.iter().map(|replica| &replica.pool)
    }

    /// A pin for a request that just wrote, lasting the pool's
    /// [`read_your_writes`](ReplicatedPoolBuilder::read_your_writes) window.
    pub fn pin(&self) -> PrimaryPin {
        PrimaryPin::for_duration(self.shared.pin_for)
    }

    /// Whether replica `index` serves reads now.
    pub fn is_serving(&self, index: usize) -> bool {
        index < self.shared.replicas.len()
            && self.shared.serving.load(Ordering::Acquire) & (1 << index) != 0
    }

    /// Each member's pool statistics, with each replica's status and lag as of the last look.
    pub fn stats(&self) -> ReplicatedSnapshot {
        let shared = &self.shared;
        ReplicatedSnapshot {
            primary: shared.primary.stats(),
            primary_error: lock(&shared.primary_error).clone(),
            replicas: shared
                .replicas
                .iter()
                .map(|replica| {
                    let state = lock(&replica.state).clone();
                    ReplicaSnapshot {
                        url: replica.pool.url().to_owned(),
                        status: state.status,
                        lag_ms: state.lag.map(|lag| lag.as_secs_f64() * 1000.0),
                        behind_bytes: state.behind_bytes,
                        error: state.error,
                        reads: replica.reads.load(Ordering::Relaxed),
                        pool: replica.pool.stats(),
                    }
                })
                .collect(),
            primary_reads: shared.primary_reads.load(Ordering::Relaxed),
            pinned_reads: shared.pinned_reads.load(Ordering::Relaxed),
        }
    }

    /// Closes every member's pool.
    pub async fn close(&self) {
        self.shared.primary.close().await;
        for replica in &self.shared.replicas {
            replica.pool.close().await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update replaces the value in one step, so a poisoned lock holds a whole value.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ===== Building =====

/// Builds a [`ReplicatedPool`] from a primary and replica [`PgPoolBuilder`]s.
#[must_use]
#[derive(Debug)]
pub struct ReplicatedPoolBuilder {
    primary: PgPoolBuilder,
    replicas: Vec<PgPoolBuilder>,
    max_lag: Duration,
    check_interval: Duration,
    check_timeout: Duration,
    pin_for: Option<Duration>,
}

impl ReplicatedPoolBuilder {
    /// A pool whose writes go to the pool `primary` builds, with no replica yet.
    pub fn new(primary: PgPoolBuilder) -> Self {
        Self {
            primary,
            replicas: Vec::new(),
            max_lag: DEFAULT_MAX_LAG,
            check_interval: DEFAULT_CHECK_INTERVAL,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            pin_for: None,
        }
    }

    /// A builder from `DATABASE_URL` (the primary), `DATABASE_REPLICA_URLS` (the replicas,
    /// comma separated; unset or blank: none, and every read goes to the primary) and the
    /// `DB_*` knobs of [`PgPoolBuilder::from_env`], which every member gets.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable when `DATABASE_URL` is unset or not a
    /// PostgreSQL URL, or when `DATABASE_REPLICA_URLS` holds an empty entry, a URL that is
    /// not PostgreSQL, or more than 64 URLs; [`Error::Env`] for an unreadable `DB_*` knob.
    pub fn from_env() -> Result<Self> {
        let primary = PgPoolBuilder::from_env()?;
        let url = primary.redacted_url();
        if !is_postgres_url(&url) {
            return Err(Error::Config(format!(
                "{DATABASE_URL} is set to {url}, which is not a PostgreSQL URL; a replicated \
                 pool needs postgres://user:password@host:5432/database"
            )));
        }
        let urls = std::env::var(DATABASE_REPLICA_URLS).unwrap_or_default();
        let replicas = parse_replica_urls(&urls)?;
        let mut builder = Self::new(primary);
        for url in replicas {
            builder = builder.replica_url(url);
        }
        Ok(builder)
    }

    /// Adds a replica built by `replica`.
    pub fn replica(mut self, replica: PgPoolBuilder) -> Self {
        self.replicas.push(replica);
        self
    }

    /// Adds a replica on `url` with the primary builder's settings.
    pub fn replica_url(self, url: impl Into<String>) -> Self {
        let replica = self.primary.with_url(url.into());
        self.replica(replica)
    }

    /// Applies `configure` to the builder of every member, primary and replicas:
    /// `.members(|member| member.application_name("billing"))`.
    pub fn members(mut self, configure: impl Fn(PgPoolBuilder) -> PgPoolBuilder) -> Self {
        self.primary = configure(self.primary);
        self.replicas = self.replicas.into_iter().map(&configure).collect();
        self
    }

    /// The most lag a replica may show and still serve reads. Defaults to 5 seconds
    ///.
    pub fn max_lag(mut self, max_lag: Duration) -> Self {
        self.max_lag = max_lag;
        self
    }

    /// How often the background task looks at every member. Defaults to 1 second
    ///; values below 10 ms are raised to 10 ms.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long one look at a member may take before it counts as down. Defaults to
    /// 2 seconds.
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a [`ReplicatedPool::pin`] sends reads to the primary. Defaults to
    /// `max_lag + 2 × (check_interval + check_timeout)`, after which every serving replica
    /// has replayed a write made before the pin.
    pub fn read_your_writes(mut self, pin_for: Duration) -> Self {
        self.pin_for = Some(pin_for);
        self
    }

    /// Builds the primary's pool (opening its first connections) and the replicas' pools
    /// (lazily: a replica that is down does not stop the service from starting), looks at
    /// every member once, and starts the background task.
    ///
    /// # Errors
    ///
    /// Those of [`PgPoolBuilder::build`] for the primary and of
    /// [`PgPoolBuilder::build_lazy`] for a replica; [`Error::Config`] for more than 64
    /// replicas.
    pub async fn build(self) -> Result<ReplicatedPool> {
        if self.replicas.len() > MAX_REPLICAS {
            return Err(Error::Config(format!(
                "{} replicas given; a replicated pool takes at most {MAX_REPLICAS}",
                self.replicas.len()
            )));
        }
        let primary = self.primary.build().await?;
        let replicas = self
            .replicas
            .into_iter()
            .map(|builder| {
                Ok(Replica {
                    pool: builder.build_lazy()?,
                    reads: AtomicU64::new(0),
                    state: Mutex::new(State {
                        status: ReplicaStatus::Down,
                        lag: None,
                        behind_bytes: None,
                        error: Some("not checked yet".into()),
                    }),
                })
            })
            .collect::<Result<Box<[_]>>>()?;
        let pin_for = self
            .pin_for
            .unwrap_or(self.max_lag + 2 * (self.check_interval + self.check_timeout));
        let shared = Arc::new(Shared {
            primary,
            replicas,
            serving: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            primary_reads: AtomicU64::new(0),
            pinned_reads: AtomicU64::new(0),
            pin_for,
            max_lag: self.max_lag,
            primary_error: Mutex::new(None),
        });
        let mut watch = Watch::new(&shared, self.check_interval, self.check_timeout);
        watch.round(&shared).await;
        let weak = Arc::downgrade(&shared);
        tokio::spawn(watch.run(weak));
        Ok(ReplicatedPool { shared })
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URLs of `DATABASE_REPLICA_URLS`.
fn parse_replica_urls(value: &str) -> Result<Vec<String>> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let urls: Vec<String> = value.split(',').map(|url| url.trim().to_owned()).collect();
    for (position, url) in urls.iter().enumerate() {
        if url.is_empty() {
            return Err(Error::Config(format!(
                "{DATABASE_REPLICA_URLS} holds an empty entry at position {}; separate \
                 PostgreSQL URLs with single commas",
                position + 1
            )));
        }
        if !is_postgres_url(url) {
            return Err(Error::Config(format!(
                "{DATABASE_REPLICA_URLS} entry {} is {}, which is not a PostgreSQL URL; \
                 expected postgres://user:password@host:5432/database",
                position + 1,
                crate::pool::redact_url(url)
            )));
        }
        if let Err(err) = PgConnectOptions::from_str(url) {
            return Err(Error::Config(format!(
                "{DATABASE_REPLICA_URLS} entry {} ({}) does not parse: {err}",
                position + 1,
                crate::pool::redact_url(url)
            )));
        }
    }
    if urls.len() > MAX_REPLICAS {
        return Err(Error::Config(format!(
            "{DATABASE_REPLICA_URLS} holds {} URLs; a replicated pool takes at most {MAX_REPLICAS}",
            urls.len()
        )));
    }
    Ok(urls)
}

// ===== The background task =====

/// A connection of the task's own to one member, reopened when it breaks.
struct Probe {
    options: PgConnectOptions,
    conn: Option<PgConnection>,
}

impl Probe {
    fn new(pool: &PgPool) -> Self {
        Self {
            options: (*pool.connect_options())
                .clone()
                .disable_statement_logging(),
            conn: None,
        }
    }

    /// Runs `query` (one row of `T`) on the probe connection, within `timeout`.
    async fn fetch<T>(
        &mut self,
        query: &'static str,
        timeout: Duration,
    ) -> std::result::Result<T, String>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let attempt = async {
            if self.conn.is_none() {
                self.conn = Some(
                    self.options
                        .connect()
                        .await
                        .map_err(|err| err.to_string())?,
                );
            }
            let conn = self.conn.as_mut().expect("opened above");
            sqlx::query_as::<_, T>(query)
                .fetch_one(conn)
                .await
                .map_err(|err| err.to_string())
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        if result.is_err() {
            // A broken or hung connection is replaced at the next look.
            if let Some(conn) = self.conn.take() {
                drop(conn.close_hard());
            }
        }
        result
    }
}

struct Watch {
    interval: Duration,
    timeout: Duration,
    primary: Probe,
    replicas: Vec<Option<Probe>>,
    /// Positions the primary was seen at, increasing, with when.
    samples: VecDeque<(Instant, u64)>,
    /// Samples older than this are dropped (the newest is always kept).
    retention: Duration,
}

impl Watch {
    fn new(shared: &Shared, interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            primary: Probe::new(&shared.primary),
            replicas: shared
                .replicas
                .iter()
                .map(|replica| Some(Probe::new(&replica.pool)))
                .collect(),
            samples: VecDeque::new(),
            retention: shared.max_lag + 2 * (interval + timeout),
        }
    }

    async fn run(mut self, shared: Weak<Shared>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if shared.primary.is_closed() {
                return;
            }
            self.round(&shared).await;
        }
    }

    /// One look at every member, then the new routing state.
    async fn round(&mut self, shared: &Shared) {
        let primary: std::result::Result<(i64,), String> = self
            .primary
            .fetch(
                "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8",
                self.timeout,
            )
            .await;
        let now = Instant::now();
        match primary {
            Ok((lsn,)) => {
                let lsn = u64::try_from(lsn).unwrap_or(0);
                if self.samples.back().is_none_or(|(_, last)| lsn > *last) {
                    self.samples.push_back((now, lsn));
                }
                *lock(&shared.primary_error) = None;
            }
            Err(error) => *lock(&shared.primary_error) = Some(error),
        }
        while self.samples.len() > 1
            && self
                .samples
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.retention)
        {
            self.samples.pop_front();
        }

        let mut looks = tokio::task::JoinSet::new();
        for (index, probe) in self.replicas.iter_mut().enumerate() {
            let mut probe = probe.take().expect("returned by the previous round");
            let timeout = self.timeout;
            looks.spawn(async move {
                let found: std::result::Result<(bool, Option<i64>), String> = probe
                    .fetch(
                        "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8",
                        timeout,
                    )
                    .await;
                (index, probe, found)
            });
        }
        let mut serving = 0u64;
        while let Some(joined) = looks.join_next().await {
            let Ok((index, probe, found)) = joined else {
                continue;
            };
            self.replicas[index] = Some(probe);
            let state = self.judge(found, shared.max_lag);
            if state.status == ReplicaStatus::Serving {
                serving |= 1 << index;
            }
            let replica = &shared.replicas[index];
            let mut current = lock(&replica.state);
            if current.status != state.status {
                if state.status == ReplicaStatus::Serving {
                    tracing::info!(url = %replica.pool.url(), "replica serves reads again");
                } else {
                    tracing::warn!(
                        url = %replica.pool.url(),
                        status = state.status.as_str(),
                        error = state.error.as_deref().unwrap_or_default(),
                        "replica skipped: reads go to the other replicas, or to the primary"
                    );
                }
            }
            *current = state;
        }
        // A probe lost to a panicking task is recreated.
        for (index, probe) in self.replicas.iter_mut().enumerate() {
            if probe.is_none() {
                *probe = Some(Probe::new(&shared.replicas[index].pool));
            }
        }
        shared.serving.store(serving, Ordering::Release);
    }

    /// The state of a replica that answered `found`.
    fn judge(
        &self,
        found: std::result::Result<(bool, Option<i64>), String>,
        max_lag: Duration,
    ) -> State {
        let (in_recovery, replayed) = match found {
            Err(error) => {
                return State {
                    status: ReplicaStatus::Down,
                    lag: None,
                    behind_bytes: None,
                    error: Some(error),
                };
            }
            Ok(found) => found,
        };
        let Some(replayed) = replayed.filter(|_| in_recovery) else {
            return State {
                status: ReplicaStatus::NotReplica,
                lag: None,
                behind_bytes: None,
                error: Some("pg_is_in_recovery() is false: not a streaming replica".into()),
            };
        };
        let replayed = u64::try_from(replayed).unwrap_or(0);
        let now = Instant::now();
        let lag = self
            .samples
            .iter()
            .find(|(_, lsn)| *lsn > replayed)
            .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at));
        let behind_bytes = self
            .samples
            .back()
            .map(|(_, lsn)| lsn.saturating_sub(replayed));
        if lag > max_lag {
            State {
                status: ReplicaStatus::Lagging,
                lag: Some(lag),
                behind_bytes,
                error: Some(format!(
                    "lag of at least {} ms, over the bound of {} ms",
                    lag.as_millis(),
                    max_lag.as_millis()
                )),
            }
        } else {
            State {
                status: ReplicaStatus::Serving,
                lag: Some(lag),
                behind_bytes,
                error: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_urls_are_read_with_errors_naming_the_variable() {
        assert!(parse_replica_urls("  ").unwrap().is_empty());
        assert_eq!(
            parse_replica_urls("postgres://a@r1/db, postgresql://a@r2/db").unwrap(),
            ["postgres://a@r1/db", "postgresql://a@r2/db"]
        );
        let err = parse_replica_urls("postgres://a@r1/db,,postgres://a@r2/db")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATABASE_REPLICA_URLS") && err.contains("position 2"),
            "{err}"
        );
        let err = parse_replica_urls("mysql://app:secret@r1/db")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DATABASE_REPLICA_URLS") && err.contains("not a PostgreSQL URL"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        let many = vec!["postgres://a@r/db"; 65].join(",");
        let err = parse_replica_urls(&many).unwrap_err().to_string();
        assert!(err.contains("at most 64"), "{err}");
    }

    #[test]
    fn pins_expire() {
        let pin = PrimaryPin::for_duration(Duration::from_secs(60));
        assert!(pin.is_active());
        assert!(pin.remaining() > Duration::from_secs(59));
        let past = PrimaryPin::until(Instant::now());
        assert!(!past.is_active());
        assert_eq!(past.remaining(), Duration::ZERO);
    }
}
