//! Bulk writes over sqlx, on PostgreSQL and SQLite: many rows as multi-row `INSERT`s in
//! one transaction, all or none.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use perfkit::bulk::{BulkInsert, Error};
//! use perfkit::pool::SqlitePoolBuilder;
//!
//! let pool = SqlitePoolBuilder::new("sqlite::memory:").build().await?;
//! sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)")
//!     .execute(&*pool)
//!     .await?;
//!
//! let rows: Vec<(i64, String)> = (1..=5_000).map(|i| (i, format!("user{i}@example.com"))).collect();
//! let insert = BulkInsert::new("users", &["id", "email"]);
//! let written = insert
//!     .execute(&pool, &rows, |mut row, (id, email)| {
//!         row.push_bind(*id).push_bind(email.clone());
//!     })
//!     .await?;
//! assert_eq!(written, 5_000);
//!
//! // One bad row: nothing is written, and the error names it.
//! let more: Vec<(i64, String)> = (5_001..=5_100)
//!     .map(|i| (i, if i == 5_042 { "user1@example.com".into() } else { format!("user{i}@example.com") }))
//!     .collect();
//! let error = insert
//!     .execute(&pool, &more, |mut row, (id, email)| {
//!         row.push_bind(*id).push_bind(email.clone());
//!     })
//!     .await
//!     .unwrap_err();
//! assert!(matches!(error, Error::Row { index: 41, .. }));
//! let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&*pool).await?;
//! assert_eq!(count, 5_000);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! # What it does
//!
//! [`BulkInsert::execute`] writes the rows as `INSERT INTO t (a, b) VALUES (..), (..)`
//! statements of at most [`BulkInsert::chunk_rows`] rows (default
//! [`DEFAULT_CHUNK_ROWS`]), fewer when the columns would pass the database's bind limit
//! (65 535 parameters on PostgreSQL, 32 766 on SQLite), all in one transaction: every row
//! is written, or none. [`BulkInsert::on_conflict`] adds an `ON CONFLICT` clause and
//! [`BulkInsert::fetch`] reads what a `RETURNING` clause gives back.
//!
//! When a statement fails on the data (a constraint, a type), the transaction is rolled
//! back and the failing row is found: the chunks before it are written again in a
//! transaction of their own, then the failing chunk's rows one by one, and that
//! transaction is rolled back too. [`Error::Row`] names the row's index in the input.
//! The search costs a second pass, only on failure; the success path is one statement
//! per chunk.
//!
//! # Cost
//!
//! `benches/queries.rs` measures it beside row-by-row inserts in one transaction and
//! hand-written `push_values` chunks on PostgreSQL over loopback, 10 000 rows of four
//! columns (BENCHMARKS.md, "Eager loading and bulk writes"): on a loaded two-core machine
//! row by row took 305 ms, hand-written 1 000-row chunks 52.4 ms and `BulkInsert` 47.4 ms,
//! the same statements within that run's noise.

use sqlx::query_builder::Separated;
use sqlx::{FromRow, Pool, QueryBuilder};

#[doc(inline)]
pub use crate::query::Backend;
use crate::query::is_qualified_identifier;

/// The default number of rows per statement, [`BulkInsert::chunk_rows`].
pub const DEFAULT_CHUNK_ROWS: usize = 1_000;

