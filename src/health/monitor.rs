use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, RwLock},
    task::Poll,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use serde::Serialize;
use tokio::{
    sync::oneshot,
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};

use crate::fmt::HumanDuration;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
use crate::pool::PoolSnapshot;

use super::{
    HealthCheck, HealthService,
    report::{CheckResult, HealthReport, Status},
};

/// How often a [`HealthMonitor`] runs its checks unless told otherwise: 60 seconds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How long one check may take unless told otherwise: 5 seconds.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest interval a monitor accepts.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The error of a check that has not run yet.
const NOT_CHECKED: &str = "not checked yet";

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
type PoolSnapshotFn = Box<dyn Fn() -> PoolSnapshot + Send + Sync + 'static>;

/// Runs health checks in the background and keeps their latest results.
///
/// Build one with [`HealthMonitor::builder`], call [`start`](HealthMonitor::start) once, and
/// read the results with [`report`](HealthMonitor::report) or serve them with
/// [`service`](HealthMonitor::service). Reading never waits for a check: it returns each
/// check's latest result, published as soon as the check answers, and counts a check still
/// running past its due time as failing (see the [module docs](super)).
///
/// Cloning is cheap and every clone shares the same checks and results. The background task
/// stops once the last clone (including those inside [`HealthService`]s) is dropped.
#[derive(Clone)]
pub struct HealthMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    checks: Vec<Arc<dyn HealthCheck>>,
    interval: Duration,
    timeout: Duration,
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
    pools: Vec<(String, PoolSnapshotFn)>,
    /// The results of the last round; replaced whole, so a reader holds the lock only to
    /// clone an `Arc`.
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held for the length of a round, so rounds never overlap; remembers the statuses of
    /// the previous round to log changes.
    round: tokio::sync::Mutex<HashMap<String, Status>>,
    /// `Some` once the background task runs; dropping it (with the monitor) stops the task.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

/// The latest results, with the bodies the service answers precomputed.
pub(super) struct Snapshot {
    pub(super) report: HealthReport,
    pub(super) report_json: Bytes,
    pub(super) ready_json: Bytes,
}

impl Snapshot {
    fn new(report: HealthReport) -> Self {
        let report_json = serde_json::to_vec(&report).unwrap_or_default().into();
        let ready_json = ready_body(&report);
        Self {
            report,
            report_json,
            ready_json,
        }
    }
}

/// `{"status":"ready"}`, or `{"status":"not_ready","failing":[<critical checks>]}`.
fn ready_body(report: &HealthReport) -> Bytes {
    #[derive(Serialize)]
    struct Ready<'a> {
        status: &'static str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        failing: Vec<&'a str>,
    }
    let failing: Vec<&str> = report
        .checks
        .iter()
        .filter(|(_, result)| result.critical && result.status != Status::Healthy)
        .map(|(name, _)| name.as_str())
        .collect();
    let ready = Ready {
        status: if failing.is_empty() {
            "ready"
        } else {
            "not_ready"
        },
        failing,
    };
    serde_json::to_vec(&ready).unwrap_or_default().into()
}

impl HealthMonitor {
    /// A builder with no checks, a 60 s interval and a 5 s timeout per check.
    pub fn builder() -> HealthMonitorBuilder {
        HealthMonitorBuilder::new()
    }

    /// Runs every check once, concurrently, then keeps running them in the background at
    /// the configured interval.
    ///
    /// Returns once the first round is complete, so the report holds real results. Calling
    /// it again only runs a round, as [`refresh`](HealthMonitor::refresh) does.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn start(&self) {
        self.inner.run_round().await;
        let stop = {
            let mut slot = self
                .inner
                .stop
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.is_some() {
                return;
            }
            let (sender, receiver) = oneshot::channel();
            *slot = Some(sender);
            receiver
        };
        spawn_background(&self.inner, stop);
    }

    /// Runs every check now, concurrently, and returns once the report holds their results.
    ///
    /// Waits for a round already running to end first; rounds never overlap.
    pub async fn refresh(&self) {
        self.inner.run_round().await;
    }

    /// Each check's latest result: the last one it returned, or a failure while it runs
    /// past its due time.
    ///
    /// Does no I/O and never waits for a running check. Before the first round every check
    /// is reported failing with the error `not checked yet`.
    pub fn report(&self) -> HealthReport {
        self.snapshot().report.clone()
    }

    /// A tower service answering `/health`, `/health/ready`, `/health/live` and
    /// `/health/pools` from this monitor.
    pub fn service(&self) -> HealthService {
        HealthService::new(self.clone())
    }

    /// The statistics of every pool registered with [`HealthMonitorBuilder::pools`], by name.
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(feature = "postgres", feature = "sqlite", feature = "redis")))
    )]
    pub fn pool_stats(&self) -> BTreeMap<String, PoolSnapshot> {
        self.inner
            .pools
            .iter()
            .map(|(name, stats)| (name.clone(), stats()))
            .collect()
    }

    /// The latest results.
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .inner
                .snapshot
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The pool statistics as a JSON object; `{}` when no pool is registered.
    pub(super) fn pool_stats_json(&self) -> Bytes {
        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
        if !self.inner.pools.is_empty() {
            return serde_json::to_vec(&self.pool_stats())
                .unwrap_or_else(|_| b"{}".to_vec())
                .into();
        }
        Bytes::from_static(b"{}")
    }
}

