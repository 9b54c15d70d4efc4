//! `perfkit::eager` on SQLite and, when `DATABASE_URL` is set, PostgreSQL: one suite over
//! both. Eager loads are compared with the N+1 loop they replace on generated data, and
//! queries are counted from sqlx's own statement events.
#![cfg(all(feature = "eager", feature = "sqlite"))]

mod support;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use perfkit::eager::{self, DataLoader, Loaded, Relation};
use support::capture::Capture;

/// The database a case runs on.
enum Db {
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool, #[allow(dead_code)] support::TestDb),
}

struct Subject {
    name: &'static str,
    db: Db,
    /// The scans `queries_on` saw last (PostgreSQL).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    scans: Mutex<usize>,
}

/// Runs `$body` with `$pool` bound to the subject's `sqlx::Pool`, once per database type.
macro_rules! on {
    ($subject:expr, $pool:ident => $body:expr) => {
        match &$subject.db {
            Db::Sqlite(pool) => {
                let $pool: &sqlx::Pool<sqlx::Sqlite> = pool;
                $body
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(pool, _) => {
                let $pool: &sqlx::Pool<sqlx::Postgres> = pool;
                $body
            }
        }
    };
}

/// SQLite in memory and, when it is configured, PostgreSQL in a schema of the test's own;
/// both log every statement, so the tests can count them.
async fn subjects(test: &str) -> Vec<Subject> {
    use sqlx::ConnectOptions;
    statements();
    // One connection: each connection to `sqlite::memory:` is a database of its own.
    let sqlite = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            "sqlite::memory:"
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .log_statements(log::LevelFilter::Debug),
        )
        .await
        .unwrap();
    #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
    let mut subjects = vec![Subject {
        name: "sqlite",
        db: Db::Sqlite(sqlite),
        scans: Mutex::new(0),
    }];
    #[cfg(feature = "postgres")]
    if let Some(db) = support::postgres(test).await {
        // One connection, whose statistics `Subject::queries_on` flushes and reads.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(db.connect_options())
            .await
            .unwrap();
        subjects.push(Subject {
            name: "postgres",
            db: Db::Postgres(pool, db),
            scans: Mutex::new(0),
        });
    }
    #[cfg(not(feature = "postgres"))]
    let _ = test;
    subjects
}

/// A small deterministic generator, so a failing case can be run again.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

type Child = (i64, i64, i64); // (id, parent_id, value)

impl Subject {
    async fn exec(&self, sql: &str) {
        on!(self, pool => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(pool)
                .await
                .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name));
        })
    }

    /// `children` with, for parent keys 1..=parents, between 0 and 4 children each
    /// (about one parent in five has none).
    async fn seed(&self, table: &str, parents: i64, rng: &mut XorShift) {
        self.exec(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, parent_id BIGINT NOT NULL, value BIGINT NOT NULL)"
        ))
        .await;
        let mut values = Vec::new();
        let mut id = 0;
        for parent in 1..=parents {
            for _ in 0..rng.below(5) {
                id += 1;
                values.push(format!("({id}, {parent}, {})", rng.below(1000)));
            }
        }
        for chunk in values.chunks(500) {
            self.exec(&format!("INSERT INTO {table} VALUES {}", chunk.join(", ")))
                .await;
        }
    }

    /// The N+1 way: one query per parent, in the parents' order.
    async fn one_by_one(&self, table: &str, parents: &[i64]) -> Vec<(i64, Vec<Child>)> {
        let placeholder = if self.name == "sqlite" { "?" } else { "$1" };
        let sql = format!(
            "SELECT id, parent_id, value FROM {table} WHERE parent_id = {placeholder} ORDER BY id"
        );
        let mut out = Vec::new();
        for &parent in parents {
            let rows: Vec<Child> = on!(self, pool => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(parent).fetch_all(pool).await.unwrap()
            });
            out.push((parent, rows));
        }
        out
    }

    async fn load(&self, parents: &[i64], relation: &Relation) -> Loaded<i64, Child> {
        on!(self, pool => eager::load_many(pool, parents, |&p| p, relation).await.unwrap())
    }
}

fn children(table: &str) -> Relation {
    Relation::new(
        format!("SELECT id, parent_id, value FROM {table}"),
        "parent_id",
    )
    .order_by("id")
}

/// What sqlx logs about statements, from every thread: SQLite runs its statements on a
/// worker thread of its own, where a thread's subscriber would not see them.
fn statements() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let capture = Capture::default();
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(capture.clone()),
        )
        .expect("no other global subscriber in this suite");
        capture
    })
}

