//! The compression layer over real TCP, served by `perfkit::serve`: a streamed response's
//! frames reach the client compressed before the body ends, server-sent events arrive one
//! by one, and a whole body comes with its exact length.

use std::{
    future::IntoFuture,
    io::Read,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body as AxumBody, routing::get};
use bytes::Bytes;
use http::{Response, header};
use http_body::{Body, Frame};
use perfkit::{compression::CompressionLayer, serve::Server};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

type Frames = mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>;

/// A body whose frames the test sends one at a time.
struct Channel(Frames);

impl Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

/// The app: `/stream` and `/events` answer with the body the test holds the sender of.
fn app(stream: Arc<Mutex<Option<Frames>>>, big: Bytes) -> Router {
    let take = move || stream.lock().unwrap().take().expect("one streamed request");
    let for_events = take.clone();
    Router::new()
        .route(
            "/stream",
            get(move || async move {
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/x-ndjson")
                    .body(AxumBody::new(Channel(take())))
                    .unwrap()
            }),
        )
        .route(
            "/events",
            get(move || async move {
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(AxumBody::new(Channel(for_events())))
                    .unwrap()
            }),
        )
        .route(
            "/big",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], big.clone()) }),
        )
        .layer(CompressionLayer::new())
}

async fn start(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(Server::new().serve(listener, app).into_future());
    addr
}

/// A raw HTTP/1.1 client reading a response piece by piece.
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    async fn get(addr: SocketAddr, path: &str, accept: &str) -> (Self, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nAccept-Encoding: {accept}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut client = Self {
            stream,
            buffer: Vec::new(),
        };
        let head = client.until(b"\r\n\r\n").await;
        (client, String::from_utf8(head).unwrap())
    }

    /// Bytes up to and including `end`, waiting at most 5 s for them.
    async fn until(&mut self, end: &[u8]) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(at) = self.buffer.windows(end.len()).position(|w| w == end) {
                    return self.buffer.drain(..at + end.len()).collect();
                }
                let mut chunk = [0; 16 * 1024];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the connection closed early");
                self.buffer.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("the server sent it within 5 s")
    }

    async fn exactly(&mut self, n: usize) -> Vec<u8> {
        while self.buffer.len() < n {
            let mut chunk = [0; 16 * 1024];
            let read = self.stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the connection closed early");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
        self.buffer.drain(..n).collect()
    }

    /// The next chunk of a chunked body; empty for the last.
    async fn chunk(&mut self) -> Vec<u8> {
        let line = self.until(b"\r\n").await;
        let size = std::str::from_utf8(&line[..line.len() - 2]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        let data = self.exactly(size + 2).await;
        data[..size].to_vec()
    }
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Feeds `data` to a gzip stream decoder and returns what it could decode so far.
fn inflate(decoder: &mut flate2::Decompress, data: &[u8]) -> String {
    let mut out = Vec::with_capacity(64 * 1024);
    let before = decoder.total_in();
    while ((decoder.total_in() - before) as usize) < data.len() {
        let consumed = (decoder.total_in() - before) as usize;
        decoder
            .decompress_vec(&data[consumed..], &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        out.reserve(64 * 1024);
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn each_streamed_line_reaches_the_client_compressed_before_the_body_ends() {
    let (tx, rx) = mpsc::channel(4);
    let addr = start(app(Arc::new(Mutex::new(Some(rx))), Bytes::new())).await;
    let (mut client, head) = Client::get(addr, "/stream", "gzip").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header_value(&head, "content-encoding"), Some("gzip"));
    assert_eq!(header_value(&head, "transfer-encoding"), Some("chunked"));
    assert_eq!(header_value(&head, "vary"), Some("accept-encoding"));

    let mut decoder = flate2::Decompress::new_gzip(15);
    for i in 0..3 {
        let line = format!("{{\"line\":{i},\"text\":\"the body has not ended\"}}\n");
        tx.send(Ok(Frame::data(Bytes::from(line.clone()))))
            .await
            .unwrap();
        // The body is still open: only a flush can have sent this line.
        let mut decoded = String::new();
        while decoded.is_empty() {
            decoded = inflate(&mut decoder, &client.chunk().await);
        }
        assert_eq!(decoded, line);
    }
    drop(tx);
    let mut rest = Vec::new();
    loop {
        let chunk = client.chunk().await;
        if chunk.is_empty() {
            break;
        }
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(inflate(&mut decoder, &rest), "");
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one_in_brotli() {
    let (tx, rx) = mpsc::channel(4);
    let addr = start(app(Arc::new(Mutex::new(Some(rx))), Bytes::new())).await;
    let (mut client, head) = Client::get(addr, "/events", "gzip, deflate, br").await;
    assert_eq!(header_value(&head, "content-encoding"), Some("br"));

    let mut received = Vec::new();
    for i in 0..3 {
        let event = format!("id: {i}\ndata: {{\"tick\":{i}}}\n\n");
        tx.send(Ok(Frame::data(Bytes::from(event)))).await.unwrap();
        received.extend_from_slice(&client.chunk().await);
        // Everything received so far decodes to every event sent so far.
        let mut decoded = Vec::new();
        let _ = brotli::Decompressor::new(&received[..], 4096).read_to_end(&mut decoded);
        let expected: String = (0..=i)
            .map(|j| format!("id: {j}\ndata: {{\"tick\":{j}}}\n\n"))
            .collect();
        assert_eq!(String::from_utf8(decoded).unwrap(), expected);
    }
}

#[tokio::test]
async fn a_whole_body_comes_compressed_with_its_exact_length() {
    let big = Bytes::from(
        (0..4000)
            .map(|i| format!("{{\"id\":{i},\"name\":\"user {i}\"}},"))
            .collect::<String>(),
    );
    let addr = start(app(Arc::default(), big.clone())).await;
    for (accept, coding) in [("gzip, deflate, br", "br"), ("br;q=0, gzip", "gzip")] {
        let (mut client, head) = Client::get(addr, "/big", accept).await;
        assert_eq!(header_value(&head, "content-encoding"), Some(coding));
        let length: usize = header_value(&head, "content-length")
            .unwrap()
            .parse()
            .unwrap();
        let body = client.exactly(length).await;
        let mut decoded = Vec::new();
        match coding {
            "br" => brotli::Decompressor::new(&body[..], 4096)
                .read_to_end(&mut decoded)
                .unwrap(),
            _ => flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut decoded)
                .unwrap(),
        };
        assert_eq!(decoded, big);
        assert!(
            length * 5 < big.len(),
            "{coding}: {length} of {}",
            big.len()
        );
    }
}