impl fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks: Vec<&str> = self.inner.checks.iter().map(|check| check.name()).collect();
        let mut debug = f.debug_struct("HealthMonitor");
        debug
            .field("checks", &checks)
            .field("interval", &self.inner.interval)
            .field("timeout", &self.inner.timeout);
        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
        {
            let pools: Vec<&str> = self
                .inner
                .pools
                .iter()
                .map(|(name, _)| name.as_str())
                .collect();
            debug.field("pools", &pools);
        }
        debug
            .field("status", &self.snapshot().report.status)
            .finish()
    }
}

/// Re-runs the checks every interval until the monitor is dropped.
fn spawn_background(inner: &Arc<Inner>, mut stop: oneshot::Receiver<()>) {
    let monitor = Arc::downgrade(inner);
    let period = inner.interval;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // The sender lives in the monitor and is never used: the receiver completes when
            // the last monitor clone is dropped.
            let stopped = poll_fn(|cx| {
                if Pin::new(&mut stop).poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                ticks.poll_tick(cx).map(|_| false)
            })
            .await;
            if stopped {
                break;
            }
            let Some(inner) = monitor.upgrade() else {
                break;
            };
            inner.run_round().await;
        }
        tracing::debug!("health monitor dropped; background checks stopped");
    });
}

/// What one run of one check produced.
struct Outcome {
    latency: Duration,
    error: Option<String>,
}

/// Runs `check` under `timeout`.
async fn run_check(check: &dyn HealthCheck, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, check.check()).await;
    let latency = started.elapsed();
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.message().to_owned()),
        Err(_) => Some(format!("timed out after {}", HumanDuration::fine(timeout))),
    };
    Outcome { latency, error }
}