impl Subject {
    /// The statements that read `table` since the last call for it, as the database
    /// counts them: on PostgreSQL the table's scans in `pg_stat_user_tables` (a statement
    /// reading a table without a self-join scans it once), on SQLite the statements sqlx
    /// logs.
    async fn queries_on(&self, table: &str) -> usize {
        match &self.db {
            Db::Sqlite(_) => logged_statements(table),
            #[cfg(feature = "postgres")]
            Db::Postgres(pool, _) => {
                // The pool's one connection ran the statements: flush its counts first.
                sqlx::query("SELECT pg_stat_force_next_flush()")
                    .execute(pool)
                    .await
                    .unwrap();
                let scans: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables \
                     WHERE relname = $1 AND schemaname = current_schema()",
                )
                .bind(table)
                .fetch_one(pool)
                .await
                .unwrap();
                let scans = scans as usize;
                let mut seen = self.scans.lock().unwrap();
                let before = std::mem::replace(&mut *seen, scans);
                scans - before
            }
        }
    }
}

/// The statements sqlx logged on `table` since the last call for it. Each test counts on
/// a table of its own, so tests running at once do not count each other's statements.
fn logged_statements(table: &str) -> usize {
    static SEEN: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());
    let needle = format!("FROM {table} ");
    let total = statements()
        .events()
        .iter()
        .filter(|event| event.target == "sqlx::query" && event.text.contains(&needle))
        .count();
    let mut seen = SEEN.lock().unwrap();
    let before = match seen.iter_mut().find(|(t, _)| t == table) {
        Some((_, before)) => std::mem::replace(before, total),
        None => {
            seen.push((table.to_owned(), total));
            0
        }
    };
    total - before
}

#[tokio::test]
async fn eager_matches_n_plus_one() {
    for subject in subjects("eager_matches_n_plus_one").await {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        subject.seed("children", 300, &mut rng).await;
        let cases: Vec<(&str, Vec<i64>)> = vec![
            ("empty", vec![]),
            ("without children", {
                let all: Vec<i64> = (1..=300).collect();
                let childless: Vec<i64> = subject
                    .one_by_one("children", &all)
                    .await
                    .into_iter()
                    .filter(|(_, c)| c.is_empty())
                    .map(|(k, _)| k)
                    .collect();
                assert!(
                    childless.len() > 10,
                    "the generator leaves some parents childless"
                );
                childless
            }),
            ("missing parents", vec![1_000, 2_000, 5]),
            ("duplicates", vec![7, 3, 7, 7, 9, 3]),
            ("all, shuffled", {
                let mut all: Vec<i64> = (1..=300).collect();
                for i in (1..all.len()).rev() {
                    all.swap(i, rng.below(i as u64 + 1) as usize);
                }
                all
            }),
        ];
        for (case, parents) in cases {
            for (relation, chunk) in [
                (children("children"), eager::MAX_KEYS_PER_QUERY),
                (children("children").chunk_size(7), 7),
            ] {
                let loaded = subject.load(&parents, &relation).await;
                let mut expected = subject.one_by_one("children", &parents).await;
                // One group per distinct key, in first-seen order.
                let mut seen = std::collections::HashSet::new();
                expected.retain(|(key, _)| seen.insert(*key));
                let got: Vec<(i64, Vec<Child>)> = loaded.groups().to_vec();
                assert_eq!(got, expected, "{}: {case}", subject.name);
                assert!(loaded.orphans().is_empty());
                // zip gives every parent, duplicates included, its children.
                let zipped: Vec<(i64, usize)> = loaded
                    .zip(&parents, |&p| p)
                    .map(|(&p, c)| (p, c.len()))
                    .collect();
                let by_key: HashMap<i64, usize> = got.iter().map(|(k, c)| (*k, c.len())).collect();
                assert_eq!(zipped.len(), parents.len());
                assert!(zipped.iter().all(|(p, n)| by_key[p] == *n));
                assert_eq!(
                    loaded.queries(),
                    seen.len().div_ceil(chunk),
                    "{}: {case}",
                    subject.name
                );
            }
        }
    }
}

#[tokio::test]
async fn load_many_is_one_statement_and_reports_orphans() {
    for subject in subjects("load_many_is_one_statement").await {
        subject.seed("kids_one", 120, &mut XorShift(7)).await;
        subject.queries_on("kids_one").await;
        let parents: Vec<i64> = (1..=100).collect();
        let loaded = subject.load(&parents, &children("kids_one")).await;
        assert_eq!(subject.queries_on("kids_one").await, 1, "{}", subject.name);
        assert!(loaded.groups().iter().map(|(_, c)| c.len()).sum::<usize>() > 100);

        // A relation whose key column reads back other keys: every row is an orphan.
        let shifted = Relation::new(
            "SELECT c.id, c.parent_id + 1000 AS parent_id, c.value FROM kids_one c",
            "c.parent_id",
        );
        let odd = subject.load(&parents, &shifted).await;
        assert!(odd.groups().iter().all(|(_, c)| c.is_empty()));
        assert!(!odd.orphans().is_empty());
        assert!(
            odd.orphans()
                .iter()
                .all(|(key, child)| *key == child.1 && *key > 1000)
        );

        // A key column that is not an identifier is refused before any SQL runs.
        subject.queries_on("kids_one").await;
        let bad = Relation::new("SELECT id FROM kids_one ", "parent_id; DROP TABLE kids_one");
        let error = on!(subject, pool => eager::load_many::<_, _, i64, Child>(pool, &parents, |&p| p, &bad).await.unwrap_err());
        assert!(matches!(error, eager::Error::Column { .. }), "{error}");
        assert_eq!(subject.queries_on("kids_one").await, 0);
    }
}

