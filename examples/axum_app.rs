//! The reference app: an axum server composing every perfkit layer.
//!
//! Run with: `cargo run --example axum_app --all-features`
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PORT` | `3000` | port to listen on, on 127.0.0.1 |
//! | `REQUEST_TIMEOUT_MS` | `30000` | request deadline in milliseconds |
//! | `DATABASE_URL` | SQLite in memory | PostgreSQL (`postgres://…`) or SQLite (`sqlite:…`); the `users` and `user_progress` tables are created and seeded there on start when empty |
//! | `DATABASE_REPLICA_URLS` | unset | comma-separated PostgreSQL streaming replicas of `DATABASE_URL`: a `ReplicatedPool`; `GET /users` and `/users/keyset` read from a serving replica (the primary when none serves), `/health` checks every member (`database.primary`, `database.replica.N`, lag-aware) and `/health/pools` lists them |
//! | `DB_POOL_SIZE`, `DB_MAX_OVERFLOW`, `DB_POOL_TIMEOUT`, `DB_POOL_RECYCLE`, `DB_QUERY_TIMEOUT` | see `perfkit::pool` | PostgreSQL pool knobs |
//! | `REDIS_URL`, `REDIS_MAX_CONNECTIONS` | unset: no Redis | Redis handle; also the rate limiter's shared store and the cache's Redis tier |
//! | `REDIS_CLUSTER_URLS` | unset | comma-separated seed nodes of a Redis Cluster, used instead of `REDIS_URL`: the same handle, store and cache on the cluster |
//! | `RATE_LIMIT` | `100/minute` | requests per client, such as `10/second, 1000/hour` |
//! | `RATE_LIMIT_PER_MINUTE` | unset | a count per minute, used when `RATE_LIMIT` is unset |
//! | `TRUSTED_PROXIES` | empty | comma-separated CIDR ranges whose `X-Forwarded-For` names the client |
//! | `HEALTH_INTERVAL_SECS` | `60` | how often the health checks run in the background |
//! | `CACHE_PREFIX`, `CACHE_DEFAULT_TTL` | `perfkit`, `300` | cache namespace and default TTL in seconds; the cache is in memory without Redis, tiered (in-process L1, Redis L2 on the app's one handle) with it |
//! | `HEADER_READ_TIMEOUT_SECS` | `10` | seconds a connection may take to send a request head, and may sit idle between keep-alive requests (one timer in hyper); `0` disables |
//! | `WRITE_TIMEOUT_SECS` | `30` | seconds a response write may make no progress (the client stopped reading) before the connection is closed; `0` disables |
//! | `COMPRESSION_MIN_SIZE` | `1024` | bodies smaller than this many bytes are sent uncompressed |
//! | `COMPRESSION_LEVEL` | `6` | gzip and deflate level, 0–9 (brotli uses quality 5) |
//! | `USE_BROTLI` | `true` | offer brotli (preferred over gzip and deflate when the client accepts it) |
//! | `MAX_CONNECTIONS` | `512` | open connections at most; past it new ones wait in the listen backlog. Keep it below `ulimit -n` |
//! | `PAGINATION_SECRET` | random per process | key (at least 32 bytes) signing the cursors of `GET /users/keyset`; set it so cursors survive restarts and work across instances |
//! | `RUST_LOG` | `info` | log filter |
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /hello` | a short text body |
//! | `GET /slow?ms=N` | sleeps N milliseconds, then answers `{"slept_ms":N}`; a malformed `ms` gets `400` with a JSON body |
//! | `GET /big` | about 200 KB of JSON: varied user records; brotli or gzip for clients that accept it; from the response cache (60 s, tag `big`), `X-Cache: HIT` or `MISS` |
//! | `GET /stream?chunks=N&ms=M` | `N` NDJSON lines (default 5, at most 1000), `M` milliseconds apart (default 100, at most 10000), each flushed to the client, compressed, as it is written |
//! | `GET /metrics/timing` | per-route latency statistics as JSON |
//! | `GET /stats` | an aggregate over the `/big` records that takes at least 20 ms to compute, in the response cache 60 s under tag `stats`; `X-Cache: HIT` or `MISS`, `ETag`, `304` for `If-None-Match` |
//! | `POST /stats/invalidate` | invalidates tag `stats`: the next `GET /stats` computes anew |
//! | `GET /metrics/cache` | cache statistics: hits, misses, stale serves, errors, lookup latency |
//! | `GET /health` | health report from the background checks (database, Redis) |
//! | `GET /health/ready`, `/health/live`, `/health/pools` | readiness, liveness, pool statistics |
//! | `GET /users?page=&page_size=&is_active=` | a page of the 10 000 seeded users by id (`page_size` 20 by default, at most 100), its exact total, first/prev/next/last links in the body and a `Link` header; an invalid parameter gets `400` with a JSON body |
//! | `GET /users/with-progress?page=&page_size=` | a page of users by id, each with their `user_progress` rows (latest first), all read by one `perfkit::eager::load_many` query; no total, `next` link while more follow |
//! | `GET /users/with-progress-n1?page=&page_size=` | the same answer read with one progress query per user: the N+1 "before", kept for comparison |
//! | `GET /users/{id}/progress` | one user's progress through the request's `DataLoader` (`perfkit::eager::LoadersLayer`) |
//! | `POST /users/bulk` | a JSON array of users (at most 10 000) written by `perfkit::bulk::BulkInsert` in one transaction: `201` with `{"inserted":N}`, or `422` naming the refused row (`"row"`) and nothing written |
//! | `GET /users/keyset?after=&before=&limit=&sort=created_at\|-created_at` | a keyset page of users by `created_at` then `id`, with signed `next_cursor` / `prev_cursor` and a `Link` header; a changed or foreign cursor gets `400` with a JSON body |
//!
//! Every response carries `X-Process-Time` and `Server-Timing`; a request over its deadline
//! is answered `504` with a JSON body; requests slower than one second are logged. Bodies
//! of 1 KiB or more are compressed for clients that ask (`Accept-Encoding`), brotli first;
//! the small `429` and `504` bodies stay as they are.
//!
//! Each client (its address, or behind a trusted proxy the address the proxy names) gets
//! `RATE_LIMIT` requests: the rest are answered `429` with `Retry-After` and a JSON body, and
//! every limited response carries `X-RateLimit-*` and `RateLimit` headers. `GET /health*`
//! and `GET /metrics/...` are never limited. With `REDIS_URL`, the budgets live in Redis and
//! are shared by every instance of the app; while Redis fails, each instance decides in
//! memory.

use std::{collections::BTreeMap, error::Error, net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRequestParts, Query, State},
    http::{Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use perfkit::{
    cache::{
        Cache, CacheBuilder, CacheSnapshot, EntryOptions, RedisBackend, TieredBackend,
        http::ResponseCacheLayer,
    },
    compression::CompressionLayer,
    health::{CacheCheck, HealthMonitor, RateLimitCheck, RedisCheck, ReplicatedCheck, SqlCheck},
    pool::{
        PgPoolBuilder, RedisHandle, RedisPoolBuilder, ReplicatedPoolBuilder, SqlitePoolBuilder,
    },
    rate_limit::{ClientIp, PolicyFor, RateLimitLayer, RedisStore, RoutePolicy, TrustedProxies},
    timeout::TimeoutLayer,
    timing::{TimingLayer, TimingSnapshot, TimingStats},
};
use serde::{Deserialize, Serialize};

#[path = "axum_app/eager.rs"]
mod eager;
#[path = "axum_app/seed.rs"]
mod seed;
/// The test harness of the integration tests (services from `DATABASE_URL`, a schema per test).
#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "axum_app/users.rs"]
mod users;

/// What the app reads from the environment.
#[derive(Debug)]
pub(crate) struct Config {
    /// `PORT`.
    pub(crate) port: u16,
    /// `REQUEST_TIMEOUT_MS`.
    pub(crate) timeout: TimeoutLayer,
    /// `DATABASE_URL` and the `DB_*` pool knobs.
    pub(crate) database: Database,
    /// `REDIS_CLUSTER_URLS` or `REDIS_URL`, and `REDIS_MAX_CONNECTIONS`, when Redis is configured.
    pub(crate) redis: Option<RedisPoolBuilder>,
    /// `HEALTH_INTERVAL_SECS`.
    pub(crate) health_interval: Duration,
    /// `CACHE_PREFIX` and `CACHE_DEFAULT_TTL`; its backend becomes tiered on the app's Redis handle.
    pub(crate) cache: CacheBuilder,
    /// `RATE_LIMIT` (or `RATE_LIMIT_PER_MINUTE`) and `TRUSTED_PROXIES`; its store becomes
    /// Redis when `REDIS_URL` is set.
    pub(crate) rate_limit: RateLimitLayer<ClientIp>,
    /// `COMPRESSION_MIN_SIZE`, `COMPRESSION_LEVEL` and `USE_BROTLI`.
    pub(crate) compression: CompressionLayer,
    /// `PAGINATION_SECRET`, or a random key of this process.
    pub(crate) cursor_key: perfkit::paginate::CursorKey,
}

/// The database the app's pool connects to.
#[derive(Debug)]
pub(crate) enum Database {
    Postgres(PgPoolBuilder),
    /// PostgreSQL with streaming replicas (`DATABASE_REPLICA_URLS`).
    Replicated(ReplicatedPoolBuilder),
    Sqlite(SqlitePoolBuilder),
}

impl Config {
    /// Reads every variable; an unset one takes its default, a malformed one is an error.
    pub(crate) fn from_env() -> Result<Self, Box<dyn Error>> {
        let port = match std::env::var("PORT") {
            Ok(port) if !port.trim().is_empty() => port
                .trim()
                .parse()
                .map_err(|_| format!("PORT is set to {port:?}, which is not a port number"))?,
            _ => 3000,
        };
        let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
        let database = match std::env::var("DATABASE_URL") {
            Ok(url) if url.starts_with("postgres") && set("DATABASE_REPLICA_URLS") => {
                Database::Replicated(ReplicatedPoolBuilder::from_env()?)
            }
            Ok(url) if url.starts_with("postgres") => {
                Database::Postgres(PgPoolBuilder::from_env()?)
            }
            Ok(url) if !url.trim().is_empty() => Database::Sqlite(SqlitePoolBuilder::from_env()?),
            _ => Database::Sqlite(SqlitePoolBuilder::new("sqlite::memory:")),
        };
        let redis = if set("REDIS_CLUSTER_URLS") || set("REDIS_URL") {
            Some(RedisPoolBuilder::from_env()?)
        } else {
            None
        };
        let health_interval = match std::env::var("HEALTH_INTERVAL_SECS") {
            Ok(secs) if !secs.trim().is_empty() => Duration::from_secs(secs.trim().parse().map_err(|_| {
                format!("HEALTH_INTERVAL_SECS is set to {secs:?}, which is not a whole number of seconds")
            })?),
            _ => Duration::from_secs(60),
        };
        Ok(Self {
            port,
            timeout: TimeoutLayer::from_env()?,
            database,
            redis,
            health_interval,
            cache: CacheBuilder::from_env()?,
            rate_limit: RateLimitLayer::from_env()?,
            compression: CompressionLayer::from_env()?,
            cursor_key: perfkit::paginate::CursorKey::from_env()?,
        })
    }

    /// The embedded default: SQLite in memory, no Redis, and the given request deadline.
    #[allow(dead_code)]
    pub(crate) fn embedded(timeout: Duration) -> Self {
        Self {
            port: 0,
            timeout: TimeoutLayer::new(timeout),
            database: Database::Sqlite(SqlitePoolBuilder::new("sqlite::memory:")),
            redis: None,
            health_interval: Duration::from_secs(60),
            cache: CacheBuilder::new(),
            rate_limit: RateLimitLayer::new(
                perfkit::rate_limit::DEFAULT_RATE_LIMIT
                    .parse::<perfkit::rate_limit::Policy>()
                    .expect("the default rate limit parses"),
            )
            .key(ClientIp::new(TrustedProxies::none())),
            compression: CompressionLayer::new(),
            cursor_key: perfkit::paginate::CursorKey::random(),
        }
    }
}

/// The routes the rate limiter leaves alone: health checks and metrics, which monitoring
/// polls and which must answer even when a client is over its quota.
#[derive(Clone, Copy, Debug)]
struct ExemptOps;

impl<B> PolicyFor<B> for ExemptOps {
    fn policy_for(&self, request: &Request<B>) -> RoutePolicy {
        let path = request.uri().path();
        let ops =
            path == "/health" || path.starts_with("/health/") || path.starts_with("/metrics/");
        if request.method() == Method::GET && ops {
            RoutePolicy::Exempt
        } else {
            RoutePolicy::Default
        }
    }
}

#[derive(Clone)]
struct AppState {
    timing: TimingStats,
    big: Bytes,
    cache: Cache,
}

/// The router with every layer applied, as served by `main`: builds the pools, seeds the
/// database, runs the health checks once, and starts them in the background.
pub(crate) async fn app(config: Config) -> Result<Router, Box<dyn Error>> {
    let mut health = HealthMonitor::builder().interval(config.health_interval);
    let mut replicas = None;
    let (db, seeding) = match config.database {
        Database::Postgres(builder) => {
            let pool = builder.application_name("perfkit-axum-app").build().await?;
            let seeding = seed::postgres(&pool).await?;
            let stats = pool.clone();
            health = health
                .check(SqlCheck::from(&pool))
                .pools("database", move || stats.stats());
            (users::Db::Postgres(pool), seeding)
        }
        Database::Replicated(builder) => {
            let pool = builder
                .members(|member| member.application_name("perfkit-axum-app"))
                .build()
                .await?;
            let primary = pool.primary().clone();
            let seeding = seed::postgres(&primary).await?;
            let stats = primary.clone();
            // `database` stays the primary's check and pool, as without replicas; every
            // member also reports as `database.primary` and `database.replica.N`.
            health = health
                .check(SqlCheck::from(&primary))
                .pools("database", move || stats.stats());
            health = ReplicatedCheck::new(&pool).add_to(health);
            replicas = Some(pool);
            (users::Db::Postgres(primary), seeding)
        }
        Database::Sqlite(builder) => {
            let pool = builder.build().await?;
            let seeding = seed::sqlite(&pool).await?;
            let stats = pool.clone();
            health = health
                .check(SqlCheck::from(&pool))
                .pools("database", move || stats.stats());
            (users::Db::Sqlite(pool), seeding)
        }
    };
    tracing::info!(ms = seeding.as_millis() as u64, "database seeded");
    let queries = eager::routes(db.clone());
    let mut users = users::Users::new(db, config.cursor_key)?;
    if let Some(pool) = replicas {
        // `GET /users` and `GET /users/keyset` read from a serving replica.
        users = users.reading_from(pool);
    }
    let mut rate_limit = config.rate_limit;
    let mut cache = config.cache;
    if let Some(builder) = config.redis {
        let redis: RedisHandle = builder.build().await?;
        // One handle for every module: the cache's Redis tier shares the connection, and
        // its invalidation subscription goes to the same server (or cluster).
        cache = cache.backend(TieredBackend::with_l2(RedisBackend::new(redis.clone())).build());
        // Decisions in Redis, shared by every instance; in memory while Redis fails.
        let store = RedisStore::new(redis.clone());
        health = health.check(RateLimitCheck::from(&store));
        rate_limit = rate_limit.store(store);
        health = health
            .check(RedisCheck::from(&redis))
            .pools("redis", move || redis.stats());
    }
    let cache = cache.build()?;
    let health = health
        .check(CacheCheck::from(&cache).non_critical())
        .build();
    health.start().await;

    let timing = TimingLayer::new().server_timing(true);
    Ok(routes(timing.stats(), cache)
        .merge(users::routes(users))
        .merge(queries)
        .nest_service("/health", health.service())
        .layer(rate_limit.per_route(ExemptOps))
        .layer(config.timeout)
        // Outside the timeout and the rate limiter: it sees their 504s and 429s, whose
        // small bodies it leaves as they are, and compresses everything else once.
        .layer(config.compression)
        // Added last, so it runs first: 504s and 429s are timed and logged too, and the
        // time includes compressing.
        .layer(timing))
}

/// The same routes without any perfkit layer: the "before" of `examples/showcase.rs`.
#[allow(dead_code)]
pub(crate) fn bare_app() -> Router {
    let cache = Cache::builder().build().expect("the default cache builds");
    routes(TimingStats::new(), cache)
}

fn routes(timing: TimingStats, cache: Cache) -> Router {
    let state = AppState {
        timing,
        big: big_json(),
        cache: cache.clone(),
    };
    Router::new()
        .route("/hello", get(hello))
        .route("/slow", get(slow))
        .route("/big", get(big).layer(big_cache(&cache)))
        .route("/stream", get(stream))
        .route("/metrics/timing", get(metrics_timing))
        .route("/stats", get(stats).layer(stats_cache(&cache)))
        .route("/stats/invalidate", post(invalidate_stats))
        .route("/metrics/cache", get(metrics_cache))
        .with_state(state)
}

async fn hello() -> &'static str {
    "Hello from perfkit!"
}

#[derive(Deserialize)]
struct SlowParams {
    #[serde(default)]
    ms: u64,
}

#[derive(Serialize)]
struct Slept {
    slept_ms: u64,
}

/// [`Query`] whose rejection (`/slow?ms=abc`) is a `400` with the same JSON body as every
/// other refusal of the app (`{"error":"invalid_query","message":...}`), rather than
/// axum's plain-text one.
///
/// The pattern serves any extractor: wrap it, call it, and map its rejection to the JSON
/// body with the rejection's own status and text.
struct JsonQuery<T>(T);

impl<S, T> FromRequestParts<S> for JsonQuery<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => Err((
                rejection.status(),
                Json(serde_json::json!({
                    "error": "invalid_query",
                    "message": rejection.body_text(),
                })),
            )
                .into_response()),
        }
    }
}

async fn slow(JsonQuery(params): JsonQuery<SlowParams>) -> Json<Slept> {
    tokio::time::sleep(Duration::from_millis(params.ms)).await;
    Json(Slept {
        slept_ms: params.ms,
    })
}

/// How long `GET /big` is served from the cache, under tag `big`.
const BIG_TTL: Duration = Duration::from_secs(60);
const BIG_TAG: &str = "big";

/// `GET /big` from the response cache: the body is built once a minute, and the
/// compression layer outside encodes what the cache serves.
fn big_cache(cache: &Cache) -> ResponseCacheLayer {
    ResponseCacheLayer::new(cache.clone()).options(EntryOptions::new().ttl(BIG_TTL).tag(BIG_TAG))
}

async fn big(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.big)
}

#[derive(Deserialize)]
struct StreamParams {
    #[serde(default = "StreamParams::default_chunks")]
    chunks: u32,
    #[serde(default = "StreamParams::default_ms")]
    ms: u64,
}

impl StreamParams {
    const MAX_CHUNKS: u32 = 1000;
    const MAX_MS: u64 = 10_000;

    fn default_chunks() -> u32 {
        5
    }

    fn default_ms() -> u64 {
        100
    }
}

/// `GET /stream`: `chunks` NDJSON lines, `ms` milliseconds apart. The compression layer
/// flushes each line as it comes, so a client sees every line before the body ends.
async fn stream(JsonQuery(params): JsonQuery<StreamParams>) -> Response {
    if params.chunks > StreamParams::MAX_CHUNKS || params.ms > StreamParams::MAX_MS {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "error": "invalid_query",
                "message": format!(
                    "chunks must be at most {} and ms at most {}",
                    StreamParams::MAX_CHUNKS,
                    StreamParams::MAX_MS
                ),
            })),
        )
            .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for line in 0..params.chunks {
            if line > 0 {
                tokio::time::sleep(Duration::from_millis(params.ms)).await;
            }
            let text = format!(
                "{{\"line\":{line},\"of\":{},\"text\":\"each line is flushed to the client as it is written\"}}\n",
                params.chunks
            );
            if tx.send(Bytes::from(text)).await.is_err() {
                return;
            }
        }
    });
    let body = axum::body::Body::new(Lines(rx));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// The body of `GET /stream`: each line as one frame, as the writing task sends it.
struct Lines(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(http_body::Frame::data(line))))
    }
}

async fn metrics_timing(State(state): State<AppState>) -> Json<TimingSnapshot> {
    Json(state.timing.snapshot())
}

async fn metrics_cache(State(state): State<AppState>) -> Json<CacheSnapshot> {
    Json(state.cache.stats())
}

/// The tag of `GET /stats`'s cache entry.
const STATS_TAG: &str = "stats";
/// How long `GET /stats` is served from the cache.
const STATS_TTL: Duration = Duration::from_secs(60);
/// The least time computing `GET /stats` takes: it stands in for a slow report query.
const STATS_MIN_COMPUTE: Duration = Duration::from_millis(20);

/// `GET /stats`: an aggregate over the `/big` records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserStats {
    users: u64,
    active: u64,
    mean_age: f64,
    total_balance_cents: i64,
    by_country: BTreeMap<String, u64>,
}

/// `GET /stats` in the response cache: 60 s, tag `stats`. A request finds it there
/// (`X-Cache: HIT`), or computes it once, however many requests arrive together
/// (`X-Cache: MISS`, both for the request that computed and for those that waited for it:
/// neither was served from the cache). The layer keeps its entries in the app's [`Cache`],
/// so the labels agree with `GET /metrics/cache`'s `hits` and `misses`.
fn stats_cache(cache: &Cache) -> ResponseCacheLayer {
    ResponseCacheLayer::new(cache.clone())
        .options(EntryOptions::new().ttl(STATS_TTL).tag(STATS_TAG))
}

/// The aggregate, computed anew: the response cache in front decides when.
async fn stats(State(state): State<AppState>) -> Response {
    match compute_stats(&state.big).await {
        Ok(stats) => Json(stats).into_response(),
        Err(error) => {
            tracing::error!(%error, "GET /stats could not be computed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({
                    "error": "stats_failed",
                    "message": "the statistics could not be computed",
                })),
            )
                .into_response()
        }
    }
}

/// Reads the `/big` records back and aggregates them; never returns in under
/// [`STATS_MIN_COMPUTE`].
async fn compute_stats(big: &[u8]) -> Result<UserStats, serde_json::Error> {
    #[derive(Deserialize)]
    struct Row {
        age: u8,
        balance_cents: i64,
        active: bool,
        country: String,
    }
    let done_at = tokio::time::Instant::now() + STATS_MIN_COMPUTE;
    let rows: Vec<Row> = serde_json::from_slice(big)?;
    let mut by_country = BTreeMap::new();
    for row in &rows {
        *by_country.entry(row.country.clone()).or_insert(0) += 1;
    }
    let users = rows.len() as u64;
    let stats = UserStats {
        users,
        active: rows.iter().filter(|row| row.active).count() as u64,
        mean_age: rows.iter().map(|row| f64::from(row.age)).sum::<f64>() / users.max(1) as f64,
        total_balance_cents: rows.iter().map(|row| row.balance_cents).sum(),
        by_country,
    };
    tokio::time::sleep_until(done_at).await;
    Ok(stats)
}

/// `POST /stats/invalidate`: one write, whatever the number of entries tagged `stats`.
async fn invalidate_stats(State(state): State<AppState>) -> Response {
    match state.cache.invalidate_tags(&[STATS_TAG]).await {
        Ok(()) => Json(serde_json::json!({ "invalidated": [STATS_TAG] })).into_response(),
        Err(error) => {
            tracing::warn!(%error, "the cache could not invalidate tag stats");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "error": "cache_unavailable",
                    "message": "the cache could not be reached; the tag was not invalidated",
                })),
            )
                .into_response()
        }
    }
}

/// One user record of the `/big` payload.
#[derive(Serialize)]
struct Record {
    id: u64,
    username: String,
    email: String,
    full_name: String,
    city: &'static str,
    country: &'static str,
    age: u8,
    balance_cents: i64,
    active: bool,
    roles: Vec<&'static str>,
    signup_date: String,
    last_login_ip: String,
    bio: String,
}

/// About 200 KB of JSON built from deterministic but varied records.
fn big_json() -> Bytes {
    const TARGET_BYTES: usize = 200 * 1024;
    const FIRST: [&str; 12] = [
        "Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Gustav", "Hana", "Ines", "Jonas",
        "Keiko", "Luis",
    ];
    const LAST: [&str; 12] = [
        "Okafor",
        "Lindqvist",
        "Moreau",
        "Tanaka",
        "Kowalski",
        "Haddad",
        "Silva",
        "Nguyen",
        "Fischer",
        "Rossi",
        "Petrov",
        "Garcia",
    ];
    const PLACES: [(&str, &str); 10] = [
        ("Lisbon", "PT"),
        ("Osaka", "JP"),
        ("Nairobi", "KE"),
        ("Toronto", "CA"),
        ("Kraków", "PL"),
        ("Valparaíso", "CL"),
        ("Tallinn", "EE"),
        ("Chennai", "IN"),
        ("Leeds", "GB"),
        ("Austin", "US"),
    ];
    const ROLES: [&str; 6] = ["admin", "editor", "viewer", "billing", "support", "api"];
    const WORDS: [&str; 24] = [
        "builds",
        "distributed",
        "systems",
        "and",
        "enjoys",
        "climbing",
        "coffee",
        "writes",
        "about",
        "latency",
        "caching",
        "databases",
        "runs",
        "marathons",
        "teaches",
        "rust",
        "plays",
        "chess",
        "gardens",
        "on",
        "weekends",
        "loves",
        "open",
        "source",
    ];

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(TARGET_BYTES + 1024);
    out.push(b'[');
    let mut id = 0;
    while out.len() < TARGET_BYTES {
        id += 1;
        let first = FIRST[rng.below(FIRST.len())];
        let last = LAST[rng.below(LAST.len())];
        let (city, country) = PLACES[rng.below(PLACES.len())];
        let roles = (0..1 + rng.below(3))
            .map(|_| ROLES[rng.below(ROLES.len())])
            .collect();
        let bio = (0..8 + rng.below(16))
            .map(|_| WORDS[rng.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ");
        let record = Record {
            id,
            username: format!(
                "{}{}{}",
                first.to_lowercase(),
                last.to_lowercase(),
                rng.below(1000)
            ),
            email: format!(
                "{}.{}@example.{}",
                first.to_lowercase(),
                last.to_lowercase(),
                country.to_lowercase()
            ),
            full_name: format!("{first} {last}"),
            city,
            country,
            age: 18 + rng.below(60) as u8,
            balance_cents: rng.below(10_000_000) as i64 - 2_000_000,
            active: rng.below(10) < 8,
            roles,
            signup_date: format!(
                "20{:02}-{:02}-{:02}",
                15 + rng.below(11),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
            last_login_ip: format!(
                "{}.{}.{}.{}",
                1 + rng.below(223),
                rng.below(256),
                rng.below(256),
                1 + rng.below(254)
            ),
            bio,
        };
        if id > 1 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &record).expect("records serialize");
    }
    out.push(b']');
    Bytes::from(out)
}

/// A small deterministic generator, so `/big` is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let config = Config::from_env()?;
    // HEADER_READ_TIMEOUT_SECS, WRITE_TIMEOUT_SECS, MAX_CONNECTIONS.
    let server = perfkit::serve::Server::from_env()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let timeout_ms = config.timeout.timeout().as_millis() as u64;
    let app = app(config).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, timeout_ms, ?server, "perfkit reference app listening");
    // Each request carries its peer address, which keys the rate limiter.
    server
        .serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    /// Time was paused after start-up, so timers land on the next millisecond tick.
    fn assert_ms_between(headers: &http::HeaderMap, low: f64, high: f64) {
        let value = headers["x-process-time"].to_str().unwrap();
        let ms: f64 = value.strip_suffix("ms").unwrap().parse().unwrap();
        assert!((low..=high).contains(&ms), "X-Process-Time: {value}");
    }

    /// The app on the embedded default. Tests that pause time do so after this returns:
    /// the pool's first connection and the first health round are real I/O.
    async fn embedded(timeout: Duration) -> Router {
        app(Config::embedded(timeout)).await.unwrap()
    }

    async fn get(app: &Router, uri: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
        get_from(app, uri, PEER, &[]).await
    }

    /// The client address of [`get`], as `serve` with connect info hands it to the app.
    const PEER: &str = "192.0.2.10:50000";

    /// A GET from the client at `peer`, with extra headers.
    async fn get_from(
        app: &Router,
        uri: &str,
        peer: &str,
        headers: &[(&str, &str)],
    ) -> (http::StatusCode, http::HeaderMap, Bytes) {
        let mut request = http::Request::get(uri).body(Body::empty()).unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(
            peer.parse::<SocketAddr>().unwrap(),
        ));
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn routes_answer_and_carry_timing_headers() {
        let app = embedded(Duration::from_secs(30)).await;
        tokio::time::pause();

        let (status, headers, body) = get(&app, "/hello").await;
        assert_eq!(status, 200);
        assert_eq!(body, "Hello from perfkit!");
        assert!(headers["x-process-time"].to_str().unwrap().ends_with("ms"));
        assert!(
            headers["server-timing"]
                .to_str()
                .unwrap()
                .starts_with("app;dur=")
        );

        let (status, headers, body) = get(&app, "/slow?ms=250").await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"slept_ms":250}"#);
        assert_ms_between(&headers, 250.0, 251.0);
    }

    #[tokio::test]
    async fn a_malformed_query_gets_400_with_a_json_body() {
        let app = embedded(Duration::from_secs(30)).await;
        let (status, headers, body) = get(&app, "/slow?ms=abc").await;
        assert_eq!(status, 400);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "invalid_query");
        assert!(
            body["message"].as_str().unwrap().contains("ms"),
            "the message names the field: {body}"
        );
    }

    #[tokio::test]
    async fn slow_requests_past_the_deadline_get_504() {
        let app = embedded(Duration::from_millis(1500)).await;
        tokio::time::pause();
        let (status, headers, body) = get(&app, "/slow?ms=5000").await;
        assert_eq!(status, 504);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body,
            r#"{"error":"request_timeout","message":"Request exceeded 1.5s timeout"}"#
        );
        assert_ms_between(&headers, 1500.0, 1501.0);
    }

    #[tokio::test]
    async fn big_is_about_200_kb_of_varied_json() {
        let app = embedded(Duration::from_secs(30)).await;
        let (status, headers, body) = get(&app, "/big").await;
        assert_eq!(status, 200);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(
            (190_000..230_000).contains(&body.len()),
            "{} bytes",
            body.len()
        );

        let records: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        let distinct = |field: &str| {
            records
                .iter()
                .map(|r| r[field].to_string())
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert!(records.len() > 400);
        assert!(distinct("email") > 100);
        assert!(distinct("bio") > records.len() / 2);
        assert_eq!(distinct("id"), records.len());
    }

    /// Decodes a body in the coding its response names.
    fn decoded(headers: &http::HeaderMap, body: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        match headers
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap())
        {
            None => out.extend_from_slice(body),
            Some("br") => {
                brotli::Decompressor::new(body, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some("gzip") => {
                flate2::read::GzDecoder::new(body)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some(other) => panic!("unexpected coding {other}"),
        }
        out
    }

    #[tokio::test]
    async fn big_is_compressed_for_clients_that_ask_and_hello_is_not() {
        let app = embedded(Duration::from_secs(30)).await;
        let (_, _, identity) = get(&app, "/big").await;
        for (accept, coding) in [("gzip, deflate, br", "br"), ("br;q=0, gzip", "gzip")] {
            let (status, headers, body) =
                get_from(&app, "/big", PEER, &[("accept-encoding", accept)]).await;
            assert_eq!(status, 200);
            assert_eq!(headers[header::CONTENT_ENCODING], coding, "{accept}");
            assert_eq!(headers[header::VARY], "accept-encoding");
            assert_eq!(
                headers[header::CONTENT_LENGTH],
                body.len().to_string().as_str()
            );
            assert!(
                body.len() * 4 < identity.len(),
                "{coding}: {} bytes",
                body.len()
            );
            assert_eq!(decoded(&headers, &body), identity);
        }
        let (_, headers, body) =
            get_from(&app, "/hello", PEER, &[("accept-encoding", "gzip, br")]).await;
        assert!(!headers.contains_key(header::CONTENT_ENCODING));
        assert_eq!(body, "Hello from perfkit!");
    }

    #[tokio::test]
    async fn timeout_bodies_stay_small_and_uncompressed() {
        let app = embedded(Duration::from_millis(100)).await;
        tokio::time::pause();
        let (status, headers, body) =
            get_from(&app, "/slow?ms=500", PEER, &[("accept-encoding", "br")]).await;
        assert_eq!(status, 504);
        assert!(!headers.contains_key(header::CONTENT_ENCODING));
        assert_eq!(
            body,
            r#"{"error":"request_timeout","message":"Request exceeded 0.1s timeout"}"#
        );
    }

    #[tokio::test]
    async fn stream_sends_each_line_compressed_before_the_next_is_written() {
        let app = embedded(Duration::from_secs(30)).await;
        tokio::time::pause();
        let mut request = http::Request::get("/stream?chunks=3&ms=1000")
            .header("accept-encoding", "gzip")
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(axum::extract::ConnectInfo(
            PEER.parse::<SocketAddr>().unwrap(),
        ));
        let started = tokio::time::Instant::now();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-ndjson"
        );
        let mut body = response.into_body();
        let mut decoder = flate2::Decompress::new_gzip(15);
        let mut lines = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            let mut out = Vec::with_capacity(4096);
            decoder
                .decompress_vec(&data, &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            for line in String::from_utf8(out).unwrap().lines() {
                let line: serde_json::Value = serde_json::from_str(line).unwrap();
                // Line n arrives n seconds in: as it is written, not when the body ends.
                assert_eq!(started.elapsed().as_secs(), line["line"].as_u64().unwrap());
                lines.push(line);
            }
        }
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["of"], 3);

        let (status, _, body) = get(&app, "/stream?chunks=100000").await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("at most 1000"));
    }

    #[tokio::test]
    async fn metrics_report_route_templates() {
        let app = embedded(Duration::from_secs(30)).await;
        tokio::time::pause();
        for ms in [10, 20, 30] {
            get(&app, &format!("/slow?ms={ms}")).await;
        }
        get(&app, "/hello").await;
        get(&app, "/no/such/page").await;

        let (status, _, body) = get(&app, "/metrics/timing").await;
        assert_eq!(status, 200);
        let snapshot: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let route = |name: &str| {
            snapshot["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["route"] == name)
                .cloned()
        };
        assert_eq!(route("/slow").unwrap()["count"], 3);
        assert_eq!(route("/hello").unwrap()["count"], 1);
        assert!(
            route("/no/such/page").is_none(),
            "raw paths never become labels"
        );
    }

    #[tokio::test]
    async fn health_reports_the_database_and_its_pool() {
        let app = embedded(Duration::from_secs(30)).await;

        let (status, headers, body) = get(&app, "/health").await;
        assert_eq!(status, 200);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(report["status"], "healthy", "{report}");
        assert_eq!(
            report["checks"]["database"]["status"], "healthy",
            "{report}"
        );

        let (status, _, _) = get(&app, "/health/ready").await;
        assert_eq!(status, 200);
        let (status, _, _) = get(&app, "/health/live").await;
        assert_eq!(status, 200);

        let (status, _, body) = get(&app, "/health/pools").await;
        assert_eq!(status, 200);
        let pools: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            pools["database"]["max"], 1,
            "in-memory SQLite keeps one connection"
        );
    }

    async fn post(app: &Router, uri: &str) -> (http::StatusCode, Bytes) {
        let response = app
            .clone()
            .oneshot(http::Request::post(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn stats_are_cached_until_their_tag_is_invalidated() {
        let app = embedded(Duration::from_secs(30)).await;
        tokio::time::pause();

        let (status, headers, first) = get(&app, "/stats").await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-cache"], "MISS");
        assert_ms_between(&headers, 20.0, 21.0);
        let stats: UserStats = serde_json::from_slice(&first).unwrap();
        assert!(stats.users > 400, "{stats:?}");
        assert_eq!(stats.by_country.values().sum::<u64>(), stats.users);

        let (status, headers, again) = get(&app, "/stats").await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-cache"], "HIT");
        assert_ms_between(&headers, 0.0, 1.0);
        assert_eq!(again, first);

        let (status, body) = post(&app, "/stats/invalidate").await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"invalidated":["stats"]}"#);
        let (_, headers, recomputed) = get(&app, "/stats").await;
        assert_eq!(headers["x-cache"], "MISS");
        assert_eq!(recomputed, first);

        tokio::time::advance(STATS_TTL).await;
        let (_, headers, _) = get(&app, "/stats").await;
        assert_eq!(headers["x-cache"], "MISS", "expired after 60 s");

        let (_, _, body) = get(&app, "/metrics/cache").await;
        let metrics: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(metrics["hits"], 1, "{metrics}");
        assert_eq!(metrics["computations"], 3, "{metrics}");
    }

    #[tokio::test]
    async fn concurrent_stats_requests_compute_once() {
        let app = embedded(Duration::from_secs(30)).await;
        tokio::time::pause();
        let requests = (0..20).map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, "/stats").await.1 })
        });
        let (mut hits, mut misses) = (0, 0);
        for request in requests.collect::<Vec<_>>() {
            let headers = request.await.unwrap();
            match headers["x-cache"].to_str().unwrap() {
                "HIT" => hits += 1,
                "MISS" => misses += 1,
                other => panic!("X-Cache: {other}"),
            }
        }
        assert_eq!(
            misses, 20,
            "none was served from the cache: one computed, the others waited for it"
        );
        let (_, _, body) = get(&app, "/metrics/cache").await;
        let metrics: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(metrics["computations"], 1, "{metrics}");
        assert_eq!(metrics["hits"], hits, "the labels agree with the counters");
        assert_eq!(metrics["misses"], misses, "{metrics}");

        let (_, headers, _) = get(&app, "/stats").await;
        assert_eq!(headers["x-cache"], "HIT");
    }

    #[tokio::test]
    async fn stats_revalidate_with_their_etag_and_big_is_served_from_the_cache() {
        let app = embedded(Duration::from_secs(30)).await;
        tokio::time::pause();
        let (_, headers, _) = get(&app, "/stats").await;
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        let (status, headers, body) =
            get_from(&app, "/stats", PEER, &[("if-none-match", &etag)]).await;
        assert_eq!(status, 304);
        assert_eq!(headers["x-cache"], "HIT");
        assert!(body.is_empty());

        let (_, headers, identity) = get(&app, "/big").await;
        assert_eq!(headers["x-cache"], "MISS");
        let (_, headers, again) = get(&app, "/big").await;
        assert_eq!(headers["x-cache"], "HIT");
        assert_eq!(again, identity);
        let (_, headers, _) = get_from(&app, "/big", PEER, &[("accept-encoding", "br")]).await;
        assert_eq!(headers["x-cache"], "HIT");
        assert_eq!(headers[header::CONTENT_ENCODING], "br");
        let (status, _) = post(&app, "/stats/invalidate").await;
        assert_eq!(status, 200);
        let (_, headers, _) = get(&app, "/big").await;
        assert_eq!(headers["x-cache"], "HIT", "tag stats leaves tag big alone");
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = embedded(Duration::from_secs(5)).await;
        let server = tokio::spawn(perfkit::serve(listener, app).into_future());

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        server.abort();

        assert!(raw.starts_with("HTTP/1.1 200 OK"), "{raw}");
        assert!(
            raw.to_ascii_lowercase().contains("x-process-time: "),
            "{raw}"
        );
        assert!(raw.ends_with("Hello from perfkit!"), "{raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("x-ratelimit-remaining: 99"),
            "the peer address keys the client: {raw}"
        );
    }

    #[tokio::test]
    async fn slowloris_connections_are_culled_and_hello_stays_reachable() {
        use perfkit::serve::Server;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = Server::new()
            .header_read_timeout(Duration::from_millis(300))
            .max_connections(4)
            .serve(listener, embedded(Duration::from_secs(5)).await);
        let handle = serve.handle();
        let server = tokio::spawn(serve.into_future());

        // More half-sent requests than the server takes connections.
        let mut slow = Vec::new();
        for _ in 0..8 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
            slow.push(stream);
        }
        let started = std::time::Instant::now();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
            .await
            .expect("answered once the header-read timeout culled the slow ones")
            .unwrap();
        assert!(raw.starts_with("HTTP/1.1 200 OK"), "{raw}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(handle.open_connections() <= 4);

        // Every half-sent request was closed by the server.
        for mut stream in slow {
            let mut rest = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest));
            assert!(closed.await.is_ok(), "still open");
        }
        server.abort();
    }

    /// The embedded app with the rate limit `limit` and the trusted proxies `trusted`.
    async fn limited(limit: &str, trusted: &str) -> Router {
        let mut config = Config::embedded(Duration::from_secs(30));
        config.rate_limit = config
            .rate_limit
            .default_policy(limit.parse::<perfkit::rate_limit::Policy>().unwrap())
            .key(ClientIp::new(trusted.parse().unwrap()));
        app(config).await.unwrap()
    }

    #[tokio::test]
    async fn clients_over_the_quota_get_429_with_headers_and_json() {
        let app = limited("3/minute", "").await;
        for remaining in ["2", "1", "0"] {
            let (status, headers, _) = get(&app, "/hello").await;
            assert_eq!(status, 200);
            assert_eq!(headers["x-ratelimit-limit"], "3");
            assert_eq!(headers["x-ratelimit-remaining"], remaining);
            assert_eq!(headers["ratelimit-policy"], r#""q3w60";q=3;w=60"#);
        }
        let (status, headers, body) = get(&app, "/hello").await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "20");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        assert!(headers.contains_key("x-process-time"), "429s are timed too");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["retry_after"], 20);

        // Another client has a budget of its own.
        let (status, _, _) = get_from(&app, "/hello", "192.0.2.11:1", &[]).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn health_and_metrics_are_never_limited() {
        let app = limited("1/minute", "").await;
        get(&app, "/hello").await;
        let (status, _, _) = get(&app, "/hello").await;
        assert_eq!(status, 429);
        for uri in [
            "/health",
            "/health/ready",
            "/health/live",
            "/metrics/timing",
        ] {
            for _ in 0..3 {
                let (status, headers, _) = get(&app, uri).await;
                assert_eq!(status, 200, "{uri}");
                assert!(!headers.contains_key("x-ratelimit-limit"), "{uri}");
            }
        }
    }

    #[tokio::test]
    async fn forwarded_clients_count_only_behind_trusted_proxies() {
        let app = limited("1/minute", "10.0.0.0/8").await;
        // Through the trusted proxy, each forwarded client has its own budget.
        for client in ["203.0.113.1", "203.0.113.2"] {
            let headers = [("x-forwarded-for", client)];
            let (status, _, _) = get_from(&app, "/hello", "10.0.0.5:1", &headers).await;
            assert_eq!(status, 200, "{client}");
        }
        // A client talking directly cannot pick its key with a forged header.
        let (status, _, _) = get_from(
            &app,
            "/hello",
            "198.51.100.9:1",
            &[("x-forwarded-for", "1.1.1.1")],
        )
        .await;
        assert_eq!(status, 200);
        let (status, _, _) = get_from(
            &app,
            "/hello",
            "198.51.100.9:1",
            &[("x-forwarded-for", "2.2.2.2")],
        )
        .await;
        assert_eq!(status, 429);
    }

    // ===== Pagination =====

    use super::support;

    /// `config` with a rate limit no walk through every page reaches.
    fn unlimited(mut config: Config) -> Config {
        config.rate_limit = config.rate_limit.default_policy(
            "1000000/minute"
                .parse::<perfkit::rate_limit::Policy>()
                .unwrap(),
        );
        config
    }

    async fn get_json(
        app: &Router,
        uri: &str,
    ) -> (http::StatusCode, http::HeaderMap, serde_json::Value) {
        let (status, headers, body) = get(app, uri).await;
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{uri}: {e}: {}", String::from_utf8_lossy(&body)));
        (status, headers, json)
    }

    fn ids(page: &serde_json::Value) -> Vec<i64> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_i64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn seeding_fills_both_tables_once_with_duplicate_instants() {
        let pool = SqlitePoolBuilder::new("sqlite::memory:")
            .build()
            .await
            .unwrap();
        seed::sqlite(&pool).await.unwrap();
        seed::sqlite(&pool).await.unwrap();
        let count = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&*pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            count("SELECT COUNT(*) FROM users").await,
            seed::USERS,
            "seeded once"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM user_progress").await,
            seed::PROGRESS
        );
        let instants = count("SELECT COUNT(DISTINCT created_at) FROM users").await;
        assert!(
            instants < seed::USERS / 2,
            "{instants} distinct created_at: duplicates on purpose"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM (SELECT user_id FROM user_progress GROUP BY user_id HAVING COUNT(*) = 10) AS t").await,
            seed::USERS,
            "every user has ten progress rows"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM users WHERE is_active").await,
            8_000
        );
        let index: i64 =
            count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'user_progress_user_id'").await;
        assert_eq!(index, 1);
    }

    /// What `GET /users` and `GET /users/keyset` must do on any database.
    async fn users_routes_page_every_user_once(app: &Router, name: &str) {
        let (status, headers, page) =
            get_json(app, "/users?page=2&page_size=50&is_active=true").await;
        assert_eq!(status, 200, "{name}: {page}");
        assert_eq!(
            (page["total"].as_u64(), page["total_pages"].as_u64()),
            (Some(8_000), Some(160)),
            "{name}"
        );
        assert_eq!(ids(&page).len(), 50);
        assert!(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["is_active"] == true)
        );
        assert!(ids(&page).windows(2).all(|w| w[0] < w[1]));
        let link = headers[header::LINK].to_str().unwrap();
        assert!(
            link.contains("</users?is_active=true&page=3&page_size=50>; rel=\"next\""),
            "{link}"
        );
        assert!(
            link.contains("</users?is_active=true&page=160&page_size=50>; rel=\"last\""),
            "{link}"
        );
        assert_eq!(
            page["links"]["prev"],
            "/users?is_active=true&page=1&page_size=50"
        );

        // Every page by offset: each user once, in id order.
        let mut seen = Vec::new();
        let mut next = Some("/users?page_size=100".to_owned());
        while let Some(uri) = next {
            let (status, _, page) = get_json(app, &uri).await;
            assert_eq!(status, 200, "{name} {uri}");
            seen.extend(ids(&page));
            next = page["links"]["next"].as_str().map(str::to_owned);
        }
        assert_eq!(seen, (1..=10_000).collect::<Vec<_>>(), "{name}");
        let (_, _, past) = get_json(app, "/users?page=101&page_size=100").await;
        assert_eq!(
            (
                ids(&past).len(),
                past["total"].as_u64(),
                past["has_next"].as_bool()
            ),
            (0, Some(10_000), Some(false))
        );

        // Every keyset page, newest first, then back again.
        let mut forward: Vec<Vec<i64>> = Vec::new();
        let mut last_page = serde_json::Value::Null;
        let mut previous_instant = String::from("~");
        let mut next = Some("/users/keyset?limit=100&sort=-created_at".to_owned());
        while let Some(uri) = next {
            let (status, headers, page) = get_json(app, &uri).await;
            assert_eq!(status, 200, "{name} {uri}: {page}");
            for user in page["items"].as_array().unwrap() {
                let instant = user["created_at"].as_str().unwrap().to_owned();
                assert!(instant <= previous_instant, "{name}: newest first");
                previous_instant = instant;
            }
            forward.push(ids(&page));
            next = page["links"]["next"].as_str().map(str::to_owned);
            if next.is_some() {
                assert!(
                    headers[header::LINK]
                        .to_str()
                        .unwrap()
                        .contains("rel=\"next\"")
                );
            }
            last_page = page;
        }
        let all: Vec<i64> = forward.concat();
        let unique: std::collections::HashSet<i64> = all.iter().copied().collect();
        assert_eq!(
            (all.len(), unique.len()),
            (10_000, 10_000),
            "{name}: every user once"
        );
        let mut backward = vec![ids(&last_page)];
        let mut prev = last_page["links"]["prev"].as_str().map(str::to_owned);
        while let Some(uri) = prev {
            let (status, _, page) = get_json(app, &uri).await;
            assert_eq!(status, 200, "{name} {uri}");
            backward.push(ids(&page));
            prev = page["links"]["prev"].as_str().map(str::to_owned);
        }
        backward.reverse();
        assert_eq!(backward, forward, "{name}: the same pages backwards");

        // Oldest first is the other order; its cursors belong to it alone.
        let (_, _, oldest) = get_json(app, "/users/keyset?limit=3").await;
        let first = oldest["items"][0]["created_at"].as_str().unwrap();
        assert!(first <= oldest["items"][2]["created_at"].as_str().unwrap());
        let cursor = oldest["next_cursor"].as_str().unwrap();
        let (status, _, body) = get_json(
            app,
            &format!("/users/keyset?sort=-created_at&after={cursor}"),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (http::StatusCode::BAD_REQUEST, Some("invalid_cursor")),
            "{body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("another query"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn users_are_paged_by_offset_and_keyset_on_sqlite() {
        let app = app(unlimited(Config::embedded(Duration::from_secs(30))))
            .await
            .unwrap();
        users_routes_page_every_user_once(&app, "sqlite").await;
    }

    #[tokio::test]
    async fn users_are_paged_by_offset_and_keyset_on_postgres() {
        let Some(db) = support::postgres("axum_app_users_on_postgres").await else {
            return;
        };
        let mut config = unlimited(Config::embedded(Duration::from_secs(30)));
        config.database =
            Database::Postgres(PgPoolBuilder::from_options(db.connect_options()).pool_size(2));
        let app = app(config).await.unwrap();
        users_routes_page_every_user_once(&app, "postgres").await;
    }

    #[tokio::test]
    async fn invalid_pagination_parameters_get_400_with_a_json_body() {
        let app = app(unlimited(Config::embedded(Duration::from_secs(30))))
            .await
            .unwrap();
        let (_, _, page) = get_json(&app, "/users/keyset?limit=2").await;
        let cursor = page["next_cursor"].as_str().unwrap().to_owned();
        let mut tampered = cursor.clone().into_bytes();
        tampered[10] = if tampered[10] == b'x' { b'y' } else { b'x' };
        let tampered = String::from_utf8(tampered).unwrap();
        let long = "A".repeat(5_000);
        let cases = [
            ("/users?page=0", "invalid_page"),
            ("/users?page=-1", "invalid_page"),
            ("/users?page=abc", "invalid_page"),
            ("/users?page=99999999999999999999", "invalid_page"),
            ("/users?page_size=0", "invalid_page_size"),
            ("/users?page_size=101", "invalid_page_size"),
            ("/users?page_size=1e9", "invalid_page_size"),
            ("/users?page=100000", "page_too_deep"),
            ("/users?is_active=maybe", "invalid_query"),
            ("/users/keyset?limit=0", "invalid_limit"),
            ("/users/keyset?limit=abc", "invalid_limit"),
            ("/users/keyset?sort=name", "invalid_query"),
            ("/users/keyset?after=a&before=b", "invalid_cursor"),
            (
                "/users/keyset?after=%27%3B%20DROP%20TABLE%20users",
                "invalid_cursor",
            ),
            (
                &*format!("/users/keyset?after={tampered}"),
                "invalid_cursor",
            ),
            (
                &*format!("/users/keyset?after={}", &cursor[..cursor.len() - 4]),
                "invalid_cursor",
            ),
            (&*format!("/users/keyset?before={cursor}"), "invalid_cursor"),
            (&*format!("/users/keyset?after={long}"), "invalid_cursor"),
        ];
        for (uri, code) in cases {
            let (status, headers, body) = get_json(&app, uri).await;
            assert_eq!(status, 400, "{uri}: {body}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{uri}");
            assert_eq!(body["error"], code, "{uri}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(
                !message.contains("SELECT") && !message.contains("users"),
                "{uri}: {message}"
            );
        }
        let (status, _, _) = get_json(&app, "/users?page=1").await;
        assert_eq!(status, 200, "the table survived");
    }
}