impl Inner {
    /// Runs every check concurrently and publishes each result as it comes: a check that
    /// fails shows at once, whatever the others are doing, and one still running when its
    /// next result was due (past the interval, or the timeout if shorter) shows as failing
    /// until it answers.
    async fn run_round(&self) {
        let mut previous = self.round.lock().await;
        let started = Instant::now();

        // Each check runs in a task of its own: checks proceed in parallel on a multi-thread
        // runtime, and a check that panics fails alone instead of ending the round.
        let mut tasks = JoinSet::new();
        let mut running = HashMap::with_capacity(self.checks.len());
        for (index, check) in self.checks.iter().enumerate() {
            let check = Arc::clone(check);
            let timeout = self.timeout;
            let task = tasks.spawn(async move { run_check(check.as_ref(), timeout).await });
            running.insert(task.id(), index);
        }

        let mut results = self
            .snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .report
            .checks
            .clone();
        let due = self.interval.min(self.timeout);
        let mut overdue = std::pin::pin!(tokio::time::sleep_until(started + due));
        let mut overdue_reported = false;
        while !running.is_empty() {
            let event = poll_fn(|cx| {
                if let Poll::Ready(Some(joined)) = tasks.poll_join_next_with_id(cx) {
                    return Poll::Ready(Some(joined));
                }
                if !overdue_reported && overdue.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            match event {
                Some(joined) => {
                    let (id, outcome) = match joined {
                        Ok((id, outcome)) => (id, outcome),
                        Err(error) => (
                            error.id(),
                            Outcome {
                                latency: started.elapsed(),
                                error: Some(if error.is_panic() {
                                    String::from("check panicked")
                                } else {
                                    String::from("check was cancelled")
                                }),
                            },
                        ),
                    };
                    if let Some(index) = running.remove(&id) {
                        self.record(index, outcome, &mut results, &mut previous);
                    }
                }
                None => {
                    overdue_reported = true;
                    let error = format!(
                        "no answer within {}; still running",
                        HumanDuration::fine(due)
                    );
                    for &index in running.values() {
                        let outcome = Outcome {
                            latency: started.elapsed(),
                            error: Some(error.clone()),
                        };
                        self.record(index, outcome, &mut results, &mut previous);
                    }
                }
            }
            self.publish(&results);
        }
        if self.checks.is_empty() {
            self.publish(&results);
        }
    }

    /// Puts one check's outcome into `results`, logging a change of status.
    fn record(
        &self,
        index: usize,
        outcome: Outcome,
        results: &mut BTreeMap<String, CheckResult>,
        previous: &mut HashMap<String, Status>,
    ) {
        let check = &self.checks[index];
        let result = CheckResult::new(check.critical(), outcome.latency, outcome.error);
        log_transition(check.name(), &result, previous.get(check.name()).copied());
        previous.insert(check.name().to_owned(), result.status);
        results.insert(check.name().to_owned(), result);
    }

    /// Makes `results` the report that readers see.
    fn publish(&self, results: &BTreeMap<String, CheckResult>) {
        let report = HealthReport::new(results.clone(), Some(SystemTime::now()));
        let snapshot = Arc::new(Snapshot::new(report));
        let old = std::mem::replace(
            &mut *self
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            snapshot,
        );
        // The old snapshot is freed here, outside the lock.
        drop(old);
    }
}

/// Logs a check that starts failing at WARN and one that recovers at INFO; a status that
/// stays the same is not logged again.
fn log_transition(name: &str, result: &CheckResult, previous: Option<Status>) {
    match (previous, result.status) {
        (Some(Status::Unhealthy), Status::Unhealthy) | (Some(Status::Healthy), Status::Healthy) => {
        }
        (_, Status::Unhealthy) => tracing::warn!(
            check = name,
            critical = result.critical,
            latency_ms = result.latency_ms,
            error = result.error.as_deref().unwrap_or_default(),
            "health check failing"
        ),
        (Some(_), _) => tracing::info!(
            check = name,
            latency_ms = result.latency_ms,
            "health check recovered"
        ),
        (None, _) => tracing::debug!(
            check = name,
            latency_ms = result.latency_ms,
            "health check passing"
        ),
    }
}

// ===== HealthMonitorBuilder =====

/// Configures a [`HealthMonitor`]; made by [`HealthMonitor::builder`].
#[must_use]
pub struct HealthMonitorBuilder {
    checks: Vec<Arc<dyn HealthCheck>>,
    interval: Duration,
    timeout: Duration,
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
    pools: Vec<(String, PoolSnapshotFn)>,
}

impl Default for HealthMonitorBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthMonitorBuilder {
    /// A builder with no checks, a 60 s interval and a 5 s timeout per check.
    pub fn new() -> Self {
        Self {
            checks: Vec::new(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_CHECK_TIMEOUT,
            #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
            pools: Vec::new(),
        }
    }

    /// Adds a check. A check with the name of one added before replaces it. No checks by
    /// default: a monitor without any reports `healthy`.
    pub fn check(mut self, check: impl HealthCheck) -> Self {
        self.checks.retain(|known| known.name() != check.name());
        self.checks.push(Arc::new(check));
        self
    }

    /// How often the background task runs the checks, counted from the start of one round
    /// to the start of the next; a round that overruns delays the next rather than
    /// overlapping it. Defaults to 60 seconds; values below 1 ms are raised to 1 ms.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(MIN_INTERVAL);
        self
    }

    /// How long one check may take before it counts as failed with the error
    /// `timed out after <timeout>`. Defaults to 5 seconds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Registers a pool under `name` for `/health/pools` and
    /// [`HealthMonitor::pool_stats`]; `stats` is called on every request to them, so it
    /// should only read counters, as the pools' own `stats()` methods do. A name registered
    /// before is replaced. No pools by default.
    #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(feature = "postgres", feature = "sqlite", feature = "redis")))
    )]
    pub fn pools(
        mut self,
        name: impl Into<String>,
        stats: impl Fn() -> PoolSnapshot + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        self.pools.retain(|(known, _)| *known != name);
        self.pools.push((name, Box::new(stats)));
        self
    }

    /// Builds the monitor. Nothing runs until [`HealthMonitor::start`] or
    /// [`HealthMonitor::refresh`] is called.
    pub fn build(self) -> HealthMonitor {
        let checks = self
            .checks
            .iter()
            .map(|check| {
                let result =
                    CheckResult::new(check.critical(), Duration::ZERO, Some(NOT_CHECKED.into()));
                (check.name().to_owned(), result)
            })
            .collect();
        let snapshot = Snapshot::new(HealthReport::new(checks, None));
        HealthMonitor {
            inner: Arc::new(Inner {
                checks: self.checks,
                interval: self.interval,
                timeout: self.timeout,
                #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
                pools: self.pools,
                snapshot: RwLock::new(Arc::new(snapshot)),
                round: tokio::sync::Mutex::new(HashMap::new()),
                stop: Mutex::new(None),
            }),
        }
    }
}

impl fmt::Debug for HealthMonitorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks: Vec<&str> = self.checks.iter().map(|check| check.name()).collect();
        let mut debug = f.debug_struct("HealthMonitorBuilder");
        debug
            .field("checks", &checks)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout);
        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
        {
            let pools: Vec<&str> = self.pools.iter().map(|(name, _)| name.as_str()).collect();
            debug.field("pools", &pools);
        }
        debug.finish()
    }
}
