//! Diagnostics and index helpers: query plans, unused indexes, tables read by sequential
//! scans and the indexes they may miss (PostgreSQL), and the indexes an application needs,
//! created at start-up (PostgreSQL and SQLite).
//!
//! - [`ensure_indexes`] creates the missing indexes of a list of [`IndexSpec`]s (composite,
//!   unique, partial), concurrently on PostgreSQL, rebuilding invalid leftovers of failed
//!   concurrent builds, and reports what it did.
//! - [`index_recommendations`] (PostgreSQL) lists the tables [`sequential_scan_tables`]
//!   finds with the columns their slowest statements filter on, from `pg_stat_statements`
//!   when it is installed (and says so when it is not).
//!
//! Three questions worth asking PostgreSQL before guessing at a slow endpoint:
//!
//! - [`explain`]: how does PostgreSQL run this query? The text plan, optionally with the
//!   real timings and buffer counts of `EXPLAIN ANALYZE`.
//! - [`unused_indexes`]: which indexes has no query used since the statistics were last
//!   reset? Each one slows every write and takes space.
//! - [`sequential_scan_tables`]: which tables are read mostly by sequential scans? On a
//!   large table that usually means a missing index.
//!
//! The last two read the cumulative statistics views (`pg_stat_user_indexes`,
//! `pg_stat_user_tables`), which count since the last `pg_stat_reset()` and on this server
//! only (not on replicas). Backends report their counts to them at most once a second, so
//! the latest queries may not show yet. The results are serde-serializable, for an admin
//! endpoint or a report.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> perfkit::pool::Result<()> {
//! use perfkit::pool::{PgPoolBuilder, diagnostics};
//!
//! let pool = PgPoolBuilder::from_env()?.build().await?;
//!
//! let plan = diagnostics::explain(&pool, "SELECT * FROM orders WHERE customer_id = 42", false).await?;
//! if plan.contains("Seq Scan on orders") {
//!     println!("orders is read in full:\n{plan}");
//! }
//!
//! for index in diagnostics::unused_indexes(&pool).await? {
//!     println!("{}.{} ({} bytes) is never used: {}", index.schema, index.index, index.size_bytes, index.definition);
//! }
//!
//! for table in diagnostics::sequential_scan_tables(&pool, 10_000).await? {
//!     println!("{}.{}: {} sequential scans, {} index scans", table.schema, table.table, table.seq_scan, table.idx_scan);
//! }
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};
#[cfg(feature = "postgres")]
use sqlx::AssertSqlSafe;

#[cfg(feature = "postgres")]
use super::PgPool;
use super::{Error, Result, SqlPool};

#[cfg(feature = "postgres")]
/// An index no query has used since the statistics were last reset.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnusedIndex {
    /// The schema of the table.
    pub schema: String,
    /// The table the index is on.
    pub table: String,
    /// The index.
    pub index: String,
    /// Its size on disk, in bytes.
    pub size_bytes: i64,
    /// `CREATE INDEX ...`, as `pg_get_indexdef` gives it.
    pub definition: String,
}

#[cfg(feature = "postgres")]
/// A table read by sequential scans more often than through its indexes.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableScans {
    /// The schema of the table.
    pub schema: String,
    /// The table.
    pub table: String,
    /// Sequential scans started on it.
    pub seq_scan: i64,
    /// Rows those sequential scans read.
    pub seq_tup_read: i64,
    /// Index scans started on it (0 when it has no index).
    pub idx_scan: i64,
    /// Live rows, as estimated by the statistics.
    pub live_rows: i64,
}

#[cfg(feature = "postgres")]
/// The plan PostgreSQL chooses for `query`, as text, one plan line per line.
///
/// With `analyze`, runs `EXPLAIN (ANALYZE, BUFFERS)`: **the query is executed**, and the
/// plan carries real row counts, timings and buffer hits. It runs inside a transaction that
/// is rolled back, so an `INSERT`, `UPDATE` or `DELETE` leaves no change behind, but it
/// still takes its locks, fires triggers, advances sequences (which are not transactional)
/// and takes as long as the query does.
///
/// `query` is one statement without bind parameters (`$1`), sent as it is: give it SQL
/// you wrote, never text from a request.
///
/// # Errors
///
/// [`Error::Sql`] when PostgreSQL rejects the statement, or any pool
/// error while acquiring a connection.
pub async fn explain(pool: &PgPool, query: &str, analyze: bool) -> Result<String> {
    let query = query.trim().trim_end_matches(';');
    let lines: Vec<String> = if analyze {
        let mut tx = pool.sqlx().begin().await?;
        let lines =
            sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN (ANALYZE, BUFFERS) {query}")))
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?;
        tx.rollback().await?;
        lines
    } else {
        sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {query}")))
            .persistent(false)
            .fetch_all(pool.sqlx())
            .await?
    };
    Ok(lines.join("\n"))
}

