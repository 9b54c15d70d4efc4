//! [`SqlCheck`]: `SELECT 1` on a sqlx pool.

use std::fmt;

use async_trait::async_trait;

use super::{CheckError, HealthCheck, Label};

/// A [`HealthCheck`] that runs `SELECT 1` on a sqlx pool.
///
/// Named `database` and critical unless told otherwise. The query waits for a connection
/// like any other, so a pool that is exhausted or cannot connect fails the check; keep the
/// pool's acquire timeout at or below the monitor's check timeout to see its error rather
/// than "timed out".
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn run() -> Result<(), sqlx::Error> {
/// use perfkit::health::{HealthMonitor, SqlCheck};
///
/// let pool = sqlx::PgPool::connect("postgres://app@127.0.0.1/app").await?;
/// let monitor = HealthMonitor::builder().check(SqlCheck::new(pool)).build();
/// monitor.start().await;
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
#[must_use]
pub struct SqlCheck<DB: sqlx::Database> {
    label: Label,
    pool: sqlx::Pool<DB>,
}

label_setters!(impl[DB: sqlx::Database] SqlCheck<DB>, default = "`database`");

impl<DB: sqlx::Database> SqlCheck<DB> {
    /// A critical check named `database` on `pool`.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Self {
            label: Label::new("database", true),
            pool,
        }
    }
}

impl<DB: sqlx::Database> From<&crate::pool::SqlPool<DB>> for SqlCheck<DB> {
    /// A critical check named `database` on a perfkit pool.
    fn from(pool: &crate::pool::SqlPool<DB>) -> Self {
        Self::new(pool.sqlx().clone())
    }
}

impl<DB: sqlx::Database> fmt::Debug for SqlCheck<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.label
            .fields(&mut f.debug_struct("SqlCheck"))
            .field("database", &DB::NAME)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<DB> HealthCheck for SqlCheck<DB>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    label_accessors!();

    async fn check(&self) -> Result<(), CheckError> {
        sqlx::raw_sql("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|error| CheckError::failed("SELECT 1", error))?;
        Ok(())
    }
}
