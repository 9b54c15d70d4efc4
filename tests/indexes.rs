//! `perfkit::pool::diagnostics` index helpers: `ensure_indexes` on real PostgreSQL (a
//! schema of the test's own) and SQLite, and `index_recommendations` on PostgreSQL.
#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod support;

use perfkit::pool::diagnostics::{self, IndexSpec, ensure_indexes};
use perfkit::pool::{Error, PgPool, PgPoolBuilder, SqlitePoolBuilder};

async fn pg(test: &str) -> Option<(PgPool, support::TestDb)> {
    let db = support::postgres(test).await?;
    let pool = PgPoolBuilder::from_options(db.connect_options())
        .pool_size(1)
        .max_overflow(0)
        .build()
        .await
        .unwrap();
    Some((pool, db))
}

/// The invalid indexes in the test's schema.
async fn invalid_indexes(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace ORDER BY 1",
    )
    .fetch_all(pool.sqlx())
    .await
    .unwrap()
}

/// The definitions of the test schema's indexes on `table`, by name.
async fn definitions(pool: &PgPool, table: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes \
         WHERE schemaname = current_schema() AND tablename = $1 ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool.sqlx())
    .await
    .unwrap()
}

fn specs() -> Vec<IndexSpec> {
    vec![
        IndexSpec::new("user_progress", ["user_id", "completed_at DESC"]),
        IndexSpec::new("users", ["email"])
            .unique()
            .partial("deleted_at IS NULL")
            .name("users_live_email"),
    ]
}

const TABLES: &str = "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT NOT NULL, deleted_at TEXT); \
     CREATE TABLE user_progress (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, completed_at TEXT NOT NULL)";

