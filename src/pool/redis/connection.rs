use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use ::redis::{
    Arg, AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};

use super::lifetime::Lifetimes;

/// What [`RedisManager::is_valid`](bb8::ManageConnection::is_valid) answers for a connection
/// past its lifetime; it is no connect error, so the error sink ignores it.
const RETIRED: &str = "pooled connection retired at the end of its lifetime";

/// The last error the pool saw while opening or checking a connection.
///
/// bb8 reports these errors only to its error sink and answers a waiting `get` with a bare
/// timeout; keeping the last one lets [`RedisPool::get`](super::RedisPool::get) say why no
/// connection came. A connection opened successfully clears it, so a stale error is never
/// blamed for a later timeout.
#[derive(Clone)]
pub(crate) struct LastConnectError {
    inner: Arc<LastConnectErrorInner>,
}

struct LastConnectErrorInner {
    url: String,
    message: Mutex<Option<String>>,
}

impl LastConnectError {
    pub(crate) fn new(url: String) -> Self {
        Self {
            inner: Arc::new(LastConnectErrorInner {
                url,
                message: Mutex::new(None),
            }),
        }
    }

    /// The last error, if no connection opened since.
    pub(crate) fn get(&self) -> Option<String> {
        self.slot().clone()
    }

    fn clear(&self) {
        let mut slot = self.slot();
        if slot.is_some() {
            tracing::info!(url = %self.inner.url, "Redis pool connects again");
            *slot = None;
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // The lock guards a plain `Option<String>`, which a panic cannot leave half-written.
        self.inner
            .message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for LastConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastConnectError")
            .field("url", &self.inner.url)
            .field("message", &self.get())
            .finish()
    }
}

impl bb8::ErrorSink<RedisError> for LastConnectError {
    fn sink(&self, error: RedisError) {
        if is_retirement(&error) {
            return;
        }
        let message = error.to_string();
        let mut slot = self.slot();
        // bb8 retries a failing connect every few hundred milliseconds: log a new error once,
        // and its repetitions only at debug level.
        if slot.as_deref() == Some(message.as_str()) {
            tracing::debug!(url = %self.inner.url, error = %message, "Redis pool connection failed again");
        } else {
            tracing::warn!(url = %self.inner.url, error = %message, "Redis pool cannot open a connection");
            *slot = Some(message);
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(self.clone())
    }
}

/// Whether `error` is the answer of `is_valid` for a connection past its lifetime.
fn is_retirement(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Client) && error.to_string().starts_with(RETIRED)
}

/// The bb8 connection manager behind a [`RedisPool`](super::RedisPool).
///
/// It opens [`RedisConnection`]s with the builder's connection and response timeouts, gives
/// each its own lifetime within ±10 % of
/// [`max_lifetime`](super::RedisPoolBuilder::max_lifetime), checks them with `PING` when
/// [`pre_ping`](super::RedisPoolBuilder::pre_ping) is on, and tells bb8 to close, rather
/// than reuse, a connection past its lifetime or left in a state the next task must not
/// inherit (see [`RedisConnection`]). It is built by
/// [`RedisPoolBuilder`](super::RedisPoolBuilder) and appears only as the type parameter of
/// [`RedisPool::inner`](super::RedisPool::inner).
pub struct RedisManager {
    client: Client,
    config: AsyncConnectionConfig,
    response_timeout: Option<Duration>,
    last_error: LastConnectError,
    /// `None`: connections live for ever.
    lifetimes: Option<Lifetimes>,
    pre_ping: bool,
}

/// What a [`RedisManager`] is built with, besides its client.
pub(super) struct ManagerSettings {
    pub(super) config: AsyncConnectionConfig,
    pub(super) response_timeout: Option<Duration>,
    pub(super) last_error: LastConnectError,
    pub(super) max_lifetime: Option<Duration>,
    pub(super) pre_ping: bool,
}

impl RedisManager {
    pub(super) fn new(client: Client, settings: ManagerSettings) -> Self {
        Self {
            client,
            config: settings.config,
            response_timeout: settings.response_timeout,
            last_error: settings.last_error,
            lifetimes: settings.max_lifetime.map(Lifetimes::new),
            pre_ping: settings.pre_ping,
        }
    }

