//! Page/offset pagination: `LIMIT`/`OFFSET` and a count strategy.

use serde::{Deserialize, Serialize};
use sqlx::{Execute, FromRow, Pool, QueryBuilder};

use super::{Backend, Error, PageParams, sql::Shape};

/// How [`paginate`] learns the total number of rows, which is what most pagination costs
/// come from. BENCHMARKS.md ("Pagination") gives each one's cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Count {
    /// A separate `SELECT COUNT(*) FROM (<query without its ORDER BY>)`, run concurrently
    /// with the page on a second pooled connection (in turn on a one-connection pool such
    /// as in-memory SQLite). Exact, and costs a scan of every matching row.
    Exact,
    /// `COUNT(*) OVER ()` added to the page query: one statement, one connection. The
    /// window makes the database read (and sort) every matching row before the `LIMIT`,
    /// so where an index serves the order this is far slower than [`Exact`](Self::Exact)
    /// (56 ms against 3 ms over 100 000 rows in BENCHMARKS.md); it pays only where the
    /// page query reads every matching row anyway. A page past the end has no row to carry
    /// the total, so it falls back to [`Exact`](Self::Exact). Not for `SELECT DISTINCT`
    /// queries, whose window would count rows before they are made distinct.
    Inline,
    /// The planner's row estimate (`EXPLAIN`), on PostgreSQL: no row is read, the figure
    /// is as fresh as the table's statistics (`ANALYZE`). [`Page::total_is_estimate`] is
    /// set; `has_next` comes from fetching one row more, so it is exact. SQLite has no
    /// estimate: there it counts as [`Exact`](Self::Exact).
    Estimated,
    /// A total the application already knows (a cached count, a counter table).
    Provided(u64),
    /// No total: the page query fetches `page_size + 1` rows to know whether a next page
    /// exists. The cheapest; `total` and `total_pages` are `None`.
    None,
}

/// One page of rows and where it sits, serializable as the response body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The rows of this page, in the query's order.
    pub items: Vec<T>,
    /// Every row the query matches; `None` under [`Count::None`].
    pub total: Option<u64>,
    /// This page, from 1.
    pub page: u64,
    /// The page size asked for (the last page may hold fewer rows).
    pub page_size: u64,
    /// The pages `total` makes (0 for no rows); `None` when the total is unknown.
    pub total_pages: Option<u64>,
    /// Whether a page follows this one.
    pub has_next: bool,
    /// Whether a page precedes this one (any page after the first).
    pub has_previous: bool,
    /// Whether `total` is the planner's estimate ([`Count::Estimated`]); left out of the
    /// JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub total_is_estimate: bool,
}

impl<T> Page<T> {
    /// The same page with every item mapped by `f`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            page: self.page,
            page_size: self.page_size,
            total_pages: self.total_pages,
            has_next: self.has_next,
            has_previous: self.has_previous,
            total_is_estimate: self.total_is_estimate,
        }
    }
}

/// The column the inline total travels in.
const INLINE_TOTAL: &str = "perfkit_total";

/// The SQL text and bound values of a query built by a `QueryBuilder`.
pub(super) fn into_parts<DB: Backend>(
    mut query: QueryBuilder<DB>,
) -> Result<(String, DB::Arguments), Error> {
    let mut built = query.build();
    let arguments = built
        .take_arguments()
        .map_err(|error| Error::Sql(sqlx::Error::Encode(error)))?
        .unwrap_or_default();
    Ok((built.sql().as_str().to_owned(), arguments))
}

