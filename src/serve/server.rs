//! The configuration: [`Server`], its defaults and the environment variables behind them.

use std::{num::NonZeroUsize, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;

use super::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL,
    DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITE_TIMEOUT, Serve,
};
use crate::EnvError;
use crate::env::var;

const HEADER_READ_TIMEOUT: &str = "HEADER_READ_TIMEOUT_SECS";
const WRITE_TIMEOUT: &str = "WRITE_TIMEOUT_SECS";
const MAX_CONNECTIONS: &str = "MAX_CONNECTIONS";

const SECONDS_OR_ZERO: &str = "a whole number of seconds (0 disables the timeout)";
const CONNECTIONS: &str = "a whole number of connections, 1 or more";

/// How connections are served: timeouts, the connection bound, HTTP/2 keep-alive; see the
/// [module docs](super).
///
/// Configuration only: cheap to clone, and [`serve`](Server::serve) turns it into a running
/// server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Server {
    pub(super) header_read_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
    pub(super) max_connections: usize,
    pub(super) http2_keep_alive_interval: Option<Duration>,
    pub(super) http2_keep_alive_timeout: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with every default: [`DEFAULT_HEADER_READ_TIMEOUT`] (which is also the
    /// keep-alive idle timeout), [`DEFAULT_WRITE_TIMEOUT`], [`DEFAULT_MAX_CONNECTIONS`],
    /// HTTP/2 pings every [`DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL`] answered within
    /// [`DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT`].
    pub const fn new() -> Self {
        Self {
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http2_keep_alive_interval: Some(DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL),
            http2_keep_alive_timeout: DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT,
        }
    }

    /// The defaults of [`new`](Self::new), overridden by the variables that are set:
    ///
    /// | variable | setter | accepted values |
    /// | --- | --- | --- |
    /// | `HEADER_READ_TIMEOUT_SECS` | [`header_read_timeout`](Self::header_read_timeout) (also the keep-alive idle timeout) | whole seconds, `0` disables |
    /// | `WRITE_TIMEOUT_SECS` | [`write_timeout`](Self::write_timeout) | whole seconds, `0` disables |
    /// | `MAX_CONNECTIONS` | [`max_connections`](Self::max_connections) | a whole number, 1 or more |
    ///
    /// # Errors
    ///
    /// When a variable is set to something it cannot be; the error names the variable, its
    /// value and what it accepts. Unset or blank variables keep the default.
    pub fn from_env() -> Result<Self, EnvError> {
        Ok(Self::new().apply_env(&EnvValues::read()?))
    }

    /// Applies the values read from the environment over the current settings.
    fn apply_env(mut self, env: &EnvValues) -> Self {
        if let Some(secs) = env.header_read_timeout_secs {
            self = self.header_read_timeout(seconds_or_off(secs));
        }
        if let Some(secs) = env.write_timeout_secs {
            self = self.write_timeout(seconds_or_off(secs));
        }
        if let Some(max) = env.max_connections {
            self = self.max_connections(max.get());
        }
        self
    }

    /// How long a connection may take to send a complete request head (request line and
    /// headers), counted from when the server starts waiting for it; `None` waits forever.
    /// Defaults to [`DEFAULT_HEADER_READ_TIMEOUT`].
    ///
    /// The server waits for a head on a new connection *and* between the requests of a
    /// keep-alive connection, so this one timer is also the keep-alive idle timeout: see
    /// [`idle_timeout`](Self::idle_timeout). It is a deadline for the whole head, not per
    /// read, so trickling one header line at a time does not extend it. A new connection
    /// that sends nothing at all is closed after it too (before the HTTP version is known).
    pub fn header_read_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.header_read_timeout = timeout.into();
        self
    }

    /// The same setting as [`header_read_timeout`](Self::header_read_timeout), under the
    /// name it has for keep-alive connections: how long a connection may sit idle between
    /// two requests before it is closed. Setting one sets the other; the last call wins.
    ///
    /// hyper starts a single timer whenever it waits for a request head, whether or not the
    /// client has sent part of it, so the two cannot differ. Behind a load balancer or a
    /// reverse proxy that reuses connections, keep its idle timeout *shorter* than this one,
    /// or it may send a request on a connection the server is closing.
    pub fn idle_timeout(self, timeout: impl Into<Option<Duration>>) -> Self {
        self.header_read_timeout(timeout)
    }

    /// How long a write may make no progress before the connection is closed; `None`
    /// never closes it. Defaults to [`DEFAULT_WRITE_TIMEOUT`].
    ///
    /// The countdown starts when the socket refuses more data (the peer's receive window
    /// and the kernel's send buffer are full, i.e. the peer stopped reading) and restarts
    /// with every byte that goes out. A handler that takes minutes to compute its answer
    /// writes nothing meanwhile and is never cut off by it; bound that with
    /// [`TimeoutLayer`](https://docs.rs/perfkit/latest/perfkit/timeout/struct.TimeoutLayer.html).
    pub fn write_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.write_timeout = timeout.into();
        self
    }

    /// The most connections open at once. Defaults to [`DEFAULT_MAX_CONNECTIONS`].
    ///
    /// At the bound the server stops accepting; new connections wait in the kernel's listen
    /// backlog (and are refused once it is full) until an open one closes. Size it below
    /// the process's file-descriptor limit (`ulimit -n`) minus what the rest of the process
    /// holds open: pools, log files, and outgoing connections that handlers open.
    /// Values above tokio's semaphore maximum (`usize::MAX >> 3`) are capped to it.
    ///
    /// # Panics
    ///
    /// If `max` is 0: such a server could never accept a connection.
    pub fn max_connections(mut self, max: usize) -> Self {
        assert!(
            max > 0,
            "max_connections(0) would never accept a connection; set it to 1 or more"
        );
        self.max_connections = max.min(tokio::sync::Semaphore::MAX_PERMITS);
        self
    }

    /// How often an HTTP/2 connection is pinged; `None` never pings. Defaults to
    /// [`DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL`].
    ///
    /// A peer that does not answer a ping within
    /// [`http2_keep_alive_timeout`](Self::http2_keep_alive_timeout) is disconnected: this is
    /// how a dead or unresponsive HTTP/2 peer is detected, where HTTP/1 relies on the
    /// header-read timeout.
    pub fn http2_keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.http2_keep_alive_interval = interval.into();
        self
    }

    /// How long an HTTP/2 peer has to answer a keep-alive ping. Defaults to
    /// [`DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT`]; does nothing when pings are off.
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.http2_keep_alive_timeout = timeout;
        self
    }

    /// Serves `service` on `listener` with this configuration. Nothing happens until the
    /// returned [`Serve`] is awaited.
    pub fn serve<S>(self, listener: TcpListener, service: S) -> Serve<S> {
        Serve::new(self, listener, service)
    }

    /// The hyper connection builder these settings describe.
    pub(super) fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.http2_keep_alive_interval)
            .keep_alive_timeout(self.http2_keep_alive_timeout);
        builder
    }
}

