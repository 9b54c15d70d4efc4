//! [`ReplicatedCheck`]: one check per member of a [`ReplicatedPool`].

use std::fmt;

use async_trait::async_trait;

use super::{CheckError, HealthCheck, Label};
use crate::{health::HealthMonitorBuilder, pool::ReplicatedPool};

/// Registers one check per member of a [`ReplicatedPool`], and each member's pool statistics
/// for `/health/pools`.
///
/// With the default name `database`, the checks are `database.primary` (critical: `SELECT 1`
/// on the primary) and `database.replica.N` for the replica at position `N` (from 0) of
/// `DATABASE_REPLICA_URLS` (non-critical: fails while the pool skips that replica, with the
/// reason: lag over the bound, unreachable, not a replica). A skipped replica therefore makes
/// the report `degraded`, and only a primary that is down makes it `unhealthy`. A replica's
/// check reports the pool's own background verdict, so `/health` says exactly which replicas
/// reads skip.
///
/// ```no_run
/// # async fn run() -> perfkit::pool::Result<()> {
/// use perfkit::{health::{HealthMonitor, ReplicatedCheck}, pool::ReplicatedPoolBuilder};
///
/// let pool = ReplicatedPoolBuilder::from_env()?.build().await?;
/// let monitor = ReplicatedCheck::new(&pool).add_to(HealthMonitor::builder()).build();
/// monitor.start().await;
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[must_use]
#[derive(Debug)]
pub struct ReplicatedCheck {
    name: String,
    pool: ReplicatedPool,
}

impl ReplicatedCheck {
    /// Checks named `database.*` for `pool`.
    pub fn new(pool: &ReplicatedPool) -> Self {
        Self {
            name: "database".into(),
            pool: pool.clone(),
        }
    }

    /// Sets the prefix of the checks' and pools' names. Defaults to `database`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The member checks: the primary's first, then each replica's.
    pub fn checks(&self) -> Vec<MemberCheck> {
        let mut checks = vec![MemberCheck {
            label: Label::new(format!("{}.primary", self.name), true),
            pool: self.pool.clone(),
            member: None,
        }];
        checks.extend((0..self.pool.replicas().len()).map(|index| MemberCheck {
            label: Label::new(format!("{}.replica.{index}", self.name), false),
            pool: self.pool.clone(),
            member: Some(index),
        }));
        checks
    }

    /// Adds every member's check to `builder`, and every member's pool statistics under the
    /// same names.
    pub fn add_to(self, mut builder: HealthMonitorBuilder) -> HealthMonitorBuilder {
        for check in self.checks() {
            let pool = self.pool.clone();
            let name = check.label.name.clone();
            builder = match check.member {
                None => builder.pools(name, move || pool.primary().stats()),
                Some(index) => builder.pools(name, move || {
                    pool.replicas()
                        .nth(index)
                        .map(|replica| replica.stats())
                        .unwrap_or_default()
                }),
            };
            builder = builder.check(check);
        }
        builder
    }
}

/// The check of one member of a [`ReplicatedPool`]; made by [`ReplicatedCheck`].
#[must_use]
pub struct MemberCheck {
    label: Label,
    pool: ReplicatedPool,
    /// `None`: the primary.
    member: Option<usize>,
}

label_setters!(impl[] MemberCheck, default = "`database.primary` or `database.replica.N`");

impl fmt::Debug for MemberCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.label
            .fields(&mut f.debug_struct("MemberCheck"))
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl HealthCheck for MemberCheck {
    label_accessors!();

    async fn check(&self) -> Result<(), CheckError> {
        let Some(index) = self.member else {
            sqlx::raw_sql("SELECT 1")
                .execute(self.pool.primary().sqlx())
                .await
                .map_err(|error| CheckError::failed("SELECT 1 on the primary", error))?;
            return Ok(());
        };
        if self.pool.is_serving(index) {
            return Ok(());
        }
        let stats = self.pool.stats();
        let replica = stats
            .replicas
            .get(index)
            .ok_or_else(|| CheckError::new("no such replica"))?;
        Err(CheckError::new(format!(
            "skipped ({}): {}",
            replica.status.as_str(),
            replica.error.as_deref().unwrap_or("not serving")
        )))
    }
}
