//! The PostgreSQL pool builder.

use std::{fmt, str::FromStr, time::Duration};

use sqlx::postgres::PgConnectOptions;

use super::{
    PgPool, Plan, build_lazy_pool, build_pool,
    settings::{Common, DATABASE_URL, EnvValues, common_pool_setters, database_url},
};
use crate::pool::{Error, Result, redact_url};

/// Builds a [`PgPool`]: pool sizes, timeouts, recycling, pre-ping, leak detection, and
/// session settings applied to every connection.
///
/// Every setter states its default and how it maps onto sqlx. The session settings
/// ([`application_name`](Self::application_name), [`statement_timeout`](Self::statement_timeout),
/// [`jit`](Self::jit), [`idle_in_transaction_timeout`](Self::idle_in_transaction_timeout))
/// travel in the connection's startup packet (`PgConnectOptions::options`, i.e.
/// `-c name=value`), so they cost no round trip and hold from the first statement. Behind
/// PgBouncer, allow them with `ignore_startup_parameters = options` or set them per role.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> perfkit::pool::Result<()> {
/// use std::time::Duration;
/// use perfkit::pool::PgPoolBuilder;
///
/// let pool = PgPoolBuilder::new("postgres://app:secret@db:5432/app")
///     .pool_size(5)
///     .max_overflow(5)
///     .acquire_timeout(Duration::from_secs(5))
///     .statement_timeout(Duration::from_secs(30))
///     .application_name("billing")
///     .build()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct PgPoolBuilder {
    source: Source,
    common: Common,
    application_name: Option<String>,
    statement_timeout: Option<Duration>,
    jit: Option<bool>,
    idle_in_transaction_timeout: Option<Duration>,
}

enum Source {
    Url(String),
    Options(Box<PgConnectOptions>),
}

impl fmt::Debug for PgPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the options themselves: their `Debug` shows the password.
        let url = match &self.source {
            Source::Url(url) => redact_url(url),
            Source::Options(options) => options_url(options),
        };
        f.debug_struct("PgPoolBuilder")
            .field("url", &url)
            .field("common", &self.common)
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .field("jit", &self.jit)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .finish()
    }
}

impl PgPoolBuilder {
    /// A builder for a pool on `url` (`postgres://user:password@host:5432/database`), with
    /// the defaults each setter states.
    ///
    /// The URL is parsed by [`build`](Self::build), which reports a bad one.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_source(Source::Url(url.into()))
    }

    /// A builder for a pool connecting with `options`, for settings a URL cannot carry.
    ///
    /// The builder's own settings are added to them: its startup options are appended to
    /// any already set, and its application name, if set, replaces theirs.
    pub fn from_options(options: PgConnectOptions) -> Self {
        Self::with_source(Source::Options(Box::new(options)))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            common: Common::default(),
            application_name: None,
            statement_timeout: None,
            jit: None,
            idle_in_transaction_timeout: None,
        }
    }

    /// A builder configured from the environment:
    ///
    /// | variable | setting | default |
    /// | --- | --- | --- |
    /// | `DATABASE_URL` | the URL (required) | |
    /// | `DB_POOL_SIZE` | [`pool_size`](Self::pool_size) | 10 |
    /// | `DB_MAX_OVERFLOW` | [`max_overflow`](Self::max_overflow) | 10 |
    /// | `DB_POOL_TIMEOUT` | [`acquire_timeout`](Self::acquire_timeout), seconds | 30 |
    /// | `DB_POOL_RECYCLE` | [`recycle`](Self::recycle), seconds (0: off) | 1800 |
    /// | `DB_QUERY_TIMEOUT` | [`statement_timeout`](Self::statement_timeout), seconds (0: none) | none |
    ///
    /// Setters called afterwards override these.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `DATABASE_URL` is unset, [`Error::Env`] when a variable is set
    /// to something that is not a whole number.
    pub fn from_env() -> Result<Self> {
        let url = database_url().ok_or_else(|| {
            Error::Config(format!(
                "{DATABASE_URL} is not set; set it to postgres://user:password@host:5432/database"
            ))
        })?;
        let env = EnvValues::read()?;
        let mut builder = Self::new(url);
        builder.common.apply_env(&env);
        builder.statement_timeout = env.query_timeout();
        Ok(builder)
    }

    /// A builder for `url` with this builder's settings: how a replicated pool gives its
    /// replicas the primary's knobs.
    pub(super) fn with_url(&self, url: String) -> Self {
        Self {
            source: Source::Url(url),
            common: self.common.clone(),
            application_name: self.application_name.clone(),
            statement_timeout: self.statement_timeout,
            jit: self.jit,
            idle_in_transaction_timeout: self.idle_in_transaction_timeout,
        }
    }

    /// The URL the builder connects to, password replaced by `***`.
    pub(super) fn redacted_url(&self) -> String {
        match &self.source {
            Source::Url(url) => redact_url(url),
            Source::Options(options) => options_url(options),
        }
    }

    common_pool_setters!();

    /// The `application_name` of every connection, shown in `pg_stat_activity` and in the
    /// server's logs. Defaults to none (sqlx sends none either).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// The server-side `statement_timeout` of every connection: the server cancels any
    /// statement that runs longer. Defaults to none, the server's own setting
    /// (`DB_QUERY_TIMEOUT`, in seconds).
    ///
    /// Sent in the startup packet as `-c statement_timeout=<ms>`.
    pub fn statement_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.statement_timeout = timeout.into();
        self
    }

    /// Turns PostgreSQL's JIT compilation on or off for every connection. Defaults to the
    /// server's setting.
    ///
    /// JIT pays off on long analytical queries and costs milliseconds of compilation on
    /// short ones that the planner misjudges as expensive; OLTP services usually turn it
    /// off. Sent as `-c jit=off` (or `on`).
    pub fn jit(mut self, enabled: bool) -> Self {
        self.jit = Some(enabled);
        self
    }

    /// The server-side `idle_in_transaction_session_timeout`: the server ends a session
    /// that sits inside an open transaction for longer, releasing its locks. Defaults to
    /// none, the server's own setting.
    ///
    /// Sent as `-c idle_in_transaction_session_timeout=<ms>`.
    pub fn idle_in_transaction_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_in_transaction_timeout = timeout.into();
        self
    }

    /// Builds the pool and opens its first [`pool_size`](Self::pool_size) connections
    /// (at least one) before returning.
    ///
    /// The first connection may take up to the acquire timeout: like sqlx, the pool retries
    /// a server that refuses connections (one still starting, say) until then. The others
    /// are opened together; any that fail are opened on demand later.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL or settings, [`Error::Connect`] (naming the URL
    /// without its password, and the driver's error) when the first connection cannot be
    /// opened.
    pub async fn build(self) -> Result<PgPool> {
        build_pool(self.plan()?).await
    }

    /// Builds the pool without connecting: connections are opened by the first acquires.
    ///
    /// Must be called inside a tokio runtime, where the pool runs its background tasks.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL or settings, or when called outside a tokio runtime.
    pub fn build_lazy(self) -> Result<PgPool> {
        build_lazy_pool(self.plan()?)
    }

    /// The sqlx options and redacted URL, with the session settings applied.
    fn plan(self) -> Result<Plan<sqlx::Postgres>> {
        let (mut options, url) = match self.source {
            Source::Url(url) => {
                let redacted = redact_url(&url);
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(Error::Config(format!(
                        "{redacted} is not a PostgreSQL URL; expected postgres://user:password@host:5432/database"
                    )));
                }
                let options = PgConnectOptions::from_str(&url).map_err(|err| {
                    Error::Config(format!("invalid PostgreSQL URL {redacted}: {err}"))
                })?;
                (options, redacted)
            }
            Source::Options(options) => {
                let url = options_url(&options);
                (*options, url)
            }
        };
        if let Some(name) = &self.application_name {
            options = options.application_name(name);
        }
        let mut startup: Vec<(&str, String)> = Vec::new();
        if let Some(timeout) = self.statement_timeout {
            startup.push(("statement_timeout", millis(timeout)));
        }
        if let Some(jit) = self.jit {
            startup.push(("jit", if jit { "on" } else { "off" }.to_owned()));
        }
        if let Some(timeout) = self.idle_in_transaction_timeout {
            startup.push(("idle_in_transaction_session_timeout", millis(timeout)));
        }
        if !startup.is_empty() {
            options = options.options(startup);
        }
        Ok(Plan {
            common: self.common,
            options,
            url,
            single_connection: false,
        })
    }
}

