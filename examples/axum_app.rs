//! The reference app: an axum server composing every perfkit layer.
//!
//! Run with: `cargo run --example axum_app --all-features`
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `PORT` | `3000` | port to listen on, on 127.0.0.1 |
//! | `REQUEST_TIMEOUT_MS` | `30000` | request deadline in milliseconds |
//! | `RUST_LOG` | `info` | log filter |
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /hello` | a short text body |
//! | `GET /slow?ms=N` | sleeps N milliseconds, then answers `{"slept_ms":N}` |
//! | `GET /big` | about 200 KB of JSON: varied user records |
//! | `GET /metrics/timing` | per-route latency statistics as JSON |
//!
//! Every response carries `X-Process-Time` and `Server-Timing`; a request over its deadline
//! is answered `504` with a JSON body; requests slower than one second are logged.

use std::{error::Error, net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::header,
    response::IntoResponse,
    routing::get,
};
use bytes::Bytes;
use perfkit::{
    timeout::TimeoutLayer,
    timing::{TimingLayer, TimingSnapshot, TimingStats},
};
use serde::{Deserialize, Serialize};

/// What the app reads from the environment.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// `PORT`.
    pub(crate) port: u16,
    /// `REQUEST_TIMEOUT_MS`.
    pub(crate) timeout: TimeoutLayer,
}

impl Config {
    /// Reads `PORT` and `REQUEST_TIMEOUT_MS`; an unset variable takes its default, a
    /// malformed one is an error.
    pub(crate) fn from_env() -> Result<Self, Box<dyn Error>> {
        let port = match std::env::var("PORT") {
            Ok(port) if !port.trim().is_empty() => port
                .trim()
                .parse()
                .map_err(|_| format!("PORT is set to {port:?}, which is not a port number"))?,
            _ => 3000,
        };
        Ok(Self {
            port,
            timeout: TimeoutLayer::from_env()?,
        })
    }
}

#[derive(Clone)]
struct AppState {
    timing: TimingStats,
    big: Bytes,
}

/// The router with every layer applied, as served by `main`.
pub(crate) fn app(config: &Config) -> Router {
    let timing = TimingLayer::new().server_timing(true);
    routes(timing.stats())
        // Added last, so it runs first: 504s are timed and logged too.
        .layer(config.timeout)
        .layer(timing)
}

/// The same routes without any perfkit layer: the "before" of `examples/showcase.rs`.
#[allow(dead_code)]
pub(crate) fn bare_app() -> Router {
    routes(TimingStats::new())
}

fn routes(timing: TimingStats) -> Router {
    let state = AppState {
        timing,
        big: big_json(),
    };
    Router::new()
        .route("/hello", get(hello))
        .route("/slow", get(slow))
        .route("/big", get(big))
        .route("/metrics/timing", get(metrics_timing))
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

async fn slow(Query(params): Query<SlowParams>) -> Json<Slept> {
    tokio::time::sleep(Duration::from_millis(params.ms)).await;
    Json(Slept {
        slept_ms: params.ms,
    })
}

async fn big(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.big)
}

async fn metrics_timing(State(state): State<AppState>) -> Json<TimingSnapshot> {
    Json(state.timing.snapshot())
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
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        %addr,
        timeout_ms = config.timeout.timeout().as_millis() as u64,
        "perfkit reference app listening"
    );
    axum::serve(listener, app(&config))
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

    fn config(timeout: Duration) -> Config {
        Config {
            port: 0,
            timeout: TimeoutLayer::new(timeout),
        }
    }

    async fn get(app: &Router, uri: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
        let response = app
            .clone()
            .oneshot(http::Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn routes_answer_and_carry_timing_headers() {
        let app = app(&config(Duration::from_secs(30)));

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
        assert_eq!(headers["x-process-time"], "250.00ms");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_requests_past_the_deadline_get_504() {
        let app = app(&config(Duration::from_millis(1500)));
        let (status, headers, body) = get(&app, "/slow?ms=5000").await;
        assert_eq!(status, 504);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body,
            r#"{"error":"request_timeout","message":"Request exceeded 1.5s timeout"}"#
        );
        assert_eq!(headers["x-process-time"], "1500.00ms");
    }

    #[tokio::test]
    async fn big_is_about_200_kb_of_varied_json() {
        let app = app(&config(Duration::from_secs(30)));
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

    #[tokio::test(start_paused = true)]
    async fn metrics_report_route_templates() {
        let app = app(&config(Duration::from_secs(30)));
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
    async fn serves_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server =
            tokio::spawn(axum::serve(listener, app(&config(Duration::from_secs(5)))).into_future());

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
    }
}
