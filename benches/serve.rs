//! `perfkit::serve` beside `axum::serve`, the server it replaces, over real loopback TCP in
//! one run, serving the same axum router:
//!
//! - `serve_keep_alive`: one request and its whole response on a kept-alive connection, the
//!   per-request cost of the connection's timers (header read, write stall);
//! - `serve_new_connection`: connect, one request with `Connection: close`, read to the
//!   end, the per-connection cost (permit, timers, peer-address extension, task).
//!
//! Run with `cargo bench --bench serve --all-features`.

mod support;

use std::{hint::black_box, net::SocketAddr};

use axum::{Router, routing::get};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};

const KEEP_ALIVE: &[u8] = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n";
const CLOSE: &[u8] = b"GET /hello HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
const BODY: &str = "Hello from perfkit!";
const VARIANTS: [&str; 2] = ["axum_serve", "perfkit_serve"];

fn app() -> Router {
    Router::new().route("/hello", get(|| async { BODY }))
}

/// Starts both servers on loopback ports; returns their addresses in [`VARIANTS`] order.
fn start(rt: &Runtime) -> [SocketAddr; 2] {
    rt.block_on(async {
        let axum_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let perfkit_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = [
            axum_listener.local_addr().unwrap(),
            perfkit_listener.local_addr().unwrap(),
        ];
        tokio::spawn(async move {
            axum::serve(
                axum_listener,
                app().into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        tokio::spawn(async move { perfkit::serve(perfkit_listener, app()).await });
        addrs
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addrs = start(&rt);
    let mut c = support::criterion();

    let group_name = "serve_keep_alive";
    let mut group = c.benchmark_group(group_name);
    for (name, addr) in VARIANTS.iter().zip(addrs) {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut buf = Vec::with_capacity(512);
                let started = std::time::Instant::now();
                for _ in 0..iters {
                    stream.write_all(KEEP_ALIVE).await.expect("write");
                    support::tcp::read_response(&mut stream, &mut buf).await;
                    black_box(&buf);
                }
                started.elapsed()
            });
        });
    }
    group.finish();
    support::print_ratios(group_name, "axum_serve", &["perfkit_serve"]);

    let group_name = "serve_new_connection";
    let mut group = c.benchmark_group(group_name);
    for (name, addr) in VARIANTS.iter().zip(addrs) {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                stream.write_all(CLOSE).await.expect("write");
                let mut raw = Vec::with_capacity(512);
                stream.read_to_end(&mut raw).await.expect("read");
                assert!(raw.ends_with(BODY.as_bytes()), "a whole response");
                black_box(raw)
            });
        });
    }
    group.finish();
    support::print_ratios(group_name, "axum_serve", &["perfkit_serve"]);

    c.final_summary();
}
