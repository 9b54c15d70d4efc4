//! The invalidation subscription shared by the backends that keep something in process
//! memory on behalf of Redis: the [`TieredBackend`](super::TieredBackend)'s L1 copies and
//! the [`RedisBackend`](super::RedisBackend)'s tracked tag epochs.
//!
//! A [`Subscription`] subscribes to the channel (`{namespace}:l1`) of every namespace it is
//! asked for, hands each message to its [`Listener`], checks the idle connection with a
//! `PING`, and reopens it with backoff when it drops. Between the drop and the moment every
//! wanted channel is subscribed again, messages may be missed, so the subscription is not
//! [`live`](Subscription::is_live) and its listener is told to forget what it holds.

use std::{
    fmt,
    future::poll_fn,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    task::Poll,
    time::Duration,
};

use ::redis::aio::{PubSubSink, PubSubStream};
use futures_core::Stream;
use tokio::{sync::Notify, task::JoinHandle};

use crate::log_gate::{LOG_INTERVAL, LogGate};

use super::{backend::now_ms, error::BackendError};

/// First pause before resubscribing; it doubles, with jitter, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long opening the subscription, or one `SUBSCRIBE` or `PING` on it, may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default ping interval of a subscription.
pub(super) const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);

/// What a subscription feeds.
pub(super) trait Listener: Send + Sync + 'static {
    /// Applies one message published on a subscribed channel.
    fn apply(&self, payload: &[u8]) -> impl Future<Output = ()> + Send;

    /// Every wanted channel is subscribed (again): forget whatever may have been missed.
    fn resync(&self) -> impl Future<Output = ()> + Send;

    /// The subscription dropped; messages from now on may be missed.
    fn lost(&self);
}

/// A subscription to the invalidation channels of the namespaces in use.
///
/// The listener task starts when the first namespace is wanted (inside a Tokio runtime)
/// and ends when the subscription is dropped.
pub(super) struct Subscription<L> {
    state: Arc<State<L>>,
    task: OnceLock<JoinHandle<()>>,
}

struct State<L> {
    listener: L,
    /// Tried in turn until one opens a connection.
    clients: Vec<::redis::Client>,
    ping_interval: Duration,
    /// Whether every wanted channel is subscribed and no message was missed since.
    live: AtomicBool,
    namespaces: Mutex<Namespaces>,
    /// Wakes the listener task when a namespace is wanted.
    wake: Notify,
    /// What the listener serves, for the log line when the subscription drops.
    serves: &'static str,
    lost_log: LogGate,
}

#[derive(Default)]
struct Namespaces {
    /// Hash tags (`{namespace}`) whose channel should be subscribed.
    wanted: Vec<Arc<str>>,
    /// Those subscribed on the current connection.
    subscribed: Vec<Arc<str>>,
}

impl<L: Listener> Subscription<L> {
    /// A subscription feeding `listener`, opened through the first of `clients` that
    /// answers. `serves` completes the log line "... subscription lost: `serves`".
    pub(super) fn new(
        listener: L,
        clients: Vec<::redis::Client>,
        ping_interval: Duration,
        serves: &'static str,
    ) -> Self {
        Self {
            state: Arc::new(State {
                listener,
                clients,
                ping_interval: ping_interval.max(Duration::from_millis(1)),
                live: AtomicBool::new(false),
                namespaces: Mutex::default(),
                wake: Notify::new(),
                serves,
                lost_log: LogGate::new(LOG_INTERVAL),
            }),
            task: OnceLock::new(),
        }
    }

    pub(super) fn listener(&self) -> &L {
        &self.state.listener
    }

    /// Whether the subscription is up and nothing was missed since the listener's last
    /// resync.
    #[inline]
    pub(super) fn is_live(&self) -> bool {
        self.state.live.load(SeqCst)
    }

    /// Whether the namespace of `storage` is subscribed on the current connection.
    pub(super) fn subscribed(&self, storage: &str) -> bool {
        let Some(namespace) = namespace_of(storage) else {
            return false;
        };
        lock(&self.state.namespaces)
            .subscribed
            .iter()
            .any(|known| **known == *namespace)
    }

    /// Makes sure the namespace of `storage` is (or will be) subscribed.
    pub(super) fn want(&self, storage: &str) {
        let _ = self.want_live(storage);
    }

    /// Makes sure the namespace of `storage` is (or will be) subscribed, and says, under
    /// the same lock, whether it is subscribed with the subscription live: one lock for a
    /// read on the hot path.
    pub(super) fn want_live(&self, storage: &str) -> bool {
        let Some(namespace) = namespace_of(storage) else {
            return false;
        };
        {
            let mut namespaces = lock(&self.state.namespaces);
            if namespaces.wanted.iter().any(|known| **known == *namespace) {
                return self.is_live()
                    && namespaces
                        .subscribed
                        .iter()
                        .any(|known| **known == *namespace);
            }
            namespaces.wanted.push(namespace.into());
        }
        self.state.wake.notify_one();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.task
                .get_or_init(|| runtime.spawn(listen(Arc::clone(&self.state))));
        }
        false
    }
}

impl<L> Drop for Subscription<L> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl<L> fmt::Debug for Subscription<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("live", &self.state.live.load(SeqCst))
            .field("namespaces", &lock(&self.state.namespaces).wanted.len())
            .finish()
    }
}

impl<L: Listener> State<L> {
    fn lost(&self, reason: &dyn fmt::Display) {
        self.live.store(false, SeqCst);
        self.listener.lost();
        lock(&self.namespaces).subscribed.clear();
        if let Some(held_back) = self.lost_log.open(now_ms()) {
            tracing::warn!(
                error = %reason,
                held_back,
                "cache invalidation subscription lost: {}",
                self.serves
            );
        }
    }
}

