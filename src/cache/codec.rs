//! The value format: a one-byte header, then MessagePack, compressed above a threshold.

use std::{any::Any, io::Write, sync::Arc};

use bytes::Bytes;
use flate2::{Compression, read::DeflateDecoder, write::DeflateEncoder};
use serde::{Serialize, de::DeserializeOwned};

use super::{backend::AnyValue, error::CodecError};

/// Header: MessagePack with named fields (structs as maps), uncompressed.
pub(crate) const MSGPACK_NAMED: u8 = 0x01;
/// Header: MessagePack with named fields, deflate-compressed.
pub(crate) const MSGPACK_NAMED_DEFLATE: u8 = 0x81;

/// Encodes `value`: header byte, then named-field MessagePack, deflated (fast level) when
/// the MessagePack is longer than `threshold` bytes.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    threshold: usize,
) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(128);
    out.push(MSGPACK_NAMED);
    rmp_serde::encode::write_named(&mut out, value).map_err(CodecError::Encode)?;
    if out.len() - 1 <= threshold {
        return Ok(out.into());
    }
    let mut compressed = Vec::with_capacity(out.len() / 2 + 16);
    compressed.push(MSGPACK_NAMED_DEFLATE);
    let mut encoder = DeflateEncoder::new(compressed, Compression::fast());
    encoder
        .write_all(&out[1..])
        .and_then(|()| encoder.finish())
        .map(Bytes::from)
        .map_err(CodecError::Decompress)
}

/// Decodes bytes written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&header, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match header {
        MSGPACK_NAMED => rmp_serde::from_slice(body).map_err(CodecError::Decode),
        MSGPACK_NAMED_DEFLATE => {
            rmp_serde::from_read(DeflateDecoder::new(body)).map_err(|err| match err {
                rmp_serde::decode::Error::InvalidMarkerRead(io)
                | rmp_serde::decode::Error::InvalidDataRead(io) => CodecError::Decompress(io),
                other => CodecError::Decode(other),
            })
        }
        other => Err(CodecError::UnknownHeader(other)),
    }
}

/// [`decode`] into a shared, type-erased value: the [`Decoder`](super::Decoder) for `T`.
pub(crate) fn decode_any<T>(bytes: &[u8]) -> Result<AnyValue, CodecError>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    decode::<T>(bytes).map(|value| Arc::new(value) as Arc<dyn Any + Send + Sync>)
}
