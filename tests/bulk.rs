//! `perfkit::bulk` on SQLite and, when `DATABASE_URL` is set, PostgreSQL: one suite over
//! both. Every insert is checked against what the table holds afterwards.
#![cfg(all(feature = "bulk", feature = "sqlite"))]

mod support;

use perfkit::bulk::{BulkInsert, Error, bulk_insert};
use perfkit::pool::SqlitePoolBuilder;

enum Db {
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(support::TestDb),
}

struct Subject {
    name: &'static str,
    db: Db,
}

macro_rules! on {
    ($subject:expr, $pool:ident => $body:expr) => {
        match &$subject.db {
            Db::Sqlite(pool) => {
                let $pool: &sqlx::Pool<sqlx::Sqlite> = pool;
                $body
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => {
                let $pool: &sqlx::Pool<sqlx::Postgres> = &db.pool;
                $body
            }
        }
    };
}

async fn subjects(test: &str) -> Vec<Subject> {
    let sqlite = SqlitePoolBuilder::new("sqlite::memory:")
        .build()
        .await
        .unwrap();
    #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
    let mut subjects = vec![Subject {
        name: "sqlite",
        db: Db::Sqlite(sqlite.sqlx().clone()),
    }];
    #[cfg(feature = "postgres")]
    if let Some(db) = support::postgres(test).await {
        subjects.push(Subject {
            name: "postgres",
            db: Db::Postgres(db),
        });
    }
    #[cfg(not(feature = "postgres"))]
    let _ = test;
    subjects
}

/// (id, email, score)
type Row = (i64, String, i64);

fn rows(ids: std::ops::RangeInclusive<i64>) -> Vec<Row> {
    ids.map(|i| (i, format!("user{i}@example.com"), i % 101))
        .collect()
}

impl Subject {
    async fn create(&self) {
        on!(self, pool => {
            sqlx::raw_sql(
                "CREATE TABLE people (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE, \
                 score BIGINT NOT NULL CHECK (score >= 0))",
            )
            .execute(pool)
            .await
            .unwrap();
        })
    }

    async fn stored(&self) -> Vec<Row> {
        on!(self, pool => sqlx::query_as("SELECT id, email, score FROM people ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap())
    }

    async fn insert(&self, insert: &BulkInsert, rows: &[Row]) -> Result<u64, Error> {
        on!(self, pool => insert.execute(pool, rows, |mut b, (id, email, score)| {
            b.push_bind(*id).push_bind(email.clone()).push_bind(*score);
        }).await)
    }
}

fn people() -> BulkInsert {
    BulkInsert::new("people", &["id", "email", "score"])
}

#[tokio::test]
async fn a_hundred_thousand_rows_all_or_none() {
    for subject in subjects("bulk_all_or_none").await {
        subject.create().await;
        let mut batch = rows(1..=100_000);
        // Row 73 456 breaks the CHECK constraint.
        batch[73_456].2 = -1;
        let error = subject.insert(&people(), &batch).await.unwrap_err();
        assert!(
            matches!(error, Error::Row { index: 73_456, .. }),
            "{}: {error}",
            subject.name
        );
        assert!(error.to_string().contains("row 73456"));
        assert!(
            subject.stored().await.is_empty(),
            "{}: nothing written",
            subject.name
        );

        batch[73_456].2 = 5;
        let written = subject.insert(&people(), &batch).await.unwrap();
        assert_eq!(written, 100_000, "{}", subject.name);
        assert_eq!(subject.stored().await, batch, "{}", subject.name);
    }
}

#[tokio::test]
async fn conflicts_name_the_row_that_repeats_a_key() {
    for subject in subjects("bulk_conflicts").await {
        subject.create().await;
        subject.insert(&people(), &rows(1..=10)).await.unwrap();
        let insert = people().chunk_rows(4);

        // A row repeating a stored key, in the third statement.
        let mut batch = rows(11..=30);
        batch[9].0 = 3;
        let error = subject.insert(&insert, &batch).await.unwrap_err();
        assert!(
            matches!(error, Error::Row { index: 9, .. }),
            "{}: {error}",
            subject.name
        );

        // Two rows of one statement repeating each other: the second is named.
        let mut batch = rows(11..=30);
        batch[13].1 = batch[12].1.clone();
        let error = subject.insert(&insert, &batch).await.unwrap_err();
        assert!(
            matches!(error, Error::Row { index: 13, .. }),
            "{}: {error}",
            subject.name
        );

        // A row repeating one of an earlier statement of the same insert.
        let mut batch = rows(11..=30);
        batch[17].1 = batch[1].1.clone();
        let error = subject.insert(&insert, &batch).await.unwrap_err();
        assert!(
            matches!(error, Error::Row { index: 17, .. }),
            "{}: {error}",
            subject.name
        );

        assert_eq!(subject.stored().await, rows(1..=10), "{}", subject.name);
    }
}

#[tokio::test]
async fn on_conflict_and_returning() {
    for subject in subjects("bulk_on_conflict").await {
        subject.create().await;
        subject.insert(&people(), &rows(1..=5)).await.unwrap();
        let insert = people().on_conflict("(id) DO NOTHING").chunk_rows(3);
        assert_eq!(
            subject.insert(&insert, &rows(1..=8)).await.unwrap(),
            3,
            "{}",
            subject.name
        );
        let returning = people()
            .on_conflict("(id) DO UPDATE SET score = excluded.score")
            .returning("id, score");
        let mut updated = rows(7..=12);
        for row in &mut updated {
            row.2 = 100;
        }
        let got: Vec<(i64, i64)> = on!(subject, pool => returning
            .fetch(pool, &updated, |mut b, (id, email, score)| {
                b.push_bind(*id).push_bind(email.clone()).push_bind(*score);
            })
            .await
            .unwrap());
        let mut got = got;
        got.sort();
        assert_eq!(
            got,
            (7..=12).map(|id| (id, 100)).collect::<Vec<_>>(),
            "{}",
            subject.name
        );
        assert_eq!(subject.stored().await.len(), 12);
    }
}

#[tokio::test]
async fn bad_input_is_an_error_not_a_panic() {
    for subject in subjects("bulk_bad_input").await {
        subject.create().await;
        assert_eq!(subject.insert(&people(), &[]).await.unwrap(), 0);
        let error = subject
            .insert(
                &BulkInsert::new("people; DROP TABLE people", &["id"]),
                &rows(1..=1),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Identifier { .. }), "{error}");
        let no_columns: Result<u64, Error> = on!(subject, pool => bulk_insert(pool, "people", &[], &[1], |mut b, v: &i64| {
            b.push_bind(*v);
        }).await);
        assert!(matches!(no_columns, Err(Error::NoColumns)));
        // A missing table: the database error, nothing located.
        let error = subject
            .insert(
                &BulkInsert::new("nobody", &["id", "email", "score"]),
                &rows(1..=3),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Rows {
                    first: 0,
                    last: 2,
                    ..
                }
            ),
            "{}: {error}",
            subject.name
        );
        assert!(subject.stored().await.is_empty());
    }
}
