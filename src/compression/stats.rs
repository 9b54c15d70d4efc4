//! What the compression layer counts: fixed-size atomics, whatever the traffic.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use serde::{Deserialize, Serialize};

use super::Encoding;

/// Why a response left the layer uncompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The client accepts no coding the layer offers (or sent no `Accept-Encoding`).
    Identity,
    /// The body is below the minimum size.
    TooSmall,
    /// The predicate said no (by default: a compressed content type).
    Predicate,
    /// The response already has a `Content-Encoding`.
    AlreadyEncoded,
    /// `Cache-Control: no-transform`.
    NoTransform,
    /// A `206` or a `Content-Range`.
    Partial,
    /// No body to compress: `HEAD`, `204`, `304`, `1xx`.
    NoBody,
    /// The response carried [`NoCompression`](super::NoCompression).
    OptedOut,
    /// An event stream, with event streams set to pass through.
    EventStream,
    /// Refused with `406`: nothing the client accepts.
    NotAcceptable,
}

const SKIPS: usize = 10;

/// The compression layer's statistics, shared by every service built from one layer.
///
/// A cheap handle: clones share the same counters. Get it from
/// [`CompressionLayer::stats`](super::CompressionLayer::stats).
#[derive(Clone, Debug, Default)]
pub struct CompressionStats {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Per [`Encoding::index`]: responses, bytes in, bytes out.
    encoded: [[AtomicU64; 3]; 3],
    skipped: [AtomicU64; SKIPS],
    largest_buffer: AtomicU64,
}

impl CompressionStats {
    /// New, empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn encoded(&self, encoding: Encoding, bytes_in: u64, bytes_out: u64) {
        let counters = &self.shared.encoded[encoding.index()];
        counters[0].fetch_add(1, Relaxed);
        counters[1].fetch_add(bytes_in, Relaxed);
        counters[2].fetch_add(bytes_out, Relaxed);
    }

    pub(crate) fn skipped(&self, reason: Skip) {
        self.shared.skipped[reason as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn buffered(&self, bytes: usize) {
        self.shared.largest_buffer.fetch_max(bytes as u64, Relaxed);
    }

    /// The counters as they are now.
    pub fn snapshot(&self) -> CompressionSnapshot {
        let coding = |encoding: Encoding| {
            let [responses, bytes_in, bytes_out] = self.shared.encoded[encoding.index()]
                .each_ref()
                .map(|c| c.load(Relaxed));
            EncodingSnapshot {
                responses,
                bytes_in,
                bytes_out,
                ratio: if bytes_in == 0 {
                    0.0
                } else {
                    bytes_out as f64 / bytes_in as f64
                },
            }
        };
        let skipped = |reason: Skip| self.shared.skipped[reason as usize].load(Relaxed);
        CompressionSnapshot {
            br: coding(Encoding::Brotli),
            gzip: coding(Encoding::Gzip),
            deflate: coding(Encoding::Deflate),
            skipped: SkipSnapshot {
                identity: skipped(Skip::Identity),
                too_small: skipped(Skip::TooSmall),
                predicate: skipped(Skip::Predicate),
                already_encoded: skipped(Skip::AlreadyEncoded),
                no_transform: skipped(Skip::NoTransform),
                partial: skipped(Skip::Partial),
                no_body: skipped(Skip::NoBody),
                opted_out: skipped(Skip::OptedOut),
                event_stream: skipped(Skip::EventStream),
                not_acceptable: skipped(Skip::NotAcceptable),
            },
            largest_buffer_bytes: self.shared.largest_buffer.load(Relaxed),
        }
    }
}

/// [`CompressionStats`] at one moment; serializes to and from JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CompressionSnapshot {
    /// Responses compressed with brotli.
    pub br: EncodingSnapshot,
    /// Responses compressed with gzip.
    pub gzip: EncodingSnapshot,
    /// Responses compressed with deflate.
    pub deflate: EncodingSnapshot,
    /// Responses left uncompressed, by reason.
    pub skipped: SkipSnapshot,
    /// The largest buffer one response needed: a collected body (the in-memory path), the
    /// prefix held while deciding, or one compressed frame.
    pub largest_buffer_bytes: u64,
}

/// One coding's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EncodingSnapshot {
    /// Responses compressed (a body that failed mid-stream counts when it started).
    pub responses: u64,
    /// Body bytes before compression, of the responses that finished.
    pub bytes_in: u64,
    /// Body bytes after compression, of the responses that finished.
    pub bytes_out: u64,
    /// `bytes_out / bytes_in`; `0` before the first finished response.
    pub ratio: f64,
}

/// Uncompressed responses by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SkipSnapshot {
    /// The client accepts no offered coding, or sent no `Accept-Encoding`.
    pub identity: u64,
    /// Below the minimum size.
    pub too_small: u64,
    /// Refused by the predicate (by default: a compressed content type).
    pub predicate: u64,
    /// Had a `Content-Encoding` already.
    pub already_encoded: u64,
    /// Carried `Cache-Control: no-transform`.
    pub no_transform: u64,
    /// A `206` or a `Content-Range`.
    pub partial: u64,
    /// No body: `HEAD`, `204`, `304`, `1xx`.
    pub no_body: u64,
    /// Carried the `NoCompression` extension.
    pub opted_out: u64,
    /// Event streams passed through as configured.
    pub event_stream: u64,
    /// Answered `406 Not Acceptable`.
    pub not_acceptable: u64,
}