#[tokio::test]
async fn load_one_keeps_the_first_row_and_reports_the_rest() {
    for subject in subjects("load_one").await {
        subject.seed("children", 50, &mut XorShift(11)).await;
        let parents: Vec<i64> = (1..=50).collect();
        let relation = children("children");
        let expected = subject.one_by_one("children", &parents).await;
        let one = on!(subject, pool => eager::load_one::<_, _, i64, Child>(pool, &parents, |&p| p, &relation).await.unwrap());
        let mut extra = 0;
        for ((parent, got), (_, rows)) in one.zip(&parents, |&p| p).zip(&expected) {
            assert_eq!(got, rows.first(), "{}: parent {parent}", subject.name);
            extra += rows.len().saturating_sub(1);
        }
        assert_eq!(one.extra().len(), extra);
    }
}

#[tokio::test]
async fn a_hundred_concurrent_loads_are_one_query() {
    for subject in subjects("a_hundred_concurrent_loads").await {
        subject.seed("kids_many", 150, &mut XorShift(3)).await;
        let expected = subject
            .one_by_one("kids_many", &(1..=100).collect::<Vec<_>>())
            .await;
        subject.queries_on("kids_many").await;
        let loader: DataLoader<i64, Vec<Child>, eager::Error> =
            on!(subject, pool => DataLoader::children(pool.clone(), children("kids_many")));
        let mut tasks = tokio::task::JoinSet::new();
        for key in (1..=100).rev() {
            let loader = loader.clone();
            tasks.spawn(async move { (key, loader.load(key).await.unwrap().unwrap()) });
        }
        let mut got = tasks.join_all().await;
        got.sort_by_key(|(key, _)| *key);
        assert_eq!(got, expected, "{}", subject.name);
        assert_eq!(subject.queries_on("kids_many").await, 1, "{}", subject.name);
        assert_eq!(loader.batches(), 1);
        // Memoised: loading them again costs nothing.
        for key in 1..=100 {
            loader.load(key).await.unwrap();
        }
        assert_eq!(subject.queries_on("kids_many").await, 0, "{}", subject.name);

        // Batches of at most 30 keys: 4 queries for 100 new keys.
        let small: DataLoader<i64, Vec<Child>, eager::Error> =
            on!(subject, pool => DataLoader::children(pool.clone(), children("kids_many")))
                .max_batch(30);
        let loads = small.load_all(1..=100).await.unwrap();
        assert_eq!(loads.len(), 100);
        assert_eq!(subject.queries_on("kids_many").await, 4, "{}", subject.name);
    }
}

#[tokio::test]
async fn a_failed_batch_reaches_every_waiter() {
    for subject in subjects("a_failed_batch").await {
        // No table: the query fails.
        let loader: DataLoader<i64, Vec<Child>, eager::Error> =
            on!(subject, pool => DataLoader::children(pool.clone(), children("missing")));
        let answers = tokio::join!(loader.load(1), loader.load(2), loader.load(1));
        for answer in [answers.0, answers.1, answers.2] {
            assert!(
                matches!(answer, Err(eager::LoadError::Batch(ref e)) if matches!(**e, eager::Error::Sql(_))),
                "{}: {answer:?}",
                subject.name
            );
        }
        assert_eq!(loader.batches(), 1);
    }
}

type Pair = (i64, i64, i64, i64); // (id, tenant, parent_id, value)