    /// The longest any connection lives (bb8's own `max_lifetime`, which backs the
    /// per-connection lifetimes up); `None` when connections live for ever.
    pub(super) fn lifetime_upper_bound(&self) -> Option<Duration> {
        self.lifetimes.as_ref().map(Lifetimes::upper_bound)
    }

    /// Whether bb8 must call `is_valid` on every checkout: to ping, or to retire
    /// connections that outlived their lifetime while idle.
    pub(super) fn checks_on_checkout(&self) -> bool {
        self.pre_ping || self.lifetimes.is_some()
    }
}

impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisManager")
            .field("url", &self.last_error.inner.url)
            .field("response_timeout", &self.response_timeout)
            .field(
                "max_lifetime",
                &self.lifetimes.as_ref().map(|l| l.upper_bound()),
            )
            .field("pre_ping", &self.pre_ping)
            .finish_non_exhaustive()
    }
}

impl bb8::ManageConnection for RedisManager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        self.last_error.clear();
        let retire_at = self
            .lifetimes
            .as_ref()
            .and_then(|lifetimes| Instant::now().checked_add(lifetimes.draw()));
        Ok(RedisConnection::new(conn, self.response_timeout, retire_at))
    }

    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        // Decided without a round trip: the connection sat idle past its lifetime.
        if conn.outlived(Instant::now()) {
            tracing::debug!(
                url = %self.last_error.inner.url,
                "retiring a pooled Redis connection past its lifetime"
            );
            return Err((ErrorKind::Client, RETIRED).into());
        }
        if !self.pre_ping {
            return Ok(());
        }
        let reply: String = ::redis::cmd("PING").query_async(conn).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err((ErrorKind::Client, "PING was not answered with PONG").into())
        }
    }

    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        if conn.outlived(Instant::now()) {
            tracing::debug!(
                url = %self.last_error.inner.url,
                "retiring a pooled Redis connection past its lifetime"
            );
            return true;
        }
        !conn.recycle()
    }
}

/// One connection of a [`RedisPool`](super::RedisPool), reached through a
/// [`PooledRedisConnection`](super::PooledRedisConnection).
///
/// It implements redis-rs's [`ConnectionLike`], so [`redis::AsyncCommands`], `cmd(..)
/// .query_async`, pipelines and scripts all work on it. It watches what each command leaves
/// behind, and the pool closes it, instead of handing it to the next task, when it was
/// returned:
///
/// - after a command failed with a connection error or timed out (a server error such as
///   `WRONGTYPE` leaves it usable);
/// - while a command was still waiting for its reply (the future was dropped), since the reply
///   would go to the next task;
/// - inside a `MULTI` transaction or with keys under `WATCH`;
/// - after a command that changes the session: `SELECT`, `AUTH`, `HELLO`, `READONLY`,
///   `READWRITE`, `MONITOR`, `SUBSCRIBE` and its variants, `CLIENT REPLY`, `CLIENT TRACKING`,
///   `CLIENT SETNAME` and the like.
///
/// It is also closed when it is returned, or found idle, past its own lifetime (see
/// [`max_lifetime`](super::RedisPoolBuilder::max_lifetime)).
///
/// Closing costs one reconnect; serving the next task a connection in a foreign state costs
/// wrong answers.
pub struct RedisConnection {
    conn: MultiplexedConnection,
    default_timeout: Option<Duration>,
    state: State,
    /// When the pool closes it instead of reusing it; `None`: never.
    retire_at: Option<Instant>,
}

/// What commands left on the connection.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// A command was sent and its reply has not been read.
    awaiting_reply: bool,
    /// A command failed with a connection error or a timeout.
    failed: bool,
    /// `MULTI` was sent and neither `EXEC` nor `DISCARD` followed.
    in_transaction: bool,
    /// `WATCH` was sent and neither `EXEC`, `DISCARD` nor `UNWATCH` followed.
    watching: bool,
    /// A command changed the session (database, name, reply mode, subscriptions...).
    session_changed: bool,
    /// The response timeout was changed for this checkout.
    timeout_changed: bool,
}

impl State {
    fn reusable(self) -> bool {
        !(self.awaiting_reply
            || self.failed
            || self.in_transaction
            || self.watching
            || self.session_changed)
    }
}

