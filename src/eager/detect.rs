//! An N+1 detector: statements counted per request by their shape, and a warning when one
//! shape runs more often than a limit allows.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use perfkit::eager::detect::NPlusOne;
//! use sqlx::ConnectOptions;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! // Warn when one statement shape runs more than 5 times in one request.
//! let detector = NPlusOne::new(5);
//! tracing::subscriber::set_global_default(
//!     tracing_subscriber::registry().with(detector.clone()),
//! )?;
//!
//! // sqlx reports statements only when statement logging is on (DEBUG by default).
//! let options: sqlx::postgres::PgConnectOptions = "postgres://localhost/app".parse()?;
//! let pool = sqlx::PgPool::connect_with(options.log_statements(log::LevelFilter::Debug)).await?;
//!
//! // Each request served through this layer is one scope.
//! let app = tower::ServiceBuilder::new()
//!     .layer(detector.scope_layer())
//!     .service(tower::service_fn(move |_request: http::Request<()>| {
//!         let pool = pool.clone();
//!         async move {
//!             for id in 1..=10_i64 {
//!                 // Ten statements of one shape: a warning once the request ends.
//!                 sqlx::query("SELECT * FROM user_progress WHERE user_id = $1")
//!                     .bind(id)
//!                     .fetch_all(&pool)
//!                     .await?;
//!             }
//!             Ok::<_, sqlx::Error>(http::Response::new(()))
//!         }
//!     }));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! sqlx emits an event (target `sqlx::query`) for every statement it runs, at the level of
//! `ConnectOptions::log_statements` (`DEBUG` unless changed), and only when the subscriber
//! accepts that level for that target. [`NPlusOne`] is a `tracing-subscriber` layer that
//! reads those events. [`NPlusOne::scope_layer`] is a tower layer that runs each request
//! inside a span of its own (target `perfkit::eager::detect`, level `INFO`); the detector
//! counts the statements made inside that span, in the request's task or in tasks that
//! carry its span (the `DataLoader`'s batches do, and so does sqlx's SQLite worker thread),
//! by their shape: the SQL with literals and placeholders replaced by `?`, lists such as
//! `IN (?, ?, ?)` and multi-row `VALUES` collapsed, and whitespace folded. When the request
//! ends, each shape that ran more than the limit is reported: a `WARN` event (target
//! `perfkit::eager::detect`) with the route, the count and the shape, a [`Detection`] in
//! [`NPlusOne::detections`], and with [`NPlusOne::panic_on_detection`] a panic in the
//! request's task, so a test fails as SQLAlchemy's `lazy="raise"` would.
//!
//! Nothing is counted when statement logging is off, or at a level the subscriber filters
//! out. Beware `disable_statement_logging`: it also sets the slow-statement threshold to
//! zero with level `Off`, so every statement counts as slow and is not logged, and a later
//! `log_statements(Debug)` alone changes nothing: set `log_slow_statements` again too (a
//! level and a threshold such as one second). Nothing is counted either when the span is
//! filtered out, or when the detector is not part of the process's subscriber. A global filter such as
//! `EnvFilter::new("info")` in front of every layer hides sqlx's `DEBUG` events from the
//! detector too: filter the output layer alone (`fmt::layer().with_filter(...)`), or have
//! sqlx log statements at `INFO`. SQLite runs statements on a thread of its own, so the
//! detector must be in the global subscriber to see them there.
//!
//! Memory is bounded: a request keeps at most [`MAX_SHAPES`] shapes of at most
//! [`MAX_SHAPE_LEN`] bytes each, and nothing outlives the request.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tracing::field::{Field, Visit};
use tracing::instrument::Instrumented;
use tracing::{Event, Instrument, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

/// The target of the request span and of the warnings.
const TARGET: &str = "perfkit::eager::detect";
/// The name of the request span.
const SPAN_NAME: &str = "request_queries";

/// The most statement shapes one request keeps; statements of further shapes are not
/// counted.
pub const MAX_SHAPES: usize = 256;

/// The longest shape kept, in bytes; longer ones are cut (at a character boundary).
pub const MAX_SHAPE_LEN: usize = 1024;

/// One statement shape that ran more often than the limit in one request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Detection {
    /// The request: its method and route template (axum's `MatchedPath` with the `axum`
    /// feature when the layer runs after routing, else the path), such as
    /// `GET /users/{id}/progress`.
    pub route: String,
    /// The normalised statement, such as `SELECT * FROM t WHERE id = ?`.
    pub shape: String,
    /// How many times it ran in the request.
    pub count: usize,
    /// The limit it passed.
    pub limit: usize,
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: one statement shape ran {} times (limit {}): {}",
            self.route, self.count, self.limit, self.shape
        )
    }
}