/// Why a bulk insert wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No columns were given.
    #[error("a bulk insert needs at least one column")]
    NoColumns,
    /// The table or a column is not an SQL identifier (`users`, `public.users`).
    #[error("{name:?} is not an SQL identifier such as users or public.users")]
    Identifier {
        /// The name given.
        name: String,
    },
    /// Row `index` of the input breaks a constraint (unique, foreign key, not null,
    /// check); nothing was written.
    #[error("row {index} was refused, nothing was written: {source}")]
    Row {
        /// The row's index in the input slice.
        index: usize,
        /// The database's error for that row.
        #[source]
        source: sqlx::Error,
    },
    /// The statement for rows `first..=last` failed for another reason than a
    /// constraint (a missing table or column, a value of the wrong type), or no single
    /// row of them fails on its own (the failure did not repeat); nothing was written.
    #[error("rows {first} to {last} were refused, nothing was written: {source}")]
    Rows {
        /// The first row of the failing statement.
        first: usize,
        /// Its last row.
        last: usize,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database failed (connection, transaction); nothing was written.
    #[error("the bulk insert failed, nothing was written: {0}")]
    Sql(#[source] sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

/// A multi-row insert into one table: the columns, and what to do on conflict.
#[derive(Clone, Debug)]
pub struct BulkInsert {
    table: String,
    columns: Vec<String>,
    on_conflict: Option<String>,
    returning: Option<String>,
    chunk_rows: usize,
}

impl BulkInsert {
    /// Rows for `columns` of `table`; both are written into the statement, so both must
    /// be identifiers (checked when the insert runs).
    pub fn new(table: impl Into<String>, columns: &[&str]) -> Self {
        Self {
            table: table.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            on_conflict: None,
            returning: None,
            chunk_rows: DEFAULT_CHUNK_ROWS,
        }
    }

    /// The text after `ON CONFLICT` (SQL you wrote, such as `(id) DO NOTHING` or
    /// `(id) DO UPDATE SET name = excluded.name`). None by default.
    #[must_use]
    pub fn on_conflict(mut self, clause: impl Into<String>) -> Self {
        self.on_conflict = Some(clause.into());
        self
    }

    /// The text after `RETURNING` (`id` or `*`), read by [`fetch`](Self::fetch). None by
    /// default.
    #[must_use]
    pub fn returning(mut self, columns: impl Into<String>) -> Self {
        self.returning = Some(columns.into());
        self
    }

    /// Rows per statement, at least 1 (default [`DEFAULT_CHUNK_ROWS`]); fewer when the
    /// columns would pass the database's bind limit.
    #[must_use]
    pub fn chunk_rows(mut self, rows: usize) -> Self {
        self.chunk_rows = rows.max(1);
        self
    }

    fn check(&self) -> Result<(), Error> {
        if self.columns.is_empty() {
            return Err(Error::NoColumns);
        }
        for name in std::iter::once(&self.table).chain(&self.columns) {
            if !is_qualified_identifier(name) {
                return Err(Error::Identifier { name: name.clone() });
            }
        }
        Ok(())
    }

    /// Rows per statement on `DB`.
    fn rows_per_statement<DB: Backend>(&self) -> usize {
        self.chunk_rows
            .min(DB::MAX_BINDS / self.columns.len())
            .max(1)
    }

    fn statement<DB, T, F>(&self, rows: &[T], bind: &F) -> QueryBuilder<DB>
    where
        DB: Backend,
        F: Fn(Separated<'_, DB, &'static str>, &T),
    {
        let mut query = QueryBuilder::new("INSERT INTO ");
        query.push(&self.table).push(" (");
        query.push(self.columns.join(", ")).push(") ");
        query.push_values(rows, bind);
        if let Some(clause) = &self.on_conflict {
            query.push(" ON CONFLICT ").push(clause);
        }
        if let Some(columns) = &self.returning {
            query.push(" RETURNING ").push(columns);
        }
        query
    }

    /// Inserts `rows`, each bound by `bind` (one `push_bind` per column, in the columns'
    /// order), in one transaction; returns the rows written (fewer than given when an
    /// `ON CONFLICT ... DO NOTHING` skipped some).
    ///
    /// # Errors
    ///
    /// [`Error::Row`] naming the refused row, [`Error::Rows`] when no single row fails
    /// alone, [`Error::NoColumns`] / [`Error::Identifier`] for a malformed insert,
    /// [`Error::Sql`] when the database fails. Nothing is written on any error.
    pub async fn execute<DB, T, F>(
        &self,
        pool: &Pool<DB>,
        rows: &[T],
        bind: F,
    ) -> Result<u64, Error>
    where
        DB: Backend,
        T: Sync,
        F: Fn(Separated<'_, DB, &'static str>, &T) + Sync,
    {
        self.check()?;
        if rows.is_empty() {
            return Ok(0);
        }
        let per = self.rows_per_statement::<DB>();
        let mut tx = pool.begin().await?;
        let mut written = 0;
        for (at, chunk) in rows.chunks(per).enumerate() {
            match DB::execute_in(&mut tx, self.statement(chunk, &bind)).await {
                Ok(n) => written += n,
                Err(error) => {
                    drop(tx.rollback().await);
                    return Err(self.locate(pool, rows, &bind, at * per, per, error).await);
                }
            }
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Inserts `rows` as [`execute`](Self::execute) does and returns what the
    /// [`returning`](Self::returning) clause gives back, in statement order.
    ///
    /// # Errors
    ///
    /// As [`execute`](Self::execute).
    pub async fn fetch<DB, T, R, F>(
        &self,
        pool: &Pool<DB>,
        rows: &[T],
        bind: F,
    ) -> Result<Vec<R>, Error>
    where
        DB: Backend,
        T: Sync,
        R: for<'r> FromRow<'r, DB::Row> + Send,
        F: Fn(Separated<'_, DB, &'static str>, &T) + Sync,
    {
        self.check()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let per = self.rows_per_statement::<DB>();
        let mut tx = pool.begin().await?;
        let mut returned = Vec::new();
        for (at, chunk) in rows.chunks(per).enumerate() {
            match DB::fetch_in(&mut tx, self.statement(chunk, &bind)).await {
                Ok(got) => {
                    for row in &got {
                        match R::from_row(row) {
                            Ok(value) => returned.push(value),
                            Err(error) => {
                                drop(tx.rollback().await);
                                return Err(Error::Sql(error));
                            }
                        }
                    }
                }
                Err(error) => {
                    drop(tx.rollback().await);
                    return Err(self.locate(pool, rows, &bind, at * per, per, error).await);
                }
            }
        }
        tx.commit().await?;
        Ok(returned)
    }

    /// The error for a statement of rows `first..first + per` that failed with `error`:
    /// the refused row when the data is at fault and one row fails on its own.
    async fn locate<DB, T, F>(
        &self,
        pool: &Pool<DB>,
        rows: &[T],
        bind: &F,
        first: usize,
        per: usize,
        error: sqlx::Error,
    ) -> Error
    where
        DB: Backend,
        T: Sync,
        F: Fn(Separated<'_, DB, &'static str>, &T) + Sync,
    {
        let last = (first + per).min(rows.len()) - 1;
        let constraint = match &error {
            sqlx::Error::Database(db) => !matches!(db.kind(), sqlx::error::ErrorKind::Other),
            _ => return Error::Sql(error),
        };
        // Only a constraint is a row's fault; another database error (a missing table, a
        // value of the wrong type) names the statement's rows.
        if !constraint {
            return Error::Rows {
                first,
                last,
                source: error,
            };
        }
        let Ok(mut tx) = pool.begin().await else {
            return Error::Rows {
                first,
                last,
                source: error,
            };
        };
        // The rows before the failing statement were accepted: write them again, so a
        // conflict with one of them shows.
        for chunk in rows[..first].chunks(per) {
            if DB::execute_in(&mut tx, self.statement(chunk, bind))
                .await
                .is_err()
            {
                drop(tx.rollback().await);
                return Error::Rows {
                    first,
                    last,
                    source: error,
                };
            }
        }
        for index in first..=last {
            if let Err(source) =
                DB::execute_in(&mut tx, self.statement(&rows[index..=index], bind)).await
            {
                drop(tx.rollback().await);
                return Error::Row { index, source };
            }
        }
        drop(tx.rollback().await);
        Error::Rows {
            first,
            last,
            source: error,
        }
    }
}

/// Inserts `rows` into `columns` of `table` in one transaction: [`BulkInsert::new`] then
/// [`BulkInsert::execute`].
///
/// # Errors
///
/// As [`BulkInsert::execute`].
pub async fn bulk_insert<DB, T, F>(
    pool: &Pool<DB>,
    table: &str,
    columns: &[&str],
    rows: &[T],
    bind: F,
) -> Result<u64, Error>
where
    DB: Backend,
    T: Sync,
    F: Fn(Separated<'_, DB, &'static str>, &T) + Sync,
{
    BulkInsert::new(table, columns)
        .execute(pool, rows, bind)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_stay_under_the_bind_limit() {
        let wide: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
        let insert = BulkInsert::new("t", &wide).chunk_rows(usize::MAX);
        #[cfg(feature = "sqlite")]
        assert_eq!(insert.rows_per_statement::<sqlx::Sqlite>(), 32_766 / 40);
        #[cfg(feature = "postgres")]
        assert_eq!(insert.rows_per_statement::<sqlx::Postgres>(), 65_535 / 40);
        assert_eq!(BulkInsert::new("t", &["a"]).chunk_rows(0).chunk_rows, 1);
        let _ = insert;
    }

    #[test]
    fn names_are_checked() {
        assert!(matches!(
            BulkInsert::new("t", &[]).check(),
            Err(Error::NoColumns)
        ));
        assert!(matches!(
            BulkInsert::new("t; DROP TABLE x", &["a"]).check(),
            Err(Error::Identifier { .. })
        ));
        assert!(matches!(
            BulkInsert::new("t", &["a", "b)"]).check(),
            Err(Error::Identifier { .. })
        ));
        assert!(BulkInsert::new("public.t", &["a", "b"]).check().is_ok());
    }
}
