//! What the query helpers (`eager`, `bulk`, `paginate`) share: the check on names written
//! into SQL text and, for `eager` and `bulk`, the databases they run on.

/// Whether `name` is a plain SQL identifier (`created_at`, `id`): it is written into the
/// query's text, so nothing else is accepted.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

/// Whether `name` is an identifier or a qualified one (`p.user_id`, `public.users`).
#[cfg(any(feature = "eager", feature = "bulk"))]
pub(crate) fn is_qualified_identifier(name: &str) -> bool {
    let mut parts = 0;
    name.split('.').all(|part| {
        parts += 1;
        is_identifier(part)
    }) && parts <= 3
}

#[cfg(any(feature = "eager", feature = "bulk"))]
pub use self::backend::Backend;

#[cfg(any(feature = "eager", feature = "bulk"))]
mod backend {
    use std::future::Future;

    use sqlx::{Database, Pool, QueryBuilder};

    /// A database the query helpers run on: PostgreSQL (feature `postgres`) or SQLite
    /// (feature `sqlite`).
    ///
    /// Sealed: the crate implements it for `sqlx::Postgres` and `sqlx::Sqlite`.
    pub trait Backend: private::Ops {}

    pub(crate) mod private {
        use super::*;

        /// What the helpers need of a database, written once for each.
        ///
        /// Public only in name: it lives in a private module, so no code outside the crate
        /// can name it, implement it or call it.
        pub trait Ops: Database {
            /// The most bind parameters one statement may carry.
            const MAX_BINDS: usize;
            /// Runs a query on the pool and hands each row to `each` as it arrives.
            fn for_each_row<F>(
                pool: &Pool<Self>,
                query: QueryBuilder<Self>,
                each: F,
            ) -> impl Future<Output = Result<(), sqlx::Error>> + Send
            where
                F: FnMut(Self::Row) -> Result<(), sqlx::Error> + Send;
            /// Runs a query inside a transaction and returns the rows it affected.
            fn execute_in(
                tx: &mut sqlx::Transaction<'static, Self>,
                query: QueryBuilder<Self>,
            ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
            /// Runs a query inside a transaction and returns its rows.
            fn fetch_in(
                tx: &mut sqlx::Transaction<'static, Self>,
                query: QueryBuilder<Self>,
            ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
        }
    }

    /// `Ops` for one database: the same code, with each database's bind limit.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    macro_rules! backend {
        ($db:ty, $max_binds:expr) => {
            impl Backend for $db {}

            impl private::Ops for $db {
                const MAX_BINDS: usize = $max_binds;

                async fn for_each_row<F>(
                    pool: &Pool<Self>,
                    mut query: QueryBuilder<Self>,
                    mut each: F,
                ) -> Result<(), sqlx::Error>
                where
                    F: FnMut(Self::Row) -> Result<(), sqlx::Error> + Send,
                {
                    let mut rows = query.build().fetch(pool);
                    while let Some(row) =
                        std::future::poll_fn(|cx| rows.as_mut().poll_next(cx)).await
                    {
                        each(row?)?;
                    }
                    Ok(())
                }

                async fn execute_in(
                    tx: &mut sqlx::Transaction<'static, Self>,
                    mut query: QueryBuilder<Self>,
                ) -> Result<u64, sqlx::Error> {
                    Ok(query.build().execute(&mut **tx).await?.rows_affected())
                }

                async fn fetch_in(
                    tx: &mut sqlx::Transaction<'static, Self>,
                    mut query: QueryBuilder<Self>,
                ) -> Result<Vec<Self::Row>, sqlx::Error> {
                    query.build().fetch_all(&mut **tx).await
                }
            }
        };
    }

    // PostgreSQL counts bind parameters in a 16-bit field.
    #[cfg(feature = "postgres")]
    backend!(sqlx::Postgres, 65_535);
    // SQLITE_MAX_VARIABLE_NUMBER's default since SQLite 3.32.
    #[cfg(feature = "sqlite")]
    backend!(sqlx::Sqlite, 32_766);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(is_identifier("created_at"));
        assert!(is_identifier("_x1"));
        for bad in ["", "1a", "a b", "a;drop", "a.b", "\"a\"", "é"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[cfg(any(feature = "eager", feature = "bulk"))]
    #[test]
    fn qualified_identifiers() {
        for good in ["user_id", "p.user_id", "public.users.id"] {
            assert!(is_qualified_identifier(good), "{good}");
        }
        for bad in ["", ".", "a.", ".a", "a.b.c.d", "a;b", "p.\"x\"", "a .b"] {
            assert!(!is_qualified_identifier(bad), "{bad}");
        }
    }
}
