use std::time::Duration;

/// What can go wrong in [`rate_limit`](super): a quota or policy that cannot be built, or a
/// store that could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A quota string could not be parsed.
    #[error(
        "invalid quota `{input}`: {reason}; write `<count>/<period>` such as `100/minute`, \
         `10/second`, `1000/hour`, `5000/day` or `20/30s`, optionally followed by `burst <n>`"
    )]
    ParseQuota {
        /// The string as given (cut to 64 bytes).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A quota string is well formed but its numbers are out of range, such as
    /// `10000000/second` (under a microsecond per request).
    #[error("quota `{input}` is out of range: {reason}")]
    QuotaOutOfRange {
        /// The string as given (cut to 64 bytes).
        input: String,
        /// Which bound it breaks and how to stay within it.
        reason: &'static str,
    },

    /// A quota's numbers are out of range.
    #[error("invalid quota: {0}")]
    InvalidQuota(&'static str),

    /// A policy could not be built.
    #[error("invalid rate-limit policy: {0}")]
    InvalidPolicy(&'static str),

    /// A trusted-proxy list holds an entry that is not an address or a CIDR range.
    #[error(
        "invalid trusted proxy `{entry}`: write trusted proxies as a comma-separated list of \
         addresses or CIDR ranges, such as `10.0.0.0/8, 192.168.1.7, fd00::/8`"
    )]
    ParseTrustedProxies {
        /// The entry at fault (cut to 64 bytes).
        entry: String,
    },

    /// Redis answered with an error, or could not be reached.
    #[cfg(feature = "redis")]
    #[error("the rate-limit store could not reach Redis: {0}")]
    Redis(#[source] ::redis::RedisError),

    /// The store did not answer within its deadline.
    #[error(
        "the rate-limit store did not answer within {0:?}; check the Redis server, or raise \
         `RedisStoreBuilder::timeout`"
    )]
    Timeout(Duration),

    /// The store answered something the rate limiter does not understand.
    #[error("the rate-limit store answered something unexpected: {0}")]
    UnexpectedReply(String),
}

/// A `Result` whose error is the rate limiter's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
