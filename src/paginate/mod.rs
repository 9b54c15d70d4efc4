//! Pagination over sqlx, on PostgreSQL and SQLite: page/offset with a choice of count, and
//! keyset (cursor) pagination whose pages never skip or repeat a row.
//!
//! Queries are sqlx [`QueryBuilder`](sqlx::QueryBuilder)s written by the application,
//! every request value bound with `push_bind`; pagination adds its `LIMIT`, `OFFSET` and
//! seek values as bound parameters too. No value from a request is ever written into SQL
//! text.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use perfkit::paginate::{Count, Keyset, KeysetConfig, PageConfig, paginate};
//! use perfkit::pool::SqlitePoolBuilder;
//! use sqlx::QueryBuilder;
//!
//! let pool = SqlitePoolBuilder::new("sqlite::memory:").build().await?;
//! sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, active BOOLEAN NOT NULL)")
//!     .execute(&*pool)
//!     .await?;
//! for id in 1..=45 {
//!     sqlx::query("INSERT INTO users VALUES (?, ?, ?)")
//!         .bind(id)
//!         .bind(format!("user {id}"))
//!         .bind(id % 3 != 0)
//!         .execute(&*pool)
//!         .await?;
//! }
//!
//! // Page/offset: `?page=2&page_size=10`, checked, with an exact total.
//! let params = PageConfig::new().from_query(Some("page=2&page_size=10&active=true"))?;
//! let mut query = QueryBuilder::new("SELECT id, name FROM users WHERE active = ");
//! query.push_bind(true).push(" ORDER BY name, id");
//! let page: perfkit::paginate::Page<(i64, String)> =
//!     paginate(&pool, query, params, Count::Exact).await?;
//! assert_eq!((page.total, page.total_pages, page.items.len()), (Some(30), Some(3), 10));
//! let links = page.links(&"/users?page=2&page_size=10&active=true".parse()?);
//! assert_eq!(links.next.as_deref(), Some("/users?active=true&page=3&page_size=10"));
//!
//! // Keyset: a signed cursor to the next page.
//! let keyset = Keyset::builder().desc("name").unique("id").build()?;
//! let first_page = |params| {
//!     let query = QueryBuilder::new("SELECT id, name FROM users");
//!     let pool = pool.clone();
//!     let keyset = keyset.clone();
//!     async move { keyset.fetch::<_, (i64, String)>(&pool, query, &params).await }
//! };
//! let first = first_page(KeysetConfig::new().from_query(Some("limit=20"))?).await?;
//! let cursor = first.next_cursor.clone().unwrap();
//! let second = first_page(KeysetConfig::new().from_query(Some(&format!("after={cursor}")))?).await?;
//! assert_eq!(second.items.len(), 20);
//! assert!(second.items[0].1 < first.items[19].1);
//!
//! // A changed cursor is a 400, never a 500.
//! let forged = format!("after={}A", &cursor[..cursor.len() - 1]);
//! let error = first_page(KeysetConfig::new().from_query(Some(&forged))?).await.unwrap_err();
//! assert_eq!(error.status(), 400);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! # Page/offset
//!
//! [`PageConfig::from_query`] reads `page` (from 1) and `page_size` (default 20, at most
//! 100): an invalid value is an [`Error`] that answers `400`, or is clamped
//! ([`OnInvalid::Clamp`]); a page starting past row 10 000 ([`PageConfig::max_offset`]) is
//! refused, or served with a warning ([`DeepPages::Warn`]), naming keyset pagination. Under
//! the `axum` feature [`PageParams`] and [`KeysetParams`] are extractors whose rejection
//! is the crate's JSON error body, `{"error":"invalid_page","message":"..."}`, and
//! [`Error`] is a response.
//!
//! [`paginate`] runs the page with `LIMIT`/`OFFSET` and counts as [`Count`] says:
//! `Exact` (a concurrent `COUNT(*)` without the `ORDER BY`), `Inline`
//! (`COUNT(*) OVER ()`), `Estimated` (the PostgreSQL planner's figure), `Provided` or
//! `None` (one row more to know whether a next page exists). [`Page::links`] builds
//! first/prev/next/last URLs from the request URI, and [`Links::header_value`] the same
//! as an RFC 8288 `Link` header.
//!
//! # Keyset
//!
//! A [`Keyset`] is an order: [`SortKey`]s, each ascending or descending and, when
//! nullable, with its NULLs first or last, then a unique tie-breaker (the primary key)
//! that makes the order total; one without is refused when it is built.
//! [`Keyset::fetch`] seeks past the cursor's row, so a page costs the same at any depth,
//! and a row inserted or deleted between two pages never makes a surviving row skipped or
//! repeated. A previous page is read in the reversed order and put back in memory.
//!
//! A cursor is opaque, versioned, URL-safe base64: the boundary row's key values, the
//! keys' directions, the direction of the page and a fingerprint of the query's SQL and
//! bound values, signed with HMAC-SHA256 under [`CursorKey`]: `PAGINATION_SECRET` (at
//! least 32 bytes), or a random key per process when it is unset, with which cursors do
//! not survive a restart or travel between instances. A cursor that was changed, cut
//! short, is over-long ([`MAX_CURSOR_LEN`]), was signed with another key or belongs to
//! another query is a [`CursorError`]: a `400` naming the cause, never a 500 and never SQL
//! text.
//!
//! Sort keys are read back from the rows by name and may be integers, floating-point
//! numbers, text (up to [`MAX_TEXT_KEY`] bytes) or booleans. Keep timestamps as integers or
//! as ISO 8601 text for a keyset over them; sqlx's own date types need its `chrono` or
//! `time` features, which perfkit does not turn on.
//!
//! # Cost
//!
//! `benches/paginate.rs` measures each path beside hand-written sqlx on PostgreSQL over
//! loopback, 100 000 rows, pages of 50 (BENCHMARKS.md, "Pagination"): perfkit's offset
//! pages are within 1.04x of hand-written `LIMIT`/`OFFSET`, its keyset pages within 1.1x
//! of a hand-written seek. OFFSET grows with depth (0.17 ms at page 1, 15.9 ms at page
//! 1000 on that machine); the keyset page stays flat (0.19 to 0.21 ms).
//!
//! The count dominates an offset page: `Exact` adds what a `COUNT(*)` of the matching rows
//! costs (2.9 ms over 100 000 rows there), `Estimated` one `EXPLAIN` round trip (0.09 ms),
//! `None` one row (0.015 ms). `Inline` is the slowest where an index serves the order
//! (56 ms there): the window makes the database read and sort every matching row before
//! the `LIMIT`. Prefer it only when the page query reads every matching row anyway.

mod cursor;
mod error;
mod keyset;
mod links;
mod offset;
mod params;
mod sql;

#[doc(inline)]
pub use self::{
    cursor::{CursorKey, KeyError, MAX_CURSOR_LEN, MAX_KEYS, MAX_TEXT_KEY, PAGINATION_SECRET},
    error::{CursorError, Error},
    keyset::{Keyset, KeysetBuilder, KeysetPage, Nulls, Order, SortKey},
    links::Links,
    offset::{Count, Page, paginate},
    params::{
        DEFAULT_PAGE_SIZE, DeepPages, KeysetConfig, KeysetParams, MAX_OFFSET, MAX_PAGE_SIZE,
        OnInvalid, PageConfig, PageParams,
    },
    sql::Backend,
};
