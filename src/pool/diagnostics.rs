//! PostgreSQL diagnostics: query plans, unused indexes and tables read by sequential scans.
//!
//! Three questions worth asking a database before guessing at a slow endpoint:
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
use sqlx::AssertSqlSafe;

use super::{PgPool, Result};

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
/// [`Error::Sql`](super::Error::Sql) when PostgreSQL rejects the statement, or any pool
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
