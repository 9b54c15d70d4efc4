//! The bench's table and pool, and the row type both sides read.

use perfkit::pool::PgPool;
use sqlx::{Row, postgres::PgRow};

/// The schema the bench's table lives in.
const SCHEMA: &str = "perfkit_bench_paginate";
/// Rows of `users`.
pub(crate) const USERS: i64 = 100_000;
/// Rows per page.
pub(crate) const PAGE_SIZE: u64 = 50;
/// The pages measured.
pub(crate) const DEPTHS: [u64; 3] = [1, 100, 1000];

/// The columns both sides select.
pub(crate) const SELECT: &str = "SELECT id, name, email, created_at FROM users";

/// One user, decoded the same way by both sides; the bench only hands it to `black_box`.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct User {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) created_at: String,
}

impl sqlx::FromRow<'_, PgRow> for User {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

pub(crate) struct Bench {
    pub(crate) pool: PgPool,
}

impl Bench {
    /// A pool of two connections (the exact count runs beside the page) on the bench's
    /// schema, its table created and seeded when missing.
    pub(crate) async fn connect(url: &str) -> Self {
        let pool = crate::support::postgres::schema_pool(url, SCHEMA, 2).await;
        seed(&pool).await;
        Self { pool }
    }
}

async fn seed(pool: &PgPool) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
         email TEXT NOT NULL, created_at TEXT NOT NULL)",
    )
    .execute(&**pool)
    .await
    .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&**pool)
        .await
        .unwrap();
    if rows != USERS {
        sqlx::query("TRUNCATE users")
            .execute(&**pool)
            .await
            .unwrap();
        // About four users per instant: the order needs its id tie-breaker.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO users SELECT i, 'User ' || i, 'user' || i || '@example.com', \
             to_char(timestamp '2024-01-01' + ((i * 7919) % 25000) * interval '1 minute', \
             'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM generate_series(1, {USERS}) AS i"
        )))
        .execute(&**pool)
        .await
        .unwrap();
    }
    sqlx::query("CREATE INDEX IF NOT EXISTS users_created_at_id ON users (created_at, id)")
        .execute(&**pool)
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE users")
        .execute(&**pool)
        .await
        .unwrap();
}
