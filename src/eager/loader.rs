//! `DataLoader`: concurrent loads of single keys coalesced into batches, memoised for the
//! loader's life; `Loaders`, the per-request registry a layer puts into each request.

use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tracing::Instrument;

use super::{Error, Key, Relation, load_many};
use crate::query::Backend;

/// The default largest batch, [`DataLoader::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 1_000;

type BatchFuture<K, V, E> = Pin<Box<dyn Future<Output = Result<HashMap<K, V>, E>> + Send>>;
type BatchFn<K, V, E> = dyn Fn(Vec<K>) -> BatchFuture<K, V, E> + Send + Sync;
type Answer<V, E> = Result<Option<V>, LoadError<E>>;

/// Why [`DataLoader::load`] has no answer.
#[non_exhaustive]
pub enum LoadError<E> {
    /// The batch the key was in failed: every key of that batch gets this same error.
    Batch(Arc<E>),
    /// The batch ended without an answer: the batch function panicked, or the runtime is
    /// shutting down (or `load` was called outside a tokio runtime).
    Cancelled,
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Batch(error) => Self::Batch(error.clone()),
            Self::Cancelled => Self::Cancelled,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Batch(error) => f.debug_tuple("Batch").field(error).finish(),
            Self::Cancelled => f.write_str("Cancelled"),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Batch(error) => write!(f, "the batch load failed: {error}"),
            Self::Cancelled => f.write_str(
                "the batch load ended without an answer (it panicked, or the runtime is \
                 shutting down)",
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Batch(error) => Some(&**error),
            Self::Cancelled => None,
        }
    }
}

/// A request-scoped loader: `load(key)` calls made concurrently (in one scheduling tick)
/// are deduplicated and answered by one call of the batch function, and each answer is
/// kept for the loader's life.
///
/// Make one per request ([`LoadersLayer`] does), not one per process: it remembers
/// every key it was asked for until it is dropped. Loads awaited one after the other get
/// one batch each; the coalescing serves loads awaited together (`join`, spawned tasks,
/// a GraphQL resolver tree). Needs a tokio runtime: each batch runs in a task of its own,
/// so a caller that gives up does not leave the others waiting.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::collections::HashMap;
/// use perfkit::eager::DataLoader;
///
/// let loader = DataLoader::new(|keys: Vec<u32>| async move {
///     Ok::<_, std::io::Error>(keys.into_iter().map(|k| (k, k * 10)).collect::<HashMap<_, _>>())
/// });
/// let (a, b, c) = tokio::join!(loader.load(1), loader.load(2), loader.load(1));
/// assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (Some(10), Some(20), Some(10)));
/// assert_eq!(loader.batches(), 1);
/// # }
/// ```
pub struct DataLoader<K, V, E> {
    shared: Arc<Shared<K, V, E>>,
}

