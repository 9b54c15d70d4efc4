//! The bench's schema: `users` (10 000 rows), `user_progress` (ten rows per user, indexed
//! on `user_id`) and the empty `bulk_target`.

use perfkit::pool::PgPool;

/// The schema the bench's tables live in.
const SCHEMA: &str = "perfkit_bench_queries";
/// Rows of `users`.
pub(crate) const USERS: i64 = 10_000;

/// One row of `user_progress`.
pub(crate) type Progress = (i64, i64, i32, i32); // (id, user_id, lesson, score)

pub(crate) const SELECT_PROGRESS: &str = "SELECT id, user_id, lesson, score FROM user_progress";

pub(crate) struct Bench {
    pub(crate) pool: PgPool,
}

impl Bench {
    /// A pool of two connections on the bench's schema, its tables created and seeded when
    /// missing.
    pub(crate) async fn connect(url: &str) -> Self {
        let pool = crate::support::postgres::schema_pool(url, SCHEMA, 2).await;
        seed(&pool).await;
        Self { pool }
    }
}

async fn seed(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS user_progress (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, \
             lesson INTEGER NOT NULL, score INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS user_progress_user_id ON user_progress (user_id);
         CREATE TABLE IF NOT EXISTS bulk_target (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             email TEXT NOT NULL, score INTEGER NOT NULL);",
    )
    .execute(&**pool)
    .await
    .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&**pool)
        .await
        .unwrap();
    if rows != USERS {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "TRUNCATE users, user_progress;
             INSERT INTO users SELECT i, 'User ' || i FROM generate_series(1, {USERS}) AS i;
             INSERT INTO user_progress SELECT i, (i * 7919) % {USERS} + 1, i % 50, (i * 31) % 101
                 FROM generate_series(1, {}) AS i;
             ANALYZE users; ANALYZE user_progress;",
            USERS * 10
        )))
        .execute(&**pool)
        .await
        .unwrap();
    }
}
