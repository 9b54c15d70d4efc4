//! The running server: [`Serve`], its graceful-shutdown variant, and the accept loop.

use std::{
    convert::Infallible,
    fmt,
    future::{Future, IntoFuture, Pending},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown, service::TowerToHyperService};
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};
use tower_service::Service;

use super::{
    ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, Server, ServerHandle,
    conn::{AddPeer, Io},
};
use crate::log_gate::{LOG_INTERVAL, LogGate};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A server ready to run, from [`serve`](super::serve) or [`Server::serve`]; await it (or
/// [`with_graceful_shutdown`](Self::with_graceful_shutdown)) to serve connections.
///
/// The future completes only after a graceful shutdown; accept errors never end it. Its
/// output is an [`io::Result`] so that `main` can `?` it, as with `axum::serve`.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve<S> {
    server: Server,
    listener: TcpListener,
    service: S,
    handle: ServerHandle,
}

impl<S> Serve<S> {
    pub(super) fn new(server: Server, listener: TcpListener, service: S) -> Self {
        Self {
            server,
            listener,
            service,
            handle: ServerHandle::default(),
        }
    }

    /// A handle reporting this server's open and accepted connections; take it before
    /// awaiting the server.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// When the operating system cannot tell (see [`TcpListener::local_addr`]).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Stops accepting once `signal` completes, then waits for the open connections:
    /// requests in flight are answered, idle keep-alive connections are closed at once,
    /// HTTP/2 connections get a GOAWAY.
    ///
    /// The wait has no deadline of its own (a stalled write still ends at the write
    /// timeout); wrap the awaited server in `tokio::time::timeout` to bound it.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("server", &self.server)
            .field("listener", &self.listener)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// A [`Serve`] that shuts down gracefully when its signal completes; see
/// [`Serve::with_graceful_shutdown`].
#[must_use = "a server does nothing until it is awaited"]
pub struct WithGracefulShutdown<S, F> {
    serve: Serve<S>,
    signal: F,
}

impl<S, F> WithGracefulShutdown<S, F> {
    /// A handle reporting this server's open and accepted connections.
    pub fn handle(&self) -> ServerHandle {
        self.serve.handle()
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// When the operating system cannot tell (see [`TcpListener::local_addr`]).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.serve.local_addr()
    }
}

impl<S, F> fmt::Debug for WithGracefulShutdown<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

/// The future of an awaited [`Serve`] or [`WithGracefulShutdown`].
pub struct ServeFuture(Pin<Box<dyn Future<Output = io::Result<()>> + Send>>);

impl Future for ServeFuture {
    type Output = io::Result<()>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ServeFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeFuture").finish_non_exhaustive()
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> Self::IntoFuture {
        self.with_graceful_shutdown(Never(std::future::pending()))
            .into_future()
    }
}

impl<S, B, F> IntoFuture for WithGracefulShutdown<S, F>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = ServeFuture;

    fn into_future(self) -> Self::IntoFuture {
        let Serve {
            server,
            listener,
            service,
            handle,
        } = self.serve;
        ServeFuture(Box::pin(run(
            server,
            listener,
            service,
            handle,
            self.signal,
        )))
    }
}

/// A signal that never comes.
struct Never(Pending<Infallible>);

impl Future for Never {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(never) => match never {},
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Errors that concern one connection that is already gone, not the listener: the next
/// accept may succeed at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

async fn run<S, B, F>(
    server: Server,
    listener: TcpListener,
    service: S,
    handle: ServerHandle,
    signal: F,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    let builder = Arc::new(server.builder());
    let permits = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64;
    let accept_log = LogGate::new(LOG_INTERVAL);
    let limit_log = LogGate::new(LOG_INTERVAL);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(signal);

    'serve: loop {
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(held_back) = limit_log.open(now_ms()) {
                    tracing::warn!(
                        max_connections = server.max_connections,
                        held_back,
                        "connection limit reached; new connections wait in the listen backlog"
                    );
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => {
                        permit.expect("the connection semaphore is never closed")
                    }
                    () = &mut signal => break 'serve,
                }
            }
        };
        let (stream, peer) = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        break accepted;
                    }
                    Err(error) if is_connection_error(&error) => {
                        tracing::debug!(%error, "accepted connection failed");
                    }
                    Err(error) => {
                        if let Some(held_back) = accept_log.open(now_ms()) {
                            tracing::error!(
                                %error,
                                held_back,
                                retry_in_ms = backoff.as_millis() as u64,
                                "accept failed; retrying"
                            );
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = &mut signal => break 'serve,
                        }
                        backoff = backoff.saturating_mul(2).min(ACCEPT_BACKOFF_MAX);
                    }
                },
                () = &mut signal => break 'serve,
            }
        };

        let open = handle.opened();
        let io = Io::new(stream, server.header_read_timeout, server.write_timeout);
        let service = TowerToHyperService::new(AddPeer {
            inner: service.clone(),
            peer,
        });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // Dropped last: the socket is closed before the connection stops counting.
            let _permit = permit;
            let _open = open;
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(Box::pin(io)), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %error, "connection closed with an error");
            }
        });
    }

    drop(listener);
    tracing::debug!(
        open_connections = handle.open_connections(),
        "shutting down: waiting for open connections"
    );
    graceful.shutdown().await;
    Ok(())
}
