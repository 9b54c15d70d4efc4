//! A PostgreSQL pool on a schema of the bench's own, for benches that create tables.

use std::str::FromStr;

use perfkit::pool::{PgPool, PgPoolBuilder};
use sqlx::{ConnectOptions, postgres::PgConnectOptions};

/// A pool of `size` connections whose `search_path` is `schema`, created when missing;
/// statement logging and the slow-statement log are off so they do not weigh on the
/// figures.
pub(crate) async fn schema_pool(url: &str, schema: &str, size: u32) -> PgPool {
    let options = PgConnectOptions::from_str(url)
        .expect("DATABASE_URL is not a valid PostgreSQL URL")
        .disable_statement_logging();
    let admin = PgPoolBuilder::from_options(options.clone())
        .pool_size(1)
        .max_overflow(0)
        .build()
        .await
        .expect("cannot connect to DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(&*admin)
    .await
    .unwrap();
    admin.close().await;
    PgPoolBuilder::from_options(options.options([("search_path", schema)]))
        .pool_size(size)
        .max_overflow(0)
        .slow_statement_threshold(None)
        .build()
        .await
        .expect("cannot build the pool")
}