#[tokio::test]
async fn ensure_indexes_is_idempotent_on_postgres() {
    let Some((pool, _db)) = pg("ensure_indexes_idempotent").await else {
        return;
    };
    sqlx::raw_sql(TABLES).execute(pool.sqlx()).await.unwrap();
    let first = ensure_indexes(&pool, &specs()).await.unwrap();
    assert_eq!(
        first.created,
        ["user_progress_user_id_completed_at_idx", "users_live_email"]
    );
    assert!(first.existing.is_empty() && first.rebuilt.is_empty());
    let second = ensure_indexes(&pool, &specs()).await.unwrap();
    assert!(second.is_unchanged(), "{second:?}");
    assert_eq!(second.existing, first.created);
    assert_eq!(invalid_indexes(&pool).await, Vec::<String>::new());

    let users = definitions(&pool, "users").await;
    let live = &users
        .iter()
        .find(|(name, _)| name == "users_live_email")
        .unwrap()
        .1;
    assert!(live.starts_with("CREATE UNIQUE INDEX"), "{live}");
    assert!(
        live.ends_with("(email) WHERE (deleted_at IS NULL)"),
        "{live}"
    );
    let progress = definitions(&pool, "user_progress").await;
    assert!(
        progress
            .iter()
            .any(|(_, def)| def.ends_with("(user_id, completed_at DESC)")),
        "{progress:?}"
    );

    // The partial unique index does what it says: live duplicates are refused.
    sqlx::raw_sql("INSERT INTO users VALUES (1, 'a@x', NULL), (2, 'a@x', 'yesterday')")
        .execute(pool.sqlx())
        .await
        .unwrap();
    assert!(
        sqlx::raw_sql("INSERT INTO users VALUES (3, 'a@x', NULL)")
            .execute(pool.sqlx())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn invalid_leftovers_are_rebuilt_and_failed_builds_leave_none() {
    let Some((pool, _db)) = pg("ensure_indexes_invalid").await else {
        return;
    };
    sqlx::raw_sql(TABLES).execute(pool.sqlx()).await.unwrap();
    sqlx::raw_sql("INSERT INTO users VALUES (1, 'a@x', NULL), (2, 'a@x', NULL), (3, 'b@x', NULL)")
        .execute(pool.sqlx())
        .await
        .unwrap();
    let unique = [IndexSpec::new("users", ["email"]).unique()];

    // A build that fails here (a duplicate) returns the error and leaves no invalid index.
    let error = ensure_indexes(&pool, &unique).await.unwrap_err();
    assert!(matches!(error, Error::Sql(_)), "{error}");
    assert_eq!(invalid_indexes(&pool).await, Vec::<String>::new());
    assert!(
        definitions(&pool, "users")
            .await
            .iter()
            .all(|(n, _)| n != "users_email_idx")
    );

    // A leftover of a concurrent build that failed elsewhere: invalid, yet "existing" to
    // IF NOT EXISTS.
    assert!(
        sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY users_email_idx ON users (email)")
            .execute(pool.sqlx())
            .await
            .is_err()
    );
    assert_eq!(invalid_indexes(&pool).await, ["users_email_idx"]);
    sqlx::raw_sql("DELETE FROM users WHERE id = 2")
        .execute(pool.sqlx())
        .await
        .unwrap();
    let done = ensure_indexes(&pool, &unique).await.unwrap();
    assert_eq!(done.rebuilt, ["users_email_idx"]);
    assert!(done.created.is_empty());
    assert_eq!(invalid_indexes(&pool).await, Vec::<String>::new());
    assert!(
        sqlx::raw_sql("INSERT INTO users VALUES (4, 'b@x', NULL)")
            .execute(pool.sqlx())
            .await
            .is_err(),
        "the rebuilt index is unique and in use"
    );
    assert!(ensure_indexes(&pool, &unique).await.unwrap().is_unchanged());
}

#[tokio::test]
async fn ensure_indexes_is_idempotent_on_sqlite() {
    let pool = SqlitePoolBuilder::new("sqlite::memory:")
        .build()
        .await
        .unwrap();
    sqlx::raw_sql(TABLES).execute(pool.sqlx()).await.unwrap();
    let first = ensure_indexes(&pool, &specs()).await.unwrap();
    assert_eq!(first.created.len(), 2);
    let second = ensure_indexes(&pool, &specs()).await.unwrap();
    assert!(second.is_unchanged());
    assert_eq!(second.existing, first.created);
    let sql: Vec<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(pool.sqlx())
    .await
    .unwrap();
    assert_eq!(sql.len(), 2, "{sql:?}");
    assert!(sql[1].contains("UNIQUE") && sql[1].ends_with("WHERE deleted_at IS NULL"));

    // A spec that is not identifiers is refused before any SQL runs.
    let bad = [IndexSpec::new("users", ["email); DROP TABLE users; --"])];
    assert!(matches!(
        ensure_indexes(&pool, &bad).await,
        Err(Error::Config(_))
    ));
}

#[tokio::test]
async fn recommendations_name_tables_read_by_sequential_scans() {
    let Some((pool, _db)) = pg("index_recommendations").await else {
        return;
    };
    sqlx::raw_sql(
        "CREATE TABLE scores (id BIGINT PRIMARY KEY, player BIGINT NOT NULL, score INT NOT NULL); \
         INSERT INTO scores SELECT g, g % 500, g % 97 FROM generate_series(1, 20000) g; \
         ANALYZE scores",
    )
    .execute(pool.sqlx())
    .await
    .unwrap();
    // One connection: its counts are flushed to the statistics views below.
    let mut conn = pool.acquire().await.unwrap();
    for player in 0..5_i64 {
        sqlx::query("SELECT count(*) FROM scores WHERE player = $1")
            .bind(player)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    }
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let found = diagnostics::index_recommendations(&pool, 10_000)
        .await
        .unwrap();
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(pool.sqlx())
        .await
        .unwrap();
    let scores = found
        .tables
        .iter()
        .find(|t| t.scans.table == "scores" && t.scans.schema == schema)
        .unwrap_or_else(|| panic!("scores is not recommended: {found:?}"));
    assert!(scores.scans.seq_scan >= 5, "{scores:?}");
    if found.statements_available {
        assert!(
            scores.filter_columns.contains(&"player".to_owned()),
            "{scores:?}"
        );
    } else {
        // Without pg_stat_statements the result says why, and names no column.
        assert!(found.statements_unavailable.is_some());
        assert!(scores.filter_columns.is_empty());
    }

    // Tables under `min_rows` are left out.
    let small = diagnostics::index_recommendations(&pool, 1_000_000)
        .await
        .unwrap();
    assert!(small.tables.iter().all(|t| t.scans.schema != schema));
}