impl<K, V, E> Clone for DataLoader<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K, V, E> fmt::Debug for DataLoader<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataLoader")
            .field("max_batch", &self.shared.max_batch.load(Ordering::Relaxed))
            .field("batches", &self.shared.batches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Shared<K, V, E> {
    batch: Box<BatchFn<K, V, E>>,
    max_batch: AtomicUsize,
    batches: AtomicUsize,
    state: Mutex<State<K, V, E>>,
}

struct State<K, V, E> {
    /// Answers, kept for the loader's life (`None`: the batch had no value for the key).
    done: HashMap<K, Option<V>>,
    /// Callers waiting for keys that are pending or in a batch.
    waiting: HashMap<K, Vec<oneshot::Sender<Answer<V, E>>>>,
    /// Keys no batch has taken yet.
    pending: Vec<K>,
    /// Whether a task will take `pending`.
    scheduled: bool,
}

impl<K, V, E> Shared<K, V, E> {
    fn state(&self) -> MutexGuard<'_, State<K, V, E>> {
        // No code panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K, V, E> DataLoader<K, V, E>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A loader whose batches call `batch` with distinct keys (at most
    /// [`DEFAULT_MAX_BATCH`] of them); a key missing from the map it returns loads as
    /// `None`.
    pub fn new<F, Fut>(batch: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, V>, E>> + Send + 'static,
    {
        Self {
            shared: Arc::new(Shared {
                batch: Box::new(move |keys| Box::pin(batch(keys))),
                max_batch: AtomicUsize::new(DEFAULT_MAX_BATCH),
                batches: AtomicUsize::new(0),
                state: Mutex::new(State {
                    done: HashMap::new(),
                    waiting: HashMap::new(),
                    pending: Vec::new(),
                    scheduled: false,
                }),
            }),
        }
    }

    /// The most keys one batch carries (default [`DEFAULT_MAX_BATCH`], at least 1); more
    /// keys waiting at once are split into batches that run concurrently. It is shared
    /// by every clone of the loader.
    #[must_use]
    pub fn max_batch(self, keys: usize) -> Self {
        self.shared.max_batch.store(keys.max(1), Ordering::Relaxed);
        self
    }

    /// The value for `key`: from memory when it was loaded before, otherwise from the
    /// next batch, shared with every concurrent load of the same key.
    ///
    /// # Errors
    ///
    /// [`LoadError::Batch`] with the batch function's error, the same for every key of
    /// the failed batch (a failure is not remembered: a later load tries again);
    /// [`LoadError::Cancelled`] when the batch ended without an answer.
    pub async fn load(&self, key: K) -> Result<Option<V>, LoadError<E>> {
        let answer = {
            let mut guard = self.shared.state();
            let state = &mut *guard;
            if let Some(value) = state.done.get(&key) {
                return Ok(value.clone());
            }
            let (sender, answer) = oneshot::channel();
            match state.waiting.entry(key) {
                Entry::Occupied(mut waiting) => waiting.get_mut().push(sender),
                Entry::Vacant(waiting) => {
                    state.pending.push(waiting.key().clone());
                    waiting.insert(vec![sender]);
                }
            }
            if !state.scheduled {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Err(LoadError::Cancelled);
                };
                state.scheduled = true;
                runtime.spawn(dispatch(self.shared.clone()).in_current_span());
            }
            answer
        };
        answer.await.unwrap_or(Err(LoadError::Cancelled))
    }

    /// The values for `keys`, in their order, loaded together.
    ///
    /// # Errors
    ///
    /// The first error of any key, as [`load`](Self::load).
    pub async fn load_all(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<V>>, LoadError<E>> {
        let answers: Vec<_> = keys.into_iter().map(|key| self.load(key)).collect();
        let mut values = Vec::with_capacity(answers.len());
        // The loads are created first and polled together, so their keys share a batch.
        let joined = JoinAll {
            futures: answers.into_iter().map(Box::pin).map(Some).collect(),
            outputs: Vec::new(),
        };
        for answer in joined.await {
            values.push(answer?);
        }
        Ok(values)
    }

    /// How many batches the loader has run (or started) so far.
    pub fn batches(&self) -> usize {
        self.shared.batches.load(Ordering::Relaxed)
    }
}

/// Polls every future until all are ready; the outputs in the futures' order.
struct JoinAll<F: Future> {
    futures: Vec<Option<Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
}

// The futures are boxed: moving the list moves none of them.
impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.outputs.is_empty() {
            this.outputs = this.futures.iter().map(|_| None).collect();
        }
        let mut ready = true;
        for (slot, output) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => ready = false,
                }
            }
        }
        if ready {
            Poll::Ready(this.outputs.drain(..).flatten().collect())
        } else {
            Poll::Pending
        }
    }
}

/// Waits one scheduling tick for more keys, then runs the pending keys in batches of at
/// most `max_batch`, the first here and the others in tasks of their own.
async fn dispatch<K, V, E>(shared: Arc<Shared<K, V, E>>)
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    tokio::task::yield_now().await;
    let keys = {
        let mut state = shared.state();
        state.scheduled = false;
        std::mem::take(&mut state.pending)
    };
    let max_batch = shared.max_batch.load(Ordering::Relaxed);
    let mut chunks = Vec::new();
    let mut keys = keys.into_iter().peekable();
    while keys.peek().is_some() {
        chunks.push(keys.by_ref().take(max_batch).collect::<Vec<_>>());
    }
    let mut chunks = chunks.into_iter();
    let Some(first) = chunks.next() else { return };
    for chunk in chunks {
        tokio::spawn(run_batch(shared.clone(), chunk).in_current_span());
    }
    run_batch(shared, first).await;
}

