//! Compressed variants of entries: encoded once, on the first request that asks for the
//! coding, at a quality on-the-fly compression cannot afford, then served as stored.

use bytes::Bytes;
use http::{HeaderMap, response::Parts};

use crate::compression::{
    DefaultPredicate, Encoding, NoCompression, Predicate,
    encoder::{Encoder, Flush},
    encoding::{Negotiated, Offer},
    future::has_no_transform,
};

/// The brotli quality of stored variants by default: 9 (on-the-fly compression uses 4).
pub const DEFAULT_VARIANT_BROTLI_QUALITY: u32 = 9;

/// The gzip level of stored variants by default: 9 (on-the-fly compression uses 6).
pub const DEFAULT_VARIANT_GZIP_LEVEL: u32 = 9;

/// Bodies smaller than this are never given variants by default: 1 KiB, as
/// [`CompressionLayer`](crate::compression::CompressionLayer)'s own minimum.
pub const DEFAULT_VARIANT_MIN_SIZE: u64 = crate::compression::DEFAULT_MIN_SIZE;

#[derive(Clone, Debug)]
pub(crate) struct Variants {
    offer: Offer,
    brotli: u32,
    gzip: u32,
    min_size: u64,
}

impl Default for Variants {
    fn default() -> Self {
        Self {
            offer: Offer::new([Encoding::Brotli, Encoding::Gzip]),
            brotli: DEFAULT_VARIANT_BROTLI_QUALITY,
            gzip: DEFAULT_VARIANT_GZIP_LEVEL,
            min_size: DEFAULT_VARIANT_MIN_SIZE,
        }
    }
}

impl Variants {
    pub(crate) fn levels(mut self, brotli: u32, gzip: u32) -> Self {
        self.brotli = brotli;
        self.gzip = gzip;
        self
    }

    pub(crate) fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = bytes;
        self
    }

    /// Whether a response with this head and body length may be served compressed: by
    /// the compression layer's default rule (not already-compressed content types), not
    /// `no-transform`, not marked [`NoCompression`], not content-encoded already.
    pub(crate) fn compressible(&self, parts: &Parts, len: usize) -> bool {
        len as u64 >= self.min_size
            && !parts.headers.contains_key(http::header::CONTENT_ENCODING)
            && !has_no_transform(&parts.headers)
            && parts.extensions.get::<NoCompression>().is_none()
            && DefaultPredicate::new().should_compress(parts, Some(len as u64))
    }

    /// The stored coding the request's `Accept-Encoding` prefers, if any.
    pub(crate) fn choose(&self, request: &HeaderMap) -> Option<Encoding> {
        match self.offer.negotiate(request) {
            Negotiated::Encode(encoding) => Some(encoding),
            Negotiated::Identity | Negotiated::NotAcceptable => None,
        }
    }

    /// `body` in `encoding`, or `None` if the encoder failed (logged by the caller).
    pub(crate) fn encode(&self, encoding: Encoding, body: &[u8]) -> Option<Bytes> {
        let level = match encoding {
            Encoding::Brotli => self.brotli,
            _ => self.gzip,
        };
        let mut encoder = Encoder::new(encoding, level, Some(body.len() as u64))?;
        let mut out = Vec::with_capacity(body.len() / 4 + 64);
        encoder.encode(body, Flush::Finish, &mut out).ok()?;
        Some(Bytes::from(out))
    }
}
