//! The [`HealthCheck`] trait, its error, and the built-in checks, one file each.

use std::{borrow::Cow, error::Error as StdError, fmt};

use async_trait::async_trait;

use crate::fmt::truncate_at_char_boundary;

/// What every check carries besides its probe: the name its result appears under and
/// whether the service needs it.
#[derive(Clone, Debug)]
struct Label {
    name: String,
    critical: bool,
}

impl Label {
    fn new(name: impl Into<String>, critical: bool) -> Self {
        Self {
            name: name.into(),
            critical,
        }
    }

    /// `f` with the label's fields, for a check's `Debug`.
    fn fields<'s, 'a, 'b>(
        &self,
        f: &'s mut fmt::DebugStruct<'a, 'b>,
    ) -> &'s mut fmt::DebugStruct<'a, 'b> {
        f.field("name", &self.name)
            .field("critical", &self.critical)
    }
}

/// The setters every check has, written once: `name`, `non_critical`, `as_critical`, over
/// a `label: Label` field. `$default` is the check's default name, for the docs.
macro_rules! label_setters {
    (impl[$($generics:tt)*] $check:ty, default = $default:literal) => {
        impl<$($generics)*> $check {
            #[doc = concat!(
                "Sets the name the result appears under. Defaults to ", $default, "."
            )]
            pub fn name(mut self, name: impl Into<String>) -> Self {
                self.label.name = name.into();
                self
            }

            /// Marks the check non-critical: when it fails the report is `degraded` rather
            /// than `unhealthy`, and `/health/ready` still answers `200`.
            pub fn non_critical(mut self) -> Self {
                self.label.critical = false;
                self
            }

            /// Marks the check critical: when it fails the report is `unhealthy` and
            /// `/health/ready` answers `503`.
            pub fn as_critical(mut self) -> Self {
                self.label.critical = true;
                self
            }
        }
    };
}

/// [`HealthCheck::name`] and [`HealthCheck::critical`] read from the `label` field.
macro_rules! label_accessors {
    () => {
        fn name(&self) -> &str {
            &self.label.name
        }

        fn critical(&self) -> bool {
            self.label.critical
        }
    };
}

#[cfg(feature = "cache")]
mod cache;
mod func;
#[cfg(all(feature = "rate-limit", feature = "redis"))]
mod rate_limit;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "postgres")]
mod replicated;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;

#[cfg(feature = "cache")]
pub use self::cache::CacheCheck;
pub use self::func::{CheckFn, check_fn};
#[cfg(all(feature = "rate-limit", feature = "redis"))]
pub use self::rate_limit::RateLimitCheck;
#[cfg(feature = "redis")]
pub use self::redis::RedisCheck;
#[cfg(feature = "postgres")]
pub use self::replicated::{MemberCheck, ReplicatedCheck};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use self::sql::SqlCheck;

/// Longest failure message kept from a check, in bytes; longer ones are cut at a character
/// boundary so a report stays small whatever a backend puts in its errors.
const MAX_MESSAGE_LEN: usize = 512;

/// One dependency the service needs: a database, a cache, a queue.
///
/// A check answers whether the dependency works right now. The [`HealthMonitor`] runs every
/// check in the background, each under its own timeout, and keeps the latest results, so
/// `check` may take as long as a real round trip takes.
///
/// Implement it for a type of your own, or build one from a closure with [`check_fn`].
///
/// ```
/// use perfkit::health::{CheckError, HealthCheck, async_trait};
///
/// struct DiskSpace;
///
/// #[async_trait]
/// impl HealthCheck for DiskSpace {
///     fn name(&self) -> &str {
///         "disk"
///     }
///
///     fn critical(&self) -> bool {
///         false
///     }
///
///     async fn check(&self) -> Result<(), CheckError> {
///         let free_bytes: u64 = 10 << 30;
///         if free_bytes < 1 << 30 {
///             return Err(CheckError::new("less than 1 GiB free"));
///         }
///         Ok(())
///     }
/// }
/// ```
///
/// [`HealthMonitor`]: super::HealthMonitor
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// The name the check's result appears under in the report, e.g. `database`.
    fn name(&self) -> &str;

    /// Whether the service cannot work without this dependency.
    ///
    /// A failing critical check makes the report `unhealthy` and `/health/ready` answer
    /// `503`; a failing non-critical check only makes it `degraded`. Defaults to `true`.
    fn critical(&self) -> bool {
        true
    }

    /// Probes the dependency once.
    ///
    /// # Errors
    ///
    /// The reason the dependency does not work; its message appears in the report.
    async fn check(&self) -> Result<(), CheckError>;
}

/// Why a [`HealthCheck`] failed; its message is what the report shows.
///
/// Build one from a message with [`CheckError::new`] or from any error with
/// [`CheckError::from_error`]; `?` converts the errors checks usually meet (sqlx, redis,
/// I/O, boxed errors) on its own. Messages longer than 512 bytes are shortened.
pub struct CheckError {
    inner: Box<Inner>,
}

struct Inner {
    message: Cow<'static, str>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl CheckError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(message.into(), None)
    }

    /// A failure caused by `error`; the message is the error's own, followed by those of its
    /// sources that it does not already include.
    pub fn from_error(error: impl StdError + Send + Sync + 'static) -> Self {
        Self::from_boxed(Box::new(error))
    }

    /// A failure caused by a boxed error, as [`CheckError::from_error`].
    fn from_boxed(error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        Self::from_boxed_in(None, error)
    }

    /// A failure of `what` caused by `error`: `<what> failed: <error>`.
    #[cfg(any(
        feature = "postgres",
        feature = "sqlite",
        feature = "redis",
        feature = "cache"
    ))]
    pub(super) fn failed(what: &str, error: impl StdError + Send + Sync + 'static) -> Self {
        Self::from_boxed_in(Some(what), Box::new(error))
    }

    fn from_boxed_in(what: Option<&str>, error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        let mut message = match what {
            Some(what) => format!("{what} failed: {error}"),
            None => error.to_string(),
        };
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !message.contains(&cause_text) {
                message.push_str(": ");
                message.push_str(&cause_text);
            }
            if message.len() > MAX_MESSAGE_LEN {
                break;
            }
            source = cause.source();
        }
        Self::build(message.into(), Some(error))
    }

    fn build(
        mut message: Cow<'static, str>,
        source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        if message.len() > MAX_MESSAGE_LEN {
            let kept = truncate_at_char_boundary(&message, MAX_MESSAGE_LEN);
            let mut short = String::with_capacity(kept.len() + '…'.len_utf8());
            short.push_str(kept);
            short.push('…');
            message = Cow::Owned(short);
        }
        Self {
            inner: Box::new(Inner { message, source }),
        }
    }

    /// The message the report shows.
    pub fn message(&self) -> &str {
        &self.inner.message
    }
}

impl fmt::Debug for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckError")
            .field("message", &self.inner.message)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl StdError for CheckError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

impl From<&'static str> for CheckError {
    fn from(message: &'static str) -> Self {
        Self::new(message)
    }
}

impl From<String> for CheckError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<Box<dyn StdError + Send + Sync + 'static>> for CheckError {
    fn from(error: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        Self::from_boxed(error)
    }
}

impl From<std::io::Error> for CheckError {
    fn from(error: std::io::Error) -> Self {
        Self::from_error(error)
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl From<sqlx::Error> for CheckError {
    fn from(error: sqlx::Error) -> Self {
        Self::from_error(error)
    }
}

#[cfg(feature = "redis")]
impl From<::redis::RedisError> for CheckError {
    fn from(error: ::redis::RedisError) -> Self {
        Self::from_error(error)
    }
}
