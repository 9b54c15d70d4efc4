//! `GET /users` (page/offset, exact total, `Link` header) and `GET /users/keyset` (signed
//! cursors) over the seeded `users` table.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use perfkit::{
    paginate::{self, Count, CursorKey, Keyset, KeysetPage, KeysetParams, Links, Page, PageParams},
    pool::{PgPool, ReplicatedPool, SqlitePool},
};
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::JsonQuery;

/// The app's database: the pool the health checks watch, kept for the routes that read it.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the `sqlx::Pool` of either database.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Postgres(pool) => {
                let $pool: &sqlx::Pool<sqlx::Postgres> = pool;
                $body
            }
            Db::Sqlite(pool) => {
                let $pool: &sqlx::Pool<sqlx::Sqlite> = pool;
                $body
            }
        }
    };
}

/// What the user routes share: the database and the two keyset orders.
#[derive(Clone, Debug)]
pub(crate) struct Users {
    db: Db,
    /// With `DATABASE_REPLICA_URLS`: where the routes read, a serving replica's pool.
    replicas: Option<ReplicatedPool>,
    oldest_first: Keyset,
    newest_first: Keyset,
}

impl Users {
    /// The routes' state; cursors are signed with `key` (`PAGINATION_SECRET`).
    pub(crate) fn new(db: Db, key: CursorKey) -> Result<Self, paginate::Error> {
        let order =
            |keyset: paginate::KeysetBuilder| keyset.unique("id").cursor_key(key.clone()).build();
        Ok(Self {
            db,
            replicas: None,
            oldest_first: order(Keyset::builder().asc("created_at"))?,
            newest_first: order(Keyset::builder().desc("created_at"))?,
        })
    }
}

impl Users {
    /// The routes read through `pool`'s [`reader`](ReplicatedPool::reader): a serving
    /// replica, or the primary when none serves.
    pub(crate) fn reading_from(mut self, pool: ReplicatedPool) -> Self {
        self.replicas = Some(pool);
        self
    }

    /// The database a read goes to now.
    fn reads(&self) -> Db {
        match &self.replicas {
            Some(pool) => Db::Postgres(pool.reader().clone()),
            None => self.db.clone(),
        }
    }
}

pub(crate) fn routes(users: Users) -> Router {
    Router::new()
        .route("/users", get(list))
        .route("/users/keyset", get(keyset))
        .with_state(users)
}

/// One row of `users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct User {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) country: String,
    pub(crate) is_active: bool,
    pub(crate) created_at: String,
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for User
where
    &'r str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            country: row.try_get("country")?,
            is_active: row.try_get("is_active")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

const SELECT_USERS: &str = "SELECT id, name, email, country, is_active, created_at FROM users";

/// A page and its links, as `GET /users` answers.
#[derive(Serialize)]
struct WithLinks<P> {
    #[serde(flatten)]
    page: P,
    links: Links,
}

/// The page with its links in the body and in a `Link` header.
fn linked<P: Serialize>(page: P, links: Links) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(value) = links.header_value() {
        headers.insert(header::LINK, value);
    }
    (headers, Json(WithLinks { page, links })).into_response()
}

#[derive(Deserialize)]
struct ListFilter {
    is_active: Option<bool>,
}

/// `GET /users?page=&page_size=&is_active=`: by id, with an exact total counted beside the
/// page.
async fn list(
    State(users): State<Users>,
    uri: Uri,
    params: PageParams,
    JsonQuery(filter): JsonQuery<ListFilter>,
) -> Result<Response, paginate::Error> {
    let page: Page<User> = with_pool!(&users.reads(), pool => {
        let query = list_query(filter.is_active);
        paginate::paginate(pool, query, params, Count::Exact).await
    })?;
    let links = page.links(&uri);
    Ok(linked(page, links))
}

/// The users by id, only the active or inactive ones when `active` is given.
fn list_query<DB>(active: Option<bool>) -> QueryBuilder<DB>
where
    DB: sqlx::Database,
    bool: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::new(SELECT_USERS);
    if let Some(active) = active {
        query.push(" WHERE is_active = ").push_bind(active);
    }
    query.push(" ORDER BY id");
    query
}

#[derive(Deserialize)]
struct KeysetSort {
    sort: Option<String>,
}

/// `GET /users/keyset?after=&before=&limit=&sort=created_at|-created_at`.
async fn keyset(
    State(users): State<Users>,
    uri: Uri,
    params: KeysetParams,
    JsonQuery(sort): JsonQuery<KeysetSort>,
) -> Result<Response, Response> {
    let keyset = match sort.sort.as_deref() {
        None | Some("created_at") => &users.oldest_first,
        Some("-created_at") => &users.newest_first,
        Some(_) => {
            return Err((
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({
                    "error": "invalid_query",
                    "message": "sort must be created_at or -created_at",
                })),
            )
                .into_response());
        }
    };
    let page: KeysetPage<User> = with_pool!(&users.reads(), pool => {
        keyset.fetch(pool, QueryBuilder::new(SELECT_USERS), &params).await
    })
    .map_err(IntoResponse::into_response)?;
    let links = page.links(&uri);
    Ok(linked(page, links))
}
