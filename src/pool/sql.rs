//! sqlx pools: PostgreSQL and SQLite.