/// The listener task: subscribes, applies messages, resubscribes with backoff when dropped.
async fn listen<L: Listener>(state: Arc<State<L>>) {
    let mut backoff = MIN_BACKOFF;
    let mut next = 0;
    loop {
        match subscribe(&state, next).await {
            Ok((sink, stream)) => {
                backoff = MIN_BACKOFF;
                let reason = run(&state, sink, stream).await;
                state.lost(&reason);
            }
            Err(error) => state.lost(&error),
        }
        // The next attempt goes to the next node, should this one be gone.
        next = next.wrapping_add(1);
        let jitter = 0.5 + fastrand::f64();
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Opens the subscription to every wanted namespace, then resyncs the listener and trusts
/// it again.
async fn subscribe<L: Listener>(
    state: &State<L>,
    attempt: usize,
) -> Result<(PubSubSink, PubSubStream), BackendError> {
    let Some(client) = state.clients.get(attempt % state.clients.len().max(1)) else {
        return Err(BackendError::new(
            "redis",
            "no Redis node to subscribe to invalidations",
        ));
    };
    let pubsub = timed(client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    let wanted = lock(&state.namespaces).wanted.clone();
    for namespace in &wanted {
        timed(sink.subscribe(channel(namespace))).await?;
    }
    // Anything published from now on arrives; anything before is covered by the resync.
    state.listener.resync().await;
    lock(&state.namespaces).subscribed = wanted;
    state.live.store(true, SeqCst);
    tracing::debug!("cache invalidation subscription up");
    Ok((sink, stream))
}

/// Applies messages until the subscription drops; returns why it dropped.
async fn run<L: Listener>(
    state: &State<L>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
) -> String {
    let mut ping = tokio::time::interval(state.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        let mut notified = std::pin::pin!(state.wake.notified());
        let event = poll_fn(|cx| {
            if let Poll::Ready(message) = Pin::new(&mut stream).poll_next(cx) {
                return Poll::Ready(Event::Message(message));
            }
            if notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Wanted);
            }
            if ping.poll_tick(cx).is_ready() {
                return Poll::Ready(Event::Ping);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Message(Some(message)) => {
                state.listener.apply(message.get_payload_bytes()).await;
            }
            Event::Message(None) => return "connection closed".to_owned(),
            Event::Wanted => {
                let missing: Vec<Arc<str>> = {
                    let namespaces = lock(&state.namespaces);
                    namespaces
                        .wanted
                        .iter()
                        .filter(|wanted| !namespaces.subscribed.contains(wanted))
                        .cloned()
                        .collect()
                };
                for namespace in missing {
                    if let Err(error) = timed(sink.subscribe(channel(&namespace))).await {
                        return error.to_string();
                    }
                    lock(&state.namespaces).subscribed.push(namespace);
                }
            }
            Event::Ping => match timed(sink.ping::<::redis::Value>()).await {
                Ok(reply) if is_pong(&reply) => {}
                Ok(reply) => return format!("PING was answered with {reply:?}"),
                Err(error) => return error.to_string(),
            },
        }
    }
}

/// What woke the listener task.
enum Event {
    Message(Option<::redis::Msg>),
    Wanted,
    Ping,
}

/// Runs one subscription step under [`SUBSCRIBE_TIMEOUT`].
async fn timed<T>(step: impl Future<Output = ::redis::RedisResult<T>>) -> Result<T, BackendError> {
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, step).await {
        Ok(result) => result.map_err(|error| BackendError::new("redis", error)),
        Err(_) => Err(BackendError::new(
            "redis",
            format!("the subscription did not answer within {SUBSCRIBE_TIMEOUT:?}"),
        )),
    }
}

/// Whether `reply` answers a `PING`: `PONG` on a connection without subscriptions, and
/// `["pong", ""]` in RESP2's subscribe mode, which is the listener's usual state.
pub(super) fn is_pong(reply: &::redis::Value) -> bool {
    use ::redis::Value;
    let pong = |value: &Value| match value {
        Value::SimpleString(text) => text.eq_ignore_ascii_case("pong"),
        Value::BulkString(bytes) => bytes.eq_ignore_ascii_case(b"pong"),
        _ => false,
    };
    match reply {
        Value::Array(items) | Value::Push { data: items, .. } => items.first().is_some_and(pong),
        other => pong(other),
    }
}

/// The hash tag (`{namespace}`) that starts `storage`.
pub(super) fn namespace_of(storage: &str) -> Option<&str> {
    let end = storage.find('}')?;
    storage.starts_with('{').then(|| &storage[..=end])
}

/// The channel of a namespace's hash tag.
pub(super) fn channel(namespace: &str) -> String {
    format!("{namespace}:l1")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pongs_are_recognised_in_and_out_of_subscribe_mode() {
        use ::redis::Value;
        let bulk = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        assert!(is_pong(&Value::SimpleString("PONG".into())));
        assert!(is_pong(&Value::Array(vec![bulk("pong"), bulk("")])));
        assert!(!is_pong(&Value::Array(Vec::new())));
        assert!(!is_pong(&Value::Okay));
        assert!(!is_pong(&bulk("hello")));
    }

    #[test]
    fn namespaces_are_the_leading_hash_tag() {
        assert_eq!(namespace_of("{app}:k:x"), Some("{app}"));
        assert_eq!(namespace_of("app:k:x"), None);
        assert_eq!(channel("{app}"), "{app}:l1");
    }
}
