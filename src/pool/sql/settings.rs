//! The knobs both builders share, their defaults and the environment variables behind them.

use std::time::Duration;

use crate::EnvError;
use crate::env::var;

use super::super::{Error, Result};

/// `DATABASE_URL`: where the pool connects.
pub(super) const DATABASE_URL: &str = "DATABASE_URL";
const POOL_SIZE: &str = "DB_POOL_SIZE";
const MAX_OVERFLOW: &str = "DB_MAX_OVERFLOW";
const POOL_TIMEOUT: &str = "DB_POOL_TIMEOUT";
const POOL_RECYCLE: &str = "DB_POOL_RECYCLE";
const QUERY_TIMEOUT: &str = "DB_QUERY_TIMEOUT";

const CONNECTIONS: &str = "a whole number of connections";
const SECONDS: &str = "a whole number of seconds";

/// Default [`pool_size`](super::PgPoolBuilder::pool_size).
pub(super) const DEFAULT_POOL_SIZE: u32 = 10;
/// Default [`max_overflow`](super::PgPoolBuilder::max_overflow).
pub(super) const DEFAULT_MAX_OVERFLOW: u32 = 10;
/// Default [`acquire_timeout`](super::PgPoolBuilder::acquire_timeout).
pub(super) const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`recycle`](super::PgPoolBuilder::recycle).
pub(super) const DEFAULT_RECYCLE: Duration = Duration::from_secs(1800);
/// Default [`idle_timeout`](super::PgPoolBuilder::idle_timeout).
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default [`pre_ping_after`](super::PgPoolBuilder::pre_ping_after).
pub(super) const DEFAULT_PRE_PING_AFTER: Duration = Duration::from_secs(1);
/// Default [`leak_threshold`](super::PgPoolBuilder::leak_threshold).
pub(super) const DEFAULT_LEAK_THRESHOLD: Duration = Duration::from_secs(60);
/// Default [`slow_statement_threshold`](super::PgPoolBuilder::slow_statement_threshold).
pub(super) const DEFAULT_SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// What every sqlx pool perfkit builds is configured with.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Common {
    pub(super) pool_size: u32,
    pub(super) max_overflow: u32,
    pub(super) acquire_timeout: Duration,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) recycle: Option<Duration>,
    pub(super) pre_ping: bool,
    pub(super) pre_ping_after: Duration,
    pub(super) leak_threshold: Option<Duration>,
    pub(super) slow_statement: Option<Duration>,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
            max_overflow: DEFAULT_MAX_OVERFLOW,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            recycle: Some(DEFAULT_RECYCLE),
            pre_ping: true,
            pre_ping_after: DEFAULT_PRE_PING_AFTER,
            leak_threshold: Some(DEFAULT_LEAK_THRESHOLD),
            slow_statement: Some(DEFAULT_SLOW_STATEMENT),
        }
    }
}

impl Common {
    /// The most connections the pool may open: pool size plus overflow.
    pub(super) fn max_connections(&self) -> u32 {
        self.pool_size.saturating_add(self.max_overflow)
    }