#[cfg(feature = "postgres")]
/// Indexes with no scan recorded, largest first, from `pg_stat_user_indexes`.
///
/// Unique and primary-key indexes, and indexes behind any other constraint, are left out:
/// they enforce a rule even when no query reads them.
///
/// # Errors
///
/// Any query or pool error.
pub async fn unused_indexes(pool: &PgPool) -> Result<Vec<UnusedIndex>> {
    let rows: Vec<(String, String, String, i64, String)> = sqlx::query_as(
        "SELECT s.schemaname::text AS schema, \
                s.relname::text AS table, \
                s.indexrelname::text AS index, \
                pg_relation_size(s.indexrelid) AS size_bytes, \
                pg_get_indexdef(s.indexrelid) AS definition \
         FROM pg_stat_user_indexes s \
         JOIN pg_index i ON i.indexrelid = s.indexrelid \
         WHERE s.idx_scan = 0 \
           AND NOT i.indisunique \
           AND NOT i.indisprimary \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid) \
         ORDER BY pg_relation_size(s.indexrelid) DESC, s.schemaname, s.relname, s.indexrelname",
    )
    .fetch_all(pool.sqlx())
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(schema, table, index, size_bytes, definition)| UnusedIndex {
                schema,
                table,
                index,
                size_bytes,
                definition,
            },
        )
        .collect())
}

#[cfg(feature = "postgres")]
/// Tables with at least `min_rows` live rows whose sequential scans outnumber their index
/// scans, most rows read sequentially first, from `pg_stat_user_tables`.
///
/// Small tables are read sequentially by design, since that is cheaper than an index;
/// `min_rows` (say 10 000) leaves them out.
///
/// # Errors
///
/// Any query or pool error.
pub async fn sequential_scan_tables(pool: &PgPool, min_rows: i64) -> Result<Vec<TableScans>> {
    let rows: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT schemaname::text AS schema, \
                relname::text AS table, \
                seq_scan, \
                seq_tup_read, \
                COALESCE(idx_scan, 0) AS idx_scan, \
                n_live_tup AS live_rows \
         FROM pg_stat_user_tables \
         WHERE seq_scan > COALESCE(idx_scan, 0) \
           AND n_live_tup >= $1 \
         ORDER BY seq_tup_read DESC, schemaname, relname",
    )
    .bind(min_rows)
    .fetch_all(pool.sqlx())
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(schema, table, seq_scan, seq_tup_read, idx_scan, live_rows)| TableScans {
                schema,
                table,
                seq_scan,
                seq_tup_read,
                idx_scan,
                live_rows,
            },
        )
        .collect())
}

// ===== Index helpers =====

/// An index the application needs: its table, columns, and whether it is unique or
/// partial. [`ensure_indexes`] creates it when it is missing.
///
/// Table, columns and name are identifiers (`user_progress`, `public.users`, `user_id`;
/// a column may be followed by `ASC` or `DESC`), checked before any SQL runs. The partial
/// index's condition is SQL you wrote, sent as it is: never text from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSpec {
    table: String,
    columns: Vec<String>,
    unique: bool,
    predicate: Option<String>,
    name: Option<String>,
}

impl IndexSpec {
    /// An index on `table` over `columns`, in that order.
    pub fn new<C: Into<String>>(
        table: impl Into<String>,
        columns: impl IntoIterator<Item = C>,
    ) -> Self {
        Self {
            table: table.into(),
            columns: columns.into_iter().map(Into::into).collect(),
            unique: false,
            predicate: None,
            name: None,
        }
    }

    /// A unique index.
    #[must_use]
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// A partial index over the rows meeting `condition` (`deleted_at IS NULL`).
    #[must_use]
    pub fn partial(mut self, condition: impl Into<String>) -> Self {
        self.predicate = Some(condition.into());
        self
    }

