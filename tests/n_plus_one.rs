//! The N+1 detector (`perfkit::eager::detect`) on SQLite and, when `DATABASE_URL` is set,
//! PostgreSQL: requests served through its scope layer, statements counted from sqlx's own
//! statement events, reports at K + 1 statements of one shape and none at K.
#![cfg(all(feature = "n-plus-one", feature = "sqlite", feature = "postgres"))]

mod support;

use std::convert::Infallible;
use std::sync::OnceLock;

use perfkit::eager::detect::{Detection, NPlusOne};
use perfkit::eager::{self, DataLoader, Relation};
use sqlx::ConnectOptions;
use tower::{Layer, Service, ServiceExt};

/// The limit of the suite's detector.
const K: usize = 3;

/// The detector every test shares: SQLite reports statements from a worker thread, so the
/// detector must be in the global subscriber. Tests tell their reports apart by route.
fn detector() -> &'static NPlusOne {
    static DETECTOR: OnceLock<NPlusOne> = OnceLock::new();
    DETECTOR.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let detector = NPlusOne::new(K);
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(detector.clone()),
        )
        .expect("no other global subscriber in this suite");
        detector
    })
}

/// The reports for `route` so far, leaving the others'.
fn reports(route: &str) -> Vec<Detection> {
    detector()
        .detections()
        .into_iter()
        .filter(|d| d.route == route)
        .collect()
}

enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool, #[allow(dead_code)] support::TestDb),
}

/// SQLite in memory and, when configured, PostgreSQL in a schema of the test's own, both
/// with statement logging on, and a table `items` of ten rows.
async fn databases(test: &str) -> Vec<(&'static str, Db)> {
    detector();
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
    let mut out = vec![("sqlite", Db::Sqlite(sqlite))];
    if let Some(db) = support::postgres(test).await {
        // The suite's helper disables statement logging, which also makes every statement
        // "slow" (a zero threshold) at level Off: both settings must be turned back on, or
        // sqlx emits no statement event and the detector counts nothing.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(
                db.connect_options()
                    .log_statements(log::LevelFilter::Debug)
                    .log_slow_statements(log::LevelFilter::Warn, std::time::Duration::from_secs(1)),
            )
            .await
            .unwrap();
        out.push(("postgres", Db::Postgres(pool, db)));
    }
    for (_, db) in &out {
        let sql = "CREATE TABLE items (id BIGINT PRIMARY KEY, owner BIGINT NOT NULL, name TEXT NOT NULL); \
                   INSERT INTO items VALUES (1, 1, 'a'), (2, 1, 'b'), (3, 2, 'c'), (4, 2, 'd'), (5, 3, 'e'), \
                   (6, 4, 'f'), (7, 5, 'g'), (8, 6, 'h'), (9, 7, 'i'), (10, 8, 'j')";
        match db {
            Db::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Db::Postgres(pool, _) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }
    out
}

type Item = (i64, i64, String);

/// Reads `ids` one statement each, `id = $1` / `id = ?`.
async fn one_by_one(db: &Db, ids: &[i64]) -> usize {
    let mut found = 0;
    for &id in ids {
        let row: Option<Item> = match db {
            Db::Sqlite(pool) => sqlx::query_as("SELECT id, owner, name FROM items WHERE id = ?")
                .bind(id)
                .fetch_optional(pool)
                .await
                .unwrap(),
            Db::Postgres(pool, _) => {
                sqlx::query_as("SELECT id, owner, name FROM items WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .unwrap()
            }
        };
        found += usize::from(row.is_some());
    }
    found
}

/// Serves one request to `path` through the detector's scope layer, running `handler`.
async fn serve<F, Fut>(path: &str, handler: F) -> usize
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = usize>,
{
    let handler = std::sync::Mutex::new(Some(handler));
    let mut service =
        detector()
            .scope_layer()
            .layer(tower::service_fn(|_request: http::Request<()>| {
                let handler = handler.lock().unwrap().take().unwrap();
                async move { Ok::<_, Infallible>(handler().await) }
            }));
    let request = http::Request::get(path).body(()).unwrap();
    service.ready().await.unwrap().call(request).await.unwrap()
}

#[tokio::test]
async fn fires_at_k_plus_one_and_is_silent_at_k() {
    for (name, db) in databases("n1_fires_at_k_plus_one").await {
        let at_k = format!("/{name}/at-k");
        let found = serve(&at_k, || one_by_one(&db, &[1, 2, 3])).await;
        assert_eq!(found, 3);
        assert_eq!(reports(&format!("GET {at_k}")), [], "{name}: K statements");

        let past_k = format!("/{name}/past-k");
        // K + 1 statements of one shape, whatever ids they bind.
        let found = serve(&past_k, || one_by_one(&db, &[1, 5, 9, 42])).await;
        assert_eq!(found, 3);
        let got = reports(&format!("GET {past_k}"));
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].count, K + 1, "{name}");
        assert_eq!(got[0].limit, K);
        assert_eq!(
            got[0].shape, "SELECT id, owner, name FROM items WHERE id = ?",
            "{name}"
        );
        assert!(got[0].to_string().contains(&format!("GET {past_k}")));

        // Each request counts on its own: K, then K again, reports nothing.
        let twice = format!("/{name}/twice");
        serve(&twice, || one_by_one(&db, &[1, 2, 3])).await;
        serve(&twice, || one_by_one(&db, &[4, 5, 6])).await;
        assert_eq!(reports(&format!("GET {twice}")), [], "{name}");
    }
}

