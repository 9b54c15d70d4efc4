//! The keys a relation is loaded by, and how each database receives a list of them.

use std::hash::Hash;

use sqlx::{Database, QueryBuilder};

/// A key type relations are loaded by on database `DB`: integers, text, UUIDs, anything
/// sqlx encodes and decodes and, on PostgreSQL, sends as an array.
///
/// Implemented for every such type; it cannot be implemented by hand.
pub trait Key<DB: Database>: private::KeyOps<DB> {}

impl<DB: Database, K: private::KeyOps<DB>> Key<DB> for K {}

pub(super) mod private {
    use super::*;

    /// The parts of a top-N-per-parent query, for each database's form of it.
    #[derive(Debug)]
    pub struct TopN<'a> {
        pub select: &'a str,
        pub column: &'a str,
        pub filter: Option<&'a str>,
        pub order_by: Option<&'a str>,
        pub n: usize,
    }

    impl TopN<'_> {
        /// The byte offset of `select`'s top-level `FROM` (outside parentheses and quotes).
        pub fn top_level_from(&self) -> Option<usize> {
            let bytes = self.select.as_bytes();
            let (mut depth, mut quote) = (0usize, None::<u8>);
            for (at, &b) in bytes.iter().enumerate() {
                match (quote, b) {
                    (Some(q), _) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'\'' | b'"') => quote = Some(b),
                    (None, b'(') => depth += 1,
                    (None, b')') => depth = depth.saturating_sub(1),
                    (None, _)
                        if depth == 0
                            && at > 0
                            && bytes[at - 1].is_ascii_whitespace()
                            && bytes.len() >= at + 5
                            && bytes[at..at + 4].eq_ignore_ascii_case(b"from")
                            && bytes[at + 4].is_ascii_whitespace() =>
                    {
                        return Some(at);
                    }
                    _ => {}
                }
            }
            None
        }
    }

    /// How one database receives a list of keys and gives one back.
    pub trait KeyOps<DB: Database>: Clone + Eq + Hash + Send + Sync + 'static {
        /// Appends the membership test, ` = ANY($1)` or ` IN (?, ...)`, for `keys`.
        fn push_keys(query: &mut QueryBuilder<DB>, keys: &[Self]);
        /// Reads the key from `column` of `row`.
        fn read(row: &DB::Row, column: &str) -> Result<Self, sqlx::Error>;
        /// The position of `column` in `row`.
        fn position(row: &DB::Row, column: &str) -> Result<usize, sqlx::Error>;
        /// Reads the key from the column at `index` of `row`.
        fn read_at(row: &DB::Row, index: usize) -> Result<Self, sqlx::Error>;
        /// The query for at most `parts.n` children per key of `keys`.
        fn top_n(parts: TopN<'_>, keys: &[Self]) -> QueryBuilder<DB>;
    }

    #[cfg(feature = "postgres")]
    impl<K> KeyOps<sqlx::Postgres> for K
    where
        K: Clone + Eq + Hash + Send + Sync + 'static,
        K: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        Vec<K>: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        fn push_keys(query: &mut QueryBuilder<sqlx::Postgres>, keys: &[Self]) {
            // One array parameter: the statement's text is the same for any number of keys.
            query.push(" = ANY(").push_bind(keys.to_vec()).push(")");
        }

        fn read(row: &sqlx::postgres::PgRow, column: &str) -> Result<Self, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }

        fn position(row: &sqlx::postgres::PgRow, column: &str) -> Result<usize, sqlx::Error> {
            sqlx::Row::try_column(row, column).map(sqlx::Column::ordinal)
        }

        fn read_at(row: &sqlx::postgres::PgRow, index: usize) -> Result<Self, sqlx::Error> {
            sqlx::Row::try_get(row, index)
        }

        fn top_n(parts: TopN<'_>, keys: &[Self]) -> QueryBuilder<sqlx::Postgres> {
            // One LATERAL subquery per key, in the keys' order: each reads the first n
            // rows of its key, through an index on (key, order) when there is one.
            let mut query = QueryBuilder::new("SELECT perfkit_top.* FROM UNNEST(");
            query
                .push_bind(keys.to_vec())
                .push(") WITH ORDINALITY AS perfkit_keys (perfkit_key, perfkit_at) CROSS JOIN LATERAL (")
                .push(parts.select)
                .push(" WHERE ");
            if let Some(filter) = parts.filter {
                query.push("(").push(filter).push(") AND ");
            }
            query.push(parts.column).push(" = perfkit_keys.perfkit_key");
            if let Some(order) = parts.order_by {
                query.push(" ORDER BY ").push(order);
            }
            query
                .push(" LIMIT ")
                .push_bind(i64::try_from(parts.n).unwrap_or(i64::MAX))
                .push(") AS perfkit_top ORDER BY perfkit_keys.perfkit_at");
            query
        }
    }

    #[cfg(feature = "sqlite")]
    impl<K> KeyOps<sqlx::Sqlite> for K
    where
        K: Clone + Eq + Hash + Send + Sync + 'static,
        K: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + for<'q> sqlx::Encode<'q, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>,
    {
        fn push_keys(query: &mut QueryBuilder<sqlx::Sqlite>, keys: &[Self]) {
            query.push(" IN (");
            let mut list = query.separated(", ");
            for key in keys {
                list.push_bind(key.clone());
            }
            query.push(")");
        }

        fn read(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<Self, sqlx::Error> {
            sqlx::Row::try_get(row, column)
        }

        fn position(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<usize, sqlx::Error> {
            sqlx::Row::try_column(row, column).map(sqlx::Column::ordinal)
        }

        fn read_at(row: &sqlx::sqlite::SqliteRow, index: usize) -> Result<Self, sqlx::Error> {
            sqlx::Row::try_get(row, index)
        }

        fn top_n(parts: TopN<'_>, keys: &[Self]) -> QueryBuilder<sqlx::Sqlite> {
            // The rank is the last column, so children decoded by position read theirs.
            let from = parts.top_level_from().unwrap_or(parts.select.len());
            let mut query = QueryBuilder::new("SELECT * FROM (");
            query
                .push(parts.select[..from].trim_end())
                .push(", ROW_NUMBER() OVER (PARTITION BY ")
                .push(parts.column);
            if let Some(order) = parts.order_by {
                query.push(" ORDER BY ").push(order);
            }
            query
                .push(") AS perfkit_rank ")
                .push(&parts.select[from..])
                .push(" WHERE ");
            if let Some(filter) = parts.filter {
                query.push("(").push(filter).push(") AND ");
            }
            query.push(parts.column);
            Self::push_keys(&mut query, keys);
            query
                .push(") WHERE perfkit_rank <= ")
                .push_bind(i64::try_from(parts.n).unwrap_or(i64::MAX))
                .push(" ORDER BY perfkit_rank");
            query
        }
    }
}

/// A composite key, a tuple of two or three key columns (`(tenant_id, user_id)`), that
/// [`load_many_composite`](super::load_many_composite) loads by: on PostgreSQL each column
/// travels as one array, `(a, b) IN (SELECT * FROM UNNEST($1, $2))`, so one prepared
/// statement serves every number of keys; on SQLite as the row values
/// `(a, b) IN (VALUES (?, ?), ...)`.
///
/// Implemented for tuples of types that are each a [`Key`]; it cannot be implemented by
/// hand.
pub trait CompositeKey<DB: Database>: composite::CompositeOps<DB> {}

impl<DB: Database, K: composite::CompositeOps<DB>> CompositeKey<DB> for K {}

pub(super) mod composite {
    use super::*;

    /// How one database receives a list of composite keys and gives one back.
    pub trait CompositeOps<DB: Database>: Clone + Eq + Hash + Send + Sync + 'static {
        /// How many columns the key has.
        const ARITY: usize;
        /// Appends ` IN (...)` for `keys`, after the parenthesised column list.
        fn push_keys(query: &mut QueryBuilder<DB>, keys: &[Self]);
        /// Reads the key from `columns` of `row`.
        fn read(row: &DB::Row, columns: &[&str]) -> Result<Self, sqlx::Error>;
    }

    macro_rules! composite {
        ($arity:expr; $($t:ident $i:tt),+) => {
            #[cfg(feature = "postgres")]
            impl<$($t),+> CompositeOps<sqlx::Postgres> for ($($t,)+)
            where
                $($t: private::KeyOps<sqlx::Postgres>,
                  Vec<$t>: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,)+
            {
                const ARITY: usize = $arity;

                fn push_keys(query: &mut QueryBuilder<sqlx::Postgres>, keys: &[Self]) {
                    // One array per column: the text is the same for any number of keys.
                    query.push(" IN (SELECT * FROM UNNEST(");
                    let mut arrays = query.separated(", ");
                    $(arrays.push_bind(keys.iter().map(|k| k.$i.clone()).collect::<Vec<$t>>());)+
                    query.push("))");
                }

                fn read(row: &sqlx::postgres::PgRow, columns: &[&str]) -> Result<Self, sqlx::Error> {
                    Ok(($(<$t as private::KeyOps<sqlx::Postgres>>::read(row, columns[$i])?,)+))
                }
            }

            #[cfg(feature = "sqlite")]
            impl<$($t),+> CompositeOps<sqlx::Sqlite> for ($($t,)+)
            where
                $($t: private::KeyOps<sqlx::Sqlite> + for<'q> sqlx::Encode<'q, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,)+
            {
                const ARITY: usize = $arity;

                fn push_keys(query: &mut QueryBuilder<sqlx::Sqlite>, keys: &[Self]) {
                    query.push(" IN (VALUES ");
                    for (at, key) in keys.iter().enumerate() {
                        if at > 0 {
                            query.push(", ");
                        }
                        query.push("(");
                        let mut row = query.separated(", ");
                        $(row.push_bind(key.$i.clone());)+
                        query.push(")");
                    }
                    query.push(")");
                }

                fn read(row: &sqlx::sqlite::SqliteRow, columns: &[&str]) -> Result<Self, sqlx::Error> {
                    Ok(($(<$t as private::KeyOps<sqlx::Sqlite>>::read(row, columns[$i])?,)+))
                }
            }
        };
    }

    composite!(2; A 0, B 1);
    composite!(3; A 0, B 1, C 2);
}