/// Runs one batch and answers its waiters.
async fn run_batch<K, V, E>(shared: Arc<Shared<K, V, E>>, keys: Vec<K>)
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    shared.batches.fetch_add(1, Ordering::Relaxed);
    let mut batch = Unanswered { shared, keys };
    let result = (batch.shared.batch)(batch.keys.clone()).await;
    let keys = std::mem::take(&mut batch.keys);
    let mut state = batch.shared.state();
    match result {
        Ok(mut values) => {
            for key in keys {
                let value = values.remove(&key);
                for waiter in state.waiting.remove(&key).unwrap_or_default() {
                    let _ = waiter.send(Ok(value.clone()));
                }
                state.done.insert(key, value);
            }
        }
        Err(error) => {
            let error = LoadError::Batch(Arc::new(error));
            for key in keys {
                for waiter in state.waiting.remove(&key).unwrap_or_default() {
                    let _ = waiter.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The keys of a batch not answered yet: when the batch ends without answering them (its
/// function panicked, its task was dropped), their waiters are dropped, so they see
/// [`LoadError::Cancelled`] instead of waiting for ever.
struct Unanswered<K: Eq + Hash, V, E> {
    shared: Arc<Shared<K, V, E>>,
    keys: Vec<K>,
}

impl<K: Eq + Hash, V, E> Drop for Unanswered<K, V, E> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut state = self.shared.state();
        for key in &self.keys {
            state.waiting.remove(key);
        }
    }
}

impl<K, C> DataLoader<K, Vec<C>, Error>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    C: Clone + Send + Sync + 'static,
{
    /// A loader of the children of a relation: each batch is one [`load_many`] over its
    /// keys, and every key loads as `Some`, with an empty list when it has no children.
    pub fn children<DB>(pool: sqlx::Pool<DB>, relation: Relation) -> Self
    where
        DB: Backend,
        K: Key<DB>,
        C: for<'r> sqlx::FromRow<'r, DB::Row> + Unpin,
    {
        let relation = Arc::new(relation);
        Self::new(move |keys: Vec<K>| {
            let pool = pool.clone();
            let relation = relation.clone();
            async move {
                let loaded = load_many(&pool, &keys, K::clone, &relation).await?;
                Ok(loaded.into_groups().into_iter().collect())
            }
        })
    }
}

type Factory = Arc<dyn Fn() -> Box<dyn Any + Send + Sync> + Send + Sync>;

/// A request's loaders, by name, each made the first time the request asks for it.
///
/// [`LoadersLayer`] puts a fresh one into each request's extensions; with the `axum`
/// feature it is an extractor (a handler behind no `LoadersLayer` answers `500`).
#[derive(Clone)]
pub struct Loaders {
    factories: Arc<HashMap<&'static str, Factory>>,
    made: Arc<Mutex<HashMap<&'static str, Box<dyn Any + Send + Sync>>>>,
}

impl fmt::Debug for Loaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.factories.keys().collect();
        names.sort();
        f.debug_struct("Loaders").field("names", &names).finish()
    }
}

impl Loaders {
    /// This request's loader named `name`, made on first use; `None` when no loader has
    /// that name or it has other key, value or error types.
    pub fn get<K, V, E>(&self, name: &str) -> Option<DataLoader<K, V, E>>
    where
        K: 'static,
        V: 'static,
        E: 'static,
    {
        let (&name, factory) = self.factories.get_key_value(name)?;
        let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
        let loader = made.entry(name).or_insert_with(|| factory());
        loader.downcast_ref::<DataLoader<K, V, E>>().cloned()
    }
}

/// A layer that gives each request a fresh [`Loaders`] in its extensions, so the loads
/// one request makes share batches and memory, and nothing outlives the request.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # async fn run(pool: sqlx::SqlitePool) {
/// use perfkit::eager::{DataLoader, LoadersLayer, Relation};
///
/// type Progress = (i64, i64); // (user_id, score)
///
/// let relation = Relation::new("SELECT user_id, score FROM user_progress", "user_id");
/// let layer = LoadersLayer::new().loader("progress", move || {
///     DataLoader::<i64, Vec<Progress>, _>::children(pool.clone(), relation.clone())
/// });
/// // In a handler: `loaders.get::<i64, Vec<Progress>, perfkit::eager::Error>("progress")`.
/// # let _ = layer;
/// # }
/// ```
#[derive(Clone, Default)]
pub struct LoadersLayer {
    factories: Arc<HashMap<&'static str, Factory>>,
}

impl fmt::Debug for LoadersLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.factories.keys().collect();
        names.sort();
        f.debug_struct("LoadersLayer")
            .field("names", &names)
            .finish()
    }
}

impl LoadersLayer {
    /// A layer with no loaders yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the loader `name`, made by `make` for each request that asks for it (a
    /// second loader of the same name replaces the first).
    #[must_use]
    pub fn loader<K, V, E>(
        mut self,
        name: &'static str,
        make: impl Fn() -> DataLoader<K, V, E> + Send + Sync + 'static,
    ) -> Self
    where
        K: Send + Sync + 'static,
        V: Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        let factories = Arc::make_mut(&mut self.factories);
        factories.insert(name, Arc::new(move || Box::new(make())));
        self
    }

    fn fresh(&self) -> Loaders {
        Loaders {
            factories: self.factories.clone(),
            made: Arc::default(),
        }
    }
}