    /// The index's name. By default `<table>_<column>_..._idx` (the table without its
    /// schema), cut to PostgreSQL's 63 bytes.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name the index has, given or made.
    pub fn index_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let table = self.table.rsplit('.').next().unwrap_or(&self.table);
        let mut name = table.to_owned();
        for column in &self.columns {
            name.push('_');
            name.push_str(column.split_whitespace().next().unwrap_or(column));
        }
        if name.len() > MAX_IDENTIFIER - 4 {
            name.truncate(MAX_IDENTIFIER - 4);
        }
        name.push_str("_idx");
        name
    }

    /// The schema of the table, when it is qualified.
    fn schema(&self) -> Option<&str> {
        self.table.rsplit_once('.').map(|(schema, _)| schema)
    }

    fn check(&self) -> Result<()> {
        let fail = |what: String| Err(Error::Config(format!("index on {:?}: {what}", self.table)));
        if !qualified_identifier(&self.table) {
            return fail("the table is not an SQL identifier".into());
        }
        if self.columns.is_empty() {
            return fail("no column".into());
        }
        for column in &self.columns {
            let mut parts = column.split_whitespace();
            let name_ok = parts.next().is_some_and(identifier);
            let order_ok = match parts.next() {
                None => true,
                Some(order) => {
                    (order.eq_ignore_ascii_case("asc") || order.eq_ignore_ascii_case("desc"))
                        && parts.next().is_none()
                }
            };
            if !name_ok || !order_ok {
                return fail(format!(
                    "the column {column:?} is not an identifier, optionally followed by ASC or DESC"
                ));
            }
        }
        if let Some(name) = &self.name
            && !identifier(name)
        {
            return fail(format!("the index name {name:?} is not an SQL identifier"));
        }
        Ok(())
    }

    /// `[UNIQUE] INDEX <concurrently> IF NOT EXISTS <name> ON <table> (<columns>) [WHERE ...]`
    /// after `CREATE `; `qualify` puts the table's schema on the name, not the table
    /// (SQLite's form).
    fn create_sql(&self, concurrently: bool, qualify: bool) -> String {
        let mut sql = String::from("CREATE ");
        if self.unique {
            sql.push_str("UNIQUE ");
        }
        sql.push_str("INDEX ");
        if concurrently {
            sql.push_str("CONCURRENTLY ");
        }
        sql.push_str("IF NOT EXISTS ");
        let table = match (qualify, self.schema()) {
            (true, Some(schema)) => {
                sql.push_str(schema);
                sql.push('.');
                self.table.rsplit('.').next().unwrap_or(&self.table)
            }
            _ => &self.table,
        };
        sql.push_str(&self.index_name());
        sql.push_str(" ON ");
        sql.push_str(table);
        sql.push_str(" (");
        sql.push_str(&self.columns.join(", "));
        sql.push(')');
        if let Some(predicate) = &self.predicate {
            sql.push_str(" WHERE ");
            sql.push_str(predicate);
        }
        sql
    }

    /// The index's name, qualified with the table's schema when the table is.
    #[cfg(feature = "postgres")]
    fn qualified_name(&self) -> String {
        match self.schema() {
            Some(schema) => format!("{schema}.{}", self.index_name()),
            None => self.index_name(),
        }
    }
}

/// PostgreSQL's longest identifier, in bytes.
const MAX_IDENTIFIER: usize = 63;

fn identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_IDENTIFIER
}

fn qualified_identifier(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|part| identifier(part))
}

/// What [`ensure_indexes`] did, index by index (by name).
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsuredIndexes {
    /// Indexes it created.
    pub created: Vec<String>,
    /// Invalid leftovers of a failed concurrent build it dropped and built again
    /// (PostgreSQL).
    pub rebuilt: Vec<String>,
    /// Indexes that were there already, valid.
    pub existing: Vec<String>,
}

impl EnsuredIndexes {
    /// Whether it changed nothing.
    pub fn is_unchanged(&self) -> bool {
        self.created.is_empty() && self.rebuilt.is_empty()
    }
}

