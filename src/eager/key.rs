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

    /// How one database receives a list of keys and gives one back.
    pub trait KeyOps<DB: Database>: Clone + Eq + Hash + Send + Sync + 'static {
        /// Appends the membership test, ` = ANY($1)` or ` IN (?, ...)`, for `keys`.
        fn push_keys(query: &mut QueryBuilder<DB>, keys: &[Self]);
        /// Reads the key from `column` of `row`.
        fn read(row: &DB::Row, column: &str) -> Result<Self, sqlx::Error>;
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
    }
}