impl<S> tower_layer::Layer<S> for LoadersLayer {
    type Service = AddLoaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddLoaders {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`LoadersLayer`]: adds a fresh [`Loaders`] to each request.
#[derive(Clone, Debug)]
pub struct AddLoaders<S> {
    inner: S,
    layer: LoadersLayer,
}

impl<S, B> tower_service::Service<http::Request<B>> for AddLoaders<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.layer.fresh());
        self.inner.call(request)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Loaders {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Loaders>().cloned().ok_or_else(|| {
            tracing::error!("a handler asked for Loaders behind no perfkit::eager::LoadersLayer");
            crate::body::json_error::<axum::body::Body>(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "loaders_missing",
                "the request could not be served",
            )
            .map(axum::body::Body::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batches a loader ran, by their keys.
    type Calls = Arc<Mutex<Vec<Vec<u32>>>>;

    fn counting() -> (DataLoader<u32, u32, String>, Calls) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let loader = DataLoader::new(move |keys: Vec<u32>| {
            seen.lock().unwrap().push(keys.clone());
            async move {
                if keys.contains(&13) {
                    return Err("13 is unlucky".to_owned());
                }
                Ok(keys
                    .into_iter()
                    .filter(|k| k % 2 == 0)
                    .map(|k| (k, k + 1))
                    .collect())
            }
        });
        (loader, calls)
    }

    #[tokio::test]
    async fn concurrent_loads_share_one_deduplicated_batch() {
        let (loader, calls) = counting();
        let values = loader.load_all([4, 2, 4, 3]).await.unwrap();
        assert_eq!(values, [Some(5), Some(3), Some(5), None]);
        assert_eq!(*calls.lock().unwrap(), [vec![4, 2, 3]]);
        // Memoised: no second batch, for found and missing keys alike.
        assert_eq!(loader.load(3).await.unwrap(), None);
        assert_eq!(loader.load(2).await.unwrap(), Some(3));
        assert_eq!(calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn sequential_loads_take_one_batch_each() {
        let (loader, calls) = counting();
        loader.load(2).await.unwrap();
        loader.load(4).await.unwrap();
        assert_eq!(calls.lock().unwrap().len(), 2);
        assert_eq!(loader.batches(), 2);
    }

    #[tokio::test]
    async fn max_batch_splits() {
        let (loader, calls) = counting();
        let loader = loader.max_batch(3);
        let values = loader.load_all(0..10).await.unwrap();
        assert_eq!(values.len(), 10);
        assert_eq!(values[8], Some(9));
        let mut sizes: Vec<_> = calls.lock().unwrap().iter().map(Vec::len).collect();
        sizes.sort();
        assert_eq!(sizes, [1, 3, 3, 3]);
    }

    #[tokio::test]
    async fn an_error_reaches_every_waiter_and_is_not_remembered() {
        let (loader, calls) = counting();
        let (a, b, c) = tokio::join!(loader.load(13), loader.load(2), loader.load(13));
        for answer in [a, b, c] {
            match answer {
                Err(LoadError::Batch(error)) => assert_eq!(*error, "13 is unlucky"),
                other => panic!("expected the batch error, got {other:?}"),
            }
        }
        assert_eq!(loader.load(2).await.unwrap(), Some(3));
        assert_eq!(calls.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_panicking_batch_cancels_its_waiters() {
        let loader: DataLoader<u32, u32, String> =
            DataLoader::new(|_keys| async { panic!("the batch function failed") });
        assert!(matches!(loader.load(1).await, Err(LoadError::Cancelled)));
    }

    #[tokio::test]
    async fn layer_gives_each_request_fresh_loaders() {
        use tower_layer::Layer;
        use tower_service::Service;

        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let layer = LoadersLayer::new().loader("double", move || {
            counter.fetch_add(1, Ordering::Relaxed);
            DataLoader::new(|keys: Vec<u32>| async move {
                Ok::<_, String>(keys.into_iter().map(|k| (k, k * 2)).collect())
            })
        });
        let mut service = layer.layer(tower::service_fn(|request: http::Request<()>| async move {
            let loaders = request.extensions().get::<Loaders>().unwrap().clone();
            assert!(
                loaders.get::<u32, u64, String>("double").is_none(),
                "wrong types"
            );
            assert!(loaders.get::<u32, u32, String>("missing").is_none());
            let loader = loaders.get::<u32, u32, String>("double").unwrap();
            let again = loaders.get::<u32, u32, String>("double").unwrap();
            let (a, b) = tokio::join!(loader.load(2), again.load(3));
            assert_eq!(loader.batches(), 1, "one loader per name per request");
            Ok::<_, std::convert::Infallible>(a.unwrap().unwrap() + b.unwrap().unwrap())
        }));
        assert_eq!(service.call(http::Request::new(())).await.unwrap(), 10);
        assert_eq!(service.call(http::Request::new(())).await.unwrap(), 10);
        assert_eq!(
            made.load(Ordering::Relaxed),
            2,
            "a fresh loader per request"
        );
    }
}