/// Creates the indexes in `specs` that are missing, for start-up, and says what it did.
///
/// On PostgreSQL each index is built with `CREATE INDEX CONCURRENTLY IF NOT EXISTS`, one
/// statement at a time outside any transaction, so writes to the table go on while it
/// builds. A concurrent build that fails (a duplicate under a unique index, a cancelled
/// start-up) leaves an invalid index behind, which `IF NOT EXISTS` would then take for
/// done: an index found invalid (`pg_index.indisvalid`) is dropped (`DROP INDEX
/// CONCURRENTLY`) and built again, and a build that fails here drops its own leftover
/// before returning the error. On SQLite, `CREATE INDEX IF NOT EXISTS`.
///
/// An index is known by its name: one of that name that exists over other columns is left
/// as it is and reported as existing.
///
/// ```no_run
/// # async fn run(pool: perfkit::pool::PgPool) -> perfkit::pool::Result<()> {
/// use perfkit::pool::diagnostics::{IndexSpec, ensure_indexes};
///
/// let done = ensure_indexes(&pool, &[
///     IndexSpec::new("user_progress", ["user_id", "completed_at DESC"]),
///     IndexSpec::new("users", ["email"]).unique().partial("deleted_at IS NULL"),
/// ])
/// .await?;
/// for name in &done.created {
///     println!("created index {name}");
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Config`] for a spec whose table, column or name is not an identifier (before
/// any SQL runs), [`Error::Sql`] when a statement fails (the indexes before it stay).
pub async fn ensure_indexes<DB: IndexBackend>(
    pool: &SqlPool<DB>,
    specs: &[IndexSpec],
) -> Result<EnsuredIndexes> {
    for spec in specs {
        spec.check()?;
    }
    let mut done = EnsuredIndexes::default();
    for spec in specs {
        let name = spec.index_name();
        match DB::ensure(pool.sqlx(), spec).await? {
            Outcome::Created => done.created.push(name),
            Outcome::Rebuilt => done.rebuilt.push(name),
            Outcome::Existing => done.existing.push(name),
        }
    }
    Ok(done)
}

pub use self::index_backend::IndexBackend;

use self::index_backend::private::Outcome;

mod index_backend {
    use std::future::Future;

    use sqlx::AssertSqlSafe;

    use super::{IndexSpec, Result};

    /// A database [`ensure_indexes`](super::ensure_indexes) runs on: PostgreSQL (feature
    /// `postgres`) or SQLite (feature `sqlite`). Sealed.
    pub trait IndexBackend: private::Ensure {}

    pub(super) mod private {
        use super::*;

        /// What ensuring one index did.
        #[derive(Debug)]
        pub enum Outcome {
            Created,
            Rebuilt,
            Existing,
        }

        /// How one database ensures one index. Public only in name, in a private module.
        pub trait Ensure: sqlx::Database {
            fn ensure(
                pool: &sqlx::Pool<Self>,
                spec: &IndexSpec,
            ) -> impl Future<Output = Result<Outcome>> + Send;
        }
    }

    #[cfg(feature = "postgres")]
    impl IndexBackend for sqlx::Postgres {}

    use self::private::Outcome;

    #[cfg(feature = "postgres")]
    impl private::Ensure for sqlx::Postgres {
        async fn ensure(pool: &sqlx::PgPool, spec: &IndexSpec) -> Result<Outcome> {
            let name = spec.qualified_name();
            let valid = index_validity(pool, &name).await?;
            if valid == Some(true) {
                return Ok(Outcome::Existing);
            }
            if valid == Some(false) {
                drop_index(pool, &name).await?;
            }
            let created = sqlx::raw_sql(AssertSqlSafe(spec.create_sql(true, false)))
                .execute(pool)
                .await;
            if let Err(error) = created {
                // A failed concurrent build leaves an invalid index: take it away, so the
                // next start-up builds it again instead of finding it "existing".
                if index_validity(pool, &name).await? == Some(false) {
                    drop_index(pool, &name).await?;
                }
                return Err(error.into());
            }
            Ok(if valid.is_some() {
                Outcome::Rebuilt
            } else {
                Outcome::Created
            })
        }
    }

    /// Whether the index `name` (resolved through `search_path` when unqualified) is
    /// valid; `None` when there is none.
    #[cfg(feature = "postgres")]
    async fn index_validity(pool: &sqlx::PgPool, name: &str) -> Result<Option<bool>> {
        Ok(sqlx::query_scalar(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
        )
        .bind(name)
        .fetch_optional(pool)
        .await?)
    }

    #[cfg(feature = "postgres")]
    async fn drop_index(pool: &sqlx::PgPool, name: &str) -> Result<()> {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {name}"
        )))
        .execute(pool)
        .await?;
        Ok(())
    }

    #[cfg(feature = "sqlite")]
    impl IndexBackend for sqlx::Sqlite {}

    #[cfg(feature = "sqlite")]
    impl private::Ensure for sqlx::Sqlite {
        async fn ensure(pool: &sqlx::SqlitePool, spec: &IndexSpec) -> Result<Outcome> {
            let master = match spec.schema() {
                Some(schema) => format!("{schema}.sqlite_master"),
                None => "sqlite_master".to_owned(),
            };
            let exists: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT 1 FROM {master} WHERE type = 'index' AND name = ?"
            )))
            .bind(spec.index_name())
            .fetch_optional(pool)
            .await?;
            if exists.is_some() {
                return Ok(Outcome::Existing);
            }
            sqlx::raw_sql(AssertSqlSafe(spec.create_sql(false, true)))
                .execute(pool)
                .await?;
            Ok(Outcome::Created)
        }
    }
}

/// A table [`index_recommendations`] suggests an index for.
#[cfg(feature = "postgres")]
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexRecommendation {
    /// The table and its scan counts.
    pub scans: TableScans,
    /// The columns the slowest statements reading the table filter on (from their
    /// `WHERE` clauses in `pg_stat_statements`), most often seen first; empty when
    /// `pg_stat_statements` is unavailable or no statement names the table.
    pub filter_columns: Vec<String>,
    /// Those statements, slowest (by mean time) first, at most five.
    pub slow_statements: Vec<SlowStatement>,
}

/// A statement from `pg_stat_statements`.
#[cfg(feature = "postgres")]
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowStatement {
    /// The normalised statement text, as `pg_stat_statements` keeps it.
    pub query: String,
    /// How many times it ran.
    pub calls: i64,
    /// Its mean execution time, in milliseconds.
    pub mean_ms: f64,
}

/// What [`index_recommendations`] found.
#[cfg(feature = "postgres")]
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexRecommendations {
    /// Tables read mostly by sequential scans, most rows read sequentially first.
    pub tables: Vec<IndexRecommendation>,
    /// Whether `pg_stat_statements` could be read; without it, no filter column is known
    /// (`CREATE EXTENSION pg_stat_statements`, with it in `shared_preload_libraries`).
    pub statements_available: bool,
    /// Why `pg_stat_statements` could not be read, when it could not.
    pub statements_unavailable: Option<String>,
}

/// Tables that probably miss an index: those [`sequential_scan_tables`] reports (at least
/// `min_rows` live rows, more sequential than index scans), each with the columns its
/// slowest statements filter on, when `pg_stat_statements` is there to say (the result
/// says whether it was). Sits beside [`unused_indexes`], its opposite.
///
/// The filter columns are read from the statements' text: each `column <op>` in the
/// `WHERE` clause (`=`, `<`, `>`, `IN`, `LIKE`, `IS`, `BETWEEN`, ...), unqualified. A hint
/// for a person to weigh, not a plan.
///
/// # Errors
///
/// Any query or pool error (not a missing `pg_stat_statements`, which the result reports).
#[cfg(feature = "postgres")]
pub async fn index_recommendations(pool: &PgPool, min_rows: i64) -> Result<IndexRecommendations> {
    let tables = sequential_scan_tables(pool, min_rows).await?;
    let statements: std::result::Result<Vec<(String, i64, f64)>, sqlx::Error> = sqlx::query_as(
        "SELECT query, calls, mean_exec_time FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY mean_exec_time DESC LIMIT 500",
    )
    .fetch_all(pool.sqlx())
    .await;
    let (statements, unavailable) = match statements {
        Ok(statements) => (statements, None),
        Err(sqlx::Error::Database(error)) => (Vec::new(), Some(error.message().to_owned())),
        Err(error) => return Err(error.into()),
    };
    let tables = tables
        .into_iter()
        .map(|scans| {
            let slow: Vec<SlowStatement> = statements
                .iter()
                .filter(|(query, _, _)| names_table(query, &scans.table))
                .take(5)
                .map(|(query, calls, mean_ms)| SlowStatement {
                    query: query.clone(),
                    calls: *calls,
                    mean_ms: *mean_ms,
                })
                .collect();
            let mut seen: Vec<(String, usize)> = Vec::new();
            for statement in &slow {
                for column in filter_columns(&statement.query) {
                    match seen.iter_mut().find(|(c, _)| *c == column) {
                        Some((_, n)) => *n += 1,
                        None => seen.push((column, 1)),
                    }
                }
            }
            seen.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            IndexRecommendation {
                scans,
                filter_columns: seen.into_iter().map(|(c, _)| c).collect(),
                slow_statements: slow,
            }
        })
        .collect();
    Ok(IndexRecommendations {
        tables,
        statements_available: unavailable.is_none(),
        statements_unavailable: unavailable,
    })
}

/// Whether `query` reads `table` (after `FROM` or `JOIN`, optionally schema-qualified).
#[cfg(feature = "postgres")]
fn names_table(query: &str, table: &str) -> bool {
    let words: Vec<String> = query
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_matches('"').to_ascii_lowercase())
        .collect();
    let table = table.to_ascii_lowercase();
    words.windows(2).any(|pair| {
        (pair[0] == "from" || pair[0] == "join")
            && pair[1].rsplit('.').next() == Some(table.as_str())
    })
}

/// The columns compared in the `WHERE` clause of `query`, unqualified, in order.
#[cfg(feature = "postgres")]
fn filter_columns(query: &str) -> Vec<String> {
    let lower = query.to_ascii_lowercase();
    let Some(at) = lower.find(" where ") else {
        return Vec::new();
    };
    let mut clause = &lower[at + " where ".len()..];
    for end in [
        " group by ",
        " order by ",
        " limit ",
        " returning ",
        " having ",
    ] {
        if let Some(cut) = clause.find(end) {
            clause = &clause[..cut];
        }
    }
    let tokens: Vec<&str> = clause
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter(|t| !t.is_empty())
        .collect();
    let mut columns = Vec::new();
    for (at, &word) in tokens.iter().enumerate() {
        let next = tokens.get(at + 1).copied().unwrap_or("");
        let operator = next.starts_with(['=', '<', '>', '!', '~'])
            || ["in", "like", "ilike", "is", "between", "not", "any"].contains(&next);
        // `a=$1` written without spaces.
        let (word, operator) = match word.find(['=', '<', '>']) {
            Some(cut) if cut > 0 => (&word[..cut], true),
            _ => (word, operator),
        };
        let column = word.rsplit('.').next().unwrap_or(word).trim_matches('"');
        if operator && identifier(column) && !["and", "or", "not"].contains(&column) {
            let column = column.to_owned();
            if !columns.contains(&column) {
                columns.push(column);
            }
        }
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_specs() {
        let spec = IndexSpec::new("public.user_progress", ["user_id", "completed_at DESC"]);
        assert_eq!(spec.index_name(), "user_progress_user_id_completed_at_idx");
        assert_eq!(
            spec.create_sql(true, false),
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS user_progress_user_id_completed_at_idx \
             ON public.user_progress (user_id, completed_at DESC)"
        );
        assert_eq!(
            spec.create_sql(false, true),
            "CREATE INDEX IF NOT EXISTS public.user_progress_user_id_completed_at_idx \
             ON user_progress (user_id, completed_at DESC)"
        );
        let unique = IndexSpec::new("users", ["email"])
            .unique()
            .partial("deleted_at IS NULL")
            .name("users_live_email");
        assert_eq!(
            unique.create_sql(false, false),
            "CREATE UNIQUE INDEX IF NOT EXISTS users_live_email ON users (email) WHERE deleted_at IS NULL"
        );
        assert!(spec.check().is_ok());
        let long = IndexSpec::new("t", ["a".repeat(60), "b".repeat(60)]);
        assert!(long.index_name().len() <= MAX_IDENTIFIER);
        for bad in [
            IndexSpec::new("users; DROP", ["id"]),
            IndexSpec::new("users", Vec::<String>::new()),
            IndexSpec::new("users", ["id; DROP"]),
            IndexSpec::new("users", ["id DESC x"]),
            IndexSpec::new("users", ["id"]).name("x y"),
        ] {
            assert!(matches!(bad.check(), Err(Error::Config(_))), "{bad:?}");
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn filter_columns_of_statements() {
        assert_eq!(
            filter_columns(
                "SELECT * FROM user_progress p WHERE p.user_id = $1 AND score>$2 ORDER BY id"
            ),
            ["user_id", "score"]
        );
        assert_eq!(
            filter_columns("SELECT id FROM users WHERE email IN ($1, $2) OR deleted_at IS NULL"),
            ["email", "deleted_at"]
        );
        assert!(filter_columns("SELECT 1").is_empty());
        assert!(names_table(
            "SELECT * FROM public.users u JOIN x ON true",
            "users"
        ));
        assert!(names_table(
            "select * from x join \"users\" on true",
            "users"
        ));
        assert!(!names_table("SELECT users FROM other", "users"));
    }
}