    /// Rejects settings with which no acquire could ever succeed.
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_connections() == 0 {
            return Err(Error::Config(
                "pool_size + max_overflow is 0, so the pool could never hand out a connection; \
                 set DB_POOL_SIZE or pool_size() to 1 or more"
                    .into(),
            ));
        }
        if self.acquire_timeout.is_zero() {
            return Err(Error::Config(
                "the acquire timeout is 0, so every acquire would fail at once; \
                 set DB_POOL_TIMEOUT or acquire_timeout() to at least 1 second"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Applies the values read from the environment over the defaults.
    pub(super) fn apply_env(&mut self, env: &EnvValues) {
        if let Some(size) = env.pool_size {
            self.pool_size = size;
        }
        if let Some(overflow) = env.max_overflow {
            self.max_overflow = overflow;
        }
        if let Some(secs) = env.pool_timeout_secs {
            self.acquire_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = env.recycle_secs {
            self.recycle = (secs > 0).then(|| Duration::from_secs(secs));
        }
    }
}

/// The `DB_*` variables as read, before they are applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct EnvValues {
    pub(super) pool_size: Option<u32>,
    pub(super) max_overflow: Option<u32>,
    pub(super) pool_timeout_secs: Option<u64>,
    pub(super) recycle_secs: Option<u64>,
    pub(super) query_timeout_secs: Option<u64>,
}

impl EnvValues {
    /// Reads `DB_POOL_SIZE`, `DB_MAX_OVERFLOW`, `DB_POOL_TIMEOUT`, `DB_POOL_RECYCLE` and
    /// `DB_QUERY_TIMEOUT`; unset or blank variables stay `None`.
    pub(super) fn read() -> std::result::Result<Self, EnvError> {
        Ok(Self {
            pool_size: var(POOL_SIZE, CONNECTIONS)?,
            max_overflow: var(MAX_OVERFLOW, CONNECTIONS)?,
            pool_timeout_secs: var(POOL_TIMEOUT, SECONDS)?,
            recycle_secs: var(POOL_RECYCLE, SECONDS)?,
            query_timeout_secs: var(QUERY_TIMEOUT, SECONDS)?,
        })
    }

    /// `DB_QUERY_TIMEOUT` as a statement timeout; 0 means none.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(super) fn query_timeout(&self) -> Option<Duration> {
        self.query_timeout_secs
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs)
    }
}

/// `DATABASE_URL`, trimmed; `None` when unset or blank.
pub(super) fn database_url() -> Option<String> {
    // Any text is a URL to try (`String`'s parse cannot fail); the driver judges it.
    crate::env::var::<String>(DATABASE_URL, "a database URL")
        .ok()
        .flatten()
}

/// The setters both pool builders share, each writing `self.common`.
macro_rules! common_pool_setters {
    () => {
        /// Connections kept open and ready, even when idle. Defaults to 10 (`DB_POOL_SIZE`).
        ///
        /// sqlx: `min_connections`. [`build`](Self::build) opens this many at start-up; when
        /// a connection is retired (recycled, idle, broken) and the pool falls below this
        /// size, sqlx opens a replacement.
        pub fn pool_size(mut self, size: u32) -> Self {
            self.common.pool_size = size;
            self
        }

        /// Extra connections the pool may open under load, on top of
        /// [`pool_size`](Self::pool_size). Defaults to 10 (`DB_MAX_OVERFLOW`).
        ///
        /// sqlx: `max_connections = pool_size + max_overflow`. sqlx closes every connection
        /// idle for longer than [`idle_timeout`](Self::idle_timeout) and then reopens
        /// connections up to `pool_size`, so overflow connections go away once the load
        /// does (and idle core connections are renewed at that pace).
        pub fn max_overflow(mut self, overflow: u32) -> Self {
            self.common.max_overflow = overflow;
            self
        }

        /// How long an acquire waits for a connection, opening one included, before it
        /// fails with [`Error::AcquireTimeout`](crate::pool::Error::AcquireTimeout).
        /// Defaults to 30 seconds (`DB_POOL_TIMEOUT`, in seconds).
        ///
        /// sqlx: `acquire_timeout`. [`build`](Self::build) waits as long for its first
        /// connection.
        pub fn acquire_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.common.acquire_timeout = timeout;
            self
        }

        /// Closes connections that stay idle longer than this; `None` keeps them.
        /// Defaults to 10 minutes.
        ///
        /// sqlx: `idle_timeout`, enforced by sqlx's reaper task, which then reopens
        /// connections up to [`pool_size`](Self::pool_size).
        pub fn idle_timeout(mut self, timeout: impl Into<Option<std::time::Duration>>) -> Self {
            self.common.idle_timeout = timeout.into();
            self
        }

        /// Retires connections older than this, give or take 10 %, so that a fleet of
        /// processes started together does not reconnect in one storm; `None` keeps
        /// connections for as long as they work. Defaults to 30 minutes (`DB_POOL_RECYCLE`,
        /// in seconds; 0 turns recycling off).
        ///
        /// Each connection gets a lifetime of its own, drawn between 90 % and 110 % of this,
        /// and is retired when it is next acquired past that age (sqlx `before_acquire`).
        /// sqlx's `max_lifetime` is set to the 110 % bound as a backstop for connections that
        /// sit idle.
        pub fn recycle(mut self, lifetime: impl Into<Option<std::time::Duration>>) -> Self {
            self.common.recycle = lifetime.into();
            self
        }

        /// Checks that a connection still works before handing it out, if it has been idle
        /// for longer than [`pre_ping_after`](Self::pre_ping_after). Defaults to `true`.
        ///
        /// A connection whose ping fails (the server restarted, a proxy or firewall dropped
        /// it) is discarded and the acquire goes on with another one, so the caller never
        /// sees it. sqlx: `test_before_acquire(false)` plus a `before_acquire` hook that
        /// pings only connections idle past the threshold, which spares the round trip
        /// sqlx's own `test_before_acquire(true)` makes on every acquire.
        pub fn pre_ping(mut self, enabled: bool) -> Self {
            self.common.pre_ping = enabled;
            self
        }

        /// How long a connection may sit idle before [`pre_ping`](Self::pre_ping) checks it.
        /// Defaults to 1 second; `Duration::ZERO` pings on every acquire.
        pub fn pre_ping_after(mut self, idle: std::time::Duration) -> Self {
            self.common.pre_ping_after = idle;
            self
        }

        /// Reports, once at WARN, a connection held longer than this, with the place it was
        /// acquired (`file:line`) and how long it has been held, and counts it in
        /// [`PoolSnapshot::leaks_reported`](crate::pool::PoolSnapshot::leaks_reported); `None`
        /// turns the check off. Defaults to 60 seconds.
        ///
        /// Only connections taken with [`SqlPool::acquire`](crate::pool::SqlPool::acquire)
        /// are tracked; queries run on the pool itself (`fetch_all(&*pool)`) hold their
        /// connection for one statement. The check runs in the pool's background task.
        pub fn leak_threshold(mut self, threshold: impl Into<Option<std::time::Duration>>) -> Self {
            self.common.leak_threshold = threshold.into();
            self
        }

        /// Logs statements that run longer than this at WARN, through `tracing` (target
        /// `sqlx::query`, message `slow statement: execution time exceeded alert threshold`,
        /// with the statement and its `elapsed` time); `None` turns it off. Defaults to
        /// 1 second.
        ///
        /// sqlx: `ConnectOptions::log_slow_statements(LevelFilter::Warn, threshold)`.
        pub fn slow_statement_threshold(
            mut self,
            threshold: impl Into<Option<std::time::Duration>>,
        ) -> Self {
            self.common.slow_statement = threshold.into();
            self
        }
    };
}