/// How a command changes the connection's state.
#[derive(Debug, PartialEq, Eq)]
enum Effect {
    None,
    Multi,
    EndTransaction,
    Watch,
    Unwatch,
    Reset,
    ChangesSession,
}

/// Classifies a command by its name (and subcommand for `CLIENT`).
fn effect(cmd: &Cmd) -> Effect {
    let mut args = cmd.args_iter();
    let Some(Arg::Simple(name)) = args.next() else {
        return Effect::None;
    };
    let mut buf = [0_u8; 10];
    let Some(name) = uppercase(name, &mut buf) else {
        return Effect::None;
    };
    match name {
        b"MULTI" => Effect::Multi,
        b"EXEC" | b"DISCARD" => Effect::EndTransaction,
        b"WATCH" => Effect::Watch,
        b"UNWATCH" => Effect::Unwatch,
        b"RESET" => Effect::Reset,
        b"SELECT" | b"AUTH" | b"HELLO" | b"READONLY" | b"READWRITE" | b"MONITOR" | b"SUBSCRIBE"
        | b"PSUBSCRIBE" | b"SSUBSCRIBE" => Effect::ChangesSession,
        b"CLIENT" => {
            let Some(Arg::Simple(sub)) = args.next() else {
                return Effect::None;
            };
            let mut buf = [0_u8; 10];
            match uppercase(sub, &mut buf) {
                Some(
                    b"REPLY" | b"TRACKING" | b"SETNAME" | b"SETINFO" | b"NO-EVICT" | b"NO-TOUCH"
                    | b"CACHING",
                ) => Effect::ChangesSession,
                _ => Effect::None,
            }
        }
        _ => Effect::None,
    }
}

/// `word` in upper case inside `buf`, or `None` when it is longer than any name we look for.
fn uppercase<'b>(word: &[u8], buf: &'b mut [u8; 10]) -> Option<&'b [u8]> {
    let upper = buf.get_mut(..word.len())?;
    upper.copy_from_slice(word);
    upper.make_ascii_uppercase();
    Some(upper)
}

