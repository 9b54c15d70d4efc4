//! Serving a tower HTTP service over TCP, with the connection limits `axum::serve` lacks.
//!
//! [`serve`] drives any tower service that answers `Request<hyper::body::Incoming>` (an axum
//! `Router` as it is) over a [`TcpListener`](tokio::net::TcpListener) with hyper 1 and
//! hyper-util, HTTP/1 and HTTP/2 (detected per connection), and closes connections that
//! hold a socket without doing their part: clients that never finish their request head,
//! keep-alive connections left idle, peers that stop reading what they asked for. It bounds
//! the number of open connections below the file-descriptor limit, never lets an accept
//! error end or spin the server, and hands each request its peer address.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use perfkit::serve::Server;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = Router::new().route("/hello", get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!
//! // `perfkit::serve(listener, app)` with every default; here read from the environment
//! // (HEADER_READ_TIMEOUT_SECS, WRITE_TIMEOUT_SECS, MAX_CONNECTIONS) and adjusted.
//! let server = Server::from_env()?
//!     .write_timeout(Duration::from_secs(60))
//!     .serve(listener, app);
//! let handle = server.handle();
//! tokio::spawn(async move {
//!     loop {
//!         tokio::time::sleep(Duration::from_secs(60)).await;
//!         tracing::info!(open = handle.open_connections(), "connections");
//!     }
//! });
//! server
//!     .with_graceful_shutdown(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What each limit stops
//!
//! | setting | default | closes | attack it stops |
//! | --- | --- | --- | --- |
//! | [`header_read_timeout`](Server::header_read_timeout) | [10 s](DEFAULT_HEADER_READ_TIMEOUT) | a connection whose request head (request line and headers) is not complete this long after the server started waiting for it | slowloris: heads sent a line every few seconds, or connections opened and left silent |
//! | the same timer, as [`idle_timeout`](Server::idle_timeout) | the same | a keep-alive connection idle this long between requests | idle connections piling up until they exhaust file descriptors |
//! | [`write_timeout`](Server::write_timeout) | [30 s](DEFAULT_WRITE_TIMEOUT) | a connection whose pending write makes no progress this long | clients that request a large response and stop reading (slow read), holding the connection and its buffered response |
//! | [`max_connections`](Server::max_connections) | [512](DEFAULT_MAX_CONNECTIONS) | nothing: past the bound the server stops accepting until a connection closes | running out of file descriptors (`accept error: Too many open files`), which also starves the database pool and log files |
//! | [`http2_keep_alive_interval`](Server::http2_keep_alive_interval) / [`http2_keep_alive_timeout`](Server::http2_keep_alive_timeout) | [20 s](DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL) / [20 s](DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT) | an HTTP/2 connection that does not answer a ping in time | dead or unresponsive HTTP/2 peers |
//!
//! **Header-read and idle timeout are one knob.** hyper (1.12) starts its header-read timer
//! whenever an HTTP/1 connection waits for a request head: on a new connection and again
//! after each response on a keep-alive connection. So the same duration bounds how long a
//! client may take to send a head and how long a keep-alive connection may stay idle;
//! [`Server::idle_timeout`] is another name for the same setting. The deadline covers the
//! whole head, so trickling bytes does not extend it. Behind a load balancer or reverse
//! proxy that keeps connections to the app open, set the proxy's idle timeout *below*
//! this one (or raise this one above the proxy's: AWS ALB defaults to 60 s), or the proxy
//! may send a request on a connection the app is just closing and answer `502`.
//!
//! A response read slowly is not cut by this timer: hyper waits for the next head only once
//! the response has been written out. With *pipelined* requests, though, hyper can wait for
//! the next head while earlier responses are still being written, so a pipelining client
//! that stops reading may be closed at the header-read timeout rather than the write
//! timeout.
//!
//! Before a connection's HTTP version is known (hyper-util reads up to the 24 bytes of the
//! HTTP/2 preface to decide), neither protocol's timers run; perfkit applies the header-read
//! timeout to that phase too, so a connection that sends nothing is closed after it. A
//! client can therefore take up to twice the timeout for its first head: once to send its
//! first byte, once for the rest.
//!
//! **The write-stall timeout counts only time with a write pending.** The countdown starts
//! when the socket accepts no more data (the peer's receive window and the kernel's send
//! buffer are full) and restarts with every byte that goes out. A slow client that reads
//! steadily is never cut off, and neither is a handler that computes for minutes: it
//! writes nothing meanwhile. Bound handlers with
//! [`TimeoutLayer`](https://docs.rs/perfkit/latest/perfkit/timeout/struct.TimeoutLayer.html),
//! which starts once the head is parsed and cannot see any of the above.
//!
//! **Size `max_connections` to your file-descriptor limit.** The default, 512, leaves half
//! of the common soft limit of 1 024 (`ulimit -n`) to the listener, pools, log files and
//! the outgoing connections handlers open. perfkit cannot read the limit itself without
//! unsafe code; with a higher limit, raise the bound to roughly the limit minus what the
//! rest of the process holds. Connections past the bound wait in the kernel's listen
//! backlog, and are answered as soon as an open one closes (often at the header-read
//! timeout). A connection-limit log line is written at most once per 10 s.
//!
//! # Accept errors
//!
//! An accept that fails for one connection (aborted, reset) is skipped. Any other failure
//! (`EMFILE`/`ENFILE`: out of file descriptors, `ENOBUFS`, `ENOMEM`) pauses accepting for
//! 10 ms, doubling up to 100 ms while it lasts, and is logged at ERROR at most once per
//! 10 s with the number of lines held back. Neither ever ends the server or busy-loops.
//!
//! # Peer addresses
//!
//! Every request carries the connection's peer [`SocketAddr`](std::net::SocketAddr) as a
//! request extension, which the rate limiter's `PeerIp` and `ClientIp` keys read; with the
//! `axum` feature also as `axum::extract::ConnectInfo<SocketAddr>`, so axum's `ConnectInfo`
//! extractor works without `into_make_service_with_connect_info`.
//!
//! # Graceful shutdown
//!
//! [`Serve::with_graceful_shutdown`] stops accepting when its signal completes, lets the
//! requests in flight finish, closes idle connections, and completes once every connection
//! is closed. [`ServerHandle`] reports open and accepted connections.
//!
//! # Cost
//!
//! Per connection: one task, one semaphore permit, a boxed socket wrapper holding three
//! timer entries (two for the write-stall timer, which registers only while a write is
//! pending; one for the version deadline, dropped once the version is known), and hyper's
//! header-read timer. Per request: inserting the peer address into the extensions (one
//! more with `axum`). Nothing is shared between connections but two atomic counters and the
//! semaphore.
//!
//! # Not covered
//!
//! A request *body* sent slowly is not bounded here; bound the handlers that read bodies
//! with a request timeout. An HTTP/2 client that answers pings but never sends anything
//! keeps its connection until it goes away; HTTP/2 flow control that a client never
//! reopens stalls a stream without a pending socket write. `max_connections` bounds what
//! both can hold.

mod conn;
mod handle;
mod run;
mod server;

#[doc(inline)]
pub use self::{
    handle::ServerHandle,
    run::{Serve, ServeFuture, WithGracefulShutdown},
    server::{Server, serve},
};

use std::time::Duration;

/// The default [`Server::header_read_timeout`], which is also the keep-alive idle timeout
/// (`HEADER_READ_TIMEOUT_SECS`): 10 seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`Server::write_timeout`] (`WRITE_TIMEOUT_SECS`): 30 seconds without
/// progress on a pending write.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The default [`Server::max_connections`] (`MAX_CONNECTIONS`): 512, half of the common
/// file-descriptor soft limit of 1 024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The default [`Server::http2_keep_alive_interval`]: a ping every 20 seconds.
pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// The default [`Server::http2_keep_alive_timeout`]: 20 seconds to answer a ping.
pub const DEFAULT_HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The first pause after an accept error that is not about one connection.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// The longest pause between accepts while errors last.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);
