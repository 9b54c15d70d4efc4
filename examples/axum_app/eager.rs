//! The query-layer routes over the seeded `users` and `user_progress` tables, each "after"
//! beside its "before":
//!
//! - `GET /users/with-progress?page=&page_size=`: a page of users with their progress,
//!   read by one `load_many` query; `GET /users/with-progress-n1` reads the same with one
//!   query per user, the N+1 loop it replaces;
//! - `GET /users/{id}/progress`: one user's progress through the request's `DataLoader`;
//! - `POST /users/bulk`: a JSON array of users written by `BulkInsert` in one transaction.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use perfkit::{
    bulk::{self, BulkInsert},
    eager::{self, DataLoader, Loaders, LoadersLayer, Relation},
    paginate::{self, Count, Page, PageParams},
};
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::users::{Db, User};

/// The most users one `POST /users/bulk` may carry.
const MAX_BULK_USERS: usize = 10_000;

/// One row of `user_progress`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Progress {
    id: i64,
    user_id: i64,
    lesson: i32,
    score: i32,
    completed_at: String,
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for Progress
where
    &'r str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            lesson: row.try_get("lesson")?,
            score: row.try_get("score")?,
            completed_at: row.try_get("completed_at")?,
        })
    }
}

const SELECT_PROGRESS: &str = "SELECT id, user_id, lesson, score, completed_at FROM user_progress";
const SELECT_USERS: &str = "SELECT id, name, email, country, is_active, created_at FROM users";

/// The progress of a user, latest lesson first.
fn progress() -> Relation {
    Relation::new(SELECT_PROGRESS, "user_id").order_by("completed_at DESC, id")
}

/// The name of the request's progress loader.
const PROGRESS_LOADER: &str = "progress";

type ProgressLoader = DataLoader<i64, Vec<Progress>, eager::Error>;

pub(crate) fn routes(db: Db) -> Router {
    let loader_db = db.clone();
    let loaders = LoadersLayer::new().loader(PROGRESS_LOADER, move || -> ProgressLoader {
        match &loader_db {
            Db::Postgres(pool) => DataLoader::children(pool.sqlx().clone(), progress()),
            Db::Sqlite(pool) => DataLoader::children(pool.sqlx().clone(), progress()),
        }
    });
    Router::new()
        .route("/users/with-progress", get(with_progress))
        .route("/users/with-progress-n1", get(with_progress_n1))
        .route("/users/{id}/progress", get(user_progress))
        .route("/users/bulk", post(bulk_users))
        .with_state(db)
        .layer(loaders)
}

/// A user beside their progress.
#[derive(Serialize)]
struct WithProgress {
    #[serde(flatten)]
    user: User,
    progress: Vec<Progress>,
}

/// The page's users by id; no total, one row more tells whether a next page exists.
async fn users_page(db: &Db, params: PageParams) -> Result<Page<User>, paginate::Error> {
    fn query<DB: sqlx::Database>() -> QueryBuilder<DB> {
        let mut query = QueryBuilder::new(SELECT_USERS);
        query.push(" ORDER BY id");
        query
    }
    match db {
        Db::Postgres(pool) => paginate::paginate(pool, query(), params, Count::None).await,
        Db::Sqlite(pool) => paginate::paginate(pool, query(), params, Count::None).await,
    }
}

fn failed(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "a query failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({"error": "query_failed", "message": "the rows could not be read"})),
    )
        .into_response()
}

/// `GET /users/with-progress?page=&page_size=`: the page, then every user's progress in
/// one query.
async fn with_progress(
    State(db): State<Db>,
    uri: Uri,
    params: PageParams,
) -> Result<Response, Response> {
    let page = users_page(&db, params)
        .await
        .map_err(IntoResponse::into_response)?;
    let loaded: eager::Loaded<i64, Progress> = match &db {
        Db::Postgres(pool) => eager::load_many(pool, &page.items, |u| u.id, &progress()).await,
        Db::Sqlite(pool) => eager::load_many(pool, &page.items, |u| u.id, &progress()).await,
    }
    .map_err(failed)?;
    let items = page_with(&page, |user| loaded.get(&user.id).to_vec());
    Ok(Json(serde_json::json!({"items": items, "links": page.links(&uri)})).into_response())
}