/// A server setting in milliseconds, rounded up so that a sub-millisecond timeout does not
/// become 0, which PostgreSQL reads as "no timeout".
fn millis(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 && !duration.is_zero() {
        "1".to_owned()
    } else {
        millis.to_string()
    }
}

/// A URL for messages naming what `options` connect to; never the password.
fn options_url(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or_default();
    format!(
        "postgres://{}@{}:{}/{database}",
        options.get_username(),
        options.get_host(),
        options.get_port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_settings_travel_as_startup_options() {
        let plan = PgPoolBuilder::new("postgres://app:secret@db:5432/app")
            .statement_timeout(Duration::from_secs(5))
            .jit(false)
            .idle_in_transaction_timeout(Duration::from_micros(10))
            .application_name("billing")
            .plan()
            .unwrap();
        assert_eq!(
            plan.options.get_options(),
            Some("-c statement_timeout=5000 -c jit=off -c idle_in_transaction_session_timeout=1")
        );
        assert_eq!(plan.options.get_application_name(), Some("billing"));
        assert_eq!(plan.url, "postgres://app:***@db:5432/app");
    }

    #[test]
    fn startup_options_are_appended_to_given_ones() {
        let options = PgConnectOptions::new()
            .host("db")
            .username("app")
            .password("secret")
            .database("app")
            .options([("search_path", "tenant_1")]);
        let plan = PgPoolBuilder::from_options(options)
            .jit(true)
            .plan()
            .unwrap();
        assert_eq!(
            plan.options.get_options(),
            Some("-c search_path=tenant_1 -c jit=on")
        );
        assert_eq!(plan.url, "postgres://app@db:5432/app");
    }

    #[test]
    fn bad_urls_are_configuration_errors_without_the_password() {
        for url in [
            "mysql://app:secret@db/app",
            "postgres://app:secret@db:notaport/app",
        ] {
            let err = PgPoolBuilder::new(url).plan().err().unwrap();
            let message = err.to_string();
            assert!(matches!(err, Error::Config(_)), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let builder =
            PgPoolBuilder::from_options(PgConnectOptions::new().username("app").password("secret"));
        let debug = format!("{builder:?}");
        assert!(!debug.contains("secret"), "{debug}");
        let debug = format!("{:?}", PgPoolBuilder::new("postgres://app:secret@db/app"));
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        let err = PgPoolBuilder::new("postgres://app@127.0.0.1:1/app")
            .build_lazy()
            .unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
