//! `perfkit::pool` against a real PostgreSQL (`DATABASE_URL`): builder settings, acquire
//! timeouts and their causes, pre-ping, recycling, slow-statement and leak logs, statistics
//! and the diagnostics. Tests that need no server (refused ports) always run.
#![cfg(feature = "postgres")]

mod support;

use std::time::{Duration, Instant};

use perfkit::pool::{Error, PgPool, PgPoolBuilder, diagnostics};
use support::{TestDb, capture::Capture};

// ===== Helpers =====

/// A builder on the test's schema with small, quick settings.
fn builder(db: &TestDb) -> PgPoolBuilder {
    PgPoolBuilder::from_options(db.connect_options())
        .pool_size(1)
        .max_overflow(1)
        .acquire_timeout(Duration::from_secs(5))
}

async fn backend_pid(pool: &PgPool) -> i32 {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

/// Waits until `pool` has `idle` idle connections: sqlx returns them from a spawned task.
async fn until_idle(pool: &PgPool, idle: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().idle < idle {
        assert!(
            Instant::now() < deadline,
            "pool never got {idle} idle connections: {:?}",
            pool.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ===== Builder settings =====

#[tokio::test]
async fn builder_settings_reach_every_connection() {
    let Some(db) = support::postgres("builder_settings_reach_every_connection").await else {
        return;
    };
    let app = format!("perfkit-app-{}", support::unique_id());
    let pool = builder(&db)
        .pool_size(2)
        .statement_timeout(Duration::from_secs(5))
        .jit(false)
        .idle_in_transaction_timeout(Duration::from_secs(60))
        .application_name(&app)
        .build()
        .await
        .unwrap();

    // Two connections at once, so both warm connections are checked.
    let mut first = pool.acquire().await.unwrap();
    let mut second = pool.acquire().await.unwrap();
    for conn in [&mut first, &mut second] {
        let statement_timeout: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(statement_timeout, "5s");
        let jit: String = sqlx::query_scalar("SHOW jit")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(jit, "off");
        let idle_in_tx: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(idle_in_tx, "1min");
        let search_path: String = sqlx::query_scalar("SHOW search_path")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(
            search_path, db.schema,
            "options given to from_options are kept"
        );
    }
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&app)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(sessions, 2, "both connections carry the application name");

    // The statement timeout is enforced by the server.
    let err = sqlx::query("SELECT pg_sleep(10)")
        .execute(&mut *first)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("statement timeout"), "{err}");

    drop((first, second));
    pool.close().await;
}

// ===== Acquire timeouts =====

#[tokio::test]
async fn an_exhausted_pool_times_out_saying_all_connections_are_in_use() {
    let Some(db) = support::postgres("an_exhausted_pool_times_out").await else {
        return;
    };
    let timeout = Duration::from_millis(300);
    let pool = builder(&db)
        .pool_size(2)
        .max_overflow(0)
        .acquire_timeout(timeout)
        .build()
        .await
        .unwrap();
    let _a = pool.acquire().await.unwrap();
    let _b = pool.acquire().await.unwrap();

    let started = Instant::now();
    let err = pool.acquire().await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout, "gave up after {elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_millis(700),
        "took {elapsed:?}"
    );
    let Error::AcquireTimeout { waited, cause, .. } = &err else {
        panic!("expected an acquire timeout, got {err:?}");
    };
    assert!(*waited >= timeout, "{waited:?}");
    assert_eq!(cause, "all 2 connections are in use");
    assert!(err.to_string().contains("timed out after 3"), "{err}");

    let stats = pool.stats();
    assert_eq!(stats.acquire_timeouts, 1);
    assert_eq!(stats.in_use, 2);
    assert_eq!(stats.acquires, 2, "a timed-out acquire is not an acquire");
}

#[tokio::test]
async fn acquire_against_a_refused_port_names_the_connect_error() {
    let timeout = Duration::from_millis(300);
    let pool = PgPoolBuilder::new("postgres://perfkit:s3cret@127.0.0.1:1/test")
        .acquire_timeout(timeout)
        .build_lazy()
        .unwrap();
    assert_eq!(pool.url(), "postgres://perfkit:***@127.0.0.1:1/test");

    let started = Instant::now();
    let err = pool.acquire().await.unwrap_err();
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
    let message = err.to_string();
    assert!(
        matches!(err, Error::AcquireTimeout { .. }),
        "expected an acquire timeout, got {err:?}"
    );
    assert!(message.contains("last connect error:"), "{message}");
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
    assert!(
        message.contains("postgres://perfkit:***@127.0.0.1:1/test"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    assert_eq!(pool.stats().acquire_timeouts, 1);

    // A second timeout within a second reuses the cause instead of connecting again.
    let err = pool.acquire().await.unwrap_err();
    assert!(err.to_string().contains("last connect error:"), "{err}");
    assert_eq!(pool.stats().acquire_timeouts, 2);
}

#[tokio::test]
async fn acquire_from_a_server_that_never_answers_ends_at_the_acquire_timeout() {
    // A listener that accepts connections and never says a word, like a host whose
    // database hangs: the cause probe must fit in the acquire timeout, not add to it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(500);
    let pool = PgPoolBuilder::new(format!("postgres://perfkit:s3cret@127.0.0.1:{port}/test"))
        .acquire_timeout(timeout)
        .build_lazy()
        .unwrap();

    let started = Instant::now();
    let err = pool.acquire().await.unwrap_err();
    let waited = started.elapsed();
    accept.abort();
    assert!(
        waited < timeout + Duration::from_millis(150),
        "took {waited:?}: {err}"
    );
    assert!(matches!(err, Error::AcquireTimeout { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[tokio::test]
async fn absurd_recycle_ages_and_query_passwords_are_handled() {
    // "Never recycle" written as the largest duration must not panic at build.
    let pool = PgPoolBuilder::new("postgres://perfkit@127.0.0.1:1/test?password=s3cret")
        .recycle(Duration::from_secs(u64::MAX))
        .build_lazy()
        .unwrap();
    assert_eq!(
        pool.url(),
        "postgres://perfkit@127.0.0.1:1/test?password=***"
    );
    let debug = format!(
        "{:?}",
        PgPoolBuilder::new("postgres://perfkit@db/test?password=s3cret")
    );
    assert!(!debug.contains("s3cret"), "{debug}");
}

#[tokio::test]
async fn build_against_a_refused_port_fails_naming_the_url_without_password() {
    let err = PgPoolBuilder::new("postgres://perfkit:s3cret@127.0.0.1:1/test")
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    let message = err.to_string();
    let Error::Connect { url, source } = &err else {
        panic!("expected a connect error, got {err:?}");
    };
    assert_eq!(url, "postgres://perfkit:***@127.0.0.1:1/test");
    assert!(
        source
            .to_string()
            .to_lowercase()
            .contains("connection refused"),
        "{source}"
    );
    assert!(
        message.starts_with("cannot connect to postgres://perfkit:***@127.0.0.1:1/test: "),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn a_closed_pool_refuses_acquires() {
    let Some(db) = support::postgres("a_closed_pool_refuses_acquires").await else {
        return;
    };
    let pool = builder(&db).build().await.unwrap();
    pool.close().await;
    assert!(matches!(pool.acquire().await, Err(Error::Closed)));
}

// ===== Pre-ping and recycling =====

/// Ends `pid`'s session from another connection and waits until it is gone.
async fn terminate(db: &TestDb, pid: i32) {
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(terminated);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if alive == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "backend {pid} did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Builds a one-connection pool with `settings`, lets its connection go idle and has the
/// server end it; returns the pool and the killed connection's backend pid.
async fn pool_with_a_killed_idle_connection(
    db: &TestDb,
    settings: impl FnOnce(PgPoolBuilder) -> PgPoolBuilder,
) -> (PgPool, i32) {
    let pool = settings(builder(db).max_overflow(0).recycle(None))
        .build()
        .await
        .unwrap();
    let pid = backend_pid(&pool).await;
    until_idle(&pool, 1).await;
    terminate(db, pid).await;
    (pool, pid)
}

#[tokio::test]
async fn pre_ping_replaces_a_connection_the_server_killed() {
    let Some(db) = support::postgres("pre_ping_replaces_a_killed_connection").await else {
        return;
    };
    let (pool, before) = pool_with_a_killed_idle_connection(&db, |pool| {
        pool.pre_ping_after(Duration::from_millis(100))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let after = backend_pid(&pool).await;
    assert_ne!(
        before, after,
        "the killed connection must have been replaced"
    );
    let stats = pool.stats();
    assert_eq!(stats.acquire_timeouts, 0);
    assert_eq!(stats.size, 1);
}

#[tokio::test]
async fn without_pre_ping_the_killed_connection_reaches_the_caller() {
    // The control for the test above: the same kill fails the next query when nothing
    // checks the connection first.
    let Some(db) = support::postgres("without_pre_ping_the_kill_shows").await else {
        return;
    };
    let (pool, _) = pool_with_a_killed_idle_connection(&db, |pool| pool.pre_ping(false)).await;

    let mut conn = pool.acquire().await.unwrap();
    assert!(
        sqlx::query("SELECT 1").execute(&mut *conn).await.is_err(),
        "a killed connection cannot run a query"
    );
}

#[tokio::test]
async fn a_recently_used_connection_is_not_pinged() {
    let Some(db) = support::postgres("a_recently_used_connection_is_not_pinged").await else {
        return;
    };
    // With a long threshold, the killed connection is handed out unchecked: proof that the
    // pre-ping only runs on connections idle past the threshold.
    let (pool, _) = pool_with_a_killed_idle_connection(&db, |pool| {
        pool.pre_ping_after(Duration::from_secs(60))
    })
    .await;
    let mut conn = pool.acquire().await.unwrap();
    assert!(sqlx::query("SELECT 1").execute(&mut *conn).await.is_err());
}

#[tokio::test]
async fn recycle_retires_old_connections() {
    let Some(db) = support::postgres("recycle_retires_old_connections").await else {
        return;
    };
    let pool = builder(&db)
        .max_overflow(0)
        .pre_ping(false)
        .recycle(Duration::from_millis(600))
        .build()
        .await
        .unwrap();
    let first = backend_pid(&pool).await;
    // Well below the shortest jittered lifetime (540 ms): the same connection.
    assert_eq!(backend_pid(&pool).await, first);

    // Past the longest (660 ms): a new one.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = backend_pid(&pool).await;
    assert_ne!(
        first, second,
        "a connection past its recycle age must be retired"
    );
    assert_eq!(pool.stats().size, 1);
}

// ===== Logs =====

#[tokio::test(flavor = "current_thread")]
async fn slow_statements_are_logged_at_warn() {
    let Some(db) = support::postgres("slow_statements_are_logged_at_warn").await else {
        return;
    };
    let (capture, _guard) = Capture::install();
    let pool = builder(&db)
        .slow_statement_threshold(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&*pool).await.unwrap();
    assert!(capture.warnings_containing("slow statement").is_empty());

    sqlx::query("SELECT pg_sleep(0.2)")
        .execute(&*pool)
        .await
        .unwrap();
    let slow = capture.warnings_containing("slow statement");
    assert_eq!(slow.len(), 1, "{:?}", capture.events());
    assert_eq!(slow[0].target, "sqlx::query");
    assert!(slow[0].text.contains("pg_sleep(0.2)"), "{}", slow[0].text);
}

#[tokio::test(flavor = "current_thread")]
async fn a_leaked_connection_is_reported_once_with_its_location() {
    let Some(db) = support::postgres("a_leaked_connection_is_reported").await else {
        return;
    };
    let (capture, _guard) = Capture::install();
    let pool = builder(&db)
        .leak_threshold(Duration::from_millis(300))
        .build()
        .await
        .unwrap();

    let returned = pool.acquire().await.unwrap();
    drop(returned);
    let line = line!() + 1;
    let held = pool.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;

    let location = format!("{}:{line}", file!());
    let reports = capture.warnings_containing("leak threshold");
    assert_eq!(reports.len(), 1, "{:?}", capture.events());
    assert!(reports[0].text.contains(&location), "{}", reports[0].text);
    assert!(reports[0].text.contains("held_ms="), "{}", reports[0].text);
    assert_eq!(pool.stats().leaks_reported, 1);

    // Reported once, however long it is held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(capture.warnings_containing("leak threshold").len(), 1);
    assert_eq!(pool.stats().leaks_reported, 1);
    drop(held);
}

// ===== Statistics =====

#[tokio::test]
async fn stats_follow_the_pool() {
    let Some(db) = support::postgres("stats_follow_the_pool").await else {
        return;
    };
    let pool = builder(&db)
        .pool_size(2)
        .max_overflow(2)
        .build()
        .await
        .unwrap();
    until_idle(&pool, 2).await;
    let stats = pool.stats();
    assert_eq!((stats.size, stats.idle, stats.in_use), (2, 2, 0));
    assert_eq!((stats.min, stats.max), (2, 4));
    assert_eq!(stats.acquires, 0, "the warm-up is not counted");

    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    let c = pool.acquire().await.unwrap();
    let stats = pool.stats();
    assert_eq!((stats.size, stats.idle, stats.in_use), (3, 0, 3));
    assert!((stats.utilisation - 0.75).abs() < 1e-9);
    assert_eq!(stats.acquires, 3);
    assert!(stats.acquire_max_ms >= stats.acquire_p50_ms);
    assert!(
        stats.acquire_max_ms > 0.0,
        "opening the third connection takes time"
    );

    drop((a, b, c));
    until_idle(&pool, 3).await;
    let stats = pool.stats();
    assert_eq!((stats.size, stats.idle, stats.in_use), (3, 3, 0));
    assert_eq!(stats.acquire_timeouts, 0);
    assert_eq!(stats.leaks_reported, 0);
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["acquires"], 3);
}

#[tokio::test]
async fn the_pool_runs_queries_itself_and_through_connections() {
    let Some(db) = support::postgres("the_pool_runs_queries").await else {
        return;
    };
    let pool = builder(&db).build().await.unwrap();
    sqlx::query("CREATE TABLE notes (body text)")
        .execute(&*pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("INSERT INTO notes VALUES ('hello')")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_all(pool.sqlx())
        .await
        .unwrap();
    assert_eq!(bodies, ["hello"]);
    let clone = pool.clone();
    assert_eq!(clone.stats().acquires, 1, "clones share one pool");
}

// ===== Diagnostics =====

async fn items_table(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE items (id int PRIMARY KEY, tag text NOT NULL, score int NOT NULL); \
         INSERT INTO items SELECT g, 'tag' || (g % 10), g FROM generate_series(1, 5000) g; \
         ANALYZE items",
    )
    .execute(pool.sqlx())
    .await
    .unwrap();
}

/// Flushes this session's statistics so that the `pg_stat_*` views show its scans.
async fn flush_stats(conn: &mut sqlx::PgConnection) {
    // PostgreSQL 15 and later; older servers flush within a second, which the callers'
    // polling covers.
    let _ = sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await;
}

/// How long the diagnostics tests wait for the statistics to show their scans.
const STATS_WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn explain_shows_the_plan() {
    let Some(db) = support::postgres("explain_shows_the_plan").await else {
        return;
    };
    let pool = builder(&db).build().await.unwrap();
    items_table(&pool).await;

    let plan = diagnostics::explain(&pool, "SELECT * FROM items WHERE score > 10;", false)
        .await
        .unwrap();
    assert!(plan.contains("Seq Scan on items"), "{plan}");
    assert!(!plan.contains("actual time"), "{plan}");

    let plan = diagnostics::explain(&pool, "SELECT * FROM items WHERE id = 7", false)
        .await
        .unwrap();
    assert!(plan.contains("Index Scan"), "{plan}");

    let err = diagnostics::explain(&pool, "SELECT * FROM missing_table", false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Sql(_)), "{err:?}");
}

#[tokio::test]
async fn explain_analyze_runs_the_query_and_rolls_it_back() {
    let Some(db) = support::postgres("explain_analyze_rolls_back").await else {
        return;
    };
    let pool = builder(&db).build().await.unwrap();
    items_table(&pool).await;

    let plan = diagnostics::explain(
        &pool,
        "INSERT INTO items (id, tag, score) VALUES (100000, 'new', 1)",
        true,
    )
    .await
    .unwrap();
    assert!(plan.contains("Insert on items"), "{plan}");
    assert!(plan.contains("actual time"), "{plan}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE id = 100000")
        .fetch_one(&*pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "EXPLAIN ANALYZE must not leave the row behind");
}

#[tokio::test]
async fn an_index_never_used_is_listed() {
    let Some(db) = support::postgres("an_index_never_used_is_listed").await else {
        return;
    };
    let pool = builder(&db).build().await.unwrap();
    items_table(&pool).await;
    sqlx::raw_sql(
        "CREATE INDEX items_tag_unused ON items (tag); \
         CREATE INDEX items_score_used ON items (score); \
         CREATE UNIQUE INDEX items_tag_score_unique ON items (tag, score)",
    )
    .execute(&*pool)
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql("SET enable_seqscan = off; SELECT * FROM items WHERE score = 5")
        .execute(&mut *conn)
        .await
        .unwrap();
    flush_stats(&mut conn).await;
    drop(conn);

    let deadline = Instant::now() + STATS_WAIT;
    let listed = loop {
        let listed: Vec<_> = diagnostics::unused_indexes(&pool)
            .await
            .unwrap()
            .into_iter()
            .filter(|index| index.schema == db.schema)
            .collect();
        if !listed.iter().any(|index| index.index == "items_score_used") {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "the used index still shows as unused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = listed.iter().map(|index| index.index.as_str()).collect();
    assert_eq!(
        names,
        ["items_tag_unused"],
        "primary key and unique indexes are never listed"
    );
    let unused = &listed[0];
    assert_eq!(unused.table, "items");
    assert!(unused.size_bytes > 0);
    assert!(
        unused
            .definition
            .starts_with("CREATE INDEX items_tag_unused ON"),
        "{}",
        unused.definition
    );
    let json = serde_json::to_value(unused).unwrap();
    assert_eq!(json["index"], "items_tag_unused");
}

#[tokio::test]
async fn tables_read_by_sequential_scans_are_listed() {
    let Some(db) = support::postgres("tables_read_by_sequential_scans").await else {
        return;
    };
    let pool = builder(&db).build().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE events (id int, kind text); \
         INSERT INTO events SELECT g, 'k' || (g % 3) FROM generate_series(1, 500) g; \
         CREATE TABLE tiny (id int); \
         INSERT INTO tiny VALUES (1); \
         SELECT count(*) FROM events WHERE kind = 'k1'; \
         SELECT count(*) FROM events WHERE kind = 'k2'; \
         SELECT count(*) FROM events WHERE kind = 'k0'; \
         SELECT count(*) FROM tiny",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    flush_stats(&mut conn).await;
    drop(conn);

    let deadline = Instant::now() + STATS_WAIT;
    let found = loop {
        let found: Vec<_> = diagnostics::sequential_scan_tables(&pool, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|table| table.schema == db.schema)
            .collect();
        if found
            .iter()
            .any(|table| table.table == "events" && table.seq_scan >= 3 && table.live_rows >= 500)
        {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the scans of events never showed: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        found.iter().all(|table| table.table != "tiny"),
        "tables below min_rows are left out: {found:?}"
    );
    let events = found.iter().find(|table| table.table == "events").unwrap();
    assert_eq!(events.idx_scan, 0);
    assert!(events.seq_tup_read >= 1500, "{events:?}");
}