/// The statement counts of one request.
#[derive(Debug, Default)]
struct Counts {
    shapes: HashMap<String, usize>,
}

impl Counts {
    fn add(&mut self, sql: &str) {
        let shape = normalise(sql);
        if let Some(count) = self.shapes.get_mut(&shape) {
            *count += 1;
        } else if self.shapes.len() < MAX_SHAPES {
            self.shapes.insert(shape, 1);
        }
    }
}

type Scope = Arc<Mutex<Counts>>;

struct Inner {
    limit: usize,
    panic: bool,
    /// Scopes between their creation and their span's: the span picks its counts up here.
    opening: Mutex<HashMap<u64, Scope>>,
    detections: Mutex<Vec<Detection>>,
}

/// The N+1 detector: a `tracing-subscriber` [`Layer`](tracing_subscriber::Layer) that
/// counts sqlx's statements per request by shape, and the source of the tower layer
/// ([`scope_layer`](Self::scope_layer)) that makes each request a scope.
///
/// Clones share their counts and detections.
#[derive(Clone)]
pub struct NPlusOne {
    inner: Arc<Inner>,
}

impl fmt::Debug for NPlusOne {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NPlusOne")
            .field("limit", &self.inner.limit)
            .field("panic", &self.inner.panic)
            .finish_non_exhaustive()
    }
}

/// Detections kept for [`NPlusOne::detections`], the oldest dropped beyond this.
const MAX_DETECTIONS: usize = 1024;

impl NPlusOne {
    /// A detector that reports a statement shape running more than `limit` times in one
    /// request (a `limit` of 0 reports every shape that runs at all).
    pub fn new(limit: usize) -> Self {
        Self::build(limit, false)
    }

    /// The same detector, panicking in the request's task when it reports, for tests.
    #[must_use]
    pub fn panic_on_detection(self) -> Self {
        Self::build(self.inner.limit, true)
    }

    fn build(limit: usize, panic: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit,
                panic,
                opening: Mutex::default(),
                detections: Mutex::default(),
            }),
        }
    }

    /// The limit: the most times one shape may run in one request.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// The tower layer that makes each request a scope of this detector.
    pub fn scope_layer(&self) -> ScopeLayer {
        ScopeLayer {
            detector: self.clone(),
        }
    }

    /// The detections so far (the latest 1 024), oldest first.
    pub fn detections(&self) -> Vec<Detection> {
        lock(&self.inner.detections).clone()
    }

    /// The detections so far, leaving none.
    pub fn take_detections(&self) -> Vec<Detection> {
        std::mem::take(&mut *lock(&self.inner.detections))
    }

    /// Opens a scope named `route`: its span, and the guard that reports when dropped.
    fn open(&self, route: String) -> (tracing::Span, Report) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let scope = Scope::default();
        lock(&self.inner.opening).insert(id, scope.clone());
        let span = tracing::info_span!(target: TARGET, SPAN_NAME, scope = id, route = %route);
        // The layer took its counts when the span was made, if it is installed at all.
        lock(&self.inner.opening).remove(&id);
        (
            span,
            Report {
                detector: self.clone(),
                route,
                scope,
                finished: false,
            },
        )
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The counts of a request span, kept in the span's extensions.
struct SpanScope(Scope);

/// Reads the scope id of a request span.
struct ScopeId(Option<u64>);

impl Visit for ScopeId {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "scope" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

/// Reads the SQL of a sqlx statement event: `db.statement` when sqlx shortened the
/// summary, else `summary`.
#[derive(Default)]
struct Statement {
    summary: Option<String>,
    full: Option<String>,
}

impl Visit for Statement {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = Some(value.to_owned()),
            "db.statement" if !value.trim().is_empty() => self.full = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn fmt::Debug) {}
}

