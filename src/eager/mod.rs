//! Eager loading over sqlx, on PostgreSQL and SQLite: the children of a whole page of
//! parents in one query instead of one per parent, and a request-scoped loader that
//! coalesces per-item loads into batches.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use perfkit::eager::{self, DataLoader, Relation};
//! use perfkit::pool::SqlitePoolBuilder;
//!
//! let pool = SqlitePoolBuilder::new("sqlite::memory:").build().await?;
//! sqlx::raw_sql(
//!     "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
//!      CREATE TABLE user_progress (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, score INTEGER NOT NULL);
//!      INSERT INTO users VALUES (1, 'ada'), (2, 'bob'), (3, 'cy');
//!      INSERT INTO user_progress VALUES (1, 1, 90), (2, 3, 40), (3, 1, 70);",
//! )
//! .execute(&*pool)
//! .await?;
//!
//! // Children are any `FromRow` type; the key column must be among the selected ones.
//! type Progress = (i64, i64); // (user_id, score)
//! let users: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM users ORDER BY id")
//!     .fetch_all(&*pool)
//!     .await?;
//! let progress = Relation::new("SELECT user_id, score FROM user_progress", "user_id").order_by("id");
//!
//! // One query for every user's progress, grouped by user in the users' order.
//! let loaded = eager::load_many::<_, _, _, Progress>(&pool, &users, |u| u.0, &progress).await?;
//! assert_eq!(loaded.queries(), 1);
//! let scores: Vec<(&str, Vec<i64>)> = loaded
//!     .zip(&users, |u| u.0)
//!     .map(|(user, rows)| (user.1.as_str(), rows.iter().map(|p| p.1).collect()))
//!     .collect();
//! assert_eq!(scores, [("ada", vec![90, 70]), ("bob", vec![]), ("cy", vec![40])]);
//!
//! // Per-item code, one batch: loads awaited together share a query.
//! let loader = DataLoader::<i64, Vec<Progress>, _>::children(pool.sqlx().clone(), progress);
//! let (ada, cy) = tokio::join!(loader.load(1), loader.load(3));
//! assert_eq!(ada?.unwrap().len(), 2);
//! assert_eq!(cy?.unwrap()[0].1, 40);
//! assert_eq!(loader.batches(), 1);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! # Loading a relation
//!
//! A [`Relation`] says how to read children: `SELECT ... FROM ...` text, the column
//! holding the parent's key, an optional filter and order, all SQL the application
//! wrote. [`load_many`] reads the children of a list of parents in one query: the keys
//! are deduplicated and bound, `= ANY($1)` with one array on PostgreSQL (one prepared
//! statement for any number of keys), `IN (?, ...)` on SQLite, split into queries of at
//! most [`Relation::chunk_size`] keys (default and maximum [`MAX_KEYS_PER_QUERY`], under
//! SQLite's bind limit). No parent, no query.
//!
//! The [`Loaded`] result has one group per distinct key, in the parents' order, each in
//! the relation's order; [`Loaded::zip`] walks the parents beside their children. Rows
//! whose key no parent has are reported in [`Loaded::orphans`], never dropped in silence.
//! [`load_one`] reads a to-one relation and reports rows beyond the first of a key.
//! [`load_many_composite`] loads by a key of two or three columns ([`Relation::composite`]):
//! one array per column through `UNNEST` on PostgreSQL, row values on SQLite.
//!
//! # DataLoader
//!
//! A [`DataLoader`] coalesces the `load(key)` calls made concurrently (within one
//! scheduling tick) into one deduplicated call of its batch function, at most
//! [`DataLoader::max_batch`] keys each, and remembers every answer for its life; a failed
//! batch gives its error to every waiter. [`DataLoader::children`] makes one whose batches
//! are [`load_many`] calls. It is request-scoped: [`LoadersLayer`] puts a fresh
//! [`Loaders`] registry into each request's extensions (an axum extractor with the `axum`
//! feature), so what one request loads is shared by its handlers and dropped with it.
//!
//! # Cost
//!
//! `benches/queries.rs` measures these beside the N+1 loop and the hand-written
//! `= ANY($1)` query on PostgreSQL over loopback, 100 users' 1 000 progress rows
//! (BENCHMARKS.md, "Eager loading and bulk writes"). On a quiet two-core machine the N+1
//! loop took 16.5 ms, the hand-written query 1.77 ms, `load_many` 1.48 ms (0.83x of it:
//! it groups rows as they stream in, where the hand-written read collects them first) and
//! a fresh `DataLoader` answering 100 concurrent loads 1.60 ms (0.90x).

mod batch;
#[cfg(feature = "n-plus-one")]
#[cfg_attr(docsrs, doc(cfg(feature = "n-plus-one")))]
pub mod detect;
mod key;
mod loader;

#[doc(inline)]
pub use self::{
    batch::{
        Loaded, LoadedOne, MAX_KEYS_PER_QUERY, Relation, load_many, load_many_composite, load_one,
    },
    key::{CompositeKey, Key},
    loader::{AddLoaders, DEFAULT_MAX_BATCH, DataLoader, LoadError, Loaders, LoadersLayer},
};
#[doc(inline)]
pub use crate::query::Backend;

/// Why a relation could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The relation's key column is not an identifier (`user_id`, `p.user_id`): it is
    /// written into the query's text, so nothing else is accepted.
    #[error("the key column {column:?} is not an SQL identifier such as user_id or p.user_id")]
    Column {
        /// The column given.
        column: String,
    },
    /// A relation limited per parent ([`Relation::limit_per_parent`]) whose select does
    /// not begin with `SELECT` or has no top-level `FROM`.
    #[error("a relation limited per parent needs a select of the form SELECT ... FROM ...")]
    Select,
    /// A composite key has another number of columns than the relation names.
    #[error("the relation names {columns} key column(s), the key has {key}")]
    Arity {
        /// The relation's key columns.
        columns: usize,
        /// The key's.
        key: usize,
    },
    /// The query failed, or a row did not decode.
    #[error("the eager load query failed: {0}")]
    Sql(#[source] sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}
