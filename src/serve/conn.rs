//! One connection: the socket wrapper that enforces the timeouts hyper has no knob for, and
//! the service adapter that hands each request its peer address.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};
use tokio_io_timeout::TimeoutStream;
use tower_service::Service;

/// What an HTTP/2 connection with prior knowledge starts with; hyper-util reads up to this
/// many bytes to tell HTTP/1 from HTTP/2 before either protocol's timers run.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pin_project! {
    /// The accepted socket, with the write-stall timeout (tokio-io-timeout) and a deadline
    /// on the bytes that decide the HTTP version.
    ///
    /// hyper-util's version detection reads up to 24 bytes before it hands the connection
    /// to hyper's HTTP/1 or HTTP/2 code, and no timer runs while it waits: a connection that
    /// sends nothing, or the HTTP/2 preface one byte at a time, would stay open forever.
    /// Until those bytes have arrived (or the first byte that is not the preface), a read
    /// that waits past the header-read timeout fails with `TimedOut`.
    pub(super) struct Io {
        #[pin]
        inner: TimeoutStream<TcpStream>,
        // `None` once the version is decided, or when there is no header-read timeout.
        #[pin]
        version_deadline: Option<Sleep>,
        // How many bytes of the preface have arrived so far.
        matched: usize,
    }
}

impl Io {
    pub(super) fn new(
        stream: TcpStream,
        header_read_timeout: Option<Duration>,
        write_timeout: Option<Duration>,
    ) -> Self {
        let mut inner = TimeoutStream::new(stream);
        inner.set_write_timeout(write_timeout);
        Self {
            inner,
            version_deadline: header_read_timeout.map(tokio::time::sleep),
            matched: 0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if this.version_deadline.is_none() {
            return this.inner.poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let start = *this.matched;
                let take = new.len().min(H2_PREFACE.len() - start);
                let decided = new.is_empty()
                    || new[..take] != H2_PREFACE[start..start + take]
                    || start + take == H2_PREFACE.len();
                if decided {
                    this.version_deadline.set(None);
                } else {
                    *this.matched += take;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .version_deadline
                    .as_mut()
                    .as_pin_mut()
                    .is_some_and(|deadline| deadline.poll(cx).is_ready());
                if expired {
                    this.version_deadline.set(None);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header-read timeout",
                    )));
                }
                Poll::Pending
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for Io {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Inserts the connection's peer address into every request: as a plain [`SocketAddr`]
/// (what the rate limiter's `PeerIp` reads) and, with the `axum` feature, as
/// axum's `ConnectInfo<SocketAddr>`.
#[derive(Clone, Debug)]
pub(super) struct AddPeer<S> {
    pub(super) inner: S,
    pub(super) peer: SocketAddr,
}

impl<S, B> Service<Request<B>> for AddPeer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let extensions = request.extensions_mut();
        extensions.insert(self.peer);
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.peer));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(header_read_timeout: Duration) -> (Io, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Io::new(server, Some(header_read_timeout), None), client)
    }

    #[tokio::test]
    async fn a_silent_connection_times_out_before_its_version_is_known() {
        let (io, _client) = pair(Duration::from_millis(50)).await;
        let mut io = Box::pin(io);
        let mut buf = [0; 8];
        let error = io.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn the_preface_sent_slowly_is_still_bounded() {
        let (io, mut client) = pair(Duration::from_millis(100)).await;
        let mut io = Box::pin(io);
        client.write_all(b"PRI * ").await.unwrap();
        let mut buf = [0; 24];
        assert_eq!(io.read(&mut buf).await.unwrap(), 6);
        let error = io.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn the_deadline_ends_with_the_first_byte_that_is_not_the_preface() {
        let (io, mut client) = pair(Duration::from_millis(50)).await;
        let mut io = Box::pin(io);
        client.write_all(b"G").await.unwrap();
        let mut buf = [0; 24];
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        // From here on hyper's own header-read timer is in charge; the socket waits.
        let waited = tokio::time::timeout(Duration::from_millis(150), io.read(&mut buf)).await;
        assert!(waited.is_err(), "the read kept waiting: {waited:?}");
    }

    #[tokio::test]
    async fn the_deadline_ends_with_the_whole_preface() {
        let (io, mut client) = pair(Duration::from_millis(50)).await;
        let mut io = Box::pin(io);
        client.write_all(H2_PREFACE).await.unwrap();
        let mut buf = [0; 24];
        io.read_exact(&mut buf).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(150), io.read(&mut buf)).await;
        assert!(waited.is_err(), "the read kept waiting: {waited:?}");
    }
}
