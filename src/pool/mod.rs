//! Connection pools with the knobs backends tune, statistics and clear errors.

mod error;
mod stats;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;

#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod diagnostics;

#[doc(inline)]
pub use self::{error::Error, stats::PoolStats};

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
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    )
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
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }
}