#[tokio::test]
async fn composite_keys_match_n_plus_one() {
    for subject in subjects("composite_keys").await {
        subject.seed("children", 200, &mut XorShift(0x5eed)).await;
        subject
            .exec("CREATE TABLE pairs AS SELECT id, parent_id % 4 AS tenant, parent_id, value FROM children")
            .await;
        let mut rng = XorShift(99);
        // Right and wrong tenants (a wrong one has no children), duplicates, unknown parents.
        let mut parents: Vec<(i64, i64)> = (1..=200)
            .map(|p| {
                (
                    if rng.below(4) == 0 {
                        (p + 1) % 4
                    } else {
                        p % 4
                    },
                    p,
                )
            })
            .collect();
        parents.extend([(1, 1), (2, 2), (3, 3), (0, 9_999), (1, 1)]);
        let relation = Relation::composite(
            "SELECT id, tenant, parent_id, value FROM pairs",
            ["tenant", "parent_id"],
        )
        .order_by("id");
        let placeholders = if subject.name == "sqlite" {
            ["?", "?"]
        } else {
            ["$1", "$2"]
        };
        let sql = format!(
            "SELECT id, tenant, parent_id, value FROM pairs WHERE tenant = {} AND parent_id = {} ORDER BY id",
            placeholders[0], placeholders[1]
        );
        let mut seen = std::collections::HashSet::new();
        let mut expected = Vec::new();
        for &(tenant, parent) in &parents {
            if !seen.insert((tenant, parent)) {
                continue;
            }
            let rows: Vec<Pair> = on!(subject, pool => {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(tenant).bind(parent).fetch_all(pool).await.unwrap()
            });
            expected.push(((tenant, parent), rows));
        }
        assert!(expected.iter().any(|(_, rows)| rows.is_empty()));
        assert!(expected.iter().filter(|(_, rows)| !rows.is_empty()).count() > 100);
        for (relation, chunk) in [
            (relation.clone(), eager::MAX_KEYS_PER_QUERY),
            (relation.clone().chunk_size(7), 7),
        ] {
            let loaded: Loaded<(i64, i64), Pair> = on!(subject, pool => {
                eager::load_many_composite(pool, &parents, |&k| k, &relation).await.unwrap()
            });
            assert_eq!(loaded.groups(), expected.as_slice(), "{}", subject.name);
            assert!(loaded.orphans().is_empty());
            assert_eq!(loaded.queries(), seen.len().div_ceil(chunk));
        }
        // No parents, no query; a key of the wrong width is refused.
        let none: Loaded<(i64, i64), Pair> = on!(subject, pool => {
            eager::load_many_composite(pool, &[] as &[(i64, i64)], |&k| k, &relation).await.unwrap()
        });
        assert_eq!(none.queries(), 0);
        let error = on!(subject, pool => {
            eager::load_many_composite::<_, _, (i64, i64, i64), Pair>(pool, &[(1, 1, 1)], |&k| k, &relation).await.unwrap_err()
        });
        assert!(
            matches!(error, eager::Error::Arity { columns: 2, key: 3 }),
            "{error}"
        );
    }
}

#[tokio::test]
async fn top_n_per_parent_matches_n_plus_one() {
    for subject in subjects("top_n_per_parent").await {
        subject.seed("children", 150, &mut XorShift(0xfeed)).await;
        let placeholder = if subject.name == "sqlite" { "?" } else { "$1" };
        let mut parents: Vec<i64> = (1..=150).rev().collect();
        parents.extend([5, 5, 9_999]);
        for (n, filter) in [(1, None), (3, None), (2, Some("value >= 300"))] {
            // The latest n children per parent: highest id first.
            let mut relation =
                Relation::new("SELECT id, parent_id, value FROM children", "parent_id")
                    .order_by("id DESC")
                    .limit_per_parent(n);
            let mut condition = String::new();
            if let Some(filter) = filter {
                relation = relation.filter(filter);
                condition = format!(" AND {filter}");
            }
            let sql = format!(
                "SELECT id, parent_id, value FROM children WHERE parent_id = {placeholder}{condition} \
                 ORDER BY id DESC LIMIT {n}"
            );
            let mut seen = std::collections::HashSet::new();
            let mut expected = Vec::new();
            for &parent in &parents {
                if seen.insert(parent) {
                    let rows: Vec<Child> = on!(subject, pool => {
                        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(parent).fetch_all(pool).await.unwrap()
                    });
                    expected.push((parent, rows));
                }
            }
            assert!(expected.iter().any(|(_, rows)| rows.len() == n));
            assert!(expected.iter().any(|(_, rows)| rows.is_empty()));
            for chunk in [eager::MAX_KEYS_PER_QUERY, 11] {
                let loaded = subject
                    .load(&parents, &relation.clone().chunk_size(chunk))
                    .await;
                assert_eq!(
                    loaded.groups(),
                    expected.as_slice(),
                    "{}: n = {n}, {filter:?}",
                    subject.name
                );
                assert!(loaded.orphans().is_empty());
                assert_eq!(loaded.queries(), seen.len().div_ceil(chunk));
            }
        }
        // A select the window form cannot extend is refused before any SQL runs.
        let bad = Relation::new("WITH x AS (SELECT 1) TABLE x", "parent_id").limit_per_parent(2);
        let error = on!(subject, pool => eager::load_many::<_, _, i64, Child>(pool, &parents, |&p| p, &bad).await.unwrap_err());
        assert!(matches!(error, eager::Error::Select), "{error}");
    }
}
