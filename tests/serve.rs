//! `perfkit::serve` over real sockets on 127.0.0.1: the timeouts close what they should and
//! nothing else, the connection bound holds, requests carry their peer, shutdown drains.
//!
//! Timeouts are a few hundred milliseconds so the suite stays fast; bounds on when things
//! happen are loose enough for a loaded two-core machine.

use std::{
    future::IntoFuture,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{ConnectInfo, Extension, Query},
    routing::get,
};
use bytes::Bytes;
use perfkit::serve::{Server, ServerHandle};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};

const HEADER_TIMEOUT: Duration = Duration::from_millis(400);
const WRITE_TIMEOUT: Duration = Duration::from_millis(400);
/// Far more than the socket buffers of both ends hold.
const BIG: usize = 16 << 20;

#[derive(serde::Deserialize)]
struct Ms {
    ms: u64,
}

fn app() -> Router {
    let big = Bytes::from(vec![b'x'; BIG]);
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/slow",
            get(|Query(Ms { ms }): Query<Ms>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("slept {ms}")
            }),
        )
        .route("/big", get(move || async move { big.clone() }))
        .route(
            "/peer",
            get(
                |Extension(peer): Extension<SocketAddr>,
                 ConnectInfo(info): ConnectInfo<SocketAddr>| async move {
                    format!("{peer} {info}")
                },
            ),
        )
}

fn server() -> Server {
    Server::new()
        .header_read_timeout(HEADER_TIMEOUT)
        .write_timeout(WRITE_TIMEOUT)
}

async fn start(server: Server) -> (SocketAddr, ServerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = server.serve(listener, app());
    let handle = serve.handle();
    tokio::spawn(serve.into_future());
    (addr, handle)
}

/// One request on a fresh connection with `Connection: close`; the whole raw response.
async fn fetch(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    fetch_on(&mut stream, path).await
}

async fn fetch_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

/// Reads until the server closes the connection (EOF or reset); returns when that was.
async fn closed_at(stream: &mut TcpStream) -> Instant {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

/// Waits up to `within` for `condition`, checking every 10 ms.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

#[tokio::test]
async fn slowloris_is_closed_at_the_header_read_timeout_while_others_are_served() {
    let (addr, handle) = start(server()).await;

    let mut slow = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    slow.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    // One header line every 100 ms: each read makes progress, the head never completes.
    let trickle = tokio::spawn(async move {
        for n in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer
                .write_all(format!("x-{n}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });

    // Meanwhile a normal client is answered.
    let hello = fetch(addr, "/hello").await;
    assert!(hello.starts_with("HTTP/1.1 200 OK"), "{hello}");
    assert!(hello.ends_with("hello"), "{hello}");

    // Read until EOF or reset, whichever the server's close produces.
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut buf))
        .await
        .expect("the trickling connection was closed");
    let elapsed = start.elapsed();
    trickle.abort();
    assert!(
        elapsed >= HEADER_TIMEOUT - Duration::from_millis(50),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < HEADER_TIMEOUT + Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert!(eventually(Duration::from_secs(2), || handle.open_connections() == 0).await);
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_read_timeout() {
    let (addr, handle) = start(server()).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), closed_at(&mut silent))
        .await
        .expect("the silent connection was closed");
    let elapsed = closed - start;
    assert!(
        elapsed >= HEADER_TIMEOUT - Duration::from_millis(50),
        "{elapsed:?}"
    );
    assert!(eventually(Duration::from_secs(2), || handle.open_connections() == 0).await);
}

/// Reads one response with a `Content-Length` from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if raw.len() >= head_end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_same_timeout() {
    let (addr, handle) = start(server()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();

    // Requests closer together than the timeout keep the connection: the timer restarts
    // after every response.
    let start = Instant::now();
    for _ in 0..4 {
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let response = read_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        tokio::time::sleep(HEADER_TIMEOUT / 2).await;
    }
    assert!(start.elapsed() > HEADER_TIMEOUT * 2);

    // Then idle: closed about one timeout after the last response.
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut stream).await;
    let idle_from = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), closed_at(&mut stream))
        .await
        .expect("the idle connection was closed");
    let idle = closed - idle_from;
    assert!(
        idle >= HEADER_TIMEOUT - Duration::from_millis(50),
        "{idle:?}"
    );
    assert!(
        idle < HEADER_TIMEOUT + Duration::from_millis(1500),
        "{idle:?}"
    );
    assert!(eventually(Duration::from_secs(2), || handle.open_connections() == 0).await);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    let (addr, handle) = start(server()).await;

    // A small receive buffer, so the server's writes stall well before the body is out.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    assert!(eventually(Duration::from_secs(2), || handle.open_connections() == 1).await);

    // Never read: the server closes its end once its writes made no progress for 400 ms.
    assert!(
        eventually(Duration::from_secs(10), || handle.open_connections() == 0).await,
        "the stalled connection is still open after {:?}",
        start.elapsed()
    );
    let elapsed = start.elapsed();
    assert!(elapsed >= WRITE_TIMEOUT, "{elapsed:?}");

    // What reached the client is a cut-off response, never the whole body.
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received).await;
    assert!(received.starts_with(b"HTTP/1.1 200 OK"));
    assert!(received.len() < BIG, "{} bytes", received.len());
    drop(stream);
}

