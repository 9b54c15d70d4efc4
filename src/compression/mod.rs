//! Response compression: brotli first, gzip and deflate as fallbacks, without breaking a
//! response.
//!
//! [`CompressionLayer`] compresses a response body when the request's `Accept-Encoding`
//! asks for a coding it offers, the body is large enough to gain, and compressing cannot
//! break the response:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, header};
//! use http_body_util::BodyExt;
//! use perfkit::compression::CompressionLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let json = format!("[{}]", vec![r#"{"id":1,"name":"Ada"}"#; 200].join(","));
//! let service = ServiceBuilder::new()
//!     .layer(CompressionLayer::new())
//!     .service_fn(move |_req: Request<()>| {
//!         let json = json.clone();
//!         async move {
//!             Ok::<_, Infallible>(
//!                 Response::builder()
//!                     .header(header::CONTENT_TYPE, "application/json")
//!                     .body(json)
//!                     .unwrap(),
//!             )
//!         }
//!     });
//!
//! let request = Request::builder()
//!     .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
//!     .body(())
//!     .unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()[header::CONTENT_ENCODING], "br");
//! assert_eq!(response.headers()[header::VARY], "accept-encoding");
//! let length: usize = response.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body.len(), length);
//! assert!(length < 200, "4 401 bytes of JSON in {length}");
//! # }
//! ```
//!
//! # Negotiation
//!
//! `Accept-Encoding` is read as RFC 9110 §12.5.3 says: q-values (up to three decimals),
//! `*`, `identity` and `identity;q=0`, `x-gzip` for `gzip`, any case and spacing. The
//! highest q-value wins; ties go to the server's order ([`CompressionLayer::preference`],
//! by default brotli, gzip, deflate), and between a coding and identity to the coding. A
//! request without the header, or with one that does not parse, gets the body as it is:
//! a malformed header is never an error. When the request excludes identity and accepts
//! nothing offered, it gets the body as it is too, or `406 Not Acceptable` with
//! [`CompressionLayer::not_acceptable`].
//!
//! # What is compressed
//!
//! - Never: a response that already has a `Content-Encoding`, has `Cache-Control:
//!   no-transform`, is a `206` or has a `Content-Range`, has no body (`HEAD`, `204`,
//!   `304`, `1xx`), or holds the [`NoCompression`] extension.
//! - Not by default: content types compressed already, by parsed MIME type (see
//!   [`DefaultPredicate`]); a [`Predicate`] changes that rule.
//! - Not below [`min_size`](CompressionLayer::min_size) (1 KiB): a body of known length
//!   below it passes untouched; one of unknown length is read up to that size before
//!   deciding (an event stream excepted: it is never held back).
//!
//! Every response the predicate finds compressible gets `Vary: Accept-Encoding`, merged
//! into an existing `Vary` (never twice, whatever the case), identity responses included,
//! so that shared caches keep the variants apart. A compressed response loses
//! `Accept-Ranges`, and its strong `ETag` becomes weak ([`ETagMode`]).
//!
//! # Two paths
//!
//! - **In memory**: a body of known length up to
//!   [`in_memory_limit`](CompressionLayer::in_memory_limit) (512 KiB) is read whole,
//!   compressed in one stream with a window fitted to its size, and sent with its exact
//!   `Content-Length`.
//! - **Streaming**: larger bodies and bodies of unknown length are compressed as they
//!   come, with memory bounded by the encoder's window and one output frame. Whenever
//!   the inner body makes the client wait, what was compressed so far is flushed (a sync
//!   flush), so a streaming response keeps streaming. Event streams
//!   (`text/event-stream`, `application/x-ndjson`, `multipart/x-mixed-replace`) are
//!   flushed after every frame ([`EventStreams`]). Trailers pass through.
//!
//! Either way a poll encodes at most 64 KiB of input, then yields to the runtime, so a
//! large body never holds a worker thread for more than about a millisecond. Slicing the
//! work this way costs a wake-up per slice and works on every runtime;
//! `tokio::task::block_in_place` panics on a current-thread runtime, and `spawn_blocking`
//! would move every large body to another thread and back. The 1 MiB rows of the bench,
//! sixteen slices each, stay at or ahead of tower-http's layer, which encodes without
//! yielding. A body
//! error mid-stream reaches the client as an error (the connection is cut), never as a
//! truncated body that looks complete.
//!
//! # Levels
//!
//! Defaults: brotli quality 5, gzip and deflate level 6. Brotli's own default of 11 takes
//! tens of milliseconds per 100 KB. On 200 KiB of JSON (`BENCHMARKS.md`, "Compression"),
//! quality 5 is the lowest whose output is smaller than gzip 6's (0.126 against 0.130 of
//! the input), at 60 against 79 MB/s; quality 4 is faster (105 MB/s) but 12 % larger than
//! gzip, which would make preferring brotli pointless. Choose 4 with
//! [`CompressionLayer::level`] where CPU matters more than bytes, and [`Level::up_to`] for
//! size tiers. Gzip and deflate run on flate2's `zlib-rs` backend, 1.6–2× as fast as its
//! default `miniz_oxide` at every level (same section).
//!
//! [`CompressionLayer::from_env`] reads `COMPRESSION_MIN_SIZE`, `COMPRESSION_LEVEL` and
//! `USE_BROTLI`.
//!
//! # Statistics
//!
//! [`CompressionLayer::stats`] counts, per coding, the responses and bytes in and out,
//! and, per reason, the responses left uncompressed; [`CompressionSnapshot`] serializes
//! them.
//!
//! # Cost
//!
//! `benches/compression.rs` runs the layer beside tower-http's `CompressionLayer` at the
//! same coding and level, on JSON bodies of 1 KiB, 64 KiB and 1 MiB, known-length and
//! streamed; `BENCHMARKS.md` has the figures.

mod body;
pub(crate) mod encoder;
pub(crate) mod encoding;
pub(crate) mod future;
mod layer;
mod predicate;
mod service;
mod stats;

#[cfg(test)]
pub(crate) mod tests;

#[doc(inline)]
pub use self::{
    body::{BoxError, CompressionBody},
    encoding::Encoding,
    future::ResponseFuture,
    layer::{
        CompressionLayer, DEFAULT_BROTLI_QUALITY, DEFAULT_GZIP_LEVEL, DEFAULT_IN_MEMORY_LIMIT,
        DEFAULT_MIN_SIZE, ETagMode, EventStreams, Level,
    },
    predicate::{And, DefaultPredicate, NoCompression, Predicate},
    service::Compression,
    stats::{CompressionSnapshot, CompressionStats, EncodingSnapshot, SkipSnapshot},
};