/// Whether `error` leaves the connection unusable: anything but an error reply from the
/// server (connection errors, timeouts, unreadable replies).
fn breaks_connection(error: &RedisError) -> bool {
    !matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

impl RedisConnection {
    fn new(
        conn: MultiplexedConnection,
        default_timeout: Option<Duration>,
        retire_at: Option<Instant>,
    ) -> Self {
        Self {
            conn,
            default_timeout,
            state: State::default(),
            retire_at,
        }
    }

    /// Whether the connection has lived past its own lifetime at `now`.
    fn outlived(&self, now: Instant) -> bool {
        self.retire_at.is_some_and(|at| now >= at)
    }

    /// Changes how long commands on this connection wait for their reply, until it goes back
    /// to the pool (where the builder's
    /// [`response_timeout`](super::RedisPoolBuilder::response_timeout) is restored). `None`
    /// waits forever, for a `BLPOP key 0`.
    pub fn set_response_timeout(&mut self, timeout: Option<Duration>) {
        // tokio treats a deadline beyond its clock's range as no deadline at all.
        self.conn
            .set_response_timeout(timeout.unwrap_or(Duration::MAX));
        self.state.timeout_changed = true;
    }

    /// Restores the connection's settings for the next checkout; false when it must be
    /// closed instead.
    fn recycle(&mut self) -> bool {
        if !self.state.reusable() {
            return false;
        }
        if self.state.timeout_changed {
            self.conn
                .set_response_timeout(self.default_timeout.unwrap_or(Duration::MAX));
            self.state.timeout_changed = false;
        }
        true
    }

    fn apply(&mut self, cmd: &Cmd, succeeded: bool) {
        let state = &mut self.state;
        match effect(cmd) {
            Effect::None => {}
            Effect::Multi => state.in_transaction |= succeeded,
            Effect::EndTransaction => {
                state.in_transaction = false;
                state.watching = false;
            }
            Effect::Watch => state.watching |= succeeded,
            Effect::Unwatch => state.watching &= !succeeded,
            Effect::Reset => {
                if succeeded {
                    state.in_transaction = false;
                    state.watching = false;
                    state.session_changed = false;
                }
            }
            // Even a failed attempt may have changed something: be conservative.
            Effect::ChangesSession => state.session_changed = true,
        }
    }

    fn settle<T>(&mut self, result: &RedisResult<T>) {
        self.state.awaiting_reply = false;
        if let Err(error) = result
            && breaks_connection(error)
        {
            self.state.failed = true;
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            // Stays set if the future is dropped before the reply is read.
            self.state.awaiting_reply = true;
            let result = self.conn.send_packed_command(cmd).await;
            self.settle(&result);
            self.apply(cmd, result.is_ok());
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.state.awaiting_reply = true;
            let result = self
                .conn
                .send_packed_commands(pipeline, offset, count)
                .await;
            self.settle(&result);
            for cmd in pipeline.cmd_iter() {
                self.apply(cmd, result.is_ok());
            }
            // An atomic pipeline wraps its commands in MULTI/EXEC only when it is encoded,
            // so no EXEC passes through `apply`: once it ran, the transaction and any WATCH
            // before it are over.
            if pipeline.is_transaction() && result.is_ok() {
                self.state.in_transaction = false;
                self.state.watching = false;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("db", &self.conn.get_db())
            .field("reusable", &self.state.reusable())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&str]) -> Cmd {
        let mut cmd = Cmd::new();
        for arg in args {
            cmd.arg(*arg);
        }
        cmd
    }

    #[test]
    fn commands_are_classified_by_name_in_any_case() {
        assert_eq!(effect(&command(&["GET", "k"])), Effect::None);
        assert_eq!(effect(&command(&["multi"])), Effect::Multi);
        assert_eq!(effect(&command(&["Exec"])), Effect::EndTransaction);
        assert_eq!(effect(&command(&["DISCARD"])), Effect::EndTransaction);
        assert_eq!(effect(&command(&["WATCH", "k"])), Effect::Watch);
        assert_eq!(effect(&command(&["unwatch"])), Effect::Unwatch);
        assert_eq!(effect(&command(&["RESET"])), Effect::Reset);
        assert_eq!(effect(&command(&["select", "2"])), Effect::ChangesSession);
        assert_eq!(
            effect(&command(&["SUBSCRIBE", "c"])),
            Effect::ChangesSession
        );
        assert_eq!(
            effect(&command(&["CLIENT", "reply", "OFF"])),
            Effect::ChangesSession
        );
        assert_eq!(effect(&command(&["CLIENT", "ID"])), Effect::None);
        assert_eq!(effect(&command(&["CLIENT"])), Effect::None);
        assert_eq!(effect(&command(&["AVERYLONGCOMMANDNAME"])), Effect::None);
        assert_eq!(effect(&Cmd::new()), Effect::None);
    }

    #[test]
    fn only_a_clean_state_is_reusable() {
        assert!(State::default().reusable());
        let dirty = [
            State {
                awaiting_reply: true,
                ..State::default()
            },
            State {
                failed: true,
                ..State::default()
            },
            State {
                in_transaction: true,
                ..State::default()
            },
            State {
                watching: true,
                ..State::default()
            },
            State {
                session_changed: true,
                ..State::default()
            },
        ];
        for state in dirty {
            assert!(!state.reusable(), "{state:?}");
        }
        assert!(
            State {
                timeout_changed: true,
                ..State::default()
            }
            .reusable()
        );
    }

    #[test]
    fn server_errors_keep_the_connection_and_transport_errors_break_it() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(breaks_connection(&io));
        let parse = RedisError::from((ErrorKind::Parse, "bad reply"));
        assert!(breaks_connection(&parse));
    }

    #[test]
    fn last_connect_error_is_cleared_by_a_successful_connect() {
        use bb8::ErrorSink;
        let last = LastConnectError::new("redis://127.0.0.1:1".into());
        assert_eq!(last.get(), None);
        last.sink(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(
            last.get()
                .is_some_and(|message| message.contains("refused"))
        );
        last.clear();
        assert_eq!(last.get(), None);
    }

    #[test]
    fn retiring_a_connection_is_not_a_connect_error() {
        use bb8::ErrorSink;
        let last = LastConnectError::new("redis://127.0.0.1:1".into());
        let retired = RedisError::from((ErrorKind::Client, RETIRED));
        assert!(is_retirement(&retired));
        last.sink(retired);
        assert_eq!(last.get(), None);
        let other = RedisError::from((ErrorKind::Client, "PING was not answered with PONG"));
        assert!(!is_retirement(&other));
    }
}
