use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize, Serializer};

/// The health of the whole service, or of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every check passes, or this check passes.
    Healthy,
    /// Only non-critical checks fail: the service works with reduced function. Never the
    /// status of a single check.
    Degraded,
    /// A critical check fails, or this check fails.
    Unhealthy,
}

impl Status {
    /// `healthy`, `degraded` or `unhealthy`, as in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The latest result of every check, as `GET /health` serves it:
///
/// ```json
/// {
///   "status": "degraded",
///   "checks": {
///     "cache": {"status": "unhealthy", "latency_ms": 5000.0, "error": "timed out after 5 s", "critical": false},
///     "database": {"status": "healthy", "latency_ms": 1.2, "critical": true}
///   },
///   "checked_at": "2025-01-31T09:30:00.125Z"
/// }
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthReport {
    /// `unhealthy` when a critical check fails, `degraded` when only non-critical ones do,
    /// `healthy` otherwise.
    pub status: Status,
    /// Each check's result, by check name.
    pub checks: BTreeMap<String, CheckResult>,
    /// When the latest of these results came in; `None` before the first round.
    /// Serialized as an RFC 3339 UTC timestamp with milliseconds, and left out when `None`.
    #[serde(
        serialize_with = "serialize_checked_at",
        skip_serializing_if = "Option::is_none"
    )]
    pub checked_at: Option<SystemTime>,
}

impl HealthReport {
    pub(super) fn new(
        checks: BTreeMap<String, CheckResult>,
        checked_at: Option<SystemTime>,
    ) -> Self {
        Self {
            status: overall_status(checks.values()),
            checks,
            checked_at,
        }
    }

    /// Whether every critical check passes: what `/health/ready` answers `200` for.
    pub fn is_ready(&self) -> bool {
        self.status != Status::Unhealthy
    }

    /// How long ago the results were produced; `None` before the first round.
    pub fn age(&self) -> Option<Duration> {
        self.checked_at
            .map(|at| SystemTime::now().duration_since(at).unwrap_or_default())
    }
}

/// Unhealthy if a critical result fails, degraded if any other fails, healthy otherwise.
fn overall_status<'a>(results: impl Iterator<Item = &'a CheckResult>) -> Status {
    let mut status = Status::Healthy;
    for result in results {
        if result.status != Status::Healthy {
            if result.critical {
                return Status::Unhealthy;
            }
            status = Status::Degraded;
        }
    }
    status
}

/// The latest result of one check.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    /// `healthy` or `unhealthy`.
    pub status: Status,
    /// How long the check took, in milliseconds (the timeout when it timed out).
    pub latency_ms: f64,
    /// Why the check failed; `None`, and left out of the JSON, when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the check is critical (see [`HealthCheck::critical`](super::HealthCheck::critical)).
    pub critical: bool,
}

impl CheckResult {
    pub(super) fn new(critical: bool, latency: Duration, error: Option<String>) -> Self {
        // Microsecond precision is all a health report needs, and keeps the JSON short.
        let latency_ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        Self {
            status: if error.is_none() {
                Status::Healthy
            } else {
                Status::Unhealthy
            },
            latency_ms,
            error,
            critical,
        }
    }
}

fn serialize_checked_at<S: Serializer>(
    checked_at: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match checked_at {
        Some(at) => serializer.serialize_str(&rfc3339(*at)),
        None => serializer.serialize_none(),
    }
}

/// `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`; times before 1970 show as the epoch, and times past
/// the year 9999 (which RFC 3339 cannot write) as its last millisecond.
pub(super) fn rfc3339(at: SystemTime) -> String {
    /// 9999-12-31T23:59:59.999Z.
    const LAST: Duration = Duration::from_millis(253_402_300_799_999);
    let at = at.clamp(UNIX_EPOCH, UNIX_EPOCH + LAST);
    humantime::format_rfc3339_millis(at).to_string()
}