/// `GET /users/with-progress-n1?page=&page_size=`: the same answer, one progress query per
/// user (the "before", kept for comparison).
async fn with_progress_n1(
    State(db): State<Db>,
    uri: Uri,
    params: PageParams,
) -> Result<Response, Response> {
    let page = users_page(&db, params)
        .await
        .map_err(IntoResponse::into_response)?;
    let mut progress = Vec::with_capacity(page.items.len());
    for user in &page.items {
        let rows: Vec<Progress> = match &db {
            Db::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT id, user_id, lesson, score, completed_at FROM user_progress \
                     WHERE user_id = $1 ORDER BY completed_at DESC, id",
                )
                .bind(user.id)
                .fetch_all(&**pool)
                .await
            }
            Db::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT id, user_id, lesson, score, completed_at FROM user_progress \
                     WHERE user_id = ? ORDER BY completed_at DESC, id",
                )
                .bind(user.id)
                .fetch_all(&**pool)
                .await
            }
        }
        .map_err(failed)?;
        progress.push(rows);
    }
    let mut progress = progress.into_iter();
    let items = page_with(&page, |_| progress.next().unwrap_or_default());
    Ok(Json(serde_json::json!({"items": items, "links": page.links(&uri)})).into_response())
}

fn page_with(
    page: &Page<User>,
    mut progress: impl FnMut(&User) -> Vec<Progress>,
) -> Vec<WithProgress> {
    page.items
        .iter()
        .map(|user| WithProgress {
            user: user.clone(),
            progress: progress(user),
        })
        .collect()
}

/// `GET /users/{id}/progress`: through the request's loader, so handler code that loads per
/// user still costs one query per request.
async fn user_progress(loaders: Loaders, Path(id): Path<i64>) -> Result<Response, Response> {
    let loader: ProgressLoader = loaders
        .get(PROGRESS_LOADER)
        .ok_or_else(|| failed("the progress loader is not registered"))?;
    let progress = loader.load(id).await.map_err(failed)?.unwrap_or_default();
    Ok(Json(serde_json::json!({"user_id": id, "progress": progress})).into_response())
}

/// One user of `POST /users/bulk`.
#[derive(Deserialize)]
struct NewUser {
    id: i64,
    name: String,
    email: String,
    country: String,
    #[serde(default = "active")]
    is_active: bool,
    created_at: String,
}

fn active() -> bool {
    true
}