/// Reads page `params` of `query` from `pool`, counting the rows as `count` says.
///
/// `query` is a `SELECT` ending in an `ORDER BY` that fixes a total order (end it with a
/// unique column: `ORDER BY created_at DESC, id`), with every request value bound through
/// [`QueryBuilder::push_bind`]; pagination adds `LIMIT` and `OFFSET` as bound parameters
/// too. The count runs the query without its `ORDER BY`, found outside parentheses, quotes
/// and comments.
///
/// `pool` is a `sqlx::Pool`; a [`SqlPool`](crate::pool::SqlPool) dereferences to one
/// (`&pool` or `&*pool`).
///
/// # Errors
///
/// - [`Error::Query`] when the query has no top-level `ORDER BY` (its pages would overlap
///   and skip rows), already has a `LIMIT`, `OFFSET` or `FETCH`, or, for
///   [`Count::Inline`], has no top-level `FROM`.
/// - [`Error::Sql`] when a statement fails.
pub async fn paginate<DB, T>(
    pool: &Pool<DB>,
    query: QueryBuilder<DB>,
    params: PageParams,
    count: Count,
) -> Result<Page<T>, Error>
where
    DB: Backend,
    T: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
{
    let (sql, arguments) = into_parts(query)?;
    let shape = Shape::of(&sql);
    shape.check_unlimited()?;
    let Some(order_by) = shape.order_by else {
        return Err(Error::Query(
            "it has no ORDER BY; pages of an unordered query overlap and skip rows. Order by \
             columns ending with a unique one (ORDER BY created_at, id)"
                .into(),
        ));
    };
    let PageParams { page, page_size } = params;
    let page_size = page_size.max(1);
    let unordered = &sql[..order_by];

    let mut page_query = match count {
        Count::Inline => {
            let Some(from) = shape.from else {
                return Err(Error::Query(
                    "it has no top-level FROM for Count::Inline to add its window before".into(),
                ));
            };
            let mut text = String::with_capacity(sql.len() + 48);
            text.push_str(sql[..from].trim_end());
            text.push_str(", COUNT(*) OVER () AS ");
            text.push_str(INLINE_TOTAL);
            text.push(' ');
            text.push_str(&sql[from..]);
            QueryBuilder::with_arguments(text, arguments.clone())
        }
        _ => QueryBuilder::with_arguments(sql.as_str(), arguments.clone()),
    };
    // Without an exact total, one row more tells whether a next page exists.
    let probe_next = matches!(count, Count::None | Count::Estimated);
    let fetch = if probe_next {
        page_size.saturating_add(1)
    } else {
        page_size
    };
    page_query.push(" LIMIT ");
    DB::push_int(&mut page_query, to_i64(fetch));
    page_query.push(" OFFSET ");
    DB::push_int(&mut page_query, to_i64(params.offset()));

    let count_query = || {
        let mut text = String::with_capacity(unordered.len() + 48);
        text.push_str("SELECT COUNT(*) FROM (");
        text.push_str(unordered);
        text.push_str(") AS perfkit_count");
        QueryBuilder::with_arguments(text, arguments.clone())
    };

    let (mut rows, mut total, mut estimate) = match count {
        Count::Exact => {
            let (rows, total) = tokio::try_join!(
                DB::fetch_rows(pool, page_query),
                DB::fetch_int(pool, count_query())
            )?;
            (rows, Some(to_u64(total)), false)
        }
        Count::Estimated => {
            let explain =
                QueryBuilder::with_arguments(format!("EXPLAIN {unordered}"), arguments.clone());
            let (rows, estimate) = tokio::try_join!(
                DB::fetch_rows(pool, page_query),
                DB::estimate_rows(pool, explain)
            )?;
            (rows, estimate, estimate.is_some())
        }
        Count::Provided(total) => (DB::fetch_rows(pool, page_query).await?, Some(total), false),
        Count::Inline | Count::None => (DB::fetch_rows(pool, page_query).await?, None, false),
    };
    if count == Count::Inline
        && let Some(first) = rows.first()
    {
        total = Some(to_u64(DB::int_column(first, INLINE_TOTAL)?));
    }
    if total.is_none() && matches!(count, Count::Inline | Count::Estimated) {
        // An empty page carries no inline total; SQLite gives no estimate.
        total = Some(to_u64(DB::fetch_int(pool, count_query()).await?));
        estimate = false;
    }

    let mut has_next = false;
    if probe_next && rows.len() as u64 > page_size {
        rows.truncate(page_size as usize);
        has_next = true;
    }
    let items = rows
        .iter()
        .map(|row| T::from_row(row))
        .collect::<Result<Vec<T>, sqlx::Error>>()?;
    let total_pages = total.map(|total| total.div_ceil(page_size));
    if let Some(pages) = total_pages
        && !probe_next
    {
        has_next = page < pages;
    }
    Ok(Page {
        items,
        total,
        page,
        page_size,
        total_pages,
        has_next,
        has_previous: page > 1,
        total_is_estimate: estimate,
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