pub(super) use common_pool_setters;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let common = Common::default();
        assert_eq!(common.pool_size, 10);
        assert_eq!(common.max_overflow, 10);
        assert_eq!(common.max_connections(), 20);
        assert_eq!(common.acquire_timeout, Duration::from_secs(30));
        assert_eq!(common.recycle, Some(Duration::from_secs(1800)));
        assert_eq!(common.idle_timeout, Some(Duration::from_secs(600)));
        assert!(common.pre_ping);
        assert_eq!(common.pre_ping_after, Duration::from_secs(1));
        assert_eq!(common.leak_threshold, Some(Duration::from_secs(60)));
        assert_eq!(common.slow_statement, Some(Duration::from_secs(1)));
        common.validate().unwrap();
    }

    #[test]
    fn environment_values_override_the_defaults() {
        let mut common = Common::default();
        common.apply_env(&EnvValues {
            pool_size: Some(4),
            max_overflow: Some(2),
            pool_timeout_secs: Some(5),
            recycle_secs: Some(60),
            query_timeout_secs: Some(3),
        });
        assert_eq!(common.pool_size, 4);
        assert_eq!(common.max_connections(), 6);
        assert_eq!(common.acquire_timeout, Duration::from_secs(5));
        assert_eq!(common.recycle, Some(Duration::from_secs(60)));

        common.apply_env(&EnvValues {
            recycle_secs: Some(0),
            ..EnvValues::default()
        });
        assert_eq!(
            common.recycle, None,
            "DB_POOL_RECYCLE=0 turns recycling off"
        );
        assert_eq!(common.pool_size, 4, "unset variables leave settings alone");
    }

    #[test]
    fn query_timeout_of_zero_means_none() {
        let env = |secs| EnvValues {
            query_timeout_secs: secs,
            ..EnvValues::default()
        };
        assert_eq!(env(None).query_timeout(), None);
        assert_eq!(env(Some(0)).query_timeout(), None);
        assert_eq!(env(Some(15)).query_timeout(), Some(Duration::from_secs(15)));
    }

    #[test]
    fn settings_that_cannot_work_are_rejected() {
        let empty = Common {
            pool_size: 0,
            max_overflow: 0,
            ..Common::default()
        };
        let err = empty.validate().unwrap_err().to_string();
        assert!(err.contains("DB_POOL_SIZE"), "{err}");

        let instant = Common {
            acquire_timeout: Duration::ZERO,
            ..Common::default()
        };
        let err = instant.validate().unwrap_err().to_string();
        assert!(err.contains("acquire timeout"), "{err}");

        let overflow_only = Common {
            pool_size: 0,
            max_overflow: 3,
            ..Common::default()
        };
        overflow_only.validate().unwrap();
    }
}
