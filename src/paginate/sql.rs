//! The SQL text of a paginated query: where its top-level clauses are, and the databases
//! pagination runs on.
//!
//! Only the application's own SQL text is scanned here, never a value from a request:
//! request values reach the database as bound parameters.

use std::future::Future;

use sqlx::{Database, IntoArguments, Pool, QueryBuilder};

use super::{Error, cursor::KeyValue};

/// Where the top-level clauses of a `SELECT` are, outside parentheses, quotes and comments.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Shape {
    /// Byte offset of the first top-level `FROM`.
    pub(super) from: Option<usize>,
    /// Byte offset of the last top-level `ORDER BY`.
    pub(super) order_by: Option<usize>,
    /// A top-level `LIMIT`, `OFFSET` or `FETCH`.
    pub(super) limited: bool,
}

impl Shape {
    /// Scans `sql`.
    pub(super) fn of(sql: &str) -> Self {
        let mut shape = Shape::default();
        let mut previous: Option<&str> = None;
        for (at, word) in top_level_words(sql) {
            if word.eq_ignore_ascii_case("from") && shape.from.is_none() {
                shape.from = Some(at);
            } else if word.eq_ignore_ascii_case("by")
                && let Some(order) = previous.filter(|w| w.eq_ignore_ascii_case("order"))
            {
                // `order` is a subslice of `sql`: its offset is where ORDER BY starts.
                shape.order_by = Some(order.as_ptr() as usize - sql.as_ptr() as usize);
            } else if ["limit", "offset", "fetch"]
                .iter()
                .any(|kw| word.eq_ignore_ascii_case(kw))
            {
                shape.limited = true;
            }
            previous = Some(word);
        }
        shape
    }

    /// Refuses a query that already limits its rows: pagination adds `LIMIT` itself.
    pub(super) fn check_unlimited(&self) -> Result<(), Error> {
        if self.limited {
            return Err(Error::Query(
                "it has its own LIMIT, OFFSET or FETCH; remove it, pagination adds its own".into(),
            ));
        }
        Ok(())
    }
}

/// The words (keywords and identifiers) of `sql` at parenthesis depth 0, outside string
/// literals, quoted identifiers, dollar-quoted strings and comments, with their offsets.
fn top_level_words(sql: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = sql.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b'\'' | b'"' | b'`' => i = skip_quoted(bytes, i, c),
                b'[' => i = skip_quoted(bytes, i, b']'),
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    i = memchr(bytes, i, b'\n').map_or(bytes.len(), |end| end + 1);
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i = find(bytes, i + 2, b"*/").map_or(bytes.len(), |end| end + 2);
                }
                b'$' => i = skip_dollar(bytes, i),
                b'(' => {
                    depth += 1;
                    i += 1;
                }
                b')' => {
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let start = i;
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
                    {
                        i += 1;
                    }
                    if depth == 0 {
                        return Some((start, &sql[start..i]));
                    }
                }
                c if c.is_ascii_digit() => {
                    // A number, or the digits of a word-like token such as `1e5`.
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.')
                    {
                        i += 1;
                    }
                }
                _ => i += 1,
            }
        }
        None
    })
}

