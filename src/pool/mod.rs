//! Connection pools with the knobs backends tune, statistics, and errors that name their
//! cause.
//!
//! - [`PgPoolBuilder`] and [`SqlitePoolBuilder`] build a [`SqlPool`] over sqlx
//!   ([`PgPool`], [`SqlitePool`]); it derefs to `sqlx::Pool`, so every sqlx API takes it.
//! - [`RedisPoolBuilder`] builds a [`RedisHandle`], one multiplexed connection that
//!   pipelines every task's commands and reconnects by itself (the handle perfkit's other
//!   modules take), and a [`RedisPool`] of dedicated connections for blocking commands and
//!   `WATCH`/`MULTI` transactions.
//! - Every pool reports [`PoolSnapshot`]: sizes, utilisation, acquire latency percentiles
//!   from a fixed-size histogram, acquire timeouts and leaked connections.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use perfkit::pool::SqlitePoolBuilder;
//!
//! let pool = SqlitePoolBuilder::new("sqlite::memory:").build().await?;
//!
//! // Through perfkit: the acquire is timed, and a connection held too long is reported
//! // with the line that acquired it.
//! let mut conn = pool.acquire().await?;
//! let answer: i64 = sqlx::query_scalar("SELECT 41 + 1").fetch_one(&mut *conn).await?;
//! assert_eq!(answer, 42);
//! drop(conn);
//!
//! // Straight to sqlx: `&*pool` is a `&sqlx::SqlitePool`.
//! sqlx::query("CREATE TABLE items (id INTEGER PRIMARY KEY)").execute(&*pool).await?;
//!
//! let stats = pool.stats();
//! assert_eq!(stats.acquires, 1);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! # The knobs
//!
//! | knob | variable | default | what it does |
//! | --- | --- | --- | --- |
//! | pool size | `DB_POOL_SIZE` | 10 | connections kept open and ready (sqlx `min_connections`) |
//! | max overflow | `DB_MAX_OVERFLOW` | 10 | extra connections under load, closed again when idle (`max_connections` = size + overflow) |
//! | acquire timeout | `DB_POOL_TIMEOUT` | 30 s | how long an acquire waits before [`Error::AcquireTimeout`] |
//! | recycle | `DB_POOL_RECYCLE` | 1800 s | connections are replaced at this age, each at its own point within ±10 % so a fleet never reconnects at once |
//! | pre-ping | | on, after 1 s idle | a connection idle longer than the threshold is pinged before it is handed out; busy connections skip the round trip |
//! | statement timeout | `DB_QUERY_TIMEOUT` | none | PostgreSQL `statement_timeout`, set on every connection |
//! | slow statements | | 1 s | statements slower than this are logged at WARN |
//! | leak threshold | | 60 s | a connection held longer is logged with the `file:line` that acquired it |
//! | Redis connections | `REDIS_MAX_CONNECTIONS` | 50 | size of the [`RedisPool`] |
//!
//! `DATABASE_URL` and `REDIS_URL` name the servers; the `from_env()` constructors read all
//! of these, and a variable set to something unreadable is an error at start-up.
//!
//! # Errors
//!
//! sqlx and bb8 both retry refused connections until the acquire timeout and then report
//! only that time ran out. perfkit keeps the cause: an acquire timeout says either that all
//! connections are in use, or what the last connection attempt failed with:
//!
//! ```text
//! timed out after 30 s waiting for a connection to postgres://app:***@db:5432/app;
//! last connect error: Connection refused (os error 111)
//! ```
//!
//! URLs in errors and logs never carry a password.

mod error;
mod jitter;
mod stats;
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
mod watch;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;

#[cfg(feature = "redis")]
mod redis;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod diagnostics;

#[doc(inline)]
pub use self::{error::Error, stats::PoolSnapshot};

#[doc(inline)]
#[allow(deprecated)]
pub use self::stats::PoolStats;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[doc(inline)]
pub use self::sql::*;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use self::redis::*;

pub(crate) use self::stats::AcquireStats;

/// A `Result` whose error is [`pool::Error`](Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `url` with its password, if any, replaced by `***`, for logs and error messages.
///
/// Covers the password of the userinfo (even when it holds an unencoded `/`, `?`, `#` or
/// `@`) and `password=` / `pass=` query parameters. Where a URL is ambiguous it errs
/// towards hiding too much rather than too little.
pub(crate) fn redact_url(url: &str) -> String {
    let redacted = redact_userinfo(url);
    redact_query_passwords(&redacted)
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let start = scheme_end + 3;
    let rest = &url[start..];
    // The userinfo ends at the last `@` before the first `/` that follows an `@`: a
    // password may hold unencoded `/` or `@`, a host never does.
    let Some(first_at) = rest.find('@') else {
        return url.to_owned();
    };
    let path = rest[first_at..]
        .find('/')
        .map_or(rest.len(), |i| first_at + i);
    let at = rest[..path].rfind('@').unwrap_or(first_at);
    let userinfo = &rest[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!("{}{}:***{}", &url[..start], &userinfo[..colon], &rest[at..])
}

fn redact_query_passwords(url: &str) -> String {
    let Some(query_start) = url.find('?') else {
        return url.to_owned();
    };
    let (head, query) = url.split_at(query_start + 1);
    let (query, fragment) = match query.find('#') {
        Some(i) => query.split_at(i),
        None => (query, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if ["password", "pass", "passwd"]
                    .iter()
                    .any(|secret| name.eq_ignore_ascii_case(secret)) =>
            {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}{}{fragment}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/app",
                "postgres://app:***@db:5432/app",
            ),
            ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
            (
                "postgres://app:p%40ss@db/app?sslmode=require",
                "postgres://app:***@db/app?sslmode=require",
            ),
            ("postgres://app@db/app", "postgres://app@db/app"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("sqlite://data.db?mode=rwc", "sqlite://data.db?mode=rwc"),
            ("not a url", "not a url"),
            ("postgres://a:b@c@host/db", "postgres://a:***@host/db"),
            (
                "postgres://app:se/cret@db:5432/app",
                "postgres://app:***@db:5432/app",
            ),
            (
                "postgres://app:s?cr#t@db:5432/app",
                "postgres://app:***@db:5432/app",
            ),
            (
                "postgres://app@db:5432/app?password=s3cret&sslmode=require",
                "postgres://app@db:5432/app?password=***&sslmode=require",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&pass=s3cret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            (
                "postgres://app@db/app?application_name=a@b",
                "postgres://app@db/app?application_name=a@b",
            ),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }
}
