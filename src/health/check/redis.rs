//! [`RedisCheck`]: `PING` on a Redis connection.

use std::fmt;

use async_trait::async_trait;

use super::{CheckError, HealthCheck, Label};
use crate::fmt::truncate_at_char_boundary;

/// A [`HealthCheck`] that sends `PING` over a Redis connection and expects `PONG`.
///
/// Named `redis` and critical unless told otherwise. The connection is cloned for each
/// check, so a multiplexed connection such as a [`RedisHandle`](crate::pool::RedisHandle)'s
/// [`SharedConnection`](crate::pool::SharedConnection) (the default, also for a cluster,
/// where `PING` goes to one node) or redis-rs's
/// [`ConnectionManager`](redis::aio::ConnectionManager) shares its socket with the
/// application. Give it a response timeout shorter than the monitor's check timeout
/// ([`ConnectionManagerConfig::set_response_timeout`](redis::aio::ConnectionManagerConfig::set_response_timeout))
/// so a server that went away fails with its own error.
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # async fn run() -> redis::RedisResult<()> {
/// use perfkit::health::{HealthMonitor, RedisCheck};
///
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let conn = client.get_connection_manager().await?;
/// let monitor = HealthMonitor::builder()
///     .check(RedisCheck::new(conn).name("cache").non_critical())
///     .build();
/// monitor.start().await;
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[must_use]
pub struct RedisCheck<C = crate::pool::SharedConnection> {
    label: Label,
    conn: C,
}

label_setters!(impl[C] RedisCheck<C>, default = "`redis`");

impl<C> RedisCheck<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A critical check named `redis` on `conn`.
    pub fn new(conn: C) -> Self {
        Self {
            label: Label::new("redis", true),
            conn,
        }
    }
}

impl From<&crate::pool::RedisHandle> for RedisCheck {
    /// A critical check named `redis` on perfkit's multiplexed handle.
    fn from(handle: &crate::pool::RedisHandle) -> Self {
        Self::new(handle.connection())
    }
}

impl<C> fmt::Debug for RedisCheck<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.label
            .fields(&mut f.debug_struct("RedisCheck"))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<C> HealthCheck for RedisCheck<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    label_accessors!();

    async fn check(&self) -> Result<(), CheckError> {
        let mut conn = self.conn.clone();
        let reply: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|error| CheckError::failed("PING", error))?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(CheckError::new(format!(
                "PING answered {:?} instead of PONG",
                truncate_at_char_boundary(&reply, 64)
            )))
        }
    }
}