/// The index after the quoted text opened at `start` and closed by `close` (a doubled
/// closing quote is an escaped one).
fn skip_quoted(bytes: &[u8], start: usize, close: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == close {
            if close != b']' && bytes.get(i + 1) == Some(&close) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Skips a PostgreSQL dollar-quoted string (`$$...$$`, `$tag$...$tag$`); a placeholder
/// such as `$1` is left as one character.
fn skip_dollar(bytes: &[u8], start: usize) -> usize {
    let mut end = start + 1;
    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
        if end == start + 1 && bytes[end].is_ascii_digit() {
            return start + 1;
        }
        end += 1;
    }
    if bytes.get(end) != Some(&b'$') {
        return start + 1;
    }
    let tag = &bytes[start..=end];
    find(bytes, end + 1, tag).map_or(bytes.len(), |at| at + tag.len())
}

fn memchr(bytes: &[u8], from: usize, needle: u8) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|&b| b == needle)
        .map(|at| from + at)
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > bytes.len() {
        return None;
    }
    bytes[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

/// A database pagination runs on: PostgreSQL (feature `postgres`) or SQLite (feature
/// `sqlite`).
///
/// Sealed: the crate implements it for `sqlx::Postgres` and `sqlx::Sqlite`.
pub trait Backend: private::Ops {}

mod private {
    use super::*;

    /// What pagination needs of a database, written once for each.
    ///
    /// Public only in name: it lives in a private module, so no code outside the crate can
    /// name it, implement it or call it, and the crate's own types in its signatures stay
    /// private.
    #[allow(private_interfaces)]
    pub trait Ops: Database<Arguments: Clone + std::fmt::Debug + IntoArguments<Self>> {
        /// Binds an integer (a limit, an offset).
        fn push_int(query: &mut QueryBuilder<Self>, value: i64);
        /// Binds a sort key's value; never called with [`KeyValue::Null`].
        fn push_key(query: &mut QueryBuilder<Self>, value: &KeyValue);
        /// Reads a sort key's value from a row.
        fn key_value(row: &Self::Row, column: &str) -> Result<KeyValue, Error>;
        /// Reads an integer column (the inline total).
        fn int_column(row: &Self::Row, column: &str) -> Result<i64, sqlx::Error>;
        /// Runs a query and returns its rows.
        fn fetch_rows(
            pool: &Pool<Self>,
            query: QueryBuilder<Self>,
        ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
        /// Runs a query returning one integer.
        fn fetch_int(
            pool: &Pool<Self>,
            query: QueryBuilder<Self>,
        ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
        /// The planner's estimate of the rows `query` returns, where the database gives one.
        fn estimate_rows(
            pool: &Pool<Self>,
            query: QueryBuilder<Self>,
        ) -> impl Future<Output = Result<Option<u64>, sqlx::Error>> + Send;
    }
}

/// `Ops` for one database: everything but the row estimate is the same code for both.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! backend {
    ($db:ty, $estimate:item) => {
        impl Backend for $db {}

        #[allow(private_interfaces)]
        impl private::Ops for $db {
            fn push_int(query: &mut QueryBuilder<Self>, value: i64) {
                query.push_bind(value);
            }

            fn push_key(query: &mut QueryBuilder<Self>, value: &KeyValue) {
                match value {
                    KeyValue::Int(v) => query.push_bind(*v),
                    KeyValue::Float(v) => query.push_bind(*v),
                    KeyValue::Text(v) => query.push_bind(v.clone()),
                    KeyValue::Bool(v) => query.push_bind(*v),
                    KeyValue::Null => query.push("NULL"),
                };
            }

            fn key_value(row: &Self::Row, column: &str) -> Result<KeyValue, Error> {
                use sqlx::{Row, TypeInfo, ValueRef};

                let raw = row.try_get_raw(column).map_err(|error| Error::KeyColumn {
                    column: column.to_owned(),
                    reason: format!("the query's rows have no such column ({error})"),
                })?;
                if raw.is_null() {
                    return Ok(KeyValue::Null);
                }
                let type_name = raw.type_info().name().to_owned();
                macro_rules! attempt {
                    ($t:ty, $variant:expr) => {
                        if let Ok(Some(v)) = row.try_get::<Option<$t>, _>(column) {
                            return Ok($variant(v));
                        }
                    };
                }
                attempt!(i64, KeyValue::Int);
                attempt!(i32, |v: i32| KeyValue::Int(i64::from(v)));
                attempt!(i16, |v: i16| KeyValue::Int(i64::from(v)));
                attempt!(f64, KeyValue::Float);
                attempt!(f32, |v: f32| KeyValue::Float(f64::from(v)));
                attempt!(String, KeyValue::Text);
                attempt!(bool, KeyValue::Bool);
                Err(Error::KeyColumn {
                    column: column.to_owned(),
                    reason: format!(
                        "its type {type_name} cannot be carried in a cursor; sort keys may be \
                         integers, floating-point numbers, text or booleans"
                    ),
                })
            }

            fn int_column(row: &Self::Row, column: &str) -> Result<i64, sqlx::Error> {
                sqlx::Row::try_get(row, column)
            }

            async fn fetch_rows(
                pool: &Pool<Self>,
                mut query: QueryBuilder<Self>,
            ) -> Result<Vec<Self::Row>, sqlx::Error> {
                query.build().fetch_all(pool).await
            }

            async fn fetch_int(
                pool: &Pool<Self>,
                mut query: QueryBuilder<Self>,
            ) -> Result<i64, sqlx::Error> {
                query.build_query_scalar().fetch_one(pool).await
            }

            $estimate
        }
    };
}

#[cfg(feature = "postgres")]
backend!(
    sqlx::Postgres,
    /// The `rows=` of the top plan node of `EXPLAIN`: no row is read.
    async fn estimate_rows(
        pool: &Pool<Self>,
        mut query: QueryBuilder<Self>,
    ) -> Result<Option<u64>, sqlx::Error> {
        let plan: Vec<String> = query.build_query_scalar().fetch_all(pool).await?;
        Ok(plan.first().and_then(|line| planned_rows(line)))
    }
);

#[cfg(feature = "sqlite")]
backend!(
    sqlx::Sqlite,
    /// SQLite's planner gives no row estimate.
    async fn estimate_rows(
        _pool: &Pool<Self>,
        _query: QueryBuilder<Self>,
    ) -> Result<Option<u64>, sqlx::Error> {
        Ok(None)
    }
);

/// `12345` from an `EXPLAIN` line such as `Seq Scan on users  (cost=0.00..180.00 rows=12345 width=8)`.
#[cfg(any(feature = "postgres", test))]
fn planned_rows(line: &str) -> Option<u64> {
    let rest = &line[line.find(" rows=")? + " rows=".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_clauses_only() {
        let sql = "SELECT id, (SELECT max(x) FROM t ORDER BY x LIMIT 1) AS m, 'ORDER BY' AS s, \
                   \"limit\" FROM users -- ORDER BY name\n WHERE a = $1 /* LIMIT */ ORDER  BY id";
        let shape = Shape::of(sql);
        assert_eq!(&sql[shape.from.unwrap()..][..4], "FROM");
        assert!(sql[shape.from.unwrap()..].starts_with("FROM users"));
        assert!(sql[shape.order_by.unwrap()..].starts_with("ORDER  BY id"));
        assert!(!shape.limited);
        assert!(Shape::of("SELECT 1 FROM t ORDER BY id LIMIT 5").limited);
        assert!(Shape::of("SELECT 1 FROM t").order_by.is_none());
    }

    #[test]
    fn dollar_quotes_and_placeholders() {
        let shape =
            Shape::of("SELECT $$ ORDER BY $$, $tag$ from $tag$ FROM t WHERE a = $1 ORDER BY a");
        assert!(shape.order_by.is_some());
        let sql = "SELECT $$ ORDER BY $$, $tag$ from $tag$ FROM t WHERE a = $1 ORDER BY a";
        assert!(sql[Shape::of(sql).from.unwrap()..].starts_with("FROM t"));
        // Unterminated quotes and comments end the scan instead of panicking.
        for sql in [
            "SELECT 'open",
            "SELECT $x$ open",
            "SELECT /* open",
            "SELECT \"",
            "$",
            "-",
        ] {
            let _ = Shape::of(sql);
        }
    }

    #[test]
    fn reads_the_planner_estimate() {
        assert_eq!(
            planned_rows("Seq Scan on users  (cost=0.00..180.00 rows=12345 width=8)"),
            Some(12345)
        );
        assert_eq!(planned_rows("Result"), None);
    }
}
