use std::time::Duration;

use crate::{EnvError, fmt::HumanDuration};

/// Why a pool could not be built or could not hand out a connection.
///
/// URLs in messages never carry a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting or URL that cannot work; the message says which and why.
    #[error("invalid pool configuration: {0}")]
    Config(String),

    /// A configuration variable is set to something unreadable.
    #[error(transparent)]
    Env(#[from] EnvError),

    /// The pool could not open its first connections at start-up.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// What the driver reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// No connection became available within the acquire timeout.
    ///
    /// `cause` says why: every connection was in use, or the server refused new ones, with
    /// the last connect error the pool saw (which the drivers themselves drop).
    #[error(
        "timed out after {} waiting for a connection to {url}; {cause}",
        HumanDuration::millis(*waited)
    )]
    AcquireTimeout {
        /// The URL, password removed.
        url: String,
        /// How long the acquire waited.
        waited: Duration,
        /// `last connect error: ...` or `all N connections are in use`.
        cause: String,
    },

    /// The pool was closed.
    #[error("the pool is closed")]
    Closed,

    /// An error from sqlx.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
    #[error(transparent)]
    Sql(#[from] sqlx::Error),

    /// An error from Redis.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_timeout_names_the_wait_and_the_cause() {
        let error = Error::AcquireTimeout {
            url: "postgres://app@db:5432/app".into(),
            waited: Duration::from_secs(30),
            cause: "last connect error: connection refused".into(),
        };
        assert_eq!(
            error.to_string(),
            "timed out after 30 s waiting for a connection to postgres://app@db:5432/app; \
             last connect error: connection refused"
        );
        let short = Error::AcquireTimeout {
            url: "u".into(),
            waited: Duration::from_millis(250),
            cause: "all 2 connections are in use".into(),
        };
        assert!(short.to_string().starts_with("timed out after 250 ms"));
        let fractional = Error::AcquireTimeout {
            url: "u".into(),
            waited: Duration::from_millis(2500),
            cause: String::new(),
        };
        assert!(fractional.to_string().starts_with("timed out after 2.5 s"));
    }
}