impl<S> tracing_subscriber::Layer<S> for NPlusOne
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: LayerContext<'_, S>,
    ) {
        let meta = attrs.metadata();
        if meta.target() != TARGET || meta.name() != SPAN_NAME {
            return;
        }
        let mut scope = ScopeId(None);
        attrs.record(&mut scope);
        let Some(scope) = scope.0 else { return };
        let Some(counts) = lock(&self.inner.opening).get(&scope).cloned() else {
            return;
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanScope(counts));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some(spans) = ctx.event_scope(event) else {
            return;
        };
        for span in spans {
            let extensions = span.extensions();
            if let Some(SpanScope(counts)) = extensions.get::<SpanScope>() {
                let mut statement = Statement::default();
                event.record(&mut statement);
                if let Some(sql) = statement.full.or(statement.summary) {
                    lock(counts).add(&sql);
                }
                return;
            }
        }
    }
}

/// Reports a scope's shapes over the limit when the request ends.
struct Report {
    detector: NPlusOne,
    route: String,
    scope: Scope,
    finished: bool,
}

impl Report {
    /// Reports the scope, once; panics when the detector says so and anything was found.
    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let limit = self.detector.inner.limit;
        let mut found: Vec<Detection> = lock(&self.scope)
            .shapes
            .drain()
            .filter(|&(_, count)| count > limit)
            .map(|(shape, count)| Detection {
                route: self.route.clone(),
                shape,
                count,
                limit,
            })
            .collect();
        if found.is_empty() {
            return;
        }
        found.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.shape.cmp(&b.shape)));
        for detection in &found {
            tracing::warn!(
                target: TARGET,
                route = %detection.route,
                count = detection.count,
                limit,
                shape = %detection.shape,
                "N+1 queries: one statement shape ran {} times in one request to {} (limit {})",
                detection.count,
                detection.route,
                limit,
            );
        }
        {
            let mut detections = lock(&self.detector.inner.detections);
            detections.extend(found.iter().cloned());
            let excess = detections.len().saturating_sub(MAX_DETECTIONS);
            detections.drain(..excess);
        }
        if self.detector.inner.panic && !std::thread::panicking() {
            panic!("N+1 queries: {}", found[0]);
        }
    }
}

/// A tower layer that runs each request as one scope of an [`NPlusOne`] detector; made by
/// [`NPlusOne::scope_layer`].
///
/// With axum, add it with `Router::route_layer` so the route template (`MatchedPath`) is
/// known; added with `Router::layer`, requests are named by their path.
#[derive(Clone, Debug)]
pub struct ScopeLayer {
    detector: NPlusOne,
}

impl<S> tower_layer::Layer<S> for ScopeLayer {
    type Service = Scoped<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Scoped {
            inner,
            detector: self.detector.clone(),
        }
    }
}

/// The service of [`ScopeLayer`].
#[derive(Clone, Debug)]
pub struct Scoped<S> {
    inner: S,
    detector: NPlusOne,
}

/// The route a request is reported under: its method and template or path.
fn route_of<B>(request: &http::Request<B>) -> String {
    #[cfg(feature = "axum")]
    if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
        return format!("{} {}", request.method(), matched.as_str());
    }
    format!("{} {}", request.method(), request.uri().path())
}