#[tokio::test]
async fn a_handler_slower_than_every_timeout_still_gets_its_full_response() {
    let (addr, handle) = start(
        Server::new()
            .header_read_timeout(Duration::from_millis(300))
            .write_timeout(Duration::from_millis(300)),
    )
    .await;
    let start = Instant::now();
    let response = fetch(addr, "/slow?ms=1000").await;
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("slept 1000"), "{response}");

    // And a large body to a client that reads steadily arrives whole.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    assert!(raw.ends_with(&vec![b'x'; 1024]));
    assert!(raw.len() > BIG);
    assert!(eventually(Duration::from_secs(2), || handle.open_connections() == 0).await);
}

#[tokio::test]
async fn max_connections_holds_and_new_clients_get_in_once_idle_ones_are_culled() {
    const MAX: usize = 3;
    let (addr, handle) = start(server().max_connections(MAX)).await;

    // Watch the count for the whole test.
    let highest = Arc::new(AtomicUsize::new(0));
    let watch = {
        let (handle, highest) = (handle.clone(), Arc::clone(&highest));
        tokio::spawn(async move {
            loop {
                highest.fetch_max(handle.open_connections(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Twice the bound in silent connections: the kernel completes every handshake, the
    // server accepts only three at a time.
    let mut idle = Vec::new();
    for _ in 0..2 * MAX {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    assert!(eventually(Duration::from_secs(2), || handle.open_connections() == MAX).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handle.open_connections(), MAX, "no more than the bound");

    // This client waits in the backlog behind them, and is answered once the header-read
    // timeout has culled both batches.
    let start = Instant::now();
    let hello = tokio::time::timeout(Duration::from_secs(5), fetch(addr, "/hello"))
        .await
        .expect("answered once the idle connections were closed");
    let waited = start.elapsed();
    assert!(hello.starts_with("HTTP/1.1 200 OK"), "{hello}");
    assert!(waited >= HEADER_TIMEOUT / 2, "{waited:?}");

    watch.abort();
    assert!(
        highest.load(Ordering::Relaxed) <= MAX,
        "{} open at once",
        highest.load(Ordering::Relaxed)
    );
    assert!(
        handle.accepted_connections() > 2 * MAX as u64,
        "the six idle ones and the client"
    );
    drop(idle);
}

#[tokio::test]
async fn requests_carry_the_peer_address() {
    let (addr, _) = start(server()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let response = fetch_on(&mut stream, "/peer").await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with(&format!("{local} {local}")),
        "SocketAddr and ConnectInfo both name {local}: {response}"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = server()
        .serve(listener, app())
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        });
    let handle = serve.handle();
    let server = tokio::spawn(serve.into_future());

    let in_flight = tokio::spawn(fetch(addr, "/slow?ms=600"));
    assert!(eventually(Duration::from_secs(2), || handle.open_connections() == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();

    let response = in_flight.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("slept 600"), "{response}");
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the server finished once the connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(handle.open_connections(), 0);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let (addr, _) = start(server()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut frame = [0; 9];
    stream.read_exact(&mut frame).await.unwrap();
    assert_eq!(
        frame[3], 4,
        "the server's first frame is its SETTINGS: {frame:?}"
    );
}

#[tokio::test]
async fn a_slow_steady_reader_on_keep_alive_gets_the_whole_body() {
    // hyper's header-read timer waits for the next head once a response is done; reading
    // this one takes several header-read timeouts, and must not be cut short by it.
    let (addr, _) = start(server()).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut head_and_body = 0;
    let mut buf = vec![0; 64 * 1024];
    while head_and_body <= BIG {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "cut after {head_and_body} bytes in {:?}",
            start.elapsed()
        );
        head_and_body += n;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        start.elapsed() > HEADER_TIMEOUT * 2,
        "{:?}",
        start.elapsed()
    );

    // The connection is still usable.
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
}
