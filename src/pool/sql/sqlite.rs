//! The SQLite pool builder.

use std::{fmt, str::FromStr};

use sqlx::sqlite::SqliteConnectOptions;

use super::{
    Plan, SqlitePool, build_lazy_pool, build_pool,
    settings::{Common, EnvValues, common_pool_setters, database_url},
};
use crate::pool::{Error, Result, redact_url};

/// The URL [`SqlitePoolBuilder::from_env`] uses when `DATABASE_URL` is unset.
const IN_MEMORY: &str = "sqlite::memory:";

/// Builds a [`SqlitePool`], for a database file or an in-memory database.
///
/// # In-memory databases
///
/// sqlx opens `sqlite::memory:` (and `?mode=memory` URLs) as a named, shared-cache
/// in-memory database, so every connection of one pool sees the same data, but the data
/// lives only while at least one connection is open, and shared-cache connections fail
/// with `SQLITE_LOCKED` instead of waiting when they contend for a table. A pool on an
/// in-memory database therefore keeps exactly **one connection, never closed**:
/// [`pool_size`](Self::pool_size) and [`max_overflow`](Self::max_overflow) are ignored,
/// and the connection is neither recycled nor closed when idle. Acquires queue for it,
/// which is what SQLite would make them do anyway. Each pool built gets a database of its
/// own.
///
/// For a file, add `?mode=rwc` to create it when missing
/// (`sqlite://data.db?mode=rwc`); sqlx opens an existing file otherwise.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> perfkit::pool::Result<()> {
/// use perfkit::pool::SqlitePoolBuilder;
///
/// let pool = SqlitePoolBuilder::new("sqlite::memory:").build().await?;
/// sqlx::query("CREATE TABLE notes (body TEXT)").execute(&*pool).await?;
///
/// let mut conn = pool.acquire().await?;
/// sqlx::query("INSERT INTO notes VALUES ('hello')").execute(&mut *conn).await?;
/// drop(conn);
///
/// let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notes").fetch_one(&*pool).await?;
/// assert_eq!(count, 1);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct SqlitePoolBuilder {
    source: Source,
    common: Common,
}

enum Source {
    Url(String),
    Options(Box<SqliteConnectOptions>),
}

impl fmt::Debug for SqlitePoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match &self.source {
            Source::Url(url) => redact_url(url),
            Source::Options(options) => options_url(options),
        };
        f.debug_struct("SqlitePoolBuilder")
            .field("url", &url)
            .field("common", &self.common)
            .finish()
    }
}

impl SqlitePoolBuilder {
    /// A builder for a pool on `url` (`sqlite://data.db`, `sqlite://data.db?mode=rwc`,
    /// `sqlite::memory:`), with the defaults each setter states.
    ///
    /// The URL is parsed by [`build`](Self::build), which reports a bad one.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            source: Source::Url(url.into()),
            common: Common::default(),
        }
    }

    /// A builder for a pool connecting with `options` (journal mode, busy timeout,
    /// pragmas, ...).
    pub fn from_options(options: SqliteConnectOptions) -> Self {
        Self {
            source: Source::Options(Box::new(options)),
            common: Common::default(),
        }
    }

    /// A builder configured from the environment: `DATABASE_URL` (default
    /// `sqlite::memory:`), `DB_POOL_SIZE` (10), `DB_MAX_OVERFLOW` (10), `DB_POOL_TIMEOUT`
    /// (30 s) and `DB_POOL_RECYCLE` (1800 s, 0: off), read as the PostgreSQL builder reads
    /// them. `DB_QUERY_TIMEOUT` has no SQLite equivalent and is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Env`] when a variable is set to something that is not a whole number. A
    /// `DATABASE_URL` that is not a SQLite URL is reported by [`build`](Self::build).
    pub fn from_env() -> Result<Self> {
        let env = EnvValues::read()?;
        let mut builder = Self::new(database_url().unwrap_or_else(|| IN_MEMORY.to_owned()));
        builder.common.apply_env(&env);
        Ok(builder)
    }

    common_pool_setters!();

    /// Builds the pool and opens its first [`pool_size`](Self::pool_size) connections
    /// (at least one) before returning.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL or settings, [`Error::Connect`] when the database
    /// cannot be opened (a missing file without `mode=rwc`, a directory that does not
    /// exist, no permission).
    pub async fn build(self) -> Result<SqlitePool> {
        build_pool(self.plan()?).await
    }

    /// Builds the pool without opening the database: the first acquire does.
    ///
    /// Must be called inside a tokio runtime, where the pool runs its background tasks.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL or settings, or when called outside a tokio runtime.
    pub fn build_lazy(self) -> Result<SqlitePool> {
        build_lazy_pool(self.plan()?)
    }

    fn plan(self) -> Result<Plan<sqlx::Sqlite>> {
        let (options, url) = match self.source {
            Source::Url(url) => {
                let redacted = redact_url(&url);
                if !url.starts_with("sqlite:") {
                    return Err(Error::Config(format!(
                        "{redacted} is not a SQLite URL; expected sqlite://path/to/file.db or {IN_MEMORY}"
                    )));
                }
                let options = SqliteConnectOptions::from_str(&url).map_err(|err| {
                    Error::Config(format!("invalid SQLite URL {redacted}: {err}"))
                })?;
                (options, redacted)
            }
            Source::Options(options) => {
                let url = options_url(&options);
                (*options, url)
            }
        };
        Ok(Plan {
            single_connection: is_in_memory(&options),
            common: self.common,
            options,
            url,
        })
    }
}

/// Whether `options` open an in-memory database.
fn is_in_memory(options: &SqliteConnectOptions) -> bool {
    // sqlx keeps the flag private and has no getter for it. Its URL form would say
    // `mode=memory`, but `to_url_lossy()` panics on the names sqlx gives in-memory
    // databases (`file:sqlx-in-memory-N`), so the derived `Debug` output is read instead;
    // `in_memory_databases_are_recognised` fails if a sqlx upgrade changes it.
    format!("{options:?}").contains("in_memory: true")
}

/// A URL for messages naming what `options` open.
fn options_url(options: &SqliteConnectOptions) -> String {
    if is_in_memory(options) {
        IN_MEMORY.to_owned()
    } else {
        format!("sqlite://{}", options.get_filename().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_databases_are_recognised() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://file.db?mode=memory",
        ] {
            let plan = SqlitePoolBuilder::new(url).plan().unwrap();
            assert!(plan.single_connection, "{url}");
        }
        for url in ["sqlite://data.db", "sqlite://data.db?mode=rwc"] {
            let plan = SqlitePoolBuilder::new(url).plan().unwrap();
            assert!(!plan.single_connection, "{url}");
        }
        let options = SqliteConnectOptions::new()
            .filename("cache")
            .in_memory(true);
        let plan = SqlitePoolBuilder::from_options(options).plan().unwrap();
        assert!(plan.single_connection);
        assert_eq!(plan.url, "sqlite::memory:");
        let options = SqliteConnectOptions::new().filename("data.db");
        let plan = SqlitePoolBuilder::from_options(options).plan().unwrap();
        assert!(!plan.single_connection);
        assert_eq!(plan.url, "sqlite://data.db");
    }

    #[test]
    fn non_sqlite_urls_are_rejected() {
        let err = SqlitePoolBuilder::new("postgres://app:secret@db/app")
            .plan()
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(message.contains("not a SQLite URL"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}