impl<S, B> tower_service::Service<http::Request<B>> for Scoped<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ScopedFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (span, report) = self.detector.open(route_of(&request));
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ScopedFuture {
            inner: inner.instrument(span),
            report,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Scoped`]: reports the request's shapes over the limit
    /// when it completes.
    pub struct ScopedFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        report: Report,
    }
}

impl<F> fmt::Debug for ScopedFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedFuture")
            .field("route", &self.report.route)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for ScopedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        this.report.finish();
        Poll::Ready(output)
    }
}

/// The shape of a statement: literals, numbers and placeholders (`$1`, `?`, `:name`)
/// become `?`, lists of them (`IN (?, ?)`, `VALUES (?, ?), (?, ?)`) one, whitespace and
/// comments one space; cut to [`MAX_SHAPE_LEN`] bytes.
pub fn normalise(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len().min(MAX_SHAPE_LEN));
    let mut chars = sql.trim().chars().peekable();
    let mut space = false;
    while let Some(c) = chars.next() {
        if out.len() >= MAX_SHAPE_LEN {
            break;
        }
        // Whitespace and comments fold to one space.
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if c == '-' && chars.peek() == Some(&'-') {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            space = true;
            continue;
        }
        if c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            let mut last = ' ';
            for c in chars.by_ref() {
                if last == '*' && c == '/' {
                    break;
                }
                last = c;
            }
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        let previous = out.chars().last();
        let after_word = previous.is_some_and(|p| p.is_alphanumeric() || p == '_');
        match c {
            '\'' => {
                // A string literal, '' escapes included.
                while let Some(c) = chars.next() {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                push_value(&mut out);
            }
            '"' | '`' => {
                // A quoted identifier: kept.
                out.push(c);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == c {
                        break;
                    }
                }
            }
            '$' | ':' | '@' if chars.peek().is_some_and(|n| n.is_ascii_digit()) => {
                while chars.peek().is_some_and(|n| n.is_ascii_digit()) {
                    chars.next();
                }
                push_value(&mut out);
            }
            '?' => {
                while chars.peek().is_some_and(|n| n.is_ascii_digit()) {
                    chars.next();
                }
                push_value(&mut out);
            }
            c if c.is_ascii_digit() && !after_word => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '.')
                {
                    chars.next();
                }
                push_value(&mut out);
            }
            c => {
                out.push(c);
                // A list of rows, `(?), (?)`, is one `(?)`.
                if c == ')' && out.ends_with("(?), (?)") {
                    out.truncate(out.len() - ", (?)".len());
                }
                if c == ')' && out.ends_with("(?),(?)") {
                    out.truncate(out.len() - ",(?)".len());
                }
            }
        }
    }
    if out.len() > MAX_SHAPE_LEN {
        let mut end = MAX_SHAPE_LEN;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// Appends a value, `?`, unless it continues a list of values (`?, ?` is one `?`).
fn push_value(out: &mut String) {
    for separator in ["?, ", "?,"] {
        if out.ends_with(separator) {
            out.truncate(out.len() - separator.len() + 1);
            return;
        }
    }
    out.push('?');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        for (sql, shape) in [
            (
                "SELECT *  FROM t\n WHERE id = $1",
                "SELECT * FROM t WHERE id = ?",
            ),
            (
                "SELECT * FROM t WHERE id = 42",
                "SELECT * FROM t WHERE id = ?",
            ),
            (
                "SELECT * FROM t WHERE name = 'o''hara' AND x = 1.5",
                "SELECT * FROM t WHERE name = ? AND x = ?",
            ),
            (
                "SELECT * FROM t WHERE id IN (?, ?, ?)",
                "SELECT * FROM t WHERE id IN (?)",
            ),
            (
                "SELECT * FROM t WHERE id IN ($1,$2,$3)",
                "SELECT * FROM t WHERE id IN (?)",
            ),
            (
                "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6)",
                "INSERT INTO t (a, b) VALUES (?)",
            ),
            (
                "SELECT t2.c1 FROM \"T 1\" -- note\n WHERE /* x */ c = ?",
                "SELECT t2.c1 FROM \"T 1\" WHERE c = ?",
            ),
        ] {
            assert_eq!(normalise(sql), shape, "{sql}");
        }
        let long = format!("SELECT {}", "é".repeat(MAX_SHAPE_LEN));
        assert!(normalise(&long).len() <= MAX_SHAPE_LEN);
    }

    #[test]
    fn shapes_are_bounded_per_request() {
        let mut counts = Counts::default();
        for i in 0..MAX_SHAPES + 10 {
            counts.add(&format!("SELECT * FROM t{i}"));
        }
        counts.add("SELECT * FROM t0 WHERE id = 1");
        counts.add("SELECT * FROM t0 WHERE id = 2");
        assert_eq!(counts.shapes.len(), MAX_SHAPES);
    }
}