/// The variables as read, before they are applied.
#[derive(Clone, Debug, Default, PartialEq)]
struct EnvValues {
    header_read_timeout_secs: Option<u64>,
    write_timeout_secs: Option<u64>,
    max_connections: Option<NonZeroUsize>,
}

impl EnvValues {
    /// Reads `HEADER_READ_TIMEOUT_SECS`, `WRITE_TIMEOUT_SECS` and `MAX_CONNECTIONS`; unset or
    /// blank variables stay `None`.
    fn read() -> Result<Self, EnvError> {
        Ok(Self {
            header_read_timeout_secs: var(HEADER_READ_TIMEOUT, SECONDS_OR_ZERO)?,
            write_timeout_secs: var(WRITE_TIMEOUT, SECONDS_OR_ZERO)?,
            max_connections: var(MAX_CONNECTIONS, CONNECTIONS)?,
        })
    }
}

fn seconds_or_off(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Serves `service` on `listener` with the [`Server::new`] defaults; see the
/// [module docs](mod@crate::serve).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use axum::{Router, routing::get};
///
/// let app = Router::new().route("/hello", get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// perfkit::serve(listener, app).await
/// # }
/// ```
pub fn serve<S>(listener: TcpListener, service: S) -> Serve<S> {
    Server::new().serve(listener, service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let server = Server::new();
        assert_eq!(server, Server::default());
        assert_eq!(
            server.header_read_timeout,
            Some(DEFAULT_HEADER_READ_TIMEOUT)
        );
        assert_eq!(server.write_timeout, Some(DEFAULT_WRITE_TIMEOUT));
        assert_eq!(server.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            server.http2_keep_alive_interval,
            Some(DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL)
        );
        assert_eq!(
            server.http2_keep_alive_timeout,
            DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT
        );
    }

    #[test]
    fn environment_values_override_the_defaults() {
        let env = EnvValues {
            header_read_timeout_secs: Some(5),
            write_timeout_secs: Some(0),
            max_connections: NonZeroUsize::new(200),
        };
        let server = Server::new().apply_env(&env);
        assert_eq!(server.header_read_timeout, Some(Duration::from_secs(5)));
        assert_eq!(server.write_timeout, None, "0 disables the timeout");
        assert_eq!(server.max_connections, 200);
        assert_eq!(
            Server::new().apply_env(&EnvValues::default()),
            Server::new()
        );
    }

    #[test]
    fn idle_timeout_is_the_header_read_timeout() {
        let server = Server::new().idle_timeout(Duration::from_secs(75));
        assert_eq!(server.header_read_timeout, Some(Duration::from_secs(75)));
        let server = server.header_read_timeout(None);
        assert_eq!(server.header_read_timeout, None);
    }

    #[test]
    fn max_connections_is_capped_to_what_a_semaphore_holds() {
        let server = Server::new().max_connections(usize::MAX);
        assert_eq!(server.max_connections, tokio::sync::Semaphore::MAX_PERMITS);
    }

    #[test]
    #[should_panic(expected = "max_connections(0)")]
    fn zero_connections_is_refused() {
        let _ = Server::new().max_connections(0);
    }
}