fn unprocessable(code: &str, message: String, row: Option<usize>) -> Response {
    let mut body = serde_json::json!({"error": code, "message": message});
    if let Some(row) = row {
        body["row"] = row.into();
    }
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// `POST /users/bulk`: a JSON array of users, written in one transaction: `201` with the
/// count, or `422` naming the row that was refused, and nothing written.
async fn bulk_users(State(db): State<Db>, Json(users): Json<Vec<NewUser>>) -> Response {
    if users.is_empty() || users.len() > MAX_BULK_USERS {
        return unprocessable(
            "invalid_users",
            format!("send from 1 to {MAX_BULK_USERS} users, got {}", users.len()),
            None,
        );
    }
    if let Some(index) = users
        .iter()
        .position(|u| u.name.trim().is_empty() || !u.email.contains('@'))
    {
        return unprocessable(
            "invalid_user",
            format!("row {index} needs a name and an email address"),
            Some(index),
        );
    }
    let insert = BulkInsert::new(
        "users",
        &["id", "name", "email", "country", "is_active", "created_at"],
    );
    let written = match &db {
        Db::Postgres(pool) => {
            insert
                .execute(pool, &users, |mut row, user| {
                    row.push_bind(user.id)
                        .push_bind(user.name.clone())
                        .push_bind(user.email.clone())
                        .push_bind(user.country.clone())
                        .push_bind(user.is_active)
                        .push_bind(user.created_at.clone());
                })
                .await
        }
        Db::Sqlite(pool) => {
            insert
                .execute(pool, &users, |mut row, user| {
                    row.push_bind(user.id)
                        .push_bind(user.name.clone())
                        .push_bind(user.email.clone())
                        .push_bind(user.country.clone())
                        .push_bind(user.is_active)
                        .push_bind(user.created_at.clone());
                })
                .await
        }
    };
    match written {
        Ok(count) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"inserted": count})),
        )
            .into_response(),
        Err(bulk::Error::Row { index, .. }) => unprocessable(
            "invalid_user",
            format!(
                "row {index} was refused (its id is taken, or a field is invalid); nothing was written"
            ),
            Some(index),
        ),
        Err(error) => failed(error),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Router, body::Body, http::StatusCode};
    use tower::ServiceExt;

    use super::super::{Config, Database, app, support};

    async fn call(app: &Router, request: http::Request<Body>) -> (StatusCode, serde_json::Value) {
        let mut request = request;
        let peer: std::net::SocketAddr = "192.0.2.20:50000".parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        (status, json)
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
        call(app, http::Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn post(
        app: &Router,
        uri: &str,
        body: serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        let request = http::Request::post(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        call(app, request).await
    }

    fn user(id: i64) -> serde_json::Value {
        serde_json::json!({
            "id": id, "name": format!("New {id}"), "email": format!("new{id}@example.com"),
            "country": "PT", "created_at": "2025-01-01T00:00:00Z",
        })
    }

    async fn eager_routes_agree_with_the_n_plus_one_loop(app: &Router, name: &str) {
        let (status, eager) = get(app, "/users/with-progress?page=3&page_size=7").await;
        assert_eq!(status, StatusCode::OK, "{name}: {eager}");
        let (_, n1) = get(app, "/users/with-progress-n1?page=3&page_size=7").await;
        assert_eq!(eager["items"], n1["items"], "{name}");
        let items = eager["items"].as_array().unwrap();
        assert_eq!(items.len(), 7);
        assert_eq!(items[0]["id"], 15);
        for item in items {
            let progress = item["progress"].as_array().unwrap();
            assert_eq!(progress.len(), 10, "{name}: every seeded user has ten rows");
            assert!(progress.iter().all(|p| p["user_id"] == item["id"]));
            let uri = format!("/users/{}/progress", item["id"]);
            let (status, one) = get(app, &uri).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(one["progress"], item["progress"], "{name}: {uri}");
        }

        // Bulk: all rows or none, the refused row named.
        let (status, body) = post(
            app,
            "/users/bulk",
            serde_json::json!([user(20_001), user(20_002)]),
        )
        .await;
        assert_eq!(
            (status, body["inserted"].as_i64()),
            (StatusCode::CREATED, Some(2)),
            "{name}: {body}"
        );
        let (status, body) = post(
            app,
            "/users/bulk",
            serde_json::json!([user(20_003), user(20_001), user(20_004)]),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        assert_eq!(body["row"], 1, "{name}: {body}");
        let (status, _) = post(app, "/users/bulk", serde_json::json!([user(20_003)])).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{name}: 20 003 was not written before"
        );
        let (status, body) = post(app, "/users/bulk", serde_json::json!([])).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let mut bad = user(20_010);
        bad["email"] = "nobody".into();
        let (status, body) = post(app, "/users/bulk", serde_json::json!([user(20_009), bad])).await;
        assert_eq!(
            (status, body["row"].as_i64()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(1))
        );
    }

    #[tokio::test]
    async fn eager_and_bulk_routes_on_sqlite() {
        let app = app(Config::embedded(Duration::from_secs(30)))
            .await
            .unwrap();
        eager_routes_agree_with_the_n_plus_one_loop(&app, "sqlite").await;
    }

    #[tokio::test]
    async fn eager_and_bulk_routes_on_postgres() {
        let Some(db) = support::postgres("axum_app_eager_on_postgres").await else {
            return;
        };
        let mut config = Config::embedded(Duration::from_secs(30));
        config.database = Database::Postgres(
            perfkit::pool::PgPoolBuilder::from_options(db.connect_options()).pool_size(2),
        );
        let app = app(config).await.unwrap();
        eager_routes_agree_with_the_n_plus_one_loop(&app, "postgres").await;
    }
}