#[tokio::test]
async fn literals_and_list_lengths_share_a_shape() {
    for (name, db) in databases("n1_literals_and_lists").await {
        let path = format!("/{name}/lists");
        serve(&path, || async {
            // Four statements differing in their literal and in their list's length.
            for n in 1..=(K + 1) as i64 {
                let list: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
                let sql = format!(
                    "SELECT id FROM items WHERE owner <> {n} AND id IN ({})",
                    list.join(", ")
                );
                match &db {
                    Db::Sqlite(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(pool)
                        .await
                        .map(drop),
                    Db::Postgres(pool, _) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(pool)
                        .await
                        .map(drop),
                }
                .unwrap();
            }
            0
        })
        .await;
        let got = reports(&format!("GET {path}"));
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].count, K + 1);
        assert_eq!(
            got[0].shape,
            "SELECT id FROM items WHERE owner <> ? AND id IN (?)"
        );
    }
}

#[tokio::test]
async fn a_data_loader_keeps_a_request_under_the_limit() {
    for (name, db) in databases("n1_data_loader").await {
        let relation = Relation::new("SELECT id, owner, name FROM items", "owner").order_by("id");
        let path = format!("/{name}/loader");
        let loaded = serve(&path, || async {
            let mut tasks = tokio::task::JoinSet::new();
            // Loads from tasks of their own: the loader's batch carries the request's span.
            match &db {
                Db::Sqlite(pool) => {
                    let loader: DataLoader<i64, Vec<Item>, eager::Error> =
                        DataLoader::children(pool.clone(), relation.clone());
                    for owner in 1..=8 {
                        let loader = loader.clone();
                        tasks
                            .spawn(async move { loader.load(owner).await.unwrap().unwrap().len() });
                    }
                }
                Db::Postgres(pool, _) => {
                    let loader: DataLoader<i64, Vec<Item>, eager::Error> =
                        DataLoader::children(pool.clone(), relation.clone());
                    for owner in 1..=8 {
                        let loader = loader.clone();
                        tasks
                            .spawn(async move { loader.load(owner).await.unwrap().unwrap().len() });
                    }
                }
            }
            tasks.join_all().await.into_iter().sum()
        })
        .await;
        assert_eq!(loaded, 10, "{name}");
        assert_eq!(reports(&format!("GET {path}")), [], "{name}");

        // The same data read per owner: eight statements of one shape.
        let n1 = format!("/{name}/per-owner");
        serve(&n1, || async {
            let mut rows = 0;
            for owner in 1..=8_i64 {
                let got: Vec<Item> = match &db {
                    Db::Sqlite(pool) => {
                        sqlx::query_as("SELECT id, owner, name FROM items WHERE owner = ?")
                            .bind(owner)
                            .fetch_all(pool)
                            .await
                    }
                    Db::Postgres(pool, _) => {
                        sqlx::query_as("SELECT id, owner, name FROM items WHERE owner = $1")
                            .bind(owner)
                            .fetch_all(pool)
                            .await
                    }
                }
                .unwrap();
                rows += got.len();
            }
            rows
        })
        .await;
        let got = reports(&format!("GET {n1}"));
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].count, 8);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn panic_on_detection_fails_the_request() {
    use tracing_subscriber::layer::SubscriberExt;
    let databases = databases("n1_panic_on_detection").await;
    for (name, db) in databases {
        if name == "sqlite" {
            // SQLite's worker thread reports to the global subscriber only; PostgreSQL
            // reports in the request's task, which this thread's subscriber sees.
            continue;
        }
        let strict = NPlusOne::new(K).panic_on_detection();
        let _default =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(strict.clone()));
        let db = std::sync::Arc::new(db);
        let mut service =
            strict
                .scope_layer()
                .layer(tower::service_fn(move |request: http::Request<()>| {
                    let db = db.clone();
                    async move {
                        let ids: &[i64] = if request.uri().path() == "/ok" {
                            &[1, 2, 3]
                        } else {
                            &[1, 2, 3, 4]
                        };
                        Ok::<_, Infallible>(one_by_one(&db, ids).await)
                    }
                }));
        let ok = service.call(http::Request::get("/ok").body(()).unwrap());
        assert_eq!(tokio::spawn(ok).await.unwrap().unwrap(), 3);
        let bad = service.call(http::Request::get("/bad").body(()).unwrap());
        let error = tokio::spawn(bad).await.unwrap_err();
        assert!(error.is_panic(), "{name}");
        let message = error.into_panic();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("GET /bad"), "{message}");
        assert!(message.contains("ran 4 times"), "{message}");
        assert_eq!(strict.take_detections().len(), 1);
    }
}
